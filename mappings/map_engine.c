/* The converter: walks a message's segments through its message map, runs segment and
 * datatype maps into resources, links them, and assembles the transaction Bundle with
 * deterministic ids, canonical element order, warnings and the explain records. */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fhir/validate.h"
#include "lib/err.h"
#include "lib/hash.h"
#include "lib/xalloc.h"
#include "mappings/map_int.h"

/* No message makes more resources than this (a hostile repetition count cannot). */
#define MAP_MAX_RESOURCES 20000

typedef struct map_inst {
	slice_t type;
	const fhir_type_t *meta; /* fhir_meta_type(type), known from the map */
	char id[33];
	bool has_id;
	fhir_node_t *obj;
	size_t seg_index;
	char where[48]; /* position in the segment, for a fallback id */
	struct map_inst *merged_into;
	size_t result_index;
	bool referenced; /* another resource points at it */
	bool dropped;    /* left out: it lacks what FHIR requires, and nothing points at it */
	bool sourced;    /* a line that reads the message put a value in it (not constants only) */
} map_inst_t;

/* A reference made before ids are final: filled in at the end. */
typedef struct {
	fhir_node_t *node;
	map_inst_t *inst;
} map_pending_ref_t;

typedef struct {
	map_inst_t *inst; /* NULL while relative to a datatype being built */
	char *path;
	const char *source;
	const char *file;
	unsigned line;
} map_xrec_t;

typedef struct {
	map_inst_t *inst;
	const map_line_t *line;
	unsigned lineno;
} map_deferred_t;

/* Growable arrays in plain heap memory, freed when the conversion ends. */
#define MAP_VEC(T)             \
	struct {               \
		T *v;          \
		size_t n, cap; \
	}

#define MAP_VEC_PUSH(vec)                                                                        \
	(((vec).n == (vec).cap ? ((vec).cap = (vec).cap ? (vec).cap * 2 : 16,                    \
				  (vec).v = xreallocarray((vec).v, (vec).cap, sizeof(*(vec).v))) \
			       : 0),                                                             \
	 &(vec).v[(vec).n++])

struct map_conv {
	arena_t *a;
	const map_set_t *set;
	const hl7_msg_t *m;
	const map_options_t *opt;
	const map_def_t *msg;
	MAP_VEC(map_inst_t *) insts;
	map_inst_t **current; /* per slot */
	uint32_t *seen;       /* per group: which opening segments the current instance had */
	map_inst_t bundle;
	MAP_VEC(map_xrec_t) xrecs;
	MAP_VEC(map_warning_t) warnings;
	MAP_VEC(uint64_t) used;
	MAP_VEC(map_deferred_t) deferred;
	MAP_VEC(map_pending_ref_t) refs;
	/* the message's segments by id, built on first use: (key << 32 | index), sorted */
	uint64_t *by_id;
	size_t nsegs;
	uint32_t *seq; /* per segment: its occurrence number (1-based) */
	/* map_follows_ok: for the segment at follows_seg (with id follows_id), the nearest
	 * segment before it that a "follows" of its id's lines names: that segment's id as
	 * map_seg_key, or UINT64_MAX for none; follows_seg is SIZE_MAX when nothing is kept */
	size_t follows_seg;
	uint64_t follows_id, follows_best;
	bool too_many;
	/* a datatype map's object went where another type goes (Quantity as Age): its members
	 * were inserted in the order of the map's type, so the resources are sorted at the end */
	bool canon_needed;
	const fhir_type_t *t_coding, *t_reference;
	/* the ranks (map_rank) of the members the converter puts in codings and references */
	uint32_t rank_system, rank_code, rank_display, rank_reference;
	/* scratch text, kept from value to value (a fresh buf_t would allocate each time):
	 * each is used between two calls that cannot reach its user again */
	buf_t text, part, cat; /* map_line_value; part and cat also map_hash_id */
	buf_t vcode, vsys;     /* map_vocab_match */
	buf_t num;             /* map_primitive: numbers and base64 */
	buf_t opd[2];          /* map_conv_scratch */
};

/* A segment id as a number (map_seg_key; a shorter one padded with NULs). */
static uint64_t
map_seg_id_key(slice_t id)
{
	char k[3] = {0, 0, 0};

	memcpy(k, id.ptr, id.len < 3 ? id.len : 3);
	return map_seg_key(k);
}

static uint32_t map_canon_rank_cached(const fhir_type_t *t, slice_t k, const fhir_type_t **et);

/* Where key goes in an object of R4 type t (map_canon_rank). */
static uint32_t
map_rank(const fhir_type_t *t, slice_t key)
{
	const fhir_type_t *et;

	return map_canon_rank_cached(t, key, &et);
}

/* Adds a member that obj was just found not to have, at its place in R4 order: no second
 * lookup. key is interned in the set (map_set_key, map_keys), as every key of the trees a
 * conversion builds is: they borrow it, and look members up by address. */
static void
map_member_add(arena_t *a, fhir_node_t *obj, slice_t key, fhir_node_t *v, uint32_t rank)
{
	fhir_object_insert(a, obj, key, v, rank);
}

/* fhir_object_set for an object of R4 type t: a new key (interned) goes to its place in R4
 * order. */
static void
map_member_set(arena_t *a, fhir_node_t *obj, const fhir_type_t *t, slice_t key, fhir_node_t *v)
{
	if (fhir_object_get_interned(obj, key) != NULL)
		fhir_object_set(a, obj, key, v);
	else
		map_member_add(a, obj, key, v, map_rank(t, key));
}

/* Members of src that dst lacks go to dst (src's ranks are dst's: they are objects of the same
 * type). */
static void
map_merge(arena_t *a, fhir_node_t *dst, const fhir_node_t *src)
{
	for (size_t i = 0; i < fhir_object_count(src); i++) {
		slice_t k = fhir_object_key_at(src, i);

		if (fhir_object_get_interned(dst, k) == NULL)
			fhir_object_insert(a, dst, k, fhir_object_value_at(src, i),
					   fhir_object_rank_at(src, i));
	}
}

/* Appends the decimal digits of v at p (no NUL); returns the end. Conversions make many small
 * texts (instance positions, placeholders), where snprintf would cost more than the rest. */
char *
map_put_u64(char *p, uint64_t v)
{
	char tmp[20];
	size_t n = 0;

	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v > 0);
	while (n > 0)
		*p++ = tmp[--n];
	return p;
}

/* Copies the text from..end into out (cap bytes) as snprintf("%s") would: cut, NUL-ended. */
static void
map_text_copy(char *out, size_t cap, const char *from, const char *end)
{
	size_t n = (size_t)(end - from) < cap ? (size_t)(end - from) : cap - 1;

	memcpy(out, from, n);
	out[n] = '\0';
}

static int
map_cmp_u64(const void *x, const void *y)
{
	uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;

	return a < b ? -1 : a > b;
}

static void
map_segindex_build(map_conv_t *cv)
{
	size_t n = hl7_msg_segment_count(cv->m);

	cv->nsegs = n;
	cv->by_id = arena_alloc(cv->a, (n ? n : 1) * sizeof(uint64_t));
	cv->seq = arena_alloc(cv->a, (n ? n : 1) * sizeof(uint32_t));
	for (size_t i = 0; i < n; i++)
		cv->by_id[i] = map_seg_id_key(hl7_seg_id(hl7_msg_segment(cv->m, i))) << 32 | i;
	qsort(cv->by_id, n, sizeof(uint64_t), map_cmp_u64);
	for (size_t i = 0; i < n; i++)
		cv->seq[cv->by_id[i] & 0xffffffffu] =
		    i > 0 && cv->by_id[i - 1] >> 32 == cv->by_id[i] >> 32
			? cv->seq[cv->by_id[i - 1] & 0xffffffffu] + 1
			: 1;
}

size_t
map_conv_find(map_conv_t *cv, slice_t id, size_t pos, bool after)
{
	uint64_t key = map_seg_id_key(id), want;
	size_t lo = 0, hi;

	if (cv->by_id == NULL)
		map_segindex_build(cv);
	/* the first entry greater than (key, pos) */
	want = key << 32 | (pos > 0xffffffffu ? 0xffffffffu : pos);
	hi = cv->nsegs;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (cv->by_id[mid] <= want)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo > 0 && cv->by_id[lo - 1] >> 32 == key)
		return (size_t)(cv->by_id[lo - 1] & 0xffffffffu);
	if (after && lo < cv->nsegs && cv->by_id[lo] >> 32 == key)
		return (size_t)(cv->by_id[lo] & 0xffffffffu);
	return SIZE_MAX;
}

static unsigned
map_conv_seq(map_conv_t *cv, size_t seg_index)
{
	if (cv->by_id == NULL)
		map_segindex_build(cv);
	return cv->seq[seg_index];
}

/* One application of a segment or datatype map. */
typedef struct {
	map_frame_t fr;
	const char *src; /* the source the value came from, for explain: "PID-5[2]" */
	struct {
		fhir_node_t *arr;
		uint16_t index;
		fhir_node_t *child;
	} labels[32];
	size_t nlabels;
	slice_t parts[MAP_PARTS_MAX]; /* fr.parts */
	/* "= *" (map_build_bundle): the references it puts are distinct from one another (every
	 * resource that stays has its own type and id), so an array they go into is searched for
	 * an equal element only among the ones it had before the first of them: refs_from */
	bool refs_distinct;
	const fhir_node_t *refs_arr;
	size_t refs_from;
} map_run_t;

buf_t *
map_conv_scratch(map_conv_t *cv, unsigned which)
{
	return &cv->opd[which & 1];
}

void
map_mark_used(map_conv_t *cv, size_t seg_index, unsigned field, unsigned rep)
{
	if (cv->opt->explain && field > 0)
		*MAP_VEC_PUSH(cv->used) =
		    (uint64_t)seg_index << 40 | (uint64_t)(field & 0xfff) << 28 | (rep & 0xfffffff);
}

/* Whether decoding would leave raw as it is: printable ASCII without escape sequences (most
 * values), so that it can be copied instead. */
static bool
map_word_is_plain(uint64_t v, uint64_t esc)
{
	const uint64_t ones = 0x0101010101010101ull, high = ones * 0x80;
	uint64_t e = v ^ esc;

	/* a byte with its high bit set, a control character (below 0x20: decoding replaces it,
	 * and tab, CR and LF are rare enough to take the slow way), or one equal to the escape */
	return ((v | ((v - ones * 0x20) & ~v) | ((e - ones) & ~e)) & high) == 0;
}

/* Whether decoding would leave raw as it is: printable ASCII without escape sequences (most
 * values), so that it can be copied instead. A word at a time: the last one overlapping the
 * one before, a short value in one word padded with a byte that is plain. */
static bool
map_text_is_plain(slice_t raw, char escape)
{
	const uint64_t ones = 0x0101010101010101ull;
	const unsigned char *p = (const unsigned char *)raw.ptr;
	uint64_t esc = ones * (unsigned char)escape, v;
	uint32_t lo, hi;
	size_t n = raw.len;

	if (n >= 8) {
		for (size_t i = 0; i + 8 <= n; i += 8) {
			memcpy(&v, p + i, 8);
			if (!map_word_is_plain(v, esc))
				return false;
		}
		memcpy(&v, p + n - 8, 8);
		return map_word_is_plain(v, esc);
	}
	if (n >= 4) {
		memcpy(&lo, p, 4);
		memcpy(&hi, p + n - 4, 4);
		return map_word_is_plain((uint64_t)hi << 32 | lo, esc);
	}
	v = ones * (escape == 'a' ? 'b' : 'a');
	for (size_t i = 0; i < n; i++)
		v = v << 8 | p[i];
	return map_word_is_plain(v, esc);
}

slice_t
map_text(const map_frame_t *fr, slice_t raw, buf_t *scratch)
{
	if (raw.len == 0)
		return slice_make("", 0);
	/* what decoding would give: the bytes as they are, with no copy */
	if (map_text_is_plain(raw, fr->delims->escape))
		return slice_trim(raw);
	buf_reset(scratch);
	(void)hl7_text_decode(fr->cv->m, raw, scratch);
	return slice_trim(buf_slice(scratch));
}

static void map_warn(map_run_t *run, const map_line_t *l, slice_t value, size_t seg_index,
		     unsigned field, unsigned rep, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));

static void
map_warn(map_run_t *run, const map_line_t *l, slice_t value, size_t seg_index, unsigned field,
	 unsigned rep, const char *fmt, ...)
{
	map_conv_t *cv = run->fr.cv;
	map_warning_t *w = MAP_VEC_PUSH(cv->warnings);
	const hl7_seg_t *s = hl7_msg_segment(cv->m, seg_index);
	char text[256];
	va_list ap;

	memset(w, 0, sizeof(*w));
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	w->text = arena_strndup(cv->a, text, strlen(text));
	w->value = arena_slice_dup(cv->a, value);
	if (s != NULL) {
		slice_t id = hl7_seg_id(s);

		memcpy(w->segment, id.ptr, id.len < 3 ? id.len : 3);
		w->seg_seq = map_conv_seq(cv, seg_index);
	}
	w->field = field;
	w->rep = rep;
	w->file = l != NULL ? l->file : run->fr.def != NULL ? run->fr.def->path : NULL;
	w->line = l != NULL ? l->lineno : 0;
}

