/* Growable byte buffer with an optional cap (as curl's dynbuf): network input never grows
 * unbounded. */
#ifndef LIB_BUF_H
#define LIB_BUF_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "lib/slice.h"

typedef struct {
	char *data; /* owned; always NUL-terminated after len when data != NULL */
	size_t len;
	size_t cap;
	size_t max; /* 0: no cap */
} buf_t;

#define BUF_INIT              \
	{                     \
		NULL, 0, 0, 0 \
	}

void buf_init(buf_t *b, size_t max);
void buf_free(buf_t *b);
/* Empties b, keeping its memory (inline: the converter resets scratch buffers per value). */
static inline void
buf_reset(buf_t *b)
{
	b->len = 0;
	if (b->data != NULL)
		b->data[0] = '\0';
}
/* Append; -FG_ETOOBIG (and nothing appended) past the cap, else 0. */
int buf_append(buf_t *b, const void *p, size_t len);
int buf_append_cstr(buf_t *b, const char *s);

/* buf_append of a slice and of a byte, inline when they fit in the room b has and b has no cap
 * (the converter builds texts piece by piece); else buf_append. */
static inline int
buf_append_slice(buf_t *b, slice_t s)
{
	if (b->max == 0 && s.len < b->cap - b->len) {
		if (s.len > 0)
			memcpy(b->data + b->len, s.ptr, s.len);
		b->len += s.len;
		b->data[b->len] = '\0';
		return 0;
	}
	return buf_append(b, s.ptr, s.len);
}

static inline int
buf_append_byte(buf_t *b, char c)
{
	if (b->max == 0 && b->cap - b->len > 1) {
		b->data[b->len++] = c;
		b->data[b->len] = '\0';
		return 0;
	}
	return buf_append(b, &c, 1);
}
int buf_printf(buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int buf_vprintf(buf_t *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
/* Big-endian fixed-width numbers, for LMDB keys whose byte order is their numeric order. */
int buf_append_be64(buf_t *b, uint64_t v);
int buf_append_be32(buf_t *b, uint32_t v);
/* A length-prefixed (u16 big-endian) string; -FG_ETOOBIG when longer than 65535. */
int buf_append_lpstr(buf_t *b, slice_t s);
/* Room for extra more bytes past len: where they go (write them, then buf_added), or NULL past
 * the cap. For a record written in place instead of appended piece by piece. */
char *buf_room(buf_t *b, size_t extra);
/* The n bytes written at buf_room's pointer become part of the buffer. */
void buf_added(buf_t *b, size_t n);
/* Appends the whole file at path: 0, -FG_EIO when it cannot be opened or read (errno says
 * why), -FG_ETOOBIG past the cap (what was read stays). */
int buf_append_file(buf_t *b, const char *path);
/* Removes the first n bytes. */
void buf_consume(buf_t *b, size_t n);
/* Hands the data to the caller (caller owns, free()), leaving b empty. */
char *buf_steal(buf_t *b, size_t *len);

static inline slice_t
buf_slice(const buf_t *b)
{
	return (slice_t){b->data, b->len};
}

/* Big-endian readers (inline: store keys and records are decoded in hot loops). */
static inline uint16_t
be16_read(const void *p)
{
	const unsigned char *x = p;

	return (uint16_t)((x[0] << 8) | x[1]);
}

static inline uint32_t
be32_read(const void *p)
{
	const unsigned char *x = p;

	return ((uint32_t)x[0] << 24) | ((uint32_t)x[1] << 16) | ((uint32_t)x[2] << 8) | x[3];
}

static inline uint64_t
be64_read(const void *p)
{
	return ((uint64_t)be32_read(p) << 32) | be32_read((const unsigned char *)p + 4);
}

#endif
