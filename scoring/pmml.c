/* PMML 4.4 RegressionModel: a strict loader for the supported subset (anything else is refused
 * with file:line and the element), the model's ModelVerification run at load, and an evaluator
 * that splits the linear predictor into per-input contributions. */
#include "config.h"

#include "scoring/pmml.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libxml/parser.h>
#include <libxml/tree.h>

#include "fhir/xml.h"
#include "lib/arena.h"
#include "lib/buf.h"
#include "lib/err.h"
#include "lib/xalloc.h"

/* No network, no DTD loading, no entity substitution (XML_PARSE_NOENT stays off); a DOCTYPE
 * is refused outright. Errors go to the context, not stderr. */
#define PMML_XML_OPTIONS                                                                   \
	(XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING | XML_PARSE_BIG_LINES | \
	 XML_PARSE_NOCDATA)

/* Bounds that keep a hostile file cheap to refuse (fields are looked up linearly). */
#define PMML_MAX_FIELDS 4096
#define PMML_MAX_TERMS  65536
#define PMML_MAX_ROWS   10000

#define SUPPORTS_TOP                                                                               \
	"Header, MiningBuildTask, DataDictionary, TransformationDictionary, one RegressionModel, " \
	"Extension"
#define SUPPORTS_MODEL                                                               \
	"MiningSchema, Output, ModelStats, ModelExplanation, LocalTransformations, " \
	"RegressionTable, "                                                          \
	"ModelVerification, Extension"
#define SUPPORTS_EXPR "Constant, FieldRef, Apply"
#define SUPPORTS_FN                                                                    \
	"+ - * / min max abs ln log10 exp pow if equal notEqual greaterThan lessThan " \
	"greaterOrEqual lessOrEqual and or not isMissing isNotMissing"
#define SUPPORTS_NORM "none, logit, softmax, cloglog, exp"

typedef enum { NORM_NONE, NORM_LOGIT, NORM_SOFTMAX, NORM_CLOGLOG, NORM_EXP } norm_t;
typedef enum { USAGE_NONE = -1, USAGE_ACTIVE, USAGE_TARGET, USAGE_SUPPLEMENTARY } usage_t;
typedef enum { INVALID_RETURN, INVALID_AS_IS, INVALID_AS_MISSING, INVALID_AS_VALUE } invalid_t;
typedef enum { OUTLIERS_AS_IS, OUTLIERS_AS_MISSING, OUTLIERS_AS_EXTREME } outliers_t;
typedef enum { VALUE_VALID, VALUE_INVALID, VALUE_MISSING } value_prop_t;
typedef enum { EX_CONST, EX_FIELD, EX_APPLY } ex_kind_t;
typedef enum { TERM_NUMERIC, TERM_CATEGORICAL, TERM_PRODUCT } term_kind_t;
typedef enum { OUT_PROBABILITY, OUT_PREDICTED } out_feature_t;

typedef enum {
	FN_ADD,
	FN_SUB,
	FN_MUL,
	FN_DIV,
	FN_MIN,
	FN_MAX,
	FN_ABS,
	FN_LN,
	FN_LOG10,
	FN_EXP,
	FN_POW,
	FN_IF,
	FN_EQ,
	FN_NE,
	FN_GT,
	FN_LT,
	FN_GE,
	FN_LE,
	FN_AND,
	FN_OR,
	FN_NOT,
	FN_ISMISSING,
	FN_ISNOTMISSING
} fn_t;

static const struct {
	const char *name;
	fn_t fn;
	size_t min_args, max_args;
} pmml_fns[] = {
    {"+", FN_ADD, 2, 2},
    {"-", FN_SUB, 2, 2},
    {"*", FN_MUL, 2, 2},
    {"/", FN_DIV, 2, 2},
    {"min", FN_MIN, 1, SIZE_MAX},
    {"max", FN_MAX, 1, SIZE_MAX},
    {"abs", FN_ABS, 1, 1},
    {"ln", FN_LN, 1, 1},
    {"log10", FN_LOG10, 1, 1},
    {"exp", FN_EXP, 1, 1},
    {"pow", FN_POW, 2, 2},
    {"if", FN_IF, 2, 3},
    {"equal", FN_EQ, 2, 2},
    {"notEqual", FN_NE, 2, 2},
    {"greaterThan", FN_GT, 2, 2},
    {"lessThan", FN_LT, 2, 2},
    {"greaterOrEqual", FN_GE, 2, 2},
    {"lessOrEqual", FN_LE, 2, 2},
    {"and", FN_AND, 2, SIZE_MAX},
    {"or", FN_OR, 2, SIZE_MAX},
    {"not", FN_NOT, 1, 1},
    {"isMissing", FN_ISMISSING, 1, 1},
    {"isNotMissing", FN_ISNOTMISSING, 1, 1},
};

typedef struct expr expr_t;
struct expr {
	ex_kind_t kind;
	long line;
	pmml_value_t value; /* EX_CONST */
	const char *ref;    /* EX_FIELD: the name, resolved into field */
	size_t field;
	fn_t fn; /* EX_APPLY */
	expr_t **args;
	size_t nargs;
	bool has_map_missing, has_default;
	pmml_value_t map_missing, default_value;
};

/* A sorted set of input indexes. */
typedef struct {
	size_t *v;
	size_t n;
} idxset_t;

typedef struct {
	double lo, hi;
	bool lo_closed, hi_closed;
} interval_t;

typedef struct {
	const char *text;
	double num;
	bool is_num;
	value_prop_t prop;
} field_value_t;

typedef struct {
	const char *name, *display;
	long line;
	bool derived;
	pmml_optype_t optype;
	pmml_datatype_t datatype;
	interval_t *iv;
	size_t niv, ivcap;
	field_value_t *vals;
	size_t nvals, valcap;
	/* MiningSchema */
	usage_t usage;
	size_t input; /* index into inputs when active */
	bool has_repl, has_invalid_repl, missing_returns_invalid, has_low, has_high;
	pmml_value_t repl, invalid_repl;
	const char *repl_text;
	invalid_t invalid;
	outliers_t outliers;
	double low, high;
	/* DerivedField */
	expr_t *expr;
	int mark;       /* topological sort: 0 new, 1 visiting, 2 done */
	idxset_t deps;  /* every input the value depends on */
	idxset_t carry; /* the inputs its value carries (not through an if's condition) */
} field_t;

typedef struct {
	term_kind_t kind;
	const char *elem; /* the element, for messages */
	long line;
	double coef, exponent;
	const char **names;
	size_t *fields, nfields;
	pmml_value_t cat; /* TERM_CATEGORICAL */
	idxset_t carry;
} term_t;

typedef struct {
	const char *category;
	long line;
	double intercept;
	term_t *terms;
	size_t nterms, cap;
} table_t;

typedef struct {
	const char *name;
	long line;
	out_feature_t feature;
	const char *value;
	size_t category; /* index of value among the tables */
} output_t;

struct pmml_model {
	arena_t *a;
	const char *name, *version, *description, *copyright, *application, *annotation;
	pmml_function_t function;
	norm_t norm;
	field_t *fields;
	size_t nfields, fcap;
	size_t *inputs; /* field index of each active MiningField, in MiningSchema order */
	size_t ninputs, incap;
	pmml_field_info_t *info;
	size_t target; /* field index, or SIZE_MAX */
	size_t *order; /* derived fields in dependency order */
	size_t norder;
	table_t *tables;
	size_t ntables, tcap;
	const char **categories;
	output_t *outputs;
	size_t noutputs, ocap;
	const xmlNode *verification;
	const char **ext; /* Header/Extension name, value pairs */
	size_t next, extcap;
};

typedef struct {
	const char *file;
	char *err;
	size_t errlen;
	int rc;
	pmml_model_t *m;
} load_t;

/* Errors. */

static int __attribute__((format(printf, 3, 4)))
load_fail(load_t *l, const xmlNode *n, const char *fmt, ...)
{
	va_list ap;
	int off;

	if (l->rc != 0)
		return l->rc;
	l->rc = -FG_EINVAL;
	off = snprintf(l->err, l->errlen, "%s:%ld: ", l->file, n != NULL ? xmlGetLineNo(n) : 0L);
	if (off < 0 || (size_t)off >= l->errlen)
		return l->rc;
	va_start(ap, fmt);
	vsnprintf(l->err + off, l->errlen - (size_t)off, fmt, ap);
	va_end(ap);
	return l->rc;
}

static int
load_unsupported(load_t *l, const xmlNode *n, const char *supports)
{
	if (l->rc != 0)
		return l->rc;
	load_fail(l, n, "%s: not supported (fhirgate supports %s)", (const char *)n->name,
		  supports);
	return l->rc = -FG_EUNSUPPORTED;
}

/* XML helpers. */

static bool
xml_is(const xmlNode *n, const char *name)
{
	return strcmp((const char *)n->name, name) == 0;
}

/* The next element sibling from n on (n included), or NULL. */
static const xmlNode *
xml_elem(const xmlNode *n)
{
	while (n != NULL && n->type != XML_ELEMENT_NODE)
		n = n->next;
	return n;
}

#define FOR_EACH_CHILD(c, parent) \
	for (const xmlNode *c = xml_elem((parent)->children); c != NULL; c = xml_elem(c->next))

/* An attribute copied into the model's arena, or NULL when absent. */
static const char *
xml_attr(load_t *l, const xmlNode *n, const char *name)
{
	xmlChar *v = xmlGetNoNsProp(n, (const xmlChar *)name);
	char *s;

	if (v == NULL)
		return NULL;
	s = arena_strndup(l->m->a, (const char *)v, strlen((const char *)v));
	xmlFree(v);
	return s;
}

static const char *
xml_attr_required(load_t *l, const xmlNode *n, const char *name)
{
	const char *v = xml_attr(l, n, name);

	if (v == NULL)
		load_fail(l, n, "%s: missing required attribute %s", (const char *)n->name, name);
	return v;
}

