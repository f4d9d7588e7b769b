/* The resource side of the store: versions of opaque resource bodies, their history, per-type
 * counts and search index entries, kept consistent with each other in one write transaction. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"
#include "lib/err.h"
#include "lib/xalloc.h"
#include "store/store.h"
#include "store/store_int.h"

/* res value: format, flags, be32 current version, be64 lastUpdated. */
#define STORE_RES_FORMAT 1
#define STORE_RES_VALUE  14
/* ver value: format, flags, be64 lastUpdated, be64 change sequence, then the body. */
#define STORE_VER_FORMAT 1
#define STORE_VER_HEAD   18
/* hist value: format, flags, be32 version, be64 lastUpdated, lpstr type, then the id. */
#define STORE_HIST_FORMAT 1
#define STORE_HIST_HEAD   14
/* idxrev value: format, then lpstr code + lpstr value per entry, sorted, no duplicates. */
#define STORE_IDXREV_FORMAT 1
#define STORE_FLAG_DELETED  0x01
/* meta key prefix of the per-type count of current, not deleted resources (be64). */
#define STORE_COUNT_PREFIX "res_count/"

/* res key: lpstr type, id. ver key: the res key, a 0 byte (below every id character, so one
 * resource's versions sort together), be32 version. */
#define STORE_RES_KEY_MAX   (2 + STORE_TYPE_MAX + STORE_ID_MAX)
#define STORE_VER_KEY_MAX   (STORE_RES_KEY_MAX + 5)
#define STORE_COUNT_KEY_MAX (sizeof(STORE_COUNT_PREFIX) - 1 + STORE_TYPE_MAX)
/* Index entries sorted on the stack up to this many; more is rare and allocates. */
#define STORE_IDX_STACK 64

static bool
store_type_is_valid(slice_t type)
{
	if (type.len == 0 || type.len > STORE_TYPE_MAX)
		return false;
	for (size_t i = 0; i < type.len; i++) {
		char c = type.ptr[i];

		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')))
			return false;
	}
	return true;
}

static bool
store_id_is_valid(slice_t id)
{
	if (id.len == 0 || id.len > STORE_ID_MAX)
		return false;
	for (size_t i = 0; i < id.len; i++) {
		char c = id.ptr[i];

		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '.'))
			return false;
	}
	return true;
}

/* A write's type and id: 0 or -FG_EINVAL (recorded for the caller to make sticky). */
static int
store_names_check(slice_t type, slice_t id, const char *op)
{
	if (store_type_is_valid(type) && store_id_is_valid(id))
		return 0;
	store_error_set("%s: resource type or id is empty, too long or has other characters "
			"than [A-Za-z0-9] (type) and [A-Za-z0-9.-] (id)",
			op);
	return -FG_EINVAL;
}

static int
store_slice_cmp(slice_t a, slice_t b)
{
	size_t n = a.len < b.len ? a.len : b.len;
	int r = n > 0 ? memcmp(a.ptr, b.ptr, n) : 0;

	if (r != 0)
		return r;
	return (a.len > b.len) - (a.len < b.len);
}

static MDB_val
store_res_key(unsigned char *kb, slice_t type, slice_t id)
{
	unsigned char *p = store_bytes_put(store_lpstr_put(kb, type), id);

	return (MDB_val){(size_t)(p - kb), kb};
}

static MDB_val
store_ver_key(unsigned char *kb, slice_t type, slice_t id, uint32_t version)
{
	MDB_val k = store_res_key(kb, type, id);

	kb[k.mv_size] = 0;
	store_be32_put(kb + k.mv_size + 1, version);
	k.mv_size += 5;
	return k;
}

static bool
store_val_has_prefix(const MDB_val *k, const unsigned char *prefix, size_t len)
{
	return k->mv_size >= len && memcmp(k->mv_data, prefix, len) == 0;
}

/* Decoders: 0 or -1, no side effects on failure; slices point into the record. */

/* A key that starts with lpstr type: the type and what follows it. */
static int
store_type_take(const MDB_val *k, slice_t *type, slice_t *rest)
{
	const unsigned char *p = k->mv_data;

	if (store_lpstr_take(&p, p + k->mv_size, type) < 0 || !store_type_is_valid(*type))
		return -1;
	*rest = slice_make((const char *)p,
			   k->mv_size - (size_t)(p - (const unsigned char *)k->mv_data));
	return 0;
}

static int
store_res_key_decode(const MDB_val *k, slice_t *type, slice_t *id)
{
	return store_type_take(k, type, id) == 0 && store_id_is_valid(*id) ? 0 : -1;
}

static int
store_ver_key_decode(const MDB_val *k, store_res_t *out)
{
	slice_t rest;
	const char *tail;

	if (store_type_take(k, &out->type, &rest) < 0 || rest.len < 6)
		return -1;
	tail = rest.ptr + rest.len - 5;
	out->id = slice_make(rest.ptr, rest.len - 5);
	if (tail[0] != 0 || !store_id_is_valid(out->id))
		return -1;
	out->version = be32_read(tail + 1);
	return out->version == 0 ? -1 : 0;
}

static int
store_ver_value_decode(const MDB_val *v, store_res_t *out)
{
	const unsigned char *p = v->mv_data;

	if (v->mv_size < STORE_VER_HEAD || p[0] != STORE_VER_FORMAT ||
	    (p[1] & ~STORE_FLAG_DELETED) != 0)
		return -1;
	out->deleted = (p[1] & STORE_FLAG_DELETED) != 0;
	out->last_updated_ns = be64_read(p + 2);
	out->seq = be64_read(p + 10);
	out->body = slice_make((const char *)p + STORE_VER_HEAD, v->mv_size - STORE_VER_HEAD);
	/* A delete has no body and only a delete lacks one. */
	return out->deleted == (out->body.len == 0) ? 0 : -1;
}

typedef struct {
	uint32_t version;
	bool deleted;
	uint64_t last_updated_ns;
} store_head_t;

static int
store_res_value_decode(const MDB_val *v, store_head_t *out)
{
	const unsigned char *p = v->mv_data;

	if (v->mv_size != STORE_RES_VALUE || p[0] != STORE_RES_FORMAT ||
	    (p[1] & ~STORE_FLAG_DELETED) != 0)
		return -1;
	out->deleted = (p[1] & STORE_FLAG_DELETED) != 0;
	out->version = be32_read(p + 2);
	out->last_updated_ns = be64_read(p + 6);
	return out->version == 0 ? -1 : 0;
}

/* Fills everything but the body. */
static int
store_hist_decode(const MDB_val *k, const MDB_val *v, store_res_t *out)
{
	const unsigned char *p = v->mv_data, *end = p + v->mv_size;

	if (k->mv_size != 8 || v->mv_size < STORE_HIST_HEAD || p[0] != STORE_HIST_FORMAT ||
	    (p[1] & ~STORE_FLAG_DELETED) != 0)
		return -1;
	out->seq = be64_read(k->mv_data);
	out->deleted = (p[1] & STORE_FLAG_DELETED) != 0;
	out->version = be32_read(p + 2);
	out->last_updated_ns = be64_read(p + 6);
	out->body = SLICE_NULL;
	p += STORE_HIST_HEAD;
	if (store_lpstr_take(&p, end, &out->type) < 0 || !store_type_is_valid(out->type))
		return -1;
	out->id = slice_make((const char *)p, (size_t)(end - p));
	return store_id_is_valid(out->id) && out->version != 0 && out->seq != 0 ? 0 : -1;
}

