/* Unit tests for store/bulk.c: a bulk load leaves the store exactly as the same puts made one by
 * one with store_res_put (versions, bodies, index entries, counts, store_verify), with puts
 * spread over run files, repeated and unchanged puts, updates of resources stored before, and
 * run files adopted by a resumed load. Real LMDB environments in a temporary directory. */
#include "config.h"

#include <sys/stat.h>

#include <glob.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <lmdb.h>

#include "lib/buf.h"
#include "lib/err.h"
#include "lib/slice.h"
#include "store/store.h"
#include "tests/unit/tmpdir.h"

#define NCODES 4

static const char *const codes[NCODES] = {"name", "birthdate", "gender", "identifier"};

typedef struct {
	char dir[256];
	store_t *one; /* puts one by one */
	store_t *bulk;
} fixture_t;

static int
setup(void **state)
{
	fixture_t *f = calloc(1, sizeof(*f));
	char sub[300];

	if (f == NULL ||
	    test_tmpdir_make(f->dir, sizeof(f->dir), "fhirgate-test-store-bulk") == NULL)
		return -1;
	snprintf(sub, sizeof(sub), "%s/one", f->dir);
	if (store_open(sub, NULL, &f->one) != 0)
		return -1;
	snprintf(sub, sizeof(sub), "%s/bulk", f->dir);
	if (store_open(sub, NULL, &f->bulk) != 0)
		return -1;
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	fixture_t *f = *state;
	int rc;

	store_close(f->one);
	store_close(f->bulk);
	rc = test_tmpdir_remove(f->dir);
	free(f);
	return rc;
}

/* A generated put: resource i of a small id space, in variant v (bodies and entries depend on
 * both, so repeated puts change some resources and leave others as they were). */
typedef struct {
	char type[16], id[32], body[128];
	char values[NCODES][48];
	store_idx_entry_t e[NCODES];
	store_res_put_t p;
} gen_t;

static void
gen(gen_t *g, unsigned i, unsigned v)
{
	size_t n = 0;

	snprintf(g->type, sizeof(g->type), "%s", i % 5 == 0 ? "Practitioner" : "Patient");
	snprintf(g->id, sizeof(g->id), "id%08x", (i * 2654435761u) ^ 0x5bd1e995u);
	snprintf(g->body, sizeof(g->body), "{\"i\":%u,\"v\":%u}", i, v);
	for (unsigned c = 0; c < NCODES; c++) {
		/* some values shared by many resources (gender), some long (over 16 bytes) */
		if (c == 2)
			snprintf(g->values[c], sizeof(g->values[c]), "%s",
				 (i + v) % 2 ? "male" : "female");
		else if ((i + c + v) % 7 == 3)
			continue; /* an entry that comes and goes */
		else
			snprintf(g->values[c], sizeof(g->values[c]), "%s-%u-long-value-%u",
				 codes[c], (i * 7 + c) % 13, v % 3);
		g->e[n].code = slice_cstr(codes[c]);
		g->e[n].value = slice_cstr(g->values[c]);
		n++;
	}
	g->p = (store_res_put_t){.type = slice_cstr(g->type),
				 .id = slice_cstr(g->id),
				 .body = slice_cstr(g->body),
				 .entries = g->e,
				 .n_entries = n,
				 .now_ns = 1000};
}

static void
put_one(store_t *s, unsigned i, unsigned v)
{
	store_txn_t *t;
	store_res_result_t r;
	gen_t g;

	gen(&g, i, v);
	assert_int_equal(store_txn_begin(s, true, &t), 0);
	assert_int_equal(store_res_put(t, &g.p, &r), 0);
	assert_int_equal(store_txn_commit(t), 0);
}

static int
collect_idx(void *ctx, slice_t value, slice_t id)
{
	buf_t *b = ctx;

	buf_append_slice(b, value);
	buf_append_byte(b, '=');
	buf_append_slice(b, id);
	buf_append_byte(b, '\n');
	return 0;
}

static int
collect_res(void *ctx, const store_res_t *r)
{
	buf_t *b = ctx;

	buf_printf(b, "%.*s/%.*s v%u ", (int)r->type.len, r->type.ptr, (int)r->id.len, r->id.ptr,
		   (unsigned)r->version);
	buf_append_slice(b, r->body);
	buf_append_byte(b, '\n');
	return 0;
}

