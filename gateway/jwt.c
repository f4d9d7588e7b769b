/* JWS compact tokens with RS384 and ES384 over OpenSSL libcrypto, base64url, and JWK import.
 * Only the two algorithms SMART Backend Services names are accepted: "none", HMAC and anything
 * else never reach a verifier, and a key only verifies tokens of its own algorithm. */
#include "config.h"

#include "gateway/jwt.h"

#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>

#include "fhir/json.h"
#include "lib/err.h"

#define ES384_COORD 48 /* bytes of a P-384 coordinate, and of r and s */

static const char b64url_chars[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

void
b64url_encode(buf_t *out, const void *data, size_t len)
{
	const unsigned char *p = data;
	size_t i;

	for (i = 0; i + 3 <= len; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];

		buf_append_byte(out, b64url_chars[v >> 18]);
		buf_append_byte(out, b64url_chars[(v >> 12) & 63]);
		buf_append_byte(out, b64url_chars[(v >> 6) & 63]);
		buf_append_byte(out, b64url_chars[v & 63]);
	}
	if (len - i == 1) {
		uint32_t v = (uint32_t)p[i] << 16;

		buf_append_byte(out, b64url_chars[v >> 18]);
		buf_append_byte(out, b64url_chars[(v >> 12) & 63]);
	} else if (len - i == 2) {
		uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;

		buf_append_byte(out, b64url_chars[v >> 18]);
		buf_append_byte(out, b64url_chars[(v >> 12) & 63]);
		buf_append_byte(out, b64url_chars[(v >> 6) & 63]);
	}
}

static int
b64url_val(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '-')
		return 62;
	if (c == '_')
		return 63;
	return -1;
}

int
b64url_decode(buf_t *out, slice_t in)
{
	uint32_t acc = 0;
	unsigned bits = 0;

	if (in.len % 4 == 1)
		return -FG_EINVAL;
	for (size_t i = 0; i < in.len; i++) {
		int v = b64url_val(in.ptr[i]);

		if (v < 0)
			return -FG_EINVAL;
		acc = (acc << 6 | (uint32_t)v) & 0xffffff;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			buf_append_byte(out, (char)((acc >> bits) & 0xff));
		}
	}
	/* The unused low bits of the last character must be zero: one encoding per input. */
	if ((acc & ((1u << bits) - 1)) != 0)
		return -FG_EINVAL;
	return 0;
}

jwt_alg_t
jwt_alg_from_name(slice_t name)
{
	if (slice_eq_cstr(name, "RS384"))
		return JWT_ALG_RS384;
	if (slice_eq_cstr(name, "ES384"))
		return JWT_ALG_ES384;
	return JWT_ALG_NONE;
}

const char *
jwt_alg_name(jwt_alg_t alg)
{
	return alg == JWT_ALG_RS384 ? "RS384" : alg == JWT_ALG_ES384 ? "ES384" : "none";
}

jwt_alg_t
jwt_alg_of_key(EVP_PKEY *key)
{
	char group[64];
	size_t len = 0;

	if (key == NULL)
		return JWT_ALG_NONE;
	if (EVP_PKEY_is_a(key, "RSA"))
		return EVP_PKEY_get_bits(key) >= 2048 ? JWT_ALG_RS384 : JWT_ALG_NONE;
	if (EVP_PKEY_is_a(key, "EC") &&
	    EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
					   &len) == 1 &&
	    (strcmp(group, "secp384r1") == 0 || strcmp(group, "P-384") == 0))
		return JWT_ALG_ES384;
	return JWT_ALG_NONE;
}

/* Decodes one base64url part into the arena. */
static int
part_decode(arena_t *a, slice_t in, slice_t *out)
{
	buf_t b = BUF_INIT;
	int rc = b64url_decode(&b, in);

	if (rc == 0)
		*out = b.len > 0 ? arena_slice_dup(a, buf_slice(&b)) : slice_make("", 0);
	buf_free(&b);
	return rc;
}

static int
part_json(arena_t *a, slice_t in, fhir_node_t **out)
{
	fhir_json_limits_t lim = {.max_bytes = JWT_MAX_BYTES, .max_depth = 8};
	slice_t raw;
	char err[128];

	if (part_decode(a, in, &raw) < 0 ||
	    fhir_json_parse(a, raw.ptr, raw.len, &lim, out, err, sizeof(err)) < 0 ||
	    fhir_node_kind(*out) != FHIR_OBJECT)
		return -FG_EINVAL;
	return 0;
}

