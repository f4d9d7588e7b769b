/* Test helper for tests/integration/test_auth.py: `jwt_sign KEY.pem [KID] < claims.json`
 * prints a compact JWS of the claims signed with the PEM private key (RS384 for RSA, ES384 for
 * EC P-384), with gateway/jwt.c. `jwt_sign --jwk PUB.pem [KID]` prints the public key as a JWK. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/pem.h>

#include "gateway/jwt.h"
#include "lib/buf.h"

static void
print_b64url_bn(const char *name, EVP_PKEY *key, const char *param, int pad)
{
	BIGNUM *bn = NULL;
	unsigned char bin[1024];
	buf_t b = BUF_INIT;
	int n;

	EVP_PKEY_get_bn_param(key, param, &bn);
	n = pad > 0 ? BN_bn2binpad(bn, bin, pad) : BN_bn2bin(bn, bin);
	b64url_encode(&b, bin, (size_t)n);
	printf("\"%s\":\"%s\"", name, b.data);
	buf_free(&b);
	BN_free(bn);
}

static int
print_jwk(EVP_PKEY *key, const char *kid)
{
	printf("{");
	if (kid != NULL)
		printf("\"kid\":\"%s\",", kid);
	if (jwt_alg_of_key(key) == JWT_ALG_RS384) {
		printf("\"kty\":\"RSA\",\"alg\":\"RS384\",");
		print_b64url_bn("n", key, OSSL_PKEY_PARAM_RSA_N, 0);
		printf(",");
		print_b64url_bn("e", key, OSSL_PKEY_PARAM_RSA_E, 0);
	} else {
		printf("\"kty\":\"EC\",\"crv\":\"P-384\",\"alg\":\"ES384\",");
		print_b64url_bn("x", key, OSSL_PKEY_PARAM_EC_PUB_X, 48);
		printf(",");
		print_b64url_bn("y", key, OSSL_PKEY_PARAM_EC_PUB_Y, 48);
	}
	printf("}\n");
	return 0;
}

int
main(int argc, char **argv)
{
	EVP_PKEY *key;
	const char *why;
	buf_t claims = BUF_INIT, out = BUF_INIT;
	char chunk[4096];
	size_t n;
	int rc;

	if (argc >= 3 && strcmp(argv[1], "--jwk") == 0) {
		if (jwt_key_load(argv[2], &key, &why) < 0) {
			fprintf(stderr, "jwt_sign: %s: %s\n", argv[2], why);
			return 1;
		}
		rc = print_jwk(key, argc > 3 ? argv[3] : NULL);
		EVP_PKEY_free(key);
		return rc;
	}
	if (argc < 2) {
		fprintf(stderr, "usage: jwt_sign KEY.pem [KID] < claims.json\n"
				"       jwt_sign --jwk KEY.pem [KID]\n");
		return 2;
	}
	if (jwt_key_load(argv[1], &key, &why) < 0) {
		fprintf(stderr, "jwt_sign: %s: %s\n", argv[1], why);
		return 1;
	}
	while ((n = fread(chunk, 1, sizeof(chunk), stdin)) > 0)
		buf_append(&claims, chunk, n);
	rc = jwt_sign(key, argc > 2 ? argv[2] : NULL, buf_slice(&claims), &out);
	if (rc == 0)
		printf("%s\n", out.data);
	EVP_PKEY_free(key);
	buf_free(&claims);
	buf_free(&out);
	return rc == 0 ? 0 : 1;
}
