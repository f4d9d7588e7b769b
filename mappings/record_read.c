/* Readers of legacy records: delimited text (RFC 4180 quoting, header row, BOM, CRLF, Latin-1 and
 * Windows-1252), fixed-width lines, and XML through libxml2's streaming reader, which expands one
 * record element at a time and frees it when it moves on, so memory does not grow with the file.
 * DTDs are refused: no network, no entity substitution, no DTD loading, and a DOCTYPE stops the
 * file. */
#include "config.h"

#include <sys/mman.h>
#include <sys/stat.h>

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libxml/tree.h>
#include <libxml/xmlreader.h>
#include <libxml/xpath.h>
#include <libxml/xpathInternals.h>

#include "lib/err.h"
#include "lib/xalloc.h"
#include "mappings/record.h"
#include "mappings/record_int.h"

/* Fields one CSV row may have, and the longest record (a runaway quote stops there). */
#define RECORD_ROW_FIELDS_MAX 4096
#define RECORD_ROW_BYTES_MAX  (16u << 20)

struct record_reader {
	const record_map_t *rm;
	/* text: the whole input, mapped */
	const char *data;
	size_t len;
	void *map;
	size_t pos;
	uint64_t line, number;
	slice_t header;
	int *col_of;   /* per field: index in the row (csv) or column (fixed); -1 none */
	size_t rowmax; /* csv: fields in the header (0: no header) */
	size_t raw_start, raw_end;
	/* the row's unquoted values: bytes in cells, offsets in cell_off */
	buf_t cells;
	size_t *cell_off, *cell_len;
	size_t ncells;
	/* the record's fields as handed out */
	buf_t vals;
	size_t *val_off, *val_len;
	slice_t *fields;
	char why[256];
	char err[512];
	/* xml */
	xmlTextReaderPtr xr;
	xmlXPathContextPtr xctx;
	xmlXPathCompExprPtr *xexpr;
	xmlNodePtr node;
	int depth0;
	char **open_tags; /* start tags of the record's ancestors, for reject documents */
	char **open_names;
	size_t nopen;
	char *names[258], *uris[258]; /* the current element's ancestors and itself */
	xmlDocPtr doc;                /* taken from the reader after an error */
	buf_t hnames;                 /* csv: the header's names, each NUL-terminated */
	uint64_t size;
};

