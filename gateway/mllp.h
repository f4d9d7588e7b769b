/* MLLP framing (<VT> message <FS><CR>) as a pure byte-level state machine, so the same code
 * serves the server, `fhirgate send` and the fuzz target. */
#ifndef GATEWAY_MLLP_H
#define GATEWAY_MLLP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/buf.h"

#define MLLP_SB 0x0b
#define MLLP_EB 0x1c
#define MLLP_CR 0x0d

/* How much of an oversized frame is kept (to mirror its MSH in the ACK and for the dead letter). */
#define MLLP_OVERSIZE_KEEP 4096

typedef struct {
	enum { MLLP_WAIT_START, MLLP_IN_FRAME, MLLP_AFTER_END, MLLP_DISCARD } state;
	buf_t frame;      /* the frame being read (owned) */
	size_t max;       /* largest frame content accepted */
	size_t seen;      /* bytes of the current frame, including discarded ones */
	uint64_t garbage; /* bytes outside any frame, discarded (counter) */
	uint64_t aborted; /* frames cut off by a new start block (counter) */
} mllp_framer_t;

/* Called once per complete frame: data/len borrowed until the callback returns. oversize is set
 * when the frame exceeded max: data then holds its first MLLP_OVERSIZE_KEEP bytes and len_total
 * the full size. Return non-zero to stop feeding (the rest of the input stays unconsumed). */
typedef int (*mllp_frame_cb)(void *ctx, const char *data, size_t len, bool oversize,
			     size_t len_total);

void mllp_framer_init(mllp_framer_t *f, size_t max);
void mllp_framer_free(mllp_framer_t *f);
/* True between a start block and the end of its frame. */
bool mllp_framer_is_mid_frame(const mllp_framer_t *f);
/* Feeds n bytes; returns how many were consumed (all of them unless a callback stopped it). */
size_t mllp_framer_feed(mllp_framer_t *f, const char *p, size_t n, mllp_frame_cb cb, void *ctx);
/* Appends an MLLP frame around msg to out. */
int mllp_frame_append(buf_t *out, const char *msg, size_t len);

#endif
