/* Unit tests for gateway/http: the request parser (framing, limits, smuggling), the helpers,
 * and connections over a socketpair (in-order answers, gzip, HEAD, error bodies, orphans). */
#include "config.h"

#include <sys/socket.h>

#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include <cmocka.h>
#include <event2/event.h>

#include "gateway/http.h"
#include "lib/arena.h"
#include "lib/buf.h"
#include "lib/err.h"

/* ---- parser helpers ---- */

#define MAX_REQS 8

typedef struct {
	http_request_t *reqs[MAX_REQS];
	int nreq;
	int ncontinue;
	int status; /* of an error, else 0 */
	const char *text;
	size_t used; /* bytes consumed in all */
} parsed_t;

/* Feeds data in pieces of step bytes (0: all at once) and collects what comes out. */
static void
parse_steps(const http_opts_t *o, const char *data, size_t len, size_t step, parsed_t *out)
{
	http_parser_t *p = http_parser_new(o);
	size_t pos = 0;

	memset(out, 0, sizeof(*out));
	while (pos < len && out->status == 0) {
		size_t n = step == 0 || len - pos < step ? len - pos : step, off = 0;

		while (off < n && out->status == 0) {
			size_t used = 0;
			http_parse_event_t ev =
			    http_parser_feed(p, data + pos + off, n - off, &used);

			assert_true(used <= n - off);
			off += used;
			if (ev == HTTP_PARSE_REQUEST) {
				assert_true(out->nreq < MAX_REQS);
				out->reqs[out->nreq++] = http_parser_take(p);
			} else if (ev == HTTP_PARSE_CONTINUE) {
				out->ncontinue++;
			} else if (ev == HTTP_PARSE_ERROR) {
				out->status = http_parser_error(p, &out->text);
				http_request_free(http_parser_take(p));
			} else {
				assert_int_equal(off, n);
			}
		}
		pos += off;
	}
	out->used = pos;
	http_parser_free(p);
}

static void
parse_opts(const http_opts_t *o, const char *data, parsed_t *out)
{
	parse_steps(o, data, strlen(data), 0, out);
}

static void
parse(const char *data, parsed_t *out)
{
	http_opts_t o;

	http_opts_init(&o);
	parse_opts(&o, data, out);
}

static void
parsed_free(parsed_t *r)
{
	for (int i = 0; i < r->nreq; i++)
		http_request_free(r->reqs[i]);
	r->nreq = 0;
}

static void
assert_slice(slice_t s, const char *want)
{
	assert_non_null(s.ptr);
	assert_int_equal(s.len, strlen(want));
	assert_memory_equal(s.ptr, want, s.len);
}

/* The status a request is refused with (0 when it parses). */
static int
status_of(const char *data)
{
	parsed_t r;

	parse(data, &r);
	parsed_free(&r);
	return r.status;
}

/* ---- parser ---- */

static void
test_parse_simple_get(void **state)
{
	parsed_t r;

	parse("GET /fhir/Patient?name=Smith&_count=10 HTTP/1.1\r\nHost: example\r\n\r\n", &r);
	assert_int_equal(r.status, 0);
	assert_int_equal(r.nreq, 1);
	assert_slice(http_request_method(r.reqs[0]), "GET");
	assert_slice(http_request_target(r.reqs[0]), "/fhir/Patient?name=Smith&_count=10");
	assert_slice(http_request_path(r.reqs[0]), "/fhir/Patient");
	assert_slice(http_request_query(r.reqs[0]), "name=Smith&_count=10");
	assert_int_equal(http_request_version(r.reqs[0]), 11);
	assert_false(http_request_is_head(r.reqs[0]));
	assert_int_equal(http_request_body(r.reqs[0]).len, 0);
	assert_string_equal(http_request_peer(r.reqs[0]), "?");
	parsed_free(&r);

	parse("GET / HTTP/1.1\r\nHost: x\r\n\r\n", &r);
	assert_null(http_request_query(r.reqs[0]).ptr);
	parsed_free(&r);
	parse("HEAD /x? HTTP/1.0\r\n\r\n", &r);
	assert_true(http_request_is_head(r.reqs[0]));
	assert_int_equal(http_request_version(r.reqs[0]), 10);
	assert_slice(http_request_query(r.reqs[0]), "");
	parsed_free(&r);
	/* Empty lines before a request are tolerated. */
	parse("\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", &r);
	assert_int_equal(r.nreq, 1);
	parsed_free(&r);
}

