/* HL7 v2 messages: one pass indexes segments and field offsets into the arena; escapes and
 * character sets are decoded on access; header validation and batch splitting. */
#include "config.h"

#include "mappings/hl7.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "lib/err.h"
#include "mappings/hl7_int.h"

/* Where an error is; seg is empty or a valid segment id (never other message bytes). */
struct hl7_loc {
	slice_t seg;
	unsigned seg_seq, field, comp;
	size_t line, offset;
};

void
hl7_limits_default(hl7_limits_t *lim)
{
	lim->max_message_bytes = 8u << 20;
	lim->max_segments = 10000;
	lim->max_field_bytes = 4u << 20;
}

static int hl7_fail(hl7_error_t *err, int rc, int code, char ack, struct hl7_loc loc,
		    const char *fmt, ...) __attribute__((format(printf, 6, 7)));

static int
hl7_fail(hl7_error_t *err, int rc, int code, char ack, struct hl7_loc loc, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL)
		return rc;
	memset(err, 0, sizeof(*err));
	err->code = code;
	err->ack = ack;
	if (loc.seg.len == 3)
		memcpy(err->segment, loc.seg.ptr, 3);
	err->seg_seq = loc.seg_seq;
	err->field = loc.field;
	err->comp = loc.comp;
	err->line = loc.line;
	err->offset = loc.offset;
	va_start(ap, fmt);
	vsnprintf(err->text, sizeof(err->text), fmt, ap);
	va_end(ap);
	return rc;
}

static bool
hl7_is_upper(char c)
{
	return c >= 'A' && c <= 'Z';
}

