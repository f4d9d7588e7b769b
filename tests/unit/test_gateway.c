/* Unit tests for gateway/ pieces that need no socket: MLLP framing and the configuration. */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "gateway/conf.h"
#include "gateway/mllp.h"
#include "lib/buf.h"
#include "lib/err.h"

typedef struct {
	char frames[8][64];
	bool oversize[8];
	size_t total[8];
	int n;
	int stop_after;
} frames_t;

static int
collect(void *ctx, const char *data, size_t len, bool oversize, size_t total)
{
	frames_t *f = ctx;

	if (f->n < 8) {
		snprintf(f->frames[f->n], sizeof(f->frames[0]), "%.*s", (int)len, data);
		f->oversize[f->n] = oversize;
		f->total[f->n] = total;
	}
	f->n++;
	return f->stop_after && f->n >= f->stop_after;
}

static void
test_mllp_split_and_multi(void **state)
{
	const char in[] = "junk\x0b"
			  "ONE\x1c\r\x0b"
			  "TWO\x1c\r\x0bTH";
	mllp_framer_t fr;
	frames_t f = {0};

	mllp_framer_init(&fr, 100);
	/* Byte by byte, then the rest in one go. */
	for (size_t i = 0; i < 6; i++)
		assert_int_equal(mllp_framer_feed(&fr, in + i, 1, collect, &f), 1);
	mllp_framer_feed(&fr, in + 6, sizeof(in) - 1 - 6, collect, &f);
	assert_int_equal(f.n, 2);
	assert_string_equal(f.frames[0], "ONE");
	assert_string_equal(f.frames[1], "TWO");
	assert_true(mllp_framer_is_mid_frame(&fr));
	mllp_framer_feed(&fr, "REE\x1c\r", 5, collect, &f);
	assert_int_equal(f.n, 3);
	assert_string_equal(f.frames[2], "THREE");
	assert_false(mllp_framer_is_mid_frame(&fr));
	assert_int_equal(fr.garbage, 4);
	mllp_framer_free(&fr);
}

static void
test_mllp_stop_and_resume(void **state)
{
	const char in[] = "\x0b"
			  "A\x1c\r\x0b"
			  "B\x1c\r";
	mllp_framer_t fr;
	frames_t f = {.stop_after = 1};
	size_t used;

	mllp_framer_init(&fr, 100);
	used = mllp_framer_feed(&fr, in, sizeof(in) - 1, collect, &f);
	assert_int_equal(used, 3); /* stopped right after the first end block */
	f.stop_after = 0;
	used += mllp_framer_feed(&fr, in + used, sizeof(in) - 1 - used, collect, &f);
	assert_int_equal(used, sizeof(in) - 1);
	assert_int_equal(f.n, 2);
	assert_string_equal(f.frames[1], "B");
	assert_int_equal(fr.garbage, 0);
	mllp_framer_free(&fr);
}

static void
test_mllp_oversize_and_abort(void **state)
{
	mllp_framer_t fr;
	frames_t f = {0};
	char big[300];

	memset(big, 'x', sizeof(big));
	mllp_framer_init(&fr, 10);
	mllp_framer_feed(&fr, "\x0b", 1, collect, &f);
	mllp_framer_feed(&fr, big, sizeof(big), collect, &f);
	mllp_framer_feed(&fr, "\x1c\r", 2, collect, &f);
	assert_int_equal(f.n, 1);
	assert_true(f.oversize[0]);
	assert_int_equal(f.total[0], 300);
	/* A start block inside a frame abandons the partial frame. */
	mllp_framer_feed(&fr, "\x0bpartial\x0bGOOD\x1c", 14, collect, &f);
	assert_int_equal(f.n, 2);
	assert_string_equal(f.frames[1], "GOOD");
	assert_false(f.oversize[1]);
	assert_int_equal(fr.aborted, 1);
	/* <FS> without <CR>: tolerated. */
	mllp_framer_feed(&fr, "\x0bNEXT\x1c", 6, collect, &f);
	assert_int_equal(f.n, 3);
	assert_string_equal(f.frames[2], "NEXT");
	mllp_framer_free(&fr);
}

static void
test_mllp_frame_append(void **state)
{
	buf_t b = BUF_INIT;

	assert_int_equal(mllp_frame_append(&b, "MSH|", 4), 0);
	assert_int_equal(b.len, 7);
	assert_memory_equal(b.data, "\x0bMSH|\x1c\r", 7);
	buf_free(&b);
}

