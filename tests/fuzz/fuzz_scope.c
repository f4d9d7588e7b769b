/* libFuzzer target for the SMART scope parser (gateway/scope.c): a scope list that parses must
 * format to text that parses to the same permissions, and granting and checking must hold
 * their invariants (a grant never exceeds what was allowed). */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/scope.h"
#include "lib/buf.h"
#include "lib/err.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char allowed_text[] =
	    "system/Observation.rs patient/*.read system/Patient.cud system/fhirgate.admin";
	static scope_set_t set, again, allowed, granted;
	slice_t bad;
	buf_t out = BUF_INIT;

	if (scope_set_parse(slice_make((const char *)data, size), &set, &bad) != 0)
		return 0;
	scope_set_format(&set, &out);
	if (scope_set_parse(buf_slice(&out), &again, &bad) != 0 || again.n != set.n)
		abort();
	for (size_t i = 0; i < set.n; i++)
		if (again.s[i].perms != set.s[i].perms || again.s[i].ctx != set.s[i].ctx ||
		    strcmp(again.s[i].type, set.s[i].type) != 0 ||
		    strcmp(again.s[i].query, set.s[i].query) != 0)
			abort();
	if (scope_set_parse(slice_cstr(allowed_text), &allowed, &bad) != 0)
		abort();
	scope_grant(&set, &allowed, true, &granted);
	/* Everything granted is allowed: its check against the allowed set passes. */
	for (size_t i = 0; i < granted.n; i++) {
		const scope_t *g = &granted.s[i];

		if (g->admin)
			continue;
		if (strcmp(g->type, "*") != 0 &&
		    scope_set_check(&allowed, slice_cstr(g->type), g->perms) == SCOPE_DENY)
			abort();
	}
	(void)scope_set_check(&set, SLICE_LIT("Observation"), SCOPE_R);
	(void)scope_set_check(&set, slice_make("", 0), SCOPE_S);
	buf_free(&out);
	return 0;
}
