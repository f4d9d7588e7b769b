/* `fhirgate send`: the engineer's MLLP client, which doubles as the benchmarks' load generator. */
#include "config.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "gateway/cli.h"
#include "gateway/mllp.h"
#include "gateway/tls.h"
#include "lib/arena.h"
#include "lib/buf.h"
#include "lib/err.h"
#include "lib/timeutil.h"
#include "lib/xalloc.h"
#include "mappings/hl7.h"

/* One message to send, loaded from a file. */
typedef struct {
	char *name;    /* "file#n" */
	slice_t bytes; /* into a loaded file (owned by send_t.files) */
	size_t id_off; /* MSH-10 position, for --unique-ids */
	size_t id_len;
	bool has_id;
	bool no_ack;     /* MSH-15 and MSH-16 ask for no ACK at all */
	bool want_app;   /* an application ACK will come (unless MSH-16 ER/SU rules say no) */
	char app_ack[3]; /* MSH-16 value: "AL", "NE", "ER", "SU" or "" */
} smsg_t;

typedef struct pend {
	TAILQ_ENTRY(pend) link;
	size_t msg;
	uint64_t sent_ns;
	char *control_id; /* as sent */
} pend_t;

typedef struct sconn sconn_t;

typedef struct {
	struct event_base *base;
	smsg_t *msgs;
	size_t nmsgs;
	char **files;
	size_t nfiles;
	/* options */
	char host[256];
	char port[16];
	unsigned conns, pipeline;
	uint64_t count; /* messages to send in all */
	double rate;    /* messages per second, 0 unlimited */
	uint64_t timeout_ms;
	bool quiet, unique;
	tls_client_t *tls; /* NULL: plain MLLP */
	/* progress */
	uint64_t next, sent, completed, aa, ae, ar, other, errors, no_ack, unexpected;
	uint64_t t0, t_end;
	uint32_t *lat_us;
	size_t nlat;
	double tokens;
	uint64_t last_refill;
	struct event *tick;
	sconn_t *cs;
	unsigned open;
} send_t;

struct sconn {
	send_t *s;
	struct bufferevent *bev;
	mllp_framer_t framer;
	TAILQ_HEAD(, pend) pending;
	unsigned npending;
	bool connected, dead;
};

static void pump(send_t *s);

static void
conn_finish(sconn_t *c, const char *why)
{
	send_t *s = c->s;
	pend_t *p;

	if (c->dead)
		return;
	c->dead = true;
	if (why != NULL) {
		fprintf(stderr, "fhirgate send: connection: %s\n", why);
		s->errors++;
	}
	while ((p = TAILQ_FIRST(&c->pending)) != NULL) {
		TAILQ_REMOVE(&c->pending, p, link);
		if (why == NULL)
			s->errors++;
		free(p->control_id);
		free(p);
	}
	if (c->bev != NULL)
		tls_bev_free(c->bev);
	c->bev = NULL;
	mllp_framer_free(&c->framer);
	if (--s->open == 0)
		event_base_loopexit(s->base, NULL);
}

static void
record_latency(send_t *s, uint64_t ns)
{
	if ((s->nlat & (s->nlat - 1)) == 0 && s->nlat >= 1024)
		s->lat_us = xreallocarray(s->lat_us, s->nlat * 2, sizeof(*s->lat_us));
	else if (s->lat_us == NULL)
		s->lat_us = xreallocarray(NULL, 1024, sizeof(*s->lat_us));
	s->lat_us[s->nlat++] = (uint32_t)(ns / 1000 > UINT32_MAX ? UINT32_MAX : ns / 1000);
}

static void
print_ack(const send_t *s, const pend_t *p, const char *data, size_t len)
{
	printf("%s\n", s->msgs[p->msg].name);
	for (size_t i = 0; i < len; i++)
		putchar(data[i] == '\r' ? '\n' : data[i]);
	if (len > 0 && data[len - 1] != '\r')
		putchar('\n');
	putchar('\n');
}

