/* SMART Backend Services: clients, the token endpoint, access tokens, bearer checks, the jti
 * replay cache and protected mode (docs/auth.md). */
#include "config.h"

#include "gateway/auth.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "fhir/json.h"
#include "gateway/http.h"
#include "gateway/jwt.h"
#include "lib/err.h"
#include "lib/log.h"
#include "lib/xalloc.h"

#define ASSERTION_MAX_LIFETIME 300 /* s: SMART: exp no more than five minutes ahead */
#define REPLAY_MAX             16384
#define JTI_MAX                256
#define CLIENTS_FILE_MAX       (1u << 20)
#define ASSERTION_TYPE         "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

typedef struct {
	char *kid; /* NULL when the JWK has none */
	EVP_PKEY *key;
} client_key_t;

typedef struct {
	char *id;
	char *patient; /* NULL: no patient/ scopes */
	scope_set_t allowed;
	client_key_t *keys;
	size_t nkeys;
} client_t;

/* A used assertion: a digest of client id and jti, kept until the assertion expires. */
typedef struct {
	client_t *v;
	size_t n;
} client_list_t;

typedef struct {
	unsigned char digest[32];
	int64_t until;
} replay_t;

struct auth {
	bool enabled;
	/* Replaced as a whole on reload (SIGHUP); readers hold the lock while they use a client. */
	pthread_rwlock_t clients_lock;
	client_list_t clients;
	EVP_PKEY *key; /* signs and verifies access tokens */
	char kid[48];
	int64_t lifetime_s, skew_s;
	char *base_url;     /* "" : from the Host header */
	pthread_mutex_t mu; /* the replay cache and the log rate limit */
	log_ratelimit_t refused_rl;
	replay_t *replay;
	size_t nreplay;
};

/* ---- protected mode ---- */

static bool
addr_is_loopback(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
		return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
	if (sa->sa_family == AF_INET6) {
		const struct in6_addr *a6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;

		return IN6_IS_ADDR_LOOPBACK(a6) ||
		       (IN6_IS_ADDR_V4MAPPED(a6) && a6->s6_addr[12] == 127);
	}
	return false;
}

/* Whether one host:port names loopback addresses only (an empty host means all addresses). */
static bool
spec_is_loopback(const char *spec)
{
	const char *colon = strrchr(spec, ':');
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
	char *host;
	bool ok;

	if (colon == NULL || colon == spec)
		return false;
	host = xmemdup0(spec, (size_t)(colon - spec));
	if (host[0] == '[' && strlen(host) > 2 && host[strlen(host) - 1] == ']') {
		memmove(host, host + 1, strlen(host));
		host[strlen(host) - 1] = '\0';
	}
	ok = getaddrinfo(host, NULL, &hints, &res) == 0 && res != NULL;
	for (struct addrinfo *r = res; ok && r != NULL; r = r->ai_next)
		ok = addr_is_loopback(r->ai_addr);
	if (res != NULL)
		freeaddrinfo(res);
	free(host);
	return ok;
}

int
auth_listen_is_loopback(const char *listen, char **bad)
{
	const char *p = listen;

	while (*p != '\0') {
		size_t n = strcspn(p, ",");
		char *one = xmemdup0(p, n), *s = one;

		while (*s == ' ')
			s++;
		for (size_t k = strlen(s); k > 0 && s[k - 1] == ' '; k--)
			s[k - 1] = '\0';
		if (*s != '\0' && !spec_is_loopback(s)) {
			*bad = xstrdup(s);
			free(one);
			return -FG_ECONFIG;
		}
		free(one);
		p += n;
		if (*p == ',')
			p++;
	}
	return 0;
}

int
auth_protected_mode_check(const config_t *cfg, char **errmsg)
{
	char *bad = NULL;

	if (cfg->auth_enabled || auth_listen_is_loopback(cfg->http_listen, &bad) == 0)
		return 0;
	*errmsg = xasprintf("protected mode: http.listen address %s is not loopback and "
			    "auth.enabled = false: anybody who can reach it could read and change "
			    "every record. Turn authorization on (auth.enabled = true with "
			    "auth.clients, see docs/auth.md) or listen on 127.0.0.1 only",
			    bad);
	free(bad);
	return -FG_ECONFIG;
}

/* ---- clients ---- */

static void
client_clear(client_t *c)
{
	free(c->id);
	free(c->patient);
	for (size_t i = 0; i < c->nkeys; i++) {
		free(c->keys[i].kid);
		EVP_PKEY_free(c->keys[i].key);
	}
	free(c->keys);
}

