/* FHIR XML in and out with libxml2 (no network, no DTD, no entity expansion), using the R4
 * metadata for element order, arrays and primitive value types. */
#ifndef FHIR_XML_H
#define FHIR_XML_H

#include <stdbool.h>
#include <stddef.h>

#include "fhir/tree.h"
#include "lib/arena.h"
#include "lib/buf.h"

/* Initializes libxml2; call once from the main thread before other threads use the codec. */
void fhir_xml_init(void);

typedef struct {
	size_t max_bytes; /* 0: 64 MiB */
	size_t max_depth; /* 0: 64 */
} fhir_xml_limits_t;

/* Parses a FHIR XML resource into the JSON-shaped tree. Errors as fhir_json_parse. */
int fhir_xml_parse(arena_t *a, const char *data, size_t len, const fhir_xml_limits_t *lim,
		   fhir_node_t **out, char *err, size_t cap);
/* Writes a resource (an object with resourceType) as FHIR XML in R4 element order. Returns
 * -FG_EINVAL (with err) for members the metadata does not know. */
int fhir_xml_write(const fhir_node_t *res, bool pretty, buf_t *out, char *err, size_t cap);

#endif
