/* MLLP framing state machine. */
#include "config.h"

#include "gateway/mllp.h"

#include <string.h>

void
mllp_framer_init(mllp_framer_t *f, size_t max)
{
	memset(f, 0, sizeof(*f));
	f->state = MLLP_WAIT_START;
	f->max = max;
	buf_init(&f->frame, 0);
}

void
mllp_framer_free(mllp_framer_t *f)
{
	buf_free(&f->frame);
}

bool
mllp_framer_is_mid_frame(const mllp_framer_t *f)
{
	return f->state != MLLP_WAIT_START;
}

static void
frame_start(mllp_framer_t *f)
{
	buf_reset(&f->frame);
	f->seen = 0;
	f->state = MLLP_IN_FRAME;
}

size_t
mllp_framer_feed(mllp_framer_t *f, const char *p, size_t n, mllp_frame_cb cb, void *ctx)
{
	size_t i = 0;

	while (i < n) {
		const char *end;
		size_t chunk;
		int stop;

		switch (f->state) {
		case MLLP_WAIT_START:
			if (p[i] == MLLP_SB)
				frame_start(f);
			else
				f->garbage++;
			i++;
			break;
		case MLLP_AFTER_END:
			/* <FS> must be followed by <CR>; tolerate senders that omit it. */
			f->state = MLLP_WAIT_START;
			if (p[i] == MLLP_CR)
				i++;
			break;
		case MLLP_IN_FRAME:
		case MLLP_DISCARD:
			end = memchr(p + i, MLLP_EB, n - i);
			chunk = (end ? (size_t)(end - p) : n) - i;
			{
				/* A start block inside a frame: the sender gave up on the last one.
				 */
				const char *sb = memchr(p + i, MLLP_SB, chunk);

				if (sb != NULL) {
					f->aborted++;
					f->garbage += f->seen + (size_t)(sb - (p + i));
					i = (size_t)(sb - p) + 1;
					frame_start(f);
					break;
				}
			}
			f->seen += chunk;
			if (f->state == MLLP_IN_FRAME && f->seen > f->max) {
				size_t room = f->frame.len < MLLP_OVERSIZE_KEEP
						  ? MLLP_OVERSIZE_KEEP - f->frame.len
						  : 0;

				buf_append(&f->frame, p + i, chunk < room ? chunk : room);
				if (f->frame.len > MLLP_OVERSIZE_KEEP)
					f->frame.len = MLLP_OVERSIZE_KEEP;
				f->state = MLLP_DISCARD;
			} else if (f->state == MLLP_IN_FRAME) {
				buf_append(&f->frame, p + i, chunk);
			}
			i += chunk;
			if (end == NULL)
				break;
			i++; /* the end block */
			stop = cb(ctx, f->frame.data ? f->frame.data : "", f->frame.len,
				  f->state == MLLP_DISCARD, f->seen);
			buf_reset(&f->frame);
			f->seen = 0;
			f->state = MLLP_AFTER_END;
			if (stop)
				return i;
			break;
		}
	}
	return i;
}

int
mllp_frame_append(buf_t *out, const char *msg, size_t len)
{
	int rc = buf_append_byte(out, MLLP_SB);

	if (rc == 0)
		rc = buf_append(out, msg, len);
	if (rc == 0)
		rc = buf_append_byte(out, MLLP_EB);
	if (rc == 0)
		rc = buf_append_byte(out, MLLP_CR);
	return rc;
}
