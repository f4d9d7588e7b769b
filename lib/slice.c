/* Helpers over length-delimited strings. */
#include "config.h"

#include "lib/slice.h"

#include <ctype.h>

bool
slice_eq_nocase(slice_t a, slice_t b)
{
	if (a.len != b.len)
		return false;
	for (size_t i = 0; i < a.len; i++)
		if (tolower((unsigned char)a.ptr[i]) != tolower((unsigned char)b.ptr[i]))
			return false;
	return true;
}

slice_t
slice_trim_space(slice_t s)
{
	while (s.len > 0 && isspace((unsigned char)s.ptr[0])) {
		s.ptr++;
		s.len--;
	}
	while (s.len > 0 && isspace((unsigned char)s.ptr[s.len - 1]))
		s.len--;
	return s;
}

bool
slice_to_u64(slice_t s, uint64_t *out)
{
	uint64_t v = 0;

	if (s.len == 0)
		return false;
	for (size_t i = 0; i < s.len; i++) {
		unsigned d = (unsigned char)s.ptr[i] - '0';

		if (d > 9 || v > (UINT64_MAX - d) / 10)
			return false;
		v = v * 10 + d;
	}
	*out = v;
	return true;
}

bool
slice_to_i64(slice_t s, int64_t *out)
{
	bool neg = false;
	uint64_t v;

	if (s.len > 0 && (s.ptr[0] == '-' || s.ptr[0] == '+')) {
		neg = s.ptr[0] == '-';
		s.ptr++;
		s.len--;
	}
	if (!slice_to_u64(s, &v) || v > (uint64_t)INT64_MAX + (neg ? 1 : 0))
		return false;
	*out = neg ? (int64_t)(0 - v) : (int64_t)v;
	return true;
}