static void
report(void *ctx, const char *problem)
{
	(void)ctx;
	print_error("verify: %s\n", problem);
}

/* What a store holds: resources with version and body, every index entry, counts, and that
 * verify finds nothing. */
static void
snapshot(store_t *s, buf_t *out)
{
	static const char *const types[] = {"Patient", "Practitioner"};
	store_txn_t *t;
	store_stats_t st;

	assert_int_equal(store_txn_begin(s, false, &t), 0);
	assert_int_equal(store_verify(t, report, NULL), 0);
	for (size_t k = 0; k < 2; k++) {
		uint64_t n;

		assert_int_equal(
		    store_res_foreach_type(t, slice_cstr(types[k]), SLICE_NULL, collect_res, out),
		    0);
		for (unsigned c = 0; c < NCODES; c++) {
			buf_printf(out, "%s.%s:\n", types[k], codes[c]);
			assert_int_equal(store_idx_foreach_range(t, slice_cstr(types[k]),
								 slice_cstr(codes[c]), NULL, NULL,
								 collect_idx, out),
					 0);
		}
		assert_int_equal(store_res_count(t, slice_cstr(types[k]), &n), 0);
		buf_printf(out, "count %llu\n", (unsigned long long)n);
	}
	assert_int_equal(store_stats(t, &st), 0);
	buf_printf(out, "versions %llu changes %llu entries %llu\n",
		   (unsigned long long)st.versions, (unsigned long long)st.changes,
		   (unsigned long long)st.index_entries);
	store_txn_abort(t);
}

static void
assert_same(fixture_t *f)
{
	buf_t a = BUF_INIT, b = BUF_INIT;

	snapshot(f->one, &a);
	snapshot(f->bulk, &b);
	assert_true(a.len > 100);
	assert_string_equal(a.data, b.data);
	buf_free(&a);
	buf_free(&b);
}

/* A load in a transaction of its own; cb as for store_bulk_load. */
static void
load(store_bulk_t *b, store_t *s, store_bulk_cb cb, void *ctx)
{
	store_txn_t *t;

	assert_int_equal(store_txn_begin(s, true, &t), 0);
	assert_int_equal(store_bulk_load(b, t, 1000, cb, ctx), 0);
	assert_int_equal(store_txn_commit(t), 0);
}

static size_t
run_files(fixture_t *f)
{
	char pat[400];
	glob_t g;
	size_t n;

	snprintf(pat, sizeof(pat), "%s/bulk/bulk-*/run-??????", f->dir);
	if (glob(pat, 0, NULL, &g) != 0)
		return 0;
	n = g.gl_pathc;
	globfree(&g);
	return n;
}

/* The puts of one load: 300 resources, a third of them put two or three times (some with the
 * same body again), over a store that already holds 100 of them. */
static void
test_equivalent(void **state)
{
	fixture_t *f = *state;
	store_bulk_t *b;
	unsigned synced;

	for (unsigned i = 0; i < 100; i++) {
		put_one(f->one, i, 0);
		put_one(f->bulk, i, 0);
	}
	/* 4 KiB of memory: a run file every few puts */
	assert_int_equal(store_bulk_open(f->bulk, "test", 4096, 0, &b), 0);
	for (unsigned round = 0; round < 3; round++)
		for (unsigned i = 0; i < 300; i++) {
			unsigned v =
			    round == 2 && i % 2 ? 1 : round; /* round 2: odd ones unchanged */
			gen_t g;

			if (round > 0 && i % 3 != 0)
				continue;
			put_one(f->one, i, v);
			gen(&g, i, v);
			assert_int_equal(store_bulk_add(b, &g.p), 0);
			if (store_bulk_memory_full(b))
				assert_int_equal(store_bulk_sync(b, &synced), 0);
		}
	assert_true(run_files(f) > 5);
	assert_int_equal(store_bulk_count(b), 300 + 100 + 100);
	load(b, f->bulk, NULL, NULL);
	store_bulk_free(b, true);
	assert_int_equal(run_files(f), 0);
	assert_same(f);
}

static int
count_puts(void *ctx, const store_res_put_t *p, const store_res_result_t *r)
{
	size_t *n = ctx;

	(void)p;
	n[r->unchanged ? 1 : 0]++;
	return 0;
}

