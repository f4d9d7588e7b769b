/* AuditEvents for REST accesses and received messages. */
#include "config.h"

#include "gateway/audit.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "fhir/json.h"
#include "fhir/search.h"
#include "fhir/tree.h"
#include "lib/buf.h"
#include "lib/err.h"
#include "lib/log.h"
#include "lib/timeutil.h"
#include "lib/xalloc.h"

/* Stands for the message's sequence number in a prepared event; found by its unescaped context
 * (which no string value can hold), so a sender's text cannot be taken for it. */
#define SEQ_PLACEHOLDER "fgseq0placeholder"
#define SEQ_CONTEXT     "\"urn:fhirgate:message\",\"value\":\""

/* Placeholders the writer overwrites once it has the event's key (same lengths as the real
 * values: 16 hex digits, and an instant to the millisecond). */
#define ID_PLACEHOLDER       "0000000000000000"
#define RECORDED_PLACEHOLDER "1970-01-01T00:00:00.000Z"
#define BODY_PREFIX          "{\"resourceType\":\"AuditEvent\",\"id\":\""
#define RECORDED_KEY         "\"recorded\":\""

static atomic_uint_fast64_t dropped;

uint64_t
audit_dropped(void)
{
	return atomic_load(&dropped);
}

/* ---- building ---- */

static fhir_node_t *
str(arena_t *a, slice_t s)
{
	return fhir_string_new(a, s);
}

static void
set_str(arena_t *a, fhir_node_t *obj, const char *key, slice_t v)
{
	if (v.len > 0)
		fhir_object_set_cstr(a, obj, key, str(a, v));
}

static fhir_node_t *
coding(arena_t *a, const char *system, slice_t code, const char *display)
{
	fhir_node_t *c = fhir_object_new(a);

	fhir_object_set_cstr(a, c, "system", str(a, slice_cstr(system)));
	fhir_object_set_cstr(a, c, "code", str(a, code));
	if (display != NULL)
		fhir_object_set_cstr(a, c, "display", str(a, slice_cstr(display)));
	return c;
}

static fhir_node_t *
identifier_ref(arena_t *a, const char *system, slice_t value, slice_t display)
{
	fhir_node_t *ref = fhir_object_new(a), *ident = fhir_object_new(a);

	fhir_object_set_cstr(a, ident, "system", str(a, slice_cstr(system)));
	fhir_object_set_cstr(a, ident, "value", str(a, value));
	fhir_object_set_cstr(a, ref, "identifier", ident);
	set_str(a, ref, "display", display);
	return ref;
}

/* "10.0.0.1:5123" -> "10.0.0.1", "[::1]:5123" -> "::1". */
static slice_t
peer_address(slice_t peer)
{
	size_t colon = peer.len;

	while (colon > 0 && peer.ptr[colon - 1] != ':')
		colon--;
	if (colon == 0)
		return peer;
	peer.len = colon - 1;
	if (peer.len >= 2 && peer.ptr[0] == '[' && peer.ptr[peer.len - 1] == ']') {
		peer.ptr++;
		peer.len -= 2;
	}
	return peer;
}

/* Decoded header text (valid UTF-8 whatever the message's charset). */
static slice_t
header_text(arena_t *a, const hl7_msg_t *m, slice_t raw)
{
	buf_t b = BUF_INIT;
	slice_t out = slice_make("", 0);

	if (raw.len > 0 && hl7_text_decode(m, raw, &b) == 0)
		out = arena_slice_dup(a, buf_slice(&b));
	buf_free(&b);
	return out;
}

static fhir_node_t *
network(arena_t *a, slice_t peer)
{
	fhir_node_t *n = fhir_object_new(a);

	set_str(a, n, "address", peer_address(peer));
	/* network-type: 2 is an IP address (v4 or v6). */
	fhir_object_set_cstr(a, n, "type", str(a, SLICE_LIT("2")));
	return n;
}

static const char *
outcome_of(const audit_event_t *e)
{
	if (e->interaction == NULL)
		return e->ack == HL7_ACK_AA ? "0" : e->ack == HL7_ACK_AE ? "4" : "8";
	return e->status < 400 ? "0" : e->status < 500 ? "4" : "8";
}

