/* Loading a mapping set: reads the shipped and site folders, lets site files override shipped
 * ones, parses every file, then checks the whole set against the R4 metadata (targets, maps,
 * vocabularies, fields, types, unreachable lines). A set with any error is not built. */
#include "config.h"

#include <sys/stat.h>

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/err.h"
#include "lib/hash.h"
#include "lib/xalloc.h"
#include "mappings/map_int.h"

#define MAP_MAX_FILES 10000
#define MAP_FILE_CAP  (4u << 20)

/* Fields per segment (v2.8/2.9, generous): catches PID-300, not version differences. */
static const struct {
	const char id[4];
	unsigned fields;
} map_segments[] = {
    {"ACC", 12}, {"AIG", 14}, {"AIL", 12}, {"AIP", 12}, {"AIS", 12}, {"AL1", 6},  {"ARV", 8},
    {"DB1", 8},  {"DG1", 26}, {"DRG", 34}, {"ERR", 12}, {"EVN", 7},  {"FT1", 56}, {"GT1", 57},
    {"IAM", 30}, {"IN1", 55}, {"IN2", 72}, {"IN3", 28}, {"MRG", 7},  {"MSA", 9},  {"MSH", 28},
    {"NK1", 41}, {"NTE", 9},  {"OBR", 55}, {"OBX", 33}, {"ODS", 4},  {"ORC", 38}, {"PD1", 22},
    {"PDA", 9},  {"PID", 40}, {"PR1", 25}, {"PRT", 24}, {"PV1", 54}, {"PV2", 50}, {"QRD", 12},
    {"ROL", 14}, {"RXA", 29}, {"RXC", 10}, {"RXD", 34}, {"RXE", 51}, {"RXG", 27}, {"RXO", 38},
    {"RXR", 6},  {"SAC", 49}, {"SCH", 27}, {"SFT", 6},  {"SPM", 35}, {"TQ1", 14}, {"TQ2", 10},
    {"TXA", 28}, {"UB1", 23}, {"UB2", 17},
};

unsigned
map_segment_fields(slice_t seg)
{
	for (size_t i = 0; i < sizeof(map_segments) / sizeof(map_segments[0]); i++)
		if (slice_eq_cstr(seg, map_segments[i].id))
			return map_segments[i].fields;
	return 0;
}

const map_def_t *
map_set_find(const map_set_t *set, map_kind_t kind, slice_t name)
{
	for (size_t i = 0; i < set->ndefs; i++)
		if (set->defs[i]->kind == kind && slice_eq(set->defs[i]->name, name))
			return set->defs[i];
	return NULL;
}

/* Edit distance, for "did you mean" hints. */
static size_t
map_distance(slice_t a, slice_t b)
{
	size_t row[64], prev, tmp;

	if (a.len >= 63 || b.len >= 63)
		return 99;
	for (size_t j = 0; j <= b.len; j++)
		row[j] = j;
	for (size_t i = 1; i <= a.len; i++) {
		prev = row[0];
		row[0] = i;
		for (size_t j = 1; j <= b.len; j++) {
			size_t sub = prev + ((a.ptr[i - 1] | 32) != (b.ptr[j - 1] | 32));
			size_t best = row[j] + 1 < row[j - 1] + 1 ? row[j] + 1 : row[j - 1] + 1;

			tmp = row[j];
			row[j] = sub < best ? sub : best;
			prev = tmp;
		}
	}
	return row[b.len];
}

/* Shared state of one load. */
typedef struct {
	map_set_t *set;
	map_diags_t dg;
	char hint[256];
} map_ld_t;

static const char *
map_hint_elem(map_ld_t *ld, const fhir_type_t *t, slice_t name)
{
	size_t best = 4;
	const char *pick = NULL;

	for (size_t i = 0; t != NULL && i < t->nelems; i++) {
		size_t d = map_distance(name, slice_cstr(t->elems[i].name));

		if (d < best) {
			best = d;
			pick = t->elems[i].name;
		}
	}
	if (pick == NULL) {
		snprintf(ld->hint, sizeof(ld->hint),
			 "see the elements of %s in the FHIR R4 specification",
			 t != NULL ? t->name : "the type");
		return ld->hint;
	}
	snprintf(ld->hint, sizeof(ld->hint), "did you mean '%s'?", pick);
	return ld->hint;
}

static const char *
map_hint_def(map_ld_t *ld, map_kind_t kind, slice_t name)
{
	size_t best = 5;
	const map_def_t *pick = NULL;

	for (size_t i = 0; i < ld->set->ndefs; i++) {
		size_t d;

		if (ld->set->defs[i]->kind != kind)
			continue;
		d = map_distance(name, ld->set->defs[i]->name);
		if (d < best) {
			best = d;
			pick = ld->set->defs[i];
		}
	}
	if (pick == NULL)
		return kind == MAP_VOCAB      ? "vocabularies are vocab/NAME.csv files"
		       : kind == MAP_DATATYPE ? "datatype maps are datatypes/TYPE-Target.map "
						"files, or a built-in such as "
						"DTM[dateTime]"
					      : "segment maps are segments/SEG-Type.map files";
	snprintf(ld->hint, sizeof(ld->hint), "did you mean %.*s (%s)?", (int)pick->name.len,
		 pick->name.ptr, pick->rel);
	return ld->hint;
}

static bool
map_is_quantity(const char *t)
{
	static const char *qs[] = {"Quantity", "SimpleQuantity", "Age",           "Count",
				   "Distance", "Duration",       "MoneyQuantity", NULL};

	for (size_t i = 0; qs[i] != NULL; i++)
		if (strcmp(t, qs[i]) == 0)
			return true;
	return false;
}

static bool
map_is_string_form(const fhir_type_t *t)
{
	return t != NULL && t->kind == FHIR_TYPE_PRIMITIVE && t->json_form == FHIR_JSON_STRING;
}

/* Whether what map m makes can go where an element of type t goes. */
static bool
map_type_fits(const fhir_type_t *t, const map_def_t *m)
{
	if (t == NULL || m->type == NULL)
		return false;
	if (t == m->type || strcmp(t->name, m->type->name) == 0)
		return true;
	if (strcmp(t->name, "Reference") == 0 && m->is_resource)
		return true;
	if (map_is_quantity(t->name) && map_is_quantity(m->type->name))
		return true;
	return map_is_string_form(t) && map_is_string_form(m->type);
}

