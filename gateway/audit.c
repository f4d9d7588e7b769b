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
#include "fhir/tree.h"
#include "gateway/ingest.h"
#include "lib/buf.h"
#include "lib/err.h"
#include "lib/log.h"
#include "lib/timeutil.h"
#include "lib/xalloc.h"

static atomic_uint_fast64_t id_counter;

/* Stands for the message's sequence number in a prepared event (id characters only, so that
 * JSON and index values carry it unescaped). */
#define SEQ_PLACEHOLDER "fgseq0placeholder"
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
	char when[40], desc[64];
	slice_t who = e->who;

	time_format_rfc3339(e->time_ns, when, sizeof(when));
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
	fhir_object_set_cstr(a, r, "recorded", str(a, slice_cstr(when)));
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
		char seq[24];

		if (e->seq_placeholder)
			snprintf(seq, sizeof(seq), "%s", SEQ_PLACEHOLDER);
		else
			snprintf(seq, sizeof(seq), "%llu", (unsigned long long)e->seq);
		fhir_object_set_cstr(
		    a, ent, "what",
		    identifier_ref(a, "urn:fhirgate:message", slice_cstr(seq), slice_make("", 0)));
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

/* Builds e with a fresh id: its body and index entries. */
static int
make(arena_t *a, const audit_event_t *e, slice_t *id, slice_t *body, store_idx_entry_t **entries,
     size_t *n)
{
	char idbuf[40];
	fhir_node_t *res;
	buf_t b = BUF_INIT;

	/* Unique: the time, then a process-wide counter. */
	snprintf(idbuf, sizeof(idbuf), "%llx-%llx", (unsigned long long)(e->time_ns / 1000u),
		 (unsigned long long)atomic_fetch_add(&id_counter, 1));
	*id = arena_slice_dup(a, slice_cstr(idbuf));
	res = build(a, e, *id);
	if (ingest_index_entries(a, res, entries, n) < 0 || fhir_json_write(res, false, &b) < 0) {
		buf_free(&b);
		return -FG_EINVAL;
	}
	*body = arena_slice_dup(a, buf_slice(&b));
	buf_free(&b);
	return 0;
}

static int
put(store_txn_t *t, slice_t id, slice_t body, store_idx_entry_t *entries, size_t n,
    uint64_t time_ns)
{
	store_res_put_t p = {0};
	store_res_result_t out;

	p.type = SLICE_LIT("AuditEvent");
	p.id = id;
	p.body = body;
	p.entries = entries;
	p.n_entries = n;
	p.now_ns = time_ns;
	return store_res_put(t, &p, &out);
}

int
audit_put(store_txn_t *t, arena_t *a, const audit_event_t *e)
{
	slice_t id, body;
	store_idx_entry_t *entries;
	size_t n;
	int rc = make(a, e, &id, &body, &entries, &n);

	return rc < 0 ? rc : put(t, id, body, entries, n, e->time_ns);
}

void
audit_prepare(arena_t *a, const audit_event_t *e, audit_prepared_t *out)
{
	audit_event_t pe = *e;

	memset(out, 0, sizeof(*out));
	pe.seq_placeholder = true;
	out->ack = e->ack;
	out->time_ns = e->time_ns;
	out->ok = make(a, &pe, &out->id, &out->body, &out->entries, &out->n) == 0;
}

/* s with the placeholder replaced by seq (s itself when it has none). */
static slice_t
patch(arena_t *a, slice_t s, const char *seq)
{
	static const size_t pl = sizeof(SEQ_PLACEHOLDER) - 1;
	const char *at = s.len >= pl ? memmem(s.ptr, s.len, SEQ_PLACEHOLDER, pl) : NULL;
	size_t before, sl = strlen(seq);
	char *out;

	if (at == NULL)
		return s;
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
	char num[24];

	snprintf(num, sizeof(num), "%llu", (unsigned long long)seq);
	for (size_t i = 0; i < p->n; i++)
		p->entries[i].value = patch(a, p->entries[i].value, num);
	return put(t, p->id, patch(a, p->body, num), p->entries, p->n, p->time_ns);
}

/* ---- REST events through the writer ---- */

typedef struct {
	writer_job_t wj; /* first */
	arena_t *a;
	audit_event_t e;
} audit_job_t;

static int
job_apply(writer_job_t *wj, store_txn_t *t)
{
	audit_job_t *j = (audit_job_t *)wj;
	int rc = audit_put(t, j->a, &j->e);

	/* A malformed event must not fail the batch it rides in. */
	return rc == -FG_EINVAL ? 0 : rc;
}

static void
job_done(writer_job_t *wj, int rc)
{
	audit_job_t *j = (audit_job_t *)wj;

	if (rc < 0)
		log_error("audit", "an AuditEvent was not stored: %s", fg_strerror(rc));
	arena_free(j->a);
	free(j);
}

void
audit_submit(writer_t *w, const audit_event_t *e)
{
	static log_ratelimit_t rl;
	static pthread_mutex_t rl_mu = PTHREAD_MUTEX_INITIALIZER;
	audit_job_t *j;

	if (writer_full(w)) {
		bool say;

		atomic_fetch_add(&dropped, 1);
		pthread_mutex_lock(&rl_mu);
		say = log_ratelimit_allow(&rl);
		pthread_mutex_unlock(&rl_mu);
		if (say)
			log_warn("audit", "writer queue full: AuditEvent dropped (%llu so far)",
				 (unsigned long long)atomic_load(&dropped));
		return;
	}
	j = xcalloc(1, sizeof(*j));
	j->a = arena_new(512);
	j->e = *e;
	j->e.peer = arena_slice_dup(j->a, e->peer);
	j->e.who = arena_slice_dup(j->a, e->who);
	j->e.type = arena_slice_dup(j->a, e->type);
	j->e.id = arena_slice_dup(j->a, e->id);
	j->e.query = arena_slice_dup(j->a, e->query);
	j->e.msg = NULL;
	j->e.refs = NULL;
	j->e.nrefs = 0;
	j->wj.apply = job_apply;
	j->wj.done = job_done;
	j->wj.bytes = sizeof(*j) + arena_used(j->a);
	(void)writer_submit(w, &j->wj);
}
