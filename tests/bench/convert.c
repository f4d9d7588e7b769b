/* Conversion benchmark: every message of the test corpus that converts, on one core, through
 * (a) parse, (b) + map_convert, (c) + compact JSON of each resource, (d) + its search index
 * entries. Usage: convert TOP_SRCDIR [ROUNDS]. Timings only; nothing here is a test. */
#include "config.h"

#include <sys/stat.h>

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
#include "mappings/hl7.h"
#include "mappings/map.h"
#include "tests/bench/dirlist.h"

typedef enum { STAGE_PARSE, STAGE_MAP, STAGE_JSON, STAGE_INDEX, STAGE_COUNT } stage_t;

static const char *const stage_names[STAGE_COUNT] = {
    "(a) parse",
    "(b) + map_convert",
    "(c) + compact JSON",
    "(d) + search index",
};

typedef struct {
	slice_t *msgs; /* caller owns each ptr */
	size_t n;
} corpus_t;

/* Runs one message through the stages up to last; returns 0 when every stage succeeded. */
static int
message_run(const map_set_t *set, slice_t msg, stage_t last, arena_t *a, buf_t *json)
{
	hl7_limits_t lim;
	hl7_msg_t *m = NULL;
	hl7_error_t err;
	map_result_t *r = NULL;

	hl7_limits_default(&lim);
	if (hl7_parse(a, msg.ptr, msg.len, &lim, &m, &err) != 0)
		return -1;
	if (last == STAGE_PARSE)
		return 0;
	if (map_convert(set, m, NULL, a, &r) != 0)
		return -1;
	for (size_t i = 0; last >= STAGE_JSON && i < r->nresources; i++) {
		buf_reset(json);
		if (fhir_json_write(r->resources[i].resource, false, json) != 0)
			return -1;
		if (last == STAGE_INDEX) {
			fhir_idx_entry_t *e;
			size_t ne;

			if (fhir_search_index(a, r->resources[i].resource, NULL, &e, &ne) != 0)
				return -1;
		}
	}
	return 0;
}

/* Keeps the messages of one file that go through every stage. */
static void
corpus_add_file(corpus_t *c, const map_set_t *set, const char *path)
{
	size_t len, n = 0;
	char *data;
	arena_t *a, *ma;
	slice_t *msgs;
	hl7_error_t err;
	buf_t json = BUF_INIT, file = BUF_INIT;

	if (buf_append_file(&file, path) < 0) {
		buf_free(&file);
		return;
	}
	if ((data = buf_steal(&file, &len)) == NULL)
		return;
	a = arena_new(0);
	ma = arena_new(0);
	if (hl7_batch_split(a, data, len, &msgs, &n, &err) != 0 || n == 0) {
		msgs = arena_alloc(a, sizeof(*msgs));
		msgs[0] = slice_make(data, len);
		n = 1;
	}
	for (size_t i = 0; i < n; i++) {
		arena_reset(ma);
		if (message_run(set, msgs[i], STAGE_INDEX, ma, &json) != 0)
			continue;
		c->msgs = xreallocarray(c->msgs, c->n + 1, sizeof(*c->msgs));
		c->msgs[c->n++] = slice_make(xmemdup0(msgs[i].ptr, msgs[i].len), msgs[i].len);
	}
	buf_free(&json);
	arena_free(ma);
	arena_free(a);
	free(data);
}

/* Every *.hl7 under dir and its subfolders, in name order. */
static void
corpus_add_dir(corpus_t *c, const map_set_t *set, const char *dir)
{
	size_t n;
	char **names = dirlist("convert", dir, &n);
	struct stat sb;

	for (size_t i = 0; i < n; i++) {
		size_t l = strlen(names[i]);

		if (stat(names[i], &sb) == 0 && S_ISDIR(sb.st_mode))
			corpus_add_dir(c, set, names[i]);
		else if (l > 4 && strcmp(names[i] + l - 4, ".hl7") == 0)
			corpus_add_file(c, set, names[i]);
		free(names[i]);
	}
	free(names);
}

static void
diag_print(const map_diag_t *d, void *arg)
{
	(void)arg;
	fprintf(stderr, "%s:%u:%u: %s\n", d->file, d->line, d->col, d->text);
}

int
main(int argc, char **argv)
{
	const char *top = argc > 1 ? argv[1] : ".";
	long rounds = argc > 2 ? strtol(argv[2], NULL, 10) : 200;
	map_set_t *set = NULL;
	corpus_t c = {NULL, 0};
	arena_t *a = arena_new(0);
	buf_t json = BUF_INIT;
	char *path;

	if (rounds < 1)
		rounds = 1;
	path = xasprintf("%s/mappings/hl7v2", top);
	if (map_set_load(path, NULL, diag_print, NULL, &set) != 0) {
		fprintf(stderr, "convert: cannot load the maps in %s\n", path);
		return 1;
	}
	free(path);
	path = xasprintf("%s/tests/data/hl7v2", top);
	corpus_add_dir(&c, set, path);
	free(path);
	path = xasprintf("%s/tests/data/synthetic", top);
	corpus_add_dir(&c, set, path);
	free(path);
	if (c.n == 0) {
		fprintf(stderr, "convert: no message converts\n");
		return 1;
	}
	printf("%zu messages, %ld rounds, one core (CPU time)\n", c.n, rounds);
	for (stage_t s = STAGE_PARSE; s < STAGE_COUNT; s++) {
		double t0 = (double)time_cpu_ns() / 1e9, dt;
		size_t total = 0;

		for (long r = 0; r < rounds; r++) {
			for (size_t i = 0; i < c.n; i++) {
				arena_reset(a);
				message_run(set, c.msgs[i], s, a, &json);
				total++;
			}
		}
		dt = (double)time_cpu_ns() / 1e9 - t0;
		printf("%-20s %9.2f us/message %10.0f messages/s\n", stage_names[s],
		       dt * 1e6 / (double)total, (double)total / dt);
	}
	for (size_t i = 0; i < c.n; i++)
		free((void *)c.msgs[i].ptr);
	free(c.msgs);
	buf_free(&json);
	arena_free(a);
	map_set_free(set);
	return 0;
}
