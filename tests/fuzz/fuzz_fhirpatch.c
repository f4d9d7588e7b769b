/* Fuzz target: the REST API's FHIRPath Patch (gateway/rest_fhirpatch.c) and the resource check
 * that follows it in a PATCH. The input is a Parameters resource (JSON) applied to a Patient
 * with lists, choices, a contained resource and primitives with extensions; or, after a NUL
 * byte, the document to patch first and then the Parameters. A patch either applies or is
 * refused with a status (400/422) and a message; a resource the check then accepts is written
 * as JSON and parses back to an equal tree. */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fhir/json.h"
#include "fhir/tree.h"
#include "gateway/rest_int.h"
#include "lib/arena.h"
#include "lib/buf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char patient[] =
    "{\"resourceType\":\"Patient\",\"id\":\"p1\",\"contained\":[{\"resourceType\":"
    "\"Practitioner\",\"id\":\"d\",\"name\":[{\"family\":\"Who\"}]}],\"extension\":[{\"url\":"
    "\"http://x\",\"valueString\":\"v\"}],\"identifier\":[{\"system\":\"urn:mrn\",\"value\":"
    "\"1\"},{\"value\":\"2\"}],\"name\":[{\"family\":\"Doe\",\"given\":[\"A\",\"B\"],"
    "\"_given\":[null,{\"extension\":[{\"url\":\"u\",\"valueString\":\"x\"}]}]}],"
    "\"gender\":\"female\",\"_gender\":{\"id\":\"g\"},\"birthDate\":\"1970-01-01\","
    "\"deceasedBoolean\":false,\"telecom\":[{\"system\":\"phone\",\"value\":\"1\",\"rank\":1},"
    "{\"system\":\"email\",\"value\":\"e\"}],\"contact\":[{\"name\":{\"family\":\"C\"},"
    "\"telecom\":[{\"value\":\"2\"}]}],\"generalPractitioner\":[{\"reference\":\"#d\"}]}";

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *nul = memchr(data, '\0', size);
	slice_t doc_text = nul != NULL
			       ? slice_make((const char *)data, (size_t)(nul - (const char *)data))
			       : slice_make(patient, sizeof(patient) - 1);
	slice_t patch_text =
	    nul != NULL ? slice_make(nul + 1, size - (size_t)(nul + 1 - (const char *)data))
			: slice_make((const char *)data, size);
	arena_t *a = arena_new(0);
	fhir_node_t *doc = NULL, *patch = NULL, *back = NULL;
	char err[512];
	int st;

	if (fhir_json_parse(a, doc_text.ptr, doc_text.len, NULL, &doc, err, sizeof(err)) != 0 ||
	    fhir_node_kind(doc) != FHIR_OBJECT || rest_res_validate(doc, err, sizeof(err)) != 0 ||
	    fhir_json_parse(a, patch_text.ptr, patch_text.len, NULL, &patch, err, sizeof(err)) !=
		0) {
		arena_free(a);
		return 0;
	}
	err[0] = '\0';
	st = rest_fhirpath_patch(a, doc, patch, err, sizeof(err));
	if (st != 0 && ((st != 400 && st != 422) || err[0] == '\0'))
		abort(); /* a refusal has a status and says why */
	if (st == 0 && rest_res_validate(doc, err, sizeof(err)) == 0) {
		buf_t out = BUF_INIT;

		if (fhir_json_write(doc, false, &out) != 0 ||
		    fhir_json_parse(a, out.data, out.len, NULL, &back, err, sizeof(err)) != 0 ||
		    !fhir_node_equal(doc, back))
			abort(); /* what the check accepts is written and read back unchanged */
		buf_free(&out);
	}
	arena_free(a);
	return 0;
}
