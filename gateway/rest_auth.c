/* Authorization in the REST layer: the OAuth endpoints (/auth/token, the SMART configuration),
 * the bearer check of every FHIR request, and the scope check of each interaction, with the
 * patient compartment for patient/ scopes (docs/auth.md). */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "gateway/auth.h"
#include "gateway/rest_int.h"
#include "gateway/search.h"
#include "lib/err.h"
#include "lib/log.h"
#include "lib/timeutil.h"

static int64_t
now_s(void)
{
	return (int64_t)(time_now_ns() / 1000000000u);
}

static void
send_json(rest_ctx_t *c, int status, buf_t *body)
{
	http_field_t f[] = {{"Content-Type", "application/json;charset=utf-8"},
			    {"Cache-Control", "no-store"},
			    {"Pragma", "no-cache"},
			    {NULL, NULL}};

	http_respond(c->req, status, f, buf_slice(body));
	buf_free(body);
}

static void
send_plain_error(rest_ctx_t *c, int status, const char *allow, const char *text)
{
	buf_t b = BUF_INIT;
	http_field_t f[] = {{"Content-Type", "application/json;charset=utf-8"},
			    {allow != NULL ? "Allow" : NULL, allow},
			    {NULL, NULL}};

	buf_printf(&b, "{\"error\":\"invalid_request\",\"error_description\":\"%s\"}", text);
	http_respond(c->req, status, f, buf_slice(&b));
	buf_free(&b);
}

/* application/x-www-form-urlencoded, parameters (charset) allowed. */
static bool
is_form(slice_t ct)
{
	static const slice_t form = SLICE_LIT("application/x-www-form-urlencoded");

	return ct.len >= form.len && slice_eq_nocase(slice_make(ct.ptr, form.len), form) &&
	       (ct.len == form.len || ct.ptr[form.len] == ';' || ct.ptr[form.len] == ' ');
}

bool
rest_auth_route(rest_ctx_t *c)
{
	slice_t path = http_request_path(c->req), m = http_request_method(c->req);
	slice_t host = http_request_header(c->req, "Host");
	auth_t *a = c->rest->auth;
	buf_t out = BUF_INIT;

	if (slice_eq_cstr(path, "/auth/token")) {
		http_request_set_route(c->req, METRICS_ROUTE_AUTH);
		if (!auth_is_enabled(a))
			send_plain_error(c, 404, NULL,
					 "authorization is off (auth.enabled = false)");
		else if (!slice_eq_cstr(m, "POST"))
			send_plain_error(c, 405, "POST", "the token endpoint takes POST");
		else if (!is_form(http_request_header(c->req, "Content-Type")))
			send_plain_error(c, 400, NULL,
					 "the token request is application/x-www-form-urlencoded");
		else {
			int st = auth_token_request(a, c->a, http_request_body(c->req), host,
						    now_s(), &out);

			send_json(c, st, &out);
		}
		return true;
	}
	if (slice_eq_cstr(path, "/.well-known/smart-configuration") ||
	    slice_eq_cstr(path, "/fhir/.well-known/smart-configuration")) {
		http_request_set_route(c->req, METRICS_ROUTE_AUTH);
		if (!auth_is_enabled(a))
			send_plain_error(c, 404, NULL,
					 "authorization is off (auth.enabled = false)");
		else if (!slice_eq_cstr(m, "GET") && !slice_eq_cstr(m, "HEAD"))
			send_plain_error(c, 405, "GET", "GET only");
		else {
			http_field_t f[] = {{"Content-Type", "application/json;charset=utf-8"},
					    {NULL, NULL}};

			auth_smart_configuration(a, c->a, host, &out);
			http_respond(c->req, 200, f, buf_slice(&out));
			buf_free(&out);
		}
		return true;
	}
	return false;
}

bool
rest_authenticate(rest_ctx_t *c)
{
	const char *why = NULL;
	char *hdr;
	int rc;

	if (!auth_is_enabled(c->rest->auth))
		return true;
	rc = auth_bearer_check(c->rest->auth, c->a, http_request_header(c->req, "Authorization"),
			       http_request_header(c->req, "Host"), now_s(), &c->grant, &why);
	if (rc == 0)
		return true;
	/* RFC 6750 3: no credentials, no error code; a bad token says why. */
	hdr = rc == -FG_ENOTFOUND
		  ? "Bearer realm=\"fhirgate\""
		  : arena_printf(c->a,
				 "Bearer realm=\"fhirgate\", error=\"invalid_token\", "
				 "error_description=\"%s\"",
				 why);
	{
		http_field_t f[] = {{"WWW-Authenticate", hdr}, {NULL, NULL}};

		rest_send(c, 401,
			  rest_outcome(c->a, "error", "login",
				       rc == -FG_ENOTFOUND
					   ? "a bearer token is needed (SMART Backend Services: "
					     "POST /auth/token)"
					   : arena_printf(c->a, "invalid bearer token: %s", why)),
			  f);
	}
	return false;
}