static int
file_read(const char *path, buf_t *out, char **errmsg)
{
	FILE *f = fopen(path, "rb");
	char chunk[8192];
	size_t n;

	if (f == NULL) {
		*errmsg = xasprintf("%s: %s", path, strerror(errno));
		return -FG_ECONFIG;
	}
	buf_init(out, CLIENTS_FILE_MAX);
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		if (buf_append(out, chunk, n) < 0) {
			fclose(f);
			*errmsg = xasprintf("%s: larger than 1 MiB", path);
			return -FG_ECONFIG;
		}
	fclose(f);
	return 0;
}

static int
json_file(arena_t *ar, const char *path, fhir_node_t **out, char **errmsg)
{
	buf_t b;
	char err[160];
	int rc = file_read(path, &b, errmsg);

	if (rc == 0 &&
	    fhir_json_parse(ar, b.data ? b.data : "", b.len, NULL, out, err, sizeof(err)) < 0) {
		*errmsg = xasprintf("%s: %s", path, err);
		rc = -FG_ECONFIG;
	}
	buf_free(&b);
	return rc;
}

static const char *
member_str(arena_t *ar, const fhir_node_t *obj, const char *name)
{
	fhir_node_t *n = fhir_object_get_cstr(obj, name);

	if (n == NULL || fhir_node_kind(n) != FHIR_STRING)
		return NULL;
	return arena_strndup(ar, fhir_node_text(n).ptr, fhir_node_text(n).len);
}

static int
client_keys_load(client_t *c, const fhir_node_t *jwks, const char *where, char **errmsg)
{
	fhir_node_t *keys = fhir_object_get_cstr(jwks, "keys");
	size_t n = keys != NULL && fhir_node_kind(keys) == FHIR_ARRAY ? fhir_array_len(keys) : 0;

	if (n == 0) {
		*errmsg =
		    xasprintf("%s: client %s: jwks needs a non-empty \"keys\" array", where, c->id);
		return -FG_ECONFIG;
	}
	c->keys = xcalloc(n, sizeof(*c->keys));
	for (size_t i = 0; i < n; i++) {
		fhir_node_t *k = fhir_array_at(keys, i), *kid, *alg, *use;
		const char *why;
		EVP_PKEY *key;

		if (jwk_import(k, &key, &why) < 0) {
			*errmsg = xasprintf("%s: client %s: key %zu: %s", where, c->id, i, why);
			return -FG_ECONFIG;
		}
		c->keys[c->nkeys].key = key;
		kid = fhir_object_get_cstr(k, "kid");
		if (kid != NULL)
			c->keys[c->nkeys].kid =
			    xmemdup0(fhir_node_text(kid).ptr, fhir_node_text(kid).len);
		c->nkeys++;
		alg = fhir_object_get_cstr(k, "alg");
		use = fhir_object_get_cstr(k, "use");
		if ((alg != NULL &&
		     jwt_alg_from_name(fhir_node_text(alg)) != jwt_alg_of_key(key)) ||
		    (use != NULL && !slice_eq_cstr(fhir_node_text(use), "sig"))) {
			*errmsg = xasprintf("%s: client %s: key %zu: alg must be RS384 for RSA and "
					    "ES384 for EC P-384 keys, use must be sig",
					    where, c->id, i);
			return -FG_ECONFIG;
		}
	}
	return 0;
}

static bool
patient_id_ok(const char *s)
{
	size_t n = strlen(s);

	return n > 0 && n <= 64 &&
	       strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-.") == n;
}

