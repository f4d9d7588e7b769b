/* Unit tests for scoring/risk: the RiskAssessment, Device and Provenance of a known patient
 * against an expected file, byte-identical output when rescoring unchanged data, risk bands,
 * "no score", and every element checked against the R4 metadata. `test_risk --emit DIR`
 * writes the resources for the R4 JSON schema check (tests/golden/risk-schema.py). */
#include "config.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fhir/meta.h"
#include "lib/err.h"
#include "scoring/features.h"
#include "scoring/risk.h"
#include "tests/unit/scoring_fixture.h"

#define REF      "2026-01-15T12:00:00Z"
#define EXPECTED TEST_DATA_DIR "/scoring/pce-risk-expected.json"

static const risk_model_t pce_model = {"pce", "2013", NULL, NULL, NULL};

/* What an engine would report for the fixture (made-up contributions in log-odds). */
static const risk_contribution_t pce_contribs[] = {
    {"age", 1.2034},     {"total_cholesterol", 0.4112},
    {"hdl", -0.3521},    {"systolic_bp", 0.2205},
    {"bp_treated", 0.0}, {"smoker", 0.0},
    {"diabetes", 0.0},   {"sex", 0.0},
    {"race", -0.00001},
};
#define NCONTRIBS (sizeof(pce_contribs) / sizeof(pce_contribs[0]))

/* The fixture patient bound with pce.bind and built into resources, all in fx->a. */
static int
build(fx_t *fx, features_binding_t *b, double p, risk_resources_t *out, const char **why)
{
	features_vector_t *v = arena_zalloc(fx->a, sizeof(*v));

	assert_int_equal(features_bind(fx->a, b, fx_input(fx), v), 0);
	return risk_build(fx->a, &pce_model, b, SLICE_LIT("pce-example"), v, p, pce_contribs,
			  NCONTRIBS, out, why);
}

/* The three resources as pretty JSON, one after the other. */
static void
write_all(const risk_resources_t *r, buf_t *out)
{
	buf_init(out, 0);
	assert_int_equal(fhir_json_write(r->risk_assessment, true, out), 0);
	buf_append_cstr(out, "\n");
	assert_int_equal(fhir_json_write(r->device, true, out), 0);
	buf_append_cstr(out, "\n");
	assert_int_equal(fhir_json_write(r->provenance, true, out), 0);
	buf_append_cstr(out, "\n");
}

/* A known patient gives exactly the expected resources (SCORING_UPDATE=1 rewrites the file:
 * review the diff). */
static void
test_expected(void **state)
{
	features_binding_t *b = fx_shipped("pce.bind");
	risk_resources_t r;
	const char *why;
	buf_t got, want = BUF_INIT;
	char chunk[4096];
	size_t n;
	FILE *f;
	fx_t fx;

	(void)state;
	fx_init(&fx, REF);
	fx_add_bundle(&fx, "patient-pce.json");
	assert_int_equal(build(&fx, b, 0.030449, &r, &why), 0);
	assert_null(why);
	write_all(&r, &got);
	if (getenv("SCORING_UPDATE") != NULL && strcmp(getenv("SCORING_UPDATE"), "1") == 0) {
		f = fopen(EXPECTED, "wb");
		assert_non_null(f);
		fwrite(got.data, 1, got.len, f);
		fclose(f);
	}
	f = fopen(EXPECTED, "rb");
	if (f == NULL)
		fail_msg("missing %s (SCORING_UPDATE=1 writes it)", EXPECTED);
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		buf_append(&want, chunk, n);
	fclose(f);
	if (want.len != got.len || memcmp(want.data, got.data, got.len) != 0)
		fail_msg("differs from %s; got:\n%s", EXPECTED, got.data);
	assert_string_equal(r.risk_assessment_id,
			    risk_assessment_id(fx.a, SLICE_LIT("pce-example"), "pce"));
	assert_string_equal(r.device_id, risk_device_id(fx.a, "pce"));
	buf_free(&got);
	buf_free(&want);
	fx_free(&fx);
	features_binding_free(b);
}

/* Rescoring unchanged data later, with the resources in another order, gives the same
 * bytes; a new measurement changes the basis and the occurrence time. */
