/* The risk models in force for the server: every `NAME.pmml` of scoring.models_dir with its
 * binding `NAME.bind`, loaded one by one (a model that fails is logged and skipped, and on a
 * reload a model that fails keeps its previous good version), swapped as a set on reload and
 * kept alive by references while a scoring step uses them. Also the scoring counters. */
#ifndef GATEWAY_MODELS_H
#define GATEWAY_MODELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/buf.h"
#include "scoring/features.h"
#include "scoring/pmml.h"

typedef struct models models_t;
typedef struct models_set models_set_t;

/* One loaded model. Immutable; borrowed from the set that holds it. */
typedef struct {
	const char *name; /* the file name without .pmml ("pce"): RiskAssessment ids, CDS ids */
	const char *path; /* of the .pmml */
	pmml_model_t *pmml;
	features_binding_t *binding;
} models_entry_t;

/* Loads every model of dir (empty: none, scoring is off). Never fails for a bad model (it is
 * logged with its file:line error and skipped); a folder that cannot be read is logged and
 * gives no models. Caller owns *out (models_free). */
void models_open(const char *dir, models_t **out);
/* Loads the folder again: each model that loads replaces its previous version; one that fails
 * keeps its previous version (logged); models whose files are gone are dropped. */
void models_reload(models_t *m);
/* True when a file in the folder changed (name, size or mtime) since the last (re)load. */
bool models_changed(models_t *m);
/* Accepts NULL; every set acquired must have been released. */
void models_free(models_t *m);

/* The set in force, kept alive until models_release (any thread). */
const models_set_t *models_acquire(models_t *m);
/* Accepts NULL. */
void models_release(const models_set_t *s);
size_t models_set_count(const models_set_t *s);
/* Borrowed, valid until the set is released; NULL past the end or for an unknown name. */
const models_entry_t *models_set_at(const models_set_t *s, size_t i);
const models_entry_t *models_set_find(const models_set_t *s, slice_t name);

/* The registry the write path and the writer's scoring step use (NULL: scoring is off).
 * Set once by `serve` before the writer starts, cleared before it is freed. */
void models_set_global(models_t *m);
models_t *models_global(void);

/* Counters for /metrics (process-wide, any thread). */
void models_count_written(const char *model);
void models_count_refused(const char *model);
/* Appends the scoring metrics (models loaded, load failures, scores written and refused
 * inputs by model) to out. */
void models_metrics_write(buf_t *out);

#endif
