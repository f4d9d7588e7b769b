/* Unit tests for store/: real LMDB environments in a temporary directory. */
#include "config.h"

#include <sys/stat.h>
#include <sys/wait.h>

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

#include "lib/err.h"
#include "lib/slice.h"
#include "store/store.h"
#include "tests/unit/tmpdir.h"

typedef struct {
	char root[256]; /* removed after each test */
	char dir[300];  /* the store, below root so that open must create it */
} fixture_t;

static int
setup(void **state)
{
	fixture_t *f = calloc(1, sizeof(*f));

	if (f == NULL)
		return -1;
	if (test_tmpdir_make(f->root, sizeof(f->root), "fhirgate-test-store") == NULL) {
		free(f);
		return -1;
	}
	snprintf(f->dir, sizeof(f->dir), "%s/a/b/store", f->root);
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	fixture_t *f = *state;
	int rc = test_tmpdir_remove(f->root);

	free(f);
	return rc;
}

static store_t *
open_store(const fixture_t *f, uint64_t map_size, bool read_only)
{
	store_opts_t o = {.map_size = map_size, .read_only = read_only};
	store_t *s = NULL;

	assert_int_equal(store_open(f->dir, &o, &s), 0);
	assert_non_null(s);
	return s;
}

static store_msg_t
msg_make(const char *raw, const char *peer, uint8_t status, uint64_t ns)
{
	return (store_msg_t){0, ns, status, slice_cstr(peer), slice_cstr(raw)};
}

static uint64_t
append(store_txn_t *t, const char *raw)
{
	store_msg_t m = msg_make(raw, "127.0.0.1:1", 'A', 1000);
	uint64_t seq = 0;

	assert_int_equal(store_msg_append(t, &m, &seq), 0);
	return seq;
}

/* Appends n messages in one committed transaction; returns the first sequence. */
static uint64_t
append_n(store_t *s, int n)
{
	store_txn_t *t;
	uint64_t first = 0;

	assert_int_equal(store_txn_begin(s, true, &t), 0);
	for (int i = 0; i < n; i++) {
		uint64_t seq = append(t, "MSH|^~\\&|A\r");

		if (i == 0)
			first = seq;
	}
	assert_int_equal(store_txn_commit(t), 0);
	return first;
}

static store_stats_t
stats_of(store_t *s)
{
	store_stats_t st;
	store_txn_t *t;

	assert_int_equal(store_txn_begin(s, false, &t), 0);
	assert_int_equal(store_stats(t, &st), 0);
	assert_int_equal(store_txn_commit(t), 0);
	return st;
}

/* Changes a record behind the store's back (the store must be closed): what a bug or a disk
 * could do, and what the public API cannot. */
static void
raw_put(const fixture_t *f, const char *db, const void *key, size_t klen, const void *val,
	size_t vlen)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_val k = {klen, (void *)key}, v = {vlen, (void *)val};

	assert_int_equal(mdb_env_create(&env), 0);
	assert_int_equal(mdb_env_set_maxdbs(env, 16), 0);
	assert_int_equal(mdb_env_open(env, f->dir, 0, 0600), 0);
	assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
	assert_int_equal(mdb_dbi_open(txn, db, 0, &dbi), 0);
	assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
	assert_int_equal(mdb_txn_commit(txn), 0);
	mdb_env_close(env);
}

static void
test_open_create(void **state)
{
	fixture_t *f = *state;
	struct stat sb;
	store_t *s = open_store(f, 0, false);
	store_stats_t st = stats_of(s);

	assert_int_equal(stat(f->dir, &sb), 0);
	assert_true(S_ISDIR(sb.st_mode));
	assert_int_equal(sb.st_mode & 0777, 0700);
	assert_true(st.messages == 0 && st.msgkeys == 0 && st.dead == 0 && st.last_seq == 0);
	assert_true(st.resources == 0 && st.versions == 0 && st.changes == 0 &&
		    st.index_entries == 0 && st.work == 0);
	assert_true(st.map_size == 16ull << 30);
	assert_true(st.used_bytes > 0 && st.used_bytes < 1 << 20);
	store_close(s);
	store_close(NULL);
	store_txn_abort(NULL);
	/* Opening an existing store is not creating it again. */
	s = open_store(f, 0, false);
	store_close(s);
}

