/* Unit tests for scoring/features: the binding file format and its errors, and binding a
 * patient's resources to model inputs (windows, components, units, conditions, smoking,
 * medications, race, age, missing inputs). */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "lib/err.h"
#include "scoring/features.h"
#include "tests/unit/scoring_fixture.h"

#define REF "2026-01-15T12:00:00Z"

static features_binding_t *
bind_text(const char *text)
{
	features_binding_t *b = NULL;
	char err[512];

	if (features_binding_parse("t.bind", text, strlen(text), MODELS_DIR, &b, err,
				   sizeof(err)) != 0)
		fail_msg("%s", err);
	return b;
}

/* An Observation with a quantity value. */
static void
add_obs(fx_t *fx, const char *id, unsigned ver, const char *code, const char *when,
	const char *value, const char *unit)
{
	fx_add(fx, arena_printf(fx->a,
				"{\"resourceType\":\"Observation\",\"id\":\"%s\",\"meta\":"
				"{\"versionId\":\"%u\"},\"status\":\"final\",\"code\":{\"coding\":"
				"[{\"system\":\"http://loinc.org\",\"code\":\"%s\"}]},"
				"\"effectiveDateTime\":\"%s\",\"valueQuantity\":{\"value\":%s,"
				"\"unit\":\"%s\",\"system\":\"http://unitsofmeasure.org\","
				"\"code\":\"%s\"}}",
				id, ver, code, when, value, unit, unit));
}

static void
add_condition(fx_t *fx, const char *id, const char *system, const char *code, const char *clinical,
	      const char *verification)
{
	fx_add(fx,
	       arena_printf(
		   fx->a,
		   "{\"resourceType\":\"Condition\",\"id\":\"%s\",\"meta\":{\"versionId\":\"1\"},"
		   "%s%s%s%s%s%s\"code\":{\"coding\":[{\"system\":\"%s\",\"code\":\"%s\"}]},"
		   "\"recordedDate\":\"2020-05-01\"}",
		   id,
		   clinical ? "\"clinicalStatus\":{\"coding\":[{\"system\":\"http://"
			      "terminology.hl7.org/CodeSystem/condition-clinical\",\"code\":\""
			    : "",
		   clinical ? clinical : "", clinical ? "\"}]}," : "",
		   verification
		       ? "\"verificationStatus\":{\"coding\":[{\"system\":\"http://"
			 "terminology.hl7.org/CodeSystem/condition-ver-status\",\"code\":\""
		       : "",
		   verification ? verification : "", verification ? "\"}]}," : "", system, code));
}

static void
add_patient(fx_t *fx, const char *birth, const char *gender, const char *race)
{
	fx_add(
	    fx,
	    arena_printf(
		fx->a,
		"{\"resourceType\":\"Patient\",\"id\":\"p1\",\"meta\":{\"versionId\":\"4\"},"
		"%s%s%s\"gender\":\"%s\",\"birthDate\":\"%s\"}",
		race ? "\"extension\":[{\"url\":\"http://hl7.org/fhir/us/core/StructureDefinition/"
		       "us-core-race\",\"extension\":[{\"url\":\"ombCategory\",\"valueCoding\":{"
		       "\"system\":\"urn:oid:2.16.840.1.113883.6.238\",\"code\":\""
		     : "",
		race ? race : "", race ? "\"}},{\"url\":\"text\",\"valueString\":\"x\"}]}]," : "",
		gender, birth));
}

static const feature_t *
get(const features_vector_t *v, const char *name)
{
	const feature_t *f = features_vector_get(v, name);

	if (f == NULL)
		fail_msg("no feature %s", name);
	return f;
}

/* The shipped bindings load and name the engine's inputs; SAPS II needs its site's code. */
static void
test_shipped_bindings(void **state)
{
	static const char *const pce[] = {
	    "age",         "sex",        "race",   "total_cholesterol", "hdl",
	    "systolic_bp", "bp_treated", "smoker", "diabetes"};
	features_binding_t *b;
	features_outcome_t oc;
	char err[512], *path;
	const char *label, *code;

	(void)state;
	for (int m = 0; m < 2; m++) {
		/* Framingham has no race input (its model does not use one). */
		size_t n = m == 0 ? 9 : 8;

		b = fx_shipped(m == 0 ? "pce.bind" : "framingham.bind");
		assert_int_equal(features_binding_count(b), n);
		for (size_t i = 0, j = 0; i < n; i++, j++) {
			if (m == 1 && strcmp(pce[j], "race") == 0)
				j++;
			assert_string_equal(features_binding_input_name(b, i), pce[j]);
		}
		assert_null(features_binding_input_name(b, n));
		oc = features_binding_outcome(b);
		assert_non_null(oc.code);
		/* The shipped list has ingredients such as lisinopril and nebivolol. */
		assert_true(features_binding_uses_code(
		    b, FEATURES_MEDICATION_REQUEST,
		    SLICE_LIT("http://www.nlm.nih.gov/research/umls/rxnorm"), SLICE_LIT("29046")));
		assert_true(features_binding_uses_code(
		    b, FEATURES_MEDICATION_STATEMENT,
		    SLICE_LIT("http://www.nlm.nih.gov/research/umls/rxnorm"), SLICE_LIT("31555")));
		features_binding_free(b);
	}
	b = fx_shipped("pce.bind");
	oc = features_binding_outcome(b);
	assert_string_equal(oc.system, "http://loinc.org");
	assert_string_equal(oc.code, "79423-0");
	assert_string_equal(oc.display, "10-year ASCVD risk");
	assert_true(features_binding_band(b, 0.0499, &label, &code));
	assert_string_equal(label, "low");
	assert_string_equal(code, "low");
	assert_true(features_binding_band(b, 0.05, &label, &code));
	assert_string_equal(label, "borderline");
	assert_string_equal(code, "moderate");
	assert_true(features_binding_band(b, 0.1999, &label, &code));
	assert_string_equal(label, "intermediate");
	assert_string_equal(code, "moderate");
	assert_true(features_binding_band(b, 0.2, &label, &code));
	assert_string_equal(label, "high");
	assert_string_equal(code, "high");
	assert_true(features_binding_band(b, 1.0, &label, &code));
	assert_string_equal(code, "high");
	features_binding_free(b);

	path = xasprintf("%s/saps2.bind", MODELS_DIR);
	assert_int_equal(features_binding_load(path, &b, err, sizeof(err)), -FG_ECONFIG);
	assert_null(b);
	assert_non_null(strstr(err, "saps2.bind:8:31: the code of saps2_score is site-configured"));
	free(path);
	/* With the site's code filled in, it loads. */
	b = bind_text(
	    "input saps2_score observation http://hospital.example/codes|saps2 within 2d\n"
	    "risk low < 0.1 as low\nrisk high as high\n");
	assert_int_equal(features_binding_count(b), 1);
	features_binding_free(b);
}

