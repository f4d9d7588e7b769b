/* The audit trail: a FHIR R4 AuditEvent for every REST access and every HL7 v2 message received,
 * kept in the store's append-only audit trail (store_audit_*) and served by the REST API as
 * AuditEvent resources. Events are built on the I/O threads and written by the writer thread in
 * its group commits (a message's in the message's own transaction), never on the request path.
 * An event's id is its key in the trail as 16 hex digits; its recorded time is the key's (the
 * event's time, raised so that keys only grow). */
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
	const slice_t *refs;
	size_t nrefs;
} audit_event_t;

/* Builds the AuditEvent and appends it to the trail in write transaction t, using arena a for
 * the work. Returns 0, -FG_EINVAL when it cannot be built, or a store error. */
int audit_put(store_txn_t *t, arena_t *a, const audit_event_t *e);

/* An AuditEvent built ahead of the write (on an I/O thread; for a message, for the outcome the
 * check predicts), so that the writer only stores it: the id and recorded time (from the key
 * the writer takes) and a message's sequence number are written into the body then. */
typedef struct {
	bool ok;            /* built; false: it cannot be (the writer builds a message's itself) */
	hl7_ack_code_t ack; /* the outcome it was built for */
	uint64_t time_ns;
	slice_t body;  /* compact JSON with placeholders */
	slice_t *refs; /* the entity references as the index writes them ("id|Type") */
	size_t nrefs;
} audit_prepared_t;

/* Builds e (e->seq is ignored) into out, in arena a. */
void audit_prepare(arena_t *a, const audit_event_t *e, audit_prepared_t *out);
/* Appends a prepared event with the message's sequence number seq (ignored for REST events).
 * 0, -FG_EINVAL when p was not built, or a store error. */
int audit_put_prepared(store_txn_t *t, arena_t *a, const audit_prepared_t *p, uint64_t seq);

/* An AuditEvent's id: its key in the trail as 16 lowercase hex digits. */
#define AUDIT_ID_LEN 16
void audit_key_id(uint64_t key, char out[AUDIT_ID_LEN + 1]);
/* The key of id; false when id is not of that form (an event stored before the trail existed,
 * kept as an ordinary resource). */
bool audit_id_key(slice_t id, uint64_t *key);

/* Builds a REST AuditEvent on the calling thread and adds it to the open batch, which goes to
 * the writer as one job on the next audit_flush or once it holds 1024 events. When the batch is
 * full (4096 events) and the writer's queue too, the event is dropped, counted (audit_dropped)
 * and logged: audit never makes a request wait and its memory is bounded. */
void audit_submit(writer_t *w, const audit_event_t *e);
/* Queues the open batch to w (unless it is empty or w's queue is full). The server calls it
 * every AUDIT_FLUSH_MS, and once more before it stops the writer. */
#define AUDIT_FLUSH_MS 10
void audit_flush(writer_t *w);
/* Frees what the open batch still holds (logged as lost): after the writer has stopped. */
void audit_discard(void);

/* AuditEvents dropped because the writer queue was full, since the start. */
uint64_t audit_dropped(void);

#endif
