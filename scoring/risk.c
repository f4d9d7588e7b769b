/* RiskAssessment, Device and Provenance from a model result and its feature vector; every
 * element is a function of the arguments (no wall clock), see docs/scoring.md § RiskAssessment. */
#include "config.h"

#include "scoring/risk.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/buf.h"
#include "lib/err.h"
#include "lib/hash.h"

#define RISK_PROBABILITY_SYSTEM "http://terminology.hl7.org/CodeSystem/risk-probability"
#define RISK_METHOD_SYSTEM      "urn:fhirgate:model"
#define PROVENANCE_PARTICIPANT  "http://terminology.hl7.org/CodeSystem/provenance-participant-type"

/* Hash of the NUL-separated parts, as 16 hex digits after prefix. */
static const char *
risk_hash_id(arena_t *a, const char *prefix, slice_t x, const char *y)
{
	uint64_t h = hash_fnv1a64(x.ptr != NULL ? x.ptr : "", x.len, 0);

	h = hash_fnv1a64("", 1, h);
	h = hash_fnv1a64(y, strlen(y), h);
	return arena_printf(a, "%s%016llx", prefix, (unsigned long long)h);
}

const char *
risk_assessment_id(arena_t *a, slice_t patient_id, const char *model_name)
{
	return risk_hash_id(a, "risk-", patient_id, model_name);
}

const char *
risk_device_id(arena_t *a, const char *model_name)
{
	return risk_hash_id(a, "fhirgate-model-", SLICE_LIT("fhirgate"), model_name);
}

/* An instant ("2025-12-02T09:20:00.000Z") from ms since the epoch, before 1970 too. */
static void
format_instant(int64_t ms, char *out, size_t cap)
{
	int64_t secs = ms / 1000 - (ms % 1000 < 0 ? 1 : 0);
	time_t t = (time_t)secs;
	struct tm tm;

	gmtime_r(&t, &tm);
	snprintf(out, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
		 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms - secs * 1000));
}

static fhir_node_t *
str(arena_t *a, const char *s)
{
	return fhir_string_new(a, slice_cstr(s));
}

static void
set_str(arena_t *a, fhir_node_t *obj, const char *key, const char *s)
{
	if (s != NULL && s[0] != '\0')
		fhir_object_set_cstr(a, obj, key, str(a, s));
}

static fhir_node_t *
reference(arena_t *a, const char *ref)
{
	fhir_node_t *r = fhir_object_new(a);

	set_str(a, r, "reference", ref);
	return r;
}

/* A CodeableConcept with one coding, and text when given. */
static fhir_node_t *concept(arena_t *a, const char *system, const char *code, const char *display,
			    const char *text)
{
	fhir_node_t *cc = fhir_object_new(a), *codings = fhir_array_new(a), *c = fhir_object_new(a);

	set_str(a, c, "system", system);
	set_str(a, c, "code", code);
	set_str(a, c, "display", display);
	fhir_array_append(a, codings, c);
	fhir_object_set_cstr(a, cc, "coding", codings);
	set_str(a, cc, "text", text);
	return cc;
}

static const char *
risk_probability_display(const char *code)
{
	static const struct {
		const char *code, *display;
	} d[] = {
	    {"negligible", "Negligible likelihood"},
	    {"low", "Low likelihood"},
	    {"moderate", "Moderate likelihood"},
	    {"high", "High likelihood"},
	    {"certain", "Certain"},
	};

	for (size_t i = 0; i < sizeof(d) / sizeof(d[0]); i++)
		if (strcmp(d[i].code, code) == 0)
			return d[i].display;
	return NULL;
}

static int
cmp_contrib(const void *x, const void *y)
{
	const risk_contribution_t *p = x, *q = y;
	double ap = fabs(p->value), aq = fabs(q->value);

	if (ap != aq)
		return ap > aq ? -1 : 1;
	return strcmp(p->name, q->name);
}