static bool
map_builtin_fits(map_builtin_t bi, const fhir_type_t *t)
{
	if (t == NULL || t->kind != FHIR_TYPE_PRIMITIVE)
		return false;
	switch (bi) {
	case MAP_BI_DATE:
	case MAP_BI_DATETIME:
	case MAP_BI_INSTANT:
		return strcmp(t->name, "date") == 0 || strcmp(t->name, "dateTime") == 0 ||
		       strcmp(t->name, "instant") == 0;
	case MAP_BI_TIME:
		return strcmp(t->name, "time") == 0;
	case MAP_BI_DECIMAL:
	case MAP_BI_INTEGER:
	case MAP_BI_POSITIVE:
	case MAP_BI_UNSIGNED:
		return t->json_form == FHIR_JSON_NUMBER;
	case MAP_BI_BOOLEAN:
		return t->json_form == FHIR_JSON_BOOL;
	case MAP_BI_STRING:
		return t->json_form == FHIR_JSON_STRING;
	case MAP_BI_BASE64:
		return strcmp(t->name, "base64Binary") == 0;
	case MAP_BI_NONE:
		break;
	}
	return false;
}

/* Resolves a path from type t; on failure reports and returns false. */
static bool
map_path_check(map_ld_t *ld, const map_def_t *d, const map_line_t *l, const fhir_type_t *t,
	       map_step_t *steps, size_t n)
{
	const fhir_type_t *element = fhir_meta_type(SLICE_LIT("Element"));

	for (size_t i = 0; i < n; i++) {
		map_step_t *st = &steps[i];
		const fhir_type_t *in = t;

		if (t == NULL) {
			map_diag(&ld->dg, MAP_DIAG_ERROR, l->file, l->lineno, st->col,
				 "make the resource on its own and reference it",
				 "cannot map into a contained resource");
			return false;
		}
		if (t->kind == FHIR_TYPE_PRIMITIVE) {
			if (i > 0 && steps[i - 1].array) {
				map_diag(
				    &ld->dg, MAP_DIAG_ERROR, l->file, l->lineno, st->col, NULL,
				    "extensions on repeating primitives (%.*s) are not supported",
				    (int)steps[i - 1].name.len, steps[i - 1].name.ptr);
				return false;
			}
			in = element;
			st->under_primitive = true;
		}
		st->elem = fhir_meta_elem(in, st->name);
		if (st->elem == NULL) {
			map_diag(&ld->dg, MAP_DIAG_ERROR, l->file, l->lineno, st->col,
				 map_hint_elem(ld, in, st->name), "%s has no element '%.*s'",
				 i == 0 ? t->name : in->name, (int)st->name.len, st->name.ptr);
			return false;
		}
		st->rank = 2 * (uint32_t)(st->elem - in->elems) + 2;
		st->array = (st->elem->flags & FHIR_ELEM_ARRAY) != 0;
		st->primitive = (st->elem->flags & FHIR_ELEM_PRIMITIVE) != 0;
		st->type = fhir_meta_type(slice_cstr(st->elem->type));
		t = st->type;
	}
	return true;
}

static const fhir_type_t *
map_line_target_type(const map_def_t *d, const map_line_t *l)
{
	if (l->to_value)
		return d->type;
	return l->nsteps > 0 ? l->steps[l->nsteps - 1].type : NULL;
}

static void
map_check_ref(map_ld_t *ld, const char *file, unsigned lineno, const map_ref_t *r, unsigned col)
{
	unsigned max;

	if (r->seg[0] == '\0' || r->field == 0)
		return;
	max = map_segment_fields(slice_make(r->seg, 3));
	if (max > 0 && r->field > max)
		map_diag(&ld->dg, MAP_DIAG_ERROR, file, lineno, col,
			 "fields are numbered from 1; MSH-1 is the field separator",
			 "%s has %u fields: %s-%u does not exist", r->seg, max, r->seg, r->field);
}

static void
map_check_cond_refs(map_ld_t *ld, const char *file, unsigned lineno, const map_cond_t *c)
{
	if (c == NULL)
		return;
	map_check_ref(ld, file, lineno, &c->a.ref, c->a.col);
	map_check_ref(ld, file, lineno, &c->b.ref, c->b.col);
	for (size_t i = 0; i < c->nlist; i++)
		map_check_ref(ld, file, lineno, &c->list[i].ref, c->list[i].col);
	map_check_cond_refs(ld, file, lineno, c->l);
	map_check_cond_refs(ld, file, lineno, c->r);
}

static bool
map_const_fits(const map_operand_t *o, const fhir_type_t *t)
{
	if (t == NULL || t->kind != FHIR_TYPE_PRIMITIVE)
		return false;
	switch (o->kind) {
	case MAP_OPD_STRING:
		return t->json_form == FHIR_JSON_STRING;
	case MAP_OPD_NUMBER:
		return t->json_form == FHIR_JSON_NUMBER;
	case MAP_OPD_BOOL:
		return t->json_form == FHIR_JSON_BOOL;
	case MAP_OPD_REF:
		break;
	}
	return false;
}

static bool
map_operand_equal(const map_operand_t *a, const map_operand_t *b)
{
	return a->kind == b->kind && a->fn == b->fn &&
	       memcmp(&a->ref, &b->ref, sizeof(a->ref)) == 0 && slice_eq(a->text, b->text);
}

static bool
map_src_equal(const map_line_t *a, const map_line_t *b)
{
	if (a->src.kind != b->src.kind || a->src.nparts != b->src.nparts ||
	    !slice_eq(a->src.sep, b->src.sep) || !slice_eq(a->as_name, b->as_name) ||
	    !slice_eq(a->via_name, b->via_name))
		return false;
	for (size_t i = 0; i < a->src.nparts; i++)
		if (!map_operand_equal(&a->src.parts[i], &b->src.parts[i]))
			return false;
	if (a->src.ncuts != b->src.ncuts)
		return false;
	for (size_t i = 0; i < a->src.ncuts; i++)
		if (a->src.cuts[i] != b->src.cuts[i])
			return false;
	return true;
}