static int
store_res_corrupt(store_txn_t *t, const char *db, slice_t type, slice_t id)
{
	store_error_set("%s %.*s/%.*s: record does not decode", db, (int)type.len, type.ptr,
			(int)id.len, id.ptr);
	return store_txn_fail(t, -FG_ESTORE);
}

/* The current version of type/id with a single descent of the ver tree: the key just past this
 * resource's versions (its res key and a 1 byte), then one step back. */
static int
store_ver_current(store_txn_t *t, slice_t type, slice_t id, store_res_t *out)
{
	unsigned char kb[STORE_VER_KEY_MAX];
	MDB_val k = store_res_key(kb, type, id), v;
	size_t plen = k.mv_size;
	MDB_cursor *c = NULL;
	int rc;

	if ((rc = store_cursor(t, STORE_DB_VER, &c)) < 0)
		return rc;
	kb[plen] = 1;
	k.mv_size = plen + 1;
	rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
	if (rc == 0)
		rc = mdb_cursor_get(c, &k, &v, MDB_PREV);
	else if (rc == MDB_NOTFOUND)
		rc = mdb_cursor_get(c, &k, &v, MDB_LAST);
	if (rc == MDB_NOTFOUND)
		return -FG_ENOTFOUND;
	if (rc != 0)
		return store_txn_fail(t, store_mdb_fail("ver", rc));
	if (k.mv_size != plen + 5 || memcmp(k.mv_data, kb, plen) != 0 ||
	    ((const unsigned char *)k.mv_data)[plen] != 0)
		return -FG_ENOTFOUND;
	if (store_ver_key_decode(&k, out) < 0 || store_ver_value_decode(&v, out) < 0)
		return store_res_corrupt(t, "ver", type, id);
	return 0;
}

/* Completes r (type, id and version set) from its ver record. -FG_ENOTFOUND when there is none,
 * unless `named`: then the record named it, and its absence is damage. */
static int
store_ver_fill(store_txn_t *t, store_res_t *r, bool named)
{
	unsigned char kb[STORE_VER_KEY_MAX];
	MDB_val k = store_ver_key(kb, r->type, r->id, r->version), v;
	uint64_t seq = r->seq;
	int rc;

	rc = mdb_get(t->txn, t->s->dbi[STORE_DB_VER], &k, &v);
	if (rc == MDB_NOTFOUND && named) {
		store_error_set("ver %.*s/%.*s version %u: missing", (int)r->type.len, r->type.ptr,
				(int)r->id.len, r->id.ptr, (unsigned)r->version);
		return store_txn_fail(t, -FG_ESTORE);
	}
	if (rc != 0)
		return store_txn_fail(t, store_mdb_fail("ver", rc));
	if (store_ver_value_decode(&v, r) < 0 || (seq != 0 && r->seq != seq))
		return store_res_corrupt(t, "ver", r->type, r->id);
	return 0;
}

int
store_res_get(store_txn_t *t, slice_t type, slice_t id, store_res_t *out)
{
	int rc;

	if ((rc = store_txn_check(t, false, "res get")) < 0)
		return rc;
	if (!store_type_is_valid(type) || !store_id_is_valid(id))
		return -FG_ENOTFOUND;
	return store_ver_current(t, type, id, out);
}

int
store_res_vread(store_txn_t *t, slice_t type, slice_t id, uint32_t version, store_res_t *out)
{
	store_res_t r = {.type = type, .id = id, .version = version};
	int rc;

	if ((rc = store_txn_check(t, false, "res vread")) < 0)
		return rc;
	if (!store_type_is_valid(type) || !store_id_is_valid(id) || version == 0)
		return -FG_ENOTFOUND;
	if ((rc = store_ver_fill(t, &r, false)) < 0)
		return rc;
	*out = r;
	return 0;
}

/* Per-type counts in meta. */

static MDB_val
store_count_key(unsigned char *kb, slice_t type)
{
	memcpy(kb, STORE_COUNT_PREFIX, sizeof(STORE_COUNT_PREFIX) - 1);
	memcpy(kb + sizeof(STORE_COUNT_PREFIX) - 1, type.ptr, type.len);
	return (MDB_val){sizeof(STORE_COUNT_PREFIX) - 1 + type.len, kb};
}

static int
store_count_get(store_txn_t *t, slice_t type, uint64_t *count)
{
	unsigned char kb[STORE_COUNT_KEY_MAX];
	MDB_val k = store_count_key(kb, type), v;
	int rc;

	*count = 0;
	rc = mdb_get(t->txn, t->s->dbi[STORE_DB_META], &k, &v);
	if (rc == MDB_NOTFOUND)
		return 0;
	if (rc != 0)
		return store_txn_fail(t, store_mdb_fail("res count", rc));
	if (v.mv_size != 8) {
		store_error_set("meta %s%.*s: record of %zu bytes, not 8", STORE_COUNT_PREFIX,
				(int)type.len, type.ptr, v.mv_size);
		return store_txn_fail(t, -FG_ESTORE);
	}
	*count = be64_read(v.mv_data);
	return 0;
}

/* Adds delta (which may be negative) to a type's count. A count that reaches 0 is removed, so
 * the counts list the types in use. */
static int
store_count_add(store_txn_t *t, slice_t type, int64_t delta)
{
	unsigned char kb[STORE_COUNT_KEY_MAX], vb[8];
	MDB_val k = store_count_key(kb, type), v = {8, vb};
	uint64_t count;
	int rc;

	if ((rc = store_count_get(t, type, &count)) < 0)
		return rc;
	/* Damage could make it 0 where a resource dies; verify reports that, here it stays 0. */
	count = delta >= 0                 ? count + (uint64_t)delta
		: count > (uint64_t)-delta ? count - (uint64_t)-delta
					   : 0;
	if (count == 0)
		rc = mdb_del(t->txn, t->s->dbi[STORE_DB_META], &k, NULL);
	else {
		store_be64_put(vb, count);
		rc = mdb_put(t->txn, t->s->dbi[STORE_DB_META], &k, &v, 0);
	}
	if (rc != 0 && rc != MDB_NOTFOUND)
		return store_txn_fail(t, store_mdb_fail("res count", rc));
	return 0;
}

int
store_count_flush(store_txn_t *t)
{
	for (size_t i = 0; i < t->nborn; i++) {
		int rc = store_count_add(t, (slice_t){t->born[i].type, t->born[i].len},
					 (int64_t)t->born[i].n);

		if (rc < 0)
			return rc;
	}
	t->nborn = 0;
	return 0;
}

/* A resource of type came to life in a bulk load's resource pass: counted in t->born. */
static int
store_count_born(store_txn_t *t, slice_t type)
{
	int rc;

	for (size_t i = 0; i < t->nborn; i++)
		if (t->born[i].len == type.len &&
		    memcmp(t->born[i].type, type.ptr, type.len) == 0) {
			t->born[i].n++;
			return 0;
		}
	if (t->nborn == sizeof(t->born) / sizeof(t->born[0]) && (rc = store_count_flush(t)) < 0)
		return rc;
	memcpy(t->born[t->nborn].type, type.ptr, type.len);
	t->born[t->nborn].len = type.len;
	t->born[t->nborn].n = 1;
	t->nborn++;
	return 0;
}

int
store_res_count(store_txn_t *t, slice_t type, uint64_t *count)
{
	int rc;

	*count = 0;
	if ((rc = store_txn_check(t, false, "res count")) < 0)
		return rc;
	return store_type_is_valid(type) ? store_count_get(t, type, count) : 0;
}

typedef struct {
	store_txn_t *t;
	store_count_cb cb;
	void *ctx;
	bool past; /* the walk left the counts */
} store_count_each_t;

