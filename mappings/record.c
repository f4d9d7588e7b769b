/* Record maps: the header (reader, separator, columns, namespaces, date format) is read here; the
 * resource sections are rewritten, line for line and column for column, into a message map and
 * one segment map per resource over the pseudo segment ZRC, then loaded by the mapping engine. */
#include "config.h"

#include "mappings/record.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libxml/xpath.h>
#include <libxml/xpathInternals.h>

#include "lib/err.h"
#include "lib/hash.h"
#include "lib/xalloc.h"
#include "mappings/record_int.h"

/* Longest record map accepted. */
#define RECORD_FILE_MAX (1u << 20)

typedef struct {
	record_map_t *rm;
	const char *shown;
	map_diag_fn fn;
	void *arg;
	size_t errors;
	unsigned lineno;
	/* resource lines: rewritten text is longer before the condition, by shift[line] */
	unsigned *shift;
	size_t nlines;
} record_ps_t;

static void record_fail(record_ps_t *ps, unsigned col, const char *hint, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void
record_fail(record_ps_t *ps, unsigned col, const char *hint, const char *fmt, ...)
{
	char text[512];
	va_list ap;
	map_diag_t d;

	ps->errors++;
	if (ps->fn == NULL)
		return;
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	d.level = MAP_DIAG_ERROR;
	d.file = ps->shown;
	d.line = ps->lineno;
	d.col = col;
	d.text = text;
	d.hint = hint;
	ps->fn(&d, ps->arg);
}

/* A tiny lexer for header lines: words, "strings", numbers and punctuation. */
typedef struct {
	const char *line, *p, *end;
	char kind; /* 'w' word, 's' string, 'n' number, 'p' punctuation, 0 end, '!' bad */
	const char *tp;
	size_t tlen;
	char str[512]; /* unescaped string */
	unsigned col;
} record_lex_t;

static void
record_lex_next(record_lex_t *lx)
{
	while (lx->p < lx->end && (*lx->p == ' ' || *lx->p == '\t'))
		lx->p++;
	lx->tp = lx->p;
	lx->col = (unsigned)(lx->p - lx->line) + 1;
	if (lx->p >= lx->end || *lx->p == '#') {
		lx->kind = 0;
		lx->tlen = 0;
		return;
	}
	if (*lx->p == '"') {
		size_t n = 0;

		lx->p++;
		while (lx->p < lx->end && *lx->p != '"') {
			char c = *lx->p++;

			if (c == '\\' && lx->p < lx->end) {
				c = *lx->p++;
				c = c == 't' ? '\t' : c == 'n' ? '\n' : c;
			}
			if (n + 1 < sizeof(lx->str))
				lx->str[n++] = c;
		}
		lx->str[n] = '\0';
		if (lx->p >= lx->end) {
			lx->kind = '!';
			return;
		}
		lx->p++;
		lx->kind = 's';
	} else if (isalpha((unsigned char)*lx->p) || *lx->p == '_') {
		while (lx->p < lx->end &&
		       (isalnum((unsigned char)*lx->p) || *lx->p == '_' || *lx->p == '-'))
			lx->p++;
		lx->kind = 'w';
	} else if (isdigit((unsigned char)*lx->p)) {
		while (lx->p < lx->end && isdigit((unsigned char)*lx->p))
			lx->p++;
		lx->kind = 'n';
	} else {
		lx->p++;
		lx->kind = 'p';
	}
	lx->tlen = (size_t)(lx->p - lx->tp);
}

static bool
record_lex_is(const record_lex_t *lx, const char *w)
{
	return lx->kind == 'w' && lx->tlen == strlen(w) && strncasecmp(lx->tp, w, lx->tlen) == 0;
}

static unsigned
record_lex_num(const record_lex_t *lx)
{
	unsigned v = 0;

	for (size_t i = 0; i < lx->tlen && v < 100000; i++)
		v = v * 10 + (unsigned)(lx->tp[i] - '0');
	return v;
}

static const char *
record_format_name(record_format_t f)
{
	return f == RECORD_CSV ? "csv" : f == RECORD_FIXED ? "fixed" : "xml";
}

/* Checks a date format: only the directives record_date_to_dtm knows. */
static bool
record_date_fmt_ok(const char *fmt)
{
	bool year = false;

	for (const char *p = fmt; *p; p++) {
		if (*p != '%')
			continue;
		p++;
		if (*p == 'Y' || *p == 'y')
			year = true;
		else if (strchr("mdHMSb%", *p) == NULL || *p == '\0')
			return false;
	}
	return year;
}

/* One header line ("reader csv", "separator \";\"", ...). */
static void
record_parse_header(record_ps_t *ps, record_lex_t *lx)
{
	record_map_t *rm = ps->rm;
	unsigned col = lx->col;

	if (record_lex_is(lx, "reader")) {
		record_lex_next(lx);
		if (record_lex_is(lx, "csv"))
			rm->format = RECORD_CSV;
		else if (record_lex_is(lx, "fixed"))
			rm->format = RECORD_FIXED;
		else if (record_lex_is(lx, "xml"))
			rm->format = RECORD_XML;
		else {
			record_fail(ps, lx->col, "reader csv, reader fixed or reader xml",
				    "unknown reader");
			return;
		}
		rm->have_reader = true;
		record_lex_next(lx);
	} else if (record_lex_is(lx, "separator") || record_lex_is(lx, "quote")) {
		bool sep = record_lex_is(lx, "separator");

		record_lex_next(lx);
		if (lx->kind == 'w' && record_lex_is(lx, "tab")) {
			lx->str[0] = '\t';
			lx->str[1] = '\0';
		} else if (lx->kind != 's' || strlen(lx->str) != 1) {
			record_fail(ps, lx->col,
				    sep ? "separator \",\"  or  separator tab"
					: "quote \"\\\"\"  or  quote \"'\"",
				    "expected one character in quotes");
			return;
		}
		if (lx->str[0] == '\n' || lx->str[0] == '\r') {
			record_fail(ps, lx->col, NULL, "a line break cannot separate fields");
			return;
		}
		if (sep)
			rm->sep = lx->str[0];
		else
			rm->quote = lx->str[0];
		record_lex_next(lx);
	} else if (record_lex_is(lx, "header")) {
		record_lex_next(lx);
		if (record_lex_is(lx, "yes") || record_lex_is(lx, "no")) {
			rm->header = record_lex_is(lx, "yes");
			record_lex_next(lx);
		} else {
			record_fail(ps, lx->col, "header yes  or  header no", "expected yes or no");
			return;
		}
	} else if (record_lex_is(lx, "encoding")) {
		record_lex_next(lx);
		if (record_lex_is(lx, "utf-8") || record_lex_is(lx, "utf8"))
			rm->encoding = RECORD_ENC_UTF8;
		else if (record_lex_is(lx, "latin1") || record_lex_is(lx, "iso-8859-1"))
			rm->encoding = RECORD_ENC_LATIN1;
		else if (record_lex_is(lx, "windows-1252") || record_lex_is(lx, "cp1252"))
			rm->encoding = RECORD_ENC_CP1252;
		else {
			record_fail(ps, lx->col, "utf-8, latin1 or windows-1252",
				    "unknown encoding");
			return;
		}
		record_lex_next(lx);
	} else if (record_lex_is(lx, "date-format")) {
		record_lex_next(lx);
		if (lx->kind != 's' || !record_date_fmt_ok(lx->str)) {
			record_fail(ps, lx->col,
				    "e.g. date-format \"%d/%m/%Y\" (%Y %y %m %d %H %M %S %b)",
				    "expected a date format with a year");
			return;
		}
		free(rm->date_fmt);
		rm->date_fmt = xstrdup(lx->str);
		record_lex_next(lx);
	} else if (record_lex_is(lx, "record")) {
		record_lex_next(lx);
		if (lx->kind != 's' || record_path_parse(rm, lx->str) < 0) {
			record_fail(ps, lx->col, "record \"/export/visit\" or record \"//h:visit\"",
				    "expected the path of the record elements");
			return;
		}
		record_lex_next(lx);
	} else if (record_lex_is(lx, "namespace")) {
		char *prefix;

		record_lex_next(lx);
		if (lx->kind != 'w') {
			record_fail(ps, lx->col, "namespace h = \"urn:hospital:export\"",
				    "expected a prefix");
			return;
		}
		prefix = xmemdup0(lx->tp, lx->tlen);
		record_lex_next(lx);
		if (lx->kind == 'p' && *lx->tp == '=')
			record_lex_next(lx);
		if (lx->kind != 's') {
			record_fail(ps, lx->col, "namespace h = \"urn:hospital:export\"",
				    "expected the namespace URI in quotes");
			free(prefix);
			return;
		}
		rm->ns = xreallocarray(rm->ns, rm->nns + 1, sizeof(*rm->ns));
		rm->ns[rm->nns].prefix = prefix;
		rm->ns[rm->nns++].uri = xstrdup(lx->str);
		record_lex_next(lx);
	} else if (record_lex_is(lx, "column")) {
		record_column_t c;

		memset(&c, 0, sizeof(c));
		record_lex_next(lx);
		if (lx->kind != 'w' && lx->kind != 's') {
			record_fail(ps, lx->col,
				    "column MRN 1-10  (fixed)  or  column MRN 3  (csv)",
				    "expected a column name");
			return;
		}
		c.name = lx->kind == 's' ? xstrdup(lx->str) : xmemdup0(lx->tp, lx->tlen);
		record_lex_next(lx);
		if (lx->kind != 'n' || (c.start = record_lex_num(lx)) == 0) {
			record_fail(ps, lx->col,
				    "column MRN 1-10  (fixed)  or  column MRN 3  (csv)",
				    "expected its position (1 is the first)");
			free(c.name);
			return;
		}
		c.end = c.start;
		record_lex_next(lx);
		if (lx->kind == 'p' && *lx->tp == '-') {
			record_lex_next(lx);
			if (lx->kind != 'n' || (c.end = record_lex_num(lx)) < c.start) {
				record_fail(ps, lx->col, "column NAME FIRST-LAST, e.g. 1-10",
					    "expected the last character's position");
				free(c.name);
				return;
			}
			c.range = true;
			record_lex_next(lx);
		}
		for (size_t i = 0; i < rm->ncols; i++)
			if (strcmp(rm->cols[i].name, c.name) == 0) {
				record_fail(ps, col, NULL, "column '%s' declared twice", c.name);
				free(c.name);
				return;
			}
		rm->cols = xreallocarray(rm->cols, rm->ncols + 1, sizeof(*rm->cols));
		rm->cols[rm->ncols++] = c;
	} else {
		record_fail(
		    ps, col,
		    "the header has reader, separator, quote, header, encoding, "
		    "date-format, column, record and namespace lines; then 'resource Type[n]'",
		    "unknown header line");
		return;
	}
	if (lx->kind == '!')
		record_fail(ps, lx->col, NULL, "unterminated string");
	else if (lx->kind != 0)
		record_fail(ps, lx->col, NULL, "unexpected text");
}

/* The field number of a source (1-based), adding it when new. */
static unsigned
record_field_add(record_map_t *rm, record_src_t kind, const char *name, const char *fmt)
{
	for (size_t i = 0; i < rm->nfields; i++) {
		const record_field_t *f = &rm->fields[i];

		if (f->kind == kind && strcmp(f->name, name) == 0 &&
		    (f->date_fmt == NULL) == (fmt == NULL) &&
		    (fmt == NULL || strcmp(fmt, f->date_fmt) == 0))
			return (unsigned)i + 1;
	}
	rm->fields = xreallocarray(rm->fields, rm->nfields + 1, sizeof(*rm->fields));
	memset(&rm->fields[rm->nfields], 0, sizeof(rm->fields[0]));
	rm->fields[rm->nfields].kind = kind;
	rm->fields[rm->nfields].name = xstrdup(name);
	rm->fields[rm->nfields].date_fmt = fmt ? xstrdup(fmt) : NULL;
	rm->fields[rm->nfields].shown =
	    fmt ? xasprintf("date(%s(\"%s\"), \"%s\")",
			    kind == RECORD_SRC_XPATH ? "xpath" : "column", name, fmt)
		: xasprintf("%s(\"%s\")", kind == RECORD_SRC_XPATH ? "xpath" : "column", name);
	return (unsigned)++rm->nfields;
}

/* Reads `"text"` at *p (after blanks) into out; false when there is none. */
static bool
record_take_string(const char **p, const char *end, char *out, size_t cap)
{
	size_t n = 0;

	while (*p < end && (**p == ' ' || **p == '\t'))
		(*p)++;
	if (*p >= end || **p != '"')
		return false;
	(*p)++;
	while (*p < end && **p != '"') {
		char c = *(*p)++;

		if (c == '\\' && *p < end)
			c = *(*p)++;
		if (n + 1 < cap)
			out[n++] = c;
	}
	if (*p >= end)
		return false;
	(*p)++;
	out[n] = '\0';
	return true;
}

static bool
record_take(const char **p, const char *end, char c)
{
	while (*p < end && (**p == ' ' || **p == '\t'))
		(*p)++;
	if (*p < end && **p == c) {
		(*p)++;
		return true;
	}
	return false;
}

static bool
record_word_at(const char *p, const char *end, const char *w)
{
	size_t n = strlen(w);

	return (size_t)(end - p) >= n && memcmp(p, w, n) == 0;
}

static void
record_xpath_quiet(void *arg, xmlErrorPtr e)
{
	(void)arg;
	(void)e;
}

/* Checks that a source fits the reader: a declared column, a compilable XPath. */
static void
record_check_source(record_ps_t *ps, record_src_t kind, const char *name, unsigned col)
{
	record_map_t *rm = ps->rm;

	if (kind == RECORD_SRC_XPATH) {
		xmlXPathCompExprPtr c;
		xmlXPathContextPtr ctx;

		if (rm->format != RECORD_XML) {
			record_fail(ps, col, "xpath(...) reads XML records; use column(\"NAME\")",
				    "xpath() with reader %s", record_format_name(rm->format));
			return;
		}
		ctx = xmlXPathNewContext(NULL);
		ctx->error = record_xpath_quiet; /* the diagnostic below says it */
		for (size_t i = 0; i < rm->nns; i++)
			xmlXPathRegisterNs(ctx, (const xmlChar *)rm->ns[i].prefix,
					   (const xmlChar *)rm->ns[i].uri);
		c = xmlXPathCtxtCompile(ctx, (const xmlChar *)name);
		xmlXPathFreeContext(ctx);
		if (c == NULL)
			record_fail(ps, col, "e.g. xpath(\"patient/@mrn\"), xpath(\"h:name\")",
				    "not a valid XPath expression");
		xmlXPathFreeCompExpr(c);
		return;
	}
	if (rm->format == RECORD_XML) {
		record_fail(ps, col, "XML records take xpath(\"...\")", "column() with reader xml");
		return;
	}
	if (rm->format == RECORD_FIXED || !rm->header) {
		for (size_t i = 0; i < rm->ncols; i++)
			if (strcmp(rm->cols[i].name, name) == 0)
				return;
		record_fail(
		    ps, col,
		    rm->format == RECORD_FIXED
			? "declare it in the header: column NAME FIRST-LAST"
			: "declare it in the header (column NAME POSITION), or say header yes",
		    "no column '%s' is declared", name);
	}
}

/* Replaces column(..), xpath(..) and date(..) in a body line by ZRC-n padded with blanks, so that
 * every other token keeps its column. Returns the rewritten line (caller frees). */
static char *
record_rewrite(record_ps_t *ps, const char *line, size_t len)
{
	char *out = xmemdup0(line, len);
	const char *p = line, *end = line + len;

	while (p < end) {
		const char *start = p;
		bool date = false;
		record_src_t kind = RECORD_SRC_COLUMN;
		char name[512], fmt[128];
		const char *usefmt;
		unsigned n;
		char rep[16];
		size_t span;

		if (*p == '#')
			break;
		if (*p == '"') {
			p++;
			while (p < end && *p != '"')
				p += *p == '\\' && p + 1 < end ? 2 : 1;
			p++;
			continue;
		}
		if (!(isalpha((unsigned char)*p)) ||
		    (p > line && (isalnum((unsigned char)p[-1]) || p[-1] == '_' || p[-1] == '.'))) {
			p++;
			continue;
		}
		if (record_word_at(p, end, "date(")) {
			date = true;
			p += 5;
			while (p < end && (*p == ' ' || *p == '\t'))
				p++;
		}
		if (record_word_at(p, end, "column(")) {
			p += 7;
		} else if (record_word_at(p, end, "xpath(")) {
			kind = RECORD_SRC_XPATH;
			p += 6;
		} else if (date && p < end && *p == '"') {
			kind = ps->rm->format == RECORD_XML ? RECORD_SRC_XPATH : RECORD_SRC_COLUMN;
			if (!record_take_string(&p, end, name, sizeof(name)))
				goto bad;
			goto after_inner;
		} else if (date) {
			goto bad;
		} else {
			while (p < end && (isalnum((unsigned char)*p) || *p == '_'))
				p++;
			continue;
		}
		if (!record_take_string(&p, end, name, sizeof(name)) || !record_take(&p, end, ')'))
			goto bad;
	after_inner:
		usefmt = NULL;
		if (date) {
			if (record_take(&p, end, ',')) {
				const char *at;

				while (p < end && (*p == ' ' || *p == '\t'))
					p++;
				at = p;
				if (!record_take_string(&p, end, fmt, sizeof(fmt)) ||
				    !record_date_fmt_ok(fmt)) {
					record_fail(ps, (unsigned)(at - line) + 1,
						    "date(column(\"DOB\"), \"%d/%m/%Y\")",
						    "expected a date format with a year");
					free(out);
					return NULL;
				}
				usefmt = fmt;
			} else if (ps->rm->date_fmt != NULL) {
				usefmt = ps->rm->date_fmt;
			} else {
				usefmt = "%Y-%m-%d";
			}
			if (!record_take(&p, end, ')'))
				goto bad;
		}
		if (name[0] == '\0') {
			record_fail(ps, (unsigned)(start - line) + 1, NULL,
				    "empty column or XPath");
			free(out);
			return NULL;
		}
		record_check_source(ps, kind, name, (unsigned)(start - line) + 1);
		n = record_field_add(ps->rm, kind, name, usefmt);
		if (n > RECORD_FIELDS_MAX) {
			record_fail(ps, (unsigned)(start - line) + 1, NULL,
				    "more than %d different sources in one record map",
				    RECORD_FIELDS_MAX);
			free(out);
			return NULL;
		}
		span = (size_t)(p - start);
		snprintf(rep, sizeof(rep), "ZRC-%u", n);
		/* the shortest source, date("A"), is 9 bytes: ZRC-999 always fits */
		memset(out + (start - line), ' ', span);
		memcpy(out + (start - line), rep, strlen(rep));
		continue;
	bad:
		record_fail(ps, (unsigned)(start - line) + 1,
			    "column(\"MRN\"), xpath(\"patient/@id\"), date(column(\"DOB\")) or "
			    "date(column(\"DOB\"), \"%d/%m/%Y\")",
			    "malformed source");
		free(out);
		return NULL;
	}
	return out;
}

typedef struct {
	char type[64];
	unsigned index;
	unsigned lineno;
	bool refonly;
	buf_t text; /* its segment map */
} record_res_t;

/* Appends line (or an empty line) to every text so that line numbers stay the file's. */
static void
record_texts_add(buf_t *msg, record_res_t *res, size_t nres, size_t target_res,
		 const char *seg_line, const char *msg_line)
{
	buf_append_cstr(msg, msg_line ? msg_line : "");
	buf_append_byte(msg, '\n');
	for (size_t i = 0; i < nres; i++) {
		if (i == target_res && seg_line != NULL)
			buf_append_cstr(&res[i].text, seg_line);
		buf_append_byte(&res[i].text, '\n');
	}
}

/* A reference line of a resource section: "path = Slot[n]" or "path = *". */
static bool
record_is_ref_line(const char *s)
{
	const char *eq = strstr(s, "=");
	const char *p;

	if (eq == NULL || eq == s || eq[-1] == '<' || eq[-1] == '!' || eq[-1] == '>')
		return false;
	for (p = s; p < eq; p++)
		if (*p == '"' || *p == '-' || *p == '(')
			return false;
	p = eq + 1;
	while (*p == ' ' || *p == '\t')
		p++;
	if (*p == '*')
		return true;
	if (!isupper((unsigned char)*p))
		return false;
	while (isalnum((unsigned char)*p))
		p++;
	return *p == '[';
}

/* Diagnostics of the rewritten files: columns of resource lines back to the file's, ZRC-n back
 * to the source it stands for. */
typedef struct {
	record_ps_t *ps;
} record_diag_ctx_t;

static void
record_diag(const map_diag_t *d, void *arg)
{
	record_ps_t *ps = arg;
	map_diag_t o = *d;
	buf_t t = BUF_INIT;
	const char *p = d->text;

	if (d->line > 0 && d->line <= ps->nlines && ps->shift[d->line - 1] > 0 &&
	    d->col > ps->shift[d->line - 1])
		o.col = d->col - ps->shift[d->line - 1];
	while (*p) {
		const char *z = strstr(p, "ZRC-");
		unsigned n = 0;
		const char *q;

		if (z == NULL) {
			buf_append_cstr(&t, p);
			break;
		}
		buf_append(&t, p, (size_t)(z - p));
		for (q = z + 4; isdigit((unsigned char)*q); q++)
			n = n * 10 + (unsigned)(*q - '0');
		if (n >= 1 && n <= ps->rm->nfields)
			buf_append_cstr(&t, ps->rm->fields[n - 1].shown);
		else
			buf_append(&t, z, (size_t)(q - z));
		p = q;
	}
	buf_append_byte(&t, '\0');
	o.text = t.data;
	if (o.level == MAP_DIAG_ERROR)
		ps->errors++;
	if (ps->fn != NULL)
		ps->fn(&o, ps->arg);
	buf_free(&t);
}

static void
record_map_init(record_map_t *rm, const char *shown)
{
	const char *base = strrchr(shown, '/');
	const char *dot;

	memset(rm, 0, sizeof(*rm));
	rm->sep = ',';
	rm->quote = '"';
	rm->header = true;
	base = base ? base + 1 : shown;
	dot = strrchr(base, '.');
	rm->name = xmemdup0(base, dot && dot > base ? (size_t)(dot - base) : strlen(base));
	rm->path = xstrdup(shown);
}

int
record_map_load(const char *shown, const char *data, size_t len, const char *dir,
		const char *site_dir, map_diag_fn diag, void *arg, record_map_t **out)
{
	record_map_t *rm = xcalloc(1, sizeof(*rm));
	record_ps_t ps;
	buf_t msg = BUF_INIT;
	record_res_t *res = NULL;
	size_t nres = 0;
	const char *p = data, *end = data + len;
	bool body = false;
	int rc = 0;

	record_map_init(rm, shown);
	memset(&ps, 0, sizeof(ps));
	ps.rm = rm;
	ps.shown = shown;
	ps.fn = diag;
	ps.arg = arg;
	buf_append_cstr(&msg, "");
	if (len > RECORD_FILE_MAX) {
		record_fail(&ps, 0, NULL, "file larger than %u bytes", RECORD_FILE_MAX);
		goto done;
	}
	if (end - p >= 3 && memcmp(p, "\xef\xbb\xbf", 3) == 0)
		p += 3;
	while (p < end) {
		const char *eol = p;
		record_lex_t lx;
		char *line;

		while (eol < end && *eol != '\n' && *eol != '\r')
			eol++;
		ps.lineno++;
		ps.shift = xreallocarray(ps.shift, ps.lineno, sizeof(*ps.shift));
		ps.shift[ps.lineno - 1] = 0;
		ps.nlines = ps.lineno;
		memset(&lx, 0, sizeof(lx));
		lx.line = lx.p = p;
		lx.end = eol;
		record_lex_next(&lx);
		if (memchr(p, '\0', (size_t)(eol - p)) != NULL) {
			record_fail(&ps, 1, NULL, "NUL byte in a mapping file");
			record_texts_add(&msg, res, nres, SIZE_MAX, NULL, NULL);
		} else if (lx.kind == 0) {
			record_texts_add(&msg, res, nres, SIZE_MAX, NULL, NULL);
		} else if (record_lex_is(&lx, "resource")) {
			record_res_t r;
			char *rest, *mline;
			unsigned rcol;

			body = true;
			memset(&r, 0, sizeof(r));
			record_lex_next(&lx);
			if (lx.kind != 'w' || lx.tlen >= sizeof(r.type) ||
			    !isupper((unsigned char)*lx.tp)) {
				record_fail(&ps, lx.col, "resource Patient[1]",
					    "expected a resource type");
				record_texts_add(&msg, res, nres, SIZE_MAX, NULL, NULL);
				goto next;
			}
			memcpy(r.type, lx.tp, lx.tlen);
			record_lex_next(&lx);
			r.index = 1;
			if (lx.kind == 'p' && *lx.tp == '[') {
				record_lex_next(&lx);
				if (lx.kind != 'n' || (r.index = record_lex_num(&lx)) == 0) {
					record_fail(&ps, lx.col, "resource Patient[1]",
						    "expected a number from 1");
					record_texts_add(&msg, res, nres, SIZE_MAX, NULL, NULL);
					goto next;
				}
				record_lex_next(&lx);
				if (!(lx.kind == 'p' && *lx.tp == ']')) {
					record_fail(&ps, lx.col, NULL, "expected ']'");
					record_texts_add(&msg, res, nres, SIZE_MAX, NULL, NULL);
					goto next;
				}
				record_lex_next(&lx);
			}
			for (size_t i = 0; i < nres; i++)
				if (strcmp(res[i].type, r.type) == 0 && res[i].index == r.index) {
					record_fail(&ps, 1, "number them: Patient[1], Patient[2]",
						    "resource %s[%u] is declared twice", r.type,
						    r.index);
					record_texts_add(&msg, res, nres, SIZE_MAX, NULL, NULL);
					goto next;
				}
			r.lineno = ps.lineno;
			if (record_lex_is(&lx, "reference-only")) {
				r.refonly = true;
				rm->refonly = xreallocarray(rm->refonly, rm->nrefonly + 1,
							    sizeof(*rm->refonly));
				rm->refonly[rm->nrefonly++] = xstrdup(r.type);
				record_lex_next(&lx);
			}
			rcol = lx.col;
			rest = record_rewrite(&ps, lx.tp, (size_t)(eol - lx.tp));
			if (rest == NULL) {
				record_texts_add(&msg, res, nres, SIZE_MAX, NULL, NULL);
				goto next;
			}
			mline = xasprintf("%s[%u] <- ZRC as ZRC[%s-R%u] %s", r.type, r.index,
					  r.type, r.index, rest);
			{
				size_t plen = strlen(mline) - strlen(rest);

				ps.shift[ps.lineno - 1] =
				    (unsigned)(plen > rcol - 1 ? plen - (rcol - 1) : 0);
			}
			buf_init(&r.text, 0);
			res = xreallocarray(res, nres + 1, sizeof(*res));
			res[nres] = r;
			/* the new resource's text gets the blank lines of everything above */
			for (unsigned i = 1; i < ps.lineno; i++)
				buf_append_byte(&res[nres].text, '\n');
			nres++;
			record_texts_add(&msg, res, nres, SIZE_MAX, NULL, mline);
			free(rest);
			free(mline);
		} else if (!body) {
			record_parse_header(&ps, &lx);
			record_texts_add(&msg, res, nres, SIZE_MAX, NULL, NULL);
		} else {
			line = record_rewrite(&ps, p, (size_t)(eol - p));
			if (line == NULL)
				record_texts_add(&msg, res, nres, SIZE_MAX, NULL, NULL);
			else if (record_is_ref_line(line))
				record_texts_add(&msg, res, nres, SIZE_MAX, NULL, line);
			else
				record_texts_add(&msg, res, nres, nres - 1, line, NULL);
			free(line);
		}
	next:
		p = eol;
		if (p < end && *p == '\r')
			p++;
		if (p < end && *p == '\n')
			p++;
	}
	for (size_t i = 0; i < rm->nrefonly; i++)
		for (size_t k = 0; k < nres; k++)
			if (strcmp(res[k].type, rm->refonly[i]) == 0 && !res[k].refonly) {
				ps.lineno = res[k].lineno;
				record_fail(&ps, 1,
					    "a record either stores its %s or only refers to it",
					    "%s is both stored and reference-only", rm->refonly[i]);
			}
	ps.lineno = 0; /* the problems below are the whole file's */
	if (!rm->have_reader)
		record_fail(&ps, 0, "start the file with: reader csv (or fixed, or xml)",
			    "no reader declared");
	else if (nres == 0)
		record_fail(&ps, 0, "resource Patient[1], then one line per element",
			    "no resource declared");
	if (rm->format == RECORD_XML && rm->nsteps == 0 && rm->have_reader)
		record_fail(&ps, 0, "record \"/export/visit\"", "XML records need a record path");
	if (rm->format == RECORD_FIXED && rm->ncols == 0 && rm->have_reader)
		record_fail(&ps, 0, "column NAME FIRST-LAST", "a fixed-width reader needs columns");
	/* the resource lines are checked even when the header has errors: every problem at once */
	if (nres > 0) {
		map_file_t *files = xcalloc(nres + 1, sizeof(*files));
		char **paths = xcalloc(nres + 1, sizeof(*paths));

		paths[0] = xstrdup("messages/ZRC_R01.map");
		files[0] = (map_file_t){paths[0], shown, msg.data, msg.len, false};
		for (size_t i = 0; i < nres; i++) {
			paths[i + 1] =
			    xasprintf("segments/ZRC-%s-R%u.map", res[i].type, res[i].index);
			files[i + 1] = (map_file_t){paths[i + 1], shown, res[i].text.data,
						    res[i].text.len, false};
		}
		ps.lineno = 0;
		rc = map_set_load_with(dir, site_dir, files, nres + 1, record_diag, &ps, &rm->set);
		for (size_t i = 0; i <= nres; i++)
			free(paths[i]);
		free(paths);
		free(files);
		if (rc == 0)
			rm->version = hash_fnv1a64(data, len, map_set_version(rm->set));
	}
done:
	for (size_t i = 0; i < nres; i++)
		buf_free(&res[i].text);
	free(res);
	buf_free(&msg);
	free(ps.shift);
	if (rc == 0 && ps.errors > 0)
		rc = -FG_ECONFIG;
	if (rc < 0) {
		record_map_free(rm);
		return rc;
	}
	*out = rm;
	return 0;
}

int
record_map_load_file(const char *path, const char *dir, const char *site_dir, map_diag_fn diag,
		     void *arg, record_map_t **out)
{
	FILE *f = fopen(path, "rb");
	buf_t b;
	char chunk[65536];
	size_t n;
	int rc;

	if (f == NULL) {
		map_diag_t d = {MAP_DIAG_ERROR, path, 0, 0, "cannot open the record map", NULL};

		if (diag)
			diag(&d, arg);
		return -FG_EIO;
	}
	buf_init(&b, RECORD_FILE_MAX + 1);
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		if (buf_append(&b, chunk, n) < 0)
			break;
	fclose(f);
	buf_append(&b, "", 0);
	rc = record_map_load(path, b.data ? b.data : "", b.len, dir, site_dir, diag, arg, out);
	buf_free(&b);
	return rc;
}

void
record_map_free(record_map_t *rm)
{
	if (rm == NULL)
		return;
	map_set_free(rm->set);
	for (size_t i = 0; i < rm->nfields; i++) {
		free(rm->fields[i].name);
		free(rm->fields[i].date_fmt);
		free(rm->fields[i].shown);
	}
	free(rm->fields);
	for (size_t i = 0; i < rm->ncols; i++)
		free(rm->cols[i].name);
	free(rm->cols);
	for (size_t i = 0; i < rm->nns; i++) {
		free(rm->ns[i].prefix);
		free(rm->ns[i].uri);
	}
	free(rm->ns);
	for (size_t i = 0; i < rm->nsteps; i++) {
		free(rm->steps[i].prefix);
		free(rm->steps[i].local);
	}
	free(rm->steps);
	for (size_t i = 0; i < rm->nrefonly; i++)
		free(rm->refonly[i]);
	free(rm->refonly);
	free(rm->date_fmt);
	free(rm->name);
	free(rm->path);
	free(rm);
}

record_format_t
record_map_format(const record_map_t *rm)
{
	return rm->format;
}

const char *
record_map_name(const record_map_t *rm)
{
	return rm->name;
}

const map_set_t *
record_map_set(const record_map_t *rm)
{
	return rm->set;
}

uint64_t
record_map_version(const record_map_t *rm)
{
	return rm->version;
}

bool
record_map_stores(const record_map_t *rm, slice_t type)
{
	for (size_t i = 0; i < rm->nrefonly; i++)
		if (slice_eq_cstr(type, rm->refonly[i]))
			return false;
	return true;
}

const char *
record_map_source_name(const record_map_t *rm, const char *source)
{
	unsigned n = 0;

	if (source == NULL || strncmp(source, "ZRC-", 4) != 0)
		return NULL;
	for (source += 4; isdigit((unsigned char)*source); source++)
		n = n * 10 + (unsigned)(*source - '0');
	return n >= 1 && n <= rm->nfields ? rm->fields[n - 1].shown : NULL;
}

/* HL7-escapes v into b: the delimiters and line breaks of a value cannot end a field. */
static void
record_escape(buf_t *b, slice_t v)
{
	for (size_t i = 0; i < v.len; i++) {
		char c = v.ptr[i];

		switch (c) {
		case '|':
			buf_append_cstr(b, "\\F\\");
			break;
		case '^':
			buf_append_cstr(b, "\\S\\");
			break;
		case '~':
			buf_append_cstr(b, "\\R\\");
			break;
		case '&':
			buf_append_cstr(b, "\\T\\");
			break;
		case '\\':
			buf_append_cstr(b, "\\E\\");
			break;
		case '\r':
			buf_append_cstr(b, "\\X0D\\");
			break;
		case '\n':
			buf_append_cstr(b, "\\X0A\\");
			break;
		default:
			buf_append_byte(b, c);
		}
	}
}

int
record_to_msg(const record_map_t *rm, const record_t *rec, slice_t key, arena_t *a, hl7_msg_t **out)
{
	buf_t b = BUF_INIT;
	hl7_limits_t lim;
	hl7_error_t err;
	slice_t s;
	int rc;

	buf_append_cstr(&b, "MSH|^~\\&|fhirgate-import|");
	record_escape(&b, slice_cstr(rm->name));
	buf_append_cstr(&b, "|||||ZRC^R01|");
	record_escape(&b, key);
	buf_append_cstr(&b, "|P|2.5||||||UNICODE UTF-8\rZRC");
	for (size_t i = 0; i < rm->nfields; i++) {
		buf_append_byte(&b, '|');
		if (i < rec->nfields)
			record_escape(&b, rec->fields[i]);
	}
	buf_append_byte(&b, '\r');
	s = arena_slice_dup(a, buf_slice(&b));
	buf_free(&b);
	hl7_limits_default(&lim);
	rc = hl7_parse(a, s.ptr, s.len, &lim, out, &err);
	return rc < 0 ? rc : 0;
}

static int
record_digits(const char **p, const char *end, int min, int max, int *out)
{
	int n = 0, v = 0;

	while (*p < end && n < max && isdigit((unsigned char)**p)) {
		v = v * 10 + (**p - '0');
		(*p)++;
		n++;
	}
	*out = v;
	return n >= min ? 0 : -1;
}

bool
record_date_to_dtm(slice_t v, const char *fmt, char *out, size_t cap)
{
	static const char *months[] = {"jan", "feb", "mar", "apr", "may", "jun",
				       "jul", "aug", "sep", "oct", "nov", "dec"};
	const char *p = v.ptr, *end = v.ptr + v.len;
	int y = -1, mo = -1, d = -1, h = -1, mi = -1, s = -1;

	for (const char *f = fmt; *f; f++) {
		int *dst = NULL, min = 1, max = 2;

		if (*f != '%') {
			if (p >= end || *p != *f)
				return false;
			p++;
			continue;
		}
		f++;
		switch (*f) {
		case 'Y':
			dst = &y, min = max = 4;
			break;
		case 'y':
			if (record_digits(&p, end, 2, 2, &y) < 0)
				return false;
			y += y < 69 ? 2000 : 1900; /* POSIX strptime's pivot */
			continue;
		case 'm':
			dst = &mo;
			break;
		case 'd':
			dst = &d;
			break;
		case 'H':
			dst = &h;
			break;
		case 'M':
			dst = &mi;
			break;
		case 'S':
			dst = &s;
			break;
		case 'b': {
			bool found = false;

			for (int i = 0; i < 12 && !found; i++)
				if (end - p >= 3 && strncasecmp(p, months[i], 3) == 0) {
					mo = i + 1;
					p += 3;
					found = true;
				}
			if (!found)
				return false;
			continue;
		}
		case '%':
			if (p >= end || *p != '%')
				return false;
			p++;
			continue;
		default:
			return false;
		}
		if (record_digits(&p, end, min, max, dst) < 0)
			return false;
	}
	if (p != end || y < 0)
		return false;
	/* the precision is what the format gives; map_dtm checks the calendar */
	if (mo < 0)
		return snprintf(out, cap, "%04d", y) < (int)cap;
	if (d < 0)
		return snprintf(out, cap, "%04d%02d", y, mo) < (int)cap;
	if (mo < 1 || mo > 12 || d < 1 || d > 31)
		return false;
	{
		static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
		bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;

		if (d > mdays[mo - 1] || (mo == 2 && d == 29 && !leap))
			return false;
	}
	if (h < 0)
		return snprintf(out, cap, "%04d%02d%02d", y, mo, d) < (int)cap;
	if (h > 23 || mi > 59 || s > 59)
		return false;
	if (s < 0)
		return snprintf(out, cap, "%04d%02d%02d%02d%02d", y, mo, d, h, mi < 0 ? 0 : mi) <
		       (int)cap;
	return snprintf(out, cap, "%04d%02d%02d%02d%02d%02d", y, mo, d, h, mi < 0 ? 0 : mi, s) <
	       (int)cap;
}