static bool
map_target_equal(const map_line_t *a, const map_line_t *b)
{
	if (a->to_value != b->to_value || a->nsteps != b->nsteps || a->slot != b->slot)
		return false;
	for (size_t i = 0; i < a->nsteps; i++)
		if (!slice_eq(a->steps[i].name, b->steps[i].name) ||
		    a->steps[i].index != b->steps[i].index)
			return false;
	return true;
}

/* A line after one that always fills the same single-valued target never does anything. */
static void
map_check_unreachable(map_ld_t *ld, const map_def_t *d, size_t i)
{
	const map_line_t *l = &d->lines[i];
	bool single = l->to_value || l->nsteps == 0 || !l->steps[l->nsteps - 1].array ||
		      l->steps[l->nsteps - 1].index > 0;

	for (size_t j = 0; j < i; j++) {
		const map_line_t *p = &d->lines[j];

		if (p->is_ref != l->is_ref || !map_target_equal(p, l) || p->cond != NULL)
			continue;
		if (d->kind == MAP_MESSAGE && (p->is_ref ? p->owner != l->owner : true))
			continue;
		if (single && (p->src.kind == MAP_SRC_CONST || map_src_equal(p, l)) &&
		    p->elem_group == l->elem_group) {
			map_diag(&ld->dg, MAP_DIAG_WARNING, l->file, l->lineno, l->col,
				 "give the earlier line a condition, or delete this one",
				 "unreachable: line %u always sets this target first", p->lineno);
			return;
		}
		if (!single && map_src_equal(p, l) && l->cond == NULL) {
			map_diag(&ld->dg, MAP_DIAG_WARNING, l->file, l->lineno, l->col,
				 "delete one of them", "duplicate of line %u", p->lineno);
			return;
		}
	}
}

/* as / via of a segment or datatype map line, against its target type t. */
static void
map_check_conversions(map_ld_t *ld, map_def_t *d, map_line_t *l, const fhir_type_t *t)
{
	const char *tname = t != NULL ? t->name : "?";

	if (l->as_name.len > 0) {
		l->as_builtin = map_builtin_lookup(l->as_name);
		if (l->as_builtin != MAP_BI_NONE) {
			if (!map_builtin_fits(l->as_builtin, t))
				map_diag(&ld->dg, MAP_DIAG_ERROR, l->file, l->lineno, l->as_col,
					 NULL, "%.*s does not make a %s", (int)l->as_name.len,
					 l->as_name.ptr, tname);
		} else {
			l->as_def = map_set_find(ld->set, MAP_DATATYPE, l->as_name);
			if (l->as_def == NULL)
				map_diag(&ld->dg, MAP_DIAG_ERROR, l->file, l->lineno, l->as_col,
					 map_hint_def(ld, MAP_DATATYPE, l->as_name),
					 "unknown datatype map %.*s", (int)l->as_name.len,
					 l->as_name.ptr);
			else if (l->as_def->type != NULL && !map_type_fits(t, l->as_def))
				map_diag(&ld->dg, MAP_DIAG_ERROR, l->file, l->lineno, l->as_col,
					 "the map's name says what it makes: CX[Identifier] makes "
					 "an Identifier",
					 "%.*s makes a %.*s, but the target is a %s",
					 (int)l->as_name.len, l->as_name.ptr,
					 (int)l->as_def->fhir.len, l->as_def->fhir.ptr, tname);
		}
	}
	if ((l->as_name.len > 0 || l->via_name.len > 0) &&
	    (l->src.kind != MAP_SRC_VALUE || l->src.nparts != 1 ||
	     l->src.parts[0].kind != MAP_OPD_REF))
		map_diag(&ld->dg, MAP_DIAG_ERROR, l->file, l->lineno,
			 l->as_name.len > 0 ? l->as_col : l->via_col, NULL,
			 "'as' and 'via' apply to one field, not to text put together");
	if (l->via_name.len > 0) {
		l->via_def = map_set_find(ld->set, MAP_VOCAB, l->via_name);
		if (l->via_def == NULL)
			map_diag(&ld->dg, MAP_DIAG_ERROR, l->file, l->lineno, l->via_col,
				 map_hint_def(ld, MAP_VOCAB, l->via_name),
				 "unknown vocabulary %.*s", (int)l->via_name.len, l->via_name.ptr);
		if (t != NULL && t->kind != FHIR_TYPE_PRIMITIVE && strcmp(t->name, "Coding") != 0 &&
		    strcmp(t->name, "CodeableConcept") != 0)
			map_diag(&ld->dg, MAP_DIAG_ERROR, l->file, l->lineno, l->via_col, NULL,
				 "a vocabulary makes a code, Coding or CodeableConcept, not a %s",
				 tname);
		if (l->as_name.len > 0 && (t == NULL || strcmp(t->name, "CodeableConcept") != 0))
			map_diag(&ld->dg, MAP_DIAG_ERROR, l->file, l->lineno, l->via_col,
				 "use 'via' alone for a code or a Coding",
				 "'as' and 'via' together only make a CodeableConcept");
	}
	if (l->src.kind == MAP_SRC_CONST) {
		if (!map_const_fits(&l->src.parts[0], t))
			map_diag(&ld->dg, MAP_DIAG_ERROR, l->file, l->lineno, l->src.parts[0].col,
				 "strings are quoted; numbers and true/false are not",
				 "this constant does not fit a %s", tname);
	} else if ((l->src.kind == MAP_SRC_VALUE || l->src.kind == MAP_SRC_JOIN) &&
		   l->as_name.len == 0 && l->via_name.len == 0 && t != NULL &&
		   t->kind != FHIR_TYPE_PRIMITIVE) {
		map_diag(&ld->dg, MAP_DIAG_ERROR, l->file, l->lineno, l->col,
			 "say which datatype map builds it, e.g. 'as XPN[HumanName]'",
			 "the target is a %s: a field alone cannot fill it", tname);
	}
}

static size_t
map_key_steps(const map_line_t *l)
{
	for (size_t i = 0; i < l->nsteps; i++)
		if (l->steps[i].index > 0)
			return i + 1;
	return l->nsteps;
}