/* "age 55 y: +0.4210; total cholesterol 213 mg/dL: +0.1203; ..." by |contribution|. */
static const char *
rationale(arena_t *a, const features_vector_t *v, const risk_contribution_t *contribs, size_t n)
{
	risk_contribution_t *sorted;
	buf_t b = BUF_INIT;
	const char *out;
	size_t m = 0;

	if (n == 0)
		return NULL;
	/* Contributions that are not numbers (an engine fault) are left out, not printed. */
	sorted = arena_alloc(a, n * sizeof(*sorted));
	for (size_t i = 0; i < n; i++)
		if (contribs[i].name != NULL && isfinite(contribs[i].value))
			sorted[m++] = contribs[i];
	if (m == 0)
		return NULL;
	n = m;
	qsort(sorted, n, sizeof(*sorted), cmp_contrib);
	for (size_t i = 0; i < n && i < RISK_RATIONALE_MAX; i++) {
		const feature_t *f = features_vector_get(v, sorted[i].name);
		double c = sorted[i].value;

		if (i > 0)
			buf_append_cstr(&b, "; ");
		if (f == NULL)
			buf_append_cstr(&b, sorted[i].name);
		else if (f->kind == FEATURE_NUMBER)
			buf_printf(&b, "%s %.6g%s%s", f->label, f->number, f->unit ? " " : "",
				   f->unit ? f->unit : "");
		else if (f->kind == FEATURE_STRING)
			buf_printf(&b, "%s %s", f->label, f->string);
		else
			buf_append_cstr(&b, f->label);
		if (f != NULL && f->defaulted)
			buf_append_cstr(&b, " (default)");
		/* +0.0000 rather than -0.0000 for a tiny negative, so the text is stable. */
		buf_printf(&b, ": %+.4f", fabs(c) < 0.00005 ? 0.0 : c);
	}
	out = arena_strndup(a, b.data, b.len);
	buf_free(&b);
	return out;
}

