/* Lookups over the generated R4 tables in fhir/r4_meta.c: types, elements, search parameters. */
#include "config.h"

#include "fhir/meta.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "lib/hash.h"

/* Defined in the generated fhir/r4_meta.c. */
extern const fhir_type_t fhir_r4_types[];
extern const size_t fhir_r4_ntypes;
extern const uint16_t fhir_r4_elem_by_name[];
extern const uint32_t fhir_r4_elem_by_name_start[];
extern const uint16_t fhir_r4_elem_type[];
extern const uint16_t fhir_r4_resources[];
extern const size_t fhir_r4_nresources;
extern const fhir_searchparam_t fhir_r4_searchparams[];
extern const fhir_searchparam_t *const fhir_r4_sp_lists[];
extern const uint32_t fhir_r4_sp_list_start[];

/* Byte order comparison of a slice with a C string, as the generator sorted them. */
static int
meta_cmp(slice_t s, const char *c)
{
	for (size_t i = 0; i < s.len; i++) {
		unsigned char x = (unsigned char)s.ptr[i], y = (unsigned char)c[i];

		if (y == '\0' || x > y)
			return 1;
		if (x < y)
			return -1;
	}
	return c[s.len] == '\0' ? 0 : -1;
}

/* Types by name hash (positions + 1; 0: free), built once: a type is looked up for every
 * resource converted, indexed or read, and for every reference indexed, where a binary
 * search of the sorted table took ten comparisons. */
#define META_TYPE_SLOTS 2048

static struct {
	pthread_once_t once;
	uint16_t slot[META_TYPE_SLOTS];
} meta_type_index = {PTHREAD_ONCE_INIT, {0}};

static size_t
meta_name_hash(const char *p, size_t len)
{
	return (size_t)hash_fnv1a64(p, len, 0) & (META_TYPE_SLOTS - 1);
}

static void
meta_type_index_build(void)
{
	if (fhir_r4_ntypes > META_TYPE_SLOTS / 2)
		abort(); /* the generated tables outgrew the index: make it bigger */
	for (size_t i = 0; i < fhir_r4_ntypes; i++) {
		const char *name = fhir_r4_types[i].name;
		size_t h = meta_name_hash(name, strlen(name));

		while (meta_type_index.slot[h] != 0)
			h = (h + 1) & (META_TYPE_SLOTS - 1);
		meta_type_index.slot[h] = (uint16_t)(i + 1);
	}
}

static const fhir_type_t *
meta_type_find(slice_t name)
{
	size_t h;
	uint16_t p;

	pthread_once(&meta_type_index.once, meta_type_index_build);
	for (h = meta_name_hash(name.ptr, name.len); (p = meta_type_index.slot[h]) != 0;
	     h = (h + 1) & (META_TYPE_SLOTS - 1))
		if (meta_cmp(name, fhir_r4_types[p - 1].name) == 0)
			return &fhir_r4_types[p - 1];
	return NULL;
}

const fhir_type_t *
fhir_meta_type(slice_t name)
{
	if (name.len == 0)
		return NULL;
	return meta_type_find(name);
}