static void
forbidden(rest_ctx_t *c, const char *msg)
{
	rest_send_error(c, 403, "forbidden", "%s", msg);
}

static void
forbidden_scope(rest_ctx_t *c, slice_t type, unsigned perms)
{
	char need[160];

	scope_needed(type, perms, need, sizeof(need));
	forbidden(c, arena_printf(c->a, "the token's scopes do not allow this: it needs %s", need));
}

/* Whether a search of type with query q finds anything (in a read transaction of its own). */
static bool
search_finds(rest_ctx_t *c, slice_t type, const char *q)
{
	store_txn_t *t = rest_read_begin(c);
	search_result_t *r = NULL;
	fhir_node_t *oo = NULL;
	bool found;

	if (t == NULL)
		return false;
	found = search_run(t, c->a, type, slice_cstr(q), NULL, &r, &oo) == 0 && r->nmatches > 0;
	store_txn_abort(t);
	return found;
}

/* Whether type/id is in the compartment of patient pid (current version). */
static bool
in_compartment(rest_ctx_t *c, slice_t type, slice_t id, const char *pid)
{
	const char *const *params = scope_compartment_params(type);

	if (slice_eq_cstr(type, "Patient"))
		return slice_eq_cstr(id, pid);
	for (size_t i = 0; params != NULL && params[i] != NULL; i++)
		if (search_finds(c, type,
				 arena_printf(c->a, "_id=%.*s&%s=Patient/%s", (int)id.len, id.ptr,
					      params[i], pid)))
			return true;
	return false;
}

/* v2 constrained scopes (system/Observation.rs?category=laboratory) for a read or a search
 * that no unconstrained scope allows: 1 allowed (a search gets the constraint added to
 * c->query), 0 when none applies, -1 when it answered 403. */
static int
constrained_allow(rest_ctx_t *c, rest_az_t az, slice_t type, slice_t id, unsigned perms)
{
	const scope_t *cs[8];
	size_t n;

	if (type.len == 0 || (az != REST_AZ_READ && az != REST_AZ_SEARCH))
		return 0;
	n = scope_set_constrained(&c->grant->scopes, type, perms, cs, 8);
	if (n == 0)
		return 0;
	if (az == REST_AZ_READ) {
		for (size_t i = 0; i < n && i < 8; i++)
			if (search_finds(c, type,
					 arena_printf(c->a, "_id=%.*s&%s", (int)id.len, id.ptr,
						      cs[i]->query)))
				return 1;
		forbidden(c, arena_printf(c->a,
					  "%.*s/%.*s does not match the constraints of the token's "
					  "%.*s scopes",
					  (int)type.len, type.ptr, (int)id.len, id.ptr,
					  (int)type.len, type.ptr));
		return -1;
	}
	if (n > 1) {
		forbidden(c, "several constrained scopes apply to this type: a search can be held "
			     "to one only (request one constrained scope per type)");
		return -1;
	}
	c->query = slice_cstr(c->query.len > 0 ? arena_printf(c->a, "%.*s&%s", (int)c->query.len,
							      c->query.ptr, cs[0]->query)
					       : cs[0]->query);
	return 1;
}

/* Whether a query names _include or _revinclude (which can bring in other types). */
static bool
query_includes(rest_ctx_t *c, slice_t q)
{
	http_query_t it;
	slice_t k, v;

	http_query_init(&it, q, c->a);
	while (http_query_next(&it, &k, &v))
		if ((k.len >= 8 && memcmp(k.ptr, "_include", 8) == 0) ||
		    (k.len >= 11 && memcmp(k.ptr, "_revinclude", 11) == 0))
			return true;
	return false;
}

static unsigned
perms_of(rest_az_t az, slice_t id)
{
	switch (az) {
	case REST_AZ_READ:
		return SCOPE_R;
	case REST_AZ_SEARCH:
		return SCOPE_S;
	case REST_AZ_HISTORY:
		return id.len > 0 ? SCOPE_R : SCOPE_R | SCOPE_S;
	case REST_AZ_CREATE:
		return SCOPE_C;
	case REST_AZ_COND_CREATE:
		return SCOPE_C | SCOPE_S;
	case REST_AZ_UPDATE:
		return SCOPE_U;
	case REST_AZ_COND_UPDATE:
		return SCOPE_U | SCOPE_S;
	case REST_AZ_DELETE:
		return SCOPE_D;
	case REST_AZ_COND_DELETE:
		return SCOPE_D | SCOPE_S;
	case REST_AZ_EVERYTHING:
		return SCOPE_R | SCOPE_S;
	default:
		return 0;
	}
}

