/* Unit tests for authorization: base64url, JWT signing and verification (RS384, ES384, with
 * keys generated here), JWK import, SMART scope parsing (v1, v2), granting, the permission check
 * table, the patient compartment table and protected mode's loopback test. */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>

#include "fhir/json.h"
#include "gateway/auth.h"
#include "gateway/conf.h"
#include "gateway/jwt.h"
#include "gateway/scope.h"
#include "lib/buf.h"
#include "lib/err.h"
#include "lib/xalloc.h"

/* ---- base64url ---- */

static void
test_b64url_vectors(void **state)
{
	/* RFC 4648 section 10, without padding. */
	static const char *const in[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
	static const char *const out[] = {"", "Zg", "Zm8", "Zm9v", "Zm9vYg", "Zm9vYmE", "Zm9vYmFy"};
	const unsigned char urlsafe[] = {0xfb, 0xff, 0xbf};

	(void)state;
	for (size_t i = 0; i < sizeof(in) / sizeof(in[0]); i++) {
		buf_t e = BUF_INIT, d = BUF_INIT;

		b64url_encode(&e, in[i], strlen(in[i]));
		assert_string_equal(e.data != NULL ? e.data : "", out[i]);
		assert_int_equal(b64url_decode(&d, slice_cstr(out[i])), 0);
		assert_int_equal(d.len, strlen(in[i]));
		assert_memory_equal(d.data != NULL ? d.data : "", in[i], d.len);
		buf_free(&e);
		buf_free(&d);
	}
	{
		buf_t e = BUF_INIT;

		b64url_encode(&e, urlsafe, sizeof(urlsafe));
		assert_string_equal(e.data, "-_-_");
		buf_free(&e);
	}
}

static void
test_b64url_rejects(void **state)
{
	static const char *const bad[] = {"Zg==",  "Zm9v+", "Zm9v/", "Z",
					  "Zm9vY", "Zh",    "Zm9",   "a b"};

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		buf_t d = BUF_INIT;
		int rc = b64url_decode(&d, slice_cstr(bad[i]));

		/* "Zh" and "Zm9" carry non-zero unused bits ("Zg" and "Zm8" are canonical). */
		if (rc != -FG_EINVAL)
			fail_msg("%s decodes", bad[i]);
		buf_free(&d);
	}
}

/* ---- JWT ---- */

static EVP_PKEY *
key_rsa(void)
{
	EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);

	assert_non_null(k);
	return k;
}

/* The public half of a key, through a JWK as a client would register it. */
static EVP_PKEY *
public_via_jwk(EVP_PKEY *priv, arena_t *a)
{
	buf_t json = BUF_INIT, m1 = BUF_INIT, m2 = BUF_INIT;
	unsigned char bin[600];
	BIGNUM *x = NULL, *y = NULL;
	fhir_node_t *jwk;
	EVP_PKEY *pub;
	const char *why;
	char err[128];
	int n;

	if (jwt_alg_of_key(priv) == JWT_ALG_RS384) {
		EVP_PKEY_get_bn_param(priv, OSSL_PKEY_PARAM_RSA_N, &x);
		EVP_PKEY_get_bn_param(priv, OSSL_PKEY_PARAM_RSA_E, &y);
		n = BN_bn2bin(x, bin);
		b64url_encode(&m1, bin, (size_t)n);
		n = BN_bn2bin(y, bin);
		b64url_encode(&m2, bin, (size_t)n);
		buf_printf(&json, "{\"kty\":\"RSA\",\"n\":\"%s\",\"e\":\"%s\"}", m1.data, m2.data);
	} else {
		EVP_PKEY_get_bn_param(priv, OSSL_PKEY_PARAM_EC_PUB_X, &x);
		EVP_PKEY_get_bn_param(priv, OSSL_PKEY_PARAM_EC_PUB_Y, &y);
		BN_bn2binpad(x, bin, 48);
		b64url_encode(&m1, bin, 48);
		BN_bn2binpad(y, bin, 48);
		b64url_encode(&m2, bin, 48);
		buf_printf(&json, "{\"kty\":\"EC\",\"crv\":\"P-384\",\"x\":\"%s\",\"y\":\"%s\"}",
			   m1.data, m2.data);
	}
	assert_int_equal(fhir_json_parse(a, json.data, json.len, NULL, &jwk, err, sizeof(err)), 0);
	assert_int_equal(jwk_import(jwk, &pub, &why), 0);
	BN_free(x);
	BN_free(y);
	buf_free(&json);
	buf_free(&m1);
	buf_free(&m2);
	return pub;
}

