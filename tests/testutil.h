/* testutil.h -- run a real program for end-to-end tests. */
#ifndef TFPS_TESTUTIL_H
#define TFPS_TESTUTIL_H

#include <stddef.h>

/* Runs argv[0] with the environment of this process changed by env (entries
 * "NAME=value" set, "NAME" alone unsets; NULL-terminated, may be NULL).
 * Captures stdout and stderr into malloc'd strings (*out, *err may be NULL to
 * discard). Returns the exit code, or 128 + signal number. */
int tu_run(const char *const argv[], const char *const env[], char **out, char **err);
/* Reads a whole file into a malloc'd, NUL-terminated string; NULL if missing. */
char *tu_read_file(const char *path);
/* A JSON file parsed (cJSON *, free with cJSON_Delete); NULL if missing or invalid. */
struct cJSON *tu_read_json(const char *path);
/* Lines in s (a trailing newline does not start a new line). */
int tu_count_lines(const char *s);

/* Starts argv[0] in the background with env changes as tu_run, stdout and
 * stderr appended to log_path. Returns the pid. */
int tu_spawn(const char *const argv[], const char *const env[], const char *log_path);
/* Waits up to timeout_s for pid; returns its exit code (128 + signal), or -1
 * on timeout (the process is then killed). */
int tu_wait(int pid, double timeout_s);
/* A loopback TCP port that was free a moment ago (bind to port 0, close). */
int tu_free_port(void);

/* The MNIST folder of the end-to-end tests: $TFPS_TEST_DATA, else def.
 * Returns 0, or 1 after printing why (missing data is a failure, not a
 * skip: the accuracy reference must run). */
int tu_test_data(char *dir, size_t n, const char *def, const char *who);

#endif
