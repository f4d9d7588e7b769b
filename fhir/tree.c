/* The FHIR resource tree: JSON-shaped nodes whose storage all lives in one arena. */
#include "config.h"

#include "fhir/tree.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "fhir/tree_int.h"
#include "lib/hash.h"

/* Stands in for an emptied item of an aligned primitive array (nulls are never mutated). */
static fhir_node_t fhir_null_shared = {.kind = FHIR_NULL};

static fhir_node_t *
fhir_node_new(arena_t *a, fhir_kind_t kind)
{
	fhir_node_t *n = arena_alloc(a, sizeof(*n));

	*n = (fhir_node_t){.kind = kind};
	return n;
}

fhir_node_t *
fhir_null_new(arena_t *a)
{
	return fhir_node_new(a, FHIR_NULL);
}

fhir_node_t *
fhir_bool_new(arena_t *a, bool v)
{
	fhir_node_t *n = fhir_node_new(a, FHIR_BOOL);

	n->b = v;
	return n;
}

fhir_node_t *
fhir_number_new(arena_t *a, slice_t text)
{
	return fhir_text_node_new_inl(a, FHIR_NUMBER, text);
}

fhir_node_t *
fhir_int_new(arena_t *a, int64_t v)
{
	char tmp[24];
	int len = snprintf(tmp, sizeof(tmp), "%" PRId64, v);

	return fhir_number_new(a, slice_make(tmp, (size_t)len));
}

fhir_node_t *(fhir_string_new)(arena_t *a, slice_t s)
{
	return fhir_string_new_inl(a, s);
}

fhir_node_t *
fhir_raw_new(arena_t *a, slice_t json)
{
	fhir_node_t *n = fhir_node_new(a, FHIR_RAW);

	n->u.text = json;
	return n;
}

fhir_node_t *(fhir_object_new)(arena_t *a)
{
	return fhir_object_new_inl(a);
}

fhir_node_t *(fhir_array_new)(arena_t *a)
{
	return fhir_array_new_inl(a);
}

fhir_kind_t(fhir_node_kind)(const fhir_node_t *n)
{
	return fhir_node_kind_inl(n);
}

bool
fhir_node_bool(const fhir_node_t *n)
{
	return n->kind == FHIR_BOOL && n->b;
}

slice_t(fhir_node_text)(const fhir_node_t *n)
{
	return fhir_node_text_inl(n);
}

/* Objects. */

static size_t
fhir_key_hash(slice_t key)
{
	return (size_t)hash_fnv1a64(key.ptr, key.len, 0);
}

static void
fhir_object_index_put(fhir_node_t *obj, size_t pos)
{
	size_t mask = obj->u.obj.idx_cap - 1;
	size_t h = fhir_key_hash(obj->u.obj.m[pos].key) & mask;

	while (obj->u.obj.idx[h] != 0)
		h = (h + 1) & mask;
	obj->u.obj.idx[h] = (uint32_t)(pos + 1);
}

/* Keeps the index at most half full; rebuilt from scratch when it grows or after a removal. */
static void
fhir_object_index_build(arena_t *a, fhir_node_t *obj, size_t want)
{
	size_t cap = 64;

	while (cap < want * 2)
		cap *= 2;
	obj->u.obj.idx = arena_zalloc(a, cap * sizeof(*obj->u.obj.idx));
	obj->u.obj.idx_cap = cap;
	for (size_t i = 0; i < obj->u.obj.n; i++)
		fhir_object_index_put(obj, i);
}

/* The lookups of large objects, through their index: apart from the linear search of the
 * others (almost all), which then saves no registers. by_address: keys compared by address
 * (interned), else by bytes. */
__attribute__((noinline)) fhir_member_t *
fhir_object_find_indexed(const fhir_node_t *obj, slice_t key, bool by_address)
{
	const fhir_member_t *m = obj->u.obj.m;
	size_t mask = obj->u.obj.idx_cap - 1;
	size_t h = fhir_key_hash(key) & mask;
	uint32_t p;

	while ((p = obj->u.obj.idx[h]) != 0) {
		if (by_address ? m[p - 1].key.ptr == key.ptr : slice_eq(m[p - 1].key, key))
			return (fhir_member_t *)&m[p - 1];
		h = (h + 1) & mask;
	}
	return NULL;
}

