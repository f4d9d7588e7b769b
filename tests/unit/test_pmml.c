/* PMML engine: the shipped models against their published values, exporter-shaped files
 * (sklearn2pmml, nyoka, R pmml), refusals with file:line:element, and input treatments. */
#include "config.h"

#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "lib/err.h"
#include "lib/xalloc.h"
#include "scoring/pmml.h"

static pmml_model_t *
load(const char *rel)
{
	char *path = xasprintf("%s/%s", TOP_SRCDIR, rel);
	char err[512];
	pmml_model_t *m = NULL;
	int rc = pmml_load_file(path, &m, err, sizeof(err));

	if (rc != 0)
		print_error("%s\n", err);
	assert_int_equal(rc, 0);
	assert_non_null(m);
	free(path);
	return m;
}

/* Loads text that must be refused; checks the message holds each of the needles. */
static void
refused(const char *text, int want_rc, const char *n1, const char *n2)
{
	pmml_model_t *m = (pmml_model_t *)1;
	char err[512];
	int rc = pmml_load_mem("t.pmml", text, strlen(text), &m, err, sizeof(err));

	if (rc == 0 || strstr(err, n1) == NULL || (n2 != NULL && strstr(err, n2) == NULL))
		print_error("rc %d: %s (wanted %s / %s)\n", rc, err, n1, n2 ? n2 : "");
	assert_int_equal(rc, want_rc);
	assert_null(m);
	assert_non_null(strstr(err, n1));
	if (n2 != NULL)
		assert_non_null(strstr(err, n2));
}

typedef struct {
	const char *sex, *race;
	double age, tc, hdl, sbp, treated, smoker, diabetes;
} cvd_t;

static size_t
cvd_inputs(const cvd_t *c, pmml_input_t *in)
{
	size_t n = 0;

	in[n++] = (pmml_input_t){"sex", pmml_value_string(c->sex)};
	if (c->race != NULL)
		in[n++] = (pmml_input_t){"race", pmml_value_string(c->race)};
	in[n++] = (pmml_input_t){"age", pmml_value_number(c->age)};
	in[n++] = (pmml_input_t){"total_cholesterol", pmml_value_number(c->tc)};
	in[n++] = (pmml_input_t){"hdl", pmml_value_number(c->hdl)};
	in[n++] = (pmml_input_t){"systolic_bp", pmml_value_number(c->sbp)};
	in[n++] = (pmml_input_t){"bp_treated", pmml_value_number(c->treated)};
	in[n++] = (pmml_input_t){"smoker", pmml_value_number(c->smoker)};
	in[n++] = (pmml_input_t){"diabetes", pmml_value_number(c->diabetes)};
	return n;
}

static double
cvd_score(const pmml_model_t *m, const cvd_t *c)
{
	pmml_input_t in[9];
	pmml_result_t res;
	double s;
	int rc = pmml_eval(m, in, cvd_inputs(c, in), &res);

	if (rc != 0)
		print_error("%s\n", res.message);
	assert_int_equal(rc, 0);
	assert_int_equal(res.status, PMML_STATUS_OK);
	s = res.score;
	pmml_result_clear(&res);
	return s;
}

static size_t
input_index(const pmml_model_t *m, const char *name)
{
	for (size_t i = 0; i < pmml_input_count(m); i++)
		if (strcmp(pmml_input_get(m, i)->name, name) == 0)
			return i;
	fail_msg("no input %s", name);
	return SIZE_MAX;
}

/* Goff 2013, Appendix 7 Table A: 55 years, TC 213, HDL 50, untreated SBP 120, non-smoker,
 * no diabetes: 2.1% / 3.0% / 5.3% / 6.1%. */
static void
test_pce_published_example(void **state)
{
	pmml_model_t *m = load("etc/models/pce.pmml");
	const struct {
		const char *sex, *race;
		double want;
	} cases[] = {{"female", "other", 0.021},
		     {"female", "african-american", 0.030},
		     {"male", "other", 0.053},
		     {"male", "african-american", 0.061}};

	for (size_t i = 0; i < 4; i++) {
		cvd_t c = {cases[i].sex, cases[i].race, 55, 213, 50, 120, 0, 0, 0};
		double s = cvd_score(m, &c);

		print_message("# PCE %s %s: %.4f%%\n", cases[i].sex, cases[i].race, 100 * s);
		assert_true(fabs(s - cases[i].want) <= 0.001);
	}
	assert_string_equal(pmml_model_extension(m, "loinc"), "79423-0");
	assert_string_equal(pmml_model_version(m), "2013.1");
	assert_string_equal(pmml_model_target(m), "ascvd_10y_risk");
	assert_non_null(strstr(pmml_model_annotation(m), "Circulation"));
	assert_non_null(strstr(pmml_model_name(m), "Pooled Cohort"));
	assert_int_equal(pmml_model_function(m), PMML_FUNCTION_REGRESSION);
	pmml_free(m);
}

