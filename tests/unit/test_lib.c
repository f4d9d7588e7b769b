/* Unit tests for lib/: buffers, slices, arena, hashing, errors. */
#include "config.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "lib/arena.h"
#include "lib/buf.h"
#include "lib/cidr.h"
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

/* A record written in place (buf_room, buf_added) and a file read whole (buf_append_file). */
static void
test_buf_room_file(void **state)
{
	char path[] = "/tmp/fhirgate-test-buf-XXXXXX";
	buf_t b = BUF_INIT;
	int fd = mkstemp(path);
	char *w;

	assert_true(fd >= 0);
	assert_int_equal(write(fd, "file bytes\n", 11), 11);
	close(fd);
	assert_int_equal(buf_append_cstr(&b, "<"), 0);
	assert_int_equal(buf_append_file(&b, path), 0);
	assert_string_equal(b.data, "<file bytes\n");
	w = buf_room(&b, 3);
	assert_non_null(w);
	memcpy(w, "abc", 3);
	assert_int_equal(b.len, 12); /* not part of it yet */
	buf_added(&b, 3);
	assert_int_equal(b.len, 15);
	assert_string_equal(b.data, "<file bytes\nabc");
	buf_free(&b);

	/* a capped buffer keeps what fits; a missing file is an error */
	buf_init(&b, 4);
	assert_int_equal(buf_append_file(&b, path), -FG_ETOOBIG);
	assert_null(buf_room(&b, 5));
	unlink(path);
	assert_int_equal(buf_append_file(&b, path), -FG_EIO);
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

/* Large chunks go to a pool when an arena is freed and come back to the next one: what a new
 * arena hands out must be its own, whatever the previous one wrote there. */
static void
test_arena_pool_reuse(void **state)
{
	(void)state;
	for (int round = 0; round < 4; round++) {
		arena_t *a = arena_new(0);
		unsigned char *p[64];

		for (int i = 0; i < 64; i++) {
			p[i] = arena_alloc(a, 60000);
			memset(p[i], round * 64 + i, 60000);
		}
		for (int i = 0; i < 64; i++)
			for (int j = 0; j < 60000; j += 4999)
				assert_int_equal(p[i][j], (unsigned char)(round * 64 + i));
		if (round % 2)
			arena_reset(a);
		arena_free(a);
	}
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
	/* Longer than the first formatting pass's stack buffer. */
	{
		char want[1001];
		const char *got;

		memset(want, 'x', 1000);
		want[1000] = '\0';
		got = arena_printf(a, "%.*s", 1000, want);
		assert_string_equal(got, want);
	}
	arena_free(a);
}

static void
test_hash_err(void **state)
{
	/* FNV-1a 64 test vectors. */
	assert_true(hash_fnv1a64("", 0, 0) == 0xcbf29ce484222325ull);
	assert_true(hash_fnv1a64("a", 1, 0) == 0xaf63dc4c8601ec8cull);
	/* the pair: each as hash_fnv1a64 with its seed gives it */
	{
		static const uint64_t seeds[2] = {0, 0x9e3779b97f4a7c15ull};
		uint64_t h[2];

		hash_fnv1a64_pair("a", 1, seeds, h);
		assert_true(h[0] == 0xaf63dc4c8601ec8cull);
		assert_true(h[1] == hash_fnv1a64("a", 1, seeds[1]));
		hash_fnv1a64_pair("hello, world", 12, seeds, h);
		assert_true(h[0] == hash_fnv1a64("hello, world", 12, 0));
		assert_true(h[1] == hash_fnv1a64("hello, world", 12, seeds[1]));
		assert_true(h[0] != h[1]);
	}
	assert_string_equal(fg_strerror(-FG_ETOOBIG), "limit exceeded");
	assert_string_equal(fg_strerror(-1000), "unknown error");
}

/* Whether the list allows the textual address a (IPv4 or IPv6). */
static bool
allows(const cidr_list_t *l, const char *a)
{
	struct sockaddr_in in = {.sin_family = AF_INET};
	struct sockaddr_in6 in6 = {.sin6_family = AF_INET6};

	if (inet_pton(AF_INET, a, &in.sin_addr) == 1)
		return cidr_list_allows(l, (struct sockaddr *)&in);
	assert_int_equal(inet_pton(AF_INET6, a, &in6.sin6_addr), 1);
	return cidr_list_allows(l, (struct sockaddr *)&in6);
}

static void
test_cidr_parse(void **state)
{
	static const char *const bad[] = {
	    "10.0.0.0/33",  "::1/129",     "10.1.0.0/8",      "fd00::1/8",   "10.0.0",
	    "10.0.0.0/",    "10.0.0.0/x",  "10.0.0.0/8,",     ",10.0.0.0/8", "10.0.0.0/8,,::1",
	    "host.example", "10.0.0.0/-1", "1.2.3.4 5.6.7.8", "::1/08x"};
	cidr_list_t *l = NULL;
	char *err = NULL;

	assert_int_equal(cidr_list_parse("", &l, &err), 0);
	assert_null(l);
	assert_int_equal(cidr_list_parse("   ", &l, &err), 0);
	assert_null(l);
	assert_true(allows(NULL, "192.0.2.1")); /* empty: everyone */
	assert_int_equal(
	    cidr_list_parse(" 10.0.0.0/8 , 127.0.0.1,::1, fd00::/8,0.0.0.0/0", &l, &err), 0);
	assert_int_equal(cidr_list_count(l), 5);
	cidr_list_free(l);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err = NULL;
		assert_int_equal(cidr_list_parse(bad[i], &l, &err), -FG_EINVAL);
		assert_null(l);
		assert_non_null(err);
		assert_true(strstr(err, "is not an address") != NULL ||
			    strstr(err, "meant") != NULL);
		free(err);
	}
	/* Host bits past the prefix: refused with the network meant. */
	assert_int_equal(cidr_list_parse("10.1.2.3/8", &l, &err), -FG_EINVAL);
	assert_non_null(strstr(err, "10.0.0.0/8 meant"));
	free(err);
	assert_int_equal(cidr_list_parse("::1, fd00::1/8", &l, &err), -FG_EINVAL);
	assert_non_null(strstr(err, "fd00::/8 meant"));
	free(err);
	assert_int_equal(cidr_list_parse("10.0.0.0/8, 100.64.0.1/10", &l, &err), -FG_EINVAL);
	assert_non_null(strstr(err, "100.64.0.0/10 meant"));
	free(err);
}

