/* Test helpers for scoring/: a patient's resources from JSON text, sorted into the binder's
 * input arrays (id from "id", version from meta.versionId). Included by test_features.c and
 * test_risk.c only. */
#ifndef TESTS_SCORING_FIXTURE_H
#define TESTS_SCORING_FIXTURE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fhir/json.h"
#include "fhir/search.h"
#include "fhir/tree.h"
#include "lib/arena.h"
#include "lib/buf.h"
#include "lib/slice.h"
#include "lib/xalloc.h"
#include "scoring/features.h"

#define FX_MAX 32

typedef struct {
	arena_t *a;
	features_res_t patient;
	features_res_t obs[FX_MAX], cond[FX_MAX], mreq[FX_MAX], mst[FX_MAX];
	size_t nobs, ncond, nmreq, nmst;
	features_input_t in;
} fx_t;

/* Milliseconds of an RFC 3339 time or date (the start of it). */
static inline int64_t
fx_ms(const char *when)
{
	int64_t lo, hi;

	if (!fhir_search_date_range(slice_cstr(when), &lo, &hi))
		fail_msg("bad time %s", when);
	return lo;
}

static inline void
fx_init(fx_t *fx, const char *ref)
{
	memset(fx, 0, sizeof(*fx));
	fx->a = arena_new(0);
	fx->in.ref_ms = fx_ms(ref);
}

/* Points the input arrays at what was added (call after the last fx_add). */
static inline const features_input_t *
fx_input(fx_t *fx)
{
	fx->in.patient = fx->patient.node != NULL ? &fx->patient : NULL;
	fx->in.observations = fx->obs;
	fx->in.nobservations = fx->nobs;
	fx->in.conditions = fx->cond;
	fx->in.nconditions = fx->ncond;
	fx->in.medication_requests = fx->mreq;
	fx->in.nmedication_requests = fx->nmreq;
	fx->in.medication_statements = fx->mst;
	fx->in.nmedication_statements = fx->nmst;
	return &fx->in;
}

static inline void
fx_add(fx_t *fx, const char *json)
{
	fhir_node_t *n, *meta;
	features_res_t r = {0};
	char err[256];
	slice_t type;
	uint64_t v = 0;

	if (fhir_json_parse(fx->a, json, strlen(json), NULL, &n, err, sizeof(err)) != 0)
		fail_msg("fixture JSON: %s: %s", err, json);
	r.node = n;
	r.id = fhir_node_text(fhir_object_get_cstr(n, "id"));
	meta = fhir_object_get_cstr(n, "meta");
	if (meta != NULL &&
	    slice_to_u64(fhir_node_text(fhir_object_get_cstr(meta, "versionId")), &v))
		r.version = (uint32_t)v;
	type = fhir_resource_type(n);
	if (slice_eq_cstr(type, "Patient"))
		fx->patient = r;
	else if (slice_eq_cstr(type, "Observation") && fx->nobs < FX_MAX)
		fx->obs[fx->nobs++] = r;
	else if (slice_eq_cstr(type, "Condition") && fx->ncond < FX_MAX)
		fx->cond[fx->ncond++] = r;
	else if (slice_eq_cstr(type, "MedicationRequest") && fx->nmreq < FX_MAX)
		fx->mreq[fx->nmreq++] = r;
	else if (slice_eq_cstr(type, "MedicationStatement") && fx->nmst < FX_MAX)
		fx->mst[fx->nmst++] = r;
	else
		fail_msg("fixture: unexpected resource %s", json);
}

/* Every entry of a collection Bundle in tests/data/scoring/<name>. */
static inline void
fx_add_bundle(fx_t *fx, const char *name)
{
	char *path = xasprintf("%s/scoring/%s", TEST_DATA_DIR, name);
	FILE *f = fopen(path, "rb");
	buf_t b = BUF_INIT;
	char chunk[4096], err[256];
	size_t n;
	fhir_node_t *bundle, *entries, *e;

	if (f == NULL)
		fail_msg("cannot open %s", path);
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		buf_append(&b, chunk, n);
	fclose(f);
	if (fhir_json_parse(fx->a, b.data, b.len, NULL, &bundle, err, sizeof(err)) != 0)
		fail_msg("%s: %s", path, err);
	entries = fhir_object_get_cstr(bundle, "entry");
	FHIR_ARRAY_FOREACH(entries, n, e) {
		buf_t one = BUF_INIT;

		fhir_json_write(fhir_object_get_cstr(e, "resource"), false, &one);
		fx_add(fx, arena_strndup(fx->a, one.data, one.len));
		buf_free(&one);
	}
	buf_free(&b);
	free(path);
}

static inline void
fx_free(fx_t *fx)
{
	arena_free(fx->a);
}

/* Loads a binding from etc/models/<name>. */
static inline features_binding_t *
fx_shipped(const char *name)
{
	char *path = xasprintf("%s/%s", MODELS_DIR, name);
	features_binding_t *b = NULL;
	char err[512];

	if (features_binding_load(path, &b, err, sizeof(err)) != 0)
		fail_msg("%s", err);
	free(path);
	return b;
}

#endif
