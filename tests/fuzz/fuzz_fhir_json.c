/* libFuzzer target for the FHIR JSON codec: parse with small limits, then check that what we
 * write reads back equal (JSON), that XML we write from it reads back, and that the tree
 * operations hold up on whatever shape the input had. */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fhir/json.h"
#include "fhir/tree.h"
#include "fhir/validate.h"
#include "fhir/xml.h"
#include "lib/arena.h"
#include "lib/buf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Our JSON output must read back as the same tree. */
static void
fuzz_json_again(arena_t *a, const fhir_node_t *n, bool pretty)
{
	const fhir_json_limits_t lim = {1 << 20, 64};
	buf_t out = BUF_INIT;
	fhir_node_t *back;
	char err[256];

	if (fhir_json_write(n, pretty, &out) != 0)
		abort();
	if (fhir_json_parse(a, out.data, out.len, &lim, &back, err, sizeof(err)) != 0)
		abort();
	if (!fhir_node_equal(n, back))
		abort();
	buf_free(&out);
}

/* XML we write must read back; one more trip is then a fixed point. */
static void
fuzz_xml(arena_t *a, const fhir_node_t *n)
{
	const fhir_xml_limits_t lim = {1 << 20, 64};
	buf_t out = BUF_INIT, again = BUF_INIT;
	fhir_node_t *back, *back2;
	char err[256];

	if (fhir_xml_write(n, false, &out, err, sizeof(err)) != 0) {
		if (err[0] == '\0' || out.len != 0)
			abort();
		buf_free(&out);
		return;
	}
	if (fhir_xml_parse(a, out.data, out.len, &lim, &back, err, sizeof(err)) != 0)
		abort();
	if (fhir_xml_write(back, false, &again, err, sizeof(err)) != 0)
		abort();
	if (fhir_xml_parse(a, again.data, again.len, &lim, &back2, err, sizeof(err)) != 0)
		abort();
	if (!fhir_node_equal(back, back2))
		abort();
	buf_free(&out);
	buf_free(&again);
}

/* fhir_validate reports well-formed issues, at most max; a resource it finds nothing wrong
 * with (structure and values) can be written as XML, unless its narrative's div is not
 * XHTML, which it does not check. */
static void
fuzz_validate(arena_t *a, const fhir_node_t *n)
{
	fhir_issue_t is[4];
	size_t k = fhir_validate(a, n, FHIR_VALIDATE_REQUIRED, is, 4);
	buf_t out = BUF_INIT;
	char err[256];

	if (k > 4)
		abort();
	for (size_t i = 0; i < k; i++)
		if (is[i].path == NULL || is[i].what == NULL || is[i].what[0] == '\0' ||
		    is[i].kind > FHIR_ISSUE_REQUIRED)
			abort();
	if (fhir_validate(a, n, 0, is, 1) != 0)
		return;
	if (fhir_xml_write(n, false, &out, err, sizeof(err)) != 0 && strstr(err, "div") == NULL)
		abort();
	buf_free(&out);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const fhir_json_limits_t lim = {1 << 16, 32};
	arena_t *a = arena_new(0);
	fhir_node_t *n, *c;
	char err[256];
	int rc = fhir_json_parse(a, (const char *)data, size, &lim, &n, err, sizeof(err));

	if (rc != 0) {
		if (n != NULL || err[0] == '\0')
			abort();
		arena_free(a);
		return 0;
	}
	fuzz_json_again(a, n, false);
	fuzz_json_again(a, n, true);
	c = fhir_node_clone(a, n);
	if (!fhir_node_equal(n, c))
		abort();
	if (fhir_node_prune(c) && fhir_node_is_empty(c))
		abort();
	if (fhir_node_kind(n) == FHIR_OBJECT)
		fuzz_xml(a, n);
	fuzz_validate(a, n);
	arena_free(a);
	return 0;
}
