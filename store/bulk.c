/* Bulk loads: many resource puts collected outside any transaction, sorted (in memory, and in
 * run files on disk when they outgrow memory), then made in one write transaction in key order.
 *
 * Why: a resource put writes its version, res record and reverse index list under a hash-like
 * id and ~17 search index entries under spread-out values. Made in arrival order, a transaction
 * of many puts descends every B-tree at a random key per write (cache and TLB misses on a
 * multi-GiB map) and the next transaction rewrites most of the same leaves again. Made in key
 * order in one transaction, each B-tree is walked once from left to right and each leaf is
 * written once (BENCHMARKS.md, "Legacy import").
 *
 * The load has two passes in the one transaction. The resource pass makes each put in (type,
 * id) order (puts of one resource in the order they were added) through store_res_put with
 * t->idx_deferred set: versions, res, history, idxrev and counts as usual, index entries that
 * go away removed, entries that come left out. The index pass then adds the entries of every put
 * that wrote a version and was not followed by a later put of the same resource in this load,
 * in idx key order; an entry already there (the part of an update that did not change) is a
 * no-op. So the store ends exactly as with store_res_put one by one, except that the history
 * entries of one load are in (type, id) order rather than in the order of the puts.
 *
 * Where the work is done: the puts are sorted, and written as run files, in a spill thread
 * while the caller adds more into a second memory part. Index entries are not sorted before the
 * load: they are in the put records (run files do not repeat them), and while the load's thread
 * makes the resource pass's LMDB writes, an entry thread collects every put's entries by type
 * and search parameter and sorts each group once for the whole load (cheaper than sorting each
 * run and merging, and it keeps the other core busy during the pass rather than before the
 * load). The merge of the puts from the runs runs in a feed thread.
 *
 * Run file (all numbers big-endian; keys as the bytes LMDB will compare):
 *   header: magic "FGBULK2\n", be64 number of puts, be64 number of index entries in them,
 *           be64 first ordinal, be64 bytes of puts (the rest of the file)
 *   puts, sorted by res key then ordinal: be32 record length (all of it), be64 ordinal,
 *           be16 key length, res key (lpstr type, id), be32 body length, body,
 *           be16 number of entries, then lpstr code, lpstr value per entry, in (code, value)
 *           order
 */
#include "config.h"

#include <sys/mman.h>
#include <sys/stat.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/buf.h"
#include "lib/err.h"
#include "lib/hash.h"
#include "lib/timeutil.h"
#include "lib/xalloc.h"
#include "store/store.h"
#include "store/store_int.h"

#define BULK_MAGIC       "FGBULK2\n"
#define BULK_HEAD        (8 + 4 * 8)
#define BULK_DEFAULT_MEM (256u << 20)
#define BULK_MAX_RUNS    4096
#define BULK_MAX_ENTRIES 65535
#define BULK_PREFETCH    16 /* entries ahead whose records the copy into blocks reads early */

/* An index entry of a load, for sorting within its group (same type and code): the first 16
 * bytes of its value and the first 8 of its id as big-endian numbers, zero-padded (padding
 * keeps the order of the full bytes; ties are compared in full), its value's length, and where
 * it is: its put record, and its value (be16 length, bytes) at voff in that record. (Ids are
 * often hex: 4 bytes of them would leave a value shared by many, a gender, full of ties.) */
typedef struct {
	uint64_t a, b, c;
	const unsigned char *put;
	uint32_t voff, vlen;
} bulk_ent_t;

/* A type and search parameter, and the entries of a load under it. */
typedef struct {
	unsigned char *prefix; /* lpstr type, lpstr code: how its idx keys begin */
	size_t plen;
	bulk_ent_t *ents;
	size_t n, cap;
} bulk_group_t;

typedef struct {
	size_t *offs, n, cap;
} bulk_offs_t;

/* Puts in memory: records as in a run file, and where each starts. Two of them: one is filled
 * while the other is written as a run file by the spill thread. */
typedef struct {
	buf_t pbytes;
	bulk_offs_t puts;
	uint64_t nents; /* index entries in the puts */
	uint64_t first; /* ordinal of its first put */
} bulk_mem_t;

typedef struct {
	const unsigned char *rec;
} bulk_put_t;

/* A sorted sequence of puts: a run file (mapped) or the memory part (a sorted array). */
typedef struct {
	const unsigned char *p, *end; /* file: next record, end of the puts */
	const bulk_put_t *puts;       /* memory: sorted puts */
	size_t i, n;                  /* memory: next index, count */
	const unsigned char *cur;     /* the current record, NULL at the end */
} bulk_src_t;

typedef struct {
	void *map;
	size_t len;
	uint64_t nputs, nents, first, put_bytes;
} bulk_run_t;

struct store_bulk {
	store_t *s;
	char *dir;
	size_t mem_max;
	uint64_t next_ordinal, first_ordinal; /* ordinals of this load: [first, next) */
	/* The groups of a load's entries (made and filled by the entry thread; the index pass
	 * reads them once it hands out blocks), found by their prefix's hash in slots: index + 1,
	 * 0 empty; a power of two, at most half full. */
	bulk_group_t *groups;
	size_t ngroups, gcap;
	uint32_t *slots;
	size_t nslots;
	bulk_mem_t mem[2];
	bulk_mem_t *cur; /* being filled */
	/* the spill in the background: its thread, memory part, run and result */
	pthread_t spiller;
	bool spilling, spill_thread;
	bulk_mem_t *spill_mem;
	bulk_run_t spill_run;
	int spill_rc;
	char spill_err[512];
	/* the runs on disk */
	bulk_run_t *runs;
	unsigned nruns;
	uint64_t run_bytes; /* bytes of the run files */
	store_bulk_stats_t stats;
	/* store_bulk_track: the last put of each resource in mem[0], as its record's offset + 1
	 * (0: empty slot), by the hash of its res key; a power of two, at most half full */
	bool track;
	size_t *last, nlast, last_used;
};

static int
bulk_errno(const char *what, const char *path)
{
	int e = errno;

	store_error_set("bulk load: %s %s: %s", what, path, strerror(e));
	return e == ENOSPC ? -FG_EFULL : -FG_EIO;
}

static char *
bulk_run_path(const store_bulk_t *b, unsigned i)
{
	return xasprintf("%s/run-%06u", b->dir, i);
}

static int
bulk_cmp_bytes(const unsigned char *a, size_t alen, const unsigned char *b, size_t blen)
{
	size_t n = alen < blen ? alen : blen;
	int r = n > 0 ? memcmp(a, b, n) : 0;

	return r != 0 ? r : (alen > blen) - (alen < blen);
}

/* Decoding a put record at p. */
typedef struct {
	uint64_t ordinal;
	const unsigned char *key;
	size_t klen;
	slice_t body;
	const unsigned char *entries; /* lpstr code, lpstr value, ... */
	size_t nentries;
	size_t len;
} bulk_put_rec_t;

static void
bulk_put_decode(const unsigned char *p, bulk_put_rec_t *r)
{
	const unsigned char *q = p + 12;

	r->len = be32_read(p);
	r->ordinal = be64_read(p + 4);
	r->klen = be16_read(q);
	r->key = q + 2;
	q += 2 + r->klen;
	r->body = (slice_t){(const char *)q + 4, be32_read(q)};
	q += 4 + r->body.len;
	r->nentries = be16_read(q);
	r->entries = q + 2;
}

static int
bulk_put_cmp(const unsigned char *x, const unsigned char *y)
{
	size_t xk = be16_read(x + 12), yk = be16_read(y + 12);
	int r = bulk_cmp_bytes(x + 14, xk, y + 14, yk);
	uint64_t xo, yo;

	if (r != 0)
		return r;
	xo = be64_read(x + 4);
	yo = be64_read(y + 4);
	return (xo > yo) - (xo < yo);
}

static int
bulk_put_qcmp(const void *a, const void *b)
{
	return bulk_put_cmp(((const bulk_put_t *)a)->rec, ((const bulk_put_t *)b)->rec);
}

static uint64_t
bulk_pad8(const unsigned char *p, size_t len)
{
	unsigned char pad[8] = {0};

	memcpy(pad, p, len < 8 ? len : 8);
	return be64_read(pad);
}

/* The id of a put record (its key is lpstr type, id). */
static slice_t
bulk_put_id(const unsigned char *put)
{
	size_t klen = be16_read(put + 12), tlen = be16_read(put + 14);

	return (slice_t){(const char *)put + 16 + tlen, klen - 2 - tlen};
}

