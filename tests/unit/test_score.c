/* Unit tests for the server's scoring pieces: the patient a resource concerns, the models folder
 * (a bad model is skipped, a broken new version keeps the old one, a binding naming an input
 * the model lacks is refused), and scoring a Bundle's resources (pce-example: 3.04%). */
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

#include "fhir/json.h"
#include "gateway/models.h"
#include "gateway/score.h"
#include "lib/err.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "store/store.h"

static fhir_node_t *
parse(arena_t *a, const char *json)
{
	fhir_node_t *n = NULL;
	char err[128];

	assert_int_equal(fhir_json_parse(a, json, strlen(json), NULL, &n, err, sizeof(err)), 0);
	return n;
}

static void
expect_patient(arena_t *a, const char *json, const char *want)
{
	slice_t pid;
	bool ok = score_patient_of(parse(a, json), &pid);

	if (want == NULL) {
		assert_false(ok);
		return;
	}
	assert_true(ok);
	assert_int_equal(pid.len, strlen(want));
	assert_memory_equal(pid.ptr, want, pid.len);
}

static void
test_patient_of(void **state)
{
	arena_t *a = arena_new(0);

	(void)state;
	expect_patient(a, "{\"resourceType\":\"Patient\",\"id\":\"p1\"}", "p1");
	expect_patient(a, "{\"resourceType\":\"Patient\"}", NULL);
	expect_patient(
	    a, "{\"resourceType\":\"Observation\",\"subject\":{\"reference\":\"Patient/x\"}}", "x");
	expect_patient(a,
		       "{\"resourceType\":\"Observation\",\"subject\":{\"reference\":"
		       "\"http://h/fhir/Patient/abc/_history/3\"}}",
		       "abc");
	expect_patient(
	    a, "{\"resourceType\":\"MedicationStatement\",\"subject\":{\"reference\":\"Group/g\"}}",
	    NULL);
	expect_patient(
	    a, "{\"resourceType\":\"Observation\",\"subject\":{\"reference\":\"XPatient/x\"}}",
	    NULL);
	expect_patient(
	    a, "{\"resourceType\":\"Observation\",\"subject\":{\"reference\":\"Patient/\"}}", NULL);
	expect_patient(a, "{\"resourceType\":\"Observation\",\"subject\":{\"display\":\"Jane\"}}",
		       NULL);
	arena_free(a);
}

static void
copy_file(const char *from, const char *to, const char *append)
{
	FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
	char buf[8192];
	size_t n;

	assert_non_null(in);
	assert_non_null(out);
	while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
		assert_int_equal(fwrite(buf, 1, n, out), n);
	if (append != NULL)
		fputs(append, out);
	fclose(in);
	fclose(out);
}

static void
write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "wb");

	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static char *
in_dir(const char *dir, const char *name)
{
	return xasprintf("%s/%s", dir, name);
}

static void
copy_model(const char *dir, const char *name, const char *as, const char *append)
{
	const char *ext[] = {".pmml", ".bind"};

	for (int i = 0; i < 2; i++) {
		char *from = xasprintf("%s/%s%s", MODELS_DIR, name, ext[i]);
		char *to = xasprintf("%s/%s%s", dir, as, ext[i]);

		copy_file(from, to, i == 0 ? append : NULL);
		free(from);
		free(to);
	}
}

static void
test_models_folder(void **state)
{
	char dir[] = "/tmp/fhirgate-models-XXXXXX";
	char *p;
	models_t *m;
	const models_set_t *s, *old;

	(void)state;
	assert_non_null(mkdtemp(dir));
	copy_model(dir, "pce", "pce", NULL);
	p = in_dir(dir, "antihypertensives.csv");
	copy_file(MODELS_DIR "/antihypertensives.csv", p, NULL);
	free(p);
	/* Not a supported model; and a good model whose binding names an unknown input. */
	p = in_dir(dir, "bad.pmml");
	write_file(
	    p, "<PMML version=\"4.4\"><Header/><TreeModel functionName=\"regression\"/></PMML>\n");
	free(p);
	copy_model(dir, "framingham", "mismatch", NULL);
	p = in_dir(dir, "mismatch.bind");
	copy_file(MODELS_DIR "/pce.bind", p, NULL); /* race: framingham has no such input */
	free(p);
	models_open(dir, &m);
	s = models_acquire(m);
	assert_int_equal(models_set_count(s), 1);
	assert_string_equal(models_set_at(s, 0)->name, "pce");
	assert_null(models_set_find(s, SLICE_LIT("bad")));
	assert_null(models_set_find(s, SLICE_LIT("mismatch")));
	assert_false(models_changed(m));
	/* A broken new pce keeps the old one, which stays usable by a holder of the old set. */
	old = s;
	p = in_dir(dir, "pce.pmml");
	copy_file(MODELS_DIR "/pce.pmml", p, "<broken");
	free(p);
	assert_true(models_changed(m));
	models_reload(m);
	s = models_acquire(m);
	assert_ptr_not_equal(s, old);
	assert_int_equal(models_set_count(s), 1);
	assert_ptr_equal(models_set_at(s, 0)->pmml, models_set_at(old, 0)->pmml);
	models_release(old);
	models_release(s);
	/* A model whose files go is dropped; a fixed one comes in. */
	copy_model(dir, "framingham", "mismatch", NULL);
	p = in_dir(dir, "pce.pmml");
	unlink(p);
	free(p);
	models_reload(m);
	s = models_acquire(m);
	assert_int_equal(models_set_count(s), 1);
	assert_string_equal(models_set_at(s, 0)->name, "mismatch");
	models_release(s);
	models_free(m);
	p = xasprintf("rm -rf '%s'", dir);
	assert_int_equal(system(p), 0);
	free(p);
}

