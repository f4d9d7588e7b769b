/* `fhirgate store`: inspect the store (stats, list, show, dead letters, verify, dump) and replay
 * dead letters through the shared ingest rules. */
#include "config.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fhir/json.h"
#include "fhir/meta.h"
#include "gateway/cli.h"
#include "gateway/ingest.h"
#include "gateway/maps.h"
#include "lib/arena.h"
#include "lib/buf.h"
#include "lib/err.h"
#include "lib/slice.h"
#include "lib/timeutil.h"
#include "lib/xalloc.h"
#include "mappings/hl7.h"
#include "store/store.h"

/* Options a subcommand accepts. */
enum {
	OPT_FROM = 1 << 0,
	OPT_LIMIT = 1 << 1,
	OPT_STATUS = 1 << 2,
	OPT_RAW = 1 << 3,
	OPT_ALL = 1 << 4,
	ARG_ONE_SEQ = 1 << 5, /* exactly one SEQ */
	ARG_REF = 1 << 7,     /* exactly one TYPE/ID */
	OPT_HISTORY = 1 << 8,
	ARG_SEQS = 1 << 6, /* SEQ... (or --all) */
};

typedef struct {
	uint64_t from;
	uint64_t limit; /* UINT64_MAX: no limit */
	uint8_t status; /* 0: any */
	bool raw;
	bool all;
	uint64_t *seqs; /* caller owns */
	size_t nseqs;
	bool history;
	const char *ref; /* TYPE/ID (borrowed from argv) */
	store_t *store;  /* for commands that commit in several transactions (reindex) */
} store_args_t;

typedef struct {
	const char *name;
	int (*run)(store_txn_t *t, const config_t *cfg, const store_args_t *a);
	unsigned opts;
	bool write;
	const char *usage;
	const char *help;
} store_cmd_t;

/* Exit statuses. */
enum { EXIT_OK = 0, EXIT_PROBLEM = 1, EXIT_USAGE = 2 };

/* Writes s with control and non-ASCII bytes as \xNN (senders choose these bytes); "-" if empty. */
static void
print_escaped(FILE *f, slice_t s)
{
	if (s.len == 0) {
		fputc('-', f);
		return;
	}
	for (size_t i = 0; i < s.len; i++) {
		unsigned char c = (unsigned char)s.ptr[i];

		if (c < 0x20 || c >= 0x7f)
			fprintf(f, "\\x%02x", c);
		else
			fputc(c, f);
	}
}

static char
status_letter(uint8_t status)
{
	return status >= 0x21 && status < 0x7f ? (char)status : '?';
}

static void
print_store_error(const char *what, int rc)
{
	const char *detail = store_last_error();

	fprintf(stderr, "fhirgate store: %s: %s%s%s\n", what, fg_strerror(rc),
		detail[0] != '\0' ? ": " : "", detail);
}

/* MSH-9 and MSH-10 from the first segment, without a full parse; empty when absent. */
static void
msg_header_peek(slice_t raw, slice_t *msh9, slice_t *msh10)
{
	const char *eol;
	slice_t seg;

	*msh9 = *msh10 = SLICE_NULL;
	if (raw.len >= 3 && memcmp(raw.ptr, "\xef\xbb\xbf", 3) == 0)
		raw = slice_make(raw.ptr + 3, raw.len - 3);
	if (raw.len < 4 || memcmp(raw.ptr, "MSH", 3) != 0)
		return;
	seg = raw;
	if ((eol = memchr(seg.ptr, '\r', seg.len)) != NULL)
		seg.len = (size_t)(eol - seg.ptr);
	if ((eol = memchr(seg.ptr, '\n', seg.len)) != NULL)
		seg.len = (size_t)(eol - seg.ptr);
	/* Split on MSH-1: part n is MSH-n from n = 2 on. */
	*msh9 = hl7_split_nth(seg, raw.ptr[3], 9);
	*msh10 = hl7_split_nth(seg, raw.ptr[3], 10);
}

