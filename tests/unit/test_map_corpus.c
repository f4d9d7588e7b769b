/* Every message of the test corpus through the shipped maps: each one that parses converts,
 * deterministically, or fails with "no map for"; and the synthetic messages give the values
 * they should (names, dates, codes, quantities, references). */
#include "config.h"

#include <sys/stat.h>

#include <dirent.h>
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
#include "lib/xalloc.h"
#include "mappings/hl7.h"
#include "mappings/map.h"

static map_set_t *shipped;

static void
diag_print(const map_diag_t *d, void *arg)
{
	(void)arg;
	fprintf(stderr, "%s:%u:%u: %s\n", d->file, d->line, d->col, d->text);
}

static int
setup(void **state)
{
	(void)state;
	return map_set_load(MAPS_DIR, NULL, diag_print, NULL, &shipped);
}

static int
teardown(void **state)
{
	(void)state;
	map_set_free(shipped);
	return 0;
}

static char *
read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	buf_t b = BUF_INIT;
	char chunk[65536];
	size_t n;

	assert_non_null(f);
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		buf_append(&b, chunk, n);
	fclose(f);
	if (b.data == NULL)
		buf_append(&b, "", 0);
	return buf_steal(&b, len);
}

typedef struct {
	size_t files, messages, converted, no_map, unparsed;
} corpus_stats_t;

static char *
json_of(const map_result_t *r)
{
	buf_t b = BUF_INIT;

	assert_int_equal(fhir_json_write(r->bundle, false, &b), 0);
	return buf_steal(&b, NULL);
}

/* One message: converts (twice, to the same bytes) or has no map. */
static void
corpus_message(const char *path, const char *data, size_t len, corpus_stats_t *st)
{
	arena_t *a = arena_new(0);
	hl7_limits_t lim;
	hl7_msg_t *m = NULL;
	hl7_error_t err;
	map_result_t *r1 = NULL, *r2 = NULL;
	map_options_t opt = {true, false, 0, NULL};
	int rc;

	hl7_limits_default(&lim);
	st->messages++;
	if (hl7_parse(a, data, len, &lim, &m, &err) != 0) {
		st->unparsed++;
		arena_free(a);
		return;
	}
	rc = map_convert(shipped, m, &opt, a, &r1);
	assert_non_null(r1);
	if (rc == -FG_ENOTFOUND) {
		if (strncmp(r1->error.text, "no map for ", 11) != 0 ||
		    (r1->error.code != 200 && r1->error.code != 201))
			fail_msg("%s: unclear error: %d %s", path, r1->error.code, r1->error.text);
		assert_null(r1->bundle);
		st->no_map++;
	} else {
		char *j1, *j2;

		if (rc != 0)
			fail_msg("%s: %s (%s)", path, fg_strerror(rc), r1->error.text);
		assert_non_null(r1->bundle);
		assert_true(r1->nresources > 0);
		assert_int_equal(fhir_array_len(fhir_object_get_cstr(r1->bundle, "entry")),
				 r1->nresources);
		for (size_t i = 0; i < r1->nexplain; i++)
			assert_true(r1->explain[i].resource < r1->nresources);
		for (size_t i = 0; i < r1->nwarnings; i++)
			assert_non_null(r1->warnings[i].text);
		assert_int_equal(map_convert(shipped, m, NULL, a, &r2), 0);
		j1 = json_of(r1);
		j2 = json_of(r2);
		if (strcmp(j1, j2) != 0)
			fail_msg("%s: two conversions differ", path);
		free(j1);
		free(j2);
		st->converted++;
	}
	arena_free(a);
}

static void
corpus_file(const char *path, corpus_stats_t *st)
{
	size_t len, n = 0;
	char *data = read_file(path, &len);
	arena_t *a = arena_new(0);
	slice_t *msgs;
	hl7_error_t err;

	st->files++;
	if (hl7_batch_split(a, data, len, &msgs, &n, &err) == 0 && n > 0) {
		for (size_t i = 0; i < n; i++)
			corpus_message(path, msgs[i].ptr, msgs[i].len, st);
	} else {
		corpus_message(path, data, len, st);
	}
	arena_free(a);
	free(data);
}

