/* HTTP/1.1 server side: a pure request parser, connections on an I/O thread's event_base with
 * keep-alive, in-order pipelining and asynchronous responses, and the helpers handlers need. */
#ifndef GATEWAY_HTTP_H
#define GATEWAY_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <event2/util.h>

#include "gateway/metrics.h"
#include "lib/arena.h"
#include "lib/buf.h"
#include "lib/slice.h"

typedef struct http_conn http_conn_t;
typedef struct http_request http_request_t;
typedef struct http_parser http_parser_t;
struct event_base;
struct bufferevent;

/* Called on the connection's I/O thread for every complete request, in arrival order. The
 * handler owns nothing but must answer each request exactly once with http_respond(), now or
 * later (from the same thread), even when the client has gone meanwhile. */
typedef void (*http_handler_fn)(http_request_t *req, void *handler_ctx);

/* Fills an error response the module sends by itself (parser errors, timeouts): append the body
 * to body and set *content_type to a static string. */
typedef void (*http_error_body_fn)(int status, const char *text, const char **content_type,
				   buf_t *body);

/* Called once when a connection is gone for good: its socket is closed and every request it
 * passed to the handler has been answered. The connection is freed right after. */
typedef void (*http_close_fn)(http_conn_t *conn, void *handler_ctx);

typedef struct {
	/* Limits, each answered with its status: see docs/http.md. */
	size_t max_request_line; /* 414 */
	size_t max_header_bytes; /* 431: all header (and trailer) lines together */
	size_t max_headers;      /* 431 */
	size_t max_body;         /* 413; also caps body bytes waiting in the pipeline */
	unsigned max_inflight;   /* requests read and not yet written back, per connection */
	/* Timeouts in milliseconds; 0 disables one. */
	uint64_t idle_timeout_ms;   /* nothing in flight, waiting for the next request */
	uint64_t header_timeout_ms; /* from a request's first byte to the end of its header */
	uint64_t body_timeout_ms;   /* from the end of the header to the end of the body */
	uint64_t write_timeout_ms;  /* no progress writing responses to the client */
	/* gzip response bodies of at least gzip_min_bytes when the client accepts gzip. */
	int gzip_level; /* 1..9; 0: never compress */
	size_t gzip_min_bytes;
	http_error_body_fn error_body; /* NULL: plain text */
	http_close_fn on_close;        /* NULL: nobody needs to know */
} http_opts_t;

/* Defaults: 8 KiB request line, 32 KiB and 100 header lines, 16 MiB body, 16 in flight, 60 s
 * idle, 10 s header, 60 s body and write timeouts, gzip level 6 from 1 KiB. */
void http_opts_init(http_opts_t *opts);

/* ---- connections (all calls on the thread that runs base) ---- */

/* Takes over fd (closed when the connection ends) and starts reading. opts is copied; peer
 * (for logs, e.g. "10.0.0.1:5123") too. Returns the connection (owned by itself: it frees
 * itself after on_close). */
http_conn_t *http_conn_new(struct event_base *base, evutil_socket_t fd, const char *peer,
			   const http_opts_t *opts, http_handler_fn handler, void *handler_ctx);
/* The same over a bufferevent made by the caller (a TLS one from gateway/tls.h), which the
 * connection takes over (freed with it, with a close_notify on TLS). */
http_conn_t *http_conn_new_bev(struct event_base *base, struct bufferevent *bev, const char *peer,
			       const http_opts_t *opts, http_handler_fn handler, void *handler_ctx);
/* Stops reading new requests; answers those in flight (the last with Connection: close), then
 * closes. For a graceful shutdown. */
void http_conn_drain(http_conn_t *conn);
/* Closes now and frees the connection without calling on_close; requests not yet answered
 * stay valid, and http_respond() then just frees them. For a shutdown that gave up waiting. */
void http_conn_free(http_conn_t *conn);
/* Borrowed, valid until the connection is freed. */
const char *http_conn_peer(const http_conn_t *conn);

/* ---- requests ---- */

/* Accessors: slices borrowed, valid until the request is answered (or freed). */
slice_t http_request_method(const http_request_t *req);
/* The request target as sent ("/fhir/Patient?name=x"); absolute-form is reduced to its path. */
slice_t http_request_target(const http_request_t *req);
/* Path still percent-encoded (decode each segment with http_pct_decode()). */
slice_t http_request_path(const http_request_t *req);
/* Raw query after '?', without the '?'; ptr NULL when the target had no '?'. */
slice_t http_request_query(const http_request_t *req);
/* 10 for HTTP/1.0, 11 for HTTP/1.1. */
int http_request_version(const http_request_t *req);
bool http_request_is_head(const http_request_t *req);
/* A header's value (name case-insensitive), repeated fields joined with ", "; ptr NULL when
 * absent. */
