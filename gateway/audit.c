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

/* The AuditEvent is written as compact JSON directly (its shape is fixed), in the element order
 * of the R4 definition, leaving out what is empty; a string that is not UTF-8 fails the event. */
typedef struct {
	buf_t *out;
	int rc;
} jw_t;

static void
jraw(jw_t *w, const char *s)
{
	buf_append_cstr(w->out, s);
}

static void
jstr(jw_t *w, slice_t s)
{
	if (fhir_json_string_write(s, w->out) < 0)
		w->rc = -FG_EINVAL;
}

/* ,"key":"value" (nothing when value is empty); first: no comma. */
static void
jfield(jw_t *w, bool first, const char *key, slice_t v)
{
	if (v.len == 0)
		return;
	jraw(w, first ? "\"" : ",\"");
	jraw(w, key);
	jraw(w, "\":");
	jstr(w, v);
}

/* {"system":...,"code":...,"display":...} */
static void
jcoding(jw_t *w, const char *system, slice_t code, const char *display)
{
	jraw(w, "{\"system\":\"");
	jraw(w, system);
	jraw(w, "\"");
	jfield(w, false, "code", code);
	if (display != NULL) {
		jraw(w, ",\"display\":\"");
		jraw(w, display);
		jraw(w, "\"");
	}
	jraw(w, "}");
}

/* {"identifier":{"system":...,"value":...},"display":...} */
static void
jidentifier_ref(jw_t *w, const char *system, slice_t value, slice_t display)
{
	jraw(w, "{\"identifier\":{\"system\":\"");
	jraw(w, system);
	jraw(w, "\"");
	jfield(w, false, "value", value);
	jraw(w, "}");
	jfield(w, false, "display", display);
	jraw(w, "}");
}

static const char entity_type[] = "http://terminology.hl7.org/CodeSystem/audit-entity-type";

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

static const char *
outcome_of(const audit_event_t *e)
{
	if (e->interaction == NULL)
		return e->ack == HL7_ACK_AA ? "0" : e->ack == HL7_ACK_AE ? "4" : "8";
	return e->status < 400 ? "0" : e->status < 500 ? "4" : "8";
}

/* "prefix" + a + sep + b, in a. */
static slice_t
join(arena_t *a, slice_t x, char sep, slice_t y)
{
	char *p = arena_alloc(a, x.len + 1 + y.len);

	memcpy(p, x.ptr, x.len);
	p[x.len] = sep;
	memcpy(p + x.len + 1, y.ptr, y.len);
	return slice_make(p, x.len + 1 + y.len);
}

/* The REST entity: the resource acted on, or the type searched, and a search's query. */
static void
build_rest_entity(jw_t *w, arena_t *a, const audit_event_t *e)
{
	if (e->type.len == 0 && e->query.len == 0)
		return;
	jraw(w, ",\"entity\":[{");
	if (e->type.len > 0 && e->id.len > 0) {
		jraw(w, "\"what\":{");
		jfield(w, true, "reference", join(a, e->type, '/', e->id));
		jraw(w, "},");
	}
	jraw(w, "\"type\":");
	jcoding(w, entity_type, SLICE_LIT("2"), "System Object");
	if (e->type.len > 0 && e->id.len == 0)
		jfield(w, false, "name", e->type);
	if (e->query.len > 0) {
		size_t cap = 4 * ((e->query.len + 2) / 3) + 1;
		unsigned char *b64 = arena_alloc(a, cap);
		int n =
		    EVP_EncodeBlock(b64, (const unsigned char *)e->query.ptr, (int)e->query.len);

		jfield(w, false, "query", slice_make((const char *)b64, (size_t)n));
	}
	jraw(w, "}]");
}

/* A message's entities: the message (its sequence a placeholder), then what it wrote. */
static void
build_msg_entities(jw_t *w, arena_t *a, const audit_event_t *e, const hl7_header_t *h)
{
	slice_t name = SLICE_NULL, ctl = SLICE_NULL;

	jraw(w, ",\"entity\":[{\"what\":");
	jidentifier_ref(w, "urn:fhirgate:message", SLICE_LIT(SEQ_PLACEHOLDER), SLICE_NULL);
	jraw(w, ",\"type\":");
	jcoding(w, entity_type, SLICE_LIT("2"), "System Object");
	if (h != NULL) {
		name = header_text(a, e->msg, join(a, h->msg_code, '^', h->trigger));
		ctl = header_text(a, e->msg, h->control_id);
	}
	jfield(w, false, "name", name);
	if (ctl.len > 0) {
		jraw(w, ",\"detail\":[{\"type\":\"MSH-10\"");
		jfield(w, false, "valueString", ctl);
		jraw(w, "}]");
	}
	jraw(w, "}");
	for (size_t i = 0; i < e->nrefs; i++) {
		jraw(w, ",{\"what\":{");
		jfield(w, true, "reference", e->refs[i]);
		jraw(w, "},\"type\":");
		jcoding(w, entity_type, SLICE_LIT("2"), "System Object");
		jraw(w, "}");
	}
	jraw(w, "]");
}

