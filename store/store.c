/* The LMDB store: one environment of named databases, with a sticky error per write transaction
 * so callers run straight-line; this file holds the message log, dead letters and work queue
 * (resources are in resource.c). */
#include "config.h"

#include "store/store.h"

#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"
#include "lib/err.h"
#include "lib/hash.h"
#include "lib/xalloc.h"
#include "store/store_int.h"

#define STORE_SCHEMA_VERSION   1u
#define STORE_SCHEMA_KEY       "schema_version"
#define STORE_DEFAULT_MAP_SIZE (16ull << 30)
#define STORE_DEFAULT_READERS  126u

/* msg value, format 1: format, status, be64 received_ns, be16 peer length, peer, raw bytes. */
#define STORE_MSG_FORMAT 1
#define STORE_MSG_HEAD   12
/* dead value, format 1: format, stage, be16 code, be32 map_version, be64 time_ns, then reason and
 * location as be16-length-prefixed strings. */
#define STORE_DEAD_FORMAT 1
#define STORE_DEAD_HEAD   16
/* msgkey value: be64 seq, be64 content hash. */
#define STORE_MSGKEY_VALUE 16
/* meta key of the last work item id handed out, so ids are never reused. */
#define STORE_WORK_LAST_KEY "work_last"

/* meta first: its schema check runs before the other databases are created. Databases added
 * since schema 1 (histtype, idxrev, audit, auditref) are created when a writer opens an older
 * store. */
const store_db_def_t store_dbs[STORE_DB_COUNT] = {
    [STORE_DB_META] = {"meta", 0, false},         [STORE_DB_MSG] = {"msg", 0, false},
    [STORE_DB_MSGKEY] = {"msgkey", 0, false},     [STORE_DB_DEAD] = {"dead", 0, false},
    [STORE_DB_RES] = {"res", 0, false},           [STORE_DB_VER] = {"ver", 0, false},
    [STORE_DB_HIST] = {"hist", 0, false},         [STORE_DB_HISTTYPE] = {"histtype", 0, true},
    [STORE_DB_IDX] = {"idx", MDB_DUPSORT, false}, [STORE_DB_IDXREV] = {"idxrev", 0, true},
    [STORE_DB_WORK] = {"work", 0, false},         [STORE_DB_AUDIT] = {"audit", 0, true},
    [STORE_DB_AUDITREF] = {"auditref", 0, true},  [STORE_DB_PEND] = {"pend", 0, true},
};

static _Thread_local char store_errbuf[256];

void
store_error_set(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(store_errbuf, sizeof(store_errbuf), fmt, ap);
	va_end(ap);
}

const char *
store_last_error(void)
{
	return store_errbuf;
}

int
store_mdb_fail(const char *op, int rc)
{
	switch (rc) {
	case MDB_NOTFOUND:
		return -FG_ENOTFOUND;
	case MDB_MAP_FULL:
		store_error_set("%s: %s (the store reached its map_size: raise map_size)", op,
				mdb_strerror(rc));
		return -FG_EFULL;
	case MDB_MAP_RESIZED:
		store_error_set("%s: %s (another process grew the map: reopen the store)", op,
				mdb_strerror(rc));
		return -FG_ESTORE;
	case ENOENT:
		store_error_set("%s: %s", op, mdb_strerror(rc));
		return -FG_ENOTFOUND;
	default:
		store_error_set("%s: %s", op, mdb_strerror(rc));
		return -FG_ESTORE;
	}
}

int
store_txn_fail(store_txn_t *t, int err)
{
	if (t->write && err != -FG_ENOTFOUND)
		t->err = err;
	return err;
}

int
store_txn_check(store_txn_t *t, bool write, const char *op)
{
	if (t->err != 0)
		return t->err;
	if (write && !t->write) {
		store_error_set("%s: not allowed in a read transaction", op);
		return -FG_EINVAL;
	}
	return 0;
}

static int
store_corrupt(store_txn_t *t, const char *db, uint64_t seq)
{
	store_error_set("%s %llu: record does not decode", db, (unsigned long long)seq);
	return store_txn_fail(t, -FG_ESTORE);
}

/* mkdir -p: parents with the usual mode, the store itself private (it holds patient data). */
static int
store_mkdir_p(const char *dir)
{
	char path[PATH_MAX];
	size_t len = strlen(dir);

	if (len == 0 || len >= sizeof(path)) {
		store_error_set("bad store directory name");
		return -FG_EINVAL;
	}
	memcpy(path, dir, len + 1);
	for (char *p = path + 1; *p != '\0'; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(path, 0755) != 0 && errno != EEXIST)
			goto fail;
		*p = '/';
	}
	if (mkdir(path, 0700) != 0 && errno != EEXIST)
		goto fail;
	return 0;
fail:
	store_error_set("mkdir %s: %s", path, strerror(errno));
	return -FG_EIO;
}

/* Checks meta's schema version, writing it into a new store. */
static int
store_schema_check(store_t *s, MDB_txn *txn, const char *dir)
{
	MDB_val k = {sizeof(STORE_SCHEMA_KEY) - 1, STORE_SCHEMA_KEY}, v;
	unsigned char vb[4] = {0, 0, 0, STORE_SCHEMA_VERSION};
	uint32_t version;
	int rc;

	rc = mdb_get(txn, s->dbi[STORE_DB_META], &k, &v);
	if (rc == MDB_NOTFOUND && !s->read_only) {
		v = (MDB_val){sizeof(vb), vb};
		rc = mdb_put(txn, s->dbi[STORE_DB_META], &k, &v, 0);
		return rc != 0 ? store_mdb_fail("write schema version", rc) : 0;
	}
	if (rc == MDB_NOTFOUND) {
		store_error_set("%s is not an initialised store (no schema version)", dir);
		return -FG_ENOTFOUND;
	}
	if (rc != 0)
		return store_mdb_fail("read schema version", rc);
	if (v.mv_size != 4) {
		store_error_set("%s: schema version record does not decode", dir);
		return -FG_ESTORE;
	}
	version = be32_read(v.mv_data);
	if (version > STORE_SCHEMA_VERSION) {
		store_error_set("%s has store schema version %u, newer than this fhirgate supports "
				"(%u): use a newer fhirgate",
				dir, (unsigned)version, STORE_SCHEMA_VERSION);
		return -FG_EUNSUPPORTED;
	}
	if (version == 0) {
		store_error_set("%s: schema version 0 is not valid", dir);
		return -FG_ESTORE;
	}
	return 0;
}

