/* Internals of the mapping engine, shared by its parser (map_parse.c), loader and checker
 * (map_load.c), condition evaluator and value access (map_cond.c), dates (map_dtm.c) and converter
 * (map_engine.c). Everything a loaded set holds lives in the set's arena. */
#ifndef MAPPINGS_MAP_INT_H
#define MAPPINGS_MAP_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fhir/meta.h"
#include "fhir/tree.h"
#include "fhir/tree_int.h"
#include "lib/arena.h"
#include "lib/buf.h"
#include "mappings/hl7.h"
#include "mappings/hl7_int.h"
#include "mappings/map.h"

typedef enum { MAP_MESSAGE, MAP_SEGMENT, MAP_DATATYPE, MAP_VOCAB } map_kind_t;

/* A v2 value: SEG-f[r].c.s (seg set) or, in datatype maps, .c.s relative to the value the map
 * is applied to. A bare "PID" (field 0) in a condition asks whether the segment is there. */
typedef struct {
	char seg[4]; /* "" when relative */
	uint16_t field;
	uint16_t rep; /* an explicit [r]; 0: the repetition in context, else the first */
	uint16_t comp, sub;
} map_ref_t;

typedef enum { MAP_OPD_REF, MAP_OPD_STRING, MAP_OPD_NUMBER, MAP_OPD_BOOL } map_opd_kind_t;
typedef enum { MAP_FN_NONE, MAP_FN_COUNT, MAP_FN_LENGTH } map_fn_t;

typedef struct {
	map_opd_kind_t kind;
	map_fn_t fn; /* LST.COUNT or LENGTH of a ref */
	map_ref_t ref;
	slice_t text; /* string (unescaped), number or "true"/"false" */
	unsigned col;
} map_operand_t;

typedef enum { MAP_C_AND, MAP_C_OR, MAP_C_NOT, MAP_C_VALUED, MAP_C_IN, MAP_C_CMP } map_cond_kind_t;
typedef enum { MAP_CMP_EQ, MAP_CMP_NE, MAP_CMP_LT, MAP_CMP_LE, MAP_CMP_GT, MAP_CMP_GE } map_cmp_t;

typedef struct map_cond {
	map_cond_kind_t kind;
	map_cmp_t op;
	map_operand_t a, b;  /* VALUED: a; CMP: a op b; IN: a */
	map_operand_t *list; /* IN */
	size_t nlist;
	struct map_cond *l, *r; /* AND, OR: both; NOT: l */
} map_cond_t;

/* What a line takes its value from. */
typedef enum {
	MAP_SRC_NONE,
	MAP_SRC_VALUE,   /* one or more parts joined with "+" (a ref, or refs and strings) */
	MAP_SRC_JOIN,    /* join("sep", parts...): the valued parts, separated */
	MAP_SRC_CONST,   /* = "text", number, true, false */
	MAP_SRC_HASH,    /* id <- hash(refs...) */
	MAP_SRC_SEGMENT, /* message maps: Slot <- SEG */
	MAP_SRC_SLOT,    /* message maps: path = Slot[n] (a reference) */
	MAP_SRC_ALL,     /* message maps: path = * (a reference to every other resource) */
} map_src_kind_t;

typedef struct {
	map_src_kind_t kind;
	map_operand_t *parts;
	size_t nparts;
	/* VALUE and JOIN: the parts form concatenations ("+"); cuts[i] is where the i-th starts */
	size_t *cuts;
	size_t ncuts;
	slice_t sep; /* join */
	int slot;    /* MAP_SRC_SLOT */
	char seg[4]; /* MAP_SRC_SEGMENT */
} map_src_t;

/* One step of a target path, resolved against the R4 metadata when the set is checked. */
typedef struct {
	slice_t name;
	uint16_t index; /* [n]; 0 when none */
	unsigned col;
	const fhir_elem_t *elem;
	/* where the member goes in its object, in R4 element order (map_engine.c, map_rank):
	 * 2 * the element's position + 2, its "_name" companion one more */
	uint32_t rank;
	slice_t key;             /* name, interned in the set (map_set_key) */
	slice_t ext_key;         /* primitive: "_name", interned */
	const fhir_type_t *type; /* the element's type; NULL for ResourceList */
	bool array;
	bool primitive;
	bool under_primitive; /* id/extension of the primitive before it: JSON "_name" */
} map_step_t;