int
risk_build(arena_t *a, const risk_model_t *model, const features_binding_t *binding,
	   slice_t patient_id, const features_vector_t *v, double probability,
	   const risk_contribution_t *contribs, size_t ncontribs, risk_resources_t *out,
	   const char **why)
{
	features_outcome_t oc = {model->outcome_system, model->outcome_code,
				 model->outcome_display};
	fhir_node_t *ra, *dev, *prov, *arr, *pred, *o;
	char prob[32], recorded[80];
	const char *band_label, *band_code, *occurrence, *method_text, *text;
	double rounded;

	memset(out, 0, sizeof(*out));
	*why = NULL;
	if (v->no_score != NULL) {
		*why = v->no_score;
		return -FG_EINVAL;
	}
	if (isnan(probability) || probability < 0 || probability > 1) {
		*why = "the model's probability is not a number from 0 to 1";
		return -FG_EINVAL;
	}
	if (oc.code == NULL && binding != NULL)
		oc = features_binding_outcome(binding);
	if (model->name == NULL || model->name[0] == '\0' || oc.code == NULL ||
	    patient_id.len == 0) {
		*why = "the model has no name or outcome, or the patient no id";
		return -FG_EINVAL;
	}
	snprintf(prob, sizeof(prob), "%.*f", RISK_PROBABILITY_DECIMALS, probability);
	rounded = strtod(prob, NULL);
	/* No clinical time (only Patient data): the reference time the vector was bound at. */
	format_instant(v->source_time != NULL ? v->source_ms : v->ref_ms, recorded,
		       sizeof(recorded));
	occurrence = v->source_time != NULL ? v->source_time : recorded;
	out->risk_assessment_id = risk_assessment_id(a, patient_id, model->name);
	out->device_id = risk_device_id(a, model->name);
	out->provenance_id = risk_hash_id(a, "risk-prov-", patient_id, model->name);
	method_text = model->version != NULL ? arena_printf(a, "%s %s", model->name, model->version)
					     : model->name;

	/* Device: the model as the performer. */
	dev = fhir_object_new(a);
	set_str(a, dev, "resourceType", "Device");
	set_str(a, dev, "id", out->device_id);
	arr = fhir_array_new(a);
	o = fhir_object_new(a);
	set_str(a, o, "name", model->name);
	set_str(a, o, "type", "model-name");
	fhir_array_append(a, arr, o);
	fhir_object_set_cstr(a, dev, "deviceName", arr);
	o = fhir_object_new(a);
	set_str(a, o, "text", "fhirgate risk model");
	fhir_object_set_cstr(a, dev, "type", o);
	if (model->version != NULL) {
		arr = fhir_array_new(a);
		o = fhir_object_new(a);
		set_str(a, o, "value", model->version);
		fhir_array_append(a, arr, o);
		fhir_object_set_cstr(a, dev, "version", arr);
	}

	/* RiskAssessment, members in R4 order. */
	ra = fhir_object_new(a);
	set_str(a, ra, "resourceType", "RiskAssessment");
	set_str(a, ra, "id", out->risk_assessment_id);
	set_str(a, ra, "status", "final");
	fhir_object_set_cstr(a, ra, "method",
			     concept(a, RISK_METHOD_SYSTEM, model->name, method_text, method_text));
	fhir_object_set_cstr(a, ra, "code", concept(a, oc.system, oc.code, oc.display, oc.display));
	fhir_object_set_cstr(
	    a, ra, "subject",
	    reference(a, arena_printf(a, "Patient/%.*s", (int)patient_id.len, patient_id.ptr)));
	set_str(a, ra, "occurrenceDateTime", occurrence);
	fhir_object_set_cstr(a, ra, "performer",
			     reference(a, arena_printf(a, "Device/%s", out->device_id)));
	if (v->nbasis > 0) {
		arr = fhir_array_new(a);
		for (size_t i = 0; i < v->nbasis; i++)
			fhir_array_append(a, arr, reference(a, v->basis[i]));
		fhir_object_set_cstr(a, ra, "basis", arr);
	}
	pred = fhir_object_new(a);
	fhir_object_set_cstr(a, pred, "outcome",
			     concept(a, oc.system, oc.code, oc.display, oc.display));
	fhir_object_set_cstr(a, pred, "probabilityDecimal", fhir_number_new(a, slice_cstr(prob)));
	if (binding != NULL && features_binding_band(binding, rounded, &band_label, &band_code))
		fhir_object_set_cstr(a, pred, "qualitativeRisk",
				     concept(a, RISK_PROBABILITY_SYSTEM, band_code,
					     risk_probability_display(band_code), band_label));
	text = rationale(a, v, contribs, ncontribs);
	set_str(a, pred, "rationale", text);
	arr = fhir_array_new(a);
	fhir_array_append(a, arr, pred);
	fhir_object_set_cstr(a, ra, "prediction", arr);

	/* Provenance: who (the model) made it from what (the basis), when (the data's time). */
	prov = fhir_object_new(a);
	set_str(a, prov, "resourceType", "Provenance");
	set_str(a, prov, "id", out->provenance_id);
	arr = fhir_array_new(a);
	fhir_array_append(
	    a, arr, reference(a, arena_printf(a, "RiskAssessment/%s", out->risk_assessment_id)));
	fhir_object_set_cstr(a, prov, "target", arr);
	set_str(a, prov, "recorded", recorded);
	arr = fhir_array_new(a);
	o = fhir_object_new(a);
	fhir_object_set_cstr(a, o, "type",
			     concept(a, PROVENANCE_PARTICIPANT, "assembler", "Assembler", NULL));
	fhir_object_set_cstr(a, o, "who",
			     reference(a, arena_printf(a, "Device/%s", out->device_id)));
	fhir_array_append(a, arr, o);
	fhir_object_set_cstr(a, prov, "agent", arr);
	if (v->nbasis > 0) {
		arr = fhir_array_new(a);
		for (size_t i = 0; i < v->nbasis; i++) {
			o = fhir_object_new(a);
			set_str(a, o, "role", "source");
			fhir_object_set_cstr(a, o, "what", reference(a, v->basis[i]));
			fhir_array_append(a, arr, o);
		}
		fhir_object_set_cstr(a, prov, "entity", arr);
	}
	out->risk_assessment = ra;
	out->device = dev;
	out->provenance = prov;
	return 0;
}
