/* The operations endpoints on the HTTP listeners, outside the FHIR base: `/metrics`
 * (Prometheus text format), `/healthz` (liveness) and `/readyz` (readiness). They carry no
 * patient data. */
#ifndef GATEWAY_OPS_H
#define GATEWAY_OPS_H

#include <stdbool.h>

#include "gateway/http.h"
#include "gateway/server.h"

/* True when the request's path is one of the operations endpoints. */
bool ops_handles(http_request_t *req);
/* Answers it (on the connection's I/O thread). */
void ops_handle(http_request_t *req, server_t *srv);

#endif