static int
store_count_visit(void *ctx, const MDB_val *k, const MDB_val *v)
{
	store_count_each_t *e = ctx;
	const size_t plen = sizeof(STORE_COUNT_PREFIX) - 1;
	slice_t type;

	if (!store_val_has_prefix(k, (const unsigned char *)STORE_COUNT_PREFIX, plen)) {
		e->past = true;
		return 1;
	}
	type = slice_make((const char *)k->mv_data + plen, k->mv_size - plen);
	if (v->mv_size != 8 || !store_type_is_valid(type)) {
		store_error_set("meta: a %s record does not decode", STORE_COUNT_PREFIX);
		return store_txn_fail(e->t, -FG_ESTORE);
	}
	return e->cb(e->ctx, type, be64_read(v->mv_data));
}

int
store_res_foreach_count(store_txn_t *t, store_count_cb cb, void *ctx)
{
	store_count_each_t e = {t, cb, ctx, false};
	MDB_val k = {sizeof(STORE_COUNT_PREFIX) - 1, STORE_COUNT_PREFIX};
	int rc;

	if ((rc = store_txn_check(t, false, "res counts")) < 0)
		return rc;
	rc = store_range(t, STORE_DB_META, &k, store_count_visit, &e);
	return e.past ? 0 : rc;
}

/* Search index entries. */

size_t
store_idx_value_max(slice_t type, slice_t code)
{
	size_t fixed = 4 + type.len + code.len;

	return fixed < STORE_KEY_MAX ? STORE_KEY_MAX - fixed : 0;
}

MDB_val
store_idx_key(unsigned char *kb, slice_t type, slice_t code, slice_t value)
{
	unsigned char *p = store_bytes_put(store_lpstr_put(store_lpstr_put(kb, type), code), value);

	return (MDB_val){(size_t)(p - kb), kb};
}

static int
store_entries_check(const store_t *s, slice_t type, const store_idx_entry_t *e, size_t n,
		    const char *op)
{
	for (size_t i = 0; i < n; i++) {
		if (e[i].code.len == 0) {
			store_error_set("%s: index entry %zu has no code", op, i);
			return -FG_EINVAL;
		}
		if (4 + type.len + e[i].code.len + e[i].value.len > s->max_key) {
			store_error_set("%s: index entry %zu is longer than the key limit (%zu "
					"bytes): truncate its value",
					op, i, s->max_key);
			return -FG_ETOOBIG;
		}
	}
	return 0;
}

static int
store_entry_cmp(const void *a, const void *b)
{
	const store_idx_entry_t *x = *(const store_idx_entry_t *const *)a;
	const store_idx_entry_t *y = *(const store_idx_entry_t *const *)b;
	int r = store_slice_cmp(x->code, y->code);

	return r != 0 ? r : store_slice_cmp(x->value, y->value);
}

/* One entry of an idxrev list at *p, which it advances; -1 when it does not decode. */
static int
store_idxrev_take(const unsigned char **p, const unsigned char *end, store_idx_entry_t *e)
{
	if (store_lpstr_take(p, end, &e->code) < 0 || store_lpstr_take(p, end, &e->value) < 0)
		return -1;
	return e->code.len > 0 ? 0 : -1;
}

/* Adds (put) or removes one idx entry. An entry already there, or already gone, is fine. */
static int
store_idx_apply(store_txn_t *t, slice_t type, slice_t id, const store_idx_entry_t *e, bool put)
{
	unsigned char kb[STORE_KEY_MAX];
	MDB_val k, v = {id.len, (void *)id.ptr};
	int rc;

	if (put && t->idx_deferred)
		return 0;
	k = store_idx_key(kb, type, e->code, e->value);
	if (put)
		rc = store_cursor_put(t, STORE_DB_IDX, &k, &v, MDB_NODUPDATA);
	else
		rc = store_cursor_del(t, STORE_DB_IDX, &k, &v);
	if (rc != 0 && rc != MDB_KEYEXIST && rc != MDB_NOTFOUND)
		return store_txn_fail(t, store_mdb_fail("idx", rc));
	return 0;
}

/* Makes idx hold exactly entries for type/id: a merge of the sorted new list with the old one
 * from idxrev, so entries that stay are not touched; then idxrev gets the new list. */
static int
store_idx_replace(store_txn_t *t, slice_t type, slice_t id, const store_idx_entry_t *entries,
		  size_t n)
{
	const store_idx_entry_t *stack_sorted[STORE_IDX_STACK], **sorted = stack_sorted, *ep;
	unsigned char kb[STORE_RES_KEY_MAX], stack_old[2048], *old = stack_old, *w;
	MDB_val k = store_res_key(kb, type, id), v;
	const unsigned char *p, *end;
	store_idx_entry_t e;
	size_t m = 0, i = 0, len = 1;
	bool have = false, changed = false, unsorted = false;
	int rc, err = 0;

	if (n > STORE_IDX_STACK)
		sorted = xreallocarray(NULL, n, sizeof(*sorted));
	for (size_t j = 0; j < n; j++)
		sorted[j] = &entries[j];
	/* a bulk load hands them over sorted already: one pass to see that */
	for (size_t j = 1; j < n && !unsorted; j++)
		unsorted = store_entry_cmp(&sorted[j - 1], &sorted[j]) > 0;
	if (unsorted)
		qsort(sorted, n, sizeof(*sorted), store_entry_cmp);
	for (size_t j = 0; j < n; j++)
		if (m == 0 || store_entry_cmp(&sorted[m - 1], &sorted[j]) != 0)
			sorted[m++] = sorted[j];

	rc = store_cursor_get(t, STORE_DB_IDXREV, &k, &v);
	if (rc == MDB_NOTFOUND) {
		v.mv_size = 0;
	} else if (rc != 0) {
		err = store_txn_fail(t, store_mdb_fail("idxrev", rc));
		goto done;
	} else if (v.mv_size < 1 || *(const unsigned char *)v.mv_data != STORE_IDXREV_FORMAT) {
		err = store_res_corrupt(t, "idxrev", type, id);
		goto done;
	}
	/* The old list is borrowed from the map, which the idx writes below may change: copy. */
	if (v.mv_size > sizeof(stack_old))
		old = xmalloc(v.mv_size);
	if (v.mv_size > 0)
		memcpy(old, v.mv_data, v.mv_size);
	p = old + (v.mv_size > 0);
	end = old + v.mv_size;
	ep = &e;
	for (;;) {
		int cmp;

		if (!have && p < end) {
			if (store_idxrev_take(&p, end, &e) < 0) {
				err = store_res_corrupt(t, "idxrev", type, id);
				goto done;
			}
			have = true;
		}
		if (!have && i == m)
			break;
		cmp = !have ? 1 : i == m ? -1 : store_entry_cmp(&ep, &sorted[i]);
		if (cmp < 0)
			err = store_idx_apply(t, type, id, &e, false);
		else if (cmp > 0)
			err = store_idx_apply(t, type, id, sorted[i], true);
		if (err < 0)
			goto done;
		changed |= cmp != 0;
		have = have && cmp > 0;
		i += cmp >= 0;
	}
	if (!changed)
		goto done;
	if (m == 0) {
		rc = store_cursor_del(t, STORE_DB_IDXREV, &k, NULL);
	} else {
		for (i = 0; i < m; i++)
			len += 4 + sorted[i]->code.len + sorted[i]->value.len;
		v = (MDB_val){len, NULL};
		rc = store_cursor_put(t, STORE_DB_IDXREV, &k, &v, MDB_RESERVE);
		if (rc == 0) {
			w = v.mv_data;
			*w++ = STORE_IDXREV_FORMAT;
			for (i = 0; i < m; i++)
				w = store_lpstr_put(store_lpstr_put(w, sorted[i]->code),
						    sorted[i]->value);
		}
	}
	if (rc != 0)
		err = store_txn_fail(t, store_mdb_fail("idxrev", rc));
done:
	if (sorted != stack_sorted)
		free(sorted);
	if (old != stack_old)
		free(old);
	return err;
}