static int
client_load(client_list_t *l, arena_t *ar, const char *path, const fhir_node_t *o, char **errmsg)
{
	client_t *c = &l->v[l->n];
	const char *id = member_str(ar, o, "client_id"), *scope = member_str(ar, o, "scope");
	const char *patient = member_str(ar, o, "patient"), *jwks_file;
	fhir_node_t *jwks = fhir_object_get_cstr(o, "jwks");
	slice_t bad;

	if (id == NULL || *id == '\0') {
		*errmsg = xasprintf("%s: client %zu has no client_id", path, l->n);
		return -FG_ECONFIG;
	}
	for (size_t i = 0; i < l->n; i++)
		if (strcmp(l->v[i].id, id) == 0) {
			*errmsg = xasprintf("%s: client_id %s is registered twice", path, id);
			return -FG_ECONFIG;
		}
	c->id = xstrdup(id);
	l->n++;
	if (scope == NULL || scope_set_parse(slice_cstr(scope), &c->allowed, &bad) < 0 ||
	    c->allowed.n == 0) {
		*errmsg = xasprintf("%s: client %s: \"scope\" must list the allowed SMART scopes "
				    "(system/*.rs, patient/Observation.read, ...)%s%.*s",
				    path, id, scope != NULL ? "; bad: " : "",
				    scope != NULL ? (int)bad.len : 0, scope != NULL ? bad.ptr : "");
		return -FG_ECONFIG;
	}
	if (patient != NULL) {
		if (!patient_id_ok(patient)) {
			*errmsg = xasprintf("%s: client %s: patient is not a FHIR id", path, id);
			return -FG_ECONFIG;
		}
		c->patient = xstrdup(patient);
	}
	jwks_file = member_str(ar, o, "jwks_file");
	if (jwks_file != NULL && jwks == NULL) {
		/* Relative to the clients file. */
		const char *slash = strrchr(path, '/');
		char *full = jwks_file[0] == '/' || slash == NULL
				 ? xstrdup(jwks_file)
				 : xasprintf("%.*s/%s", (int)(slash - path), path, jwks_file);
		int rc = json_file(ar, full, &jwks, errmsg);

		if (rc < 0) {
			free(full);
			return rc;
		}
		rc = client_keys_load(c, jwks, full, errmsg);
		free(full);
		return rc;
	}
	if (jwks == NULL || fhir_node_kind(jwks) != FHIR_OBJECT) {
		*errmsg = xasprintf("%s: client %s needs \"jwks\" (an object) or \"jwks_file\"",
				    path, id);
		return -FG_ECONFIG;
	}
	return client_keys_load(c, jwks, path, errmsg);
}

static void
clients_free(client_list_t *l)
{
	for (size_t i = 0; i < l->n; i++)
		client_clear(&l->v[i]);
	free(l->v);
	l->v = NULL;
	l->n = 0;
}

/* Loads a clients file into l (empty before); on failure l holds what loaded, to be freed. */
static int
clients_load(client_list_t *l, const char *path, char **errmsg)
{
	arena_t *ar = arena_new(0);
	fhir_node_t *doc, *list;
	size_t n;
	int rc = json_file(ar, path, &doc, errmsg);

	if (rc == 0) {
		list = fhir_object_get_cstr(doc, "clients");
		if (fhir_node_kind(doc) != FHIR_OBJECT || list == NULL ||
		    fhir_node_kind(list) != FHIR_ARRAY) {
			*errmsg = xasprintf("%s: expected {\"clients\": [...]}", path);
			rc = -FG_ECONFIG;
		}
	}
	if (rc == 0) {
		n = fhir_array_len(list);
		l->v = xcalloc(n ? n : 1, sizeof(*l->v));
		for (size_t i = 0; rc == 0 && i < n; i++) {
			fhir_node_t *o = fhir_array_at(list, i);

			if (fhir_node_kind(o) != FHIR_OBJECT) {
				*errmsg = xasprintf("%s: client %zu is not an object", path, i);
				rc = -FG_ECONFIG;
			} else
				rc = client_load(l, ar, path, o, errmsg);
		}
	}
	arena_free(ar);
	return rc;
}

static const client_t *
client_find(const auth_t *a, slice_t id)
{
	for (size_t i = 0; i < a->clients.n; i++)
		if (slice_eq_cstr(id, a->clients.v[i].id))
			return &a->clients.v[i];
	return NULL;
}

/* ---- setup ---- */

