/* TLS contexts for the listeners and for `fhirgate send`, and the bufferevent helpers. */
#include "config.h"

#include "gateway/tls.h"

#include <arpa/inet.h>
#include <sys/socket.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "lib/err.h"
#include "lib/log.h"
#include "lib/slice.h"
#include "lib/xalloc.h"

/* Mozilla's "intermediate" profile for TLS 1.2 (forward secrecy, AEAD only: no RC4, 3DES or
 * CBC); TLS 1.3 keeps OpenSSL's default suites, which are all AEAD. */
#define TLS12_CIPHERS                                                                              \
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:" \
	"ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"   \
	"DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305"

/* The subject allow-list of a context, kept in the context's ex_data so that a connection is
 * judged by the list loaded with the context that made it. */
typedef struct {
	char **entries;
	size_t n;
} subjects_t;

struct tls_server {
	pthread_mutex_t mu; /* guards ctx: reloads swap it while I/O threads accept */
	SSL_CTX *ctx;       /* one reference held here; each SSL holds its own */
};

struct tls_client {
	SSL_CTX *ctx;
	bool insecure;
};

static pthread_once_t ex_once = PTHREAD_ONCE_INIT;
static int ex_subjects = -1;

static void
subjects_free(subjects_t *s)
{
	if (s == NULL)
		return;
	for (size_t i = 0; i < s->n; i++)
		free(s->entries[i]);
	free(s->entries);
	free(s);
}

static void
ex_subjects_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
	subjects_free(ptr);
}

static void
ex_init(void)
{
	ex_subjects = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, ex_subjects_free);
}

/* The first OpenSSL error of this thread as text, the most specific (the queue is then
 * cleared). */
static void
ssl_error_text(char *out, size_t cap)
{
	unsigned long e = ERR_peek_error();
	const char *reason = e ? ERR_reason_error_string(e) : NULL;

	snprintf(out, cap, "%s", reason ? reason : e ? "OpenSSL error" : "unknown error");
	ERR_clear_error();
}

/* Checks that path can be opened, for an error that names the file and the system's reason. */
static int
file_check(const char *label, const char *path, char **errmsg)
{
	FILE *f;

	if (path == NULL || path[0] == '\0') {
		*errmsg = xasprintf("%s is not set", label);
		return -FG_ECONFIG;
	}
	f = fopen(path, "r");
	if (f == NULL) {
		*errmsg = xasprintf("%s: %s: %s", label, path, strerror(errno));
		return -FG_ECONFIG;
	}
	fclose(f);
	return 0;
}

static int
ssl_fail(const char *label, const char *path, const char *doing, char **errmsg)
{
	char why[256];

	ssl_error_text(why, sizeof(why));
	*errmsg = xasprintf("%s: %s: %s (%s)", label, path, doing, why);
	return -FG_ECONFIG;
}

static int
key_mismatch(const char *label, const tls_server_opts_t *o, char **errmsg)
{
	ERR_clear_error();
	*errmsg = xasprintf("%s: %s does not match the certificate %s", label, o->key, o->cert);
	return -FG_ECONFIG;
}

static void
ctx_harden(SSL_CTX *ctx)
{
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
	if (SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS) != 1)
		abort(); /* a static list every supported OpenSSL knows */
}

/* The ';'-separated entries of text, trimmed; NULL (caller owns) when there are none. */
static subjects_t *
subjects_parse(const char *text)
{
	slice_t rest = slice_cstr(text);
	subjects_t *s = NULL;

	while (rest.len > 0) {
		const char *semi = memchr(rest.ptr, ';', rest.len);
		size_t n = semi ? (size_t)(semi - rest.ptr) : rest.len;
		slice_t item = slice_trim(slice_make(rest.ptr, n));

		rest = semi ? slice_make(semi + 1, rest.len - n - 1) : SLICE_NULL;
		if (item.len == 0)
			continue;
		if (s == NULL)
			s = xcalloc(1, sizeof(*s));
		s->entries = xreallocarray(s->entries, s->n + 1, sizeof(*s->entries));
		s->entries[s->n++] = xmemdup0(item.ptr, item.len);
	}
	return s;
}

