/* Ingest rules: check a raw HL7 v2 message and record it (dedupe, message log, dead letters). */
#include "config.h"

#include "gateway/ingest.h"

#include <stdio.h>
#include <string.h>

#include "lib/buf.h"
#include "lib/hash.h"

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

void
ingest_check(arena_t *a, const char *raw, size_t len, const hl7_limits_t *lim, ingest_check_t *out)
{
	int rc;

	memset(out, 0, sizeof(*out));
	out->code = HL7_ACK_AA;
	out->content_hash = hash_fnv1a64(raw, len, 0);
	rc = hl7_parse(a, raw, len, lim, &out->msg, &out->err);
	if (out->msg != NULL)
		out->key = dedupe_key(a, hl7_msg_header(out->msg));
	if (rc < 0) {
		out->stage = INGEST_STAGE_PARSE;
	} else if (hl7_msg_validate(out->msg, &out->err) < 0) {
		out->stage = INGEST_STAGE_VALIDATE;
	} else {
		return;
	}
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

int
ingest_record(store_txn_t *t, const ingest_check_t *c, slice_t raw, slice_t peer, uint64_t now_ns,
	      ingest_outcome_t *out)
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
	if (rc == 0 && c->code != HL7_ACK_AA) {
		char loc[48];
		store_dead_t d = {.seq = out->seq,
				  .time_ns = now_ns,
				  .stage = (uint8_t)c->stage,
				  .code = (uint16_t)c->err.code,
				  .reason = slice_cstr(c->err.text)};

		ingest_error_location(&c->err, loc, sizeof(loc));
		d.location = slice_cstr(loc);
		rc = store_dead_put(t, &d);
	}
	return rc;
}
