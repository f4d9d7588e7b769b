/* TLS for the listeners (server contexts reloaded without dropping connections, client
 * certificates, subject allow-lists) and for `fhirgate send` (a verifying client context), on
 * top of libevent's OpenSSL bufferevents. */
#ifndef GATEWAY_TLS_H
#define GATEWAY_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include <event2/util.h>

struct bufferevent;
struct event_base;

/* In the order of the words of the *.tls.client_auth options. */
typedef enum {
	TLS_CLIENT_AUTH_NONE = 0,     /* no certificate asked for */
	TLS_CLIENT_AUTH_OPTIONAL = 1, /* asked for; one that is sent must verify */
	TLS_CLIENT_AUTH_REQUIRE = 2,  /* a verified certificate is required */
} tls_client_auth_t;

typedef struct {
	const char *what; /* option prefix for messages, e.g. "mllp.tls" */
	const char *cert; /* PEM: the certificate, then its chain */
	const char *key;  /* PEM private key */
	const char *ca;   /* PEM CA certificates that client certificates must chain to; "" none */
	tls_client_auth_t client_auth;
	/* Subjects allowed, separated by ';': an entry with '=' is a whole DN in RFC 2253 form
	 * ("CN=lab,O=Hospital,C=DE"), one without is a common name; both case-insensitive.
	 * "" allows every verified certificate. */
	const char *allow_subjects;
} tls_server_opts_t;

typedef struct tls_server tls_server_t;

/* Loads certificate, key and CA into a new context (*out: caller owns). On error returns
 * -FG_ECONFIG with *errmsg (caller owns) naming the option and the file. */
int tls_server_new(const tls_server_opts_t *o, tls_server_t **out, char **errmsg);
/* Builds a new context from o (files read again); on success new connections use it while
 * existing ones keep theirs. On error the old one stays and *errmsg says why. Thread-safe
 * against tls_server_bev_new. */
int tls_server_reload(tls_server_t *t, const tls_server_opts_t *o, char **errmsg);
/* Accepts NULL. No connection may be created afterwards; live ones keep their context. */
void tls_server_free(tls_server_t *t);
/* A server-side TLS bufferevent (caller owns; free with tls_bev_free) over the accepted fd
 * (closed with it), with the current context; the handshake starts when the bufferevent is enabled
 * and ends with BEV_EVENT_CONNECTED. Dirty shutdowns (TCP closed without close_notify) read as EOF.
 */
struct bufferevent *tls_server_bev_new(tls_server_t *t, struct event_base *base,
				       evutil_socket_t fd);

/* After BEV_EVENT_CONNECTED: whether the peer's certificate passes the subject allow-list of
 * the context the connection was made with (true when it has none). subject (at least 1 byte)
 * receives the peer's subject ("-" without a certificate) for logs. */
bool tls_bev_peer_is_allowed(struct bufferevent *bev, char *subject, size_t cap);

/* Whether bev is a TLS bufferevent. */
bool tls_bev_is_tls(struct bufferevent *bev);
/* A short description of why a TLS bufferevent failed ("certificate verify failed: certificate
 * has expired", "wrong version number"), or "" when TLS has nothing to say. */
void tls_bev_error(struct bufferevent *bev, char *out, size_t cap);
/* Sends close_notify on a TLS bufferevent whose handshake is done (best effort, never blocks),
 * then shuts down the socket's sending side. Plain bufferevents: the shutdown only. */
void tls_bev_shutdown_write(struct bufferevent *bev);
/* bufferevent_free, with a close_notify first on an established TLS connection. */
void tls_bev_free(struct bufferevent *bev);

/* ---- client side (fhirgate send) ---- */

typedef struct {
	const char *ca;   /* PEM CA file to verify the server with; NULL: the system's */
	const char *cert; /* client certificate (mutual TLS); NULL: none */
	const char *key;
	bool insecure; /* skip verifying the server's certificate and name */
} tls_client_opts_t;

typedef struct tls_client tls_client_t;

/* *out: caller owns. On error -FG_ECONFIG and *errmsg (caller owns) naming the option and file. */
int tls_client_new(const tls_client_opts_t *o, tls_client_t **out, char **errmsg);
/* Accepts NULL; bufferevents made with c keep working (they hold their own reference). */
void tls_client_free(tls_client_t *c);
/* An unconnected TLS bufferevent (caller owns; free with tls_bev_free) for
 * bufferevent_socket_connect(); host (a name or an IP
 * address) is what the server's certificate must name, and the SNI for names. */
struct bufferevent *tls_client_bev_new(tls_client_t *c, struct event_base *base, const char *host);

#endif
