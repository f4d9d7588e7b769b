/* The FHIR R4 REST API: routing, content negotiation, OperationOutcomes, and the read side
 * (read, vread, history, search, capabilities, $everything) in short read transactions. The
 * writes live in rest_write.c, the resource checks and JSON Patch in rest_check.c. */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "fhir/json.h"
#include "fhir/meta.h"
#include "fhir/search.h"
#include "fhir/xml.h"
#include "gateway/rest_int.h"
#include "gateway/search.h"
#include "lib/err.h"
#include "lib/log.h"
#include "lib/timeutil.h"
#include "lib/xalloc.h"

/* ---- small helpers ---- */

char *
rest_cstr(arena_t *a, slice_t s)
{
	return arena_strndup(a, s.ptr != NULL ? s.ptr : "", s.len);
}

static fhir_node_t *
str_node(arena_t *a, const char *s)
{
	return fhir_string_new(a, slice_cstr(s));
}

const char *
rest_etag(arena_t *a, uint32_t version)
{
	return arena_printf(a, "W/\"%u\"", version);
}

const char *
rest_http_date(arena_t *a, uint64_t ns)
{
	char *s = arena_alloc(a, 40);

	http_date_format((time_t)(ns / 1000000000u), s, 40);
	return s;
}

static int64_t
days_from_civil(int64_t y, unsigned m, unsigned d)
{
	int64_t era;
	unsigned yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = (unsigned)(y - era * 400);
	doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

static bool
digits(slice_t s, size_t at, size_t n, unsigned *out)
{
	unsigned v = 0;

	if (at + n > s.len)
		return false;
	for (size_t i = at; i < at + n; i++) {
		if (s.ptr[i] < '0' || s.ptr[i] > '9')
			return false;
		v = v * 10 + (unsigned)(s.ptr[i] - '0');
	}
	*out = v;
	return true;
}

bool
rest_parse_instant(slice_t s, uint64_t *ns)
{
	unsigned y, mo = 1, d = 1, h = 0, mi = 0, se = 0, oh = 0, om = 0;
	uint64_t frac = 0, scale = 1000000000u;
	int64_t secs, off = 0;
	size_t i = 10;

	if (!digits(s, 0, 4, &y))
		return false;
	if (s.len > 4 && (s.ptr[4] != '-' || !digits(s, 5, 2, &mo)))
		return false;
	if (s.len > 7 && (s.ptr[7] != '-' || !digits(s, 8, 2, &d)))
		return false;
	if (s.len > 10) {
		if (s.ptr[10] != 'T' || !digits(s, 11, 2, &h) || s.len < 16 || s.ptr[13] != ':' ||
		    !digits(s, 14, 2, &mi))
			return false;
		i = 16;
		if (i < s.len && s.ptr[i] == ':') {
			if (!digits(s, 17, 2, &se))
				return false;
			i = 19;
			if (i < s.len && s.ptr[i] == '.') {
				for (i++; i < s.len && s.ptr[i] >= '0' && s.ptr[i] <= '9'; i++)
					if (scale > 1) {
						scale /= 10;
						frac += (uint64_t)(s.ptr[i] - '0') * scale;
					}
			}
		}
		if (i < s.len && s.ptr[i] == 'Z')
			i++;
		else if (i < s.len && (s.ptr[i] == '+' || s.ptr[i] == '-')) {
			if (!digits(s, i + 1, 2, &oh) || i + 3 >= s.len || s.ptr[i + 3] != ':' ||
			    !digits(s, i + 4, 2, &om))
				return false;
			off = (int64_t)(oh * 3600 + om * 60) * (s.ptr[i] == '-' ? -1 : 1);
			i += 6;
		}
		if (i != s.len)
			return false;
	} else if (s.len != 4 && s.len != 7 && s.len != 10)
		return false;
	if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || se > 60)
		return false;
	secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se - off;
	if (secs < 0)
		return false;
	*ns = (uint64_t)secs * 1000000000u + frac;
	return true;
}

/* IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT") as seconds. */
static bool
parse_http_date(slice_t s, uint64_t *secs)
{
	static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
	unsigned d, y, h, mi, se;
	const char *m;

	if (s.len != 29 || !digits(s, 5, 2, &d) || !digits(s, 12, 4, &y) || !digits(s, 17, 2, &h) ||
	    !digits(s, 20, 2, &mi) || !digits(s, 23, 2, &se))
		return false;
	m = NULL;
	for (int i = 0; i < 12; i++)
		if (memcmp(months + 3 * i, s.ptr + 8, 3) == 0)
			m = months + 3 * i;
	if (m == NULL)
		return false;
	*secs = (uint64_t)(days_from_civil(y, (unsigned)((m - months) / 3 + 1), d) * 86400 +
			   h * 3600 + mi * 60 + se);
	return true;
}

/* ---- OperationOutcome and output ---- */

fhir_node_t *
rest_outcome(arena_t *a, const char *severity, const char *code, const char *text)
{
	fhir_node_t *oo = fhir_object_new(a), *issues = fhir_array_new(a), *is = fhir_object_new(a);

	fhir_object_set_cstr(a, oo, "resourceType", str_node(a, "OperationOutcome"));
	fhir_object_set_cstr(a, is, "severity", str_node(a, severity));
	fhir_object_set_cstr(a, is, "code", str_node(a, code));
	if (text != NULL && *text != '\0')
		fhir_object_set_cstr(a, is, "diagnostics", str_node(a, text));
	fhir_array_append(a, issues, is);
	fhir_object_set_cstr(a, oo, "issue", issues);
	return oo;
}

void
rest_send(rest_ctx_t *c, int status, const fhir_node_t *res, const http_field_t *extra)
{
	http_field_t f[16];
	size_t n = 0;
	buf_t body = BUF_INIT;
	char err[256];
	bool xml = c->xml;

	if (res != NULL && xml && fhir_xml_write(res, c->pretty, &body, err, sizeof(err)) < 0) {
		/* Members the XML metadata does not know: the JSON form still says everything. */
		log_warn("rest", "XML output failed (%s): answering JSON", err);
		buf_reset(&body);
		xml = false;
	}
	if (res != NULL && !xml)
		fhir_json_write(res, c->pretty, &body);
	if (res != NULL)
		f[n++] =
		    (http_field_t){"Content-Type", xml ? "application/fhir+xml;charset=utf-8"
						       : "application/fhir+json;charset=utf-8"};
	for (size_t i = 0; extra != NULL && extra[i].name != NULL && n < 15; i++)
		f[n++] = extra[i];
	f[n] = (http_field_t){NULL, NULL};
	http_respond(c->req, status, f, buf_slice(&body));
	buf_free(&body);
}

static const char *
code_of_status(int status)
{
	switch (status) {
	case 404:
	case 410:
		return "not-found";
	case 405:
	case 406:
	case 415:
		return "not-supported";
	case 409:
	case 412:
		return "conflict";
	case 422:
		return "processing";
	case 400:
		return "invalid";
	default:
		return "exception";
	}
}

void
rest_send_error(rest_ctx_t *c, int status, const char *code, const char *fmt, ...)
{
	va_list ap;
	buf_t b = BUF_INIT;

	va_start(ap, fmt);
	buf_vprintf(&b, fmt, ap);
	va_end(ap);
	rest_send(c, status,
		  rest_outcome(c->a, "error", code != NULL ? code : code_of_status(status),
			       b.data != NULL ? b.data : ""),
		  NULL);
	buf_free(&b);
}

void
rest_error_body(int status, const char *text, const char **content_type, buf_t *body)
{
	arena_t *a = arena_new(0);

	*content_type = "application/fhir+json;charset=utf-8";
	fhir_json_write(rest_outcome(a, "error", code_of_status(status), text), false, body);
	arena_free(a);
}

void
rest_meta_set(arena_t *a, fhir_node_t *res, uint32_t version, uint64_t last_updated_ns)
{
	fhir_node_t *meta = fhir_object_get_cstr(res, "meta");
	char ts[40], v[16];

	if (meta == NULL || fhir_node_kind(meta) != FHIR_OBJECT) {
		meta = fhir_object_new(a);
		fhir_object_set_cstr(a, res, "meta", meta);
	}
	snprintf(v, sizeof(v), "%u", version);
	time_format_rfc3339(last_updated_ns, ts, sizeof(ts));
	fhir_object_set_cstr(a, meta, "versionId", str_node(a, v));
	fhir_object_set_cstr(a, meta, "lastUpdated", str_node(a, ts));
}

fhir_node_t *
rest_res_load(arena_t *a, const store_res_t *r)
{
	fhir_node_t *res;
	char err[128];

	if (fhir_json_parse(a, r->body.ptr, r->body.len, NULL, &res, err, sizeof(err)) < 0 ||
	    fhir_node_kind(res) != FHIR_OBJECT) {
		log_error("rest", "stored %.*s/%.*s does not parse: %s", (int)r->type.len,
			  r->type.ptr, (int)r->id.len, r->id.ptr, err);
		return NULL;
	}
	rest_meta_set(a, res, r->version, r->last_updated_ns);
	return res;
}

/* A top-level element of t with a minimum cardinality of 1 (its "_x" companion with it). */
static bool
is_required_elem(const fhir_type_t *t, slice_t key)
{
	const fhir_elem_t *e;

	if (key.len > 1 && key.ptr[0] == '_')
		key = slice_make(key.ptr + 1, key.len - 1);
	e = t != NULL ? fhir_meta_elem(t, key) : NULL;
	return e != NULL && (e->flags & FHIR_ELEM_REQUIRED) != 0;
}

/* Elements kept by _summary=true: the metadata has no summary flags, so this is the required
 * elements plus the ones R4 marks as summary on most resources (documented approximation). */
static bool
is_summary_elem(const fhir_type_t *t, slice_t key)
{
	static const char *const keep[] = {"id",
					   "meta",
					   "implicitRules",
					   "identifier",
					   "status",
					   "active",
					   "name",
					   "code",
					   "subject",
					   "patient",
					   "gender",
					   "birthDate",
					   "type",
					   "category",
					   "date",
					   "effectiveDateTime",
					   "effectivePeriod",
					   "issued",
					   "intent",
					   "title",
					   "url",
					   "version",
					   "period",
					   "encounter",
					   NULL};

	for (size_t i = 0; keep[i] != NULL; i++)
		if (slice_eq_cstr(key, keep[i]))
			return true;
	return is_required_elem(t, key);
}

