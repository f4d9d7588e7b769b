/* CDS Hooks 2.0: discovery, the patient-view services (one per model) and feedback. */
#include "config.h"

#include "gateway/cds.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "fhir/json.h"
#include "fhir/tree.h"
#include "gateway/auth.h"
#include "gateway/models.h"
#include "gateway/rest.h"
#include "gateway/score.h"
#include "lib/buf.h"
#include "lib/err.h"
#include "lib/hash.h"
#include "lib/log.h"
#include "lib/timeutil.h"
#include "store/store.h"

#define CDS_PREFIX     "/cds-services"
#define CDS_PREFETCH_N 5

/* The prefetch templates every service asks for (the binder skips what it does not read). */
static const char *const prefetch[CDS_PREFETCH_N][2] = {
    {"patient", "Patient/{{context.patientId}}"},
    {"observations", "Observation?subject=Patient/{{context.patientId}}&_count=1000"},
    {"conditions", "Condition?subject=Patient/{{context.patientId}}&_count=1000"},
    {"medicationRequests", "MedicationRequest?subject=Patient/{{context.patientId}}&_count=1000"},
    {"medicationStatements",
     "MedicationStatement?subject=Patient/{{context.patientId}}&_count=1000"},
};

/* With authorization on (auth.enabled), a service call or feedback needs a valid bearer token
 * (the same access tokens as the FHIR API): 401 with WWW-Authenticate otherwise. */
static bool
authenticate(http_request_t *req, server_t *srv, auth_grant_t **grant)
{
	auth_t *au = rest_auth(server_rest(srv));
	arena_t *a = http_request_arena(req);
	const char *why = NULL;
	int rc;

	*grant = NULL;
	if (au == NULL || !auth_is_enabled(au))
		return true;
	rc = auth_bearer_check(au, a, http_request_header(req, "Authorization"),
			       http_request_header(req, "Host"),
			       (int64_t)(time_now_ns() / 1000000000u), grant, &why);
	if (rc == 0)
		return true;
	{
		http_field_t f[] = {
		    {"WWW-Authenticate",
		     rc == -FG_ENOTFOUND
			 ? "Bearer realm=\"fhirgate\""
			 : arena_printf(a,
					"Bearer realm=\"fhirgate\", error=\"invalid_token\", "
					"error_description=\"%s\"",
					why)},
		    {"Content-Type", "application/json"},
		    {NULL, NULL}};

		http_respond(req, 401, f,
			     SLICE_LIT("{\"error\":\"a valid bearer token is needed\"}"));
	}
	return false;
}

/* What a card reads: the patient's Patient, Observations, Conditions and medications. A
 * patient/ token may only ask about its own patient. */
static bool
authorized(const auth_grant_t *g, slice_t patient_id)
{
	static const char *const types[] = {"Patient", "Observation", "Condition",
					    "MedicationRequest", "MedicationStatement"};

	if (g == NULL)
		return true;
	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		scope_verdict_t v =
		    scope_set_check(&g->scopes, slice_cstr(types[i]), SCOPE_R | SCOPE_S);

		if (v == SCOPE_DENY ||
		    (v == SCOPE_ALLOW_PATIENT &&
		     (g->patient == NULL || !slice_eq_cstr(patient_id, g->patient))))
			return false;
	}
	return true;
}

/* The kind of n; FHIR_NULL for an absent member. */
static fhir_kind_t
kind_of(const fhir_node_t *n)
{
	return n != NULL ? fhir_node_kind(n) : FHIR_NULL;
}

bool
cds_handles(http_request_t *req)
{
	slice_t p = http_request_path(req);

	return slice_eq_cstr(p, CDS_PREFIX) ||
	       (p.len > sizeof(CDS_PREFIX) &&
		memcmp(p.ptr, CDS_PREFIX "/", sizeof(CDS_PREFIX)) == 0);
}

static fhir_node_t *
str(arena_t *a, const char *s)
{
	return fhir_string_new(a, slice_cstr(s));
}

static void
respond_json(http_request_t *req, int status, const fhir_node_t *doc)
{
	static const http_field_t json[] = {
	    {"Content-Type", "application/json"}, {"Cache-Control", "no-store"}, {NULL, NULL}};
	buf_t b = BUF_INIT;

	if (doc != NULL)
		fhir_json_write(doc, false, &b);
	else
		buf_append_cstr(&b, "{}");
	http_respond(req, status, json, buf_slice(&b));
	buf_free(&b);
}

