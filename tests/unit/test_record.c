/* Record maps and readers: the edge cases of delimited text (quotes, line breaks in quotes, CRLF,
 * BOM, Latin-1 and Windows-1252, missing and extra columns, bad dates), fixed-width lines, XML
 * (namespaces, paths, depth, DTDs refused), record map errors with file:line:col, and the id
 * rule shared with PID-Patient.map. */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "lib/buf.h"
#include "lib/err.h"
#include "mappings/hl7.h"
#include "mappings/map.h"
#include "mappings/record.h"

static buf_t diags;

static void
collect(const map_diag_t *d, void *arg)
{
	(void)arg;
	buf_printf(&diags, "%s:%u:%u: %s%s%s%s\n", d->file, d->line, d->col, d->text,
		   d->hint ? " (" : "", d->hint ? d->hint : "", d->hint ? ")" : "");
}

static record_map_t *
load(const char *text)
{
	record_map_t *rm = NULL;

	buf_reset(&diags);
	if (record_map_load("test.map", text, strlen(text), MAPS_DIR, NULL, collect, NULL, &rm) < 0)
		return NULL;
	return rm;
}

static const char *
diag_text(void)
{
	buf_append_byte(&diags, '\0');
	diags.len--;
	return diags.data ? diags.data : "";
}

/* All records of data as "f1|f2|...\n" (or "!reason\n"), for comparing. */
static char *
read_all(record_map_t *rm, const char *data, size_t len, int *rc_out)
{
	record_reader_t *r;
	record_t rec;
	char err[256];
	buf_t out = BUF_INIT;
	int rc;

	rc = record_reader_open_mem(rm, data, len, &r, err, sizeof(err));
	if (rc < 0) {
		buf_printf(&out, "open: %s\n", err);
		*rc_out = rc;
		buf_append_byte(&out, '\0');
		return out.data;
	}
	while ((rc = record_reader_next(r, &rec)) > 0) {
		buf_printf(&out, "%llu:", (unsigned long long)rec.line);
		if (rec.error != NULL) {
			buf_printf(&out, "!%s\n", rec.error);
			continue;
		}
		for (size_t i = 0; i < rec.nfields; i++)
			buf_printf(&out, "%s%.*s", i ? "|" : "", (int)rec.fields[i].len,
				   rec.fields[i].ptr);
		buf_append_byte(&out, '\n');
	}
	if (rc < 0)
		buf_printf(&out, "error: %s\n", record_reader_error(r));
	*rc_out = rc;
	record_reader_free(r);
	buf_append_byte(&out, '\0');
	return out.data;
}

#define CSV_MAP(extra)                                 \
	"reader csv\n" extra "\nresource Patient[1]\n" \
	"identifier[1].value <- column(\"a\")\n"       \
	"name[1].family <- column(\"b\")\n"            \
	"birthDate <- date(column(\"c\"))\n"

static void
test_csv_quotes_newlines_crlf_bom(void **state)
{
	record_map_t *rm = load(CSV_MAP("date-format \"%d/%m/%Y\""));
	const char data[] = "\xef\xbb\xbf"
			    "a,b,c\r\n"
			    "1,\"say \"\"hi\"\"\",01/02/2000\r\n"
			    "2,\"two\r\nlines\",\r\n"
			    "\r\n"
			    "3,\"x,y\",31/12/1999\n"
			    "4,plain,29/02/2001\r\n"
			    "5,last,";
	int rc;
	char *got;

	(void)state;
	assert_non_null(rm);
	got = read_all(rm, data, sizeof(data) - 1, &rc);
	assert_int_equal(rc, 0);
	assert_string_equal(got, "2:1|say \"hi\"|20000201\n"
				 "3:2|two\r\nlines|\n"
				 "6:3|x,y|19991231\n"
				 "7:!column c: not a date in the format %d/%m/%Y\n"
				 "8:5|last|\n");
	free(got);
	record_map_free(rm);
}