static void reader_set_error(record_reader_t *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
reader_set_error(record_reader_t *r, const char *fmt, ...)
{
	va_list ap;

	if (r->err[0] != '\0')
		return;
	va_start(ap, fmt);
	vsnprintf(r->err, sizeof(r->err), fmt, ap);
	va_end(ap);
}

int
record_path_parse(record_map_t *rm, const char *path)
{
	const char *p = path;

	if (*p != '/')
		return -1;
	while (*p) {
		record_step_t st;
		const char *s, *colon;

		memset(&st, 0, sizeof(st));
		if (p[0] == '/' && p[1] == '/') {
			st.descendant = true;
			p += 2;
		} else if (p[0] == '/') {
			p++;
		} else {
			return -1;
		}
		s = p;
		while (*p && *p != '/')
			p++;
		if (p == s)
			return -1;
		for (const char *q = s; q < p; q++)
			if (!isalnum((unsigned char)*q) && *q != '_' && *q != '-' && *q != '.' &&
			    *q != ':')
				return -1;
		colon = memchr(s, ':', (size_t)(p - s));
		if (colon != NULL) {
			st.prefix = xmemdup0(s, (size_t)(colon - s));
			st.local = xmemdup0(colon + 1, (size_t)(p - colon - 1));
		} else {
			st.local = xmemdup0(s, (size_t)(p - s));
		}
		rm->steps = xreallocarray(rm->steps, rm->nsteps + 1, sizeof(*rm->steps));
		rm->steps[rm->nsteps++] = st;
	}
	return rm->nsteps > 0 ? 0 : -1;
}

static const char *
reader_ns_uri(const record_map_t *rm, const char *prefix)
{
	if (prefix == NULL)
		return NULL;
	for (size_t i = 0; i < rm->nns; i++)
		if (strcmp(rm->ns[i].prefix, prefix) == 0)
			return rm->ns[i].uri;
	return "";
}

/* Windows-1252's 0x80-0x9f; 0 where it has no character (then Latin-1's C1 control). */
static const uint16_t cp1252[32] = {0x20ac, 0,      0x201a, 0x0192, 0x201e, 0x2026, 0x2020, 0x2021,
				    0x02c6, 0x2030, 0x0160, 0x2039, 0x0152, 0,      0x017d, 0,
				    0,      0x2018, 0x2019, 0x201c, 0x201d, 0x2022, 0x2013, 0x2014,
				    0x02dc, 0x2122, 0x0161, 0x203a, 0x0153, 0,      0x017e, 0x0178};

static void
reader_put_cp(buf_t *b, unsigned c)
{
	char u[3];

	if (c < 0x80) {
		buf_append_byte(b, (char)c);
	} else if (c < 0x800) {
		u[0] = (char)(0xc0 | (c >> 6));
		u[1] = (char)(0x80 | (c & 0x3f));
		buf_append(b, u, 2);
	} else {
		u[0] = (char)(0xe0 | (c >> 12));
		u[1] = (char)(0x80 | ((c >> 6) & 0x3f));
		u[2] = (char)(0x80 | (c & 0x3f));
		buf_append(b, u, 3);
	}
}

static bool
reader_utf8_valid(const unsigned char *s, size_t n)
{
	size_t i = 0;

	while (i < n) {
		unsigned char c = s[i];
		size_t k;

		if (c < 0x80) {
			i++;
			continue;
		}
		k = c >= 0xc2 && c <= 0xdf   ? 2
		    : c >= 0xe0 && c <= 0xef ? 3
		    : c >= 0xf0 && c <= 0xf4 ? 4
					     : 0;
		if (k == 0 || i + k > n)
			return false;
		for (size_t j = 1; j < k; j++)
			if ((s[i + j] & 0xc0) != 0x80)
				return false;
		if ((c == 0xe0 && s[i + 1] < 0xa0) || (c == 0xed && s[i + 1] >= 0xa0) ||
		    (c == 0xf0 && s[i + 1] < 0x90) || (c == 0xf4 && s[i + 1] >= 0x90))
			return false;
		i += k;
	}
	return true;
}

/* Appends a value in the map's encoding to b as UTF-8 (trimmed); false if it is not valid
 * UTF-8 where UTF-8 is declared. */
static bool
reader_put_text(const record_map_t *rm, buf_t *b, const char *p, size_t n)
{
	while (n > 0 && (*p == ' ' || *p == '\t'))
		p++, n--;
	while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
		n--;
	if (rm->encoding == RECORD_ENC_UTF8) {
		buf_append(b, p, n);
		return reader_utf8_valid((const unsigned char *)p, n);
	}
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p[i];

		if (c >= 0x80 && c < 0xa0 && rm->encoding == RECORD_ENC_CP1252 && cp1252[c - 0x80])
			reader_put_cp(b, cp1252[c - 0x80]);
		else
			reader_put_cp(b, c);
	}
	return true;
}

/* One CSV record from r->pos into cells (unquoted, not yet decoded). 0 at the end, 1 with a
 * record; *bad set when it is malformed (an unterminated quote, too many fields). */