static bool
hl7_is_alnum(char c)
{
	return hl7_is_upper(c) || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static bool
hl7_seg_id_is_valid(slice_t id)
{
	return id.len == 3 && hl7_is_upper(id.ptr[0]) &&
	       (hl7_is_upper(id.ptr[1]) || (id.ptr[1] >= '0' && id.ptr[1] <= '9')) &&
	       (hl7_is_upper(id.ptr[2]) || (id.ptr[2] >= '0' && id.ptr[2] <= '9'));
}

/* Whether one of the 8 bytes at p is a CR or an LF (a byte equal to one shows as a zero byte
 * of v ^ that byte repeated; the test for a zero byte never misses one). */
static bool
hl7_word_has_eol(const char *p)
{
	const uint64_t ones = 0x0101010101010101ull, high = ones * 0x80;
	uint64_t v, cr, lf;

	memcpy(&v, p, 8);
	cr = v ^ (ones * '\r');
	lf = v ^ (ones * '\n');
	return (((cr - ones) & ~cr) | ((lf - ones) & ~lf)) & high;
}

/* The next line at *pos, ended by CR, LF or CRLF; *pos moves past the terminator. */
static bool
hl7_line_next(const char **pos, const char *end, slice_t *line)
{
	const char *p = *pos, *q = p;

	if (p >= end)
		return false;
	while (end - q >= 8 && !hl7_word_has_eol(q))
		q += 8;
	while (q < end && *q != '\r' && *q != '\n')
		q++;
	*line = slice_make(p, (size_t)(q - p));
	if (q < end)
		q += (*q == '\r' && q + 1 < end && q[1] == '\n') ? 2 : 1;
	*pos = q;
	return true;
}

static bool
hl7_line_is_blank(slice_t line)
{
	for (size_t i = 0; i < line.len; i++)
		if (line.ptr[i] != ' ' && line.ptr[i] != '\t')
			return false;
	return true;
}

static const char *
hl7_skip_bom(const char *p, const char *end)
{
	if (end - p >= 3 && memcmp(p, "\xef\xbb\xbf", 3) == 0)
		return p + 3;
	return p;
}

/* Number of occurrences of s's id up to and including s, for error locations. */
static unsigned
hl7_seg_seq(const hl7_msg_t *m, const hl7_seg_t *s)
{
	slice_t id = hl7_chunk(s, 0);
	unsigned n = 0;

	for (const hl7_seg_t *t = m->segs; t <= s; t++)
		if (slice_eq(hl7_chunk(t, 0), id))
			n++;
	return n;
}

/* A legal delimiter: printable ASCII punctuation. */
static bool
hl7_delim_is_legal(char c)
{
	return c > ' ' && c < 0x7f && !hl7_is_alnum(c);
}

/* Reads MSH-1 and MSH-2 from the first line, which starts with "MSH". */
static int
hl7_delims_read(slice_t line, size_t offset, hl7_delims_t *d, hl7_error_t *err)
{
	struct hl7_loc loc = {SLICE_LIT("MSH"), 1, 1, 0, 1, offset + 3};
	const char *enc;
	size_t n = 0;

	if (line.len < 4 || !hl7_delim_is_legal(line.ptr[3]))
		return hl7_fail(err, -FG_EPARSE, HL7_ERR_DATA_TYPE, 'R', loc,
				"MSH-1 (field separator) missing or not a punctuation character");
	memset(d, 0, sizeof(*d));
	d->field = line.ptr[3];
	enc = line.ptr + 4;
	while (4 + n < line.len && enc[n] != d->field)
		n++;
	loc.field = 2;
	loc.offset = offset + 4;
	if (n < 4 || n > 5)
		return hl7_fail(
		    err, -FG_EPARSE, HL7_ERR_DATA_TYPE, 'R', loc,
		    "MSH-2 must hold 4 encoding characters (5 with truncation), it has %zu", n);
	for (size_t i = 0; i < n; i++) {
		bool ok = hl7_delim_is_legal(enc[i]) && enc[i] != d->field;

		for (size_t j = 0; j < i; j++)
			ok = ok && enc[j] != enc[i];
		if (!ok)
			return hl7_fail(
			    err, -FG_EPARSE, HL7_ERR_DATA_TYPE, 'R', loc,
			    "MSH-2 encoding character %zu is repeated or not punctuation", i + 1);
	}
	d->component = enc[0];
	d->repetition = enc[1];
	d->escape = enc[2];
	d->subcomponent = enc[3];
	d->truncation = n == 5 ? enc[4] : 0;
	return 0;
}

static bool
hl7_word_in(const char *list, slice_t w)
{
	size_t n;

	if (w.len == 0)
		return false;
	while (*list != '\0') {
		n = strcspn(list, " ");
		if (n == w.len && memcmp(list, w.ptr, n) == 0)
			return true;
		list += n;
		list += *list == ' ';
	}
	return false;
}

/* HL7 table 0354 where the structure is not simply CODE_TRIGGER. */
static const struct {
	const char *code, *triggers, *structure;
} hl7_structures[] = {
    {"ADT", "A01 A04 A08 A13", "ADT_A01"},
    {"ADT", "A05 A14 A28 A31", "ADT_A05"},
    {"ADT", "A06 A07", "ADT_A06"},
    {"ADT", "A09 A10 A11 A12", "ADT_A09"},
    {"ADT", "A21 A22 A23 A25 A26 A27 A29 A32 A33", "ADT_A21"},
    {"ADT", "A30 A34 A35 A36 A46 A47 A48 A49", "ADT_A30"},
    {"ADT", "A39 A40 A41 A42", "ADT_A39"},
    {"ADT", "A43 A44", "ADT_A43"},
    {"ADT", "A50 A51", "ADT_A50"},
    {"ADT", "A52 A53", "ADT_A52"},
    {"ADT", "A54 A55", "ADT_A54"},
    {"ADT", "A61 A62", "ADT_A61"},
    {"ORU", "R30 R31 R32", "ORU_R30"},
    {"SIU", "S12 S13 S14 S15 S16 S17 S18 S19 S20 S21 S22 S23 S24 S26", "SIU_S12"},
    {"MDM", "T01 T03 T05 T07 T09 T11", "MDM_T01"},
    {"MDM", "T02 T04 T06 T08 T10", "MDM_T02"},
    {"PPR", "PC1 PC2 PC3", "PPR_PC1"},
};

static slice_t
hl7_structure_derive(arena_t *a, slice_t code, slice_t trigger)
{
	char *s;

	if (slice_eq_cstr(code, "ACK") || trigger.len == 0)
		return code;
	for (size_t i = 0; i < sizeof(hl7_structures) / sizeof(hl7_structures[0]); i++)
		if (slice_eq_cstr(code, hl7_structures[i].code) &&
		    hl7_word_in(hl7_structures[i].triggers, trigger))
			return slice_cstr(hl7_structures[i].structure);
	s = arena_alloc(a, code.len + 1 + trigger.len);
	memcpy(s, code.ptr, code.len);
	s[code.len] = '_';
	memcpy(s + code.len + 1, trigger.ptr, trigger.len);
	return slice_make(s, code.len + 1 + trigger.len);
}

/* MSH-18 (HL7 table 0211) -> charset; false when unknown. */
static bool
hl7_charset_lookup(slice_t v, hl7_charset_t *cs)
{
	static const struct {
		const char *name;
		hl7_charset_t cs;
	} names[] = {
	    {"", HL7_CHARSET_ASCII},
	    {"ASCII", HL7_CHARSET_ASCII},
	    {"ISO IR6", HL7_CHARSET_ASCII},
	    {"8859/1", HL7_CHARSET_LATIN1},
	    {"ISO IR100", HL7_CHARSET_LATIN1},
	    {"8859/15", HL7_CHARSET_LATIN9},
	    {"UNICODE UTF-8", HL7_CHARSET_UTF8},
	    {"ISO IR192", HL7_CHARSET_UTF8},
	    {"UTF-8", HL7_CHARSET_UTF8},
	};

	v = slice_trim(v);
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (slice_eq_nocase(v, slice_cstr(names[i].name))) {
			*cs = names[i].cs;
			return true;
		}
	*cs = HL7_CHARSET_ASCII;
	return false;
}

struct hl7_parser {
	arena_t *a;
	const hl7_limits_t *lim;
	hl7_error_t *err;
	hl7_msg_t *m;
};

/* Appends the segment in line to the message, indexing its fields. */
static int
hl7_parser_add(struct hl7_parser *p, slice_t line)
{
	hl7_msg_t *m = p->m;
	const char *q, *end = line.ptr + line.len;
	const char fs = m->delims.field;
	struct hl7_loc loc = {SLICE_NULL, 0, 0, 0, m->nsegs + 1, (size_t)(line.ptr - m->input)};
	size_t n = 1, i = 0, min;
	hl7_seg_t *s;
	slice_t id;
	uint32_t offs[256]; /* off[1..n-1] while n <= 256 */

	if (p->lim->max_segments != 0 && m->nsegs >= p->lim->max_segments)
		return hl7_fail(p->err, -FG_ETOOBIG, HL7_ERR_INTERNAL, 'R', loc,
				"message has more than %zu segments", p->lim->max_segments);
	if (line.len >= UINT32_MAX)
		return hl7_fail(p->err, -FG_ETOOBIG, HL7_ERR_INTERNAL, 'R', loc,
				"segment %zu is longer than 4 GiB", loc.line);
	if (m->nsegs == m->cap) {
		size_t ncap = m->cap ? 2 * m->cap : 16;
		hl7_seg_t *ns = arena_alloc(p->a, ncap * sizeof(*ns));

		if (m->nsegs > 0)
			memcpy(ns, m->segs, m->nsegs * sizeof(*ns));
		m->segs = ns;
		m->cap = ncap;
	}
	s = &m->segs[m->nsegs];
	/* one pass over the fields for most segments (up to 255 of them), two beyond */
	for (q = line.ptr; n < 256 && (q = memchr(q, fs, (size_t)(end - q))) != NULL; q++)
		offs[n++] = (uint32_t)(q + 1 - line.ptr);
	for (; q != NULL && (q = memchr(q, fs, (size_t)(end - q))) != NULL; q++)
		n++;
	s->ptr = line.ptr;
	s->off = arena_alloc(p->a, (n + 1) * sizeof(*s->off));
	s->off[0] = 0;
	if (n <= 256) {
		memcpy(s->off + 1, offs + 1, (n - 1) * sizeof(*s->off));
	} else {
		for (q = line.ptr; (q = memchr(q, fs, (size_t)(end - q))) != NULL; q++)
			s->off[++i] = (uint32_t)(q + 1 - line.ptr);
	}
	s->off[n] = (uint32_t)line.len + 1;
	s->is_msh = m->nsegs == 0;
	s->no_reps = !s->is_msh && memchr(line.ptr, m->delims.repetition, line.len) == NULL;

	id = hl7_chunk(s, 0);
	if (!hl7_seg_id_is_valid(id))
		return hl7_fail(p->err, -FG_EPARSE, HL7_ERR_SEGMENT_SEQUENCE, 'E', loc,
				"segment %zu: invalid segment id (must be 3 characters "
				"[A-Z][A-Z0-9][A-Z0-9])",
				loc.line);
	loc.seg = id;
	if (!s->is_msh &&
	    (slice_eq_cstr(id, "MSH") || slice_eq_cstr(id, "FHS") || slice_eq_cstr(id, "BHS") ||
	     slice_eq_cstr(id, "BTS") || slice_eq_cstr(id, "FTS")))
		return hl7_fail(p->err, -FG_EPARSE, HL7_ERR_SEGMENT_SEQUENCE, 'E', loc,
				"segment %zu: %.3s inside a message (split batches first)",
				loc.line, id.ptr);
	min = s->is_msh ? 2 : 1;
	s->nchunks = n;
	while (s->nchunks > min && s->off[s->nchunks] - s->off[s->nchunks - 1] == 1)
		s->nchunks--;
	m->nsegs++;
	/* Kept even when too long: an MSH that is only too long can still be mirrored in an ACK. */
	if (p->lim->max_field_bytes != 0)
		for (i = 1; i < n; i++)
			if (s->off[i + 1] - s->off[i] - 1 > p->lim->max_field_bytes) {
				loc.seg_seq = hl7_seg_seq(m, s);
				loc.field = (unsigned)(s->is_msh ? i + 1 : i);
				loc.offset += s->off[i];
				return hl7_fail(p->err, -FG_ETOOBIG, HL7_ERR_INTERNAL, 'R', loc,
						"field %.3s-%u is longer than %zu bytes", id.ptr,
						loc.field, p->lim->max_field_bytes);
			}
	return 0;
}

static void
hl7_header_fill(arena_t *a, hl7_msg_t *m)
{
	const hl7_seg_t *msh = &m->segs[0];
	hl7_header_t *h = &m->hdr;

	h->sending_app = hl7_seg_field(msh, 3);
	h->sending_fac = hl7_seg_field(msh, 4);
	h->receiving_app = hl7_seg_field(msh, 5);
	h->receiving_fac = hl7_seg_field(msh, 6);
	h->datetime = hl7_seg_get(m, msh, 7, 1, 1, 0);
	h->msg_code = hl7_seg_get(m, msh, 9, 1, 1, 0);
	h->trigger = hl7_seg_get(m, msh, 9, 1, 2, 0);
	h->structure = hl7_seg_get(m, msh, 9, 1, 3, 0);
	if (h->structure.len == 0)
		h->structure = hl7_structure_derive(a, h->msg_code, h->trigger);
	h->control_id = hl7_seg_field(msh, 10);
	h->processing_id = hl7_seg_get(m, msh, 11, 1, 1, 0);
	h->version = hl7_seg_get(m, msh, 12, 1, 1, 0);
	h->accept_ack = hl7_seg_field(msh, 15);
	h->app_ack = hl7_seg_field(msh, 16);
	h->charset = hl7_seg_get(m, msh, 18, 1, 0, 0);
	m->charset_known = hl7_charset_lookup(h->charset, &m->charset);
}

int
hl7_parse(arena_t *a, const char *data, size_t len, const hl7_limits_t *lim, hl7_msg_t **out,
	  hl7_error_t *err)
{
	struct hl7_parser p = {a, lim, err, NULL};
	struct hl7_loc loc = {SLICE_NULL, 0, 0, 0, 1, 0};
	hl7_limits_t deflim;
	hl7_delims_t d;
	const char *pos, *end, *last;
	slice_t line;
	int rc;

	*out = NULL;
	if (err != NULL)
		memset(err, 0, sizeof(*err));
	if (lim == NULL) {
		hl7_limits_default(&deflim);
		p.lim = &deflim;
	}
	if (data == NULL || len == 0)
		return hl7_fail(err, -FG_EPARSE, HL7_ERR_SEGMENT_SEQUENCE, 'R', loc,
				"empty message");
	end = data + len;
	pos = hl7_skip_bom(data, end);
	do {
		if (!hl7_line_next(&pos, end, &line))
			return hl7_fail(err, -FG_EPARSE, HL7_ERR_SEGMENT_SEQUENCE, 'R', loc,
					"empty message");
	} while (hl7_line_is_blank(line));
	loc.offset = (size_t)(line.ptr - data);
	if (line.len < 3 || memcmp(line.ptr, "MSH", 3) != 0)
		return hl7_fail(err, -FG_EPARSE, HL7_ERR_SEGMENT_SEQUENCE, 'R', loc,
				"message does not start with an MSH segment");
	rc = hl7_delims_read(line, loc.offset, &d, err);
	if (rc < 0)
		return rc;
	p.m = arena_zalloc(a, sizeof(*p.m));
	p.m->input = data;
	p.m->delims = d;
	p.m->bytes = slice_make(line.ptr, (size_t)(end - line.ptr));
	rc = hl7_parser_add(&p, line);
	if (p.m->nsegs == 0)
		return rc;
	hl7_header_fill(a, p.m);
	*out = p.m;
	if (rc < 0)
		return rc;
	if (p.lim->max_message_bytes != 0 && len > p.lim->max_message_bytes)
		return hl7_fail(err, -FG_ETOOBIG, HL7_ERR_INTERNAL, 'R', loc,
				"message is %zu bytes, more than the limit of %zu", len,
				p.lim->max_message_bytes);
	last = pos;
	while (hl7_line_next(&pos, end, &line)) {
		if (hl7_line_is_blank(line))
			continue;
		rc = hl7_parser_add(&p, line);
		if (rc < 0)
			return rc;
		last = pos;
	}
	p.m->bytes.len = (size_t)(last - p.m->bytes.ptr);
	return 0;
}

/* A header field error; text names the field, never its value. */
static int
hl7_invalid(hl7_error_t *err, int code, char ack, const hl7_msg_t *m, unsigned field, unsigned comp,
	    const char *text)
{
	const hl7_seg_t *msh = &m->segs[0];
	struct hl7_loc loc = {SLICE_LIT("MSH"), 1, field, comp, 1, (size_t)(msh->ptr - m->input)};
	size_t chunk = field - 1;

	loc.offset += chunk < msh->nchunks ? msh->off[chunk] : msh->off[msh->nchunks] - 1;
	return hl7_fail(err, -FG_EINVAL, code, ack, loc, "%s", text);
}

/* Segments a receiver cannot do without, per structure (HL7 v2.5 message definitions); the
 * first matching row wins. */
static const struct {
	const char *structure, *trigger, *segments;
} hl7_required[] = {
    /* Registrations from some feeds carry no EVN (corpus ADT_A04/ms-ADT04-251). */
    {"ADT_A01", "A04", "PID PV1"},
    {"ADT_A01", NULL, "EVN PID PV1"},
    {"ADT_A02", NULL, "EVN PID PV1"},
    {"ADT_A03", NULL, "EVN PID PV1"},
    {"ADT_A05", NULL, "EVN PID PV1"},
    {"ADT_A06", NULL, "EVN PID PV1"},
    {"ADT_A09", NULL, "EVN PID PV1"},
    {"ADT_A17", NULL, "EVN PID PV1"},
    {"ADT_A30", NULL, "EVN PID MRG"},
    {"ADT_A39", NULL, "EVN PID MRG"},
    {"ADT_A43", NULL, "EVN PID MRG"},
    {"ADT_A45", NULL, "EVN PID MRG PV1"},
    {"ADT_A50", NULL, "EVN PID MRG PV1"},
    {"ADT_A60", NULL, "EVN PID"},
    {"ORU_R01", NULL, "OBR"},
    {"ORU_R30", NULL, "PID ORC OBR"},
    {"ORM_O01", NULL, "ORC"},
    {"VXU_V04", NULL, "PID"},
    {"SIU_S12", NULL, "SCH RGS"},
    {"MDM_T01", NULL, "EVN PID PV1 TXA"},
    {"MDM_T02", NULL, "EVN PID PV1 TXA OBX"},
    {"RDE_O11", NULL, "ORC RXE RXR"},
    {"DFT_P03", NULL, "EVN PID"},
    {"BAR_P01", NULL, "EVN PID"},
    {"PPR_PC1", NULL, "PID PRB"},
    {"ACK", NULL, "MSA"},
};

static int
hl7_validate_segments(const hl7_msg_t *m, hl7_error_t *err)
{
	const hl7_header_t *h = &m->hdr;
	const char *segs = NULL, *structure = NULL;

	for (size_t i = 0; i < sizeof(hl7_required) / sizeof(hl7_required[0]) && !segs; i++)
		if (slice_eq_cstr(h->structure, hl7_required[i].structure) &&
		    (hl7_required[i].trigger == NULL ||
		     slice_eq_cstr(h->trigger, hl7_required[i].trigger))) {
			segs = hl7_required[i].segments;
			structure = hl7_required[i].structure;
		}
	for (; segs != NULL && *segs != '\0'; segs += segs[3] == ' ' ? 4 : 3) {
		char id[4] = {segs[0], segs[1], segs[2], '\0'};
		struct hl7_loc loc = {slice_make(segs, 3), 0, 0, 0, 0, 0};

		if (hl7_msg_find(m, id, 0) == NULL)
			return hl7_fail(err, -FG_EINVAL, HL7_ERR_SEGMENT_SEQUENCE, 'E', loc,
					"required segment %s missing from %s", id, structure);
	}
	return 0;
}

static bool
hl7_version_is_supported(slice_t v)
{
	static const char *const versions[] = {"2.1", "2.2",   "2.3",  "2.3.1", "2.4",
					       "2.5", "2.5.1", "2.6",  "2.7",   "2.7.1",
					       "2.8", "2.8.1", "2.8.2"};

	for (size_t i = 0; i < sizeof(versions) / sizeof(versions[0]); i++)
		if (slice_eq_cstr(v, versions[i]))
			return true;
	return false;
}

int
hl7_msg_validate(const hl7_msg_t *m, hl7_error_t *err)
{
	const hl7_header_t *h;

	if (err != NULL)
		memset(err, 0, sizeof(*err));
	if (m == NULL)
		return hl7_fail(err, -FG_EINVAL, HL7_ERR_INTERNAL, 'R', (struct hl7_loc){0},
				"no message");
	h = &m->hdr;
	if (h->datetime.len == 0)
		return hl7_invalid(err, HL7_ERR_REQUIRED_FIELD, 'E', m, 7, 0,
				   "MSH-7 (date/time of message) is required");
	if (h->msg_code.len == 0)
		return hl7_invalid(err, HL7_ERR_REQUIRED_FIELD, 'E', m, 9, 1,
				   "MSH-9.1 (message code) is required");
	if (h->trigger.len == 0 && !slice_eq_cstr(h->msg_code, "ACK"))
		return hl7_invalid(err, HL7_ERR_REQUIRED_FIELD, 'E', m, 9, 2,
				   "MSH-9.2 (trigger event) is required");
	if (h->control_id.len == 0)
		return hl7_invalid(err, HL7_ERR_REQUIRED_FIELD, 'E', m, 10, 0,
				   "MSH-10 (message control id) is required");
	if (h->processing_id.len == 0)
		return hl7_invalid(err, HL7_ERR_REQUIRED_FIELD, 'E', m, 11, 0,
				   "MSH-11 (processing id) is required");
	if (!slice_eq_cstr(h->processing_id, "P") && !slice_eq_cstr(h->processing_id, "T") &&
	    !slice_eq_cstr(h->processing_id, "D"))
		return hl7_invalid(err, HL7_ERR_UNSUPPORTED_PROCESSING_ID, 'R', m, 11, 0,
				   "MSH-11 (processing id) must be P, T or D");
	if (h->version.len == 0)
		return hl7_invalid(err, HL7_ERR_REQUIRED_FIELD, 'E', m, 12, 0,
				   "MSH-12 (version id) is required");
	if (!hl7_version_is_supported(h->version))
		return hl7_invalid(err, HL7_ERR_UNSUPPORTED_VERSION, 'R', m, 12, 0,
				   "MSH-12 (version id) is not supported (2.1 to 2.8.2 are)");
	if (!m->charset_known)
		return hl7_invalid(
		    err, HL7_ERR_TABLE_VALUE, 'R', m, 18, 0,
		    "MSH-18 (character set) is not a supported HL7 table 0211 value");
	return hl7_validate_segments(m, err);
}

const hl7_header_t *(hl7_msg_header)(const hl7_msg_t *m)
{
	return hl7_msg_header_inl(m);
}

const hl7_delims_t *(hl7_msg_delims)(const hl7_msg_t *m)
{
	return hl7_msg_delims_inl(m);
}

hl7_charset_t
hl7_msg_charset(const hl7_msg_t *m)
{
	return m->charset;
}

slice_t
hl7_msg_bytes(const hl7_msg_t *m)
{
	return m->bytes;
}

size_t(hl7_msg_segment_count)(const hl7_msg_t *m)
{
	return hl7_msg_segment_count_inl(m);
}

const hl7_seg_t *(hl7_msg_segment)(const hl7_msg_t *m, size_t index)
{
	return hl7_msg_segment_inl(m, index);
}

const hl7_seg_t *
hl7_msg_find(const hl7_msg_t *m, const char *id, size_t nth)
{
	slice_t want = slice_cstr(id);

	for (size_t i = 0; i < m->nsegs; i++)
		if (slice_eq(hl7_chunk(&m->segs[i], 0), want) && nth-- == 0)
			return &m->segs[i];
	return NULL;
}

slice_t(hl7_seg_id)(const hl7_seg_t *s)
{
	return hl7_seg_id_inl(s);
}

uint64_t
hl7_seg_valued(const hl7_seg_t *s)
{
	size_t n = hl7_seg_field_count(s);
	uint64_t valued = 0;

	for (size_t f = 1; f <= n && f <= 64; f++) {
		slice_t v = hl7_field_at(s, f);

		if (v.len > 0 && !hl7_is_null(v))
			valued |= (uint64_t)1 << (f - 1);
	}
	return valued;
}

bool(hl7_seg_may_repeat)(const hl7_seg_t *s)
{
	return hl7_seg_may_repeat_inl(s);
}

size_t(hl7_seg_field_count)(const hl7_seg_t *s)
{
	return hl7_seg_field_count_inl(s);
}

slice_t
hl7_seg_field(const hl7_seg_t *s, size_t n)
{
	return hl7_field_at(s, n);
}

/* rep 0 with a component or subcomponent asked for means the first repetition; so does comp 0
 * with a subcomponent. MSH-1 and MSH-2 are never split. */
slice_t(hl7_seg_get)(const hl7_msg_t *m, const hl7_seg_t *s, size_t field, size_t rep, size_t comp,
		     size_t sub)
{
	return hl7_seg_get_inl(m, s, field, rep, comp, sub);
}

size_t
hl7_split_count(slice_t raw, char delim)
{
	size_t n = 1;
	const char *q = raw.ptr, *end;

	if (raw.len == 0)
		return 0;
	end = raw.ptr + raw.len;
	while ((q = memchr(q, delim, (size_t)(end - q))) != NULL) {
		n++;
		q++;
	}
	return n;
}

slice_t
hl7_split_nth(slice_t raw, char delim, size_t n)
{
	const char *p = raw.ptr, *end, *q;

	if (n == 0 || raw.len == 0)
		return SLICE_NULL;
	end = raw.ptr + raw.len;
	for (;;) {
		q = memchr(p, delim, (size_t)(end - p));
		if (--n == 0)
			return slice_make(p, (size_t)((q != NULL ? q : end) - p));
		if (q == NULL)
			return SLICE_NULL;
		p = q + 1;
	}
}

/* Text decoding: a sticky error and a count of replaced bytes. */
struct hl7_decoder {
	buf_t *out;
	hl7_charset_t cs;
	size_t replaced;
	int rc;
};

static void
hl7_dec_append(struct hl7_decoder *dec, const void *p, size_t n)
{
	if (dec->rc == 0 && n > 0)
		dec->rc = buf_append(dec->out, p, n);
}

static void
hl7_dec_codepoint(struct hl7_decoder *dec, unsigned cp)
{
	char u[3];

	if (cp < 0x800) {
		u[0] = (char)(0xc0 | (cp >> 6));
		u[1] = (char)(0x80 | (cp & 0x3f));
		hl7_dec_append(dec, u, 2);
		return;
	}
	u[0] = (char)(0xe0 | (cp >> 12));
	u[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
	u[2] = (char)(0x80 | (cp & 0x3f));
	hl7_dec_append(dec, u, 3);
}

static void
hl7_dec_replace(struct hl7_decoder *dec)
{
	dec->replaced++;
	hl7_dec_codepoint(dec, 0xfffd);
}

/* Length of the valid UTF-8 sequence at s (Unicode table 3-7), 0 when invalid. */
static size_t
hl7_utf8_len(const unsigned char *s, size_t n)
{
	unsigned c = s[0];
	bool ok;

	if (c < 0x80)
		return 1;
	if (c < 0xc2 || c > 0xf4)
		return 0;
	if (c < 0xe0)
		return n >= 2 && (s[1] & 0xc0) == 0x80 ? 2 : 0;
	if (c < 0xf0) {
		if (n < 3 || (s[2] & 0xc0) != 0x80)
			return 0;
		ok = c == 0xe0   ? s[1] >= 0xa0 && s[1] <= 0xbf
		     : c == 0xed ? s[1] >= 0x80 && s[1] <= 0x9f
				 : (s[1] & 0xc0) == 0x80;
		return ok ? 3 : 0;
	}
	if (n < 4 || (s[2] & 0xc0) != 0x80 || (s[3] & 0xc0) != 0x80)
		return 0;
	ok = c == 0xf0   ? s[1] >= 0x90 && s[1] <= 0xbf
	     : c == 0xf4 ? s[1] >= 0x80 && s[1] <= 0x8f
			 : (s[1] & 0xc0) == 0x80;
	return ok ? 4 : 0;
}

/* Bytes a UTF-8 sequence starting with lead byte c claims. */
static size_t
hl7_utf8_need(unsigned char c)
{
	return c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
}

/* ISO 8859-15 differs from 8859-1 in eight places. */
static unsigned
hl7_latin9(unsigned char c)
{
	switch (c) {
	case 0xa4:
		return 0x20ac;
	case 0xa6:
		return 0x160;
	case 0xa8:
		return 0x161;
	case 0xb4:
		return 0x17d;
	case 0xb8:
		return 0x17e;
	case 0xbc:
		return 0x152;
	case 0xbd:
		return 0x153;
	case 0xbe:
		return 0x178;
	default:
		return c;
	}
}

/* Converts bytes in the message's charset (no escapes) to UTF-8. NUL is replaced too: text
 * goes on to C strings. */
static void
hl7_dec_bytes(struct hl7_decoder *dec, const char *p, size_t n)
{
	const unsigned char *s = (const unsigned char *)p, *end = s + n;

	while (s < end && dec->rc == 0) {
		const unsigned char *run = s;
		size_t k;

		while (s < end && *s < 0x80 &&
		       (*s >= 0x20 || *s == '\t' || *s == '\n' || *s == '\r'))
			s++;
		hl7_dec_append(dec, run, (size_t)(s - run));
		if (s == end)
			break;
		if (*s < 0x20) {
			/* a control character (NUL included): no text may carry one (FHIR strings
			 * allow tab, CR and LF only; XML 1.0 no other) */
			hl7_dec_replace(dec);
			s++;
		} else if (dec->cs == HL7_CHARSET_LATIN1) {
			hl7_dec_codepoint(dec, *s++);
		} else if (dec->cs == HL7_CHARSET_LATIN9) {
			hl7_dec_codepoint(dec, hl7_latin9(*s++));
		} else if ((k = hl7_utf8_len(s, (size_t)(end - s))) != 0) {
			if (k == 3 && s[0] == 0xef && s[1] == 0xbf && s[2] >= 0xbe)
				hl7_dec_replace(dec); /* U+FFFE, U+FFFF: XML cannot carry them */
			else
				hl7_dec_append(dec, s, k);
			s += k;
		} else {
			hl7_dec_replace(dec);
			s++;
		}
	}
}

static int
hl7_hex(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* \Xhhhh..\: false (kept literally) unless an even number of hex digits. */
static bool
hl7_dec_hex(struct hl7_decoder *dec, slice_t hex)
{
	unsigned char tmp[256];
	size_t n = 0;

	if (hex.len == 0 || hex.len % 2 != 0)
		return false;
	for (size_t i = 0; i < hex.len; i++)
		if (hl7_hex(hex.ptr[i]) < 0)
			return false;
	for (size_t i = 0; i < hex.len; i += 2) {
		tmp[n++] = (unsigned char)(hl7_hex(hex.ptr[i]) << 4 | hl7_hex(hex.ptr[i + 1]));
		if (n == sizeof(tmp)) {
			size_t keep = 0, k = 0;

			/* Do not cut a UTF-8 sequence in two between chunks. */
			if (dec->cs == HL7_CHARSET_ASCII || dec->cs == HL7_CHARSET_UTF8) {
				while (k < 3 && (tmp[n - 1 - k] & 0xc0) == 0x80)
					k++;
				if (tmp[n - 1 - k] >= 0xc0 && hl7_utf8_need(tmp[n - 1 - k]) > k + 1)
					keep = k + 1;
			}
			hl7_dec_bytes(dec, (const char *)tmp, n - keep);
			memmove(tmp, tmp + n - keep, keep);
			n = keep;
		}
	}
	hl7_dec_bytes(dec, (const char *)tmp, n);
	return true;
}

/* One escape sequence: body is what lies between the escape characters, whole includes them. */
static void
hl7_dec_escape(struct hl7_decoder *dec, const hl7_delims_t *d, slice_t body, slice_t whole)
{
	char c = 0;

	if (body.len == 1) {
		switch (body.ptr[0]) {
		case 'F':
			c = d->field;
			break;
		case 'S':
			c = d->component;
			break;
		case 'T':
			c = d->subcomponent;
			break;
		case 'R':
			c = d->repetition;
			break;
		case 'E':
			c = d->escape;
			break;
		case 'P':
			c = d->truncation;
			break;
		default:
			break;
		}
	}
	if (c != 0)
		hl7_dec_append(dec, &c, 1);
	else if (slice_eq_cstr(body, ".br"))
		hl7_dec_append(dec, "\n", 1);
	else if (body.len == 0 || body.ptr[0] != 'X' ||
		 !hl7_dec_hex(dec, slice_make(body.ptr + 1, body.len - 1)))
		hl7_dec_bytes(dec, whole.ptr, whole.len);
}

int
hl7_text_decode(const hl7_msg_t *m, slice_t raw, buf_t *out)
{
	const hl7_delims_t *d = m != NULL ? &m->delims : &hl7_delims_std;
	struct hl7_decoder dec = {out, m != NULL ? m->charset : HL7_CHARSET_ASCII, 0, 0};
	const char *p = raw.ptr, *end;

	if (raw.len == 0)
		return 0;
	end = raw.ptr + raw.len;
	while (p < end && dec.rc == 0) {
		const char *e = memchr(p, d->escape, (size_t)(end - p)), *close;

		if (e == NULL) {
			hl7_dec_bytes(&dec, p, (size_t)(end - p));
			break;
		}
		hl7_dec_bytes(&dec, p, (size_t)(e - p));
		close = memchr(e + 1, d->escape, (size_t)(end - e - 1));
		if (close == NULL) {
			hl7_dec_bytes(&dec, e, (size_t)(end - e));
			break;
		}
		hl7_dec_escape(&dec, d, slice_make(e + 1, (size_t)(close - e - 1)),
			       slice_make(e, (size_t)(close + 1 - e)));
		p = close + 1;
	}
	if (dec.rc < 0)
		return dec.rc;
	return dec.replaced > INT_MAX ? INT_MAX : (int)dec.replaced;
}

enum hl7_line_kind {
	HL7_LINE_OTHER,
	HL7_LINE_MSH,
	HL7_LINE_FHS,
	HL7_LINE_BHS,
	HL7_LINE_BTS,
	HL7_LINE_FTS
};

static enum hl7_line_kind
hl7_line_kind(slice_t line)
{
	static const char *const ids[] = {"MSH", "FHS", "BHS", "BTS", "FTS"};

	if (line.len < 3 || (line.len > 3 && hl7_is_alnum(line.ptr[3])))
		return HL7_LINE_OTHER;
	for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++)
		if (memcmp(line.ptr, ids[i], 3) == 0)
			return (enum hl7_line_kind)(HL7_LINE_MSH + i);
	return HL7_LINE_OTHER;
}

/* The batch splitter's state: messages found so far and the open message, if any. */
struct hl7_splitter {
	arena_t *a;
	slice_t *msgs;
	size_t n, cap;
	const char *start, *end; /* the open message; start NULL when none */
};

static void
hl7_splitter_close(struct hl7_splitter *sp)
{
	if (sp->start == NULL)
		return;
	if (sp->n == sp->cap) {
		size_t ncap = sp->cap ? 2 * sp->cap : 8;
		slice_t *nm = arena_alloc(sp->a, ncap * sizeof(*nm));

		if (sp->n > 0)
			memcpy(nm, sp->msgs, sp->n * sizeof(*nm));
		sp->msgs = nm;
		sp->cap = ncap;
	}
	sp->msgs[sp->n++] = slice_make(sp->start, (size_t)(sp->end - sp->start));
	sp->start = NULL;
}

int
hl7_batch_split(arena_t *a, const char *data, size_t len, slice_t **msgs, size_t *count,
		hl7_error_t *err)
{
	struct hl7_splitter sp = {a, NULL, 0, 0, NULL, NULL};
	bool in_file = false, in_batch = false, seen_bhs = false;
	const char *pos, *end, *problem;
	size_t lineno = 0;
	slice_t line;

	*msgs = NULL;
	*count = 0;
	if (err != NULL)
		memset(err, 0, sizeof(*err));
	if (data == NULL || len == 0)
		return 0;
	end = data + len;
	pos = hl7_skip_bom(data, end);
	while (hl7_line_next(&pos, end, &line)) {
		enum hl7_line_kind kind;

		if (hl7_line_is_blank(line))
			continue;
		lineno++;
		kind = hl7_line_kind(line);
		problem = NULL;
		switch (kind) {
		case HL7_LINE_MSH:
			hl7_splitter_close(&sp);
			sp.start = line.ptr;
			break;
		case HL7_LINE_FHS:
			if (sp.start != NULL)
				problem = "FHS inside a message";
			else if (in_file || in_batch || sp.n > 0)
				problem = "FHS not at the start of the file";
			in_file = true;
			break;
		case HL7_LINE_BHS:
			if (sp.start != NULL)
				problem = "BHS inside a message";
			else if (in_batch)
				problem = "BHS inside a batch (BTS missing)";
			in_batch = seen_bhs = true;
			break;
		case HL7_LINE_BTS:
			hl7_splitter_close(&sp);
			/* A lone trailing BTS is accepted, as python-hl7 does (corpus BATCH/
			 * batch4-bts-only); once batches have headers, each BTS needs one. */
			if (!in_batch && seen_bhs)
				problem = "BTS without a matching BHS";
			in_batch = false;
			break;
		case HL7_LINE_FTS:
			hl7_splitter_close(&sp);
			if (!in_file)
				problem = "FTS without a matching FHS";
			else if (in_batch)
				problem = "FTS inside a batch (BTS missing)";
			in_file = false;
			break;
		case HL7_LINE_OTHER:
			if (sp.start == NULL)
				problem = "segment outside a message (no MSH before it)";
			break;
		}
		if (problem != NULL) {
			slice_t id = slice_make(line.ptr, line.len < 3 ? line.len : 3);
			struct hl7_loc loc = {hl7_seg_id_is_valid(id) ? id : SLICE_NULL,
					      0,
					      0,
					      0,
					      lineno,
					      (size_t)(line.ptr - data)};

			return hl7_fail(err, -FG_EPARSE, HL7_ERR_SEGMENT_SEQUENCE, 'R', loc,
					"batch segment %zu: %s", lineno, problem);
		}
		sp.end = pos;
	}
	hl7_splitter_close(&sp);
	*msgs = sp.msgs;
	*count = sp.n;
	return 0;
}
