/* FHIR JSON in and out: yajl's event parser builds the tree, yajl's generator writes it. */
#include "config.h"

#include "fhir/json.h"

#include <stdio.h>
#include <string.h>

#include <yajl/yajl_gen.h>
#include <yajl/yajl_parse.h>

#include "lib/err.h"

#define JSON_MAX_BYTES_DEFAULT ((size_t)64 << 20)
#define JSON_MAX_DEPTH_DEFAULT 64

typedef struct {
	arena_t *a;
	fhir_node_t **stack; /* open containers, innermost last */
	size_t depth, max_depth;
	fhir_node_t *root;
	int rc;          /* set when a callback stops the parse */
	const char *why; /* and what it stopped for */
} json_parse_t;

/* Places a finished value (or a container just opened) in its parent. */
static int
json_parse_add(json_parse_t *p, fhir_node_t *v)
{
	fhir_node_t *parent;

	if (p->depth == 0) {
		p->root = v;
		return 1;
	}
	parent = p->stack[p->depth - 1];
	if (fhir_node_kind(parent) == FHIR_ARRAY)
		fhir_array_append(p->a, parent, v);
	else
		fhir_object_set_value_at(parent, fhir_object_count(parent) - 1, v);
	return 1;
}

static int
json_parse_open(json_parse_t *p, fhir_node_t *c)
{
	if (p->depth == p->max_depth) {
		p->rc = -FG_ETOOBIG;
		p->why = "nesting too deep";
		return 0;
	}
	json_parse_add(p, c);
	p->stack[p->depth++] = c;
	return 1;
}

static int
json_on_null(void *ctx)
{
	json_parse_t *p = ctx;

	return json_parse_add(p, fhir_null_new(p->a));
}

static int
json_on_boolean(void *ctx, int v)
{
	json_parse_t *p = ctx;

	return json_parse_add(p, fhir_bool_new(p->a, v != 0));
}

static int
json_on_number(void *ctx, const char *s, size_t len)
{
	json_parse_t *p = ctx;

	return json_parse_add(p, fhir_number_new(p->a, slice_make(s, len)));
}

static int
json_on_string(void *ctx, const unsigned char *s, size_t len)
{
	json_parse_t *p = ctx;

	return json_parse_add(p, fhir_string_new(p->a, slice_make((const char *)s, len)));
}

static int
json_on_start_map(void *ctx)
{
	json_parse_t *p = ctx;

	return json_parse_open(p, fhir_object_new(p->a));
}

/* The key goes in at once (its value follows), which is also where a duplicate shows. */
static int
json_on_map_key(void *ctx, const unsigned char *key, size_t len)
{
	json_parse_t *p = ctx;

	if (!fhir_object_add_new(p->a, p->stack[p->depth - 1], slice_make((const char *)key, len),
				 NULL)) {
		p->rc = -FG_EPARSE;
		p->why = "duplicate key";
		return 0;
	}
	return 1;
}

static int
json_on_end(void *ctx)
{
	json_parse_t *p = ctx;

	p->depth--;
	return 1;
}

static int
json_on_start_array(void *ctx)
{
	json_parse_t *p = ctx;

	return json_parse_open(p, fhir_array_new(p->a));
}

static const yajl_callbacks json_callbacks = {
    .yajl_null = json_on_null,
    .yajl_boolean = json_on_boolean,
    .yajl_number = json_on_number,
    .yajl_string = json_on_string,
    .yajl_start_map = json_on_start_map,
    .yajl_map_key = json_on_map_key,
    .yajl_end_map = json_on_end,
    .yajl_start_array = json_on_start_array,
    .yajl_end_array = json_on_end,
};

/* Line and column (from 1, counting characters) of the last byte yajl consumed, which ends the
 * token that failed: off is yajl's count of bytes consumed. */
static void
json_position(const char *data, size_t len, size_t off, size_t *line, size_t *col)
{
	*line = 1;
	*col = 1;
	if (off > len)
		off = len;
	if (off > 0)
		off--;
	for (size_t i = 0; i < off; i++) {
		if (data[i] == '\n') {
			(*line)++;
			*col = 1;
		} else if (((unsigned char)data[i] & 0xc0) != 0x80) {
			(*col)++;
		}
	}
}

/* yajl's message without its "parse error: " / "lexical error: " prefix and trailing space. */
static void
json_error_text(yajl_handle h, const char *data, size_t len, size_t off, char *err, size_t cap)
{
	unsigned char *msg = yajl_get_error(h, 0, (const unsigned char *)data, len);
	const char *m = (const char *)msg, *colon = strstr(m, "error: ");
	size_t mlen, line, col;

	if (colon != NULL)
		m = colon + strlen("error: ");
	mlen = strlen(m);
	while (mlen > 0 && (m[mlen - 1] == '\n' || m[mlen - 1] == ' ' || m[mlen - 1] == '.'))
		mlen--;
	json_position(data, len, off, &line, &col);
	snprintf(err, cap, "line %zu, column %zu: %.*s", line, col, (int)mlen, m);
	yajl_free_error(h, msg);
}

