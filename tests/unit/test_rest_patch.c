/* Unit tests for FHIRPath Patch (gateway/rest_fhirpatch.c): each operation type, primitive
 * companions kept aligned, type checks, and the refusals (malformed patches, unsupported
 * FHIRPath, paths that name the wrong number of elements). JSON in the fixtures is written
 * with ' for " to keep it readable. */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fhir/json.h"
#include "gateway/rest_int.h"
#include "lib/arena.h"
#include "lib/buf.h"

static const char patient[] =
    "{'resourceType':'Patient','id':'p1',"
    "'extension':[{'url':'http://x','valueString':'v'}],"
    "'identifier':[{'system':'urn:a','value':'1'},{'system':'urn:b','value':'2'}],"
    "'name':[{'family':'Doe','given':['A','B'],"
    "'_given':[null,{'extension':[{'url':'u','valueString':'x'}]}]}],"
    "'gender':'female',"
    "'telecom':[{'system':'phone','value':'1'},{'system':'email','value':'e'}],"
    "'contact':[{'name':{'family':'C'}}]}";

typedef struct {
	const char *type, *path;
	const char *parts; /* further parts, JSON with ' for ": "{'name':'value',...}" */
} op_t;

/* text with every ' made a " (JSON strings here hold no '). */
static void
unquote(buf_t *out, const char *text)
{
	for (const char *p = text; *p; p++)
		buf_append_byte(out, *p == '\'' ? '"' : *p);
}

static fhir_node_t *
parse(arena_t *a, const char *json)
{
	fhir_node_t *n = NULL;
	char err[128];

	assert_int_equal(fhir_json_parse(a, json, strlen(json), NULL, &n, err, sizeof(err)), 0);
	return n;
}

/* Applies the operations to doc (patient when NULL); the status, and in out the result (' for
 * ") or the message. */
static int
apply(const char *doc, const op_t *ops, size_t nops, char *out, size_t cap)
{
	arena_t *a = arena_new(0);
	buf_t d = BUF_INIT, p = BUF_INIT, res = BUF_INIT;
	fhir_node_t *res_node;
	int st;

	unquote(&d, doc != NULL ? doc : patient);
	buf_append_cstr(&p, "{\"resourceType\":\"Parameters\",\"parameter\":[");
	for (size_t i = 0; i < nops; i++) {
		buf_printf(&p, "%s{\"name\":\"operation\",\"part\":[", i ? "," : "");
		buf_printf(&p, "{\"name\":\"type\",\"valueCode\":\"%s\"}", ops[i].type);
		if (ops[i].path != NULL) {
			buf_append_cstr(&p, ",{\"name\":\"path\",\"valueString\":");
			fhir_json_string_write(slice_cstr(ops[i].path), &p);
			buf_append_cstr(&p, "}");
		}
		if (ops[i].parts != NULL) {
			buf_append_byte(&p, ',');
			unquote(&p, ops[i].parts);
		}
		buf_append_cstr(&p, "]}");
	}
	buf_append_cstr(&p, "]}");
	buf_append_byte(&d, '\0');
	buf_append_byte(&p, '\0');
	res_node = parse(a, d.data);
	out[0] = '\0';
	st = rest_fhirpath_patch(a, res_node, parse(a, p.data), out, cap);
	if (st == 0) {
		assert_int_equal(fhir_json_write(res_node, false, &res), 0);
		for (size_t i = 0; i < res.len; i++)
			if (res.data[i] == '"')
				res.data[i] = '\'';
		snprintf(out, cap, "%.*s", (int)res.len, res.data);
	}
	buf_free(&d);
	buf_free(&p);
	buf_free(&res);
	arena_free(a);
	return st;
}

static int
apply1(const char *type, const char *path, const char *parts, char *out, size_t cap)
{
	op_t op = {type, path, parts};

	return apply(NULL, &op, 1, out, cap);
}

/* The member of the result for the assertions: out from "'key':" to the end of the value. */
static const char *
member(const char *out, const char *key)
{
	char k[64];

	snprintf(k, sizeof(k), "'%s':", key);
	return strstr(out, k);
}

static void
assert_has(const char *out, const char *want)
{
	if (strstr(out, want) == NULL)
		fail_msg("'%s' not in '%s'", want, out);
}

