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
#define IMPORT_CKPT_FORMAT 2
/* Bulk loads (record maps): records per load transaction, memory for puts before a run file. */
#define IMPORT_BULK_RECORDS 1000000
#define IMPORT_BULK_MEMORY  (256u << 20)

/* The checkpoint: where the next record starts and what was done up to there. In a bulk
 * load, runs is the number of run files (synced) that hold the records read since the last
 * load committed, up to offset. */
typedef struct {
	uint64_t offset, number, reject_bytes;
	uint64_t accepted, rejected, resources, unchanged;
	uint64_t runs;
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
	store_txn_t *t; /* bulk loads: the load's transaction */
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
	/* bulk load: the puts of the records read since the last load, and how many records */
	store_bulk_t *bulk;
	uint64_t bulk_records;
	bool spill_pending;     /* a run file is being written ... */
	import_ckpt_t spill_ck; /* ... with the records up to this checkpoint */
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
	buf_append_be64(b, c->runs);
}

static bool
import_ckpt_decode(slice_t v, import_ckpt_t *c)
{
	const char *p = v.ptr + 1;

	/* format 1 had no runs */
	if (!(v.len == 1 + 8 * 8 && v.ptr[0] == IMPORT_CKPT_FORMAT) &&
	    !(v.len == 1 + 7 * 8 && v.ptr[0] == 1))
		return false;
	c->runs = v.ptr[0] == 1 ? 0 : be64_read(p + 56);
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

/* Writes a rejected record (as it was in the input) and reports it. rd NULL: raw is an HL7
 * message; else raw is the record as taken when it was read (parallel mapping) or, when
 * NULL, the reader's last record. */
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
	if (rd != NULL && raw.ptr == NULL) {
		record_reader_raw(rd, &im->rbuf);
	} else if (rd != NULL) {
		buf_append(&im->rbuf, raw.ptr, raw.len); /* the record, taken when it was read */
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

			rc = ingest_record(t, it->check, it->raw, it->peer, now, NULL, &out);
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
	for (size_t i = 0; j->rc == 0 && i < j->b->nitems; i++) {
		const import_item_t *it = &j->b->items[i];

		if (it->check != NULL && it->check->dead)
			continue;
		im->st->stored++;
		im->st->stored_resources += it->check != NULL ? it->check->nres : it->nres;
	}
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

/* Bulk loads (record maps): records are mapped into the store's bulk loader, which keeps them
 * sorted in memory and in synced run files; every o->bulk_records records (and at the end) one
 * transaction makes them all in key order. The checkpoint moves with each run file written (its
 * runs count them) and with each load. */

static int
import_bulk_open(import_t *im)
{
	char name[40];
	int rc;

	if (im->bulk != NULL)
		return 0;
	/* ckname is "import:" and the file's hash */
	snprintf(name, sizeof(name), "import-%.16s", im->ckname + 7);
	rc = store_bulk_open(im->s, name,
			     im->o->bulk_memory ? im->o->bulk_memory : IMPORT_BULK_MEMORY,
			     (unsigned)im->ck.runs, &im->bulk);
	if (rc < 0)
		snprintf(im->err, im->errcap, "store: %s", store_last_error());
	return rc;
}

/* The reject file's lines are on disk before a checkpoint that counts them. */
static int
import_rejects_sync(import_t *im)
{
	if (im->rf != NULL && (fflush(im->rf) != 0 || fdatasync(fileno(im->rf)) != 0)) {
		snprintf(im->err, im->errcap, "%s: %s", im->reject_path, strerror(errno));
		return -FG_EIO;
	}
	return 0;
}

/* The records mapped so far go to a run file, written in the loader's thread while records go
 * on; once it is on disk (at the next run file), the checkpoint says so. */
static int
import_bulk_spill(import_t *im)
{
	uint64_t t0 = time_mono_ns();
	store_txn_t *t = NULL;
	buf_t v = BUF_INIT;
	unsigned runs;
	int rc = 0;

	if (im->spill_pending) {
		im->spill_pending = false;
		if ((rc = import_rejects_sync(im)) < 0)
			return rc;
		rc = store_bulk_spill_wait(im->bulk, &runs);
		if (rc == 0) {
			im->spill_ck.runs = runs;
			import_ckpt_encode(&im->spill_ck, &v);
			rc = store_txn_begin(im->s, true, &t);
		}
		if (rc == 0)
			rc = store_checkpoint_put(t, slice_cstr(im->ckname), buf_slice(&v));
		if (rc == 0)
			rc = store_txn_commit(t);
		else
			store_txn_abort(t);
		buf_free(&v);
	}
	if (rc == 0) {
		im->spill_ck = im->ck;
		rc = store_bulk_spill_start(im->bulk);
		im->spill_pending = rc == 0;
	}
	if (rc < 0)
		snprintf(im->err, im->errcap, "store: %s %s", fg_strerror(rc), store_last_error());
	im->st->store_ns += time_mono_ns() - t0;
	return rc;
}

static int
import_bulk_put_done(void *ctx, const store_res_put_t *p, const store_res_result_t *r)
{
	import_commit_t *j = ctx;

	if (r->unchanged) {
		j->unchanged++;
		return 0;
	}
	return score_hook_note(j->t, p->type, p->id, p->body) < 0 ? -FG_ESTORE : 0;
}

/* One transaction: every record read since the last load, and the checkpoint (removed when
 * done: the file is finished). */
static int
import_bulk_load(import_t *im, bool done)
{
	import_commit_t j = {.im = im};
	uint64_t t0 = time_mono_ns(), t1;
	store_bulk_stats_t bt;
	buf_t v = BUF_INIT;
	int rc;

	if ((rc = import_rejects_sync(im)) < 0)
		return rc;
	if ((rc = import_bulk_open(im)) < 0)
		return rc;
	if (im->bulk_records > 0 && im->o->on_progress != NULL) {
		im->st->loading = im->bulk_records;
		im->o->on_progress(im->o->arg, im->path, im->st, false);
		im->last_progress = time_mono_ns();
	}
	rc = store_txn_begin(im->s, true, &j.t);
	if (rc == 0)
		rc = store_bulk_load(im->bulk, j.t, time_now_ns(), import_bulk_put_done, &j);
	if (rc == 0 && done) {
		rc = store_checkpoint_del(j.t, slice_cstr(im->ckname));
	} else if (rc == 0) {
		import_ckpt_t ck = im->ck;

		ck.runs = 0;
		ck.unchanged += j.unchanged;
		import_ckpt_encode(&ck, &v);
		rc = store_checkpoint_put(j.t, slice_cstr(im->ckname), buf_slice(&v));
	}
	buf_free(&v);
	t1 = time_mono_ns();
	if (rc == 0)
		rc = store_txn_commit(j.t);
	else
		store_txn_abort(j.t);
	im->st->load_commit_ns += time_mono_ns() - t1;
	store_bulk_stats(im->bulk, &bt);
	im->st->load_wait_ns += bt.wait_ns;
	im->st->load_res_ns += bt.res_ns;
	im->st->load_idx_ns += bt.collect_wait_ns + bt.idx_ns;
	im->st->loading = 0;
	if (rc < 0) {
		snprintf(im->err, im->errcap, "store: %s %s", fg_strerror(rc), store_last_error());
		return rc;
	}
	store_bulk_free(im->bulk, true);
	im->bulk = NULL;
	im->bulk_records = 0;
	im->spill_pending = false; /* the load waited for it */
	im->ck.runs = 0;
	im->ck.unchanged += j.unchanged;
	im->st->unchanged += j.unchanged;
	im->st->stored = im->st->accepted; /* every record mapped so far is in a load now */
	im->st->stored_resources = im->st->resources;
	im->st->batches++;
	im->st->store_ns += time_mono_ns() - t0;
	im->st->load_ns += time_mono_ns() - t0;
	return 0;
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

/* Where a record is, for rejects and errors: "FILE:LINE", or "FILE:LINE (record N)" for XML. */
static void
import_where(const import_t *im, uint64_t line, uint64_t number, char *where, size_t cap)
{
	if (record_map_format(im->o->rm) == RECORD_XML)
		snprintf(where, cap, "%s:%llu (record %llu)", im->path, (unsigned long long)line,
			 (unsigned long long)number);
	else
		snprintf(where, cap, "%s:%llu", im->path, (unsigned long long)line);
}

/* A record through the record map: the resources to store (those the map stores), or why it
 * cannot be used. *r is the mapping result (dry runs show it). Thread-safe: the mapping set is
 * only read. */
static int
import_convert(const import_opts_t *o, const record_t *rec, arena_t *a, map_result_t **r,
	       ingest_res_t **res, size_t *nres, char *why, size_t whycap)
{
	char key[64];
	hl7_msg_t *m;
	size_t k = 0;
	int rc;

	*r = NULL;
	*res = NULL;
	*nres = 0;
	snprintf(key, sizeof(key), "%llu", (unsigned long long)rec->number);
	rc = record_to_msg(o->rm, rec, slice_cstr(key), a, &m);
	if (rc == 0)
		rc = map_convert(record_map_set(o->rm), m, &o->map_opt, a, r);
	if (rc == 0 && (*r == NULL || (*r)->bundle == NULL))
		rc = -FG_EINVAL;
	if (rc == 0 && !o->dry_run)
		rc = ingest_resources(a, *r, false, res, nres);
	if (rc < 0) {
		snprintf(why, whycap, "mapping failed: %s",
			 *r && (*r)->error.text[0] ? (*r)->error.text : fg_strerror(rc));
		*nres = 0;
		return rc;
	}
	for (size_t i = 0; i < *nres; i++)
		if (record_map_stores(o->rm, (*res)[i].type))
			(*res)[k++] = (*res)[i];
	*nres = k;
	return 0;
}

/* A converted record's resources into the bulk loader (which copies them). */
static int
import_bulk_add(import_t *im, const ingest_res_t *res, size_t nres, const char *where)
{
	for (size_t i = 0; i < nres; i++) {
		store_res_put_t p = {.type = res[i].type,
				     .id = res[i].id,
				     .body = res[i].body,
				     .entries = res[i].entries,
				     .n_entries = res[i].nentries};
		int rc = store_bulk_add(im->bulk, &p);

		if (rc < 0) {
			snprintf(im->err, im->errcap, "%s: %s", where, store_last_error());
			return rc;
		}
	}
	im->bulk_records++;
	return 0;
}

static void
import_accepted(import_t *im, size_t nres)
{
	im->st->accepted++;
	im->ck.accepted++;
	im->st->resources += nres;
	im->ck.resources += nres;
}

/* One record of a record map: converted into the batch (or the bulk loader), or rejected. */
static int
import_one_record(import_t *im, record_reader_t *rd, const record_t *rec)
{
	const import_opts_t *o = im->o;
	char where[512], why[300];
	map_result_t *r;
	ingest_res_t *res;
	size_t nres;
	uint64_t t0 = time_mono_ns();
	int rc;

	/* bulk: the loader copied the previous record's resources */
	if (im->bulk != NULL)
		arena_reset(im->cur->a);
	import_where(im, rec->line, rec->number, where, sizeof(where));
	if (rec->error != NULL)
		return import_reject(im, rd, SLICE_NULL, where, rec->error);
	rc = import_convert(o, rec, im->cur->a, &r, &res, &nres, why, sizeof(why));
	im->st->warnings += r ? r->nwarnings : 0;
	im->st->map_ns += time_mono_ns() - t0;
	if (rc < 0)
		return import_reject(im, rd, SLICE_NULL, where, why);
	if (o->dry_run) {
		if (o->on_result != NULL)
			o->on_result(o->arg, where, r);
		im->st->accepted++;
		return 0;
	}
	if (im->bulk != NULL) {
		if ((rc = import_bulk_add(im, res, nres, where)) < 0)
			return rc;
	} else {
		import_item_t *it = import_item_new(im);

		it->res = res;
		it->nres = nres;
	}
	import_accepted(im, nres);
	return 0;
}

/* After each record of a bulk import: a run file when the loader's memory is full, a load
 * when enough records wait. */
static int
import_bulk_step(import_t *im, uint64_t bulk_max)
{
	int rc = 0;

	if (store_bulk_memory_full(im->bulk))
		rc = import_bulk_spill(im);
	if (rc == 0 && im->bulk_records >= bulk_max)
		rc = import_bulk_load(im, false);
	if (rc == 0 && im->bulk == NULL)
		rc = import_bulk_open(im);
	return rc;
}

/* Bulk imports of text files map on several threads: the reader (this thread) copies records
 * into chunks, workers convert whole chunks, and this thread takes the chunks back in order
 * (rejects, the loader, checkpoints: all in input order, as with one thread). */
#define IMPORT_CHUNK_RECORDS 256
#define IMPORT_CHUNKS        8
#define IMPORT_MAX_WORKERS   8

typedef struct {
	uint64_t number, line, next_offset;
	record_t rec;      /* fields copied into the chunk's arena */
	slice_t raw;       /* the record as in the input (for the reject file) */
	const char *error; /* the reader's reason, or the mapping's (arena), NULL: converted */
	ingest_res_t *res;
	size_t nres;
	size_t warnings;
} import_rec_t;

typedef enum { CHUNK_FREE, CHUNK_FILLED, CHUNK_MAPPING, CHUNK_MAPPED } import_chunk_state_t;

typedef struct {
	arena_t *a;
	import_rec_t recs[IMPORT_CHUNK_RECORDS];
	size_t n;
	uint64_t offset; /* reader offset after its last record (progress) */
	uint64_t map_ns;
	import_chunk_state_t state;
} import_chunk_t;

typedef struct {
	import_t *im;
	import_chunk_t chunks[IMPORT_CHUNKS];
	size_t next_map; /* the next chunk a worker takes, in ring order */
	pthread_mutex_t mu;
	pthread_cond_t filled, mapped;
	bool stop;
} import_pool_t;

static void
import_chunk_map(const import_opts_t *o, import_chunk_t *c)
{
	uint64_t t0 = time_mono_ns();

	for (size_t i = 0; i < c->n; i++) {
		import_rec_t *ir = &c->recs[i];
		char why[300];
		map_result_t *r;

		if (ir->error != NULL)
			continue;
		if (import_convert(o, &ir->rec, c->a, &r, &ir->res, &ir->nres, why, sizeof(why)) <
		    0) {
			size_t len = strlen(why);
			char *e = arena_alloc(c->a, len + 1);

			memcpy(e, why, len + 1);
			ir->error = e;
		}
		ir->warnings = r ? r->nwarnings : 0;
	}
	c->map_ns = time_mono_ns() - t0;
}

static void *
import_worker(void *arg)
{
	import_pool_t *pl = arg;

	pthread_mutex_lock(&pl->mu);
	for (;;) {
		import_chunk_t *c = &pl->chunks[pl->next_map % IMPORT_CHUNKS];

		if (c->state == CHUNK_FILLED) {
			c->state = CHUNK_MAPPING;
			pl->next_map++;
			pthread_mutex_unlock(&pl->mu);
			import_chunk_map(pl->im->o, c);
			pthread_mutex_lock(&pl->mu);
			c->state = CHUNK_MAPPED;
			pthread_cond_broadcast(&pl->mapped);
			continue;
		}
		if (pl->stop)
			break;
		pthread_cond_wait(&pl->filled, &pl->mu);
	}
	pthread_mutex_unlock(&pl->mu);
	return NULL;
}

/* Copies the record the reader just read into c (its bytes are the reader's until the next
 * read). */
static void
import_chunk_add(import_chunk_t *c, record_reader_t *rd, const record_t *rec)
{
	import_rec_t *ir = &c->recs[c->n++];
	slice_t *fields = arena_alloc(c->a, (rec->nfields ? rec->nfields : 1) * sizeof(*fields));
	buf_t raw = BUF_INIT;

	memset(ir, 0, sizeof(*ir));
	ir->number = rec->number;
	ir->line = rec->line;
	ir->next_offset = rec->next_offset;
	for (size_t i = 0; i < rec->nfields; i++) {
		char *v = arena_alloc(c->a, rec->fields[i].len + 1);

		if (rec->fields[i].len > 0)
			memcpy(v, rec->fields[i].ptr, rec->fields[i].len);
		v[rec->fields[i].len] = '\0';
		fields[i] = (slice_t){v, rec->fields[i].len};
	}
	ir->rec = *rec;
	ir->rec.fields = fields;
	if (rec->error != NULL) {
		size_t len = strlen(rec->error);
		char *e = arena_alloc(c->a, len + 1);

		memcpy(e, rec->error, len + 1);
		ir->error = e;
		ir->rec.error = e;
	}
	record_reader_raw(rd, &raw);
	if (raw.len > 0) {
		char *p = arena_alloc(c->a, raw.len);

		memcpy(p, raw.data, raw.len);
		ir->raw = (slice_t){p, raw.len};
	}
	buf_free(&raw);
}

/* Takes a mapped chunk back: each record into the loader or the reject file, in order. */
static int
import_chunk_take(import_t *im, record_reader_t *rd, import_chunk_t *c, uint64_t bulk_max)
{
	int rc = 0;

	im->st->map_ns += c->map_ns;
	for (size_t i = 0; rc == 0 && i < c->n; i++) {
		import_rec_t *ir = &c->recs[i];
		char where[512];

		import_where(im, ir->line, ir->number, where, sizeof(where));
		im->st->warnings += ir->warnings;
		if (ir->error != NULL) {
			rc = import_reject(im, rd, ir->raw, where, ir->error);
		} else if ((rc = import_bulk_add(im, ir->res, ir->nres, where)) == 0) {
			import_accepted(im, ir->nres);
		}
		if (rc < 0)
			break;
		im->ck.offset = ir->next_offset;
		im->ck.number = ir->number;
		rc = import_bulk_step(im, bulk_max);
	}
	im->st->offset = c->offset;
	c->n = 0;
	arena_reset(c->a);
	c->state = CHUNK_FREE;
	import_progress(im, false);
	return rc;
}

/* The reading loop of a bulk import of a text file with workers; returns as import_records'
 * loop: rc < 0 on an error, and *n the reader's last result. */
static int
import_records_parallel(import_t *im, record_reader_t *rd, unsigned workers, uint64_t bulk_max,
			int *n)
{
	import_pool_t *pl = xcalloc(1, sizeof(*pl));
	pthread_t th[IMPORT_MAX_WORKERS];
	unsigned started = 0;
	size_t fill = 0, take = 0; /* ring positions: the chunk being filled, the next to take */
	record_t rec;
	int rc = 0;

	pl->im = im;
	pthread_mutex_init(&pl->mu, NULL);
	pthread_cond_init(&pl->filled, NULL);
	pthread_cond_init(&pl->mapped, NULL);
	for (size_t i = 0; i < IMPORT_CHUNKS; i++)
		pl->chunks[i].a = arena_new(1u << 20);
	for (; started < workers; started++)
		if (pthread_create(&th[started], NULL, import_worker, pl) != 0)
			break;
	if (started == 0) {
		snprintf(im->err, im->errcap, "cannot start a mapping thread");
		rc = -FG_EIO;
	}
	for (bool eof = false; rc == 0 && !(eof && take == fill);) {
		import_chunk_t *c = &pl->chunks[fill % IMPORT_CHUNKS];
		import_chunk_t *t = &pl->chunks[take % IMPORT_CHUNKS];
		bool ring_full = fill - take == IMPORT_CHUNKS;

		/* the oldest chunk first when it is ready, or when nothing else can go on */
		pthread_mutex_lock(&pl->mu);
		while (take < fill && t->state != CHUNK_MAPPED && (ring_full || eof))
			pthread_cond_wait(&pl->mapped, &pl->mu);
		bool ready = take < fill && t->state == CHUNK_MAPPED;
		pthread_mutex_unlock(&pl->mu);
		if (ready) {
			rc = import_chunk_take(im, rd, t, bulk_max);
			take++;
			continue;
		}
		/* fill the next chunk */
		while (c->n < IMPORT_CHUNK_RECORDS) {
			uint64_t t0 = time_mono_ns();

			*n = record_reader_next(rd, &rec);
			im->st->read_ns += time_mono_ns() - t0;
			if (*n <= 0) {
				eof = true;
				break;
			}
			im->st->records++;
			import_chunk_add(c, rd, &rec);
		}
		c->offset = record_reader_offset(rd);
		if (c->n > 0) {
			pthread_mutex_lock(&pl->mu);
			c->state = CHUNK_FILLED;
			pthread_cond_signal(&pl->filled);
			pthread_mutex_unlock(&pl->mu);
			fill++;
		}
	}
	pthread_mutex_lock(&pl->mu);
	pl->stop = true;
	pthread_cond_broadcast(&pl->filled);
	pthread_mutex_unlock(&pl->mu);
	for (unsigned i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	for (size_t i = 0; i < IMPORT_CHUNKS; i++)
		arena_free(pl->chunks[i].a);
	pthread_mutex_destroy(&pl->mu);
	pthread_cond_destroy(&pl->filled);
	pthread_cond_destroy(&pl->mapped);
	free(pl);
	return rc;
}

static int
import_records(import_t *im)
{
	const import_opts_t *o = im->o;
	size_t batch = o->batch ? o->batch : IMPORT_BATCH_RECORDS;
	uint64_t bulk_max = o->bulk_records ? o->bulk_records : IMPORT_BULK_RECORDS;
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	unsigned workers = o->threads ? o->threads
				      : (unsigned)(cpus < 1                    ? 1
						   : cpus > IMPORT_MAX_WORKERS ? IMPORT_MAX_WORKERS
									       : cpus);
	record_reader_t *rd;
	record_t rec;
	int rc, n = 0;

	rc = record_reader_open(o->rm, im->path, im->ck.offset, im->ck.number, &rd, im->err,
				im->errcap);
	if (rc < 0)
		return rc;
	im->st->size = record_reader_size(rd);
	if (o->bulk && !o->dry_run && (rc = import_bulk_open(im)) < 0) {
		record_reader_free(rd);
		return rc;
	}
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
	if (im->bulk != NULL && record_map_format(o->rm) != RECORD_XML && workers > 1) {
		rc = import_records_parallel(im, rd, workers, bulk_max, &n);
	} else {
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
			if (im->bulk != NULL) {
				if ((rc = import_bulk_step(im, bulk_max)) < 0)
					break;
			} else if (im->cur->nitems >= batch ||
				   (im->cur->nitems == 0 && im->st->records % batch == 0)) {
				if ((rc = import_flush(im, false, true)) < 0)
					break;
			}
			import_progress(im, false);
		}
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
	if (rc == 0 && im->bulk != NULL) {
		rc = import_bulk_load(im, true);
	} else if (rc == 0) {
		rc = import_flush(im, true, false);
	} else if (rc != -FG_EFULL) {
		/* keep what was read before the error (its message stays the one reported) */
		char first[600];

		snprintf(first, sizeof(first), "%s", im->err);
		if (im->bulk != NULL && rc != -FG_EIO && im->bulk_records > 0)
			(void)import_bulk_load(im, false);
		else if (im->bulk == NULL && (rc != -FG_EIO || im->cur->nitems > 0))
			(void)import_flush(im, false, false);
		snprintf(im->err, im->errcap, "%s", first);
	}
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
	store_bulk_free(im.bulk, false); /* an error: its runs stay for the resume */
	free(im.reject_path);
	for (int i = 0; i < 2; i++) {
		free(im.batches[i].items);
		arena_free(im.batches[i].a);
	}
	buf_free(&im.rbuf);
	buf_free(&im.xml_close);
	return rc;
}
