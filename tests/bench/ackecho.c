/* The benchmark's limit: an MLLP server that answers every frame at once with a fixed AA,
 * changing only MSA-2 to the frame's MSH-10 (so clients can match it). No parsing, no store. */
#include "config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "gateway/mllp.h"
#include "lib/buf.h"
#include "lib/slice.h"

typedef struct {
	struct bufferevent *bev;
	mllp_framer_t fr;
	buf_t out;
} echo_conn_t;

/* MSH-10: the text after the ninth field separator of the first segment. */
static slice_t
control_id(const char *p, size_t len)
{
	size_t i = 3, field = 1, start = 0;

	if (len < 4)
		return SLICE_NULL;
	for (; i < len && p[i] != '\r' && p[i] != '\n'; i++) {
		if (p[i] != p[3])
			continue;
		field++;
		if (field == 10)
			start = i + 1;
		else if (field == 11)
			return slice_make(p + start, i - start);
	}
	return field == 10 ? slice_make(p + start, i - start) : SLICE_NULL;
}

static int
on_frame(void *ctx, const char *data, size_t len, bool oversize, size_t total)
{
	echo_conn_t *c = ctx;
	slice_t id = control_id(data, len);

	buf_append_byte(&c->out, MLLP_SB);
	buf_append_cstr(&c->out, "MSH|^~\\&|ECHO|ECHO|SENDER|SENDER|20250101000000||ACK^A01^ACK|"
				 "ECHO1|P|2.5\rMSA|AA|");
	buf_append_slice(&c->out, id);
	buf_append_cstr(&c->out, "\r\x1c\r");
	return 0;
}

static void
read_cb(struct bufferevent *bev, void *arg)
{
	echo_conn_t *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);

	while (evbuffer_get_length(in) > 0) {
		size_t n = evbuffer_get_contiguous_space(in);
		const char *p = (const char *)evbuffer_pullup(in, (ev_ssize_t)n);

		mllp_framer_feed(&c->fr, p, n, on_frame, c);
		evbuffer_drain(in, n);
	}
	bufferevent_write(bev, c->out.data, c->out.len);
	buf_reset(&c->out);
}

static void
event_cb(struct bufferevent *bev, short what, void *arg)
{
	echo_conn_t *c = arg;

	bufferevent_free(bev);
	mllp_framer_free(&c->fr);
	buf_free(&c->out);
	free(c);
}

static void
accept_cb(struct evconnlistener *lis, evutil_socket_t fd, struct sockaddr *sa, int len, void *arg)
{
	echo_conn_t *c = calloc(1, sizeof(*c));
	int one = 1;

	if (c == NULL)
		abort();
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	mllp_framer_init(&c->fr, 64u << 20);
	c->bev = bufferevent_socket_new(evconnlistener_get_base(lis), fd, BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(c->bev, read_cb, NULL, event_cb, c);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

int
main(int argc, char **argv)
{
	struct sockaddr_in sin = {.sin_family = AF_INET};
	struct event_base *base = event_base_new();
	struct evconnlistener *lis;

	if (argc != 2) {
		fprintf(stderr, "usage: ackecho PORT\n");
		return 2;
	}
	sin.sin_port = htons((uint16_t)strtoul(argv[1], NULL, 10));
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	lis = evconnlistener_new_bind(base, accept_cb, NULL,
				      LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 1024,
				      (struct sockaddr *)&sin, sizeof(sin));
	if (lis == NULL) {
		perror("ackecho: bind");
		return 1;
	}
	event_base_dispatch(base);
	return 0;
}
