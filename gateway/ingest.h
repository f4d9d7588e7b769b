/* The ingest rules shared by the MLLP path, `fhirgate store replay` and (later) imports: check a
 * raw message (parse, validate) and record it in a write transaction (dedupe, message log, dead
 * letters), deciding the ACK code. */
#ifndef GATEWAY_INGEST_H
#define GATEWAY_INGEST_H

#include <stdbool.h>
#include <stdint.h>

#include "lib/arena.h"
#include "lib/slice.h"
#include "mappings/hl7.h"
#include "mappings/map.h"
#include "store/store.h"

/* Where a message failed; stored in dead letters. */
typedef enum {
	INGEST_STAGE_NONE = 0,
	INGEST_STAGE_FRAME = 1,    /* MLLP framing (e.g. frame too large) */
	INGEST_STAGE_PARSE = 2,    /* HL7 syntax */
	INGEST_STAGE_VALIDATE = 3, /* header rules: version, processing id, required fields */
	INGEST_STAGE_MAP = 4,      /* mapping to FHIR (issue 3) */
} ingest_stage_t;

const char *ingest_stage_name(ingest_stage_t stage);

/* How to check: limits, and the mappings to convert with (NULL: parse and validate only). */
typedef struct {
	hl7_limits_t limits;
	const map_set_t *maps;
	map_options_t map_opt;
	bool accept_unmapped; /* no map / failed mapping: AA with a dead letter instead of AE */
	/* Leave the resources' search index entries to ingest_record, which makes them only for
	 * the puts it keeps (the deferred apply leaves unchanged ones out): for the MLLP path,
	 * where they would otherwise be made on the I/O thread for every resource. */
	bool lazy_entries;
} ingest_opts_t;

/* A resource to store, serialized canonically (compact JSON), with its search index entries
 * (not made yet while tree is set: ingest_res_entries makes them). */
typedef struct {
	slice_t type, id, body;
	store_idx_entry_t *entries;
	size_t nentries;
	const fhir_node_t *tree; /* the resource, until its entries are made */
} ingest_res_t;

typedef struct {
	hl7_msg_t *msg;       /* arena; NULL when no MSH could be read */
	hl7_ack_code_t code;  /* HL7_ACK_AA, HL7_ACK_AE or HL7_ACK_AR */
	ingest_stage_t stage; /* where it failed; INGEST_STAGE_NONE when it did not */
	bool dead;       /* record a dead letter (a failure, or an accepted unmapped message) */
	hl7_error_t err; /* valid when dead */
	slice_t key;     /* arena; dedupe key (sender + MSH-10), empty without MSH-10 */
	uint64_t content_hash;    /* of the raw bytes */
	uint32_t map_version;     /* low bits of the mapping set's version, for the dead letter */
	const map_result_t *conv; /* the conversion (NULL when none was tried) */
	ingest_res_t *res;        /* arena: the resources to store with the message */
	size_t nres;
	arena_t *arena; /* the check's arena (for entries made later) */
} ingest_check_t;

/* Parses, validates and converts raw (which must outlive the result) into *out using arena a. */
void ingest_check(arena_t *a, const char *raw, size_t len, const ingest_opts_t *opt,
		  ingest_check_t *out);

/* Status byte stored in msg records: the ACK code's letter 'A', 'E' or 'R'. */
uint8_t ingest_status_of(hl7_ack_code_t code);
hl7_ack_code_t ingest_code_of_status(uint8_t status);

typedef struct {
	hl7_ack_code_t code; /* what to ACK with */
	bool duplicate;      /* already stored: nothing written */
	uint64_t seq;        /* the message's sequence (the earlier one for a duplicate) */
} ingest_outcome_t;

/* Records a checked message in write transaction t:
 *  - same key and an earlier message that was accepted, or that failed with the same content:
 *    a duplicate, nothing written, ACKed with the earlier code;
 *  - otherwise appended to msg (status = code), its key pointed at it, and when not accepted a
 *    dead letter with stage, 0357 code, reason and location; when accepted its resources
 *    stored, or with defer (the writer's load, gateway/writer.h) the puts among them that
 *    change something kept in pend under its sequence and added to defer.
 * Returns 0 or a store error (then t is poisoned and must be aborted). */
int ingest_record(store_txn_t *t, const ingest_check_t *c, slice_t raw, slice_t peer,
		  uint64_t now_ns, store_bulk_t *defer, ingest_outcome_t *out);
/* The writer's apply_cb (ctx: the load's transaction): the scoring hook's note of each resource
 * the load changed, as ingest_store_resources makes it. */
int ingest_apply_note(void *ctx, const store_res_put_t *p, const store_res_result_t *r);

/* Re-checks the stored message seq whose dead letter is d with check c (made from the stored
 * bytes): when it now passes, its status becomes accepted, its resources are stored, its dedupe
 * key is set and the dead letter goes (returns 0); otherwise the dead letter gets today's verdict
 * (returns 1). An oversize frame (stage frame: only its head was kept) never passes and keeps its
 * dead letter as it is. A negative return is a store error. */
int ingest_replay(store_txn_t *t, const ingest_check_t *c, store_dead_t *d, uint64_t now_ns);

/* The search index entries of a resource in the store's form (arena a): what every write path
 * (ingest, REST, reindex) stores with a resource. Returns 0 or -FG_EINVAL (not a resource). */
int ingest_index_entries(arena_t *a, const fhir_node_t *res, store_idx_entry_t **out, size_t *n);

/* Serializes the resources of a conversion for the store (canonical compact JSON and, unless
 * lazy, index entries, in arena a). Returns 0 or an error (then *n is 0). */
int ingest_resources(arena_t *a, const map_result_t *r, bool lazy, ingest_res_t **out, size_t *n);
/* Makes r's index entries in arena a if they are not made yet. Returns 0 or -FG_EINVAL. */
int ingest_res_entries(arena_t *a, ingest_res_t *r);

/* Upserts resources in write transaction t: a resource whose body is byte-identical to its
 * current version writes nothing (counted in *unchanged, which may be NULL). Returns 0 or a
 * store error. The one resource write path of MLLP ingest, replay and imports. */
int ingest_store_resources(store_txn_t *t, const ingest_res_t *res, size_t n, uint64_t now_ns,
			   size_t *unchanged);

/* "PID-5.1" style location of an error into out (at least 32 bytes); "" when unknown. */
void ingest_error_location(const hl7_error_t *err, char *out, size_t cap);

#endif
