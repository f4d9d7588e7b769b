/* The LMDB store: message log, dedupe keys, dead letters, resources with their versions, history
 * and search indexes, and a work queue. It knows bytes and keys, not HL7 or FHIR. Only this layer
 * includes lmdb.h.
 *
 * Threads: one write transaction at a time per environment (LMDB serialises writers, also across
 * processes); read transactions may run in any thread (MDB_NOTLS). Slices returned by getters are
 * borrowed from LMDB's map and valid until the transaction ends or, in a write transaction, until
 * its next write. A transaction is used by one thread at a time.
 *
 * Errors: a failure in a write transaction is sticky (every later call returns it and commit
 * aborts). Answers are not failures and leave the transaction usable: -FG_ENOTFOUND, and the
 * -FG_EEXIST of a resource precondition (if_match, create_only). */
#ifndef STORE_STORE_H
#define STORE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/slice.h"

typedef struct store store_t;
typedef struct store_txn store_txn_t;

typedef struct {
	uint64_t map_size;    /* bytes of address space for the map; 0: 16 GiB */
	unsigned max_readers; /* 0: 126 */
	bool read_only;       /* open for reading only (store inspection while a server runs) */
	/* Write through heap copies of the pages (LMDB's default) instead of straight into the
	 * map (MDB_WRITEMAP, our default): costs heap memory the size of the largest transaction,
	 * which LMDB keeps, but a stray pointer cannot write into the store. */
	bool no_writemap;
} store_opts_t;

/* Opens (creating the directory and databases when absent) the environment in dir. */
int store_open(const char *dir, const store_opts_t *opts, store_t **out);
/* Accepts NULL. No transaction may be open. */
void store_close(store_t *s);
/* Human text for the last LMDB error seen in this thread ("" when none): for logs. */
const char *store_last_error(void);

int store_txn_begin(store_t *s, bool write, store_txn_t **out);
/* A number no other transaction of this process had or will have: to tell transactions apart,
 * which their addresses do not (a new one is often where the last one was). */
uint64_t store_txn_serial(const store_txn_t *t);
/* Commits a write transaction (durably: LMDB syncs before returning) or ends a read one, and
 * frees t. If an operation in t failed, the error is sticky: commit aborts and returns it. */
int store_txn_commit(store_txn_t *t);
/* Accepts NULL. */
void store_txn_abort(store_txn_t *t);

/* msg: every message received, in arrival order. */
typedef struct {
	uint64_t seq;         /* assigned by store_msg_append */
	uint64_t received_ns; /* wall clock */
	uint8_t status;       /* caller-defined byte (the gateway stores the ACK code letter) */
	slice_t peer;         /* "127.0.0.1:50412", "file:/path", ... */
	slice_t raw;          /* the message bytes as received */
} store_msg_t;

/* Appends m with the next sequence number (stored in *seq and m is not changed). */
int store_msg_append(store_txn_t *t, const store_msg_t *m, uint64_t *seq);
/* -FG_ENOTFOUND when absent. */
int store_msg_get(store_txn_t *t, uint64_t seq, store_msg_t *out);
int store_msg_set_status(store_txn_t *t, uint64_t seq, uint8_t status);

/* msgkey: dedupe key (sender + control id, built by the caller) -> sequence and content hash.
 * Keys longer than the LMDB limit are shortened with a hash of the whole key. */
int store_msgkey_get(store_txn_t *t, slice_t key, uint64_t *seq, uint64_t *content_hash);
int store_msgkey_put(store_txn_t *t, slice_t key, uint64_t seq, uint64_t content_hash);

/* dead: messages that could not be accepted, keyed by their msg sequence. */
typedef struct {
	uint64_t seq;
	uint64_t time_ns;
	uint8_t stage;        /* caller-defined: frame, parse, validate, map, ... */
	uint16_t code;        /* caller-defined (the gateway stores the HL7 0357 code) */
	uint32_t map_version; /* mapping version in force (0 before mappings exist) */
	slice_t reason;       /* human text, no patient data */
	slice_t location;     /* "PID-5.1", "" */
} store_dead_t;