static fhir_node_t *
build(arena_t *a, const audit_event_t *e, slice_t id)
{
	fhir_node_t *r = fhir_object_new(a), *agent = fhir_object_new(a), *agents;
	fhir_node_t *source = fhir_object_new(a), *types = fhir_array_new(a), *obs;
	fhir_node_t *entities = fhir_array_new(a), *subtypes = fhir_array_new(a);
	char desc[64];
	slice_t who = e->who;

	fhir_object_set_cstr(a, r, "resourceType", str(a, SLICE_LIT("AuditEvent")));
	fhir_object_set_cstr(a, r, "id", str(a, id));
	if (e->interaction != NULL) {
		fhir_object_set_cstr(
		    a, r, "type",
		    coding(a, "http://terminology.hl7.org/CodeSystem/audit-event-type",
			   SLICE_LIT("rest"), "RESTful Operation"));
		fhir_array_append(a, subtypes,
				  coding(a, "http://hl7.org/fhir/restful-interaction",
					 slice_cstr(e->interaction), NULL));
		snprintf(desc, sizeof(desc), "HTTP %d", e->status);
	} else {
		const hl7_header_t *h = e->msg != NULL ? hl7_msg_header(e->msg) : NULL;

		fhir_object_set_cstr(a, r, "type",
				     coding(a, "http://dicom.nema.org/resources/ontology/DCM",
					    SLICE_LIT("110107"), "Import"));
		if (h != NULL && h->trigger.len > 0)
			fhir_array_append(a, subtypes,
					  coding(a, "http://terminology.hl7.org/CodeSystem/v2-0003",
						 header_text(a, e->msg, h->trigger), NULL));
		snprintf(desc, sizeof(desc), "%s%s", hl7_ack_code_name(e->ack),
			 e->duplicate ? " (resent message, not stored again)" : "");
	}
	if (fhir_array_len(subtypes) > 0)
		fhir_object_set_cstr(a, r, "subtype", subtypes);
	fhir_object_set_cstr(a, r, "action", str(a, slice_make(&e->action, 1)));
	fhir_object_set_cstr(a, r, "recorded", str(a, SLICE_LIT(RECORDED_PLACEHOLDER)));
	fhir_object_set_cstr(a, r, "outcome", str(a, slice_cstr(outcome_of(e))));
	fhir_object_set_cstr(a, r, "outcomeDesc", str(a, slice_cstr(desc)));

	/* The agent: the REST client (by its client id), or the sending application. */
	if (e->interaction == NULL && e->msg != NULL) {
		const hl7_header_t *h = hl7_msg_header(e->msg);
		slice_t app = header_text(a, e->msg, h->sending_app);
		slice_t fac = header_text(a, e->msg, h->sending_fac);
		buf_t b = BUF_INIT;

		buf_append_slice(&b, app);
		if (fac.len > 0) {
			buf_append_byte(&b, '|');
			buf_append_slice(&b, fac);
		}
		who = arena_slice_dup(a, buf_slice(&b));
		buf_free(&b);
		if (who.len > 0)
			fhir_object_set_cstr(
			    a, agent, "who",
			    identifier_ref(a, "urn:fhirgate:hl7-sender", who, who));
	} else if (e->interaction != NULL && who.len > 0) {
		fhir_object_set_cstr(a, agent, "who",
				     identifier_ref(a, "urn:fhirgate:client", who, who));
	}
	fhir_object_set_cstr(a, agent, "name", str(a, who.len > 0 ? who : slice_cstr("anonymous")));
	fhir_object_set_cstr(a, agent, "requestor", fhir_bool_new(a, true));
	if (e->peer.len > 0)
		fhir_object_set_cstr(a, agent, "network", network(a, e->peer));
	agents = fhir_array_new(a);
	fhir_array_append(a, agents, agent);
	fhir_object_set_cstr(a, r, "agent", agents);

	obs = fhir_object_new(a);
	fhir_object_set_cstr(a, obs, "display", str(a, SLICE_LIT("fhirgate")));
	fhir_object_set_cstr(a, source, "observer", obs);
	fhir_array_append(a, types,
			  coding(a, "http://terminology.hl7.org/CodeSystem/security-source-type",
				 SLICE_LIT("4"), "Application Server"));
	fhir_object_set_cstr(a, source, "type", types);
	fhir_object_set_cstr(a, r, "source", source);

	/* Entities: the resource acted on (and a search's query), or the message and what it
	 * wrote. */
	if (e->interaction != NULL && (e->type.len > 0 || e->query.len > 0)) {
		fhir_node_t *ent = fhir_object_new(a);

		if (e->type.len > 0 && e->id.len > 0) {
			fhir_node_t *what = fhir_object_new(a);
			char *ref = arena_printf(a, "%.*s/%.*s", (int)e->type.len, e->type.ptr,
						 (int)e->id.len, e->id.ptr);

			fhir_object_set_cstr(a, what, "reference", str(a, slice_cstr(ref)));
			fhir_object_set_cstr(a, ent, "what", what);
		}
		fhir_object_set_cstr(
		    a, ent, "type",
		    coding(a, "http://terminology.hl7.org/CodeSystem/audit-entity-type",
			   SLICE_LIT("2"), "System Object"));
		if (e->type.len > 0 && e->id.len == 0)
			set_str(a, ent, "name", e->type);
		if (e->query.len > 0) {
			size_t cap = 4 * ((e->query.len + 2) / 3) + 1;
			unsigned char *b64 = arena_alloc(a, cap);
			int n = EVP_EncodeBlock(b64, (const unsigned char *)e->query.ptr,
						(int)e->query.len);

			fhir_object_set_cstr(a, ent, "query",
					     str(a, slice_make((const char *)b64, (size_t)n)));
		}
		fhir_array_append(a, entities, ent);
	} else if (e->interaction == NULL) {
		const hl7_header_t *h = e->msg != NULL ? hl7_msg_header(e->msg) : NULL;
		fhir_node_t *ent = fhir_object_new(a), *details = fhir_array_new(a);
		fhir_object_set_cstr(a, ent, "what",
				     identifier_ref(a, "urn:fhirgate:message",
						    SLICE_LIT(SEQ_PLACEHOLDER), slice_make("", 0)));
		fhir_object_set_cstr(
		    a, ent, "type",
		    coding(a, "http://terminology.hl7.org/CodeSystem/audit-entity-type",
			   SLICE_LIT("2"), "System Object"));
		if (h != NULL)
			set_str(a, ent, "name",
				header_text(
				    a, e->msg,
				    slice_cstr(arena_printf(a, "%.*s^%.*s", (int)h->msg_code.len,
							    h->msg_code.ptr, (int)h->trigger.len,
							    h->trigger.ptr))));
		if (h != NULL && h->control_id.len > 0) {
			fhir_node_t *d = fhir_object_new(a);

			fhir_object_set_cstr(a, d, "type", str(a, SLICE_LIT("MSH-10")));
			fhir_object_set_cstr(a, d, "valueString",
					     str(a, header_text(a, e->msg, h->control_id)));
			fhir_array_append(a, details, d);
			fhir_object_set_cstr(a, ent, "detail", details);
		}
		fhir_array_append(a, entities, ent);
		for (size_t i = 0; i < e->nrefs; i++) {
			fhir_node_t *w = fhir_object_new(a), *what = fhir_object_new(a);

			fhir_object_set_cstr(a, what, "reference", str(a, e->refs[i]));
			fhir_object_set_cstr(a, w, "what", what);
			fhir_object_set_cstr(
			    a, w, "type",
			    coding(a, "http://terminology.hl7.org/CodeSystem/audit-entity-type",
				   SLICE_LIT("2"), "System Object"));
			fhir_array_append(a, entities, w);
		}
	}
	if (fhir_array_len(entities) > 0)
		fhir_object_set_cstr(a, r, "entity", entities);
	fhir_node_prune(r);
	return r;
}