static int
reader_csv_row(record_reader_t *r, const char **bad)
{
	const record_map_t *rm = r->rm;
	const char *p = r->data + r->pos, *end = r->data + r->len;
	const char *row = p;

	*bad = NULL;
	buf_reset(&r->cells);
	r->ncells = 0;
	if (p >= end)
		return 0;
	r->raw_start = r->pos;
	for (;;) {
		size_t off = r->cells.len;

		if (p < end && *p == rm->quote) {
			p++;
			for (;;) {
				const char *q = memchr(p, rm->quote, (size_t)(end - p));

				if (q == NULL || (size_t)(q - row) > RECORD_ROW_BYTES_MAX) {
					*bad = q == NULL
						   ? "a quote is never closed"
						   : "a quoted value is too long (quote never "
						     "closed?)";
					for (const char *c = p; c < (q ? q : end); c++)
						r->line += *c == '\n';
					p = q ? q + 1 : end;
					/* resynchronise at the next line break */
					while (p < end && *p != '\n')
						p++;
					if (p < end)
						p++;
					goto finish;
				}
				for (const char *c = p; c < q; c++)
					r->line += *c == '\n';
				buf_append(&r->cells, p, (size_t)(q - p));
				p = q + 1;
				if (p < end && *p == rm->quote) {
					buf_append_byte(&r->cells, rm->quote);
					p++;
					continue;
				}
				break;
			}
			/* text after the closing quote up to the separator is kept as it is */
			while (p < end && *p != rm->sep && *p != '\n' && *p != '\r')
				buf_append_byte(&r->cells, *p++);
		} else {
			const char *s = p;

			while (p < end && *p != rm->sep && *p != '\n' && *p != '\r')
				p++;
			buf_append(&r->cells, s, (size_t)(p - s));
		}
		if (r->ncells < RECORD_ROW_FIELDS_MAX) {
			r->cell_off[r->ncells] = off;
			r->cell_len[r->ncells] = r->cells.len - off;
			r->ncells++;
		} else {
			*bad = "more than 4096 fields";
		}
		if (p < end && *p == rm->sep) {
			p++;
			continue;
		}
		if (p < end && *p == '\r')
			p++;
		if (p < end && *p == '\n')
			p++;
		break;
	}
finish:
	r->line++;
	r->pos = (size_t)(p - r->data);
	r->raw_end = r->pos;
	return 1;
}

static bool
reader_row_blank(const record_reader_t *r)
{
	return r->ncells == 1 && r->cell_len[0] == 0;
}

/* Fixed width: one line into cells (one per declared column). */
static int
reader_fixed_row(record_reader_t *r)
{
	const record_map_t *rm = r->rm;
	const char *p = r->data + r->pos, *end = r->data + r->len;
	const char *eol;
	size_t n;

	buf_reset(&r->cells);
	r->ncells = 0;
	if (p >= end)
		return 0;
	r->raw_start = r->pos;
	eol = memchr(p, '\n', (size_t)(end - p));
	eol = eol ? eol : end;
	n = (size_t)(eol - p);
	if (n > 0 && p[n - 1] == '\r')
		n--;
	for (size_t i = 0; i < rm->ncols && i < RECORD_ROW_FIELDS_MAX; i++) {
		size_t s = rm->cols[i].start - 1, e = rm->cols[i].end;

		r->cell_off[i] = r->cells.len;
		if (s < n)
			buf_append(&r->cells, p + s, (e < n ? e : n) - s);
		r->cell_len[i] = r->cells.len - r->cell_off[i];
	}
	r->ncells = rm->ncols;
	r->line++;
	r->pos = (size_t)(eol - r->data) + (eol < end ? 1 : 0);
	r->raw_end = r->pos;
	return n == 0 ? 2 : 1; /* 2: a blank line */
}

/* Sets the record's field values from cells (decoded, dates converted); rec->error on a
 * problem. */
static void
reader_fields_from_cells(record_reader_t *r, record_t *rec)
{
	const record_map_t *rm = r->rm;

	buf_reset(&r->vals);
	for (size_t i = 0; i < rm->nfields; i++) {
		const record_field_t *f = &rm->fields[i];
		int c = r->col_of[i];
		size_t off = r->vals.len;

		r->val_off[i] = off;
		r->val_len[i] = 0;
		if (c < 0 || (size_t)c >= r->ncells) {
			if (rec->error == NULL && rm->format == RECORD_CSV) {
				snprintf(r->why, sizeof(r->why),
					 "column %s: missing (the row has %zu fields)", f->name,
					 r->ncells);
				rec->error = r->why;
			}
			continue;
		}
		if (!reader_put_text(rm, &r->vals, r->cells.data + r->cell_off[c],
				     r->cell_len[c]) &&
		    rec->error == NULL) {
			snprintf(r->why, sizeof(r->why),
				 "column %s: not valid UTF-8 (is the file's encoding declared?)",
				 f->name);
			rec->error = r->why;
		}
		r->val_len[i] = r->vals.len - off;
	}
	if (rec->error == NULL && rm->format == RECORD_CSV && r->rowmax > 0 &&
	    r->ncells != r->rowmax) {
		snprintf(r->why, sizeof(r->why), "the row has %zu fields, the header %zu",
			 r->ncells, r->rowmax);
		rec->error = r->why;
	}
}