static void
test_pce_inputs_and_ranges(void **state)
{
	pmml_model_t *m = load("etc/models/pce.pmml");
	const pmml_field_info_t *age = pmml_input_get(m, input_index(m, "age"));
	const pmml_field_info_t *race = pmml_input_get(m, input_index(m, "race"));
	cvd_t c = {"male", "other", 39, 213, 50, 120, 0, 0, 0};
	pmml_input_t in[9];
	pmml_result_t res;

	assert_int_equal(pmml_input_count(m), 9);
	assert_true(age->has_interval);
	assert_true(age->low == 40 && age->high == 79 && age->low_closed && age->high_closed);
	assert_int_equal(race->optype, PMML_OPTYPE_CATEGORICAL);
	assert_int_equal(race->n_values, 2);
	assert_string_equal(race->values[0], "african-american");
	assert_null(pmml_input_get(m, 9));

	/* Outside the valid ages: no score, and the status names the field and the value. */
	assert_int_equal(pmml_eval(m, in, cvd_inputs(&c, in), &res), -FG_EINVAL);
	assert_int_equal(res.status, PMML_STATUS_INVALID);
	assert_string_equal(res.field, "age");
	assert_non_null(strstr(res.message, "age=39"));
	assert_non_null(strstr(res.message, "[40, 79]"));
	pmml_result_clear(&res);
	c.age = 79.5;
	assert_int_equal(pmml_eval(m, in, cvd_inputs(&c, in), &res), -FG_EINVAL);
	assert_string_equal(res.field, "age");
	pmml_result_clear(&res);
	c.age = 79;
	assert_true(cvd_score(m, &c) > 0);

	/* An unknown category is invalid; a missing input without replacement is missing. */
	c.race = "martian";
	assert_int_equal(pmml_eval(m, in, cvd_inputs(&c, in), &res), -FG_EINVAL);
	assert_int_equal(res.status, PMML_STATUS_INVALID);
	assert_string_equal(res.field, "race");
	pmml_result_clear(&res);
	c.race = NULL;
	assert_int_equal(pmml_eval(m, in, cvd_inputs(&c, in), &res), -FG_EINVAL);
	assert_int_equal(res.status, PMML_STATUS_MISSING);
	assert_string_equal(res.field, "race");
	assert_non_null(strstr(res.message, "missing input race"));
	pmml_result_clear(&res);

	/* Numbers as strings are accepted; a non-number is invalid. */
	c.race = "other";
	cvd_inputs(&c, in);
	in[3].value = pmml_value_string("213");
	assert_int_equal(pmml_eval(m, in, 9, &res), 0);
	pmml_result_clear(&res);
	in[3].value = pmml_value_string("5.5 mmol/L");
	assert_int_equal(pmml_eval(m, in, 9, &res), -FG_EINVAL);
	assert_string_equal(res.field, "total_cholesterol");
	assert_non_null(strstr(res.message, "not a number"));
	pmml_result_clear(&res);
	pmml_free(m);
}

/* baseline + contributions == linear; sex and race select the equation and carry nothing;
 * a smoker's smoking contribution is positive. */
static void
test_pce_contributions(void **state)
{
	pmml_model_t *m = load("etc/models/pce.pmml");
	cvd_t c = {"male", "other", 60, 240, 40, 150, 1, 1, 0};
	pmml_input_t in[9];
	pmml_result_t res;
	double sum;

	assert_int_equal(pmml_eval(m, in, cvd_inputs(&c, in), &res), 0);
	assert_int_equal(res.n_inputs, 9);
	sum = res.baseline;
	for (size_t i = 0; i < res.n_inputs; i++)
		sum += res.contributions[i];
	assert_true(fabs(sum - res.linear) < 1e-9);
	assert_true(fabs(res.score - -expm1(-exp(res.linear))) < 1e-12);
	assert_true(res.contributions[input_index(m, "sex")] == 0);
	assert_true(res.contributions[input_index(m, "race")] == 0);
	assert_true(res.contributions[input_index(m, "diabetes")] == 0);
	/* white men: 7.837 - 1.795 ln 60 */
	assert_true(fabs(res.contributions[input_index(m, "smoker")] -
			 (7.837 - 0.5 * 1.795 * log(60))) < 1e-9);
	/* baseline: the white men's constant ln(-ln 0.9144) - 61.18 */
	assert_true(fabs(res.baseline - (log(-log(0.9144)) - 61.18)) < 1e-6);
	assert_int_equal(res.n_outputs, 1);
	assert_true(res.outputs[0].kind == PMML_VALUE_NUMBER && res.outputs[0].number == res.score);
	pmml_result_clear(&res);
	pmml_free(m);
}

