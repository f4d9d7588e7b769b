/* The REST writes: create, update, delete (plain and conditional), patch, batch and transaction.
 * The I/O thread parses, checks and serializes each resource and builds its index entries; one
 * writer job per request then resolves conditions and preconditions and writes, inside the
 * writer's batch transaction, so a conditional check and its insert cannot be split by another
 * write. The answer goes out once the batch has committed. */
#include "config.h"

#include <sys/random.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <openssl/evp.h>

#include "fhir/json.h"
#include "fhir/meta.h"
#include "fhir/validate.h"
#include "fhir/xml.h"
#include "gateway/ingest.h"
#include "gateway/rest_int.h"
#include "gateway/score.h"
#include "gateway/search.h"
#include "lib/err.h"
#include "lib/log.h"
#include "lib/timeutil.h"

typedef enum { OP_PUT, OP_DELETE, OP_READ, OP_SEARCH } op_kind_t;
typedef enum { COND_NONE, COND_CREATE, COND_UPDATE, COND_DELETE, COND_PATCH } cond_t;

typedef struct {
	op_kind_t kind;
	cond_t cond;
	slice_t type, id; /* id empty: decided by the condition */
	slice_t query;    /* the condition, or a GET entry's query */
	fhir_node_t *res; /* to store: meta.versionId/lastUpdated stripped */
	slice_t body;     /* res serialized */
	store_idx_entry_t *entries;
	size_t nentries;
	uint32_t if_match;
	bool create_only;
	bool conflict_409; /* a PATCH: a version that moved on is a conflict, not a precondition */
	/* A PATCH entry of a Bundle: applied in the writer to the version current then */
	const fhir_node_t *patch;
	bool fhirpath; /* patch is a FHIRPath Patch (Parameters), else a JSON Patch */
	/* results */
	int status; /* 0: to be written; else the entry's HTTP status */
	fhir_node_t *outcome;
	store_res_result_t out;
	bool matched; /* a conditional create found its resource */
	/* Bundles: the entry's fullUrl, and the id given to it before the conditions were
	 * resolved (what references to its urn:uuid were rewritten to) */
	slice_t full, pre_id;
} rest_op_t;

/* A Bundle-local urn:uuid and the reference it stands for. */
typedef struct {
	slice_t from; /* "urn:uuid:..." */
	slice_t to;   /* "Patient/abc" */
} urn_map_t;

struct rest_job {
	writer_job_t wj; /* first: the writer hands this pointer back */
	rest_job_t *done_next;
	rest_ctx_t *c;
	rest_op_t *ops;
	size_t nops;
	const urn_map_t *urns; /* a Bundle's urn:uuids, for what PATCH entries make */
	size_t nurns;
	bool bundle, transaction;
	/* a Bundle entry's resource has a conditional reference, or a PATCH entry may make
	 * one: the writer looks for them (op_refs_fix) only then */
	bool cond_refs;
	int fail_status; /* a transaction that wrote nothing */
	fhir_node_t *fail_outcome;
	int store_rc;
	/* An operation outside this file (rest_submit_op): its own apply and answer. */
	rest_op_apply_fn op_apply;
	rest_op_finish_fn op_finish;
	void *op_arg;
};

void
rest_random_id(char *out)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char rnd[REST_ID_HEX / 2];

	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
		abort(); /* no entropy: nothing sensible to hand out */
	for (size_t i = 0; i < sizeof(rnd); i++) {
		out[2 * i] = hex[rnd[i] >> 4];
		out[2 * i + 1] = hex[rnd[i] & 15];
	}
	out[REST_ID_HEX] = '\0';
}

static slice_t
new_id(arena_t *a)
{
	char id[REST_ID_HEX + 1];

	rest_random_id(id);
	return arena_slice_dup(a, slice_make(id, REST_ID_HEX));
}

