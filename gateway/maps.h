/* The mappings in force for the server: loaded from the configured folders, replaced as a whole
 * on reload (a set that fails to load never replaces a good one), and kept alive by references
 * while messages converted with them are still in flight. */
#ifndef GATEWAY_MAPS_H
#define GATEWAY_MAPS_H

#include <stdbool.h>
#include <stdint.h>

#include "gateway/conf.h"
#include "mappings/map.h"

typedef struct maps maps_t;
typedef struct maps_ref maps_ref_t;

/* Loads the set named by cfg (mappings.dir, mappings.site_dir); problems are logged as
 * "file:line:col: text". Returns 0 or -FG_ECONFIG / -FG_EIO. */
int maps_open(const config_t *cfg, maps_t **out);
/* Loads again (from cfg's folders); on failure logs why and keeps the set in force. */
int maps_reload(maps_t *m, const config_t *cfg);
typedef struct {
	uint64_t reloads_ok, reloads_failed;
	bool last_failed; /* the last reload failed: older mappings are in force */
} maps_stats_t;

void maps_get_stats(maps_t *m, maps_stats_t *out);
/* True when a file in the folders changed (path, size or mtime) since the last (re)load. */
bool maps_changed(maps_t *m, const config_t *cfg);
/* Folds every file's path, size and mtime under dir into h (sorted, so the order is stable):
 * change detection for the watched folders. Sets *failed when a folder cannot be read (e.g. out
 * of descriptors): then nothing is known. */
uint64_t maps_fingerprint_dir(const char *dir, uint64_t h, bool *failed);
/* The set in force, with a reference that keeps it alive until maps_release (any thread). */
const map_set_t *maps_acquire(maps_t *m, maps_ref_t **ref);
/* Accepts NULL. */
void maps_release(maps_ref_t *ref);
/* Accepts NULL; every reference must have been released. */
void maps_free(maps_t *m);

/* Prints a load problem as "file:line:col: error: text (hint)" to the stream given as arg. */
void maps_diag_print(const map_diag_t *d, void *file);
/* Conversion options from the config (mappings.timezone). */
void maps_options(const config_t *cfg, map_options_t *opt);

#endif