/* Versions and history. */

/* The last change sequence and its lastUpdated, once per transaction (another process may have
 * written since the last one). */
static int
store_hist_last(store_txn_t *t)
{
	MDB_cursor *c = NULL;
	MDB_val k, v;
	store_res_t r;
	int rc;

	if (t->have_hist)
		return 0;
	if ((rc = store_cursor(t, STORE_DB_HIST, &c)) < 0)
		return rc;
	rc = mdb_cursor_get(c, &k, &v, MDB_LAST);
	if (rc == MDB_NOTFOUND) {
		t->hist_seq = 0;
		t->hist_ns = 0;
	} else if (rc != 0) {
		return store_txn_fail(t, store_mdb_fail("hist last", rc));
	} else if (store_hist_decode(&k, &v, &r) < 0) {
		store_error_set("hist: the last record does not decode");
		return store_txn_fail(t, -FG_ESTORE);
	} else {
		t->hist_seq = r.seq;
		t->hist_ns = r.last_updated_ns;
	}
	t->have_hist = true;
	return 0;
}

/* Writes version prev + 1 of type/id (an empty body: a delete) with its res record, history
 * entries, index entries, and the type's count when the resource comes to life or dies. */
static int
store_res_write(store_txn_t *t, slice_t type, slice_t id, uint32_t prev, bool was_live,
		slice_t body, const store_idx_entry_t *entries, size_t n, uint64_t now_ns,
		store_res_result_t *out)
{
	unsigned char kb[STORE_VER_KEY_MAX], rb[STORE_RES_VALUE], *p;
	unsigned char flags = body.len == 0 ? STORE_FLAG_DELETED : 0;
	bool live = body.len > 0;
	uint32_t version = prev + 1;
	uint64_t seq, ns;
	MDB_val k, v;
	int rc;

	if (prev == UINT32_MAX) {
		store_error_set("res put %.*s/%.*s: no version number left", (int)type.len,
				type.ptr, (int)id.len, id.ptr);
		return store_txn_fail(t, -FG_ETOOBIG);
	}
	if ((rc = store_hist_last(t)) < 0)
		return rc;
	seq = t->hist_seq + 1;
	/* lastUpdated never goes back, so history walks newest first can stop at _since. */
	ns = now_ns > t->hist_ns ? now_ns : t->hist_ns;

	k = store_ver_key(kb, type, id, version);
	v = (MDB_val){STORE_VER_HEAD + body.len, NULL};
	/* RESERVE: the body is copied straight into the map; NOOVERWRITE: a version is forever. */
	rc = store_cursor_put(t, STORE_DB_VER, &k, &v, MDB_NOOVERWRITE | MDB_RESERVE);
	if (rc != 0)
		return store_txn_fail(t, store_mdb_fail("ver put", rc));
	p = v.mv_data;
	p[0] = STORE_VER_FORMAT;
	p[1] = flags;
	store_be64_put(p + 2, ns);
	store_be64_put(p + 10, seq);
	store_bytes_put(p + STORE_VER_HEAD, body);

	k = store_res_key(kb, type, id);
	rb[0] = STORE_RES_FORMAT;
	rb[1] = flags;
	store_be32_put(rb + 2, version);
	store_be64_put(rb + 6, ns);
	v = (MDB_val){sizeof(rb), rb};
	rc = store_cursor_put(t, STORE_DB_RES, &k, &v, 0);
	if (rc != 0)
		return store_txn_fail(t, store_mdb_fail("res put", rc));

	k = store_seq_key(kb, seq);
	v = (MDB_val){STORE_HIST_HEAD + 2 + type.len + id.len, NULL};
	rc = store_cursor_put(t, STORE_DB_HIST, &k, &v, MDB_APPEND | MDB_RESERVE);
	if (rc != 0)
		return store_txn_fail(t, store_mdb_fail("hist put", rc));
	p = v.mv_data;
	p[0] = STORE_HIST_FORMAT;
	p[1] = flags;
	store_be32_put(p + 2, version);
	store_be64_put(p + 6, ns);
	store_bytes_put(store_lpstr_put(p + STORE_HIST_HEAD, type), id);
	t->hist_seq = seq;
	t->hist_ns = ns;

	p = store_lpstr_put(kb, type);
	store_be64_put(p, seq);
	k = (MDB_val){(size_t)(p + 8 - kb), kb};
	v = (MDB_val){0, kb}; /* empty, but not NULL: LMDB copies from it */
	rc = store_cursor_put(t, STORE_DB_HISTTYPE, &k, &v, 0);
	if (rc != 0)
		return store_txn_fail(t, store_mdb_fail("histtype put", rc));

	if ((rc = store_idx_replace(t, type, id, entries, n)) < 0)
		return rc;
	if (live && !was_live && t->idx_deferred) {
		if ((rc = store_count_born(t, type)) < 0)
			return rc;
	} else if (live != was_live && (rc = store_count_add(t, type, live ? 1 : -1)) < 0) {
		return rc;
	}
	*out = (store_res_result_t){version, ns, false, live && !was_live};
	return 0;
}

int
store_res_put_valid(const store_t *s, const store_res_put_t *p, const char *op)
{
	int rc;

	if ((rc = store_names_check(p->type, p->id, op)) < 0 ||
	    (rc = store_entries_check(s, p->type, p->entries, p->n_entries, op)) < 0)
		return rc;
	if (p->body.len == 0) {
		store_error_set("%s: empty body", op);
		return -FG_EINVAL;
	}
	return 0;
}

int
store_res_put(store_txn_t *t, const store_res_put_t *p, store_res_result_t *out)
{
	store_res_t cur;
	bool exists, live;
	int rc;

	*out = (store_res_result_t){0};
	if ((rc = store_txn_check(t, true, "res put")) < 0)
		return store_txn_fail(t, rc);
	if ((rc = store_res_put_valid(t->s, p, "res put")) < 0)
		return store_txn_fail(t, rc);
	rc = store_ver_current(t, p->type, p->id, &cur);
	if (rc < 0 && rc != -FG_ENOTFOUND)
		return rc;
	exists = rc == 0;
	live = exists && !cur.deleted;
	if (exists) {
		out->version = cur.version;
		out->last_updated_ns = cur.last_updated_ns;
	}
	if ((p->if_match != 0 && (!exists || cur.version != p->if_match)) ||
	    (p->create_only && live)) {
		store_error_set("res put: %s", p->create_only && live ? "the resource exists"
								      : "version conflict");
		return -FG_EEXIST; /* an answer: the transaction stays usable */
	}
	/* The no-op: one descent of the ver tree above and a memcmp. */
	if (live && slice_eq(cur.body, p->body)) {
		out->unchanged = true;
		return 0;
	}
	return store_res_write(t, p->type, p->id, exists ? cur.version : 0, live, p->body,
			       p->entries, p->n_entries, p->now_ns, out);
}