/* Each problem is reported as file:line:col: what. */
static void
test_binding_errors(void **state)
{
	static const struct {
		const char *text;
		const char *want;
	} cases[] = {
	    {"", "t.bind:1:1: a binding needs at least one `input` line"},
	    {"# nothing\nmodel pce\n",
	     "t.bind:2:1: expected `input`, `outcome` or `risk`, got 'model'"},
	    {"input age years\n", "t.bind:1:11: expected where age comes from"},
	    {"input age age\ninput age gender\n", "t.bind:2:7: input age is bound twice"},
	    {"input hdl observation 2085-9\n", "t.bind:1:23: expected a code as system|code"},
	    {"input hdl observation lonc|2085-9\n", "t.bind:1:23: unknown code system 'lonc'"},
	    {"input hdl observation loinc|2085-9 within 2 years\n",
	     "t.bind:1:43: expected a duration such as 2y"},
	    {"input hdl observation loinc|2085-9 convert mmol/L 38.67\n",
	     "t.bind:1:36: say the input's `unit` before `convert`"},
	    {"input hdl observation loinc|2085-9 unit mg/dL convert mmol/L x\n",
	     "t.bind:1:62: expected the factor to mg/dL"},
	    {"input hdl observation loinc|2085-9 unit mg/dL frobnicate\n",
	     "t.bind:1:47: unexpected 'frobnicate' in input hdl"},
	    {"input age age within 2y\n", "t.bind:1:15: `within` does not apply to input age"},
	    {"input hdl observation loinc|2085-9 missing default high\n",
	     "t.bind:1:52: expected a number as the default of hdl"},
	    {"input sex gender missing default unknown\n",
	     "t.bind:1:34: the default of a sex is female or male"},
	    {"input s observation-flag loinc|72166-2\n",
	     "t.bind:1:9: observation-flag needs `yes`"},
	    {"input x age label \"open\n", "t.bind:1:19: close the text with a double quote"},
	    {"input bp medication list no-such-file.csv\n", "t.bind:1:26: cannot read the list"},
	    {"input x age\nrisk low < 0.5 as small\n",
	     "t.bind:2:19: expected a risk-probability code"},
	    {"input x age\nrisk low < 0.5 as low\nrisk mid < 0.4 as moderate\n",
	     "t.bind:3:12: bands go up"},
	    {"input x age\nrisk low < 0.5 as low\n",
	     "t.bind:2:1: the last `risk` band has no bound"},
	    {"input x age\nrisk all as low\nrisk more as high\n",
	     "t.bind:3:6: a band after the last one"},
	    {"input x age\noutcome loinc|1-8 \"a\" extra\n",
	     "t.bind:2:23: expected the end of the line after the outcome"},
	};
	char err[512];

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		features_binding_t *b = (features_binding_t *)1;
		int rc = features_binding_parse("t.bind", cases[i].text, strlen(cases[i].text),
						MODELS_DIR, &b, err, sizeof(err));

		if (rc != -FG_ECONFIG || strncmp(err, cases[i].want, strlen(cases[i].want)) != 0)
			fail_msg("case %zu: rc %d, got \"%s\", want \"%s...\"", i, rc, err,
				 cases[i].want);
		assert_null(b);
	}
}

/* A bad line in a list file is reported at its own file, line and column. */
static void
test_list_errors(void **state)
{
	char dir[] = "/tmp/fg-features-XXXXXX", *csv, *want, err[512];
	features_binding_t *b = NULL;
	const char *text = "input bp medication list meds.csv\n";
	FILE *f;

	(void)state;
	assert_non_null(mkdtemp(dir));
	csv = xasprintf("%s/meds.csv", dir);
	f = fopen(csv, "w");
	assert_non_null(f);
	fputs("rxnorm,name\n# comment\n29046,lisinopril\n  abc,oops\n", f);
	fclose(f);
	assert_int_equal(
	    features_binding_parse("t.bind", text, strlen(text), dir, &b, err, sizeof(err)),
	    -FG_ECONFIG);
	want = xasprintf("%s:4:3: expected an RxNorm code (digits) before the comma", csv);
	assert_string_equal(err, want);
	assert_null(b);
	remove(csv);
	rmdir(dir);
	free(csv);
	free(want);
}