/* A load interrupted after two synced runs: the loader opened again adopts the runs the
 * checkpoint counts and removes the others. */
static void
test_resume(void **state)
{
	fixture_t *f = *state;
	store_bulk_t *b;
	unsigned runs;
	size_t n[2] = {0, 0};
	gen_t g;

	assert_int_equal(store_bulk_open(f->bulk, "resume", 1 << 20, 0, &b), 0);
	for (unsigned i = 0; i < 200; i++) {
		gen(&g, i, 0);
		assert_int_equal(store_bulk_add(b, &g.p), 0);
		put_one(f->one, i, 0);
		if (i == 99 || i == 149 || i == 179)
			assert_int_equal(store_bulk_sync(b, &runs), 0);
	}
	assert_int_equal(runs, 3);
	store_bulk_free(b, false); /* killed: the last 20 puts were only in memory */
	assert_int_equal(run_files(f), 3);

	/* the checkpoint said 2 runs (150 puts): the third is not trusted */
	assert_int_equal(store_bulk_open(f->bulk, "resume", 1 << 20, 2, &b), 0);
	assert_int_equal(run_files(f), 2);
	assert_int_equal(store_bulk_count(b), 150);
	for (unsigned i = 150; i < 200; i++) {
		gen(&g, i, 0);
		assert_int_equal(store_bulk_add(b, &g.p), 0);
	}
	load(b, f->bulk, count_puts, n);
	store_bulk_free(b, true);
	assert_int_equal(n[0], 200);
	assert_int_equal(n[1], 0);
	assert_same(f);

	/* more runs than there are files: refused, naming the file */
	assert_int_equal(store_bulk_open(f->bulk, "resume", 1 << 20, 1, &b), -FG_EIO);
	assert_non_null(strstr(store_last_error(), "run-000000"));

	/* the same puts again: every one unchanged, nothing written */
	assert_int_equal(store_bulk_open(f->bulk, "again", 0, 0, &b), 0);
	for (unsigned i = 0; i < 200; i++) {
		gen(&g, i, 0);
		assert_int_equal(store_bulk_add(b, &g.p), 0);
	}
	n[0] = n[1] = 0;
	load(b, f->bulk, count_puts, n);
	store_bulk_free(b, true);
	assert_int_equal(n[0], 0);
	assert_int_equal(n[1], 200);
	assert_same(f);
}

/* One memory part with thousands of entries per search parameter: the sort by radix and the
 * runs of equal value prefixes (all values of a parameter share their first bytes). */
static void
test_large(void **state)
{
	fixture_t *f = *state;
	store_bulk_t *b;
	store_txn_t *t;
	store_res_result_t r;
	gen_t g;

	assert_int_equal(store_txn_begin(f->one, true, &t), 0);
	assert_int_equal(store_bulk_open(f->bulk, "large", 0, 0, &b), 0);
	for (unsigned i = 0; i < 6000; i++) {
		gen(&g, i % 5000, i / 5000); /* 1,000 of them twice */
		assert_int_equal(store_res_put(t, &g.p, &r), 0);
		assert_int_equal(store_bulk_add(b, &g.p), 0);
	}
	assert_int_equal(store_txn_commit(t), 0);
	assert_int_equal(run_files(f), 0);
	load(b, f->bulk, NULL, NULL);
	store_bulk_free(b, true);
	assert_same(f);
}

/* Whether the run file at path has its puts in (res key, ordinal) order, each one's entries in
 * (code, value) order, keys and values bytewise with the shorter first on a tie (as LMDB orders
 * them), read with the format of store/bulk.c: the number of records out of order. *nents: the
 * entries the header counts. */
static int
bytes_cmp(const unsigned char *a, size_t alen, const unsigned char *b, size_t blen)
{
	int r = memcmp(a, b, alen < blen ? alen : blen);

	return r != 0 ? r : (alen > blen) - (alen < blen);
}

static uint64_t
be_read(const unsigned char *p, size_t n)
{
	uint64_t v = 0;

	for (size_t i = 0; i < n; i++)
		v = v << 8 | p[i];
	return v;
}

