/* Search execution: each parameter becomes a scan of one index (eq, prefix or range) with a
 * filter on the value bytes (_lastUpdated, which no index holds: a walk of the history); id sets
 * are intersected across parameters (once few candidates remain, the rest are checked on each
 * candidate's own entries), sorted, paged by a keyset cursor, and includes are resolved for the
 * page (see gateway/search.h). */
#include "config.h"

#include "fhir/search.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fhir/json.h"
#include "gateway/audit.h"
#include "gateway/http.h"
#include "gateway/search.h"
#include "lib/err.h"

#define MAX_SORT 4
/* Once this few candidates remain, the other parameters are checked on each candidate's own
 * entries instead of through their (possibly large) match sets. */
#define CANDIDATES_MAX 256

typedef struct {
	slice_t *v;
	size_t n, cap;
} idset_t;

typedef struct {
	store_txn_t *t;
	arena_t *a;
	const search_opts_t *opt;
	fhir_node_t *issues; /* warnings: OperationOutcome.issue */
	const char *error;   /* first bad-request message */
	int rc;              /* sticky store error */
} ctx_t;

/* Id sets. */

static void
ids_add(arena_t *a, idset_t *s, slice_t id)
{
	s->v = arena_array_grow(a, s->v, s->n, &s->cap, sizeof(*s->v));
	s->v[s->n++] = arena_slice_dup(a, id);
}

static int
slice_qcmp(const void *a, const void *b)
{
	return slice_cmp(*(const slice_t *)a, *(const slice_t *)b);
}

static void
ids_normalize(idset_t *s)
{
	size_t k = 0;

	if (s->n == 0)
		return;
	qsort(s->v, s->n, sizeof(*s->v), slice_qcmp);
	for (size_t i = 0; i < s->n; i++)
		if (k == 0 || !slice_eq(s->v[k - 1], s->v[i]))
			s->v[k++] = s->v[i];
	s->n = k;
}

