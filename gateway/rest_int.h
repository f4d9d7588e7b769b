/* Internals shared by the REST modules: the request context, the write jobs handed to the
 * writer thread, and the helpers every interaction uses (outcomes, resource output, meta). */
#ifndef GATEWAY_REST_INT_H
#define GATEWAY_REST_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "fhir/tree.h"
#include "gateway/audit.h"
#include "gateway/auth.h"
#include "gateway/maps.h"
#include "gateway/metrics.h"
#include "gateway/rest.h"
#include "lib/arena.h"
#include "lib/slice.h"

#define REST_COUNT_DEFAULT 50
#define REST_COUNT_MAX     1000  /* _count cap */
#define REST_BUNDLE_MAX    10000 /* entries in a batch or transaction */
#define REST_ID_HEX        32    /* server-assigned ids: 16 random bytes in hex */

typedef struct rest_job rest_job_t;

/* What a request is: the metrics' route and the audit trail's interaction (NULL: none) and
 * action (C, R, U, D, E). */
typedef struct {
	metrics_route_t route;
	const char *interaction;
	char action;
} rest_kind_t;

struct rest {
	store_t *store;
	writer_t *writer;
	maps_t *maps; /* the mappings replays convert with; NULL: store and forward */
	hl7_limits_t limits;
	int audit;             /* CONF_AUDIT_REST_* */
	bool consistent_reads; /* rest.consistent_reads */
	auth_t *auth;          /* authorization (auth.enabled false: everything is allowed) */
	/* The CapabilityStatement, built once: [xml][pretty]. */
	buf_t capability[2][2];
};

struct rest_thread {
	rest_t *rest;
	struct event_base *base;
	struct event *done_ev;
	pthread_mutex_t done_mu;
	rest_job_t *done_head; /* jobs back from the writer, newest first */
};

typedef enum {
	REST_SUMMARY_FALSE,
	REST_SUMMARY_TRUE,
	REST_SUMMARY_TEXT,
	REST_SUMMARY_DATA,
	REST_SUMMARY_COUNT
} rest_summary_t;

typedef enum { REST_PREFER_REPRESENTATION, REST_PREFER_MINIMAL, REST_PREFER_OUTCOME } rest_prefer_t;

/* One request being answered; lives in the request's arena. */
typedef struct {
	http_request_t *req;
	rest_thread_t *th;
	rest_t *rest;
	arena_t *a;
	rest_kind_t kind;
	slice_t audit_type, audit_id; /* what the audit trail names; empty when none */
	bool xml;                     /* negotiated output format */
	bool pretty;
	rest_summary_t summary;
	slice_t elements; /* _elements, raw comma list; ptr NULL when absent */
	rest_prefer_t prefer;
	bool strict;      /* Prefer: handling=strict */
	const char *base; /* "http://host/fhir" */
	slice_t query;    /* raw query */
	/* Who the request acts for (client id, scopes, patient) once the bearer token is checked;
	 * NULL when authorization is off. For audit records. */
	auth_grant_t *grant;
} rest_ctx_t;

/* ---- output (rest.c) ---- */

