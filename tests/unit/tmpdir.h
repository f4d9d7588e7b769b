/* Temporary folders for the unit tests that work on real LMDB stores: made in $TMPDIR (or /tmp),
 * removed with everything in them. Header-only: each test program includes it. */
#ifndef TESTS_UNIT_TMPDIR_H
#define TESTS_UNIT_TMPDIR_H

#include <sys/stat.h>

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>

/* Makes a new folder "PREFIX.XXXXXX" into buf (its path); NULL when it cannot. */
static inline char *
test_tmpdir_make(char *buf, size_t cap, const char *prefix)
{
	const char *tmp = getenv("TMPDIR");

	snprintf(buf, cap, "%s/%s.XXXXXX", tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp", prefix);
	return mkdtemp(buf);
}

static inline int
test_tmpdir_remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

/* Removes dir and everything below it: 0, or -1 when something could not be removed. */
static inline int
test_tmpdir_remove(const char *dir)
{
	return nftw(dir, test_tmpdir_remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

#endif
