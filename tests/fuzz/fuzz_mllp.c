/* Fuzz target: MLLP framing. The input is cut into reads at positions taken from its first
 * bytes, fed to a framer with a small maximum, and every frame is checked against the rules. */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/mllp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int
check_frame(void *ctx, const char *p, size_t len, bool oversize, size_t total)
{
	size_t *frames = ctx;

	/* A frame never contains a start or end block, and is never longer than kept. */
	if (memchr(p, MLLP_SB, len) != NULL || memchr(p, MLLP_EB, len) != NULL)
		abort();
	if (oversize ? len > MLLP_OVERSIZE_KEEP || total <= 64 : len != total || len > 64)
		abort();
	(*frames)++;
	/* Stop now and then, as the server does when a connection's pipeline is full. */
	return (*frames % 3) == 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	mllp_framer_t f;
	size_t frames = 0, pos, step;

	if (size < 1)
		return 0;
	step = (size_t)(data[0] % 17) + 1;
	data++;
	size--;
	mllp_framer_init(&f, 64);
	for (pos = 0; pos < size;) {
		size_t n = size - pos < step ? size - pos : step;
		size_t used =
		    mllp_framer_feed(&f, (const char *)data + pos, n, check_frame, &frames);

		if (used > n)
			abort();
		pos += used;
	}
	mllp_framer_free(&f);
	return 0;
}
