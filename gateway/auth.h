/* SMART on FHIR Backend Services authorization: the registered clients and their keys, the
 * token endpoint (client_credentials with a private_key_jwt assertion), access tokens signed by
 * fhirgate, bearer token checks, the replay cache of assertion jtis, and protected mode. */
#ifndef GATEWAY_AUTH_H
#define GATEWAY_AUTH_H

#include <stdbool.h>
#include <stdint.h>

#include "gateway/conf.h"
#include "gateway/scope.h"
#include "lib/arena.h"
#include "lib/buf.h"
#include "lib/slice.h"

typedef struct auth auth_t;

/* Who a request acts for: from a verified access token; lives in the request's arena. */
typedef struct {
	const char *client_id;
	const char *patient; /* the patient of patient/ scopes; NULL when none */
	const char *jti;     /* the access token's id */
	scope_set_t scopes;
} auth_grant_t;

/* Loads the clients (auth.clients) and the signing key (auth.signing_key; an ephemeral EC
 * P-384 key, with a warning, when empty) when auth.enabled; with auth off, checks that every
 * http.listen address is loopback (protected mode). Caller owns *out; on failure *errmsg
 * (caller owns) says what is wrong and what to do. */
int auth_new(const config_t *cfg, auth_t **out, char **errmsg);
/* Accepts NULL. */
void auth_free(auth_t *a);
/* Reloads the clients from path (SIGHUP: keys rotated, clients added or removed). On failure
 * the clients in force stay and *errmsg (caller owns) says why. Tokens of a removed client stop
 * working at once. Nothing to do when auth is off. Safe while requests run. */
int auth_clients_reload(auth_t *a, const char *path, char **errmsg);
bool auth_is_enabled(const auth_t *a);

/* Protected mode: 0 when every address of a comma-separated host:port list is loopback (or the
 * list is empty), else -FG_ECONFIG with *bad (caller owns) the first address that is not. */
int auth_listen_is_loopback(const char *listen, char **bad);

/* Protected mode on a configuration: 0 when auth is on or every http.listen address is loopback,
 * else -FG_ECONFIG with *errmsg (caller owns) naming the address and what to do. */
int auth_protected_mode_check(const config_t *cfg, char **errmsg);

/* The public base URL (auth.base_url, or "http://" + host when that is empty), in the arena. */
const char *auth_base_url(const auth_t *a, arena_t *ar, slice_t host);

/* POST /auth/token: the form-encoded body of a token request. Appends the JSON answer (the
 * token, or an RFC 6749 error object) to out and returns the HTTP status (200, 400, 401, 503).
 * now_s: the wall clock in seconds. Safe to call from several threads. */
int auth_token_request(auth_t *a, arena_t *ar, slice_t body, slice_t host, int64_t now_s,
		       buf_t *out);
/* Checks an Authorization header (ptr NULL when absent). 0 with *grant filled (in the arena);
 * -FG_ENOTFOUND when there is no bearer token; -FG_EINVAL when it is not valid, with *why a
 * short text for the WWW-Authenticate error_description (static or in the arena). */
int auth_bearer_check(auth_t *a, arena_t *ar, slice_t authorization, slice_t host, int64_t now_s,
		      auth_grant_t **grant, const char **why);
/* The SMART configuration document (/.well-known/smart-configuration) as JSON. */
void auth_smart_configuration(const auth_t *a, arena_t *ar, slice_t host, buf_t *out);

#endif