void
audit_key_id(uint64_t key, char out[AUDIT_ID_LEN + 1])
{
	snprintf(out, AUDIT_ID_LEN + 1, "%016llx", (unsigned long long)key);
}

bool
audit_id_key(slice_t id, uint64_t *key)
{
	uint64_t k = 0;

	if (id.len != AUDIT_ID_LEN)
		return false;
	for (size_t i = 0; i < id.len; i++) {
		char ch = id.ptr[i];

		if (ch >= '0' && ch <= '9')
			k = k << 4 | (uint64_t)(ch - '0');
		else if (ch >= 'a' && ch <= 'f')
			k = k << 4 | (uint64_t)(ch - 'a' + 10);
		else
			return false;
	}
	*key = k;
	return true;
}

void
audit_prepare(arena_t *a, const audit_event_t *e, audit_prepared_t *out)
{
	fhir_node_t *res;
	buf_t b = BUF_INIT;
	slice_t *refs;
	size_t nrefs = 0, cap = e->nrefs + 1;

	memset(out, 0, sizeof(*out));
	out->ack = e->ack;
	out->time_ns = e->time_ns;
	res = build(a, e, SLICE_LIT(ID_PLACEHOLDER));
	if (fhir_json_write(res, false, &b) < 0 || b.len < sizeof(BODY_PREFIX) - 1 ||
	    memcmp(b.data, BODY_PREFIX, sizeof(BODY_PREFIX) - 1) != 0) {
		buf_free(&b);
		return;
	}
	out->body = arena_slice_dup(a, buf_slice(&b));
	buf_free(&b);
	/* The entity references, as the search index writes them ("id|Type"), for entity= and
	 * patient= searches. */
	refs = arena_alloc(a, cap * sizeof(*refs));
	if (e->interaction != NULL && e->type.len > 0 && e->id.len > 0 &&
	    fhir_search_ref_key(a,
				slice_cstr(arena_printf(a, "%.*s/%.*s", (int)e->type.len,
							e->type.ptr, (int)e->id.len, e->id.ptr)),
				SLICE_NULL, &refs[nrefs]))
		nrefs++;
	for (size_t i = 0; e->interaction == NULL && i < e->nrefs; i++)
		if (fhir_search_ref_key(a, e->refs[i], SLICE_NULL, &refs[nrefs]))
			nrefs++;
	/* Too long or odd references are left out: searches for them scan instead. */
	for (size_t i = nrefs; i-- > 0;)
		if (refs[i].len == 0 || refs[i].len > STORE_AUDIT_REF_MAX ||
		    memchr(refs[i].ptr, 0, refs[i].len) != NULL)
			refs[i] = refs[--nrefs];
	out->refs = refs;
	out->nrefs = nrefs;
	out->ok = true;
}