static int
cmp_names(const void *x, const void *y)
{
	return strcmp(*(char *const *)x, *(char *const *)y);
}

/* Every *.hl7 under dir (one level of subfolders), in name order. */
static void
corpus_dir(const char *dir, corpus_stats_t *st)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	char **names = NULL;
	size_t n = 0;
	struct stat sb;

	assert_non_null(d);
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		names = xreallocarray(names, n + 1, sizeof(*names));
		names[n++] = xasprintf("%s/%s", dir, de->d_name);
	}
	closedir(d);
	qsort(names, n, sizeof(*names), cmp_names);
	for (size_t i = 0; i < n; i++) {
		size_t l = strlen(names[i]);

		if (stat(names[i], &sb) == 0 && S_ISDIR(sb.st_mode))
			corpus_dir(names[i], st);
		else if (l > 4 && strcmp(names[i] + l - 4, ".hl7") == 0)
			corpus_file(names[i], st);
		free(names[i]);
	}
	free(names);
}

static void
test_corpus_hl7v2(void **state)
{
	corpus_stats_t st = {0, 0, 0, 0, 0};

	(void)state;
	corpus_dir(TEST_DATA_DIR "/hl7v2", &st);
	printf(
	    "# hl7v2: %zu files, %zu messages: %zu converted, %zu without a map, %zu unparsable\n",
	    st.files, st.messages, st.converted, st.no_map, st.unparsed);
	assert_true(st.files >= 80);
	assert_true(st.converted >= 40);
}

static void
test_corpus_synthetic(void **state)
{
	corpus_stats_t st = {0, 0, 0, 0, 0};

	(void)state;
	corpus_dir(TEST_DATA_DIR "/synthetic", &st);
	assert_int_equal(st.files, 20);
	assert_int_equal(st.converted, 20); /* every synthetic message has a map */
}

/* ---- concrete values of the synthetic messages ------------------------------------------- */

typedef struct {
	arena_t *a;
	map_result_t *r;
} conv_t;

static conv_t
convert_path(const char *path)
{
	size_t len;
	char *data;
	conv_t c;
	hl7_limits_t lim;
	hl7_msg_t *m;
	hl7_error_t err;
	map_options_t opt = {false, false, 0, NULL};

	data = read_file(path, &len);
	c.a = arena_new(0);
	hl7_limits_default(&lim);
	/* the message lives in the arena with its views */
	assert_int_equal(hl7_parse(c.a, arena_strndup(c.a, data, len), len, &lim, &m, &err), 0);
	free(data);
	assert_int_equal(map_convert(shipped, m, &opt, c.a, &c.r), 0);
	return c;
}

static conv_t
convert_file(const char *name)
{
	char path[512];

	snprintf(path, sizeof(path), "%s/synthetic/%s", TEST_DATA_DIR, name);
	return convert_path(path);
}

static const fhir_node_t *
res(const conv_t *c, const char *type, size_t nth)
{
	for (size_t i = 0; i < c->r->nresources; i++)
		if (slice_eq_cstr(c->r->resources[i].type, type) && nth-- == 0)
			return c->r->resources[i].resource;
	fail_msg("no %s", type);
	return NULL;
}

static size_t
count(const conv_t *c, const char *type)
{
	size_t n = 0;

	for (size_t i = 0; i < c->r->nresources; i++)
		n += slice_eq_cstr(c->r->resources[i].type, type);
	return n;
}

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

static void
expect(const conv_t *c, const fhir_node_t *n, const char *path, const char *want)
{
	const fhir_node_t *v = at(n, path);
	slice_t t = v != NULL ? fhir_node_text(v) : SLICE_NULL;

	(void)c;
	if (v == NULL || !slice_eq_cstr(t, want))
		fail_msg("%s: expected '%s', got '%.*s'%s", path, want, (int)t.len,
			 t.ptr ? t.ptr : "", v == NULL ? " (absent)" : "");
}