/* Dates to DTM, then the slices handed out (vals no longer grows after this). */
static void
reader_finish_fields(record_reader_t *r, record_t *rec)
{
	const record_map_t *rm = r->rm;

	for (size_t i = 0; i < rm->nfields; i++) {
		const record_field_t *f = &rm->fields[i];
		char dtm[32];
		slice_t v;

		if (f->date_fmt == NULL || r->val_len[i] == 0)
			continue;
		v = slice_make(r->vals.data + r->val_off[i], r->val_len[i]);
		if (!record_date_to_dtm(v, f->date_fmt, dtm, sizeof(dtm))) {
			if (rec->error == NULL) {
				snprintf(r->why, sizeof(r->why),
					 "%s %s: not a date in the format %s",
					 f->kind == RECORD_SRC_XPATH ? "xpath" : "column", f->name,
					 f->date_fmt);
				rec->error = r->why;
			}
			r->val_len[i] = 0;
			continue;
		}
		r->val_off[i] = r->vals.len;
		r->val_len[i] = strlen(dtm);
		buf_append(&r->vals, dtm, r->val_len[i]);
	}
	for (size_t i = 0; i < rm->nfields; i++)
		r->fields[i] =
		    slice_make(r->vals.data ? r->vals.data + r->val_off[i] : "", r->val_len[i]);
	rec->fields = r->fields;
	rec->nfields = rm->nfields;
}

static int
reader_text_header(record_reader_t *r, char *err, size_t errcap)
{
	const record_map_t *rm = r->rm;

	for (size_t i = 0; i < rm->nfields; i++)
		r->col_of[i] = -1;
	if (rm->format == RECORD_FIXED || !rm->header) {
		for (size_t i = 0; i < rm->nfields; i++)
			for (size_t c = 0; c < rm->ncols; c++)
				if (strcmp(rm->cols[c].name, rm->fields[i].name) == 0)
					r->col_of[i] = rm->format == RECORD_FIXED
							   ? (int)c
							   : (int)rm->cols[c].start - 1;
		return 0;
	}
	{
		const char *bad;
		buf_t name = BUF_INIT;

		if (reader_csv_row(r, &bad) == 0 || bad != NULL) {
			snprintf(err, errcap, "%s", bad ? bad : "the file has no header row");
			return -FG_EINVAL;
		}
		r->header = slice_make(r->data + r->raw_start, r->raw_end - r->raw_start);
		r->rowmax = r->ncells;
		for (size_t c = 0; c < r->ncells; c++) {
			reader_put_text(rm, &r->hnames, r->cells.data + r->cell_off[c],
					r->cell_len[c]);
			buf_append_byte(&r->hnames, '\0');
		}
		for (size_t i = 0; i < rm->nfields; i++) {
			for (size_t c = 0; c < r->ncells && r->col_of[i] < 0; c++) {
				buf_reset(&name);
				reader_put_text(rm, &name, r->cells.data + r->cell_off[c],
						r->cell_len[c]);
				if (name.len == strlen(rm->fields[i].name) &&
				    memcmp(name.data, rm->fields[i].name, name.len) == 0)
					r->col_of[i] = (int)c;
			}
			if (r->col_of[i] < 0) {
				snprintf(err, errcap, "the header has no column '%s'",
					 rm->fields[i].name);
				buf_free(&name);
				return -FG_EINVAL;
			}
		}
		buf_free(&name);
	}
	return 0;
}

static record_reader_t *
reader_new(const record_map_t *rm)
{
	record_reader_t *r = xcalloc(1, sizeof(*r));
	size_t nf = rm->nfields ? rm->nfields : 1;

	r->rm = rm;
	buf_init(&r->cells, 0);
	buf_init(&r->vals, 0);
	buf_init(&r->hnames, 0);
	r->cell_off = xcalloc(RECORD_ROW_FIELDS_MAX, sizeof(size_t));
	r->cell_len = xcalloc(RECORD_ROW_FIELDS_MAX, sizeof(size_t));
	r->col_of = xcalloc(nf, sizeof(int));
	r->val_off = xcalloc(nf, sizeof(size_t));
	r->val_len = xcalloc(nf, sizeof(size_t));
	r->fields = xcalloc(nf, sizeof(slice_t));
	return r;
}

