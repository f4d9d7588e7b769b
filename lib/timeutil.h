/* Clocks and timestamps. */
#ifndef LIB_TIMEUTIL_H
#define LIB_TIMEUTIL_H

#include <stddef.h>
#include <stdint.h>

/* Wall clock, nanoseconds since the Unix epoch. */
uint64_t time_now_ns(void);
/* Monotonic clock, nanoseconds. */
uint64_t time_mono_ns(void);
/* CPU time of the process (all its threads), nanoseconds. */
uint64_t time_cpu_ns(void);
/* "2026-11-22T17:27:59.123Z" into out (at least 32 bytes). */
void time_format_rfc3339(uint64_t ns, char *out, size_t cap);
/* HL7 DTM in UTC with milliseconds: "20261122172759.123+0000" (at least 24 bytes). */
void time_format_hl7(uint64_t ns, char *out, size_t cap);

#endif
