/* MLLP server: I/O threads accept, frame and parse; the writer commits; the I/O threads ACK. */
#include "config.h"

#include "gateway/server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "gateway/audit.h"
#include "gateway/cds.h"
#include "gateway/ingest.h"
#include "gateway/metrics.h"
#include "gateway/mllp.h"
#include "gateway/ops.h"
#include "gateway/tls.h"
#include "lib/arena.h"
#include "lib/cidr.h"
#include "lib/err.h"
#include "lib/log.h"
#include "lib/timeutil.h"
#include "lib/xalloc.h"

/* What may change on reload; immutable once published, so threads read it without locks. */
typedef struct live {
	struct live *older; /* freed with the server */
	hl7_limits_t limits;
	map_options_t map_opt;
	bool accept_unmapped;
	bool lazy_entries; /* index entries made by the writer for the puts it keeps */
	bool audit;        /* an AuditEvent per message */
	uint64_t max_frame, idle_ms, read_ms, max_inflight;
	char *ack_app, *ack_fac;
	cidr_list_t *allow; /* mllp.allow; NULL: everyone */
} live_t;

typedef struct io_thread io_thread_t;
typedef struct conn conn_t;

typedef struct job {
	writer_job_t wj; /* first: the writer hands this pointer back */
	TAILQ_ENTRY(job) link;
	struct job *done_next;
	conn_t *conn;
	arena_t *arena;
	maps_ref_t *maps; /* keeps the mappings used for this message alive */
	slice_t raw, peer;
	uint64_t received_ns;
	ingest_check_t check;
	ingest_outcome_t outcome;
	bool audit;                  /* write an AuditEvent with the message */
	audit_prepared_t audit_prep; /* built on the I/O thread for the expected outcome */
	int store_rc;
	bool done;
} job_t;

struct conn {
	TAILQ_ENTRY(conn) link;
	io_thread_t *io;
	struct bufferevent *bev; /* NULL once closed */
	mllp_framer_t framer;
	TAILQ_HEAD(, job) pending; /* in arrival order: ACKs go out in this order */
	uint64_t inflight;
	bool reading, eof, mid_frame;
	bool tls_pending; /* TLS handshake (and subject check) not done: nothing is read yet */
	char peer[64];
	log_ratelimit_t rl;
};

struct io_thread {
	server_t *srv;
	unsigned index;
	pthread_t thread;
	struct event_base *base;
	struct evconnlistener **listeners; /* MLLP and HTTP, paused and resumed together */
	size_t nlisteners;
	rest_thread_t *rest;
	http_conn_t **https; /* open HTTP connections, for the drain */
	size_t nhttps, caphttps;
	bool listening;
	struct event *done_ev, *drain_ev, *retry_ev, *deadline_ev;
	pthread_mutex_t done_mu;
	job_t *done_head;
	TAILQ_HEAD(, conn) conns;
	uint64_t nconns;
	bool draining;
	log_ratelimit_t rl;
};

struct server {
	writer_t *writer;
	maps_t *maps;
	rest_t *rest;
	tls_server_t *mllp_tls, *http_tls; /* NULL without TLS listeners */
	http_opts_t http_opts;
	_Atomic(live_t *) live;
	pthread_mutex_t live_mu; /* serialises reloads */
	uint64_t max_connections, shutdown_ms;
	io_thread_t *io;
	unsigned nio;
	atomic_uint_fast64_t ack_counter;
	uint64_t started_s;
	atomic_bool draining;
	struct {
		atomic_uint_fast64_t http_conns_open;
		atomic_uint_fast64_t conns_accepted, conns_open, frames, acks_aa, acks_ae, acks_ar,
		    duplicates, garbage_bytes, aborted_frames, oversize_frames, store_failures,
		    accept_pauses, refused, tls_failures;
	} st;
};

static void conn_read(conn_t *c);
static void conn_close(conn_t *c);

static void
live_free(live_t *l)
{
	free(l->ack_app);
	free(l->ack_fac);
	cidr_list_free(l->allow);
	free(l);
}

static int
live_new(const config_t *cfg, live_t **out, char **errmsg)
{
	live_t *l = xcalloc(1, sizeof(*l));
	char *why = NULL;

	if (cidr_list_parse(cfg->mllp_allow, &l->allow, &why) < 0) {
		*errmsg = xasprintf("mllp.allow: %s", why);
		free(why);
		free(l);
		return -FG_ECONFIG;
	}

	l->limits.max_message_bytes = cfg->hl7_max_message_bytes;
	l->limits.max_segments = cfg->hl7_max_segments;
	l->limits.max_field_bytes = cfg->hl7_max_field_bytes;
	maps_options(cfg, &l->map_opt);
	l->accept_unmapped = cfg->mappings_unmapped == CONF_UNMAPPED_ACCEPT;
	l->lazy_entries = cfg->writer_apply_delay_us > 0;
	l->audit = cfg->audit_messages == CONF_ON;
	l->max_frame = cfg->mllp_max_frame_bytes;
	l->idle_ms = cfg->mllp_idle_timeout_ms;
	l->read_ms = cfg->mllp_read_timeout_ms;
	l->max_inflight = cfg->mllp_max_inflight;
	l->ack_app = xstrdup(cfg->ack_application);
	l->ack_fac = xstrdup(cfg->ack_facility);
	*out = l;
	return 0;
}

