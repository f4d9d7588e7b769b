/* FHIR R4 metadata, generated from the official definitions (tools/gen-r4-meta.py ->
 * fhir/r4_meta.c): every resource, data type and backbone element with its elements in R4
 * order, their types and cardinality, choice types, and the R4 search parameters. */
#ifndef FHIR_META_H
#define FHIR_META_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/slice.h"

enum {
	FHIR_ELEM_ARRAY = 1 << 0,     /* max cardinality * */
	FHIR_ELEM_REQUIRED = 1 << 1,  /* min cardinality >= 1 (never on a choice expansion) */
	FHIR_ELEM_PRIMITIVE = 1 << 2, /* of a primitive type: has a `_name` companion in JSON */
	FHIR_ELEM_CHOICE = 1 << 3,    /* one expansion of a choice element value[x] */
	FHIR_ELEM_ATTRIBUTE = 1 << 4, /* in XML an attribute: Element.id, Extension.url */
	/* an expansion of a choice of min cardinality >= 1: one of the choice's is required */
	FHIR_ELEM_CHOICE_REQUIRED = 1 << 5,
};

typedef enum {
	FHIR_TYPE_PRIMITIVE,
	FHIR_TYPE_COMPLEX,  /* data types: HumanName, Identifier, ... */
	FHIR_TYPE_BACKBONE, /* Patient_Contact, Bundle_Entry, ... */
	FHIR_TYPE_RESOURCE,
} fhir_type_kind_t;

/* The JSON form of a primitive's value. */
typedef enum { FHIR_JSON_STRING, FHIR_JSON_NUMBER, FHIR_JSON_BOOL } fhir_json_form_t;

typedef struct fhir_type fhir_type_t;

typedef struct {
	const char *name;        /* JSON name: "birthDate", "deceasedBoolean" (choices expanded) */
	const char *type;        /* "date", "HumanName", "Patient_Contact", "ResourceList" */
	const char *choice_base; /* "deceased" for deceasedBoolean; NULL when not a choice */
	uint8_t flags;
} fhir_elem_t;

struct fhir_type {
	const char *name;
	fhir_type_kind_t kind;
	fhir_json_form_t json_form; /* primitives */
	const char *pattern; /* primitives: the regular expression of the R4 JSON schema, or NULL */
	const fhir_elem_t *elems; /* in R4 element order (XML order) */
	size_t nelems;
};

/* NULL when unknown. "ResourceList" (contained, Bundle.entry.resource, Parameters) is not a
 * type: the element holds any resource, whose resourceType says which. */
const fhir_type_t *fhir_meta_type(slice_t name);
const fhir_elem_t *fhir_meta_elem(const fhir_type_t *t, slice_t name);
/* Index of an element in its type's order; -1 when unknown. */
int fhir_meta_elem_index(const fhir_type_t *t, slice_t name);
/* The type of element e of owner (e from owner->elems), without a lookup; NULL for
 * "ResourceList". */
const fhir_type_t *fhir_meta_elem_type(const fhir_type_t *owner, const fhir_elem_t *e);
/* One past the last expansion of the choice whose expansion t->elems[e] is (the expansions of
 * a choice are adjacent); e + 1 for an element that is no choice. */
size_t fhir_meta_choice_end(const fhir_type_t *t, size_t e);
bool fhir_meta_is_resource(slice_t name);
size_t fhir_meta_resource_count(void);
const fhir_type_t *fhir_meta_resource_at(size_t i);

/* Resolves a dotted element path from a type ("Patient", "name.given", "contact.name.family",
 * "deceasedBoolean"; "value[x]" names a choice as a whole). Returns the last element or NULL,
 * and with *owner the type that declares it. */
const fhir_elem_t *fhir_meta_path(const fhir_type_t *t, slice_t path, const fhir_type_t **owner);

typedef enum {
	FHIR_SP_NUMBER,
	FHIR_SP_DATE,
	FHIR_SP_STRING,
	FHIR_SP_TOKEN,
	FHIR_SP_REFERENCE,
	FHIR_SP_COMPOSITE,
	FHIR_SP_QUANTITY,
	FHIR_SP_URI,
	FHIR_SP_SPECIAL,
} fhir_sp_type_t;

/* One component of a composite parameter: the parameter of the same resource that says how
 * to match its part of a value, and the expression that finds it from each of the composite's
 * items ("value.as(Quantity)" from an Observation). */
typedef struct {
	const char *code;
	const char *expression;
} fhir_sp_component_t;

typedef struct {
	const char *code;     /* "birthdate" */
	const char *resource; /* the base this entry is for ("Patient"); one entry per base */
	fhir_sp_type_t type;
	const char *expression; /* the FHIRPath expression, restricted to this base's part */
	const char
	    *targets; /* reference targets, space separated ("" when any / not a reference) */
	const char *url;
	const fhir_sp_component_t *components; /* composite: its components, in value order */
	size_t ncomponents;
} fhir_searchparam_t;

/* Search parameters of a resource type (including those on Resource and DomainResource). */
size_t fhir_meta_searchparams(slice_t resource, const fhir_searchparam_t *const **out);
const fhir_searchparam_t *fhir_meta_searchparam(slice_t resource, slice_t code);

#endif
