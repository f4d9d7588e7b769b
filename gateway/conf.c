/* The configuration table: every option once, with its type, default and comment. */
#include "config.h"

#include "gateway/conf.h"

#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"
#include "lib/cidr.h"
#include "lib/err.h"
#include "lib/slice.h"
#include "lib/xalloc.h"

typedef enum {
	OPT_STRING,
	OPT_SIZE,
	OPT_COUNT,
	OPT_MS,
	OPT_US,
	OPT_CHOICE, /* one word of opt_t.choices, stored as its index (an enum) */
	OPT_TZ,
	OPT_CIDR, /* a string that must parse as an address allow-list (lib/cidr.h) */
} opt_type_t;

typedef struct {
	const char *key;
	opt_type_t type;
	size_t offset;
	const char *def;
	const char *comment;
	uint64_t min, max;          /* numeric range after unit conversion */
	const char *const *choices; /* OPT_CHOICE: the words, NULL-ended, in enum order */
} opt_t;

/* In the order of log_level_t, log_format_t, log_output_t and CONF_UNMAPPED_*. */
static const char *const log_levels[] = {"error", "warn", "info", "debug", NULL};
static const char *const log_formats[] = {"logfmt", "json", NULL};
static const char *const log_outputs[] = {"stderr", "syslog", NULL};
static const char *const unmapped_modes[] = {"error", "accept", NULL};
static const char *const audit_rest_modes[] = {"all", "writes", "off", NULL};
static const char *const on_off[] = {"on", "off", NULL};
/* In the order of tls_client_auth_t. */
static const char *const client_auth_modes[] = {"none", "optional", "require", NULL};
static const char *const booleans[] = {"false", "true", NULL};

#define OFF(f) offsetof(config_t, f)
#define GiB    (1024ull * 1024 * 1024)

