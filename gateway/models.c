/* The risk models in force: per-model loading, reference-counted sets swapped on reload, and the
 * scoring counters. */
#include "config.h"

#include "gateway/models.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/maps.h"
#include "lib/err.h"
#include "lib/log.h"
#include "lib/xalloc.h"

#define MODELS_MAX 64 /* models in a folder, and distinct names counted */

/* A model shared by the sets that hold it (a reload keeps a model whose new file fails). */
typedef struct {
	models_entry_t e;
	atomic_uint refs;
} model_ref_t;

struct models_set {
	model_ref_t *m[MODELS_MAX];
	size_t n;
	atomic_uint refs; /* one for being in force, one per acquire */
};

typedef struct {
	char name[64];
	_Atomic uint64_t written, refused;
} model_stats_t;

struct models {
	char *dir;
	pthread_mutex_t mu;
	models_set_t *cur;
	uint64_t fingerprint;
};

static _Atomic(models_t *) g_models;
static pthread_mutex_t stats_mu = PTHREAD_MUTEX_INITIALIZER;
static model_stats_t stats[MODELS_MAX];
static _Atomic uint64_t load_failures;

static void
model_unref(model_ref_t *r)
{
	if (r != NULL && atomic_fetch_sub(&r->refs, 1) == 1) {
		pmml_free(r->e.pmml);
		features_binding_free(r->e.binding);
		free((char *)r->e.name);
		free((char *)r->e.path);
		free(r);
	}
}

/* Every input the binding names must be an input of the model. */
static bool
binding_fits(const pmml_model_t *pm, const features_binding_t *b, const char **missing)
{
	for (size_t i = 0; i < features_binding_count(b); i++) {
		const char *name = features_binding_input_name(b, i);
		bool found = false;

		for (size_t j = 0; !found && j < pmml_input_count(pm); j++)
			found = strcmp(pmml_input_get(pm, j)->name, name) == 0;
		if (!found) {
			*missing = name;
			return false;
		}
	}
	return true;
}

/* Loads dir/name.pmml and dir/name.bind; NULL (logged) when either fails. */
static model_ref_t *
model_load(const char *dir, const char *name)
{
	char *path = xasprintf("%s/%s.pmml", dir, name);
	char *bpath = xasprintf("%s/%s.bind", dir, name);
	char err[512];
	pmml_model_t *pm = NULL;
	features_binding_t *b = NULL;
	const char *missing = NULL;
	model_ref_t *r = NULL;

	if (pmml_load_file(path, &pm, err, sizeof(err)) < 0) {
		log_error("scoring", "model refused: %s", err);
	} else if (features_binding_load(bpath, &b, err, sizeof(err)) < 0) {
		/* A binding waiting for the site's codes (saps2.bind) is expected, not an error. */
		LOG(strstr(err, "site-configured") != NULL ? LOG_WARN : LOG_ERROR, "scoring",
		    "model %s not loaded: its binding does not load: %s", name, err);
	} else if (!binding_fits(pm, b, &missing)) {
		log_error("scoring", "model refused: %s: input %s is not an input of %s", bpath,
			  missing, path);
	} else {
		r = xcalloc(1, sizeof(*r));
		r->e.name = xstrdup(name);
		r->e.path = path;
		r->e.pmml = pm;
		r->e.binding = b;
		atomic_init(&r->refs, 1);
		free(bpath);
		return r;
	}
	atomic_fetch_add(&load_failures, 1);
	pmml_free(pm);
	features_binding_free(b);
	free(path);
	free(bpath);
	return NULL;
}

/* Model names appear in metrics labels, URLs and ids: [A-Za-z0-9._-], 1 to 63 bytes. */
static bool
name_is_valid(const char *name)
{
	size_t n = strlen(name);

	if (n == 0 || n > 63)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((name[i] >= 'a' && name[i] <= 'z') || (name[i] >= 'A' && name[i] <= 'Z') ||
		      (name[i] >= '0' && name[i] <= '9') || name[i] == '.' || name[i] == '_' ||
		      name[i] == '-'))
			return false;
	return true;
}

