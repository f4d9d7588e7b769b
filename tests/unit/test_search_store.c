/* Unit tests for gateway/search: ~50 resources indexed with fhir_search_index in a real LMDB
 * store (temporary directory), searched with search_run; exact id lists are asserted. */
#include "config.h"

#include <sys/stat.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fhir/json.h"
#include "fhir/search.h"
#include "gateway/search.h"
#include "lib/buf.h"
#include "lib/err.h"
#include "store/store.h"
#include "tests/unit/tmpdir.h"

typedef struct {
	char dir[256];
	store_t *s;
} fixture_t;

static fixture_t *g_f;

/* Stores json as the server does, its lastUpdated the store's (now_ns), not in the body. */
static void
put_at(store_txn_t *t, const char *json, uint64_t now_ns)
{
	arena_t *a = arena_new(0);
	fhir_node_t *res;
	fhir_idx_entry_t *e;
	size_t n;
	char err[128];
	store_idx_entry_t *se;
	store_res_put_t p = {0};
	store_res_result_t r;
	buf_t body = BUF_INIT;

	assert_int_equal(fhir_json_parse(a, json, strlen(json), NULL, &res, err, sizeof(err)), 0);
	assert_int_equal(fhir_search_index(a, res, store_idx_value_max, &e, &n), 0);
	se = arena_alloc(a, (n + 1) * sizeof(*se));
	for (size_t i = 0; i < n; i++)
		se[i] = (store_idx_entry_t){e[i].code, e[i].value};
	assert_int_equal(fhir_json_write(res, false, &body), 0);
	p.type = fhir_resource_type(res);
	p.id = fhir_node_text(fhir_object_get_cstr(res, "id"));
	p.body = buf_slice(&body);
	p.entries = se;
	p.n_entries = n;
	p.now_ns = now_ns;
	assert_int_equal(store_res_put(t, &p, &r), 0);
	buf_free(&body);
	arena_free(a);
}

static void
put(store_txn_t *t, const char *json)
{
	put_at(t, json, 1);
}

static const char *
family_of(int i)
{
	return i == 3 ? "Smithson" : i == 5 ? "M\xc3\xbcller" : i % 2 == 0 ? "Smith" : "Jones";
}

