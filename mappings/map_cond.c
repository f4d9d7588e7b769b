/* Evaluating conditions (the IG's condition language) and reading the v2 values they and the
 * mapping lines name. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "mappings/map_int.h"

/* The segment a ref names: the frame's own when the id matches, else the nearest one before
 * it, else the nearest one after it (MSH is always there). */
static const hl7_seg_t *
map_ref_segment(const map_frame_t *fr, const char *id, size_t *index)
{
	slice_t want = slice_make(id, 3);
	size_t i;

	if (fr->seg != NULL && fr->seg_key == map_seg_key(id)) {
		*index = fr->seg_index;
		return fr->seg;
	}
	i = map_conv_find(fr->cv, want, fr->seg_index, true);
	if (i == SIZE_MAX)
		return NULL;
	*index = i;
	return hl7_msg_segment(fr->m, i);
}

/* Part n (1-based) of a datatype map's value at its next level, as hl7_split_nth gives it. */
static slice_t
map_value_part(const map_frame_t *fr, char delim, size_t n)
{
	if (fr->parts == NULL)
		return hl7_split_nth(fr->value, delim, n);
	return n >= 1 && n <= fr->nparts ? fr->parts[n - 1] : SLICE_NULL;
}

void
map_value_split(slice_t value, char delim, slice_t *parts, size_t *nparts)
{
	const char *p = value.ptr, *end = value.ptr + value.len, *q;
	size_t n = 0;

	*nparts = 0;
	if (value.len == 0)
		return;
	for (;;) {
		if (n == MAP_PARTS_MAX) {
			*nparts = SIZE_MAX;
			return;
		}
		q = memchr(p, delim, (size_t)(end - p));
		parts[n++] = slice_make(p, (size_t)((q != NULL ? q : end) - p));
		if (q == NULL)
			break;
		p = q + 1;
	}
	*nparts = n;
}

slice_t
map_ref_raw_any(const map_frame_t *fr, const map_ref_t *ref, bool whole, size_t *seg_index,
		unsigned *rep_out)
{
	const hl7_msg_t *m;
	const hl7_delims_t *d;
	const hl7_seg_t *s;
	slice_t v;
	size_t si = 0;
	unsigned rep;

	*seg_index = fr->seg_index;
	*rep_out = fr->rep;
	m = fr->m;
	d = fr->delims;
	if (ref->seg[0] == '\0') {
		v = fr->value;
		if (ref->comp == 0) {
			/* the whole value */
		} else if (fr->level == 1) {
			v = map_value_part(fr, d->component, ref->comp);
			if (ref->sub > 0)
				v = hl7_split_nth(v, d->subcomponent, ref->sub);
		} else if (fr->level == 2 && ref->sub == 0) {
			v = map_value_part(fr, d->subcomponent, ref->comp);
		} else if (!(fr->level == 3 && ref->comp == 1 && ref->sub == 0)) {
			v = SLICE_NULL;
		}
		return hl7_is_null(v) ? SLICE_NULL : v;
	}
	s = map_ref_segment(fr, ref->seg, &si);
	if (s == NULL)
		return SLICE_NULL;
	*seg_index = si;
	if (ref->field == 0)
		return hl7_seg_id(s);
	if (ref->rep > 0)
		rep = ref->rep;
	else if (fr->ctx_seg == s && fr->ctx_field == ref->field)
		rep = fr->ctx_rep;
	else
		rep = whole && ref->comp == 0 ? 0 : 1;
	*rep_out = rep;
	v = hl7_seg_get(m, s, ref->field, rep, ref->comp, ref->sub);
	if (hl7_is_null(v))
		return SLICE_NULL;
	if (rep == 0 && hl7_seg_may_repeat(s) && hl7_split_count(v, d->repetition) > 1) {
		/* "" in every repetition is still not valued */
		bool any = false;

		for (size_t r = 1; r <= hl7_split_count(v, d->repetition) && !any; r++) {
			slice_t rv = hl7_split_nth(v, d->repetition, r);

			any = rv.len > 0 && !hl7_is_null(rv);
		}
		if (!any)
			return SLICE_NULL;
	}
	return v;
}

size_t
map_ref_count(const map_frame_t *fr, const map_ref_t *ref)
{
	size_t si;
	unsigned rep;
	map_ref_t whole = *ref;
	slice_t v;

	if (ref->seg[0] == '\0')
		return map_ref_raw(fr, ref, true, &si, &rep).len > 0 ? 1 : 0;
	whole.rep = 0;
	whole.comp = whole.sub = 0;
	v = map_ref_raw(&(map_frame_t){.cv = fr->cv,
				       .m = fr->m,
				       .delims = fr->delims,
				       .seg = fr->seg,
				       .seg_key = fr->seg_key,
				       .seg_index = fr->seg_index},
			&whole, true, &si, &rep);
	return hl7_split_count(v, fr->delims->repetition);
}

/* An operand's value: text (decoded) or a number. The text of a ref is in one of the
 * conversion's scratch buffers (which), valid until the operand in that slot is evaluated
 * again. */
typedef struct {
	bool valued;
	slice_t text;
	char num[24];
} map_val_t;

