/* SMART on FHIR scopes, v1 (`system/Observation.read`, `.write`, `.*`) and v2
 * (`system/Observation.rs`, `patient/` + `*.cruds`): parsing, granting (requested ∩ allowed) and
 * the permission check of one interaction on one resource type. */
#ifndef GATEWAY_SCOPE_H
#define GATEWAY_SCOPE_H

#include <stdbool.h>
#include <stddef.h>

#include "lib/buf.h"
#include "lib/slice.h"

/* Permissions, in v2 letter order c r u d s. */
enum {
	SCOPE_C = 1 << 0,
	SCOPE_R = 1 << 1,
	SCOPE_U = 1 << 2,
	SCOPE_D = 1 << 3,
	SCOPE_S = 1 << 4,
	SCOPE_ALL = 31,
};

typedef enum { SCOPE_PATIENT, SCOPE_USER, SCOPE_SYSTEM } scope_ctx_t;

#define SCOPE_TYPE_MAX  64
#define SCOPE_MAX       64 /* scopes in one token */
#define SCOPE_ADMIN     "system/fhirgate.admin"
#define SCOPE_QUERY_MAX 256 /* a v2 ?param=value constraint */

typedef struct {
	scope_ctx_t ctx;
	char type[SCOPE_TYPE_MAX]; /* a resource type, or "*" */
	unsigned perms;
	bool v1;    /* written in v1 form (read/write/ *) */
	bool admin; /* system/fhirgate.admin: the operator operations */
	/* v2 constraint after '?' ("category=laboratory"), "" when none: only on system/ and
	 * user/ scopes for one type with r and s permissions. */
	char query[SCOPE_QUERY_MAX];
} scope_t;

typedef struct {
	scope_t s[SCOPE_MAX];
	size_t n;
} scope_set_t;

/* What a scope set allows for one interaction. */
typedef enum {
	SCOPE_DENY = 0,
	SCOPE_ALLOW_PATIENT, /* only patient/ scopes allow it: restrict to the patient compartment
			      */
	SCOPE_ALLOW,         /* a system/ or user/ scope allows it */
} scope_verdict_t;

/* Parses one scope. Returns 0; -FG_EUNSUPPORTED for scopes this server does not know (openid,
 * launch, ...) and for ?param=value constraints on patient/ scopes, on *, or with c, u or d;
 * -FG_EINVAL when malformed (unknown context, bad type name, v2 letters out of order or
 * repeated, a constraint key that is not a search parameter of the type). */
int scope_parse(slice_t text, scope_t *out);
/* Parses a space-separated list into set (which it clears); stops at the first bad scope with
 * its error and *bad set to it. More than SCOPE_MAX scopes: -FG_ETOOBIG. */
int scope_set_parse(slice_t list, scope_set_t *set, slice_t *bad);
/* Appends a scope's text (v1 form when it was written so and the permissions allow). */
void scope_format(const scope_t *s, buf_t *out);
/* Appends the space-separated list. */
void scope_set_format(const scope_set_t *set, buf_t *out);

/* The scopes of requested that allowed covers, narrowed to what allowed permits (a request for
 * system/ *.read with only system/Observation.read allowed grants system/Observation.read).
 * patient/ scopes are granted only when patient_ok. */
void scope_grant(const scope_set_t *requested, const scope_set_t *allowed, bool patient_ok,
		 scope_set_t *granted);

/* Whether the set allows every permission in perms on type (a resource type; "" for the whole
 * system, which only * scopes cover). AuditEvent is covered by explicit AuditEvent scopes only,
 * never by *. user/ acts like system/. */
scope_verdict_t scope_set_check(const scope_set_t *set, slice_t type, unsigned perms);
/* The constrained scopes (with a ?query) of set for exactly type that hold every permission in
 * perms: the first max into out (borrowed from set); returns how many there are. They are never
 * counted by scope_set_check. */
size_t scope_set_constrained(const scope_set_t *set, slice_t type, unsigned perms,
			     const scope_t **out, size_t max);
/* Whether the set holds system/fhirgate.admin. */
bool scope_set_is_admin(const scope_set_t *set);
/* "system/Observation.rs" style text of what a check needed, in a (static-sized) buffer. */
void scope_needed(slice_t type, unsigned perms, char *out, size_t cap);

/* The search parameters that put a resource of type into a Patient compartment (R4
 * CompartmentDefinition/patient), NULL-ended; NULL when the type is never in it. Patient itself
 * is in its own compartment by id. */
const char *const *scope_compartment_params(slice_t type);

#endif
