/* FHIR JSON in and out: yajl's parser into the resource tree; compact output written directly,
 * pretty output by yajl's generator. */
#ifndef FHIR_JSON_H
#define FHIR_JSON_H

#include <stdbool.h>
#include <stddef.h>

#include "fhir/tree.h"
#include "lib/arena.h"
#include "lib/buf.h"

typedef struct {
	size_t max_bytes; /* input size; 0: 64 MiB */
	size_t max_depth; /* nesting; 0: 64 */
} fhir_json_limits_t;

/* Parses JSON text into a tree in a. Returns 0, or -FG_EPARSE / -FG_ETOOBIG with a message
 * "line L, column C: what" in err (cap bytes). Numbers keep their text; duplicate keys are an
 * error. */
int fhir_json_parse(arena_t *a, const char *data, size_t len, const fhir_json_limits_t *lim,
		    fhir_node_t **out, char *err, size_t cap);
/* Appends the JSON form of n to out (compact, or pretty with two-space indents). Returns 0, or
 * -FG_EINVAL (a string that is not UTF-8) / -FG_ETOOBIG (out's cap, or nesting deeper than 127)
 * with out left as it was. */
int fhir_json_write(const fhir_node_t *n, bool pretty, buf_t *out);
/* Appends s as a JSON string (quoted and escaped as fhir_json_write does), for callers that
 * write JSON of a fixed shape directly. 0, or -FG_EINVAL when s is not UTF-8 (out may then hold
 * part of it: the caller discards out). */
int fhir_json_string_write(slice_t s, buf_t *out);

#endif