static void
test_add(void **state)
{
	char out[2048];

	(void)state;
	assert_int_equal(apply1("add", "Patient",
				"{'name':'name','valueString':'birthDate'},"
				"{'name':'value','valueDate':'1930-01-02'}",
				out, sizeof(out)),
			 0);
	assert_has(out, "'birthDate':'1930-01-02'");
	/* A list gets it at its end, a primitive's companion list a null beside it. */
	assert_int_equal(apply1("add", "Patient.name[0]",
				"{'name':'name','valueString':'given'},"
				"{'name':'value','valueString':'C'}",
				out, sizeof(out)),
			 0);
	assert_has(out, "'given':['A','B','C'],'_given':[null,{'extension':[{'url':'u',"
			"'valueString':'x'}]},null]");
	/* Every element the path names. */
	assert_int_equal(apply1("add", "Patient.identifier",
				"{'name':'name','valueString':'use'},"
				"{'name':'value','valueCode':'official'}",
				out, sizeof(out)),
			 0);
	assert_has(out, "[{'system':'urn:a','value':'1','use':'official'},{'system':'urn:b',"
			"'value':'2','use':'official'}]");
	/* A choice by its base name: the value's type picks the expansion. */
	assert_int_equal(apply1("add", "Patient",
				"{'name':'name','valueString':'deceased'},"
				"{'name':'value','valueBoolean':true}",
				out, sizeof(out)),
			 0);
	assert_has(out, "'deceasedBoolean':true");
	/* A backbone element from parts. */
	assert_int_equal(apply1("add", "Patient",
				"{'name':'name','valueString':'contact'},"
				"{'name':'value','part':[{'name':'name','valueHumanName':"
				"{'family':'E'}},{'name':'gender','valueCode':'male'}]}",
				out, sizeof(out)),
			 0);
	assert_has(out, "'contact':[{'name':{'family':'C'}},{'name':{'family':'E'},"
			"'gender':'male'}]");
	/* A primitive takes the JSON kind of the element's type. */
	assert_int_equal(apply1("add", "Patient",
				"{'name':'name','valueString':'active'},"
				"{'name':'value','valueString':'true'}",
				out, sizeof(out)),
			 0);
	assert_has(out, "'active':true");
	assert_int_equal(apply1("add", "Patient",
				"{'name':'name','valueString':'active'},"
				"{'name':'value','valueString':'yes'}",
				out, sizeof(out)),
			 422);
	assert_has(out, "not a valid boolean");
	/* Not twice, not to nothing, not an unknown element. */
	assert_int_equal(apply1("add", "Patient",
				"{'name':'name','valueString':'gender'},"
				"{'name':'value','valueCode':'male'}",
				out, sizeof(out)),
			 422);
	assert_has(out, "Patient.gender is there already");
	assert_int_equal(apply1("add", "Patient.name[3]",
				"{'name':'name','valueString':'given'},"
				"{'name':'value','valueString':'C'}",
				out, sizeof(out)),
			 422);
	assert_has(out, "matches 0 elements");
	assert_int_equal(apply1("add", "Patient",
				"{'name':'name','valueString':'nickname'},"
				"{'name':'value','valueString':'C'}",
				out, sizeof(out)),
			 422);
	assert_has(out, "Patient has no element 'nickname'");
	assert_int_equal(
	    apply1("add", "Patient", "{'name':'value','valueString':'C'}", out, sizeof(out)), 400);
	/* A choice inside a backbone value: one of its types, once. */
	{
		static const char obs[] = "{'resourceType':'Observation','id':'o','status':"
					  "'final','code':{'text':'c'}}";
		op_t ops[] = {{"add", "Observation",
			       "{'name':'name','valueString':'component'},"
			       "{'name':'value','part':[{'name':'code','valueCodeableConcept':"
			       "{'text':'a'}},{'name':'value','valueString':'x'}]}"},
			      {"replace", "Observation.component.where(code.text = 'a').value",
			       "{'name':'value','valueQuantity':{'value':1.5,'unit':'mg'}}"}};

		assert_int_equal(apply(obs, ops, 2, out, sizeof(out)), 0);
		assert_has(out, "'component':[{'code':{'text':'a'},'valueQuantity':{'value':1.5,"
				"'unit':'mg'}}]");
		ops[0].parts = "{'name':'name','valueString':'component'},"
			       "{'name':'value','part':[{'name':'value','valueString':'x'},"
			       "{'name':'value','valueBoolean':true}]}";
		assert_int_equal(apply(obs, ops, 1, out, sizeof(out)), 422);
		assert_has(out, "valueBoolean more than once");
	}
}