/* s with the placeholder replaced by seq, in a copy (the caller writes into it). */
static slice_t
patch(arena_t *a, slice_t s, const char *seq)
{
	static const size_t pl = sizeof(SEQ_PLACEHOLDER) - 1, cl = sizeof(SEQ_CONTEXT) - 1;
	const char *at = memmem(s.ptr, s.len, SEQ_CONTEXT SEQ_PLACEHOLDER, cl + pl);
	size_t before, sl = strlen(seq);
	char *out;

	if (at == NULL)
		return arena_slice_dup(a, s);
	at += cl;
	before = (size_t)(at - s.ptr);
	out = arena_alloc(a, s.len - pl + sl);
	memcpy(out, s.ptr, before);
	memcpy(out + before, seq, sl);
	memcpy(out + before + sl, at + pl, s.len - before - pl);
	return slice_make(out, s.len - pl + sl);
}

int
audit_put_prepared(store_txn_t *t, arena_t *a, const audit_prepared_t *p, uint64_t seq)
{
	static const size_t rl = sizeof(RECORDED_KEY) - 1, tl = sizeof(RECORDED_PLACEHOLDER) - 1;
	char num[24], id[AUDIT_ID_LEN + 1], when[40];
	slice_t body;
	char *rec;
	uint64_t key;
	int rc;

	if (!p->ok)
		return -FG_EINVAL;
	snprintf(num, sizeof(num), "%llu", (unsigned long long)seq);
	body = patch(a, p->body, num);
	/* A JSON string cannot hold the bare key (its quotes would be escaped): the first match
	 * is the element. */
	rec = memmem(body.ptr, body.len, RECORDED_KEY, rl);
	if (rec == NULL || (size_t)(body.ptr + body.len - rec) < rl + tl)
		return -FG_EINVAL;
	if ((rc = store_audit_next_key(t, p->time_ns, &key)) < 0)
		return rc;
	audit_key_id(key, id);
	time_format_rfc3339(key, when, sizeof(when));
	if (strlen(when) != tl)
		return -FG_EINVAL;
	memcpy((char *)body.ptr + sizeof(BODY_PREFIX) - 1, id, AUDIT_ID_LEN);
	memcpy(rec + rl, when, tl);
	return store_audit_append(t, key, body, p->refs, p->nrefs);
}

int
audit_put(store_txn_t *t, arena_t *a, const audit_event_t *e)
{
	audit_prepared_t p;

	audit_prepare(a, e, &p);
	return audit_put_prepared(t, a, &p, e->seq);
}

/* ---- REST events through the writer ---- */

/* REST events are built on the I/O threads and collected in one open batch, which is queued to
 * the writer as one job when audit_flush runs (every AUDIT_FLUSH_MS from the main thread) or when
 * it holds AUDIT_BATCH_FLUSH events: the writer then commits a few hundred events at a time, with
 * one sync, instead of a small transaction per request. */
#define AUDIT_BATCH_FLUSH 1024
#define AUDIT_BATCH_MAX   4096

typedef struct {
	writer_job_t wj; /* first */
	arena_t *a;
	audit_prepared_t *ev;
	size_t n, cap;
} audit_batch_t;

static pthread_mutex_t batch_mu = PTHREAD_MUTEX_INITIALIZER;
static audit_batch_t *batch_open; /* not queued yet; under batch_mu */

