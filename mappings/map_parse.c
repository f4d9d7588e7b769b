/* Parser of mapping files: one line at a time through a small lexer with a sticky error, so
 * that every bad line is reported with its column and the rest of the file is still read. */
#include "config.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/err.h"
#include "lib/xalloc.h"
#include "mappings/map_int.h"

/* Longest line and file the parser accepts. */
#define MAP_LINE_MAX 4096
#define MAP_FILE_MAX (4u << 20)

typedef enum {
	T_END,
	T_IDENT,
	T_NUM,
	T_STR,
	T_ARROW,
	T_EQ,
	T_NE,
	T_LT,
	T_LE,
	T_GT,
	T_GE,
	T_LP,
	T_RP,
	T_LB,
	T_RB,
	T_COMMA,
	T_DOT,
	T_DASH,
	T_STAR,
	T_PLUS,
	T_BAD,
} map_tok_kind_t;

typedef struct {
	map_tok_kind_t kind;
	const char *p;
	size_t len;
	unsigned col;
} map_tok_t;

/* Parser state for one line; err is sticky: once set, parsing functions return quickly. */
typedef struct {
	arena_t *a;
	map_def_t *def;
	const char *line;
	size_t len;
	unsigned lineno;
	const char *p;
	map_tok_t tok;
	bool err;
	unsigned err_col;
	char msg[256];
	char hint[256];
} map_ps_t;

