/* HTTP/1.1 server: the request parser (a byte-level state machine), response building with
 * gzip, and connections with keep-alive, pipelining, asynchronous answers and timeouts. */
#include "config.h"

#include "gateway/http.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "gateway/tls.h"
#include "lib/err.h"
#include "lib/log.h"
#include "lib/timeutil.h"
#include "lib/xalloc.h"

/* A chunk-size line (size and extensions) longer than this is refused. */
#define HTTP_CHUNK_LINE_MAX 4096
/* Parsing pauses while more response bytes than this wait to be written to the client. */
#define HTTP_OUTPUT_HIGH (256 * 1024)
/* After our last response, how long we read and drop what the client still sends before we
 * close: closing with unread data makes the kernel send RST, which can destroy the response. */
#define HTTP_LINGER_MS 2000
#define HTTP_PEER_MAX  64

void
http_opts_init(http_opts_t *o)
{
	memset(o, 0, sizeof(*o));
	o->max_request_line = 8192;
	o->max_header_bytes = 32768;
	o->max_headers = 100;
	o->max_body = 16u << 20;
	o->max_inflight = 16;
	o->idle_timeout_ms = 60000;
	o->header_timeout_ms = 10000;
	o->body_timeout_ms = 60000;
	o->write_timeout_ms = 60000;
	o->gzip_level = 6;
	o->gzip_min_bytes = 1024;
}

/* ---- characters and small helpers ---- */