static void
respond_error(http_request_t *req, int status, const char *text)
{
	arena_t *a = http_request_arena(req);
	fhir_node_t *doc = fhir_object_new(a);

	fhir_object_set_cstr(a, doc, "error", str(a, text));
	respond_json(req, status, doc);
}

/* What the model predicts, for people ("10-year ASCVD risk"). */
static const char *
outcome_text(const models_entry_t *m)
{
	features_outcome_t oc = features_binding_outcome(m->binding);

	if (oc.display != NULL)
		return oc.display;
	if (pmml_model_description(m->pmml) != NULL)
		return pmml_model_description(m->pmml);
	return m->name;
}

static void
discovery(http_request_t *req, const models_set_t *s)
{
	arena_t *a = http_request_arena(req);
	fhir_node_t *doc = fhir_object_new(a), *services = fhir_array_new(a);

	for (size_t i = 0; i < models_set_count(s); i++) {
		const models_entry_t *m = models_set_at(s, i);
		fhir_node_t *svc = fhir_object_new(a), *pf = fhir_object_new(a);
		const char *ver = pmml_model_version(m->pmml);

		fhir_object_set_cstr(a, svc, "hook", str(a, "patient-view"));
		fhir_object_set_cstr(a, svc, "title",
				     str(a, arena_printf(a, "%s (%s%s%s)", outcome_text(m), m->name,
							 ver ? " " : "", ver ? ver : "")));
		fhir_object_set_cstr(
		    a, svc, "description",
		    str(a, arena_printf(a,
					"The patient's %s by the model %s, from "
					"their data in the gateway or the prefetch.",
					outcome_text(m), m->name)));
		fhir_object_set_cstr(a, svc, "id", str(a, m->name));
		for (size_t k = 0; k < CDS_PREFETCH_N; k++)
			fhir_object_set_cstr(a, pf, prefetch[k][0], str(a, prefetch[k][1]));
		fhir_object_set_cstr(a, svc, "prefetch", pf);
		fhir_array_append(a, services, svc);
	}
	fhir_object_set_cstr(a, doc, "services", services);
	respond_json(req, 200, doc);
}

/* The card's indicator from the risk-probability code of the band. */
static const char *
indicator_of(const char *band_code)
{
	if (band_code == NULL || strcmp(band_code, "negligible") == 0 ||
	    strcmp(band_code, "low") == 0)
		return "info";
	if (strcmp(band_code, "moderate") == 0)
		return "warning";
	return "critical";
}

static fhir_node_t *
card_new(arena_t *a, const models_entry_t *m, slice_t pid, const score_result_t *r)
{
	fhir_node_t *card = fhir_object_new(a), *src = fhir_object_new(a);
	const char *ver = pmml_model_version(m->pmml);
	uint64_t h = hash_fnv1a64(pid.ptr, pid.len, hash_fnv1a64(m->name, strlen(m->name), 0));
	uint64_t h2 = hash_fnv1a64(&h, sizeof(h), 0x5bd1e995u);
	char uuid[40];

	/* Stable per patient and model, so feedback can be matched to what was shown. */
	snprintf(uuid, sizeof(uuid), "%08x-%04x-4%03x-8%03x-%012llx", (unsigned)(h >> 32),
		 (unsigned)(h >> 16) & 0xffff, (unsigned)h & 0xfff, (unsigned)(h2 >> 52) & 0xfff,
		 (unsigned long long)(h2 & 0xffffffffffffull));
	fhir_object_set_cstr(a, card, "uuid", str(a, uuid));
	if (r->scored) {
		const fhir_node_t *pred =
		    fhir_array_at(fhir_object_get_cstr(r->res.risk_assessment, "prediction"), 0);
		slice_t why = fhir_node_text(fhir_object_get_cstr(pred, "rationale"));

		fhir_object_set_cstr(
		    a, card, "summary",
		    str(a, arena_printf(a, "%.100s %.1f%%%s%s%s", outcome_text(m),
					r->probability * 100.0, r->band_label ? " (" : "",
					r->band_label ? r->band_label : "",
					r->band_label ? ")" : "")));
		fhir_object_set_cstr(a, card, "indicator", str(a, indicator_of(r->band_code)));
		fhir_object_set_cstr(
		    a, card, "detail",
		    str(a, arena_printf(a,
					"**%s**: %.1f%% (probability %.4f) by the model %s%s%s.\n\n"
					"Inputs, largest contribution first: %.*s\n\n"
					"Based on %zu resources (the RiskAssessment's basis).",
					outcome_text(m), r->probability * 100.0, r->probability,
					m->name, ver ? " " : "", ver ? ver : "", (int)why.len,
					why.ptr, r->vector->nbasis)));
	} else {
		fhir_object_set_cstr(
		    a, card, "summary",
		    str(a, arena_printf(a, "%.80s: no score (%s %.40s)", outcome_text(m),
					r->input ? "missing or invalid input" : "cannot score",
					r->input ? r->input : "")));
		fhir_object_set_cstr(a, card, "indicator", str(a, "info"));
		fhir_object_set_cstr(
		    a, card, "detail",
		    str(a, arena_printf(a, "The model %s cannot score this patient: %s.", m->name,
					r->why)));
	}
	fhir_object_set_cstr(a, src, "label", str(a, "fhirgate"));
	fhir_object_set_cstr(a, card, "source", src);
	return card;
}

