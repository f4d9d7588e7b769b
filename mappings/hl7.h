/* HL7 v2 messages: zero-copy views over the bytes of one message, escape and charset decoding,
 * header validation, batch splitting. Everything a parse returns lives in the caller's arena and
 * points into the caller's input bytes: both must outlive the views. */
#ifndef MAPPINGS_HL7_H
#define MAPPINGS_HL7_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/arena.h"
#include "lib/buf.h"
#include "lib/slice.h"

typedef struct {
	size_t max_message_bytes; /* whole message */
	size_t max_segments;
	size_t max_field_bytes; /* one field, all repetitions */
} hl7_limits_t;

/* 8 MiB, 10000 segments, 4 MiB per field. */
void hl7_limits_default(hl7_limits_t *lim);

/* HL7 table 0357 (message error condition codes) values used in ERR. */
enum {
	HL7_ERR_OK = 0,
	HL7_ERR_SEGMENT_SEQUENCE = 100,
	HL7_ERR_REQUIRED_FIELD = 101,
	HL7_ERR_DATA_TYPE = 102,
	HL7_ERR_TABLE_VALUE = 103,
	HL7_ERR_UNSUPPORTED_MSG_TYPE = 200,
	HL7_ERR_UNSUPPORTED_EVENT = 201,
	HL7_ERR_UNSUPPORTED_PROCESSING_ID = 202,
	HL7_ERR_UNSUPPORTED_VERSION = 203,
	HL7_ERR_INTERNAL = 207,
};

/* Where and why a message is not acceptable. Text never holds patient data: it names positions,
 * segment ids and limits, not field values. */
typedef struct {
	int code; /* table 0357 */
	char ack; /* 'E' (AE: content error) or 'R' (AR: rejected: version, processing id, ...) */
	char segment[4];                /* segment id, "" when unknown */
	unsigned seg_seq;               /* 1-based occurrence of that segment id; 0 unknown */
	unsigned field, rep, comp, sub; /* 1-based; 0 = not applicable */
	size_t line;                    /* 1-based segment number within the message; 0 unknown */
	size_t offset;                  /* byte offset in the input */
	char text[200];
} hl7_error_t;

typedef struct {
	char field, component, repetition, escape, subcomponent;
	char truncation; /* v2.7+ fifth encoding character; 0 when absent */
} hl7_delims_t;

typedef enum {
	HL7_CHARSET_ASCII = 0, /* also the default when MSH-18 is empty */
	HL7_CHARSET_LATIN1,    /* 8859/1 */
	HL7_CHARSET_LATIN9,    /* 8859/15 */
	HL7_CHARSET_UTF8,      /* UNICODE UTF-8 */
} hl7_charset_t;

/* Header fields as raw slices (escapes intact) into the message. */
typedef struct {
	slice_t sending_app, sending_fac;     /* MSH-3, MSH-4 (whole fields) */
	slice_t receiving_app, receiving_fac; /* MSH-5, MSH-6 */
	slice_t datetime;                     /* MSH-7 */
	slice_t msg_code, trigger,
	    structure;               /* MSH-9.1, MSH-9.2, MSH-9.3 or derived from 9.1+9.2 */
	slice_t control_id;          /* MSH-10 */
	slice_t processing_id;       /* MSH-11.1 */
	slice_t version;             /* MSH-12.1 */
	slice_t accept_ack, app_ack; /* MSH-15, MSH-16 */
	slice_t charset;             /* MSH-18 first repetition */
} hl7_header_t;

typedef struct hl7_seg hl7_seg_t;
typedef struct hl7_msg hl7_msg_t;

/* Parses one message (CR, LF or CRLF segment terminators; a UTF-8 BOM and trailing blank lines
 * ignored). Returns 0, or -FG_EPARSE / -FG_ETOOBIG with *err filled. On error *out is still set
 * when the MSH segment itself could be read, so that an ACK can mirror it; otherwise NULL. */
int hl7_parse(arena_t *a, const char *data, size_t len, const hl7_limits_t *lim, hl7_msg_t **out,
	      hl7_error_t *err);

/* Checks what a receiver needs before accepting: MSH-7/9/10/11/12 present, a supported version
 * (2.1 to 2.8.2), processing id P/T/D, a known character set, the required segments of
 * well-known structures. Returns 0 or -FG_EINVAL with *err filled. */
int hl7_msg_validate(const hl7_msg_t *m, hl7_error_t *err);

const hl7_header_t *hl7_msg_header(const hl7_msg_t *m);
const hl7_delims_t *hl7_msg_delims(const hl7_msg_t *m);
hl7_charset_t hl7_msg_charset(const hl7_msg_t *m);
/* The bytes the message was parsed from (BOM and trailing blank lines excluded). */
slice_t hl7_msg_bytes(const hl7_msg_t *m);

