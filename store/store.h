/* The LMDB store: message log, dedupe keys, dead letters (and, later, resources, versions,
 * history and indexes). It knows bytes and keys, not HL7 or FHIR. Only this layer includes lmdb.h.
 *
 * Threads: one write transaction at a time per environment (LMDB serialises writers, also across
 * processes); read transactions may run in any thread (MDB_NOTLS). Slices returned by getters are
 * borrowed from LMDB's map and valid until the transaction ends. */
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
} store_opts_t;

/* Opens (creating the directory and databases when absent) the environment in dir. */
int store_open(const char *dir, const store_opts_t *opts, store_t **out);
/* Accepts NULL. No transaction may be open. */
void store_close(store_t *s);
/* Human text for the last LMDB error seen in this thread ("" when none): for logs. */
const char *store_last_error(void);

int store_txn_begin(store_t *s, bool write, store_txn_t **out);
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
	uint8_t stage;         /* caller-defined: frame, parse, validate, map, ... */
	uint16_t code;         /* caller-defined (the gateway stores the HL7 0357 code) */
	uint32_t map_version;  /* mapping version in force (0 before mappings exist) */
	slice_t reason;        /* human text, no patient data */
	slice_t location;      /* "PID-5.1", "" */
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

typedef struct {
	uint64_t messages;  /* entries in msg */
	uint64_t msgkeys;   /* entries in msgkey */
	uint64_t dead;      /* entries in dead */
	uint64_t last_seq;  /* 0 when empty */
	uint64_t map_size;  /* configured bytes */
	uint64_t used_bytes; /* pages in use times page size */
} store_stats_t;

int store_stats(store_txn_t *t, store_stats_t *out);

/* Checks consistency (every msgkey and dead entry names an existing message, records decode);
 * calls report once per problem found and returns the number of problems (>= 0) or an error. */
typedef void (*store_report_cb)(void *ctx, const char *problem);
int store_verify(store_txn_t *t, store_report_cb report, void *ctx);

#endif
