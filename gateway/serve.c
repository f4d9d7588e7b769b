/* `fhirgate serve`: open the store, start the writer and the I/O threads, handle signals. */
#include "config.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(HAVE_MALLOC_TRIM) || defined(HAVE_MALLOPT)
#include <malloc.h>
#endif

#include <event2/event.h>
#include <event2/thread.h>

#include "gateway/audit.h"
#include "gateway/auth.h"
#include "gateway/cli.h"
#include "gateway/dropdir.h"
#include "gateway/ingest.h"
#include "gateway/maps.h"
#include "gateway/models.h"
#include "gateway/score.h"
#include "gateway/server.h"
#include "gateway/writer.h"
#include "lib/err.h"
#include "lib/log.h"
#include "store/store.h"

typedef struct {
	struct event_base *base;
	server_t *server;
	writer_t *writer;
	maps_t *maps;
	models_t *models;
	store_t *store;
	dropdir_t *drop;
	rest_t *rest;
	config_t *cfg;
} serve_ctx_t;

static void
log_stats(serve_ctx_t *x, const char *when)
{
	server_stats_t s;
	writer_stats_t w;

	server_get_stats(x->server, &s);
	writer_get_stats(x->writer, &w);
	log_info("stats",
		 "%s conns_open=%llu conns_accepted=%llu frames=%llu aa=%llu ae=%llu ar=%llu "
		 "duplicates=%llu garbage_bytes=%llu aborted_frames=%llu oversize_frames=%llu "
		 "store_failures=%llu accept_pauses=%llu refused=%llu tls_failures=%llu "
		 "batches=%llu largest_batch=%llu "
		 "commit_ms_avg=%.2f commit_ms_max=%.2f applies=%llu failed_applies=%llu "
		 "applied_puts=%llu apply_ms_avg=%.2f apply_ms_max=%.2f",
		 when, (unsigned long long)s.conns_open, (unsigned long long)s.conns_accepted,
		 (unsigned long long)s.frames, (unsigned long long)s.acks_aa,
		 (unsigned long long)s.acks_ae, (unsigned long long)s.acks_ar,
		 (unsigned long long)s.duplicates, (unsigned long long)s.garbage_bytes,
		 (unsigned long long)s.aborted_frames, (unsigned long long)s.oversize_frames,
		 (unsigned long long)s.store_failures, (unsigned long long)s.accept_pauses,
		 (unsigned long long)s.refused, (unsigned long long)s.tls_failures,
		 (unsigned long long)w.batches, (unsigned long long)w.largest_batch,
		 w.batches ? (double)w.commit_ns_total / (double)w.batches / 1e6 : 0.0,
		 (double)w.commit_ns_max / 1e6, (unsigned long long)w.applies,
		 (unsigned long long)w.failed_applies, (unsigned long long)w.applied_puts,
		 w.applies ? (double)w.apply_ns_total / (double)w.applies / 1e6 : 0.0,
		 (double)w.apply_ns_max / 1e6);
}

static void
on_stop(evutil_socket_t sig, short what, void *arg)
{
	serve_ctx_t *x = arg;

	log_info("server", "%s received: draining", sig == SIGINT ? "SIGINT" : "SIGTERM");
	event_base_loopbreak(x->base);
}

static void
on_hup(evutil_socket_t sig, short what, void *arg)
{
	serve_ctx_t *x = arg;
	config_t fresh;
	char *err = NULL;

	if (cli_config_reload(&fresh) < 0) {
		log_error("config", "reload failed; the running configuration stays in force");
		return;
	}
	if (strcmp(fresh.mllp_listen, x->cfg->mllp_listen) != 0 ||
	    strcmp(fresh.mllp_tls_listen, x->cfg->mllp_tls_listen) != 0 ||
	    strcmp(fresh.http_listen, x->cfg->http_listen) != 0 ||
	    strcmp(fresh.http_tls_listen, x->cfg->http_tls_listen) != 0 ||
	    strcmp(fresh.data_dir, x->cfg->data_dir) != 0 || fresh.io_threads != x->cfg->io_threads)
		log_warn("config",
			 "listen addresses (mllp.listen, mllp.tls.listen, http.listen, "
			 "http.tls.listen), store.data_dir and io.threads change on restart "
			 "only");
	if (fresh.auth_enabled != x->cfg->auth_enabled ||
	    strcmp(fresh.auth_signing_key, x->cfg->auth_signing_key) != 0 ||
	    strcmp(fresh.auth_base_url, x->cfg->auth_base_url) != 0 ||
	    fresh.auth_token_lifetime_ms != x->cfg->auth_token_lifetime_ms ||
	    fresh.auth_clock_skew_ms != x->cfg->auth_clock_skew_ms)
		log_warn("config", "auth.* options but auth.clients change on restart only");
	if (rest_reload(x->rest, &fresh, &err) < 0) {
		log_error("auth", "clients not reloaded, the previous ones stay: %s", err);
		free(err);
	}
	server_reload(x->server, &fresh);
	if (strcmp(fresh.mappings_dir, x->cfg->mappings_dir) != 0 ||
	    strcmp(fresh.mappings_site_dir, x->cfg->mappings_site_dir) != 0 ||
	    strcmp(fresh.mappings_timezone, x->cfg->mappings_timezone) != 0 ||
	    fresh.mappings_unmapped != x->cfg->mappings_unmapped ||
	    fresh.mappings_watch_ms != x->cfg->mappings_watch_ms)
		log_warn("config",
			 "new mappings.* folders and the watch interval apply on restart; "
			 "the timezone and unmapped policy apply now");
	if (x->maps != NULL)
		maps_reload(x->maps, x->cfg);
	if (strcmp(fresh.scoring_models_dir, x->cfg->scoring_models_dir) != 0)
		log_warn("config", "a new scoring.models_dir applies on restart");
	models_reload(x->models);
	log_set_level(fresh.log_level);
	log_set_format(fresh.log_format);
	log_set_output(fresh.log_output);
	log_info("config", "configuration reloaded");
	config_free(&fresh);
}

