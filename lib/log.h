/* Leveled, domain-tagged logging to stderr or syslog, one line per event (logfmt or JSON).
 * Never pass patient data (message bodies, names, identifiers) above LOG_DEBUG. */
#ifndef LIB_LOG_H
#define LIB_LOG_H

#include <stdbool.h>

typedef enum { LOG_ERROR = 0, LOG_WARN = 1, LOG_INFO = 2, LOG_DEBUG = 3 } log_level_t;
typedef enum { LOG_FORMAT_LOGFMT = 0, LOG_FORMAT_JSON = 1 } log_format_t;
typedef enum { LOG_OUTPUT_STDERR = 0, LOG_OUTPUT_SYSLOG = 1 } log_output_t;

void log_set_level(log_level_t level);
void log_set_format(log_format_t format);
/* stderr (with a timestamp) or syslog (facility daemon; the logger adds the time). */
void log_set_output(log_output_t output);
log_level_t log_get_level(void);

/* The free text is escaped (control characters as \xNN); keep it short and data-free. */
void log_write(log_level_t level, const char *domain, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_enabled(lvl) ((lvl) <= log_get_level())
#define LOG(lvl, dom, ...)                                    \
	do {                                                  \
		if (log_enabled(lvl))                         \
			log_write((lvl), (dom), __VA_ARGS__); \
	} while (0)
#define log_error(dom, ...) LOG(LOG_ERROR, dom, __VA_ARGS__)
#define log_warn(dom, ...)  LOG(LOG_WARN, dom, __VA_ARGS__)
#define log_info(dom, ...)  LOG(LOG_INFO, dom, __VA_ARGS__)
#define log_debug(dom, ...) LOG(LOG_DEBUG, dom, __VA_ARGS__)

/* A token bucket for rate-limiting repeated messages (per peer, per kind). */
typedef struct {
	double tokens;
	double last; /* seconds, monotonic */
	unsigned suppressed;
} log_ratelimit_t;

/* True when a line may be written now (burst 10, then 1 per second); counts what it suppresses. */
bool log_ratelimit_allow(log_ratelimit_t *rl);

#endif