static size_t
run_sorted(const char *path, uint64_t *nents)
{
	FILE *fp = fopen(path, "rb");
	unsigned char *d, *p, *end, *prev = NULL;
	size_t len, bad = 0;
	uint64_t nputs, seen = 0;

	assert_non_null(fp);
	assert_int_equal(fseek(fp, 0, SEEK_END), 0);
	len = (size_t)ftell(fp);
	rewind(fp);
	d = malloc(len);
	assert_non_null(d);
	assert_int_equal(fread(d, 1, len, fp), len);
	fclose(fp);
	assert_memory_equal(d, "FGBULK2\n", 8);
	nputs = be_read(d + 8, 8);
	*nents = be_read(d + 16, 8);
	p = d + 40;
	end = p + be_read(d + 32, 8);
	assert_ptr_equal(end, d + len);
	for (uint64_t i = 0; i < nputs; i++, prev = p, p += be_read(p, 4)) {
		unsigned char *q = p + 14 + be_read(p + 12, 2), *pc = NULL, *pv = NULL;
		uint64_t n;

		q += 4 + be_read(q, 4);
		n = be_read(q, 2);
		q += 2;
		seen += n;
		for (uint64_t k = 0; k < n; k++) {
			unsigned char *c = q, *v = q + 2 + be_read(q, 2);
			int r;

			q = v + 2 + be_read(v, 2);
			if (pc != NULL) {
				r = bytes_cmp(pc + 2, be_read(pc, 2), c + 2, be_read(c, 2));
				if (r == 0)
					r = bytes_cmp(pv + 2, be_read(pv, 2), v + 2, be_read(v, 2));
				bad += r >= 0;
			}
			pc = c;
			pv = v;
		}
		assert_ptr_equal(q, p + be_read(p, 4));
		if (prev != NULL) {
			int r =
			    bytes_cmp(prev + 14, be_read(prev + 12, 2), p + 14, be_read(p + 12, 2));

			bad += r > 0 || (r == 0 && be_read(prev + 4, 8) >= be_read(p + 4, 8));
		}
	}
	assert_ptr_equal(p, end);
	assert_int_equal(seen, *nents);
	free(d);
	return bad;
}

/* Index values that make the sort of a load's entries work: many equal ones, values that share
 * their first 8 or 16 bytes, values that are prefixes of others (with zero bytes after, as in
 * the binary date bounds), values of exactly 16 and 17 bytes, keys over 255 bytes; ids that
 * share their first 4 bytes. The load finds them in order after its sort (its self-check) and
 * leaves the store as the same puts one by one; a run file of them is in order. */
#define LONG_TAIL                                                                               \
	"0123456789012345678901234567890123456789012345678901234567890123456789012345678901234" \
	"5678901234567890123456789012345678901234567890123456789012345678901234567890123456789" \
	"0123456789012345678901234567890123456789012345678901234567890123456789012345678901234" \
	"56789"