int
store_res_delete(store_txn_t *t, slice_t type, slice_t id, uint64_t now_ns, store_res_result_t *out)
{
	store_res_t cur;
	int rc;

	*out = (store_res_result_t){0};
	if ((rc = store_txn_check(t, true, "res delete")) < 0)
		return store_txn_fail(t, rc);
	if ((rc = store_names_check(type, id, "res delete")) < 0)
		return store_txn_fail(t, rc);
	if ((rc = store_ver_current(t, type, id, &cur)) < 0)
		return rc;
	if (cur.deleted) {
		*out = (store_res_result_t){cur.version, cur.last_updated_ns, true, false};
		return 0;
	}
	return store_res_write(t, type, id, cur.version, true, SLICE_NULL, NULL, 0, now_ns, out);
}

int
store_idx_set(store_txn_t *t, slice_t type, slice_t id, const store_idx_entry_t *entries, size_t n)
{
	unsigned char kb[STORE_RES_KEY_MAX];
	store_head_t head;
	MDB_val k, v;
	int rc;

	if ((rc = store_txn_check(t, true, "idx set")) < 0)
		return store_txn_fail(t, rc);
	if ((rc = store_names_check(type, id, "idx set")) < 0 ||
	    (rc = store_entries_check(t->s, type, entries, n, "idx set")) < 0)
		return store_txn_fail(t, rc);
	k = store_res_key(kb, type, id);
	rc = mdb_get(t->txn, t->s->dbi[STORE_DB_RES], &k, &v);
	if (rc != 0)
		return store_txn_fail(t, store_mdb_fail("idx set", rc));
	if (store_res_value_decode(&v, &head) < 0)
		return store_res_corrupt(t, "res", type, id);
	if (head.deleted)
		return -FG_ENOTFOUND;
	return store_idx_replace(t, type, id, entries, n);
}

/* Deletes every record of db whose key starts with prefix. */
static int
store_del_prefix(store_txn_t *t, int db, const unsigned char *prefix, size_t len)
{
	MDB_cursor *c = NULL;
	MDB_val k, v;
	int rc;

	if ((rc = store_cursor(t, db, &c)) < 0)
		return rc;
	for (;;) {
		k = (MDB_val){len, (void *)prefix};
		rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
		if (rc == MDB_NOTFOUND || (rc == 0 && !store_val_has_prefix(&k, prefix, len)))
			return 0;
		if (rc == 0)
			rc = mdb_cursor_del(c,
					    store_dbs[db].flags & MDB_DUPSORT ? MDB_NODUPDATA : 0);
		if (rc != 0)
			return store_txn_fail(t, store_mdb_fail(store_dbs[db].name, rc));
	}
}

int
store_idx_clear_type(store_txn_t *t, slice_t type)
{
	unsigned char kb[2 + STORE_TYPE_MAX];
	size_t len;
	int rc;

	if ((rc = store_txn_check(t, true, "idx clear")) < 0)
		return store_txn_fail(t, rc);
	if (!store_type_is_valid(type)) {
		store_error_set("idx clear: bad resource type");
		return store_txn_fail(t, -FG_EINVAL);
	}
	len = (size_t)(store_lpstr_put(kb, type) - kb);
	if ((rc = store_del_prefix(t, STORE_DB_IDX, kb, len)) < 0)
		return rc;
	return store_del_prefix(t, STORE_DB_IDXREV, kb, len);
}

typedef enum { STORE_MATCH_EQ, STORE_MATCH_PREFIX, STORE_MATCH_RANGE } store_match_t;

/* Walks idx from type/code/from while the values match. */
static int
store_idx_scan(store_txn_t *t, slice_t type, slice_t code, slice_t from, const slice_t *hi,
	       store_match_t match, store_idx_cb cb, void *ctx)
{
	unsigned char kb[STORE_KEY_MAX];
	MDB_cursor *c;
	MDB_val k, v;
	size_t plen;
	int rc, ret = 0;

	if ((rc = store_txn_check(t, false, "idx search")) < 0)
		return rc;
	if (!store_type_is_valid(type) || code.len == 0)
		return 0; /* nothing is indexed under it */
	if (4 + type.len + code.len + from.len > STORE_KEY_MAX) {
		store_error_set("idx search: value longer than the key limit: truncate it");
		return store_txn_fail(t, -FG_ETOOBIG);
	}
	k = store_idx_key(kb, type, code, from);
	plen = k.mv_size - from.len;
	rc = mdb_cursor_open(t->txn, t->s->dbi[STORE_DB_IDX], &c);
	if (rc != 0)
		return store_txn_fail(t, store_mdb_fail("idx", rc));
	for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0;
	     rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
		slice_t value;

		if (!store_val_has_prefix(&k, kb, plen))
			break;
		value = slice_make((const char *)k.mv_data + plen, k.mv_size - plen);
		if ((match == STORE_MATCH_EQ && !slice_eq(value, from)) ||
		    (match == STORE_MATCH_PREFIX &&
		     (value.len < from.len ||
		      store_slice_cmp(slice_make(value.ptr, from.len), from) != 0)) ||
		    (match == STORE_MATCH_RANGE && hi != NULL && store_slice_cmp(value, *hi) >= 0))
			break;
		if ((ret = cb(ctx, value, slice_make(v.mv_data, v.mv_size))) != 0)
			break;
	}
	mdb_cursor_close(c);
	if (ret != 0)
		return ret;
	if (rc != 0 && rc != MDB_NOTFOUND)
		return store_txn_fail(t, store_mdb_fail("idx", rc));
	return 0;
}

int
store_idx_foreach_eq(store_txn_t *t, slice_t type, slice_t code, slice_t value, store_idx_cb cb,
		     void *ctx)
{
	return store_idx_scan(t, type, code, value, NULL, STORE_MATCH_EQ, cb, ctx);
}

int
store_idx_foreach_range(store_txn_t *t, slice_t type, slice_t code, const slice_t *lo,
			const slice_t *hi, store_idx_cb cb, void *ctx)
{
	return store_idx_scan(t, type, code, lo != NULL ? *lo : SLICE_NULL, hi, STORE_MATCH_RANGE,
			      cb, ctx);
}

int
store_idx_foreach_prefix(store_txn_t *t, slice_t type, slice_t code, slice_t prefix,
			 store_idx_cb cb, void *ctx)
{
	return store_idx_scan(t, type, code, prefix, NULL, STORE_MATCH_PREFIX, cb, ctx);
}

/* Iterations: each opens its own cursor, so callbacks may use the transaction's. */

int
store_res_foreach_type(store_txn_t *t, slice_t type, slice_t after_id, store_res_cb cb, void *ctx)
{
	unsigned char kb[STORE_RES_KEY_MAX];
	MDB_cursor *c;
	MDB_val k, v;
	size_t plen;
	int rc, ret = 0;

	if ((rc = store_txn_check(t, false, "res list")) < 0)
		return rc;
	if (!store_type_is_valid(type))
		return 0;
	/* No id is longer: those after the cut one are those after after_id. */
	if (after_id.len > STORE_ID_MAX)
		after_id.len = STORE_ID_MAX;
	k = store_res_key(kb, type, after_id);
	plen = 2 + type.len;
	rc = mdb_cursor_open(t->txn, t->s->dbi[STORE_DB_RES], &c);
	if (rc != 0)
		return store_txn_fail(t, store_mdb_fail("res", rc));
	rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
	if (rc == 0 && after_id.len > 0 && k.mv_size == plen + after_id.len &&
	    memcmp(k.mv_data, kb, k.mv_size) == 0)
		rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
	for (; rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
		store_res_t r = {0};
		store_head_t head;

		if (!store_val_has_prefix(&k, kb, plen))
			break;
		if (store_res_key_decode(&k, &r.type, &r.id) < 0 ||
		    store_res_value_decode(&v, &head) < 0) {
			store_error_set("res: a %.*s record does not decode", (int)type.len,
					type.ptr);
			ret = store_txn_fail(t, -FG_ESTORE);
			break;
		}
		if (head.deleted)
			continue;
		r.version = head.version;
		if ((ret = store_ver_fill(t, &r, true)) != 0 || (ret = cb(ctx, &r)) != 0)
			break;
	}
	mdb_cursor_close(c);
	if (ret != 0)
		return ret;
	if (rc != 0 && rc != MDB_NOTFOUND)
		return store_txn_fail(t, store_mdb_fail("res", rc));
	return 0;
}