static bool
map_key_equal(const map_line_t *a, size_t ka, const map_line_t *b, size_t kb)
{
	if (ka != kb || a->to_value != b->to_value || a->is_id != b->is_id)
		return false;
	for (size_t i = 0; i < ka; i++)
		if (!slice_eq(a->steps[i].name, b->steps[i].name) ||
		    a->steps[i].index != b->steps[i].index)
			return false;
	return true;
}

/* The first absolute, un-indexed field a line reads: what repeats its element. */
static bool
map_line_driver(const map_line_t *l, map_ref_t *out)
{
	if (l->src.kind != MAP_SRC_VALUE && l->src.kind != MAP_SRC_JOIN)
		return false;
	for (size_t i = 0; i < l->src.nparts; i++) {
		const map_ref_t *r = &l->src.parts[i].ref;

		if (l->src.parts[i].kind == MAP_OPD_REF && r->seg[0] != '\0' && r->field > 0 &&
		    r->rep == 0) {
			*out = *r;
			return true;
		}
	}
	return false;
}

/* A ref a group reads (a line's source, or in a condition with cond set) as a bit of
 * map_egroup_t.needs: in a datatype map part n of its value (bit n - 1), in a segment map
 * field n of its own segment. False when it is neither: a group reading it always runs.
 * Conditions' refs count too, because a valued field that a condition reads is marked used
 * (explain); their refs to a datatype map's value mark nothing, and need no bit. */
static bool
map_ref_needs(const map_def_t *d, const map_operand_t *o, bool cond, uint64_t *needs)
{
	const map_ref_t *r = &o->ref;

	if (o->kind != MAP_OPD_REF)
		return true;
	if (d->kind == MAP_DATATYPE) {
		if (r->seg[0] != '\0')
			return false;
		if (cond)
			return true;
		if (o->fn != MAP_FN_NONE || r->comp == 0 || r->comp > 32)
			return false;
		*needs |= (uint64_t)1 << (r->comp - 1);
		return true;
	}
	if (r->seg[0] == '\0')
		return cond;
	if (memcmp(r->seg, d->v2, 4) != 0 || r->field == 0 || r->field > 64 ||
	    (!cond && o->fn != MAP_FN_NONE))
		return false;
	*needs |= (uint64_t)1 << (r->field - 1);
	return true;
}

static bool
map_cond_needs(const map_def_t *d, const map_cond_t *c, uint64_t *needs)
{
	if (c == NULL)
		return true;
	if (!map_ref_needs(d, &c->a, true, needs) || !map_ref_needs(d, &c->b, true, needs))
		return false;
	for (size_t i = 0; i < c->nlist; i++)
		if (!map_ref_needs(d, &c->list[i], true, needs))
			return false;
	return map_cond_needs(d, c->l, needs) && map_cond_needs(d, c->r, needs);
}

/* What a group of a segment or datatype map needs valued to do anything
 * (map_egroup_t.needs); 0 when it may give something without them. A line gives nothing
 * when each of its concatenations has a ref and every ref is empty; a constant of an indexed
 * group with a source waits for a line that does; ids may come from elsewhere. */
static uint64_t
map_group_needs(const map_def_t *d, const map_egroup_t *g)
{
	uint64_t needs = 0;

	if (d->kind != MAP_DATATYPE && d->kind != MAP_SEGMENT)
		return 0;
	for (size_t k = 0; k < g->nlines; k++) {
		const map_line_t *l = &d->lines[g->lines[k]];

		if (l->is_id || !map_cond_needs(d, l->cond, &needs))
			return 0;
		if (l->src.kind == MAP_SRC_CONST && g->indexed && g->has_source)
			continue;
		if ((l->src.kind != MAP_SRC_VALUE && l->src.kind != MAP_SRC_JOIN) ||
		    l->src.ncuts == 0 || l->src.cuts[0] != 0)
			return 0;
		for (size_t c = 0; c < l->src.ncuts; c++) {
			size_t to = c + 1 < l->src.ncuts ? l->src.cuts[c + 1] : l->src.nparts;
			bool has_ref = false;

			for (size_t i = l->src.cuts[c]; i < to; i++) {
				if (!map_ref_needs(d, &l->src.parts[i], false, &needs))
					return 0;
				has_ref |= l->src.parts[i].kind == MAP_OPD_REF;
			}
			if (!has_ref)
				return 0;
		}
	}
	return needs;
}

/* Groups the lines of a segment or datatype map into the elements they build. */
static void
map_build_groups(map_ld_t *ld, map_def_t *d)
{
	arena_t *a = ld->set->arena;
	map_egroup_t *g = arena_alloc(a, (d->nlines ? d->nlines : 1) * sizeof(*g));
	size_t ng = 0;

	for (size_t i = 0; i < d->nlines; i++) {
		map_line_t *l = &d->lines[i];
		size_t k = map_key_steps(l), gi;

		for (gi = 0; gi < ng; gi++)
			if (map_key_equal(&d->lines[g[gi].lines[0]], g[gi].key_steps, l, k))
				break;
		if (gi == ng) {
			memset(&g[ng], 0, sizeof(g[ng]));
			g[ng].lines = arena_alloc(a, d->nlines * sizeof(size_t));
			g[ng].key_steps = k;
			g[ng].indexed = k > 0 && l->steps[k - 1].index > 0;
			g[ng].repeats = k > 0 && l->steps[k - 1].array;
			ng++;
		}
		g[gi].lines[g[gi].nlines++] = i;
		g[gi].has_source |= l->src.kind == MAP_SRC_VALUE || l->src.kind == MAP_SRC_JOIN;
		l->elem_group = gi;
		if (!g[gi].has_driver && !l->is_id)
			g[gi].has_driver = map_line_driver(l, &g[gi].driver);
	}
	for (size_t gi = 0; gi < ng; gi++)
		g[gi].needs = map_group_needs(d, &g[gi]);
	d->egroups = g;
	d->negroups = ng;
}

