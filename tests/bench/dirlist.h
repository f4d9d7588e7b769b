/* The benchmarks' walk over a folder of test data. */
#ifndef TESTS_BENCH_DIRLIST_H
#define TESTS_BENCH_DIRLIST_H

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/xalloc.h"

static int
dirlist_cmp(const void *x, const void *y)
{
	return strcmp(*(char *const *)x, *(char *const *)y);
}

/* The entries of dir not starting with '.', as "dir/name" in name order: *n of them, each and
 * the array for the caller to free. A folder that cannot be opened ends the program (prog
 * names it). */
static char **
dirlist(const char *prog, const char *dir, size_t *n)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	char **names = NULL;

	*n = 0;
	if (d == NULL) {
		fprintf(stderr, "%s: cannot open %s\n", prog, dir);
		exit(1);
	}
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		names = xreallocarray(names, *n + 1, sizeof(*names));
		names[(*n)++] = xasprintf("%s/%s", dir, de->d_name);
	}
	closedir(d);
	qsort(names, *n, sizeof(*names), dirlist_cmp);
	return names;
}

#endif