static fhir_member_t *
fhir_object_find(const fhir_node_t *obj, slice_t key)
{
	const fhir_member_t *m;

	if (obj == NULL || obj->kind != FHIR_OBJECT)
		return NULL;
	m = obj->u.obj.m;
	if (obj->u.obj.idx != NULL)
		return fhir_object_find_indexed(obj, key, false);
	for (size_t i = 0; i < obj->u.obj.n; i++)
		if (slice_eq(m[i].key, key))
			return (fhir_member_t *)&m[i];
	return NULL;
}

/* fhir_object_append's work beyond storing the member: room for it before (grow), or the
 * index after. Apart, so that the common case saves no registers. */
static __attribute__((noinline)) void
fhir_object_append_grow(arena_t *a, fhir_node_t *obj)
{
	size_t n = obj->u.obj.n, ncap = n ? n * 2 : 4;
	fhir_member_t *m = arena_alloc(a, ncap * sizeof(*m));

	if (n > 0)
		memcpy(m, obj->u.obj.m, n * sizeof(*m));
	obj->u.obj.m = m;
	obj->u.obj.cap = ncap;
}

static __attribute__((noinline)) void
fhir_object_append_index(arena_t *a, fhir_node_t *obj, size_t n)
{
	if (obj->u.obj.idx != NULL && (n + 1) * 2 <= obj->u.obj.idx_cap)
		fhir_object_index_put(obj, n);
	else if (n + 1 > FHIR_OBJECT_LINEAR_MAX)
		fhir_object_index_build(a, obj, n + 1);
}

static void
fhir_object_append(arena_t *a, fhir_node_t *obj, slice_t key, fhir_node_t *val)
{
	size_t n = obj->u.obj.n;

	if (n == obj->u.obj.cap)
		fhir_object_append_grow(a, obj);
	obj->u.obj.m[n].key = key;
	obj->u.obj.m[n].val = val;
	obj->u.obj.m[n].rank = 0;
	obj->u.obj.n = n + 1;
	if (obj->u.obj.idx != NULL || n + 1 > FHIR_OBJECT_LINEAR_MAX)
		fhir_object_append_index(a, obj, n);
}

void
fhir_object_set(arena_t *a, fhir_node_t *obj, slice_t key, fhir_node_t *val)
{
	fhir_member_t *m;

	if (val == NULL) {
		fhir_object_remove(obj, key);
		return;
	}
	m = fhir_object_find(obj, key);
	if (m != NULL)
		m->val = val;
	else
		fhir_object_append(a, obj, arena_slice_dup(a, key), val);
}

bool
fhir_object_add_new(arena_t *a, fhir_node_t *obj, slice_t key, fhir_node_t *val)
{
	if (fhir_object_find(obj, key) != NULL)
		return false;
	fhir_object_append(a, obj, arena_slice_dup(a, key), val);
	return true;
}

void
fhir_object_push(arena_t *a, fhir_node_t *obj, slice_t key, fhir_node_t *val)
{
	fhir_object_append(a, obj, key, val);
}

void(fhir_object_insert)(arena_t *a, fhir_node_t *obj, slice_t key, fhir_node_t *val, uint32_t rank)
{
	fhir_object_insert_inl(a, obj, key, val, rank);
}

/* fhir_object_insert's cases other than the end of an object with room and no index
 * (fhir_object_insert_inl): at is where the member goes. */
__attribute__((noinline)) void
fhir_object_insert_at(arena_t *a, fhir_node_t *obj, slice_t key, fhir_node_t *val, uint32_t rank,
		      size_t at)
{
	size_t n = obj->u.obj.n;
	fhir_member_t *m;

	fhir_object_append(a, obj, key, val);
	m = obj->u.obj.m;
	if (at == n) {
		m[n].rank = rank;
		return;
	}
	memmove(&m[at + 1], &m[at], (n - at) * sizeof(*m));
	m[at] = (fhir_member_t){.key = key, .val = val, .rank = rank};
	if (obj->u.obj.idx != NULL) {
		/* positions shifted: rebuild in place */
		memset(obj->u.obj.idx, 0, obj->u.obj.idx_cap * sizeof(*obj->u.obj.idx));
		for (size_t j = 0; j < obj->u.obj.n; j++)
			fhir_object_index_put(obj, j);
	}
}

