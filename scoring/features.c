/* The binder: a patient's resources and a reference time in, a model's feature vector with
 * its basis out (docs/scoring.md § Feature bindings). Pure functions of their arguments. */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fhir/search.h"
#include "lib/err.h"
#include "scoring/features_int.h"

#define US_CORE_RACE          "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race"
#define RACE_AFRICAN_AMERICAN "2054-5"

size_t
features_binding_count(const features_binding_t *b)
{
	return b->n;
}

const char *
features_binding_input_name(const features_binding_t *b, size_t i)
{
	return i < b->n ? b->inputs[i].name : NULL;
}

features_outcome_t
features_binding_outcome(const features_binding_t *b)
{
	return b->outcome;
}

bool
features_binding_band(const features_binding_t *b, double probability, const char **label,
		      const char **code)
{
	*label = *code = NULL;
	for (size_t i = 0; i < b->nbands; i++)
		if (!b->bands[i].bounded || probability < b->bands[i].below) {
			*label = b->bands[i].label;
			*code = b->bands[i].code;
			return true;
		}
	return false;
}

/* Dates: days since 1970-01-01 of a proleptic Gregorian date and back (H. Hinnant). */
static int64_t
days_from_civil(int64_t y, int m, int d)
{
	int64_t era, yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = y - era * 400;
	doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

static void
civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
	int64_t era, doe, yoe, doy, mp;

	z += 719468;
	era = (z >= 0 ? z : z - 146096) / 146097;
	doe = z - era * 146097;
	yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	mp = (5 * doy + 2) / 153;
	*d = (int)(doy - (153 * mp + 2) / 5 + 1);
	*m = (int)(mp < 10 ? mp + 3 : mp - 9);
	*y = yoe + era * 400 + (*m <= 2);
}

static int64_t
floor_div(int64_t a, int64_t b)
{
	return a / b - (a % b != 0 && (a < 0) != (b < 0));
}

