/* Tests of the mapping engine: the condition language, dates and times, the shipped datatype
 * maps, ids, load errors with their positions, site overrides, explain and the Bundle. */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fhir/json.h"
#include "fhir/tree.h"
#include "lib/buf.h"
#include "lib/err.h"
#include "mappings/hl7.h"
#include "mappings/map.h"

/* ---- helpers -------------------------------------------------------------------------- */

static void
diag_collect(const map_diag_t *d, void *arg)
{
	buf_printf(arg, "%s:%u:%u: %s: %s", d->file, d->line, d->col,
		   d->level == MAP_DIAG_ERROR ? "error" : "warning", d->text);
	if (d->hint != NULL)
		buf_printf(arg, " (%s)", d->hint);
	buf_append_byte(arg, '\n');
}

/* Loads a set from path/text pairs (NULL-terminated); a path "site:x" is a site file. */
static int
load_mem(const char *const *pairs, buf_t *diags, map_set_t **out)
{
	map_file_t files[32];
	size_t n = 0;

	for (size_t i = 0; pairs[i] != NULL; i += 2) {
		bool site = strncmp(pairs[i], "site:", 5) == 0;

		files[n].path = pairs[i] + (site ? 5 : 0);
		files[n].shown = NULL;
		files[n].data = pairs[i + 1];
		files[n].len = strlen(pairs[i + 1]);
		files[n++].site = site;
	}
	return map_set_load_files(files, n, diag_collect, diags, out);
}

static map_set_t *
load_ok(const char *const *pairs)
{
	buf_t diags = BUF_INIT;
	map_set_t *set = NULL;
	int rc = load_mem(pairs, &diags, &set);

	if (rc != 0)
		fprintf(stderr, "%s", diags.data ? diags.data : "");
	assert_int_equal(rc, 0);
	buf_free(&diags);
	return set;
}

static map_set_t *
load_shipped(const char *site)
{
	buf_t diags = BUF_INIT;
	map_set_t *set = NULL;
	int rc = map_set_load(MAPS_DIR, site, diag_collect, &diags, &set);

	if (rc != 0 || diags.len > 0)
		fprintf(stderr, "%s", diags.data ? diags.data : "");
	assert_int_equal(rc, 0);
	assert_int_equal(diags.len, 0); /* the shipped maps load without a warning */
	buf_free(&diags);
	return set;
}

/* Segments joined with CR. */
static char *
msg_text(const char *first, ...)
{
	buf_t b = BUF_INIT;
	va_list ap;

	va_start(ap, first);
	for (const char *s = first; s != NULL; s = va_arg(ap, const char *)) {
		buf_append_cstr(&b, s);
		buf_append_byte(&b, '\r');
	}
	va_end(ap);
	return buf_steal(&b, NULL);
}

static int
convert_rc(arena_t *a, const map_set_t *set, const char *text, const map_options_t *opt,
	   map_result_t **r)
{
	hl7_limits_t lim;
	hl7_msg_t *m = NULL;
	hl7_error_t err;

	hl7_limits_default(&lim);
	assert_int_equal(hl7_parse(a, text, strlen(text), &lim, &m, &err), 0);
	return map_convert(set, m, opt, a, r);
}

static map_result_t *
convert(arena_t *a, const map_set_t *set, const char *text, const map_options_t *opt)
{
	map_result_t *r = NULL;

	assert_int_equal(convert_rc(a, set, text, opt, &r), 0);
	assert_non_null(r->bundle);
	return r;
}

/* The nth (0-based) resource of a type. */
static const fhir_node_t *
res_find(const map_result_t *r, const char *type, size_t nth)
{
	for (size_t i = 0; i < r->nresources; i++)
		if (slice_eq_cstr(r->resources[i].type, type) && nth-- == 0)
			return r->resources[i].resource;
	return NULL;
}

static size_t
res_count(const map_result_t *r, const char *type)
{
	size_t n = 0;

	for (size_t i = 0; i < r->nresources; i++)
		n += slice_eq_cstr(r->resources[i].type, type);
	return n;
}

static slice_t
res_id(const map_result_t *r, const char *type, size_t nth)
{
	for (size_t i = 0; i < r->nresources; i++)
		if (slice_eq_cstr(r->resources[i].type, type) && nth-- == 0)
			return r->resources[i].id;
	return SLICE_NULL;
}

/* The node at "name[0].family" (NULL when absent). */
static const fhir_node_t *
at(const fhir_node_t *n, const char *path)
{
	char key[64];

	while (n != NULL && *path != '\0') {
		size_t k = strcspn(path, ".[");

		if (k > 0) {
			snprintf(key, sizeof(key), "%.*s", (int)k, path);
			n = fhir_object_get_cstr(n, key);
			path += k;
		}
		if (*path == '[') {
			n = n != NULL ? fhir_array_at(n, (size_t)strtoul(path + 1, NULL, 10))
				      : NULL;
			path = strchr(path, ']') + 1;
		}
		if (*path == '.')
			path++;
	}
	return n;
}

/* The text at a path, "" when absent. */
static const char *
text_at(arena_t *a, const fhir_node_t *n, const char *path)
{
	const fhir_node_t *v = at(n, path);
	slice_t t = v != NULL ? fhir_node_text(v) : SLICE_NULL;

	return arena_strndup(a, t.ptr ? t.ptr : "", t.len);
}

static char *
bundle_json(const map_result_t *r)
{
	buf_t b = BUF_INIT;

	assert_int_equal(fhir_json_write(r->bundle, false, &b), 0);
	return buf_steal(&b, NULL);
}

/* ---- conditions ----------------------------------------------------------------------- */

static const char *cond_msg_segments[] = {
    "MSH|^~\\&|APP|FAC|GW|GWF|20240101120000+0000||ADT^A01^ADT_A01|C1|P|2.5",
    "PID|1||123^^^H^MR~456^^^H^SS||DOE^JOHN||19800101123000|M",
    "OBX|1|NM|X^Y^LN||5~6~7|kg",
};

/* Whether a condition holds for the message above: the PID map sets active when it does. */
static bool
cond_holds(const char *cond)
{
	char pid[512];
	arena_t *a = arena_new(0);
	map_set_t *set;
	map_result_t *r;
	char *msg =
	    msg_text(cond_msg_segments[0], cond_msg_segments[1], cond_msg_segments[2], NULL);
	bool holds;

	snprintf(pid, sizeof(pid), "id <- hash(PID-3.1)\nactive = true   if %s\n", cond);
	set = load_ok((const char *const[]){"messages/ADT_A01.map",
					    "Patient[1] <- PID as PID[Patient]\n",
					    "segments/PID-Patient.map", pid, NULL});
	r = convert(a, set, msg, NULL);
	holds = at(res_find(r, "Patient", 0), "active") != NULL;
	map_set_free(set);
	arena_free(a);
	free(msg);
	return holds;
}

static void
test_cond_valued(void **state)
{
	(void)state;
	assert_true(cond_holds("PID-8 IS VALUED"));
	assert_false(cond_holds("PID-9 IS VALUED"));
	assert_true(cond_holds("PID-9 IS NOT VALUED"));
	assert_false(cond_holds("PID-8 NOT VALUED"));
	assert_true(cond_holds("PID-8 VALUED"));
	assert_true(cond_holds("PID-8"));                /* a field alone: valued */
	assert_true(cond_holds("PID-3[2].5 IS VALUED")); /* a repetition */
	assert_false(cond_holds("PID-3[3] IS VALUED"));
	assert_true(cond_holds("OBX IS VALUED")); /* a segment */
	assert_false(cond_holds("ZZZ IS VALUED"));
	assert_true(cond_holds("IF PID-8 IS VALUED")); /* IG style */
	assert_true(cond_holds("PID-8 is valued"));    /* keywords in any case */
}

static void
test_cond_equals(void **state)
{
	(void)state;
	assert_true(cond_holds("PID-8 EQUALS \"M\""));
	assert_false(cond_holds("PID-8 EQUALS \"F\""));
	assert_true(cond_holds("PID-8 EQUAL \"M\""));
	assert_true(cond_holds("PID-8 IS \"M\""));
	assert_true(cond_holds("PID-8 = \"M\""));
	assert_true(cond_holds("PID-8 == \"M\""));
	assert_true(cond_holds("PID-3[2].5 EQUALS \"SS\""));
	assert_false(cond_holds("PID-9 EQUALS \"M\""));
	assert_true(cond_holds("PID-9 EQUALS \"\"")); /* empty equals empty */
}