static void
test_append_get(void **state)
{
	fixture_t *f = *state;
	store_t *s = open_store(f, 0, false);
	const char raw3[] = "MSH|x\0y\rPID|1\r";
	store_msg_t in[3] = {
	    msg_make("MSH|^~\\&|A|B\rPID|1\r", "10.0.0.1:5000", 'A', 111),
	    msg_make("MSH|^~\\&|C|D\r", "", 'E', 222),
	    {0, 333, 'R', SLICE_LIT("file:/x.hl7"), {raw3, sizeof(raw3) - 1}},
	};
	store_msg_t out;
	store_txn_t *t;
	uint64_t seq;

	assert_int_equal(store_txn_begin(s, true, &t), 0);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(store_msg_append(t, &in[i], &seq), 0);
		assert_int_equal(seq, i + 1);
	}
	/* Visible inside the writing transaction too. */
	assert_int_equal(store_msg_get(t, 2, &out), 0);
	assert_true(slice_eq(out.raw, in[1].raw));
	assert_int_equal(store_txn_commit(t), 0);

	assert_int_equal(store_txn_begin(s, false, &t), 0);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(store_msg_get(t, (uint64_t)i + 1, &out), 0);
		assert_int_equal(out.seq, i + 1);
		assert_int_equal(out.received_ns, in[i].received_ns);
		assert_int_equal(out.status, in[i].status);
		assert_true(slice_eq(out.peer, in[i].peer));
		assert_true(slice_eq(out.raw, in[i].raw));
	}
	assert_int_equal(out.raw.len, sizeof(raw3) - 1);
	assert_int_equal(store_msg_get(t, 4, &out), -FG_ENOTFOUND);
	assert_int_equal(store_msg_get(t, 0, &out), -FG_ENOTFOUND);
	/* A lookup that finds nothing is not an error: the next one works. */
	assert_int_equal(store_msg_get(t, 1, &out), 0);
	/* Writes need a write transaction. */
	assert_int_equal(store_msg_append(t, &in[0], &seq), -FG_EINVAL);
	assert_int_equal(store_txn_commit(t), 0);
	store_close(s);
}

static void
test_set_status(void **state)
{
	fixture_t *f = *state;
	store_t *s = open_store(f, 0, false);
	char big[10000];
	store_msg_t m = {0, 5, 'E', SLICE_LIT("p"), {big, sizeof(big)}}, out;
	store_txn_t *t;
	uint64_t seq;

	memset(big, 'x', sizeof(big));
	assert_int_equal(store_txn_begin(s, true, &t), 0);
	assert_int_equal(store_msg_append(t, &m, &seq), 0);
	assert_int_equal(append(t, "MSH|small\r"), 2);
	assert_int_equal(store_txn_commit(t), 0);

	assert_int_equal(store_txn_begin(s, true, &t), 0);
	assert_int_equal(store_msg_set_status(t, 1, 'A'), 0);
	assert_int_equal(store_msg_set_status(t, 2, 'R'), 0);
	/* Not found is an answer, not a failure: the transaction still commits. */
	assert_int_equal(store_msg_set_status(t, 9, 'A'), -FG_ENOTFOUND);
	assert_int_equal(store_txn_commit(t), 0);

	assert_int_equal(store_txn_begin(s, false, &t), 0);
	assert_int_equal(store_msg_get(t, 1, &out), 0);
	assert_int_equal(out.status, 'A');
	assert_int_equal(out.received_ns, 5);
	assert_true(slice_eq(out.peer, SLICE_LIT("p")));
	assert_int_equal(out.raw.len, sizeof(big));
	assert_memory_equal(out.raw.ptr, big, sizeof(big));
	assert_int_equal(store_msg_get(t, 2, &out), 0);
	assert_int_equal(out.status, 'R');
	assert_true(slice_eq(out.raw, SLICE_LIT("MSH|small\r")));
	store_txn_abort(t);
	store_close(s);
}

static void
test_msgkey(void **state)
{
	fixture_t *f = *state;
	store_t *s = open_store(f, 0, false);
	static char long1[2000], long2[2000], k511[511], k512[512];
	slice_t keys[] = {SLICE_LIT("LAB|HOSP|MSG0001"),
			  {long1, sizeof(long1)},
			  {long2, sizeof(long2)},
			  {k511, sizeof(k511)},
			  {k512, sizeof(k512)}};
	store_txn_t *t;
	uint64_t seq, hash;

	/* Long keys that differ only past the stored prefix must stay distinct. */
	memset(long1, 'k', sizeof(long1));
	memset(long2, 'k', sizeof(long2));
	long2[1999] = 'z';
	memset(k511, 'm', sizeof(k511));
	memset(k512, 'm', sizeof(k512));
	assert_int_equal(store_txn_begin(s, true, &t), 0);
	for (size_t i = 0; i < 5; i++)
		assert_int_equal(store_msgkey_put(t, keys[i], 10 + i, 0xabcdef0000000000ull + i),
				 0);
	assert_int_equal(store_txn_commit(t), 0);

	assert_int_equal(store_txn_begin(s, true, &t), 0);
	for (size_t i = 0; i < 5; i++) {
		assert_int_equal(store_msgkey_get(t, keys[i], &seq, &hash), 0);
		assert_int_equal(seq, 10 + i);
		assert_true(hash == 0xabcdef0000000000ull + i);
	}
	assert_int_equal(store_msgkey_get(t, SLICE_LIT("LAB|HOSP|MSG0002"), &seq, &hash),
			 -FG_ENOTFOUND);
	assert_int_equal(store_msgkey_get(t, slice_make(long1, 1999), &seq, &hash), -FG_ENOTFOUND);
	assert_int_equal(store_msgkey_get(t, SLICE_NULL, &seq, &hash), -FG_ENOTFOUND);
	/* Overwrite: the key now names a later message. */
	assert_int_equal(store_msgkey_put(t, keys[0], 77, 7), 0);
	assert_int_equal(store_msgkey_get(t, keys[0], &seq, &hash), 0);
	assert_true(seq == 77 && hash == 7);
	assert_int_equal(store_txn_commit(t), 0);
	assert_int_equal(stats_of(s).msgkeys, 5);

	assert_int_equal(store_txn_begin(s, true, &t), 0);
	assert_int_equal(store_msgkey_put(t, SLICE_NULL, 1, 1), -FG_EINVAL);
	assert_int_equal(store_txn_commit(t), -FG_EINVAL);
	store_close(s);
}