/* D'Agostino 2008: man 55, TC 213, HDL 50, untreated SBP 140: 13.53% (CVrisk's example);
 * woman 61, TC 180, HDL 47, untreated SBP 124, smoker: 10.48%. */
static void
test_framingham(void **state)
{
	pmml_model_t *m = load("etc/models/framingham.pmml");
	cvd_t man = {"male", NULL, 55, 213, 50, 140, 0, 0, 0};
	cvd_t woman = {"female", NULL, 61, 180, 47, 124, 0, 1, 0};
	cvd_t young = {"female", NULL, 29, 180, 47, 124, 0, 1, 0};
	double s1 = cvd_score(m, &man), s2 = cvd_score(m, &woman);
	pmml_input_t in[9];
	pmml_result_t res;

	print_message("# Framingham man: %.4f%%, woman: %.4f%%\n", 100 * s1, 100 * s2);
	assert_true(fabs(s1 - 0.1353) < 0.0001);
	assert_true(fabs(s2 - 0.1048) < 0.0001);
	assert_string_equal(pmml_model_extension(m, "loinc"), "65853-4");
	assert_int_equal(pmml_eval(m, in, cvd_inputs(&young, in), &res), -FG_EINVAL);
	assert_string_equal(res.field, "age");
	pmml_result_clear(&res);
	pmml_free(m);
}

/* SAPS II: logit = -7.7631 + 0.0737 S + 0.9971 ln(S + 1). */
static void
test_saps2(void **state)
{
	pmml_model_t *m = load("etc/models/saps2.pmml");
	const double by_hand[] = {0.000424956, 0.0372047, 0.247443, 0.680887};

	assert_int_equal(pmml_model_function(m), PMML_FUNCTION_CLASSIFICATION);
	assert_int_equal(pmml_category_count(m), 2);
	assert_string_equal(pmml_category_get(m, 0), "died");
	for (int i = 0; i < 4; i++) {
		double s = 20.0 * i;
		double want = 1 / (1 + exp(-(-7.7631 + 0.0737 * s + 0.9971 * log(s + 1))));
		pmml_input_t in = {"saps2_score", pmml_value_number(s)};
		pmml_result_t res;

		assert_int_equal(pmml_eval(m, &in, 1, &res), 0);
		assert_true(fabs(res.score - want) < 1e-12);
		assert_true(fabs(res.score - by_hand[i]) < 1e-6);
		assert_true(fabs(res.probabilities[0] + res.probabilities[1] - 1) < 1e-12);
		assert_true(res.outputs[0].number == res.score);
		/* everything but the intercept is the score's */
		assert_true(res.baseline == -7.7631);
		assert_true(fabs(res.contributions[0] - (0.0737 * s + 0.9971 * log(s + 1))) <
			    1e-12);
		assert_string_equal(res.predicted_category, i < 3 ? "survived" : "died");
		pmml_result_clear(&res);
	}
	pmml_free(m);
}

static double
eval1(const pmml_model_t *m, const pmml_input_t *in, size_t n, pmml_result_t *res)
{
	int rc = pmml_eval(m, in, n, res);

	if (rc != 0)
		print_error("%s\n", res->message);
	assert_int_equal(rc, 0);
	return res->score;
}

static void
test_sklearn_binary(void **state)
{
	pmml_model_t *m = load("tests/data/pmml/sklearn2pmml-logistic-binary.pmml");
	pmml_input_t in[] = {{"sepal_length", pmml_value_number(7.0)},
			     {"sepal_width", pmml_value_number(3.2)}};
	pmml_result_t res;

	assert_string_equal(pmml_model_application(m), "SkLearn2PMML package");
	assert_true(fabs(eval1(m, in, 2, &res) - 0.7574621048228684) < 1e-12);
	assert_string_equal(res.predicted_category, "1");
	assert_true(fabs(res.outputs[0].number - 0.24253789517713165) < 1e-12);
	assert_string_equal(pmml_output_name(m, 1), "probability(1)");
	pmml_result_clear(&res);
	pmml_free(m);
}