int
fhir_json_parse(arena_t *a, const char *data, size_t len, const fhir_json_limits_t *lim,
		fhir_node_t **out, char *err, size_t cap)
{
	size_t max_bytes = lim != NULL && lim->max_bytes ? lim->max_bytes : JSON_MAX_BYTES_DEFAULT;
	json_parse_t p = {.a = a};
	yajl_handle h;
	yajl_status st;
	int rc = 0;

	*out = NULL;
	if (cap > 0)
		err[0] = '\0';
	if (len > max_bytes) {
		snprintf(err, cap, "document of %zu bytes exceeds the limit of %zu", len,
			 max_bytes);
		return -FG_ETOOBIG;
	}
	p.max_depth = lim != NULL && lim->max_depth ? lim->max_depth : JSON_MAX_DEPTH_DEFAULT;
	p.stack = arena_alloc(a, p.max_depth * sizeof(*p.stack));
	h = yajl_alloc(&json_callbacks, NULL, &p);
	st = yajl_parse(h, (const unsigned char *)data, len);
	if (st == yajl_status_ok)
		st = yajl_complete_parse(h);
	if (st == yajl_status_client_canceled) {
		size_t line, col;

		json_position(data, len, yajl_get_bytes_consumed(h), &line, &col);
		snprintf(err, cap, "line %zu, column %zu: %s", line, col, p.why);
		rc = p.rc;
	} else if (st != yajl_status_ok) {
		json_error_text(h, data, len, yajl_get_bytes_consumed(h), err, cap);
		rc = -FG_EPARSE;
	} else {
		*out = p.root;
	}
	yajl_free(h);
	return rc;
}

/* Writing. */

static yajl_gen_status
json_write_node(yajl_gen g, const fhir_node_t *n)
{
	yajl_gen_status st = yajl_gen_status_ok;
	slice_t t;
	size_t i;

	if (n == NULL)
		return yajl_gen_null(g);
	switch (fhir_node_kind(n)) {
	case FHIR_NULL:
		return yajl_gen_null(g);
	case FHIR_BOOL:
		return yajl_gen_bool(g, fhir_node_bool(n));
	case FHIR_NUMBER:
		t = fhir_node_text(n);
		return yajl_gen_number(g, t.ptr, t.len);
	case FHIR_STRING:
		t = fhir_node_text(n);
		return yajl_gen_string(g, (const unsigned char *)t.ptr, t.len);
	case FHIR_RAW:
		/* yajl copies a number's text as given, with the separators around it. */
		t = fhir_node_text(n);
		return yajl_gen_number(g, t.ptr, t.len);
	case FHIR_OBJECT:
		st = yajl_gen_map_open(g);
		for (i = 0; st == yajl_gen_status_ok && i < fhir_object_count(n); i++) {
			t = fhir_object_key_at(n, i);
			st = yajl_gen_string(g, (const unsigned char *)t.ptr, t.len);
			if (st == yajl_gen_status_ok)
				st = json_write_node(g, fhir_object_value_at(n, i));
		}
		return st == yajl_gen_status_ok ? yajl_gen_map_close(g) : st;
	case FHIR_ARRAY:
		st = yajl_gen_array_open(g);
		for (i = 0; st == yajl_gen_status_ok && i < fhir_array_len(n); i++)
			st = json_write_node(g, fhir_array_at(n, i));
		return st == yajl_gen_status_ok ? yajl_gen_array_close(g) : st;
	}
	return yajl_gen_invalid_string;
}

int
fhir_json_write(const fhir_node_t *n, bool pretty, buf_t *out)
{
	yajl_gen g = yajl_gen_alloc(NULL);
	yajl_gen_status st;
	const unsigned char *text;
	size_t len;
	int rc;

	/* The tree promises UTF-8, but output is where a broken promise would reach a peer. */
	yajl_gen_config(g, yajl_gen_validate_utf8, 1);
	if (pretty) {
		yajl_gen_config(g, yajl_gen_beautify, 1);
		yajl_gen_config(g, yajl_gen_indent_string, "  ");
	}
	/* Into yajl's own buffer, then one append: yajl emits many tiny pieces, and its buffer
	 * takes them cheaper than a capped buf_t can. Its size is bounded by the tree's. */
	st = json_write_node(g, n);
	if (st == yajl_gen_status_ok) {
		yajl_gen_get_buf(g, &text, &len);
		rc = buf_append(out, text, len);
	} else {
		rc = st == yajl_max_depth_exceeded ? -FG_ETOOBIG : -FG_EINVAL;
	}
	yajl_gen_free(g);
	return rc;
}
