/* SMART scopes v1 and v2: parsing, granting and the permission checks (docs/auth.md). */
#include "config.h"

#include "gateway/scope.h"

#include <stdio.h>
#include <string.h>

#include "fhir/meta.h"
#include "lib/err.h"

static const char perm_letters[] = "cruds";

/* A v2 constraint ("category=laboratory&status=final"): system/ or user/ scopes on one type
 * only, each key a search parameter of that type (modifiers allowed), values from a safe
 * character set, so that it can be appended to a search as it is. */
static int
constraint_check(const scope_t *s, slice_t q)
{
	size_t start = 0;

	if (s->ctx == SCOPE_PATIENT || strcmp(s->type, "*") == 0)
		return -FG_EUNSUPPORTED;
	if (q.len == 0 || q.len >= SCOPE_QUERY_MAX)
		return -FG_EINVAL;
	for (size_t i = 0; i <= q.len; i++) {
		slice_t pair, key;
		size_t eq = 0, colon;

		if (i < q.len && q.ptr[i] != '&')
			continue;
		pair = slice_make(q.ptr + start, i - start);
		start = i + 1;
		while (eq < pair.len && pair.ptr[eq] != '=')
			eq++;
		if (eq == 0 || eq + 1 >= pair.len)
			return -FG_EINVAL;
		for (colon = 0; colon < eq && pair.ptr[colon] != ':'; colon++)
			;
		key = slice_make(pair.ptr, colon);
		if (fhir_meta_searchparam(slice_cstr(s->type), key) == NULL)
			return -FG_EINVAL;
		for (size_t k = 0; k < pair.len; k++) {
			char ch = pair.ptr[k];

			if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
			      (ch >= '0' && ch <= '9') ||
			      (ch != '\0' && strchr("-._~:|,/=%", ch) != NULL)) ||
			    (ch == '=' && k != eq))
				return -FG_EINVAL;
		}
	}
	return 0;
}

int
scope_parse(slice_t text, scope_t *out)
{
	size_t slash, dot;
	slice_t ctx, type, perms;

	memset(out, 0, sizeof(*out));
	if (slice_eq_cstr(text, SCOPE_ADMIN)) {
		out->ctx = SCOPE_SYSTEM;
		memcpy(out->type, "fhirgate", sizeof("fhirgate"));
		out->admin = true;
		return 0;
	}
	for (slash = 0; slash < text.len && text.ptr[slash] != '/'; slash++)
		;
	if (slash == text.len)
		return -FG_EUNSUPPORTED; /* openid, launch, offline_access, ...: not for backends */
	for (dot = slash + 1; dot < text.len && text.ptr[dot] != '.'; dot++)
		;
	ctx = slice_make(text.ptr, slash);
	type = slice_make(text.ptr + slash + 1, dot - slash - 1);
	perms = dot < text.len ? slice_make(text.ptr + dot + 1, text.len - dot - 1) : SLICE_NULL;
	if (slice_eq_cstr(ctx, "patient"))
		out->ctx = SCOPE_PATIENT;
	else if (slice_eq_cstr(ctx, "user"))
		out->ctx = SCOPE_USER;
	else if (slice_eq_cstr(ctx, "system"))
		out->ctx = SCOPE_SYSTEM;
	else
		return -FG_EINVAL;
	if (!slice_eq_cstr(type, "*") && !fhir_meta_is_resource(type))
		return -FG_EINVAL;
	if (dot == text.len || perms.len == 0)
		return -FG_EINVAL;
	memcpy(out->type, type.ptr, type.len); /* a known type name: shorter than the array */
	out->type[type.len] = '\0';
	{
		const char *q = memchr(perms.ptr, '?', perms.len);

		if (q != NULL) {
			slice_t query = slice_make(q + 1, perms.len - (size_t)(q - perms.ptr) - 1);
			int rc;

			perms = slice_make(perms.ptr, (size_t)(q - perms.ptr));
			if ((rc = constraint_check(out, query)) < 0)
				return rc;
			memcpy(out->query, query.ptr, query.len);
			out->query[query.len] = '\0';
		}
	}
	if (perms.len == 0)
		return -FG_EINVAL;
	if (out->query[0] != '\0' && (slice_eq_cstr(perms, "read") ||
				      slice_eq_cstr(perms, "write") || slice_eq_cstr(perms, "*")))
		return -FG_EINVAL; /* constraints are v2 only */
	if (slice_eq_cstr(perms, "read")) {
		out->perms = SCOPE_R | SCOPE_S;
		out->v1 = true;
	} else if (slice_eq_cstr(perms, "write")) {
		out->perms = SCOPE_C | SCOPE_U | SCOPE_D;
		out->v1 = true;
	} else if (slice_eq_cstr(perms, "*")) {
		out->perms = SCOPE_ALL;
		out->v1 = true;
	} else {
		/* v2: a non-empty subsequence of "cruds", in that order. */
		size_t at = 0;

		for (size_t i = 0; i < perms.len; i++) {
			const char *p =
			    memchr(perm_letters + at, perms.ptr[i], sizeof(perm_letters) - 1 - at);

			if (p == NULL)
				return -FG_EINVAL;
			at = (size_t)(p - perm_letters) + 1;
			out->perms |= 1u << (p - perm_letters);
		}
	}
	/* A constraint filters what is read or searched; writes would need the new resource
	 * checked against it, which is not done. */
	if (out->query[0] != '\0' && (out->perms & ~(unsigned)(SCOPE_R | SCOPE_S)) != 0)
		return -FG_EUNSUPPORTED;
	return 0;
}