static void
test_cond_not_equals(void **state)
{
	(void)state;
	assert_true(cond_holds("PID-8 NOT EQUALS \"F\""));
	assert_false(cond_holds("PID-8 NOT EQUALS \"M\""));
	assert_true(cond_holds("PID-8 NOT EQUAL \"F\""));
	assert_false(cond_holds("PID-8 IS NOT \"M\""));
	assert_false(cond_holds("PID-8 != \"M\""));
	assert_true(cond_holds("PID-8 <> \"F\""));
}

static void
test_cond_in(void **state)
{
	(void)state;
	assert_true(cond_holds("PID-8 IN (\"F\", \"M\")"));
	assert_false(cond_holds("PID-8 IN (\"F\", \"U\")"));
	assert_true(cond_holds("PID-8 IS IN (\"M\")"));
	assert_true(cond_holds("PID-8 NOT IN (\"F\", \"U\")"));
	assert_false(cond_holds("PID-8 NOT IN (\"M\")"));
	assert_false(cond_holds("PID-9 IN (\"M\")"));
	assert_true(cond_holds("OBX-6 IN (\"g\", \"kg\")"));
}

static void
test_cond_count(void **state)
{
	(void)state;
	assert_true(cond_holds("PID-3 LST.COUNT EQUALS 2"));
	assert_false(cond_holds("PID-3 LST.COUNT GREATER THAN 2"));
	assert_true(cond_holds("OBX-5 LST.COUNT > 2"));
	assert_true(cond_holds("OBX-5 lst.count = 3"));
	assert_true(cond_holds("PID-9 LST.COUNT EQUALS 0"));
	assert_true(cond_holds("PID-8 LST.COUNT LESS THAN OR EQUALS 1"));
}

static void
test_cond_length(void **state)
{
	(void)state;
	assert_true(cond_holds("PID-7 LENGTH GREATER THAN 8"));
	assert_true(cond_holds("PID-7 LENGTH = 14"));
	assert_false(cond_holds("PID-8 LENGTH LESS THAN 1"));
	assert_true(cond_holds("PID-9 LENGTH EQUALS 0"));
}

static void
test_cond_compare(void **state)
{
	(void)state;
	assert_true(cond_holds("OBX-5 GREATER THAN 4")); /* the first repetition, 5 */
	assert_false(cond_holds("OBX-5 LESS THAN 5"));
	assert_true(cond_holds("OBX-5 LESS THAN OR EQUALS 5"));
	assert_true(cond_holds("OBX-5 GREATER THAN OR EQUAL TO 5"));
	assert_false(cond_holds("OBX-5 >= 6"));
	assert_true(cond_holds("OBX-5 < 10")); /* numbers as numbers: 5 < 10 */
	assert_true(cond_holds("OBX-5 <= 5.0"));
	assert_true(cond_holds("PID-5.1 > \"ABC\"")); /* text byte by byte */
	assert_false(cond_holds("PID-9 > 1"));        /* an empty field compares false */
	assert_true(cond_holds("OBX-5 > -1"));
}

static void
test_cond_logic(void **state)
{
	(void)state;
	assert_true(cond_holds("PID-5.1 EQUALS \"DOE\" AND PID-5.2 EQUALS \"JOHN\""));
	assert_false(cond_holds("PID-5.1 EQUALS \"DOE\" AND PID-5.2 EQUALS \"JANE\""));
	assert_true(cond_holds("PID-8 EQUALS \"F\" OR PID-8 EQUALS \"M\""));
	assert_false(cond_holds("PID-8 EQUALS \"F\" OR PID-8 EQUALS \"U\""));
	assert_true(cond_holds("NOT PID-8 EQUALS \"F\""));
	assert_false(cond_holds("NOT (PID-8 IS VALUED)"));
	assert_true(
	    cond_holds("(PID-8 EQUALS \"F\" OR PID-8 EQUALS \"M\") AND PID-9 IS NOT VALUED"));
	/* AND binds tighter: F OR (M AND PID-9 valued) */
	assert_false(cond_holds("PID-8 EQUALS \"F\" OR PID-8 EQUALS \"M\" AND PID-9 IS VALUED"));
	assert_true(cond_holds("NOT NOT PID-8"));
}

/* ---- dates ---------------------------------------------------------------------------- */

static const char *
dtm(const char *in, map_dtm_kind_t kind, const map_options_t *opt, int *rc, unsigned *flags)
{
	static char out[MAP_DTM_MAX];
	unsigned f;

	*rc = map_dtm_format(slice_cstr(in), kind, opt, out, flags != NULL ? flags : &f);
	return out;
}

static void
test_dtm_precision(void **state)
{
	int rc;
	unsigned flags;
	map_options_t utc = {false, true, 0, NULL};

	(void)state;
	assert_string_equal(dtm("2024", MAP_DTM_DATETIME, NULL, &rc, NULL), "2024");
	assert_string_equal(dtm("202403", MAP_DTM_DATETIME, NULL, &rc, NULL), "2024-03");
	assert_string_equal(dtm("20240312", MAP_DTM_DATETIME, NULL, &rc, NULL), "2024-03-12");
	assert_string_equal(dtm("2024031208-0500", MAP_DTM_DATETIME, NULL, &rc, NULL),
			    "2024-03-12T08:00:00-05:00");
	assert_string_equal(dtm("202403120830-0500", MAP_DTM_DATETIME, NULL, &rc, NULL),
			    "2024-03-12T08:30:00-05:00");
	assert_string_equal(dtm("20240312083015+0530", MAP_DTM_DATETIME, NULL, &rc, NULL),
			    "2024-03-12T08:30:15+05:30");
	assert_string_equal(dtm("20240312083015.1234+0000", MAP_DTM_DATETIME, NULL, &rc, NULL),
			    "2024-03-12T08:30:15.1234+00:00");
	assert_string_equal(dtm("20240312083015.5-0300", MAP_DTM_INSTANT, NULL, &rc, NULL),
			    "2024-03-12T08:30:15.5-03:00");
	assert_string_equal(dtm("20240312083015-0500", MAP_DTM_DATE, NULL, &rc, NULL),
			    "2024-03-12");
	assert_string_equal(dtm("19800615", MAP_DTM_DATE, NULL, &rc, NULL), "1980-06-15");
	/* years below 1000 keep their four digits */
	assert_string_equal(dtm("00010203", MAP_DTM_DATE, NULL, &rc, NULL), "0001-02-03");
	assert_string_equal(dtm("0999", MAP_DTM_DATETIME, NULL, &rc, NULL), "0999");
	assert_string_equal(dtm("20240312083015-0500^S", MAP_DTM_DATETIME, NULL, &rc, NULL),
			    "2024-03-12T08:30:15-05:00"); /* TS: the precision component goes */
	assert_string_equal(dtm("0830", MAP_DTM_TIME, NULL, &rc, NULL), "08:30:00");
	assert_string_equal(dtm("083015.25+0100", MAP_DTM_TIME, NULL, &rc, NULL), "08:30:15.25");
	assert_int_equal(rc, 0);
	/* no offset: the configured one, else the date alone */
	assert_string_equal(dtm("20240312083015", MAP_DTM_DATETIME, &utc, &rc, &flags),
			    "2024-03-12T08:30:15+00:00");
	assert_int_equal(flags, 0);
	assert_string_equal(dtm("20240312083015", MAP_DTM_DATETIME, NULL, &rc, &flags),
			    "2024-03-12");
	assert_int_equal(rc, 0);
	assert_int_equal(flags, MAP_DTM_TIME_DROPPED);
	/* an instant (a system timestamp) is taken as UTC instead, and says so */
	assert_string_equal(dtm("20240312083015", MAP_DTM_INSTANT, NULL, &rc, &flags),
			    "2024-03-12T08:30:15+00:00");
	assert_int_equal(rc, 0);
	assert_int_equal(flags, MAP_DTM_UTC_ASSUMED);
	map_options_t east = {false, true, 90, NULL};
	assert_string_equal(dtm("202403120830", MAP_DTM_INSTANT, &east, &rc, NULL),
			    "2024-03-12T08:30:00+01:30");
	map_options_t west = {false, true, -300, NULL};
	assert_string_equal(dtm("202403120830", MAP_DTM_DATETIME, &west, &rc, NULL),
			    "2024-03-12T08:30:00-05:00");
}

static void
test_dtm_invalid(void **state)
{
	static const char *bad[] = {
	    "",
	    "24",
	    "2024-03-12",
	    "20241301",
	    "20240230",
	    "20230229",
	    "2024031224",
	    "202403121260",
	    "20240312120060",
	    "20240312+2500",
	    "2024x",
	    "20240312.5",
	    "2024031212+05",
	    "0000",
	    "20240312120000.",
	    "20240312120000.12345",
	};
	int rc;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		(void)dtm(bad[i], MAP_DTM_DATETIME, NULL, &rc, NULL);
		if (rc != -FG_EINVAL)
			fail_msg("'%s' should be invalid", bad[i]);
	}
	assert_string_equal(dtm("20240229", MAP_DTM_DATE, NULL, &rc, NULL), "2024-02-29");
	assert_int_equal(rc, 0);
	(void)dtm("20240312", MAP_DTM_INSTANT, NULL, &rc, NULL); /* an instant needs a time */
	assert_int_equal(rc, -FG_EINVAL);
	(void)dtm("25", MAP_DTM_TIME, NULL, &rc, NULL);
	assert_int_equal(rc, -FG_EINVAL);
}

