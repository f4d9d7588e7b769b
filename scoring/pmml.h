/* PMML 4.4 regression models: load (with libxml2, no network, no DTDs), check the supported
 * subset, run the model's own ModelVerification, and evaluate with per-input contributions. */
#ifndef SCORING_PMML_H
#define SCORING_PMML_H

#include <stdbool.h>
#include <stddef.h>

#include "lib/slice.h"

/* A loaded model. Immutable after load: several threads may call pmml_eval at once. */
typedef struct pmml_model pmml_model_t;

/* Model files larger than this are refused. */
#define PMML_MAX_FILE_BYTES ((size_t)16 << 20)

typedef enum {
	PMML_FUNCTION_REGRESSION = 0,
	PMML_FUNCTION_CLASSIFICATION = 1,
} pmml_function_t;

typedef enum {
	PMML_OPTYPE_CONTINUOUS = 0,
	PMML_OPTYPE_CATEGORICAL = 1,
	PMML_OPTYPE_ORDINAL = 2,
} pmml_optype_t;

typedef enum {
	PMML_DATATYPE_DOUBLE = 0, /* also float */
	PMML_DATATYPE_INTEGER = 1,
	PMML_DATATYPE_BOOLEAN = 2,
	PMML_DATATYPE_STRING = 3,
} pmml_datatype_t;

/* An input (active MiningField) as the model declares it. Strings borrowed from the model. */
typedef struct {
	const char *name;
	const char *display_name; /* DataField@displayName, or NULL */
	pmml_optype_t optype;
	pmml_datatype_t datatype;
	/* The DataDictionary's valid range (its first Interval), when it has one. */
	bool has_interval;
	double low, high; /* -HUGE_VAL / HUGE_VAL for an open end */
	bool low_closed, high_closed;
	/* The valid values of a categorical or ordinal field (Value with property valid). */
	size_t n_values;
	const char *const *values;
	/* MiningField@missingValueReplacement, or NULL. */
	const char *missing_replacement;
} pmml_field_info_t;

typedef enum {
	PMML_VALUE_MISSING = 0,
	PMML_VALUE_NUMBER = 1,
	PMML_VALUE_STRING = 2,
} pmml_value_kind_t;

typedef struct {
	pmml_value_kind_t kind;
	double number;
	slice_t str; /* borrowed from the caller for the duration of pmml_eval */
} pmml_value_t;

/* One named input; names not among the model's inputs are ignored, absent inputs are missing. */
typedef struct {
	const char *name;
	pmml_value_t value;
} pmml_input_t;

static inline pmml_value_t
pmml_value_number(double v)
{
	return (pmml_value_t){PMML_VALUE_NUMBER, v, SLICE_NULL};
}

static inline pmml_value_t
pmml_value_string(const char *s)
{
	return (pmml_value_t){PMML_VALUE_STRING, 0, slice_cstr(s)};
}

static inline pmml_value_t
pmml_value_missing(void)
{
	return (pmml_value_t){PMML_VALUE_MISSING, 0, SLICE_NULL};
}

typedef enum {
	PMML_STATUS_OK = 0,
	PMML_STATUS_MISSING = 1, /* a needed input is missing and has no replacement */
	PMML_STATUS_INVALID = 2, /* an input is invalid (outside its range, unknown category) */
	PMML_STATUS_ERROR = 3,   /* the arithmetic failed (ln of 0, division by 0, overflow) */
} pmml_status_t;

/* The output of pmml_eval; pmml_result_clear frees what it holds (the caller owns it). */
typedef struct {
	pmml_status_t status;
	const char
	    *field; /* not OK: the input (or derived field) at fault, borrowed from the model */
	char message[256]; /* not OK: e.g. "invalid input age=35 (valid: [40, 79])" */
	double score;      /* regression: the predicted value; classification: the probability
			    * of the first RegressionTable's targetCategory */
	const char *predicted_category; /* classification: the most probable category, else NULL */
	double linear;                  /* the linear predictor of the first RegressionTable (before
					 * normalization) */
	double baseline;       /* the part of linear attributed to no input: the intercept and the
				* terms that carry no input (see docs/scoring.md) */
	double *probabilities; /* classification: one per pmml_category_get, else NULL */
	double *contributions; /* one per pmml_input_get: baseline + their sum == linear */
	size_t n_categories, n_inputs;
	pmml_value_t *outputs; /* one per pmml_output_name (strings borrowed from the model) */
	size_t n_outputs;
} pmml_result_t;

/* Load a model. On failure returns a negative FG_E* code, *out stays NULL and err holds
 * "FILE:LINE: what is wrong" (or "FILE:LINE: Element: not supported (...)"). The caller owns
 * *out (pmml_free). name labels errors in pmml_load_mem. */
int pmml_load_file(const char *path, pmml_model_t **out, char *err, size_t errlen);
int pmml_load_mem(const char *name, const char *data, size_t len, pmml_model_t **out, char *err,
		  size_t errlen);
/* Accepts NULL. */
void pmml_free(pmml_model_t *m);

/* Strings borrowed from the model, valid until pmml_free; NULL when the file has none. */
const char *pmml_model_name(const pmml_model_t *m);        /* RegressionModel@modelName */
const char *pmml_model_version(const pmml_model_t *m);     /* Header@modelVersion */
const char *pmml_model_description(const pmml_model_t *m); /* Header@description */
const char *pmml_model_copyright(const pmml_model_t *m);   /* Header@copyright */
const char *pmml_model_application(const pmml_model_t *m); /* Header/Application@name */
const char *pmml_model_annotation(const pmml_model_t *m);  /* Header/Annotation texts, joined */
const char *pmml_model_target(const pmml_model_t *m);      /* the target MiningField */
/* The value of Header/Extension[@name=name]/@value (e.g. fhirgate's "loinc"), or NULL. */
const char *pmml_model_extension(const pmml_model_t *m, const char *name);
pmml_function_t pmml_model_function(const pmml_model_t *m);

size_t pmml_input_count(const pmml_model_t *m);
/* Borrowed, valid until pmml_free; NULL past the end. */
const pmml_field_info_t *pmml_input_get(const pmml_model_t *m, size_t i);
/* Classification: the RegressionTables' targetCategory values, in file order. */
size_t pmml_category_count(const pmml_model_t *m);
const char *pmml_category_get(const pmml_model_t *m, size_t i);
/* The Output's OutputField names, in file order. */
size_t pmml_output_count(const pmml_model_t *m);
const char *pmml_output_name(const pmml_model_t *m, size_t i);

/* Evaluate. Returns 0 with res->status OK and a score, or -FG_EINVAL with res->status saying
 * why there is no score (res->field, res->message). Always pmml_result_clear res afterwards. */
int pmml_eval(const pmml_model_t *m, const pmml_input_t *inputs, size_t n_inputs,
	      pmml_result_t *res);
void pmml_result_clear(pmml_result_t *res);

#endif