int store_dead_put(store_txn_t *t, const store_dead_t *d);
int store_dead_get(store_txn_t *t, uint64_t seq, store_dead_t *out);
int store_dead_del(store_txn_t *t, uint64_t seq);

/* Iteration in sequence order from `from` (inclusive); the callback returns non-zero to stop,
 * and that value is returned. */
typedef int (*store_msg_cb)(void *ctx, const store_msg_t *m);
typedef int (*store_dead_cb)(void *ctx, const store_dead_t *d);
int store_msg_foreach(store_txn_t *t, uint64_t from, store_msg_cb cb, void *ctx);
int store_dead_foreach(store_txn_t *t, uint64_t from, store_dead_cb cb, void *ctx);

/* Resources: opaque serialized bodies (the caller's canonical compact JSON) named by type
 * (1-64 bytes of [A-Za-z0-9]) and id (1-64 bytes of [A-Za-z0-9.-], a FHIR id), with every
 * version kept. A type or id outside that syntax is -FG_EINVAL in a write (sticky) and
 * -FG_ENOTFOUND in a lookup (nothing can be stored under it). */
#define STORE_TYPE_MAX 64
#define STORE_ID_MAX   64

/* One search index entry: the caller builds the bytes (parameter code and a normalized value
 * whose byte order is the order range searches want); the store only compares them. */
typedef struct {
	slice_t code;  /* search parameter code, non-empty */
	slice_t value; /* at most store_idx_value_max(type, code) bytes: the caller truncates */
} store_idx_entry_t;

/* One version of a resource. Slices are borrowed (see the top of this file). */
typedef struct {
	slice_t type;
	slice_t id;
	uint32_t version;         /* 1, 2, ... */
	bool deleted;             /* this version records a delete; body is empty */
	uint64_t last_updated_ns; /* never earlier than that of an earlier change in the store */
	uint64_t seq;             /* its change sequence in the history (1, 2, ...) */
	slice_t body;
} store_res_t;

/* What to store. body and the entries' bytes are the caller's memory, not slices borrowed from
 * this transaction (the writes would move them). */
typedef struct {
	slice_t type;
	slice_t id;
	slice_t body; /* non-empty */
	/* Every index entry of this version (order and duplicates do not matter); they replace the
	 * previous version's entries. */
	const store_idx_entry_t *entries;
	size_t n_entries;
	uint32_t if_match; /* when not 0: -FG_EEXIST unless this is the current version */
	bool create_only;  /* -FG_EEXIST when the resource exists and is not deleted */
	uint64_t now_ns;   /* lastUpdated of the new version (raised to the last change's) */
} store_res_put_t;

typedef struct {
	uint32_t version;         /* current version after the call (on -FG_EEXIST: as found) */
	uint64_t last_updated_ns; /* of that version */
	bool unchanged;           /* nothing was written */
	bool created;             /* the resource did not exist, or was deleted, before */
} store_res_result_t;

/* Writes a new version, unless the current one is not deleted and its body is byte-identical to
 * p->body: then nothing is written (no version, no history entry, indexes untouched) and
 * out->unchanged is set. -FG_EEXIST (not sticky, nothing written) when a precondition fails. */
int store_res_put(store_txn_t *t, const store_res_put_t *p, store_res_result_t *out);
/* Writes a version marked deleted (empty body) and removes the resource's index entries.
 * -FG_ENOTFOUND when it never existed; deleting a deleted resource changes nothing. */
int store_res_delete(store_txn_t *t, slice_t type, slice_t id, uint64_t now_ns,
		     store_res_result_t *out);
/* The current version (out->deleted tells a deleted resource); -FG_ENOTFOUND when none. */
int store_res_get(store_txn_t *t, slice_t type, slice_t id, store_res_t *out);
/* One version; -FG_ENOTFOUND when the resource has no such version. */
int store_res_vread(store_txn_t *t, slice_t type, slice_t id, uint32_t version, store_res_t *out);

/* The callbacks of the iterations below return non-zero to stop, and that value is returned.
 * They may call the store's lookups, and write, but the slices in r end at the first write. */