static void
test_sklearn_softmax(void **state)
{
	pmml_model_t *m = load("tests/data/pmml/sklearn2pmml-logistic-multinomial.pmml");
	pmml_input_t in[] = {{"sepal_length", pmml_value_number(6.1)},
			     {"sepal_width", pmml_value_number(2.8)},
			     {"petal_length", pmml_value_number(4.7)},
			     {"petal_width", pmml_value_number(1.2)}};
	const double want[] = {0.0031663758358238263, 0.8598669469263303, 0.13696667723784592};
	pmml_result_t res;

	eval1(m, in, 4, &res);
	assert_int_equal(res.n_categories, 3);
	for (int i = 0; i < 3; i++) {
		assert_true(fabs(res.probabilities[i] - want[i]) < 1e-12);
		assert_true(res.outputs[i].number == res.probabilities[i]);
	}
	assert_string_equal(res.predicted_category, "versicolor");
	assert_true(res.score == res.probabilities[0]);
	pmml_result_clear(&res);
	pmml_free(m);
}

static void
test_sklearn_imputer(void **state)
{
	pmml_model_t *m = load("tests/data/pmml/sklearn2pmml-linear-imputer.pmml");
	pmml_input_t in[] = {{"x1", pmml_value_missing()}, {"x2", pmml_value_number(1.5)}};
	pmml_result_t res;

	assert_string_equal(pmml_input_get(m, 0)->missing_replacement, "4.25");
	/* x1 missing: replaced by 4.25 */
	assert_true(fabs(eval1(m, in, 2, &res) - (3.5 + 0.82 * 4.25 - 1.17 * 1.5)) < 1e-12);
	pmml_result_clear(&res);
	/* x1 absent altogether: the same */
	assert_true(fabs(eval1(m, &in[1], 1, &res) - (3.5 + 0.82 * 4.25 - 1.17 * 1.5)) < 1e-12);
	pmml_result_clear(&res);
	/* x2 missing, no replacement: no score, status names x2 */
	assert_int_equal(pmml_eval(m, in, 1, &res), -FG_EINVAL);
	assert_int_equal(res.status, PMML_STATUS_MISSING);
	assert_string_equal(res.field, "x2");
	pmml_result_clear(&res);
	pmml_free(m);
}

static void
test_nyoka(void **state)
{
	pmml_model_t *m = load("tests/data/pmml/nyoka-logistic.pmml");
	pmml_input_t in[] = {{"age", pmml_value_number(60)}, {"visits", pmml_value_number(2)}};
	pmml_result_t res;

	assert_string_equal(pmml_model_copyright(m), "Copyright (c) 2021 Software AG");
	assert_string_equal(pmml_model_description(m), "Default description");
	assert_string_equal(pmml_model_name(m), "LogisticRegression");
	assert_true(fabs(eval1(m, in, 2, &res) - 0.23147521650098227) < 1e-12);
	assert_string_equal(res.predicted_category, "0");
	assert_true(res.outputs[2].kind == PMML_VALUE_STRING);
	assert_true(slice_eq_cstr(res.outputs[2].str, "0"));
	pmml_result_clear(&res);
	pmml_free(m);
}

static void
test_r_lm(void **state)
{
	pmml_model_t *m = load("tests/data/pmml/r-pmml-lm-categorical.pmml");
	pmml_input_t in[] = {{"wt", pmml_value_number(2.620)}, {"cyl", pmml_value_string("6")}};
	pmml_result_t res;

	assert_true(fabs(eval1(m, in, 2, &res) - 21.33650594) < 1e-9);
	assert_true(fabs(res.contributions[1] - -4.255582) < 1e-12);
	pmml_result_clear(&res);
	in[1].value = pmml_value_number(4); /* a number for a string category */
	assert_true(fabs(eval1(m, in, 2, &res) - (33.990794 - 3.205613 * 2.62)) < 1e-9);
	pmml_result_clear(&res);
	in[1].value = pmml_value_string("5");
	assert_int_equal(pmml_eval(m, in, 2, &res), -FG_EINVAL);
	assert_int_equal(res.status, PMML_STATUS_INVALID);
	assert_non_null(strstr(res.message, "cyl=\"5\""));
	pmml_result_clear(&res);
	pmml_free(m);

	/* wt:hp is split evenly between wt and hp */
	m = load("tests/data/pmml/r-pmml-lm-interaction.pmml");
	in[1] = (pmml_input_t){"hp", pmml_value_number(110)};
	assert_true(fabs(eval1(m, in, 2, &res) - 23.0962456) < 1e-9);
	assert_true(fabs(res.contributions[0] - (-8.21662 * 2.62 + 0.5 * 0.02785 * 2.62 * 110)) <
		    1e-9);
	assert_true(fabs(res.contributions[1] - (-0.1201 * 110 + 0.5 * 0.02785 * 2.62 * 110)) <
		    1e-9);
	assert_true(res.baseline == 49.80842);
	pmml_result_clear(&res);
	pmml_free(m);
}