/* "Type/id" of a resource, to compare references with. */
static const char *
ref_of(const conv_t *c, const char *type, size_t nth)
{
	for (size_t i = 0; i < c->r->nresources; i++)
		if (slice_eq_cstr(c->r->resources[i].type, type) && nth-- == 0) {
			char tmp[96];

			snprintf(tmp, sizeof(tmp), "%s/%.*s", type, (int)c->r->resources[i].id.len,
				 c->r->resources[i].id.ptr);
			return arena_strndup(c->a, tmp, strlen(tmp));
		}
	return "";
}

static void
test_syn_admit(void **state)
{
	conv_t c = convert_file("01_adt_a01_admit.hl7");
	const fhir_node_t *p = res(&c, "Patient", 0), *e = res(&c, "Encounter", 0);

	(void)state;
	expect(&c, p, "name[0].family", "EVERYMAN");
	expect(&c, p, "name[0].given[0]", "ADAM");
	expect(&c, p, "name[0].given[1]", "ALAN");
	expect(&c, p, "name[0].suffix[0]", "JR");
	expect(&c, p, "name[0].use", "official");
	expect(&c, p, "birthDate", "1980-06-15");
	expect(&c, p, "gender", "male");
	expect(&c, p, "identifier[0].value", "100234567");
	expect(&c, p, "identifier[0].type.coding[0].code", "MR");
	expect(&c, p, "identifier[1].value", "999-00-1234");
	expect(&c, p, "identifier[1].system", "http://hl7.org/fhir/sid/us-ssn");
	expect(&c, p, "address[0].city", "CLEVELAND");
	expect(&c, p, "address[0].district", "Cuyahoga");
	expect(&c, p, "telecom[0].value", "+1 216 5551234");
	expect(&c, p, "telecom[1].value", "adam.everyman@example.com");
	expect(&c, p, "telecom[2].use", "work");
	expect(&c, p, "maritalStatus.coding[0].code", "M");
	expect(&c, p, "extension[0].valueString", "SMITH"); /* mother's maiden name */
	expect(&c, e, "class.code", "IMP");
	expect(&c, e, "class.system", "http://terminology.hl7.org/CodeSystem/v3-ActCode");
	expect(&c, e, "status", "in-progress");
	expect(&c, e, "period.start", "2024-03-12T08:00:00-05:00");
	expect(&c, e, "identifier[0].value", "4000123456");
	expect(&c, e, "subject.reference", ref_of(&c, "Patient", 0));
	expect(&c, e, "participant[0].type[0].coding[0].code", "ATND");
	expect(&c, e, "reasonCode[0].coding[0].code", "R07.9");
	expect(&c, res(&c, "Practitioner", 2), "name[0].family", "ATTEND");
	expect(&c, res(&c, "Practitioner", 2), "identifier[0].system",
	       "http://hl7.org/fhir/sid/us-npi");
	expect(&c, e, "participant[0].individual.reference", ref_of(&c, "Practitioner", 2));
	expect(&c, res(&c, "Location", 0), "name", "4WEST 412 B");
	expect(&c, res(&c, "RelatedPerson", 0), "relationship[0].coding[0].code", "SPS");
	expect(&c, res(&c, "RelatedPerson", 0), "patient.reference", ref_of(&c, "Patient", 0));
	assert_int_equal(count(&c, "AllergyIntolerance"), 2);
	expect(&c, res(&c, "AllergyIntolerance", 0), "code.coding[0].system",
	       "http://www.nlm.nih.gov/research/umls/rxnorm");
	expect(&c, res(&c, "AllergyIntolerance", 0), "criticality", "high");
	expect(&c, res(&c, "AllergyIntolerance", 0), "reaction[0].manifestation[1].text",
	       "Shortness of breath");
	assert_int_equal(count(&c, "Condition"), 2);
	expect(&c, res(&c, "Condition", 0), "code.coding[0].code", "R07.9");
	expect(&c, res(&c, "Condition", 1), "verificationStatus.coding[0].code", "provisional");
	expect(&c, e, "diagnosis[1].condition.reference", ref_of(&c, "Condition", 1));
	expect(&c, res(&c, "MessageHeader", 0), "eventCoding.code", "A01");
	expect(&c, res(&c, "Provenance", 1), "recorded", "2024-03-12T08:30:00-05:00");
	arena_free(c.a);
}

