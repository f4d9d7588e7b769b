/* libFuzzer target for the FHIR XML codec: parse with small limits; a tree read from XML must
 * write back as XML and JSON that both read back equal. */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>

#include "fhir/json.h"
#include "fhir/tree.h"
#include "fhir/xml.h"
#include "lib/arena.h"
#include "lib/buf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const fhir_xml_limits_t lim = {1 << 16, 32};
	const fhir_xml_limits_t lim_back = {1 << 20, 64};
	const fhir_json_limits_t jlim = {1 << 20, 128};
	arena_t *a = arena_new(0);
	buf_t xml = BUF_INIT, json = BUF_INIT;
	fhir_node_t *n, *back;
	char err[256];
	int rc = fhir_xml_parse(a, (const char *)data, size, &lim, &n, err, sizeof(err));

	if (rc != 0) {
		if (n != NULL || err[0] == '\0')
			abort();
		arena_free(a);
		return 0;
	}
	if (fhir_xml_write(n, true, &xml, err, sizeof(err)) != 0)
		abort();
	if (fhir_xml_parse(a, xml.data, xml.len, &lim_back, &back, err, sizeof(err)) != 0)
		abort();
	if (!fhir_node_equal(n, back))
		abort();
	if (fhir_json_write(n, false, &json) != 0)
		abort();
	if (fhir_json_parse(a, json.data, json.len, &jlim, &back, err, sizeof(err)) != 0)
		abort();
	if (!fhir_node_equal(n, back))
		abort();
	buf_free(&xml);
	buf_free(&json);
	arena_free(a);
	return 0;
}
