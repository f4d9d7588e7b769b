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
 * The puts (in memory as in a run file) and the entries are sorted in a spill thread while the
 * caller adds more into a second memory part; the merge of a load runs in a feed thread.
 *
 * Run file (all numbers big-endian; entries and puts as the bytes LMDB will compare):
 *   header: magic "FGBULK1\n", be64 number of puts, be64 number of index entries,
 *           be64 first ordinal, be64 bytes of puts
 *   puts, sorted by res key then ordinal: be32 record length (all of it), be64 ordinal,
 *           be16 key length, res key (lpstr type, id), be32 body length, body,
 *           be16 number of entries, then lpstr code, lpstr value per entry
 *   entries, sorted by idx key, id, ordinal: be16 key length, idx key, be16 id length, id,
 *           be64 ordinal
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
#include "lib/timeutil.h"
#include "lib/xalloc.h"
#include "store/store.h"
#include "store/store_int.h"

#define BULK_MAGIC       "FGBULK1\n"
#define BULK_HEAD        (8 + 4 * 8)
#define BULK_DEFAULT_MEM (256u << 20)
#define BULK_MAX_RUNS    4096
#define BULK_MAX_ENTRIES 65535

/* An index entry in memory, for sorting within its group (same type and code): the first 16
 * bytes of its value and the first 4 of its id as big-endian numbers, zero-padded (padding
 * keeps the order of the full bytes; ties are compared in full), and where its record is. 32
 * bytes: glibc's qsort sorts elements up to that size directly, larger ones through pointers. */
typedef struct {
	uint64_t a, b;
	const unsigned char *rec;
	uint32_t c, vlen;
} bulk_ent_t;

/* A type and search parameter: most of an entry's key is its type and code, so entries are
 * sorted group by group, comparing values only. */
typedef struct {
	unsigned char *prefix; /* lpstr type, lpstr code */
	size_t plen;
} bulk_group_t;

#define BULK_GROUP_SLOTS 1024
#define BULK_MAX_GROUPS  (BULK_GROUP_SLOTS / 2)

typedef struct {
	size_t *offs, n, cap;
} bulk_offs_t;

/* Puts in memory: records as in a run file, and where each starts (entries per group). Two of
 * them: one is filled while the other is written as a run file by the spill thread. */
typedef struct {
	buf_t pbytes, ebytes;
	bulk_offs_t puts;
	bulk_offs_t ents[BULK_MAX_GROUPS];
	size_t nents;
	uint64_t first; /* ordinal of its first put */
} bulk_mem_t;

typedef struct {
	const unsigned char *rec;
} bulk_put_t;

