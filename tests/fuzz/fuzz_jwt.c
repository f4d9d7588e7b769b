/* libFuzzer target for the JWT parser (gateway/jwt.c): compact JWS splitting, base64url and the
 * JSON header and payload. Checks that base64url decoding and encoding round-trip, and that a
 * parsed token's claims can be read and verified against a fixed key without a crash (no
 * signature made by the fuzzer can verify). */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/jwt.h"
#include "lib/arena.h"
#include "lib/buf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static EVP_PKEY *fuzz_key;

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	arena_t *a = arena_new(0);
	slice_t in = slice_make((const char *)data, size);
	buf_t dec = BUF_INIT, enc = BUF_INIT;
	const char *why = NULL;
	jwt_t j;
	int64_t t;

	if (fuzz_key == NULL)
		fuzz_key = jwt_key_generate();
	/* Whatever decodes must encode back to the same text (one encoding per byte string). */
	if (b64url_decode(&dec, in) == 0) {
		b64url_encode(&enc, dec.data, dec.len);
		if (enc.len != size || (size > 0 && memcmp(enc.data, data, size) != 0))
			abort();
	}
	if (jwt_parse(a, in, &j, &why) == 0) {
		if (j.alg == JWT_ALG_NONE || j.signing_input.len >= size)
			abort();
		(void)jwt_claim_str(&j, "iss");
		(void)jwt_claim_time(&j, "exp", &t);
		if (jwt_verify(&j, fuzz_key, &why) == 0)
			abort();
	} else if (why == NULL) {
		abort();
	}
	buf_free(&dec);
	buf_free(&enc);
	arena_free(a);
	return 0;
}
