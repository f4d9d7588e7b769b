/* A small HTTP server on gateway/http for tests/integration/test_http.py: it echoes requests as
 * JSON, answers /slow/MS after MS milliseconds (out of order), /big/N with N bytes of text and
 * /stats with its open connections. Prints "port N" once listening; SIGTERM ends it cleanly. */
#include "config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <event2/listener.h>

#include "gateway/http.h"
#include "lib/buf.h"
#include "lib/log.h"
#include "lib/xalloc.h"

typedef struct node {
	LIST_ENTRY(node) link;
	http_conn_t *conn;
} node_t;

typedef struct delayed {
	LIST_ENTRY(delayed) link;
	struct event *ev;
	http_request_t *req;
} delayed_t;

static struct event_base *base;
static http_opts_t opts;
static LIST_HEAD(, node) conns = LIST_HEAD_INITIALIZER(conns);
static LIST_HEAD(, delayed) held = LIST_HEAD_INITIALIZER(held);
static unsigned long nconns, nheld, nrequests;

/* A JSON string; bytes outside ASCII as \u00XX, so that any input round-trips (as Latin-1). */
static void
json_str(buf_t *b, slice_t s)
{
	buf_append_byte(b, '"');
	for (size_t i = 0; i < s.len; i++) {
		unsigned char c = (unsigned char)s.ptr[i];

		if (c == '"' || c == '\\')
			buf_printf(b, "\\%c", c);
		else if (c < 0x20 || c >= 0x7f)
			buf_printf(b, "\\u%04x", c);
		else
			buf_append_byte(b, (char)c);
	}
	buf_append_byte(b, '"');
}

static void
answer_echo(http_request_t *req)
{
	static const http_field_t fields[] = {{"Content-Type", "application/json"}, {NULL, NULL}};
	buf_t b = BUF_INIT;
	http_query_t q;
	slice_t k, v;
	size_t n = http_request_header_count(req);

	buf_append_cstr(&b, "{\"method\":");
	json_str(&b, http_request_method(req));
	buf_append_cstr(&b, ",\"path\":");
	json_str(&b, http_request_path(req));
	buf_append_cstr(&b, ",\"query\":");
	if (http_request_query(req).ptr != NULL)
		json_str(&b, http_request_query(req));
	else
		buf_append_cstr(&b, "null");
	buf_append_cstr(&b, ",\"params\":[");
	http_query_init(&q, http_request_query(req), http_request_arena(req));
	for (int i = 0; http_query_next(&q, &k, &v); i++) {
		buf_append_cstr(&b, i ? ",[" : "[");
		json_str(&b, k);
		buf_append_byte(&b, ',');
		json_str(&b, v);
		buf_append_byte(&b, ']');
	}
	buf_printf(&b, "],\"query_ok\":%s,\"version\":%d,\"peer\":", q.err == 0 ? "true" : "false",
		   http_request_version(req));
	json_str(&b, slice_cstr(http_request_peer(req)));
	buf_append_cstr(&b, ",\"headers\":[");
	for (size_t i = 0; i < n; i++) {
		http_request_header_at(req, i, &k, &v);
		buf_append_cstr(&b, i ? ",[" : "[");
		json_str(&b, k);
		buf_append_byte(&b, ',');
		json_str(&b, v);
		buf_append_byte(&b, ']');
	}
	buf_append_cstr(&b, "],\"body\":");
	json_str(&b, http_request_body(req));
	buf_append_cstr(&b, "}\n");
	http_respond(req, 200, fields, buf_slice(&b));
	buf_free(&b);
}

static void
delayed_cb(evutil_socket_t fd, short what, void *arg)
{
	delayed_t *d = arg;

	LIST_REMOVE(d, link);
	nheld--;
	answer_echo(d->req);
	event_free(d->ev);
	free(d);
}

/* The number after a path prefix ("/slow/250" -> 250). */
static uint64_t
path_number(slice_t path, size_t prefix)
{
	uint64_t n = 0;

	if (!slice_to_u64(slice_make(path.ptr + prefix, path.len - prefix), &n))
		return 0;
	return n;
}

static void
handler(http_request_t *req, void *ctx)
{
	slice_t path = http_request_path(req);

	nrequests++;
	if (path.len > 6 && memcmp(path.ptr, "/slow/", 6) == 0) {
		delayed_t *d = xcalloc(1, sizeof(*d));
		uint64_t ms = path_number(path, 6);
		struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};

		d->req = req;
		d->ev = evtimer_new(base, delayed_cb, d);
		LIST_INSERT_HEAD(&held, d, link);
		nheld++;
		evtimer_add(d->ev, &tv);
		return;
	}
	if (path.len > 5 && memcmp(path.ptr, "/big/", 5) == 0) {
		static const http_field_t fields[] = {{"Content-Type", "text/plain"}, {NULL, NULL}};
		static const char text[] = "The quick brown fox jumps over the lazy dog. ";
		uint64_t n = path_number(path, 5);
		buf_t b = BUF_INIT;

		for (uint64_t i = 0; i < n && i < (64u << 20); i++)
			buf_append_byte(&b, text[i % (sizeof(text) - 1)]);
		http_respond(req, 200, fields, buf_slice(&b));
		buf_free(&b);
		return;
	}
	if (slice_eq_cstr(path, "/stats")) {
		static const http_field_t fields[] = {{"Content-Type", "application/json"},
						      {NULL, NULL}};
		char s[160];

		snprintf(s, sizeof(s), "{\"open\":%lu,\"held\":%lu,\"requests\":%lu}\n", nconns,
			 nheld, nrequests);
		http_respond(req, 200, fields, slice_cstr(s));
		return;
	}
	if (slice_eq_cstr(path, "/empty")) {
		http_respond(req, 204, NULL, SLICE_NULL);
		return;
	}
	answer_echo(req);
}