static void
test_dead(void **state)
{
	fixture_t *f = *state;
	store_t *s = open_store(f, 0, false);
	char reason[3000];
	store_dead_t d1 = {2,
			   123456789012345ull,
			   3,
			   203,
			   0x01020304u,
			   SLICE_LIT("bad version"),
			   SLICE_LIT("MSH-12")};
	store_dead_t d2 = {3, 9, 2, 100, 0, {reason, sizeof(reason)}, SLICE_NULL};
	store_dead_t out;
	store_txn_t *t;

	memset(reason, 'r', sizeof(reason));
	assert_int_equal(store_txn_begin(s, true, &t), 0);
	assert_int_equal(store_dead_put(t, &d1), 0);
	assert_int_equal(store_dead_put(t, &d2), 0);
	assert_int_equal(store_txn_commit(t), 0);

	assert_int_equal(store_txn_begin(s, true, &t), 0);
	assert_int_equal(store_dead_get(t, 2, &out), 0);
	assert_int_equal(out.seq, 2);
	assert_true(out.time_ns == d1.time_ns);
	assert_int_equal(out.stage, 3);
	assert_int_equal(out.code, 203);
	assert_int_equal(out.map_version, 0x01020304u);
	assert_true(slice_eq(out.reason, d1.reason));
	assert_true(slice_eq(out.location, d1.location));
	assert_int_equal(store_dead_get(t, 3, &out), 0);
	assert_true(slice_eq(out.reason, d2.reason));
	assert_int_equal(out.location.len, 0);
	/* Rewriting a record from its own borrowed slices is safe. */
	out.code = 101;
	assert_int_equal(store_dead_put(t, &out), 0);
	assert_int_equal(store_dead_get(t, 3, &out), 0);
	assert_int_equal(out.code, 101);
	assert_true(slice_eq(out.reason, d2.reason));

	assert_int_equal(store_dead_del(t, 2), 0);
	assert_int_equal(store_dead_get(t, 2, &out), -FG_ENOTFOUND);
	assert_int_equal(store_dead_del(t, 2), -FG_ENOTFOUND);
	assert_int_equal(store_txn_commit(t), 0);
	assert_int_equal(stats_of(s).dead, 1);
	store_close(s);
}

typedef struct {
	uint64_t seen[32];
	int n;
	uint64_t stop_at;
} collect_t;

static int
collect_msg(void *ctx, const store_msg_t *m)
{
	collect_t *c = ctx;

	c->seen[c->n++] = m->seq;
	assert_true(slice_eq(m->raw, SLICE_LIT("MSH|^~\\&|A\r")));
	return m->seq == c->stop_at ? 42 : 0;
}

static int
collect_dead(void *ctx, const store_dead_t *d)
{
	collect_t *c = ctx;

	c->seen[c->n++] = d->seq;
	return d->seq == c->stop_at ? -7 : 0;
}

static void
test_foreach(void **state)
{
	fixture_t *f = *state;
	store_t *s = open_store(f, 0, false);
	collect_t c = {.stop_at = 7};
	store_txn_t *t;

	assert_int_equal(append_n(s, 10), 1);
	assert_int_equal(store_txn_begin(s, true, &t), 0);
	for (uint64_t seq = 2; seq <= 10; seq += 2) {
		store_dead_t d = {seq, 1, 2, 100, 0, SLICE_LIT("x"), SLICE_LIT("")};

		assert_int_equal(store_dead_put(t, &d), 0);
	}
	assert_int_equal(store_txn_commit(t), 0);

	assert_int_equal(store_txn_begin(s, false, &t), 0);
	assert_int_equal(store_msg_foreach(t, 4, collect_msg, &c), 42);
	assert_int_equal(c.n, 4);
	for (int i = 0; i < 4; i++)
		assert_int_equal(c.seen[i], 4 + i);

	c = (collect_t){.stop_at = 0};
	assert_int_equal(store_msg_foreach(t, 0, collect_msg, &c), 0);
	assert_int_equal(c.n, 10);
	assert_int_equal(c.seen[9], 10);
	c = (collect_t){.stop_at = 0};
	assert_int_equal(store_msg_foreach(t, 11, collect_msg, &c), 0);
	assert_int_equal(c.n, 0);

	c = (collect_t){.stop_at = 8};
	assert_int_equal(store_dead_foreach(t, 5, collect_dead, &c), -7);
	assert_int_equal(c.n, 2);
	assert_true(c.seen[0] == 6 && c.seen[1] == 8);
	assert_int_equal(store_txn_commit(t), 0);
	store_close(s);
}