static void
tls_opts_mllp(const config_t *cfg, tls_server_opts_t *o)
{
	*o = (tls_server_opts_t){.what = "mllp.tls",
				 .cert = cfg->mllp_tls_cert,
				 .key = cfg->mllp_tls_key,
				 .ca = cfg->mllp_tls_ca,
				 .client_auth = (tls_client_auth_t)cfg->mllp_tls_client_auth,
				 .allow_subjects = cfg->mllp_tls_allow_subjects};
}

static void
tls_opts_http(const config_t *cfg, tls_server_opts_t *o)
{
	*o = (tls_server_opts_t){.what = "http.tls",
				 .cert = cfg->http_tls_cert,
				 .key = cfg->http_tls_key,
				 .ca = cfg->http_tls_ca,
				 .client_auth = (tls_client_auth_t)cfg->http_tls_client_auth,
				 .allow_subjects = ""};
}

static live_t *
live_get(server_t *s)
{
	return atomic_load_explicit(&s->live, memory_order_acquire);
}

/* ---- jobs: writer side ---- */

/* The AuditEvent of the message the way job_audit wants it, with refs in j's arena. */
static void
job_audit_event(job_t *j, audit_event_t *e)
{
	*e = (audit_event_t){.time_ns = j->received_ns,
			     .peer = j->peer,
			     .action = 'C',
			     .msg = j->check.msg,
			     .ack = j->check.code};
	if (!j->check.dead && j->check.nres > 0) {
		slice_t *refs = arena_alloc(j->arena, j->check.nres * sizeof(*refs));

		for (size_t i = 0; i < j->check.nres; i++)
			refs[i] = slice_cstr(
			    arena_printf(j->arena, "%.*s/%.*s", (int)j->check.res[i].type.len,
					 j->check.res[i].type.ptr, (int)j->check.res[i].id.len,
					 j->check.res[i].id.ptr));
		e->refs = refs;
		e->nrefs = j->check.nres;
	}
}

/* The message's AuditEvent, in the message's own transaction. */
static int
job_audit(job_t *j, store_txn_t *t)
{
	audit_event_t e;
	int rc;

	if (j->audit_prep.ok && !j->outcome.duplicate && j->outcome.code == j->audit_prep.ack) {
		/* the usual case: as the I/O thread built it, with the message's sequence */
		rc = audit_put_prepared(t, j->arena, &j->audit_prep, j->outcome.seq);
	} else {
		/* a resend (or another outcome than expected): built here */
		job_audit_event(j, &e);
		e.ack = j->outcome.code;
		e.duplicate = j->outcome.duplicate;
		e.seq = j->outcome.seq;
		if (e.duplicate) {
			e.refs = NULL; /* it wrote nothing */
			e.nrefs = 0;
		}
		rc = audit_put(t, j->arena, &e);
	}
	/* An event that cannot be built must not cost the message its AA. */
	return rc == -FG_EINVAL ? 0 : rc;
}

static int
job_apply(writer_job_t *wj, store_txn_t *t)
{
	job_t *j = (job_t *)wj;
	int rc =
	    ingest_record(t, &j->check, j->raw, j->peer, j->received_ns, wj->pending, &j->outcome);

	if (rc == 0 && j->audit)
		rc = job_audit(j, t);
	return rc;
}

static void
job_done(writer_job_t *wj, int rc)
{
	job_t *j = (job_t *)wj;
	io_thread_t *io = j->conn->io;
	bool wake;

	j->store_rc = rc;
	pthread_mutex_lock(&io->done_mu);
	wake = io->done_head == NULL;
	j->done_next = io->done_head;
	io->done_head = j;
	pthread_mutex_unlock(&io->done_mu);
	if (wake)
		event_active(io->done_ev, EV_READ, 0);
}

static void
job_free(job_t *j)
{
	maps_release(j->maps);
	arena_free(j->arena);
	free(j);
}

/* ---- ACKs ---- */

static void
ack_control_id(server_t *s, char *out, size_t cap)
{
	uint64_t n = atomic_fetch_add(&s->ack_counter, 1);

	/* Unique across restarts too: the start time, then a counter (at most 20 characters). */
	snprintf(out, cap, "FG%08llx%llx", (unsigned long long)s->started_s, (unsigned long long)n);
}

static void
ack_append(conn_t *c, const job_t *j, hl7_ack_code_t code, const hl7_error_t *err, buf_t *out)
{
	server_t *s = c->io->srv;
	live_t *l = live_get(s);
	buf_t ack = BUF_INIT;
	char id[32];

	ack_control_id(s, id, sizeof(id));
	if (hl7_ack_build(j->check.msg, code, err, l->ack_app, l->ack_fac, slice_cstr(id),
			  time_now_ns(), &ack) == 0)
		mllp_frame_append(out, ack.data, ack.len);
	buf_free(&ack);
}

static hl7_ack_code_t
commit_code_of(hl7_ack_code_t code)
{
	return code == HL7_ACK_AA ? HL7_ACK_CA : code == HL7_ACK_AR ? HL7_ACK_CR : HL7_ACK_CE;
}