typedef int (*store_res_cb)(void *ctx, const store_res_t *r);
/* Current, not deleted resources of a type in id order (bytewise), from the first id after
 * after_id (empty: from the start): paging for searches without parameters and reindexing. */
int store_res_foreach_type(store_txn_t *t, slice_t type, slice_t after_id, store_res_cb cb,
			   void *ctx);
/* Current, not deleted resources of a type (0 for an unknown type): one lookup. */
int store_res_count(store_txn_t *t, slice_t type, uint64_t *count);
typedef int (*store_count_cb)(void *ctx, slice_t type, uint64_t count);
/* The non-zero counts of store_res_count, in type order. */
int store_res_foreach_count(store_txn_t *t, store_count_cb cb, void *ctx);

/* History, newest first, deletes included, down to the first change older than since_ns (0: all).
 * Paging: before (0: from the newest) resumes below a version of the instance, or below a change
 * sequence (r->seq) for a type or the system. The instance history of a resource that never
 * existed is -FG_ENOTFOUND. */
int store_hist_foreach_instance(store_txn_t *t, slice_t type, slice_t id, uint64_t since_ns,
				uint32_t before, store_res_cb cb, void *ctx);
int store_hist_foreach_type(store_txn_t *t, slice_t type, uint64_t since_ns, uint64_t before,
			    store_res_cb cb, void *ctx);
int store_hist_foreach_system(store_txn_t *t, uint64_t since_ns, uint64_t before, store_res_cb cb,
			      void *ctx);

/* Search indexes. The longest entry value for type and code (keys are capped by LMDB); 0 when
 * type and code alone are too long. A pure function: entries can be built outside a txn. */
size_t store_idx_value_max(slice_t type, slice_t code);
/* Replaces a current resource's index entries without a new version (reindexing); entries as
 * in store_res_put_t. -FG_ENOTFOUND when it does not exist or is deleted. */
int store_idx_set(store_txn_t *t, slice_t type, slice_t id, const store_idx_entry_t *entries,
		  size_t n);
/* Removes every index entry of a type (before reindexing it from scratch). */
int store_idx_clear_type(store_txn_t *t, slice_t type);
/* Matches in value order, then id order; value and id are borrowed. */
typedef int (*store_idx_cb)(void *ctx, slice_t value, slice_t id);
int store_idx_foreach_eq(store_txn_t *t, slice_t type, slice_t code, slice_t value, store_idx_cb cb,
			 void *ctx);
/* lo <= value < hi, bytewise; NULL leaves that end open. */
int store_idx_foreach_range(store_txn_t *t, slice_t type, slice_t code, const slice_t *lo,
			    const slice_t *hi, store_idx_cb cb, void *ctx);
int store_idx_foreach_prefix(store_txn_t *t, slice_t type, slice_t code, slice_t prefix,
			     store_idx_cb cb, void *ctx);

/* Bulk loads: many puts (a file import) collected outside any transaction and made in one
 * write transaction in key order, each B-tree walked once (store/bulk.c says how). What the
 * store holds afterwards is what store_res_put of each put in the order added would leave,
 * except that the history entries of one load are in (type, id) order. Puts are kept in memory
 * up to a budget, beyond it in sorted run files in a folder of the store's directory
 * ("bulk-NAME"), synced when written so that a job can record in its checkpoint how many runs
 * it has and resume with them after a crash. */
typedef struct store_bulk store_bulk_t;
/* name: [a-z0-9-]+; mem_bytes: memory for puts before they go to a run file (0: 256 MiB; twice
 * that while one is being written);
 * resume_runs: the first resume_runs run files in the folder are adopted (a resumed job),
 * others found there are removed. */
int store_bulk_open(store_t *s, const char *name, size_t mem_bytes, unsigned resume_runs,
		    store_bulk_t **out);
/* Copies a put (no preconditions: if_match and create_only must be unset; now_ns is ignored,
 * the load's applies). -FG_EINVAL/-FG_ETOOBIG for what store_res_put would refuse; after
 * another failure the loader is unusable (free it). */