int
auth_new(const config_t *cfg, auth_t **out, char **errmsg)
{
	auth_t *a = xcalloc(1, sizeof(*a));
	const char *why;
	unsigned char rnd[12];
	buf_t kid = BUF_INIT;
	int rc = 0;

	pthread_mutex_init(&a->mu, NULL);
	pthread_rwlock_init(&a->clients_lock, NULL);
	a->enabled = cfg->auth_enabled != 0;
	a->lifetime_s = (int64_t)(cfg->auth_token_lifetime_ms / 1000);
	a->skew_s = (int64_t)(cfg->auth_clock_skew_ms / 1000);
	a->base_url = xstrdup(cfg->auth_base_url);
	for (size_t n = strlen(a->base_url); n > 0 && a->base_url[n - 1] == '/'; n--)
		a->base_url[n - 1] = '\0';
	*out = a;
	if (!a->enabled) {
		if ((rc = auth_protected_mode_check(cfg, errmsg)) < 0)
			return rc;
		if (cfg->http_listen[0] != '\0')
			log_warn("auth",
				 "auth.enabled = false: the FHIR API answers anybody on %s without "
				 "a token (protected mode: loopback only)",
				 cfg->http_listen);
		return 0;
	}
	if (cfg->auth_clients[0] == '\0') {
		*errmsg = xstrdup("auth.enabled = true needs auth.clients (a JSON file of the "
				  "registered clients, see docs/auth.md)");
		return -FG_ECONFIG;
	}
	rc = clients_load(&a->clients, cfg->auth_clients, errmsg);
	if (rc < 0)
		return rc;
	if (cfg->auth_signing_key[0] != '\0') {
		if (jwt_key_load(cfg->auth_signing_key, &a->key, &why) < 0) {
			*errmsg = xasprintf("auth.signing_key %s: %s", cfg->auth_signing_key, why);
			return -FG_ECONFIG;
		}
	} else {
		a->key = jwt_key_generate();
		if (a->key == NULL) {
			*errmsg = xstrdup("cannot generate an EC P-384 key");
			return -FG_ECONFIG;
		}
		log_warn("auth", "auth.signing_key is empty: access tokens are signed with an "
				 "ephemeral key and stop working when the process exits");
	}
	/* A random kid, so that a client can tell tokens of a restarted ephemeral key apart. */
	RAND_bytes(rnd, sizeof(rnd));
	b64url_encode(&kid, rnd, sizeof(rnd));
	snprintf(a->kid, sizeof(a->kid), "%s", kid.data);
	buf_free(&kid);
	a->replay = xcalloc(REPLAY_MAX, sizeof(*a->replay));
	log_info("auth", "authorization on: %zu clients, access tokens %s, lifetime %llds",
		 a->clients.n, jwt_alg_name(jwt_alg_of_key(a->key)), (long long)a->lifetime_s);
	return 0;
}

void
auth_free(auth_t *a)
{
	if (a == NULL)
		return;
	clients_free(&a->clients);
	pthread_rwlock_destroy(&a->clients_lock);
	EVP_PKEY_free(a->key);
	free(a->base_url);
	free(a->replay);
	pthread_mutex_destroy(&a->mu);
	free(a);
}

int
auth_clients_reload(auth_t *a, const char *path, char **errmsg)
{
	client_list_t fresh = {NULL, 0}, old;
	int rc;

	if (!a->enabled)
		return 0;
	if (path[0] == '\0') {
		*errmsg = xstrdup("auth.clients is empty");
		return -FG_ECONFIG;
	}
	rc = clients_load(&fresh, path, errmsg);
	if (rc < 0) {
		clients_free(&fresh);
		return rc;
	}
	pthread_rwlock_wrlock(&a->clients_lock);
	old = a->clients;
	a->clients = fresh;
	pthread_rwlock_unlock(&a->clients_lock);
	clients_free(&old);
	log_info("auth", "clients reloaded from %s: %zu clients", path, fresh.n);
	return 0;
}

bool
auth_is_enabled(const auth_t *a)
{
	return a != NULL && a->enabled;
}

const char *
auth_base_url(const auth_t *a, arena_t *ar, slice_t host)
{
	if (a->base_url[0] != '\0')
		return a->base_url;
	if (host.len == 0)
		host = SLICE_LIT("localhost");
	return arena_printf(ar, "http://%.*s", (int)host.len, host.ptr);
}

/* ---- the replay cache ---- */

/* Records client+jti until `until`; false when it is there already (a replay) or the cache
 * is full of unexpired entries. */
static bool
replay_record(auth_t *a, slice_t client, slice_t jti, int64_t now, int64_t until, bool *full)
{
	unsigned char d[32];
	unsigned int dlen = 0;
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	size_t free_slot = SIZE_MAX;
	bool ok = true;

	*full = false;
	EVP_DigestInit_ex(md, EVP_sha256(), NULL);
	EVP_DigestUpdate(md, client.ptr, client.len);
	EVP_DigestUpdate(md, "", 1);
	EVP_DigestUpdate(md, jti.ptr, jti.len);
	EVP_DigestFinal_ex(md, d, &dlen);
	EVP_MD_CTX_free(md);
	pthread_mutex_lock(&a->mu);
	for (size_t i = 0; i < a->nreplay; i++) {
		if (a->replay[i].until < now) {
			if (free_slot == SIZE_MAX)
				free_slot = i;
			continue;
		}
		if (memcmp(a->replay[i].digest, d, sizeof(d)) == 0) {
			ok = false;
			break;
		}
	}
	if (ok) {
		if (free_slot == SIZE_MAX && a->nreplay < REPLAY_MAX)
			free_slot = a->nreplay++;
		if (free_slot == SIZE_MAX) {
			ok = false;
			*full = true;
		} else {
			memcpy(a->replay[free_slot].digest, d, sizeof(d));
			a->replay[free_slot].until = until;
		}
	}
	pthread_mutex_unlock(&a->mu);
	return ok;
}

