/* RiskAssessment building: a model's result for a patient (probability, per-input
 * contributions) with the feature vector it came from, as FHIR R4 RiskAssessment, Device (the
 * model) and Provenance resources (docs/scoring.md § RiskAssessment). Deterministic: the same
 * inputs give byte-identical resources, so rescoring unchanged data stores nothing new. */
#ifndef SCORING_RISK_H
#define SCORING_RISK_H

#include <stdbool.h>
#include <stddef.h>

#include "fhir/tree.h"
#include "lib/arena.h"
#include "lib/slice.h"
#include "scoring/features.h"

/* What the model is. Strings borrowed for the call. */
typedef struct {
	const char *name;    /* "pce": part of the ids, so keep it stable */
	const char *version; /* "2013.1"; may be NULL */
	/* What it predicts; NULL: the binding's `outcome` line. */
	const char *outcome_system;  /* "http://loinc.org" */
	const char *outcome_code;    /* "79423-0" */
	const char *outcome_display; /* "10-year ASCVD risk"; may be NULL */
} risk_model_t;

/* How much one input moved the score (from the engine); name is the model input name. */
typedef struct {
	const char *name;
	double value;
} risk_contribution_t;

/* The resources built (trees and strings in the caller's arena). */
typedef struct {
	fhir_node_t *risk_assessment;
	fhir_node_t *device;
	fhir_node_t *provenance;
	const char *risk_assessment_id; /* "risk-<16 hex>", from patient + model name */
	const char *device_id;          /* "fhirgate-model-<16 hex>", from the model name */
	const char *provenance_id;      /* "risk-prov-<16 hex>", from patient + model name */
} risk_resources_t;

/* Decimals of probabilityDecimal (the probability is rounded to them, as text "0.0731"). */
#define RISK_PROBABILITY_DECIMALS 4
/* How many contributions the rationale lists at most (largest |contribution| first). */
#define RISK_RATIONALE_MAX 12

/* Builds the RiskAssessment, Device and Provenance for patient_id (the logical id, "123")
 * into a (everything borrowed, valid until a is reset or freed). binding gives the risk bands
 * (qualitativeRisk; none without `risk` lines) and, when model has none, the outcome.
 * contribs (may be NULL with n 0) fill the rationale.
 *
 * Returns 0, or -FG_EINVAL with *why (borrowed from v or a static string) when there is no
 * score: v->no_score is set (a missing or invalid input), probability is not a number in
 * [0, 1], or the outcome or model name is missing. */
int risk_build(arena_t *a, const risk_model_t *model, const features_binding_t *binding,
	       slice_t patient_id, const features_vector_t *v, double probability,
	       const risk_contribution_t *contribs, size_t ncontribs, risk_resources_t *out,
	       const char **why);

/* The deterministic ids alone (for a caller that needs to read or delete the stored ones),
 * into a: "risk-<hash>" of the RiskAssessment and "fhirgate-model-<hash>" of the Device. */
const char *risk_assessment_id(arena_t *a, slice_t patient_id, const char *model_name);
const char *risk_device_id(arena_t *a, const char *model_name);

#endif