/* An invalid date is left out with a warning; the rest of the message converts. */
static void
test_dtm_invalid_in_message(void **state)
{
	arena_t *a = arena_new(0);
	map_set_t *set = load_shipped(NULL);
	char *msg = msg_text("MSH|^~\\&|A|B|C|D|20240101120000+0000||ADT^A01^ADT_A01|X1|P|2.5",
			     "PID|1||77^^^H^MR||ROE^RICHARD||19801332|M", NULL);
	map_result_t *r = convert(a, set, msg, NULL);
	const fhir_node_t *p = res_find(r, "Patient", 0);
	bool found = false;

	(void)state;
	assert_null(at(p, "birthDate"));
	assert_string_equal(text_at(a, p, "gender"), "male");
	for (size_t i = 0; i < r->nwarnings; i++)
		if (strstr(r->warnings[i].text, "not a valid date") != NULL &&
		    strcmp(r->warnings[i].segment, "PID") == 0 && r->warnings[i].field == 7) {
			found = true;
			assert_true(slice_eq_cstr(r->warnings[i].value, "19801332"));
			assert_null(
			    strstr(r->warnings[i].text, "19801332")); /* no value in the text */
			assert_non_null(strstr(r->warnings[i].file, "PID-Patient.map"));
		}
	assert_true(found);
	map_set_free(set);
	arena_free(a);
	free(msg);
}

/* ---- the shipped datatype maps -------------------------------------------------------- */

static const fhir_node_t *
dt_patient(arena_t *a, map_set_t *set, const char *pid, map_result_t **out)
{
	char *msg =
	    msg_text("MSH|^~\\&|A|B|C|D|20240101120000+0000||ADT^A01^ADT_A01|DT1|P|2.5", pid, NULL);
	map_result_t *r = convert(a, set, msg, NULL);

	free(msg);
	if (out != NULL)
		*out = r;
	return res_find(r, "Patient", 0);
}

static void
test_dt_cx(void **state)
{
	arena_t *a = arena_new(0);
	map_set_t *set = load_shipped(NULL);
	const fhir_node_t *p = dt_patient(a, set,
					  "PID|1||12345^7^M10^&2.16.840.1.113883.19.5&ISO^MR^^"
					  "20200101^20301231~999-00-1234^^^USSSA^SS"
					  "~A77^^^MERCY^ZZ9",
					  NULL);

	(void)state;
	assert_string_equal(text_at(a, p, "identifier[0].value"), "12345");
	assert_string_equal(text_at(a, p, "identifier[0].system"),
			    "urn:oid:2.16.840.1.113883.19.5");
	assert_string_equal(text_at(a, p, "identifier[0].type.coding[0].code"), "MR");
	assert_string_equal(text_at(a, p, "identifier[0].type.coding[0].system"),
			    "http://terminology.hl7.org/CodeSystem/v2-0203");
	assert_string_equal(text_at(a, p, "identifier[0].period.start"), "2020-01-01");
	assert_string_equal(text_at(a, p, "identifier[0].period.end"), "2030-12-31");
	assert_string_equal(text_at(a, p, "identifier[0].extension[0].url"),
			    "http://hl7.org/fhir/StructureDefinition/identifier-checkDigit");
	assert_string_equal(text_at(a, p, "identifier[0].extension[0].valueString"), "7");
	assert_string_equal(text_at(a, p, "identifier[1].system"),
			    "http://hl7.org/fhir/sid/us-ssn");
	assert_string_equal(text_at(a, p, "identifier[1].value"), "999-00-1234");
	/* an authority no vocabulary knows stays as it is (IG); an unknown type is not made up */
	assert_string_equal(text_at(a, p, "identifier[2].system"), "MERCY");
	assert_null(at(p, "identifier[2].type"));
	assert_null(at(p, "identifier[3]"));
	map_set_free(set);
	arena_free(a);
}

static void
test_dt_xpn(void **state)
{
	arena_t *a = arena_new(0);
	map_set_t *set = load_shipped(NULL);
	const fhir_node_t *p = dt_patient(
	    a, set,
	    "PID|1||1^^^H^MR||VAN DER BERG&VAN DER^ANNA^MARIA^III^DR^PHD^L~BERG^ANNIE^^^^^N", NULL);

	(void)state;
	assert_string_equal(text_at(a, p, "name[0].family"), "VAN DER BERG");
	assert_string_equal(text_at(a, p, "name[0].given[0]"), "ANNA");
	assert_string_equal(text_at(a, p, "name[0].given[1]"), "MARIA");
	assert_string_equal(text_at(a, p, "name[0].suffix[0]"), "III");
	assert_string_equal(text_at(a, p, "name[0].suffix[1]"), "PHD");
	assert_string_equal(text_at(a, p, "name[0].prefix[0]"), "DR");
	assert_string_equal(text_at(a, p, "name[0].use"), "official");
	assert_string_equal(text_at(a, p, "name[1].family"), "BERG");
	assert_string_equal(text_at(a, p, "name[1].use"), "nickname");
	map_set_free(set);
	arena_free(a);
}

static void
test_dt_xad(void **state)
{
	arena_t *a = arena_new(0);
	map_set_t *set = load_shipped(NULL);
	const fhir_node_t *p = dt_patient(
	    a, set,
	    "PID|1||1^^^H^MR||X^Y||||||12 MAIN ST&MAIN ST&12^APT 3^SPRINGFIELD^IL^62704^USA^H^^"
	    "SANGAMON~PO BOX 9^^SPRINGFIELD^IL^62705^USA^M",
	    NULL);

	(void)state;
	assert_string_equal(text_at(a, p, "address[0].line[0]"), "12 MAIN ST");
	assert_string_equal(text_at(a, p, "address[0].line[1]"), "APT 3");
	assert_string_equal(text_at(a, p, "address[0].city"), "SPRINGFIELD");
	assert_string_equal(text_at(a, p, "address[0].state"), "IL");
	assert_string_equal(text_at(a, p, "address[0].postalCode"), "62704");
	assert_string_equal(text_at(a, p, "address[0].country"), "USA");
	assert_string_equal(text_at(a, p, "address[0].district"), "SANGAMON");
	assert_string_equal(text_at(a, p, "address[0].use"), "home");
	assert_string_equal(text_at(a, p, "address[1].line[0]"), "PO BOX 9");
	assert_string_equal(text_at(a, p, "address[1].type"), "postal");
	map_set_free(set);
	arena_free(a);
}

static void
test_dt_xtn(void **state)
{
	arena_t *a = arena_new(0);
	map_set_t *set = load_shipped(NULL);
	const fhir_node_t *p = dt_patient(
	    a, set,
	    "PID|1||1^^^H^MR||X^Y||||||||(217)555-0100^PRN^PH~^NET^Internet^ann@example.org~"
	    "^PRN^CP^^1^217^5550147^12~^^^carl@example.org|^WPN^FX^^^312^5550199",
	    NULL);

	(void)state;
	/* XTN.1 alone */
	assert_string_equal(text_at(a, p, "telecom[0].value"), "(217)555-0100");
	assert_string_equal(text_at(a, p, "telecom[0].system"), "phone");
	assert_string_equal(text_at(a, p, "telecom[0].use"), "home");
	/* e-mail from .4 */
	assert_string_equal(text_at(a, p, "telecom[1].system"), "email");
	assert_string_equal(text_at(a, p, "telecom[1].value"), "ann@example.org");
	/* from components 5-8, a mobile phone */
	assert_string_equal(text_at(a, p, "telecom[2].value"), "+1 217 5550147 X12");
	assert_string_equal(text_at(a, p, "telecom[2].system"), "phone");
	assert_string_equal(text_at(a, p, "telecom[2].use"), "mobile");
	/* .4 without a type is an e-mail address; PID-13 without a use is home */
	assert_string_equal(text_at(a, p, "telecom[3].system"), "email");
	assert_string_equal(text_at(a, p, "telecom[3].use"), "home");
	/* PID-14: work fax */
	assert_string_equal(text_at(a, p, "telecom[4].value"), "312 5550199");
	assert_string_equal(text_at(a, p, "telecom[4].system"), "fax");
	assert_string_equal(text_at(a, p, "telecom[4].use"), "work");
	map_set_free(set);
	arena_free(a);
}

