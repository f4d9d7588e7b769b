/* Search-parameter extraction: a FHIRPath subset evaluated over the resource tree, and the
 * normalizations that turn what it finds into ordered index bytes (see fhir/search.h). */
#include "config.h"

#include "fhir/search.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/err.h"

/* FHIRPath evaluation. */

typedef struct {
	const fhir_node_t *n;
	const fhir_type_t *t; /* NULL when unknown (contained resources): no further steps */
} fp_item_t;

/* A set of items: a range of the items of one evaluation (fp_run_t). */
typedef struct {
	uint32_t start, n;
	bool done; /* computed (a node's set is computed once per resource) */
} fp_set_t;

/* One evaluation over a resource: every set it computes is a range of v, which only grows
 * (so a set stays valid by index when v moves), apart from where()'s scratch sets. */
typedef struct {
	arena_t *a;
	fp_item_t *v;
	size_t n, cap;
	fp_set_t *sets; /* the set of each node of the type's plan (fp_plan_t) */
} fp_run_t;

/* The compiler's cursor over one expression. */
typedef struct {
	arena_t *a;
	const char *p, *end;
	bool unsupported; /* sticky: a construct outside the subset */
	const fhir_type_t *rtype;
	/* paths start with a member of the item they are evaluated on (a composite's component:
	 * "value.as(Quantity)"), not with the type's name; rtype may then be NULL (not known) */
	bool relative;
} fp_t;

/* Adds n to the items being computed; an array adds its items, null nothing. */
static void
fp_item_push(fp_run_t *r, const fhir_node_t *n, const fhir_type_t *t)
{
	fhir_kind_t kind = n != NULL ? fhir_node_kind(n) : FHIR_NULL;

	if (kind == FHIR_NULL)
		return;
	if (kind == FHIR_ARRAY) {
		for (size_t i = 0, len = fhir_array_len(n); i < len; i++)
			fp_item_push(r, fhir_array_at(n, i), t);
		return;
	}
	if (r->n == r->cap)
		r->v = arena_array_grow(r->a, r->v, r->n, &r->cap, sizeof(*r->v));
	r->v[r->n++] = (fp_item_t){n, t};
}

static void
fp_ws(fp_t *f)
{
	while (f->p < f->end && (*f->p == ' ' || *f->p == '\t' || *f->p == '\n'))
		f->p++;
}

static bool
fp_is_ident(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '_';
}

static slice_t
fp_ident(fp_t *f)
{
	const char *s;

	fp_ws(f);
	s = f->p;
	while (f->p < f->end && fp_is_ident(*f->p))
		f->p++;
	if (f->p == s)
		f->unsupported = true;
	return slice_make(s, (size_t)(f->p - s));
}

static bool
fp_eat(fp_t *f, const char *tok)
{
	size_t l = strlen(tok);

	fp_ws(f);
	if ((size_t)(f->end - f->p) >= l && memcmp(f->p, tok, l) == 0) {
		f->p += l;
		return true;
	}
	return false;
}

static void
fp_expect(fp_t *f, const char *tok)
{
	if (!fp_eat(f, tok))
		f->unsupported = true;
}

/* 'literal' (no escapes in the shipped expressions). */
static slice_t
fp_literal(fp_t *f)
{
	const char *s;

	fp_expect(f, "'");
	s = f->p;
	while (f->p < f->end && *f->p != '\'')
		f->p++;
	if (f->p == f->end) {
		f->unsupported = true;
		return SLICE_NULL;
	}
	return slice_make(s, (size_t)(f->p++ - s));
}

/* A member step, with its element looked up when it was compiled: owner.name is elem, of
 * type etype (owner NULL when the type before the step was not known then; elem NULL when
 * owner has no element name, as for a choice: "deceased" of deceasedBoolean). */
typedef struct {
	slice_t name;
	const fhir_type_t *owner, *etype;
	const fhir_elem_t *elem;
} fp_stepdef_t;

/* One member step from every item of in (added to r's items): choice elements ("value")
 * match their expansions. */
static void
fp_step(fp_run_t *r, fp_set_t in, const fp_stepdef_t *sd)
{
	slice_t name = sd->name;

	for (size_t i = in.start; i < in.start + in.n; i++) {
		fp_item_t it = r->v[i]; /* a copy: r->v moves as items are added */
		const fhir_elem_t *e;

		if (it.t == NULL || fhir_node_kind(it.n) != FHIR_OBJECT)
			continue;
		e = it.t == sd->owner ? sd->elem : fhir_meta_elem(it.t, name);
		if (e != NULL) {
			fp_item_push(r, fhir_object_get(it.n, name), fhir_meta_elem_type(it.t, e));
			continue;
		}
		for (size_t k = 0, nk = fhir_object_count(it.n); k < nk; k++) {
			slice_t key = fhir_object_key_at(it.n, k);

			if (key.len <= name.len || key.ptr[0] != name.ptr[0] ||
			    memcmp(key.ptr, name.ptr, name.len) != 0 || key.ptr[name.len] < 'A' ||
			    key.ptr[name.len] > 'Z')
				continue;
			e = fhir_meta_elem(it.t, key);
			if (e != NULL && e->choice_base != NULL &&
			    slice_eq_cstr(name, e->choice_base))
				fp_item_push(r, fhir_object_value_at(it.n, k),
					     fhir_meta_elem_type(it.t, e));
		}
	}
}

static bool
type_is(const fhir_type_t *t, slice_t name)
{
	if (t == NULL)
		return false;
	if (slice_eq_cstr(name, t->name))
		return true;
	/* as(DateTime) in the composites' components: dateTime (primitives start lowercase) */
	if (name.len > 0 && name.len == strlen(t->name) && name.ptr[0] >= 'A' &&
	    name.ptr[0] <= 'Z' && name.ptr[0] + ('a' - 'A') == t->name[0] &&
	    memcmp(name.ptr + 1, t->name + 1, name.len - 1) == 0)
		return true;
	/* Age, Duration, ... are Quantities in R4's type tree. */
	return slice_eq_cstr(name, "Quantity") &&
	       (strcmp(t->name, "Age") == 0 || strcmp(t->name, "Duration") == 0 ||
		strcmp(t->name, "Distance") == 0 || strcmp(t->name, "Count") == 0 ||
		strcmp(t->name, "SimpleQuantity") == 0 || strcmp(t->name, "MoneyQuantity") == 0);
}

/* The type part of a reference string ("Patient/1", "http://x/fhir/Patient/1"). */
static slice_t
ref_type_of(slice_t ref)
{
	size_t end = ref.len, slash, start;

	/* Drop a version: .../_history/N */
	for (size_t i = 0; i + 10 <= ref.len; i++)
		if (memcmp(ref.ptr + i, "/_history/", 10) == 0) {
			end = i;
			break;
		}
	for (slash = end; slash > 0 && ref.ptr[slash - 1] != '/'; slash--)
		;
	if (slash == 0)
		return SLICE_NULL;
	slash--;
	for (start = slash; start > 0 && ref.ptr[start - 1] != '/'; start--)
		;
	return slice_make(ref.ptr + start, slash - start);
}

/* Expressions are compiled once per (resource type, parameter) into this form; evaluating one
 * then only walks the tree. */
typedef enum { FP_OP_STEP, FP_OP_TYPE, FP_OP_RESOLVE_IS, FP_OP_WHERE_EQ } fp_op_kind_t;

typedef struct {
	fp_op_kind_t kind;
	slice_t name;         /* STEP: the member; TYPE, RESOLVE_IS: the type */
	fp_stepdef_t step;    /* STEP */
	fp_stepdef_t path[4]; /* WHERE_EQ: path = 'lit' */
	size_t np;
	slice_t lit;
} fp_op_t;

typedef struct fp_expr fp_expr_t;

