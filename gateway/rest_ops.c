/* Operator operations on the message log: $messages and $dead-letters list it (as Parameters;
 * metadata only, never message bodies), $replay re-checks dead letters with the mappings in force
 * and stores those that now pass (one writer job, like any write). */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "fhir/tree.h"
#include "gateway/ingest.h"
#include "gateway/rest_int.h"
#include "lib/err.h"
#include "lib/log.h"
#include "lib/timeutil.h"

#define OPS_COUNT_DEFAULT 100
#define OPS_COUNT_MAX     1000

/* _count and from (a sequence) of the query; false (answered 400) when malformed. */
static bool
ops_paging(rest_ctx_t *c, uint64_t *from, uint64_t *count)
{
	http_query_t q;
	slice_t k, v;

	*from = 0;
	*count = OPS_COUNT_DEFAULT;
	http_query_init(&q, c->query, c->a);
	while (http_query_next(&q, &k, &v)) {
		uint64_t *dst = slice_eq_cstr(k, "from")     ? from
				: slice_eq_cstr(k, "_count") ? count
							     : NULL;

		if (dst != NULL && !slice_to_u64(v, dst)) {
			rest_send_error(c, 400, "invalid", "%.*s wants a whole number", (int)k.len,
					k.ptr);
			return false;
		}
	}
	if (*count > OPS_COUNT_MAX)
		*count = OPS_COUNT_MAX;
	return true;
}

static void
part_add(arena_t *a, fhir_node_t *parts, const char *name, const char *vtype, fhir_node_t *val)
{
	fhir_node_t *p = fhir_object_new(a);

	fhir_object_set_cstr(a, p, "name", fhir_string_new(a, slice_cstr(name)));
	fhir_object_set_cstr(a, p, vtype, val);
	fhir_array_append(a, parts, p);
}

static fhir_node_t *
str(arena_t *a, slice_t s)
{
	return fhir_string_new(a, s);
}

static fhir_node_t *
instant(arena_t *a, uint64_t ns)
{
	char when[40];

	time_format_rfc3339(ns, when, sizeof(when));
	return fhir_string_new(a, slice_cstr(when));
}

/* A text that came from a sender (MSH fields): only valid UTF-8 printable bytes pass. */
static fhir_node_t *
sender_text(arena_t *a, slice_t s)
{
	char *out = arena_alloc(a, s.len + 1);
	size_t n = 0;

	for (size_t i = 0; i < s.len; i++)
		out[n++] = (unsigned char)s.ptr[i] < 0x20 || (unsigned char)s.ptr[i] >= 0x7f
			       ? '?'
			       : s.ptr[i];
	return fhir_string_new(a, slice_make(out, n));
}

typedef struct {
	rest_ctx_t *c;
	fhir_node_t *params;
	uint64_t left;
	store_txn_t *t;
} list_ctx_t;

/* MSH-9 and MSH-10 of a stored message (message type and control id: not patient data). */
static void
msg_header(rest_ctx_t *c, slice_t raw, fhir_node_t *parts)
{
	hl7_limits_t lim;
	hl7_msg_t *m = NULL;
	hl7_error_t err;

	hl7_limits_default(&lim);
	hl7_parse(c->a, raw.ptr, raw.len, &lim, &m, &err);
	if (m == NULL)
		return;
	if (hl7_msg_header(m)->msg_code.len > 0) {
		const hl7_header_t *h = hl7_msg_header(m);
		char type[64];

		snprintf(type, sizeof(type), "%.*s^%.*s",
			 (int)(h->msg_code.len > 20 ? 20 : h->msg_code.len), h->msg_code.ptr,
			 (int)(h->trigger.len > 20 ? 20 : h->trigger.len), h->trigger.ptr);
		part_add(c->a, parts, "messageType", "valueString",
			 sender_text(c->a, slice_cstr(type)));
	}
	if (hl7_msg_header(m)->control_id.len > 0)
		part_add(c->a, parts, "controlId", "valueString",
			 sender_text(c->a, hl7_msg_header(m)->control_id));
}

static int
dead_one(void *ctx, const store_dead_t *d)
{
	list_ctx_t *l = ctx;
	arena_t *a = l->c->a;
	fhir_node_t *p, *parts;
	store_msg_t m;
	char seq[24], code[8];

	if (l->left == 0)
		return 1;
	l->left--;
	p = fhir_object_new(a);
	parts = fhir_array_new(a);
	fhir_object_set_cstr(a, p, "name", str(a, SLICE_LIT("deadLetter")));
	snprintf(seq, sizeof(seq), "%llu", (unsigned long long)d->seq);
	snprintf(code, sizeof(code), "%u", (unsigned)d->code);
	part_add(a, parts, "seq", "valueString", str(a, slice_cstr(seq)));
	part_add(a, parts, "time", "valueInstant", instant(a, d->time_ns));
	part_add(a, parts, "stage", "valueCode",
		 str(a, slice_cstr(ingest_stage_name((ingest_stage_t)d->stage))));
	part_add(a, parts, "code", "valueCode", str(a, slice_cstr(code)));
	if (d->location.len > 0)
		part_add(a, parts, "location", "valueString", sender_text(a, d->location));
	part_add(a, parts, "reason", "valueString", sender_text(a, d->reason));
	if (store_msg_get(l->t, d->seq, &m) == 0)
		msg_header(l->c, m.raw, parts);
	fhir_object_set_cstr(a, p, "part", parts);
	fhir_array_append(a, l->params, p);
	return 0;
}