static void
test_stats(void **state)
{
	fixture_t *f = *state;
	store_t *s = open_store(f, 1ull << 30, false);
	store_dead_t d = {3, 1, 2, 100, 0, SLICE_LIT("x"), SLICE_LIT("")};
	store_stats_t st;
	store_txn_t *t;

	append_n(s, 5);
	assert_int_equal(store_txn_begin(s, true, &t), 0);
	assert_int_equal(store_dead_put(t, &d), 0);
	assert_int_equal(store_msgkey_put(t, SLICE_LIT("k1"), 1, 1), 0);
	assert_int_equal(store_msgkey_put(t, SLICE_LIT("k2"), 2, 2), 0);
	assert_int_equal(append(t, "MSH|6\r"), 6);
	/* Inside the writing transaction, counts include its own changes. */
	assert_int_equal(store_stats(t, &st), 0);
	assert_int_equal(st.messages, 6);
	assert_int_equal(st.last_seq, 6);
	assert_int_equal(store_txn_commit(t), 0);

	st = stats_of(s);
	assert_int_equal(st.messages, 6);
	assert_int_equal(st.msgkeys, 2);
	assert_int_equal(st.dead, 1);
	assert_int_equal(st.last_seq, 6);
	assert_true(st.map_size == 1ull << 30);
	assert_true(st.used_bytes >= 4096);
	store_close(s);
}

typedef struct {
	char problems[8][512];
	int n;
} report_t;

static void
report(void *ctx, const char *problem)
{
	report_t *r = ctx;

	if (r->n < 8)
		snprintf(r->problems[r->n], sizeof(r->problems[0]), "%s", problem);
	r->n++;
}

static bool
reported(const report_t *r, const char *needle)
{
	for (int i = 0; i < r->n && i < 8; i++)
		if (strstr(r->problems[i], needle) != NULL)
			return true;
	return false;
}

static int
verify(store_t *s, report_t *r)
{
	store_txn_t *t;
	int rc;

	memset(r, 0, sizeof(*r));
	assert_int_equal(store_txn_begin(s, false, &t), 0);
	rc = store_verify(t, report, r);
	store_txn_abort(t);
	return rc;
}

static void
test_verify(void **state)
{
	fixture_t *f = *state;
	store_t *s = open_store(f, 0, false);
	store_dead_t d = {2, 1, 2, 100, 0, SLICE_LIT("bad"), SLICE_LIT("PID-3")};
	const unsigned char seq3[8] = {0, 0, 0, 0, 0, 0, 0, 3};
	store_msg_t m;
	store_txn_t *t;
	report_t r;

	append_n(s, 3);
	assert_int_equal(store_txn_begin(s, true, &t), 0);
	assert_int_equal(store_msgkey_put(t, SLICE_LIT("A|B|1"), 1, 11), 0);
	assert_int_equal(store_dead_put(t, &d), 0);
	assert_int_equal(store_txn_commit(t), 0);
	assert_int_equal(verify(s, &r), 0);
	assert_int_equal(r.n, 0);

	/* Damage through the public API: a key and a dead letter for messages that do not exist. */
	d.seq = 500;
	assert_int_equal(store_txn_begin(s, true, &t), 0);
	assert_int_equal(store_msgkey_put(t, SLICE_LIT("A|B|2"), 999, 12), 0);
	assert_int_equal(store_dead_put(t, &d), 0);
	assert_int_equal(store_txn_commit(t), 0);
	assert_int_equal(verify(s, &r), 2);
	assert_int_equal(r.n, 2);
	assert_true(reported(&r, "msgkey 'A|B|2': points at message 999"));
	assert_true(reported(&r, "dead 500: no message"));
	store_close(s);

	/* Damage behind its back: a message record cut short. */
	raw_put(f, "msg", seq3, sizeof(seq3), "\x01R", 2);
	s = open_store(f, 0, false);
	assert_int_equal(verify(s, &r), 3);
	assert_true(reported(&r, "msg 3: record does not decode"));
	assert_int_equal(store_txn_begin(s, false, &t), 0);
	assert_int_equal(store_msg_get(t, 3, &m), -FG_ESTORE);
	assert_non_null(strstr(store_last_error(), "msg 3"));
	assert_int_equal(store_msg_get(t, 2, &m), 0);
	store_txn_abort(t);
	store_close(s);
}

static void
test_sticky_invalid(void **state)
{
	fixture_t *f = *state;
	store_t *s = open_store(f, 0, false);
	static char peer[70000];
	store_msg_t bad = {0, 1, 'A', {peer, sizeof(peer)}, SLICE_LIT("MSH|\r")}, out;
	store_dead_t d = {1, 1, 2, 100, 0, SLICE_LIT("x"), SLICE_LIT("")};
	store_txn_t *t;
	uint64_t seq;

	assert_int_equal(store_txn_begin(s, true, &t), 0);
	assert_int_equal(append(t, "MSH|1\r"), 1);
	assert_int_equal(store_msg_append(t, &bad, &seq), -FG_EINVAL);
	/* Every later operation returns the first failure, reads included. */
	bad.peer = SLICE_LIT("ok");
	assert_int_equal(store_msg_append(t, &bad, &seq), -FG_EINVAL);
	assert_int_equal(store_dead_put(t, &d), -FG_EINVAL);
	assert_int_equal(store_msg_get(t, 1, &out), -FG_EINVAL);
	assert_int_equal(store_txn_commit(t), -FG_EINVAL);
	assert_int_equal(stats_of(s).messages, 0);
	assert_int_equal(append_n(s, 1), 1);
	store_close(s);
}