static bool
in_elements(slice_t list, slice_t key)
{
	size_t start = 0;

	if (key.len > 1 && key.ptr[0] == '_')
		key = slice_make(key.ptr + 1, key.len - 1);
	for (size_t i = 0; i <= list.len; i++)
		if (i == list.len || list.ptr[i] == ',') {
			slice_t item = slice_trim(slice_make(list.ptr + start, i - start));

			if (slice_eq(item, key))
				return true;
			start = i + 1;
		}
	return false;
}

fhir_node_t *
rest_res_shape(rest_ctx_t *c, fhir_node_t *res)
{
	const fhir_type_t *t;
	fhir_node_t *out, *meta, *tags, *tag;

	if ((c->summary == REST_SUMMARY_FALSE || c->summary == REST_SUMMARY_COUNT) &&
	    c->elements.ptr == NULL)
		return res;
	t = fhir_meta_type(fhir_resource_type(res));
	out = fhir_object_new(c->a);
	for (size_t i = 0; i < fhir_object_count(res); i++) {
		slice_t k = fhir_object_key_at(res, i);
		bool keep;

		if (slice_eq_cstr(k, "resourceType") || slice_eq_cstr(k, "id") ||
		    slice_eq_cstr(k, "meta"))
			keep = true;
		else if (c->summary == REST_SUMMARY_TRUE)
			keep = is_summary_elem(t, k);
		else if (c->summary == REST_SUMMARY_TEXT)
			keep = slice_eq_cstr(k, "text") || is_required_elem(t, k);
		else if (c->summary == REST_SUMMARY_DATA)
			keep = !slice_eq_cstr(k, "text");
		else
			keep = in_elements(c->elements, k);
		if (keep)
			fhir_object_set(c->a, out, k,
					fhir_node_clone(c->a, fhir_object_value_at(res, i)));
	}
	if (c->summary == REST_SUMMARY_DATA)
		return out;
	/* A subset is marked so that nobody takes it for the whole resource. */
	meta = fhir_object_get_cstr(out, "meta");
	if (meta == NULL) {
		meta = fhir_object_new(c->a);
		fhir_object_set_cstr(c->a, out, "meta", meta);
	}
	tags = fhir_object_get_cstr(meta, "tag");
	if (tags == NULL || fhir_node_kind(tags) != FHIR_ARRAY) {
		tags = fhir_array_new(c->a);
		fhir_object_set_cstr(c->a, meta, "tag", tags);
	}
	tag = fhir_object_new(c->a);
	fhir_object_set_cstr(
	    c->a, tag, "system",
	    str_node(c->a, "http://terminology.hl7.org/CodeSystem/v3-ObservationValue"));
	fhir_object_set_cstr(c->a, tag, "code", str_node(c->a, "SUBSETTED"));
	fhir_array_append(c->a, tags, tag);
	return out;
}

store_txn_t *
rest_read_begin(rest_ctx_t *c)
{
	store_txn_t *t;
	int rc = store_txn_begin(c->rest->store, false, &t);

	if (rc < 0) {
		log_error("rest", "read transaction failed: %s %s", fg_strerror(rc),
			  store_last_error());
		rest_send_error(c, 500, "exception", "the store is not available");
		return NULL;
	}
	return t;
}

/* ---- content negotiation ---- */

/* 0 JSON, 1 XML, -1 neither: a media type (parameters allowed) or a _format short name. */
static int
format_of(slice_t mt, bool wildcards)
{
	size_t semi = 0;

	while (semi < mt.len && mt.ptr[semi] != ';')
		semi++;
	mt = slice_trim(slice_make(mt.ptr, semi));
	if (slice_eq_nocase(mt, SLICE_LIT("application/fhir+json")) ||
	    slice_eq_nocase(mt, SLICE_LIT("application/json")) ||
	    slice_eq_nocase(mt, SLICE_LIT("json")) || slice_eq_nocase(mt, SLICE_LIT("text/json")) ||
	    slice_eq_nocase(mt, SLICE_LIT("application/json+fhir")))
		return 0;
	if (slice_eq_nocase(mt, SLICE_LIT("application/fhir+xml")) ||
	    slice_eq_nocase(mt, SLICE_LIT("application/xml")) ||
	    slice_eq_nocase(mt, SLICE_LIT("xml")) || slice_eq_nocase(mt, SLICE_LIT("text/xml")) ||
	    slice_eq_nocase(mt, SLICE_LIT("application/xml+fhir")))
		return 1;
	if (wildcards &&
	    (slice_eq(mt, SLICE_LIT("*/*")) || slice_eq_nocase(mt, SLICE_LIT("application/*"))))
		return 0;
	return -1;
}

/* The best format of an Accept value by q, earliest first on ties; -1 when none fits. */
static int
accept_pick(slice_t accept)
{
	int best = -1;
	double bestq = 0;
	size_t start = 0;

	for (size_t i = 0; i <= accept.len; i++) {
		slice_t item, params;
		double q = 1;
		int f;
		size_t semi;

		if (i < accept.len && accept.ptr[i] != ',')
			continue;
		item = slice_make(accept.ptr + start, i - start);
		start = i + 1;
		for (semi = 0; semi < item.len && item.ptr[semi] != ';'; semi++)
			;
		params = slice_make(item.ptr + semi, item.len - semi);
		for (size_t k = 0; k + 2 < params.len; k++)
			if ((params.ptr[k] == 'q' || params.ptr[k] == 'Q') &&
			    params.ptr[k + 1] == '=') {
				char tmp[8] = {0};

				memcpy(tmp, params.ptr + k + 2,
				       params.len - k - 2 < 7 ? params.len - k - 2 : 7);
				q = strtod(tmp, NULL);
			}
		f = format_of(item, true);
		if (f >= 0 && q > bestq) {
			best = f;
			bestq = q;
		}
	}
	return best;
}

/* ---- reading ---- */

/* A resource's current version (version 0) or one version, as store_res_get/vread answer.
 * AuditEvents come from the audit trail (one version each; their key is their
 * lastUpdated); events stored before it, as ordinary resources, are still found. */
static int
res_get(store_txn_t *t, slice_t type, slice_t id, uint32_t version, store_res_t *r)
{
	store_audit_t ar;
	uint64_t key;
	int rc;

	if (slice_eq_cstr(type, "AuditEvent") && audit_id_key(id, &key)) {
		if (version > 1)
			return -FG_ENOTFOUND;
		if ((rc = store_audit_get(t, key, &ar)) < 0)
			return rc;
		*r = (store_res_t){.type = type,
				   .id = id,
				   .version = 1,
				   .last_updated_ns = key,
				   .seq = key,
				   .body = ar.body};
		return 0;
	}
	return version != 0 ? store_res_vread(t, type, id, version, r)
			    : store_res_get(t, type, id, r);
}

/* The record of a read (status 200, *r valid while t is open) or the status and outcome of why
 * there is none. */
static int
read_record(rest_ctx_t *c, store_txn_t *t, slice_t type, slice_t id, uint32_t version,
	    store_res_t *r, fhir_node_t **outcome, uint32_t *ver, uint64_t *lu)
{
	int rc = res_get(t, type, id, version, r);
	char *msg;

	if (rc == -FG_ENOTFOUND) {
		msg = version != 0
			  ? arena_printf(c->a, "version %u of %.*s/%.*s is not known", version,
					 (int)type.len, type.ptr, (int)id.len, id.ptr)
			  : arena_printf(c->a, "%.*s/%.*s is not known", (int)type.len, type.ptr,
					 (int)id.len, id.ptr);
		*outcome = rest_outcome(c->a, "error", "not-found", msg);
		return 404;
	}
	if (rc < 0) {
		*outcome = rest_outcome(c->a, "error", "exception", "store read failed");
		return 500;
	}
	*ver = r->version;
	*lu = r->last_updated_ns;
	if (r->deleted) {
		msg = arena_printf(c->a, "%.*s/%.*s was deleted (version %u)", (int)type.len,
				   type.ptr, (int)id.len, id.ptr, r->version);
		*outcome = rest_outcome(c->a, "error", "deleted", msg);
		return 410;
	}
	return 200;
}

static bool
starts(slice_t s, slice_t prefix)
{
	return s.len >= prefix.len && memcmp(s.ptr, prefix.ptr, prefix.len) == 0;
}

/* A stored resource as the response wants it. In compact JSON with no _summary or _elements
 * the stored bytes go out as they are, with meta.versionId and meta.lastUpdated spliced in
 * after the id (stored bodies are canonical: resourceType, id, then meta when there is one);
 * otherwise the body is parsed and shaped. NULL when the stored body is corrupt. */
fhir_node_t *
rest_res_output(rest_ctx_t *c, const store_res_t *r)
{
	fhir_node_t *res;

	if (!c->xml && !c->pretty && c->summary == REST_SUMMARY_FALSE && c->elements.ptr == NULL) {
		slice_t b = r->body;
		char *prefix =
		    arena_printf(c->a, "{\"resourceType\":\"%.*s\",\"id\":\"%.*s\"",
				 (int)r->type.len, r->type.ptr, (int)r->id.len, r->id.ptr);
		size_t plen = strlen(prefix);
		char ts[40];

		time_format_rfc3339(r->last_updated_ns, ts, sizeof(ts));
		if (b.len > plen + 1 && memcmp(b.ptr, prefix, plen) == 0) {
			slice_t rest = slice_make(b.ptr + plen, b.len - plen);
			static const char meta_open[] = ",\"meta\":{";
			const size_t mo = sizeof(meta_open) - 1;
			char *out = NULL;

			if (rest.len > mo && memcmp(rest.ptr, meta_open, mo) == 0) {
				slice_t in = slice_make(rest.ptr + mo, rest.len - mo);

				/* Meta's own id and extension come before versionId: parse. */
				if (!starts(in, SLICE_LIT("\"id\"")) &&
				    !starts(in, SLICE_LIT("\"extension\"")) &&
				    !starts(in, SLICE_LIT("\"versionId\"")) &&
				    !starts(in, SLICE_LIT("\"lastUpdated\"")))
					out = arena_printf(c->a,
							   "%s,\"meta\":{\"versionId\":\"%u\","
							   "\"lastUpdated\":\"%s\"%s%.*s",
							   prefix, r->version, ts,
							   in.ptr[0] == '}' ? "" : ",", (int)in.len,
							   in.ptr);
			} else if (rest.ptr[0] == ',' || rest.ptr[0] == '}') {
				out = arena_printf(
				    c->a,
				    "%s,\"meta\":{\"versionId\":\"%u\",\"lastUpdated\":\"%s\"}%.*s",
				    prefix, r->version, ts, (int)rest.len, rest.ptr);
			}
			if (out != NULL)
				return fhir_raw_new(c->a, slice_cstr(out));
		}
	}
	res = rest_res_load(c->a, r);
	return res == NULL ? NULL : rest_res_shape(c, res);
}

