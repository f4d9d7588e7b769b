/* Ingest rules: check a raw HL7 v2 message and record it (dedupe, message log, dead letters). */
#include "config.h"

#include "gateway/ingest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fhir/json.h"
#include "fhir/search.h"
#include "gateway/score.h"
#include "lib/buf.h"
#include "lib/err.h"
#include "lib/hash.h"
#include "lib/xalloc.h"

const char *
ingest_stage_name(ingest_stage_t stage)
{
	switch (stage) {
	case INGEST_STAGE_NONE:
		return "none";
	case INGEST_STAGE_FRAME:
		return "frame";
	case INGEST_STAGE_PARSE:
		return "parse";
	case INGEST_STAGE_VALIDATE:
		return "validate";
	case INGEST_STAGE_MAP:
		return "map";
	}
	return "unknown";
}

uint8_t
ingest_status_of(hl7_ack_code_t code)
{
	switch (code) {
	case HL7_ACK_AA:
	case HL7_ACK_CA:
		return 'A';
	case HL7_ACK_AR:
	case HL7_ACK_CR:
		return 'R';
	default:
		return 'E';
	}
}

hl7_ack_code_t
ingest_code_of_status(uint8_t status)
{
	return status == 'A' ? HL7_ACK_AA : status == 'R' ? HL7_ACK_AR : HL7_ACK_AE;
}

/* Dedupe key: sender (MSH-3, MSH-4) and MSH-10, each length-prefixed so no two differ only in
 * where one field ends. */
static slice_t
dedupe_key(arena_t *a, const hl7_header_t *h)
{
	size_t len = 6 + h->sending_app.len + h->sending_fac.len + h->control_id.len;
	buf_t b = BUF_INIT;
	slice_t key;

	if (h->control_id.len == 0 || len > 0xffff)
		return SLICE_NULL;
	buf_append_lpstr(&b, h->sending_app);
	buf_append_lpstr(&b, h->sending_fac);
	buf_append_lpstr(&b, h->control_id);
	key = arena_slice_dup(a, buf_slice(&b));
	buf_free(&b);
	return key;
}

int
ingest_index_entries(arena_t *a, const fhir_node_t *res, store_idx_entry_t **out, size_t *n)
{
	fhir_idx_entry_t *e = NULL;
	int rc = fhir_search_index(a, res, store_idx_value_max, &e, n);

	if (rc < 0)
		return rc;
	*out = arena_alloc(a, (*n ? *n : 1) * sizeof(**out));
	for (size_t i = 0; i < *n; i++) {
		(*out)[i].code = e[i].code;
		(*out)[i].value = e[i].value;
	}
	return 0;
}

int
ingest_res_entries(arena_t *a, ingest_res_t *r)
{
	int rc;

	if (r->tree == NULL)
		return 0;
	rc = ingest_index_entries(a, r->tree, &r->entries, &r->nentries);
	if (rc == 0)
		r->tree = NULL;
	return rc;
}

int
ingest_resources(arena_t *a, const map_result_t *r, bool lazy, ingest_res_t **out, size_t *n)
{
	buf_t b = BUF_INIT;
	ingest_res_t *res;
	int rc = 0;

	res = arena_zalloc(a, (r->nresources ? r->nresources : 1) * sizeof(*res));
	for (size_t i = 0; rc == 0 && i < r->nresources; i++) {
		const map_resource_t *mr = &r->resources[i];

		buf_reset(&b);
		rc = fhir_json_write(mr->resource, false, &b);
		res[i].type = mr->type;
		res[i].id = mr->id;
		res[i].body = arena_slice_dup(a, buf_slice(&b));
		res[i].tree = mr->resource;
		if (rc == 0 && !lazy)
			rc = ingest_res_entries(a, &res[i]);
	}
	*out = res;
	*n = rc == 0 ? r->nresources : 0;
	buf_free(&b);
	return rc;
}

