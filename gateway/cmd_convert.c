/* `fhirgate convert` (HL7 v2 -> FHIR Bundle, with --explain) and `fhirgate mappings check`. */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fhir/json.h"
#include "fhir/xml.h"
#include "gateway/cli.h"
#include "gateway/maps.h"
#include "lib/arena.h"
#include "lib/buf.h"
#include "lib/err.h"
#include "lib/xalloc.h"
#include "mappings/hl7.h"
#include "mappings/map.h"

static int
read_input(const char *path, buf_t *b)
{
	FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
	char chunk[65536];
	size_t n;

	if (f == NULL) {
		perror(path);
		return -1;
	}
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		buf_append(b, chunk, n);
	if (f != stdin)
		fclose(f);
	return 0;
}

static void
print_explain(const map_result_t *r, const hl7_msg_t *m)
{
	printf("# explain: %s\n", r->map_name);
	for (size_t i = 0; i < r->nexplain; i++) {
		const map_explain_t *e = &r->explain[i];
		const map_resource_t *res = &r->resources[e->resource];

		printf("%.*s/%.*s %s <- %s  (%s:%u)\n", (int)res->type.len, res->type.ptr,
		       (int)res->id.len, res->id.ptr, e->path, e->source ? e->source : "constant",
		       e->file, e->line);
	}
	printf("# source fields with a value that no mapping line used: %zu\n", r->nunused);
	for (size_t i = 0; i < r->nunused; i++) {
		const map_unused_t *u = &r->unused[i];

		printf("unused %s[%u]-%u[%u]\n", u->segment, u->seg_seq, u->field, u->rep);
	}
	(void)m;
}

static void
print_warnings(const map_result_t *r)
{
	for (size_t i = 0; i < r->nwarnings; i++) {
		const map_warning_t *w = &r->warnings[i];

		fprintf(stderr, "warning: %s", w->text);
		if (w->segment[0] != '\0')
			fprintf(stderr, " at %s[%u]-%u", w->segment, w->seg_seq, w->field);
		if (w->value.len > 0)
			fprintf(stderr, " (value '%.*s')", (int)w->value.len, w->value.ptr);
		if (w->file != NULL)
			fprintf(stderr, " [%s:%u]", w->file, w->line);
		fputc('\n', stderr);
	}
}

/* Converts one message and prints its Bundle; returns 0 or 1 (failed). */
static int
convert_one(const map_set_t *set, const map_options_t *opt, const char *name, slice_t msg, bool xml,
	    bool explain)
{
	arena_t *a = arena_new(0);
	hl7_limits_t lim;
	hl7_msg_t *m = NULL;
	hl7_error_t err;
	map_result_t *r = NULL;
	map_options_t o = *opt;
	buf_t out = BUF_INIT;
	char xerr[256] = "";
	int rc;

	hl7_limits_default(&lim);
	o.explain = explain;
	rc = hl7_parse(a, msg.ptr, msg.len, &lim, &m, &err);
	if (rc == 0)
		rc = hl7_msg_validate(m, &err);
	if (rc < 0) {
		fprintf(stderr, "%s: not a valid HL7 v2 message: %s (code %d)\n", name, err.text,
			err.code);
		arena_free(a);
		return 1;
	}
	rc = map_convert(set, m, &o, a, &r);
	if (r != NULL)
		print_warnings(r);
	if (rc < 0 || r == NULL || r->bundle == NULL) {
		fprintf(stderr, "%s: conversion failed: %s (code %d)\n", name,
			r ? r->error.text : fg_strerror(rc), r ? r->error.code : 0);
		arena_free(a);
		return 1;
	}
	if (xml)
		rc = fhir_xml_write(r->bundle, true, &out, xerr, sizeof(xerr));
	else
		rc = fhir_json_write(r->bundle, true, &out);
	if (rc < 0) {
		fprintf(stderr, "%s: cannot serialize the Bundle: %s\n", name,
			xerr[0] ? xerr : fg_strerror(rc));
		buf_free(&out);
		arena_free(a);
		return 1;
	}
	fwrite(out.data, 1, out.len, stdout);
	if (out.len == 0 || out.data[out.len - 1] != '\n')
		putchar('\n');
	if (explain)
		print_explain(r, m);
	buf_free(&out);
	arena_free(a);
	return 0;
}

