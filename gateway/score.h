/* Scoring a patient with the models in force (docs/scoring.md § The hook): the write path's
 * hook that queues a work item when a write concerns a model, the writer's step that runs
 * pending work after each commit, and what $score, CDS Hooks and `fhirgate score` share
 * (the patient's data from the store or from resources, one model's result, storing it). */
#ifndef GATEWAY_SCORE_H
#define GATEWAY_SCORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fhir/tree.h"
#include "gateway/models.h"
#include "lib/arena.h"
#include "lib/slice.h"
#include "scoring/features.h"
#include "scoring/risk.h"
#include "store/store.h"

/* The kind byte of scoring work items (payload: the patient's logical id). */
#define SCORE_WORK_KIND 1

/* The write path's hook, called in the write transaction t for every resource a write changed
 * (after store_res_put when it wrote a version) or is about to delete (before
 * store_res_delete, with an empty body: the stored version is read). When the resource could
 * be an input of a model in force (features_binding_uses_resource) and names its patient
 * (subject/patient reference, or the Patient itself), a work item for that patient is put in
 * t, once per patient per transaction (store_txn_serial tells them apart). Returns 0 or a
 * store error. */
int score_hook_note(store_txn_t *t, slice_t type, slice_t id, slice_t body);

/* Says that work items may be waiting that this process did not note (another process, such
 * as `fhirgate import`, wrote them): the next score_run_pending looks. */
void score_mark_pending(void);

/* The writer's step after each commit (and once when it starts): scores the patients of the
 * pending work items, each model's RiskAssessment, Device and Provenance stored and the item
 * deleted in one write transaction. Does nothing without models. Writer thread only. */
void score_run_pending(store_t *s);

/* One model's result for a patient. Everything in the arena given to score_model. */
typedef struct {
	const models_entry_t *model;
	bool scored;
	double probability;
	const char *band_label, *band_code; /* NULL without `risk` lines */
	const char *why;                    /* no score: "missing input hdl: no Observation ..." */
	const char *input;                  /* no score: the input at fault (may be NULL) */
	features_vector_t *vector;
	risk_contribution_t *contribs; /* by decreasing |value| */
	size_t ncontribs;
	risk_resources_t res; /* when scored */
} score_result_t;

/* Binds in to m, evaluates and builds the resources for patient_id (the logical id). Returns
 * 0 (see out->scored) or -FG_EINVAL on bad arguments. */
int score_model(arena_t *a, const models_entry_t *m, const features_input_t *in, slice_t patient_id,
		score_result_t *out);

/* The patient's Patient, Observations, Conditions, MedicationRequests and MedicationStatements
 * (with ids and versions) from the store, through the search index, into in (arena a).
 * -FG_ENOTFOUND when the patient does not exist (or is deleted). */
int score_input_from_store(store_txn_t *t, arena_t *a, slice_t patient_id, int64_t ref_ms,
			   features_input_t *in);
/* The same from resources (a Bundle's entries, a CDS prefetch): resources of other types, and
 * ones about another patient, are skipped. *patient_id is the Patient's id, or the patient the
 * first resource names when there is no Patient (empty when none). Versions come from
 * meta.versionId (0 without). */
void score_input_from_nodes(arena_t *a, const fhir_node_t *const *res, size_t n, int64_t ref_ms,
			    features_input_t *in, slice_t *patient_id);

/* Stores a result's RiskAssessment, Device and Provenance with their index entries (unchanged
 * ones write nothing); *written: the RiskAssessment got a new version. */
int score_store(store_txn_t *t, arena_t *a, const score_result_t *r, uint64_t now_ns,
		bool *written);

/* Scores patient_id with every model of s (or only the one named model, when not empty),
 * from the store in t, storing what scores when store is set. Results in a, one per model
 * tried. -FG_ENOTFOUND: no such patient; -FG_EINVAL: no such model. */
int score_patient(store_txn_t *t, arena_t *a, const models_set_t *s, slice_t patient_id,
		  slice_t model, bool store, score_result_t **out, size_t *n);

/* The patient a resource concerns: its own id for a Patient, else the id of its subject or
 * patient reference to a Patient. False when none. */
bool score_patient_of(const fhir_node_t *res, slice_t *patient_id);

#endif