/* The element's text content copied into the arena (never NULL). */
static const char *
xml_text(load_t *l, const xmlNode *n)
{
	xmlChar *v = xmlNodeGetContent(n);
	const char *s = arena_strndup(l->m->a, v != NULL ? (const char *)v : "",
				      v != NULL ? strlen((const char *)v) : 0);

	xmlFree(v);
	return s;
}

/* A whole string as a finite number. */
static bool
pmml_parse_number(const char *s, size_t len, double *out)
{
	char tmp[128], *end;
	double v;

	while (len > 0 && (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r'))
		s++, len--;
	while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t' || s[len - 1] == '\n' ||
			   s[len - 1] == '\r'))
		len--;
	if (len == 0 || len >= sizeof(tmp))
		return false;
	memcpy(tmp, s, len);
	tmp[len] = '\0';
	errno = 0;
	v = strtod(tmp, &end);
	if (*end != '\0' || errno == ERANGE || !isfinite(v))
		return false;
	*out = v;
	return true;
}

/* "true" or "false" as 1 or 0 (boolean fields). */
static bool
pmml_parse_bool(slice_t s, double *out)
{
	if (!slice_eq_cstr(s, "true") && !slice_eq_cstr(s, "false"))
		return false;
	*out = s.ptr[0] == 't';
	return true;
}

/* A numeric attribute; def when absent and not required. */
static double
xml_attr_number(load_t *l, const xmlNode *n, const char *name, bool required, double def)
{
	const char *v = required ? xml_attr_required(l, n, name) : xml_attr(l, n, name);
	double d;

	if (v == NULL)
		return def;
	if (!pmml_parse_number(v, strlen(v), &d)) {
		load_fail(l, n, "%s: %s=\"%s\" is not a number", (const char *)n->name, name, v);
		return def;
	}
	return d;
}

/* An attribute that must be one of words[] (NULL-terminated); def when absent. */
static int
xml_attr_enum(load_t *l, const xmlNode *n, const char *name, const char *const *words, int def,
	      const char *supports)
{
	const char *v = xml_attr(l, n, name);

	if (v == NULL)
		return def;
	for (int i = 0; words[i] != NULL; i++)
		if (strcmp(v, words[i]) == 0)
			return i;
	if (l->rc == 0) {
		load_fail(l, n, "%s %s=\"%s\": not supported (fhirgate supports %s)",
			  (const char *)n->name, name, v, supports);
		l->rc = -FG_EUNSUPPORTED;
	}
	return def;
}

/* Fields. */

static size_t
field_find(const pmml_model_t *m, const char *name)
{
	for (size_t i = 0; i < m->nfields; i++)
		if (strcmp(m->fields[i].name, name) == 0)
			return i;
	return SIZE_MAX;
}

static field_t *
field_add(load_t *l, const xmlNode *n, const char *name)
{
	pmml_model_t *m = l->m;
	field_t *f;

	if (field_find(m, name) != SIZE_MAX) {
		load_fail(l, n, "%s: field \"%s\" is defined twice", (const char *)n->name, name);
		return NULL;
	}
	if (m->nfields >= PMML_MAX_FIELDS) {
		load_fail(l, n, "%s: more than %d fields", (const char *)n->name, PMML_MAX_FIELDS);
		return NULL;
	}
	m->fields = arena_array_grow(m->a, m->fields, m->nfields, &m->fcap, sizeof(*m->fields));
	f = &m->fields[m->nfields++];
	memset(f, 0, sizeof(*f));
	f->name = name;
	f->line = xmlGetLineNo(n);
	f->usage = USAGE_NONE;
	f->input = SIZE_MAX;
	return f;
}

static bool
datatype_is_numeric(pmml_datatype_t t)
{
	return t != PMML_DATATYPE_STRING;
}

static const char *const optype_words[] = {"continuous", "categorical", "ordinal", NULL};

static pmml_datatype_t
parse_datatype(load_t *l, const xmlNode *n, bool required)
{
	static const char *const words[] = {"double", "integer", "boolean",
					    "string", "float",   NULL};
	int t;

	if (required && xml_attr_required(l, n, "dataType") == NULL)
		return PMML_DATATYPE_DOUBLE;
	t = xml_attr_enum(l, n, "dataType", words, 0, "double, float, integer, boolean, string");
	return t == 4 ? PMML_DATATYPE_DOUBLE : (pmml_datatype_t)t;
}

/* A literal value typed by the field's dataType (load time: errors name the element). */
static bool
value_typed(load_t *l, const xmlNode *n, const char *text, pmml_datatype_t t, pmml_value_t *out)
{
	double d;

	if (!datatype_is_numeric(t)) {
		*out = (pmml_value_t){PMML_VALUE_STRING, 0, slice_cstr(text)};
		return true;
	}
	if (!(t == PMML_DATATYPE_BOOLEAN && pmml_parse_bool(slice_cstr(text), &d)) &&
	    !pmml_parse_number(text, strlen(text), &d)) {
		load_fail(l, n, "%s: \"%s\" is not a number", (const char *)n->name, text);
		return false;
	}
	*out = pmml_value_number(d);
	return true;
}

/* A literal without a declared type: a number when it reads as one. */
static pmml_value_t
value_untyped(const char *text)
{
	double d;

	if (pmml_parse_number(text, strlen(text), &d))
		return pmml_value_number(d);
	return (pmml_value_t){PMML_VALUE_STRING, 0, slice_cstr(text)};
}

static void
parse_interval(load_t *l, field_t *f, const xmlNode *n)
{
	static const char *const closures[] = {"openOpen", "openClosed", "closedOpen",
					       "closedClosed", NULL};
	interval_t iv;
	int c = xml_attr_enum(l, n, "closure", closures, -1,
			      "openOpen, openClosed, closedOpen, closedClosed");

	if (c < 0 && l->rc == 0) {
		load_fail(l, n, "Interval: missing required attribute closure");
		return;
	}
	iv.lo = xml_attr_number(l, n, "leftMargin", false, -HUGE_VAL);
	iv.hi = xml_attr_number(l, n, "rightMargin", false, HUGE_VAL);
	iv.lo_closed = c == 2 || c == 3;
	iv.hi_closed = c == 1 || c == 3;
	if (l->rc == 0 && iv.lo > iv.hi)
		load_fail(l, n, "Interval: leftMargin is above rightMargin");
	f->iv = arena_array_grow(l->m->a, f->iv, f->niv, &f->ivcap, sizeof(*f->iv));
	f->iv[f->niv++] = iv;
}

static void
parse_field_value(load_t *l, field_t *f, const xmlNode *n)
{
	static const char *const props[] = {"valid", "invalid", "missing", NULL};
	const char *v = xml_attr_required(l, n, "value");
	field_value_t fv;

	if (v == NULL)
		return;
	fv.text = v;
	fv.prop = xml_attr_enum(l, n, "property", props, VALUE_VALID, "valid, invalid, missing");
	fv.is_num = datatype_is_numeric(f->datatype) && pmml_parse_number(v, strlen(v), &fv.num);
	if (f->datatype == PMML_DATATYPE_BOOLEAN && pmml_parse_bool(slice_cstr(v), &fv.num))
		fv.is_num = true;
	if (datatype_is_numeric(f->datatype) && !fv.is_num && fv.prop == VALUE_VALID)
		load_fail(l, n, "Value: \"%s\" is not a number (field %s is numeric)", v, f->name);
	f->vals = arena_array_grow(l->m->a, f->vals, f->nvals, &f->valcap, sizeof(*f->vals));
	f->vals[f->nvals++] = fv;
}

static void
parse_data_dictionary(load_t *l, const xmlNode *dd)
{
	FOR_EACH_CHILD(c, dd)
	{
		const char *name;
		field_t *f;

		if (l->rc != 0)
			return;
		if (xml_is(c, "Extension"))
			continue;
		if (!xml_is(c, "DataField")) {
			load_unsupported(l, c, "DataField, Extension in a DataDictionary");
			return;
		}
		if ((name = xml_attr_required(l, c, "name")) == NULL)
			return;
		if (xml_attr_required(l, c, "optype") == NULL ||
		    (f = field_add(l, c, name)) == NULL)
			return;
		f->display = xml_attr(l, c, "displayName");
		f->optype = xml_attr_enum(l, c, "optype", optype_words, 0,
					  "continuous, categorical, ordinal");
		f->datatype = parse_datatype(l, c, true);
		FOR_EACH_CHILD(v, c)
		{
			if (xml_is(v, "Interval"))
				parse_interval(l, f, v);
			else if (xml_is(v, "Value"))
				parse_field_value(l, f, v);
			else if (!xml_is(v, "Extension"))
				load_unsupported(l, v, "Interval, Value, Extension in a DataField");
		}
		if (f->niv > 0 && f->optype != PMML_OPTYPE_CONTINUOUS)
			load_fail(l, c, "DataField %s: an Interval needs optype continuous", name);
	}
}

/* Expressions. */

static expr_t *parse_expr(load_t *l, const xmlNode *n);

static void
parse_expr_common(load_t *l, const xmlNode *n, expr_t *e)
{
	const char *mm = xml_attr(l, n, "mapMissingTo");
	const char *dv = xml_attr(l, n, "defaultValue");

	if (mm != NULL) {
		e->has_map_missing = true;
		e->map_missing = value_untyped(mm);
	}
	if (dv != NULL) {
		e->has_default = true;
		e->default_value = value_untyped(dv);
	}
}