static void map_fail(map_ps_t *ps, unsigned col, const char *hint, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void
map_fail(map_ps_t *ps, unsigned col, const char *hint, const char *fmt, ...)
{
	va_list ap;

	if (ps->err)
		return;
	ps->err = true;
	ps->err_col = col;
	va_start(ap, fmt);
	vsnprintf(ps->msg, sizeof(ps->msg), fmt, ap);
	va_end(ap);
	snprintf(ps->hint, sizeof(ps->hint), "%s", hint != NULL ? hint : "");
}

static bool
map_is_ident_start(char c)
{
	return isalpha((unsigned char)c) || c == '_' || c == '$';
}

static bool
map_is_ident_char(char c)
{
	return isalnum((unsigned char)c) || c == '_';
}

static void
map_next(map_ps_t *ps)
{
	const char *end = ps->line + ps->len;
	const char *s;
	map_tok_t *t = &ps->tok;

	while (ps->p < end && (*ps->p == ' ' || *ps->p == '\t'))
		ps->p++;
	s = ps->p;
	t->p = s;
	t->col = (unsigned)(s - ps->line) + 1;
	t->len = 1;
	if (s >= end || *s == '#') {
		t->kind = T_END;
		t->len = 0;
		return;
	}
	if (map_is_ident_start(*s)) {
		const char *q = s + 1;

		while (q < end && map_is_ident_char(*q))
			q++;
		t->kind = T_IDENT;
		t->len = (size_t)(q - s);
		ps->p = q;
		return;
	}
	if (isdigit((unsigned char)*s)) {
		const char *q = s;

		while (q < end && isdigit((unsigned char)*q))
			q++;
		t->kind = T_NUM;
		t->len = (size_t)(q - s);
		ps->p = q;
		return;
	}
	if (*s == '"') {
		const char *q = s + 1;

		while (q < end && *q != '"') {
			if (*q == '\\' && q + 1 < end)
				q++;
			q++;
		}
		if (q >= end) {
			map_fail(ps, t->col, "close the string with a double quote",
				 "unterminated string");
			t->kind = T_BAD;
			ps->p = end;
			return;
		}
		t->kind = T_STR;
		t->len = (size_t)(q + 1 - s);
		ps->p = q + 1;
		return;
	}
	ps->p = s + 1;
	switch (*s) {
	case '<':
		if (s + 1 < end && (s[1] == '-' || s[1] == '=' || s[1] == '>')) {
			t->kind = s[1] == '-' ? T_ARROW : s[1] == '=' ? T_LE : T_NE;
			t->len = 2;
			ps->p = s + 2;
		} else {
			t->kind = T_LT;
		}
		return;
	case '>':
		t->kind = T_GT;
		if (s + 1 < end && s[1] == '=') {
			t->kind = T_GE;
			t->len = 2;
			ps->p = s + 2;
		}
		return;
	case '=':
		t->kind = T_EQ;
		if (s + 1 < end && s[1] == '=') {
			t->len = 2;
			ps->p = s + 2;
		}
		return;
	case '!':
		if (s + 1 < end && s[1] == '=') {
			t->kind = T_NE;
			t->len = 2;
			ps->p = s + 2;
			return;
		}
		break;
	case '(':
		t->kind = T_LP;
		return;
	case ')':
		t->kind = T_RP;
		return;
	case '[':
		t->kind = T_LB;
		return;
	case ']':
		t->kind = T_RB;
		return;
	case ',':
		t->kind = T_COMMA;
		return;
	case '.':
		t->kind = T_DOT;
		return;
	case '-':
		t->kind = T_DASH;
		return;
	case '*':
		t->kind = T_STAR;
		return;
	case '+':
		t->kind = T_PLUS;
		return;
	default:
		break;
	}
	t->kind = T_BAD;
	map_fail(ps, t->col, NULL, "unexpected character '%c'",
		 isprint((unsigned char)*s) ? *s : '?');
}

static bool
map_tok_is(const map_tok_t *t, const char *word)
{
	size_t n = strlen(word);

	return t->kind == T_IDENT && t->len == n && strncasecmp(t->p, word, n) == 0;
}

/* Consumes the keyword if it is next. */
static bool
map_accept(map_ps_t *ps, const char *word)
{
	if (!map_tok_is(&ps->tok, word))
		return false;
	map_next(ps);
	return true;
}

static bool
map_accept_tok(map_ps_t *ps, map_tok_kind_t kind)
{
	if (ps->tok.kind != kind)
		return false;
	map_next(ps);
	return true;
}

static void
map_expect(map_ps_t *ps, map_tok_kind_t kind, const char *what)
{
	if (!map_accept_tok(ps, kind))
		map_fail(ps, ps->tok.col, NULL, "expected %s", what);
}

static const char *map_keywords[] = {"as",   "via",  "if",      "and",    "or",     "not",
				     "is",   "in",   "valued",  "equals", "equal",  "greater",
				     "less", "than", "follows", "length", "lst",    "hash",
				     "join", "true", "false",   "to",     "ignore", NULL};

static bool
map_is_keyword(const map_tok_t *t)
{
	for (size_t i = 0; map_keywords[i] != NULL; i++)
		if (map_tok_is(t, map_keywords[i]))
			return true;
	return false;
}

/* "PID", "ZPI", "NK1": three characters, a capital letter first. */
static bool
map_is_segment_id(const char *p, size_t len)
{
	if (len != 3 || !isupper((unsigned char)p[0]))
		return false;
	return (isupper((unsigned char)p[1]) || isdigit((unsigned char)p[1])) &&
	       (isupper((unsigned char)p[2]) || isdigit((unsigned char)p[2]));
}

static uint16_t
map_tok_u16(map_ps_t *ps, const map_tok_t *t, unsigned max, const char *what)
{
	unsigned v = 0;

	for (size_t i = 0; i < t->len; i++) {
		v = v * 10 + (unsigned)(t->p[i] - '0');
		if (v > max)
			break;
	}
	if (v == 0 || v > max)
		map_fail(ps, t->col, NULL, "%s must be 1 to %u", what, max);
	return (uint16_t)v;
}

/* A number, adjacency enforced: "12", "1.5", "-3". */
static slice_t
map_parse_number(map_ps_t *ps)
{
	const char *start = ps->tok.p;
	const char *end;

	if (ps->tok.kind == T_DASH) {
		if (ps->p >= ps->line + ps->len || *ps->p < '0' || *ps->p > '9') {
			map_fail(ps, ps->tok.col, NULL, "expected a number after '-'");
			return SLICE_NULL;
		}
		map_next(ps);
	}
	end = ps->tok.p + ps->tok.len;
	map_next(ps);
	if (ps->tok.kind == T_DOT && ps->tok.p == end && ps->p < ps->line + ps->len &&
	    isdigit((unsigned char)*ps->p)) {
		map_next(ps);
		end = ps->tok.p + ps->tok.len;
		map_next(ps);
	}
	return slice_make(start, (size_t)(end - start));
}

static slice_t
map_unescape(map_ps_t *ps, const map_tok_t *t)
{
	char *out = arena_alloc(ps->a, t->len);
	size_t n = 0;

	for (size_t i = 1; i + 1 < t->len; i++) {
		if (t->p[i] == '\\' && i + 2 < t->len &&
		    (t->p[i + 1] == '"' || t->p[i + 1] == '\\'))
			i++;
		out[n++] = t->p[i];
	}
	return slice_make(out, n);
}

/* Component part of a ref: ".c" or ".c.s" (the dot already current). */
static void
map_parse_components(map_ps_t *ps, map_ref_t *r)
{
	if (!map_accept_tok(ps, T_DOT))
		return;
	if (ps->tok.kind != T_NUM) {
		map_fail(ps, ps->tok.col, "components are numbered: PID-5.1, .4.1",
			 "expected a component number");
		return;
	}
	r->comp = map_tok_u16(ps, &ps->tok, 999, "a component number");
	map_next(ps);
	if (!map_accept_tok(ps, T_DOT))
		return;
	if (ps->tok.kind != T_NUM) {
		map_fail(ps, ps->tok.col, NULL, "expected a subcomponent number");
		return;
	}
	r->sub = map_tok_u16(ps, &ps->tok, 999, "a subcomponent number");
	map_next(ps);
}

static bool
map_is_relative_type(map_ps_t *ps, const map_tok_t *t)
{
	size_t n = strlen(ps->def->v2);

	return ps->def->kind == MAP_DATATYPE && t->kind == T_IDENT && t->len == n &&
	       memcmp(t->p, ps->def->v2, n) == 0;
}

/* SEG-f[r].c.s, a bare SEG (conditions), .c.s, or TYPE.c.s / TYPE-c in a map of TYPE. */
static bool
map_parse_ref(map_ps_t *ps, map_ref_t *r, bool allow_bare)
{
	map_tok_t t = ps->tok;

	memset(r, 0, sizeof(*r));
	if (t.kind == T_DOT) {
		if (ps->def->kind != MAP_DATATYPE) {
			map_fail(ps, t.col, "name the segment field: PID-3.1",
				 "relative references (.1) only work in datatype maps");
			return false;
		}
		/* "." alone is the whole value */
		if (ps->p < ps->line + ps->len && *ps->p >= '0' && *ps->p <= '9')
			map_parse_components(ps, r);
		else
			map_next(ps);
		return !ps->err;
	}
	if (t.kind != T_IDENT)
		return false;
	if (map_is_relative_type(ps, &t)) {
		map_next(ps);
		if (ps->tok.kind == T_DASH) {
			map_next(ps);
			if (ps->tok.kind != T_NUM) {
				map_fail(ps, ps->tok.col, NULL, "expected a component number");
				return false;
			}
			r->comp = map_tok_u16(ps, &ps->tok, 999, "a component number");
			map_next(ps);
			return !ps->err;
		}
		map_parse_components(ps, r);
		return !ps->err;
	}
	if (!map_is_segment_id(t.p, t.len))
		return false;
	memcpy(r->seg, t.p, 3);
	map_next(ps);
	if (ps->tok.kind != T_DASH) {
		if (allow_bare)
			return true;
		map_fail(ps, ps->tok.col, "write SEG-n, e.g. PID-5",
			 "expected '-' and a field number after %.3s", r->seg);
		return false;
	}
	map_next(ps);
	if (ps->tok.kind != T_NUM) {
		map_fail(ps, ps->tok.col, "write SEG-n, e.g. PID-5", "expected a field number");
		return false;
	}
	r->field = map_tok_u16(ps, &ps->tok, 999, "a field number");
	map_next(ps);
	if (ps->tok.kind == T_LB) {
		map_next(ps);
		if (ps->tok.kind != T_NUM) {
			map_fail(ps, ps->tok.col, "PID-3[2] is the second repetition",
				 "expected a repetition number");
			return false;
		}
		r->rep = map_tok_u16(ps, &ps->tok, 9999, "a repetition number");
		map_next(ps);
		map_expect(ps, T_RB, "']'");
	}
	map_parse_components(ps, r);
	return !ps->err;
}

/* An operand: a ref with an optional LST.COUNT or LENGTH, a string or a number. */
static bool
map_parse_operand(map_ps_t *ps, map_operand_t *o, bool allow_bare)
{
	memset(o, 0, sizeof(*o));
	o->col = ps->tok.col;
	if (ps->tok.kind == T_STR) {
		o->kind = MAP_OPD_STRING;
		o->text = map_unescape(ps, &ps->tok);
		map_next(ps);
		return true;
	}
	if (ps->tok.kind == T_NUM || ps->tok.kind == T_DASH) {
		o->kind = MAP_OPD_NUMBER;
		o->text = arena_slice_dup(ps->a, map_parse_number(ps));
		return !ps->err;
	}
	if (map_tok_is(&ps->tok, "true") || map_tok_is(&ps->tok, "false")) {
		o->kind = MAP_OPD_BOOL;
		o->text = arena_slice_dup(ps->a, slice_make(ps->tok.p, ps->tok.len));
		map_next(ps);
		return true;
	}
	o->kind = MAP_OPD_REF;
	if (!map_parse_ref(ps, &o->ref, allow_bare))
		return false;
	if (map_tok_is(&ps->tok, "lst")) {
		map_next(ps);
		map_expect(ps, T_DOT, "'.' in LST.COUNT");
		if (!map_accept(ps, "count"))
			map_fail(ps, ps->tok.col, NULL, "expected COUNT after LST.");
		o->fn = MAP_FN_COUNT;
	} else if (map_accept(ps, "length")) {
		o->fn = MAP_FN_LENGTH;
	}
	if (o->fn != MAP_FN_NONE && o->ref.seg[0] != '\0' && o->ref.field == 0)
		map_fail(ps, o->col, NULL, "LST.COUNT and LENGTH need a field");
	return !ps->err;
}

static map_cond_t *
map_cond_new(map_ps_t *ps, map_cond_kind_t kind)
{
	map_cond_t *c = arena_zalloc(ps->a, sizeof(*c));

	c->kind = kind;
	return c;
}

static map_cond_t *
map_cond_not(map_ps_t *ps, map_cond_t *in)
{
	map_cond_t *c = map_cond_new(ps, MAP_C_NOT);

	c->l = in;
	return c;
}

static map_cond_t *map_parse_or(map_ps_t *ps, unsigned depth);

/* "OR EQUAL[S] [TO]" after GREATER THAN / LESS THAN. */
static bool
map_accept_or_equal(map_ps_t *ps)
{
	map_ps_t save = *ps;

	if (map_accept(ps, "or") && (map_accept(ps, "equals") || map_accept(ps, "equal"))) {
		(void)map_accept(ps, "to");
		return true;
	}
	*ps = save;
	return false;
}

static map_cond_t *
map_parse_list(map_ps_t *ps, map_cond_t *c)
{
	map_operand_t *items = NULL;
	size_t n = 0;

	map_expect(ps, T_LP, "'(' opening the list");
	while (!ps->err && ps->tok.kind != T_RP) {
		map_operand_t o;

		if (!map_parse_operand(ps, &o, false) || o.fn != MAP_FN_NONE) {
			map_fail(ps, ps->tok.col, "IN (\"a\", \"b\")", "expected a list item");
			break;
		}
		items = xreallocarray(items, n + 1, sizeof(*items));
		items[n++] = o;
		if (!map_accept_tok(ps, T_COMMA))
			break;
	}
	map_expect(ps, T_RP, "')' closing the list");
	c->list = arena_alloc(ps->a, (n ? n : 1) * sizeof(*items));
	if (n > 0)
		memcpy(c->list, items, n * sizeof(*items));
	c->nlist = n;
	free(items);
	return c;
}

/* operand [predicate] */
static map_cond_t *
map_parse_predicate(map_ps_t *ps)
{
	map_cond_t *c;
	map_operand_t a;
	bool neg = false;
	unsigned col = ps->tok.col;

	if (!map_parse_operand(ps, &a, true)) {
		map_fail(ps, col, "conditions test fields: PID-8 EQUALS \"F\", PID-29 IS VALUED",
			 "expected a field, a string or a number");
		return NULL;
	}
	if (map_accept(ps, "is")) {
		neg = map_accept(ps, "not");
		if (map_accept(ps, "valued")) {
			c = map_cond_new(ps, MAP_C_VALUED);
		} else if (map_accept(ps, "in")) {
			c = map_parse_list(ps, map_cond_new(ps, MAP_C_IN));
		} else {
			c = map_cond_new(ps, MAP_C_CMP);
			c->op = MAP_CMP_EQ;
			(void)(map_accept(ps, "equals") || map_accept(ps, "equal"));
			(void)map_accept(ps, "to");
			if (!map_parse_operand(ps, &c->b, false))
				map_fail(ps, ps->tok.col, NULL, "expected a value to compare with");
		}
	} else if (map_accept(ps, "not")) {
		neg = true;
		if (map_accept(ps, "valued")) {
			c = map_cond_new(ps, MAP_C_VALUED);
		} else if (map_accept(ps, "in")) {
			c = map_parse_list(ps, map_cond_new(ps, MAP_C_IN));
		} else if (map_accept(ps, "equals") || map_accept(ps, "equal")) {
			(void)map_accept(ps, "to");
			c = map_cond_new(ps, MAP_C_CMP);
			c->op = MAP_CMP_EQ;
			if (!map_parse_operand(ps, &c->b, false))
				map_fail(ps, ps->tok.col, NULL, "expected a value to compare with");
		} else {
			map_fail(ps, ps->tok.col, NULL, "expected VALUED, IN or EQUALS after NOT");
			return NULL;
		}
	} else if (map_accept(ps, "valued")) {
		c = map_cond_new(ps, MAP_C_VALUED);
	} else if (map_accept(ps, "in")) {
		c = map_parse_list(ps, map_cond_new(ps, MAP_C_IN));
	} else {
		map_cmp_t op;

		if (map_accept(ps, "equals") || map_accept(ps, "equal")) {
			(void)map_accept(ps, "to");
			op = MAP_CMP_EQ;
		} else if (map_tok_is(&ps->tok, "greater") || map_tok_is(&ps->tok, "less")) {
			bool gt = map_tok_is(&ps->tok, "greater");

			map_next(ps);
			if (!map_accept(ps, "than"))
				map_fail(ps, ps->tok.col, NULL, "expected THAN");
			op = gt ? MAP_CMP_GT : MAP_CMP_LT;
			if (map_accept_or_equal(ps))
				op = gt ? MAP_CMP_GE : MAP_CMP_LE;
		} else if (ps->tok.kind >= T_EQ && ps->tok.kind <= T_GE) {
			static const map_cmp_t ops[] = {MAP_CMP_EQ, MAP_CMP_NE, MAP_CMP_LT,
							MAP_CMP_LE, MAP_CMP_GT, MAP_CMP_GE};

			op = ops[ps->tok.kind - T_EQ];
			map_next(ps);
		} else {
			/* A ref alone asks whether it is valued. */
			if (a.kind != MAP_OPD_REF || a.fn != MAP_FN_NONE) {
				map_fail(ps, ps->tok.col, "e.g. OBX-5 LST.COUNT GREATER THAN 1",
					 "expected a comparison");
				return NULL;
			}
			c = map_cond_new(ps, MAP_C_VALUED);
			c->a = a;
			return c;
		}
		c = map_cond_new(ps, MAP_C_CMP);
		c->op = op;
		if (!map_parse_operand(ps, &c->b, false))
			map_fail(ps, ps->tok.col, NULL, "expected a value to compare with");
	}
	if (ps->err)
		return NULL;
	c->a = a;
	if (c->kind != MAP_C_CMP && a.kind != MAP_OPD_REF)
		map_fail(ps, a.col, NULL, "only fields can be tested with VALUED or IN");
	if (c->kind == MAP_C_VALUED && a.fn != MAP_FN_NONE)
		map_fail(ps, a.col, NULL, "VALUED tests a field, not its count or length");
	return neg ? map_cond_not(ps, c) : c;
}

static map_cond_t *
map_parse_unary(map_ps_t *ps, unsigned depth)
{
	if (depth > 64) {
		map_fail(ps, ps->tok.col, NULL, "condition nested too deeply");
		return NULL;
	}
	if (map_accept(ps, "not"))
		return map_cond_not(ps, map_parse_unary(ps, depth + 1));
	if (ps->tok.kind == T_LP) {
		map_cond_t *c;

		map_next(ps);
		c = map_parse_or(ps, depth + 1);
		map_expect(ps, T_RP, "')'");
		return c;
	}
	return map_parse_predicate(ps);
}

static map_cond_t *
map_parse_and(map_ps_t *ps, unsigned depth)
{
	map_cond_t *l = map_parse_unary(ps, depth);

	while (!ps->err && map_tok_is(&ps->tok, "and")) {
		map_cond_t *c = map_cond_new(ps, MAP_C_AND);

		map_next(ps);
		c->l = l;
		c->r = map_parse_unary(ps, depth);
		l = c;
	}
	return l;
}

static map_cond_t *
map_parse_or(map_ps_t *ps, unsigned depth)
{
	map_cond_t *l = map_parse_and(ps, depth);

	while (!ps->err && map_tok_is(&ps->tok, "or")) {
		map_cond_t *c = map_cond_new(ps, MAP_C_OR);

		map_next(ps);
		c->l = l;
		c->r = map_parse_and(ps, depth);
		l = c;
	}
	return l;
}

/* "if COND" (an IG-style leading IF inside is accepted too). */
static map_cond_t *
map_parse_condition(map_ps_t *ps)
{
	map_cond_t *c;

	(void)map_accept(ps, "if");
	c = map_parse_or(ps, 0);
	if (!ps->err && ps->tok.kind != T_END)
		map_fail(ps, ps->tok.col, "join tests with AND / OR",
			 "unexpected text after the condition");
	return ps->err ? NULL : c;
}

/* A map or vocabulary name: Name or Name[Part-Part.Part], normalised without blanks. */
static slice_t
map_parse_name(map_ps_t *ps, const char *what)
{
	buf_t b = BUF_INIT;
	slice_t out;

	if (ps->tok.kind != T_IDENT || map_is_keyword(&ps->tok)) {
		map_fail(ps, ps->tok.col, NULL, "expected %s", what);
		return SLICE_NULL;
	}
	buf_append(&b, ps->tok.p, ps->tok.len);
	map_next(ps);
	if (ps->tok.kind == T_LB) {
		buf_append_byte(&b, '[');
		map_next(ps);
		for (;;) {
			if (ps->tok.kind != T_IDENT) {
				map_fail(ps, ps->tok.col, NULL, "expected a name inside [...]");
				break;
			}
			buf_append(&b, ps->tok.p, ps->tok.len);
			map_next(ps);
			if (ps->tok.kind == T_DASH || ps->tok.kind == T_DOT) {
				buf_append_byte(&b, ps->tok.kind == T_DASH ? '-' : '.');
				map_next(ps);
				continue;
			}
			break;
		}
		buf_append_byte(&b, ']');
		map_expect(ps, T_RB, "']'");
	}
	out = arena_slice_dup(ps->a, buf_slice(&b));
	buf_free(&b);
	return out;
}

/* path: step ('.' step)*, step: name ['[' n ']'] */
static void
map_parse_path(map_ps_t *ps, map_line_t *l)
{
	map_step_t *steps = NULL;
	size_t n = 0;

	for (;;) {
		map_step_t st;

		memset(&st, 0, sizeof(st));
		if (ps->tok.kind != T_IDENT || ps->tok.p[0] == '$') {
			map_fail(ps, ps->tok.col,
				 "targets are FHIR element paths: name.given, identifier[2].value",
				 "expected an element name");
			break;
		}
		st.name = arena_slice_dup(ps->a, slice_make(ps->tok.p, ps->tok.len));
		st.col = ps->tok.col;
		map_next(ps);
		if (ps->tok.kind == T_LB) {
			map_next(ps);
			if (ps->tok.kind != T_NUM) {
				map_fail(
				    ps, ps->tok.col,
				    "a choice is written with its type: valueString, valueQuantity",
				    "expected a number inside [...]");
				break;
			}
			st.index = map_tok_u16(ps, &ps->tok, 99, "an element index");
			map_next(ps);
			map_expect(ps, T_RB, "']'");
		}
		steps = xreallocarray(steps, n + 1, sizeof(*steps));
		steps[n++] = st;
		if (ps->tok.kind != T_DOT || ps->err)
			break;
		map_next(ps);
	}
	l->steps = arena_alloc(ps->a, (n ? n : 1) * sizeof(*steps));
	if (n > 0)
		memcpy(l->steps, steps, n * sizeof(*steps));
	l->nsteps = n;
	free(steps);
}

static void
map_src_add(map_ps_t *ps, map_src_t *s, const map_operand_t *o)
{
	map_operand_t *p = arena_alloc(ps->a, (s->nparts + 1) * sizeof(*p));

	if (s->nparts > 0)
		memcpy(p, s->parts, s->nparts * sizeof(*p));
	p[s->nparts++] = *o;
	s->parts = p;
}

/* A value part: a ref, a string or a number. */
static bool
map_parse_term(map_ps_t *ps, map_operand_t *o)
{
	unsigned col = ps->tok.col;

	if (!map_parse_operand(ps, o, false) || o->fn != MAP_FN_NONE || o->kind == MAP_OPD_BOOL) {
		map_fail(ps, col, "e.g. PID-5.1, .4.1, \"urn:oid:\" + .2",
			 "expected a field reference or a string");
		return false;
	}
	return true;
}

static void
map_src_cut(map_ps_t *ps, map_src_t *s)
{
	size_t *c = arena_alloc(ps->a, (s->ncuts + 1) * sizeof(*c));

	if (s->ncuts > 0)
		memcpy(c, s->cuts, s->ncuts * sizeof(*c));
	c[s->ncuts++] = s->nparts;
	s->cuts = c;
}

/* term ('+' term)*: one concatenation. */
static void
map_parse_concat(map_ps_t *ps, map_src_t *s)
{
	map_operand_t o;

	map_src_cut(ps, s);
	while (!ps->err) {
		if (!map_parse_term(ps, &o))
			return;
		map_src_add(ps, s, &o);
		if (!map_accept_tok(ps, T_PLUS))
			break;
	}
}

/* <- source: hash(ref, ...), join("sep", concat, ...) or a concatenation. */
static void
map_parse_source(map_ps_t *ps, map_line_t *l)
{
	map_src_t *s = &l->src;
	map_operand_t o;

	if (map_tok_is(&ps->tok, "hash") || map_tok_is(&ps->tok, "join")) {
		bool hash = map_tok_is(&ps->tok, "hash");

		s->kind = hash ? MAP_SRC_HASH : MAP_SRC_JOIN;
		map_next(ps);
		map_expect(ps, T_LP, "'('");
		if (!hash) {
			if (ps->tok.kind != T_STR) {
				map_fail(ps, ps->tok.col, "join(\" \", .1, .2)",
					 "expected the separator string");
				return;
			}
			s->sep = map_unescape(ps, &ps->tok);
			map_next(ps);
			map_expect(ps, T_COMMA, "','");
		}
		while (!ps->err) {
			if (hash) {
				if (!map_parse_term(ps, &o))
					return;
				if (o.kind != MAP_OPD_REF) {
					map_fail(ps, o.col, NULL, "hash() takes fields only");
					return;
				}
				map_src_add(ps, s, &o);
			} else {
				map_parse_concat(ps, s);
			}
			if (!map_accept_tok(ps, T_COMMA))
				break;
		}
		map_expect(ps, T_RP, "')'");
		if (hash != l->is_id && !ps->err)
			map_fail(ps, l->col, "write: id <- hash(PID-3.1, PID-3.4.1)",
				 hash ? "hash() only makes ids" : "id takes hash(...)");
		return;
	}
	s->kind = MAP_SRC_VALUE;
	map_parse_concat(ps, s);
	if (l->is_id && !ps->err)
		map_fail(ps, l->col, "write: id <- hash(PID-3.1, PID-3.4.1)", "id takes hash(...)");
}

/* as NAME, via NAME, follows SEG, SEG ... in any order. */
static void
map_parse_modifiers(map_ps_t *ps, map_line_t *l)
{
	for (;;) {
		if (map_tok_is(&ps->tok, "as")) {
			map_next(ps);
			l->as_col = ps->tok.col;
			l->as_name =
			    map_parse_name(ps, "a datatype or segment map name after 'as'");
		} else if (map_tok_is(&ps->tok, "via")) {
			map_next(ps);
			l->via_col = ps->tok.col;
			l->via_name = map_parse_name(ps, "a vocabulary name after 'via'");
		} else if (map_tok_is(&ps->tok, "follows") && ps->def->kind == MAP_MESSAGE) {
			map_next(ps);
			do {
				if (ps->tok.kind != T_IDENT ||
				    !map_is_segment_id(ps->tok.p, ps->tok.len)) {
					map_fail(ps, ps->tok.col, NULL,
						 "expected a segment id after 'follows'");
					return;
				}
				char(*f)[4] = arena_alloc(ps->a, (l->nfollows + 1) * sizeof(*f));

				if (l->nfollows > 0)
					memcpy(f, l->follows, l->nfollows * sizeof(*f));
				l->follows = f;
				memcpy(l->follows[l->nfollows], ps->tok.p, 3);
				l->follows[l->nfollows][3] = '\0';
				l->nfollows++;
				map_next(ps);
			} while (!ps->err && map_accept_tok(ps, T_COMMA));
		} else {
			break;
		}
		if (ps->err)
			return;
	}
}

static int
map_slot_find(map_ps_t *ps, slice_t type, uint16_t index, bool add)
{
	map_def_t *d = ps->def;
	map_slot_t *s;

	for (size_t i = 0; i < d->nslots; i++)
		if (slice_eq(d->slots[i].type, type) && d->slots[i].index == index)
			return (int)i;
	if (!add)
		return -1;
	s = arena_alloc(ps->a, (d->nslots + 1) * sizeof(*s));
	if (d->nslots > 0)
		memcpy(s, d->slots, d->nslots * sizeof(*s));
	memset(&s[d->nslots], 0, sizeof(*s));
	s[d->nslots].type = arena_slice_dup(ps->a, type);
	s[d->nslots].index = index;
	s[d->nslots].is_bundle = slice_eq_cstr(type, "Bundle");
	d->slots = s;
	return (int)d->nslots++;
}

/* Slot: Type or Type[n], a capital letter first. */
static int
map_parse_slot(map_ps_t *ps, bool add)
{
	slice_t type = slice_make(ps->tok.p, ps->tok.len);
	uint16_t index = 1;
	unsigned col = ps->tok.col;
	int slot;

	map_next(ps);
	if (ps->tok.kind == T_LB) {
		map_next(ps);
		if (ps->tok.kind != T_NUM) {
			map_fail(ps, ps->tok.col, NULL, "expected a number inside [...]");
			return -1;
		}
		index = map_tok_u16(ps, &ps->tok, 99, "a resource number");
		map_next(ps);
		map_expect(ps, T_RB, "']'");
	}
	if (ps->err)
		return -1;
	slot = map_slot_find(ps, type, index, add);
	if (slot < 0)
		map_fail(ps, col,
			 "a resource is made by a line 'Type[n] <- SEG as SEG[Type]' above",
			 "%.*s[%u] is not made by any line above", (int)type.len, type.ptr, index);
	return slot;
}

static bool
map_tok_is_slot(const map_tok_t *t)
{
	return t->kind == T_IDENT && isupper((unsigned char)t->p[0]) && !map_is_keyword(t);
}

typedef struct {
	map_line_t *lines;
	size_t n;
	map_group_t *groups;
	size_t ngroups;
	int open_group; /* innermost open group */
	slice_t *names;
	size_t nnames;
	map_ref_t *ignores;
	size_t nignores;
	int last_segment_line;
} map_pf_t;

static void
map_parse_group(map_ps_t *ps, map_pf_t *pf)
{
	map_group_t g;
	char(*opens)[4] = NULL;

	memset(&g, 0, sizeof(g));
	g.lineno = ps->lineno;
	if (ps->tok.kind != T_IDENT) {
		map_fail(ps, ps->tok.col, "group ORDER_OBSERVATION [ORC] OBR",
			 "expected a group name");
		return;
	}
	g.name = arena_slice_dup(ps->a, slice_make(ps->tok.p, ps->tok.len));
	map_next(ps);
	while (!ps->err && ps->tok.kind != T_END) {
		bool opt = map_accept_tok(ps, T_LB);

		if (ps->tok.kind != T_IDENT || !map_is_segment_id(ps->tok.p, ps->tok.len)) {
			map_fail(ps, ps->tok.col, "group ORDER_OBSERVATION [ORC] OBR",
				 "expected the segments that open the group");
			break;
		}
		opens = xreallocarray(opens, g.nopens + 1, sizeof(*opens));
		memcpy(opens[g.nopens], ps->tok.p, 3);
		opens[g.nopens++][3] = '\0';
		map_next(ps);
		if (opt)
			map_expect(ps, T_RB, "']'");
	}
	if (!ps->err && g.nopens == 0)
		map_fail(ps, ps->tok.col, "group ORDER_OBSERVATION [ORC] OBR",
			 "name the segments that open the group");
	if (!ps->err) {
		g.opens = arena_alloc(ps->a, g.nopens * sizeof(*opens));
		memcpy(g.opens, opens, g.nopens * sizeof(*opens));
		g.parent = pf->open_group;
		g.first = pf->n;
		g.last = (size_t)-1;
		pf->groups = xreallocarray(pf->groups, pf->ngroups + 1, sizeof(*pf->groups));
		pf->groups[pf->ngroups] = g;
		pf->open_group = (int)pf->ngroups++;
	}
	free(opens);
}

static void
map_parse_end(map_ps_t *ps, map_pf_t *pf)
{
	map_group_t *g;

	if (pf->open_group < 0) {
		map_fail(ps, 1, NULL, "'end' without an open group");
		return;
	}
	g = &pf->groups[pf->open_group];
	if (ps->tok.kind == T_IDENT) {
		if (!slice_eq(g->name, slice_make(ps->tok.p, ps->tok.len)))
			map_fail(ps, ps->tok.col, NULL, "'end %.*s' closes group %.*s",
				 (int)ps->tok.len, ps->tok.p, (int)g->name.len, g->name.ptr);
		map_next(ps);
	}
	g->last = pf->n;
	pf->open_group = g->parent;
}

static void
map_parse_applies(map_ps_t *ps, map_pf_t *pf)
{
	if (!map_accept(ps, "to")) {
		map_fail(ps, ps->tok.col, "applies to ADT_A04, ADT_A08", "expected 'to'");
		return;
	}
	do {
		if (ps->tok.kind != T_IDENT) {
			map_fail(ps, ps->tok.col, "message structures or events: ADT_A04",
				 "expected a message name");
			return;
		}
		pf->names = xreallocarray(pf->names, pf->nnames + 1, sizeof(*pf->names));
		pf->names[pf->nnames++] =
		    arena_slice_dup(ps->a, slice_make(ps->tok.p, ps->tok.len));
		map_next(ps);
	} while (map_accept_tok(ps, T_COMMA) || ps->tok.kind == T_IDENT);
}

/* ignore SEG-n, SEG-n, SEG: fields (or, in message maps, whole segments) left out on purpose,
 * so that explain does not list them. */
static void
map_parse_ignore(map_ps_t *ps, map_pf_t *pf)
{
	do {
		map_ref_t r;
		unsigned col = ps->tok.col;

		if (!map_parse_ref(ps, &r, ps->def->kind == MAP_MESSAGE) || r.seg[0] == '\0' ||
		    r.rep != 0 || r.comp != 0) {
			map_fail(
			    ps, col,
			    "ignore PID-1, PID-18  (whole fields; whole segments in message maps)",
			    "expected a field to ignore");
			return;
		}
		pf->ignores = xreallocarray(pf->ignores, pf->nignores + 1, sizeof(*pf->ignores));
		pf->ignores[pf->nignores++] = r;
	} while (map_accept_tok(ps, T_COMMA));
	if (ps->tok.kind != T_END)
		map_fail(ps, ps->tok.col, NULL, "unexpected text after the fields to ignore");
}

/* A message map line: Slot[.path] <- SEG ... as SEG[Type], or [Slot.]path = Slot | * | const. */
/* A message map line that takes a field: target <- SEG-f... [as X] [via Y], owned by the
 * segment line above it, as the reference lines are. */
static void
map_parse_message_value(map_ps_t *ps, map_pf_t *pf, map_line_t *l)
{
	if (l->nsteps == 0) {
		map_fail(ps, l->col, "Encounter[1].diagnosis[1].rank <- DG1-15",
			 "say which element takes the field");
		return;
	}
	if (pf->last_segment_line < 0) {
		map_fail(ps, l->col, "write a line 'Type[n] <- SEG as SEG[Type]' first",
			 "a line that takes a field follows the segment line it belongs to");
		return;
	}
	l->is_ref = true;
	l->owner = (size_t)pf->last_segment_line;
	map_parse_source(ps, l);
	if (!ps->err)
		map_parse_modifiers(ps, l);
	if (!ps->err && l->nfollows > 0)
		map_fail(ps, ps->tok.col, NULL,
			 "'follows' belongs on the segment line, not on the lines under it");
}

static void
map_parse_message_line(map_ps_t *ps, map_pf_t *pf, map_line_t *l)
{
	if (map_tok_is_slot(&ps->tok)) {
		map_ps_t save = *ps;
		bool arrow;

		map_next(ps);
		if (ps->tok.kind == T_LB) {
			while (ps->tok.kind != T_RB && ps->tok.kind != T_END)
				map_next(ps);
			map_next(ps);
		}
		while (ps->tok.kind == T_DOT || ps->tok.kind == T_IDENT || ps->tok.kind == T_LB ||
		       ps->tok.kind == T_RB || ps->tok.kind == T_NUM)
			map_next(ps);
		arrow = ps->tok.kind == T_ARROW;
		*ps = save;
		l->slot = map_parse_slot(ps, arrow);
	} else {
		if (pf->last_segment_line < 0) {
			map_fail(ps, ps->tok.col,
				 "write a line 'Type[n] <- SEG as SEG[Type]' first",
				 "expected a resource (Patient[1]) to start the line");
			return;
		}
		l->slot = pf->lines[pf->last_segment_line].slot;
		l->is_ref = true;
	}
	if (ps->err)
		return;
	if (ps->tok.kind == T_DOT) {
		map_next(ps);
		map_parse_path(ps, l);
	} else if (l->is_ref) {
		map_parse_path(ps, l);
	}
	if (ps->err)
		return;
	/* IG style: Encounter[1].subject.reference = Patient[1].id */
	if (l->nsteps > 1 && slice_eq_cstr(l->steps[l->nsteps - 1].name, "reference"))
		l->nsteps--;
	if (map_accept_tok(ps, T_ARROW)) {
		/* "Encounter[1].diagnosis[1].rank <- DG1-15": a field of the segment line above
		 * into an element of a resource (with the line's other references: their [n]
		 * name the same elements) */
		if (ps->tok.kind == T_IDENT && map_is_segment_id(ps->tok.p, ps->tok.len) &&
		    ps->p < ps->line + ps->len && *ps->p == '-') {
			map_parse_message_value(ps, pf, l);
			return;
		}
		if (l->is_ref) {
			map_fail(ps, ps->tok.col, NULL, "only a resource takes '<- SEG'");
			return;
		}
		if (ps->tok.kind != T_IDENT || !map_is_segment_id(ps->tok.p, ps->tok.len)) {
			map_fail(ps, ps->tok.col, "Patient[1] <- PID as PID[Patient]",
				 "expected a segment id");
			return;
		}
		l->src.kind = MAP_SRC_SEGMENT;
		memcpy(l->src.seg, ps->tok.p, 3);
		map_next(ps);
		map_parse_modifiers(ps, l);
		if (!ps->err && l->as_name.len == 0)
			map_fail(ps, ps->tok.col, "Patient[1] <- PID as PID[Patient]",
				 "say which segment map builds it: 'as SEG[Type]'");
		if (!ps->err && l->via_name.len > 0)
			map_fail(ps, l->via_col, NULL,
				 "'via' has no meaning on a message map line");
	} else if (map_accept_tok(ps, T_EQ)) {
		if (l->nsteps == 0) {
			map_fail(ps, ps->tok.col, "Encounter[1].subject = Patient[1]",
				 "say which element takes the reference");
			return;
		}
		if (pf->last_segment_line < 0) {
			map_fail(ps, l->col, NULL,
				 "a reference line follows the segment line it belongs to");
			return;
		}
		l->is_ref = true;
		l->owner = (size_t)pf->last_segment_line;
		if (map_accept_tok(ps, T_STAR)) {
			l->src.kind = MAP_SRC_ALL;
		} else if (map_tok_is_slot(&ps->tok)) {
			l->src.kind = MAP_SRC_SLOT;
			l->src.slot = map_parse_slot(ps, false);
			if (!ps->err && ps->tok.kind == T_DOT) { /* IG style "Patient[1].id" */
				map_next(ps);
				if (!map_accept(ps, "id"))
					map_fail(ps, ps->tok.col, NULL,
						 "a reference names a resource: Patient[1]");
			}
		} else {
			map_operand_t o;

			if (!map_parse_operand(ps, &o, false) || o.kind == MAP_OPD_REF) {
				map_fail(ps, ps->tok.col,
					 "Encounter[1].subject = Patient[1], status = \"finished\"",
					 "expected a resource, '*' or a constant");
				return;
			}
			l->src.kind = MAP_SRC_CONST;
			map_src_add(ps, &l->src, &o);
		}
	} else {
		map_fail(ps, ps->tok.col, NULL, "expected '<-' or '='");
	}
}

/* A segment or datatype map line: target (<- source mods | = const) [if cond]. */
static void
map_parse_map_line(map_ps_t *ps, map_line_t *l)
{
	if (ps->tok.kind == T_IDENT &&
	    slice_eq_cstr(slice_make(ps->tok.p, ps->tok.len), "$value")) {
		l->to_value = true;
		map_next(ps);
	} else if (map_tok_is_slot(&ps->tok)) {
		map_fail(ps, ps->tok.col,
			 "write the path inside the resource: name.family, not Patient.name.family",
			 "element paths start with a lower-case element name");
		return;
	} else {
		map_parse_path(ps, l);
		l->is_id = l->nsteps == 1 && slice_eq_cstr(l->steps[0].name, "id");
	}
	if (ps->err)
		return;
	if (map_accept_tok(ps, T_ARROW)) {
		map_parse_source(ps, l);
		if (!ps->err)
			map_parse_modifiers(ps, l);
	} else if (map_accept_tok(ps, T_EQ)) {
		map_operand_t o;
		unsigned col = ps->tok.col;

		if (!map_parse_operand(ps, &o, false) || o.kind == MAP_OPD_REF) {
			map_fail(
			    ps, col,
			    "constants are \"text\", numbers, true or false; take fields with '<-'",
			    "expected a constant after '='");
			return;
		}
		l->src.kind = MAP_SRC_CONST;
		map_src_add(ps, &l->src, &o);
		if (l->is_id)
			map_fail(ps, l->col, "write: id <- hash(PID-3.1, PID-3.4.1)",
				 "id takes hash(...)");
	} else {
		map_fail(ps, ps->tok.col,
			 "target <- PID-5 as XPN[HumanName], or target = \"constant\"",
			 "expected '<-' or '='");
	}
}

static void
map_parse_line(map_ps_t *ps, map_pf_t *pf)
{
	map_line_t l;

	map_next(ps);
	if (ps->tok.kind == T_END)
		return;
	memset(&l, 0, sizeof(l));
	l.file = ps->def->path;
	l.lineno = ps->lineno;
	l.col = ps->tok.col;
	l.slot = -1;
	l.group = pf->open_group;
	if (ps->def->kind != MAP_DATATYPE && map_accept(ps, "ignore")) {
		map_parse_ignore(ps, pf);
		return;
	}
	if (ps->def->kind == MAP_MESSAGE) {
		if (map_accept(ps, "applies")) {
			map_parse_applies(ps, pf);
			return;
		}
		if (map_accept(ps, "extends")) {
			if (ps->tok.kind != T_IDENT || pf->n > 0 || ps->def->extends.len > 0) {
				map_fail(ps, ps->tok.col,
					 "extends ADT_A01  (first, before any line)",
					 "expected the message map this file adds to");
				return;
			}
			ps->def->extends =
			    arena_slice_dup(ps->a, slice_make(ps->tok.p, ps->tok.len));
			map_next(ps);
			return;
		}
		if (map_accept(ps, "group")) {
			map_parse_group(ps, pf);
			return;
		}
		if (map_accept(ps, "end")) {
			map_parse_end(ps, pf);
			return;
		}
		map_parse_message_line(ps, pf, &l);
	} else {
		map_parse_map_line(ps, &l);
	}
	if (ps->err)
		return;
	if (map_tok_is(&ps->tok, "if")) {
		map_next(ps);
		l.cond = map_parse_condition(ps);
	} else if (ps->tok.kind != T_END) {
		map_fail(ps, ps->tok.col, "lines end with an optional 'if CONDITION'",
			 "unexpected text");
	}
	if (ps->err)
		return;
	if (l.is_ref && ps->def->kind == MAP_MESSAGE)
		l.owner = (size_t)pf->last_segment_line;
	pf->lines = xreallocarray(pf->lines, pf->n + 1, sizeof(*pf->lines));
	pf->lines[pf->n++] = l;
	if (ps->def->kind == MAP_MESSAGE && l.src.kind == MAP_SRC_SEGMENT)
		pf->last_segment_line = (int)pf->n - 1;
}

bool
map_path_kind(const char *rel, map_kind_t *kind)
{
	static const struct {
		const char *dir, *ext;
		map_kind_t kind;
	} kinds[] = {
	    {"messages/", ".map", MAP_MESSAGE},
	    {"segments/", ".map", MAP_SEGMENT},
	    {"datatypes/", ".map", MAP_DATATYPE},
	    {"vocab/", ".csv", MAP_VOCAB},
	};
	size_t n = strlen(rel);

	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
		size_t dl = strlen(kinds[i].dir), el = strlen(kinds[i].ext);

		if (n > dl + el && strncmp(rel, kinds[i].dir, dl) == 0 &&
		    strcmp(rel + n - el, kinds[i].ext) == 0 && strchr(rel + dl, '/') == NULL) {
			*kind = kinds[i].kind;
			return true;
		}
	}
	return false;
}