/* Writes the ACK(s) of a committed job. */
static void
job_ack(conn_t *c, job_t *j)
{
	server_t *s = c->io->srv;
	hl7_error_t store_err = {.code = HL7_ERR_INTERNAL, .ack = 'R'};
	const hl7_error_t *err = &j->check.err;
	hl7_ack_code_t code = j->outcome.code;
	const hl7_msg_t *m = j->check.msg;
	buf_t out = BUF_INIT;

	if (j->store_rc < 0) {
		code = HL7_ACK_AR;
		snprintf(store_err.text, sizeof(store_err.text),
			 "message could not be stored (%s); send it again later",
			 fg_strerror(j->store_rc));
		err = &store_err;
		atomic_fetch_add(&s->st.store_failures, 1);
	}
	if (code == HL7_ACK_AA)
		err = NULL;
	if (j->outcome.duplicate)
		atomic_fetch_add(&s->st.duplicates, 1);
	atomic_fetch_add(code == HL7_ACK_AA   ? &s->st.acks_aa
			 : code == HL7_ACK_AR ? &s->st.acks_ar
					      : &s->st.acks_ae,
			 1);
	if (m != NULL && hl7_msg_is_enhanced(m) && hl7_ack_is_wanted(m, commit_code_of(code)))
		ack_append(c, j, commit_code_of(code), err, &out);
	if (m == NULL || hl7_ack_is_wanted(m, code))
		ack_append(c, j, code, err, &out);
	if (out.len > 0 && c->bev != NULL)
		bufferevent_write(c->bev, out.data, out.len);
	buf_free(&out);
}

/* ---- connections ---- */

/* Pauses or resumes accepting on every listener of the thread (MLLP and HTTP alike). */
static void
io_listen(io_thread_t *io, bool on)
{
	on = on && !io->draining;
	if (on == io->listening)
		return;
	for (size_t i = 0; i < io->nlisteners; i++) {
		if (on)
			evconnlistener_enable(io->listeners[i]);
		else
			evconnlistener_disable(io->listeners[i]);
	}
	io->listening = on;
}

/* During a drain, the thread ends once its last connection of either kind is gone. */
static void
io_exit_if_idle(io_thread_t *io)
{
	if (io->draining && io->nconns == 0 && io->nhttps == 0)
		event_base_loopexit(io->base, NULL);
}

static void
conn_free(conn_t *c)
{
	io_thread_t *io = c->io;

	TAILQ_REMOVE(&io->conns, c, link);
	io->nconns--;
	atomic_fetch_sub(&io->srv->st.conns_open, 1);
	mllp_framer_free(&c->framer);
	free(c);
	io_listen(io, true);
	io_exit_if_idle(io);
}

/* Reads and drops what the peer sent and we will not process: closing a socket with unread
 * data makes the kernel send RST, which can destroy ACKs still on their way to the peer. */
static void
discard_input(evutil_socket_t fd)
{
	char sink[16384];

	for (int i = 0; i < 64; i++)
		if (recv(fd, sink, sizeof(sink), MSG_DONTWAIT) <= 0)
			break;
}

/* Closes the socket now; the struct goes when its last job has come back. */
static void
conn_close(conn_t *c)
{
	if (c->bev != NULL) {
		atomic_fetch_add(&c->io->srv->st.garbage_bytes, c->framer.garbage);
		atomic_fetch_add(&c->io->srv->st.aborted_frames, c->framer.aborted);
		if (c->framer.garbage > 0)
			log_info("mllp",
				 "peer=%s closed after discarding %llu bytes outside frames",
				 c->peer, (unsigned long long)c->framer.garbage);
		discard_input(bufferevent_getfd(c->bev));
		tls_bev_free(c->bev);
		c->bev = NULL;
	}
	if (c->inflight == 0)
		conn_free(c);
}

static void
conn_set_timeout(conn_t *c)
{
	live_t *l = live_get(c->io->srv);
	uint64_t ms = c->mid_frame ? l->read_ms : l->idle_ms;
	struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};

	bufferevent_set_timeouts(c->bev, ms ? &tv : NULL, NULL);
}

static void
conn_pause(conn_t *c)
{
	if (c->reading && c->bev != NULL)
		bufferevent_disable(c->bev, EV_READ);
	c->reading = false;
}

/* Whether a connection with nothing in flight is finished: the peer is gone or we drain. */
static bool
conn_is_finished(const conn_t *c)
{
	return c->inflight == 0 && (c->eof || c->io->draining);
}

/* Sends the ACKs of jobs at the head of the queue that are committed, in order. */
static void
conn_flush(conn_t *c)
{
	job_t *j;

	while ((j = TAILQ_FIRST(&c->pending)) != NULL && j->done) {
		TAILQ_REMOVE(&c->pending, j, link);
		job_ack(c, j);
		job_free(j);
		c->inflight--;
	}
	if (c->bev == NULL) {
		if (c->inflight == 0)
			conn_free(c);
		return;
	}
	if (conn_is_finished(c)) {
		if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
			conn_close(c);
		return; /* else the write callback closes it once the ACKs are out */
	}
	if (!c->reading && !c->io->draining && c->inflight < live_get(c->io->srv)->max_inflight) {
		c->reading = true;
		bufferevent_enable(c->bev, EV_READ);
		conn_read(c); /* frames may already wait in the input buffer */
	}
}

