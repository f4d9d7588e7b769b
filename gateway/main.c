/* fhirgate: the one binary; dispatches to subcommands. */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "fhir/xml.h"
#include "gateway/cli.h"

static const struct {
	const char *name;
	int (*fn)(int, char **);
	const char *help;
} commands[] = {
    {"serve", cmd_serve, "run the gateway (MLLP listener, writer)"},
    {"send", cmd_send, "send HL7 v2 messages over MLLP and print the ACKs"},
    {"store", cmd_store, "inspect the store: stats, list, show, dead, replay, verify"},
    {"convert", cmd_convert, "convert HL7 v2 messages to FHIR Bundles (--explain)"},
    {"mappings", cmd_mappings, "check the mapping files: file:line:col for every problem"},
    {"import", cmd_import, "import legacy records (CSV, fixed-width, XML, HL7 v2 batch files)"},
    {"score", cmd_score, "score a patient's resources offline with the risk models"},
};

static void
usage(FILE *f)
{
	fprintf(f, "usage: fhirgate COMMAND [OPTIONS]\n\ncommands:\n");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(f, "  %-8s %s\n", commands[i].name, commands[i].help);
	fprintf(f, "\n`fhirgate COMMAND --help` describes each. Common options: -c FILE, "
		   "--set key=value.\n");
}

int
main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
	    strcmp(argv[1], "help") == 0) {
		usage(stdout);
		return 0;
	}
	if (strcmp(argv[1], "--version") == 0) {
		printf("fhirgate %s\n", PACKAGE_VERSION);
		return 0;
	}
	fhir_xml_init(); /* libxml2's global state, once, before any thread starts */
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (strcmp(argv[1], commands[i].name) == 0)
			return commands[i].fn(argc - 1, argv + 1);
	fprintf(stderr, "fhirgate: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return 2;
}