static void
map_check_map(map_ld_t *ld, map_def_t *d)
{
	d->type = fhir_meta_type(d->fhir);
	d->is_resource = d->type != NULL && d->type->kind == FHIR_TYPE_RESOURCE;
	if (d->type == NULL) {
		map_diag(&ld->dg, MAP_DIAG_ERROR, d->path, 0, 0,
			 "the part after the first '-' of the file name is the FHIR type it makes",
			 "%.*s is not a FHIR R4 type", (int)d->fhir.len, d->fhir.ptr);
		return;
	}
	if (d->kind == MAP_DATATYPE && map_builtin_lookup(d->name) != MAP_BI_NONE)
		map_diag(&ld->dg, MAP_DIAG_ERROR, d->path, 0, 0, "choose another name",
			 "%.*s is built in", (int)d->name.len, d->name.ptr);
	for (size_t i = 0; i < d->nlines; i++) {
		map_line_t *l = &d->lines[i];
		const fhir_type_t *t;

		if (l->to_value) {
			if (d->type->kind != FHIR_TYPE_PRIMITIVE) {
				map_diag(
				    &ld->dg, MAP_DIAG_ERROR, l->file, l->lineno, l->col,
				    "$value is for maps that make a primitive, e.g. HD-uri.map",
				    "%s is not a primitive: name its elements", d->type->name);
				continue;
			}
		} else if (d->type->kind == FHIR_TYPE_PRIMITIVE) {
			map_diag(&ld->dg, MAP_DIAG_ERROR, l->file, l->lineno, l->col,
				 "write '$value <- ...'", "a map that makes a %s fills $value",
				 d->type->name);
			continue;
		} else if (!map_path_check(ld, d, l, d->type, l->steps, l->nsteps)) {
			continue;
		}
		if (l->is_id && !d->is_resource) {
			map_diag(&ld->dg, MAP_DIAG_ERROR, l->file, l->lineno, l->col, NULL,
				 "only maps that make a resource declare its id");
			continue;
		}
		t = l->is_id ? NULL : map_line_target_type(d, l);
		for (size_t p = 0; p < l->src.nparts; p++)
			map_check_ref(ld, l->file, l->lineno, &l->src.parts[p].ref,
				      l->src.parts[p].col);
		map_check_cond_refs(ld, l->file, l->lineno, l->cond);
		if (!l->is_id)
			map_check_conversions(ld, d, l, t);
	}
	map_build_groups(ld, d);
	for (size_t i = 0; i < d->nlines; i++)
		map_check_unreachable(ld, d, i);
}

static void
map_check_message(map_ld_t *ld, map_def_t *d)
{
	for (size_t s = 0; s < d->nslots; s++) {
		map_slot_t *sl = &d->slots[s];

		sl->meta = fhir_meta_type(sl->type);
		sl->create_line = (size_t)-1;
	}
	for (size_t i = 0; i < d->nlines; i++) {
		map_line_t *l = &d->lines[i];
		map_slot_t *sl = &d->slots[l->slot];
		const fhir_type_t *t;

		if (sl->meta == NULL || (!sl->is_bundle && sl->meta->kind != FHIR_TYPE_RESOURCE)) {
			map_diag(&ld->dg, MAP_DIAG_ERROR, l->file, l->lineno, l->col,
				 "slots are resource types: Patient[1], Observation[2]",
				 "%.*s is not a FHIR R4 resource", (int)sl->type.len, sl->type.ptr);
			continue;
		}
		if (l->nsteps > 0 && !map_path_check(ld, d, l, sl->meta, l->steps, l->nsteps))
			continue;
		t = l->nsteps > 0 ? l->steps[l->nsteps - 1].type : sl->meta;
		map_check_cond_refs(ld, l->file, l->lineno, l->cond);
		if (l->src.kind == MAP_SRC_SEGMENT) {
			const map_def_t *m = map_set_find(ld->set, MAP_SEGMENT, l->as_name);

			l->as_def = m;
			if (l->nsteps == 0 && sl->create_line == (size_t)-1) {
				sl->create_line = i;
				memcpy(sl->creator, l->src.seg, 4);
			}
			if (m == NULL) {
				map_diag(&ld->dg, MAP_DIAG_ERROR, l->file, l->lineno, l->as_col,
					 map_hint_def(ld, MAP_SEGMENT, l->as_name),
					 "unknown segment map %.*s", (int)l->as_name.len,
					 l->as_name.ptr);
			} else if (strcmp(m->v2, l->src.seg) != 0) {
				map_diag(&ld->dg, MAP_DIAG_ERROR, l->file, l->lineno, l->as_col,
					 NULL, "%.*s maps %s segments, not %s", (int)m->name.len,
					 m->name.ptr, m->v2, l->src.seg);
			} else if (m->type != NULL && t != NULL && m->type != t &&
				   !(m->is_resource && sl->is_bundle && l->nsteps == 0 &&
				     strcmp(m->type->name, "Bundle") == 0)) {
				map_diag(&ld->dg, MAP_DIAG_ERROR, l->file, l->lineno, l->as_col,
					 NULL, "%.*s makes a %.*s, but the target is a %s",
					 (int)m->name.len, m->name.ptr, (int)m->fhir.len,
					 m->fhir.ptr, t->name);
			}
			continue;
		}
		if (l->src.kind == MAP_SRC_VALUE || l->src.kind == MAP_SRC_JOIN) {
			/* a field into an element (map_parse_message_value) */
			map_check_conversions(ld, d, l, t);
			continue;
		}
		if (l->src.kind == MAP_SRC_SLOT || l->src.kind == MAP_SRC_ALL) {
			if (t == NULL || strcmp(t->name, "Reference") != 0)
				map_diag(&ld->dg, MAP_DIAG_ERROR, l->file, l->lineno, l->col, NULL,
					 "%s is not a Reference",
					 t != NULL ? t->name : "the target");
			else if (l->src.kind == MAP_SRC_ALL && !l->steps[l->nsteps - 1].array)
				map_diag(&ld->dg, MAP_DIAG_ERROR, l->file, l->lineno, l->col, NULL,
					 "'*' needs a repeating Reference element");
			if (l->src.kind == MAP_SRC_SLOT && d->slots[l->src.slot].is_bundle)
				map_diag(&ld->dg, MAP_DIAG_ERROR, l->file, l->lineno, l->col, NULL,
					 "the Bundle cannot be referenced");
		} else if (l->src.kind == MAP_SRC_CONST && !map_const_fits(&l->src.parts[0], t)) {
			map_diag(&ld->dg, MAP_DIAG_ERROR, l->file, l->lineno, l->src.parts[0].col,
				 NULL, "this constant does not fit a %s",
				 t != NULL ? t->name : "?");
		}
	}
	for (size_t s = 0; s < d->nslots; s++)
		if (d->slots[s].create_line == (size_t)-1 && !d->slots[s].is_bundle)
			for (size_t i = 0; i < d->nlines; i++)
				if (d->lines[i].slot == (int)s && !d->lines[i].is_ref) {
					map_diag(&ld->dg, MAP_DIAG_ERROR, d->lines[i].file,
						 d->lines[i].lineno, 1,
						 "start with 'Type[n] <- SEG as SEG[Type]'",
						 "no line makes %.*s[%u] itself",
						 (int)d->slots[s].type.len, d->slots[s].type.ptr,
						 d->slots[s].index);
					break;
				}
	for (size_t i = 0; i < d->nlines; i++)
		map_check_unreachable(ld, d, i);
}