static const opt_t options[] = {
    {"store.data_dir", OPT_STRING, OFF(data_dir), "./var/fhirgate",
     "Directory of the LMDB environment (created when absent).", 0, 0, NULL},
    {"store.map_size", OPT_SIZE, OFF(map_size), "16G",
     "Largest size the store may grow to (address space, not disk, until used).", 1 << 20,
     1024 * GiB, NULL},
    {"store.writemap", OPT_CHOICE, OFF(store_writemap), "off",
     "Write pages through heap copies that LMDB keeps as large as the biggest transaction (off: "
     "faster commits, and a stray pointer cannot write into the store), or straight into the "
     "map (on: less heap; each commit's write-back costs a TLB shootdown per page).",
     0, 0, on_off},
    {"mllp.listen", OPT_STRING, OFF(mllp_listen), "127.0.0.1:2575",
     "MLLP listeners, host:port separated by commas; empty disables MLLP.", 0, 0, NULL},
    {"mllp.max_frame_bytes", OPT_SIZE, OFF(mllp_max_frame_bytes), "16M",
     "Largest MLLP frame accepted; a larger one is answered AR and dead-lettered.", 64,
     1024ull << 20, NULL},
    {"mllp.idle_timeout", OPT_MS, OFF(mllp_idle_timeout_ms), "300s",
     "Close a connection after this long without a byte; 0 never.", 0, 86400000, NULL},
    {"mllp.read_timeout", OPT_MS, OFF(mllp_read_timeout_ms), "30s",
     "Close a connection whose started frame is not completed within this time; 0 never.", 0,
     86400000, NULL},
    {"mllp.max_connections", OPT_COUNT, OFF(mllp_max_connections), "1024",
     "Connections (MLLP and HTTP together) per I/O thread; further ones wait in the kernel's "
     "accept queue.",
     1, 1000000, NULL},
    {"mllp.max_inflight", OPT_COUNT, OFF(mllp_max_inflight), "128",
     "Messages per connection read but not yet ACKed; past this, reading pauses.", 1, 100000, NULL},
    {"mllp.ack_application", OPT_STRING, OFF(ack_application), "FHIRGATE",
     "MSH-3 of ACKs when the sender left MSH-5 empty.", 0, 0, NULL},
    {"mllp.ack_facility", OPT_STRING, OFF(ack_facility), "",
     "MSH-4 of ACKs when the sender left MSH-6 empty.", 0, 0, NULL},
    {"mllp.allow", OPT_CIDR, OFF(mllp_allow), "",
     "Peers allowed to connect to the MLLP listeners (plain and TLS): addresses or "
     "address/prefix (10.0.0.0/8, 192.168.1.20, ::1, fd00::/8) separated by commas; others are "
     "closed at accept. Empty: everyone.",
     0, 0, NULL},
    {"mllp.tls.listen", OPT_STRING, OFF(mllp_tls_listen), "",
     "TLS (secure MLLP) listeners, host:port separated by commas, next to the plain ones of "
     "mllp.listen; empty: none. Needs mllp.tls.cert and mllp.tls.key (docs/tls.md).",
     0, 0, NULL},
    {"mllp.tls.cert", OPT_STRING, OFF(mllp_tls_cert), "",
     "PEM file with the server certificate of the MLLP TLS listeners, then its chain; reread on "
     "SIGHUP.",
     0, 0, NULL},
    {"mllp.tls.key", OPT_STRING, OFF(mllp_tls_key), "",
     "PEM file with the private key of mllp.tls.cert (not encrypted); reread on SIGHUP.", 0, 0,
     NULL},
    {"mllp.tls.ca", OPT_STRING, OFF(mllp_tls_ca), "",
     "PEM file of the CA certificates client certificates must chain to (mutual TLS).", 0, 0, NULL},
    {"mllp.tls.client_auth", OPT_CHOICE, OFF(mllp_tls_client_auth), "none",
     "Client certificates on the MLLP TLS listeners: none, optional (verified when sent) or "
     "require.",
     0, 0, client_auth_modes},
    {"mllp.tls.allow_subjects", OPT_STRING, OFF(mllp_tls_allow_subjects), "",
     "Client certificate subjects allowed, separated by ';': a common name (lab-analyzer) or a "
     "whole RFC 2253 DN (CN=lab-analyzer,O=Hospital,C=DE), case-insensitive; others are closed "
     "after the handshake. Empty: every verified certificate.",
     0, 0, NULL},
    {"http.listen", OPT_STRING, OFF(http_listen), "127.0.0.1:8080",
     "HTTP listeners for the FHIR REST API (base /fhir), host:port separated by commas; empty "
     "disables HTTP.",
     0, 0, NULL},
    {"http.max_body_bytes", OPT_SIZE, OFF(http_max_body_bytes), "16M",
     "Largest request body; a larger one is answered 413.", 1024, 1024ull << 20, NULL},
    {"http.max_inflight", OPT_COUNT, OFF(http_max_inflight), "16",
     "Pipelined requests per connection read but not yet answered; past this, reading pauses.", 1,
     10000, NULL},
    {"http.idle_timeout", OPT_MS, OFF(http_idle_timeout_ms), "60s",
     "Close a keep-alive connection after this long without a request; 0 never.", 0, 86400000,
     NULL},
    {"http.tls.listen", OPT_STRING, OFF(http_tls_listen), "",
     "HTTPS listeners for the FHIR REST API, host:port separated by commas, next to the plain "
     "ones of http.listen; empty: none. Needs http.tls.cert and http.tls.key.",
     0, 0, NULL},
    {"http.tls.cert", OPT_STRING, OFF(http_tls_cert), "",
     "PEM file with the server certificate of the HTTPS listeners, then its chain; reread on "
     "SIGHUP.",
     0, 0, NULL},
    {"http.tls.key", OPT_STRING, OFF(http_tls_key), "",
     "PEM file with the private key of http.tls.cert (not encrypted); reread on SIGHUP.", 0, 0,
     NULL},
    {"http.tls.ca", OPT_STRING, OFF(http_tls_ca), "",
     "PEM file of the CA certificates client certificates must chain to (mutual TLS).", 0, 0, NULL},
    {"http.tls.client_auth", OPT_CHOICE, OFF(http_tls_client_auth), "none",
     "Client certificates on the HTTPS listeners: none, optional (verified when sent) or "
     "require.",
     0, 0, client_auth_modes},
    {"io.threads", OPT_COUNT, OFF(io_threads), "0",
     "I/O threads (each with its own event loop and SO_REUSEPORT listeners); 0: cores minus one, "
     "at least one.",
     0, 256, NULL},
    {"writer.batch_max_messages", OPT_COUNT, OFF(writer_batch_max_messages), "1024",
     "Most messages committed in one LMDB write transaction (group commit).", 1, 1000000, NULL},
    {"writer.batch_max_bytes", OPT_SIZE, OFF(writer_batch_max_bytes), "32M",
     "Most bytes (of the jobs' messages, bodies and parsed data) committed in one write "
     "transaction.",
     1024, 1024ull << 20, NULL},
    {"writer.batch_max_delay", OPT_US, OFF(writer_batch_max_delay_us), "0ms",
     "How long the writer may wait for more messages before committing a batch; 0 commits "
     "what is queued at once (batches still form while a commit runs).",
     0, 1000000, NULL},
    {"writer.queue_max", OPT_COUNT, OFF(writer_queue_max), "8192",
     "Jobs (messages, REST writes) waiting for the writer; when full, MLLP reads pause and "
     "HTTP writes get 503 with Retry-After.",
     16, 10000000, NULL},
    {"writer.queue_max_bytes", OPT_SIZE, OFF(writer_queue_max_bytes), "256M",
     "Memory held by jobs waiting for the writer (messages, REST bodies and their parsed "
     "data); past it the queue counts as full.",
     1024 * 1024, 64ull << 30, NULL},
    {"writer.apply_delay", OPT_US, OFF(writer_apply_delay_us), "500ms",
     "Deferred apply: an MLLP message's resources and search index entries are stored durably "
     "with it before its AA, and made readable and searchable in one sorted bulk load of "
     "everything that waits, at most this long after (sooner when a REST write or the memory "
     "bound needs them). 0: each message's resources are made in its own group commit "
     "(readable at once, far slower).",
     0, 60000000, NULL},
    {"rest.consistent_reads", OPT_CHOICE, OFF(rest_consistent_reads), "on",
     "on: a REST read or search waits, when MLLP messages already ACKed have resources not "
     "applied yet (writer.apply_delay), for them to be applied first, so it sees every ACKed "
     "message; off: it answers at once from what is applied.",
     0, 0, on_off},
    {"writer.apply_max_bytes", OPT_SIZE, OFF(writer_apply_max_bytes), "64M",
     "Memory for the resource puts waiting for the deferred apply; when full they are made at "
     "once.",
     1024 * 1024, 16ull << 30, NULL},
    {"hl7.max_message_bytes", OPT_SIZE, OFF(hl7_max_message_bytes), "16M",
     "Largest HL7 v2 message parsed.", 64, 1024ull << 20, NULL},
    {"hl7.max_segments", OPT_COUNT, OFF(hl7_max_segments), "10000", "Most segments in one message.",
     1, 10000000, NULL},
    {"hl7.max_field_bytes", OPT_SIZE, OFF(hl7_max_field_bytes), "8M",
     "Longest field (all repetitions), e.g. an embedded base64 document.", 16, 1024ull << 20, NULL},
    {"mappings.dir", OPT_STRING, OFF(mappings_dir), "mappings/hl7v2",
     "Folder of the shipped HL7 v2 -> FHIR mapping files (docs/mapping-language.md); empty: "
     "messages are stored without being converted.",
     0, 0, NULL},
    {"mappings.site_dir", OPT_STRING, OFF(mappings_site_dir), "",
     "Folder of site mapping files that override (same path) or extend the shipped ones; "
     "empty: none.",
     0, 0, NULL},
    {"mappings.unmapped", OPT_CHOICE, OFF(mappings_unmapped), "error",
     "A message with no map, or whose mapping fails: 'error' ACKs AE, 'accept' ACKs AA with a "
     "warning; both keep the message and a dead letter for replay.",
     0, 0, unmapped_modes},
    {"mappings.watch_interval", OPT_MS, OFF(mappings_watch_ms), "2s",
     "How often the server looks for changed mapping files and reloads them; 0: only on SIGHUP.", 0,
     3600000, NULL},
    {"mappings.timezone", OPT_TZ, OFF(mappings_timezone), "",
     "UTC offset (+HHMM or -HHMM) for HL7 times that carry none; empty: such times keep only "
     "their date (and instants are left out), with a warning.",
     0, 0, NULL},
    {"audit.rest", OPT_CHOICE, OFF(audit_rest), "all",
     "AuditEvents for FHIR REST requests: all, writes (create, update, patch, delete, "
     "transactions, operations) or off.",
     0, 0, audit_rest_modes},
    {"audit.messages", OPT_CHOICE, OFF(audit_messages), "on",
     "An AuditEvent for every HL7 v2 message received, in the message's own transaction: on "
     "or off.",
     0, 0, on_off},
    {"auth.enabled", OPT_CHOICE, OFF(auth_enabled), "false",
     "SMART Backend Services authorization of the FHIR API (docs/auth.md). false: no token is "
     "needed, and then every http.listen address must be loopback (protected mode).",
     0, 0, booleans},
    {"auth.clients", OPT_STRING, OFF(auth_clients), "",
     "JSON file of the registered clients: client_id, jwks or jwks_file, allowed scope, "
     "optional patient.",
     0, 0, NULL},
    {"auth.signing_key", OPT_STRING, OFF(auth_signing_key), "",
     "PEM private key (EC P-384 or RSA) that signs access tokens; empty: an ephemeral key made "
     "at start (tokens then die with the process).",
     0, 0, NULL},
    {"auth.base_url", OPT_STRING, OFF(auth_base_url), "",
     "Public base URL (https://fhir.example.org): the issuer, the token endpoint is "
     "<base>/auth/token and the audience <base>/fhir; empty: http:// and the request's Host.",
     0, 0, NULL},
    {"auth.token_lifetime", OPT_MS, OFF(auth_token_lifetime_ms), "5m",
     "Lifetime of the access tokens the token endpoint issues.", 10000, 3600000, NULL},
    {"auth.clock_skew", OPT_MS, OFF(auth_clock_skew_ms), "60s",
     "Clock difference tolerated when checking exp, nbf and iat of assertions and tokens.", 0,
     300000, NULL},
    {"import.watch_dir", OPT_STRING, OFF(import_watch_dir), "",
     "Drop folder: files put there are imported (HL7 v2 files *.hl7/*.er7 through the v2 maps, "
     "others through import.mapping), then moved to done/ or failed/ (docs/import.md); empty: "
     "none.",
     0, 0, NULL},
    {"import.mapping", OPT_STRING, OFF(import_mapping), "",
     "The record map for the files of import.watch_dir that are not HL7 v2.", 0, 0, NULL},
    {"import.batch", OPT_COUNT, OFF(import_batch), "1000",
     "Records per transaction for the drop folder's imports (small: a live MLLP feed shares the "
     "store's write lock).",
     1, 1000000, NULL},
    {"scoring.models_dir", OPT_STRING, OFF(scoring_models_dir), "etc/models",
     "Folder of risk models: every NAME.pmml with its binding NAME.bind (docs/scoring.md); "
     "reloaded on SIGHUP and when a file changes (mappings.watch_interval); empty: no scoring.",
     0, 0, NULL},
    {"server.shutdown_timeout", OPT_MS, OFF(shutdown_timeout_ms), "10s",
     "On SIGTERM, how long to wait for in-flight messages to be committed and ACKed.", 0, 3600000,
     NULL},
    {"log.level", OPT_CHOICE, OFF(log_level), "info",
     "error, warn, info or debug. Patient data is logged at debug only.", 0, 0, log_levels},
    {"log.format", OPT_CHOICE, OFF(log_format), "logfmt", "logfmt or json.", 0, 0, log_formats},
    {"log.output", OPT_CHOICE, OFF(log_output), "stderr",
     "stderr, or syslog (facility daemon; the system logger adds the time).", 0, 0, log_outputs},
};

