/* Feature binding: which model input comes from which FHIR data of a patient (a binding file
 * beside each model, docs/scoring.md § Feature bindings), and the binder that turns a patient's
 * resources into a model's feature vector with its basis (the versioned resources used). */
#ifndef SCORING_FEATURES_H
#define SCORING_FEATURES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fhir/tree.h"
#include "lib/arena.h"
#include "lib/slice.h"

/* A loaded binding file: immutable once loaded, so threads may share it. */
typedef struct features_binding features_binding_t;

/* Loads the binding file at path (a list file it names, `medication list FILE`, is read
 * relative to the binding's folder). Returns 0 with *out (caller owns, features_binding_free),
 * or -FG_ECONFIG with the first problem as "path:line:col: what is wrong" in err (cap bytes;
 * a list file that cannot be read is such a problem, at the line naming it), or -FG_EIO when
 * the binding file itself cannot be opened. */
int features_binding_load(const char *path, features_binding_t **out, char *err, size_t cap);
/* The same from text in memory; name is used in messages, dir is where list files are (NULL:
 * the current directory). */
int features_binding_parse(const char *name, const char *text, size_t len, const char *dir,
			   features_binding_t **out, char *err, size_t cap);
/* Accepts NULL. */
void features_binding_free(features_binding_t *b);

/* The number of inputs and the name of input i ("age"), in the file's order (borrowed, valid
 * until the binding is freed). */
size_t features_binding_count(const features_binding_t *b);
const char *features_binding_input_name(const features_binding_t *b, size_t i);

/* The binding's `outcome` line: what the model predicts. Borrowed, valid until the binding is
 * freed; all three NULL when the file has no outcome line. */
typedef struct {
	const char *system;  /* "http://loinc.org" */
	const char *code;    /* "79423-0" */
	const char *display; /* "10-year ASCVD risk"; may be NULL */
} features_outcome_t;
features_outcome_t features_binding_outcome(const features_binding_t *b);

/* The band of a probability by the binding's `risk` lines: label is the binding's word
 * ("borderline"), code the risk-probability code ("moderate",
 * http://terminology.hl7.org/CodeSystem/risk-probability). Returns false (both NULL) when the
 * binding has no risk lines. Borrowed, valid until the binding is freed. */
bool features_binding_band(const features_binding_t *b, double probability, const char **label,
			   const char **code);

/* The resource kinds a binding reads. */
typedef enum {
	FEATURES_PATIENT = 0,
	FEATURES_OBSERVATION,
	FEATURES_CONDITION,
	FEATURES_MEDICATION_REQUEST,
	FEATURES_MEDICATION_STATEMENT,
} features_res_type_t;

/* One stored resource: its tree, logical id and version (0: unknown, the reference in the
 * basis is then versionless). All borrowed for the duration of the call. */
typedef struct {
	const fhir_node_t *node;
	slice_t id;
	uint32_t version;
} features_res_t;

/* Everything the binder may read about one patient. Arrays may be in any order and may hold
 * resources that concern no input (they are skipped). */
typedef struct {
	const features_res_t *patient; /* NULL: age, sex and race are missing */
	const features_res_t *observations;
	size_t nobservations;
	const features_res_t *conditions;
	size_t nconditions;
	const features_res_t *medication_requests;
	size_t nmedication_requests;
	const features_res_t *medication_statements;
	size_t nmedication_statements;
	/* "Now" for the model: age is taken at this time and look-back windows end at it
	 * (milliseconds since the Unix epoch, UTC). Data after it is not used. */
	int64_t ref_ms;
} features_input_t;

typedef enum {
	FEATURE_MISSING = 0, /* no value: the input is refused or absent and has no default */
	FEATURE_NUMBER,
	FEATURE_STRING,
} feature_kind_t;

/* What became of one input. */
typedef enum {
	FEATURE_FOUND = 0, /* taken from the data */
	FEATURE_ABSENT,    /* no data for it: missing, or the binding's default */
	FEATURE_INVALID,   /* data was there but unusable (unknown unit, partial birthDate, ...) */
} feature_status_t;

/* One input's value. Strings are borrowed from the binding or the vector's arena. */
typedef struct {
	const char *name;  /* the model input ("total_cholesterol") */
	const char *label; /* for people ("total cholesterol") */
	const char *unit;  /* of a number ("mg/dL", "y"), or NULL */
	feature_kind_t kind;
	double number;
	const char *string;
	feature_status_t status;
	bool defaulted; /* the value is the binding's default (status ABSENT or INVALID) */
	/* Why the input has no value from the data ("no Observation http://loinc.org|2085-9 in
	 * the last 2y", "unit 'g/L' cannot be converted to mg/dL"); NULL when FOUND. */
	const char *reason;
	/* The clinical time of the data used (effective time of an Observation, onset or record
	 * time of a Condition, authoredOn / effective time of a medication), as written in the
	 * resource and in ms; source_time NULL when the input has none (Patient data, a flag
	 * that is 0). */
	const char *source_time;
	int64_t source_ms;
	/* The versioned references of the resources used ("Observation/abc/_history/3"). */
	const char **basis;
	size_t nbasis;
} feature_t;

/* A feature vector: one feature per binding input, in the binding's order. */
typedef struct {
	feature_t *items;
	size_t n;
	/* Every resource used, each once, sorted (a RiskAssessment's basis). */
	const char **basis;
	size_t nbasis;
	/* The latest source time among the inputs (text as in its resource, and ms); NULL when
	 * no input has one. */
	const char *source_time;
	int64_t source_ms;
	int64_t ref_ms; /* the reference time the vector was bound at */
	/* NULL when every input has a value (scoring can go ahead); else why there is no score,
	 * naming the first input without a value: "missing input hdl: no Observation ..." or
	 * "invalid input total_cholesterol: unit 'g/L' ...". */
	const char *no_score;
} features_vector_t;

/* Binds the inputs of b from in. Everything in *out is allocated in a (borrowed, valid until
 * a is reset or freed; out->items may point into the binding's strings, so keep b alive as
 * long). Returns 0 (also when an input is missing: see out->no_score), or -FG_EINVAL on bad
 * arguments. Pure: the same binding, resources and ref_ms give the same vector. */
int features_bind(arena_t *a, const features_binding_t *b, const features_input_t *in,
		  features_vector_t *out);

/* The feature named name in v, or NULL. */
const feature_t *features_vector_get(const features_vector_t *v, const char *name);

/* Whether a resource of this type with this coding could be an input of b, so a write path can
 * tell cheaply whether a change concerns the model: an Observation code (also as a panel
 * component), a Condition code (prefixes too), a medication's RxNorm code. A Patient
 * concerns b when b reads age, sex or race (system and code are then ignored). */
bool features_binding_uses_code(const features_binding_t *b, features_res_type_t type,
				slice_t system, slice_t code);
/* The same for a whole resource: any coding of Observation.code, Observation.component.code,
 * Condition.code or medicationCodeableConcept. False for resource types b never reads. */
bool features_binding_uses_resource(const features_binding_t *b, const fhir_node_t *res);

#endif