static const model_ref_t *
set_find(const models_set_t *s, const char *name)
{
	for (size_t i = 0; s != NULL && i < s->n; i++)
		if (strcmp(s->m[i]->e.name, name) == 0)
			return s->m[i];
	return NULL;
}

static int
is_pmml(const struct dirent *d)
{
	size_t n = strlen(d->d_name);

	return d->d_name[0] != '.' && n > 5 && strcmp(d->d_name + n - 5, ".pmml") == 0;
}

/* A new set from the folder; a model that fails keeps its version in old (may be NULL). */
static models_set_t *
set_load(const char *dir, const models_set_t *old, uint64_t *fp)
{
	models_set_t *s = xcalloc(1, sizeof(*s));
	struct dirent **ents = NULL;
	bool failed = false;
	int n;

	atomic_init(&s->refs, 1);
	*fp = maps_fingerprint_dir(dir, 0, &failed);
	n = scandir(dir, &ents, is_pmml, alphasort);
	if (n < 0) {
		LOG(errno == ENOENT ? LOG_WARN : LOG_ERROR, "scoring",
		    "cannot read the models folder %s (%s): no models, no scoring", dir,
		    strerror(errno));
		return s;
	}
	for (int i = 0; i < n; i++) {
		char *name = xmemdup0(ents[i]->d_name, strlen(ents[i]->d_name) - 5);
		bool valid = name_is_valid(name);
		model_ref_t *r = s->n < MODELS_MAX && valid ? model_load(dir, name) : NULL;
		const model_ref_t *prev = set_find(old, name);

		if (!valid) {
			log_error(
			    "scoring",
			    "%s/%s.pmml: skipped: a model's file name may hold letters, digits, "
			    "'.', '_' and '-' only (63 at most)",
			    dir, name);
		} else if (s->n >= MODELS_MAX) {
			log_error("scoring", "%s/%s.pmml: more than %d models: skipped", dir, name,
				  MODELS_MAX);
		} else if (r != NULL) {
			s->m[s->n++] = r;
		} else if (prev != NULL) {
			log_warn("scoring", "model %s: the previous version stays in force", name);
			atomic_fetch_add(&((model_ref_t *)prev)->refs, 1);
			s->m[s->n++] = (model_ref_t *)prev;
		}
		free(name);
		free(ents[i]);
	}
	free(ents);
	for (size_t i = 0; i < s->n; i++)
		log_info("scoring", "model %s in force (%s, version %s)", s->m[i]->e.name,
			 s->m[i]->e.path,
			 pmml_model_version(s->m[i]->e.pmml) ? pmml_model_version(s->m[i]->e.pmml)
							     : "-");
	return s;
}

void
models_open(const char *dir, models_t **out)
{
	models_t *m = xcalloc(1, sizeof(*m));

	m->dir = xstrdup(dir);
	pthread_mutex_init(&m->mu, NULL);
	if (dir[0] == '\0') {
		m->cur = xcalloc(1, sizeof(*m->cur));
		atomic_init(&m->cur->refs, 1);
		log_info("scoring", "scoring.models_dir is empty: scoring is off");
	} else {
		m->cur = set_load(dir, NULL, &m->fingerprint);
	}
	*out = m;
}

void
models_reload(models_t *m)
{
	const models_set_t *old;
	models_set_t *fresh;
	uint64_t fp;

	if (m->dir[0] == '\0')
		return;
	old = models_acquire(m);
	fresh = set_load(m->dir, old, &fp);
	pthread_mutex_lock(&m->mu);
	models_release(m->cur);
	m->cur = fresh;
	m->fingerprint = fp; /* a broken file is not retried until it changes again */
	pthread_mutex_unlock(&m->mu);
	models_release(old);
}

bool
models_changed(models_t *m)
{
	bool failed = false, changed;
	uint64_t fp;

	if (m->dir[0] == '\0')
		return false;
	fp = maps_fingerprint_dir(m->dir, 0, &failed);
	if (failed)
		return false;
	pthread_mutex_lock(&m->mu);
	changed = fp != m->fingerprint;
	pthread_mutex_unlock(&m->mu);
	return changed;
}

void
models_free(models_t *m)
{
	if (m == NULL)
		return;
	models_release(m->cur);
	pthread_mutex_destroy(&m->mu);
	free(m->dir);
	free(m);
}

