/* The inside of a loaded binding, shared by its parser (features_parse.c) and the binder
 * (features.c). Everything lives in the binding's arena. */
#ifndef SCORING_FEATURES_INT_H
#define SCORING_FEATURES_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/arena.h"
#include "scoring/features.h"

/* Where an input comes from (the word after its name in the file). */
typedef enum {
	FB_AGE,
	FB_GENDER,
	FB_RACE,
	FB_OBSERVATION,      /* a number: latest Observation (or component) with a code */
	FB_OBSERVATION_FLAG, /* 0/1: latest Observation's coded value is one of the `yes` codes */
	FB_CONDITION,        /* 0/1: an active Condition with a code */
	FB_MEDICATION,       /* 0/1: an active MedicationRequest/Statement with an RxNorm code */
} fb_source_t;

typedef struct {
	const char *system;
	const char *code;
	size_t code_len;
	bool prefix; /* written "E11*": matches every code that starts with E11 */
} fb_code_t;

/* An accepted unit (UCUM code) and the factor to the binding's unit. */
typedef struct {
	const char *ucum;
	double factor;
} fb_unit_t;

typedef struct {
	fb_code_t *v;
	size_t n, cap;
} fb_codes_t;

typedef struct {
	const char *name;
	const char *label;
	fb_source_t source;
	fb_codes_t codes;  /* what the source matches */
	fb_codes_t panels; /* observation: components count only inside these (none: any) */
	fb_codes_t yes;    /* observation-flag: the values that mean 1 */
	fb_unit_t *units;  /* observation: [0] is the binding's unit (factor 1) */
	size_t nunits, units_cap;
	/* Look-back window ("within 2y"): count and unit ('y', 'm' for months, 'w', 'd', 'h');
	 * count 0: no window. */
	int64_t window_count;
	char window_unit;
	const char *window_text;
	bool has_default;
	feature_kind_t default_kind;
	double default_number;
	const char *default_string;
} fb_input_t;

typedef struct {
	const char *label;
	const char *code;
	bool bounded; /* false for the last band ("else") */
	double below;
} fb_band_t;

struct features_binding {
	arena_t *a;
	fb_input_t *inputs;
	size_t n, cap;
	features_outcome_t outcome;
	fb_band_t *bands;
	size_t nbands, bands_cap;
};

#endif