static void
format_bytes(uint64_t n, char *out, size_t cap)
{
	static const char *const units[] = {"bytes", "KiB", "MiB", "GiB", "TiB"};
	double v = (double)n;
	size_t u = 0;

	while (v >= 1024 && u + 1 < sizeof(units) / sizeof(units[0])) {
		v /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(out, cap, "%" PRIu64 " bytes", n);
	else
		snprintf(out, cap, "%" PRIu64 " (%.1f %s)", n, v, units[u]);
}

typedef struct {
	uint64_t accepted, errored, rejected, other;
} status_count_t;

static int
count_status(void *ctx, const store_msg_t *m)
{
	status_count_t *c = ctx;

	if (m->status == 'A')
		c->accepted++;
	else if (m->status == 'E')
		c->errored++;
	else if (m->status == 'R')
		c->rejected++;
	else
		c->other++;
	return 0;
}

static int
run_stats(store_txn_t *t, const config_t *cfg, const store_args_t *a)
{
	status_count_t c = {0};
	store_stats_t st;
	char map[64], used[64];
	int rc;

	if ((rc = store_stats(t, &st)) < 0 ||
	    (rc = store_msg_foreach(t, 0, count_status, &c)) < 0) {
		print_store_error("stats", rc);
		return EXIT_PROBLEM;
	}
	format_bytes(st.map_size, map, sizeof(map));
	format_bytes(st.used_bytes, used, sizeof(used));
	printf("messages      %" PRIu64 "\n", st.messages);
	printf("  accepted    %" PRIu64 "\n", c.accepted);
	printf("  errored     %" PRIu64 "\n", c.errored);
	printf("  rejected    %" PRIu64 "\n", c.rejected);
	if (c.other > 0)
		printf("  other       %" PRIu64 "\n", c.other);
	printf("dead letters  %" PRIu64 "\n", st.dead);
	printf("dedupe keys   %" PRIu64 "\n", st.msgkeys);
	printf("last seq      %" PRIu64 "\n", st.last_seq);
	printf("resources     %" PRIu64 "\n", st.resources);
	printf("  versions    %" PRIu64 "\n", st.versions);
	printf("  changes     %" PRIu64 "\n", st.changes);
	printf("index entries %" PRIu64 "\n", st.index_entries);
	printf("pending work  %" PRIu64 "\n", st.work);
	printf("unapplied     %" PRIu64 " messages\n", st.pending);
	printf("audit events  %" PRIu64 "\n", st.audit);
	printf("audit runs    %" PRIu64 "\n", st.audit_refs);
	printf("map size      %s\n", map);
	printf("used          %s\n", used);
	return EXIT_OK;
}

typedef struct {
	const store_args_t *a;
	uint64_t left;
} list_ctx_t;

static int
list_one(void *ctx, const store_msg_t *m)
{
	list_ctx_t *l = ctx;
	char when[40];
	slice_t msh9, msh10;

	if (l->a->status != 0 && m->status != l->a->status)
		return 0;
	if (l->left == 0)
		return 1;
	l->left--;
	time_format_rfc3339(m->received_ns, when, sizeof(when));
	msg_header_peek(m->raw, &msh9, &msh10);
	printf("%" PRIu64 " %s %c ", m->seq, when, status_letter(m->status));
	print_escaped(stdout, m->peer);
	printf(" %zu ", m->raw.len);
	print_escaped(stdout, msh9);
	putchar(' ');
	print_escaped(stdout, msh10);
	putchar('\n');
	return 0;
}

static int
run_list(store_txn_t *t, const config_t *cfg, const store_args_t *a)
{
	list_ctx_t l = {a, a->limit};
	int rc = store_msg_foreach(t, a->from, list_one, &l);

	if (rc < 0) {
		print_store_error("list", rc);
		return EXIT_PROBLEM;
	}
	return EXIT_OK;
}

/* Segments on their own lines: CR and CRLF become LF. */
static void
print_segments(slice_t raw)
{
	for (size_t i = 0; i < raw.len; i++) {
		if (raw.ptr[i] != '\r')
			putchar(raw.ptr[i]);
		else if (i + 1 >= raw.len || raw.ptr[i + 1] != '\n')
			putchar('\n');
	}
	if (raw.len > 0 && raw.ptr[raw.len - 1] != '\r' && raw.ptr[raw.len - 1] != '\n')
		putchar('\n');
}

static int
run_show(store_txn_t *t, const config_t *cfg, const store_args_t *a)
{
	store_msg_t m;
	int rc = store_msg_get(t, a->seqs[0], &m);

	if (rc == -FG_ENOTFOUND) {
		fprintf(stderr, "fhirgate store show: no message %" PRIu64 "\n", a->seqs[0]);
		return EXIT_PROBLEM;
	}
	if (rc < 0) {
		print_store_error("show", rc);
		return EXIT_PROBLEM;
	}
	if (a->raw)
		fwrite(m.raw.ptr, 1, m.raw.len, stdout);
	else
		print_segments(m.raw);
	return EXIT_OK;
}

static int
dead_one(void *ctx, const store_dead_t *d)
{
	uint64_t *left = ctx;
	char when[40];

	if (*left == 0)
		return 1;
	(*left)--;
	time_format_rfc3339(d->time_ns, when, sizeof(when));
	printf("%" PRIu64 " %s %s %u ", d->seq, when, ingest_stage_name((ingest_stage_t)d->stage),
	       (unsigned)d->code);
	print_escaped(stdout, d->location);
	putchar(' ');
	print_escaped(stdout, d->reason);
	putchar('\n');
	return 0;
}

static int
run_dead(store_txn_t *t, const config_t *cfg, const store_args_t *a)
{
	uint64_t left = a->limit;
	int rc = store_dead_foreach(t, a->from, dead_one, &left);

	if (rc < 0) {
		print_store_error("dead", rc);
		return EXIT_PROBLEM;
	}
	return EXIT_OK;
}

typedef struct {
	uint64_t *seqs;
	size_t n, cap;
} seq_list_t;

static int
collect_dead(void *ctx, const store_dead_t *d)
{
	seq_list_t *l = ctx;

	if (l->n == l->cap) {
		l->cap = l->cap ? l->cap * 2 : 64;
		l->seqs = xreallocarray(l->seqs, l->cap, sizeof(*l->seqs));
	}
	l->seqs[l->n++] = d->seq;
	return 0;
}

/* Re-checks one dead letter; appends the line to print to out. Returns 1 when it still fails
 * (or is not there), 0 when replayed, or a store error. */
static int
replay_one(store_txn_t *t, arena_t *ar, const ingest_opts_t *opt, uint64_t seq, buf_t *out)
{
	store_dead_t d;
	store_msg_t m;
	ingest_check_t c;
	slice_t raw;
	int rc;

	if ((rc = store_dead_get(t, seq, &d)) == -FG_ENOTFOUND) {
		buf_printf(out, "%" PRIu64 " not found: no dead letter\n", seq);
		return 1;
	}
	if (rc == 0 && (rc = store_msg_get(t, seq, &m)) == -FG_ENOTFOUND) {
		buf_printf(out, "%" PRIu64 " not found: dead letter without a message\n", seq);
		return 1;
	}
	if (rc < 0)
		return rc;
	/* Our own copy: the writes below may move what LMDB lent us. */
	raw = arena_slice_dup(ar, m.raw);
	ingest_check(ar, raw.ptr, raw.len, opt, &c);
	rc = ingest_replay(t, &c, &d, time_now_ns());
	if (rc == 0) {
		buf_printf(out, "%" PRIu64 " replayed: AA (%zu resources)\n", seq, c.nres);
	} else if (rc == 1 && d.stage == INGEST_STAGE_FRAME) {
		buf_printf(out,
			   "%" PRIu64 " still failing: frame: an oversize frame kept only its "
			   "head; the sender must send the message again\n",
			   seq);
	} else if (rc == 1) {
		buf_printf(out, "%" PRIu64 " still failing: %s %d ", seq,
			   ingest_stage_name(c.stage), c.err.code);
		for (const char *p = c.err.text; *p != '\0'; p++)
			buf_append_byte(out, (unsigned char)*p < 0x20 ? '?' : *p);
		buf_append_byte(out, '\n');
	}
	return rc;
}

/* One write transaction for the whole command: every replay is kept, or none. */
static int
run_replay(store_txn_t *t, const config_t *cfg, const store_args_t *a)
{
	ingest_opts_t opt = {
	    .limits = {cfg->hl7_max_message_bytes, cfg->hl7_max_segments, cfg->hl7_max_field_bytes},
	    .accept_unmapped = false};
	seq_list_t all = {NULL, 0, 0};
	const uint64_t *seqs = a->seqs;
	size_t n = a->nseqs, failing = 0;
	maps_t *maps = NULL;
	maps_ref_t *ref = NULL;
	arena_t *ar;
	buf_t out = BUF_INIT;
	int rc = 0;

	/* Replay means: with the mappings as they are now (none when mappings.dir is empty). */
	if (cfg->mappings_dir[0] != '\0' && maps_open(cfg, &maps) < 0) {
		fprintf(stderr, "fhirgate store replay: the mappings do not load; fix them first "
				"(fhirgate mappings check)\n");
		store_txn_abort(t);
		return EXIT_PROBLEM;
	}
	if (maps != NULL)
		opt.maps = maps_acquire(maps, &ref);
	maps_options(cfg, &opt.map_opt);
	ar = arena_new(0);
	if (a->all) {
		rc = store_dead_foreach(t, 0, collect_dead, &all);
		seqs = all.seqs;
		n = all.n;
	}
	for (size_t i = 0; rc >= 0 && i < n; i++) {
		rc = replay_one(t, ar, &opt, seqs[i], &out);
		failing += rc == 1;
		arena_reset(ar);
	}
	if (rc >= 0)
		rc = store_txn_commit(t);
	else
		store_txn_abort(t);
	arena_free(ar);
	maps_release(ref);
	maps_free(maps);
	free(all.seqs);
	if (rc < 0) {
		buf_free(&out);
		print_store_error("replay (nothing changed)", rc);
		return EXIT_PROBLEM;
	}
	if (out.len > 0)
		fwrite(out.data, 1, out.len, stdout);
	if (n == 0)
		printf("no dead letters\n");
	buf_free(&out);
	return failing > 0 ? EXIT_PROBLEM : EXIT_OK;
}

static void
verify_report(void *ctx, const char *problem)
{
	printf("problem: %s\n", problem);
}

static int
run_verify(store_txn_t *t, const config_t *cfg, const store_args_t *a)
{
	int n = store_verify(t, verify_report, NULL);

	if (n < 0) {
		print_store_error("verify", n);
		return EXIT_PROBLEM;
	}
	if (n > 0) {
		printf("%d problem%s found\n", n, n == 1 ? "" : "s");
		return EXIT_PROBLEM;
	}
	printf("no problems found\n");
	return EXIT_OK;
}

/* Each message as stored, its last segment terminated by CR, then a blank line (which
 * hl7_batch_split skips, so `fhirgate send` reads the file back message by message). */
static int
dump_one(void *ctx, const store_msg_t *m)
{
	slice_t raw = m->raw;

	while (raw.len > 0 && (raw.ptr[raw.len - 1] == '\r' || raw.ptr[raw.len - 1] == '\n'))
		raw.len--;
	if (raw.len == 0)
		return 0;
	fwrite(raw.ptr, 1, raw.len, stdout);
	fputs("\r\n\n", stdout);
	return 0;
}

static int
run_dump(store_txn_t *t, const config_t *cfg, const store_args_t *a)
{
	int rc = store_msg_foreach(t, a->from, dump_one, NULL);

	if (rc < 0) {
		print_store_error("dump", rc);
		return EXIT_PROBLEM;
	}
	return EXIT_OK;
}

static void
print_version(const store_res_t *r)
{
	char when[40];

	time_format_rfc3339(r->last_updated_ns, when, sizeof(when));
	printf("%.*s/%.*s version %u %s%s %zu bytes\n", (int)r->type.len, r->type.ptr,
	       (int)r->id.len, r->id.ptr, (unsigned)r->version, when, r->deleted ? " deleted" : "",
	       r->body.len);
}

static int
history_one(void *ctx, const store_res_t *r)
{
	print_version(r);
	return 0;
}

/* `store resource TYPE/ID [--history]`: the current version (patient data), or every version. */
static int
run_resource(store_txn_t *t, const config_t *cfg, const store_args_t *a)
{
	const char *slash = strchr(a->ref, '/');
	slice_t type = slice_make(a->ref, (size_t)(slash - a->ref)), id = slice_cstr(slash + 1);
	store_res_t r;
	int rc;

	if (a->history) {
		rc = store_hist_foreach_instance(t, type, id, 0, 0, history_one, NULL);
	} else if ((rc = store_res_get(t, type, id, &r)) == 0) {
		print_version(&r);
		fwrite(r.body.ptr, 1, r.body.len, stdout);
		putchar('\n');
	}
	if (rc == -FG_ENOTFOUND) {
		fprintf(stderr, "fhirgate store resource: no %s\n", a->ref);
		return EXIT_PROBLEM;
	}
	if (rc < 0) {
		print_store_error("resource", rc);
		return EXIT_PROBLEM;
	}
	return EXIT_OK;
}

static int
count_one(void *ctx, slice_t type, uint64_t n)
{
	printf("%-24.*s %" PRIu64 "\n", (int)type.len, type.ptr, n);
	return 0;
}

/* `store resources`: current resources per type. */
static int
run_resources(store_txn_t *t, const config_t *cfg, const store_args_t *a)
{
	int rc = store_res_foreach_count(t, count_one, NULL);

	if (rc < 0) {
		print_store_error("resources", rc);
		return EXIT_PROBLEM;
	}
	return EXIT_OK;
}

/* ---- reindex ---- */

#define REINDEX_CHUNK 1000 /* resources per write transaction: LMDB bounds a txn's dirty pages */

typedef struct {
	store_txn_t *t;
	slice_t type;
	arena_t *a;
	size_t count;
	char last[STORE_ID_MAX + 1];
	int rc;
} reindex_ctx_t;

static int
reindex_one(void *ctx, const store_res_t *r)
{
	reindex_ctx_t *x = ctx;
	fhir_node_t *res = NULL;
	store_idx_entry_t *entries = NULL;
	slice_t id;
	size_t n = 0;
	char err[160];
	int rc;

	if (x->count >= REINDEX_CHUNK)
		return 1;
	arena_reset(x->a);
	/* Copies first: the slices in r end at the first write. */
	id = arena_slice_dup(x->a, r->id);
	rc = fhir_json_parse(x->a, r->body.ptr, r->body.len, NULL, &res, err, sizeof(err));
	if (rc == 0)
		rc = ingest_index_entries(x->a, res, &entries, &n);
	if (rc < 0) {
		fprintf(stderr, "fhirgate store reindex: %.*s/%.*s: %s\n", (int)x->type.len,
			x->type.ptr, (int)id.len, id.ptr, rc == -FG_EPARSE ? err : fg_strerror(rc));
		x->rc = rc;
		return 1;
	}
	if ((rc = store_idx_set(x->t, x->type, id, entries, n)) < 0) {
		x->rc = rc;
		return 1;
	}
	memcpy(x->last, id.ptr, id.len);
	x->last[id.len] = '\0';
	x->count++;
	return 0;
}

/* Rebuilds one type's index entries: clear, then every resource in chunks of transactions. */
static int
reindex_type(store_t *s, slice_t type, uint64_t *done)
{
	reindex_ctx_t x = {.type = type, .a = arena_new(0)};
	store_txn_t *t = NULL;
	int rc = store_txn_begin(s, true, &t);

	if (rc == 0 && (rc = store_idx_clear_type(t, type)) < 0)
		store_txn_abort(t);
	else if (rc == 0)
		rc = store_txn_commit(t);
	while (rc == 0) {
		slice_t after = slice_cstr(x.last);

		if ((rc = store_txn_begin(s, true, &x.t)) < 0)
			break;
		x.count = 0;
		rc = store_res_foreach_type(x.t, type, after, reindex_one, &x);
		if (rc >= 0 && x.rc < 0)
			rc = x.rc;
		if (rc < 0) {
			store_txn_abort(x.t);
			break;
		}
		if ((rc = store_txn_commit(x.t)) < 0)
			break;
		*done += x.count;
		if (x.count < REINDEX_CHUNK)
			break;
	}
	arena_free(x.a);
	return rc;
}

/* `store reindex`: every resource's search index entries, rebuilt from its stored body (after
 * a change of the index encodings). Commits as it goes; run it with the server stopped, or
 * accept that searches miss entries of the type being rebuilt meanwhile. */
static int
run_reindex(store_txn_t *t, const config_t *cfg, const store_args_t *a)
{
	slice_t types[256];
	size_t ntypes = 0;
	uint64_t done = 0, n;
	int rc = 0;

	for (size_t i = 0; i < fhir_meta_resource_count() && ntypes < 256; i++) {
		slice_t tn = slice_cstr(fhir_meta_resource_at(i)->name);

		if (store_res_count(t, tn, &n) == 0 && n > 0)
			types[ntypes++] = tn;
	}
	store_txn_abort(t);
	for (size_t i = 0; rc == 0 && i < ntypes; i++) {
		uint64_t before = done;

		rc = reindex_type(a->store, types[i], &done);
		if (rc == 0)
			printf("%-24.*s %" PRIu64 " reindexed\n", (int)types[i].len, types[i].ptr,
			       done - before);
	}
	if (rc < 0) {
		print_store_error("reindex", rc);
		return EXIT_PROBLEM;
	}
	printf("%" PRIu64 " resources reindexed\n", done);
	return EXIT_OK;
}

static const store_cmd_t store_cmds[] = {
    {"stats", run_stats, 0, false, "", "counts, last sequence, map size and bytes used"},
    {"list", run_list, OPT_FROM | OPT_LIMIT | OPT_STATUS, false,
     "[--from SEQ] [--limit N] [--status A|E|R]",
     "one line per message: seq, time, status, peer, bytes, MSH-9, MSH-10"},
    {"show", run_show, OPT_RAW | ARG_ONE_SEQ, false, "[--raw] SEQ",
     "print a message (patient data), one segment per line; --raw: the exact bytes"},
    {"dead", run_dead, OPT_FROM | OPT_LIMIT, false, "[--from SEQ] [--limit N]",
     "dead letters: seq, time, stage, 0357 code, location, reason"},
    {"replay", run_replay, OPT_ALL | ARG_SEQS, true, "SEQ... | --all",
     "re-check dead letters with the ingest rules; accept those that now pass"},
    {"verify", run_verify, 0, false, "", "check the store's consistency"},
    {"resources", run_resources, 0, false, "", "current FHIR resources per type"},
    {"reindex", run_reindex, 0, true, "",
     "rebuild every resource's search index entries from its stored body"},
    {"resource", run_resource, ARG_REF | OPT_HISTORY, false, "[--history] TYPE/ID",
     "a FHIR resource's current version (patient data), or with --history every version"},
    {"dump", run_dump, OPT_FROM, false, "[--from SEQ]",
     "write every message (patient data), blank-line separated, for `fhirgate send`"},
};

#define STORE_NCMDS (sizeof(store_cmds) / sizeof(store_cmds[0]))

static void
usage_store(FILE *f)
{
	fprintf(f, "usage: fhirgate store COMMAND [OPTIONS]\n\ncommands:\n");
	for (size_t i = 0; i < STORE_NCMDS; i++)
		fprintf(f, "  %-7s %s\n", store_cmds[i].name, store_cmds[i].help);
	fprintf(f, "\nCommon options: -c FILE, --set key=value (store.data_dir, store.map_size).\n"
		   "Exit status: 0 ok, 1 problems found or not found, 2 usage error.\n");
}

static void
usage_cmd(FILE *f, const store_cmd_t *c)
{
	fprintf(f, "usage: fhirgate store %s%s%s\n  %s\n", c->name, c->usage[0] ? " " : "",
		c->usage, c->help);
	if (c->write)
		fprintf(f,
			"  Opens the store for writing (replay: one transaction; reindex: one per "
			"1000 resources); safe while the server "
			"runs.\n");
	else
		fprintf(f, "  Opens the store read-only; safe while the server runs.\n");
}

static bool
parse_seq(const char *s, uint64_t *out)
{
	return slice_to_u64(slice_cstr(s), out);
}

/* Parses argv[2..] into a (argv[1] is the subcommand). Prints the problem and returns false on
 * a usage error. */
static bool
parse_args(const store_cmd_t *c, int argc, char **argv, store_args_t *a)
{
	*a = (store_args_t){0, UINT64_MAX, 0, false, false, NULL, 0, false, NULL, NULL};
	a->seqs = xcalloc((size_t)argc, sizeof(*a->seqs));
	for (int i = 2; i < argc; i++) {
		const char *arg = argv[i], *val = NULL;
		unsigned opt = 0;

		if (strcmp(arg, "--from") == 0)
			opt = OPT_FROM;
		else if (strcmp(arg, "--limit") == 0)
			opt = OPT_LIMIT;
		else if (strcmp(arg, "--status") == 0)
			opt = OPT_STATUS;
		else if (strcmp(arg, "--raw") == 0)
			opt = OPT_RAW;
		else if (strcmp(arg, "--all") == 0)
			opt = OPT_ALL;
		else if (strcmp(arg, "--history") == 0)
			opt = OPT_HISTORY;
		if (opt == 0 && arg[0] == '-') {
			fprintf(stderr, "fhirgate store %s: unknown option %s\n", c->name, arg);
			return false;
		}
		if (opt != 0 && !(c->opts & opt)) {
			fprintf(stderr, "fhirgate store %s: %s does not apply\n", c->name, arg);
			return false;
		}
		if (opt & (OPT_FROM | OPT_LIMIT | OPT_STATUS)) {
			if (i + 1 >= argc) {
				fprintf(stderr, "fhirgate store %s: %s needs a value\n", c->name,
					arg);
				return false;
			}
			val = argv[++i];
		}
		if ((opt == OPT_FROM && !parse_seq(val, &a->from)) ||
		    (opt == OPT_LIMIT && !parse_seq(val, &a->limit))) {
			fprintf(stderr, "fhirgate store %s: %s wants a number, not '%s'\n", c->name,
				arg, val);
			return false;
		}
		if (opt == OPT_STATUS) {
			if (strcmp(val, "A") != 0 && strcmp(val, "E") != 0 &&
			    strcmp(val, "R") != 0) {
				fprintf(stderr, "fhirgate store %s: --status wants A, E or R\n",
					c->name);
				return false;
			}
			a->status = (uint8_t)val[0];
		}
		a->raw |= opt == OPT_RAW;
		a->all |= opt == OPT_ALL;
		a->history |= opt == OPT_HISTORY;
		if (opt == 0 && (c->opts & ARG_REF) && a->ref == NULL && strchr(arg, '/') != NULL) {
			a->ref = arg;
			continue;
		}
		if (opt == 0) {
			if (!(c->opts & (ARG_ONE_SEQ | ARG_SEQS)) ||
			    !parse_seq(arg, &a->seqs[a->nseqs])) {
				fprintf(stderr, "fhirgate store %s: unexpected argument '%s'\n",
					c->name, arg);
				return false;
			}
			a->nseqs++;
		}
	}
	if ((c->opts & ARG_REF) && a->ref == NULL) {
		fprintf(stderr, "fhirgate store %s: needs TYPE/ID\n", c->name);
		return false;
	}
	if ((c->opts & ARG_ONE_SEQ) && a->nseqs != 1) {
		fprintf(stderr, "fhirgate store %s: needs one SEQ\n", c->name);
		return false;
	}
	if ((c->opts & ARG_SEQS) && (a->nseqs > 0) == a->all) {
		fprintf(stderr, "fhirgate store %s: needs SEQ... or --all (not both)\n", c->name);
		return false;
	}
	return true;
}

static bool
has_help(int argc, char **argv)
{
	for (int i = 1; i < argc; i++)
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
			return true;
	return false;
}

int
cmd_store(int argc, char **argv)
{
	const store_cmd_t *c = NULL;
	store_opts_t opts = {0};
	store_args_t a;
	store_txn_t *t;
	store_t *s;
	config_t cfg;
	int rc, status = EXIT_USAGE;

	if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		usage_store(argc < 2 ? stderr : stdout);
		return argc < 2 ? EXIT_USAGE : EXIT_OK;
	}
	for (size_t i = 0; i < STORE_NCMDS; i++)
		if (strcmp(argv[1], store_cmds[i].name) == 0)
			c = &store_cmds[i];
	if (c == NULL) {
		fprintf(stderr, "fhirgate store: unknown command '%s'\n", argv[1]);
		usage_store(stderr);
		return EXIT_USAGE;
	}
	if (has_help(argc, argv)) {
		usage_cmd(stdout, c);
		return EXIT_OK;
	}
	if (cli_config_load(&argc, argv, &cfg) < 0)
		return EXIT_USAGE;
	if (!parse_args(c, argc, argv, &a)) {
		usage_cmd(stderr, c);
		goto out;
	}
	status = EXIT_PROBLEM;
	opts.map_size = cfg.map_size;
	opts.no_writemap = cfg.store_writemap == CONF_OFF;
	opts.read_only = !c->write;
	if ((rc = store_open(cfg.data_dir, &opts, &s)) < 0) {
		fprintf(stderr, "fhirgate store: cannot open the store in %s: %s: %s\n",
			cfg.data_dir, fg_strerror(rc), store_last_error());
		goto out;
	}
	if ((rc = store_txn_begin(s, c->write, &t)) < 0) {
		print_store_error("begin transaction", rc);
	} else {
		/* A writing command ends its transaction itself, when it knows what to print. */
		a.store = s;
		status = c->run(t, &cfg, &a);
		if (!c->write)
			store_txn_abort(t);
	}
	store_close(s);
	if (fflush(stdout) != 0 || ferror(stdout)) {
		fprintf(stderr, "fhirgate store: cannot write the output\n");
		status = EXIT_PROBLEM;
	}
out:
	free(a.seqs);
	config_free(&cfg);
	return status;
}