static void
test_dt_cwe(void **state)
{
	arena_t *a = arena_new(0);
	map_set_t *set = load_shipped(NULL);
	const fhir_node_t *p = dt_patient(
	    a, set,
	    "PID|1||1^^^H^MR||X^Y|||F|||||||eng^English^ISO639^en^English^urn:ietf:bcp:47|S^Single^"
	    "HL70002^UN^Unmarried^L|^Spiritual but not religious",
	    NULL);

	(void)state;
	assert_string_equal(text_at(a, p, "gender"), "female");
	/* the translation first, then the message's own codes (HL70002 as a v2 code system) */
	assert_string_equal(text_at(a, p, "maritalStatus.coding[0].system"),
			    "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus");
	assert_string_equal(text_at(a, p, "maritalStatus.coding[0].code"), "S");
	assert_string_equal(text_at(a, p, "maritalStatus.coding[1].system"),
			    "http://terminology.hl7.org/CodeSystem/v2-0002");
	assert_string_equal(text_at(a, p, "maritalStatus.coding[1].display"), "Single");
	assert_string_equal(text_at(a, p, "maritalStatus.coding[2].code"), "UN");
	assert_null(at(p, "maritalStatus.coding[2].system")); /* "L": a local system has no URI */
	/* the alternate triplet, and a URI as the system name */
	assert_string_equal(text_at(a, p, "communication[0].language.coding[1].system"),
			    "urn:ietf:bcp:47");
	assert_string_equal(text_at(a, p, "communication[0].language.coding[1].code"), "en");
	/* text without a code is text */
	assert_string_equal(text_at(a, p, "extension[0].valueCodeableConcept.text"),
			    "Spiritual but not religious");
	assert_null(at(p, "extension[0].valueCodeableConcept.coding"));
	map_set_free(set);
	arena_free(a);
}

/* ---- ids ------------------------------------------------------------------------------ */

static void
test_id_business(void **state)
{
	arena_t *a = arena_new(0);
	map_set_t *set = load_shipped(NULL);
	map_result_t *r1, *r2, *r3;

	(void)state;
	(void)dt_patient(a, set, "PID|1||555^^^MERCY^MR||ONE^A", &r1);
	(void)dt_patient(a, set, "PID|1||555^^^MERCY^MR~9^^^X^PI||ONE^ANNA|||F", &r2);
	(void)dt_patient(a, set, "PID|1||556^^^MERCY^MR||ONE^A", &r3);
	assert_true(slice_eq(res_id(r1, "Patient", 0), res_id(r2, "Patient", 0)));
	assert_false(slice_eq(res_id(r1, "Patient", 0), res_id(r3, "Patient", 0)));
	assert_int_equal(res_id(r1, "Patient", 0).len, 32);
	/* the entry says what to update */
	assert_string_equal(text_at(a, at(r1->bundle, "entry[0]"), "request.method"), "PUT");
	map_set_free(set);
	arena_free(a);
}

static char *
read_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	buf_t b = BUF_INIT;
	char chunk[4096];
	size_t n;

	assert_non_null(f);
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		buf_append(&b, chunk, n);
	fclose(f);
	return buf_steal(&b, NULL);
}

/* An A01 and a later A08 of one patient and visit update the same Patient and Encounter. */
static void
test_id_a01_a08(void **state)
{
	arena_t *a = arena_new(0);
	map_set_t *set = load_shipped(NULL);
	char *a01 = read_file(TEST_DATA_DIR "/synthetic/01_adt_a01_admit.hl7");
	char *a08 = read_file(TEST_DATA_DIR "/synthetic/03_adt_a08_update.hl7");
	char *a03 = read_file(TEST_DATA_DIR "/synthetic/04_adt_a03_discharge.hl7");
	map_result_t *r1 = convert(a, set, a01, NULL);
	map_result_t *r8 = convert(a, set, a08, NULL);
	map_result_t *r3 = convert(a, set, a03, NULL);

	(void)state;
	assert_true(slice_eq(res_id(r1, "Patient", 0), res_id(r8, "Patient", 0)));
	assert_true(slice_eq(res_id(r1, "Encounter", 0), res_id(r8, "Encounter", 0)));
	assert_true(slice_eq(res_id(r1, "Encounter", 0), res_id(r3, "Encounter", 0)));
	/* the attending doctor is one Practitioner in both */
	assert_string_equal(
	    text_at(a, res_find(r1, "Encounter", 0), "participant[0].individual.reference"),
	    text_at(a, res_find(r8, "Encounter", 0), "participant[0].individual.reference"));
	/* but each message has its own MessageHeader */
	assert_false(slice_eq(res_id(r1, "MessageHeader", 0), res_id(r8, "MessageHeader", 0)));
	/* the Encounter's subject is the Patient's id */
	{
		char want[64];
		slice_t pid = res_id(r8, "Patient", 0);

		snprintf(want, sizeof(want), "Patient/%.*s", (int)pid.len, pid.ptr);
		assert_string_equal(text_at(a, res_find(r8, "Encounter", 0), "subject.reference"),
				    want);
	}
	map_set_free(set);
	arena_free(a);
	free(a01);
	free(a08);
	free(a03);
}

/* Without a business id: stable for a resend (same sender + MSH-10), new for another message. */
static void
test_id_fallback(void **state)
{
	arena_t *a = arena_new(0);
	map_set_t *set = load_shipped(NULL);
	char *m1 = msg_text("MSH|^~\\&|A|B|C|D|20240101120000+0000||ADT^A01^ADT_A01|M1|P|2.5",
			    "PID|1||||NOID^NORA", NULL);
	char *m2 = msg_text("MSH|^~\\&|A|B|C|D|20240101120000+0000||ADT^A01^ADT_A01|M2|P|2.5",
			    "PID|1||||NOID^NORA", NULL);
	map_result_t *r1 = convert(a, set, m1, NULL), *r1b = convert(a, set, m1, NULL);
	map_result_t *r2 = convert(a, set, m2, NULL);
	char *j1 = bundle_json(r1), *j1b = bundle_json(r1b);

	(void)state;
	assert_true(slice_eq(res_id(r1, "Patient", 0), res_id(r1b, "Patient", 0)));
	assert_false(slice_eq(res_id(r1, "Patient", 0), res_id(r2, "Patient", 0)));
	assert_string_equal(j1, j1b); /* byte-identical output */
	map_set_free(set);
	arena_free(a);
	free(m1);
	free(m2);
	free(j1);
	free(j1b);
}

/* ---- load errors ---------------------------------------------------------------------- */

static const char *good_msg_map = "Patient[1] <- PID as PID[Patient]\n";

/* Loads a PID map (and optional extra pair); returns the diagnostics and asserts the rc. */
static char *
load_diags(const char *pid_map, const char *extra_path, const char *extra, int want_rc)
{
	buf_t diags = BUF_INIT;
	map_set_t *set = (map_set_t *)(uintptr_t)1; /* must stay untouched on failure */
	const char *pairs[] = {"messages/ADT_A01.map",
			       good_msg_map,
			       "segments/PID-Patient.map",
			       pid_map,
			       extra_path,
			       extra,
			       NULL};
	int rc = load_mem(pairs, &diags, &set);

	assert_int_equal(rc, want_rc);
	if (rc != 0)
		assert_ptr_equal(set, (map_set_t *)(uintptr_t)1);
	else
		map_set_free(set);
	buf_append_byte(&diags, '\0');
	return buf_steal(&diags, NULL);
}

static void
expect_diag(const char *pid_map, const char *extra_path, const char *extra, int want_rc,
	    const char *want)
{
	char *d = load_diags(pid_map, extra_path, extra, want_rc);

	if (strstr(d, want) == NULL)
		fail_msg("expected '%s' in:\n%s", want, d);
	free(d);
}

static void
test_err_syntax(void **state)
{
	(void)state;
	expect_diag("name <- PID-5 as XPN[HumanName]\ngender PID-8\n",
		    "datatypes/XPN-HumanName.map", "family <- .1\n", -FG_ECONFIG,
		    "segments/PID-Patient.map:2:8: error: expected '<-' or '='");
	expect_diag("gender = \"male\n", NULL, NULL, -FG_ECONFIG,
		    "segments/PID-Patient.map:1:10: error: unterminated string");
	expect_diag("gender <- PID-8 if PID-9 FROBS 2\n", NULL, NULL, -FG_ECONFIG,
		    "segments/PID-Patient.map:1:26: error: unexpected text after the condition");
	expect_diag("gender <- PID-8 if \"M\"\n", NULL, NULL, -FG_ECONFIG,
		    "segments/PID-Patient.map:1:23: error: expected a comparison");
	expect_diag("gender <- PID-\n", NULL, NULL, -FG_ECONFIG,
		    "segments/PID-Patient.map:1:15: error: expected a field number");
	expect_diag("gender <- .1\n", NULL, NULL, -FG_ECONFIG,
		    "1:11: error: relative references (.1) only work in datatype maps");
	expect_diag("gender <- PID-8 if PID-8 IN (\"F\", \"M\"\n", NULL, NULL, -FG_ECONFIG,
		    "error: expected ')' closing the list");
}