int
jwt_parse(arena_t *a, slice_t token, jwt_t *out, const char **why)
{
	size_t dot1, dot2;
	fhir_node_t *alg, *kid;

	memset(out, 0, sizeof(*out));
	if (token.len > JWT_MAX_BYTES) {
		*why = "token too long";
		return -FG_ETOOBIG;
	}
	for (dot1 = 0; dot1 < token.len && token.ptr[dot1] != '.'; dot1++)
		;
	for (dot2 = dot1 + 1; dot2 < token.len && token.ptr[dot2] != '.'; dot2++)
		;
	if (dot1 >= token.len || dot2 >= token.len ||
	    memchr(token.ptr + dot2 + 1, '.', token.len - dot2 - 1) != NULL) {
		*why = "not a compact JWS (three dot-separated parts)";
		return -FG_EINVAL;
	}
	if (part_json(a, slice_make(token.ptr, dot1), &out->header) < 0) {
		*why = "header is not base64url-encoded JSON object";
		return -FG_EINVAL;
	}
	alg = fhir_object_get_cstr(out->header, "alg");
	out->alg = alg != NULL && fhir_node_kind(alg) == FHIR_STRING
		       ? jwt_alg_from_name(fhir_node_text(alg))
		       : JWT_ALG_NONE;
	if (out->alg == JWT_ALG_NONE) {
		*why = "alg must be RS384 or ES384";
		return -FG_EINVAL;
	}
	/* No extension is understood, so a critical one can never be honoured (RFC 7515 4.1.11). */
	if (fhir_object_get_cstr(out->header, "crit") != NULL) {
		*why = "crit header parameters are not supported";
		return -FG_EINVAL;
	}
	kid = fhir_object_get_cstr(out->header, "kid");
	if (kid != NULL && fhir_node_kind(kid) != FHIR_STRING) {
		*why = "kid is not a string";
		return -FG_EINVAL;
	}
	out->kid = kid != NULL ? fhir_node_text(kid) : SLICE_NULL;
	if (part_json(a, slice_make(token.ptr + dot1 + 1, dot2 - dot1 - 1), &out->claims) < 0) {
		*why = "payload is not base64url-encoded JSON object";
		return -FG_EINVAL;
	}
	if (part_decode(a, slice_make(token.ptr + dot2 + 1, token.len - dot2 - 1), &out->sig) < 0 ||
	    out->sig.len == 0) {
		*why = "signature is not base64url";
		return -FG_EINVAL;
	}
	out->signing_input = slice_make(token.ptr, dot2);
	return 0;
}

/* Raw r||s (JWS) to a DER ECDSA-Sig-Value (OpenSSL); caller frees *der with OPENSSL_free. */
static int
es_raw_to_der(slice_t raw, unsigned char **der, int *derlen)
{
	ECDSA_SIG *s;
	BIGNUM *r, *sv;

	if (raw.len != 2 * ES384_COORD)
		return -FG_EINVAL;
	s = ECDSA_SIG_new();
	r = BN_bin2bn((const unsigned char *)raw.ptr, ES384_COORD, NULL);
	sv = BN_bin2bn((const unsigned char *)raw.ptr + ES384_COORD, ES384_COORD, NULL);
	if (s == NULL || r == NULL || sv == NULL || ECDSA_SIG_set0(s, r, sv) != 1) {
		BN_free(r);
		BN_free(sv);
		ECDSA_SIG_free(s);
		return -FG_EINVAL;
	}
	*der = NULL;
	*derlen = i2d_ECDSA_SIG(s, der);
	ECDSA_SIG_free(s);
	return *derlen > 0 ? 0 : -FG_EINVAL;
}

int
jwt_verify(const jwt_t *jwt, EVP_PKEY *key, const char **why)
{
	EVP_MD_CTX *md;
	const unsigned char *sig = (const unsigned char *)jwt->sig.ptr;
	unsigned char *der = NULL;
	size_t siglen = jwt->sig.len;
	int derlen, ok;

	if (jwt->alg == JWT_ALG_NONE || jwt_alg_of_key(key) != jwt->alg) {
		*why = "the token's alg does not match the key";
		return -FG_EINVAL;
	}
	if (jwt->alg == JWT_ALG_ES384) {
		if (es_raw_to_der(jwt->sig, &der, &derlen) < 0) {
			*why = "ES384 signature is not 96 bytes of r||s";
			return -FG_EINVAL;
		}
		sig = der;
		siglen = (size_t)derlen;
	}
	md = EVP_MD_CTX_new();
	ok = md != NULL && EVP_DigestVerifyInit(md, NULL, EVP_sha384(), NULL, key) == 1 &&
	     EVP_DigestVerify(md, sig, siglen, (const unsigned char *)jwt->signing_input.ptr,
			      jwt->signing_input.len) == 1;
	EVP_MD_CTX_free(md);
	OPENSSL_free(der);
	if (!ok) {
		*why = "signature does not verify";
		return -FG_EINVAL;
	}
	return 0;
}