static void
sign_verify(EVP_PKEY *priv, jwt_alg_t want, EVP_PKEY *wrong)
{
	arena_t *a = arena_new(0);
	EVP_PKEY *pub = public_via_jwk(priv, a);
	buf_t tok = BUF_INIT, bad = BUF_INIT;
	const char *why = NULL;
	jwt_t j;
	int64_t exp;

	assert_int_equal(jwt_alg_of_key(pub), want);
	assert_int_equal(
	    jwt_sign(priv, "k1", SLICE_LIT("{\"iss\":\"me\",\"exp\":1700000000.5}"), &tok), 0);
	assert_int_equal(jwt_parse(a, buf_slice(&tok), &j, &why), 0);
	assert_int_equal(j.alg, want);
	assert_true(slice_eq_cstr(j.kid, "k1"));
	assert_true(slice_eq_cstr(jwt_claim_str(&j, "iss"), "me"));
	assert_true(jwt_claim_time(&j, "exp", &exp));
	assert_int_equal(exp, 1700000000);
	assert_false(jwt_claim_time(&j, "iss", &exp));
	if (want == JWT_ALG_ES384)
		assert_int_equal(j.sig.len, 96); /* raw r||s, not DER */
	assert_int_equal(jwt_verify(&j, pub, &why), 0);
	assert_int_equal(jwt_verify(&j, priv, &why), 0);
	/* Another key, or a key of the other type (alg confusion), never verifies. */
	assert_int_equal(jwt_verify(&j, wrong, &why), -FG_EINVAL);
	/* One changed payload character breaks the signature. */
	buf_append_slice(&bad, buf_slice(&tok));
	bad.data[j.signing_input.len - 2] ^= 1;
	if (jwt_parse(a, buf_slice(&bad), &j, &why) == 0)
		assert_int_equal(jwt_verify(&j, pub, &why), -FG_EINVAL);
	EVP_PKEY_free(pub);
	buf_free(&tok);
	buf_free(&bad);
	arena_free(a);
}

static void
test_jwt_rs384_es384(void **state)
{
	EVP_PKEY *rsa = key_rsa(), *ec = jwt_key_generate(), *ec2 = jwt_key_generate();

	(void)state;
	assert_int_equal(jwt_alg_of_key(ec), JWT_ALG_ES384);
	sign_verify(rsa, JWT_ALG_RS384, ec);
	sign_verify(ec, JWT_ALG_ES384, rsa);
	sign_verify(ec, JWT_ALG_ES384, ec2);
	EVP_PKEY_free(rsa);
	EVP_PKEY_free(ec);
	EVP_PKEY_free(ec2);
}

/* A token from a header and payload JSON text and a signature text. */
static char *
make_token(const char *header, const char *payload, const char *sig)
{
	buf_t b = BUF_INIT;

	b64url_encode(&b, header, strlen(header));
	buf_append_byte(&b, '.');
	b64url_encode(&b, payload, strlen(payload));
	buf_printf(&b, ".%s", sig);
	return buf_steal(&b, NULL);
}

