/* The audit trail: opaque records appended under strictly increasing keys (one MDB_APPEND put
 * each, on the rightmost leaf) and a small index from reference strings to record keys. */
#include "config.h"

#include <stdint.h>
#include <string.h>

#include "lib/buf.h"
#include "lib/err.h"
#include "store/store.h"
#include "store/store_int.h"

/* audit value, format 1: format byte, then the body. */
#define STORE_AUDIT_FORMAT 1
/* auditref key: the ref, a 0 byte, be64 audit key; empty value. */
#define STORE_AUDITREF_KEY_MAX (STORE_AUDIT_REF_MAX + 9)

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

static MDB_val
store_auditref_key(unsigned char *kb, slice_t ref, uint64_t key)
{
	memcpy(kb, ref.ptr, ref.len);
	kb[ref.len] = 0;
	store_be64_put(kb + ref.len + 1, key);
	return (MDB_val){ref.len + 9, kb};
}

int
store_audit_append(store_txn_t *t, uint64_t key, slice_t body, const slice_t *refs, size_t nrefs)
{
	unsigned char kb[8], rb[STORE_AUDITREF_KEY_MAX];
	MDB_val k = store_seq_key(kb, key), v = {body.len + 1, NULL}, rk, rv = {0, NULL};
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
		if (dup)
			continue;
		rk = store_auditref_key(rb, refs[i], key);
		rc = mdb_put(t->txn, t->s->dbi[STORE_DB_AUDITREF], &rk, &rv, 0);
		if (rc != 0)
			return store_txn_fail(t, store_mdb_fail("audit append", rc));
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
	MDB_val k = store_seq_key(kb, key), v;
	int rc;

	if ((rc = store_txn_check(t, false, "audit get")) < 0)
		return rc;
	rc = mdb_get(t->txn, t->s->dbi[STORE_DB_AUDIT], &k, &v);
	if (rc != 0)
		return store_txn_fail(t, store_mdb_fail("audit get", rc));
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
store_auditref_visit(void *ctx, const MDB_val *k, const MDB_val *v)
{
	store_audit_walk_t *w = ctx;
	const unsigned char *p = k->mv_data;

	(void)v;
	if (k->mv_size != w->ref.len + 9 || memcmp(p, w->ref.ptr, w->ref.len) != 0 ||
	    p[w->ref.len] != 0)
		return 1; /* another reference */
	return store_audit_visit_key(w, be64_read(p + w->ref.len + 1), NULL);
}

static int
store_audit_walk(store_audit_walk_t *w, int db, MDB_val from)
{
	int rc;

	if (w->lo >= w->hi)
		return 0;
	rc = store_walk(w->t, db, from, w->desc,
			db == STORE_DB_AUDIT ? store_audit_visit : store_auditref_visit, w);
	if (rc < 0)
		return rc;
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
	return store_audit_walk(&w, STORE_DB_AUDIT, store_seq_key(kb, desc ? hi : lo));
}

int
store_audit_foreach_ref(store_txn_t *t, slice_t ref, uint64_t lo, uint64_t hi, bool desc,
			store_audit_cb cb, void *ctx)
{
	store_audit_walk_t w = {t, ref, lo, hi, desc, cb, ctx, 0};
	unsigned char kb[STORE_AUDITREF_KEY_MAX];
	int rc;

	if ((rc = store_txn_check(t, false, "audit foreach ref")) < 0)
		return rc;
	if (!store_auditref_ok(ref))
		return 0; /* nothing is indexed under it */
	return store_audit_walk(&w, STORE_DB_AUDITREF, store_auditref_key(kb, ref, desc ? hi : lo));
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

static int
store_audit_verify_ref(void *ctx, const MDB_val *k, const MDB_val *v)
{
	store_verify_t *vf = ctx;
	const unsigned char *p = k->mv_data;
	unsigned char kb[8];
	MDB_val ak, av;
	int rc;

	if (k->mv_size < 10 || p[k->mv_size - 9] != 0 || v->mv_size != 0 ||
	    memchr(p, 0, k->mv_size - 9) != NULL) {
		store_verify_problem(vf, "auditref: an entry of %zu bytes does not decode",
				     k->mv_size);
		return 0;
	}
	ak = store_seq_key(kb, be64_read(p + k->mv_size - 8));
	rc = mdb_get(vf->t->txn, vf->t->s->dbi[STORE_DB_AUDIT], &ak, &av);
	if (rc == MDB_NOTFOUND)
		store_verify_problem(vf, "auditref: names audit %llu, which does not exist",
				     (unsigned long long)be64_read(kb));
	else if (rc != 0)
		return store_txn_fail(vf->t, store_mdb_fail("verify", rc));
	return 0;
}

int
store_audit_verify(store_verify_t *vf)
{
	int rc;

	if ((rc = store_range(vf->t, STORE_DB_AUDIT, NULL, store_audit_verify_rec, vf)) < 0)
		return rc;
	return store_range(vf->t, STORE_DB_AUDITREF, NULL, store_audit_verify_ref, vf);
}