static void
test_syn_update_discharge(void **state)
{
	conv_t u = convert_file("03_adt_a08_update.hl7");
	conv_t d = convert_file("04_adt_a03_discharge.hl7");

	(void)state;
	expect(&u, res(&u, "Patient", 0), "name[1].given[0]", "AL");
	expect(&u, res(&u, "Patient", 0), "name[1].use", "nickname");
	expect(&u, res(&u, "Patient", 0), "maritalStatus.coding[0].code", "D");
	expect(&u, res(&u, "Patient", 0), "telecom[0].use", "mobile");
	expect(&d, res(&d, "Encounter", 0), "status", "finished");
	expect(&d, res(&d, "Encounter", 0), "period.end", "2024-03-15T15:30:00-05:00");
	expect(&d, res(&d, "Encounter", 0), "hospitalization.dischargeDisposition.coding[0].code",
	       "01");
	expect(&d, res(&d, "Condition", 0), "code.coding[0].code", "I20.9");
	arena_free(u.a);
	arena_free(d.a);
}

static void
test_syn_merge(void **state)
{
	conv_t c = convert_file("05_adt_a40_merge.hl7");

	(void)state;
	assert_int_equal(count(&c, "Patient"), 2);
	expect(&c, res(&c, "Patient", 0), "link[0].type", "replaces");
	expect(&c, res(&c, "Patient", 0), "link[0].other.reference", ref_of(&c, "Patient", 1));
	expect(&c, res(&c, "Patient", 1), "identifier[0].value", "100299999");
	expect(&c, res(&c, "Patient", 1), "link[0].type", "replaced-by");
	expect(&c, res(&c, "Patient", 1), "link[0].other.reference", ref_of(&c, "Patient", 0));
	assert_false(fhir_node_bool(at(res(&c, "Patient", 1), "active")));
	arena_free(c.a);
}

static void
test_syn_vitals(void **state)
{
	conv_t c = convert_file("06_oru_r01_vitals.hl7");
	const fhir_node_t *o = res(&c, "Observation", 0), *dr = res(&c, "DiagnosticReport", 0);

	(void)state;
	assert_int_equal(count(&c, "Observation"), 9);
	expect(&c, o, "code.coding[0].code", "8867-4");
	expect(&c, o, "code.coding[0].system", "http://loinc.org");
	expect(&c, o, "valueQuantity.value", "88");
	expect(&c, o, "valueQuantity.unit", "beats per minute");
	expect(&c, o, "valueQuantity.code", "/min");
	expect(&c, o, "valueQuantity.system", "http://unitsofmeasure.org");
	expect(&c, o, "interpretation[0].coding[0].code", "N");
	expect(&c, o, "status", "final");
	expect(&c, o, "effectiveDateTime", "2024-03-12T09:10:00-05:00");
	expect(&c, o, "subject.reference", ref_of(&c, "Patient", 0));
	expect(&c, res(&c, "Observation", 3), "valueQuantity.value", "37.2");
	expect(&c, res(&c, "Observation", 3), "valueQuantity.code", "Cel");
	assert_int_equal(fhir_array_len(at(dr, "result")), 9);
	expect(&c, dr, "result[8].reference", ref_of(&c, "Observation", 8));
	expect(&c, dr, "status", "final");
	expect(&c, dr, "code.coding[0].code", "85353-1");
	arena_free(c.a);
}

