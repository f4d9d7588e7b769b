/* The audit trail: opaque records appended under strictly increasing keys (one MDB_APPEND put
 * each, on the rightmost leaf) and an index from reference strings to record keys written as
 * one sorted run per transaction (one more appended record per commit, however many events it
 * holds: no page of an older part of the index is rewritten). */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"
#include "lib/err.h"
#include "lib/xalloc.h"
#include "store/store.h"
#include "store/store_int.h"

/* audit value, format 1: format byte, then the body. */
#define STORE_AUDIT_FORMAT 1
/* auditref: one run per write transaction that appended events with references, keyed by the
 * first audit key of the transaction (so each run's keys lie between its key and the next run's).
 * Value, format 1: format byte, then entries sorted by ref bytes and then key, each a be16 ref
 * length, the ref and a be64 audit key. */
#define STORE_AUDITREF_FORMAT 1

struct store_aref {
	size_t off; /* in aref_bytes */
	uint16_t len;
	uint64_t key;
};

static int
store_audit_last(store_txn_t *t)
{
	int rc;

	if (t->have_audit)
		return 0;
	if ((rc = store_last_key(t, STORE_DB_AUDIT, &t->audit_last)) < 0)
		return rc;
	t->have_audit = true;
	return 0;
}

int
store_audit_next_key(store_txn_t *t, uint64_t time_ns, uint64_t *key)
{
	int rc;

	if ((rc = store_txn_check(t, true, "audit next key")) < 0)
		return store_txn_fail(t, rc);
	if ((rc = store_audit_last(t)) < 0)
		return rc;
	if (t->audit_last == UINT64_MAX - 1) {
		store_error_set("audit: no key left");
		return store_txn_fail(t, -FG_EFULL);
	}
	*key = time_ns > t->audit_last ? time_ns : t->audit_last + 1;
	return 0;
}

static bool
store_auditref_ok(slice_t ref)
{
	return ref.len > 0 && ref.len <= STORE_AUDIT_REF_MAX && memchr(ref.ptr, 0, ref.len) == NULL;
}

/* Adds one entry to the transaction's run. */
static void
store_aref_add(store_txn_t *t, slice_t ref, uint64_t key)
{
	struct store_aref *e;

	if (t->aref_n == t->aref_cap) {
		t->aref_cap = t->aref_cap ? t->aref_cap * 2 : 256;
		t->aref = xreallocarray(t->aref, t->aref_cap, sizeof(*t->aref));
	}
	if (t->aref_bytes_cap - t->aref_len < ref.len) {
		while (t->aref_bytes_cap - t->aref_len < ref.len)
			t->aref_bytes_cap = t->aref_bytes_cap ? t->aref_bytes_cap * 2 : 8192;
		t->aref_bytes = xreallocarray(t->aref_bytes, t->aref_bytes_cap, 1);
	}
	memcpy(t->aref_bytes + t->aref_len, ref.ptr, ref.len);
	e = &t->aref[t->aref_n++];
	*e = (struct store_aref){t->aref_len, (uint16_t)ref.len, key};
	t->aref_len += ref.len;
}

/* qsort has no context argument: the bytes of the run being sorted, in this thread. */
static _Thread_local const char *aref_sort_bytes;

static int
store_aref_cmp(const void *x, const void *y)
{
	const struct store_aref *a = x, *b = y;
	size_t n = a->len < b->len ? a->len : b->len;
	int r = memcmp(aref_sort_bytes + a->off, aref_sort_bytes + b->off, n);

	if (r != 0)
		return r;
	if (a->len != b->len)
		return a->len < b->len ? -1 : 1;
	return (a->key > b->key) - (a->key < b->key);
}