static int
setup(void **state)
{
	fixture_t *f = calloc(1, sizeof(*f));
	store_txn_t *t;
	char json[2048], longname[700];

	if (test_tmpdir_make(f->dir, sizeof(f->dir), "fhirgate-test-search") == NULL ||
	    store_open(f->dir, NULL, &f->s) != 0)
		return -1;
	if (store_txn_begin(f->s, true, &t) != 0)
		return -1;
	for (int i = 0; i < 20; i++) {
		char bd[48] = "";

		if (i != 7)
			snprintf(bd, sizeof(bd), ",\"birthDate\":\"%d-01-15\"", 1950 + i);
		snprintf(
		    json, sizeof(json),
		    "{\"resourceType\":\"Patient\",\"id\":\"p%02d\",\"identifier\":[{"
		    "\"system\":\"urn:mrn\",\"value\":\"MRN%d\"}],\"name\":[{\"family\":\"%s\","
		    "\"given\":[\"G%d\"]}],\"gender\":\"%s\"%s}",
		    i, i, family_of(i), i, i % 2 == 0 ? "male" : "female", bd);
		/* lastUpdated 2024-05-(i + 1)T00:00:00Z, and 0.5 ms later for p04 */
		put_at(t, json,
		       (1714521600ull + 86400ull * (uint64_t)i) * 1000000000ull +
			   (i == 4 ? 500000u : 0u));
	}
	for (int i = 0; i < 25; i++) {
		char eff[64], enc[64] = "";

		if (i < 20)
			snprintf(eff, sizeof(eff), "2024-03-%02dT10:00:00Z", i + 1);
		else
			snprintf(eff, sizeof(eff), "2024-04");
		if (i < 5)
			snprintf(enc, sizeof(enc),
				 ",\"encounter\":{\"reference\":\"Encounter/e%d\"}", i);
		snprintf(json, sizeof(json),
			 "{\"resourceType\":\"Observation\",\"id\":\"o%02d\",\"status\":\"final\","
			 "\"code\":{\"coding\":[{\"system\":\"http://loinc.org\",\"code\":\"%s\","
			 "\"display\":\"%s\"}]},\"subject\":{\"reference\":\"Patient/p%02d\"}%s,"
			 "\"effectiveDateTime\":\"%s\",\"valueQuantity\":{\"value\":%d,\"unit\":\"/"
			 "min\","
			 "\"system\":\"http://unitsofmeasure.org\",\"code\":\"/min\"}}",
			 i, i < 15 ? "8867-4" : "2339-0",
			 i < 15 ? "Heart rate" : "Glucose [Mass/volume]", i % 5, enc, eff, 60 + i);
		put(t, json);
	}
	for (int i = 0; i < 5; i++) {
		snprintf(json, sizeof(json),
			 "{\"resourceType\":\"Encounter\",\"id\":\"e%d\",\"status\":\"finished\","
			 "\"subject\":{\"reference\":\"Patient/p%02d\"},\"period\":{\"start\":"
			 "\"2024-02-%02d\",\"end\":\"2024-02-%02d\"}}",
			 i, i, i + 1, i + 3);
		put(t, json);
	}
	/* Two practitioners whose long names share the indexed (truncated) prefix. */
	memset(longname, 'a', 600);
	longname[600] = '\0';
	snprintf(
	    json, sizeof(json),
	    "{\"resourceType\":\"Practitioner\",\"id\":\"pr1\",\"name\":[{\"family\":\"%sX\"}]}",
	    longname);
	put(t, json);
	snprintf(
	    json, sizeof(json),
	    "{\"resourceType\":\"Practitioner\",\"id\":\"pr2\",\"name\":[{\"family\":\"%sY\"}]}",
	    longname);
	put(t, json);
	if (store_txn_commit(t) != 0)
		return -1;
	*state = f;
	g_f = f;
	return 0;
}

static int
teardown(void **state)
{
	fixture_t *f = *state;

	store_close(f->s);
	test_tmpdir_remove(f->dir);
	free(f);
	return 0;
}

/* Runs a search; returns "id,id,...[ +Type/id ...]" (matches, then includes), or "ERR". */
static char g_out[8192];
static search_result_t g_res;
static char g_cursor[4096];
static char g_prev[4096];

static const char *
run_opts(const char *type, const char *query, const search_opts_t *opt)
{
	store_txn_t *t;
	arena_t *a = arena_new(0);
	search_result_t *r;
	fhir_node_t *oo;
	size_t o = 0;
	int rc;

	assert_int_equal(store_txn_begin(g_f->s, false, &t), 0);
	rc = search_run(t, a, slice_cstr(type), slice_cstr(query), opt, &r, &oo);
	g_out[0] = '\0';
	if (rc != 0) {
		assert_int_equal(rc, -FG_EINVAL);
		assert_non_null(oo);
		snprintf(g_out, sizeof(g_out), "ERR");
	} else {
		for (size_t i = 0; i < r->nhits; i++)
			o += (size_t)snprintf(g_out + o, sizeof(g_out) - o, "%s%s%.*s%s%.*s",
					      i ? (r->hits[i].include ? " +" : ",") : "",
					      r->hits[i].include ? "" : "",
					      r->hits[i].include ? (int)r->hits[i].type.len : 0,
					      r->hits[i].type.ptr, r->hits[i].include ? "/" : "",
					      (int)r->hits[i].id.len, r->hits[i].id.ptr);
		g_res = *r;
		/* keep what tests look at after the arena is gone */
		snprintf(g_cursor, sizeof(g_cursor), "%.*s", (int)r->next_cursor.len,
			 r->next_cursor.ptr ? r->next_cursor.ptr : "");
		g_res.next_cursor = slice_cstr(g_cursor);
		snprintf(g_prev, sizeof(g_prev), "%.*s", (int)r->prev_cursor.len,
			 r->prev_cursor.ptr ? r->prev_cursor.ptr : "");
		g_res.prev_cursor = slice_cstr(g_prev);
		g_res.warnings = r->warnings != NULL ? (fhir_node_t *)1 : NULL;
		g_res.hits = NULL;
	}
	store_txn_abort(t);
	arena_free(a);
	return g_out;
}

