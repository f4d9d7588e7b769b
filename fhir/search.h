/* FHIR search, the pure part: index entries extracted from a resource for every R4 search
 * parameter of its type (a FHIRPath subset over the tree), with values normalized into byte
 * strings whose order is the order searches need; and search requests parsed into a plan.
 * Encodings (docs/search.md has the full table):
 *   token      <code>: "code|system" ("code|" without a system); <code>.text: the
 *              normalized display/text
 *   string     <code>: normalized (lowercase, Latin-1 accents folded, spaces collapsed)
 *   date       <code>.lo: be64(lo) be64(hi) (ms since the epoch, sign bit flipped; [lo, hi)
 *              in UTC)
 *   reference  <code>: "id|Type" (or the URL as written); <code>.identifier: token
 *   number     <code>: sortable decimal (fhir_search_number_encode)
 *   quantity   <code>: number; <code>.su: "system|code|" number; <code>.u: "code|" number
 *   uri        <code>: as written */
#ifndef FHIR_SEARCH_H
#define FHIR_SEARCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fhir/meta.h"
#include "fhir/tree.h"
#include "lib/arena.h"
#include "lib/slice.h"

/* One index entry (the same shape as store_idx_entry_t: the gateway passes them through). */
typedef struct {
	slice_t code;  /* the index's name: the parameter code, or a derived one ("birthdate.lo") */
	slice_t value; /* normalized value bytes */
} fhir_idx_entry_t;

/* Caps a value's length for an index key (the store's limit for type + code). */
typedef size_t (*fhir_idx_value_max_fn)(slice_t type, slice_t code);

/* Extracts every index entry of res (an object with resourceType) into *out (arena a), values
 * truncated to value_max (NULL: no cap; a search re-checks truncated values against the
 * resource). Entries come sorted by code, then value, without duplicates. Returns 0 or
 * -FG_EINVAL when res is not a resource of a known type. */
int fhir_search_index(arena_t *a, const fhir_node_t *res, fhir_idx_value_max_fn value_max,
		      fhir_idx_entry_t **out, size_t *n);

/* The same, with absolute references that start with base ("http://host/fhir/", may be empty)
 * indexed as relative ones. */
int fhir_search_index_base(arena_t *a, const fhir_node_t *res, fhir_idx_value_max_fn value_max,
			   slice_t base, fhir_idx_entry_t **out, size_t *n);

/* Every entry of res without a cap, plus those a search derives from the stored resource
 * instead of an index: <code>.exact, strings as written. For re-checking a candidate. */
int fhir_search_index_full(arena_t *a, const fhir_node_t *res, slice_t base, fhir_idx_entry_t **out,
			   size_t *n);

/* The same as fhir_search_index_full for the parameters named in codes only (their derived
 * entries included): what re-checking a candidate against a few parameters needs. */
int fhir_search_index_params(arena_t *a, const fhir_node_t *res, slice_t base, const slice_t *codes,
			     size_t ncodes, fhir_idx_entry_t **out, size_t *n);

/* The entries of one item of a composite parameter (an Observation, or one of its
 * components): those of every component parameter, found from the item. */
typedef struct {
	fhir_idx_entry_t *v;
	size_t n;
} fhir_idx_group_t;

/* For the composite parameter code of res's type (code-value-quantity), one group of entries
 * per item of its expression, with the codes of its component parameters ("code",
 * "value-quantity", "value-quantity.su", ...) and their derived entries as
 * fhir_search_index_full makes them: a composite value matches when one item matches every
 * component. Returns 0, -FG_EINVAL when res is no resource, -FG_EUNSUPPORTED when code is not
 * a composite of the type that can be searched (fhir_search_param_is_supported). */
int fhir_search_index_composite(arena_t *a, const fhir_node_t *res, slice_t base, slice_t code,
				fhir_idx_group_t **out, size_t *n);

/* The reference index value of a reference string: "id|Type" for a relative reference (or
 * an absolute one under base; version dropped), other URLs as written, in *out (borrowed
 * from ref or a). Returns false for references that are not indexed ("#contained", "urn:"). */
bool fhir_search_ref_key(arena_t *a, slice_t ref, slice_t base, slice_t *out);

/* Whether the expression of sp is within the supported FHIRPath subset (a parameter that is
 * not yields no entries and cannot be searched). */
bool fhir_search_param_is_supported(const fhir_searchparam_t *sp);

/* Normalizes a string for string search (lowercase, accents folded, whitespace collapsed) into
 * a (borrowed until the arena is freed). */
slice_t fhir_search_string_norm(arena_t *a, slice_t s);

/* A date, dateTime or instant (or a search value with minutes only) as the range [lo, hi) of
 * milliseconds since the epoch it covers at its precision ("2024-03" is all of March). A
 * time without a zone is taken as UTC. Returns false when s is not such a date. */
bool fhir_search_date_range(slice_t s, int64_t *lo, int64_t *hi);
/* 8 bytes whose byte order is the numeric order of ms. */
void fhir_search_date_encode(int64_t ms, unsigned char out[8]);
int64_t fhir_search_date_decode(const unsigned char in[8]);

/* A decimal ("-1.50", "2e3") as bytes whose byte order is the numeric order (trailing zeros do
 * not count: "1.50" and "1.5" encode alike). Returns false when text is not a number. */
bool fhir_search_number_encode(arena_t *a, slice_t text, slice_t *out);

/* Search prefixes of date, number and quantity values. */
typedef enum {
	FHIR_PFX_EQ = 0,
	FHIR_PFX_NE,
	FHIR_PFX_GT,
	FHIR_PFX_LT,
	FHIR_PFX_GE,
	FHIR_PFX_LE,
	FHIR_PFX_SA,
	FHIR_PFX_EB,
	FHIR_PFX_AP,
} fhir_search_prefix_t;

/* Splits a leading prefix ("ge2024", "lt-5") off v; without one, EQ and v unchanged. */
fhir_search_prefix_t fhir_search_prefix_split(slice_t v, slice_t *rest);

/* One parameter of a search request, parsed from its (decoded) name and value:
 * "subject:Patient.name:exact" = "smith,jones" gives code "subject", modifier "Patient",
 * chain "name:exact", two values. */
typedef struct {
	slice_t name;     /* as given */
	slice_t code;     /* "subject" */
	slice_t modifier; /* "exact", "missing", "Patient", ... ; empty when none */
	slice_t chain;    /* the chained parameter (with its own modifier); empty when none */
	const fhir_searchparam_t *sp; /* NULL: not a parameter of the type */
	slice_t *values;              /* comma-separated alternatives (OR), "\," unescaped; arena */
	size_t nvalues;
} fhir_search_param_t;

/* Parses one name=value pair of a search on type; *out borrows from name, value and a. */
void fhir_search_param_parse(arena_t *a, slice_t type, slice_t name, slice_t value,
			     fhir_search_param_t *out);

#endif
