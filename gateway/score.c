/* Scoring patients with the models in force: the write path's hook (work items in the write's
 * own transaction), the writer's step that runs them after the commit, and the shared pieces
 * of $score, CDS Hooks and `fhirgate score`. */
#include "config.h"

#include "gateway/score.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fhir/json.h"
#include "gateway/ingest.h"
#include "gateway/search.h"
#include "lib/buf.h"
#include "lib/err.h"
#include "lib/log.h"
#include "lib/timeutil.h"

#define NOTED_MAX     256 /* patients remembered per transaction (then duplicates are put) */
#define RUN_ITEMS_MAX 32  /* work items per scoring transaction */

/* Work was put since the last run (or the server just started: look for leftovers). */
static atomic_bool pending = true;

/* The patients noted in this thread's current transaction: one work item each. */
static _Thread_local struct {
	uint64_t txn; /* store_txn_serial (0: none) */
	size_t n;
	char ids[NOTED_MAX][STORE_ID_MAX + 1];
} noted;

/* The id of a reference "Patient/ID", "Patient/ID/_history/N" or "http://x/fhir/Patient/ID". */
static bool
patient_ref_id(const fhir_node_t *ref, slice_t *id)
{
	slice_t r = fhir_node_text(fhir_object_get_cstr(ref, "reference"));
	const char *p = r.ptr, *end = r.ptr + r.len, *h;
	size_t n;

	if (r.len == 0)
		return false;
	/* Drop "/_history/N", then take the last two segments. */
	for (h = p; h + 10 <= end; h++)
		if (memcmp(h, "/_history/", 10) == 0) {
			end = h;
			break;
		}
	for (n = (size_t)(end - p); n > 0 && p[n - 1] != '/'; n--)
		;
	if (n < 8 || memcmp(p + n - 8, "Patient/", 8) != 0 || (n > 8 && p[n - 9] != '/'))
		return false;
	*id = slice_make(p + n, (size_t)(end - p) - n);
	return id->len > 0 && id->len <= STORE_ID_MAX;
}

bool
score_patient_of(const fhir_node_t *res, slice_t *patient_id)
{
	slice_t type = fhir_resource_type(res);

	if (slice_eq_cstr(type, "Patient")) {
		*patient_id = fhir_node_text(fhir_object_get_cstr(res, "id"));
		return patient_id->len > 0 && patient_id->len <= STORE_ID_MAX;
	}
	return patient_ref_id(fhir_object_get_cstr(res, "subject"), patient_id) ||
	       patient_ref_id(fhir_object_get_cstr(res, "patient"), patient_id);
}

static bool
type_is_input(slice_t type)
{
	return slice_eq_cstr(type, "Patient") || slice_eq_cstr(type, "Observation") ||
	       slice_eq_cstr(type, "Condition") || slice_eq_cstr(type, "MedicationRequest") ||
	       slice_eq_cstr(type, "MedicationStatement");
}

/* Whether pid was noted in t already; notes it when not. */
static bool
noted_before(const store_txn_t *t, slice_t pid)
{
	if (noted.txn != store_txn_serial(t)) {
		noted.txn = store_txn_serial(t);
		noted.n = 0;
	}
	for (size_t i = 0; i < noted.n; i++)
		if (slice_eq_cstr(pid, noted.ids[i]))
			return true;
	if (noted.n < NOTED_MAX) {
		memcpy(noted.ids[noted.n], pid.ptr, pid.len);
		noted.ids[noted.n++][pid.len] = '\0';
	}
	return false;
}

int
score_hook_note(store_txn_t *t, slice_t type, slice_t id, slice_t body)
{
	models_t *m = models_global();
	const models_set_t *s;
	arena_t *a;
	fhir_node_t *res = NULL;
	bool concerned = false;
	slice_t pid;
	char err[128];
	int rc = 0;

	if (m == NULL || !type_is_input(type))
		return 0;
	s = models_acquire(m);
	if (models_set_count(s) == 0) {
		models_release(s);
		return 0;
	}
	a = arena_new(0);
	if (body.len == 0) {
		store_res_t cur;

		if (store_res_get(t, type, id, &cur) == 0 && !cur.deleted)
			body = arena_slice_dup(a, cur.body);
	}
	if (body.len > 0 &&
	    fhir_json_parse(a, body.ptr, body.len, NULL, &res, err, sizeof(err)) == 0)
		for (size_t i = 0; !concerned && i < models_set_count(s); i++)
			concerned =
			    features_binding_uses_resource(models_set_at(s, i)->binding, res);
	if (concerned && score_patient_of(res, &pid) && !noted_before(t, pid)) {
		uint64_t wid;

		rc = store_work_put(t, SCORE_WORK_KIND, pid, &wid);
		if (rc == 0)
			atomic_store(&pending, true);
	}
	arena_free(a);
	models_release(s);
	return rc;
}