static void
test_sort_order(void **state)
{
	/* a prefix, and whether a number follows it */
	static const struct {
		const char *prefix;
		bool num;
	} shapes[] = {{"same", false},
		      {"+1 555 000", true},
		      {"0123456789abcdef", false},
		      {"0123456789abcdef", true},
		      {"0123456789abcde", true},
		      {"01234567", true},
		      {"x", false},
		      {"x\1", true},
		      {"a-long-value-with-a-common-start-", true},
		      {"0123456789abcdef0123456789abcdef-", true},
		      /* a key over 255 bytes: its length's high byte is not 0 */
		      {"a-value-of-300-bytes-" LONG_TAIL, true},
		      /* one long value that hundreds of resources share, as a reference */
		      {"Organization/d705938cd797a9b5f8b0ca5bea37ecc5", false}};
	fixture_t *f = *state;
	store_bulk_t *b;
	store_txn_t *t;
	store_res_result_t r;
	store_bulk_stats_t st;
	unsigned runs = 0;
	uint64_t nents;
	char path[400];

	assert_int_equal(store_txn_begin(f->one, true, &t), 0);
	assert_int_equal(store_bulk_open(f->bulk, "order", 0, 0, &b), 0);
	for (unsigned i = 0; i < 5000; i++) {
		char id[32], body[64], v[4][400];
		size_t vlen[4];
		store_idx_entry_t e[4];
		store_res_put_t p;

		if (i == 2500)
			assert_int_equal(store_bulk_sync(b, &runs), 0);

		/* 16 resources share each 4-byte id prefix */
		snprintf(id, sizeof(id), "abc%c%05u", 'a' + i % 16, i);
		snprintf(body, sizeof(body), "{\"i\":%u}", i);
		for (unsigned c = 0; c < 4; c++) {
			unsigned k = (i * (c + 1) + c) % 12;

			if (shapes[k].num)
				vlen[c] = (size_t)snprintf(v[c], sizeof(v[c]), "%s%u",
							   shapes[k].prefix, (i * 7919u) % 1000);
			else
				vlen[c] =
				    (size_t)snprintf(v[c], sizeof(v[c]), "%s", shapes[k].prefix);
			/* zero bytes after a prefix of another value */
			if (c == 3 && i % 3 == 0) {
				memset(v[c] + vlen[c], 0, 1 + i % 9);
				vlen[c] += 1 + i % 9;
			}
			e[c] = (store_idx_entry_t){slice_cstr(codes[c]), {v[c], vlen[c]}};
		}
		p = (store_res_put_t){.type = slice_cstr("Patient"),
				      .id = slice_cstr(id),
				      .body = slice_cstr(body),
				      .entries = e,
				      .n_entries = 4,
				      .now_ns = 1000};
		assert_int_equal(store_res_put(t, &p, &r), 0);
		assert_int_equal(store_bulk_add(b, &p), 0);
	}
	assert_int_equal(store_txn_commit(t), 0);
	/* half of them in a run file, half in memory */
	assert_int_equal(runs, 1);
	snprintf(path, sizeof(path), "%s/bulk/bulk-order/run-000000", f->dir);
	assert_int_equal(run_sorted(path, &nents), 0);
	assert_int_equal(nents, 2500 * 4);
	load(b, f->bulk, NULL, NULL);
	store_bulk_stats(b, &st);
	assert_int_equal(st.unsorted, 0);
	store_bulk_free(b, true);
	assert_same(f);
}

/* A run file damaged on disk is refused when a resumed load would adopt it. */
static void
test_damaged_run(void **state)
{
	fixture_t *f = *state;
	store_bulk_t *b;
	unsigned runs;
	char path[400];
	struct stat st;
	FILE *fp;
	gen_t g;

	assert_int_equal(store_bulk_open(f->bulk, "damaged", 0, 0, &b), 0);
	for (unsigned i = 0; i < 50; i++) {
		gen(&g, i, 0);
		assert_int_equal(store_bulk_add(b, &g.p), 0);
	}
	assert_int_equal(store_bulk_sync(b, &runs), 0);
	assert_int_equal(runs, 1);
	store_bulk_free(b, false);
	snprintf(path, sizeof(path), "%s/bulk/bulk-damaged/run-000000", f->dir);
	assert_int_equal(stat(path, &st), 0);

	/* its last bytes lost */
	assert_int_equal(truncate(path, st.st_size - 3), 0);
	assert_int_equal(store_bulk_open(f->bulk, "damaged", 0, 1, &b), -FG_EINVAL);
	assert_non_null(strstr(store_last_error(), "not the run expected"));

	/* whole length, but a put's key length that runs past its record */
	assert_int_equal(truncate(path, st.st_size), 0);
	fp = fopen(path, "r+b");
	assert_non_null(fp);
	assert_int_equal(fseek(fp, 40 + 12, SEEK_SET), 0);
	assert_int_equal(fputc(0x7f, fp), 0x7f);
	assert_int_equal(fclose(fp), 0);
	assert_int_equal(store_bulk_open(f->bulk, "damaged", 0, 1, &b), -FG_EINVAL);
}

/* What store_res_put refuses, the loader refuses when it is added. */
static void
test_refused(void **state)
{
	fixture_t *f = *state;
	store_bulk_t *b;
	gen_t g;

	assert_int_equal(store_bulk_open(f->bulk, "bad name", 0, 0, &b), -FG_EINVAL);
	assert_int_equal(store_bulk_open(f->bulk, "refused", 0, 0, &b), 0);
	gen(&g, 1, 0);
	g.p.id = slice_cstr("no/slash");
	assert_int_equal(store_bulk_add(b, &g.p), -FG_EINVAL);
	gen(&g, 1, 0);
	g.p.body = SLICE_NULL;
	assert_int_equal(store_bulk_add(b, &g.p), -FG_EINVAL);
	gen(&g, 1, 0);
	g.p.if_match = 1;
	assert_int_equal(store_bulk_add(b, &g.p), -FG_EINVAL);
	assert_int_equal(store_bulk_count(b), 0);
	store_bulk_free(b, true);
}

