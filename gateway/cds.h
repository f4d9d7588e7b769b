/* CDS Hooks 2.0 (https://cds-hooks.hl7.org/2.0/) on the HTTP listeners, outside the FHIR base:
 * discovery at GET /cds-services (one patient-view service per model in force), the service at
 * POST /cds-services/{model} (one card with the patient's risk, from the prefetch when given,
 * else from the store) and its feedback endpoint. docs/scoring.md § CDS Hooks. */
#ifndef GATEWAY_CDS_H
#define GATEWAY_CDS_H

#include <stdbool.h>

#include "gateway/http.h"
#include "gateway/server.h"

/* True when the request's path is /cds-services or below it. */
bool cds_handles(http_request_t *req);
/* Answers it (on the connection's I/O thread). */
void cds_handle(http_request_t *req, server_t *srv);

#endif