/* ---- the token endpoint ---- */

/* Refusals are logged, but a client (or anybody) hammering the endpoint must not flood the
 * log: one rate limit for all of them. */
static bool
refusal_log_allow(auth_t *a)
{
	bool ok;

	if (!log_enabled(LOG_INFO))
		return false;
	pthread_mutex_lock(&a->mu);
	ok = log_ratelimit_allow(&a->refused_rl);
	pthread_mutex_unlock(&a->mu);
	return ok;
}

static int
oauth_error(arena_t *ar, buf_t *out, int status, const char *error, const char *desc)
{
	fhir_node_t *o = fhir_object_new(ar);
	char *d = arena_strndup(ar, desc, strlen(desc));

	fhir_object_set_cstr(ar, o, "error", fhir_string_new(ar, slice_cstr(error)));
	/* The text may quote the request (a scope, the Host): printable ASCII only, so that the
	 * JSON is valid whatever bytes came in. */
	for (char *p = d; *p != '\0'; p++)
		if (*p < 0x20 || *p > 0x7e)
			*p = '?';
	fhir_object_set_cstr(ar, o, "error_description", fhir_string_new(ar, slice_cstr(d)));
	fhir_json_write(o, false, out);
	return status;
}

/* Whether aud (a string, or an array of strings) holds want. */
static bool
aud_has(const fhir_node_t *aud, const char *want)
{
	if (aud != NULL && fhir_node_kind(aud) == FHIR_STRING)
		return slice_eq_cstr(fhir_node_text(aud), want);
	for (size_t i = 0;
	     aud != NULL && fhir_node_kind(aud) == FHIR_ARRAY && i < fhir_array_len(aud); i++) {
		fhir_node_t *x = fhir_array_at(aud, i);

		if (fhir_node_kind(x) == FHIR_STRING && slice_eq_cstr(fhir_node_text(x), want))
			return true;
	}
	return false;
}

/* exp, nbf and iat against now with the skew; NULL when fine, else why not. */
static const char *
times_check(const auth_t *a, const jwt_t *j, int64_t now, int64_t max_ahead, int64_t *exp)
{
	int64_t t;

	if (!jwt_claim_time(j, "exp", exp))
		return "exp is missing";
	if (*exp < now - a->skew_s) /* not exp + skew: exp comes from the peer, it may be huge */
		return "expired";
	if (max_ahead > 0 && *exp > now + max_ahead + a->skew_s)
		return "exp is more than five minutes ahead";
	if (fhir_object_get_cstr(j->claims, "nbf") != NULL &&
	    (!jwt_claim_time(j, "nbf", &t) || t > now + a->skew_s))
		return "not valid yet (nbf)";
	if (fhir_object_get_cstr(j->claims, "iat") != NULL &&
	    (!jwt_claim_time(j, "iat", &t) || t > now + a->skew_s))
		return "issued in the future (iat)";
	return NULL;
}

/* The client key that checks assertion j: by kid, else every key of the right type. */
static bool
assertion_verify(const client_t *c, const jwt_t *j, const char **why)
{
	bool tried = false;

	for (size_t i = 0; i < c->nkeys; i++) {
		if (j->kid.ptr != NULL &&
		    (c->keys[i].kid == NULL || !slice_eq_cstr(j->kid, c->keys[i].kid)))
			continue;
		if (jwt_alg_of_key(c->keys[i].key) != j->alg)
			continue;
		tried = true;
		if (jwt_verify(j, c->keys[i].key, why) == 0)
			return true;
	}
	if (!tried)
		*why = j->kid.ptr != NULL ? "no registered key with this kid and alg"
					  : "no registered key for this alg";
	return false;
}