int store_bulk_add(store_bulk_t *b, const store_res_put_t *p);
/* Keeps the last put of each resource at hand for store_bulk_unchanged (call before any add):
 * an index over the puts in memory, given up once a run file is written. */
void store_bulk_track(store_bulk_t *b);
/* 1 when making p after the puts added would write nothing: its body is byte-identical to the
 * last put of its resource added or, with none, to its current version in t (not deleted);
 * 0 when it would write (or cannot tell: no tracking, run files); < 0 a store error. */
int store_bulk_unchanged(store_bulk_t *b, store_txn_t *t, const store_res_put_t *p);
/* True when the puts in memory reached the budget (time to sync or spill). */
bool store_bulk_memory_full(const store_bulk_t *b);
/* Puts added (resumed runs included). */
uint64_t store_bulk_count(const store_bulk_t *b);
/* Writes the puts in memory as a run file and syncs it: afterwards every put added is on disk.
 * *nruns (may be NULL): the number of run files now. */
int store_bulk_sync(store_bulk_t *b, unsigned *nruns);
/* The same in two steps, so that puts can be added meanwhile: start writes the puts in memory
 * as the next run file in a thread of its own (after waiting for the one before), into a second
 * memory part of the same budget; wait returns when it is on disk (its result; *nruns as
 * above). The load and free wait for it themselves. */
int store_bulk_spill_start(store_bulk_t *b);
int store_bulk_spill_wait(store_bulk_t *b, unsigned *nruns);
/* Called in key order for each put made (r as from store_res_put); non-zero stops the load and
 * fails the transaction. p's slices are valid during the call. */
typedef int (*store_bulk_cb)(void *ctx, const store_res_put_t *p, const store_res_result_t *r);
/* Makes every put added in t, with lastUpdated now_ns (raised as for store_res_put). */
int store_bulk_load(store_bulk_t *b, store_txn_t *t, uint64_t now_ns, store_bulk_cb cb, void *ctx);
/* What a loader's loads did (summed over them): monotonic ns waiting for the run file being
 * written when a load began, in the resource pass, waiting for the entries' sort after it, in
 * the index pass; and entries found out of order after the sort (a self-check: 0). */
typedef struct {
	uint64_t wait_ns, res_ns, collect_wait_ns, idx_ns;
	uint64_t unsorted;
} store_bulk_stats_t;
void store_bulk_stats(const store_bulk_t *b, store_bulk_stats_t *out);
/* Accepts NULL. remove_files: delete the run files and folder (after the load committed, or to
 * give up). */
void store_bulk_free(store_bulk_t *b, bool remove_files);

/* pend: the resource puts of accepted messages that are durable but not made yet (the writer's
 * deferred apply, gateway/writer.c): kept under the message's sequence in the transaction that
 * stores the message, made later in a bulk load whose transaction removes them. Puts as for
 * store_bulk_add (-FG_EINVAL/-FG_ETOOBIG for what it refuses; now_ns is ignored). */
int store_pend_put(store_txn_t *t, uint64_t seq, const store_res_put_t *puts, size_t n);
/* Called for each put kept, in sequence order (the puts of one message in the order given);
 * p's slices are valid during the call. Non-zero stops the walk and is returned. */
typedef int (*store_pend_cb)(void *ctx, uint64_t seq, const store_res_put_t *p);
int store_pend_foreach(store_txn_t *t, store_pend_cb cb, void *ctx);
/* Removes the puts kept under sequences lo..hi. */
int store_pend_del(store_txn_t *t, uint64_t lo, uint64_t hi);

/* work: pending hook work (scoring) that survives a crash: a kind byte and opaque payload under
 * an id that is never handed out twice. */
typedef struct {
	uint64_t id;
	uint8_t kind;
	slice_t payload;
} store_work_t;

int store_work_put(store_txn_t *t, uint8_t kind, slice_t payload, uint64_t *id);
/* -FG_ENOTFOUND when absent. */
int store_work_del(store_txn_t *t, uint64_t id);
typedef int (*store_work_cb)(void *ctx, const store_work_t *w);
/* In id order from `from` (inclusive). */
int store_work_foreach(store_txn_t *t, uint64_t from, store_work_cb cb, void *ctx);

