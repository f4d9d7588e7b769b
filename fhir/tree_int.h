/* The layout of the resource tree's nodes, and its small accessors, constructors and
 * insertions inline, for the code that cannot afford a call per member, lookup or value (the
 * compact JSON writer, the converter in mappings/); everyone else goes through tree.h. The
 * layout is read only outside tree.c: changes go through the functions of tree.h (here or
 * there), which keep an object's index. */
#ifndef FHIR_TREE_INT_H
#define FHIR_TREE_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "fhir/tree.h"
#include "lib/arena_int.h"
#include "lib/slice.h"

typedef struct {
	slice_t key;
	fhir_node_t *val;
	uint32_t rank; /* fhir_object_insert's order; 0 for members added otherwise */
} fhir_member_t;

struct fhir_node {
	fhir_kind_t kind;
	bool b;
	union {
		slice_t text; /* FHIR_STRING, FHIR_NUMBER, FHIR_RAW */
		struct {
			fhir_member_t *m;
			size_t n, cap;
			/* Open-addressing index of member positions + 1 (0: free), built only for
			 * large objects so that a hostile document with many keys stays linear. */
			uint32_t *idx;
			size_t idx_cap;
		} obj;
		struct {
			fhir_node_t **v;
			size_t n, cap;
		} arr;
	} u;
};

/* Objects up to this many members are searched linearly (almost every FHIR object is). */
#define FHIR_OBJECT_LINEAR_MAX 16

/* Room for this many members (items) comes with a new object (array), in the same allocation:
 * most have a few, and the first would otherwise allocate again. */
#define FHIR_OBJECT_FIRST_CAP 4

/* The paths of the inline functions below that are not inline (tree.c). */
void fhir_object_insert_at(arena_t *a, fhir_node_t *obj, slice_t key, fhir_node_t *val,
			   uint32_t rank, size_t at);
void fhir_array_grow(arena_t *a, fhir_node_t *arr);
/* The lookup of an object that has an index (a large one), by address or by bytes. */
fhir_member_t *fhir_object_find_indexed(const fhir_node_t *obj, slice_t key, bool by_address);

/* The accessors of tree.h, inline: a file that includes this header calls these under the
 * public names (the macros below); tree.c defines the public functions with them. */
static inline fhir_kind_t
fhir_node_kind_inl(const fhir_node_t *n)
{
	return n->kind;
}

static inline slice_t
fhir_node_text_inl(const fhir_node_t *n)
{
	if (n == NULL || (n->kind != FHIR_STRING && n->kind != FHIR_NUMBER && n->kind != FHIR_RAW))
		return slice_make("", 0);
	return n->u.text;
}

static inline size_t
fhir_object_count_inl(const fhir_node_t *obj)
{
	return obj != NULL && obj->kind == FHIR_OBJECT ? obj->u.obj.n : 0;
}

static inline slice_t
fhir_object_key_at_inl(const fhir_node_t *obj, size_t i)
{
	if (i >= fhir_object_count_inl(obj))
		return slice_make("", 0);
	return obj->u.obj.m[i].key;
}

static inline fhir_node_t *
fhir_object_value_at_inl(const fhir_node_t *obj, size_t i)
{
	if (i >= fhir_object_count_inl(obj))
		return NULL;
	return obj->u.obj.m[i].val;
}

/* Almost every object is small enough to have no index: a linear search by address. */
static inline fhir_node_t *
fhir_object_get_interned_inl(const fhir_node_t *obj, slice_t key)
{
	const fhir_member_t *m;

	if (obj == NULL || obj->kind != FHIR_OBJECT)
		return NULL;
	m = obj->u.obj.m;
	if (obj->u.obj.idx != NULL) {
		const fhir_member_t *f = fhir_object_find_indexed(obj, key, true);

		return f != NULL ? f->val : NULL;
	}
	for (size_t i = 0; i < obj->u.obj.n; i++)
		if (m[i].key.ptr == key.ptr)
			return m[i].val;
	return NULL;
}

static inline size_t
fhir_array_len_inl(const fhir_node_t *arr)
{
	return arr != NULL && arr->kind == FHIR_ARRAY ? arr->u.arr.n : 0;
}