static void
test_sticky_map_full(void **state)
{
	fixture_t *f = *state;
	store_t *s = open_store(f, 256 * 1024, false);
	static char big[8000];
	store_msg_t m = {0, 1, 'A', SLICE_LIT("p"), {big, sizeof(big)}};
	store_dead_t d = {1, 1, 2, 100, 0, SLICE_LIT("x"), SLICE_LIT("")};
	store_txn_t *t;
	uint64_t seq = 0;
	int rc = 0, appended = 0;

	memset(big, 'b', sizeof(big));
	assert_int_equal(append_n(s, 1), 1);
	assert_int_equal(store_txn_begin(s, true, &t), 0);
	for (int i = 0; i < 1000 && rc == 0; i++)
		if ((rc = store_msg_append(t, &m, &seq)) == 0)
			appended++;
	assert_int_equal(rc, -FG_EFULL);
	assert_true(appended > 0 && appended < 1000);
	assert_non_null(strstr(store_last_error(), "map_size"));
	assert_int_equal(store_dead_put(t, &d), -FG_EFULL);
	assert_int_equal(store_msgkey_put(t, SLICE_LIT("k"), 1, 1), -FG_EFULL);
	assert_int_equal(store_txn_commit(t), -FG_EFULL);

	/* Nothing from that transaction is visible; the store still works. */
	assert_int_equal(stats_of(s).messages, 1);
	assert_int_equal(stats_of(s).dead, 0);
	assert_int_equal(append_n(s, 1), 2);
	store_close(s);
}

static void
test_reopen(void **state)
{
	fixture_t *f = *state;
	store_t *s = open_store(f, 0, false);
	store_msg_t out;
	store_txn_t *t;

	assert_int_equal(append_n(s, 2), 1);
	store_close(s);
	s = open_store(f, 0, false);
	assert_int_equal(stats_of(s).messages, 2);
	assert_int_equal(append_n(s, 1), 3);
	assert_int_equal(store_txn_begin(s, false, &t), 0);
	assert_int_equal(store_msg_get(t, 1, &out), 0);
	assert_true(slice_eq(out.raw, SLICE_LIT("MSH|^~\\&|A\r")));
	assert_int_equal(store_txn_commit(t), 0);
	store_close(s);
}

/* The child opens its own environment (LMDB handles do not survive fork), appends and exits. */
static void
child_append(const fixture_t *f, int n)
{
	store_t *s;
	store_txn_t *t;
	store_msg_t m = msg_make("MSH|child\r", "child", 'A', 1);
	uint64_t seq;
	int bad = 0;

	if (store_open(f->dir, NULL, &s) != 0 || store_txn_begin(s, true, &t) != 0)
		_exit(10);
	for (int i = 0; i < n; i++)
		bad |= store_msg_append(t, &m, &seq) != 0 || seq != 2 + (uint64_t)i;
	if (store_txn_commit(t) != 0)
		bad = 1;
	store_close(s);
	_exit(bad ? 11 : 0);
}

static void
test_two_processes(void **state)
{
	fixture_t *f = *state;
	store_t *s = open_store(f, 0, false);
	store_msg_t out;
	store_txn_t *t;
	int status;
	pid_t pid;

	/* The parent keeps its environment open while the child writes. */
	assert_int_equal(append_n(s, 1), 1);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		child_append(f, 3);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);

	assert_int_equal(append_n(s, 2), 5);
	assert_int_equal(store_txn_begin(s, false, &t), 0);
	assert_int_equal(store_msg_get(t, 4, &out), 0);
	assert_true(slice_eq(out.peer, SLICE_LIT("child")));
	assert_int_equal(store_msg_get(t, 6, &out), 0);
	assert_true(slice_eq(out.peer, SLICE_LIT("127.0.0.1:1")));
	assert_int_equal(store_txn_commit(t), 0);
	store_close(s);
}

static void
test_read_only(void **state)
{
	fixture_t *f = *state;
	store_opts_t ro = {.read_only = true};
	store_t *s;
	store_txn_t *t;
	store_msg_t out;
	struct stat sb;

	/* Read-only never creates anything. */
	assert_int_equal(store_open(f->dir, &ro, &s), -FG_ENOTFOUND);
	assert_null(s);
	assert_int_equal(stat(f->dir, &sb), -1);

	s = open_store(f, 1ull << 30, false);
	append_n(s, 2);
	store_close(s);
	s = open_store(f, 0, true);
	assert_int_equal(store_txn_begin(s, true, &t), -FG_EINVAL);
	assert_null(t);
	assert_non_null(strstr(store_last_error(), "read-only"));
	assert_int_equal(store_txn_begin(s, false, &t), 0);
	assert_int_equal(store_msg_get(t, 2, &out), 0);
	assert_int_equal(store_txn_commit(t), 0);
	/* The reader adopts the writer's map size. */
	assert_true(stats_of(s).map_size == 1ull << 30);
	store_close(s);
}

