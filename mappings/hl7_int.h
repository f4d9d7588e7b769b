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

#endif