static void
test_err_unknown_field(void **state)
{
	(void)state;
	expect_diag(
	    "gender <- PID-99\n", NULL, NULL, -FG_ECONFIG,
	    "segments/PID-Patient.map:1:11: error: PID has 40 fields: PID-99 does not exist");
	expect_diag("gender <- PID-8 if MSH-77 IS VALUED\n", NULL, NULL, -FG_ECONFIG,
		    "segments/PID-Patient.map:1:20: error: MSH has 28 fields");
	/* Z-segments have any number of fields */
	free(load_diags("gender <- ZPI-99\n", NULL, NULL, 0));
}

static void
test_err_unknown_target(void **state)
{
	(void)state;
	expect_diag(
	    "id <- hash(PID-3.1)\nnmae <- PID-5 as XPN[HumanName]\n", "datatypes/XPN-HumanName.map",
	    "family <- .1\n", -FG_ECONFIG,
	    "segments/PID-Patient.map:2:1: error: Patient has no element 'nmae' (did you mean "
	    "'name'?)");
	expect_diag("name.famly <- PID-5.1\n", NULL, NULL, -FG_ECONFIG,
		    "segments/PID-Patient.map:1:6: error: HumanName has no element 'famly'");
	expect_diag("deceased <- PID-30\n", NULL, NULL, -FG_ECONFIG,
		    "Patient has no element 'deceased'");
}

static void
test_err_unknown_maps(void **state)
{
	(void)state;
	expect_diag(
	    "name <- PID-5 as XPN[HumanNam]\n", "datatypes/XPN-HumanName.map", "family <- .1\n",
	    -FG_ECONFIG,
	    "segments/PID-Patient.map:1:18: error: unknown datatype map XPN[HumanNam] (did you "
	    "mean XPN[HumanName] (datatypes/XPN-HumanName.map)?)");
	expect_diag("gender <- PID-8 via AdminSex\n", "vocab/AdministrativeSex.csv",
		    "v2 code,code\nF,female\n", -FG_ECONFIG,
		    "segments/PID-Patient.map:1:21: error: unknown vocabulary AdminSex");
	expect_diag("gender <- PID-8\n", "messages/ORU_R01.map",
		    "Patient[1] <- PID as PID[Patiant]\n", -FG_ECONFIG,
		    "messages/ORU_R01.map:1:22: error: unknown segment map PID[Patiant]");
}

static void
test_err_types(void **state)
{
	(void)state;
	expect_diag(
	    "name <- PID-5 as CX[Identifier]\n", "datatypes/CX-Identifier.map", "value <- .1\n",
	    -FG_ECONFIG,
	    "1:18: error: CX[Identifier] makes a Identifier, but the target is a HumanName");
	expect_diag(
	    "name <- PID-5\n", NULL, NULL, -FG_ECONFIG,
	    "1:1: error: the target is a HumanName: a field alone cannot fill it (say which "
	    "datatype map builds it");
	expect_diag("active = \"yes\"\n", NULL, NULL, -FG_ECONFIG,
		    "1:10: error: this constant does not fit a boolean");
	expect_diag("birthDate <- PID-7 as NM[decimal]\n", NULL, NULL, -FG_ECONFIG,
		    "NM[decimal] does not make a date");
	expect_diag("gender <- PID-8\n", "datatypes/CX-Identifier.map",
		    "value <- .1\nassigner <- .4 as CX[Identifier]\n", -FG_ECONFIG,
		    "makes a Identifier, but the target is a Reference");
}

static void
test_err_unreachable(void **state)
{
	(void)state;
	/* a warning: the set still loads */
	expect_diag("gender = \"male\"\ngender <- PID-8\n", NULL, NULL, 0,
		    "segments/PID-Patient.map:2:1: warning: unreachable: line 1 always sets this "
		    "target first");
	expect_diag("birthDate <- PID-7\nbirthDate <- PID-7\n", NULL, NULL, 0,
		    "2:1: warning: unreachable: line 1 always sets this target first");
	/* a fallback after a conditional line is fine */
	{
		char *d =
		    load_diags("gender = \"male\" if PID-8 EQUALS \"M\"\ngender = \"unknown\"\n",
			       NULL, NULL, 0);

		assert_string_equal(d, "");
		free(d);
	}
}

static void
test_err_message_map(void **state)
{
	(void)state;
	expect_diag("gender <- PID-8\n", "messages/ORU_R01.map",
		    "Patient[1] <- PID as PID[Patient]\nPatient[1].link.other = Patient[2]\n",
		    -FG_ECONFIG,
		    "messages/ORU_R01.map:2:25: error: Patient[2] is not made by any line");
	expect_diag("gender <- PID-8\n", "messages/ORU_R01.map",
		    "Patient[1] <- PID as PID[Patient]\nEncounter[1].subject = Patient[1]\n",
		    -FG_ECONFIG,
		    "messages/ORU_R01.map:2:1: error: Encounter[1] is not made by any line");
	expect_diag("gender <- PID-8\n", "messages/ORU_R01.map",
		    "group PATIENT PID\nPatient[1] <- PID as PID[Patient]\n", -FG_ECONFIG,
		    "messages/ORU_R01.map:1:1: error: group PATIENT is not closed");
	expect_diag("gender <- PID-8\n", "messages/ORU_R01.map",
		    "Patient[1] <- PV1 as PID[Patient]\n", -FG_ECONFIG,
		    "PID[Patient] maps PID segments, not PV1");
	expect_diag("gender <- PID-8\n", "messages/ORU_R01.map",
		    "Patient[1] <- PID as PID[Patient]\n    subject = Patient[1]\n", -FG_ECONFIG,
		    "ORU_R01.map:2:5: error: Patient has no element 'subject'");
	/* a field on a message map line: it needs a target, belongs to a segment line, fits */
	expect_diag("gender <- PID-8\n", "messages/ORU_R01.map",
		    "Patient[1] <- PID as PID[Patient]\nPatient[1] <- PID-8\n", -FG_ECONFIG,
		    "ORU_R01.map:2:1: error: say which element takes the field");
	expect_diag("gender <- PID-8\n", "messages/ORU_R01.map",
		    "Patient[1].gender <- PID-8\nPatient[1] <- PID as PID[Patient]\n", -FG_ECONFIG,
		    "ORU_R01.map:1:1: error: a line that takes a field follows the segment line");
	expect_diag("gender <- PID-8\n", "messages/ORU_R01.map",
		    "Patient[1] <- PID as PID[Patient]\n    Patient[1].name <- PID-5\n",
		    -FG_ECONFIG, "error: the target is a HumanName: a field alone cannot fill it");
	expect_diag("gender <- PID-8\n", "messages/ORU_R01.map",
		    "Patient[1] <- PID as PID[Patient]\n    Patient[1].gender <- PID-8 follows "
		    "MSH\n",
		    -FG_ECONFIG, "error: 'follows' belongs on the segment line");
	expect_diag("gender <- PID-8\n", "vocab/AdministrativeSex.csv", "code,display\nF,female\n",
		    -FG_ECONFIG,
		    "vocab/AdministrativeSex.csv:1:1: error: the header needs at least the columns "
		    "'v2 code' and 'code'");
	expect_diag("gender <- PID-8\n", "segments/pid.map", "x = 1\n", -FG_ECONFIG,
		    "segments/pid.map:0:0: error: bad file name");
}

/* A bad file never half-loads: every problem is reported, the set is not built. */
static void
test_err_all_reported(void **state)
{
	char *d =
	    load_diags("gender <- PID-99\nnmae <- PID-5.1\nbirthDate <- PID-7\n",
		       "datatypes/XPN-HumanName.map", "family <- .1\nfoo <- .2\n", -FG_ECONFIG);

	(void)state;
	assert_non_null(strstr(d, "PID-Patient.map:1:11"));
	assert_non_null(strstr(d, "PID-Patient.map:2:1"));
	assert_non_null(strstr(d, "XPN-HumanName.map:2:1: error: HumanName has no element 'foo'"));
	free(d);
}