/* The latest Observation inside the window counts; older, later than the reference time,
 * preliminary and entered-in-error ones do not. */
static void
test_latest_in_window(void **state)
{
	features_binding_t *b =
	    bind_text("input total_cholesterol observation loinc|2093-3 within 2y unit mg/dL\n");
	features_vector_t v;
	fx_t fx;
	const feature_t *f;

	(void)state;
	fx_init(&fx, REF);
	add_obs(&fx, "c-old", 1, "2093-3", "2023-06-01", "250", "mg/dL");
	add_obs(&fx, "c-1", 1, "2093-3", "2025-01-10T08:00:00Z", "200", "mg/dL");
	add_obs(&fx, "c-2", 3, "2093-3", "2025-07-01T08:30:00+02:00", "213", "mg/dL");
	add_obs(&fx, "c-future", 1, "2093-3", "2026-02-01", "300", "mg/dL");
	add_obs(&fx, "hdl", 1, "2085-9", "2025-12-01", "50", "mg/dL");
	fx_add(&fx, "{\"resourceType\":\"Observation\",\"id\":\"c-prelim\",\"status\":"
		    "\"preliminary\",\"code\":{\"coding\":[{\"system\":\"http://loinc.org\","
		    "\"code\":\"2093-3\"}]},\"effectiveDateTime\":\"2025-12-01\","
		    "\"valueQuantity\":{\"value\":180,\"code\":\"mg/dL\"}}");
	fx_add(&fx, "{\"resourceType\":\"Observation\",\"id\":\"c-eie\",\"status\":"
		    "\"entered-in-error\",\"code\":{\"coding\":[{\"system\":\"http://loinc.org\","
		    "\"code\":\"2093-3\"}]},\"effectiveDateTime\":\"2025-12-02\","
		    "\"valueQuantity\":{\"value\":181,\"code\":\"mg/dL\"}}");
	assert_int_equal(features_bind(fx.a, b, fx_input(&fx), &v), 0);
	assert_null(v.no_score);
	f = get(&v, "total_cholesterol");
	assert_int_equal(f->status, FEATURE_FOUND);
	assert_int_equal(f->kind, FEATURE_NUMBER);
	assert_true(f->number == 213);
	assert_string_equal(f->unit, "mg/dL");
	assert_int_equal(f->nbasis, 1);
	assert_string_equal(f->basis[0], "Observation/c-2/_history/3");
	assert_string_equal(f->source_time, "2025-07-01T08:30:00+02:00");
	assert_int_equal(f->source_ms, fx_ms("2025-07-01T06:30:00Z"));
	assert_string_equal(v.source_time, "2025-07-01T08:30:00+02:00");
	assert_int_equal(v.nbasis, 1);
	assert_string_equal(v.basis[0], "Observation/c-2/_history/3");

	/* Later, the Observation after the first reference time is the latest in the window;
	 * later still, nothing is left in it. */
	fx.in.ref_ms = fx_ms("2026-03-01");
	assert_int_equal(features_bind(fx.a, b, &fx.in, &v), 0);
	assert_true(get(&v, "total_cholesterol")->number == 300);
	fx.in.ref_ms = fx_ms("2029-01-01");
	assert_int_equal(features_bind(fx.a, b, &fx.in, &v), 0);
	f = get(&v, "total_cholesterol");
	assert_int_equal(f->kind, FEATURE_MISSING);
	assert_int_equal(f->status, FEATURE_ABSENT);
	assert_string_equal(v.no_score, "missing input total_cholesterol: no Observation "
					"http://loinc.org|2093-3 in the last 2y");
	assert_int_equal(v.nbasis, 0);
	assert_null(v.source_time);
	fx_free(&fx);
	features_binding_free(b);
}

/* Calendar windows: 2y before 2024-02-29 is 2022-02-28 (clamped), inclusive. */
static void
test_window_edges(void **state)
{
	features_binding_t *b =
	    bind_text("input x observation loinc|1-8 within 2y\ninput y observation loinc|2-6 "
		      "within 1mo\ninput z observation loinc|3-4 within 36h\n");
	features_vector_t v;
	fx_t fx;

	(void)state;
	fx_init(&fx, "2024-02-29T10:00:00Z");
	add_obs(&fx, "x1", 1, "1-8", "2022-02-28T10:00:00Z", "1", "1");
	add_obs(&fx, "y1", 1, "2-6", "2024-01-29T09:59:59Z", "1", "1");
	add_obs(&fx, "z1", 1, "3-4", "2024-02-27T22:00:00Z", "1", "1");
	assert_int_equal(features_bind(fx.a, b, fx_input(&fx), &v), 0);
	assert_int_equal(get(&v, "x")->status, FEATURE_FOUND);
	assert_int_equal(get(&v, "y")->status, FEATURE_ABSENT);
	assert_int_equal(get(&v, "z")->status, FEATURE_FOUND);
	fx_free(&fx);
	features_binding_free(b);
}