static void
convert(arena_t *a, const ingest_opts_t *opt, ingest_check_t *out)
{
	map_result_t *r = NULL;
	int rc = map_convert(opt->maps, out->msg, &opt->map_opt, a, &r);

	out->conv = r;
	out->map_version = (uint32_t)map_set_version(opt->maps);
	if (rc == 0 && r != NULL && r->bundle != NULL)
		rc = ingest_resources(a, r, opt->lazy_entries, &out->res, &out->nres);
	if (rc == 0)
		return;
	out->stage = INGEST_STAGE_MAP;
	out->dead = true;
	if (r != NULL && r->error.code != 0) {
		out->err = r->error;
	} else {
		memset(&out->err, 0, sizeof(out->err));
		out->err.code = HL7_ERR_INTERNAL;
		out->err.ack = 'E';
		snprintf(out->err.text, sizeof(out->err.text), "conversion failed: %s",
			 fg_strerror(rc));
	}
	out->code = opt->accept_unmapped ? HL7_ACK_AA : HL7_ACK_AE;
}

void
ingest_check(arena_t *a, const char *raw, size_t len, const ingest_opts_t *opt, ingest_check_t *out)
{
	int rc;

	memset(out, 0, sizeof(*out));
	out->arena = a;
	out->code = HL7_ACK_AA;
	out->content_hash = hash_fnv1a64(raw, len, 0);
	rc = hl7_parse(a, raw, len, &opt->limits, &out->msg, &out->err);
	if (out->msg != NULL)
		out->key = dedupe_key(a, hl7_msg_header(out->msg));
	if (rc < 0) {
		out->stage = INGEST_STAGE_PARSE;
	} else if (hl7_msg_validate(out->msg, &out->err) < 0) {
		out->stage = INGEST_STAGE_VALIDATE;
	} else {
		if (opt->maps != NULL)
			convert(a, opt, out);
		return;
	}
	out->dead = true;
	out->code = out->err.ack == 'R' ? HL7_ACK_AR : HL7_ACK_AE;
}

void
ingest_error_location(const hl7_error_t *err, char *out, size_t cap)
{
	int n = 0;

	out[0] = '\0';
	if (err->segment[0] == '\0')
		return;
	n = snprintf(out, cap, "%s", err->segment);
	if (err->field > 0 && n >= 0 && (size_t)n < cap)
		n += snprintf(out + n, cap - (size_t)n, "-%u", err->field);
	if (err->field > 0 && err->comp > 0 && n >= 0 && (size_t)n < cap)
		n += snprintf(out + n, cap - (size_t)n, ".%u", err->comp);
	if (err->field > 0 && err->comp > 0 && err->sub > 0 && n >= 0 && (size_t)n < cap)
		snprintf(out + n, cap - (size_t)n, ".%u", err->sub);
}

/* The dead letter of a checked message (d->seq set by the caller). */
static int
dead_put(store_txn_t *t, const ingest_check_t *c, store_dead_t *d, uint64_t now_ns)
{
	char loc[48];

	ingest_error_location(&c->err, loc, sizeof(loc));
	d->time_ns = now_ns;
	d->stage = (uint8_t)c->stage;
	d->code = (uint16_t)c->err.code;
	d->map_version = c->map_version;
	d->reason = slice_cstr(c->err.text);
	d->location = slice_cstr(loc);
	return store_dead_put(t, d);
}

static store_res_put_t
res_put_of(const ingest_res_t *r, uint64_t now_ns)
{
	return (store_res_put_t){.type = r->type,
				 .id = r->id,
				 .body = r->body,
				 .entries = r->entries,
				 .n_entries = r->nentries,
				 .now_ns = now_ns};
}

int
ingest_store_resources(store_txn_t *t, const ingest_res_t *res, size_t n, uint64_t now_ns,
		       size_t *unchanged)
{
	int rc = 0;

	for (size_t i = 0; rc == 0 && i < n; i++) {
		store_res_put_t p = res_put_of(&res[i], now_ns);
		store_res_result_t r;

		rc = store_res_put(t, &p, &r);
		if (rc == 0 && !r.unchanged)
			rc = score_hook_note(t, p.type, p.id, p.body);
		if (rc == 0 && r.unchanged && unchanged != NULL)
			(*unchanged)++;
	}
	return rc;
}