static void
token_issue(auth_t *a, arena_t *ar, const client_t *c, const scope_set_t *granted, const char *base,
	    int64_t now, buf_t *out)
{
	fhir_node_t *claims = fhir_object_new(ar), *resp = fhir_object_new(ar);
	buf_t scope = BUF_INIT, json = BUF_INIT, token = BUF_INIT, jti = BUF_INIT;
	unsigned char rnd[16];

	RAND_bytes(rnd, sizeof(rnd));
	b64url_encode(&jti, rnd, sizeof(rnd));
	scope_set_format(granted, &scope);
	fhir_object_set_cstr(ar, claims, "iss", fhir_string_new(ar, slice_cstr(base)));
	fhir_object_set_cstr(ar, claims, "sub", fhir_string_new(ar, slice_cstr(c->id)));
	fhir_object_set_cstr(ar, claims, "aud",
			     fhir_string_new(ar, slice_cstr(arena_printf(ar, "%s/fhir", base))));
	fhir_object_set_cstr(ar, claims, "iat", fhir_int_new(ar, now));
	fhir_object_set_cstr(ar, claims, "exp", fhir_int_new(ar, now + a->lifetime_s));
	fhir_object_set_cstr(ar, claims, "jti", fhir_string_new(ar, buf_slice(&jti)));
	fhir_object_set_cstr(ar, claims, "client_id", fhir_string_new(ar, slice_cstr(c->id)));
	fhir_object_set_cstr(ar, claims, "scope", fhir_string_new(ar, buf_slice(&scope)));
	if (c->patient != NULL)
		fhir_object_set_cstr(ar, claims, "patient",
				     fhir_string_new(ar, slice_cstr(c->patient)));
	fhir_json_write(claims, false, &json);
	jwt_sign(a->key, a->kid, buf_slice(&json), &token);
	fhir_object_set_cstr(ar, resp, "access_token", fhir_string_new(ar, buf_slice(&token)));
	fhir_object_set_cstr(ar, resp, "token_type", fhir_string_new(ar, SLICE_LIT("bearer")));
	fhir_object_set_cstr(ar, resp, "expires_in", fhir_int_new(ar, a->lifetime_s));
	fhir_object_set_cstr(ar, resp, "scope", fhir_string_new(ar, buf_slice(&scope)));
	if (c->patient != NULL)
		fhir_object_set_cstr(ar, resp, "patient",
				     fhir_string_new(ar, slice_cstr(c->patient)));
	fhir_json_write(resp, false, out);
	log_info("auth", "token issued client=%s scope=\"%s\"", c->id, scope.data);
	buf_free(&scope);
	buf_free(&json);
	buf_free(&token);
	buf_free(&jti);
}