int
rest_read_result(rest_ctx_t *c, store_txn_t *t, slice_t type, slice_t id, uint32_t version,
		 fhir_node_t **res, fhir_node_t **outcome, uint32_t *ver, uint64_t *lu)
{
	store_res_t r;
	int status = read_record(c, t, type, id, version, &r, outcome, ver, lu);

	*res = NULL;
	if (status != 200)
		return status;
	*res = rest_res_load(c->a, &r);
	if (*res == NULL) {
		*outcome = rest_outcome(c->a, "error", "exception", "stored resource is corrupt");
		return 500;
	}
	return 200;
}

static void
do_read(rest_ctx_t *c, slice_t type, slice_t id, uint32_t version)
{
	store_txn_t *t = rest_read_begin(c);
	fhir_node_t *res = NULL, *oo = NULL;
	store_res_t r;
	uint32_t ver = 0;
	uint64_t lu = 0, since;
	int status;
	slice_t inm, ims;
	const char *etag;

	if (t == NULL)
		return;
	status = read_record(c, t, type, id, version, &r, &oo, &ver, &lu);
	/* Copied out (spliced or parsed) while the read transaction still maps the body. */
	if (status == 200 && (res = rest_res_output(c, &r)) == NULL) {
		status = 500;
		oo = rest_outcome(c->a, "error", "exception", "stored resource is corrupt");
	}
	store_txn_abort(t);
	if (status != 200) {
		http_field_t f[] = {{"ETag", ver != 0 ? rest_etag(c->a, ver) : NULL}, {NULL, NULL}};

		rest_send(c, status, oo, status == 410 ? f : NULL);
		return;
	}
	etag = rest_etag(c->a, ver);
	{
		http_field_t f[] = {
		    {"ETag", etag},
		    {"Last-Modified", rest_http_date(c->a, lu)},
		    {"Content-Location",
		     arena_printf(c->a, "%s/%.*s/%.*s/_history/%u", c->base, (int)type.len,
				  type.ptr, (int)id.len, id.ptr, ver)},
		    {NULL, NULL}};

		inm = http_request_header(c->req, "If-None-Match");
		ims = http_request_header(c->req, "If-Modified-Since");
		if (inm.ptr != NULL) {
			slice_t v = slice_trim(inm);

			if (slice_eq_cstr(v, etag) ||
			    slice_eq_cstr(v, arena_printf(c->a, "\"%u\"", ver)) ||
			    slice_eq_cstr(v, "*")) {
				rest_send(c, 304, NULL, f);
				return;
			}
		} else if (ims.ptr != NULL && parse_http_date(slice_trim(ims), &since) &&
			   lu / 1000000000u <= since) {
			rest_send(c, 304, NULL, f);
			return;
		}
		rest_send(c, 200, res, f);
	}
}

/* ---- history ---- */

typedef struct {
	rest_ctx_t *c;
	store_txn_t *t;
	fhir_node_t *entries;
	size_t n, max;
	uint64_t cursor; /* of the last entry taken */
	uint64_t since;
	/* _at: only versions that were current at some time in [at_lo, at_hi) (ns) */
	bool at;
	uint64_t at_lo, at_hi;
	bool instance;
	bool more;
} hist_t;

/* Whether version r was current at some time in h's _at period: from its own time until
 * the next version's (the current one: until now and on). */
static bool
hist_at_ok(const hist_t *h, const store_res_t *r)
{
	store_res_t next;

	if (r->last_updated_ns >= h->at_hi)
		return false;
	return store_res_vread(h->t, r->type, r->id, r->version + 1, &next) != 0 ||
	       next.last_updated_ns > h->at_lo;
}

static int
hist_cb(void *ctx, const store_res_t *r)
{
	hist_t *h = ctx;
	arena_t *a = h->c->a;
	fhir_node_t *e, *req, *resp, *res;
	const char *url;

	if (r->last_updated_ns < h->since)
		return 1; /* newest first: the rest is older still */
	if (h->at && !hist_at_ok(h, r))
		return 0;
	if (h->n == h->max) {
		h->more = true;
		return 1;
	}
	e = fhir_object_new(a);
	url =
	    arena_printf(a, "%.*s/%.*s", (int)r->type.len, r->type.ptr, (int)r->id.len, r->id.ptr);
	fhir_object_set_cstr(a, e, "fullUrl",
			     str_node(a, arena_printf(a, "%s/%s", h->c->base, url)));
	if (!r->deleted) {
		res = rest_res_output(h->c, r);
		if (res != NULL)
			fhir_object_set_cstr(a, e, "resource", res);
	}
	req = fhir_object_new(a);
	fhir_object_set_cstr(a, req, "method",
			     str_node(a, r->deleted        ? "DELETE"
					 : r->version == 1 ? "POST"
							   : "PUT"));
	fhir_object_set_cstr(
	    a, req, "url",
	    str_node(a, r->version == 1 && !r->deleted
			    ? arena_printf(a, "%.*s", (int)r->type.len, r->type.ptr)
			    : url));
	fhir_object_set_cstr(a, e, "request", req);
	resp = fhir_object_new(a);
	fhir_object_set_cstr(a, resp, "status",
			     str_node(a, r->deleted        ? "204"
					 : r->version == 1 ? "201"
							   : "200"));
	fhir_object_set_cstr(a, resp, "etag", str_node(a, rest_etag(a, r->version)));
	{
		char ts[40];

		time_format_rfc3339(r->last_updated_ns, ts, sizeof(ts));
		fhir_object_set_cstr(a, resp, "lastModified", str_node(a, ts));
	}
	fhir_object_set_cstr(a, e, "response", resp);
	fhir_array_append(a, h->entries, e);
	h->n++;
	h->cursor = h->instance ? r->version : r->seq;
	return 0;
}

static int
audit_hist_cb(void *ctx, const store_audit_t *ar)
{
	hist_t *h = ctx;
	char id[AUDIT_ID_LEN + 1];
	store_res_t r = {.type = SLICE_LIT("AuditEvent"),
			 .version = 1,
			 .last_updated_ns = ar->key,
			 .seq = ar->key,
			 .body = ar->body};

	audit_key_id(ar->key, id);
	r.id = arena_slice_dup(h->c->a, slice_cstr(id));
	return hist_cb(h, &r);
}

/* The history of AuditEvents: each has one version, created once; the type's history is the
 * trail newest first (the cursor is a key). */
static int
audit_history(hist_t *h, store_txn_t *t, slice_t id, uint64_t before)
{
	store_audit_t ar;
	uint64_t key;
	int rc;

	if (id.len == 0)
		return store_audit_foreach(t, h->since, before != 0 ? before : UINT64_MAX, true,
					   audit_hist_cb, h);
	if (!audit_id_key(id, &key) || (rc = store_audit_get(t, key, &ar)) == -FG_ENOTFOUND)
		return -FG_ENOTFOUND;
	if (rc < 0 || before == 1)
		return rc < 0 ? rc : 0;
	rc = audit_hist_cb(h, &ar);
	h->cursor = 1;
	return rc < 0 ? rc : 0;
}

static fhir_node_t *
bundle_new(rest_ctx_t *c, const char *type)
{
	fhir_node_t *b = fhir_object_new(c->a), *meta = fhir_object_new(c->a);
	char id[REST_ID_HEX + 1], ts[40];

	rest_random_id(id);
	fhir_object_set_cstr(c->a, b, "resourceType", str_node(c->a, "Bundle"));
	fhir_object_set_cstr(c->a, b, "id", str_node(c->a, id));
	time_format_rfc3339(time_now_ns(), ts, sizeof(ts));
	fhir_object_set_cstr(c->a, meta, "lastUpdated", str_node(c->a, ts));
	fhir_object_set_cstr(c->a, b, "meta", meta);
	fhir_object_set_cstr(c->a, b, "type", str_node(c->a, type));
	return b;
}

static void
link_add(rest_ctx_t *c, fhir_node_t *links, const char *rel, const char *url)
{
	fhir_node_t *l = fhir_object_new(c->a);

	fhir_object_set_cstr(c->a, l, "relation", str_node(c->a, rel));
	fhir_object_set_cstr(c->a, l, "url", str_node(c->a, url));
	fhir_array_append(c->a, links, l);
}

/* The query without the parameters this layer handles itself (raw pairs kept as sent). */
static slice_t
query_strip(arena_t *a, slice_t q, const char *const *drop)
{
	buf_t b = BUF_INIT;
	size_t start = 0;
	slice_t out;

	for (size_t i = 0; q.ptr != NULL && i <= q.len; i++) {
		slice_t pair, key;
		size_t eq = 0;
		bool skip = false;

		if (i < q.len && q.ptr[i] != '&')
			continue;
		pair = slice_make(q.ptr + start, i - start);
		start = i + 1;
		while (eq < pair.len && pair.ptr[eq] != '=')
			eq++;
		key = slice_make(pair.ptr, eq);
		for (size_t k = 0; drop[k] != NULL; k++)
			skip = skip || slice_eq_cstr(key, drop[k]);
		if (skip || pair.len == 0)
			continue;
		if (b.len > 0)
			buf_append_byte(&b, '&');
		buf_append_slice(&b, pair);
	}
	out = arena_slice_dup(a, buf_slice(&b));
	if (out.ptr == NULL)
		out = slice_make("", 0);
	buf_free(&b);
	return out;
}

/* The value of a query parameter (first occurrence), decoded; ptr NULL when absent. */
static slice_t
query_get(rest_ctx_t *c, slice_t q, const char *name)
{
	http_query_t it;
	slice_t k, v;

	http_query_init(&it, q, c->a);
	while (http_query_next(&it, &k, &v))
		if (slice_eq_cstr(k, name))
			return v;
	return SLICE_NULL;
}

/* ms since the epoch as ns, clamped to what a store time can be. */
static uint64_t
hist_ms_to_ns(int64_t ms)
{
	if (ms <= 0)
		return 0;
	return (uint64_t)ms > UINT64_MAX / 1000000u ? UINT64_MAX : (uint64_t)ms * 1000000u;
}

/* _at=[eq|ge|gt|le|lt]date: the period it names ([lo, hi) of its precision, or open on one
 * side), in ns. */