static void
reader_xml_error(void *arg, const char *msg, xmlParserSeverities sev, xmlTextReaderLocatorPtr loc)
{
	record_reader_t *r = arg;
	size_t n;

	if (sev != XML_PARSER_SEVERITY_ERROR && sev != XML_PARSER_SEVERITY_VALIDITY_ERROR)
		return;
	reader_set_error(r, "XML line %d: %s", xmlTextReaderLocatorLineNumber(loc), msg);
	n = strlen(r->err);
	while (n > 0 && (r->err[n - 1] == '\n' || r->err[n - 1] == ' '))
		r->err[--n] = '\0';
}

static int
reader_xml_setup(record_reader_t *r, char *err, size_t errcap)
{
	const record_map_t *rm = r->rm;

	if (r->xr == NULL) {
		snprintf(err, errcap, "cannot read the XML input");
		return -FG_EIO;
	}
	xmlTextReaderSetErrorHandler(r->xr, reader_xml_error, r);
	r->xctx = xmlXPathNewContext(NULL);
	for (size_t i = 0; i < rm->nns; i++)
		xmlXPathRegisterNs(r->xctx, (const xmlChar *)rm->ns[i].prefix,
				   (const xmlChar *)rm->ns[i].uri);
	r->xexpr = xcalloc(rm->nfields ? rm->nfields : 1, sizeof(*r->xexpr));
	for (size_t i = 0; i < rm->nfields; i++)
		r->xexpr[i] = xmlXPathCtxtCompile(r->xctx, (const xmlChar *)rm->fields[i].name);
	r->depth0 = -1;
	return 0;
}

static bool
reader_step_is(const record_map_t *rm, const record_step_t *st, const char *name, const char *uri)
{
	const char *want = reader_ns_uri(rm, st->prefix);

	return strcmp(name, st->local) == 0 && strcmp(uri, want ? want : "") == 0;
}

/* Whether steps [0, i) match names [0, j), the step i-1 matching names[j-1] ("//" before a step:
 * any levels between it and the step before). */
static bool
reader_path_match(const record_map_t *rm, size_t i, char **names, char **uris, size_t j)
{
	const record_step_t *st;

	if (i == 0)
		return j == 0;
	if (j == 0)
		return false;
	st = &rm->steps[i - 1];
	if (!reader_step_is(rm, st, names[j - 1], uris[j - 1]))
		return false;
	if (!st->descendant)
		return reader_path_match(rm, i - 1, names, uris, j - 1);
	if (i == 1)
		return true;
	for (size_t k = j - 1; k > 0; k--)
		if (reader_path_match(rm, i - 1, names, uris, k))
			return true;
	return false;
}

/* Builds the start tag of an ancestor with its namespace declarations (for reject documents). */
static char *
reader_xml_start_tag(xmlTextReaderPtr xr)
{
	buf_t b = BUF_INIT;
	char *s;

	buf_printf(&b, "<%s", (const char *)xmlTextReaderConstName(xr));
	if (xmlTextReaderHasAttributes(xr)) {
		while (xmlTextReaderMoveToNextAttribute(xr) == 1)
			if (xmlTextReaderIsNamespaceDecl(xr) == 1) {
				xmlChar *v = xmlTextReaderValue(xr);

				buf_printf(&b, " %s=\"%s\"",
					   (const char *)xmlTextReaderConstName(xr),
					   (const char *)v);
				xmlFree(v);
			}
		xmlTextReaderMoveToElement(xr);
	}
	buf_append_cstr(&b, ">");
	buf_append_byte(&b, '\0');
	s = xstrdup(b.data);
	buf_free(&b);
	return s;
}