static void
test_parse_headers(void **state)
{
	parsed_t r;
	slice_t name, value;

	parse("GET / HTTP/1.1\r\nHost: h\r\nACCEPT:   application/fhir+json \t\r\n"
	      "X-Empty:\r\naccept: text/xml\r\nX-Obs: caf\xc3\xa9\r\n\r\n",
	      &r);
	assert_int_equal(r.status, 0);
	assert_int_equal(http_request_header_count(r.reqs[0]), 5);
	assert_slice(http_request_header(r.reqs[0], "Host"), "h");
	/* Repeated fields read as one list; names are case-insensitive. */
	assert_slice(http_request_header(r.reqs[0], "accept"), "application/fhir+json, text/xml");
	assert_slice(http_request_header(r.reqs[0], "x-empty"), "");
	assert_slice(http_request_header(r.reqs[0], "x-obs"), "caf\xc3\xa9");
	assert_null(http_request_header(r.reqs[0], "content-type").ptr);
	http_request_header_at(r.reqs[0], 1, &name, &value);
	assert_slice(name, "accept");
	assert_slice(value, "application/fhir+json");
	parsed_free(&r);
}

static void
test_parse_pipelined(void **state)
{
	const char *in = "GET /1 HTTP/1.1\r\nHost: h\r\n\r\n"
			 "POST /2 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
			 "GET /3 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n";
	parsed_t r;

	parse(in, &r);
	assert_int_equal(r.status, 0);
	assert_int_equal(r.nreq, 3);
	assert_int_equal(r.used, strlen(in));
	assert_slice(http_request_path(r.reqs[0]), "/1");
	assert_slice(http_request_path(r.reqs[1]), "/2");
	assert_slice(http_request_body(r.reqs[1]), "hello");
	assert_slice(http_request_path(r.reqs[2]), "/3");
	parsed_free(&r);
}

static void
test_parse_byte_by_byte(void **state)
{
	const char *in = "PUT /fhir/Patient/1 HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\n"
			 "{\"a\":\"b c\"}"
			 "POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
			 "3\r\nabc\r\n0\r\n\r\n";
	http_opts_t o;
	parsed_t r;

	http_opts_init(&o);
	for (size_t step = 1; step <= 7; step++) {
		parse_steps(&o, in, strlen(in), step, &r);
		assert_int_equal(r.status, 0);
		assert_int_equal(r.nreq, 2);
		assert_slice(http_request_method(r.reqs[0]), "PUT");
		assert_slice(http_request_body(r.reqs[0]), "{\"a\":\"b c\"}");
		assert_slice(http_request_body(r.reqs[1]), "abc");
		parsed_free(&r);
	}
}

static void
test_parse_chunked(void **state)
{
	parsed_t r;

	parse("POST /b HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n"
	      "5;name=value;flag\r\nhello\r\n"
	      "A \t; ext=\"quoted\"\r\n, chunked!\r\n"
	      "0\r\nX-Trailer: dropped\r\nX-Other: too\r\n\r\n"
	      "GET /next HTTP/1.1\r\nHost: h\r\n\r\n",
	      &r);
	assert_int_equal(r.status, 0);
	assert_int_equal(r.nreq, 2);
	assert_slice(http_request_body(r.reqs[0]), "hello, chunked!");
	assert_null(http_request_header(r.reqs[0], "x-trailer").ptr);
	assert_slice(http_request_path(r.reqs[1]), "/next");
	parsed_free(&r);
	/* Transfer-Encoding as a list whose last coding is chunked. */
	assert_int_equal(
	    status_of("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: ,chunked\r\n\r\n"
		      "0\r\n\r\n"),
	    0);
	assert_int_equal(status_of("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
				   "\r\nzz\r\n"),
			 400);
	assert_int_equal(status_of("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
				   "\r\n-1\r\n"),
			 400);
	assert_int_equal(status_of("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
				   "\r\n1 x\r\n"),
			 400);
	assert_int_equal(status_of("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
				   "\r\n3\r\nabcX\r\n"),
			 400);
	assert_int_equal(status_of("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
				   "\r\n3;a\x01\r\nabc\r\n"),
			 400);
	assert_int_equal(status_of("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
				   "\r\n0\r\n folded: trailer\r\n\r\n"),
			 400);
	assert_int_equal(status_of("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
				   "\r\nfffffffffffffffffff\r\n"),
			 413);
}