int
scope_set_parse(slice_t list, scope_set_t *set, slice_t *bad)
{
	size_t start = 0;

	set->n = 0;
	if (list.len == 0)
		return 0; /* and list.ptr may be NULL */
	for (size_t i = 0; i <= list.len; i++) {
		slice_t one;
		int rc;

		if (i < list.len && list.ptr[i] != ' ')
			continue;
		one = slice_make(list.ptr + start, i - start);
		start = i + 1;
		if (one.len == 0)
			continue;
		if (set->n == SCOPE_MAX) {
			*bad = one;
			return -FG_ETOOBIG;
		}
		rc = scope_parse(one, &set->s[set->n]);
		if (rc < 0) {
			*bad = one;
			return rc;
		}
		set->n++;
	}
	return 0;
}

void
scope_format(const scope_t *s, buf_t *out)
{
	static const char *const ctx[] = {"patient", "user", "system"};

	if (s->admin) {
		buf_append_cstr(out, SCOPE_ADMIN);
		return;
	}
	buf_printf(out, "%s/%s.", ctx[s->ctx], s->type);
	if (s->query[0] != '\0') {
		for (int i = 0; i < 5; i++)
			if (s->perms & (1u << i))
				buf_append_byte(out, perm_letters[i]);
		buf_printf(out, "?%s", s->query);
	} else if (s->v1 && s->perms == (SCOPE_R | SCOPE_S))
		buf_append_cstr(out, "read");
	else if (s->v1 && s->perms == (SCOPE_C | SCOPE_U | SCOPE_D))
		buf_append_cstr(out, "write");
	else if (s->v1 && s->perms == SCOPE_ALL)
		buf_append_cstr(out, "*");
	else
		for (int i = 0; i < 5; i++)
			if (s->perms & (1u << i))
				buf_append_byte(out, perm_letters[i]);
}

void
scope_set_format(const scope_set_t *set, buf_t *out)
{
	for (size_t i = 0; i < set->n; i++) {
		if (i > 0)
			buf_append_byte(out, ' ');
		scope_format(&set->s[i], out);
	}
}