struct map_def;

/* Conversions that need no file: DTM[date], NM[decimal], ID[boolean], ... */
typedef enum {
	MAP_BI_NONE,
	MAP_BI_DATE,
	MAP_BI_DATETIME,
	MAP_BI_INSTANT,
	MAP_BI_TIME,
	MAP_BI_DECIMAL,
	MAP_BI_INTEGER,
	MAP_BI_POSITIVE,
	MAP_BI_UNSIGNED,
	MAP_BI_BOOLEAN,
	MAP_BI_STRING,
	MAP_BI_BASE64, /* text as base64Binary (an attachment's data) */
} map_builtin_t;

typedef struct map_line {
	const char *file; /* the file the line is in (an extension's lines join another map) */
	unsigned lineno, col;
	/* target */
	int slot;          /* message maps: the slot the target starts from; -1 none */
	map_step_t *steps; /* after the slot in message maps */
	size_t nsteps;
	bool to_value; /* "$value" in a datatype map of a primitive type */
	bool is_id;    /* "id <- hash(...)" */
	map_src_t src;
	/* as / via */
	slice_t as_name;
	unsigned as_col;
	const struct map_def *as_def;
	map_builtin_t as_builtin;
	slice_t via_name;
	unsigned via_col;
	const struct map_def *via_def;
	map_cond_t *cond;
	/* message maps */
	char (*follows)[4];
	size_t nfollows;
	int group;    /* innermost group holding the line; -1 none */
	bool is_ref;  /* a reference (or constant) line attached to the segment line above */
	size_t owner; /* is_ref: index of that segment line */
	/* segment and datatype maps: index of the line's group (lines building one element) */
	size_t elem_group;
} map_line_t;

/* Lines of a segment or datatype map that build one element, keyed by the target path up to
 * and including its first [n] (or the whole path when there is none). */
typedef struct {
	size_t *lines;
	size_t nlines;
	size_t key_steps; /* steps in the key */
	bool indexed;     /* the key ends with [n] */
	bool has_driver;  /* a repeating source drives one element per repetition */
	map_ref_t driver;
	bool repeats;    /* the key's last step is an array */
	bool has_source; /* some line takes a field: constants wait for one to give a value */
	/* the group gives nothing and marks nothing unless one of these is valued: in a datatype
	 * map a part of its value at the next level (bit n - 1: part n), in a segment map a field
	 * of its segment (bit n - 1: field n); the converter skips it when none is
	 * (map_group_needs); 0: it always runs */
	uint64_t needs;
} map_egroup_t;

/* A message map slot: "Patient[1]", a resource instance the message's segments build. */
typedef struct {
	slice_t type; /* "Patient", or "Bundle" for the Bundle itself */
	uint16_t index;
	const fhir_type_t *meta;
	char creator[4]; /* the segment whose lines make new instances */
	size_t create_line;
	bool is_bundle;
} map_slot_t;

/* A message map group ("group ORDER_OBSERVATION [ORC] OBR"): it begins again when one of its
 * opening segments comes back, and then forgets the instances its lines made. */
typedef struct {
	slice_t name;
	char (*opens)[4];
	size_t nopens;
	int parent;
	size_t first, last; /* its lines: [first, last) */
	unsigned lineno;
} map_group_t;

typedef struct {
	slice_t code, system;             /* v2 side; system may be empty (any) */
	slice_t fcode, fdisplay, fsystem; /* FHIR side */
	unsigned lineno;
} map_vrow_t;

/* A vocabulary row by its v2 code: rows sorted by code, then by position in the file. */
typedef struct {
	slice_t code;
	uint32_t row;
} map_vkey_t;