static void
test_csv_missing_and_extra_columns(void **state)
{
	record_map_t *rm = load(CSV_MAP("separator \";\""));
	const char data[] = "a;b;c;d\n1;x;2000-01-01;z\n2;y\n3;w;2000-01-02;z;extra\n";
	const char nohead[] = "a;c\n1;2000-01-01\n";
	int rc;
	char *got;

	(void)state;
	assert_non_null(rm);
	got = read_all(rm, data, sizeof(data) - 1, &rc);
	assert_string_equal(got, "2:1|x|20000101\n"
				 "3:!column c: missing (the row has 2 fields)\n"
				 "4:!the row has 5 fields, the header 4\n");
	free(got);
	got = read_all(rm, nohead, sizeof(nohead) - 1, &rc);
	assert_int_equal(rc, -FG_EINVAL);
	assert_string_equal(got, "open: the header has no column 'b'\n");
	free(got);
	record_map_free(rm);
}

/* The header's columns the map does not read are named (an import says so, once per file). */
static void
test_csv_unread_columns(void **state)
{
	record_map_t *rm = load(CSV_MAP(""));
	const char data[] = "x,c,\"y,z\",b,a\n1,2000-01-01,q,w,e\n";
	record_reader_t *r;
	char err[128];
	buf_t out = BUF_INIT;

	(void)state;
	assert_non_null(rm);
	assert_int_equal(record_reader_open_mem(rm, data, sizeof(data) - 1, &r, err, sizeof(err)),
			 0);
	record_reader_unread_columns(r, &out);
	buf_append_byte(&out, '\0');
	assert_string_equal(out.data, "x, y,z");
	buf_free(&out);
	record_reader_free(r);
	record_map_free(rm);
}

static void
test_csv_unterminated_quote(void **state)
{
	record_map_t *rm = load(CSV_MAP(""));
	const char data[] = "a,b,c\n1,\"never closed,2000-01-01\n2,y,2000-01-01\n";
	int rc;
	char *got;

	(void)state;
	assert_non_null(rm);
	got = read_all(rm, data, sizeof(data) - 1, &rc);
	assert_int_equal(rc, 0);
	assert_string_equal(got, "2:!a quote is never closed\n");
	free(got);
	record_map_free(rm);
}

static void
test_csv_encodings(void **state)
{
	record_map_t *latin1 = load(CSV_MAP("encoding latin1"));
	record_map_t *cp1252 = load(CSV_MAP("encoding windows-1252"));
	record_map_t *utf8 = load(CSV_MAP(""));
	const char data[] = "a,b,c\n1,M\xfcller \x80\x93,\n";
	int rc;
	char *got;

	(void)state;
	assert_non_null(latin1);
	assert_non_null(cp1252);
	assert_non_null(utf8);
	got = read_all(latin1, data, sizeof(data) - 1, &rc);
	assert_string_equal(got, "2:1|M\xc3\xbcller \xc2\x80\xc2\x93|\n");
	free(got);
	got = read_all(cp1252, data, sizeof(data) - 1, &rc);
	assert_string_equal(got, "2:1|M\xc3\xbcller \xe2\x82\xac\xe2\x80\x9c|\n");
	free(got);
	got = read_all(utf8, data, sizeof(data) - 1, &rc);
	assert_string_equal(got,
			    "2:!column b: not valid UTF-8 (is the file's encoding declared?)\n");
	free(got);
	record_map_free(latin1);
	record_map_free(cp1252);
	record_map_free(utf8);
}

static void
test_csv_without_header(void **state)
{
	record_map_t *rm = load("reader csv\nheader no\nseparator tab\ncolumn a 2\ncolumn b 1\n"
				"resource Patient[1]\nidentifier[1].value <- column(\"a\")\n"
				"name[1].family <- column(\"b\")\n");
	const char data[] = "Doe\t77\nRoe\t78\textra\n";
	int rc;
	char *got;

	(void)state;
	assert_non_null(rm);
	got = read_all(rm, data, sizeof(data) - 1, &rc);
	assert_string_equal(got, "1:77|Doe\n2:78|Roe\n");
	free(got);
	record_map_free(rm);
}