/* The puts of a message that change something, kept in pend under its sequence and added to
 * the writer's load b (their index entries made now, in arena a, if not made yet). */
static int
defer_resources(store_txn_t *t, store_bulk_t *b, uint64_t seq, arena_t *a, ingest_res_t *res,
		size_t n)
{
	store_res_put_t stack[16], *puts = n > 16 ? xreallocarray(NULL, n, sizeof(*puts)) : stack;
	size_t k = 0;
	int rc = 0;

	for (size_t i = 0; rc == 0 && i < n; i++) {
		int unchanged;

		puts[k] = res_put_of(&res[i], 0);
		/* what would be an unchanged put is left out here rather than in the load; a kept
		 * one goes into the load at once, so that a later put of the same resource in this
		 * message compares with it (should the transaction fail, the writer rebuilds the
		 * load from pend) */
		unchanged = store_bulk_unchanged(b, t, &puts[k]);
		if (unchanged < 0) {
			rc = unchanged;
		} else if (!unchanged) {
			rc = ingest_res_entries(a, &res[i]);
			puts[k] = res_put_of(&res[i], 0);
			if (rc == 0)
				rc = store_bulk_add(b, &puts[k++]);
		}
	}
	if (rc == 0 && k > 0)
		rc = store_pend_put(t, seq, puts, k);
	if (puts != stack)
		free(puts);
	return rc;
}

int
ingest_apply_note(void *ctx, const store_res_put_t *p, const store_res_result_t *r)
{
	return r->unchanged ? 0 : score_hook_note(ctx, p->type, p->id, p->body);
}

int
ingest_record(store_txn_t *t, const ingest_check_t *c, slice_t raw, slice_t peer, uint64_t now_ns,
	      store_bulk_t *defer, ingest_outcome_t *out)
{
	store_msg_t m = {
	    .received_ns = now_ns, .status = ingest_status_of(c->code), .peer = peer, .raw = raw};
	int rc;

	memset(out, 0, sizeof(*out));
	out->code = c->code;
	if (c->key.len > 0) {
		uint64_t seq, hash;
		store_msg_t prev;

		rc = store_msgkey_get(t, c->key, &seq, &hash);
		if (rc == 0 && store_msg_get(t, seq, &prev) == 0 &&
		    (prev.status == 'A' || hash == c->content_hash)) {
			/* A retransmission: the sender did not get (or trust) our ACK. */
			out->duplicate = true;
			out->seq = seq;
			out->code = ingest_code_of_status(prev.status);
			return 0;
		}
	}
	rc = store_msg_append(t, &m, &out->seq);
	if (rc == 0 && c->key.len > 0)
		rc = store_msgkey_put(t, c->key, out->seq, c->content_hash);
	if (rc == 0 && c->dead) {
		store_dead_t d = {.seq = out->seq};

		rc = dead_put(t, c, &d, now_ns);
	} else if (rc == 0 && defer != NULL) {
		rc = defer_resources(t, defer, out->seq, c->arena, c->res, c->nres);
	} else if (rc == 0) {
		for (size_t i = 0; rc == 0 && i < c->nres; i++)
			rc = ingest_res_entries(c->arena, &c->res[i]);
		if (rc == 0)
			rc = ingest_store_resources(t, c->res, c->nres, now_ns, NULL);
	}
	return rc;
}

int
ingest_replay(store_txn_t *t, const ingest_check_t *c, store_dead_t *d, uint64_t now_ns)
{
	int rc;

	/* An oversize frame kept only its head: accepting that would store a cut message. */
	if (d->stage == INGEST_STAGE_FRAME)
		return 1;
	if (c->dead) {
		rc = dead_put(t, c, d, now_ns);
		return rc < 0 ? rc : 1;
	}
	rc = store_msg_set_status(t, d->seq, ingest_status_of(HL7_ACK_AA));
	if (rc == 0)
		rc = store_dead_del(t, d->seq);
	if (rc == 0 && c->key.len > 0)
		rc = store_msgkey_put(t, c->key, d->seq, c->content_hash);
	if (rc == 0)
		rc = ingest_store_resources(t, c->res, c->nres, now_ns, NULL);
	return rc;
}