static int
on_frame(void *ctx, const char *data, size_t len, bool oversize, size_t len_total)
{
	conn_t *c = ctx;
	io_thread_t *io = c->io;
	live_t *l = live_get(io->srv);
	job_t *j = xcalloc(1, sizeof(*j));
	bool full;

	j->conn = c;
	j->arena = arena_new(len + 4096 < 16384 ? 16384 : len + 4096);
	j->raw = arena_slice_dup(j->arena, slice_make(data, len));
	j->peer = arena_slice_dup(j->arena, slice_cstr(c->peer));
	j->received_ns = time_now_ns();
	{
		ingest_opts_t opt = {.limits = l->limits,
				     .map_opt = l->map_opt,
				     .accept_unmapped = l->accept_unmapped,
				     .lazy_entries = l->lazy_entries};

		uint64_t t0 = time_mono_ns();

		if (io->srv->maps != NULL)
			opt.maps = maps_acquire(io->srv->maps, &j->maps);
		ingest_check(j->arena, j->raw.ptr, j->raw.len, &opt, &j->check);
		metrics_observe(METRICS_HIST_CONVERT, time_mono_ns() - t0);
	}
	if (oversize) {
		/* Keep the head of the frame for the dead letter and to mirror its MSH. */
		j->check.code = HL7_ACK_AR;
		j->check.stage = INGEST_STAGE_FRAME;
		j->check.dead = true;
		j->check.nres = 0;
		j->check.key = SLICE_NULL;
		memset(&j->check.err, 0, sizeof(j->check.err));
		j->check.err.code = HL7_ERR_INTERNAL;
		j->check.err.ack = 'R';
		snprintf(
		    j->check.err.text, sizeof(j->check.err.text),
		    "frame of %zu bytes exceeds mllp.max_frame_bytes (%llu); first %zu bytes kept",
		    len_total, (unsigned long long)l->max_frame, len);
		atomic_fetch_add(&io->srv->st.oversize_frames, 1);
	}
	if (j->check.dead && log_ratelimit_allow(&c->rl))
		log_warn("mllp", "peer=%s message %s: %s: %s (code %d)", c->peer,
			 j->check.code == HL7_ACK_AA ? "accepted without mapping" : "rejected",
			 ingest_stage_name(j->check.stage), j->check.err.text, j->check.err.code);
	atomic_fetch_add(&io->srv->st.frames, 1);
	j->wj.apply = job_apply;
	j->wj.done = job_done;
	j->wj.deferrable = true;
	j->audit = l->audit;
	if (j->audit) {
		audit_event_t e;

		job_audit_event(j, &e);
		audit_prepare(j->arena, &e, &j->audit_prep);
	}
	/* What the job holds in memory, for the queue's byte bound. */
	j->wj.bytes = len + arena_used(j->arena);
	TAILQ_INSERT_TAIL(&c->pending, j, link);
	c->inflight++;
	full = writer_submit(io->srv->writer, &j->wj);
	if (full || c->inflight >= l->max_inflight) {
		conn_pause(c);
		return 1;
	}
	return 0;
}

static void
conn_read(conn_t *c)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);
	bool was_mid = c->mid_frame;

	if (c->tls_pending)
		return; /* read once the peer has passed the checks */

	while (c->reading && evbuffer_get_length(in) > 0) {
		size_t avail = evbuffer_get_contiguous_space(in);
		const char *p = (const char *)evbuffer_pullup(in, (ev_ssize_t)avail);
		size_t used = mllp_framer_feed(&c->framer, p, avail, on_frame, c);

		evbuffer_drain(in, used);
	}
	c->mid_frame = mllp_framer_is_mid_frame(&c->framer);
	if (c->mid_frame != was_mid && c->bev != NULL)
		conn_set_timeout(c);
}

static void
read_cb(struct bufferevent *bev, void *ctx)
{
	conn_read(ctx);
}

static void
write_cb(struct bufferevent *bev, void *ctx)
{
	conn_t *c = ctx;

	if (conn_is_finished(c))
		conn_close(c);
}