typedef struct map_def {
	map_kind_t kind;
	const char *path; /* as shown in diagnostics */
	const char *rel;  /* relative path: "segments/PID-Patient.map" */
	slice_t name;     /* "PID[Patient]", "ADT_A01", "AdministrativeSex" */
	char v2[8];       /* "PID", "CX" (segment and datatype maps) */
	slice_t fhir;     /* "Patient", "Identifier", "uri" */
	const fhir_type_t *type;
	bool is_resource;
	bool site;
	map_line_t *lines;
	size_t nlines;
	map_egroup_t *egroups;
	size_t negroups;
	/* message maps */
	slice_t *names; /* the file name and the names of "applies to" */
	size_t nnames;
	map_slot_t *slots;
	size_t nslots;
	map_group_t *groups;
	size_t ngroups;
	slice_t extends; /* "extends ADT_A01": lines added to that message map */
	/* its segment lines ("Slot <- SEG as ...") by segment, in line order: the segment id's
	 * three bytes as a number (map_seg_key) << 32 | the line's index, sorted */
	uint64_t *seg_lines;
	size_t nseg_lines;
	/* "ignore SEG-n, SEG": fields (or whole segments) left out on purpose */
	map_ref_t *ignores;
	size_t nignores;
	/* vocabularies */
	map_vrow_t *rows;
	size_t nrows;
	map_vkey_t *vkeys;      /* nrows of them */
	bool checked, checking; /* cycle detection among datatype maps */
} map_def_t;

struct map_set {
	arena_t *arena;
	map_def_t **defs;
	size_t ndefs;
	/* the message maps among defs, in the same order (map_find_message looks at these) */
	const map_def_t **msgs;
	size_t nmsgs;
	uint64_t version;
	/* member keys of the trees conversions build, each text once (map_set_key) */
	slice_t *keys;
	size_t keys_cap, nkeys;
};

/* The keys the converter adds members under itself; map_set_key gives these very slices for
 * their texts, so that every key of a conversion's objects is interned (compared by address:
 * fhir_object_get_interned). */
enum {
	MAP_KEY_RESOURCE_TYPE,
	MAP_KEY_ID,
	MAP_KEY_TYPE,
	MAP_KEY_ENTRY,
	MAP_KEY_REFERENCE,
	MAP_KEY_CODING,
	MAP_KEY_SYSTEM,
	MAP_KEY_CODE,
	MAP_KEY_DISPLAY,
	MAP_KEY_COUNT
};
extern const slice_t map_keys[MAP_KEY_COUNT];

/* Diagnostics while loading: a sticky count of errors. */
typedef struct {
	map_diag_fn fn;
	void *arg;
	size_t errors, warnings;
} map_diags_t;

void map_diag(map_diags_t *dg, map_diag_level_t level, const char *file, unsigned line,
	      unsigned col, const char *hint, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));

/* map_parse.c: one file into a definition (kind from its folder, name from its file name);
 * NULL when the file has errors (reported). */
map_def_t *map_def_parse(arena_t *a, const map_file_t *f, map_diags_t *dg);
/* The kind and name a relative path gives; false when the path is no mapping file. */
bool map_path_kind(const char *rel, map_kind_t *kind);
/* Parses a condition from text (tests, and "if" clauses); NULL on error with *err set. */
map_cond_t *map_cond_parse_text(arena_t *a, const char *text, char *err, size_t cap);
map_builtin_t map_builtin_lookup(slice_t name);

/* A segment id's three bytes as a number (ids of another length are never a map's). */
static inline uint64_t
map_seg_key(const char *id)
{
	return (uint64_t)(unsigned char)id[0] << 16 | (uint64_t)(unsigned char)id[1] << 8 |
	       (unsigned char)id[2];
}

/* map_load.c */
/* The interned copy of key in set (made when missing; one of map_keys for their texts):
 * borrowed, valid until the set is freed. */
slice_t map_set_key(map_set_t *set, slice_t key);
const map_def_t *map_set_find(const map_set_t *set, map_kind_t kind, slice_t name);
/* Maximum field number of a standard segment; 0 when the segment is unknown (Z-segments). */
unsigned map_segment_fields(slice_t seg);

/* The converter's evaluation context (map_engine.c), seen by map_cond.c. */
typedef struct map_conv map_conv_t;