static void
test_refused_files(void **state)
{
	char err[512];
	pmml_model_t *m = NULL;
	char *path = xasprintf("%s/tests/data/pmml/r-pmml-glm-binomial.pmml", TOP_SRCDIR);

	assert_int_equal(pmml_load_file(path, &m, err, sizeof(err)), -FG_EUNSUPPORTED);
	assert_null(m);
	assert_non_null(strstr(err, "r-pmml-glm-binomial.pmml:13: GeneralRegressionModel: not "
				    "supported (fhirgate supports RegressionModel"));
	free(path);
	assert_int_equal(pmml_load_file("/nonexistent/x.pmml", &m, err, sizeof(err)), -FG_EIO);
	assert_non_null(strstr(err, "/nonexistent/x.pmml:0: cannot open"));
}

#define HEAD                                                                  \
	"<?xml version=\"1.0\"?>\n"                                           \
	"<PMML xmlns=\"http://www.dmg.org/PMML-4_4\" version=\"4.4\">\n"      \
	"<DataDictionary>\n"                                                  \
	"<DataField name=\"x\" optype=\"continuous\" dataType=\"double\"/>\n" \
	"<DataField name=\"y\" optype=\"continuous\" dataType=\"double\"/>\n" \
	"</DataDictionary>\n" /* line 6 */
#define MODEL                                                                                   \
	"<RegressionModel functionName=\"regression\">\n"                                       \
	"<MiningSchema><MiningField name=\"x\"/><MiningField name=\"y\" usageType=\"target\"/>" \
	"</MiningSchema>\n" /* line 8 */
#define TABLE                                                \
	"<RegressionTable intercept=\"1\">\n"                \
	"<NumericPredictor name=\"x\" coefficient=\"2\"/>\n" \
	"</RegressionTable>\n"
#define TAIL "</RegressionModel>\n</PMML>\n"

