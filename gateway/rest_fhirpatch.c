/* FHIRPath Patch (R4 fhirpatch.html) over the resource tree: a Parameters resource whose
 * "operation" parameters add, insert, delete, replace and move elements named by a subset of
 * FHIRPath. A pure function of the REST layer, like JSON Patch in rest_check.c. */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "fhir/meta.h"
#include "gateway/rest_int.h"

#define FP_PATH_MAX  1024     /* characters in one path */
#define FP_OPS_MAX   1000     /* operations in one patch */
#define FP_DEPTH_MAX 32       /* nested value parts */
#define FP_SINGLE    SIZE_MAX /* an item that is not in an array */

/* One patch being applied: its arena and the first failure (sticky, so the steps read
 * straight down and return once it is set). */
typedef struct {
	arena_t *a;
	int status; /* 0, 400 (the patch is malformed) or 422 (it does not apply) */
	char *err;
	size_t cap;
	size_t op; /* the operation being applied */
	slice_t op_type;
} fp_t;

static void fp_fail(fp_t *p, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
fp_fail(fp_t *p, int status, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (p->status != 0)
		return;
	p->status = status;
	n = snprintf(p->err, p->cap, "operation %zu%s%.*s%s: ", p->op, p->op_type.len ? " (" : "",
		     (int)(p->op_type.len > 16 ? 16 : p->op_type.len),
		     p->op_type.ptr ? p->op_type.ptr : "", p->op_type.len ? ")" : "");
	if (n < 0 || (size_t)n >= p->cap)
		return;
	va_start(ap, fmt);
	vsnprintf(p->err + n, p->cap - (size_t)n, fmt, ap);
	va_end(ap);
}

/* At most 64 bytes of s, for messages. */
#define CLIP(s) (int)((s).len > 64 ? 64 : (s).len), (s).ptr != NULL ? (s).ptr : ""

/* ---- paths ---- */

typedef enum { LIT_STRING, LIT_NUMBER, LIT_BOOL } fp_lit_t;

/* One equality of a where(): a.b = 'literal'. */
typedef struct {
	slice_t *names;
	size_t nnames;
	fp_lit_t kind;
	slice_t text; /* unescaped; "true" or "false" for booleans */
} fp_cmp_t;

typedef enum { STEP_CHILD, STEP_INDEX, STEP_LAST, STEP_WHERE } fp_step_kind_t;

typedef struct {
	fp_step_kind_t kind;
	slice_t name;   /* STEP_CHILD */
	uint64_t index; /* STEP_INDEX */
	fp_cmp_t *cmps; /* STEP_WHERE: every one holds */
	size_t ncmps;
} fp_step_t;

typedef struct {
	fp_step_t *v;
	size_t n, cap;
} fp_path_t;

/* A parse cursor over a path. */
typedef struct {
	fp_t *p;
	slice_t s;
	size_t pos;
} fp_cur_t;

static void
cur_ws(fp_cur_t *c)
{
	while (c->pos < c->s.len && (c->s.ptr[c->pos] == ' ' || c->s.ptr[c->pos] == '\t' ||
				     c->s.ptr[c->pos] == '\r' || c->s.ptr[c->pos] == '\n'))
		c->pos++;
}

static int
cur_peek(fp_cur_t *c)
{
	cur_ws(c);
	return c->pos < c->s.len ? (unsigned char)c->s.ptr[c->pos] : -1;
}

static bool
cur_eat(fp_cur_t *c, char ch)
{
	if (cur_peek(c) != (unsigned char)ch)
		return false;
	c->pos++;
	return true;
}

static bool
is_ident_start(int ch)
{
	return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || ch == '_';
}

static bool
is_ident_char(int ch)
{
	return is_ident_start(ch) || (ch >= '0' && ch <= '9');
}

/* An identifier (or a `delimited` one); ptr NULL when there is none here. */
static slice_t
cur_ident(fp_cur_t *c)
{
	size_t start;
	int ch = cur_peek(c);

	if (ch == '`') {
		start = ++c->pos;
		while (c->pos < c->s.len && c->s.ptr[c->pos] != '`')
			c->pos++;
		if (c->pos >= c->s.len || c->pos == start)
			return SLICE_NULL;
		return slice_make(c->s.ptr + start, c->pos++ - start);
	}
	if (!is_ident_start(ch))
		return SLICE_NULL;
	start = c->pos;
	while (c->pos < c->s.len && is_ident_char((unsigned char)c->s.ptr[c->pos]))
		c->pos++;
	return slice_make(c->s.ptr + start, c->pos - start);
}

/* Something the subset does not read at the cursor: a FHIRPath construct we do not support
 * (422, named), or not FHIRPath at all (400). */
static void
cur_unexpected(fp_cur_t *c, const char *where)
{
	static const char ops[] = "|+-*/&<>=!~";
	int ch = cur_peek(c);
	size_t col = c->pos + 1;

	if (ch < 0) {
		fp_fail(c->p, 400, "path '%.*s' ends early%s", CLIP(c->s), where);
		return;
	}
	if (ch == '$' || ch == '%') {
		slice_t v;

		c->pos++;
		v = cur_ident(c);
		fp_fail(c->p, 422, "the variable %c%.*s is not supported%s", ch, CLIP(v), where);
		return;
	}
	if (strchr(ops, ch) != NULL) {
		size_t len = 1;

		if (c->pos + 1 < c->s.len && strchr(ops, c->s.ptr[c->pos + 1]) != NULL)
			len = 2;
		fp_fail(c->p, 422, "the operator '%.*s' is not supported%s", (int)len,
			c->s.ptr + c->pos, where);
		return;
	}
	if (is_ident_start(ch)) {
		slice_t w = cur_ident(c);

		fp_fail(c->p, 422, "'%.*s' is not supported%s", CLIP(w), where);
		return;
	}
	fp_fail(c->p, 400, "path syntax error at column %zu%s", col, where);
}

static fp_step_t *
path_push(fp_t *p, fp_path_t *path, fp_step_kind_t kind)
{
	fp_step_t *s;

	path->v = arena_array_grow(p->a, path->v, path->n, &path->cap, sizeof(*path->v));
	s = &path->v[path->n++];
	memset(s, 0, sizeof(*s));
	s->kind = kind;
	return s;
}

/* A literal: 'string' (FHIRPath escapes), a number, true or false. */
static bool
cur_literal(fp_cur_t *c, fp_cmp_t *cmp)
{
	int ch = cur_peek(c);
	size_t start = c->pos;

	if (ch == '\'') {
		buf_t b = BUF_INIT;
		bool closed = false;

		for (c->pos++; c->pos < c->s.len; c->pos++) {
			char e = c->s.ptr[c->pos];

			if (e == '\'') {
				closed = true;
				c->pos++;
				break;
			}
			if (e == '\\' && c->pos + 1 < c->s.len) {
				const char *from = "'\"`\\/fnrt", *to = "'\"`\\/\f\n\r\t";
				const char *hit = strchr(from, c->s.ptr[++c->pos]);

				if (hit == NULL) {
					fp_fail(
					    c->p, 422,
					    "the escape \\%c in a string literal is not supported",
					    c->s.ptr[c->pos]);
					buf_free(&b);
					return false;
				}
				e = to[hit - from];
			}
			buf_append_byte(&b, e);
		}
		if (!closed) {
			fp_fail(c->p, 400, "a string literal in path '%.*s' is not closed",
				CLIP(c->s));
			buf_free(&b);
			return false;
		}
		cmp->kind = LIT_STRING;
		cmp->text = arena_slice_dup(c->p->a, buf_slice(&b));
		if (cmp->text.ptr == NULL)
			cmp->text = slice_make("", 0);
		buf_free(&b);
		return true;
	}
	if (ch == '-' || (ch >= '0' && ch <= '9')) {
		if (ch == '-')
			c->pos++;
		while (c->pos < c->s.len && ((c->s.ptr[c->pos] >= '0' && c->s.ptr[c->pos] <= '9') ||
					     c->s.ptr[c->pos] == '.'))
			c->pos++;
		cmp->kind = LIT_NUMBER;
		cmp->text = slice_make(c->s.ptr + start, c->pos - start);
		return true;
	}
	if (is_ident_start(ch)) {
		slice_t w = cur_ident(c);

		if (slice_eq_cstr(w, "true") || slice_eq_cstr(w, "false")) {
			cmp->kind = LIT_BOOL;
			cmp->text = w;
			return true;
		}
		fp_fail(c->p, 422,
			"where() compares with a literal ('text', a number, true or false), "
			"not with '%.*s'",
			CLIP(w));
		return false;
	}
	cur_unexpected(c, " in where()");
	return false;
}

/* The inside of where(): a.b = literal, joined by `and`. */
static void
cur_where(fp_cur_t *c, fp_step_t *st)
{
	size_t cap = 0;

	for (;;) {
		fp_cmp_t *cmp;
		size_t ncap = 0;
		slice_t w;

		st->cmps = arena_array_grow(c->p->a, st->cmps, st->ncmps, &cap, sizeof(*st->cmps));
		cmp = &st->cmps[st->ncmps++];
		memset(cmp, 0, sizeof(*cmp));
		do {
			w = cur_ident(c);
			if (w.ptr == NULL) {
				cur_unexpected(c, " in where()");
				return;
			}
			if (cur_peek(c) == '(') {
				fp_fail(c->p, 422,
					"the function %.*s() in where() is not supported", CLIP(w));
				return;
			}
			cmp->names = arena_array_grow(c->p->a, cmp->names, cmp->nnames, &ncap,
						      sizeof(*cmp->names));
			cmp->names[cmp->nnames++] = w;
		} while (cur_eat(c, '.'));
		if (cur_peek(c) != '=' ||
		    (c->pos + 1 < c->s.len && strchr("=~", c->s.ptr[c->pos + 1]) != NULL)) {
			cur_unexpected(c, " in where() (only a.b = 'value', joined by and)");
			return;
		}
		c->pos++;
		if (!cur_literal(c, cmp))
			return;
		if (cur_eat(c, ')'))
			return;
		w = cur_ident(c);
		if (!slice_eq_cstr(w, "and")) {
			if (w.ptr != NULL)
				fp_fail(c->p, 422, "'%.*s' in where() is not supported (only and)",
					CLIP(w));
			else
				cur_unexpected(c, " in where()");
			return;
		}
	}
}

/* A function call after '.name': where(), first(), last(), extension('url'). */
static void
cur_function(fp_cur_t *c, fp_path_t *path, slice_t fn)
{
	fp_step_t *st;

	if (slice_eq_cstr(fn, "where")) {
		st = path_push(c->p, path, STEP_WHERE);
		cur_where(c, st);
		return;
	}
	if (slice_eq_cstr(fn, "first") || slice_eq_cstr(fn, "last")) {
		st = path_push(c->p, path, slice_eq_cstr(fn, "first") ? STEP_INDEX : STEP_LAST);
		if (!cur_eat(c, ')'))
			fp_fail(c->p, 400, "%.*s() takes no arguments", CLIP(fn));
		return;
	}
	if (slice_eq_cstr(fn, "extension")) {
		fp_cmp_t *cmp = arena_zalloc(c->p->a, sizeof(*cmp));

		st = path_push(c->p, path, STEP_CHILD);
		st->name = SLICE_LIT("extension");
		st = path_push(c->p, path, STEP_WHERE);
		st->cmps = cmp;
		st->ncmps = 1;
		cmp->names = arena_zalloc(c->p->a, sizeof(*cmp->names));
		cmp->names[0] = SLICE_LIT("url");
		cmp->nnames = 1;
		if (cur_peek(c) != '\'' || !cur_literal(c, cmp) || !cur_eat(c, ')'))
			fp_fail(c->p, 400, "extension() takes one string, the extension's url");
		return;
	}
	fp_fail(c->p, 422, "the function %.*s() is not supported", CLIP(fn));
}

/* Parses a path into steps: names, [n], and the functions above. */
static void
path_parse(fp_t *p, slice_t s, fp_path_t *path)
{
	fp_cur_t c = {.p = p, .s = s};
	slice_t w;

	memset(path, 0, sizeof(*path));
	if (s.len > FP_PATH_MAX) {
		fp_fail(p, 422, "a path is at most %d characters", FP_PATH_MAX);
		return;
	}
	w = cur_ident(&c);
	if (w.ptr == NULL) {
		cur_unexpected(&c, "");
		return;
	}
	path_push(p, path, STEP_CHILD)->name = w;
	while (p->status == 0 && cur_peek(&c) >= 0) {
		if (cur_eat(&c, '.')) {
			w = cur_ident(&c);
			if (w.ptr == NULL) {
				cur_unexpected(&c, " after '.'");
				return;
			}
			if (cur_eat(&c, '('))
				cur_function(&c, path, w);
			else
				path_push(p, path, STEP_CHILD)->name = w;
		} else if (cur_eat(&c, '[')) {
			size_t start;
			uint64_t n;

			cur_ws(&c);
			start = c.pos;
			while (c.pos < s.len && s.ptr[c.pos] >= '0' && s.ptr[c.pos] <= '9')
				c.pos++;
			if (!slice_to_u64(slice_make(s.ptr + start, c.pos - start), &n) ||
			    !cur_eat(&c, ']')) {
				fp_fail(p, 422, "an index is a number: name[0]");
				return;
			}
			path_push(p, path, STEP_INDEX)->index = n;
		} else if (cur_peek(&c) == '(') {
			fp_fail(p, 422, "the function %.*s() is not supported", CLIP(w));
			return;
		} else {
			cur_unexpected(&c, "");
			return;
		}
	}
}

/* ---- evaluation over the tree, with the R4 metadata ---- */

/* An element a path found: where it is (to change it) and what it is. */
typedef struct {
	fhir_node_t *obj;         /* the object holding it; NULL: the resource itself */
	const fhir_type_t *owner; /* obj's type */
	const fhir_elem_t *elem;  /* its element in owner */
	size_t index;             /* its place in the element's array, or FP_SINGLE */
	fhir_node_t *node;        /* its value; NULL when it has only a `_name` companion */
	const fhir_type_t *type;  /* its type; NULL for a resource of unknown resourceType */
} fp_item_t;

typedef struct {
	fp_item_t *v;
	size_t n, cap;
} fp_coll_t;

static void
coll_push(fp_t *p, fp_coll_t *c, const fp_item_t *it)
{
	c->v = arena_array_grow(p->a, c->v, c->n, &c->cap, sizeof(*c->v));
	c->v[c->n++] = *it;
}

static slice_t
comp_key(arena_t *a, const fhir_elem_t *e)
{
	return slice_cstr(arena_printf(a, "_%s", e->name));
}

static bool
is_present(const fhir_node_t *n)
{
	return n != NULL && fhir_node_kind(n) != FHIR_NULL;
}

static bool
is_array(const fhir_node_t *n)
{
	return n != NULL && fhir_node_kind(n) == FHIR_ARRAY;
}

/* Element name of t: its own, or the expansion of choice `name` that obj holds (else the
 * first one, which finds nothing). NULL when t has no such element. */
static const fhir_elem_t *
elem_find(arena_t *a, const fhir_type_t *t, const fhir_node_t *obj, slice_t name)
{
	const fhir_elem_t *e = fhir_meta_elem(t, name), *first = NULL;

	if (e != NULL)
		return e;
	for (size_t i = 0; i < t->nelems; i++) {
		e = &t->elems[i];
		if (e->choice_base == NULL || !slice_eq_cstr(name, e->choice_base))
			continue;
		if (first == NULL)
			first = e;
		if (fhir_object_get_cstr(obj, e->name) != NULL ||
		    ((e->flags & FHIR_ELEM_PRIMITIVE) &&
		     fhir_object_get(obj, comp_key(a, e)) != NULL))
			return e;
	}
	return first;
}

/* The element of obj (of type t) that holds e's value already: e, or for a choice whichever
 * of its types is there; NULL when none is. */
static const fhir_elem_t *
elem_present(arena_t *a, const fhir_type_t *t, const fhir_node_t *obj, const fhir_elem_t *e)
{
	const fhir_elem_t *x =
	    elem_find(a, t, obj, slice_cstr(e->choice_base ? e->choice_base : e->name));

	return fhir_object_get_cstr(obj, x->name) != NULL ? x : NULL;
}

static const fhir_type_t *
type_of(const fhir_type_t *owner, const fhir_elem_t *e, const fhir_node_t *node)
{
	const fhir_type_t *t = fhir_meta_elem_type(owner, e);

	/* ResourceList (contained, ...): the resource says what it is. */
	return t != NULL || node == NULL ? t : fhir_meta_type(fhir_resource_type(node));
}

/* The values of element e of obj (of type owner), added to out. */
static void
items_add(fp_t *p, fhir_node_t *obj, const fhir_type_t *owner, const fhir_elem_t *e, fp_coll_t *out)
{
	fhir_node_t *v = fhir_object_get_cstr(obj, e->name), *cv = NULL;
	fp_item_t it = {.obj = obj, .owner = owner, .elem = e, .index = FP_SINGLE};

	if (e->flags & FHIR_ELEM_PRIMITIVE)
		cv = fhir_object_get(obj, comp_key(p->a, e));
	if (!(e->flags & FHIR_ELEM_ARRAY)) {
		if (v == NULL && cv == NULL)
			return;
		it.node = v;
		it.type = type_of(owner, e, v);
		coll_push(p, out, &it);
		return;
	}
	{
		size_t n = fhir_array_len(v), nc = fhir_array_len(cv);

		for (size_t i = 0; i < (n > nc ? n : nc); i++) {
			fhir_node_t *x = i < n ? fhir_array_at(v, i) : NULL;

			if (!is_present(x) && !(i < nc && is_present(fhir_array_at(cv, i))))
				continue;
			it.index = i;
			it.node = is_present(x) ? x : NULL;
			it.type = type_of(owner, e, it.node);
			coll_push(p, out, &it);
		}
	}
}

static bool
is_container(const fp_item_t *it)
{
	return it->node != NULL && fhir_node_kind(it->node) == FHIR_OBJECT && it->type != NULL &&
	       it->type->kind != FHIR_TYPE_PRIMITIVE;
}

static void
step_child(fp_t *p, const fp_coll_t *in, slice_t name, fp_coll_t *out)
{
	for (size_t i = 0; i < in->n && p->status == 0; i++) {
		const fp_item_t *it = &in->v[i];
		const fhir_elem_t *e;

		if (it->type != NULL && it->type->kind == FHIR_TYPE_PRIMITIVE) {
			fp_fail(p, 422,
				"%.*s is a primitive (%s): its id and extensions cannot be "
				"patched by path",
				CLIP(name), it->type->name);
			return;
		}
		if (!is_container(it))
			continue;
		if ((e = elem_find(p->a, it->type, it->node, name)) == NULL) {
			fp_fail(p, 422, "%s has no element '%.*s'", it->type->name, CLIP(name));
			return;
		}
		items_add(p, it->node, it->type, e, out);
	}
}

static bool
literal_match(const fhir_node_t *n, const fp_cmp_t *cmp)
{
	switch (fhir_node_kind(n)) {
	case FHIR_STRING:
		return cmp->kind == LIT_STRING && slice_eq(fhir_node_text(n), cmp->text);
	case FHIR_NUMBER:
		return cmp->kind == LIT_NUMBER && slice_eq(fhir_node_text(n), cmp->text);
	case FHIR_BOOL:
		return cmp->kind == LIT_BOOL &&
		       fhir_node_bool(n) == slice_eq_cstr(cmp->text, "true");
	default:
		return false;
	}
}

/* FHIRPath equality with a literal: the left side must be one value equal to it. */
static bool
cmp_holds(fp_t *p, const fp_item_t *it, const fp_cmp_t *cmp)
{
	fp_coll_t cur = {0};

	coll_push(p, &cur, it);
	for (size_t k = 0; k < cmp->nnames && p->status == 0; k++) {
		fp_coll_t next = {0};

		step_child(p, &cur, cmp->names[k], &next);
		cur = next;
	}
	return p->status == 0 && cur.n == 1 && cur.v[0].node != NULL &&
	       literal_match(cur.v[0].node, cmp);
}

/* Evaluates steps [from, to) of path on the resource doc. */
static void
path_eval(fp_t *p, fhir_node_t *doc, const fp_path_t *path, size_t from, size_t to, fp_coll_t *out)
{
	fp_item_t root = {
	    .index = FP_SINGLE, .node = doc, .type = fhir_meta_type(fhir_resource_type(doc))};
	fp_coll_t cur = {0};

	coll_push(p, &cur, &root);
	for (size_t i = from; i < to && p->status == 0; i++) {
		const fp_step_t *st = &path->v[i];
		fp_coll_t next = {0};

		switch (st->kind) {
		case STEP_CHILD:
			step_child(p, &cur, st->name, &next);
			break;
		case STEP_INDEX:
			if (st->index < cur.n)
				coll_push(p, &next, &cur.v[st->index]);
			break;
		case STEP_LAST:
			if (cur.n > 0)
				coll_push(p, &next, &cur.v[cur.n - 1]);
			break;
		case STEP_WHERE:
			for (size_t k = 0; k < cur.n; k++) {
				bool all = true;

				for (size_t m = 0; all && m < st->ncmps; m++)
					all = cmp_holds(p, &cur.v[k], &st->cmps[m]);
				if (all)
					coll_push(p, &next, &cur.v[k]);
			}
			break;
		}
		cur = next;
	}
	*out = cur;
}

/* ---- changing the tree ---- */

/* Inserts val (and its companion, or a null beside it when the element has companions) at i
 * of list element e of obj. */
static void
list_insert(arena_t *a, fhir_node_t *obj, const fhir_elem_t *e, size_t i, fhir_node_t *val,
	    fhir_node_t *comp)
{
	fhir_node_t *arr = fhir_object_get_cstr(obj, e->name), *carr = NULL;
	size_t len;

	if (!is_array(arr)) {
		arr = fhir_array_new(a);
		fhir_object_set_cstr(a, obj, e->name, arr);
	}
	len = fhir_array_len(arr);
	rest_array_insert(a, arr, i, val);
	if (!(e->flags & FHIR_ELEM_PRIMITIVE))
		return;
	carr = fhir_object_get(obj, comp_key(a, e));
	if (carr == NULL && comp == NULL)
		return;
	if (!is_array(carr)) {
		carr = fhir_array_new(a);
		fhir_object_set(a, obj, comp_key(a, e), carr);
	}
	while (fhir_array_len(carr) < len)
		fhir_array_append(a, carr, fhir_null_new(a));
	rest_array_insert(a, carr, i, comp != NULL ? comp : fhir_null_new(a));
}

/* Drops list element key of obj when nothing (or only nulls) is left in it. */
static void
list_tidy(fhir_node_t *obj, slice_t key)
{
	fhir_node_t *arr = fhir_object_get(obj, key);
	size_t i;
	const fhir_node_t *x;

	if (!is_array(arr))
		return;
	FHIR_ARRAY_FOREACH(arr, i, x) {
		if (is_present(x))
			return;
	}
	fhir_object_remove(obj, key);
}

/* Removes item i of list element e of obj, and its companion; returns it. */
static fhir_node_t *
list_remove(arena_t *a, fhir_node_t *obj, const fhir_elem_t *e, size_t i, fhir_node_t **comp)
{
	fhir_node_t *arr = fhir_object_get_cstr(obj, e->name), *carr, *v = NULL;

	*comp = NULL;
	if (i < fhir_array_len(arr)) {
		v = fhir_array_at(arr, i);
		fhir_array_remove_at(arr, i);
	}
	list_tidy(obj, slice_cstr(e->name));
	if (!(e->flags & FHIR_ELEM_PRIMITIVE))
		return v;
	carr = fhir_object_get(obj, comp_key(a, e));
	if (i < fhir_array_len(carr)) {
		*comp = fhir_array_at(carr, i);
		fhir_array_remove_at(carr, i);
	}
	list_tidy(obj, comp_key(a, e));
	return v;
}

static void
item_delete(arena_t *a, const fp_item_t *it)
{
	fhir_node_t *comp;

	if (it->index != FP_SINGLE) {
		list_remove(a, it->obj, it->elem, it->index, &comp);
		return;
	}
	fhir_object_remove(it->obj, slice_cstr(it->elem->name));
	if (it->elem->flags & FHIR_ELEM_PRIMITIVE)
		fhir_object_remove(it->obj, comp_key(a, it->elem));
}

/* Puts val where item it is, as element e (it->elem, or another expansion of its choice). A
 * primitive keeps its id and extensions unless comp brings new ones. */
static void
item_replace(arena_t *a, const fp_item_t *it, const fhir_elem_t *e, fhir_node_t *val,
	     fhir_node_t *comp)
{
	if (it->index != FP_SINGLE) {
		fhir_node_t *arr = fhir_object_get_cstr(it->obj, e->name), *carr;

		if (it->index < fhir_array_len(arr)) {
			fhir_array_set(arr, it->index, val);
		} else { /* only its companion was there: pad with nulls up to it */
			if (!is_array(arr)) {
				arr = fhir_array_new(a);
				fhir_object_set_cstr(a, it->obj, e->name, arr);
			}
			while (fhir_array_len(arr) < it->index)
				fhir_array_append(a, arr, fhir_null_new(a));
			fhir_array_append(a, arr, val);
		}
		if (comp == NULL)
			return;
		carr = fhir_object_get(it->obj, comp_key(a, e));
		if (!is_array(carr)) {
			carr = fhir_array_new(a);
			fhir_object_set(a, it->obj, comp_key(a, e), carr);
		}
		while (fhir_array_len(carr) <= it->index)
			fhir_array_append(a, carr, fhir_null_new(a));
		fhir_array_set(carr, it->index, comp);
		return;
	}
	if (e != it->elem) /* another type of the choice: the old one goes */
		item_delete(a, it);
	fhir_object_set_cstr(a, it->obj, e->name, val);
	if (comp != NULL)
		fhir_object_set(a, it->obj, comp_key(a, e), comp);
}

/* ---- values ---- */

/* A JSON number FHIR accepts for a decimal, or (integer) an integer. */
static bool
number_is_valid(slice_t s, bool integer)
{
	size_t i = 0, digits = 0;

	if (i < s.len && s.ptr[i] == '-')
		i++;
	if (i < s.len && s.ptr[i] == '0' && i + 1 < s.len && s.ptr[i + 1] >= '0' &&
	    s.ptr[i + 1] <= '9')
		return false;
	for (; i < s.len && s.ptr[i] >= '0' && s.ptr[i] <= '9'; i++)
		digits++;
	if (digits == 0)
		return false;
	if (integer)
		return i == s.len;
	if (i < s.len && s.ptr[i] == '.') {
		for (digits = 0, i++; i < s.len && s.ptr[i] >= '0' && s.ptr[i] <= '9'; i++)
			digits++;
		if (digits == 0)
			return false;
	}
	if (i < s.len && (s.ptr[i] == 'e' || s.ptr[i] == 'E')) {
		i++;
		if (i < s.len && (s.ptr[i] == '+' || s.ptr[i] == '-'))
			i++;
		for (digits = 0; i < s.len && s.ptr[i] >= '0' && s.ptr[i] <= '9'; i++)
			digits++;
		if (digits == 0)
			return false;
	}
	return i == s.len;
}

/* A primitive value as the JSON kind primitive type et takes (a valueString "42" for an
 * integer becomes 42); NULL with a 422 when its text is not one of et. */
static fhir_node_t *
primitive_as(fp_t *p, const fhir_node_t *v, const fhir_type_t *et, const char *what)
{
	slice_t text = fhir_node_kind(v) == FHIR_BOOL
			   ? (fhir_node_bool(v) ? SLICE_LIT("true") : SLICE_LIT("false"))
			   : fhir_node_text(v);

	switch (et->json_form) {
	case FHIR_JSON_STRING:
		return fhir_string_new(p->a, text);
	case FHIR_JSON_BOOL:
		if (slice_eq_cstr(text, "true") || slice_eq_cstr(text, "false"))
			return fhir_bool_new(p->a, slice_eq_cstr(text, "true"));
		break;
	case FHIR_JSON_NUMBER:
		if (number_is_valid(text, strcmp(et->name, "decimal") != 0))
			return fhir_number_new(p->a, text);
		break;
	}
	fp_fail(p, 422, "'%.*s' is not a valid %s for %s", CLIP(text), et->name, what);
	return NULL;
}

/* The value a part carries: value[x] (with its key and its `_value[x]` companion),
 * resource, or the nested parts that make up a complex value. */
typedef struct {
	const fhir_node_t *value, *comp, *resource, *parts;
	const fhir_type_t *vtype; /* value[x]'s type */
} fp_val_t;

static void
part_value(fp_t *p, const fhir_node_t *part, fp_val_t *out)
{
	const fhir_type_t *pt = fhir_meta_type(SLICE_LIT("Parameters_Parameter"));

	memset(out, 0, sizeof(*out));
	for (size_t i = 0; i < fhir_object_count(part); i++) {
		slice_t k = fhir_object_key_at(part, i);
		const fhir_elem_t *e;

		if (k.len > 5 && memcmp(k.ptr, "value", 5) == 0) {
			if (out->value != NULL) {
				fp_fail(p, 400, "a part has more than one value[x]");
				return;
			}
			out->value = fhir_object_value_at(part, i);
			e = fhir_meta_elem(pt, k);
			out->vtype = e != NULL ? fhir_meta_type(slice_cstr(e->type)) : NULL;
		} else if (k.len > 6 && memcmp(k.ptr, "_value", 6) == 0) {
			out->comp = fhir_object_value_at(part, i);
		} else if (slice_eq_cstr(k, "resource")) {
			out->resource = fhir_object_value_at(part, i);
		} else if (slice_eq_cstr(k, "part")) {
			out->parts = fhir_object_value_at(part, i);
		}
	}
	if ((out->value != NULL) + (out->resource != NULL) + (out->parts != NULL) > 1)
		fp_fail(p, 400,
			"a part has a value in more than one form (value[x], resource, part)");
	else if (out->value != NULL && out->vtype == NULL)
		fp_fail(p, 400, "a part's value[x] is not a known type");
	if (out->comp != NULL && out->value == NULL)
		out->comp = NULL;
}

static fhir_node_t *value_build(fp_t *p, const fhir_node_t *part, const fhir_type_t *owner,
				slice_t name, const fhir_elem_t **elem, fhir_node_t **comp,
				int depth);

/* The object of complex type t that the parts (name + value each) make up. */
static fhir_node_t *
value_from_parts(fp_t *p, const fhir_node_t *parts, const fhir_type_t *t, int depth)
{
	fhir_node_t *obj = fhir_object_new(p->a);
	size_t i;
	const fhir_node_t *sub;

	FHIR_ARRAY_FOREACH(parts, i, sub) {
		slice_t name = fhir_node_text(fhir_object_get_cstr(sub, "name"));
		const fhir_elem_t *e = NULL;
		fhir_node_t *comp = NULL, *v;

		v = value_build(p, sub, t, name, &e, &comp, depth + 1);
		if (v == NULL)
			return NULL;
		if (e->flags & FHIR_ELEM_ARRAY) {
			list_insert(p->a, obj, e,
				    fhir_array_len(fhir_object_get_cstr(obj, e->name)), v, comp);
			continue;
		}
		if (elem_present(p->a, t, obj, e) != NULL) {
			fp_fail(p, 422, "the value gives %s.%s more than once", t->name, e->name);
			return NULL;
		}
		fhir_object_set_cstr(p->a, obj, e->name, v);
		if (comp != NULL)
			fhir_object_set(p->a, obj, comp_key(p->a, e), comp);
	}
	return obj;
}

/* The value of part for element name of owner (name may be a choice's base, "value", which
 * the value's type then expands), as a node of the element's type, with *elem the element and
 * *comp a primitive's companion (or NULL). NULL on failure. */
static fhir_node_t *
value_build(fp_t *p, const fhir_node_t *part, const fhir_type_t *owner, slice_t name,
	    const fhir_elem_t **elem, fhir_node_t **comp, int depth)
{
	const fhir_elem_t *e = fhir_meta_elem(owner, name);
	const fhir_type_t *et;
	fp_val_t v;
	char *what;

	*comp = NULL;
	if (depth > FP_DEPTH_MAX) {
		fp_fail(p, 400, "value parts nested too deeply");
		return NULL;
	}
	part_value(p, part, &v);
	if (p->status != 0)
		return NULL;
	if (v.value == NULL && v.resource == NULL && v.parts == NULL) {
		fp_fail(p, 400, "the value part has no value");
		return NULL;
	}
	if (e == NULL) { /* a choice by its base name: the expansion of the value's type */
		bool known = false;

		for (size_t i = 0; i < owner->nelems && e == NULL; i++) {
			const fhir_elem_t *x = &owner->elems[i];

			if (x->choice_base == NULL || !slice_eq_cstr(name, x->choice_base))
				continue;
			known = true;
			if (v.vtype != NULL && strcmp(x->type, v.vtype->name) == 0)
				e = x;
		}
		if (e == NULL) {
			if (!known)
				fp_fail(p, 422, "%s has no element '%.*s'", owner->name,
					CLIP(name));
			else
				fp_fail(p, 422, "%s.%.*s[x] cannot be a %s", owner->name,
					CLIP(name),
					v.vtype != NULL   ? v.vtype->name
					: v.parts != NULL ? "value given as parts (use value[x])"
							  : "resource");
			return NULL;
		}
	}
	*elem = e;
	et = fhir_meta_elem_type(owner, e);
	what = arena_printf(p->a, "%s.%s", owner->name, e->name);
	if (et == NULL) { /* ResourceList */
		if (v.resource == NULL || fhir_node_kind(v.resource) != FHIR_OBJECT) {
			fp_fail(p, 422, "%s takes a resource (the part's resource)", what);
			return NULL;
		}
		return fhir_node_clone(p->a, v.resource);
	}
	if (v.parts != NULL) {
		if (et->kind == FHIR_TYPE_PRIMITIVE) {
			fp_fail(p, 422, "%s is a %s: give it as value[x], not as parts", what,
				et->name);
			return NULL;
		}
		return value_from_parts(p, v.parts, et, depth);
	}
	if (v.value == NULL) {
		fp_fail(p, 422, "%s is a %s, not a resource", what, et->name);
		return NULL;
	}
	if (et->kind == FHIR_TYPE_PRIMITIVE && v.vtype->kind == FHIR_TYPE_PRIMITIVE) {
		fhir_node_t *out = primitive_as(p, v.value, et, what);

		if (out != NULL && v.comp != NULL)
			*comp = fhir_node_clone(p->a, v.comp);
		return out;
	}
	if (et->kind == FHIR_TYPE_BACKBONE) {
		fp_fail(p, 422, "%s is a backbone element: give its value as parts", what);
		return NULL;
	}
	if (strcmp(et->name, v.vtype->name) != 0) {
		fp_fail(p, 422, "%s is of type %s, the value of type %s", what, et->name,
			v.vtype->name);
		return NULL;
	}
	return fhir_node_clone(p->a, v.value);
}

/* ---- operations ---- */

typedef struct {
	slice_t type, path, name;
	const fhir_node_t *value; /* the part named value */
	bool has_index, has_source, has_destination;
	uint64_t index, source, destination;
} fp_op_t;

/* One "operation" parameter's parts. */
static void
op_read(fp_t *p, const fhir_node_t *param, fp_op_t *op)
{
	const fhir_node_t *parts = fhir_object_get_cstr(param, "part"), *part;
	size_t i;

	memset(op, 0, sizeof(*op));
	if (!slice_eq_cstr(fhir_node_text(fhir_object_get_cstr(param, "name")), "operation")) {
		fp_fail(p, 400, "a FHIRPath Patch has only parameters named 'operation'");
		return;
	}
	FHIR_ARRAY_FOREACH(parts, i, part) {
		slice_t name = fhir_node_text(fhir_object_get_cstr(part, "name"));
		slice_t *text = slice_eq_cstr(name, "type")   ? &op->type
				: slice_eq_cstr(name, "path") ? &op->path
				: slice_eq_cstr(name, "name") ? &op->name
							      : NULL;
		uint64_t *num = slice_eq_cstr(name, "index")         ? &op->index
				: slice_eq_cstr(name, "source")      ? &op->source
				: slice_eq_cstr(name, "destination") ? &op->destination
								     : NULL;
		bool *has = num == &op->index    ? &op->has_index
			    : num == &op->source ? &op->has_source
						 : &op->has_destination;
		fp_val_t v;

		if (slice_eq_cstr(name, "value")) {
			if (op->value != NULL) {
				fp_fail(p, 400, "the part 'value' is given twice");
				return;
			}
			op->value = part;
			continue;
		}
		if (text == NULL && num == NULL) {
			fp_fail(p, 400, "unknown part '%.*s'", CLIP(name));
			return;
		}
		part_value(p, part, &v);
		if (p->status != 0)
			return;
		if ((text != NULL && text->ptr != NULL) || (num != NULL && *has)) {
			fp_fail(p, 400, "the part '%.*s' is given twice", CLIP(name));
			return;
		}
		if (text != NULL) {
			if (v.value == NULL || fhir_node_kind(v.value) != FHIR_STRING) {
				fp_fail(p, 400, "the part '%.*s' takes a string (valueString)",
					CLIP(name));
				return;
			}
			*text = fhir_node_text(v.value);
		} else {
			if (v.value == NULL || fhir_node_kind(v.value) != FHIR_NUMBER ||
			    !slice_to_u64(fhir_node_text(v.value), num)) {
				fp_fail(p, 400, "the part '%.*s' takes an integer of 0 or more",
					CLIP(name));
				return;
			}
			*has = true;
		}
	}
	if (op->type.ptr == NULL || op->path.ptr == NULL)
		fp_fail(p, 400, "the parts 'type' and 'path' are required");
}

/* How many elements a path found, for messages. */
static const char *
found(fp_t *p, size_t n, slice_t path)
{
	return arena_printf(p->a, "the path %.*s matches %zu elements", CLIP(path), n);
}

static void
op_add(fp_t *p, fhir_node_t *doc, const fp_op_t *op, const fp_path_t *path)
{
	fp_coll_t c;

	if (op->name.ptr == NULL || op->value == NULL) {
		fp_fail(p, 400, "add needs the parts 'name' and 'value'");
		return;
	}
	path_eval(p, doc, path, 0, path->n, &c);
	if (p->status == 0 && c.n == 0)
		fp_fail(p, 422, "%s: nothing to add to", found(p, 0, op->path));
	/* Every element the path names gets it (as HAPI does). */
	for (size_t i = 0; i < c.n && p->status == 0; i++) {
		fp_item_t *it = &c.v[i];
		const fhir_elem_t *e = NULL, *other;
		fhir_node_t *comp, *v;

		if (!is_container(it)) {
			fp_fail(p, 422,
				"%s: elements can only be added to a resource or a complex "
				"element",
				found(p, c.n, op->path));
			return;
		}
		if ((v = value_build(p, op->value, it->type, op->name, &e, &comp, 0)) == NULL)
			return;
		if (e->flags & FHIR_ELEM_ARRAY) {
			list_insert(p->a, it->node, e,
				    fhir_array_len(fhir_object_get_cstr(it->node, e->name)), v,
				    comp);
			continue;
		}
		if ((other = elem_present(p->a, it->type, it->node, e)) != NULL) {
			fp_fail(p, 422, "%s.%s is there already (replace changes it)",
				it->type->name, other->name);
			return;
		}
		fhir_object_set_cstr(p->a, it->node, e->name, v);
		if (comp != NULL)
			fhir_object_set(p->a, it->node, comp_key(p->a, e), comp);
	}
}

static void
op_replace(fp_t *p, fhir_node_t *doc, const fp_op_t *op, const fp_path_t *path)
{
	fp_coll_t c;
	const fhir_elem_t *e = NULL;
	fhir_node_t *comp, *v;
	const fp_item_t *it;

	if (op->value == NULL) {
		fp_fail(p, 400, "replace needs the part 'value'");
		return;
	}
	path_eval(p, doc, path, 0, path->n, &c);
	if (p->status == 0 && c.n != 1)
		fp_fail(p, 422, "%s; replace needs exactly one", found(p, c.n, op->path));
	if (p->status != 0)
		return;
	it = &c.v[0];
	if (it->obj == NULL) {
		fp_fail(p, 422, "the resource itself cannot be replaced (PUT does that)");
		return;
	}
	v = value_build(p, op->value, it->owner,
			slice_cstr(it->elem->choice_base ? it->elem->choice_base : it->elem->name),
			&e, &comp, 0);
	if (v != NULL)
		item_replace(p->a, it, e, v, comp);
}

static void
op_delete(fp_t *p, fhir_node_t *doc, const fp_op_t *op, const fp_path_t *path)
{
	fp_coll_t c;

	path_eval(p, doc, path, 0, path->n, &c);
	if (p->status != 0 || c.n == 0) /* nothing there: nothing to do */
		return;
	if (c.n > 1)
		fp_fail(p, 422, "%s; delete removes one", found(p, c.n, op->path));
	else if (c.v[0].obj == NULL)
		fp_fail(p, 422, "the resource itself cannot be deleted (DELETE does that)");
	else
		item_delete(p->a, &c.v[0]);
}

/* insert and move: the path names a list (its last step an element name); the one element
 * that holds it, and the list's element. */
static fp_item_t *
list_target(fp_t *p, fhir_node_t *doc, const fp_op_t *op, const fp_path_t *path,
	    const fhir_elem_t **e)
{
	fp_coll_t c;
	fp_item_t *it;
	slice_t name;

	if (path->n == 0 || path->v[path->n - 1].kind != STEP_CHILD) {
		fp_fail(p, 422, "the path of %.*s must end with the name of a list (%s)",
			CLIP(op->type), "Patient.identifier");
		return NULL;
	}
	name = path->v[path->n - 1].name;
	path_eval(p, doc, path, 0, path->n - 1, &c);
	if (p->status == 0 && c.n != 1)
		fp_fail(p, 422, "the element holding the list matches %zu elements; %.*s needs one",
			c.n, CLIP(op->type));
	if (p->status != 0)
		return NULL;
	it = &c.v[0];
	if (!is_container(it)) {
		fp_fail(p, 422, "%.*s is not a list of a resource or a complex element",
			CLIP(op->path));
		return NULL;
	}
	*e = elem_find(p->a, it->type, it->node, name);
	if (*e == NULL)
		fp_fail(p, 422, "%s has no element '%.*s'", it->type->name, CLIP(name));
	else if (!((*e)->flags & FHIR_ELEM_ARRAY))
		fp_fail(p, 422, "%s.%s is not a list", it->type->name, (*e)->name);
	return p->status == 0 ? it : NULL;
}

static void
op_insert(fp_t *p, fhir_node_t *doc, const fp_op_t *op, const fp_path_t *path)
{
	const fhir_elem_t *e = NULL, *ve = NULL;
	fhir_node_t *comp, *v;
	fp_item_t *it;
	size_t len;

	if (op->value == NULL || !op->has_index) {
		fp_fail(p, 400, "insert needs the parts 'value' and 'index'");
		return;
	}
	if ((it = list_target(p, doc, op, path, &e)) == NULL)
		return;
	len = fhir_array_len(fhir_object_get_cstr(it->node, e->name));
	if (op->index > len) {
		fp_fail(p, 422, "index %llu is past the end of %.*s (%zu items)",
			(unsigned long long)op->index, CLIP(op->path), len);
		return;
	}
	v = value_build(p, op->value, it->type, slice_cstr(e->name), &ve, &comp, 0);
	if (v != NULL)
		list_insert(p->a, it->node, e, (size_t)op->index, v, comp);
}

static void
op_move(fp_t *p, fhir_node_t *doc, const fp_op_t *op, const fp_path_t *path)
{
	const fhir_elem_t *e = NULL;
	fhir_node_t *comp, *v;
	fp_item_t *it;
	size_t len;

	if (!op->has_source || !op->has_destination) {
		fp_fail(p, 400, "move needs the parts 'source' and 'destination'");
		return;
	}
	if ((it = list_target(p, doc, op, path, &e)) == NULL)
		return;
	len = fhir_array_len(fhir_object_get_cstr(it->node, e->name));
	if (op->source >= len || op->destination >= len) {
		fp_fail(p, 422,
			"source %llu and destination %llu must be below %zu, the items of %.*s",
			(unsigned long long)op->source, (unsigned long long)op->destination, len,
			CLIP(op->path));
		return;
	}
	/* Out, then in at destination of the list without it (as HAPI does). */
	v = list_remove(p->a, it->node, e, (size_t)op->source, &comp);
	list_insert(p->a, it->node, e, (size_t)op->destination, v, is_present(comp) ? comp : NULL);
}

int
rest_fhirpath_patch(arena_t *a, fhir_node_t *doc, const fhir_node_t *params, char *err, size_t cap)
{
	static const struct {
		const char *name;
		void (*fn)(fp_t *, fhir_node_t *, const fp_op_t *, const fp_path_t *);
	} ops[] = {{"add", op_add},
		   {"insert", op_insert},
		   {"delete", op_delete},
		   {"replace", op_replace},
		   {"move", op_move}};
	fp_t p = {.a = a, .err = err, .cap = cap};
	const fhir_node_t *list = fhir_object_get_cstr(params, "parameter"), *param;
	size_t i;
	int st;

	if (!slice_eq_cstr(fhir_resource_type(params), "Parameters")) {
		snprintf(err, cap, "a FHIRPath Patch is a Parameters resource");
		return 400;
	}
	if ((st = rest_res_validate(params, err, cap)) != 0)
		return st;
	if (fhir_array_len(list) > FP_OPS_MAX) {
		snprintf(err, cap, "at most %d operations in one patch", FP_OPS_MAX);
		return 422;
	}
	FHIR_ARRAY_FOREACH(list, i, param) {
		fp_op_t op;
		fp_path_t path;
		size_t k;

		p.op = i;
		p.op_type = SLICE_NULL;
		op_read(&p, param, &op);
		if (p.status != 0)
			break;
		p.op_type = op.type;
		for (k = 0; k < sizeof(ops) / sizeof(ops[0]); k++)
			if (slice_eq_cstr(op.type, ops[k].name))
				break;
		if (k == sizeof(ops) / sizeof(ops[0])) {
			fp_fail(&p, 400, "unknown type (add, insert, delete, replace or move)");
			break;
		}
		path_parse(&p, op.path, &path);
		/* "Patient.x" starts from the resource; a path may also start at its elements. */
		if (p.status == 0 && path.v[0].kind == STEP_CHILD &&
		    fhir_meta_is_resource(path.v[0].name)) {
			if (!slice_eq(path.v[0].name, fhir_resource_type(doc))) {
				fp_fail(&p, 422, "the path starts at %.*s, the resource is a %.*s",
					CLIP(path.v[0].name), CLIP(fhir_resource_type(doc)));
				break;
			}
			path.v++;
			path.n--;
		}
		if (p.status == 0)
			ops[k].fn(&p, doc, &op, &path);
		if (p.status != 0)
			break;
	}
	if (p.status == 0)
		fhir_node_prune(
		    doc); /* what a delete left empty goes, as FHIR has no empty elements */
	return p.status;
}