static void
test_score_bundle(void **state)
{
	arena_t *a = arena_new(0);
	FILE *f = fopen(TEST_DATA_DIR "/scoring/patient-pce.json", "rb");
	char *buf = xmalloc(1 << 20);
	size_t n = fread(buf, 1, (1 << 20) - 1, f);
	fhir_node_t *doc, *e;
	const fhir_node_t **res;
	features_input_t in;
	score_result_t r;
	models_t *m;
	const models_set_t *s;
	slice_t pid;
	size_t i, k = 0;

	(void)state;
	fclose(f);
	buf[n] = '\0';
	doc = parse(a, buf);
	res = arena_zalloc(a, fhir_array_len(fhir_object_get_cstr(doc, "entry")) * sizeof(*res));
	FHIR_ARRAY_FOREACH(fhir_object_get_cstr(doc, "entry"), i, e)
		res[k++] = fhir_object_get_cstr(e, "resource");
	models_open(MODELS_DIR, &m);
	s = models_acquire(m);
	score_input_from_nodes(a, res, k, 1768478400000 /* 2026-01-15T12:00:00Z */, &in, &pid);
	assert_true(slice_eq_cstr(pid, "pce-example"));
	assert_int_equal(score_model(a, models_set_find(s, SLICE_LIT("pce")), &in, pid, &r), 0);
	assert_true(r.scored);
	/* African-American woman of 55 (the guideline's example): 3.03%. */
	assert_true(r.probability > 0.0295 && r.probability < 0.0315);
	assert_string_equal(r.band_label, "low");
	assert_non_null(r.res.risk_assessment);
	/* Without the Observations: no score, naming the input. */
	in.nobservations = 0;
	assert_int_equal(score_model(a, models_set_find(s, SLICE_LIT("pce")), &in, pid, &r), 0);
	assert_false(r.scored);
	assert_string_equal(r.input, "total_cholesterol");
	assert_non_null(strstr(r.why, "total_cholesterol"));
	models_release(s);
	models_free(m);
	free(buf);
	arena_free(a);
}

static int
count_work(void *ctx, const store_work_t *w)
{
	(void)w;
	(*(int *)ctx)++;
	return 0;
}

/* One work item per patient per transaction: again in the next transaction, wherever its
 * struct is allocated (a new one is often where the last one was), after an abort too. */
static void
test_note_per_txn(void **state)
{
	char dir[] = "/tmp/fhirgate-note-XXXXXX";
	const char *body = "{\"resourceType\":\"Patient\",\"id\":\"p1\",\"gender\":\"female\","
			   "\"birthDate\":\"1970-01-01\"}";
	store_t *st;
	store_txn_t *t;
	models_t *m;
	char *cmd;
	int n;

	(void)state;
	assert_non_null(mkdtemp(dir));
	assert_int_equal(store_open(dir, NULL, &st), 0);
	models_open(MODELS_DIR, &m);
	models_set_global(m);
	for (int round = 0; round < 3; round++) {
		assert_int_equal(store_txn_begin(st, true, &t), 0);
		for (int k = 0; k < 2; k++) /* the second note of p1 puts nothing */
			assert_int_equal(score_hook_note(t, SLICE_LIT("Patient"), SLICE_LIT("p1"),
							 slice_cstr(body)),
					 0);
		n = 0;
		assert_int_equal(store_work_foreach(t, 0, count_work, &n), 0);
		assert_int_equal(n, round == 2 ? 2 : 1); /* round 1's is there in round 2 */
		if (round == 0)
			store_txn_abort(t); /* its work item goes with it */
		else
			assert_int_equal(store_txn_commit(t), 0);
	}
	models_set_global(NULL);
	models_free(m);
	store_close(st);
	cmd = xasprintf("rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
	free(cmd);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_patient_of),
	    cmocka_unit_test(test_models_folder),
	    cmocka_unit_test(test_score_bundle),
	    cmocka_unit_test(test_note_per_txn),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