/* Entries of one group compare as LMDB orders them in a DUPSORT database: value (the rest of
 * the key), then data (the id), bytewise, shorter first on a tie; then ordinal. */
static int
bulk_ent_cmp(const bulk_ent_t *x, const bulk_ent_t *y)
{
	int r = bulk_cmp_bytes(x->put + x->voff + 2, x->vlen, y->put + y->voff + 2, y->vlen);
	slice_t xi, yi;
	uint64_t xo, yo;

	if (r != 0)
		return r;
	xi = bulk_put_id(x->put);
	yi = bulk_put_id(y->put);
	r = bulk_cmp_bytes((const unsigned char *)xi.ptr, xi.len, (const unsigned char *)yi.ptr,
			   yi.len);
	if (r != 0)
		return r;
	xo = be64_read(x->put + 4);
	yo = be64_read(y->put + 4);
	return (xo > yo) - (xo < yo);
}

/* The order of entries whose values share their first skip bytes (arg), with a and b made of
 * the next 16 (bulk_ents_msd). */
static int
bulk_ent_qcmp_r(const void *a, const void *b, void *arg)
{
	const bulk_ent_t *x = a, *y = b;
	uint32_t skip = *(const uint32_t *)arg, xl = x->vlen - skip, yl = y->vlen - skip;

	if (x->a != y->a)
		return x->a < y->a ? -1 : 1;
	if (x->b != y->b)
		return x->b < y->b ? -1 : 1;
	if (xl <= 16 && yl <= 16) {
		/* the rest of the values is all in a and b: equal up to the shorter one's length */
		if (xl != yl)
			return xl < yl ? -1 : 1;
		if (x->c != y->c)
			return x->c < y->c ? -1 : 1;
	}
	return bulk_ent_cmp(x, y);
}

static int
bulk_ent_qcmp(const void *a, const void *b)
{
	uint32_t skip = 0;

	return bulk_ent_qcmp_r(a, b, &skip);
}

/* Byte k of an entry's radix key, most significant first: a, b (the value's first 16 bytes),
 * the value's length up to 16 (17 beyond), c (the first 8 bytes of the id, when the whole value
 * is in a and b, else 0). Ordered by that key, entries are in bulk_ent_qcmp's order up to ties,
 * which it then settles: with equal a and b, a value of up to 16 bytes is a prefix of a longer
 * one (shorter first), two such values of one length are equal (then the id decides), and two
 * longer ones are compared in full. skip: a bucket whose entries share their value's first skip
 * bytes has a and b made of the next 16 (bulk_ents_rekey), and the length counts from there. */
#define BULK_RADIX_BYTES 25

static unsigned
bulk_ent_byte(const bulk_ent_t *e, unsigned k, uint32_t skip)
{
	uint32_t vlen = e->vlen - skip;

	if (k < 8)
		return (unsigned)(e->a >> (56 - 8 * k)) & 0xff;
	if (k < 16)
		return (unsigned)(e->b >> (56 - 8 * (k - 8))) & 0xff;
	if (k == 16)
		return vlen <= 16 ? vlen : 17;
	return vlen <= 16 ? (unsigned)(e->c >> (56 - 8 * (k - 17))) & 0xff : 0;
}

static bool
bulk_ent_radix_eq(const bulk_ent_t *x, const bulk_ent_t *y)
{
	return x->a == y->a && x->b == y->b &&
	       (x->vlen <= 16 ? x->vlen : 17) == (y->vlen <= 16 ? y->vlen : 17) &&
	       (x->vlen > 16 || x->c == y->c);
}

/* a and b of n entries from their value's bytes at skip on. */
static void
bulk_ents_rekey(bulk_ent_t *e, size_t n, uint32_t skip)
{
	for (size_t i = 0; i < n; i++) {
		const unsigned char *v = e[i].put + e[i].voff + 2 + skip;
		uint32_t len = e[i].vlen - skip;

		e[i].a = bulk_pad8(v, len);
		e[i].b = len > 8 ? bulk_pad8(v + 8, len - 8) : 0;
	}
}

/* Whether n entries (of a bucket at skip) are in order already, as they often are: the
 * entries of one resource come in the order of its puts and the radix passes keep that order,
 * while qsort would compare their ids and values in full n log n times (a Practitioner or a
 * Location of a feed can be put hundreds of times between two loads). */
static bool
bulk_ents_in_order(const bulk_ent_t *e, size_t n, uint32_t skip)
{
	for (size_t i = 1; i < n; i++)
		if (bulk_ent_qcmp_r(&e[i - 1], &e[i], &skip) > 0)
			return false;
	return true;
}

/* Sorts n entries from radix byte k on: a most-significant-byte radix sort (a byte every entry
 * shares costs a counting pass and no move; each bucket goes on with the next byte), small
 * buckets and entries equal in all 25 bytes by qsort with the full comparison. Values with much
 * in common (gender, phone numbers that share their first digits, every _lastUpdated of a load)
 * are split by the id's first bytes rather than compared; varied ones (ids, names) take two or
 * three passes. A large bucket of values longer than the 16 bytes they share (a reference that
 * thousands of resources make, a system URL) goes on with the next 16 bytes of its values
 * rather than to qsort, which would compare them in full each time; its a and b are the shared
 * ones again afterwards. tmp: room for n entries. */
static void
bulk_ents_msd(bulk_ent_t *e, bulk_ent_t *tmp, size_t n, unsigned k, uint32_t skip)
{
	size_t count[256], pos[256];

	for (; n >= 64 && k < BULK_RADIX_BYTES; k++) {
		size_t at = 0;
		bool one = false;

		memset(count, 0, sizeof(count));
		for (size_t i = 0; i < n; i++)
			count[bulk_ent_byte(&e[i], k, skip)]++;
		for (unsigned v = 0; v < 256; v++) {
			one |= count[v] == n;
			pos[v] = at;
			at += count[v];
		}
		if (one)
			continue;
		for (size_t i = 0; i < n; i++)
			tmp[pos[bulk_ent_byte(&e[i], k, skip)]++] = e[i];
		memcpy(e, tmp, n * sizeof(*e));
		at = 0;
		for (unsigned v = 0; v < 256; v++) {
			if (count[v] > 1)
				bulk_ents_msd(e + at, tmp + at, count[v], k + 1, skip);
			at += count[v];
		}
		return;
	}
	if (n >= 64 && e[0].vlen - skip > 16) {
		/* all 25 bytes tie: each value has more than the 16 bytes they share */
		uint64_t a = e[0].a, b = e[0].b;

		bulk_ents_rekey(e, n, skip + 16);
		bulk_ents_msd(e, tmp, n, 0, skip + 16);
		for (size_t i = 0; i < n; i++) {
			e[i].a = a;
			e[i].b = b;
		}
		return;
	}
	if (n > 1 && !bulk_ents_in_order(e, n, skip))
		qsort_r(e, n, sizeof(*e), bulk_ent_qcmp_r, &skip);
}

static void
bulk_ents_sort(bulk_ent_t *e, size_t n)
{
	bulk_ent_t *tmp;

	if (n < 1024) {
		qsort(e, n, sizeof(*e), bulk_ent_qcmp);
		return;
	}
	tmp = xreallocarray(NULL, n, sizeof(*tmp));
	bulk_ents_msd(e, tmp, n, 0, 0);
	free(tmp);
}

/* Group indexes by their prefix; arg: the groups. */
static int
bulk_group_qcmp(const void *a, const void *b, void *arg)
{
	const bulk_group_t *groups = arg;
	const bulk_group_t *x = &groups[*(const size_t *)a], *y = &groups[*(const size_t *)b];

	return bulk_cmp_bytes(x->prefix, x->plen, y->prefix, y->plen);
}

static uint32_t
bulk_hash(const unsigned char *p, size_t len)
{
	uint32_t h = 2166136261u;

	for (size_t i = 0; i < len; i++)
		h = (h ^ p[i]) * 16777619u;
	return h;
}