static const char *
run(const char *type, const char *query)
{
	search_opts_t opt = {0};

	opt.default_count = 100;
	return run_opts(type, query, &opt);
}

static void
test_token(void **state)
{
	(void)state;
	assert_string_equal(run("Patient", "gender=male"),
			    "p00,p02,p04,p06,p08,p10,p12,p14,p16,p18");
	assert_string_equal(run("Patient", "identifier=urn:mrn|MRN4"), "p04");
	assert_string_equal(run("Patient", "identifier=MRN4"), "p04");
	assert_string_equal(run("Patient", "identifier=other|MRN4"), "");
	assert_string_equal(run("Observation", "code=http://loinc.org|2339-0"),
			    "o15,o16,o17,o18,o19,o20,o21,o22,o23,o24");
	assert_string_equal(run("Observation", "code:not=8867-4"),
			    "o15,o16,o17,o18,o19,o20,o21,o22,o23,o24");
	assert_string_equal(run("Observation", "code:text=glucose&date=2024-04"),
			    "o20,o21,o22,o23,o24");
	assert_string_equal(run("Patient", "_id=p01,p02"), "p01,p02");
	assert_int_equal(g_res.total, 2);
}

static void
test_string(void **state)
{
	(void)state;
	assert_string_equal(run("Patient", "family=smith"),
			    "p00,p02,p03,p04,p06,p08,p10,p12,p14,p16,p18");
	assert_string_equal(run("Patient", "family:exact=Smith"),
			    "p00,p02,p04,p06,p08,p10,p12,p14,p16,p18");
	assert_string_equal(run("Patient", "family:exact=smith"), "");
	assert_string_equal(run("Patient", "family:contains=ULL"), "p05");
	assert_string_equal(run("Patient", "family=muller"), "p05");
	assert_string_equal(run("Patient", "name=g1"),
			    "p01,p10,p11,p12,p13,p14,p15,p16,p17,p18,p19");
	/* truncated index values are re-checked against the resource */
	{
		char q[800] = "family:exact=";
		size_t l = strlen(q);

		memset(q + l, 'a', 600);
		q[l + 600] = 'Y';
		q[l + 601] = '\0';
		assert_string_equal(run("Practitioner", q), "pr2");
		q[l + 600] = '\0';
		assert_string_equal(run("Practitioner", q), "");
		memcpy(q, "family=        ", 13);
		memmove(q + 7, q + 13, strlen(q + 13) + 1);
		assert_string_equal(run("Practitioner", q), "pr1,pr2");
	}
}

/* _lastUpdated is the store's time of the current version (the bodies do not hold it): each
 * prefix, the millisecond precision clients see, narrowing by other parameters (checked on the
 * candidates themselves), :missing, sorting, and deleted resources. */