/* Opens (a writer: creates) every named database and checks the schema, in one transaction that
 * commits so the handles stay valid for the life of the environment. */
static int
store_dbs_open(store_t *s, const char *dir)
{
	MDB_txn *txn;
	int rc, err;

	rc = mdb_txn_begin(s->env, NULL, s->read_only ? MDB_RDONLY : 0, &txn);
	if (rc != 0)
		return store_mdb_fail("begin open transaction", rc);
	for (int i = 0; i < STORE_DB_COUNT; i++) {
		unsigned flags = store_dbs[i].flags | (s->read_only ? 0 : MDB_CREATE);

		rc = mdb_dbi_open(txn, store_dbs[i].name, flags, &s->dbi[i]);
		if (rc == MDB_NOTFOUND && store_dbs[i].added) {
			store_error_set(
			    "%s was last written by an older fhirgate (no '%s' database): "
			    "open it once for writing (fhirgate serve) first",
			    dir, store_dbs[i].name);
			err = -FG_ENOTFOUND;
			goto fail;
		}
		if (rc == MDB_NOTFOUND) {
			store_error_set("%s is not an initialised store (no '%s' database)", dir,
					store_dbs[i].name);
			err = -FG_ENOTFOUND;
			goto fail;
		}
		if (rc != 0) {
			err = store_mdb_fail("open database", rc);
			goto fail;
		}
		if (i == STORE_DB_META && (err = store_schema_check(s, txn, dir)) < 0)
			goto fail;
	}
	rc = mdb_txn_commit(txn);
	return rc != 0 ? store_mdb_fail("commit open transaction", rc) : 0;
fail:
	mdb_txn_abort(txn);
	return err;
}

int
store_open(const char *dir, const store_opts_t *opts, store_t **out)
{
	static const store_opts_t defaults;
	unsigned flags = MDB_NOTLS | MDB_NORDAHEAD;
	store_t *s;
	int rc, err;

	*out = NULL;
	if (opts == NULL)
		opts = &defaults;
	if (!opts->read_only && (err = store_mkdir_p(dir)) < 0)
		return err;
	s = xcalloc(1, sizeof(*s));
	s->read_only = opts->read_only;
	s->dir = xstrdup(dir);
	rc = mdb_env_create(&s->env);
	if (rc != 0) {
		free(s->dir);
		free(s);
		return store_mdb_fail("create environment", rc);
	}
	rc = mdb_env_set_maxdbs(s->env, STORE_DB_COUNT);
	if (rc == 0)
		rc = mdb_env_set_maxreaders(s->env, opts->max_readers ? opts->max_readers
								      : STORE_DEFAULT_READERS);
	/* A reader adopts the size the writer recorded, so it can map everything written. */
	if (rc == 0 && !opts->read_only)
		rc = mdb_env_set_mapsize(s->env,
					 opts->map_size ? opts->map_size : STORE_DEFAULT_MAP_SIZE);
	if (rc != 0) {
		err = store_mdb_fail("configure environment", rc);
		goto fail;
	}
	if (opts->read_only)
		flags |= MDB_RDONLY;
	else if (!opts->no_writemap)
		flags |= MDB_WRITEMAP;
	s->writemap = (flags & MDB_WRITEMAP) != 0;
	rc = mdb_env_open(s->env, dir, flags, 0600);
	if (rc != 0) {
		char op[PATH_MAX + 16];

		snprintf(op, sizeof(op), "open %s", dir);
		err = store_mdb_fail(op, rc);
		goto fail;
	}
	s->max_key = (size_t)mdb_env_get_maxkeysize(s->env);
	if (s->max_key > STORE_KEY_MAX)
		s->max_key = STORE_KEY_MAX;
	if ((err = store_dbs_open(s, dir)) < 0)
		goto fail;
	*out = s;
	return 0;
fail:
	mdb_env_close(s->env);
	free(s->dir);
	free(s);
	return err;
}

void
store_close(store_t *s)
{
	if (s == NULL)
		return;
	mdb_env_close(s->env);
	free(s->dir);
	free(s);
}

/* With MDB_WRITEMAP LMDB sizes data.mdb to the whole map (a sparse file) and writes new pages
 * straight into the mapping: on a full disk, touching a page without a disk block would kill
 * the process with SIGBUS instead of failing the transaction. So before a write transaction
 * the file gets real blocks (fallocate) beyond the pages in use: at least four times the most
 * one transaction has grown the file so far, and STORE_RESERVE_MIN; renewed when half of that
 * is left. When the disk cannot give them, the transaction fails cleanly before anything is
 * written. A file system without fallocate gets no reservation. */
#define STORE_RESERVE_MIN (32ull << 20)

static int
store_used_bytes(store_t *s, uint64_t *used, uint64_t *map_size)
{
	MDB_envinfo info;
	MDB_stat st;
	int rc;

	if ((rc = mdb_env_info(s->env, &info)) != 0 || (rc = mdb_env_stat(s->env, &st)) != 0)
		return store_mdb_fail("store size", rc);
	*used = ((uint64_t)info.me_last_pgno + 1) * st.ms_psize;
	*map_size = info.me_mapsize;
	return 0;
}

