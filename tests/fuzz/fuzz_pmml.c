/* libFuzzer target for the PMML loader: load from memory; a model that loads (its own
 * ModelVerification passed) is evaluated once with every input missing, once with numbers and
 * once with its first valid values. A refusal must say why. */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>

#include "lib/xalloc.h"
#include "scoring/pmml.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
fuzz_eval(const pmml_model_t *m, int how)
{
	size_t n = pmml_input_count(m);
	pmml_input_t *in = xcalloc(n + 1, sizeof(*in));
	pmml_result_t res;

	for (size_t i = 0; i < n; i++) {
		const pmml_field_info_t *f = pmml_input_get(m, i);

		in[i].name = f->name;
		if (how == 1)
			in[i].value = pmml_value_number(f->has_interval ? f->low : 1.5);
		else if (how == 2 && f->n_values > 0)
			in[i].value = pmml_value_string(f->values[0]);
	}
	if (pmml_eval(m, in, n, &res) != 0 && res.message[0] == '\0')
		abort();
	if (res.n_inputs != n || res.n_outputs != pmml_output_count(m))
		abort();
	pmml_result_clear(&res);
	free(in);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	pmml_model_t *m = NULL;
	char err[512];

	if (pmml_load_mem("fuzz.pmml", (const char *)data, size, &m, err, sizeof(err)) != 0) {
		if (m != NULL || err[0] == '\0')
			abort();
		return 0;
	}
	(void)pmml_model_name(m);
	(void)pmml_model_target(m);
	for (size_t i = 0; i < pmml_category_count(m); i++)
		if (pmml_category_get(m, i) == NULL)
			abort();
	for (int how = 0; how < 3; how++)
		fuzz_eval(m, how);
	pmml_free(m);
	return 0;
}
