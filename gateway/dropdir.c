/* The import drop folder. */
#include "config.h"

#include "gateway/dropdir.h"

#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gateway/cli.h"
#include "gateway/import.h"
#include "lib/log.h"
#include "lib/xalloc.h"

extern char **environ;

struct dropdir {
	char *dir, *mapping;
	unsigned long long batch;
	pid_t child;             /* 0: no import running */
	char name[NAME_MAX + 1]; /* the file it imports */
};

static const char *const subdirs[] = {"processing", "done", "failed", "logs"};

static char *
path_of(const dropdir_t *d, const char *sub, const char *name)
{
	size_t n = strlen(d->dir) + strlen(sub) + strlen(name) + 3;
	char *p = xmalloc(n);

	if (sub[0] != '\0')
		snprintf(p, n, "%s/%s/%s", d->dir, sub, name);
	else
		snprintf(p, n, "%s/%s", d->dir, name);
	return p;
}

/* Moves name from one subfolder to another ("" is the folder itself). */
static int
move(const dropdir_t *d, const char *from, const char *to, const char *name)
{
	char *a = path_of(d, from, name), *b = path_of(d, to, name);
	int rc = rename(a, b);

	if (rc != 0)
		log_error("import", "drop folder: cannot move %s to %s/: %s", a, to,
			  strerror(errno));
	free(a);
	free(b);
	return rc;
}

dropdir_t *
dropdir_new(const config_t *cfg, char **errmsg)
{
	dropdir_t *d;
	DIR *dh;
	struct dirent *e;
	char *proc;

	*errmsg = NULL;
	if (cfg->import_watch_dir[0] == '\0')
		return NULL;
	d = xcalloc(1, sizeof(*d));
	d->dir = xstrdup(cfg->import_watch_dir);
	d->mapping = xstrdup(cfg->import_mapping);
	d->batch = (unsigned long long)cfg->import_batch;
	for (size_t i = 0; i < sizeof(subdirs) / sizeof(subdirs[0]); i++) {
		char *p = path_of(d, subdirs[i], "");

		if (mkdir(p, 0700) != 0 && errno != EEXIST) {
			size_t n = strlen(p) + 128;

			*errmsg = xmalloc(n);
			snprintf(*errmsg, n, "import.watch_dir: cannot create %s: %s", p,
				 strerror(errno));
			free(p);
			dropdir_free(d);
			return NULL;
		}
		free(p);
	}
	/* What a previous server was importing goes back in line; its checkpoint resumes it. */
	proc = path_of(d, "processing", "");
	if ((dh = opendir(proc)) != NULL) {
		while ((e = readdir(dh)) != NULL)
			if (e->d_name[0] != '.' && move(d, "processing", "", e->d_name) == 0)
				log_info("import", "drop folder: %s goes back in line (resumes)",
					 e->d_name);
		closedir(dh);
	}
	free(proc);
	return d;
}