/* Gives data.mdb disk blocks up to want bytes (at most the map). */
static int
store_reserve_to(store_t *s, uint64_t want, uint64_t used, uint64_t map_size)
{
	int fd, rc;

	if (want > map_size)
		want = map_size;
	if (s->reserved == UINT64_MAX || want <= s->reserved)
		return 0;
	if ((rc = mdb_env_get_fd(s->env, &fd)) != 0)
		return store_mdb_fail("reserve disk space", rc);
	if (fallocate(fd, 0, (off_t)s->reserved, (off_t)(want - s->reserved)) != 0) {
		if (errno == EOPNOTSUPP || errno == ENOSYS) {
			s->reserved = UINT64_MAX;
			return 0;
		}
		store_error_set("reserve %llu MiB of disk ahead of the store: %s",
				(unsigned long long)((want - used) >> 20), strerror(errno));
		return errno == ENOSPC ? -FG_EFULL : -FG_EIO;
	}
	s->reserved = want;
	return 0;
}

static int
store_reserve(store_t *s, store_txn_t *t)
{
	uint64_t used, map_size, margin;
	int rc;

	if (!s->writemap)
		return 0;
	if ((rc = store_used_bytes(s, &used, &map_size)) < 0)
		return rc;
	t->start_used = used;
	margin = 4 * s->max_growth > STORE_RESERVE_MIN ? 4 * s->max_growth : STORE_RESERVE_MIN;
	if (s->reserved == UINT64_MAX || used + margin / 2 <= s->reserved)
		return 0;
	return store_reserve_to(s, used + margin, used, map_size);
}

int
store_reserve_ahead(store_txn_t *t, uint64_t bytes)
{
	uint64_t used, map_size;
	int rc;

	if (!t->s->writemap)
		return 0;
	if ((rc = store_used_bytes(t->s, &used, &map_size)) < 0)
		return rc;
	t->reserved_ahead = true;
	return store_reserve_to(t->s, used + bytes + STORE_RESERVE_MIN, used, map_size);
}

/* After a commit: how much the transaction grew the file, for store_reserve's margin. A
 * transaction that reserved for itself (a bulk load, GiBs at once) does not count: the margin of
 * every later one would be four times that (8.8 GiB of disk held after a 2.2 GiB import). */
static void
store_note_growth(store_txn_t *t)
{
	uint64_t used, map_size;

	if (t->s->writemap && !t->reserved_ahead && store_used_bytes(t->s, &used, &map_size) == 0 &&
	    used > t->start_used && used - t->start_used > t->s->max_growth)
		t->s->max_growth = used - t->start_used;
}

static _Atomic uint64_t txn_serial;

uint64_t
store_txn_serial(const store_txn_t *t)
{
	return t->serial;
}

int
store_txn_begin(store_t *s, bool write, store_txn_t **out)
{
	store_txn_t *t;
	int rc;

	*out = NULL;
	if (write && s->read_only) {
		store_error_set("begin write transaction: the store is open read-only");
		return -FG_EINVAL;
	}
	t = xcalloc(1, sizeof(*t));
	t->s = s;
	t->write = write;
	t->serial = atomic_fetch_add(&txn_serial, 1) + 1;
	rc = mdb_txn_begin(s->env, NULL, write ? 0 : MDB_RDONLY, &t->txn);
	if (rc != 0) {
		free(t);
		return store_mdb_fail(write ? "begin write transaction" : "begin read transaction",
				      rc);
	}
	/* Under the write lock, so that the pages in use cannot move meanwhile. */
	if (write && (rc = store_reserve(s, t)) < 0) {
		mdb_txn_abort(t->txn);
		free(t);
		return rc;
	}
	*out = t;
	return 0;
}

/* The cursor on db, opened on first use: LMDB's code. */
static int
store_cursor_raw(store_txn_t *t, int db, MDB_cursor **c)
{
	int rc = 0;

	if (t->cur[db] == NULL && (rc = mdb_cursor_open(t->txn, t->s->dbi[db], &t->cur[db])) != 0)
		t->cur[db] = NULL;
	*c = t->cur[db];
	return rc;
}

int
store_cursor(store_txn_t *t, int db, MDB_cursor **out)
{
	int rc = store_cursor_raw(t, db, out);

	return rc != 0 ? store_txn_fail(t, store_mdb_fail(store_dbs[db].name, rc)) : 0;
}

int
store_cursor_put(store_txn_t *t, int db, MDB_val *k, MDB_val *v, unsigned flags)
{
	MDB_cursor *c;
	int rc = store_cursor_raw(t, db, &c);

	return rc != 0 ? rc : mdb_cursor_put(c, k, v, flags);
}

int
store_cursor_get(store_txn_t *t, int db, MDB_val *k, MDB_val *v)
{
	MDB_cursor *c;
	int rc = store_cursor_raw(t, db, &c);

	return rc != 0 ? rc : mdb_cursor_get(c, k, v, MDB_SET);
}

int
store_cursor_del(store_txn_t *t, int db, MDB_val *k, MDB_val *v)
{
	MDB_cursor *c;
	MDB_val d = v != NULL ? *v : (MDB_val){0, NULL};
	int rc = store_cursor_raw(t, db, &c);

	if (rc == 0)
		rc = mdb_cursor_get(c, k, &d, v != NULL ? MDB_GET_BOTH : MDB_SET);
	/* NODUPDATA: every duplicate of the key when no data names one */
	return rc != 0 ? rc : mdb_cursor_del(c, v != NULL ? 0 : MDB_NODUPDATA);
}

void
store_cursors_close(store_txn_t *t)
{
	for (int i = 0; i < STORE_DB_COUNT; i++)
		if (t->cur[i] != NULL)
			mdb_cursor_close(t->cur[i]);
}

int
store_txn_commit(store_txn_t *t)
{
	int err = t->err, rc;

	if (err == 0 && t->write)
		err = store_audit_txn_commit(t);
	store_audit_txn_free(t);
	store_cursors_close(t);
	if (err != 0 || !t->write) {
		mdb_txn_abort(t->txn);
		free(t);
		return err;
	}
	rc = mdb_txn_commit(t->txn);
	if (rc == 0)
		store_note_growth(t);
	free(t);
	return rc != 0 ? store_mdb_fail("commit", rc) : 0;
}