static void
test_fixed_width(void **state)
{
	record_map_t *rm =
	    load("reader fixed\nencoding latin1\ndate-format \"%Y%m%d\"\n"
		 "column mrn 1-6\ncolumn name 7-16\ncolumn dob 17-24\n"
		 "resource Patient[1]\nidentifier[1].value <- column(\"mrn\")\n"
		 "name[1].family <- column(\"name\")\nbirthDate <- date(column(\"dob\"))\n");
	const char data[] =
	    "000123M\xfcller    19610403\r\n\r\n000124Short\n000125Bad       19611340\n";
	int rc;
	char *got;

	(void)state;
	assert_non_null(rm);
	got = read_all(rm, data, sizeof(data) - 1, &rc);
	assert_string_equal(got, "1:000123|M\xc3\xbcller|19610403\n"
				 "3:000124|Short|\n"
				 "4:!column dob: not a date in the format %Y%m%d\n");
	free(got);
	record_map_free(rm);
}

#define XML_MAP(path)                                                  \
	"reader xml\nrecord \"" path "\"\nnamespace h = \"urn:x\"\n"   \
	"resource Patient[1]\nidentifier[1].value <- xpath(\"@id\")\n" \
	"name[1].family <- xpath(\"h:name\")\nbirthDate <- date(xpath(\"h:dob\"))\n"

static void
test_xml_records(void **state)
{
	record_map_t *rm = load(XML_MAP("/h:export/h:p"));
	record_map_t *any = load(XML_MAP("//h:p"));
	const char data[] = "<?xml version=\"1.0\"?>\n<h:export xmlns:h=\"urn:x\">\n"
			    "<h:p id=\"1\"><h:name>M\xc3\xbcller &amp; Co</h:name>"
			    "<h:dob>1961-04-03</h:dob></h:p>\n"
			    "<h:other><h:p id=\"nested\"/></h:other>\n"
			    "<p id=\"no-namespace\"/>\n"
			    "<h:p id=\"2\"><h:dob>03/04/1961</h:dob></h:p>\n"
			    "</h:export>\n";
	int rc;
	char *got;

	(void)state;
	assert_non_null(rm);
	assert_non_null(any);
	got = read_all(rm, data, sizeof(data) - 1, &rc);
	assert_int_equal(rc, 0);
	assert_string_equal(got, "3:1|M\xc3\xbcller & Co|19610403\n"
				 "6:!xpath h:dob: not a date in the format %Y-%m-%d\n");
	free(got);
	got = read_all(any, data, sizeof(data) - 1, &rc);
	assert_string_equal(got, "3:1|M\xc3\xbcller & Co|19610403\n"
				 "4:nested||\n"
				 "6:!xpath h:dob: not a date in the format %Y-%m-%d\n");
	free(got);
	record_map_free(rm);
	record_map_free(any);
}

