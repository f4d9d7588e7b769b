/* Search-index benchmark and checker: fhir_search_index over a legacy-import Patient and over
 * every resource of the golden expected Bundles. Usage: index TOP_SRCDIR [ROUNDS [patient|corpus]]
 * times both sets (or one of them, for counting instructions under valgrind --tool=callgrind
 * --toggle-collect=fhir_search_index: this VM has no hardware counters); index TOP_SRCDIR --dump
 * prints every entry of every resource of the golden Bundles and of tests/data/fhir (plain, with
 * a value cap, full with a base, a few parameters) so that two builds can be compared byte for
 * byte. Timings only; nothing here is a test. */
#include "config.h"

#include <sys/stat.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fhir/json.h"
#include "fhir/search.h"
#include "fhir/tree.h"
#include "lib/arena.h"
#include "lib/buf.h"
#include "lib/timeutil.h"
#include "lib/xalloc.h"
#include "tests/bench/dirlist.h"

typedef struct {
	const fhir_node_t **v; /* borrowed from the set's arena */
	size_t n;
	arena_t *a;
} resources_t;

static void
resources_push(resources_t *r, const fhir_node_t *res)
{
	r->v = xreallocarray(r->v, r->n + 1, sizeof(*r->v));
	r->v[r->n++] = res;
}

/* A parsed document: a Bundle gives its entries' resources (and itself when with_bundle). */
static void
resources_add_doc(resources_t *r, const fhir_node_t *doc, bool with_bundle)
{
	const fhir_node_t *entries, *e;
	size_t i;

	if (!slice_eq_cstr(fhir_resource_type(doc), "Bundle")) {
		resources_push(r, doc);
		return;
	}
	if (with_bundle)
		resources_push(r, doc);
	entries = fhir_object_get_cstr(doc, "entry");
	if (entries != NULL)
		FHIR_ARRAY_FOREACH(entries, i, e) {
			const fhir_node_t *res = fhir_object_get_cstr(e, "resource");

			if (res != NULL && fhir_node_kind(res) == FHIR_OBJECT)
				resources_push(r, res);
		}
}

/* Every JSON document of a file: the whole file, or (the legacy .out files) each block from a
 * line "{" to a line "}". */
static void
resources_add_file(resources_t *r, const char *path, bool with_bundle)
{
	buf_t file = BUF_INIT;
	size_t len;
	char *data, err[256];
	fhir_node_t *doc;
	const char *p, *end;

	if (buf_append_file(&file, path) < 0) {
		buf_free(&file);
		return;
	}
	if ((data = buf_steal(&file, &len)) == NULL)
		return;
	if (fhir_json_parse(r->a, data, len, NULL, &doc, err, sizeof(err)) == 0) {
		resources_add_doc(r, doc, with_bundle);
		free(data);
		return;
	}
	for (p = data, end = data + len; p < end;) {
		const char *close = strstr(p, "\n}");

		if (strncmp(p, "{", 1) != 0 || close == NULL) {
			const char *nl = memchr(p, '\n', (size_t)(end - p));

			p = nl != NULL ? nl + 1 : end;
			continue;
		}
		if (fhir_json_parse(r->a, p, (size_t)(close + 2 - p), NULL, &doc, err,
				    sizeof(err)) == 0)
			resources_add_doc(r, doc, with_bundle);
		p = close + 2;
	}
	free(data);
}

/* Every *.json and *.out under dir and its subfolders, in name order. */
static void
resources_add_dir(resources_t *r, const char *dir, bool with_bundle)
{
	size_t n;
	char **names = dirlist("index", dir, &n);
	struct stat sb;

	for (size_t i = 0; i < n; i++) {
		size_t l = strlen(names[i]);
		/* the R4 schemas beside the test data are no resources */
		bool schema = strstr(names[i] + strlen(dir), "schema") != NULL;

		if (!schema && stat(names[i], &sb) == 0 && S_ISDIR(sb.st_mode))
			resources_add_dir(r, names[i], with_bundle);
		else if (!schema && ((l > 5 && strcmp(names[i] + l - 5, ".json") == 0) ||
				     (l > 4 && strcmp(names[i] + l - 4, ".out") == 0)))
			resources_add_file(r, names[i], with_bundle);
		free(names[i]);
	}
	free(names);
}

static void
bytes_print(slice_t s)
{
	for (size_t i = 0; i < s.len; i++) {
		unsigned char c = (unsigned char)s.ptr[i];

		if (c >= 0x20 && c < 0x7f && c != '\\')
			putchar(c);
		else
			printf("\\x%02x", c);
	}
}