/* Hands the REST AuditEvents collected since the last time to the writer, as one job. */
static void
on_audit(evutil_socket_t fd, short what, void *arg)
{
	audit_flush(arg);
}

static void
on_tick(evutil_socket_t fd, short what, void *arg)
{
	log_stats(arg, "periodic");
#ifdef HAVE_MALLOC_TRIM
	/* Freed memory of past bursts (large transactions, floods) goes back to the system. */
	malloc_trim(0);
#endif
}

/* Reloads the mappings when a file in their folders changed. */
static void
on_watch(evutil_socket_t fd, short what, void *arg)
{
	serve_ctx_t *x = arg;

	if (x->maps != NULL && maps_changed(x->maps, x->cfg)) {
		log_info("mappings", "mapping files changed: reloading");
		maps_reload(x->maps, x->cfg);
	}
	if (models_changed(x->models)) {
		log_info("scoring", "model files changed: reloading");
		models_reload(x->models);
	}
	/* Work items another process (fhirgate import) left: wake the writer to score them. */
	{
		store_txn_t *t;
		store_stats_t st = {0};

		if (store_txn_begin(x->store, false, &t) == 0) {
			if (store_stats(t, &st) < 0)
				st.work = 0;
			store_txn_abort(t);
		}
		if (st.work > 0 && writer_queued(x->writer) == 0) {
			score_mark_pending();
			writer_kick(x->writer);
		}
	}
}

static void
on_drop(evutil_socket_t fd, short what, void *arg)
{
	serve_ctx_t *x = arg;

	dropdir_tick(x->drop);
}

static void
usage(FILE *f)
{
	fprintf(f,
		"usage: fhirgate serve [-c FILE] [--set key=value]...\n\n"
		"Runs the gateway: MLLP listeners (mllp.listen), the LMDB store (store.data_dir)\n"
		"and its group-commit writer. A message is ACKed AA only once it is committed.\n"
		"Signals: SIGTERM/SIGINT drain and exit 0; SIGHUP reloads the configuration.\n"
		"`fhirgate serve --print-config` writes the effective configuration and exits.\n");
}

int
cmd_serve(int argc, char **argv)
{
	serve_ctx_t x = {0};
	store_opts_t sopts = {0};
	writer_opts_t wopts;
	config_t cfg;
	store_t *store = NULL;
	char *err = NULL;
	sigset_t block, old;
	struct event *ev_term, *ev_int, *ev_hup, *ev_tick, *ev_audit, *ev_watch = NULL,
								      *ev_drop = NULL;
	struct timeval audit_every = {0, AUDIT_FLUSH_MS * 1000};
	struct timeval minute = {60, 0};
	int rc;

	if (cli_config_load(&argc, argv, &cfg) < 0)
		return 2;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			usage(stdout);
			config_free(&cfg);
			return 0;
		}
		if (strcmp(argv[i], "--print-config") == 0) {
			config_write(&cfg, stdout);
			config_free(&cfg);
			return 0;
		}
		fprintf(stderr, "fhirgate serve: unknown option '%s'\n", argv[i]);
		usage(stderr);
		config_free(&cfg);
		return 2;
	}
	/* Before anything is opened or created: a refusal leaves nothing behind. */
	if (auth_protected_mode_check(&cfg, &err) < 0) {
		fprintf(stderr, "fhirgate serve: %s\n", err);
		free(err);
		config_free(&cfg);
		return 1;
	}
	signal(SIGPIPE, SIG_IGN);
#if defined(HAVE_MALLOPT) && defined(M_MMAP_THRESHOLD)
	/* Blocks of 128 KiB and more (large arena chunks of big requests) are mapped and
	 * unmapped as a whole. A fixed threshold also stops glibc from raising it after the
	 * first big free, after which such blocks would fragment the heap for good. */
	mallopt(M_MMAP_THRESHOLD, 128 * 1024);
