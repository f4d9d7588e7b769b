/* Unit tests for fhir/: the resource tree, R4 metadata, and the JSON and XML codecs. */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <libxml/parser.h>
#include <libxml/xmlschemas.h>

#include "fhir/json.h"
#include "fhir/meta.h"
#include "fhir/tree.h"
#include "fhir/validate.h"
#include "fhir/xml.h"
#include "lib/arena.h"
#include "lib/buf.h"
#include "lib/err.h"
#include "lib/slice.h"
#include "lib/xalloc.h"

/* The example resources in tests/data/fhir (see its README). */
static const char *const examples[] = {
    "allergyintolerance.json",
    "bundle-searchset-contained.json",
    "bundle-transaction.json",
    "diagnosticreport.json",
    "medicationrequest-timing.json",
    "observation-bp.json",
    "observation-glucose.json",
    "operationoutcome.json",
    "parameters.json",
    "patient-extensions.json",
    "questionnaireresponse-nested.json",
};
#define NEXAMPLES (sizeof(examples) / sizeof(examples[0]))

/* Reads tests/data/fhir/<name> into b (caller frees). */
static void
data_read(const char *name, buf_t *b)
{
	char *path = xasprintf("%s/fhir/%s", TEST_DATA_DIR, name);
	FILE *f = fopen(path, "rb");
	char chunk[8192];
	size_t n;

	if (f == NULL)
		fail_msg("cannot open %s", path);
	buf_init(b, 0);
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		assert_int_equal(buf_append(b, chunk, n), 0);
	fclose(f);
	free(path);
}

#define assert_slice_equal(s, cstr)                          \
	do {                                                 \
		slice_t s_ = (s);                            \
		assert_int_equal(s_.len, strlen(cstr));      \
		assert_memory_equal(s_.ptr, (cstr), s_.len); \
	} while (0)

static fhir_node_t *
str(arena_t *a, const char *s)
{
	return fhir_string_new(a, slice_cstr(s));
}

static void
test_tree_object(void **state)
{
	arena_t *a = arena_new(0);
	fhir_node_t *o = fhir_object_new(a);
	char key[8] = "gender";

	fhir_object_set_cstr(a, o, "resourceType", str(a, "Patient"));
	fhir_object_set(a, o, slice_cstr(key), str(a, "male"));
	memcpy(key, "XXXXXX", 6); /* the key was copied */
	fhir_object_set_cstr(a, o, "active", fhir_bool_new(a, true));
	assert_int_equal(fhir_object_count(o), 3);
	assert_slice_equal(fhir_resource_type(o), "Patient");
	assert_slice_equal(fhir_node_text(fhir_object_get_cstr(o, "gender")), "male");

	/* Replace keeps the position. */
	fhir_object_set_cstr(a, o, "gender", str(a, "female"));
	assert_int_equal(fhir_object_count(o), 3);
	assert_slice_equal(fhir_object_key_at(o, 1), "gender");
	assert_slice_equal(fhir_node_text(fhir_object_value_at(o, 1)), "female");
	assert_false(fhir_object_add_new(a, o, SLICE_LIT("gender"), str(a, "x")));
	assert_slice_equal(fhir_node_text(fhir_object_get_cstr(o, "gender")), "female");

	/* Remove shifts the rest down, keeping order. */
	assert_true(fhir_object_remove(o, SLICE_LIT("gender")));
	assert_false(fhir_object_remove(o, SLICE_LIT("gender")));
	assert_int_equal(fhir_object_count(o), 2);
	assert_slice_equal(fhir_object_key_at(o, 0), "resourceType");
	assert_slice_equal(fhir_object_key_at(o, 1), "active");
	assert_true(fhir_node_bool(fhir_object_get_cstr(o, "active")));
	assert_null(fhir_object_get_cstr(o, "gender"));
	assert_null(fhir_object_value_at(o, 2));

	fhir_object_set_cstr(a, o, "active", NULL);
	assert_int_equal(fhir_object_count(o), 1);
	assert_slice_equal(fhir_resource_type(fhir_object_new(a)), "");
	arena_free(a);
}

/* Past the linear-search size the hash index takes over; set/get/remove must agree with it. */
static void
test_tree_object_large(void **state)
{
	arena_t *a = arena_new(0);
	fhir_node_t *o = fhir_object_new(a);
	char key[16];

	for (int i = 0; i < 1000; i++) {
		int n = snprintf(key, sizeof(key), "k%d", i);

		fhir_object_set(a, o, slice_make(key, (size_t)n), fhir_int_new(a, i));
	}
	assert_int_equal(fhir_object_count(o), 1000);
	assert_true(fhir_object_remove(o, SLICE_LIT("k10")));
	assert_null(fhir_object_get_cstr(o, "k10"));
	assert_slice_equal(fhir_node_text(fhir_object_get_cstr(o, "k999")), "999");
	assert_slice_equal(fhir_object_key_at(o, 10), "k11");
	fhir_object_set_cstr(a, o, "k500", fhir_int_new(a, -5));
	assert_int_equal(fhir_object_count(o), 999);
	assert_slice_equal(fhir_node_text(fhir_object_get_cstr(o, "k500")), "-5");
	arena_free(a);
}

/* Ranked inserts keep members sorted by rank, ties in insertion order, also past the size
 * where the hash index takes over (positions shift under it). */
static void
test_tree_object_insert(void **state)
{
	arena_t *a = arena_new(0);
	fhir_node_t *o = fhir_object_new(a);
	char key[16];

	fhir_object_set_cstr(a, o, "resourceType", fhir_int_new(a, 0)); /* rank 0 */
	fhir_object_insert(a, o, SLICE_LIT("c"), fhir_int_new(a, 1), 30);
	fhir_object_insert(a, o, SLICE_LIT("a"), fhir_int_new(a, 2), 10);
	fhir_object_insert(a, o, SLICE_LIT("d"), fhir_int_new(a, 3), 40);
	fhir_object_insert(a, o, SLICE_LIT("b"), fhir_int_new(a, 4), 10);
	assert_slice_equal(fhir_object_key_at(o, 0), "resourceType");
	assert_slice_equal(fhir_object_key_at(o, 1), "a");
	assert_slice_equal(fhir_object_key_at(o, 2), "b");
	assert_slice_equal(fhir_object_key_at(o, 3), "c");
	assert_slice_equal(fhir_object_key_at(o, 4), "d");
	assert_int_equal(fhir_object_rank_at(o, 3), 30);
	assert_int_equal(fhir_object_rank_at(o, 99), 0);
	for (int i = 0; i < 20; i++) {
		int n = snprintf(key, sizeof(key), "k%d", i);

		fhir_object_insert(a, o, arena_slice_dup(a, slice_make(key, (size_t)n)),
				   fhir_int_new(a, 100 + i), (uint32_t)(50 + (i * 7) % 10));
	}
	fhir_object_insert(a, o, SLICE_LIT("e"), fhir_int_new(a, 5), 45);
	assert_true(fhir_object_count(o) > 16);
	assert_slice_equal(fhir_object_key_at(o, 5), "e");
	assert_slice_equal(fhir_node_text(fhir_object_get_cstr(o, "e")), "5");
	assert_slice_equal(fhir_node_text(fhir_object_get_cstr(o, "d")), "3");
	assert_slice_equal(fhir_node_text(fhir_object_get_cstr(o, "k13")), "113");
	for (size_t i = 1; i < fhir_object_count(o); i++)
		assert_true(fhir_object_rank_at(o, i - 1) <= fhir_object_rank_at(o, i));
	/* down to a few members again, the index stays: a member added at the end is found */
	for (int i = 0; i < 20; i++) {
		int n = snprintf(key, sizeof(key), "k%d", i);

		assert_true(fhir_object_remove(o, slice_make(key, (size_t)n)));
	}
	assert_int_equal(fhir_object_count(o), 6);
	fhir_object_insert(a, o, SLICE_LIT("z"), fhir_int_new(a, 6), 99);
	assert_slice_equal(fhir_object_key_at(o, 6), "z");
	assert_slice_equal(fhir_node_text(fhir_object_get_cstr(o, "z")), "6");
	assert_slice_equal(fhir_node_text(fhir_object_get_cstr(o, "e")), "5");
	arena_free(a);
}

/* Interned lookups compare addresses: the same text elsewhere is another key. */
static void
test_tree_object_interned(void **state)
{
	arena_t *a = arena_new(0);
	fhir_node_t *o = fhir_object_new(a);
	slice_t keys[40];
	char copy[] = "k7";

	for (int i = 0; i < 40; i++) {
		char key[16];
		int n = snprintf(key, sizeof(key), "k%d", i);

		keys[i] = arena_slice_dup(a, slice_make(key, (size_t)n));
		fhir_object_push(a, o, keys[i], fhir_int_new(a, i));
		/* linear below 17 members, the hash index above */
		if (i == 10 || i == 39) {
			assert_slice_equal(fhir_node_text(fhir_object_get_interned(o, keys[7])),
					   "7");
			assert_null(fhir_object_get_interned(o, slice_make(copy, 2)));
			assert_non_null(fhir_object_get(o, slice_make(copy, 2)));
		}
	}
	assert_slice_equal(fhir_node_text(fhir_object_get_interned(o, keys[39])), "39");
	arena_free(a);
}

static void
test_tree_array(void **state)
{
	arena_t *a = arena_new(0);
	fhir_node_t *arr = fhir_array_new(a), *item;
	size_t i, seen = 0;

	for (int k = 0; k < 10; k++)
		fhir_array_append(a, arr, fhir_int_new(a, k * 10));
	assert_int_equal(fhir_array_len(arr), 10);
	FHIR_ARRAY_FOREACH(arr, i, item) {
		assert_int_equal(fhir_node_kind(item), FHIR_NUMBER);
		seen++;
	}
	assert_int_equal(seen, 10);
	fhir_array_remove_at(arr, 0);
	assert_slice_equal(fhir_node_text(fhir_array_at(arr, 0)), "10");
	fhir_array_set(arr, 0, fhir_null_new(a));
	assert_int_equal(fhir_node_kind(fhir_array_at(arr, 0)), FHIR_NULL);
	assert_null(fhir_array_at(arr, 9));
	assert_int_equal(fhir_array_len(fhir_object_new(a)), 0);
	arena_free(a);
}