#define N_OPTIONS (sizeof(options) / sizeof(options[0]))

static const opt_t *
opt_find(const char *key)
{
	for (size_t i = 0; i < N_OPTIONS; i++)
		if (strcmp(options[i].key, key) == 0)
			return &options[i];
	return NULL;
}

struct unit {
	const char *suffix;
	uint64_t mult;
};

/* Parses a number with an optional unit into *out (scaled by the unit table). */
static bool
parse_scaled(const char *s, const struct unit *units, uint64_t *out)
{
	uint64_t v = 0;
	const char *p = s;

	if (!isdigit((unsigned char)*p))
		return false;
	while (isdigit((unsigned char)*p)) {
		unsigned d = (unsigned)(*p - '0');

		if (v > (UINT64_MAX - d) / 10)
			return false;
		v = v * 10 + d;
		p++;
	}
	for (const struct unit *u = units; u->suffix != NULL; u++) {
		if (strcmp(p, u->suffix) == 0) {
			if (u->mult != 0 && v > UINT64_MAX / u->mult)
				return false;
			*out = v * u->mult;
			return true;
		}
	}
	return false;
}

static const struct unit size_units[] = {{"", 1},      {"B", 1},           {"K", 1024},
					 {"KB", 1024}, {"M", 1024 * 1024}, {"MB", 1024 * 1024},
					 {"G", GiB},   {"GB", GiB},        {NULL, 0}};
