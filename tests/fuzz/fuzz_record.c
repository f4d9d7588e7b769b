/* libFuzzer target for legacy records: the first byte picks a reader (CSV with a header, CSV
 * without, fixed width, XML) or a record map; the rest is the input. Every record read is turned
 * into its pseudo message and converted, and its raw form taken, as an import does; a record map
 * must load or report each problem with a position. */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/arena.h"
#include "lib/buf.h"
#include "mappings/map.h"
#include "mappings/record.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *maps[] = {
    "reader csv\nseparator \";\"\nencoding latin1\ndate-format \"%d/%m/%Y\"\n"
    "resource Patient[1]\nid <- hash(column(\"mrn\"), column(\"auth\"))\n"
    "identifier[1].value <- column(\"mrn\")\nname[1].family <- column(\"name\")\n"
    "birthDate <- date(column(\"dob\"))\ngender <- column(\"sex\") via AdministrativeSex\n",
    "reader csv\nheader no\nquote \"'\"\ncolumn mrn 1\ncolumn when 3\n"
    "resource Observation[1] if column(\"mrn\") IS VALUED\nstatus = \"final\"\n"
    "code.text <- column(\"mrn\")\neffectiveDateTime <- date(column(\"when\"), \"%Y%m%d%H%M\")\n",
    "reader fixed\nencoding windows-1252\ncolumn mrn 1-6\ncolumn name 7-16\ncolumn dob 17-24\n"
    "resource Patient[1]\nidentifier[1].value <- column(\"mrn\")\n"
    "name[1].family <- column(\"name\")\nbirthDate <- date(column(\"dob\"), \"%Y%m%d\")\n",
    "reader xml\nrecord \"/h:e//h:v\"\nnamespace h = \"urn:x\"\n"
    "resource Patient[1] reference-only\nid <- hash(xpath(\"h:p/@mrn\"))\n"
    "resource Encounter[1]\nsubject = Patient[1]\nid <- hash(xpath(\"@n\"))\n"
    "period.start <- date(xpath(\"h:in\"), \"%Y-%m-%dT%H:%M\")\nclass.code <- xpath(\"@c\")\n",
};
#define NMAPS (sizeof(maps) / sizeof(maps[0]))

static record_map_t *loaded[NMAPS];

static void
fuzz_diag(const map_diag_t *d, void *arg)
{
	(void)arg;
	if (d->file == NULL || d->text == NULL || d->text[0] == '\0' ||
	    (d->line == 0 && d->col != 0))
		abort();
}

static void
fuzz_read(const record_map_t *rm, const char *p, size_t n)
{
	record_reader_t *r;
	record_t rec;
	char err[256];
	arena_t *a;
	buf_t raw = BUF_INIT;
	unsigned count = 0;

	if (record_reader_open_mem(rm, p, n, &r, err, sizeof(err)) < 0)
		return;
	a = arena_new(0);
	while (record_reader_next(r, &rec) > 0 && count++ < 200) {
		hl7_msg_t *m;
		map_result_t *res;

		buf_reset(&raw);
		record_reader_raw(r, &raw);
		if (rec.error != NULL)
			continue;
		if (record_to_msg(rm, &rec, slice_cstr("1"), a, &m) == 0)
			(void)map_convert(record_map_set(rm), m, NULL, a, &res);
		arena_reset(a);
	}
	buf_reset(&raw);
	{
		buf_t close = BUF_INIT;

		record_reader_xml_frame(r, &raw, &close);
		buf_free(&close);
	}
	buf_free(&raw);
	arena_free(a);
	record_reader_free(r);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	unsigned which;

	if (size < 1)
		return 0;
	for (size_t i = 0; i < NMAPS; i++)
		if (loaded[i] == NULL &&
		    record_map_load("fuzz.map", maps[i], strlen(maps[i]), MAPS_DIR, NULL, fuzz_diag,
				    NULL, &loaded[i]) < 0)
			abort();
	which = data[0] % (NMAPS + 1);
	if (which < NMAPS) {
		fuzz_read(loaded[which], (const char *)data + 1, size - 1);
	} else {
		record_map_t *rm = NULL;

		if (record_map_load("fuzz.map", (const char *)data + 1, size - 1, MAPS_DIR, NULL,
				    fuzz_diag, NULL, &rm) == 0)
			record_map_free(rm);
	}
	return 0;
}