/* pend: puts kept under message sequences come back in sequence order, a load of them with
 * their removal in one transaction leaves the store as the puts one by one, a removal of a range
 * leaves the others, and verify names a record whose message does not exist. */
typedef struct {
	store_bulk_t *b;
	uint64_t last_seq;
	size_t n;
	buf_t order;
} pend_seen_t;

static int
pend_collect(void *ctx, uint64_t seq, const store_res_put_t *p)
{
	pend_seen_t *s = ctx;

	assert_true(seq >= s->last_seq);
	s->last_seq = seq;
	s->n++;
	buf_printf(&s->order, "%llu:%.*s ", (unsigned long long)seq, (int)p->body.len, p->body.ptr);
	return s->b != NULL ? store_bulk_add(s->b, p) : 0;
}

static void
report_count(void *ctx, const char *problem)
{
	(void)problem;
	(*(int *)ctx)++;
}

static void
test_pend(void **state)
{
	fixture_t *f = *state;
	pend_seen_t seen = {.order = BUF_INIT};
	buf_t want = BUF_INIT;
	store_txn_t *t;
	store_stats_t st;
	uint64_t seqs[40];
	int problems = 0;

	for (unsigned i = 0; i < 20; i++) {
		put_one(f->one, i, 0);
		put_one(f->bulk, i, 0);
	}
	assert_int_equal(store_txn_begin(f->bulk, true, &t), 0);
	for (unsigned m = 0; m < 40; m++) {
		store_msg_t msg = {.received_ns = 1, .status = 'A', .raw = slice_cstr("MSH|x")};
		gen_t g[3];
		store_res_put_t p[3];
		unsigned n = 1 + m % 3;

		assert_int_equal(store_msg_append(t, &msg, &seqs[m]), 0);
		for (unsigned k = 0; k < n; k++) {
			/* resources 0..29, some put again with another or the same body */
			gen(&g[k], (m * 7 + k * 11) % 30, m % 4 == 0 ? 1 : 2);
			p[k] = g[k].p;
			buf_printf(&want, "%llu:%s ", (unsigned long long)seqs[m], g[k].body);
		}
		assert_int_equal(store_pend_put(t, seqs[m], p, n), 0);
	}
	assert_int_equal(store_txn_commit(t), 0);
	/* the same puts one by one in f->one, for the comparison */
	for (unsigned m = 0; m < 40; m++)
		for (unsigned k = 0; k < 1 + m % 3; k++)
			put_one(f->one, (m * 7 + k * 11) % 30, m % 4 == 0 ? 1 : 2);

	assert_int_equal(store_txn_begin(f->bulk, false, &t), 0);
	assert_int_equal(store_pend_foreach(t, pend_collect, &seen), 0);
	assert_int_equal(store_stats(t, &st), 0);
	assert_int_equal(store_verify(t, report, NULL), 0);
	store_txn_abort(t);
	assert_int_equal(st.pending, 40);
	assert_int_equal(seen.n, 79); /* 1 + m % 3 puts each */
	assert_string_equal(seen.order.data, want.data);

	/* a load of everything kept, and its removal, in one transaction */
	assert_int_equal(store_bulk_open(f->bulk, "pend", 0, 0, &seen.b), 0);
	seen.n = seen.last_seq = 0;
	assert_int_equal(store_txn_begin(f->bulk, true, &t), 0);
	assert_int_equal(store_pend_foreach(t, pend_collect, &seen), 0);
	assert_int_equal(store_bulk_load(seen.b, t, 1000, NULL, NULL), 0);
	assert_int_equal(store_pend_del(t, 0, UINT64_MAX), 0);
	assert_int_equal(store_txn_commit(t), 0);
	store_bulk_free(seen.b, true);
	assert_same(f);

	/* a range goes, the rest stays; a record without its message is a problem */
	assert_int_equal(store_txn_begin(f->bulk, true, &t), 0);
	for (unsigned m = 0; m < 5; m++) {
		gen_t g;

		gen(&g, m, 3);
		assert_int_equal(store_pend_put(t, seqs[m], &g.p, 1), 0);
	}
	assert_int_equal(store_pend_del(t, seqs[1], seqs[3]), 0);
	assert_int_equal(store_txn_commit(t), 0);
	assert_int_equal(store_txn_begin(f->bulk, true, &t), 0);
	buf_reset(&seen.order);
	seen.b = NULL;
	seen.n = seen.last_seq = 0;
	assert_int_equal(store_pend_foreach(t, pend_collect, &seen), 0);
	assert_int_equal(seen.n, 2);
	assert_int_equal(store_verify(t, report, NULL), 0);
	{
		gen_t g;

		gen(&g, 1, 3);
		assert_int_equal(store_pend_put(t, seqs[39] + 100, &g.p, 1), 0);
		g.p.id = slice_cstr("no/slash");
		assert_int_equal(store_pend_put(t, seqs[39] + 101, &g.p, 1), -FG_EINVAL);
	}
	store_txn_abort(t);
	assert_int_equal(store_txn_begin(f->bulk, true, &t), 0);
	{
		gen_t g;

		gen(&g, 1, 3);
		assert_int_equal(store_pend_put(t, seqs[39] + 100, &g.p, 1), 0);
	}
	assert_int_equal(store_verify(t, report_count, &problems), 1);
	assert_int_equal(problems, 1);
	store_txn_abort(t);
	buf_free(&seen.order);
	buf_free(&want);
}