/* The name a file gives its map: "PID-Patient.map" -> PID[Patient]; false if malformed. */
static bool
map_def_name(map_ps_t *ps, map_def_t *d)
{
	const char *base = strchr(d->rel, '/') + 1;
	const char *dot = strrchr(base, '.');
	size_t n = (size_t)(dot - base);
	const char *dash = memchr(base, '-', n);

	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)base[i]) && base[i] != '_' && base[i] != '-')
			return false;
	if (d->kind == MAP_MESSAGE) {
		d->name = arena_slice_dup(ps->a, slice_make(base, n));
		return n > 0;
	}
	if (dash == NULL) {
		if (d->kind != MAP_VOCAB)
			return false;
		d->name = arena_slice_dup(ps->a, slice_make(base, n));
		return n > 0;
	}
	{
		size_t hl = (size_t)(dash - base), tl = n - hl - 1;
		char *name = arena_alloc(ps->a, n + 2);
		const char *tdash;

		if (hl == 0 || tl == 0 || (d->kind != MAP_VOCAB && hl >= sizeof(d->v2)))
			return false;
		memcpy(name, base, hl);
		name[hl] = '[';
		memcpy(name + hl + 1, dash + 1, tl);
		name[n] = ']';
		d->name = slice_make(name, n + 1);
		if (d->kind == MAP_VOCAB)
			return true;
		memcpy(d->v2, base, hl);
		d->v2[hl] = '\0';
		tdash = memchr(dash + 1, '-', tl);
		d->fhir =
		    slice_make(name + hl + 1, tdash != NULL ? (size_t)(tdash - dash - 1) : tl);
		if (d->kind == MAP_SEGMENT && !map_is_segment_id(base, hl))
			return false;
	}
	return true;
}