static void
test_refusals(void **state)
{
	pmml_model_t *m = NULL;
	char err[256];
	const char *ok = HEAD MODEL TABLE TAIL;

	assert_int_equal(pmml_load_mem("t.pmml", ok, strlen(ok), &m, err, sizeof(err)), 0);
	pmml_free(m);

	refused(HEAD "<TreeModel functionName=\"regression\"/>\n</PMML>\n", -FG_EUNSUPPORTED,
		"t.pmml:7: TreeModel: not supported (fhirgate supports", NULL);
	refused(HEAD "<NeuralNetwork/>\n" MODEL TABLE TAIL, -FG_EUNSUPPORTED,
		"t.pmml:7: NeuralNetwork: not supported", NULL);
	refused(HEAD MODEL TABLE TAIL "<PMML/>\n", -FG_EPARSE, "t.pmml:14: malformed XML", NULL);
	refused(HEAD MODEL TABLE "</RegressionModel>\n" MODEL TABLE TAIL, -FG_EUNSUPPORTED,
		"t.pmml:13: RegressionModel: not supported (fhirgate supports one RegressionModel",
		NULL);
	refused(
	    HEAD
	    "<RegressionModel functionName=\"regression\" normalizationMethod=\"probit\">\n" TABLE
		TAIL,
	    -FG_EUNSUPPORTED,
	    "t.pmml:7: RegressionModel normalizationMethod=\"probit\": not supported (fhirgate "
	    "supports none, logit, softmax, cloglog, exp)",
	    NULL);
	refused(HEAD "<TransformationDictionary>\n<DerivedField name=\"d\">\n"
		     "<Apply function=\"sqrt\"><FieldRef field=\"x\"/></Apply>\n"
		     "</DerivedField></TransformationDictionary>\n" MODEL TABLE TAIL,
		-FG_EUNSUPPORTED, "t.pmml:9: Apply function=\"sqrt\": not supported", NULL);
	refused(HEAD "<TransformationDictionary>\n<DerivedField name=\"d\">\n"
		     "<NormContinuous field=\"x\"/>\n"
		     "</DerivedField></TransformationDictionary>\n" MODEL TABLE TAIL,
		-FG_EUNSUPPORTED,
		"t.pmml:9: NormContinuous: not supported (fhirgate supports Constant, FieldRef, "
		"Apply)",
		NULL);
	refused(HEAD MODEL "<Targets/>\n" TABLE TAIL, -FG_EUNSUPPORTED,
		"t.pmml:9: Targets: not supported", NULL);
	refused(HEAD MODEL "<RegressionTable intercept=\"1\">\n<NumericPredictor name=\"x\"/>\n"
			   "</RegressionTable>\n" TAIL,
		-FG_EINVAL, "t.pmml:10: NumericPredictor: missing required attribute coefficient",
		NULL);
	refused(HEAD MODEL "<RegressionTable intercept=\"1\">\n<NumericPredictor name=\"nope\" "
			   "coefficient=\"1\"/>\n</RegressionTable>\n" TAIL,
		-FG_EINVAL, "t.pmml:10: NumericPredictor: unknown field \"nope\"", NULL);
	refused(HEAD MODEL "<RegressionTable intercept=\"1\">\n<NumericPredictor name=\"y\" "
			   "coefficient=\"1\"/>\n</RegressionTable>\n" TAIL,
		-FG_EINVAL, "t.pmml:10: NumericPredictor: field \"y\" is not an active", NULL);
	refused(HEAD "<TransformationDictionary>\n<DerivedField name=\"d\">\n"
		     "<FieldRef field=\"zz\"/>\n"
		     "</DerivedField></TransformationDictionary>\n" MODEL TABLE TAIL,
		-FG_EINVAL, "t.pmml:9: FieldRef: unknown field \"zz\"", NULL);
	refused(HEAD "<TransformationDictionary>\n"
		     "<DerivedField name=\"a\"><FieldRef field=\"b\"/></DerivedField>\n"
		     "<DerivedField name=\"b\"><FieldRef field=\"a\"/></DerivedField>\n"
		     "</TransformationDictionary>\n" MODEL TABLE TAIL,
		-FG_EINVAL, "t.pmml:", "depends on itself");
	refused(HEAD MODEL "<RegressionTable intercept=\"abc\"/>\n" TAIL, -FG_EINVAL,
		"t.pmml:9: RegressionTable: intercept=\"abc\" is not a number", NULL);
	refused(HEAD "<RegressionModel functionName=\"regression\">\n"
		     "<MiningSchema><MiningField name=\"q\"/></MiningSchema>\n" TABLE TAIL,
		-FG_EINVAL, "t.pmml:8: MiningField: unknown field \"q\"", NULL);
	refused(HEAD MODEL TAIL, -FG_EINVAL, "t.pmml:7: RegressionModel: no RegressionTable", NULL);
	refused("<PMML version=\"3.2\"><DataDictionary/></PMML>", -FG_EUNSUPPORTED,
		"t.pmml:1: PMML version=\"3.2\": not supported", NULL);
	refused("<html/>", -FG_EINVAL, "t.pmml:1: html: not a PMML document", NULL);
	refused("", -FG_EPARSE, "t.pmml:", "malformed XML");
	refused(HEAD "<RegressionModel functionName=\"regression\">\n<MiningSchema>\n"
		     "<MiningField name=\"x\"/></MiningSchema><RegressionTable>\n",
		-FG_EPARSE, "t.pmml:", "malformed XML");
	refused(HEAD MODEL "<RegressionTable intercept=\"1\"><Bogus/></RegressionTable>\n" TAIL,
		-FG_EUNSUPPORTED, "t.pmml:9: Bogus: not supported", NULL);
}

/* External entities and DTDs are refused before anything is read from outside. */
static void
test_doctype_refused(void **state)
{
	refused("<?xml version=\"1.0\"?>\n<!DOCTYPE PMML [\n"
		"<!ENTITY xxe SYSTEM \"file:///etc/passwd\">\n]>\n"
		"<PMML version=\"4.4\"><Header description=\"&xxe;\"/></PMML>\n",
		-FG_EPARSE, "t.pmml:2: DOCTYPE: not allowed", NULL);
	refused("<?xml version=\"1.0\"?>\n<!DOCTYPE PMML SYSTEM \"http://example.invalid/p.dtd\">\n"
		"<PMML version=\"4.4\"/>\n",
		-FG_EPARSE, "t.pmml:2: DOCTYPE: not allowed", NULL);
	/* an undeclared entity is not expanded: the document is malformed */
	refused("<PMML version=\"4.4\"><Header description=\"&xxe;\"/></PMML>", -FG_EPARSE,
		"t.pmml:1: malformed XML", NULL);
}

