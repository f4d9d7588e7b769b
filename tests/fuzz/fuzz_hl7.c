/* libFuzzer target for the HL7 v2 parser: batch split, parse, validate, every accessor over
 * every field, text decoding and ACK building, with small limits. */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/arena.h"
#include "lib/buf.h"
#include "mappings/hl7.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Views must point into the input; anything else is a bug worth a crash. */
static void
check_within(slice_t v, const char *data, size_t size)
{
	if (v.len > 0 && (v.ptr < data || v.ptr + v.len > data + size))
		abort();
}

static void
fuzz_fields(const hl7_msg_t *m, const char *data, size_t size)
{
	const hl7_delims_t *d = hl7_msg_delims(m);
	buf_t text;

	buf_init(&text, 1 << 16);
	for (size_t i = 0; i < hl7_msg_segment_count(m); i++) {
		const hl7_seg_t *s = hl7_msg_segment(m, i);
		slice_t id = hl7_seg_id(s);

		check_within(id, data, size);
		if (hl7_msg_find(m, (const char[4]){id.ptr[0], id.ptr[1], id.ptr[2], 0}, 0) == NULL)
			abort();
		for (size_t f = 0; f <= hl7_seg_field_count(s) + 1; f++) {
			slice_t v = hl7_seg_field(s, f);
			size_t nrep = hl7_split_count(v, d->repetition);

			check_within(v, data, size);
			buf_reset(&text);
			(void)hl7_text_decode(m, v, &text);
			(void)hl7_is_null(v);
			for (size_t r = 0; r <= nrep && r < 64; r++) {
				slice_t rv = hl7_seg_get(m, s, f, r, 0, 0);
				size_t ncomp = hl7_split_count(rv, d->component);

				for (size_t c = 0; c <= ncomp && c < 64; c++) {
					slice_t cv = hl7_seg_get(m, s, f, r, c, 0);
					size_t nsub = hl7_split_count(cv, d->subcomponent);

					check_within(cv, data, size);
					for (size_t k = 1; k <= nsub && k < 64; k++) {
						slice_t sv = hl7_seg_get(m, s, f, r, c, k);

						check_within(sv, data, size);
						buf_reset(&text);
						(void)hl7_text_decode(m, sv, &text);
					}
				}
			}
		}
	}
	buf_free(&text);
}

static void
fuzz_message(arena_t *a, const char *data, size_t size)
{
	const hl7_limits_t lim = {64 * 1024, 256, 4096};
	hl7_msg_t *m = NULL;
	hl7_error_t err;
	buf_t ack;
	int rc = hl7_parse(a, data, size, &lim, &m, &err);

	if (rc != 0 && (err.code == 0 || err.text[0] == '\0'))
		abort();
	if (m != NULL) {
		check_within(hl7_msg_bytes(m), data, size);
		if (hl7_msg_validate(m, &err) != 0 && err.code == 0)
			abort();
		fuzz_fields(m, data, size);
		(void)hl7_msg_charset(m);
	}
	buf_init(&ack, 1 << 16);
	for (int c = HL7_ACK_AA; c <= HL7_ACK_CR; c++) {
		buf_reset(&ack);
		(void)hl7_ack_is_wanted(m, (hl7_ack_code_t)c);
		(void)hl7_ack_build(m, (hl7_ack_code_t)c, rc != 0 ? &err : NULL, "FUZZ", "F|Z",
				    SLICE_LIT("ACK^1"), 1700000000000000000ull, &ack);
	}
	buf_free(&ack);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	arena_t *a = arena_new(0);
	const char *text = (const char *)data;
	slice_t *msgs;
	size_t n;
	hl7_error_t err;

	fuzz_message(a, text, size);
	if (hl7_batch_split(a, text, size, &msgs, &n, &err) == 0) {
		for (size_t i = 0; i < n && i < 16; i++) {
			check_within(msgs[i], text, size);
			fuzz_message(a, msgs[i].ptr, msgs[i].len);
		}
	} else if (err.code == 0 || err.text[0] == '\0') {
		abort();
	}
	arena_free(a);
	return 0;
}