static int
on_ack(void *ctx, const char *data, size_t len, bool oversize, size_t total)
{
	sconn_t *c = ctx;
	send_t *s = c->s;
	arena_t *a = arena_new(8192);
	hl7_limits_t lim;
	hl7_msg_t *m = NULL;
	hl7_error_t err;
	const hl7_seg_t *msa;
	slice_t code, id;
	pend_t *p;
	bool final;

	hl7_limits_default(&lim);
	if (hl7_parse(a, data, len, &lim, &m, &err) < 0 ||
	    (msa = hl7_msg_find(m, "MSA", 0)) == NULL) {
		arena_free(a);
		conn_finish(c, "received a frame that is not an ACK");
		return 1;
	}
	code = hl7_seg_get(m, msa, 1, 1, 1, 0);
	id = hl7_seg_get(m, msa, 2, 1, 1, 0);
	TAILQ_FOREACH(p, &c->pending, link)
		if (slice_eq_cstr(id, p->control_id))
			break;
	if (p == NULL) {
		/* E.g. an ACK the message's MSH-15/16 said it did not want: note it, go on. */
		s->unexpected++;
		if (!s->quiet)
			printf("(ACK for no message waiting for one on this connection)\n");
		arena_free(a);
		return 0;
	}
	if (!s->quiet)
		print_ack(s, p, data, len);
	/* A commit ACK (C*) ends the exchange only when no application ACK will follow. */
	final = code.len == 2 && code.ptr[0] == 'A';
	if (code.len == 2 && code.ptr[0] == 'C') {
		const smsg_t *sm = &s->msgs[p->msg];
		bool ok = code.ptr[1] == 'A';

		final = !sm->want_app || (strcmp(sm->app_ack, "ER") == 0 && ok) ||
			(strcmp(sm->app_ack, "SU") == 0 && !ok);
	}
	if (final) {
		if (slice_eq_cstr(code, "AA") || slice_eq_cstr(code, "CA"))
			s->aa++;
		else if (slice_eq_cstr(code, "AE") || slice_eq_cstr(code, "CE"))
			s->ae++;
		else if (slice_eq_cstr(code, "AR") || slice_eq_cstr(code, "CR"))
			s->ar++;
		else
			s->other++;
		record_latency(s, time_mono_ns() - p->sent_ns);
		TAILQ_REMOVE(&c->pending, p, link);
		c->npending--;
		s->completed++;
		free(p->control_id);
		free(p);
	}
	arena_free(a);
	return 0;
}

static bool
all_done(const send_t *s)
{
	return s->next >= s->count && s->completed + s->no_ack + s->errors >= s->count;
}

/* Writes one message on c, with a unique MSH-10 when asked. */
static void
send_one(send_t *s, sconn_t *c)
{
	size_t idx = (size_t)(s->next % s->nmsgs);
	const smsg_t *m = &s->msgs[idx];
	buf_t out = BUF_INIT, id = BUF_INIT;

	if (m->has_id) {
		buf_append(&id, m->bytes.ptr + m->id_off, m->id_len);
		if (s->unique)
			buf_printf(&id, "-%llx-%llx", (unsigned long long)s->t0,
				   (unsigned long long)s->next);
	}
	buf_append_byte(&out, MLLP_SB);
	if (m->has_id) {
		buf_append(&out, m->bytes.ptr, m->id_off);
		buf_append_slice(&out, buf_slice(&id));
		buf_append(&out, m->bytes.ptr + m->id_off + m->id_len,
			   m->bytes.len - m->id_off - m->id_len);
	} else {
		buf_append_slice(&out, m->bytes);
	}
	buf_append_byte(&out, MLLP_EB);
	buf_append_byte(&out, MLLP_CR);
	bufferevent_write(c->bev, out.data, out.len);
	s->next++;
	s->sent++;
	if (m->no_ack) {
		s->no_ack++;
	} else {
		pend_t *p = xcalloc(1, sizeof(*p));

		p->msg = idx;
		p->sent_ns = time_mono_ns();
		p->control_id = buf_steal(&id, NULL);
		TAILQ_INSERT_TAIL(&c->pending, p, link);
		c->npending++;
	}
	buf_free(&out);
	buf_free(&id);
}

static bool
take_token(send_t *s)
{
	uint64_t now;

	if (s->rate <= 0)
		return true;
	now = time_mono_ns();
	s->tokens += (double)(now - s->last_refill) / 1e9 * s->rate;
	if (s->tokens > s->rate / 10 + 1)
		s->tokens = s->rate / 10 + 1;
	s->last_refill = now;
	if (s->tokens < 1)
		return false;
	s->tokens -= 1;
	return true;
}

/* Fills every connection's pipeline; with a rate, what the token bucket allows. */
static void
pump(send_t *s)
{
	bool progress = true;

	while (progress && s->next < s->count) {
		progress = false;
		for (unsigned i = 0; i < s->conns && s->next < s->count; i++) {
			sconn_t *c = &s->cs[i];

			if (c->dead || !c->connected || c->npending >= s->pipeline)
				continue;
			if (!take_token(s))
				return;
			send_one(s, c);
			progress = true;
		}
	}
	if (all_done(s)) {
		for (unsigned i = 0; i < s->conns; i++)
			conn_finish(&s->cs[i], NULL);
	}
}

