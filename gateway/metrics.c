/* Counters and histograms for /metrics. */
#include "config.h"

#include "gateway/metrics.h"

#include <stdatomic.h>
#include <stdio.h>

/* Upper bounds of the latency buckets, in seconds (the +Inf bucket is implicit). */
static const double bucket_le[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
				   0.025,  0.05,    0.1,    0.25,  0.5,    1,     2.5};
#define NBUCKETS (sizeof(bucket_le) / sizeof(bucket_le[0]))

typedef struct {
	_Atomic uint64_t bucket[NBUCKETS + 1]; /* non-cumulative; the last is +Inf */
	_Atomic uint64_t count;
	_Atomic uint64_t sum_ns;
} hist_t;

#define STATUS_MIN 100
#define STATUS_MAX 599

static hist_t hists[METRICS_HIST_COUNT];
static hist_t http_hist[METRICS_ROUTE_COUNT];
static _Atomic uint64_t http_status[METRICS_ROUTE_COUNT][STATUS_MAX - STATUS_MIN + 1];

static const char *const route_names[METRICS_ROUTE_COUNT] = {
    [METRICS_ROUTE_OTHER] = "other",
    [METRICS_ROUTE_METADATA] = "metadata",
    [METRICS_ROUTE_READ] = "read",
    [METRICS_ROUTE_SEARCH] = "search",
    [METRICS_ROUTE_HISTORY] = "history",
    [METRICS_ROUTE_CREATE] = "create",
    [METRICS_ROUTE_UPDATE] = "update",
    [METRICS_ROUTE_PATCH] = "patch",
    [METRICS_ROUTE_DELETE] = "delete",
    [METRICS_ROUTE_BUNDLE] = "bundle",
    [METRICS_ROUTE_OPERATION] = "operation",
    [METRICS_ROUTE_AUTH] = "auth",
    [METRICS_ROUTE_OPS] = "ops",
};

static const struct {
	const char *name, *help;
} hist_info[METRICS_HIST_COUNT] = {
    [METRICS_HIST_CONVERT] = {"fhirgate_conversion_seconds",
			      "Parsing and mapping one HL7 v2 message (I/O thread)."},
    [METRICS_HIST_COMMIT] = {"fhirgate_commit_seconds",
			     "One group-commit write transaction, from begin to durable commit."},
    [METRICS_HIST_APPLY] = {"fhirgate_apply_seconds",
			    "One deferred apply: the resources and index entries of the messages "
			    "committed since the last one, made in one write transaction."},
};

const char *
metrics_route_name(metrics_route_t r)
{
	return (unsigned)r < METRICS_ROUTE_COUNT ? route_names[r] : "other";
}

static void
hist_add(hist_t *h, uint64_t ns)
{
	double s = (double)ns / 1e9;
	size_t i = 0;

	while (i < NBUCKETS && s > bucket_le[i])
		i++;
	atomic_fetch_add_explicit(&h->bucket[i], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&h->sum_ns, ns, memory_order_relaxed);
}

void
metrics_observe(metrics_hist_t h, uint64_t ns)
{
	if ((unsigned)h < METRICS_HIST_COUNT)
		hist_add(&hists[h], ns);
}

void
metrics_http(metrics_route_t route, int status, uint64_t ns)
{
	if ((unsigned)route >= METRICS_ROUTE_COUNT)
		route = METRICS_ROUTE_OTHER;
	if (status < STATUS_MIN || status > STATUS_MAX)
		return;
	atomic_fetch_add_explicit(&http_status[route][status - STATUS_MIN], 1,
				  memory_order_relaxed);
	hist_add(&http_hist[route], ns);
}

/* One histogram's samples; label is "" or `route="read"`. */
static void
hist_write(buf_t *out, const char *name, const char *label, hist_t *h)
{
	const char *sep = label[0] != '\0' ? "," : "";
	uint64_t cum = 0;

	for (size_t i = 0; i <= NBUCKETS; i++) {
		cum += atomic_load_explicit(&h->bucket[i], memory_order_relaxed);
		if (i < NBUCKETS)
			buf_printf(out, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, label, sep,
				   bucket_le[i], (unsigned long long)cum);
		else
			buf_printf(out, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, label, sep,
				   (unsigned long long)cum);
	}
	/* _count is the +Inf bucket, so the two agree even while samples arrive. */
	if (label[0] != '\0') {
		buf_printf(out, "%s_sum{%s} %.9f\n%s_count{%s} %llu\n", name, label,
			   (double)atomic_load_explicit(&h->sum_ns, memory_order_relaxed) / 1e9,
			   name, label, (unsigned long long)cum);
	} else {
		buf_printf(out, "%s_sum %.9f\n%s_count %llu\n", name,
			   (double)atomic_load_explicit(&h->sum_ns, memory_order_relaxed) / 1e9,
			   name, (unsigned long long)cum);
	}
}

void
metrics_write(buf_t *out)
{
	char label[64];

	for (int h = 0; h < METRICS_HIST_COUNT; h++) {
		buf_printf(out, "# HELP %s %s\n# TYPE %s histogram\n", hist_info[h].name,
			   hist_info[h].help, hist_info[h].name);
		hist_write(out, hist_info[h].name, "", &hists[h]);
	}
	buf_printf(out, "# HELP fhirgate_http_requests_total HTTP requests answered, by route and "
			"status.\n# TYPE fhirgate_http_requests_total counter\n");
	for (int r = 0; r < METRICS_ROUTE_COUNT; r++)
		for (int st = STATUS_MIN; st <= STATUS_MAX; st++) {
			uint64_t n = atomic_load_explicit(&http_status[r][st - STATUS_MIN],
							  memory_order_relaxed);

			if (n != 0)
				buf_printf(
				    out,
				    "fhirgate_http_requests_total{route=\"%s\",status=\"%d\"} "
				    "%llu\n",
				    route_names[r], st, (unsigned long long)n);
		}
	buf_printf(out, "# HELP fhirgate_http_request_seconds Time from a request's last byte "
			"to its answer, by route.\n# TYPE fhirgate_http_request_seconds "
			"histogram\n");
	for (int r = 0; r < METRICS_ROUTE_COUNT; r++) {
		if (atomic_load_explicit(&http_hist[r].count, memory_order_relaxed) == 0)
			continue;
		snprintf(label, sizeof(label), "route=\"%s\"", route_names[r]);
		hist_write(out, "fhirgate_http_request_seconds", label, &http_hist[r]);
	}
}

static void
hist_reset(hist_t *h)
{
	for (size_t i = 0; i <= NBUCKETS; i++)
		atomic_store(&h->bucket[i], 0);
	atomic_store(&h->count, 0);
	atomic_store(&h->sum_ns, 0);
}

void
metrics_reset(void)
{
	for (int h = 0; h < METRICS_HIST_COUNT; h++)
		hist_reset(&hists[h]);
	for (int r = 0; r < METRICS_ROUTE_COUNT; r++) {
		hist_reset(&http_hist[r]);
		for (int st = STATUS_MIN; st <= STATUS_MAX; st++)
			atomic_store(&http_status[r][st - STATUS_MIN], 0);
	}
}
