/* Private to store/: the handle and transaction structs and the helpers that store.c (message
 * log, work queue, open/commit) and resource.c (resources, history, indexes) share. */
#ifndef STORE_STORE_INT_H
#define STORE_STORE_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <lmdb.h>

#include "lib/slice.h"
#include "store/store.h"

/* Upper bound for key buffers; LMDB's default build allows 511 bytes. */
#define STORE_KEY_MAX 511

enum {
	STORE_DB_META,
	STORE_DB_MSG,
	STORE_DB_MSGKEY,
	STORE_DB_DEAD,
	STORE_DB_RES,
	STORE_DB_VER,
	STORE_DB_HIST,
	STORE_DB_HISTTYPE,
	STORE_DB_IDX,
	STORE_DB_IDXREV,
	STORE_DB_WORK,
	STORE_DB_AUDIT,
	STORE_DB_AUDITREF,
	STORE_DB_PEND,
	STORE_DB_COUNT
};

typedef struct {
	const char *name;
	unsigned flags;
	bool added; /* since schema 1: absent until a writer opens a store made before it */
} store_db_def_t;

extern const store_db_def_t store_dbs[STORE_DB_COUNT];

struct store {
	MDB_env *env;
	MDB_dbi dbi[STORE_DB_COUNT];
	size_t max_key; /* longest key LMDB accepts (at most STORE_KEY_MAX) */
	bool read_only;
	bool writemap;       /* MDB_WRITEMAP: dirty pages live in the map, not on the heap */
	uint64_t reserved;   /* bytes of data.mdb known to have disk blocks (store_reserve) */
	uint64_t max_growth; /* the most one write transaction grew the pages in use */
	char *dir;           /* the store's directory (bulk loads keep their runs below it) */
};

struct store_txn {
	store_t *s;
	MDB_txn *txn;
	uint64_t serial; /* store_txn_serial */
	int err;         /* sticky: the first failure of a write transaction */
	bool write;
	uint64_t start_used; /* writemap: bytes of pages in use when the transaction began */
	bool reserved_ahead; /* it reserved disk for itself (store_reserve_ahead) */
	bool have_last_seq;  /* last_seq is cached after the first append */
	bool have_hist;      /* hist_seq and hist_ns are cached after the first change */
	bool have_work;      /* work_last is cached after the first work item */
	bool have_audit;     /* audit_last is cached after the first audit key */
	uint64_t last_seq;
	uint64_t hist_seq; /* last change sequence */
	uint64_t hist_ns;  /* its lastUpdated: no later change gets an earlier one */
	uint64_t work_last;
	uint64_t audit_last; /* the last audit key in this transaction */
	/* A bulk load's resource pass: index entries that a write adds are left out (the load
	 * adds them afterwards, sorted); those it removes are removed. */
	bool idx_deferred;
	/* ... and its resources coming to life are counted here, per type, until the pass ends
	 * (store_count_flush): one count update per type instead of one per resource. */
	struct {
		char type[STORE_TYPE_MAX];
		size_t len;
		uint64_t n;
	} born[8];
	size_t nborn;
	/* This transaction's auditref entries, written as one sorted run at commit: ref bytes in
	 * aref_bytes, each entry's offset, length and audit key in aref. */
	struct store_aref *aref;
	size_t aref_n, aref_cap;
	char *aref_bytes;
	size_t aref_len, aref_bytes_cap;
	/* Cursors for point lookups, opened on first use and closed with the transaction, so a
	 * lookup costs no malloc. Iterations open their own: their callbacks may look things up. */
	MDB_cursor *cur[STORE_DB_COUNT];
};