static void
test_jwt_parse_rejects(void **state)
{
	static const char *const headers[] = {
	    "{\"alg\":\"none\"}",
	    "{\"alg\":\"HS384\"}",
	    "{\"alg\":\"RS256\"}",
	    "{\"alg\":\"ES256\"}",
	    "{}",
	    "{\"alg\":384}",
	    "{\"alg\":\"RS384\",\"crit\":[\"b64\"]}",
	    "{\"alg\":\"RS384\",\"kid\":7}",
	    "[\"RS384\"]",
	    "{\"alg\":\"RS384\",\"alg\":\"RS384\"}",
	};
	arena_t *a = arena_new(0);
	const char *why;
	jwt_t j;
	char *t;

	(void)state;
	for (size_t i = 0; i < sizeof(headers) / sizeof(headers[0]); i++) {
		t = make_token(headers[i], "{}", "AAAA");
		assert_int_equal(jwt_parse(a, slice_cstr(t), &j, &why), -FG_EINVAL);
		free(t);
	}
	t = make_token("{\"alg\":\"RS384\"}", "[1]", "AAAA");
	assert_int_equal(jwt_parse(a, slice_cstr(t), &j, &why), -FG_EINVAL);
	free(t);
	t = make_token("{\"alg\":\"RS384\"}", "{}", "");
	assert_int_equal(jwt_parse(a, slice_cstr(t), &j, &why), -FG_EINVAL);
	free(t);
	t = make_token("{\"alg\":\"RS384\"}", "{}", "AA==");
	assert_int_equal(jwt_parse(a, slice_cstr(t), &j, &why), -FG_EINVAL);
	free(t);
	t = make_token("{\"alg\":\"RS384\"}", "{}", "AAAA.AAAA");
	assert_int_equal(jwt_parse(a, slice_cstr(t), &j, &why), -FG_EINVAL);
	free(t);
	assert_int_equal(jwt_parse(a, SLICE_LIT("onlyone"), &j, &why), -FG_EINVAL);
	assert_int_equal(jwt_parse(a, SLICE_LIT(".."), &j, &why), -FG_EINVAL);
	t = make_token("{\"alg\":\"ES384\",\"kid\":\"x\"}", "{\"iss\":\"c\"}", "AAAA");
	assert_int_equal(jwt_parse(a, slice_cstr(t), &j, &why), 0);
	free(t);
	/* An ES384 signature must be 96 bytes of r||s. */
	{
		EVP_PKEY *ec = jwt_key_generate();

		assert_int_equal(jwt_verify(&j, ec, &why), -FG_EINVAL);
		EVP_PKEY_free(ec);
	}
	arena_free(a);
}

static int
import_json(const char *json)
{
	arena_t *a = arena_new(0);
	fhir_node_t *n;
	EVP_PKEY *k = NULL;
	const char *why;
	char err[128];
	int rc;

	assert_int_equal(fhir_json_parse(a, json, strlen(json), NULL, &n, err, sizeof(err)), 0);
	rc = jwk_import(n, &k, &why);
	EVP_PKEY_free(k);
	arena_free(a);
	return rc;
}

static void
test_jwk_rejects(void **state)
{
	/* x and y of 48 bytes that are not a point of P-384. */
	static const char off_curve[] =
	    "{\"kty\":\"EC\",\"crv\":\"P-384\","
	    "\"x\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB\","
	    "\"y\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB\"}";
	EVP_PKEY *small = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
	BIGNUM *n = NULL;
	unsigned char bin[200];
	buf_t m = BUF_INIT, json = BUF_INIT;
	int len;

	(void)state;
	assert_int_equal(import_json(off_curve), -FG_EINVAL);
	assert_int_equal(
	    import_json("{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"AA\",\"y\":\"AA\"}"),
	    -FG_EINVAL);
	assert_int_equal(
	    import_json("{\"kty\":\"EC\",\"crv\":\"P-384\",\"x\":\"AA\",\"y\":\"AA\"}"),
	    -FG_EINVAL);
	assert_int_equal(import_json("{\"kty\":\"RSA\",\"n\":\"AQAB\"}"), -FG_EINVAL);
	assert_int_equal(import_json("{\"kty\":\"oct\",\"k\":\"AAAA\"}"), -FG_EINVAL);
	assert_int_equal(import_json("{\"n\":\"AQAB\",\"e\":\"AQAB\"}"), -FG_EINVAL);
	/* RSA under 2048 bits. */
	EVP_PKEY_get_bn_param(small, OSSL_PKEY_PARAM_RSA_N, &n);
	len = BN_bn2bin(n, bin);
	b64url_encode(&m, bin, (size_t)len);
	buf_printf(&json, "{\"kty\":\"RSA\",\"n\":\"%s\",\"e\":\"AQAB\"}", m.data);
	assert_int_equal(import_json(json.data), -FG_EINVAL);
	assert_int_equal(jwt_alg_of_key(small), JWT_ALG_NONE);
	BN_free(n);
	EVP_PKEY_free(small);
	buf_free(&m);
	buf_free(&json);
}