static void
test_syn_lab(void **state)
{
	conv_t c = convert_file("07_oru_r01_cbc.hl7");
	conv_t b = convert_file("08_oru_r01_bmp.hl7");
	const fhir_node_t *hgb = res(&c, "Observation", 2), *egfr = res(&b, "Observation", 8);

	(void)state;
	expect(&c, hgb, "code.coding[0].code", "718-7");
	expect(&c, hgb, "valueQuantity.value", "13.9");
	expect(&c, hgb, "valueQuantity.unit", "g/dL");
	expect(&c, hgb, "referenceRange[0].text", "13.5-17.5");
	expect(&c, res(&c, "Observation", 8), "interpretation[0].coding[0].code", "L");
	expect(&c, res(&c, "Observation", 8), "note[0].text",
	       "Platelet count confirmed by smear review.");
	expect(&c, res(&c, "DiagnosticReport", 0), "basedOn[0].reference",
	       ref_of(&c, "ServiceRequest", 0));
	/* SN ">^60": a comparator, not a string as well */
	expect(&b, egfr, "valueQuantity.comparator", ">");
	expect(&b, egfr, "valueQuantity.value", "60");
	assert_null(at(egfr, "valueString"));
	expect(&b, res(&b, "ServiceRequest", 0), "note[0].text",
	       "Specimen slightly hemolyzed; potassium may be falsely elevated.");
	assert_int_equal(fhir_array_len(at(res(&b, "ServiceRequest", 0), "identifier")), 2);
	arena_free(c.a);
	arena_free(b.a);
}

static void
test_syn_vaccination(void **state)
{
	conv_t c = convert_file("09_vxu_v04_immunization.hl7");
	const fhir_node_t *im = res(&c, "Immunization", 0);

	(void)state;
	assert_int_equal(count(&c, "Immunization"), 1);
	expect(&c, im, "vaccineCode.coding[0].code", "20");
	expect(&c, im, "vaccineCode.coding[0].system", "http://hl7.org/fhir/sid/cvx");
	expect(&c, im, "occurrenceDateTime", "2024-05-02T10:15:00-04:00");
	expect(&c, im, "status", "completed");
	expect(&c, im, "lotNumber", "U8812AA");
	expect(&c, im, "expirationDate", "2025-06-30");
	expect(&c, im, "doseQuantity.value", "0.5");
	expect(&c, im, "doseQuantity.unit", "milliliter");
	expect(&c, im, "route.coding[0].code", "IM");
	expect(&c, im, "identifier[0].value", "IZ-88812");
	expect(&c, im, "patient.reference", ref_of(&c, "Patient", 0));
	assert_true(fhir_node_bool(at(im, "primarySource")));
	expect(&c, res(&c, "Observation", 2), "valueDateTime", "2021-08-06");
	expect(&c, res(&c, "Observation", 0), "partOf[0].reference", ref_of(&c, "Immunization", 0));
	expect(&c, res(&c, "Patient", 0), "gender", "female");
	arena_free(c.a);
}

static void
test_syn_order(void **state)
{
	conv_t c = convert_file("10_orm_o01_order.hl7");
	const fhir_node_t *sr = res(&c, "ServiceRequest", 0);

	(void)state;
	assert_int_equal(count(&c, "ServiceRequest"), 1);
	expect(&c, sr, "status", "active");
	expect(&c, sr, "intent", "order");
	expect(&c, sr, "priority", "routine");
	expect(&c, sr, "code.coding[0].code", "58410-2");
	expect(&c, sr, "occurrenceDateTime", "2024-03-12T10:00:00-05:00");
	expect(&c, sr, "reasonReference[0].reference", ref_of(&c, "Condition", 0));
	expect(&c, sr, "subject.reference", ref_of(&c, "Patient", 0));
	arena_free(c.a);
}

static void
test_syn_escapes(void **state)
{
	conv_t c = convert_file("11_adt_a01_escapes_utf8.hl7");
	const fhir_node_t *p = res(&c, "Patient", 0);

	(void)state;
	expect(&c, p, "name[0].family", "MÜLLER-LÜDENSCHEIDT");
	expect(&c, p, "name[0].given[0]", "JOSÉ");
	expect(&c, p, "name[1].family", "O&BRIEN");
	expect(&c, p, "address[0].line[0]", "KÖNIGSALLEE 12~HINTERHAUS");
	expect(&c, p, "birthDate", "1958-12-24");
	expect(&c, res(&c, "Encounter", 0), "class.code", "EMER");
	expect(&c, res(&c, "Encounter", 0), "period.start", "2024-06-05T21:50:00+02:00");
	expect(&c, res(&c, "AllergyIntolerance", 0), "code.text",
	       "Ibuprofen | NSAIDs ^ class \\ related");
	expect(&c, res(&c, "Condition", 0), "code.coding[0].display",
	       "Fracture of neck of femur & hip");
	arena_free(c.a);
}