void
store_txn_abort(store_txn_t *t)
{
	if (t == NULL)
		return;
	store_audit_txn_free(t);
	store_cursors_close(t);
	mdb_txn_abort(t->txn);
	free(t);
}

/* Decoders: 0 or -1, no side effects; out's slices point into v. */
static int
store_msg_decode(const MDB_val *k, const MDB_val *v, store_msg_t *out)
{
	const unsigned char *p = v->mv_data;
	size_t peer_len;

	if (k->mv_size != 8 || v->mv_size < STORE_MSG_HEAD || p[0] != STORE_MSG_FORMAT)
		return -1;
	peer_len = be16_read(p + 10);
	if (peer_len > v->mv_size - STORE_MSG_HEAD)
		return -1;
	out->seq = be64_read(k->mv_data);
	out->status = p[1];
	out->received_ns = be64_read(p + 2);
	out->peer = slice_make((const char *)p + STORE_MSG_HEAD, peer_len);
	out->raw = slice_make((const char *)p + STORE_MSG_HEAD + peer_len,
			      v->mv_size - STORE_MSG_HEAD - peer_len);
	return 0;
}

int
store_lpstr_take(const unsigned char **p, const unsigned char *end, slice_t *out)
{
	size_t len;

	if (end - *p < 2)
		return -1;
	len = be16_read(*p);
	if ((size_t)(end - *p - 2) < len)
		return -1;
	*out = slice_make((const char *)*p + 2, len);
	*p += 2 + len;
	return 0;
}

static int
store_dead_decode(const MDB_val *k, const MDB_val *v, store_dead_t *out)
{
	const unsigned char *p = v->mv_data, *end = p + v->mv_size;

	if (k->mv_size != 8 || v->mv_size < STORE_DEAD_HEAD || p[0] != STORE_DEAD_FORMAT)
		return -1;
	out->seq = be64_read(k->mv_data);
	out->stage = p[1];
	out->code = be16_read(p + 2);
	out->map_version = be32_read(p + 4);
	out->time_ns = be64_read(p + 8);
	p += STORE_DEAD_HEAD;
	if (store_lpstr_take(&p, end, &out->reason) < 0 ||
	    store_lpstr_take(&p, end, &out->location) < 0 || p != end)
		return -1;
	return 0;
}

int
store_last_key(store_txn_t *t, int db, uint64_t *out)
{
	MDB_cursor *c = NULL;
	MDB_val k, v;
	int rc;

	if ((rc = store_cursor(t, db, &c)) < 0)
		return rc;
	rc = mdb_cursor_get(c, &k, &v, MDB_LAST);
	if (rc == MDB_NOTFOUND) {
		*out = 0;
		return 0;
	}
	if (rc != 0)
		return store_txn_fail(t, store_mdb_fail(store_dbs[db].name, rc));
	if (k.mv_size != 8) {
		store_error_set("%s: last key has %zu bytes, not 8", store_dbs[db].name, k.mv_size);
		return store_txn_fail(t, -FG_ESTORE);
	}
	*out = be64_read(k.mv_data);
	return 0;
}

int
store_msg_append(store_txn_t *t, const store_msg_t *m, uint64_t *seq)
{
	unsigned char kb[8], *p;
	MDB_val k, v;
	int rc;

	if ((rc = store_txn_check(t, true, "msg append")) < 0)
		return store_txn_fail(t, rc);
	if (m->peer.len > 0xffff || m->raw.len > SIZE_MAX - STORE_MSG_HEAD - m->peer.len) {
		store_error_set("msg append: peer or message too long");
		return store_txn_fail(t, -FG_EINVAL);
	}
	/* Another process may have appended since our last transaction: ask LMDB once per txn. */
	if (!t->have_last_seq) {
		if ((rc = store_last_key(t, STORE_DB_MSG, &t->last_seq)) < 0)
			return rc;
		t->have_last_seq = true;
	}
	k = store_seq_key(kb, t->last_seq + 1);
	v = (MDB_val){STORE_MSG_HEAD + m->peer.len + m->raw.len, NULL};
	/* RESERVE: the record is written straight into the map, no staging buffer. */
	rc = mdb_put(t->txn, t->s->dbi[STORE_DB_MSG], &k, &v, MDB_APPEND | MDB_RESERVE);
	if (rc != 0)
		return store_txn_fail(t, store_mdb_fail("msg append", rc));
	p = v.mv_data;
	p[0] = STORE_MSG_FORMAT;
	p[1] = m->status;
	store_be64_put(p + 2, m->received_ns);
	store_be16_put(p + 10, (uint16_t)m->peer.len);
	store_bytes_put(store_bytes_put(p + STORE_MSG_HEAD, m->peer), m->raw);
	*seq = ++t->last_seq;
	return 0;
}

int
store_seq_get(store_txn_t *t, int db, uint64_t seq, const char *op, unsigned char kb[8], MDB_val *k,
	      MDB_val *v)
{
	int rc;

	*k = store_seq_key(kb, seq);
	if ((rc = store_txn_check(t, false, op)) < 0)
		return rc;
	rc = mdb_get(t->txn, t->s->dbi[db], k, v);
	return rc != 0 ? store_txn_fail(t, store_mdb_fail(op, rc)) : 0;
}

int
store_msg_get(store_txn_t *t, uint64_t seq, store_msg_t *out)
{
	unsigned char kb[8];
	MDB_val k, v;
	int rc;

	if ((rc = store_seq_get(t, STORE_DB_MSG, seq, "msg get", kb, &k, &v)) < 0)
		return rc;
	if (store_msg_decode(&k, &v, out) < 0)
		return store_corrupt(t, "msg", seq);
	return 0;
}