/* "PID-5[2].1" or, relative, the run's source and ".1". */
static const char *
map_ref_string(map_run_t *run, const map_ref_t *r, unsigned rep)
{
	buf_t b = BUF_INIT;
	const char *out;

	if (!run->fr.cv->opt->explain)
		return NULL;
	if (r->seg[0] != '\0') {
		buf_printf(&b, "%s-%u", r->seg, r->field);
		if (rep > 0)
			buf_printf(&b, "[%u]", rep);
	} else {
		buf_append_cstr(&b, run->src != NULL ? run->src : "");
	}
	if (r->comp > 0)
		buf_printf(&b, ".%u", r->comp);
	if (r->sub > 0)
		buf_printf(&b, ".%u", r->sub);
	out = arena_strndup(run->fr.cv->a, b.data ? b.data : "", b.len);
	buf_free(&b);
	return out;
}

/* The resource a run's records belong to; NULL while they are relative to a datatype value. */
static map_inst_t *
map_run_inst(const map_run_t *run)
{
	return run->fr.def->kind == MAP_DATATYPE && !run->fr.def->is_resource ? NULL : run->fr.inst;
}

static void
map_explain(map_run_t *run, const map_line_t *l, const buf_t *path, const char *source)
{
	map_conv_t *cv = run->fr.cv;
	map_xrec_t *x;

	if (!cv->opt->explain)
		return;
	x = MAP_VEC_PUSH(cv->xrecs);
	x->inst = map_run_inst(run);
	x->path = arena_strndup(cv->a, path->data ? path->data : "", path->len);
	x->source = source;
	x->file = l->file;
	x->line = l->lineno;
}

/* ---- ids ---------------------------------------------------------------------------- */

/* The 8 lowercase hex digits of x, most significant first, 8 at a time: each nibble spread
 * to a byte of its own, then '0' added, and 'a' - '0' - 10 more where the nibble is above 9
 * (nibble + 6 carries into bit 4 exactly then). */
static void
map_hex8(uint32_t x, char *out)
{
	const uint64_t ones = 0x0101010101010101ull;
	uint64_t v = x;

	v = ((v & 0xffff0000ull) << 16) | (v & 0xffffull);
	v = ((v & 0x0000ff000000ff00ull) << 8) | (v & 0x000000ff000000ffull);
	v = ((v & 0x00f000f000f000f0ull) << 4) | (v & 0x000f000f000f000full);
	v += ones * '0' + ((((v + ones * 6) >> 4) & ones) * ('a' - '0' - 10));
	/* byte 7 holds the most significant nibble: first in memory on a big-endian machine */
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_BIG_ENDIAN__
	v = __builtin_bswap64(v);
#endif
	memcpy(out, &v, 8);
}

/* The two 64-bit FNV-1a hashes of input (seeds 0 and 0x9e3779b97f4a7c15) in hex. */
static void
map_id_from(slice_t input, char out[33])
{
	static const uint64_t seeds[2] = {0, 0x9e3779b97f4a7c15ull};
	uint64_t h[2];

	hash_fnv1a64_pair(input.ptr, input.len, seeds, h);
	for (int k = 0; k < 2; k++) {
		map_hex8((uint32_t)(h[k] >> 32), out + k * 16);
		map_hex8((uint32_t)h[k], out + k * 16 + 8);
	}
	out[32] = '\0';
}

/* id <- hash(a, b, ...): over the type and the values, 0x1f between; nothing when all are
 * empty. The input is put together in the conversion's cat buffer and values are decoded in
 * its part buffer: map_line_value, their other user, is not running at an id line. */
static bool
map_hash_id(map_run_t *run, const map_line_t *l, slice_t type, char out[33])
{
	buf_t *in = &run->fr.cv->cat, *text = &run->fr.cv->part;
	bool any = false;

	buf_reset(in);
	buf_append_slice(in, type);
	for (size_t i = 0; i < l->src.nparts; i++) {
		size_t si;
		unsigned rep;
		slice_t raw = map_ref_raw(&run->fr, &l->src.parts[i].ref, false, &si, &rep);
		slice_t t = map_text(&run->fr, raw, text);

		any |= t.len > 0;
		if (raw.len > 0)
			map_mark_used(run->fr.cv, si, l->src.parts[i].ref.field, rep);
		buf_append_byte(in, 0x1f);
		buf_append_slice(in, t);
	}
	if (any)
		map_id_from(buf_slice(in), out);
	return any;
}

/* Without a business id: the sender, MSH-10 and where in the message (stable for resends). */
static void
map_fallback_id(map_conv_t *cv, slice_t type, size_t seg_index, const char *where, char out[33])
{
	const hl7_header_t *h = hl7_msg_header(cv->m);
	buf_t in = BUF_INIT;

	buf_printf(&in, "%.*s\x1f%.*s\x1f%.*s\x1f%.*s\x1f%zu\x1f%s", (int)type.len, type.ptr,
		   (int)h->sending_app.len, h->sending_app.ptr, (int)h->sending_fac.len,
		   h->sending_fac.ptr, (int)h->control_id.len, h->control_id.ptr, seg_index, where);
	map_id_from(buf_slice(&in), out);
	buf_free(&in);
}

static map_inst_t *
map_inst_new(map_conv_t *cv, slice_t type, const fhir_type_t *meta, size_t seg_index,
	     const char *where)
{
	map_inst_t *inst = arena_zalloc(cv->a, sizeof(*inst));

	inst->type = type;
	inst->meta = meta;
	inst->seg_index = seg_index;
	map_text_copy(inst->where, sizeof(inst->where), where, where + strlen(where));
	inst->obj = fhir_object_new(cv->a);
	map_member_add(cv->a, inst->obj, map_keys[MAP_KEY_RESOURCE_TYPE],
		       fhir_string_new(cv->a, type), 0);
	if (cv->insts.n >= MAP_MAX_RESOURCES)
		cv->too_many = true;
	else
		*MAP_VEC_PUSH(cv->insts) = inst;
	return inst;
}

/* Ids are final once every segment had its say: a fallback for the resources no id line
 * named, then a resource whose id an earlier one has is merged into it (members it lacks). */
static void
map_ids_finish(map_conv_t *cv)
{
	for (size_t i = 0; i < cv->insts.n; i++) {
		map_inst_t *inst = cv->insts.v[i];

		if (inst->dropped)
			continue; /* made of constants only (map_line_value): no id, no merge */
		if (!inst->has_id) {
			map_fallback_id(cv, inst->type, inst->seg_index, inst->where, inst->id);
			inst->has_id = true;
		}
		for (size_t j = 0; j < i; j++) {
			map_inst_t *o = cv->insts.v[j];

			if (o->merged_into != NULL || o->dropped ||
			    !slice_eq(o->type, inst->type) || strcmp(o->id, inst->id) != 0)
				continue;
			map_merge(cv->a, o->obj, inst->obj);
			inst->merged_into = o;
			break;
		}
	}
}

static const map_inst_t *
map_inst_final(const map_inst_t *inst)
{
	while (inst->merged_into != NULL)
		inst = inst->merged_into;
	return inst;
}

/* "Type/id" (a reference, and a Bundle request's url): written in tmp when it fits (a buf_t
 * makes a call per piece, and goes to the heap), else appended to b. */
static slice_t
map_ref_text(const map_inst_t *inst, char *tmp, size_t cap, buf_t *b)
{
	if (inst->type.len + 33 <= cap) {
		memcpy(tmp, inst->type.ptr, inst->type.len);
		tmp[inst->type.len] = '/';
		memcpy(tmp + inst->type.len + 1, inst->id, 32);
		return slice_make(tmp, inst->type.len + 33);
	}
	buf_append_slice(b, inst->type);
	buf_append_byte(b, '/');
	buf_append(b, inst->id, 32);
	return buf_slice(b);
}

/* A reference's "reference" (map_member_set with the rank worked out once). */
static void
map_ref_set(map_conv_t *cv, fhir_node_t *ref, slice_t text)
{
	fhir_node_t *v = fhir_string_new(cv->a, text);

	if (fhir_object_get_interned(ref, map_keys[MAP_KEY_REFERENCE]) != NULL)
		fhir_object_set(cv->a, ref, map_keys[MAP_KEY_REFERENCE], v);
	else
		map_member_add(cv->a, ref, map_keys[MAP_KEY_REFERENCE], v, cv->rank_reference);
}

static void
map_ref_fill(map_conv_t *cv, fhir_node_t *ref, const map_inst_t *inst)
{
	char tmp[160];
	buf_t b = BUF_INIT;

	map_ref_set(cv, ref, map_ref_text(map_inst_final(inst), tmp, sizeof(tmp), &b));
	if (b.data != NULL)
		buf_free(&b);
}

/* {"reference": "Type/id"}, the id filled in when it is final. */
static fhir_node_t *
map_reference(map_conv_t *cv, map_inst_t *inst)
{
	fhir_node_t *ref = fhir_object_new(cv->a);
	char tmp[24], *end;

	/* a placeholder that differs between resources, so that arrays keep both references */
	tmp[0] = '?';
	end = map_put_u64(tmp + 1, (uintptr_t)inst);
	map_member_add(cv->a, ref, map_keys[MAP_KEY_REFERENCE],
		       fhir_string_new(cv->a, slice_make(tmp, (size_t)(end - tmp))),
		       cv->rank_reference);
	*MAP_VEC_PUSH(cv->refs) = (map_pending_ref_t){ref, inst};
	return ref;
}

/* ---- primitive values --------------------------------------------------------------- */

/* FHIR decimal/integer text from an NM value: sign, no leading zeros, digits kept. */
static bool
map_number_norm(slice_t in, bool integer, buf_t *out)
{
	size_t i = 0, int_start, int_end, frac_start = 0, frac_end = 0;
	bool neg = false, zero = true;

	if (i < in.len && (in.ptr[i] == '+' || in.ptr[i] == '-'))
		neg = in.ptr[i++] == '-';
	int_start = i;
	while (i < in.len && in.ptr[i] >= '0' && in.ptr[i] <= '9')
		i++;
	int_end = i;
	if (i < in.len && in.ptr[i] == '.') {
		frac_start = ++i;
		while (i < in.len && in.ptr[i] >= '0' && in.ptr[i] <= '9')
			i++;
		frac_end = i;
	}
	if (i != in.len || (int_end == int_start && frac_end == frac_start))
		return false;
	if (integer && frac_end > frac_start)
		return false;
	while (int_start + 1 < int_end && in.ptr[int_start] == '0')
		int_start++;
	for (size_t k = int_start; k < int_end; k++)
		zero &= in.ptr[k] == '0';
	for (size_t k = frac_start; k < frac_end; k++)
		zero &= in.ptr[k] == '0';
	buf_reset(out);
	if (neg && !zero)
		buf_append_byte(out, '-');
	if (int_end > int_start)
		buf_append(out, in.ptr + int_start, int_end - int_start);
	else
		buf_append_byte(out, '0');
	if (frac_end > frac_start) {
		buf_append_byte(out, '.');
		buf_append(out, in.ptr + frac_start, frac_end - frac_start);
	}
	return true;
}

static int
map_bool_parse(slice_t t)
{
	static const char *yes[] = {"Y", "YES", "T", "TRUE", "1", NULL};
	static const char *no[] = {"N", "NO", "F", "FALSE", "0", NULL};

	for (size_t i = 0; yes[i] != NULL; i++)
		if (slice_eq_nocase(t, slice_cstr(yes[i])))
			return 1;
	for (size_t i = 0; no[i] != NULL; i++)
		if (slice_eq_nocase(t, slice_cstr(no[i])))
			return 0;
	return -1;
}

static bool
map_is_uri_type(const char *name)
{
	/* the first letter rules out most types at once (string, id, ...), and says which names
	 * to compare with (code is not compared with uri and url) */
	switch (name[0]) {
	case 'u':
		return strcmp(name, "uri") == 0 || strcmp(name, "url") == 0 ||
		       strcmp(name, "uuid") == 0;
	case 'c':
		return strcmp(name, "canonical") == 0;
	case 'o':
		return strcmp(name, "oid") == 0;
	default:
		return false;
	}
}

static bool
map_has_space(slice_t t)
{
	for (size_t i = 0; i < t.len; i++)
		if (t.ptr[i] == ' ' || t.ptr[i] == '\t' || t.ptr[i] == '\r' || t.ptr[i] == '\n')
			return true;
	return false;
}

