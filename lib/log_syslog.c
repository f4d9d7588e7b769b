/* syslog(3) output for lib/log. */
#include "config.h"

#include "lib/log_syslog.h"

#include <syslog.h>

void
log_syslog_open(void)
{
	openlog("fhirgate", LOG_PID | LOG_NDELAY, LOG_DAEMON);
}

void
log_syslog_close(void)
{
	closelog();
}

void
log_syslog_send(int level, const char *line, size_t len)
{
	static const int prio[] = {LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG};

	syslog(prio[level < 0 ? 0 : level > 3 ? 3 : level], "%.*s", (int)len, line);
}