static fhir_node_t *
sample_patient(arena_t *a)
{
	fhir_node_t *p = fhir_object_new(a), *name = fhir_object_new(a), *names = fhir_array_new(a);
	fhir_node_t *given = fhir_array_new(a);

	fhir_object_set_cstr(a, p, "resourceType", str(a, "Patient"));
	fhir_object_set_cstr(a, p, "active", fhir_bool_new(a, false));
	fhir_array_append(a, given, str(a, "Ann"));
	fhir_array_append(a, given, str(a, "Marie"));
	fhir_object_set_cstr(a, name, "family", str(a, "Smith"));
	fhir_object_set_cstr(a, name, "given", given);
	fhir_array_append(a, names, name);
	fhir_object_set_cstr(a, p, "name", names);
	fhir_object_set_cstr(a, p, "multipleBirthInteger", fhir_number_new(a, SLICE_LIT("2")));
	return p;
}

static void
test_tree_clone_equal(void **state)
{
	arena_t *a = arena_new(0), *b = arena_new(0);
	fhir_node_t *p = sample_patient(a), *c, *q;

	c = fhir_node_clone(b, p);
	arena_free(a); /* the clone must not borrow from the source arena */
	a = arena_new(0);
	p = sample_patient(a);
	assert_true(fhir_node_equal(p, c));

	/* Member order is ignored... */
	q = fhir_object_new(a);
	for (size_t i = fhir_object_count(p); i-- > 0;)
		fhir_object_set(a, q, fhir_object_key_at(p, i), fhir_object_value_at(p, i));
	assert_slice_equal(fhir_object_key_at(q, 0), "multipleBirthInteger");
	assert_true(fhir_node_equal(p, q));
	/* ...array order is not, and numbers compare as text. */
	fhir_node_t *given =
	    fhir_object_get_cstr(fhir_array_at(fhir_object_get_cstr(c, "name"), 0), "given");
	fhir_node_t *first = fhir_array_at(given, 0);
	fhir_array_set(given, 0, fhir_array_at(given, 1));
	fhir_array_set(given, 1, first);
	assert_false(fhir_node_equal(p, c));
	fhir_array_set(given, 1, fhir_array_at(given, 0));
	fhir_array_set(given, 0, first);
	assert_true(fhir_node_equal(p, c));
	fhir_object_set_cstr(b, c, "multipleBirthInteger", fhir_number_new(b, SLICE_LIT("2.0")));
	assert_false(fhir_node_equal(p, c));
	fhir_object_set_cstr(b, c, "multipleBirthInteger", str(b, "2"));
	assert_false(fhir_node_equal(p, c));
	fhir_object_remove(c, SLICE_LIT("multipleBirthInteger"));
	assert_false(fhir_node_equal(p, c));
	assert_false(fhir_node_equal(fhir_bool_new(a, true), fhir_bool_new(a, false)));
	assert_true(fhir_node_equal(fhir_null_new(a), fhir_null_new(b)));
	arena_free(a);
	arena_free(b);
}

static void
test_tree_prune(void **state)
{
	arena_t *a = arena_new(0);
	fhir_node_t *p = sample_patient(a), *name, *given, *ext, *exts, *e;

	fhir_object_set_cstr(a, p, "telecom", fhir_array_new(a));
	fhir_object_set_cstr(a, p, "gender", str(a, ""));
	name = fhir_array_at(fhir_object_get_cstr(p, "name"), 0);
	fhir_object_set_cstr(a, name, "text", str(a, ""));
	fhir_object_set_cstr(a, name, "period", fhir_object_new(a)); /* empty object */
	e = fhir_object_new(a);
	fhir_object_set_cstr(a, e, "x", fhir_object_new(a)); /* empty once pruned */
	fhir_array_append(a, fhir_object_get_cstr(p, "name"), e);
	/* given ["Ann", "Marie", ""] with _given [null, {}, {extension}]: index 2 keeps its
	 * extension with a null value, index 1 keeps its value with a null extension. */
	given = fhir_object_get_cstr(name, "given");
	fhir_array_append(a, given, str(a, ""));
	exts = fhir_array_new(a);
	fhir_array_append(a, exts, fhir_null_new(a));
	fhir_array_append(a, exts, fhir_object_new(a));
	ext = fhir_object_new(a);
	fhir_object_set_cstr(a, ext, "id", str(a, "g3"));
	fhir_array_append(a, exts, ext);
	fhir_object_set_cstr(a, name, "_given", exts);
	/* An aligned pair where both sides are empty everywhere disappears. */
	fhir_node_t *prefix = fhir_array_new(a), *prefix_ext = fhir_array_new(a);
	fhir_array_append(a, prefix, str(a, ""));
	fhir_array_append(a, prefix_ext, fhir_null_new(a));
	fhir_object_set_cstr(a, name, "prefix", prefix);
	fhir_object_set_cstr(a, name, "_prefix", prefix_ext);

	assert_true(fhir_node_prune(p));
	assert_null(fhir_object_get_cstr(p, "telecom"));
	assert_null(fhir_object_get_cstr(p, "gender"));
	assert_int_equal(fhir_array_len(fhir_object_get_cstr(p, "name")), 1);
	assert_null(fhir_object_get_cstr(name, "text"));
	assert_null(fhir_object_get_cstr(name, "period"));
	assert_null(fhir_object_get_cstr(name, "prefix"));
	assert_null(fhir_object_get_cstr(name, "_prefix"));
	assert_int_equal(fhir_array_len(given), 3);
	assert_int_equal(fhir_node_kind(fhir_array_at(given, 2)), FHIR_NULL);
	assert_int_equal(fhir_node_kind(fhir_array_at(exts, 0)), FHIR_NULL);
	assert_int_equal(fhir_node_kind(fhir_array_at(exts, 1)), FHIR_NULL);
	assert_int_equal(fhir_object_count(fhir_array_at(exts, 2)), 1);
	/* Booleans and numbers are never empty. */
	assert_false(fhir_node_bool(fhir_object_get_cstr(p, "active")));
	assert_int_equal(fhir_object_count(p), 4);

	fhir_node_t *o = fhir_object_new(a);
	fhir_object_set_cstr(a, o, "a", fhir_array_new(a));
	assert_true(fhir_node_is_empty(fhir_string_new(a, SLICE_LIT(""))));
	assert_false(fhir_node_is_empty(fhir_null_new(a)));
	assert_false(fhir_node_prune(o));
	arena_free(a);
}

static const fhir_type_t *
type_of(const char *name)
{
	const fhir_type_t *t = fhir_meta_type(slice_cstr(name));

	assert_non_null(t);
	return t;
}

static void
test_meta_patient_order(void **state)
{
	static const char *const want[] = {
	    "id",
	    "meta",
	    "implicitRules",
	    "language",
	    "text",
	    "contained",
	    "extension",
	    "modifierExtension",
	    "identifier",
	    "active",
	    "name",
	    "telecom",
	    "gender",
	    "birthDate",
	    "deceasedBoolean",
	    "deceasedDateTime",
	    "address",
	    "maritalStatus",
	    "multipleBirthBoolean",
	    "multipleBirthInteger",
	    "photo",
	    "contact",
	    "communication",
	    "generalPractitioner",
	    "managingOrganization",
	    "link",
	};
	const fhir_type_t *p = type_of("Patient");

	assert_string_equal(p->name, "Patient");
	assert_int_equal(p->kind, FHIR_TYPE_RESOURCE);
	assert_int_equal(p->nelems, sizeof(want) / sizeof(want[0]));
	for (size_t i = 0; i < p->nelems; i++) {
		assert_string_equal(p->elems[i].name, want[i]);
		assert_int_equal(fhir_meta_elem_index(p, slice_cstr(want[i])), (int)i);
	}
	assert_int_equal(fhir_meta_elem_index(p, SLICE_LIT("deceased")), -1);
	assert_int_equal(fhir_meta_elem_index(p, SLICE_LIT("birthdate")), -1);
	assert_int_equal(fhir_meta_elem_index(p, SLICE_LIT("")), -1);
	assert_null(fhir_meta_elem(p, SLICE_LIT("resourceType")));
}