static int
token_request(auth_t *a, arena_t *ar, slice_t body, slice_t host, int64_t now, buf_t *out)
{
	static const char *const names[] = {"grant_type", "client_assertion_type",
					    "client_assertion", "scope", "client_id"};
	slice_t v[5] = {SLICE_NULL, SLICE_NULL, SLICE_NULL, SLICE_NULL, SLICE_NULL}, k, val, iss,
		sub, jti, bad;
	const char *base = auth_base_url(a, ar, host), *why = NULL, *endpoint;
	http_query_t q;
	jwt_t j;
	const client_t *c;
	scope_set_t *req = arena_alloc(ar, sizeof(*req)), *granted = arena_alloc(ar, sizeof(*req));
	int64_t exp;
	bool full;
	int rc;

	http_query_init(&q, body, ar);
	while (http_query_next(&q, &k, &val))
		for (size_t i = 0; i < 5; i++)
			if (slice_eq_cstr(k, names[i])) {
				if (v[i].ptr != NULL)
					return oauth_error(
					    ar, out, 400, "invalid_request",
					    arena_printf(ar, "%s is given twice", names[i]));
				v[i] = val;
			}
	if (q.err < 0)
		return oauth_error(ar, out, 400, "invalid_request", "bad form encoding");
	if (v[0].ptr == NULL)
		return oauth_error(ar, out, 400, "invalid_request", "grant_type is missing");
	if (!slice_eq_cstr(v[0], "client_credentials"))
		return oauth_error(ar, out, 400, "unsupported_grant_type",
				   "only grant_type=client_credentials is supported");
	if (!slice_eq_cstr(v[1], ASSERTION_TYPE) || v[2].ptr == NULL)
		return oauth_error(ar, out, 400, "invalid_request",
				   "client_assertion_type must be " ASSERTION_TYPE
				   " with a client_assertion (private_key_jwt)");
	if (v[3].ptr == NULL || slice_trim(v[3]).len == 0)
		return oauth_error(ar, out, 400, "invalid_scope", "scope is missing");
	/* From here on the client is not authenticated: invalid_client, without details on
	 * which client ids exist beyond what the log says. */
	if (jwt_parse(ar, v[2], &j, &why) < 0)
		return oauth_error(ar, out, 401, "invalid_client",
				   arena_printf(ar, "client_assertion: %s", why));
	iss = jwt_claim_str(&j, "iss");
	sub = jwt_claim_str(&j, "sub");
	if (iss.ptr == NULL || sub.ptr == NULL || !slice_eq(iss, sub))
		return oauth_error(ar, out, 401, "invalid_client",
				   "client_assertion: iss and sub must both be the client_id");
	if (v[4].ptr != NULL && !slice_eq(v[4], iss))
		return oauth_error(ar, out, 401, "invalid_client",
				   "client_id differs from the assertion's iss");
	c = client_find(a, iss);
	if (c == NULL) {
		if (refusal_log_allow(a))
			log_info("auth", "token refused: unknown client %.*s",
				 (int)(iss.len > 64 ? 64 : iss.len), iss.ptr);
		return oauth_error(ar, out, 401, "invalid_client",
				   "client_assertion: unknown client or bad signature");
	}
	if (!assertion_verify(c, &j, &why)) {
		if (refusal_log_allow(a))
			log_info("auth", "token refused: client=%s: %s", c->id, why);
		return oauth_error(ar, out, 401, "invalid_client",
				   "client_assertion: unknown client or bad signature");
	}
	endpoint = arena_printf(ar, "%s/auth/token", base);
	if (!aud_has(fhir_object_get_cstr(j.claims, "aud"), endpoint))
		return oauth_error(ar, out, 401, "invalid_client",
				   arena_printf(ar, "client_assertion: aud must be %s", endpoint));
	if ((why = times_check(a, &j, now, ASSERTION_MAX_LIFETIME, &exp)) != NULL)
		return oauth_error(ar, out, 401, "invalid_client",
				   arena_printf(ar, "client_assertion: %s", why));
	jti = jwt_claim_str(&j, "jti");
	if (jti.len == 0 || jti.len > JTI_MAX)
		return oauth_error(ar, out, 401, "invalid_client",
				   "client_assertion: jti is missing or too long");
	rc = scope_set_parse(slice_trim(v[3]), req, &bad);
	if (rc < 0)
		return oauth_error(
		    ar, out, 400, "invalid_scope",
		    arena_printf(
			ar, "%.*s: %s", (int)(bad.len > 80 ? 80 : bad.len), bad.ptr,
			rc == -FG_EUNSUPPORTED
			    ? "not supported (resource scopes only, no ?param= constraints)"
			: rc == -FG_ETOOBIG ? "too many scopes"
					    : "not a SMART scope"));
	scope_grant(req, &c->allowed, c->patient != NULL, granted);
	if (granted->n == 0)
		return oauth_error(ar, out, 400, "invalid_scope",
				   "none of the requested scopes is allowed for this client");
	/* Last, so that only authenticated, otherwise valid assertions take cache slots. */
	if (!replay_record(a, iss, jti, now, exp + a->skew_s, &full)) {
		if (full)
			return oauth_error(ar, out, 503, "temporarily_unavailable",
					   "too many assertions in flight: retry shortly");
		if (refusal_log_allow(a))
			log_info("auth", "token refused: client=%s: jti replayed", c->id);
		return oauth_error(ar, out, 401, "invalid_client",
				   "client_assertion: jti was used before (replay)");
	}
	token_issue(a, ar, c, granted, base, now, out);
	return 200;
}

int
auth_token_request(auth_t *a, arena_t *ar, slice_t body, slice_t host, int64_t now, buf_t *out)
{
	int st;

	pthread_rwlock_rdlock(&a->clients_lock);
	st = token_request(a, ar, body, host, now, out);
	pthread_rwlock_unlock(&a->clients_lock);
	return st;
}

/* ---- bearer tokens ---- */