static int
message_one(void *ctx, const store_msg_t *m)
{
	list_ctx_t *l = ctx;
	arena_t *a = l->c->a;
	fhir_node_t *p, *parts;
	char seq[24], status[2] = {(char)m->status, 0};

	if (l->left == 0)
		return 1;
	l->left--;
	p = fhir_object_new(a);
	parts = fhir_array_new(a);
	fhir_object_set_cstr(a, p, "name", str(a, SLICE_LIT("message")));
	snprintf(seq, sizeof(seq), "%llu", (unsigned long long)m->seq);
	part_add(a, parts, "seq", "valueString", str(a, slice_cstr(seq)));
	part_add(a, parts, "received", "valueInstant", instant(a, m->received_ns));
	part_add(a, parts, "status", "valueCode",
		 str(a, slice_cstr(status[0] == 'A'   ? "accepted"
				   : status[0] == 'R' ? "rejected"
						      : "error")));
	part_add(a, parts, "peer", "valueString", sender_text(a, m->peer));
	part_add(a, parts, "bytes", "valueUnsignedInt",
		 fhir_int_new(a, (int64_t)(m->raw.len > 0x7fffffff ? 0x7fffffff : m->raw.len)));
	msg_header(l->c, m->raw, parts);
	fhir_object_set_cstr(a, p, "part", parts);
	fhir_array_append(a, l->params, p);
	return 0;
}

static void
list_log(rest_ctx_t *c, bool dead)
{
	list_ctx_t l = {.c = c};
	fhir_node_t *out = fhir_object_new(c->a);
	uint64_t from;
	int rc;

	if (!ops_paging(c, &from, &l.left) || (l.t = rest_read_begin(c)) == NULL)
		return;
	l.params = fhir_array_new(c->a);
	rc = dead ? store_dead_foreach(l.t, from, dead_one, &l)
		  : store_msg_foreach(l.t, from, message_one, &l);
	store_txn_abort(l.t);
	if (rc < 0) {
		rest_send_error(c, 500, "exception", "the store could not be read: %s",
				fg_strerror(rc));
		return;
	}
	fhir_object_set_cstr(c->a, out, "resourceType", str(c->a, SLICE_LIT("Parameters")));
	if (fhir_array_len(l.params) > 0)
		fhir_object_set_cstr(c->a, out, "parameter", l.params);
	rest_send(c, 200, out, NULL);
}

void
rest_do_dead_letters(rest_ctx_t *c)
{
	list_log(c, true);
}

void
rest_do_messages(rest_ctx_t *c)
{
	list_log(c, false);
}

/* ---- $replay ---- */

typedef struct {
	uint64_t seq;
	bool found;           /* a dead letter with its message was there when checked */
	bool frame;           /* an oversize frame: never replayable */
	ingest_check_t check; /* made on the I/O thread from the stored bytes */
	int result;           /* from the writer: 0 replayed, 1 still failing, -FG_ENOTFOUND gone */
} replay_item_t;

typedef struct {
	replay_item_t *items;
	size_t n;
	maps_ref_t *ref;
} replay_t;

static int
replay_apply(void *arg, store_txn_t *t)
{
	replay_t *r = arg;
	uint64_t now = time_now_ns();

	for (size_t i = 0; i < r->n; i++) {
		replay_item_t *it = &r->items[i];
		store_dead_t d;
		int rc;

		it->result = -FG_ENOTFOUND;
		if (!it->found)
			continue;
		/* Replayed by someone else since it was read: nothing to do. */
		if ((rc = store_dead_get(t, it->seq, &d)) == -FG_ENOTFOUND)
			continue;
		if (rc == 0)
			rc = ingest_replay(t, &it->check, &d, now);
		if (rc < 0)
			return rc;
		it->result = rc;
	}
	return 0;
}