/* CSV fields of one line (RFC 4180 quoting); false on a broken quote. */
static bool
map_csv_split(arena_t *a, const char *p, size_t len, slice_t *out, size_t max, size_t *n,
	      unsigned *bad_col)
{
	size_t i = 0;

	*n = 0;
	for (;;) {
		char *f = arena_alloc(a, len + 1);
		size_t fl = 0;

		if (i < len && p[i] == '"') {
			i++;
			for (;;) {
				if (i >= len) {
					*bad_col = (unsigned)i;
					return false;
				}
				if (p[i] == '"') {
					if (i + 1 < len && p[i + 1] == '"') {
						f[fl++] = '"';
						i += 2;
						continue;
					}
					i++;
					break;
				}
				f[fl++] = p[i++];
			}
			if (i < len && p[i] != ',') {
				*bad_col = (unsigned)i + 1;
				return false;
			}
		} else {
			while (i < len && p[i] != ',')
				f[fl++] = p[i++];
		}
		if (*n < max)
			out[(*n)++] = slice_trim(slice_make(f, fl));
		if (i >= len)
			return true;
		i++; /* the comma */
	}
}

static int
map_vkey_cmp(const void *x, const void *y)
{
	const map_vkey_t *a = x, *b = y;
	int c =
	    memcmp(a->code.ptr, b->code.ptr, a->code.len < b->code.len ? a->code.len : b->code.len);

	if (c != 0)
		return c;
	if (a->code.len != b->code.len)
		return a->code.len < b->code.len ? -1 : 1;
	return a->row < b->row ? -1 : a->row > b->row;
}