/* Whether a scope's type covers type ("" : the whole system). */
static bool
type_covers(const char *scope_type, slice_t type)
{
	if (strcmp(scope_type, "*") == 0)
		return type.len == 0 || !slice_eq_cstr(type, "AuditEvent");
	return type.len > 0 && slice_eq_cstr(type, scope_type);
}

static void
grant_add(scope_set_t *g, const scope_t *s)
{
	for (size_t i = 0; i < g->n; i++)
		if (g->s[i].ctx == s->ctx && g->s[i].admin == s->admin &&
		    g->s[i].perms == s->perms && strcmp(g->s[i].type, s->type) == 0)
			return;
	if (g->n < SCOPE_MAX)
		g->s[g->n++] = *s;
}

void
scope_grant(const scope_set_t *requested, const scope_set_t *allowed, bool patient_ok,
	    scope_set_t *granted)
{
	granted->n = 0;
	for (size_t i = 0; i < requested->n; i++) {
		const scope_t *r = &requested->s[i];

		if (r->ctx == SCOPE_PATIENT && !patient_ok)
			continue;
		for (size_t k = 0; k < allowed->n; k++) {
			const scope_t *a = &allowed->s[k];
			scope_t g = *r;

			if (a->ctx != r->ctx || a->admin != r->admin)
				continue;
			if (r->admin) {
				grant_add(granted, r);
				continue;
			}
			if (strcmp(r->type, "*") == 0) {
				/* * never stands for AuditEvent, on either side. */
				if (strcmp(a->type, "AuditEvent") == 0)
					continue;
				memcpy(g.type, a->type, sizeof(g.type));
			} else if (!type_covers(a->type, slice_cstr(r->type)))
				continue;
			/* Constraints narrow: a constrained side wins; two must be the same. */
			if (a->query[0] != '\0') {
				if (r->query[0] != '\0' && strcmp(r->query, a->query) != 0)
					continue;
				memcpy(g.query, a->query, sizeof(g.query));
			}
			g.perms = r->perms & a->perms;
			if (g.perms != 0)
				grant_add(granted, &g);
		}
	}
}

scope_verdict_t
scope_set_check(const scope_set_t *set, slice_t type, unsigned perms)
{
	unsigned sys = 0, pat = 0;

	for (size_t i = 0; i < set->n; i++) {
		const scope_t *s = &set->s[i];

		if (s->admin || s->query[0] != '\0' || !type_covers(s->type, type))
			continue;
		if (s->ctx == SCOPE_PATIENT)
			pat |= s->perms;
		else
			sys |= s->perms;
	}
	if ((sys & perms) == perms)
		return SCOPE_ALLOW;
	/* A mix (r from system/, s from patient/) is held to the compartment as a whole. */
	if (((sys | pat) & perms) == perms)
		return SCOPE_ALLOW_PATIENT;
	return SCOPE_DENY;
}

size_t
scope_set_constrained(const scope_set_t *set, slice_t type, unsigned perms, const scope_t **out,
		      size_t max)
{
	size_t n = 0;

	for (size_t i = 0; i < set->n; i++) {
		const scope_t *s = &set->s[i];

		if (s->query[0] == '\0' || (s->perms & perms) != perms ||
		    !slice_eq_cstr(type, s->type))
			continue;
		if (n < max)
			out[n] = s;
		n++;
	}
	return n;
}

bool
scope_set_is_admin(const scope_set_t *set)
{
	for (size_t i = 0; i < set->n; i++)
		if (set->s[i].admin)
			return true;
	return false;
}

void
scope_needed(slice_t type, unsigned perms, char *out, size_t cap)
{
	char letters[6];
	size_t n = 0;

	for (int i = 0; i < 5; i++)
		if (perms & (1u << i))
			letters[n++] = perm_letters[i];
	letters[n] = '\0';
	if (type.len == 0)
		snprintf(out, cap, "system/*.%s", letters);
	else
		snprintf(out, cap, "system/%.*s.%s (or patient/%.*s.%s)", (int)type.len, type.ptr,
			 letters, (int)type.len, type.ptr, letters);
}