static void
expect_unchanged(store_bulk_t *b, store_t *s, unsigned i, unsigned v, int want)
{
	store_txn_t *t;
	gen_t g;

	gen(&g, i, v);
	assert_int_equal(store_txn_begin(s, true, &t), 0);
	assert_int_equal(store_bulk_unchanged(b, t, &g.p), want);
	store_txn_abort(t);
}

static void
add_put(store_bulk_t *b, unsigned i, unsigned v)
{
	gen_t g;

	gen(&g, i, v);
	assert_int_equal(store_bulk_add(b, &g.p), 0);
}

/* store_bulk_unchanged: against the last put of the resource in the loader, else the store; no
 * answer but 0 without tracking or once a run file is written. */
static void
test_unchanged(void **state)
{
	fixture_t *f = *state;
	store_bulk_t *b;
	store_txn_t *t;
	store_res_result_t r;

	for (unsigned i = 0; i < 10; i++)
		put_one(f->bulk, i, 0);

	assert_int_equal(store_bulk_open(f->bulk, "track", 1 << 20, 0, &b), 0);
	expect_unchanged(b, f->bulk, 0, 0, 0); /* not tracking */
	store_bulk_track(b);
	expect_unchanged(b, f->bulk, 0, 0, 1);  /* as stored */
	expect_unchanged(b, f->bulk, 0, 1, 0);  /* another body */
	expect_unchanged(b, f->bulk, 50, 0, 0); /* not stored */
	add_put(b, 0, 1);
	expect_unchanged(b, f->bulk, 0, 1, 1); /* as the last put */
	expect_unchanged(b, f->bulk, 0, 0, 0); /* as stored, but not as the last put */
	add_put(b, 0, 0);
	expect_unchanged(b, f->bulk, 0, 0, 1);
	expect_unchanged(b, f->bulk, 0, 1, 0);
	/* thousands of resources: the index grows and finds every last put */
	for (unsigned i = 100; i < 3100; i++)
		add_put(b, i, i % 3);
	for (unsigned i = 100; i < 3100; i += 7) {
		expect_unchanged(b, f->bulk, i, i % 3, 1);
		expect_unchanged(b, f->bulk, i, i % 3 + 1, 0);
	}
	expect_unchanged(b, f->bulk, 1, 0, 1);
	/* a deleted resource: a put of its last body writes */
	{
		gen_t g;

		gen(&g, 1, 0);
		assert_int_equal(store_txn_begin(f->bulk, true, &t), 0);
		assert_int_equal(store_res_delete(t, g.p.type, g.p.id, 1000, &r), 0);
		assert_int_equal(store_txn_commit(t), 0);
	}
	expect_unchanged(b, f->bulk, 1, 0, 0);
	/* after a run file, no answer */
	assert_int_equal(store_bulk_sync(b, NULL), 0);
	expect_unchanged(b, f->bulk, 0, 0, 0);
	expect_unchanged(b, f->bulk, 2, 0, 0);
	store_bulk_free(b, true);
}