static void
test_rescore_identical(void **state)
{
	features_binding_t *b = fx_shipped("pce.bind");
	risk_resources_t r1, r2, r3, r4;
	const char *why;
	buf_t j1, j2, j3, j4;
	fx_t fx1, fx2;

	(void)state;
	fx_init(&fx1, REF);
	fx_add_bundle(&fx1, "patient-pce.json");
	assert_int_equal(build(&fx1, b, 0.030449, &r1, &why), 0);
	write_all(&r1, &j1);

	fx_init(&fx2, "2026-03-01T06:00:00Z"); /* later, same age */
	fx_add_bundle(&fx2, "patient-pce.json");
	for (size_t i = 0; i < fx2.nobs / 2; i++) {
		features_res_t t = fx2.obs[i];

		fx2.obs[i] = fx2.obs[fx2.nobs - 1 - i];
		fx2.obs[fx2.nobs - 1 - i] = t;
	}
	assert_int_equal(build(&fx2, b, 0.030449, &r2, &why), 0);
	write_all(&r2, &j2);
	assert_int_equal(j1.len, j2.len);
	assert_memory_equal(j1.data, j2.data, j1.len);

	/* Same data, same probability after rounding: still the same bytes. */
	assert_int_equal(build(&fx2, b, 0.03044951, &r3, &why), 0);
	write_all(&r3, &j3);
	assert_int_equal(j1.len, j3.len);
	assert_memory_equal(j1.data, j3.data, j1.len);

	/* A new HDL: a new basis entry and a new occurrence time, same ids. */
	fx_add(&fx2,
	       "{\"resourceType\":\"Observation\",\"id\":\"hdl-2026\",\"meta\":"
	       "{\"versionId\":\"1\"},\"status\":\"final\",\"code\":{\"coding\":[{\"system\":"
	       "\"http://loinc.org\",\"code\":\"2085-9\"}]},\"effectiveDateTime\":"
	       "\"2026-02-20T09:00:00Z\",\"valueQuantity\":{\"value\":1.4,\"unit\":\"mmol/L\","
	       "\"system\":\"http://unitsofmeasure.org\",\"code\":\"mmol/L\"}}");
	assert_int_equal(build(&fx2, b, 0.028, &r4, &why), 0);
	write_all(&r4, &j4);
	assert_true(j4.len != j1.len || memcmp(j4.data, j1.data, j1.len) != 0);
	assert_non_null(strstr(j4.data, "\"occurrenceDateTime\": \"2026-02-20T09:00:00Z\""));
	assert_non_null(strstr(j4.data, "\"reference\": \"Observation/hdl-2026/_history/1\""));
	assert_null(strstr(j4.data, "hdl-2025"));
	assert_non_null(strstr(j4.data, "HDL cholesterol 54.138 mg/dL"));
	assert_string_equal(r4.risk_assessment_id, r1.risk_assessment_id);
	buf_free(&j1);
	buf_free(&j2);
	buf_free(&j3);
	buf_free(&j4);
	fx_free(&fx1);
	fx_free(&fx2);
	features_binding_free(b);
}

/* The binding's bands give qualitativeRisk (code from risk-probability, text the band). */
static void
test_bands(void **state)
{
	static const struct {
		double p;
		const char *label, *code, *decimal;
	} cases[] = {
	    {0.0, "low", "low", "0.0000"},
	    {0.04994, "low", "low", "0.0499"},
	    {0.04996, "borderline", "moderate", "0.0500"}, /* banded after rounding */
	    {0.0749, "borderline", "moderate", "0.0749"},
	    {0.075, "intermediate", "moderate", "0.0750"},
	    {0.1999, "intermediate", "moderate", "0.1999"},
	    {0.2, "high", "high", "0.2000"},
	    {1.0, "high", "high", "1.0000"},
	};
	features_binding_t *b = fx_shipped("pce.bind");

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		risk_resources_t r;
		const char *why;
		fhir_node_t *pred, *q, *coding;
		fx_t fx;

		fx_init(&fx, REF);
		fx_add_bundle(&fx, "patient-pce.json");
		assert_int_equal(build(&fx, b, cases[i].p, &r, &why), 0);
		pred = fhir_array_at(fhir_object_get_cstr(r.risk_assessment, "prediction"), 0);
		assert_string_equal(
		    fhir_node_text(fhir_object_get_cstr(pred, "probabilityDecimal")).ptr,
		    cases[i].decimal);
		q = fhir_object_get_cstr(pred, "qualitativeRisk");
		coding = fhir_array_at(fhir_object_get_cstr(q, "coding"), 0);
		assert_string_equal(fhir_node_text(fhir_object_get_cstr(coding, "system")).ptr,
				    "http://terminology.hl7.org/CodeSystem/risk-probability");
		if (strcmp(fhir_node_text(fhir_object_get_cstr(coding, "code")).ptr,
			   cases[i].code) != 0 ||
		    strcmp(fhir_node_text(fhir_object_get_cstr(q, "text")).ptr, cases[i].label) !=
			0)
			fail_msg("p %g: got %s/%s", cases[i].p,
				 fhir_node_text(fhir_object_get_cstr(coding, "code")).ptr,
				 fhir_node_text(fhir_object_get_cstr(q, "text")).ptr);
		fx_free(&fx);
	}
	features_binding_free(b);
}