/* An OperationOutcome with one issue (arena a). */
fhir_node_t *rest_outcome(arena_t *a, const char *severity, const char *code, const char *text);
/* Answers with an OperationOutcome; ends the request. */
void rest_send_error(rest_ctx_t *c, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Answers with a resource (NULL: no body) and extra fields (NULL-ended pairs, or NULL). */
void rest_send(rest_ctx_t *c, int status, const fhir_node_t *res, const http_field_t *extra);
/* Parses a stored body and sets meta.versionId / meta.lastUpdated from the record; NULL when
 * the body does not parse (a store problem). */
fhir_node_t *rest_res_load(arena_t *a, const store_res_t *r);
/* Sets meta.versionId and meta.lastUpdated on res. */
void rest_meta_set(arena_t *a, fhir_node_t *res, uint32_t version, uint64_t last_updated_ns);
/* _summary and _elements applied to a resource about to be returned (a copy when changed). */
fhir_node_t *rest_res_shape(rest_ctx_t *c, fhir_node_t *res);
/* A stored resource (r valid: its read transaction open) ready for the response: the stored
 * JSON with meta spliced in (a raw node) for plain JSON, else loaded and shaped; NULL when
 * corrupt. */
fhir_node_t *rest_res_output(rest_ctx_t *c, const store_res_t *r);
/* "W/\"n\"" and the IMF-fixdate of ns, in the arena. */
const char *rest_etag(arena_t *a, uint32_t version);
const char *rest_http_date(arena_t *a, uint64_t ns);
/* A parsed FHIR instant/dateTime/date as ns since the epoch (start of the period). */
bool rest_parse_instant(slice_t s, uint64_t *ns);
/* NUL-terminated copy in the arena. */
char *rest_cstr(arena_t *a, slice_t s);
/* Parses a body by Content-Type (JSON or XML); on failure answers (400/415) and returns NULL. */
fhir_node_t *rest_body_parse(rest_ctx_t *c);
/* The store read transaction for a request; answers 500 and returns NULL on failure. */
store_txn_t *rest_read_begin(rest_ctx_t *c);
/* A read of T/id (version 0: current) into status/resource/outcome, for the read path and for
 * GET entries of batches. */
int rest_read_result(rest_ctx_t *c, store_txn_t *t, slice_t type, slice_t id, uint32_t version,
		     fhir_node_t **res, fhir_node_t **outcome, uint32_t *ver, uint64_t *lu);

/* ---- checks (rest_check.c) ---- */

/* Checks a resource against the R4 metadata (fhir_validate without required elements):
 * every member known, JSON kinds right, primitive values valid. Returns 0, or an HTTP status
 * (400) with "path: problem" in err. */
int rest_res_validate(const fhir_node_t *res, char *err, size_t cap);
/* Applies a JSON Patch document to doc (in place, arena a); 0, or a status (400/422) with err. */
int rest_json_patch(arena_t *a, fhir_node_t **doc, const fhir_node_t *patch, char *err, size_t cap);
/* Inserts val into array arr before item i (i at most its length). */
void rest_array_insert(arena_t *a, fhir_node_t *arr, size_t i, fhir_node_t *val);

/* ---- FHIRPath Patch (rest_fhirpatch.c) ---- */

/* Applies a FHIRPath Patch (a Parameters resource of "operation" parameters, R4
 * fhirpatch.html) to the resource doc, in place (arena a), then prunes what it left empty.
 * Returns 0, or 400 (the Parameters is malformed, a path is not FHIRPath) or 422 (a path
 * names the wrong number of elements, a value of the wrong type, a FHIRPath construct this
 * subset does not support) with a message in err. doc may be half-patched after a failure. */
int rest_fhirpath_patch(arena_t *a, fhir_node_t *doc, const fhir_node_t *params, char *err,
			size_t cap);
bool rest_id_is_valid(slice_t id);
/* A new server-assigned id (REST_ID_HEX hex digits and a NUL). */
void rest_random_id(char *out);
bool rest_type_is_valid(slice_t type);

/* ---- writes (rest_write.c) ---- */

void rest_do_create(rest_ctx_t *c, slice_t type);
void rest_do_update(rest_ctx_t *c, slice_t type, slice_t id);
void rest_do_cond_update(rest_ctx_t *c, slice_t type);
void rest_do_delete(rest_ctx_t *c, slice_t type, slice_t id);
void rest_do_cond_delete(rest_ctx_t *c, slice_t type);
void rest_do_patch(rest_ctx_t *c, slice_t type, slice_t id);
void rest_do_cond_patch(rest_ctx_t *c, slice_t type);
/* POST T/$validate, T/id/$validate: the checks a create or update makes, as an
 * OperationOutcome with 200. */
void rest_do_validate(rest_ctx_t *c, slice_t type, slice_t id);
void rest_do_bundle(rest_ctx_t *c);
/* The searchset Bundle of a search of type (empty: the system) with the raw query q in t, in
 * *out, and 200; or 400 (a bad request) or 500 with an OperationOutcome in *out. */
int rest_search_bundle(rest_ctx_t *c, store_txn_t *t, slice_t type, slice_t q, fhir_node_t **out);
/* A write of an operation outside rest_write.c ($replay): apply runs in the writer thread inside
 * the batch's transaction (a negative return fails the batch); finish runs on the I/O thread
 * after the commit (rc: 0 or the commit's error) and must answer the request. */
typedef int (*rest_op_apply_fn)(void *arg, store_txn_t *t);
typedef void (*rest_op_finish_fn)(rest_ctx_t *c, void *arg, int rc);
void rest_submit_op(rest_ctx_t *c, rest_op_apply_fn apply, rest_op_finish_fn finish, void *arg);

/* ---- operator operations (rest_ops.c) ---- */

/* GET /fhir/$dead-letters, GET /fhir/$messages, POST /fhir/$replay. */
void rest_do_dead_letters(rest_ctx_t *c);
void rest_do_messages(rest_ctx_t *c);
void rest_do_replay(rest_ctx_t *c);

/* ---- authorization (rest_auth.c) ---- */

/* The interactions scopes are checked for (docs/auth.md has the table). */
typedef enum {
	REST_AZ_READ, /* read, vread */
	REST_AZ_SEARCH,
	REST_AZ_HISTORY, /* instance (id given): r; type and system: r and s */
	REST_AZ_CREATE,
	REST_AZ_COND_CREATE,
	REST_AZ_UPDATE, /* also patch, and update-as-create */
	REST_AZ_COND_UPDATE,
	REST_AZ_DELETE,
	REST_AZ_COND_DELETE,
	REST_AZ_EVERYTHING,
	REST_AZ_ADMIN, /* $messages, $dead-letters, $replay */
	REST_AZ_BUNDLE,
} rest_az_t;

/* Answers /auth/token and the SMART configuration; false when the path is neither. */
bool rest_auth_route(rest_ctx_t *c);
/* Checks the bearer token (sets c->grant); false when it answered 401. */
bool rest_authenticate(rest_ctx_t *c);
/* Checks the scopes for an interaction on type (empty: the system) and id (empty: none); for
 * patient/ scopes also the compartment (searches get the compartment criterion added to
 * c->query). False when it answered 403. */
bool rest_authorize(rest_ctx_t *c, rest_az_t az, slice_t type, slice_t id);
/* The check for one Bundle entry: 0, or 403 with a message in err. */
int rest_authorize_entry(rest_ctx_t *c, rest_az_t az, slice_t type, char *err, size_t cap);

/* ---- risk scoring (rest_score.c) ---- */

/* POST /fhir/Patient/{id}/$score. */
void rest_do_score(rest_ctx_t *c, slice_t patient_id);

/* Runs jobs the writer handed back (on the I/O thread). */
void rest_jobs_finish(rest_thread_t *th);
/* Frees jobs left at shutdown (answers their requests, which are dropped). */
void rest_jobs_drop(rest_thread_t *th);

#endif