static void
test_last_updated(void **state)
{
	store_txn_t *t;
	store_res_result_t r;

	(void)state;
	assert_string_equal(run("Patient", "_lastUpdated=gt2024-05-18"), "p18,p19");
	assert_string_equal(run("Patient", "_lastUpdated=ge2024-05-19"), "p18,p19");
	assert_string_equal(run("Patient", "_lastUpdated=sa2024-05-19"), "p19");
	assert_string_equal(run("Patient", "_lastUpdated=lt2024-05-03"), "p00,p01");
	assert_string_equal(run("Patient", "_lastUpdated=le2024-05-02"), "p00,p01");
	assert_string_equal(run("Patient", "_lastUpdated=eb2024-05-02"), "p00");
	assert_string_equal(run("Patient", "_lastUpdated=ne2024-05-03&_lastUpdated=lt2024-05-05"),
			    "p00,p01,p03");
	assert_string_equal(run("Patient", "_lastUpdated=2024-05-05T00:00:00.000Z"), "p04");
	assert_string_equal(run("Patient", "_lastUpdated=gt2024-05-05T00:00:00.000Z&_lastUpdated="
					   "lt2024-05-06"),
			    "");
	assert_string_equal(run("Patient", "identifier=urn:mrn|MRN4&_lastUpdated=2024-05-05"),
			    "p04");
	assert_string_equal(run("Patient", "identifier=urn:mrn|MRN4&_lastUpdated=2024-05-06"), "");
	assert_string_equal(run("Patient", "gender=female&_lastUpdated=lt2024-05-06"), "p01,p03");
	assert_string_equal(run("Patient", "_lastUpdated:missing=true"), "");
	assert_string_equal(run("Patient", "_lastUpdated:missing=false&_count=3&_sort=_id"),
			    "p00,p01,p02");
	assert_string_equal(run("Patient", "_sort=_lastUpdated&_count=3"), "p00,p01,p02");
	assert_string_equal(run("Patient", "_lastUpdated=lt2024-05-04&_sort=-_lastUpdated"),
			    "p02,p01,p00");
	/* a resource deleted since is not found, by the history walk or by the scan */
	assert_int_equal(store_txn_begin(g_f->s, true, &t), 0);
	put_at(t, "{\"resourceType\":\"Practitioner\",\"id\":\"gone\"}",
	       1893456000000000000ull /* 2030-01-01 */);
	assert_int_equal(store_txn_commit(t), 0);
	assert_string_equal(run("Practitioner", "_lastUpdated=ge2030"), "gone");
	assert_int_equal(store_txn_begin(g_f->s, true, &t), 0);
	assert_int_equal(store_res_delete(t, SLICE_LIT("Practitioner"), SLICE_LIT("gone"),
					  1893456001000000000ull, &r),
			 0);
	assert_int_equal(store_txn_commit(t), 0);
	assert_string_equal(run("Practitioner", "_lastUpdated=ge2030"), "");
	assert_string_equal(run("Practitioner", "_lastUpdated=le2030"), "pr1,pr2");
}

/* _has: the resources that a matching resource of another type points to, nested too, with
 * other parameters; malformed ones are a 400. */
static void
test_has(void **state)
{
	(void)state;
	assert_string_equal(run("Patient", "_has:Observation:subject:code=2339-0"),
			    "p00,p01,p02,p03,p04");
	assert_string_equal(run("Patient", "_has:Observation:subject:code=8867-4&gender=female"),
			    "p01,p03");
	assert_string_equal(run("Patient", "_has:Observation:subject:value-quantity=gt80"),
			    "p01,p02,p03,p04");
	assert_string_equal(run("Encounter", "_has:Observation:encounter:value-quantity=lt62"),
			    "e0,e1");
	assert_string_equal(
	    run("Patient", "_has:Encounter:subject:_has:Observation:encounter:value-quantity=lt62"),
	    "p00,p01");
	assert_string_equal(run("Patient", "_has:Observation:subject:code=0000-0"), "");
	assert_string_equal(run("Patient", "_has:Observation:subject"), "ERR");
	assert_string_equal(run("Patient", "_has:Nope:subject:code=1"), "ERR");
	assert_string_equal(run("Patient", "_has:Observation:code:code=1"), "ERR");
	assert_string_equal(run("Patient", "_has:Observation:subject:nonsense=1"), "ERR");
	assert_string_equal(run("", "_has:Observation:subject:code=2339-0"), "ERR");
	/* nested at most 4 deep */
	assert_string_equal(run("Patient", "_has:Encounter:subject:_has:Observation:encounter:_has:"
					   "Observation:has-member:_has:Observation:has-member:"
					   "status=final"),
			    "");
	assert_string_equal(run("Patient",
				"_has:Encounter:subject:_has:Observation:encounter:_has:"
				"Observation:has-member:_has:Observation:has-member:_has:"
				"Observation:has-member:status=final"),
			    "ERR");
}