typedef struct map_frame {
	map_conv_t *cv;
	/* the conversion's message and its delimiters, at hand for every read */
	const hl7_msg_t *m;
	const hl7_delims_t *delims;
	const map_def_t *def;
	const hl7_seg_t *seg; /* the segment the map runs for */
	uint64_t seg_key;     /* map_seg_key of seg's id (a valid one: 3 bytes), when seg is set */
	size_t seg_index;
	slice_t value; /* datatype maps: the value they were applied to */
	int level;     /* of value: 1 repetition, 2 component, 3 subcomponent */
	/* value split once at its next level (components of a repetition, subcomponents of a
	 * component), so that each line does not split it again; NULL: not split (more parts
	 * than MAP_PARTS_MAX, or a frame made on the fly), split on demand */
	const slice_t *parts;
	size_t nparts;
	/* repetition context of the element group being built */
	const hl7_seg_t *ctx_seg;
	uint16_t ctx_field, ctx_rep;
	size_t value_seg; /* datatype maps: where value came from (fallback ids, warnings) */
	unsigned field, rep;
	struct map_inst *inst; /* the resource a segment map builds (id lines) */
	const struct map_frame *parent;
} map_frame_t;

/* Parts of a datatype map's value kept split (map_frame_t.parts). */
#define MAP_PARTS_MAX 32

/* map_cond.c: the raw value a ref names in a frame (escapes intact); empty when absent or
 * the HL7 null (""). whole: a field ref without [r] outside its group gives the whole field. */
slice_t map_ref_raw_any(const map_frame_t *fr, const map_ref_t *ref, bool whole, size_t *seg_index,
			unsigned *rep);

/* map_ref_raw_any, with the most frequent read, a part of a datatype map's value split
 * already, done here without a call. */
static inline slice_t
map_ref_raw(const map_frame_t *fr, const map_ref_t *ref, bool whole, size_t *seg_index,
	    unsigned *rep)
{
	slice_t v;

	if (ref->seg[0] != '\0' || ref->sub != 0 || ref->comp == 0 || fr->parts == NULL)
		return map_ref_raw_any(fr, ref, whole, seg_index, rep);
	*seg_index = fr->seg_index;
	*rep = fr->rep;
	v = ref->comp <= fr->nparts ? fr->parts[ref->comp - 1] : SLICE_NULL;
	return v.len == 2 && v.ptr[0] == '"' && v.ptr[1] == '"' ? SLICE_NULL : v; /* "" */
}
/* Splits value at delim into parts (room for MAP_PARTS_MAX); *nparts is SIZE_MAX when there
 * are more. */
void map_value_split(slice_t value, char delim, slice_t *parts, size_t *nparts);
/* Repetitions of the field a ref names (LST.COUNT). */
size_t map_ref_count(const map_frame_t *fr, const map_ref_t *ref);
/* Decoded, trimmed UTF-8 text of a raw value: raw itself, trimmed, when decoding would leave
 * it as it is (most values), else decoded into scratch. Borrowed: valid until scratch is
 * used again (and as long as the message). */
slice_t map_text(const map_frame_t *fr, slice_t raw, buf_t *scratch);
/* Marks a field repetition as used (explain); MAP_REP_ALL: every repetition. */
#define MAP_REP_ALL 0xfffffffu
void map_mark_used(map_conv_t *cv, size_t seg_index, unsigned field, unsigned rep);
/* The segment of this id nearest to pos: at or before it, else (with after) the first after
 * it; SIZE_MAX when there is none. */
size_t map_conv_find(map_conv_t *cv, slice_t id, size_t pos, bool after);

/* One of the conversion's two scratch buffers for condition operands (which: 0 or 1);
 * borrowed, valid until the conversion ends. */
buf_t *map_conv_scratch(map_conv_t *cv, unsigned which);
/* Appends the decimal digits of v at p (no NUL, at most 20 bytes); returns the end. */
char *map_put_u64(char *p, uint64_t v);

/* map_cond.c */
bool map_cond_eval(const map_cond_t *c, const map_frame_t *fr);

#endif