/* Builds a server context from the files of o. */
static int
server_ctx_new(const tls_server_opts_t *o, SSL_CTX **out, char **errmsg)
{
	const char *w = o->what;
	bool has_ca = o->ca != NULL && o->ca[0] != '\0';
	subjects_t *subjects = NULL;
	SSL_CTX *ctx;
	X509 *leaf;
	int mode;
	char lcert[64], lkey[64], lca[64];

	snprintf(lcert, sizeof(lcert), "%s.cert", w);
	snprintf(lkey, sizeof(lkey), "%s.key", w);
	snprintf(lca, sizeof(lca), "%s.ca", w);
	pthread_once(&ex_once, ex_init);
	ERR_clear_error();
	if (file_check(lcert, o->cert, errmsg) < 0 || file_check(lkey, o->key, errmsg) < 0 ||
	    (has_ca && file_check(lca, o->ca, errmsg) < 0))
		return -FG_ECONFIG;
	if (o->client_auth != TLS_CLIENT_AUTH_NONE && !has_ca) {
		*errmsg = xasprintf("%s.client_auth needs %s.ca (the CA client certificates must "
				    "chain to)",
				    w, w);
		return -FG_ECONFIG;
	}
	subjects = subjects_parse(o->allow_subjects);
	if (subjects != NULL && o->client_auth == TLS_CLIENT_AUTH_NONE) {
		subjects_free(subjects);
		*errmsg =
		    xasprintf("%s.allow_subjects needs %s.client_auth = optional or require", w, w);
		return -FG_ECONFIG;
	}
	ctx = SSL_CTX_new(TLS_server_method());
	if (ctx == NULL)
		abort();
	ctx_harden(ctx);
	SSL_CTX_set_dh_auto(ctx, 1);
	/* Needed for session resumption when client certificates are asked for. */
	SSL_CTX_set_session_id_context(ctx, (const unsigned char *)w, (unsigned)strlen(w));
	SSL_CTX_set_ex_data(ctx, ex_subjects, subjects);
	if (SSL_CTX_use_certificate_chain_file(ctx, o->cert) != 1) {
		SSL_CTX_free(ctx);
		return ssl_fail(lcert, o->cert, "not a PEM certificate", errmsg);
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, o->key, SSL_FILETYPE_PEM) != 1) {
		unsigned long e = ERR_peek_last_error();

		SSL_CTX_free(ctx);
		if (ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH)
			return key_mismatch(lkey, o, errmsg);
		return ssl_fail(lkey, o->key, "not a PEM private key (or encrypted)", errmsg);
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		SSL_CTX_free(ctx);
		return key_mismatch(lkey, o, errmsg);
	}
	if (has_ca) {
		STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(o->ca);

		if (names == NULL || SSL_CTX_load_verify_locations(ctx, o->ca, NULL) != 1) {
			sk_X509_NAME_pop_free(names, X509_NAME_free);
			SSL_CTX_free(ctx);
			return ssl_fail(lca, o->ca, "no PEM CA certificate", errmsg);
		}
		SSL_CTX_set_client_CA_list(ctx, names);
	}
	mode = o->client_auth == TLS_CLIENT_AUTH_NONE ? SSL_VERIFY_NONE
	       : o->client_auth == TLS_CLIENT_AUTH_OPTIONAL
		   ? SSL_VERIFY_PEER
		   : SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
	SSL_CTX_set_verify(ctx, mode, NULL);
	leaf = SSL_CTX_get0_certificate(ctx);
	if (leaf != NULL && X509_cmp_current_time(X509_get0_notAfter(leaf)) < 0)
		log_warn("tls", "%s.cert: %s has expired: clients will refuse it", w, o->cert);
	*out = ctx;
	return 0;
}

int
tls_server_new(const tls_server_opts_t *o, tls_server_t **out, char **errmsg)
{
	tls_server_t *t;
	SSL_CTX *ctx;
	int rc = server_ctx_new(o, &ctx, errmsg);

	if (rc < 0)
		return rc;
	t = xcalloc(1, sizeof(*t));
	pthread_mutex_init(&t->mu, NULL);
	t->ctx = ctx;
	*out = t;
	return 0;
}