static void
test_verification_failure(void **state)
{
	refused(HEAD MODEL TABLE
		"<ModelVerification><VerificationFields>\n"
		"<VerificationField field=\"x\"/><VerificationField field=\"y\"/>\n"
		"</VerificationFields><InlineTable>\n"
		"<row><x>1</x><y>3</y></row>\n"
		"<row><x>2</x><y>5.5</y></row>\n" /* line 16: 1 + 2*2 = 5 */
		"</InlineTable></ModelVerification>\n" TAIL,
		-FG_EINVAL, "t.pmml:16: ModelVerification row 2: y is 5, expected 5.5", NULL);
	refused(HEAD MODEL TABLE "<ModelVerification><VerificationFields>\n"
				 "<VerificationField field=\"nope\"/>\n"
				 "</VerificationFields><InlineTable/></ModelVerification>\n" TAIL,
		-FG_EINVAL, "t.pmml:13: VerificationField: unknown field \"nope\"", NULL);
}

/* Treatments from the MiningSchema and the functions of Apply. */
static void
test_treatments_and_functions(void **state)
{
	const char *text =
	    "<PMML xmlns=\"http://www.dmg.org/PMML-4_4\" version=\"4.4\">\n"
	    "<DataDictionary>\n"
	    "<DataField name=\"a\" optype=\"continuous\" dataType=\"double\">"
	    "<Interval closure=\"closedOpen\" leftMargin=\"0\" rightMargin=\"10\"/></DataField>\n"
	    "<DataField name=\"b\" optype=\"continuous\" dataType=\"double\"/>\n"
	    "<DataField name=\"c\" optype=\"categorical\" dataType=\"string\">"
	    "<Value value=\"u\"/><Value value=\"v\"/><Value value=\"?\" property=\"missing\"/>"
	    "</DataField>\n"
	    "</DataDictionary>\n"
	    "<RegressionModel functionName=\"regression\" normalizationMethod=\"exp\">\n"
	    "<MiningSchema><MiningField name=\"a\" invalidValueTreatment=\"asMissing\" "
	    "missingValueReplacement=\"5\"/>"
	    "<MiningField name=\"b\" outliers=\"asExtremeValues\" lowValue=\"-1\" "
	    "highValue=\"1\"/>"
	    "<MiningField name=\"c\" missingValueReplacement=\"v\"/></MiningSchema>\n"
	    "<LocalTransformations>\n"
	    "<DerivedField name=\"d\" optype=\"continuous\" dataType=\"double\">"
	    "<Apply function=\"if\"><Apply function=\"and\">"
	    "<Apply function=\"greaterThan\"><FieldRef field=\"a\"/><Constant>4</Constant></Apply>"
	    "<Apply function=\"not\"><Apply function=\"isMissing\"><FieldRef field=\"b\"/></Apply>"
	    "</Apply></Apply>"
	    "<Apply function=\"pow\"><Constant>2</Constant><Apply function=\"log10\">"
	    "<Constant>1000</Constant></Apply></Apply>"
	    "<Apply function=\"/\" defaultValue=\"-1\"><FieldRef field=\"a\"/>"
	    "<Constant>0</Constant></Apply></Apply></DerivedField>\n"
	    "</LocalTransformations>\n"
	    "<RegressionTable intercept=\"0\">"
	    "<NumericPredictor name=\"d\" coefficient=\"0.125\"/>"
	    "<NumericPredictor name=\"b\" exponent=\"2\" coefficient=\"1\"/>"
	    "<CategoricalPredictor name=\"c\" value=\"v\" coefficient=\"0.5\"/>"
	    "</RegressionTable>\n</RegressionModel>\n</PMML>\n";
	pmml_model_t *m;
	char err[256];
	pmml_input_t in[] = {{"a", pmml_value_number(20)},
			     {"b", pmml_value_number(3)},
			     {"c", pmml_value_string("?")}};
	pmml_result_t res;
	int rc = pmml_load_mem("t.pmml", text, strlen(text), &m, err, sizeof(err));

	if (rc != 0)
		print_error("%s\n", err);
	assert_int_equal(rc, 0);
	/* a=20 is invalid -> missing -> 5; b=3 clamps to 1; c "?" is missing -> "v":
	 * d = if(5 > 4 and b present, 2^3, ...) = 8; exp(0.125*8 + 1 + 0.5) */
	assert_true(fabs(eval1(m, in, 3, &res) - exp(2.5)) < 1e-12);
	assert_true(fabs(res.linear - 2.5) < 1e-12);
	pmml_result_clear(&res);
	/* a=3: d = a/0 -> defaultValue -1 */
	in[0].value = pmml_value_number(3);
	assert_true(fabs(eval1(m, in, 3, &res) - exp(-0.125 + 1 + 0.5)) < 1e-12);
	pmml_result_clear(&res);
	/* a=10 is outside [0, 10) */
	in[0].value = pmml_value_number(10);
	assert_true(fabs(eval1(m, in, 3, &res) - exp(2.5)) < 1e-12);
	pmml_result_clear(&res);
	/* an unknown category with the default returnInvalid */
	in[2].value = pmml_value_string("w");
	assert_int_equal(pmml_eval(m, in, 3, &res), -FG_EINVAL);
	assert_int_equal(res.status, PMML_STATUS_INVALID);
	assert_string_equal(res.field, "c");
	pmml_result_clear(&res);
	pmml_free(m);
}