/* Walks a cursor backwards from its position (rc: the positioning's result, MDB_NOTFOUND when
 * it ran off the end), calling visit on each record until visit returns non-zero; closes c.
 * Returns 0 or a store failure. */
static int
store_walk_back(store_txn_t *t, MDB_cursor *c, int db, MDB_val *k, int rc, store_visit_fn visit,
		void *ctx)
{
	MDB_val v;

	if (rc == 0)
		rc = mdb_cursor_get(c, k, &v, MDB_PREV);
	else if (rc == MDB_NOTFOUND)
		rc = mdb_cursor_get(c, k, &v, MDB_LAST);
	for (; rc == 0; rc = mdb_cursor_get(c, k, &v, MDB_PREV))
		if (visit(ctx, k, &v) != 0)
			break;
	mdb_cursor_close(c);
	if (rc != 0 && rc != MDB_NOTFOUND)
		return store_txn_fail(t, store_mdb_fail(store_dbs[db].name, rc));
	return 0;
}

/* One history walk: its bounds, its callback and what the walk returns. */
typedef struct {
	store_txn_t *t;
	const unsigned char *prefix; /* the keys of interest start with it */
	size_t plen;
	uint64_t since_ns;
	store_res_cb cb;
	void *ctx;
	int ret; /* the callback's non-zero return or a failure; 0 when the walk ran out */
} store_hist_each_t;

/* Hands r to the callback unless it is older than since_ns; non-zero: stop the walk. */
static int
store_hist_emit(store_hist_each_t *e, store_res_t *r, bool fill)
{
	if (r->last_updated_ns < e->since_ns)
		return 1;
	if (fill && (e->ret = store_ver_fill(e->t, r, true)) < 0)
		return 1;
	e->ret = e->cb(e->ctx, r);
	return e->ret;
}

static int
store_hist_instance_visit(void *ctx, const MDB_val *k, const MDB_val *v)
{
	store_hist_each_t *e = ctx;
	store_res_t r;

	if (k->mv_size != e->plen + 5 || memcmp(k->mv_data, e->prefix, e->plen) != 0 ||
	    ((const unsigned char *)k->mv_data)[e->plen] != 0)
		return 1;
	if (store_ver_key_decode(k, &r) < 0 || store_ver_value_decode(v, &r) < 0) {
		store_error_set("ver: a record does not decode");
		e->ret = store_txn_fail(e->t, -FG_ESTORE);
		return 1;
	}
	return store_hist_emit(e, &r, false);
}

/* The history entry under seq, decoded (body not filled). */
static int
store_hist_get(store_txn_t *t, uint64_t seq, store_res_t *r)
{
	unsigned char kb[8];
	MDB_val k = store_seq_key(kb, seq), v;
	int rc = mdb_get(t->txn, t->s->dbi[STORE_DB_HIST], &k, &v);

	if (rc != 0)
		return store_txn_fail(t, store_mdb_fail("hist", rc));
	/* The key passed to mdb_get is ours: decode against it, the slices point into v. */
	if (store_hist_decode(&k, &v, r) < 0) {
		store_error_set("hist %llu: record does not decode", (unsigned long long)seq);
		return store_txn_fail(t, -FG_ESTORE);
	}
	return 0;
}

static int
store_hist_type_visit(void *ctx, const MDB_val *k, const MDB_val *v)
{
	store_hist_each_t *e = ctx;
	uint64_t seq;
	store_res_t r;

	if (k->mv_size != e->plen + 8 || memcmp(k->mv_data, e->prefix, e->plen) != 0)
		return 1;
	seq = be64_read((const unsigned char *)k->mv_data + e->plen);
	if ((e->ret = store_hist_get(e->t, seq, &r)) < 0)
		return 1;
	if (r.type.len + 2 != e->plen || memcmp(r.type.ptr, e->prefix + 2, r.type.len) != 0) {
		store_error_set("histtype: change %llu is of another type",
				(unsigned long long)seq);
		e->ret = store_txn_fail(e->t, -FG_ESTORE);
		return 1;
	}
	return store_hist_emit(e, &r, !r.deleted);
}

static int
store_hist_system_visit(void *ctx, const MDB_val *k, const MDB_val *v)
{
	store_hist_each_t *e = ctx;
	store_res_t r;

	if (store_hist_decode(k, v, &r) < 0) {
		store_error_set("hist: a record does not decode");
		e->ret = store_txn_fail(e->t, -FG_ESTORE);
		return 1;
	}
	return store_hist_emit(e, &r, !r.deleted);
}

/* Opens a cursor on db, positions it at the first key >= k and walks back from there. */
static int
store_hist_walk(store_hist_each_t *e, int db, MDB_val k, store_visit_fn visit)
{
	MDB_cursor *c;
	MDB_val v;
	int rc;

	rc = mdb_cursor_open(e->t->txn, e->t->s->dbi[db], &c);
	if (rc != 0)
		return store_txn_fail(e->t, store_mdb_fail(store_dbs[db].name, rc));
	rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
	if ((rc = store_walk_back(e->t, c, db, &k, rc, visit, e)) < 0)
		return rc;
	return e->ret;
}

int
store_hist_foreach_instance(store_txn_t *t, slice_t type, slice_t id, uint64_t since_ns,
			    uint32_t before, store_res_cb cb, void *ctx)
{
	unsigned char kb[STORE_VER_KEY_MAX];
	store_hist_each_t e = {t, kb, 0, since_ns, cb, ctx, 0};
	store_res_t cur;
	MDB_val k;
	int rc;

	if ((rc = store_txn_check(t, false, "history")) < 0)
		return rc;
	if (!store_type_is_valid(type) || !store_id_is_valid(id))
		return -FG_ENOTFOUND;
	if ((rc = store_ver_current(t, type, id, &cur)) < 0)
		return rc;
	/* Start just past the newest version (a 1 byte after the id), or at `before`. */
	k = before == 0 || before > cur.version ? store_ver_key(kb, type, id, cur.version)
						: store_ver_key(kb, type, id, before);
	e.plen = k.mv_size - 5;
	if (before == 0 || before > cur.version) {
		kb[e.plen] = 1;
		k.mv_size = e.plen + 1;
	}
	return store_hist_walk(&e, STORE_DB_VER, k, store_hist_instance_visit);
}

int
store_hist_foreach_type(store_txn_t *t, slice_t type, uint64_t since_ns, uint64_t before,
			store_res_cb cb, void *ctx)
{
	unsigned char kb[2 + STORE_TYPE_MAX + 8];
	store_hist_each_t e = {t, kb, 0, since_ns, cb, ctx, 0};
	int rc;

	if ((rc = store_txn_check(t, false, "history")) < 0)
		return rc;
	if (!store_type_is_valid(type))
		return 0;
	e.plen = (size_t)(store_lpstr_put(kb, type) - kb);
	store_be64_put(kb + e.plen, before == 0 ? UINT64_MAX : before);
	return store_hist_walk(&e, STORE_DB_HISTTYPE, (MDB_val){e.plen + 8, kb},
			       store_hist_type_visit);
}