int
store_msg_set_status(store_txn_t *t, uint64_t seq, uint8_t status)
{
	unsigned char kb[8], stack[4096], *copy;
	MDB_val k = store_seq_key(kb, seq), v;
	store_msg_t m;
	int rc;

	if ((rc = store_txn_check(t, true, "msg set status")) < 0)
		return store_txn_fail(t, rc);
	rc = mdb_get(t->txn, t->s->dbi[STORE_DB_MSG], &k, &v);
	if (rc != 0)
		return store_txn_fail(t, store_mdb_fail("msg set status", rc));
	if (store_msg_decode(&k, &v, &m) < 0)
		return store_corrupt(t, "msg", seq);
	if (m.status == status)
		return 0;
	/* LMDB has no partial update, and v may sit on a page the put rewrites: copy first. */
	copy = v.mv_size <= sizeof(stack) ? stack : xmalloc(v.mv_size);
	memcpy(copy, v.mv_data, v.mv_size);
	copy[1] = status;
	v.mv_data = copy;
	rc = mdb_put(t->txn, t->s->dbi[STORE_DB_MSG], &k, &v, 0);
	if (copy != stack)
		free(copy);
	return rc != 0 ? store_txn_fail(t, store_mdb_fail("msg set status", rc)) : 0;
}

/* The LMDB key for a dedupe key, in kb when it must be shortened: LMDB caps key length, so a
 * longer key becomes its prefix and a 64-bit hash of all of it. */
static MDB_val
store_msgkey_key(const store_t *s, slice_t key, unsigned char *kb)
{
	size_t prefix = s->max_key - 8;

	if (key.len <= s->max_key)
		return (MDB_val){key.len, (void *)key.ptr};
	memcpy(kb, key.ptr, prefix);
	store_be64_put(kb + prefix, hash_fnv1a64(key.ptr, key.len, 0));
	return (MDB_val){s->max_key, kb};
}

int
store_msgkey_get(store_txn_t *t, slice_t key, uint64_t *seq, uint64_t *content_hash)
{
	unsigned char kb[STORE_KEY_MAX];
	MDB_val k, v;
	int rc;

	if ((rc = store_txn_check(t, false, "msgkey get")) < 0)
		return rc;
	if (key.len == 0)
		return -FG_ENOTFOUND; /* nothing is stored under an empty key */
	k = store_msgkey_key(t->s, key, kb);
	rc = mdb_get(t->txn, t->s->dbi[STORE_DB_MSGKEY], &k, &v);
	if (rc != 0)
		return store_txn_fail(t, store_mdb_fail("msgkey get", rc));
	if (v.mv_size != STORE_MSGKEY_VALUE) {
		store_error_set("msgkey get: record of %zu bytes, not %d", v.mv_size,
				STORE_MSGKEY_VALUE);
		return store_txn_fail(t, -FG_ESTORE);
	}
	*seq = be64_read(v.mv_data);
	*content_hash = be64_read((const unsigned char *)v.mv_data + 8);
	return 0;
}

int
store_msgkey_put(store_txn_t *t, slice_t key, uint64_t seq, uint64_t content_hash)
{
	unsigned char kb[STORE_KEY_MAX], vb[STORE_MSGKEY_VALUE];
	MDB_val k, v = {sizeof(vb), vb};
	int rc;

	if ((rc = store_txn_check(t, true, "msgkey put")) < 0)
		return store_txn_fail(t, rc);
	if (key.len == 0) {
		store_error_set("msgkey put: empty key");
		return store_txn_fail(t, -FG_EINVAL);
	}
	k = store_msgkey_key(t->s, key, kb);
	store_be64_put(vb, seq);
	store_be64_put(vb + 8, content_hash);
	rc = mdb_put(t->txn, t->s->dbi[STORE_DB_MSGKEY], &k, &v, 0);
	return rc != 0 ? store_txn_fail(t, store_mdb_fail("msgkey put", rc)) : 0;
}

int
store_dead_put(store_txn_t *t, const store_dead_t *d)
{
	unsigned char kb[8], stack[1024], *rec, *p;
	MDB_val k = store_seq_key(kb, d->seq), v;
	size_t len;
	int rc;

	if ((rc = store_txn_check(t, true, "dead put")) < 0)
		return store_txn_fail(t, rc);
	if (d->reason.len > 0xffff || d->location.len > 0xffff) {
		store_error_set("dead put: reason or location longer than 65535 bytes");
		return store_txn_fail(t, -FG_EINVAL);
	}
	len = STORE_DEAD_HEAD + 2 + d->reason.len + 2 + d->location.len;
	/* Encoded before the put, so d's slices may even point at the record being replaced. */
	rec = len <= sizeof(stack) ? stack : xmalloc(len);
	rec[0] = STORE_DEAD_FORMAT;
	rec[1] = d->stage;
	store_be16_put(rec + 2, d->code);
	store_be32_put(rec + 4, d->map_version);
	store_be64_put(rec + 8, d->time_ns);
	p = rec + STORE_DEAD_HEAD;
	store_be16_put(p, (uint16_t)d->reason.len);
	p = store_bytes_put(p + 2, d->reason);
	store_be16_put(p, (uint16_t)d->location.len);
	store_bytes_put(p + 2, d->location);
	v = (MDB_val){len, rec};
	rc = mdb_put(t->txn, t->s->dbi[STORE_DB_DEAD], &k, &v, 0);
	if (rec != stack)
		free(rec);
	return rc != 0 ? store_txn_fail(t, store_mdb_fail("dead put", rc)) : 0;
}

int
store_dead_get(store_txn_t *t, uint64_t seq, store_dead_t *out)
{
	unsigned char kb[8];
	MDB_val k, v;
	int rc;

	if ((rc = store_seq_get(t, STORE_DB_DEAD, seq, "dead get", kb, &k, &v)) < 0)
		return rc;
	if (store_dead_decode(&k, &v, out) < 0)
		return store_corrupt(t, "dead", seq);
	return 0;
}

int
store_dead_del(store_txn_t *t, uint64_t seq)
{
	unsigned char kb[8];
	MDB_val k = store_seq_key(kb, seq);
	int rc;

	if ((rc = store_txn_check(t, true, "dead del")) < 0)
		return store_txn_fail(t, rc);
	rc = mdb_del(t->txn, t->s->dbi[STORE_DB_DEAD], &k, NULL);
	return rc != 0 ? store_txn_fail(t, store_mdb_fail("dead del", rc)) : 0;
}

