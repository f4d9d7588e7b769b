/* The import core: read, map and store a file's records in transactions of o->batch records,
 * each committing the file's checkpoint (position, counters, reject file length) with its
 * resources, so that a killed import resumes at the first record it had not committed. */
#include "config.h"

#include "gateway/import.h"

#include <sys/mman.h>
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "gateway/ingest.h"
#include "gateway/score.h"
#include "lib/arena.h"
#include "lib/buf.h"
#include "lib/err.h"
#include "lib/timeutil.h"
#include "lib/xalloc.h"

/* Records per transaction by default: large transactions write each touched B-tree page once
 * for many records (BENCHMARKS.md: 1,000 -> 2,000 records/s, 20,000 -> 6,000 at 1M patients);
 * HL7 v2 messages make several resources each. */
#define IMPORT_BATCH_RECORDS  20000
#define IMPORT_BATCH_MESSAGES 1000
/* Bytes at each end of a file that, with its size, identify it for its checkpoint. */
#define IMPORT_ID_BLOCK    (1u << 20)
#define IMPORT_CKPT_FORMAT 1

/* The checkpoint: where the next record starts and what was done up to there. */
typedef struct {
	uint64_t offset, number, reject_bytes;
	uint64_t accepted, rejected, resources, unchanged;
} import_ckpt_t;

/* A record converted and waiting for its batch's transaction. */
typedef struct {
	ingest_check_t *check; /* HL7 files */
	slice_t raw, peer;
	ingest_res_t *res;
	size_t nres;
} import_item_t;

/* Records mapped and waiting for their transaction, in their arena. */
typedef struct {
	arena_t *a;
	import_item_t *items;
	size_t nitems, cap;
} import_batch_t;

typedef struct import import_t;

/* One batch's commit: what the commit thread needs, and what it reports. */
typedef struct {
	import_t *im;
	import_batch_t *b;
	import_ckpt_t ck;
	bool done;
	int reject_fd;
	int rc;
	size_t unchanged;
	uint64_t ns;
	char err[300];
} import_commit_t;

struct import {
	store_t *s;
	const import_opts_t *o;
	const char *path;
	import_stats_t *st;
	char *err;
	size_t errcap;
	char ckname[80];
	import_ckpt_t ck;
	import_batch_t batches[2];
	import_batch_t *cur; /* being filled; the other may be committing */
	import_commit_t job;
	pthread_t thread;
	bool running, threaded;
	/* reject file */
	char *reject_path;
	FILE *rf;
	buf_t rbuf;
	buf_t xml_close;
	uint64_t last_progress;
};

char *
import_reject_path(const char *input)
{
	const char *slash = strrchr(input, '/');
	const char *dot = strrchr(input, '.');

	if (dot == NULL || (slash != NULL && dot < slash) || dot == (slash ? slash + 1 : input))
		return xasprintf("%s.rejected", input);
	return xasprintf("%.*s.rejected%s", (int)(dot - input), input, dot);
}

/* The file's identity: SHA-256 of its size and its first and last MiB. */
static int
import_identity(const char *path, char *name, size_t cap, uint64_t *size)
{
	unsigned char md[32], *blk = xmalloc(IMPORT_ID_BLOCK);
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;
	unsigned char be[8];
	int rc = 0;

	if (fd < 0 || fstat(fd, &st) != 0) {
		rc = -FG_EIO;
		goto out;
	}
	*size = (uint64_t)st.st_size;
	for (int i = 0; i < 8; i++)
		be[i] = (unsigned char)(*size >> (56 - 8 * i));
	EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
	EVP_DigestUpdate(ctx, be, 8);
	n = pread(fd, blk, IMPORT_ID_BLOCK, 0);
	if (n > 0)
		EVP_DigestUpdate(ctx, blk, (size_t)n);
	if (*size > IMPORT_ID_BLOCK) {
		n = pread(fd, blk, IMPORT_ID_BLOCK, (off_t)(*size - IMPORT_ID_BLOCK));
		if (n > 0)
			EVP_DigestUpdate(ctx, blk, (size_t)n);
	}
	if (n < 0)
		rc = -FG_EIO;
	EVP_DigestFinal_ex(ctx, md, NULL);
	{
		size_t k = (size_t)snprintf(name, cap, "import:");

		for (int i = 0; i < 20 && k + 2 < cap; i++, k += 2)
			snprintf(name + k, cap - k, "%02x", md[i]);
	}
out:
	if (fd >= 0)
		close(fd);
	EVP_MD_CTX_free(ctx);
	free(blk);
	return rc;
}