static void
convert_usage(FILE *f)
{
	fprintf(
	    f, "usage: fhirgate convert [--format json|xml] [--explain] FILE|-...\n\n"
	       "Converts HL7 v2 messages (a file may hold several, or FHS/BHS batches) with the\n"
	       "mappings of the config (mappings.dir, mappings.site_dir) and prints one FHIR\n"
	       "transaction Bundle per message. --explain then lists which mapping line made each\n"
	       "element and every source field with a value that no line used. Warnings (values a\n"
	       "mapping could not use) go to stderr. Exit status 1 when a message fails.\n");
}

int
cmd_convert(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"format", required_argument, NULL, 'f'},
	    {"explain", no_argument, NULL, 'e'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	bool xml = false, explain = false;
	config_t cfg;
	maps_t *maps = NULL;
	maps_ref_t *ref = NULL;
	const map_set_t *set;
	map_options_t opt;
	int c, failed = 0;

	if (cli_config_load(&argc, argv, &cfg) < 0)
		return 2;
	optind = 1;
	while ((c = getopt_long(argc, argv, "f:eh", longopts, NULL)) != -1) {
		switch (c) {
		case 'f':
			if (strcmp(optarg, "xml") != 0 && strcmp(optarg, "json") != 0) {
				fprintf(stderr, "fhirgate convert: --format is json or xml\n");
				config_free(&cfg);
				return 2;
			}
			xml = strcmp(optarg, "xml") == 0;
			break;
		case 'e':
			explain = true;
			break;
		case 'h':
			convert_usage(stdout);
			config_free(&cfg);
			return 0;
		default:
			convert_usage(stderr);
			config_free(&cfg);
			return 2;
		}
	}
	if (maps_open(&cfg, &maps) < 0) {
		fprintf(stderr,
			"fhirgate convert: the mappings in %s do not load "
			"(`fhirgate mappings check` lists every problem)\n",
			cfg.mappings_dir);
		config_free(&cfg);
		return 2;
	}
	set = maps_acquire(maps, &ref);
	maps_options(&cfg, &opt);
	for (int i = optind; i < argc || i == optind; i++) {
		const char *path = i < argc ? argv[i] : "-";
		arena_t *a = arena_new(0);
		buf_t in = BUF_INIT;
		slice_t *msgs = NULL;
		size_t n = 0;
		hl7_error_t err;

		if (read_input(path, &in) < 0) {
			failed = 1;
		} else if (hl7_batch_split(a, in.data ? in.data : "", in.len, &msgs, &n, &err) <
			   0) {
			fprintf(stderr, "%s: %s\n", path, err.text);
			failed = 1;
		} else {
			for (size_t k = 0; k < n; k++) {
				char *name =
				    n > 1 ? xasprintf("%s#%zu", path, k + 1) : xstrdup(path);

				failed |= convert_one(set, &opt, name, msgs[k], xml, explain);
				free(name);
			}
		}
		buf_free(&in);
		arena_free(a);
		if (i >= argc)
			break;
	}
	maps_release(ref);
	maps_free(maps);
	config_free(&cfg);
	return failed;
}

static void
mappings_usage(FILE *f)
{
	fprintf(f,
		"usage: fhirgate mappings check [DIR [SITE_DIR]]\n\n"
		"Loads every mapping file (default: mappings.dir and mappings.site_dir of the\n"
		"config) and reports `file:line:col: problem` for syntax errors, unknown fields,\n"
		"unknown target paths, unknown datatype and vocabulary maps and unreachable\n"
		"lines. Exit status 1 when there is any error (warnings alone: 0).\n");
}

int
cmd_mappings(int argc, char **argv)
{
	config_t cfg;
	const char *dir, *site;
	map_set_t *set = NULL;
	int rc;

	if (cli_config_load(&argc, argv, &cfg) < 0)
		return 2;
	if (argc < 2 || strcmp(argv[1], "check") != 0 || argc > 4) {
		bool help =
		    argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0);

		mappings_usage(help ? stdout : stderr);
		config_free(&cfg);
		return help ? 0 : 2;
	}
	dir = argc >= 3 ? argv[2] : cfg.mappings_dir;
	site = argc >= 4 ? argv[3] : argc >= 3 ? NULL : cfg.mappings_site_dir;
	if (site != NULL && site[0] == '\0')
		site = NULL;
	rc = map_set_load(dir, site, maps_diag_print, stdout, &set);
	if (rc == 0)
		printf("%s%s%s: %zu mapping files, no errors\n", dir, site ? " + " : "",
		       site ? site : "", map_set_file_count(set));
	else if (rc == -FG_EIO)
		fprintf(stderr, "fhirgate mappings check: cannot read %s\n", dir);
	map_set_free(set);
	config_free(&cfg);
	return rc < 0 ? 1 : 0;
}