/* ---- scopes ---- */

static void
test_scope_parse(void **state)
{
	static const struct {
		const char *text;
		int rc;
		scope_ctx_t ctx;
		const char *type;
		unsigned perms;
	} cases[] = {
	    {"system/*.read", 0, SCOPE_SYSTEM, "*", SCOPE_R | SCOPE_S},
	    {"system/Observation.write", 0, SCOPE_SYSTEM, "Observation",
	     SCOPE_C | SCOPE_U | SCOPE_D},
	    {"user/*.*", 0, SCOPE_USER, "*", SCOPE_ALL},
	    {"patient/Patient.read", 0, SCOPE_PATIENT, "Patient", SCOPE_R | SCOPE_S},
	    {"system/Observation.rs", 0, SCOPE_SYSTEM, "Observation", SCOPE_R | SCOPE_S},
	    {"system/*.cruds", 0, SCOPE_SYSTEM, "*", SCOPE_ALL},
	    {"system/Encounter.c", 0, SCOPE_SYSTEM, "Encounter", SCOPE_C},
	    {"system/Encounter.ud", 0, SCOPE_SYSTEM, "Encounter", SCOPE_U | SCOPE_D},
	    {"system/fhirgate.admin", 0, SCOPE_SYSTEM, "fhirgate", 0},
	    {"system/Observation.sr", -FG_EINVAL, 0, NULL, 0},
	    {"system/Observation.rr", -FG_EINVAL, 0, NULL, 0},
	    {"system/Observation.x", -FG_EINVAL, 0, NULL, 0},
	    {"system/Observation.", -FG_EINVAL, 0, NULL, 0},
	    {"system/Observation", -FG_EINVAL, 0, NULL, 0},
	    {"system/Nope.read", -FG_EINVAL, 0, NULL, 0},
	    {"admin/*.read", -FG_EINVAL, 0, NULL, 0},
	    {"patient/fhirgate.admin", -FG_EINVAL, 0, NULL, 0},
	    {"system/Observation.rs?category=laboratory", 0, SCOPE_SYSTEM, "Observation",
	     SCOPE_R | SCOPE_S},
	    {"user/Observation.s?code=http://loinc.org|1234-5&status=final", 0, SCOPE_USER,
	     "Observation", SCOPE_S},
	    {"patient/Observation.rs?category=laboratory", -FG_EUNSUPPORTED, 0, NULL, 0},
	    {"system/*.rs?category=laboratory", -FG_EUNSUPPORTED, 0, NULL, 0},
	    {"system/Observation.cruds?category=laboratory", -FG_EUNSUPPORTED, 0, NULL, 0},
	    {"system/Observation.rs?nope=x", -FG_EINVAL, 0, NULL, 0},
	    {"system/Observation.rs?_include=Observation:subject", -FG_EINVAL, 0, NULL, 0},
	    {"system/Observation.rs?category=", -FG_EINVAL, 0, NULL, 0},
	    {"system/Observation.rs?category=a=b", -FG_EINVAL, 0, NULL, 0},
	    {"system/Observation.rs?category=a#b", -FG_EINVAL, 0, NULL, 0},
	    {"system/Observation.rs?", -FG_EINVAL, 0, NULL, 0},
	    {"system/Observation.read?category=laboratory", -FG_EINVAL, 0, NULL, 0},
	    {"openid", -FG_EUNSUPPORTED, 0, NULL, 0},
	    {"launch", -FG_EUNSUPPORTED, 0, NULL, 0},
	};
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		scope_t s;
		int rc = scope_parse(slice_cstr(cases[i].text), &s);

		if (rc != cases[i].rc)
			fail_msg("%s: rc %d, want %d", cases[i].text, rc, cases[i].rc);
		if (rc != 0)
			continue;
		assert_int_equal(s.ctx, cases[i].ctx);
		assert_string_equal(s.type, cases[i].type);
		assert_int_equal(s.perms, cases[i].perms);
	}
}