static bool
hist_at_parse(slice_t v, hist_t *h)
{
	slice_t rest;
	fhir_search_prefix_t pfx = fhir_search_prefix_split(v, &rest);
	int64_t lo, hi;

	if (!fhir_search_date_range(rest, &lo, &hi))
		return false;
	h->at = true;
	h->at_lo = hist_ms_to_ns(lo);
	h->at_hi = hist_ms_to_ns(hi);
	switch (pfx) {
	case FHIR_PFX_EQ:
		return true;
	case FHIR_PFX_GE:
		h->at_hi = UINT64_MAX;
		return true;
	case FHIR_PFX_GT:
		h->at_lo = h->at_hi;
		h->at_hi = UINT64_MAX;
		return true;
	case FHIR_PFX_LE:
		h->at_lo = 0;
		return true;
	case FHIR_PFX_LT:
		h->at_hi = h->at_lo;
		h->at_lo = 0;
		return true;
	default:
		return false;
	}
}

static void
do_history(rest_ctx_t *c, slice_t type, slice_t id)
{
	static const char *const drop[] = {"_cursor", NULL};
	hist_t h = {.c = c, .instance = id.len > 0};
	slice_t s;
	uint64_t since = 0, before = 0, count = REST_COUNT_DEFAULT, key;
	store_txn_t *t;
	fhir_node_t *b, *links;
	const char *self;
	int rc;

	s = query_get(c, c->query, "_since");
	if (s.ptr != NULL && !rest_parse_instant(s, &since)) {
		rest_send_error(c, 400, "invalid", "_since is not an instant");
		return;
	}
	s = query_get(c, c->query, "_at");
	if (s.ptr != NULL && !hist_at_parse(s, &h)) {
		rest_send_error(c, 400, "invalid",
				"_at takes a date, dateTime or instant, with eq, ge, gt, le or lt");
		return;
	}
	s = query_get(c, c->query, "_count");
	if (s.ptr != NULL && !slice_to_u64(s, &count)) {
		rest_send_error(c, 400, "invalid", "_count is not a number");
		return;
	}
	s = query_get(c, c->query, "_cursor");
	if (s.ptr != NULL && !slice_to_u64(s, &before)) {
		rest_send_error(c, 400, "invalid", "bad _cursor");
		return;
	}
	h.since = since;
	h.max = count > REST_COUNT_MAX ? REST_COUNT_MAX : count;
	h.entries = fhir_array_new(c->a);
	if ((t = rest_read_begin(c)) == NULL)
		return;
	h.t = t;
	if (slice_eq_cstr(type, "AuditEvent") && (id.len == 0 || audit_id_key(id, &key)))
		rc = audit_history(&h, t, id, before);
	else if (id.len > 0)
		rc = store_hist_foreach_instance(t, type, id, since, (uint32_t)before, hist_cb, &h);
	else if (type.len > 0)
		rc = store_hist_foreach_type(t, type, since, before, hist_cb, &h);
	else
		rc = store_hist_foreach_system(t, since, before, hist_cb, &h);
	store_txn_abort(t);
	if (rc == -FG_ENOTFOUND) {
		rest_send_error(c, 404, "not-found", "%.*s/%.*s is not known", (int)type.len,
				type.ptr, (int)id.len, id.ptr);
		return;
	}
	if (rc < 0) {
		rest_send_error(c, 500, "exception", "history failed: %s", fg_strerror(rc));
		return;
	}
	b = bundle_new(c, "history");
	links = fhir_array_new(c->a);
	s = query_strip(c->a, c->query, drop);
	self = arena_printf(c->a, "%s%s%.*s%s%.*s/_history", c->base, type.len ? "/" : "",
			    (int)type.len, type.ptr, id.len ? "/" : "", (int)id.len, id.ptr);
	link_add(c, links, "self",
		 c->query.len ? arena_printf(c->a, "%s?%.*s", self, (int)c->query.len, c->query.ptr)
			      : self);
	if (h.more)
		link_add(c, links, "next",
			 arena_printf(c->a, "%s?%.*s%s_cursor=%llu", self, (int)s.len, s.ptr,
				      s.len ? "&" : "", (unsigned long long)h.cursor));
	fhir_object_set_cstr(c->a, b, "link", links);
	if (h.n > 0)
		fhir_object_set_cstr(c->a, b, "entry", h.entries);
	rest_send(c, 200, b, NULL);
}

/* ---- search ---- */

static fhir_node_t *
search_entry(rest_ctx_t *c, store_txn_t *t, slice_t type, slice_t id, const char *mode)
{
	store_res_t r;
	fhir_node_t *e, *res, *s;

	if (res_get(t, type, id, 0, &r) < 0 || r.deleted || (res = rest_res_output(c, &r)) == NULL)
		return NULL;
	e = fhir_object_new(c->a);
	fhir_object_set_cstr(
	    c->a, e, "fullUrl",
	    str_node(c->a, arena_printf(c->a, "%s/%.*s/%.*s", c->base, (int)type.len, type.ptr,
					(int)id.len, id.ptr)));
	fhir_object_set_cstr(c->a, e, "resource", res);
	s = fhir_object_new(c->a);
	fhir_object_set_cstr(c->a, s, "mode", str_node(c->a, mode));
	fhir_object_set_cstr(c->a, e, "search", s);
	return e;
}