/* No score: a missing input, a probability that is not one, no outcome. */
static void
test_no_score(void **state)
{
	features_binding_t *b = fx_shipped("pce.bind");
	risk_model_t bare = {"x", NULL, NULL, NULL, NULL};
	features_binding_t *no_outcome;
	features_vector_t v;
	risk_resources_t r;
	const char *why;
	char err[256];
	fx_t fx;

	(void)state;
	fx_init(&fx, REF);
	fx_add_bundle(&fx, "patient-pce.json");
	fx.nobs = 2; /* only the two total cholesterol values are left */
	assert_int_equal(build(&fx, b, 0.1, &r, &why), -FG_EINVAL);
	assert_string_equal(why, "missing input hdl: no Observation http://loinc.org|2085-9 in "
				 "the last 2y");
	assert_null(r.risk_assessment);
	fx_free(&fx);

	fx_init(&fx, REF);
	fx_add_bundle(&fx, "patient-pce.json");
	assert_int_equal(build(&fx, b, 1.5, &r, &why), -FG_EINVAL);
	assert_non_null(strstr(why, "probability"));
	assert_int_equal(build(&fx, b, NAN, &r, &why), -FG_EINVAL);
	assert_int_equal(build(&fx, b, -0.1, &r, &why), -FG_EINVAL);
	assert_int_equal(features_binding_parse("x.bind", "input age age\n", 14, NULL, &no_outcome,
						err, sizeof(err)),
			 0);
	assert_int_equal(features_bind(fx.a, no_outcome, fx_input(&fx), &v), 0);
	assert_int_equal(
	    risk_build(fx.a, &bare, no_outcome, SLICE_LIT("p"), &v, 0.5, NULL, 0, &r, &why),
	    -FG_EINVAL);
	/* With the outcome from the model and no bands: no qualitativeRisk; the occurrence
	 * is the reference time (Patient data only). */
	bare.outcome_system = "http://loinc.org";
	bare.outcome_code = "1-8";
	assert_int_equal(
	    risk_build(fx.a, &bare, no_outcome, SLICE_LIT("p"), &v, 0.5, NULL, 0, &r, &why), 0);
	assert_null(fhir_object_get_cstr(
	    fhir_array_at(fhir_object_get_cstr(r.risk_assessment, "prediction"), 0),
	    "qualitativeRisk"));
	assert_string_equal(
	    fhir_node_text(fhir_object_get_cstr(r.risk_assessment, "occurrenceDateTime")).ptr,
	    "2026-01-15T12:00:00.000Z");
	features_binding_free(no_outcome);
	fx_free(&fx);
	features_binding_free(b);
}

/* Data from before 1970 gives a correct Provenance time; contributions that are not numbers
 * are left out of the rationale. */
static void
test_old_data(void **state)
{
	const char *text = "outcome loinc|1-8\ninput d condition snomed|44054006\n";
	const risk_contribution_t nan_contrib[] = {{"d", NAN}};
	features_binding_t *b;
	features_vector_t v;
	risk_resources_t r;
	const char *why;
	char err[256];
	fx_t fx;

	(void)state;
	assert_int_equal(
	    features_binding_parse("o.bind", text, strlen(text), NULL, &b, err, sizeof(err)), 0);
	fx_init(&fx, REF);
	fx_add(&fx, "{\"resourceType\":\"Condition\",\"id\":\"dm\",\"code\":{\"coding\":"
		    "[{\"system\":\"http://snomed.info/sct\",\"code\":\"44054006\"}]},"
		    "\"onsetDateTime\":\"1965-03-02T10:11:12.5+01:00\"}");
	assert_int_equal(features_bind(fx.a, b, fx_input(&fx), &v), 0);
	assert_int_equal(
	    risk_build(fx.a, &pce_model, b, SLICE_LIT("p"), &v, 0.5, nan_contrib, 1, &r, &why), 0);
	assert_string_equal(fhir_node_text(fhir_object_get_cstr(r.provenance, "recorded")).ptr,
			    "1965-03-02T09:11:12.500Z");
	assert_string_equal(
	    fhir_node_text(fhir_object_get_cstr(r.risk_assessment, "occurrenceDateTime")).ptr,
	    "1965-03-02T10:11:12.5+01:00");
	assert_null(fhir_object_get_cstr(
	    fhir_array_at(fhir_object_get_cstr(r.risk_assessment, "prediction"), 0), "rationale"));
	fx_free(&fx);
	features_binding_free(b);
}

static void check_type(const fhir_type_t *t, const fhir_node_t *obj, const char *path);