static void
test_insert(void **state)
{
	char out[2048];

	(void)state;
	assert_int_equal(apply1("insert", "Patient.identifier",
				"{'name':'index','valueInteger':0},"
				"{'name':'value','valueIdentifier':{'system':'urn:c','value':'3'}}",
				out, sizeof(out)),
			 0);
	assert_has(out, "'identifier':[{'system':'urn:c','value':'3'},{'system':'urn:a'");
	/* Into a primitive list: the companions stay aligned. */
	assert_int_equal(apply1("insert", "Patient.name.given",
				"{'name':'index','valueInteger':1},"
				"{'name':'value','valueString':'Z'}",
				out, sizeof(out)),
			 0);
	assert_has(out, "'given':['A','Z','B'],'_given':[null,null,{'extension'");
	/* At the end (the index may equal the length); into a list that is not there yet. */
	assert_int_equal(apply1("insert", "Patient.telecom",
				"{'name':'index','valueInteger':2},"
				"{'name':'value','valueContactPoint':{'system':'fax','value':'3'}}",
				out, sizeof(out)),
			 0);
	assert_has(out, "{'system':'email','value':'e'},{'system':'fax','value':'3'}]");
	assert_int_equal(apply1("insert", "Patient.address",
				"{'name':'index','valueInteger':0},"
				"{'name':'value','valueAddress':{'city':'X'}}",
				out, sizeof(out)),
			 0);
	assert_has(out, "'address':[{'city':'X'}]");
	assert_int_equal(apply1("insert", "Patient.identifier",
				"{'name':'index','valueInteger':3},"
				"{'name':'value','valueIdentifier':{'value':'3'}}",
				out, sizeof(out)),
			 422);
	assert_has(out, "past the end");
	assert_int_equal(apply1("insert", "Patient.gender",
				"{'name':'index','valueInteger':0},"
				"{'name':'value','valueCode':'male'}",
				out, sizeof(out)),
			 422);
	assert_has(out, "Patient.gender is not a list");
	assert_int_equal(apply1("insert", "Patient.identifier.where(system='urn:a')",
				"{'name':'index','valueInteger':0},"
				"{'name':'value','valueIdentifier':{'value':'3'}}",
				out, sizeof(out)),
			 422);
	assert_has(out, "must end with the name of a list");
	assert_int_equal(apply1("insert", "Patient.identifier",
				"{'name':'value','valueIdentifier':{'value':'3'}}", out,
				sizeof(out)),
			 400);
	assert_int_equal(apply1("insert", "Patient.identifier",
				"{'name':'index','valueInteger':0},"
				"{'name':'value','valueHumanName':{'family':'X'}}",
				out, sizeof(out)),
			 422);
	assert_has(out, "Patient.identifier is of type Identifier, the value of type HumanName");
}

static void
test_delete(void **state)
{
	char out[2048];

	(void)state;
	assert_int_equal(
	    apply1("delete", "Patient.identifier.where(system = 'urn:b')", NULL, out, sizeof(out)),
	    0);
	assert_has(out, "'identifier':[{'system':'urn:a','value':'1'}],");
	/* A primitive list item goes with its companion; the companions left are all null. */
	assert_int_equal(apply1("delete", "Patient.name[0].given[1]", NULL, out, sizeof(out)), 0);
	assert_has(out, "'given':['A']}]");
	assert_null(member(out, "_given"));
	assert_int_equal(apply1("delete", "Patient.name.given.first()", NULL, out, sizeof(out)), 0);
	assert_has(out, "'given':['B'],'_given':[{'extension'");
	/* What the delete leaves empty goes too. */
	assert_int_equal(
	    apply1("delete", "Patient.contact.where(name.family='C').name", NULL, out, sizeof(out)),
	    0);
	assert_null(member(out, "contact"));
	assert_int_equal(apply1("delete", "Patient.extension('http://x')", NULL, out, sizeof(out)),
			 0);
	assert_null(strstr(out, "http://x"));
	assert_has(out, "{'resourceType':'Patient','id':'p1','identifier'");
	/* Nothing there: nothing to do. */
	assert_int_equal(apply1("delete", "Patient.birthDate", NULL, out, sizeof(out)), 0);
	assert_int_equal(
	    apply1("delete", "Patient.identifier.where(system='urn:none')", NULL, out, sizeof(out)),
	    0);
	assert_has(out, "'system':'urn:b'");
	assert_int_equal(apply1("delete", "Patient.identifier", NULL, out, sizeof(out)), 422);
	assert_has(out, "matches 2 elements; delete removes one");
	assert_int_equal(apply1("delete", "Patient", NULL, out, sizeof(out)), 422);
}