static void
test_xml_refused(void **state)
{
	record_map_t *rm = load(XML_MAP("/h:export/h:p"));
	const char *docs[] = {
	    "<?xml version=\"1.0\"?><!DOCTYPE e [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b "
	    "\"&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;\">]><h:export xmlns:h=\"urn:x\"><h:p id=\"&b;\"/>"
	    "</h:export>",
	    "<?xml version=\"1.0\"?><!DOCTYPE e SYSTEM \"file:///etc/passwd\">"
	    "<h:export xmlns:h=\"urn:x\"><h:p id=\"&x;\"/></h:export>",
	    "<?xml version=\"1.0\"?><h:export xmlns:h=\"urn:x\"><h:p id=\"&ext;\"/></h:export>",
	    "<?xml version=\"1.0\"?><h:export xmlns:h=\"urn:x\"><h:p id=\"1\"></h:export>",
	};
	buf_t deep = BUF_INIT;
	int rc;
	char *got;

	(void)state;
	assert_non_null(rm);
	for (size_t i = 0; i < 2; i++) {
		got = read_all(rm, docs[i], strlen(docs[i]), &rc);
		assert_true(rc < 0);
		assert_non_null(strstr(got, "DOCTYPE"));
		assert_null(strstr(got, "root:"));
		free(got);
	}
	for (size_t i = 2; i < 4; i++) {
		got = read_all(rm, docs[i], strlen(docs[i]), &rc);
		assert_true(rc < 0);
		assert_non_null(strstr(got, "error: XML line 1"));
		free(got);
	}
	/* 300 levels: refused, not a crash or a stack overflow */
	buf_append_cstr(&deep, "<h:export xmlns:h=\"urn:x\">");
	for (int i = 0; i < 300; i++)
		buf_append_cstr(&deep, "<d>");
	for (int i = 0; i < 300; i++)
		buf_append_cstr(&deep, "</d>");
	buf_append_cstr(&deep, "</h:export>");
	got = read_all(rm, deep.data, deep.len, &rc);
	assert_true(rc < 0);
	free(got);
	buf_free(&deep);
	record_map_free(rm);
}

static void
test_map_errors(void **state)
{
	(void)state;
	assert_null(load("reader csv\nquote \"ab\"\nresource Patient[1]\n"
			 "nmae[1].family <- column(\"b\")\n"
			 "gender <- column(\"s\") via NoSuchVocab\n"
			 "birthDate <- date(column(\"d\"), \"%d.%m\")\n"));
	assert_string_equal(diag_text(),
			    "test.map:2:7: expected one character in quotes (quote "
			    "\"\\\"\"  or  quote \"'\")\n"
			    "test.map:6:32: expected a date format with a year "
			    "(date(column(\"DOB\"), \"%d/%m/%Y\"))\n"
			    "test.map:4:1: Patient has no element 'nmae' (did you mean "
			    "'name'?)\n"
			    "test.map:5:27: unknown vocabulary NoSuchVocab (vocabularies "
			    "are vocab/NAME.csv files)\n");
	assert_null(load("resource Patient[1]\nid <- hash(xpath(\"@id\"))\n"));
	assert_string_equal(diag_text(),
			    "test.map:2:12: xpath() with reader csv (xpath(...) reads XML records; "
			    "use column(\"NAME\"))\n"
			    "test.map:0:0: no reader declared (start the file with: reader csv (or "
			    "fixed, or xml))\n");
	assert_null(load("reader fixed\ncolumn a 1-4\nresource Patient[1]\n"
			 "name[1].family <- column(\"b\")\n"));
	assert_string_equal(diag_text(), "test.map:4:19: no column 'b' is declared (declare it in "
					 "the header: column NAME FIRST-LAST)\n");
	assert_null(load("reader xml\nrecord \"/a/b\"\nresource Patient[1]\n"
			 "name[1].family <- xpath(\"[[\")\n"));
	assert_string_equal(diag_text(), "test.map:4:19: not a valid XPath expression (e.g. "
					 "xpath(\"patient/@mrn\"), xpath(\"h:name\"))\n");
}