int
store_hist_foreach_system(store_txn_t *t, uint64_t since_ns, uint64_t before, store_res_cb cb,
			  void *ctx)
{
	unsigned char kb[8];
	store_hist_each_t e = {t, NULL, 0, since_ns, cb, ctx, 0};
	int rc;

	if ((rc = store_txn_check(t, false, "history")) < 0)
		return rc;
	return store_hist_walk(&e, STORE_DB_HIST,
			       store_seq_key(kb, before == 0 ? UINT64_MAX : before),
			       store_hist_system_visit);
}

static int
store_count_sum(void *ctx, slice_t type, uint64_t count)
{
	*(uint64_t *)ctx += count;
	return 0;
}

int
store_res_stats(store_txn_t *t, store_stats_t *out)
{
	static const int dbs[3] = {STORE_DB_VER, STORE_DB_HIST, STORE_DB_IDX};
	MDB_stat st[3];
	int rc;

	for (int i = 0; i < 3; i++) {
		rc = mdb_stat(t->txn, t->s->dbi[dbs[i]], &st[i]);
		if (rc != 0)
			return store_txn_fail(t, store_mdb_fail("stats", rc));
	}
	out->versions = st[0].ms_entries;
	out->changes = st[1].ms_entries;
	out->index_entries = st[2].ms_entries;
	out->resources = 0;
	rc = store_res_foreach_count(t, store_count_sum, &out->resources);
	return rc < 0 ? rc : 0;
}

/* Verification: problems are reported and counted; only store failures stop it. */

typedef struct {
	store_verify_t *vf;
	slice_t type;     /* of the res records counted in live */
	uint64_t live;    /* not deleted resources of type */
	uint64_t counted; /* the meta counts of the types res holds */
	uint64_t listed;  /* entries in all idxrev lists */
	uint64_t last_ns; /* lastUpdated of the previous hist record */
} store_rv_t;

#define STORE_NAME(type, id) (int)(type).len, (type).ptr, (int)(id).len, (id).ptr

/* mdb_get without the sticky-error bookkeeping: 0, 1 (absent) or a store failure. */
static int
store_verify_get(store_verify_t *vf, int db, MDB_val *k, MDB_val *v)
{
	int rc = mdb_get(vf->t->txn, vf->t->s->dbi[db], k, v);

	if (rc == MDB_NOTFOUND)
		return 1;
	return rc != 0 ? store_txn_fail(vf->t, store_mdb_fail("verify", rc)) : 0;
}

/* Compares the live count of the type just finished with its meta count. */
static int
store_verify_count(store_rv_t *rv)
{
	uint64_t count;
	int rc;

	if (rv->type.len == 0)
		return 0;
	if ((rc = store_count_get(rv->vf->t, rv->type, &count)) < 0)
		return rc;
	if (count != rv->live)
		store_verify_problem(rv->vf, "meta: count of %.*s is %llu, res holds %llu",
				     (int)rv->type.len, rv->type.ptr, (unsigned long long)count,
				     (unsigned long long)rv->live);
	rv->counted += count;
	return 0;
}

static int
store_verify_res(void *ctx, const MDB_val *k, const MDB_val *v)
{
	store_rv_t *rv = ctx;
	store_head_t head;
	store_res_t cur;
	slice_t type, id;
	int rc;

	if (store_res_key_decode(k, &type, &id) < 0) {
		store_verify_problem(rv->vf, "res: a key of %zu bytes does not decode", k->mv_size);
		return 0;
	}
	if (!slice_eq(type, rv->type)) {
		if ((rc = store_verify_count(rv)) < 0)
			return rc;
		rv->type = type;
		rv->live = 0;
	}
	if (store_res_value_decode(v, &head) < 0) {
		store_verify_problem(rv->vf, "res %.*s/%.*s: record does not decode",
				     STORE_NAME(type, id));
		return 0;
	}
	rv->live += !head.deleted;
	rc = store_ver_current(rv->vf->t, type, id, &cur);
	if (rc == -FG_ENOTFOUND || rc == -FG_ESTORE)
		store_verify_problem(rv->vf, "res %.*s/%.*s: its current version is %s in ver",
				     STORE_NAME(type, id),
				     rc == -FG_ESTORE ? "damaged" : "missing");
	else if (rc < 0)
		return rc;
	else if (cur.version != head.version || cur.deleted != head.deleted ||
		 cur.last_updated_ns != head.last_updated_ns)
		store_verify_problem(
		    rv->vf, "res %.*s/%.*s: names version %u, the newest in ver is %u%s",
		    STORE_NAME(type, id), (unsigned)head.version, (unsigned)cur.version,
		    cur.version == head.version ? " (other flags or time)" : "");
	return 0;
}

static int
store_verify_ver(void *ctx, const MDB_val *k, const MDB_val *v)
{
	store_rv_t *rv = ctx;
	unsigned char kb[STORE_RES_KEY_MAX], sb[8];
	store_res_t r, h;
	store_head_t head;
	MDB_val hk, hv;
	int rc;

	if (store_ver_key_decode(k, &r) < 0 || store_ver_value_decode(v, &r) < 0) {
		store_verify_problem(rv->vf, "ver: a record of %zu bytes does not decode",
				     v->mv_size);
		return 0;
	}
	hk = store_seq_key(sb, r.seq);
	if ((rc = store_verify_get(rv->vf, STORE_DB_HIST, &hk, &hv)) < 0)
		return rc;
	if (rc == 1 || store_hist_decode(&hk, &hv, &h) < 0 || !slice_eq(h.type, r.type) ||
	    !slice_eq(h.id, r.id) || h.version != r.version)
		store_verify_problem(
		    rv->vf, "ver %.*s/%.*s version %u: change %llu in hist does not name it",
		    STORE_NAME(r.type, r.id), (unsigned)r.version, (unsigned long long)r.seq);
	hk = store_res_key(kb, r.type, r.id);
	if ((rc = store_verify_get(rv->vf, STORE_DB_RES, &hk, &hv)) < 0)
		return rc;
	if (rc == 1 || (store_res_value_decode(&hv, &head) == 0 && head.version < r.version))
		store_verify_problem(rv->vf, "ver %.*s/%.*s version %u: %s",
				     STORE_NAME(r.type, r.id), (unsigned)r.version,
				     rc == 1 ? "no res record" : "newer than the current version");
	return 0;
}

static int
store_verify_hist(void *ctx, const MDB_val *k, const MDB_val *v)
{
	store_rv_t *rv = ctx;
	unsigned char kb[2 + STORE_TYPE_MAX + 8], *p;
	store_res_t r, cur;
	MDB_val hk, hv;
	int rc;

	if (store_hist_decode(k, v, &r) < 0) {
		store_verify_problem(rv->vf, "hist: a record of %zu bytes does not decode",
				     v->mv_size);
		return 0;
	}
	if (r.last_updated_ns < rv->last_ns)
		store_verify_problem(rv->vf,
				     "hist %llu: lastUpdated earlier than a previous change's",
				     (unsigned long long)r.seq);
	rv->last_ns = r.last_updated_ns;
	cur = r;
	hk = store_ver_key(kb, r.type, r.id, r.version);
	if ((rc = store_verify_get(rv->vf, STORE_DB_VER, &hk, &hv)) < 0)
		return rc;
	if (rc == 1 || store_ver_value_decode(&hv, &cur) < 0 || cur.seq != r.seq ||
	    cur.deleted != r.deleted)
		store_verify_problem(rv->vf, "hist %llu: %.*s/%.*s version %u is %s",
				     (unsigned long long)r.seq, STORE_NAME(r.type, r.id),
				     (unsigned)r.version,
				     rc == 1 ? "not in ver" : "in ver as another change");
	p = store_lpstr_put(kb, r.type);
	store_be64_put(p, r.seq);
	hk = (MDB_val){(size_t)(p + 8 - kb), kb};
	if ((rc = store_verify_get(rv->vf, STORE_DB_HISTTYPE, &hk, &hv)) < 0)
		return rc;
	if (rc == 1)
		store_verify_problem(rv->vf, "hist %llu: no histtype record",
				     (unsigned long long)r.seq);
	return 0;
}