int
store_audit_txn_commit(store_txn_t *t)
{
	unsigned char kb[8], *p;
	MDB_val k, v;
	size_t len = 1;
	int rc;

	if (t->aref_n == 0)
		return 0;
	aref_sort_bytes = t->aref_bytes;
	qsort(t->aref, t->aref_n, sizeof(*t->aref), store_aref_cmp);
	for (size_t i = 0; i < t->aref_n; i++)
		len += 2 + t->aref[i].len + 8;
	/* keys only grow, so the run's key (its first event's) is above every earlier run's */
	k = store_seq_key(kb, t->aref[0].key);
	for (size_t i = 1; i < t->aref_n; i++)
		if (t->aref[i].key < be64_read(kb))
			store_be64_put(kb, t->aref[i].key);
	v = (MDB_val){len, NULL};
	rc = mdb_put(t->txn, t->s->dbi[STORE_DB_AUDITREF], &k, &v, MDB_APPEND | MDB_RESERVE);
	if (rc != 0)
		return store_txn_fail(t, store_mdb_fail("audit index run", rc));
	p = v.mv_data;
	*p++ = STORE_AUDITREF_FORMAT;
	for (size_t i = 0; i < t->aref_n; i++) {
		p = store_lpstr_put(p, slice_make(t->aref_bytes + t->aref[i].off, t->aref[i].len));
		store_be64_put(p, t->aref[i].key);
		p += 8;
	}
	return 0;
}

void
store_audit_txn_free(store_txn_t *t)
{
	free(t->aref);
	free(t->aref_bytes);
	t->aref = NULL;
	t->aref_bytes = NULL;
	t->aref_n = t->aref_cap = t->aref_len = t->aref_bytes_cap = 0;
}

int
store_audit_append(store_txn_t *t, uint64_t key, slice_t body, const slice_t *refs, size_t nrefs)
{
	unsigned char kb[8];
	MDB_val k = store_seq_key(kb, key), v = {body.len + 1, NULL};
	int rc;

	if ((rc = store_txn_check(t, true, "audit append")) < 0)
		return store_txn_fail(t, rc);
	if ((rc = store_audit_last(t)) < 0)
		return rc;
	if (key <= t->audit_last || key == UINT64_MAX || body.len == 0) {
		store_error_set("audit append: key %llu not above the last (%llu), or empty body",
				(unsigned long long)key, (unsigned long long)t->audit_last);
		return store_txn_fail(t, -FG_EINVAL);
	}
	for (size_t i = 0; i < nrefs; i++)
		if (!store_auditref_ok(refs[i])) {
			store_error_set("audit append: a reference is empty, longer than %d bytes "
					"or holds a NUL byte",
					STORE_AUDIT_REF_MAX);
			return store_txn_fail(t, -FG_EINVAL);
		}
	rc = mdb_put(t->txn, t->s->dbi[STORE_DB_AUDIT], &k, &v, MDB_APPEND | MDB_RESERVE);
	if (rc != 0)
		return store_txn_fail(t, store_mdb_fail("audit append", rc));
	*(unsigned char *)v.mv_data = STORE_AUDIT_FORMAT;
	memcpy((unsigned char *)v.mv_data + 1, body.ptr, body.len);
	t->audit_last = key;
	for (size_t i = 0; i < nrefs; i++) {
		bool dup = false;

		for (size_t j = 0; j < i && !dup; j++)
			dup = slice_eq(refs[i], refs[j]);
		if (!dup)
			store_aref_add(t, refs[i], key);
	}
	return 0;
}

static int
store_audit_decode(const MDB_val *k, const MDB_val *v, store_audit_t *out)
{
	const unsigned char *p = v->mv_data;

	if (k->mv_size != 8 || v->mv_size < 2 || p[0] != STORE_AUDIT_FORMAT)
		return -1;
	out->key = be64_read(k->mv_data);
	out->body = slice_make((const char *)p + 1, v->mv_size - 1);
	return 0;
}

static int
store_audit_corrupt(store_txn_t *t, uint64_t key)
{
	store_error_set("audit %llu: record does not decode", (unsigned long long)key);
	return store_txn_fail(t, -FG_ESTORE);
}

int
store_audit_get(store_txn_t *t, uint64_t key, store_audit_t *out)
{
	unsigned char kb[8];
	MDB_val k, v;
	int rc;

	if ((rc = store_seq_get(t, STORE_DB_AUDIT, key, "audit get", kb, &k, &v)) < 0)
		return rc;
	if (store_audit_decode(&k, &v, out) < 0)
		return store_audit_corrupt(t, key);
	return 0;
}