/* ---- one model ---- */

static int
contrib_cmp(const void *x, const void *y)
{
	const risk_contribution_t *p = x, *q = y;
	double a = fabs(p->value), b = fabs(q->value);

	return a > b ? -1 : a < b ? 1 : strcmp(p->name, q->name);
}

int
score_model(arena_t *a, const models_entry_t *m, const features_input_t *in, slice_t patient_id,
	    score_result_t *out)
{
	features_vector_t *v = arena_zalloc(a, sizeof(*v));
	risk_model_t rm = {.name = m->name, .version = pmml_model_version(m->pmml)};
	pmml_input_t *pin;
	pmml_result_t pr;
	int rc;

	memset(out, 0, sizeof(*out));
	out->model = m;
	out->vector = v;
	rc = features_bind(a, m->binding, in, v);
	if (rc < 0)
		return rc;
	if (v->no_score != NULL) {
		out->why = v->no_score;
		for (size_t i = 0; i < v->n && out->input == NULL; i++)
			if (v->items[i].kind == FEATURE_MISSING)
				out->input = v->items[i].name;
		return 0;
	}
	pin = arena_zalloc(a, (v->n ? v->n : 1) * sizeof(*pin));
	for (size_t i = 0; i < v->n; i++) {
		const feature_t *f = &v->items[i];

		pin[i].name = f->name;
		pin[i].value = f->kind == FEATURE_NUMBER   ? pmml_value_number(f->number)
			       : f->kind == FEATURE_STRING ? pmml_value_string(f->string)
							   : pmml_value_missing();
	}
	if (pmml_eval(m->pmml, pin, v->n, &pr) < 0) {
		out->why = arena_printf(a, "%s", pr.message);
		out->input = pr.field != NULL ? arena_printf(a, "%s", pr.field) : NULL;
		pmml_result_clear(&pr);
		return 0;
	}
	out->probability = pr.score;
	out->ncontribs = pr.n_inputs;
	out->contribs = arena_zalloc(a, (pr.n_inputs ? pr.n_inputs : 1) * sizeof(*out->contribs));
	for (size_t i = 0; i < pr.n_inputs; i++) {
		out->contribs[i].name = pmml_input_get(m->pmml, i)->name;
		out->contribs[i].value = pr.contributions[i];
	}
	pmml_result_clear(&pr);
	qsort(out->contribs, out->ncontribs, sizeof(*out->contribs), contrib_cmp);
	rc = risk_build(a, &rm, m->binding, patient_id, v, out->probability, out->contribs,
			out->ncontribs, &out->res, &out->why);
	if (rc < 0)
		return 0;
	out->scored = true;
	features_binding_band(m->binding, out->probability, &out->band_label, &out->band_code);
	return 0;
}

/* ---- the patient's data ---- */

typedef struct {
	features_res_t *items;
	size_t n, cap;
} res_list_t;

static void
list_add(arena_t *a, res_list_t *l, const fhir_node_t *node, slice_t id, uint32_t version)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 16;
		features_res_t *items = arena_alloc(a, cap * sizeof(*items));

		if (l->n > 0)
			memcpy(items, l->items, l->n * sizeof(*items));
		l->items = items;
		l->cap = cap;
	}
	l->items[l->n++] = (features_res_t){node, id, version};
}

/* Every current resource of type whose subject is Patient/pid, through the search index. */
static int
load_type(store_txn_t *t, arena_t *a, slice_t type, slice_t pid, res_list_t *l)
{
	search_opts_t opt = {.default_count = 1000, .max_count = 1000};
	const char *q0 = arena_printf(a, "subject=Patient/%.*s&_count=1000", (int)pid.len, pid.ptr);
	slice_t q = slice_cstr(q0);

	for (;;) {
		search_result_t *r = NULL;
		fhir_node_t *outcome = NULL;
		int rc = search_run(t, a, type, q, &opt, &r, &outcome);

		if (rc < 0)
			return rc;
		for (size_t i = 0; i < r->nmatches; i++) {
			store_res_t cur;
			fhir_node_t *node;
			char err[64];

			if (store_res_get(t, r->hits[i].type, r->hits[i].id, &cur) < 0 ||
			    cur.deleted)
				continue;
			if (fhir_json_parse(a, cur.body.ptr, cur.body.len, NULL, &node, err,
					    sizeof(err)) < 0)
				continue;
			list_add(a, l, node, arena_slice_dup(a, cur.id), cur.version);
		}
		if (!r->has_next)
			return 0;
		q = slice_cstr(arena_printf(a, "%s&_cursor=%.*s", q0, (int)r->next_cursor.len,
					    r->next_cursor.ptr));
	}
}