static expr_t *
parse_apply(load_t *l, const xmlNode *n, expr_t *e)
{
	const char *fn = xml_attr_required(l, n, "function");
	size_t i, cap = 0;

	if (fn == NULL)
		return NULL;
	for (i = 0; i < sizeof(pmml_fns) / sizeof(pmml_fns[0]); i++)
		if (strcmp(fn, pmml_fns[i].name) == 0)
			break;
	if (i == sizeof(pmml_fns) / sizeof(pmml_fns[0])) {
		load_fail(l, n, "Apply function=\"%s\": not supported (fhirgate supports %s)", fn,
			  SUPPORTS_FN);
		l->rc = -FG_EUNSUPPORTED;
		return NULL;
	}
	if (xml_attr(l, n, "invalidValueTreatment") != NULL) {
		load_fail(l, n,
			  "Apply invalidValueTreatment: not supported (fhirgate supports "
			  "defaultValue)");
		l->rc = -FG_EUNSUPPORTED;
		return NULL;
	}
	e->kind = EX_APPLY;
	e->fn = pmml_fns[i].fn;
	FOR_EACH_CHILD(c, n)
	{
		expr_t *arg;

		if (xml_is(c, "Extension"))
			continue;
		if ((arg = parse_expr(l, c)) == NULL)
			return NULL;
		e->args = arena_array_grow(l->m->a, e->args, e->nargs, &cap, sizeof(*e->args));
		e->args[e->nargs++] = arg;
	}
	if (e->nargs < pmml_fns[i].min_args || e->nargs > pmml_fns[i].max_args) {
		load_fail(l, n, "Apply function=\"%s\": %zu arguments (wrong number)", fn,
			  e->nargs);
		return NULL;
	}
	return e;
}

static expr_t *
parse_expr(load_t *l, const xmlNode *n)
{
	expr_t *e = arena_zalloc(l->m->a, sizeof(*e));

	e->line = xmlGetLineNo(n);
	e->field = SIZE_MAX;
	parse_expr_common(l, n, e);
	if (xml_is(n, "Constant")) {
		const char *text = xml_text(l, n);
		const char *missing = xml_attr(l, n, "missing");

		e->kind = EX_CONST;
		if (missing != NULL && strcmp(missing, "true") == 0)
			e->value = pmml_value_missing();
		else if (xml_attr(l, n, "dataType") != NULL)
			value_typed(l, n, text, parse_datatype(l, n, false), &e->value);
		else
			e->value = value_untyped(text);
		return l->rc == 0 ? e : NULL;
	}
	if (xml_is(n, "FieldRef")) {
		e->kind = EX_FIELD;
		e->ref = xml_attr_required(l, n, "field");
		return l->rc == 0 ? e : NULL;
	}
	if (xml_is(n, "Apply"))
		return parse_apply(l, n, e);
	load_unsupported(l, n, SUPPORTS_EXPR);
	return NULL;
}

static void
parse_derived_fields(load_t *l, const xmlNode *parent)
{
	FOR_EACH_CHILD(c, parent)
	{
		const char *name;
		expr_t *e = NULL;
		field_t *f;

		if (l->rc != 0)
			return;
		if (xml_is(c, "Extension"))
			continue;
		if (!xml_is(c, "DerivedField")) {
			load_unsupported(l, c, "DerivedField, Extension in transformations");
			return;
		}
		if ((name = xml_attr_required(l, c, "name")) == NULL)
			return;
		FOR_EACH_CHILD(x, c)
		{
			if (xml_is(x, "Extension") || xml_is(x, "Value"))
				continue;
			if (e != NULL) {
				load_fail(l, x, "DerivedField %s: more than one expression", name);
				return;
			}
			if ((e = parse_expr(l, x)) == NULL)
				return;
		}
		if (e == NULL) {
			load_fail(l, c, "DerivedField %s: no expression", name);
			return;
		}
		if ((f = field_add(l, c, name)) == NULL)
			return;
		f->derived = true;
		f->expr = e;
		f->optype = xml_attr_enum(l, c, "optype", optype_words, 0,
					  "continuous, categorical, ordinal");
		f->datatype = parse_datatype(l, c, false);
		f->usage = USAGE_ACTIVE;
	}
}

/* Header. */

static void
parse_header(load_t *l, const xmlNode *h)
{
	pmml_model_t *m = l->m;
	buf_t notes = BUF_INIT;

	m->copyright = xml_attr(l, h, "copyright");
	m->description = xml_attr(l, h, "description");
	m->version = xml_attr(l, h, "modelVersion");
	FOR_EACH_CHILD(c, h)
	{
		if (xml_is(c, "Application")) {
			m->application = xml_attr(l, c, "name");
		} else if (xml_is(c, "Annotation")) {
			if (notes.len > 0)
				buf_append_byte(&notes, '\n');
			buf_append_cstr(&notes, xml_text(l, c));
		} else if (xml_is(c, "Extension")) {
			const char *name = xml_attr(l, c, "name"), *value = xml_attr(l, c, "value");

			if (name == NULL || value == NULL)
				continue;
			m->ext =
			    arena_array_grow(m->a, m->ext, m->next, &m->extcap, sizeof(*m->ext));
			m->ext[m->next++] = name;
			m->ext =
			    arena_array_grow(m->a, m->ext, m->next, &m->extcap, sizeof(*m->ext));
			m->ext[m->next++] = value;
		} else if (!xml_is(c, "Timestamp")) {
			load_unsupported(l, c,
					 "Application, Annotation, Timestamp, Extension in a "
					 "Header");
		}
	}
	if (notes.len > 0)
		m->annotation = arena_strndup(m->a, notes.data, notes.len);
	buf_free(&notes);
}

/* MiningSchema. */

static void
parse_mining_field(load_t *l, const xmlNode *n)
{
	static const char *const usages[] = {"active", "target", "predicted", "supplementary",
					     NULL};
	static const char *const missing[] = {"asIs",    "asMean",        "asMode", "asMedian",
					      "asValue", "returnInvalid", NULL};
	static const char *const invalid[] = {"returnInvalid", "asIs", "asMissing", "asValue",
					      NULL};
	static const char *const outliers[] = {"asIs", "asMissingValues", "asExtremeValues", NULL};
	pmml_model_t *m = l->m;
	const char *name = xml_attr_required(l, n, "name");
	const char *v;
	size_t i;
	field_t *f;
	int u;

	if (name == NULL)
		return;
	i = field_find(m, name);
	if (i == SIZE_MAX || m->fields[i].derived) {
		load_fail(l, n, "MiningField: unknown field \"%s\" (not in the DataDictionary)",
			  name);
		return;
	}
	f = &m->fields[i];
	if (f->usage != USAGE_NONE) {
		load_fail(l, n, "MiningField: field \"%s\" is listed twice", name);
		return;
	}
	u = xml_attr_enum(l, n, "usageType", usages, 0,
			  "usageType active, target, predicted, supplementary");
	f->usage = u == 0 ? USAGE_ACTIVE : u == 3 ? USAGE_SUPPLEMENTARY : USAGE_TARGET;
	if (xml_attr_enum(l, n, "missingValueTreatment", missing, 0,
			  "asIs, asMean, asMode, asMedian, asValue, returnInvalid") == 5)
		f->missing_returns_invalid = true;
	f->invalid = xml_attr_enum(l, n, "invalidValueTreatment", invalid, INVALID_RETURN,
				   "returnInvalid, asIs, asMissing, asValue");
	f->outliers = xml_attr_enum(l, n, "outliers", outliers, OUTLIERS_AS_IS,
				    "asIs, asMissingValues, asExtremeValues");
	if ((v = xml_attr(l, n, "missingValueReplacement")) != NULL) {
		f->has_repl = value_typed(l, n, v, f->datatype, &f->repl);
		f->repl_text = v;
	}
	if ((v = xml_attr(l, n, "invalidValueReplacement")) != NULL)
		f->has_invalid_repl = value_typed(l, n, v, f->datatype, &f->invalid_repl);
	if (f->invalid == INVALID_AS_VALUE && !f->has_invalid_repl && l->rc == 0)
		load_fail(l, n,
			  "MiningField %s: invalidValueTreatment asValue needs "
			  "invalidValueReplacement",
			  name);
	f->has_low = xml_attr(l, n, "lowValue") != NULL;
	f->has_high = xml_attr(l, n, "highValue") != NULL;
	f->low = xml_attr_number(l, n, "lowValue", false, -HUGE_VAL);
	f->high = xml_attr_number(l, n, "highValue", false, HUGE_VAL);
	if (f->outliers != OUTLIERS_AS_IS && !f->has_low && !f->has_high && l->rc == 0)
		load_fail(l, n, "MiningField %s: outliers needs lowValue or highValue", name);
	if (f->usage == USAGE_TARGET) {
		if (m->target != SIZE_MAX) {
			load_fail(l, n, "MiningField %s: a second target field", name);
			return;
		}
		m->target = i;
	} else if (f->usage == USAGE_ACTIVE) {
		f->input = m->ninputs;
		m->inputs =
		    arena_array_grow(m->a, m->inputs, m->ninputs, &m->incap, sizeof(*m->inputs));
		m->inputs[m->ninputs++] = i;
	}
}

static void
parse_mining_schema(load_t *l, const xmlNode *n)
{
	FOR_EACH_CHILD(c, n)
	{
		if (l->rc != 0)
			return;
		if (xml_is(c, "MiningField"))
			parse_mining_field(l, c);
		else if (!xml_is(c, "Extension"))
			load_unsupported(l, c, "MiningField, Extension in a MiningSchema");
	}
}

/* Output. */

static void
parse_output(load_t *l, const xmlNode *n)
{
	static const char *const features[] = {"probability", "predictedValue", NULL};
	pmml_model_t *m = l->m;

	FOR_EACH_CHILD(c, n)
	{
		output_t *o;
		const char *name;

		if (l->rc != 0)
			return;
		if (xml_is(c, "Extension"))
			continue;
		if (!xml_is(c, "OutputField")) {
			load_unsupported(l, c, "OutputField, Extension in an Output");
			return;
		}
		if ((name = xml_attr_required(l, c, "name")) == NULL)
			return;
		if (xml_elem(c->children) != NULL) {
			load_unsupported(l, xml_elem(c->children),
					 "OutputField without child elements");
			return;
		}
		for (size_t i = 0; i < m->noutputs; i++)
			if (strcmp(m->outputs[i].name, name) == 0) {
				load_fail(l, c, "OutputField: \"%s\" is defined twice", name);
				return;
			}
		m->outputs =
		    arena_array_grow(m->a, m->outputs, m->noutputs, &m->ocap, sizeof(*m->outputs));
		o = &m->outputs[m->noutputs++];
		o->name = name;
		o->line = xmlGetLineNo(c);
		o->feature = xml_attr_enum(l, c, "feature", features, OUT_PREDICTED,
					   "OutputField feature probability, predictedValue");
		o->value = xml_attr(l, c, "value");
		o->category = SIZE_MAX;
	}
}