static void
test_date(void **state)
{
	(void)state;
	assert_string_equal(run("Patient", "birthdate=1955"), "p05");
	assert_string_equal(run("Patient", "birthdate=eq1960-01"), "p10");
	assert_string_equal(run("Patient", "birthdate=1960-02"), "");
	assert_string_equal(run("Patient", "birthdate=lt1952"), "p00,p01");
	assert_string_equal(run("Patient", "birthdate=le1951-01-15"), "p00,p01");
	assert_string_equal(run("Patient", "birthdate=gt1967"), "p18,p19");
	assert_string_equal(run("Patient", "birthdate=ge1967"), "p17,p18,p19");
	assert_string_equal(run("Patient", "birthdate=sa1967-12-31"), "p18,p19");
	assert_string_equal(run("Patient", "birthdate=eb1951"), "p00");
	assert_string_equal(run("Patient", "birthdate=ne1950&birthdate=lt1953"), "p01,p02");
	/* ap: +-10% of the distance from now (decades here) */
	assert_string_equal(run("Patient", "birthdate=ap1960-01-15"),
			    "p04,p05,p06,p08,p09,p10,p11,p12,p13,p14,p15,p16");
	assert_string_equal(run("Patient", "birthdate:missing=true"), "p07");
	assert_string_equal(run("Observation", "date=2024-03-05"), "o04");
	assert_string_equal(run("Observation", "date=2024-03-05T10:00:00Z"), "o04");
	assert_string_equal(run("Observation", "date=ge2024-04"), "o20,o21,o22,o23,o24");
	assert_string_equal(run("Observation", "date=lt2024-03-03"), "o00,o01");
	/* a month value is not within a single day, but overlaps it */
	assert_string_equal(run("Observation", "date=2024-04-10"), "");
	assert_string_equal(run("Observation", "date=le2024-04-10&date=ge2024-04-10"),
			    "o20,o21,o22,o23,o24");
	assert_string_equal(run("Encounter", "date=2024-02-02"), "");
	assert_string_equal(run("Encounter", "date=ge2024-02-06"), "e3,e4");
	assert_string_equal(run("Patient", "_lastUpdated=2024-05-03"), "p02");
	assert_string_equal(run("Patient", "birthdate=notadate"), "ERR");
}

static void
test_reference_chain(void **state)
{
	(void)state;
	assert_string_equal(run("Observation", "subject=Patient/p01"), "o01,o06,o11,o16,o21");
	assert_string_equal(run("Observation", "subject:Patient=p01"), "o01,o06,o11,o16,o21");
	assert_string_equal(run("Observation", "patient=p01"), "o01,o06,o11,o16,o21");
	assert_string_equal(run("Observation", "subject=p01&code=2339-0"), "o16,o21");
	assert_string_equal(run("Observation", "subject.family=jones&code=2339-0"), "o16,o21");
	assert_string_equal(run("Observation", "subject:Patient.identifier=urn:mrn|MRN2"),
			    "o02,o07,o12,o17,o22");
	assert_string_equal(run("Observation", "encounter:missing=false"), "o00,o01,o02,o03,o04");
	assert_string_equal(run("Observation", "encounter.status=finished&subject=p03"), "o03");
	/* chains of several links: Observation -> Encounter -> Patient */
	assert_string_equal(run("Observation", "encounter.subject.family=Smith"),
			    "o00,o02,o03,o04");
	assert_string_equal(run("Observation", "encounter.subject:Patient.family:exact=Smith"),
			    "o00,o02,o04");
	assert_string_equal(
	    run("Observation", "encounter.subject.identifier=urn:mrn|MRN1&code=8867-4"), "o01");
	assert_string_equal(run("Observation", "encounter.subject.organization.partof.name=x"), "");
	assert_string_equal(
	    run("Observation", "encounter.subject.organization.partof.partof.name=x"), "ERR");
}

