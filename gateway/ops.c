/* /metrics, /healthz and /readyz. */
#include "config.h"

#include "gateway/ops.h"

#include <stdio.h>
#include <string.h>

#include "gateway/audit.h"
#include "gateway/maps.h"
#include "gateway/metrics.h"
#include "gateway/models.h"
#include "gateway/rest.h"
#include "gateway/writer.h"
#include "lib/buf.h"
#include "lib/err.h"
#include "lib/timeutil.h"
#include "store/store.h"

/* A write transaction running (or a job waiting) this long means the writer is stuck. */
#define STUCK_NS (60ull * 1000000000ull)

bool
ops_handles(http_request_t *req)
{
	slice_t p = http_request_path(req);

	return slice_eq_cstr(p, "/metrics") || slice_eq_cstr(p, "/healthz") ||
	       slice_eq_cstr(p, "/readyz");
}

static void
counter(buf_t *b, const char *name, const char *help, uint64_t v)
{
	buf_printf(b, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", name, help, name, name,
		   (unsigned long long)v);
}

static void
gauge(buf_t *b, const char *name, const char *help, uint64_t v)
{
	buf_printf(b, "# HELP %s %s\n# TYPE %s gauge\n%s %llu\n", name, help, name, name,
		   (unsigned long long)v);
}

static void
write_metrics(server_t *srv, buf_t *b)
{
	server_stats_t s;
	writer_stats_t w;
	writer_health_t h;
	store_stats_t st = {0};
	store_txn_t *t;
	maps_t *maps = server_maps(srv);
	bool have_store = false;

	server_get_stats(srv, &s);
	writer_get_stats(server_writer(srv), &w);
	writer_get_health(server_writer(srv), &h);
	if (store_txn_begin(rest_store(server_rest(srv)), false, &t) == 0) {
		have_store = store_stats(t, &st) == 0;
		store_txn_abort(t);
	}
	buf_printf(b,
		   "# HELP fhirgate_build_info The running version.\n# TYPE fhirgate_build_info "
		   "gauge\nfhirgate_build_info{version=\"%s\"} 1\n",
		   PACKAGE_VERSION);
	gauge(b, "fhirgate_start_time_seconds", "Start of the process, seconds since the epoch.",
	      server_started_s(srv));
	counter(b, "fhirgate_mllp_messages_received_total", "MLLP frames received (messages).",
		s.frames);
	buf_printf(b,
		   "# HELP fhirgate_mllp_acks_total ACKs sent, by acknowledgment code.\n"
		   "# TYPE fhirgate_mllp_acks_total counter\n"
		   "fhirgate_mllp_acks_total{code=\"AA\"} %llu\n"
		   "fhirgate_mllp_acks_total{code=\"AE\"} %llu\n"
		   "fhirgate_mllp_acks_total{code=\"AR\"} %llu\n",
		   (unsigned long long)s.acks_aa, (unsigned long long)s.acks_ae,
		   (unsigned long long)s.acks_ar);
	counter(b, "fhirgate_mllp_duplicates_total",
		"Resent messages (same sender and MSH-10) answered without storing them again.",
		s.duplicates);
	counter(b, "fhirgate_mllp_garbage_bytes_total", "Bytes outside MLLP frames, skipped.",
		s.garbage_bytes);
	counter(b, "fhirgate_mllp_aborted_frames_total",
		"Frames cut short by a new start block or a closed connection.", s.aborted_frames);
	counter(b, "fhirgate_mllp_oversize_frames_total",
		"Frames over mllp.max_frame_bytes (answered AR).", s.oversize_frames);
	counter(b, "fhirgate_mllp_store_failures_total", "Messages whose commit failed (no AA).",
		s.store_failures);
	counter(b, "fhirgate_accept_pauses_total",
		"Times accepting paused (connection cap or out of descriptors).", s.accept_pauses);
	counter(b, "fhirgate_mllp_connections_accepted_total", "MLLP connections accepted.",
		s.conns_accepted);
	buf_printf(b,
		   "# HELP fhirgate_connections_open Open connections, by protocol.\n"
		   "# TYPE fhirgate_connections_open gauge\n"
		   "fhirgate_connections_open{protocol=\"mllp\"} %llu\n"
		   "fhirgate_connections_open{protocol=\"http\"} %llu\n",
		   (unsigned long long)s.conns_open, (unsigned long long)s.http_conns_open);
	gauge(b, "fhirgate_writer_queue_jobs", "Jobs queued for the writer, not yet committed.",
	      h.queued);
	gauge(b, "fhirgate_writer_queue_max",
	      "writer.queue_max: past it MLLP reading pauses and HTTP writes get 503.",
	      h.queue_max);
	counter(b, "fhirgate_writer_batches_total", "Group-commit transactions.", w.batches);
	counter(b, "fhirgate_writer_jobs_total", "Jobs (messages, REST writes) committed.", w.jobs);
	counter(b, "fhirgate_writer_failed_batches_total", "Transactions that failed.",
		w.failed_batches);
	gauge(
	    b, "fhirgate_writer_unapplied_puts",
	    "Resource puts of ACKed messages kept in pend, not yet searchable (store.apply_delay).",
	    h.unapplied);
	counter(b, "fhirgate_writer_applies_total", "Deferred applies (bulk loads of pend).",
		w.applies);
	counter(b, "fhirgate_writer_failed_applies_total", "Deferred applies that failed.",
		w.failed_applies);
	counter(b, "fhirgate_writer_applied_puts_total", "Resource puts made by deferred applies.",
		w.applied_puts);
	counter(b, "fhirgate_audit_dropped_total",
		"REST AuditEvents dropped because the writer queue was full.", audit_dropped());
	if (maps != NULL) {
		maps_stats_t ms;

		maps_get_stats(maps, &ms);
		buf_printf(b,
			   "# HELP fhirgate_mappings_reloads_total Mapping reloads, by result.\n"
			   "# TYPE fhirgate_mappings_reloads_total counter\n"
			   "fhirgate_mappings_reloads_total{result=\"ok\"} %llu\n"
			   "fhirgate_mappings_reloads_total{result=\"failed\"} %llu\n",
			   (unsigned long long)ms.reloads_ok,
			   (unsigned long long)ms.reloads_failed);
	}
	if (have_store) {
		gauge(b, "fhirgate_store_map_size_bytes", "store.map_size.", st.map_size);
		gauge(b, "fhirgate_store_used_bytes", "Store pages in use times the page size.",
		      st.used_bytes);
		gauge(b, "fhirgate_store_messages", "Messages in the message log.", st.messages);
		gauge(b, "fhirgate_dead_letters", "Messages in the dead-letter store.", st.dead);
		gauge(b, "fhirgate_store_resources", "Current (not deleted) resources.",
		      st.resources);
		gauge(b, "fhirgate_store_versions", "Stored resource versions.", st.versions);
		gauge(b, "fhirgate_store_index_entries", "Search index entries.", st.index_entries);
		gauge(b, "fhirgate_store_work_pending", "Pending work items (scoring).", st.work);
	}
	models_metrics_write(b);
	metrics_write(b);
}