#endif
	evthread_use_pthreads();
	sopts.map_size = cfg.map_size;
	sopts.no_writemap = cfg.store_writemap == CONF_OFF;
	/* An empty mappings.dir stores messages without converting them (store and forward). */
	if (cfg.mappings_dir[0] == '\0') {
		log_warn("mappings", "mappings.dir is empty: messages are stored, not converted");
	} else if (maps_open(&cfg, &x.maps) < 0) {
		fprintf(stderr,
			"fhirgate serve: the mappings in %s do not load (see above; "
			"`fhirgate mappings check` lists every problem)\n",
			cfg.mappings_dir);
		config_free(&cfg);
		return 1;
	}
	rc = store_open(cfg.data_dir, &sopts, &store);
	if (rc < 0) {
		fprintf(stderr, "fhirgate serve: cannot open store %s: %s (%s)\n", cfg.data_dir,
			fg_strerror(rc), store_last_error());
		maps_free(x.maps);
		config_free(&cfg);
		return 1;
	}
	wopts.batch_max_messages = cfg.writer_batch_max_messages;
	wopts.batch_max_bytes = cfg.writer_batch_max_bytes;
	wopts.batch_max_delay_us = cfg.writer_batch_max_delay_us;
	wopts.queue_max = cfg.writer_queue_max;
	wopts.queue_max_bytes = cfg.writer_queue_max_bytes;
	wopts.after_commit = score_run_pending;
	wopts.apply_delay_us = cfg.writer_apply_delay_us;
	wopts.apply_mem_bytes = cfg.writer_apply_max_bytes;
	wopts.apply_cb = ingest_apply_note;
	models_open(cfg.scoring_models_dir, &x.models);
	models_set_global(x.models);
	/* Threads inherit a mask with the signals blocked: only this thread handles them. */
	sigemptyset(&block);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &block, &old);
	rc = writer_start(store, &wopts, &x.writer);
	if (rc == 0)
		rc = rest_new(store, x.writer, x.maps, &cfg, &x.rest, &err);
	if (rc == 0)
		rc = server_start(&cfg, x.writer, x.maps, x.rest, &x.server, &err);
	if (rc < 0) {
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		fprintf(stderr, "fhirgate serve: %s\n", err ? err : fg_strerror(rc));
		free(err);
		rest_free(x.rest);
		writer_free(x.writer);
		store_close(store);
		models_set_global(NULL);
		models_free(x.models);
		maps_free(x.maps);
		config_free(&cfg);
		return 1;
	}
	x.cfg = &cfg;
	x.store = store;
	x.drop = dropdir_new(&cfg, &err);
	if (err != NULL) {
		/* the server runs; the drop folder waits for a fixed config and a restart */
		log_error("import", "%s: the drop folder is off", err);
		free(err);
		err = NULL;
	}
	x.base = event_base_new();
	ev_term = evsignal_new(x.base, SIGTERM, on_stop, &x);
	ev_int = evsignal_new(x.base, SIGINT, on_stop, &x);
	ev_hup = evsignal_new(x.base, SIGHUP, on_hup, &x);
	ev_tick = event_new(x.base, -1, EV_PERSIST, on_tick, &x);
	ev_audit = event_new(x.base, -1, EV_PERSIST, on_audit, x.writer);
	evsignal_add(ev_term, NULL);
	evsignal_add(ev_int, NULL);
	evsignal_add(ev_hup, NULL);
	/* Only now: a SIGHUP or SIGTERM that came once the listeners were open (a client may
	 * already have connected) waited, blocked, for these handlers instead of killing us. */
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	evtimer_add(ev_tick, &minute);
	evtimer_add(ev_audit, &audit_every);
	if (cfg.mappings_watch_ms > 0) {
		struct timeval every = {(time_t)(cfg.mappings_watch_ms / 1000),
					(suseconds_t)((cfg.mappings_watch_ms % 1000) * 1000)};

		ev_watch = event_new(x.base, -1, EV_PERSIST, on_watch, &x);
		evtimer_add(ev_watch, &every);
	}
	if (x.drop != NULL) {
		struct timeval second = {1, 0};

		ev_drop = event_new(x.base, -1, EV_PERSIST, on_drop, &x);
		evtimer_add(ev_drop, &second);
	}
	log_info("server", "fhirgate %s ready data_dir=%s", PACKAGE_VERSION, cfg.data_dir);
	event_base_dispatch(x.base);

	dropdir_free(x.drop); /* a running import stops; it resumes next time */
	server_drain(x.server);
	audit_flush(x.writer);
	writer_stop(x.writer); /* commits whatever is still queued */
	audit_discard();
	log_stats(&x, "final");
	server_free(x.server);
	rest_free(x.rest);
	writer_free(x.writer);
	store_close(store);
	models_set_global(NULL);
	models_free(x.models);
	maps_free(x.maps);
	event_free(ev_term);
	event_free(ev_int);
	event_free(ev_hup);
	event_free(ev_tick);
	event_free(ev_audit);
	if (ev_watch != NULL)
		event_free(ev_watch);
	if (ev_drop != NULL)
		event_free(ev_drop);
	event_base_free(x.base);
	config_free(&cfg);
	log_info("server", "stopped");
	return 0;
}
