/* Allocation that aborts on failure, so callers carry no out-of-memory branches (as in tmux). */
#ifndef LIB_XALLOC_H
#define LIB_XALLOC_H

#include <stddef.h>

/* All return memory the caller owns; none returns NULL. */
void *xmalloc(size_t size);
void *xcalloc(size_t nmemb, size_t size);
void *xreallocarray(void *ptr, size_t nmemb, size_t size);
char *xstrdup(const char *s);
char *xmemdup0(const void *p, size_t len); /* len bytes plus a NUL */
/* printf into a new string the caller owns. */
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
