/* The binding file parser: one statement per line, words separated by blanks, "quoted" text,
 * `#` comments; the first problem is reported as "file:line:col: what is wrong". The format is
 * documented in docs/scoring.md § Feature bindings. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"
#include "lib/err.h"
#include "lib/xalloc.h"
#include "scoring/features_int.h"

/* Longest binding or list file accepted: they are hand-written and small. */
#define FB_MAX_FILE (1u << 20)

/* Short names for the code systems bindings use. */
static const struct {
	const char *alias;
	const char *uri;
} fb_systems[] = {
    {"loinc", "http://loinc.org"},
    {"snomed", "http://snomed.info/sct"},
    {"icd10", "http://hl7.org/fhir/sid/icd-10"},
    {"icd10cm", "http://hl7.org/fhir/sid/icd-10-cm"},
    {"rxnorm", "http://www.nlm.nih.gov/research/umls/rxnorm"},
};

static const char *const fb_risk_codes[] = {"negligible", "low", "moderate", "high", "certain"};

typedef struct {
	const char *p; /* NULL at the end of the line */
	size_t len;
	unsigned col;
	bool quoted;
} fb_tok_t;

/* Parser state for one file; err is sticky: once set, everything returns quickly. */
typedef struct {
	features_binding_t *b;
	const char *name; /* of the file, for messages */
	const char *dir;
	unsigned lineno;
	const char *line;
	size_t line_len;
	size_t pos;
	fb_tok_t tok;
	bool err;
	char *msg;
	size_t cap;
} fb_ps_t;