/* Reads or writes the pend record of seq behind the store's back (the store must be closed):
 * what a bug or a disk could do, and what the API cannot. */
static void
raw_pend(const char *dir, uint64_t seq, buf_t *get, const void *val, size_t vlen)
{
	unsigned char kb[8];
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_val k = {8, kb}, v = {vlen, (void *)val};

	for (int i = 0; i < 8; i++)
		kb[i] = (unsigned char)(seq >> (56 - 8 * i));
	assert_int_equal(mdb_env_create(&env), 0);
	assert_int_equal(mdb_env_set_maxdbs(env, 32), 0);
	assert_int_equal(mdb_env_open(env, dir, 0, 0600), 0);
	assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
	assert_int_equal(mdb_dbi_open(txn, "pend", 0, &dbi), 0);
	if (get != NULL) {
		assert_int_equal(mdb_get(txn, dbi, &k, &v), 0);
		buf_append(get, v.mv_data, v.mv_size);
	} else {
		assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
	}
	assert_int_equal(mdb_txn_commit(txn), 0);
	mdb_env_close(env);
}

static int
pend_ignore(void *ctx, uint64_t seq, const store_res_put_t *p)
{
	(void)ctx;
	(void)seq;
	(void)p;
	return 0;
}

/* A damaged pend record (cut anywhere, lengths that point past its end, more puts than it
 * holds, bytes after them) is refused by the walk and named by verify; nothing is read past
 * the record (ASan). */
static void
test_pend_damaged(void **state)
{
	fixture_t *f = *state;
	char dir[300];
	buf_t good = BUF_INIT, bad = BUF_INIT;
	store_txn_t *t;
	uint64_t seq;
	gen_t g;

	snprintf(dir, sizeof(dir), "%s/bulk", f->dir);
	assert_int_equal(store_txn_begin(f->bulk, true, &t), 0);
	assert_int_equal(
	    store_msg_append(t, &(store_msg_t){.status = 'A', .raw = slice_cstr("M")}, &seq), 0);
	gen(&g, 3, 1);
	assert_int_equal(store_pend_put(t, seq, &g.p, 1), 0);
	assert_int_equal(store_txn_commit(t), 0);
	store_close(f->bulk);
	raw_pend(dir, seq, &good, NULL, 0);
	assert_true(good.len > 40);

	for (size_t variant = 0; variant < good.len + 4; variant++) {
		int problems = 0;

		buf_reset(&bad);
		buf_append(&bad, good.data, good.len);
		if (variant < good.len) {
			bad.len = variant; /* cut */
		} else if (variant == good.len) {
			bad.data[3] = 2; /* two puts said, one there */
		} else if (variant == good.len + 1) {
			bad.data[4 + 12] = 0xff; /* key length past the end */
		} else if (variant == good.len + 2) {
			buf_append_byte(&bad, 0); /* a byte after the put */
		} else {
			bad.data[4] = 0x7f; /* record length past the end */
		}
		raw_pend(dir, seq, NULL, bad.data, bad.len);
		assert_int_equal(store_open(dir, NULL, &f->bulk), 0);
		assert_int_equal(store_txn_begin(f->bulk, false, &t), 0);
		assert_int_equal(store_pend_foreach(t, pend_ignore, NULL), -FG_ESTORE);
		store_txn_abort(t);
		assert_int_equal(store_txn_begin(f->bulk, false, &t), 0);
		assert_int_equal(store_verify(t, report_count, &problems), 1);
		assert_int_equal(problems, 1);
		store_txn_abort(t);
		store_close(f->bulk);
	}
	/* the good record again: walks and verifies */
	raw_pend(dir, seq, NULL, good.data, good.len);
	assert_int_equal(store_open(dir, NULL, &f->bulk), 0);
	assert_int_equal(store_txn_begin(f->bulk, false, &t), 0);
	assert_int_equal(store_pend_foreach(t, pend_ignore, NULL), 0);
	assert_int_equal(store_verify(t, report, NULL), 0);
	store_txn_abort(t);
	buf_free(&good);
	buf_free(&bad);
}

int
main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
	const struct CMUnitTest tests[] = {
	    T(test_equivalent), T(test_resume),      T(test_large),
	    T(test_sort_order), T(test_damaged_run), T(test_refused),
	    T(test_pend),       T(test_unchanged),   T(test_pend_damaged)};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