static void
map_operand_eval(const map_operand_t *o, const map_frame_t *fr, unsigned which, map_val_t *v)
{
	size_t si;
	unsigned rep;
	slice_t raw;
	buf_t *buf;

	v->valued = true;
	v->text = o->text;
	if (o->kind != MAP_OPD_REF)
		return;
	if (o->fn == MAP_FN_COUNT) {
		size_t count = map_ref_count(fr, &o->ref);

		if (count > 0 && o->ref.seg[0] != '\0' &&
		    map_ref_raw(fr, &o->ref, true, &si, &rep).len > 0)
			map_mark_used(fr->cv, si, o->ref.field, MAP_REP_ALL);
		v->text = slice_make(v->num, (size_t)(map_put_u64(v->num, count) - v->num));
		return;
	}
	raw = map_ref_raw(fr, &o->ref, false, &si, &rep);
	v->valued = raw.len > 0;
	if (v->valued && o->ref.seg[0] != '\0')
		map_mark_used(fr->cv, si, o->ref.field, rep);
	if (!v->valued) {
		v->text = SLICE_NULL;
	} else {
		buf = map_conv_scratch(fr->cv, which);
		v->text = map_text(fr, raw, buf);
	}
	if (o->fn == MAP_FN_LENGTH) {
		size_t chars = 0;

		for (size_t i = 0; i < v->text.len; i++)
			chars += ((unsigned char)v->text.ptr[i] & 0xc0) != 0x80;
		v->text = slice_make(v->num, (size_t)(map_put_u64(v->num, chars) - v->num));
	}
}

/* A number when all of the text is one. */
static bool
map_as_number(slice_t t, double *out)
{
	char tmp[64];
	char *end;

	if (t.len == 0 || t.len >= sizeof(tmp) ||
	    !(t.ptr[0] == '-' || t.ptr[0] == '+' || t.ptr[0] == '.' ||
	      (t.ptr[0] >= '0' && t.ptr[0] <= '9')))
		return false;
	memcpy(tmp, t.ptr, t.len);
	tmp[t.len] = '\0';
	*out = strtod(tmp, &end);
	return *end == '\0';
}

/* The value of a text of 1 to 15 ASCII digits: what strtod reads there, exactly (below 2^53). */
static bool
map_as_digits(slice_t t, uint64_t *out)
{
	uint64_t v = 0;

	if (t.len == 0 || t.len > 15)
		return false;
	for (size_t i = 0; i < t.len; i++) {
		unsigned d = (unsigned)(unsigned char)t.ptr[i] - '0';

		if (d > 9)
			return false;
		v = v * 10 + d;
	}
	*out = v;
	return true;
}

/* <0, 0, >0: numerically when both sides are numbers, else byte order. */
static int
map_compare(slice_t a, slice_t b)
{
	double x, y;
	uint64_t i, j;
	int c;

	/* equal bytes compare equal either way (strtod reads them the same) */
	if (a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0))
		return 0;
	/* plain integers (lengths, counts, set ids) without strtod */
	if (map_as_digits(a, &i) && map_as_digits(b, &j))
		return i < j ? -1 : i > j ? 1 : 0;
	if (map_as_number(a, &x) && map_as_number(b, &y))
		return x < y ? -1 : x > y ? 1 : 0;
	c = memcmp(a.ptr ? a.ptr : "", b.ptr ? b.ptr : "", a.len < b.len ? a.len : b.len);
	if (c != 0)
		return c;
	return a.len < b.len ? -1 : a.len > b.len ? 1 : 0;
}

/* map_compare(a, b) == 0, without ordering texts that differ (EQUALS, NOT EQUALS, IN). */
static bool
map_equal(slice_t a, slice_t b)
{
	double x, y;
	uint64_t i, j;

	if (a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0))
		return true;
	if (map_as_digits(a, &i) && map_as_digits(b, &j))
		return i == j;
	/* as map_compare: neither below nor above (NaN, from "-nan", is "equal" to anything) */
	return map_as_number(a, &x) && map_as_number(b, &y) && !(x < y) && !(x > y);
}

bool
map_cond_eval(const map_cond_t *c, const map_frame_t *fr)
{
	map_val_t a, b;
	bool r = false;
	int cmp;
	size_t si;
	unsigned rep;

	if (c == NULL)
		return true;
	switch (c->kind) {
	case MAP_C_AND:
		return map_cond_eval(c->l, fr) && map_cond_eval(c->r, fr);
	case MAP_C_OR:
		return map_cond_eval(c->l, fr) || map_cond_eval(c->r, fr);
	case MAP_C_NOT:
		return !map_cond_eval(c->l, fr);
	case MAP_C_VALUED:
		r = map_ref_raw(fr, &c->a.ref, true, &si, &rep).len > 0;
		if (r && c->a.ref.seg[0] != '\0')
			map_mark_used(fr->cv, si, c->a.ref.field, rep);
		return r;
	case MAP_C_IN:
		map_operand_eval(&c->a, fr, 0, &a);
		for (size_t i = 0; i < c->nlist && !r; i++) {
			map_operand_eval(&c->list[i], fr, 1, &b);
			r = a.valued && map_equal(a.text, b.text);
		}
		return r;
	case MAP_C_CMP:
		map_operand_eval(&c->a, fr, 0, &a);
		map_operand_eval(&c->b, fr, 1, &b);
		if (c->op == MAP_CMP_EQ || c->op == MAP_CMP_NE)
			return map_equal(a.text, b.text) == (c->op == MAP_CMP_EQ);
		cmp = map_compare(a.text, b.text);
		switch (c->op) {
		case MAP_CMP_EQ:
		case MAP_CMP_NE:
			break;
		case MAP_CMP_LT:
			r = a.valued && b.valued && cmp < 0;
			break;
		case MAP_CMP_LE:
			r = a.valued && b.valued && cmp <= 0;
			break;
		case MAP_CMP_GT:
			r = a.valued && b.valued && cmp > 0;
			break;
		case MAP_CMP_GE:
			r = a.valued && b.valued && cmp >= 0;
			break;
		}
		return r;
	}
	return false;
}
