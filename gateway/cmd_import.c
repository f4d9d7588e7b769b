/* `fhirgate import`: legacy records (with a record map) or HL7 v2 batch files into the store, with
 * a progress bar on a terminal, a reject file per input, and a summary. */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fhir/json.h"
#include "gateway/cli.h"
#include "gateway/import.h"
#include "gateway/maps.h"
#include "gateway/models.h"
#include "lib/buf.h"
#include "lib/err.h"
#include "lib/timeutil.h"
#include "mappings/record.h"

typedef struct {
	bool tty, quiet, explain;
	const record_map_t *rm;
	uint64_t start_ns;
	uint64_t reported; /* rejects printed */
} import_ui_t;

/* Rejects printed in full; beyond that only counted (the reject file has them all). */
#define IMPORT_REJECTS_SHOWN 100

static void
usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: fhirgate import [--mapping FILE.map] [OPTIONS] FILE...\n\n"
	    "Imports legacy records into the store (store.data_dir of the config): with "
	    "--mapping,\n"
	    "CSV, fixed-width or XML files through a record map (docs/import.md); without it,\n"
	    "HL7 v2 files (FHS/BHS batches or plain files of messages) through the v2 mappings.\n"
	    "Records that cannot be used go to a reject file in the input's format\n"
	    "(NAME.rejected.EXT next to the input) with their reason on stderr; the exit\n"
	    "status is 1 when any record was rejected. An interrupted import resumes where\n"
	    "it stopped; the store may be in use by a running server.\n\n"
	    "  -m, --mapping FILE   the record map\n"
	    "      --bulk N         record maps: load N records per transaction, sorted\n"
	    "                       (default 1000000; the default mode for record maps)\n"
	    "      --bulk-memory MIB  memory for sorting before run files (default 256)\n"
	    "  -b, --batch N        instead: N records per transaction, in arrival order\n"
	    "                       (for a store a busy server writes; HL7 v2 files always\n"
	    "                       go in batches, of 1000 by default)\n"
	    "      --restart        ignore a checkpoint from an interrupted import\n"
	    "  -r, --rejects FILE   the reject file (one input only)\n"
	    "  -n, --dry-run        convert and print Bundles, write nothing\n"
	    "      --records N      with --dry-run: the first N records (default 1, 0: all)\n"
	    "      --explain        with --dry-run: which line made each element\n"
	    "  -q, --quiet          no progress\n"
	    "  -c FILE, --set key=value   configuration\n");
}

static void
fmt_count(char *out, size_t cap, uint64_t v)
{
	char tmp[32];
	size_t n = (size_t)snprintf(tmp, sizeof(tmp), "%llu", (unsigned long long)v), k = 0;

	for (size_t i = 0; i < n && k + 2 < cap; i++) {
		if (i > 0 && (n - i) % 3 == 0)
			out[k++] = ',';
		out[k++] = tmp[i];
	}
	out[k] = '\0';
}

static void
on_progress(void *arg, const char *path, const import_stats_t *st, bool final)
{
	import_ui_t *ui = arg;
	double secs = (double)(time_mono_ns() - ui->start_ns) / 1e9;
	double rate = secs > 0 ? (double)st->records / secs : 0;
	double frac = st->size > 0 ? (double)st->offset / (double)st->size : 1;
	double eta = frac > 0 && frac < 1 ? secs * (1 - frac) / frac : 0;
	char recs[32];

	if (ui->quiet)
		return;
	if (st->loading > 0) {
		/* a bulk load: one transaction, no progress inside it */
		fmt_count(recs, sizeof(recs), st->loading);
		fprintf(stderr, "%s%s: loading %s records into the store (one transaction)%s\n",
			ui->tty ? "\r\x1b[K" : "", path, recs, ui->tty ? "..." : "");
		return;
	}
	fmt_count(recs, sizeof(recs), st->records + st->skipped);
	if (ui->tty) {
		char bar[31];
		int fill = (int)(frac * 30);

		for (int i = 0; i < 30; i++)
			bar[i] = i < fill ? '#' : '.';
		bar[30] = '\0';
		fprintf(stderr,
			"\r%s [%s] %3d%% %s records  %.0f/s  ETA %d:%02d  rejected %llu\x1b[K",
			path, bar, (int)(frac * 100), recs, rate, (int)eta / 60, (int)eta % 60,
			(unsigned long long)st->rejected);
		if (final)
			fputc('\n', stderr);
	} else if (!final) {
		fprintf(stderr, "%s: %d%% %s records %.0f/s ETA %ds rejected %llu\n", path,
			(int)(frac * 100), recs, rate, (int)eta, (unsigned long long)st->rejected);
	}
}

