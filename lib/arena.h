/* Region allocator: request- and message-scoped data is freed in one call. */
#ifndef LIB_ARENA_H
#define LIB_ARENA_H

#include <stddef.h>

#include "lib/slice.h"

typedef struct arena arena_t;

/* Caller owns; chunk_size 0 picks a default. */
arena_t *arena_new(size_t chunk_size);
/* Frees everything allocated from the arena, and the arena; accepts NULL. */
void arena_free(arena_t *a);
/* Forgets every allocation but keeps the first chunk for reuse. */
void arena_reset(arena_t *a);
/* Memory borrowed from the arena, valid until arena_reset/arena_free; aligned for any type. */
void *arena_alloc(arena_t *a, size_t size);
void *arena_zalloc(arena_t *a, size_t size);
char *arena_strndup(arena_t *a, const char *s, size_t len);
slice_t arena_slice_dup(arena_t *a, slice_t s);
/* An arena-backed growable array: returns v when it has room for element n, else a copy of its
 * n elements (of size bytes each) with twice the capacity (*cap updated; the old copy stays in
 * the arena until it is reset). */
void *arena_array_grow(arena_t *a, void *v, size_t n, size_t *cap, size_t size);
/* printf into the arena (borrowed, valid until arena_reset/arena_free). */
char *arena_printf(arena_t *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Bytes handed out since the last reset. */
size_t arena_used(const arena_t *a);

#endif