static void
test_dates(void **state)
{
	char out[32];

	(void)state;
	assert_true(record_date_to_dtm(slice_cstr("3/4/1961"), "%d/%m/%Y", out, sizeof(out)));
	assert_string_equal(out, "19610403");
	assert_true(
	    record_date_to_dtm(slice_cstr("1961-04-03 08:05"), "%Y-%m-%d %H:%M", out, sizeof(out)));
	assert_string_equal(out, "196104030805");
	/* two-digit years: POSIX strptime's pivot, 69-99 are 19xx */
	assert_true(record_date_to_dtm(slice_cstr("03-Apr-99"), "%d-%b-%y", out, sizeof(out)));
	assert_string_equal(out, "19990403");
	assert_true(record_date_to_dtm(slice_cstr("03-apr-61"), "%d-%b-%y", out, sizeof(out)));
	assert_string_equal(out, "20610403");
	assert_true(record_date_to_dtm(slice_cstr("2000-02-29"), "%Y-%m-%d", out, sizeof(out)));
	assert_false(record_date_to_dtm(slice_cstr("1900-02-29"), "%Y-%m-%d", out, sizeof(out)));
	assert_false(record_date_to_dtm(slice_cstr("1961-04-03x"), "%Y-%m-%d", out, sizeof(out)));
	assert_false(
	    record_date_to_dtm(slice_cstr("1961-04-03 24:00"), "%Y-%m-%d %H:%M", out, sizeof(out)));
}

/* The rule of segments/PID-Patient.map: a CSV row and a PID-3 of the same MRN and authority
 * give one Patient id. */
static void
test_same_id_as_pid(void **state)
{
	record_map_t *rm = load("reader csv\nresource Patient[1]\n"
				"id <- hash(column(\"mrn\"), column(\"auth\"))\n"
				"identifier[1].value <- column(\"mrn\")\n");
	const char csv[] = "mrn,auth\n555,HOSP\n";
	const char adt[] = "MSH|^~\\&|A|HOSP|B|HOSP|20240101||ADT^A01^ADT_A01|1|P|2.5\r"
			   "EVN|A01|20240101\rPID|1||555^^^HOSP^MR||Doe^J\rPV1|1|I\r";
	record_reader_t *r;
	record_t rec;
	char err[128];
	arena_t *a = arena_new(0);
	hl7_msg_t *m;
	hl7_error_t herr;
	hl7_limits_t lim;
	map_result_t *res;
	slice_t csv_id = SLICE_NULL, adt_id = SLICE_NULL;

	(void)state;
	assert_non_null(rm);
	assert_int_equal(record_reader_open_mem(rm, csv, sizeof(csv) - 1, &r, err, sizeof(err)), 0);
	assert_int_equal(record_reader_next(r, &rec), 1);
	assert_int_equal(record_to_msg(rm, &rec, slice_cstr("1"), a, &m), 0);
	assert_int_equal(map_convert(record_map_set(rm), m, NULL, a, &res), 0);
	for (size_t i = 0; i < res->nresources; i++)
		if (slice_eq_cstr(res->resources[i].type, "Patient"))
			csv_id = res->resources[i].id;
	hl7_limits_default(&lim);
	assert_int_equal(hl7_parse(a, adt, sizeof(adt) - 1, &lim, &m, &herr), 0);
	assert_int_equal(map_convert(record_map_set(rm), m, NULL, a, &res), 0);
	for (size_t i = 0; i < res->nresources; i++)
		if (slice_eq_cstr(res->resources[i].type, "Patient"))
			adt_id = res->resources[i].id;
	assert_true(csv_id.len == 32);
	assert_true(slice_eq(csv_id, adt_id));
	record_reader_free(r);
	arena_free(a);
	record_map_free(rm);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_csv_quotes_newlines_crlf_bom),
	    cmocka_unit_test(test_csv_missing_and_extra_columns),
	    cmocka_unit_test(test_csv_unread_columns),
	    cmocka_unit_test(test_csv_unterminated_quote),
	    cmocka_unit_test(test_csv_encodings),
	    cmocka_unit_test(test_csv_without_header),
	    cmocka_unit_test(test_fixed_width),
	    cmocka_unit_test(test_xml_records),
	    cmocka_unit_test(test_xml_refused),
	    cmocka_unit_test(test_map_errors),
	    cmocka_unit_test(test_dates),
	    cmocka_unit_test(test_same_id_as_pid),
	};
	int rc;

	buf_init(&diags, 0);
	rc = cmocka_run_group_tests(tests, NULL, NULL);
	buf_free(&diags);
	return rc;
}
