/* Clocks and timestamp formatting. */
#include "config.h"

#include "lib/timeutil.h"

#include <stdio.h>
#include <time.h>

uint64_t
time_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t
time_mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t
time_cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void
split(uint64_t ns, struct tm *tm, unsigned *ms)
{
	time_t secs = (time_t)(ns / 1000000000u);

	gmtime_r(&secs, tm);
	*ms = (unsigned)((ns / 1000000u) % 1000u);
}

void
time_format_rfc3339(uint64_t ns, char *out, size_t cap)
{
	struct tm tm;
	unsigned ms;

	split(ns, &tm, &ms);
	snprintf(out, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ", tm.tm_year + 1900, tm.tm_mon + 1,
		 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
}

void
time_format_hl7(uint64_t ns, char *out, size_t cap)
{
	struct tm tm;
	unsigned ms;

	split(ns, &tm, &ms);
	snprintf(out, cap, "%04d%02d%02d%02d%02d%02d.%03u+0000", tm.tm_year + 1900, tm.tm_mon + 1,
		 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
}