/* An extension's lines go after those of the message map it extends; its resources are that
 * map's resources of the same name. */
static void
map_apply_extension(map_ld_t *ld, map_def_t *e)
{
	arena_t *a = ld->set->arena;
	map_def_t *b = (map_def_t *)map_set_find(ld->set, MAP_MESSAGE, e->extends);
	map_line_t *lines;
	map_group_t *groups;
	map_ref_t *ign;
	int *slot_map;

	if (b == NULL || b->extends.len > 0) {
		map_diag(&ld->dg, MAP_DIAG_ERROR, e->path, 1, 1,
			 map_hint_def(ld, MAP_MESSAGE, e->extends), "no message map %.*s to extend",
			 (int)e->extends.len, e->extends.ptr);
		return;
	}
	slot_map = arena_alloc(a, (e->nslots ? e->nslots : 1) * sizeof(*slot_map));
	for (size_t s = 0; s < e->nslots; s++) {
		size_t k;

		for (k = 0; k < b->nslots; k++)
			if (slice_eq(b->slots[k].type, e->slots[s].type) &&
			    b->slots[k].index == e->slots[s].index)
				break;
		if (k == b->nslots) {
			map_slot_t *ns = arena_alloc(a, (b->nslots + 1) * sizeof(*ns));

			memcpy(ns, b->slots, b->nslots * sizeof(*ns));
			ns[b->nslots] = e->slots[s];
			b->slots = ns;
			b->nslots++;
		}
		slot_map[s] = (int)k;
	}
	lines = arena_alloc(a, (b->nlines + e->nlines + 1) * sizeof(*lines));
	memcpy(lines, b->lines, b->nlines * sizeof(*lines));
	for (size_t i = 0; i < e->nlines; i++) {
		map_line_t *l = &lines[b->nlines + i];

		*l = e->lines[i];
		l->slot = l->slot >= 0 ? slot_map[l->slot] : -1;
		if (l->src.kind == MAP_SRC_SLOT)
			l->src.slot = slot_map[l->src.slot];
		if (l->is_ref)
			l->owner += b->nlines;
		if (l->group >= 0)
			l->group += (int)b->ngroups;
	}
	groups = arena_alloc(a, (b->ngroups + e->ngroups + 1) * sizeof(*groups));
	memcpy(groups, b->groups, b->ngroups * sizeof(*groups));
	for (size_t g = 0; g < e->ngroups; g++) {
		map_group_t *gr = &groups[b->ngroups + g];

		*gr = e->groups[g];
		gr->first += b->nlines;
		gr->last += b->nlines;
		if (gr->parent >= 0)
			gr->parent += (int)b->ngroups;
	}
	ign = arena_alloc(a, (b->nignores + e->nignores + 1) * sizeof(*ign));
	memcpy(ign, b->ignores, b->nignores * sizeof(*ign));
	memcpy(ign + b->nignores, e->ignores, e->nignores * sizeof(*ign));
	b->lines = lines;
	b->nlines += e->nlines;
	b->groups = groups;
	b->ngroups += e->ngroups;
	b->ignores = ign;
	b->nignores += e->nignores;
	e->nlines = 0;
	e->ngroups = 0;
	e->nslots = 0;
}

/* Datatype maps may use one another, but not in a circle. */
static bool
map_check_cycles(map_ld_t *ld, map_def_t *d)
{
	if (d->checked)
		return true;
	if (d->checking) {
		map_diag(&ld->dg, MAP_DIAG_ERROR, d->path, 0, 0, NULL,
			 "%.*s uses itself through 'as'", (int)d->name.len, d->name.ptr);
		return false;
	}
	d->checking = true;
	for (size_t i = 0; i < d->nlines; i++)
		if (d->lines[i].as_def != NULL && d->lines[i].as_def->kind == MAP_DATATYPE &&
		    !map_check_cycles(ld, (map_def_t *)d->lines[i].as_def))
			return false;
	d->checking = false;
	d->checked = true;
	return true;
}

static void
map_check_names(map_ld_t *ld)
{
	map_set_t *set = ld->set;

	for (size_t i = 0; i < set->ndefs; i++) {
		map_def_t *d = set->defs[i];

		for (size_t k = 0; k < d->nnames; k++)
			for (size_t j = 0; j < i; j++) {
				map_def_t *o = set->defs[j];

				for (size_t m = 0; m < o->nnames; m++) {
					if (!slice_eq(d->names[k], o->names[m]))
						continue;
					if (d->site == o->site) {
						map_diag(
						    &ld->dg, MAP_DIAG_ERROR, d->path, 0, 0,
						    "each message name belongs to one message map",
						    "%.*s is also answered by %s",
						    (int)d->names[k].len, d->names[k].ptr, o->path);
					} else {
						/* the site file wins: the shipped one stops
						 * answering */
						map_def_t *loser = d->site ? o : d;
						size_t idx = d->site ? m : k;

						loser->names[idx] = SLICE_NULL;
					}
				}
			}
	}
}

static int
map_cmp_files(const void *x, const void *y)
{
	const map_file_t *a = x, *b = y;
	int c = strcmp(a->path, b->path);

	return c != 0 ? c : (int)a->site - (int)b->site;
}

