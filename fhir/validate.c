/* Validation of a resource tree against the R4 base definitions: one walk over the tree with
 * the type of each object from fhir/meta.h. */
#include "config.h"

#include "fhir/validate.h"

#include <string.h>

#include "fhir/meta.h"
#include "fhir/xml.h"
#include "lib/buf.h"

#define VALIDATE_DEPTH_MAX 64

/* ---- primitive values ---- */

/* The R4 JSON schema's patterns (fhir/r4_meta.c has them) as hand-written matchers: the
 * patterns use Perl classes (\s, \S) inside brackets that POSIX regular expressions do not
 * have. A cursor over the text: each step consumes what it accepts or returns false. */
typedef struct {
	const char *p, *end;
} cur_t;

static bool
cur_digits(cur_t *c, size_t n)
{
	if ((size_t)(c->end - c->p) < n)
		return false;
	for (size_t i = 0; i < n; i++)
		if (c->p[i] < '0' || c->p[i] > '9')
			return false;
	c->p += n;
	return true;
}

/* n digits that make a number in [lo, hi] */
static bool
cur_num(cur_t *c, size_t n, int lo, int hi)
{
	const char *at = c->p;
	int v = 0;

	if (!cur_digits(c, n))
		return false;
	for (size_t i = 0; i < n; i++)
		v = v * 10 + (at[i] - '0');
	return v >= lo && v <= hi;
}

static bool
cur_char(cur_t *c, char ch)
{
	if (c->p < c->end && *c->p == ch) {
		c->p++;
		return true;
	}
	return false;
}

static bool
cur_more(const cur_t *c)
{
	return c->p < c->end;
}

/* hh:mm:ss(.f+)? */
static bool
cur_time(cur_t *c)
{
	if (!cur_num(c, 2, 0, 23) || !cur_char(c, ':') || !cur_num(c, 2, 0, 59) ||
	    !cur_char(c, ':') || !cur_num(c, 2, 0, 60))
		return false;
	if (cur_char(c, '.')) {
		if (!cur_digits(c, 1))
			return false;
		while (cur_digits(c, 1))
			;
	}
	return true;
}

/* Z, or +hh:mm / -hh:mm up to 14:00 */
static bool
cur_zone(cur_t *c)
{
	int h;

	if (cur_char(c, 'Z'))
		return true;
	if (!cur_char(c, '+') && !cur_char(c, '-'))
		return false;
	if (!cur_num(c, 2, 0, 14))
		return false;
	h = (c->p[-2] - '0') * 10 + (c->p[-1] - '0');
	return cur_char(c, ':') && cur_num(c, 2, 0, h == 14 ? 0 : 59);
}

static int
atoi4(const char *p)
{
	return (p[0] - '0') * 1000 + (p[1] - '0') * 100 + (p[2] - '0') * 10 + (p[3] - '0');
}

static int
days_in_month(int y, int m)
{
	static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

	if (m == 2 && y % 4 == 0 && (y % 100 != 0 || y % 400 == 0))
		return 29;
	return days[m - 1];
}

/* YYYY (not 0000), then -MM and -DD as far as allowed (parts: 1 to 3 at most, need: at least) */
static bool
cur_date(cur_t *c, int need, int *got)
{
	*got = 0;
	if (!cur_num(c, 4, 1, 9999))
		return false;
	*got = 1;
	if (cur_char(c, '-')) {
		if (!cur_num(c, 2, 1, 12))
			return false;
		*got = 2;
		if (cur_char(c, '-')) {
			int y = atoi4(c->p - 8), m = (c->p[-3] - '0') * 10 + (c->p[-2] - '0');

			/* the R4 pattern allows 31 days in any month; XML Schema's date does not */
			if (!cur_num(c, 2, 1, days_in_month(y, m)))
				return false;
			*got = 3;
		}
	}
	return *got >= need;
}

