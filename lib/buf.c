/* Growable, capped byte buffers. */
#include "config.h"

#include "lib/buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/err.h"
#include "lib/xalloc.h"

void
buf_init(buf_t *b, size_t max)
{
	b->data = NULL;
	b->len = 0;
	b->cap = 0;
	b->max = max;
}

void
buf_free(buf_t *b)
{
	free(b->data);
	b->data = NULL;
	b->len = 0;
	b->cap = 0;
}

static int
buf_reserve(buf_t *b, size_t extra)
{
	size_t need, ncap;

	if (b->max != 0 && (extra > b->max || b->len > b->max - extra))
		return -FG_ETOOBIG;
	need = b->len + extra + 1;
	if (need <= b->cap)
		return 0;
	ncap = b->cap ? b->cap : 64;
	while (ncap < need)
		ncap *= 2;
	b->data = xreallocarray(b->data, ncap, 1);
	b->cap = ncap;
	return 0;
}

char *
buf_room(buf_t *b, size_t extra)
{
	return buf_reserve(b, extra) < 0 ? NULL : b->data + b->len;
}

void
buf_added(buf_t *b, size_t n)
{
	b->len += n;
	b->data[b->len] = '\0';
}

int
buf_append_file(buf_t *b, const char *path)
{
	FILE *f = fopen(path, "rb");
	char chunk[65536];
	size_t n;
	int rc = 0;

	if (f == NULL)
		return -FG_EIO;
	while (rc == 0 && (n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		rc = buf_append(b, chunk, n);
	if (rc == 0 && ferror(f))
		rc = -FG_EIO;
	fclose(f);
	return rc;
}

int
buf_append(buf_t *b, const void *p, size_t len)
{
	int rc = buf_reserve(b, len);

	if (rc < 0)
		return rc;
	if (len > 0)
		memcpy(b->data + b->len, p, len);
	b->len += len;
	b->data[b->len] = '\0';
	return 0;
}

int
buf_append_cstr(buf_t *b, const char *s)
{
	return buf_append(b, s, strlen(s));
}

int
buf_vprintf(buf_t *b, const char *fmt, va_list ap)
{
	va_list ap2;
	int n, rc;

	va_copy(ap2, ap);
	n = vsnprintf(NULL, 0, fmt, ap2);
	va_end(ap2);
	if (n < 0)
		return -FG_EINVAL;
	rc = buf_reserve(b, (size_t)n);
	if (rc < 0)
		return rc;
	vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
	b->len += (size_t)n;
	return 0;
}

int
buf_printf(buf_t *b, const char *fmt, ...)
{
	va_list ap;
	int rc;

	va_start(ap, fmt);
	rc = buf_vprintf(b, fmt, ap);
	va_end(ap);
	return rc;
}

int
buf_append_be64(buf_t *b, uint64_t v)
{
	unsigned char x[8];

	for (int i = 7; i >= 0; i--) {
		x[i] = (unsigned char)(v & 0xff);
		v >>= 8;
	}
	return buf_append(b, x, sizeof(x));
}

int
buf_append_be32(buf_t *b, uint32_t v)
{
	unsigned char x[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16),
			      (unsigned char)(v >> 8), (unsigned char)v};

	return buf_append(b, x, sizeof(x));
}

int
buf_append_lpstr(buf_t *b, slice_t s)
{
	unsigned char x[2];
	int rc;

	if (s.len > 0xffff)
		return -FG_ETOOBIG;
	x[0] = (unsigned char)(s.len >> 8);
	x[1] = (unsigned char)s.len;
	rc = buf_append(b, x, 2);
	return rc < 0 ? rc : buf_append_slice(b, s);
}

void
buf_consume(buf_t *b, size_t n)
{
	if (n >= b->len) {
		buf_reset(b);
		return;
	}
	memmove(b->data, b->data + n, b->len - n);
	b->len -= n;
	b->data[b->len] = '\0';
}

char *
buf_steal(buf_t *b, size_t *len)
{
	char *p = b->data;

	if (p == NULL)
		p = xcalloc(1, 1);
	if (len != NULL)
		*len = b->len;
	b->data = NULL;
	b->len = 0;
	b->cap = 0;
	return p;
}