static void
test_err_cycle_extends(void **state)
{
	(void)state;
	expect_diag("name <- PID-5 as XPN[HumanName]\n", "datatypes/XPN-HumanName.map",
		    "family <- .1\nperiod <- .10 as DR[Period]\n", -FG_ECONFIG,
		    "unknown datatype map DR[Period]");
	{
		/* a datatype map that uses itself */
		buf_t diags = BUF_INIT;
		map_set_t *set = NULL;
		const char *pairs[] = {"messages/ADT_A01.map",
				       good_msg_map,
				       "segments/PID-Patient.map",
				       "identifier <- PID-3 as CX[Identifier]\n",
				       "datatypes/CX-Identifier.map",
				       "value <- .1\nassigner <- .4 as HD[Organization]\n",
				       "datatypes/HD-Organization.map",
				       "identifier[1] <- . as CX[Identifier]\n",
				       NULL};

		assert_int_equal(load_mem(pairs, &diags, &set), -FG_ECONFIG);
		buf_append_byte(&diags, '\0');
		assert_non_null(strstr(diags.data, "uses itself through 'as'"));
		buf_free(&diags);
	}
	expect_diag("gender <- PID-8\n", "messages/ADT_A01-site.map",
		    "extends ADT_A99\nPatient[1] <- PID as PID[Patient]\n", -FG_ECONFIG,
		    "messages/ADT_A01-site.map:1:1: error: no message map ADT_A99 to extend");
	expect_diag(
	    "gender <- PID-8\n", "messages/ADT_A01-site.map",
	    "Patient[1] <- PID as PID[Patient]\nextends ADT_A01\n", -FG_ECONFIG,
	    "messages/ADT_A01-site.map:2:9: error: expected the message map this file adds to");
}

/* A group begins again with its opening segment: the second order's report is based on the
 * second order, and holds only its own results. */
static void
test_groups(void **state)
{
	arena_t *a = arena_new(0);
	map_set_t *set = load_shipped(NULL);
	char *msg =
	    msg_text("MSH|^~\\&|LAB|H|GW|H|20240101120000+0000||ORU^R01^ORU_R01|G1|P|2.5",
		     "PID|1||1^^^H^MR||DOE^JO", "ORC|RE|P1^X|F1^Y", "OBR|1|P1^X|F1^Y|A^Test A^L",
		     "OBX|1|NM|a^A^L||1", "NTE|1||on a", "OBR|2|P2^X|F2^Y|B^Test B^L",
		     "NTE|1||on order 2", "OBX|1|NM|b^B^L||2", "OBX|2|NM|c^C^L||3", NULL);
	map_result_t *r = convert(a, set, msg, NULL);
	const fhir_node_t *dr1 = res_find(r, "DiagnosticReport", 0);
	const fhir_node_t *dr2 = res_find(r, "DiagnosticReport", 1);
	const fhir_node_t *sr2 = res_find(r, "ServiceRequest", 1);
	char want[64];

	(void)state;
	assert_int_equal(res_count(r, "DiagnosticReport"), 2);
	assert_int_equal(res_count(r, "ServiceRequest"), 2);
	assert_int_equal(res_count(r, "Observation"), 3);
	assert_int_equal(fhir_array_len(at(dr1, "result")), 1);
	assert_int_equal(fhir_array_len(at(dr2, "result")), 2);
	assert_string_equal(text_at(a, sr2, "identifier[0].value"), "P2");
	snprintf(want, sizeof(want), "ServiceRequest/%.*s", 32, res_id(r, "ServiceRequest", 1).ptr);
	assert_string_equal(text_at(a, dr2, "basedOn[0].reference"), want);
	/* NTE after OBX: the observation's; after OBR: the order's */
	assert_string_equal(text_at(a, res_find(r, "Observation", 0), "note[0].text"), "on a");
	assert_string_equal(text_at(a, sr2, "note[0].text"), "on order 2");
	assert_null(at(res_find(r, "Observation", 1), "note"));
	map_set_free(set);
	arena_free(a);
	free(msg);
}

/* ---- site overrides, extensions, explain ---------------------------------------------- */

static const char *zpi_msg[] = {
    "MSH|^~\\&|EPICADT|MERCYGEN|GW|GWF|20240312083015-0500||ADT^A01^ADT_A01|Z1|P|2.5",
    "PID|1||100234567^^^MERCYGEN^MR||EVERYMAN^ADAM|||M",
    "PD1|||MERCY GENERAL HOSPITAL^^1234|3344556677^PRIMARY^PAULA^^^DR^MD^^NPI",
    "ZPI|1|CORNER PHARMACY|blue",
};

static void
test_site_override(void **state)
{
	arena_t *a = arena_new(0);
	map_set_t *shipped = load_shipped(NULL);
	map_set_t *site = load_shipped(TEST_DATA_DIR "/maps/site");
	char *msg = msg_text(zpi_msg[0], zpi_msg[1], zpi_msg[2], zpi_msg[3], NULL);
	map_options_t opt = {true, false, 0, NULL};
	map_result_t *r0 = convert(a, shipped, msg, &opt), *r1 = convert(a, site, msg, &opt);
	const fhir_node_t *p0 = res_find(r0, "Patient", 0), *p1 = res_find(r1, "Patient", 0);
	bool zpi2_unused = false;

	(void)state;
	/* shipped: ZPI is not mapped, and explain says so */
	assert_null(at(p0, "extension"));
	for (size_t i = 0; i < r0->nunused; i++)
		zpi2_unused |=
		    strcmp(r0->unused[i].segment, "ZPI") == 0 && r0->unused[i].field == 2;
	assert_true(zpi2_unused);
	assert_string_equal(text_at(a, p0, "identifier[0].system"), "MERCYGEN");
	assert_int_equal(fhir_array_len(at(p0, "generalPractitioner")), 2);
	/* site: the extension file adds the Z-segment, the vocabulary and PD1 map are replaced */
	assert_string_equal(text_at(a, p1, "extension[0].url"),
			    "http://example.org/fhir/StructureDefinition/preferred-pharmacy");
	assert_string_equal(text_at(a, p1, "extension[0].valueString"), "CORNER PHARMACY");
	assert_string_equal(text_at(a, p1, "identifier[0].system"),
			    "urn:oid:2.16.840.1.113883.3.9999.1");
	assert_int_equal(fhir_array_len(at(p1, "generalPractitioner")), 1);
	/* ZPI-1 is ignored on purpose; ZPI-3 is listed */
	for (size_t i = 0; i < r1->nunused; i++) {
		assert_false(strcmp(r1->unused[i].segment, "ZPI") == 0 && r1->unused[i].field <= 2);
	}
	assert_true(r1->nunused > 0);
	assert_true(map_set_version(shipped) != map_set_version(site));
	map_set_free(shipped);
	map_set_free(site);
	arena_free(a);
	free(msg);
}

/* A site file with the path of a shipped one replaces it; a new message map wins its names. */
static void
test_site_mem(void **state)
{
	arena_t *a = arena_new(0);
	const char *pairs[] = {"messages/ADT_A01.map",
			       "applies to ADT_A08\nPatient[1] <- PID as PID[Patient]\n",
			       "segments/PID-Patient.map",
			       "gender = \"female\"\n",
			       "site:segments/PID-Patient.map",
			       "gender = \"male\"\n",
			       "site:messages/A08.map",
			       "applies to ADT_A08\nPatient[2] <- PID as PID[Patient]\n"
			       "    active = true\n",
			       NULL};
	map_set_t *set = load_ok(pairs);
	char *a01 = msg_text("MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5", "PID|1||9^^^H", NULL);
	char *a08 = msg_text("MSH|^~\\&|A|B|C|D|20240101||ADT^A08|1|P|2.5", "PID|1||9^^^H", NULL);
	map_result_t *r1 = convert(a, set, a01, NULL), *r8 = convert(a, set, a08, NULL);

	(void)state;
	assert_string_equal(r1->map_name, "ADT_A01");
	assert_string_equal(text_at(a, res_find(r1, "Patient", 0), "gender"), "male");
	assert_string_equal(r8->map_name, "A08");
	assert_non_null(at(res_find(r8, "Patient", 0), "active"));
	assert_true(map_set_has_message(set, SLICE_LIT("ADT_A08")));
	assert_false(map_set_has_message(set, SLICE_LIT("ORU_R01")));
	map_set_free(set);
	arena_free(a);
	free(a01);
	free(a08);
}