static void
test_quantity(void **state)
{
	(void)state;
	assert_string_equal(run("Observation", "value-quantity=gt80"), "o21,o22,o23,o24");
	assert_string_equal(
	    run("Observation", "value-quantity=le62|http://unitsofmeasure.org|/min"),
	    "o00,o01,o02");
	assert_string_equal(run("Observation", "value-quantity=lt62||/min"), "o00,o01");
	assert_string_equal(run("Observation", "value-quantity=le62|other|/min"), "");
	assert_string_equal(run("Observation", "value-quantity=70"), "o10");
	assert_string_equal(run("Observation", "value-quantity=70.0"), "o10");
	assert_string_equal(run("Observation", "value-quantity=ge83,lt61"), "o00,o23,o24");
	assert_string_equal(run("Observation", "value-quantity=ap80"),
			    "o12,o13,o14,o15,o16,o17,o18,o19,o20,o21,o22,o23,o24");
}

static void
test_sort_and_paging(void **state)
{
	search_opts_t opt = {0};
	char seen[40] = {0};
	char q[512];
	int pages = 0;

	(void)state;
	assert_string_equal(run("Patient", "_sort=-birthdate&_count=3"), "p19,p18,p17");
	assert_string_equal(run("Patient", "_sort=birthdate&gender=female"),
			    "p01,p03,p05,p09,p11,p13,p15,p17,p19,p07");
	assert_string_equal(run("Patient", "_sort=family,-_id&_count=4"), "p19,p17,p15,p13");
	assert_string_equal(run("Observation", "_sort=-value-quantity&_count=2"), "o24,o23");
	assert_string_equal(run("Patient", "_sort=-_lastUpdated&_count=2"), "p19,p18");
	/* _count=0: the total only, and no next page (it would have no cursor) */
	assert_string_equal(run("Patient", "_count=0"), "");
	assert_true(g_res.total_known && g_res.total == 20 && !g_res.has_next);

	/* pages of 7 in birthdate order cover every patient once */
	opt.default_count = 20;
	snprintf(q, sizeof(q), "_sort=-birthdate&_count=7");
	for (;;) {
		const char *out = run_opts("Patient", q, &opt);
		char *copy = strdup(out), *tok, *save = NULL;

		pages++;
		for (tok = strtok_r(copy, ",", &save); tok != NULL;
		     tok = strtok_r(NULL, ",", &save)) {
			int i = atoi(tok + 1);

			assert_int_equal(seen[i], 0);
			seen[i] = 1;
		}
		free(copy);
		assert_int_equal(g_res.total, 20);
		if (!g_res.has_next) {
			break;
		}
		snprintf(q, sizeof(q), "_sort=-birthdate&_count=7&_cursor=%.*s",
			 (int)g_res.next_cursor.len, g_res.next_cursor.ptr);
		assert_true(pages < 5);
	}
	assert_int_equal(pages, 3);
	for (int i = 0; i < 20; i++)
		assert_int_equal(seen[i], 1);

	/* and back: the previous links of pages 3 and 2 give pages 2 and 1 */
	{
		char page[3][256], prev[400];

		snprintf(q, sizeof(q), "_sort=-birthdate&_count=7");
		for (int i = 0; i < 3; i++) {
			snprintf(page[i], sizeof(page[i]), "%s", run_opts("Patient", q, &opt));
			assert_int_equal(g_res.has_prev, i > 0);
			snprintf(q, sizeof(q), "_sort=-birthdate&_count=7&_cursor=%.*s",
				 (int)g_res.next_cursor.len, g_res.next_cursor.ptr);
		}
		for (int i = 2; i > 0; i--) {
			assert_true(strlen(g_prev) < sizeof(prev));
			snprintf(prev, sizeof(prev), "%s", g_prev);
			snprintf(q, sizeof(q), "_sort=-birthdate&_count=7&_cursor=%s", prev);
			assert_string_equal(run_opts("Patient", q, &opt), page[i - 1]);
			assert_int_equal(g_res.has_prev, i - 1 > 0);
			assert_true(g_res.has_next);
		}
		assert_string_equal(run("Patient", "_cursor=pzz"), "ERR");
	}

	/* default and capped _count */
	opt.default_count = 0;
	opt.max_count = 5;
	assert_string_equal(run_opts("Observation", "_count=50", &opt), "o00,o01,o02,o03,o04");
	assert_true(g_res.has_next);
	assert_string_equal(run("Patient", "_cursor=zz"), "ERR");
}