static void
test_meta_flags(void **state)
{
	const fhir_type_t *p = type_of("Patient"), *hn, *ext;
	const fhir_elem_t *e;

	e = fhir_meta_elem(p, SLICE_LIT("name"));
	assert_string_equal(e->type, "HumanName");
	assert_int_equal(e->flags, FHIR_ELEM_ARRAY);
	e = fhir_meta_elem(p, SLICE_LIT("birthDate"));
	assert_string_equal(e->type, "date");
	assert_int_equal(e->flags, FHIR_ELEM_PRIMITIVE);
	assert_null(e->choice_base);
	{
		/* a required choice flags each expansion; fhir_meta_choice_end spans them */
		const fhir_type_t *mr = type_of("MedicationRequest");
		int cc = fhir_meta_elem_index(mr, SLICE_LIT("medicationCodeableConcept"));
		int ref = fhir_meta_elem_index(mr, SLICE_LIT("medicationReference"));
		int dec = fhir_meta_elem_index(p, SLICE_LIT("deceasedBoolean"));

		assert_true(cc >= 0 && ref == cc + 1);
		assert_true(mr->elems[cc].flags & FHIR_ELEM_CHOICE_REQUIRED);
		assert_true(mr->elems[ref].flags & FHIR_ELEM_CHOICE_REQUIRED);
		assert_int_equal(fhir_meta_choice_end(mr, (size_t)cc), (size_t)ref + 1);
		assert_int_equal(fhir_meta_choice_end(mr, (size_t)ref), (size_t)ref + 1);
		assert_false(p->elems[dec].flags & FHIR_ELEM_CHOICE_REQUIRED); /* 0..1 */
		assert_int_equal(fhir_meta_choice_end(p, (size_t)dec), (size_t)dec + 2);
		assert_int_equal(fhir_meta_choice_end(p, 0), 1); /* no choice */
	}
	e = fhir_meta_elem(p, SLICE_LIT("deceasedBoolean"));
	assert_string_equal(e->type, "boolean");
	assert_string_equal(e->choice_base, "deceased");
	assert_int_equal(e->flags, FHIR_ELEM_CHOICE | FHIR_ELEM_PRIMITIVE);
	e = fhir_meta_elem(p, SLICE_LIT("gender"));
	assert_string_equal(e->type, "code"); /* an inline enum in the JSON schema */
	e = fhir_meta_elem(p, SLICE_LIT("contained"));
	assert_string_equal(e->type, "ResourceList");
	e = fhir_meta_elem(type_of("Observation"), SLICE_LIT("status"));
	assert_int_equal(e->flags, FHIR_ELEM_REQUIRED | FHIR_ELEM_PRIMITIVE);
	e = fhir_meta_elem(type_of("Observation"), SLICE_LIT("valueQuantity"));
	assert_string_equal(e->type, "Quantity");
	assert_string_equal(e->choice_base, "value");
	assert_int_equal(e->flags, FHIR_ELEM_CHOICE);

	/* XML attributes, and the data type side: Element.id is a string attribute. */
	ext = type_of("Extension");
	assert_int_equal(ext->kind, FHIR_TYPE_COMPLEX);
	e = fhir_meta_elem(ext, SLICE_LIT("url"));
	assert_true(e->flags & FHIR_ELEM_ATTRIBUTE);
	assert_true(e->flags & FHIR_ELEM_REQUIRED);
	assert_non_null(fhir_meta_elem(ext, SLICE_LIT("valueMeta"))); /* only in the XSD */
	hn = type_of("HumanName");
	e = fhir_meta_elem(hn, SLICE_LIT("id"));
	assert_string_equal(e->type, "string");
	assert_true(e->flags & FHIR_ELEM_ATTRIBUTE);
	assert_false(fhir_meta_elem(p, SLICE_LIT("id"))->flags & FHIR_ELEM_ATTRIBUTE);
	assert_string_equal(fhir_meta_elem(type_of("Narrative"), SLICE_LIT("div"))->type, "xhtml");

	/* Primitives. */
	assert_int_equal(type_of("boolean")->json_form, FHIR_JSON_BOOL);
	assert_int_equal(type_of("decimal")->json_form, FHIR_JSON_NUMBER);
	assert_int_equal(type_of("positiveInt")->json_form, FHIR_JSON_NUMBER);
	assert_int_equal(type_of("unsignedInt")->json_form, FHIR_JSON_NUMBER);
	assert_int_equal(type_of("integer")->json_form, FHIR_JSON_NUMBER);
	assert_int_equal(type_of("date")->json_form, FHIR_JSON_STRING);
	assert_int_equal(type_of("date")->kind, FHIR_TYPE_PRIMITIVE);
	assert_int_equal(type_of("date")->nelems, 0);
	assert_non_null(strstr(type_of("date")->pattern, "(0[1-9]|1[0-2])"));
	assert_null(type_of("base64Binary")->pattern);
	assert_null(fhir_meta_type(SLICE_LIT("ResourceList")));
	assert_null(fhir_meta_type(SLICE_LIT("patient")));
	assert_null(fhir_meta_type(SLICE_LIT("")));
}

static void
test_meta_backbone_path(void **state)
{
	const fhir_type_t *p = type_of("Patient"), *c = type_of("Patient_Contact"), *owner = NULL;
	const fhir_elem_t *e;

	assert_int_equal(c->kind, FHIR_TYPE_BACKBONE);
	assert_string_equal(c->elems[0].name, "id");
	assert_string_equal(c->elems[3].name, "relationship");
	assert_int_equal(type_of("HumanName")->kind, FHIR_TYPE_COMPLEX);

	e = fhir_meta_path(p, SLICE_LIT("contact.name.family"), &owner);
	assert_non_null(e);
	assert_string_equal(e->name, "family");
	assert_string_equal(e->type, "string");
	assert_string_equal(owner->name, "HumanName");
	e = fhir_meta_path(p, SLICE_LIT("Patient.name.given"), &owner);
	assert_true(e->flags & FHIR_ELEM_ARRAY);
	assert_string_equal(owner->name, "HumanName");
	e = fhir_meta_path(p, SLICE_LIT("deceased[x]"), &owner);
	assert_string_equal(e->name, "deceasedBoolean");
	assert_string_equal(owner->name, "Patient");
	e = fhir_meta_path(type_of("Observation"), SLICE_LIT("component.valueQuantity.value"),
			   &owner);
	assert_string_equal(e->type, "decimal");
	assert_string_equal(owner->name, "Quantity");
	e = fhir_meta_path(type_of("Bundle"), SLICE_LIT("entry.resource"), &owner);
	assert_string_equal(e->type, "ResourceList");
	assert_string_equal(owner->name, "Bundle_Entry");
	assert_null(fhir_meta_elem_type(owner, e)); /* ResourceList */
	assert_ptr_equal(fhir_meta_elem_type(p, fhir_meta_elem(p, SLICE_LIT("contact"))), c);
	assert_ptr_equal(fhir_meta_elem_type(p, fhir_meta_elem(p, SLICE_LIT("birthDate"))),
			 type_of("date"));
	assert_null(fhir_meta_path(p, SLICE_LIT("contact.name.nope"), NULL));
	assert_null(fhir_meta_path(p, SLICE_LIT("birthDate.value"), NULL));
	assert_null(fhir_meta_path(p, SLICE_LIT("deceased[x].value"), NULL));
	assert_null(fhir_meta_path(p, SLICE_LIT("name."), NULL));
	assert_null(fhir_meta_path(p, SLICE_LIT(""), NULL));
}

static const fhir_searchparam_t *
sp(const char *res, const char *code)
{
	return fhir_meta_searchparam(slice_cstr(res), slice_cstr(code));
}

static void
test_meta_searchparams(void **state)
{
	const fhir_searchparam_t *s;
	const fhir_searchparam_t *const *list;
	size_t n;

	s = sp("Patient", "birthdate");
	assert_non_null(s);
	assert_int_equal(s->type, FHIR_SP_DATE);
	assert_string_equal(s->resource, "Patient");
	assert_string_equal(s->expression, "Patient.birthDate");
	assert_string_equal(sp("Person", "birthdate")->expression, "Person.birthDate");
	s = sp("Observation", "code");
	assert_int_equal(s->type, FHIR_SP_TOKEN);
	assert_string_equal(s->expression, "Observation.code");
	s = sp("Observation", "subject");
	assert_int_equal(s->type, FHIR_SP_REFERENCE);
	assert_string_equal(s->expression, "Observation.subject");
	assert_string_equal(s->targets, "Device Group Location Patient");
	s = sp("Observation", "value-quantity");
	assert_int_equal(s->type, FHIR_SP_QUANTITY);
	s = sp("Patient", "family");
	assert_int_equal(s->type, FHIR_SP_STRING);
	assert_string_equal(s->url, "http://hl7.org/fhir/SearchParameter/individual-family");
	assert_null(sp("Patient", "no-such"));
	assert_null(sp("NoSuch", "_id"));

	/* Resource parameters are in every resource's list, DomainResource ones only in those. */
	for (size_t i = 0; i < fhir_meta_resource_count(); i++) {
		const fhir_type_t *t = fhir_meta_resource_at(i);
		slice_t name = slice_cstr(t->name);

		s = fhir_meta_searchparam(name, SLICE_LIT("_id"));
		assert_non_null(s);
		assert_int_equal(s->type, FHIR_SP_TOKEN);
		assert_string_equal(s->expression, "Resource.id");
		s = fhir_meta_searchparam(name, SLICE_LIT("_lastUpdated"));
		assert_non_null(s);
		assert_int_equal(s->type, FHIR_SP_DATE);
		n = fhir_meta_searchparams(name, &list);
		for (size_t k = 1; k < n; k++)
			assert_true(strcmp(list[k - 1]->code, list[k]->code) < 0);
	}
	assert_non_null(sp("Patient", "_text"));
	assert_null(sp("Bundle", "_text"));
	n = fhir_meta_searchparams(SLICE_LIT("Patient"), &list);
	assert_true(n > 20);
	assert_int_equal(fhir_meta_searchparams(SLICE_LIT("Nope"), &list), 0);
	assert_null(list);
}

static void
test_meta_counts(void **state)
{
	const fhir_type_t *prev = NULL;

	assert_int_equal(fhir_meta_resource_count(), 146);
	for (size_t i = 0; i < fhir_meta_resource_count(); i++) {
		const fhir_type_t *t = fhir_meta_resource_at(i);

		assert_int_equal(t->kind, FHIR_TYPE_RESOURCE);
		assert_true(fhir_meta_is_resource(slice_cstr(t->name)));
		assert_string_equal(t->elems[0].name, "id");
		if (prev != NULL)
			assert_true(strcmp(prev->name, t->name) < 0);
		prev = t;
	}
	assert_null(fhir_meta_resource_at(146));
	assert_true(fhir_meta_is_resource(SLICE_LIT("Bundle")));
	assert_true(fhir_meta_is_resource(SLICE_LIT("MedicationStatement")));
	assert_false(fhir_meta_is_resource(SLICE_LIT("HumanName")));
	assert_false(fhir_meta_is_resource(SLICE_LIT("Patient_Contact")));
	/* Binary, Bundle and Parameters are Resources, not DomainResources: no text. */
	assert_null(fhir_meta_elem(type_of("Bundle"), SLICE_LIT("text")));
	assert_non_null(fhir_meta_elem(type_of("Account"), SLICE_LIT("text")));
}

