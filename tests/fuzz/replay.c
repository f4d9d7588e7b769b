/* Runs a fuzz target's LLVMFuzzerTestOneInput over saved inputs without libFuzzer, so that
 * corpora replay in `make check`: every file in the directories (and their subdirectories) or
 * the files given as arguments, or with none, in $top_srcdir/tests/fuzz/corpus/FUZZ_CORPUS
 * and, when FUZZ_DATA names one ("tests/data"), in $top_srcdir/FUZZ_DATA too. Emits TAP. */
#include "config.h"

#include <sys/stat.h>

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"
#include "lib/xalloc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static unsigned replay_count;

static int
replay_cmp(const void *x, const void *y)
{
	return strcmp(*(char *const *)x, *(char *const *)y);
}

/* Each input in an exact-size heap buffer, so that the sanitizers see any over-read. */
static int
replay_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	buf_t b = BUF_INIT;
	char chunk[65536];
	size_t n;
	uint8_t *data;

	if (f == NULL) {
		printf("not ok %u - %s (cannot open)\n", ++replay_count, path);
		return 1;
	}
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		buf_append(&b, chunk, n);
	fclose(f);
	data = xmalloc(b.len ? b.len : 1);
	if (b.len > 0)
		memcpy(data, b.data, b.len);
	LLVMFuzzerTestOneInput(data, b.len);
	free(data);
	buf_free(&b);
	printf("ok %u - %s\n", ++replay_count, path);
	fflush(stdout);
	return 0;
}

static int
replay_path(const char *path)
{
	struct stat st;
	struct dirent *de;
	char **names = NULL;
	size_t n = 0;
	int bad = 0;
	DIR *d;

	if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
		return replay_file(path);
	d = opendir(path);
	if (d == NULL) {
		printf("not ok %u - %s (cannot open)\n", ++replay_count, path);
		return 1;
	}
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		names = xreallocarray(names, n + 1, sizeof(*names));
		names[n++] = xasprintf("%s/%s", path, de->d_name);
	}
	closedir(d);
	qsort(names, n, sizeof(*names), replay_cmp);
	for (size_t i = 0; i < n; i++) {
		if (stat(names[i], &st) == 0 && S_ISREG(st.st_mode))
			bad |= replay_file(names[i]);
		else if (S_ISDIR(st.st_mode))
			bad |= replay_path(names[i]);
		free(names[i]);
	}
	free(names);
	return bad;
}

int
main(int argc, char **argv)
{
	int bad = 0;

	if (argc > 1) {
		for (int i = 1; i < argc; i++)
			bad |= replay_path(argv[i]);
	} else {
#ifdef FUZZ_CORPUS
		const char *top = getenv("top_srcdir");
		char *dir = xasprintf("%s/tests/fuzz/corpus/%s", top ? top : ".", FUZZ_CORPUS);

		bad |= replay_path(dir);
		free(dir);
#ifdef FUZZ_DATA
		dir = xasprintf("%s/%s", top ? top : ".", FUZZ_DATA);
		bad |= replay_path(dir);
		free(dir);
#endif
#else
		fprintf(stderr, "usage: %s FILE-OR-DIRECTORY...\n", argv[0]);
		return 2;
#endif
	}
	printf("1..%u\n", replay_count);
	return bad;
}