static void
test_include(void **state)
{
	(void)state;
	assert_string_equal(run("Observation", "_id=o01,o06&_include=Observation:subject"),
			    "o01,o06 +Patient/p01");
	assert_int_equal(g_res.nmatches, 2);
	assert_string_equal(run("Observation", "_id=o01&_include=Observation:*"),
			    "o01 +Encounter/e1 +Patient/p01");
	assert_string_equal(run("Observation", "_id=o01&_include=Observation:subject:Group"),
			    "o01");
	assert_string_equal(run("Patient", "_id=p02&_revinclude=Observation:subject"),
			    "p02 +Observation/o02 +Observation/o07 +Observation/o12 "
			    "+Observation/o17 +Observation/o22");
	assert_string_equal(
	    run("Patient", "_id=p02&_revinclude=Encounter:patient&_summary=true&_elements=id"),
	    "p02 +Encounter/e2");
	/* :iterate follows what the includes brought in: Observation -> Encounter -> Patient */
	assert_string_equal(run("Observation", "_id=o01&_include=Observation:encounter&_include:"
					       "iterate=Encounter:subject"),
			    "o01 +Encounter/e1 +Patient/p01");
	assert_string_equal(
	    run("Observation", "_id=o01&_include=Observation:encounter&_include=Encounter:subject"),
	    "o01 +Encounter/e1");
	/* Encounter -> its Patient -> every Observation of that Patient */
	assert_string_equal(run("Encounter", "_id=e3&_include=Encounter:subject&_revinclude:"
					     "iterate=Observation:subject"),
			    "e3 +Patient/p03 +Observation/o03 +Observation/o08 +Observation/o13 "
			    "+Observation/o18 +Observation/o23");
}

static void
test_unknown_total_system(void **state)
{
	search_opts_t strict = {0};

	(void)state;
	strict.strict = true;
	assert_string_equal(run("Patient", "foo=bar&gender=female&_count=2"), "p01,p03");
	assert_non_null(g_res.warnings);
	assert_true(g_res.total_known);
	assert_int_equal(g_res.total, 10);
	assert_string_equal(run_opts("Patient", "foo=bar", &strict), "ERR");
	assert_string_equal(run("Patient", "gender=female&_count=2&_total=none"), "p01,p03");
	assert_false(g_res.total_known);
	assert_null(g_res.warnings);
	assert_string_equal(run("Patient", "family:bogus=x"), "ERR");
	/* system search: _id across types, _type */
	assert_string_equal(run("", "_id=p01,o01,e1"), "e1,o01,p01");
	assert_string_equal(run("", "_type=Encounter&_count=2"), "e0,e1");
	assert_string_equal(run_opts("", "gender=male", &strict), "ERR");
}

/* One value per token form and one id per reference form, on the single-entry encodings. */
static void
test_token_reference_forms(void **state)
{
	(void)state;
	assert_string_equal(run("Patient", "identifier=urn:mrn|"),
			    "p00,p01,p02,p03,p04,p05,p06,p07,"
			    "p08,p09,p10,p11,p12,p13,p14,"
			    "p15,p16,p17,p18,p19");
	assert_string_equal(run("Patient", "identifier=urn:mr|"), "");
	assert_string_equal(run("Patient", "identifier=|MRN4"), "");
	assert_string_equal(run("Patient", "identifier=MRN1"), "p01");
	assert_string_equal(run("Patient", "gender=|female&_count=3"), "p01,p03,p05");
	assert_string_equal(run("Observation", "code=|8867-4"), "");
	assert_string_equal(run("Observation", "code=http://loinc.org|&code:not=8867-4&_count=2"),
			    "o15,o16");
	assert_string_equal(run("Observation", "code=http://loinc.org|886"), "");
	assert_string_equal(run("Observation", "encounter=e1"), "o01");
	assert_string_equal(run("Observation", "encounter=Encounter/e1"), "o01");
	assert_string_equal(run("Observation", "encounter=Patient/e1"), "");
	assert_string_equal(run("Observation", "encounter:Encounter=e2"), "o02");
	assert_string_equal(run("Observation", "encounter=e"), "");
}