static void
on_close(http_conn_t *c, void *ctx)
{
	node_t *n;

	LIST_FOREACH(n, &conns, link) {
		if (n->conn == c) {
			LIST_REMOVE(n, link);
			free(n);
			nconns--;
			return;
		}
	}
	abort(); /* a connection closed twice, or one we never saw */
}

static void
accept_cb(struct evconnlistener *lis, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
	const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
	char host[INET_ADDRSTRLEN] = "?", peer[64];
	node_t *n = xcalloc(1, sizeof(*n));

	inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
	snprintf(peer, sizeof(peer), "%s:%u", host, (unsigned)ntohs(in->sin_port));
	LIST_INSERT_HEAD(&conns, n, link);
	nconns++;
	n->conn = http_conn_new(base, fd, peer, &opts, handler, NULL);
}

static void
stop_cb(evutil_socket_t sig, short what, void *arg)
{
	event_base_loopexit(base, NULL);
}

static int
usage(void)
{
	fprintf(stderr, "usage: http_test_server [--OPTION N]... (options: max-request-line, "
			"max-header-bytes, max-headers, max-body, max-inflight, idle-ms, "
			"header-ms, body-ms, write-ms, gzip-min)\n");
	return 2;
}

int
main(int argc, char **argv)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);
	struct evconnlistener *lis;
	struct event *sigterm, *sigint;
	node_t *n;
	delayed_t *d;

	http_opts_init(&opts);
	opts.on_close = on_close;
	for (int i = 1; i < argc; i++) {
		const char *name = argv[i];
		uint64_t v;

		if (i + 1 >= argc || strncmp(name, "--", 2) != 0 ||
		    !slice_to_u64(slice_cstr(argv[i + 1]), &v))
			return usage();
		name += 2;
		i++;
		if (strcmp(name, "max-request-line") == 0)
			opts.max_request_line = v;
		else if (strcmp(name, "max-header-bytes") == 0)
			opts.max_header_bytes = v;
		else if (strcmp(name, "max-headers") == 0)
			opts.max_headers = v;
		else if (strcmp(name, "max-body") == 0)
			opts.max_body = v;
		else if (strcmp(name, "max-inflight") == 0)
			opts.max_inflight = (unsigned)v;
		else if (strcmp(name, "idle-ms") == 0)
			opts.idle_timeout_ms = v;
		else if (strcmp(name, "header-ms") == 0)
			opts.header_timeout_ms = v;
		else if (strcmp(name, "body-ms") == 0)
			opts.body_timeout_ms = v;
		else if (strcmp(name, "write-ms") == 0)
			opts.write_timeout_ms = v;
		else if (strcmp(name, "gzip-min") == 0)
			opts.gzip_min_bytes = v;
		else
			return usage();
	}
	signal(SIGPIPE, SIG_IGN);
	if (getenv("HTTP_TEST_DEBUG") != NULL)
		log_set_level(LOG_DEBUG);
	base = event_base_new();
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	lis = evconnlistener_new_bind(base, accept_cb, NULL,
				      LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 1024,
				      (struct sockaddr *)&sin, sizeof(sin));
	if (base == NULL || lis == NULL) {
		perror("http_test_server: listen");
		return 1;
	}
	getsockname(evconnlistener_get_fd(lis), (struct sockaddr *)&sin, &len);
	printf("port %u\n", (unsigned)ntohs(sin.sin_port));
	fflush(stdout);
	sigterm = evsignal_new(base, SIGTERM, stop_cb, NULL);
	sigint = evsignal_new(base, SIGINT, stop_cb, NULL);
	evsignal_add(sigterm, NULL);
	evsignal_add(sigint, NULL);
	event_base_dispatch(base);

	/* Tear down everything, so the sanitizers can tell a leak from a shutdown. */
	fprintf(stderr, "http_test_server: exiting with %lu open connections, %lu held requests\n",
		nconns, nheld);
	while ((n = LIST_FIRST(&conns)) != NULL) {
		LIST_REMOVE(n, link);
		http_conn_free(n->conn);
		free(n);
	}
	while ((d = LIST_FIRST(&held)) != NULL) {
		LIST_REMOVE(d, link);
		http_respond(d->req, 503, NULL, SLICE_NULL); /* orphaned: just freed */
		event_free(d->ev);
		free(d);
	}
	evconnlistener_free(lis);
	event_free(sigterm);
	event_free(sigint);
	event_base_free(base);
	return 0;
}