/* The four lists (Observation, Condition, MedicationRequest, MedicationStatement) into in. */
static void
lists_to_input(const res_list_t lists[4], features_input_t *in)
{
	in->observations = lists[0].items;
	in->nobservations = lists[0].n;
	in->conditions = lists[1].items;
	in->nconditions = lists[1].n;
	in->medication_requests = lists[2].items;
	in->nmedication_requests = lists[2].n;
	in->medication_statements = lists[3].items;
	in->nmedication_statements = lists[3].n;
}

int
score_input_from_store(store_txn_t *t, arena_t *a, slice_t pid, int64_t ref_ms,
		       features_input_t *in)
{
	static const char *const types[] = {"Observation", "Condition", "MedicationRequest",
					    "MedicationStatement"};
	res_list_t lists[4] = {{0}};
	features_res_t *patient;
	store_res_t cur;
	char err[64];
	fhir_node_t *node;
	int rc;

	memset(in, 0, sizeof(*in));
	in->ref_ms = ref_ms;
	rc = store_res_get(t, SLICE_LIT("Patient"), pid, &cur);
	if (rc < 0 || cur.deleted)
		return rc < 0 && rc != -FG_ENOTFOUND ? rc : -FG_ENOTFOUND;
	if (fhir_json_parse(a, cur.body.ptr, cur.body.len, NULL, &node, err, sizeof(err)) < 0)
		return -FG_ENOTFOUND;
	patient = arena_zalloc(a, sizeof(*patient));
	*patient = (features_res_t){node, arena_slice_dup(a, cur.id), cur.version};
	in->patient = patient;
	for (size_t i = 0; i < 4; i++) {
		rc = load_type(t, a, slice_cstr(types[i]), pid, &lists[i]);
		if (rc < 0)
			return rc;
	}
	lists_to_input(lists, in);
	return 0;
}

void
score_input_from_nodes(arena_t *a, const fhir_node_t *const *res, size_t n, int64_t ref_ms,
		       features_input_t *in, slice_t *patient_id)
{
	res_list_t lists[4] = {{0}};
	features_res_t *patient = NULL;
	slice_t pid = SLICE_NULL;

	memset(in, 0, sizeof(*in));
	in->ref_ms = ref_ms;
	/* The patient: the Patient's id, else the first one named. */
	for (size_t i = 0; i < n && pid.len == 0; i++)
		if (slice_eq_cstr(fhir_resource_type(res[i]), "Patient"))
			(void)score_patient_of(res[i], &pid);
	for (size_t i = 0; i < n && pid.len == 0; i++)
		(void)score_patient_of(res[i], &pid);
	for (size_t i = 0; i < n; i++) {
		slice_t type = fhir_resource_type(res[i]), p = SLICE_NULL;
		slice_t id = fhir_node_text(fhir_object_get_cstr(res[i], "id"));
		slice_t ver = fhir_node_text(
		    fhir_object_get_cstr(fhir_object_get_cstr(res[i], "meta"), "versionId"));
		uint64_t v = 0;
		int k = slice_eq_cstr(type, "Observation")           ? 0
			: slice_eq_cstr(type, "Condition")           ? 1
			: slice_eq_cstr(type, "MedicationRequest")   ? 2
			: slice_eq_cstr(type, "MedicationStatement") ? 3
								     : -1;

		if (!slice_to_u64(ver, &v) || v > UINT32_MAX)
			v = 0;
		if (!score_patient_of(res[i], &p) || !slice_eq(p, pid))
			continue;
		if (slice_eq_cstr(type, "Patient") && patient == NULL) {
			patient = arena_zalloc(a, sizeof(*patient));
			*patient = (features_res_t){res[i], id, (uint32_t)v};
		} else if (k >= 0) {
			list_add(a, &lists[k], res[i], id, (uint32_t)v);
		}
	}
	in->patient = patient;
	lists_to_input(lists, in);
	*patient_id = pid;
}

/* ---- storing ---- */

static int
put_one(store_txn_t *t, arena_t *a, const fhir_node_t *res, const char *id, uint64_t now_ns,
	bool *changed)
{
	buf_t b = BUF_INIT;
	store_res_put_t p = {
	    .type = fhir_resource_type(res), .id = slice_cstr(id), .now_ns = now_ns};
	store_res_result_t r;
	store_idx_entry_t *e = NULL;
	size_t ne = 0;
	int rc = fhir_json_write(res, false, &b);

	if (rc == 0)
		rc = ingest_index_entries(a, res, &e, &ne);
	if (rc == 0) {
		p.body = arena_slice_dup(a, buf_slice(&b));
		p.entries = e;
		p.n_entries = ne;
		rc = store_res_put(t, &p, &r);
	}
	buf_free(&b);
	if (rc == 0 && changed != NULL)
		*changed = !r.unchanged;
	return rc;
}