static void
test_scope_format_roundtrip(void **state)
{
	static const char text[] = "system/*.read patient/Observation.rs user/Patient.write "
				   "system/Encounter.* system/fhirgate.admin";
	scope_set_t set;
	slice_t bad;
	buf_t out = BUF_INIT;

	(void)state;
	assert_int_equal(scope_set_parse(slice_cstr(text), &set, &bad), 0);
	assert_int_equal(set.n, 5);
	scope_set_format(&set, &out);
	assert_string_equal(out.data, text);
	buf_free(&out);
	assert_int_equal(scope_set_parse(SLICE_LIT("system/*.read bogus/x.r"), &set, &bad),
			 -FG_EINVAL);
	assert_true(slice_eq_cstr(bad, "bogus/x.r"));
}

static void
grant(const char *req, const char *allowed, bool patient_ok, const char *want)
{
	scope_set_t r, a, g;
	slice_t bad;
	buf_t out = BUF_INIT;

	assert_int_equal(scope_set_parse(slice_cstr(req), &r, &bad), 0);
	assert_int_equal(scope_set_parse(slice_cstr(allowed), &a, &bad), 0);
	scope_grant(&r, &a, patient_ok, &g);
	scope_set_format(&g, &out);
	if (strcmp(out.data != NULL ? out.data : "", want) != 0)
		fail_msg("grant(%s | %s) = '%s', want '%s'", req, allowed, out.data ? out.data : "",
			 want);
	buf_free(&out);
}

static void
test_scope_grant(void **state)
{
	(void)state;
	grant("system/*.read", "system/*.read", false, "system/*.read");
	grant("system/Observation.read", "system/*.read", false, "system/Observation.read");
	grant("system/*.rs", "system/Observation.rs", false, "system/Observation.rs");
	grant("system/*.cruds", "system/*.read", false, "system/*.rs");
	grant("system/Observation.write", "system/Observation.rs", false, "");
	grant("user/*.read", "system/*.read", false, "");
	grant("patient/*.rs", "patient/*.rs", false, "");
	grant("patient/*.rs", "patient/*.rs", true, "patient/*.rs");
	grant("system/AuditEvent.rs", "system/*.rs", false, "");
	grant("system/*.rs", "system/AuditEvent.rs", false, "");
	grant("system/AuditEvent.rs", "system/AuditEvent.read", false, "system/AuditEvent.rs");
	grant("system/fhirgate.admin", "system/*.*", false, "");
	grant("system/Observation.rs?category=laboratory", "system/Observation.rs", false,
	      "system/Observation.rs?category=laboratory");
	grant("system/Observation.rs", "system/Observation.rs?category=laboratory", false,
	      "system/Observation.rs?category=laboratory");
	grant("system/*.read", "system/Observation.rs?category=laboratory", false,
	      "system/Observation.rs?category=laboratory");
	grant("system/Observation.rs?category=a", "system/Observation.rs?category=b", false, "");
	grant("system/Observation.rs?category=a", "system/Observation.r", false,
	      "system/Observation.r?category=a");
	grant("system/fhirgate.admin system/*.read", "system/fhirgate.admin system/*.read", false,
	      "system/fhirgate.admin system/*.read");
}