static bool
ends_with(const char *s, const char *suffix)
{
	size_t a = strlen(s), b = strlen(suffix);

	return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* An HL7 v2 file by its name: imported through the v2 message maps. */
static bool
is_hl7(const char *name)
{
	return ends_with(name, ".hl7") || ends_with(name, ".HL7") || ends_with(name, ".er7");
}

/* The next complete file, in name order; false when there is none. */
static bool
next_file(const dropdir_t *d, char *out, size_t cap)
{
	DIR *dh = opendir(d->dir);
	struct dirent *e;
	bool found = false;
	time_t now = time(NULL);

	if (dh == NULL)
		return false;
	while ((e = readdir(dh)) != NULL) {
		struct stat st;
		char *p;

		if (e->d_name[0] == '.' || ends_with(e->d_name, ".tmp") ||
		    ends_with(e->d_name, ".part") || strlen(e->d_name) >= cap)
			continue;
		p = path_of(d, "", e->d_name);
		/* still being written: wait until it has not changed for a second */
		if (stat(p, &st) == 0 && S_ISREG(st.st_mode) && st.st_mtime < now - 1 &&
		    (!found || strcmp(e->d_name, out) < 0)) {
			snprintf(out, cap, "%s", e->d_name);
			found = true;
		}
		free(p);
	}
	closedir(dh);
	return found;
}

/* Starts `fhirgate import` on processing/NAME, its output into logs/NAME.log. */
static int
spawn_import(dropdir_t *d, const char *name)
{
	const char **conf;
	int nconf, k = 0, rc;
	char *input = path_of(d, "processing", name), *logname, *logp, *failed, *rejects;
	char batch[32];
	const char **argv;
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	sigset_t none;

	cli_config_args(&conf, &nconf);
	argv = xcalloc((size_t)nconf + 16, sizeof(*argv));
	logname = xmalloc(strlen(name) + 8);
	snprintf(logname, strlen(name) + 8, "%s.log", name);
	logp = path_of(d, "logs", logname);
	failed = path_of(d, "failed", name);
	rejects = import_reject_path(failed);
	snprintf(batch, sizeof(batch), "%llu", d->batch);
	argv[k++] = "fhirgate";
	argv[k++] = "import";
	argv[k++] = "--batch";
	argv[k++] = batch;
	argv[k++] = "--rejects";
	argv[k++] = rejects;
	if (!is_hl7(name)) {
		argv[k++] = "--mapping";
		argv[k++] = d->mapping;
	}
	for (int i = 0; i < nconf; i++)
		argv[k++] = conf[i];
	argv[k++] = input;
	argv[k] = NULL;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, logp, O_WRONLY | O_CREAT | O_APPEND,
					 0600);
	posix_spawn_file_actions_adddup2(&fa, STDOUT_FILENO, STDERR_FILENO);
#ifdef __GLIBC__
	/* nothing of the server (sockets, pipes) leaks into the import */
	posix_spawn_file_actions_addclosefrom_np(&fa, 3);
#endif
	posix_spawnattr_init(&attr);
	sigemptyset(&none);
	posix_spawnattr_setsigmask(&attr, &none);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
	rc = posix_spawn(&d->child, "/proc/self/exe", &fa, &attr, (char *const *)argv, environ);
	posix_spawnattr_destroy(&attr);
	posix_spawn_file_actions_destroy(&fa);
	if (rc != 0) {
		log_error("import", "drop folder: cannot start an import of %s: %s", name,
			  strerror(rc));
		d->child = 0;
	} else {
		snprintf(d->name, sizeof(d->name), "%s", name);
		log_info("import", "drop folder: importing %s (pid %ld, log %s)", name,
			 (long)d->child, logp);
	}
	free(conf);
	free(argv);
	free(logname);
	free(logp);
	free(failed);
	free(rejects);
	free(input);
	return rc == 0 ? 0 : -1;
}

/* A finished import: done/ when it stored every record, failed/ otherwise. */
static void
reap(dropdir_t *d, int status)
{
	bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;

	if (move(d, "processing", ok ? "done" : "failed", d->name) == 0) {
		if (ok)
			log_info("import", "drop folder: %s imported (moved to done/)", d->name);
		else
			log_warn("import",
				 "drop folder: %s %s (moved to failed/; see logs/%s.log and any "
				 "rejected records beside it in failed/)",
				 d->name,
				 WIFEXITED(status) && WEXITSTATUS(status) == 1
				     ? "had rejected records or stopped"
				     : "could not be imported",
				 d->name);
	}
	d->child = 0;
	d->name[0] = '\0';
}

void
dropdir_tick(dropdir_t *d)
{
	char name[NAME_MAX + 1];
	int status;

	if (d == NULL)
		return;
	if (d->child != 0) {
		pid_t r = waitpid(d->child, &status, WNOHANG);

		if (r == 0)
			return; /* still running */
		if (r < 0)
			status = 0x7f00; /* lost: treat as failed */
		reap(d, status);
	}
	if (!next_file(d, name, sizeof(name)))
		return;
	if (!is_hl7(name) && d->mapping[0] == '\0') {
		log_warn("import",
			 "drop folder: %s is not an HL7 v2 file (.hl7, .er7) and import.mapping "
			 "is empty: moved to failed/",
			 name);
		(void)move(d, "", "failed", name);
		return;
	}
	if (move(d, "", "processing", name) == 0 && spawn_import(d, name) < 0)
		(void)move(d, "processing", "failed", name);
}

void
dropdir_free(dropdir_t *d)
{
	if (d == NULL)
		return;
	if (d->child != 0) {
		int status;

		/* It resumes from its checkpoint next time: put the file back in line. */
		kill(d->child, SIGTERM);
		if (waitpid(d->child, &status, 0) == d->child)
			(void)move(d, "processing", "", d->name);
	}
	free(d->dir);
	free(d->mapping);
	free(d);
}
