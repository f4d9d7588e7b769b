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
};

/* Takes up to the batch bounds from the queue; mu held. */
static writer_job_t *
take_batch(writer_t *w, uint64_t *count)
{
	writer_job_t *first = w->head, *last = NULL, *j = w->head;
	uint64_t n = 0, bytes = 0;

	while (j != NULL && n < w->opts.batch_max_messages &&
	       (n == 0 || bytes + j->bytes <= w->opts.batch_max_bytes)) {
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

static void
commit_batch(writer_t *w, writer_job_t *batch, uint64_t count)
{
	uint64_t t0 = time_mono_ns(), dt;
	store_txn_t *t = NULL;
	int rc;

	atomic_store(&w->committing_since, t0);
	rc = store_txn_begin(w->store, true, &t);

	for (writer_job_t *j = batch; rc == 0 && j != NULL; j = j->next)
		rc = j->apply(j, t);
	if (rc == 0) {
		rc = store_txn_commit(t);
	} else {
		store_txn_abort(t);
	}
	if (rc < 0)
		log_error("writer", "commit of %llu messages failed: %s (%s)",
			  (unsigned long long)count, fg_strerror(rc), store_last_error());
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

static void *
writer_main(void *arg)
{
	writer_t *w = arg;

	if (w->opts.after_commit != NULL)
		w->opts.after_commit(w->store);
	pthread_mutex_lock(&w->mu);
	for (;;) {
		writer_job_t *batch;
		uint64_t count;

		while (w->head == NULL && !w->stopping)
			pthread_cond_wait(&w->cv, &w->mu);
		if (w->head == NULL)
			break;
		if (w->opts.batch_max_delay_us > 0)
			wait_for_more(w);
		batch = take_batch(w, &count);
		pthread_mutex_unlock(&w->mu);
		commit_batch(w, batch, count);
		if (w->opts.after_commit != NULL)
			w->opts.after_commit(w->store);
		pthread_mutex_lock(&w->mu);
	}
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

int
writer_start(store_t *store, const writer_opts_t *opts, writer_t **out)
{
	writer_t *w = xcalloc(1, sizeof(*w));

	w->store = store;
	w->opts = *opts;
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