/* Next record element (expanded into r->node); 1, 0 at the end, or -1 with r->err. */
static int
reader_xml_next_node(record_reader_t *r, bool advance)
{
	char **names = r->names, **uris = r->uris;
	int rc;

	if (advance)
		rc = xmlTextReaderNext(r->xr);
	else
		rc = xmlTextReaderRead(r->xr);
	for (; rc == 1; rc = xmlTextReaderRead(r->xr)) {
		int type = xmlTextReaderNodeType(r->xr);
		int depth = xmlTextReaderDepth(r->xr);

		if (type == XML_READER_TYPE_DOCUMENT_TYPE) {
			r->err[0] = '\0'; /* this says more than an undefined entity before it */
			reader_set_error(r, "the document has a DOCTYPE: DTDs and entities are "
					    "refused (remove the DOCTYPE line)");
			return -1;
		}
		if (type == XML_READER_TYPE_END_ELEMENT && depth >= 0 && (size_t)depth < r->nopen) {
			while (r->nopen > (size_t)depth) {
				r->nopen--;
				free(r->open_tags[r->nopen]);
				free(r->open_names[r->nopen]);
			}
			continue;
		}
		if (type != XML_READER_TYPE_ELEMENT)
			continue;
		if (depth >= 256) {
			reader_set_error(r, "XML nested deeper than 256 elements");
			return -1;
		}
		while (r->nopen > (size_t)depth) {
			r->nopen--;
			free(r->open_tags[r->nopen]);
			free(r->open_names[r->nopen]);
		}
		/* the chain of names, this element last */
		{
			const char *local = (const char *)xmlTextReaderConstLocalName(r->xr);
			const char *uri = (const char *)xmlTextReaderConstNamespaceUri(r->xr);
			size_t n = r->nopen;
			xmlNodePtr cur;

			for (size_t i = 0; i < n; i++) {
				names[i] = r->open_names[i];
				uris[i] = strchr(r->open_names[i], '\0') + 1;
			}
			names[n] = (char *)local;
			uris[n] = (char *)(uri ? uri : "");
			if (reader_path_match(r->rm, r->rm->nsteps, names, uris, n + 1)) {
				cur = xmlTextReaderExpand(r->xr);
				if (cur == NULL) {
					reader_set_error(r, "malformed XML in a record");
					return -1;
				}
				r->node = cur;
				return 1;
			}
			if (xmlTextReaderIsEmptyElement(r->xr))
				continue;
			r->open_tags = xreallocarray(r->open_tags, n + 1, sizeof(char *));
			r->open_names = xreallocarray(r->open_names, n + 1, sizeof(char *));
			r->open_tags[n] = reader_xml_start_tag(r->xr);
			{
				size_t ll = strlen(local), ul = uri ? strlen(uri) : 0;
				char *nm = xmalloc(ll + ul + 2);

				memcpy(nm, local, ll + 1);
				memcpy(nm + ll + 1, uri ? uri : "", ul + 1);
				r->open_names[n] = nm;
			}
			r->nopen = n + 1;
		}
	}
	if (rc < 0) {
		/* after this call the document is ours to free (record_reader_free) */
		xmlDocPtr doc = r->doc ? r->doc : (r->doc = xmlTextReaderCurrentDoc(r->xr));

		/* the parser may stop on an entity of the DTD before the DOCTYPE node comes out */
		if (doc != NULL && (doc->intSubset != NULL || doc->extSubset != NULL)) {
			r->err[0] = '\0';
			reader_set_error(r, "the document has a DOCTYPE: DTDs and entities are "
					    "refused (remove the DOCTYPE line)");
		}
		reader_set_error(r, "malformed XML");
		return -1;
	}
	return 0;
}

static int
reader_xml_record(record_reader_t *r, record_t *rec)
{
	const record_map_t *rm = r->rm;
	int rc = reader_xml_next_node(r, r->node != NULL);

	if (rc <= 0) {
		r->node = NULL;
		return rc;
	}
	r->number++;
	memset(rec, 0, sizeof(*rec));
	rec->number = r->number;
	rec->line = (uint64_t)xmlGetLineNo(r->node);
	buf_reset(&r->vals);
	r->xctx->node = r->node;
	r->xctx->doc = r->node->doc;
	for (size_t i = 0; i < rm->nfields; i++) {
		xmlXPathObjectPtr o =
		    r->xexpr[i] ? xmlXPathCompiledEval(r->xexpr[i], r->xctx) : NULL;
		xmlChar *s = o ? xmlXPathCastToString(o) : NULL;

		r->val_off[i] = r->vals.len;
		if (s != NULL)
			reader_put_text(rm, &r->vals, (const char *)s, strlen((const char *)s));
		r->val_len[i] = r->vals.len - r->val_off[i];
		if (o == NULL && rec->error == NULL) {
			snprintf(r->why, sizeof(r->why), "xpath %s: cannot be evaluated here",
				 rm->fields[i].name);
			rec->error = r->why;
		}
		xmlFree(s);
		xmlXPathFreeObject(o);
	}
	reader_finish_fields(r, rec);
	rec->next_offset = (uint64_t)xmlTextReaderByteConsumed(r->xr);
	return 1;
}

