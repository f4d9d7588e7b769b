/* Chunked bump allocator. */
#include "config.h"

#include "lib/arena.h"

#include <pthread.h>
#include <stdalign.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/arena_int.h"
#include "lib/xalloc.h"

#define CHUNK_MAX (1024 * 1024)

/* Freed chunks of the large sizes that growth makes (POOL_MIN, twice that, ... CHUNK_MAX) are
 * kept for the next arena, up to POOL_MAX bytes in all: malloc maps and unmaps blocks that large
 * (see serve.c), and faulting fresh zeroed pages in for every message cost more than the work
 * done in them. Shared by all threads (an arena may be freed by another thread than the one
 * that made it). Off under AddressSanitizer, so that it still sees a use after free. */
#define POOL_MIN     (128 * 1024)
#define POOL_CLASSES 4 /* POOL_MIN << 0 .. POOL_MIN << 3 == CHUNK_MAX */
#define POOL_MAX     (16 * 1024 * 1024)

#if defined(__SANITIZE_ADDRESS__)
#define POOL_ENABLED 0
#else
#define POOL_ENABLED 1
#endif

static struct {
	pthread_mutex_t lock;
	struct arena_chunk *free[POOL_CLASSES];
	size_t bytes;
} pool = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* The pool class of a chunk of size bytes, or -1 when it is not pooled. */
static int
pool_class(size_t size)
{
	for (int i = 0; i < POOL_CLASSES; i++)
		if (size == (size_t)POOL_MIN << i)
			return POOL_ENABLED ? i : -1;
	return -1;
}

static struct arena_chunk *
chunk_new(size_t size)
{
	int k = pool_class(size);
	struct arena_chunk *c = NULL;

	if (k >= 0) {
		pthread_mutex_lock(&pool.lock);
		if ((c = pool.free[k]) != NULL) {
			pool.free[k] = c->next;
			pool.bytes -= size;
		}
		pthread_mutex_unlock(&pool.lock);
	}
	if (c == NULL) {
		c = xmalloc(sizeof(*c) + size);
		c->size = size;
	}
	c->next = NULL;
	c->used = 0;
	return c;
}

static void
chunk_free(struct arena_chunk *c)
{
	int k = pool_class(c->size);

	if (k >= 0) {
		pthread_mutex_lock(&pool.lock);
		if (pool.bytes + c->size <= POOL_MAX) {
			c->next = pool.free[k];
			pool.free[k] = c;
			pool.bytes += c->size;
			c = NULL;
		}
		pthread_mutex_unlock(&pool.lock);
	}
	free(c);
}

arena_t *
arena_new(size_t chunk_size)
{
	arena_t *a = xcalloc(1, sizeof(*a));

	a->chunk_size = chunk_size ? chunk_size : 16384;
	a->head = chunk_new(a->chunk_size);
	return a;
}

static void
chunks_free(struct arena_chunk *c)
{
	while (c != NULL) {
		struct arena_chunk *next = c->next;

		chunk_free(c);
		c = next;
	}
}

void
arena_free(arena_t *a)
{
	if (a == NULL)
		return;
	chunks_free(a->head);
	free(a);
}

void
arena_reset(arena_t *a)
{
	struct arena_chunk *last = a->head;

	/* Keep the oldest chunk (the last in the list): it has the default size. */
	while (last->next != NULL)
		last = last->next;
	if (last != a->head) {
		struct arena_chunk *c = a->head;

		while (c != last) {
			struct arena_chunk *next = c->next;

			chunk_free(c);
			c = next;
		}
		a->head = last;
	}
	a->head->used = 0;
	a->total = 0;
}

/* arena_alloc past the head chunk's room: a new chunk. Apart, so that the common case saves
 * no registers. */
__attribute__((noinline)) void *
arena_alloc_chunk(arena_t *a, size_t size)
{
	struct arena_chunk *c = a->head;
	/* Chunks double up to CHUNK_MAX: a big request makes few large chunks (which the
	 * allocator maps and unmaps as a whole) rather than thousands of small ones that
	 * fragment the heap. */
	size_t grow = c->size < CHUNK_MAX / 2 ? c->size * 2 : CHUNK_MAX;
	size_t csize = grow > a->chunk_size ? grow : a->chunk_size;

	if (size > csize)
		csize = size;
	c = chunk_new(csize);
	c->next = a->head;
	a->head = c;
	c->used = size;
	a->total += size;
	return c->data;
}

void *(arena_alloc)(arena_t *a, size_t size)
{
	return arena_alloc_inl(a, size);
}

void *
arena_zalloc(arena_t *a, size_t size)
{
	void *p = arena_alloc(a, size);

	memset(p, 0, size);
	return p;
}

char *
arena_strndup(arena_t *a, const char *s, size_t len)
{
	char *p = arena_alloc(a, len + 1);

	if (len > 0)
		memcpy(p, s, len);
	p[len] = '\0';
	return p;
}

slice_t
arena_slice_dup(arena_t *a, slice_t s)
{
	return (slice_t){arena_strndup(a, s.ptr, s.len), s.len};
}

void *
arena_array_grow(arena_t *a, void *v, size_t n, size_t *cap, size_t size)
{
	size_t ncap;
	void *nv;

	if (n < *cap)
		return v;
	ncap = *cap ? *cap * 2 : 16;
	if (ncap > SIZE_MAX / size)
		abort();
	nv = arena_alloc(a, ncap * size);
	if (n > 0)
		memcpy(nv, v, n * size);
	*cap = ncap;
	return nv;
}

char *
arena_printf(arena_t *a, const char *fmt, ...)
{
	char small[256], *s;
	va_list ap;
	int n;

	/* Most texts fit the stack buffer: one formatting pass. (Measuring with a NULL buffer
	 * also trips GCC's -Wformat-truncation under the sanitizers at -O1.) */
	va_start(ap, fmt);
	n = vsnprintf(small, sizeof(small), fmt, ap);
	va_end(ap);
	if (n < 0)
		abort();
	s = arena_alloc(a, (size_t)n + 1);
	if ((size_t)n < sizeof(small)) {
		memcpy(s, small, (size_t)n + 1);
		return s;
	}
	va_start(ap, fmt);
	vsnprintf(s, (size_t)n + 1, fmt, ap);
	va_end(ap);
	return s;
}

size_t
arena_used(const arena_t *a)
{
	return a->total;
}