static void
test_syn_radiology(void **state)
{
	conv_t c = convert_file("12_oru_r01_radiology_report.hl7");
	const fhir_node_t *dr = res(&c, "DiagnosticReport", 0);

	(void)state;
	assert_int_equal(count(&c, "Observation"), 17);
	expect(&c, res(&c, "Observation", 0), "valueString", "EXAMINATION: CT CHEST WITH CONTRAST");
	expect(&c, res(&c, "Observation", 16), "valueCodeableConcept.coding[0].code", "RID3891");
	expect(&c, res(&c, "Observation", 16), "valueCodeableConcept.coding[0].system",
	       "http://radlex.org");
	expect(&c, dr, "resultsInterpreter[0].reference", ref_of(&c, "Practitioner", 1));
	expect(&c, res(&c, "Practitioner", 1), "name[0].family", "RADIOLOGIST");
	expect(&c, dr, "issued", "2024-03-12T14:02:00-05:00");
	assert_int_equal(fhir_array_len(at(dr, "result")), 17);
	arena_free(c.a);
}

static void
test_syn_procedure_roles(void **state)
{
	conv_t c = convert_file("13_adt_a01_procedure_roles.hl7");
	const fhir_node_t *pr = res(&c, "Procedure", 0), *pat = res(&c, "Patient", 0);
	const fhir_node_t *gp = res(&c, "PractitionerRole", 0), *enc = res(&c, "Encounter", 0);

	(void)state;
	/* PR1[Procedure] */
	assert_int_equal(count(&c, "Procedure"), 1);
	expect(&c, pr, "status", "unknown");
	expect(&c, pr, "code.coding[0].code", "0DTJ4ZZ");
	expect(&c, pr, "code.text", "Laparoscopic appendectomy");
	expect(&c, pr, "performedDateTime", "2024-06-10T10:15:00-05:00");
	expect(&c, pr, "performer[0].function.coding[0].code", "88189002");
	expect(&c, pr, "performer[1].function.coding[0].code", "304292004");
	expect(&c, pr, "identifier[0].value", "PROC-5501");
	expect(&c, pr, "partOf[0].identifier.value", "PROC-5500");
	expect(&c, pr, "reasonCode[0].coding[0].code", "K35.80");
	expect(&c, pr, "subject.reference", ref_of(&c, "Patient", 0));
	/* ROL after PR1 and PRT after PR1: more performers */
	assert_int_equal(fhir_array_len(at(pr, "performer")), 5);
	/* ROL PP after PID: the general practitioner, a PractitionerRole */
	expect(&c, gp, "code[0].coding[0].code", "446050000");
	expect(&c, gp, "identifier[0].value", "RL-1001");
	expect(&c, pat, "generalPractitioner[0].reference", ref_of(&c, "PractitionerRole", 0));
	/* PRT PP after PID: a Practitioner (PRT[Patient-GeneralPractitioner-Practitioner]) */
	assert_int_equal(fhir_array_len(at(pat, "generalPractitioner")), 2);
	/* ROL CP and PRT CP: two CareTeams */
	assert_int_equal(count(&c, "CareTeam"), 2);
	expect(&c, res(&c, "CareTeam", 0), "participant[0].role[0].coding[0].code", "CON");
	expect(&c, res(&c, "CareTeam", 1), "participant[0].member.reference",
	       ref_of(&c, "PractitionerRole", 1));
	/* ROL after PV1: an Encounter participant whose individual is a PractitionerRole */
	expect(&c, enc, "participant[1].type[0].coding[0].code", "ATND");
	expect(&c, enc, "participant[1].period.start", "2024-06-10T08:00:00-05:00");
	expect(&c, res(&c, "PractitionerRole", 2), "identifier[0].value", "RL-1003");
	/* GT1: the Account's guarantor, a RelatedPerson */
	expect(&c, res(&c, "Account", 0), "guarantor[0].party.reference",
	       ref_of(&c, "RelatedPerson", 0));
	expect(&c, res(&c, "RelatedPerson", 0), "name[0].family", "CARVER");
	expect(&c, res(&c, "RelatedPerson", 0), "relationship[0].coding[0].code", "SPS");
	arena_free(c.a);
	/* in the ADT_A05 structure the PRT general practitioner is a PractitionerRole */
	c = convert_file("20_adt_a28_general_practitioner.hl7");
	expect(&c, res(&c, "Patient", 0), "generalPractitioner[0].reference",
	       ref_of(&c, "PractitionerRole", 0));
	expect(&c, res(&c, "PractitionerRole", 0), "specialty[0].coding[0].code", "FM");
	assert_int_equal(count(&c, "Practitioner"), 1);
	arena_free(c.a);
}