static int
reader_open_common(record_reader_t *r, uint64_t offset, uint64_t number, char *err, size_t errcap)
{
	const record_map_t *rm = r->rm;
	int rc;

	if (rm->format == RECORD_XML) {
		rc = reader_xml_setup(r, err, errcap);
		/* XML resumes by record count: the ancestors must be read again anyway */
		while (rc == 0 && r->number < number) {
			int n = reader_xml_next_node(r, r->node != NULL);

			if (n <= 0) {
				snprintf(err, errcap, "%s",
					 n < 0 ? r->err
					       : "the file has fewer records than the checkpoint");
				return -FG_EINVAL;
			}
			r->number++;
		}
		return rc;
	}
	if (r->len >= 3 && memcmp(r->data, "\xef\xbb\xbf", 3) == 0)
		r->pos = 3;
	rc = reader_text_header(r, err, errcap);
	if (rc == 0 && offset > 0) {
		if (offset > r->len) {
			snprintf(err, errcap, "the checkpoint is past the end of the file");
			return -FG_EINVAL;
		}
		/* lines before the offset: counted again so that errors name the right line */
		for (size_t i = r->pos; i < offset; i++)
			r->line += r->data[i] == '\n';
		r->pos = offset;
		r->number = number;
	}
	return rc;
}

int
record_reader_open_mem(const record_map_t *rm, const char *data, size_t len, record_reader_t **out,
		       char *err, size_t errcap)
{
	record_reader_t *r = reader_new(rm);
	int rc;

	r->data = data;
	r->len = len;
	r->size = len;
	if (rm->format == RECORD_XML)
		r->xr = xmlReaderForMemory(data, (int)len, NULL, NULL, XML_PARSE_NONET);
	rc = reader_open_common(r, 0, 0, err, errcap);
	if (rc < 0) {
		record_reader_free(r);
		return rc;
	}
	*out = r;
	return 0;
}

int
record_reader_open(const record_map_t *rm, const char *path, uint64_t offset, uint64_t number,
		   record_reader_t **out, char *err, size_t errcap)
{
	record_reader_t *r;
	struct stat st;
	int fd, rc;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) != 0) {
		snprintf(err, errcap, "cannot open: %s", strerror(errno));
		if (fd >= 0)
			close(fd);
		return -FG_EIO;
	}
	r = reader_new(rm);
	r->size = (uint64_t)st.st_size;
	if (rm->format == RECORD_XML) {
		close(fd);
		r->xr = xmlReaderForFile(path, NULL, XML_PARSE_NONET);
	} else {
		if (st.st_size > 0) {
			r->map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
			if (r->map == MAP_FAILED) {
				r->map = NULL;
				snprintf(err, errcap, "cannot map the file: %s", strerror(errno));
				close(fd);
				record_reader_free(r);
				return -FG_EIO;
			}
			(void)madvise(r->map, (size_t)st.st_size, MADV_SEQUENTIAL);
		}
		close(fd);
		r->data = r->map ? r->map : "";
		r->len = (size_t)st.st_size;
	}
	rc = reader_open_common(r, offset, number, err, errcap);
	if (rc < 0) {
		record_reader_free(r);
		return rc;
	}
	*out = r;
	return 0;
}