static void
read_cb(struct bufferevent *bev, void *ctx)
{
	sconn_t *c = ctx;
	struct evbuffer *in = bufferevent_get_input(bev);

	while (!c->dead && evbuffer_get_length(in) > 0) {
		size_t avail = evbuffer_get_contiguous_space(in);
		const char *p = (const char *)evbuffer_pullup(in, (ev_ssize_t)avail);
		size_t used = mllp_framer_feed(&c->framer, p, avail, on_ack, c);

		if (c->dead)
			return;
		evbuffer_drain(in, used);
	}
	pump(c->s);
}

static void
event_cb(struct bufferevent *bev, short what, void *ctx)
{
	sconn_t *c = ctx;

	if (what & BEV_EVENT_CONNECTED) {
		int one = 1;

		setsockopt(bufferevent_getfd(bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		bufferevent_set_timeouts(bev, NULL, NULL);
		c->connected = true;
		pump(c->s);
		return;
	}
	if (what & BEV_EVENT_EOF)
		conn_finish(c, c->npending ? "server closed the connection with messages unACKed"
					   : NULL);
	else if (what & BEV_EVENT_ERROR) {
		char why[512];

		tls_bev_error(bev, why, sizeof(why));
		if (why[0] != '\0') {
			char *msg = xasprintf("TLS: %s", why);

			conn_finish(c, msg);
			free(msg);
		} else {
			conn_finish(c, strerror(EVUTIL_SOCKET_ERROR()));
		}
	} else if (what & BEV_EVENT_TIMEOUT)
		conn_finish(c, c->connected ? "timed out waiting for an ACK"
					    : "timed out connecting (TLS handshake)");
}

static void
tick_cb(evutil_socket_t fd, short what, void *arg)
{
	send_t *s = arg;
	uint64_t now = time_mono_ns();

	for (unsigned i = 0; i < s->conns; i++) {
		sconn_t *c = &s->cs[i];
		pend_t *p = TAILQ_FIRST(&c->pending);

		if (!c->dead && p != NULL && now - p->sent_ns > s->timeout_ms * 1000000u)
			conn_finish(c, "timed out waiting for an ACK");
	}
	pump(s);
}

/* Loads a file and splits it into messages (batches and concatenations); a file that does not
 * split is sent whole, so that malformed test messages reach the server as they are. */
static void
load_file(send_t *s, arena_t *a, const char *path, char *data, size_t len)
{
	slice_t *parts = NULL;
	size_t n = 0;
	hl7_error_t err;
	hl7_limits_t lim;

	hl7_limits_default(&lim);
	if (hl7_batch_split(a, data, len, &parts, &n, &err) < 0 || n == 0) {
		parts = arena_alloc(a, sizeof(*parts));
		parts[0] = slice_make(data, len);
		n = 1;
	}
	s->msgs = xreallocarray(s->msgs, s->nmsgs + n, sizeof(*s->msgs));
	for (size_t i = 0; i < n; i++) {
		smsg_t *m = &s->msgs[s->nmsgs++];
		hl7_msg_t *msg = NULL;

		memset(m, 0, sizeof(*m));
		m->bytes = parts[i];
		m->name = n > 1 ? xasprintf("%s#%zu", path, i + 1) : xstrdup(path);
		m->want_app = true;
		if (hl7_parse(a, parts[i].ptr, parts[i].len, &lim, &msg, &err) >= 0 ||
		    msg != NULL) {
			const hl7_header_t *h = hl7_msg_header(msg);

			if (h->control_id.len > 0 && h->control_id.ptr >= parts[i].ptr &&
			    h->control_id.ptr + h->control_id.len <= parts[i].ptr + parts[i].len) {
				m->has_id = true;
				m->id_off = (size_t)(h->control_id.ptr - parts[i].ptr);
				m->id_len = h->control_id.len;
			}
			if (h->app_ack.len == 2)
				memcpy(m->app_ack, h->app_ack.ptr, 2);
			if (hl7_msg_is_enhanced(msg)) {
				bool commit_ne = slice_eq_cstr(h->accept_ack, "NE") ||
						 slice_eq_cstr(h->accept_ack, "ER");

				m->want_app = !slice_eq_cstr(h->app_ack, "NE");
				m->no_ack = commit_ne && !m->want_app;
			}
		}
	}
}

static int
read_all(FILE *f, buf_t *b)
{
	char chunk[65536];
	size_t n;

	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		if (buf_append(b, chunk, n) < 0)
			return -1;
	return ferror(f) ? -1 : 0;
}

static int
load_path(send_t *s, arena_t *a, const char *path)
{
	struct stat st;
	buf_t b = BUF_INIT;
	FILE *f;
	char *data;
	size_t len;

	if (strcmp(path, "-") == 0) {
		if (read_all(stdin, &b) < 0)
			return -1;
	} else {
		if (stat(path, &st) < 0) {
			fprintf(stderr, "fhirgate send: %s: %s\n", path, strerror(errno));
			return -1;
		}
		if (S_ISDIR(st.st_mode)) {
			struct dirent **ents;
			int n = scandir(path, &ents, NULL, alphasort), rc = 0;

			if (n < 0) {
				fprintf(stderr, "fhirgate send: %s: %s\n", path, strerror(errno));
				return -1;
			}
			for (int i = 0; i < n; i++) {
				const char *nm = ents[i]->d_name;
				size_t l = strlen(nm);
				char *sub;

				/* Skip hidden files and the corpus's notes and reference outputs.
				 */
				if (nm[0] != '.' && !(l > 5 && strcmp(nm + l - 5, ".json") == 0) &&
				    !(l > 3 && strcmp(nm + l - 3, ".md") == 0) && rc == 0) {
					sub = xasprintf("%s/%s", path, nm);
					rc = load_path(s, a, sub);
					free(sub);
				}
				free(ents[i]);
			}
			free(ents);
			return rc;
		}
		f = fopen(path, "rb");
		if (f == NULL || read_all(f, &b) < 0) {
			fprintf(stderr, "fhirgate send: %s: %s\n", path, strerror(errno));
			if (f != NULL)
				fclose(f);
			buf_free(&b);
			return -1;
		}
		fclose(f);
	}
	data = buf_steal(&b, &len);
	s->files = xreallocarray(s->files, s->nfiles + 1, sizeof(*s->files));
	s->files[s->nfiles++] = data;
	load_file(s, a, path, data, len);
	return 0;
}

static int
cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

static double
percentile_ms(const send_t *s, double q)
{
	size_t i;

	if (s->nlat == 0)
		return 0;
	i = (size_t)(q * (double)(s->nlat - 1) + 0.5);
	return (double)s->lat_us[i] / 1000.0;
}

static void
usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: fhirgate send [OPTIONS] [FILE|DIR|-]...\n\n"
	    "Sends HL7 v2 messages over MLLP and prints each ACK. Files may hold one message,\n"
	    "several, or FHS/BHS batches; a folder is read recursively; '-' (default) is stdin.\n\n"
	    "  -H, --host HOST        server (default: first mllp.listen address)\n"
	    "  -p, --port PORT        port (default: from mllp.listen)\n"
	    "  -n, --connections N    parallel connections (default 1)\n"
	    "  -N, --count N          messages to send in all, cycling through the input\n"
	    "                         (default: each message once)\n"
	    "  -d, --pipeline D       messages in flight per connection (default 1)\n"
	    "  -r, --rate R           at most R messages per second over all connections\n"
	    "  -u, --unique-ids       append a unique suffix to each MSH-10 (benchmarks)\n"
	    "  -t, --timeout MS       give up on an ACK after MS milliseconds (default 10000)\n"
	    "  -q, --quiet            print only the summary\n"
	    "      --tls              secure MLLP: TLS 1.2 or 1.3, verifying the server's\n"
	    "                         certificate and host name (default target: the first\n"
	    "                         mllp.tls.listen address)\n"
	    "      --ca FILE          PEM CA certificates to verify the server with\n"
	    "                         (default: the system's)\n"
	    "      --cert FILE        client certificate (PEM) for mutual TLS, with --key FILE\n"
	    "      --key FILE         its private key (PEM)\n"
	    "      --insecure         do not verify the server (testing only; warns)\n\n"
	    "The summary gives messages/s and p50/p99 ACK latency. Exit status: 0 when every\n"
	    "ACK is AA/CA, 1 when any is AE/AR/CE/CR, 2 on connection errors or timeouts.\n");
}