static void
test_explain(void **state)
{
	arena_t *a = arena_new(0);
	map_set_t *set = load_shipped(NULL);
	char *msg = msg_text(zpi_msg[0], zpi_msg[1], zpi_msg[3], NULL);
	map_options_t opt = {true, false, 0, NULL};
	map_result_t *r = convert(a, set, msg, &opt);
	bool gender = false, family = false, zpi = false;

	(void)state;
	for (size_t i = 0; i < r->nexplain; i++) {
		const map_explain_t *x = &r->explain[i];

		assert_true(x->resource < r->nresources);
		if (strcmp(x->path, "gender") == 0) {
			gender = true;
			assert_true(slice_eq_cstr(r->resources[x->resource].type, "Patient"));
			assert_string_equal(x->source, "PID-8[1]");
			assert_non_null(strstr(x->file, "segments/PID-Patient.map"));
		}
		if (strcmp(x->path, "name[0].family") == 0) {
			family = true;
			assert_string_equal(x->source, "PID-5[1].1.1");
			assert_non_null(strstr(x->file, "datatypes/XPN-HumanName.map"));
			assert_int_equal(x->line, 3);
		}
	}
	assert_true(gender && family);
	for (size_t i = 0; i < r->nunused; i++) {
		const map_unused_t *u = &r->unused[i];

		zpi |= strcmp(u->segment, "ZPI") == 0 && u->field == 1 && u->rep == 1 &&
		       u->seg_seq == 1 && u->seg_index == 2;
		assert_false(strcmp(u->segment, "PID") == 0 && u->field == 8); /* used */
		assert_false(strcmp(u->segment, "MSH") == 0 && u->field <= 2); /* delimiters */
	}
	assert_true(zpi);
	/* without explain, no records */
	r = convert(a, set, msg, NULL);
	assert_int_equal(r->nexplain, 0);
	assert_int_equal(r->nunused, 0);
	map_set_free(set);
	arena_free(a);
	free(msg);
}

/* ---- the Bundle ----------------------------------------------------------------------- */

static void
test_bundle(void **state)
{
	arena_t *a = arena_new(0);
	map_set_t *set = load_shipped(NULL);
	char *msg = read_file(TEST_DATA_DIR "/synthetic/01_adt_a01_admit.hl7");
	map_options_t opt = {false, false, 0, "http://fhir.example.org/fhir/"};
	map_result_t *r = convert(a, set, msg, &opt);
	const fhir_node_t *b = r->bundle, *entries = at(b, "entry");
	char url[128];

	(void)state;
	assert_string_equal(text_at(a, b, "resourceType"), "Bundle");
	assert_string_equal(text_at(a, b, "type"), "transaction");
	assert_string_equal(text_at(a, b, "identifier.value"), "MSG00001");
	assert_int_equal(fhir_array_len(entries), r->nresources);
	for (size_t i = 0; i < r->nresources; i++) {
		const fhir_node_t *e = fhir_array_at(entries, i);

		snprintf(url, sizeof(url), "%.*s/%.*s", (int)r->resources[i].type.len,
			 r->resources[i].type.ptr, (int)r->resources[i].id.len,
			 r->resources[i].id.ptr);
		assert_string_equal(text_at(a, e, "request.method"), "PUT");
		assert_string_equal(text_at(a, e, "request.url"), url);
		assert_true(slice_eq(fhir_node_text(at(e, "resource.id")), r->resources[i].id));
		assert_ptr_equal(at(e, "resource"), r->resources[i].resource);
		assert_non_null(strstr(text_at(a, e, "fullUrl"), "http://fhir.example.org/fhir/"));
		assert_non_null(strstr(text_at(a, e, "fullUrl"), url));
		/* "resourceType" then "id": R4 order */
		assert_true(
		    slice_eq_cstr(fhir_object_key_at(r->resources[i].resource, 0), "resourceType"));
		assert_true(slice_eq_cstr(fhir_object_key_at(r->resources[i].resource, 1), "id"));
	}
	assert_int_equal(res_count(r, "MessageHeader"), 1);
	assert_int_equal(res_count(r, "Provenance"), 2);
	assert_int_equal(res_count(r, "Patient"), 1);
	assert_int_equal(res_count(r, "Practitioner"), 4); /* PV1-7 and PV1-17 are one */
	/* the conversion's Provenance names every other resource */
	assert_int_equal(fhir_array_len(at(res_find(r, "Provenance", 0), "target")),
			 r->nresources - 1);
	/* urn:uuid fullUrls without a base */
	r = convert(a, set, msg, NULL);
	assert_int_equal(strlen(text_at(a, at(r->bundle, "entry[0]"), "fullUrl")), 45);
	map_set_free(set);
	arena_free(a);
	free(msg);
}

static void
test_no_map(void **state)
{
	arena_t *a = arena_new(0);
	map_set_t *set = load_shipped(NULL);
	char *a99 = msg_text("MSH|^~\\&|A|B|C|D|20240101||ADT^A99|1|P|2.5", "PID|1||9", NULL);
	char *bar = msg_text("MSH|^~\\&|A|B|C|D|20240101||MFN^M02^MFN_M02|1|P|2.5", "MFE|A", NULL);
	map_result_t *r = NULL;

	(void)state;
	assert_int_equal(convert_rc(a, set, a99, NULL, &r), -FG_ENOTFOUND);
	assert_non_null(r);
	assert_null(r->bundle);
	assert_int_equal(r->error.code, 201); /* ADT is mapped, A99 is not */
	assert_int_equal(r->error.ack, 'R');
	assert_string_equal(r->error.segment, "MSH");
	assert_int_equal(r->error.field, 9);
	assert_string_equal(r->error.text, "no map for ADT_A99 (ADT^A99)");
	assert_int_equal(convert_rc(a, set, bar, NULL, &r), -FG_ENOTFOUND);
	assert_int_equal(r->error.code, 200);
	map_set_free(set);
	arena_free(a);
	free(a99);
	free(bar);
}

/* A field of separators only ("^^^") gives nothing, and neither does one whose components the
 * datatype map does not read: no Practitioner or Location of constants alone, no reference. */
static void
test_blank_fields(void **state)
{
	arena_t *a = arena_new(0);
	map_set_t *set = load_shipped(NULL);
	char *msg =
	    msg_text("MSH|^~\\&|A|B|C|D|20240101120000+0100||ADT^A01^ADT_A01|B1|P|2.5",
		     "PID|1||5^^^H^MR||ROE^RITA",
		     "PV1|1|I|W1^R2^B3|||^^^^^^^^^^HOSP&LODI|13936^TEST^TEST|^^^^^|&&^", NULL);
	map_result_t *r = convert(a, set, msg, NULL);
	const fhir_node_t *enc = NULL;

	(void)state;
	assert_int_equal(res_count(r, "Practitioner"), 1); /* PV1-7 only */
	assert_int_equal(res_count(r, "Location"), 1);     /* PV1-3 only */
	for (size_t i = 0; i < r->nresources; i++)
		if (slice_eq_cstr(fhir_resource_type(r->resources[i].resource), "Encounter"))
			enc = r->resources[i].resource;
	assert_non_null(enc);
	assert_int_equal(fhir_array_len(fhir_object_get_cstr(enc, "participant")), 1);
	assert_int_equal(fhir_array_len(fhir_object_get_cstr(enc, "location")), 1);
	map_set_free(set);
	arena_free(a);
	free(msg);
}

/* Message map lines under a segment line that take a field of its segment: their [n] name the
 * elements the line's references made (one Encounter.diagnosis per DG1, with its condition,
 * use and rank). */
static void
test_message_field_lines(void **state)
{
	arena_t *a = arena_new(0);
	map_set_t *set = load_shipped(NULL);
	char *msg = msg_text("MSH|^~\\&|A|B|C|D|20240101120000+0100||ADT^A01^ADT_A01|D1|P|2.5",
			     "PID|1||5^^^H^MR||ROE^RITA", "PV1|1|I|W1^R2^B3",
			     "DG1|1||I10^Chest pain^I10||20240101|A|||||||||1",
			     "DG1|2||R07^Cough^I10||20240101|F|||||||||2", NULL);
	map_result_t *r = convert(a, set, msg, NULL);
	const fhir_node_t *enc = NULL, *dx;

	(void)state;
	for (size_t i = 0; i < r->nresources; i++)
		if (slice_eq_cstr(fhir_resource_type(r->resources[i].resource), "Encounter"))
			enc = r->resources[i].resource;
	assert_non_null(enc);
	dx = fhir_object_get_cstr(enc, "diagnosis");
	assert_int_equal(fhir_array_len(dx), 2);
	for (size_t i = 0; i < 2; i++) {
		const fhir_node_t *d = fhir_array_at(dx, i);
		const fhir_node_t *use = fhir_array_at(
		    fhir_object_get_cstr(fhir_object_get_cstr(d, "use"), "coding"), 0);

		assert_non_null(fhir_object_get_cstr(d, "condition"));
		/* A: admission (diagnosis-role AD); F (final): known to the IG, no FHIR code, the
		 * message's kept */
		assert_true(slice_eq_cstr(fhir_node_text(fhir_object_get_cstr(use, "code")),
					  i == 0 ? "AD" : "F"));
		assert_true(slice_eq_cstr(fhir_node_text(fhir_object_get_cstr(d, "rank")),
					  i == 0 ? "1" : "2"));
	}
	map_set_free(set);
	arena_free(a);
	free(msg);
}

