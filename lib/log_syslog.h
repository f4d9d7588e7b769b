/* The syslog(3) side of lib/log, in its own file because <syslog.h> defines LOG_INFO and
 * LOG_DEBUG as macros that clash with lib/log.h's levels. */
#ifndef LIB_LOG_SYSLOG_H
#define LIB_LOG_SYSLOG_H

#include <stddef.h>

/* Opens the connection to the system logger (facility daemon, ident "fhirgate", with the pid). */
void log_syslog_open(void);
void log_syslog_close(void);
/* Sends one line; level is lib/log's level number (0 error .. 3 debug). */
void log_syslog_send(int level, const char *line, size_t len);

#endif