/* A panel Observation with a diastolic and a systolic component. */
static void
add_panel(fx_t *fx, const char *code, const char *when, const char *systolic)
{
	fx_add(fx, arena_printf(
		       fx->a,
		       "{\"resourceType\":\"Observation\",\"id\":\"bp1\",\"meta\":{\"versionId\":"
		       "\"2\"},\"status\":\"final\",\"code\":{\"coding\":[{\"system\":"
		       "\"http://loinc.org\",\"code\":\"%s\"}]},\"effectiveDateTime\":\"%s\","
		       "\"component\":[{\"code\":{\"coding\":[{\"system\":\"http://loinc.org\","
		       "\"code\":\"8462-4\"}]},\"valueQuantity\":{\"value\":82,\"code\":"
		       "\"mm[Hg]\"}},{\"code\":{\"coding\":[{\"system\":\"http://loinc.org\","
		       "\"code\":\"8480-6\"}]},\"valueQuantity\":{\"value\":%s,\"unit\":"
		       "\"mmHg\",\"system\":\"http://unitsofmeasure.org\",\"code\":\"mm[Hg]\"}}]}",
		       code, when, systolic));
}

/* Systolic pressure from the blood-pressure panel's component; a panel the binding does not
 * name is not used; a standalone systolic Observation is. */
static void
test_component(void **state)
{
	features_binding_t *pce = fx_shipped("pce.bind");
	features_binding_t *any =
	    bind_text("input systolic_bp observation loinc|8480-6 unit mm[Hg]\n");
	features_vector_t v;
	const feature_t *f;
	fx_t fx;

	(void)state;
	fx_init(&fx, REF);
	add_panel(&fx, "85354-9", "2025-11-02T09:00:00Z", "128");
	assert_int_equal(features_bind(fx.a, pce, fx_input(&fx), &v), 0);
	f = get(&v, "systolic_bp");
	assert_int_equal(f->status, FEATURE_FOUND);
	assert_true(f->number == 128);
	assert_string_equal(f->basis[0], "Observation/bp1/_history/2");
	assert_true(features_binding_uses_resource(pce, fx.obs[0].node));
	fx_free(&fx);

	/* Another panel code: ignored by pce (panel named), used by a binding naming none. */
	fx_init(&fx, REF);
	add_panel(&fx, "99999-9", "2025-11-02T09:00:00Z", "131");
	assert_int_equal(features_bind(fx.a, pce, fx_input(&fx), &v), 0);
	assert_int_equal(get(&v, "systolic_bp")->kind, FEATURE_MISSING);
	assert_int_equal(features_bind(fx.a, any, fx_input(&fx), &v), 0);
	assert_true(get(&v, "systolic_bp")->number == 131);
	/* A later standalone systolic Observation wins over the panel. */
	add_obs(&fx, "sys2", 5, "8480-6", "2025-12-24", "140", "mm[Hg]");
	assert_int_equal(features_bind(fx.a, pce, fx_input(&fx), &v), 0);
	assert_true(get(&v, "systolic_bp")->number == 140);
	fx_free(&fx);
	features_binding_free(pce);
	features_binding_free(any);
}

/* mmol/L is converted with the binding's factor, mg/dL kept; an unknown unit refuses the
 * input (no fallback to an older value) and so the score. */
static void
test_units(void **state)
{
	features_binding_t *pce = fx_shipped("pce.bind");
	features_vector_t v;
	const feature_t *f;
	fx_t fx;

	(void)state;
	fx_init(&fx, REF);
	add_obs(&fx, "tc", 1, "2093-3", "2025-10-01", "5.5", "mmol/L");
	add_obs(&fx, "hdl", 1, "2085-9", "2025-10-01", "50", "mg/dL");
	assert_int_equal(features_bind(fx.a, pce, fx_input(&fx), &v), 0);
	f = get(&v, "total_cholesterol");
	assert_int_equal(f->status, FEATURE_FOUND);
	assert_float_equal(f->number, 5.5 * 38.67, 1e-9);
	assert_true(get(&v, "hdl")->number == 50);
	fx_free(&fx);

	fx_init(&fx, REF);
	add_obs(&fx, "tc-old", 1, "2093-3", "2025-01-01", "190", "mg/dL");
	add_obs(&fx, "tc", 1, "2093-3", "2025-10-01", "2.1", "g/L");
	assert_int_equal(features_bind(fx.a, pce, fx_input(&fx), &v), 0);
	f = get(&v, "total_cholesterol");
	assert_int_equal(f->kind, FEATURE_MISSING);
	assert_int_equal(f->status, FEATURE_INVALID);
	assert_string_equal(f->reason, "unit 'g/L' cannot be converted to mg/dL");
	assert_int_equal(f->nbasis, 0);
	/* age, sex are missing first (no Patient): the first input without a value is named. */
	assert_string_equal(v.no_score, "missing input age: no Patient");
	fx_free(&fx);

	/* A value with a comparator, or without a unit, is refused too. */
	fx_init(&fx, REF);
	fx_add(&fx, "{\"resourceType\":\"Observation\",\"id\":\"tc\",\"status\":\"final\","
		    "\"code\":{\"coding\":[{\"system\":\"http://loinc.org\",\"code\":\"2093-3\"}]},"
		    "\"effectiveDateTime\":\"2025-10-01\",\"valueQuantity\":{\"value\":400,"
		    "\"comparator\":\">\",\"code\":\"mg/dL\"}}");
	fx_add(&fx, "{\"resourceType\":\"Observation\",\"id\":\"hdl\",\"status\":\"final\","
		    "\"code\":{\"coding\":[{\"system\":\"http://loinc.org\",\"code\":\"2085-9\"}]},"
		    "\"effectiveDateTime\":\"2025-10-01\",\"valueQuantity\":{\"value\":40}}");
	assert_int_equal(features_bind(fx.a, pce, fx_input(&fx), &v), 0);
	assert_int_equal(get(&v, "total_cholesterol")->status, FEATURE_INVALID);
	assert_int_equal(get(&v, "hdl")->status, FEATURE_INVALID);
	assert_string_equal(get(&v, "hdl")->reason, "the value has no unit (mg/dL expected)");
	fx_free(&fx);
	features_binding_free(pce);
}

