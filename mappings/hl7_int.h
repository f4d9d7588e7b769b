/* The layout of a parsed HL7 message and its small accessors inline, for the readers that
 * cannot afford a call per value (hl7.c itself, the converter: mappings/map_int.h); everyone
 * else goes through hl7.h. Read only. */
#ifndef MAPPINGS_HL7_INT_H
#define MAPPINGS_HL7_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/slice.h"
#include "mappings/hl7.h"

struct hl7_seg {
	const char *ptr; /* first byte of the segment id */
	uint32_t *off;   /* chunk i (0 is the id) spans [off[i], off[i + 1] - 1) from ptr */
	size_t nchunks;  /* trailing empty chunks not counted */
	bool is_msh;
	/* no field has a repetition separator (the message's): a field is its one repetition,
	 * which hl7_seg_get then need not look for; false when not known */
	bool no_reps;
};

struct hl7_msg {
	const char *input; /* what hl7_parse was given: error offsets count from here */
	slice_t bytes;
	hl7_delims_t delims;
	hl7_charset_t charset;
	bool charset_known;
	hl7_header_t hdr;
	hl7_seg_t *segs;
	size_t nsegs, cap;
};

/* Chunk i of a segment: 0 is its id, then its fields (MSH: from MSH-2). */
static inline slice_t
hl7_chunk(const hl7_seg_t *s, size_t i)
{
	return slice_make(s->ptr + s->off[i], s->off[i + 1] - s->off[i] - 1);
}

static const hl7_delims_t hl7_delims_std = {'|', '^', '~', '\\', '&', 0};

/* hl7_seg_field, inline (hl7_seg_get runs for every value a conversion reads). */
static inline slice_t
hl7_field_at(const hl7_seg_t *s, size_t n)
{
	if (s == NULL || n == 0)
		return SLICE_NULL;
	if (s->is_msh) {
		if (n == 1)
			return slice_make(s->ptr + 3, 1);
		n--;
	}
	return n < s->nchunks ? hl7_chunk(s, n) : SLICE_NULL;
}

static inline slice_t
hl7_seg_get_inl(const hl7_msg_t *m, const hl7_seg_t *s, size_t field, size_t rep, size_t comp,
		size_t sub)
{
	const hl7_delims_t *d = m != NULL ? &m->delims : &hl7_delims_std;
	slice_t v = hl7_field_at(s, field);

	if (s != NULL && s->is_msh && field <= 2)
		return rep <= 1 && comp <= 1 && sub <= 1 ? v : SLICE_NULL;
	if (rep == 0 && (comp != 0 || sub != 0))
		rep = 1;
	if (comp == 0 && sub != 0)
		comp = 1;
	if (rep != 0 && m != NULL && s != NULL && s->no_reps)
		v = rep == 1 && v.len > 0 ? v : SLICE_NULL; /* what hl7_split_nth would give */
	else if (rep != 0)
		v = hl7_split_nth(v, d->repetition, rep);
	if (comp != 0)
		v = hl7_split_nth(v, d->component, comp);
	if (sub != 0)
		v = hl7_split_nth(v, d->subcomponent, sub);
	return v;
}

/* The accessors of hl7.h, inline: a file that includes this header calls these under the
 * public names (the macros below); hl7.c defines the public functions with them. */
static inline const hl7_header_t *
hl7_msg_header_inl(const hl7_msg_t *m)
{
	return &m->hdr;
}

static inline const hl7_delims_t *
hl7_msg_delims_inl(const hl7_msg_t *m)
{
	return &m->delims;
}

static inline size_t
hl7_msg_segment_count_inl(const hl7_msg_t *m)
{
	return m->nsegs;
}

static inline const hl7_seg_t *
hl7_msg_segment_inl(const hl7_msg_t *m, size_t index)
{
	return index < m->nsegs ? &m->segs[index] : NULL;
}

static inline slice_t
hl7_seg_id_inl(const hl7_seg_t *s)
{
	return hl7_chunk(s, 0);
}

static inline bool
hl7_seg_may_repeat_inl(const hl7_seg_t *s)
{
	return !s->no_reps;
}

static inline size_t
hl7_seg_field_count_inl(const hl7_seg_t *s)
{
	return s->is_msh ? s->nchunks : s->nchunks - 1;
}

#define hl7_msg_header(m)        hl7_msg_header_inl(m)
#define hl7_msg_delims(m)        hl7_msg_delims_inl(m)
#define hl7_msg_segment_count(m) hl7_msg_segment_count_inl(m)
#define hl7_msg_segment(m, i)    hl7_msg_segment_inl((m), (i))
#define hl7_seg_id(s)            hl7_seg_id_inl(s)
#define hl7_seg_may_repeat(s)    hl7_seg_may_repeat_inl(s)
#define hl7_seg_field_count(s)   hl7_seg_field_count_inl(s)
#define hl7_seg_get(m, s, field, rep, comp, sub) \
	hl7_seg_get_inl((m), (s), (field), (rep), (comp), (sub))

#endif