static void
on_reject(void *arg, const char *where, const char *reason)
{
	import_ui_t *ui = arg;

	if (++ui->reported > IMPORT_REJECTS_SHOWN)
		return;
	if (ui->tty && !ui->quiet)
		fputs("\r\x1b[K", stderr);
	fprintf(stderr, "%s: rejected: %s\n", where, reason);
	if (ui->reported == IMPORT_REJECTS_SHOWN)
		fprintf(stderr, "(further rejects are only counted: see the reject file)\n");
}

static void
on_note(void *arg, const char *path, const char *note)
{
	(void)arg;
	fprintf(stderr, "%s: %s\n", path, note);
}

static void
on_result(void *arg, const char *where, const map_result_t *r)
{
	import_ui_t *ui = arg;
	buf_t b = BUF_INIT;

	printf("# %s\n", where);
	if (fhir_json_write(r->bundle, true, &b) == 0)
		printf("%.*s\n", (int)b.len, b.data);
	buf_free(&b);
	for (size_t i = 0; ui->rm != NULL && i < r->nresources; i++)
		if (!record_map_stores(ui->rm, r->resources[i].type))
			printf("# reference only, not stored: %.*s/%.*s\n",
			       (int)r->resources[i].type.len, r->resources[i].type.ptr,
			       (int)r->resources[i].id.len, r->resources[i].id.ptr);
	if (ui->explain) {
		size_t nunused = 0;

		for (size_t i = 0; i < r->nunused; i++)
			nunused += ui->rm == NULL || strcmp(r->unused[i].segment, "MSH") != 0;
		printf("# explain: %s\n", ui->rm ? record_map_name(ui->rm) : r->map_name);
		for (size_t i = 0; i < r->nexplain; i++) {
			const map_explain_t *e = &r->explain[i];
			const map_resource_t *res = &r->resources[e->resource];
			const char *src = ui->rm ? record_map_source_name(ui->rm, e->source) : NULL;

			printf("%.*s/%.*s %s <- %s  (%s:%u)\n", (int)res->type.len, res->type.ptr,
			       (int)res->id.len, res->id.ptr, e->path,
			       src         ? src
			       : e->source ? e->source
					   : "constant",
			       e->file, e->line);
		}
		printf("# source values that no mapping line used: %zu\n", nunused);
		for (size_t i = 0; i < r->nunused; i++) {
			const map_unused_t *u = &r->unused[i];
			char ref[32];
			const char *src;

			/* a record's MSH is made up here: nothing in it is the input's */
			if (ui->rm != NULL && strcmp(u->segment, "MSH") == 0)
				continue;

			snprintf(ref, sizeof(ref), "%s-%u", u->segment, u->field);
			src = ui->rm ? record_map_source_name(ui->rm, ref) : NULL;
			if (src != NULL)
				printf("unused %s\n", src);
			else
				printf("unused %s[%u]-%u[%u]\n", u->segment, u->seg_seq, u->field,
				       u->rep);
		}
	}
	for (size_t i = 0; i < r->nwarnings; i++) {
		const map_warning_t *w = &r->warnings[i];

		fprintf(stderr, "%s: warning: %s", where, w->text);
		if (w->file != NULL)
			fprintf(stderr, " [%s:%u]", w->file, w->line);
		fputc('\n', stderr);
	}
}