/* PD1-7 makes the living will Observation (IG: PD1[Observation-LivingWill]), its value through
 * the IG's LivingWillCode; without PD1-7 there is none. */
static void
test_living_will(void **state)
{
	arena_t *a = arena_new(0);
	map_set_t *set = load_shipped(NULL);
	char *msg = msg_text("MSH|^~\\&|A|B|C|D|20240101120000+0100||ADT^A01^ADT_A01|L1|P|2.5",
			     "PID|1||5^^^H^MR||ROE^RITA", "PD1|||||||Y", NULL);
	char *none = msg_text("MSH|^~\\&|A|B|C|D|20240101120000+0100||ADT^A01^ADT_A01|L2|P|2.5",
			      "PID|1||5^^^H^MR||ROE^RITA", "PD1|||||||", NULL);
	map_result_t *r = convert(a, set, msg, NULL);
	const fhir_node_t *obs = NULL, *coding;

	(void)state;
	for (size_t i = 0; i < r->nresources; i++)
		if (slice_eq_cstr(fhir_resource_type(r->resources[i].resource), "Observation"))
			obs = r->resources[i].resource;
	assert_non_null(obs);
	coding =
	    fhir_array_at(fhir_object_get_cstr(fhir_object_get_cstr(obs, "code"), "coding"), 0);
	assert_true(slice_eq_cstr(fhir_node_text(fhir_object_get_cstr(coding, "code")), "75320-2"));
	coding = fhir_array_at(
	    fhir_object_get_cstr(fhir_object_get_cstr(obs, "valueCodeableConcept"), "coding"), 0);
	assert_true(slice_eq_cstr(fhir_node_text(fhir_object_get_cstr(coding, "system")),
				  "http://terminology.hl7.org/CodeSystem/v2-0315"));
	assert_true(slice_eq_cstr(fhir_node_text(fhir_object_get_cstr(coding, "code")), "Y"));
	assert_non_null(fhir_object_get_cstr(obs, "subject"));
	r = convert(a, set, none, NULL);
	assert_int_equal(res_count(r, "Observation"), 0);
	map_set_free(set);
	arena_free(a);
	free(msg);
	free(none);
}

/* A resource missing what R4 requires is reported, and left out when nothing points at it. */
static void
test_required(void **state)
{
	arena_t *a = arena_new(0);
	map_set_t *set = load_shipped(NULL);
	char *msg = msg_text("MSH|^~\\&|A|B|C|D|1994050216163360||ADT^A01^ADT_A01|R1|P|2.2",
			     "PID|1||5^^^H^MR||ROE^RITA", NULL);
	map_result_t *r = convert(a, set, msg, NULL);
	bool warned = false;

	(void)state;
	assert_int_equal(res_count(r, "Provenance"), 0); /* MSH-7 is no valid time */
	assert_int_equal(res_count(r, "Patient"), 1);
	for (size_t i = 0; i < r->nwarnings; i++)
		warned |= strcmp(r->warnings[i].text,
				 "Provenance left out: no recorded, which FHIR requires") == 0;
	assert_true(warned);
	free(msg);
	/* a required choice: Immunization.occurrence[x] from RXA-3, empty here */
	msg = msg_text("MSH|^~\\&|A|B|C|D|20240101120000+0000||VXU^V04^VXU_V04|V1|P|2.5.1",
		       "PID|1||5^^^H^MR||ROE^RITA", "RXA|0|1|||08^HepB^CVX|0.5|mL^mL^UCUM", NULL);
	r = convert(a, set, msg, NULL);
	assert_int_equal(res_count(r, "Immunization"), 0);
	warned = false;
	for (size_t i = 0; i < r->nwarnings; i++)
		warned |= strcmp(r->warnings[i].text, "Immunization left out: no occurrence[x], "
						      "which FHIR requires") == 0;
	assert_true(warned);
	free(msg);
	msg = msg_text("MSH|^~\\&|A|B|C|D|20240101120000+0000||VXU^V04^VXU_V04|V1|P|2.5.1",
		       "PID|1||5^^^H^MR||ROE^RITA", "RXA|0|1|20240101||08^HepB^CVX|0.5|mL^mL^UCUM",
		       NULL);
	r = convert(a, set, msg, NULL);
	assert_int_equal(res_count(r, "Immunization"), 1);
	free(msg);
	/* a value R4 does not allow is left out with a warning: an integer beyond 32 bits */
	msg = msg_text("MSH|^~\\&|A|B|C|D|20240101120000+0000||ADT^A04^ADT_A01|R2|P|2.5.1",
		       "PID|1||5^^^H^MR||ROE^RITA|||||||||||||||||||Y|3000000000", "PV1|1|O", NULL);
	r = convert(a, set, msg, NULL);
	assert_null(fhir_object_get_cstr(res_find(r, "Patient", 0), "multipleBirthInteger"));
	warned = false;
	for (size_t i = 0; i < r->nwarnings; i++)
		warned |= strcmp(r->warnings[i].text, "not a valid integer: left out") == 0;
	assert_true(warned);
	map_set_free(set);
	arena_free(a);
	free(msg);
}

/* The time zone option completes times without an offset. */
static void
test_timezone_option(void **state)
{
	arena_t *a = arena_new(0);
	map_set_t *set = load_shipped(NULL);
	char *msg = read_file(TEST_DATA_DIR "/synthetic/02_adt_a04_register.hl7");
	map_options_t cst = {false, true, -360, NULL};
	map_result_t *r0 = convert(a, set, msg, NULL), *r1 = convert(a, set, msg, &cst);

	(void)state;
	assert_string_equal(text_at(a, res_find(r0, "Encounter", 0), "period.start"), "2024-04-01");
	assert_true(r0->nwarnings > 0);
	assert_string_equal(text_at(a, res_find(r1, "Encounter", 0), "period.start"),
			    "2024-04-01T14:10:00-06:00");
	assert_string_equal(text_at(a, r1->bundle, "timestamp"), "2024-04-01T14:12:00-06:00");
	/* MSH-7 (Bundle, Provenance) and EVN-2 are instants: UTC; PV1-44 a date */
	assert_string_equal(text_at(a, r0->bundle, "timestamp"), "2024-04-01T14:12:00+00:00");
	assert_int_equal(r0->nwarnings, 4);
	assert_int_equal(r1->nwarnings, 0);
	map_set_free(set);
	arena_free(a);
	free(msg);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_cond_valued),
	    cmocka_unit_test(test_cond_equals),
	    cmocka_unit_test(test_cond_not_equals),
	    cmocka_unit_test(test_cond_in),
	    cmocka_unit_test(test_cond_count),
	    cmocka_unit_test(test_cond_length),
	    cmocka_unit_test(test_cond_compare),
	    cmocka_unit_test(test_cond_logic),
	    cmocka_unit_test(test_dtm_precision),
	    cmocka_unit_test(test_dtm_invalid),
	    cmocka_unit_test(test_dtm_invalid_in_message),
	    cmocka_unit_test(test_dt_cx),
	    cmocka_unit_test(test_dt_xpn),
	    cmocka_unit_test(test_dt_xad),
	    cmocka_unit_test(test_dt_xtn),
	    cmocka_unit_test(test_dt_cwe),
	    cmocka_unit_test(test_id_business),
	    cmocka_unit_test(test_id_a01_a08),
	    cmocka_unit_test(test_id_fallback),
	    cmocka_unit_test(test_err_syntax),
	    cmocka_unit_test(test_err_unknown_field),
	    cmocka_unit_test(test_err_unknown_target),
	    cmocka_unit_test(test_err_unknown_maps),
	    cmocka_unit_test(test_err_types),
	    cmocka_unit_test(test_err_unreachable),
	    cmocka_unit_test(test_err_message_map),
	    cmocka_unit_test(test_err_all_reported),
	    cmocka_unit_test(test_err_cycle_extends),
	    cmocka_unit_test(test_groups),
	    cmocka_unit_test(test_site_override),
	    cmocka_unit_test(test_site_mem),
	    cmocka_unit_test(test_explain),
	    cmocka_unit_test(test_bundle),
	    cmocka_unit_test(test_no_map),
	    cmocka_unit_test(test_timezone_option),
	    cmocka_unit_test(test_required),
	    cmocka_unit_test(test_blank_fields),
	    cmocka_unit_test(test_living_will),
	    cmocka_unit_test(test_message_field_lines),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