int
tls_server_reload(tls_server_t *t, const tls_server_opts_t *o, char **errmsg)
{
	SSL_CTX *ctx, *old;
	int rc = server_ctx_new(o, &ctx, errmsg);

	if (rc < 0)
		return rc;
	/* Never change a context that is in use (OpenSSL does not allow that across threads):
	 * swap in a new one; connections made with the old one hold references to it. */
	pthread_mutex_lock(&t->mu);
	old = t->ctx;
	t->ctx = ctx;
	pthread_mutex_unlock(&t->mu);
	SSL_CTX_free(old);
	return 0;
}

void
tls_server_free(tls_server_t *t)
{
	if (t == NULL)
		return;
	SSL_CTX_free(t->ctx);
	pthread_mutex_destroy(&t->mu);
	free(t);
}

struct bufferevent *
tls_server_bev_new(tls_server_t *t, struct event_base *base, evutil_socket_t fd)
{
	struct bufferevent *bev;
	SSL_CTX *ctx;
	SSL *ssl;

	pthread_mutex_lock(&t->mu);
	ctx = t->ctx;
	SSL_CTX_up_ref(ctx);
	pthread_mutex_unlock(&t->mu);
	ssl = SSL_new(ctx);
	SSL_CTX_free(ctx); /* the SSL holds its own reference now */
	if (ssl == NULL)
		abort();
	bev = bufferevent_openssl_socket_new(base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
					     BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL)
		abort(); /* libevent is out of memory: as xmalloc does */
	/* Senders that simply close the TCP connection are common; that is an EOF, not an error. */
	bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
	return bev;
}

static bool
name_matches(const char *entry, const char *dn, const char *cn)
{
	if (strchr(entry, '=') != NULL)
		return strcasecmp(entry, dn) == 0;
	return cn[0] != '\0' && strcasecmp(entry, cn) == 0;
}

bool
tls_bev_peer_is_allowed(struct bufferevent *bev, char *subject, size_t cap)
{
	SSL *ssl = bufferevent_openssl_get_ssl(bev);
	const subjects_t *s;
	X509 *peer;
	char cn[256] = "", *dn = NULL;
	bool ok = false;

	snprintf(subject, cap, "-");
	if (ssl == NULL)
		return true;
	s = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ex_subjects);
	peer = SSL_get1_peer_certificate(ssl);
	if (peer != NULL) {
		X509_NAME *name = X509_get_subject_name(peer);
		BIO *mem = BIO_new(BIO_s_mem());
		long n;
		char *p;

		X509_NAME_print_ex(mem, name, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB);
		n = BIO_get_mem_data(mem, &p);
		dn = xmemdup0(p, n > 0 ? (size_t)n : 0);
		BIO_free(mem);
		if (X509_NAME_get_text_by_NID(name, NID_commonName, cn, sizeof(cn)) < 0)
			cn[0] = '\0';
		snprintf(subject, cap, "%s", dn);
		X509_free(peer);
	}
	if (s == NULL) {
		ok = true;
	} else if (dn != NULL && SSL_get_verify_result(ssl) == X509_V_OK) {
		for (size_t i = 0; !ok && i < s->n; i++)
			ok = name_matches(s->entries[i], dn, cn);
	}
	free(dn);
	ERR_clear_error();
	return ok;
}

bool
tls_bev_is_tls(struct bufferevent *bev)
{
	return bufferevent_openssl_get_ssl(bev) != NULL;
}

void
tls_bev_error(struct bufferevent *bev, char *out, size_t cap)
{
	SSL *ssl = bufferevent_openssl_get_ssl(bev);
	unsigned long e, last = 0;
	long v;

	out[0] = '\0';
	if (ssl == NULL)
		return;
	/* libevent also queues SSL_get_error() codes (library 0): only OpenSSL's own errors say
	 * something; a system error shows in errno instead. */
	while ((e = bufferevent_get_openssl_error(bev)) != 0)
		if (ERR_GET_LIB(e) != 0)
			last = e;
	if (last != 0) {
		const char *r = ERR_reason_error_string(last);

		if (r != NULL)
			snprintf(out, cap, "%s", r);
		else
			ERR_error_string_n(last, out, cap);
	}
	v = SSL_get_verify_result(ssl);
	if (v != X509_V_OK) {
		size_t len = strlen(out);

		snprintf(out + len, cap - len, "%s%s", len ? ": " : "",
			 X509_verify_cert_error_string(v));
	}
}