int
fhir_meta_elem_index(const fhir_type_t *t, slice_t name)
{
	size_t ti, lo, hi;
	const uint16_t *order;

	if (t == NULL || t->nelems == 0 || name.len == 0)
		return -1;
	ti = (size_t)(t - fhir_r4_types);
	order = &fhir_r4_elem_by_name[fhir_r4_elem_by_name_start[ti]];
	lo = 0;
	hi = t->nelems;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int r = meta_cmp(name, t->elems[order[mid]].name);

		if (r == 0)
			return order[mid];
		if (r < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return -1;
}

const fhir_elem_t *
fhir_meta_elem(const fhir_type_t *t, slice_t name)
{
	int i = fhir_meta_elem_index(t, name);

	return i < 0 ? NULL : &t->elems[i];
}

size_t
fhir_meta_choice_end(const fhir_type_t *t, size_t e)
{
	const char *base = t->elems[e].choice_base;
	size_t end = e + 1;

	while (base != NULL && end < t->nelems && t->elems[end].choice_base != NULL &&
	       strcmp(t->elems[end].choice_base, base) == 0)
		end++;
	return end;
}

const fhir_type_t *
fhir_meta_elem_type(const fhir_type_t *owner, const fhir_elem_t *e)
{
	size_t ti = (size_t)(owner - fhir_r4_types), ei = (size_t)(e - owner->elems);
	uint16_t i = fhir_r4_elem_type[fhir_r4_elem_by_name_start[ti] + ei];

	return i == 0xffff ? NULL : &fhir_r4_types[i];
}

bool
fhir_meta_is_resource(slice_t name)
{
	const fhir_type_t *t = fhir_meta_type(name);

	return t != NULL && t->kind == FHIR_TYPE_RESOURCE;
}

size_t
fhir_meta_resource_count(void)
{
	return fhir_r4_nresources;
}

const fhir_type_t *
fhir_meta_resource_at(size_t i)
{
	return i < fhir_r4_nresources ? &fhir_r4_types[fhir_r4_resources[i]] : NULL;
}

/* The first expansion of choice base (its elements are consecutive). */
static const fhir_elem_t *
meta_choice_first(const fhir_type_t *t, slice_t base)
{
	for (size_t i = 0; i < t->nelems; i++)
		if (t->elems[i].choice_base != NULL && slice_eq_cstr(base, t->elems[i].choice_base))
			return &t->elems[i];
	return NULL;
}

const fhir_elem_t *
fhir_meta_path(const fhir_type_t *t, slice_t path, const fhir_type_t **owner)
{
	const fhir_elem_t *e = NULL;
	const fhir_type_t *cur = t;
	size_t pos = 0;
	bool first = true;

	if (t == NULL || path.len == 0)
		return NULL;
	while (pos <= path.len) {
		const char *dot = memchr(path.ptr + pos, '.', path.len - pos);
		size_t end = dot != NULL ? (size_t)(dot - path.ptr) : path.len;
		slice_t seg = slice_make(path.ptr + pos, end - pos);

		/* "Patient.name" names its starting type first, as FHIRPath does. */
		if (first && dot != NULL && slice_eq_cstr(seg, t->name)) {
			first = false;
			pos = end + 1;
			continue;
		}
		first = false;
		if (cur == NULL)
			return NULL;
		if (seg.len > 3 && memcmp(seg.ptr + seg.len - 3, "[x]", 3) == 0)
			e = meta_choice_first(cur, slice_make(seg.ptr, seg.len - 3));
		else
			e = fhir_meta_elem(cur, seg);
		if (e == NULL)
			return NULL;
		if (owner != NULL)
			*owner = cur;
		if (dot == NULL)
			return e;
		/* A choice as a whole has no single type to descend into. */
		cur = seg.ptr[seg.len - 1] == ']' ? NULL : fhir_meta_elem_type(cur, e);
		if (cur != NULL && cur->nelems == 0)
			cur = NULL;
		pos = end + 1;
	}
	return NULL;
}

static size_t
meta_resource_index(slice_t resource, bool *found)
{
	size_t lo = 0, hi = fhir_r4_nresources;

	*found = false;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int r = meta_cmp(resource, fhir_r4_types[fhir_r4_resources[mid]].name);

		if (r == 0) {
			*found = true;
			return mid;
		}
		if (r < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return 0;
}

size_t
fhir_meta_searchparams(slice_t resource, const fhir_searchparam_t *const **out)
{
	bool found;
	size_t i = meta_resource_index(resource, &found);

	if (!found) {
		*out = NULL;
		return 0;
	}
	*out = &fhir_r4_sp_lists[fhir_r4_sp_list_start[i]];
	return fhir_r4_sp_list_start[i + 1] - fhir_r4_sp_list_start[i];
}

const fhir_searchparam_t *
fhir_meta_searchparam(slice_t resource, slice_t code)
{
	const fhir_searchparam_t *const *list;
	size_t lo = 0, hi = fhir_meta_searchparams(resource, &list);

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int r = meta_cmp(code, list[mid]->code);

		if (r == 0)
			return list[mid];
		if (r < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return NULL;
}
