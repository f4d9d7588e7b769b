/* The HL7 v2 -> FHIR R4 mapping engine: loads a folder of mapping files (message, segment,
 * datatype and vocabulary maps; docs/mapping-language.md) into an immutable set, and converts
 * parsed messages with it into a transaction Bundle of idempotent upserts. */
#ifndef MAPPINGS_MAP_H
#define MAPPINGS_MAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fhir/tree.h"
#include "lib/arena.h"
#include "lib/slice.h"
#include "mappings/hl7.h"

/* A loaded set of mappings: immutable, so one set serves every thread at once. */
typedef struct map_set map_set_t;

typedef enum { MAP_DIAG_ERROR, MAP_DIAG_WARNING } map_diag_level_t;

/* One problem found while loading: "file:line:col: text" and a hint on what to do. */
typedef struct {
	map_diag_level_t level;
	const char *file;   /* the path the file was read from */
	unsigned line, col; /* 1-based; 0 when the problem is the whole file */
	const char *text;
	const char *hint; /* NULL when there is none */
} map_diag_t;

/* Called once per problem, in file order; the strings are valid during the call only. */
typedef void (*map_diag_fn)(const map_diag_t *d, void *arg);

/* A mapping file in memory. path is relative to its mapping folder and says what the file is:
 * "messages/ADT_A01.map", "segments/PID-Patient.map", "datatypes/CX-Identifier.map",
 * "vocab/AdministrativeSex.csv". A site file replaces the shipped file of the same path. */
typedef struct {
	const char *path;
	const char *shown; /* the name diagnostics use; NULL: path */
	const char *data;
	size_t len;
	bool site;
} map_file_t;

/* Reads dir (the shipped maps) and site_dir (NULL or a folder whose files override or add to
 * them), checks every file, and builds the set. Returns 0 with *out (caller owns, free with
 * map_set_free); -FG_ECONFIG when any file has an error (all of them reported through diag,
 * which may be NULL; *out untouched, so the caller keeps its old set); -FG_EIO when a folder or
 * file cannot be read. Warnings (lint) are reported but do not fail the load. */
int map_set_load(const char *dir, const char *site_dir, map_diag_fn diag, void *arg,
		 map_set_t **out);
/* map_set_load plus files in memory (record maps: mappings/record.h), which must not have the
 * path of a file in the folders. */
int map_set_load_with(const char *dir, const char *site_dir, const map_file_t *extra, size_t nextra,
		      map_diag_fn diag, void *arg, map_set_t **out);
/* The same over files already in memory (tests, fuzzing, embedding). */
int map_set_load_files(const map_file_t *files, size_t n, map_diag_fn diag, void *arg,
		       map_set_t **out);
/* Accepts NULL. */
void map_set_free(map_set_t *set);
/* A fingerprint of every file's path and bytes: changes whenever the mappings change. */
uint64_t map_set_version(const map_set_t *set);
/* Number of map files (all kinds) in the set. */
size_t map_set_file_count(const map_set_t *set);
/* Whether a message map answers to this name ("ADT_A01", "ADT_A08"). */
bool map_set_has_message(const map_set_t *set, slice_t name);

typedef struct {
	bool explain; /* fill map_result_t.explain and .unused */
	/* DTM times without an offset: when tz_set, the offset (minutes east of UTC) they are
	 * taken to have; otherwise a dateTime keeps only its date and an instant is taken to be
	 * in UTC, with a warning (docs/mapping-language.md, "Dates and times"). */
	bool tz_set;
	int tz_minutes;
	/* Entries' fullUrl: "<base_url>/<type>/<id>", or with NULL "urn:uuid:<id as a UUID>". */
	const char *base_url;
} map_options_t;

/* A resource of the Bundle, for storing: borrowed from the conversion arena. */
typedef struct {
	slice_t type, id;
	fhir_node_t *resource;
} map_resource_t;

/* Which mapping line made an element: "Patient/<id> name[0].family <- PID-5[1].1 at
 * segments/PID-Patient.map:7" (source NULL for constants). */
typedef struct {
	size_t resource; /* index into map_result_t.resources */
	const char *path;
	const char *source;
	const char *file;
	unsigned line;
} map_explain_t;

/* A non-empty field repetition that no mapping line used. */
typedef struct {
	char segment[4];
	size_t seg_index;    /* 0-based position of the segment in the message */
	unsigned seg_seq;    /* 1-based occurrence of this segment id */
	unsigned field, rep; /* 1-based */
} map_unused_t;

/* Something a mapping line could not do (an invalid date, a code missing from a vocabulary).
 * text names positions and maps, never values; value is the offending value, which may be
 * patient data: show it only where the reader may see the message. */
typedef struct {
	const char *text;
	slice_t value;
	char segment[4];
	unsigned seg_seq, field, rep; /* 0 when not about a field */
	const char *file;
	unsigned line;
} map_warning_t;

typedef struct {
	fhir_node_t *bundle; /* a transaction Bundle; NULL when the conversion failed */
	const map_resource_t *resources;
	size_t nresources;
	const map_warning_t *warnings;
	size_t nwarnings;
	const map_explain_t *explain; /* with map_options_t.explain */
	size_t nexplain;
	const map_unused_t *unused; /* with map_options_t.explain */
	size_t nunused;
	const char *map_name; /* the message map used, "" when none */
	hl7_error_t error;    /* why the conversion failed (table 0357 code, no patient data) */
} map_result_t;

/* Converts m with set into a Bundle in arena a. Everything in *out is borrowed from a, from
 * m's input bytes and from set (the trees' member keys, files named by warnings and explain
 * records): valid until the arena is freed or the set is, whichever comes first. So a caller
 * that may reload the mappings keeps its set until it is done with the result (gateway/maps.c:
 * maps_acquire before the conversion, maps_release after the JSON is written). opt may be NULL
 * (defaults). Returns 0; -FG_ENOTFOUND when no message map fits (error 200 or 201, "no map for
 * ..."); or -FG_ETOOBIG when the message would make too many resources. *out is set in every case,
 * so that the error and the warnings can be read. */
int map_convert(const map_set_t *set, const hl7_msg_t *m, const map_options_t *opt, arena_t *a,
		map_result_t **out);

/* Dates and times (mappings/map_dtm.c). */
typedef enum { MAP_DTM_DATE, MAP_DTM_DATETIME, MAP_DTM_INSTANT, MAP_DTM_TIME } map_dtm_kind_t;

/* What map_dtm_format had to do for want of an offset. */
enum {
	MAP_DTM_TIME_DROPPED = 1 << 0, /* a dateTime kept only its date */
	MAP_DTM_UTC_ASSUMED = 1 << 1,  /* an instant was taken to be in UTC */
};

/* Converts an HL7 DTM/DT/TM value (YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]][+/-ZZZZ]; TM is
 * HH[MM[SS[.SSSS]]][+/-ZZZZ]) into the FHIR form of kind, written NUL-terminated to out (at
 * least MAP_DTM_MAX bytes). Precision is kept (seconds are added once there is a time, as FHIR
 * wants). A time needs an offset: the value's own, else the options' (map_options_t); without
 * either a dateTime keeps only its date and an instant is taken to be in UTC, as *flags says.
 * Returns 0, or -FG_EINVAL for an invalid value (or an instant without a time). */
#define MAP_DTM_MAX 40
int map_dtm_format(slice_t v, map_dtm_kind_t kind, const map_options_t *opt, char *out,
		   unsigned *flags);

#endif