/* Checkpoints of long jobs (an import's position in a file), kept in meta under a prefix of
 * their own so that a job's progress commits in the same transaction as its writes. name: 1-200
 * bytes; value: opaque, at most 4096 bytes. */
#define STORE_CHECKPOINT_NAME_MAX  200
#define STORE_CHECKPOINT_VALUE_MAX 4096
int store_checkpoint_put(store_txn_t *t, slice_t name, slice_t value);
/* -FG_ENOTFOUND when absent; value borrowed as for every getter. */
int store_checkpoint_get(store_txn_t *t, slice_t name, slice_t *value);
/* Deleting an absent checkpoint is no error. */
int store_checkpoint_del(store_txn_t *t, slice_t name);

/* audit: an append-only trail of opaque records (the gateway's AuditEvents) under strictly
 * increasing u64 keys (times in ns, made unique). The reference strings the caller names with
 * each record are indexed in auditref as one sorted run per write transaction, appended at
 * commit. Records are never changed or removed. */
#define STORE_AUDIT_REF_MAX 400

typedef struct {
	uint64_t key;
	slice_t body; /* borrowed (see the top of this file) */
} store_audit_t;

/* The key the next record of this transaction gets: time_ns, raised above the last key in the
 * trail (a clock that steps back, or events handed over out of order, still append). */
int store_audit_next_key(store_txn_t *t, uint64_t time_ns, uint64_t *key);
/* Appends body (non-empty) under key, which must be above every key in the trail (take it from
 * store_audit_next_key), with one auditref entry per ref (1..STORE_AUDIT_REF_MAX bytes, no NUL
 * byte; duplicates are written once). -FG_EINVAL (sticky) for a key or ref outside that. */
int store_audit_append(store_txn_t *t, uint64_t key, slice_t body, const slice_t *refs,
		       size_t nrefs);
/* -FG_ENOTFOUND when absent. */
int store_audit_get(store_txn_t *t, uint64_t key, store_audit_t *out);
typedef int (*store_audit_cb)(void *ctx, const store_audit_t *r);
/* Records with lo <= key < hi, in key order or (desc) newest first; the callback returns
 * non-zero to stop, and that value is returned. */
int store_audit_foreach(store_txn_t *t, uint64_t lo, uint64_t hi, bool desc, store_audit_cb cb,
			void *ctx);
/* The same for the records appended with ref among their refs (exactly). */
int store_audit_foreach_ref(store_txn_t *t, slice_t ref, uint64_t lo, uint64_t hi, bool desc,
			    store_audit_cb cb, void *ctx);

typedef struct {
	uint64_t messages;      /* entries in msg */
	uint64_t msgkeys;       /* entries in msgkey */
	uint64_t dead;          /* entries in dead */
	uint64_t last_seq;      /* 0 when empty */
	uint64_t map_size;      /* configured bytes */
	uint64_t used_bytes;    /* pages in use times page size */
	uint64_t resources;     /* current, not deleted (all types) */
	uint64_t versions;      /* every stored version, deletes included */
	uint64_t changes;       /* entries in hist */
	uint64_t index_entries; /* entries in idx */
	uint64_t work;          /* pending work items */
	uint64_t audit;         /* records in the audit trail */
	uint64_t audit_refs;    /* runs in auditref (one per transaction that named references) */
	uint64_t pending;       /* messages whose resource puts wait in pend */
} store_stats_t;

int store_stats(store_txn_t *t, store_stats_t *out);

/* Checks consistency: records decode; every msgkey and dead entry names an existing message;
 * every resource has its current version, every version its history entry and the reverse;
 * index entries agree with each resource's list of them; the per-type counts are right; audit
 * records decode and every auditref entry names one. Calls
 * report once per problem found and returns the number of problems (>= 0) or an error. */
typedef void (*store_report_cb)(void *ctx, const char *problem);
int store_verify(store_txn_t *t, store_report_cb report, void *ctx);

#endif