static size_t
value_max_small(slice_t type, slice_t code)
{
	(void)type;
	return code.len + 6;
}

static void
entries_print(const char *what, int rc, const fhir_idx_entry_t *e, size_t n)
{
	printf(" %s rc=%d n=%zu\n", what, rc, n);
	for (size_t i = 0; i < n; i++) {
		printf("  ");
		bytes_print(e[i].code);
		printf(" = ");
		bytes_print(e[i].value);
		printf("\n");
	}
}

static void
dump(const resources_t *r)
{
	static const slice_t codes[] = {SLICE_LIT("name"), SLICE_LIT("subject"), SLICE_LIT("_id")};
	arena_t *a = arena_new(0);

	for (size_t k = 0; k < r->n; k++) {
		fhir_idx_entry_t *e;
		size_t n;
		int rc;

		arena_reset(a);
		printf("resource %zu ", k);
		bytes_print(fhir_resource_type(r->v[k]));
		printf("\n");
		rc = fhir_search_index(a, r->v[k], NULL, &e, &n);
		entries_print("index", rc, e, n);
		rc = fhir_search_index(a, r->v[k], value_max_small, &e, &n);
		entries_print("capped", rc, e, n);
		rc = fhir_search_index_full(a, r->v[k], SLICE_LIT("http://example.org/fhir/"), &e,
					    &n);
		entries_print("full", rc, e, n);
		rc = fhir_search_index_params(a, r->v[k], SLICE_NULL, codes, 3, &e, &n);
		entries_print("params", rc, e, n);
	}
	arena_free(a);
}

static void
bench(const char *name, const resources_t *r, long rounds)
{
	arena_t *a = arena_new(0);
	size_t calls = 0, entries = 0;
	double t0, dt;

	/* Warm up (the compiled expressions are built on first use) through another entry point,
	 * so that a callgrind run collecting fhir_search_index only counts steady-state calls. */
	for (size_t k = 0; k < r->n; k++) {
		fhir_idx_entry_t *e;
		size_t n = 0;

		arena_reset(a);
		fhir_search_index_full(a, r->v[k], SLICE_NULL, &e, &n);
	}
	t0 = (double)time_cpu_ns() / 1e9;
	for (long round = 0; round < rounds; round++)
		for (size_t k = 0; k < r->n; k++) {
			fhir_idx_entry_t *e;
			size_t n = 0;

			arena_reset(a);
			fhir_search_index(a, r->v[k], NULL, &e, &n);
			entries += n;
			calls++;
		}
	dt = (double)time_cpu_ns() / 1e9 - t0;
	printf("%-8s %4zu resources %8.2f us/call %10.0f resources/s %6.1f entries/call\n", name,
	       r->n, dt * 1e6 / (double)calls, (double)calls / dt, (double)entries / (double)calls);
	arena_free(a);
}

int
main(int argc, char **argv)
{
	const char *top = argc > 1 ? argv[1] : ".";
	bool dump_mode = argc > 2 && strcmp(argv[2], "--dump") == 0;
	long rounds = argc > 2 && !dump_mode ? strtol(argv[2], NULL, 10) : 200;
	const char *only = argc > 3 ? argv[3] : "";
	resources_t patient = {NULL, 0, arena_new(0)}, corpus = {NULL, 0, arena_new(0)};
	char *path;

	if (rounds < 1)
		rounds = 1;
	/* The Patient of the first row of mappings/legacy/patients.csv (patients.map), as the
	 * golden test expects the legacy import to write it. */
	path = xasprintf("%s/tests/golden/expected/legacy/patients.csv.out", top);
	resources_add_file(&patient, path, false);
	free(path);
	if (patient.n == 0 || !slice_eq_cstr(fhir_resource_type(patient.v[0]), "Patient")) {
		fprintf(stderr, "index: no Patient in the legacy golden output\n");
		return 1;
	}
	patient.n = 1;
	path = xasprintf("%s/tests/golden/expected", top);
	resources_add_dir(&corpus, path, dump_mode);
	free(path);
	if (dump_mode) {
		path = xasprintf("%s/tests/data/fhir", top);
		resources_add_dir(&corpus, path, true);
		free(path);
		dump(&corpus);
	} else {
		printf("%ld rounds, one core (CPU time)\n", rounds);
		if (strcmp(only, "corpus") != 0)
			bench("patient", &patient, rounds * 100);
		if (strcmp(only, "patient") != 0)
			bench("corpus", &corpus, rounds);
	}
	free(patient.v);
	free(corpus.v);
	arena_free(patient.a);
	arena_free(corpus.a);
	return 0;
}
