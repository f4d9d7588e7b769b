/* Unit tests for the HL7 v2 parser, decoder, validation, batch splitting and ACKs. */
#include "config.h"

#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "lib/arena.h"
#include "lib/buf.h"
#include "lib/err.h"
#include "lib/slice.h"
#include "mappings/hl7.h"

/* 2023-11-14T22:13:20Z */
#define NOW_NS 1700000000000000000ull

static int
setup_arena(void **state)
{
	*state = arena_new(0);
	return 0;
}

static int
teardown_arena(void **state)
{
	arena_free(*state);
	return 0;
}

static void
check_slice(slice_t got, const char *want, const char *file, int line)
{
	if (!slice_eq_cstr(got, want)) {
		print_error("got \"%.*s\", want \"%s\"\n", (int)got.len, got.ptr ? got.ptr : "",
			    want);
		_fail(file, line);
	}
}
#define assert_slice(got, want) check_slice((got), (want), __FILE__, __LINE__)

/* Decodes raw with m's escapes and charset and compares with want and the replacement count. */
static void
check_decoded(const hl7_msg_t *m, slice_t raw, const char *want, int replaced, const char *file,
	      int line)
{
	buf_t b = BUF_INIT;
	int rc = hl7_text_decode(m, raw, &b);

	if (rc != replaced || !slice_eq_cstr(buf_slice(&b), want)) {
		print_error("decoded \"%.*s\" (%d replaced), want \"%s\" (%d)\n", (int)b.len,
			    b.data ? b.data : "", rc, want, replaced);
		buf_free(&b);
		_fail(file, line);
	}
	buf_free(&b);
}
#define assert_decoded(m, raw, want, n) check_decoded((m), (raw), (want), (n), __FILE__, __LINE__)

static hl7_msg_t *
parse_ok(arena_t *a, const char *text)
{
	hl7_msg_t *m = NULL;
	hl7_error_t err;
	int rc = hl7_parse(a, text, strlen(text), NULL, &m, &err);

	if (rc != 0)
		print_error("parse: %d %s\n", err.code, err.text);
	assert_int_equal(rc, 0);
	assert_non_null(m);
	return m;
}

static const hl7_seg_t *
seg(const hl7_msg_t *m, const char *id)
{
	const hl7_seg_t *s = hl7_msg_find(m, id, 0);

	assert_non_null(s);
	return s;
}