static void
test_replace(void **state)
{
	char out[2048];

	(void)state;
	assert_int_equal(apply1("replace", "Patient.telecom.where(system='phone').value",
				"{'name':'value','valueString':'555'}", out, sizeof(out)),
			 0);
	assert_has(out, "{'system':'phone','value':'555'}");
	/* A primitive keeps its extensions. */
	assert_int_equal(apply1("replace", "Patient.name[0].given.last()",
				"{'name':'value','valueString':'Q'}", out, sizeof(out)),
			 0);
	assert_has(out, "'given':['A','Q'],'_given':[null,{'extension'");
	/* A choice may change its type. */
	{
		op_t ops[] = {{"add", "Patient",
			       "{'name':'name','valueString':'deceased'},"
			       "{'name':'value','valueBoolean':true}"},
			      {"replace", "Patient.deceased",
			       "{'name':'value','valueDateTime':'2020-01-01'}"}};

		assert_int_equal(apply(NULL, ops, 2, out, sizeof(out)), 0);
		assert_has(out, "'deceasedDateTime':'2020-01-01'");
		assert_null(member(out, "deceasedBoolean"));
	}
	assert_int_equal(apply1("replace", "Patient.name[0]",
				"{'name':'value','valueHumanName':{'family':'New'}}", out,
				sizeof(out)),
			 0);
	assert_has(out, "'name':[{'family':'New'}]");
	assert_int_equal(apply1("replace", "Patient.name[0]",
				"{'name':'value','valueIdentifier':{'value':'1'}}", out,
				sizeof(out)),
			 422);
	assert_has(out, "Patient.name is of type HumanName");
	assert_int_equal(apply1("replace", "Patient.birthDate",
				"{'name':'value','valueDate':'2000-01-01'}", out, sizeof(out)),
			 422);
	assert_has(out, "matches 0 elements; replace needs exactly one");
	assert_int_equal(apply1("replace", "Patient.telecom.value",
				"{'name':'value','valueString':'1'}", out, sizeof(out)),
			 422);
	assert_has(out, "matches 2 elements");
	assert_int_equal(apply1("replace", "Patient.gender", NULL, out, sizeof(out)), 400);
}

static void
test_move(void **state)
{
	char out[2048];

	(void)state;
	assert_int_equal(apply1("move", "Patient.telecom",
				"{'name':'source','valueInteger':1},"
				"{'name':'destination','valueInteger':0}",
				out, sizeof(out)),
			 0);
	assert_has(out, "'telecom':[{'system':'email','value':'e'},{'system':'phone'");
	assert_int_equal(apply1("move", "Patient.name.given",
				"{'name':'source','valueInteger':0},"
				"{'name':'destination','valueInteger':1}",
				out, sizeof(out)),
			 0);
	assert_has(out, "'given':['B','A'],'_given':[{'extension':[{'url':'u','valueString':"
			"'x'}]},null]");
	assert_int_equal(apply1("move", "Patient.telecom",
				"{'name':'source','valueInteger':0},"
				"{'name':'destination','valueInteger':2}",
				out, sizeof(out)),
			 422);
	assert_int_equal(apply1("move", "Patient.telecom", "{'name':'source','valueInteger':0}",
				out, sizeof(out)),
			 400);
}