static void
default_target(send_t *s, const char *listen)
{
	char *first = xstrdup(listen);
	char *comma = strchr(first, ','), *colon;

	if (comma != NULL)
		*comma = '\0';
	colon = strrchr(first, ':');
	if (colon != NULL) {
		*colon = '\0';
		snprintf(s->port, sizeof(s->port), "%s", colon + 1);
		if (first[0] != '\0' && strcmp(first, "0.0.0.0") != 0 && strcmp(first, "[::]") != 0)
			snprintf(s->host, sizeof(s->host), "%s", first);
	}
	free(first);
}

static int
connect_all(send_t *s)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
	struct addrinfo *res;
	int rc = getaddrinfo(s->host, s->port, &hints, &res);

	if (rc != 0) {
		fprintf(stderr, "fhirgate send: %s:%s: %s\n", s->host, s->port, gai_strerror(rc));
		return -1;
	}
	s->cs = xcalloc(s->conns, sizeof(*s->cs));
	for (unsigned i = 0; i < s->conns; i++) {
		sconn_t *c = &s->cs[i];

		c->s = s;
		TAILQ_INIT(&c->pending);
		mllp_framer_init(&c->framer, 64u << 20);
		if (s->tls != NULL)
			c->bev = tls_client_bev_new(s->tls, s->base, s->host);
		else
			c->bev = bufferevent_socket_new(s->base, -1, BEV_OPT_CLOSE_ON_FREE);
		bufferevent_setcb(c->bev, read_cb, NULL, event_cb, c);
		if (s->tls != NULL) {
			/* Bound the TCP and TLS handshakes; ACK waits have their own timer. */
			struct timeval tv = {(time_t)(s->timeout_ms / 1000),
					     (suseconds_t)((s->timeout_ms % 1000) * 1000)};

			bufferevent_set_timeouts(c->bev, &tv, &tv);
		}
		bufferevent_enable(c->bev, EV_READ | EV_WRITE);
		s->open++;
		if (bufferevent_socket_connect(c->bev, res->ai_addr, (int)res->ai_addrlen) < 0) {
			freeaddrinfo(res);
			conn_finish(c, "connect failed");
			return -1;
		}
	}
	freeaddrinfo(res);
	return 0;
}

