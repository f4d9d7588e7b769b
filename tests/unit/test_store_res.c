/* Unit tests for the resource side of store/: versions, history, indexes, counts, the work queue
 * and verify, on real LMDB environments in a temporary directory. */
#include "config.h"

#include <sys/stat.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <lmdb.h>

#include "lib/err.h"
#include "lib/slice.h"
#include "store/store.h"
#include "tests/unit/tmpdir.h"

#define S(lit) SLICE_LIT(lit)

typedef struct {
	char dir[256];
	store_t *s;
} fixture_t;

static int
setup(void **state)
{
	fixture_t *f = calloc(1, sizeof(*f));

	if (f == NULL)
		return -1;
	if (test_tmpdir_make(f->dir, sizeof(f->dir), "fhirgate-test-store-res") == NULL ||
	    store_open(f->dir, NULL, &f->s) != 0) {
		free(f);
		return -1;
	}
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	fixture_t *f = *state;
	int rc;

	store_close(f->s);
	rc = test_tmpdir_remove(f->dir);
	free(f);
	return rc;
}

static store_txn_t *
begin(fixture_t *f, bool write)
{
	store_txn_t *t = NULL;

	assert_int_equal(store_txn_begin(f->s, write, &t), 0);
	return t;
}

/* A put that must succeed; returns its result. */
static store_res_result_t
put_e(store_txn_t *t, const char *type, const char *id, const char *body, uint64_t ns,
      const store_idx_entry_t *e, size_t n)
{
	store_res_put_t p = {.type = slice_cstr(type),
			     .id = slice_cstr(id),
			     .body = slice_cstr(body),
			     .entries = e,
			     .n_entries = n,
			     .now_ns = ns};
	store_res_result_t r;

	assert_int_equal(store_res_put(t, &p, &r), 0);
	return r;
}

static store_res_result_t
put(store_txn_t *t, const char *type, const char *id, const char *body, uint64_t ns)
{
	return put_e(t, type, id, body, ns, NULL, 0);
}

static store_res_t
get(store_txn_t *t, const char *type, const char *id)
{
	store_res_t r;

	assert_int_equal(store_res_get(t, slice_cstr(type), slice_cstr(id), &r), 0);
	return r;
}

static store_stats_t
stats(fixture_t *f)
{
	store_txn_t *t = begin(f, false);
	store_stats_t st;

	assert_int_equal(store_stats(t, &st), 0);
	store_txn_abort(t);
	return st;
}

/* What iterations saw: "Type/id/version" (with "/deleted"), or index values and ids. */
typedef struct {
	char seen[64][96];
	uint64_t seq[64];
	int n;
	int stop_after; /* return 99 from this call on (0: never) */
} seen_t;

static int
seen_res(void *ctx, const store_res_t *r)
{
	seen_t *c = ctx;

	assert_true(c->n < 64);
	/* A deleted version has no body, and only a deleted one. */
	assert_true(r->deleted == (r->body.len == 0));
	snprintf(c->seen[c->n], sizeof(c->seen[0]), "%.*s/%.*s/%u%s", (int)r->type.len, r->type.ptr,
		 (int)r->id.len, r->id.ptr, (unsigned)r->version, r->deleted ? "/deleted" : "");
	c->seq[c->n++] = r->seq;
	return c->stop_after != 0 && c->n >= c->stop_after ? 99 : 0;
}

static int
seen_idx(void *ctx, slice_t value, slice_t id)
{
	seen_t *c = ctx;

	assert_true(c->n < 64);
	snprintf(c->seen[c->n++], sizeof(c->seen[0]), "%.*s=%.*s", (int)value.len, value.ptr,
		 (int)id.len, id.ptr);
	return c->stop_after != 0 && c->n >= c->stop_after ? 99 : 0;
}

/* Checks c saw exactly the strings in want, in that order. */
static void
seen_is(const seen_t *c, const char *const *want, int n)
{
	for (int i = 0; i < n && i < c->n; i++)
		if (strcmp(c->seen[i], want[i]) != 0)
			fail_msg("item %d: saw '%s', want '%s'", i, c->seen[i], want[i]);
	assert_int_equal(c->n, n);
}

#define SEEN_IS(c, ...)                                                       \
	do {                                                                  \
		const char *const want_[] = {__VA_ARGS__};                    \
		seen_is((c), want_, (int)(sizeof(want_) / sizeof(want_[0]))); \
	} while (0)