/* The group of prefix (lpstr type, lpstr code), added when new. */
static bulk_group_t *
bulk_group(store_bulk_t *b, const unsigned char *prefix, size_t plen)
{
	size_t mask, slot;
	bulk_group_t *g;

	if (2 * (b->ngroups + 1) > b->nslots) {
		size_t n = b->nslots ? 2 * b->nslots : 256;

		free(b->slots);
		b->slots = xcalloc(n, sizeof(*b->slots));
		b->nslots = n;
		for (size_t i = 0; i < b->ngroups; i++) {
			g = &b->groups[i];
			for (slot = bulk_hash(g->prefix, g->plen) & (n - 1); b->slots[slot] != 0;
			     slot = (slot + 1) & (n - 1))
				;
			b->slots[slot] = (uint32_t)(i + 1);
		}
	}
	mask = b->nslots - 1;
	for (slot = bulk_hash(prefix, plen) & mask; b->slots[slot] != 0; slot = (slot + 1) & mask) {
		g = &b->groups[b->slots[slot] - 1];
		if (g->plen == plen && memcmp(g->prefix, prefix, plen) == 0)
			return g;
	}
	if (b->ngroups == b->gcap) {
		b->gcap = b->gcap ? 2 * b->gcap : 64;
		b->groups = xreallocarray(b->groups, b->gcap, sizeof(*b->groups));
	}
	g = &b->groups[b->ngroups++];
	*g = (bulk_group_t){.prefix = (unsigned char *)xmemdup0(prefix, plen), .plen = plen};
	b->slots[slot] = (uint32_t)b->ngroups;
	return g;
}

/* Whether a run file read back is whole: its records lie within the file, as many as its
 * header says, with as many entries, and fill it; each entry's idx key fits LMDB's limit (a run
 * is written under a temporary name and renamed once synced, so only damage can make it
 * otherwise; the load trusts the lengths). */
static bool
bulk_run_whole(const bulk_run_t *r)
{
	const unsigned char *p = (const unsigned char *)r->map + BULK_HEAD;
	const unsigned char *end = p + r->put_bytes;
	uint64_t n, nents = 0;

	for (n = 0; n < r->nputs && end - p >= 16; n++) {
		size_t len = be32_read(p), off = 14, klen = be16_read(p + 12), tlen;

		if (len < off || len > (size_t)(end - p) || klen < 2 || off + klen > len)
			return false;
		tlen = be16_read(p + 14);
		if (tlen + 2 > klen)
			return false;
		/* key, body, entries: each within the record */
		off += klen;
		if (off + 4 > len || (off += 4 + be32_read(p + off)) + 2 > len)
			return false;
		size_t nent = be16_read(p + off);

		off += 2;
		nents += nent;
		for (size_t k = 0; k < nent; k++) {
			size_t cl, vl;

			if (off + 2 > len || off + 2 + (cl = be16_read(p + off)) + 2 > len)
				return false;
			off += 2 + cl;
			vl = be16_read(p + off);
			off += 2 + vl;
			if (off > len || 4 + tlen + cl + vl > STORE_KEY_MAX)
				return false;
		}
		if (off != len)
			return false;
		p += len;
	}
	return n == r->nputs && nents == r->nents && p == end;
}

int
store_bulk_open(store_t *s, const char *name, size_t mem_bytes, unsigned resume_runs,
		store_bulk_t **out)
{
	store_bulk_t *b;
	DIR *d;
	struct dirent *de;
	int rc = 0;

	*out = NULL;
	for (const char *c = name; *c; c++)
		if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '-'))
			name = "";
	if (name[0] == '\0') {
		store_error_set("bulk load: bad name");
		return -FG_EINVAL;
	}
	if (resume_runs > BULK_MAX_RUNS) {
		store_error_set("bulk load: %u runs to resume: too many", resume_runs);
		return -FG_EINVAL;
	}
	b = xcalloc(1, sizeof(*b));
	b->s = s;
	b->dir = xasprintf("%s/bulk-%s", s->dir, name);
	b->mem_max = mem_bytes ? mem_bytes : BULK_DEFAULT_MEM;
	for (int i = 0; i < 2; i++)
		buf_init(&b->mem[i].pbytes, 0);
	b->cur = &b->mem[0];
	if (mkdir(b->dir, 0700) != 0 && errno != EEXIST) {
		rc = bulk_errno("mkdir", b->dir);
		goto fail;
	}
	/* Runs beyond those the caller's checkpoint counts were written after it: not ours. */
	if ((d = opendir(b->dir)) == NULL) {
		rc = bulk_errno("open", b->dir);
		goto fail;
	}
	while ((de = readdir(d)) != NULL) {
		unsigned i;
		char tail;

		if (sscanf(de->d_name, "run-%u%c", &i, &tail) == 1 && i >= resume_runs) {
			char *p = xasprintf("%s/%s", b->dir, de->d_name);

			if (unlink(p) != 0 && errno != ENOENT)
				rc = bulk_errno("remove", p);
			free(p);
		}
	}
	closedir(d);
	if (rc < 0)
		goto fail;
	b->runs = xcalloc(resume_runs ? resume_runs : 1, sizeof(*b->runs));
	for (unsigned i = 0; i < resume_runs; i++) {
		char *p = bulk_run_path(b, i);
		int fd = open(p, O_RDONLY | O_CLOEXEC);
		struct stat st;
		bulk_run_t *r = &b->runs[i];
		const unsigned char *h;

		if (fd < 0 || fstat(fd, &st) != 0) {
			rc = bulk_errno("open", p);
		} else if (st.st_size < BULK_HEAD ||
			   (r->map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd,
					  0)) == MAP_FAILED) {
			r->map = NULL;
			store_error_set("bulk load: %s is not a run file", p);
			rc = -FG_EINVAL;
		} else {
			r->len = (size_t)st.st_size;
			h = r->map;
			r->nputs = be64_read(h + 8);
			r->nents = be64_read(h + 16);
			r->first = be64_read(h + 24);
			r->put_bytes = be64_read(h + 32);
			if (memcmp(h, BULK_MAGIC, 8) != 0 || r->put_bytes > r->len - BULK_HEAD ||
			    r->first != b->next_ordinal || !bulk_run_whole(r)) {
				store_error_set("bulk load: %s is not the run expected", p);
				rc = -FG_EINVAL;
			}
			b->next_ordinal = r->first + r->nputs;
			b->run_bytes += r->len;
		}
		if (fd >= 0)
			close(fd);
		free(p);
		b->nruns = i + 1;
		if (rc < 0)
			goto fail;
	}
	*out = b;
	return 0;
fail:
	store_bulk_free(b, false);
	return rc;
}

static int
bulk_entry_cmp(const store_idx_entry_t *x, const store_idx_entry_t *y)
{
	int r = bulk_cmp_bytes((const unsigned char *)x->code.ptr, x->code.len,
			       (const unsigned char *)y->code.ptr, y->code.len);

	return r != 0 ? r
		      : bulk_cmp_bytes((const unsigned char *)x->value.ptr, x->value.len,
				       (const unsigned char *)y->value.ptr, y->value.len);
}

static void
bulk_offs_push(bulk_offs_t *o, size_t off)
{
	if (o->n == o->cap) {
		o->cap = o->cap ? 2 * o->cap : 4096;
		o->offs = xreallocarray(o->offs, o->cap, sizeof(*o->offs));
	}
	o->offs[o->n++] = off;
}

/* Checks a put for a put record: what store_res_put would refuse, preconditions, too many
 * entries. Returns 0 or -FG_EINVAL/-FG_ETOOBIG; *len: the record's bytes. */
static int
bulk_put_check(const store_t *s, const store_res_put_t *p, const char *op, size_t *len)
{
	int rc;

	if ((rc = store_res_put_valid(s, p, op)) < 0)
		return rc;
	if (p->if_match != 0 || p->create_only || p->n_entries > BULK_MAX_ENTRIES) {
		store_error_set("%s: preconditions or more than %d index entries", op,
				BULK_MAX_ENTRIES);
		return -FG_EINVAL;
	}
	*len = 12 + 2 + 2 + p->type.len + p->id.len + 4 + p->body.len + 2;
	for (size_t i = 0; i < p->n_entries; i++)
		*len += 4 + p->entries[i].code.len + p->entries[i].value.len;
	if (*len > UINT32_MAX) {
		store_error_set("%s: resource too large", op);
		return -FG_ETOOBIG;
	}
	return 0;
}