/* primary ('.' step | 'as' Type)*, the primary being the resource or a parenthesized union */
typedef struct {
	const fp_expr_t *sub; /* NULL: the resource */
	fp_op_t *ops;
	size_t nops;
} fp_term_t;

struct fp_expr {
	fp_term_t *terms; /* their union */
	size_t nterms;
};

static fp_op_t *
fp_op_add(fp_t *f, fp_term_t *t)
{
	fp_op_t *v = arena_zalloc(f->a, (t->nops + 1) * sizeof(*v));

	if (t->nops > 0)
		memcpy(v, t->ops, t->nops * sizeof(*v));
	t->ops = v;
	return &t->ops[t->nops++];
}

/* The step to member name from items of type cur (NULL: not known before evaluation). */
static fp_stepdef_t
fp_stepdef_make(const fhir_type_t *cur, slice_t name)
{
	fp_stepdef_t sd = {name, cur, NULL, NULL};

	sd.elem = fhir_meta_elem(cur, name);
	if (sd.elem != NULL)
		sd.etype = fhir_meta_elem_type(cur, sd.elem);
	return sd;
}

/* where(resolve() is X) or where(path = 'literal'), over items of type cur. */
static void
fp_where_compile(fp_t *f, fp_op_t *op, const fhir_type_t *cur)
{
	if (fp_eat(f, "resolve()")) {
		op->kind = FP_OP_RESOLVE_IS;
		fp_expect(f, "is");
		op->name = fp_ident(f);
		fp_expect(f, ")");
		return;
	}
	/* A dotted path compared with a literal. */
	op->kind = FP_OP_WHERE_EQ;
	do {
		if (op->np == 4) {
			f->unsupported = true;
			return;
		}
		op->path[op->np] = fp_stepdef_make(cur, fp_ident(f));
		cur = op->path[op->np++].etype;
	} while (fp_eat(f, "."));
	fp_expect(f, "=");
	op->lit = fp_literal(f);
	fp_expect(f, ")");
}

static const fp_expr_t *fp_union_compile(fp_t *f);

static void
fp_term_compile(fp_t *f, fp_term_t *t)
{
	/* the type of the items so far, while one type is sure; NULL when not */
	const fhir_type_t *cur = NULL;

	if (fp_eat(f, "(")) {
		t->sub = fp_union_compile(f);
		fp_expect(f, ")");
	} else if (f->relative) {
		fp_op_t *op = fp_op_add(f, t);

		op->kind = FP_OP_STEP;
		op->name = fp_ident(f);
		op->step = fp_stepdef_make(f->rtype, op->name);
		cur = op->step.etype;
	} else {
		cur = f->rtype;
		slice_t first = fp_ident(f);

		if (!slice_eq_cstr(first, f->rtype->name) && !slice_eq_cstr(first, "Resource") &&
		    !slice_eq_cstr(first, "DomainResource"))
			f->unsupported = true;
	}
	while (!f->unsupported) {
		if (fp_eat(f, ".")) {
			slice_t name = fp_ident(f);

			if (fp_eat(f, "(")) {
				if (slice_eq_cstr(name, "where")) {
					fp_where_compile(f, fp_op_add(f, t), cur);
				} else if (slice_eq_cstr(name, "as") ||
					   slice_eq_cstr(name, "ofType")) {
					fp_op_t *op = fp_op_add(f, t);

					op->kind = FP_OP_TYPE;
					op->name = fp_ident(f);
					fp_expect(f, ")");
					cur = NULL; /* Quantity takes Age, Duration ... */
				} else {
					f->unsupported =
					    true; /* exists(), extension(), resolve() ... */
				}
			} else {
				fp_op_t *op = fp_op_add(f, t);

				op->kind = FP_OP_STEP;
				op->name = name;
				op->step = fp_stepdef_make(cur, name);
				cur = op->step.etype;
			}
		} else if (fp_eat(f, "as ")) {
			fp_op_t *op = fp_op_add(f, t);

			op->kind = FP_OP_TYPE;
			op->name = fp_ident(f);
			cur = NULL;
		} else {
			break;
		}
	}
}

static const fp_expr_t *
fp_union_compile(fp_t *f)
{
	fp_expr_t *e = arena_zalloc(f->a, sizeof(*e));
	size_t cap = 0;

	do {
		if (e->nterms == cap) {
			fp_term_t *v = arena_zalloc(f->a, (cap = cap ? cap * 2 : 4) * sizeof(*v));

			if (e->nterms > 0)
				memcpy(v, e->terms, e->nterms * sizeof(*v));
			e->terms = v;
		}
		fp_term_compile(f, &e->terms[e->nterms++]);
	} while (!f->unsupported && fp_eat(f, "|"));
	return e;
}

/* expr for resources of type rt (relative: for items of type rt, NULL when not known), in a;
 * NULL when the expression is outside the subset. The result borrows from expr. */
static const fp_expr_t *
fp_compile_at(arena_t *a, const char *expr, const fhir_type_t *rt, bool relative)
{
	fp_t f = {a, expr, expr + strlen(expr), false, rt, relative};
	const fp_expr_t *e;

	if (*expr == '\0')
		return NULL;
	e = fp_union_compile(&f);
	fp_ws(&f);
	return !f.unsupported && f.p == f.end ? e : NULL;
}

static const fp_expr_t *
fp_compile(arena_t *a, const char *expr, const fhir_type_t *rt)
{
	return fp_compile_at(a, expr, rt, false);
}

/* The expressions of a resource type's parameters together, as one tree of operations from
 * the resource: an expression is a union of paths (a parenthesized union followed by
 * operations is the union of each of its paths followed by them, as every operation maps
 * items one by one), and paths with a common beginning share its nodes. A resource then
 * computes each node's set once for every parameter that goes through it, and none below a
 * member it does not have. */
typedef struct {
	slice_t name;
	uint32_t node;
} fp_member_t;

typedef struct {
	fp_op_t op;      /* from the parent's set to this node's */
	uint32_t parent; /* a node before this one; node 0 is the resource */
	/* The children that step to a member of a type known when compiled, by name (ordered by
	 * fp_name_cmp): one pass over an item's members finds them all. */
	fp_member_t *members;
	size_t nmembers;
} fp_node_t;

/* The codes of a parameter's entries, built once (entries borrow them). */
typedef struct {
	slice_t code;
	slice_t text, lo, exact, identifier, su, u; /* <code>.text, ...: those of its type */
} ix_codes_t;

typedef struct fp_param fp_param_t;

/* A composite's component: its parameter (type and codes), found from each item by expr. */
typedef struct {
	const fp_param_t *prm;
	const fp_expr_t *expr;
} fp_comp_t;

struct fp_param {
	const fhir_searchparam_t *sp;
	ix_codes_t codes;
	uint32_t *leaves; /* the nodes that end the expression's paths, in order */
	size_t nleaves;   /* 0: the expression is outside the subset */
	/* composite: the expression of its items, and its components (NULL: a component or an
	 * expression outside the subset, so the parameter cannot be searched) */
	const fp_expr_t *items;
	fp_comp_t *comps;
};

typedef struct {
	fp_node_t *nodes;
	size_t nnodes, cap;
	fp_param_t *params; /* in fhir_meta_searchparams order */
	size_t nparams;
} fp_plan_t;

static bool
fp_stepdef_eq(const fp_stepdef_t *x, const fp_stepdef_t *y)
{
	return slice_eq(x->name, y->name) && x->owner == y->owner && x->etype == y->etype &&
	       x->elem == y->elem;
}

static bool
fp_op_eq(const fp_op_t *x, const fp_op_t *y)
{
	if (x->kind != y->kind || !slice_eq(x->name, y->name) ||
	    !fp_stepdef_eq(&x->step, &y->step) || x->np != y->np || !slice_eq(x->lit, y->lit))
		return false;
	for (size_t k = 0; k < x->np; k++)
		if (!fp_stepdef_eq(&x->path[k], &y->path[k]))
			return false;
	return true;
}