static void
event_cb(struct bufferevent *bev, short what, void *ctx)
{
	conn_t *c = ctx;
	server_t *s = c->io->srv;

	if (what & BEV_EVENT_CONNECTED) {
		/* The TLS handshake is done: the certificate subject decides, before any read. */
		char subject[256];

		if (!tls_bev_peer_is_allowed(bev, subject, sizeof(subject))) {
			atomic_fetch_add(&s->st.refused, 1);
			if (log_ratelimit_allow(&c->io->rl))
				log_info("mllp",
					 "peer=%s refused: certificate subject '%s' not in "
					 "mllp.tls.allow_subjects",
					 c->peer, subject);
			conn_close(c);
			return;
		}
		c->tls_pending = false;
		c->mid_frame = false;
		conn_set_timeout(c);
		log_debug("mllp", "peer=%s TLS established subject='%s'", c->peer, subject);
		conn_read(c);
		return;
	}
	if (c->tls_pending && (what & BEV_EVENT_ERROR)) {
		char why[256];

		tls_bev_error(bev, why, sizeof(why));
		atomic_fetch_add(&s->st.tls_failures, 1);
		if (log_ratelimit_allow(&c->io->rl))
			log_info("mllp", "peer=%s TLS handshake failed: %s", c->peer,
				 why[0] ? why : strerror(errno));
		conn_close(c);
		return;
	}
	if (what & BEV_EVENT_EOF) {
		/* The peer may have only shut down its sending side: it still reads our ACKs. */
		c->eof = true;
		conn_pause(c);
		if (mllp_framer_is_mid_frame(&c->framer) && log_ratelimit_allow(&c->rl))
			log_info("mllp", "peer=%s closed in the middle of a frame", c->peer);
		if (conn_is_finished(c) && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
			conn_close(c);
		return; /* else the write callback closes it once the ACKs are out */
	}
	if (what & BEV_EVENT_TIMEOUT)
		log_info("mllp", "peer=%s %s timeout, closing", c->peer,
			 c->tls_pending ? "TLS handshake"
			 : c->mid_frame ? "read"
					: "idle");
	else if (what & BEV_EVENT_ERROR)
		log_debug("mllp", "peer=%s connection error: %s", c->peer, strerror(errno));
	conn_close(c);
}

static void
format_peer(const struct sockaddr *sa, char *out, size_t cap)
{
	char host[INET6_ADDRSTRLEN] = "?";
	unsigned port = 0;

	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;

		inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
		port = ntohs(in->sin_port);
		snprintf(out, cap, "%s:%u", host, port);
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;

		inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
		port = ntohs(in6->sin6_port);
		snprintf(out, cap, "[%s]:%u", host, port);
	} else {
		snprintf(out, cap, "unknown");
	}
}

/* An MLLP connection, plain (tls NULL) or TLS; peers outside mllp.allow are closed at once. */
static void
mllp_accept(io_thread_t *io, evutil_socket_t fd, struct sockaddr *sa, tls_server_t *tls)
{
	server_t *s = io->srv;
	conn_t *c;
	int one = 1;

	if (io->draining) {
		evutil_closesocket(fd);
		return;
	}
	if (!cidr_list_allows(live_get(s)->allow, sa)) {
		char peer[64];

		format_peer(sa, peer, sizeof(peer));
		atomic_fetch_add(&s->st.refused, 1);
		if (log_ratelimit_allow(&io->rl))
			log_info("mllp", "peer=%s refused: address not in mllp.allow", peer);
		evutil_closesocket(fd);
		return;
	}
	c = xcalloc(1, sizeof(*c));
	c->io = io;
	TAILQ_INIT(&c->pending);
	format_peer(sa, c->peer, sizeof(c->peer));
	mllp_framer_init(&c->framer, live_get(s)->max_frame);
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (tls != NULL) {
		c->bev = tls_server_bev_new(tls, io->base, fd);
		c->tls_pending = true;
		c->mid_frame = true; /* the handshake must end within mllp.read_timeout */
	} else {
		c->bev = bufferevent_socket_new(io->base, fd, BEV_OPT_CLOSE_ON_FREE);
	}
	if (c->bev == NULL) {
		evutil_closesocket(fd);
		mllp_framer_free(&c->framer);
		free(c);
		return;
	}
	bufferevent_setcb(c->bev, read_cb, write_cb, event_cb, c);
	TAILQ_INSERT_TAIL(&io->conns, c, link);
	io->nconns++;
	atomic_fetch_add(&s->st.conns_accepted, 1);
	atomic_fetch_add(&s->st.conns_open, 1);
	c->reading = true;
	conn_set_timeout(c);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	log_debug("mllp", "peer=%s connected (thread %u)", c->peer, io->index);
	if (io->nconns + io->nhttps >= s->max_connections) {
		/* Further connections wait in the kernel's accept queue. */
		io_listen(io, false);
	}
}

static void
accept_cb(struct evconnlistener *lis, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
	mllp_accept(arg, fd, sa, NULL);
}

static void
accept_tls_cb(struct evconnlistener *lis, evutil_socket_t fd, struct sockaddr *sa, int salen,
	      void *arg)
{
	io_thread_t *io = arg;

	mllp_accept(io, fd, sa, io->srv->mllp_tls);
}

/* HTTP requests go to the operations endpoints or to the REST API part of the connection's
 * thread. */
static void
http_handle(http_request_t *req, void *ctx)
{
	io_thread_t *io = ctx;

	if (ops_handles(req))
		ops_handle(req, io->srv);
	else if (cds_handles(req))
		cds_handle(req, io->srv);
	else
		rest_handle(req, io->rest);
}

static void
http_closed(http_conn_t *hc, void *ctx)
{
	io_thread_t *io = ctx;

	for (size_t k = 0; k < io->nhttps; k++) {
		if (io->https[k] == hc) {
			io->https[k] = io->https[--io->nhttps];
			break;
		}
	}
	atomic_fetch_sub(&io->srv->st.http_conns_open, 1);
	io_listen(io, true);
	io_exit_if_idle(io);
}