int
store_range(store_txn_t *t, int db, const MDB_val *from, store_visit_fn visit, void *ctx)
{
	MDB_cursor *c;
	MDB_val k, v;
	int rc, ret = 0;

	rc = mdb_cursor_open(t->txn, t->s->dbi[db], &c);
	if (rc != 0)
		return store_txn_fail(t, store_mdb_fail(store_dbs[db].name, rc));
	if (from != NULL) {
		k = *from;
		rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
	} else {
		rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
	}
	for (; rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT))
		if ((ret = visit(ctx, &k, &v)) != 0)
			break;
	mdb_cursor_close(c);
	if (ret != 0)
		return ret;
	if (rc != MDB_NOTFOUND)
		return store_txn_fail(t, store_mdb_fail(store_dbs[db].name, rc));
	return 0;
}

/* meta key of a checkpoint: a prefix no other meta record starts with, then the name. */
#define STORE_CHECKPOINT_PREFIX "ckpt:"

static int
store_checkpoint_key(slice_t name, unsigned char *kb, MDB_val *k)
{
	size_t pl = sizeof(STORE_CHECKPOINT_PREFIX) - 1;

	if (name.len == 0 || name.len > STORE_CHECKPOINT_NAME_MAX)
		return -FG_EINVAL;
	memcpy(kb, STORE_CHECKPOINT_PREFIX, pl);
	memcpy(kb + pl, name.ptr, name.len);
	*k = (MDB_val){pl + name.len, kb};
	return 0;
}

int
store_checkpoint_put(store_txn_t *t, slice_t name, slice_t value)
{
	unsigned char kb[STORE_CHECKPOINT_NAME_MAX + 8];
	MDB_val k, v = {value.len, (void *)value.ptr};
	int rc;

	if ((rc = store_txn_check(t, true, "checkpoint put")) < 0)
		return store_txn_fail(t, rc);
	if (store_checkpoint_key(name, kb, &k) < 0 || value.len > STORE_CHECKPOINT_VALUE_MAX) {
		store_error_set("checkpoint put: name or value too long");
		return store_txn_fail(t, -FG_EINVAL);
	}
	rc = mdb_put(t->txn, t->s->dbi[STORE_DB_META], &k, &v, 0);
	if (rc != 0)
		return store_txn_fail(t, store_mdb_fail("checkpoint put", rc));
	return 0;
}

int
store_checkpoint_get(store_txn_t *t, slice_t name, slice_t *value)
{
	unsigned char kb[STORE_CHECKPOINT_NAME_MAX + 8];
	MDB_val k, v;
	int rc;

	if ((rc = store_txn_check(t, false, "checkpoint get")) < 0)
		return rc;
	if (store_checkpoint_key(name, kb, &k) < 0)
		return -FG_ENOTFOUND;
	rc = mdb_get(t->txn, t->s->dbi[STORE_DB_META], &k, &v);
	if (rc == MDB_NOTFOUND)
		return -FG_ENOTFOUND;
	if (rc != 0)
		return store_txn_fail(t, store_mdb_fail("checkpoint get", rc));
	*value = slice_make(v.mv_data, v.mv_size);
	return 0;
}

int
store_checkpoint_del(store_txn_t *t, slice_t name)
{
	unsigned char kb[STORE_CHECKPOINT_NAME_MAX + 8];
	MDB_val k;
	int rc;

	if ((rc = store_txn_check(t, true, "checkpoint del")) < 0)
		return store_txn_fail(t, rc);
	if (store_checkpoint_key(name, kb, &k) < 0)
		return 0;
	rc = mdb_del(t->txn, t->s->dbi[STORE_DB_META], &k, NULL);
	if (rc != 0 && rc != MDB_NOTFOUND)
		return store_txn_fail(t, store_mdb_fail("checkpoint del", rc));
	return 0;
}

/* The last work id handed out: meta remembers it, so ids of done (deleted) items are not handed
 * out again; the queue's last key covers a meta record lost to damage. */
static int
store_work_last(store_txn_t *t, uint64_t *out)
{
	MDB_val k = {sizeof(STORE_WORK_LAST_KEY) - 1, STORE_WORK_LAST_KEY}, v;
	uint64_t last_key;
	int rc;

	if ((rc = store_last_key(t, STORE_DB_WORK, &last_key)) < 0)
		return rc;
	rc = mdb_get(t->txn, t->s->dbi[STORE_DB_META], &k, &v);
	if (rc == MDB_NOTFOUND) {
		*out = last_key;
		return 0;
	}
	if (rc != 0)
		return store_txn_fail(t, store_mdb_fail("work last", rc));
	if (v.mv_size != 8) {
		store_error_set("meta %s: record of %zu bytes, not 8", STORE_WORK_LAST_KEY,
				v.mv_size);
		return store_txn_fail(t, -FG_ESTORE);
	}
	*out = be64_read(v.mv_data);
	if (*out < last_key)
		*out = last_key;
	return 0;
}

int
store_work_put(store_txn_t *t, uint8_t kind, slice_t payload, uint64_t *id)
{
	unsigned char kb[8], vb[8];
	MDB_val k, v, mk = {sizeof(STORE_WORK_LAST_KEY) - 1, STORE_WORK_LAST_KEY};
	int rc;

	if ((rc = store_txn_check(t, true, "work put")) < 0)
		return store_txn_fail(t, rc);
	if (payload.len > SIZE_MAX - 1) {
		store_error_set("work put: payload too long");
		return store_txn_fail(t, -FG_EINVAL);
	}
	if (!t->have_work) {
		if ((rc = store_work_last(t, &t->work_last)) < 0)
			return rc;
		t->have_work = true;
	}
	k = store_seq_key(kb, t->work_last + 1);
	v = (MDB_val){1 + payload.len, NULL};
	rc = mdb_put(t->txn, t->s->dbi[STORE_DB_WORK], &k, &v, MDB_APPEND | MDB_RESERVE);
	if (rc != 0)
		return store_txn_fail(t, store_mdb_fail("work put", rc));
	*(unsigned char *)v.mv_data = kind;
	store_bytes_put((unsigned char *)v.mv_data + 1, payload);
	v = (MDB_val){8, vb};
	store_be64_put(vb, t->work_last + 1);
	rc = mdb_put(t->txn, t->s->dbi[STORE_DB_META], &mk, &v, 0);
	if (rc != 0)
		return store_txn_fail(t, store_mdb_fail("work put", rc));
	*id = ++t->work_last;
	return 0;
}