static void
test_create_update_noop(void **state)
{
	fixture_t *f = *state;
	store_txn_t *t = begin(f, true);
	store_res_result_t r;
	store_res_t g;
	char big[10000];

	r = put(t, "Patient", "p1", "{\"a\":1}", 1000);
	assert_true(r.version == 1 && r.created && !r.unchanged);
	assert_true(r.last_updated_ns == 1000);
	/* Visible in the writing transaction. */
	g = get(t, "Patient", "p1");
	assert_true(slice_eq(g.body, S("{\"a\":1}")));
	assert_int_equal(store_txn_commit(t), 0);
	assert_int_equal(stats(f).changes, 1);

	/* The same bytes again: nothing written, not even a history entry. */
	t = begin(f, true);
	r = put(t, "Patient", "p1", "{\"a\":1}", 2000);
	assert_true(r.unchanged && !r.created && r.version == 1 && r.last_updated_ns == 1000);
	assert_int_equal(store_txn_commit(t), 0);
	assert_int_equal(stats(f).changes, 1);
	assert_int_equal(stats(f).versions, 1);

	t = begin(f, true);
	r = put(t, "Patient", "p1", "{\"a\":2}", 3000);
	assert_true(r.version == 2 && !r.created && !r.unchanged && r.last_updated_ns == 3000);
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	r = put(t, "Patient", "p1", big, 4000);
	assert_int_equal(r.version, 3);
	/* An id that extends another is another resource. */
	r = put(t, "Patient", "p1.a", "{}", 4000);
	assert_true(r.version == 1 && r.created);
	assert_int_equal(store_txn_commit(t), 0);

	t = begin(f, false);
	g = get(t, "Patient", "p1");
	assert_int_equal(g.version, 3);
	assert_false(g.deleted);
	assert_true(g.last_updated_ns == 4000);
	assert_int_equal(g.body.len, sizeof(big) - 1);
	assert_true(slice_eq(g.type, S("Patient")) && slice_eq(g.id, S("p1")));
	assert_int_equal(store_res_vread(t, S("Patient"), S("p1"), 1, &g), 0);
	assert_true(slice_eq(g.body, S("{\"a\":1}")));
	assert_true(g.version == 1 && g.last_updated_ns == 1000 && g.seq == 1);
	assert_int_equal(store_res_vread(t, S("Patient"), S("p1"), 2, &g), 0);
	assert_true(slice_eq(g.body, S("{\"a\":2}")));
	assert_int_equal(store_res_vread(t, S("Patient"), S("p1"), 4, &g), -FG_ENOTFOUND);
	assert_int_equal(store_res_vread(t, S("Patient"), S("p1"), 0, &g), -FG_ENOTFOUND);
	assert_int_equal(store_res_get(t, S("Patient"), S("p2"), &g), -FG_ENOTFOUND);
	assert_int_equal(store_res_get(t, S("Observation"), S("p1"), &g), -FG_ENOTFOUND);
	assert_int_equal(store_res_get(t, S("Patient"), S("p"), &g), -FG_ENOTFOUND);
	/* Names outside the syntax cannot be stored, so lookups just find nothing. */
	assert_int_equal(store_res_get(t, S("Patient"), S("p/1"), &g), -FG_ENOTFOUND);
	assert_int_equal(store_res_get(t, S(""), S("p1"), &g), -FG_ENOTFOUND);
	/* Writes need a write transaction. */
	{
		store_res_put_t p = {.type = S("Patient"), .id = S("p9"), .body = S("{}")};

		assert_int_equal(store_res_put(t, &p, &r), -FG_EINVAL);
	}
	store_txn_abort(t);
}

static void
test_delete(void **state)
{
	fixture_t *f = *state;
	store_txn_t *t = begin(f, true);
	store_res_result_t r;
	store_res_t g;

	put(t, "Patient", "p1", "{\"v\":1}", 10);
	put(t, "Patient", "p1", "{\"v\":2}", 20);
	assert_int_equal(store_res_delete(t, S("Patient"), S("p1"), 30, &r), 0);
	assert_true(r.version == 3 && !r.unchanged && !r.created && r.last_updated_ns == 30);
	g = get(t, "Patient", "p1");
	assert_true(g.deleted && g.version == 3 && g.body.len == 0 && g.last_updated_ns == 30);
	/* Deleting again changes nothing; deleting what never existed is "not found", and
	 * neither spoils the transaction. */
	assert_int_equal(store_res_delete(t, S("Patient"), S("p1"), 40, &r), 0);
	assert_true(r.unchanged && r.version == 3 && r.last_updated_ns == 30);
	assert_int_equal(store_res_delete(t, S("Patient"), S("nope"), 40, &r), -FG_ENOTFOUND);
	assert_int_equal(store_txn_commit(t), 0);
	assert_int_equal(stats(f).versions, 3);
	assert_int_equal(stats(f).resources, 0);

	t = begin(f, true);
	assert_int_equal(store_res_vread(t, S("Patient"), S("p1"), 3, &g), 0);
	assert_true(g.deleted);
	assert_int_equal(store_res_vread(t, S("Patient"), S("p1"), 2, &g), 0);
	assert_true(slice_eq(g.body, S("{\"v\":2}")) && !g.deleted);
	/* Storing it again brings it back as a new version, even with the last live body. */
	r = put(t, "Patient", "p1", "{\"v\":2}", 50);
	assert_true(r.version == 4 && r.created && !r.unchanged);
	g = get(t, "Patient", "p1");
	assert_true(!g.deleted && slice_eq(g.body, S("{\"v\":2}")));
	assert_int_equal(store_txn_commit(t), 0);
	assert_int_equal(stats(f).resources, 1);
}

static void
test_preconditions(void **state)
{
	fixture_t *f = *state;
	store_txn_t *t = begin(f, true);
	store_res_put_t p = {.type = S("Patient"), .id = S("p1"), .body = S("{\"v\":9}")};
	store_res_result_t r;

	put(t, "Patient", "p1", "{\"v\":1}", 10);
	put(t, "Patient", "p1", "{\"v\":2}", 20);
	p.if_match = 1;
	assert_int_equal(store_res_put(t, &p, &r), -FG_EEXIST);
	assert_int_equal(r.version, 2); /* as found */
	p.if_match = 3;
	assert_int_equal(store_res_put(t, &p, &r), -FG_EEXIST);
	p.if_match = 0;
	p.create_only = true;
	assert_int_equal(store_res_put(t, &p, &r), -FG_EEXIST);
	/* A conflict is an answer: nothing was written and the transaction goes on. */
	assert_true(slice_eq(get(t, "Patient", "p1").body, S("{\"v\":2}")));
	p.create_only = false;
	p.if_match = 2;
	assert_int_equal(store_res_put(t, &p, &r), 0);
	assert_int_equal(r.version, 3);
	/* if_match on a resource that does not exist fails; create_only of a new one works. */
	p.id = S("p2");
	assert_int_equal(store_res_put(t, &p, &r), -FG_EEXIST);
	p.if_match = 0;
	p.create_only = true;
	assert_int_equal(store_res_put(t, &p, &r), 0);
	assert_true(r.created && r.version == 1);
	/* create_only may recreate a deleted resource. */
	assert_int_equal(store_res_delete(t, S("Patient"), S("p2"), 30, &r), 0);
	assert_int_equal(store_res_put(t, &p, &r), 0);
	assert_true(r.created && r.version == 3);
	assert_int_equal(store_txn_commit(t), 0);
	assert_int_equal(stats(f).versions, 6);
}

