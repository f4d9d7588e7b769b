/* The mappings in force: reference-counted sets, swapped on reload. */
#include "config.h"

#include "gateway/maps.h"

#include <sys/stat.h>

#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/err.h"
#include "lib/hash.h"
#include "lib/log.h"
#include "lib/xalloc.h"

struct maps_ref {
	map_set_t *set;
	atomic_uint refs; /* one for being in force, one per acquire */
};

struct maps {
	pthread_mutex_t mu;
	maps_ref_t *cur;
	uint64_t fingerprint;
	maps_stats_t st; /* under mu */
};

static void
diag_log(const map_diag_t *d, void *arg)
{
	LOG(d->level == MAP_DIAG_ERROR ? LOG_ERROR : LOG_WARN, "mappings", "%s:%u:%u: %s%s%s%s",
	    d->file, d->line, d->col, d->text, d->hint ? " (" : "", d->hint ? d->hint : "",
	    d->hint ? ")" : "");
}

void
maps_diag_print(const map_diag_t *d, void *file)
{
	fprintf(file, "%s:%u:%u: %s: %s%s%s%s\n", d->file, d->line, d->col,
		d->level == MAP_DIAG_ERROR ? "error" : "warning", d->text, d->hint ? " (" : "",
		d->hint ? d->hint : "", d->hint ? ")" : "");
}

void
maps_options(const config_t *cfg, map_options_t *opt)
{
	const char *tz = cfg->mappings_timezone;

	memset(opt, 0, sizeof(*opt));
	if (tz != NULL && tz[0] != '\0') {
		int mins =
		    ((tz[1] - '0') * 10 + (tz[2] - '0')) * 60 + (tz[3] - '0') * 10 + (tz[4] - '0');

		opt->tz_set = true;
		opt->tz_minutes = tz[0] == '-' ? -mins : mins;
	}
}

uint64_t
maps_fingerprint_dir(const char *dir, uint64_t h, bool *failed)
{
	struct dirent **ents;
	int n = scandir(dir, &ents, NULL, alphasort);

	if (n < 0) {
		*failed = true;
		return h;
	}
	for (int i = 0; i < n; i++) {
		const char *nm = ents[i]->d_name;
		char *path;
		struct stat st;

		if (nm[0] != '.') {
			path = xasprintf("%s/%s", dir, nm);
			if (stat(path, &st) < 0) {
				*failed = true;
			} else {
				if (S_ISDIR(st.st_mode)) {
					h = maps_fingerprint_dir(path, h, failed);
				} else {
					uint64_t v[3] = {(uint64_t)st.st_size,
							 (uint64_t)st.st_mtim.tv_sec,
							 (uint64_t)st.st_mtim.tv_nsec};

					h = hash_fnv1a64(path, strlen(path), h);
					h = hash_fnv1a64(v, sizeof(v), h);
				}
			}
			free(path);
		}
		free(ents[i]);
	}
	free(ents);
	return h;
}

static uint64_t
fingerprint(const config_t *cfg, bool *failed)
{
	uint64_t h = maps_fingerprint_dir(cfg->mappings_dir, 0, failed);

	if (cfg->mappings_site_dir[0] != '\0')
		h = maps_fingerprint_dir(cfg->mappings_site_dir, h, failed);
	return h;
}

static int
load(const config_t *cfg, maps_ref_t **out, uint64_t *fp)
{
	const char *site = cfg->mappings_site_dir[0] != '\0' ? cfg->mappings_site_dir : NULL;
	map_set_t *set = NULL;
	maps_ref_t *r;
	bool failed = false;
	int rc;

	*fp = fingerprint(cfg, &failed);
	rc = map_set_load(cfg->mappings_dir, site, diag_log, NULL, &set);
	if (rc < 0)
		return rc;
	r = xcalloc(1, sizeof(*r));
	r->set = set;
	atomic_init(&r->refs, 1);
	*out = r;
	log_info("mappings", "loaded %zu mapping files from %s%s%s (version %016llx)",
		 map_set_file_count(set), cfg->mappings_dir, site ? " and " : "", site ? site : "",
		 (unsigned long long)map_set_version(set));
	return 0;
}

int
maps_open(const config_t *cfg, maps_t **out)
{
	maps_t *m = xcalloc(1, sizeof(*m));
	int rc = load(cfg, &m->cur, &m->fingerprint);

	if (rc < 0) {
		free(m);
		return rc;
	}
	pthread_mutex_init(&m->mu, NULL);
	*out = m;
	return 0;
}

int
maps_reload(maps_t *m, const config_t *cfg)
{
	maps_ref_t *fresh, *old;
	uint64_t fp;
	int rc = load(cfg, &fresh, &fp);

	pthread_mutex_lock(&m->mu);
	m->fingerprint = fp; /* a broken file is not retried until it changes again */
	m->st.last_failed = rc < 0;
	if (rc < 0) {
		m->st.reloads_failed++;
		pthread_mutex_unlock(&m->mu);
		log_error("mappings", "reload failed (%s); the mappings in force stay",
			  fg_strerror(rc));
		return rc;
	}
	old = m->cur;
	m->cur = fresh;
	m->st.reloads_ok++;
	pthread_mutex_unlock(&m->mu);
	maps_release(old);
	return 0;
}

void
maps_get_stats(maps_t *m, maps_stats_t *out)
{
	pthread_mutex_lock(&m->mu);
	*out = m->st;
	pthread_mutex_unlock(&m->mu);
}

bool
maps_changed(maps_t *m, const config_t *cfg)
{
	bool failed = false, changed;
	uint64_t fp = fingerprint(cfg, &failed);

	if (failed)
		return false; /* cannot tell now (out of descriptors?): look again next time */
	pthread_mutex_lock(&m->mu);
	changed = fp != m->fingerprint;
	pthread_mutex_unlock(&m->mu);
	return changed;
}

const map_set_t *
maps_acquire(maps_t *m, maps_ref_t **ref)
{
	maps_ref_t *r;

	pthread_mutex_lock(&m->mu);
	r = m->cur;
	atomic_fetch_add(&r->refs, 1);
	pthread_mutex_unlock(&m->mu);
	*ref = r;
	return r->set;
}

void
maps_release(maps_ref_t *ref)
{
	if (ref != NULL && atomic_fetch_sub(&ref->refs, 1) == 1) {
		map_set_free(ref->set);
		free(ref);
	}
}

void
maps_free(maps_t *m)
{
	if (m == NULL)
		return;
	maps_release(m->cur);
	pthread_mutex_destroy(&m->mu);
	free(m);
}