/* Percent-encodes a query value. */
static const char *
pct_encode(arena_t *a, slice_t v)
{
	static const char hex[] = "0123456789ABCDEF";
	buf_t b = BUF_INIT;
	const char *s;

	for (size_t i = 0; i < v.len; i++) {
		unsigned char ch = (unsigned char)v.ptr[i];

		if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
		    (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' || ch == '_' || ch == '~')
			buf_append_byte(&b, (char)ch);
		else {
			buf_append_byte(&b, '%');
			buf_append_byte(&b, hex[ch >> 4]);
			buf_append_byte(&b, hex[ch & 15]);
		}
	}
	s = rest_cstr(a, buf_slice(&b));
	buf_free(&b);
	return s;
}

static bool result_options(rest_ctx_t *c, slice_t q);
static int search_bundle(rest_ctx_t *c, store_txn_t *t, slice_t type, slice_t q, fhir_node_t **out);

int
rest_search_bundle(rest_ctx_t *c, store_txn_t *t, slice_t type, slice_t q, fhir_node_t **out)
{
	/* the query's own _summary and _elements (a Bundle entry's, not the request's) */
	rest_summary_t summary = c->summary;
	slice_t elements = c->elements;
	int status;

	if (!result_options(c, q)) {
		*out = rest_outcome(c->a, "error", "invalid", "bad _summary value");
		status = 400;
	} else {
		status = search_bundle(c, t, type, q, out);
	}
	c->summary = summary;
	c->elements = elements;
	return status;
}

static int
search_bundle(rest_ctx_t *c, store_txn_t *t, slice_t type, slice_t q, fhir_node_t **out)
{
	static const char *const drop[] = {"_format", "_pretty", NULL};
	search_opts_t opts = {
	    .strict = c->strict, .max_count = REST_COUNT_MAX, .default_count = REST_COUNT_DEFAULT};
	search_result_t *res = NULL;
	fhir_node_t *oo = NULL, *b, *links, *entries;
	slice_t sq, cur;
	const char *self;
	int rc;

	opts.base = slice_cstr(arena_printf(c->a, "%s/", c->base));
	sq = query_strip(c->a, q, drop);
	rc = search_run(t, c->a, type, sq, &opts, &res, &oo);
	if (rc < 0) {
		*out = oo != NULL
			   ? oo
			   : rest_outcome(c->a, "error", "exception",
					  arena_printf(c->a, "search failed: %s", fg_strerror(rc)));
		return oo != NULL ? 400 : 500;
	}
	b = bundle_new(c, "searchset");
	if (res->total_known)
		fhir_object_set_cstr(c->a, b, "total", fhir_int_new(c->a, (int64_t)res->total));
	entries = fhir_array_new(c->a);
	for (size_t i = 0; c->summary != REST_SUMMARY_COUNT && i < res->nhits; i++) {
		fhir_node_t *e = search_entry(c, t, res->hits[i].type, res->hits[i].id,
					      i >= res->nmatches ? "include" : "match");

		if (e != NULL)
			fhir_array_append(c->a, entries, e);
	}
	if (res->warnings != NULL) {
		fhir_node_t *e = fhir_object_new(c->a), *sm = fhir_object_new(c->a);

		fhir_object_set_cstr(c->a, e, "resource", res->warnings);
		fhir_object_set_cstr(c->a, sm, "mode", str_node(c->a, "outcome"));
		fhir_object_set_cstr(c->a, e, "search", sm);
		fhir_array_append(c->a, entries, e);
	}
	links = fhir_array_new(c->a);
	self = arena_printf(c->a, "%s%s%.*s?%.*s", c->base, type.len ? "/" : "", (int)type.len,
			    type.ptr, (int)res->self_query.len, res->self_query.ptr);
	cur = query_get(c, q, "_cursor");
	link_add(c, links, "self",
		 cur.ptr != NULL ? arena_printf(c->a, "%s&_cursor=%s", self, pct_encode(c->a, cur))
				 : self);
	if (cur.ptr != NULL)
		link_add(c, links, "first", self);
	/* _summary=count: the total, no pages to go to */
	if (res->has_prev && c->summary != REST_SUMMARY_COUNT)
		link_add(
		    c, links, "previous",
		    arena_printf(c->a, "%s&_cursor=%s", self, pct_encode(c->a, res->prev_cursor)));
	if (res->has_next && c->summary != REST_SUMMARY_COUNT)
		link_add(
		    c, links, "next",
		    arena_printf(c->a, "%s&_cursor=%s", self, pct_encode(c->a, res->next_cursor)));
	fhir_object_set_cstr(c->a, b, "link", links);
	if (fhir_array_len(entries) > 0)
		fhir_object_set_cstr(c->a, b, "entry", entries);
	*out = b;
	return 200;
}

/* Searches type (empty: the system) with the raw query q and answers the searchset. */
static void
do_search(rest_ctx_t *c, slice_t type, slice_t q)
{
	store_txn_t *t;
	fhir_node_t *b;
	int status;

	if ((t = rest_read_begin(c)) == NULL)
		return;
	status = rest_search_bundle(c, t, type, q, &b);
	store_txn_abort(t);
	rest_send(c, status, b, NULL);
}

/* ---- Patient/$everything ---- */

static bool
targets_patient(const fhir_searchparam_t *sp)
{
	const char *p = sp->targets;

	if (sp->type != FHIR_SP_REFERENCE)
		return false;
	if (*p == '\0')
		return strcmp(sp->code, "subject") == 0 || strcmp(sp->code, "patient") == 0;
	for (; (p = strstr(p, "Patient")) != NULL; p += 7)
		if ((p == sp->targets || p[-1] == ' ') && (p[7] == '\0' || p[7] == ' '))
			return true;
	return false;
}

/* Resources one $everything may consider (its total): each page finds them all again. */
#define EVERYTHING_MAX 100000

static int
slice_qcmp(const void *x, const void *y)
{
	const slice_t *a = x, *b = y;
	int r = memcmp(a->ptr, b->ptr, a->len < b->len ? a->len : b->len);

	return r != 0 ? r : (a->len > b->len) - (a->len < b->len);
}

/* One $everything request: its parameters, and where its page stands. Positions order the
 * Bundle: the Patient is 0, then type i of fhir_meta_resource_at is i + 1, ids in byte
 * order within a type. */
typedef struct {
	rest_ctx_t *c;
	store_txn_t *t;
	slice_t pid;
	uint64_t since; /* _since in ns (0: none) */
	bool *types;    /* _type: per position (NULL: every type) */
	size_t count;   /* page size */
	bool cursor;    /* _cursor given: the page starts after (cur_pos, cur_id) */
	size_t cur_pos;
	slice_t cur_id;
	uint64_t total;  /* resources found so far */
	size_t last_pos; /* the last entry on the page */
	slice_t last_id;
	bool more; /* resources after the page */
	fhir_node_t *entries;
} every_t;

/* Counts resource pos/id and puts it on the page when it comes after the cursor and there is
 * room. */
static void
every_add(every_t *ev, size_t pos, slice_t type, slice_t id)
{
	fhir_node_t *e;
	int r = !ev->cursor          ? 1
		: pos != ev->cur_pos ? (pos > ev->cur_pos ? 1 : -1)
				     : slice_qcmp(&id, &ev->cur_id);

	ev->total++;
	if (r <= 0)
		return;
	if (fhir_array_len(ev->entries) >= ev->count) {
		ev->more = true;
		return;
	}
	if ((e = search_entry(ev->c, ev->t, type, id, "match")) == NULL)
		return;
	fhir_array_append(ev->c->a, ev->entries, e);
	ev->last_pos = pos;
	ev->last_id = arena_slice_dup(ev->c->a, id); /* for the next link, after the read */
}

/* The ids of type tn whose reference parameters that target Patient point at the patient
 * (sorted, each once), updated at or after _since; -FG_ETOOBIG when one parameter finds more
 * than EVERYTHING_MAX or the record grows past it. */
static int
every_ids(every_t *ev, slice_t tn, slice_t **out, size_t *nout)
{
	arena_t *a = ev->c->a;
	const fhir_searchparam_t *const *sps;
	size_t nsp = fhir_meta_searchparams(tn, &sps), n = 0, cap = 0, k = 0;
	slice_t *ids = NULL;
	int rc;

	for (size_t i = 0; i < nsp; i++) {
		search_opts_t opts = {.max_count = EVERYTHING_MAX};
		search_result_t *sr;
		fhir_node_t *soo;
		const char *q;

		if (!targets_patient(sps[i]))
			continue;
		q = arena_printf(a, "%s=Patient/%.*s&_count=%d&_total=none", sps[i]->code,
				 (int)ev->pid.len, ev->pid.ptr, EVERYTHING_MAX);
		rc = search_run(ev->t, a, tn, slice_cstr(q), &opts, &sr, &soo);
		if (rc == -FG_EINVAL) /* a parameter the search cannot run: it finds nothing */
			continue;
		if (rc < 0)
			return rc;
		if (sr->has_next)
			return -FG_ETOOBIG;
		for (size_t h = 0; h < sr->nmatches; h++) {
			ids = arena_array_grow(a, ids, n, &cap, sizeof(*ids));
			ids[n++] = sr->hits[h].id;
		}
	}
	if (n > 1)
		qsort(ids, n, sizeof(*ids), slice_qcmp);
	/* Several parameters can find the same resource. */
	for (size_t i = 0; i < n; i++) {
		store_res_t r;

		if (k > 0 && slice_eq(ids[k - 1], ids[i]))
			continue;
		if (ev->since != 0 && (store_res_get(ev->t, tn, ids[i], &r) < 0 || r.deleted ||
				       r.last_updated_ns < ev->since))
			continue;
		ids[k++] = ids[i];
	}
	if (ev->total + k > EVERYTHING_MAX)
		return -FG_ETOOBIG;
	*out = ids;
	*nout = k;
	return 0;
}

/* _type (repeated, comma lists): the positions it keeps; false when a type is unknown. */
static bool
every_types(every_t *ev, slice_t *bad)
{
	size_t ntypes = fhir_meta_resource_count();
	http_query_t it;
	slice_t k, v;

	http_query_init(&it, ev->c->query, ev->c->a);
	while (http_query_next(&it, &k, &v)) {
		size_t start = 0;

		if (!slice_eq_cstr(k, "_type"))
			continue;
		if (ev->types == NULL)
			ev->types = arena_zalloc(ev->c->a, ntypes + 1);
		for (size_t i = 0; i <= v.len; i++) {
			slice_t name;
			const fhir_type_t *rt;

			if (i < v.len && v.ptr[i] != ',')
				continue;
			name = slice_trim(slice_make(v.ptr + start, i - start));
			start = i + 1;
			rt = fhir_meta_type(name);
			if (rt == NULL || rt->kind != FHIR_TYPE_RESOURCE) {
				*bad = name;
				return false;
			}
			if (slice_eq_cstr(name, "Patient"))
				ev->types[0] = true;
			for (size_t p = 0; p < ntypes; p++)
				if (fhir_meta_resource_at(p) == rt)
					ev->types[p + 1] = true;
		}
	}
	return true;
}

/* _cursor "<position>_<id>" (ids have no '_'); false when it is not one. */
static bool
every_cursor(every_t *ev, slice_t v)
{
	const char *us = memchr(v.ptr, '_', v.len);
	uint64_t pos;

	if (us == NULL || !slice_to_u64(slice_make(v.ptr, (size_t)(us - v.ptr)), &pos) ||
	    pos > fhir_meta_resource_count())
		return false;
	ev->cursor = true;
	ev->cur_pos = (size_t)pos;
	ev->cur_id = slice_make(us + 1, v.len - (size_t)(us - v.ptr) - 1);
	return rest_id_is_valid(ev->cur_id);
}

/* Patient/id/$everything: the Patient, then every resource of a type whose reference search
 * parameters that target Patient point at it, by type and id. _since, _type, _count and
 * _cursor as in docs/rest-api.md; start and end (care dates) are checked and ignored. */
static void
do_everything(rest_ctx_t *c, slice_t id)
{
	static const char *const drop[] = {"_cursor", NULL};
	every_t ev = {.c = c, .pid = id, .count = REST_BUNDLE_MAX};
	static const char *const dates[] = {"start", "end"};
	fhir_node_t *res, *oo, *b, *links;
	uint32_t ver;
	uint64_t lu, n;
	int64_t lo, hi;
	slice_t v, bad = SLICE_NULL;
	const char *self;
	int status, rc = 0;

	v = query_get(c, c->query, "_since");
	if (v.ptr != NULL && !rest_parse_instant(v, &ev.since)) {
		rest_send_error(c, 400, "invalid", "_since is not an instant");
		return;
	}
	for (size_t i = 0; i < 2; i++) {
		v = query_get(c, c->query, dates[i]);
		if (v.ptr != NULL && !fhir_search_date_range(v, &lo, &hi)) {
			rest_send_error(c, 400, "invalid", "%s is not a date", dates[i]);
			return;
		}
	}
	if (!every_types(&ev, &bad)) {
		rest_send_error(c, 400, "invalid", "_type: '%.*s' is not a resource type",
				(int)(bad.len > 64 ? 64 : bad.len), bad.ptr);
		return;
	}
	v = query_get(c, c->query, "_count");
	if (v.ptr != NULL) {
		if (!slice_to_u64(v, &n)) {
			rest_send_error(c, 400, "invalid", "_count is not a number");
			return;
		}
		ev.count = n > REST_COUNT_MAX ? REST_COUNT_MAX : (size_t)n;
	}
	if (c->summary == REST_SUMMARY_COUNT)
		ev.count = 0;
	v = query_get(c, c->query, "_cursor");
	if (v.ptr != NULL && !every_cursor(&ev, v)) {
		rest_send_error(c, 400, "invalid", "bad _cursor");
		return;
	}
	if ((ev.t = rest_read_begin(c)) == NULL)
		return;
	status = rest_read_result(c, ev.t, SLICE_LIT("Patient"), id, 0, &res, &oo, &ver, &lu);
	if (status != 200) {
		store_txn_abort(ev.t);
		rest_send(c, status, oo, NULL);
		return;
	}
	ev.entries = fhir_array_new(c->a);
	if ((ev.types == NULL || ev.types[0]) && lu >= ev.since)
		every_add(&ev, 0, SLICE_LIT("Patient"), id);
	for (size_t i = 0; rc == 0 && i < fhir_meta_resource_count(); i++) {
		const fhir_type_t *rt = fhir_meta_resource_at(i);
		slice_t tn = slice_cstr(rt->name), *ids = NULL;
		size_t nids = 0;

		/* The audit trail is about the patient's record, not part of it (and reading it
		 * needs its own permission). */
		if ((ev.types != NULL && !ev.types[i + 1]) || strcmp(rt->name, "Patient") == 0 ||
		    strcmp(rt->name, "AuditEvent") == 0 || store_res_count(ev.t, tn, &n) < 0 ||
		    n == 0)
			continue;
		if ((rc = every_ids(&ev, tn, &ids, &nids)) == 0)
			for (size_t k = 0; k < nids; k++)
				every_add(&ev, i + 1, tn, ids[k]);
	}
	store_txn_abort(ev.t);
	if (rc == -FG_ETOOBIG) {
		rest_send_error(c, 422, "too-costly",
				"the record has more than %d resources: narrow it with _type or "
				"_since",
				EVERYTHING_MAX);
		return;
	}
	if (rc < 0) {
		rest_send_error(c, 500, "exception", "$everything failed: %s", fg_strerror(rc));
		return;
	}
	b = bundle_new(c, "searchset");
	fhir_object_set_cstr(c->a, b, "total", fhir_int_new(c->a, (int64_t)ev.total));
	links = fhir_array_new(c->a);
	v = query_strip(c->a, c->query, drop);
	self = arena_printf(c->a, "%s/Patient/%.*s/$everything", c->base, (int)id.len, id.ptr);
	link_add(c, links, "self",
		 c->query.len ? arena_printf(c->a, "%s?%.*s", self, (int)c->query.len, c->query.ptr)
			      : self);
	if (ev.cursor)
		link_add(c, links, "first",
			 v.len ? arena_printf(c->a, "%s?%.*s", self, (int)v.len, v.ptr) : self);
	/* _count=0: the total, no pages to go to */
	if (ev.more && fhir_array_len(ev.entries) > 0)
		link_add(c, links, "next",
			 arena_printf(c->a, "%s?%.*s%s_cursor=%zu_%.*s", self, (int)v.len, v.ptr,
				      v.len ? "&" : "", ev.last_pos, (int)ev.last_id.len,
				      ev.last_id.ptr));
	fhir_object_set_cstr(c->a, b, "link", links);
	if (fhir_array_len(ev.entries) > 0)
		fhir_object_set_cstr(c->a, b, "entry", ev.entries);
	rest_send(c, 200, b, NULL);
}

/* ---- capabilities ---- */

static void
interactions_add(arena_t *a, fhir_node_t *obj, const char *const *codes)
{
	fhir_node_t *arr = fhir_array_new(a);

	for (size_t i = 0; codes[i] != NULL; i++) {
		fhir_node_t *it = fhir_object_new(a);

		fhir_object_set_cstr(a, it, "code", str_node(a, codes[i]));
		fhir_array_append(a, arr, it);
	}
	fhir_object_set_cstr(a, obj, "interaction", arr);
}

static const char *
sp_type_name(fhir_sp_type_t t)
{
	static const char *const names[] = {"number",   "date",      "string",
					    "token",    "reference", "composite",
					    "quantity", "uri",       "special"};

	return names[t];
}

/* rest.security: SMART on FHIR, pointing at the discovery document. */
static void
capability_security(arena_t *a, fhir_node_t *rest)
{
	fhir_node_t *sec = fhir_object_new(a), *svc = fhir_array_new(a), *cc = fhir_object_new(a),
		    *codings = fhir_array_new(a), *coding = fhir_object_new(a);

	fhir_object_set_cstr(
	    a, coding, "system",
	    str_node(a, "http://terminology.hl7.org/CodeSystem/restful-security-service"));
	fhir_object_set_cstr(a, coding, "code", str_node(a, "SMART-on-FHIR"));
	fhir_array_append(a, codings, coding);
	fhir_object_set_cstr(a, cc, "coding", codings);
	fhir_object_set_cstr(a, cc, "text", str_node(a, "OAuth2 using SMART-on-FHIR profile"));
	fhir_array_append(a, svc, cc);
	fhir_object_set_cstr(a, sec, "cors", fhir_bool_new(a, false));
	fhir_object_set_cstr(a, sec, "service", svc);
	fhir_object_set_cstr(a, sec, "description",
			     str_node(a,
				      "SMART Backend Services (client_credentials with a "
				      "private_key_jwt assertion, RS384 or ES384); token endpoint "
				      "and scopes in /fhir/.well-known/smart-configuration"));
	fhir_object_set_cstr(a, rest, "security", sec);
}

/* Appends to ops the operation name defined by http://hl7.org/fhir/OperationDefinition/def. */
static void
operation_add(arena_t *a, fhir_node_t *ops, const char *name, const char *def)
{
	fhir_node_t *op = fhir_object_new(a);
	char url[128];

	snprintf(url, sizeof(url), "http://hl7.org/fhir/OperationDefinition/%s", def);
	fhir_object_set_cstr(a, op, "name", str_node(a, name));
	fhir_object_set_cstr(a, op, "definition", str_node(a, url));
	fhir_array_append(a, ops, op);
}

static fhir_node_t *
capability_build(arena_t *a, bool secured)
{
	static const char *const type_ia[] = {
	    "read",         "vread",  "update",      "patch", "delete", "history-instance",
	    "history-type", "create", "search-type", NULL};
	/* The audit trail is append-only and written by the server (audit_read_only). */
	static const char *const audit_ia[] = {"read",         "vread",       "history-instance",
					       "history-type", "search-type", NULL};
	static const char *const sys_ia[] = {"transaction", "batch", "history-system",
					     "search-system", NULL};
	fhir_node_t *cs = fhir_object_new(a), *rest = fhir_object_new(a),
		    *rests = fhir_array_new(a);
	fhir_node_t *fmts = fhir_array_new(a), *resources = fhir_array_new(a), *sw;
	char ts[40];

	time_format_rfc3339(time_now_ns(), ts, sizeof(ts));
	fhir_object_set_cstr(a, cs, "resourceType", str_node(a, "CapabilityStatement"));
	fhir_object_set_cstr(a, cs, "status", str_node(a, "active"));
	fhir_object_set_cstr(a, cs, "date", str_node(a, ts));
	fhir_object_set_cstr(a, cs, "kind", str_node(a, "instance"));
	sw = fhir_object_new(a);
	fhir_object_set_cstr(a, sw, "name", str_node(a, "fhirgate"));
	fhir_object_set_cstr(a, sw, "version", str_node(a, PACKAGE_VERSION));
	fhir_object_set_cstr(a, cs, "software", sw);
	fhir_object_set_cstr(a, cs, "fhirVersion", str_node(a, "4.0.1"));
	fhir_array_append(a, fmts, str_node(a, "application/fhir+json"));
	fhir_array_append(a, fmts, str_node(a, "application/fhir+xml"));
	fhir_object_set_cstr(a, cs, "format", fmts);
	{
		fhir_node_t *pf = fhir_array_new(a);

		/* JSON Patch, and FHIRPath Patch in either resource format */
		fhir_array_append(a, pf, str_node(a, "application/json-patch+json"));
		fhir_array_append(a, pf, str_node(a, "application/fhir+json"));
		fhir_array_append(a, pf, str_node(a, "application/fhir+xml"));
		fhir_object_set_cstr(a, cs, "patchFormat", pf);
	}
	fhir_object_set_cstr(a, rest, "mode", str_node(a, "server"));
	if (secured)
		capability_security(a, rest);
	for (size_t i = 0; i < fhir_meta_resource_count(); i++) {
		const fhir_type_t *rt = fhir_meta_resource_at(i);
		fhir_node_t *r = fhir_object_new(a), *sps = fhir_array_new(a);
		const fhir_searchparam_t *const *list;
		size_t n = fhir_meta_searchparams(slice_cstr(rt->name), &list);

		fhir_object_set_cstr(a, r, "type", str_node(a, rt->name));
		if (strcmp(rt->name, "AuditEvent") == 0) {
			interactions_add(a, r, audit_ia);
			fhir_object_set_cstr(a, r, "versioning", str_node(a, "versioned"));
			fhir_object_set_cstr(a, r, "readHistory", fhir_bool_new(a, true));
		} else {
			interactions_add(a, r, type_ia);
			fhir_object_set_cstr(a, r, "versioning", str_node(a, "versioned-update"));
			fhir_object_set_cstr(a, r, "readHistory", fhir_bool_new(a, true));
			fhir_object_set_cstr(a, r, "updateCreate", fhir_bool_new(a, true));
			fhir_object_set_cstr(a, r, "conditionalCreate", fhir_bool_new(a, true));
			fhir_object_set_cstr(a, r, "conditionalRead", str_node(a, "full-support"));
			fhir_object_set_cstr(a, r, "conditionalUpdate", fhir_bool_new(a, true));
			fhir_object_set_cstr(a, r, "conditionalDelete", str_node(a, "single"));
		}
		for (size_t k = 0; k < n; k++) {
			fhir_node_t *sp = fhir_object_new(a);

			/* only what a search answers (search_run ignores the others with a warning)
			 */
			if (list[k]->type == FHIR_SP_SPECIAL ||
			    !fhir_search_param_is_supported(list[k]))
				continue;
			fhir_object_set_cstr(a, sp, "name", str_node(a, list[k]->code));
			if (list[k]->url != NULL && *list[k]->url != '\0')
				fhir_object_set_cstr(a, sp, "definition",
						     str_node(a, list[k]->url));
			fhir_object_set_cstr(a, sp, "type",
					     str_node(a, sp_type_name(list[k]->type)));
			fhir_array_append(a, sps, sp);
		}
		if (fhir_array_len(sps) > 0)
			fhir_object_set_cstr(a, r, "searchParam", sps);
		{
			fhir_node_t *ops = fhir_array_new(a);

			/* (not AuditEvent: audit_read_only answers its POSTs) */
			if (strcmp(rt->name, "AuditEvent") != 0)
				operation_add(a, ops, "validate", "Resource-validate");
			if (strcmp(rt->name, "Patient") == 0)
				operation_add(a, ops, "everything", "Patient-everything");
			if (fhir_array_len(ops) > 0)
				fhir_object_set_cstr(a, r, "operation", ops);
		}
		fhir_array_append(a, resources, r);
	}
	fhir_object_set_cstr(a, rest, "resource", resources);
	interactions_add(a, rest, sys_ia);
	fhir_array_append(a, rests, rest);
	fhir_object_set_cstr(a, cs, "rest", rests);
	return cs;
}

/* ---- the handler ---- */

int
rest_new(store_t *store, writer_t *writer, maps_t *maps, const config_t *cfg, rest_t **out,
	 char **errmsg)
{
	rest_t *r = xcalloc(1, sizeof(*r));
	arena_t *a;
	fhir_node_t *cs;
	char err[256];
	int rc = auth_new(cfg, &r->auth, errmsg);

	if (rc < 0) {
		auth_free(r->auth);
		free(r);
		return rc;
	}
	a = arena_new(0);
	cs = capability_build(a, auth_is_enabled(r->auth));
	r->store = store;
	r->writer = writer;
	r->maps = maps;
	r->audit = cfg->audit_rest;
	r->consistent_reads = cfg->rest_consistent_reads == CONF_ON;
	r->limits.max_message_bytes = cfg->hl7_max_message_bytes;
	r->limits.max_segments = cfg->hl7_max_segments;
	r->limits.max_field_bytes = cfg->hl7_max_field_bytes;
	for (int pretty = 0; pretty < 2; pretty++) {
		fhir_json_write(cs, pretty, &r->capability[0][pretty]);
		if (fhir_xml_write(cs, pretty, &r->capability[1][pretty], err, sizeof(err)) < 0)
			log_warn("rest", "CapabilityStatement as XML: %s", err);
	}
	arena_free(a);
	*out = r;
	return 0;
}

store_t *
rest_store(rest_t *r)
{
	return r->store;
}

struct auth *
rest_auth(rest_t *r)
{
	return r->auth;
}

int
rest_reload(rest_t *r, const config_t *cfg, char **errmsg)
{
	return auth_clients_reload(r->auth, cfg->auth_clients, errmsg);
}

void
rest_free(rest_t *r)
{
	if (r == NULL)
		return;
	for (int i = 0; i < 4; i++)
		buf_free(&r->capability[i / 2][i % 2]);
	auth_free(r->auth);
	free(r);
}

static void
done_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	rest_jobs_finish(arg);
}