static fhir_node_t *
json_parse_ok(arena_t *a, const char *text)
{
	fhir_node_t *n = NULL;
	char err[256];
	int rc = fhir_json_parse(a, text, strlen(text), NULL, &n, err, sizeof(err));

	if (rc != 0)
		fail_msg("parse of %s: %s", text, err);
	assert_non_null(n);
	return n;
}

/* Equal objects in an array go (the later ones), at any depth; other items stay. */
static void
test_tree_dedupe(void **state)
{
	arena_t *a = arena_new(0);
	fhir_node_t *n =
	    json_parse_ok(a, "{\"a\":[{\"x\":1},{\"x\":2},{\"x\":1},\"s\",\"s\"],"
			     "\"b\":{\"c\":[{\"y\":[{\"z\":1},{\"z\":1}]},{\"y\":[{\"z\":1}]}]}}");
	buf_t out = BUF_INIT;

	fhir_node_dedupe(n);
	assert_int_equal(fhir_json_write(n, false, &out), 0);
	assert_string_equal(out.data, "{\"a\":[{\"x\":1},{\"x\":2},\"s\",\"s\"],"
				      "\"b\":{\"c\":[{\"y\":[{\"z\":1}]}]}}");
	buf_free(&out);
	arena_free(a);
}

/* fhir_node_dedupe_prune gives the tree and the result that fhir_node_dedupe then
 * fhir_node_prune give: where pruning first would make objects equal, where "_x" companions
 * pair up, below arrays of one item and of several, deeper than dedupe goes. */
static void
test_tree_dedupe_prune(void **state)
{
	static const char *const docs[] = {
	    "{\"a\":[{\"x\":1,\"e\":{}},{\"x\":1}],\"b\":[{\"c\":[{\"x\":1,\"e\":\"\"},{\"x\":1}]}]"
	    "}",
	    "{\"a\":[{\"x\":[{\"y\":1},{\"y\":1}]},{\"x\":[{\"y\":1}]}],\"s\":\"\",\"o\":{}}",
	    "{\"n\":{\"given\":[\"a\",\"\",\"\"],\"_given\":[null,{\"id\":\"x\"},{}],"
	    "\"k\":[{\"z\":[]},{\"z\":[]}]}}",
	    "{\"a\":[{\"b\":[{\"c\":{}}]}],\"d\":[[],{\"e\":[null,{}]}],\"f\":[\"\"]}",
	    "{\"a\":[{}]}",
	    "[{\"x\":{}},{\"x\":\"\"},{}]",
	};
	char deep[2048];
	size_t len = 0;

	/* objects in arrays 80 levels deep, equal items at the bottom (past dedupe's 64 levels) */
	for (int i = 0; i < 40; i++)
		len += (size_t)snprintf(deep + len, sizeof(deep) - len, "{\"a\":[");
	len += (size_t)snprintf(deep + len, sizeof(deep) - len, "{\"x\":1},{\"x\":1},{}");
	for (int i = 0; i < 40; i++)
		len += (size_t)snprintf(deep + len, sizeof(deep) - len, "]}");
	for (size_t i = 0; i <= sizeof(docs) / sizeof(docs[0]); i++) {
		const char *text = i < sizeof(docs) / sizeof(docs[0]) ? docs[i] : deep;
		arena_t *a = arena_new(0);
		fhir_json_limits_t lim = {0, 200};
		fhir_node_t *x = NULL, *y = NULL;
		char err[256];
		buf_t ox = BUF_INIT, oy = BUF_INIT;
		bool rx, ry;

		assert_int_equal(fhir_json_parse(a, text, strlen(text), &lim, &x, err, sizeof(err)),
				 0);
		assert_int_equal(fhir_json_parse(a, text, strlen(text), &lim, &y, err, sizeof(err)),
				 0);
		fhir_node_dedupe(x);
		rx = fhir_node_prune(x);
		ry = fhir_node_dedupe_prune(y);
		assert_int_equal(rx, ry);
		assert_int_equal(fhir_json_write(x, false, &ox), 0);
		assert_int_equal(fhir_json_write(y, false, &oy), 0);
		assert_string_equal(ox.data, oy.data);
		buf_free(&ox);
		buf_free(&oy);
		arena_free(a);
	}
}

/* Parses text expecting error rc, whose message must contain want. */
static void
json_parse_bad(const char *text, size_t len, const fhir_json_limits_t *lim, int rc,
	       const char *want)
{
	arena_t *a = arena_new(0);
	fhir_node_t *n = (fhir_node_t *)a;
	char err[256];

	assert_int_equal(fhir_json_parse(a, text, len, lim, &n, err, sizeof(err)), rc);
	assert_null(n);
	if (strstr(err, want) == NULL)
		fail_msg("error for %.*s is \"%s\", wanted \"%s\"", (int)len, text, err, want);
	arena_free(a);
}

static void
test_json_examples_roundtrip(void **state)
{
	for (size_t i = 0; i < NEXAMPLES; i++) {
		arena_t *a = arena_new(0);
		buf_t in, out = BUF_INIT, pretty = BUF_INIT;
		fhir_node_t *x, *y;
		char err[256];

		data_read(examples[i], &in);
		if (fhir_json_parse(a, in.data, in.len, NULL, &x, err, sizeof(err)) != 0)
			fail_msg("%s: %s", examples[i], err);
		assert_int_equal(fhir_node_kind(x), FHIR_OBJECT);
		assert_true(fhir_meta_is_resource(fhir_resource_type(x)));
		assert_int_equal(fhir_json_write(x, false, &out), 0);
		assert_null(memchr(out.data, '\n', out.len)); /* compact */
		assert_int_equal(fhir_json_parse(a, out.data, out.len, NULL, &y, err, sizeof(err)),
				 0);
		assert_true(fhir_node_equal(x, y));
		/* Compact output is canonical: writing the re-parsed tree gives the same bytes. */
		assert_int_equal(fhir_json_write(y, false, &pretty), 0);
		assert_int_equal(pretty.len, out.len);
		assert_memory_equal(pretty.data, out.data, out.len);
		/* The examples are written as the pretty writer writes (2 spaces, member order
		 * kept, numbers as given), except where they spell characters as \u escapes. */
		buf_reset(&pretty);
		assert_int_equal(fhir_json_write(x, true, &pretty), 0);
		if (strstr(in.data, "\\u") == NULL) {
			if (pretty.len != in.len || memcmp(pretty.data, in.data, in.len) != 0)
				fail_msg("%s: pretty output differs:\n%s", examples[i],
					 pretty.data);
		}
		buf_free(&in);
		buf_free(&out);
		buf_free(&pretty);
		arena_free(a);
	}
}

static void
test_json_numbers(void **state)
{
	arena_t *a = arena_new(0);
	fhir_node_t *n = json_parse_ok(a, "{\"a\":1.50,\"b\":100,\"c\":-0.001,\"d\":6.2E0,"
					  "\"e\":12345678901234567890123,\"f\":true,\"g\":null}");
	buf_t out = BUF_INIT;

	assert_int_equal(fhir_node_kind(fhir_object_get_cstr(n, "a")), FHIR_NUMBER);
	assert_slice_equal(fhir_node_text(fhir_object_get_cstr(n, "a")), "1.50");
	assert_slice_equal(fhir_node_text(fhir_object_get_cstr(n, "b")), "100");
	assert_slice_equal(fhir_node_text(fhir_object_get_cstr(n, "c")), "-0.001");
	assert_slice_equal(fhir_node_text(fhir_object_get_cstr(n, "d")), "6.2E0");
	assert_slice_equal(fhir_node_text(fhir_object_get_cstr(n, "e")), "12345678901234567890123");
	assert_true(fhir_node_bool(fhir_object_get_cstr(n, "f")));
	assert_int_equal(fhir_node_kind(fhir_object_get_cstr(n, "g")), FHIR_NULL);
	assert_int_equal(fhir_json_write(n, false, &out), 0);
	assert_string_equal(out.data, "{\"a\":1.50,\"b\":100,\"c\":-0.001,\"d\":6.2E0,"
				      "\"e\":12345678901234567890123,\"f\":true,\"g\":null}");
	buf_reset(&out);
	assert_int_equal(fhir_json_write(fhir_int_new(a, INT64_MIN), false, &out), 0);
	assert_string_equal(out.data, "-9223372036854775808");
	buf_free(&out);
	arena_free(a);
}