/* Writes p's put record (len bytes, from bulk_put_check) at w. */
static void
bulk_put_write(unsigned char *w, const store_res_put_t *p, uint64_t ordinal, size_t len)
{
	size_t stack_order[64], *order = stack_order;

	if (p->n_entries > 64)
		order = xreallocarray(NULL, p->n_entries, sizeof(*order));
	/* insertion sort: a resource has a few dozen entries at most, usually in order */
	for (size_t i = 0; i < p->n_entries; i++) {
		size_t j = i;

		for (; j > 0 && bulk_entry_cmp(&p->entries[order[j - 1]], &p->entries[i]) > 0; j--)
			order[j] = order[j - 1];
		order[j] = i;
	}
	store_be32_put(w, (uint32_t)len);
	store_be64_put(w + 4, ordinal);
	store_be16_put(w + 12, (uint16_t)(2 + p->type.len + p->id.len));
	w = store_bytes_put(store_lpstr_put(w + 14, p->type), p->id);
	store_be32_put(w, (uint32_t)p->body.len);
	w = store_bytes_put(w + 4, p->body);
	store_be16_put(w, (uint16_t)p->n_entries);
	w += 2;
	/* in (code, value) order, as the load's store_res_put wants them (it then need not sort) */
	for (size_t i = 0; i < p->n_entries; i++) {
		const store_idx_entry_t *e = &p->entries[order[i]];

		w = store_lpstr_put(store_lpstr_put(w, e->code), e->value);
	}
	if (order != stack_order)
		free(order);
}

/* The put of a decoded record: slices into the record, its entries in entries (room for
 * BULK_MAX_ENTRIES). */
static store_res_put_t
bulk_put_of(const bulk_put_rec_t *r, store_idx_entry_t *entries, uint64_t now_ns)
{
	const unsigned char *q = r->entries;
	slice_t type = {(const char *)r->key + 2, be16_read(r->key)};

	for (size_t i = 0; i < r->nentries; i++) {
		entries[i].code = (slice_t){(const char *)q + 2, be16_read(q)};
		q += 2 + entries[i].code.len;
		entries[i].value = (slice_t){(const char *)q + 2, be16_read(q)};
		q += 2 + entries[i].value.len;
	}
	return (store_res_put_t){
	    .type = type,
	    .id = {(const char *)r->key + 2 + type.len, r->klen - 2 - type.len},
	    .body = r->body,
	    .entries = entries,
	    .n_entries = r->nentries,
	    .now_ns = now_ns};
}

void
store_bulk_track(store_bulk_t *b)
{
	b->track = b->next_ordinal == b->first_ordinal && b->nruns == 0;
}

/* Tracking holds while every put is in mem[0]. */
static bool
bulk_tracking(const store_bulk_t *b)
{
	return b->track && b->nruns == 0 && !b->spilling && b->cur == &b->mem[0];
}

/* The slot of res key k (its record's key bytes) in the index: where it is, or the empty slot
 * where it would go. */
static size_t *
bulk_last_slot(const store_bulk_t *b, const unsigned char *k, size_t klen)
{
	const unsigned char *pb = (const unsigned char *)b->mem[0].pbytes.data;
	size_t mask = b->nlast - 1, i = hash_fnv1a64(k, klen, 0) & mask;

	for (;; i = (i + 1) & mask) {
		const unsigned char *r;

		if (b->last[i] == 0)
			return &b->last[i];
		r = pb + b->last[i] - 1;
		if (bulk_cmp_bytes(r + 14, be16_read(r + 12), k, klen) == 0)
			return &b->last[i];
	}
}

static void
bulk_last_note(store_bulk_t *b, size_t off)
{
	const unsigned char *r = (const unsigned char *)b->mem[0].pbytes.data + off;
	size_t *slot;

	if (2 * (b->last_used + 1) > b->nlast) {
		size_t *old = b->last, n = b->nlast;

		b->nlast = n ? 2 * n : 1024;
		b->last = xcalloc(b->nlast, sizeof(*b->last));
		b->last_used = 0;
		for (size_t i = 0; i < n; i++) {
			if (old[i] != 0) {
				const unsigned char *o =
				    (const unsigned char *)b->mem[0].pbytes.data + old[i] - 1;

				*bulk_last_slot(b, o + 14, be16_read(o + 12)) = old[i];
				b->last_used++;
			}
		}
		free(old);
	}
	slot = bulk_last_slot(b, r + 14, be16_read(r + 12));
	b->last_used += *slot == 0;
	*slot = off + 1;
}

int
store_bulk_unchanged(store_bulk_t *b, store_txn_t *t, const store_res_put_t *p)
{
	unsigned char kb[2 + STORE_TYPE_MAX + STORE_ID_MAX];
	store_res_t cur;
	size_t klen;
	int rc;

	if (!bulk_tracking(b) || p->type.len > STORE_TYPE_MAX || p->id.len > STORE_ID_MAX)
		return 0;
	klen = (size_t)(store_bytes_put(store_lpstr_put(kb, p->type), p->id) - kb);
	if (b->nlast > 0) {
		size_t off = *bulk_last_slot(b, kb, klen);

		if (off != 0) {
			bulk_put_rec_t r;

			bulk_put_decode((const unsigned char *)b->mem[0].pbytes.data + off - 1, &r);
			return slice_eq(r.body, p->body);
		}
	}
	rc = store_res_get(t, p->type, p->id, &cur);
	if (rc == -FG_ENOTFOUND)
		return 0;
	if (rc < 0)
		return rc;
	return !cur.deleted && slice_eq(cur.body, p->body);
}

int
store_bulk_add(store_bulk_t *b, const store_res_put_t *p)
{
	bulk_mem_t *m = b->cur;
	size_t len;
	int rc;

	if ((rc = bulk_put_check(b->s, p, "bulk add", &len)) < 0)
		return rc;
	if (m->puts.n == 0)
		m->first = b->next_ordinal;
	bulk_offs_push(&m->puts, m->pbytes.len);
	/* no cap: buf_room never fails */
	bulk_put_write((unsigned char *)buf_room(&m->pbytes, len), p, b->next_ordinal, len);
	if (bulk_tracking(b))
		bulk_last_note(b, m->pbytes.len);
	buf_added(&m->pbytes, len);
	m->nents += p->n_entries;
	b->next_ordinal++;
	return 0;
}

/* Bytes the puts in memory take. */
static size_t
bulk_memory(const store_bulk_t *b)
{
	const bulk_mem_t *m = b->cur;

	return m->pbytes.len + m->puts.n * (sizeof(size_t) + sizeof(bulk_put_t));
}

bool
store_bulk_memory_full(const store_bulk_t *b)
{
	return bulk_memory(b) >= b->mem_max;
}

uint64_t
store_bulk_count(const store_bulk_t *b)
{
	return b->next_ordinal - b->first_ordinal;
}

/* A memory part's puts, sorted: an array the caller frees. */
static bulk_put_t *
bulk_mem_sort(const bulk_mem_t *m)
{
	const unsigned char *pb = (const unsigned char *)m->pbytes.data;
	bulk_put_t *puts = xreallocarray(NULL, m->puts.n ? m->puts.n : 1, sizeof(*puts));

	for (size_t i = 0; i < m->puts.n; i++)
		puts[i].rec = pb + m->puts.offs[i];
	qsort(puts, m->puts.n, sizeof(*puts), bulk_put_qcmp);
	return puts;
}

static void
bulk_mem_reset(bulk_mem_t *m)
{
	buf_reset(&m->pbytes);
	m->puts.n = 0;
	m->nents = 0;
}

static void
bulk_mem_free(bulk_mem_t *m)
{
	buf_free(&m->pbytes);
	free(m->puts.offs);
}

