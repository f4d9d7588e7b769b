/* Length-delimited string views: strings from the wire never rely on a NUL. */
#ifndef LIB_SLICE_H
#define LIB_SLICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct {
	const char *ptr; /* borrowed: valid as long as the memory it points into */
	size_t len;
} slice_t;

#define SLICE_NULL   ((slice_t){NULL, 0})
#define SLICE_LIT(s) ((slice_t){(s), sizeof(s) - 1})

static inline slice_t
slice_make(const char *p, size_t len)
{
	return (slice_t){p, len};
}

static inline slice_t
slice_cstr(const char *s)
{
	return (slice_t){s, s ? strlen(s) : 0};
}

static inline bool
slice_is_empty(slice_t s)
{
	return s.len == 0;
}

static inline bool
slice_eq(slice_t a, slice_t b)
{
	return a.len == b.len &&
	       (a.len == 0 || (a.ptr[0] == b.ptr[0] && memcmp(a.ptr, b.ptr, a.len) == 0));
}

static inline bool
slice_eq_cstr(slice_t a, const char *s)
{
	return slice_eq(a, slice_cstr(s));
}

/* Byte order, a prefix before what it begins (the order of index keys): <0, 0, >0. */
static inline int
slice_cmp(slice_t a, slice_t b)
{
	size_t n = a.len < b.len ? a.len : b.len;
	int r;

	/* most pairs differ in their first byte: no call then */
	if (n > 0 && a.ptr[0] != b.ptr[0])
		return (unsigned char)a.ptr[0] < (unsigned char)b.ptr[0] ? -1 : 1;
	r = n > 0 ? memcmp(a.ptr, b.ptr, n) : 0;
	return r != 0 ? r : (a.len > b.len) - (a.len < b.len);
}

bool slice_eq_nocase(slice_t a, slice_t b);
/* slice_trim when there may be white space to take off (slice.c). */
slice_t slice_trim_space(slice_t s);
/* s without leading and trailing white space. Inline: most values (a conversion trims every
 * one) begin and end with printable ASCII other than the space (0x21-0x7e, for which isspace
 * is false in every locale): nothing to trim. */
static inline slice_t
slice_trim(slice_t s)
{
	if (s.len > 0 && (unsigned char)s.ptr[0] - 0x21u < 0x5eu &&
	    (unsigned char)s.ptr[s.len - 1] - 0x21u < 0x5eu)
		return s;
	return slice_trim_space(s);
}
/* Parses a non-negative decimal; false on empty, non-digits or overflow. */
bool slice_to_u64(slice_t s, uint64_t *out);
/* Parses a possibly signed decimal; false on empty, junk or overflow. */
bool slice_to_i64(slice_t s, int64_t *out);

#endif