const slice_t map_keys[MAP_KEY_COUNT] = {
    [MAP_KEY_RESOURCE_TYPE] = SLICE_LIT("resourceType"),
    [MAP_KEY_ID] = SLICE_LIT("id"),
    [MAP_KEY_TYPE] = SLICE_LIT("type"),
    [MAP_KEY_ENTRY] = SLICE_LIT("entry"),
    [MAP_KEY_REFERENCE] = SLICE_LIT("reference"),
    [MAP_KEY_CODING] = SLICE_LIT("coding"),
    [MAP_KEY_SYSTEM] = SLICE_LIT("system"),
    [MAP_KEY_CODE] = SLICE_LIT("code"),
    [MAP_KEY_DISPLAY] = SLICE_LIT("display"),
};

/* Open addressing over the keys' bytes, at most half full; the table starts with map_keys. */
static void
map_keys_put(map_set_t *set, slice_t key)
{
	size_t mask = set->keys_cap - 1;
	size_t h = (size_t)hash_fnv1a64(key.ptr, key.len, 0) & mask;

	while (set->keys[h].ptr != NULL)
		h = (h + 1) & mask;
	set->keys[h] = key;
	set->nkeys++;
}

slice_t
map_set_key(map_set_t *set, slice_t key)
{
	size_t mask, h;

	if (set->keys_cap == 0 || (set->nkeys + 1) * 2 > set->keys_cap) {
		slice_t *old = set->keys;
		size_t ocap = set->keys_cap;

		set->keys_cap = ocap ? ocap * 2 : 256;
		set->keys = xcalloc(set->keys_cap, sizeof(*set->keys));
		set->nkeys = 0;
		for (size_t i = 0; i < ocap; i++)
			if (old[i].ptr != NULL)
				map_keys_put(set, old[i]);
		free(old);
		if (ocap == 0)
			for (size_t i = 0; i < MAP_KEY_COUNT; i++)
				map_keys_put(set, map_keys[i]);
	}
	mask = set->keys_cap - 1;
	h = (size_t)hash_fnv1a64(key.ptr, key.len, 0) & mask;
	for (; set->keys[h].ptr != NULL; h = (h + 1) & mask)
		if (slice_eq(set->keys[h], key))
			return set->keys[h];
	key = arena_slice_dup(set->arena, key);
	map_keys_put(set, key);
	return key;
}

/* Every target step's member keys, interned: the converter's objects get no other keys. */
static void
map_set_intern_steps(map_set_t *set)
{
	buf_t ext = BUF_INIT;

	for (size_t i = 0; i < set->ndefs; i++) {
		map_def_t *d = set->defs[i];

		for (size_t j = 0; j < d->nlines; j++)
			for (size_t k = 0; k < d->lines[j].nsteps; k++) {
				map_step_t *st = &d->lines[j].steps[k];

				st->key = map_set_key(set, st->name);
				if (!st->primitive)
					continue;
				buf_reset(&ext);
				buf_append_byte(&ext, '_');
				buf_append_slice(&ext, st->name);
				st->ext_key = map_set_key(set, buf_slice(&ext));
			}
	}
	buf_free(&ext);
}

static int
map_cmp_u64(const void *x, const void *y)
{
	uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;

	return a < b ? -1 : a > b;
}

/* A message map's segment lines by segment id (map_def_t.seg_lines), so that a conversion
 * looks at the lines of each segment only. */
static void
map_index_segment_lines(arena_t *a, map_def_t *d)
{
	d->seg_lines = arena_alloc(a, (d->nlines ? d->nlines : 1) * sizeof(*d->seg_lines));
	d->nseg_lines = 0;
	for (size_t i = 0; i < d->nlines; i++)
		if (d->lines[i].src.kind == MAP_SRC_SEGMENT)
			d->seg_lines[d->nseg_lines++] = map_seg_key(d->lines[i].src.seg) << 32 | i;
	qsort(d->seg_lines, d->nseg_lines, sizeof(*d->seg_lines), map_cmp_u64);
}

int
map_set_load_files(const map_file_t *files, size_t n, map_diag_fn diag, void *arg, map_set_t **out)
{
	map_ld_t ld;
	map_file_t *sorted;
	map_set_t *set = xcalloc(1, sizeof(*set));
	uint64_t h = 0;

	memset(&ld, 0, sizeof(ld));
	ld.dg.fn = diag;
	ld.dg.arg = arg;
	ld.set = set;
	set->arena = arena_new(0);
	sorted = xreallocarray(NULL, n ? n : 1, sizeof(*sorted));
	if (n > 0)
		memcpy(sorted, files, n * sizeof(*sorted));
	qsort(sorted, n, sizeof(*sorted), map_cmp_files);
	set->defs = xreallocarray(NULL, n ? n : 1, sizeof(*set->defs));
	for (size_t i = 0; i < n; i++) {
		map_def_t *d;

		/* a site file replaces the shipped file of the same path (sorted right after it) */
		if (i + 1 < n && strcmp(sorted[i].path, sorted[i + 1].path) == 0 &&
		    !sorted[i].site && sorted[i + 1].site)
			continue;
		h = hash_fnv1a64(sorted[i].path, strlen(sorted[i].path) + 1, h);
		h = hash_fnv1a64(sorted[i].data, sorted[i].len, h);
		d = map_def_parse(set->arena, &sorted[i], &ld.dg);
		if (d != NULL)
			set->defs[set->ndefs++] = d;
	}
	set->version = h;
	if (ld.dg.errors == 0) {
		map_check_names(&ld);
		for (size_t i = 0; i < set->ndefs; i++)
			if (set->defs[i]->kind == MAP_SEGMENT || set->defs[i]->kind == MAP_DATATYPE)
				map_check_map(&ld, set->defs[i]);
		for (size_t i = 0; i < set->ndefs; i++)
			if (set->defs[i]->kind == MAP_MESSAGE && set->defs[i]->extends.len > 0)
				map_apply_extension(&ld, set->defs[i]);
		for (size_t i = 0; i < set->ndefs; i++)
			if (set->defs[i]->kind == MAP_MESSAGE && set->defs[i]->extends.len == 0)
				map_check_message(&ld, set->defs[i]);
		for (size_t i = 0; i < set->ndefs && ld.dg.errors == 0; i++)
			(void)map_check_cycles(&ld, set->defs[i]);
	}
	free(sorted);
	if (ld.dg.errors > 0) {
		map_set_free(set);
		return -FG_ECONFIG;
	}
	map_set_intern_steps(set);
	set->msgs = arena_alloc(set->arena, (set->ndefs ? set->ndefs : 1) * sizeof(*set->msgs));
	for (size_t i = 0; i < set->ndefs; i++)
		if (set->defs[i]->kind == MAP_MESSAGE) {
			map_index_segment_lines(set->arena, set->defs[i]);
			set->msgs[set->nmsgs++] = set->defs[i];
		}
	*out = set;
	return 0;
}