rest_thread_t *
rest_thread_new(rest_t *r, struct event_base *base)
{
	rest_thread_t *t = xcalloc(1, sizeof(*t));

	t->rest = r;
	t->base = base;
	t->done_ev = event_new(base, -1, 0, done_cb, t);
	pthread_mutex_init(&t->done_mu, NULL);
	return t;
}

void
rest_thread_free(rest_thread_t *t)
{
	if (t == NULL)
		return;
	rest_jobs_drop(t);
	event_free(t->done_ev);
	pthread_mutex_destroy(&t->done_mu);
	free(t);
}

static void
send_capability(rest_ctx_t *c)
{
	const buf_t *b =
	    &c->rest->capability[c->xml && c->rest->capability[1][0].len > 0][c->pretty];
	http_field_t f[] = {{"Content-Type", b == &c->rest->capability[1][c->pretty]
						 ? "application/fhir+xml;charset=utf-8"
						 : "application/fhir+json;charset=utf-8"},
			    {NULL, NULL}};

	http_respond(c->req, 200, f, buf_slice(b));
}

/* Splits the path below /fhir into decoded segments; false when it is not under /fhir. */
static bool
path_split(rest_ctx_t *c, slice_t path, slice_t *seg, size_t *nseg, size_t max)
{
	size_t start;

	if (path.len < 5 || memcmp(path.ptr, "/fhir", 5) != 0 ||
	    (path.len > 5 && path.ptr[5] != '/'))
		return false;
	*nseg = 0;
	start = 6;
	for (size_t i = 6; i <= path.len; i++) {
		slice_t s;

		if (i < path.len && path.ptr[i] != '/')
			continue;
		if (i > start) {
			if (*nseg == max ||
			    http_pct_decode(c->a, slice_make(path.ptr + start, i - start), false,
					    &s) < 0)
				return false;
			seg[(*nseg)++] = s;
		}
		start = i + 1;
	}
	return true;
}