int
record_reader_next(record_reader_t *r, record_t *rec)
{
	const record_map_t *rm = r->rm;
	int rc;

	if (r->err[0] != '\0')
		return -1;
	if (rm->format == RECORD_XML)
		return reader_xml_record(r, rec);
	for (;;) {
		const char *bad = NULL;
		uint64_t line = r->line + 1;

		memset(rec, 0, sizeof(*rec));
		if (rm->format == RECORD_CSV) {
			rc = reader_csv_row(r, &bad);
			if (rc == 1 && bad == NULL && reader_row_blank(r))
				continue; /* blank lines (a trailing one, above all) are no records
					   */
		} else {
			rc = reader_fixed_row(r);
			if (rc == 2)
				continue;
		}
		if (rc == 0)
			return 0;
		r->number++;
		rec->number = r->number;
		rec->line = line;
		rec->next_offset = r->pos;
		if (bad != NULL) {
			snprintf(r->why, sizeof(r->why), "%s", bad);
			rec->error = r->why;
		}
		reader_fields_from_cells(r, rec);
		reader_finish_fields(r, rec);
		return 1;
	}
}

const char *
record_reader_error(const record_reader_t *r)
{
	return r->err;
}

void
record_reader_raw(record_reader_t *r, buf_t *out)
{
	if (r->rm->format != RECORD_XML) {
		buf_append(out, r->data + r->raw_start, r->raw_end - r->raw_start);
		if (r->raw_end == r->raw_start || r->data[r->raw_end - 1] != '\n')
			buf_append_byte(out, '\n');
		return;
	}
	if (r->node != NULL) {
		xmlBufferPtr xb = xmlBufferCreate();

		xmlNodeDump(xb, r->node->doc, r->node, 0, 0);
		buf_append(out, xmlBufferContent(xb), (size_t)xmlBufferLength(xb));
		buf_append_byte(out, '\n');
		xmlBufferFree(xb);
	}
}

uint64_t
record_reader_offset(const record_reader_t *r)
{
	if (r->rm->format == RECORD_XML)
		return r->xr ? (uint64_t)xmlTextReaderByteConsumed(r->xr) : 0;
	return r->pos;
}

uint64_t
record_reader_size(const record_reader_t *r)
{
	return r->size;
}

slice_t
record_reader_header(const record_reader_t *r)
{
	return r->header;
}

void
record_reader_unread_columns(const record_reader_t *r, buf_t *out)
{
	const char *p = r->hnames.data;

	for (size_t c = 0; p != NULL && c < r->rowmax; c++) {
		bool used = false;

		for (size_t i = 0; i < r->rm->nfields; i++)
			used |= r->col_of[i] == (int)c;
		if (!used && *p != '\0')
			buf_printf(out, "%s%s", out->len ? ", " : "", p);
		p += strlen(p) + 1;
	}
}

void
record_reader_xml_frame(const record_reader_t *r, buf_t *open, buf_t *close)
{
	if (r->rm->format != RECORD_XML)
		return;
	buf_append_cstr(open, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
	for (size_t i = 0; i < r->nopen; i++) {
		buf_append_cstr(open, r->open_tags[i]);
		buf_append_byte(open, '\n');
	}
	for (size_t i = r->nopen; i > 0; i--) {
		const char *tag = r->open_tags[i - 1] + 1;
		size_t n = strcspn(tag, " >");

		buf_printf(close, "</%.*s>\n", (int)n, tag);
	}
}

void
record_reader_free(record_reader_t *r)
{
	if (r == NULL)
		return;
	if (r->map != NULL)
		munmap(r->map, r->len);
	if (r->xexpr != NULL)
		for (size_t i = 0; i < r->rm->nfields; i++)
			xmlXPathFreeCompExpr(r->xexpr[i]);
	free(r->xexpr);
	if (r->xctx != NULL)
		xmlXPathFreeContext(r->xctx);
	if (r->xr != NULL)
		xmlFreeTextReader(r->xr);
	if (r->doc != NULL)
		xmlFreeDoc(r->doc);
	for (size_t i = 0; i < r->nopen; i++) {
		free(r->open_tags[i]);
		free(r->open_names[i]);
	}
	free(r->open_tags);
	free(r->open_names);
	buf_free(&r->cells);
	buf_free(&r->vals);
	buf_free(&r->hnames);
	free(r->cell_off);
	free(r->cell_len);
	free(r->col_of);
	free(r->val_off);
	free(r->val_len);
	free(r->fields);
	free(r);
}
