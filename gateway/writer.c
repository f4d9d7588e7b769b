/* Group-commit writer thread. */
#include "config.h"

#include "gateway/writer.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gateway/metrics.h"
#include "lib/err.h"
#include "lib/log.h"
#include "lib/timeutil.h"
#include "lib/xalloc.h"

struct writer {
	store_t *store;
	writer_opts_t opts;
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	writer_job_t *head, *tail; /* FIFO */
	uint64_t queued, queued_bytes;
	bool stopping;
	writer_stats_t stats; /* under mu */
	uint64_t last_commit_mono_ns;
	_Atomic uint64_t committing_since; /* written by the writer thread only */
	int last_rc;
	/* Deferred apply (writer thread only, but for the two counts under mu): the load the
	 * deferred puts go to (NULL: none yet), and whether pend may hold puts it lacks (at start,
	 * after a failure: read them from the store before the load). */
	store_bulk_t *pend;
	bool pend_reload;
	uint64_t unapplied, unapplied_since; /* under mu */
	/* for writer_unapplied without the lock (a REST read asks on every request): the puts
	 * waiting, plus one while the load lacks some (pend_reload) */
	_Atomic uint64_t unapplied_pub;
};

static bool
deferring_on(const writer_t *w)
{
	return w->opts.apply_delay_us > 0;
}

/* A job that needs the deferred puts made before its transaction. */
static bool
job_ordered(const writer_job_t *j)
{
	return !j->deferrable && !j->unordered;
}

/* Takes up to the batch bounds from the queue; mu held. */
static writer_job_t *
take_batch(writer_t *w, uint64_t *count)
{
	writer_job_t *first = w->head, *last = NULL, *j = w->head;
	uint64_t n = 0, bytes = 0;
	bool deferrable = false;

	while (j != NULL && n < w->opts.batch_max_messages &&
	       (n == 0 || bytes + j->bytes <= w->opts.batch_max_bytes)) {
		/* A job that needs the deferred puts made waits for the next batch after one that
		 * may defer: the load comes before its transaction. */
		if (deferrable && job_ordered(j))
			break;
		deferrable |= deferring_on(w) && j->deferrable;
		bytes += j->bytes;
		n++;
		last = j;
		j = j->next;
	}
	if (last != NULL)
		last->next = NULL;
	w->head = j;
	if (j == NULL)
		w->tail = NULL;
	w->queued -= n;
	w->queued_bytes -= bytes;
	*count = n;
	return first;
}

static void
wait_for_more(writer_t *w)
{
	struct timespec deadline;
	uint64_t ns;

	clock_gettime(CLOCK_REALTIME, &deadline);
	ns = (uint64_t)deadline.tv_nsec + w->opts.batch_max_delay_us * 1000u;
	deadline.tv_sec += (time_t)(ns / 1000000000u);
	deadline.tv_nsec = (long)(ns % 1000000000u);
	while (!w->stopping && w->queued < w->opts.batch_max_messages)
		if (pthread_cond_timedwait(&w->cv, &w->mu, &deadline) != 0)
			break;
}

/* Is a load due: puts waiting and (force) or their delay over or their memory full? */
static bool
pend_due(writer_t *w, bool force)
{
	if (w->pend_reload)
		return true;
	if (w->pend == NULL || store_bulk_count(w->pend) == 0)
		return false;
	return force || store_bulk_memory_full(w->pend) ||
	       time_mono_ns() >= w->unapplied_since + w->opts.apply_delay_us * 1000u;
}

static void
pend_counts(writer_t *w)
{
	uint64_t n = w->pend != NULL ? store_bulk_count(w->pend) : 0;

	bool waiting = n > 0 || w->pend_reload; /* pend_reload: pend holds puts the load lacks */

	pthread_mutex_lock(&w->mu);
	if (waiting && w->unapplied_since == 0)
		w->unapplied_since = time_mono_ns();
	else if (!waiting)
		w->unapplied_since = 0;
	w->unapplied = n;
	atomic_store(&w->unapplied_pub, n + (w->pend_reload ? 1 : 0));
	pthread_mutex_unlock(&w->mu);
}

/* The load deferred puts go to, keeping the last put of each resource at hand
 * (store_bulk_unchanged). */