slice_t http_request_header(http_request_t *req, const char *name);
size_t http_request_header_count(const http_request_t *req);
/* The i-th header field as received (name in lower case), i < http_request_header_count(). */
void http_request_header_at(const http_request_t *req, size_t i, slice_t *name, slice_t *value);
/* The whole body (de-chunked); empty when there was none. */
slice_t http_request_body(const http_request_t *req);
/* The client's address, "?" for a parser-only request; borrowed like the slices. */
const char *http_request_peer(const http_request_t *req);
/* What the request was, for the metrics' route label (default METRICS_ROUTE_OTHER). */
void http_request_set_route(http_request_t *req, metrics_route_t route);
/* Called by http_respond() with the status, before the request's memory goes (the request and
 * its arena are still valid during the call); one per request, e.g. for the audit trail. */
typedef void (*http_answer_fn)(http_request_t *req, int status, void *ctx);
void http_request_on_answer(http_request_t *req, http_answer_fn fn, void *ctx);
/* Request-scoped arena for the handler, freed when the request is answered. */
arena_t *http_request_arena(http_request_t *req);
/* True when the connection is gone: a response would be dropped. */
bool http_request_is_orphaned(const http_request_t *req);

/* A response header; name must be a token, value must not hold CR, LF or NUL. */
typedef struct {
	const char *name;
	const char *value;
} http_field_t;

/* Answers req (and ends it: req is invalid after the call) with status 200..599, the fields
 * (an array ended by {NULL, NULL}, or NULL) and body (copied). The module adds Date,
 * Content-Length, Connection and, when it compresses, Content-Encoding and Vary; fields must not
 * set Date, Content-Length, Connection or Transfer-Encoding. A HEAD request gets the headers of
 * the body given, without it. Responses leave in request order. Returns 0, or -FG_EINVAL when
 * status or fields were invalid: a 500 went out instead. */
int http_respond(http_request_t *req, int status, const http_field_t *fields, slice_t body);
/* Frees a request taken from a parser (not one a connection passed to a handler); accepts NULL. */
void http_request_free(http_request_t *req);

/* ---- the parser: bytes in, requests out; no I/O, so it can be fuzzed ---- */

typedef enum {
	HTTP_PARSE_MORE,     /* all input used, no complete request yet */
	HTTP_PARSE_CONTINUE, /* a header with Expect: 100-continue ended: send 100, then feed on */
	HTTP_PARSE_REQUEST,  /* a request is complete: http_parser_take() it, then feed on */
	HTTP_PARSE_ERROR,    /* bad or too large: see http_parser_error(); stays in error */
} http_parse_event_t;

typedef enum {
	HTTP_PHASE_IDLE, /* between requests */
	HTTP_PHASE_HEAD, /* inside a request line or header */
	HTTP_PHASE_BODY, /* inside a body */
} http_phase_t;

/* Caller owns; the limits of opts are copied. */
http_parser_t *http_parser_new(const http_opts_t *opts);
/* Accepts NULL. */
void http_parser_free(http_parser_t *p);
/* Parses up to len bytes and stops at the first event; *used says how many were consumed. */
http_parse_event_t http_parser_feed(http_parser_t *p, const char *data, size_t len, size_t *used);
/* The complete request (caller owns) after HTTP_PARSE_REQUEST; the parser then waits for the
 * next one. */
http_request_t *http_parser_take(http_parser_t *p);
/* After HTTP_PARSE_ERROR: the status to answer (400, 413, 414, 417, 431, 501, 505) and a short
 * static text. The request seen so far (caller owns; NULL before its request line) may be taken
 * with http_parser_take() to shape the answer (HEAD). */
int http_parser_error(const http_parser_t *p, const char **text);
http_phase_t http_parser_phase(const http_parser_t *p);

/* ---- helpers ---- */

/* Decodes %XX (and '+' to a space when plus_is_space) into *out: a slice of s itself when
 * nothing needed decoding, else of memory from a (valid until the arena is freed). -FG_EINVAL on
 * a '%' not followed by two hex digits. */
int http_pct_decode(arena_t *a, slice_t s, bool plus_is_space, slice_t *out);

/* Iterates the key=value pairs of a raw query in order, repeated keys included, '+' and %XX
 * decoded; a pair without '=' has an empty value, empty pairs are skipped. A bad escape stops
 * the iteration with err = -FG_EINVAL (sticky). */
typedef struct {
	slice_t rest;
	arena_t *arena;
	int err;
} http_query_t;

void http_query_init(http_query_t *q, slice_t raw, arena_t *arena);
bool http_query_next(http_query_t *q, slice_t *key, slice_t *value);

/* Whether an Accept-Encoding value allows gzip (q-values respected; absent: no). */
bool http_accepts_gzip(slice_t accept_encoding);
/* IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT") into out (at least 30 bytes). */
void http_date_format(time_t t, char *out, size_t cap);
/* The reason phrase of a status ("Not Found"); borrowed static string, "" if unknown. */
const char *http_status_reason(int status);

#endif