/* A DER ECDSA signature to raw r||s, appended to out. */
static int
es_der_to_raw(const unsigned char *der, size_t len, buf_t *out)
{
	ECDSA_SIG *s = d2i_ECDSA_SIG(NULL, &der, (long)len);
	const BIGNUM *r, *sv;
	unsigned char raw[2 * ES384_COORD];
	int rc = -FG_EINVAL;

	if (s == NULL)
		return rc;
	ECDSA_SIG_get0(s, &r, &sv);
	if (BN_bn2binpad(r, raw, ES384_COORD) == ES384_COORD &&
	    BN_bn2binpad(sv, raw + ES384_COORD, ES384_COORD) == ES384_COORD) {
		buf_append(out, raw, sizeof(raw));
		rc = 0;
	}
	ECDSA_SIG_free(s);
	return rc;
}

int
jwt_sign(EVP_PKEY *key, const char *kid, slice_t claims_json, buf_t *out)
{
	jwt_alg_t alg = jwt_alg_of_key(key);
	buf_t header = BUF_INIT, sig = BUF_INIT;
	size_t start = out->len, siglen = 0;
	unsigned char *der = NULL;
	EVP_MD_CTX *md;
	int rc = -FG_EINVAL;

	if (alg == JWT_ALG_NONE)
		return -FG_EINVAL;
	buf_printf(&header, "{\"alg\":\"%s\",\"typ\":\"JWT\"", jwt_alg_name(alg));
	if (kid != NULL)
		buf_printf(&header, ",\"kid\":\"%s\"", kid); /* kids are made of base64url chars */
	buf_append_byte(&header, '}');
	b64url_encode(out, header.data, header.len);
	buf_append_byte(out, '.');
	b64url_encode(out, claims_json.ptr, claims_json.len);
	md = EVP_MD_CTX_new();
	if (md != NULL && EVP_DigestSignInit(md, NULL, EVP_sha384(), NULL, key) == 1 &&
	    EVP_DigestSign(md, NULL, &siglen, (const unsigned char *)out->data + start,
			   out->len - start) == 1) {
		der = OPENSSL_malloc(siglen);
		if (der != NULL &&
		    EVP_DigestSign(md, der, &siglen, (const unsigned char *)out->data + start,
				   out->len - start) == 1)
			rc = alg == JWT_ALG_ES384 ? es_der_to_raw(der, siglen, &sig)
						  : buf_append(&sig, der, siglen);
	}
	EVP_MD_CTX_free(md);
	OPENSSL_free(der);
	if (rc == 0) {
		buf_append_byte(out, '.');
		b64url_encode(out, sig.data, sig.len);
	}
	buf_free(&header);
	buf_free(&sig);
	return rc;
}

slice_t
jwt_claim_str(const jwt_t *jwt, const char *name)
{
	fhir_node_t *n = fhir_object_get_cstr(jwt->claims, name);

	return n != NULL && fhir_node_kind(n) == FHIR_STRING ? fhir_node_text(n) : SLICE_NULL;
}

bool
jwt_claim_time(const jwt_t *jwt, const char *name, int64_t *out)
{
	fhir_node_t *n = fhir_object_get_cstr(jwt->claims, name);
	slice_t t;
	size_t i = 0;

	if (n == NULL || fhir_node_kind(n) != FHIR_NUMBER)
		return false;
	/* NumericDate may carry a fraction; whole seconds are enough here. */
	t = fhir_node_text(n);
	while (i < t.len && t.ptr[i] != '.' && t.ptr[i] != 'e' && t.ptr[i] != 'E')
		i++;
	if (i < t.len && t.ptr[i] != '.')
		return false;
	return slice_to_i64(slice_make(t.ptr, i), out);
}