static void
check_value(const fhir_type_t *t, const fhir_node_t *v, const char *path)
{
	if (t->kind == FHIR_TYPE_PRIMITIVE) {
		fhir_kind_t want = t->json_form == FHIR_JSON_NUMBER ? FHIR_NUMBER
				   : t->json_form == FHIR_JSON_BOOL ? FHIR_BOOL
								    : FHIR_STRING;

		if (fhir_node_kind(v) != want)
			fail_msg("%s: not a JSON %s (%s)", path,
				 want == FHIR_STRING ? "string" : "number or boolean", t->name);
		return;
	}
	if (fhir_node_kind(v) != FHIR_OBJECT)
		fail_msg("%s: not an object (%s)", path, t->name);
	check_type(t, v, path);
}

/* Every member is an R4 element of the type, with the right cardinality and JSON kind, and
 * every required element is there. */
static void
check_type(const fhir_type_t *t, const fhir_node_t *obj, const char *path)
{
	for (size_t i = 0; i < fhir_object_count(obj); i++) {
		slice_t key = fhir_object_key_at(obj, i);
		const fhir_node_t *v = fhir_object_value_at(obj, i), *item;
		const fhir_elem_t *e;
		const fhir_type_t *et;
		char *sub;
		size_t k;

		if (t->kind == FHIR_TYPE_RESOURCE && slice_eq_cstr(key, "resourceType"))
			continue;
		sub = xasprintf("%s.%.*s", path, (int)key.len, key.ptr);
		e = fhir_meta_elem(t, key);
		if (e == NULL)
			fail_msg("%s: not an element of %s", sub, t->name);
		et = fhir_meta_elem_type(t, e);
		assert_non_null(et);
		if (e->flags & FHIR_ELEM_ARRAY) {
			if (fhir_node_kind(v) != FHIR_ARRAY || fhir_array_len(v) == 0)
				fail_msg("%s: should be a non-empty array", sub);
			FHIR_ARRAY_FOREACH(v, k, item) {
				check_value(et, item, sub);
			}
		} else {
			if (fhir_node_kind(v) == FHIR_ARRAY)
				fail_msg("%s: should not be an array", sub);
			check_value(et, v, sub);
		}
		free(sub);
	}
	for (size_t i = 0; i < t->nelems; i++)
		if ((t->elems[i].flags & FHIR_ELEM_REQUIRED) &&
		    fhir_object_get_cstr(obj, t->elems[i].name) == NULL)
			fail_msg("%s: required element %s missing", path, t->elems[i].name);
}

static void
check_resource(const fhir_node_t *res)
{
	slice_t type = fhir_resource_type(res);
	const fhir_type_t *t = fhir_meta_type(type);
	char *path = xasprintf("%.*s", (int)type.len, type.ptr);

	assert_non_null(t);
	check_type(t, res, path);
	free(path);
}

static void
test_r4_metadata(void **state)
{
	features_binding_t *b = fx_shipped("pce.bind");
	risk_resources_t r;
	const char *why;
	fx_t fx;

	(void)state;
	fx_init(&fx, REF);
	fx_add_bundle(&fx, "patient-pce.json");
	assert_int_equal(build(&fx, b, 0.25, &r, &why), 0);
	check_resource(r.risk_assessment);
	check_resource(r.device);
	check_resource(r.provenance);
	fx_free(&fx);
	features_binding_free(b);
}

/* --emit DIR: writes the fixture's resources as DIR/<type>.json for the schema check. */
static int
emit(const char *dir)
{
	features_binding_t *b = fx_shipped("pce.bind");
	risk_resources_t r;
	const char *why;
	fx_t fx;

	fx_init(&fx, REF);
	fx_add_bundle(&fx, "patient-pce.json");
	if (build(&fx, b, 0.030449, &r, &why) != 0)
		return 1;
	const fhir_node_t *all[] = {r.risk_assessment, r.device, r.provenance};
	for (size_t i = 0; i < 3; i++) {
		slice_t type = fhir_resource_type(all[i]);
		char *path = xasprintf("%s/%.*s.json", dir, (int)type.len, type.ptr);
		FILE *f = fopen(path, "wb");
		buf_t out = BUF_INIT;

		if (f == NULL || fhir_json_write(all[i], true, &out) != 0)
			return 1;
		fwrite(out.data, 1, out.len, f);
		fclose(f);
		printf("%s\n", path);
		buf_free(&out);
		free(path);
	}
	fx_free(&fx);
	features_binding_free(b);
	return 0;
}

int
main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_expected),    cmocka_unit_test(test_rescore_identical),
	    cmocka_unit_test(test_bands),       cmocka_unit_test(test_no_score),
	    cmocka_unit_test(test_r4_metadata), cmocka_unit_test(test_old_data),
	};

	if (argc == 3 && strcmp(argv[1], "--emit") == 0)
		return emit(argv[2]);
	return cmocka_run_group_tests_name("risk", tests, NULL, NULL);
}