/* A sorted sequence of records: a run file (mapped) or the memory part (sorted arrays). */
typedef struct {
	const unsigned char *p, *end; /* file: next record, end of the section */
	const bulk_put_t *puts;       /* memory: sorted puts */
	const bulk_ent_t *ents;       /* memory: sorted entries */
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
	/* groups are only added (the spill thread reads those there were when it started) */
	bulk_group_t groups[BULK_MAX_GROUPS];
	size_t ngroups;
	int32_t slots[BULK_GROUP_SLOTS]; /* hash of a group's prefix -> index + 1, 0: empty */
	bulk_mem_t mem[2];
	bulk_mem_t *cur; /* being filled */
	/* the spill in the background: its thread, memory part, run and result */
	pthread_t spiller;
	bool spilling, spill_thread;
	bulk_mem_t *spill_mem;
	size_t spill_ngroups;
	bulk_run_t spill_run;
	int spill_rc;
	char spill_err[512];
	/* the runs on disk */
	bulk_run_t *runs;
	unsigned nruns;
	uint64_t run_bytes; /* bytes of the run files */
	store_bulk_timings_t timings;
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

static size_t
bulk_ent_len(const unsigned char *p)
{
	size_t k = be16_read(p);

	return 2 + k + 2 + be16_read(p + 2 + k) + 8;
}

/* Index entry records compare as LMDB orders a DUPSORT database: key, then data (the id),
 * bytewise, shorter first on a tie; then ordinal. */
static int
bulk_ent_cmp(const unsigned char *x, const unsigned char *y)
{
	size_t xk = be16_read(x), yk = be16_read(y);
	int r = bulk_cmp_bytes(x + 2, xk, y + 2, yk);
	size_t xi, yi;
	uint64_t xo, yo;

	if (r != 0)
		return r;
	xi = be16_read(x + 2 + xk);
	yi = be16_read(y + 2 + yk);
	r = bulk_cmp_bytes(x + 4 + xk, xi, y + 4 + yk, yi);
	if (r != 0)
		return r;
	xo = be64_read(x + 4 + xk + xi);
	yo = be64_read(y + 4 + yk + yi);
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

static void
bulk_ent_prefix(const unsigned char *rec, size_t plen, bulk_ent_t *e)
{
	size_t k = be16_read(rec), vlen = k - plen;
	const unsigned char *v = rec + 2 + plen;

	e->a = bulk_pad8(v, vlen);
	e->b = vlen > 8 ? bulk_pad8(v + 8, vlen - 8) : 0;
	e->c = (uint32_t)(bulk_pad8(rec + 4 + k, be16_read(rec + 2 + k)) >> 32);
	e->vlen = (uint32_t)vlen;
	e->rec = rec;
}

static int
bulk_ent_qcmp(const void *a, const void *b)
{
	const bulk_ent_t *x = a, *y = b;

	if (x->a != y->a)
		return x->a < y->a ? -1 : 1;
	if (x->b != y->b)
		return x->b < y->b ? -1 : 1;
	if (x->vlen <= 16 && y->vlen <= 16) {
		/* the values are all in a and b: equal up to the shorter one's length */
		if (x->vlen != y->vlen)
			return x->vlen < y->vlen ? -1 : 1;
		if (x->c != y->c)
			return x->c < y->c ? -1 : 1;
	}
	return bulk_ent_cmp(x->rec, y->rec);
}

/* Byte k of an entry's radix key, least significant first: c (the first 4 bytes of the id,
 * when the whole value is in a and b, else 0), the value's length up to 16 (17 beyond), b, a.
 * Ordered by that key, entries are in bulk_ent_qcmp's order up to ties, which it then settles:
 * with equal a and b, a value of up to 16 bytes is a prefix of a longer one (shorter first),
 * two such values of one length are equal (then the id decides), and two longer ones are
 * compared in full. */
#define BULK_RADIX_BYTES 21

static unsigned
bulk_ent_byte(const bulk_ent_t *e, unsigned k)
{
	if (k < 4)
		return e->vlen <= 16 ? (e->c >> (8 * k)) & 0xff : 0;
	if (k == 4)
		return e->vlen <= 16 ? e->vlen : 17;
	if (k < 13)
		return (unsigned)(e->b >> (8 * (k - 5))) & 0xff;
	return (unsigned)(e->a >> (8 * (k - 13))) & 0xff;
}

static bool
bulk_ent_radix_eq(const bulk_ent_t *x, const bulk_ent_t *y)
{
	return x->a == y->a && x->b == y->b &&
	       (x->vlen <= 16 ? x->vlen : 17) == (y->vlen <= 16 ? y->vlen : 17) &&
	       (x->vlen > 16 || x->c == y->c);
}

/* Sorts one group's entries: a least-significant-byte radix sort on the key above (stable;
 * the byte positions where every entry has the same byte are skipped, so a group of few
 * distinct values or of short ones costs few passes), then each run of entries with the same
 * key with qsort and the full comparison. Groups of many equal values (gender, a common
 * prefix of phone numbers, every _lastUpdated of one load) are ordered by id in the passes
 * instead of by qsort. */
static void
bulk_ents_sort(bulk_ent_t *e, size_t n)
{
	size_t(*count)[256];
	bulk_ent_t *tmp, *src = e, *dst;

	if (n < 1024) {
		qsort(e, n, sizeof(*e), bulk_ent_qcmp);
		return;
	}
	count = xcalloc(BULK_RADIX_BYTES, sizeof(*count));
	for (size_t i = 0; i < n; i++) {
		uint32_t c = e[i].vlen <= 16 ? e[i].c : 0;

		for (unsigned k = 0; k < 4; k++)
			count[k][(c >> (8 * k)) & 0xff]++;
		count[4][e[i].vlen <= 16 ? e[i].vlen : 17]++;
		for (unsigned k = 0; k < 8; k++) {
			count[5 + k][(e[i].b >> (8 * k)) & 0xff]++;
			count[13 + k][(e[i].a >> (8 * k)) & 0xff]++;
		}
	}
	tmp = xreallocarray(NULL, n, sizeof(*tmp));
	dst = tmp;
	for (unsigned k = 0; k < BULK_RADIX_BYTES; k++) {
		size_t pos = 0;
		bool one = false;

		for (unsigned v = 0; v < 256; v++) {
			size_t c = count[k][v];

			one |= c == n;
			count[k][v] = pos;
			pos += c;
		}
		if (one)
			continue;
		for (size_t i = 0; i < n; i++)
			dst[count[k][bulk_ent_byte(&src[i], k)]++] = src[i];
		bulk_ent_t *x = src;
		src = dst;
		dst = x;
	}
	if (src != e)
		memcpy(e, src, n * sizeof(*e));
	free(tmp);
	free(count);
	for (size_t i = 0, j; i < n; i = j) {
		for (j = i + 1; j < n && bulk_ent_radix_eq(&e[j], &e[i]); j++)
			;
		if (j - i > 1)
			qsort(e + i, j - i, sizeof(*e), bulk_ent_qcmp);
	}
}

/* Group indexes by their prefix; arg: the groups. */
static int
bulk_group_qcmp(const void *a, const void *b, void *arg)
{
	const bulk_group_t *groups = arg;
	const bulk_group_t *x = &groups[*(const size_t *)a], *y = &groups[*(const size_t *)b];

	return bulk_cmp_bytes(x->prefix, x->plen, y->prefix, y->plen);
}

/* The group of an idx key (lpstr type, lpstr code, value): its index, SIZE_MAX when there
 * are too many. */
static size_t
bulk_group(store_bulk_t *b, const unsigned char *key)
{
	size_t tl = be16_read(key), plen = 2 + tl + 2 + be16_read(key + 2 + tl);
	uint32_t h = 2166136261u;
	unsigned slot;
	bulk_group_t *g;

	for (size_t i = 0; i < plen; i++)
		h = (h ^ key[i]) * 16777619u;
	for (slot = h % BULK_GROUP_SLOTS; b->slots[slot] != 0;
	     slot = (slot + 1) % BULK_GROUP_SLOTS) {
		g = &b->groups[b->slots[slot] - 1];
		if (g->plen == plen && memcmp(g->prefix, key, plen) == 0)
			return (size_t)(g - b->groups);
	}
	if (b->ngroups == BULK_MAX_GROUPS)
		return SIZE_MAX;
	g = &b->groups[b->ngroups++];
	g->prefix = (unsigned char *)xmemdup0(key, plen);
	g->plen = plen;
	b->slots[slot] = (int32_t)b->ngroups;
	return b->ngroups - 1;
}

/* Whether a run file read back is whole: its records lie within their sections, as many as
 * its header says, and fill them (a run is written under a temporary name and renamed once
 * synced, so only damage can make it otherwise; the merge trusts the lengths). */
static bool
bulk_run_whole(const bulk_run_t *r)
{
	const unsigned char *p = (const unsigned char *)r->map + BULK_HEAD;
	const unsigned char *end = p + r->put_bytes, *fend = (const unsigned char *)r->map + r->len;
	uint64_t n;

	for (n = 0; n < r->nputs && end - p >= 14; n++) {
		size_t len = be32_read(p), off = 14;

		if (len < off || len > (size_t)(end - p))
			return false;
		/* key, body, entries: each within the record */
		off += be16_read(p + 12);
		if (off + 4 > len || (off += 4 + be32_read(p + off)) + 2 > len)
			return false;
		size_t nent = be16_read(p + off);

		off += 2;
		for (size_t k = 0; k < 2 * nent; k++) { /* the code and value of each entry */
			if (off + 2 > len)
				return false;
			off += 2 + be16_read(p + off);
		}
		if (off != len)
			return false;
		p += len;
	}
	if (n != r->nputs || p != end)
		return false;
	for (n = 0; n < r->nents && fend - p >= 4; n++) {
		size_t kl = be16_read(p);

		if ((size_t)(fend - p) < 4 + kl + 8 ||
		    (size_t)(fend - p) < 4 + kl + be16_read(p + 2 + kl) + 8)
			return false;
		p += bulk_ent_len(p);
	}
	return n == r->nents && p == fend;
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
	for (int i = 0; i < 2; i++) {
		buf_init(&b->mem[i].pbytes, 0);
		buf_init(&b->mem[i].ebytes, 0);
	}
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

int
store_bulk_add(store_bulk_t *b, const store_res_put_t *p)
{
	size_t groups[3 * 64], *g = groups, *order = groups + 64, *eoff = groups + 128, len, elen;
	size_t idlen = p->id.len;
	bulk_mem_t *m = b->cur;
	unsigned char *w, *e;
	int rc;

	if ((rc = store_res_put_valid(b->s, p, "bulk add")) < 0)
		return rc;
	if (p->if_match != 0 || p->create_only || p->n_entries > BULK_MAX_ENTRIES) {
		store_error_set("bulk add: preconditions or more than %d index entries",
				BULK_MAX_ENTRIES);
		return -FG_EINVAL;
	}
	/* the put's record and its entries' records, written in place below */
	len = 12 + 2 + 2 + p->type.len + idlen + 4 + p->body.len + 2;
	elen = 0;
	for (size_t i = 0; i < p->n_entries; i++) {
		size_t cv = p->entries[i].code.len + p->entries[i].value.len;

		len += 4 + cv;
		elen += 2 + 4 + p->type.len + cv + 2 + idlen + 8;
	}
	if (len > UINT32_MAX) {
		store_error_set("bulk add: resource too large");
		return -FG_ETOOBIG;
	}
	if (p->n_entries > 64) {
		g = xreallocarray(NULL, 3 * p->n_entries, sizeof(*g));
		order = g + p->n_entries;
		eoff = g + 2 * p->n_entries;
	}
	/* The entries' records past the end of ebytes, and each one's group: a refusal (too many
	 * groups) leaves ebytes as it was. */
	e = (unsigned char *)buf_room(&m->ebytes, elen); /* no cap: never NULL */
	w = e;
	for (size_t i = 0; i < p->n_entries; i++) {
		unsigned char *k = w + 2;
		size_t klen = store_idx_key(k, p->type, p->entries[i].code, p->entries[i].value)
				  .mv_size;

		eoff[i] = m->ebytes.len + (size_t)(w - e);
		store_be16_put(w, (uint16_t)klen);
		if ((g[i] = bulk_group(b, k)) == SIZE_MAX) {
			store_error_set("bulk add: more than %d search parameters",
					BULK_MAX_GROUPS);
			if (g != groups)
				free(g);
			return -FG_ETOOBIG;
		}
		w = store_lpstr_put(k + klen, p->id);
		store_be64_put(w, b->next_ordinal);
		w += 8;
	}
	for (size_t i = 0; i < p->n_entries; i++)
		bulk_offs_push(&m->ents[g[i]], eoff[i]);
	buf_added(&m->ebytes, elen);
	m->nents += p->n_entries;

	/* insertion sort: a resource has a few dozen entries at most, usually in order */
	for (size_t i = 0; i < p->n_entries; i++) {
		size_t j = i;

		for (; j > 0 && bulk_entry_cmp(&p->entries[order[j - 1]], &p->entries[i]) > 0; j--)
			order[j] = order[j - 1];
		order[j] = i;
	}
	if (m->puts.n == 0)
		m->first = b->next_ordinal;
	bulk_offs_push(&m->puts, m->pbytes.len);
	w = (unsigned char *)buf_room(&m->pbytes, len);
	store_be32_put(w, (uint32_t)len);
	store_be64_put(w + 4, b->next_ordinal);
	store_be16_put(w + 12, (uint16_t)(2 + p->type.len + idlen));
	w = store_bytes_put(store_lpstr_put(w + 14, p->type), p->id);
	store_be32_put(w, (uint32_t)p->body.len);
	w = store_bytes_put(w + 4, p->body);
	store_be16_put(w, (uint16_t)p->n_entries);
	w += 2;
	/* in (code, value) order, as the load's store_res_put wants them (it then need not sort) */
	for (size_t i = 0; i < p->n_entries; i++) {
		const store_idx_entry_t *en = &p->entries[order[i]];

		w = store_lpstr_put(store_lpstr_put(w, en->code), en->value);
	}
	buf_added(&m->pbytes, len);
	if (g != groups)
		free(g);
	b->next_ordinal++;
	return 0;
}

/* Bytes the puts in memory take. */
static size_t
bulk_memory(const store_bulk_t *b)
{
	const bulk_mem_t *m = b->cur;

	return m->pbytes.len + m->ebytes.len + m->puts.n * sizeof(bulk_put_t) +
	       m->nents * sizeof(bulk_ent_t);
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

/* A memory part, sorted: arrays the caller frees. Entries are sorted group by group (the
 * first ngroups groups), the groups in key order. */
static void
bulk_mem_sort(const store_bulk_t *b, const bulk_mem_t *m, size_t ngroups, bulk_put_t **puts,
	      bulk_ent_t **ents)
{
	const unsigned char *pb = (const unsigned char *)m->pbytes.data;
	const unsigned char *eb = (const unsigned char *)m->ebytes.data;
	size_t *order = xreallocarray(NULL, ngroups + 1, sizeof(*order));
	size_t n = 0;

	*puts = xreallocarray(NULL, m->puts.n ? m->puts.n : 1, sizeof(**puts));
	*ents = xreallocarray(NULL, m->nents ? m->nents : 1, sizeof(**ents));
	for (size_t i = 0; i < m->puts.n; i++)
		(*puts)[i].rec = pb + m->puts.offs[i];
	qsort(*puts, m->puts.n, sizeof(**puts), bulk_put_qcmp);
	for (size_t i = 0; i < ngroups; i++)
		order[i] = i;
	qsort_r(order, ngroups, sizeof(*order), bulk_group_qcmp, (void *)b->groups);
	for (size_t i = 0; i < ngroups; i++) {
		const bulk_offs_t *o = &m->ents[order[i]];
		size_t plen = b->groups[order[i]].plen;

		for (size_t j = 0; j < o->n; j++)
			bulk_ent_prefix(eb + o->offs[j], plen, &(*ents)[n + j]);
		bulk_ents_sort(*ents + n, o->n);
		n += o->n;
	}
	free(order);
}

static void
bulk_mem_reset(bulk_mem_t *m)
{
	buf_reset(&m->pbytes);
	buf_reset(&m->ebytes);
	m->puts.n = 0;
	m->nents = 0;
	for (size_t i = 0; i < BULK_MAX_GROUPS; i++)
		m->ents[i].n = 0;
}

static void
bulk_mem_free(bulk_mem_t *m)
{
	buf_free(&m->pbytes);
	buf_free(&m->ebytes);
	free(m->puts.offs);
	for (size_t i = 0; i < BULK_MAX_GROUPS; i++)
		free(m->ents[i].offs);
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
 * *r. Runs in the spill thread: it touches only m, the groups it was given and the folder. */
static int
bulk_spill_write(const store_bulk_t *b, const bulk_mem_t *m, size_t ngroups, unsigned index,
		 bulk_run_t *r)
{
	bulk_put_t *puts;
	bulk_ent_t *ents;
	char *path = bulk_run_path(b, index), *tmp = xasprintf("%s.tmp", path);
	unsigned char head[BULK_HEAD];
	buf_t w = BUF_INIT;
	int fd, dfd, rc = 0;

	memset(r, 0, sizeof(*r));
	bulk_mem_sort(b, m, ngroups, &puts, &ents);
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
	for (size_t i = 0; rc == 0 && i < m->nents; i++) {
		buf_append(&w, ents[i].rec, bulk_ent_len(ents[i].rec));
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
		r->len = sizeof(head) + m->pbytes.len + m->ebytes.len;
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
	free(ents);
	free(path);
	free(tmp);
	return rc;
}

static void *
bulk_spill_main(void *arg)
{
	store_bulk_t *b = arg;

	b->spill_rc = bulk_spill_write(b, b->spill_mem, b->spill_ngroups, b->nruns, &b->spill_run);
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
	b->spill_ngroups = b->ngroups;
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
bulk_src_next(bulk_src_t *src, bool ents)
{
	if (src->puts != NULL || src->ents != NULL) {
		src->cur =
		    src->i < src->n ? (ents ? src->ents[src->i].rec : src->puts[src->i].rec) : NULL;
		src->i++;
		return;
	}
	if (src->p >= src->end) {
		src->cur = NULL;
		return;
	}
	src->cur = src->p;
	src->p += ents ? bulk_ent_len(src->p) : be32_read(src->p);
}

/* A binary heap of source indexes by their current record. */
typedef struct {
	bulk_src_t *src;
	unsigned *h;
	unsigned n;
	bool ents;
} bulk_heap_t;

static bool
bulk_heap_less(const bulk_heap_t *hp, unsigned a, unsigned b)
{
	const unsigned char *x = hp->src[a].cur, *y = hp->src[b].cur;

	return (hp->ents ? bulk_ent_cmp(x, y) : bulk_put_cmp(x, y)) < 0;
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
bulk_heap_init(bulk_heap_t *hp, bulk_src_t *src, unsigned nsrc, bool ents)
{
	hp->src = src;
	hp->ents = ents;
	hp->h = xreallocarray(NULL, nsrc ? nsrc : 1, sizeof(*hp->h));
	hp->n = 0;
	for (unsigned i = 0; i < nsrc; i++) {
		bulk_src_next(&src[i], ents);
		if (src[i].cur != NULL)
			hp->h[hp->n++] = i;
	}
	for (unsigned i = hp->n / 2; i-- > 0;)
		bulk_heap_down(hp, i);
}

/* The smallest current record, or NULL; advances its source. */
static const unsigned char *
bulk_heap_pop(bulk_heap_t *hp)
{
	bulk_src_t *s;
	const unsigned char *rec;

	if (hp->n == 0)
		return NULL;
	s = &hp->src[hp->h[0]];
	rec = s->cur;
	bulk_src_next(s, hp->ents);
	if (s->cur == NULL)
		hp->h[0] = hp->h[--hp->n];
	bulk_heap_down(hp, 0);
	return rec;
}

static void
bulk_srcs(store_bulk_t *b, bulk_src_t *src, const bulk_put_t *puts, const bulk_ent_t *ents,
	  bool entries)
{
	for (unsigned i = 0; i < b->nruns; i++) {
		const unsigned char *base = b->runs[i].map;

		memset(&src[i], 0, sizeof(src[i]));
		src[i].p = base + BULK_HEAD + (entries ? b->runs[i].put_bytes : 0);
		src[i].end =
		    entries ? base + b->runs[i].len : base + BULK_HEAD + b->runs[i].put_bytes;
	}
	memset(&src[b->nruns], 0, sizeof(src[0]));
	if (entries) {
		src[b->nruns].ents = ents;
		src[b->nruns].n = b->cur->nents;
	} else {
		src[b->nruns].puts = puts;
		src[b->nruns].n = b->cur->puts.n;
	}
	/* an empty memory part must still look like a memory source */
	if (src[b->nruns].n == 0) {
		src[b->nruns].p = src[b->nruns].end = NULL;
		src[b->nruns].puts = NULL;
		src[b->nruns].ents = NULL;
	}
}

/* The merge runs in a thread of its own while the load's thread makes the LMDB writes: it
 * hands over the records in order, in blocks of pointers (they point into the runs' maps and
 * the sorted memory part, which outlive the load). */
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
bulk_feed_start(bulk_feed_t *f, bulk_src_t *src, unsigned nsrc, bool ents)
{
	memset(f, 0, sizeof(*f));
	bulk_heap_init(&f->hp, src, nsrc, ents);
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

static void
bulk_feed_end(bulk_feed_t *f)
{
	if (f->threaded) {
		pthread_mutex_lock(&f->mu);
		f->stop = true;
		pthread_cond_broadcast(&f->cv);
		pthread_mutex_unlock(&f->mu);
		pthread_join(f->th, NULL);
	}
	pthread_mutex_destroy(&f->mu);
	pthread_cond_destroy(&f->cv);
	for (int i = 0; i < BULK_FEED_DEPTH; i++)
		free(f->blocks[i]);
	free(f->hp.h);
	memset(f, 0, sizeof(*f));
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
	bulk_ent_t *ents = NULL;
	bulk_feed_t feed;
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
	b->timings.wait_ns += time_mono_ns() - t0;
	if (rc < 0) {
		store_txn_fail(t, rc);
		goto out;
	}
	/* the pages this load writes, with a margin: sorted inserts fill the leaves (measured: 2.2
	 * GiB of pages for 2.5 GB of puts and entries) */
	rc = store_reserve_ahead(t,
				 (b->run_bytes + b->cur->pbytes.len + b->cur->ebytes.len) / 2 * 3);
	if (rc < 0) {
		store_txn_fail(t, rc);
		goto out;
	}
	src = xcalloc(b->nruns + 1, sizeof(*src));
	bulk_mem_sort(b, b->cur, b->ngroups, &puts, &ents);

	/* The resource pass. */
	t0 = time_mono_ns();
	bulk_srcs(b, src, puts, ents, false);
	bulk_feed_start(&feed, src, b->nruns + 1, false);
	feeding = true;
	t->idx_deferred = true;
	while ((rec = bulk_feed_next(&feed)) != NULL) {
		bulk_put_rec_t r;
		const unsigned char *q;
		store_res_put_t p;
		store_res_result_t res;
		slice_t type;

		bulk_put_decode(rec, &r);
		q = r.entries;
		for (size_t i = 0; i < r.nentries; i++) {
			entries[i].code = (slice_t){(const char *)q + 2, be16_read(q)};
			q += 2 + entries[i].code.len;
			entries[i].value = (slice_t){(const char *)q + 2, be16_read(q)};
			q += 2 + entries[i].value.len;
		}
		type = (slice_t){(const char *)r.key + 2, be16_read(r.key)};
		p = (store_res_put_t){
		    .type = type,
		    .id = {(const char *)r.key + 2 + type.len, r.klen - 2 - type.len},
		    .body = r.body,
		    .entries = entries,
		    .n_entries = r.nentries,
		    .now_ns = now_ns};
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
	b->timings.res_ns += time_mono_ns() - t0;
	if (rc < 0 || written == 0)
		goto out; /* nothing written (a file imported again): no entry to add */

	/* The index pass. */
	t0 = time_mono_ns();
	if ((rc = store_cursor(t, STORE_DB_IDX, &c)) < 0)
		goto out;
	bulk_srcs(b, src, puts, ents, true);
	bulk_feed_start(&feed, src, b->nruns + 1, true);
	feeding = true;
	while ((rec = bulk_feed_next(&feed)) != NULL) {
		size_t kl = be16_read(rec), il = be16_read(rec + 2 + kl);
		uint64_t ord = be64_read(rec + 4 + kl + il) - b->first_ordinal;
		MDB_val k = {kl, (void *)(rec + 2)}, v = {il, (void *)(rec + 4 + kl)};

		if (skip[ord / 8] & (1u << (ord % 8)))
			continue;
		rc = mdb_cursor_put(c, &k, &v, MDB_NODUPDATA);
		if (rc != 0 && rc != MDB_KEYEXIST) {
			rc = store_txn_fail(t, store_mdb_fail("bulk idx", rc));
			goto out;
		}
		rc = 0;
	}
	b->timings.idx_ns += time_mono_ns() - t0;
out:
	if (feeding)
		bulk_feed_end(&feed);
	free(skip);
	free(entries);
	free(src);
	free(puts);
	free(ents);
	return rc;
}

void
store_bulk_timings(const store_bulk_t *b, store_bulk_timings_t *out)
{
	*out = b->timings;
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
	for (size_t i = 0; i < b->ngroups; i++)
		free(b->groups[i].prefix);
	free(b->dir);
	free(b);
}