static char *
read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *data;
	long n;

	assert_non_null(f);
	assert_int_equal(fseek(f, 0, SEEK_END), 0);
	n = ftell(f);
	assert_true(n >= 0);
	rewind(f);
	data = malloc((size_t)n + 1);
	assert_non_null(data);
	assert_int_equal(fread(data, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	*len = (size_t)n;
	return data;
}

#define ADT_A01                                                                    \
	"MSH|^~\\&|SND|SFAC|RCV|RFAC|20240101120000||ADT^A01^ADT_A01|MSG1|P|2.5\r" \
	"EVN|A01|20240101120000\r"                                                 \
	"PID|1||123^^^HOSP^MR~456^^^SSA^SS||DOE^JOHN^Q&R^^DR||19800101|M\r"        \
	"PV1|1|I\r"

static void
test_delims_standard(void **state)
{
	hl7_msg_t *m = parse_ok(*state, ADT_A01);
	const hl7_delims_t *d = hl7_msg_delims(m);
	const hl7_seg_t *msh = hl7_msg_segment(m, 0);

	assert_int_equal(d->field, '|');
	assert_int_equal(d->component, '^');
	assert_int_equal(d->repetition, '~');
	assert_int_equal(d->escape, '\\');
	assert_int_equal(d->subcomponent, '&');
	assert_int_equal(d->truncation, 0);
	assert_slice(hl7_seg_id(msh), "MSH");
	assert_slice(hl7_seg_field(msh, 1), "|");
	assert_slice(hl7_seg_field(msh, 2), "^~\\&");
	assert_slice(hl7_seg_field(msh, 3), "SND");
	assert_slice(hl7_seg_field(msh, 12), "2.5");
	assert_int_equal(hl7_seg_field_count(msh), 12);
	/* MSH-1 and MSH-2 are never split into components. */
	assert_slice(hl7_seg_get(m, msh, 2, 1, 1, 0), "^~\\&");
	assert_slice(hl7_seg_get(m, msh, 2, 1, 2, 0), "");
	assert_int_equal(hl7_msg_segment_count(m), 4);
	assert_null(hl7_msg_segment(m, 4));
}

static void
test_delims_custom(void **state)
{
	/* field '#', component '$', repetition '%', escape '!', subcomponent '*' */
	hl7_msg_t *m = parse_ok(*state, "MSH#$%!*#SND#SFAC#RCV#RFAC#20240101##ADT$A01#C1#P#2.5\r"
					"EVN#A01\r"
					"PID#1##A$B*C%D$E##X!F!Y!S!Z!T!W!R!V!E!U\r"
					"PV1#1\r");
	const hl7_delims_t *d = hl7_msg_delims(m);
	const hl7_seg_t *pid = seg(m, "PID");

	assert_int_equal(d->field, '#');
	assert_int_equal(d->component, '$');
	assert_int_equal(d->repetition, '%');
	assert_int_equal(d->escape, '!');
	assert_int_equal(d->subcomponent, '*');
	assert_slice(hl7_seg_field(hl7_msg_segment(m, 0), 1), "#");
	assert_slice(hl7_seg_field(hl7_msg_segment(m, 0), 2), "$%!*");
	assert_slice(hl7_msg_header(m)->msg_code, "ADT");
	assert_slice(hl7_msg_header(m)->trigger, "A01");
	assert_slice(hl7_msg_header(m)->structure, "ADT_A01");
	assert_slice(hl7_seg_get(m, pid, 3, 1, 2, 2), "C");
	assert_slice(hl7_seg_get(m, pid, 3, 2, 2, 0), "E");
	assert_decoded(m, hl7_seg_field(pid, 5), "X#Y$Z*W%V!U", 0);
	assert_int_equal(hl7_msg_validate(m, NULL), 0);
	/* a segment without the repetition separator: each field is its first repetition only
	 * ('~' is not this message's separator) */
	assert_true(hl7_seg_may_repeat(pid));
	assert_false(hl7_seg_may_repeat(seg(m, "EVN")));
	assert_true(hl7_seg_may_repeat(hl7_msg_segment(m, 0)));
	assert_slice(hl7_seg_get(m, seg(m, "EVN"), 1, 1, 0, 0), "A01");
	assert_slice(hl7_seg_get(m, seg(m, "EVN"), 1, 0, 0, 0), "A01");
	assert_slice(hl7_seg_get(m, seg(m, "EVN"), 1, 2, 0, 0), "");
	assert_slice(hl7_seg_get(m, seg(m, "EVN"), 2, 1, 0, 0), "");
	assert_slice(hl7_seg_get(m, seg(m, "PV1"), 1, 1, 1, 0), "1");
	/* PID-1, PID-3 and PID-5 are valued */
	assert_true(hl7_seg_valued(pid) == 0x15);
	assert_true(hl7_seg_valued(seg(m, "EVN")) == 0x1);
}

static void
test_delims_caret_field_sep(void **state)
{
	size_t len;
	char *data = read_file(
	    TEST_DATA_DIR "/hl7v2/ORU_R01/hapi-test-VA-ORU-caret-field-sep-ZSC.hl7", &len);
	hl7_msg_t *m = NULL;
	hl7_error_t err;
	const hl7_header_t *h;

	assert_int_equal(hl7_parse(*state, data, len, NULL, &m, &err), 0);
	assert_int_equal(hl7_msg_validate(m, &err), 0);
	h = hl7_msg_header(m);
	assert_int_equal(hl7_msg_delims(m)->field, '^');
	assert_int_equal(hl7_msg_delims(m)->component, '~');
	assert_int_equal(hl7_msg_delims(m)->repetition, '|');
	assert_slice(h->msg_code, "ORU");
	assert_slice(h->trigger, "R01");
	assert_slice(h->structure, "ORU_R01");
	assert_slice(h->version, "2.4");
	assert_slice(h->accept_ack, "AL");
	assert_slice(h->app_ack, "NE");
	assert_slice(hl7_seg_get(m, seg(m, "OBR"), 4, 1, 2, 0), "PAIN");
	assert_slice(hl7_seg_field(seg(m, "ZSC"), 3), "OBSERVATION SURGERY");
	assert_non_null(hl7_msg_find(m, "OBX", 1));
	assert_null(hl7_msg_find(m, "OBX", 2));
	free(data);
}

static void
check_parse_error(arena_t *a, const char *text, int rc, int code, const char *segment,
		  unsigned field, size_t line, bool has_msg)
{
	hl7_msg_t *m = (hl7_msg_t *)1;
	hl7_error_t err;

	assert_int_equal(hl7_parse(a, text, strlen(text), NULL, &m, &err), rc);
	assert_int_equal(err.code, code);
	assert_string_equal(err.segment, segment);
	assert_int_equal(err.field, field);
	assert_int_equal(err.line, line);
	assert_true(err.text[0] != '\0');
	if (has_msg)
		assert_non_null(m);
	else
		assert_null(m);
}

static void
test_delims_bad(void **state)
{
	check_parse_error(*state, "MSH|^~}|A|B|C|D|2024||ADT^A01|1|P|2.4\r", -FG_EPARSE, 102, "MSH",
			  2, 1, false);
	check_parse_error(*state, "MSH|^~\\^|A\r", -FG_EPARSE, 102, "MSH", 2, 1, false);
	check_parse_error(*state, "MSH|^~\\&#*|A\r", -FG_EPARSE, 102, "MSH", 2, 1, false);
	check_parse_error(*state, "MSH|^|\\&|A\r", -FG_EPARSE, 102, "MSH", 2, 1, false);
	check_parse_error(*state, "MSH|", -FG_EPARSE, 102, "MSH", 2, 1, false);
	check_parse_error(*state, "MSH", -FG_EPARSE, 102, "MSH", 1, 1, false);
	check_parse_error(*state, "MSHA^~\\&A", -FG_EPARSE, 102, "MSH", 1, 1, false);
	check_parse_error(*state, "MSH|^~a&|", -FG_EPARSE, 102, "MSH", 2, 1, false);
	check_parse_error(*state, "PID|1\rMSH|^~\\&|\r", -FG_EPARSE, 100, "", 0, 1, false);
	check_parse_error(*state, "", -FG_EPARSE, 100, "", 0, 1, false);
	check_parse_error(*state, "\r\n\r\n", -FG_EPARSE, 100, "", 0, 1, false);
}

static void
test_truncation_char(void **state)
{
	hl7_msg_t *m =
	    parse_ok(*state, "MSH|^~\\&#|A|B|C|D|20240101||ADT^A01|1|P|2.7\rNTE|1||50\\P\\ cut#\r");
	const hl7_seg_t *nte = seg(m, "NTE");

	assert_int_equal(hl7_msg_delims(m)->truncation, '#');
	assert_slice(hl7_seg_field(hl7_msg_segment(m, 0), 2), "^~\\&#");
	assert_slice(hl7_seg_field(nte, 3), "50\\P\\ cut#");
	assert_decoded(m, hl7_seg_field(nte, 3), "50# cut#", 0);
	/* Without a truncation character \P\ is an unknown escape, kept as is. */
	m = parse_ok(*state, "MSH|^~\\&|A\rNTE|1||\\P\\\r");
	assert_decoded(m, hl7_seg_field(seg(m, "NTE"), 3), "\\P\\", 0);
}

static void
test_escapes(void **state)
{
	hl7_msg_t *m = parse_ok(*state, ADT_A01);

	assert_decoded(m, SLICE_LIT("a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f"), "a|b^c&d~e\\f", 0);
	assert_decoded(m, SLICE_LIT("\\X41\\\\X4243\\"), "ABC", 0);
	assert_decoded(m, SLICE_LIT("\\X4a6B\\"), "Jk", 0);
	assert_decoded(m, SLICE_LIT("line1\\.br\\line2"), "line1\nline2", 0);
	assert_decoded(m, SLICE_LIT("\\H\\bold\\N\\ \\.sp2\\ \\.in+4\\"),
		       "\\H\\bold\\N\\ \\.sp2\\ \\.in+4\\", 0);
	assert_decoded(m, SLICE_LIT("\\Q\\ \\Cxxyy\\ \\Zfoo\\"), "\\Q\\ \\Cxxyy\\ \\Zfoo\\", 0);
	assert_decoded(m, SLICE_LIT("a\\\\b"), "a\\\\b", 0);
	assert_decoded(m, SLICE_LIT("tail\\F"), "tail\\F", 0);
	assert_decoded(m, SLICE_LIT("tail\\"), "tail\\", 0);
	assert_decoded(m, SLICE_LIT("\\X4\\ \\XZZ\\ \\X\\"), "\\X4\\ \\XZZ\\ \\X\\", 0);
	/* A NUL from \X00\ does not reach C strings. */
	assert_decoded(m, SLICE_LIT("a\\X00\\b"),
		       "a\xef\xbf\xbd"
		       "b",
		       1);
	/* Escapes in UTF-8 hex are decoded as the message's charset. */
	assert_decoded(m, SLICE_LIT("\\XC3A9\\"), "\xc3\xa9", 0);
	/* control characters (raw or \Xhh\) but tab, CR and LF cannot be in any FHIR or XML
	 * text: replaced */
	assert_decoded(m,
		       SLICE_LIT("A\x01"
				 "B\x1f"
				 "\x7f"),
		       "A\xef\xbf\xbd"
		       "B\xef\xbf\xbd"
		       "\x7f",
		       2);
	assert_decoded(m, SLICE_LIT("a\tb\nc\rd"), "a\tb\nc\rd", 0);
	/* so are U+FFFE and U+FFFF, which XML cannot carry either (U+FFFD and U+FEFF stay) */
	assert_decoded(m, SLICE_LIT("\xef\xbf\xbe|\xef\xbf\xbf|\xef\xbf\xbd\xef\xbb\xbf"),
		       "\xef\xbf\xbd|\xef\xbf\xbd|\xef\xbf\xbd\xef\xbb\xbf", 2);
	assert_decoded(m, SLICE_LIT("x\\X0A\\y\\X1B\\z"), "x\ny\xef\xbf\xbdz", 1);
	assert_decoded(m, SLICE_LIT(""), "", 0);
	assert_true(hl7_is_null(SLICE_LIT("\"\"")));
	assert_false(hl7_is_null(SLICE_LIT("\"")));
	assert_false(hl7_is_null(SLICE_LIT("")));
}

static void
test_escape_hex_long(void **state)
{
	/* Long \X sequences are decoded in chunks: a character that straddles two chunks must
	 * come out whole. The prefixes put a 2-, 3- and 4-byte character across the boundary. */
	static const struct {
		const char *prefix, *hex, *utf8;
	} cases[] = {
	    {"41", "C3A9", "\xc3\xa9"},
	    {"4142", "E282AC", "\xe2\x82\xac"},
	    {"41", "F09F9880", "\xf0\x9f\x98\x80"},
	};
	hl7_msg_t *m = parse_ok(*state, ADT_A01);

	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		buf_t raw = BUF_INIT, want = BUF_INIT, got = BUF_INIT;

		assert_int_equal(buf_printf(&raw, "\\X%s", cases[c].prefix), 0);
		for (size_t i = 0; i < strlen(cases[c].prefix) / 2; i++)
			assert_int_equal(buf_append_byte(&want, (char)('A' + i)), 0);
		for (int i = 0; i < 300; i++) {
			assert_int_equal(buf_append_cstr(&raw, cases[c].hex), 0);
			assert_int_equal(buf_append_cstr(&want, cases[c].utf8), 0);
		}
		assert_int_equal(buf_append_byte(&raw, '\\'), 0);
		assert_int_equal(hl7_text_decode(m, buf_slice(&raw), &got), 0);
		assert_int_equal(got.len, want.len);
		assert_memory_equal(got.data, want.data, want.len);
		buf_free(&raw);
		buf_free(&want);
		buf_free(&got);
	}
}