static void
test_history_instance(void **state)
{
	fixture_t *f = *state;
	store_txn_t *t = begin(f, true);
	store_res_result_t r;
	seen_t c = {0};

	put(t, "Patient", "p1", "{\"v\":1}", 100);
	put(t, "Patient", "p10", "{\"x\":1}", 150); /* sorts right after p1's versions */
	put(t, "Patient", "p1", "{\"v\":2}", 200);
	assert_int_equal(store_res_delete(t, S("Patient"), S("p1"), 300, &r), 0);
	put(t, "Patient", "p1", "{\"v\":4}", 400);
	put(t, "Patient", "p0", "{\"x\":1}", 450);
	assert_int_equal(store_txn_commit(t), 0);

	t = begin(f, false);
	assert_int_equal(store_hist_foreach_instance(t, S("Patient"), S("p1"), 0, 0, seen_res, &c),
			 0);
	SEEN_IS(&c, "Patient/p1/4", "Patient/p1/3/deleted", "Patient/p1/2", "Patient/p1/1");
	assert_true(c.seq[0] == 5 && c.seq[3] == 1);
	/* _since: changes at or after it. */
	c = (seen_t){0};
	assert_int_equal(
	    store_hist_foreach_instance(t, S("Patient"), S("p1"), 200, 0, seen_res, &c), 0);
	SEEN_IS(&c, "Patient/p1/4", "Patient/p1/3/deleted", "Patient/p1/2");
	/* Paging: below version 3; and a callback that stops the walk. */
	c = (seen_t){0};
	assert_int_equal(store_hist_foreach_instance(t, S("Patient"), S("p1"), 0, 3, seen_res, &c),
			 0);
	SEEN_IS(&c, "Patient/p1/2", "Patient/p1/1");
	c = (seen_t){.stop_after = 1};
	assert_int_equal(store_hist_foreach_instance(t, S("Patient"), S("p1"), 0, 0, seen_res, &c),
			 99);
	SEEN_IS(&c, "Patient/p1/4");
	c = (seen_t){0};
	assert_int_equal(store_hist_foreach_instance(t, S("Patient"), S("p10"), 0, 0, seen_res, &c),
			 0);
	SEEN_IS(&c, "Patient/p10/1");
	assert_int_equal(store_hist_foreach_instance(t, S("Patient"), S("p2"), 0, 0, seen_res, &c),
			 -FG_ENOTFOUND);
	store_txn_abort(t);
}

static void
test_history_type_system(void **state)
{
	fixture_t *f = *state;
	store_txn_t *t = begin(f, true);
	store_res_result_t r;
	seen_t c = {0};

	put(t, "Patient", "a", "{\"v\":1}", 100);
	put(t, "Observation", "o1", "{\"v\":1}", 200);
	put(t, "Patient", "b", "{\"v\":1}", 300);
	assert_int_equal(store_txn_commit(t), 0);
	t = begin(f, true);
	put(t, "Observation", "o2", "{\"v\":1}", 400);
	put(t, "Patient", "a", "{\"v\":2}", 500);
	assert_int_equal(store_res_delete(t, S("Patient"), S("b"), 600, &r), 0);
	/* A clock that went back: lastUpdated does not, so _since walks stay right. */
	r = put(t, "Obs", "o1", "{\"v\":1}", 50);
	assert_true(r.last_updated_ns == 600);
	assert_int_equal(store_txn_commit(t), 0);

	t = begin(f, false);
	assert_int_equal(store_hist_foreach_type(t, S("Patient"), 0, 0, seen_res, &c), 0);
	SEEN_IS(&c, "Patient/b/2/deleted", "Patient/a/2", "Patient/b/1", "Patient/a/1");
	assert_true(c.seq[0] == 6 && c.seq[3] == 1);
	c = (seen_t){0};
	assert_int_equal(store_hist_foreach_type(t, S("Observation"), 0, 0, seen_res, &c), 0);
	SEEN_IS(&c, "Observation/o2/1", "Observation/o1/1");
	c = (seen_t){0};
	assert_int_equal(store_hist_foreach_type(t, S("Obs"), 0, 0, seen_res, &c), 0);
	SEEN_IS(&c, "Obs/o1/1");
	c = (seen_t){0};
	assert_int_equal(store_hist_foreach_type(t, S("Encounter"), 0, 0, seen_res, &c), 0);
	assert_int_equal(c.n, 0);
	/* _since stops the walk at the first older change; paging resumes below a sequence. */
	c = (seen_t){0};
	assert_int_equal(store_hist_foreach_type(t, S("Patient"), 300, 0, seen_res, &c), 0);
	SEEN_IS(&c, "Patient/b/2/deleted", "Patient/a/2", "Patient/b/1");
	c = (seen_t){.stop_after = 2};
	assert_int_equal(store_hist_foreach_type(t, S("Patient"), 0, 0, seen_res, &c), 99);
	c = (seen_t){0};
	assert_int_equal(store_hist_foreach_type(t, S("Patient"), 0, 5, seen_res, &c), 0);
	SEEN_IS(&c, "Patient/b/1", "Patient/a/1");

	c = (seen_t){0};
	assert_int_equal(store_hist_foreach_system(t, 0, 0, seen_res, &c), 0);
	SEEN_IS(&c, "Obs/o1/1", "Patient/b/2/deleted", "Patient/a/2", "Observation/o2/1",
		"Patient/b/1", "Observation/o1/1", "Patient/a/1");
	for (int i = 0; i < 7; i++)
		assert_int_equal(c.seq[i], 7 - i);
	c = (seen_t){0};
	assert_int_equal(store_hist_foreach_system(t, 400, 0, seen_res, &c), 0);
	assert_int_equal(c.n, 4);
	c = (seen_t){0};
	assert_int_equal(store_hist_foreach_system(t, 0, 3, seen_res, &c), 0);
	SEEN_IS(&c, "Observation/o1/1", "Patient/a/1");
	c = (seen_t){.stop_after = 3};
	assert_int_equal(store_hist_foreach_system(t, 0, 0, seen_res, &c), 99);
	assert_int_equal(c.n, 3);
	store_txn_abort(t);
}