uint32_t
fhir_object_rank_at(const fhir_node_t *obj, size_t i)
{
	return i < fhir_object_count(obj) ? obj->u.obj.m[i].rank : 0;
}

void
fhir_object_reorder(arena_t *a, fhir_node_t *obj, const uint32_t *order)
{
	size_t n = obj->u.obj.n;
	fhir_member_t *m;

	if (n == 0)
		return;
	m = arena_alloc(a, n * sizeof(*m));
	for (size_t j = 0; j < n; j++)
		m[j] = obj->u.obj.m[order[j]];
	obj->u.obj.m = m;
	obj->u.obj.cap = n;
	if (obj->u.obj.idx != NULL) {
		memset(obj->u.obj.idx, 0, obj->u.obj.idx_cap * sizeof(*obj->u.obj.idx));
		for (size_t j = 0; j < n; j++)
			fhir_object_index_put(obj, j);
	}
}

fhir_node_t *
fhir_object_get(const fhir_node_t *obj, slice_t key)
{
	fhir_member_t *m = fhir_object_find(obj, key);

	return m != NULL ? m->val : NULL;
}

/* fhir_object_find's twin comparing keys by address (tree_int.h): one shared function taking
 * the mode as a flag is not inlined by GCC and costs 2% of a conversion's instructions
 * (callgrind); only the rare lookup through an index shares one (fhir_object_find_indexed). */
fhir_node_t *(fhir_object_get_interned)(const fhir_node_t *obj, slice_t key)
{
	return fhir_object_get_interned_inl(obj, key);
}

/* Removes member i (which is there). */
static void
fhir_object_remove_at(fhir_node_t *obj, size_t i)
{
	fhir_member_t *m = &obj->u.obj.m[i];

	memmove(m, m + 1, (obj->u.obj.n - i - 1) * sizeof(*m));
	obj->u.obj.n--;
	if (obj->u.obj.idx != NULL) {
		/* Positions shifted: rebuild in place (same capacity, no allocation). */
		memset(obj->u.obj.idx, 0, obj->u.obj.idx_cap * sizeof(*obj->u.obj.idx));
		for (size_t j = 0; j < obj->u.obj.n; j++)
			fhir_object_index_put(obj, j);
	}
}

bool
fhir_object_remove(fhir_node_t *obj, slice_t key)
{
	fhir_member_t *m = fhir_object_find(obj, key);

	if (m == NULL)
		return false;
	fhir_object_remove_at(obj, (size_t)(m - obj->u.obj.m));
	return true;
}

size_t(fhir_object_count)(const fhir_node_t *obj)
{
	return fhir_object_count_inl(obj);
}

slice_t(fhir_object_key_at)(const fhir_node_t *obj, size_t i)
{
	return fhir_object_key_at_inl(obj, i);
}

fhir_node_t *(fhir_object_value_at)(const fhir_node_t *obj, size_t i)
{
	return fhir_object_value_at_inl(obj, i);
}

void
fhir_object_set_value_at(fhir_node_t *obj, size_t i, fhir_node_t *val)
{
	if (i < fhir_object_count(obj))
		obj->u.obj.m[i].val = val;
}

void
fhir_object_set_cstr(arena_t *a, fhir_node_t *obj, const char *key, fhir_node_t *val)
{
	fhir_object_set(a, obj, slice_cstr(key), val);
}

fhir_node_t *
fhir_object_get_cstr(const fhir_node_t *obj, const char *key)
{
	return fhir_object_get(obj, slice_cstr(key));
}

/* Arrays. */

void(fhir_array_append)(arena_t *a, fhir_node_t *arr, fhir_node_t *val)
{
	fhir_array_append_inl(a, arr, val);
}

