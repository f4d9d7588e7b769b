/* FHIR JSON in and out: yajl's event parser builds the tree; compact output is written directly,
 * pretty output by yajl's generator. */
#include "config.h"

#include "fhir/json.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <yajl/yajl_gen.h>
#include <yajl/yajl_parse.h>

#include "fhir/tree_int.h"
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

/* Writing. Compact output (what storage, ingest and the REST answers use) is written straight
 * into the caller's buffer; pretty output goes through yajl's generator. Both give the same
 * bytes as yajl's compact generator did: the escapes below, numbers as their text, strings
 * checked as UTF-8 the way yajl checks them, at most YAJL_MAX_DEPTH - 1 levels. */

#define JSON_WRITE_MAX_DEPTH 127

typedef struct {
	buf_t *out;
	/* where the next byte goes and the end of the room out has (below its cap, with a byte
	 * left for the final NUL): out->len is behind until json_out_sync */
	char *p, *end;
	int rc; /* sticky: the first failure stops the writing */
} json_out_t;

/* Room of a buffer without data: none, and no arithmetic on NULL. */
static char json_no_room[1];

static void
json_out_room(json_out_t *w)
{
	buf_t *b = w->out;
	size_t room;

	if (b->data == NULL || w->rc != 0) {
		w->p = w->end = b->data == NULL ? json_no_room : b->data + b->len;
		return;
	}
	room = b->cap - b->len - 1;
	if (b->max != 0 && b->max - b->len < room)
		room = b->max - b->len;
	w->p = b->data + b->len;
	w->end = w->p + room;
}

static void
json_out_init(json_out_t *w, buf_t *out)
{
	w->out = out;
	w->rc = 0;
	json_out_room(w);
}

/* Brings out->len up to what was written. */
static void
json_out_sync(json_out_t *w)
{
	if (w->out->data != NULL)
		w->out->len = (size_t)(w->p - w->out->data);
}

/* Past the room: buf_append grows the buffer, or refuses past its cap. */
static void
json_put_grow(json_out_t *w, const char *p, size_t n)
{
	if (w->rc != 0)
		return;
	json_out_sync(w);
	w->rc = buf_append(w->out, p, n);
	json_out_room(w);
}

static inline void
json_put(json_out_t *w, const char *p, size_t n)
{
	if (n <= (size_t)(w->end - w->p)) {
		memcpy(w->p, p, n);
		w->p += n;
		return;
	}
	json_put_grow(w, p, n);
}

static inline void
json_putc(json_out_t *w, char c)
{
	if (w->p < w->end)
		*w->p++ = c;
	else
		json_put_grow(w, &c, 1);
}

/* Length of the UTF-8 sequence at p (lead byte and continuation bytes only, as yajl's
 * yajl_string_validate_utf8 checks); 0 when it is not one. */
static size_t
json_utf8_len(const unsigned char *p, size_t n)
{
	size_t k = (p[0] >> 5) == 0x6 ? 2 : (p[0] >> 4) == 0xe ? 3 : (p[0] >> 3) == 0x1e ? 4 : 0;

	if (k == 0 || k > n)
		return 0;
	for (size_t i = 1; i < k; i++)
		if ((p[i] >> 6) != 0x2)
			return 0;
	return k;
}

/* Bytes a string copies as they are: printable ASCII but the quote and the backslash. */
static bool
json_byte_is_plain(unsigned char c)
{
	return c >= 0x20 && c < 0x80 && c != '"' && c != '\\';
}

/* Whether all 8 bytes of v are plain (bit tricks: a byte below 0x20, equal to '"' or '\\', or
 * with its high bit set shows as a high bit in the mask). */
static bool
json_word_is_plain(uint64_t v)
{
	const uint64_t ones = 0x0101010101010101ull, high = ones * 0x80;
	uint64_t q = v ^ (ones * '"'), bs = v ^ (ones * '\\');

	/* without high bits in v, no subtraction borrows unless a byte is below its bound */
	return ((v | (v - ones * 0x20) | (q - ones) | (bs - ones)) & high) == 0;
}

/* Whether all n bytes at p are plain, a word at a time: the last word overlaps the one
 * before, a short string goes in one word padded with plain bytes. */
static bool
json_is_plain(const unsigned char *p, size_t n)
{
	uint64_t v;
	uint32_t lo, hi;

	if (n >= 8) {
		for (size_t i = 0; i + 8 <= n; i += 8) {
			memcpy(&v, p + i, 8);
			if (!json_word_is_plain(v))
				return false;
		}
		memcpy(&v, p + n - 8, 8);
		return json_word_is_plain(v);
	}
	if (n >= 4) {
		memcpy(&lo, p, 4);
		memcpy(&hi, p + n - 4, 4);
		return json_word_is_plain((uint64_t)hi << 32 | lo);
	}
	v = 0x0101010101010101ull * 'a';
	for (size_t i = 0; i < n; i++)
		v = v << 8 | p[i];
	return json_word_is_plain(v);
}