static void
import_ckpt_encode(const import_ckpt_t *c, buf_t *b)
{
	buf_append_byte(b, IMPORT_CKPT_FORMAT);
	buf_append_be64(b, c->offset);
	buf_append_be64(b, c->number);
	buf_append_be64(b, c->reject_bytes);
	buf_append_be64(b, c->accepted);
	buf_append_be64(b, c->rejected);
	buf_append_be64(b, c->resources);
	buf_append_be64(b, c->unchanged);
}

static bool
import_ckpt_decode(slice_t v, import_ckpt_t *c)
{
	const char *p = v.ptr + 1;

	if (v.len != 1 + 7 * 8 || v.ptr[0] != IMPORT_CKPT_FORMAT)
		return false;
	c->offset = be64_read(p);
	c->number = be64_read(p + 8);
	c->reject_bytes = be64_read(p + 16);
	c->accepted = be64_read(p + 24);
	c->rejected = be64_read(p + 32);
	c->resources = be64_read(p + 40);
	c->unchanged = be64_read(p + 48);
	return true;
}

static int
import_ckpt_load(import_t *im)
{
	store_txn_t *t;
	slice_t v;
	int rc = store_txn_begin(im->s, false, &t);

	if (rc < 0)
		return rc;
	rc = store_checkpoint_get(t, slice_cstr(im->ckname), &v);
	if (rc == 0 && !import_ckpt_decode(v, &im->ck))
		rc = -FG_ENOTFOUND; /* a checkpoint of another format: start again */
	store_txn_abort(t);
	return rc;
}

/* Opens the reject file: truncated to the checkpoint's length when resuming, else empty. The
 * file is created at the first reject only. */