int
store_work_del(store_txn_t *t, uint64_t id)
{
	unsigned char kb[8];
	MDB_val k = store_seq_key(kb, id);
	int rc;

	if ((rc = store_txn_check(t, true, "work del")) < 0)
		return store_txn_fail(t, rc);
	rc = mdb_del(t->txn, t->s->dbi[STORE_DB_WORK], &k, NULL);
	return rc != 0 ? store_txn_fail(t, store_mdb_fail("work del", rc)) : 0;
}

static int
store_work_decode(const MDB_val *k, const MDB_val *v, store_work_t *out)
{
	if (k->mv_size != 8 || v->mv_size < 1)
		return -1;
	out->id = be64_read(k->mv_data);
	out->kind = *(const unsigned char *)v->mv_data;
	out->payload = slice_make((const char *)v->mv_data + 1, v->mv_size - 1);
	return 0;
}

typedef struct {
	store_txn_t *t;
	store_msg_cb msg_cb;
	store_dead_cb dead_cb;
	store_work_cb work_cb;
	void *ctx;
} store_each_t;

static int
store_msg_visit(void *ctx, const MDB_val *k, const MDB_val *v)
{
	store_each_t *e = ctx;
	store_msg_t m;

	if (store_msg_decode(k, v, &m) < 0)
		return store_corrupt(e->t, "msg", k->mv_size == 8 ? be64_read(k->mv_data) : 0);
	return e->msg_cb(e->ctx, &m);
}

static int
store_dead_visit(void *ctx, const MDB_val *k, const MDB_val *v)
{
	store_each_t *e = ctx;
	store_dead_t d;

	if (store_dead_decode(k, v, &d) < 0)
		return store_corrupt(e->t, "dead", k->mv_size == 8 ? be64_read(k->mv_data) : 0);
	return e->dead_cb(e->ctx, &d);
}

static int
store_work_visit(void *ctx, const MDB_val *k, const MDB_val *v)
{
	store_each_t *e = ctx;
	store_work_t w;

	if (store_work_decode(k, v, &w) < 0)
		return store_corrupt(e->t, "work", k->mv_size == 8 ? be64_read(k->mv_data) : 0);
	return e->work_cb(e->ctx, &w);
}

int
store_msg_foreach(store_txn_t *t, uint64_t from, store_msg_cb cb, void *ctx)
{
	store_each_t e = {.t = t, .msg_cb = cb, .ctx = ctx};
	unsigned char kb[8];
	MDB_val k = store_seq_key(kb, from);
	int rc;

	if ((rc = store_txn_check(t, false, "msg foreach")) < 0)
		return rc;
	return store_range(t, STORE_DB_MSG, &k, store_msg_visit, &e);
}

int
store_dead_foreach(store_txn_t *t, uint64_t from, store_dead_cb cb, void *ctx)
{
	store_each_t e = {.t = t, .dead_cb = cb, .ctx = ctx};
	unsigned char kb[8];
	MDB_val k = store_seq_key(kb, from);
	int rc;

	if ((rc = store_txn_check(t, false, "dead foreach")) < 0)
		return rc;
	return store_range(t, STORE_DB_DEAD, &k, store_dead_visit, &e);
}

int
store_work_foreach(store_txn_t *t, uint64_t from, store_work_cb cb, void *ctx)
{
	store_each_t e = {.t = t, .work_cb = cb, .ctx = ctx};
	unsigned char kb[8];
	MDB_val k = store_seq_key(kb, from);
	int rc;

	if ((rc = store_txn_check(t, false, "work foreach")) < 0)
		return rc;
	return store_range(t, STORE_DB_WORK, &k, store_work_visit, &e);
}

int
store_stats(store_txn_t *t, store_stats_t *out)
{
	MDB_stat st[5];
	MDB_envinfo info;
	static const int dbs[5] = {STORE_DB_MSG, STORE_DB_MSGKEY, STORE_DB_DEAD, STORE_DB_WORK,
				   STORE_DB_PEND};
	int rc;

	if ((rc = store_txn_check(t, false, "stats")) < 0)
		return rc;
	for (int i = 0; i < 5; i++) {
		rc = mdb_stat(t->txn, t->s->dbi[dbs[i]], &st[i]);
		if (rc != 0)
			return store_txn_fail(t, store_mdb_fail("stats", rc));
	}
	rc = mdb_env_info(t->s->env, &info);
	if (rc != 0)
		return store_txn_fail(t, store_mdb_fail("stats", rc));
	if (t->have_last_seq)
		out->last_seq = t->last_seq;
	else if ((rc = store_last_key(t, STORE_DB_MSG, &out->last_seq)) < 0)
		return rc;
	out->messages = st[0].ms_entries;
	out->msgkeys = st[1].ms_entries;
	out->dead = st[2].ms_entries;
	out->work = st[3].ms_entries;
	out->pending = st[4].ms_entries;
	out->map_size = info.me_mapsize;
	out->used_bytes = ((uint64_t)info.me_last_pgno + 1) * st[0].ms_psize;
	if ((rc = store_audit_stats(t, out)) < 0)
		return rc;
	return store_res_stats(t, out);
}

void
store_verify_problem(store_verify_t *vf, const char *fmt, ...)
{
	char text[512];
	va_list ap;

	vf->problems++;
	if (vf->report == NULL)
		return;
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	vf->report(vf->ctx, text);
}

