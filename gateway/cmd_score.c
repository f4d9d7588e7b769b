/* `fhirgate score`: scores one patient's resources (a Bundle, resource files, or folders of
 * them) offline with the models of scoring.models_dir and prints the RiskAssessments. */
#include "config.h"

#include <sys/stat.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fhir/json.h"
#include "gateway/cli.h"
#include "gateway/models.h"
#include "gateway/rest_int.h"
#include "gateway/score.h"
#include "lib/buf.h"
#include "lib/err.h"
#include "lib/log.h"
#include "lib/timeutil.h"
#include "lib/xalloc.h"

#define SCORE_FILE_MAX ((size_t)64 << 20)

typedef struct {
	arena_t *a;
	const fhir_node_t **res;
	size_t n, cap;
} nodes_t;

/* The kind of n; FHIR_NULL for an absent member. */
static fhir_kind_t
kind_of(const fhir_node_t *n)
{
	return n != NULL ? fhir_node_kind(n) : FHIR_NULL;
}

static void
usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: fhirgate score [-c FILE] [--set key=value]... [--model NAME] [--at DATE]\n"
	    "                      FILE|DIR...\n\n"
	    "Scores one patient offline with the models of scoring.models_dir and prints a\n"
	    "Bundle (type collection) of the RiskAssessments as JSON. FILE is a FHIR Bundle or a\n"
	    "resource (JSON); DIR is a folder of them (*.json). --model scores with that model\n"
	    "only; --at sets the reference time (a FHIR date or dateTime; default: now). Models\n"
	    "that cannot score say why on stderr. Exit status 1 when no model could score, 2 on\n"
	    "a usage or input error.\n");
}

static void
nodes_add(nodes_t *ns, const fhir_node_t *n)
{
	if (ns->n == ns->cap) {
		ns->cap = ns->cap ? ns->cap * 2 : 64;
		ns->res = xreallocarray(ns->res, ns->cap, sizeof(*ns->res));
	}
	ns->res[ns->n++] = n;
}

/* Adds the resources of one JSON file (a Bundle's entries, or the resource). */
static int
read_json(nodes_t *ns, const char *path)
{
	FILE *f = fopen(path, "rb");
	buf_t b = BUF_INIT;
	char chunk[65536], err[160];
	fhir_node_t *doc, *e;
	size_t got, i;
	int rc;

	if (f == NULL) {
		fprintf(stderr, "fhirgate score: cannot open %s\n", path);
		return -1;
	}
	while ((got = fread(chunk, 1, sizeof(chunk), f)) > 0 && b.len <= SCORE_FILE_MAX)
		buf_append(&b, chunk, got);
	fclose(f);
	if (b.len > SCORE_FILE_MAX) {
		fprintf(stderr, "fhirgate score: %s: larger than 64 MiB\n", path);
		buf_free(&b);
		return -1;
	}
	rc = fhir_json_parse(ns->a, b.data ? b.data : "", b.len, NULL, &doc, err, sizeof(err));
	buf_free(&b);
	if (rc < 0 || fhir_resource_type(doc).len == 0) {
		fprintf(stderr, "fhirgate score: %s: %s\n", path,
			rc < 0 ? err : "not a FHIR resource (no resourceType)");
		return -1;
	}
	if (!slice_eq_cstr(fhir_resource_type(doc), "Bundle")) {
		nodes_add(ns, doc);
		return 0;
	}
	FHIR_ARRAY_FOREACH(fhir_object_get_cstr(doc, "entry"), i, e)
		if (kind_of(fhir_object_get_cstr(e, "resource")) == FHIR_OBJECT)
			nodes_add(ns, fhir_object_get_cstr(e, "resource"));
	return 0;
}

static int
is_json(const struct dirent *d)
{
	size_t n = strlen(d->d_name);

	return d->d_name[0] != '.' && n > 5 && strcmp(d->d_name + n - 5, ".json") == 0;
}

static int
read_path(nodes_t *ns, const char *path)
{
	struct stat st;
	struct dirent **ents;
	int n, rc = 0;

	if (stat(path, &st) < 0 || !S_ISDIR(st.st_mode))
		return read_json(ns, path);
	n = scandir(path, &ents, is_json, alphasort);
	if (n < 0) {
		fprintf(stderr, "fhirgate score: cannot read the folder %s\n", path);
		return -1;
	}
	for (int i = 0; i < n; i++) {
		char *p = xasprintf("%s/%s", path, ents[i]->d_name);

		if (rc == 0)
			rc = read_json(ns, p);
		free(p);
		free(ents[i]);
	}
	free(ents);
	return rc;
}

