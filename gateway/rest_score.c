/* POST /fhir/Patient/{id}/$score: scores the patient now with every model in force (or the one
 * named by `model`), stores what scores like the hook does (one writer job) and answers a
 * Bundle of type collection with the RiskAssessments, or an OperationOutcome naming the
 * missing input when no model could score. */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "fhir/tree.h"
#include "gateway/models.h"
#include "gateway/rest_int.h"
#include "gateway/score.h"
#include "lib/err.h"

/* What the answer needs, copied into the request's arena so that the models can be released
 * in the writer thread (a job answered 503, or dropped, never reaches score_finish). */
typedef struct {
	const char *model, *why, *input;
	bool scored;
	fhir_node_t *ra;
	const char *ra_id;
} score_item_t;

typedef struct {
	arena_t *a; /* the request's: its I/O thread waits for the job meanwhile */
	slice_t pid, model;
	score_item_t *items;
	size_t n;
	int rc; /* score_patient's answer (not a store failure) */
} score_op_t;

static const char *
dup_or_null(arena_t *a, const char *s)
{
	return s != NULL ? arena_printf(a, "%s", s) : NULL;
}

static int
score_apply(void *arg, store_txn_t *t)
{
	score_op_t *op = arg;
	models_t *m = models_global();
	const models_set_t *set = m != NULL ? models_acquire(m) : NULL;
	score_result_t *res = NULL;
	int rc = score_patient(t, op->a, set, op->pid, op->model, true, &res, &op->n);

	op->rc = rc;
	op->items = arena_zalloc(op->a, (op->n ? op->n : 1) * sizeof(*op->items));
	for (size_t i = 0; rc == 0 && i < op->n; i++) {
		op->items[i].model = dup_or_null(op->a, res[i].model->name);
		op->items[i].why = dup_or_null(op->a, res[i].why);
		op->items[i].input = dup_or_null(op->a, res[i].input);
		op->items[i].scored = res[i].scored;
		op->items[i].ra = res[i].res.risk_assessment;
		op->items[i].ra_id = res[i].res.risk_assessment_id;
	}
	models_release(set);
	return rc == -FG_ENOTFOUND || rc == -FG_EINVAL ? 0 : rc;
}

static void
issue_add(arena_t *a, fhir_node_t *issues, const char *severity, const char *code, const char *text,
	  const char *expr)
{
	fhir_node_t *is = fhir_object_new(a);

	fhir_object_set_cstr(a, is, "severity", fhir_string_new(a, slice_cstr(severity)));
	fhir_object_set_cstr(a, is, "code", fhir_string_new(a, slice_cstr(code)));
	fhir_object_set_cstr(a, is, "diagnostics", fhir_string_new(a, slice_cstr(text)));
	if (expr != NULL) {
		fhir_node_t *ex = fhir_array_new(a);

		fhir_array_append(a, ex, fhir_string_new(a, slice_cstr(expr)));
		fhir_object_set_cstr(a, is, "expression", ex);
	}
	fhir_array_append(a, issues, is);
}

/* An OperationOutcome with one issue per model that did not score (NULL when all did). */
static fhir_node_t *
refusals(arena_t *a, const score_op_t *op, const char *severity)
{
	fhir_node_t *oo = fhir_object_new(a), *issues = fhir_array_new(a);
	size_t n = 0;

	fhir_object_set_cstr(a, oo, "resourceType",
			     fhir_string_new(a, SLICE_LIT("OperationOutcome")));
	for (size_t i = 0; i < op->n; i++) {
		const score_item_t *r = &op->items[i];

		if (r->scored)
			continue;
		issue_add(a, issues, severity, "required",
			  arena_printf(a, "model %s: no score: %s", r->model, r->why), r->input);
		n++;
	}
	fhir_object_set_cstr(a, oo, "issue", issues);
	return n > 0 ? oo : NULL;
}

