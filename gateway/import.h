/* The import core: legacy records (through a record map) or HL7 v2 batch files (through the v2
 * message maps) into the store, in group-commit transactions that also hold the file's
 * checkpoint, so an interrupted import resumes where it stopped. Used by `fhirgate import`; kept
 * free of terminal handling so that other front ends (an HTTP operation, a drop folder) can
 * call it. */
#ifndef GATEWAY_IMPORT_H
#define GATEWAY_IMPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mappings/hl7.h"
#include "mappings/map.h"
#include "mappings/record.h"
#include "store/store.h"

typedef struct {
	uint64_t records;   /* records (messages) read in this run, resumed ones not counted */
	uint64_t accepted;  /* of which mapped (HL7 v2: accepted) ... */
	uint64_t stored;    /* ... and in a committed transaction (less after a failure) */
	uint64_t rejected;  /* of which written to the reject file */
	uint64_t skipped;   /* records before the checkpoint this run resumed from */
	uint64_t resources; /* resource upserts (of the records mapped) */
	uint64_t stored_resources; /* of which in committed transactions */
	uint64_t unchanged;    /* of which byte-identical to the stored version: nothing written */
	uint64_t warnings;     /* mapping warnings (a code no vocabulary has, ...) */
	uint64_t batches;      /* transactions committed */
	uint64_t offset, size; /* input bytes read so far, and in all */
	bool resumed;
	/* time per stage (monotonic ns): reading, mapping (record -> resources, serialized),
	 * storing (transactions, commits included) */
	uint64_t read_ns, map_ns, store_ns;
	uint64_t load_ns; /* of store_ns: the bulk loads' transactions (merge, writes, commit) */
	/* of load_ns: waiting for the last run file, the resource and index passes, the commits */
	uint64_t load_wait_ns, load_res_ns, load_idx_ns, load_commit_ns;
	uint64_t loading; /* records a bulk load is writing now (0: none); progress shows it */
} import_stats_t;

/* Called about every progress_interval_ns and once at the end (final). */
typedef void (*import_progress_fn)(void *arg, const char *path, const import_stats_t *st,
				   bool final);
/* A rejected record: where ("patients.csv:12", "visits.xml:40 (record 3)") and why (no values:
 * the reasons name columns and formats, never patient data). */
typedef void (*import_reject_fn)(void *arg, const char *where, const char *reason);
/* Something about a file as a whole, once (the columns of its header the map does not read). */
typedef void (*import_note_fn)(void *arg, const char *path, const char *note);
/* Dry runs: each converted record's result (borrowed during the call). */
typedef void (*import_result_fn)(void *arg, const char *where, const map_result_t *r);

typedef struct {
	const record_map_t *rm; /* the record map; NULL: the files are HL7 v2 (batch) files */
	const map_set_t *maps;  /* HL7 v2 files: the v2 mappings */
	map_options_t map_opt;
	size_t batch; /* records per transaction; 0: 20000 (HL7 v2 messages: 1000) */
	/* record maps: bulk loads (store_bulk_*) of bulk_records records per transaction (0:
	 * 1,000,000), sorted in bulk_memory bytes (0: 256 MiB) and run files, instead of batches */
	bool bulk;
	uint64_t bulk_records;
	size_t bulk_memory;
	/* bulk loads of text files: threads that map records (0: one per CPU, at most 8; 1: the
	 * reading thread maps) */
	unsigned threads;
	bool restart;        /* ignore (and replace) a checkpoint of the file */
	const char *rejects; /* the reject file; NULL: next to the input, "NAME.rejected.EXT" */
	/* dry run: convert the first dry_run_max records (0: all), give them to on_result and
	 * write nothing (store may be NULL) */
	bool dry_run;
	uint64_t dry_run_max;
	import_result_fn on_result;
	import_progress_fn on_progress;
	import_reject_fn on_reject;
	import_note_fn on_note;
	void *arg;
	uint64_t progress_interval_ns; /* 0: 500 ms */
} import_opts_t;

/* Imports one file into s. Returns 0 when the file was read to its end (records may have been
 * rejected: see st), or a negative error with the reason in err (a file that cannot be read, a
 * DOCTYPE, malformed XML, a store error): what was committed before stays, with its
 * checkpoint. */
int import_file(store_t *s, const char *path, const import_opts_t *o, import_stats_t *st, char *err,
		size_t errcap);

/* The default reject file of an input ("in/patients.csv" -> "in/patients.rejected.csv");
 * caller frees. */
char *import_reject_path(const char *input);

#endif
