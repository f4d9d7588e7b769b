/* libFuzzer target for the conversion of HL7 v2 messages with the shipped mappings: a first
 * byte below 0x20 picks the options (explain, a default time zone, a base URL) and the rest is
 * the message; any other input is a message converted with the defaults (so the corpus of
 * tests/data replays as it is). A conversion either fails with a table 0357 code and a
 * text, or gives a Bundle whose every resource passes the checks the REST API applies to what
 * clients send (R4 elements, kinds of primitives, no empty values): a feed must not store what
 * a client could not read back. Every resource and the Bundle are written as JSON and XML, and
 * every resource indexed for search as the writer does. */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fhir/json.h"
#include "fhir/search.h"
#include "fhir/xml.h"
#include "gateway/rest_int.h"
#include "lib/arena.h"
#include "lib/buf.h"
#include "mappings/hl7.h"
#include "mappings/map.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static map_set_t *g_set;

static void
fuzz_diag(const map_diag_t *d, void *arg)
{
	(void)arg;
	fprintf(stderr, "%s:%u:%u: %s\n", d->file, d->line, d->col, d->text);
}

static void
fuzz_cleanup(void)
{
	map_set_free(g_set);
}

/* A written form of n, JSON and XML; both must succeed for a tree the converter made. */
static void
fuzz_write(const fhir_node_t *n)
{
	buf_t out = BUF_INIT;
	char err[256];

	if (fhir_json_write(n, false, &out) != 0)
		abort();
	buf_reset(&out);
	if (fhir_xml_write(n, false, &out, err, sizeof(err)) != 0) {
		fprintf(stderr, "fuzz_convert: XML: %s\n", err);
		abort();
	}
	buf_free(&out);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const hl7_limits_t lim = {256 * 1024, 512, 8192};
	map_options_t opt = {0};
	hl7_msg_t *m = NULL;
	hl7_error_t err;
	map_result_t *r = NULL;
	arena_t *a;
	int rc;

	if (g_set == NULL) {
		if (map_set_load(MAPS_DIR, NULL, fuzz_diag, NULL, &g_set) != 0)
			abort();
		atexit(fuzz_cleanup);
	}
	if (size < 1)
		return 0;
	if (data[0] < 0x20) {
		opt.explain = (data[0] & 1) != 0;
		opt.tz_set = (data[0] & 2) != 0;
		opt.tz_minutes = (data[0] & 4) ? -300 : 60;
		opt.base_url = (data[0] & 8) ? "http://fhir.example.org/fhir" : NULL;
		data++;
		size--;
	}
	a = arena_new(0);
	if (hl7_parse(a, (const char *)data, size, &lim, &m, &err) != 0) {
		arena_free(a);
		return 0;
	}
	rc = map_convert(g_set, m, &opt, a, &r);
	if (rc != 0) {
		/* a refusal says why, in the terms of table 0357 */
		if (r == NULL || r->bundle != NULL || r->error.code == 0 ||
		    r->error.text[0] == '\0')
			abort();
		arena_free(a);
		return 0;
	}
	if (r == NULL || r->bundle == NULL)
		abort();
	for (size_t i = 0; i < r->nresources; i++) {
		char why[256];
		int st = rest_res_validate(r->resources[i].resource, why, sizeof(why));

		if (st != 0) {
			fprintf(stderr, "fuzz_convert: %.*s/%.*s: %s\n",
				(int)r->resources[i].type.len, r->resources[i].type.ptr,
				(int)r->resources[i].id.len, r->resources[i].id.ptr, why);
			abort();
		}
		fuzz_write(r->resources[i].resource);
		/* the writer indexes what it stores */
		{
			fhir_idx_entry_t *e;
			size_t ne;

			if (fhir_search_index(a, r->resources[i].resource, NULL, &e, &ne) != 0)
				abort();
		}
	}
	fuzz_write(r->bundle);
	arena_free(a);
	return 0;
}