static void fb_fail(fb_ps_t *ps, unsigned col, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
fb_fail(fb_ps_t *ps, unsigned col, const char *fmt, ...)
{
	char what[384];
	va_list ap;

	if (ps->err)
		return;
	ps->err = true;
	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	if (ps->cap > 0)
		snprintf(ps->msg, ps->cap, "%s:%u:%u: %s", ps->name, ps->lineno, col, what);
}

/* Moves to the next word or "string" of the line; tok.p NULL at the end or at a comment. */
static void
fb_next(fb_ps_t *ps)
{
	const char *s = ps->line;
	size_t n = ps->line_len, i = ps->pos, start;

	while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r'))
		i++;
	ps->tok = (fb_tok_t){NULL, 0, (unsigned)i + 1, false};
	if (i >= n || s[i] == '#') {
		ps->pos = n;
		return;
	}
	if (s[i] == '"') {
		start = ++i;
		while (i < n && s[i] != '"')
			i++;
		if (i >= n) {
			fb_fail(ps, (unsigned)start, "close the text with a double quote");
			ps->pos = n;
			return;
		}
		ps->tok = (fb_tok_t){s + start, i - start, (unsigned)start, true};
		ps->pos = i + 1;
		return;
	}
	start = i;
	while (i < n && s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '#' && s[i] != '"')
		i++;
	ps->tok = (fb_tok_t){s + start, i - start, (unsigned)start + 1, false};
	ps->pos = i;
}

static bool
fb_tok_is(const fb_ps_t *ps, const char *word)
{
	return ps->tok.p != NULL && !ps->tok.quoted &&
	       slice_eq_cstr(slice_make(ps->tok.p, ps->tok.len), word);
}

static char *
fb_tok_dup(fb_ps_t *ps)
{
	return arena_strndup(ps->b->a, ps->tok.p, ps->tok.len);
}

/* Parses the current token as a finite number. */
static bool
fb_tok_number(fb_ps_t *ps, double *out)
{
	char buf[64];
	char *end;

	if (ps->tok.p == NULL || ps->tok.quoted || ps->tok.len == 0 || ps->tok.len >= sizeof(buf))
		return false;
	memcpy(buf, ps->tok.p, ps->tok.len);
	buf[ps->tok.len] = '\0';
	if (!(isdigit((unsigned char)buf[0]) || buf[0] == '-' || buf[0] == '.'))
		return false;
	errno = 0;
	*out = strtod(buf, &end);
	return *end == '\0' && errno == 0 && isfinite(*out);
}

/* SYSTEM|CODE with SYSTEM a URI or an alias (loinc, snomed, icd10, icd10cm, rxnorm); a code
 * ending in '*' is a prefix. */
static void
fb_parse_code(fb_ps_t *ps, const char *input, fb_codes_t *list)
{
	const char *bar = memchr(ps->tok.p, '|', ps->tok.len);
	fb_code_t c = {0};
	slice_t sys, code;

	if (ps->tok.len == 1 && ps->tok.p[0] == '?') {
		fb_fail(ps, ps->tok.col,
			"the code of %s is site-configured: replace '?' with the code your "
			"site uses (system|code, e.g. loinc|1234-5)",
			input);
		return;
	}
	if (bar == NULL || ps->tok.quoted) {
		fb_fail(ps, ps->tok.col,
			"expected a code as system|code (loinc|2093-3), got '%.*s'",
			(int)ps->tok.len, ps->tok.p);
		return;
	}
	sys = slice_make(ps->tok.p, (size_t)(bar - ps->tok.p));
	code = slice_make(bar + 1, ps->tok.len - sys.len - 1);
	if (sys.len == 0 || code.len == 0 || (code.len == 1 && code.ptr[0] == '*')) {
		fb_fail(ps, ps->tok.col,
			"expected a code as system|code (loinc|2093-3), got '%.*s'",
			(int)ps->tok.len, ps->tok.p);
		return;
	}
	c.system = NULL;
	for (size_t i = 0; i < sizeof(fb_systems) / sizeof(fb_systems[0]); i++)
		if (slice_eq_cstr(sys, fb_systems[i].alias))
			c.system = fb_systems[i].uri;
	if (c.system == NULL) {
		if (memchr(sys.ptr, ':', sys.len) == NULL) {
			fb_fail(ps, ps->tok.col,
				"unknown code system '%.*s': write a URI or one of loinc, snomed, "
				"icd10, icd10cm, rxnorm",
				(int)sys.len, sys.ptr);
			return;
		}
		c.system = arena_strndup(ps->b->a, sys.ptr, sys.len);
	}
	c.prefix = code.ptr[code.len - 1] == '*';
	c.code_len = code.len - (c.prefix ? 1 : 0);
	c.code = arena_strndup(ps->b->a, code.ptr, c.code_len);
	list->v = arena_array_grow(ps->b->a, list->v, list->n, &list->cap, sizeof(*list->v));
	list->v[list->n++] = c;
}

/* Codes up to the next keyword or the end of the line (at least one). */
static void
fb_parse_codes(fb_ps_t *ps, const char *input, fb_codes_t *list, const char *const *keywords)
{
	bool any = false;

	for (; ps->tok.p != NULL && !ps->err; fb_next(ps)) {
		bool kw = false;

		for (size_t i = 0; keywords[i] != NULL; i++)
			kw = kw || fb_tok_is(ps, keywords[i]);
		if (kw)
			break;
		fb_parse_code(ps, input, list);
		any = true;
	}
	if (!any)
		fb_fail(ps, ps->tok.col, "expected a code as system|code (loinc|2093-3)");
}

static void
fb_add_unit(fb_ps_t *ps, fb_input_t *in, const char *ucum, double factor)
{
	in->units =
	    arena_array_grow(ps->b->a, in->units, in->nunits, &in->units_cap, sizeof(*in->units));
	in->units[in->nunits++] = (fb_unit_t){ucum, factor};
}

/* Reads `medication list FILE`: lines "rxnorm code,name", `#` comments, an optional header
 * "rxnorm,name" as the first line that is not a comment. Problems are reported in the list file's
 * own line and column. */
static void
fb_read_list(fb_ps_t *ps, fb_input_t *in, const char *file, unsigned col)
{
	char *path =
	    file[0] == '/' || ps->dir == NULL ? xstrdup(file) : xasprintf("%s/%s", ps->dir, file);
	FILE *f = fopen(path, "rb");
	buf_t text = BUF_INIT;
	char chunk[4096];
	size_t n, off = 0;
	bool seen_line = false; /* the header may only be the first line that is not a comment */
	fb_ps_t ls;

	if (f == NULL) {
		fb_fail(ps, col, "cannot read the list %s", path);
		free(path);
		return;
	}
	buf_init(&text, FB_MAX_FILE);
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		if (buf_append(&text, chunk, n) != 0) {
			fb_fail(ps, col, "the list %s is larger than 1 MiB", path);
			break;
		}
	fclose(f);
	ls = (fb_ps_t){.b = ps->b, .name = path, .msg = ps->msg, .cap = ps->cap};
	while (!ps->err && !ls.err && off < text.len) {
		const char *line = text.data + off;
		const char *nl = memchr(line, '\n', text.len - off);
		size_t len = nl != NULL ? (size_t)(nl - line) : text.len - off;
		const char *comma;
		slice_t code, t;

		off += len + 1;
		ls.lineno++;
		t = slice_trim(slice_make(line, len));
		if (t.len == 0 || t.ptr[0] == '#')
			continue;
		comma = memchr(t.ptr, ',', t.len);
		code = slice_trim(slice_make(t.ptr, comma ? (size_t)(comma - t.ptr) : t.len));
		if (slice_eq_cstr(code, "rxnorm") && !seen_line) {
			seen_line = true;
			continue;
		}
		seen_line = true;
		for (size_t i = 0; i < code.len; i++)
			if (!isdigit((unsigned char)code.ptr[i]))
				code.len = 0;
		if (code.len == 0) {
			fb_fail(&ls, (unsigned)(t.ptr - line) + 1,
				"expected an RxNorm code (digits) before the comma");
			break;
		}
		in->codes.v = arena_array_grow(ps->b->a, in->codes.v, in->codes.n, &in->codes.cap,
					       sizeof(*in->codes.v));
		in->codes.v[in->codes.n++] =
		    (fb_code_t){"http://www.nlm.nih.gov/research/umls/rxnorm",
				arena_strndup(ps->b->a, code.ptr, code.len), code.len, false};
	}
	if (ls.err)
		ps->err = true;
	buf_free(&text);
	free(path);
}

/* "2y", "6mo", "4w", "30d", "12h". */
static void
fb_parse_window(fb_ps_t *ps, fb_input_t *in)
{
	size_t i = 0;
	uint64_t count;
	slice_t unit;

	while (ps->tok.p != NULL && i < ps->tok.len && isdigit((unsigned char)ps->tok.p[i]))
		i++;
	unit = ps->tok.p != NULL ? slice_make(ps->tok.p + i, ps->tok.len - i) : SLICE_NULL;
	if (ps->tok.p == NULL || ps->tok.quoted || i == 0 ||
	    !slice_to_u64(slice_make(ps->tok.p, i), &count) || count == 0 || count > 1000 ||
	    !(slice_eq_cstr(unit, "y") || slice_eq_cstr(unit, "mo") || slice_eq_cstr(unit, "w") ||
	      slice_eq_cstr(unit, "d") || slice_eq_cstr(unit, "h"))) {
		fb_fail(ps, ps->tok.col,
			"expected a duration such as 2y, 6mo, 4w, 30d or 12h (1 to 1000)");
		return;
	}
	in->window_count = (int64_t)count;
	in->window_unit = unit.ptr[0];
	in->window_text = fb_tok_dup(ps);
}

static void
fb_parse_missing(fb_ps_t *ps, fb_input_t *in, unsigned kwcol, bool *seen)
{
	if (*seen) {
		fb_fail(ps, kwcol, "say `missing` once per input");
		return;
	}
	*seen = true;
	fb_next(ps);
	if (fb_tok_is(ps, "no-score")) {
		in->has_default = false;
		return;
	}
	if (!fb_tok_is(ps, "default")) {
		fb_fail(ps, ps->tok.col, "expected `no-score` or `default VALUE` after `missing`");
		return;
	}
	fb_next(ps);
	if (ps->tok.p == NULL) {
		fb_fail(ps, ps->tok.col, "expected the default value");
		return;
	}
	in->has_default = true;
	if (in->source == FB_GENDER || in->source == FB_RACE) {
		in->default_kind = FEATURE_STRING;
		in->default_string = fb_tok_dup(ps);
		if (in->source == FB_GENDER && !fb_tok_is(ps, "female") && !fb_tok_is(ps, "male"))
			fb_fail(ps, ps->tok.col, "the default of a sex is female or male");
		if (in->source == FB_RACE && !fb_tok_is(ps, "african-american") &&
		    !fb_tok_is(ps, "other"))
			fb_fail(ps, ps->tok.col,
				"the default of a race is african-american or other");
	} else {
		in->default_kind = FEATURE_NUMBER;
		if (!fb_tok_number(ps, &in->default_number))
			fb_fail(ps, ps->tok.col, "expected a number as the default of %s",
				in->name);
	}
}

static const char *const fb_obs_kw[] = {"panel", "within",  "unit", "convert",
					"label", "missing", "yes",  NULL};
static const char *const fb_med_kw[] = {"list", "label", "missing", NULL};
static const char *const fb_cond_kw[] = {"label", "missing", NULL};

/* Checks that the keyword at hand is allowed for the source. */
static bool
fb_kw_allowed(fb_ps_t *ps, const fb_input_t *in, const char *kw, bool ok)
{
	if (!ok)
		fb_fail(ps, ps->tok.col, "`%s` does not apply to input %s", kw, in->name);
	return ok;
}

static char *
fb_label_default(arena_t *a, const char *name)
{
	char *s = arena_strndup(a, name, strlen(name));

	for (char *p = s; *p; p++)
		if (*p == '_')
			*p = ' ';
	return s;
}

/* input NAME SOURCE [codes] [options] */
static void
fb_parse_input(fb_ps_t *ps)
{
	features_binding_t *b = ps->b;
	fb_input_t in = {0};
	bool seen_missing = false;
	unsigned namecol, srccol;

	fb_next(ps);
	namecol = ps->tok.col;
	if (ps->tok.p == NULL || ps->tok.quoted ||
	    !(isalpha((unsigned char)ps->tok.p[0]) || ps->tok.p[0] == '_')) {
		fb_fail(ps, ps->tok.col, "expected the name of a model input after `input`");
		return;
	}
	for (size_t i = 0; i < ps->tok.len; i++)
		if (!isalnum((unsigned char)ps->tok.p[i]) && ps->tok.p[i] != '_' &&
		    ps->tok.p[i] != '-' && ps->tok.p[i] != '.') {
			fb_fail(ps, ps->tok.col + (unsigned)i,
				"an input name has letters, digits, '_', '-' and '.'");
			return;
		}
	in.name = fb_tok_dup(ps);
	for (size_t i = 0; i < b->n; i++)
		if (strcmp(b->inputs[i].name, in.name) == 0) {
			fb_fail(ps, namecol, "input %s is bound twice", in.name);
			return;
		}
	fb_next(ps);
	srccol = ps->tok.col;
	if (fb_tok_is(ps, "age"))
		in.source = FB_AGE;
	else if (fb_tok_is(ps, "gender"))
		in.source = FB_GENDER;
	else if (fb_tok_is(ps, "race"))
		in.source = FB_RACE;
	else if (fb_tok_is(ps, "observation"))
		in.source = FB_OBSERVATION;
	else if (fb_tok_is(ps, "observation-flag"))
		in.source = FB_OBSERVATION_FLAG;
	else if (fb_tok_is(ps, "condition"))
		in.source = FB_CONDITION;
	else if (fb_tok_is(ps, "medication"))
		in.source = FB_MEDICATION;
	else {
		fb_fail(ps, ps->tok.col,
			"expected where %s comes from: age, gender, race, observation, "
			"observation-flag, condition or medication",
			in.name);
		return;
	}
	fb_next(ps);
	if (in.source == FB_OBSERVATION || in.source == FB_OBSERVATION_FLAG)
		fb_parse_codes(ps, in.name, &in.codes, fb_obs_kw);
	else if (in.source == FB_CONDITION)
		fb_parse_codes(ps, in.name, &in.codes, fb_cond_kw);
	else if (in.source == FB_MEDICATION && ps->tok.p != NULL && !fb_tok_is(ps, "list") &&
		 !fb_tok_is(ps, "label") && !fb_tok_is(ps, "missing"))
		fb_parse_codes(ps, in.name, &in.codes, fb_med_kw);

	while (ps->tok.p != NULL && !ps->err) {
		unsigned kwcol = ps->tok.col;
		bool obs = in.source == FB_OBSERVATION || in.source == FB_OBSERVATION_FLAG;

		if (fb_tok_is(ps, "label")) {
			fb_next(ps);
			if (ps->tok.p == NULL || !ps->tok.quoted) {
				fb_fail(ps, ps->tok.col, "expected the label in double quotes");
				return;
			}
			in.label = fb_tok_dup(ps);
		} else if (fb_tok_is(ps, "missing")) {
			fb_parse_missing(ps, &in, kwcol, &seen_missing);
		} else if (fb_tok_is(ps, "within")) {
			if (!fb_kw_allowed(ps, &in, "within", obs))
				return;
			fb_next(ps);
			fb_parse_window(ps, &in);
		} else if (fb_tok_is(ps, "panel")) {
			if (!fb_kw_allowed(ps, &in, "panel", obs))
				return;
			fb_next(ps);
			fb_parse_codes(ps, in.name, &in.panels, fb_obs_kw);
			continue;
		} else if (fb_tok_is(ps, "yes")) {
			if (!fb_kw_allowed(ps, &in, "yes", in.source == FB_OBSERVATION_FLAG))
				return;
			fb_next(ps);
			fb_parse_codes(ps, in.name, &in.yes, fb_obs_kw);
			continue;
		} else if (fb_tok_is(ps, "unit")) {
			if (!fb_kw_allowed(ps, &in, "unit", in.source == FB_OBSERVATION))
				return;
			if (in.nunits > 0) {
				fb_fail(ps, kwcol, "say `unit` once; add units with `convert`");
				return;
			}
			fb_next(ps);
			if (ps->tok.p == NULL || ps->tok.quoted) {
				fb_fail(ps, ps->tok.col, "expected a UCUM unit code (mg/dL)");
				return;
			}
			fb_add_unit(ps, &in, fb_tok_dup(ps), 1.0);
		} else if (fb_tok_is(ps, "convert")) {
			char *ucum;
			double factor;

			if (!fb_kw_allowed(ps, &in, "convert", in.source == FB_OBSERVATION))
				return;
			if (in.nunits == 0) {
				fb_fail(ps, kwcol, "say the input's `unit` before `convert`");
				return;
			}
			fb_next(ps);
			if (ps->tok.p == NULL || ps->tok.quoted) {
				fb_fail(ps, ps->tok.col, "expected a UCUM unit code (mmol/L)");
				return;
			}
			ucum = fb_tok_dup(ps);
			fb_next(ps);
			if (!fb_tok_number(ps, &factor) || factor <= 0) {
				fb_fail(
				    ps, ps->tok.col,
				    "expected the factor to %s (a positive number: mmol/L 38.67)",
				    in.units[0].ucum);
				return;
			}
			fb_add_unit(ps, &in, ucum, factor);
		} else if (fb_tok_is(ps, "list")) {
			if (!fb_kw_allowed(ps, &in, "list", in.source == FB_MEDICATION))
				return;
			fb_next(ps);
			if (ps->tok.p == NULL) {
				fb_fail(ps, ps->tok.col, "expected the list file name");
				return;
			}
			fb_read_list(ps, &in, fb_tok_dup(ps), ps->tok.col);
		} else {
			fb_fail(ps, ps->tok.col, "unexpected '%.*s' in input %s", (int)ps->tok.len,
				ps->tok.p, in.name);
			return;
		}
		fb_next(ps);
	}
	if (ps->err)
		return;
	if (in.source == FB_OBSERVATION_FLAG && in.yes.n == 0) {
		fb_fail(ps, srccol, "observation-flag needs `yes` and the codes that mean 1");
		return;
	}
	if (in.source == FB_MEDICATION && in.codes.n == 0) {
		fb_fail(ps, srccol, "medication needs RxNorm codes or `list FILE` (not empty)");
		return;
	}
	if (in.label == NULL)
		in.label = fb_label_default(b->a, in.name);
	b->inputs = arena_array_grow(b->a, b->inputs, b->n, &b->cap, sizeof(*b->inputs));
	b->inputs[b->n++] = in;
}

/* outcome SYSTEM|CODE ["display"] */
static void
fb_parse_outcome(fb_ps_t *ps)
{
	fb_codes_t one = {0};
	unsigned col;

	fb_next(ps);
	col = ps->tok.col;
	if (ps->b->outcome.code != NULL) {
		fb_fail(ps, col, "say `outcome` once");
		return;
	}
	if (ps->tok.p == NULL) {
		fb_fail(ps, col, "expected the outcome code (loinc|79423-0)");
		return;
	}
	fb_parse_code(ps, "the outcome", &one);
	if (ps->err)
		return;
	if (one.v[0].prefix) {
		fb_fail(ps, col, "the outcome is one code, not a prefix");
		return;
	}
	ps->b->outcome.system = one.v[0].system;
	ps->b->outcome.code = one.v[0].code;
	fb_next(ps);
	if (ps->tok.p != NULL && ps->tok.quoted) {
		ps->b->outcome.display = fb_tok_dup(ps);
		fb_next(ps);
	}
	if (ps->tok.p != NULL)
		fb_fail(ps, ps->tok.col, "expected the end of the line after the outcome");
}

/* risk LABEL [< BOUND] as CODE */
static void
fb_parse_risk(fb_ps_t *ps)
{
	features_binding_t *b = ps->b;
	fb_band_t band = {0};
	bool known = false;

	fb_next(ps);
	if (ps->tok.p == NULL || ps->tok.quoted) {
		fb_fail(ps, ps->tok.col,
			"expected the band's name after `risk` (risk low < 0.05 as low)");
		return;
	}
	if (b->nbands > 0 && !b->bands[b->nbands - 1].bounded) {
		fb_fail(ps, ps->tok.col, "a band after the last one (the one without `<`)");
		return;
	}
	band.label = fb_tok_dup(ps);
	fb_next(ps);
	if (fb_tok_is(ps, "<")) {
		fb_next(ps);
		if (!fb_tok_number(ps, &band.below) || band.below <= 0 || band.below > 1) {
			fb_fail(ps, ps->tok.col,
				"expected a probability bound above 0 and at most 1");
			return;
		}
		if (b->nbands > 0 && band.below <= b->bands[b->nbands - 1].below) {
			fb_fail(ps, ps->tok.col, "bands go up: %s must be above the previous bound",
				fb_tok_dup(ps));
			return;
		}
		band.bounded = true;
		fb_next(ps);
	}
	if (!fb_tok_is(ps, "as")) {
		fb_fail(ps, ps->tok.col, "expected `< BOUND` or `as CODE`");
		return;
	}
	fb_next(ps);
	for (size_t i = 0; i < sizeof(fb_risk_codes) / sizeof(fb_risk_codes[0]); i++)
		if (fb_tok_is(ps, fb_risk_codes[i])) {
			band.code = fb_risk_codes[i];
			known = true;
		}
	if (!known) {
		fb_fail(ps, ps->tok.col,
			"expected a risk-probability code: negligible, low, moderate, high or "
			"certain");
		return;
	}
	fb_next(ps);
	if (ps->tok.p != NULL) {
		fb_fail(ps, ps->tok.col, "expected the end of the line after the band");
		return;
	}
	b->bands = arena_array_grow(b->a, b->bands, b->nbands, &b->bands_cap, sizeof(*b->bands));
	b->bands[b->nbands++] = band;
}

int
features_binding_parse(const char *name, const char *text, size_t len, const char *dir,
		       features_binding_t **out, char *err, size_t cap)
{
	features_binding_t *b = xcalloc(1, sizeof(*b));
	fb_ps_t ps = {.b = b, .name = name, .dir = dir, .msg = err, .cap = cap};
	size_t off = 0;

	*out = NULL;
	if (cap > 0)
		err[0] = '\0';
	b->a = arena_new(0);
	while (!ps.err && off < len) {
		const char *nl = memchr(text + off, '\n', len - off);

		ps.line = text + off;
		ps.line_len = nl != NULL ? (size_t)(nl - ps.line) : len - off;
		ps.pos = 0;
		ps.lineno++;
		off += ps.line_len + 1;
		fb_next(&ps);
		if (ps.tok.p == NULL)
			continue;
		if (fb_tok_is(&ps, "input"))
			fb_parse_input(&ps);
		else if (fb_tok_is(&ps, "outcome"))
			fb_parse_outcome(&ps);
		else if (fb_tok_is(&ps, "risk"))
			fb_parse_risk(&ps);
		else
			fb_fail(&ps, ps.tok.col,
				"expected `input`, `outcome` or `risk`, got '%.*s'",
				(int)ps.tok.len, ps.tok.p);
	}
	if (!ps.err && b->n == 0) {
		ps.lineno = ps.lineno ? ps.lineno : 1;
		fb_fail(&ps, 1, "a binding needs at least one `input` line");
	}
	if (!ps.err && b->nbands > 0 && b->bands[b->nbands - 1].bounded) {
		fb_fail(&ps, 1, "the last `risk` band has no bound (risk high as high)");
	}
	if (ps.err) {
		features_binding_free(b);
		return -FG_ECONFIG;
	}
	*out = b;
	return 0;
}

int
features_binding_load(const char *path, features_binding_t **out, char *err, size_t cap)
{
	FILE *f = fopen(path, "rb");
	buf_t text = BUF_INIT;
	char chunk[4096], *dir, *slash;
	size_t n;
	int rc = 0;

	*out = NULL;
	if (f == NULL) {
		snprintf(err, cap, "%s: cannot open: %s", path, strerror(errno));
		return -FG_EIO;
	}
	buf_init(&text, FB_MAX_FILE);
	while (rc == 0 && (n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		rc = buf_append(&text, chunk, n);
	fclose(f);
	if (rc != 0) {
		snprintf(err, cap, "%s: larger than 1 MiB", path);
		buf_free(&text);
		return -FG_ECONFIG;
	}
	dir = xstrdup(path);
	slash = strrchr(dir, '/');
	if (slash != NULL)
		*slash = '\0';
	rc = features_binding_parse(path, text.data != NULL ? text.data : "", text.len,
				    slash != NULL ? dir : ".", out, err, cap);
	free(dir);
	buf_free(&text);
	return rc;
}

void
features_binding_free(features_binding_t *b)
{
	if (b == NULL)
		return;
	arena_free(b->a);
	free(b);
}