static int
pend_open(writer_t *w)
{
	int rc;

	if (w->pend != NULL)
		return 0;
	rc = store_bulk_open(w->store, "apply", w->opts.apply_mem_bytes, 0, &w->pend);
	if (rc == 0)
		store_bulk_track(w->pend);
	return rc;
}

static int
pend_reload_add(void *ctx, uint64_t seq, const store_res_put_t *p)
{
	store_bulk_t *b = ctx;
	int rc = store_bulk_add(b, p);

	(void)seq;
	/* More than the memory budget (a long outage's worth): on to a run file. */
	if (rc == 0 && store_bulk_memory_full(b))
		rc = store_bulk_sync(b, NULL);
	return rc;
}

/* A new load holding every put kept in pend. */
static int
pend_reload(writer_t *w)
{
	store_txn_t *t;
	int rc;

	store_bulk_free(w->pend, true);
	w->pend = NULL;
	if ((rc = pend_open(w)) < 0)
		return rc;
	if ((rc = store_txn_begin(w->store, false, &t)) < 0)
		return rc;
	rc = store_pend_foreach(t, pend_reload_add, w->pend);
	store_txn_abort(t);
	if (rc == 0)
		w->pend_reload = false;
	return rc;
}

/* The load of the n puts waiting and the removal of pend, in one transaction. */
static int
pend_load(writer_t *w, uint64_t n)
{
	uint64_t t0 = time_mono_ns(), tc;
	store_bulk_stats_t bs;
	store_txn_t *t;
	int rc = store_txn_begin(w->store, true, &t);

	if (rc < 0)
		return rc;
	rc = store_bulk_load(w->pend, t, time_now_ns(), w->opts.apply_cb, t);
	if (rc == 0)
		rc = store_pend_del(t, 0, UINT64_MAX);
	if (rc < 0) {
		store_txn_abort(t);
		return rc;
	}
	tc = time_mono_ns();
	if ((rc = store_txn_commit(t)) < 0)
		return rc;
	store_bulk_stats(w->pend, &bs);
	log_debug("writer",
		  "apply of %llu puts: load %.1f ms (resource pass %.1f, index pass %.1f), commit "
		  "%.1f ms",
		  (unsigned long long)n, (double)(tc - t0) / 1e6, (double)bs.res_ns / 1e6,
		  (double)bs.idx_ns / 1e6, (double)(time_mono_ns() - tc) / 1e6);
	return 0;
}

/* Makes every deferred put in one bulk load whose transaction also empties pend. On failure
 * pend keeps them (the next load reads them again). */
static int
pend_apply(writer_t *w)
{
	uint64_t t0 = time_mono_ns(), n, dt;
	int rc = 0;

	if (w->pend_reload && (rc = pend_reload(w)) < 0)
		goto out;
	n = w->pend != NULL ? store_bulk_count(w->pend) : 0;
	if (n == 0)
		goto out;
	atomic_store(&w->committing_since, t0);
	rc = pend_load(w, n);
	store_bulk_free(w->pend, true);
	w->pend = NULL;
	dt = time_mono_ns() - t0;
	metrics_observe(METRICS_HIST_APPLY, dt);
	pthread_mutex_lock(&w->mu);
	w->last_rc = rc;
	w->stats.applies++;
	w->stats.failed_applies += rc < 0;
	w->stats.applied_puts += rc < 0 ? 0 : n;
	w->stats.apply_ns_total += dt;
	if (dt > w->stats.apply_ns_max)
		w->stats.apply_ns_max = dt;
	pthread_mutex_unlock(&w->mu);
	atomic_store(&w->committing_since, 0);
out:
	if (rc < 0) {
		w->pend_reload = true;
		pthread_mutex_lock(&w->mu);
		w->last_rc = rc; /* /readyz: a load that fails is a write that fails */
		pthread_mutex_unlock(&w->mu);
		log_error("writer", "deferred apply failed: %s (%s); the puts stay in pend",
			  fg_strerror(rc), store_last_error());
	}
	pend_counts(w);
	return rc;
}