static void
test_abort(void **state)
{
	fixture_t *f = *state;
	store_t *s = open_store(f, 0, false);
	store_txn_t *t;
	uint64_t seq, hash;

	assert_int_equal(store_txn_begin(s, true, &t), 0);
	assert_int_equal(append(t, "MSH|1\r"), 1);
	assert_int_equal(store_msgkey_put(t, SLICE_LIT("k"), 1, 1), 0);
	store_txn_abort(t);

	assert_int_equal(store_txn_begin(s, true, &t), 0);
	assert_int_equal(store_msgkey_get(t, SLICE_LIT("k"), &seq, &hash), -FG_ENOTFOUND);
	assert_int_equal(append(t, "MSH|1\r"), 1);
	assert_int_equal(store_txn_commit(t), 0);
	assert_int_equal(stats_of(s).messages, 1);
	store_close(s);
}

static void
test_batch(void **state)
{
	fixture_t *f = *state;
	store_t *s = open_store(f, 0, false);
	store_txn_t *t;

	assert_int_equal(append_n(s, 3), 1);
	assert_int_equal(store_txn_begin(s, true, &t), 0);
	for (uint64_t i = 0; i < 5000; i++)
		assert_int_equal(append(t, "MSH|^~\\&|A\r"), 4 + i);
	assert_int_equal(store_txn_commit(t), 0);
	assert_int_equal(stats_of(s).messages, 5003);
	assert_int_equal(stats_of(s).last_seq, 5003);
	store_close(s);
}

/* A store made before the histtype and idxrev databases existed (schema 1 all the same). */
static void
test_older_store(void **state)
{
	fixture_t *f = *state;
	store_t *s = open_store(f, 0, false);
	store_opts_t ro = {.read_only = true};
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;

	append_n(s, 2);
	store_close(s);
	assert_int_equal(mdb_env_create(&env), 0);
	assert_int_equal(mdb_env_set_maxdbs(env, 16), 0);
	assert_int_equal(mdb_env_open(env, f->dir, 0, 0600), 0);
	assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
	assert_int_equal(mdb_dbi_open(txn, "idxrev", 0, &dbi), 0);
	assert_int_equal(mdb_drop(txn, dbi, 1), 0);
	assert_int_equal(mdb_dbi_open(txn, "histtype", 0, &dbi), 0);
	assert_int_equal(mdb_drop(txn, dbi, 1), 0);
	assert_int_equal(mdb_dbi_open(txn, "audit", 0, &dbi), 0);
	assert_int_equal(mdb_drop(txn, dbi, 1), 0);
	assert_int_equal(mdb_dbi_open(txn, "auditref", 0, &dbi), 0);
	assert_int_equal(mdb_drop(txn, dbi, 1), 0);
	assert_int_equal(mdb_txn_commit(txn), 0);
	mdb_env_close(env);

	/* A reader cannot add them and says what to do; a writer adds them. */
	assert_int_equal(store_open(f->dir, &ro, &s), -FG_ENOTFOUND);
	assert_non_null(strstr(store_last_error(), "older fhirgate"));
	s = open_store(f, 0, false);
	store_close(s);
	s = open_store(f, 0, true);
	assert_int_equal(stats_of(s).messages, 2);
	store_close(s);
}

static void
test_schema_newer(void **state)
{
	fixture_t *f = *state;
	store_t *s = open_store(f, 0, false);
	const unsigned char v2[4] = {0, 0, 0, 2};

	store_close(s);
	raw_put(f, "meta", "schema_version", 14, v2, sizeof(v2));
	assert_int_equal(store_open(f->dir, NULL, &s), -FG_EUNSUPPORTED);
	assert_null(s);
	assert_non_null(strstr(store_last_error(), "schema version 2"));
	store_opts_t ro = {.read_only = true};
	assert_int_equal(store_open(f->dir, &ro, &s), -FG_EUNSUPPORTED);
}

/* Checkpoints: put, replace, get, delete; committed with the transaction or not at all; not
 * mistaken for other meta records (verify is clean). */