/* An array's items moved to twice the room (fhir_array_append_inl, when it is full). */
__attribute__((noinline)) void
fhir_array_grow(arena_t *a, fhir_node_t *arr)
{
	size_t n = arr->u.arr.n, ncap = n ? n * 2 : 4;
	fhir_node_t **v = arena_alloc(a, ncap * sizeof(*v));

	if (n > 0)
		memcpy(v, arr->u.arr.v, n * sizeof(*v));
	arr->u.arr.v = v;
	arr->u.arr.cap = ncap;
}

size_t(fhir_array_len)(const fhir_node_t *arr)
{
	return fhir_array_len_inl(arr);
}

fhir_node_t *(fhir_array_at)(const fhir_node_t *arr, size_t i)
{
	return fhir_array_at_inl(arr, i);
}

void
fhir_array_set(fhir_node_t *arr, size_t i, fhir_node_t *val)
{
	if (i < fhir_array_len(arr))
		arr->u.arr.v[i] = val;
}

void
fhir_array_remove_at(fhir_node_t *arr, size_t i)
{
	size_t n = fhir_array_len(arr);

	if (i >= n)
		return;
	memmove(&arr->u.arr.v[i], &arr->u.arr.v[i + 1], (n - i - 1) * sizeof(*arr->u.arr.v));
	arr->u.arr.n--;
}

/* Whole-tree operations. */

fhir_node_t *
fhir_node_clone(arena_t *a, const fhir_node_t *n)
{
	fhir_node_t *c;

	if (n == NULL)
		return NULL;
	switch (n->kind) {
	case FHIR_NULL:
		return fhir_null_new(a);
	case FHIR_BOOL:
		return fhir_bool_new(a, n->b);
	case FHIR_NUMBER:
		return fhir_number_new(a, n->u.text);
	case FHIR_STRING:
		return fhir_string_new(a, n->u.text);
	case FHIR_RAW:
		return fhir_raw_new(a, arena_slice_dup(a, n->u.text));
	case FHIR_OBJECT:
		c = fhir_object_new(a);
		if (n->u.obj.n > 0) {
			c->u.obj.m = arena_alloc(a, n->u.obj.n * sizeof(*c->u.obj.m));
			c->u.obj.cap = n->u.obj.n;
			for (size_t i = 0; i < n->u.obj.n; i++) {
				c->u.obj.m[i].key = arena_slice_dup(a, n->u.obj.m[i].key);
				c->u.obj.m[i].val = fhir_node_clone(a, n->u.obj.m[i].val);
				c->u.obj.m[i].rank = n->u.obj.m[i].rank;
			}
			c->u.obj.n = n->u.obj.n;
			if (c->u.obj.n > FHIR_OBJECT_LINEAR_MAX)
				fhir_object_index_build(a, c, c->u.obj.n);
		}
		return c;
	case FHIR_ARRAY:
		c = fhir_array_new(a);
		if (n->u.arr.n > 0) {
			c->u.arr.v = arena_alloc(a, n->u.arr.n * sizeof(*c->u.arr.v));
			c->u.arr.cap = n->u.arr.n;
			for (size_t i = 0; i < n->u.arr.n; i++)
				c->u.arr.v[i] = fhir_node_clone(a, n->u.arr.v[i]);
			c->u.arr.n = n->u.arr.n;
		}
		return c;
	}
	return NULL;
}

bool
fhir_node_equal(const fhir_node_t *x, const fhir_node_t *y)
{
	if (x == y)
		return true;
	if (x == NULL || y == NULL || x->kind != y->kind)
		return false;
	switch (x->kind) {
	case FHIR_NULL:
		return true;
	case FHIR_BOOL:
		return x->b == y->b;
	case FHIR_NUMBER:
	case FHIR_STRING:
	case FHIR_RAW:
		return slice_eq(x->u.text, y->u.text);
	case FHIR_OBJECT:
		if (x->u.obj.n != y->u.obj.n)
			return false;
		/* Keys are unique, so same count + every key of x equal in y means equal. */
		for (size_t i = 0; i < x->u.obj.n; i++) {
			const fhir_member_t *m = &x->u.obj.m[i];
			fhir_node_t *other;

			/* The common case (same order, often the very same key string: keys a
			 * converter interned) avoids a search. */
			if (y->u.obj.m[i].key.ptr == m->key.ptr
				? y->u.obj.m[i].key.len == m->key.len
				: slice_eq(y->u.obj.m[i].key, m->key))
				other = y->u.obj.m[i].val;
			else
				other = fhir_object_get(y, m->key);
			if (other == NULL)
				return false;
			if (m->val != NULL && m->val->kind == FHIR_STRING &&
			    other->kind == FHIR_STRING) {
				/* most members: no call to compare two strings */
				if (!slice_eq(m->val->u.text, other->u.text))
					return false;
				continue;
			}
			if (!fhir_node_equal(m->val, other))
				return false;
		}
		return true;
	case FHIR_ARRAY:
		if (x->u.arr.n != y->u.arr.n)
			return false;
		for (size_t i = 0; i < x->u.arr.n; i++)
			if (!fhir_node_equal(x->u.arr.v[i], y->u.arr.v[i]))
				return false;
		return true;
	}
	return false;
}