static fhir_node_t *outcome_printf(arena_t *a, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static fhir_node_t *
outcome_printf(arena_t *a, const char *code, const char *fmt, ...)
{
	va_list ap;
	buf_t b = BUF_INIT;
	fhir_node_t *oo;

	va_start(ap, fmt);
	buf_vprintf(&b, fmt, ap);
	va_end(ap);
	oo = rest_outcome(a, "error", code, b.data != NULL ? b.data : "");
	buf_free(&b);
	return oo;
}

/* ---- request bodies ---- */

/* A media type without its parameters ("application/fhir+json; charset=utf-8"). */
static slice_t
media_type(slice_t ct)
{
	size_t semi = 0;

	while (semi < ct.len && ct.ptr[semi] != ';')
		semi++;
	return slice_trim(slice_make(ct.ptr, semi));
}

/* The resource format of a Content-Type: 0 JSON, 1 XML, -1 neither. */
static int
body_format(slice_t ct)
{
	ct = media_type(ct);
	if (slice_eq_nocase(ct, SLICE_LIT("application/fhir+json")) ||
	    slice_eq_nocase(ct, SLICE_LIT("application/json")) ||
	    slice_eq_nocase(ct, SLICE_LIT("application/json+fhir")) ||
	    slice_eq_nocase(ct, SLICE_LIT("text/json")))
		return 0;
	if (slice_eq_nocase(ct, SLICE_LIT("application/fhir+xml")) ||
	    slice_eq_nocase(ct, SLICE_LIT("application/xml")) ||
	    slice_eq_nocase(ct, SLICE_LIT("application/xml+fhir")) ||
	    slice_eq_nocase(ct, SLICE_LIT("text/xml")))
		return 1;
	return -1;
}

fhir_node_t *
rest_body_parse(rest_ctx_t *c)
{
	slice_t ct = http_request_header(c->req, "Content-Type"), body = http_request_body(c->req);
	fhir_node_t *res = NULL;
	char err[256];
	int fmt = -1, rc;

	if (ct.ptr != NULL) {
		if ((fmt = body_format(ct)) < 0) {
			rest_send_error(c, 415, "not-supported",
					"unsupported Content-Type: send application/fhir+json or "
					"application/fhir+xml");
			return NULL;
		}
	} else {
		slice_t t = slice_trim(body);

		fmt = t.len > 0 && t.ptr[0] == '<' ? 1 : 0;
	}
	if (body.len == 0) {
		rest_send_error(c, 400, "invalid", "a resource is required in the body");
		return NULL;
	}
	rc = fmt == 1 ? fhir_xml_parse(c->a, body.ptr, body.len, NULL, &res, err, sizeof(err))
		      : fhir_json_parse(c->a, body.ptr, body.len, NULL, &res, err, sizeof(err));
	if (rc < 0) {
		rest_send_error(c, 400, "structure", "the body does not parse: %s", err);
		return NULL;
	}
	if (fhir_node_kind(res) != FHIR_OBJECT) {
		rest_send_error(c, 400, "structure", "the body is not a resource");
		return NULL;
	}
	return res;
}

/* Removes what the server sets itself (meta.versionId, meta.lastUpdated). */
static void
meta_strip(fhir_node_t *res)
{
	fhir_node_t *meta = fhir_object_get_cstr(res, "meta");

	if (meta == NULL || fhir_node_kind(meta) != FHIR_OBJECT)
		return;
	fhir_object_remove(meta, SLICE_LIT("versionId"));
	fhir_object_remove(meta, SLICE_LIT("lastUpdated"));
	fhir_object_remove(meta, SLICE_LIT("_versionId"));
	fhir_object_remove(meta, SLICE_LIT("_lastUpdated"));
	if (fhir_object_count(meta) == 0)
		fhir_object_remove(res, SLICE_LIT("meta"));
}

/* Sets the id, serializes the body and builds the index entries (I/O thread, or the writer
 * when a condition chose the id). */
static int
op_prepare(arena_t *a, rest_op_t *op)
{
	buf_t b = BUF_INIT;

	/* resourceType, id, meta, then the rest as given: the order clients are used to, and
	 * the one reads rely on to splice meta.versionId/lastUpdated into the stored JSON. */
	{
		fhir_node_t *o = fhir_object_new(a), *meta = fhir_object_get_cstr(op->res, "meta");

		fhir_object_set_cstr(a, o, "resourceType",
				     fhir_string_new(a, fhir_resource_type(op->res)));
		fhir_object_set_cstr(a, o, "id", fhir_string_new(a, op->id));
		if (meta != NULL)
			fhir_object_set_cstr(a, o, "meta", meta);
		for (size_t i = 0; i < fhir_object_count(op->res); i++) {
			slice_t k = fhir_object_key_at(op->res, i);

			if (!slice_eq_cstr(k, "resourceType") && !slice_eq_cstr(k, "id") &&
			    !slice_eq_cstr(k, "meta"))
				fhir_object_push(a, o, k, fhir_object_value_at(op->res, i));
		}
		op->res = o;
	}
	fhir_json_write(op->res, false, &b);
	op->body = arena_slice_dup(a, buf_slice(&b));
	buf_free(&b);
	return ingest_index_entries(a, op->res, &op->entries, &op->nentries);
}

/* op_prepare in the writer: a resource that cannot be indexed fails op with 400. */
static void
op_prepare_or_fail(arena_t *a, rest_op_t *op)
{
	int rc = op_prepare(a, op);

	if (rc < 0) {
		op->status = 400;
		op->outcome = outcome_printf(a, "invalid", "index: %s", fg_strerror(rc));
	}
}

/* The checks of res_check before the resource's content: its type and id. */
static int
res_check_ids(arena_t *a, const fhir_node_t *res, slice_t type, slice_t id, bool id_required,
	      fhir_node_t **outcome)
{
	fhir_node_t *rid;

	if (!slice_eq(fhir_resource_type(res), type)) {
		*outcome = outcome_printf(
		    a, "invalid", "resourceType '%.*s' does not match the URL's '%.*s'",
		    (int)(fhir_resource_type(res).len > 64 ? 64 : fhir_resource_type(res).len),
		    fhir_resource_type(res).ptr, (int)type.len, type.ptr);
		return 400;
	}
	rid = fhir_object_get_cstr(res, "id");
	if (id.len > 0 && id_required && (rid == NULL || !slice_eq(fhir_node_text(rid), id))) {
		*outcome =
		    outcome_printf(a, "invalid", "the resource's id must be '%.*s' as in the URL",
				   (int)id.len, id.ptr);
		return 400;
	}
	if (rid != NULL &&
	    (fhir_node_kind(rid) != FHIR_STRING || !rest_id_is_valid(fhir_node_text(rid)))) {
		*outcome = outcome_printf(a, "invalid", "the resource's id is not a valid id");
		return 400;
	}
	return 0;
}

/* The OperationOutcome issue code of each kind of fhir_validate issue. */
static const char *const validate_codes[] = {
    [FHIR_ISSUE_STRUCTURE] = "structure",
    [FHIR_ISSUE_VALUE] = "value",
    [FHIR_ISSUE_REQUIRED] = "required",
};

/* One issue of an outcome of fhir_validate's checks (writes, $validate): "path: what" and the path
 * as its expression. */
static fhir_node_t *
validate_issue(arena_t *a, const char *severity, const char *code, const char *path,
	       const char *what)
{
	fhir_node_t *is = fhir_object_new(a);

	fhir_object_set_cstr(a, is, "severity", fhir_string_new(a, slice_cstr(severity)));
	fhir_object_set_cstr(a, is, "code", fhir_string_new(a, slice_cstr(code)));
	if (path != NULL && *path != '\0') {
		fhir_node_t *ex = fhir_array_new(a);

		fhir_object_set_cstr(
		    a, is, "diagnostics",
		    fhir_string_new(a, slice_cstr(arena_printf(a, "%s: %s", path, what))));
		fhir_array_append(a, ex, fhir_string_new(a, slice_cstr(path)));
		fhir_object_set_cstr(a, is, "expression", ex);
	} else {
		fhir_object_set_cstr(a, is, "diagnostics", fhir_string_new(a, slice_cstr(what)));
	}
	return is;
}

/* An OperationOutcome of n fhir_validate issues, each an error. */
static fhir_node_t *
validate_outcome(arena_t *a, const fhir_issue_t *is, size_t n)
{
	fhir_node_t *oo = fhir_object_new(a), *issues = fhir_array_new(a);

	fhir_object_set_cstr(a, oo, "resourceType",
			     fhir_string_new(a, SLICE_LIT("OperationOutcome")));
	for (size_t i = 0; i < n; i++)
		fhir_array_append(
		    a, issues,
		    validate_issue(a, "error", validate_codes[is[i].kind], is[i].path, is[i].what));
	fhir_object_set_cstr(a, oo, "issue", issues);
	return oo;
}

/* Checks a resource to store as type (and id when not empty); 0, or a status with outcome. */
static int
res_check(arena_t *a, fhir_node_t *res, slice_t type, slice_t id, bool id_required,
	  fhir_node_t **outcome)
{
	int st = res_check_ids(a, res, type, id, id_required, outcome);
	fhir_issue_t is;

	if (st != 0)
		return st;
	/* the first problem of structure or value (rest_res_validate), with its expression */
	if (fhir_validate(a, res, 0, &is, 1) > 0) {
		*outcome = validate_outcome(a, &is, 1);
		return 400;
	}
	meta_strip(res);
	return 0;
}

/* Applies a patch to res, the current version of type/id (meta stripped first): a FHIRPath
 * Patch (a Parameters resource) or a JSON Patch (an array); then checks the result as any
 * incoming resource. 0, or a status (400; 422 when the patch does not apply or its result is
 * not a valid resource) with *outcome. For PATCH requests and PATCH entries of Bundles. */
static int
patch_apply(arena_t *a, fhir_node_t **res, const fhir_node_t *patch, bool fhirpath, slice_t type,
	    slice_t id, fhir_node_t **outcome)
{
	char err[512];
	int st;

	meta_strip(*res);
	st = fhirpath ? rest_fhirpath_patch(a, *res, patch, err, sizeof(err))
		      : rest_json_patch(a, res, patch, err, sizeof(err));
	if (st != 0) {
		*outcome = outcome_printf(a, st == 422 ? "processing" : "invalid", "%s", err);
		return st;
	}
	st = res_check(a, *res, type, id, true, outcome);
	return st == 400 ? 422 : st;
}

/* ---- the writer side ---- */

static void refs_rewrite(arena_t *a, fhir_node_t *n, const urn_map_t *map, size_t nmap);

/* A PATCH entry of a Bundle: its patch applied to the version current in the writer's
 * transaction (no other write can come between), checked, its references to the Bundle's
 * urn:uuids rewritten, and prepared. 0, or a store error; a failure sets op's status. */
static int
op_patch(rest_job_t *j, store_txn_t *t, rest_op_t *op)
{
	arena_t *a = j->c->a;
	store_res_t cur;
	fhir_node_t *res;
	int rc = store_res_get(t, op->type, op->id, &cur);

	if (rc == -FG_ENOTFOUND || (rc == 0 && cur.deleted)) {
		op->status = rc == 0 ? 410 : 404;
		op->outcome = outcome_printf(a, rc == 0 ? "deleted" : "not-found", "%.*s/%.*s %s",
					     (int)op->type.len, op->type.ptr, (int)op->id.len,
					     op->id.ptr, rc == 0 ? "was deleted" : "is not known");
		return 0;
	}
	if (rc < 0)
		return rc;
	if (op->if_match != 0 && cur.version != op->if_match) {
		op->status = 412;
		op->outcome =
		    outcome_printf(a, "conflict", "version %u is not the current version %u",
				   op->if_match, cur.version);
		return 0;
	}
	if ((res = rest_res_load(a, &cur)) == NULL) {
		op->status = 500;
		op->outcome = outcome_printf(a, "exception", "the stored resource is corrupt");
		return 0;
	}
	op->status = patch_apply(a, &res, op->patch, op->fhirpath, op->type, op->id, &op->outcome);
	if (op->status != 0)
		return 0;
	if (j->nurns > 0)
		refs_rewrite(a, res, j->urns, j->nurns);
	op->res = res;
	op->if_match = cur.version;
	op_prepare_or_fail(a, op);
	return 0;
}

static int
op_resolve(rest_job_t *j, store_txn_t *t, rest_op_t *op)
{
	arena_t *a = j->c->a;
	store_res_t cur;
	int rc;

	if (op->kind == OP_READ || op->kind == OP_SEARCH || op->status != 0)
		return 0;
	if (op->patch != NULL && op->cond == COND_NONE)
		return op_patch(j, t, op);
	if (op->cond != COND_NONE) {
		search_opts_t opts = {.max_count = 2};
		search_result_t *sr;
		fhir_node_t *oo = NULL;
		size_t nmatch = 0;
		slice_t hit = SLICE_NULL;

		rc = search_run(t, a, op->type, op->query, &opts, &sr, &oo);
		if (rc == -FG_EINVAL) {
			op->status = 400;
			op->outcome =
			    oo != NULL ? oo : outcome_printf(a, "invalid", "bad condition");
			return 0;
		}
		if (rc < 0)
			return rc;
		nmatch = sr->nmatches;
		if (nmatch > 0)
			hit = sr->hits[0].id;
		if (nmatch > 1 || sr->has_next) {
			op->status = 412;
			op->outcome = outcome_printf(
			    a, "multiple-matches", "the condition matches more than one resource");
			return 0;
		}
		if (op->cond == COND_PATCH) {
			/* the one match is patched */
			if (nmatch == 0) {
				op->status = 404;
				op->outcome =
				    outcome_printf(a, "not-found", "the condition matches no %.*s",
						   (int)op->type.len, op->type.ptr);
				return 0;
			}
			op->id = arena_slice_dup(a, hit);
			return op_patch(j, t, op);
		}
		if (op->cond == COND_CREATE && nmatch == 1) {
			op->status = 200;
			op->matched = true;
			op->id = arena_slice_dup(a, hit);
			return 0;
		}
		if (op->cond == COND_DELETE) {
			if (nmatch == 0) {
				op->status = 204;
				return 0;
			}
			op->id = arena_slice_dup(a, hit);
		}
		if (op->cond == COND_UPDATE) {
			if (nmatch == 1 && op->id.len > 0 && !slice_eq(op->id, hit)) {
				op->status = 400;
				op->outcome = outcome_printf(
				    a, "invalid",
				    "the resource's id is not the one the condition matched");
				return 0;
			}
			op->id = nmatch == 1      ? arena_slice_dup(a, hit)
				 : op->id.len > 0 ? op->id
						  : new_id(a);
			op_prepare_or_fail(a, op);
			if (op->status != 0)
				return 0;
		}
	}
	if (op->kind == OP_PUT && (op->if_match != 0 || op->create_only)) {
		rc = store_res_get(t, op->type, op->id, &cur);
		if (rc < 0 && rc != -FG_ENOTFOUND)
			return rc;
		if (op->if_match != 0 && (rc < 0 || cur.deleted || cur.version != op->if_match)) {
			op->status = op->conflict_409 ? 409 : 412;
			op->outcome = outcome_printf(
			    a, "conflict", "version %u is not the current version", op->if_match);
		} else if (op->create_only && rc == 0 && !cur.deleted) {
			op->status = 412;
			op->outcome = outcome_printf(a, "duplicate", "%.*s/%.*s exists already",
						     (int)op->type.len, op->type.ptr,
						     (int)op->id.len, op->id.ptr);
		}
	}
	return 0;
}

static int
op_write(rest_job_t *j, store_txn_t *t, rest_op_t *op, uint64_t now_ns)
{
	int rc;

	if (op->kind == OP_READ || op->kind == OP_SEARCH || op->status != 0)
		return 0;
	if (op->kind == OP_DELETE) {
		rc = score_hook_note(t, op->type, op->id, SLICE_NULL);
		if (rc == 0)
			rc = store_res_delete(t, op->type, op->id, now_ns, &op->out);
		if (rc == -FG_ENOTFOUND)
			rc = 0;
		op->status = 204;
		return rc;
	} else {
		store_res_put_t p = {.type = op->type,
				     .id = op->id,
				     .body = op->body,
				     .entries = op->entries,
				     .n_entries = op->nentries,
				     .if_match = op->if_match,
				     .create_only = op->create_only,
				     .now_ns = now_ns};

		rc = store_res_put(t, &p, &op->out);
		if (rc == -FG_EEXIST) {
			op->status = op->conflict_409 ? 409 : 412;
			op->outcome = outcome_printf(j->c->a, "conflict", "precondition failed");
			return 0;
		}
		op->status = op->out.created ? 201 : 200;
		if (rc == 0 && !op->out.unchanged)
			rc = score_hook_note(t, op->type, op->id, op->body);
		return rc;
	}
}

/* ---- one entry per resource ---- */

typedef struct {
	slice_t type, id;
	size_t index;
} op_key_t;

static int
op_key_cmp(const void *x, const void *y)
{
	const op_key_t *a = x, *b = y;
	int c = slice_cmp(a->type, b->type);

	if (c == 0)
		c = slice_cmp(a->id, b->id);
	if (c == 0)
		c = a->index < b->index ? -1 : a->index > b->index;
	return c;
}

/* Whether two entries of j that are still to be written change the same resource; *first and
 * *second are then the indexes of such a pair. Sorted, not compared pairwise: a Bundle may
 * have 10000 entries. */
static bool
ops_same_resource(rest_job_t *j, size_t *first, size_t *second)
{
	op_key_t *v = arena_alloc(j->c->a, (j->nops ? j->nops : 1) * sizeof(*v));
	size_t n = 0;

	for (size_t i = 0; i < j->nops; i++) {
		const rest_op_t *op = &j->ops[i];

		if (op->id.len > 0 && op->status == 0 && op->kind != OP_READ &&
		    op->kind != OP_SEARCH)
			v[n++] = (op_key_t){op->type, op->id, i};
	}
	if (n > 1)
		qsort(v, n, sizeof(*v), op_key_cmp);
	for (size_t i = 1; i < n; i++)
		if (slice_eq(v[i - 1].type, v[i].type) && slice_eq(v[i - 1].id, v[i].id)) {
			*first = v[i - 1].index;
			*second = v[i].index;
			return true;
		}
	return false;
}

/* ---- references the conditions decide (Bundles, in the writer) ---- */

typedef slice_t (*ref_fix_fn)(void *ctx, slice_t ref);

/* Puts fix(ref) in place of every reference string of n (a resource or a part of one) where
 * it differs from ref; true when one did. */
static bool
refs_walk(arena_t *a, fhir_node_t *n, ref_fix_fn fix, void *ctx, int depth)
{
	bool changed = false;

	if (depth > 64)
		return false;
	if (fhir_node_kind(n) == FHIR_ARRAY) {
		for (size_t i = 0; i < fhir_array_len(n); i++)
			changed |= refs_walk(a, fhir_array_at(n, i), fix, ctx, depth + 1);
		return changed;
	}
	if (fhir_node_kind(n) != FHIR_OBJECT)
		return false;
	for (size_t i = 0; i < fhir_object_count(n); i++) {
		fhir_node_t *v = fhir_object_value_at(n, i);

		if (slice_eq_cstr(fhir_object_key_at(n, i), "reference") &&
		    fhir_node_kind(v) == FHIR_STRING) {
			slice_t to = fix(ctx, fhir_node_text(v));

			if (to.ptr != fhir_node_text(v).ptr) {
				fhir_object_set_value_at(n, i, fhir_string_new(a, to));
				changed = true;
			}
		} else {
			changed |= refs_walk(a, v, fix, ctx, depth + 1);
		}
	}
	return changed;
}

/* A conditional reference resolved once per Bundle: "Patient?identifier=s|1" -> its target. */
typedef struct {
	slice_t from, to; /* to empty: it failed (status, outcome) */
	int status;
	fhir_node_t *outcome;
} cref_t;

typedef struct {
	rest_job_t *j;
	store_txn_t *t;
	rest_op_t *op; /* whose resource is walked */
	cref_t *crefs;
	size_t ncrefs, capcrefs;
	/* transactions: the entries whose id a condition decided after references to them were
	 * rewritten (conditional creates that matched, conditional updates named by urn:uuid),
	 * listed once all conditions are resolved */
	size_t *remap;
	size_t nremap, capremap;
	bool listed;
	bool changed;
	int status; /* the first failure: 412 (no or several matches) or 400 (a bad query) */
	fhir_node_t *outcome;
	int rc; /* a store error */
} reffix_t;

/* "Type?query" with Type a resource type: a conditional reference. */
static bool
cref_split(slice_t ref, slice_t *type, slice_t *query)
{
	const char *q = memchr(ref.ptr, '?', ref.len);

	if (q == NULL)
		return false;
	*type = slice_make(ref.ptr, (size_t)(q - ref.ptr));
	*query = slice_make(q + 1, ref.len - type->len - 1);
	return type->len > 0 && query->len > 0 && fhir_meta_is_resource(*type);
}

/* The target of conditional reference ref: the one stored resource its query matches, else
 * the one entry of the Bundle that creates or updates a resource of the type under that same
 * condition; a cref with status 412 when there is none or more than one. */
static cref_t *
cref_resolve(reffix_t *f, slice_t ref)
{
	arena_t *a = f->j->c->a;
	search_opts_t opts = {.max_count = 2};
	search_result_t *sr;
	fhir_node_t *oo = NULL;
	slice_t type, query, id = SLICE_NULL;
	cref_t *cr;
	size_t nbundle = 0;
	int rc;

	for (size_t i = 0; i < f->ncrefs; i++)
		if (slice_eq(f->crefs[i].from, ref))
			return &f->crefs[i];
	f->crefs = arena_array_grow(a, f->crefs, f->ncrefs, &f->capcrefs, sizeof(*f->crefs));
	cr = &f->crefs[f->ncrefs++];
	memset(cr, 0, sizeof(*cr));
	cr->from = ref;
	cref_split(ref, &type, &query);
	rc = search_run(f->t, a, type, query, &opts, &sr, &oo);
	if (rc == -FG_EINVAL) {
		cr->status = 400;
		cr->outcome = oo;
		return cr;
	}
	if (rc < 0) {
		f->rc = rc;
		cr->status = 500;
		return cr;
	}
	if (sr->nmatches == 1 && !sr->has_next)
		id = sr->hits[0].id;
	for (size_t i = 0; sr->nmatches == 0 && i < f->j->nops; i++) {
		const rest_op_t *o = &f->j->ops[i];

		if (o->kind == OP_PUT && (o->cond == COND_CREATE || o->cond == COND_UPDATE) &&
		    (o->status == 0 || o->matched) && slice_eq(o->type, type) &&
		    slice_eq(o->query, query) && o->id.len > 0) {
			id = o->id;
			nbundle++;
		}
	}
	if (id.len == 0 || nbundle > 1) {
		cr->status = 412;
		cr->outcome = outcome_printf(
		    a, sr->nmatches > 1 || nbundle > 1 ? "multiple-matches" : "not-found",
		    "the conditional reference %.*s matches %s resource", (int)ref.len, ref.ptr,
		    sr->nmatches > 1 || nbundle > 1 ? "more than one" : "no");
		return cr;
	}
	cr->to =
	    slice_cstr(arena_printf(a, "%.*s/%.*s", (int)type.len, type.ptr, (int)id.len, id.ptr));
	return cr;
}

/* Notes (in *ctx, a bool) a conditional reference; changes nothing. */
static slice_t
cref_note(void *ctx, slice_t ref)
{
	slice_t type, query;

	if (cref_split(ref, &type, &query))
		*(bool *)ctx = true;
	return ref;
}

/* The reference a condition decided for ref, or ref (also once a reference failed). */
static slice_t
ref_fixed(void *ctx, slice_t ref)
{
	reffix_t *f = ctx;
	arena_t *a = f->j->c->a;
	slice_t type, query;

	if (f->status != 0 || f->rc != 0)
		return ref;

	if (cref_split(ref, &type, &query)) {
		cref_t *cr = cref_resolve(f, ref);

		if (cr->to.len > 0)
			return cr->to;
		if (f->status == 0) {
			f->status = cr->status;
			f->outcome = cr->outcome;
		}
		return ref;
	}
	for (size_t k = 0; k < f->nremap; k++) {
		const rest_op_t *o = &f->j->ops[f->remap[k]];
		bool hit =
		    o->pre_id.len == 0
			/* a conditional update's urn:uuid, left as it was */
			? slice_eq(o->full, ref)
			/* the id given up front to a conditional create that found its
			 * resource instead */
			: ref.len == o->type.len + 1 + o->pre_id.len &&
			      memcmp(ref.ptr, o->type.ptr, o->type.len) == 0 &&
			      ref.ptr[o->type.len] == '/' &&
			      memcmp(ref.ptr + o->type.len + 1, o->pre_id.ptr, o->pre_id.len) == 0;

		if (hit)
			return slice_cstr(arena_printf(a, "%.*s/%.*s", (int)o->type.len,
						       o->type.ptr, (int)o->id.len, o->id.ptr));
	}
	return ref;
}

/* After the conditions: the references of op that they decide (conditional references,
 * urn:uuids of conditional updates, the up-front ids of conditional creates that matched),
 * rewritten, and op prepared again when one was. 0, or a store error; a reference that does
 * not resolve sets op's status. */
static int
op_refs_fix(rest_job_t *j, store_txn_t *t, rest_op_t *op, reffix_t *f)
{
	if (j->transaction && !f->listed) {
		f->listed = true;
		for (size_t i = 0; i < j->nops; i++) {
			const rest_op_t *o = &j->ops[i];

			if (o->kind == OP_PUT && o->id.len > 0 &&
			    ((o->matched && o->pre_id.len > 0 && !slice_eq(o->pre_id, o->id)) ||
			     (o->pre_id.len == 0 && o->full.len > 9 &&
			      memcmp(o->full.ptr, "urn:uuid:", 9) == 0))) {
				f->remap = arena_array_grow(j->c->a, f->remap, f->nremap,
							    &f->capremap, sizeof(*f->remap));
				f->remap[f->nremap++] = i;
			}
		}
	}
	if (op->kind != OP_PUT || op->status != 0 || (!j->cond_refs && f->nremap == 0))
		return 0;
	f->j = j;
	f->t = t;
	f->op = op;
	f->status = 0;
	f->outcome = NULL;
	f->changed = refs_walk(j->c->a, op->res, ref_fixed, f, 0);
	if (f->rc != 0)
		return f->rc;
	if (f->status != 0) {
		op->status = f->status;
		op->outcome = f->outcome;
		return 0;
	}
	if (f->changed)
		op_prepare_or_fail(j->c->a, op);
	return 0;
}

static int
job_apply(writer_job_t *wj, store_txn_t *t)
{
	rest_job_t *j = (rest_job_t *)wj;
	uint64_t now = time_now_ns();
	reffix_t f = {0};
	int rc = 0;

	if (j->transaction) {
		/* Every check first: a failing entry leaves the transaction unwritten. Then the
		 * references the conditions decided, with every condition resolved. */
		for (size_t pass = 0; pass < 2; pass++) {
			size_t first, second;

			for (size_t i = 0; rc == 0 && i < j->nops; i++) {
				rc = pass == 0 ? op_resolve(j, t, &j->ops[i])
					       : op_refs_fix(j, t, &j->ops[i], &f);
				if (rc == 0 && j->ops[i].status >= 400) {
					j->fail_status = j->ops[i].status;
					j->fail_outcome = j->ops[i].outcome;
					return 0;
				}
			}
			/* conditions resolved: two entries may have found the same resource */
			if (rc == 0 && pass == 0 && ops_same_resource(j, &first, &second)) {
				j->fail_status = 400;
				j->fail_outcome = outcome_printf(
				    j->c->a, "invalid",
				    "entries %zu and %zu change the same resource", first, second);
				return 0;
			}
		}
		for (size_t i = 0; rc == 0 && i < j->nops; i++)
			rc = op_write(j, t, &j->ops[i], now);
		return rc;
	}
	for (size_t i = 0; rc == 0 && i < j->nops; i++) {
		rc = op_resolve(j, t, &j->ops[i]);
		if (rc == 0 && j->bundle)
			rc = op_refs_fix(j, t, &j->ops[i], &f);
		if (rc == 0)
			rc = op_write(j, t, &j->ops[i], now);
	}
	return rc;
}

static void
job_done(writer_job_t *wj, int rc)
{
	rest_job_t *j = (rest_job_t *)wj;
	rest_thread_t *th = j->c->th;
	bool wake;

	j->store_rc = rc;
	pthread_mutex_lock(&th->done_mu);
	wake = th->done_head == NULL;
	j->done_next = th->done_head;
	th->done_head = j;
	pthread_mutex_unlock(&th->done_mu);
	if (wake)
		event_active(th->done_ev, EV_READ, 0);
}

static rest_job_t *
job_new(rest_ctx_t *c, size_t nops)
{
	rest_job_t *j = arena_zalloc(c->a, sizeof(*j));

	j->c = c;
	j->nops = nops;
	j->ops = arena_zalloc(c->a, (nops ? nops : 1) * sizeof(rest_op_t));
	j->wj.apply = job_apply;
	j->wj.done = job_done;
	return j;
}

/* Queues the job, or answers 503 with Retry-After when the writer's queue is full (the job
 * lives in the request's arena and goes with it). */
static void
job_submit(rest_job_t *j)
{
	static const http_field_t retry[] = {{"Retry-After", "1"}, {NULL, NULL}};
	rest_ctx_t *c = j->c;

	if (writer_full(c->rest->writer)) {
		rest_send(c, 503,
			  rest_outcome(c->a, "error", "transient",
				       "the store is busy (writer queue full): retry shortly"),
			  retry);
		return;
	}
	/* What the job holds in memory (the request's arena and body), for the queue's bounds. */
	j->wj.bytes = arena_used(c->a) + http_request_body(c->req).len;
	(void)writer_submit(c->rest->writer, &j->wj);
}

static int
op_apply(writer_job_t *wj, store_txn_t *t)
{
	rest_job_t *j = (rest_job_t *)wj;

	return j->op_apply(j->op_arg, t);
}

void
rest_submit_op(rest_ctx_t *c, rest_op_apply_fn apply, rest_op_finish_fn finish, void *arg)
{
	rest_job_t *j = job_new(c, 0);

	j->wj.apply = op_apply;
	j->op_apply = apply;
	j->op_finish = finish;
	j->op_arg = arg;
	job_submit(j);
}

/* ---- answers ---- */

static const char *
location_of(rest_ctx_t *c, const rest_op_t *op, bool absolute)
{
	buf_t b = BUF_INIT;
	const char *s;

	buf_printf(&b, "%s%s%.*s/%.*s/_history/%u", absolute ? c->base : "", absolute ? "/" : "",
		   (int)op->type.len, op->type.ptr, (int)op->id.len, op->id.ptr, op->out.version);
	s = rest_cstr(c->a, buf_slice(&b));
	buf_free(&b);
	return s;
}

static void
finish_single(rest_job_t *j)
{
	rest_ctx_t *c = j->c;
	rest_op_t *op = &j->ops[0];
	char ts[40];

	if (j->store_rc < 0) {
		rest_send_error(c, 500, "exception", "the write failed: %s",
				fg_strerror(j->store_rc));
		return;
	}
	if (op->status >= 400) {
		rest_send(c, op->status, op->outcome, NULL);
		return;
	}
	if (op->matched) { /* conditional create: the one that exists */
		store_txn_t *t = rest_read_begin(c);
		fhir_node_t *res, *oo;
		uint32_t ver = 0;
		uint64_t lu = 0;
		int st;

		if (t == NULL)
			return;
		st = rest_read_result(c, t, op->type, op->id, 0, &res, &oo, &ver, &lu);
		store_txn_abort(t);
		op->out.version = ver;
		{
			http_field_t f[] = {{"ETag", rest_etag(c->a, ver)},
					    {"Location", location_of(c, op, true)},
					    {NULL, NULL}};

			rest_send(c, st,
				  st == 200 ? (c->prefer == REST_PREFER_MINIMAL ? NULL : res) : oo,
				  st == 200 ? f : NULL);
		}
		return;
	}
	if (op->kind == OP_DELETE) {
		if (c->prefer == REST_PREFER_OUTCOME)
			rest_send(c, 200,
				  rest_outcome(c->a, "information", "informational", "deleted"),
				  NULL);
		else
			rest_send(c, 204, NULL, NULL);
		return;
	}
	rest_meta_set(c->a, op->res, op->out.version, op->out.last_updated_ns);
	time_format_rfc3339(op->out.last_updated_ns, ts, sizeof(ts));
	{
		http_field_t f[] = {
		    {"ETag", rest_etag(c->a, op->out.version)},
		    {"Last-Modified", rest_http_date(c->a, op->out.last_updated_ns)},
		    {"Location", location_of(c, op, true)},
		    {NULL, NULL}};
		const fhir_node_t *body = op->res;

		if (c->prefer == REST_PREFER_MINIMAL)
			body = NULL;
		else if (c->prefer == REST_PREFER_OUTCOME)
			body = rest_outcome(c->a, "information", "informational",
					    op->out.unchanged   ? "unchanged: no new version"
					    : op->status == 201 ? "created"
								: "updated");
		rest_send(c, op->status, body, f);
	}
}

static void
status_text(char *out, size_t cap, int status)
{
	snprintf(out, cap, "%d %s", status, http_status_reason(status));
}

static void
finish_bundle(rest_job_t *j)
{
	rest_ctx_t *c = j->c;
	arena_t *a = c->a;
	fhir_node_t *b, *entries;
	store_txn_t *t = NULL;

	if (j->store_rc < 0) {
		rest_send_error(c, 500, "exception", "the write failed: %s",
				fg_strerror(j->store_rc));
		return;
	}
	if (j->fail_status != 0) {
		rest_send(c, j->fail_status, j->fail_outcome, NULL);
		return;
	}
	b = fhir_object_new(a);
	fhir_object_set_cstr(a, b, "resourceType", fhir_string_new(a, SLICE_LIT("Bundle")));
	fhir_object_set_cstr(a, b, "id", fhir_string_new(a, new_id(a)));
	fhir_object_set_cstr(a, b, "type",
			     fhir_string_new(a, j->transaction ? SLICE_LIT("transaction-response")
							       : SLICE_LIT("batch-response")));
	entries = fhir_array_new(a);
	for (size_t i = 0; i < j->nops; i++) {
		rest_op_t *op = &j->ops[i];
		fhir_node_t *e = fhir_object_new(a), *resp = fhir_object_new(a);
		char st[64], ts[40];

		if (op->kind == OP_READ && op->status == 0) {
			fhir_node_t *res = NULL;
			uint32_t ver = 0;
			uint64_t lu = 0;

			if (t == NULL && (t = rest_read_begin(c)) == NULL)
				return;
			op->status = rest_read_result(c, t, op->type, op->id, 0, &res, &op->outcome,
						      &ver, &lu);
			if (res != NULL) {
				fhir_object_set_cstr(a, e, "resource", res);
				fhir_object_set_cstr(
				    a, resp, "etag",
				    fhir_string_new(a, slice_cstr(rest_etag(a, ver))));
			}
		}
		if (op->kind == OP_SEARCH && op->status == 0) {
			fhir_node_t *res = NULL;

			if (t == NULL && (t = rest_read_begin(c)) == NULL)
				return;
			op->status = rest_search_bundle(c, t, op->type, op->query, &res);
			if (op->status == 200)
				fhir_object_set_cstr(a, e, "resource", res);
			else
				op->outcome = res;
		}
		status_text(st, sizeof(st), op->status);
		fhir_object_set_cstr(a, resp, "status", fhir_string_new(a, slice_cstr(st)));
		if (op->status < 300 && op->kind == OP_PUT && !op->matched) {
			fhir_object_set_cstr(
			    a, resp, "location",
			    fhir_string_new(a, slice_cstr(location_of(c, op, false))));
			fhir_object_set_cstr(
			    a, resp, "etag",
			    fhir_string_new(a, slice_cstr(rest_etag(a, op->out.version))));
			time_format_rfc3339(op->out.last_updated_ns, ts, sizeof(ts));
			fhir_object_set_cstr(a, resp, "lastModified",
					     fhir_string_new(a, slice_cstr(ts)));
			if (c->prefer == REST_PREFER_REPRESENTATION &&
			    http_request_header(c->req, "Prefer").ptr != NULL) {
				rest_meta_set(a, op->res, op->out.version, op->out.last_updated_ns);
				fhir_object_set_cstr(a, e, "resource", op->res);
			}
		}
		if (op->matched) {
			buf_t lb = BUF_INIT;

			buf_printf(&lb, "%.*s/%.*s", (int)op->type.len, op->type.ptr,
				   (int)op->id.len, op->id.ptr);
			fhir_object_set_cstr(
			    a, resp, "location",
			    fhir_string_new(a, arena_slice_dup(a, buf_slice(&lb))));
			buf_free(&lb);
		}
		if (op->outcome != NULL && op->status >= 400)
			fhir_object_set_cstr(a, resp, "outcome", op->outcome);
		fhir_object_set_cstr(a, e, "response", resp);
		fhir_array_append(a, entries, e);
	}
	store_txn_abort(t);
	if (fhir_array_len(entries) > 0)
		fhir_object_set_cstr(a, b, "entry", entries);
	rest_send(c, 200, b, NULL);
}

static void
job_finish(rest_job_t *j)
{
	if (j->op_finish != NULL)
		j->op_finish(j->c, j->op_arg, j->store_rc);
	else if (j->bundle)
		finish_bundle(j);
	else
		finish_single(j);
}

void
rest_jobs_finish(rest_thread_t *th)
{
	rest_job_t *list, *rev = NULL;

	pthread_mutex_lock(&th->done_mu);
	list = th->done_head;
	th->done_head = NULL;
	pthread_mutex_unlock(&th->done_mu);
	while (list != NULL) { /* newest first: reverse, so answers keep submission order */
		rest_job_t *next = list->done_next;

		list->done_next = rev;
		rev = list;
		list = next;
	}
	while (rev != NULL) {
		rest_job_t *next = rev->done_next;

		job_finish(rev); /* frees rev with its request */
		rev = next;
	}
}

void
rest_jobs_drop(rest_thread_t *th)
{
	rest_jobs_finish(th);
}

/* ---- the interactions ---- */

/* W/"3", "3" -> 3; 0 when it is not a version. */
static uint32_t
etag_version(slice_t v)
{
	uint64_t n;

	v = slice_trim(v);
	if (v.len >= 2 && v.ptr[0] == 'W' && v.ptr[1] == '/')
		v = slice_make(v.ptr + 2, v.len - 2);
	if (v.len >= 2 && v.ptr[0] == '"' && v.ptr[v.len - 1] == '"')
		v = slice_make(v.ptr + 1, v.len - 2);
	return slice_to_u64(v, &n) && n > 0 && n <= UINT32_MAX ? (uint32_t)n : 0;
}

/* Fills a PUT op from a checked resource; answers and returns false on failure. */
static bool
single_put(rest_ctx_t *c, rest_op_t *op)
{
	int rc;

	op->kind = OP_PUT;
	if (op->id.len == 0)
		return true; /* decided in the writer */
	rc = op_prepare(c->a, op);
	if (rc < 0) {
		rest_send_error(c, 400, "invalid", "cannot index the resource: %s",
				fg_strerror(rc));
		return false;
	}
	return true;
}

void
rest_do_create(rest_ctx_t *c, slice_t type)
{
	fhir_node_t *res = rest_body_parse(c), *oo = NULL;
	rest_job_t *j;
	rest_op_t *op;
	slice_t ine;
	int st;

	if (res == NULL)
		return;
	if ((st = res_check(c->a, res, type, SLICE_NULL, false, &oo)) != 0) {
		rest_send(c, st, oo, NULL);
		return;
	}
	j = job_new(c, 1);
	op = &j->ops[0];
	op->type = type;
	op->id = new_id(c->a); /* the server names what is created */
	op->res = res;
	op->create_only = true;
	ine = http_request_header(c->req, "If-None-Exist");
	if (ine.ptr != NULL) {
		slice_t q = slice_trim(ine);
		size_t qm = 0;

		/* "identifier=x" or a whole "Patient?identifier=x". */
		while (qm < q.len && q.ptr[qm] != '?')
			qm++;
		op->cond = COND_CREATE;
		op->query = qm < q.len ? slice_make(q.ptr + qm + 1, q.len - qm - 1) : q;
	}
	if (single_put(c, op))
		job_submit(j);
}

static bool
put_headers(rest_ctx_t *c, rest_op_t *op)
{
	slice_t im = http_request_header(c->req, "If-Match"), inm;

	if (im.ptr != NULL && (op->if_match = etag_version(im)) == 0) {
		rest_send_error(c, 400, "invalid", "If-Match must be an ETag such as W/\"1\"");
		return false;
	}
	inm = http_request_header(c->req, "If-None-Match");
	op->create_only = inm.ptr != NULL && slice_eq_cstr(slice_trim(inm), "*");
	return true;
}

void
rest_do_update(rest_ctx_t *c, slice_t type, slice_t id)
{
	fhir_node_t *res = rest_body_parse(c), *oo = NULL;
	rest_job_t *j;
	int st;

	if (res == NULL)
		return;
	if ((st = res_check(c->a, res, type, id, true, &oo)) != 0) {
		rest_send(c, st, oo, NULL);
		return;
	}
	j = job_new(c, 1);
	j->ops[0].type = type;
	j->ops[0].id = id;
	j->ops[0].res = res;
	if (put_headers(c, &j->ops[0]) && single_put(c, &j->ops[0]))
		job_submit(j);
}

static bool
query_is_condition(rest_ctx_t *c)
{
	static const char *const ours[] = {"_format", "_pretty", NULL};
	http_query_t it;
	slice_t k, v;

	http_query_init(&it, c->query, c->a);
	while (http_query_next(&it, &k, &v)) {
		bool mine = false;

		for (size_t i = 0; ours[i] != NULL; i++)
			mine = mine || slice_eq_cstr(k, ours[i]);
		if (!mine)
			return true;
	}
	rest_send_error(c, 412, "invalid", "a conditional interaction needs search parameters");
	return false;
}

void
rest_do_cond_update(rest_ctx_t *c, slice_t type)
{
	fhir_node_t *res, *oo = NULL, *rid;
	rest_job_t *j;
	int st;

	if (!query_is_condition(c) || (res = rest_body_parse(c)) == NULL)
		return;
	if ((st = res_check(c->a, res, type, SLICE_NULL, false, &oo)) != 0) {
		rest_send(c, st, oo, NULL);
		return;
	}
	j = job_new(c, 1);
	j->ops[0].type = type;
	rid = fhir_object_get_cstr(res, "id");
	j->ops[0].id = rid != NULL ? fhir_node_text(rid) : slice_make("", 0);
	j->ops[0].res = res;
	j->ops[0].kind = OP_PUT;
	j->ops[0].cond = COND_UPDATE;
	j->ops[0].query = c->query;
	if (put_headers(c, &j->ops[0]))
		job_submit(j);
}

void
rest_do_delete(rest_ctx_t *c, slice_t type, slice_t id)
{
	rest_job_t *j = job_new(c, 1);

	j->ops[0].kind = OP_DELETE;
	j->ops[0].type = type;
	j->ops[0].id = id;
	job_submit(j);
}

void
rest_do_cond_delete(rest_ctx_t *c, slice_t type)
{
	rest_job_t *j;

	if (!query_is_condition(c))
		return;
	j = job_new(c, 1);
	j->ops[0].kind = OP_DELETE;
	j->ops[0].cond = COND_DELETE;
	j->ops[0].type = type;
	j->ops[0].query = c->query;
	job_submit(j);
}

static bool
is_json_patch(slice_t ct)
{
	return slice_eq_nocase(media_type(ct), SLICE_LIT("application/json-patch+json"));
}

/* A PATCH request's body: a JSON Patch or a FHIRPath Patch (*fhirpath); false when it was
 * answered (415, 400). */
static bool
patch_body(rest_ctx_t *c, fhir_node_t **patch, bool *fhirpath)
{
	slice_t ct = http_request_header(c->req, "Content-Type"), body = http_request_body(c->req);
	char err[256];

	*fhirpath = !is_json_patch(ct);
	if (ct.ptr == NULL || (*fhirpath && body_format(ct) < 0)) {
		rest_send_error(c, 415, "not-supported",
				"PATCH takes a JSON Patch (application/json-patch+json) or a "
				"FHIRPath Patch (a Parameters resource as application/fhir+json or "
				"application/fhir+xml)");
		return false;
	}
	if (*fhirpath) {
		if ((*patch = rest_body_parse(c)) == NULL)
			return false;
		if (!slice_eq_cstr(fhir_resource_type(*patch), "Parameters")) {
			rest_send_error(c, 400, "invalid",
					"a FHIRPath Patch is a Parameters resource");
			return false;
		}
	} else if (fhir_json_parse(c->a, body.ptr, body.len, NULL, patch, err, sizeof(err)) < 0) {
		rest_send_error(c, 400, "structure", "the patch does not parse: %s", err);
		return false;
	}
	return true;
}

static void patch_submit(rest_ctx_t *c, slice_t type, slice_t id, fhir_node_t *patch,
			 bool fhirpath);

void
rest_do_patch(rest_ctx_t *c, slice_t type, slice_t id)
{
	fhir_node_t *patch;
	bool fhirpath;

	if (patch_body(c, &patch, &fhirpath))
		patch_submit(c, type, id, patch, fhirpath);
}

/* PATCH T?query: the one resource the query matches is patched (404 when none, 412 when
 * more than one), as HAPI and the R5 text have it. */
void
rest_do_cond_patch(rest_ctx_t *c, slice_t type)
{
	search_opts_t opts = {.max_count = 2};
	search_result_t *sr;
	fhir_node_t *patch, *oo = NULL;
	store_txn_t *t;
	slice_t id;
	bool fhirpath;
	int rc;

	if (!patch_body(c, &patch, &fhirpath))
		return;
	if (c->query.len == 0) {
		rest_send_error(c, 400, "invalid", "PATCH needs an id or a condition");
		return;
	}
	if ((t = rest_read_begin(c)) == NULL)
		return;
	rc = search_run(t, c->a, type, c->query, &opts, &sr, &oo);
	store_txn_abort(t);
	if (rc < 0) {
		if (oo != NULL)
			rest_send(c, 400, oo, NULL);
		else
			rest_send_error(c, 500, "exception", "search failed: %s", fg_strerror(rc));
		return;
	}
	if (sr->nmatches == 0) {
		rest_send_error(c, 404, "not-found", "the condition matches no %.*s", (int)type.len,
				type.ptr);
		return;
	}
	if (sr->nmatches > 1 || sr->has_next) {
		rest_send_error(c, 412, "multiple-matches",
				"the condition matches more than one resource");
		return;
	}
	id = arena_slice_dup(c->a, sr->hits[0].id);
	patch_submit(c, type, id, patch, fhirpath);
}

/* Applies patch to the current version of type/id and writes the result (a write to it in
 * between is a 409). */
static void
patch_submit(rest_ctx_t *c, slice_t type, slice_t id, fhir_node_t *patch, bool fhirpath)
{
	fhir_node_t *res, *oo = NULL;
	store_txn_t *t;
	uint32_t ver = 0, want;
	uint64_t lu;
	rest_job_t *j;
	int st;

	if ((t = rest_read_begin(c)) == NULL)
		return;
	st = rest_read_result(c, t, type, id, 0, &res, &oo, &ver, &lu);
	store_txn_abort(t);
	if (st != 200) {
		rest_send(c, st, oo, NULL);
		return;
	}
	want = etag_version(http_request_header(c->req, "If-Match"));
	if (want != 0 && want != ver) {
		rest_send_error(c, 412, "conflict", "version %u is not the current version %u",
				want, ver);
		return;
	}
	if ((st = patch_apply(c->a, &res, patch, fhirpath, type, id, &oo)) != 0) {
		rest_send(c, st, oo, NULL);
		return;
	}
	j = job_new(c, 1);
	j->ops[0].type = type;
	j->ops[0].id = id;
	j->ops[0].res = res;
	j->ops[0].if_match = ver; /* the version patched: a write since then is a conflict */
	j->ops[0].conflict_409 = true;
	if (single_put(c, &j->ops[0]))
		job_submit(j);
}

/* ---- $validate ---- */

/* The resource a $validate body gives: the body itself, or the "resource" parameter of a
 * Parameters (with "mode"; *profile set when it names one). NULL when there is none. */
static fhir_node_t *
validate_input(fhir_node_t *body, slice_t type, slice_t *mode, bool *profile)
{
	fhir_node_t *params;

	*mode = SLICE_NULL;
	if (!slice_eq_cstr(fhir_resource_type(body), "Parameters") ||
	    slice_eq_cstr(type, "Parameters"))
		return body;
	params = fhir_object_get_cstr(body, "parameter");
	body = NULL;
	for (size_t i = 0; i < fhir_array_len(params); i++) {
		fhir_node_t *p = fhir_array_at(params, i);
		slice_t name = fhir_node_text(fhir_object_get_cstr(p, "name"));

		if (slice_eq_cstr(name, "resource"))
			body = fhir_object_get_cstr(p, "resource");
		else if (slice_eq_cstr(name, "mode"))
			*mode = fhir_node_text(fhir_object_get_cstr(p, "valueCode"));
		else if (slice_eq_cstr(name, "profile"))
			*profile = true;
	}
	return body;
}

/* At most this many issues in a $validate answer (the text below says it). */
#define VALIDATE_ISSUES_MAX 100

void
rest_do_validate(rest_ctx_t *c, slice_t type, slice_t id)
{
	fhir_node_t *body, *res, *oo = NULL;
	fhir_issue_t *is;
	size_t n;
	slice_t mode, k, v;
	bool profile = false;
	http_query_t q;

	if ((body = rest_body_parse(c)) == NULL)
		return;
	res = validate_input(body, type, &mode, &profile);
	http_query_init(&q, c->query, c->a);
	while (http_query_next(&q, &k, &v))
		profile = profile || slice_eq_cstr(k, "profile");
	if (slice_eq_cstr(mode, "delete")) {
		/* a resource can always be deleted (deletes are idempotent) */
		rest_send(c, 200,
			  rest_outcome(c->a, "information", "informational",
				       "No issues detected during validation"),
			  NULL);
		return;
	}
	if (mode.len > 0 && !slice_eq_cstr(mode, "create") && !slice_eq_cstr(mode, "update")) {
		rest_send_error(c, 400, "invalid", "mode is create, update or delete");
		return;
	}
	if (res == NULL || fhir_node_kind(res) != FHIR_OBJECT) {
		rest_send_error(c, 400, "invalid",
				"$validate takes a resource, as the body or a Parameters' resource "
				"parameter");
		return;
	}
	/* what a create (or, with an id, an update) checks first: the type and the id */
	if (res_check_ids(c->a, res, type, id, true, &oo) == 0 && slice_eq_cstr(mode, "update") &&
	    id.len == 0 && fhir_object_get_cstr(res, "id") == NULL)
		oo = outcome_printf(c->a, "required", "an update needs the resource's id");
	if (oo == NULL) {
		/* then every problem of structure and value, and the required elements */
		is = arena_alloc(c->a, VALIDATE_ISSUES_MAX * sizeof(*is));
		n = fhir_validate(c->a, res, FHIR_VALIDATE_REQUIRED, is, VALIDATE_ISSUES_MAX);
		if (n == 0) {
			oo = rest_outcome(c->a, "information", "informational",
					  "No issues detected during validation");
		} else {
			oo = validate_outcome(c->a, is, n);
			if (n == VALIDATE_ISSUES_MAX)
				fhir_array_append(
				    c->a, fhir_object_get_cstr(oo, "issue"),
				    validate_issue(c->a, "information", "informational", NULL,
						   "validation stopped at 100 issues"));
		}
	}
	if (profile) /* said, not ignored silently */
		fhir_array_append(c->a, fhir_object_get_cstr(oo, "issue"),
				  validate_issue(c->a, "warning", "not-supported", NULL,
						 "profiles are not checked: validated against the "
						 "base R4 definitions only"));
	/* validated: 200 whatever the outcome says */
	rest_send(c, 200, oo, NULL);
}

/* ---- batch and transaction ---- */

typedef struct {
	const urn_map_t *map;
	size_t n;
} urn_fix_t;

/* The id a Bundle-local urn:uuid was given, or ref. */
static slice_t
urn_fixed(void *ctx, slice_t ref)
{
	const urn_fix_t *u = ctx;

	for (size_t k = 0; k < u->n; k++)
		if (slice_eq(ref, u->map[k].from))
			return u->map[k].to;
	return ref;
}

/* Replaces every reference to a Bundle-local urn:uuid by the id it was given. */
static void
refs_rewrite(arena_t *a, fhir_node_t *n, const urn_map_t *map, size_t nmap)
{
	urn_fix_t u = {map, nmap};

	(void)refs_walk(a, n, urn_fixed, &u, 0);
}

/* Splits an entry URL "T", "T/id", "T?q" (relative, or under this base). */
static bool
entry_url(rest_ctx_t *c, slice_t url, slice_t *type, slice_t *id, slice_t *query)
{
	size_t blen = strlen(c->base), i = 0, q;

	if (url.len > blen && memcmp(url.ptr, c->base, blen) == 0 && url.ptr[blen] == '/')
		url = slice_make(url.ptr + blen + 1, url.len - blen - 1);
	if (url.len > 0 && url.ptr[0] == '/')
		url = slice_make(url.ptr + 1, url.len - 1);
	for (q = 0; q < url.len && url.ptr[q] != '?'; q++)
		;
	*query = q < url.len ? slice_make(url.ptr + q + 1, url.len - q - 1) : SLICE_NULL;
	while (i < q && url.ptr[i] != '/')
		i++;
	*type = slice_make(url.ptr, i);
	*id = i < q ? slice_make(url.ptr + i + 1, q - i - 1) : slice_make("", 0);
	return fhir_meta_is_resource(*type) && (id->len == 0 || rest_id_is_valid(*id));
}

/* Standard base64 (RFC 4648, padded; white space between is skipped) into the arena; false
 * when it is not base64. */
static bool
b64_decode(arena_t *a, slice_t in, slice_t *out)
{
	buf_t clean = BUF_INIT;
	unsigned char *bytes;
	size_t pad = 0;
	int n;
	bool ok;

	for (size_t i = 0; i < in.len; i++)
		if (in.ptr[i] != ' ' && in.ptr[i] != '\t' && in.ptr[i] != '\r' && in.ptr[i] != '\n')
			buf_append_byte(&clean, in.ptr[i]);
	ok = clean.len > 0 && clean.len % 4 == 0 && clean.len <= INT32_MAX;
	if (ok) {
		pad = (clean.data[clean.len - 1] == '=') + (clean.data[clean.len - 2] == '=');
		bytes = arena_alloc(a, clean.len / 4 * 3 + 1);
		n = EVP_DecodeBlock(bytes, (const unsigned char *)clean.data, (int)clean.len);
		ok = n >= 0 && (size_t)n >= pad;
		if (ok)
			*out = slice_make((const char *)bytes, (size_t)n - pad);
	}
	buf_free(&clean);
	return ok;
}

/* The patch of a PATCH entry: a Parameters resource (FHIRPath Patch), or a Binary whose data
 * is a JSON Patch (contentType application/json-patch+json), as HAPI sends them. 0, or 400
 * with op->outcome. */
static int
entry_patch(arena_t *a, const fhir_node_t *res, rest_op_t *op)
{
	slice_t rt = fhir_resource_type(res), json;
	fhir_node_t *patch;
	char err[256];

	if (slice_eq_cstr(rt, "Parameters")) {
		op->patch = res;
		op->fhirpath = true;
		return 0;
	}
	if (!slice_eq_cstr(rt, "Binary")) {
		op->outcome = outcome_printf(a, "invalid",
					     "a PATCH entry's resource is a Parameters (FHIRPath "
					     "Patch) or a Binary (JSON Patch)");
		return 400;
	}
	if (!is_json_patch(fhir_node_text(fhir_object_get_cstr(res, "contentType")))) {
		op->outcome = outcome_printf(a, "not-supported",
					     "a PATCH entry's Binary must have the contentType "
					     "application/json-patch+json");
		return 400;
	}
	if (!b64_decode(a, fhir_node_text(fhir_object_get_cstr(res, "data")), &json)) {
		op->outcome = outcome_printf(a, "invalid", "the Binary's data is not base64");
		return 400;
	}
	if (fhir_json_parse(a, json.ptr, json.len, NULL, &patch, err, sizeof(err)) < 0) {
		op->outcome = outcome_printf(a, "structure", "the patch does not parse: %s", err);
		return 400;
	}
	op->patch = patch;
	return 0;
}

/* Builds op i from entry e; 0, or a status with op->outcome set. */
static int
entry_op(rest_ctx_t *c, fhir_node_t *e, rest_op_t *op)
{
	arena_t *a = c->a;
	fhir_node_t *req = fhir_object_get_cstr(e, "request"),
		    *res = fhir_object_get_cstr(e, "resource");
	slice_t method = fhir_node_text(fhir_object_get_cstr(req, "method"));
	slice_t url = fhir_node_text(fhir_object_get_cstr(req, "url")), type, id, q;
	int st;

	if (req == NULL || method.len == 0 || url.len == 0 || !entry_url(c, url, &type, &id, &q)) {
		op->outcome =
		    outcome_printf(a, "invalid", "entry.request needs a method and a url");
		return 400;
	}
	op->type = type;
	op->id = id;
	if (slice_eq_cstr(method, "GET")) {
		if (id.len > 0 && q.ptr != NULL) {
			op->outcome = outcome_printf(
			    a, "not-supported",
			    "a GET in a Bundle is a read (T/id) or a search (T?query)");
			return 400;
		}
		op->kind = id.len > 0 ? OP_READ : OP_SEARCH;
		op->query = q.ptr != NULL ? q : slice_make("", 0);
		return 0;
	}
	if (slice_eq_cstr(type, "AuditEvent")) {
		op->outcome =
		    outcome_printf(a, "not-supported",
				   "AuditEvents are written by the server only (the audit "
				   "trail is append-only)");
		return 405;
	}
	if (slice_eq_cstr(method, "DELETE")) {
		op->kind = OP_DELETE;
		if (id.len == 0) {
			if (q.ptr == NULL) {
				op->outcome = outcome_printf(a, "invalid",
							     "DELETE needs an id or a condition");
				return 400;
			}
			op->cond = COND_DELETE;
			op->query = q;
		}
		return 0;
	}
	if (slice_eq_cstr(method, "PATCH")) {
		if ((id.len == 0) == (q.ptr == NULL)) {
			op->outcome =
			    outcome_printf(a, "invalid", "a PATCH entry's url is T/id or T?query");
			return 400;
		}
		if (q.ptr != NULL) {
			op->cond = COND_PATCH;
			op->query = q;
		}
		if ((st = entry_patch(a, res, op)) != 0)
			return st;
		op->kind = OP_PUT;
		op->if_match = etag_version(fhir_node_text(fhir_object_get_cstr(req, "ifMatch")));
		return 0;
	}
	if (!slice_eq_cstr(method, "POST") && !slice_eq_cstr(method, "PUT")) {
		op->outcome =
		    outcome_printf(a, "not-supported", "method %.*s is not supported here",
				   (int)(method.len > 16 ? 16 : method.len), method.ptr);
		return 400;
	}
	if (res == NULL || fhir_node_kind(res) != FHIR_OBJECT) {
		op->outcome = outcome_printf(a, "invalid", "entry.resource is required");
		return 400;
	}
	op->kind = OP_PUT;
	op->res = res;
	if (slice_eq_cstr(method, "POST")) {
		slice_t ine = fhir_node_text(fhir_object_get_cstr(req, "ifNoneExist"));

		if ((st = res_check(a, res, type, SLICE_NULL, false, &op->outcome)) != 0)
			return st;
		op->create_only = true;
		if (ine.len > 0) {
			size_t qm = 0;

			while (qm < ine.len && ine.ptr[qm] != '?')
				qm++;
			op->cond = COND_CREATE;
			op->query =
			    qm < ine.len ? slice_make(ine.ptr + qm + 1, ine.len - qm - 1) : ine;
		}
		return 0;
	}
	if (id.len == 0) {
		fhir_node_t *rid = fhir_object_get_cstr(res, "id");

		if (q.ptr == NULL) {
			op->outcome =
			    outcome_printf(a, "invalid", "PUT needs an id or a condition");
			return 400;
		}
		if ((st = res_check(a, res, type, SLICE_NULL, false, &op->outcome)) != 0)
			return st;
		op->cond = COND_UPDATE;
		op->query = q;
		op->id = rid != NULL ? fhir_node_text(rid) : slice_make("", 0);
		return 0;
	}
	if ((st = res_check(a, res, type, id, true, &op->outcome)) != 0)
		return st;
	op->if_match = etag_version(fhir_node_text(fhir_object_get_cstr(req, "ifMatch")));
	return 0;
}

/* The scope check of one entry: 0, or 403 with op->outcome. */
static int
entry_authorize(rest_ctx_t *c, rest_op_t *op)
{
	rest_az_t az;
	char err[320];

	if (op->kind == OP_READ)
		az = REST_AZ_READ;
	else if (op->kind == OP_SEARCH)
		az = REST_AZ_SEARCH;
	else if (op->kind == OP_DELETE)
		az = op->cond == COND_DELETE ? REST_AZ_COND_DELETE : REST_AZ_DELETE;
	else if (op->create_only)
		az = op->cond == COND_CREATE ? REST_AZ_COND_CREATE : REST_AZ_CREATE;
	else
		az = op->cond == COND_UPDATE || op->cond == COND_PATCH ? REST_AZ_COND_UPDATE
								       : REST_AZ_UPDATE;
	if (rest_authorize_entry(c, az, op->type, err, sizeof(err)) == 0)
		return 0;
	op->outcome = outcome_printf(c->a, "forbidden", "%s", err);
	return 403;
}

void
rest_do_bundle(rest_ctx_t *c)
{
	fhir_node_t *b = rest_body_parse(c), *entries, *e;
	slice_t btype;
	rest_job_t *j;
	urn_map_t *map;
	size_t n, nmap = 0, i;

	if (b == NULL)
		return;
	btype = fhir_node_text(fhir_object_get_cstr(b, "type"));
	if (!slice_eq_cstr(fhir_resource_type(b), "Bundle") ||
	    (!slice_eq_cstr(btype, "batch") && !slice_eq_cstr(btype, "transaction"))) {
		rest_send_error(c, 400, "invalid",
				"POST /fhir takes a batch or transaction Bundle");
		return;
	}
	entries = fhir_object_get_cstr(b, "entry");
	n = entries != NULL ? fhir_array_len(entries) : 0;
	if (n > REST_BUNDLE_MAX) {
		rest_send_error(c, 413, "too-costly", "at most %d entries per Bundle",
				REST_BUNDLE_MAX);
		return;
	}
	j = job_new(c, n);
	j->bundle = true;
	j->transaction = slice_eq_cstr(btype, "transaction");
	map = arena_zalloc(c->a, (n ? n : 1) * sizeof(*map));
	j->urns = map;
	for (i = 0; i < n; i++) {
		rest_op_t *op = &j->ops[i];
		slice_t full;

		e = fhir_array_at(entries, i);
		op->status = fhir_node_kind(e) == FHIR_OBJECT ? entry_op(c, e, op) : 400;
		if (op->status == 0)
			op->status = entry_authorize(c, op);
		if (op->status != 0 && op->outcome == NULL)
			op->outcome = outcome_printf(c->a, "invalid", "bad entry");
		if (op->status != 0 && j->transaction) { /* nothing is written */
			rest_send(c, op->status, op->outcome, NULL);
			return;
		}
		/* a PATCH's resource comes from the store, in the writer */
		if (op->status != 0 || op->kind != OP_PUT || op->patch != NULL)
			continue;
		if (op->id.len == 0 && op->cond != COND_UPDATE)
			op->id = new_id(c->a);
		else if (op->create_only) /* POST: the server names it */
			op->id = new_id(c->a);
		full = fhir_node_text(fhir_object_get_cstr(e, "fullUrl"));
		op->full = full;
		op->pre_id = op->id;
		if (full.len > 9 && memcmp(full.ptr, "urn:uuid:", 9) == 0 && op->id.len > 0) {
			buf_t to = BUF_INIT;

			buf_printf(&to, "%.*s/%.*s", (int)op->type.len, op->type.ptr,
				   (int)op->id.len, op->id.ptr);
			map[nmap].from = full;
			map[nmap++].to = arena_slice_dup(c->a, buf_slice(&to));
			buf_free(&to);
		}
	}
	for (i = 0; i < n; i++) {
		rest_op_t *op = &j->ops[i];

		if (op->status == 0 && op->patch != NULL)
			j->cond_refs = true;
		if (op->status != 0 || op->kind != OP_PUT || op->patch != NULL)
			continue;
		if (!j->cond_refs)
			(void)refs_walk(c->a, op->res, cref_note, &j->cond_refs, 0);
		if (nmap > 0)
			refs_rewrite(c->a, op->res, map, nmap);
		if (op->id.len > 0 && op_prepare(c->a, op) < 0) {
			op->status = 400;
			op->outcome = outcome_printf(c->a, "invalid", "cannot index entry %zu", i);
		}
	}
	j->nurns = nmap;
	if (j->transaction) {
		size_t k;

		/* One entry per resource: the outcome of two would depend on their order (the
		 * conditional ones are checked again in the writer, once their ids are known). */
		if (ops_same_resource(j, &i, &k)) {
			rest_send_error(c, 400, "invalid",
					"entries %zu and %zu change the same resource", i, k);
			return;
		}
		for (i = 0; i < n; i++)
			if (j->ops[i].status != 0) {
				rest_send(c, j->ops[i].status, j->ops[i].outcome, NULL);
				return;
			}
	}
	job_submit(j);
}