static void
test_refused(void **state)
{
	static const struct {
		const char *path;
		int status;
		const char *says;
	} paths[] = {
	    {"Patient.name.exists()", 422, "the function exists() is not supported"},
	    {"Patient.name | Patient.telecom", 422, "the operator '|' is not supported"},
	    {"Patient.name.where(family != 'Doe')", 422, "the operator '!=' is not supported"},
	    {"Patient.name.where(family = 'Doe' or family = 'X')", 422, "'or' in where()"},
	    {"Patient.name.where(given.count() = 1)", 422, "count() in where()"},
	    {"Patient.name.where($this = 'x')", 422, "the variable $this is not supported"},
	    {"Patient.name as HumanName", 422, "'as' is not supported"},
	    {"Observation.status", 422, "the path starts at Observation"},
	    {"Patient.nickname", 422, "Patient has no element 'nickname'"},
	    {"Patient.gender.extension", 422, "is a primitive"},
	    {"Patient..name", 400, "syntax error at column 9"},
	    {"Patient.name.where(family = 'Doe'", 400, "ends early"},
	    {"Patient.name.where(family = 'Doe)", 400, "not closed"},
	    {"Patient.name[", 422, "an index is a number"},
	    {"", 400, "empty string"},
	};
	char out[2048];

	(void)state;
	for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
		int st = apply1("delete", paths[i].path, NULL, out, sizeof(out));

		if (st != paths[i].status || strstr(out, paths[i].says) == NULL)
			fail_msg("%s: %d '%s'", paths[i].path, st, out);
	}
	assert_int_equal(apply1("remove", "Patient.gender", NULL, out, sizeof(out)), 400);
	assert_has(out, "operation 0 (remove): unknown type");
	assert_int_equal(apply1("delete", NULL, NULL, out, sizeof(out)), 400);
	assert_int_equal(apply1("delete", "Patient.gender", "{'name':'bogus','valueString':'x'}",
				out, sizeof(out)),
			 400);
	assert_has(out, "unknown part 'bogus'");
	{
		arena_t *a = arena_new(0);
		char err[256];
		fhir_node_t *doc = parse(a, "{\"resourceType\":\"Patient\"}");

		assert_int_equal(rest_fhirpath_patch(a, doc,
						     parse(a, "{\"resourceType\":\"Patient\"}"),
						     err, sizeof(err)),
				 400);
		assert_int_equal(
		    rest_fhirpath_patch(a, doc,
					parse(a, "{\"resourceType\":\"Parameters\",\"parameter\":"
						 "[{\"name\":\"op\"}]}"),
					err, sizeof(err)),
		    400);
		assert_int_equal(
		    rest_fhirpath_patch(a, doc,
					parse(a, "{\"resourceType\":\"Parameters\",\"parameter\":"
						 "[{\"name\":\"operation\",\"bogus\":1}]}"),
					err, sizeof(err)),
		    400);
		arena_free(a);
	}
}

/* Operations apply in order, each to what the one before left. */
static void
test_sequence(void **state)
{
	op_t ops[] = {
	    {"insert", "Patient.identifier",
	     "{'name':'index','valueInteger':0},{'name':'value','valueIdentifier':{'value':'0'}}"},
	    {"replace", "Patient.identifier[0].value", "{'name':'value','valueString':'00'}"},
	    {"move", "Patient.identifier",
	     "{'name':'source','valueInteger':0},{'name':'destination','valueInteger':2}"},
	    {"delete", "Patient.identifier.where(system='urn:a')", NULL},
	};
	char out[2048];

	(void)state;
	assert_int_equal(apply(NULL, ops, 4, out, sizeof(out)), 0);
	assert_has(out, "'identifier':[{'system':'urn:b','value':'2'},{'value':'00'}]");
	/* The first failure is the answer, naming its operation. */
	ops[3].path = "Patient.identifier";
	assert_int_equal(apply(NULL, ops, 4, out, sizeof(out)), 422);
	assert_has(out, "operation 3 (delete)");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_add),      cmocka_unit_test(test_insert),
	    cmocka_unit_test(test_delete),   cmocka_unit_test(test_replace),
	    cmocka_unit_test(test_move),     cmocka_unit_test(test_refused),
	    cmocka_unit_test(test_sequence),
	};

	return cmocka_run_group_tests_name("rest_patch", tests, NULL, NULL);
}