/* Files of a mapping folder: its four subfolders, files with the right extension. */
typedef struct {
	map_file_t *files;
	size_t n;
	char **owned;
	size_t nowned;
} map_files_t;

static int
map_read_file(const char *path, char **data, size_t *len)
{
	FILE *f = fopen(path, "rb");
	buf_t b;
	char chunk[65536];
	size_t got;
	int rc = 0;

	if (f == NULL)
		return -FG_EIO;
	buf_init(&b, MAP_FILE_CAP + 1);
	while (rc == 0 && (got = fread(chunk, 1, sizeof(chunk), f)) > 0)
		rc = buf_append(&b, chunk, got);
	if (ferror(f))
		rc = -FG_EIO;
	fclose(f);
	if (rc != 0) {
		buf_free(&b);
		return rc == -FG_ETOOBIG ? -FG_ETOOBIG : -FG_EIO;
	}
	if (b.data == NULL)
		buf_append(&b, "", 0);
	*data = buf_steal(&b, len);
	if (*data == NULL)
		*data = xstrdup("");
	return 0;
}

static int
map_read_dir(const char *dir, bool site, map_files_t *fs, map_diags_t *dg)
{
	static const char *subs[] = {"messages", "segments", "datatypes", "vocab"};
	struct stat st;

	if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
		map_diag(dg, MAP_DIAG_ERROR, dir, 0, 0,
			 "check the mappings folder in the configuration",
			 "cannot open the mapping folder");
		return -FG_EIO;
	}
	for (size_t s = 0; s < sizeof(subs) / sizeof(subs[0]); s++) {
		char *sub = xasprintf("%s/%s", dir, subs[s]);
		DIR *dh = opendir(sub);
		struct dirent *de;

		if (dh == NULL && errno == ENOENT) {
			free(sub); /* a folder may leave out a kind of map */
			continue;
		}
		if (dh == NULL) {
			map_diag(dg, MAP_DIAG_ERROR, sub, 0, 0, NULL, "cannot read the folder: %s",
				 strerror(errno));
			free(sub);
			return -FG_EIO;
		}
		while ((de = readdir(dh)) != NULL) {
			char *rel, *full, *data = NULL;
			size_t len = 0;
			map_kind_t kind;
			int rc;

			if (de->d_name[0] == '.')
				continue;
			rel = xasprintf("%s/%s", subs[s], de->d_name);
			if (!map_path_kind(rel, &kind)) {
				free(rel);
				continue;
			}
			if (fs->n >= MAP_MAX_FILES) {
				map_diag(dg, MAP_DIAG_ERROR, dir, 0, 0, NULL,
					 "more than %d mapping files", MAP_MAX_FILES);
				free(rel);
				closedir(dh);
				free(sub);
				return -FG_ETOOBIG;
			}
			full = xasprintf("%s/%s", sub, de->d_name);
			rc = map_read_file(full, &data, &len);
			if (rc != 0) {
				map_diag(dg, MAP_DIAG_ERROR, full, 0, 0, NULL,
					 rc == -FG_ETOOBIG ? "file too large"
							   : "cannot read the file");
				free(rel);
				free(full);
				closedir(dh);
				free(sub);
				return -FG_EIO;
			}
			fs->files = xreallocarray(fs->files, fs->n + 1, sizeof(*fs->files));
			fs->files[fs->n++] = (map_file_t){rel, full, data, len, site};
			fs->owned = xreallocarray(fs->owned, fs->nowned + 3, sizeof(*fs->owned));
			fs->owned[fs->nowned++] = rel;
			fs->owned[fs->nowned++] = full;
			fs->owned[fs->nowned++] = data;
		}
		closedir(dh);
		free(sub);
	}
	return 0;
}

int
map_set_load(const char *dir, const char *site_dir, map_diag_fn diag, void *arg, map_set_t **out)
{
	return map_set_load_with(dir, site_dir, NULL, 0, diag, arg, out);
}

int
map_set_load_with(const char *dir, const char *site_dir, const map_file_t *extra, size_t nextra,
		  map_diag_fn diag, void *arg, map_set_t **out)
{
	map_files_t fs;
	map_diags_t dg = {diag, arg, 0, 0};
	int rc;

	memset(&fs, 0, sizeof(fs));
	rc = map_read_dir(dir, false, &fs, &dg);
	if (rc == 0 && site_dir != NULL && site_dir[0] != '\0')
		rc = map_read_dir(site_dir, true, &fs, &dg);
	if (rc == 0 && nextra > 0) {
		fs.files = xreallocarray(fs.files, fs.n + nextra, sizeof(*fs.files));
		memcpy(fs.files + fs.n, extra, nextra * sizeof(*extra));
		fs.n += nextra;
	}
	if (rc == 0)
		rc = map_set_load_files(fs.files, fs.n, diag, arg, out);
	for (size_t i = 0; i < fs.nowned; i++)
		free(fs.owned[i]);
	free(fs.owned);
	free(fs.files);
	return rc;
}

void
map_set_free(map_set_t *set)
{
	if (set == NULL)
		return;
	free(set->keys);
	arena_free(set->arena);
	free(set->defs);
	free(set);
}

uint64_t
map_set_version(const map_set_t *set)
{
	return set->version;
}

size_t
map_set_file_count(const map_set_t *set)
{
	return set->ndefs;
}

bool
map_set_has_message(const map_set_t *set, slice_t name)
{
	for (size_t i = 0; i < set->ndefs; i++)
		if (set->defs[i]->kind == MAP_MESSAGE)
			for (size_t k = 0; k < set->defs[i]->nnames; k++)
				if (slice_eq(set->defs[i]->names[k], name))
					return true;
	return false;
}