static void
test_parse_expect_continue(void **state)
{
	parsed_t r;

	parse("PUT /x HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 2\r\n\r\nok",
	      &r);
	assert_int_equal(r.ncontinue, 1);
	assert_int_equal(r.nreq, 1);
	assert_slice(http_request_body(r.reqs[0]), "ok");
	parsed_free(&r);
	/* Without a body, or from HTTP/1.0, no 100 Continue. */
	parse("GET /x HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n", &r);
	assert_int_equal(r.ncontinue, 0);
	assert_int_equal(r.nreq, 1);
	parsed_free(&r);
	parse("PUT /x HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx", &r);
	assert_int_equal(r.ncontinue, 0);
	assert_int_equal(r.nreq, 1);
	parsed_free(&r);
	parse("PUT /x HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n"
	      "\r\n0\r\n\r\n",
	      &r);
	assert_int_equal(r.ncontinue, 1);
	parsed_free(&r);
	assert_int_equal(status_of("PUT /x HTTP/1.1\r\nHost: h\r\nExpect: something\r\n\r\n"), 417);
}

static void
test_parse_limits(void **state)
{
	http_opts_t o;
	parsed_t r;
	char big[512], value[61];

	http_opts_init(&o);
	o.max_request_line = 32;
	o.max_header_bytes = 64;
	o.max_headers = 3;
	o.max_body = 10;
	/* The request line: 32 bytes pass, 33 do not (414), even before its end arrives. */
	parse_opts(&o, "GET /234567890123456789 HTTP/1.1\r\nHost: h\r\n\r\n", &r);
	assert_int_equal(r.status, 0);
	parsed_free(&r);
	parse_opts(&o, "GET /2345678901234567890 HTTP/1.1\r\nHost: h\r\n\r\n", &r);
	assert_int_equal(r.status, 414);
	parse_opts(&o, "GET /234567890123456789012345678901234", &r);
	assert_int_equal(r.status, 414);
	/* Header bytes (431). */
	memset(value, 'a', 60);
	value[60] = '\0';
	snprintf(big, sizeof(big), "GET / HTTP/1.1\r\nHost: h\r\nX: %s\r\n\r\n", value);
	parse_opts(&o, big, &r);
	assert_int_equal(r.status, 431);
	parse_opts(&o, "GET / HTTP/1.1\r\nHost: h\r\nX: 12345678901234567890\r\n\r\n", &r);
	assert_int_equal(r.status, 0);
	parsed_free(&r);
	/* Header count (431), trailers included. */
	parse_opts(&o, "GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\n\r\n", &r);
	assert_int_equal(r.status, 0);
	parsed_free(&r);
	parse_opts(&o, "GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", &r);
	assert_int_equal(r.status, 431);
	parse_opts(
	    &o, "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nT: 1\r\n\r\n",
	    &r);
	assert_int_equal(r.status, 0);
	parsed_free(&r);
	parse_opts(
	    &o,
	    "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nT: 1\r\nU: "
	    "2\r\n\r\n",
	    &r);
	assert_int_equal(r.status, 431);
	/* Body (413): Content-Length is refused before any body byte, chunks when they add up. */
	parse_opts(&o, "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n0123456789", &r);
	assert_int_equal(r.status, 0);
	parsed_free(&r);
	parse_opts(&o, "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\n", &r);
	assert_int_equal(r.status, 413);
	parse_opts(&o,
		   "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
		   "6\r\n012345\r\n5\r\n",
		   &r);
	assert_int_equal(r.status, 413);
	parse_opts(&o, "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999\r\n\r\n",
		   &r);
	assert_int_equal(r.status, 400);
	/* Too many empty lines before a request. */
	memset(big, 0, sizeof(big));
	for (size_t i = 0; i + 2 < 64; i += 2)
		memcpy(big + i, "\r\n", 2);
	parse_opts(&o, big, &r);
	assert_int_equal(r.status, 400);
}

