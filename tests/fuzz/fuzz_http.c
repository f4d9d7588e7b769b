/* Fuzz target: the HTTP request parser. The first byte picks the limits and how the rest is cut
 * into reads; the requests and errors that come out must not depend on the cuts, must respect
 * the limits, and every request goes through the helpers a handler would use. */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/http.h"
#include "lib/buf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
use_request(http_request_t *r, const http_opts_t *o, buf_t *log)
{
	arena_t *a = http_request_arena(r);
	slice_t body = http_request_body(r), path = http_request_path(r), k, v;
	http_query_t q;
	size_t n = http_request_header_count(r);

	if (body.len > o->max_body || n > o->max_headers)
		abort();
	buf_printf(log, "R %.*s %.*s %d %zu %zu|", (int)http_request_method(r).len,
		   http_request_method(r).ptr, (int)http_request_target(r).len,
		   http_request_target(r).ptr, http_request_version(r), n, body.len);
	buf_append_slice(log, body);
	for (size_t i = 0; i < n; i++) {
		http_request_header_at(r, i, &k, &v);
		for (size_t j = 0; j < k.len; j++)
			if (k.ptr[j] >= 'A' && k.ptr[j] <= 'Z')
				abort(); /* names are lower case */
	}
	(void)http_accepts_gzip(http_request_header(r, "accept-encoding"));
	(void)http_request_header(r, "accept");
	if (http_pct_decode(a, path, false, &v) == 0 && v.len > path.len)
		abort();
	http_query_init(&q, http_request_query(r), a);
	while (http_query_next(&q, &k, &v))
		if (k.len + v.len > http_request_query(r).len)
			abort();
	http_request_free(r);
}

/* Feeds data in reads whose sizes come from a small generator seeded by seed (0: one read) and
 * writes what comes out to log. */
static void
run(const http_opts_t *o, const uint8_t *data, size_t size, unsigned seed, buf_t *log)
{
	http_parser_t *p = http_parser_new(o);
	size_t pos = 0;
	bool failed = false;

	while (pos < size && !failed) {
		size_t n = size - pos, off = 0;

		if (seed != 0) {
			seed = seed * 1103515245u + 12345u;
			n = (seed >> 16) % 23 + 1;
			n = n < size - pos ? n : size - pos;
		}
		while (off < n && !failed) {
			size_t used = 0;
			const char *text = NULL;
			int status;

			switch (
			    http_parser_feed(p, (const char *)data + pos + off, n - off, &used)) {
			case HTTP_PARSE_MORE:
				if (used != n - off)
					abort();
				break;
			case HTTP_PARSE_CONTINUE:
				buf_append_cstr(log, "C|");
				if (http_parser_phase(p) != HTTP_PHASE_BODY)
					abort();
				break;
			case HTTP_PARSE_REQUEST:
				use_request(http_parser_take(p), o, log);
				break;
			case HTTP_PARSE_ERROR:
				status = http_parser_error(p, &text);
				if (status != 400 && status != 413 && status != 414 &&
				    status != 417 && status != 431 && status != 501 &&
				    status != 505)
					abort();
				buf_printf(log, "E %d %s|", status, text);
				http_request_free(http_parser_take(p));
				failed = true;
				break;
			}
			if (used > n - off)
				abort();
			off += used;
		}
		pos += off;
	}
	http_parser_free(p);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	http_opts_t o;
	buf_t whole = BUF_INIT, split = BUF_INIT;

	if (size < 1)
		return 0;
	http_opts_init(&o);
	if (data[0] & 0x80) {
		/* Small limits, so that the fuzzer reaches them. */
		o.max_request_line = 40;
		o.max_header_bytes = 100;
		o.max_headers = 4;
		o.max_body = 32;
	}
	run(&o, data + 1, size - 1, 0, &whole);
	run(&o, data + 1, size - 1, (unsigned)(data[0] & 0x7f) + 1, &split);
	if (!slice_eq(buf_slice(&whole), buf_slice(&split)))
		abort();
	buf_free(&whole);
	buf_free(&split);
	return 0;
}