/* A boolean field takes true/false or 1/0, and its Values may be written either way. */
static void
test_boolean_field(void **state)
{
	const char *text = "<PMML version=\"4.4\"><DataDictionary>"
			   "<DataField name=\"f\" optype=\"categorical\" dataType=\"boolean\">"
			   "<Value value=\"true\"/><Value value=\"false\"/></DataField>"
			   "</DataDictionary><RegressionModel functionName=\"regression\">"
			   "<MiningSchema><MiningField name=\"f\"/></MiningSchema>"
			   "<RegressionTable intercept=\"1\"><NumericPredictor name=\"f\" "
			   "coefficient=\"2\"/></RegressionTable></RegressionModel></PMML>";
	const pmml_value_t vals[] = {pmml_value_string("true"), pmml_value_number(1),
				     pmml_value_string("false"), pmml_value_string("1")};
	const double want[] = {3, 3, 1, 3};
	pmml_model_t *m;
	char err[256];
	pmml_result_t res;

	assert_int_equal(pmml_load_mem("b.pmml", text, strlen(text), &m, err, sizeof(err)), 0);
	for (int i = 0; i < 4; i++) {
		pmml_input_t in = {"f", vals[i]};

		assert_true(eval1(m, &in, 1, &res) == want[i]);
		pmml_result_clear(&res);
	}
	{
		pmml_input_t in = {"f", pmml_value_number(2)};

		assert_int_equal(pmml_eval(m, &in, 1, &res), -FG_EINVAL);
		assert_non_null(strstr(res.message, "not a boolean"));
		pmml_result_clear(&res);
	}
	pmml_free(m);
}

/* The model is immutable: evaluations from several threads agree. */
static void *
thread_eval(void *arg)
{
	const pmml_model_t *m = arg;
	cvd_t c = {"male", "african-american", 55, 213, 50, 120, 0, 0, 0};
	pmml_input_t in[9];
	size_t n = cvd_inputs(&c, in);
	intptr_t bad = 0;

	for (int i = 0; i < 2000; i++) {
		pmml_result_t res;

		if (pmml_eval(m, in, n, &res) != 0 || fabs(res.score - 0.060734373) > 1e-8)
			bad++;
		pmml_result_clear(&res);
	}
	return (void *)bad;
}

static void
test_threads(void **state)
{
	pmml_model_t *m = load("etc/models/pce.pmml");
	pthread_t t[4];

	for (int i = 0; i < 4; i++)
		assert_int_equal(pthread_create(&t[i], NULL, thread_eval, m), 0);
	for (int i = 0; i < 4; i++) {
		void *bad;

		assert_int_equal(pthread_join(t[i], &bad), 0);
		assert_null(bad);
	}
	pmml_free(m);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_pce_published_example),
	    cmocka_unit_test(test_pce_inputs_and_ranges),
	    cmocka_unit_test(test_pce_contributions),
	    cmocka_unit_test(test_framingham),
	    cmocka_unit_test(test_saps2),
	    cmocka_unit_test(test_sklearn_binary),
	    cmocka_unit_test(test_sklearn_softmax),
	    cmocka_unit_test(test_sklearn_imputer),
	    cmocka_unit_test(test_nyoka),
	    cmocka_unit_test(test_r_lm),
	    cmocka_unit_test(test_refused_files),
	    cmocka_unit_test(test_refusals),
	    cmocka_unit_test(test_doctype_refused),
	    cmocka_unit_test(test_verification_failure),
	    cmocka_unit_test(test_treatments_and_functions),
	    cmocka_unit_test(test_boolean_field),
	    cmocka_unit_test(test_threads),
	};

	return cmocka_run_group_tests_name("pmml", tests, NULL, NULL);
}