/* A vocabulary: a header naming the columns, then one row per v2 code. */
static void
map_parse_vocab(map_ps_t *ps, map_diags_t *dg, const char *data, size_t len)
{
	static const char *cols[] = {"v2 code", "v2 system", "code", "display", "system"};
	int idx[5] = {-1, -1, -1, -1, -1};
	map_vrow_t *rows = NULL;
	size_t nrows = 0;
	bool header = false;
	const char *p = data, *end = data + len;
	unsigned lineno = 0;
	map_def_t *d = ps->def;

	while (p < end) {
		const char *eol = p;
		slice_t f[32];
		size_t nf;
		unsigned bad = 0;

		while (eol < end && *eol != '\n' && *eol != '\r')
			eol++;
		lineno++;
		if (eol - p > MAP_LINE_MAX) {
			map_diag(dg, MAP_DIAG_ERROR, d->path, lineno, 1, NULL,
				 "line longer than %d bytes", MAP_LINE_MAX);
		} else if (eol > p && *p != '#' &&
			   !slice_is_empty(slice_trim(slice_make(p, (size_t)(eol - p))))) {
			if (!map_csv_split(ps->a, p, (size_t)(eol - p), f, 32, &nf, &bad)) {
				map_diag(dg, MAP_DIAG_ERROR, d->path, lineno, bad,
					 "double a quote inside a quoted field: \"\"",
					 "broken CSV quoting");
			} else if (!header) {
				header = true;
				for (size_t i = 0; i < nf; i++)
					for (size_t c = 0; c < 5; c++)
						if (slice_eq_nocase(f[i], slice_cstr(cols[c])))
							idx[c] = (int)i;
				if (idx[0] < 0 || idx[2] < 0)
					map_diag(dg, MAP_DIAG_ERROR, d->path, lineno, 1,
						 "the first line names the columns: v2 code,v2 "
						 "system,code,display,system",
						 "the header needs at least the columns 'v2 code' "
						 "and 'code'");
			} else if (idx[0] >= 0 && idx[2] >= 0) {
				map_vrow_t r;
				slice_t *cells[] = {&r.code, &r.system, &r.fcode, &r.fdisplay,
						    &r.fsystem};

				memset(&r, 0, sizeof(r));
				r.lineno = lineno;
				for (size_t c = 0; c < 5; c++)
					if (idx[c] >= 0 && (size_t)idx[c] < nf)
						*cells[c] = f[idx[c]];
				if (r.code.len == 0 || r.fcode.len == 0) {
					map_diag(dg, MAP_DIAG_ERROR, d->path, lineno, 1, NULL,
						 "a row needs a v2 code and a code");
				} else {
					rows = xreallocarray(rows, nrows + 1, sizeof(*rows));
					rows[nrows++] = r;
				}
			}
		}
		p = eol;
		if (p < end && *p == '\r')
			p++;
		if (p < end && *p == '\n')
			p++;
	}
	if (!header)
		map_diag(dg, MAP_DIAG_ERROR, d->path, 1, 1,
			 "the first line names the columns: v2 code,v2 system,code,display,system",
			 "empty vocabulary");
	d->rows = arena_alloc(ps->a, (nrows ? nrows : 1) * sizeof(*rows));
	if (nrows > 0)
		memcpy(d->rows, rows, nrows * sizeof(*rows));
	d->nrows = nrows;
	free(rows);
	/* conversions look codes up in this order instead of reading every row */
	d->vkeys = arena_alloc(ps->a, (nrows ? nrows : 1) * sizeof(*d->vkeys));
	for (size_t i = 0; i < nrows; i++)
		d->vkeys[i] = (map_vkey_t){d->rows[i].code, (uint32_t)i};
	if (nrows > 1)
		qsort(d->vkeys, nrows, sizeof(*d->vkeys), map_vkey_cmp);
}