static void
test_charsets(void **state)
{
	arena_t *a = *state;
	hl7_msg_t *m;
	hl7_error_t err;

	m = parse_ok(a, "MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5|||||DE|8859/1\r"
			"PID|1||||M\xfcLLER^Jos\xe9\\XE9\\\r");
	assert_int_equal(hl7_msg_charset(m), HL7_CHARSET_LATIN1);
	assert_decoded(m, hl7_seg_field(seg(m, "PID"), 5), "M\xc3\xbcLLER^Jos\xc3\xa9\xc3\xa9", 0);

	m = parse_ok(a, "MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5|||||DE|ISO IR100\r");
	assert_int_equal(hl7_msg_charset(m), HL7_CHARSET_LATIN1);

	m = parse_ok(a, "MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5|||||DE|8859/15\r"
			"NTE|1||\xa4 \xa6\xbc \xe9\r");
	assert_int_equal(hl7_msg_charset(m), HL7_CHARSET_LATIN9);
	assert_decoded(m, hl7_seg_field(seg(m, "NTE"), 3), "\xe2\x82\xac \xc5\xa0\xc5\x92 \xc3\xa9",
		       0);

	m = parse_ok(a, "MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5|||||DE|UNICODE UTF-8\r"
			"NTE|1||\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80 bad:\xff\xc3(\xed\xa0\x80\r");
	assert_int_equal(hl7_msg_charset(m), HL7_CHARSET_UTF8);
	/* \xff, the lone \xc3, and the three bytes of a UTF-16 surrogate are replaced. */
	assert_decoded(m, hl7_seg_field(seg(m, "NTE"), 3),
		       "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80 bad:\xef\xbf\xbd\xef\xbf\xbd("
		       "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd",
		       5);
	m = parse_ok(a, "MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5|||||DE|ISO IR192\r");
	assert_int_equal(hl7_msg_charset(m), HL7_CHARSET_UTF8);
	m = parse_ok(a, "MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5|||||DE|UTF-8\r");
	assert_int_equal(hl7_msg_charset(m), HL7_CHARSET_UTF8);

	/* Empty or ASCII: valid UTF-8 passes (real feeds send it), anything else is replaced. */
	m = parse_ok(a,
		     "MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5\rNTE|1||\xc3\xbc \xfc\xc0\xaf\r");
	assert_int_equal(hl7_msg_charset(m), HL7_CHARSET_ASCII);
	assert_decoded(m, hl7_seg_field(seg(m, "NTE"), 3),
		       "\xc3\xbc \xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd", 3);
	/* Overlong forms, code points past U+10FFFF and truncated sequences are replaced. */
	assert_decoded(m, SLICE_LIT("\xe0\x80\xaf|\xf0\x80\x80\xaf|\xf4\x90\x80\x80|\xe2\x82"),
		       "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd|\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"
		       "\xef\xbf\xbd|\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd|"
		       "\xef\xbf\xbd\xef\xbf\xbd",
		       13);
	m = parse_ok(a, "MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5|||||DE|ISO IR6\r");
	assert_int_equal(hl7_msg_charset(m), HL7_CHARSET_ASCII);
	m = parse_ok(a, "MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5|||||DE|ASCII\r");
	assert_int_equal(hl7_msg_charset(m), HL7_CHARSET_ASCII);

	/* Unknown MSH-18: parses, then validation rejects it. */
	m = parse_ok(a, "MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5|||||DE|EBCDIC~8859/1\r"
			"EVN|A01\rPID|1\rPV1|1\r");
	assert_slice(hl7_msg_header(m)->charset, "EBCDIC");
	assert_int_equal(hl7_msg_validate(m, &err), -FG_EINVAL);
	assert_int_equal(err.code, HL7_ERR_TABLE_VALUE);
	assert_int_equal(err.ack, 'R');
	assert_string_equal(err.segment, "MSH");
	assert_int_equal(err.field, 18);
	assert_null(strstr(err.text, "EBCDIC"));

	/* The buffer cap is reported as an error. */
	{
		buf_t b;

		buf_init(&b, 4);
		assert_int_equal(hl7_text_decode(m, SLICE_LIT("abcdef"), &b), -FG_ETOOBIG);
		buf_free(&b);
	}
}

static void
test_synthetic_escapes_utf8(void **state)
{
	size_t len;
	char *data = read_file(TEST_DATA_DIR "/synthetic/11_adt_a01_escapes_utf8.hl7", &len);
	hl7_msg_t *m = NULL;
	hl7_error_t err;
	const hl7_seg_t *pid;

	assert_int_equal(hl7_parse(*state, data, len, NULL, &m, &err), 0);
	assert_int_equal(hl7_msg_validate(m, &err), 0);
	pid = seg(m, "PID");
	assert_decoded(m, hl7_seg_get(m, pid, 5, 1, 1, 0), "MÜLLER-LÜDENSCHEIDT", 0);
	assert_decoded(m, hl7_seg_get(m, pid, 5, 2, 1, 0), "O&BRIEN", 0);
	assert_decoded(m, hl7_seg_get(m, pid, 11, 1, 1, 0), "KÖNIGSALLEE 12~HINTERHAUS", 0);
	assert_decoded(m, hl7_seg_get(m, seg(m, "AL1"), 3, 1, 2, 0),
		       "Ibuprofen | NSAIDs ^ class \\ related", 0);
	assert_decoded(m, hl7_seg_field(seg(m, "NTE"), 3),
		       "Patient says: \\H\\do not\\N\\ call after 22:00 | escaped field separator",
		       0);
	free(data);
}

static void
test_terminators(void **state)
{
	static const char *const variants[] = {
	    "MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5\rEVN|A01\rPID|1||X\rPV1|1",
	    "MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5\nEVN|A01\nPID|1||X\nPV1|1\n",
	    "MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5\r\nEVN|A01\r\nPID|1||X\r\nPV1|1\r\n",
	    "\xef\xbb\xbfMSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5\rEVN|A01\rPID|1||X\rPV1|1\r",
	    "MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5\rEVN|A01\rPID|1||X\rPV1|1\r\r\n\n \r",
	    "\n\rMSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5\r\rEVN|A01\rPID|1||X\rPV1|1\r",
	};

	for (size_t i = 0; i < sizeof(variants) / sizeof(variants[0]); i++) {
		hl7_msg_t *m = parse_ok(*state, variants[i]);
		const hl7_seg_t *pv1 = hl7_msg_segment(m, 3);
		slice_t bytes = hl7_msg_bytes(m);

		assert_int_equal(hl7_msg_segment_count(m), 4);
		assert_slice(hl7_seg_field(seg(m, "PID"), 3), "X");
		assert_slice(hl7_seg_id(pv1), "PV1");
		assert_slice(hl7_seg_field(pv1, 1), "1");
		assert_int_equal(hl7_msg_validate(m, NULL), 0);
		assert_true(bytes.len >= 4 && memcmp(bytes.ptr, "MSH|", 4) == 0);
		/* The bytes end with PV1 and its own terminator, not the blank lines after it. */
		assert_true(bytes.ptr[bytes.len - 1] == '1' || bytes.ptr[bytes.len - 1] == '\r' ||
			    bytes.ptr[bytes.len - 1] == '\n');
		assert_non_null(memmem(bytes.ptr + bytes.len - 7, 7, "PV1|1", 5));
	}
}