/* tchar of RFC 9110: the characters of methods, header names and transfer codings. */
static bool
is_tchar(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static bool
is_token(slice_t s)
{
	if (s.len == 0)
		return false;
	for (size_t i = 0; i < s.len; i++)
		if (!is_tchar((unsigned char)s.ptr[i]))
			return false;
	return true;
}

/* A field value: visible characters, spaces, tabs and obs-text; no CR, LF, NUL or other CTL. */
static bool
is_field_value(slice_t s)
{
	for (size_t i = 0; i < s.len; i++) {
		unsigned char c = (unsigned char)s.ptr[i];

		if ((c < 0x20 && c != '\t') || c == 0x7f)
			return false;
	}
	return true;
}

static slice_t
trim_ows(slice_t s)
{
	while (s.len > 0 && (s.ptr[0] == ' ' || s.ptr[0] == '\t')) {
		s.ptr++;
		s.len--;
	}
	while (s.len > 0 && (s.ptr[s.len - 1] == ' ' || s.ptr[s.len - 1] == '\t'))
		s.len--;
	return s;
}

/* Splits off the next comma-separated element of a list header (trimmed; may be empty). */
static bool
list_next(slice_t *rest, slice_t *elem)
{
	const char *comma;

	if (rest->ptr == NULL)
		return false;
	comma = memchr(rest->ptr, ',', rest->len);
	if (comma == NULL) {
		*elem = trim_ows(*rest);
		*rest = SLICE_NULL;
	} else {
		*elem = trim_ows(slice_make(rest->ptr, (size_t)(comma - rest->ptr)));
		rest->len -= (size_t)(comma - rest->ptr) + 1;
		rest->ptr = comma + 1;
	}
	return true;
}

static int
hex_value(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* ---- helpers for handlers ---- */

int
http_pct_decode(arena_t *a, slice_t s, bool plus_is_space, slice_t *out)
{
	char *d;
	size_t n = 0;
	bool plain = true;

	for (size_t i = 0; i < s.len && plain; i++)
		plain = s.ptr[i] != '%' && !(plus_is_space && s.ptr[i] == '+');
	if (plain) {
		*out = s;
		return 0;
	}
	d = arena_alloc(a, s.len + 1);
	for (size_t i = 0; i < s.len; i++) {
		char c = s.ptr[i];

		if (c == '%') {
			int hi, lo;

			if (i + 2 >= s.len)
				return -FG_EINVAL;
			hi = hex_value((unsigned char)s.ptr[i + 1]);
			lo = hex_value((unsigned char)s.ptr[i + 2]);
			if (hi < 0 || lo < 0)
				return -FG_EINVAL;
			d[n++] = (char)(hi * 16 + lo);
			i += 2;
		} else {
			d[n++] = plus_is_space && c == '+' ? ' ' : c;
		}
	}
	d[n] = '\0';
	*out = slice_make(d, n);
	return 0;
}

void
http_query_init(http_query_t *q, slice_t raw, arena_t *arena)
{
	q->rest = raw.ptr != NULL ? raw : SLICE_LIT("");
	q->arena = arena;
	q->err = 0;
}

bool
http_query_next(http_query_t *q, slice_t *key, slice_t *value)
{
	while (q->err == 0 && q->rest.len > 0) {
		const char *amp = memchr(q->rest.ptr, '&', q->rest.len);
		size_t n = amp ? (size_t)(amp - q->rest.ptr) : q->rest.len;
		slice_t pair = slice_make(q->rest.ptr, n);
		const char *eq = memchr(pair.ptr, '=', pair.len);
		slice_t k = eq ? slice_make(pair.ptr, (size_t)(eq - pair.ptr)) : pair;
		slice_t v = eq ? slice_make(eq + 1, pair.len - k.len - 1) : SLICE_LIT("");

		q->rest.ptr += amp ? n + 1 : n;
		q->rest.len -= amp ? n + 1 : n;
		if (pair.len == 0)
			continue;
		if (http_pct_decode(q->arena, k, true, key) < 0 ||
		    http_pct_decode(q->arena, v, true, value) < 0) {
			q->err = -FG_EINVAL;
			return false;
		}
		return true;
	}
	return false;
}

/* A qvalue in thousandths ("0.5" -> 500); -1 when malformed. */
static int
qvalue_parse(slice_t s)
{
	int v, scale = 100;

	if (s.len == 0 || (s.ptr[0] != '0' && s.ptr[0] != '1') || s.len > 5 ||
	    (s.len > 1 && s.ptr[1] != '.'))
		return -1;
	v = (s.ptr[0] - '0') * 1000;
	for (size_t i = 2; i < s.len; i++, scale /= 10) {
		if (s.ptr[i] < '0' || s.ptr[i] > '9')
			return -1;
		v += (s.ptr[i] - '0') * scale;
	}
	return v > 1000 ? -1 : v;
}

bool
http_accepts_gzip(slice_t ae)
{
	slice_t rest = ae, elem;
	int gzip_q = -1, star_q = -1;

	while (list_next(&rest, &elem)) {
		const char *semi = memchr(elem.ptr, ';', elem.len);
		slice_t coding =
		    trim_ows(semi ? slice_make(elem.ptr, (size_t)(semi - elem.ptr)) : elem);
		slice_t params =
		    semi ? slice_make(semi + 1, elem.len - (size_t)(semi - elem.ptr) - 1)
			 : SLICE_NULL;
		int q = 1000;

		/* Parameters: only q matters; a malformed q counts as 0 (do not compress). */
		while (params.ptr != NULL) {
			const char *next = memchr(params.ptr, ';', params.len);
			slice_t p = trim_ows(
			    next ? slice_make(params.ptr, (size_t)(next - params.ptr)) : params);

			if (p.len >= 2 && (p.ptr[0] == 'q' || p.ptr[0] == 'Q') && p.ptr[1] == '=') {
				q = qvalue_parse(trim_ows(slice_make(p.ptr + 2, p.len - 2)));
				if (q < 0)
					q = 0;
			}
			if (next == NULL)
				break;
			params.len -= (size_t)(next - params.ptr) + 1;
			params.ptr = next + 1;
		}
		if (slice_eq_nocase(coding, SLICE_LIT("gzip")) ||
		    slice_eq_nocase(coding, SLICE_LIT("x-gzip")))
			gzip_q = gzip_q < 0 || q < gzip_q ? q : gzip_q;
		else if (slice_eq(coding, SLICE_LIT("*")))
			star_q = q;
	}
	if (gzip_q >= 0)
		return gzip_q > 0;
	return star_q > 0;
}

void
http_date_format(time_t t, char *out, size_t cap)
{
	static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
	static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
					   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
	struct tm tm;

	if (gmtime_r(&t, &tm) == NULL || tm.tm_wday < 0 || tm.tm_wday > 6 || tm.tm_mon < 0 ||
	    tm.tm_mon > 11) {
		snprintf(out, cap, "Thu, 01 Jan 1970 00:00:00 GMT");
		return;
	}
	snprintf(out, cap, "%s, %02d %s %04d %02d:%02d:%02d GMT", days[tm.tm_wday], tm.tm_mday,
		 months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

static const struct {
	int status;
	const char *reason;
} http_reasons[] = {
    {100, "Continue"},
    {200, "OK"},
    {201, "Created"},
    {202, "Accepted"},
    {204, "No Content"},
    {206, "Partial Content"},
    {301, "Moved Permanently"},
    {302, "Found"},
    {303, "See Other"},
    {304, "Not Modified"},
    {307, "Temporary Redirect"},
    {308, "Permanent Redirect"},
    {400, "Bad Request"},
    {401, "Unauthorized"},
    {403, "Forbidden"},
    {404, "Not Found"},
    {405, "Method Not Allowed"},
    {406, "Not Acceptable"},
    {408, "Request Timeout"},
    {409, "Conflict"},
    {410, "Gone"},
    {411, "Length Required"},
    {412, "Precondition Failed"},
    {413, "Content Too Large"},
    {414, "URI Too Long"},
    {415, "Unsupported Media Type"},
    {417, "Expectation Failed"},
    {422, "Unprocessable Content"},
    {428, "Precondition Required"},
    {429, "Too Many Requests"},
    {431, "Request Header Fields Too Large"},
    {500, "Internal Server Error"},
    {501, "Not Implemented"},
    {502, "Bad Gateway"},
    {503, "Service Unavailable"},
    {504, "Gateway Timeout"},
    {505, "HTTP Version Not Supported"},
};

const char *
http_status_reason(int status)
{
	for (size_t i = 0; i < sizeof(http_reasons) / sizeof(http_reasons[0]); i++)
		if (http_reasons[i].status == status)
			return http_reasons[i].reason;
	return "";
}

/* ---- requests ---- */

typedef struct {
	slice_t name; /* lower case */
	slice_t value;
} http_hdr_t;

struct http_request {
	TAILQ_ENTRY(http_request) link;
	http_conn_t *conn; /* NULL: from a parser, or orphaned by http_conn_free() */
	arena_t *arena;    /* everything below but body, hdrs and out; NULL once answered */
	slice_t method, target, path, query;
	const char *peer;
	int version; /* 10 or 11 */
	http_hdr_t *hdrs;
	size_t nhdrs, hdrs_cap;
	buf_t body;
	bool keep_alive, is_head;
	bool answered; /* out holds the whole response, waiting for its turn */
	buf_t out;
	metrics_route_t route;  /* for /metrics, set by the handler */
	uint64_t dispatched_ns; /* monotonic, when the handler got it */
	http_answer_fn on_answer;
	void *on_answer_ctx;
};

static http_request_t *
request_new(void)
{
	http_request_t *r = xcalloc(1, sizeof(*r));

	r->arena = arena_new(4096);
	r->method = SLICE_LIT("");
	r->target = SLICE_LIT("");
	r->path = SLICE_LIT("");
	r->peer = "?";
	r->version = 11;
	return r;
}

/* Drops what only the handler needed; the response in out stays. */
static void
request_release(http_request_t *r)
{
	arena_free(r->arena);
	r->arena = NULL;
	free(r->hdrs);
	r->hdrs = NULL;
	r->nhdrs = r->hdrs_cap = 0;
	buf_free(&r->body);
}

void
http_request_free(http_request_t *r)
{
	if (r == NULL)
		return;
	request_release(r);
	buf_free(&r->out);
	free(r);
}

void
http_request_set_route(http_request_t *req, metrics_route_t route)
{
	req->route = route;
}

void
http_request_on_answer(http_request_t *req, http_answer_fn fn, void *ctx)
{
	req->on_answer = fn;
	req->on_answer_ctx = ctx;
}

slice_t
http_request_method(const http_request_t *r)
{
	return r->method;
}

slice_t
http_request_target(const http_request_t *r)
{
	return r->target;
}

slice_t
http_request_path(const http_request_t *r)
{
	return r->path;
}

slice_t
http_request_query(const http_request_t *r)
{
	return r->query;
}

int
http_request_version(const http_request_t *r)
{
	return r->version;
}

bool
http_request_is_head(const http_request_t *r)
{
	return r->is_head;
}

slice_t
http_request_header(http_request_t *r, const char *name)
{
	slice_t n = slice_cstr(name), found = SLICE_NULL;
	buf_t joined = BUF_INIT;

	for (size_t i = 0; i < r->nhdrs; i++) {
		if (!slice_eq_nocase(r->hdrs[i].name, n))
			continue;
		if (found.ptr == NULL) {
			found = r->hdrs[i].value;
			continue;
		}
		/* Repeated fields are one list: join them (rare, so done on lookup). */
		if (joined.len == 0)
			buf_append_slice(&joined, found);
		buf_append(&joined, ", ", 2);
		buf_append_slice(&joined, r->hdrs[i].value);
	}
	if (joined.len > 0) {
		found = arena_slice_dup(r->arena, buf_slice(&joined));
		buf_free(&joined);
	}
	return found;
}

size_t
http_request_header_count(const http_request_t *r)
{
	return r->nhdrs;
}

void
http_request_header_at(const http_request_t *r, size_t i, slice_t *name, slice_t *value)
{
	*name = r->hdrs[i].name;
	*value = r->hdrs[i].value;
}

slice_t
http_request_body(const http_request_t *r)
{
	return r->body.data != NULL ? buf_slice(&r->body) : SLICE_LIT("");
}

const char *
http_request_peer(const http_request_t *r)
{
	return r->peer;
}

arena_t *
http_request_arena(http_request_t *r)
{
	return r->arena;
}

/* ---- the parser ---- */

typedef enum {
	PS_REQLINE,    /* empty lines, then the request line */
	PS_HEADER,     /* header lines up to the empty line */
	PS_BODY,       /* Content-Length bytes */
	PS_CHUNK_SIZE, /* a chunk-size line with optional extensions */
	PS_CHUNK_DATA,
	PS_CHUNK_END, /* the CRLF after a chunk's data */
	PS_TRAILER,   /* trailer lines (dropped) up to the empty line */
	PS_DONE,      /* a complete request waits to be taken */
	PS_ERROR,
} http_pstate_t;

struct http_parser {
	size_t max_request_line, max_header_bytes, max_headers, max_body;
	http_pstate_t state;
	buf_t line;         /* the line being read, up to its LF */
	size_t blank_bytes; /* empty lines before the request line */
	size_t head_bytes;  /* header and trailer lines so far */
	size_t nfields;     /* header and trailer fields so far */
	http_request_t *req;
	uint64_t remaining; /* of the body or of the current chunk */
	/* What the header said about framing and the connection. */
	uint64_t content_length;
	unsigned n_length, n_host, n_codings, n_chunked;
	bool te_present, last_chunked, conn_close, conn_keep_alive, expect_continue;
	int err_status;
	const char *err_text;
};

http_parser_t *
http_parser_new(const http_opts_t *o)
{
	http_parser_t *p = xcalloc(1, sizeof(*p));
	const size_t big = SIZE_MAX / 4; /* keeps the limit arithmetic clear of overflow */

	p->max_request_line = o->max_request_line < big ? o->max_request_line : big;
	p->max_header_bytes = o->max_header_bytes < big ? o->max_header_bytes : big;
	p->max_headers = o->max_headers;
	p->max_body = o->max_body < big ? o->max_body : big;
	buf_init(&p->line, 0);
	p->state = PS_REQLINE;
	return p;
}

void
http_parser_free(http_parser_t *p)
{
	if (p == NULL)
		return;
	http_request_free(p->req);
	buf_free(&p->line);
	free(p);
}

/* Forgets the request just taken, ready for the next one. */
static void
parser_reset(http_parser_t *p)
{
	buf_reset(&p->line);
	p->blank_bytes = p->head_bytes = p->nfields = 0;
	p->remaining = p->content_length = 0;
	p->n_length = p->n_host = p->n_codings = p->n_chunked = 0;
	p->te_present = p->last_chunked = p->conn_close = p->conn_keep_alive = false;
	p->expect_continue = false;
	p->state = PS_REQLINE;
}

/* The sticky error: the parser stays in it; always returns false for straight-line callers. */
static bool
parser_fail(http_parser_t *p, int status, const char *text)
{
	if (p->state != PS_ERROR) {
		p->state = PS_ERROR;
		p->err_status = status;
		p->err_text = text;
	}
	return false;
}

int
http_parser_error(const http_parser_t *p, const char **text)
{
	if (text != NULL)
		*text = p->state == PS_ERROR ? p->err_text : "";
	return p->state == PS_ERROR ? p->err_status : 0;
}

http_phase_t
http_parser_phase(const http_parser_t *p)
{
	switch (p->state) {
	case PS_REQLINE:
		return p->line.len == 0 && p->blank_bytes == 0 ? HTTP_PHASE_IDLE : HTTP_PHASE_HEAD;
	case PS_HEADER:
		return HTTP_PHASE_HEAD;
	case PS_BODY:
	case PS_CHUNK_SIZE:
	case PS_CHUNK_DATA:
	case PS_CHUNK_END:
	case PS_TRAILER:
		return HTTP_PHASE_BODY;
	default:
		return HTTP_PHASE_IDLE;
	}
}

http_request_t *
http_parser_take(http_parser_t *p)
{
	http_request_t *r;

	/* Mid-request the parser still needs its request. */
	if (p->state != PS_DONE && p->state != PS_ERROR)
		return NULL;
	r = p->req;
	p->req = NULL;
	if (p->state == PS_DONE)
		parser_reset(p);
	return r;
}

/* Collects input up to a LF into p->line, refusing lines longer than cap (CR excluded) with
 * status. True when a whole line (without its CRLF) is in p->line. */
static bool
parser_line(http_parser_t *p, const char *data, size_t len, size_t *pos, size_t cap, int status,
	    const char *text)
{
	const char *start = data + *pos;
	const char *lf = memchr(start, '\n', len - *pos);
	size_t n = lf ? (size_t)(lf - start) : len - *pos;

	if (n > cap + 1 - p->line.len)
		return parser_fail(p, status, text);
	buf_append(&p->line, start, n);
	*pos += lf ? n + 1 : n;
	if (lf == NULL)
		return false;
	if (p->line.len == 0 || p->line.data[p->line.len - 1] != '\r')
		return parser_fail(p, 400, "line not ended by CRLF");
	p->line.len--;
	return true;
}

static bool
parse_version(http_parser_t *p, slice_t v)
{
	if (v.len != 8 || memcmp(v.ptr, "HTTP/", 5) != 0 || v.ptr[5] < '0' || v.ptr[5] > '9' ||
	    v.ptr[6] != '.' || v.ptr[7] < '0' || v.ptr[7] > '9')
		return parser_fail(p, 400, "malformed HTTP version");
	if (v.ptr[5] != '1')
		return parser_fail(p, 505, "only HTTP/1.x is supported");
	p->req->version = v.ptr[7] == '0' ? 10 : 11;
	return true;
}

/* Splits the request target into path and query; absolute-form keeps only its path. */
static bool
parse_target(http_parser_t *p, slice_t t)
{
	http_request_t *r = p->req;
	slice_t path = t;
	const char *q;

	if (t.len == 0)
		return parser_fail(p, 400, "empty request target");
	for (size_t i = 0; i < t.len; i++)
		if ((unsigned char)t.ptr[i] <= 0x20 || (unsigned char)t.ptr[i] >= 0x7f ||
		    t.ptr[i] == '#')
			return parser_fail(p, 400, "invalid character in request target");
	if (t.len == 1 && t.ptr[0] == '*') {
		if (!slice_eq(r->method, SLICE_LIT("OPTIONS")))
			return parser_fail(p, 400, "asterisk-form is only for OPTIONS");
		r->path = t;
		return true;
	}
	if (t.ptr[0] != '/') {
		const char *sep = memchr(t.ptr, ':', t.len);
		slice_t scheme = sep ? slice_make(t.ptr, (size_t)(sep - t.ptr)) : SLICE_NULL;

		if (sep == NULL || t.len - scheme.len < 3 || memcmp(sep, "://", 3) != 0 ||
		    !(slice_eq_nocase(scheme, SLICE_LIT("http")) ||
		      slice_eq_nocase(scheme, SLICE_LIT("https"))))
			return parser_fail(p, 400, "unsupported request target form");
		path = slice_make(sep + 3, t.len - scheme.len - 3);
		/* The authority ends at the first '/' or '?'. */
		while (path.len > 0 && path.ptr[0] != '/' && path.ptr[0] != '?') {
			path.ptr++;
			path.len--;
		}
		if (path.len == 0 || path.ptr[0] == '?') {
			/* No path: it is "/" (and the query, if any, follows). */
			r->query =
			    path.len > 0 ? slice_make(path.ptr + 1, path.len - 1) : SLICE_NULL;
			r->path = SLICE_LIT("/");
			return true;
		}
	}
	q = memchr(path.ptr, '?', path.len);
	if (q != NULL) {
		r->query = slice_make(q + 1, path.len - (size_t)(q - path.ptr) - 1);
		path.len = (size_t)(q - path.ptr);
	}
	r->path = path;
	return true;
}

/* "METHOD SP target SP HTTP/x.y", single spaces. */
static bool
parse_request_line(http_parser_t *p, slice_t line)
{
	const char *sp1 = memchr(line.ptr, ' ', line.len), *sp2;
	http_request_t *r;

	if (sp1 == NULL)
		return parser_fail(p, 400, "malformed request line");
	sp2 = memchr(sp1 + 1, ' ', line.len - (size_t)(sp1 + 1 - line.ptr));
	if (sp2 == NULL)
		return parser_fail(p, 400, "malformed request line");
	p->req = r = request_new();
	r->method = arena_slice_dup(r->arena, slice_make(line.ptr, (size_t)(sp1 - line.ptr)));
	r->target = arena_slice_dup(r->arena, slice_make(sp1 + 1, (size_t)(sp2 - sp1 - 1)));
	r->is_head = slice_eq(r->method, SLICE_LIT("HEAD"));
	if (!is_token(r->method))
		return parser_fail(p, 400, "malformed method");
	if (!parse_version(p, slice_make(sp2 + 1, line.len - (size_t)(sp2 + 1 - line.ptr))))
		return false;
	if (slice_eq(r->method, SLICE_LIT("CONNECT")))
		return parser_fail(p, 501, "CONNECT is not supported");
	return parse_target(p, r->target);
}

/* Transfer-Encoding: a list of codings, of which we implement only chunked (last, once). */
static bool
note_transfer_encoding(http_parser_t *p, slice_t value)
{
	slice_t rest = value, coding;

	p->te_present = true;
	while (list_next(&rest, &coding)) {
		if (coding.len == 0)
			continue;
		p->n_codings++;
		p->last_chunked = slice_eq_nocase(coding, SLICE_LIT("chunked"));
		if (p->last_chunked)
			p->n_chunked++;
	}
	return true;
}

static bool
note_connection(http_parser_t *p, slice_t value)
{
	slice_t rest = value, opt;

	while (list_next(&rest, &opt)) {
		if (slice_eq_nocase(opt, SLICE_LIT("close")))
			p->conn_close = true;
		else if (slice_eq_nocase(opt, SLICE_LIT("keep-alive")))
			p->conn_keep_alive = true;
	}
	return true;
}

/* Interprets the fields that frame the message or steer the connection. */
static bool
note_field(http_parser_t *p, slice_t name, slice_t value)
{
	if (slice_eq(name, SLICE_LIT("content-length"))) {
		/* Plain digits, once: a list or a repeat could smuggle a request. */
		if (++p->n_length > 1)
			return parser_fail(p, 400, "more than one Content-Length");
		if (!slice_to_u64(value, &p->content_length))
			return parser_fail(p, 400, "malformed Content-Length");
		return true;
	}
	if (slice_eq(name, SLICE_LIT("transfer-encoding")))
		return note_transfer_encoding(p, value);
	if (slice_eq(name, SLICE_LIT("connection")))
		return note_connection(p, value);
	if (slice_eq(name, SLICE_LIT("host"))) {
		if (++p->n_host > 1)
			return parser_fail(p, 400, "more than one Host");
		return true;
	}
	if (slice_eq(name, SLICE_LIT("expect"))) {
		if (!slice_eq_nocase(value, SLICE_LIT("100-continue")))
			return parser_fail(p, 417, "only Expect: 100-continue is supported");
		p->expect_continue = true;
	}
	return true;
}

/* "name: value": checked, and split into a lower-case name and a trimmed value. */
static bool
parse_field_line(http_parser_t *p, slice_t line, slice_t *name, slice_t *value)
{
	const char *colon;

	if (line.ptr[0] == ' ' || line.ptr[0] == '\t')
		return parser_fail(p, 400, "obsolete line folding");
	colon = memchr(line.ptr, ':', line.len);
	if (colon == NULL)
		return parser_fail(p, 400, "header line without a colon");
	*name = slice_make(line.ptr, (size_t)(colon - line.ptr));
	*value = trim_ows(slice_make(colon + 1, line.len - name->len - 1));
	if (!is_token(*name))
		return parser_fail(p, 400, "malformed header name");
	if (!is_field_value(*value))
		return parser_fail(p, 400, "invalid character in header value");
	if (++p->nfields > p->max_headers)
		return parser_fail(p, 431, "too many header fields");
	return true;
}

static bool
parse_header_line(http_parser_t *p, slice_t line)
{
	http_request_t *r = p->req;
	slice_t name, value;
	char *lower;

	if (!parse_field_line(p, line, &name, &value))
		return false;
	lower = arena_strndup(r->arena, name.ptr, name.len);
	for (size_t i = 0; i < name.len; i++)
		if (lower[i] >= 'A' && lower[i] <= 'Z')
			lower[i] = (char)(lower[i] - 'A' + 'a');
	if (r->nhdrs == r->hdrs_cap) {
		r->hdrs_cap = r->hdrs_cap ? r->hdrs_cap * 2 : 16;
		r->hdrs = xreallocarray(r->hdrs, r->hdrs_cap, sizeof(*r->hdrs));
	}
	r->hdrs[r->nhdrs].name = slice_make(lower, name.len);
	r->hdrs[r->nhdrs].value = arena_slice_dup(r->arena, value);
	r->nhdrs++;
	return note_field(p, r->hdrs[r->nhdrs - 1].name, value);
}

/* The header is complete: decide how the body is framed. True when a 100 Continue is due. */
static bool
parse_header_end(http_parser_t *p)
{
	http_request_t *r = p->req;
	bool has_body;

	if (r->version == 11 && p->n_host == 0)
		return parser_fail(p, 400, "missing Host header");
	if (p->te_present) {
		if (r->version == 10)
			return parser_fail(p, 400, "Transfer-Encoding in an HTTP/1.0 request");
		if (p->n_length > 0)
			return parser_fail(p, 400, "both Content-Length and Transfer-Encoding");
		if (p->n_codings == 0 || !p->last_chunked || p->n_chunked > 1)
			return parser_fail(p, 400, "chunked must be the last transfer coding");
		if (p->n_codings > 1)
			return parser_fail(p, 501, "transfer coding not supported");
	}
	if (p->n_length > 0 && p->content_length > p->max_body)
		return parser_fail(p, 413, "request body too large");
	r->keep_alive = r->version == 11 ? !p->conn_close : p->conn_keep_alive && !p->conn_close;
	buf_init(&r->body, p->max_body);
	has_body = p->te_present || p->content_length > 0;
	if (p->te_present) {
		p->state = PS_CHUNK_SIZE;
	} else if (p->content_length > 0) {
		p->state = PS_BODY;
		p->remaining = p->content_length;
	} else {
		p->state = PS_DONE;
	}
	/* HTTP/1.0 clients do not know 100 Continue. */
	return has_body && p->expect_continue && r->version == 11;
}

/* "1*HEXDIG [ BWS ; chunk-ext ]" */
static bool
parse_chunk_size(http_parser_t *p, slice_t line)
{
	uint64_t size = 0;
	size_t i = 0;

	for (; i < line.len && hex_value((unsigned char)line.ptr[i]) >= 0; i++) {
		if (size > (UINT64_MAX >> 4))
			return parser_fail(p, 413, "request body too large");
		size = size * 16 + (uint64_t)hex_value((unsigned char)line.ptr[i]);
	}
	if (i == 0)
		return parser_fail(p, 400, "malformed chunk size");
	while (i < line.len && (line.ptr[i] == ' ' || line.ptr[i] == '\t'))
		i++;
	if (i < line.len && line.ptr[i] != ';')
		return parser_fail(p, 400, "malformed chunk size");
	/* Extensions are ignored, but must not hide control characters. */
	if (!is_field_value(slice_make(line.ptr + i, line.len - i)))
		return parser_fail(p, 400, "invalid character in chunk extension");
	if (size > p->max_body - p->req->body.len)
		return parser_fail(p, 413, "request body too large");
	p->remaining = size;
	p->state = size > 0 ? PS_CHUNK_DATA : PS_TRAILER;
	return true;
}

static bool
parse_trailer_line(http_parser_t *p, slice_t line)
{
	slice_t name, value;

	if (line.len == 0) {
		p->state = PS_DONE;
		return true;
	}
	/* Trailers are checked like header fields, then dropped. */
	return parse_field_line(p, line, &name, &value);
}

/* Handles one complete line in p->line; true when a 100 Continue is due. */
static bool
parser_on_line(http_parser_t *p)
{
	slice_t line = buf_slice(&p->line);

	switch (p->state) {
	case PS_REQLINE:
		if (line.len == 0) {
			/* Empty lines before a request are tolerated (RFC 9112 §2.2), a few. */
			p->blank_bytes += 2;
			if (p->blank_bytes > p->max_request_line)
				parser_fail(p, 400, "too many empty lines");
			return false;
		}
		if (parse_request_line(p, line))
			p->state = PS_HEADER;
		return false;
	case PS_HEADER:
		p->head_bytes += line.len + 2;
		if (line.len == 0)
			return parse_header_end(p);
		parse_header_line(p, line);
		return false;
	case PS_CHUNK_SIZE:
		parse_chunk_size(p, line);
		return false;
	case PS_CHUNK_END:
		p->state = PS_CHUNK_SIZE;
		return false;
	case PS_TRAILER:
		p->head_bytes += line.len + 2;
		parse_trailer_line(p, line);
		return false;
	default:
		return false;
	}
}

/* The longest line the current state accepts, and the status when a line is longer. */
static size_t
parser_line_cap(const http_parser_t *p, int *status, const char **text)
{
	switch (p->state) {
	case PS_REQLINE:
		*status = 414;
		*text = "request line too long";
		return p->max_request_line;
	case PS_CHUNK_SIZE:
		*status = 400;
		*text = "chunk size line too long";
		return HTTP_CHUNK_LINE_MAX;
	case PS_CHUNK_END:
		*status = 400;
		*text = "chunk data not followed by CRLF";
		return 0;
	default: /* header and trailer lines share one budget */
		*status = 431;
		*text = "request header too large";
		return p->head_bytes < p->max_header_bytes ? p->max_header_bytes - p->head_bytes
							   : 0;
	}
}

http_parse_event_t
http_parser_feed(http_parser_t *p, const char *data, size_t len, size_t *used)
{
	size_t i = 0;
	bool want_continue = false;

	while (!want_continue && i < len && p->state != PS_DONE && p->state != PS_ERROR) {
		if (p->state == PS_BODY || p->state == PS_CHUNK_DATA) {
			size_t n = len - i < p->remaining ? len - i : (size_t)p->remaining;

			if (buf_append(&p->req->body, data + i, n) < 0) {
				parser_fail(p, 413, "request body too large");
				break;
			}
			i += n;
			p->remaining -= n;
			if (p->remaining == 0)
				p->state = p->state == PS_BODY ? PS_DONE : PS_CHUNK_END;
		} else {
			int status;
			const char *text;
			size_t cap = parser_line_cap(p, &status, &text);

			if (!parser_line(p, data, len, &i, cap, status, text))
				continue;
			want_continue = parser_on_line(p);
			buf_reset(&p->line);
		}
	}
	*used = i;
	if (p->state == PS_ERROR)
		return HTTP_PARSE_ERROR;
	if (p->state == PS_DONE)
		return HTTP_PARSE_REQUEST;
	return want_continue ? HTTP_PARSE_CONTINUE : HTTP_PARSE_MORE;
}

/* ---- responses ---- */

static bool
status_has_body(int status)
{
	return status != 204 && status != 304;
}

/* A gzip stream of in (caller owns, free()), or NULL when it would not be smaller. */
static unsigned char *
gzip_compress(slice_t in, int level, size_t *out_len)
{
	z_stream z;
	unsigned char *out;
	uLong bound;

	if (in.len > UINT_MAX / 2)
		return NULL;
	memset(&z, 0, sizeof(z));
	/* 15 + 16: the largest window, with a gzip header and trailer instead of zlib's. */
	if (deflateInit2(&z, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
		return NULL;
	bound = deflateBound(&z, (uLong)in.len);
	out = xmalloc(bound);
	z.next_in = (Bytef *)(uintptr_t)in.ptr;
	z.avail_in = (uInt)in.len;
	z.next_out = out;
	z.avail_out = (uInt)bound;
	if (deflate(&z, Z_FINISH) != Z_STREAM_END || z.total_out >= in.len) {
		deflateEnd(&z);
		free(out);
		return NULL;
	}
	*out_len = z.total_out;
	deflateEnd(&z);
	return out;
}

/* Fields the module writes itself. */
static bool
field_is_reserved(slice_t name)
{
	return slice_eq_nocase(name, SLICE_LIT("content-length")) ||
	       slice_eq_nocase(name, SLICE_LIT("transfer-encoding")) ||
	       slice_eq_nocase(name, SLICE_LIT("connection")) ||
	       slice_eq_nocase(name, SLICE_LIT("date"));
}

/* Appends the whole response to out; -FG_EINVAL (nothing appended) for a bad status or field.
 * r still has its header fields (for Accept-Encoding) unless they were released. */
static int
response_build(http_request_t *r, const http_opts_t *o, int status, const http_field_t *fields,
	       slice_t body, bool close, buf_t *out)
{
	bool own_encoding = false, gzip_ok;
	unsigned char *gz = NULL;
	size_t gz_len = 0;
	char date[32];

	if (status < 200 || status > 599)
		return -FG_EINVAL;
	for (const http_field_t *f = fields; f != NULL && f->name != NULL; f++) {
		slice_t name = slice_cstr(f->name);

		if (!is_token(name) || f->value == NULL || !is_field_value(slice_cstr(f->value)) ||
		    field_is_reserved(name))
			return -FG_EINVAL;
		own_encoding |= slice_eq_nocase(name, SLICE_LIT("content-encoding"));
	}
	if (!status_has_body(status) || body.ptr == NULL)
		body = SLICE_LIT("");
	/* Responses that could be compressed vary with Accept-Encoding, compressed or not. */
	gzip_ok = status_has_body(status) && !own_encoding && o->gzip_level > 0 && body.len > 0 &&
		  body.len >= o->gzip_min_bytes;
	if (gzip_ok && r->arena != NULL &&
	    http_accepts_gzip(http_request_header(r, "accept-encoding")))
		gz = gzip_compress(body, o->gzip_level > 9 ? 9 : o->gzip_level, &gz_len);
	http_date_format(time(NULL), date, sizeof(date));
	buf_printf(out, "HTTP/1.1 %d %s\r\nDate: %s\r\n", status, http_status_reason(status), date);
	for (const http_field_t *f = fields; f != NULL && f->name != NULL; f++)
		buf_printf(out, "%s: %s\r\n", f->name, f->value);
	if (gz != NULL)
		buf_append_cstr(out, "Content-Encoding: gzip\r\n");
	if (gzip_ok)
		buf_append_cstr(out, "Vary: Accept-Encoding\r\n");
	if (status_has_body(status))
		buf_printf(out, "Content-Length: %zu\r\n", gz != NULL ? gz_len : body.len);
	if (close)
		buf_append_cstr(out, "Connection: close\r\n");
	else if (r->version == 10)
		buf_append_cstr(out, "Connection: keep-alive\r\n");
	buf_append(out, "\r\n", 2);
	if (!r->is_head)
		buf_append(out, gz != NULL ? (const char *)gz : body.ptr,
			   gz != NULL ? gz_len : body.len);
	free(gz);
	return 0;
}

/* An answer of the module's own: status, a short text, through the caller's error_body. */
static void
response_build_error(http_request_t *r, const http_opts_t *o, int status, const char *text,
		     bool close, buf_t *out)
{
	const char *ctype = "text/plain; charset=utf-8";
	buf_t body = BUF_INIT;
	http_field_t fields[2] = {{"Content-Type", NULL}, {NULL, NULL}};

	if (o->error_body != NULL)
		o->error_body(status, text, &ctype, &body);
	else
		buf_printf(&body, "%d %s: %s\n", status, http_status_reason(status), text);
	fields[0].value = ctype;
	if (response_build(r, o, status, fields, buf_slice(&body), close, out) < 0)
		response_build(r, o, status, NULL, buf_slice(&body), close, out);
	buf_free(&body);
}

/* ---- connections ---- */

typedef enum {
	TIMER_NONE,
	TIMER_IDLE,   /* nothing in flight, waiting for a request */
	TIMER_HEAD,   /* a request's header is arriving */
	TIMER_BODY,   /* its body is arriving */
	TIMER_LINGER, /* our side is shut down, waiting for the client's EOF */
} http_timer_t;

struct http_conn {
	struct bufferevent *bev; /* NULL once closed */
	struct event *timer, *resume;
	http_parser_t *parser;
	http_opts_t opts;
	http_handler_fn handler;
	void *handler_ctx;
	TAILQ_HEAD(http_reqq, http_request) pending; /* read, not yet written: in request order */
	unsigned npending;                           /* length of pending */
	unsigned inflight;                           /* passed to the handler and not answered */
	size_t queued_body;                          /* body bytes of those */
	uint64_t seq; /* requests read; a new one restarts the timers */
	http_timer_t timer_kind;
	uint64_t timer_seq;
	unsigned busy;     /* depth of calls into the connection: it is never freed above 0 */
	bool closing;      /* read no more requests; close once every answer is out */
	bool eof;          /* the client sends no more */
	bool lingering;    /* we shut down our side and drop input until the client's EOF */
	bool reading;      /* EV_READ is enabled */
	bool continue_due; /* a 100 Continue goes out once the answers before it have */
	char peer[HTTP_PEER_MAX];
	log_ratelimit_t rl;
};

static void conn_update(http_conn_t *c);

static void
queue_push(http_conn_t *c, http_request_t *r)
{
	TAILQ_INSERT_TAIL(&c->pending, r, link);
	c->npending++;
}

static void
queue_remove(http_conn_t *c, http_request_t *r)
{
	TAILQ_REMOVE(&c->pending, r, link);
	c->npending--;
}

static void
conn_enter(http_conn_t *c)
{
	c->busy++;
}

/* The outermost call leaves through conn_update(), which may free c. */
static void
conn_leave(http_conn_t *c)
{
	if (--c->busy == 0)
		conn_update(c);
}

const char *
http_conn_peer(const http_conn_t *c)
{
	return c->peer;
}

bool
http_request_is_orphaned(const http_request_t *r)
{
	return r->conn == NULL || r->conn->bev == NULL;
}

static void
conn_destroy(http_conn_t *c, bool notify)
{
	if (notify && c->opts.on_close != NULL)
		c->opts.on_close(c, c->handler_ctx);
	event_free(c->timer);
	event_free(c->resume);
	http_parser_free(c->parser);
	free(c);
}

/* Closes the socket; answered requests go with it, unanswered ones wait for their answer. */
static void
conn_close_now(http_conn_t *c)
{
	http_request_t *r, *next;

	if (c->bev != NULL) {
		tls_bev_free(c->bev);
		c->bev = NULL;
	}
	evtimer_del(c->timer);
	event_del(c->resume);
	c->timer_kind = TIMER_NONE;
	c->reading = false;
	for (r = TAILQ_FIRST(&c->pending); r != NULL; r = next) {
		next = TAILQ_NEXT(r, link);
		if (r->answered) {
			queue_remove(c, r);
			http_request_free(r);
		}
	}
}

static void
conn_set_reading(http_conn_t *c, bool on)
{
	if (on == c->reading)
		return;
	c->reading = on;
	if (on)
		bufferevent_enable(c->bev, EV_READ);
	else
		bufferevent_disable(c->bev, EV_READ);
}

static void
conn_set_timer(http_conn_t *c, http_timer_t kind)
{
	uint64_t ms = 0;
	struct timeval tv;

	if (kind == c->timer_kind &&
	    (kind == TIMER_NONE || kind == TIMER_LINGER || c->timer_seq == c->seq))
		return;
	c->timer_kind = kind;
	c->timer_seq = c->seq;
	switch (kind) {
	case TIMER_IDLE:
		ms = c->opts.idle_timeout_ms;
		break;
	case TIMER_HEAD:
		ms = c->opts.header_timeout_ms;
		break;
	case TIMER_BODY:
		ms = c->opts.body_timeout_ms;
		break;
	case TIMER_LINGER:
		ms = HTTP_LINGER_MS;
		break;
	case TIMER_NONE:
		break;
	}
	if (ms == 0) {
		evtimer_del(c->timer);
		return;
	}
	tv.tv_sec = (time_t)(ms / 1000);
	tv.tv_usec = (suseconds_t)((ms % 1000) * 1000);
	evtimer_add(c->timer, &tv);
}

static void
free_reference(const void *data, size_t len, void *extra)
{
	free((void *)(uintptr_t)data);
}

/* Moves the answers at the head of the queue, in order, to the socket's output. */
static void
conn_write_answers(http_conn_t *c)
{
	struct evbuffer *out = bufferevent_get_output(c->bev);
	http_request_t *r;

	while ((r = TAILQ_FIRST(&c->pending)) != NULL && r->answered) {
		size_t len;
		char *data = buf_steal(&r->out, &len);

		queue_remove(c, r);
		if (len == 0 || evbuffer_add_reference(out, data, len, free_reference, NULL) < 0)
			free(data);
		http_request_free(r);
	}
}

/* Whether another request may be parsed now: not past the caps on requests and body bytes in
 * flight, nor while the client is slow to read what we wrote. */
static bool
conn_may_parse(const http_conn_t *c)
{
	return c->bev != NULL && !c->closing && !c->lingering &&
	       c->npending < c->opts.max_inflight &&
	       (c->queued_body == 0 || c->queued_body < c->opts.max_body) &&
	       evbuffer_get_length(bufferevent_get_output(c->bev)) < HTTP_OUTPUT_HIGH;
}

/* Shuts down our sending side and reads (and drops) until the client closes too. */
static void
conn_linger(http_conn_t *c)
{
	c->lingering = true;
	tls_bev_shutdown_write(c->bev); /* with a close_notify first on TLS */
	evbuffer_drain(bufferevent_get_input(c->bev),
		       evbuffer_get_length(bufferevent_get_input(c->bev)));
	conn_set_reading(c, true);
	conn_set_timer(c, TIMER_LINGER);
}

/* Brings the connection in line with its state: writes due answers, closes when done, pauses
 * or resumes reading, sets the timer. Runs when the outermost call into c returns. */
static void
conn_update(http_conn_t *c)
{
	struct evbuffer *in, *out;
	bool parse;

	if (c->bev != NULL && !c->lingering)
		conn_write_answers(c);
	if (c->bev == NULL) {
		if (c->inflight == 0)
			conn_destroy(c, true);
		return;
	}
	if (c->lingering)
		return;
	in = bufferevent_get_input(c->bev);
	out = bufferevent_get_output(c->bev);
	if (c->continue_due && !c->closing && TAILQ_EMPTY(&c->pending)) {
		c->continue_due = false;
		evbuffer_add(out, "HTTP/1.1 100 Continue\r\n\r\n", 25);
	}
	if (TAILQ_EMPTY(&c->pending) && (c->closing || (c->eof && evbuffer_get_length(in) == 0))) {
		/* Done: once the output is written (write_cb comes back here) close. */
		conn_set_reading(c, false);
		conn_set_timer(c, TIMER_NONE);
		if (evbuffer_get_length(out) > 0)
			return;
		if (c->eof) {
			conn_close_now(c);
			conn_destroy(c, true);
		} else {
			conn_linger(c);
		}
		return;
	}
	parse = conn_may_parse(c);
	conn_set_reading(c, parse && !c->eof);
	if (parse && evbuffer_get_length(in) > 0)
		event_active(c->resume, EV_READ, 0); /* input read before a pause */
	if (c->closing)
		conn_set_timer(c, TIMER_NONE);
	else if (http_parser_phase(c->parser) == HTTP_PHASE_HEAD)
		conn_set_timer(c, TIMER_HEAD);
	else if (http_parser_phase(c->parser) == HTTP_PHASE_BODY)
		conn_set_timer(c, TIMER_BODY);
	else
		conn_set_timer(c, TAILQ_EMPTY(&c->pending) && !c->eof ? TIMER_IDLE : TIMER_NONE);
}

/* Queues the module's own answer (r: what was read of the request, or NULL) and stops reading. */
static void
conn_fail(http_conn_t *c, int status, const char *text, http_request_t *r)
{
	if (log_ratelimit_allow(&c->rl))
		log_info("http", "peer=%s %d %s: %s", c->peer, status, http_status_reason(status),
			 text);
	if (r == NULL)
		r = request_new();
	c->closing = true;
	c->continue_due = false;
	r->conn = c;
	response_build_error(r, &c->opts, status, text, true, &r->out);
	r->answered = true;
	request_release(r);
	queue_push(c, r);
	metrics_http(METRICS_ROUTE_OTHER, status, 0);
}

static void
conn_dispatch(http_conn_t *c, http_request_t *r)
{
	r->conn = c;
	r->peer = arena_strndup(r->arena, c->peer, strlen(c->peer));
	queue_push(c, r);
	c->inflight++;
	c->queued_body += r->body.len;
	c->seq++;
	c->continue_due = false;
	if (!r->keep_alive)
		c->closing = true;
	log_debug("http", "peer=%s %.*s %.*s HTTP/1.%d", c->peer, (int)r->method.len, r->method.ptr,
		  (int)r->target.len, r->target.ptr, r->version - 10);
	r->dispatched_ns = time_mono_ns();
	c->handler(r, c->handler_ctx);
}

/* Parses what has been read, request by request, as long as the caps allow. */
static void
conn_parse(http_conn_t *c)
{
	while (conn_may_parse(c) && evbuffer_get_length(bufferevent_get_input(c->bev)) > 0) {
		struct evbuffer *in = bufferevent_get_input(c->bev);
		size_t avail = evbuffer_get_contiguous_space(in), used = 0;
		const char *data = (const char *)evbuffer_pullup(in, (ev_ssize_t)avail);
		http_parse_event_t ev = http_parser_feed(c->parser, data, avail, &used);
		const char *text;
		int status;

		evbuffer_drain(in, used);
		switch (ev) {
		case HTTP_PARSE_MORE:
			break;
		case HTTP_PARSE_CONTINUE:
			c->continue_due = true;
			break;
		case HTTP_PARSE_REQUEST:
			conn_dispatch(c, http_parser_take(c->parser));
			break;
		case HTTP_PARSE_ERROR:
			status = http_parser_error(c->parser, &text);
			conn_fail(c, status, text, http_parser_take(c->parser));
			break;
		}
	}
}

static void
read_cb(struct bufferevent *bev, void *arg)
{
	http_conn_t *c = arg;

	conn_enter(c);
	if (c->lingering)
		evbuffer_drain(bufferevent_get_input(bev),
			       evbuffer_get_length(bufferevent_get_input(bev)));
	else
		conn_parse(c);
	conn_leave(c);
}

static void
resume_cb(evutil_socket_t fd, short what, void *arg)
{
	http_conn_t *c = arg;

	conn_enter(c);
	if (c->bev != NULL && !c->lingering)
		conn_parse(c);
	conn_leave(c);
}

static void
write_cb(struct bufferevent *bev, void *arg)
{
	http_conn_t *c = arg;

	conn_enter(c);
	conn_leave(c);
}

static void
event_cb(struct bufferevent *bev, short what, void *arg)
{
	http_conn_t *c = arg;

	if (what & BEV_EVENT_CONNECTED)
		return; /* a TLS handshake is done: nothing to do */
	conn_enter(c);
	if (what & BEV_EVENT_EOF) {
		/* The client may only have shut down its sending side: answer what it sent. */
		c->eof = true;
		c->reading = false; /* libevent stopped reading */
		if (c->lingering)
			conn_close_now(c);
	} else {
		if ((what & BEV_EVENT_TIMEOUT) && log_ratelimit_allow(&c->rl))
			log_info("http", "peer=%s write timeout, closing", c->peer);
		else if (what & BEV_EVENT_ERROR)
			log_debug("http", "peer=%s connection error: %s", c->peer,
				  evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
		conn_close_now(c);
	}
	conn_leave(c);
}

static void
timer_cb(evutil_socket_t fd, short what, void *arg)
{
	http_conn_t *c = arg;
	http_timer_t kind = c->timer_kind;

	c->timer_kind = TIMER_NONE;
	conn_enter(c);
	switch (kind) {
	case TIMER_IDLE:
		log_debug("http", "peer=%s idle timeout, closing", c->peer);
		c->closing = true;
		break;
	case TIMER_HEAD:
		conn_fail(c, 408, "request header not received in time", NULL);
		break;
	case TIMER_BODY:
		conn_fail(c, 408, "request body not received in time", NULL);
		break;
	case TIMER_LINGER:
	case TIMER_NONE:
		conn_close_now(c);
		break;
	}
	conn_leave(c);
}

http_conn_t *
http_conn_new(struct event_base *base, evutil_socket_t fd, const char *peer,
	      const http_opts_t *opts, http_handler_fn handler, void *handler_ctx)
{
	struct bufferevent *bev;

	evutil_make_socket_nonblocking(fd);
	bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL)
		abort(); /* libevent is out of memory: as xmalloc does */
	return http_conn_new_bev(base, bev, peer, opts, handler, handler_ctx);
}

http_conn_t *
http_conn_new_bev(struct event_base *base, struct bufferevent *bev, const char *peer,
		  const http_opts_t *opts, http_handler_fn handler, void *handler_ctx)
{
	http_conn_t *c = xcalloc(1, sizeof(*c));
	int one = 1;

	c->opts = *opts;
	if (c->opts.max_inflight == 0)
		c->opts.max_inflight = 1;
	c->handler = handler;
	c->handler_ctx = handler_ctx;
	snprintf(c->peer, sizeof(c->peer), "%s", peer != NULL ? peer : "?");
	TAILQ_INIT(&c->pending);
	c->parser = http_parser_new(opts);
	/* Fails harmlessly on sockets that are not TCP (tests use socketpairs). */
	setsockopt(bufferevent_getfd(bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->bev = bev;
	c->timer = evtimer_new(base, timer_cb, c);
	c->resume = event_new(base, -1, 0, resume_cb, c);
	if (c->timer == NULL || c->resume == NULL)
		abort(); /* libevent is out of memory: as xmalloc does */
	bufferevent_setcb(c->bev, read_cb, write_cb, event_cb, c);
	if (c->opts.write_timeout_ms > 0) {
		struct timeval tv = {(time_t)(c->opts.write_timeout_ms / 1000),
				     (suseconds_t)((c->opts.write_timeout_ms % 1000) * 1000)};

		bufferevent_set_timeouts(c->bev, NULL, &tv);
	}
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	c->reading = true;
	conn_set_timer(c, TIMER_IDLE);
	log_debug("http", "peer=%s connected", c->peer);
	return c;
}

void
http_conn_drain(http_conn_t *c)
{
	conn_enter(c);
	c->closing = true;
	c->continue_due = false;
	conn_leave(c);
}

void
http_conn_free(http_conn_t *c)
{
	http_request_t *r;

	if (c == NULL)
		return;
	while ((r = TAILQ_FIRST(&c->pending)) != NULL) {
		queue_remove(c, r);
		if (r->answered)
			http_request_free(r);
		else
			r->conn = NULL; /* orphaned: http_respond() frees it */
	}
	if (c->bev != NULL)
		tls_bev_free(c->bev);
	conn_destroy(c, false);
}

int
http_respond(http_request_t *r, int status, const http_field_t *fields, slice_t body)
{
	http_conn_t *c = r->conn;
	int rc = 0;

	metrics_http(r->route, status, time_mono_ns() - r->dispatched_ns);
	if (r->on_answer != NULL)
		r->on_answer(r, status, r->on_answer_ctx);
	if (c == NULL) {
		http_request_free(r);
		return 0;
	}
	conn_enter(c);
	c->inflight--;
	c->queued_body -= r->body.len;
	if (c->bev == NULL) {
		/* The client has gone: drop the answer. */
		queue_remove(c, r);
		http_request_free(r);
	} else {
		/* The last answer before we close says so. */
		bool close =
		    !r->keep_alive || (c->closing && r == TAILQ_LAST(&c->pending, http_reqq));

		rc = response_build(r, &c->opts, status, fields, body, close, &r->out);
		if (rc < 0) {
			if (log_ratelimit_allow(&c->rl))
				log_error("http",
					  "peer=%s handler gave an invalid response (status %d)",
					  c->peer, status);
			response_build_error(r, &c->opts, 500, "invalid response", close, &r->out);
		}
		r->answered = true;
		request_release(r);
		/* To the socket now if its turn has come, so that parsing sees the output grow. */
		if (!c->lingering)
			conn_write_answers(c);
	}
	conn_leave(c);
	return rc;
}