map_def_t *
map_def_parse(arena_t *a, const map_file_t *f, map_diags_t *dg)
{
	map_def_t *d = arena_zalloc(a, sizeof(*d));
	map_ps_t ps;
	map_pf_t pf;
	size_t errors = dg->errors;
	const char *p, *end;

	memset(&ps, 0, sizeof(ps));
	memset(&pf, 0, sizeof(pf));
	pf.open_group = -1;
	pf.last_segment_line = -1;
	ps.a = a;
	ps.def = d;
	d->rel = arena_strndup(a, f->path, strlen(f->path));
	d->path =
	    arena_strndup(a, f->shown ? f->shown : f->path, strlen(f->shown ? f->shown : f->path));
	d->site = f->site;
	if (!map_path_kind(f->path, &d->kind)) {
		map_diag(dg, MAP_DIAG_ERROR, d->path, 0, 0,
			 "mapping files are messages/*.map, segments/*.map, datatypes/*.map, "
			 "vocab/*.csv",
			 "not a mapping file");
		return NULL;
	}
	if (!map_def_name(&ps, d)) {
		map_diag(dg, MAP_DIAG_ERROR, d->path, 0, 0,
			 d->kind == MAP_SEGMENT
			     ? "name segment maps SEG-Type.map, e.g. PID-Patient.map"
			 : d->kind == MAP_DATATYPE
			     ? "name datatype maps TYPE-Target.map, e.g. CX-Identifier.map"
			     : "letters, digits, '_' and '-' only",
			 "bad file name");
		return NULL;
	}
	if (f->len > MAP_FILE_MAX) {
		map_diag(dg, MAP_DIAG_ERROR, d->path, 0, 0, NULL, "file larger than %u bytes",
			 MAP_FILE_MAX);
		return NULL;
	}
	if (d->kind == MAP_VOCAB) {
		map_parse_vocab(&ps, dg, f->data, f->len);
		return dg->errors > errors ? NULL : d;
	}
	p = f->data;
	end = f->data + f->len;
	if (end - p >= 3 && memcmp(p, "\xef\xbb\xbf", 3) == 0)
		p += 3;
	while (p < end) {
		const char *eol = p;

		while (eol < end && *eol != '\n' && *eol != '\r')
			eol++;
		ps.lineno++;
		ps.line = p;
		ps.len = (size_t)(eol - p);
		ps.p = p;
		ps.err = false;
		if (memchr(p, '\0', ps.len) != NULL) {
			map_diag(dg, MAP_DIAG_ERROR, d->path, ps.lineno, 1, NULL,
				 "NUL byte in a mapping file");
		} else if (ps.len > MAP_LINE_MAX) {
			map_diag(dg, MAP_DIAG_ERROR, d->path, ps.lineno, 1, "split the line",
				 "line longer than %d bytes", MAP_LINE_MAX);
		} else {
			map_parse_line(&ps, &pf);
			if (ps.err)
				map_diag(dg, MAP_DIAG_ERROR, d->path, ps.lineno, ps.err_col,
					 ps.hint[0] ? ps.hint : NULL, "%s", ps.msg);
		}
		p = eol;
		if (p < end && *p == '\r')
			p++;
		if (p < end && *p == '\n')
			p++;
	}
	if (pf.open_group >= 0)
		map_diag(dg, MAP_DIAG_ERROR, d->path, pf.groups[pf.open_group].lineno, 1,
			 "close it with 'end'", "group %.*s is not closed",
			 (int)pf.groups[pf.open_group].name.len, pf.groups[pf.open_group].name.ptr);
	if (d->extends.len > 0 && pf.nnames > 0)
		map_diag(dg, MAP_DIAG_ERROR, d->path, 1, 1,
			 "the map it extends says which messages it serves",
			 "a file that extends another map has no 'applies to'");
	if (d->kind != MAP_MESSAGE && pf.nnames > 0)
		map_diag(dg, MAP_DIAG_ERROR, d->path, 1, 1, NULL,
			 "'applies to' belongs in message maps");
	d->lines = arena_alloc(a, (pf.n ? pf.n : 1) * sizeof(*pf.lines));
	if (pf.n > 0)
		memcpy(d->lines, pf.lines, pf.n * sizeof(*pf.lines));
	d->nlines = pf.n;
	d->groups = arena_alloc(a, (pf.ngroups ? pf.ngroups : 1) * sizeof(*pf.groups));
	if (pf.ngroups > 0)
		memcpy(d->groups, pf.groups, pf.ngroups * sizeof(*pf.groups));
	d->ngroups = pf.ngroups;
	d->names = arena_alloc(a, (pf.nnames + 1) * sizeof(*pf.names));
	d->names[0] = d->name;
	if (pf.nnames > 0)
		memcpy(d->names + 1, pf.names, pf.nnames * sizeof(*pf.names));
	d->nnames = d->kind == MAP_MESSAGE && d->extends.len == 0 ? pf.nnames + 1 : 0;
	d->ignores = arena_alloc(a, (pf.nignores ? pf.nignores : 1) * sizeof(*pf.ignores));
	if (pf.nignores > 0)
		memcpy(d->ignores, pf.ignores, pf.nignores * sizeof(*pf.ignores));
	d->nignores = pf.nignores;
	free(pf.lines);
	free(pf.groups);
	free(pf.names);
	free(pf.ignores);
	return dg->errors > errors ? NULL : d;
}

