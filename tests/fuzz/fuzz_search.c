/* Fuzz target: FHIR search (gateway/search.c) over a small real LMDB store, made once per
 * process in a temporary folder: Patients, Observations, Encounters and Practitioners with their
 * index entries. The first byte picks the type searched (or none: a system search) and whether
 * unknown parameters are an error; the rest is the query string. A search must end in a result
 * or in a 400 with an OperationOutcome, never in a store error; a result holds at most its
 * matches and includes, and its cursors, given back, are accepted. */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fhir/json.h"
#include "fhir/search.h"
#include "gateway/search.h"
#include "lib/buf.h"
#include "lib/err.h"
#include "lib/xalloc.h"
#include "store/store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static store_t *g_store;
static char g_dir[] = "/tmp/fhirgate-fuzz-search-XXXXXX";

static void
put(store_txn_t *t, const char *json)
{
	arena_t *a = arena_new(0);
	fhir_node_t *res = NULL;
	fhir_idx_entry_t *e = NULL;
	store_idx_entry_t *se;
	store_res_result_t r;
	buf_t body = BUF_INIT;
	size_t n = 0;
	char err[128];

	if (fhir_json_parse(a, json, strlen(json), NULL, &res, err, sizeof(err)) != 0 ||
	    fhir_search_index(a, res, store_idx_value_max, &e, &n) != 0 ||
	    fhir_json_write(res, false, &body) != 0)
		abort();
	se = arena_alloc(a, (n + 1) * sizeof(*se));
	for (size_t i = 0; i < n; i++)
		se[i] = (store_idx_entry_t){e[i].code, e[i].value};
	if (store_res_put(t,
			  &(store_res_put_t){.type = fhir_resource_type(res),
					     .id = fhir_node_text(fhir_object_get_cstr(res, "id")),
					     .body = buf_slice(&body),
					     .entries = se,
					     .n_entries = n,
					     .now_ns = 1000},
			  &r) != 0)
		abort();
	buf_free(&body);
	arena_free(a);
}

static void
cleanup(void)
{
	char *cmd = xasprintf("rm -rf '%s'", g_dir);

	store_close(g_store);
	if (system(cmd) != 0)
		fprintf(stderr, "fuzz_search: could not remove %s\n", g_dir);
	free(cmd);
}

static void
setup(void)
{
	store_txn_t *t;
	char json[1024];

	if (mkdtemp(g_dir) == NULL || store_open(g_dir, NULL, &g_store) != 0 ||
	    store_txn_begin(g_store, true, &t) != 0)
		abort();
	atexit(cleanup);
	for (int i = 0; i < 12; i++) {
		snprintf(json, sizeof(json),
			 "{\"resourceType\":\"Patient\",\"id\":\"p%d\",\"identifier\":[{\"system\":"
			 "\"urn:mrn\",\"value\":\"MRN%d\"}],\"name\":[{\"family\":\"%s\",\"given\":"
			 "[\"G%d\"]}],\"gender\":\"%s\",\"birthDate\":\"19%02d-0%d-15\","
			 "\"managingOrganization\":{\"reference\":\"Organization/o%d\"}}",
			 i, i,
			 i % 3 == 0   ? "Smith"
			 : i % 3 == 1 ? "M\xc3\xbcller"
				      : "Jones",
			 i, i % 2 ? "female" : "male", 40 + i, 1 + i % 9, i % 2);
		put(t, json);
	}
	for (int i = 0; i < 16; i++) {
		snprintf(
		    json, sizeof(json),
		    "{\"resourceType\":\"Observation\",\"id\":\"ob%d\",\"status\":\"final\","
		    "\"code\":{\"coding\":[{\"system\":\"http://loinc.org\",\"code\":\"%s\"}]},"
		    "\"subject\":{\"reference\":\"Patient/p%d\"},\"encounter\":{\"reference\":"
		    "\"Encounter/e%d\"},\"effectiveDateTime\":\"2024-03-%02dT10:00:00+01:00\","
		    "\"valueQuantity\":{\"value\":%d.5,\"unit\":\"mg/dL\",\"system\":"
		    "\"http://unitsofmeasure.org\",\"code\":\"mg/dL\"}}",
		    i, i % 2 ? "8867-4" : "2339-0", i % 12, i % 4, 1 + i, 60 + 3 * i);
		put(t, json);
	}
	for (int i = 0; i < 4; i++) {
		snprintf(json, sizeof(json),
			 "{\"resourceType\":\"Encounter\",\"id\":\"e%d\",\"status\":\"finished\","
			 "\"subject\":{\"reference\":\"Patient/p%d\"},\"participant\":[{"
			 "\"individual\":{\"reference\":\"Practitioner/pr%d\"}}],\"period\":{"
			 "\"start\":\"2024-02-0%d\",\"end\":\"2024-02-0%d\"}}",
			 i, i, i % 2, 1 + i, 2 + i);
		put(t, json);
	}
	for (int i = 0; i < 2; i++) {
		snprintf(json, sizeof(json),
			 "{\"resourceType\":\"Practitioner\",\"id\":\"pr%d\",\"name\":[{\"family\":"
			 "\"Doc%d\"}]}",
			 i, i);
		put(t, json);
	}
	if (store_txn_commit(t) != 0)
		abort();
}

/* One search; a cursor it gives back is followed once (depth 0 only). */
static void
run(slice_t type, slice_t query, const search_opts_t *opt, int depth)
{
	store_txn_t *t;
	arena_t *a = arena_new(0);
	search_result_t *r = NULL;
	fhir_node_t *oo = NULL;
	int rc;

	if (store_txn_begin(g_store, false, &t) != 0)
		abort();
	rc = search_run(t, a, type, query, opt, &r, &oo);
	if (rc == -FG_EINVAL) {
		if (oo == NULL)
			abort(); /* a refusal says why */
	} else if (rc != 0 || r == NULL) {
		abort(); /* no bad request may look like a store failure */
	} else {
		if (r->nmatches > r->nhits || (r->total_known && r->total < r->nmatches) ||
		    (r->has_next && r->next_cursor.len == 0) ||
		    (r->has_prev && r->prev_cursor.len == 0))
			abort();
		for (size_t i = 0; i < r->nhits; i++)
			if (r->hits[i].type.len == 0 || r->hits[i].id.len == 0)
				abort();
		for (int k = 0; depth == 0 && k < 2; k++) {
			slice_t c = k == 0 ? (r->has_next ? r->next_cursor : SLICE_NULL)
					   : (r->has_prev ? r->prev_cursor : SLICE_NULL);
			buf_t q = BUF_INIT;

			if (c.len == 0)
				continue;
			buf_append_slice(&q, r->self_query);
			buf_append_cstr(&q, "&_cursor=");
			buf_append_slice(&q, c);
			run(type, buf_slice(&q), opt, 1);
			buf_free(&q);
		}
	}
	store_txn_abort(t);
	arena_free(a);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const types[] = {"Patient", "Observation",  "Encounter", "Practitioner",
					    "",        "Organization", "NotAType",  "Patient/x"};
	search_opts_t opt = {.max_count = 50};

	if (g_store == NULL)
		setup();
	if (size == 0)
		return 0;
	opt.strict = (data[0] & 8) != 0;
	run(slice_cstr(types[data[0] & 7]), slice_make((const char *)data + 1, size - 1), &opt, 0);
	return 0;
}