static char *
write_tmp(const char *text)
{
	char *path = strdup("/tmp/fhirgate-conf-XXXXXX");
	int fd = mkstemp(path);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	return path;
}

static void
test_config_defaults_and_file(void **state)
{
	config_t c;
	char *err = NULL;
	char *path = write_tmp("# comment\n\nstore.data_dir = \"/tmp/x y\"\n"
			       "mllp.max_frame_bytes = 2M\nmllp.idle_timeout = 90s\n"
			       "writer.batch_max_delay = 2ms\nlog.level = debug\n");

	config_init(&c);
	assert_string_equal(c.data_dir, "./var/fhirgate");
	assert_string_equal(c.mllp_listen, "127.0.0.1:2575");
	assert_true(c.mllp_idle_timeout_ms == 300000);
	assert_int_equal(config_load_file(&c, path, &err), 0);
	assert_string_equal(c.data_dir, "/tmp/x y");
	assert_true(c.mllp_max_frame_bytes == 2u << 20);
	assert_true(c.mllp_idle_timeout_ms == 90000);
	assert_true(c.writer_batch_max_delay_us == 2000);
	assert_int_equal(c.log_level, LOG_DEBUG);
	assert_int_equal(config_set_arg(&c, "io.threads=3", &err), 0);
	assert_true(c.io_threads == 3);
	unlink(path);
	free(path);
	config_free(&c);
}

static void
test_config_errors(void **state)
{
	config_t c;
	char *err = NULL;
	char *path = write_tmp("store.map_size = 1G\n\nbogus.key = 1\n");
	char want[256];

	config_init(&c);
	assert_int_equal(config_load_file(&c, path, &err), -FG_ECONFIG);
	snprintf(want, sizeof(want), "%s:3: unknown key 'bogus.key'", path);
	assert_string_equal(err, want);
	free(err);
	err = NULL;
	assert_int_equal(config_set(&c, "mllp.idle_timeout", "10 parsecs", &err), -FG_ECONFIG);
	assert_non_null(strstr(err, "not a duration"));
	free(err);
	err = NULL;
	assert_int_equal(config_set(&c, "io.threads", "100000", &err), -FG_ECONFIG);
	assert_non_null(strstr(err, "out of range"));
	free(err);
	err = NULL;
	assert_int_equal(config_set_arg(&c, "nokeyvalue", &err), -FG_ECONFIG);
	free(err);
	err = NULL;
	assert_int_equal(config_set(&c, "log.format", "xml", &err), -FG_ECONFIG);
	assert_non_null(strstr(err, "'xml' is not one of logfmt, json"));
	free(err);
	err = NULL;
	assert_int_equal(config_set(&c, "mappings.unmapped", "accept", &err), 0);
	assert_int_equal(c.mappings_unmapped, CONF_UNMAPPED_ACCEPT);
	unlink(path);
	free(path);
	config_free(&c);
}

/* config_write's output loads back to the same values: the example config stays loadable. */
static void
test_config_roundtrip(void **state)
{
	config_t a, b;
	char *err = NULL, *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	char *path;

	config_init(&a);
	assert_int_equal(config_set_arg(&a, "writer.batch_max_delay=1500us", &err), 0);
	assert_int_equal(config_set_arg(&a, "mllp.max_frame_bytes=1536", &err), 0);
	config_write(&a, f);
	fclose(f);
	path = write_tmp(buf);
	config_init(&b);
	assert_int_equal(config_load_file(&b, path, &err), 0);
	assert_true(b.writer_batch_max_delay_us == 1500);
	assert_true(b.mllp_max_frame_bytes == 1536);
	assert_true(b.map_size == a.map_size);
	assert_string_equal(b.mllp_listen, a.mllp_listen);
	unlink(path);
	free(path);
	free(buf);
	config_free(&a);
	config_free(&b);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_mllp_split_and_multi),
	    cmocka_unit_test(test_mllp_stop_and_resume),
	    cmocka_unit_test(test_mllp_oversize_and_abort),
	    cmocka_unit_test(test_mllp_frame_append),
	    cmocka_unit_test(test_config_defaults_and_file),
	    cmocka_unit_test(test_config_errors),
	    cmocka_unit_test(test_config_roundtrip),
	};

	return cmocka_run_group_tests_name("gateway", tests, NULL, NULL);
}