static int
bulk_write_all(int fd, const void *p, size_t len, const char *path)
{
	const char *c = p;

	while (len > 0) {
		ssize_t n = write(fd, c, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return bulk_errno("write", path);
		c += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Writes memory part m as run file number `index`, synced (file and folder), and maps it into
 * *r. Runs in the spill thread: it touches only m and the folder. */
static int
bulk_spill_write(const store_bulk_t *b, const bulk_mem_t *m, unsigned index, bulk_run_t *r)
{
	bulk_put_t *puts;
	char *path = bulk_run_path(b, index), *tmp = xasprintf("%s.tmp", path);
	unsigned char head[BULK_HEAD];
	buf_t w = BUF_INIT;
	int fd, dfd, rc = 0;

	memset(r, 0, sizeof(*r));
	puts = bulk_mem_sort(m);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		rc = bulk_errno("create", tmp);
		goto out;
	}
	memcpy(head, BULK_MAGIC, 8);
	store_be64_put(head + 8, m->puts.n);
	store_be64_put(head + 16, m->nents);
	store_be64_put(head + 24, m->first);
	store_be64_put(head + 32, m->pbytes.len);
	buf_append(&w, head, sizeof(head));
	for (size_t i = 0; rc == 0 && i < m->puts.n; i++) {
		buf_append(&w, puts[i].rec, be32_read(puts[i].rec));
		if (w.len >= (4u << 20)) {
			rc = bulk_write_all(fd, w.data, w.len, tmp);
			buf_reset(&w);
		}
	}
	if (rc == 0 && w.len > 0)
		rc = bulk_write_all(fd, w.data, w.len, tmp);
	if (rc == 0 && fdatasync(fd) != 0)
		rc = bulk_errno("sync", tmp);
	if (close(fd) != 0 && rc == 0)
		rc = bulk_errno("close", tmp);
	if (rc == 0 && rename(tmp, path) != 0)
		rc = bulk_errno("rename", tmp);
	if (rc == 0) {
		dfd = open(b->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd < 0 || fsync(dfd) != 0)
			rc = bulk_errno("sync", b->dir);
		if (dfd >= 0)
			close(dfd);
	}
	if (rc == 0) {
		r->len = sizeof(head) + m->pbytes.len;
		fd = open(path, O_RDONLY | O_CLOEXEC);
		r->map = fd < 0 ? MAP_FAILED
				: mmap(NULL, r->len, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
		if (fd >= 0)
			close(fd);
		if (r->map == MAP_FAILED) {
			r->map = NULL;
			rc = bulk_errno("map", path);
		} else {
			r->nputs = m->puts.n;
			r->nents = m->nents;
			r->first = m->first;
			r->put_bytes = m->pbytes.len;
		}
	} else {
		unlink(tmp);
	}
out:
	buf_free(&w);
	free(puts);
	free(path);
	free(tmp);
	return rc;
}

static void *
bulk_spill_main(void *arg)
{
	store_bulk_t *b = arg;

	b->spill_rc = bulk_spill_write(b, b->spill_mem, b->nruns, &b->spill_run);
	if (b->spill_rc < 0)
		snprintf(b->spill_err, sizeof(b->spill_err), "%s", store_last_error());
	return NULL;
}

int
store_bulk_spill_wait(store_bulk_t *b, unsigned *nruns)
{
	int rc = 0;

	if (b->spilling) {
		if (b->spill_thread)
			pthread_join(b->spiller, NULL);
		b->spilling = false;
		rc = b->spill_rc;
		if (rc == 0) {
			b->runs = xreallocarray(b->runs, b->nruns + 1, sizeof(*b->runs));
			b->runs[b->nruns++] = b->spill_run;
			b->run_bytes += b->spill_run.len;
		} else {
			store_error_set("%s", b->spill_err);
		}
		bulk_mem_reset(b->spill_mem);
	}
	if (nruns != NULL)
		*nruns = b->nruns;
	return rc;
}

int
store_bulk_spill_start(store_bulk_t *b)
{
	int rc;

	if ((rc = store_bulk_spill_wait(b, NULL)) < 0)
		return rc;
	if (b->cur->puts.n == 0)
		return 0;
	if (b->nruns >= BULK_MAX_RUNS) {
		store_error_set("bulk load: more than %d runs: give it more memory", BULK_MAX_RUNS);
		return -FG_ETOOBIG;
	}
	b->spill_mem = b->cur;
	b->cur = b->cur == &b->mem[0] ? &b->mem[1] : &b->mem[0];
	b->spilling = true;
	b->spill_thread = pthread_create(&b->spiller, NULL, bulk_spill_main, b) == 0;
	if (!b->spill_thread)
		bulk_spill_main(b); /* no thread: in this one */
	return 0;
}

int
store_bulk_sync(store_bulk_t *b, unsigned *nruns)
{
	int rc = store_bulk_spill_start(b);

	if (rc == 0)
		rc = store_bulk_spill_wait(b, nruns);
	return rc;
}

/* Sources and their merge. */

static void
bulk_src_next(bulk_src_t *src)
{
	if (src->puts != NULL) {
		src->cur = src->i < src->n ? src->puts[src->i].rec : NULL;
		src->i++;
		return;
	}
	if (src->p >= src->end) {
		src->cur = NULL;
		return;
	}
	src->cur = src->p;
	src->p += be32_read(src->p);
}

/* A binary heap of source indexes by their current put. */
typedef struct {
	bulk_src_t *src;
	unsigned *h;
	unsigned n;
} bulk_heap_t;

static bool
bulk_heap_less(const bulk_heap_t *hp, unsigned a, unsigned b)
{
	return bulk_put_cmp(hp->src[a].cur, hp->src[b].cur) < 0;
}

static void
bulk_heap_down(bulk_heap_t *hp, unsigned i)
{
	for (;;) {
		unsigned l = 2 * i + 1, r = l + 1, m = i, t;

		if (l < hp->n && bulk_heap_less(hp, hp->h[l], hp->h[m]))
			m = l;
		if (r < hp->n && bulk_heap_less(hp, hp->h[r], hp->h[m]))
			m = r;
		if (m == i)
			return;
		t = hp->h[i];
		hp->h[i] = hp->h[m];
		hp->h[m] = t;
		i = m;
	}
}

static void
bulk_heap_init(bulk_heap_t *hp, bulk_src_t *src, unsigned nsrc)
{
	hp->src = src;
	hp->h = xreallocarray(NULL, nsrc ? nsrc : 1, sizeof(*hp->h));
	hp->n = 0;
	for (unsigned i = 0; i < nsrc; i++) {
		bulk_src_next(&src[i]);
		if (src[i].cur != NULL)
			hp->h[hp->n++] = i;
	}
	for (unsigned i = hp->n / 2; i-- > 0;)
		bulk_heap_down(hp, i);
}

/* The smallest current put, or NULL; advances its source. */
static const unsigned char *
bulk_heap_pop(bulk_heap_t *hp)
{
	bulk_src_t *s;
	const unsigned char *rec;

	if (hp->n == 0)
		return NULL;
	s = &hp->src[hp->h[0]];
	rec = s->cur;
	bulk_src_next(s);
	if (s->cur == NULL)
		hp->h[0] = hp->h[--hp->n];
	bulk_heap_down(hp, 0);
	return rec;
}

/* The runs' puts and the memory part's (sorted) as nruns + 1 sources. */
static void
bulk_srcs(store_bulk_t *b, bulk_src_t *src, const bulk_put_t *puts)
{
	for (unsigned i = 0; i < b->nruns; i++) {
		const unsigned char *base = b->runs[i].map;

		memset(&src[i], 0, sizeof(src[i]));
		src[i].p = base + BULK_HEAD;
		src[i].end = base + BULK_HEAD + b->runs[i].put_bytes;
	}
	memset(&src[b->nruns], 0, sizeof(src[0]));
	/* an empty memory part must still look like a memory source */
	if (b->cur->puts.n > 0) {
		src[b->nruns].puts = puts;
		src[b->nruns].n = b->cur->puts.n;
	}
}

/* The merge runs in a thread of its own while the load's thread makes the LMDB writes: it
 * hands over the puts in order, in blocks of pointers (they point into the runs' maps and the
 * memory part, which outlive the load). */
#define BULK_FEED_BLOCK 16384
#define BULK_FEED_DEPTH 4

typedef struct {
	bulk_heap_t hp;
	const unsigned char **blocks[BULK_FEED_DEPTH];
	size_t counts[BULK_FEED_DEPTH];
	uint64_t produced, consumed; /* blocks (under mu) */
	const unsigned char **blk;   /* the block being consumed, its count and position */
	size_t n, pos;
	bool done, stop, threaded;
	pthread_t th;
	pthread_mutex_t mu;
	pthread_cond_t cv;
} bulk_feed_t;

static void *
bulk_feed_main(void *arg)
{
	bulk_feed_t *f = arg;

	for (;;) {
		const unsigned char **blk;
		size_t n = 0;

		pthread_mutex_lock(&f->mu);
		while (!f->stop && f->produced - f->consumed == BULK_FEED_DEPTH)
			pthread_cond_wait(&f->cv, &f->mu);
		if (f->stop) {
			pthread_mutex_unlock(&f->mu);
			break;
		}
		blk = f->blocks[f->produced % BULK_FEED_DEPTH];
		pthread_mutex_unlock(&f->mu);
		while (n < BULK_FEED_BLOCK && (blk[n] = bulk_heap_pop(&f->hp)) != NULL)
			n++;
		pthread_mutex_lock(&f->mu);
		f->counts[f->produced % BULK_FEED_DEPTH] = n;
		f->produced++;
		f->done = n < BULK_FEED_BLOCK;
		pthread_cond_broadcast(&f->cv);
		pthread_mutex_unlock(&f->mu);
		if (n < BULK_FEED_BLOCK)
			break;
	}
	return NULL;
}

static void
bulk_feed_start(bulk_feed_t *f, bulk_src_t *src, unsigned nsrc)
{
	memset(f, 0, sizeof(*f));
	bulk_heap_init(&f->hp, src, nsrc);
	for (int i = 0; i < BULK_FEED_DEPTH; i++)
		f->blocks[i] = xreallocarray(NULL, BULK_FEED_BLOCK, sizeof(*f->blocks[i]));
	pthread_mutex_init(&f->mu, NULL);
	pthread_cond_init(&f->cv, NULL);
	f->threaded = pthread_create(&f->th, NULL, bulk_feed_main, f) == 0;
}

/* The next record in order, NULL at the end. */
static const unsigned char *
bulk_feed_next(bulk_feed_t *f)
{
	if (!f->threaded)
		return bulk_heap_pop(&f->hp);
	for (;;) {
		if (f->blk != NULL && f->pos < f->n)
			return f->blk[f->pos++];
		pthread_mutex_lock(&f->mu);
		if (f->blk != NULL) {
			/* this block is used up: the producer may fill it again */
			f->consumed++;
			f->blk = NULL;
			pthread_cond_broadcast(&f->cv);
		}
		while (f->consumed == f->produced && !f->done)
			pthread_cond_wait(&f->cv, &f->mu);
		if (f->consumed == f->produced) {
			pthread_mutex_unlock(&f->mu);
			return NULL;
		}
		f->blk = f->blocks[f->consumed % BULK_FEED_DEPTH];
		f->n = f->counts[f->consumed % BULK_FEED_DEPTH];
		f->pos = 0;
		pthread_mutex_unlock(&f->mu);
	}
}

/* Ends a producer thread (feed, collect): tells it to stop, waits for it, frees its lock. */
static void
bulk_thread_end(bool threaded, pthread_t th, pthread_mutex_t *mu, pthread_cond_t *cv, bool *stop)
{
	if (threaded) {
		pthread_mutex_lock(mu);
		*stop = true;
		pthread_cond_broadcast(cv);
		pthread_mutex_unlock(mu);
		pthread_join(th, NULL);
	}
	pthread_mutex_destroy(mu);
	pthread_cond_destroy(cv);
}

static void
bulk_feed_end(bulk_feed_t *f)
{
	bulk_thread_end(f->threaded, f->th, &f->mu, &f->cv, &f->stop);
	for (int i = 0; i < BULK_FEED_DEPTH; i++)
		free(f->blocks[i]);
	free(f->hp.h);
	memset(f, 0, sizeof(*f));
}

/* The entries of a load: collected from every put by group and sorted in a thread of its own
 * during the resource pass (which only reads the put records too), then copied in key order
 * into blocks the index pass takes in turn, so that it reads them one after the other instead
 * of from put records all over memory (a cache miss each: twice the pass's time, measured). */
#ifndef BULK_BLOCK_BYTES /* smaller in a build that tests the hand-over (-D) */
#define BULK_BLOCK_BYTES (1u << 20)
#endif
#define BULK_BLOCKS 4

/* Entries of one group in key order: be16 value length, value, be16 id length, id, be64
 * ordinal, each. */
typedef struct {
	unsigned char *data;
	size_t len;
	const bulk_group_t *g;
} bulk_block_t;

typedef struct {
	store_bulk_t *b;
	size_t *order; /* the groups in key order */
	size_t gi, ei; /* the next entry to copy: group (in order), entry */
	bulk_block_t blocks[BULK_BLOCKS];
	uint64_t produced, consumed; /* blocks (under mu) */
	bool have;                   /* the consumer holds block consumed */
	bool done, stop, threaded;
	pthread_t th;
	pthread_mutex_t mu;
	pthread_cond_t cv;
} bulk_collect_t;

static void
bulk_collect_put(store_bulk_t *b, const unsigned char *put, bulk_group_t **last, size_t nlast)
{
	bulk_put_rec_t r;
	unsigned char prefix[STORE_KEY_MAX];
	size_t tlen, plen;
	slice_t id = bulk_put_id(put);
	uint64_t c = bulk_pad8((const unsigned char *)id.ptr, id.len);
	const unsigned char *q;

	bulk_put_decode(put, &r);
	tlen = 2 + be16_read(r.key);
	memcpy(prefix, r.key, tlen);
	q = r.entries;
	for (size_t i = 0; i < r.nentries; i++) {
		size_t clen = 2 + be16_read(q), vlen;
		const unsigned char *val = q + clen;
		bulk_group_t *g;
		bulk_ent_t *e;

		/* the put before had the same parameters, most of the time */
		plen = tlen + clen;
		g = i < nlast ? last[i] : NULL;
		if (g == NULL || g->plen != plen || memcmp(g->prefix, r.key, tlen) != 0 ||
		    memcmp(g->prefix + tlen, q, clen) != 0) {
			size_t ng = b->ngroups;

			memcpy(prefix + tlen, q, clen);
			g = bulk_group(b, prefix, plen);
			if (b->ngroups != ng) /* the array may have moved */
				memset(last, 0, nlast * sizeof(*last));
			if (i < nlast)
				last[i] = g;
		}
		vlen = be16_read(val);
		q = val + 2 + vlen;
		if (g->n == g->cap) {
			g->cap = g->cap ? 2 * g->cap : 1024;
			g->ents = xreallocarray(g->ents, g->cap, sizeof(*g->ents));
		}
		e = &g->ents[g->n++];
		e->a = bulk_pad8(val + 2, vlen);
		e->b = vlen > 8 ? bulk_pad8(val + 10, vlen - 8) : 0;
		e->put = put;
		e->voff = (uint32_t)(val - put);
		e->c = c;
		e->vlen = (uint32_t)vlen;
	}
}

/* Collects and sorts every entry of the load, and orders the groups. */
static void
bulk_collect_prepare(bulk_collect_t *c)
{
	store_bulk_t *b = c->b;
	const bulk_mem_t *m = b->cur;
	bulk_group_t **last = xcalloc(64, sizeof(*last));

	/* last: the groups of the put before's entries, by position */
	for (unsigned i = 0; i < b->nruns; i++) {
		const unsigned char *p = (const unsigned char *)b->runs[i].map + BULK_HEAD;
		const unsigned char *end = p + b->runs[i].put_bytes;

		for (; p < end; p += be32_read(p))
			bulk_collect_put(b, p, last, 64);
	}
	for (size_t i = 0; i < m->puts.n; i++)
		bulk_collect_put(b, (const unsigned char *)m->pbytes.data + m->puts.offs[i], last,
				 64);
	free(last);
	for (size_t g = 0; g < b->ngroups; g++) {
		bulk_group_t *gr = &b->groups[g];

		bulk_ents_sort(gr->ents, gr->n);
		/* a check of the sort, off the load's thread (store_bulk_stats): the radix keys
		 * in order, and where they tie, the entries themselves */
		for (size_t i = 1; i < gr->n; i++) {
			const bulk_ent_t *x = &gr->ents[i - 1], *y = &gr->ents[i];

			b->stats.unsorted += bulk_ent_radix_eq(x, y) ? bulk_ent_cmp(x, y) > 0
								     : bulk_ent_qcmp(x, y) > 0;
		}
	}
	c->order = xreallocarray(NULL, b->ngroups ? b->ngroups : 1, sizeof(*c->order));
	for (size_t i = 0; i < b->ngroups; i++)
		c->order[i] = i;
	qsort_r(c->order, b->ngroups, sizeof(*c->order), bulk_group_qcmp, (void *)b->groups);
}

/* Fills blk with the next entries in key order, all of one group: false at the end. */
static bool
bulk_collect_fill(bulk_collect_t *c, bulk_block_t *blk)
{
	store_bulk_t *b = c->b;

	if (blk->data == NULL)
		blk->data = xmalloc(BULK_BLOCK_BYTES);
	blk->len = 0;
	while (c->gi < b->ngroups) {
		const bulk_group_t *g = &b->groups[c->order[c->gi]];

		blk->g = g;
		for (; c->ei < g->n; c->ei++) {
			const bulk_ent_t *e = &g->ents[c->ei];
			slice_t id = bulk_put_id(e->put);
			unsigned char *w = blk->data + blk->len;

			if (blk->len + 2 + e->vlen + 2 + id.len + 8 > BULK_BLOCK_BYTES)
				return true;
			/* the records are all over memory: read ahead */
			if (c->ei + BULK_PREFETCH < g->n) {
				const bulk_ent_t *f = &g->ents[c->ei + BULK_PREFETCH];

				__builtin_prefetch(f->put);
				__builtin_prefetch(f->put + 48);
				__builtin_prefetch(f->put + f->voff);
			}
			memcpy(w, e->put + e->voff, 2 + e->vlen);
			w = store_lpstr_put(w + 2 + e->vlen, id);
			memcpy(w, e->put + 4, 8);
			blk->len += 2 + e->vlen + 2 + id.len + 8;
		}
		c->gi++;
		c->ei = 0;
		if (blk->len > 0)
			return true;
	}
	return false;
}

static void *
bulk_collect_main(void *arg)
{
	bulk_collect_t *c = arg;

	bulk_collect_prepare(c);
	for (;;) {
		bulk_block_t *blk;
		bool more;

		pthread_mutex_lock(&c->mu);
		while (!c->stop && c->produced - c->consumed == BULK_BLOCKS)
			pthread_cond_wait(&c->cv, &c->mu);
		if (c->stop) {
			pthread_mutex_unlock(&c->mu);
			break;
		}
		blk = &c->blocks[c->produced % BULK_BLOCKS];
		pthread_mutex_unlock(&c->mu);
		more = bulk_collect_fill(c, blk);
		pthread_mutex_lock(&c->mu);
		if (more)
			c->produced++;
		else
			c->done = true;
		pthread_cond_broadcast(&c->cv);
		pthread_mutex_unlock(&c->mu);
		if (!more)
			break;
	}
	return NULL;
}

static void
bulk_collect_start(bulk_collect_t *c, store_bulk_t *b)
{
	memset(c, 0, sizeof(*c));
	c->b = b;
	pthread_mutex_init(&c->mu, NULL);
	pthread_cond_init(&c->cv, NULL);
	c->threaded = pthread_create(&c->th, NULL, bulk_collect_main, c) == 0;
	if (!c->threaded)
		bulk_collect_prepare(c); /* no thread: in this one, blocks filled when asked */
}

/* The next block of entries in key order, NULL at the end. */
static const bulk_block_t *
bulk_collect_next(bulk_collect_t *c)
{
	const bulk_block_t *blk;

	if (!c->threaded)
		return bulk_collect_fill(c, &c->blocks[0]) ? &c->blocks[0] : NULL;
	pthread_mutex_lock(&c->mu);
	if (c->have) {
		/* the block taken before is used up: the thread may fill it again */
		c->consumed++;
		c->have = false;
		pthread_cond_broadcast(&c->cv);
	}
	while (c->consumed == c->produced && !c->done)
		pthread_cond_wait(&c->cv, &c->mu);
	blk = c->consumed == c->produced ? NULL : &c->blocks[c->consumed % BULK_BLOCKS];
	c->have = blk != NULL;
	pthread_mutex_unlock(&c->mu);
	return blk;
}

/* Accepts a collect that was never started (zeroed). */
static void
bulk_collect_end(bulk_collect_t *c)
{
	if (c->b == NULL)
		return;
	bulk_thread_end(c->threaded, c->th, &c->mu, &c->cv, &c->stop);
	for (int i = 0; i < BULK_BLOCKS; i++)
		free(c->blocks[i].data);
	free(c->order);
	memset(c, 0, sizeof(*c));
}

static void
bulk_groups_clear(store_bulk_t *b)
{
	for (size_t i = 0; i < b->ngroups; i++) {
		free(b->groups[i].prefix);
		free(b->groups[i].ents);
	}
	b->ngroups = 0;
	if (b->slots != NULL)
		memset(b->slots, 0, b->nslots * sizeof(*b->slots));
}

static void
bulk_bit_set(unsigned char *bits, uint64_t i)
{
	bits[i / 8] |= (unsigned char)(1u << (i % 8));
}

int
store_bulk_load(store_bulk_t *b, store_txn_t *t, uint64_t now_ns, store_bulk_cb cb, void *ctx)
{
	uint64_t count = b->next_ordinal - b->first_ordinal;
	unsigned char *skip = xcalloc(count / 8 + 1, 1);
	store_idx_entry_t *entries = xreallocarray(NULL, BULK_MAX_ENTRIES, sizeof(*entries));
	bulk_src_t *src = NULL;
	bulk_put_t *puts = NULL;
	bulk_feed_t feed;
	bulk_collect_t collect = {.b = NULL};
	const bulk_block_t *blk;
	bool feeding = false;
	const unsigned char *rec, *prev = NULL;
	uint64_t written_ord = 0, written = 0;
	bool have_written = false;
	MDB_cursor *c = NULL;
	uint64_t t0;
	int rc;

	if ((rc = store_txn_check(t, true, "bulk load")) < 0)
		goto out;
	t0 = time_mono_ns();
	rc = store_bulk_spill_wait(b, NULL);
	b->stats.wait_ns += time_mono_ns() - t0;
	if (rc < 0) {
		store_txn_fail(t, rc);
		goto out;
	}
	/* the pages this load writes, with a margin: sorted inserts fill the leaves (measured: 2.2
	 * GiB of pages for 0.92 GB of puts with 17 entries each) */
	rc = store_reserve_ahead(t, (b->run_bytes + b->cur->pbytes.len) * 3);
	if (rc < 0) {
		store_txn_fail(t, rc);
		goto out;
	}
	src = xcalloc(b->nruns + 1, sizeof(*src));
	puts = bulk_mem_sort(b->cur);
	bulk_groups_clear(b);
	bulk_collect_start(&collect, b);

	/* The resource pass. */
	t0 = time_mono_ns();
	bulk_srcs(b, src, puts);
	bulk_feed_start(&feed, src, b->nruns + 1);
	feeding = true;
	t->idx_deferred = true;
	while ((rec = bulk_feed_next(&feed)) != NULL) {
		bulk_put_rec_t r;
		store_res_put_t p;
		store_res_result_t res;

		bulk_put_decode(rec, &r);
		p = bulk_put_of(&r, entries, now_ns);
		if (prev == NULL ||
		    bulk_cmp_bytes(prev + 14, be16_read(prev + 12), r.key, r.klen) != 0)
			have_written = false;
		if ((rc = store_res_put(t, &p, &res)) < 0)
			break;
		/* Only the entries of a resource's last version written in this load go in: an
		 * unchanged put adds none, a later version retires the earlier one's. */
		if (res.unchanged) {
			bulk_bit_set(skip, r.ordinal - b->first_ordinal);
		} else {
			written++;
			if (have_written)
				bulk_bit_set(skip, written_ord - b->first_ordinal);
			have_written = true;
			written_ord = r.ordinal;
		}
		if (cb != NULL && (rc = cb(ctx, &p, &res)) != 0) {
			if (rc > 0)
				rc = store_txn_fail(t, -FG_EINVAL);
			break;
		}
		prev = rec;
	}
	t->idx_deferred = false;
	if (rc == 0)
		rc = store_count_flush(t);
	t->nborn = 0;
	bulk_feed_end(&feed);
	feeding = false;
	b->stats.res_ns += time_mono_ns() - t0;
	if (rc < 0 || written == 0)
		goto out; /* nothing written (a file imported again): no entry to add */

	/* The index pass: the entries in key order, from the collect thread's blocks. */
	t0 = time_mono_ns();
	blk = bulk_collect_next(&collect);
	b->stats.collect_wait_ns += time_mono_ns() - t0;
	t0 = time_mono_ns();
	if ((rc = store_cursor(t, STORE_DB_IDX, &c)) < 0)
		goto out;
	for (; blk != NULL; blk = bulk_collect_next(&collect)) {
		const unsigned char *q = blk->data, *end = q + blk->len;
		unsigned char kb[STORE_KEY_MAX];
		size_t plen = blk->g->plen;

		memcpy(kb, blk->g->prefix, plen);
		while (q < end) {
			size_t vlen = be16_read(q), idlen = be16_read(q + 2 + vlen);
			const unsigned char *id = q + 4 + vlen;
			uint64_t ord = be64_read(id + idlen) - b->first_ordinal;
			MDB_val k = {plen + vlen, kb}, v = {idlen, (void *)id};

			if (k.mv_size >
			    sizeof(kb)) { /* bulk_run_whole and store_bulk_add saw to it */
				store_error_set("bulk idx: a key longer than %d bytes",
						STORE_KEY_MAX);
				rc = store_txn_fail(t, -FG_ESTORE);
				goto out;
			}
			memcpy(kb + plen, q + 2, vlen);
			q = id + idlen + 8;
			if (skip[ord / 8] & (1u << (ord % 8)))
				continue;
			rc = mdb_cursor_put(c, &k, &v, MDB_NODUPDATA);
			if (rc != 0 && rc != MDB_KEYEXIST) {
				rc = store_txn_fail(t, store_mdb_fail("bulk idx", rc));
				goto out;
			}
			rc = 0;
		}
	}
	b->stats.idx_ns += time_mono_ns() - t0;
out:
	bulk_collect_end(&collect);
	bulk_groups_clear(b);
	if (feeding)
		bulk_feed_end(&feed);
	free(skip);
	free(entries);
	free(src);
	free(puts);
	return rc;
}

void
store_bulk_stats(const store_bulk_t *b, store_bulk_stats_t *out)
{
	*out = b->stats;
}

void
store_bulk_free(store_bulk_t *b, bool remove_files)
{
	if (b == NULL)
		return;
	(void)store_bulk_spill_wait(b, NULL);
	for (unsigned i = 0; i < b->nruns; i++) {
		if (b->runs[i].map != NULL)
			munmap(b->runs[i].map, b->runs[i].len);
		if (remove_files) {
			char *p = bulk_run_path(b, i);

			unlink(p);
			free(p);
		}
	}
	if (remove_files)
		rmdir(b->dir);
	free(b->runs);
	for (int i = 0; i < 2; i++)
		bulk_mem_free(&b->mem[i]);
	bulk_groups_clear(b);
	free(b->groups);
	free(b->slots);
	free(b->last);
	free(b->dir);
	free(b);
}

/* ---- pend: the puts of accepted messages, durable, waiting for the writer's next load ----
 * Key: the message's sequence (be64). Value: be32 number of puts, then that many put records
 * as in a run file (ordinal 0). */

/* Decodes the put record at p, checking that it and each of its parts lie before end before
 * reading them. */
static int
bulk_put_decode_checked(const unsigned char *p, const unsigned char *end, bulk_put_rec_t *r)
{
	const unsigned char *q, *rend;
	size_t len, klen, blen, n;

	if (end - p < 14)
		return -1;
	len = be32_read(p);
	if (len > (size_t)(end - p) || len < 14)
		return -1;
	rend = p + len;
	klen = be16_read(p + 12);
	q = p + 14;
	if (klen < 2 || (size_t)(rend - q) < klen + 4 || be16_read(q) > klen - 2)
		return -1;
	q += klen;
	blen = be32_read(q);
	q += 4;
	if ((size_t)(rend - q) < blen + 2)
		return -1;
	q += blen;
	n = be16_read(q);
	q += 2;
	for (size_t i = 0; i < 2 * n; i++) {
		if (rend - q < 2 || (size_t)(rend - q - 2) < be16_read(q))
			return -1;
		q += 2 + be16_read(q);
	}
	if (q != rend)
		return -1;
	bulk_put_decode(p, r);
	return 0;
}

int
store_pend_put(store_txn_t *t, uint64_t seq, const store_res_put_t *puts, size_t n)
{
	size_t total = 4, stack_lens[8], *lens = stack_lens;
	unsigned char kb[8], *w;
	MDB_val k = store_seq_key(kb, seq), v;
	int rc = 0;

	if ((rc = store_txn_check(t, true, "pend put")) < 0)
		return store_txn_fail(t, rc);
	if (n > UINT32_MAX) {
		store_error_set("pend put: %zu puts", n);
		return store_txn_fail(t, -FG_ETOOBIG);
	}
	if (n > 8)
		lens = xreallocarray(NULL, n, sizeof(*lens));
	for (size_t i = 0; rc == 0 && i < n; i++) {
		rc = bulk_put_check(t->s, &puts[i], "pend put", &lens[i]);
		total += lens[i];
		if (rc == 0 && total > UINT32_MAX) {
			store_error_set("pend put: puts too large");
			rc = -FG_ETOOBIG;
		}
	}
	if (rc < 0)
		goto out;
	v = (MDB_val){total, NULL};
	if ((rc = mdb_put(t->txn, t->s->dbi[STORE_DB_PEND], &k, &v, MDB_RESERVE)) != 0) {
		rc = store_mdb_fail("pend put", rc);
		goto out;
	}
	w = v.mv_data;
	store_be32_put(w, (uint32_t)n);
	w += 4;
	for (size_t i = 0; i < n; i++) {
		bulk_put_write(w, &puts[i], 0, lens[i]);
		w += lens[i];
	}
out:
	if (lens != stack_lens)
		free(lens);
	return rc < 0 ? store_txn_fail(t, rc) : 0;
}

/* Whether pend record v (key k) decodes: a count, then that many put records and nothing
 * more. */
static bool
bulk_pend_valid(const MDB_val *k, const MDB_val *v)
{
	const unsigned char *p = v->mv_data, *end = p + v->mv_size;
	uint32_t n;

	if (k->mv_size != 8 || v->mv_size < 4)
		return false;
	n = be32_read(p);
	p += 4;
	for (uint32_t i = 0; i < n && p != NULL; i++) {
		bulk_put_rec_t r;

		p = bulk_put_decode_checked(p, end, &r) < 0 ? NULL : p + r.len;
	}
	return p == end;
}

typedef struct {
	store_txn_t *t;
	store_pend_cb cb;
	void *ctx;
	store_idx_entry_t *entries;
} bulk_pend_each_t;

static int
bulk_pend_visit(void *ctx, const MDB_val *k, const MDB_val *v)
{
	bulk_pend_each_t *e = ctx;
	const unsigned char *p = (const unsigned char *)v->mv_data + 4;
	uint64_t seq;
	uint32_t n;
	int rc;

	if (!bulk_pend_valid(k, v)) {
		store_error_set("pend: a record of %zu bytes under a key of %zu bytes does not "
				"decode",
				v->mv_size, k->mv_size);
		return store_txn_fail(e->t, -FG_ESTORE);
	}
	seq = be64_read(k->mv_data);
	n = be32_read(v->mv_data);
	for (uint32_t i = 0; i < n; i++) {
		bulk_put_rec_t r;
		store_res_put_t put;

		bulk_put_decode(p, &r);
		put = bulk_put_of(&r, e->entries, 0);
		if ((rc = e->cb(e->ctx, seq, &put)) != 0)
			return rc;
		p += r.len;
	}
	return 0;
}

int
store_pend_foreach(store_txn_t *t, store_pend_cb cb, void *ctx)
{
	bulk_pend_each_t e = {t, cb, ctx, NULL};
	int rc;

	if ((rc = store_txn_check(t, false, "pend foreach")) < 0)
		return rc;
	e.entries = xreallocarray(NULL, BULK_MAX_ENTRIES, sizeof(*e.entries));
	rc = store_range(t, STORE_DB_PEND, NULL, bulk_pend_visit, &e);
	free(e.entries);
	return rc;
}

int
store_pend_del(store_txn_t *t, uint64_t lo, uint64_t hi)
{
	unsigned char kb[8];
	MDB_val k = store_seq_key(kb, lo), v;
	MDB_cursor *c;
	int rc;

	if ((rc = store_txn_check(t, true, "pend del")) < 0)
		return store_txn_fail(t, rc);
	if ((rc = store_cursor(t, STORE_DB_PEND, &c)) < 0)
		return rc;
	for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
	     rc == 0 && k.mv_size == 8 && be64_read(k.mv_data) <= hi;
	     rc = mdb_cursor_get(c, &k, &v, MDB_NEXT))
		if ((rc = mdb_cursor_del(c, 0)) != 0)
			break;
	if (rc != 0 && rc != MDB_NOTFOUND)
		return store_txn_fail(t, store_mdb_fail("pend del", rc));
	return 0;
}

static int
bulk_pend_verify_visit(void *ctx, const MDB_val *k, const MDB_val *v)
{
	store_verify_t *vf = ctx;
	uint64_t seq;
	int rc;

	if (k->mv_size != 8) {
		store_verify_problem(vf, "pend: key of %zu bytes, not 8", k->mv_size);
		return 0;
	}
	seq = be64_read(k->mv_data);
	if ((rc = store_verify_msg_missing(vf, seq)) < 0)
		return rc;
	if (rc == 1)
		store_verify_problem(vf, "pend %llu: no message with that sequence",
				     (unsigned long long)seq);
	if (!bulk_pend_valid(k, v))
		store_verify_problem(vf, "pend %llu: record does not decode",
				     (unsigned long long)seq);
	return 0;
}

int
store_pend_verify(store_verify_t *vf)
{
	return store_range(vf->t, STORE_DB_PEND, NULL, bulk_pend_verify_visit, vf);
}