static int
bearer_check(auth_t *a, arena_t *ar, slice_t authorization, slice_t host, int64_t now,
	     auth_grant_t **out, const char **why)
{
	const char *base = auth_base_url(a, ar, host);
	slice_t tok, sub, pat, scope, bad;
	auth_grant_t *g;
	jwt_t j;
	int64_t exp;

	*out = NULL;
	authorization = slice_trim(authorization);
	if (authorization.ptr == NULL || authorization.len < 7 ||
	    !slice_eq_nocase(slice_make(authorization.ptr, 7), SLICE_LIT("Bearer ")))
		return -FG_ENOTFOUND;
	tok = slice_trim(slice_make(authorization.ptr + 7, authorization.len - 7));
	if (jwt_parse(ar, tok, &j, why) < 0)
		return -FG_EINVAL;
	if (jwt_verify(&j, a->key, why) < 0)
		return -FG_EINVAL;
	if (!slice_eq_cstr(jwt_claim_str(&j, "iss"), base)) {
		*why = "issued by another server";
		return -FG_EINVAL;
	}
	if (!aud_has(fhir_object_get_cstr(j.claims, "aud"), arena_printf(ar, "%s/fhir", base))) {
		*why = "not meant for this server (aud)";
		return -FG_EINVAL;
	}
	if ((*why = times_check(a, &j, now, 0, &exp)) != NULL)
		return -FG_EINVAL;
	sub = jwt_claim_str(&j, "sub");
	scope = jwt_claim_str(&j, "scope");
	if (sub.ptr == NULL || scope.ptr == NULL || client_find(a, sub) == NULL) {
		*why = "unknown client";
		return -FG_EINVAL;
	}
	g = arena_zalloc(ar, sizeof(*g));
	if (scope_set_parse(scope, &g->scopes, &bad) < 0) {
		*why = "bad scope claim";
		return -FG_EINVAL;
	}
	g->client_id = arena_strndup(ar, sub.ptr, sub.len);
	pat = jwt_claim_str(&j, "patient");
	if (pat.ptr != NULL)
		g->patient = arena_strndup(ar, pat.ptr, pat.len);
	tok = jwt_claim_str(&j, "jti");
	g->jti = tok.ptr != NULL ? arena_strndup(ar, tok.ptr, tok.len) : "";
	*out = g;
	return 0;
}

int
auth_bearer_check(auth_t *a, arena_t *ar, slice_t authorization, slice_t host, int64_t now,
		  auth_grant_t **out, const char **why)
{
	int rc;

	pthread_rwlock_rdlock(&a->clients_lock);
	rc = bearer_check(a, ar, authorization, host, now, out, why);
	pthread_rwlock_unlock(&a->clients_lock);
	return rc;
}

/* ---- discovery ---- */

static fhir_node_t *
str_array(arena_t *ar, const char *const *v)
{
	fhir_node_t *arr = fhir_array_new(ar);

	for (size_t i = 0; v[i] != NULL; i++)
		fhir_array_append(ar, arr, fhir_string_new(ar, slice_cstr(v[i])));
	return arr;
}

void
auth_smart_configuration(const auth_t *a, arena_t *ar, slice_t host, buf_t *out)
{
	static const char *const methods[] = {"private_key_jwt", NULL};
	static const char *const algs[] = {"RS384", "ES384", NULL};
	static const char *const grants[] = {"client_credentials", NULL};
	static const char *const scopes[] = {"system/*.read",
					     "system/*.write",
					     "system/*.*",
					     "system/*.rs",
					     "system/*.cruds",
					     "user/*.rs",
					     "patient/*.read",
					     "patient/*.rs",
					     "system/AuditEvent.rs",
					     SCOPE_ADMIN,
					     NULL};
	static const char *const caps[] = {"client-confidential-asymmetric", "permission-v1",
					   "permission-v2", NULL};
	const char *base = auth_base_url(a, ar, host);
	fhir_node_t *o = fhir_object_new(ar);

	fhir_object_set_cstr(ar, o, "issuer", fhir_string_new(ar, slice_cstr(base)));
	fhir_object_set_cstr(
	    ar, o, "token_endpoint",
	    fhir_string_new(ar, slice_cstr(arena_printf(ar, "%s/auth/token", base))));
	fhir_object_set_cstr(ar, o, "token_endpoint_auth_methods_supported",
			     str_array(ar, methods));
	fhir_object_set_cstr(ar, o, "token_endpoint_auth_signing_alg_values_supported",
			     str_array(ar, algs));
	fhir_object_set_cstr(ar, o, "grant_types_supported", str_array(ar, grants));
	fhir_object_set_cstr(ar, o, "scopes_supported", str_array(ar, scopes));
	fhir_object_set_cstr(ar, o, "capabilities", str_array(ar, caps));
	fhir_json_write(o, true, out);
}