static void
test_access(void **state)
{
	hl7_msg_t *m = parse_ok(*state, ADT_A01 "NK1|1|ROE^JANE||||||\r");
	const hl7_seg_t *pid = seg(m, "PID"), *nk1 = seg(m, "NK1");
	slice_t pid3 = hl7_seg_field(pid, 3);

	assert_slice(pid3, "123^^^HOSP^MR~456^^^SSA^SS");
	assert_slice(hl7_seg_get(m, pid, 3, 0, 0, 0), "123^^^HOSP^MR~456^^^SSA^SS");
	assert_slice(hl7_seg_get(m, pid, 3, 1, 0, 0), "123^^^HOSP^MR");
	assert_slice(hl7_seg_get(m, pid, 3, 2, 0, 0), "456^^^SSA^SS");
	assert_slice(hl7_seg_get(m, pid, 3, 2, 4, 0), "SSA");
	assert_slice(hl7_seg_get(m, pid, 3, 0, 1, 0), "123");
	assert_slice(hl7_seg_get(m, pid, 3, 3, 1, 0), "");
	assert_slice(hl7_seg_get(m, pid, 3, 1, 2, 0), "");
	assert_slice(hl7_seg_get(m, pid, 3, 1, 9, 0), "");
	assert_slice(hl7_seg_get(m, pid, 5, 1, 3, 0), "Q&R");
	assert_slice(hl7_seg_get(m, pid, 5, 1, 3, 1), "Q");
	assert_slice(hl7_seg_get(m, pid, 5, 1, 3, 2), "R");
	assert_slice(hl7_seg_get(m, pid, 5, 1, 3, 3), "");
	assert_slice(hl7_seg_get(m, pid, 5, 0, 0, 1), "DOE");
	assert_slice(hl7_seg_get(m, pid, 8, 1, 1, 1), "M");
	assert_slice(hl7_seg_get(m, pid, 9, 1, 1, 1), "");
	assert_slice(hl7_seg_get(m, pid, 99, 0, 0, 0), "");
	assert_slice(hl7_seg_field(pid, 0), "");
	assert_slice(hl7_seg_field(pid, 2), "");
	assert_int_equal(hl7_seg_field_count(pid), 8);
	/* Trailing empty fields are not counted. */
	assert_int_equal(hl7_seg_field_count(nk1), 2);
	assert_slice(hl7_seg_field(nk1, 5), "");
	assert_int_equal(hl7_split_count(pid3, '~'), 2);
	assert_int_equal(hl7_split_count(pid3, '^'), 9);
	assert_int_equal(hl7_split_count(SLICE_LIT(""), '~'), 0);
	assert_int_equal(hl7_split_count(SLICE_LIT("~"), '~'), 2);
	assert_slice(hl7_split_nth(SLICE_LIT("a~b~"), '~', 2), "b");
	assert_slice(hl7_split_nth(SLICE_LIT("a~b~"), '~', 3), "");
	assert_slice(hl7_split_nth(SLICE_LIT("a~b~"), '~', 4), "");
	assert_slice(hl7_split_nth(SLICE_LIT("a~b~"), '~', 0), "");
	assert_null(hl7_msg_find(m, "OBX", 0));
	assert_null(hl7_msg_find(m, "PI", 0));
	assert_null(hl7_msg_find(m, "PID", 1));
	assert_ptr_equal(hl7_msg_find(m, "MSH", 0), hl7_msg_segment(m, 0));
	assert_slice(hl7_seg_get(NULL, pid, 3, 2, 1, 0), "456");
}

static void
test_header(void **state)
{
	hl7_msg_t *m = parse_ok(*state, "MSH|^~\\&|APP^1|FAC|RAPP|RFAC|20240101120000^S|SEC|"
					"ORU^R01^ORU_R01^X|CTL 1|T^A|2.5.1^USA|||AL|ER|USA|"
					"UNICODE UTF-8~8859/1\rOBR|1\r");
	const hl7_header_t *h = hl7_msg_header(m);

	assert_slice(h->sending_app, "APP^1");
	assert_slice(h->sending_fac, "FAC");
	assert_slice(h->receiving_app, "RAPP");
	assert_slice(h->receiving_fac, "RFAC");
	assert_slice(h->datetime, "20240101120000");
	assert_slice(h->msg_code, "ORU");
	assert_slice(h->trigger, "R01");
	assert_slice(h->structure, "ORU_R01");
	assert_slice(h->control_id, "CTL 1");
	assert_slice(h->processing_id, "T");
	assert_slice(h->version, "2.5.1");
	assert_slice(h->accept_ack, "AL");
	assert_slice(h->app_ack, "ER");
	assert_slice(h->charset, "UNICODE UTF-8");
	assert_int_equal(hl7_msg_charset(m), HL7_CHARSET_UTF8);
	assert_true(hl7_msg_is_enhanced(m));
	assert_int_equal(hl7_msg_validate(m, NULL), 0);
}

static void
test_zsegments(void **state)
{
	hl7_msg_t *m = parse_ok(*state, ADT_A01 "ZPI|1|Fido~Rex|12\rZ01|x\rZPI|2\r");
	const hl7_seg_t *z = hl7_msg_find(m, "ZPI", 0);

	assert_non_null(z);
	assert_slice(hl7_seg_get(m, z, 2, 2, 0, 0), "Rex");
	assert_slice(hl7_seg_field(hl7_msg_find(m, "ZPI", 1), 1), "2");
	assert_slice(hl7_seg_field(hl7_msg_find(m, "Z01", 0), 1), "x");
	assert_int_equal(hl7_msg_validate(m, NULL), 0);
}

static void
check_structure(arena_t *a, const char *msh9, const char *want)
{
	char text[200];
	hl7_msg_t *m;

	snprintf(text, sizeof(text), "MSH|^~\\&|A|B|C|D|20240101||%s|1|P|2.5\r", msh9);
	m = parse_ok(a, text);
	assert_slice(hl7_msg_header(m)->structure, want);
}