/* RegressionTable. */

static term_t *
table_term_add(load_t *l, table_t *t, const xmlNode *n, term_kind_t kind)
{
	term_t *term;

	if (t->nterms >= PMML_MAX_TERMS) {
		load_fail(l, n, "RegressionTable: more than %d terms", PMML_MAX_TERMS);
		return NULL;
	}
	t->terms = arena_array_grow(l->m->a, t->terms, t->nterms, &t->cap, sizeof(*t->terms));
	term = &t->terms[t->nterms++];
	memset(term, 0, sizeof(*term));
	term->kind = kind;
	term->elem = (const char *)(kind == TERM_NUMERIC       ? "NumericPredictor"
				    : kind == TERM_CATEGORICAL ? "CategoricalPredictor"
							       : "PredictorTerm");
	term->line = xmlGetLineNo(n);
	term->coef = xml_attr_number(l, n, "coefficient", true, 0);
	term->exponent = 1;
	return term;
}

static void
parse_regression_table(load_t *l, const xmlNode *n)
{
	pmml_model_t *m = l->m;
	table_t *t;

	m->tables = arena_array_grow(m->a, m->tables, m->ntables, &m->tcap, sizeof(*m->tables));
	t = &m->tables[m->ntables++];
	memset(t, 0, sizeof(*t));
	t->line = xmlGetLineNo(n);
	t->intercept = xml_attr_number(l, n, "intercept", true, 0);
	t->category = xml_attr(l, n, "targetCategory");
	FOR_EACH_CHILD(c, n)
	{
		term_t *term;

		if (l->rc != 0)
			return;
		if (xml_is(c, "Extension"))
			continue;
		if (xml_is(c, "NumericPredictor")) {
			if ((term = table_term_add(l, t, c, TERM_NUMERIC)) == NULL)
				return;
			term->exponent = xml_attr_number(l, c, "exponent", false, 1);
		} else if (xml_is(c, "CategoricalPredictor")) {
			const char *v;

			if ((term = table_term_add(l, t, c, TERM_CATEGORICAL)) == NULL)
				return;
			if ((v = xml_attr_required(l, c, "value")) == NULL)
				return;
			term->cat = value_untyped(v);
			term->cat.str = slice_cstr(v); /* kept for string comparison */
		} else if (xml_is(c, "PredictorTerm")) {
			size_t cap = 0;

			if ((term = table_term_add(l, t, c, TERM_PRODUCT)) == NULL)
				return;
			FOR_EACH_CHILD(r, c)
			{
				const char *f;

				if (xml_is(r, "Extension"))
					continue;
				if (!xml_is(r, "FieldRef")) {
					load_unsupported(l, r, "FieldRef in a PredictorTerm");
					return;
				}
				if ((f = xml_attr_required(l, r, "field")) == NULL)
					return;
				term->names = arena_array_grow(m->a, term->names, term->nfields,
							       &cap, sizeof(*term->names));
				term->names[term->nfields++] = f;
			}
			if (term->nfields == 0) {
				load_fail(l, c, "PredictorTerm: no FieldRef");
				return;
			}
			continue;
		} else {
			load_unsupported(l, c,
					 "NumericPredictor, CategoricalPredictor, "
					 "PredictorTerm in a RegressionTable");
			return;
		}
		term->names = arena_alloc(m->a, sizeof(*term->names));
		term->names[0] = xml_attr_required(l, c, "name");
		term->nfields = 1;
	}
}

static void
parse_regression_model(load_t *l, const xmlNode *n)
{
	static const char *const functions[] = {"regression", "classification", NULL};
	static const char *const norms[] = {"none", "logit", "softmax", "cloglog", "exp", NULL};
	pmml_model_t *m = l->m;
	const char *scorable = xml_attr(l, n, "isScorable");
	bool schema = false;

	m->name = xml_attr(l, n, "modelName");
	if (xml_attr_required(l, n, "functionName") == NULL)
		return;
	m->function = xml_attr_enum(l, n, "functionName", functions, 0,
				    "functionName regression, classification");
	m->norm = xml_attr_enum(l, n, "normalizationMethod", norms, NORM_NONE, SUPPORTS_NORM);
	if (scorable != NULL && strcmp(scorable, "false") == 0)
		load_fail(l, n, "RegressionModel: isScorable is false");
	FOR_EACH_CHILD(c, n)
	{
		if (l->rc != 0)
			return;
		if (xml_is(c, "MiningSchema")) {
			if (schema) {
				load_fail(l, c, "MiningSchema: a second one");
				return;
			}
			schema = true;
			parse_mining_schema(l, c);
		} else if (xml_is(c, "Output")) {
			parse_output(l, c);
		} else if (xml_is(c, "LocalTransformations")) {
			parse_derived_fields(l, c);
		} else if (xml_is(c, "RegressionTable")) {
			parse_regression_table(l, c);
		} else if (xml_is(c, "ModelVerification")) {
			m->verification = c;
		} else if (!xml_is(c, "ModelStats") && !xml_is(c, "ModelExplanation") &&
			   !xml_is(c, "Extension")) {
			load_unsupported(l, c, SUPPORTS_MODEL);
		}
	}
	if (l->rc == 0 && !schema)
		load_fail(l, n, "RegressionModel: no MiningSchema");
}

/* Checks and resolution. */

/* dst := dst ∪ src (both sorted). Sets are never written in place, so a union that adds
 * nothing keeps dst and one into an empty set shares src: many references to one field cost
 * no memory. */
static void
idxset_union(arena_t *a, idxset_t *dst, const idxset_t *src)
{
	size_t *v, i = 0, j = 0, n = 0;

	while (i < dst->n || j < src->n) {
		if (j == src->n || (i < dst->n && dst->v[i] < src->v[j]))
			i++;
		else if (i == dst->n || src->v[j] < dst->v[i])
			j++;
		else
			i++, j++;
		n++;
	}
	if (n == dst->n)
		return;
	if (n == src->n) {
		*dst = *src;
		return;
	}
	v = arena_alloc(a, n * sizeof(*v));
	i = j = n = 0;
	while (i < dst->n || j < src->n) {
		if (j == src->n || (i < dst->n && dst->v[i] < src->v[j]))
			v[n++] = dst->v[i++];
		else if (i == dst->n || src->v[j] < dst->v[i])
			v[n++] = src->v[j++];
		else
			v[n++] = dst->v[i++], j++;
	}
	dst->v = v;
	dst->n = n;
}

static int resolve_field(load_t *l, size_t i, size_t depth);

/* Resolves the FieldRefs of e; adds what e depends on to deps, and what its value carries to
 * carry (NULL inside an if's condition). */
static int
resolve_expr(load_t *l, expr_t *e, idxset_t *deps, idxset_t *carry, size_t depth)
{
	pmml_model_t *m = l->m;

	if (e->kind == EX_FIELD) {
		size_t i = field_find(m, e->ref);
		const field_t *f;

		if (i == SIZE_MAX) {
			l->rc = -FG_EINVAL;
			snprintf(l->err, l->errlen, "%s:%ld: FieldRef: unknown field \"%s\"",
				 l->file, e->line, e->ref);
			return l->rc;
		}
		f = &m->fields[i];
		if (!f->derived && f->usage != USAGE_ACTIVE) {
			l->rc = -FG_EINVAL;
			snprintf(l->err, l->errlen,
				 "%s:%ld: FieldRef: field \"%s\" is not an active MiningField",
				 l->file, e->line, e->ref);
			return l->rc;
		}
		if (resolve_field(l, i, depth + 1) != 0)
			return l->rc;
		e->field = i;
		idxset_union(m->a, deps, &f->deps);
		if (carry != NULL)
			idxset_union(m->a, carry, &f->carry);
		return 0;
	}
	for (size_t k = 0; k < e->nargs; k++)
		if (resolve_expr(l, e->args[k], deps, e->fn == FN_IF && k == 0 ? NULL : carry,
				 depth) != 0)
			return l->rc;
	return 0;
}

/* Gives field i its dependency sets, its derived dependencies first (a depth-first
 * topological sort; cycles are refused). */
static int
resolve_field(load_t *l, size_t i, size_t depth)
{
	pmml_model_t *m = l->m;
	field_t *f = &m->fields[i];

	if (f->mark == 2)
		return 0;
	if (f->mark == 1) {
		l->rc = -FG_EINVAL;
		snprintf(l->err, l->errlen, "%s:%ld: DerivedField %s: depends on itself", l->file,
			 f->line, f->name);
		return l->rc;
	}
	if (depth > 200) {
		l->rc = -FG_EINVAL;
		snprintf(l->err, l->errlen, "%s:%ld: DerivedField %s: chain of fields too deep",
			 l->file, f->line, f->name);
		return l->rc;
	}
	f->mark = 1;
	if (!f->derived) {
		if (f->usage == USAGE_ACTIVE) {
			f->deps.v = arena_alloc(m->a, sizeof(size_t));
			f->deps.v[0] = f->input;
			f->deps.n = 1;
			f->carry = f->deps;
		}
	} else {
		if (resolve_expr(l, f->expr, &f->deps, &f->carry, depth) != 0)
			return l->rc;
		m->order[m->norder++] = i;
	}
	f->mark = 2;
	return 0;
}