/* The resources of the prefetch (resources, or Bundles of them); NULL when there is none (or
 * its patient is missing: then the store is read). */
static const fhir_node_t **
prefetched(arena_t *a, const fhir_node_t *pf, size_t *n)
{
	const fhir_node_t **out;
	size_t cap = 0, k = 0;

	if (kind_of(pf) != FHIR_OBJECT ||
	    kind_of(fhir_object_get_cstr(pf, "patient")) != FHIR_OBJECT)
		return NULL;
	for (size_t i = 0; i < fhir_object_count(pf); i++) {
		const fhir_node_t *v = fhir_object_value_at(pf, i);

		cap += slice_eq_cstr(fhir_resource_type(v), "Bundle")
			   ? fhir_array_len(fhir_object_get_cstr(v, "entry"))
			   : 1;
	}
	out = arena_zalloc(a, (cap ? cap : 1) * sizeof(*out));
	for (size_t i = 0; i < fhir_object_count(pf); i++) {
		const fhir_node_t *v = fhir_object_value_at(pf, i), *e;
		size_t j;

		if (kind_of(v) != FHIR_OBJECT)
			continue;
		if (!slice_eq_cstr(fhir_resource_type(v), "Bundle")) {
			out[k++] = v;
			continue;
		}
		FHIR_ARRAY_FOREACH(fhir_object_get_cstr(v, "entry"), j, e)
			if (kind_of(fhir_object_get_cstr(e, "resource")) == FHIR_OBJECT)
				out[k++] = fhir_object_get_cstr(e, "resource");
	}
	*n = k;
	return out;
}

static void
service(http_request_t *req, server_t *srv, const models_entry_t *m, const auth_grant_t *grant)
{
	arena_t *a = http_request_arena(req);
	slice_t body = http_request_body(req), pid, hook;
	fhir_node_t *doc = NULL, *cards, *res;
	const fhir_node_t **pf;
	features_input_t in;
	score_result_t r;
	int64_t now_ms = (int64_t)(time_now_ns() / 1000000u);
	char err[128];
	size_t n = 0;

	if (body.len == 0 ||
	    fhir_json_parse(a, body.ptr, body.len, NULL, &doc, err, sizeof(err)) < 0 ||
	    kind_of(doc) != FHIR_OBJECT) {
		respond_error(req, 400, "the request is not a JSON object");
		return;
	}
	hook = fhir_node_text(fhir_object_get_cstr(doc, "hook"));
	pid =
	    fhir_node_text(fhir_object_get_cstr(fhir_object_get_cstr(doc, "context"), "patientId"));
	if (!slice_eq_cstr(hook, "patient-view")) {
		respond_error(req, 400, "this service answers the patient-view hook");
		return;
	}
	if (pid.len == 0 || pid.len > STORE_ID_MAX) {
		respond_error(req, 400, "context.patientId is required");
		return;
	}
	if (!authorized(grant, pid)) {
		respond_error(
		    req, 403,
		    "the token may not read this patient's data (needs r and s on Patient, "
		    "Observation, Condition, MedicationRequest and MedicationStatement)");
		return;
	}
	if ((pf = prefetched(a, fhir_object_get_cstr(doc, "prefetch"), &n)) != NULL) {
		slice_t got;

		score_input_from_nodes(a, pf, n, now_ms, &in, &got);
		if (!slice_eq(got, pid)) {
			respond_error(req, 400, "the prefetched patient is not context.patientId");
			return;
		}
	} else {
		store_txn_t *t;
		int rc = store_txn_begin(rest_store(server_rest(srv)), false, &t);

		if (rc == 0) {
			rc = score_input_from_store(t, a, pid, now_ms, &in);
			store_txn_abort(t);
		}
		if (rc == -FG_ENOTFOUND) {
			respond_error(req, 404, "no such patient");
			return;
		}
		if (rc < 0) {
			respond_error(req, 500, "the store could not be read");
			return;
		}
	}
	if (score_model(a, m, &in, pid, &r) < 0) {
		respond_error(req, 500, "scoring failed");
		return;
	}
	if (!r.scored)
		models_count_refused(m->name);
	res = fhir_object_new(a);
	cards = fhir_array_new(a);
	fhir_array_append(a, cards, card_new(a, m, pid, &r));
	fhir_object_set_cstr(a, res, "cards", cards);
	respond_json(req, 200, res);
}