static void
test_structure(void **state)
{
	static const char *const cases[][2] = {
	    {"ADT^A01", "ADT_A01"},     {"ADT^A04", "ADT_A01"}, {"ADT^A08", "ADT_A01"},
	    {"ADT^A13", "ADT_A01"},     {"ADT^A02", "ADT_A02"}, {"ADT^A03", "ADT_A03"},
	    {"ADT^A05", "ADT_A05"},     {"ADT^A14", "ADT_A05"}, {"ADT^A28", "ADT_A05"},
	    {"ADT^A31", "ADT_A05"},     {"ADT^A06", "ADT_A06"}, {"ADT^A07", "ADT_A06"},
	    {"ADT^A09", "ADT_A09"},     {"ADT^A12", "ADT_A09"}, {"ADT^A17", "ADT_A17"},
	    {"ADT^A39", "ADT_A39"},     {"ADT^A40", "ADT_A39"}, {"ADT^A42", "ADT_A39"},
	    {"ADT^A43", "ADT_A43"},     {"ADT^A45", "ADT_A45"}, {"ADT^A47", "ADT_A30"},
	    {"ADT^A49", "ADT_A30"},     {"ADT^A50", "ADT_A50"}, {"ADT^A51", "ADT_A50"},
	    {"ADT^A60", "ADT_A60"},     {"ADT^A24", "ADT_A24"}, {"ORU^R01", "ORU_R01"},
	    {"ORU^R31", "ORU_R30"},     {"ORM^O01", "ORM_O01"}, {"OML^O21", "OML_O21"},
	    {"VXU^V04", "VXU_V04"},     {"SIU^S12", "SIU_S12"}, {"SIU^S26", "SIU_S12"},
	    {"MDM^T01", "MDM_T01"},     {"MDM^T03", "MDM_T01"}, {"MDM^T02", "MDM_T02"},
	    {"MDM^T10", "MDM_T02"},     {"RDE^O11", "RDE_O11"}, {"DFT^P03", "DFT_P03"},
	    {"BAR^P01", "BAR_P01"},     {"PPR^PC2", "PPR_PC1"}, {"PPR^PC3", "PPR_PC1"},
	    {"ACK^A01", "ACK"},         {"ACK", "ACK"},         {"ZZZ^Z01", "ZZZ_Z01"},
	    {"ADT^A01^ADT_X", "ADT_X"},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		check_structure(*state, cases[i][0], cases[i][1]);
}

static void
check_invalid(arena_t *a, const char *text, int code, char ack, const char *segment, unsigned field,
	      unsigned comp)
{
	hl7_msg_t *m = parse_ok(a, text);
	hl7_error_t err;

	assert_int_equal(hl7_msg_validate(m, &err), -FG_EINVAL);
	if (err.code != code)
		print_error("%s\n", err.text);
	assert_int_equal(err.code, code);
	assert_int_equal(err.ack, ack);
	assert_string_equal(err.segment, segment);
	assert_int_equal(err.field, field);
	assert_int_equal(err.comp, comp);
	assert_true(err.text[0] != '\0');
	/* Field values (here the sentinel SECRET) never reach the error text. */
	assert_null(strstr(err.text, "SECRET"));
}

#define BODY "\rEVN|A01\rPID|1\rPV1|1\r"

static void
test_validate_errors(void **state)
{
	arena_t *a = *state;

	check_invalid(a, "MSH|^~\\&|SECRET|B|C|D|||ADT^A01|1|P|2.5" BODY, 101, 'E', "MSH", 7, 0);
	check_invalid(a, "MSH|^~\\&|A|B|C|D|2024||^A01|1|P|2.5" BODY, 101, 'E', "MSH", 9, 1);
	check_invalid(a, "MSH|^~\\&|A|B|C|D|2024||ADT|1|P|2.5" BODY, 101, 'E', "MSH", 9, 2);
	check_invalid(a, "MSH|^~\\&|A|B|C|D|2024||ADT^A01||P|2.5" BODY, 101, 'E', "MSH", 10, 0);
	check_invalid(a, "MSH|^~\\&|A|B|C|D|2024||ADT^A01|1||2.5" BODY, 101, 'E', "MSH", 11, 0);
	check_invalid(a, "MSH|^~\\&|A|B|C|D|2024||ADT^A01|1|SECRET|2.5" BODY, 202, 'R', "MSH", 11,
		      0);
	check_invalid(a, "MSH|^~\\&|A|B|C|D|2024||ADT^A01|1|P" BODY, 101, 'E', "MSH", 12, 0);
	check_invalid(a, "MSH|^~\\&|A|B|C|D|2024||ADT^A01|1|P|2.9" BODY, 203, 'R', "MSH", 12, 0);
	check_invalid(a, "MSH|^~\\&|A|B|C|D|2024||ADT^A01|1|P|3.0" BODY, 203, 'R', "MSH", 12, 0);
	check_invalid(a, "MSH|^~\\&|A|B|C|D|2024||ADT^A01|1|P|2.5\rPID|1\rPV1|1\r", 100, 'E', "EVN",
		      0, 0);
	check_invalid(a, "MSH|^~\\&|A|B|C|D|2024||ADT^A03|1|P|2.5\rEVN|A03\rPID|1\r", 100, 'E',
		      "PV1", 0, 0);
	check_invalid(a, "MSH|^~\\&|A|B|C|D|2024||ORU^R01|1|P|2.4\rPID|1\rOBX|1\r", 100, 'E', "OBR",
		      0, 0);
	check_invalid(a, "MSH|^~\\&|A|B|C|D|2024||ADT^A40^ADT_A39|1|P|2.5\rEVN|A40\rPID|1\r", 100,
		      'E', "MRG", 0, 0);
	check_invalid(a, "MSH|^~\\&|A|B|C|D|2024||ACK^A01|1|P|2.5\r", 100, 'E', "MSA", 0, 0);

	/* What is accepted: every version, P/T/D, ACK without trigger, A04 without EVN. */
	static const char *const versions[] = {"2.1", "2.2",   "2.3",  "2.3.1", "2.4",
					       "2.5", "2.5.1", "2.6",  "2.7",   "2.7.1",
					       "2.8", "2.8.1", "2.8.2"};
	for (size_t i = 0; i < sizeof(versions) / sizeof(versions[0]); i++) {
		char text[200];

		snprintf(text, sizeof(text), "MSH|^~\\&|A|B|C|D|2024||ADT^A01|1|%c|%s" BODY,
			 "PTD"[i % 3], versions[i]);
		assert_int_equal(hl7_msg_validate(parse_ok(a, text), NULL), 0);
	}
	assert_int_equal(
	    hl7_msg_validate(parse_ok(a, "MSH|^~\\&|A|B|C|D|2024||ACK^|1|P|2.1\rMSA|AA|9\r"), NULL),
	    0);
	assert_int_equal(hl7_msg_validate(parse_ok(a, "MSH|^~\\&|A|B|C|D|2024||ADT^A04|1|P|2.3\r"
						      "PID|1\rPV1|1\r"),
					  NULL),
			 0);
	assert_int_equal(hl7_msg_validate(NULL, NULL), -FG_EINVAL);
}

static void
test_parse_errors(void **state)
{
	arena_t *a = *state;
	const char *text = "MSH|^~\\&|A|B|C|D|2024||ADT^A01|SECRET|P|2.5\rEVN|A01\rDOE^JOHN|x\r";
	hl7_msg_t *m = NULL;
	hl7_error_t err;

	assert_int_equal(hl7_parse(a, text, strlen(text), NULL, &m, &err), -FG_EPARSE);
	assert_int_equal(err.code, 100);
	assert_int_equal(err.ack, 'E');
	assert_int_equal(err.line, 3);
	assert_int_equal(err.offset, strstr(text, "DOE") - text);
	assert_string_equal(err.segment, "");
	assert_null(strstr(err.text, "DOE"));
	/* The MSH was readable: the message is there for the ACK. */
	assert_non_null(m);
	assert_slice(hl7_msg_header(m)->control_id, "SECRET");

	check_parse_error(a, "MSH|^~\\&|A\rpid|1\r", -FG_EPARSE, 100, "", 0, 2, true);
	check_parse_error(a, "MSH|^~\\&|A\rPI|1\r", -FG_EPARSE, 100, "", 0, 2, true);
	check_parse_error(a, "MSH|^~\\&|A\r1ID|1\r", -FG_EPARSE, 100, "", 0, 2, true);
	check_parse_error(a, "MSH|^~\\&|A\rPIDX|1\r", -FG_EPARSE, 100, "", 0, 2, true);
	check_parse_error(a, "MSH|^~\\&|A\rEVN|1\rMSH|^~\\&|B\r", -FG_EPARSE, 100, "MSH", 0, 3,
			  true);
	check_parse_error(a, "MSH|^~\\&|A\r\rBHS|^~\\&\r", -FG_EPARSE, 100, "BHS", 0, 2, true);
	check_parse_error(a, "MSH|^~\\&|A\rPID|1\rBTS|1\r", -FG_EPARSE, 100, "BTS", 0, 3, true);
}

static void
test_limits(void **state)
{
	arena_t *a = *state;
	hl7_limits_t lim;
	hl7_msg_t *m;
	hl7_error_t err;
	const char *text = ADT_A01;

	hl7_limits_default(&lim);
	assert_int_equal(lim.max_message_bytes, 8u << 20);
	assert_int_equal(lim.max_segments, 10000);
	assert_int_equal(lim.max_field_bytes, 4u << 20);

	lim.max_segments = 3;
	assert_int_equal(hl7_parse(a, text, strlen(text), &lim, &m, &err), -FG_ETOOBIG);
	assert_int_equal(err.code, HL7_ERR_INTERNAL);
	assert_int_equal(err.ack, 'R');
	assert_int_equal(err.line, 4);
	assert_string_equal(err.text, "message has more than 3 segments");
	assert_non_null(m);

	hl7_limits_default(&lim);
	lim.max_field_bytes = 15;
	assert_int_equal(hl7_parse(a, text, strlen(text), &lim, &m, &err), -FG_ETOOBIG);
	assert_int_equal(err.code, HL7_ERR_INTERNAL);
	assert_string_equal(err.segment, "PID");
	assert_int_equal(err.seg_seq, 1);
	assert_int_equal(err.field, 3);
	assert_int_equal(err.line, 3);
	assert_string_equal(err.text, "field PID-3 is longer than 15 bytes");
	assert_non_null(m);

	lim.max_field_bytes = 2;
	assert_int_equal(hl7_parse(a, text, strlen(text), &lim, &m, &err), -FG_ETOOBIG);
	assert_string_equal(err.segment, "MSH");
	assert_int_equal(err.field, 2);
	/* An MSH that is only too long still gives a message to mirror in the ACK. */
	assert_non_null(m);
	assert_slice(hl7_msg_header(m)->control_id, "MSG1");

	hl7_limits_default(&lim);
	lim.max_message_bytes = 50;
	assert_int_equal(hl7_parse(a, text, strlen(text), &lim, &m, &err), -FG_ETOOBIG);
	assert_int_equal(err.code, HL7_ERR_INTERNAL);
	assert_non_null(strstr(err.text, "more than the limit of 50"));
	assert_non_null(m);

	/* Many segments and fields within the limits parse. */
	{
		buf_t b = BUF_INIT;

		assert_int_equal(
		    buf_append_cstr(&b, "MSH|^~\\&|A|B|C|D|2024||ORU^R01|1|P|2.5\rOBR|1\r"), 0);
		for (int i = 0; i < 5000; i++)
			assert_int_equal(buf_printf(&b, "OBX|%d|NM|||%d||||||||||||\r", i, i), 0);
		assert_int_equal(hl7_parse(a, b.data, b.len, NULL, &m, &err), 0);
		assert_int_equal(hl7_msg_segment_count(m), 5002);
		assert_slice(hl7_seg_field(hl7_msg_find(m, "OBX", 4999), 5), "4999");
		assert_int_equal(hl7_msg_validate(m, NULL), 0);
		buf_free(&b);
	}
}

static void
check_batch(arena_t *a, const char *text, size_t want, const char *first_ctl)
{
	slice_t *msgs;
	size_t n;
	hl7_error_t err;

	assert_int_equal(hl7_batch_split(a, text, strlen(text), &msgs, &n, &err), 0);
	assert_int_equal(n, want);
	for (size_t i = 0; i < n; i++) {
		hl7_msg_t *m;

		assert_int_equal(hl7_parse(a, msgs[i].ptr, msgs[i].len, NULL, &m, &err), 0);
		assert_int_equal(hl7_msg_validate(m, &err), 0);
		if (i == 0)
			assert_slice(hl7_msg_header(m)->control_id, first_ctl);
	}
}

static void
check_batch_error(arena_t *a, const char *text, const char *segment, size_t line)
{
	slice_t *msgs;
	size_t n;
	hl7_error_t err;

	assert_int_equal(hl7_batch_split(a, text, strlen(text), &msgs, &n, &err), -FG_EPARSE);
	assert_int_equal(err.code, HL7_ERR_SEGMENT_SEQUENCE);
	assert_string_equal(err.segment, segment);
	assert_int_equal(err.line, line);
	assert_true(err.text[0] != '\0');
}

#define MSG(ctl) "MSH|^~\\&|A|B|C|D|2024||ADT^A01|" ctl "|P|2.5\rEVN|A01\rPID|1\rPV1|1\r"

static void
test_batch_split(void **state)
{
	arena_t *a = *state;

	check_batch(a, MSG("1"), 1, "1");
	check_batch(a, MSG("1") MSG("2") MSG("3"), 3, "1");
	check_batch(a,
		    "FHS|^~\\&\rBHS|^~\\&\r" MSG("1")
			MSG("2") "BTS|2\rBHS|^~\\&\r" MSG("3") "BTS|1\rFTS|2\r",
		    3, "1");
	check_batch(a, "FHS|^~\\&\r" MSG("7") "FTS|1\r", 1, "7");
	check_batch(a, MSG("1") "BTS|1\r", 1, "1");
	check_batch(
	    a,
	    "\xef\xbb\xbfMSH|^~\\&|A|B|C|D|2024||ADT^A01|1|P|2.5\nEVN|A01\nPID|1\nPV1|1\n\n\n"
	    "MSH|^~\\&|A|B|C|D|2024||ADT^A01|2|P|2.5\r\nEVN|A01\r\nPID|1\r\nPV1|1\r\n\r\n",
	    2, "1");
	check_batch(a, "", 0, "");
	check_batch(a, "FHS|^~\\&\rFTS|0\r", 0, "");

	check_batch_error(a, "BHS|^~\\&\rEVN|A01\r" MSG("1") "BTS|1\r", "EVN", 2);
	check_batch_error(a, "FHS|^~\\&\rEVN|A01\rFTS|1\r", "EVN", 2);
	check_batch_error(a, "FHS|^~\\&\rBHS|^~\\&\rMSH|^~\\&|A\rEVN|A01\rBHS|^~\\&\r", "BHS", 5);
	check_batch_error(a, MSG("1") "FHS|^~\\&\r", "FHS", 5);
	check_batch_error(a, "BHS|^~\\&\rBHS|^~\\&\r", "BHS", 2);
	check_batch_error(a, MSG("1") "FTS|1\r", "FTS", 5);
	check_batch_error(a, "BHS|^~\\&\r" MSG("1") "BTS|1\rBTS|0\r", "BTS", 7);
	check_batch_error(a, "FHS|^~\\&\rBHS|^~\\&\r" MSG("1") "FTS|1\r", "FTS", 7);
	check_batch_error(a, "x\r" MSG("1"), "", 1);
}

/* ACKs: exact bytes. */
static void
check_ack(const hl7_msg_t *m, hl7_ack_code_t code, const hl7_error_t *err, const char *app,
	  const char *fac, const char *ctl, const char *want)
{
	buf_t b = BUF_INIT;

	assert_int_equal(hl7_ack_build(m, code, err, app, fac, slice_cstr(ctl), NOW_NS, &b), 0);
	if (!slice_eq_cstr(buf_slice(&b), want))
		print_error("got  %s\nwant %s\n", b.data, want);
	assert_string_equal(b.data, want);
	buf_free(&b);
}

static void
test_ack_exact_v25(void **state)
{
	hl7_msg_t *m = parse_ok(*state, "MSH|^~\\&|SND|SFAC|RCV|RFAC|||ADT^A01^ADT_A01|MSG1|P|2.5"
					"|||AL|NE||UNICODE UTF-8\rEVN|A01\rPID|1\rPV1|1\r");
	hl7_error_t err;

	assert_int_equal(hl7_msg_validate(m, &err), -FG_EINVAL);
	check_ack(m, HL7_ACK_AE, &err, "GW", "GWF", "ACK1",
		  "MSH|^~\\&|RCV|RFAC|SND|SFAC|20231114221320.000+0000||ACK^A01^ACK|ACK1|P|2.5|||||"
		  "|UNICODE UTF-8\r"
		  "MSA|AE|MSG1\r"
		  "ERR||MSH^1^7|101^Required field missing^HL70357|E||||"
		  "MSH-7 (date/time of message) is required\r");
	check_ack(m, HL7_ACK_CA, NULL, "GW", "GWF", "ACK2",
		  "MSH|^~\\&|RCV|RFAC|SND|SFAC|20231114221320.000+0000||ACK^A01^ACK|ACK2|P|2.5|||||"
		  "|UNICODE UTF-8\r"
		  "MSA|CA|MSG1\r");
}

static void
test_ack_exact_v23_custom(void **state)
{
	/* field '#', component '$', repetition '%', escape '!', subcomponent '*' */
	hl7_msg_t *m = parse_ok(*state, "MSH#$%!*#SND#SFAC###20240101##ADT$A01#MSG2#T#2.3\r"
					"EVN#A01\rPID#1\rPV1#1\r");
	hl7_error_t err = {.code = 102,
			   .ack = 'E',
			   .segment = "PID",
			   .seg_seq = 1,
			   .field = 5,
			   .text = "bad # and $ here\r!"};

	check_ack(
	    m, HL7_ACK_AE, &err, "FHIRGW", "GW$1", "CTRL#2",
	    "MSH#$%!*#FHIRGW#GW!S!1#SND#SFAC#20231114221320.000+0000##ACK$A01#CTRL!F!2#T#2.3\r"
	    "MSA#AE#MSG2#bad !F! and !S! here!X0D!!E!\r"
	    "ERR#PID$1$5$102*Data type error*HL70357\r");
	check_ack(m, HL7_ACK_AA, NULL, "FHIRGW", "", "C3",
		  "MSH#$%!*#FHIRGW##SND#SFAC#20231114221320.000+0000##ACK$A01#C3#T#2.3\r"
		  "MSA#AA#MSG2\r");
}

/* Builds an ACK, parses it back and returns its MSA-1 and whether it has an ERR. */
static hl7_msg_t *
ack_roundtrip(arena_t *a, const hl7_msg_t *m, hl7_ack_code_t code, const hl7_error_t *err)
{
	buf_t b = BUF_INIT;
	hl7_msg_t *ack;
	hl7_error_t perr;
	char *copy;

	assert_int_equal(hl7_ack_build(m, code, err, "GW", "GWF", SLICE_LIT("A1"), NOW_NS, &b), 0);
	copy = arena_strndup(a, b.data, b.len);
	assert_int_equal(hl7_parse(a, copy, b.len, NULL, &ack, &perr), 0);
	assert_int_equal(hl7_msg_validate(ack, &perr), 0);
	assert_slice(hl7_seg_field(seg(ack, "MSA"), 1), hl7_ack_code_name(code));
	assert_slice(hl7_msg_header(ack)->msg_code, "ACK");
	buf_free(&b);
	return ack;
}

static void
test_ack_codes(void **state)
{
	arena_t *a = *state;
	static const char *const texts[] = {
	    "MSH|^~\\&|S|SF|R|RF|2024||ADT^A01|M1|P|2.3\rEVN|A01\rPID|1\rPV1|1\r",
	    "MSH|^~\\&|S|SF|R|RF|2024||ADT^A01|M1|P|2.5|||AL|AL\rEVN|A01\rPID|1\rPV1|1\r",
	    "MSH|^~\\&|S|SF|R|RF|2024||ADT^A01|M1|P|2.3|||AL|ER\rEVN|A01\rPID|1\rPV1|1\r",
	    "MSH|^~\\&|S|SF|R|RF|2024||ADT^A01|M1|P|2.5\rEVN|A01\rPID|1\rPV1|1\r",
	};
	static const hl7_ack_code_t codes[] = {HL7_ACK_AA, HL7_ACK_AE, HL7_ACK_AR,
					       HL7_ACK_CA, HL7_ACK_CE, HL7_ACK_CR};
	hl7_error_t err = {.code = 203,
			   .ack = 'R',
			   .segment = "MSH",
			   .seg_seq = 1,
			   .field = 12,
			   .text = "MSH-12 (version id) is not supported"};

	for (size_t t = 0; t < sizeof(texts) / sizeof(texts[0]); t++) {
		hl7_msg_t *m = parse_ok(a, texts[t]);
		bool v25 = slice_eq_cstr(hl7_msg_header(m)->version, "2.5");

		for (size_t c = 0; c < sizeof(codes) / sizeof(codes[0]); c++) {
			hl7_msg_t *ack = ack_roundtrip(a, m, codes[c], &err);
			const hl7_seg_t *e = hl7_msg_find(ack, "ERR", 0);
			bool is_err = codes[c] != HL7_ACK_AA && codes[c] != HL7_ACK_CA;

			assert_slice(hl7_seg_field(seg(ack, "MSA"), 2), "M1");
			assert_slice(hl7_msg_header(ack)->receiving_app, "S");
			assert_slice(hl7_msg_header(ack)->sending_app, "R");
			assert_slice(hl7_msg_header(ack)->trigger, "A01");
			assert_slice(hl7_msg_header(ack)->structure, "ACK");
			assert_true((e != NULL) == is_err);
			if (!is_err)
				continue;
			if (v25) {
				assert_slice(hl7_seg_field(e, 2), "MSH^1^12");
				assert_slice(hl7_seg_get(ack, e, 3, 1, 1, 0), "203");
				assert_slice(hl7_seg_field(e, 4), "E");
				assert_slice(hl7_seg_field(e, 8), err.text);
				assert_slice(hl7_seg_field(seg(ack, "MSA"), 3), "");
			} else {
				assert_slice(hl7_seg_get(ack, e, 1, 1, 4, 1), "203");
				assert_slice(hl7_seg_get(ack, e, 1, 1, 3, 0), "12");
				assert_slice(hl7_seg_field(seg(ack, "MSA"), 3), err.text);
			}
		}
	}
}

static void
test_ack_forms(void **state)
{
	arena_t *a = *state;
	hl7_msg_t *m;
	buf_t b = BUF_INIT;

	/* MSH-9 by version: ACK (2.1), ACK^trigger (2.2, 2.3), ACK^trigger^ACK (2.3.1 on). */
	m = parse_ok(a, "MSH|^~\\&|S|SF|R|RF|2024||QRY^Q01|M1|P|2.1\r");
	assert_int_equal(hl7_ack_build(m, HL7_ACK_AA, NULL, "", "", SLICE_LIT("1"), NOW_NS, &b), 0);
	assert_non_null(strstr(b.data, "||ACK|1|P|2.1\r"));
	buf_reset(&b);
	m = parse_ok(a, "MSH|^~\\&|S|SF|R|RF|2024||ORU^R01|M1|P|2.2\r");
	assert_int_equal(hl7_ack_build(m, HL7_ACK_AA, NULL, "", "", SLICE_LIT("1"), NOW_NS, &b), 0);
	assert_non_null(strstr(b.data, "||ACK^R01|1|P|2.2\r"));
	buf_reset(&b);
	m = parse_ok(a, "MSH|^~\\&|S|SF|R|RF|2024||PPR^PC1|M1|P|2.3.1\r");
	assert_int_equal(hl7_ack_build(m, HL7_ACK_AA, NULL, "", "", SLICE_LIT("1"), NOW_NS, &b), 0);
	assert_non_null(strstr(b.data, "||ACK^PC1^ACK|1|P|2.3.1\r"));
	buf_reset(&b);

	/* No readable MSH: default delimiters, version 2.5, an ERR all the same. */
	assert_int_equal(
	    hl7_ack_build(NULL, HL7_ACK_AR, NULL, "GW", "F|X", SLICE_LIT("9"), NOW_NS, &b), 0);
	assert_string_equal(b.data,
			    "MSH|^~\\&|GW|F\\F\\X|||20231114221320.000+0000||ACK^^ACK|9|P|2.5"
			    "\rMSA|AR|\rERR|||207^Application internal error^HL70357|E\r");
	assert_true(hl7_ack_is_wanted(NULL, HL7_ACK_AR));
	buf_free(&b);

	/* The cap on the output buffer is reported. */
	buf_init(&b, 20);
	assert_int_equal(hl7_ack_build(m, HL7_ACK_AA, NULL, "", "", SLICE_LIT("1"), NOW_NS, &b),
			 -FG_ETOOBIG);
	buf_free(&b);
	assert_string_equal(hl7_ack_code_name(HL7_ACK_CR), "CR");
	assert_string_equal(hl7_ack_code_name(HL7_ACK_AA), "AA");
}

static void
check_wanted(arena_t *a, const char *msh15, const char *msh16, const char *want)
{
	char text[200];
	hl7_msg_t *m;

	snprintf(text, sizeof(text), "MSH|^~\\&|S|SF|R|RF|2024||ADT^A01|M1|P|2.5|||%s|%s\r", msh15,
		 msh16);
	m = parse_ok(a, text);
	/* want: one character per code AA AE AR CA CE CR, 'y' wanted, 'n' not. */
	for (int c = HL7_ACK_AA; c <= HL7_ACK_CR; c++)
		if (hl7_ack_is_wanted(m, (hl7_ack_code_t)c) != (want[c] == 'y')) {
			print_error("MSH-15 %s MSH-16 %s code %s\n", msh15, msh16,
				    hl7_ack_code_name((hl7_ack_code_t)c));
			fail();
		}
}

static void
test_ack_wanted(void **state)
{
	arena_t *a = *state;

	check_wanted(a, "", "", "yyynnn"); /* original mode */
	check_wanted(a, "AL", "AL", "yyyyyy");
	check_wanted(a, "NE", "NE", "nnnnnn");
	check_wanted(a, "ER", "ER", "nyynyy");
	check_wanted(a, "SU", "SU", "ynnynn");
	check_wanted(a, "AL", "NE", "nnnyyy");
	check_wanted(a, "NE", "", "yyynnn");
	check_wanted(a, "", "ER", "nyyyyy");
	assert_false(
	    hl7_msg_is_enhanced(parse_ok(a, "MSH|^~\\&|S|SF|R|RF|2024||ADT^A01|M1|P|2.5\r")));
}

/* The corpus: every file outside MALFORMED/ parses and validates (BATCH/ files after a split),
 * every file in MALFORMED/ fails with the error its manifest note describes. */
static struct {
	arena_t *a;
	size_t ok, batch_msgs, malformed;
} corpus;

static const struct {
	const char *file;
	int code;
	const char *segment;
	size_t line;
	unsigned field;
} malformed[] = {
    {"hapi-example_oml_o21-msg11-no-MSH7-MSH10.hl7", 101, "MSH", 1, 7},
    {"hapi-messages-msg04-BAR_P01-3-encoding-chars.hl7", 102, "MSH", 1, 2},
    {"hapi-test-ORU-ZLR-invalid-segment-name.hl7", 100, "", 2, 0},
    {"pythonhl7-rep_sample_hl7.hl7", 100, "OBR", 0, 0},
    {"pythonhl7-sample_bad_batch-no-msh.hl7", 100, "EVN", 2, 0},
    {"pythonhl7-sample_bad_file1-bhs-inside-msg.hl7", 100, "BHS", 5, 0},
    {"pythonhl7-sample_bad_file3-fhs-no-msh.hl7", 100, "EVN", 2, 0},
    {"pythonhl7-sample_msh-no-msh.hl7", 100, "EVN", 0, 0},
};

/* Every accessor over every field, so that the corpus also exercises them. */
static void
walk_fields(const hl7_msg_t *m)
{
	const hl7_delims_t *d = hl7_msg_delims(m);
	buf_t b = BUF_INIT;

	for (size_t i = 0; i < hl7_msg_segment_count(m); i++) {
		const hl7_seg_t *s = hl7_msg_segment(m, i);

		assert_int_equal(hl7_seg_id(s).len, 3);
		for (size_t f = 1; f <= hl7_seg_field_count(s) + 1; f++) {
			slice_t v = hl7_seg_field(s, f);
			size_t nrep = hl7_split_count(v, d->repetition);

			assert_true(hl7_text_decode(m, v, &b) >= 0);
			for (size_t r = 1; r <= nrep; r++) {
				size_t ncomp =
				    hl7_split_count(hl7_seg_get(m, s, f, r, 0, 0), d->component);

				for (size_t c = 1; c <= ncomp; c++)
					assert_true(hl7_seg_get(m, s, f, r, c, 0).len <= v.len);
			}
		}
	}
	buf_free(&b);
}

/* 0 when every message in the file parses and validates, else the first error. */
static int
corpus_check(const char *data, size_t len, hl7_error_t *err, size_t *nmsgs)
{
	slice_t *msgs;
	int rc = hl7_batch_split(corpus.a, data, len, &msgs, nmsgs, err);

	for (size_t i = 0; rc == 0 && i < *nmsgs; i++) {
		hl7_msg_t *m;

		rc = hl7_parse(corpus.a, msgs[i].ptr, msgs[i].len, NULL, &m, err);
		if (rc == 0)
			rc = hl7_msg_validate(m, err);
		if (rc == 0)
			walk_fields(m);
	}
	return rc;
}

static int
corpus_visit(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	const char *base = path + ftw->base;
	size_t len, nmsgs = 0;
	char *data;
	hl7_error_t err;
	int rc;

	(void)st;
	if (type != FTW_F || strlen(base) < 4 || strcmp(base + strlen(base) - 4, ".hl7") != 0)
		return 0;
	data = read_file(path, &len);
	rc = corpus_check(data, len, &err, &nmsgs);
	if (strstr(path, "/MALFORMED/") != NULL) {
		size_t i = 0;

		while (i < sizeof(malformed) / sizeof(malformed[0]) &&
		       strcmp(malformed[i].file, base) != 0)
			i++;
		if (i == sizeof(malformed) / sizeof(malformed[0]) || rc == 0 ||
		    err.code != malformed[i].code ||
		    strcmp(err.segment, malformed[i].segment) != 0 ||
		    err.line != malformed[i].line || err.field != malformed[i].field ||
		    err.text[0] == '\0') {
			print_error("%s: rc %d code %d seg '%s' line %zu field %u: %s\n", path, rc,
				    err.code, err.segment, err.line, err.field, err.text);
			fail();
		}
		corpus.malformed++;
	} else {
		if (rc != 0 || nmsgs == 0) {
			print_error("%s: %zu messages, code %d seg '%s' line %zu field %u: %s\n",
				    path, nmsgs, err.code, err.segment, err.line, err.field,
				    err.text);
			fail();
		}
		if (strstr(path, "/BATCH/") != NULL) {
			corpus.batch_msgs += nmsgs;
		} else {
			hl7_msg_t *m;

			/* A single message also parses whole, without a split. */
			assert_int_equal(nmsgs, 1);
			assert_int_equal(hl7_parse(corpus.a, data, len, NULL, &m, &err), 0);
			assert_int_equal(hl7_msg_validate(m, &err), 0);
		}
		corpus.ok++;
	}
	free(data);
	return 0;
}

static void
test_corpus(void **state)
{
	corpus.a = *state;
	corpus.ok = corpus.batch_msgs = corpus.malformed = 0;
	assert_int_equal(nftw(TEST_DATA_DIR "/hl7v2", corpus_visit, 16, FTW_PHYS), 0);
	assert_int_equal(nftw(TEST_DATA_DIR "/synthetic", corpus_visit, 16, FTW_PHYS), 0);
	assert_int_equal(corpus.malformed, sizeof(malformed) / sizeof(malformed[0]));
	assert_int_equal(corpus.batch_msgs, 2 + 1 + 3 + 2);
	assert_true(corpus.ok >= 110);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_delims_standard, setup_arena, teardown_arena),
	    cmocka_unit_test_setup_teardown(test_delims_custom, setup_arena, teardown_arena),
	    cmocka_unit_test_setup_teardown(test_delims_caret_field_sep, setup_arena,
					    teardown_arena),
	    cmocka_unit_test_setup_teardown(test_delims_bad, setup_arena, teardown_arena),
	    cmocka_unit_test_setup_teardown(test_truncation_char, setup_arena, teardown_arena),
	    cmocka_unit_test_setup_teardown(test_escapes, setup_arena, teardown_arena),
	    cmocka_unit_test_setup_teardown(test_escape_hex_long, setup_arena, teardown_arena),
	    cmocka_unit_test_setup_teardown(test_charsets, setup_arena, teardown_arena),
	    cmocka_unit_test_setup_teardown(test_synthetic_escapes_utf8, setup_arena,
					    teardown_arena),
	    cmocka_unit_test_setup_teardown(test_terminators, setup_arena, teardown_arena),
	    cmocka_unit_test_setup_teardown(test_access, setup_arena, teardown_arena),
	    cmocka_unit_test_setup_teardown(test_header, setup_arena, teardown_arena),
	    cmocka_unit_test_setup_teardown(test_zsegments, setup_arena, teardown_arena),
	    cmocka_unit_test_setup_teardown(test_structure, setup_arena, teardown_arena),
	    cmocka_unit_test_setup_teardown(test_validate_errors, setup_arena, teardown_arena),
	    cmocka_unit_test_setup_teardown(test_parse_errors, setup_arena, teardown_arena),
	    cmocka_unit_test_setup_teardown(test_limits, setup_arena, teardown_arena),
	    cmocka_unit_test_setup_teardown(test_batch_split, setup_arena, teardown_arena),
	    cmocka_unit_test_setup_teardown(test_ack_exact_v25, setup_arena, teardown_arena),
	    cmocka_unit_test_setup_teardown(test_ack_exact_v23_custom, setup_arena, teardown_arena),
	    cmocka_unit_test_setup_teardown(test_ack_codes, setup_arena, teardown_arena),
	    cmocka_unit_test_setup_teardown(test_ack_forms, setup_arena, teardown_arena),
	    cmocka_unit_test_setup_teardown(test_ack_wanted, setup_arena, teardown_arena),
	    cmocka_unit_test_setup_teardown(test_corpus, setup_arena, teardown_arena),
	};

	return cmocka_run_group_tests_name("hl7", tests, NULL, NULL);
}