/* The permission check table: scopes, type, needed permissions, verdict. */
static void
test_scope_check_table(void **state)
{
	static const struct {
		const char *scopes;
		const char *type;
		unsigned perms;
		scope_verdict_t want;
	} cases[] = {
	    {"system/*.read", "Observation", SCOPE_R, SCOPE_ALLOW},
	    {"system/*.read", "Observation", SCOPE_S, SCOPE_ALLOW},
	    {"system/*.read", "Observation", SCOPE_C, SCOPE_DENY},
	    {"system/*.read", "", SCOPE_S, SCOPE_ALLOW},
	    {"system/*.read", "AuditEvent", SCOPE_R, SCOPE_DENY},
	    {"system/AuditEvent.rs", "AuditEvent", SCOPE_R, SCOPE_ALLOW},
	    {"system/Observation.write", "Observation", SCOPE_C, SCOPE_ALLOW},
	    {"system/Observation.write", "Observation", SCOPE_U | SCOPE_D, SCOPE_ALLOW},
	    {"system/Observation.write", "Observation", SCOPE_R, SCOPE_DENY},
	    {"system/Observation.write", "Patient", SCOPE_C, SCOPE_DENY},
	    {"system/Observation.*", "Observation", SCOPE_ALL, SCOPE_ALLOW},
	    {"system/Observation.rs", "", SCOPE_S, SCOPE_DENY},
	    {"system/Observation.rs", "Observation", SCOPE_R | SCOPE_S, SCOPE_ALLOW},
	    {"system/Observation.r", "Observation", SCOPE_R | SCOPE_S, SCOPE_DENY},
	    {"system/Observation.r system/Observation.s", "Observation", SCOPE_R | SCOPE_S,
	     SCOPE_ALLOW},
	    {"system/*.cruds", "Encounter", SCOPE_U, SCOPE_ALLOW},
	    {"user/Patient.u", "Patient", SCOPE_U, SCOPE_ALLOW},
	    {"patient/*.rs", "Observation", SCOPE_R, SCOPE_ALLOW_PATIENT},
	    {"patient/*.rs", "", SCOPE_R | SCOPE_S, SCOPE_ALLOW_PATIENT},
	    {"patient/*.rs system/Observation.rs", "Observation", SCOPE_R, SCOPE_ALLOW},
	    {"patient/*.rs system/Observation.r", "Observation", SCOPE_R | SCOPE_S,
	     SCOPE_ALLOW_PATIENT},
	    {"patient/Observation.read", "Patient", SCOPE_R, SCOPE_DENY},
	    {"system/fhirgate.admin", "Observation", SCOPE_R, SCOPE_DENY},
	    {"system/Observation.rs?category=laboratory", "Observation", SCOPE_R, SCOPE_DENY},
	};
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		scope_set_t set;
		slice_t bad;
		scope_verdict_t v;

		assert_int_equal(scope_set_parse(slice_cstr(cases[i].scopes), &set, &bad), 0);
		v = scope_set_check(&set, slice_cstr(cases[i].type), cases[i].perms);
		if (v != cases[i].want)
			fail_msg("%s on '%s' %u: %d, want %d", cases[i].scopes, cases[i].type,
				 cases[i].perms, v, cases[i].want);
	}
	{
		scope_set_t set;
		slice_t bad;

		assert_int_equal(scope_set_parse(SLICE_LIT("system/fhirgate.admin"), &set, &bad),
				 0);
		assert_true(scope_set_is_admin(&set));
		assert_int_equal(scope_set_parse(SLICE_LIT("system/*.*"), &set, &bad), 0);
		assert_false(scope_set_is_admin(&set));
	}
	{
		scope_set_t set;
		slice_t bad;
		const scope_t *cs[4];

		assert_int_equal(
		    scope_set_parse(SLICE_LIT("system/Observation.rs?category=laboratory "
					      "system/Observation.r?status=final system/*.read"),
				    &set, &bad),
		    0);
		assert_int_equal(
		    scope_set_constrained(&set, SLICE_LIT("Observation"), SCOPE_R, cs, 4), 2);
		assert_int_equal(
		    scope_set_constrained(&set, SLICE_LIT("Observation"), SCOPE_S, cs, 4), 1);
		assert_string_equal(cs[0]->query, "category=laboratory");
		assert_int_equal(scope_set_constrained(&set, SLICE_LIT("Patient"), SCOPE_R, cs, 4),
				 0);
	}
}

