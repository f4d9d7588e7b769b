/* The MLLP server: I/O threads (one event_base each, SO_REUSEPORT listeners), connections,
 * parsing on the I/O threads and ACKs once the writer has committed. */
#ifndef GATEWAY_SERVER_H
#define GATEWAY_SERVER_H

#include <stdbool.h>
#include <stdint.h>

#include "gateway/conf.h"
#include "gateway/maps.h"
#include "gateway/rest.h"
#include "gateway/writer.h"
#include "store/store.h"

typedef struct server server_t;

typedef struct {
	uint64_t http_conns_open;
	uint64_t conns_accepted, conns_open, frames, acks_aa, acks_ae, acks_ar, duplicates;
	uint64_t garbage_bytes, aborted_frames, oversize_frames, store_failures, accept_pauses;
	uint64_t refused;      /* MLLP peers closed at accept: address or certificate subject */
	uint64_t tls_failures; /* MLLP TLS handshakes that failed */
} server_stats_t;

/* Loads the TLS material (mllp.tls.*, http.tls.*) of the TLS listeners configured, then binds
 * every listener of cfg->mllp_listen, mllp_tls_listen, http_listen and http_tls_listen (served by
 * rest, which must outlive the server) and starts the I/O threads. cfg is copied where needed; maps
 * (the mappings in force, NULL: store messages without converting them) must outlive the server. On
 * failure *errmsg (caller owns) says why. */
int server_start(const config_t *cfg, writer_t *writer, maps_t *maps, rest_t *rest, server_t **out,
		 char **errmsg);
/* Applies the options that can change while running (limits, timeouts, ACK sender names,
 * mllp.allow) and rereads the TLS certificates, keys and CAs: new connections use them, and a
 * failure is logged and keeps the previous ones. */
void server_reload(server_t *s, const config_t *cfg);
/* Stops accepting and reading, waits (up to the shutdown timeout) until every message read has
 * been committed and ACKed, closes connections and joins the threads. */
void server_drain(server_t *s);
/* Accepts NULL; call after server_drain. */
void server_free(server_t *s);
void server_get_stats(server_t *s, server_stats_t *out);
/* For the operations endpoints (gateway/ops.c): what the server was started with. */
writer_t *server_writer(server_t *s);
rest_t *server_rest(server_t *s);
maps_t *server_maps(server_t *s); /* NULL: store and forward */
uint64_t server_started_s(server_t *s);
/* True once server_drain has begun. */
bool server_is_draining(server_t *s);

#endif