/* A base64url JWK member decoded into b; false when absent or bad. */
static bool
jwk_member(const fhir_node_t *jwk, const char *name, buf_t *b)
{
	fhir_node_t *n = fhir_object_get_cstr(jwk, name);

	return n != NULL && fhir_node_kind(n) == FHIR_STRING &&
	       b64url_decode(b, fhir_node_text(n)) == 0 && b->len > 0;
}

static int
pkey_fromdata(const char *type, OSSL_PARAM *params, EVP_PKEY **out)
{
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
	int ok;

	*out = NULL;
	ok = ctx != NULL && EVP_PKEY_fromdata_init(ctx) == 1 &&
	     EVP_PKEY_fromdata(ctx, out, EVP_PKEY_PUBLIC_KEY, params) == 1;
	EVP_PKEY_CTX_free(ctx);
	return ok ? 0 : -FG_EINVAL;
}

int
jwk_import(const fhir_node_t *jwk, EVP_PKEY **out, const char **why)
{
	fhir_node_t *kty = fhir_object_get_cstr(jwk, "kty"), *crv;
	buf_t a = BUF_INIT, b = BUF_INIT;
	OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
	OSSL_PARAM *params = NULL;
	BIGNUM *n = NULL, *e = NULL;
	int rc = -FG_EINVAL;

	*out = NULL;
	*why = "kty must be RSA or EC";
	if (jwk == NULL || fhir_node_kind(jwk) != FHIR_OBJECT || kty == NULL || bld == NULL)
		goto done;
	if (slice_eq_cstr(fhir_node_text(kty), "RSA")) {
		*why = "RSA key needs base64url n and e";
		if (!jwk_member(jwk, "n", &a) || !jwk_member(jwk, "e", &b))
			goto done;
		n = BN_bin2bn((const unsigned char *)a.data, (int)a.len, NULL);
		e = BN_bin2bn((const unsigned char *)b.data, (int)b.len, NULL);
		if (n == NULL || e == NULL ||
		    !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) ||
		    !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e) ||
		    (params = OSSL_PARAM_BLD_to_param(bld)) == NULL)
			goto done;
		*why = "not a usable RSA key";
		rc = pkey_fromdata("RSA", params, out);
	} else if (slice_eq_cstr(fhir_node_text(kty), "EC")) {
		buf_t point = BUF_INIT;

		crv = fhir_object_get_cstr(jwk, "crv");
		*why = "EC key must be on crv P-384";
		if (crv == NULL || !slice_eq_cstr(fhir_node_text(crv), "P-384"))
			goto done;
		*why = "EC key needs base64url x and y of 48 bytes";
		if (!jwk_member(jwk, "x", &a) || !jwk_member(jwk, "y", &b) ||
		    a.len != ES384_COORD || b.len != ES384_COORD)
			goto done;
		/* Uncompressed point: 0x04 || x || y; OpenSSL checks that it lies on the curve. */
		buf_append_byte(&point, 4);
		buf_append(&point, a.data, a.len);
		buf_append(&point, b.data, b.len);
		if (OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "P-384", 0) &&
		    OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point.data,
						     point.len) &&
		    (params = OSSL_PARAM_BLD_to_param(bld)) != NULL) {
			*why = "not a point on P-384";
			rc = pkey_fromdata("EC", params, out);
		}
		buf_free(&point);
	}
	if (rc == 0 && jwt_alg_of_key(*out) == JWT_ALG_NONE) {
		*why = "RSA keys must have at least 2048 bits";
		EVP_PKEY_free(*out);
		*out = NULL;
		rc = -FG_EINVAL;
	}
done:
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(bld);
	BN_free(n);
	BN_free(e);
	buf_free(&a);
	buf_free(&b);
	return rc;
}

int
jwt_key_load(const char *path, EVP_PKEY **out, const char **why)
{
	FILE *f = fopen(path, "r");

	*out = NULL;
	if (f == NULL) {
		*why = "cannot open the file";
		return -FG_EIO;
	}
	*out = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	if (*out == NULL) {
		*why = "not a PEM private key (without a passphrase)";
		return -FG_EINVAL;
	}
	if (jwt_alg_of_key(*out) == JWT_ALG_NONE) {
		*why = "the key must be RSA (2048 bits or more) or EC P-384";
		EVP_PKEY_free(*out);
		*out = NULL;
		return -FG_EINVAL;
	}
	return 0;
}

EVP_PKEY *
jwt_key_generate(void)
{
	return EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
}
