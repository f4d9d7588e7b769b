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
/* Length of the UTF-8 sequence at s (len bytes at most) when it is a character XML 1.0 can
 * carry (no control characters but tab, LF and CR, no surrogates, U+FFFE or U+FFFF, no
 * overlong forms), else 0. */
size_t fhir_xml_char_len(const unsigned char *s, size_t len);

/* Why fhir_xml_doc_read gave no document. */
typedef struct {
	bool doctype;  /* it had a DOCTYPE (refused before its internal subset is read) */
	long line;     /* of the DOCTYPE, or of the first error (0: unknown) */
	int col;       /* of the first error */
	bool located;  /* line and col come from libxml2's error */
	char msg[256]; /* libxml2's message without the trailing newline; "" for a DOCTYPE */
} fhir_xml_read_error_t;

/* Reads data into a libxml2 document (caller frees with xmlFreeDoc) without network, DTD or
 * entity loading, refusing any DOCTYPE: for FHIR XML here and other XML formats above (PMML).
 * options: libxml2 parser options added to XML_PARSE_NONET | NOERROR | NOWARNING; encoding
 * NULL follows the document's declaration. NULL with *e filled on failure. */
struct _xmlDoc *fhir_xml_doc_read(const char *data, size_t len, const char *encoding, int options,
				  fhir_xml_read_error_t *e);

#endif
