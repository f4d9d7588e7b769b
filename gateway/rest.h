/* The FHIR R4 REST API (base /fhir) on the HTTP server: routing, content negotiation, the
 * interactions over the store, OperationOutcomes for every error. Reads run on the I/O thread
 * in short read transactions; writes go through the writer thread (group commit) and are
 * answered once committed. */
#ifndef GATEWAY_REST_H
#define GATEWAY_REST_H

#include "gateway/conf.h"
#include "gateway/http.h"
#include "gateway/maps.h"
#include "gateway/writer.h"
#include "lib/buf.h"
#include "store/store.h"

struct event_base;

typedef struct rest rest_t;
typedef struct rest_thread rest_thread_t;

/* Shared by every I/O thread; store, writer and maps (NULL when messages are not converted)
 * must outlive it. Loads the authorization setup (auth.*): on failure *errmsg (caller owns)
 * says why. */
int rest_new(store_t *store, writer_t *writer, maps_t *maps, const config_t *cfg, rest_t **out,
	     char **errmsg);
/* Reloads what can change while running: the registered clients (auth.clients). On failure
 * the old ones stay and *errmsg (caller owns) says why. */
int rest_reload(rest_t *r, const config_t *cfg, char **errmsg);
/* Accepts NULL; every thread part must be freed first. */
void rest_free(rest_t *r);
/* The store it serves. */
store_t *rest_store(rest_t *r);
/* Its authorization (for endpoints outside /fhir that use the same tokens). */
struct auth *rest_auth(rest_t *r);
/* The per-I/O-thread part (its completion event lives on base). */
rest_thread_t *rest_thread_new(rest_t *r, struct event_base *base);
void rest_thread_free(rest_thread_t *t);
/* The http_handler_fn; handler_ctx is the rest_thread_t of the connection's thread. */
void rest_handle(http_request_t *req, void *handler_ctx);
/* The http_error_body_fn: errors the HTTP layer answers itself, as OperationOutcomes. */
void rest_error_body(int status, const char *text, const char **content_type, buf_t *body);

#endif