map_cond_t *
map_cond_parse_text(arena_t *a, const char *text, char *err, size_t cap)
{
	map_def_t d;
	map_ps_t ps;
	map_cond_t *c;

	memset(&d, 0, sizeof(d));
	d.kind = MAP_SEGMENT;
	memset(&ps, 0, sizeof(ps));
	ps.a = a;
	ps.def = &d;
	ps.line = text;
	ps.len = strlen(text);
	ps.p = text;
	map_next(&ps);
	c = map_parse_condition(&ps);
	if (ps.err) {
		snprintf(err, cap, "col %u: %s", ps.err_col, ps.msg);
		return NULL;
	}
	return c;
}

map_builtin_t
map_builtin_lookup(slice_t name)
{
	static const struct {
		const char *name;
		map_builtin_t bi;
	} bis[] = {
	    {"DTM[date]", MAP_BI_DATE},
	    {"DTM[dateTime]", MAP_BI_DATETIME},
	    {"DTM[instant]", MAP_BI_INSTANT},
	    {"TS[date]", MAP_BI_DATE},
	    {"TS[dateTime]", MAP_BI_DATETIME},
	    {"TS[instant]", MAP_BI_INSTANT},
	    {"DT[date]", MAP_BI_DATE},
	    {"DT[dateTime]", MAP_BI_DATETIME},
	    {"TM[time]", MAP_BI_TIME},
	    {"NM[decimal]", MAP_BI_DECIMAL},
	    {"NM[integer]", MAP_BI_INTEGER},
	    {"NM[positiveInt]", MAP_BI_POSITIVE},
	    {"NM[unsignedInt]", MAP_BI_UNSIGNED},
	    {"SI[positiveInt]", MAP_BI_POSITIVE},
	    {"ID[boolean]", MAP_BI_BOOLEAN},
	    {"ST[string]", MAP_BI_STRING},
	    {"ST[base64Binary]", MAP_BI_BASE64},
	};

	for (size_t i = 0; i < sizeof(bis) / sizeof(bis[0]); i++)
		if (slice_eq_cstr(name, bis[i].name))
			return bis[i].bi;
	return MAP_BI_NONE;
}

void
map_diag(map_diags_t *dg, map_diag_level_t level, const char *file, unsigned line, unsigned col,
	 const char *hint, const char *fmt, ...)
{
	char text[512];
	va_list ap;
	map_diag_t d;

	if (level == MAP_DIAG_ERROR)
		dg->errors++;
	else
		dg->warnings++;
	if (dg->fn == NULL)
		return;
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	d.level = level;
	d.file = file;
	d.line = line;
	d.col = col;
	d.text = text;
	d.hint = hint;
	dg->fn(&d, dg->arg);
}