/* Positions c on the first key >= from (asc) or the last key < from (desc). */
static int
store_cursor_start(MDB_cursor *c, MDB_val *k, MDB_val *v, bool desc)
{
	int rc = mdb_cursor_get(c, k, v, MDB_SET_RANGE);

	if (!desc)
		return rc;
	if (rc == MDB_NOTFOUND)
		return mdb_cursor_get(c, k, v, MDB_LAST);
	return rc != 0 ? rc : mdb_cursor_get(c, k, v, MDB_PREV);
}

/* Walks db from the key from (see store_cursor_start); visit returns 1 to stop quietly (past
 * the range), another non-zero value to stop with it. */
static int
store_walk(store_txn_t *t, int db, MDB_val from, bool desc, store_visit_fn visit, void *ctx)
{
	MDB_cursor *c;
	MDB_val k = from, v;
	int rc, ret = 0;

	rc = mdb_cursor_open(t->txn, t->s->dbi[db], &c);
	if (rc != 0)
		return store_txn_fail(t, store_mdb_fail(store_dbs[db].name, rc));
	for (rc = store_cursor_start(c, &k, &v, desc); rc == 0;
	     rc = mdb_cursor_get(c, &k, &v, desc ? MDB_PREV : MDB_NEXT))
		if ((ret = visit(ctx, &k, &v)) != 0)
			break;
	mdb_cursor_close(c);
	if (ret != 0)
		return ret;
	if (rc != MDB_NOTFOUND)
		return store_txn_fail(t, store_mdb_fail(store_dbs[db].name, rc));
	return 0;
}

typedef struct {
	store_txn_t *t;
	slice_t ref; /* foreach_ref: the keys' prefix (without the 0 byte) */
	uint64_t lo, hi;
	bool desc;
	store_audit_cb cb;
	void *ctx;
	int ret; /* the callback's non-zero return */
} store_audit_walk_t;

/* 0 to go on, 1 to stop (out of range, or the callback said so: w->ret). */
static int
store_audit_visit_key(store_audit_walk_t *w, uint64_t key, const MDB_val *v)
{
	store_audit_t r;
	MDB_val k;
	unsigned char kb[8];
	int rc;

	if (key < w->lo || key >= w->hi)
		return 1;
	if (v == NULL) {
		if ((rc = store_audit_get(w->t, key, &r)) < 0) {
			if (rc == -FG_ENOTFOUND) {
				store_error_set("auditref: names audit %llu, which does not exist",
						(unsigned long long)key);
				rc = store_txn_fail(w->t, -FG_ESTORE);
			}
			w->ret = rc;
			return 1;
		}
	} else {
		k = store_seq_key(kb, key);
		if (store_audit_decode(&k, v, &r) < 0) {
			w->ret = store_audit_corrupt(w->t, key);
			return 1;
		}
	}
	w->ret = w->cb(w->ctx, &r);
	return w->ret != 0;
}

static int
store_audit_visit(void *ctx, const MDB_val *k, const MDB_val *v)
{
	store_audit_walk_t *w = ctx;

	if (k->mv_size != 8) {
		w->ret = store_audit_corrupt(w->t, 0);
		return 1;
	}
	return store_audit_visit_key(w, be64_read(k->mv_data), v);
}

static int
store_audit_walk(store_audit_walk_t *w, MDB_val from)
{
	int rc;

	if (w->lo >= w->hi)
		return 0;
	rc = store_walk(w->t, STORE_DB_AUDIT, from, w->desc, store_audit_visit, w);
	if (rc < 0)
		return rc;
	return w->ret;
}

/* Bytewise, then shorter first: the order of a run's refs. */
static int
store_bytes_cmp(slice_t a, slice_t b)
{
	int r = a.len > 0 && b.len > 0 ? memcmp(a.ptr, b.ptr, a.len < b.len ? a.len : b.len) : 0;

	return r != 0 ? r : (a.len > b.len) - (a.len < b.len);
}