static void
test_json_strings(void **state)
{
	arena_t *a = arena_new(0);
	fhir_node_t *n = json_parse_ok(
	    a, "[\"\\u00e9\\u20ac\\ud83d\\ude00\", \"tab\\there\\n\\\"q\\\" \\\\ \\/ \\u0001\", "
	       "\"Zürich\", \"\"]");
	buf_t out = BUF_INIT;

	assert_int_equal(fhir_array_len(n), 4);
	assert_slice_equal(fhir_node_text(fhir_array_at(n, 0)),
			   "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
	assert_slice_equal(fhir_node_text(fhir_array_at(n, 1)), "tab\there\n\"q\" \\ / \x01");
	assert_slice_equal(fhir_node_text(fhir_array_at(n, 2)), "Z\xc3\xbcrich");
	assert_slice_equal(fhir_node_text(fhir_array_at(n, 3)), "");
	assert_int_equal(fhir_json_write(n, false, &out), 0);
	assert_string_equal(out.data,
			    "[\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\",\"tab\\there\\n\\\"q\\\" "
			    "\\\\ / \\u0001\",\"Z\xc3\xbcrich\",\"\"]");

	/* A NUL inside a string survives: slices carry their length. */
	n = json_parse_ok(a, "{\"k\":\"a\\u0000b\"}");
	assert_int_equal(fhir_node_text(fhir_object_get_cstr(n, "k")).len, 3);

	/* The writer refuses strings that are not UTF-8 and leaves the buffer as it was. */
	buf_reset(&out);
	assert_int_equal(buf_append_cstr(&out, "keep"), 0);
	fhir_array_append(a, n = fhir_array_new(a), fhir_string_new(a, SLICE_LIT("\xff\xfe")));
	assert_int_equal(fhir_json_write(n, false, &out), -FG_EINVAL);
	assert_string_equal(out.data, "keep");
	/* And stops at the buffer's cap. */
	buf_free(&out);
	buf_init(&out, 8);
	n = json_parse_ok(a, "{\"resourceType\":\"Patient\"}");
	assert_int_equal(fhir_json_write(n, false, &out), -FG_ETOOBIG);
	assert_int_equal(out.len, 0);
	buf_free(&out);
	arena_free(a);
}

static void
test_json_limits(void **state)
{
	fhir_json_limits_t lim = {.max_bytes = 0, .max_depth = 3};
	arena_t *a = arena_new(0);
	fhir_node_t *n;
	char deep[300], err[128];
	size_t i;

	assert_int_equal(fhir_json_parse(a, "[[[1]]]", 7, &lim, &n, err, sizeof(err)), 0);
	json_parse_bad("[[[[1]]]]", 9, &lim, -FG_ETOOBIG, "line 1, column 4: nesting too deep");
	json_parse_bad("{\"a\":{\"b\":{\"c\":{}}}}", 21, &lim, -FG_ETOOBIG, "nesting too deep");
	/* The default depth is 64. */
	for (i = 0; i < 65; i++)
		deep[i] = '[';
	for (i = 0; i < 65; i++)
		deep[65 + i] = ']';
	json_parse_bad(deep, 130, NULL, -FG_ETOOBIG, "nesting too deep");
	assert_int_equal(fhir_json_parse(a, deep + 1, 128, NULL, &n, err, sizeof(err)), 0);

	lim.max_depth = 0;
	lim.max_bytes = 10;
	assert_int_equal(fhir_json_parse(a, "[1,2,3,45]", 10, &lim, &n, err, sizeof(err)), 0);
	json_parse_bad("[1,2,3,456]", 11, &lim, -FG_ETOOBIG, "11 bytes exceeds the limit of 10");
	arena_free(a);
}

static void
test_json_malformed(void **state)
{
	static const struct {
		const char *text, *want;
	} cases[] = {
	    {"{\"a\":1,\n  \"a\":2}", "line 2, column 5: duplicate key"},
	    {"{\"x\":{\"b\":1,\"b\":1}}", "duplicate key"},
	    {"{\"a\":}", "line 1, column 6: unallowed token"},
	    {"{\"a\":1", "premature EOF"},
	    {"", "premature EOF"},
	    {"{} x", "trailing garbage"},
	    {"[1,]", "unallowed token"},
	    {"// c\n{}", "comment"},
	    {"[01]", "line 1, column"},
	    {"[NaN]", "invalid"},
	    {"{a:1}", "line 1, column 2: invalid char in json text"},
	    {"[\"\xc3\x28\"]", "invalid bytes in UTF8 string"},
	    {"[\"a\nb\"]", "line 1, column"},
	    {"{\"a\" 1}", "object key and value must be separated by a colon"},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		json_parse_bad(cases[i].text, strlen(cases[i].text), NULL, -FG_EPARSE,
			       cases[i].want);
}

#define P_OPEN  "<Patient xmlns=\"http://hl7.org/fhir\">"
#define P_CLOSE "</Patient>"

/* XML. The official R4 schema (tests/data/fhir/xsd, 2.6 MB) is loaded once per binary. */
static xmlSchemaPtr r4_schema;

static int
xml_group_setup(void **state)
{
	char *path = xasprintf("%s/fhir/xsd/fhir-single.xsd", TEST_DATA_DIR);
	xmlSchemaParserCtxtPtr pc;

	fhir_xml_init();
	pc = xmlSchemaNewParserCtxt(path);
	r4_schema = xmlSchemaParse(pc);
	xmlSchemaFreeParserCtxt(pc);
	free(path);
	return r4_schema != NULL ? 0 : -1;
}

static int
xml_group_teardown(void **state)
{
	xmlSchemaFree(r4_schema);
	return 0;
}

static void
xml_quiet(void *ctx, const char *fmt, ...)
{
}

/* 0 when XML text is well-formed and valid against the R4 schema. */
static int
xml_validate(const char *text, size_t len)
{
	xmlDocPtr doc = xmlReadMemory(text, (int)len, NULL, NULL, XML_PARSE_NONET);
	xmlSchemaValidCtxtPtr vc;
	int rc;

	if (doc == NULL)
		return -1;
	vc = xmlSchemaNewValidCtxt(r4_schema);
	rc = xmlSchemaValidateDoc(vc, doc);
	xmlSchemaFreeValidCtxt(vc);
	xmlFreeDoc(doc);
	return rc;
}

/* Fails the test with the XML when it does not validate (libxml2 prints why on stderr). */
static void
xml_assert_valid(const char *what, const buf_t *xml)
{
	int rc = xml_validate(xml->data, xml->len);

	if (rc != 0)
		fail_msg("%s: output does not validate against the R4 XSD (%d):\n%s", what, rc,
			 xml->data);
}

/* The validator the round trips rely on does reject what the R4 schema forbids. */
static void
test_xml_schema_rejects(void **state)
{
	static const char *const bad[] = {
	    P_OPEN "<gender value=\"male\"/><active value=\"true\"/>" P_CLOSE, /* order */
	    P_OPEN "<gender value=\"man\"/>" P_CLOSE,                          /* code */
	    P_OPEN "<birthDate value=\"1970-13-01\"/>" P_CLOSE,                /* pattern */
	    P_OPEN "<name><fam value=\"x\"/></name>" P_CLOSE,                  /* unknown */
	    "<Patient xmlns=\"http://hl7.org/fhir\"><text><status value=\"generated\"/>"
	    "<div xmlns=\"http://www.w3.org/1999/xhtml\"><script/></div></text>" P_CLOSE,
	};
	static const char good[] =
	    P_OPEN "<active value=\"true\"/><gender value=\"male\"/>" P_CLOSE;

	assert_int_equal(xml_validate(good, strlen(good)), 0);
	xmlSetGenericErrorFunc(NULL, xml_quiet);
	xmlSetStructuredErrorFunc(NULL, NULL);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (xml_validate(bad[i], strlen(bad[i])) == 0)
			fail_msg("the schema accepted %s", bad[i]);
	xmlSetGenericErrorFunc(NULL, NULL);
}

static void
test_xml_examples_roundtrip(void **state)
{
	for (size_t i = 0; i < NEXAMPLES; i++) {
		arena_t *a = arena_new(0);
		buf_t in, xml = BUF_INIT, xml2 = BUF_INIT, json = BUF_INIT;
		fhir_node_t *x, *y;
		char err[256];

		data_read(examples[i], &in);
		assert_int_equal(fhir_json_parse(a, in.data, in.len, NULL, &x, err, sizeof(err)),
				 0);
		for (int pretty = 0; pretty <= 1; pretty++) {
			buf_reset(&xml);
			if (fhir_xml_write(x, pretty, &xml, err, sizeof(err)) != 0)
				fail_msg("%s: %s", examples[i], err);
			xml_assert_valid(examples[i], &xml);
			if (fhir_xml_parse(a, xml.data, xml.len, NULL, &y, err, sizeof(err)) != 0)
				fail_msg("%s: reading our XML: %s\n%s", examples[i], err, xml.data);
			if (!fhir_node_equal(x, y)) {
				fhir_json_write(y, true, &json);
				fail_msg("%s: JSON -> XML -> JSON differs:\n%s", examples[i],
					 json.data);
			}
		}
		/* The tree read back from XML is in R4 order: it writes the same XML. */
		assert_int_equal(fhir_xml_write(y, true, &xml2, err, sizeof(err)), 0);
		assert_int_equal(xml2.len, xml.len);
		assert_memory_equal(xml2.data, xml.data, xml.len);
		buf_free(&in);
		buf_free(&xml);
		buf_free(&xml2);
		buf_free(&json);
		arena_free(a);
	}
}

static fhir_node_t *
xml_parse_ok(arena_t *a, const char *text)
{
	fhir_node_t *n = NULL;
	char err[256];

	if (fhir_xml_parse(a, text, strlen(text), NULL, &n, err, sizeof(err)) != 0)
		fail_msg("parse of %s: %s", text, err);
	return n;
}

static void
xml_parse_bad(const char *text, const fhir_xml_limits_t *lim, int rc, const char *want)
{
	arena_t *a = arena_new(0);
	fhir_node_t *n = (fhir_node_t *)a;
	char err[256];

	assert_int_equal(fhir_xml_parse(a, text, strlen(text), lim, &n, err, sizeof(err)), rc);
	assert_null(n);
	if (strstr(err, want) == NULL)
		fail_msg("error for %s is \"%s\", wanted \"%s\"", text, err, want);
	arena_free(a);
}

/* XML read into the tree compared with the JSON it must equal. */
static void
xml_expect_json(const char *xml, const char *json)
{
	arena_t *a = arena_new(0);
	fhir_node_t *x = xml_parse_ok(a, xml), *j = json_parse_ok(a, json);

	if (!fhir_node_equal(x, j)) {
		buf_t out = BUF_INIT;

		fhir_json_write(x, false, &out);
		fail_msg("%s\nread as %s\nwanted %s", xml, out.data, json);
	}
	arena_free(a);
}

#define EXT(v)      "<extension url=\"http://x.org/e\"><valueString value=\"" v "\"/></extension>"
#define EXT_JSON(v) "{\"url\":\"http://x.org/e\",\"valueString\":\"" v "\"}"

static void
test_xml_read(void **state)
{
	/* Primitives: value types by json_form, id and extensions in the companion. */
	xml_expect_json(
	    P_OPEN "<id value=\"p1\"/><active value=\"true\"/>"
		   "<birthDate id=\"b\" value=\"1970\">" EXT(
		       "t") "</birthDate>"
			    "<multipleBirthInteger value=\"2\"/>" P_CLOSE,
	    "{\"resourceType\":\"Patient\",\"id\":\"p1\",\"active\":true,"
	    "\"birthDate\":\"1970\",\"_birthDate\":{\"id\":\"b\",\"extension\":[" EXT_JSON(
		"t") "]},\"multipleBirthInteger\":2}");
	/* Repeating primitives: aligned with nulls; values all null leave only `_given`. */
	xml_expect_json(
	    P_OPEN "<name><given value=\"A\"/><given>" EXT(
		"x") "</given>"
		     "<given value=\"C\"/></name>"
		     "<name><given id=\"g1\"/><given>" EXT("y") "</given></name>" P_CLOSE,
	    "{\"resourceType\":\"Patient\",\"name\":[{\"given\":[\"A\",null,\"C\"],"
	    "\"_given\":[null,{\"extension\":[" EXT_JSON(
		"x") "]},null]},"
		     "{\"_given\":[{\"id\":\"g1\"},{\"extension\":[" EXT_JSON("y") "]}]}]}");
	/* Element ids are attributes; decimals keep their text; comments, xsi attributes and
	 * whitespace are ignored; contained resources are unwrapped. */
	xml_expect_json("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!-- c -->"
			"<Observation xmlns=\"http://hl7.org/fhir\" "
			"xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" "
			"xsi:schemaLocation=\"http://hl7.org/fhir x.xsd\">\n"
			"  <contained><Patient><id value=\"c1\"/></Patient></contained>\n"
			"  <status value=\"final\"/><!-- between -->\n"
			"  <code id=\"c\"><text value=\" a &amp; b \"/></code>\n"
			"  <valueQuantity><value value=\"1.50\"/></valueQuantity>\n"
			"</Observation>",
			"{\"resourceType\":\"Observation\",\"contained\":[{\"resourceType\":"
			"\"Patient\",\"id\":\"c1\"}],\"status\":\"final\",\"code\":{\"id\":\"c\","
			"\"text\":\" a & b \"},\"valueQuantity\":{\"value\":1.50}}");
	/* The div comes back serialized; character references become characters. */
	xml_expect_json(
	    P_OPEN "<text><status value=\"generated\"/><div "
		   "xmlns=\"http://www.w3.org/1999/xhtml\">a&#8211;b &lt;<br></br></div>"
		   "</text>" P_CLOSE,
	    "{\"resourceType\":\"Patient\",\"text\":{\"status\":\"generated\",\"div\":"
	    "\"<div xmlns=\\\"http://www.w3.org/1999/xhtml\\\">a\u2013b &lt;<br/></div>\"}}");
}

static void
test_xml_read_errors(void **state)
{
	fhir_xml_limits_t lim = {0, 0};

	xml_parse_bad(P_OPEN "<name><foo value=\"x\"/></name>" P_CLOSE, NULL, -FG_EPARSE,
		      "line 1: unknown element 'foo'");
	xml_parse_bad(P_OPEN "\n<active value=\"yes\"/>" P_CLOSE, NULL, -FG_EPARSE,
		      "line 2: not a boolean value in 'active'");
	xml_parse_bad(P_OPEN "<multipleBirthInteger value=\"+2\"/>" P_CLOSE, NULL, -FG_EPARSE,
		      "not a number value");
	xml_parse_bad(P_OPEN "<gender value=\"male\"/><gender value=\"male\"/>" P_CLOSE, NULL,
		      -FG_EPARSE, "repeated element 'gender'");
	xml_parse_bad(P_OPEN "<gender value=\"male\" foo=\"1\"/>" P_CLOSE, NULL, -FG_EPARSE,
		      "unknown attribute 'foo'");
	xml_parse_bad(P_OPEN "<name id=\"1\" url=\"x\"/>" P_CLOSE, NULL, -FG_EPARSE,
		      "unknown attribute 'url'");
	xml_parse_bad(P_OPEN "<birthDate/>" P_CLOSE, NULL, -FG_EPARSE, "no value, id or extension");
	xml_parse_bad(P_OPEN "text" P_CLOSE, NULL, -FG_EPARSE, "unexpected text");
	xml_parse_bad(P_OPEN "<x:id xmlns:x=\"urn:x\" value=\"1\"/>" P_CLOSE, NULL, -FG_EPARSE,
		      "outside the FHIR namespace");
	xml_parse_bad("<Patient/>", NULL, -FG_EPARSE, "outside the FHIR namespace");
	xml_parse_bad("<HumanName xmlns=\"http://hl7.org/fhir\"/>", NULL, -FG_EPARSE,
		      "unknown resource type 'HumanName'");
	xml_parse_bad(P_OPEN "<contained/>" P_CLOSE, NULL, -FG_EPARSE, "no resource in");
	xml_parse_bad(P_OPEN "<text><status value=\"generated\"/><div>x</div></text>" P_CLOSE, NULL,
		      -FG_EPARSE, "narrative must be an xhtml div");
	xml_parse_bad(P_OPEN "<text><status value=\"generated\"/><h:div "
			     "xmlns:h=\"http://www.w3.org/1999/xhtml\">x</h:div></text>" P_CLOSE,
		      NULL, -FG_EPARSE, "must declare xmlns");
	xml_parse_bad(P_OPEN "\n  <active value=\"true\">" P_CLOSE, NULL, -FG_EPARSE,
		      "line 2, column");
	xml_parse_bad("", NULL, -FG_EPARSE, "");
	xml_parse_bad(P_OPEN "<active value=\"&bogus;\"/>" P_CLOSE, NULL, -FG_EPARSE,
		      "Entity 'bogus' not defined");

	/* Limits. */
	lim.max_depth = 3;
	xml_parse_bad(P_OPEN "<contact><name><period><start value=\"2000\"/></period></name>"
			     "</contact>" P_CLOSE,
		      &lim, -FG_ETOOBIG, "nesting too deep");
	lim.max_depth = 0;
	lim.max_bytes = 20;
	xml_parse_bad(P_OPEN P_CLOSE, &lim, -FG_ETOOBIG, "exceeds the limit of 20");
}

/* DOCTYPEs are refused outright: no internal subset, no external DTD, no entities. */
static void
test_xml_doctype(void **state)
{
	xml_parse_bad("<!DOCTYPE Patient [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>" P_OPEN
		      "<id value=\"&x;\"/>" P_CLOSE,
		      NULL, -FG_EPARSE, "DOCTYPE is not allowed");
	xml_parse_bad("<!DOCTYPE Patient SYSTEM \"http://127.0.0.1:1/x.dtd\">" P_OPEN P_CLOSE, NULL,
		      -FG_EPARSE, "DOCTYPE is not allowed");
	xml_parse_bad(
	    "<?xml version=\"1.0\"?>\n<!DOCTYPE lolz [<!ENTITY lol \"lol\">"
	    "<!ENTITY lol2 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">]>" P_OPEN
	    "<id value=\"&lol2;\"/>" P_CLOSE,
	    NULL, -FG_EPARSE, "DOCTYPE is not allowed");
	xml_parse_bad("<!DOCTYPE Patient>" P_OPEN P_CLOSE, NULL, -FG_EPARSE,
		      "DOCTYPE is not allowed");
}

static void
xml_write_bad(const char *json, const char *want)
{
	arena_t *a = arena_new(0);
	fhir_node_t *n = json_parse_ok(a, json);
	buf_t out = BUF_INIT;
	char err[256];

	assert_int_equal(buf_append_cstr(&out, "keep"), 0);
	assert_int_equal(fhir_xml_write(n, false, &out, err, sizeof(err)), -FG_EINVAL);
	assert_string_equal(out.data, "keep"); /* nothing half-written is left behind */
	if (strstr(err, want) == NULL)
		fail_msg("error for %s is \"%s\", wanted \"%s\"", json, err, want);
	buf_free(&out);
	arena_free(a);
}

static void
test_xml_write_errors(void **state)
{
	xml_write_bad("{\"resourceType\":\"Patient\",\"name\":[{\"family\":\"x\"},{\"foo\":1}]}",
		      "Patient.name[1]: unknown element 'foo'");
	xml_write_bad(
	    "{\"resourceType\":\"Patient\",\"contact\":[{\"name\":{\"_family\":{\"x\":1}}}]}",
	    "Patient.contact[0].name.family: a _ companion holds only id and extension");
	xml_write_bad("{\"resourceType\":\"Patient\",\"_name\":{}}", "unknown element '_name'");
	xml_write_bad("{\"resourceType\":\"Nope\"}", "unknown resourceType");
	xml_write_bad("{\"id\":\"x\"}", "unknown resourceType");
	xml_write_bad("{\"resourceType\":\"Patient\",\"active\":\"true\"}",
		      "Patient.active: expected a boolean");
	xml_write_bad("{\"resourceType\":\"Patient\",\"multipleBirthInteger\":\"2\"}",
		      "expected a number");
	xml_write_bad("{\"resourceType\":\"Patient\",\"gender\":1}", "expected a string");
	xml_write_bad("{\"resourceType\":\"Patient\",\"gender\":[\"male\"]}",
		      "expected one value, not an array");
	xml_write_bad("{\"resourceType\":\"Patient\",\"name\":{\"family\":\"x\"}}",
		      "Patient.name: expected an array");
	xml_write_bad("{\"resourceType\":\"Patient\",\"name\":[{\"given\":[\"a\"],\"_given\":[null,"
		      "null]}]}",
		      "differs in length");
	xml_write_bad("{\"resourceType\":\"Patient\",\"birthDate\":null}",
		      "a primitive needs a value");
	xml_write_bad("{\"resourceType\":\"Patient\",\"gender\":\"a\\u0001b\"}",
		      "a character XML cannot carry");
	xml_write_bad("{\"resourceType\":\"Patient\",\"extension\":[{\"url\":\"u\",\"_url\":{}}]}",
		      "'_url' cannot be written in XML");
	xml_write_bad("{\"resourceType\":\"Patient\",\"contained\":[{\"resourceType\":\"Patient\","
		      "\"bad\":true}]}",
		      "Patient.contained[0].Patient: unknown element 'bad'");
	{
		arena_t *a = arena_new(0);
		fhir_node_t *res = json_parse_ok(a, "{\"resourceType\":\"Patient\"}"), *o = res;
		buf_t out = BUF_INIT;
		char err[256];

		/* A built tree deeper than any parse allows is refused, not recursed into. */
		for (int i = 0; i < 300; i++) {
			fhir_node_t *ext = fhir_object_new(a), *arr = fhir_array_new(a);

			fhir_object_set_cstr(a, ext, "url", fhir_string_new(a, SLICE_LIT("u")));
			fhir_array_append(a, arr, ext);
			fhir_object_set_cstr(a, o, "extension", arr);
			o = ext;
		}
		assert_int_equal(fhir_xml_write(res, false, &out, err, sizeof(err)), -FG_EINVAL);
		if (strstr(err, "nesting too deep") == NULL)
			fail_msg("%s", err);
		if (strstr(err, "Patient.extension[0].extension[0].") != err)
			fail_msg("%s", err);
		buf_free(&out);
		arena_free(a);
	}
	/* The narrative must be one well-formed XHTML div: no injection through it. */
	xml_write_bad("{\"resourceType\":\"Patient\",\"text\":{\"status\":\"generated\",\"div\":"
		      "\"<div xmlns=\\\"http://www.w3.org/1999/xhtml\\\">x</div><script/>\"}}",
		      "Patient.text.div: the div is not well-formed XML");
	xml_write_bad("{\"resourceType\":\"Patient\",\"text\":{\"status\":\"generated\",\"div\":"
		      "\"</text><evil/><text><div>x</div>\"}}",
		      "must start with <div");
	xml_write_bad("{\"resourceType\":\"Patient\",\"text\":{\"status\":\"generated\",\"div\":"
		      "\"<div><p>x</div>\"}}",
		      "not well-formed");
	xml_write_bad("{\"resourceType\":\"Patient\",\"text\":{\"status\":\"generated\",\"div\":"
		      "\"<div xmlns=\\\"urn:x\\\">x</div>\"}}",
		      "not in the XHTML namespace");
	xml_write_bad("{\"resourceType\":\"Patient\",\"text\":{\"status\":\"generated\",\"div\":"
		      "\"<div>&x;</div>\"}}",
		      "not well-formed");
	xml_write_bad("{\"resourceType\":\"Patient\",\"text\":{\"status\":\"generated\",\"div\":"
		      "\"<div xmlns=\\\"\\\">x</div>\"}}",
		      "not in the XHTML namespace");
	xml_write_bad("{\"resourceType\":\"Patient\",\"birthDate\":null,\"_birthDate\":{"
		      "\"extension\":[]}}",
		      "a primitive needs a value");
}

/* Members in any order come out in R4 element order, a value beside its companion. */
static void
test_xml_write_order(void **state)
{
	arena_t *a = arena_new(0);
	fhir_node_t *x = json_parse_ok(
	    a, "{\"_birthDate\":{\"id\":\"b\"},\"deceasedBoolean\":false,\"gender\":\"male\","
	       "\"contained\":[{\"name\":[{\"family\":\"C\"}],\"id\":\"c\",\"resourceType\":"
	       "\"Practitioner\"}],\"name\":[{\"given\":[\"A\"],\"family\":\"B\"}],"
	       "\"resourceType\":\"Patient\",\"birthDate\":\"1970\",\"active\":true,\"id\":\"x\"}");
	buf_t out = BUF_INIT;
	char err[256];

	assert_int_equal(fhir_xml_write(x, false, &out, err, sizeof(err)), 0);
	assert_string_equal(out.data,
			    P_OPEN "<id value=\"x\"/><contained><Practitioner><id "
				   "value=\"c\"/><name><family value=\"C\"/></name>"
				   "</Practitioner></contained><active value=\"true\"/>"
				   "<name><family value=\"B\"/><given value=\"A\"/></name>"
				   "<gender value=\"male\"/><birthDate id=\"b\" "
				   "value=\"1970\"/><deceasedBoolean value=\"false\"/>" P_CLOSE);
	xml_assert_valid("order", &out);
	buf_free(&out);
	arena_free(a);
}

/* Strings that XML would otherwise fold or break survive the round trip. */
static void
test_xml_write_escapes(void **state)
{
	arena_t *a = arena_new(0);
	fhir_node_t *x = json_parse_ok(
	    a, "{\"resourceType\":\"Patient\",\"text\":{\"status\":\"generated\",\"div\":"
	       "\"<div>no namespace &amp; <b>bold</b></div>\"},\"name\":[{\"family\":"
	       "\"<&>\\\"'\\t\\n\\r\xc3\xa9\xf0\x9f\x98\x80 ]]>\"}]}");
	fhir_node_t *y;
	buf_t out = BUF_INIT;
	char err[256];

	assert_int_equal(fhir_xml_write(x, false, &out, err, sizeof(err)), 0);
	assert_non_null(strstr(out.data, "<family value=\"&lt;&amp;&gt;&quot;'&#9;&#10;&#13;"
					 "\xc3\xa9\xf0\x9f\x98\x80 ]]&gt;\"/>"));
	assert_non_null(strstr(out.data, "<div xmlns=\"http://www.w3.org/1999/xhtml\">no namespace "
					 "&amp; <b>bold</b></div>"));
	xml_assert_valid("escapes", &out);
	assert_int_equal(fhir_xml_parse(a, out.data, out.len, NULL, &y, err, sizeof(err)), 0);
	assert_slice_equal(fhir_node_text(fhir_object_get_cstr(
			       fhir_array_at(fhir_object_get_cstr(y, "name"), 0), "family")),
			   "<&>\"'\t\n\r\xc3\xa9\xf0\x9f\x98\x80 ]]>");
	assert_slice_equal(
	    fhir_node_text(fhir_object_get_cstr(fhir_object_get_cstr(y, "text"), "div")),
	    "<div xmlns=\"http://www.w3.org/1999/xhtml\">no namespace &amp; "
	    "<b>bold</b></div>");
	buf_free(&out);
	arena_free(a);
}

/* ---- validation ---- */

static void
test_validate_primitives(void **state)
{
	static const struct {
		const char *type, *text;
		bool ok;
	} cases[] = {
	    {"date", "1970", true},
	    {"date", "1970-05", true},
	    {"date", "1970-05-06", true},
	    {"date", "0000", false},
	    {"date", "1970-13", false},
	    {"date", "1970-05-32", false},
	    {"date", "1970-04-31", false},
	    {"date", "2023-02-29", false},
	    {"date", "2024-02-29", true},
	    {"date", "2000-02-29", true},
	    {"date", "1900-02-29", false},
	    {"date", "1970-12-31", true},
	    {"date", "1970-5-6", false},
	    {"date", "1970-05-06T10:00:00Z", false},
	    {"date", "19700506", false},
	    {"dateTime", "2024-03-01T10:20:30Z", true},
	    {"dateTime", "2024-03-01T10:20:30.123+05:30", true},
	    {"dateTime", "2024-03-01T10:20:30-14:00", true},
	    {"dateTime", "2024-03-01T23:59:60+14:00", true},
	    {"dateTime", "2024-03", true},
	    {"dateTime", "2024-03-01T10:20:30", false}, /* a time needs its zone */
	    {"dateTime", "2024-03-01T10:20Z", false},   /* and its seconds */
	    {"dateTime", "2024-03-01T24:00:00Z", false},
	    {"dateTime", "2024-03-01T10:20:30+14:30", false},
	    {"dateTime", "2024-03-01T10:20:30.Z", false},
	    {"dateTime", "2024-03T10:20:30Z", false},
	    {"dateTime", "2024-03-01 10:20:30Z", false},
	    {"instant", "2024-03-01T10:20:30.5Z", true},
	    {"instant", "2024-03-01", false},
	    {"instant", "2024-03-01T10:20:30", false},
	    {"time", "10:20:30", true},
	    {"time", "10:20:30.25", true},
	    {"time", "10:20", false},
	    {"time", "25:00:00", false},
	    {"integer", "0", true},
	    {"integer", "-2147483648", true},
	    {"integer", "2147483647", true},
	    {"integer", "2147483648", false},
	    {"integer", "-0", false},
	    {"integer", "007", false},
	    {"integer", "1.0", false},
	    {"integer", "1e3", false},
	    {"positiveInt", "1", true},
	    {"positiveInt", "0", false},
	    {"positiveInt", "-1", false},
	    {"unsignedInt", "0", true},
	    {"unsignedInt", "99999999999", false},
	    {"decimal", "0", true},
	    {"decimal", "-1.50", true},
	    {"decimal", "6.02e23", true},
	    {"decimal", "1E-3", true},
	    {"decimal", "01.5", false},
	    {"decimal", "1.", false},
	    {"decimal", ".5", false},
	    {"decimal", "1e", false},
	    {"id", "a-Z.09", true},
	    {"id", "a_b", false},
	    {"id", "0123456789012345678901234567890123456789012345678901234567890123", true},
	    {"id", "01234567890123456789012345678901234567890123456789012345678901234", false},
	    {"code", "final", true},
	    {"code", "two words", true},
	    {"code", " lead", false},
	    {"code", "trail ", false},
	    {"code", "two  spaces", false},
	    {"uri", "http://loinc.org", true},
	    {"uri", "urn:oid:1.2", true},
	    {"uri", "http://a b", false},
	    {"url", "http://x\ty", false},
	    {"canonical", "http://hl7.org/fhir/StructureDefinition/Patient|4.0.1", true},
	    {"oid", "urn:oid:2.16.840.1.113883", true},
	    {"oid", "urn:oid:3.1", false},
	    {"oid", "urn:oid:1.02", false},
	    {"oid", "urn:oid:1", false},
	    {"uuid", "urn:uuid:c757873d-ec9a-4326-a141-556f43239520", true},
	    {"uuid", "urn:uuid:C757873D-EC9A-4326-A141-556F43239520", false},
	    {"uuid", "c757873d-ec9a-4326-a141-556f43239520", false},
	    {"base64Binary", "aGVsbG8=", true},
	    {"base64Binary", "aGVs\nbG8h", true},
	    {"base64Binary", "aGVsbG8", false},
	    {"base64Binary", "aGV=bG8=", false},
	    {"base64Binary", "aGVs*G8=", false},
	    {"string", "Jo\tDoe\r\n", true},
	    {"string", "caf\xc3\xa9", true},
	    {"string", "a\x01z", false},
	    {"string", "a\x7fz", true},
	    {"string", "\xe0\x82\xac", false}, /* overlong */
	    {"string", "\xed\xa0\x80", false}, /* a surrogate */
	    {"string", "\xef\xbf\xbf", false}, /* U+FFFF */
	    {"string", "\xc3", false},         /* cut short */
	    {"string", "\xf0\x9f\x98\x80", true},
	    {"markdown", "a\x02", false},
	    {"code", "a\x0b", false},
	    {"boolean", "anything", true}, /* JSON true/false: the walk checks the kind */
	    {"xhtml", "<div>x</div>", true},
	    {"xhtml", "<div>\x01</div>", false},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *p = fhir_primitive_problem(cases[i].type, slice_cstr(cases[i].text));

		if ((p == NULL) != cases[i].ok)
			fail_msg("%s '%s': %s", cases[i].type, cases[i].text,
				 p != NULL ? p : "accepted");
	}
}

/* The issues fhir_validate finds in json, as "kind path: what" lines. */
static char *
validate_lines(arena_t *a, const char *json, unsigned flags, size_t max, size_t *n)
{
	fhir_node_t *doc;
	fhir_issue_t is[16];
	char err[256];
	buf_t out = BUF_INIT;
	char *s;

	assert_true(max <= 16);
	if (fhir_json_parse(a, json, strlen(json), NULL, &doc, err, sizeof(err)) != 0)
		fail_msg("%s", err);
	*n = fhir_validate(a, doc, flags, is, max);
	for (size_t i = 0; i < *n; i++)
		buf_printf(&out, "%d %s: %s\n", (int)is[i].kind, is[i].path, is[i].what);
	s = arena_strndup(a, out.data != NULL ? out.data : "", out.len);
	buf_free(&out);
	return s;
}

static void
test_validate_tree(void **state)
{
	arena_t *a = arena_new(0);
	const char *bad =
	    "{\"resourceType\":\"Bundle\",\"type\":\"collection\",\"entry\":["
	    "{\"resource\":{\"resourceType\":\"Observation\",\"valueQuantity\":{\"value\":1.0}}},"
	    "{\"resource\":{\"resourceType\":\"MedicationRequest\",\"status\":\"active\","
	    "\"intent\":\"order\",\"subject\":{\"reference\":\"Patient/1\"},"
	    "\"authoredOn\":\"2020-13-01\"}},"
	    "{\"resource\":{\"resourceType\":\"Patient\",\"birthDate\":\"1970\","
	    "\"_birthDate\":{\"extension\":[{\"url\":\"a b\"}]},\"name\":[{\"given\":[\"Jo\","
	    "\"a\\u0001\"]}],\"colour\":\"red\",\"multipleBirthInteger\":-1.5}}]}";
	size_t n;
	char *got;

	(void)state;
	got = validate_lines(a, bad, FHIR_VALIDATE_REQUIRED, 16, &n);
	assert_string_equal(got,
			    "2 Bundle.entry[0].resource.status: required\n"
			    "2 Bundle.entry[0].resource.code: required\n"
			    "1 Bundle.entry[1].resource.authoredOn: not a valid dateTime (YYYY, "
			    "YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm:ss[.f] with Z or +hh:mm)\n"
			    "2 Bundle.entry[1].resource.medication[x]: one of the choice is "
			    "required\n"
			    "1 Bundle.entry[2].resource._birthDate.extension[0].url: not a valid "
			    "uri (no whitespace)\n"
			    "1 Bundle.entry[2].resource.name[0].given[1]: not UTF-8, or "
			    "characters XML cannot carry (control characters other than tab, CR "
			    "and LF)\n"
			    "0 Bundle.entry[2].resource.colour: unknown element\n"
			    "1 Bundle.entry[2].resource.multipleBirthInteger: not a valid integer "
			    "(a whole number of 32 bits)\n");
	assert_int_equal(n, 8);
	/* without required elements; stopping at the first */
	got = validate_lines(a, bad, 0, 16, &n);
	assert_int_equal(n, 5);
	got = validate_lines(a, bad, FHIR_VALIDATE_REQUIRED, 1, &n);
	assert_int_equal(n, 1);
	assert_string_equal(got, "2 Bundle.entry[0].resource.status: required\n");
	got = validate_lines(a, bad, 0, 1, &n);
	assert_string_equal(got, "1 Bundle.entry[1].resource.authoredOn: not a valid dateTime "
				 "(YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm:ss[.f] with Z or "
				 "+hh:mm)\n");
	/* a required primitive given by its extension alone; one member of a required choice */
	got =
	    validate_lines(a,
			   "{\"resourceType\":\"Observation\",\"_status\":{\"extension\":[{"
			   "\"url\":\"http://x\",\"valueCode\":\"u\"}]},\"code\":{\"text\":\"t\"}}",
			   FHIR_VALIDATE_REQUIRED, 16, &n);
	assert_int_equal(n, 0);
	got = validate_lines(a,
			     "{\"resourceType\":\"MedicationRequest\",\"status\":\"active\","
			     "\"intent\":\"order\",\"subject\":{\"reference\":\"Patient/1\"},"
			     "\"medicationReference\":{\"reference\":\"Medication/m\"}}",
			     FHIR_VALIDATE_REQUIRED, 16, &n);
	assert_int_equal(n, 0);
	/* a primitive's value and its _ companion, as the XML writer needs them */
	got = validate_lines(
	    a,
	    "{\"resourceType\":\"Patient\",\"name\":[{\"given\":[null,\"x\"],\"_given\":[{"
	    "\"extension\":[{\"url\":\"http://u\",\"valueString\":\"s\"}]},null]},{\"given\":["
	    "null]},{\"given\":[\"a\"],\"_given\":[null,{\"id\":\"i\"}]},{\"_family\":{}}],"
	    "\"_birthDate\":{\"id\":\"b\"},\"contact\":[{}],\"gender\":null}",
	    0, 16, &n);
	assert_string_equal(got,
			    "0 Patient.name[1].given[0]: a primitive needs a value or "
			    "extensions\n"
			    "0 Patient.name[2].given: the value and _ companion arrays differ "
			    "in length\n"
			    "0 Patient.name[3].family: a primitive needs a value or extensions\n"
			    "0 Patient.contact[0]: an empty object (an element needs a value or "
			    "children)\n"
			    "0 Patient.gender: null\n");
	got = validate_lines(a, "[]", 0, 16, &n);
	assert_string_equal(got, "0 : a resource must be a JSON object\n");
	got = validate_lines(a, "{\"resourceType\":\"Nope\"}", 0, 16, &n);
	assert_string_equal(got, "0 : unknown or missing resourceType\n");
	/* the R4 examples have nothing to report */
	for (size_t i = 0; i < NEXAMPLES; i++) {
		buf_t in;

		data_read(examples[i], &in);
		buf_append_byte(&in, '\0');
		got = validate_lines(a, in.data, FHIR_VALIDATE_REQUIRED, 16, &n);
		if (n != 0)
			fail_msg("%s:\n%s", examples[i], got);
		buf_free(&in);
	}
	arena_free(a);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_tree_object),
	    cmocka_unit_test(test_tree_object_large),
	    cmocka_unit_test(test_tree_object_insert),
	    cmocka_unit_test(test_tree_object_interned),
	    cmocka_unit_test(test_tree_dedupe),
	    cmocka_unit_test(test_tree_dedupe_prune),
	    cmocka_unit_test(test_tree_array),
	    cmocka_unit_test(test_tree_clone_equal),
	    cmocka_unit_test(test_tree_prune),
	    cmocka_unit_test(test_meta_patient_order),
	    cmocka_unit_test(test_meta_flags),
	    cmocka_unit_test(test_meta_backbone_path),
	    cmocka_unit_test(test_meta_searchparams),
	    cmocka_unit_test(test_meta_counts),
	    cmocka_unit_test(test_json_examples_roundtrip),
	    cmocka_unit_test(test_json_numbers),
	    cmocka_unit_test(test_json_strings),
	    cmocka_unit_test(test_json_limits),
	    cmocka_unit_test(test_json_malformed),
	    cmocka_unit_test(test_xml_schema_rejects),
	    cmocka_unit_test(test_xml_examples_roundtrip),
	    cmocka_unit_test(test_xml_read),
	    cmocka_unit_test(test_xml_read_errors),
	    cmocka_unit_test(test_xml_doctype),
	    cmocka_unit_test(test_xml_write_errors),
	    cmocka_unit_test(test_xml_write_order),
	    cmocka_unit_test(test_xml_write_escapes),
	    cmocka_unit_test(test_validate_primitives),
	    cmocka_unit_test(test_validate_tree),
	};

	return cmocka_run_group_tests_name("fhir", tests, xml_group_setup, xml_group_teardown);
}