static void
commit_batch(writer_t *w, writer_job_t *batch, uint64_t count)
{
	uint64_t t0, dt;
	store_txn_t *t = NULL;
	bool ordered = false, defers = false;
	int rc = 0;

	for (writer_job_t *j = batch; j != NULL; j = j->next) {
		ordered |= job_ordered(j);
		defers |= deferring_on(w) && j->deferrable;
	}
	/* The puts waiting are made first when a job needs them, when no more fit, or when the
	 * load lacks some (a failure); else after the batch's ACKs, once due. */
	if (w->pend_reload || (w->pend != NULL && store_bulk_count(w->pend) > 0 &&
			       (ordered || store_bulk_memory_full(w->pend))))
		rc = pend_apply(w);
	if (rc == 0 && defers)
		rc = pend_open(w);
	t0 = time_mono_ns();
	atomic_store(&w->committing_since, t0);
	if (rc == 0)
		rc = store_txn_begin(w->store, true, &t);
	for (writer_job_t *j = batch; rc == 0 && j != NULL; j = j->next) {
		j->pending = deferring_on(w) && j->deferrable ? w->pend : NULL;
		rc = j->apply(j, t);
	}
	if (rc == 0) {
		rc = store_txn_commit(t);
	} else if (t != NULL) {
		store_txn_abort(t);
	}
	if (rc < 0) {
		log_error("writer", "commit of %llu messages failed: %s (%s)",
			  (unsigned long long)count, fg_strerror(rc), store_last_error());
		/* the load may hold puts of the transaction that failed: rebuild it from pend */
		if (defers)
			w->pend_reload = true;
	}
	pend_counts(w);
	dt = time_mono_ns() - t0;
	metrics_observe(METRICS_HIST_COMMIT, dt);
	pthread_mutex_lock(&w->mu);
	w->stats.batches++;
	w->stats.jobs += count;
	w->stats.failed_batches += rc < 0;
	w->stats.commit_ns_total += dt;
	if (dt > w->stats.commit_ns_max)
		w->stats.commit_ns_max = dt;
	if (count > w->stats.largest_batch)
		w->stats.largest_batch = count;
	w->last_commit_mono_ns = t0 + dt;
	w->last_rc = rc;
	atomic_store(&w->committing_since, 0);
	pthread_mutex_unlock(&w->mu);
	while (batch != NULL) {
		writer_job_t *next = batch->next;

		batch->next = NULL;
		batch->done(batch, rc);
		batch = next;
	}
}

/* Waits (mu held) for a job, or until the deferred puts are due; false when stopping with
 * nothing queued. */
static bool
wait_for_job(writer_t *w)
{
	while (w->head == NULL && !w->stopping) {
		uint64_t due, now = time_mono_ns();
		struct timespec deadline;

		if (w->unapplied == 0 && !w->pend_reload) {
			pthread_cond_wait(&w->cv, &w->mu);
			continue;
		}
		due = w->unapplied_since + w->opts.apply_delay_us * 1000u;
		if (w->pend_reload || now >= due) {
			pthread_mutex_unlock(&w->mu);
			if (pend_apply(w) < 0) {
				struct timespec pause = {1, 0};

				nanosleep(&pause, NULL); /* the store refuses: do not spin */
			}
			if (w->opts.after_commit != NULL)
				w->opts.after_commit(w->store);
			pthread_mutex_lock(&w->mu);
			continue;
		}
		clock_gettime(CLOCK_REALTIME, &deadline);
		due = (uint64_t)deadline.tv_nsec + (due - now);
		deadline.tv_sec += (time_t)(due / 1000000000u);
		deadline.tv_nsec = (long)(due % 1000000000u);
		pthread_cond_timedwait(&w->cv, &w->mu, &deadline);
	}
	return w->head != NULL;
}