static const struct unit ms_units[] = {
    {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {NULL, 0}};
static const struct unit us_units[] = {{"us", 1}, {"ms", 1000}, {"s", 1000000}, {NULL, 0}};
static const struct unit count_units[] = {{"", 1}, {NULL, 0}};

static int
opt_apply(config_t *c, const opt_t *o, const char *value, char **why)
{
	char *field = (char *)c + o->offset;
	const struct unit *units = NULL;
	uint64_t v;

	switch (o->type) {
	case OPT_STRING:
		free(*(char **)field);
		*(char **)field = xstrdup(value);
		return 0;
	case OPT_CHOICE: {
		buf_t words = BUF_INIT;

		for (int i = 0; o->choices[i] != NULL; i++) {
			if (strcmp(value, o->choices[i]) == 0) {
				*(int *)field = i;
				return 0;
			}
		}
		for (int i = 0; o->choices[i] != NULL; i++)
			buf_printf(&words, "%s%s", i ? ", " : "", o->choices[i]);
		*why = xasprintf("'%s' is not one of %s", value, words.data);
		buf_free(&words);
		return -FG_ECONFIG;
	}
	case OPT_TZ:
		if (value[0] != '\0' &&
		    (strlen(value) != 5 || (value[0] != '+' && value[0] != '-') ||
		     strspn(value + 1, "0123456789") != 4 ||
		     (value[1] - '0') * 10 + value[2] - '0' > 14 ||
		     (value[3] - '0') * 10 + value[4] - '0' > 59)) {
			*why = xasprintf("'%s' is not an offset such as +0100 or -0500", value);
			return -FG_ECONFIG;
		}
		free(*(char **)field);
		*(char **)field = xstrdup(value);
		return 0;
	case OPT_CIDR: {
		cidr_list_t *l = NULL;

		if (cidr_list_parse(value, &l, why) < 0)
			return -FG_ECONFIG;
		cidr_list_free(l);
		free(*(char **)field);
		*(char **)field = xstrdup(value);
		return 0;
	}
	case OPT_SIZE:
		units = size_units;
		break;
	case OPT_COUNT:
		units = count_units;
		break;
	case OPT_MS:
		units = ms_units;
		break;
	case OPT_US:
		units = us_units;
		break;
	}
	if (!parse_scaled(value, units, &v)) {
		static const char *const hints[] = {
		    [OPT_SIZE] = "a size such as 512K, 16M, 2G",
		    [OPT_COUNT] = "a whole number",
		    [OPT_MS] = "a duration such as 500ms, 30s, 5m",
		    [OPT_US] = "a duration such as 200us, 2ms",
		};

		*why = xasprintf("'%s' is not %s", value, hints[o->type]);
		return -FG_ECONFIG;
	}
	if (v < o->min || v > o->max) {
		*why = xasprintf("'%s' is out of range for %s", value, o->key);
		return -FG_ECONFIG;
	}
	*(uint64_t *)field = v;
	return 0;
}

void
config_init(config_t *c)
{
	memset(c, 0, sizeof(*c));
	for (size_t i = 0; i < N_OPTIONS; i++) {
		char *why = NULL;

		if (opt_apply(c, &options[i], options[i].def, &why) < 0)
			abort(); /* a bad built-in default is a programming error */
	}
}

void
config_free(config_t *c)
{
	for (size_t i = 0; i < N_OPTIONS; i++) {
		if (options[i].type == OPT_STRING || options[i].type == OPT_TZ ||
		    options[i].type == OPT_CIDR) {
			char **p = (char **)((char *)c + options[i].offset);

			free(*p);
			*p = NULL;
		}
	}
}

static int
config_set_at(config_t *c, const char *file, size_t line, const char *key, const char *value,
	      char **errmsg)
{
	const opt_t *o = opt_find(key);
	char *why = NULL;
	int rc;

	if (o == NULL) {
		*errmsg = line ? xasprintf("%s:%zu: unknown key '%s'", file, line, key)
			       : xasprintf("%s: unknown key '%s'", file, key);
		return -FG_ECONFIG;
	}
	rc = opt_apply(c, o, value, &why);
	if (rc < 0) {
		*errmsg = line ? xasprintf("%s:%zu: %s: %s", file, line, key, why)
			       : xasprintf("%s: %s: %s", file, key, why);
		free(why);
	}
	return rc;
}

int
config_set(config_t *c, const char *key, const char *value, char **errmsg)
{
	return config_set_at(c, "--set", 0, key, value, errmsg);
}

int
config_set_arg(config_t *c, const char *arg, char **errmsg)
{
	const char *eq = strchr(arg, '=');
	char *key;
	int rc;

	if (eq == NULL) {
		*errmsg = xasprintf("--set: expected key=value, got '%s'", arg);
		return -FG_ECONFIG;
	}
	key = xmemdup0(arg, (size_t)(eq - arg));
	rc = config_set(c, key, eq + 1, errmsg);
	free(key);
	return rc;
}

/* Strips an optional pair of double quotes around a value. */
static slice_t
unquote(slice_t v)
{
	if (v.len >= 2 && v.ptr[0] == '"' && v.ptr[v.len - 1] == '"')
		return slice_make(v.ptr + 1, v.len - 2);
	return v;
}

int
config_load_file(config_t *c, const char *path, char **errmsg)
{
	FILE *f = fopen(path, "r");
	char line[4096];
	size_t lineno = 0;
	int rc = 0;

	if (f == NULL) {
		*errmsg = xasprintf("%s: %s", path, strerror(errno));
		return -FG_ECONFIG;
	}
	while (rc == 0 && fgets(line, sizeof(line), f) != NULL) {
		slice_t s, key, value;
		const char *eq;
		char *k, *v;

		lineno++;
		if (strchr(line, '\n') == NULL && !feof(f)) {
			*errmsg = xasprintf("%s:%zu: line too long", path, lineno);
			rc = -FG_ECONFIG;
			break;
		}
		s = slice_trim(slice_cstr(line));
		if (s.len == 0 || s.ptr[0] == '#')
			continue;
		eq = memchr(s.ptr, '=', s.len);
		if (eq == NULL) {
			*errmsg = xasprintf("%s:%zu: expected 'key = value'", path, lineno);
			rc = -FG_ECONFIG;
			break;
		}
		key = slice_trim(slice_make(s.ptr, (size_t)(eq - s.ptr)));
		value = unquote(slice_trim(slice_make(eq + 1, s.len - (size_t)(eq - s.ptr) - 1)));
		k = xmemdup0(key.ptr, key.len);
		v = xmemdup0(value.ptr, value.len);
		rc = config_set_at(c, path, lineno, k, v, errmsg);
		free(k);
		free(v);
	}
	fclose(f);
	return rc;
}

static void
opt_format(const config_t *c, const opt_t *o, buf_t *out)
{
	const char *field = (const char *)c + o->offset;
	uint64_t v;

	switch (o->type) {
	case OPT_STRING:
	case OPT_TZ:
	case OPT_CIDR:
		buf_printf(out, "\"%s\"", *(char *const *)field ? *(char *const *)field : "");
		return;
	case OPT_CHOICE:
		buf_append_cstr(out, o->choices[*(const int *)field]);
		return;
	default:
		break;
	}
	v = *(const uint64_t *)field;
	if (o->type == OPT_SIZE) {
		if (v != 0 && v % GiB == 0)
			buf_printf(out, "%lluG", (unsigned long long)(v / GiB));
		else if (v != 0 && v % (1 << 20) == 0)
			buf_printf(out, "%lluM", (unsigned long long)(v >> 20));
		else if (v != 0 && v % 1024 == 0)
			buf_printf(out, "%lluK", (unsigned long long)(v >> 10));
		else
			buf_printf(out, "%llu", (unsigned long long)v);
	} else if (o->type == OPT_MS) {
		if (v != 0 && v % 1000 == 0)
			buf_printf(out, "%llus", (unsigned long long)(v / 1000));
		else
			buf_printf(out, "%llums", (unsigned long long)v);
	} else if (o->type == OPT_US) {
		if (v % 1000 == 0)
			buf_printf(out, "%llums", (unsigned long long)(v / 1000));
		else
			buf_printf(out, "%lluus", (unsigned long long)v);
	} else {
		buf_printf(out, "%llu", (unsigned long long)v);
	}
}

void
config_write(const config_t *c, FILE *f)
{
	const char *section = "";

	fprintf(f,
		"# fhirgate configuration: `key = value`, one per line; '#' starts a comment.\n"
		"# Sizes take K, M, G; durations us, ms, s, m, h. Every option is listed with its\n"
		"# default. Override any of them with `--set key=value`.\n");
	for (size_t i = 0; i < N_OPTIONS; i++) {
		const opt_t *o = &options[i];
		const char *dot = strchr(o->key, '.');
		buf_t v = BUF_INIT;

		if (strncmp(section, o->key, (size_t)(dot - o->key)) != 0 ||
		    section[dot - o->key] != '.') {
			fprintf(f, "\n# --- %.*s ---\n", (int)(dot - o->key), o->key);
			section = o->key;
		}
		opt_format(c, o, &v);
		fprintf(f, "\n# %s\n%s = %s\n", o->comment, o->key, v.data);
		buf_free(&v);
	}
}