static void
replay_finish(rest_ctx_t *c, void *arg, int rc)
{
	replay_t *r = arg;
	fhir_node_t *out, *params;

	maps_release(r->ref);
	if (rc < 0) {
		rest_send_error(c, 500, "exception",
				"the replay could not be stored (%s); nothing changed",
				fg_strerror(rc));
		return;
	}
	out = fhir_object_new(c->a);
	params = fhir_array_new(c->a);
	fhir_object_set_cstr(c->a, out, "resourceType", str(c->a, SLICE_LIT("Parameters")));
	for (size_t i = 0; i < r->n; i++) {
		replay_item_t *it = &r->items[i];
		fhir_node_t *p = fhir_object_new(c->a), *parts = fhir_array_new(c->a);
		char seq[24];
		const char *outcome = it->result == 0   ? "replayed"
				      : it->result == 1 ? "still-failing"
							: "not-found";

		snprintf(seq, sizeof(seq), "%llu", (unsigned long long)it->seq);
		fhir_object_set_cstr(c->a, p, "name", str(c->a, SLICE_LIT("result")));
		part_add(c->a, parts, "seq", "valueString", str(c->a, slice_cstr(seq)));
		part_add(c->a, parts, "outcome", "valueCode", str(c->a, slice_cstr(outcome)));
		if (it->result == 1 && it->frame) {
			part_add(c->a, parts, "stage", "valueCode", str(c->a, SLICE_LIT("frame")));
			part_add(
			    c->a, parts, "reason", "valueString",
			    str(c->a, SLICE_LIT("an oversize frame kept only its head: the sender "
						"must send the message again")));
		} else if (it->result == 1) {
			part_add(c->a, parts, "stage", "valueCode",
				 str(c->a, slice_cstr(ingest_stage_name(it->check.stage))));
			part_add(c->a, parts, "reason", "valueString",
				 sender_text(c->a, slice_cstr(it->check.err.text)));
		}
		if (it->result == 0)
			part_add(c->a, parts, "resources", "valueUnsignedInt",
				 fhir_int_new(c->a, (int64_t)it->check.nres));
		fhir_object_set_cstr(c->a, p, "part", parts);
		fhir_array_append(c->a, params, p);
	}
	if (fhir_array_len(params) > 0)
		fhir_object_set_cstr(c->a, out, "parameter", params);
	rest_send(c, 200, out, NULL);
}

typedef struct {
	uint64_t *seqs;
	size_t n, cap;
	arena_t *a;
} seqs_t;

static void
seqs_add(seqs_t *s, uint64_t seq)
{
	s->seqs = arena_array_grow(s->a, s->seqs, s->n, &s->cap, sizeof(*s->seqs));
	s->seqs[s->n++] = seq;
}

static int
collect_dead(void *ctx, const store_dead_t *d)
{
	seqs_t *s = ctx;

	if (s->n >= OPS_COUNT_MAX)
		return 1;
	seqs_add(s, d->seq);
	return 0;
}

/* POST /fhir/$replay?seq=N[&seq=M...] or ?all=true (at most OPS_COUNT_MAX dead letters). */
void
rest_do_replay(rest_ctx_t *c)
{
	rest_t *rest = c->rest;
	seqs_t seqs = {.a = c->a};
	replay_t *r = arena_zalloc(c->a, sizeof(*r));
	ingest_opts_t opt = {.limits = rest->limits};
	bool all = false;
	http_query_t q;
	slice_t k, v;
	store_txn_t *t;
	uint64_t seq;

	http_query_init(&q, c->query, c->a);
	while (http_query_next(&q, &k, &v)) {
		if (slice_eq_cstr(k, "seq") && slice_to_u64(v, &seq)) {
			seqs_add(&seqs, seq);
		} else if (slice_eq_cstr(k, "all") && slice_eq_cstr(v, "true")) {
			all = true;
		} else if (k.len > 0 && k.ptr[0] != '_') {
			rest_send_error(c, 400, "invalid",
					"$replay takes seq=N (repeatable) or all=true");
			return;
		}
	}
	if (all == (seqs.n > 0)) {
		rest_send_error(c, 400, "invalid", "$replay takes seq=N (repeatable) or all=true");
		return;
	}
	if ((t = rest_read_begin(c)) == NULL)
		return;
	if (all && store_dead_foreach(t, 0, collect_dead, &seqs) < 0) {
		store_txn_abort(t);
		rest_send_error(c, 500, "exception", "the dead letters could not be read");
		return;
	}
	if (rest->maps != NULL)
		opt.maps = maps_acquire(rest->maps, &r->ref);
	/* The CPU work (parse, map, serialize, index) here; the writer only stores. */
	r->items = arena_zalloc(c->a, (seqs.n ? seqs.n : 1) * sizeof(*r->items));
	r->n = seqs.n;
	for (size_t i = 0; i < seqs.n; i++) {
		replay_item_t *it = &r->items[i];
		store_dead_t d;
		store_msg_t m;

		it->seq = seqs.seqs[i];
		if (store_dead_get(t, it->seq, &d) < 0 || store_msg_get(t, it->seq, &m) < 0)
			continue;
		it->found = true;
		it->frame = d.stage == INGEST_STAGE_FRAME;
		ingest_check(c->a, arena_slice_dup(c->a, m.raw).ptr, m.raw.len, &opt, &it->check);
	}
	store_txn_abort(t);
	log_info("rest", "replay of %zu dead letters requested", r->n);
	rest_submit_op(c, replay_apply, replay_finish, r);
}