static int
resolve_model(load_t *l, const xmlNode *model)
{
	pmml_model_t *m = l->m;

	m->order = arena_alloc(m->a, (m->nfields + 1) * sizeof(*m->order));
	for (size_t i = 0; i < m->nfields; i++)
		if (resolve_field(l, i, 0) != 0)
			return l->rc;
	if (m->ntables == 0)
		return load_fail(l, model, "RegressionModel: no RegressionTable");
	if (m->function == PMML_FUNCTION_REGRESSION) {
		if (m->ntables != 1)
			return load_fail(l, model,
					 "RegressionModel: a regression has exactly one "
					 "RegressionTable, not %zu",
					 m->ntables);
		if (m->target != SIZE_MAX && !datatype_is_numeric(m->fields[m->target].datatype))
			return load_fail(l, model,
					 "RegressionModel: the target of a regression "
					 "must be numeric");
	} else {
		if (m->ntables < 2)
			return load_fail(l, model,
					 "RegressionModel: a classification needs a "
					 "RegressionTable per category");
		if (m->norm == NORM_EXP)
			return load_fail(l, model,
					 "RegressionModel normalizationMethod=\"exp\": "
					 "only for a regression");
		if ((m->norm == NORM_LOGIT || m->norm == NORM_CLOGLOG) && m->ntables != 2) {
			load_fail(l, model,
				  "RegressionModel normalizationMethod with %zu categories: not "
				  "supported (fhirgate supports logit and cloglog with 2 "
				  "categories, softmax and none with any number)",
				  m->ntables);
			return l->rc = -FG_EUNSUPPORTED;
		}
		m->categories = arena_alloc(m->a, m->ntables * sizeof(*m->categories));
		for (size_t i = 0; i < m->ntables; i++) {
			const table_t *t = &m->tables[i];

			if (t->category == NULL) {
				l->rc = -FG_EINVAL;
				snprintf(l->err, l->errlen,
					 "%s:%ld: RegressionTable: missing required attribute "
					 "targetCategory",
					 l->file, t->line);
				return l->rc;
			}
			for (size_t j = 0; j < i; j++)
				if (strcmp(m->categories[j], t->category) == 0) {
					l->rc = -FG_EINVAL;
					snprintf(l->err, l->errlen,
						 "%s:%ld: RegressionTable: targetCategory \"%s\" "
						 "twice",
						 l->file, t->line, t->category);
					return l->rc;
				}
			m->categories[i] = t->category;
		}
	}
	for (size_t ti = 0; ti < m->ntables; ti++) {
		table_t *t = &m->tables[ti];

		for (size_t k = 0; k < t->nterms; k++) {
			term_t *term = &t->terms[k];

			term->fields = arena_alloc(m->a, term->nfields * sizeof(*term->fields));
			for (size_t j = 0; j < term->nfields; j++) {
				size_t fi = term->names[j] != NULL ? field_find(m, term->names[j])
								   : SIZE_MAX;
				const field_t *f = fi != SIZE_MAX ? &m->fields[fi] : NULL;

				l->rc = -FG_EINVAL;
				if (term->names[j] == NULL) {
					snprintf(l->err, l->errlen,
						 "%s:%ld: %s: missing required attribute name",
						 l->file, term->line, term->elem);
					return l->rc;
				}
				if (f == NULL) {
					snprintf(l->err, l->errlen,
						 "%s:%ld: %s: unknown field \"%s\"", l->file,
						 term->line, term->elem, term->names[j]);
					return l->rc;
				}
				if (!f->derived && f->usage != USAGE_ACTIVE) {
					snprintf(l->err, l->errlen,
						 "%s:%ld: %s: field \"%s\" is not an active "
						 "MiningField",
						 l->file, term->line, term->elem, term->names[j]);
					return l->rc;
				}
				if (term->kind != TERM_CATEGORICAL && !f->derived &&
				    !datatype_is_numeric(f->datatype)) {
					snprintf(l->err, l->errlen,
						 "%s:%ld: %s: field \"%s\" is a string, not "
						 "a number (use a CategoricalPredictor)",
						 l->file, term->line, term->elem, term->names[j]);
					return l->rc;
				}
				l->rc = 0;
				term->fields[j] = fi;
				idxset_union(m->a, &term->carry, &f->carry);
			}
		}
	}
	for (size_t i = 0; i < m->noutputs; i++) {
		output_t *o = &m->outputs[i];

		l->rc = -FG_EINVAL;
		if (o->feature == OUT_PROBABILITY && m->function != PMML_FUNCTION_CLASSIFICATION) {
			snprintf(l->err, l->errlen,
				 "%s:%ld: OutputField %s: feature probability needs a "
				 "classification",
				 l->file, o->line, o->name);
			return l->rc;
		}
		if (o->feature == OUT_PROBABILITY && o->value != NULL) {
			for (size_t j = 0; j < m->ntables; j++)
				if (strcmp(m->categories[j], o->value) == 0)
					o->category = j;
			if (o->category == SIZE_MAX) {
				snprintf(l->err, l->errlen,
					 "%s:%ld: OutputField %s: value \"%s\" is not a target "
					 "category",
					 l->file, o->line, o->name, o->value);
				return l->rc;
			}
		}
		l->rc = 0;
	}
	return 0;
}

/* Evaluation. */

typedef struct {
	const pmml_model_t *m;
	arena_t *a;
	pmml_value_t *vals;
	pmml_result_t *res;
} eval_t;

static int __attribute__((format(printf, 4, 5)))
eval_fail(eval_t *ev, pmml_status_t st, const char *field, const char *fmt, ...)
{
	va_list ap;

	if (ev->res->status != PMML_STATUS_OK)
		return -FG_EINVAL;
	ev->res->status = st;
	ev->res->field = field;
	va_start(ap, fmt);
	vsnprintf(ev->res->message, sizeof(ev->res->message), fmt, ap);
	va_end(ap);
	return -FG_EINVAL;
}

