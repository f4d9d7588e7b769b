/* The import drop folder (import.watch_dir): systems that push files put them there, and the
 * server imports them one at a time with a child `fhirgate import` on the same store (its own
 * process: a crash or a kill costs nothing, the import resumes from its checkpoint). Files go
 * processing/ while they are imported, then done/, or failed/ with the reject file; each run's
 * output is in logs/. */
#ifndef GATEWAY_DROPDIR_H
#define GATEWAY_DROPDIR_H

#include "gateway/conf.h"

typedef struct dropdir dropdir_t;

/* Creates the folder's subfolders and moves back to the folder any file a previous server left
 * in processing/ (its import resumes). NULL with *errmsg (caller frees) when the folder is
 * unusable; NULL without an error when import.watch_dir is empty. */
dropdir_t *dropdir_new(const config_t *cfg, char **errmsg);
/* Called every mappings.watch_interval: reaps a finished import (moving its file) and starts
 * the next file that is complete (not hidden, not *.tmp or *.part, unchanged for a second). */
void dropdir_tick(dropdir_t *d);
/* Stops: an import that is running is sent SIGTERM and waited for (it resumes next time).
 * Accepts NULL. */
void dropdir_free(dropdir_t *d);

#endif