static inline fhir_node_t *
fhir_array_at_inl(const fhir_node_t *arr, size_t i)
{
	if (i >= fhir_array_len_inl(arr))
		return NULL;
	return arr->u.arr.v[i];
}

/* The constructors and the insertions of tree.h that a conversion makes for every value, inline
 * in the same way. */

/* A number or string node with its text copied right after it: one allocation, not two (a
 * conversion makes hundreds of them). */
static inline fhir_node_t *
fhir_text_node_new_inl(arena_t *a, fhir_kind_t kind, slice_t text)
{
	fhir_node_t *n = arena_alloc_inl(a, sizeof(*n) + text.len + 1);
	char *p = (char *)(n + 1);

	*n = (fhir_node_t){.kind = kind};
	if (text.len > 0)
		memcpy(p, text.ptr, text.len);
	p[text.len] = '\0';
	n->u.text = slice_make(p, text.len);
	return n;
}

static inline fhir_node_t *
fhir_string_new_inl(arena_t *a, slice_t s)
{
	return fhir_text_node_new_inl(a, FHIR_STRING, s);
}

static inline fhir_node_t *
fhir_object_new_inl(arena_t *a)
{
	fhir_node_t *n =
	    arena_alloc_inl(a, sizeof(*n) + FHIR_OBJECT_FIRST_CAP * sizeof(fhir_member_t));

	*n = (fhir_node_t){.kind = FHIR_OBJECT};
	n->u.obj.m = (fhir_member_t *)(n + 1);
	n->u.obj.cap = FHIR_OBJECT_FIRST_CAP;
	return n;
}

static inline fhir_node_t *
fhir_array_new_inl(arena_t *a)
{
	fhir_node_t *n =
	    arena_alloc_inl(a, sizeof(*n) + FHIR_OBJECT_FIRST_CAP * sizeof(fhir_node_t *));

	*n = (fhir_node_t){.kind = FHIR_ARRAY};
	n->u.arr.v = (fhir_node_t **)(n + 1);
	n->u.arr.cap = FHIR_OBJECT_FIRST_CAP;
	return n;
}

static inline void
fhir_object_insert_inl(arena_t *a, fhir_node_t *obj, slice_t key, fhir_node_t *val, uint32_t rank)
{
	size_t n = obj->u.obj.n, at = n;

	/* almost always at the end: members mostly come in order */
	while (at > 0 && obj->u.obj.m[at - 1].rank > rank)
		at--;
	if (at == n && n < obj->u.obj.cap && obj->u.obj.idx == NULL &&
	    n + 1 <= FHIR_OBJECT_LINEAR_MAX) {
		/* and with room, no index to keep or build: fhir_object_append's work, no call */
		obj->u.obj.m[n] = (fhir_member_t){.key = key, .val = val, .rank = rank};
		obj->u.obj.n = n + 1;
		return;
	}
	fhir_object_insert_at(a, obj, key, val, rank, at);
}

static inline void
fhir_array_append_inl(arena_t *a, fhir_node_t *arr, fhir_node_t *val)
{
	size_t n = arr->u.arr.n;

	if (n == arr->u.arr.cap)
		fhir_array_grow(a, arr);
	arr->u.arr.v[n] = val;
	arr->u.arr.n = n + 1;
}

#define fhir_string_new(a, s) fhir_string_new_inl((a), (s))
#define fhir_object_new(a)    fhir_object_new_inl(a)
#define fhir_array_new(a)     fhir_array_new_inl(a)
#define fhir_object_insert(a, o, key, val, rank) \
	fhir_object_insert_inl((a), (o), (key), (val), (rank))
#define fhir_array_append(a, arr, val)   fhir_array_append_inl((a), (arr), (val))
#define fhir_node_kind(n)                fhir_node_kind_inl(n)
#define fhir_node_text(n)                fhir_node_text_inl(n)
#define fhir_object_count(o)             fhir_object_count_inl(o)
#define fhir_object_key_at(o, i)         fhir_object_key_at_inl((o), (i))
#define fhir_object_value_at(o, i)       fhir_object_value_at_inl((o), (i))
#define fhir_object_get_interned(o, key) fhir_object_get_interned_inl((o), (key))
#define fhir_array_len(a)                fhir_array_len_inl(a)
#define fhir_array_at(a, i)              fhir_array_at_inl((a), (i))

#endif