static void
http_accept(io_thread_t *io, evutil_socket_t fd, struct sockaddr *sa, tls_server_t *tls)
{
	server_t *s = io->srv;
	char peer[64];
	http_conn_t *hc;

	if (io->draining) {
		evutil_closesocket(fd);
		return;
	}
	format_peer(sa, peer, sizeof(peer));
	if (tls != NULL)
		hc = http_conn_new_bev(io->base, tls_server_bev_new(tls, io->base, fd), peer,
				       &s->http_opts, http_handle, io);
	else
		hc = http_conn_new(io->base, fd, peer, &s->http_opts, http_handle, io);
	if (hc == NULL)
		return;
	if (io->nhttps == io->caphttps) {
		io->caphttps = io->caphttps ? io->caphttps * 2 : 64;
		io->https = xreallocarray(io->https, io->caphttps, sizeof(*io->https));
	}
	io->https[io->nhttps++] = hc;
	atomic_fetch_add(&s->st.http_conns_open, 1);
	if (io->nconns + io->nhttps >= s->max_connections) {
		io_listen(io, false);
	}
}

static void
accept_http_cb(struct evconnlistener *lis, evutil_socket_t fd, struct sockaddr *sa, int salen,
	       void *arg)
{
	http_accept(arg, fd, sa, NULL);
}

static void
accept_https_cb(struct evconnlistener *lis, evutil_socket_t fd, struct sockaddr *sa, int salen,
		void *arg)
{
	io_thread_t *io = arg;

	http_accept(io, fd, sa, io->srv->http_tls);
}

static void
retry_cb(evutil_socket_t fd, short what, void *arg)
{
	io_thread_t *io = arg;

	if (io->draining || io->nconns + io->nhttps >= io->srv->max_connections)
		return;
	io_listen(io, true);
}

static void
accept_error_cb(struct evconnlistener *lis, void *arg)
{
	io_thread_t *io = arg;
	int err = EVUTIL_SOCKET_ERROR();
	struct timeval pause = {0, 200000};

	if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
		/* Out of descriptors: pause accepting instead of spinning on a ready listener. */
		io_listen(io, false);
		atomic_fetch_add(&io->srv->st.accept_pauses, 1);
		if (log_ratelimit_allow(&io->rl))
			log_warn("mllp", "accept failed (%s): pausing accept for 200ms",
				 strerror(err));
		evtimer_add(io->retry_ev, &pause);
		return;
	}
	if (log_ratelimit_allow(&io->rl))
		log_warn("mllp", "accept failed: %s", strerror(err));
}

/* ---- I/O threads ---- */

static void
done_cb(evutil_socket_t fd, short what, void *arg)
{
	io_thread_t *io = arg;
	job_t *list, *rev = NULL;

	pthread_mutex_lock(&io->done_mu);
	list = io->done_head;
	io->done_head = NULL;
	pthread_mutex_unlock(&io->done_mu);
	/* The list is newest first: reverse it so connections see their jobs in order. */
	while (list != NULL) {
		job_t *next = list->done_next;

		list->done_next = rev;
		rev = list;
		list = next;
	}
	while (rev != NULL) {
		job_t *next = rev->done_next;

		rev->done = true;
		conn_flush(rev->conn);
		rev = next;
	}
}

static void
deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	io_thread_t *io = arg;

	log_warn("server", "thread %u: shutdown timeout with %llu connections still open",
		 io->index, (unsigned long long)io->nconns);
	event_base_loopbreak(io->base);
}

static void
drain_cb(evutil_socket_t fd, short what, void *arg)
{
	io_thread_t *io = arg;
	uint64_t ms = io->srv->shutdown_ms;
	struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};
	conn_t *c, *next;

	io->draining = true;
	for (size_t i = 0; i < io->nlisteners; i++)
		evconnlistener_free(io->listeners[i]);
	io->nlisteners = 0;
	io->listening = false;
	/* http_conn_drain may close at once, and http_closed then edits the array: use a copy. */
	if (io->nhttps > 0) {
		size_t n = io->nhttps;
		http_conn_t **copy = xreallocarray(NULL, n, sizeof(*copy));

		memcpy(copy, io->https, n * sizeof(*copy));
		for (size_t k = 0; k < n; k++)
			http_conn_drain(copy[k]);
		free(copy);
	}
	for (c = TAILQ_FIRST(&io->conns); c != NULL; c = next) {
		next = TAILQ_NEXT(c, link);
		conn_pause(c);
		if (c->bev != NULL && conn_is_finished(c) &&
		    evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
			conn_close(c);
	}
	if (io->nconns == 0 && io->nhttps == 0) {
		event_base_loopexit(io->base, NULL);
		return;
	}
	evtimer_add(io->deadline_ev, &tv);
}

static void *
io_main(void *arg)
{
	io_thread_t *io = arg;

	event_base_dispatch(io->base);
	return NULL;
}