static void
test_compartment(void **state)
{
	const char *const *p;

	(void)state;
	p = scope_compartment_params(SLICE_LIT("Observation"));
	assert_non_null(p);
	assert_string_equal(p[0], "subject");
	assert_string_equal(p[1], "performer");
	assert_null(p[2]);
	p = scope_compartment_params(SLICE_LIT("AllergyIntolerance"));
	assert_string_equal(p[0], "patient");
	assert_null(scope_compartment_params(SLICE_LIT("Organization")));
	assert_null(scope_compartment_params(SLICE_LIT("Medication")));
	assert_non_null(scope_compartment_params(SLICE_LIT("Patient")));
}

/* ---- protected mode and config ---- */

static void
test_loopback(void **state)
{
	static const char *const ok[] = {"127.0.0.1:8080", "[::1]:8080", "localhost:80",
					 "127.0.0.2:1, 127.0.0.1:2", ""};
	static const char *const bad[] = {"0.0.0.0:8080", ":8080", "10.1.2.3:80",
					  "127.0.0.1:80,0.0.0.0:81", "[::]:80"};
	char *which = NULL;

	(void)state;
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
		if (auth_listen_is_loopback(ok[i], &which) != 0)
			fail_msg("%s: not loopback (%s)", ok[i], which);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(auth_listen_is_loopback(bad[i], &which), -FG_ECONFIG);
		assert_non_null(which);
		free(which);
		which = NULL;
	}
}

static void
test_auth_config(void **state)
{
	config_t c;
	char *err = NULL;
	auth_t *a = NULL;

	(void)state;
	config_init(&c);
	assert_int_equal(c.auth_enabled, 0);
	assert_int_equal(config_set(&c, "auth.enabled", "yes", &err), -FG_ECONFIG);
	free(err);
	err = NULL;
	assert_int_equal(config_set(&c, "auth.enabled", "true", &err), 0);
	/* On without clients: a clear refusal. */
	assert_int_equal(auth_new(&c, &a, &err), -FG_ECONFIG);
	assert_non_null(strstr(err, "auth.clients"));
	free(err);
	auth_free(a);
	/* Off on a public address: protected mode refuses. */
	err = NULL;
	assert_int_equal(config_set(&c, "auth.enabled", "false", &err), 0);
	assert_int_equal(config_set(&c, "http.listen", "0.0.0.0:8080", &err), 0);
	assert_int_equal(auth_new(&c, &a, &err), -FG_ECONFIG);
	assert_non_null(strstr(err, "0.0.0.0:8080"));
	free(err);
	auth_free(a);
	config_free(&c);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_b64url_vectors),
	    cmocka_unit_test(test_b64url_rejects),
	    cmocka_unit_test(test_jwt_rs384_es384),
	    cmocka_unit_test(test_jwt_parse_rejects),
	    cmocka_unit_test(test_jwk_rejects),
	    cmocka_unit_test(test_scope_parse),
	    cmocka_unit_test(test_scope_format_roundtrip),
	    cmocka_unit_test(test_scope_grant),
	    cmocka_unit_test(test_scope_check_table),
	    cmocka_unit_test(test_compartment),
	    cmocka_unit_test(test_loopback),
	    cmocka_unit_test(test_auth_config),
	};

	return cmocka_run_group_tests_name("auth", tests, NULL, NULL);
}