/* A health document (application/health+json, draft-inadarei-api-health-check). */
typedef struct {
	buf_t body;
	bool fail;
	int nchecks;
} health_t;

static void
check(health_t *h, const char *name, bool pass, const char *detail)
{
	buf_printf(&h->body, "%s\"%s\":[{\"status\":\"%s\"%s%s%s}]", h->nchecks++ ? "," : "", name,
		   pass ? "pass" : "fail", detail ? ",\"output\":\"" : "", detail ? detail : "",
		   detail ? "\"" : "");
	if (!pass)
		h->fail = true;
}

static void
writer_checks(health_t *h, server_t *srv, bool ready)
{
	writer_health_t w;
	uint64_t now = time_mono_ns();
	bool stuck;

	writer_get_health(server_writer(srv), &w);
	stuck = (w.committing_since_mono_ns != 0 && now - w.committing_since_mono_ns > STUCK_NS) ||
		(w.oldest_queued_mono_ns != 0 && now - w.oldest_queued_mono_ns > STUCK_NS) ||
		(w.unapplied_since_mono_ns != 0 && now - w.unapplied_since_mono_ns > STUCK_NS);
	check(h, "writer:progress", !stuck,
	      stuck ? "a write transaction, a queued job or an unapplied put is older than 60 s"
		    : NULL);
	if (!ready)
		return;
	check(h, "writer:queue", w.queued < w.queue_max,
	      w.queued < w.queue_max ? NULL : "writer queue full (writer.queue_max)");
	check(h, "store:commit", w.last_rc == 0,
	      w.last_rc == 0 ? NULL : "the last write transaction failed");
}

static void
send_health(http_request_t *req, server_t *srv, bool ready)
{
	static const http_field_t fields[] = {{"Content-Type", "application/health+json"},
					      {"Cache-Control", "no-store"},
					      {NULL, NULL}};
	health_t h = {BUF_INIT, false, 0};
	buf_t out = BUF_INIT;

	writer_checks(&h, srv, ready);
	if (ready) {
		store_txn_t *t;
		bool ok = store_txn_begin(rest_store(server_rest(srv)), false, &t) == 0;

		if (ok)
			store_txn_abort(t);
		check(&h, "store:read", ok, ok ? NULL : "cannot open a read transaction");
		check(&h, "server:draining", !server_is_draining(srv),
		      server_is_draining(srv) ? "shutting down" : NULL);
		if (server_maps(srv) != NULL) {
			maps_stats_t ms;

			maps_get_stats(server_maps(srv), &ms);
			/* Older mappings stay in force: ready, but say so. */
			buf_printf(&h.body, ",\"mappings:reload\":[{\"status\":\"%s\"}]",
				   ms.last_failed ? "warn" : "pass");
		}
	}
	buf_printf(&out, "{\"status\":\"%s\",\"checks\":{%.*s}}\n", h.fail ? "fail" : "pass",
		   (int)h.body.len, h.body.data ? h.body.data : "");
	http_respond(req, h.fail ? 503 : 200, fields, buf_slice(&out));
	buf_free(&h.body);
	buf_free(&out);
}

void
ops_handle(http_request_t *req, server_t *srv)
{
	static const http_field_t allow[] = {{"Allow", "GET, HEAD"}, {NULL, NULL}};
	static const http_field_t prom[] = {
	    {"Content-Type", "text/plain; version=0.0.4; charset=utf-8"},
	    {"Cache-Control", "no-store"},
	    {NULL, NULL}};
	slice_t m = http_request_method(req), p = http_request_path(req);
	buf_t b = BUF_INIT;

	http_request_set_route(req, METRICS_ROUTE_OPS);
	if (!slice_eq_cstr(m, "GET") && !slice_eq_cstr(m, "HEAD")) {
		http_respond(req, 405, allow, SLICE_LIT("only GET and HEAD\n"));
		return;
	}
	if (slice_eq_cstr(p, "/healthz")) {
		send_health(req, srv, false);
	} else if (slice_eq_cstr(p, "/readyz")) {
		send_health(req, srv, true);
	} else {
		write_metrics(srv, &b);
		http_respond(req, 200, prom, buf_slice(&b));
		buf_free(&b);
	}
}