/* The node op leads to from parent, added unless there is one already. */
static uint32_t
fp_plan_child(arena_t *a, fp_plan_t *p, uint32_t parent, const fp_op_t *op)
{
	for (size_t k = 1; k < p->nnodes; k++)
		if (p->nodes[k].parent == parent && fp_op_eq(&p->nodes[k].op, op))
			return (uint32_t)k;
	p->nodes = arena_array_grow(a, p->nodes, p->nnodes, &p->cap, sizeof(*p->nodes));
	p->nodes[p->nnodes] = (fp_node_t){*op, parent, NULL, 0};
	return (uint32_t)p->nnodes++;
}

/* An order of names that is quick to search: by length, then bytes. */
static int
fp_name_cmp(slice_t x, slice_t y)
{
	if (x.len != y.len)
		return x.len < y.len ? -1 : 1;
	return memcmp(x.ptr, y.ptr, x.len);
}

static int
fp_member_cmp(const void *x, const void *y)
{
	return fp_name_cmp(((const fp_member_t *)x)->name, ((const fp_member_t *)y)->name);
}

/* Fills every node's members table from the nodes below it. */
static void
fp_plan_members(arena_t *a, fp_plan_t *p)
{
	size_t *cap = arena_zalloc(a, p->nnodes * sizeof(*cap));

	for (size_t k = 1; k < p->nnodes; k++) {
		fp_node_t *parent = &p->nodes[p->nodes[k].parent];

		if (p->nodes[k].op.kind != FP_OP_STEP || p->nodes[k].op.step.elem == NULL)
			continue;
		parent->members =
		    arena_array_grow(a, parent->members, parent->nmembers, &cap[p->nodes[k].parent],
				     sizeof(*parent->members));
		parent->members[parent->nmembers++] =
		    (fp_member_t){p->nodes[k].op.step.name, (uint32_t)k};
	}
	for (size_t k = 0; k < p->nnodes; k++)
		if (p->nodes[k].nmembers > 1)
			qsort(p->nodes[k].members, p->nodes[k].nmembers,
			      sizeof(*p->nodes[k].members), fp_member_cmp);
}

/* Appends to *leaves (*n of them, capacity *cap) the nodes that end e's paths, in order. */
static void
fp_plan_add(arena_t *a, fp_plan_t *p, const fp_expr_t *e, uint32_t **leaves, size_t *n, size_t *cap)
{
	for (size_t i = 0; i < e->nterms; i++) {
		const fp_term_t *t = &e->terms[i];
		size_t first = *n;

		if (t->sub != NULL) {
			fp_plan_add(a, p, t->sub, leaves, n, cap);
		} else {
			*leaves = arena_array_grow(a, *leaves, *n, cap, sizeof(**leaves));
			(*leaves)[(*n)++] = 0;
		}
		for (size_t k = 0; k < t->nops; k++)
			for (size_t j = first; j < *n; j++)
				(*leaves)[j] = fp_plan_child(a, p, (*leaves)[j], &t->ops[k]);
	}
}

static slice_t
cat(arena_t *a, slice_t x, const char *sep, slice_t y)
{
	size_t sl = strlen(sep);
	char *p = arena_alloc(a, x.len + sl + y.len + 1);

	if (x.len)
		memcpy(p, x.ptr, x.len);
	memcpy(p + x.len, sep, sl);
	if (y.len)
		memcpy(p + x.len + sl, y.ptr, y.len);
	return slice_make(p, x.len + sl + y.len);
}

static ix_codes_t
ix_codes_make(arena_t *a, const fhir_searchparam_t *sp)
{
	ix_codes_t c = {.code = slice_cstr(sp->code)};

	c.text = cat(a, c.code, ".text", SLICE_NULL);
	c.lo = cat(a, c.code, ".lo", SLICE_NULL);
	c.exact = cat(a, c.code, ".exact", SLICE_NULL);
	c.identifier = cat(a, c.code, ".identifier", SLICE_NULL);
	c.su = cat(a, c.code, ".su", SLICE_NULL);
	c.u = cat(a, c.code, ".u", SLICE_NULL);
	return c;
}

/* The components of composite prm, each a searchable parameter of the plan's type with an
 * expression in the subset; prm->comps stays NULL when one is not. */
static void
fp_comps_build(arena_t *a, const fp_plan_t *p, fp_param_t *prm)
{
	const fhir_searchparam_t *sp = prm->sp;
	fp_comp_t *comps;

	if (sp->ncomponents == 0)
		return;
	comps = arena_zalloc(a, sp->ncomponents * sizeof(*comps));
	for (size_t k = 0; k < sp->ncomponents; k++) {
		for (size_t j = 0; j < p->nparams && comps[k].prm == NULL; j++)
			if (strcmp(p->params[j].sp->code, sp->components[k].code) == 0)
				comps[k].prm = &p->params[j];
		/* the items' type differs between the parts of a union: steps find it per item */
		comps[k].expr = fp_compile_at(a, sp->components[k].expression, NULL, true);
		if (comps[k].prm == NULL || comps[k].prm->nleaves == 0 || comps[k].expr == NULL)
			return;
	}
	prm->comps = comps;
}

static const fp_plan_t *
fp_plan_build(arena_t *a, const fhir_type_t *rt)
{
	fp_plan_t *p = arena_zalloc(a, sizeof(*p));
	const fhir_searchparam_t *const *list;
	size_t np = fhir_meta_searchparams(slice_cstr(rt->name), &list);

	/* node 0: the resource */
	p->nodes = arena_array_grow(a, p->nodes, 0, &p->cap, sizeof(*p->nodes));
	p->nodes[0] = (fp_node_t){{0}, 0, NULL, 0};
	p->nnodes = 1;
	p->params = arena_zalloc(a, (np ? np : 1) * sizeof(*p->params));
	p->nparams = np;
	for (size_t i = 0; i < np; i++) {
		fp_param_t *prm = &p->params[i];
		const fp_expr_t *e = fp_compile(a, list[i]->expression, rt);
		size_t cap = 0;

		prm->sp = list[i];
		prm->codes = ix_codes_make(a, list[i]);
		if (e != NULL && list[i]->type != FHIR_SP_COMPOSITE &&
		    list[i]->type != FHIR_SP_SPECIAL)
			fp_plan_add(a, p, e, &prm->leaves, &prm->nleaves, &cap);
		if (e != NULL && list[i]->type == FHIR_SP_COMPOSITE)
			prm->items = e;
	}
	for (size_t i = 0; i < np; i++)
		if (p->params[i].items != NULL)
			fp_comps_build(a, p, &p->params[i]);
	fp_plan_members(a, p);
	return p;
}

/* The data types the extractors look into, found with the plans (compared by address). */
static struct {
	const fhir_type_t *coding, *codeable_concept, *identifier, *contact_point, *human_name,
	    *address, *period, *timing, *reference;
} ix_types;

/* The plans of every resource type, built once for the process. */
static struct {
	pthread_once_t once;
	arena_t *a;
	size_t n;
	const fhir_type_t **types; /* the resource types, in ascending address order (by name) */
	const fp_plan_t **plans;
} fp_cache = {PTHREAD_ONCE_INIT, NULL, 0, NULL, NULL};