static void
test_parse_smuggling(void **state)
{
	/* Two lengths, a length list, a signed length. */
	assert_int_equal(status_of("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n"
				   "Content-Length: 1\r\n\r\nx"),
			 400);
	assert_int_equal(status_of("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1, 1\r\n\r\nx"),
			 400);
	assert_int_equal(status_of("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +1\r\n\r\nx"),
			 400);
	assert_int_equal(status_of("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: \r\n\r\n"), 400);
	/* Length and chunked together, in either order. */
	assert_int_equal(status_of("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n"
				   "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
			 400);
	assert_int_equal(status_of("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
				   "Content-Length: 3\r\n\r\n0\r\n\r\n"),
			 400);
	/* Codings other than chunked, chunked not last, chunked twice, TE in HTTP/1.0. */
	assert_int_equal(status_of("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked"
				   "\r\n\r\n"),
			 501);
	assert_int_equal(status_of("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip"
				   "\r\n\r\n"),
			 400);
	assert_int_equal(status_of("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
				   "Transfer-Encoding: chunked\r\n\r\n"),
			 400);
	assert_int_equal(
	    status_of("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: identity\r\n\r\n"), 400);
	assert_int_equal(status_of("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\r\n\r\n"),
			 400);
	assert_int_equal(status_of("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), 400);
	/* Obsolete line folding, whitespace before the colon, bare CR and LF, NUL, no colon. */
	assert_int_equal(status_of("GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n"), 400);
	assert_int_equal(status_of("GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n\tb\r\n\r\n"), 400);
	assert_int_equal(status_of("GET / HTTP/1.1\r\nHost: h\r\nContent-Length : 0\r\n\r\n"), 400);
	assert_int_equal(status_of("GET / HTTP/1.1\r\nHost: h\nX: 1\r\n\r\n"), 400);
	assert_int_equal(status_of("GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n"), 400);
	assert_int_equal(status_of("GET / HTTP/1.1\r\nHost: h\r\nNoColon\r\n\r\n"), 400);
	assert_int_equal(status_of("GET / HTTP/1.1\nHost: h\r\n\r\n"), 400);
	{
		static const char nul[] = "GET / HTTP/1.1\r\nHost: h\r\nX: a\0b\r\n\r\n";
		parsed_t r;
		http_opts_t o;

		http_opts_init(&o);
		parse_steps(&o, nul, sizeof(nul) - 1, 0, &r);
		assert_int_equal(r.status, 400);
	}
	/* Host: required in HTTP/1.1, once. */
	assert_int_equal(status_of("GET / HTTP/1.1\r\n\r\n"), 400);
	assert_int_equal(status_of("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), 400);
	/* Request line shape. */
	assert_int_equal(status_of("GET  / HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
	assert_int_equal(status_of("GET /\r\nHost: h\r\n\r\n"), 400);
	assert_int_equal(status_of("G(T / HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
	assert_int_equal(status_of("GET /a b HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
	assert_int_equal(status_of("GET /caf\xc3\xa9 HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
	assert_int_equal(status_of("GET /a#frag HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
}

static void
test_parse_versions_and_targets(void **state)
{
	parsed_t r;

	assert_int_equal(status_of("GET / HTTP/2.0\r\nHost: h\r\n\r\n"), 505);
	assert_int_equal(status_of("GET / HTTP/0.9\r\nHost: h\r\n\r\n"), 505);
	assert_int_equal(status_of("GET / HTTP/1\r\nHost: h\r\n\r\n"), 400);
	assert_int_equal(status_of("GET / http/1.1\r\nHost: h\r\n\r\n"), 400);
	assert_int_equal(status_of("GET / HTTP/1.10\r\nHost: h\r\n\r\n"), 400);
	assert_int_equal(status_of("GET / HTTP/1.1 \r\nHost: h\r\n\r\n"), 400);
	parse("GET / HTTP/1.2\r\nHost: h\r\n\r\n", &r);
	assert_int_equal(http_request_version(r.reqs[0]), 11);
	parsed_free(&r);
	/* Absolute-form is reduced to its path and query. */
	parse("GET http://example.org:8080/fhir/Patient?x=1 HTTP/1.1\r\nHost: h\r\n\r\n", &r);
	assert_slice(http_request_path(r.reqs[0]), "/fhir/Patient");
	assert_slice(http_request_query(r.reqs[0]), "x=1");
	parsed_free(&r);
	parse("GET HTTPS://example.org?y=2 HTTP/1.1\r\nHost: h\r\n\r\n", &r);
	assert_slice(http_request_path(r.reqs[0]), "/");
	assert_slice(http_request_query(r.reqs[0]), "y=2");
	parsed_free(&r);
	parse("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", &r);
	assert_slice(http_request_path(r.reqs[0]), "*");
	parsed_free(&r);
	assert_int_equal(status_of("GET * HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
	assert_int_equal(status_of("GET ftp://x/ HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
	assert_int_equal(status_of("GET fhir HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
	assert_int_equal(status_of("CONNECT example.org:443 HTTP/1.1\r\nHost: h\r\n\r\n"), 501);
}

/* ---- helpers ---- */

static void
test_query_and_decoding(void **state)
{
	arena_t *a = arena_new(0);
	http_query_t q;
	slice_t k, v;

	http_query_init(&q,
			SLICE_LIT("name=J%C3%BCrgen+M%c3%bcller&&given&_count=10&name=x%2By&="
				  "&a=b=c"),
			a);
	assert_true(http_query_next(&q, &k, &v));
	assert_slice(k, "name");
	assert_slice(v, "J\xc3\xbcrgen M\xc3\xbcller");
	assert_true(http_query_next(&q, &k, &v));
	assert_slice(k, "given");
	assert_slice(v, "");
	assert_true(http_query_next(&q, &k, &v));
	assert_slice(k, "_count");
	assert_slice(v, "10");
	assert_true(http_query_next(&q, &k, &v));
	assert_slice(k, "name"); /* repeated keys are kept */
	assert_slice(v, "x+y");
	assert_true(http_query_next(&q, &k, &v));
	assert_slice(k, "");
	assert_slice(v, "");
	assert_true(http_query_next(&q, &k, &v));
	assert_slice(k, "a");
	assert_slice(v, "b=c");
	assert_false(http_query_next(&q, &k, &v));
	assert_int_equal(q.err, 0);

	/* A bad escape stops the iteration, and stays. */
	http_query_init(&q, SLICE_LIT("a=1&b=%zz&c=3"), a);
	assert_true(http_query_next(&q, &k, &v));
	assert_false(http_query_next(&q, &k, &v));
	assert_int_equal(q.err, -FG_EINVAL);
	assert_false(http_query_next(&q, &k, &v));
	http_query_init(&q, SLICE_NULL, a);
	assert_false(http_query_next(&q, &k, &v));
	assert_int_equal(q.err, 0);

	/* Paths: '+' stays, %2F decodes (split segments first), bad escapes fail. */
	assert_int_equal(http_pct_decode(a, SLICE_LIT("a+b%20c%2Fd"), false, &v), 0);
	assert_slice(v, "a+b c/d");
	assert_int_equal(http_pct_decode(a, SLICE_LIT("plain"), false, &v), 0);
	assert_slice(v, "plain");
	assert_int_equal(http_pct_decode(a, SLICE_LIT("%00"), false, &v), 0);
	assert_int_equal(v.len, 1);
	assert_int_equal(v.ptr[0], '\0');
	assert_int_equal(http_pct_decode(a, SLICE_LIT("%"), false, &v), -FG_EINVAL);
	assert_int_equal(http_pct_decode(a, SLICE_LIT("ab%4"), false, &v), -FG_EINVAL);
	assert_int_equal(http_pct_decode(a, SLICE_LIT("%g0"), false, &v), -FG_EINVAL);
	arena_free(a);
}

static void
test_date_format(void **state)
{
	char d[32];

	http_date_format(784111777, d, sizeof(d));
	assert_string_equal(d, "Sun, 06 Nov 1994 08:49:37 GMT");
	http_date_format(0, d, sizeof(d));
	assert_string_equal(d, "Thu, 01 Jan 1970 00:00:00 GMT");
	http_date_format(1709210096, d, sizeof(d)); /* a leap day */
	assert_string_equal(d, "Thu, 29 Feb 2024 12:34:56 GMT");
	assert_string_equal(http_status_reason(431), "Request Header Fields Too Large");
	assert_string_equal(http_status_reason(299), "");
}

static void
test_gzip_negotiation(void **state)
{
	assert_true(http_accepts_gzip(SLICE_LIT("gzip")));
	assert_true(http_accepts_gzip(SLICE_LIT("deflate, GZip;q=0.5, br")));
	assert_true(http_accepts_gzip(SLICE_LIT("x-gzip")));
	assert_true(http_accepts_gzip(SLICE_LIT("*")));
	assert_true(http_accepts_gzip(SLICE_LIT("gzip;q=0.001")));
	assert_true(http_accepts_gzip(SLICE_LIT("gzip ; Q=1.000")));
	assert_false(http_accepts_gzip(SLICE_NULL));
	assert_false(http_accepts_gzip(SLICE_LIT("")));
	assert_false(http_accepts_gzip(SLICE_LIT("identity")));
	assert_false(http_accepts_gzip(SLICE_LIT("deflate, br")));
	assert_false(http_accepts_gzip(SLICE_LIT("gzip;q=0")));
	assert_false(http_accepts_gzip(SLICE_LIT("gzip; q=0.000")));
	assert_false(http_accepts_gzip(SLICE_LIT("gzip;q=0, *")));
	assert_false(http_accepts_gzip(SLICE_LIT("*;q=0")));
	assert_false(http_accepts_gzip(SLICE_LIT("*, gzip;q=0")));
	assert_false(http_accepts_gzip(SLICE_LIT("gzip;q=2")));
	assert_false(http_accepts_gzip(SLICE_LIT("gzip;q=abc")));
	assert_true(http_accepts_gzip(SLICE_LIT("br;q=1, *;q=0.1")));
}

/* ---- connections over a socketpair ---- */

typedef struct {
	http_request_t *held[4];
	int nheld;
	bool answer_now;
	int closed;
} server_t;

static void
handler(http_request_t *req, void *ctx)
{
	server_t *s = ctx;
	static const http_field_t fields[] = {{"Content-Type", "text/plain"}, {NULL, NULL}};
	slice_t path = http_request_path(req);

	if (!s->answer_now) {
		assert_true(s->nheld < 4);
		s->held[s->nheld++] = req;
		return;
	}
	if (slice_eq_cstr(path, "/big")) {
		static char big[4000];

		for (size_t i = 0; i < sizeof(big); i++)
			big[i] = (char)('a' + (i * 7) % 26);
		http_respond(req, 200, fields, slice_make(big, sizeof(big)));
		return;
	}
	if (slice_eq_cstr(path, "/bad")) {
		static const http_field_t bad[] = {{"Content-Length", "3"}, {NULL, NULL}};

		assert_int_equal(http_respond(req, 200, bad, SLICE_LIT("abc")), -FG_EINVAL);
		return;
	}
	http_respond(req, 200, fields, path);
}

static void
on_close(http_conn_t *c, void *ctx)
{
	((server_t *)ctx)->closed++;
}

static void
error_body(int status, const char *text, const char **ctype, buf_t *body)
{
	*ctype = "application/fhir+json";
	buf_printf(body, "{\"status\":%d}", status);
}

typedef struct {
	struct event_base *base;
	int client;
	server_t srv;
	http_opts_t opts;
	http_conn_t *conn;
} pair_t;

static void
pair_open(pair_t *p)
{
	int sv[2];

	memset(&p->srv, 0, sizeof(p->srv));
	p->srv.answer_now = true;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	p->base = event_base_new();
	assert_non_null(p->base);
	p->client = sv[1];
	fcntl(p->client, F_SETFL, O_NONBLOCK);
	p->conn = http_conn_new(p->base, sv[0], "test-peer", &p->opts, handler, &p->srv);
}

static void
pair_close(pair_t *p)
{
	close(p->client);
	for (int i = 0; i < 50 && p->srv.closed == 0; i++) {
		event_base_loop(p->base, EVLOOP_NONBLOCK);
		usleep(1000);
	}
	assert_int_equal(p->srv.closed, 1);
	event_base_free(p->base);
}

/* Runs the loop and reads until count occurrences of until have arrived and nothing more comes
 * for a few milliseconds (or EOF, or 2 seconds). */
static void
pair_read(pair_t *p, buf_t *got, const char *until, int count)
{
	int quiet = 0;

	for (int i = 0; i < 2000 && quiet < 20; i++) {
		char chunk[8192];
		ssize_t n;
		int seen = 0;

		event_base_loop(p->base, EVLOOP_NONBLOCK);
		n = recv(p->client, chunk, sizeof(chunk), 0);
		if (n > 0)
			buf_append(got, chunk, (size_t)n);
		else if (n == 0)
			break;
		for (const char *s = got->data; s != NULL && (s = strstr(s, until)) != NULL; s++)
			seen++;
		quiet = seen >= count && n < 0 ? quiet + 1 : 0;
		if (n < 0)
			usleep(500);
	}
}

static void
pair_send(pair_t *p, const char *data)
{
	assert_int_equal(send(p->client, data, strlen(data), 0), (ssize_t)strlen(data));
}

/* Runs the loop until the handler holds n requests. */
static void
pair_wait_held(pair_t *p, int n)
{
	for (int i = 0; i < 2000 && p->srv.nheld < n; i++) {
		event_base_loop(p->base, EVLOOP_NONBLOCK);
		usleep(500);
	}
	assert_int_equal(p->srv.nheld, n);
}

static void
test_conn_async_in_order(void **state)
{
	pair_t p;
	buf_t got = BUF_INIT;
	const char *a, *b;

	http_opts_init(&p.opts);
	p.opts.on_close = on_close;
	pair_open(&p);
	p.srv.answer_now = false;
	pair_send(&p,
		  "GET /first HTTP/1.1\r\nHost: h\r\n\r\nGET /second HTTP/1.1\r\nHost: h\r\n\r\n");
	pair_wait_held(&p, 2);
	assert_string_equal(http_request_peer(p.srv.held[0]), "test-peer");
	assert_false(http_request_is_orphaned(p.srv.held[0]));
	/* The second answer comes first, but waits for the first. */
	assert_int_equal(http_respond(p.srv.held[1], 201, NULL, SLICE_LIT("two")), 0);
	pair_read(&p, &got, "HTTP/1.1", 1);
	assert_int_equal(got.len, 0);
	assert_int_equal(http_respond(p.srv.held[0], 200, NULL, SLICE_LIT("one")), 0);
	pair_read(&p, &got, "HTTP/1.1", 2);
	a = strstr(got.data, "HTTP/1.1 200 OK\r\n");
	b = strstr(got.data, "HTTP/1.1 201 Created\r\n");
	assert_non_null(a);
	assert_non_null(b);
	assert_true(a < b);
	assert_non_null(strstr(a, "\r\nDate: "));
	assert_non_null(strstr(a, " GMT\r\n"));
	assert_non_null(strstr(a, "Content-Length: 3\r\n\r\none"));
	assert_null(strstr(got.data, "Connection:"));
	assert_int_equal(p.srv.closed, 0);
	buf_free(&got);
	pair_close(&p);
}

static void
test_conn_continue_in_order(void **state)
{
	pair_t p;
	buf_t got = BUF_INIT;

	/* A 100 Continue must not overtake the answer to an earlier request. */
	http_opts_init(&p.opts);
	p.opts.on_close = on_close;
	pair_open(&p);
	p.srv.answer_now = false;
	pair_send(&p, "GET /held HTTP/1.1\r\nHost: h\r\n\r\n"
		      "PUT /up HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n"
		      "Content-Length: 2\r\n\r\n");
	pair_wait_held(&p, 1);
	pair_read(&p, &got, "HTTP/1.1", 1);
	assert_int_equal(got.len, 0);
	assert_int_equal(http_respond(p.srv.held[0], 200, NULL, SLICE_LIT("held")), 0);
	pair_read(&p, &got, "HTTP/1.1", 2);
	assert_non_null(strstr(got.data, "\r\n\r\nheldHTTP/1.1 100 Continue\r\n\r\n"));
	pair_send(&p, "ok");
	pair_wait_held(&p, 2);
	assert_slice(http_request_body(p.srv.held[1]), "ok");
	assert_int_equal(http_respond(p.srv.held[1], 204, NULL, SLICE_NULL), 0);
	buf_reset(&got);
	pair_read(&p, &got, "HTTP/1.1", 1);
	assert_non_null(strstr(got.data, "HTTP/1.1 204 No Content\r\n"));
	assert_null(strstr(got.data, "Content-Length"));
	buf_free(&got);
	pair_close(&p);
}

static void
test_conn_gzip_head_close(void **state)
{
	pair_t p;
	buf_t got = BUF_INIT;
	const char *body;
	unsigned char plain[8192];
	z_stream z;

	http_opts_init(&p.opts);
	p.opts.on_close = on_close;
	pair_open(&p);
	pair_send(&p, "GET /big HTTP/1.1\r\nHost: h\r\nAccept-Encoding: br, gzip\r\n\r\n");
	pair_read(&p, &got, "\r\n\r\n", 1);
	assert_non_null(strstr(got.data, "Content-Encoding: gzip\r\n"));
	assert_non_null(strstr(got.data, "Vary: Accept-Encoding\r\n"));
	body = strstr(got.data, "\r\n\r\n") + 4;
	memset(&z, 0, sizeof(z));
	assert_int_equal(inflateInit2(&z, 15 + 16), Z_OK);
	z.next_in = (unsigned char *)(uintptr_t)body;
	z.avail_in = (unsigned)(got.len - (size_t)(body - got.data));
	z.next_out = plain;
	z.avail_out = sizeof(plain);
	assert_int_equal(inflate(&z, Z_FINISH), Z_STREAM_END);
	assert_int_equal(z.total_out, 4000);
	assert_memory_equal(plain, "ahovcjqx", 8);
	inflateEnd(&z);
	buf_reset(&got);

	/* gzip;q=0: identity, but still Vary. HEAD: the headers only. */
	pair_send(&p, "GET /big HTTP/1.1\r\nHost: h\r\nAccept-Encoding: gzip;q=0\r\n\r\n"
		      "HEAD /big HTTP/1.1\r\nHost: h\r\n\r\n");
	pair_read(&p, &got, "\r\n\r\n", 2);
	assert_null(strstr(got.data, "Content-Encoding"));
	assert_non_null(strstr(got.data, "Vary: Accept-Encoding\r\n"));
	assert_int_equal(got.len, 2 * (strstr(got.data, "\r\n\r\n") + 4 - got.data) + 4000);
	buf_reset(&got);

	/* An invalid answer becomes a 500; then Connection: close ends the connection. */
	pair_send(&p, "GET /bad HTTP/1.1\r\nHost: h\r\n\r\nGET /last HTTP/1.1\r\nHost: h\r\n"
		      "Connection: close\r\n\r\nGET /ignored HTTP/1.1\r\nHost: h\r\n\r\n");
	pair_read(&p, &got, "never", 1);
	assert_non_null(strstr(got.data, "HTTP/1.1 500 Internal Server Error\r\n"));
	assert_non_null(strstr(got.data, "Connection: close\r\n\r\n/last"));
	assert_null(strstr(got.data, "ignored"));
	buf_free(&got);
	pair_close(&p);
}

static void
test_conn_errors(void **state)
{
	pair_t p;
	buf_t got = BUF_INIT;

	http_opts_init(&p.opts);
	p.opts.on_close = on_close;
	p.opts.error_body = error_body;
	p.opts.max_body = 4;
	pair_open(&p);
	/* A good request, then one too large: both answered in order, then the close. */
	pair_send(&p, "GET /ok HTTP/1.1\r\nHost: h\r\n\r\n"
		      "POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n12345");
	pair_read(&p, &got, "never", 1);
	assert_non_null(strstr(got.data, "HTTP/1.1 200 OK\r\n"));
	assert_non_null(strstr(got.data, "HTTP/1.1 413 Content Too Large\r\n"));
	assert_non_null(strstr(got.data, "Content-Type: application/fhir+json\r\n"));
	assert_non_null(strstr(got.data, "Connection: close\r\n\r\n{\"status\":413}"));
	assert_true(strstr(got.data, " 200 ") < strstr(got.data, " 413 "));
	buf_free(&got);
	pair_close(&p);

	/* The default error body, to an HTTP/1.0 client. */
	http_opts_init(&p.opts);
	p.opts.on_close = on_close;
	pair_open(&p);
	pair_send(&p, "GET / HTTP/3.0\r\n\r\n");
	buf_init(&got, 0);
	pair_read(&p, &got, "never", 1);
	assert_non_null(strstr(got.data, "HTTP/1.1 505 HTTP Version Not Supported\r\n"));
	assert_non_null(strstr(got.data, "text/plain"));
	buf_free(&got);
	pair_close(&p);
}

static void
test_conn_orphan_and_free(void **state)
{
	pair_t p;
	http_request_t *r;

	/* The client leaves while two requests are with the handler: the first answer fails to
	 * be written, which closes the socket; the second is then dropped, and the connection
	 * goes only after it. */
	http_opts_init(&p.opts);
	p.opts.on_close = on_close;
	pair_open(&p);
	p.srv.answer_now = false;
	pair_send(&p, "GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n");
	pair_wait_held(&p, 2);
	close(p.client);
	assert_int_equal(http_respond(p.srv.held[0], 200, NULL, SLICE_LIT("first")), 0);
	for (int i = 0; i < 2000 && !http_request_is_orphaned(p.srv.held[1]); i++) {
		event_base_loop(p.base, EVLOOP_NONBLOCK);
		usleep(500);
	}
	assert_true(http_request_is_orphaned(p.srv.held[1]));
	assert_int_equal(p.srv.closed, 0);
	assert_int_equal(http_respond(p.srv.held[1], 200, NULL, SLICE_LIT("late")), 0);
	assert_int_equal(p.srv.closed, 1);
	event_base_free(p.base);

	/* http_conn_free with a request still out: it is orphaned, and freed by its answer. */
	pair_open(&p);
	p.srv.answer_now = false;
	pair_send(&p, "GET /c HTTP/1.1\r\nHost: h\r\n\r\n");
	pair_wait_held(&p, 1);
	r = p.srv.held[0];
	http_conn_free(p.conn);
	assert_true(http_request_is_orphaned(r));
	assert_int_equal(http_respond(r, 200, NULL, SLICE_LIT("late")), 0);
	assert_int_equal(p.srv.closed, 0);
	close(p.client);
	event_base_free(p.base);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_parse_simple_get),
	    cmocka_unit_test(test_parse_headers),
	    cmocka_unit_test(test_parse_pipelined),
	    cmocka_unit_test(test_parse_byte_by_byte),
	    cmocka_unit_test(test_parse_chunked),
	    cmocka_unit_test(test_parse_expect_continue),
	    cmocka_unit_test(test_parse_limits),
	    cmocka_unit_test(test_parse_smuggling),
	    cmocka_unit_test(test_parse_versions_and_targets),
	    cmocka_unit_test(test_query_and_decoding),
	    cmocka_unit_test(test_date_format),
	    cmocka_unit_test(test_gzip_negotiation),
	    cmocka_unit_test(test_conn_async_in_order),
	    cmocka_unit_test(test_conn_continue_in_order),
	    cmocka_unit_test(test_conn_gzip_head_close),
	    cmocka_unit_test(test_conn_errors),
	    cmocka_unit_test(test_conn_orphan_and_free),
	};

	/* Writing to a client that has gone must fail with EPIPE, not kill the test. */
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests_name("http", tests, NULL, NULL);
}
