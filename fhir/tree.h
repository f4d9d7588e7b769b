/* The FHIR resource tree: a JSON-shaped tree (objects keep member order, arrays, strings,
 * exact decimal numbers, booleans) allocated in an arena. JSON is its native form (primitive
 * extensions are `_name` members, as in FHIR JSON); the XML codec maps to and from it with the
 * R4 metadata. Everything returned is borrowed from the arena and valid until it is freed. */
#ifndef FHIR_TREE_H
#define FHIR_TREE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/arena.h"
#include "lib/buf.h"
#include "lib/slice.h"

typedef enum {
	FHIR_NULL = 0, /* only inside arrays of primitives with extensions ([null, "x"]) */
	FHIR_BOOL,
	FHIR_NUMBER, /* integer or decimal, kept as its exact text ("1.50" stays "1.50") */
	FHIR_STRING,
	FHIR_OBJECT,
	FHIR_ARRAY,
	FHIR_RAW, /* a value already serialized as compact JSON (see fhir_raw_new) */
} fhir_kind_t;

typedef struct fhir_node fhir_node_t;

fhir_node_t *fhir_null_new(arena_t *a);
fhir_node_t *fhir_bool_new(arena_t *a, bool v);
/* text must be a JSON number; it is copied. */
fhir_node_t *fhir_number_new(arena_t *a, slice_t text);
fhir_node_t *fhir_int_new(arena_t *a, int64_t v);
/* s is copied (it must be valid UTF-8: callers decode HL7 text first). */
fhir_node_t *fhir_string_new(arena_t *a, slice_t s);
/* A value given as compact JSON text (borrowed: it must outlive the tree), which the JSON writer
 * copies as it is. For output only (a stored resource placed into a Bundle without parsing it):
 * nothing else looks inside, and the XML writer refuses it. fhir_node_text gives the text. */
fhir_node_t *fhir_raw_new(arena_t *a, slice_t json);
fhir_node_t *fhir_object_new(arena_t *a);
fhir_node_t *fhir_array_new(arena_t *a);

fhir_kind_t fhir_node_kind(const fhir_node_t *n);
bool fhir_node_bool(const fhir_node_t *n);
/* The text of a string or number node; empty for other kinds. */
slice_t fhir_node_text(const fhir_node_t *n);

/* Objects: members in insertion order. set replaces the value of an existing key in place,
 * else appends; key is copied (a NULL val removes the key). remove returns whether the key
 * was there. Large objects get a hash index, so lookups stay cheap on hostile input. */
void fhir_object_set(arena_t *a, fhir_node_t *obj, slice_t key, fhir_node_t *val);
/* Appends key (copied) unless it is already there; returns false, changing nothing, if it is.
 * val may be NULL for a moment, until set_value_at fills it (the JSON parser meets the key
 * before its value). */
bool fhir_object_add_new(arena_t *a, fhir_node_t *obj, slice_t key, fhir_node_t *val);
/* Appends a key the caller knows is not there yet, without looking for it; key is borrowed
 * (it must live in a or longer), which is how a copy reuses the keys of its original. */
void fhir_object_push(arena_t *a, fhir_node_t *obj, slice_t key, fhir_node_t *val);
/* Inserts a key the caller knows is not there yet (borrowed, as with fhir_object_push) after
 * the members of rank up to rank and before those above it: members inserted so stay sorted
 * by rank, ties in insertion order, whatever order they come in. Members added by the other
 * functions have rank 0. */
void fhir_object_insert(arena_t *a, fhir_node_t *obj, slice_t key, fhir_node_t *val, uint32_t rank);
/* The rank member i was inserted with (0 when out of range or added otherwise). */
uint32_t fhir_object_rank_at(const fhir_node_t *obj, size_t i);
/* Puts obj's members in a new order: order[j] is the position now of the member that goes to
 * j (a permutation of 0 .. count - 1). */
void fhir_object_reorder(arena_t *a, fhir_node_t *obj, const uint32_t *order);
fhir_node_t *fhir_object_get(const fhir_node_t *obj, slice_t key);
/* fhir_object_get comparing keys by address, not by bytes: for objects whose every key comes
 * from one table of unique strings (interned), as key does. */
fhir_node_t *fhir_object_get_interned(const fhir_node_t *obj, slice_t key);
bool fhir_object_remove(fhir_node_t *obj, slice_t key);
size_t fhir_object_count(const fhir_node_t *obj);
slice_t fhir_object_key_at(const fhir_node_t *obj, size_t i);
fhir_node_t *fhir_object_value_at(const fhir_node_t *obj, size_t i);
/* Replaces the value of member i (out of range: nothing). */
void fhir_object_set_value_at(fhir_node_t *obj, size_t i, fhir_node_t *val);
/* Convenience: the same with NUL-terminated keys. */
void fhir_object_set_cstr(arena_t *a, fhir_node_t *obj, const char *key, fhir_node_t *val);
fhir_node_t *fhir_object_get_cstr(const fhir_node_t *obj, const char *key);

/* Arrays. */
void fhir_array_append(arena_t *a, fhir_node_t *arr, fhir_node_t *val);
size_t fhir_array_len(const fhir_node_t *arr);
fhir_node_t *fhir_array_at(const fhir_node_t *arr, size_t i);
/* Replace or remove (shifting the rest down) item i; out-of-range i does nothing. */
void fhir_array_set(fhir_node_t *arr, size_t i, fhir_node_t *val);
void fhir_array_remove_at(fhir_node_t *arr, size_t i);

/* A deep copy into arena a. */
fhir_node_t *fhir_node_clone(arena_t *a, const fhir_node_t *n);
/* Deep equality (object member order ignored, array order kept, numbers compared as text). */
bool fhir_node_equal(const fhir_node_t *x, const fhir_node_t *y);
/* True for an object with no members, an array with no items, or an empty string; FHIR forbids
 * empty elements, so builders prune them with fhir_node_prune. */
bool fhir_node_is_empty(const fhir_node_t *n);
/* Removes empty strings, objects and arrays, recursively; returns false if n itself is empty.
 * A primitive array `x` and its `_x` companion stay aligned: an index goes when both sides are
 * empty, an empty side beside a kept one becomes null, and an all-null array is removed. */
bool fhir_node_prune(fhir_node_t *n);

/* Removes from every array in n (recursively, 64 levels deep) each object equal to one
 * before it among its first 64 items (the same doctor as placer and filler contact). */
void fhir_node_dedupe(fhir_node_t *n);
/* fhir_node_dedupe then fhir_node_prune (its result), in one walk where that gives the same
 * tree. n must be a tree: no node reachable twice (a subtree pruned on the way would otherwise
 * be compared pruned where the two walks compare it whole). */
bool fhir_node_dedupe_prune(fhir_node_t *n);

/* "resourceType" of a resource object, empty when absent. */
slice_t fhir_resource_type(const fhir_node_t *res);

#define FHIR_ARRAY_FOREACH(arr, i, item) \
	for ((i) = 0; (i) < fhir_array_len(arr) && (((item) = fhir_array_at((arr), (i))), 1); (i)++)

#endif