static void
test_checkpoint(void **state)
{
	fixture_t *f = *state;
	store_t *s = open_store(f, 0, false);
	store_txn_t *t;
	slice_t v;
	report_t r;
	char big[STORE_CHECKPOINT_VALUE_MAX + 1];

	memset(big, 'x', sizeof(big));
	assert_int_equal(store_txn_begin(s, true, &t), 0);
	assert_int_equal(store_checkpoint_get(t, SLICE_LIT("import:ab"), &v), -FG_ENOTFOUND);
	assert_int_equal(store_checkpoint_put(t, SLICE_LIT("import:ab"), SLICE_LIT("one")), 0);
	assert_int_equal(store_checkpoint_put(t, SLICE_LIT("import:ab"), SLICE_LIT("two")), 0);
	assert_int_equal(store_txn_commit(t), 0);
	assert_int_equal(store_txn_begin(s, true, &t), 0);
	assert_int_equal(store_checkpoint_get(t, SLICE_LIT("import:ab"), &v), 0);
	assert_true(slice_eq_cstr(v, "two"));
	assert_int_equal(store_checkpoint_del(t, SLICE_LIT("import:ab")), 0);
	store_txn_abort(t);
	assert_int_equal(store_txn_begin(s, false, &t), 0);
	assert_int_equal(store_checkpoint_get(t, SLICE_LIT("import:ab"), &v), 0);
	store_txn_abort(t);
	assert_int_equal(verify(s, &r), 0);
	assert_int_equal(r.n, 0);
	assert_int_equal(store_txn_begin(s, true, &t), 0);
	assert_int_equal(store_checkpoint_del(t, SLICE_LIT("import:ab")), 0);
	assert_int_equal(store_checkpoint_del(t, SLICE_LIT("import:ab")), 0);
	assert_int_equal(store_txn_commit(t), 0);
	assert_int_equal(store_txn_begin(s, true, &t), 0);
	assert_int_equal(store_checkpoint_get(t, SLICE_LIT("import:ab"), &v), -FG_ENOTFOUND);
	assert_int_equal(
	    store_checkpoint_put(t, SLICE_LIT("import:ab"), slice_make(big, sizeof(big))),
	    -FG_EINVAL);
	assert_int_equal(store_txn_commit(t), -FG_EINVAL);
	store_close(s);
}

/* Collects the keys an audit walk visits (and checks each body is the one appended). */
typedef struct {
	uint64_t keys[64];
	size_t n, stop_after;
} audit_seen_t;

static int
audit_collect(void *ctx, const store_audit_t *r)
{
	audit_seen_t *a = ctx;
	char want[32];

	snprintf(want, sizeof(want), "ev%llu", (unsigned long long)(r->key % 1000));
	assert_true(slice_eq_cstr(r->body, want));
	a->keys[a->n++] = r->key;
	return a->stop_after != 0 && a->n == a->stop_after ? 7 : 0;
}

static uint64_t
audit_add(store_txn_t *t, uint64_t time_ns, const char *ref)
{
	slice_t refs[2] = {ref != NULL ? slice_cstr(ref) : SLICE_NULL, SLICE_LIT("all|Group")};
	uint64_t key = 0;
	char body[32];

	assert_int_equal(store_audit_next_key(t, time_ns, &key), 0);
	snprintf(body, sizeof(body), "ev%llu", (unsigned long long)(key % 1000));
	assert_int_equal(store_audit_append(t, key, slice_cstr(body), ref != NULL ? refs : refs + 1,
					    ref != NULL ? 2 : 1),
			 0);
	return key;
}

/* The audit trail: keys only grow (a time that goes back gets the last key + 1), records and
 * reference entries (one sorted run per transaction) come back in either order within a key
 * range, paging stops where the callback says, bad appends are refused (and a failed
 * transaction leaves no run), stats and verify count them. */