/* Feedback is acknowledged and logged (service, outcome, card uuid: no patient data). */
static void
feedback(http_request_t *req, const models_entry_t *m)
{
	arena_t *a = http_request_arena(req);
	slice_t body = http_request_body(req);
	fhir_node_t *doc = NULL, *fb, *it;
	char err[128];
	size_t i;

	if (body.len == 0 ||
	    fhir_json_parse(a, body.ptr, body.len, NULL, &doc, err, sizeof(err)) < 0 ||
	    kind_of(fb = fhir_object_get_cstr(doc, "feedback")) != FHIR_ARRAY) {
		respond_error(req, 400, "feedback wants {\"feedback\": [...]}");
		return;
	}
	FHIR_ARRAY_FOREACH(fb, i, it) {
		slice_t card = fhir_node_text(fhir_object_get_cstr(it, "card"));
		slice_t outcome = fhir_node_text(fhir_object_get_cstr(it, "outcome"));

		log_info("cds", "feedback service=%s card=%.*s outcome=%.*s", m->name,
			 (int)(card.len > 64 ? 64 : card.len), card.ptr,
			 (int)(outcome.len > 16 ? 16 : outcome.len), outcome.ptr);
	}
	respond_json(req, 200, NULL);
}

void
cds_handle(http_request_t *req, server_t *srv)
{
	static const http_field_t allow_get[] = {{"Allow", "GET"}, {NULL, NULL}};
	static const http_field_t allow_post[] = {{"Allow", "POST"}, {NULL, NULL}};
	slice_t meth = http_request_method(req), p = http_request_path(req), id, rest;
	models_t *mg = models_global();
	const models_set_t *s = mg != NULL ? models_acquire(mg) : NULL;
	const models_entry_t *m;
	const char *slash;
	auth_grant_t *grant = NULL;

	http_request_set_route(req, METRICS_ROUTE_OPERATION);
	if (slice_eq_cstr(p, CDS_PREFIX)) {
		if (slice_eq_cstr(meth, "GET") || slice_eq_cstr(meth, "HEAD"))
			discovery(req, s);
		else
			http_respond(req, 405, allow_get, SLICE_LIT("only GET\n"));
		models_release(s);
		return;
	}
	id = slice_make(p.ptr + sizeof(CDS_PREFIX), p.len - sizeof(CDS_PREFIX));
	slash = memchr(id.ptr, '/', id.len);
	rest = SLICE_NULL;
	if (slash != NULL) {
		rest = slice_make(slash + 1, (size_t)(id.ptr + id.len - slash - 1));
		id.len = (size_t)(slash - id.ptr);
	}
	m = models_set_find(s, id);
	if (m == NULL || (slash != NULL && !slice_eq_cstr(rest, "feedback"))) {
		respond_error(req, 404, "no such CDS service");
	} else if (!slice_eq_cstr(meth, "POST")) {
		http_respond(req, 405, allow_post, SLICE_LIT("only POST\n"));
	} else if (!authenticate(req, srv, &grant)) {
		/* answered 401 */
	} else if (slash != NULL) {
		feedback(req, m);
	} else {
		service(req, srv, m, grant);
	}
	models_release(s);
}
