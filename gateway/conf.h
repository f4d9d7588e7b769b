/* The configuration: one table of options with defaults and comments, loaded from a file of
 * `key = value` lines and overridden by `--set key=value`. */
#ifndef GATEWAY_CONF_H
#define GATEWAY_CONF_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "lib/log.h"

typedef struct {
	/* [store] */
	char *data_dir;
	uint64_t map_size;
	int store_writemap; /* CONF_ON or CONF_OFF */
	/* [mllp] */
	char *mllp_listen; /* comma-separated host:port list; empty disables */
	uint64_t mllp_max_frame_bytes;
	uint64_t mllp_idle_timeout_ms;
	uint64_t mllp_read_timeout_ms;
	uint64_t mllp_max_connections;
	uint64_t mllp_max_inflight;
	char *ack_application; /* MSH-3 of ACKs when the sender left MSH-5 empty */
	char *ack_facility;
	char *mllp_allow; /* peers allowed, addresses/CIDR separated by commas; empty: everyone */
	/* [mllp.tls] */
	char *mllp_tls_listen; /* TLS listeners ("secure MLLP"), host:port list; empty: none */
	char *mllp_tls_cert, *mllp_tls_key, *mllp_tls_ca;
	int mllp_tls_client_auth; /* tls_client_auth_t */
	char *mllp_tls_allow_subjects;
	/* [http] */
	char *http_listen; /* comma-separated host:port list; empty disables HTTP */
	uint64_t http_max_body_bytes;
	uint64_t http_max_inflight;
	uint64_t http_idle_timeout_ms;
	/* [http.tls] */
	char *http_tls_listen; /* HTTPS listeners, host:port list; empty: none */
	char *http_tls_cert, *http_tls_key, *http_tls_ca;
	int http_tls_client_auth; /* tls_client_auth_t */
	/* [io] */
	uint64_t io_threads; /* 0: cores minus one, at least one */
	/* [writer] */
	uint64_t writer_batch_max_messages;
	uint64_t writer_batch_max_bytes;
	uint64_t writer_batch_max_delay_us;
	uint64_t writer_queue_max;
	uint64_t writer_queue_max_bytes;
	uint64_t writer_apply_delay_us;
	int rest_consistent_reads; /* CONF_ON or CONF_OFF */
	uint64_t writer_apply_max_bytes;
	/* [hl7] */
	uint64_t hl7_max_message_bytes;
	uint64_t hl7_max_segments;
	uint64_t hl7_max_field_bytes;
	/* [mappings] */
	char *mappings_dir;      /* shipped mapping files */
	char *mappings_site_dir; /* site overrides and additions; empty: none */
	int mappings_unmapped;   /* CONF_UNMAPPED_ERROR or CONF_UNMAPPED_ACCEPT */
	uint64_t mappings_watch_ms;
	char *mappings_timezone; /* "" or an offset such as +0100 for DTMs without one */
	/* [audit] */
	int audit_rest;     /* CONF_AUDIT_REST_* */
	int audit_messages; /* CONF_OFF or CONF_ON */
	/* [auth] */
	int auth_enabled;       /* 0 false, 1 true */
	char *auth_clients;     /* JSON file of the registered clients */
	char *auth_signing_key; /* PEM private key of access tokens; "": ephemeral */
	char *auth_base_url;    /* public base URL; "": http:// + Host */
	uint64_t auth_token_lifetime_ms;
	uint64_t auth_clock_skew_ms;
	/* [import] */
	char *import_watch_dir; /* drop folder; empty: none */
	char *import_mapping;   /* the record map for files dropped there */
	uint64_t import_batch;
	/* [scoring] */
	char *scoring_models_dir; /* *.pmml + *.bind; empty: no scoring */
	/* [server] */
	uint64_t shutdown_timeout_ms;
	/* [log] */
	log_level_t log_level;
	log_format_t log_format;
	log_output_t log_output;
} config_t;

enum { CONF_UNMAPPED_ERROR = 0, CONF_UNMAPPED_ACCEPT = 1 };
enum { CONF_AUDIT_REST_ALL = 0, CONF_AUDIT_REST_WRITES = 1, CONF_AUDIT_REST_OFF = 2 };
enum { CONF_ON = 0, CONF_OFF = 1 };

/* Fills c with every default. */
void config_init(config_t *c);
void config_free(config_t *c);
/* Loads `key = value` lines; on error returns -FG_ECONFIG and *errmsg (caller owns) holds
 * "file:line: problem". Keys not in the table and bad values are errors. */
int config_load_file(config_t *c, const char *path, char **errmsg);
/* Sets one option from text, as a file line would; errmsg as above with "--set" as the file. */
int config_set(config_t *c, const char *key, const char *value, char **errmsg);
/* "key=value" form of config_set. */
int config_set_arg(config_t *c, const char *arg, char **errmsg);
/* Writes every option, with its comment and current value, as a loadable config file. */
void config_write(const config_t *c, FILE *f);

#endif