const models_set_t *
models_acquire(models_t *m)
{
	models_set_t *s;

	pthread_mutex_lock(&m->mu);
	s = m->cur;
	atomic_fetch_add(&s->refs, 1);
	pthread_mutex_unlock(&m->mu);
	return s;
}

void
models_release(const models_set_t *cs)
{
	models_set_t *s = (models_set_t *)cs;

	if (s == NULL || atomic_fetch_sub(&s->refs, 1) != 1)
		return;
	for (size_t i = 0; i < s->n; i++)
		model_unref(s->m[i]);
	free(s);
}

size_t
models_set_count(const models_set_t *s)
{
	return s != NULL ? s->n : 0;
}

const models_entry_t *
models_set_at(const models_set_t *s, size_t i)
{
	return s != NULL && i < s->n ? &s->m[i]->e : NULL;
}

const models_entry_t *
models_set_find(const models_set_t *s, slice_t name)
{
	for (size_t i = 0; s != NULL && i < s->n; i++)
		if (slice_eq_cstr(name, s->m[i]->e.name))
			return &s->m[i]->e;
	return NULL;
}

void
models_set_global(models_t *m)
{
	atomic_store(&g_models, m);
}

models_t *
models_global(void)
{
	return atomic_load(&g_models);
}

static model_stats_t *
stats_of(const char *model)
{
	model_stats_t *st = NULL;

	pthread_mutex_lock(&stats_mu);
	for (size_t i = 0; st == NULL && i < MODELS_MAX; i++) {
		if (stats[i].name[0] == '\0')
			snprintf(stats[i].name, sizeof(stats[i].name), "%s", model);
		if (strncmp(stats[i].name, model, sizeof(stats[i].name) - 1) == 0)
			st = &stats[i];
	}
	pthread_mutex_unlock(&stats_mu);
	return st;
}

void
models_count_written(const char *model)
{
	model_stats_t *st = stats_of(model);

	if (st != NULL)
		atomic_fetch_add_explicit(&st->written, 1, memory_order_relaxed);
}

void
models_count_refused(const char *model)
{
	model_stats_t *st = stats_of(model);

	if (st != NULL)
		atomic_fetch_add_explicit(&st->refused, 1, memory_order_relaxed);
}

void
models_metrics_write(buf_t *b)
{
	models_t *m = models_global();
	const models_set_t *s = m != NULL ? models_acquire(m) : NULL;

	buf_printf(b,
		   "# HELP fhirgate_scoring_models_loaded Risk models in force.\n"
		   "# TYPE fhirgate_scoring_models_loaded gauge\n"
		   "fhirgate_scoring_models_loaded %zu\n",
		   models_set_count(s));
	models_release(s);
	buf_printf(b,
		   "# HELP fhirgate_scoring_model_load_failures_total Model files (or bindings) "
		   "refused at a load or reload.\n"
		   "# TYPE fhirgate_scoring_model_load_failures_total counter\n"
		   "fhirgate_scoring_model_load_failures_total %llu\n",
		   (unsigned long long)atomic_load(&load_failures));
	pthread_mutex_lock(&stats_mu);
	buf_printf(b, "# HELP fhirgate_scoring_scores_written_total RiskAssessments stored with a "
		      "new version, by model.\n"
		      "# TYPE fhirgate_scoring_scores_written_total counter\n");
	for (size_t i = 0; i < MODELS_MAX && stats[i].name[0] != '\0'; i++)
		buf_printf(b, "fhirgate_scoring_scores_written_total{model=\"%s\"} %llu\n",
			   stats[i].name, (unsigned long long)atomic_load(&stats[i].written));
	buf_printf(b, "# HELP fhirgate_scoring_refused_inputs_total Scorings refused for a missing "
		      "or invalid input, by model.\n"
		      "# TYPE fhirgate_scoring_refused_inputs_total counter\n");
	for (size_t i = 0; i < MODELS_MAX && stats[i].name[0] != '\0'; i++)
		buf_printf(b, "fhirgate_scoring_refused_inputs_total{model=\"%s\"} %llu\n",
			   stats[i].name, (unsigned long long)atomic_load(&stats[i].refused));
	pthread_mutex_unlock(&stats_mu);
}