int
score_store(store_txn_t *t, arena_t *a, const score_result_t *r, uint64_t now_ns, bool *written)
{
	int rc;

	*written = false;
	if (!r->scored)
		return 0;
	rc = put_one(t, a, r->res.device, r->res.device_id, now_ns, NULL);
	if (rc == 0)
		rc = put_one(t, a, r->res.risk_assessment, r->res.risk_assessment_id, now_ns,
			     written);
	if (rc == 0)
		rc = put_one(t, a, r->res.provenance, r->res.provenance_id, now_ns, NULL);
	return rc;
}

int
score_patient(store_txn_t *t, arena_t *a, const models_set_t *s, slice_t pid, slice_t model,
	      bool store, score_result_t **out, size_t *n)
{
	uint64_t now = time_now_ns();
	features_input_t in;
	size_t count = models_set_count(s), k = 0;
	int rc;

	*out = NULL;
	*n = 0;
	if (model.len > 0 && models_set_find(s, model) == NULL)
		return -FG_EINVAL;
	rc = score_input_from_store(t, a, pid, (int64_t)(now / 1000000u), &in);
	if (rc < 0)
		return rc;
	*out = arena_zalloc(a, (count ? count : 1) * sizeof(**out));
	for (size_t i = 0; i < count; i++) {
		const models_entry_t *m = models_set_at(s, i);
		score_result_t *r = &(*out)[k];
		bool written = false;

		if (model.len > 0 && !slice_eq_cstr(model, m->name))
			continue;
		k++;
		rc = score_model(a, m, &in, pid, r);
		if (rc < 0)
			return rc;
		if (!r->scored) {
			models_count_refused(m->name);
			/* the reason can hold a value (an age, a cholesterol): debug only */
			log_info("scoring", "model %s: no score (reason at debug level)", m->name);
			log_debug("scoring", "model %s: no score: %s", m->name, r->why);
			continue;
		}
		if (store && (rc = score_store(t, a, r, now, &written)) < 0)
			return rc;
		if (written)
			models_count_written(m->name);
	}
	*n = k;
	return 0;
}

/* ---- the writer's step ---- */

typedef struct {
	arena_t *a;
	uint64_t ids[RUN_ITEMS_MAX];
	slice_t pids[RUN_ITEMS_MAX];
	size_t n;
	bool more;
} run_t;

static int
collect(void *ctx, const store_work_t *w)
{
	run_t *r = ctx;

	if (w->kind != SCORE_WORK_KIND)
		return 0;
	if (r->n == RUN_ITEMS_MAX) {
		r->more = true;
		return 1;
	}
	r->ids[r->n] = w->id;
	r->pids[r->n++] = arena_slice_dup(r->a, w->payload);
	return 0;
}

/* One scoring transaction over up to RUN_ITEMS_MAX items; *more when others wait. */
static int
run_some(store_t *st, const models_set_t *s, bool *more)
{
	run_t r = {.a = arena_new(0)};
	store_txn_t *t = NULL;
	int rc = store_txn_begin(st, true, &t);

	if (rc == 0) {
		rc = store_work_foreach(t, 0, collect, &r);
		if (rc > 0)
			rc = 0;
	}
	for (size_t i = 0; rc == 0 && i < r.n; i++) {
		score_result_t *res;
		size_t n;

		rc = score_patient(t, r.a, s, r.pids[i], SLICE_NULL, true, &res, &n);
		if (rc == -FG_ENOTFOUND || rc == -FG_EINVAL)
			rc = 0; /* no such patient (an id that is not one, a deleted one) */
		if (rc == 0)
			rc = store_work_del(t, r.ids[i]);
	}
	if (rc == 0 && t != NULL)
		rc = store_txn_commit(t);
	else
		store_txn_abort(t);
	if (rc < 0)
		log_error("scoring",
			  "scoring of %zu patients failed: %s (%s); retried after the "
			  "next commit",
			  r.n, fg_strerror(rc), store_last_error());
	else if (r.n > 0)
		log_debug("scoring", "scored %zu patients", r.n);
	*more = rc == 0 && r.more;
	arena_free(r.a);
	return rc;
}

void
score_mark_pending(void)
{
	atomic_store(&pending, true);
}

void
score_run_pending(store_t *st)
{
	models_t *m = models_global();
	const models_set_t *s;
	bool more = true;

	if (m == NULL || !atomic_exchange(&pending, false))
		return;
	/* For tests of crash recovery: leave the work items where they are. */
	if (getenv("FHIRGATE_TEST_SCORING_PAUSE") != NULL)
		return;
	s = models_acquire(m);
	while (more)
		if (run_some(st, s, &more) < 0)
			atomic_store(&pending, true);
	models_release(s);
}
