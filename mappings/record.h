/* Legacy records (delimited and fixed-width text, XML exports) through record maps: a record map
 * (docs/import.md) declares its reader and says, in the mapping language, which column or XPath
 * fills each element. The map is turned into an ordinary message map and segment maps over a
 * pseudo segment (ZRC) whose fields are the values the map reads, so conditions, datatype and
 * vocabulary maps and ids work exactly as for HL7 v2. */
#ifndef MAPPINGS_RECORD_H
#define MAPPINGS_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/arena.h"
#include "lib/buf.h"
#include "lib/slice.h"
#include "mappings/hl7.h"
#include "mappings/map.h"

typedef struct record_map record_map_t;

typedef enum { RECORD_CSV, RECORD_FIXED, RECORD_XML } record_format_t;

/* Parses the record map in data (shown in diagnostics as `shown`) and loads it together with the
 * v2 mappings of dir and site_dir (its datatype maps and vocabularies). Returns 0 with *out
 * (caller owns, record_map_free), -FG_ECONFIG when the record map or the set has errors (each
 * reported through diag as file:line:col), -FG_EIO when a folder cannot be read. */
int record_map_load(const char *shown, const char *data, size_t len, const char *dir,
		    const char *site_dir, map_diag_fn diag, void *arg, record_map_t **out);
/* Reads the file at path, then as record_map_load. */
int record_map_load_file(const char *path, const char *dir, const char *site_dir, map_diag_fn diag,
			 void *arg, record_map_t **out);
/* Accepts NULL. */
void record_map_free(record_map_t *rm);

record_format_t record_map_format(const record_map_t *rm);
/* The map's name (its file name without folder and extension); borrowed, valid until free. */
const char *record_map_name(const record_map_t *rm);
const map_set_t *record_map_set(const record_map_t *rm);
/* Fingerprint of the record map and the set: changes whenever a mapping changes. */
uint64_t record_map_version(const record_map_t *rm);
/* Whether resources of this type are stored; false for "resource Patient[1] reference-only"
 * (made only so that references to it have its id: a lab result must not replace the Patient
 * with one that has nothing but an identifier). */
bool record_map_stores(const record_map_t *rm, slice_t type);
/* What an explain source ("ZRC-3[1]") stands for: `column("MRN")`, `xpath("@id")`; NULL when
 * it is not a record field. Borrowed, valid until record_map_free. */
const char *record_map_source_name(const record_map_t *rm, const char *source);

/* A reader over one input file. Records come out as values in the map's field order. */
typedef struct record_reader record_reader_t;

/* One record read: where it is (line of its first byte for text, record number for XML, and
 * the byte offset where the next record starts, for resuming), its fields (UTF-8, borrowed
 * until the next read) and, when the record cannot be used, why (values never in it). The
 * record's own bytes (for a reject file) come from record_reader_raw. */
typedef struct {
	uint64_t number; /* 1-based record number (header not counted) */
	uint64_t line;   /* text: line of the record's first byte; XML: 0 */
	uint64_t next_offset;
	const slice_t *fields;
	size_t nfields;
	const char *error; /* NULL, or the reason it is rejected */
} record_t;

/* Opens path for reading with rm. For text formats `offset`/`number` resume at a record start
 * (from a checkpoint; 0 from the start) after the header; XML resumes by skipping `number`
 * records. Returns 0 or -FG_EIO / -FG_EINVAL (with the reason in err). */
int record_reader_open(const record_map_t *rm, const char *path, uint64_t offset, uint64_t number,
		       record_reader_t **out, char *err, size_t errcap);
/* Same over bytes in memory (tests); data must outlive the reader. */
int record_reader_open_mem(const record_map_t *rm, const char *data, size_t len,
			   record_reader_t **out, char *err, size_t errcap);
/* Next record: 1 with *rec, 0 at the end, negative on an error that stops the file (a DOCTYPE,
 * malformed XML, an unreadable file), with the reason in record_reader_error. */
int record_reader_next(record_reader_t *r, record_t *rec);
const char *record_reader_error(const record_reader_t *r);
/* Appends the last record as it was in the input to out: a CSV row or line with its line break
 * (source encoding), an XML element (UTF-8). */
void record_reader_raw(record_reader_t *r, buf_t *out);
/* Input bytes consumed so far and the input's size (progress). */
uint64_t record_reader_offset(const record_reader_t *r);
uint64_t record_reader_size(const record_reader_t *r);
/* The header row as read (CSV with a header): what a reject file starts with; empty if none. */
slice_t record_reader_header(const record_reader_t *r);
/* The header's column names that the map does not read, ", "-separated, into out (CSV with a
 * header; nothing otherwise): the columns an import leaves out. */
void record_reader_unread_columns(const record_reader_t *r, buf_t *out);
/* Text that opens and closes an XML reject document (the record's ancestors); empty for text. */
void record_reader_xml_frame(const record_reader_t *r, buf_t *open, buf_t *close);
void record_reader_free(record_reader_t *r);

/* Builds the HL7 message that stands for rec (MSH + ZRC, in arena a) and parses it. key names
 * the record for fallback ids (MSH-10). Returns 0 or a negative error. */
int record_to_msg(const record_map_t *rm, const record_t *rec, slice_t key, arena_t *a,
		  hl7_msg_t **out);

/* Converts a date in strftime-like format fmt (%Y %y %m %d %H %M %S %b and literal text) to an
 * HL7 DTM (YYYYMMDD[HHMM[SS]]) in out (at least 16 bytes). false when v does not match. */
bool record_date_to_dtm(slice_t v, const char *fmt, char *out, size_t cap);

#endif