/* One auditref run: its entries for w->ref in [lo, hi), in w's order. 0 to go on, 1 to stop. */
static int
store_auditref_run(store_audit_walk_t *w, const MDB_val *k, const MDB_val *v)
{
	const unsigned char *p = v->mv_data, *end = p + v->mv_size;
	uint64_t stack[64], *keys = stack;
	size_t n = 0, cap = 64;
	int ret = 0;

	if (k->mv_size != 8 || v->mv_size < 1 || *p++ != STORE_AUDITREF_FORMAT)
		goto corrupt;
	while (p < end) {
		slice_t ref;
		int r;

		if (store_lpstr_take(&p, end, &ref) < 0 || end - p < 8)
			goto corrupt;
		r = store_bytes_cmp(ref, w->ref);
		if (r > 0)
			break; /* sorted: the rest come after it */
		if (r == 0) {
			uint64_t key = be64_read(p);

			if (key >= w->lo && key < w->hi) {
				if (n == cap) {
					cap *= 2;
					keys = keys == stack
						   ? memcpy(xmalloc(cap * sizeof(*keys)), stack,
							    sizeof(stack))
						   : xreallocarray(keys, cap, sizeof(*keys));
				}
				keys[n++] = key;
			}
		}
		p += 8;
	}
	for (size_t i = 0; i < n && ret == 0; i++)
		ret = store_audit_visit_key(w, keys[w->desc ? n - 1 - i : i], NULL);
	if (keys != stack)
		free(keys);
	return ret;
corrupt:
	if (keys != stack)
		free(keys);
	store_error_set("auditref: a run of %zu bytes does not decode", v->mv_size);
	w->ret = store_txn_fail(w->t, -FG_ESTORE);
	return 1;
}

/* The runs that can hold keys in [lo, hi) (a run holds keys from its own key up to the next
 * run's), in w's order. */
static int
store_auditref_walk(store_audit_walk_t *w)
{
	MDB_cursor *c;
	MDB_val k, v;
	unsigned char kb[8];
	int rc, ret = 0;

	if (w->lo >= w->hi)
		return 0;
	rc = mdb_cursor_open(w->t->txn, w->t->s->dbi[STORE_DB_AUDITREF], &c);
	if (rc != 0)
		return store_txn_fail(w->t, store_mdb_fail("auditref", rc));
	k = store_seq_key(kb, w->desc ? w->hi : w->lo);
	rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
	if (rc == MDB_NOTFOUND)
		rc = mdb_cursor_get(c, &k, &v, MDB_LAST);
	else if (rc == 0 && (w->desc || be64_read(k.mv_data) != w->lo))
		rc = mdb_cursor_get(c, &k, &v, MDB_PREV);
	if (rc == MDB_NOTFOUND && !w->desc)
		rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
	for (; rc == 0; rc = mdb_cursor_get(c, &k, &v, w->desc ? MDB_PREV : MDB_NEXT)) {
		uint64_t run = k.mv_size == 8 ? be64_read(k.mv_data) : 0;

		if (!w->desc && run >= w->hi)
			break;
		if ((ret = store_auditref_run(w, &k, &v)) != 0)
			break;
		if (w->desc && run <= w->lo)
			break; /* the runs before it hold keys below lo */
	}
	mdb_cursor_close(c);
	if (ret == 0 && rc != 0 && rc != MDB_NOTFOUND)
		return store_txn_fail(w->t, store_mdb_fail("auditref", rc));
	return w->ret;
}

int
store_audit_foreach(store_txn_t *t, uint64_t lo, uint64_t hi, bool desc, store_audit_cb cb,
		    void *ctx)
{
	store_audit_walk_t w = {t, SLICE_NULL, lo, hi, desc, cb, ctx, 0};
	unsigned char kb[8];
	int rc;

	if ((rc = store_txn_check(t, false, "audit foreach")) < 0)
		return rc;
	return store_audit_walk(&w, store_seq_key(kb, desc ? hi : lo));
}

int
store_audit_foreach_ref(store_txn_t *t, slice_t ref, uint64_t lo, uint64_t hi, bool desc,
			store_audit_cb cb, void *ctx)
{
	store_audit_walk_t w = {t, ref, lo, hi, desc, cb, ctx, 0};
	int rc;

	if ((rc = store_txn_check(t, false, "audit foreach ref")) < 0)
		return rc;
	if (!store_auditref_ok(ref))
		return 0; /* nothing is indexed under it */
	return store_auditref_walk(&w);
}

