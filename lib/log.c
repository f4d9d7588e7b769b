/* Logging: one formatted line per event, written with a single write(2) so threads do not
 * interleave. */
#include "config.h"

#include "lib/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lib/log_syslog.h"
#include "lib/timeutil.h"

static atomic_int log_level = LOG_INFO;
static atomic_int log_format = LOG_FORMAT_LOGFMT;
static atomic_int log_output = LOG_OUTPUT_STDERR;

void
log_set_level(log_level_t level)
{
	atomic_store(&log_level, (int)level);
}

void
log_set_format(log_format_t format)
{
	atomic_store(&log_format, (int)format);
}

void
log_set_output(log_output_t output)
{
	int old = atomic_exchange(&log_output, (int)output);

	if (old == (int)output)
		return;
	if (output == LOG_OUTPUT_SYSLOG)
		log_syslog_open();
	else
		log_syslog_close();
}

log_level_t
log_get_level(void)
{
	return (log_level_t)atomic_load_explicit(&log_level, memory_order_relaxed);
}

/* Appends s to out (capacity cap, position *pos) escaping quotes, backslashes and control bytes. */
static void
append_escaped(char *out, size_t cap, size_t *pos, const char *s)
{
	for (; *s != '\0' && *pos + 8 < cap; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\') {
			out[(*pos)++] = '\\';
			out[(*pos)++] = (char)c;
		} else if (c < 0x20 || c == 0x7f) {
			*pos += (size_t)snprintf(out + *pos, cap - *pos, "\\u%04x", c);
		} else {
			out[(*pos)++] = (char)c;
		}
	}
}

void
log_write(log_level_t level, const char *domain, const char *fmt, ...)
{
	static const char *const names[] = {"error", "warn", "info", "debug"};
	char msg[1024], line[2048], ts[40] = "";
	bool sys = atomic_load(&log_output) == LOG_OUTPUT_SYSLOG;
	size_t pos = 0;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (!sys)
		time_format_rfc3339(time_now_ns(), ts, sizeof(ts));
	if (atomic_load(&log_format) == LOG_FORMAT_JSON) {
		pos = (size_t)snprintf(
		    line, sizeof(line), "{%s%s%s\"level\":\"%s\",\"domain\":\"%s\",\"msg\":\"",
		    sys ? "" : "\"ts\":\"", ts, sys ? "" : "\",", names[level], domain);
		append_escaped(line, sizeof(line), &pos, msg);
		pos += (size_t)snprintf(line + pos, sizeof(line) - pos, "\"}\n");
	} else {
		pos = (size_t)snprintf(line, sizeof(line), "%s%s%slevel=%s domain=%s msg=\"",
				       sys ? "" : "ts=", ts, sys ? "" : " ", names[level], domain);
		append_escaped(line, sizeof(line), &pos, msg);
		pos += (size_t)snprintf(line + pos, sizeof(line) - pos, "\"\n");
	}
	if (pos > sizeof(line))
		pos = sizeof(line);
	if (sys) {
		log_syslog_send((int)level, line, pos - 1); /* without the newline */
		return;
	}
	if (write(STDERR_FILENO, line, pos) < 0) {
		/* Nothing sensible to do when stderr is gone. */
	}
}

bool
log_ratelimit_allow(log_ratelimit_t *rl)
{
	double now = (double)time_mono_ns() / 1e9;

	if (rl->last == 0) {
		rl->tokens = 10;
	} else {
		rl->tokens += now - rl->last;
		if (rl->tokens > 10)
			rl->tokens = 10;
	}
	rl->last = now;
	if (rl->tokens >= 1) {
		rl->tokens -= 1;
		return true;
	}
	rl->suppressed++;
	return false;
}