static void
test_list_type(void **state)
{
	fixture_t *f = *state;
	static const char *const ids[] = {"b", "a-1", "a", "a.b", "A", "0", "zz", "a0"};
	store_txn_t *t = begin(f, true);
	store_res_result_t r;
	seen_t c = {0};

	for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++)
		put(t, "Patient", ids[i], "{}", 1);
	put(t, "PatientX", "a", "{}", 1);
	put(t, "Patien", "a", "{}", 1);
	assert_int_equal(store_res_delete(t, S("Patient"), S("a0"), 2, &r), 0);
	assert_int_equal(store_txn_commit(t), 0);

	t = begin(f, false);
	assert_int_equal(store_res_foreach_type(t, S("Patient"), SLICE_NULL, seen_res, &c), 0);
	/* Bytewise id order, deleted ones left out, no other type. */
	SEEN_IS(&c, "Patient/0/1", "Patient/A/1", "Patient/a/1", "Patient/a-1/1", "Patient/a.b/1",
		"Patient/b/1", "Patient/zz/1");
	c = (seen_t){0};
	assert_int_equal(store_res_foreach_type(t, S("Patient"), S("a"), seen_res, &c), 0);
	SEEN_IS(&c, "Patient/a-1/1", "Patient/a.b/1", "Patient/b/1", "Patient/zz/1");
	/* An after_id that is not stored, and paging by callback. */
	c = (seen_t){.stop_after = 2};
	assert_int_equal(store_res_foreach_type(t, S("Patient"), S("a0"), seen_res, &c), 99);
	SEEN_IS(&c, "Patient/b/1", "Patient/zz/1");
	c = (seen_t){0};
	assert_int_equal(store_res_foreach_type(t, S("Patient"), S("zz"), seen_res, &c), 0);
	assert_int_equal(c.n, 0);
	c = (seen_t){0};
	assert_int_equal(store_res_foreach_type(t, S("Encounter"), SLICE_NULL, seen_res, &c), 0);
	assert_int_equal(c.n, 0);
	store_txn_abort(t);
}

static const store_idx_entry_t pat_a[] = {
    {S("family"), S("smith")},
    {S("birthdate"), S("19700101")},
    {S("family"), S("smith")}, /* duplicates are fine */
    {S("given"), S("ann")},
};
static const store_idx_entry_t pat_b[] = {
    {S("family"), S("smithers")},
    {S("birthdate"), S("19800505")},
};
static const store_idx_entry_t pat_c[] = {
    {S("family"), S("smith")},
    {S("birthdate"), S("19900909")},
};

static void
index_fixture(fixture_t *f)
{
	store_txn_t *t = begin(f, true);

	put_e(t, "Patient", "a", "{\"a\":1}", 1, pat_a, 4);
	put_e(t, "Patient", "b", "{\"b\":1}", 1, pat_b, 2);
	put_e(t, "Patient", "c", "{\"c\":1}", 1, pat_c, 2);
	/* Same code and value under another type. */
	put_e(t, "Practitioner", "a", "{}", 1, pat_c, 1);
	assert_int_equal(store_txn_commit(t), 0);
}

static void
test_index_search(void **state)
{
	fixture_t *f = *state;
	const slice_t lo = S("1975"), hi = S("19900909"), hi2 = S("2");
	store_txn_t *t;
	seen_t c = {0};

	index_fixture(f);
	assert_int_equal(stats(f).index_entries, 8);
	t = begin(f, false);
	assert_int_equal(
	    store_idx_foreach_eq(t, S("Patient"), S("family"), S("smith"), seen_idx, &c), 0);
	SEEN_IS(&c, "smith=a", "smith=c");
	c = (seen_t){0};
	assert_int_equal(
	    store_idx_foreach_eq(t, S("Patient"), S("family"), S("smit"), seen_idx, &c), 0);
	assert_int_equal(c.n, 0);
	c = (seen_t){0};
	assert_int_equal(
	    store_idx_foreach_prefix(t, S("Patient"), S("family"), S("smith"), seen_idx, &c), 0);
	SEEN_IS(&c, "smith=a", "smith=c", "smithers=b");
	c = (seen_t){0};
	assert_int_equal(store_idx_foreach_prefix(t, S("Patient"), S("given"), S(""), seen_idx, &c),
			 0);
	SEEN_IS(&c, "ann=a");
	/* Range: lo inclusive, hi exclusive, NULL open. */
	c = (seen_t){0};
	assert_int_equal(
	    store_idx_foreach_range(t, S("Patient"), S("birthdate"), &lo, &hi, seen_idx, &c), 0);
	SEEN_IS(&c, "19800505=b");
	c = (seen_t){0};
	assert_int_equal(
	    store_idx_foreach_range(t, S("Patient"), S("birthdate"), &lo, NULL, seen_idx, &c), 0);
	SEEN_IS(&c, "19800505=b", "19900909=c");
	c = (seen_t){0};
	assert_int_equal(
	    store_idx_foreach_range(t, S("Patient"), S("birthdate"), NULL, &hi2, seen_idx, &c), 0);
	SEEN_IS(&c, "19700101=a", "19800505=b", "19900909=c");
	c = (seen_t){.stop_after = 1};
	assert_int_equal(
	    store_idx_foreach_range(t, S("Patient"), S("birthdate"), NULL, NULL, seen_idx, &c), 99);
	SEEN_IS(&c, "19700101=a");
	c = (seen_t){0};
	assert_int_equal(
	    store_idx_foreach_eq(t, S("Practitioner"), S("family"), S("smith"), seen_idx, &c), 0);
	SEEN_IS(&c, "smith=a");
	c = (seen_t){0};
	assert_int_equal(store_idx_foreach_eq(t, S("Patient"), S("name"), S("smith"), seen_idx, &c),
			 0);
	assert_int_equal(c.n, 0);
	store_txn_abort(t);
}