/* _summary and _elements of query q into c; false when _summary is not a valid value. */
static bool
result_options(rest_ctx_t *c, slice_t q)
{
	slice_t v = query_get(c, q, "_summary");

	c->summary = REST_SUMMARY_FALSE;
	if (v.ptr != NULL) {
		if (slice_eq_cstr(v, "true"))
			c->summary = REST_SUMMARY_TRUE;
		else if (slice_eq_cstr(v, "text"))
			c->summary = REST_SUMMARY_TEXT;
		else if (slice_eq_cstr(v, "data"))
			c->summary = REST_SUMMARY_DATA;
		else if (slice_eq_cstr(v, "count"))
			c->summary = REST_SUMMARY_COUNT;
		else if (!slice_eq_cstr(v, "false"))
			return false;
	}
	c->elements = query_get(c, q, "_elements");
	return true;
}

static bool
ctx_options(rest_ctx_t *c)
{
	slice_t v, accept, prefer;
	int f = 0;

	v = query_get(c, c->query, "_format");
	accept = http_request_header(c->req, "Accept");
	if (v.ptr != NULL)
		f = format_of(v, false);
	else if (accept.ptr != NULL && slice_trim(accept).len > 0)
		f = accept_pick(accept);
	if (f < 0) {
		rest_send_error(c, 406, "not-supported",
				"no acceptable format: fhirgate answers application/fhir+json and "
				"application/fhir+xml");
		return false;
	}
	c->xml = f == 1;
	v = query_get(c, c->query, "_pretty");
	c->pretty = v.ptr != NULL && slice_eq_cstr(v, "true");
	if (!result_options(c, c->query)) {
		rest_send_error(c, 400, "invalid", "bad _summary value");
		return false;
	}
	prefer = http_request_header(c->req, "Prefer");
	if (prefer.ptr != NULL) {
		char *p = rest_cstr(c->a, prefer);

		if (strstr(p, "return=minimal") != NULL)
			c->prefer = REST_PREFER_MINIMAL;
		else if (strstr(p, "return=OperationOutcome") != NULL)
			c->prefer = REST_PREFER_OUTCOME;
		c->strict = strstr(p, "handling=strict") != NULL;
	}
	v = http_request_header(c->req, "Host");
	c->base = v.ptr != NULL && v.len > 0
		      ? arena_printf(c->a, "http://%.*s/fhir", (int)v.len, v.ptr)
		      : "http://localhost/fhir";
	return true;
}

static bool
method_is(slice_t m, const char *name)
{
	return slice_eq_cstr(m, name);
}

static bool
is_type(rest_ctx_t *c, slice_t type)
{
	if (fhir_meta_is_resource(type))
		return true;
	rest_send_error(c, 404, "not-supported", "unknown resource type '%.*s'",
			(int)(type.len > 64 ? 64 : type.len), type.ptr);
	return false;
}

static void
not_allowed(rest_ctx_t *c, const char *allow)
{
	http_field_t f[] = {{"Allow", allow}, {NULL, NULL}};

	rest_send(c, 405,
		  rest_outcome(c->a, "error", "not-supported", "method not allowed on this URL"),
		  f);
}

/* The audit trail is append-only: the server writes it, no client can. */
static void
audit_read_only(rest_ctx_t *c)
{
	http_field_t f[] = {{"Allow", "GET"}, {NULL, NULL}};

	rest_send(c, 405,
		  rest_outcome(c->a, "error", "not-supported",
			       "AuditEvents are written by the server only (the audit trail is "
			       "append-only): they cannot be created, updated, patched or deleted"),
		  f);
}

/* POST .../_search: the form body is the query (with the URL's query, if any). */
static void
do_search_post(rest_ctx_t *c, slice_t type)
{
	slice_t ct = http_request_header(c->req, "Content-Type"), body = http_request_body(c->req);
	buf_t b = BUF_INIT;
	slice_t q;

	if (body.len > 0 &&
	    (ct.ptr == NULL || !slice_eq_nocase(slice_make(ct.ptr, ct.len < 33 ? ct.len : 33),
						SLICE_LIT("application/x-www-form-urlencoded")))) {
		rest_send_error(c, 415, "not-supported",
				"_search takes application/x-www-form-urlencoded");
		return;
	}
	buf_append_slice(&b, c->query.ptr ? c->query : slice_make("", 0));
	if (b.len > 0 && body.len > 0)
		buf_append_byte(&b, '&');
	buf_append_slice(&b, body);
	q = arena_slice_dup(c->a, buf_slice(&b));
	buf_free(&b);
	/* _summary, _elements, _format, _pretty in the body count as in the URL */
	c->query = q.ptr != NULL ? q : slice_make("", 0);
	if (!ctx_options(c))
		return;
	do_search(c, type, c->query);
}

/* What a request is, from its method and path segments: the metrics' route label, and the
 * restful-interaction code and action the audit trail records. */
static rest_kind_t
kind_of(slice_t m, const slice_t *seg, size_t n)
{
	slice_t last = n > 0 ? seg[n - 1] : slice_make("", 0);
	bool get = method_is(m, "GET");

	if (n == 0)
		return get ? (rest_kind_t){METRICS_ROUTE_SEARCH, "search-system", 'E'}
			   : (rest_kind_t){METRICS_ROUTE_BUNDLE, "transaction", 'E'};
	if (n == 1 && slice_eq_cstr(seg[0], "metadata"))
		return (rest_kind_t){METRICS_ROUTE_METADATA, "capabilities", 'R'};
	if (last.len > 0 && last.ptr[0] == '$')
		return (rest_kind_t){METRICS_ROUTE_OPERATION, "operation", 'E'};
	if (slice_eq_cstr(last, "_search"))
		return (rest_kind_t){METRICS_ROUTE_SEARCH, n == 1 ? "search-system" : "search-type",
				     'E'};
	if (slice_eq_cstr(last, "_history"))
		return (rest_kind_t){METRICS_ROUTE_HISTORY,
				     n == 1   ? "history-system"
				     : n == 2 ? "history-type"
					      : "history-instance",
				     'R'};
	if (n == 4)
		return (rest_kind_t){METRICS_ROUTE_READ, "vread", 'R'};
	if (method_is(m, "PUT"))
		return (rest_kind_t){METRICS_ROUTE_UPDATE, "update", 'U'};
	if (method_is(m, "DELETE"))
		return (rest_kind_t){METRICS_ROUTE_DELETE, "delete", 'D'};
	if (method_is(m, "PATCH"))
		return (rest_kind_t){METRICS_ROUTE_PATCH, "patch", 'U'};
	if (n == 1)
		return get ? (rest_kind_t){METRICS_ROUTE_SEARCH, "search-type", 'E'}
			   : (rest_kind_t){METRICS_ROUTE_CREATE, "create", 'C'};
	return n == 2 ? (rest_kind_t){METRICS_ROUTE_READ, "read", 'R'}
		      : (rest_kind_t){METRICS_ROUTE_OTHER, NULL, 'E'};
}

/* The answer hook: one AuditEvent per FHIR request (see gateway/audit.h). */
static void
audit_answered(http_request_t *req, int status, void *arg)
{
	rest_ctx_t *c = arg;
	audit_event_t e = {0};

	if (c->kind.interaction == NULL)
		return;
	if (c->rest->audit == CONF_AUDIT_REST_WRITES && c->kind.action != 'C' &&
	    c->kind.action != 'U' && c->kind.action != 'D' &&
	    strcmp(c->kind.interaction, "transaction") != 0 &&
	    strcmp(c->kind.interaction, "operation") != 0)
		return;
	e.time_ns = time_now_ns();
	e.peer = slice_cstr(http_request_peer(req));
	if (c->grant != NULL && c->grant->client_id != NULL)
		e.who = slice_cstr(c->grant->client_id);
	e.interaction = c->kind.interaction;
	e.action = c->kind.action;
	e.type = c->audit_type;
	e.id = c->audit_id;
	if (strncmp(c->kind.interaction, "search", 6) == 0)
		e.query = c->query;
	e.status = status;
	audit_submit(c->rest->writer, &e);
}

static void dispatch(rest_ctx_t *c, slice_t m, const slice_t *seg, size_t n);