void store_error_set(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Records a failed LMDB call (op names it) and maps its code to ours. */
int store_mdb_fail(const char *op, int rc);
/* A failure in a write transaction poisons it: later operations return err and commit aborts.
 * "Not found" is an answer, not a failure. Returns err. */
int store_txn_fail(store_txn_t *t, int err);
/* Entry check of every operation: the sticky error first, then writes only in write txns. */
int store_txn_check(store_txn_t *t, bool write, const char *op);
/* The transaction's cursor on db for point lookups (see cur above): 0 or a failure. */
int store_cursor(store_txn_t *t, int db, MDB_cursor **out);
/* Point writes through the transaction's cursor on db (LMDB keeps its place, so a write next to
 * the last one needs no descent from the root): as mdb_put and mdb_del (data NULL: the key),
 * returning LMDB's code. */
int store_cursor_put(store_txn_t *t, int db, MDB_val *k, MDB_val *v, unsigned flags);
int store_cursor_del(store_txn_t *t, int db, MDB_val *k, MDB_val *v);
/* As mdb_get through the transaction's cursor on db (k is left as it was). */
int store_cursor_get(store_txn_t *t, int db, MDB_val *k, MDB_val *v);
/* Closes the cached cursors (before the transaction ends). */
void store_cursors_close(store_txn_t *t);

/* Calls visit for each record of a database from key `from` (all records when from is NULL);
 * stops at visit's first non-zero return, which it returns. */
typedef int (*store_visit_fn)(void *ctx, const MDB_val *k, const MDB_val *v);
int store_range(store_txn_t *t, int db, const MDB_val *from, store_visit_fn visit, void *ctx);

/* A be16-length-prefixed string at *p, which it advances; -1 when it overruns end. */
int store_lpstr_take(const unsigned char **p, const unsigned char *end, slice_t *out);

typedef struct {
	store_txn_t *t;
	store_report_cb report;
	void *ctx;
	int problems;
	uint64_t work_last; /* meta's record: no work id beyond it */
} store_verify_t;

void store_verify_problem(store_verify_t *vf, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* resource.c's and audit.c's parts of store_stats and store_verify. */
int store_res_stats(store_txn_t *t, store_stats_t *out);
int store_res_verify(store_verify_t *vf);
int store_audit_stats(store_txn_t *t, store_stats_t *out);
/* bulk.c's: every pend record decodes and names a stored message. */
int store_pend_verify(store_verify_t *vf);
/* 0 when msg holds seq, 1 when it does not, or an error. */
int store_verify_msg_missing(store_verify_t *vf, uint64_t seq);
int store_audit_verify(store_verify_t *vf);
/* Writes the transaction's auditref run (before the commit); frees what it collected. */
int store_audit_txn_commit(store_txn_t *t);
void store_audit_txn_free(store_txn_t *t);
/* Checks a put's names, body and entries as store_res_put does: 0 or -FG_EINVAL/-FG_ETOOBIG
 * with the reason set (not sticky: no transaction is involved). */
int store_res_put_valid(const store_t *s, const store_res_put_t *p, const char *op);
/* Makes sure data.mdb has disk blocks for `bytes` more than the pages in use (writemap; see
 * store_reserve in store.c), for a transaction about to grow the store by about that much. */
int store_reserve_ahead(store_txn_t *t, uint64_t bytes);
/* Adds the counts collected in t->born to the per-type counts. */
int store_count_flush(store_txn_t *t);
/* The idx key of an entry in kb (at least STORE_KEY_MAX bytes); the caller checked its length. */
MDB_val store_idx_key(unsigned char *kb, slice_t type, slice_t code, slice_t value);

/* The last key of db (8 bytes) as this transaction sees it; 0 when db is empty. */
int store_last_key(store_txn_t *t, int db, uint64_t *out);

/* Big-endian writers into stack keys (lib's be*_read are the other side). */
static inline void
store_be16_put(unsigned char *p, uint16_t v)
{
	p[0] = (unsigned char)(v >> 8);
	p[1] = (unsigned char)v;
}

static inline void
store_be32_put(unsigned char *p, uint32_t v)
{
	store_be16_put(p, (uint16_t)(v >> 16));
	store_be16_put(p + 2, (uint16_t)v);
}

static inline void
store_be64_put(unsigned char *p, uint64_t v)
{
	store_be32_put(p, (uint32_t)(v >> 32));
	store_be32_put(p + 4, (uint32_t)v);
}

static inline unsigned char *
store_bytes_put(unsigned char *p, slice_t s)
{
	if (s.len > 0)
		memcpy(p, s.ptr, s.len);
	return p + s.len;
}

/* s with its be16 length in front; s.len must fit. */
static inline unsigned char *
store_lpstr_put(unsigned char *p, slice_t s)
{
	store_be16_put(p, (uint16_t)s.len);
	return store_bytes_put(p + 2, s);
}

static inline MDB_val
store_seq_key(unsigned char *kb, uint64_t seq)
{
	store_be64_put(kb, seq);
	return (MDB_val){8, kb};
}

/* Looks up the u64 key seq in db inside a read (or write) transaction: *k (in kb) and *v are
 * what the decoders take. 0, or an error (-FG_ENOTFOUND when absent) with op in the message. */
int store_seq_get(store_txn_t *t, int db, uint64_t seq, const char *op, unsigned char kb[8],
		  MDB_val *k, MDB_val *v);

#endif