static void
test_syn_participations(void **state)
{
	conv_t c = convert_file("14_oru_r01_participations.hl7");
	conv_t v = convert_file("15_vxu_v04_participations.hl7");
	const fhir_node_t *obs = res(&c, "Observation", 0), *dr = res(&c, "DiagnosticReport", 0);
	const fhir_node_t *dev = res(&c, "Device", 0), *im = res(&v, "Immunization", 0);

	(void)state;
	expect(&c, res(&c, "Patient", 0), "generalPractitioner[0].reference",
	       ref_of(&c, "PractitionerRole", 0));
	expect(&c, res(&c, "RelatedPerson", 0), "relationship[0].coding[0].code", "CON");
	expect(&c, res(&c, "ServiceRequest", 0), "requester.reference",
	       ref_of(&c, "PractitionerRole", 2));
	expect(&c, dr, "resultsInterpreter[0].reference", ref_of(&c, "PractitionerRole", 3));
	expect(&c, dr, "performer[0].reference", ref_of(&c, "PractitionerRole", 4));
	/* PRT after OBX: the device, the place and the performer of the observation */
	expect(&c, obs, "device.reference", ref_of(&c, "Device", 0));
	expect(&c, dev, "udiCarrier[0].deviceIdentifier", "(01)00643169001763");
	expect(&c, dev, "serialNumber", "SN-552211");
	expect(&c, dev, "manufactureDate", "2020-01-15");
	expect(&c, obs, "extension[0].url",
	       "http://hl7.org/fhir/StructureDefinition/event-location");
	expect(&c, obs, "performer[0].reference", ref_of(&c, "PractitionerRole", 5));
	expect(&c, res(&c, "PractitionerRole", 5), "telecom[0].extension[3].url",
	       "http://hl7.org/fhir/StructureDefinition/iso21090-preferred");
	assert_true(fhir_node_bool(
	    at(res(&c, "PractitionerRole", 5), "telecom[0].extension[3].valueBoolean")));
	expect(&c, res(&c, "PractitionerRole", 5), "identifier[0].value", "MLS-4455");
	/* VXU: the ordering and administering providers are Immunization performers */
	expect(&v, im, "performer[0].function.coding[0].code", "OP");
	expect(&v, im, "performer[0].actor.reference", ref_of(&v, "PractitionerRole", 0));
	expect(&v, im, "performer[1].function.coding[0].code", "AP");
	arena_free(c.a);
	arena_free(v.a);
}

