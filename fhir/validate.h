/* Validation of a resource tree against the R4 base definitions (fhir/meta.h): structure
 * (known elements, arrays where R4 has them, JSON kinds of primitives), primitive values (the
 * R4 regular expressions and integer ranges) and, when asked, required elements. No
 * profiles, invariants or terminology. */
#ifndef FHIR_VALIDATE_H
#define FHIR_VALIDATE_H

#include <stdbool.h>
#include <stddef.h>

#include "fhir/tree.h"
#include "lib/arena.h"
#include "lib/slice.h"

typedef enum {
	FHIR_ISSUE_STRUCTURE, /* unknown element, wrong JSON kind, array or not, empty, null */
	FHIR_ISSUE_VALUE,     /* a primitive whose value R4 does not allow */
	FHIR_ISSUE_REQUIRED,  /* a required element (min cardinality >= 1) is missing */
} fhir_issue_kind_t;

typedef struct {
	fhir_issue_kind_t kind;
	const char *path; /* FHIRPath-like, with array indexes: "Patient.name[0].given[1]" */
	const char *what; /* "not a valid date (YYYY, YYYY-MM or YYYY-MM-DD)"; no values */
} fhir_issue_t;

enum {
	FHIR_VALIDATE_REQUIRED = 1 << 0, /* also report missing required elements */
};

/* Checks res (a resource: an object with a known resourceType). Stores at most max issues
 * (strings in a) in out, in document order, and returns how many it found in all; with max 1
 * it stops at the first. */
size_t fhir_validate(arena_t *a, const fhir_node_t *res, unsigned flags, fhir_issue_t *out,
		     size_t max);

/* Whether text is a valid value of primitive type name ("date", "id", "positiveInt", ...) as
 * R4 defines it: NULL when it is, else what is wrong or what a valid one looks like. Every
 * type needs UTF-8 text XML can carry (no control characters but tab, CR, LF); beyond that,
 * unknown types and those without a rule (string, markdown, xhtml) pass. */
const char *fhir_primitive_problem(const char *type, slice_t text);

#endif