/* Appends the JSON of e with placeholders for id, recorded and a message's sequence to out
 * (left as it was on failure). */
static int
build(arena_t *a, const audit_event_t *e, buf_t *out)
{
	const hl7_header_t *h =
	    e->interaction == NULL && e->msg != NULL ? hl7_msg_header(e->msg) : NULL;
	jw_t w = {out, 0};
	size_t start = out->len;
	char desc[64];
	slice_t who = e->who, trigger = SLICE_NULL, addr = peer_address(e->peer);
	const char *ident = "urn:fhirgate:client";

	jraw(&w, BODY_PREFIX ID_PLACEHOLDER "\",\"type\":");
	if (e->interaction != NULL) {
		jcoding(&w, "http://terminology.hl7.org/CodeSystem/audit-event-type",
			SLICE_LIT("rest"), "RESTful Operation");
		jraw(&w, ",\"subtype\":[");
		jcoding(&w, "http://hl7.org/fhir/restful-interaction", slice_cstr(e->interaction),
			NULL);
		jraw(&w, "]");
		snprintf(desc, sizeof(desc), "HTTP %d", e->status);
	} else {
		jcoding(&w, "http://dicom.nema.org/resources/ontology/DCM", SLICE_LIT("110107"),
			"Import");
		if (h != NULL)
			trigger = header_text(a, e->msg, h->trigger);
		if (trigger.len > 0) {
			jraw(&w, ",\"subtype\":[");
			jcoding(&w, "http://terminology.hl7.org/CodeSystem/v2-0003", trigger, NULL);
			jraw(&w, "]");
		}
		snprintf(desc, sizeof(desc), "%s%s", hl7_ack_code_name(e->ack),
			 e->duplicate ? " (resent message, not stored again)" : "");
		/* The agent: the sending application and facility. */
		who = SLICE_NULL;
		ident = "urn:fhirgate:hl7-sender";
		if (h != NULL) {
			slice_t app = header_text(a, e->msg, h->sending_app);
			slice_t fac = header_text(a, e->msg, h->sending_fac);

			who = fac.len > 0 ? join(a, app, '|', fac) : app;
		}
	}
	jfield(&w, false, "action", slice_make(&e->action, 1));
	jraw(&w, ",\"recorded\":\"" RECORDED_PLACEHOLDER "\",\"outcome\":\"");
	jraw(&w, outcome_of(e));
	jraw(&w, "\"");
	jfield(&w, false, "outcomeDesc", slice_cstr(desc));
	jraw(&w, ",\"agent\":[{");
	if (who.len > 0) {
		jraw(&w, "\"who\":");
		jidentifier_ref(&w, ident, who, who);
		jraw(&w, ",");
	}
	jfield(&w, true, "name", who.len > 0 ? who : SLICE_LIT("anonymous"));
	jraw(&w, ",\"requestor\":true");
	if (e->peer.len > 0) {
		jraw(&w, ",\"network\":{");
		jfield(&w, true, "address", addr);
		jraw(&w, addr.len > 0 ? ",\"type\":\"2\"}" : "\"type\":\"2\"}");
	}
	jraw(&w, "}],\"source\":{\"observer\":{\"display\":\"fhirgate\"},\"type\":[");
	jcoding(&w, "http://terminology.hl7.org/CodeSystem/security-source-type", SLICE_LIT("4"),
		"Application Server");
	jraw(&w, "]}");
	if (e->interaction != NULL)
		build_rest_entity(&w, a, e);
	else
		build_msg_entities(&w, a, e, h);
	jraw(&w, "}");
	if (w.rc != 0 && out->data != NULL) {
		out->len = start;
		out->data[start] = '\0';
	}
	return w.rc;
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
	buf_t b = BUF_INIT;
	slice_t *refs;
	size_t nrefs = 0, cap = e->nrefs + 1;

	memset(out, 0, sizeof(*out));
	out->ack = e->ack;
	out->time_ns = e->time_ns;
	if (build(a, e, &b) < 0) {
		buf_free(&b);
		return;
	}
	out->body = arena_slice_dup(a, buf_slice(&b));
	buf_free(&b);
	/* The entity references, as the search index writes them ("id|Type"), for entity= and
	 * patient= searches. */
	refs = arena_alloc(a, cap * sizeof(*refs));
	if (e->interaction != NULL && e->type.len > 0 && e->id.len > 0 &&
	    fhir_search_ref_key(a, join(a, e->type, '/', e->id), SLICE_NULL, &refs[nrefs]))
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
	b->wj.unordered = true; /* AuditEvents touch no resource: no deferred apply before them */
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