static int
import_rejects_open(import_t *im)
{
	int fd;

	if (im->rf != NULL)
		return 0;
	fd = open(im->reject_path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0 || ftruncate(fd, (off_t)im->ck.reject_bytes) != 0 ||
	    lseek(fd, 0, SEEK_END) < 0) {
		snprintf(im->err, im->errcap, "%s: %s", im->reject_path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -FG_EIO;
	}
	im->rf = fdopen(fd, "w");
	return 0;
}

/* Writes a rejected record (as it was in the input) and reports it. */
static int
import_reject(import_t *im, record_reader_t *rd, slice_t raw, const char *where, const char *why)
{
	int rc;

	im->st->rejected++;
	im->ck.rejected++;
	if (im->o->on_reject != NULL)
		im->o->on_reject(im->o->arg, where, why);
	if (im->o->dry_run)
		return 0;
	if ((rc = import_rejects_open(im)) < 0)
		return rc;
	buf_reset(&im->rbuf);
	if (rd != NULL && (im->ck.reject_bytes == 0 || im->xml_close.len == 0)) {
		slice_t h = record_reader_header(rd);
		buf_t open = BUF_INIT;

		/* an XML reject document closes the ancestors its first record had */
		buf_reset(&im->xml_close);
		record_reader_xml_frame(rd, &open, &im->xml_close);
		if (im->ck.reject_bytes == 0) {
			buf_append(&im->rbuf, h.ptr, h.len);
			if (h.len > 0 && h.ptr[h.len - 1] != '\n')
				buf_append_byte(&im->rbuf, '\n');
			buf_append(&im->rbuf, open.data, open.len);
		}
		buf_free(&open);
	}
	if (rd != NULL) {
		record_reader_raw(rd, &im->rbuf);
	} else {
		/* an HL7 message: its segments, one per line */
		for (size_t i = 0; i < raw.len; i++)
			buf_append_byte(&im->rbuf, raw.ptr[i] == '\r' ? '\n' : raw.ptr[i]);
	}
	if (fwrite(im->rbuf.data, 1, im->rbuf.len, im->rf) != im->rbuf.len) {
		snprintf(im->err, im->errcap, "%s: %s", im->reject_path, strerror(errno));
		return -FG_EIO;
	}
	im->ck.reject_bytes += im->rbuf.len;
	return 0;
}

/* A batch's transaction: its items and the checkpoint as of its last record; run in the commit
 * thread while the next batch is being mapped, or inline. */
static void *
import_commit_run(void *arg)
{
	import_commit_t *j = arg;
	import_t *im = j->im;
	uint64_t t0 = time_mono_ns(), now = time_now_ns();
	store_txn_t *t;
	buf_t v = BUF_INIT;
	int rc = 0;

	j->unchanged = 0;
	/* the rejects of the batch are on disk before the checkpoint that counts them */
	if (j->reject_fd >= 0 && fdatasync(j->reject_fd) != 0) {
		snprintf(j->err, sizeof(j->err), "%s: %s", im->reject_path, strerror(errno));
		j->rc = -FG_EIO;
		return NULL;
	}
	rc = store_txn_begin(im->s, true, &t);
	for (size_t i = 0; rc == 0 && i < j->b->nitems; i++) {
		import_item_t *it = &j->b->items[i];

		if (it->check != NULL) {
			ingest_outcome_t out;

			rc = ingest_record(t, it->check, it->raw, it->peer, now, &out);
			if (rc == 0 && out.duplicate)
				j->unchanged += it->check->nres;
		} else {
			rc = ingest_store_resources(t, it->res, it->nres, now, &j->unchanged);
		}
	}
	if (rc == 0 && j->done) {
		rc = store_checkpoint_del(t, slice_cstr(im->ckname));
	} else if (rc == 0) {
		j->ck.unchanged += j->unchanged;
		import_ckpt_encode(&j->ck, &v);
		rc = store_checkpoint_put(t, slice_cstr(im->ckname), buf_slice(&v));
	}
	buf_free(&v);
	if (rc == 0)
		rc = store_txn_commit(t);
	else
		store_txn_abort(t);
	score_hook_txn_done();
	if (rc < 0)
		snprintf(j->err, sizeof(j->err), "store: %s %s", fg_strerror(rc),
			 store_last_error());
	j->rc = rc;
	j->ns = time_mono_ns() - t0;
	return NULL;
}

/* Waits for the batch being committed, if any, and takes its result. */
static int
import_join(import_t *im)
{
	import_commit_t *j = &im->job;

	if (!im->running)
		return 0;
	if (im->threaded)
		pthread_join(im->thread, NULL);
	im->running = im->threaded = false;
	j->b->nitems = 0;
	arena_reset(j->b->a);
	if (j->rc < 0) {
		snprintf(im->err, im->errcap, "%s", j->err);
		return j->rc;
	}
	im->st->batches++;
	im->st->unchanged += j->unchanged;
	im->ck.unchanged += j->unchanged;
	im->st->store_ns += j->ns;
	return 0;
}

/* Commits the batch being filled with the checkpoint (offset/number: where the next record
 * starts); done: the file is finished, the checkpoint goes. async: in the commit thread, while
 * the caller goes on mapping into the other batch (at most one commit runs at a time, in
 * order). */
static int
import_flush(import_t *im, bool done, bool async)
{
	import_commit_t *j = &im->job;
	int rc;

	if (im->o->dry_run) {
		im->cur->nitems = 0;
		arena_reset(im->cur->a);
		return 0;
	}
	if ((rc = import_join(im)) < 0)
		return rc;
	if (im->rf != NULL && fflush(im->rf) != 0) {
		snprintf(im->err, im->errcap, "%s: %s", im->reject_path, strerror(errno));
		return -FG_EIO;
	}
	memset(j, 0, sizeof(*j));
	j->im = im;
	j->b = im->cur;
	j->ck = im->ck;
	j->done = done;
	j->reject_fd = im->rf != NULL ? fileno(im->rf) : -1;
	im->running = true;
	if (async && pthread_create(&im->thread, NULL, import_commit_run, j) == 0) {
		im->threaded = true;
		im->cur = im->cur == &im->batches[0] ? &im->batches[1] : &im->batches[0];
		return 0;
	}
	import_commit_run(j);
	return import_join(im);
}

static import_item_t *
import_item_new(import_t *im)
{
	import_batch_t *b = im->cur;

	if (b->nitems == b->cap) {
		b->cap = b->cap ? b->cap * 2 : 256;
		b->items = xreallocarray(b->items, b->cap, sizeof(*b->items));
	}
	memset(&b->items[b->nitems], 0, sizeof(b->items[0]));
	return &b->items[b->nitems++];
}

static void
import_progress(import_t *im, bool final)
{
	uint64_t now = time_mono_ns();
	uint64_t every = im->o->progress_interval_ns ? im->o->progress_interval_ns : 500000000ull;

	if (im->o->on_progress == NULL)
		return;
	if (!final && now - im->last_progress < every)
		return;
	im->last_progress = now;
	im->o->on_progress(im->o->arg, im->path, im->st, final);
}

/* One record of a record map: converted into the batch, or rejected. */
static int
import_one_record(import_t *im, record_reader_t *rd, const record_t *rec)
{
	const import_opts_t *o = im->o;
	char where[512], key[64];
	hl7_msg_t *m;
	map_result_t *r = NULL;
	uint64_t t0 = time_mono_ns();
	int rc;

	if (record_map_format(o->rm) == RECORD_XML)
		snprintf(where, sizeof(where), "%s:%llu (record %llu)", im->path,
			 (unsigned long long)rec->line, (unsigned long long)rec->number);
	else
		snprintf(where, sizeof(where), "%s:%llu", im->path, (unsigned long long)rec->line);
	if (rec->error != NULL)
		return import_reject(im, rd, SLICE_NULL, where, rec->error);
	snprintf(key, sizeof(key), "%llu", (unsigned long long)rec->number);
	rc = record_to_msg(o->rm, rec, slice_cstr(key), im->cur->a, &m);
	if (rc == 0)
		rc = map_convert(record_map_set(o->rm), m, &o->map_opt, im->cur->a, &r);
	im->st->warnings += r ? r->nwarnings : 0;
	if (rc == 0 && r != NULL && r->bundle != NULL && o->dry_run) {
		if (o->on_result != NULL)
			o->on_result(o->arg, where, r);
		im->st->accepted++;
		im->st->map_ns += time_mono_ns() - t0;
		return 0;
	}
	if (rc == 0 && r != NULL && r->bundle != NULL) {
		import_item_t *it = import_item_new(im);

		rc = ingest_resources(im->cur->a, r, &it->res, &it->nres);
		if (rc < 0) {
			im->cur->nitems--;
		} else {
			size_t k = 0;

			for (size_t i = 0; i < it->nres; i++)
				if (record_map_stores(o->rm, it->res[i].type))
					it->res[k++] = it->res[i];
			it->nres = k;
		}
	}
	im->st->map_ns += time_mono_ns() - t0;
	if (rc < 0 || r == NULL || r->bundle == NULL) {
		char why[300];

		snprintf(why, sizeof(why), "mapping failed: %s",
			 r && r->error.text[0] ? r->error.text : fg_strerror(rc));
		return import_reject(im, rd, SLICE_NULL, where, why);
	}
	im->st->accepted++;
	im->ck.accepted++;
	im->st->resources += im->cur->items[im->cur->nitems - 1].nres;
	im->ck.resources += im->cur->items[im->cur->nitems - 1].nres;
	return 0;
}

static int
import_records(import_t *im)
{
	const import_opts_t *o = im->o;
	size_t batch = o->batch ? o->batch : IMPORT_BATCH_RECORDS;
	record_reader_t *rd;
	record_t rec;
	int rc, n;

	rc = record_reader_open(o->rm, im->path, im->ck.offset, im->ck.number, &rd, im->err,
				im->errcap);
	if (rc < 0)
		return rc;
	im->st->size = record_reader_size(rd);
	if (o->on_note != NULL && !im->st->resumed) {
		buf_t cols = BUF_INIT;

		record_reader_unread_columns(rd, &cols);
		if (cols.len > 0) {
			buf_append_byte(&cols, '\0');
			buf_t note = BUF_INIT;

			buf_printf(&note, "columns no mapping line reads: %s", cols.data);
			buf_append_byte(&note, '\0');
			o->on_note(o->arg, im->path, note.data);
			buf_free(&note);
		}
		buf_free(&cols);
	}
	for (;;) {
		uint64_t t0 = time_mono_ns();

		n = record_reader_next(rd, &rec);
		im->st->read_ns += time_mono_ns() - t0;
		if (n <= 0)
			break;
		im->st->records++;
		rc = import_one_record(im, rd, &rec);
		if (rc < 0)
			break;
		im->ck.offset = rec.next_offset;
		im->ck.number = rec.number;
		im->st->offset = record_reader_offset(rd);
		if (o->dry_run && o->dry_run_max > 0 && im->st->records >= o->dry_run_max)
			break;
		if (im->cur->nitems >= batch ||
		    (im->cur->nitems == 0 && im->st->records % batch == 0)) {
			if ((rc = import_flush(im, false, true)) < 0)
				break;
		}
		import_progress(im, false);
	}
	if (rc == 0 && n < 0) {
		snprintf(im->err, im->errcap, "%s", record_reader_error(rd));
		rc = -FG_EINVAL;
	}
	if (rc == 0 && im->rf != NULL && im->xml_close.len > 0) {
		if (fwrite(im->xml_close.data, 1, im->xml_close.len, im->rf) != im->xml_close.len)
			rc = -FG_EIO;
		im->ck.reject_bytes += im->xml_close.len;
	}
	if (rc == 0)
		rc = import_flush(im, true, false);
	else if (rc != -FG_EIO || im->cur->nitems > 0)
		(void)import_flush(im, false, false); /* keep what was read before the error */
	im->st->offset = record_reader_offset(rd);
	record_reader_free(rd);
	return rc;
}

/* HL7 v2 files (batches or plain files of messages): each message through the same checks and
 * store path as MLLP; the checkpoint is the offset after the last committed message. */
static int
import_hl7(import_t *im)
{
	const import_opts_t *o = im->o;
	size_t batch = o->batch ? o->batch : IMPORT_BATCH_MESSAGES;
	ingest_opts_t io;
	int fd = open(im->path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	const char *data = "";
	void *map = NULL;
	arena_t *sa = arena_new(0);
	slice_t *msgs = NULL;
	size_t nmsgs = 0;
	hl7_error_t herr;
	char *peer = xasprintf("file:%s", im->path);
	const char *lp = NULL; /* line counting: lines before lp are in line */
	uint64_t line = 1;
	int rc = 0;

	if (fd < 0 || fstat(fd, &st) != 0) {
		snprintf(im->err, im->errcap, "cannot open: %s", strerror(errno));
		rc = -FG_EIO;
		goto out;
	}
	if (st.st_size > 0) {
		map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
		if (map == MAP_FAILED) {
			map = NULL;
			snprintf(im->err, im->errcap, "cannot map: %s", strerror(errno));
			rc = -FG_EIO;
			goto out;
		}
		data = map;
	}
	im->st->size = (uint64_t)st.st_size;
	if (hl7_batch_split(sa, data, (size_t)st.st_size, &msgs, &nmsgs, &herr) < 0) {
		snprintf(im->err, im->errcap, "%s", herr.text);
		rc = -FG_EINVAL;
		goto out;
	}
	memset(&io, 0, sizeof(io));
	hl7_limits_default(&io.limits);
	io.maps = o->maps;
	io.map_opt = o->map_opt;
	for (size_t k = 0; k < nmsgs; k++) {
		uint64_t t0 = time_mono_ns(), end = (uint64_t)(msgs[k].ptr + msgs[k].len - data);
		ingest_check_t *c;
		char where[512];

		if (end <= im->ck.offset)
			continue; /* committed before the checkpoint */
		im->st->records++;
		im->ck.number = k + 1;
		c = arena_zalloc(im->cur->a, sizeof(*c));
		ingest_check(im->cur->a, msgs[k].ptr, msgs[k].len, &io, c);
		im->st->map_ns += time_mono_ns() - t0;
		im->st->warnings += c->conv ? c->conv->nwarnings : 0;
		/* segments end with CR, LF or CRLF: each is a line */
		for (lp = lp ? lp : data; lp < msgs[k].ptr; lp++)
			line += *lp == '\n' || (*lp == '\r' && lp[1] != '\n');
		snprintf(where, sizeof(where), "%s:%llu (message %zu)", im->path,
			 (unsigned long long)line, k + 1);
		if (o->dry_run) {
			if (!c->dead && o->on_result != NULL && c->conv != NULL)
				o->on_result(o->arg, where, c->conv);
		} else {
			import_item_t *it = import_item_new(im);

			it->check = c;
			it->raw = msgs[k];
			it->peer = slice_cstr(peer);
		}
		if (c->dead) {
			char why[300];

			snprintf(why, sizeof(why), "%s: %s", ingest_stage_name(c->stage),
				 c->err.text);
			if ((rc = import_reject(im, NULL, msgs[k], where, why)) < 0)
				break;
		} else {
			im->st->accepted++;
			im->ck.accepted++;
			im->st->resources += c->nres;
			im->ck.resources += c->nres;
		}
		im->ck.offset = end;
		im->st->offset = end;
		if (o->dry_run && o->dry_run_max > 0 && im->st->records >= o->dry_run_max)
			break;
		if (im->cur->nitems >= batch && (rc = import_flush(im, false, false)) < 0)
			break;
		import_progress(im, false);
	}
	if (rc == 0)
		rc = import_flush(im, true, false);
out:
	if (fd >= 0)
		close(fd);
	if (map != NULL)
		munmap(map, (size_t)st.st_size);
	arena_free(sa);
	free(peer);
	return rc;
}

int
import_file(store_t *s, const char *path, const import_opts_t *o, import_stats_t *st, char *err,
	    size_t errcap)
{
	import_t im;
	uint64_t size = 0;
	int rc;

	memset(&im, 0, sizeof(im));
	memset(st, 0, sizeof(*st));
	err[0] = '\0';
	im.s = s;
	im.o = o;
	im.path = path;
	im.st = st;
	im.err = err;
	im.errcap = errcap;
	for (int i = 0; i < 2; i++)
		im.batches[i].a = arena_new(1u << 20);
	im.cur = &im.batches[0];
	im.last_progress = time_mono_ns();
	buf_init(&im.rbuf, 0);
	buf_init(&im.xml_close, 0);
	rc = import_identity(path, im.ckname, sizeof(im.ckname), &size);
	if (rc < 0) {
		snprintf(err, errcap, "cannot read: %s", strerror(errno));
		goto out;
	}
	if (!o->dry_run) {
		im.reject_path = o->rejects ? xstrdup(o->rejects) : import_reject_path(path);
		if (!o->restart) {
			rc = import_ckpt_load(&im);
			if (rc == 0) {
				st->resumed = true;
				st->skipped = im.ck.number;
			} else if (rc != -FG_ENOTFOUND) {
				snprintf(err, errcap, "store: %s", fg_strerror(rc));
				goto out;
			}
		}
		if (!st->resumed) {
			memset(&im.ck, 0, sizeof(im.ck));
			/* a reject file of an earlier run is replaced */
			if (unlink(im.reject_path) != 0 && errno != ENOENT) {
				snprintf(err, errcap, "%s: %s", im.reject_path, strerror(errno));
				rc = -FG_EIO;
				goto out;
			}
		} else if (im.ck.reject_bytes > 0 && (rc = import_rejects_open(&im)) < 0) {
			goto out;
		}
	}
	rc = o->rm != NULL ? import_records(&im) : import_hl7(&im);
	import_progress(&im, true);
out:
	if (import_join(&im) < 0 && rc == 0)
		rc = -FG_ESTORE;
	if (im.rf != NULL && fclose(im.rf) != 0 && rc == 0) {
		snprintf(err, errcap, "%s: %s", im.reject_path, strerror(errno));
		rc = -FG_EIO;
	}
	free(im.reject_path);
	for (int i = 0; i < 2; i++) {
		free(im.batches[i].items);
		arena_free(im.batches[i].a);
	}
	buf_free(&im.rbuf);
	buf_free(&im.xml_close);
	return rc;
}