bool
fhir_node_is_empty(const fhir_node_t *n)
{
	switch (n->kind) {
	case FHIR_STRING:
		return n->u.text.len == 0;
	case FHIR_OBJECT:
		return n->u.obj.n == 0;
	case FHIR_ARRAY:
		return n->u.arr.n == 0;
	default:
		return false;
	}
}

static bool
fhir_array_is_all_null(const fhir_node_t *arr)
{
	for (size_t i = 0; i < arr->u.arr.n; i++)
		if (arr->u.arr.v[i]->kind != FHIR_NULL)
			return false;
	return true;
}

/* A primitive array `x` and its `_x` companion are aligned by index: an item goes only when
 * both sides are empty, and an empty side left beside a kept one becomes null. */
static void
fhir_array_prune_pair(fhir_node_t *vals, fhir_node_t *exts)
{
	size_t i = 0;

	while (i < vals->u.arr.n) {
		fhir_node_t *v = vals->u.arr.v[i], *e = exts->u.arr.v[i];
		bool v_gone = v->kind == FHIR_NULL || !fhir_node_prune(v);
		bool e_gone = e->kind == FHIR_NULL || !fhir_node_prune(e);

		if (v_gone && e_gone) {
			fhir_array_remove_at(vals, i);
			fhir_array_remove_at(exts, i);
			continue;
		}
		if (v_gone)
			vals->u.arr.v[i] = &fhir_null_shared;
		if (e_gone)
			exts->u.arr.v[i] = &fhir_null_shared;
		i++;
	}
}

static void
fhir_object_prune(fhir_node_t *obj)
{
	fhir_member_t *m = obj->u.obj.m;
	size_t i;
	bool companions = false;

	/* Pair up aligned primitive arrays first, so the generic pass below sees them pruned
	 * (most objects have no "_x" member, and so nothing to pair). */
	for (i = 0; i < obj->u.obj.n && !companions; i++)
		companions = m[i].key.len > 1 && m[i].key.ptr[0] == '_';
	for (i = 0; companions && i < obj->u.obj.n; i++) {
		slice_t key = m[i].key;
		fhir_node_t *vals = m[i].val, *exts;
		char ext_key[128];

		if (vals->kind != FHIR_ARRAY || key.len == 0 || key.ptr[0] == '_' ||
		    key.len + 1 > sizeof(ext_key))
			continue;
		ext_key[0] = '_';
		memcpy(ext_key + 1, key.ptr, key.len);
		exts = fhir_object_get(obj, slice_make(ext_key, key.len + 1));
		if (exts != NULL && exts->kind == FHIR_ARRAY && exts->u.arr.n == vals->u.arr.n)
			fhir_array_prune_pair(vals, exts);
	}
	i = 0;
	while (i < obj->u.obj.n) {
		fhir_node_t *v = m[i].val;
		/* a primitive has nothing to prune: it goes when it is an empty string */
		bool keep = v->kind != FHIR_OBJECT && v->kind != FHIR_ARRAY
				? !(v->kind == FHIR_STRING && v->u.text.len == 0)
				: fhir_node_prune(v) &&
				      !(v->kind == FHIR_ARRAY && fhir_array_is_all_null(v));

		if (keep)
			i++;
		else
			fhir_object_remove_at(obj, i);
	}
}

