/* Options every subcommand shares: the config file and --set overrides. */
#include "config.h"

#include "gateway/cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/xalloc.h"

/* What the last cli_config_load read, so that a reload reads the same. */
static struct {
	char *path;
	char **sets;
	int nsets;
} last;

static int
config_build(config_t *c)
{
	char *err = NULL;
	int rc = 0;

	config_init(c);
	if (last.path != NULL && config_load_file(c, last.path, &err) < 0)
		rc = -1;
	for (int i = 0; rc == 0 && i < last.nsets; i++)
		if (config_set_arg(c, last.sets[i], &err) < 0)
			rc = -1;
	if (err != NULL)
		fprintf(stderr, "fhirgate: %s\n", err);
	free(err);
	if (rc == 0) {
		log_set_level(c->log_level);
		log_set_format(c->log_format);
		log_set_output(c->log_output);
	} else {
		config_free(c);
	}
	return rc;
}

int
cli_config_load(int *argc, char **argv, config_t *c)
{
	int out = 1;

	for (int i = 0; i < last.nsets; i++)
		free(last.sets[i]);
	free(last.sets);
	free(last.path);
	last.path = NULL;
	last.nsets = 0;
	last.sets = xcalloc((size_t)*argc + 1, sizeof(char *));
	for (int i = 1; i < *argc; i++) {
		const char *a = argv[i];
		bool takes =
		    strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0 || strcmp(a, "--set") == 0;

		if (takes && i + 1 >= *argc) {
			fprintf(stderr, "fhirgate: %s needs an argument\n", a);
			return -1;
		}
		if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) {
			free(last.path);
			last.path = xstrdup(argv[++i]);
		} else if (strncmp(a, "--config=", 9) == 0) {
			free(last.path);
			last.path = xstrdup(a + 9);
		} else if (strcmp(a, "--set") == 0) {
			last.sets[last.nsets++] = xstrdup(argv[++i]);
		} else if (strncmp(a, "--set=", 6) == 0) {
			last.sets[last.nsets++] = xstrdup(a + 6);
		} else {
			argv[out++] = argv[i];
		}
	}
	argv[out] = NULL;
	*argc = out;
	if (last.path == NULL && access("etc/fhirgate.conf", R_OK) == 0)
		last.path = xstrdup("etc/fhirgate.conf");
	return config_build(c);
}

void
cli_config_args(const char ***out, int *n)
{
	const char **v = xcalloc((size_t)last.nsets * 2 + 3, sizeof(*v));
	int k = 0;

	if (last.path != NULL) {
		v[k++] = "-c";
		v[k++] = last.path;
	} else {
		/* built-in defaults, as the parent had, even when etc/fhirgate.conf exists */
		v[k++] = "-c";
		v[k++] = "/dev/null";
	}
	for (int i = 0; i < last.nsets; i++) {
		v[k++] = "--set";
		v[k++] = last.sets[i];
	}
	*out = v;
	*n = k;
}

int
cli_config_reload(config_t *c)
{
	return config_build(c);
}