/* Binds one host:port with SO_REUSEPORT (every I/O thread binds its own socket). */
static int
listen_socket(const char *what, const char *spec, int *out, char **errmsg)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC,
				 .ai_socktype = SOCK_STREAM,
				 .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
	struct addrinfo *res = NULL;
	const char *colon = strrchr(spec, ':');
	char *host;
	int fd = -1, one = 1, rc;

	if (colon == NULL || colon[1] == '\0') {
		*errmsg = xasprintf("%s: '%s' is not host:port", what, spec);
		return -FG_ECONFIG;
	}
	host = xmemdup0(spec, (size_t)(colon - spec));
	if (host[0] == '[' && host[strlen(host) - 1] == ']') {
		memmove(host, host + 1, strlen(host));
		host[strlen(host) - 1] = '\0';
	}
	rc = getaddrinfo(host[0] ? host : NULL, colon + 1, &hints, &res);
	free(host);
	if (rc != 0) {
		*errmsg = xasprintf("%s: %s: %s", what, spec, gai_strerror(rc));
		return -FG_ECONFIG;
	}
	fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0 ||
	    bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 1024) < 0) {
		*errmsg = xasprintf("%s: %s: %s", what, spec, strerror(errno));
		if (fd >= 0)
			close(fd);
		freeaddrinfo(res);
		return -FG_EIO;
	}
	freeaddrinfo(res);
	*out = fd;
	return 0;
}

static unsigned
default_threads(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	return n > 2 ? (unsigned)(n - 1) : 1;
}

/* Binds every host:port of specs (comma-separated) once per I/O thread (SO_REUSEPORT). */
static int
bind_all(server_t *s, const char *what, const char *proto, const char *specs, evconnlistener_cb cb,
	 char **errmsg)
{
	char *list = xstrdup(specs), *save = NULL;
	int rc = 0;

	for (char *spec = strtok_r(list, ",", &save); rc == 0 && spec != NULL;
	     spec = strtok_r(NULL, ",", &save)) {
		slice_t t = slice_trim(slice_cstr(spec));
		char *one = xmemdup0(t.ptr, t.len);

		for (unsigned i = 0; rc == 0 && i < s->nio; i++) {
			io_thread_t *io = &s->io[i];
			struct evconnlistener *lis;
			int fd;

			rc = listen_socket(what, one, &fd, errmsg);
			if (rc < 0)
				break;
			lis = evconnlistener_new(
			    io->base, cb, io, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0, fd);
			if (lis == NULL)
				abort();
			evconnlistener_set_error_cb(lis, accept_error_cb);
			io->listeners = xreallocarray(io->listeners, io->nlisteners + 1,
						      sizeof(*io->listeners));
			io->listeners[io->nlisteners++] = lis;
		}
		if (rc == 0)
			log_info("server", "%s listening on %s (%u threads)", proto, one, s->nio);
		free(one);
	}
	free(list);
	return rc;
}

int
server_start(const config_t *cfg, writer_t *writer, maps_t *maps, rest_t *rest, server_t **out,
	     char **errmsg)
{
	server_t *s = xcalloc(1, sizeof(*s));
	tls_server_opts_t to;
	live_t *live;
	int rc = live_new(cfg, &live, errmsg);

	if (rc < 0) {
		free(s);
		return rc;
	}

	s->writer = writer;
	s->maps = maps;
	s->rest = rest;
	http_opts_init(&s->http_opts);
	s->http_opts.max_body = cfg->http_max_body_bytes;
	s->http_opts.max_inflight = (unsigned)cfg->http_max_inflight;
	s->http_opts.idle_timeout_ms = cfg->http_idle_timeout_ms;
	s->http_opts.error_body = rest_error_body;
	s->http_opts.on_close = http_closed;
	s->started_s = time_now_ns() / 1000000000u;
	atomic_init(&s->live, live);
	pthread_mutex_init(&s->live_mu, NULL);
	s->max_connections = cfg->mllp_max_connections;
	s->shutdown_ms = cfg->shutdown_timeout_ms;
	s->nio = cfg->io_threads ? (unsigned)cfg->io_threads : default_threads();
	s->io = xcalloc(s->nio, sizeof(*s->io));
	for (unsigned i = 0; i < s->nio; i++) {
		io_thread_t *io = &s->io[i];

		io->srv = s;
		io->index = i;
		io->base = event_base_new();
		if (io->base == NULL)
			abort();
		io->done_ev = event_new(io->base, -1, 0, done_cb, io);
		io->drain_ev = event_new(io->base, -1, 0, drain_cb, io);
		io->retry_ev = evtimer_new(io->base, retry_cb, io);
		io->deadline_ev = evtimer_new(io->base, deadline_cb, io);
		pthread_mutex_init(&io->done_mu, NULL);
		TAILQ_INIT(&io->conns);
		if (rest != NULL)
			io->rest = rest_thread_new(rest, io->base);
		io->listening = true;
	}
	tls_opts_mllp(cfg, &to);
	if (cfg->mllp_tls_listen[0] != '\0')
		rc = tls_server_new(&to, &s->mllp_tls, errmsg);
	tls_opts_http(cfg, &to);
	if (rc == 0 && cfg->http_tls_listen[0] != '\0')
		rc = tls_server_new(&to, &s->http_tls, errmsg);
	if (rc == 0)
		rc = bind_all(s, "mllp.listen", "MLLP", cfg->mllp_listen, accept_cb, errmsg);
	if (rc == 0)
		rc = bind_all(s, "mllp.tls.listen", "MLLP/TLS", cfg->mllp_tls_listen, accept_tls_cb,
			      errmsg);
	if (rc == 0)
		rc = bind_all(s, "http.listen", "HTTP", cfg->http_listen, accept_http_cb, errmsg);
	if (rc == 0)
		rc = bind_all(s, "http.tls.listen", "HTTPS", cfg->http_tls_listen, accept_https_cb,
			      errmsg);
	for (unsigned i = 0; rc == 0 && i < s->nio; i++)
		if (pthread_create(&s->io[i].thread, NULL, io_main, &s->io[i]) != 0)
			abort();
	if (rc < 0) {
		server_free(s); /* no thread was started */
		return rc;
	}
	*out = s;
	return 0;
}

