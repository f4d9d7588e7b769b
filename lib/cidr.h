/* Address allow-lists: "10.0.0.0/8, 127.0.0.1, ::1, fd00::/8" parsed once, matched per peer. */
#ifndef LIB_CIDR_H
#define LIB_CIDR_H

#include <sys/socket.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct cidr_list cidr_list_t;

/* Parses a comma-separated list of IPv4/IPv6 addresses, each with an optional /prefix (a
 * bare address is a /32 or /128). Host bits set below the prefix are an error (they usually
 * mean a typo). On success *out (caller owns, free with cidr_list_free) is NULL for an empty
 * list; on error returns -FG_EINVAL and *errmsg (caller owns) names the bad entry. */
int cidr_list_parse(const char *text, cidr_list_t **out, char **errmsg);
/* Accepts NULL. */
void cidr_list_free(cidr_list_t *l);
/* Whether sa (AF_INET or AF_INET6) is in the list; a NULL (empty) list allows everyone. An
 * IPv4-mapped IPv6 address (::ffff:a.b.c.d) matches the IPv4 entries too. */
bool cidr_list_allows(const cidr_list_t *l, const struct sockaddr *sa);
/* Entries in the list (0 for NULL). */
size_t cidr_list_count(const cidr_list_t *l);

#endif