bool
rest_authorize(rest_ctx_t *c, rest_az_t az, slice_t type, slice_t id)
{
	const auth_grant_t *g = c->grant;
	unsigned perms = perms_of(az, id);
	scope_verdict_t v;
	slice_t check_type = az == REST_AZ_EVERYTHING ? slice_make("", 0) : type;

	if (!auth_is_enabled(c->rest->auth) || az == REST_AZ_BUNDLE)
		return true; /* a Bundle's entries are checked one by one */
	if (az == REST_AZ_ADMIN) {
		if (scope_set_is_admin(&g->scopes))
			return true;
		forbidden(c, "operator operations need the scope " SCOPE_ADMIN);
		return false;
	}
	v = scope_set_check(&g->scopes, check_type, perms);
	if (az == REST_AZ_SEARCH) {
		slice_t q = c->query;

		if (slice_eq_cstr(http_request_method(c->req), "POST")) {
			slice_t body = http_request_body(c->req);
			char *both = arena_printf(c->a, "%.*s&%.*s", (int)q.len, q.ptr,
						  (int)body.len, body.ptr);

			q = slice_cstr(both);
		}
		/* Included resources are of other types: only system/ or user/ scopes on * cover
		 * them (with patient/ or constrained scopes they could escape). */
		if (query_includes(c, q) &&
		    (v != SCOPE_ALLOW || scope_set_check(&g->scopes, slice_make("", 0),
							 SCOPE_R | SCOPE_S) != SCOPE_ALLOW)) {
			forbidden(c, "_include and _revinclude need system/*.rs");
			return false;
		}
	}
	if (v == SCOPE_DENY) {
		int rc = constrained_allow(c, az, type, id, perms);

		if (rc == 0)
			forbidden_scope(c, check_type, perms);
		return rc > 0;
	}
	if (v == SCOPE_ALLOW)
		return true;
	/* Only patient/ scopes allow it: hold the request to the token's patient compartment. */
	if (g->patient == NULL) {
		forbidden(c, "patient/ scopes need a patient in the token");
		return false;
	}
	switch (az) {
	case REST_AZ_READ:
	case REST_AZ_HISTORY:
		if (id.len > 0 && in_compartment(c, type, id, g->patient))
			return true;
		if (id.len == 0)
			forbidden(c, "type and system history need a system/ scope");
		else
			forbidden(c, arena_printf(c->a,
						  "%.*s/%.*s is outside the patient compartment of "
						  "this token",
						  (int)type.len, type.ptr, (int)id.len, id.ptr));
		return false;
	case REST_AZ_EVERYTHING:
		if (slice_eq_cstr(id, g->patient))
			return true;
		forbidden(c, "$everything of another patient than the token's");
		return false;
	case REST_AZ_SEARCH: {
		const char *const *params = scope_compartment_params(type);
		const char *add;

		if (type.len == 0 || params == NULL) {
			forbidden(c, type.len == 0 ? "system search needs a system/ scope"
						   : "this type is not in the patient compartment");
			return false;
		}
		/* Searches are narrowed to the compartment: the criterion is added (AND). */
		add = slice_eq_cstr(type, "Patient")
			  ? arena_printf(c->a, "_id=%s", g->patient)
			  : arena_printf(c->a, "%s=Patient/%s", params[0], g->patient);
		c->query =
		    slice_cstr(c->query.len > 0 ? arena_printf(c->a, "%.*s&%s", (int)c->query.len,
							       c->query.ptr, add)
						: add);
		return true;
	}
	default:
		forbidden(c, "writes need a system/ or user/ scope (patient/ scopes are read-only "
			     "here)");
		return false;
	}
}

int
rest_authorize_entry(rest_ctx_t *c, rest_az_t az, slice_t type, char *err, size_t cap)
{
	unsigned perms = perms_of(az, slice_make("x", 1));
	char need[160];

	if (!auth_is_enabled(c->rest->auth) ||
	    scope_set_check(&c->grant->scopes, type, perms) == SCOPE_ALLOW)
		return 0;
	scope_needed(type, perms, need, sizeof(need));
	snprintf(err, cap,
		 "the token's scopes do not allow this entry: it needs %s (patient/ scopes do not "
		 "apply to Bundle entries)",
		 need);
	return 403;
}