/* The full PCE fixture; the resources in any order and the binding lines in any order give
 * the same values and basis. */
static void
test_any_order(void **state)
{
	features_binding_t *pce = fx_shipped("pce.bind");
	features_binding_t *rev;
	features_vector_t v1, v2, v3;
	fx_t fx;
	char *text = NULL;
	FILE *f;
	size_t len = 0;

	(void)state;
	fx_init(&fx, REF);
	fx_add_bundle(&fx, "patient-pce.json");
	assert_int_equal(features_bind(fx.a, pce, fx_input(&fx), &v1), 0);
	assert_null(v1.no_score);
	assert_true(get(&v1, "age")->number == 55);
	assert_string_equal(get(&v1, "sex")->string, "female");
	assert_string_equal(get(&v1, "race")->string, "african-american");
	assert_true(get(&v1, "hdl")->number == 50);
	assert_true(get(&v1, "total_cholesterol")->number == 213);
	assert_true(get(&v1, "systolic_bp")->number == 120);
	assert_true(get(&v1, "bp_treated")->number == 0);
	assert_true(get(&v1, "smoker")->number == 0);
	assert_true(get(&v1, "diabetes")->number == 0);

	/* Reverse every array. */
	for (size_t i = 0; i < fx.nobs / 2; i++) {
		features_res_t t = fx.obs[i];

		fx.obs[i] = fx.obs[fx.nobs - 1 - i];
		fx.obs[fx.nobs - 1 - i] = t;
	}
	for (size_t i = 0; i < fx.ncond / 2; i++) {
		features_res_t t = fx.cond[i];

		fx.cond[i] = fx.cond[fx.ncond - 1 - i];
		fx.cond[fx.ncond - 1 - i] = t;
	}
	assert_int_equal(features_bind(fx.a, pce, fx_input(&fx), &v2), 0);
	assert_int_equal(v1.nbasis, v2.nbasis);
	for (size_t i = 0; i < v1.nbasis; i++)
		assert_string_equal(v1.basis[i], v2.basis[i]);
	assert_string_equal(v1.source_time, v2.source_time);
	for (size_t i = 0; i < v1.n; i++) {
		assert_int_equal(v1.items[i].kind, v2.items[i].kind);
		assert_true(v1.items[i].number == v2.items[i].number);
	}

	/* The same binding with its input lines reversed. */
	f = open_memstream(&text, &len);
	for (size_t i = features_binding_count(pce); i-- > 0;) {
		static const char *const lines[] = {
		    "input age age",
		    "input sex gender",
		    "input race race missing default other",
		    "input total_cholesterol observation loinc|2093-3 within 2y unit mg/dL convert "
		    "mmol/L 38.67",
		    "input hdl observation loinc|2085-9 within 2y unit mg/dL convert mmol/L 38.67",
		    "input systolic_bp observation loinc|8480-6 panel loinc|85354-9 within 1y unit "
		    "mm[Hg]",
		    "input bp_treated medication list antihypertensives.csv",
		    "input smoker observation-flag loinc|72166-2 within 2y yes snomed|449868002 "
		    "snomed|77176002",
		    "input diabetes condition snomed|44054006 snomed|73211009 icd10|E10* "
		    "icd10|E11*",
		};
		fprintf(f, "%s\n", lines[i]);
	}
	fclose(f);
	rev = bind_text(text);
	assert_int_equal(features_bind(fx.a, rev, &fx.in, &v3), 0);
	assert_string_equal(v3.items[0].name, "diabetes");
	for (size_t i = 0; i < v1.n; i++) {
		const feature_t *a = &v1.items[i], *c = get(&v3, a->name);

		assert_int_equal(a->kind, c->kind);
		assert_true(a->number == c->number);
	}
	assert_int_equal(v1.nbasis, v3.nbasis);
	for (size_t i = 0; i < v1.nbasis; i++)
		assert_string_equal(v1.basis[i], v3.basis[i]);
	free(text);
	features_binding_free(rev);
	fx_free(&fx);
	features_binding_free(pce);
}

/* Diabetes from SNOMED or an ICD-10 prefix; inactive, refuted and entered-in-error
 * Conditions do not count; no clinicalStatus counts. */