/* 0 when msg holds seq, 1 when it does not, or an error. */
int
store_verify_msg_missing(store_verify_t *vf, uint64_t seq)
{
	unsigned char kb[8];
	MDB_val k = store_seq_key(kb, seq), v;
	int rc = mdb_get(vf->t->txn, vf->t->s->dbi[STORE_DB_MSG], &k, &v);

	if (rc == MDB_NOTFOUND)
		return 1;
	return rc != 0 ? store_txn_fail(vf->t, store_mdb_fail("verify", rc)) : 0;
}

static int
store_verify_msg(void *ctx, const MDB_val *k, const MDB_val *v)
{
	store_msg_t m;

	if (k->mv_size != 8)
		store_verify_problem(ctx, "msg: key of %zu bytes, not 8", k->mv_size);
	else if (store_msg_decode(k, v, &m) < 0)
		store_verify_problem(ctx, "msg %llu: record does not decode",
				     (unsigned long long)be64_read(k->mv_data));
	else if (m.seq == 0)
		store_verify_problem(ctx, "msg 0: sequence 0 is never assigned");
	return 0;
}

/* The key as printable text (it is sender + control id, not patient data), shortened. */
static void
store_key_text(const MDB_val *k, char *out, size_t cap)
{
	const unsigned char *p = k->mv_data;
	size_t n = 0;

	for (size_t i = 0; i < k->mv_size && n + 4 < cap; i++)
		out[n++] = p[i] >= 0x20 && p[i] < 0x7f ? (char)p[i] : '?';
	if (n < k->mv_size && n >= 3)
		memcpy(out + n - 3, "...", 3);
	out[n] = '\0';
}

static int
store_verify_msgkey(void *ctx, const MDB_val *k, const MDB_val *v)
{
	store_verify_t *vf = ctx;
	char text[80];
	uint64_t seq;
	int rc;

	store_key_text(k, text, sizeof(text));
	if (v->mv_size != STORE_MSGKEY_VALUE) {
		store_verify_problem(vf, "msgkey '%s': record of %zu bytes, not %d", text,
				     v->mv_size, STORE_MSGKEY_VALUE);
		return 0;
	}
	seq = be64_read(v->mv_data);
	if ((rc = store_verify_msg_missing(vf, seq)) < 0)
		return rc;
	if (rc == 1)
		store_verify_problem(vf,
				     "msgkey '%s': points at message %llu, which does not exist",
				     text, (unsigned long long)seq);
	return 0;
}

static int
store_verify_dead(void *ctx, const MDB_val *k, const MDB_val *v)
{
	store_verify_t *vf = ctx;
	store_dead_t d;
	int rc;

	if (k->mv_size != 8) {
		store_verify_problem(vf, "dead: key of %zu bytes, not 8", k->mv_size);
		return 0;
	}
	if (store_dead_decode(k, v, &d) < 0)
		store_verify_problem(vf, "dead %llu: record does not decode",
				     (unsigned long long)be64_read(k->mv_data));
	if ((rc = store_verify_msg_missing(vf, be64_read(k->mv_data))) < 0)
		return rc;
	if (rc == 1)
		store_verify_problem(vf, "dead %llu: no message with that sequence",
				     (unsigned long long)be64_read(k->mv_data));
	return 0;
}

static int
store_verify_work(void *ctx, const MDB_val *k, const MDB_val *v)
{
	store_verify_t *vf = ctx;
	store_work_t w;

	if (store_work_decode(k, v, &w) < 0)
		store_verify_problem(vf, "work: record of %zu bytes under a key of %zu bytes",
				     v->mv_size, k->mv_size);
	else if (w.id == 0 || w.id > vf->work_last)
		store_verify_problem(vf, "work %llu: beyond the last id handed out (%llu)",
				     (unsigned long long)w.id, (unsigned long long)vf->work_last);
	return 0;
}

int
store_verify(store_txn_t *t, store_report_cb report, void *ctx)
{
	store_verify_t vf = {t, report, ctx, 0, 0};
	MDB_val k = {sizeof(STORE_SCHEMA_KEY) - 1, STORE_SCHEMA_KEY}, v;
	int rc;

	if ((rc = store_txn_check(t, false, "verify")) < 0)
		return rc;
	rc = mdb_get(t->txn, t->s->dbi[STORE_DB_META], &k, &v);
	if (rc == MDB_NOTFOUND)
		store_verify_problem(&vf, "meta: no schema version");
	else if (rc != 0)
		return store_txn_fail(t, store_mdb_fail("verify", rc));
	else if (v.mv_size != 4 || be32_read(v.mv_data) != STORE_SCHEMA_VERSION)
		store_verify_problem(&vf, "meta: schema version record is not version %u",
				     STORE_SCHEMA_VERSION);
	if ((rc = store_range(t, STORE_DB_MSG, NULL, store_verify_msg, &vf)) < 0 ||
	    (rc = store_range(t, STORE_DB_MSGKEY, NULL, store_verify_msgkey, &vf)) < 0 ||
	    (rc = store_range(t, STORE_DB_DEAD, NULL, store_verify_dead, &vf)) < 0)
		return rc;
	/* Reads the meta record alone (not max'ed with the last key) to find ids beyond it. */
	k = (MDB_val){sizeof(STORE_WORK_LAST_KEY) - 1, STORE_WORK_LAST_KEY};
	rc = mdb_get(t->txn, t->s->dbi[STORE_DB_META], &k, &v);
	if (rc != 0 && rc != MDB_NOTFOUND)
		return store_txn_fail(t, store_mdb_fail("verify", rc));
	if (rc == 0 && v.mv_size != 8)
		store_verify_problem(&vf, "meta: %s record does not decode", STORE_WORK_LAST_KEY);
	else if (rc == 0)
		vf.work_last = be64_read(v.mv_data);
	if ((rc = store_range(t, STORE_DB_WORK, NULL, store_verify_work, &vf)) < 0 ||
	    (rc = store_res_verify(&vf)) < 0 || (rc = store_audit_verify(&vf)) < 0 ||
	    (rc = store_pend_verify(&vf)) < 0)
		return rc;
	return vf.problems;
}