static void
map_base64(slice_t in, buf_t *out)
{
	static const char b64[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	const unsigned char *p = (const unsigned char *)in.ptr;

	buf_reset(out);
	for (size_t i = 0; i < in.len; i += 3) {
		unsigned v = (unsigned)p[i] << 16;
		char q[4];

		v |= i + 1 < in.len ? (unsigned)p[i + 1] << 8 : 0;
		v |= i + 2 < in.len ? p[i + 2] : 0;
		q[0] = b64[(v >> 18) & 63];
		q[1] = b64[(v >> 12) & 63];
		q[2] = i + 1 < in.len ? b64[(v >> 6) & 63] : '=';
		q[3] = i + 2 < in.len ? b64[v & 63] : '=';
		buf_append(out, q, 4);
	}
}

/* The conversion a primitive type's values need; MAP_BI_NONE for text as it is. Looked at by
 * first letter: this runs for every value. */
static map_builtin_t
map_builtin_of_type(const char *name)
{
	switch (name[0]) {
	case 'b':
		return strcmp(name, "boolean") == 0 ? MAP_BI_BOOLEAN : MAP_BI_NONE;
	case 'd':
		return strcmp(name, "date") == 0       ? MAP_BI_DATE
		       : strcmp(name, "dateTime") == 0 ? MAP_BI_DATETIME
		       : strcmp(name, "decimal") == 0  ? MAP_BI_DECIMAL
						       : MAP_BI_NONE;
	case 'i':
		return strcmp(name, "instant") == 0   ? MAP_BI_INSTANT
		       : strcmp(name, "integer") == 0 ? MAP_BI_INTEGER
						      : MAP_BI_NONE;
	case 'p':
		return strcmp(name, "positiveInt") == 0 ? MAP_BI_POSITIVE : MAP_BI_NONE;
	case 't':
		return strcmp(name, "time") == 0 ? MAP_BI_TIME : MAP_BI_NONE;
	case 'u':
		return strcmp(name, "unsignedInt") == 0 ? MAP_BI_UNSIGNED : MAP_BI_NONE;
	default:
		return MAP_BI_NONE;
	}
}

/* Text made into a value of primitive type t (forced by a built-in map when bi is set). */
static fhir_node_t *
map_primitive(map_run_t *run, const map_line_t *l, const fhir_type_t *t, map_builtin_t bi,
	      slice_t text, size_t seg_index, unsigned field, unsigned rep)
{
	map_conv_t *cv = run->fr.cv;
	const char *name = t != NULL ? t->name : "string";
	fhir_node_t *node = NULL;
	buf_t *num = &cv->num;

	if (text.len == 0)
		return NULL;
	if (bi == MAP_BI_NONE)
		bi = map_builtin_of_type(name);
	switch (bi) {
	case MAP_BI_DATE:
	case MAP_BI_DATETIME:
	case MAP_BI_INSTANT:
	case MAP_BI_TIME: {
		/* a built-in never gives more precision than the target holds */
		map_dtm_kind_t k = bi == MAP_BI_DATE      ? MAP_DTM_DATE
				   : bi == MAP_BI_TIME    ? MAP_DTM_TIME
				   : bi == MAP_BI_INSTANT ? MAP_DTM_INSTANT
							  : MAP_DTM_DATETIME;
		char out[MAP_DTM_MAX];
		unsigned flags;

		if (strcmp(name, "date") == 0)
			k = MAP_DTM_DATE;
		else if (strcmp(name, "instant") == 0 && k == MAP_DTM_DATETIME)
			k = MAP_DTM_INSTANT;
		if (map_dtm_format(text, k, cv->opt, out, &flags) != 0) {
			map_warn(run, l, text, seg_index, field, rep,
				 k == MAP_DTM_INSTANT ? "not a date with a time: %s left out"
						      : "not a valid date/time: %s left out",
				 name);
			break;
		}
		if (flags & MAP_DTM_TIME_DROPPED)
			map_warn(
			    run, l, text, seg_index, field, rep,
			    "time without an offset: only the date kept (set a default time zone)");
		if (flags & MAP_DTM_UTC_ASSUMED)
			map_warn(run, l, text, seg_index, field, rep,
				 "time without an offset: taken as UTC (set a default time zone)");
		node = fhir_string_new(cv->a, slice_cstr(out));
		break;
	}
	case MAP_BI_BOOLEAN: {
		int b = map_bool_parse(text);

		if (b < 0)
			map_warn(run, l, text, seg_index, field, rep,
				 "not a yes/no value: boolean left out");
		else
			node = fhir_bool_new(cv->a, b == 1);
		break;
	}
	case MAP_BI_DECIMAL:
	case MAP_BI_INTEGER:
	case MAP_BI_POSITIVE:
	case MAP_BI_UNSIGNED:
		/* R4's rules for the type (fhir_primitive_problem): 32 bits, > 0, >= 0 */
		if (!map_number_norm(text, bi != MAP_BI_DECIMAL, num) ||
		    fhir_primitive_problem(name, buf_slice(num)) != NULL) {
			map_warn(run, l, text, seg_index, field, rep, "not a valid %s: left out",
				 name);
			break;
		}
		node = fhir_number_new(cv->a, buf_slice(num));
		break;
	case MAP_BI_BASE64:
		map_base64(text, num);
		node = fhir_string_new(cv->a, buf_slice(num));
		break;
	case MAP_BI_STRING:
	case MAP_BI_NONE:
		if (map_is_uri_type(name) && map_has_space(text)) {
			map_warn(run, l, text, seg_index, field, rep,
				 "not a URI (it has blanks): %s left out", name);
			break;
		}
		/* a code with double blanks, an id with a slash, ...: what R4 does not allow
		 * (strings need no check: decoding made them text XML can carry) */
		if (strcmp(name, "string") != 0 && strcmp(name, "markdown") != 0 &&
		    fhir_primitive_problem(name, text) != NULL) {
			map_warn(run, l, text, seg_index, field, rep, "not a valid %s: left out",
				 name);
			break;
		}
		node = fhir_string_new(cv->a, text);
		break;
	}
	return node;
}

/* ---- vocabularies ------------------------------------------------------------------- */

/* Where a code system URI cannot be found in a vocabulary: URIs pass, HL7nnnn is the v2
 * table's code system, a bare OID becomes urn:oid:. */
static bool
map_uri_fallback(slice_t code, buf_t *out)
{
	size_t digits = 0, dots = 0;

	buf_reset(out);
	if (map_has_space(code))
		return false;
	if (memchr(code.ptr, ':', code.len) != NULL) {
		buf_append_slice(out, code);
		return true;
	}
	if (code.len >= 7 && code.len <= 8 && strncmp(code.ptr, "HL7", 3) == 0) {
		for (size_t i = 3; i < code.len; i++)
			digits += code.ptr[i] >= '0' && code.ptr[i] <= '9';
		if (digits == code.len - 3) {
			buf_printf(out, "http://terminology.hl7.org/CodeSystem/v2-%.*s",
				   (int)(code.len - 3), code.ptr + 3);
			return true;
		}
	}
	digits = 0;
	for (size_t i = 0; i < code.len; i++) {
		digits += code.ptr[i] >= '0' && code.ptr[i] <= '9';
		dots += code.ptr[i] == '.';
	}
	if (dots > 0 && digits + dots == code.len && code.ptr[0] != '.') {
		buf_printf(out, "urn:oid:%.*s", (int)code.len, code.ptr);
		return true;
	}
	return false;
}

typedef struct {
	const map_vrow_t *rows[16];
	size_t n;
	bool known;         /* a row says the code has no FHIR equivalent */
	slice_t first_code; /* for warnings */
} map_matches_t;

/* Where the rows with code begin in v's vkeys (the first not below it). */
static size_t
map_vocab_first(const map_def_t *v, slice_t code)
{
	size_t lo = 0, hi = v->nrows;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		slice_t k = v->vkeys[mid].code;
		/* codes are short and mostly differ in their first byte: no memcmp call then */
		int c = k.len > 0 && code.len > 0 && k.ptr[0] != code.ptr[0]
			    ? (unsigned char)k.ptr[0] - (unsigned char)code.ptr[0]
			    : memcmp(k.ptr, code.ptr, k.len < code.len ? k.len : code.len);

		if (c < 0 || (c == 0 && k.len < code.len))
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Rows matching the code triplets of a value (CWE .1/.3, .4/.6, .10/.12, or the value). */
static void
map_vocab_match(map_run_t *run, const map_def_t *v, slice_t raw, int level, map_matches_t *mm)
{
	const hl7_delims_t *d = hl7_msg_delims(run->fr.cv->m);
	static const unsigned trip[3][2] = {{1, 3}, {4, 6}, {10, 12}};
	buf_t *code_buf = &run->fr.cv->vcode, *sys_buf = &run->fr.cv->vsys;
	bool comps = level == 1 && memchr(raw.ptr, d->component, raw.len) != NULL;

	mm->n = 0;
	mm->known = false;
	mm->first_code = SLICE_NULL;
	for (size_t t = 0; t < (comps ? 3u : 1u); t++) {
		slice_t c = raw, s = SLICE_NULL;

		if (comps) {
			c = hl7_split_nth(raw, d->component, trip[t][0]);
			s = hl7_split_nth(raw, d->component, trip[t][1]);
		} else if (level <= 2) {
			c = hl7_split_nth(raw, level == 1 ? d->component : d->subcomponent, 1);
		}
		slice_t code = map_text(&run->fr, c, code_buf);
		slice_t sys = map_text(&run->fr, s, sys_buf);

		if (code.len == 0)
			continue;
		if (mm->first_code.len == 0)
			mm->first_code = c;
		/* the rows with this code, in file order */
		for (size_t i = map_vocab_first(v, code);
		     i < v->nrows && slice_eq(v->vkeys[i].code, code) && mm->n < 16; i++) {
			const map_vrow_t *r = &v->rows[v->vkeys[i].row];

			if (!(r->system.len == 0 || sys.len == 0 || slice_eq(r->system, sys)))
				continue;
			/* "-": a known code without a FHIR equivalent (no value, no warning) */
			if (slice_eq_cstr(r->fcode, "-"))
				mm->known = true;
			else
				mm->rows[mm->n++] = r;
		}
	}
}

static fhir_node_t *
map_coding_from_row(map_conv_t *cv, const map_vrow_t *r)
{
	fhir_node_t *c = fhir_object_new(cv->a);

	if (r->fsystem.len > 0)
		map_member_add(cv->a, c, map_keys[MAP_KEY_SYSTEM],
			       fhir_string_new(cv->a, r->fsystem), cv->rank_system);
	map_member_add(cv->a, c, map_keys[MAP_KEY_CODE], fhir_string_new(cv->a, r->fcode),
		       cv->rank_code);
	if (r->fdisplay.len > 0)
		map_member_add(cv->a, c, map_keys[MAP_KEY_DISPLAY],
			       fhir_string_new(cv->a, r->fdisplay), cv->rank_display);
	return c;
}

static bool
map_coding_same(const fhir_node_t *x, const fhir_node_t *y)
{
	return slice_eq(fhir_node_text(fhir_object_get_cstr(x, "system")),
			fhir_node_text(fhir_object_get_cstr(y, "system"))) &&
	       slice_eq(fhir_node_text(fhir_object_get_cstr(x, "code")),
			fhir_node_text(fhir_object_get_cstr(y, "code")));
}

/* Whether a coding without a system is a code the vocabulary translated. */
static bool
map_vocab_translated(const map_matches_t *mm, const fhir_node_t *coding)
{
	slice_t code = fhir_node_text(fhir_object_get_cstr(coding, "code"));

	if (fhir_object_get_cstr(coding, "system") != NULL)
		return false;
	for (size_t i = 0; i < mm->n; i++)
		if (slice_eq(mm->rows[i]->code, code))
			return true;
	return false;
}

/* `via V` (and with `as`, the CodeableConcept the map made, given as cc). */
static fhir_node_t *
map_vocab_apply(map_run_t *run, const map_line_t *l, const fhir_type_t *t, slice_t raw, int level,
		fhir_node_t *cc, size_t seg_index, unsigned field, unsigned rep)
{
	map_conv_t *cv = run->fr.cv;
	map_matches_t mm;
	const char *name = t != NULL ? t->name : "code";
	buf_t tmp = BUF_INIT;
	fhir_node_t *node = NULL;

	map_vocab_match(run, l->via_def, raw, level, &mm);
	if (name[0] == 'C' && strcmp(name, "CodeableConcept") == 0) {
		fhir_node_t *codings = fhir_array_new(cv->a), *old;

		for (size_t i = 0; i < mm.n; i++)
			fhir_array_append(cv->a, codings, map_coding_from_row(cv, mm.rows[i]));
		old = cc != NULL ? fhir_object_get_cstr(cc, "coding") : NULL;
		for (size_t i = 0; old != NULL && i < fhir_array_len(old); i++) {
			/* an original code without a system says nothing its translation does not
			 */
			bool dup = map_vocab_translated(&mm, fhir_array_at(old, i));

			for (size_t k = 0; k < fhir_array_len(codings) && !dup; k++)
				dup = map_coding_same(fhir_array_at(codings, k),
						      fhir_array_at(old, i));
			if (!dup)
				fhir_array_append(cv->a, codings, fhir_array_at(old, i));
		}
		node = cc != NULL ? cc : fhir_object_new(cv->a);
		if (fhir_array_len(codings) > 0)
			map_member_set(cv->a, node, t, map_keys[MAP_KEY_CODING], codings);
	} else if (mm.n > 0 && name[0] == 'C' && strcmp(name, "Coding") == 0) {
		node = map_coding_from_row(cv, mm.rows[0]);
	} else if (mm.n > 0 && name[0] == 'b' && strcmp(name, "boolean") == 0) {
		int b = map_bool_parse(mm.rows[0]->fcode);

		if (b >= 0)
			node = fhir_bool_new(cv->a, b == 1);
	} else if (mm.n > 0) {
		node = fhir_string_new(cv->a, mm.rows[0]->fcode);
	} else if (strcmp(name, "uri") == 0 || strcmp(name, "url") == 0 ||
		   strcmp(name, "canonical") == 0) {
		buf_t uri = BUF_INIT;

		if (map_uri_fallback(
			map_text(&run->fr, mm.first_code.len ? mm.first_code : raw, &tmp), &uri))
			node = fhir_string_new(cv->a, buf_slice(&uri));
		buf_free(&tmp);
		buf_free(&uri);
		return node;
	}
	/* with 'as', the original codes are kept: nothing is lost */
	if (mm.n == 0 && !mm.known && mm.first_code.len > 0 && cc == NULL)
		map_warn(run, l, mm.first_code, seg_index, field, rep,
			 "code not in vocabulary %.*s", (int)l->via_def->name.len,
			 l->via_def->name.ptr);
	return node;
}

/* ---- building ----------------------------------------------------------------------- */

static void map_mark_ignored(map_conv_t *cv, const map_def_t *def, size_t seg_index);
static void map_run_def(map_conv_t *cv, const map_def_t *def, const map_frame_t *parent,
			const char *src, slice_t value, int level, map_inst_t *inst,
			fhir_node_t *obj, fhir_node_t **value_out);

static void
map_path_step(buf_t *path, const map_step_t *st, size_t pos, bool array)
{
	if (path == NULL)
		return;
	if (path->len > 0)
		buf_append_byte(path, '.');
	buf_append_slice(path, st->name);
	if (array)
		buf_printf(path, "[%zu]", pos);
}

static bool map_choice_taken(const fhir_node_t *obj, const map_step_t *st);

static fhir_node_t *
map_label_find(map_run_t *run, fhir_node_t *arr, uint16_t index)
{
	for (size_t i = 0; i < run->nlabels; i++)
		if (run->labels[i].arr == arr && run->labels[i].index == index)
			return run->labels[i].child;
	return NULL;
}

/* The object a step leads to, made when missing: objects by key; in arrays the labelled
 * element [n], or the first element when the step has no [n]. */
static fhir_node_t *
map_nav_step(map_run_t *run, fhir_node_t *obj, const map_step_t *st, buf_t *path)
{
	arena_t *a = run->fr.cv->a;
	fhir_node_t *child, *arr;
	size_t pos = 0;

	if (st->primitive) {
		/* extension / id of a primitive live in the "_name" companion */
		child = fhir_object_get_interned(obj, st->ext_key);
		if (child == NULL) {
			child = fhir_object_new(a);
			map_member_add(a, obj, st->ext_key, child, st->rank + 1);
		}
		map_path_step(path, st, 0, false);
		return fhir_node_kind(child) == FHIR_OBJECT ? child : NULL;
	}
	if (!st->array) {
		child = fhir_object_get_interned(obj, st->key);
		if (child == NULL) {
			/* a choice another type of which has a value: the first one stays */
			if (st->elem != NULL && st->elem->choice_base != NULL &&
			    map_choice_taken(obj, st))
				return NULL;
			child = fhir_object_new(a);
			map_member_add(a, obj, st->key, child, st->rank);
		}
		map_path_step(path, st, 0, false);
		return fhir_node_kind(child) == FHIR_OBJECT ? child : NULL;
	}
	arr = fhir_object_get_interned(obj, st->key);
	if (arr == NULL) {
		arr = fhir_array_new(a);
		map_member_add(a, obj, st->key, arr, st->rank);
	}
	if (fhir_node_kind(arr) != FHIR_ARRAY)
		return NULL;
	if (st->index > 0)
		child = map_label_find(run, arr, st->index);
	else
		child = fhir_array_len(arr) > 0 ? fhir_array_at(arr, 0) : NULL;
	if (child == NULL) {
		child = fhir_object_new(a);
		fhir_array_append(a, arr, child);
		if (st->index > 0 && run->nlabels < sizeof(run->labels) / sizeof(run->labels[0])) {
			run->labels[run->nlabels].arr = arr;
			run->labels[run->nlabels].index = st->index;
			run->labels[run->nlabels++].child = child;
		}
	}
	for (size_t i = 0; i < fhir_array_len(arr); i++)
		if (fhir_array_at(arr, i) == child)
			pos = i;
	map_path_step(path, st, pos, true);
	return fhir_node_kind(child) == FHIR_OBJECT ? child : NULL;
}

/* Whether obj already has another type of the choice element st is one of (value[x]). */
static bool
map_choice_taken(const fhir_node_t *obj, const map_step_t *st)
{
	slice_t base;

	if (st->elem == NULL || st->elem->choice_base == NULL)
		return false;
	base = slice_cstr(st->elem->choice_base);
	for (size_t i = 0; i < fhir_object_count(obj); i++) {
		slice_t k = fhir_object_key_at(obj, i);

		if (k.len > base.len && memcmp(k.ptr, base.ptr, base.len) == 0 &&
		    k.ptr[base.len] >= 'A' && k.ptr[base.len] <= 'Z' && !slice_eq(k, st->name))
			return true;
	}
	return false;
}

/* Whether an array already holds an object equal to v (merges do not repeat identifiers):
 * among its first upto elements, those that can be (map_run_t.refs_distinct). */
static bool
map_array_has(const fhir_node_t *arr, const fhir_node_t *v, size_t upto)
{
	size_t n = fhir_array_len(arr);

	if (fhir_node_kind(v) != FHIR_OBJECT || n > 64)
		return false;
	for (size_t i = 0; i < n && i < upto; i++)
		if (fhir_node_equal(fhir_array_at(arr, i), v))
			return true;
	return false;
}

/* Puts v at the last step in obj: appended to arrays (unless an equal object is there);
 * single values only when not set yet (the first line that gives a value wins, and the first
 * type of a choice), objects merged. False when nothing was put. */
static bool
map_put(map_run_t *run, fhir_node_t *obj, const map_step_t *st, fhir_node_t *v, buf_t *path)
{
	arena_t *a = run->fr.cv->a;
	fhir_node_t *cur = fhir_object_get_interned(obj, st->key);

	if (st->elem->choice_base != NULL && map_choice_taken(obj, st))
		return false;
	if (st->array) {
		if (cur == NULL) {
			cur = fhir_array_new(a);
			map_member_add(a, obj, st->key, cur, st->rank);
		}
		if (fhir_node_kind(cur) != FHIR_ARRAY)
			return false;
		if (st->index > 0) {
			fhir_node_t *have = map_label_find(run, cur, st->index);

			if (have != NULL) {
				if (fhir_node_kind(have) != FHIR_OBJECT ||
				    fhir_node_kind(v) != FHIR_OBJECT)
					return false;
				map_merge(a, have, v);
				for (size_t i = 0; i < fhir_array_len(cur); i++)
					if (fhir_array_at(cur, i) == have)
						map_path_step(path, st, i, true);
				return true;
			}
			if (run->nlabels < sizeof(run->labels) / sizeof(run->labels[0])) {
				run->labels[run->nlabels].arr = cur;
				run->labels[run->nlabels].index = st->index;
				run->labels[run->nlabels++].child = v;
			}
		} else {
			size_t upto = fhir_array_len(cur);

			if (run->refs_distinct) {
				if (run->refs_arr != cur) {
					run->refs_arr = cur;
					run->refs_from = upto;
				}
				upto = run->refs_from;
			}
			if (map_array_has(cur, v, upto))
				return false;
		}
		fhir_array_append(a, cur, v);
		map_path_step(path, st, fhir_array_len(cur) - 1, true);
		return true;
	}
	if (cur != NULL) {
		/* a value is there: only objects take in what they lack */
		if (fhir_node_kind(cur) != FHIR_OBJECT || fhir_node_kind(v) != FHIR_OBJECT)
			return false;
		map_merge(a, cur, v);
		map_path_step(path, st, 0, false);
		return true;
	}
	map_member_add(a, obj, st->key, v, st->rank);
	map_path_step(path, st, 0, false);
	return true;
}

/* Prefixes the explain records a datatype map made (from start) with where its value went. */
static void
map_explain_fix(map_conv_t *cv, size_t start, map_inst_t *inst, const buf_t *path)
{
	for (size_t i = start; cv->opt->explain && i < cv->xrecs.n; i++) {
		map_xrec_t *x = &cv->xrecs.v[i];
		buf_t b = BUF_INIT;

		if (x->inst != NULL)
			continue; /* a resource of its own */
		buf_append(&b, path->data ? path->data : "", path->len);
		if (x->path[0] != '\0' && b.len > 0)
			buf_append_byte(&b, '.');
		buf_append_cstr(&b, x->path);
		x->path = arena_strndup(cv->a, b.data ? b.data : "", b.len);
		buf_free(&b);
	}
	for (size_t i = start; cv->opt->explain && i < cv->xrecs.n; i++)
		if (cv->xrecs.v[i].inst == NULL)
			cv->xrecs.v[i].inst = inst;
}

/* Whether a value holds separators only ("^^", "^&~"): components, none of them valued. Such
 * a field gives nothing (no Practitioner or Location without a single value of its own). */
static bool
map_raw_blank(slice_t raw, const hl7_delims_t *d)
{
	for (size_t i = 0; i < raw.len; i++) {
		char c = raw.ptr[i];

		if (c != d->component && c != d->subcomponent && c != d->repetition)
			return false;
	}
	return true;
}

/* The value of a line, or NULL. *src_out gets the explain source. Inlined in both its
 * callers: in map_run_group, the converter's inner loop, a call costs 3.8% of map_convert. */
static inline __attribute__((always_inline)) fhir_node_t *
map_line_value(map_run_t *run, const map_line_t *l, const fhir_type_t *t, const char **src_out)
{
	map_conv_t *cv = run->fr.cv;
	const map_operand_t *p0 = &l->src.parts[0];
	fhir_node_t *node = NULL;
	size_t si = run->fr.value_seg;
	unsigned rep = run->fr.rep, field = run->fr.field;

	*src_out = NULL;
	if (l->src.kind == MAP_SRC_CONST) {
		if (p0->kind == MAP_OPD_STRING)
			return fhir_string_new(cv->a, p0->text);
		if (p0->kind == MAP_OPD_NUMBER)
			return fhir_number_new(cv->a, p0->text);
		return fhir_bool_new(cv->a, slice_eq_nocase(p0->text, SLICE_LIT("true")));
	}
	if (l->src.nparts == 1 && p0->kind == MAP_OPD_REF && l->src.kind == MAP_SRC_VALUE) {
		slice_t raw = map_ref_raw(&run->fr, &p0->ref, false, &si, &rep);
		int level;

		if (raw.len == 0 || map_raw_blank(raw, run->fr.delims))
			return NULL;
		if (p0->ref.seg[0] != '\0') {
			field = p0->ref.field;
			level = p0->ref.sub > 0 ? 3 : p0->ref.comp > 0 ? 2 : 1;
		} else {
			level = run->fr.level + (p0->ref.comp > 0) + (p0->ref.sub > 0);
			level = level > 3 ? 3 : level;
		}
		map_mark_used(cv, si, field, rep);
		if (cv->opt->explain) /* else there is no source to name: no call */
			*src_out = map_ref_string(run, &p0->ref, p0->ref.seg[0] ? rep : 0);
		if (l->as_def != NULL) {
			size_t start = cv->xrecs.n;
			fhir_node_t *made = NULL;
			map_frame_t from = run->fr; /* the datatype map's value is from here */

			from.value_seg = si;
			from.field = field;
			from.rep = rep;

			if (l->as_def->is_resource) {
				char where[64], *p = where;
				map_inst_t *res;

				/* "field.rep.Name", the name cut at 30 */
				p = map_put_u64(p, field);
				*p++ = '.';
				p = map_put_u64(p, rep);
				*p++ = '.';
				memcpy(p, l->as_def->name.ptr,
				       l->as_def->name.len > 30 ? 30 : l->as_def->name.len);
				p[l->as_def->name.len > 30 ? 30 : l->as_def->name.len] = '\0';
				res = map_inst_new(cv, l->as_def->fhir, l->as_def->type, si, where);
				map_run_def(cv, l->as_def, &from, *src_out, raw, level, res,
					    res->obj, NULL);
				if (!res->sourced) {
					/* its lines gave constants only (a location with just an
					 * assigning authority the map does not read): no resource
					 */
					res->dropped = true;
					cv->xrecs.n = start;
					return NULL;
				}
				node = map_reference(cv, res);
			} else {
				made = l->as_def->type->kind == FHIR_TYPE_PRIMITIVE
					   ? NULL
					   : fhir_object_new(cv->a);
				map_run_def(cv, l->as_def, &from, *src_out, raw, level, NULL, made,
					    &made);
				cv->canon_needed |= made != NULL &&
						    fhir_node_kind(made) == FHIR_OBJECT &&
						    t != l->as_def->type;
				node = made;
				if (node != NULL && fhir_node_is_empty(node)) {
					node = NULL;
					cv->xrecs.n = start;
				}
			}
			if (l->via_def != NULL)
				node = map_vocab_apply(run, l, t, raw, level, node, si, field, rep);
			return node;
		}
		if (l->via_def != NULL)
			return map_vocab_apply(run, l, t, raw, level, NULL, si, field, rep);
		if (level == 1 && p0->ref.seg[0] != '\0' && t != NULL &&
		    t->kind == FHIR_TYPE_PRIMITIVE && strcmp(t->name, "string") != 0 &&
		    strcmp(t->name, "markdown") != 0) {
			/* a coded or dated field written whole (PID-8, PID-7): its first component
			 */
			raw = hl7_split_nth(raw, hl7_msg_delims(cv->m)->component, 1);
		}
		return map_primitive(run, l, t, l->as_builtin, map_text(&run->fr, raw, &cv->text),
				     si, field, rep);
	}
	/* concatenations ("+"): empty when every field in them is; join() puts the separator
	 * between the ones that are not */
	{
		bool any_all = false;
		buf_t *text = &cv->text, *part = &cv->part, *cat = &cv->cat;

		buf_reset(text);

		for (size_t c = 0; c < l->src.ncuts; c++) {
			size_t to = c + 1 < l->src.ncuts ? l->src.cuts[c + 1] : l->src.nparts;
			bool has_ref = false, any = false;

			buf_reset(cat);
			for (size_t i = l->src.cuts[c]; i < to; i++) {
				const map_operand_t *o = &l->src.parts[i];

				if (o->kind == MAP_OPD_REF) {
					slice_t raw =
					    map_ref_raw(&run->fr, &o->ref, false, &si, &rep);

					if (raw.len > 0)
						map_mark_used(cv, si,
							      o->ref.seg[0] ? o->ref.field : field,
							      rep);
					slice_t pt = map_text(&run->fr, raw, part);

					has_ref = true;
					any |= pt.len > 0;
					if (*src_out == NULL && pt.len > 0 && cv->opt->explain)
						*src_out = map_ref_string(run, &o->ref,
									  o->ref.seg[0] ? rep : 0);
					buf_append_slice(cat, pt);
				} else {
					buf_append_slice(cat, o->text);
				}
			}
			if ((has_ref && !any) || cat->len == 0)
				continue;
			if (l->src.kind == MAP_SRC_JOIN && text->len > 0)
				buf_append_slice(text, l->src.sep);
			buf_append(text, cat->data, cat->len);
			any_all = true;
		}
		if (any_all)
			node = map_primitive(run, l, t, l->as_builtin, slice_trim(buf_slice(text)),
					     si, field, rep);
		return node;
	}
}

/* Where one group's element is being built (for the repetition in context). */
typedef struct {
	fhir_node_t *root;     /* the [n] element of an indexed group, once made */
	fhir_node_t *root_arr; /* the array it went into, if any */
	buf_t root_path;
	buf_t path;
} map_gstate_t;

/* Copies an explain path; without explain both are empty, and nothing is allocated. */
static void
map_path_copy(buf_t *to, const buf_t *from)
{
	buf_reset(to);
	if (from->len > 0)
		buf_append(to, from->data, from->len);
}

/* Puts one line's value where its target says. */
static void
map_place(map_run_t *run, const map_egroup_t *g, const map_line_t *l, fhir_node_t *v,
	  const char *src, size_t start, fhir_node_t *obj, map_gstate_t *gs)
{
	map_conv_t *cv = run->fr.cv;
	buf_t *pp = cv->opt->explain ? &gs->path : NULL;
	fhir_node_t *at = obj;
	size_t from = 0;

	if (pp != NULL) /* without explain, paths stay empty */
		buf_reset(&gs->path);
	if (g->indexed && l->nsteps >= g->key_steps) {
		if (gs->root == NULL) {
			map_step_t key = l->steps[g->key_steps - 1];

			key.index = 0; /* a new element for each repetition */
			for (size_t i = 0; at != NULL && i + 1 < g->key_steps; i++)
				at = map_nav_step(run, at, &l->steps[i], pp);
			if (at == NULL)
				goto drop;
			if (l->nsteps == g->key_steps) {
				if (!map_put(run, at, &key, v, pp))
					goto drop;
				gs->root = v;
				gs->root_arr =
				    key.array ? fhir_object_get_interned(at, key.key) : NULL;
				map_path_copy(&gs->root_path, &gs->path);
				goto done;
			}
			gs->root = fhir_object_new(cv->a);
			if (!map_put(run, at, &key, gs->root, pp))
				goto drop;
			gs->root_arr = key.array ? fhir_object_get_interned(at, key.key) : NULL;
			if (!key.array) /* an element already there is the one to build on */
				gs->root = fhir_object_get_interned(at, key.key);
			map_path_copy(&gs->root_path, &gs->path);
		} else if (l->nsteps == g->key_steps) {
			if (fhir_node_kind(gs->root) != FHIR_OBJECT ||
			    fhir_node_kind(v) != FHIR_OBJECT)
				goto drop;
			map_merge(cv->a, gs->root, v);
			map_path_copy(&gs->path, &gs->root_path);
			goto done;
		}
		if (fhir_node_kind(gs->root) != FHIR_OBJECT)
			goto drop;
		map_path_copy(&gs->path, &gs->root_path);
		at = gs->root;
		from = g->key_steps;
	}
	for (size_t i = from; at != NULL && i + 1 < l->nsteps; i++)
		at = map_nav_step(run, at, &l->steps[i], pp);
	if (at == NULL || !map_put(run, at, &l->steps[l->nsteps - 1], v, pp))
		goto drop;
done:
	if (l->src.kind != MAP_SRC_CONST && run->fr.inst != NULL)
		run->fr.inst->sourced = true;
	if (cv->opt->explain) {
		map_explain_fix(cv, start, map_run_inst(run), &gs->path);
		map_explain(run, l, &gs->path, src);
	}
	return;
drop:
	if (cv->opt->explain)
		cv->xrecs.n = start;
}

/* Whether the single-valued element a line fills already has a value (so the line, a
 * fallback, need not even be evaluated, nor warn). Looks without making anything. */
static bool
map_target_taken(const map_egroup_t *g, const map_line_t *l, const fhir_node_t *obj,
		 const map_gstate_t *gs)
{
	const fhir_node_t *at = obj;
	size_t from = 0;
	const map_step_t *last;

	if (l->to_value || l->nsteps == 0)
		return false;
	last = &l->steps[l->nsteps - 1];
	if (last->array)
		return false;
	if (g->indexed && l->nsteps >= g->key_steps) {
		if (gs->root == NULL || l->nsteps == g->key_steps)
			return false;
		at = gs->root;
		from = g->key_steps;
	}
	for (size_t i = from; at != NULL && i + 1 < l->nsteps; i++) {
		const map_step_t *st = &l->steps[i];
		const fhir_node_t *next;

		if (st->primitive || st->index > 0)
			return false;
		next = fhir_object_get_interned(at, st->key);
		if (next != NULL && st->array)
			next = fhir_array_len(next) > 0 ? fhir_array_at(next, 0) : NULL;
		at = next != NULL && fhir_node_kind(next) == FHIR_OBJECT ? next : NULL;
	}
	return at != NULL && (fhir_object_get_interned(at, last->key) != NULL ||
			      (last->elem->choice_base != NULL && map_choice_taken(at, last)));
}

/* Runs the lines of one element group for the repetition in the run's context. Constants of
 * a group that also takes fields wait until a field gives a value: no element of constants
 * alone (an extension url without its value). */
static void
map_run_group(map_run_t *run, const map_egroup_t *g, fhir_node_t *obj, fhir_node_t **value_out)
{
	const map_def_t *def = run->fr.def;
	map_conv_t *cv = run->fr.cv;
	map_gstate_t gs;
	const map_line_t *waiting[16];
	fhir_node_t *waiting_v[16];
	size_t nwaiting = 0;
	bool sourced = false;

	memset(&gs, 0, sizeof(gs));
	for (size_t k = 0; k < g->nlines; k++) {
		const map_line_t *l = &def->lines[g->lines[k]];
		const fhir_type_t *t;
		fhir_node_t *v;
		const char *src;
		size_t start = cv->xrecs.n;

		if (l->cond != NULL && !map_cond_eval(l->cond, &run->fr))
			continue;
		if (l->is_id) {
			if (run->fr.inst != NULL && !run->fr.inst->has_id &&
			    map_hash_id(run, l, run->fr.inst->type, run->fr.inst->id))
				run->fr.inst->has_id = true;
			continue;
		}
		if (l->to_value ? value_out != NULL && *value_out != NULL
				: map_target_taken(g, l, obj, &gs))
			continue;
		t = l->to_value ? def->type : l->nsteps ? l->steps[l->nsteps - 1].type : NULL;
		v = map_line_value(run, l, t, &src);
		if (v == NULL)
			continue;
		if (l->src.kind == MAP_SRC_CONST && g->indexed && g->has_source && !sourced) {
			if (nwaiting < 16) {
				waiting[nwaiting] = l;
				waiting_v[nwaiting++] = v;
			}
			continue;
		}
		if (l->src.kind != MAP_SRC_CONST && !sourced && nwaiting > 0) {
			/* the waiting constants go first; v's records (made while computing it)
			 * after */
			size_t nsaved = cv->xrecs.n - start;
			map_xrec_t *saved =
			    xreallocarray(NULL, nsaved ? nsaved : 1, sizeof(*saved));

			if (nsaved > 0)
				memcpy(saved, cv->xrecs.v + start, nsaved * sizeof(*saved));
			cv->xrecs.n = start;
			sourced = true;
			for (size_t w = 0; w < nwaiting; w++) {
				if (waiting[w]->to_value) {
					if (value_out != NULL && *value_out == NULL)
						*value_out = waiting_v[w];
					continue;
				}
				map_place(run, g, waiting[w], waiting_v[w], NULL, cv->xrecs.n, obj,
					  &gs);
			}
			start = cv->xrecs.n;
			for (size_t i = 0; i < nsaved; i++)
				*MAP_VEC_PUSH(cv->xrecs) = saved[i];
			free(saved);
		}
		sourced |= l->src.kind != MAP_SRC_CONST;
		if (l->to_value) {
			if (value_out != NULL && *value_out == NULL) {
				*value_out = v;
				buf_reset(&gs.path);
				map_explain(run, l, &gs.path, src);
			}
			continue;
		}
		map_place(run, g, l, v, src, start, obj, &gs);
	}
	/* an element equal to one already there (a merge repeating an identifier) goes again */
	if (gs.root_arr != NULL && fhir_node_kind(gs.root_arr) == FHIR_ARRAY) {
		size_t n = fhir_array_len(gs.root_arr);

		for (size_t i = 0; n <= 64 && i + 1 < n; i++)
			if (fhir_array_at(gs.root_arr, n - 1) == gs.root &&
			    fhir_node_equal(fhir_array_at(gs.root_arr, i), gs.root)) {
				fhir_array_remove_at(gs.root_arr, n - 1);
				break;
			}
	}
	if (cv->opt->explain) { /* without explain, the paths stay empty (map_path_copy) */
		buf_free(&gs.path);
		buf_free(&gs.root_path);
	}
}

/* Applies a segment or datatype map: into obj, or for a primitive map into *value_out. */
static void
map_run_def(map_conv_t *cv, const map_def_t *def, const map_frame_t *parent, const char *src,
	    slice_t value, int level, map_inst_t *inst, fhir_node_t *obj, fhir_node_t **value_out)
{
	map_run_t run;
	uint64_t valued = UINT64_MAX; /* what is valued of what groups need (map_egroup_t.needs) */

	/* labels[] is read only below nlabels: no need to clear its 32 entries for every run */
	run.nlabels = 0;
	run.refs_distinct = false;
	run.fr = *parent;
	run.fr.def = def;
	run.fr.parent = parent;
	run.fr.value = value;
	run.fr.level = level;
	run.fr.parts = NULL;
	if (def->kind == MAP_DATATYPE && (level == 1 || level == 2)) {
		const hl7_delims_t *d = hl7_msg_delims(cv->m);
		size_t n;

		map_value_split(value, level == 1 ? d->component : d->subcomponent, run.parts, &n);
		if (n != SIZE_MAX) {
			run.fr.parts = run.parts;
			run.fr.nparts = n;
			valued = 0;
			for (size_t i = 0; i < n; i++)
				if (run.parts[i].len > 0 && !hl7_is_null(run.parts[i]))
					valued |= (uint64_t)1 << i;
		}
	} else if (def->kind == MAP_SEGMENT && run.fr.seg != NULL &&
		   slice_eq(hl7_seg_id(run.fr.seg), slice_make(def->v2, strlen(def->v2)))) {
		valued = hl7_seg_valued(run.fr.seg); /* as map_egroup_t.needs counts them */
	}
	if (def->kind == MAP_DATATYPE && parent->def != NULL) {
		/* where the value came from: set by map_line_value through the parent's ctx */
		run.fr.value_seg = parent->value_seg;
		run.fr.field = parent->field;
		run.fr.rep = parent->rep;
	} else {
		run.fr.value_seg = parent->seg_index;
	}
	if (inst != NULL || def->kind == MAP_SEGMENT)
		run.fr.inst = inst;
	run.src = src;
	if (def->kind == MAP_SEGMENT)
		map_mark_ignored(cv, def, run.fr.seg_index);
	if (value_out != NULL && def->type->kind == FHIR_TYPE_PRIMITIVE)
		*value_out = NULL;
	for (size_t gi = 0; gi < def->negroups; gi++) {
		const map_egroup_t *g = &def->egroups[gi];
		const hl7_seg_t *s = NULL;
		size_t reps = 1, si = run.fr.seg_index;
		unsigned r0;

		if ((g->needs & valued) == 0 && g->needs != 0)
			continue; /* every part its lines read is empty: it would give nothing */
		run.fr.ctx_seg = parent->ctx_seg;
		run.fr.ctx_field = parent->ctx_field;
		run.fr.ctx_rep = parent->ctx_rep;
		if (g->has_driver) {
			map_ref_t whole = g->driver;
			slice_t f;

			whole.comp = whole.sub = 0;
			f = map_ref_raw(&run.fr, &whole, true, &si, &r0);
			s = hl7_msg_segment(cv->m, si);
			if (g->driver.seg[0] != '\0' && s != NULL && !hl7_seg_may_repeat(s))
				reps = f.len > 0 ? 1 : 0; /* the field of s has one repetition */
			else
				reps = hl7_split_count(f, hl7_msg_delims(cv->m)->repetition);
			if (reps == 0 || (reps > 1 && !g->repeats))
				reps =
				    1; /* an empty field still lets the group's other lines try */
			if (run.fr.ctx_seg == s && run.fr.ctx_field == g->driver.field)
				reps = reps > 0 ? 1 : 0; /* already inside one repetition */
			else
				run.fr.ctx_seg = s, run.fr.ctx_field = g->driver.field;
		}
		for (size_t r = 1; r <= reps; r++) {
			if (g->has_driver &&
			    !(parent->ctx_seg == s && parent->ctx_field == g->driver.field))
				run.fr.ctx_rep = (uint16_t)(r > 65535 ? 65535 : r);
			map_run_group(&run, g, obj, value_out);
		}
	}
}

/* "ignore" lines of a map mark the fields of segment seg_index they name as used. */
static void
map_mark_ignored(map_conv_t *cv, const map_def_t *def, size_t seg_index)
{
	slice_t id = hl7_seg_id(hl7_msg_segment(cv->m, seg_index));

	if (!cv->opt->explain)
		return;
	for (size_t i = 0; i < def->nignores; i++) {
		const map_ref_t *r = &def->ignores[i];

		if (!slice_eq(slice_make(r->seg, 3), id))
			continue;
		if (r->field > 0) {
			map_mark_used(cv, seg_index, r->field, MAP_REP_ALL);
			continue;
		}
		for (size_t f = 1;
		     f <= hl7_seg_field_count(hl7_msg_segment(cv->m, seg_index)) && f < 4096; f++)
			map_mark_used(cv, seg_index, (unsigned)f, MAP_REP_ALL);
	}
}

/* ---- the message ---------------------------------------------------------------------- */

static const map_def_t *
map_find_message(const map_set_t *set, const hl7_msg_t *m, bool *code_known)
{
	const hl7_header_t *h = hl7_msg_header(m);
	char event[64];
	int n = snprintf(event, sizeof(event), "%.*s_%.*s",
			 (int)(h->msg_code.len > 20 ? 20 : h->msg_code.len), h->msg_code.ptr,
			 (int)(h->trigger.len > 20 ? 20 : h->trigger.len), h->trigger.ptr);
	slice_t keys[2] = {slice_make(event, n > 0 ? (size_t)n : 0), h->structure};

	*code_known = false;
	for (int pass = 0; pass < 2; pass++)
		for (size_t k = 0; k < 2; k++)
			for (size_t i = 0; i < set->nmsgs; i++) {
				const map_def_t *d = set->msgs[i];

				if ((pass == 0) != d->site)
					continue;
				for (size_t j = 0; j < d->nnames; j++)
					if (keys[k].len > 0 && slice_eq(d->names[j], keys[k]))
						return d;
			}
	for (size_t i = 0; h->msg_code.len > 0 && i < set->nmsgs; i++)
		for (size_t j = 0; j < set->msgs[i]->nnames; j++)
			if (set->msgs[i]->names[j].len > h->msg_code.len &&
			    memcmp(set->msgs[i]->names[j].ptr, h->msg_code.ptr, h->msg_code.len) ==
				0 &&
			    set->msgs[i]->names[j].ptr[h->msg_code.len] == '_')
				*code_known = true;
	return NULL;
}

/* A group begins again when one of its opening segments comes back. */
static void
map_groups_update(map_conv_t *cv, slice_t id)
{
	const map_def_t *d = cv->msg;

	for (size_t g = 0; g < d->ngroups; g++) {
		const map_group_t *gr = &d->groups[g];
		size_t p;

		for (p = 0; p < gr->nopens && p < 32; p++)
			if (slice_eq(slice_make(gr->opens[p], 3), id))
				break;
		if (p == gr->nopens || p >= 32)
			continue;
		if ((cv->seen[g] >> p) != 0) {
			for (size_t s = 0; s < d->nslots; s++)
				if (d->slots[s].create_line >= gr->first &&
				    d->slots[s].create_line < gr->last)
					cv->current[s] = NULL;
			for (size_t k = 0; k < d->ngroups; k++)
				if (d->groups[k].first >= gr->first &&
				    d->groups[k].last <= gr->last)
					cv->seen[k] = 0;
		}
		cv->seen[g] |= 1u << p;
	}
}

/* Whether a message line's "follows" holds: of the segments this map names after "follows"
 * for this segment, the nearest one before it is one of the line's. That nearest one is the
 * same for every line of the segment: it is looked for once per segment (cv->follows_*). */
static bool
map_follows_ok(map_conv_t *cv, const map_line_t *l, size_t seg_index)
{
	const map_def_t *d = cv->msg;
	uint64_t id = map_seg_key(l->src.seg);

	if (l->nfollows == 0)
		return true;
	if (seg_index == 0)
		return false;
	if (cv->follows_seg != seg_index || cv->follows_id != id) {
		size_t best = SIZE_MAX;

		for (size_t k = 0; k < d->nlines; k++) {
			const map_line_t *o = &d->lines[k];

			if (o->src.kind != MAP_SRC_SEGMENT ||
			    memcmp(o->src.seg, l->src.seg, 3) != 0)
				continue;
			for (size_t f = 0; f < o->nfollows; f++) {
				size_t at = map_conv_find(cv, slice_make(o->follows[f], 3),
							  seg_index - 1, false);

				if (at != SIZE_MAX && (best == SIZE_MAX || at > best))
					best = at;
			}
		}
		cv->follows_seg = seg_index;
		cv->follows_id = id;
		/* the segment found is one of that id (map_conv_find) */
		cv->follows_best = best == SIZE_MAX
				       ? UINT64_MAX
				       : map_seg_id_key(hl7_seg_id(hl7_msg_segment(cv->m, best)));
	}
	for (size_t m = 0; m < l->nfollows; m++)
		if (map_seg_key(l->follows[m]) == cv->follows_best)
			return true;
	return false;
}

static map_inst_t *
map_slot_inst(map_conv_t *cv, int slot)
{
	return cv->msg->slots[slot].is_bundle ? &cv->bundle : cv->current[slot];
}

/* Puts v at the line's path in inst (a reference line or a slot-path segment line). The lines
 * under one segment line share run, so that their [n] name the same elements. */
static void
map_put_path(map_run_t *run, const map_line_t *l, map_inst_t *inst, fhir_node_t *v, const char *src)
{
	map_conv_t *cv = run->fr.cv;
	buf_t path = BUF_INIT;
	buf_t *pp = cv->opt->explain ? &path : NULL;
	fhir_node_t *at = inst->obj;

	run->fr.inst = inst;
	for (size_t i = 0; at != NULL && i + 1 < l->nsteps; i++)
		at = map_nav_step(run, at, &l->steps[i], pp);
	if (at != NULL && map_put(run, at, &l->steps[l->nsteps - 1], v, pp))
		map_explain(run, l, &path, src);
	buf_free(&path);
}

static void
map_run_init(map_run_t *run, map_conv_t *cv)
{
	/* labels[] and parts[] are read only below nlabels and through fr.parts */
	memset(&run->fr, 0, sizeof(run->fr));
	run->src = NULL;
	run->nlabels = 0;
	run->refs_distinct = false;
	run->refs_arr = NULL;
	run->fr.cv = cv;
	run->fr.m = cv->m;
	run->fr.delims = hl7_msg_delims(cv->m);
	run->fr.def = cv->msg;
}

/* "Patient[1]", for explain. */
static const char *
map_slot_name(map_conv_t *cv, int slot)
{
	const map_slot_t *sl = &cv->msg->slots[slot];
	char tmp[80];

	if (!cv->opt->explain)
		return NULL;
	snprintf(tmp, sizeof(tmp), "%.*s[%u]", (int)(sl->type.len > 60 ? 60 : sl->type.len),
		 sl->type.ptr, sl->index);
	return arena_strndup(cv->a, tmp, strlen(tmp));
}

static void
map_apply_ref(map_run_t *run, const map_frame_t *fr, const map_line_t *l)
{
	map_conv_t *cv = run->fr.cv;
	map_inst_t *inst = map_slot_inst(cv, l->slot), *rhs;
	fhir_node_t *v;

	if (inst == NULL || !map_cond_eval(l->cond, fr))
		return;
	switch (l->src.kind) {
	case MAP_SRC_SLOT:
		rhs = map_slot_inst(cv, l->src.slot);
		if (rhs == NULL)
			return;
		map_put_path(run, l, inst, map_reference(cv, rhs), map_slot_name(cv, l->src.slot));
		return;
	case MAP_SRC_ALL:
		*MAP_VEC_PUSH(cv->deferred) = (map_deferred_t){inst, l, l->lineno};
		return;
	case MAP_SRC_CONST: {
		const map_operand_t *o = &l->src.parts[0];

		v = o->kind == MAP_OPD_STRING ? fhir_string_new(cv->a, o->text)
		    : o->kind == MAP_OPD_NUMBER
			? fhir_number_new(cv->a, o->text)
			: fhir_bool_new(cv->a, slice_eq_cstr(o->text, "true"));
		map_put_path(run, l, inst, v, NULL);
		return;
	}
	case MAP_SRC_VALUE:
	case MAP_SRC_JOIN: {
		const char *src = NULL;
		size_t start = cv->xrecs.n;

		/* a field of the segment line's segment, read as a segment map reads it */
		run->fr.seg = fr->seg;
		run->fr.seg_key = fr->seg_key;
		run->fr.seg_index = fr->seg_index;
		run->fr.value_seg = fr->seg_index;
		run->fr.level = 1;
		run->fr.parts = NULL;
		run->fr.inst = inst;
		v = map_line_value(run, l, l->steps[l->nsteps - 1].type, &src);
		if (v == NULL) {
			cv->xrecs.n = start;
			return;
		}
		map_put_path(run, l, inst, v, src);
		return;
	}
	default:
		return;
	}
}

static void
map_apply_segment_line(map_conv_t *cv, size_t li, const hl7_seg_t *s, size_t seg_index)
{
	const map_def_t *d = cv->msg;
	const map_line_t *l = &d->lines[li];
	const map_slot_t *sl = &d->slots[l->slot];
	map_frame_t fr;
	map_inst_t *inst;
	map_run_t refs;
	char src[8];

	memset(&fr, 0, sizeof(fr));
	fr.cv = cv;
	fr.m = cv->m;
	fr.delims = hl7_msg_delims(cv->m);
	fr.def = d;
	fr.seg = s;
	fr.seg_key = map_seg_key(hl7_seg_id(s).ptr); /* 3 bytes: map_convert skips others */
	fr.seg_index = seg_index;
	fr.level = 1;
	if (!map_follows_ok(cv, l, seg_index) || !map_cond_eval(l->cond, &fr))
		return;
	memcpy(src, l->src.seg, sizeof(l->src.seg));
	if (l->nsteps > 0) {
		fhir_node_t *obj;
		size_t start = cv->xrecs.n;
		buf_t path = BUF_INIT;

		inst = map_slot_inst(cv, l->slot);
		if (inst == NULL)
			return;
		fr.inst = NULL;
		if (l->as_def->type->kind == FHIR_TYPE_PRIMITIVE) {
			obj = NULL;
			map_run_def(cv, l->as_def, &fr, src, SLICE_NULL, 1, NULL, NULL, &obj);
		} else {
			obj = fhir_object_new(cv->a);
			map_run_def(cv, l->as_def, &fr, src, SLICE_NULL, 1, NULL, obj, NULL);
		}
		if (obj == NULL || fhir_node_is_empty(obj)) {
			cv->xrecs.n = start;
			return;
		}
		/* where it went is known after the put: fix the records up then */
		{
			map_run_t run;
			buf_t *pp = cv->opt->explain ? &path : NULL;
			fhir_node_t *at = inst->obj;

			map_run_init(&run, cv);
			for (size_t i = 0; at != NULL && i + 1 < l->nsteps; i++)
				at = map_nav_step(&run, at, &l->steps[i], pp);
			if (at != NULL && map_put(&run, at, &l->steps[l->nsteps - 1], obj, pp))
				map_explain_fix(cv, start, inst, &path);
			else if (cv->opt->explain)
				cv->xrecs.n = start;
		}
		buf_free(&path);
	} else if (sl->is_bundle) {
		fr.inst = &cv->bundle;
		map_run_def(cv, l->as_def, &fr, src, SLICE_NULL, 1, &cv->bundle, cv->bundle.obj,
			    NULL);
	} else {
		bool begins = memcmp(l->src.seg, sl->creator, 3) == 0;

		/* the segment that begins the resource makes a new one per occurrence; the others
		 * add to the current one, or begin one when there is none */
		inst = cv->current[l->slot];
		if (inst == NULL || (begins && inst->seg_index != seg_index)) {
			char where[32] = "slot ";

			*map_put_u64(where + 5, (size_t)l->slot) = '\0';
			inst = map_inst_new(cv, sl->type, sl->meta, seg_index, where);
			cv->current[l->slot] = inst;
		}
		fr.inst = inst;
		map_run_def(cv, l->as_def, &fr, src, SLICE_NULL, 1, inst, inst->obj, NULL);
	}
	map_run_init(&refs, cv);
	for (size_t j = li + 1; j < d->nlines && d->lines[j].is_ref; j++)
		if (d->lines[j].owner == li)
			map_apply_ref(&refs, &fr, &d->lines[j]);
}

/* ---- output --------------------------------------------------------------------------- */

/* Where a member goes in R4 element order: resourceType first, then element e at 2e + 2 with
 * its "_x" companion right after it, then (MAP_CANON_REST) the others in their own order. */
#define MAP_CANON_REST 0xffffffffu

static uint32_t
map_canon_rank(const fhir_type_t *t, slice_t k, const fhir_type_t **et)
{
	int e;

	*et = NULL;
	if (slice_eq(k, SLICE_LIT("resourceType")))
		return 0;
	if (t == NULL)
		return MAP_CANON_REST;
	if ((e = fhir_meta_elem_index(t, k)) >= 0) {
		*et = fhir_meta_elem_type(t, &t->elems[e]);
		return 2 * (uint32_t)e + 2;
	}
	if (k.len > 1 && k.ptr[0] == '_' &&
	    (e = fhir_meta_elem_index(t, slice_make(k.ptr + 1, k.len - 1))) >= 0) {
		*et = fhir_meta_type(SLICE_LIT("Element"));
		return 2 * (uint32_t)e + 3;
	}
	return MAP_CANON_REST;
}

/* Ranks already found, kept from conversion to conversion (per thread: the set is shared): the
 * same (type, member) pairs come up again and again, and a slot costs less than a binary search
 * of the type's elements. Types are the static R4 metadata; keys are copied. */
#define MAP_RANK_SLOTS   1024
#define MAP_RANK_KEY_MAX 30

typedef struct {
	const fhir_type_t *t; /* NULL: empty slot */
	const fhir_type_t *et;
	uint32_t rank;
	uint8_t klen;
	char key[MAP_RANK_KEY_MAX];
} map_rank_slot_t;

static _Thread_local map_rank_slot_t map_rank_cache[MAP_RANK_SLOTS];

static uint32_t
map_canon_rank_cached(const fhir_type_t *t, slice_t k, const fhir_type_t **et)
{
	size_t h;
	map_rank_slot_t *s;

	if (t == NULL || k.len == 0 || k.len > MAP_RANK_KEY_MAX)
		return map_canon_rank(t, k, et);
	h = k.len * 31 + (unsigned char)k.ptr[0] * 7 + (unsigned char)k.ptr[k.len - 1] * 131 +
	    (unsigned char)k.ptr[k.len / 2] * 17;
	s = &map_rank_cache[(h ^ (uintptr_t)t >> 4) % MAP_RANK_SLOTS];
	if (s->t != t || s->klen != k.len || memcmp(s->key, k.ptr, k.len) != 0) {
		s->rank = map_canon_rank(t, k, &s->et);
		s->t = t;
		s->klen = (uint8_t)k.len;
		memcpy(s->key, k.ptr, k.len);
	}
	*et = s->et;
	return s->rank;
}

/* Whether map_canon has anything to do in n: objects and arrays (primitives are most nodes). */
static bool
map_canon_has_members(const fhir_node_t *n)
{
	fhir_kind_t k = fhir_node_kind(n);

	return k == FHIR_OBJECT || k == FHIR_ARRAY;
}

/* Puts n's members, and those of everything in it, in R4 element order (resourceType first,
 * "_x" right after x), in place: the conversion's trees are its own, and a node reached twice
 * is under the same element both times, so sorting it again changes nothing. */
static void
map_canon(arena_t *a, fhir_node_t *n, const fhir_type_t *t)
{
	fhir_node_t *rt;
	size_t cnt;
	bool moved = false;
	/* rank << 32 | member index: sorting keeps ties in member order */
	uint64_t order_small[32], *order = order_small;
	const fhir_type_t *types_small[32], **types = types_small;
	uint32_t *perm;

	if (fhir_node_kind(n) == FHIR_ARRAY) {
		for (size_t i = 0; i < fhir_array_len(n); i++)
			if (map_canon_has_members(fhir_array_at(n, i)))
				map_canon(a, fhir_array_at(n, i), t);
		return;
	}
	if (fhir_node_kind(n) != FHIR_OBJECT || (cnt = fhir_object_count(n)) == 0)
		return;
	rt = fhir_object_get(n, SLICE_LIT("resourceType"));
	/* a resource whose type the caller knows already (t) needs no lookup */
	if (t == NULL || (rt != NULL && !slice_eq(fhir_node_text(rt), slice_cstr(t->name)))) {
		const fhir_type_t *rtt = fhir_meta_type(fhir_node_text(rt));

		if (rtt != NULL)
			t = rtt;
	}
	if (cnt > 32) {
		order = arena_alloc(a, cnt * sizeof(*order));
		types = arena_alloc(a, cnt * sizeof(*types));
	}
	for (size_t i = 0; i < cnt; i++) {
		uint32_t rank = map_canon_rank_cached(t, fhir_object_key_at(n, i), &types[i]);
		uint64_t key = (uint64_t)rank << 32 | i;
		size_t j = i;

		/* Insertion sort: objects are small and mostly in order already. */
		while (j > 0 && order[j - 1] > key) {
			order[j] = order[j - 1];
			j--;
		}
		order[j] = key;
		moved |= j != i;
		if (map_canon_has_members(fhir_object_value_at(n, i)))
			map_canon(a, fhir_object_value_at(n, i), types[i]);
	}
	if (!moved)
		return;
	perm = arena_alloc(a, cnt * sizeof(*perm));
	for (size_t j = 0; j < cnt; j++)
		perm[j] = (uint32_t)(order[j] & 0xffffffffu);
	fhir_object_reorder(a, n, perm);
}

static bool
map_was_used(const map_conv_t *cv, uint64_t key)
{
	return cv->used.n > 0 &&
	       bsearch(&key, cv->used.v, cv->used.n, sizeof(uint64_t), map_cmp_u64) != NULL;
}

static void
map_list_unused(map_conv_t *cv, map_result_t *res)
{
	MAP_VEC(map_unused_t) un = {NULL, 0, 0};
	const hl7_delims_t *d = hl7_msg_delims(cv->m);
	size_t nsegs = hl7_msg_segment_count(cv->m);

	if (cv->used.n > 0)
		qsort(cv->used.v, cv->used.n, sizeof(uint64_t), map_cmp_u64);
	for (size_t i = 0; i < nsegs; i++) {
		const hl7_seg_t *s = hl7_msg_segment(cv->m, i);
		slice_t id = hl7_seg_id(s);
		bool msh = slice_eq_cstr(id, "MSH");
		unsigned seq = map_conv_seq(cv, i);

		for (size_t f = msh ? 3 : 1; f <= hl7_seg_field_count(s) && f < 4096; f++) {
			slice_t fv = hl7_seg_field(s, f);
			size_t nrep = hl7_split_count(fv, d->repetition);

			for (size_t r = 1; r <= nrep; r++) {
				slice_t rv = hl7_split_nth(fv, d->repetition, r);
				uint64_t key =
				    (uint64_t)i << 40 | (uint64_t)f << 28 | (r & 0xfffffff);
				uint64_t whole = (uint64_t)i << 40 | (uint64_t)f << 28;
				uint64_t all = whole | MAP_REP_ALL;
				bool used;

				if (rv.len == 0 || hl7_is_null(rv))
					continue;
				used = map_was_used(cv, key) || map_was_used(cv, all) ||
				       (nrep == 1 && map_was_used(cv, whole));
				if (!used) {
					map_unused_t *u = MAP_VEC_PUSH(un);

					memset(u, 0, sizeof(*u));
					memcpy(u->segment, id.ptr, id.len < 3 ? id.len : 3);
					u->seg_index = i;
					u->seg_seq = seq;
					u->field = (unsigned)f;
					u->rep = (unsigned)r;
				}
			}
		}
	}
	res->unused = arena_alloc(cv->a, (un.n ? un.n : 1) * sizeof(*un.v));
	if (un.n > 0)
		memcpy((void *)res->unused, un.v, un.n * sizeof(*un.v));
	res->nunused = un.n;
	free(un.v);
}

/* A Bundle entry's fullUrl: the base URL's Type/id, else the id as a urn:uuid. */
static fhir_node_t *
map_full_url(map_conv_t *cv, const map_inst_t *inst, buf_t *out)
{
	char tmp[160];

	if (cv->opt->base_url != NULL && cv->opt->base_url[0] != '\0') {
		size_t n = strlen(cv->opt->base_url);
		buf_t b = BUF_INIT;

		while (n > 0 && cv->opt->base_url[n - 1] == '/')
			n--;
		buf_reset(out);
		buf_append(out, cv->opt->base_url, n);
		buf_append_byte(out, '/');
		buf_append_slice(out, map_ref_text(inst, tmp, sizeof(tmp), &b));
		buf_free(&b);
		return fhir_string_new(cv->a, buf_slice(out));
	}
	/* the 32 hex digits of the id as a UUID: 8-4-4-4-12, written in place */
	memcpy(tmp, "urn:uuid:", 9);
	memcpy(tmp + 9, inst->id, 8);
	tmp[17] = '-';
	memcpy(tmp + 18, inst->id + 8, 4);
	tmp[22] = '-';
	memcpy(tmp + 23, inst->id + 12, 4);
	tmp[27] = '-';
	memcpy(tmp + 28, inst->id + 16, 4);
	tmp[32] = '-';
	memcpy(tmp + 33, inst->id + 20, 12);
	return fhir_string_new(cv->a, slice_make(tmp, 45));
}

/* Whether a deferred "= *" line will fill this element of inst. */
static bool
map_deferred_fills(const map_conv_t *cv, const map_inst_t *inst, const char *elem)
{
	for (size_t d = 0; d < cv->deferred.n; d++)
		if (map_inst_final(cv->deferred.v[d].inst) == inst &&
		    slice_eq_cstr(cv->deferred.v[d].line->steps[0].name, elem))
			return true;
	return false;
}

/* The elements of an R4 type that map_check_required checks (map_elem_is_checked), in
 * element order, kept per thread from conversion to conversion (the metadata is static): a
 * type has a few among dozens of elements. n is MAP_REQ_MAX + 1 for a type with more. */
#define MAP_REQ_SLOTS 64
#define MAP_REQ_MAX   8

typedef struct {
	const fhir_type_t *t; /* NULL: empty slot */
	uint16_t n;
	uint16_t e[MAP_REQ_MAX];
} map_req_slot_t;

static _Thread_local map_req_slot_t map_req_cache[MAP_REQ_SLOTS];

/* Element e of t is checked: a required one, or the first expansion of a required choice. */
static bool
map_elem_is_checked(const fhir_type_t *t, size_t e)
{
	const fhir_elem_t *el = &t->elems[e];

	if (el->flags & FHIR_ELEM_CHOICE_REQUIRED)
		return e == 0 || t->elems[e - 1].choice_base == NULL ||
		       strcmp(t->elems[e - 1].choice_base, el->choice_base) != 0;
	return (el->flags & FHIR_ELEM_REQUIRED) && !(el->flags & FHIR_ELEM_CHOICE);
}

/* Whether inst has the checked element e of t (or a line still to fill it): for a choice, any
 * of its expansions, which are adjacent in t. */
static bool
map_elem_present(const map_conv_t *cv, const map_inst_t *inst, const fhir_type_t *t, size_t e)
{
	size_t end =
	    t->elems[e].flags & FHIR_ELEM_CHOICE_REQUIRED ? fhir_meta_choice_end(t, e) : e + 1;

	for (size_t k = e; k < end; k++)
		if (fhir_object_get_cstr(inst->obj, t->elems[k].name) != NULL ||
		    map_deferred_fills(cv, inst, t->elems[k].name))
			return true;
	return false;
}

static const map_req_slot_t *
map_required_elems(const fhir_type_t *t)
{
	map_req_slot_t *s = &map_req_cache[((uintptr_t)t >> 4) % MAP_REQ_SLOTS];

	if (s->t != t) {
		s->t = t;
		s->n = 0;
		for (size_t e = 0; e < t->nelems && s->n <= MAP_REQ_MAX; e++)
			if (map_elem_is_checked(t, e)) {
				if (s->n < MAP_REQ_MAX)
					s->e[s->n] = (uint16_t)e;
				s->n++;
			}
	}
	return s;
}

/* An element R4 requires (min 1; a choice of min 1 by any of its types) that a resource
 * lacks: a warning, and a resource nothing points at is left out rather than sent invalid. */
static void
map_check_required(map_conv_t *cv, map_inst_t *inst)
{
	const fhir_type_t *t = inst->meta;
	const hl7_seg_t *s = hl7_msg_segment(cv->m, inst->seg_index);
	const map_req_slot_t *req =
	    t != NULL && t->nelems <= UINT16_MAX ? map_required_elems(t) : NULL;
	bool scan = req == NULL || req->n > MAP_REQ_MAX; /* every element */
	size_t n = t == NULL ? 0 : scan ? t->nelems : req->n;

	for (size_t k = 0; k < n; k++) {
		size_t e = scan ? k : req->e[k];
		const fhir_elem_t *el = &t->elems[e];
		bool choice = (el->flags & FHIR_ELEM_CHOICE_REQUIRED) != 0;
		char text[160];
		map_warning_t *w;

		if (!map_elem_is_checked(t, e) || map_elem_present(cv, inst, t, e))
			continue;
		if (!inst->referenced)
			inst->dropped = true;
		snprintf(text, sizeof(text), "%.*s%s: no %s%s, which FHIR requires",
			 (int)inst->type.len, inst->type.ptr, inst->dropped ? " left out" : "",
			 choice ? el->choice_base : el->name, choice ? "[x]" : "");
		w = MAP_VEC_PUSH(cv->warnings);
		memset(w, 0, sizeof(*w));
		w->text = arena_strndup(cv->a, text, strlen(text));
		if (s != NULL) {
			slice_t id = hl7_seg_id(s);

			memcpy(w->segment, id.ptr, id.len < 3 ? id.len : 3);
			w->seg_seq = map_conv_seq(cv, inst->seg_index);
		}
	}
}

static void
map_build_bundle(map_conv_t *cv, map_result_t *res)
{
	arena_t *a = cv->a;
	fhir_node_t *entries = fhir_array_new(a), *b;
	map_resource_t *rs = arena_alloc(a, (cv->insts.n ? cv->insts.n : 1) * sizeof(*rs));
	size_t n = 0;
	buf_t tmp = BUF_INIT;
	char url[160];

	map_ids_finish(cv);
	for (size_t i = 0; i < cv->refs.n; i++) {
		((map_inst_t *)map_inst_final(cv->refs.v[i].inst))->referenced = true;
		map_ref_fill(cv, cv->refs.v[i].node, cv->refs.v[i].inst);
	}
	for (size_t i = 0; i < cv->insts.n; i++) {
		map_inst_t *inst = cv->insts.v[i];

		if (inst->merged_into != NULL || inst->dropped)
			continue;
		map_member_set(a, inst->obj, inst->meta, map_keys[MAP_KEY_ID],
			       fhir_string_new(a, slice_cstr(inst->id)));
		/* equal objects in an array appear once; a resource is a tree: every node the
		 * converter makes goes in one place (a merged value's members go to where it merges
		 * and the value itself nowhere) */
		(void)fhir_node_dedupe_prune(inst->obj);
		map_check_required(cv, inst);
	}
	/* "= *": every other resource that stays */
	for (size_t d = 0; d < cv->deferred.n; d++) {
		map_inst_t *self = (map_inst_t *)map_inst_final(cv->deferred.v[d].inst);
		map_run_t run;

		if (self->dropped)
			continue;
		map_run_init(&run, cv);
		run.refs_distinct = true;
		for (size_t i = 0; i < cv->insts.n; i++) {
			map_inst_t *o = cv->insts.v[i];
			fhir_node_t *ref;

			if (o == self || o->merged_into != NULL || o->dropped)
				continue;
			ref = fhir_object_new(a);
			map_ref_fill(cv, ref, o);
			map_put_path(&run, cv->deferred.v[d].line, self, ref, "*");
		}
	}
	for (size_t i = 0; i < cv->insts.n; i++) {
		map_inst_t *inst = cv->insts.v[i];
		fhir_node_t *e, *req, *r;

		if (inst->merged_into != NULL || inst->dropped)
			continue;
		r = inst->obj;
		/* members went in in R4 order (map_member_add), unless canon_needed */
		if (cv->canon_needed)
			map_canon(a, r, inst->meta); /* r has its resourceType (map_inst_new) */
		inst->result_index = n;
		rs[n].type = inst->type;
		rs[n].id = slice_make(arena_strndup(a, inst->id, 32), 32);
		rs[n++].resource = r;
		/* new objects: their keys go in without a lookup, borrowed (static texts) */
		e = fhir_object_new(a);
		fhir_object_push(a, e, SLICE_LIT("fullUrl"), map_full_url(cv, inst, &tmp));
		fhir_object_push(a, e, SLICE_LIT("resource"), r);
		req = fhir_object_new(a);
		fhir_object_push(a, req, SLICE_LIT("method"), fhir_string_new(a, SLICE_LIT("PUT")));
		buf_reset(&tmp);
		fhir_object_push(a, req, SLICE_LIT("url"),
				 fhir_string_new(a, map_ref_text(inst, url, sizeof(url), &tmp)));
		fhir_object_push(a, e, SLICE_LIT("request"), req);
		fhir_array_append(a, entries, e);
	}
	buf_free(&tmp);
	b = cv->bundle.obj;
	(void)fhir_object_remove(b, SLICE_LIT("id"));
	(void)fhir_object_remove(b, SLICE_LIT("entry"));
	map_member_set(a, b, cv->bundle.meta, map_keys[MAP_KEY_TYPE],
		       fhir_string_new(a, SLICE_LIT("transaction")));
	(void)fhir_node_prune(b);
	if (cv->canon_needed)
		map_canon(a, b, cv->bundle.meta);
	map_member_set(a, b, cv->bundle.meta, map_keys[MAP_KEY_ENTRY], entries);
	res->bundle = b;
	res->resources = rs;
	res->nresources = n;
}

static void
map_collect(map_conv_t *cv, map_result_t *res)
{
	map_explain_t *x;
	size_t n = 0;

	res->warnings =
	    arena_alloc(cv->a, (cv->warnings.n ? cv->warnings.n : 1) * sizeof(map_warning_t));
	if (cv->warnings.n > 0)
		memcpy((void *)res->warnings, cv->warnings.v,
		       cv->warnings.n * sizeof(map_warning_t));
	res->nwarnings = cv->warnings.n;
	if (!cv->opt->explain)
		return;
	x = arena_alloc(cv->a, (cv->xrecs.n ? cv->xrecs.n : 1) * sizeof(*x));
	for (size_t i = 0; i < cv->xrecs.n; i++) {
		const map_xrec_t *r = &cv->xrecs.v[i];
		const map_inst_t *inst = r->inst;

		while (inst != NULL && inst->merged_into != NULL)
			inst = inst->merged_into;
		if (inst == NULL || inst == &cv->bundle || inst->dropped)
			continue;
		x[n].resource = inst->result_index;
		x[n].path = r->path;
		x[n].source = r->source;
		x[n].file = r->file;
		x[n++].line = r->line;
	}
	res->explain = x;
	res->nexplain = n;
	map_list_unused(cv, res);
}

/* Where the segment lines of the segment with this key begin in d->seg_lines. */
static size_t
map_seg_lines_first(const map_def_t *d, uint64_t key)
{
	size_t lo = 0, hi = d->nseg_lines;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (d->seg_lines[mid] >> 32 < key)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

int
map_convert(const map_set_t *set, const hl7_msg_t *m, const map_options_t *opt, arena_t *a,
	    map_result_t **out)
{
	static const map_options_t defaults = {false, false, 0, NULL};
	map_result_t *res = arena_zalloc(a, sizeof(*res));
	const hl7_header_t *h = hl7_msg_header(m);
	map_conv_t cv;
	bool code_known;
	int rc = 0;

	*out = res;
	res->map_name = "";
	memset(&cv, 0, sizeof(cv));
	cv.a = a;
	cv.set = set;
	cv.m = m;
	cv.opt = opt != NULL ? opt : &defaults;
	cv.follows_seg = SIZE_MAX;
	cv.msg = map_find_message(set, m, &code_known);
	if (cv.msg == NULL) {
		res->error.code =
		    code_known ? HL7_ERR_UNSUPPORTED_EVENT : HL7_ERR_UNSUPPORTED_MSG_TYPE;
		res->error.ack = 'R';
		memcpy(res->error.segment, "MSH", 4);
		res->error.seg_seq = 1;
		res->error.field = 9;
		res->error.line = 1;
		snprintf(res->error.text, sizeof(res->error.text), "no map for %.*s (%.*s^%.*s)",
			 (int)(h->structure.len > 20 ? 20 : h->structure.len), h->structure.ptr,
			 (int)(h->msg_code.len > 20 ? 20 : h->msg_code.len), h->msg_code.ptr,
			 (int)(h->trigger.len > 20 ? 20 : h->trigger.len), h->trigger.ptr);
		res->resources = arena_alloc(a, sizeof(map_resource_t));
		res->warnings = arena_alloc(a, sizeof(map_warning_t));
		return -FG_ENOTFOUND;
	}
	res->map_name = arena_strndup(a, cv.msg->name.ptr, cv.msg->name.len);
	cv.current = arena_zalloc(a, (cv.msg->nslots + 1) * sizeof(*cv.current));
	cv.seen = arena_zalloc(a, (cv.msg->ngroups + 1) * sizeof(*cv.seen));
	cv.bundle.type = SLICE_LIT("Bundle");
	cv.bundle.meta = fhir_meta_type(cv.bundle.type);
	cv.t_coding = fhir_meta_type(SLICE_LIT("Coding"));
	cv.t_reference = fhir_meta_type(SLICE_LIT("Reference"));
	cv.rank_system = map_rank(cv.t_coding, map_keys[MAP_KEY_SYSTEM]);
	cv.rank_code = map_rank(cv.t_coding, map_keys[MAP_KEY_CODE]);
	cv.rank_display = map_rank(cv.t_coding, map_keys[MAP_KEY_DISPLAY]);
	cv.rank_reference = map_rank(cv.t_reference, map_keys[MAP_KEY_REFERENCE]);
	cv.bundle.obj = fhir_object_new(a);
	cv.bundle.has_id = true;
	map_member_add(a, cv.bundle.obj, map_keys[MAP_KEY_RESOURCE_TYPE],
		       fhir_string_new(a, SLICE_LIT("Bundle")), 0);
	for (size_t i = 0; i < hl7_msg_segment_count(m) && !cv.too_many; i++) {
		const hl7_seg_t *s = hl7_msg_segment(m, i);
		slice_t id = hl7_seg_id(s);
		uint64_t key;

		map_groups_update(&cv, id);
		map_mark_ignored(&cv, cv.msg, i);
		if (id.len != 3)
			continue; /* no map's segment */
		key = map_seg_key(id.ptr);
		for (size_t k = map_seg_lines_first(cv.msg, key);
		     k < cv.msg->nseg_lines && cv.msg->seg_lines[k] >> 32 == key && !cv.too_many;
		     k++)
			map_apply_segment_line(&cv, (size_t)(cv.msg->seg_lines[k] & 0xffffffffu), s,
					       i);
	}
	if (cv.too_many) {
		res->error.code = HL7_ERR_INTERNAL;
		res->error.ack = 'E';
		snprintf(res->error.text, sizeof(res->error.text),
			 "message makes more than %d resources", MAP_MAX_RESOURCES);
		rc = -FG_ETOOBIG;
	} else {
		map_build_bundle(&cv, res);
	}
	map_collect(&cv, res);
	if (rc != 0)
		res->bundle = NULL;
	free(cv.insts.v);
	free(cv.xrecs.v);
	free(cv.warnings.v);
	free(cv.used.v);
	free(cv.deferred.v);
	free(cv.refs.v);
	buf_free(&cv.text);
	buf_free(&cv.part);
	buf_free(&cv.cat);
	buf_free(&cv.vcode);
	buf_free(&cv.vsys);
	buf_free(&cv.num);
	buf_free(&cv.opd[0]);
	buf_free(&cv.opd[1]);
	return rc;
}