/* A request held until the writer made the deferred puts (rest.consistent_reads). */
typedef struct {
	slice_t m, seg[6];
	size_t n;
} rest_dispatch_t;

/* An empty job that is not deferrable: the writer makes every deferred put before it. */
static int
barrier_apply(void *arg, store_txn_t *t)
{
	(void)arg;
	(void)t;
	return 0;
}

static void
barrier_finish(rest_ctx_t *c, void *arg, int rc)
{
	rest_dispatch_t *d = arg;

	/* rc < 0: the apply failed; the read still answers from what is applied. */
	(void)rc;
	dispatch(c, d->m, d->seg, d->n);
}

void
rest_handle(http_request_t *req, void *handler_ctx)
{
	rest_thread_t *th = handler_ctx;
	arena_t *a = http_request_arena(req);
	rest_ctx_t *c = arena_zalloc(a, sizeof(*c));
	slice_t m = http_request_method(req), seg[6];
	size_t n;

	c->req = req;
	c->th = th;
	c->rest = th->rest;
	c->a = a;
	c->query = http_request_query(req);
	if (c->query.ptr == NULL)
		c->query = slice_make("", 0);
	if (rest_auth_route(c) || !ctx_options(c))
		return;
	if (!path_split(c, http_request_path(req), seg, &n, 6)) {
		rest_send_error(c, 404, "not-found", "no such endpoint (the FHIR base is /fhir)");
		return;
	}
	if (method_is(m, "HEAD"))
		m = SLICE_LIT("GET");
	c->kind = kind_of(m, seg, n);
	http_request_set_route(req, c->kind.route);
	if (n >= 1 && seg[0].len > 0 && seg[0].ptr[0] >= 'A' && seg[0].ptr[0] <= 'Z')
		c->audit_type = seg[0];
	if (n >= 2 && seg[1].len > 0 && seg[1].ptr[0] != '$' && seg[1].ptr[0] != '_')
		c->audit_id = seg[1];
	if (c->rest->audit != CONF_AUDIT_REST_OFF)
		http_request_on_answer(req, audit_answered, c);
	if (n == 1 && slice_eq_cstr(seg[0], "metadata")) {
		if (method_is(m, "GET"))
			send_capability(c);
		else
			not_allowed(c, "GET");
		return;
	}
	if (!rest_authenticate(c))
		return;
	/* A read that might miss ACKed messages' resources waits for the writer to apply them. */
	if (c->rest->consistent_reads && c->kind.action != 'C' && c->kind.action != 'U' &&
	    c->kind.action != 'D' && writer_unapplied(c->rest->writer) > 0 &&
	    !writer_full(c->rest->writer)) {
		rest_dispatch_t *d = arena_zalloc(a, sizeof(*d));

		d->m = m;
		d->n = n;
		memcpy(d->seg, seg, n * sizeof(*seg));
		rest_submit_op(c, barrier_apply, barrier_finish, d);
		return;
	}
	dispatch(c, m, seg, n);
}

static void
dispatch(rest_ctx_t *c, slice_t m, const slice_t *seg, size_t n)
{
	http_request_t *req = c->req;
	uint64_t v;

	if (n == 0) {
		if (method_is(m, "POST"))
			rest_do_bundle(c);
		else if (method_is(m, "GET")) {
			if (rest_authorize(c, REST_AZ_SEARCH, slice_make("", 0), SLICE_NULL))
				do_search(c, slice_make("", 0), c->query);
		} else
			not_allowed(c, "GET, POST");
		return;
	}
	if (n == 1 &&
	    (slice_eq_cstr(seg[0], "$dead-letters") || slice_eq_cstr(seg[0], "$messages"))) {
		if (!method_is(m, "GET"))
			not_allowed(c, "GET");
		else if (!rest_authorize(c, REST_AZ_ADMIN, SLICE_NULL, SLICE_NULL))
			return;
		else if (slice_eq_cstr(seg[0], "$messages"))
			rest_do_messages(c);
		else
			rest_do_dead_letters(c);
		return;
	}
	if (n == 1 && slice_eq_cstr(seg[0], "$replay")) {
		if (!method_is(m, "POST"))
			not_allowed(c, "POST");
		else if (rest_authorize(c, REST_AZ_ADMIN, SLICE_NULL, SLICE_NULL))
			rest_do_replay(c);
		return;
	}
	if (n == 1 && slice_eq_cstr(seg[0], "_history")) {
		if (!method_is(m, "GET"))
			not_allowed(c, "GET");
		else if (rest_authorize(c, REST_AZ_HISTORY, slice_make("", 0), SLICE_NULL))
			do_history(c, slice_make("", 0), slice_make("", 0));
		return;
	}
	if (n == 1 && slice_eq_cstr(seg[0], "_search")) {
		if (!method_is(m, "POST"))
			not_allowed(c, "POST");
		else if (rest_authorize(c, REST_AZ_SEARCH, slice_make("", 0), SLICE_NULL))
			do_search_post(c, slice_make("", 0));
		return;
	}
	if (!is_type(c, seg[0]))
		return;
	if (slice_eq_cstr(seg[0], "AuditEvent") && !method_is(m, "GET") &&
	    !(n == 2 && slice_eq_cstr(seg[1], "_search") && method_is(m, "POST"))) {
		audit_read_only(c);
		return;
	}
	if (n == 1) {
		bool cond_create = http_request_header(req, "If-None-Exist").ptr != NULL;

		if (method_is(m, "GET")) {
			if (rest_authorize(c, REST_AZ_SEARCH, seg[0], SLICE_NULL))
				do_search(c, seg[0], c->query);
		} else if (method_is(m, "POST")) {
			if (rest_authorize(c, cond_create ? REST_AZ_COND_CREATE : REST_AZ_CREATE,
					   seg[0], SLICE_NULL))
				rest_do_create(c, seg[0]);
		} else if (method_is(m, "PUT")) {
			if (rest_authorize(c, REST_AZ_COND_UPDATE, seg[0], SLICE_NULL))
				rest_do_cond_update(c, seg[0]);
		} else if (method_is(m, "DELETE")) {
			if (rest_authorize(c, REST_AZ_COND_DELETE, seg[0], SLICE_NULL))
				rest_do_cond_delete(c, seg[0]);
		} else if (method_is(m, "PATCH")) {
			if (rest_authorize(c, REST_AZ_COND_UPDATE, seg[0], SLICE_NULL))
				rest_do_cond_patch(c, seg[0]);
		} else
			not_allowed(c, "GET, POST, PUT, DELETE, PATCH");
		return;
	}
	if (n == 2 && slice_eq_cstr(seg[1], "_search")) {
		if (!method_is(m, "POST"))
			not_allowed(c, "POST");
		else if (rest_authorize(c, REST_AZ_SEARCH, seg[0], SLICE_NULL))
			do_search_post(c, seg[0]);
		return;
	}
	if (n == 2 && slice_eq_cstr(seg[1], "_history")) {
		if (!method_is(m, "GET"))
			not_allowed(c, "GET");
		else if (rest_authorize(c, REST_AZ_HISTORY, seg[0], SLICE_NULL))
			do_history(c, seg[0], slice_make("", 0));
		return;
	}
	if ((n == 2 && slice_eq_cstr(seg[1], "$validate")) ||
	    (n == 3 && slice_eq_cstr(seg[2], "$validate") && rest_id_is_valid(seg[1]))) {
		if (!method_is(m, "POST"))
			not_allowed(c, "POST");
		else if (rest_authorize(c, REST_AZ_READ, seg[0], SLICE_NULL))
			rest_do_validate(c, seg[0], n == 3 ? seg[1] : SLICE_NULL);
		return;
	}
	if (!rest_id_is_valid(seg[1])) {
		rest_send_error(c, n == 2 && method_is(m, "PUT") ? 400 : 404, "invalid",
				"'%.*s' is not a valid id",
				(int)(seg[1].len > 64 ? 64 : seg[1].len), seg[1].ptr);
		return;
	}
	if (n == 2) {
		if (method_is(m, "GET")) {
			if (rest_authorize(c, REST_AZ_READ, seg[0], seg[1]))
				do_read(c, seg[0], seg[1], 0);
		} else if (method_is(m, "PUT")) {
			if (rest_authorize(c, REST_AZ_UPDATE, seg[0], seg[1]))
				rest_do_update(c, seg[0], seg[1]);
		} else if (method_is(m, "DELETE")) {
			if (rest_authorize(c, REST_AZ_DELETE, seg[0], seg[1]))
				rest_do_delete(c, seg[0], seg[1]);
		} else if (method_is(m, "PATCH")) {
			if (rest_authorize(c, REST_AZ_UPDATE, seg[0], seg[1]))
				rest_do_patch(c, seg[0], seg[1]);
		} else
			not_allowed(c, "GET, PUT, DELETE, PATCH");
		return;
	}
	if (n == 3 && slice_eq_cstr(seg[2], "_history")) {
		if (!method_is(m, "GET"))
			not_allowed(c, "GET");
		else if (rest_authorize(c, REST_AZ_HISTORY, seg[0], seg[1]))
			do_history(c, seg[0], seg[1]);
		return;
	}
	if (n == 3 && slice_eq_cstr(seg[0], "Patient") && slice_eq_cstr(seg[2], "$score")) {
		/* reads the patient's record, writes RiskAssessments */
		if (!method_is(m, "POST"))
			not_allowed(c, "POST");
		else if (rest_authorize(c, REST_AZ_EVERYTHING, seg[0], seg[1]) &&
			 rest_authorize(c, REST_AZ_UPDATE, SLICE_LIT("RiskAssessment"), SLICE_NULL))
			rest_do_score(c, seg[1]);
		return;
	}
	if (n == 3 && slice_eq_cstr(seg[0], "Patient") && slice_eq_cstr(seg[2], "$everything")) {
		if (!method_is(m, "GET"))
			not_allowed(c, "GET");
		else if (rest_authorize(c, REST_AZ_EVERYTHING, seg[0], seg[1]))
			do_everything(c, seg[1]);
		return;
	}
	if (n == 4 && slice_eq_cstr(seg[2], "_history")) {
		if (!slice_to_u64(seg[3], &v) || v == 0 || v > UINT32_MAX)
			rest_send_error(c, 404, "not-found", "no such version");
		else if (!method_is(m, "GET"))
			not_allowed(c, "GET");
		else if (rest_authorize(c, REST_AZ_READ, seg[0], seg[1]))
			do_read(c, seg[0], seg[1], (uint32_t)v);
		return;
	}
	rest_send_error(c, 404, "not-found", "no such endpoint");
}