bool
fhir_node_prune(fhir_node_t *n)
{
	size_t i;

	switch (n->kind) {
	case FHIR_OBJECT:
		fhir_object_prune(n);
		break;
	case FHIR_ARRAY:
		i = 0;
		while (i < n->u.arr.n) {
			fhir_node_t *item = n->u.arr.v[i];

			if (item->kind != FHIR_NULL && !fhir_node_prune(item))
				fhir_array_remove_at(n, i);
			else
				i++;
		}
		break;
	default:
		break;
	}
	return !fhir_node_is_empty(n);
}

static void
fhir_node_dedupe_at(fhir_node_t *n, unsigned depth)
{
	fhir_node_t **v;

	if (depth > 64)
		return;
	if (n->kind == FHIR_OBJECT) {
		for (size_t i = 0; i < n->u.obj.n; i++) {
			fhir_node_t *val = n->u.obj.m[i].val;

			if (val->kind == FHIR_OBJECT || val->kind == FHIR_ARRAY) /* else nothing */
				fhir_node_dedupe_at(val, depth + 1);
		}
		return;
	}
	if (n->kind != FHIR_ARRAY)
		return;
	v = n->u.arr.v;
	for (size_t i = 0; i < n->u.arr.n; i++)
		fhir_node_dedupe_at(v[i], depth + 1);
	for (size_t i = 1; i < n->u.arr.n && i < 64;) {
		bool dup = false;

		for (size_t j = 0; j < i && !dup && v[i]->kind == FHIR_OBJECT; j++)
			dup = fhir_node_equal(v[j], v[i]);
		if (dup)
			fhir_array_remove_at(n, i);
		else
			i++;
	}
}

void
fhir_node_dedupe(fhir_node_t *n)
{
	fhir_node_dedupe_at(n, 0);
}

/* fhir_node_dedupe_prune below depth: one walk where deduping all of a subtree before pruning
 * it makes no difference, that is where nothing is compared (an array of one item or none)
 * and nothing is paired (an object without "_x" companions); elsewhere the two walks as
 * before, over that subtree. */
static bool
fhir_node_dedupe_prune_at(fhir_node_t *n, unsigned depth)
{
	fhir_member_t *m;
	size_t i;

	if (depth > 64 || (n->kind != FHIR_OBJECT && n->kind != FHIR_ARRAY))
		return fhir_node_prune(n); /* fhir_node_dedupe_at does nothing there */
	if (n->kind == FHIR_ARRAY) {
		if (n->u.arr.n > 1) {
			fhir_node_dedupe_at(n, depth);
			return fhir_node_prune(n);
		}
		if (n->u.arr.n == 1 && n->u.arr.v[0]->kind != FHIR_NULL &&
		    !fhir_node_dedupe_prune_at(n->u.arr.v[0], depth + 1))
			fhir_array_remove_at(n, 0);
		return n->u.arr.n != 0;
	}
	m = n->u.obj.m;
	for (i = 0; i < n->u.obj.n; i++)
		if (m[i].key.len > 1 && m[i].key.ptr[0] == '_') {
			fhir_node_dedupe_at(n, depth);
			return fhir_node_prune(n);
		}
	/* fhir_object_prune's pass over the members, each deduped first */
	i = 0;
	while (i < n->u.obj.n) {
		fhir_node_t *v = m[i].val;
		bool keep = v->kind != FHIR_OBJECT && v->kind != FHIR_ARRAY
				? !(v->kind == FHIR_STRING && v->u.text.len == 0)
				: fhir_node_dedupe_prune_at(v, depth + 1) &&
				      !(v->kind == FHIR_ARRAY && fhir_array_is_all_null(v));

		if (keep)
			i++;
		else
			fhir_object_remove_at(n, i);
	}
	return n->u.obj.n != 0;
}

bool
fhir_node_dedupe_prune(fhir_node_t *n)
{
	return fhir_node_dedupe_prune_at(n, 0);
}

slice_t
fhir_resource_type(const fhir_node_t *res)
{
	fhir_node_t *t = fhir_object_get(res, SLICE_LIT("resourceType"));

	if (t == NULL || t->kind != FHIR_STRING)
		return slice_make("", 0);
	return t->u.text;
}
