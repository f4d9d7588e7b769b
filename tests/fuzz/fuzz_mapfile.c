/* libFuzzer target for mapping files: the input is one file (its first byte picks which of a
 * message, segment, datatype map or vocabulary it is) loaded beside a small fixed set; every
 * problem must come with a position and a text, and a set that loads converts a sample
 * message with explain on. */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/arena.h"
#include "lib/err.h"
#include "mappings/hl7.h"
#include "mappings/map.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *fixed[][2] = {
    {"messages/ADT_A01.map", "applies to ADT_A08\n"
			     "Bundle <- MSH as MSH[Bundle]\n"
			     "group PATIENT PID\n"
			     "Patient[1] <- PID as PID[Patient]\n"
			     "Patient[2] <- MRG as PID[Patient]  if MSH-9.2 EQUALS \"A40\"\n"
			     "    link.other = Patient[1]\n"
			     "Observation[1] <- OBX as OBX[Observation]\n"
			     "    subject = Patient[1]\n"
			     "    Patient[1].generalPractitioner = *\n"
			     "Observation[1].note <- NTE follows OBX as NTE[Annotation]\n"
			     "end\n"},
    {"segments/PID-Patient.map", "id <- hash(PID-3.1, PID-3.4.1)\n"
				 "name[1] <- PID-5 as XPN[HumanName]\n"
				 "gender <- PID-8 via AdministrativeSex\n"
				 "birthDate <- PID-7 as DTM[date]\n"
				 "birthDate.extension[1].url = \"x\" if PID-7 LENGTH > 8\n"
				 "birthDate.extension[1].valueDateTime <- PID-7\n"
				 "telecom[1].value <- join(\" \", \"+\" + PID-13.5, PID-13.7)\n"
				 "active = true if PID-3 LST.COUNT > 1 OR NOT (PID-9 IS VALUED)\n"},
    {"segments/MSH-Bundle.map", "timestamp <- MSH-7 as DTM[instant]\n"},
    {"segments/OBX-Observation.map", "status = \"final\"\n"
				     "code.text <- OBX-3.2\n"
				     "valueQuantity.value <- OBX-5 if OBX-2 EQUALS \"NM\"\n"
				     "valueString <- OBX-5\n"
				     "component[1].valueString <- OBX-5 if OBX-5 LST.COUNT > 1\n"},
    {"segments/NTE-Annotation.map", "text <- NTE-3\n"},
    {"datatypes/XPN-HumanName.map", "family <- .1.1\ngiven <- .2\nuse <- .7 via NameType\n"},
    {"datatypes/HD-uri.map", "$value <- \"urn:oid:\" + .2 if .3 EQUALS \"ISO\"\n$value <- .1\n"},
    {"vocab/AdministrativeSex.csv",
     "v2 code,v2 system,code,display,system\n"
     "F,HL70001,female,Female,http://hl7.org/fhir/administrative-gender\n"
     "M,,male,Male,http://hl7.org/fhir/administrative-gender\n"},
    {"vocab/NameType.csv", "v2 code,code\nL,official\n"},
};

static const char sample[] = "MSH|^~\\&|A|B|C|D|20240101120000+0100||ADT^A40^ADT_A39|F1|P|2.5\r"
			     "PID|1||7^^^H^MR~8||DOE&X^JANE^^^^^L~ROE||2024010112|F|||||^^^^1^2^3\r"
			     "MRG|9^^^H\r"
			     "OBX|1|NM|1^A||5~6|kg\r"
			     "NTE|1||note\r"
			     "ZZZ|a|b~c\r";

/* Every problem has a file and a text; a line number and a column or neither. */
static void
fuzz_diag(const map_diag_t *d, void *arg)
{
	(void)arg;
	if (d->file == NULL || d->text == NULL || d->text[0] == '\0' ||
	    (d->line == 0 && d->col != 0))
		abort();
}

static void
fuzz_convert(const map_set_t *set)
{
	arena_t *a = arena_new(0);
	hl7_limits_t lim;
	hl7_msg_t *m = NULL;
	hl7_error_t err;
	map_result_t *r = NULL;
	map_options_t opt = {true, true, 60, NULL};
	int rc;

	hl7_limits_default(&lim);
	if (hl7_parse(a, sample, sizeof(sample) - 1, &lim, &m, &err) != 0)
		abort();
	rc = map_convert(set, m, &opt, a, &r);
	if (r == NULL || (rc == 0 && r->bundle == NULL) || (rc != 0 && r->error.text[0] == '\0'))
		abort();
	for (size_t i = 0; rc == 0 && i < r->nexplain; i++)
		if (r->explain[i].resource >= r->nresources || r->explain[i].path == NULL)
			abort();
	arena_free(a);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	enum { NFIXED = sizeof(fixed) / sizeof(fixed[0]) };
	static const char *kinds[] = {"messages/ADT_A01.map",        "segments/PID-Patient.map",
				      "datatypes/XPN-HumanName.map", "vocab/AdministrativeSex.csv",
				      "messages/ORU_R01.map",        "segments/ZZZ-Patient.map"};
	map_file_t files[NFIXED + 1];
	map_set_t *set = NULL;
	const char *path;
	size_t n = 0;

	if (size == 0)
		return 0;
	path = kinds[data[0] % (sizeof(kinds) / sizeof(kinds[0]))];
	for (size_t i = 0; i < NFIXED; i++)
		if (strcmp(fixed[i][0], path) != 0)
			files[n++] = (map_file_t){fixed[i][0], NULL, fixed[i][1],
						  strlen(fixed[i][1]), false};
	/* in a site folder half the time, so that overriding is fuzzed too */
	files[n++] =
	    (map_file_t){path, NULL, (const char *)data + 1, size - 1, (data[0] & 0x80) != 0};
	if (map_set_load_files(files, n, fuzz_diag, NULL, &set) == 0) {
		fuzz_convert(set);
		map_set_free(set);
	}
	return 0;
}
