/* Unit tests for lib/: buffers, slices, arena, hashing, errors. */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "lib/arena.h"
#include "lib/buf.h"
#include "lib/err.h"
#include "lib/hash.h"
#include "lib/slice.h"

static void
test_buf_cap(void **state)
{
	buf_t b;

	buf_init(&b, 8);
	assert_int_equal(buf_append_cstr(&b, "12345678"), 0);
	assert_int_equal(buf_append_byte(&b, 'x'), -FG_ETOOBIG);
	assert_int_equal(b.len, 8);
	assert_string_equal(b.data, "12345678");
	buf_consume(&b, 3);
	assert_string_equal(b.data, "45678");
	assert_int_equal(buf_printf(&b, "%d", 12), 0);
	assert_string_equal(b.data, "4567812");
	assert_int_equal(buf_printf(&b, "%d", 123), -FG_ETOOBIG);
	buf_free(&b);
}

static void
test_buf_be(void **state)
{
	buf_t b = BUF_INIT;

	assert_int_equal(buf_append_be64(&b, 0x0102030405060708ull), 0);
	assert_int_equal(buf_append_be32(&b, 0xa1b2c3d4u), 0);
	assert_int_equal(buf_append_lpstr(&b, SLICE_LIT("abc")), 0);
	assert_int_equal(b.len, 8 + 4 + 2 + 3);
	assert_true(be64_read(b.data) == 0x0102030405060708ull);
	assert_true(be32_read(b.data + 8) == 0xa1b2c3d4u);
	assert_int_equal(be16_read(b.data + 12), 3);
	assert_memory_equal(b.data + 14, "abc", 3);
	buf_free(&b);
}

static void
test_slice_numbers(void **state)
{
	uint64_t u;
	int64_t i;

	assert_true(slice_to_u64(SLICE_LIT("18446744073709551615"), &u));
	assert_true(u == UINT64_MAX);
	assert_false(slice_to_u64(SLICE_LIT("18446744073709551616"), &u));
	assert_false(slice_to_u64(SLICE_LIT(""), &u));
	assert_false(slice_to_u64(SLICE_LIT("1x"), &u));
	assert_true(slice_to_i64(SLICE_LIT("-9223372036854775808"), &i));
	assert_true(i == INT64_MIN);
	assert_false(slice_to_i64(SLICE_LIT("9223372036854775808"), &i));
	assert_true(slice_eq_nocase(SLICE_LIT("Utf-8"), SLICE_LIT("UTF-8")));
	assert_true(slice_eq_cstr(slice_trim(SLICE_LIT("  a b \t")), "a b"));
}

static void
test_arena(void **state)
{
	arena_t *a = arena_new(64);
	char *big;

	for (int i = 0; i < 100; i++) {
		char *p = arena_alloc(a, 24);

		assert_true(((uintptr_t)p % sizeof(void *)) == 0);
		memset(p, 'a', 24);
	}
	big = arena_alloc(a, 1000);
	memset(big, 'b', 1000);
	assert_string_equal(arena_strndup(a, "hello world", 5), "hello");
	assert_true(arena_used(a) >= 100 * 24 + 1000);
	arena_reset(a);
	assert_int_equal(arena_used(a), 0);
	assert_non_null(arena_zalloc(a, 10));
	arena_free(a);
	arena_free(NULL);
}

static void
test_arena_array_printf(void **state)
{
	arena_t *a = arena_new(128);
	int *v = NULL;
	size_t n = 0, cap = 0;

	for (int i = 0; i < 1000; i++) {
		v = arena_array_grow(a, v, n, &cap, sizeof(*v));
		v[n++] = i;
	}
	assert_true(cap >= 1000 && cap < 2048);
	for (int i = 0; i < 1000; i++)
		assert_int_equal(v[i], i);
	assert_string_equal(arena_printf(a, "%s/%05d", "Patient", 42), "Patient/00042");
	arena_free(a);
}

static void
test_hash_err(void **state)
{
	/* FNV-1a 64 test vectors. */
	assert_true(hash_fnv1a64("", 0, 0) == 0xcbf29ce484222325ull);
	assert_true(hash_fnv1a64("a", 1, 0) == 0xaf63dc4c8601ec8cull);
	assert_string_equal(fg_strerror(-FG_ETOOBIG), "limit exceeded");
	assert_string_equal(fg_strerror(-1000), "unknown error");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_buf_cap),
	    cmocka_unit_test(test_buf_be),
	    cmocka_unit_test(test_slice_numbers),
	    cmocka_unit_test(test_arena),
	    cmocka_unit_test(test_arena_array_printf),
	    cmocka_unit_test(test_hash_err),
	};

	return cmocka_run_group_tests_name("lib", tests, NULL, NULL);
}