/* The R4 Patient CompartmentDefinition (4.0.1): the resource types in the compartment and the
 * search parameters that put a resource of the type into it. */
static const struct {
	const char *type;
	const char *params[5];
} compartment[] = {
    {"Account", {"subject"}},
    {"AdverseEvent", {"subject"}},
    {"AllergyIntolerance", {"patient", "recorder", "asserter"}},
    {"Appointment", {"actor"}},
    {"AppointmentResponse", {"actor"}},
    {"AuditEvent", {"patient"}},
    {"Basic", {"patient", "author"}},
    {"BodyStructure", {"patient"}},
    {"CarePlan", {"patient", "performer"}},
    {"CareTeam", {"patient", "participant"}},
    {"ChargeItem", {"subject"}},
    {"Claim", {"patient", "payee"}},
    {"ClaimResponse", {"patient"}},
    {"ClinicalImpression", {"subject"}},
    {"Communication", {"subject", "sender", "recipient"}},
    {"CommunicationRequest", {"subject", "sender", "recipient", "requester"}},
    {"Composition", {"subject", "author", "attester"}},
    {"Condition", {"patient", "asserter"}},
    {"Consent", {"patient"}},
    {"Coverage", {"policy-holder", "subscriber", "beneficiary", "payor"}},
    {"CoverageEligibilityRequest", {"patient"}},
    {"CoverageEligibilityResponse", {"patient"}},
    {"DetectedIssue", {"patient"}},
    {"DeviceRequest", {"subject", "performer"}},
    {"DeviceUseStatement", {"subject"}},
    {"DiagnosticReport", {"subject"}},
    {"DocumentManifest", {"subject", "author", "recipient"}},
    {"DocumentReference", {"subject", "author"}},
    {"Encounter", {"patient"}},
    {"EnrollmentRequest", {"subject"}},
    {"EpisodeOfCare", {"patient"}},
    {"ExplanationOfBenefit", {"patient", "payee"}},
    {"FamilyMemberHistory", {"patient"}},
    {"Flag", {"patient"}},
    {"Goal", {"patient"}},
    {"Group", {"member"}},
    {"ImagingStudy", {"patient"}},
    {"Immunization", {"patient"}},
    {"ImmunizationEvaluation", {"patient"}},
    {"ImmunizationRecommendation", {"patient"}},
    {"Invoice", {"subject", "patient", "recipient"}},
    {"List", {"subject", "source"}},
    {"MeasureReport", {"patient"}},
    {"Media", {"subject"}},
    {"MedicationAdministration", {"patient", "performer", "subject"}},
    {"MedicationDispense", {"subject", "patient", "receiver"}},
    {"MedicationRequest", {"subject"}},
    {"MedicationStatement", {"subject"}},
    {"MolecularSequence", {"patient"}},
    {"NutritionOrder", {"patient"}},
    {"Observation", {"subject", "performer"}},
    {"Patient", {"link"}},
    {"Person", {"patient"}},
    {"Procedure", {"patient", "performer"}},
    {"Provenance", {"patient"}},
    {"QuestionnaireResponse", {"subject", "author"}},
    {"RelatedPerson", {"patient"}},
    {"RequestGroup", {"subject", "participant"}},
    {"ResearchSubject", {"individual"}},
    {"RiskAssessment", {"subject"}},
    {"Schedule", {"actor"}},
    {"ServiceRequest", {"subject", "performer"}},
    {"Specimen", {"subject"}},
    {"SupplyDelivery", {"patient"}},
    {"SupplyRequest", {"subject"}},
    {"VisionPrescription", {"patient"}},
};

const char *const *
scope_compartment_params(slice_t type)
{
	for (size_t i = 0; i < sizeof(compartment) / sizeof(compartment[0]); i++)
		if (slice_eq_cstr(type, compartment[i].type))
			return compartment[i].params;
	return NULL;
}