static void
test_conditions(void **state)
{
	features_binding_t *pce = fx_shipped("pce.bind");
	features_vector_t v;
	const feature_t *f;
	fx_t fx;

	(void)state;
	fx_init(&fx, REF);
	add_condition(&fx, "d-inactive", "http://snomed.info/sct", "44054006", "inactive", NULL);
	add_condition(&fx, "d-resolved", "http://hl7.org/fhir/sid/icd-10", "E11.9", "resolved",
		      NULL);
	add_condition(&fx, "d-eie", "http://snomed.info/sct", "73211009", "active",
		      "entered-in-error");
	add_condition(&fx, "d-refuted", "http://hl7.org/fhir/sid/icd-10-cm", "E10.9", NULL,
		      "refuted");
	add_condition(&fx, "htn", "http://snomed.info/sct", "38341003", "active", NULL);
	add_condition(&fx, "e13", "http://hl7.org/fhir/sid/icd-10", "E13.9", "active", NULL);
	add_condition(&fx, "e1", "http://hl7.org/fhir/sid/icd-10", "E1", "active", NULL);
	assert_int_equal(features_bind(fx.a, pce, fx_input(&fx), &v), 0);
	f = get(&v, "diabetes");
	assert_int_equal(f->status, FEATURE_FOUND);
	assert_true(f->number == 0);
	assert_int_equal(f->nbasis, 0);

	add_condition(&fx, "d-icd", "http://hl7.org/fhir/sid/icd-10", "E11.65", "recurrence", NULL);
	assert_int_equal(features_bind(fx.a, pce, fx_input(&fx), &v), 0);
	f = get(&v, "diabetes");
	assert_true(f->number == 1);
	assert_int_equal(f->nbasis, 1);
	assert_string_equal(f->basis[0], "Condition/d-icd/_history/1");
	assert_string_equal(f->source_time, "2020-05-01");

	add_condition(&fx, "d-snomed", "http://snomed.info/sct", "44054006", NULL, "confirmed");
	add_condition(&fx, "d-cm", "http://hl7.org/fhir/sid/icd-10-cm", "E10", "relapse", NULL);
	assert_int_equal(features_bind(fx.a, pce, fx_input(&fx), &v), 0);
	f = get(&v, "diabetes");
	assert_true(f->number == 1);
	assert_int_equal(f->nbasis, 3);
	assert_string_equal(f->basis[0], "Condition/d-cm/_history/1");
	assert_string_equal(f->basis[1], "Condition/d-icd/_history/1");
	assert_string_equal(f->basis[2], "Condition/d-snomed/_history/1");
	assert_true(features_binding_uses_resource(pce, fx.cond[0].node));
	assert_false(features_binding_uses_resource(pce, fx.cond[4].node)); /* hypertension */
	fx_free(&fx);
	features_binding_free(pce);
}

static void
add_smoking(fx_t *fx, const char *id, const char *when, const char *snomed)
{
	fx_add(fx, arena_printf(
		       fx->a,
		       "{\"resourceType\":\"Observation\",\"id\":\"%s\",\"status\":\"final\","
		       "\"code\":{\"coding\":[{\"system\":\"http://loinc.org\",\"code\":"
		       "\"72166-2\"}]},\"effectiveDateTime\":\"%s\",\"valueCodeableConcept\":"
		       "{\"coding\":[{\"system\":\"http://snomed.info/sct\",\"code\":\"%s\"}]}}",
		       id, when, snomed));
}

/* Every current-smoker code gives 1, others 0; the latest Observation decides. */
static void
test_smoking(void **state)
{
	static const char *const yes[] = {"449868002",       "77176002",        "428041000124106",
					  "428071000124103", "428061000124105", "65568007"};
	static const char *const no[] = {"8517006", "266919005", "77176002x"};
	features_binding_t *pce = fx_shipped("pce.bind");
	features_vector_t v;
	fx_t fx;

	(void)state;
	for (size_t i = 0; i < 6 + 3; i++) {
		fx_init(&fx, REF);
		add_smoking(&fx, "s", "2025-06-01", i < 6 ? yes[i] : no[i - 6]);
		assert_int_equal(features_bind(fx.a, pce, fx_input(&fx), &v), 0);
		assert_int_equal(get(&v, "smoker")->status, FEATURE_FOUND);
		assert_true(get(&v, "smoker")->number == (i < 6 ? 1 : 0));
		fx_free(&fx);
	}
	fx_init(&fx, REF);
	add_smoking(&fx, "s-new", "2025-12-01", "8517006");
	add_smoking(&fx, "s-old", "2025-01-01", "449868002");
	assert_int_equal(features_bind(fx.a, pce, fx_input(&fx), &v), 0);
	assert_true(get(&v, "smoker")->number == 0);
	assert_string_equal(get(&v, "smoker")->basis[0], "Observation/s-new");
	fx_free(&fx);
	/* No smoking status at all: missing (no default in pce.bind). */
	fx_init(&fx, REF);
	assert_int_equal(features_bind(fx.a, pce, fx_input(&fx), &v), 0);
	assert_int_equal(get(&v, "smoker")->kind, FEATURE_MISSING);
	fx_free(&fx);
	features_binding_free(pce);
}

static void
add_med(fx_t *fx, const char *type, const char *id, const char *status, const char *rxnorm)
{
	fx_add(fx, arena_printf(
		       fx->a,
		       "{\"resourceType\":\"%s\",\"id\":\"%s\",\"meta\":{\"versionId\":"
		       "\"7\"},\"status\":\"%s\",%s\"medicationCodeableConcept\":{\"coding\":"
		       "[{\"system\":\"http://www.nlm.nih.gov/research/umls/rxnorm\",\"code\":"
		       "\"%s\"}]},\"subject\":{\"reference\":\"Patient/p1\"},%s}",
		       type, id, status, type[10] == 'R' ? "\"intent\":\"order\"," : "", rxnorm,
		       type[10] == 'R' ? "\"authoredOn\":\"2025-03-01\""
				       : "\"effectiveDateTime\":\"2025-04-01\""));
}