static void
test_syn_administration(void **state)
{
	conv_t c = convert_file("17_ras_o17_administration.hl7");
	conv_t t = convert_file("19_rde_o11_weekly_timing.hl7");
	conv_t g = convert_file("18_dft_p03_guarantor_organization.hl7");
	const fhir_node_t *ma = res(&c, "MedicationAdministration", 0);
	const fhir_node_t *tm = at(res(&t, "MedicationRequest", 0), "dosageInstruction[0].timing");

	(void)state;
	assert_int_equal(count(&c, "MedicationAdministration"), 1);
	expect(&c, ma, "status", "completed");
	expect(&c, ma, "medicationCodeableConcept.coding[0].code", "1659149");
	expect(&c, ma, "effectivePeriod.end", "2024-06-10T16:15:00-05:00");
	expect(&c, ma, "dosage.dose.value", "1");
	expect(&c, ma, "dosage.route.coding[1].code", "IV");
	expect(&c, ma, "identifier[0].value", "RX-5521");
	expect(&c, ma, "meta.security[0].code", "R");
	expect(&c, ma, "subject.reference", ref_of(&c, "Patient", 0));
	/* RPT[Timing] */
	expect(&t, tm, "code.coding[0].code", "BID");
	expect(&t, tm, "repeat.dayOfWeek[0]", "mon");
	expect(&t, tm, "repeat.dayOfWeek[1]", "fri");
	expect(&t, tm, "repeat.periodUnit", "wk");
	expect(&t, tm, "repeat.when[0]", "AC");
	expect(&t, tm, "repeat.offset", "30");
	/* GT1 without a person: an Organization guarantor */
	expect(&g, res(&g, "Account", 0), "guarantor[0].party.reference",
	       ref_of(&g, "Organization", 2));
	expect(&g, res(&g, "Organization", 2), "name", "ACME STEEL WORKS");
	arena_free(c.a);
	arena_free(t.a);
	arena_free(g.a);
}

static void
test_appointment(void **state)
{
	conv_t c = convert_path(TEST_DATA_DIR "/hl7v2/SIU_S12/ms-SIU-S12-01.hl7");
	const fhir_node_t *ap = res(&c, "Appointment", 0);

	(void)state;
	expect(&c, ap, "status", "booked");
	expect(&c, ap, "start", "2021-09-24T09:30:00+02:15");
	expect(&c, ap, "end", "2021-09-24T10:20:00+02:15");
	expect(&c, ap, "identifier[1].value", "36996");
	expect(&c, ap, "serviceType[0].coding[0].code", "76164006");
	expect(&c, ap, "comment", "Appointment booked for emergency procedure");
	expect(&c, ap, "participant[2].actor.reference", ref_of(&c, "Patient", 0));
	/* SCH-12/16, the patient, AIG (a logical reference by AIG-3's identifier), AIL, AIP */
	expect(&c, ap, "participant[3].actor.identifier.value", "5001");
	expect(&c, ap, "participant[3].type[0].coding[0].code", "101");
	expect(&c, ap, "participant[3].period.start", "2021-09-24T09:30:00+02:15");
	assert_int_equal(fhir_array_len(at(ap, "participant")), 6);
	arena_free(c.a);
}

static void
test_document(void **state)
{
	conv_t c = convert_path(TEST_DATA_DIR "/hl7v2/MDM_T02/ms-MDM-T02-01.hl7");
	const fhir_node_t *doc = res(&c, "DocumentReference", 0);

	(void)state;
	expect(&c, doc, "masterIdentifier.value", "1.2.840.317.5947431.51.20080131160038");
	expect(&c, doc, "status", "current");
	expect(&c, doc, "docStatus", "final");
	expect(&c, doc, "content[0].attachment.title", "DI");
	expect(&c, doc, "content[1].attachment.contentType", "application/pdf");
	expect(&c, doc, "subject.reference", ref_of(&c, "Patient", 0));
	expect(&c, doc, "date", "2008-01-31T16:00:00+02:15");
	arena_free(c.a);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_corpus_hl7v2),
	    cmocka_unit_test(test_corpus_synthetic),
	    cmocka_unit_test(test_syn_admit),
	    cmocka_unit_test(test_syn_update_discharge),
	    cmocka_unit_test(test_syn_merge),
	    cmocka_unit_test(test_syn_vitals),
	    cmocka_unit_test(test_syn_lab),
	    cmocka_unit_test(test_syn_vaccination),
	    cmocka_unit_test(test_syn_order),
	    cmocka_unit_test(test_syn_escapes),
	    cmocka_unit_test(test_syn_radiology),
	    cmocka_unit_test(test_syn_procedure_roles),
	    cmocka_unit_test(test_syn_participations),
	    cmocka_unit_test(test_syn_administration),
	    cmocka_unit_test(test_appointment),
	    cmocka_unit_test(test_document),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