static void
fp_cache_build(void)
{
	size_t n = fhir_meta_resource_count();

	ix_types.coding = fhir_meta_type(SLICE_LIT("Coding"));
	ix_types.codeable_concept = fhir_meta_type(SLICE_LIT("CodeableConcept"));
	ix_types.identifier = fhir_meta_type(SLICE_LIT("Identifier"));
	ix_types.contact_point = fhir_meta_type(SLICE_LIT("ContactPoint"));
	ix_types.human_name = fhir_meta_type(SLICE_LIT("HumanName"));
	ix_types.address = fhir_meta_type(SLICE_LIT("Address"));
	ix_types.period = fhir_meta_type(SLICE_LIT("Period"));
	ix_types.timing = fhir_meta_type(SLICE_LIT("Timing"));
	ix_types.reference = fhir_meta_type(SLICE_LIT("Reference"));
	fp_cache.a = arena_new(0);
	fp_cache.types = arena_zalloc(fp_cache.a, (n ? n : 1) * sizeof(*fp_cache.types));
	fp_cache.plans = arena_zalloc(fp_cache.a, (n ? n : 1) * sizeof(*fp_cache.plans));
	for (size_t k = 0; k < n; k++) {
		fp_cache.types[k] = fhir_meta_resource_at(k);
		fp_cache.plans[k] = fp_plan_build(fp_cache.a, fp_cache.types[k]);
	}
	fp_cache.n = n;
}

/* The plan of resource type rt; NULL when rt is no resource type. */
static const fp_plan_t *
fp_cache_find(const fhir_type_t *rt)
{
	size_t lo = 0, hi;

	pthread_once(&fp_cache.once, fp_cache_build);
	hi = fp_cache.n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (fp_cache.types[mid] == rt)
			return fp_cache.plans[mid];
		if ((uintptr_t)fp_cache.types[mid] < (uintptr_t)rt)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

/* The composite parameter code of resource type rt, when it can be searched. */
static const fp_param_t *
fp_composite_find(const fhir_type_t *rt, slice_t code)
{
	const fp_plan_t *plan = fp_cache_find(rt);

	for (size_t i = 0; plan != NULL && i < plan->nparams; i++)
		if (slice_eq_cstr(code, plan->params[i].sp->code))
			return plan->params[i].comps != NULL ? &plan->params[i] : NULL;
	return NULL;
}

/* Whether item it passes where(path = 'lit'): some item at the end of the path has lit as
 * its text. The path's sets are scratch, dropped before returning. */
static bool
fp_where_eq(fp_run_t *r, const fp_op_t *op, fp_item_t it)
{
	size_t mark = r->n;
	fp_set_t cur = {(uint32_t)r->n, 0, true};
	bool match = false;

	fp_item_push(r, it.n, it.t);
	cur.n = (uint32_t)(r->n - cur.start);
	for (size_t k = 0; k < op->np && cur.n > 0; k++) {
		uint32_t start = (uint32_t)r->n;

		fp_step(r, cur, &op->path[k]);
		cur = (fp_set_t){start, (uint32_t)(r->n - start), true};
	}
	for (size_t k = cur.start; k < cur.start + cur.n && !match; k++)
		match = slice_eq(fhir_node_text(r->v[k].n), op->lit);
	r->n = mark;
	return match;
}

/* Adds the items op gives from the items of in. */
static void
fp_op_run(fp_run_t *r, const fp_op_t *op, fp_set_t in)
{
	if (op->kind == FP_OP_STEP) {
		fp_step(r, in, &op->step);
		return;
	}
	for (size_t i = in.start; i < in.start + in.n; i++) {
		fp_item_t it = r->v[i];
		const fhir_node_t *ref;
		bool keep = false;

		switch (op->kind) {
		case FP_OP_TYPE:
			keep = type_is(it.t, op->name);
			break;
		case FP_OP_RESOLVE_IS:
			ref = fhir_node_kind(it.n) == FHIR_OBJECT
				  ? fhir_object_get(it.n, SLICE_LIT("reference"))
				  : NULL;
			keep = ref != NULL && slice_eq(ref_type_of(fhir_node_text(ref)), op->name);
			break;
		case FP_OP_WHERE_EQ:
			keep = fp_where_eq(r, op, it);
			break;
		case FP_OP_STEP:
			break;
		}
		if (keep)
			fp_item_push(r, it.n, it.t);
	}
}

static const fp_member_t *
fp_member_find(const fp_node_t *n, slice_t name)
{
	size_t lo = 0, hi = n->nmembers;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = fp_name_cmp(name, n->members[mid].name);

		if (c == 0)
			return &n->members[mid];
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return NULL;
}

/* The sets of the member steps below node parent, whose set is the one object it, in one
 * pass over its members rather than one lookup each (most of them find nothing). */
static void
fp_members_fill(fp_run_t *r, const fp_plan_t *p, uint32_t parent, fp_item_t it)
{
	const fp_node_t *pn = &p->nodes[parent];

	for (size_t i = 0, nm = fhir_object_count(it.n); i < nm; i++) {
		const fp_member_t *m = fp_member_find(pn, fhir_object_key_at(it.n, i));
		const fp_stepdef_t *sd;
		uint32_t start = (uint32_t)r->n;

		if (m == NULL || r->sets[m->node].done)
			continue;
		sd = &p->nodes[m->node].op.step;
		if (sd->owner != it.t)
			continue;
		fp_item_push(r, fhir_object_value_at(it.n, i), sd->etype);
		r->sets[m->node] = (fp_set_t){start, (uint32_t)(r->n - start), true};
	}
	for (size_t j = 0; j < pn->nmembers; j++) {
		uint32_t c = pn->members[j].node;

		if (!r->sets[c].done && p->nodes[c].op.step.owner == it.t)
			r->sets[c] = (fp_set_t){(uint32_t)r->n, 0, true};
	}
}

static fp_set_t fp_node_set(fp_run_t *r, const fp_plan_t *p, uint32_t k);

/* fp_node_set's work the first time: apart, so that the many calls that find the set done
 * save no registers. */
static __attribute__((noinline)) fp_set_t
fp_node_compute(fp_run_t *r, const fp_plan_t *p, uint32_t k)
{
	const fp_node_t *n = &p->nodes[k];
	fp_set_t in = fp_node_set(r, p, n->parent);
	uint32_t start;

	if (in.n == 1 && p->nodes[n->parent].nmembers > 1 && n->op.kind == FP_OP_STEP &&
	    n->op.step.elem != NULL && n->op.step.owner == r->v[in.start].t &&
	    fhir_node_kind(r->v[in.start].n) == FHIR_OBJECT) {
		fp_members_fill(r, p, n->parent, r->v[in.start]);
		if (r->sets[k].done)
			return r->sets[k];
	}
	start = (uint32_t)r->n;
	if (in.n > 0)
		fp_op_run(r, &p->nodes[k].op, in);
	r->sets[k] = (fp_set_t){start, (uint32_t)(r->n - start), true};
	return r->sets[k];
}

/* The set of node k of plan p, computed on first use (after its parent's). */
static inline fp_set_t
fp_node_set(fp_run_t *r, const fp_plan_t *p, uint32_t k)
{
	return r->sets[k].done ? r->sets[k] : fp_node_compute(r, p, k);
}

bool
fhir_search_param_is_supported(const fhir_searchparam_t *sp)
{
	const fhir_type_t *rt = fhir_meta_type(slice_cstr(sp->resource));
	arena_t *a;
	bool ok;

	if (rt == NULL || rt->kind != FHIR_TYPE_RESOURCE)
		rt = fhir_meta_type(
		    SLICE_LIT("Patient")); /* Resource, DomainResource: any will do */
	if (rt != NULL && sp->type == FHIR_SP_COMPOSITE)
		return fp_composite_find(rt, slice_cstr(sp->code)) != NULL;
	if (rt == NULL || sp->type == FHIR_SP_SPECIAL)
		return false;
	a = arena_new(0);
	ok = fp_compile(a, sp->expression, rt) != NULL;
	arena_free(a);
	return ok;
}

/* Normalizations. */

/* Latin-1 supplement (U+00C0..U+00FF) to ASCII, lowercase; "" keeps the character. */
static const char latin1_fold[64][3] = {
    "a", "a", "a", "a", "a", "a", "ae", "c", "e", "e", "e", "e", "i", "i", "i",  "i",
    "d", "n", "o", "o", "o", "o", "o",  "",  "o", "u", "u", "u", "u", "y", "th", "ss",
    "a", "a", "a", "a", "a", "a", "ae", "c", "e", "e", "e", "e", "i", "i", "i",  "i",
    "d", "n", "o", "o", "o", "o", "o",  "",  "o", "u", "u", "u", "u", "y", "th", "y",
};

slice_t
fhir_search_string_norm(arena_t *a, slice_t s)
{
	char *out = arena_alloc(a, s.len * 2 + 1);
	size_t o = 0;
	bool space = false;

	for (size_t i = 0; i < s.len; i++) {
		unsigned char c = (unsigned char)s.ptr[i];

		if (c > ' ' && c < 0x80) { /* most: printable ASCII */
			if (space)
				out[o++] = ' ';
			space = false;
			out[o++] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
			continue;
		}
		if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
			space = o > 0;
			continue;
		}
		if (space) {
			out[o++] = ' ';
			space = false;
		}
		if (c == 0xC3 && i + 1 < s.len && (unsigned char)s.ptr[i + 1] >= 0x80 &&
		    (unsigned char)s.ptr[i + 1] <= 0xBF) {
			const char *r = latin1_fold[((unsigned char)s.ptr[i + 1] - 0x80) & 63];

			if (r[0] != '\0') {
				out[o++] = r[0];
				if (r[1] != '\0')
					out[o++] = r[1];
				i++;
				continue;
			}
		}
		out[o++] = (char)c;
	}
	return slice_make(out, o);
}

