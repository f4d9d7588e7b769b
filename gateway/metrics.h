/* Process-wide counters and latency histograms for `/metrics` (Prometheus text format 0.0.4).
 * Every update is a relaxed atomic add, safe from any thread; nothing here holds patient data.
 * Gauges that live elsewhere (connections, store size, queue depth) are read when the page is
 * built (gateway/ops.c). */
#ifndef GATEWAY_METRICS_H
#define GATEWAY_METRICS_H

#include <stdint.h>

#include "lib/buf.h"

/* What an HTTP request was, for the `route` label: a small fixed set, never the path itself. */
typedef enum {
	METRICS_ROUTE_OTHER = 0, /* unrouted, not found, or refused before routing */
	METRICS_ROUTE_METADATA,
	METRICS_ROUTE_READ, /* read and vread */
	METRICS_ROUTE_SEARCH,
	METRICS_ROUTE_HISTORY,
	METRICS_ROUTE_CREATE,
	METRICS_ROUTE_UPDATE, /* update and conditional update */
	METRICS_ROUTE_PATCH,
	METRICS_ROUTE_DELETE, /* delete and conditional delete */
	METRICS_ROUTE_BUNDLE, /* batch and transaction */
	METRICS_ROUTE_OPERATION,
	METRICS_ROUTE_AUTH, /* token endpoint and discovery documents */
	METRICS_ROUTE_OPS,  /* /metrics, /healthz, /readyz */
	METRICS_ROUTE_COUNT
} metrics_route_t;

/* Label value of a route ("read"). */
const char *metrics_route_name(metrics_route_t r);

/* Latency histograms. */
typedef enum {
	METRICS_HIST_CONVERT, /* parse + map of one HL7 v2 message on an I/O thread */
	METRICS_HIST_COMMIT,  /* one group-commit transaction, begin to fsync'd commit */
	METRICS_HIST_APPLY,   /* one deferred apply: the bulk load of the puts waiting in pend */
	METRICS_HIST_COUNT
} metrics_hist_t;

void metrics_observe(metrics_hist_t h, uint64_t ns);
/* One answered HTTP request: its route, status (100..599) and time from its last byte read
 * to its answer being queued. */
void metrics_http(metrics_route_t route, int status, uint64_t ns);

/* Appends the counters and histograms of this module (HELP, TYPE, samples) to out. */
void metrics_write(buf_t *out);

/* For tests: every counter back to zero. */
void metrics_reset(void);

#endif
