/* testutil.c -- see testutil.h. */
#define _GNU_SOURCE
#include "testutil.h"

#include <cJSON.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char **child_env(const char *const env[]);
static void free_env(char **envp);

char *tu_read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, n = 0;
    char *s = malloc(cap);
    size_t r;
    while ((r = fread(s + n, 1, cap - n - 1, f)) > 0) {
        n += r;
        if (cap - n - 1 == 0) s = realloc(s, cap *= 2);
    }
    fclose(f);
    s[n] = '\0';
    return s;
}

cJSON *tu_read_json(const char *path) {
    char *t = tu_read_file(path);
    if (!t) return NULL;
    cJSON *j = cJSON_Parse(t);
    free(t);
    return j;
}

int tu_count_lines(const char *s) {
    int n = 0;
    for (const char *p = s; *p; p++)
        if (*p == '\n' || p[1] == '\0') n++;
    return n;
}

int tu_run(const char *const argv[], const char *const env[], char **out, char **err) {
    char tout[] = "/tmp/tfps-tu-outXXXXXX", terr[] = "/tmp/tfps-tu-errXXXXXX";
    int fo = mkstemp(tout), fe = mkstemp(terr);
    fflush(stdout);
    fflush(stderr);
    char **envp = child_env(env);   // made before fork: the child only calls async-signal-safe functions
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fo, 1);
        dup2(fe, 2);
        execve(argv[0], (char *const *)argv, envp);
        static const char msg[] = "exec failed\n";
        ssize_t ignored = write(2, msg, sizeof(msg) - 1);
        (void)ignored;
        _exit(127);
    }
    free_env(envp);
    int st = 0;
    waitpid(pid, &st, 0);
    close(fo);
    close(fe);
    if (out) *out = tu_read_file(tout);
    if (err) *err = tu_read_file(terr);
    unlink(tout);
    unlink(terr);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* environ with env's changes ("NAME=value" sets, "NAME" unsets), as a new
 * array for execve. Built in the parent: after fork in a process with
 * threads (gRPC's, the sanitizers') the child may only call
 * async-signal-safe functions, and setenv's malloc can deadlock on a lock
 * another thread held at the fork (seen: test_auth's ps and chief never
 * reached exec under ASan). */
static char **child_env(const char *const env[]) {
    extern char **environ;
    size_t n = 0, m = 0, k = 0;
    while (environ && environ[n]) n++;
    while (env && env[m]) m++;
    char **out = calloc(n + m + 1, sizeof(char *));
    if (!out) abort();
    for (size_t i = 0; i < n; i++)
        if (!(out[k++] = strdup(environ[i]))) abort();
    // then env's changes in order, as setenv/unsetenv would make them: the last word on a name wins
    for (size_t j = 0; j < m; j++) {
        const char *q = strchr(env[j], '=');
        const size_t ql = q ? (size_t)(q - env[j]) : strlen(env[j]);
        size_t at = k;
        for (size_t i = 0; i < k; i++)
            if (strncmp(out[i], env[j], ql) == 0 && (out[i][ql] == '=' || out[i][ql] == '\0')) at = i;
        if (at < k) {   // drop the old one
            free(out[at]);
            memmove(&out[at], &out[at + 1], (k - at - 1) * sizeof(char *));
            out[--k] = NULL;
        }
        if (q && !(out[k++] = strdup(env[j]))) abort();
    }
    out[k] = NULL;
    return out;
}

static void free_env(char **envp) {
    for (size_t i = 0; envp[i]; i++) free(envp[i]);
    free(envp);
}

int tu_spawn(const char *const argv[], const char *const env[], const char *log_path) {
    fflush(stdout);
    fflush(stderr);
    char **envp = child_env(env);   // made before fork (see child_env)
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execve(argv[0], (char *const *)argv, envp);
        _exit(127);
    }
    free_env(envp);
    return (int)pid;
}

int tu_wait(int pid, double timeout_s) {
    struct timespec t0, now, nap = {0, 10 * 1000 * 1000};
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        int st = 0;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        if (r < 0) return -1;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if ((double)(now.tv_sec - t0.tv_sec) + (now.tv_nsec - t0.tv_nsec) * 1e-9 > timeout_s) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            return -1;
        }
        nanosleep(&nap, NULL);
    }
}

int tu_free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 || getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        if (fd >= 0) close(fd);
        return -1;
    }
    close(fd);
    return ntohs(a.sin_port);
}

int tu_test_data(char *dir, size_t n, const char *def, const char *who) {
    const char *d = getenv("TFPS_TEST_DATA");
    snprintf(dir, n, "%s", d ? d : def);
    char probe[1200];
    snprintf(probe, sizeof(probe), "%s/train-images-idx3-ubyte.gz", dir);
    if (access(probe, R_OK) == 0) return 0;
    fprintf(stderr, "%s: no MNIST data in %s: run deploy/get-data.sh mnist %s first\n", who, dir, dir);
    return 1;
}
