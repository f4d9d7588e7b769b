/* The arena's layout and its allocation's common case inline, for the code that allocates a
 * node or a value at a time (the resource tree, the converter); everyone else calls arena.h. */
#ifndef LIB_ARENA_INT_H
#define LIB_ARENA_INT_H

#include <stdalign.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "lib/arena.h"

struct arena_chunk {
	struct arena_chunk *next;
	size_t size;
	size_t used;
	alignas(max_align_t) unsigned char data[];
};

struct arena {
	struct arena_chunk *head;
	size_t chunk_size;
	size_t total;
};

/* The allocation that needs a new chunk (arena.c). */
void *arena_alloc_chunk(arena_t *a, size_t size);

static inline void *
arena_alloc_inl(arena_t *a, size_t size)
{
	const size_t align = alignof(max_align_t);
	struct arena_chunk *c = a->head;
	size_t off;

	if (size > SIZE_MAX - align)
		abort();
	off = (c->used + align - 1) & ~(align - 1);
	if (off > c->size || size > c->size - off)
		return arena_alloc_chunk(a, size);
	c->used = off + size;
	a->total += size;
	return c->data + off;
}

/* Files that include this header allocate inline; arena.c defines arena_alloc with it. */
#define arena_alloc(a, size) arena_alloc_inl((a), (size))

#endif