/* x AND y for comma-separated id lists: the ids of x that are in y. */
static void
ids_and_str(const char *x, const char *y, char *out, size_t cap)
{
	size_t o = 0;

	out[0] = '\0';
	while (*x != '\0') {
		size_t l = strcspn(x, ",");
		const char *f = y;

		while (*f != '\0') {
			size_t m = strcspn(f, ",");

			if (m == l && memcmp(f, x, l) == 0) {
				o += (size_t)snprintf(out + o, cap - o, "%s%.*s", o ? "," : "",
						      (int)l, x);
				break;
			}
			f += m + (f[m] == ',');
		}
		x += l + (x[l] == ',');
	}
}

/* With a small first match set the other parameters are checked per candidate; the result
 * must be what intersecting each parameter's own (index) match set gives. */
static void
test_candidates_match_index(void **state)
{
	static const char *const first[] = {"Observation", "subject=Patient/p01,Patient/p02,p03",
					    "Patient", "gender=male"};
	static const char *const second[][2] = {
	    {"Observation", "code=8867-4"},
	    {"Observation", "code=http://loinc.org|2339-0"},
	    {"Observation", "code=http://loinc.org|"},
	    {"Observation", "code:not=2339-0"},
	    {"Observation", "code:text=glucose"},
	    {"Observation", "encounter:missing=true"},
	    {"Observation", "encounter:missing=false"},
	    {"Observation", "encounter=e1,Encounter/e2"},
	    {"Observation", "date=ge2024-03-10"},
	    {"Observation", "date=lt2024-03-10"},
	    {"Observation", "date=eb2024-04"},
	    {"Observation", "date=sa2024-03-05"},
	    {"Observation", "value-quantity=gt70"},
	    {"Observation", "value-quantity=ge70|http://unitsofmeasure.org|/min"},
	    {"Observation", "subject.family=jones"},
	    {"Patient", "family:exact=Smith"},
	    {"Patient", "family:exact=smith"},
	    {"Patient", "family=smi"},
	    {"Patient", "family:contains=ith"},
	    {"Patient", "birthdate=ge1960"},
	    {"Patient", "birthdate:missing=false"},
	    {"Patient", "identifier=urn:mrn|MRN4,MRN6"},
	    {"Patient", "_lastUpdated=le2024-05-10"},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(second) / sizeof(second[0]); i++) {
		const char *type = second[i][0];
		const char *f = strcmp(type, first[0]) == 0 ? first[1] : first[3];
		char a[8192], b[8192], want[8192], q[512];

		snprintf(q, sizeof(q), "%s&_count=1000", f);
		snprintf(a, sizeof(a), "%s", run(type, q));
		snprintf(q, sizeof(q), "%s&_count=1000", second[i][1]);
		snprintf(b, sizeof(b), "%s", run(type, q));
		ids_and_str(a, b, want, sizeof(want));
		/* both orders: the evaluation order is the search's own choice */
		snprintf(q, sizeof(q), "%s&%s&_count=1000", f, second[i][1]);
		assert_string_equal(run(type, q), want);
		snprintf(q, sizeof(q), "%s&%s&_count=1000", second[i][1], f);
		assert_string_equal(run(type, q), want);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_token),
	    cmocka_unit_test(test_string),
	    cmocka_unit_test(test_date),
	    cmocka_unit_test(test_last_updated),
	    cmocka_unit_test(test_has),
	    cmocka_unit_test(test_reference_chain),
	    cmocka_unit_test(test_quantity),
	    cmocka_unit_test(test_sort_and_paging),
	    cmocka_unit_test(test_include),
	    cmocka_unit_test(test_unknown_total_system),
	    cmocka_unit_test(test_token_reference_forms),
	    cmocka_unit_test(test_candidates_match_index),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