/* Blood-pressure treatment from an active MedicationRequest or an active/intended
 * MedicationStatement with an ingredient of the list. */
static void
test_bp_treated(void **state)
{
	features_binding_t *pce = fx_shipped("pce.bind");
	features_vector_t v;
	const feature_t *f;
	fx_t fx;

	(void)state;
	fx_init(&fx, REF);
	add_med(&fx, "MedicationRequest", "mr-stopped", "stopped", "29046");
	add_med(&fx, "MedicationRequest", "mr-statin", "active", "83367"); /* atorvastatin */
	add_med(&fx, "MedicationStatement", "ms-done", "completed", "17767");
	assert_int_equal(features_bind(fx.a, pce, fx_input(&fx), &v), 0);
	f = get(&v, "bp_treated");
	assert_int_equal(f->status, FEATURE_FOUND);
	assert_true(f->number == 0);
	assert_false(features_binding_uses_resource(pce, fx.mreq[1].node));
	assert_true(features_binding_uses_resource(pce, fx.mreq[0].node));

	add_med(&fx, "MedicationRequest", "mr-lis", "active", "29046");
	assert_int_equal(features_bind(fx.a, pce, fx_input(&fx), &v), 0);
	f = get(&v, "bp_treated");
	assert_true(f->number == 1);
	assert_int_equal(f->nbasis, 1);
	assert_string_equal(f->basis[0], "MedicationRequest/mr-lis/_history/7");
	assert_string_equal(f->source_time, "2025-03-01");
	fx_free(&fx);

	fx_init(&fx, REF);
	add_med(&fx, "MedicationStatement", "ms-aml", "intended", "17767");
	assert_int_equal(features_bind(fx.a, pce, fx_input(&fx), &v), 0);
	f = get(&v, "bp_treated");
	assert_true(f->number == 1);
	assert_string_equal(f->basis[0], "MedicationStatement/ms-aml/_history/7");
	assert_string_equal(f->source_time, "2025-04-01");
	fx_free(&fx);
	features_binding_free(pce);
}

/* Race from the US Core extension; absent: pce's default "other", or missing without one. */
static void
test_race(void **state)
{
	features_binding_t *pce = fx_shipped("pce.bind");
	features_binding_t *strict = bind_text("input race race\n");
	features_vector_t v;
	fx_t fx;

	(void)state;
	fx_init(&fx, REF);
	add_patient(&fx, "1970-01-01", "male", "2054-5");
	assert_int_equal(features_bind(fx.a, pce, fx_input(&fx), &v), 0);
	assert_string_equal(get(&v, "race")->string, "african-american");
	assert_string_equal(get(&v, "race")->basis[0], "Patient/p1/_history/4");
	fx_free(&fx);

	fx_init(&fx, REF);
	add_patient(&fx, "1970-01-01", "male", "2106-3");
	assert_int_equal(features_bind(fx.a, pce, fx_input(&fx), &v), 0);
	assert_string_equal(get(&v, "race")->string, "other");
	fx_free(&fx);

	fx_init(&fx, REF);
	add_patient(&fx, "1970-01-01", "male", NULL);
	assert_int_equal(features_bind(fx.a, pce, fx_input(&fx), &v), 0);
	assert_string_equal(get(&v, "race")->string, "other");
	assert_true(get(&v, "race")->defaulted);
	assert_int_equal(get(&v, "race")->status, FEATURE_ABSENT);
	assert_int_equal(features_bind(fx.a, strict, fx_input(&fx), &v), 0);
	assert_int_equal(get(&v, "race")->kind, FEATURE_MISSING);
	assert_string_equal(v.no_score,
			    "missing input race: Patient has no US Core race extension");
	fx_free(&fx);
	features_binding_free(pce);
	features_binding_free(strict);
}

/* Whole years at the reference time: the day before the birthday, on it, 29 February. */
static void
test_age(void **state)
{
	static const struct {
		const char *birth, *ref;
		int age;
	} cases[] = {
	    {"1970-01-16", "2026-01-15T23:59:59Z", 55}, {"1970-01-15", "2026-01-15T00:00:00Z", 56},
	    {"1970-01-15", "2026-01-14T23:59:59Z", 55}, {"2000-02-29", "2023-02-28T12:00:00Z", 22},
	    {"2000-02-29", "2023-03-01T00:00:00Z", 23}, {"2000-02-29", "2024-02-29T00:00:00Z", 24},
	    {"2026-01-15", "2026-01-15T00:00:00Z", 0},
	};
	features_binding_t *b = bind_text("input age age\ninput sex gender\n");
	features_vector_t v;
	fx_t fx;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		fx_init(&fx, cases[i].ref);
		add_patient(&fx, cases[i].birth, "female", NULL);
		assert_int_equal(features_bind(fx.a, b, fx_input(&fx), &v), 0);
		if (get(&v, "age")->number != cases[i].age)
			fail_msg("born %s at %s: %g, want %d", cases[i].birth, cases[i].ref,
				 get(&v, "age")->number, cases[i].age);
		assert_null(v.source_time); /* Patient data has no clinical time */
		assert_int_equal(v.nbasis, 1);
		fx_free(&fx);
	}
	fx_init(&fx, REF);
	add_patient(&fx, "1970-05", "other", NULL);
	assert_int_equal(features_bind(fx.a, b, fx_input(&fx), &v), 0);
	assert_int_equal(get(&v, "age")->status, FEATURE_INVALID);
	assert_int_equal(get(&v, "sex")->status, FEATURE_INVALID);
	assert_string_equal(v.no_score,
			    "invalid input age: birthDate '1970-05' is not a full date");
	assert_string_equal(get(&v, "sex")->reason, "gender 'other' is neither female nor male");
	fx_free(&fx);
	fx_init(&fx, REF);
	add_patient(&fx, "2027-01-01", "male", NULL);
	assert_int_equal(features_bind(fx.a, b, fx_input(&fx), &v), 0);
	assert_int_equal(get(&v, "age")->status, FEATURE_INVALID);
	fx_free(&fx);
	features_binding_free(b);
}