static void
test_cidr_match(void **state)
{
	cidr_list_t *l = NULL;
	char *err = NULL;

	assert_int_equal(cidr_list_parse("10.0.0.0/8, 192.168.1.20, 172.16.0.0/12, 2001:db8::/32, "
					 "::1, 100.64.0.0/10",
					 &l, &err),
			 0);
	assert_true(allows(l, "10.0.0.0"));
	assert_true(allows(l, "10.255.255.255"));
	assert_false(allows(l, "11.0.0.0"));
	assert_false(allows(l, "9.255.255.255"));
	assert_true(allows(l, "192.168.1.20"));
	assert_false(allows(l, "192.168.1.21"));
	assert_true(allows(l, "172.31.255.255"));
	assert_false(allows(l, "172.32.0.0"));
	assert_true(allows(l, "100.127.0.1")); /* /10: a prefix not on a byte boundary */
	assert_false(allows(l, "100.128.0.1"));
	assert_true(allows(l, "2001:db8:ffff::1"));
	assert_false(allows(l, "2001:db9::1"));
	assert_true(allows(l, "::1"));
	assert_false(allows(l, "::2"));
	assert_false(allows(l, "127.0.0.1"));
	/* IPv4-mapped IPv6 peers (dual-stack sockets) match the IPv4 entries, not others. */
	assert_true(allows(l, "::ffff:10.1.2.3"));
	assert_false(allows(l, "::ffff:127.0.0.1"));
	cidr_list_free(l);

	assert_int_equal(cidr_list_parse("0.0.0.0/0", &l, &err), 0);
	assert_true(allows(l, "203.0.113.9"));
	assert_false(allows(l, "2001:db8::1")); /* an IPv4 entry never matches IPv6 */
	cidr_list_free(l);
	assert_int_equal(cidr_list_parse("::/0", &l, &err), 0);
	assert_true(allows(l, "2001:db8::1"));
	assert_false(allows(l, "203.0.113.9"));
	cidr_list_free(l);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_buf_cap),
	    cmocka_unit_test(test_buf_be),
	    cmocka_unit_test(test_buf_room_file),
	    cmocka_unit_test(test_slice_numbers),
	    cmocka_unit_test(test_arena),
	    cmocka_unit_test(test_arena_array_printf),
	    cmocka_unit_test(test_arena_pool_reuse),
	    cmocka_unit_test(test_hash_err),
	    cmocka_unit_test(test_cidr_parse),
	    cmocka_unit_test(test_cidr_match),
	};

	return cmocka_run_group_tests_name("lib", tests, NULL, NULL);
}