int
cmd_import(int argc, char **argv)
{
	static const struct option longopts[] = {{"mapping", required_argument, NULL, 'm'},
						 {"batch", required_argument, NULL, 'b'},
						 {"restart", no_argument, NULL, 'R'},
						 {"rejects", required_argument, NULL, 'r'},
						 {"dry-run", no_argument, NULL, 'n'},
						 {"records", required_argument, NULL, 'N'},
						 {"explain", no_argument, NULL, 'E'},
						 {"quiet", no_argument, NULL, 'q'},
						 {"bulk", required_argument, NULL, 'B'},
						 {"bulk-memory", required_argument, NULL, 'M'},
						 {"help", no_argument, NULL, 'h'},
						 {NULL, 0, NULL, 0}};
	config_t cfg;
	import_opts_t o;
	import_ui_t ui;
	const char *mapping = NULL;
	record_map_t *rm = NULL;
	models_t *models = NULL;
	map_set_t *set = NULL;
	store_t *s = NULL;
	uint64_t records = 0, rejected = 0, resources = 0, unchanged = 0, skipped = 0, stored = 0;
	int status = 0, c;

	if (cli_config_load(&argc, argv, &cfg) < 0)
		return 2;
	memset(&o, 0, sizeof(o));
	memset(&ui, 0, sizeof(ui));
	o.dry_run_max = 1;
	optind = 1;
	while ((c = getopt_long(argc, argv, "m:b:r:nqh", longopts, NULL)) != -1) {
		switch (c) {
		case 'm':
			mapping = optarg;
			break;
		case 'b':
			o.batch = strtoull(optarg, NULL, 10);
			if (o.batch == 0 || o.batch > 1000000) {
				fprintf(stderr, "fhirgate import: --batch takes 1 to 1000000\n");
				config_free(&cfg);
				return 2;
			}
			break;
		case 'B':
			o.bulk_records = strtoull(optarg, NULL, 10);
			if (o.bulk_records == 0) {
				fprintf(stderr,
					"fhirgate import: --bulk takes a number of records\n");
				config_free(&cfg);
				return 2;
			}
			break;
		case 'M': {
			unsigned long long mib = strtoull(optarg, NULL, 10);

			if (mib < 1 || mib > 65536) {
				fprintf(stderr,
					"fhirgate import: --bulk-memory takes 1 to 65536 (MiB)\n");
				config_free(&cfg);
				return 2;
			}
			o.bulk_memory = (size_t)mib << 20;
			break;
		}
		case 'R':
			o.restart = true;
			break;
		case 'r':
			o.rejects = optarg;
			break;
		case 'n':
			o.dry_run = true;
			break;
		case 'N':
			o.dry_run_max = strtoull(optarg, NULL, 10);
			break;
		case 'E':
			ui.explain = true;
			break;
		case 'q':
			ui.quiet = true;
			break;
		case 'h':
			usage(stdout);
			config_free(&cfg);
			return 0;
		default:
			usage(stderr);
			config_free(&cfg);
			return 2;
		}
	}
	if (optind >= argc || (o.rejects != NULL && argc - optind > 1)) {
		usage(stderr);
		config_free(&cfg);
		return 2;
	}
	if (o.batch != 0 && (o.bulk_records != 0 || o.bulk_memory != 0)) {
		fprintf(stderr, "fhirgate import: --batch and --bulk exclude each other\n");
		config_free(&cfg);
		return 2;
	}
	o.bulk = o.batch == 0;
	maps_options(&cfg, &o.map_opt);
	o.map_opt.explain = ui.explain;
	if (mapping != NULL) {
		int rc =
		    record_map_load_file(mapping, cfg.mappings_dir,
					 cfg.mappings_site_dir[0] ? cfg.mappings_site_dir : NULL,
					 maps_diag_print, stderr, &rm);

		if (rc < 0) {
			fprintf(stderr, "fhirgate import: the record map %s has errors\n", mapping);
			config_free(&cfg);
			return 2;
		}
		o.rm = rm;
	} else if (map_set_load(cfg.mappings_dir,
				cfg.mappings_site_dir[0] ? cfg.mappings_site_dir : NULL,
				maps_diag_print, stderr, &set) < 0) {
		fprintf(stderr, "fhirgate import: the mappings in %s have errors\n",
			cfg.mappings_dir);
		config_free(&cfg);
		return 2;
	}
	o.maps = set;
	if (!o.dry_run) {
		store_opts_t so = {.map_size = cfg.map_size,
				   .no_writemap = cfg.store_writemap == CONF_OFF};
		int rc = store_open(cfg.data_dir, &so, &s);

		if (rc < 0) {
			fprintf(stderr, "fhirgate import: cannot open the store in %s: %s: %s\n",
				cfg.data_dir, fg_strerror(rc), store_last_error());
			record_map_free(rm);
			map_set_free(set);
			config_free(&cfg);
			return 2;
		}
	}
	/* Resources that are inputs of a risk model leave scoring work items, which a server on
	 * this store scores (it looks for them every mappings.watch_interval). */
	if (!o.dry_run) {
		models_open(cfg.scoring_models_dir, &models);
		models_set_global(models);
	}
	ui.tty = isatty(STDERR_FILENO) == 1;
	ui.quiet |= o.dry_run;
	ui.rm = rm;
	o.on_progress = on_progress;
	o.on_reject = on_reject;
	o.on_note = on_note;
	o.on_result = on_result;
	o.arg = &ui;
	o.progress_interval_ns = ui.tty ? 200000000ull : 5000000000ull;
	ui.start_ns = time_mono_ns();
	for (int i = optind; i < argc; i++) {
		import_stats_t st;
		char err[600];
		int rc = import_file(s, argv[i], &o, &st, err, sizeof(err));

		if (rc < 0) {
			fprintf(stderr, "%s: import stopped: %s\n", argv[i], err);
			status = 1;
		}
		if (st.resumed && !o.dry_run)
			fprintf(stderr, "%s: resumed after record %llu\n", argv[i],
				(unsigned long long)st.skipped);
		records += st.records;
		stored += st.stored;
		rejected += st.rejected;
		resources += st.stored_resources;
		unchanged += st.unchanged;
		skipped += st.skipped;
		if (!o.dry_run && st.rejected > 0) {
			char *rp = o.rejects ? NULL : import_reject_path(argv[i]);

			fprintf(stderr, "%s: %llu rejected records in %s\n", argv[i],
				(unsigned long long)st.rejected, o.rejects ? o.rejects : rp);
			free(rp);
		}
		if (!ui.quiet && getenv("FHIRGATE_IMPORT_TIMINGS") != NULL)
			fprintf(
			    stderr,
			    "%s: read %.2fs map %.2fs store %.2fs (%llu transactions; bulk loads "
			    "%.2fs: waiting for the last run %.2fs, resources %.2fs, index %.2fs, "
			    "commit %.2fs)\n",
			    argv[i], (double)st.read_ns / 1e9, (double)st.map_ns / 1e9,
			    (double)st.store_ns / 1e9, (unsigned long long)st.batches,
			    (double)st.load_ns / 1e9, (double)st.load_wait_ns / 1e9,
			    (double)st.load_res_ns / 1e9, (double)st.load_idx_ns / 1e9,
			    (double)st.load_commit_ns / 1e9);
		ui.start_ns = time_mono_ns();
	}
	if (!o.dry_run) {
		fprintf(
		    stderr,
		    "import: %llu records read, %llu stored, %llu rejected; %llu resource writes, "
		    "%llu unchanged%s\n",
		    (unsigned long long)records, (unsigned long long)stored,
		    (unsigned long long)rejected, (unsigned long long)resources,
		    (unsigned long long)unchanged, skipped ? " (after resuming)" : "");
	}
	if (rejected > 0)
		status = 1;
	store_close(s);
	models_set_global(NULL);
	models_free(models);
	record_map_free(rm);
	map_set_free(set);
	config_free(&cfg);
	return status;
}
