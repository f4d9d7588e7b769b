/* Internals of record maps shared by their parser (record.c) and the readers (record_read.c). */
#ifndef MAPPINGS_RECORD_INT_H
#define MAPPINGS_RECORD_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mappings/map.h"
#include "mappings/record.h"

/* Different sources (columns, XPaths, dates) one record map may read: the fields of ZRC. */
#define RECORD_FIELDS_MAX 250

typedef enum { RECORD_ENC_UTF8, RECORD_ENC_LATIN1, RECORD_ENC_CP1252 } record_enc_t;
typedef enum { RECORD_SRC_COLUMN, RECORD_SRC_XPATH } record_src_t;

/* A value the map reads: ZRC-n is fields[n - 1]. */
typedef struct {
	record_src_t kind;
	char *name;     /* column name or XPath */
	char *date_fmt; /* date(...): the format it is read with; NULL otherwise */
	char *shown;    /* `column("MRN")`, for explain and diagnostics */
} record_field_t;

/* A declared column: "column MRN 1-10" (fixed: first and last byte) or "column MRN 3" (csv
 * without a header: position). */
typedef struct {
	char *name;
	unsigned start, end;
	bool range;
} record_column_t;

typedef struct {
	char *prefix, *uri;
} record_ns_t;

/* One step of the record path; descendant: "//" before it. */
typedef struct {
	char *prefix, *local;
	bool descendant;
} record_step_t;

struct record_map {
	record_format_t format;
	bool have_reader;
	char sep, quote;
	bool header;
	record_enc_t encoding;
	char *date_fmt;
	record_column_t *cols;
	size_t ncols;
	record_ns_t *ns;
	size_t nns;
	record_step_t *steps;
	size_t nsteps;
	record_field_t *fields;
	size_t nfields;
	char **refonly; /* types of "resource T[n] reference-only": made for their id, not stored */
	size_t nrefonly;
	map_set_t *set;
	char *name, *path;
	uint64_t version;
};

/* Parses a record path ("/export/visit", "//h:visit", "/a//b") into rm->steps; -1 if bad. */
int record_path_parse(record_map_t *rm, const char *path);

#endif
