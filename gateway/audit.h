/* The audit trail: a FHIR R4 AuditEvent, stored and searchable like any resource, for every REST
 * access and every HL7 v2 message received. AuditEvents are written by the writer thread in its
 * group commits (a message's in the message's own transaction), never on the request path. */
#ifndef GATEWAY_AUDIT_H
#define GATEWAY_AUDIT_H

#include <stdbool.h>
#include <stdint.h>

#include "gateway/writer.h"
#include "lib/arena.h"
#include "lib/slice.h"
#include "mappings/hl7.h"
#include "store/store.h"

/* What one AuditEvent records. Slices are borrowed for the call. */
typedef struct {
	uint64_t time_ns;
	slice_t peer; /* "host:port" of the client or sender */
	slice_t who;  /* the authenticated client id; empty: anonymous (authorization off) */
	/* REST: a http://hl7.org/fhir/restful-interaction code ("read", "search-type", ...);
	 * NULL for a message received over MLLP. */
	const char *interaction;
	char action;      /* C, R, U, D or E */
	slice_t type, id; /* the resource acted on, when there is one */
	slice_t query;    /* a search's query string (stored base64, as R4 wants) */
	int status;       /* REST: the HTTP status */
	/* Messages: the header, the ACK code, the sequence in the message log, and the resources
	 * written (as "Type/id"). */
	const hl7_msg_t *msg;
	hl7_ack_code_t ack;
	bool duplicate;
	uint64_t seq;
	bool seq_placeholder; /* internal (audit_prepare): a placeholder stands for seq */
	const slice_t *refs;
	size_t nrefs;
} audit_event_t;

/* Builds the AuditEvent and stores it (with its search index entries) in write transaction t,
 * using arena a for the work. Returns 0 or a store error. */
int audit_put(store_txn_t *t, arena_t *a, const audit_event_t *e);

/* A message's AuditEvent built ahead of the write (on the I/O thread, for the outcome the
 * check predicts), so that the writer only stores it: the message's sequence number, known
 * only in the writer, is patched into the body and index entries then. */
typedef struct {
	bool ok;            /* built; false: the writer builds it itself */
	hl7_ack_code_t ack; /* the outcome it was built for */
	uint64_t time_ns;
	slice_t id, body;
	store_idx_entry_t *entries;
	size_t n;
} audit_prepared_t;

/* Builds e (a message event; e->seq is ignored) into out, in arena a. */
void audit_prepare(arena_t *a, const audit_event_t *e, audit_prepared_t *out);
/* Stores a prepared event with the message's sequence number seq. 0 or a store error. */
int audit_put_prepared(store_txn_t *t, arena_t *a, const audit_prepared_t *p, uint64_t seq);

/* Queues an AuditEvent for the next group commit (copies what it needs). When the writer's
 * queue is full the event is dropped, counted (audit_dropped) and logged: audit never makes
 * a request wait. */
void audit_submit(writer_t *w, const audit_event_t *e);

/* AuditEvents dropped because the writer queue was full, since the start. */
uint64_t audit_dropped(void);

#endif
