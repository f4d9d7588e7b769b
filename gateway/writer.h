/* The writer thread: owns every LMDB write transaction and commits whatever is queued in one
 * transaction (group commit), then hands each job back to the I/O thread that sent it. */
#ifndef GATEWAY_WRITER_H
#define GATEWAY_WRITER_H

#include <stdbool.h>
#include <stdint.h>

#include "store/store.h"

typedef struct writer writer_t;
typedef struct writer_job writer_job_t;

/* Runs in the writer thread inside the batch's write transaction; returns 0 or a store error
 * (which fails the whole batch). */
typedef int (*writer_apply_fn)(writer_job_t *job, store_txn_t *t);
/* Runs in the writer thread after the commit (rc: 0 or the commit's error): it must hand the job
 * back to its owner (e.g. queue it to an I/O thread and wake that thread). */
typedef void (*writer_done_fn)(writer_job_t *job, int rc);

/* Embed this in the caller's job struct. */
struct writer_job {
	writer_job_t *next;
	writer_apply_fn apply;
	writer_done_fn done;
	/* Deferred apply. deferrable: the job may defer its resource puts (an MLLP message); else
	 * it needs every deferred put made before its transaction (a REST write: anything that
	 * reads or writes resources) unless unordered (it touches no resource: AuditEvents). */
	bool deferrable, unordered;
	/* Set by the writer before apply: NULL, make the puts; else keep them in pend
	 * (store_pend_put) and add them to this load (store_bulk_add), in the transaction. */
	store_bulk_t *pending;
	uint64_t bytes;          /* for the batch byte bound */
	uint64_t queued_mono_ns; /* set by writer_submit */
};

typedef struct {
	uint64_t batch_max_messages;
	uint64_t batch_max_bytes;
	uint64_t batch_max_delay_us;
	uint64_t queue_max;
	uint64_t queue_max_bytes; /* 0: no byte bound */
	/* Runs in the writer thread when it starts and after each batch (NULL: nothing): work
	 * that follows commits, in its own transactions (scoring, gateway/score.h). */
	void (*after_commit)(store_t *store);
	/* Deferred apply (apply_delay_us 0: off, every job makes its puts in its own batch).
	 * Jobs with a defer function keep their resource puts in pend, in the transaction that
	 * stores their message; the writer makes all that wait in one bulk load (sorted: each
	 * B-tree leaf written once) at most apply_delay_us after the first of them committed,
	 * sooner when apply_mem_bytes of puts wait or a job comes that needs them made, and
	 * when it starts (what a crash left in pend) and stops. */
	uint64_t apply_delay_us;
	uint64_t apply_mem_bytes;
	/* Called in the load for each put made, with the load's transaction as ctx (NULL:
	 * nothing): the scoring hook's note of a changed resource. */
	store_bulk_cb apply_cb;
} writer_opts_t;

typedef struct {
	uint64_t batches, jobs, failed_batches;
	uint64_t commit_ns_total, commit_ns_max;
	uint64_t largest_batch;
	/* deferred apply: loads made and failed, puts made in them, their time */
	uint64_t applies, failed_applies, applied_puts;
	uint64_t apply_ns_total, apply_ns_max;
} writer_stats_t;

/* Starts the thread. Caller owns the writer; the store must outlive it. */
int writer_start(store_t *store, const writer_opts_t *opts, writer_t **out);
/* Queues a job (never blocks, never fails): returns true when the queue is at or past
 * queue_max jobs or queue_max_bytes, so the caller should stop reading until its jobs come
 * back. */
bool writer_submit(writer_t *w, writer_job_t *job);
/* Queues an empty job: the writer commits an empty transaction and runs after_commit (to pick
 * up work another process left). */
void writer_kick(writer_t *w);
/* Deferred puts of committed jobs not made yet (0: everything committed is readable). */
uint64_t writer_unapplied(writer_t *w);
/* Jobs queued and not yet committed. */
uint64_t writer_queued(writer_t *w);
/* True when the queue is full (as writer_submit says): callers that can refuse work (HTTP writes)
 * should answer 503 instead of queueing more. */
bool writer_full(writer_t *w);

typedef struct {
	uint64_t queued, queue_max, queued_bytes;
	uint64_t last_commit_mono_ns;   /* end of the last batch; 0 before the first */
	uint64_t oldest_queued_mono_ns; /* when the job at the queue's head was queued; 0: empty */
	uint64_t committing_since_mono_ns; /* start of the batch being written; 0: idle */
	int last_rc;                       /* the last batch's result: 0 or a store error */
	uint64_t unapplied;                /* puts kept in pend, waiting for the next load */
	uint64_t unapplied_since_mono_ns;  /* when the first of them committed; 0: none */
} writer_health_t;

/* A snapshot for /healthz and /readyz. */
void writer_get_health(writer_t *w, writer_health_t *out);
/* Commits what is queued, makes the deferred puts and stops the thread (stats stay
 * readable). */
void writer_stop(writer_t *w);
/* Accepts NULL; call after writer_stop. */
void writer_free(writer_t *w);
void writer_get_stats(writer_t *w, writer_stats_t *out);

#endif