static bool
ids_has(const idset_t *s, slice_t id)
{
	size_t lo = 0, hi = s->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int r = slice_cmp(s->v[mid], id);

		if (r == 0)
			return true;
		if (r < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return false;
}

/* x := x AND (or minus, when minus) y; both normalized. */
static void
ids_and(idset_t *x, const idset_t *y, bool minus)
{
	size_t k = 0;

	for (size_t i = 0; i < x->n; i++)
		if (ids_has(y, x->v[i]) != minus)
			x->v[k++] = x->v[i];
	x->n = k;
}

static int
ids_collect_res(void *c, const store_res_t *r)
{
	void **p = c;

	ids_add(p[0], p[1], r->id);
	return 0;
}

static int
ids_all(ctx_t *c, slice_t type, idset_t *out)
{
	void *p[2] = {c->a, out};

	memset(out, 0, sizeof(*out));
	return store_res_foreach_type(c->t, type, SLICE_NULL, ids_collect_res, p);
}

/* Predicates over one index's values. */

typedef enum { P_EQ, P_PREFIX, P_SUFFIX, P_CONTAINS, P_DATE, P_NUMBER } pkind_t;

typedef struct pred pred_t;

struct pred {
	pkind_t kind;
	slice_t code; /* the index */
	slice_t key;  /* EQ/PREFIX/SUFFIX/CONTAINS: the bytes; NUMBER: the unit prefix */
	/* DATE (values are lo||hi) */
	fhir_search_prefix_t pfx;
	int64_t slo, shi;
	/* NUMBER: lo/hi bounds (encoded, empty: open) */
	slice_t nlo, nhi;
	bool nlo_incl, nhi_incl, negate;
	/* When set, an index match is only a candidate: this predicate over the resource's
	 * full entries (fhir_search_index_full) decides (string :exact). */
	const pred_t *full;
};

/* One value of a parameter: its alternatives (OR), and whether the result is the type's
 * ids without their matches (:not, :missing=true). A composite's value is instead one value
 * of each component parameter (comps), which one item of the resource must match together. */
typedef struct vpred vpred_t;

struct vpred {
	pred_t p[2];
	size_t n;
	bool negate;
	vpred_t *comps;
	size_t ncomps;
	slice_t composite; /* the composite parameter's code */
};

static bool
pred_date(const pred_t *p, slice_t v)
{
	int64_t a, b, tlo, thi;

	if (v.len != 16)
		return false;
	a = fhir_search_date_decode((const unsigned char *)v.ptr);
	b = fhir_search_date_decode((const unsigned char *)v.ptr + 8);
	tlo = a;
	thi = b;
	switch (p->pfx) {
	case FHIR_PFX_EQ:
		return tlo >= p->slo && thi <= p->shi;
	case FHIR_PFX_NE:
		return !(tlo >= p->slo && thi <= p->shi);
	case FHIR_PFX_GT:
		return thi > p->shi;
	case FHIR_PFX_LT:
		return tlo < p->slo;
	case FHIR_PFX_GE:
		return thi > p->slo;
	case FHIR_PFX_LE:
		return tlo < p->shi;
	case FHIR_PFX_SA:
		return tlo >= p->shi;
	case FHIR_PFX_EB:
		return thi <= p->slo;
	case FHIR_PFX_AP:
		return tlo < p->shi && thi > p->slo; /* slo/shi already widened */
	}
	return false;
}

static bool
pred_number(const pred_t *p, slice_t v)
{
	bool in;

	if (p->key.len && (v.len < p->key.len || memcmp(v.ptr, p->key.ptr, p->key.len) != 0))
		return false;
	v = slice_make(v.ptr + p->key.len, v.len - p->key.len);
	in = true;
	if (p->nlo.len) {
		int r = slice_cmp(v, p->nlo);

		in = p->nlo_incl ? r >= 0 : r > 0;
	}
	if (in && p->nhi.len) {
		int r = slice_cmp(v, p->nhi);

		in = p->nhi_incl ? r <= 0 : r < 0;
	}
	return in != p->negate;
}

static bool
pred_match(const pred_t *p, slice_t v)
{
	switch (p->kind) {
	case P_EQ:
		return slice_eq(v, p->key);
	case P_PREFIX:
		return p->key.len == 0 ||
		       (v.len >= p->key.len && memcmp(v.ptr, p->key.ptr, p->key.len) == 0);
	case P_SUFFIX:
		return v.len >= p->key.len &&
		       memcmp(v.ptr + v.len - p->key.len, p->key.ptr, p->key.len) == 0;
	case P_CONTAINS:
		return p->key.len == 0 || memmem(v.ptr, v.len, p->key.ptr, p->key.len) != NULL;
	case P_DATE:
		return pred_date(p, v);
	case P_NUMBER:
		return pred_number(p, v);
	}
	return false;
}

typedef struct {
	ctx_t *c;
	slice_t type;
	const pred_t *p;
	size_t vmax;
	idset_t *out;
} scan_t;

/* _lastUpdated is the time the store gave the current version (store_res_t.last_updated_ns),
 * which the stored body does not hold (reads add it to meta) and so no index entry has: its
 * predicates run on the value it would have as an entry, an instant at the millisecond
 * precision clients see ([ms, ms + 1) as lo||hi), made from the store's records. */
#define LU_PARAM "_lastUpdated"
#define LU_CODE  "_lastUpdated.lo"

static slice_t
lu_value(arena_t *a, uint64_t ns)
{
	unsigned char *v = arena_alloc(a, 16);
	int64_t ms = (int64_t)(ns / 1000000u);

	fhir_search_date_encode(ms, v);
	fhir_search_date_encode(ms + 1, v + 8);
	return slice_make((const char *)v, 16);
}

typedef struct {
	ctx_t *c;
	const pred_t *p;
	idset_t *out;
} lu_scan_t;

/* A current, not deleted resource: whether its lastUpdated matches (p NULL: any). */
static int
lu_scan_res(void *ctx, const store_res_t *r)
{
	lu_scan_t *s = ctx;

	if (!r->deleted &&
	    (s->p == NULL || pred_match(s->p, lu_value(s->c->a, r->last_updated_ns))))
		ids_add(s->c->a, s->out, r->id);
	return 0;
}

/* A version in the history since the bound: its resource is a candidate. */
static int
lu_scan_hist(void *ctx, const store_res_t *r)
{
	lu_scan_t *s = ctx;

	ids_add(s->c->a, s->out, r->id);
	return 0;
}

/* The ids of type whose lastUpdated matches p (a date predicate, or any value: :missing). A
 * predicate that needs lastUpdated at or after some time reads the history since then (a
 * resource's lastUpdated is that of its last change, and no change is earlier than one before
 * it), and checks the current version of each resource it names; the others read them all. */
static int
lu_run(ctx_t *c, slice_t type, const pred_t *p, idset_t *out)
{
	idset_t cand = {0};
	lu_scan_t s = {c, p->kind == P_DATE ? p : NULL, out};
	int64_t from = -1;
	int rc;

	if (s.p != NULL) {
		switch (p->pfx) {
		case FHIR_PFX_EQ:
		case FHIR_PFX_GE:
		case FHIR_PFX_AP:
			from = p->slo;
			break;
		case FHIR_PFX_GT:
		case FHIR_PFX_SA:
			from = p->shi;
			break;
		default:
			break;
		}
	}
	if (from < 0) {
		rc = store_res_foreach_type(c->t, type, SLICE_NULL, lu_scan_res, &s);
		ids_normalize(out);
		return rc;
	}
	s.out = &cand;
	/* (a bound past the year 2554 is past every time the store can give) */
	rc = store_hist_foreach_type(
	    c->t, type,
	    (uint64_t)from > UINT64_MAX / 1000000u ? UINT64_MAX : (uint64_t)from * 1000000u, 0,
	    lu_scan_hist, &s);
	if (rc < 0)
		return rc;
	ids_normalize(&cand);
	s.out = out;
	for (size_t i = 0; i < cand.n; i++) {
		store_res_t r;

		if ((rc = store_res_get(c->t, type, cand.v[i], &r)) == 0)
			lu_scan_res(&s, &r);
		else if (rc != -FG_ENOTFOUND)
			return rc;
	}
	ids_normalize(out);
	return 0;
}

/* The full entries (fhir_search_index_params) of the parameters codes (NULL: all) of the
 * stored resource type/id, in c->a; false when it is gone or unreadable. */
static bool
res_entries(ctx_t *c, slice_t type, slice_t id, const slice_t *codes, size_t ncodes,
	    fhir_idx_entry_t **e, size_t *n)
{
	store_res_t r;
	fhir_node_t *res;
	fhir_idx_entry_t *all;
	char err[128];
	bool lu = codes == NULL;

	if (store_res_get(c->t, type, id, &r) != 0 || r.deleted ||
	    fhir_json_parse(c->a, r.body.ptr, r.body.len, NULL, &res, err, sizeof(err)) != 0 ||
	    fhir_search_index_params(c->a, res, c->opt->base, codes, ncodes, e, n) != 0)
		return false;
	for (size_t i = 0; i < ncodes && !lu; i++)
		lu = slice_eq_cstr(codes[i], LU_PARAM);
	if (!lu)
		return true;
	/* the store's, which the stored body does not hold (lu_value) */
	all = arena_alloc(c->a, (*n + 1) * sizeof(*all));
	if (*n > 0)
		memcpy(all, *e, *n * sizeof(*all));
	all[*n] = (fhir_idx_entry_t){slice_cstr(LU_CODE), lu_value(c->a, r.last_updated_ns)};
	*e = all;
	(*n)++;
	return true;
}

/* The parameter an index code belongs to ("family.exact" -> "family"). */
static slice_t
param_of_code(slice_t code)
{
	for (size_t i = 0; i < code.len; i++)
		if (code.ptr[i] == '.')
			return slice_make(code.ptr, i);
	return code;
}

/* Whether the predicate that decides p holds for some of the entries e (sorted by code). */
static bool
pred_match_entries(const pred_t *p, const fhir_idx_entry_t *e, size_t n)
{
	if (p->full != NULL)
		p = p->full;
	for (size_t i = 0; i < n; i++)
		if (slice_eq(e[i].code, p->code) && pred_match(p, e[i].value))
			return true;
	return false;
}

/* A value cut at the key limit may match in full, and some predicates are decided by the
 * resource itself: evaluate on the stored resource's full entries. */
static bool
pred_recheck(ctx_t *c, slice_t type, slice_t id, const pred_t *p)
{
	fhir_idx_entry_t *e;
	size_t n;
	slice_t code = param_of_code((p->full != NULL ? p->full : p)->code);

	return res_entries(c, type, id, &code, 1, &e, &n) && pred_match_entries(p, e, n);
}

static int
scan_cb(void *ctx, slice_t value, slice_t id)
{
	scan_t *s = ctx;
	bool hit = pred_match(s->p, value)
		       ? s->p->full == NULL || pred_recheck(s->c, s->type, id, s->p)
		       : value.len >= s->vmax && pred_recheck(s->c, s->type, id, s->p);

	if (hit)
		ids_add(s->c->a, s->out, id);
	return 0;
}

static int
pred_run(ctx_t *c, slice_t type, const pred_t *p, idset_t *out)
{
	scan_t s = {c, type, p, store_idx_value_max(type, p->code), out};
	slice_t key = p->key;
	unsigned char lo[8];
	slice_t los;
	int rc;

	if (slice_eq_cstr(p->code, LU_CODE))
		return lu_run(c, type, p, out);
	if (key.len > s.vmax)
		key.len = s.vmax;
	switch (p->kind) {
	case P_EQ:
		rc = key.len < p->key.len
			 ? store_idx_foreach_prefix(c->t, type, p->code, key, scan_cb, &s)
			 : store_idx_foreach_eq(c->t, type, p->code, key, scan_cb, &s);
		break;
	case P_PREFIX:
	case P_NUMBER:
		rc = store_idx_foreach_prefix(c->t, type, p->code, key, scan_cb, &s);
		break;
	case P_DATE:
		/* Narrow the scan where the prefix allows (values start with lo); the filter
		 * decides. gt/ge/eb need the hi end, which any lo may have: a full scan. */
		if (p->pfx == FHIR_PFX_SA || p->pfx == FHIR_PFX_EQ) {
			fhir_search_date_encode(p->pfx == FHIR_PFX_SA ? p->shi : p->slo, lo);
			los = slice_make((const char *)lo, 8);
			rc = store_idx_foreach_range(c->t, type, p->code, &los, NULL, scan_cb, &s);
		} else if (p->pfx == FHIR_PFX_LT || p->pfx == FHIR_PFX_LE ||
			   p->pfx == FHIR_PFX_AP) {
			fhir_search_date_encode(p->pfx == FHIR_PFX_LT ? p->slo : p->shi, lo);
			los = slice_make((const char *)lo, 8);
			rc = store_idx_foreach_range(c->t, type, p->code, NULL, &los, scan_cb, &s);
		} else {
			rc = store_idx_foreach_prefix(c->t, type, p->code, SLICE_NULL, scan_cb, &s);
		}
		break;
	default:
		rc = store_idx_foreach_prefix(c->t, type, p->code, SLICE_NULL, scan_cb, &s);
		break;
	}
	ids_normalize(out);
	return rc;
}

/* Request parameters. */

typedef struct {
	fhir_search_param_t p;
	slice_t raw; /* the value before splitting (for chains) */
	/* _has:Src:ref:inner (p.sp NULL): the resources that Src's reference parameter ref points
	 * to, of the Src resources matching inner=raw (inner may be another _has) */
	slice_t has_src, has_ref, has_inner;
} qparam_t;

static void
bad_request(ctx_t *c, const char *msg)
{
	if (c->error == NULL)
		c->error = msg;
}

static slice_t
derived(arena_t *a, const char *code, const char *suffix)
{
	size_t l1 = strlen(code), l2 = strlen(suffix);
	char *p = arena_alloc(a, l1 + l2 + 1);

	memcpy(p, code, l1);
	memcpy(p + l1, suffix, l2 + 1);
	return slice_make(p, l1 + l2);
}

static const char *
index_code_of(const fhir_searchparam_t *sp)
{
	return sp->type == FHIR_SP_DATE ? ".lo" : "";
}

static bool
number_pred(ctx_t *c, fhir_search_prefix_t pfx, slice_t num, pred_t *p)
{
	char buf[64], lo[64], hi[64];
	double v, h, d;
	slice_t enc;
	size_t dec = 0;
	bool dot = false;

	if (num.len == 0 || num.len >= sizeof(buf) || !fhir_search_number_encode(c->a, num, &enc))
		return false;
	memcpy(buf, num.ptr, num.len);
	buf[num.len] = '\0';
	v = strtod(buf, NULL);
	for (size_t i = 0; i < num.len && num.ptr[i] != 'e' && num.ptr[i] != 'E'; i++) {
		if (dot)
			dec++;
		dot = dot || num.ptr[i] == '.';
	}
	p->kind = P_NUMBER;
	p->nlo = p->nhi = SLICE_NULL;
	p->negate = false;
	switch (pfx) {
	case FHIR_PFX_EQ:
	case FHIR_PFX_NE:
	case FHIR_PFX_AP:
		/* eq: the implicit range of the value's precision; ap: +-10% */
		h = 0.5;
		for (size_t i = 0; i < dec; i++)
			h /= 10;
		d = pfx == FHIR_PFX_AP ? (v < 0 ? -v : v) / 10 : h;
		snprintf(lo, sizeof(lo), "%.15g", v - d);
		snprintf(hi, sizeof(hi), "%.15g", v + d);
		if (!fhir_search_number_encode(c->a, slice_cstr(lo), &p->nlo) ||
		    !fhir_search_number_encode(c->a, slice_cstr(hi), &p->nhi))
			return false;
		p->nlo_incl = true;
		p->nhi_incl = pfx == FHIR_PFX_AP;
		p->negate = pfx == FHIR_PFX_NE;
		break;
	case FHIR_PFX_GT:
	case FHIR_PFX_SA:
	case FHIR_PFX_GE:
		p->nlo = enc;
		p->nlo_incl = pfx == FHIR_PFX_GE;
		break;
	case FHIR_PFX_LT:
	case FHIR_PFX_EB:
	case FHIR_PFX_LE:
		p->nhi = enc;
		p->nhi_incl = pfx == FHIR_PFX_LE;
		break;
	}
	return true;
}

/* Splits a token value at its first unescaped '|'. */
static bool
token_split(slice_t v, slice_t *sys, slice_t *code)
{
	for (size_t i = 0; i < v.len; i++)
		if (v.ptr[i] == '|' && (i == 0 || v.ptr[i - 1] != '\\')) {
			*sys = slice_make(v.ptr, i);
			*code = slice_make(v.ptr + i + 1, v.len - i - 1);
			return true;
		}
	*sys = SLICE_NULL;
	*code = v;
	return false;
}

static int eval_param(ctx_t *c, slice_t type, const qparam_t *q, idset_t *out);

/* A token value: "code" (prefix "code|"), "system|code" and "|code" (equal to "code|system"),
 * "system|" (suffix "|system"); values are indexed as "code|system". */
static void
token_pred(ctx_t *c, slice_t v, pred_t *p)
{
	slice_t sys, code;
	char *k;

	if (!token_split(v, &sys, &code)) {
		p->kind = P_PREFIX;
		sys = SLICE_NULL;
	} else if (code.len == 0) {
		p->kind = P_SUFFIX;
	} else {
		p->kind = P_EQ;
	}
	k = arena_alloc(c->a, code.len + 1 + sys.len);
	if (code.len)
		memcpy(k, code.ptr, code.len);
	k[code.len] = '|';
	if (sys.len)
		memcpy(k + code.len + 1, sys.ptr, sys.len);
	p->key = slice_make(k, code.len + 1 + sys.len);
}

/* A reference value; a bare id matches "id|Type" of any type and an unparsed "id". */
static void
reference_vpred(ctx_t *c, const char *code, slice_t mod, slice_t v, vpred_t *vp)
{
	pred_t *p = &vp->p[0];
	slice_t ref = v;

	p->kind = P_EQ;
	if (mod.len && !slice_eq_cstr(mod, "identifier") && memchr(v.ptr, '/', v.len) == NULL) {
		char *k = arena_alloc(c->a, mod.len + 1 + v.len);

		memcpy(k, mod.ptr, mod.len);
		k[mod.len] = '/';
		memcpy(k + mod.len + 1, v.ptr, v.len);
		ref = slice_make(k, mod.len + 1 + v.len);
	}
	if (slice_eq_cstr(mod, "identifier")) {
		p->code = derived(c->a, code, ".identifier");
		p->key = v;
		return;
	}
	if (!fhir_search_ref_key(c->a, ref, c->opt->base, &p->key))
		p->key = ref;
	if (memchr(ref.ptr, '/', ref.len) == NULL && memchr(ref.ptr, '|', ref.len) == NULL) {
		char *k = arena_alloc(c->a, ref.len + 1);

		if (ref.len)
			memcpy(k, ref.ptr, ref.len);
		k[ref.len] = '|';
		vp->p[1] = *p;
		vp->p[1].kind = P_PREFIX;
		vp->p[1].key = slice_make(k, ref.len + 1);
		vp->n = 2;
	}
}

static bool value_preds(ctx_t *c, const qparam_t *q, slice_t v, vpred_t *vp);

/* A composite value "part$part...": one value for each component parameter, with "\$" and
 * "\\" (kept escaped by fhir_search_param_parse) read as '$' and '\'. */
static bool
composite_preds(ctx_t *c, const qparam_t *q, slice_t v, vpred_t *vp)
{
	const fhir_searchparam_t *sp = q->p.sp;
	char *buf = arena_alloc(c->a, v.len + 1);
	size_t k = 0, bl = 0, start = 0;

	if (q->p.modifier.len) {
		bad_request(c, "a composite parameter takes no modifier");
		return false;
	}
	vp->ncomps = sp->ncomponents;
	vp->comps = arena_zalloc(c->a, sp->ncomponents * sizeof(*vp->comps));
	vp->composite = slice_cstr(sp->code);
	for (size_t i = 0; i <= v.len; i++) {
		qparam_t cq;

		if (i < v.len && v.ptr[i] == '\\' && i + 1 < v.len &&
		    (v.ptr[i + 1] == '$' || v.ptr[i + 1] == '\\')) {
			buf[bl++] = v.ptr[++i];
			continue;
		}
		if (i < v.len && v.ptr[i] != '$') {
			buf[bl++] = v.ptr[i];
			continue;
		}
		if (k == sp->ncomponents) {
			k++; /* one part too many */
			break;
		}
		memset(&cq, 0, sizeof(cq));
		cq.p.code = slice_cstr(sp->components[k].code);
		cq.p.sp = fhir_meta_searchparam(slice_cstr(sp->resource), cq.p.code);
		cq.raw = slice_make(buf + start, bl - start);
		if (cq.p.sp == NULL || bl == start || !value_preds(c, &cq, cq.raw, &vp->comps[k]))
			break;
		start = bl;
		k++;
	}
	if (k != sp->ncomponents) {
		bad_request(c,
			    "a composite value has one part for each of its components, "
			    "separated by $ (code-value-quantity=http://loinc.org|8480-6$gt140)");
		return false;
	}
	return true;
}

/* The predicates of one (OR-ed) value of q over type's indexes; false (and a bad request)
 * when the value or modifier is not valid for the parameter. */
static bool
value_preds(ctx_t *c, const qparam_t *q, slice_t v, vpred_t *vp)
{
	const fhir_searchparam_t *sp = q->p.sp;
	slice_t mod = q->p.modifier, sys, code, rest;
	pred_t *p = &vp->p[0];
	int64_t lo, hi;

	memset(vp, 0, sizeof(*vp));
	vp->n = 1;
	p->code = slice_cstr(sp->code);
	if (sp->type == FHIR_SP_COMPOSITE)
		return composite_preds(c, q, v, vp);
	if (slice_eq_cstr(mod, "missing")) {
		if (!slice_eq_cstr(v, "true") && !slice_eq_cstr(v, "false")) {
			bad_request(c, ":missing takes true or false");
			return false;
		}
		p->kind = P_PREFIX;
		p->code = derived(c->a, sp->code, index_code_of(sp));
		vp->negate = slice_eq_cstr(v, "true");
		return true;
	}
	switch (sp->type) {
	case FHIR_SP_TOKEN:
		if (slice_eq_cstr(mod, "text")) {
			p->kind = P_CONTAINS;
			p->code = derived(c->a, sp->code, ".text");
			p->key = fhir_search_string_norm(c->a, v);
			break;
		}
		if (mod.len && !slice_eq_cstr(mod, "not")) {
			bad_request(c, "unsupported modifier on a token parameter");
			return false;
		}
		token_pred(c, v, p);
		vp->negate = slice_eq_cstr(mod, "not");
		break;
	case FHIR_SP_STRING:
		if (slice_eq_cstr(mod, "exact")) {
			/* the index has the normalized value; the resource decides */
			pred_t *full = arena_zalloc(c->a, sizeof(*full));

			full->kind = P_EQ;
			full->code = derived(c->a, sp->code, ".exact");
			full->key = v;
			p->kind = P_EQ;
			p->key = fhir_search_string_norm(c->a, v);
			p->full = full;
		} else if (slice_eq_cstr(mod, "contains")) {
			p->kind = P_CONTAINS;
			p->key = fhir_search_string_norm(c->a, v);
		} else if (mod.len == 0) {
			p->kind = P_PREFIX;
			p->key = fhir_search_string_norm(c->a, v);
		} else {
			bad_request(c, "unsupported modifier on a string parameter");
			return false;
		}
		break;
	case FHIR_SP_URI:
		p->kind = slice_eq_cstr(mod, "below") ? P_PREFIX : P_EQ;
		p->key = v;
		if (mod.len && !slice_eq_cstr(mod, "below")) {
			bad_request(c, "unsupported modifier on a uri parameter");
			return false;
		}
		break;
	case FHIR_SP_REFERENCE:
		if (mod.len && !slice_eq_cstr(mod, "identifier") && !fhir_meta_is_resource(mod)) {
			bad_request(c, "unsupported modifier on a reference parameter");
			return false;
		}
		reference_vpred(c, sp->code, mod, v, vp);
		break;
	case FHIR_SP_DATE:
		if (mod.len) {
			bad_request(c, "unsupported modifier on a date parameter");
			return false;
		}
		p->pfx = fhir_search_prefix_split(v, &rest);
		if (!fhir_search_date_range(rest, &lo, &hi)) {
			bad_request(c, "invalid date value");
			return false;
		}
		if (p->pfx == FHIR_PFX_AP) {
			/* ap: widened by a tenth of the distance from now, at least a day */
			int64_t now = (int64_t)(time(NULL)) * 1000,
				d = now > lo ? now - lo : lo - now;

			d = d / 10 > 86400000 ? d / 10 : 86400000;
			lo -= d;
			hi += d;
		}
		p->kind = P_DATE;
		p->slo = lo;
		p->shi = hi;
		p->code = derived(c->a, sp->code, ".lo");
		break;
	case FHIR_SP_NUMBER:
	case FHIR_SP_QUANTITY: {
		fhir_search_prefix_t pfx = fhir_search_prefix_split(v, &rest);
		slice_t num = rest, qsys = SLICE_NULL, qcode = SLICE_NULL;

		if (mod.len) {
			bad_request(c, "unsupported modifier on a number or quantity parameter");
			return false;
		}
		if (sp->type == FHIR_SP_QUANTITY && token_split(rest, &sys, &code)) {
			num = sys;
			if (!token_split(code, &qsys, &qcode)) {
				qsys = SLICE_NULL; /* "n|code": any system */
				qcode = code;
			}
		}
		if (!number_pred(c, pfx, num, p)) {
			bad_request(c, "invalid number value");
			return false;
		}
		p->code = slice_cstr(sp->code);
		if (qcode.len) {
			/* "n|system|code" -> .su "system|code|"; "n||code" -> .u "code|" */
			buf_t b = BUF_INIT;

			if (qsys.len) {
				buf_append_slice(&b, qsys);
				buf_append_byte(&b, '|');
			}
			buf_append_slice(&b, qcode);
			buf_append_byte(&b, '|');
			p->key = arena_slice_dup(c->a, buf_slice(&b));
			buf_free(&b);
			p->code = derived(c->a, sp->code, qsys.len ? ".su" : ".u");
		}
		break;
	}
	default:
		bad_request(c, "unsupported search parameter type");
		return false;
	}
	return true;
}

/* Whether the entries e match vp. */
static bool vpred_match_entries(const vpred_t *vp, const fhir_idx_entry_t *e, size_t n);

/* Whether the stored resource type/id has an item of composite vp's parameter that matches
 * every component. */
static bool
composite_match(ctx_t *c, slice_t type, slice_t id, const vpred_t *vp)
{
	store_res_t r;
	fhir_node_t *res;
	fhir_idx_group_t *g;
	size_t ng;
	char err[128];

	if (store_res_get(c->t, type, id, &r) != 0 || r.deleted ||
	    fhir_json_parse(c->a, r.body.ptr, r.body.len, NULL, &res, err, sizeof(err)) != 0 ||
	    fhir_search_index_composite(c->a, res, c->opt->base, vp->composite, &g, &ng) != 0)
		return false;
	for (size_t i = 0; i < ng; i++) {
		bool all = true;

		for (size_t k = 0; k < vp->ncomps && all; k++)
			all = vpred_match_entries(&vp->comps[k], g[i].v, g[i].n);
		if (all)
			return true;
	}
	return false;
}

static int vpred_run(ctx_t *c, slice_t type, const vpred_t *vp, idset_t *out);

/* A composite value: the resources the first component's index finds, each checked. */
static int
composite_run(ctx_t *c, slice_t type, const vpred_t *vp, idset_t *out)
{
	size_t k = 0;
	int rc = vpred_run(c, type, &vp->comps[0], out);

	for (size_t i = 0; rc == 0 && i < out->n; i++)
		if (composite_match(c, type, out->v[i], vp))
			out->v[k++] = out->v[i];
	if (rc == 0)
		out->n = k;
	return rc;
}

/* The ids of type matching vp, through the indexes. */
static int
vpred_run(ctx_t *c, slice_t type, const vpred_t *vp, idset_t *out)
{
	idset_t all;
	int rc;

	if (vp->ncomps > 0)
		return composite_run(c, type, vp, out);
	memset(out, 0, sizeof(*out));
	for (size_t i = 0; i < vp->n; i++) {
		idset_t one = {0};

		if ((rc = pred_run(c, type, &vp->p[i], &one)) < 0)
			return rc;
		for (size_t j = 0; j < one.n; j++)
			ids_add(c->a, out, one.v[j]);
	}
	ids_normalize(out);
	if (!vp->negate)
		return 0;
	if ((rc = ids_all(c, type, &all)) < 0)
		return rc;
	ids_normalize(&all);
	ids_and(&all, out, true);
	*out = all;
	return 0;
}

/* Whether a resource with the full entries e matches vp. */
static bool
vpred_match_entries(const vpred_t *vp, const fhir_idx_entry_t *e, size_t n)
{
	bool hit = false;

	for (size_t i = 0; i < vp->n && !hit; i++)
		hit = pred_match_entries(&vp->p[i], e, n);
	return hit != vp->negate;
}

/* The ids of type matching one (OR-ed) value of q. */
static int
eval_value(ctx_t *c, slice_t type, const qparam_t *q, slice_t v, idset_t *out)
{
	vpred_t vp;

	memset(out, 0, sizeof(*out));
	if (!value_preds(c, q, v, &vp))
		return 0;
	return vpred_run(c, type, &vp, out);
}

/* Links of a chain after the first parameter ("organization.name": 2). */
#define CHAIN_MAX      4
#define CHAIN_MAX_TEXT "4"

static size_t
chain_links(slice_t chain)
{
	size_t n = chain.len > 0;

	for (size_t i = 0; i < chain.len; i++)
		n += chain.ptr[i] == '.';
	return n;
}

/* Chained: ref.chain=value -> search the target type(s) (with the rest of the chain, when it
 * has more links), then the reference index. */
static int
eval_chain(ctx_t *c, slice_t type, const qparam_t *q, idset_t *out)
{
	const fhir_searchparam_t *sp = q->p.sp;
	const char *tp = sp->targets;
	int rc;

	memset(out, 0, sizeof(*out));
	if (sp->type != FHIR_SP_REFERENCE) {
		bad_request(c, "chained parameter on a parameter that is not a reference");
		return 0;
	}
	if (chain_links(q->p.chain) > CHAIN_MAX) {
		bad_request(c, "a chain has at most " CHAIN_MAX_TEXT " links after its parameter");
		return 0;
	}
	while (*tp != '\0' || q->p.modifier.len) {
		slice_t target;
		qparam_t sub = {0};
		idset_t ids;

		if (q->p.modifier.len) {
			target = q->p.modifier;
		} else {
			const char *e = strchr(tp, ' ');

			target = slice_make(tp, e ? (size_t)(e - tp) : strlen(tp));
			tp += target.len + (e ? 1 : 0);
		}
		fhir_search_param_parse(c->a, target, q->p.chain, q->raw, &sub.p);
		sub.raw = q->raw;
		/* a chain of its own goes on through eval_param (sub.p.chain: one link fewer) */
		if (sub.p.sp != NULL) {
			if ((rc = eval_param(c, target, &sub, &ids)) < 0)
				return rc;
			for (size_t i = 0; i < ids.n; i++) {
				qparam_t ref = *q;
				idset_t hit;
				char *k = arena_alloc(c->a, target.len + 1 + ids.v[i].len);

				memcpy(k, target.ptr, target.len);
				k[target.len] = '/';
				memcpy(k + target.len + 1, ids.v[i].ptr, ids.v[i].len);
				ref.p.modifier = SLICE_NULL;
				ref.p.chain = SLICE_NULL;
				if ((rc = eval_value(c, type, &ref,
						     slice_make(k, target.len + 1 + ids.v[i].len),
						     &hit)) < 0)
					return rc;
				for (size_t j = 0; j < hit.n; j++)
					ids_add(c->a, out, hit.v[j]);
			}
		}
		if (q->p.modifier.len)
			break;
	}
	ids_normalize(out);
	return 0;
}

/* Whether a parsed parameter can be searched: known, and either chained (the chain decides)
 * or of a kind and expression the indexes answer. */
static bool
param_searchable(const fhir_search_param_t *p)
{
	return p->sp != NULL && (p->chain.len > 0 || (p->sp->type != FHIR_SP_SPECIAL &&
						      fhir_search_param_is_supported(p->sp)));
}

/* How many times needle stands in s. */
static size_t
memmem_count(slice_t s, const char *needle)
{
	size_t n = 0, nl = strlen(needle);

	for (size_t i = 0; i + nl <= s.len; i++)
		n += memcmp(s.ptr + i, needle, nl) == 0;
	return n;
}

/* "_has:Src:ref:inner" into q (its value raw): false (and a bad request) when it is not one. */
static bool
has_parse(ctx_t *c, slice_t name, slice_t raw, qparam_t *q)
{
	const fhir_searchparam_t *sp;
	size_t i = 5, a, b;

	memset(q, 0, sizeof(*q));
	q->raw = raw;
	for (a = i; i < name.len && name.ptr[i] != ':'; i++)
		;
	q->has_src = slice_make(name.ptr + a, i - a);
	for (b = ++i; i < name.len && name.ptr[i] != ':'; i++)
		;
	if (i >= name.len) {
		bad_request(c, "_has takes _has:Type:reference-parameter:parameter=value");
		return false;
	}
	q->has_ref = slice_make(name.ptr + b, i - b);
	q->has_inner = slice_make(name.ptr + i + 1, name.len - i - 1);
	sp = fhir_meta_is_resource(q->has_src) ? fhir_meta_searchparam(q->has_src, q->has_ref)
					       : NULL;
	if (sp == NULL || sp->type != FHIR_SP_REFERENCE || q->has_inner.len == 0) {
		bad_request(c, "_has: not a resource type and one of its reference parameters");
		return false;
	}
	return true;
}

typedef struct {
	ctx_t *c;
	const idset_t *src;
	slice_t type;
	idset_t *out;
} has_scan_t;

/* A reference entry "id|Type" of a source resource: its target, when the source matched. */
static int
has_scan_cb(void *ctx, slice_t value, slice_t id)
{
	has_scan_t *s = ctx;
	size_t tl = s->type.len;

	if (value.len > tl + 1 && value.ptr[value.len - tl - 1] == '|' &&
	    memcmp(value.ptr + value.len - tl, s->type.ptr, tl) == 0 && ids_has(s->src, id))
		ids_add(s->c->a, s->out, slice_make(value.ptr, value.len - tl - 1));
	return 0;
}

/* _has: the Src resources matching the inner parameter, then the ids of type their reference
 * parameter's index entries name. */
static int
eval_has(ctx_t *c, slice_t type, const qparam_t *q, idset_t *out)
{
	qparam_t inner = {0};
	idset_t src;
	has_scan_t s = {c, &src, type, out};
	int rc;

	memset(out, 0, sizeof(*out));
	if (memmem_count(q->has_inner, "_has:") >= CHAIN_MAX) {
		bad_request(c, "_has nests at most " CHAIN_MAX_TEXT " deep");
		return 0;
	}
	if (q->has_inner.len > 5 && memcmp(q->has_inner.ptr, "_has:", 5) == 0) {
		if (!has_parse(c, q->has_inner, q->raw, &inner))
			return 0;
	} else {
		fhir_search_param_parse(c->a, q->has_src, q->has_inner, q->raw, &inner.p);
		inner.raw = q->raw;
		if (!param_searchable(&inner.p)) {
			bad_request(c, "_has: unknown or unsupported parameter of its type");
			return 0;
		}
	}
	if ((rc = eval_param(c, q->has_src, &inner, &src)) < 0)
		return rc;
	ids_normalize(&src);
	if (src.n > 0)
		rc = store_idx_foreach_prefix(c->t, q->has_src, q->has_ref, SLICE_NULL, has_scan_cb,
					      &s);
	ids_normalize(out);
	return rc;
}

/* The ids of type matching every value alternative of q (OR). */
static int
eval_param(ctx_t *c, slice_t type, const qparam_t *q, idset_t *out)
{
	int rc;

	if (q->has_src.len)
		return eval_has(c, type, q, out);
	if (q->p.chain.len)
		return eval_chain(c, type, q, out);
	memset(out, 0, sizeof(*out));
	for (size_t i = 0; i < q->p.nvalues; i++) {
		idset_t one;

		if ((rc = eval_value(c, type, q, q->p.values[i], &one)) < 0)
			return rc;
		for (size_t j = 0; j < one.n; j++)
			ids_add(c->a, out, one.v[j]);
	}
	ids_normalize(out);
	return 0;
}

/* Evaluation order: parameters whose index lookups are usually narrow first, so that the
 * candidates shrink early; scans of a whole index (:contains, :text, :not, :missing, most
 * date prefixes) last, where they are often checked per candidate. */
static int
param_cost(const qparam_t *q)
{
	slice_t mod = q->p.modifier;

	if (q->has_src.len)
		return 2;
	if (slice_eq_cstr(mod, "missing") || slice_eq_cstr(mod, "not") ||
	    slice_eq_cstr(mod, "contains") || slice_eq_cstr(mod, "text"))
		return 3;
	if (q->p.chain.len)
		return 2;
	switch (q->p.sp->type) {
	case FHIR_SP_TOKEN:
	case FHIR_SP_REFERENCE:
	case FHIR_SP_URI:
		return 0;
	case FHIR_SP_STRING:
		return 1;
	default:
		return 2;
	}
}

/* Keeps the ids of set that match every parameter of qs: chains through their match sets,
 * the others on each candidate's own entries (one load and extraction per candidate). */
static int
candidates_filter(ctx_t *c, slice_t type, const qparam_t *qs, size_t nqs, idset_t *set)
{
	vpred_t **vps = arena_alloc(c->a, nqs * sizeof(*vps));
	slice_t *codes = arena_alloc(c->a, (nqs ? nqs : 1) * sizeof(*codes));
	size_t k = 0, ncodes = 0;
	int rc;

	for (size_t i = 0; i < nqs; i++) {
		vps[i] = NULL;
		if (qs[i].p.chain.len || qs[i].has_src.len) {
			idset_t one;

			if ((rc = eval_param(c, type, &qs[i], &one)) < 0)
				return rc;
			ids_and(set, &one, false);
			continue;
		}
		if (qs[i].p.sp->type != FHIR_SP_COMPOSITE)
			codes[ncodes++] = qs[i].p.code;
		vps[i] = arena_alloc(c->a, (qs[i].p.nvalues ? qs[i].p.nvalues : 1) * sizeof(**vps));
		for (size_t j = 0; j < qs[i].p.nvalues; j++)
			if (!value_preds(c, &qs[i], qs[i].p.values[j], &vps[i][j]))
				return 0;
	}
	for (size_t r = 0; r < set->n; r++) {
		fhir_idx_entry_t *e;
		size_t n;
		bool keep = res_entries(c, type, set->v[r], codes, ncodes, &e, &n);

		for (size_t i = 0; i < nqs && keep; i++) {
			bool any = false;

			/* a composite's items are the resource's: checked on it (composite_match)
			 */
			for (size_t j = 0; vps[i] != NULL && j < qs[i].p.nvalues && !any; j++)
				any = vps[i][j].ncomps > 0
					  ? composite_match(c, type, set->v[r], &vps[i][j])
					  : vpred_match_entries(&vps[i][j], e, n);
			keep = vps[i] == NULL || any;
		}
		if (keep)
			set->v[k++] = set->v[r];
	}
	set->n = k;
	return 0;
}

/* Sorting and paging. */

typedef struct {
	slice_t type, id;
	slice_t key[MAX_SORT];
	bool has[MAX_SORT];
} row_t;

typedef struct {
	slice_t code; /* as given, without '-' */
	bool desc;
} sortkey_t;

typedef struct {
	const sortkey_t *sk;
	size_t ns;
} sortspec_t;

static int
row_cmp_keys(const row_t *x, const row_t *y, const sortkey_t *sk, size_t ns)
{
	for (size_t k = 0; k < ns; k++) {
		int r;

		if (x->has[k] != y->has[k])
			return x->has[k] ? -1 : 1; /* missing values last */
		if (!x->has[k])
			continue;
		r = slice_cmp(x->key[k], y->key[k]);
		if (r != 0)
			return sk[k].desc ? -r : r;
	}
	{
		int r = slice_cmp(x->type, y->type);

		return r != 0 ? r : slice_cmp(x->id, y->id);
	}
}

static int
row_qcmp(const void *a, const void *b, void *spec)
{
	const sortspec_t *s = spec;

	return row_cmp_keys(a, b, s->sk, s->ns);
}

typedef struct {
	ctx_t *c;
	row_t *rows;
	size_t n, k;
	bool desc;
	idset_t *pos; /* ids of the rows (sorted), for the lookup of a scanned id */
} sortscan_t;

static int
sortscan_cb(void *ctx, slice_t value, slice_t id)
{
	sortscan_t *s = ctx;
	size_t lo = 0, hi = s->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int r = slice_cmp(s->rows[mid].id, id);

		if (r == 0) {
			row_t *row = &s->rows[mid];

			/* values come in ascending order: first is the min, last the max */
			if (!row->has[s->k] || s->desc) {
				row->key[s->k] = arena_slice_dup(s->c->a, value);
				row->has[s->k] = true;
			}
			return 0;
		}
		if (r < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return 0;
}

/* Fills key k of rows (all of one type, in id order). */
static int
sort_keys_fill(ctx_t *c, slice_t type, row_t *rows, size_t n, size_t k, const sortkey_t *sk)
{
	const fhir_searchparam_t *sp;
	sortscan_t s = {c, rows, n, k, sk->desc, NULL};

	if (slice_eq_cstr(sk->code, "_id")) {
		for (size_t i = 0; i < n; i++) {
			rows[i].key[k] = rows[i].id;
			rows[i].has[k] = true;
		}
		return 0;
	}
	if (slice_eq_cstr(sk->code, LU_PARAM)) {
		for (size_t i = 0; i < n; i++) {
			store_res_t r;
			int rc = store_res_get(c->t, type, rows[i].id, &r);

			if (rc == 0) {
				rows[i].key[k] =
				    slice_make(lu_value(c->a, r.last_updated_ns).ptr, 8);
				rows[i].has[k] = true;
			} else if (rc != -FG_ENOTFOUND) {
				return rc;
			}
		}
		return 0;
	}
	sp = fhir_meta_searchparam(type, sk->code);
	if (sp == NULL)
		return 0;
	return store_idx_foreach_prefix(c->t, type, derived(c->a, sp->code, index_code_of(sp)),
					SLICE_NULL, sortscan_cb, &s);
}

/* Cursor: hex of, per sort key, a presence byte and a u16-prefixed value, then type and id. */
static slice_t
cursor_encode(arena_t *a, const row_t *r, size_t ns)
{
	buf_t b = BUF_INIT;
	char *hex;
	slice_t out;

	for (size_t k = 0; k < ns; k++) {
		buf_append_byte(&b, r->has[k] ? 1 : 0);
		buf_append_lpstr(&b, r->has[k] ? r->key[k] : SLICE_NULL);
	}
	buf_append_lpstr(&b, r->type);
	buf_append_lpstr(&b, r->id);
	hex = arena_alloc(a, b.len * 2 + 1);
	for (size_t i = 0; i < b.len; i++)
		snprintf(hex + 2 * i, 3, "%02x", (unsigned char)b.data[i]);
	out = slice_make(hex, b.len * 2);
	buf_free(&b);
	return out;
}

static bool
cursor_decode(arena_t *a, slice_t hex, size_t ns, row_t *r)
{
	unsigned char *b;
	size_t n = hex.len / 2, p = 0;

	if (hex.len % 2)
		return false;
	b = arena_alloc(a, n + 1);
	for (size_t i = 0; i < n; i++) {
		unsigned v = 0;

		for (size_t j = 0; j < 2; j++) {
			char ch = hex.ptr[2 * i + j];

			v <<= 4;
			if (ch >= '0' && ch <= '9')
				v |= (unsigned)(ch - '0');
			else if (ch >= 'a' && ch <= 'f')
				v |= (unsigned)(ch - 'a' + 10);
			else
				return false;
		}
		b[i] = (unsigned char)v;
	}
	memset(r, 0, sizeof(*r));
	for (size_t f = 0; f < ns + 2; f++) {
		slice_t *dst = f < ns ? &r->key[f] : f == ns ? &r->type : &r->id;
		size_t l;

		if (f < ns) {
			if (p >= n)
				return false;
			r->has[f] = b[p++] != 0;
		}
		if (p + 2 > n)
			return false;
		l = be16_read(b + p);
		p += 2;
		if (p + l > n)
			return false;
		*dst = slice_make((const char *)b + p, l);
		p += l;
	}
	return p == n;
}

/* Includes. */

static bool
hit_seen(const search_hit_t *h, size_t n, slice_t type, slice_t id)
{
	for (size_t i = 0; i < n; i++)
		if (slice_eq(h[i].type, type) && slice_eq(h[i].id, id))
			return true;
	return false;
}

typedef struct {
	search_hit_t *v;
	size_t n, cap;
} hits_t;

static void
hits_add(arena_t *a, hits_t *h, slice_t type, slice_t id, bool include)
{
	if (include && hit_seen(h->v, h->n, type, id))
		return;
	h->v = arena_array_grow(a, h->v, h->n, &h->cap, sizeof(*h->v));
	h->v[h->n++] = (search_hit_t){type, id, include};
}

/* "Src:param[:Target]" */
static bool
include_split(slice_t v, slice_t *src, slice_t *param, slice_t *target)
{
	const char *c1 = memchr(v.ptr, ':', v.len), *c2;

	if (c1 == NULL)
		return false;
	*src = slice_make(v.ptr, (size_t)(c1 - v.ptr));
	*param = slice_make(c1 + 1, v.len - src->len - 1);
	*target = SLICE_NULL;
	if ((c2 = memchr(param->ptr, ':', param->len)) != NULL) {
		*target = slice_make(c2 + 1, param->len - (size_t)(c2 - param->ptr) - 1);
		param->len = (size_t)(c2 - param->ptr);
	}
	return src->len > 0 && param->len > 0;
}

/* _include=Src:param[:Target], Src:*, or * (every reference of every resource in the range). */
static int
do_include(ctx_t *c, hits_t *h, size_t from, size_t to, slice_t v)
{
	slice_t src, param, target;

	if (slice_eq_cstr(v, "*")) {
		src = param = v;
		target = SLICE_NULL;
	} else if (!include_split(v, &src, &param, &target)) {
		return 0;
	}
	for (size_t i = from; i < to; i++) {
		fhir_idx_entry_t *e;
		size_t n;
		slice_t type = h->v[i].type;

		if (!slice_eq(type, src) && !slice_eq_cstr(src, "*"))
			continue;
		/* "*": every parameter (the reference ones are kept below) */
		if (!res_entries(c, type, h->v[i].id, slice_eq_cstr(param, "*") ? NULL : &param, 1,
				 &e, &n))
			continue;
		for (size_t k = 0; k < n; k++) {
			const fhir_searchparam_t *sp = fhir_meta_searchparam(type, e[k].code);
			/* "id|Type"; other values (URLs, canonicals) have no resource type there */
			const char *bar = memchr(e[k].value.ptr, '|', e[k].value.len);
			slice_t tt, tid;
			store_res_t tr;

			if (sp == NULL || sp->type != FHIR_SP_REFERENCE || bar == NULL ||
			    (!slice_eq_cstr(param, "*") && !slice_eq(param, e[k].code)))
				continue;
			tid = slice_make(e[k].value.ptr, (size_t)(bar - e[k].value.ptr));
			tt = slice_make(bar + 1, e[k].value.len - tid.len - 1);
			if (!fhir_meta_is_resource(tt) || (target.len && !slice_eq(target, tt)) ||
			    store_res_get(c->t, tt, tid, &tr) != 0 || tr.deleted)
				continue;
			hits_add(c->a, h, arena_slice_dup(c->a, tt), arena_slice_dup(c->a, tid),
				 true);
		}
	}
	return 0;
}

/* Whether reference parameter sp may point at a resource of type t (no targets: any). */
static bool
sp_may_target(const fhir_searchparam_t *sp, slice_t t)
{
	const char *p = sp->targets;

	if (*p == '\0')
		return true;
	while (*p != '\0') {
		size_t len = strcspn(p, " ");

		if (len == t.len && memcmp(p, t.ptr, len) == 0)
			return true;
		p += len + (p[len] == ' ');
	}
	return false;
}

/* The src resources whose reference parameter code points at the hit i (added to h). */
static int
revinclude_param(ctx_t *c, hits_t *h, size_t i, slice_t src, slice_t code)
{
	slice_t id = h->v[i].id, type = h->v[i].type;
	idset_t ids = {0};
	pred_t p = {0};
	char *k = arena_alloc(c->a, id.len + 1 + type.len);
	int rc;

	memcpy(k, id.ptr, id.len);
	k[id.len] = '|';
	memcpy(k + id.len + 1, type.ptr, type.len);
	p.kind = P_EQ;
	p.code = code;
	p.key = slice_make(k, id.len + 1 + type.len);
	if ((rc = pred_run(c, src, &p, &ids)) < 0)
		return rc;
	for (size_t j = 0; j < ids.n; j++)
		hits_add(c->a, h, src, ids.v[j], true);
	return 0;
}

/* _revinclude=Src:param[:Target]; Src:* (every reference parameter of Src that may point at
 * the resource) and * (those of every type the store holds). */
static int
do_revinclude(ctx_t *c, hits_t *h, size_t from, size_t to, slice_t v)
{
	slice_t src, param, target;
	bool any_src = slice_eq_cstr(v, "*");
	int rc;

	if (any_src) {
		src = param = v;
		target = SLICE_NULL;
	} else if (!include_split(v, &src, &param, &target) || !fhir_meta_is_resource(src) ||
		   (!slice_eq_cstr(param, "*") && fhir_meta_searchparam(src, param) == NULL)) {
		return 0;
	}
	for (size_t i = from; i < to; i++) {
		size_t nt = any_src ? fhir_meta_resource_count() : 1;

		if (target.len && !slice_eq(target, h->v[i].type))
			continue;
		if (!slice_eq_cstr(param, "*")) {
			if ((rc = revinclude_param(c, h, i, src, param)) < 0)
				return rc;
			continue;
		}
		for (size_t ti = 0; ti < nt; ti++) {
			slice_t st = any_src ? slice_cstr(fhir_meta_resource_at(ti)->name) : src;
			const fhir_searchparam_t *const *list;
			size_t np = fhir_meta_searchparams(st, &list);
			uint64_t count = 1;

			if (any_src && (rc = store_res_count(c->t, st, &count)) < 0)
				return rc;
			for (size_t k = 0; count > 0 && k < np; k++)
				if (list[k]->type == FHIR_SP_REFERENCE &&
				    sp_may_target(list[k], h->v[i].type) &&
				    (rc = revinclude_param(c, h, i, st,
							   slice_cstr(list[k]->code))) < 0)
					return rc;
		}
	}
	return 0;
}

/* AuditEvent: the audit trail is its own database (store_audit_*), in key order, where the key
 * is the event's recorded time (ns, unique). A search walks it newest or oldest first within
 * the key range its date and _id values allow, or the entries of one entity reference, and
 * checks every other parameter on each event's own entries; it stops once the page is full. */

typedef struct {
	ctx_t *c;
	const qparam_t **qs; /* checked on each event */
	vpred_t **vps;
	size_t nqs;
	slice_t *codes;
	uint64_t *ids; /* _id values (keys); NULL: no _id */
	size_t nids, capids;
	arena_t *scratch; /* one event's parse, reset per event */
	uint64_t *keys;   /* the matches kept */
	size_t n, want;
	uint64_t seen;  /* matches, also those past want when counting */
	bool count_all; /* count every match (total) */
} ascan_t;

static bool
keys_has(const uint64_t *v, size_t n, uint64_t key)
{
	for (size_t i = 0; i < n; i++)
		if (v[i] == key)
			return true;
	return false;
}

static int
ascan_cb(void *ctx, const store_audit_t *r)
{
	ascan_t *s = ctx;
	bool keep = s->ids == NULL || keys_has(s->ids, s->nids, r->key);

	if (keep && s->nqs > 0) {
		fhir_node_t *res;
		fhir_idx_entry_t *e;
		size_t n;
		char err[128];

		arena_reset(s->scratch);
		keep = fhir_json_parse(s->scratch, r->body.ptr, r->body.len, NULL, &res, err,
				       sizeof(err)) == 0 &&
		       fhir_search_index_params(s->scratch, res, s->c->opt->base, s->codes, s->nqs,
						&e, &n) == 0;
		for (size_t i = 0; i < s->nqs && keep; i++) {
			bool any = false;

			for (size_t j = 0; j < s->qs[i]->p.nvalues && !any; j++)
				any = vpred_match_entries(&s->vps[i][j], e, n);
			keep = any;
		}
	}
	if (!keep)
		return 0;
	s->seen++;
	if (s->n < s->want)
		s->keys[s->n++] = r->key;
	return s->n == s->want && !s->count_all ? 1 : 0;
}

/* ns since the epoch of a time in ms, clamped to the key space. */
static uint64_t
ms_to_key(int64_t ms)
{
	if (ms <= 0)
		return 0;
	if ((uint64_t)ms >= UINT64_MAX / 1000000u)
		return UINT64_MAX;
	return (uint64_t)ms * 1000000u;
}

/* Narrows [*lo, *hi) to the keys whose recorded time (the key's, to the ms) can satisfy the
 * date value v; false when the prefix allows no narrowing (ne). */
static bool
date_narrow(ctx_t *c, const qparam_t *q, uint64_t *lo, uint64_t *hi)
{
	vpred_t vp;
	const pred_t *p = &vp.p[0];
	uint64_t l = 0, h = UINT64_MAX;

	if (!value_preds(c, q, q->p.values[0], &vp) || vp.negate || p->kind != P_DATE)
		return false;
	switch (p->pfx) {
	case FHIR_PFX_GE:
	case FHIR_PFX_AP:
		l = ms_to_key(p->slo);
		h = p->pfx == FHIR_PFX_AP ? ms_to_key(p->shi) : h;
		break;
	case FHIR_PFX_GT:
	case FHIR_PFX_SA:
		l = ms_to_key(p->shi);
		break;
	case FHIR_PFX_EQ:
		l = ms_to_key(p->slo);
		h = ms_to_key(p->shi);
		break;
	case FHIR_PFX_LT:
	case FHIR_PFX_EB:
		h = ms_to_key(p->slo);
		break;
	case FHIR_PFX_LE:
		h = ms_to_key(p->shi);
		break;
	case FHIR_PFX_NE:
		return false;
	}
	*lo = l > *lo ? l : *lo;
	*hi = h < *hi ? h : *hi;
	return true;
}

/* The auditref key of a reference value ("Type/id" or a URL under the base), when the index
 * can answer it. */
static bool
audit_ref_of(ctx_t *c, const qparam_t *q, slice_t *ref)
{
	slice_t v = q->p.values[0], k;

	if (memchr(v.ptr, '/', v.len) == NULL || !fhir_search_ref_key(c->a, v, c->opt->base, &k) ||
	    k.len == 0 || k.len > STORE_AUDIT_REF_MAX || memchr(k.ptr, 0, k.len) != NULL)
		return false;
	*ref = k;
	return true;
}

static slice_t
audit_cursor(arena_t *a, bool prev, uint64_t key)
{
	char id[AUDIT_ID_LEN + 1];

	audit_key_id(key, id);
	return slice_cstr(arena_printf(a, "%s%s", prev ? "p" : "", id));
}

static int
audit_search(ctx_t *c, const qparam_t *qp, size_t nq, const sortkey_t *sk, size_t ns,
	     slice_t cursor, size_t count, bool total_none, search_result_t *res)
{
	ascan_t s = {.c = c};
	uint64_t lo = 0, hi = UINT64_MAX, ck = 0;
	slice_t ref = SLICE_NULL;
	bool desc = false, before = false, dir_desc, more;
	hits_t hits = {0};
	int rc;

	if (ns > 1 ||
	    (ns == 1 && !slice_eq_cstr(sk[0].code, "date") &&
	     !slice_eq_cstr(sk[0].code, "_lastUpdated") && !slice_eq_cstr(sk[0].code, "_id"))) {
		bad_request(c, "AuditEvent sorts by date only (_sort=date or _sort=-date)");
		return 0;
	}
	desc = ns == 1 && sk[0].desc;
	s.qs = arena_alloc(c->a, (nq ? nq : 1) * sizeof(*s.qs));
	s.vps = arena_alloc(c->a, (nq ? nq : 1) * sizeof(*s.vps));
	s.codes = arena_alloc(c->a, (nq ? nq : 1) * sizeof(*s.codes));
	for (size_t i = 0; i < nq && c->error == NULL; i++) {
		const qparam_t *q = &qp[i];
		bool single = q->p.nvalues == 1 && q->p.modifier.len == 0;

		if (q->p.chain.len > 0) {
			bad_request(c, "chained parameters are not supported on AuditEvent");
		} else if (slice_eq_cstr(q->p.code, "_id")) {
			if (q->p.modifier.len > 0) {
				bad_request(c, "_id takes no modifier on AuditEvent");
				continue;
			}
			for (size_t j = 0; j < q->p.nvalues; j++) {
				uint64_t key = UINT64_MAX;

				/* Other ids cannot be in the trail: they match nothing. */
				(void)audit_id_key(q->p.values[j], &key);
				if (s.ids != NULL && !keys_has(s.ids, s.nids, key))
					continue;
				s.ids = arena_array_grow(c->a, s.ids, s.nids, &s.capids,
							 sizeof(*s.ids));
				s.ids[s.nids++] = key;
			}
		} else if (slice_eq_cstr(q->p.code, "_lastUpdated")) {
			/* Not in the body: the key's time. */
			if (!single || !date_narrow(c, q, &lo, &hi))
				bad_request(c, "_lastUpdated on AuditEvent takes one value with a "
					       "prefix other than ne (or use date)");
		} else if (slice_eq_cstr(q->p.code, "date") && single &&
			   date_narrow(c, q, &lo, &hi)) {
			/* decided by the key range */
		} else if (slice_eq_cstr(q->p.code, "entity") && single && ref.len == 0 &&
			   audit_ref_of(c, q, &ref)) {
			/* decided by the auditref entries */
		} else {
			/* patient=Patient/x: the events that name it, each checked */
			if (slice_eq_cstr(q->p.code, "patient") && single && ref.len == 0 &&
			    audit_ref_of(c, q, &ref) &&
			    (ref.len < 8 || memcmp(ref.ptr + ref.len - 8, "|Patient", 8) != 0))
				ref = SLICE_NULL;
			s.qs[s.nqs] = q;
			s.codes[s.nqs] = q->p.code;
			s.vps[s.nqs] =
			    arena_alloc(c->a, (q->p.nvalues ? q->p.nvalues : 1) * sizeof(**s.vps));
			for (size_t j = 0; j < q->p.nvalues; j++)
				if (!value_preds(c, q, q->p.values[j], &s.vps[s.nqs][j]))
					return 0;
			s.nqs++;
		}
	}
	if (c->error != NULL)
		return 0;
	if (cursor.len > 0) {
		before = cursor.ptr[0] == 'p';
		if (!audit_id_key(before ? slice_make(cursor.ptr + 1, cursor.len - 1) : cursor,
				  &ck)) {
			bad_request(c, "invalid _cursor");
			return 0;
		}
		/* after it in the sort order, or (before) ahead of it */
		if (desc == before)
			lo = ck + 1 > lo ? ck + 1 : lo;
		else
			hi = ck < hi ? ck : hi;
	}
	for (size_t i = 0; i < s.nids; i++) {
		/* an _id that cannot be in the range: none */
		if (s.ids[i] < lo || s.ids[i] >= hi)
			s.ids[i--] = s.ids[--s.nids];
	}
	if (s.ids != NULL) {
		uint64_t mn = UINT64_MAX, mx = 0;

		for (size_t i = 0; i < s.nids; i++) {
			mn = s.ids[i] < mn ? s.ids[i] : mn;
			mx = s.ids[i] > mx ? s.ids[i] : mx;
		}
		lo = s.nids > 0 ? mn : hi;
		hi = s.nids > 0 ? mx + 1 : hi;
	}
	dir_desc = desc != before;
	s.want = count + 1;
	s.count_all = !total_none && cursor.len == 0 && slice_eq_cstr(res->summary, "count");
	s.keys = arena_alloc(c->a, s.want * sizeof(*s.keys));
	s.scratch = arena_new(8192);
	rc = ref.len > 0 ? store_audit_foreach_ref(c->t, ref, lo, hi, dir_desc, ascan_cb, &s)
			 : store_audit_foreach(c->t, lo, hi, dir_desc, ascan_cb, &s);
	arena_free(s.scratch);
	if (rc < 0)
		return rc;
	more = s.n > count;
	if (more)
		s.n = count;
	if (before)
		for (size_t i = 0; i < s.n / 2; i++) {
			uint64_t k = s.keys[i];

			s.keys[i] = s.keys[s.n - 1 - i];
			s.keys[s.n - 1 - i] = k;
		}
	for (size_t i = 0; i < s.n; i++) {
		char id[AUDIT_ID_LEN + 1];

		audit_key_id(s.keys[i], id);
		hits_add(c->a, &hits, SLICE_LIT("AuditEvent"),
			 arena_slice_dup(c->a, slice_cstr(id)), false);
	}
	res->hits = hits.v;
	res->nhits = res->nmatches = hits.n;
	res->has_next = before ? cursor.len > 0 : more && !s.count_all;
	res->has_prev = before ? more : cursor.len > 0;
	if (s.n > 0 && res->has_next)
		res->next_cursor = audit_cursor(c->a, false, s.keys[s.n - 1]);
	if (s.n > 0 && res->has_prev)
		res->prev_cursor = audit_cursor(c->a, true, s.keys[0]);
	res->has_next = res->has_next && s.n > 0;
	res->has_prev = res->has_prev && s.n > 0;
	/* The total is known when the walk saw every match. */
	res->total_known = !total_none && cursor.len == 0 && (!more || s.count_all);
	res->total = s.count_all ? s.seen : s.n;
	return 0;
}

/* Outcomes. */

static fhir_node_t *
issue_new(arena_t *a, const char *severity, const char *code, const char *text, slice_t name)
{
	fhir_node_t *is = fhir_object_new(a);
	buf_t b = BUF_INIT;

	buf_append_cstr(&b, text);
	if (name.len) {
		buf_append_cstr(&b, ": ");
		buf_append_slice(&b, name);
	}
	fhir_object_set_cstr(a, is, "severity", fhir_string_new(a, slice_cstr(severity)));
	fhir_object_set_cstr(a, is, "code", fhir_string_new(a, slice_cstr(code)));
	fhir_object_set_cstr(a, is, "diagnostics", fhir_string_new(a, buf_slice(&b)));
	buf_free(&b);
	return is;
}

static fhir_node_t *
outcome_new(arena_t *a, fhir_node_t *issues)
{
	fhir_node_t *oo = fhir_object_new(a);

	fhir_object_set_cstr(a, oo, "resourceType",
			     fhir_string_new(a, SLICE_LIT("OperationOutcome")));
	fhir_object_set_cstr(a, oo, "issue", issues);
	return oo;
}

static void
query_append(buf_t *b, slice_t s)
{
	static const char hexd[] = "0123456789ABCDEF";

	for (size_t i = 0; i < s.len; i++) {
		unsigned char ch = (unsigned char)s.ptr[i];

		if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		    (ch >= '0' && ch <= '9') || strchr("-._~:,|", ch) != NULL) {
			buf_append_byte(b, (char)ch);
		} else {
			buf_append_byte(b, '%');
			buf_append_byte(b, hexd[ch >> 4]);
			buf_append_byte(b, hexd[ch & 15]);
		}
	}
}

/* Appends q to the parameters (growing the arena array). */
static void
qparam_push(arena_t *a, qparam_t **qp, size_t *nq, size_t *cap, const qparam_t *q)
{
	if (*nq == *cap) {
		qparam_t *n2 = arena_alloc(a, *cap * 2 * sizeof(*n2));

		memcpy(n2, *qp, *nq * sizeof(**qp));
		*qp = n2;
		*cap *= 2;
	}
	(*qp)[(*nq)++] = *q;
}

static bool
is_control(slice_t k)
{
	static const char *const names[] = {"_count",      "_sort",    "_total",    "_include",
					    "_revinclude", "_summary", "_elements", "_cursor",
					    "_format",     "_pretty",  "_type",     NULL};

	for (size_t i = 0; names[i] != NULL; i++)
		if (slice_eq_cstr(k, names[i]) ||
		    (k.len > strlen(names[i]) && memcmp(k.ptr, names[i], strlen(names[i])) == 0 &&
		     k.ptr[strlen(names[i])] == ':'))
			return true;
	return false;
}

int
search_run(store_txn_t *t, arena_t *a, slice_t type, slice_t query, const search_opts_t *opt,
	   search_result_t **out, fhir_node_t **outcome)
{
	static const search_opts_t defaults = {0};
	ctx_t c = {t, a, opt != NULL ? opt : &defaults, fhir_array_new(a), NULL, 0};
	http_query_t it;
	slice_t k, v, cursor = SLICE_NULL, types_v = SLICE_NULL;
	qparam_t *qp;
	size_t nq = 0, cap = 16, count, maxc, ns = 0;
	sortkey_t sk[MAX_SORT];
	slice_t incl[16], revincl[16];
	bool incl_iter[16], rev_iter[16]; /* :iterate */
	size_t nincl = 0, nrev = 0;
	search_result_t *res = arena_zalloc(a, sizeof(*res));
	buf_t self = BUF_INIT;
	bool total_none = false;
	row_t *rows = NULL;
	size_t nrows = 0, rcap = 0, start = 0;
	hits_t hits = {0};
	int rc = 0;

	*out = NULL;
	*outcome = NULL;
	count = c.opt->default_count ? c.opt->default_count : 20;
	maxc = c.opt->max_count ? c.opt->max_count : 1000;
	qp = arena_alloc(a, cap * sizeof(*qp));
	http_query_init(&it, query, a);
	while (http_query_next(&it, &k, &v)) {
		bool keep = true;

		if (slice_eq_cstr(k, "_count")) {
			uint64_t n;

			if (!slice_to_u64(v, &n))
				bad_request(&c, "_count must be a non-negative integer");
			else
				count = n > maxc ? maxc : (size_t)n;
		} else if (slice_eq_cstr(k, "_sort")) {
			size_t s = 0;

			for (size_t i = 0; i <= v.len; i++) {
				if (i < v.len && v.ptr[i] != ',')
					continue;
				if (i > s && ns < MAX_SORT) {
					bool desc = v.ptr[s] == '-';
					slice_t code = slice_make(v.ptr + s + desc, i - s - desc);
					const fhir_searchparam_t *sp =
					    type.len ? fhir_meta_searchparam(type, code) : NULL;

					if (!slice_eq_cstr(code, "_id") &&
					    !slice_eq_cstr(code, "_lastUpdated") && sp == NULL)
						bad_request(&c, "unknown _sort parameter");
					else if (sp != NULL && sp->type == FHIR_SP_COMPOSITE)
						bad_request(&c,
							    "_sort takes no composite parameter");
					sk[ns++] = (sortkey_t){code, desc};
				}
				s = i + 1;
			}
		} else if (slice_eq_cstr(k, "_total")) {
			total_none = slice_eq_cstr(v, "none");
		} else if (slice_eq_cstr(k, "_include") || slice_eq_cstr(k, "_include:iterate")) {
			if (nincl < 16) {
				incl_iter[nincl] = k.len > 8;
				incl[nincl++] = v;
			}
		} else if (slice_eq_cstr(k, "_revinclude") ||
			   slice_eq_cstr(k, "_revinclude:iterate")) {
			if (nrev < 16) {
				rev_iter[nrev] = k.len > 11;
				revincl[nrev++] = v;
			}
		} else if (slice_eq_cstr(k, "_summary")) {
			res->summary = v;
		} else if (slice_eq_cstr(k, "_elements")) {
			res->elements = v;
		} else if (slice_eq_cstr(k, "_cursor")) {
			cursor = v;
			keep = false;
		} else if (slice_eq_cstr(k, "_type")) {
			types_v = v;
		} else if (is_control(k)) {
			/* _format, _pretty: the REST layer's */
		} else if (k.len > 5 && memcmp(k.ptr, "_has:", 5) == 0) {
			qparam_t hq;

			if (type.len == 0 || slice_eq_cstr(type, "AuditEvent"))
				bad_request(&c, "_has is supported on a resource type's search, "
						"not on AuditEvent or the system");
			else if (has_parse(&c, k, v, &hq))
				qparam_push(a, &qp, &nq, &cap, &hq);
		} else {
			fhir_search_param_t p;
			bool system_ok =
			    slice_eq_cstr(k, "_id") || slice_eq_cstr(k, "_lastUpdated") ||
			    (k.len > 3 && memcmp(k.ptr, "_id", 3) == 0 && k.ptr[3] == ':') ||
			    (k.len > 12 && memcmp(k.ptr, "_lastUpdated", 12) == 0 &&
			     k.ptr[12] == ':');

			fhir_search_param_parse(a, type.len ? type : SLICE_LIT("Patient"), k, v,
						&p);
			if (!param_searchable(&p) || (type.len == 0 && !system_ok)) {
				if (c.opt->strict)
					bad_request(&c, "unknown or unsupported search parameter");
				fhir_array_append(
				    a, c.issues,
				    issue_new(a, "warning", "not-supported",
					      "Unknown or unsupported search parameter "
					      "ignored",
					      k));
				keep = false;
			} else {
				qparam_t q = {.p = p, .raw = v};

				qparam_push(a, &qp, &nq, &cap, &q);
			}
		}
		if (keep) {
			if (self.len)
				buf_append_byte(&self, '&');
			query_append(&self, k);
			buf_append_byte(&self, '=');
			query_append(&self, v);
		}
	}
	if (it.err != 0)
		bad_request(&c, "malformed query string");
	res->self_query = arena_slice_dup(a, buf_slice(&self));
	buf_free(&self);
	if (c.error == NULL && slice_eq_cstr(type, "AuditEvent")) {
		if (nincl > 0 || nrev > 0)
			fhir_array_append(a, c.issues,
					  issue_new(a, "warning", "not-supported",
						    "_include and _revinclude are not supported on "
						    "AuditEvent: ignored",
						    SLICE_NULL));
		rc = audit_search(&c, qp, nq, sk, ns, cursor, count, total_none, res);
		goto done;
	}

	/* Candidate rows, type by type (one type unless a system search). */
	{
		slice_t tlist[64];
		size_t ntypes = 0;

		if (type.len) {
			tlist[ntypes++] = type;
		} else if (types_v.len) {
			size_t s = 0;

			for (size_t i = 0; i <= types_v.len && ntypes < 64; i++)
				if (i == types_v.len || types_v.ptr[i] == ',') {
					if (i > s)
						tlist[ntypes++] =
						    slice_make(types_v.ptr + s, i - s);
					s = i + 1;
				}
		} else {
			for (size_t i = 0; i < fhir_meta_resource_count() && ntypes < 64; i++) {
				uint64_t n;
				slice_t tn = slice_cstr(fhir_meta_resource_at(i)->name);

				if (store_res_count(t, tn, &n) == 0 && n > 0)
					tlist[ntypes++] = tn;
			}
		}
		for (size_t ti = 0; ti < ntypes && c.error == NULL; ti++) {
			slice_t ty = tlist[ti];
			idset_t set;
			size_t first = nrows, npl = 0;
			qparam_t *pl = arena_alloc(a, (nq ? nq : 1) * sizeof(*pl));
			bool have = false;

			for (int cost = 0; cost <= 3; cost++)
				for (size_t i = 0; i < nq; i++) {
					qparam_t q = qp[i];

					if (type.len == 0)
						q.p.sp = fhir_meta_searchparam(ty, q.p.code);
					if ((q.p.sp != NULL || q.has_src.len) &&
					    param_cost(&q) == cost)
						pl[npl++] = q;
				}
			/* Start from the first parameter's matches, not from every resource of the
			 * type: a search costs what its index lookups cost, not the type's size.
			 * Once few candidates remain, they are checked one by one. */
			for (size_t i = 0; i < npl && (!have || set.n > 0) && c.error == NULL;
			     i++) {
				idset_t one;

				if (have && set.n <= CANDIDATES_MAX) {
					if ((rc = candidates_filter(&c, ty, pl + i, npl - i,
								    &set)) < 0)
						goto done;
					break;
				}
				if ((rc = eval_param(&c, ty, &pl[i], &one)) < 0)
					goto done;
				ids_normalize(&one);
				if (have) {
					ids_and(&set, &one, false);
				} else {
					set = one;
					have = true;
				}
			}
			if (!have) {
				if ((rc = ids_all(&c, ty, &set)) < 0)
					goto done;
				ids_normalize(&set);
			}
			for (size_t i = 0; i < set.n; i++) {
				rows = arena_array_grow(a, rows, nrows, &rcap, sizeof(*rows));
				memset(&rows[nrows], 0, sizeof(rows[nrows]));
				rows[nrows].type = ty;
				rows[nrows].id = set.v[i];
				nrows++;
			}
			for (size_t s = 0; s < ns && nrows > first; s++)
				if ((rc = sort_keys_fill(&c, ty, rows + first, nrows - first, s,
							 &sk[s])) < 0)
					goto done;
		}
	}
	if (c.error != NULL)
		goto done;
	if (nrows > 1) {
		sortspec_t spec = {sk, ns};

		qsort_r(rows, nrows, sizeof(*rows), row_qcmp, &spec);
	}
	if (cursor.len) {
		/* "p<hex>": the page before that row; "<hex>": the page after it. */
		bool before = cursor.ptr[0] == 'p';
		slice_t hex = before ? slice_make(cursor.ptr + 1, cursor.len - 1) : cursor;
		row_t cur;
		size_t lo = 0, hi = nrows;

		if (!cursor_decode(a, hex, ns, &cur)) {
			bad_request(&c, "invalid _cursor");
			goto done;
		}
		/* after: the first row ordered after the cursor; before: the first row not
		 * ordered before it */
		while (lo < hi) {
			size_t mid = lo + (hi - lo) / 2;
			int r = row_cmp_keys(&rows[mid], &cur, sk, ns);

			if (before ? r < 0 : r <= 0)
				lo = mid + 1;
			else
				hi = mid;
		}
		start = before ? (lo > count ? lo - count : 0) : lo;
	}
	for (size_t i = start; i < nrows && i < start + count; i++)
		hits_add(a, &hits, rows[i].type, rows[i].id, false);
	res->nmatches = hits.n;
	/* _count=0 asks for the total only: a page without matches has no next page */
	res->has_next = hits.n > 0 && start + count < nrows;
	if (res->has_next)
		res->next_cursor = cursor_encode(a, &rows[start + hits.n - 1], ns);
	res->has_prev = start > 0 && start < nrows;
	if (res->has_prev) {
		slice_t key = cursor_encode(a, &rows[start], ns);
		char *p = arena_alloc(a, key.len + 1);

		p[0] = 'p';
		memcpy(p + 1, key.ptr, key.len);
		res->prev_cursor = slice_make(p, key.len + 1);
	}
	res->total_known = !total_none;
	res->total = nrows;
	/* The includes of the matches; then the :iterate ones again over what the round before
	 * added, until a round adds nothing (at most CHAIN_MAX rounds more). */
	for (size_t from = 0, to = res->nmatches, round = 0; from < to && round <= CHAIN_MAX;
	     round++) {
		for (size_t i = 0; i < nincl; i++)
			if ((round == 0 || incl_iter[i]) &&
			    (rc = do_include(&c, &hits, from, to, incl[i])) < 0)
				goto done;
		for (size_t i = 0; i < nrev; i++)
			if ((round == 0 || rev_iter[i]) &&
			    (rc = do_revinclude(&c, &hits, from, to, revincl[i])) < 0)
				goto done;
		from = to;
		to = hits.n;
	}
	res->hits = hits.v;
	res->nhits = hits.n;
done:
	if (rc < 0)
		return rc;
	if (c.error != NULL) {
		fhir_node_t *issues = fhir_array_new(a);

		fhir_array_append(a, issues, issue_new(a, "error", "invalid", c.error, SLICE_NULL));
		*outcome = outcome_new(a, issues);
		return -FG_EINVAL;
	}
	if (fhir_array_len(c.issues) > 0)
		res->warnings = outcome_new(a, c.issues);
	*out = res;
	return 0;
}