static void
test_audit_trail(void **state)
{
	fixture_t *f = *state;
	store_t *s = open_store(f, 0, false);
	store_txn_t *t;
	store_audit_t r;
	audit_seen_t a = {0};
	uint64_t k[5], key;
	slice_t bad[1] = {SLICE_LIT("a\0b")};

	assert_int_equal(store_txn_begin(s, true, &t), 0);
	k[0] = audit_add(t, 5000, "1|Patient");
	k[1] = audit_add(t, 6000, NULL);
	k[2] = audit_add(t, 4000, "1|Patient"); /* the clock went back: 6001 */
	assert_int_equal(k[0], 5000);
	assert_int_equal(k[1], 6000);
	assert_int_equal(k[2], 6001);
	assert_int_equal(store_txn_commit(t), 0);

	/* A later transaction continues above the last key. */
	assert_int_equal(store_txn_begin(s, true, &t), 0);
	k[3] = audit_add(t, 6001, "2|Patient");
	k[4] = audit_add(t, 9000, "1|Patient");
	assert_int_equal(k[3], 6002);
	/* Not above the last key, an empty body or a ref with a NUL: refused, sticky. */
	assert_int_equal(store_audit_append(t, 9000, SLICE_LIT("x"), NULL, 0), -FG_EINVAL);
	assert_int_equal(store_txn_commit(t), -FG_EINVAL);
	assert_int_equal(store_txn_begin(s, true, &t), 0);
	k[3] = audit_add(t, 6001, "2|Patient");
	k[4] = audit_add(t, 9000, "1|Patient");
	assert_int_equal(store_txn_commit(t), 0);
	assert_int_equal(store_txn_begin(s, true, &t), 0);
	assert_int_equal(store_audit_append(t, 9999, slice_make("", 0), NULL, 0), -FG_EINVAL);
	store_txn_abort(t);
	assert_int_equal(store_txn_begin(s, true, &t), 0);
	bad[0] = slice_make("a\0b", 3);
	assert_int_equal(store_audit_append(t, 9999, SLICE_LIT("x"), bad, 1), -FG_EINVAL);
	store_txn_abort(t);

	assert_int_equal(store_txn_begin(s, false, &t), 0);
	assert_int_equal(store_audit_get(t, 6001, &r), 0);
	assert_true(slice_eq_cstr(r.body, "ev1"));
	assert_int_equal(store_audit_get(t, 6003, &r), -FG_ENOTFOUND);
	/* All, oldest first; newest first; a range; a range from the top. */
	assert_int_equal(store_audit_foreach(t, 0, UINT64_MAX, false, audit_collect, &a), 0);
	assert_int_equal(a.n, 5);
	for (size_t i = 0; i < 5; i++)
		assert_int_equal(a.keys[i], k[i]);
	a.n = 0;
	assert_int_equal(store_audit_foreach(t, 0, UINT64_MAX, true, audit_collect, &a), 0);
	assert_int_equal(a.n, 5);
	assert_int_equal(a.keys[0], 9000);
	assert_int_equal(a.keys[4], 5000);
	a.n = 0;
	assert_int_equal(store_audit_foreach(t, 6000, 6002, false, audit_collect, &a), 0);
	assert_int_equal(a.n, 2);
	assert_int_equal(a.keys[1], 6001);
	a.n = 0;
	assert_int_equal(store_audit_foreach(t, 6000, 6002, true, audit_collect, &a), 0);
	assert_int_equal(a.n, 2);
	assert_int_equal(a.keys[0], 6001);
	a.n = 0;
	assert_int_equal(store_audit_foreach(t, 7000, 6000, false, audit_collect, &a), 0);
	assert_int_equal(a.n, 0);
	/* The callback stops the walk with its value. */
	a = (audit_seen_t){.stop_after = 2};
	assert_int_equal(store_audit_foreach(t, 0, UINT64_MAX, true, audit_collect, &a), 7);
	assert_int_equal(a.n, 2);

	/* By reference: exact, in either order, within the range. */
	a = (audit_seen_t){0};
	assert_int_equal(store_audit_foreach_ref(t, SLICE_LIT("1|Patient"), 0, UINT64_MAX, false,
						 audit_collect, &a),
			 0);
	assert_int_equal(a.n, 3);
	assert_int_equal(a.keys[0], 5000);
	assert_int_equal(a.keys[1], 6001);
	assert_int_equal(a.keys[2], 9000);
	a.n = 0;
	assert_int_equal(
	    store_audit_foreach_ref(t, SLICE_LIT("1|Patient"), 5001, 9000, true, audit_collect, &a),
	    0);
	assert_int_equal(a.n, 1);
	assert_int_equal(a.keys[0], 6001);
	a.n = 0;
	assert_int_equal(store_audit_foreach_ref(t, SLICE_LIT("1|Patien"), 0, UINT64_MAX, false,
						 audit_collect, &a),
			 0);
	assert_int_equal(a.n, 0);
	a.n = 0;
	assert_int_equal(store_audit_foreach_ref(t, SLICE_LIT("all|Group"), 0, UINT64_MAX, true,
						 audit_collect, &a),
			 0);
	assert_int_equal(a.n, 5);
	assert_int_equal(a.keys[0], 9000);
	assert_int_equal(store_verify(t, NULL, NULL), 0);
	assert_int_equal(store_txn_commit(t), 0);
	assert_int_equal(stats_of(s).audit, 5);
	assert_int_equal(stats_of(s).audit_refs, 2); /* one run per transaction */
	/* Writes only in write transactions. */
	assert_int_equal(store_txn_begin(s, false, &t), 0);
	assert_int_equal(store_audit_next_key(t, 1, &key), -FG_EINVAL);
	store_txn_abort(t);
	store_close(s);

	/* verify finds a run entry whose record is gone and a record that does not decode. */
	{
		unsigned char run[1 + 2 + 9 + 8] = {1,   0,   9,   '9', '|',  'P', 'a',
						    't', 'i', 'e', 'n', 't',  0,   0,
						    0,   0,   0,   0,   0x30, 0x3a};
		unsigned char rk[8] = {0, 0, 0, 0, 0, 0, 0x30, 0x3a};
		unsigned char ak[8] = {0, 0, 0, 0, 0, 0, 0x30, 0x39};

		raw_put(f, "auditref", rk, sizeof(rk), run, sizeof(run));
		raw_put(f, "audit", ak, sizeof(ak), "\x09x", 2);
	}
	s = open_store(f, 0, true);
	assert_int_equal(store_txn_begin(s, false, &t), 0);
	assert_int_equal(store_verify(t, NULL, NULL), 2);
	store_txn_abort(t);
	store_close(s);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    T(test_open_create),     T(test_append_get),  T(test_set_status),
	    T(test_msgkey),          T(test_dead),        T(test_foreach),
	    T(test_stats),           T(test_verify),      T(test_sticky_invalid),
	    T(test_sticky_map_full), T(test_reopen),      T(test_two_processes),
	    T(test_read_only),       T(test_abort),       T(test_batch),
	    T(test_schema_newer),    T(test_older_store), T(test_checkpoint),
	    T(test_audit_trail),
	};

	return cmocka_run_group_tests_name("store", tests, NULL, NULL);
}