/* Sends close_notify if the connection is established (never during a handshake or after a
 * fatal error, where OpenSSL refuses and leaves errors on the thread's queue). */
static void
close_notify(struct bufferevent *bev)
{
	SSL *ssl = bufferevent_openssl_get_ssl(bev);

	if (ssl == NULL || !SSL_is_init_finished(ssl) ||
	    (SSL_get_shutdown(ssl) & SSL_SENT_SHUTDOWN) != 0)
		return;
	/* One call writes the alert; we do not wait for the peer's (libevent-book's advice). */
	SSL_set_shutdown(ssl, SSL_RECEIVED_SHUTDOWN);
	SSL_shutdown(ssl);
	ERR_clear_error();
}

void
tls_bev_shutdown_write(struct bufferevent *bev)
{
	SSL *ssl = bufferevent_openssl_get_ssl(bev);

	if (ssl != NULL && SSL_is_init_finished(ssl) &&
	    (SSL_get_shutdown(ssl) & SSL_SENT_SHUTDOWN) == 0) {
		/* Keep reading the peer's data after our alert: only mark what we sent. */
		SSL_shutdown(ssl);
		ERR_clear_error();
	}
	shutdown(bufferevent_getfd(bev), SHUT_WR);
}

void
tls_bev_free(struct bufferevent *bev)
{
	close_notify(bev);
	bufferevent_free(bev);
}

/* ---- client ---- */

int
tls_client_new(const tls_client_opts_t *o, tls_client_t **out, char **errmsg)
{
	tls_client_t *c;
	SSL_CTX *ctx;

	ERR_clear_error();
	if ((o->ca != NULL && file_check("--ca", o->ca, errmsg) < 0) ||
	    (o->cert != NULL && file_check("--cert", o->cert, errmsg) < 0) ||
	    (o->key != NULL && file_check("--key", o->key, errmsg) < 0))
		return -FG_ECONFIG;
	if ((o->cert == NULL) != (o->key == NULL)) {
		*errmsg = xasprintf("--cert and --key go together");
		return -FG_ECONFIG;
	}
	ctx = SSL_CTX_new(TLS_client_method());
	if (ctx == NULL)
		abort();
	ctx_harden(ctx);
	if (o->ca != NULL ? SSL_CTX_load_verify_locations(ctx, o->ca, NULL) != 1
			  : SSL_CTX_set_default_verify_paths(ctx) != 1) {
		SSL_CTX_free(ctx);
		return ssl_fail("--ca", o->ca ? o->ca : "(system)", "no PEM CA certificate",
				errmsg);
	}
	if (o->cert != NULL && SSL_CTX_use_certificate_chain_file(ctx, o->cert) != 1) {
		SSL_CTX_free(ctx);
		return ssl_fail("--cert", o->cert, "not a PEM certificate", errmsg);
	}
	if (o->key != NULL && (SSL_CTX_use_PrivateKey_file(ctx, o->key, SSL_FILETYPE_PEM) != 1 ||
			       SSL_CTX_check_private_key(ctx) != 1)) {
		SSL_CTX_free(ctx);
		return ssl_fail("--key", o->key, "not the PEM key of --cert", errmsg);
	}
	SSL_CTX_set_verify(ctx, o->insecure ? SSL_VERIFY_NONE : SSL_VERIFY_PEER, NULL);
	c = xcalloc(1, sizeof(*c));
	c->ctx = ctx;
	c->insecure = o->insecure;
	*out = c;
	return 0;
}

void
tls_client_free(tls_client_t *c)
{
	if (c == NULL)
		return;
	SSL_CTX_free(c->ctx);
	free(c);
}

struct bufferevent *
tls_client_bev_new(tls_client_t *c, struct event_base *base, const char *host)
{
	SSL *ssl = SSL_new(c->ctx);
	unsigned char ip[16];
	bool is_ip = inet_pton(AF_INET, host, ip) == 1 || inet_pton(AF_INET6, host, ip) == 1;
	struct bufferevent *bev;

	if (ssl == NULL)
		abort();
	if (!is_ip)
		SSL_set_tlsext_host_name(ssl, host);
	if (!c->insecure) {
		if (is_ip)
			X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host);
		else {
			SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
			SSL_set1_host(ssl, host);
		}
	}
	bev = bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
					     BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL)
		abort();
	return bev;
}
