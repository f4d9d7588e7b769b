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

typedef struct {
	hl7_msg_t *msg;        /* arena; NULL when no MSH could be read */
	hl7_ack_code_t code;   /* HL7_ACK_AA, HL7_ACK_AE or HL7_ACK_AR */
	ingest_stage_t stage;  /* INGEST_STAGE_NONE when code is AA */
	hl7_error_t err;       /* valid when code is not AA */
	slice_t key;           /* arena; dedupe key (sender + MSH-10), empty without MSH-10 */
	uint64_t content_hash; /* of the raw bytes */
} ingest_check_t;

/* Parses and validates raw (which must outlive the result) into *out using arena a. */
void ingest_check(arena_t *a, const char *raw, size_t len, const hl7_limits_t *lim,
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
 *    dead letter with stage, 0357 code, reason and location.
 * Returns 0 or a store error (then t is poisoned and must be aborted). */
int ingest_record(store_txn_t *t, const ingest_check_t *c, slice_t raw, slice_t peer,
		  uint64_t now_ns, ingest_outcome_t *out);

/* "PID-5.1" style location of an error into out (at least 32 bytes); "" when unknown. */
void ingest_error_location(const hl7_error_t *err, char *out, size_t cap);

#endif