static void *
writer_main(void *arg)
{
	writer_t *w = arg;

	(void)pend_apply(w); /* what a crash left in pend (pend_reload is set) */
	if (w->opts.after_commit != NULL)
		w->opts.after_commit(w->store);
	pthread_mutex_lock(&w->mu);
	for (;;) {
		writer_job_t *batch;
		uint64_t count;

		if (!wait_for_job(w))
			break;
		if (w->opts.batch_max_delay_us > 0)
			wait_for_more(w);
		batch = take_batch(w, &count);
		pthread_mutex_unlock(&w->mu);
		commit_batch(w, batch, count);
		if (pend_due(w, false))
			(void)pend_apply(w);
		if (w->opts.after_commit != NULL)
			w->opts.after_commit(w->store);
		pthread_mutex_lock(&w->mu);
	}
	pthread_mutex_unlock(&w->mu);
	if (pend_due(w, true))
		(void)pend_apply(w);
	store_bulk_free(w->pend, true);
	w->pend = NULL;
	return NULL;
}

int
writer_start(store_t *store, const writer_opts_t *opts, writer_t **out)
{
	writer_t *w = xcalloc(1, sizeof(*w));

	w->store = store;
	w->opts = *opts;
	w->pend_reload = true; /* what a crash left in pend: made first */
	atomic_store(&w->unapplied_pub, 1);
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->cv, NULL);
	if (pthread_create(&w->thread, NULL, writer_main, w) != 0) {
		pthread_mutex_destroy(&w->mu);
		pthread_cond_destroy(&w->cv);
		free(w);
		return -FG_EIO;
	}
	*out = w;
	return 0;
}

/* mu held. */
static bool
is_full(const writer_t *w)
{
	return w->queued >= w->opts.queue_max ||
	       (w->opts.queue_max_bytes != 0 && w->queued_bytes >= w->opts.queue_max_bytes);
}

bool
writer_submit(writer_t *w, writer_job_t *job)
{
	bool full;

	job->next = NULL;
	job->queued_mono_ns = time_mono_ns();
	pthread_mutex_lock(&w->mu);
	if (w->tail != NULL)
		w->tail->next = job;
	else
		w->head = job;
	w->tail = job;
	w->queued++;
	w->queued_bytes += job->bytes;
	full = is_full(w);
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
	return full;
}

bool
writer_full(writer_t *w)
{
	bool full;

	pthread_mutex_lock(&w->mu);
	full = is_full(w);
	pthread_mutex_unlock(&w->mu);
	return full;
}

void
writer_get_health(writer_t *w, writer_health_t *out)
{
	pthread_mutex_lock(&w->mu);
	out->queued = w->queued;
	out->queue_max = w->opts.queue_max;
	out->queued_bytes = w->queued_bytes;
	out->last_commit_mono_ns = w->last_commit_mono_ns;
	out->oldest_queued_mono_ns = w->head != NULL ? w->head->queued_mono_ns : 0;
	out->last_rc = w->last_rc;
	out->unapplied = w->unapplied;
	out->unapplied_since_mono_ns = w->unapplied_since;
	pthread_mutex_unlock(&w->mu);
	out->committing_since_mono_ns = atomic_load(&w->committing_since);
}

static int
noop_apply(writer_job_t *j, store_txn_t *t)
{
	(void)j;
	(void)t;
	return 0;
}

static void
noop_done(writer_job_t *j, int rc)
{
	(void)rc;
	free(j);
}

void
writer_kick(writer_t *w)
{
	writer_job_t *j = xcalloc(1, sizeof(*j));

	j->apply = noop_apply;
	j->done = noop_done;
	(void)writer_submit(w, j);
}

uint64_t
writer_unapplied(writer_t *w)
{
	return atomic_load(&w->unapplied_pub);
}

uint64_t
writer_queued(writer_t *w)
{
	uint64_t n;

	pthread_mutex_lock(&w->mu);
	n = w->queued;
	pthread_mutex_unlock(&w->mu);
	return n;
}

void
writer_stop(writer_t *w)
{
	pthread_mutex_lock(&w->mu);
	if (w->stopping) {
		pthread_mutex_unlock(&w->mu);
		return;
	}
	w->stopping = true;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
	pthread_join(w->thread, NULL);
}

void
writer_free(writer_t *w)
{
	if (w == NULL)
		return;
	writer_stop(w);
	pthread_mutex_destroy(&w->mu);
	pthread_cond_destroy(&w->cv);
	free(w);
}

void
writer_get_stats(writer_t *w, writer_stats_t *out)
{
	pthread_mutex_lock(&w->mu);
	*out = w->stats;
	pthread_mutex_unlock(&w->mu);
}