static void
test_index_follows_resource(void **state)
{
	fixture_t *f = *state;
	const store_idx_entry_t a2[] = {{S("family"), S("jones")}, {S("given"), S("ann")}};
	store_txn_t *t;
	store_res_result_t r;
	seen_t c = {0};

	index_fixture(f);
	t = begin(f, true);
	/* An update replaces the entries: smith and the birthdate go, jones comes, ann stays. */
	put_e(t, "Patient", "a", "{\"a\":2}", 2, a2, 2);
	assert_int_equal(
	    store_idx_foreach_eq(t, S("Patient"), S("family"), S("smith"), seen_idx, &c), 0);
	SEEN_IS(&c, "smith=c");
	c = (seen_t){0};
	assert_int_equal(
	    store_idx_foreach_prefix(t, S("Patient"), S("family"), S("jo"), seen_idx, &c), 0);
	SEEN_IS(&c, "jones=a");
	c = (seen_t){0};
	assert_int_equal(store_idx_foreach_eq(t, S("Patient"), S("given"), S("ann"), seen_idx, &c),
			 0);
	SEEN_IS(&c, "ann=a");
	/* An unchanged body leaves the entries alone (they derive from the body). */
	put_e(t, "Patient", "a", "{\"a\":2}", 3, pat_a, 4);
	c = (seen_t){0};
	assert_int_equal(
	    store_idx_foreach_prefix(t, S("Patient"), S("family"), S("jo"), seen_idx, &c), 0);
	SEEN_IS(&c, "jones=a");
	/* A delete removes them all. */
	assert_int_equal(store_res_delete(t, S("Patient"), S("c"), 4, &r), 0);
	c = (seen_t){0};
	assert_int_equal(
	    store_idx_foreach_eq(t, S("Patient"), S("family"), S("smith"), seen_idx, &c), 0);
	assert_int_equal(c.n, 0);
	assert_int_equal(store_txn_commit(t), 0);
	/* a: 2, b: 2, Practitioner/a: 1. */
	assert_int_equal(stats(f).index_entries, 5);

	/* An update with no entries removes them too. */
	t = begin(f, true);
	put(t, "Patient", "b", "{\"b\":2}", 5);
	assert_int_equal(store_txn_commit(t), 0);
	assert_int_equal(stats(f).index_entries, 3);
}

static void
test_index_limits(void **state)
{
	fixture_t *f = *state;
	static char longv[600], bigbody[5000];
	static store_idx_entry_t many[300];
	static char vals[300][8];
	size_t max = store_idx_value_max(S("Patient"), S("family"));
	store_idx_entry_t e = {S("family"), {longv, max}};
	store_txn_t *t;
	seen_t c = {0};

	assert_int_equal(max, 511 - 4 - 7 - 6);
	assert_int_equal(store_idx_value_max(S("Patient"), (slice_t){longv, 600}), 0);
	memset(longv, 'v', sizeof(longv));
	memset(bigbody, 'b', sizeof(bigbody) - 1);
	/* More entries than fit the stack and an idxrev list past its stack copy. */
	for (int i = 0; i < 300; i++) {
		snprintf(vals[i], sizeof(vals[i]), "v%03d", 299 - i);
		many[i] = (store_idx_entry_t){S("code"), slice_cstr(vals[i])};
	}
	t = begin(f, true);
	put_e(t, "Patient", "p1", "{\"a\":1}", 1, &e, 1);
	put_e(t, "Patient", "p2", bigbody, 1, many, 300);
	put_e(t, "Patient", "p2", "{}", 2, many + 1, 299);
	assert_int_equal(store_idx_foreach_eq(t, S("Patient"), S("family"), e.value, seen_idx, &c),
			 0);
	assert_int_equal(c.n, 1);
	c = (seen_t){.stop_after = 3};
	assert_int_equal(store_idx_foreach_prefix(t, S("Patient"), S("code"), S("v"), seen_idx, &c),
			 99);
	SEEN_IS(&c, "v000=p2", "v001=p2", "v002=p2");
	assert_int_equal(store_idx_foreach_eq(t, S("Patient"), S("code"), S("v299"), seen_idx, &c),
			 0);
	assert_int_equal(c.n, 3); /* v299 (many[0]) went with the update */
	assert_int_equal(store_txn_commit(t), 0);
	assert_int_equal(stats(f).index_entries, 300);

	/* One byte over the limit is the caller's bug: sticky, nothing kept. */
	t = begin(f, true);
	put(t, "Patient", "p3", "{}", 3);
	e.value.len = max + 1;
	{
		store_res_put_t p = {.type = S("Patient"),
				     .id = S("p4"),
				     .body = S("{}"),
				     .entries = &e,
				     .n_entries = 1};
		store_res_result_t r;

		assert_int_equal(store_res_put(t, &p, &r), -FG_ETOOBIG);
	}
	assert_int_equal(store_txn_commit(t), -FG_ETOOBIG);
	assert_int_equal(stats(f).resources, 2);
}

typedef struct {
	store_txn_t *t;
	int n;
} reindex_t;

