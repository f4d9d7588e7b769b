/* FHIR search over the store: runs a search request (parsed with fhir/search.h) against the
 * index entries in a read transaction and returns matching ids in the requested order, with
 * _include and _revinclude resolved. The REST layer builds the searchset Bundle from the result.
 *
 * Paging is keyset-based: result->next_cursor encodes the sort key and id of the last match on
 * the page; the next page is the same query plus "_cursor=<next_cursor>" and starts at the first
 * match ordered after it. result->prev_cursor ("p" and the first match of the page) asks for the
 * page of matches ordered before that one. Matches do not repeat or get skipped across pages
 * while data changes, except those whose sort key itself changes between the requests. */
#ifndef GATEWAY_SEARCH_H
#define GATEWAY_SEARCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fhir/tree.h"
#include "lib/arena.h"
#include "lib/slice.h"
#include "store/store.h"

typedef struct {
	slice_t type, id;
	bool include; /* in the result through _include/_revinclude (search mode "include") */
} search_hit_t;

typedef struct {
	search_hit_t *hits; /* the page asked for (matches in order), then the included ones */
	size_t nhits;
	size_t nmatches;       /* hits[0..nmatches) are matches, the rest includes */
	bool total_known;      /* false with _total=none */
	uint64_t total;        /* matches (without includes) when total_known */
	bool has_next;         /* more matches after this page */
	slice_t next_cursor;   /* when has_next: the value of _cursor for the next page */
	bool has_prev;         /* matches before this page */
	slice_t prev_cursor;   /* when has_prev: the value of _cursor for the previous page */
	fhir_node_t *warnings; /* an OperationOutcome for ignored parameters, or NULL */
	slice_t self_query;    /* the canonical query string of this search, without _cursor,
				* percent-encoded (for the self link; next = self + "&_cursor=") */
	slice_t summary;       /* _summary and _elements as given (empty when absent): the REST */
	slice_t elements;      /* layer applies them */
} search_result_t;

typedef struct {
	bool strict;          /* Prefer: handling=strict: unknown parameters are an error */
	size_t default_count; /* _count when absent; 0: 20 */
	size_t max_count;     /* cap on _count; 0: 1000 */
	slice_t base;         /* our base URL with a final '/' ("http://h/fhir/"), may be empty:
			       * absolute references to it count as relative ones */
} search_opts_t;

/* Runs a search of type (empty: all types, for system search, which supports _id,
 * _lastUpdated and _type) with the raw query string (as in the URL or a form-encoded POST
 * body) in read transaction t; opt may be NULL. Returns 0 with *out (arena a: borrowed until
 * it is freed), or -FG_EINVAL with *outcome (an OperationOutcome in a, status 400) for a bad
 * request, or a store error. */
int search_run(store_txn_t *t, arena_t *a, slice_t type, slice_t query, const search_opts_t *opt,
	       search_result_t **out, fhir_node_t **outcome);

#endif