int
store_audit_stats(store_txn_t *t, store_stats_t *out)
{
	MDB_stat st;
	int rc;

	rc = mdb_stat(t->txn, t->s->dbi[STORE_DB_AUDIT], &st);
	if (rc != 0)
		return store_txn_fail(t, store_mdb_fail("stats", rc));
	out->audit = st.ms_entries;
	rc = mdb_stat(t->txn, t->s->dbi[STORE_DB_AUDITREF], &st);
	if (rc != 0)
		return store_txn_fail(t, store_mdb_fail("stats", rc));
	out->audit_refs = st.ms_entries;
	return 0;
}

/* Verification: records decode, keys only grow (they are u64 keys: LMDB orders them), and each
 * auditref entry names a record. */

static int
store_audit_verify_rec(void *ctx, const MDB_val *k, const MDB_val *v)
{
	store_audit_t r;

	if (store_audit_decode(k, v, &r) < 0)
		store_verify_problem(ctx,
				     "audit: a record of %zu bytes under a key of %zu bytes "
				     "does not decode",
				     v->mv_size, k->mv_size);
	else if (r.key == 0 || r.key == UINT64_MAX)
		store_verify_problem(ctx, "audit %llu: key never handed out",
				     (unsigned long long)r.key);
	return 0;
}

typedef struct {
	store_verify_t *vf;
	uint64_t prev_run, prev_max; /* the run before: its key and its largest entry's */
	bool have_prev;
} store_aref_verify_t;

/* Checks one run: it decodes, its entries are sorted, each names a record, none lies below the
 * run's key and the run before holds none at or above it. */
static int
store_audit_verify_ref(void *ctx, const MDB_val *k, const MDB_val *v)
{
	store_aref_verify_t *av = ctx;
	store_verify_t *vf = av->vf;
	const unsigned char *p = v->mv_data, *end = p + v->mv_size;
	slice_t prev_ref = SLICE_NULL;
	uint64_t run, prev_key = 0, max_key = 0;
	unsigned char kb[8];
	MDB_val ak, avv;
	int rc;

	if (k->mv_size != 8 || v->mv_size < 1 || *p++ != STORE_AUDITREF_FORMAT) {
		store_verify_problem(vf, "auditref: a run of %zu bytes does not decode",
				     v->mv_size);
		return 0;
	}
	run = be64_read(k->mv_data);
	if (av->have_prev && av->prev_max >= run)
		store_verify_problem(vf,
				     "auditref %llu: the run before holds keys from this one on",
				     (unsigned long long)av->prev_run);
	while (p < end) {
		slice_t ref;
		uint64_t key;

		if (store_lpstr_take(&p, end, &ref) < 0 || end - p < 8 || ref.len == 0) {
			store_verify_problem(vf, "auditref %llu: the run does not decode",
					     (unsigned long long)run);
			return 0;
		}
		key = be64_read(p);
		p += 8;
		if (prev_ref.ptr != NULL) {
			int r = store_bytes_cmp(prev_ref, ref);

			if (r > 0 || (r == 0 && prev_key >= key))
				store_verify_problem(vf, "auditref %llu: entries out of order",
						     (unsigned long long)run);
		}
		prev_ref = ref;
		prev_key = key;
		max_key = key > max_key ? key : max_key;
		if (key < run)
			store_verify_problem(vf, "auditref %llu: names audit %llu, below the run",
					     (unsigned long long)run, (unsigned long long)key);
		ak = store_seq_key(kb, key);
		rc = mdb_get(vf->t->txn, vf->t->s->dbi[STORE_DB_AUDIT], &ak, &avv);
		if (rc == MDB_NOTFOUND)
			store_verify_problem(
			    vf, "auditref %llu: names audit %llu, which does not exist",
			    (unsigned long long)run, (unsigned long long)key);
		else if (rc != 0)
			return store_txn_fail(vf->t, store_mdb_fail("verify", rc));
	}
	av->prev_run = run;
	av->prev_max = max_key;
	av->have_prev = true;
	return 0;
}

int
store_audit_verify(store_verify_t *vf)
{
	int rc;

	if ((rc = store_range(vf->t, STORE_DB_AUDIT, NULL, store_audit_verify_rec, vf)) < 0)
		return rc;
	store_aref_verify_t av = {.vf = vf};

	return store_range(vf->t, STORE_DB_AUDITREF, NULL, store_audit_verify_ref, &av);
}