/* A string with bytes to escape or check, or without room for it. */
static __attribute__((noinline)) void
json_put_string_slow(json_out_t *w, slice_t s)
{
	static const char hex[] = "0123456789ABCDEF";
	const unsigned char *p = (const unsigned char *)s.ptr;
	size_t beg = 0, i = 0;
	char esc[6] = {'\\', 'u', '0', '0', 0, 0};

	json_putc(w, '"');
	while (i < s.len) {
		unsigned char c = p[i];
		size_t elen = 2;

		if (json_byte_is_plain(c)) {
			i++;
			continue;
		}
		if (c >= 0x80) {
			size_t k = json_utf8_len(p + i, s.len - i);

			if (k == 0) {
				w->rc = w->rc != 0 ? w->rc : -FG_EINVAL;
				return;
			}
			i += k;
			continue;
		}
		switch (c) {
		case '"':
		case '\\':
			esc[1] = (char)c;
			break;
		case '\b':
			esc[1] = 'b';
			break;
		case '\f':
			esc[1] = 'f';
			break;
		case '\n':
			esc[1] = 'n';
			break;
		case '\r':
			esc[1] = 'r';
			break;
		case '\t':
			esc[1] = 't';
			break;
		default:
			esc[1] = 'u';
			esc[4] = hex[c >> 4];
			esc[5] = hex[c & 0xf];
			elen = 6;
			break;
		}
		json_put(w, s.ptr + beg, i - beg);
		json_put(w, esc, elen);
		beg = ++i;
	}
	json_put(w, s.ptr + beg, s.len - beg);
	json_putc(w, '"');
}

static inline void
json_put_string(json_out_t *w, slice_t s)
{
	if (json_is_plain((const unsigned char *)s.ptr, s.len) &&
	    s.len + 2 <= (size_t)(w->end - w->p)) {
		/* most strings: nothing to escape or check, and room for all of it */
		w->p[0] = '"';
		memcpy(w->p + 1, s.ptr, s.len);
		w->p[1 + s.len] = '"';
		w->p += s.len + 2;
		return;
	}
	json_put_string_slow(w, s);
}

static void json_put_node(json_out_t *w, const fhir_node_t *n, unsigned depth);

/* A member's or item's value: a string (most) without a call. */
static inline void
json_put_member(json_out_t *w, const fhir_node_t *n, unsigned depth)
{
	if (n != NULL && n->kind == FHIR_STRING)
		json_put_string(w, n->u.text);
	else
		json_put_node(w, n, depth);
}

/* Reads the nodes directly (tree_int.h): a call per member and item to the tree's accessors
 * cost a tenth of the writer's instructions. */
static void
json_put_node(json_out_t *w, const fhir_node_t *n, unsigned depth)
{
	if (w->rc != 0)
		return;
	switch (n == NULL ? FHIR_NULL : n->kind) {
	case FHIR_NULL:
		json_put(w, "null", 4);
		return;
	case FHIR_BOOL:
		if (n->b)
			json_put(w, "true", 4);
		else
			json_put(w, "false", 5);
		return;
	case FHIR_NUMBER:
	case FHIR_RAW:
		json_put(w, n->u.text.ptr, n->u.text.len);
		return;
	case FHIR_STRING:
		json_put_string(w, n->u.text);
		return;
	case FHIR_OBJECT:
		if (depth >= JSON_WRITE_MAX_DEPTH) {
			w->rc = -FG_ETOOBIG;
			return;
		}
		json_putc(w, '{');
		for (size_t i = 0; w->rc == 0 && i < n->u.obj.n; i++) {
			if (i > 0)
				json_putc(w, ',');
			json_put_string(w, n->u.obj.m[i].key);
			json_putc(w, ':');
			json_put_member(w, n->u.obj.m[i].val, depth + 1);
		}
		json_putc(w, '}');
		return;
	case FHIR_ARRAY:
		if (depth >= JSON_WRITE_MAX_DEPTH) {
			w->rc = -FG_ETOOBIG;
			return;
		}
		json_putc(w, '[');
		for (size_t i = 0; w->rc == 0 && i < n->u.arr.n; i++) {
			if (i > 0)
				json_putc(w, ',');
			json_put_member(w, n->u.arr.v[i], depth + 1);
		}
		json_putc(w, ']');
		return;
	}
	w->rc = -FG_EINVAL;
}

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
fhir_json_string_write(slice_t s, buf_t *out)
{
	json_out_t w;

	json_out_init(&w, out);
	json_put_string(&w, s);
	json_out_sync(&w);
	if (out->data != NULL)
		out->data[out->len] = '\0';
	return w.rc;
}

int
fhir_json_write(const fhir_node_t *n, bool pretty, buf_t *out)
{
	size_t start = out->len;
	yajl_gen g;
	yajl_gen_status st;
	const unsigned char *text;
	size_t len;
	int rc;

	if (!pretty) {
		json_out_t w;

		json_out_init(&w, out);
		json_put_node(&w, n, 0);
		json_out_sync(&w);
		if (w.rc != 0)
			out->len = start;
		if (out->data != NULL)
			out->data[out->len] = '\0';
		return w.rc;
	}
	g = yajl_gen_alloc(NULL);
	/* The tree promises UTF-8, but output is where a broken promise would reach a peer. */
	yajl_gen_config(g, yajl_gen_validate_utf8, 1);
	yajl_gen_config(g, yajl_gen_beautify, 1);
	yajl_gen_config(g, yajl_gen_indent_string, "  ");
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