static bool
is_leap(int64_t y)
{
	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

/* The start of the look-back window of in ending at ref_ms; INT64_MIN without a window. Years
 * and months are calendar ones (clamped to the month's last day), the rest fixed. */
static int64_t
window_start(const fb_input_t *in, int64_t ref_ms)
{
	static const int mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	int64_t days, rest, y, months;
	int m, d, last;

	switch (in->window_unit) {
	case 'h':
		return ref_ms - in->window_count * 3600000;
	case 'd':
		return ref_ms - in->window_count * 86400000;
	case 'w':
		return ref_ms - in->window_count * 7 * 86400000;
	case 'y':
	case 'm':
		break;
	default:
		return INT64_MIN;
	}
	days = floor_div(ref_ms, 86400000);
	rest = ref_ms - days * 86400000;
	civil_from_days(days, &y, &m, &d);
	months = y * 12 + (m - 1) - in->window_count * (in->window_unit == 'y' ? 12 : 1);
	y = floor_div(months, 12);
	m = (int)(months - y * 12) + 1;
	last = mdays[m - 1] + (m == 2 && is_leap(y));
	if (d > last)
		d = last;
	return days_from_civil(y, m, d) * 86400000 + rest;
}

static slice_t
str_of(const fhir_node_t *obj, const char *key)
{
	const fhir_node_t *n = obj != NULL ? fhir_object_get_cstr(obj, key) : NULL;

	return n != NULL && fhir_node_kind(n) == FHIR_STRING ? fhir_node_text(n) : SLICE_NULL;
}

/* A date/dateTime/instant member: its text and the start of the period it covers. */
static bool
time_of(const fhir_node_t *obj, const char *key, slice_t *text, int64_t *ms)
{
	int64_t hi;

	*text = str_of(obj, key);
	return text->len > 0 && fhir_search_date_range(*text, ms, &hi);
}

static bool
code_matches(const fb_code_t *c, slice_t system, slice_t code)
{
	if (!slice_eq_cstr(system, c->system))
		return false;
	if (c->prefix)
		return code.len >= c->code_len && memcmp(code.ptr, c->code, c->code_len) == 0;
	return slice_eq(code, slice_make(c->code, c->code_len));
}

static bool
codes_match(const fb_codes_t *list, slice_t system, slice_t code)
{
	for (size_t i = 0; i < list->n; i++)
		if (code_matches(&list->v[i], system, code))
			return true;
	return false;
}

/* Whether a CodeableConcept has a coding in list. */
static bool
concept_matches(const fhir_node_t *cc, const fb_codes_t *list)
{
	const fhir_node_t *codings = cc != NULL ? fhir_object_get_cstr(cc, "coding") : NULL;
	const fhir_node_t *c;
	size_t i;

	if (codings == NULL || fhir_node_kind(codings) != FHIR_ARRAY)
		return false;
	FHIR_ARRAY_FOREACH(codings, i, c) {
		if (codes_match(list, str_of(c, "system"), str_of(c, "code")))
			return true;
	}
	return false;
}

/* Whether a CodeableConcept has a coding of system with one of the codes (NULL-terminated). */
static bool
concept_has(const fhir_node_t *cc, const char *system, const char *const *codes)
{
	const fhir_node_t *codings = cc != NULL ? fhir_object_get_cstr(cc, "coding") : NULL;
	const fhir_node_t *c;
	size_t i;

	if (codings == NULL || fhir_node_kind(codings) != FHIR_ARRAY)
		return false;
	FHIR_ARRAY_FOREACH(codings, i, c) {
		if (system != NULL && !slice_eq_cstr(str_of(c, "system"), system))
			continue;
		for (size_t k = 0; codes[k] != NULL; k++)
			if (slice_eq_cstr(str_of(c, "code"), codes[k]))
				return true;
	}
	return false;
}

static const char *
ref_of(arena_t *a, const char *type, const features_res_t *r)
{
	if (r->version == 0)
		return arena_printf(a, "%s/%.*s", type, (int)r->id.len, r->id.ptr);
	return arena_printf(a, "%s/%.*s/_history/%u", type, (int)r->id.len, r->id.ptr, r->version);
}

/* A feature being built. */
typedef struct {
	arena_t *a;
	feature_t *f;
	size_t basis_cap;
} fb_ctx_t;

static void
add_basis(fb_ctx_t *c, const char *type, const features_res_t *r)
{
	feature_t *f = c->f;

	f->basis = arena_array_grow(c->a, f->basis, f->nbasis, &c->basis_cap, sizeof(*f->basis));
	f->basis[f->nbasis++] = ref_of(c->a, type, r);
}

/* Keeps the later of the source times (ties broken by text, so the result does not depend on
 * the order of the resources). */
static void
add_time(fb_ctx_t *c, slice_t text, int64_t ms)
{
	feature_t *f = c->f;

	if (text.len == 0)
		return;
	if (f->source_time == NULL || ms > f->source_ms ||
	    (ms == f->source_ms && strncmp(text.ptr, f->source_time, text.len) > 0)) {
		f->source_time = arena_strndup(c->a, text.ptr, text.len);
		f->source_ms = ms;
	}
}

static void
set_number(feature_t *f, double v)
{
	f->kind = FEATURE_NUMBER;
	f->number = v;
	f->status = FEATURE_FOUND;
}

static void
set_string(feature_t *f, const char *s)
{
	f->kind = FEATURE_STRING;
	f->string = s;
	f->status = FEATURE_FOUND;
}

static void fail(fb_ctx_t *c, feature_status_t st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
fail(fb_ctx_t *c, feature_status_t st, const char *fmt, ...)
{
	char buf[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	c->f->kind = FEATURE_MISSING;
	c->f->status = st;
	c->f->reason = arena_strndup(c->a, buf, strlen(buf));
}

/* Whole years from a full birthDate ("1970-06-15") to ref_ms. */
static void
bind_age(fb_ctx_t *c, const features_res_t *p, int64_t ref_ms)
{
	slice_t bd = str_of(p->node, "birthDate");
	int64_t by, ry, days;
	uint64_t v;
	int bm, bdd, rm, rd, age;

	if (bd.len == 0) {
		fail(c, FEATURE_ABSENT, "Patient has no birthDate");
		return;
	}
	if (bd.len != 10 || bd.ptr[4] != '-' || bd.ptr[7] != '-' ||
	    !slice_to_u64(slice_make(bd.ptr, 4), &v)) {
		fail(c, FEATURE_INVALID, "birthDate '%.*s' is not a full date", (int)bd.len,
		     bd.ptr);
		return;
	}
	by = (int64_t)v;
	if (!slice_to_u64(slice_make(bd.ptr + 5, 2), &v) || v < 1 || v > 12) {
		fail(c, FEATURE_INVALID, "birthDate '%.*s' is not a date", (int)bd.len, bd.ptr);
		return;
	}
	bm = (int)v;
	if (!slice_to_u64(slice_make(bd.ptr + 8, 2), &v) || v < 1 || v > 31) {
		fail(c, FEATURE_INVALID, "birthDate '%.*s' is not a date", (int)bd.len, bd.ptr);
		return;
	}
	bdd = (int)v;
	days = floor_div(ref_ms, 86400000);
	civil_from_days(days, &ry, &rm, &rd);
	age = (int)(ry - by) - ((rm < bm || (rm == bm && rd < bdd)) ? 1 : 0);
	if (age < 0) {
		fail(c, FEATURE_INVALID, "birthDate '%.*s' is after the reference time",
		     (int)bd.len, bd.ptr);
		return;
	}
	set_number(c->f, age);
	add_basis(c, "Patient", p);
}

static void
bind_gender(fb_ctx_t *c, const features_res_t *p)
{
	slice_t g = str_of(p->node, "gender");

	if (g.len == 0) {
		fail(c, FEATURE_ABSENT, "Patient has no gender");
		return;
	}
	if (!slice_eq_cstr(g, "female") && !slice_eq_cstr(g, "male")) {
		fail(c, FEATURE_INVALID, "gender '%.*s' is neither female nor male", (int)g.len,
		     g.ptr);
		return;
	}
	set_string(c->f, slice_eq_cstr(g, "female") ? "female" : "male");
	add_basis(c, "Patient", p);
}

/* US Core race: african-american when an ombCategory is 2054-5, else other. */
static void
bind_race(fb_ctx_t *c, const features_res_t *p)
{
	const fhir_node_t *exts = fhir_object_get_cstr(p->node, "extension");
	const fhir_node_t *e, *sub;
	size_t i, k;

	if (exts != NULL && fhir_node_kind(exts) == FHIR_ARRAY)
		FHIR_ARRAY_FOREACH(exts, i, e) {
			const fhir_node_t *subs = fhir_object_get_cstr(e, "extension");
			bool aa = false;

			if (!slice_eq_cstr(str_of(e, "url"), US_CORE_RACE))
				continue;
			if (subs != NULL && fhir_node_kind(subs) == FHIR_ARRAY)
				FHIR_ARRAY_FOREACH(subs, k, sub) {
					const fhir_node_t *coding =
					    fhir_object_get_cstr(sub, "valueCoding");

					if (slice_eq_cstr(str_of(sub, "url"), "ombCategory") &&
					    slice_eq_cstr(str_of(coding, "code"),
							  RACE_AFRICAN_AMERICAN))
						aa = true;
				}
			set_string(c->f, aa ? "african-american" : "other");
			add_basis(c, "Patient", p);
			return;
		}
	fail(c, FEATURE_ABSENT, "Patient has no US Core race extension");
}

/* Observation statuses whose value counts. */
static bool
obs_status_ok(const fhir_node_t *obs)
{
	static const char *const ok[] = {"final", "amended", "corrected", NULL};
	slice_t s = str_of(obs, "status");

	for (size_t i = 0; ok[i] != NULL; i++)
		if (slice_eq_cstr(s, ok[i]))
			return true;
	return false;
}

/* The clinical time of an Observation: effective[x] (a period's start), else issued. */
static bool
obs_time(const fhir_node_t *obs, slice_t *text, int64_t *ms)
{
	return time_of(obs, "effectiveDateTime", text, ms) ||
	       time_of(obs, "effectiveInstant", text, ms) ||
	       time_of(fhir_object_get_cstr(obs, "effectivePeriod"), "start", text, ms) ||
	       time_of(obs, "issued", text, ms);
}

static bool
has_value(const fhir_node_t *holder, bool coded)
{
	if (coded)
		return fhir_object_get_cstr(holder, "valueCodeableConcept") != NULL;
	return fhir_object_get_cstr(holder, "valueQuantity") != NULL ||
	       fhir_object_get_cstr(holder, "valueInteger") != NULL;
}

/* The latest usable Observation for in: the Observation itself when its code matches, or
 * a component whose code matches (inside the binding's panels, if it names any), with a value
 * of the right kind, a final status, and a time inside the window. Ties go to the greater id
 * so the choice does not depend on the order of the resources. */
static const features_res_t *
obs_latest(const fb_input_t *in, const features_input_t *data, const fhir_node_t **holder,
	   slice_t *when, int64_t *when_ms)
{
	int64_t from = in->window_count ? window_start(in, data->ref_ms) : INT64_MIN;
	bool coded = in->source == FB_OBSERVATION_FLAG;
	const features_res_t *best = NULL;

	*holder = NULL;
	for (size_t i = 0; i < data->nobservations; i++) {
		const features_res_t *r = &data->observations[i];
		const fhir_node_t *obs = r->node, *h = NULL, *comps, *comp;
		slice_t t;
		int64_t ms;
		size_t k;

		if (!slice_eq_cstr(fhir_resource_type(obs), "Observation") || !obs_status_ok(obs) ||
		    !obs_time(obs, &t, &ms) || ms > data->ref_ms || ms < from)
			continue;
		if (concept_matches(fhir_object_get_cstr(obs, "code"), &in->codes) &&
		    has_value(obs, coded))
			h = obs;
		comps = fhir_object_get_cstr(obs, "component");
		if (h == NULL && comps != NULL && fhir_node_kind(comps) == FHIR_ARRAY &&
		    (in->panels.n == 0 ||
		     concept_matches(fhir_object_get_cstr(obs, "code"), &in->panels)))
			FHIR_ARRAY_FOREACH(comps, k, comp) {
				if (h == NULL &&
				    concept_matches(fhir_object_get_cstr(comp, "code"),
						    &in->codes) &&
				    has_value(comp, coded))
					h = comp;
			}
		if (h == NULL)
			continue;
		if (best == NULL || ms > *when_ms ||
		    (ms == *when_ms && (r->id.len > best->id.len ||
					(r->id.len == best->id.len &&
					 memcmp(r->id.ptr, best->id.ptr, r->id.len) > 0)))) {
			best = r;
			*holder = h;
			*when = t;
			*when_ms = ms;
		}
	}
	return best;
}

static void
fail_no_obs(fb_ctx_t *c, const fb_input_t *in)
{
	const fb_code_t *k = &in->codes.v[0];

	if (in->window_count)
		fail(c, FEATURE_ABSENT, "no Observation %s|%s%s in the last %s", k->system, k->code,
		     k->prefix ? "*" : "", in->window_text);
	else
		fail(c, FEATURE_ABSENT, "no Observation %s|%s%s", k->system, k->code,
		     k->prefix ? "*" : "");
}

/* A number from the latest Observation, converted to the binding's unit. */
static void
bind_observation(fb_ctx_t *c, const fb_input_t *in, const features_input_t *data)
{
	const fhir_node_t *h, *q, *vi;
	const features_res_t *r;
	slice_t when = SLICE_NULL, unit, value;
	int64_t when_ms = 0;
	double factor = 1.0, v;
	char *end;

	r = obs_latest(in, data, &h, &when, &when_ms);
	if (r == NULL) {
		fail_no_obs(c, in);
		return;
	}
	add_basis(c, "Observation", r);
	add_time(c, when, when_ms);
	q = fhir_object_get_cstr(h, "valueQuantity");
	vi = fhir_object_get_cstr(h, "valueInteger");
	value = q != NULL ? fhir_node_text(fhir_object_get_cstr(q, "value")) : fhir_node_text(vi);
	if (q != NULL && fhir_object_get_cstr(q, "value") != NULL &&
	    fhir_node_kind(fhir_object_get_cstr(q, "value")) != FHIR_NUMBER)
		value = SLICE_NULL;
	if (value.len == 0) {
		fail(c, FEATURE_INVALID, "the latest Observation (%s) has no numeric value",
		     c->f->basis[0]);
		return;
	}
	if (q != NULL && str_of(q, "comparator").len > 0) {
		fail(c, FEATURE_INVALID, "the value is bounded ('%.*s'), not measured",
		     (int)str_of(q, "comparator").len, str_of(q, "comparator").ptr);
		return;
	}
	if (in->nunits > 0) {
		/* The UCUM code says the unit; the display unit only when there is no code. */
		unit = str_of(q, "code");
		if (unit.len == 0)
			unit = str_of(q, "unit");
		if (unit.len == 0) {
			fail(c, FEATURE_INVALID, "the value has no unit (%s expected)",
			     in->units[0].ucum);
			return;
		}
		factor = 0;
		for (size_t i = 0; i < in->nunits; i++)
			if (slice_eq_cstr(unit, in->units[i].ucum))
				factor = in->units[i].factor;
		if (factor == 0) {
			fail(c, FEATURE_INVALID, "unit '%.*s' cannot be converted to %s",
			     (int)unit.len, unit.ptr, in->units[0].ucum);
			return;
		}
	}
	{
		char *tmp = arena_strndup(c->a, value.ptr, value.len);

		v = strtod(tmp, &end);
		if (*end != '\0') {
			fail(c, FEATURE_INVALID, "value '%s' is not a number", tmp);
			return;
		}
	}
	set_number(c->f, v * factor);
}

/* 0/1 from the latest Observation's coded value. */
static void
bind_observation_flag(fb_ctx_t *c, const fb_input_t *in, const features_input_t *data)
{
	const fhir_node_t *h;
	const features_res_t *r;
	slice_t when = SLICE_NULL;
	int64_t when_ms = 0;

	r = obs_latest(in, data, &h, &when, &when_ms);
	if (r == NULL) {
		fail_no_obs(c, in);
		return;
	}
	add_basis(c, "Observation", r);
	add_time(c, when, when_ms);
	set_number(c->f,
		   concept_matches(fhir_object_get_cstr(h, "valueCodeableConcept"), &in->yes));
}

/* Whether a Condition is in force: clinicalStatus active/recurrence/relapse or absent, and
 * not entered in error or refuted. */
static bool
condition_active(const fhir_node_t *cond)
{
	static const char *const active[] = {"active", "recurrence", "relapse", NULL};
	static const char *const wrong[] = {"entered-in-error", "refuted", NULL};
	const fhir_node_t *cs = fhir_object_get_cstr(cond, "clinicalStatus");

	if (cs != NULL && !concept_has(cs, NULL, active))
		return false;
	return !concept_has(fhir_object_get_cstr(cond, "verificationStatus"), NULL, wrong);
}

/* 1 when an active Condition has one of the codes (each such Condition is in the basis). */
static void
bind_condition(fb_ctx_t *c, const fb_input_t *in, const features_input_t *data)
{
	set_number(c->f, 0);
	for (size_t i = 0; i < data->nconditions; i++) {
		const features_res_t *r = &data->conditions[i];
		slice_t t;
		int64_t ms;
		bool timed;

		if (!slice_eq_cstr(fhir_resource_type(r->node), "Condition") ||
		    !concept_matches(fhir_object_get_cstr(r->node, "code"), &in->codes) ||
		    !condition_active(r->node))
			continue;
		timed = time_of(r->node, "onsetDateTime", &t, &ms) ||
			time_of(r->node, "recordedDate", &t, &ms);
		if (timed && ms > data->ref_ms)
			continue;
		c->f->number = 1;
		add_basis(c, "Condition", r);
		if (timed)
			add_time(c, t, ms);
	}
}

static void
bind_medications(fb_ctx_t *c, const fb_input_t *in, const features_res_t *list, size_t n,
		 const char *type, const char *const *statuses, const char *const *times,
		 int64_t ref_ms)
{
	for (size_t i = 0; i < n; i++) {
		const fhir_node_t *res = list[i].node;
		bool ok = false, timed = false;
		slice_t t = SLICE_NULL;
		int64_t ms = 0;

		if (!slice_eq_cstr(fhir_resource_type(res), type))
			continue;
		for (size_t k = 0; statuses[k] != NULL; k++)
			ok = ok || slice_eq_cstr(str_of(res, "status"), statuses[k]);
		if (!ok || !concept_matches(fhir_object_get_cstr(res, "medicationCodeableConcept"),
					    &in->codes))
			continue;
		for (size_t k = 0; times[k] != NULL && !timed; k++)
			timed = strcmp(times[k], "effectivePeriod") == 0
				    ? time_of(fhir_object_get_cstr(res, times[k]), "start", &t, &ms)
				    : time_of(res, times[k], &t, &ms);
		if (timed && ms > ref_ms)
			continue;
		c->f->number = 1;
		add_basis(c, type, &list[i]);
		if (timed)
			add_time(c, t, ms);
	}
}

/* 1 when an active MedicationRequest or MedicationStatement has one of the RxNorm codes. */
static void
bind_medication(fb_ctx_t *c, const fb_input_t *in, const features_input_t *data)
{
	static const char *const req_status[] = {"active", NULL};
	static const char *const req_time[] = {"authoredOn", NULL};
	static const char *const st_status[] = {"active", "intended", NULL};
	static const char *const st_time[] = {"effectiveDateTime", "effectivePeriod",
					      "dateAsserted", NULL};

	set_number(c->f, 0);
	bind_medications(c, in, data->medication_requests, data->nmedication_requests,
			 "MedicationRequest", req_status, req_time, data->ref_ms);
	bind_medications(c, in, data->medication_statements, data->nmedication_statements,
			 "MedicationStatement", st_status, st_time, data->ref_ms);
}

static int
cmp_str(const void *x, const void *y)
{
	return strcmp(*(const char *const *)x, *(const char *const *)y);
}

int
features_bind(arena_t *a, const features_binding_t *b, const features_input_t *in,
	      features_vector_t *out)
{
	size_t cap = 0;

	memset(out, 0, sizeof(*out));
	if (a == NULL || b == NULL || in == NULL)
		return -FG_EINVAL;
	out->ref_ms = in->ref_ms;
	out->items = arena_zalloc(a, b->n * sizeof(*out->items));
	out->n = b->n;
	for (size_t i = 0; i < b->n; i++) {
		const fb_input_t *bi = &b->inputs[i];
		feature_t *f = &out->items[i];
		fb_ctx_t c = {a, f, 0};

		f->name = bi->name;
		f->label = bi->label;
		f->unit = bi->source == FB_AGE ? "y" : bi->nunits > 0 ? bi->units[0].ucum : NULL;
		if ((bi->source == FB_AGE || bi->source == FB_GENDER || bi->source == FB_RACE) &&
		    (in->patient == NULL || in->patient->node == NULL))
			fail(&c, FEATURE_ABSENT, "no Patient");
		else if (bi->source == FB_AGE)
			bind_age(&c, in->patient, in->ref_ms);
		else if (bi->source == FB_GENDER)
			bind_gender(&c, in->patient);
		else if (bi->source == FB_RACE)
			bind_race(&c, in->patient);
		else if (bi->source == FB_OBSERVATION)
			bind_observation(&c, bi, in);
		else if (bi->source == FB_OBSERVATION_FLAG)
			bind_observation_flag(&c, bi, in);
		else if (bi->source == FB_CONDITION)
			bind_condition(&c, bi, in);
		else
			bind_medication(&c, bi, in);

		if (f->status != FEATURE_FOUND) {
			/* Refused data is not a basis of the score, nor is its time. */
			f->nbasis = 0;
			f->source_time = NULL;
			if (bi->has_default) {
				f->kind = bi->default_kind;
				f->number = bi->default_number;
				f->string = bi->default_string;
				f->defaulted = true;
			} else if (out->no_score == NULL) {
				out->no_score = arena_printf(
				    a, "%s input %s: %s",
				    f->status == FEATURE_INVALID ? "invalid" : "missing", f->name,
				    f->reason);
			}
			continue;
		}
		if (f->nbasis > 1)
			qsort(f->basis, f->nbasis, sizeof(*f->basis), cmp_str);
		for (size_t k = 0; k < f->nbasis; k++) {
			out->basis =
			    arena_array_grow(a, out->basis, out->nbasis, &cap, sizeof(*out->basis));
			out->basis[out->nbasis++] = f->basis[k];
		}
		if (f->source_time != NULL &&
		    (out->source_time == NULL || f->source_ms > out->source_ms ||
		     (f->source_ms == out->source_ms &&
		      strcmp(f->source_time, out->source_time) > 0))) {
			out->source_time = f->source_time;
			out->source_ms = f->source_ms;
		}
	}
	if (out->nbasis > 1) {
		size_t w = 1;

		qsort(out->basis, out->nbasis, sizeof(*out->basis), cmp_str);
		for (size_t i = 1; i < out->nbasis; i++)
			if (strcmp(out->basis[i], out->basis[w - 1]) != 0)
				out->basis[w++] = out->basis[i];
		out->nbasis = w;
	}
	return 0;
}

const feature_t *
features_vector_get(const features_vector_t *v, const char *name)
{
	for (size_t i = 0; i < v->n; i++)
		if (strcmp(v->items[i].name, name) == 0)
			return &v->items[i];
	return NULL;
}

bool
features_binding_uses_code(const features_binding_t *b, features_res_type_t type, slice_t system,
			   slice_t code)
{
	for (size_t i = 0; i < b->n; i++) {
		const fb_input_t *in = &b->inputs[i];

		switch (type) {
		case FEATURES_PATIENT:
			if (in->source == FB_AGE || in->source == FB_GENDER ||
			    in->source == FB_RACE)
				return true;
			break;
		case FEATURES_OBSERVATION:
			if ((in->source == FB_OBSERVATION || in->source == FB_OBSERVATION_FLAG) &&
			    (codes_match(&in->codes, system, code) ||
			     codes_match(&in->panels, system, code)))
				return true;
			break;
		case FEATURES_CONDITION:
			if (in->source == FB_CONDITION && codes_match(&in->codes, system, code))
				return true;
			break;
		case FEATURES_MEDICATION_REQUEST:
		case FEATURES_MEDICATION_STATEMENT:
			if (in->source == FB_MEDICATION && codes_match(&in->codes, system, code))
				return true;
			break;
		}
	}
	return false;
}

/* Whether any coding of a CodeableConcept is an input of b. */
static bool
concept_used(const features_binding_t *b, features_res_type_t type, const fhir_node_t *cc)
{
	const fhir_node_t *codings = cc != NULL ? fhir_object_get_cstr(cc, "coding") : NULL;
	const fhir_node_t *c;
	size_t i;

	if (codings == NULL || fhir_node_kind(codings) != FHIR_ARRAY)
		return false;
	FHIR_ARRAY_FOREACH(codings, i, c) {
		if (features_binding_uses_code(b, type, str_of(c, "system"), str_of(c, "code")))
			return true;
	}
	return false;
}

bool
features_binding_uses_resource(const features_binding_t *b, const fhir_node_t *res)
{
	slice_t type = fhir_resource_type(res);
	const fhir_node_t *comps, *comp;
	size_t i;

	if (slice_eq_cstr(type, "Patient"))
		return features_binding_uses_code(b, FEATURES_PATIENT, SLICE_NULL, SLICE_NULL);
	if (slice_eq_cstr(type, "Condition"))
		return concept_used(b, FEATURES_CONDITION, fhir_object_get_cstr(res, "code"));
	if (slice_eq_cstr(type, "MedicationRequest"))
		return concept_used(b, FEATURES_MEDICATION_REQUEST,
				    fhir_object_get_cstr(res, "medicationCodeableConcept"));
	if (slice_eq_cstr(type, "MedicationStatement"))
		return concept_used(b, FEATURES_MEDICATION_STATEMENT,
				    fhir_object_get_cstr(res, "medicationCodeableConcept"));
	if (!slice_eq_cstr(type, "Observation"))
		return false;
	if (concept_used(b, FEATURES_OBSERVATION, fhir_object_get_cstr(res, "code")))
		return true;
	comps = fhir_object_get_cstr(res, "component");
	if (comps != NULL && fhir_node_kind(comps) == FHIR_ARRAY)
		FHIR_ARRAY_FOREACH(comps, i, comp) {
			if (concept_used(b, FEATURES_OBSERVATION,
					 fhir_object_get_cstr(comp, "code")))
				return true;
		}
	return false;
}