/* A missing input stops the score unless the binding states a default. */
static void
test_missing(void **state)
{
	features_binding_t *b = bind_text(
	    "input hdl observation loinc|2085-9 unit mg/dL missing default 50\n"
	    "input tc observation loinc|2093-3 unit mg/dL missing no-score\n"
	    "input smoker observation-flag loinc|72166-2 yes snomed|77176002 missing default 0\n");
	features_vector_t v;
	const feature_t *f;
	fx_t fx;

	(void)state;
	fx_init(&fx, REF);
	add_obs(&fx, "tc", 2, "2093-3", "2025-10-01", "200", "mg/dL");
	add_obs(&fx, "hdl", 2, "2085-9", "2025-10-01", "1.2", "mmol/L");
	assert_int_equal(features_bind(fx.a, b, fx_input(&fx), &v), 0);
	assert_null(v.no_score);
	f = get(&v, "hdl");
	assert_int_equal(f->status, FEATURE_INVALID); /* mmol/L is not accepted here */
	assert_true(f->defaulted);
	assert_int_equal(f->kind, FEATURE_NUMBER);
	assert_true(f->number == 50);
	assert_int_equal(f->nbasis, 0);
	assert_true(get(&v, "smoker")->defaulted);
	assert_true(get(&v, "smoker")->number == 0);
	assert_int_equal(v.nbasis, 1);
	assert_string_equal(v.basis[0], "Observation/tc/_history/2");
	fx_free(&fx);

	fx_init(&fx, REF);
	assert_int_equal(features_bind(fx.a, b, fx_input(&fx), &v), 0);
	assert_string_equal(v.no_score, "missing input tc: no Observation http://loinc.org|2093-3");
	assert_int_equal(features_bind(NULL, b, fx_input(&fx), &v), -FG_EINVAL);
	fx_free(&fx);
	features_binding_free(b);
}

/* The write path's question: does this resource (type + code) concern the model? */
static void
test_uses(void **state)
{
	features_binding_t *pce = fx_shipped("pce.bind");
	features_binding_t *labs = bind_text("input hdl observation loinc|2085-9\n");
	const slice_t loinc = SLICE_LIT("http://loinc.org");

	(void)state;
	assert_true(
	    features_binding_uses_code(pce, FEATURES_OBSERVATION, loinc, SLICE_LIT("2093-3")));
	assert_true(
	    features_binding_uses_code(pce, FEATURES_OBSERVATION, loinc, SLICE_LIT("85354-9")));
	assert_true(
	    features_binding_uses_code(pce, FEATURES_OBSERVATION, loinc, SLICE_LIT("72166-2")));
	assert_false(
	    features_binding_uses_code(pce, FEATURES_OBSERVATION, loinc, SLICE_LIT("2345-7")));
	assert_false(features_binding_uses_code(
	    pce, FEATURES_OBSERVATION, SLICE_LIT("http://snomed.info/sct"), SLICE_LIT("2093-3")));
	assert_true(features_binding_uses_code(pce, FEATURES_CONDITION,
					       SLICE_LIT("http://hl7.org/fhir/sid/icd-10-cm"),
					       SLICE_LIT("E11.9")));
	assert_false(features_binding_uses_code(pce, FEATURES_CONDITION,
						SLICE_LIT("http://hl7.org/fhir/sid/icd-10-cm"),
						SLICE_LIT("E13.9")));
	assert_true(features_binding_uses_code(pce, FEATURES_PATIENT, SLICE_NULL, SLICE_NULL));
	assert_false(features_binding_uses_code(labs, FEATURES_PATIENT, SLICE_NULL, SLICE_NULL));
	assert_false(
	    features_binding_uses_code(labs, FEATURES_CONDITION, loinc, SLICE_LIT("2085-9")));
	features_binding_free(pce);
	features_binding_free(labs);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_shipped_bindings),
	    cmocka_unit_test(test_binding_errors),
	    cmocka_unit_test(test_list_errors),
	    cmocka_unit_test(test_latest_in_window),
	    cmocka_unit_test(test_window_edges),
	    cmocka_unit_test(test_component),
	    cmocka_unit_test(test_units),
	    cmocka_unit_test(test_any_order),
	    cmocka_unit_test(test_conditions),
	    cmocka_unit_test(test_smoking),
	    cmocka_unit_test(test_bp_treated),
	    cmocka_unit_test(test_race),
	    cmocka_unit_test(test_age),
	    cmocka_unit_test(test_missing),
	    cmocka_unit_test(test_uses),
	};

	return cmocka_run_group_tests_name("features", tests, NULL, NULL);
}