static int
batch_apply(writer_job_t *wj, store_txn_t *t)
{
	audit_batch_t *b = (audit_batch_t *)wj;
	int rc = 0;

	for (size_t i = 0; i < b->n && rc >= 0; i++) {
		rc = audit_put_prepared(t, b->a, &b->ev[i], 0);
		/* A malformed event must not fail the batch it rides in. */
		if (rc == -FG_EINVAL)
			rc = 0;
	}
	return rc;
}

static void
batch_done(writer_job_t *wj, int rc)
{
	audit_batch_t *b = (audit_batch_t *)wj;

	if (rc < 0)
		log_error("audit", "%zu AuditEvents were not stored: %s", b->n, fg_strerror(rc));
	arena_free(b->a);
	free(b->ev);
	free(b);
}

static audit_batch_t *
batch_new(void)
{
	audit_batch_t *b = xcalloc(1, sizeof(*b));

	b->a = arena_new(64 * 1024);
	b->wj.apply = batch_apply;
	b->wj.done = batch_done;
	return b;
}

static void
batch_add(audit_batch_t *b, const audit_prepared_t *p)
{
	audit_prepared_t *q;

	if (b->n == b->cap) {
		b->cap = b->cap ? b->cap * 2 : 64;
		b->ev = xreallocarray(b->ev, b->cap, sizeof(*b->ev));
	}
	q = &b->ev[b->n++];
	*q = *p;
	q->body = arena_slice_dup(b->a, p->body);
	q->refs = arena_alloc(b->a, (p->nrefs ? p->nrefs : 1) * sizeof(*q->refs));
	for (size_t i = 0; i < p->nrefs; i++)
		q->refs[i] = arena_slice_dup(b->a, p->refs[i]);
}

/* The open batch, when it has events and the writer's queue has room; under batch_mu. */
static audit_batch_t *
batch_take(writer_t *w)
{
	audit_batch_t *b = batch_open;

	if (b == NULL || b->n == 0 || writer_full(w))
		return NULL;
	batch_open = NULL;
	b->wj.bytes = sizeof(*b) + arena_used(b->a) + b->cap * sizeof(*b->ev);
	return b;
}

static void
drop(void)
{
	static log_ratelimit_t rl;
	static pthread_mutex_t rl_mu = PTHREAD_MUTEX_INITIALIZER;
	bool say;

	atomic_fetch_add(&dropped, 1);
	pthread_mutex_lock(&rl_mu);
	say = log_ratelimit_allow(&rl);
	pthread_mutex_unlock(&rl_mu);
	if (say)
		log_warn("audit", "writer queue full: AuditEvent dropped (%llu so far)",
			 (unsigned long long)atomic_load(&dropped));
}

void
audit_submit(writer_t *w, const audit_event_t *e)
{
	arena_t *a = arena_new(2048);
	audit_event_t re = *e;
	audit_prepared_t p;
	audit_batch_t *full = NULL;
	bool added = false;

	re.msg = NULL;
	re.refs = NULL;
	re.nrefs = 0;
	audit_prepare(a, &re, &p);
	if (!p.ok) {
		arena_free(a);
		return;
	}
	pthread_mutex_lock(&batch_mu);
	if (batch_open != NULL && batch_open->n >= AUDIT_BATCH_MAX)
		full = batch_take(w);
	if (batch_open == NULL)
		batch_open = batch_new();
	if (batch_open->n < AUDIT_BATCH_MAX) {
		batch_add(batch_open, &p);
		added = true;
	}
	if (full == NULL && batch_open->n >= AUDIT_BATCH_FLUSH)
		full = batch_take(w);
	pthread_mutex_unlock(&batch_mu);
	arena_free(a);
	if (full != NULL)
		(void)writer_submit(w, &full->wj);
	if (!added)
		drop();
}

void
audit_flush(writer_t *w)
{
	audit_batch_t *b;

	pthread_mutex_lock(&batch_mu);
	b = batch_take(w);
	pthread_mutex_unlock(&batch_mu);
	if (b != NULL)
		(void)writer_submit(w, &b->wj);
}

void
audit_discard(void)
{
	audit_batch_t *b;

	pthread_mutex_lock(&batch_mu);
	b = batch_open;
	batch_open = NULL;
	pthread_mutex_unlock(&batch_mu);
	if (b != NULL && b->n > 0)
		log_error("audit", "%zu AuditEvents were not stored: the writer stopped", b->n);
	if (b != NULL)
		batch_done(&b->wj, 0);
}
