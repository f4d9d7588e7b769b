/* Address allow-lists: parsing "addr[/prefix]" lists and matching peers against them. */
#include "config.h"

#include "lib/cidr.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <stdlib.h>
#include <string.h>

#include "lib/err.h"
#include "lib/slice.h"
#include "lib/xalloc.h"

typedef struct {
	uint8_t addr[16]; /* IPv4 in the first 4 bytes */
	unsigned prefix;  /* bits that must match */
	bool v6;
} cidr_entry_t;

struct cidr_list {
	cidr_entry_t *e;
	size_t n;
};

/* Whether the first prefix bits of a and b are equal. */
static bool
prefix_equal(const uint8_t *a, const uint8_t *b, unsigned prefix)
{
	unsigned bytes = prefix / 8, bits = prefix % 8;

	if (memcmp(a, b, bytes) != 0)
		return false;
	if (bits == 0)
		return true;
	return ((a[bytes] ^ b[bytes]) & (uint8_t)(0xff << (8 - bits))) == 0;
}

typedef enum {
	ENTRY_OK,
	ENTRY_BAD,      /* not an address, or a bad prefix */
	ENTRY_HOSTBITS, /* an address with bits set below its prefix; e holds the network */
} entry_status_t;

static entry_status_t
entry_parse(slice_t s, cidr_entry_t *e)
{
	const char *slash = memchr(s.ptr, '/', s.len);
	size_t alen = slash ? (size_t)(slash - s.ptr) : s.len;
	char addr[INET6_ADDRSTRLEN + 1];
	unsigned max;
	uint8_t host[16];

	if (alen == 0 || alen >= sizeof(addr))
		return ENTRY_BAD;
	memcpy(addr, s.ptr, alen);
	addr[alen] = '\0';
	memset(e, 0, sizeof(*e));
	if (inet_pton(AF_INET, addr, e->addr) == 1) {
		max = 32;
	} else if (inet_pton(AF_INET6, addr, e->addr) == 1) {
		e->v6 = true;
		max = 128;
	} else {
		return ENTRY_BAD;
	}
	e->prefix = max;
	if (slash != NULL) {
		uint64_t p;

		if (!slice_to_u64(slice_make(slash + 1, s.len - alen - 1), &p) || p > max)
			return ENTRY_BAD;
		e->prefix = (unsigned)p;
	}
	/* The bits below the prefix must be zero: 10.1.2.3/8 is more likely a typo than meant. */
	memcpy(host, e->addr, sizeof(host));
	for (unsigned b = e->prefix; b < max; b++)
		host[b / 8] &= (uint8_t) ~(0x80u >> (b % 8));
	if (memcmp(host, e->addr, max / 8) != 0) {
		memcpy(e->addr, host, sizeof(host)); /* for the hint */
		return ENTRY_HOSTBITS;
	}
	return ENTRY_OK;
}

int
cidr_list_parse(const char *text, cidr_list_t **out, char **errmsg)
{
	slice_t rest = slice_cstr(text);
	cidr_list_t *l = NULL;

	*out = NULL;
	if (slice_trim(rest).len == 0)
		return 0; /* empty: everyone */
	for (bool more = true; more;) {
		const char *comma = memchr(rest.ptr, ',', rest.len);
		size_t n = comma ? (size_t)(comma - rest.ptr) : rest.len;
		slice_t item = slice_trim(slice_make(rest.ptr, n));
		cidr_entry_t e;
		entry_status_t st;

		more = comma != NULL;
		rest = more ? slice_make(comma + 1, rest.len - n - 1) : SLICE_NULL;
		st = item.len == 0 ? ENTRY_BAD : entry_parse(item, &e);
		if (st == ENTRY_HOSTBITS) {
			char net[INET6_ADDRSTRLEN];

			inet_ntop(e.v6 ? AF_INET6 : AF_INET, e.addr, net, sizeof(net));
			*errmsg = xasprintf("'%.*s' has address bits set past the prefix (is "
					    "%s/%u meant?)",
					    (int)item.len, item.ptr, net, e.prefix);
		} else if (st == ENTRY_BAD) {
			*errmsg = xasprintf("'%.*s' is not an address or address/prefix (such as "
					    "10.0.0.0/8, 192.168.1.20 or fd00::/8)",
					    (int)item.len, item.ptr);
		}
		if (st != ENTRY_OK) {
			cidr_list_free(l);
			return -FG_EINVAL;
		}
		if (l == NULL)
			l = xcalloc(1, sizeof(*l));
		l->e = xreallocarray(l->e, l->n + 1, sizeof(*l->e));
		l->e[l->n++] = e;
	}
	*out = l;
	return 0;
}

void
cidr_list_free(cidr_list_t *l)
{
	if (l == NULL)
		return;
	free(l->e);
	free(l);
}

size_t
cidr_list_count(const cidr_list_t *l)
{
	return l ? l->n : 0;
}

bool
cidr_list_allows(const cidr_list_t *l, const struct sockaddr *sa)
{
	static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	const uint8_t *v4 = NULL, *v6 = NULL;

	if (l == NULL)
		return true;
	if (sa->sa_family == AF_INET) {
		v4 = (const uint8_t *)&((const struct sockaddr_in *)(const void *)sa)->sin_addr;
	} else if (sa->sa_family == AF_INET6) {
		v6 = ((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr.s6_addr;
		if (memcmp(v6, v4mapped, sizeof(v4mapped)) == 0)
			v4 = v6 + 12;
	}
	for (size_t i = 0; i < l->n; i++) {
		const cidr_entry_t *e = &l->e[i];

		if (e->v6 ? v6 != NULL && prefix_equal(e->addr, v6, e->prefix)
			  : v4 != NULL && prefix_equal(e->addr, v4, e->prefix))
			return true;
	}
	return false;
}