/* A value for a message: numbers as %g, strings cut and with control characters as '?'. */
static const char *
value_show(arena_t *a, pmml_value_t v)
{
	char *s;
	size_t n;

	if (v.kind == PMML_VALUE_MISSING)
		return "(missing)";
	if (v.kind == PMML_VALUE_NUMBER)
		return arena_printf(a, "%.10g", v.number);
	n = v.str.len > 40 ? 40 : v.str.len;
	s = arena_printf(a, "\"%.*s%s\"", (int)n, v.str.ptr != NULL ? v.str.ptr : "",
			 v.str.len > n ? "..." : "");
	for (char *p = s; *p != '\0'; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
	return s;
}

static const char *
number_text(arena_t *a, double d)
{
	return arena_printf(a, "%.15g", d);
}

static bool
value_equal(arena_t *a, pmml_value_t x, pmml_value_t y)
{
	double d;

	if (x.kind == PMML_VALUE_NUMBER && y.kind == PMML_VALUE_NUMBER)
		return x.number == y.number;
	if (x.kind == PMML_VALUE_STRING && y.kind == PMML_VALUE_STRING)
		return slice_eq(x.str, y.str);
	if (x.kind == PMML_VALUE_STRING)
		return pmml_parse_number(x.str.ptr, x.str.len, &d) && d == y.number;
	return pmml_parse_number(y.str.ptr, y.str.len, &d) && d == x.number;
}

static bool
interval_contains(const interval_t *iv, double x)
{
	return (iv->lo_closed ? x >= iv->lo : x > iv->lo) &&
	       (iv->hi_closed ? x <= iv->hi : x < iv->hi);
}

static const char *
interval_show(arena_t *a, const interval_t *iv)
{
	return arena_printf(a, "%c%.10g, %.10g%c", iv->lo_closed ? '[' : '(', iv->lo, iv->hi,
			    iv->hi_closed ? ']' : ')');
}

/* Converts a caller's value to the field's dataType; false when it cannot. */
static bool
input_coerce(eval_t *ev, const field_t *f, pmml_value_t *v)
{
	double d;

	if (v->kind == PMML_VALUE_STRING && v->str.len == 0)
		v->kind = PMML_VALUE_MISSING;
	if (v->kind == PMML_VALUE_MISSING)
		return true;
	if (!datatype_is_numeric(f->datatype)) {
		if (v->kind == PMML_VALUE_NUMBER)
			*v = (pmml_value_t){PMML_VALUE_STRING, 0,
					    slice_cstr(number_text(ev->a, v->number))};
		return true;
	}
	if (v->kind == PMML_VALUE_STRING) {
		if (!(f->datatype == PMML_DATATYPE_BOOLEAN && pmml_parse_bool(v->str, &d)) &&
		    !pmml_parse_number(v->str.ptr, v->str.len, &d))
			return false;
		*v = pmml_value_number(d);
	}
	if (!isfinite(v->number))
		return false;
	if (f->datatype == PMML_DATATYPE_INTEGER && v->number != floor(v->number))
		return false;
	if (f->datatype == PMML_DATATYPE_BOOLEAN && v->number != 0 && v->number != 1)
		return false;
	return true;
}

/* Whether v is a valid value of f; sets *missing when a Value declares it missing. */
static bool
input_is_valid(eval_t *ev, const field_t *f, pmml_value_t v, bool *missing, const char **why)
{
	bool has_valid = false;

	for (size_t i = 0; i < f->nvals; i++) {
		const field_value_t *fv = &f->vals[i];
		bool eq = v.kind == PMML_VALUE_NUMBER ? fv->is_num && fv->num == v.number
						      : slice_eq_cstr(v.str, fv->text);

		if (fv->prop == VALUE_VALID)
			has_valid = true;
		if (!eq)
			continue;
		if (fv->prop == VALUE_MISSING)
			*missing = true;
		return fv->prop != VALUE_INVALID;
	}
	if (f->optype == PMML_OPTYPE_CONTINUOUS && f->niv > 0) {
		for (size_t i = 0; i < f->niv; i++)
			if (interval_contains(&f->iv[i], v.number))
				return true;
		*why = arena_printf(ev->a, "valid range %s%s", interval_show(ev->a, &f->iv[0]),
				    f->niv > 1 ? " ..." : "");
		return false;
	}
	if (f->optype != PMML_OPTYPE_CONTINUOUS && has_valid) {
		*why = "not one of the field's values";
		return false;
	}
	return true;
}

/* Prepares the value of active field f from the caller's inputs (MiningSchema treatments). */
static int
input_prepare(eval_t *ev, const field_t *f, const pmml_input_t *in, size_t n)
{
	pmml_value_t v = pmml_value_missing();
	const char *why = "not a valid value";
	bool missing = false;

	for (size_t i = 0; i < n; i++)
		if (in[i].name != NULL && strcmp(in[i].name, f->name) == 0) {
			v = in[i].value;
			break;
		}
	if (v.kind == PMML_VALUE_STRING && v.str.ptr == NULL)
		v.kind = PMML_VALUE_MISSING;
	if (!input_coerce(ev, f, &v)) {
		why = f->datatype == PMML_DATATYPE_INTEGER   ? "not an integer"
		      : f->datatype == PMML_DATATYPE_BOOLEAN ? "not a boolean"
							     : "not a number";
		goto invalid;
	}
	if (v.kind != PMML_VALUE_MISSING && !input_is_valid(ev, f, v, &missing, &why))
		goto invalid;
	if (missing)
		v = pmml_value_missing();
	if (v.kind == PMML_VALUE_NUMBER && f->outliers != OUTLIERS_AS_IS &&
	    (v.number < f->low || v.number > f->high)) {
		if (f->outliers == OUTLIERS_AS_MISSING)
			v = pmml_value_missing();
		else
			v.number = v.number < f->low ? f->low : f->high;
	}
	goto checked;
invalid:
	switch (f->invalid) {
	case INVALID_RETURN:
		return eval_fail(ev, PMML_STATUS_INVALID, f->name, "invalid input %s=%s (%s)",
				 f->name, value_show(ev->a, v), why);
	case INVALID_AS_IS:
		if (v.kind == PMML_VALUE_STRING && datatype_is_numeric(f->datatype))
			v = pmml_value_missing();
		break;
	case INVALID_AS_MISSING:
		v = pmml_value_missing();
		break;
	case INVALID_AS_VALUE:
		v = f->invalid_repl;
		break;
	}
checked:
	if (v.kind == PMML_VALUE_MISSING && f->has_repl)
		v = f->repl;
	if (v.kind == PMML_VALUE_MISSING && f->missing_returns_invalid)
		return eval_fail(ev, PMML_STATUS_MISSING, f->name, "missing input %s", f->name);
	ev->vals[f - ev->m->fields] = v;
	return 0;
}

/* The name to blame for a missing value of field fi: its first missing input, else itself. */
static const char *
missing_blame(const eval_t *ev, size_t fi)
{
	const pmml_model_t *m = ev->m;
	const field_t *f = &m->fields[fi];

	for (size_t i = 0; i < f->deps.n; i++) {
		size_t in = m->inputs[f->deps.v[i]];

		if (ev->vals[in].kind == PMML_VALUE_MISSING)
			return m->fields[in].name;
	}
	return f->name;
}

static bool
value_truth(pmml_value_t v, bool *ok)
{
	if (v.kind == PMML_VALUE_NUMBER)
		return v.number != 0;
	if (slice_eq_cstr(v.str, "true"))
		return true;
	if (!slice_eq_cstr(v.str, "false"))
		*ok = false;
	return false;
}

/* Applies a function to evaluated arguments (none missing); *ok false on a type or domain
 * error. */
static pmml_value_t
apply_fn(eval_t *ev, fn_t fn, const pmml_value_t *x, size_t n, bool *ok)
{
	double r = 0;
	bool t;

	switch (fn) {
	case FN_EQ:
		return pmml_value_number(value_equal(ev->a, x[0], x[1]));
	case FN_NE:
		return pmml_value_number(!value_equal(ev->a, x[0], x[1]));
	case FN_AND:
	case FN_OR:
		t = fn == FN_AND;
		for (size_t i = 0; i < n; i++)
			t = fn == FN_AND ? t && value_truth(x[i], ok) : t || value_truth(x[i], ok);
		return pmml_value_number(t);
	case FN_NOT:
		return pmml_value_number(!value_truth(x[0], ok));
	default:
		break;
	}
	for (size_t i = 0; i < n; i++)
		if (x[i].kind != PMML_VALUE_NUMBER) {
			*ok = false;
			return pmml_value_missing();
		}
	switch (fn) {
	case FN_ADD:
		r = x[0].number + x[1].number;
		break;
	case FN_SUB:
		r = x[0].number - x[1].number;
		break;
	case FN_MUL:
		r = x[0].number * x[1].number;
		break;
	case FN_DIV:
		*ok = x[1].number != 0;
		r = *ok ? x[0].number / x[1].number : 0;
		break;
	case FN_MIN:
	case FN_MAX:
		r = x[0].number;
		for (size_t i = 1; i < n; i++)
			r = fn == FN_MIN ? fmin(r, x[i].number) : fmax(r, x[i].number);
		break;
	case FN_ABS:
		r = fabs(x[0].number);
		break;
	case FN_LN:
	case FN_LOG10:
		*ok = x[0].number > 0;
		r = *ok ? (fn == FN_LN ? log(x[0].number) : log10(x[0].number)) : 0;
		break;
	case FN_EXP:
		r = exp(x[0].number);
		break;
	case FN_POW:
		r = pow(x[0].number, x[1].number);
		break;
	case FN_GT:
		r = x[0].number > x[1].number;
		break;
	case FN_LT:
		r = x[0].number < x[1].number;
		break;
	case FN_GE:
		r = x[0].number >= x[1].number;
		break;
	case FN_LE:
		r = x[0].number <= x[1].number;
		break;
	default:
		break;
	}
	if (!isfinite(r))
		*ok = false;
	return pmml_value_number(r);
}

/* Evaluates e for derived field fi; a domain error falls back to the Apply's defaultValue. */
static int
expr_eval(eval_t *ev, const expr_t *e, size_t fi, pmml_value_t *out)
{
	pmml_value_t r = pmml_value_missing(), x[3], *args;
	bool ok = true;

	switch (e->kind) {
	case EX_CONST:
		r = e->value;
		break;
	case EX_FIELD:
		r = ev->vals[e->field];
		break;
	case EX_APPLY:
		if (e->fn == FN_ISMISSING || e->fn == FN_ISNOTMISSING) {
			if (expr_eval(ev, e->args[0], fi, &r) != 0)
				return -FG_EINVAL;
			r = pmml_value_number((r.kind == PMML_VALUE_MISSING) ==
					      (e->fn == FN_ISMISSING));
			break;
		}
		if (e->fn == FN_IF) {
			if (expr_eval(ev, e->args[0], fi, &r) != 0)
				return -FG_EINVAL;
			if (r.kind != PMML_VALUE_MISSING) {
				bool c = value_truth(r, &ok);

				r = pmml_value_missing();
				if (ok && (c || e->nargs == 3) &&
				    expr_eval(ev, e->args[c ? 1 : 2], fi, &r) != 0)
					return -FG_EINVAL;
			}
			break;
		}
		args = e->nargs <= 3 ? x : arena_alloc(ev->a, e->nargs * sizeof(*args));
		for (size_t i = 0; i < e->nargs; i++) {
			if (expr_eval(ev, e->args[i], fi, &args[i]) != 0)
				return -FG_EINVAL;
			if (args[i].kind == PMML_VALUE_MISSING)
				goto done;
		}
		r = apply_fn(ev, e->fn, args, e->nargs, &ok);
		break;
	}
done:
	if (!ok) {
		if (!e->has_default)
			return eval_fail(ev, PMML_STATUS_ERROR, ev->m->fields[fi].name,
					 "DerivedField %s: the arithmetic failed (line %ld)",
					 ev->m->fields[fi].name, e->line);
		r = e->default_value;
	}
	if (r.kind == PMML_VALUE_MISSING && e->has_map_missing)
		r = e->map_missing;
	*out = r;
	return 0;
}

/* The value of a term, or -FG_EINVAL with the status set. */
static int
term_eval(eval_t *ev, const term_t *t, double *out)
{
	const pmml_model_t *m = ev->m;
	double r = 1;

	for (size_t j = 0; j < t->nfields; j++) {
		pmml_value_t v = ev->vals[t->fields[j]];
		const char *name = m->fields[t->fields[j]].name;

		if (v.kind == PMML_VALUE_MISSING) {
			const char *who = missing_blame(ev, t->fields[j]);

			return eval_fail(ev, PMML_STATUS_MISSING, who, "missing input %s", who);
		}
		if (t->kind == TERM_CATEGORICAL) {
			*out = v.kind == PMML_VALUE_STRING ? slice_eq(v.str, t->cat.str)
							   : value_equal(ev->a, v, t->cat);
			return 0;
		}
		if (v.kind != PMML_VALUE_NUMBER)
			return eval_fail(ev, PMML_STATUS_ERROR, name,
					 "field %s is not a number (line %ld)", name, t->line);
		r *= t->exponent == 1 ? v.number : pow(v.number, t->exponent);
	}
	if (!isfinite(r))
		return eval_fail(ev, PMML_STATUS_ERROR, m->fields[t->fields[0]].name,
				 "the predictor on line %ld is not a finite number", t->line);
	*out = r;
	return 0;
}

static double
logistic(double y)
{
	return 1 / (1 + exp(-y));
}

static double
cloglog(double y)
{
	return -expm1(-exp(y));
}

static int
eval_normalize(eval_t *ev, const double *y)
{
	const pmml_model_t *m = ev->m;
	pmml_result_t *res = ev->res;
	size_t n = m->ntables, best = 0;
	double *p = res->probabilities, sum = 0, top;

	if (m->function == PMML_FUNCTION_REGRESSION) {
		switch (m->norm) {
		case NORM_NONE:
			res->score = y[0];
			break;
		case NORM_LOGIT:
		case NORM_SOFTMAX:
			res->score = logistic(y[0]);
			break;
		case NORM_CLOGLOG:
			res->score = cloglog(y[0]);
			break;
		case NORM_EXP:
			res->score = exp(y[0]);
			break;
		}
	} else {
		switch (m->norm) {
		case NORM_SOFTMAX:
			top = y[0];
			for (size_t i = 1; i < n; i++)
				top = fmax(top, y[i]);
			for (size_t i = 0; i < n; i++)
				sum += p[i] = exp(y[i] - top);
			for (size_t i = 0; i < n; i++)
				p[i] /= sum;
			break;
		case NORM_LOGIT:
		case NORM_CLOGLOG:
			p[0] = m->norm == NORM_LOGIT ? logistic(y[0]) : cloglog(y[0]);
			p[1] = 1 - p[0];
			break;
		default:
			for (size_t i = 0; i + 1 < n; i++)
				sum += p[i] = y[i];
			p[n - 1] = 1 - sum;
			break;
		}
		for (size_t i = 1; i < n; i++)
			if (p[i] > p[best])
				best = i;
		res->score = p[0];
		res->predicted_category = m->categories[best];
		for (size_t i = 0; i < n; i++)
			if (!isfinite(p[i]))
				res->score = NAN;
	}
	if (!isfinite(res->score))
		return eval_fail(ev, PMML_STATUS_ERROR, NULL, "the score is not a finite number");
	return 0;
}

static void
eval_outputs(eval_t *ev)
{
	const pmml_model_t *m = ev->m;
	pmml_result_t *res = ev->res;

	for (size_t i = 0; i < m->noutputs; i++) {
		const output_t *o = &m->outputs[i];

		if (o->feature == OUT_PROBABILITY) {
			double p = res->score;

			if (o->category != SIZE_MAX) {
				p = res->probabilities[o->category];
			} else {
				for (size_t j = 0; j < m->ntables; j++)
					if (res->predicted_category == m->categories[j])
						p = res->probabilities[j];
			}
			res->outputs[i] = pmml_value_number(p);
		} else if (m->function == PMML_FUNCTION_CLASSIFICATION) {
			res->outputs[i] = pmml_value_string(res->predicted_category);
		} else {
			res->outputs[i] = pmml_value_number(res->score);
		}
	}
}

int
pmml_eval(const pmml_model_t *m, const pmml_input_t *inputs, size_t n_inputs, pmml_result_t *res)
{
	eval_t ev = {m, arena_new(0), NULL, res};
	double *y;
	int rc = -FG_EINVAL;

	memset(res, 0, sizeof(*res));
	res->n_inputs = m->ninputs;
	res->contributions = xcalloc(m->ninputs + 1, sizeof(*res->contributions));
	res->n_outputs = m->noutputs;
	res->outputs = xcalloc(m->noutputs + 1, sizeof(*res->outputs));
	if (m->function == PMML_FUNCTION_CLASSIFICATION) {
		res->n_categories = m->ntables;
		res->probabilities = xcalloc(m->ntables, sizeof(*res->probabilities));
	}
	ev.vals = arena_zalloc(ev.a, (m->nfields + 1) * sizeof(*ev.vals));
	y = arena_zalloc(ev.a, m->ntables * sizeof(*y));
	for (size_t i = 0; i < m->ninputs; i++)
		if (input_prepare(&ev, &m->fields[m->inputs[i]], inputs, n_inputs) != 0)
			goto out;
	for (size_t i = 0; i < m->norder; i++)
		if (expr_eval(&ev, m->fields[m->order[i]].expr, m->order[i],
			      &ev.vals[m->order[i]]) != 0)
			goto out;
	for (size_t ti = 0; ti < m->ntables; ti++) {
		const table_t *t = &m->tables[ti];

		y[ti] = t->intercept;
		if (ti == 0)
			res->baseline = t->intercept;
		for (size_t k = 0; k < t->nterms; k++) {
			const term_t *term = &t->terms[k];
			double v = 0, c;

			if (term_eval(&ev, term, &v) != 0)
				goto out;
			c = term->coef * v;
			y[ti] += c;
			if (ti != 0)
				continue;
			if (term->carry.n == 0)
				res->baseline += c;
			for (size_t j = 0; j < term->carry.n; j++)
				res->contributions[term->carry.v[j]] += c / (double)term->carry.n;
		}
	}
	res->linear = y[0];
	if (eval_normalize(&ev, y) != 0)
		goto out;
	eval_outputs(&ev);
	rc = 0;
out:
	arena_free(ev.a);
	return rc;
}

void
pmml_result_clear(pmml_result_t *res)
{
	if (res == NULL)
		return;
	free(res->probabilities);
	free(res->contributions);
	free(res->outputs);
	memset(res, 0, sizeof(*res));
}

/* ModelVerification: every row of the InlineTable must reproduce its expected outputs. */

typedef struct {
	const char *field, *column;
	double precision, zero;
	size_t input;  /* index among the inputs, or SIZE_MAX */
	size_t output; /* index among the outputs, or SIZE_MAX (then the target) */
} vfield_t;

static bool
cell_is(const xmlNode *c, const char *column)
{
	size_t plen;

	if (strcmp((const char *)c->name, column) == 0)
		return true;
	if (c->ns == NULL || c->ns->prefix == NULL)
		return false;
	plen = strlen((const char *)c->ns->prefix);
	return strncmp(column, (const char *)c->ns->prefix, plen) == 0 && column[plen] == ':' &&
	       strcmp(column + plen + 1, (const char *)c->name) == 0;
}

static int
verify_row(load_t *l, const xmlNode *row, size_t rown, const vfield_t *vf, size_t nvf)
{
	const pmml_model_t *m = l->m;
	pmml_input_t *in = arena_zalloc(m->a, (nvf + 1) * sizeof(*in));
	const char **cell = arena_zalloc(m->a, (nvf + 1) * sizeof(*cell));
	pmml_result_t res;
	size_t nin = 0;

	FOR_EACH_CHILD(c, row)
	for (size_t i = 0; i < nvf; i++)
		if (cell_is(c, vf[i].column))
			cell[i] = xml_text(l, c);
	for (size_t i = 0; i < nvf; i++)
		if (vf[i].input != SIZE_MAX && cell[i] != NULL)
			in[nin++] = (pmml_input_t){vf[i].field, pmml_value_string(cell[i])};
	if (pmml_eval(m, in, nin, &res) != 0) {
		load_fail(l, row, "ModelVerification row %zu: no score: %s", rown, res.message);
		pmml_result_clear(&res);
		return l->rc;
	}
	for (size_t i = 0; i < nvf && l->rc == 0; i++) {
		pmml_value_t got;
		double want, diff;
		bool ok;

		if (vf[i].input != SIZE_MAX || cell[i] == NULL)
			continue;
		if (vf[i].output != SIZE_MAX)
			got = res.outputs[vf[i].output];
		else if (m->function == PMML_FUNCTION_CLASSIFICATION)
			got = pmml_value_string(res.predicted_category);
		else
			got = pmml_value_number(res.score);
		if (got.kind == PMML_VALUE_NUMBER &&
		    pmml_parse_number(cell[i], strlen(cell[i]), &want)) {
			diff = fabs(got.number - want);
			ok = (fabs(want) < vf[i].zero && fabs(got.number) < vf[i].zero) ||
			     diff <= vf[i].precision * fabs(want);
		} else {
			ok = got.kind == PMML_VALUE_STRING && slice_eq_cstr(got.str, cell[i]);
		}
		if (!ok)
			load_fail(l, row,
				  "ModelVerification row %zu: %s is %s, expected %s (precision %g)",
				  rown, vf[i].field, value_show(m->a, got), cell[i],
				  vf[i].precision);
	}
	pmml_result_clear(&res);
	return l->rc;
}

static int
verify_model(load_t *l, const xmlNode *mv)
{
	pmml_model_t *m = l->m;
	vfield_t *vf = NULL;
	size_t nvf = 0, cap = 0, rows = 0;
	const xmlNode *table = NULL;

	FOR_EACH_CHILD(c, mv)
	{
		if (xml_is(c, "VerificationFields")) {
			FOR_EACH_CHILD(f, c)
			{
				vfield_t v;
				size_t fi;

				if (xml_is(f, "Extension"))
					continue;
				if (!xml_is(f, "VerificationField"))
					return load_unsupported(l, f, "VerificationField");
				if ((v.field = xml_attr_required(l, f, "field")) == NULL)
					return l->rc;
				v.column = xml_attr(l, f, "column");
				v.column = v.column != NULL ? v.column : v.field;
				v.precision = xml_attr_number(l, f, "precision", false, 1e-6);
				v.zero = xml_attr_number(l, f, "zeroThreshold", false, 1e-16);
				v.input = v.output = SIZE_MAX;
				fi = field_find(m, v.field);
				if (fi != SIZE_MAX && m->fields[fi].usage == USAGE_ACTIVE &&
				    !m->fields[fi].derived)
					v.input = m->fields[fi].input;
				for (size_t i = 0; i < m->noutputs; i++)
					if (strcmp(m->outputs[i].name, v.field) == 0)
						v.output = i;
				if (v.input == SIZE_MAX && v.output == SIZE_MAX &&
				    (fi == SIZE_MAX || fi != m->target))
					return load_fail(l, f,
							 "VerificationField: unknown field \"%s\" "
							 "(not an input, the target or an "
							 "OutputField)",
							 v.field);
				vf = arena_array_grow(m->a, vf, nvf, &cap, sizeof(*vf));
				vf[nvf++] = v;
			}
		} else if (xml_is(c, "InlineTable")) {
			table = c;
		} else if (!xml_is(c, "Extension")) {
			return load_unsupported(l, c, "VerificationFields, InlineTable");
		}
		if (l->rc != 0)
			return l->rc;
	}
	if (table == NULL)
		return load_fail(l, mv, "ModelVerification: no InlineTable");
	FOR_EACH_CHILD(r, table)
	{
		if (xml_is(r, "Extension"))
			continue;
		if (!xml_is(r, "row"))
			return load_unsupported(l, r, "row in an InlineTable");
		if (++rows > PMML_MAX_ROWS)
			return load_fail(l, r, "ModelVerification: more than %d rows",
					 PMML_MAX_ROWS);
		if (verify_row(l, r, rows, vf, nvf) != 0)
			return l->rc;
	}
	return 0;
}

/* Loading. */

/* libxml2 reports encoding failures through its generic handler (to stderr) whatever the
 * parser options; the error we return says it already. */
static void
pmml_xml_quiet(void *ctx, const char *msg, ...)
{
}

/* Parses data (fhir_xml_doc_read: a DOCTYPE is refused before its internal subset is read). */
static xmlDocPtr
pmml_xml_read(load_t *l, const char *data, size_t len)
{
	xmlGenericErrorFunc old_handler = xmlGenericError;
	void *old_ctx = xmlGenericErrorContext;
	fhir_xml_read_error_t e;
	xmlDocPtr doc;

	xmlSetGenericErrorFunc(NULL, pmml_xml_quiet);
	doc = fhir_xml_doc_read(data, len, NULL, PMML_XML_OPTIONS, &e);
	xmlSetGenericErrorFunc(old_ctx, old_handler);
	if (doc != NULL)
		return doc;
	l->rc = -FG_EPARSE;
	if (e.doctype)
		snprintf(l->err, l->errlen,
			 "%s:%ld: DOCTYPE: not allowed (no DTDs or entities in model files)",
			 l->file, e.line);
	else
		snprintf(l->err, l->errlen, "%s:%ld: malformed XML: %s", l->file, e.line, e.msg);
	return NULL;
}

static void
model_build_info(pmml_model_t *m)
{
	m->info = arena_zalloc(m->a, (m->ninputs + 1) * sizeof(*m->info));
	for (size_t i = 0; i < m->ninputs; i++) {
		const field_t *f = &m->fields[m->inputs[i]];
		pmml_field_info_t *info = &m->info[i];
		const char **vals = arena_alloc(m->a, (f->nvals + 1) * sizeof(*vals));

		info->name = f->name;
		info->display_name = f->display;
		info->optype = f->optype;
		info->datatype = f->datatype;
		info->has_interval = f->niv > 0;
		info->low = f->niv > 0 ? f->iv[0].lo : -HUGE_VAL;
		info->high = f->niv > 0 ? f->iv[0].hi : HUGE_VAL;
		info->low_closed = f->niv > 0 && f->iv[0].lo_closed;
		info->high_closed = f->niv > 0 && f->iv[0].hi_closed;
		for (size_t j = 0; j < f->nvals; j++)
			if (f->vals[j].prop == VALUE_VALID)
				vals[info->n_values++] = f->vals[j].text;
		info->values = vals;
		info->missing_replacement = f->repl_text;
	}
}

static int
load_doc(load_t *l, const xmlNode *root)
{
	static const char *const models[] = {"AnomalyDetectionModel",
					     "AssociationModel",
					     "BayesianNetworkModel",
					     "BaselineModel",
					     "ClusteringModel",
					     "GaussianProcessModel",
					     "GeneralRegressionModel",
					     "MiningModel",
					     "NaiveBayesModel",
					     "NearestNeighborModel",
					     "NeuralNetwork",
					     "RuleSetModel",
					     "SequenceModel",
					     "Scorecard",
					     "SupportVectorMachineModel",
					     "TextModel",
					     "TimeSeriesModel",
					     "TreeModel",
					     NULL};
	const xmlNode *dd = NULL, *td = NULL, *model = NULL;
	const char *version;

	if (!xml_is(root, "PMML"))
		return load_fail(l, root, "%s: not a PMML document (the root must be PMML)",
				 (const char *)root->name);
	if (root->ns != NULL &&
	    strncmp((const char *)root->ns->href, "http://www.dmg.org/PMML-4_", 26) != 0)
		return load_fail(l, root,
				 "PMML: namespace %s: not supported (fhirgate supports "
				 "http://www.dmg.org/PMML-4_4)",
				 (const char *)root->ns->href);
	if ((version = xml_attr_required(l, root, "version")) == NULL)
		return l->rc;
	if (strncmp(version, "4.", 2) != 0) {
		load_fail(l, root, "PMML version=\"%s\": not supported (fhirgate supports 4.x)",
			  version);
		return l->rc = -FG_EUNSUPPORTED;
	}
	FOR_EACH_CHILD(c, root)
	{
		bool is_model = false;

		for (size_t i = 0; models[i] != NULL; i++)
			is_model |= xml_is(c, models[i]);
		if (xml_is(c, "Header"))
			parse_header(l, c);
		else if (xml_is(c, "DataDictionary") && dd == NULL)
			dd = c;
		else if (xml_is(c, "TransformationDictionary") && td == NULL)
			td = c;
		else if (xml_is(c, "RegressionModel") && model == NULL)
			model = c;
		else if (is_model)
			return load_unsupported(l, c, "RegressionModel only");
		else if (xml_is(c, "RegressionModel"))
			return load_unsupported(l, c, "one RegressionModel per file");
		else if (!xml_is(c, "MiningBuildTask") && !xml_is(c, "Extension"))
			return load_unsupported(l, c, SUPPORTS_TOP);
		if (l->rc != 0)
			return l->rc;
	}
	if (dd == NULL)
		return load_fail(l, root, "PMML: no DataDictionary");
	if (model == NULL)
		return load_fail(l, root, "PMML: no RegressionModel");
	parse_data_dictionary(l, dd);
	if (td != NULL && l->rc == 0) {
		FOR_EACH_CHILD(c, td)
		if (!xml_is(c, "DerivedField") && !xml_is(c, "Extension"))
			return load_unsupported(l, c,
						"DerivedField, Extension in a "
						"TransformationDictionary");
		parse_derived_fields(l, td);
	}
	if (l->rc == 0)
		parse_regression_model(l, model);
	if (l->rc == 0)
		resolve_model(l, model);
	if (l->rc == 0)
		model_build_info(l->m);
	if (l->rc == 0 && l->m->verification != NULL)
		verify_model(l, l->m->verification);
	l->m->verification = NULL;
	return l->rc;
}

int
pmml_load_mem(const char *name, const char *data, size_t len, pmml_model_t **out, char *err,
	      size_t errlen)
{
	char dummy[1];
	load_t l = {name != NULL ? name : "(memory)", err, errlen, 0, NULL};
	xmlDocPtr doc;

	*out = NULL;
	if (err == NULL || errlen == 0) {
		l.err = dummy;
		l.errlen = sizeof(dummy);
	}
	l.err[0] = '\0';
	if (len > PMML_MAX_FILE_BYTES) {
		snprintf(l.err, l.errlen, "%s:0: larger than %zu bytes", l.file,
			 (size_t)PMML_MAX_FILE_BYTES);
		return -FG_ETOOBIG;
	}
	xmlInitParser();
	l.m = xcalloc(1, sizeof(*l.m));
	l.m->a = arena_new(0);
	l.m->target = SIZE_MAX;
	doc = pmml_xml_read(&l, data, len);
	if (doc != NULL) {
		const xmlNode *root = xmlDocGetRootElement(doc);

		if (root == NULL)
			load_fail(&l, NULL, "empty document");
		else
			load_doc(&l, root);
		xmlFreeDoc(doc);
	}
	if (l.rc != 0) {
		pmml_free(l.m);
		return l.rc;
	}
	*out = l.m;
	return 0;
}

int
pmml_load_file(const char *path, pmml_model_t **out, char *err, size_t errlen)
{
	FILE *f = fopen(path, "rb");
	buf_t b;
	char chunk[65536];
	size_t n;
	int rc;

	*out = NULL;
	if (f == NULL) {
		snprintf(err, errlen, "%s:0: cannot open: %s", path, strerror(errno));
		return -FG_EIO;
	}
	buf_init(&b, PMML_MAX_FILE_BYTES);
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		if (buf_append(&b, chunk, n) != 0) {
			fclose(f);
			buf_free(&b);
			snprintf(err, errlen, "%s:0: larger than %zu bytes", path,
				 (size_t)PMML_MAX_FILE_BYTES);
			return -FG_ETOOBIG;
		}
	if (ferror(f)) {
		snprintf(err, errlen, "%s:0: cannot read: %s", path, strerror(errno));
		fclose(f);
		buf_free(&b);
		return -FG_EIO;
	}
	fclose(f);
	rc = pmml_load_mem(path, b.data != NULL ? b.data : "", b.len, out, err, errlen);
	buf_free(&b);
	return rc;
}

void
pmml_free(pmml_model_t *m)
{
	if (m == NULL)
		return;
	arena_free(m->a);
	free(m);
}

/* Accessors. */

const char *
pmml_model_name(const pmml_model_t *m)
{
	return m->name;
}

const char *
pmml_model_version(const pmml_model_t *m)
{
	return m->version;
}

const char *
pmml_model_description(const pmml_model_t *m)
{
	return m->description;
}

const char *
pmml_model_copyright(const pmml_model_t *m)
{
	return m->copyright;
}

const char *
pmml_model_application(const pmml_model_t *m)
{
	return m->application;
}

const char *
pmml_model_annotation(const pmml_model_t *m)
{
	return m->annotation;
}

const char *
pmml_model_target(const pmml_model_t *m)
{
	return m->target != SIZE_MAX ? m->fields[m->target].name : NULL;
}

const char *
pmml_model_extension(const pmml_model_t *m, const char *name)
{
	for (size_t i = 0; i + 1 < m->next; i += 2)
		if (strcmp(m->ext[i], name) == 0)
			return m->ext[i + 1];
	return NULL;
}

pmml_function_t
pmml_model_function(const pmml_model_t *m)
{
	return m->function;
}

size_t
pmml_input_count(const pmml_model_t *m)
{
	return m->ninputs;
}

const pmml_field_info_t *
pmml_input_get(const pmml_model_t *m, size_t i)
{
	return i < m->ninputs ? &m->info[i] : NULL;
}

size_t
pmml_category_count(const pmml_model_t *m)
{
	return m->function == PMML_FUNCTION_CLASSIFICATION ? m->ntables : 0;
}

const char *
pmml_category_get(const pmml_model_t *m, size_t i)
{
	return i < pmml_category_count(m) ? m->categories[i] : NULL;
}

size_t
pmml_output_count(const pmml_model_t *m)
{
	return m->noutputs;
}

const char *
pmml_output_name(const pmml_model_t *m, size_t i)
{
	return i < m->noutputs ? m->outputs[i].name : NULL;
}