size_t hl7_msg_segment_count(const hl7_msg_t *m);
/* Borrowed, valid with the arena; NULL past the end. */
const hl7_seg_t *hl7_msg_segment(const hl7_msg_t *m, size_t index);
/* The nth (0-based) segment with this id, NULL when there is none. Z-segments included. */
const hl7_seg_t *hl7_msg_find(const hl7_msg_t *m, const char *id, size_t nth);

slice_t hl7_seg_id(const hl7_seg_t *s);
/* Fields 1 to 64 of s that are valued, neither empty nor the HL7 null (bit n - 1: field n). */
uint64_t hl7_seg_valued(const hl7_seg_t *s);
/* False when no field of s has more than one repetition (by the separator of the message it
 * was parsed with); true when some may. */
bool hl7_seg_may_repeat(const hl7_seg_t *s);
/* Number of the last field present (MSH counts MSH-1 and MSH-2). */
size_t hl7_seg_field_count(const hl7_seg_t *s);
/* Raw field n (1-based; MSH-1 is the field separator, MSH-2 the encoding characters), escapes
 * intact; an empty slice when absent. */
slice_t hl7_seg_field(const hl7_seg_t *s, size_t n);
/* Raw value at field/repetition/component/subcomponent, all 1-based; rep, comp or sub 0 means
 * the whole of that level. Empty when absent. */
slice_t hl7_seg_get(const hl7_msg_t *m, const hl7_seg_t *s, size_t field, size_t rep, size_t comp,
		    size_t sub);

/* Splits a raw value by a delimiter: how many parts, and part n (1-based). */
size_t hl7_split_count(slice_t raw, char delim);
slice_t hl7_split_nth(slice_t raw, char delim, size_t n);

/* Decodes escape sequences (\F\ \S\ \T\ \R\ \E\ \Xhh..\ \.br\ -> newline; \H\ \N\ and other
 * formatting commands kept literally; unknown escapes kept literally) and converts from the
 * message's character set to UTF-8, appending to out. Invalid bytes, and control characters
 * but tab, CR and LF (also from \Xhh\), become U+FFFD. Returns the number of replaced bytes
 * (0 when clean) or a negative error (buffer cap). */
int hl7_text_decode(const hl7_msg_t *m, slice_t raw, buf_t *out);

/* Whether the "HL7 null" ("") is the value (inline: asked of nearly every value read). */
static inline bool
hl7_is_null(slice_t raw)
{
	return raw.len == 2 && raw.ptr[0] == '"' && raw.ptr[1] == '"';
}

/* Splits a file or stream of messages: plain concatenated messages, or FHS/BHS batches (the
 * header and trailer segments dropped). Returns 0 with *msgs (arena) and *count, or -FG_EPARSE
 * with *err (e.g. a BHS inside a message, segments before the first MSH). */
int hl7_batch_split(arena_t *a, const char *data, size_t len, slice_t **msgs, size_t *count,
		    hl7_error_t *err);

/* ACKs (mappings/hl7_ack.c). */
typedef enum {
	HL7_ACK_AA,
	HL7_ACK_AE,
	HL7_ACK_AR,
	HL7_ACK_CA,
	HL7_ACK_CE,
	HL7_ACK_CR
} hl7_ack_code_t;

/* "AA", "AE", ... */
const char *hl7_ack_code_name(hl7_ack_code_t code);
/* True when MSH-15 or MSH-16 is valued (enhanced acknowledgment mode). */
bool hl7_msg_is_enhanced(const hl7_msg_t *m);
/* Whether the sender wants this ACK, from MSH-15 (commit codes C*) or MSH-16 (application codes
 * A*): AL or empty always, NE never, ER only on error, SU only on success. In original mode
 * (neither field valued) only application ACKs are wanted, always. */
bool hl7_ack_is_wanted(const hl7_msg_t *m, hl7_ack_code_t code);

/* Builds an ACK for m into out (appending, no MLLP framing): MSH mirroring the sender (MSH-3/4
 * <-> MSH-5/6, MSH-11, MSH-12, delimiters, MSH-18), MSA with the code and MSH-10, and for
 * errors an ERR segment in the form of the message's version (ERR-1 before 2.5; ERR-2, ERR-3,
 * ERR-4, ERR-8 from 2.5) with the 0357 code and location. m may be NULL when the message had
 * no readable MSH: then default delimiters and version 2.5 are used. self_app/self_fac fill
 * MSH-3/4 when the original MSH-5/6 are empty. control_id is MSH-10 of the ACK. */
int hl7_ack_build(const hl7_msg_t *m, hl7_ack_code_t code, const hl7_error_t *err,
		  const char *self_app, const char *self_fac, slice_t control_id, uint64_t now_ns,
		  buf_t *out);

#endif