/* Days from 1970-01-01 to y-m-d (proleptic Gregorian; Howard Hinnant's algorithm). */
static int64_t
days_from_civil(int64_t y, unsigned m, unsigned d)
{
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	unsigned yoe = (unsigned)(y - era * 400);
	unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;

	return era * 146097 + (int64_t)doe - 719468;
}

static bool
take_digits(slice_t s, size_t *pos, size_t n, int *out)
{
	int v = 0;

	if (*pos + n > s.len)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s.ptr[*pos + i];

		if (c < '0' || c > '9')
			return false;
		v = v * 10 + (c - '0');
	}
	*pos += n;
	*out = v;
	return true;
}

static bool
take_char(slice_t s, size_t *pos, char c)
{
	if (*pos < s.len && s.ptr[*pos] == c) {
		(*pos)++;
		return true;
	}
	return false;
}

bool
fhir_search_date_range(slice_t s, int64_t *lo, int64_t *hi)
{
	static const int mdays[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	size_t p = 0;
	int y, mo = 1, d = 1, h = 0, mi = 0, sec = 0, ms = 0, zh = 0, zm = 0;
	int64_t start, span;

	if (!take_digits(s, &p, 4, &y))
		return false;
	if (p == s.len) {
		*lo = days_from_civil(y, 1, 1) * 86400000;
		*hi = days_from_civil(y + 1, 1, 1) * 86400000;
		return true;
	}
	if (!take_char(s, &p, '-') || !take_digits(s, &p, 2, &mo) || mo < 1 || mo > 12)
		return false;
	if (p == s.len) {
		*lo = days_from_civil(y, (unsigned)mo, 1) * 86400000;
		*hi = (mo == 12 ? days_from_civil(y + 1, 1, 1)
				: days_from_civil(y, (unsigned)mo + 1, 1)) *
		      86400000;
		return true;
	}
	if (!take_char(s, &p, '-') || !take_digits(s, &p, 2, &d) || d < 1 || d > mdays[mo - 1])
		return false;
	if (p == s.len) {
		*lo = days_from_civil(y, (unsigned)mo, (unsigned)d) * 86400000;
		*hi = *lo + 86400000;
		return true;
	}
	if (!take_char(s, &p, 'T') || !take_digits(s, &p, 2, &h) || !take_char(s, &p, ':') ||
	    !take_digits(s, &p, 2, &mi) || h > 23 || mi > 59)
		return false;
	span = 60000;
	if (take_char(s, &p, ':')) {
		if (!take_digits(s, &p, 2, &sec) || sec > 60)
			return false;
		span = 1000;
		if (take_char(s, &p, '.')) {
			int digits = 0;

			while (p < s.len && s.ptr[p] >= '0' && s.ptr[p] <= '9') {
				if (digits < 3)
					ms = ms * 10 + (s.ptr[p] - '0');
				digits++;
				p++;
			}
			if (digits == 0)
				return false;
			for (int k = digits; k < 3; k++)
				ms *= 10;
			span = digits == 1 ? 100 : digits == 2 ? 10 : 1;
		}
	}
	if (p < s.len) {
		int sign = s.ptr[p] == '-' ? -1 : 1;

		if (take_char(s, &p, 'Z')) {
		} else if ((take_char(s, &p, '+') || take_char(s, &p, '-')) &&
			   take_digits(s, &p, 2, &zh) && take_char(s, &p, ':') &&
			   take_digits(s, &p, 2, &zm)) {
			zh *= sign;
			zm *= sign;
		} else {
			return false;
		}
	}
	if (p != s.len)
		return false;
	start = days_from_civil(y, (unsigned)mo, (unsigned)d) * 86400000 +
		((int64_t)h * 3600 + mi * 60 + sec) * 1000 + ms -
		((int64_t)zh * 3600 + zm * 60) * 1000;
	*lo = start;
	*hi = start + span;
	return true;
}

void
fhir_search_date_encode(int64_t ms, unsigned char out[8])
{
	uint64_t u = (uint64_t)ms ^ (UINT64_C(1) << 63);

	for (int i = 7; i >= 0; i--, u >>= 8)
		out[i] = (unsigned char)(u & 0xff);
}

int64_t
fhir_search_date_decode(const unsigned char in[8])
{
	uint64_t u = 0;

	for (int i = 0; i < 8; i++)
		u = u << 8 | in[i];
	return (int64_t)(u ^ (UINT64_C(1) << 63));
}

bool
fhir_search_number_encode(arena_t *a, slice_t text, slice_t *out)
{
	size_t p = 0, nd = 0;
	bool neg = false, dot = false, any = false;
	int64_t exp = 0, e10 = 0;
	char *digits = arena_alloc(a, text.len + 4), *o;

	if (p < text.len && (text.ptr[p] == '-' || text.ptr[p] == '+'))
		neg = text.ptr[p++] == '-';
	/* value = 0.d1d2... * 10^exp */
	for (; p < text.len; p++) {
		char c = text.ptr[p];

		if (c == '.' && !dot) {
			dot = true;
		} else if (c >= '0' && c <= '9') {
			any = true;
			if (nd == 0 && c == '0') {
				if (dot)
					exp--;
				continue;
			}
			digits[nd++] = c;
			if (!dot)
				exp++;
		} else {
			break;
		}
	}
	if (p < text.len && (text.ptr[p] == 'e' || text.ptr[p] == 'E')) {
		if (!slice_to_i64(slice_make(text.ptr + p + 1, text.len - p - 1), &e10) ||
		    e10 > 100 || e10 < -100)
			return false;
		p = text.len;
	}
	if (!any || p != text.len)
		return false;
	while (nd > 0 && digits[nd - 1] == '0')
		nd--;
	o = arena_alloc(a, nd + 3);
	if (nd == 0) {
		o[0] = 0x02;
		*out = slice_make(o, 1);
		return true;
	}
	exp += e10;
	if (exp < -120 || exp > 120)
		return false;
	o[0] = neg ? 0x01 : 0x03;
	o[1] = (char)(neg ? 255 - (exp + 128) : exp + 128);
	for (size_t i = 0; i < nd; i++)
		o[2 + i] = neg ? (char)('0' + '9' - digits[i]) : digits[i];
	if (neg)
		o[2 + nd++] = (char)0xff;
	*out = slice_make(o, nd + 2);
	return true;
}

/* Extraction. */

typedef struct {
	arena_t *a;
	fhir_idx_value_max_fn value_max;
	slice_t type, base;
	bool full; /* also the entries a search derives from the resource (<code>.exact) */
	fhir_idx_entry_t *v;
	size_t n, cap;
	/* The last strings normalized, by the address of their text: name, family, given and
	 * phonetic normalize the same strings, as address and its parts do. */
	slice_t norm_text[4], norm[4];
	size_t nnorm; /* how many were normalized: the next goes to [nnorm % 4] */
} ix_t;

static void
ix_add(ix_t *x, slice_t code, slice_t value)
{
	size_t max;

	if (x->n == x->cap)
		x->v = arena_array_grow(x->a, x->v, x->n, &x->cap, sizeof(*x->v));
	if (x->value_max != NULL && value.len > (max = x->value_max(x->type, code)))
		value.len = max;
	x->v[x->n++] = (fhir_idx_entry_t){code, value};
}

/* fhir_search_string_norm(x->a, s) for s (not empty) from the tree. */
static slice_t
ix_norm(ix_t *x, slice_t s)
{
	size_t n = sizeof(x->norm) / sizeof(x->norm[0]), slot;

	for (size_t i = 0; i < n; i++)
		if (x->norm_text[i].ptr == s.ptr && x->norm_text[i].len == s.len)
			return x->norm[i];
	slot = x->nnorm++ % n;
	x->norm_text[slot] = s;
	x->norm[slot] = fhir_search_string_norm(x->a, s);
	return x->norm[slot];
}

static slice_t
member_text(const fhir_node_t *obj, slice_t key)
{
	return fhir_node_text(fhir_object_get(obj, key));
}

static void
ix_text(ix_t *x, const ix_codes_t *c, slice_t text)
{
	if (text.len)
		ix_add(x, c->text, ix_norm(x, text));
}

/* One entry "value|system" serves "value" (prefix "value|"), "system|value" and "|value"
 * (equality) and "system|" (suffix); a lone code, string or boolean has no system. */
static void
ix_system_value(ix_t *x, slice_t code, slice_t sys, slice_t val)
{
	if (val.len == 0)
		return;
	ix_add(x, code, cat(x->a, val, "|", sys));
}

static void
ix_token(ix_t *x, const ix_codes_t *c, const fp_item_t *it)
{
	const fhir_type_t *t = it->t;
	const fhir_node_t *n = it->n;

	if (fhir_node_kind(n) == FHIR_BOOL) {
		ix_system_value(x, c->code, SLICE_NULL,
				fhir_node_bool(n) ? SLICE_LIT("true") : SLICE_LIT("false"));
	} else if (fhir_node_kind(n) == FHIR_STRING || fhir_node_kind(n) == FHIR_NUMBER) {
		ix_system_value(x, c->code, SLICE_NULL, fhir_node_text(n));
	} else if (fhir_node_kind(n) != FHIR_OBJECT) {
		return;
	} else if (t == ix_types.coding) {
		ix_system_value(x, c->code, member_text(n, SLICE_LIT("system")),
				member_text(n, SLICE_LIT("code")));
		ix_text(x, c, member_text(n, SLICE_LIT("display")));
	} else if (t == ix_types.codeable_concept) {
		const fhir_node_t *codings = fhir_object_get(n, SLICE_LIT("coding")), *cd;
		size_t i;

		if (codings != NULL)
			FHIR_ARRAY_FOREACH(codings, i, cd) {
				ix_system_value(x, c->code, member_text(cd, SLICE_LIT("system")),
						member_text(cd, SLICE_LIT("code")));
				ix_text(x, c, member_text(cd, SLICE_LIT("display")));
			}
		ix_text(x, c, member_text(n, SLICE_LIT("text")));
	} else if (t == ix_types.identifier) {
		const fhir_node_t *type = fhir_object_get(n, SLICE_LIT("type"));

		ix_system_value(x, c->code, member_text(n, SLICE_LIT("system")),
				member_text(n, SLICE_LIT("value")));
		if (type != NULL)
			ix_text(x, c, member_text(type, SLICE_LIT("text")));
	} else if (t == ix_types.contact_point) {
		ix_system_value(x, c->code, SLICE_NULL, member_text(n, SLICE_LIT("value")));
	}
}

static void
ix_string_one(ix_t *x, const ix_codes_t *c, slice_t s)
{
	if (s.len == 0)
		return;
	ix_add(x, c->code, ix_norm(x, s));
	if (x->full)
		ix_add(x, c->exact, s);
}

static void
ix_string(ix_t *x, const ix_codes_t *c, const fp_item_t *it)
{
	static const slice_t name_parts[] = {SLICE_LIT("family"), SLICE_LIT("given"),
					     SLICE_LIT("text"),   SLICE_LIT("prefix"),
					     SLICE_LIT("suffix"), SLICE_NULL};
	static const slice_t addr_parts[] = {SLICE_LIT("line"),       SLICE_LIT("city"),
					     SLICE_LIT("district"),   SLICE_LIT("state"),
					     SLICE_LIT("postalCode"), SLICE_LIT("country"),
					     SLICE_LIT("text"),       SLICE_NULL};
	const slice_t *parts = NULL;

	if (fhir_node_kind(it->n) == FHIR_STRING) {
		ix_string_one(x, c, fhir_node_text(it->n));
		return;
	}
	if (fhir_node_kind(it->n) != FHIR_OBJECT)
		return;
	if (it->t == ix_types.human_name)
		parts = name_parts;
	else if (it->t == ix_types.address)
		parts = addr_parts;
	else
		return;
	/* one pass over the members, not a lookup per part (the order of entries is free) */
	for (size_t k = 0, nk = fhir_object_count(it->n); k < nk; k++) {
		slice_t key = fhir_object_key_at(it->n, k);
		const fhir_node_t *v = fhir_object_value_at(it->n, k), *s;
		const slice_t *part = parts;
		size_t i;

		while (part->ptr != NULL && !slice_eq(*part, key))
			part++;
		if (part->ptr == NULL)
			continue;
		if (fhir_node_kind(v) == FHIR_ARRAY)
			FHIR_ARRAY_FOREACH(v, i, s)
				ix_string_one(x, c, fhir_node_text(s));
		else
			ix_string_one(x, c, fhir_node_text(v));
	}
}

static void
ix_date_range(ix_t *x, const ix_codes_t *c, int64_t lo, int64_t hi)
{
	unsigned char *l = arena_alloc(x->a, 16);

	fhir_search_date_encode(lo, l);
	fhir_search_date_encode(hi, l + 8);
	ix_add(x, c->lo, slice_make((const char *)l, 16));
}

static void
ix_date(ix_t *x, const ix_codes_t *c, const fp_item_t *it)
{
	int64_t lo, hi, l2, h2;

	if (fhir_node_kind(it->n) == FHIR_STRING) {
		if (fhir_search_date_range(fhir_node_text(it->n), &lo, &hi))
			ix_date_range(x, c, lo, hi);
	} else if (fhir_node_kind(it->n) == FHIR_OBJECT && it->t == ix_types.period) {
		slice_t s = member_text(it->n, SLICE_LIT("start")),
			e = member_text(it->n, SLICE_LIT("end"));

		lo = INT64_MIN;
		hi = INT64_MAX;
		if (s.len && fhir_search_date_range(s, &lo, &h2) == false)
			return;
		if (e.len && fhir_search_date_range(e, &l2, &hi) == false)
			return;
		if (s.len || e.len)
			ix_date_range(x, c, lo, hi);
	} else if (fhir_node_kind(it->n) == FHIR_OBJECT && it->t == ix_types.timing) {
		const fhir_node_t *ev = fhir_object_get(it->n, SLICE_LIT("event")), *e;
		size_t i;

		if (ev != NULL)
			FHIR_ARRAY_FOREACH(ev, i, e)
				if (fhir_search_date_range(fhir_node_text(e), &lo, &hi))
					ix_date_range(x, c, lo, hi);
	}
}

/* A relative reference Type/id (version dropped), or NULL slice when ref is not one. */
static bool
ref_split(slice_t ref, slice_t *type, slice_t *id)
{
	size_t slash = 0, n = 0;

	for (size_t i = 0; i < ref.len; i++)
		if (ref.ptr[i] == '/') {
			n++;
			if (n == 1)
				slash = i;
		}
	if (n != 1 &&
	    !(n == 3 && ref.len > slash + 1 && memmem(ref.ptr, ref.len, "/_history/", 10) != NULL))
		return false;
	*type = slice_make(ref.ptr, slash);
	*id = slice_make(ref.ptr + slash + 1, ref.len - slash - 1);
	for (size_t i = 0; i < id->len; i++)
		if (id->ptr[i] == '/')
			id->len = i;
	return fhir_meta_is_resource(*type) && id->len > 0;
}

bool
fhir_search_ref_key(arena_t *a, slice_t ref, slice_t base, slice_t *out)
{
	slice_t type, id;

	if (base.len && ref.len > base.len && memcmp(ref.ptr, base.ptr, base.len) == 0)
		ref = slice_make(ref.ptr + base.len, ref.len - base.len);
	/* contained and urn:uuid references resolve to nothing stored */
	if (ref.len == 0 || ref.ptr[0] == '#' || (ref.len >= 4 && memcmp(ref.ptr, "urn:", 4) == 0))
		return false;
	*out = ref_split(ref, &type, &id) ? cat(a, id, "|", type) : ref;
	return true;
}

static void
ix_reference(ix_t *x, const ix_codes_t *c, const fp_item_t *it)
{
	slice_t key;

	if (fhir_node_kind(it->n) == FHIR_STRING) { /* canonical, uri */
		ix_add(x, c->code, fhir_node_text(it->n));
		return;
	}
	if (fhir_node_kind(it->n) != FHIR_OBJECT || it->t != ix_types.reference)
		return;
	if (fhir_search_ref_key(x->a, member_text(it->n, SLICE_LIT("reference")), x->base, &key))
		ix_add(x, c->code, key);
	const fhir_node_t *ident = fhir_object_get(it->n, SLICE_LIT("identifier"));

	if (ident != NULL)
		ix_system_value(x, c->identifier, member_text(ident, SLICE_LIT("system")),
				member_text(ident, SLICE_LIT("value")));
}

static void
ix_number(ix_t *x, slice_t code, slice_t text)
{
	slice_t enc;

	if (fhir_search_number_encode(x->a, text, &enc))
		ix_add(x, code, enc);
}

static void
ix_quantity(ix_t *x, const ix_codes_t *c, const fp_item_t *it)
{
	slice_t val, sys, unit, ucode, enc;

	if (fhir_node_kind(it->n) != FHIR_OBJECT)
		return;
	val = member_text(it->n, SLICE_LIT("value"));
	if (!fhir_search_number_encode(x->a, val, &enc))
		return;
	sys = member_text(it->n, SLICE_LIT("system"));
	ucode = member_text(it->n, SLICE_LIT("code"));
	unit = member_text(it->n, SLICE_LIT("unit"));
	ix_add(x, c->code, enc);
	if (ucode.len)
		ix_add(x, c->su, cat(x->a, cat(x->a, sys, "|", ucode), "|", enc));
	if (ucode.len)
		ix_add(x, c->u, cat(x->a, ucode, "|", enc));
	if (unit.len && !slice_eq(unit, ucode))
		ix_add(x, c->u, cat(x->a, unit, "|", enc));
}

/* The entries of parameter prm from the n items v found for it. */
static void
ix_param(ix_t *x, const fp_param_t *prm, const fp_item_t *v, size_t n)
{
	const ix_codes_t *c = &prm->codes;

	for (size_t i = 0; i < n; i++) {
		const fp_item_t *it = &v[i];

		if (it->t == NULL)
			continue;
		switch (prm->sp->type) {
		case FHIR_SP_TOKEN:
			ix_token(x, c, it);
			break;
		case FHIR_SP_STRING:
			ix_string(x, c, it);
			break;
		case FHIR_SP_DATE:
			ix_date(x, c, it);
			break;
		case FHIR_SP_REFERENCE:
			ix_reference(x, c, it);
			break;
		case FHIR_SP_NUMBER:
			if (fhir_node_kind(it->n) == FHIR_NUMBER)
				ix_number(x, c->code, fhir_node_text(it->n));
			else if (fhir_node_kind(it->n) == FHIR_OBJECT)
				ix_number(x, c->code, member_text(it->n, SLICE_LIT("value")));
			break;
		case FHIR_SP_QUANTITY:
			ix_quantity(x, c, it);
			break;
		case FHIR_SP_URI:
			if (fhir_node_kind(it->n) == FHIR_STRING)
				ix_add(x, c->code, fhir_node_text(it->n));
			break;
		default:
			break;
		}
	}
}

/* By code, then value. Codes come from one table (ix_codes_t): one code, one pointer. */
static inline int
entry_order(const fhir_idx_entry_t *x, const fhir_idx_entry_t *y)
{
	int r = x->code.ptr == y->code.ptr && x->code.len == y->code.len
		    ? 0
		    : slice_cmp(x->code, y->code);

	return r != 0 ? r : slice_cmp(x->value, y->value);
}

static int
entry_cmp(const void *a, const void *b)
{
	return entry_order(a, b);
}

/* Sorts entries by entry_order without duplicates; returns how many remain. Insertion sort
 * for the usual few dozen (they come grouped by parameter already, and qsort's setup costs
 * more than the sort), qsort beyond. */
static size_t
entries_sort_unique(fhir_idx_entry_t *v, size_t n)
{
	size_t k = 0;

	if (n > 64) {
		qsort(v, n, sizeof(*v), entry_cmp);
		for (size_t i = 0; i < n; i++)
			if (k == 0 || entry_order(&v[k - 1], &v[i]) != 0)
				v[k++] = v[i];
		return k;
	}
	for (size_t i = 0; i < n; i++) {
		fhir_idx_entry_t e = v[i];
		size_t j = k;
		int r = 1;

		while (j > 0 && (r = entry_order(&v[j - 1], &e)) > 0)
			j--;
		if (r == 0) /* v[j - 1] is e */
			continue;
		for (size_t m = k; m > j; m--)
			v[m] = v[m - 1];
		v[j] = e;
		k++;
	}
	return k;
}

static int
index_run(arena_t *a, const fhir_node_t *res, fhir_idx_value_max_fn value_max, slice_t base,
	  bool full, const slice_t *only, size_t nonly, fhir_idx_entry_t **out, size_t *n)
{
	slice_t type = fhir_resource_type(res);
	const fhir_type_t *rt = fhir_meta_type(type);
	const fp_plan_t *plan;
	fp_run_t r = {a, NULL, 0, 0, NULL};
	ix_t x = {.a = a, .value_max = value_max, .type = type, .base = base, .full = full};

	*out = NULL;
	*n = 0;
	if (rt == NULL || rt->kind != FHIR_TYPE_RESOURCE)
		return -FG_EINVAL;
	plan = fp_cache_find(rt);
	if (plan != NULL) {
		r.sets = arena_zalloc(a, plan->nnodes * sizeof(*r.sets));
		fp_item_push(&r, res, rt);
		r.sets[0] = (fp_set_t){0, 1, true};
	}
	for (size_t i = 0; plan != NULL && i < plan->nparams; i++) {
		const fp_param_t *prm = &plan->params[i];
		bool wanted = only == NULL;

		for (size_t j = 0; j < nonly && !wanted; j++)
			wanted = slice_eq(only[j], prm->codes.code);
		for (size_t j = 0; wanted && j < prm->nleaves; j++) {
			fp_set_t s = fp_node_set(&r, plan, prm->leaves[j]);

			ix_param(&x, prm, r.v + s.start, s.n);
		}
	}
	*out = x.v;
	*n = entries_sort_unique(x.v, x.n);
	return 0;
}

/* The items e gives from the items of in, added to r as one set (the union of its terms in
 * order). */
static fp_set_t
fp_expr_eval(fp_run_t *r, const fp_expr_t *e, fp_set_t in)
{
	fp_set_t *sets = arena_alloc(r->a, (e->nterms ? e->nterms : 1) * sizeof(*sets)), out;

	for (size_t i = 0; i < e->nterms; i++) {
		const fp_term_t *t = &e->terms[i];
		fp_set_t cur = t->sub != NULL ? fp_expr_eval(r, t->sub, in) : in;

		for (size_t k = 0; k < t->nops && cur.n > 0; k++) {
			uint32_t start = (uint32_t)r->n;

			fp_op_run(r, &t->ops[k], cur);
			cur = (fp_set_t){start, (uint32_t)(r->n - start), true};
		}
		sets[i] = cur;
	}
	if (e->nterms == 1)
		return sets[0];
	out = (fp_set_t){(uint32_t)r->n, 0, true};
	for (size_t i = 0; i < e->nterms; i++)
		for (uint32_t k = sets[i].start; k < sets[i].start + sets[i].n; k++) {
			fp_item_t it = r->v[k]; /* a copy: r->v moves as items are added */

			fp_item_push(r, it.n, it.t);
		}
	out.n = (uint32_t)(r->n - out.start);
	return out;
}

int
fhir_search_index_composite(arena_t *a, const fhir_node_t *res, slice_t base, slice_t code,
			    fhir_idx_group_t **out, size_t *n)
{
	const fhir_type_t *rt = fhir_meta_type(fhir_resource_type(res));
	const fp_param_t *prm;
	fp_run_t r = {a, NULL, 0, 0, NULL};
	fp_set_t items;

	*out = NULL;
	*n = 0;
	if (rt == NULL || rt->kind != FHIR_TYPE_RESOURCE)
		return -FG_EINVAL;
	if ((prm = fp_composite_find(rt, code)) == NULL)
		return -FG_EUNSUPPORTED;
	fp_item_push(&r, res, rt);
	items = fp_expr_eval(&r, prm->items, (fp_set_t){0, 1, true});
	*out = arena_zalloc(a, (items.n ? items.n : 1) * sizeof(**out));
	for (uint32_t i = 0; i < items.n; i++) {
		ix_t x = {.a = a, .type = fhir_resource_type(res), .base = base, .full = true};
		fp_set_t one = {items.start + i, 1, true};

		if (r.v[one.start].t == NULL)
			continue;
		for (size_t k = 0; k < prm->sp->ncomponents; k++) {
			fp_set_t s = fp_expr_eval(&r, prm->comps[k].expr, one);

			ix_param(&x, prm->comps[k].prm, r.v + s.start, s.n);
		}
		(*out)[*n].v = x.v;
		(*out)[(*n)++].n = entries_sort_unique(x.v, x.n);
	}
	return 0;
}

int
fhir_search_index_base(arena_t *a, const fhir_node_t *res, fhir_idx_value_max_fn value_max,
		       slice_t base, fhir_idx_entry_t **out, size_t *n)
{
	return index_run(a, res, value_max, base, false, NULL, 0, out, n);
}

int
fhir_search_index_full(arena_t *a, const fhir_node_t *res, slice_t base, fhir_idx_entry_t **out,
		       size_t *n)
{
	return index_run(a, res, NULL, base, true, NULL, 0, out, n);
}

int
fhir_search_index_params(arena_t *a, const fhir_node_t *res, slice_t base, const slice_t *codes,
			 size_t ncodes, fhir_idx_entry_t **out, size_t *n)
{
	return index_run(a, res, NULL, base, true, codes, ncodes, out, n);
}

int
fhir_search_index(arena_t *a, const fhir_node_t *res, fhir_idx_value_max_fn value_max,
		  fhir_idx_entry_t **out, size_t *n)
{
	return fhir_search_index_base(a, res, value_max, SLICE_NULL, out, n);
}

/* Request parsing. */

fhir_search_prefix_t
fhir_search_prefix_split(slice_t v, slice_t *rest)
{
	static const char *const names[] = {"eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"};

	*rest = v;
	if (v.len < 3 ||
	    !((v.ptr[2] >= '0' && v.ptr[2] <= '9') || v.ptr[2] == '-' || v.ptr[2] == '.'))
		return FHIR_PFX_EQ;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (memcmp(v.ptr, names[i], 2) == 0) {
			*rest = slice_make(v.ptr + 2, v.len - 2);
			return (fhir_search_prefix_t)i;
		}
	return FHIR_PFX_EQ;
}

/* Whether value's byte k starts an escape that keeps the byte after it ("\," "\$" "\\"). */
static bool
search_value_escape(slice_t value, size_t k)
{
	return value.ptr[k] == '\\' && k + 1 < value.len &&
	       (value.ptr[k + 1] == ',' || value.ptr[k + 1] == '$' || value.ptr[k + 1] == '\\');
}

void
fhir_search_param_parse(arena_t *a, slice_t type, slice_t name, slice_t value,
			fhir_search_param_t *out)
{
	size_t i = 0, nv = 1, start;
	char *buf;
	size_t bl = 0;
	bool composite;

	memset(out, 0, sizeof(*out));
	out->name = name;
	while (i < name.len && name.ptr[i] != ':' && name.ptr[i] != '.')
		i++;
	out->code = slice_make(name.ptr, i);
	if (i < name.len && name.ptr[i] == ':') {
		start = ++i;
		while (i < name.len && name.ptr[i] != '.')
			i++;
		out->modifier = slice_make(name.ptr + start, i - start);
	}
	if (i < name.len && name.ptr[i] == '.')
		out->chain = slice_make(name.ptr + i + 1, name.len - i - 1);
	out->sp = fhir_meta_searchparam(type, out->code);

	/* Values: split on unescaped commas; "\," "\|" "\$" "\\" keep the escaped character
	 * (a "\|" stays escaped so that token splitting can tell it from a separator, and in a
	 * composite's value "\$" and "\\" do, for the split into its components). The count
	 * reads the escapes as the split does: in "\\," the comma separates. */
	composite = out->sp != NULL && out->sp->type == FHIR_SP_COMPOSITE;
	for (size_t k = 0; k < value.len; k++) {
		if (search_value_escape(value, k))
			k++;
		else if (value.ptr[k] == ',')
			nv++;
	}
	out->values = arena_alloc(a, nv * sizeof(*out->values));
	buf = arena_alloc(a, value.len + 1);
	start = 0;
	for (size_t k = 0; k <= value.len; k++) {
		if (k == value.len || value.ptr[k] == ',') {
			out->values[out->nvalues++] = slice_make(buf + start, bl - start);
			start = bl;
			continue;
		}
		if (search_value_escape(value, k)) {
			if (composite && value.ptr[k + 1] != ',')
				buf[bl++] = '\\';
			k++;
		}
		buf[bl++] = value.ptr[k];
	}
}