static int
store_verify_histtype(void *ctx, const MDB_val *k, const MDB_val *v)
{
	store_rv_t *rv = ctx;
	unsigned char sb[8];
	store_res_t h;
	slice_t type, rest;
	MDB_val hk, hv;
	int rc;

	if (store_type_take(k, &type, &rest) < 0 || rest.len != 8) {
		store_verify_problem(rv->vf, "histtype: a key of %zu bytes does not decode",
				     k->mv_size);
		return 0;
	}
	hk = store_seq_key(sb, be64_read(rest.ptr));
	if ((rc = store_verify_get(rv->vf, STORE_DB_HIST, &hk, &hv)) < 0)
		return rc;
	if (rc == 1 || store_hist_decode(&hk, &hv, &h) < 0 || !slice_eq(h.type, type))
		store_verify_problem(rv->vf, "histtype %.*s %llu: no such change of that type",
				     (int)type.len, type.ptr,
				     (unsigned long long)be64_read(rest.ptr));
	return 0;
}

static int
store_verify_idxrev(void *ctx, const MDB_val *k, const MDB_val *v)
{
	store_rv_t *rv = ctx;
	const unsigned char *p = v->mv_data, *end = p + v->mv_size;
	const store_idx_entry_t *prev = NULL, *ep;
	unsigned char kb[STORE_KEY_MAX];
	store_idx_entry_t e, last;
	store_head_t head;
	slice_t type, id;
	MDB_cursor *c = NULL;
	MDB_val ik, iv;
	int rc;

	if (store_res_key_decode(k, &type, &id) < 0) {
		store_verify_problem(rv->vf, "idxrev: a key of %zu bytes does not decode",
				     k->mv_size);
		return 0;
	}
	ik = store_res_key(kb, type, id);
	if ((rc = store_verify_get(rv->vf, STORE_DB_RES, &ik, &iv)) < 0)
		return rc;
	if (rc == 1 || store_res_value_decode(&iv, &head) < 0 || head.deleted)
		store_verify_problem(rv->vf, "idxrev %.*s/%.*s: the resource is %s",
				     STORE_NAME(type, id), rc == 1 ? "missing" : "deleted");
	if ((rc = store_cursor(rv->vf->t, STORE_DB_IDX, &c)) < 0)
		return rc;
	if (v->mv_size < 2 || p[0] != STORE_IDXREV_FORMAT)
		goto bad;
	for (p++; p < end; prev = &last, last = e) {
		if (store_idxrev_take(&p, end, &e) < 0)
			goto bad;
		ep = &e;
		if (prev != NULL && store_entry_cmp(&prev, &ep) >= 0)
			goto bad;
		rv->listed++;
		ik = store_idx_key(kb, type, e.code, e.value);
		iv = (MDB_val){id.len, (void *)id.ptr};
		rc = ik.mv_size <= rv->vf->t->s->max_key ? mdb_cursor_get(c, &ik, &iv, MDB_GET_BOTH)
							 : MDB_NOTFOUND;
		if (rc == MDB_NOTFOUND)
			store_verify_problem(rv->vf, "idx %.*s/%.*s: entry for '%.*s' is missing",
					     STORE_NAME(type, id), (int)e.code.len, e.code.ptr);
		else if (rc != 0)
			return store_txn_fail(rv->vf->t, store_mdb_fail("verify", rc));
	}
	return 0;
bad:
	store_verify_problem(rv->vf, "idxrev %.*s/%.*s: record does not decode or is not sorted",
			     STORE_NAME(type, id));
	return 0;
}

/* Run only when idx holds more entries than the idxrev lists: finds the ones no list names. */
static int
store_verify_idx(void *ctx, const MDB_val *k, const MDB_val *v)
{
	store_rv_t *rv = ctx;
	unsigned char kb[STORE_RES_KEY_MAX];
	const unsigned char *p, *end;
	slice_t type, rest, id = slice_make(v->mv_data, v->mv_size);
	store_idx_entry_t e, want;
	MDB_val lk, lv;
	int rc;

	if (store_type_take(k, &type, &rest) < 0 || !store_id_is_valid(id)) {
		store_verify_problem(rv->vf, "idx: a record does not decode");
		return 0;
	}
	p = (const unsigned char *)rest.ptr;
	end = p + rest.len;
	if (store_lpstr_take(&p, end, &want.code) < 0) {
		store_verify_problem(rv->vf, "idx: a record does not decode");
		return 0;
	}
	want.value = slice_make((const char *)p, (size_t)(end - p));
	lk = store_res_key(kb, type, id);
	if ((rc = store_verify_get(rv->vf, STORE_DB_IDXREV, &lk, &lv)) < 0)
		return rc;
	p = lv.mv_data;
	end = p + (rc == 0 ? lv.mv_size : 0);
	for (p += p < end; p < end && store_idxrev_take(&p, end, &e) == 0;)
		if (slice_eq(e.code, want.code) && slice_eq(e.value, want.value))
			return 0;
	store_verify_problem(rv->vf,
			     "idx %.*s/%.*s: entry for '%.*s' that its idxrev record does "
			     "not list",
			     STORE_NAME(type, id), (int)want.code.len, want.code.ptr);
	return 0;
}

int
store_res_verify(store_verify_t *vf)
{
	store_rv_t rv = {.vf = vf};
	uint64_t all = 0;
	MDB_stat st;
	int rc;

	if ((rc = store_range(vf->t, STORE_DB_RES, NULL, store_verify_res, &rv)) < 0 ||
	    (rc = store_verify_count(&rv)) < 0 ||
	    (rc = store_res_foreach_count(vf->t, store_count_sum, &all)) < 0)
		return rc;
	if (all != rv.counted)
		store_verify_problem(vf,
				     "meta: counts of %llu resources of types res does not hold",
				     (unsigned long long)(all - rv.counted));
	if ((rc = store_range(vf->t, STORE_DB_VER, NULL, store_verify_ver, &rv)) < 0 ||
	    (rc = store_range(vf->t, STORE_DB_HIST, NULL, store_verify_hist, &rv)) < 0 ||
	    (rc = store_range(vf->t, STORE_DB_HISTTYPE, NULL, store_verify_histtype, &rv)) < 0 ||
	    (rc = store_range(vf->t, STORE_DB_IDXREV, NULL, store_verify_idxrev, &rv)) < 0)
		return rc;
	rc = mdb_stat(vf->t->txn, vf->t->s->dbi[STORE_DB_IDX], &st);
	if (rc != 0)
		return store_txn_fail(vf->t, store_mdb_fail("verify", rc));
	if (st.ms_entries != rv.listed &&
	    (rc = store_range(vf->t, STORE_DB_IDX, NULL, store_verify_idx, &rv)) < 0)
		return rc;
	return 0;
}