enum { OPT_TLS = 256, OPT_CA, OPT_CERT, OPT_KEY, OPT_INSECURE };

int
cmd_send(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"host", required_argument, NULL, 'H'},
	    {"port", required_argument, NULL, 'p'},
	    {"connections", required_argument, NULL, 'n'},
	    {"count", required_argument, NULL, 'N'},
	    {"pipeline", required_argument, NULL, 'd'},
	    {"rate", required_argument, NULL, 'r'},
	    {"unique-ids", no_argument, NULL, 'u'},
	    {"timeout", required_argument, NULL, 't'},
	    {"quiet", no_argument, NULL, 'q'},
	    {"tls", no_argument, NULL, OPT_TLS},
	    {"ca", required_argument, NULL, OPT_CA},
	    {"cert", required_argument, NULL, OPT_CERT},
	    {"key", required_argument, NULL, OPT_KEY},
	    {"insecure", no_argument, NULL, OPT_INSECURE},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	send_t s = {.conns = 1, .pipeline = 1, .timeout_ms = 10000};
	struct timeval tick = {0, 20000};
	tls_client_opts_t topt = {0};
	send_t plain = {.host = "127.0.0.1", .port = "2575"}, secure = plain;
	bool tls = false, host_set = false, port_set = false;
	char *errmsg = NULL;
	arena_t *a;
	config_t cfg;
	uint64_t v;
	int opt, rc = 0;
	double secs;

	if (cli_config_load(&argc, argv, &cfg) < 0)
		return 2;
	/* Default targets: the first address of the plain and of the TLS MLLP listeners. */
	default_target(&plain, cfg.mllp_listen);
	default_target(&secure, cfg.mllp_tls_listen[0] ? cfg.mllp_tls_listen : cfg.mllp_listen);
	config_free(&cfg);
	optind = 1;
	while ((opt = getopt_long(argc, argv, "H:p:n:N:d:r:ut:qh", longopts, NULL)) != -1) {
		bool num = opt > 0 && opt < 128 && strchr("nNdt", opt) != NULL;

		if (num && (!slice_to_u64(slice_cstr(optarg), &v) || v == 0 || v > UINT32_MAX)) {
			fprintf(stderr, "fhirgate send: -%c needs a positive number\n", opt);
			return 2;
		}
		switch (opt) {
		case 'H':
			snprintf(s.host, sizeof(s.host), "%s", optarg);
			host_set = true;
			break;
		case 'p':
			snprintf(s.port, sizeof(s.port), "%s", optarg);
			port_set = true;
			break;
		case OPT_TLS:
			tls = true;
			break;
		case OPT_CA:
			topt.ca = optarg;
			break;
		case OPT_CERT:
			topt.cert = optarg;
			break;
		case OPT_KEY:
			topt.key = optarg;
			break;
		case OPT_INSECURE:
			topt.insecure = true;
			break;
		case 'n':
			s.conns = (unsigned)v;
			break;
		case 'N':
			s.count = v;
			break;
		case 'd':
			s.pipeline = (unsigned)v;
			break;
		case 't':
			s.timeout_ms = v;
			break;
		case 'r':
			s.rate = strtod(optarg, NULL);
			if (s.rate <= 0) {
				fprintf(stderr, "fhirgate send: --rate needs a positive number\n");
				return 2;
			}
			break;
		case 'u':
			s.unique = true;
			break;
		case 'q':
			s.quiet = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (!host_set)
		memcpy(s.host, tls ? secure.host : plain.host, sizeof(s.host));
	if (!port_set)
		memcpy(s.port, tls ? secure.port : plain.port, sizeof(s.port));
	if (!tls && (topt.ca || topt.cert || topt.key || topt.insecure)) {
		fprintf(stderr, "fhirgate send: --ca, --cert, --key and --insecure need --tls\n");
		return 2;
	}
	if (tls) {
		if (tls_client_new(&topt, &s.tls, &errmsg) < 0) {
			fprintf(stderr, "fhirgate send: %s\n", errmsg);
			free(errmsg);
			return 2;
		}
		if (topt.insecure)
			fprintf(stderr,
				"fhirgate send: warning: --insecure: the server's certificate "
				"and host name are not verified\n");
	}
	a = arena_new(0);
	if (optind >= argc)
		rc = load_path(&s, a, "-");
	for (int i = optind; rc == 0 && i < argc; i++)
		rc = load_path(&s, a, argv[i]);
	if (rc == 0 && s.nmsgs == 0) {
		fprintf(stderr, "fhirgate send: no messages to send\n");
		rc = -1;
	}
	if (rc < 0) {
		arena_free(a);
		tls_client_free(s.tls);
		return 2;
	}
	if (s.count == 0)
		s.count = s.nmsgs;
	signal(SIGPIPE, SIG_IGN);
	s.base = event_base_new();
	s.t0 = time_mono_ns();
	s.last_refill = s.t0;
	s.tokens = 1;
	s.tick = event_new(s.base, -1, EV_PERSIST, tick_cb, &s);
	evtimer_add(s.tick, &tick);
	if (connect_all(&s) == 0 || s.open > 0)
		event_base_dispatch(s.base);
	s.t_end = time_mono_ns();
	secs = (double)(s.t_end - s.t0) / 1e9;
	if (s.nlat > 0) /* qsort(NULL, 0) is undefined */
		qsort(s.lat_us, s.nlat, sizeof(*s.lat_us), cmp_u32);
	if (s.completed + s.no_ack + s.errors < s.count)
		s.errors += s.count - (s.completed + s.no_ack + s.errors);
	printf("sent=%llu acked=%llu AA=%llu AE=%llu AR=%llu other=%llu no_ack=%llu "
	       "unexpected=%llu errors=%llu elapsed=%.3fs rate=%.1f msg/s p50=%.3fms p99=%.3fms\n",
	       (unsigned long long)s.sent, (unsigned long long)s.completed,
	       (unsigned long long)s.aa, (unsigned long long)s.ae, (unsigned long long)s.ar,
	       (unsigned long long)s.other, (unsigned long long)s.no_ack,
	       (unsigned long long)s.unexpected, (unsigned long long)s.errors, secs,
	       secs > 0 ? (double)s.completed / secs : 0.0, percentile_ms(&s, 0.50),
	       percentile_ms(&s, 0.99));
	event_free(s.tick);
	free(s.cs);
	event_base_free(s.base);
	for (size_t i = 0; i < s.nmsgs; i++)
		free(s.msgs[i].name);
	free(s.msgs);
	for (size_t i = 0; i < s.nfiles; i++)
		free(s.files[i]);
	free(s.files);
	free(s.lat_us);
	tls_client_free(s.tls);
	arena_free(a);
	if (s.errors > 0)
		return 2;
	return s.ae + s.ar + s.other > 0 ? 1 : 0;
}