static void
score_finish(rest_ctx_t *c, void *arg, int rc)
{
	score_op_t *op = arg;
	fhir_node_t *bundle, *entries, *oo;
	size_t scored = 0;

	if (rc < 0) {
		rest_send_error(c, 500, "exception", "the scores could not be stored: %s",
				fg_strerror(rc));
	} else if (op->rc == -FG_ENOTFOUND) {
		rest_send_error(c, 404, "not-found", "no Patient/%.*s", (int)op->pid.len,
				op->pid.ptr);
	} else if (op->rc < 0) {
		rest_send_error(c, 400, "not-supported", "no model '%.*s' is loaded",
				(int)(op->model.len > 64 ? 64 : op->model.len), op->model.ptr);
	} else {
		for (size_t i = 0; i < op->n; i++)
			scored += op->items[i].scored;
		if (scored == 0) {
			oo = refusals(c->a, op, "error");
			rest_send(c, 422,
				  oo != NULL ? oo
					     : rest_outcome(c->a, "error", "not-found",
							    "no model is loaded"),
				  NULL);
		} else {
			bundle = fhir_object_new(c->a);
			entries = fhir_array_new(c->a);
			fhir_object_set_cstr(c->a, bundle, "resourceType",
					     fhir_string_new(c->a, SLICE_LIT("Bundle")));
			fhir_object_set_cstr(c->a, bundle, "type",
					     fhir_string_new(c->a, SLICE_LIT("collection")));
			for (size_t i = 0; i < op->n; i++) {
				const score_item_t *r = &op->items[i];
				fhir_node_t *e = fhir_object_new(c->a);

				if (!r->scored)
					continue;
				fhir_object_set_cstr(
				    c->a, e, "fullUrl",
				    fhir_string_new(
					c->a, slice_cstr(arena_printf(c->a, "%s/RiskAssessment/%s",
								      c->base, r->ra_id))));
				fhir_object_set_cstr(c->a, e, "resource", r->ra);
				fhir_array_append(c->a, entries, e);
			}
			if ((oo = refusals(c->a, op, "warning")) != NULL) {
				fhir_node_t *e = fhir_object_new(c->a);

				fhir_object_set_cstr(c->a, e, "resource", oo);
				fhir_array_append(c->a, entries, e);
			}
			fhir_object_set_cstr(c->a, bundle, "total",
					     fhir_int_new(c->a, (int64_t)scored));
			fhir_object_set_cstr(c->a, bundle, "entry", entries);
			rest_send(c, 200, bundle, NULL);
		}
	}
}

/* The model named by the query (model=NAME) or a Parameters body (parameter "model",
 * valueString or valueCode); empty: all. False when answered (a bad body). */
static bool
model_param(rest_ctx_t *c, slice_t *model)
{
	http_query_t q;
	slice_t k, v;
	fhir_node_t *body, *params, *p;
	size_t i;

	*model = SLICE_NULL;
	http_query_init(&q, c->query, c->a);
	while (http_query_next(&q, &k, &v))
		if (slice_eq_cstr(k, "model"))
			*model = v;
	if (http_request_body(c->req).len == 0)
		return true;
	if ((body = rest_body_parse(c)) == NULL)
		return false;
	if (!slice_eq_cstr(fhir_resource_type(body), "Parameters")) {
		rest_send_error(c, 400, "invalid", "$score takes a Parameters body (or none)");
		return false;
	}
	params = fhir_object_get_cstr(body, "parameter");
	FHIR_ARRAY_FOREACH(params, i, p) {
		fhir_node_t *val = fhir_object_get_cstr(p, "valueString");

		if (val == NULL)
			val = fhir_object_get_cstr(p, "valueCode");
		if (slice_eq_cstr(fhir_node_text(fhir_object_get_cstr(p, "name")), "model"))
			*model = fhir_node_text(val);
	}
	return true;
}

void
rest_do_score(rest_ctx_t *c, slice_t patient_id)
{
	models_t *m = models_global();
	score_op_t *op;
	slice_t model;

	if (!model_param(c, &model))
		return;
	if (m == NULL) {
		rest_send_error(c, 404, "not-supported", "scoring is off (scoring.models_dir)");
		return;
	}
	op = arena_zalloc(c->a, sizeof(*op));
	op->a = c->a;
	op->pid = patient_id;
	op->model = model;
	rest_submit_op(c, score_apply, score_finish, op);
}