/* Rereads the certificate, key and CA files of a TLS listener kind; a failure keeps the old. */
static void
tls_reload(tls_server_t *t, const tls_server_opts_t *o)
{
	char *err = NULL;

	if (t == NULL)
		return;
	if (tls_server_reload(t, o, &err) < 0) {
		log_error("tls", "reload failed: %s; the previous certificate stays in force", err);
		free(err);
		return;
	}
	log_info("tls", "%s: certificate, key and CA reloaded; new connections use them", o->what);
}

void
server_reload(server_t *s, const config_t *cfg)
{
	tls_server_opts_t to;
	char *err = NULL;
	live_t *l;

	tls_opts_mllp(cfg, &to);
	tls_reload(s->mllp_tls, &to);
	tls_opts_http(cfg, &to);
	tls_reload(s->http_tls, &to);
	if (live_new(cfg, &l, &err) < 0) {
		log_error("config", "%s; the running settings stay", err);
		free(err);
		return;
	}
	pthread_mutex_lock(&s->live_mu);
	l->older = live_get(s);
	atomic_store_explicit(&s->live, l, memory_order_release);
	pthread_mutex_unlock(&s->live_mu);
}

void
server_drain(server_t *s)
{
	atomic_store(&s->draining, true);
	for (unsigned i = 0; i < s->nio; i++)
		event_active(s->io[i].drain_ev, EV_READ, 0);
	for (unsigned i = 0; i < s->nio; i++)
		pthread_join(s->io[i].thread, NULL);
}

void
server_free(server_t *s)
{
	live_t *l;

	if (s == NULL)
		return;
	for (unsigned i = 0; i < s->nio; i++) {
		io_thread_t *io = &s->io[i];
		conn_t *c;

		/* Connections left after a shutdown timeout. The writer has stopped, so every job
		 * has come back (into done_head, or done already) and none is referenced elsewhere.
		 */
		while ((c = TAILQ_FIRST(&io->conns)) != NULL) {
			job_t *j;

			while ((j = TAILQ_FIRST(&c->pending)) != NULL) {
				TAILQ_REMOVE(&c->pending, j, link);
				job_free(j);
			}
			if (c->bev != NULL)
				bufferevent_free(c->bev);
			c->bev = NULL;
			c->inflight = 0;
			TAILQ_REMOVE(&io->conns, c, link);
			mllp_framer_free(&c->framer);
			free(c);
		}
		/* HTTP connections left after a shutdown timeout. */
		while (io->nhttps > 0)
			http_conn_free(io->https[--io->nhttps]);
		free(io->https);
		if (io->rest != NULL)
			rest_thread_free(io->rest);
		for (size_t k = 0; k < io->nlisteners; k++)
			evconnlistener_free(io->listeners[k]);
		free(io->listeners);
		event_free(io->done_ev);
		event_free(io->drain_ev);
		event_free(io->retry_ev);
		event_free(io->deadline_ev);
		event_base_free(io->base);
		pthread_mutex_destroy(&io->done_mu);
	}
	free(s->io);
	for (l = live_get(s); l != NULL;) {
		live_t *older = l->older;

		live_free(l);
		l = older;
	}
	tls_server_free(s->mllp_tls);
	tls_server_free(s->http_tls);
	pthread_mutex_destroy(&s->live_mu);
	free(s);
}

void
server_get_stats(server_t *s, server_stats_t *o)
{
	o->http_conns_open = atomic_load(&s->st.http_conns_open);
	o->conns_accepted = atomic_load(&s->st.conns_accepted);
	o->conns_open = atomic_load(&s->st.conns_open);
	o->frames = atomic_load(&s->st.frames);
	o->acks_aa = atomic_load(&s->st.acks_aa);
	o->acks_ae = atomic_load(&s->st.acks_ae);
	o->acks_ar = atomic_load(&s->st.acks_ar);
	o->duplicates = atomic_load(&s->st.duplicates);
	o->garbage_bytes = atomic_load(&s->st.garbage_bytes);
	o->aborted_frames = atomic_load(&s->st.aborted_frames);
	o->oversize_frames = atomic_load(&s->st.oversize_frames);
	o->store_failures = atomic_load(&s->st.store_failures);
	o->accept_pauses = atomic_load(&s->st.accept_pauses);
	o->refused = atomic_load(&s->st.refused);
	o->tls_failures = atomic_load(&s->st.tls_failures);
}

writer_t *
server_writer(server_t *s)
{
	return s->writer;
}

rest_t *
server_rest(server_t *s)
{
	return s->rest;
}

maps_t *
server_maps(server_t *s)
{
	return s->maps;
}

uint64_t
server_started_s(server_t *s)
{
	return s->started_s;
}

bool
server_is_draining(server_t *s)
{
	return atomic_load(&s->draining);
}