static bool
is_date(slice_t s)
{
	cur_t c = {s.ptr, s.ptr + s.len};
	int got;

	return cur_date(&c, 1, &got) && !cur_more(&c);
}

static bool
is_date_time(slice_t s, bool instant)
{
	cur_t c = {s.ptr, s.ptr + s.len};
	int got;

	if (!cur_date(&c, instant ? 3 : 1, &got))
		return false;
	if (!cur_more(&c))
		return !instant;
	return got == 3 && cur_char(&c, 'T') && cur_time(&c) && cur_zone(&c) && !cur_more(&c);
}

static bool
is_time(slice_t s)
{
	cur_t c = {s.ptr, s.ptr + s.len};

	return cur_time(&c) && !cur_more(&c);
}

/* -?(0|[1-9][0-9]*) within [lo, hi] (a 32-bit integer) */
static bool
is_integer(slice_t s, long long lo, long long hi)
{
	size_t i = 0;
	long long v = 0;
	bool neg = false;

	if (i < s.len && s.ptr[i] == '-')
		neg = true, i++;
	if (i == s.len || (s.ptr[i] == '0' && s.len - i > 1))
		return false;
	for (; i < s.len; i++) {
		if (s.ptr[i] < '0' || s.ptr[i] > '9')
			return false;
		v = v * 10 + (s.ptr[i] - '0');
		if (v > 2147483648LL)
			return false;
	}
	if (neg)
		v = -v;
	return v >= lo && v <= hi && !(neg && v == 0);
}

/* -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static bool
is_decimal(slice_t s)
{
	cur_t c = {s.ptr, s.ptr + s.len};

	cur_char(&c, '-');
	if (cur_char(&c, '0')) {
		/* a single 0 */
	} else if (cur_more(&c) && *c.p >= '1' && *c.p <= '9') {
		while (cur_digits(&c, 1))
			;
	} else {
		return false;
	}
	if (cur_char(&c, '.')) {
		if (!cur_digits(&c, 1))
			return false;
		while (cur_digits(&c, 1))
			;
	}
	if (cur_char(&c, 'e') || cur_char(&c, 'E')) {
		if (!cur_char(&c, '+'))
			cur_char(&c, '-');
		if (!cur_digits(&c, 1))
			return false;
		while (cur_digits(&c, 1))
			;
	}
	return !cur_more(&c);
}

static bool
is_ws(char ch)
{
	return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\v' || ch == '\f';
}

/* [^\s]+(\s[^\s]+)* */
static bool
is_code(slice_t s)
{
	if (s.len == 0 || is_ws(s.ptr[0]) || is_ws(s.ptr[s.len - 1]))
		return false;
	for (size_t i = 1; i < s.len; i++)
		if (is_ws(s.ptr[i]) && is_ws(s.ptr[i - 1]))
			return false;
	return true;
}

static bool
is_id(slice_t s)
{
	if (s.len == 0 || s.len > 64)
		return false;
	for (size_t i = 0; i < s.len; i++) {
		char ch = s.ptr[i];

		if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
		      (ch >= '0' && ch <= '9') || ch == '-' || ch == '.'))
			return false;
	}
	return true;
}

/* \S* */
static bool
is_uri(slice_t s)
{
	for (size_t i = 0; i < s.len; i++)
		if (is_ws(s.ptr[i]))
			return false;
	return true;
}

/* urn:oid:[0-2](\.(0|[1-9][0-9]*))+ */
static bool
is_oid(slice_t s)
{
	cur_t c = {s.ptr, s.ptr + s.len};
	int arcs = 0;

	if (s.len < 8 || memcmp(s.ptr, "urn:oid:", 8) != 0)
		return false;
	c.p += 8;
	if (!cur_num(&c, 1, 0, 2))
		return false;
	while (cur_char(&c, '.')) {
		if (cur_char(&c, '0')) {
			/* 0 alone */
		} else if (cur_more(&c) && *c.p >= '1' && *c.p <= '9') {
			while (cur_digits(&c, 1))
				;
		} else {
			return false;
		}
		arcs++;
	}
	return arcs > 0 && !cur_more(&c);
}

