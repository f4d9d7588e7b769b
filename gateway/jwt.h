/* JSON Web Tokens for SMART Backend Services: base64url, JWS compact parsing, RS384/ES384
 * signatures (OpenSSL libcrypto; ES384 as raw r||s on the wire) and JWK public key import. */
#ifndef GATEWAY_JWT_H
#define GATEWAY_JWT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "fhir/tree.h"
#include "lib/arena.h"
#include "lib/buf.h"
#include "lib/slice.h"

#define JWT_MAX_BYTES 16384 /* a token (assertion or access token) longer than this is refused */

typedef enum { JWT_ALG_NONE = 0, JWT_ALG_RS384, JWT_ALG_ES384 } jwt_alg_t;

/* A parsed (not yet verified) JWS. Everything is borrowed from the arena given to jwt_parse. */
typedef struct {
	jwt_alg_t alg;
	slice_t kid;           /* ptr NULL when the header has none */
	fhir_node_t *header;   /* JSON object */
	fhir_node_t *claims;   /* JSON object */
	slice_t signing_input; /* "header.payload" as received */
	slice_t sig;           /* decoded signature bytes */
} jwt_t;

/* Appends the unpadded base64url form of len bytes. */
void b64url_encode(buf_t *out, const void *data, size_t len);
/* Decodes unpadded base64url into out (appended); -FG_EINVAL on a character outside the
 * alphabet, padding, a length that is 1 mod 4, or non-zero trailing bits. */
int b64url_decode(buf_t *out, slice_t in);

/* The algorithm named by a JWS "alg" value; JWT_ALG_NONE for anything else (none, HS256, ...). */
jwt_alg_t jwt_alg_from_name(slice_t name);
const char *jwt_alg_name(jwt_alg_t alg);
/* The algorithm a key signs with: RS384 for RSA keys of 2048 bits or more, ES384 for EC P-384
 * keys; JWT_ALG_NONE for any other key. */
jwt_alg_t jwt_alg_of_key(EVP_PKEY *key);

/* Splits and decodes a compact JWS: three base64url parts, a JSON object header whose alg is
 * RS384 or ES384 (no "crit"), a JSON object payload. Returns 0, or -FG_EINVAL / -FG_ETOOBIG with
 * *why a static text. Does not verify the signature. */
int jwt_parse(arena_t *a, slice_t token, jwt_t *out, const char **why);
/* Verifies the signature with key, whose type must match the token's alg (an RSA key never
 * checks an ES384 token and the reverse). 0 or -FG_EINVAL with *why. */
int jwt_verify(const jwt_t *jwt, EVP_PKEY *key, const char **why);
/* Signs: header {"alg","typ":"JWT","kid"?} and the given claims JSON object text, appended to
 * out as a compact JWS. The key must be a private key of jwt_alg_of_key() != NONE. */
int jwt_sign(EVP_PKEY *key, const char *kid, slice_t claims_json, buf_t *out);

/* A string claim (ptr NULL when absent or not a string). */
slice_t jwt_claim_str(const jwt_t *jwt, const char *name);
/* A NumericDate claim in whole seconds; false when absent or not a number. */
bool jwt_claim_time(const jwt_t *jwt, const char *name, int64_t *out);

/* Imports a public JWK (kty RSA with n, e; or kty EC, crv P-384, x, y) into a key the caller
 * owns (EVP_PKEY_free). RSA keys under 2048 bits are refused. 0 or -FG_EINVAL with *why. */
int jwk_import(const fhir_node_t *jwk, EVP_PKEY **out, const char **why);

/* Reads a PEM private key (RSA >= 2048 bits or EC P-384) from path; caller owns. */
int jwt_key_load(const char *path, EVP_PKEY **out, const char **why);
/* A new EC P-384 key pair; caller owns. */
EVP_PKEY *jwt_key_generate(void);

#endif