/* Reindexing as the gateway does it: entries computed from the body (into the caller's memory:
 * r ends at the first write), set inside the walk. */
static int
reindex_one(void *ctx, const store_res_t *r)
{
	reindex_t *x = ctx;
	char value[64], id[64];
	store_idx_entry_t e = {S("body"), {value, r->body.len}};

	assert_true(r->body.len < sizeof(value) && r->id.len < sizeof(id));
	memcpy(value, r->body.ptr, r->body.len);
	memcpy(id, r->id.ptr, r->id.len);
	x->n++;
	return store_idx_set(x->t, r->type, slice_make(id, r->id.len), &e, 1);
}

static int
count_idx(void *ctx, slice_t value, slice_t id)
{
	(*(int *)ctx)++;
	return 0;
}

static void
test_reindex(void **state)
{
	fixture_t *f = *state;
	store_idx_entry_t e = {S("x"), S("y")};
	reindex_t x;
	store_txn_t *t;
	store_res_result_t r;
	int n = 0;

	index_fixture(f);
	t = begin(f, true);
	assert_int_equal(store_res_delete(t, S("Patient"), S("b"), 2, &r), 0);
	assert_int_equal(store_idx_clear_type(t, S("Patient")), 0);
	assert_int_equal(
	    store_idx_foreach_range(t, S("Patient"), S("family"), NULL, NULL, count_idx, &n), 0);
	assert_int_equal(n, 0);
	/* Other types keep theirs. */
	assert_int_equal(
	    store_idx_foreach_eq(t, S("Practitioner"), S("family"), S("smith"), count_idx, &n), 0);
	assert_int_equal(n, 1);
	x = (reindex_t){t, 0};
	assert_int_equal(store_res_foreach_type(t, S("Patient"), SLICE_NULL, reindex_one, &x), 0);
	assert_int_equal(x.n, 2);
	assert_int_equal(store_idx_set(t, S("Patient"), S("b"), &e, 1), -FG_ENOTFOUND);
	assert_int_equal(store_idx_set(t, S("Patient"), S("zz"), &e, 1), -FG_ENOTFOUND);
	assert_int_equal(store_txn_commit(t), 0);
	assert_int_equal(stats(f).index_entries, 3);

	t = begin(f, false);
	n = 0;
	assert_int_equal(
	    store_idx_foreach_eq(t, S("Patient"), S("body"), S("{\"c\":1}"), count_idx, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(store_verify(t, NULL, NULL), 0);
	store_txn_abort(t);
}

typedef struct {
	uint64_t id[8];
	int n;
} work_seen_t;

static int
seen_work(void *ctx, const store_work_t *w)
{
	work_seen_t *c = ctx;

	assert_int_equal(w->kind, 'S');
	assert_true(slice_eq(w->payload, S("Patient/p1")) || w->payload.len == 0);
	c->id[c->n++] = w->id;
	return 0;
}

static void
test_work(void **state)
{
	fixture_t *f = *state;
	store_txn_t *t = begin(f, true);
	work_seen_t c = {.n = 0};
	uint64_t id;

	for (uint64_t i = 1; i <= 3; i++) {
		assert_int_equal(store_work_put(t, 'S', S("Patient/p1"), &id), 0);
		assert_int_equal(id, i);
	}
	assert_int_equal(store_work_del(t, 2), 0);
	assert_int_equal(store_work_del(t, 2), -FG_ENOTFOUND);
	assert_int_equal(store_txn_commit(t), 0);

	/* It survives closing (as after a crash: everything committed is there). */
	store_close(f->s);
	assert_int_equal(store_open(f->dir, NULL, &f->s), 0);
	t = begin(f, true);
	assert_int_equal(store_work_foreach(t, 0, seen_work, &c), 0);
	assert_int_equal(c.n, 2);
	assert_true(c.id[0] == 1 && c.id[1] == 3);
	assert_int_equal(store_work_del(t, 1), 0);
	assert_int_equal(store_work_del(t, 3), 0);
	assert_int_equal(store_txn_commit(t), 0);
	assert_int_equal(stats(f).work, 0);

	/* An empty queue does not hand out old ids again. */
	t = begin(f, true);
	assert_int_equal(store_work_put(t, 'S', SLICE_NULL, &id), 0);
	assert_int_equal(id, 4);
	assert_int_equal(store_txn_commit(t), 0);
	c.n = 0;
	t = begin(f, false);
	assert_int_equal(store_work_foreach(t, 5, seen_work, &c), 0);
	assert_int_equal(c.n, 0);
	assert_int_equal(store_work_foreach(t, 4, seen_work, &c), 0);
	assert_int_equal(c.n, 1);
	store_txn_abort(t);
	assert_int_equal(stats(f).work, 1);
}

typedef struct {
	char types[4][16];
	uint64_t counts[4];
	int n;
} counts_t;

static int
seen_count(void *ctx, slice_t type, uint64_t count)
{
	counts_t *c = ctx;

	snprintf(c->types[c->n], sizeof(c->types[0]), "%.*s", (int)type.len, type.ptr);
	c->counts[c->n++] = count;
	return 0;
}

static void
test_stats_counts(void **state)
{
	fixture_t *f = *state;
	store_txn_t *t = begin(f, true);
	store_res_result_t r;
	store_stats_t st;
	counts_t c = {0};
	uint64_t n;

	put(t, "Patient", "a", "{}", 1);
	put(t, "Patient", "b", "{}", 1);
	put(t, "Patient", "b", "{\"x\":1}", 1);
	put(t, "Observation", "o", "{}", 1);
	put(t, "Encounter", "e", "{}", 1);
	assert_int_equal(store_res_delete(t, S("Patient"), S("a"), 2, &r), 0);
	assert_int_equal(store_res_delete(t, S("Encounter"), S("e"), 2, &r), 0);
	/* Inside the writing transaction, counts include its changes. */
	assert_int_equal(store_res_count(t, S("Patient"), &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(store_txn_commit(t), 0);

	st = stats(f);
	assert_int_equal(st.resources, 2);
	assert_int_equal(st.versions, 7);
	assert_int_equal(st.changes, 7);
	assert_int_equal(st.messages, 0);
	t = begin(f, false);
	assert_int_equal(store_res_count(t, S("Encounter"), &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(store_res_count(t, S("Nope"), &n), 0);
	assert_int_equal(n, 0);
	/* Types whose resources are all deleted are not listed. */
	assert_int_equal(store_res_foreach_count(t, seen_count, &c), 0);
	assert_int_equal(c.n, 2);
	assert_string_equal(c.types[0], "Observation");
	assert_string_equal(c.types[1], "Patient");
	assert_true(c.counts[0] == 1 && c.counts[1] == 1);
	store_txn_abort(t);
}

typedef struct {
	char problems[16][512];
	int n;
} report_t;

static void
report(void *ctx, const char *problem)
{
	report_t *r = ctx;

	if (r->n < 16)
		snprintf(r->problems[r->n], sizeof(r->problems[0]), "%s", problem);
	r->n++;
}

static bool
reported(const report_t *r, const char *needle)
{
	for (int i = 0; i < r->n && i < 16; i++)
		if (strstr(r->problems[i], needle) != NULL)
			return true;
	return false;
}

static int
verify(fixture_t *f, report_t *r)
{
	store_txn_t *t = begin(f, false);
	int rc;

	memset(r, 0, sizeof(*r));
	rc = store_verify(t, report, r);
	store_txn_abort(t);
	return rc;
}

/* Changes the environment behind the store's back (closing and reopening it): what a bug or a
 * disk could do, and what the public API cannot. val NULL deletes the key. */
static void
raw(fixture_t *f, const char *db, const void *key, size_t klen, const void *val, size_t vlen)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_val k = {klen, (void *)key}, v = {vlen, (void *)val};

	store_close(f->s);
	assert_int_equal(mdb_env_create(&env), 0);
	assert_int_equal(mdb_env_set_maxdbs(env, 16), 0);
	assert_int_equal(mdb_env_open(env, f->dir, 0, 0600), 0);
	assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
	assert_int_equal(mdb_dbi_open(txn, db, strcmp(db, "idx") == 0 ? MDB_DUPSORT : 0, &dbi), 0);
	if (val == NULL)
		assert_int_equal(mdb_del(txn, dbi, &k, NULL), 0);
	else
		assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
	assert_int_equal(mdb_txn_commit(txn), 0);
	mdb_env_close(env);
	assert_int_equal(store_open(f->dir, NULL, &f->s), 0);
}

static void
test_verify(void **state)
{
	fixture_t *f = *state;
	/* Keys as docs/store.md lays them out. */
	static const char ver_p1_2[] = "\0\7Patientp1\0\0\0\0\2";
	static const char idx_bogus[] = "\0\7Patient\0\6familyzed";
	static const char count_obs[] = "res_count/Observation";
	static const unsigned char eight[8] = {0, 0, 0, 0, 0, 0, 0, 5};
	store_txn_t *t = begin(f, true);
	store_res_result_t r;
	uint64_t id;
	report_t rep;

	put_e(t, "Patient", "p1", "{\"v\":1}", 1, pat_a, 4);
	put_e(t, "Patient", "p1", "{\"v\":2}", 2, pat_b, 2);
	put_e(t, "Patient", "p2", "{\"v\":1}", 3, pat_c, 2);
	put(t, "Observation", "o1", "{}", 4);
	put(t, "Observation", "o2", "{}", 4);
	assert_int_equal(store_res_delete(t, S("Observation"), S("o2"), 5, &r), 0);
	assert_int_equal(store_work_put(t, 1, S("x"), &id), 0);
	assert_int_equal(store_txn_commit(t), 0);
	assert_int_equal(verify(f, &rep), 0);
	assert_int_equal(rep.n, 0);

	/* The current version of p1 lost: res, hist and the older version notice. */
	raw(f, "ver", ver_p1_2, sizeof(ver_p1_2) - 1, NULL, 0);
	assert_int_equal(verify(f, &rep), 2);
	assert_true(reported(&rep, "res Patient/p1: names version 2, the newest in ver is 1"));
	assert_true(reported(&rep, "hist 2: Patient/p1 version 2 is not in ver"));
	t = begin(f, false);
	{
		store_res_t g;

		/* Reads see the older version as the newest; a listing finds the damage. */
		assert_int_equal(store_res_get(t, S("Patient"), S("p1"), &g), 0);
		assert_int_equal(g.version, 1);
		assert_int_equal(
		    store_res_foreach_type(t, S("Patient"), SLICE_NULL, seen_res, &(seen_t){0}),
		    -FG_ESTORE);
		assert_non_null(strstr(store_last_error(), "Patient/p1 version 2"));
	}
	store_txn_abort(t);
	store_close(f->s);
	f->s = NULL;
	assert_int_equal(test_tmpdir_remove(f->dir), 0);
	assert_int_equal(store_open(f->dir, NULL, &f->s), 0);

	/* An index entry no resource lists, a wrong count, work beyond the last id. */
	t = begin(f, true);
	put_e(t, "Patient", "p1", "{\"v\":1}", 1, pat_a, 4);
	put(t, "Observation", "o1", "{}", 4);
	assert_int_equal(store_txn_commit(t), 0);
	assert_int_equal(verify(f, &rep), 0);
	raw(f, "idx", idx_bogus, sizeof(idx_bogus) - 1, "p1", 2);
	raw(f, "meta", count_obs, sizeof(count_obs) - 1, eight, 8);
	raw(f, "work", eight, 8, "k", 1);
	assert_int_equal(verify(f, &rep), 3);
	assert_true(reported(&rep, "idx Patient/p1: entry for 'family' that its idxrev record "
				   "does not list"));
	assert_true(reported(&rep, "meta: count of Observation is 5, res holds 1"));
	assert_true(reported(&rep, "work 5: beyond the last id"));

	/* An entry an idxrev list names gone from idx; a count of a type with no resources. */
	raw(f, "idx", idx_bogus, sizeof(idx_bogus) - 1, NULL, 0);
	raw(f, "meta", count_obs, sizeof(count_obs) - 1, NULL, 0);
	raw(f, "work", eight, 8, NULL, 0);
	raw(f, "idx",
	    "\0\7Patient\0\5given"
	    "ann",
	    19, NULL, 0);
	raw(f, "meta", "res_count/Encounter", 19, eight, 8);
	assert_int_equal(verify(f, &rep), 3);
	assert_true(reported(&rep, "idx Patient/p1: entry for 'given' is missing"));
	assert_true(reported(&rep, "meta: count of Observation is 0, res holds 1"));
	assert_true(reported(&rep, "meta: counts of 5 resources of types res does not hold"));
}

static void
test_sticky(void **state)
{
	fixture_t *f = *state;
	store_txn_t *t = begin(f, true);
	store_res_put_t bad = {.type = S("Patient"), .id = S("no/slash"), .body = S("{}")};
	store_res_result_t r;
	store_res_t g;
	uint64_t id;

	put(t, "Patient", "p1", "{}", 1);
	assert_int_equal(store_res_put(t, &bad, &r), -FG_EINVAL);
	assert_non_null(strstr(store_last_error(), "id"));
	/* Every later call returns the first failure, reads included; commit keeps nothing. */
	bad.id = S("p2");
	assert_int_equal(store_res_put(t, &bad, &r), -FG_EINVAL);
	assert_int_equal(store_res_get(t, S("Patient"), S("p1"), &g), -FG_EINVAL);
	assert_int_equal(store_work_put(t, 1, S("x"), &id), -FG_EINVAL);
	assert_int_equal(store_res_delete(t, S("Patient"), S("p1"), 2, &r), -FG_EINVAL);
	assert_int_equal(store_txn_commit(t), -FG_EINVAL);
	assert_int_equal(stats(f).resources, 0);
	assert_int_equal(stats(f).changes, 0);

	/* An empty body is not a resource (deletes are store_res_delete). */
	t = begin(f, true);
	bad.body = SLICE_NULL;
	assert_int_equal(store_res_put(t, &bad, &r), -FG_EINVAL);
	assert_int_equal(store_txn_commit(t), -FG_EINVAL);
	t = begin(f, true);
	bad.body = S("{}");
	bad.type = S("Pa tient");
	assert_int_equal(store_res_put(t, &bad, &r), -FG_EINVAL);
	store_txn_abort(t);
}

static void
test_map_full(void **state)
{
	fixture_t *f = *state;
	store_opts_t o = {.map_size = 256 * 1024};
	static char body[3000];
	store_txn_t *t;
	store_res_result_t r;
	char id[16];
	int rc = 0, i;

	store_close(f->s);
	assert_int_equal(store_open(f->dir, &o, &f->s), 0);
	memset(body, 'b', sizeof(body) - 1);
	t = begin(f, true);
	put(t, "Patient", "first", "{}", 1);
	assert_int_equal(store_txn_commit(t), 0);
	t = begin(f, true);
	for (i = 0; i < 1000 && rc == 0; i++) {
		store_idx_entry_t e = {S("code"), SLICE_NULL};
		store_res_put_t p = {
		    .type = S("Patient"), .body = slice_cstr(body), .entries = &e, .n_entries = 1};

		snprintf(id, sizeof(id), "p%d", i);
		p.id = e.value = slice_cstr(id);
		rc = store_res_put(t, &p, &r);
	}
	assert_int_equal(rc, -FG_EFULL);
	assert_true(i > 1 && i < 1000);
	assert_int_equal(store_res_delete(t, S("Patient"), S("first"), 2, &r), -FG_EFULL);
	assert_int_equal(store_txn_commit(t), -FG_EFULL);
	assert_int_equal(stats(f).resources, 1);
	assert_int_equal(stats(f).changes, 1);
	{
		report_t rep;

		assert_int_equal(verify(f, &rep), 0);
	}
}

static void
test_reopen(void **state)
{
	fixture_t *f = *state;
	store_txn_t *t = begin(f, true);
	store_res_result_t r;

	put_e(t, "Patient", "p1", "{\"v\":1}", 100, pat_a, 4);
	assert_int_equal(store_txn_commit(t), 0);
	store_close(f->s);
	assert_int_equal(store_open(f->dir, NULL, &f->s), 0);
	t = begin(f, true);
	/* The sequence and the lastUpdated floor carry over. */
	r = put(t, "Patient", "p2", "{}", 50);
	assert_true(r.version == 1 && r.last_updated_ns == 100);
	assert_true(slice_eq(get(t, "Patient", "p1").body, S("{\"v\":1}")));
	assert_int_equal(get(t, "Patient", "p2").seq, 2);
	assert_int_equal(store_txn_commit(t), 0);
	assert_int_equal(stats(f).resources, 2);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    T(test_create_update_noop),
	    T(test_delete),
	    T(test_preconditions),
	    T(test_history_instance),
	    T(test_history_type_system),
	    T(test_list_type),
	    T(test_index_search),
	    T(test_index_follows_resource),
	    T(test_index_limits),
	    T(test_reindex),
	    T(test_work),
	    T(test_stats_counts),
	    T(test_verify),
	    T(test_sticky),
	    T(test_map_full),
	    T(test_reopen),
	};

	return cmocka_run_group_tests_name("store_res", tests, NULL, NULL);
}