/* Scores with every model (or the one named) and prints the Bundle; returns the exit status. */
static int
score_all(arena_t *a, const models_set_t *s, const char *only, const features_input_t *in,
	  slice_t pid)
{
	fhir_node_t *bundle = fhir_object_new(a), *entries = fhir_array_new(a);
	buf_t out = BUF_INIT;
	size_t scored = 0;

	for (size_t i = 0; i < models_set_count(s); i++) {
		const models_entry_t *m = models_set_at(s, i);
		score_result_t r;
		fhir_node_t *e;

		if (only != NULL && strcmp(only, m->name) != 0)
			continue;
		if (score_model(a, m, in, pid, &r) < 0 || !r.scored) {
			fprintf(stderr, "fhirgate score: %s: no score: %s\n", m->name,
				r.why ? r.why : "bad input");
			continue;
		}
		scored++;
		e = fhir_object_new(a);
		fhir_object_set_cstr(a, e, "resource", r.res.risk_assessment);
		fhir_array_append(a, entries, e);
	}
	fhir_object_set_cstr(a, bundle, "resourceType", fhir_string_new(a, SLICE_LIT("Bundle")));
	fhir_object_set_cstr(a, bundle, "type", fhir_string_new(a, SLICE_LIT("collection")));
	fhir_object_set_cstr(a, bundle, "total", fhir_int_new(a, (int64_t)scored));
	fhir_object_set_cstr(a, bundle, "entry", entries);
	fhir_json_write(bundle, true, &out);
	fwrite(out.data, 1, out.len, stdout);
	fputc('\n', stdout);
	buf_free(&out);
	return scored > 0 ? 0 : 1;
}

int
cmd_score(int argc, char **argv)
{
	config_t cfg;
	const char *only = NULL;
	uint64_t at_ns = time_now_ns();
	nodes_t ns = {0};
	features_input_t in;
	models_t *models = NULL;
	const models_set_t *s;
	slice_t pid;
	int rc = 0, nfiles = 0;

	if (cli_config_load(&argc, argv, &cfg) < 0)
		return 2;
	ns.a = arena_new(0);
	for (int i = 1; rc == 0 && i < argc; i++) {
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			usage(stdout);
			rc = -1;
		} else if (strcmp(argv[i], "--model") == 0 && i + 1 < argc) {
			only = argv[++i];
		} else if (strcmp(argv[i], "--at") == 0 && i + 1 < argc) {
			if (!rest_parse_instant(slice_cstr(argv[++i]), &at_ns)) {
				fprintf(stderr, "fhirgate score: --at wants a date or dateTime\n");
				rc = 2;
			}
		} else if (argv[i][0] == '-' && argv[i][1] != '\0') {
			fprintf(stderr, "fhirgate score: unknown option '%s'\n", argv[i]);
			usage(stderr);
			rc = 2;
		} else {
			nfiles++;
			if (read_path(&ns, argv[i]) < 0)
				rc = 2;
		}
	}
	if (rc == 0 && nfiles == 0) {
		usage(stderr);
		rc = 2;
	}
	if (rc == 0 && cfg.scoring_models_dir[0] == '\0') {
		fprintf(stderr, "fhirgate score: scoring.models_dir is empty: no models\n");
		rc = 2;
	}
	if (rc == 0) {
		models_open(cfg.scoring_models_dir, &models);
		s = models_acquire(models);
		if (only != NULL && models_set_find(s, slice_cstr(only)) == NULL) {
			fprintf(stderr, "fhirgate score: no model '%s' in %s\n", only,
				cfg.scoring_models_dir);
			rc = 2;
		} else if (models_set_count(s) == 0) {
			fprintf(stderr, "fhirgate score: no model loads from %s\n",
				cfg.scoring_models_dir);
			rc = 2;
		} else {
			score_input_from_nodes(ns.a, ns.res, ns.n, (int64_t)(at_ns / 1000000u), &in,
					       &pid);
			if (pid.len == 0) {
				fprintf(stderr, "fhirgate score: no Patient (nor a resource naming "
						"one) in the input\n");
				rc = 1;
			} else {
				rc = score_all(ns.a, s, only, &in, pid);
			}
		}
		models_release(s);
		models_free(models);
	}
	free(ns.res);
	arena_free(ns.a);
	config_free(&cfg);
	return rc < 0 ? 0 : rc;
}