/* urn:uuid: and 8-4-4-4-12 lower-case hex digits */
static bool
is_uuid(slice_t s)
{
	static const char form[] = "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx";

	if (s.len != 9 + sizeof(form) - 1 || memcmp(s.ptr, "urn:uuid:", 9) != 0)
		return false;
	for (size_t i = 0; i < sizeof(form) - 1; i++) {
		char ch = s.ptr[9 + i];

		if (form[i] == '-' ? ch != '-'
				   : !((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f')))
			return false;
	}
	return true;
}

/* UTF-8 of characters XML can carry: no control characters but tab, CR and LF (FHIR's rule
 * for strings), none that XML 1.0 lacks (every primitive is an XML attribute value too). */
static bool
is_text(slice_t s)
{
	const unsigned char *p = (const unsigned char *)s.ptr;
	size_t i = 0, n;

	while (i < s.len) {
		if (p[i] >= 0x20 && p[i] < 0x80) {
			i++;
			continue;
		}
		if ((n = fhir_xml_char_len(p + i, s.len - i)) == 0)
			return false;
		i += n;
	}
	return true;
}

/* Base64 (RFC 4648 alphabet, = padding at the end only, whitespace between allowed, as the
 * XSD's base64Binary). */
static bool
is_base64(slice_t s)
{
	size_t n = 0, pad = 0;

	for (size_t i = 0; i < s.len; i++) {
		char ch = s.ptr[i];

		if (is_ws(ch))
			continue;
		if (ch == '=') {
			pad++;
		} else if (pad > 0 || !((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
					(ch >= '0' && ch <= '9') || ch == '+' || ch == '/')) {
			return false;
		}
		n++;
	}
	return pad <= 2 && n % 4 == 0;
}

const char *
fhir_primitive_problem(const char *type, slice_t s)
{
	if (!is_text(s))
		return "not UTF-8, or characters XML cannot carry (control characters other than "
		       "tab, CR and LF)";
	switch (type[0]) {
	case 'b':
		if (strcmp(type, "base64Binary") == 0 && !is_base64(s))
			return "not base64 (A-Z a-z 0-9 + /, = padding, a multiple of 4 "
			       "characters)";
		break;
	case 'c':
		if (strcmp(type, "code") == 0 && !is_code(s))
			return "not a valid code (no leading, trailing or double whitespace)";
		if (strcmp(type, "canonical") == 0 && !is_uri(s))
			return "not a valid canonical (no whitespace)";
		break;
	case 'd':
		if (strcmp(type, "date") == 0 && !is_date(s))
			return "not a valid date (YYYY, YYYY-MM or YYYY-MM-DD)";
		if (strcmp(type, "dateTime") == 0 && !is_date_time(s, false))
			return "not a valid dateTime (YYYY, YYYY-MM, YYYY-MM-DD or "
			       "YYYY-MM-DDThh:mm:ss[.f] with Z or +hh:mm)";
		if (strcmp(type, "decimal") == 0 && !is_decimal(s))
			return "not a valid decimal";
		break;
	case 'i':
		if (strcmp(type, "id") == 0 && !is_id(s))
			return "not a valid id (1 to 64 of A-Z a-z 0-9 - .)";
		if (strcmp(type, "instant") == 0 && !is_date_time(s, true))
			return "not a valid instant (YYYY-MM-DDThh:mm:ss[.f] with Z or +hh:mm)";
		if (strcmp(type, "integer") == 0 && !is_integer(s, -2147483648LL, 2147483647LL))
			return "not a valid integer (a whole number of 32 bits)";
		break;
	case 'o':
		if (strcmp(type, "oid") == 0 && !is_oid(s))
			return "not a valid oid (urn:oid:1.2.3)";
		break;
	case 'p':
		if (strcmp(type, "positiveInt") == 0 && !is_integer(s, 1, 2147483647LL))
			return "not a valid positiveInt (1 to 2147483647)";
		break;
	case 't':
		if (strcmp(type, "time") == 0 && !is_time(s))
			return "not a valid time (hh:mm:ss[.f])";
		break;
	case 'u':
		if (strcmp(type, "unsignedInt") == 0 && !is_integer(s, 0, 2147483647LL))
			return "not a valid unsignedInt (0 to 2147483647)";
		if ((strcmp(type, "uri") == 0 || strcmp(type, "url") == 0) && !is_uri(s))
			return "not a valid uri (no whitespace)";
		if (strcmp(type, "uuid") == 0 && !is_uuid(s))
			return "not a valid uuid (urn:uuid: and lower-case 8-4-4-4-12 hex digits)";
		break;
	default:
		break;
	}
	return NULL;
}

/* ---- the walk ---- */

typedef struct {
	arena_t *a;
	unsigned flags;
	fhir_issue_t *out;
	size_t max, n;
	buf_t path;
} val_t;

static bool
val_full(const val_t *v)
{
	return v->n >= v->max;
}

static void
issue(val_t *v, fhir_issue_kind_t kind, const char *what)
{
	if (val_full(v))
		return;
	v->out[v->n].kind = kind;
	v->out[v->n].path = arena_strndup(v->a, v->path.data ? v->path.data : "", v->path.len);
	v->out[v->n].what = what;
	v->n++;
}

/* The path of a missing element name (of the current object). */
static void
issue_missing(val_t *v, const char *name, bool choice)
{
	size_t mark = v->path.len;

	buf_printf(&v->path, ".%s%s", name, choice ? "[x]" : "");
	issue(v, FHIR_ISSUE_REQUIRED, choice ? "one of the choice is required" : "required");
	v->path.len = mark;
}

static void check_object(val_t *v, const fhir_type_t *t, const fhir_node_t *obj, int depth);

/* One value (not an array) of element e of owner; the path names it. */
static void
check_value(val_t *v, const fhir_type_t *owner, const fhir_elem_t *e, const fhir_node_t *n,
	    bool companion, int depth)
{
	const fhir_type_t *et = fhir_meta_elem_type(owner, e);
	fhir_kind_t k = fhir_node_kind(n);
	const char *problem;

	if (companion) { /* `_x`: the primitive's id and extensions */
		if (k == FHIR_OBJECT)
			check_object(v, fhir_meta_type(SLICE_LIT("Element")), n, depth + 1);
		else if (k != FHIR_NULL)
			issue(v, FHIR_ISSUE_STRUCTURE, "a primitive's extension must be an object");
		return;
	}
	if (et == NULL) { /* ResourceList: any resource */
		const fhir_type_t *rt;

		if (k != FHIR_OBJECT) {
			issue(v, FHIR_ISSUE_STRUCTURE, "a resource must be an object");
			return;
		}
		rt = fhir_meta_type(fhir_resource_type(n));
		if (rt == NULL || rt->kind != FHIR_TYPE_RESOURCE)
			issue(v, FHIR_ISSUE_STRUCTURE, "unknown resourceType");
		else
			check_object(v, rt, n, depth + 1);
		return;
	}
	if (et->kind != FHIR_TYPE_PRIMITIVE) {
		if (k != FHIR_OBJECT)
			issue(v, FHIR_ISSUE_STRUCTURE, "an object is expected");
		else if (fhir_object_count(n) == 0)
			issue(v, FHIR_ISSUE_STRUCTURE,
			      "an empty object (an element needs a value or children)");
		else
			check_object(v, et, n, depth + 1);
		return;
	}
	if (k == FHIR_NULL) /* in an array with a companion */
		return;
	if (!((et->json_form == FHIR_JSON_STRING && k == FHIR_STRING) ||
	      (et->json_form == FHIR_JSON_NUMBER && k == FHIR_NUMBER) ||
	      (et->json_form == FHIR_JSON_BOOL && k == FHIR_BOOL))) {
		issue(v, FHIR_ISSUE_STRUCTURE, "wrong JSON type for a primitive");
		return;
	}
	if (k == FHIR_STRING && fhir_node_text(n).len == 0) {
		issue(v, FHIR_ISSUE_STRUCTURE, "empty string");
		return;
	}
	if (k != FHIR_BOOL && (problem = fhir_primitive_problem(et->name, fhir_node_text(n))))
		issue(v, FHIR_ISSUE_VALUE, problem);
}

/* The `_name` companion member of obj, or NULL. */
static const fhir_node_t *
companion_get(const fhir_node_t *obj, const char *name)
{
	char key[128];
	size_t len = strlen(name);

	if (len + 2 > sizeof(key))
		return NULL;
	key[0] = '_';
	memcpy(key + 1, name, len + 1);
	return fhir_object_get_cstr(obj, key);
}

/* Whether obj has element e, as a value or (a primitive) through its `_e` companion. */
static bool
has_elem(const fhir_node_t *obj, const fhir_elem_t *e)
{
	return fhir_object_get_cstr(obj, e->name) != NULL ||
	       ((e->flags & FHIR_ELEM_PRIMITIVE) && companion_get(obj, e->name) != NULL);
}

/* The required elements of t that obj lacks; a required choice once, by its base. */
static void
check_required(val_t *v, const fhir_type_t *t, const fhir_node_t *obj)
{
	for (size_t i = 0; i < t->nelems && !val_full(v); i++) {
		const fhir_elem_t *e = &t->elems[i];

		if (e->flags & FHIR_ELEM_CHOICE_REQUIRED) {
			size_t end = fhir_meta_choice_end(t, i);
			bool any = false;

			for (size_t j = i; j < end; j++)
				any = any || has_elem(obj, &t->elems[j]);
			if (!any)
				issue_missing(v, e->choice_base, true);
			i = end - 1;
		} else if ((e->flags & FHIR_ELEM_REQUIRED) && !has_elem(obj, e)) {
			issue_missing(v, e->name, false);
		}
	}
}

/* Whether a `_x` companion (or NULL) gives a primitive an id or an extension. */
static bool
companion_has_content(const fhir_node_t *x)
{
	return x != NULL && fhir_node_kind(x) == FHIR_OBJECT &&
	       (fhir_object_get_cstr(x, "id") != NULL ||
		fhir_array_len(fhir_object_get_cstr(x, "extension")) > 0);
}

/* A primitive element e of obj with its `_e` companion: each value (or item) needs a value or
 * an id or extension, and the two arrays have one length. The path names e. */
static void
check_pair(val_t *v, const fhir_node_t *obj, const fhir_elem_t *e)
{
	size_t at = v->path.len;
	const fhir_node_t *p = fhir_object_get_cstr(obj, e->name), *x = companion_get(obj, e->name);

	if (!(e->flags & FHIR_ELEM_ARRAY)) {
		if (p == NULL && !companion_has_content(x)) /* a null value is reported */
			issue(v, FHIR_ISSUE_STRUCTURE, "a primitive needs a value or extensions");
		return;
	}
	if ((p != NULL && fhir_node_kind(p) != FHIR_ARRAY) ||
	    (x != NULL && fhir_node_kind(x) != FHIR_ARRAY))
		return; /* reported as not an array */
	if (p != NULL && x != NULL && fhir_array_len(p) != fhir_array_len(x)) {
		issue(v, FHIR_ISSUE_STRUCTURE, "the value and _ companion arrays differ in length");
		return;
	}
	for (size_t i = 0; i < fhir_array_len(p != NULL ? p : x) && !val_full(v); i++) {
		const fhir_node_t *pi = fhir_array_at(p, i);

		if ((pi == NULL || fhir_node_kind(pi) == FHIR_NULL) &&
		    !companion_has_content(fhir_array_at(x, i))) {
			v->path.len = at;
			buf_printf(&v->path, "[%zu]", i);
			issue(v, FHIR_ISSUE_STRUCTURE, "a primitive needs a value or extensions");
		}
	}
	v->path.len = at;
}

static void
check_object(val_t *v, const fhir_type_t *t, const fhir_node_t *obj, int depth)
{
	size_t mark = v->path.len;

	if (depth > VALIDATE_DEPTH_MAX) {
		issue(v, FHIR_ISSUE_STRUCTURE, "nested too deeply");
		return;
	}
	for (size_t i = 0; i < fhir_object_count(obj) && !val_full(v); i++) {
		slice_t key = fhir_object_key_at(obj, i), name = key;
		const fhir_node_t *n = fhir_object_value_at(obj, i);
		bool companion = key.len > 1 && key.ptr[0] == '_';
		const fhir_elem_t *e;

		v->path.len = mark;
		buf_append_byte(&v->path, '.');
		buf_append_slice(&v->path, key);
		if (t->kind == FHIR_TYPE_RESOURCE && slice_eq_cstr(key, "resourceType"))
			continue;
		if (companion)
			name = slice_make(key.ptr + 1, key.len - 1);
		e = fhir_meta_elem(t, name);
		if (e == NULL || (companion && !(e->flags & FHIR_ELEM_PRIMITIVE))) {
			issue(v, FHIR_ISSUE_STRUCTURE, "unknown element");
		} else if (fhir_node_kind(n) == FHIR_ARRAY) {
			size_t j, at = v->path.len;
			const fhir_node_t *item;

			if (!(e->flags & FHIR_ELEM_ARRAY))
				issue(v, FHIR_ISSUE_STRUCTURE,
				      "an array where one value is allowed");
			else if (fhir_array_len(n) == 0)
				issue(v, FHIR_ISSUE_STRUCTURE, "empty array");
			else
				FHIR_ARRAY_FOREACH(n, j, item) {
					v->path.len = at;
					buf_printf(&v->path, "[%zu]", j);
					check_value(v, t, e, item, companion, depth);
				}
		} else if (e->flags & FHIR_ELEM_ARRAY) {
			issue(v, FHIR_ISSUE_STRUCTURE, "an array is expected");
		} else if (fhir_node_kind(n) == FHIR_NULL) {
			issue(v, FHIR_ISSUE_STRUCTURE, "null");
		} else {
			check_value(v, t, e, n, companion, depth);
		}
		/* a primitive with its companion, once: from the value, else the companion */
		if (e != NULL && (e->flags & FHIR_ELEM_PRIMITIVE) &&
		    (!companion || fhir_object_get_cstr(obj, e->name) == NULL)) {
			v->path.len = mark;
			buf_printf(&v->path, ".%s", e->name);
			check_pair(v, obj, e);
		}
	}
	v->path.len = mark;
	if (v->flags & FHIR_VALIDATE_REQUIRED)
		check_required(v, t, obj);
}

size_t
fhir_validate(arena_t *a, const fhir_node_t *res, unsigned flags, fhir_issue_t *out, size_t max)
{
	val_t v = {.a = a, .flags = flags, .out = out, .max = max, .path = BUF_INIT};
	const fhir_type_t *t;

	if (max == 0)
		return 0;
	if (res == NULL || fhir_node_kind(res) != FHIR_OBJECT) {
		issue(&v, FHIR_ISSUE_STRUCTURE, "a resource must be a JSON object");
		return v.n;
	}
	t = fhir_meta_type(fhir_resource_type(res));
	if (t == NULL || t->kind != FHIR_TYPE_RESOURCE) {
		issue(&v, FHIR_ISSUE_STRUCTURE, "unknown or missing resourceType");
		return v.n;
	}
	buf_append_cstr(&v.path, t->name);
	check_object(&v, t, res, 0);
	buf_free(&v.path);
	return v.n;
}
