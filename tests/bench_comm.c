/* bench_comm.c -- what the ps can carry: W simulated workers (no compute, a
 * synthetic gradient) against P real tfps-ps, each worker doing rounds of
 * tfps_psclient_round (one PushPull per ps: its slices of the gradient up,
 * its ranges of the weights back) as fast as the ps and the links let it.
 * Prints rounds/s per worker and in all, bytes per round, GB/s and the
 * round's latency; not a test.
 *
 *     bench_comm [--ps P | --ps-addrs HOST:PORT,...] [--workers W] [--seconds S]
 *                [--rounds R] [--warmup N] [--worker-netns PREFIX] [--label TEXT]
 *                [--bin DIR] [tfps options, e.g. --wire-dtype bf16]
 *
 * --ps P (default 1) starts P tfps-ps (DIR/tfps-ps, default the build's bin
 * folder) on free loopback ports with a TF_CONFIG of P ps and W workers and a
 * random job secret (unless one is given: TFPS_JOB_SECRET or
 * --job-secret-file), logs and checkpoint folder in a temp folder, and stops
 * them (SIGTERM) at the end. --ps-addrs uses ps started by someone else
 * (tests/bench_comm.sh, in network namespaces), whose TF_CONFIG lists W
 * workers and whose job secret is in this process's environment.
 *
 * Each worker is a process of its own (forked before anything starts gRPC):
 * it registers with every ps as rank i of W, runs --warmup rounds, then waits
 * for all the others; they start together and each runs rounds for --seconds
 * (default 3; --rounds R: at most R). With --worker-netns PREFIX worker i
 * first joins the network namespace PREFIX<i> (/run/netns; root), so each has
 * a link of its own; the parent's Status calls go from its own namespace.
 *
 * The gradient is 1e-6 everywhere (async SGD: the weights move by 1e-7 per
 * push and stay finite); the pulled weights are copied into a flat array as
 * a worker's would be. Every option after bench_comm's own goes to
 * tfps_options_parse (and to the ps it starts), so the Register matches:
 * --pushpull 0 times a Push and a Pull per ps, --consistency sync or ssp the
 * ps's barriers (each worker reports done after its window, as a worker does
 * at its end, so the others' last rounds are not held for it).
 *
 * Counted: the rounds of every worker in its window (from the common start
 * to the end of its last round); aggregate rounds/s = the sum of the
 * workers' rates. Bytes per round: the ps's own counters (Status bytes_in +
 * bytes_out, message bytes without HTTP/2 and TCP framing) over the window,
 * divided by the rounds; in async each ps must have applied exactly one
 * push per round (else exit 1). CPU per round: the workers' (getrusage,
 * every thread) and the ps's (/proc/PID/stat: the ps started here, or
 * --ps-pids), and how busy the whole machine was (/proc/stat): a cell whose
 * machine was ~100% busy measured the CPU, not the network.
 *
 * --wire-dtype bf16|fp16: the workers send gradients and ask for weights in
 * that format (half the bytes); the bytes line says what went over the wire
 * as a multiple of the fp32 model.
 *
 * Last line, for scripts: "RESULT key=value ...". Exit 0, 1 (a worker or ps
 * failed, pushes lost), 2 (usage). SIGINT/SIGTERM: every worker and ps it
 * started is stopped first. */
#define _GNU_SOURCE
#include "layout.h"
#include "log.h"
#include "options.h"
#include "psclient.h"
#include "rpc.h"
#include "shard.h"
#include "tfps.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#ifndef TFPS_BIN_DIR
#define TFPS_BIN_DIR "build/bin"
#endif

#define BC_MAX_PS 64
#define BC_MAX_WORKERS 256
#define BC_GRAD 1e-6f   /* every element of the synthetic gradient */

extern char **environ;

/* The bench's own flags; the rest are tfps options. */
typedef struct {
    int num_ps, workers, warmup;
    long long rounds;           /* per worker; 0: as many as --seconds allows */
    double seconds;
    char ps_addrs[4096];        /* --ps-addrs; "" = start them here */
    char ps_pids[1024];         /* --ps-pids: the given ps's processes, for their CPU time */
    char netns[200];            /* --worker-netns prefix; "" = stay */
    char label[64];
    char bin[1024];
    char **opt_argv;            /* argv[0] + the tfps options */
    int opt_argc;
} bc_args;

/* One worker's outcome, in memory shared with the parent; its round times
 * (seconds) follow it. */
typedef struct {
    int state;                  /* BC_STARTING .. BC_FAILED */
    uint64_t rounds, dropped, nonfinite;
    double secs;                /* from its start to the end of its last round */
    double cpu_s;               /* this process, every thread, over the window */
    uint64_t nsamples;          /* round times kept (at most the capacity) */
    char err[TFPS_ERR_LEN];
} bc_worker;
enum { BC_STARTING, BC_READY, BC_DONE, BC_FAILED };

static volatile sig_atomic_t bc_stop;   /* SIGINT or SIGTERM in the parent */
static void on_signal(int sig) { bc_stop = sig; }

static void usage(FILE *f) {
    fprintf(f, "usage: bench_comm [--ps P | --ps-addrs HOST:PORT,...] [--workers W] [--seconds S] [--rounds R]\n"
               "                  [--warmup N] [--worker-netns PREFIX] [--label TEXT] [--bin DIR] [tfps options]\n"
               "  --ps P             start P tfps-ps on loopback (1..%d, default 1)\n"
               "  --ps-addrs A,B     use ps already running (their TF_CONFIG lists W workers)\n"
               "  --ps-pids N,M      their process ids (this machine): their CPU time per round\n"
               "  --workers W        simulated workers, one process each (1..%d, default 1)\n"
               "  --seconds S        each worker's timed window (default 3)\n"
               "  --rounds R         at most R timed rounds per worker (default 0: no limit)\n"
               "  --warmup N         untimed rounds per worker before the common start (default 3)\n"
               "  --worker-netns P   worker i joins network namespace P<i> first (root)\n"
               "  --label TEXT       the link's name in the RESULT line (default loopback or given)\n"
               "  --bin DIR          where tfps-ps is (default %s)\n"
               "  tfps options       e.g. --wire-dtype bf16, --pushpull 0: to the workers and the ps started here\n",
            BC_MAX_PS, BC_MAX_WORKERS, TFPS_BIN_DIR);
}

static int parse_int(const char *flag, const char *v, long long lo, long long hi, long long *out) {
    char *end;
    errno = 0;
    long long x = v ? strtoll(v, &end, 10) : 0;
    if (!v || errno || *end || end == v || x < lo || x > hi) {
        fprintf(stderr, "bench_comm: %s %s: expected an integer in %lld..%lld\n", flag, v ? v : "(missing)", lo, hi);
        return -1;
    }
    *out = x;
    return 0;
}

/* Returns 0, 1 (--help: done), or 2 (usage error, said). */
static int parse_args(bc_args *a, int argc, char **argv) {
    memset(a, 0, sizeof(*a));
    a->num_ps = 1;
    a->workers = 1;
    a->warmup = 3;
    a->seconds = 3.0;
    snprintf(a->bin, sizeof(a->bin), "%s", TFPS_BIN_DIR);
    a->opt_argv = calloc((size_t)argc + 1, sizeof(char *));
    if (!a->opt_argv) return 2;
    a->opt_argv[a->opt_argc++] = argv[0];
    int have_ps = 0;
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        long long x = 0;
        if (strcmp(f, "-h") == 0 || strcmp(f, "--help") == 0) {
            usage(stdout);
            return 1;
        } else if (strcmp(f, "--ps") == 0) {
            if (parse_int(f, v, 1, BC_MAX_PS, &x)) return 2;
            a->num_ps = (int)x;
            have_ps = 1;
        } else if (strcmp(f, "--workers") == 0) {
            if (parse_int(f, v, 1, BC_MAX_WORKERS, &x)) return 2;
            a->workers = (int)x;
        } else if (strcmp(f, "--warmup") == 0) {
            if (parse_int(f, v, 0, 1000000, &x)) return 2;
            a->warmup = (int)x;
        } else if (strcmp(f, "--rounds") == 0) {
            if (parse_int(f, v, 0, 1000000000, &x)) return 2;
            a->rounds = x;
        } else if (strcmp(f, "--seconds") == 0) {
            char *end;
            a->seconds = v ? strtod(v, &end) : 0;
            if (!v || *end || !(a->seconds >= 0.1 && a->seconds <= 3600)) {
                fprintf(stderr, "bench_comm: --seconds %s: expected 0.1..3600\n", v ? v : "(missing)");
                return 2;
            }
        } else if (strcmp(f, "--ps-addrs") == 0 || strcmp(f, "--ps-pids") == 0 || strcmp(f, "--worker-netns") == 0 ||
                   strcmp(f, "--label") == 0 || strcmp(f, "--bin") == 0) {
            char *dst = strcmp(f, "--ps-addrs") == 0 ? a->ps_addrs : strcmp(f, "--ps-pids") == 0 ? a->ps_pids
                      : f[2] == 'w' ? a->netns : f[2] == 'l' ? a->label : a->bin;
            size_t cap = dst == a->ps_addrs ? sizeof(a->ps_addrs) : dst == a->ps_pids ? sizeof(a->ps_pids)
                       : dst == a->netns ? sizeof(a->netns) : dst == a->label ? sizeof(a->label) : sizeof(a->bin);
            if (!v || !*v || strlen(v) >= cap) {
                fprintf(stderr, "bench_comm: %s: expected a value of 1..%zu characters\n", f, cap - 1);
                return 2;
            }
            snprintf(dst, cap, "%s", v);
        } else {
            a->opt_argv[a->opt_argc++] = argv[i];   // a tfps option (its value follows as its own word)
            continue;
        }
        i++;
    }
    if (have_ps && a->ps_addrs[0]) {
        fprintf(stderr, "bench_comm: --ps and --ps-addrs: expected one of them\n");
        return 2;
    }
    if (a->ps_addrs[0]) {   // P = the addresses given
        a->num_ps = 1;
        for (const char *p = a->ps_addrs; *p; p++) a->num_ps += *p == ',';
        if (a->num_ps > BC_MAX_PS) {
            fprintf(stderr, "bench_comm: --ps-addrs: at most %d ps\n", BC_MAX_PS);
            return 2;
        }
    }
    if (!a->label[0]) snprintf(a->label, sizeof(a->label), "%s", a->ps_addrs[0] ? "given" : "loopback");
    return 0;
}

/* ---- the ps started here ------------------------------------------------- */

/* A loopback port nobody listened on a moment ago. */
static int free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa;
    socklen_t len = sizeof(sa);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    if (fd >= 0) close(fd);
    return port;
}

/* environ without TF_CONFIG, plus tf_config and (when secret) TFPS_JOB_SECRET:
 * made before fork, freed by the caller (the array only: its strings are
 * environ's or the caller's). */
static char **ps_env(char *tf_config, char *secret) {
    size_t n = 0, k = 0;
    while (environ[n]) n++;
    char **env = calloc(n + 3, sizeof(char *));
    if (!env) return NULL;
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], "TF_CONFIG=", 10) != 0) env[k++] = environ[i];
    env[k++] = tf_config;
    if (secret) env[k++] = secret;
    return env;
}

/* Starts argv with env, stdout and stderr to log; the child is killed when
 * this process dies (PR_SET_PDEATHSIG), however it dies. -1 on failure. */
static pid_t spawn(char *const argv[], char *const env[], const char *log) {
    fflush(stdout);
    fflush(stderr);
    const pid_t parent = getpid();
    pid_t pid = fork();
    if (pid != 0) return pid;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);   // died before the prctl
    int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
        close(fd);
    }
    execve(argv[0], argv, env);
    _exit(127);
}

/* SIGTERM (the ps drain and exit 0), SIGKILL after timeout_s; the exit code
 * (128 + signal), or -1. */
static int stop_pid(pid_t pid, int sig, double timeout_s) {
    int st = 0;
    kill(pid, sig);
    const double t_end = tfps_now() + timeout_s;
    for (;;) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        if (r < 0) return -1;
        if (tfps_now() > t_end) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            return 128 + SIGKILL;
        }
        tfps_sleep(0.01);
    }
}

/* utime + stime of pid, in seconds; -1 if unreadable. */
static double proc_cpu_s(pid_t pid) {
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')');   // the command name may hold spaces
    unsigned long long ut = 0, st = 0;
    // after ") ": state(3) ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime(14) stime(15)
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2) return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* The machine's CPU time, busy and in all (/proc/stat, clock ticks). */
static void machine_cpu(double *busy, double *total) {
    unsigned long long v[10] = {0};
    *busy = *total = 0;
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return;
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4],
                   &v[5], &v[6], &v[7], &v[8], &v[9]);
    fclose(f);
    if (n < 5) return;
    for (int i = 0; i < 8 && i < n; i++) *total += (double)v[i];   // guest time is inside user already
    *busy = *total - (double)v[3] - (double)v[4];                  // less idle and iowait
}

/* ---- a simulated worker (a child process) --------------------------------- */

/* Joins network namespace /run/netns/<prefix><i>. */
static int join_netns(const char *prefix, int i, char *err, size_t errlen) {
    char path[300];
    snprintf(path, sizeof(path), "/run/netns/%s%d", prefix, i);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return tfps_seterr(err, errlen, "--worker-netns: %s: %s", path, strerror(errno));
    int rc = setns(fd, CLONE_NEWNET);
    int e = errno;
    close(fd);
    if (rc != 0) return tfps_seterr(err, errlen, "--worker-netns: setns %s: %s (root?)", path, strerror(e));
    return TFPS_OK;
}

/* Worker i of a->workers: register, warm up, say ready on ready_fd, wait for
 * go_fd's end of file, run the timed rounds. Results in *w and samples. */
static void run_worker(const bc_args *a, const tfps_options *o, char **targets, int i, bc_worker *w, double *samples,
                       uint64_t cap, int ready_fd, int go_fd) {
    char err[TFPS_ERR_LEN];
    tfps_layout l;
    tfps_shard_plan plan = {0};
    tfps_psclient pc;
    int have_pc = 0;
    float *grads = NULL, *params = NULL;
    memset(&pc, 0, sizeof(pc));
    w->state = BC_FAILED;
    if (a->netns[0] && join_netns(a->netns, i, w->err, sizeof(w->err)) != TFPS_OK) goto done;
    tfps_rpc_init();
    if (tfps_layout_init(&l, TFPS_INPUT_WIDTH, o->h1, o->h2, TFPS_CLASSES, err, sizeof(err)) != TFPS_OK ||
        tfps_shard_plan_build(&plan, &l, a->num_ps, (tfps_shard_strategy)o->shard_strategy, err, sizeof(err)) !=
            TFPS_OK ||
        tfps_psclient_init(&pc, targets, &l, &plan, err, sizeof(err)) != TFPS_OK) {
        tfps_seterr(w->err, sizeof(w->err), "%s", err);
        goto done;
    }
    have_pc = 1;
    pc.consistency = o->consistency;   // as worker/cluster.c sets them
    pc.pushpull = o->pushpull;
    pc.replicas_to_aggregate = o->replicas_to_aggregate;
    pc.num_workers = a->workers;
    pc.wire_dtype = o->wire_dtype;
    char desc[160];
    const tfps_wire_register_req q =
        tfps_psclient_register_req(o, &l, &plan, "worker", i, i, a->workers, desc, sizeof(desc));
    int refused = 0;
    if (tfps_psclient_register(&pc, &q, o->startup_timeout, "--startup-timeout", &refused, err, sizeof(err)) !=
        TFPS_OK) {
        tfps_seterr(w->err, sizeof(w->err), "register%s: %s", refused ? " refused" : "", err);
        goto done;
    }
    grads = malloc(l.total * sizeof(float));
    params = malloc(l.total * sizeof(float));
    if (!grads || !params) {
        tfps_seterr(w->err, sizeof(w->err), "out of memory");
        goto done;
    }
    for (size_t j = 0; j < l.total; j++) grads[j] = BC_GRAD;
    uint64_t step = 0;
    for (int r = 0; r < a->warmup; r++)
        if (tfps_psclient_round(&pc, grads, 2.3f, 64, ++step, params, o->rpc_timeout, err, sizeof(err)) != TFPS_OK) {
            tfps_seterr(w->err, sizeof(w->err), "warm-up round %d: %s", r + 1, err);
            goto done;
        }
    w->state = BC_READY;
    char c = 'r', buf;
    if (write(ready_fd, &c, 1) != 1) goto done;
    while (read(go_fd, &buf, 1) < 0 && errno == EINTR) {}   // end of file: the parent closed it, go
    struct rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    const double t0 = tfps_now();
    double t = t0;
    for (;;) {
        const double t_round = t;
        if (tfps_psclient_round(&pc, grads, 2.3f, 64, ++step, params, o->rpc_timeout, err, sizeof(err)) != TFPS_OK) {
            tfps_seterr(w->err, sizeof(w->err), "round %" PRIu64 ": %s", w->rounds + 1, err);
            w->state = BC_FAILED;
            goto done;
        }
        t = tfps_now();
        if (w->rounds < cap) samples[w->nsamples++] = t - t_round;
        w->rounds++;
        w->dropped += (uint64_t)pc.last_dropped;
        w->nonfinite += (uint64_t)(pc.last_nonfinite > 0);
        if (t - t0 >= a->seconds || (a->rounds > 0 && (long long)w->rounds >= a->rounds)) break;
    }
    getrusage(RUSAGE_SELF, &ru1);
    w->secs = t - t0;
    w->cpu_s = (double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec + ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) +
               (double)(ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec + ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) *
                   1e-6;
    w->state = BC_DONE;
    // done, as a worker says at its end: sync and ssp stop waiting for this rank (the others' last rounds
    // would be held until it is declared dead); after the window, so not timed
    if (tfps_psclient_heartbeat(&pc, step, 64 * step, 1, NULL, o->rpc_timeout, err, sizeof(err)) != TFPS_OK) {
        tfps_seterr(w->err, sizeof(w->err), "reporting done: %s", err);
        w->state = BC_FAILED;
    }
done:
    if (w->state == BC_FAILED && !w->err[0]) tfps_seterr(w->err, sizeof(w->err), "failed");
    if (w->state == BC_FAILED) {
        char e = 'e';
        if (write(ready_fd, &e, 1) < 0) {}   // before ready: the parent stops waiting; after: nobody reads it
    }
    if (have_pc) tfps_psclient_destroy(&pc);
    tfps_shard_plan_destroy(&plan);
    free(grads);
    free(params);
}

/* ---- the parent ----------------------------------------------------------- */

static int cmp_double(const void *x, const void *y) {
    double p = *(const double *)x, q = *(const double *)y;
    return (p > q) - (p < q);
}

/* The ps's counters now: status[k]; TFPS_OK or TFPS_ERR with err. */
static int ps_status(tfps_psclient *pc, tfps_wire_status_resp *status, char *err, size_t errlen) {
    for (int k = 0; k < pc->num_ps; k++)
        if (tfps_psclient_status(pc, k, &status[k], 10.0, err, errlen) != TFPS_OK) return TFPS_ERR;
    return TFPS_OK;
}

int main(int argc, char **argv) {
    bc_args a;
    int rc = parse_args(&a, argc, argv);
    if (rc == 1) return 0;
    if (rc) return 2;
    tfps_options o;
    char err[TFPS_ERR_LEN];
    if (tfps_options_parse(&o, a.opt_argc, a.opt_argv, err, sizeof(err)) != TFPS_OK) {
        fprintf(stderr, "bench_comm: %s\n", err);
        return 2;
    }
    tfps_log_min_level = TFPS_LOG_WARN;
    const double t_start = tfps_now();
    const int P = a.num_ps, W = a.workers;
    const long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    char *targets[BC_MAX_PS], addr_store[BC_MAX_PS][128];
    pid_t ps_pid[BC_MAX_PS], wpid[BC_MAX_WORKERS];
    pid_t cpu_pid[BC_MAX_PS];   /* the ps whose CPU time is read: started here, or --ps-pids */
    int nps_started = 0, nworkers = 0, ncpu_pids = 0;
    char tmp[] = "/tmp/tfps-bench-comm-XXXXXX";
    int have_tmp = 0, ready_pipe[2] = {-1, -1}, go_pipe[2] = {-1, -1};
    bc_worker *shm = MAP_FAILED;
    size_t slot = 0, shm_len = 0;
    tfps_psclient pc;
    int have_pc = 0, rpc_up = 0;
    tfps_layout l;
    tfps_shard_plan plan = {0};
    tfps_wire_status_resp *s0 = NULL, *s1 = NULL;   /* [P] the ps's counters before and after the window */
    memset(&pc, 0, sizeof(pc));
    rc = 1;

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    /* The ps: given, or started here. */
    if (a.ps_addrs[0]) {
        char *save = NULL, *p;
        for (p = strtok_r(a.ps_pids, ",", &save); p && ncpu_pids < BC_MAX_PS; p = strtok_r(NULL, ",", &save))
            cpu_pid[ncpu_pids++] = (pid_t)atoi(p);
        p = strtok_r(a.ps_addrs, ",", &save);
        for (int k = 0; k < P; k++, p = strtok_r(NULL, ",", &save)) {
            if (!p) {
                fprintf(stderr, "bench_comm: --ps-addrs: an empty address\n");
                return 2;
            }
            snprintf(addr_store[k], sizeof(addr_store[k]), "%s", p);
            targets[k] = addr_store[k];
        }
    } else {
        if (!mkdtemp(tmp)) {
            fprintf(stderr, "bench_comm: mkdtemp %s: %s\n", tmp, strerror(errno));
            return 1;
        }
        have_tmp = 1;
        static char secret[2 * 32 + 32];
        char *secret_env = NULL;
        if (o.job_secret_len == 0) {   // a job secret of our own, as deploy/local-cluster.sh gives every run
            uint8_t b[32];
            if (tfps_random_bytes(b, sizeof(b)) != TFPS_OK) {
                fprintf(stderr, "bench_comm: no random source for the job secret\n");
                goto done;
            }
            int j = snprintf(secret, sizeof(secret), "TFPS_JOB_SECRET=");
            for (size_t i = 0; i < sizeof(b); i++) j += snprintf(secret + j, sizeof(secret) - (size_t)j, "%02x", b[i]);
            const char *hex = secret + strlen("TFPS_JOB_SECRET=");
            memcpy(o.job_secret, hex, strlen(hex));
            o.job_secret_len = strlen(hex);
            secret_env = secret;
        }
        // TF_CONFIG: P ps on free loopback ports, W workers (never dialled: on 127.0.0.2)
        size_t cap = 256 + (size_t)(P + W) * 32, j = 0;
        char *cluster = malloc(cap);
        if (!cluster) goto done;
        j += (size_t)snprintf(cluster + j, cap - j, "{\"ps\": [");
        for (int k = 0; k < P; k++) {
            const int port = free_port();
            if (port < 0) {
                fprintf(stderr, "bench_comm: no free loopback port\n");
                free(cluster);
                goto done;
            }
            snprintf(addr_store[k], sizeof(addr_store[k]), "127.0.0.1:%d", port);
            targets[k] = addr_store[k];
            j += (size_t)snprintf(cluster + j, cap - j, "%s\"%s\"", k ? ", " : "", addr_store[k]);
        }
        j += (size_t)snprintf(cluster + j, cap - j, "], \"worker\": [");
        for (int i = 0; i < W; i++)
            j += (size_t)snprintf(cluster + j, cap - j, "%s\"127.0.0.2:%d\"", i ? ", " : "", 20000 + i);
        snprintf(cluster + j, cap - j, "]}");
        char ps_bin[1100], outdir[64], log[128];
        snprintf(ps_bin, sizeof(ps_bin), "%s/tfps-ps", a.bin);
        snprintf(outdir, sizeof(outdir), "%s/out", tmp);
        if (access(ps_bin, X_OK) != 0) {
            fprintf(stderr, "bench_comm: %s: not found: build first, or give --bin DIR\n", ps_bin);
            free(cluster);
            goto done;
        }
        // the ps get the same tfps options as the workers (the Register must match), ours first: the user's win
        char **ps_argv = calloc((size_t)a.opt_argc + 8, sizeof(char *));
        const size_t tf_len = strlen(cluster) + 128;
        char *tf = malloc(tf_len);
        if (!ps_argv || !tf) {
            free(ps_argv);
            free(tf);
            free(cluster);
            goto done;
        }
        int n = 0;
        ps_argv[n++] = ps_bin;
        ps_argv[n++] = "--output-dir";
        ps_argv[n++] = outdir;
        ps_argv[n++] = "--log-level";
        ps_argv[n++] = "warn";
        for (int i = 1; i < a.opt_argc; i++) ps_argv[n++] = a.opt_argv[i];
        ps_argv[n] = NULL;
        for (int k = 0; k < P; k++) {
            snprintf(tf, tf_len, "TF_CONFIG={\"cluster\": %s, \"task\": {\"type\": \"ps\", \"index\": %d}}", cluster, k);
            char **env = ps_env(tf, secret_env);
            snprintf(log, sizeof(log), "%s/ps-%d.log", tmp, k);
            ps_pid[k] = env ? spawn(ps_argv, env, log) : -1;
            free(env);
            if (ps_pid[k] < 0) {
                fprintf(stderr, "bench_comm: cannot start %s: %s\n", ps_bin, strerror(errno));
                break;
            }
            nps_started++;
        }
        free(ps_argv);
        free(tf);
        free(cluster);
        if (nps_started < P) goto done;
        for (int k = 0; k < P; k++) cpu_pid[ncpu_pids++] = ps_pid[k];
    }

    /* The workers: one process each, forked before this process starts gRPC. */
    uint64_t cap = (uint64_t)(a.seconds * 20000.0) + 1024;   // round times kept per worker (> 20 k rounds/s: counted only)
    if (a.rounds > 0 && (uint64_t)a.rounds < cap) cap = (uint64_t)a.rounds;
    slot = (sizeof(bc_worker) + 15) / 16 * 16 + (size_t)cap * sizeof(double);
    shm_len = slot * (size_t)W;
    shm = mmap(NULL, shm_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (shm == MAP_FAILED || pipe(ready_pipe) != 0 || pipe(go_pipe) != 0) {
        fprintf(stderr, "bench_comm: mmap/pipe: %s\n", strerror(errno));
        goto done;
    }
#define WORKER(i) ((bc_worker *)((char *)shm + (size_t)(i) * slot))
#define SAMPLES(i) ((double *)((char *)WORKER(i) + (sizeof(bc_worker) + 15) / 16 * 16))
    fflush(stdout);
    fflush(stderr);
    for (int i = 0; i < W && !bc_stop; i++) {
        const pid_t parent = getpid();
        pid_t pid = fork();
        if (pid < 0) {
            fprintf(stderr, "bench_comm: fork: %s\n", strerror(errno));
            goto done;
        }
        if (pid == 0) {
            signal(SIGINT, SIG_DFL);
            signal(SIGTERM, SIG_DFL);
            prctl(PR_SET_PDEATHSIG, SIGKILL);   // no worker outlives the bench, however it ends
            if (getppid() != parent) _exit(1);
            close(go_pipe[1]);                  // only the parent's copy: its close is the start
            close(ready_pipe[0]);
            run_worker(&a, &o, targets, i, WORKER(i), SAMPLES(i), cap, ready_pipe[1], go_pipe[0]);
            _exit(WORKER(i)->state == BC_DONE ? 0 : 1);
        }
        wpid[nworkers++] = pid;
    }
    close(ready_pipe[1]);
    ready_pipe[1] = -1;

    /* Every worker registered and warmed up (or one failed). */
    int ready = 0, failed = 0;
    const double t_ready_end = tfps_now() + o.startup_timeout + 30.0 + a.warmup * o.rpc_timeout;
    while (ready + failed < nworkers && !bc_stop) {
        struct pollfd pf = {ready_pipe[0], POLLIN, 0};
        const double left = t_ready_end - tfps_now();
        if (left <= 0) break;
        if (poll(&pf, 1, left > 1 ? 1000 : (int)(left * 1000) + 1) <= 0) continue;
        char c;
        ssize_t r = read(ready_pipe[0], &c, 1);
        if (r == 1 && c == 'r') ready++;
        else if (r == 1) failed++;
        else if (r == 0) break;
    }
    if (bc_stop || ready < nworkers) {
        for (int i = 0; i < nworkers; i++)
            if (WORKER(i)->state == BC_FAILED) fprintf(stderr, "bench_comm: worker %d: %s\n", i, WORKER(i)->err);
        if (!bc_stop && !failed) fprintf(stderr, "bench_comm: %d of %d workers not ready in time\n", nworkers - ready,
                                         nworkers);
        goto done;
    }

    const double t_ready = tfps_now();
    /* The ps's counters before and after the window (from this process's own namespace). */
    s0 = calloc((size_t)P, sizeof(*s0));
    s1 = calloc((size_t)P, sizeof(*s1));
    double ps_cpu0[BC_MAX_PS], ps_cpu1[BC_MAX_PS];
    tfps_rpc_init();
    rpc_up = 1;
    if (!s0 || !s1 ||
        tfps_layout_init(&l, TFPS_INPUT_WIDTH, o.h1, o.h2, TFPS_CLASSES, err, sizeof(err)) != TFPS_OK ||
        tfps_shard_plan_build(&plan, &l, P, (tfps_shard_strategy)o.shard_strategy, err, sizeof(err)) != TFPS_OK ||
        tfps_psclient_init(&pc, targets, &l, &plan, err, sizeof(err)) != TFPS_OK || (have_pc = 1, 0) ||
        ps_status(&pc, s0, err, sizeof(err)) != TFPS_OK) {
        fprintf(stderr, "bench_comm: Status before: %s\n", !s0 || !s1 ? "out of memory" : err);
        goto done;
    }
    for (int k = 0; k < ncpu_pids; k++) ps_cpu0[k] = proc_cpu_s(cpu_pid[k]);
    double busy0, total0, busy1, total1;
    machine_cpu(&busy0, &total0);
    close(go_pipe[1]);   // go
    go_pipe[1] = -1;
    int exited = 0;
    const double t_end = tfps_now() + a.seconds + o.rpc_timeout + 30.0;
    while (exited < nworkers && !bc_stop && tfps_now() < t_end) {   // the workers only: the ps are reaped at the end
        int st;
        for (int i = 0; i < nworkers; i++)
            if (wpid[i] > 0 && waitpid(wpid[i], &st, WNOHANG) == wpid[i]) {
                wpid[i] = -1;
                exited++;
            }
        if (exited < nworkers) tfps_sleep(0.01);
    }
    if (bc_stop) goto done;   // a window cut short: no numbers
    machine_cpu(&busy1, &total1);
    for (int k = 0; k < ncpu_pids; k++) ps_cpu1[k] = proc_cpu_s(cpu_pid[k]);
    int status_ok = ps_status(&pc, s1, err, sizeof(err)) == TFPS_OK;
    if (!status_ok) fprintf(stderr, "bench_comm: Status after: %s\n", err);

    /* The numbers. */
    uint64_t total = 0, dropped = 0, nonfinite = 0, nsamples = 0;
    double rps = 0, rps_min = 1e300, rps_max = 0, cpu_w = 0, window = 0;
    int done_ok = 0;
    for (int i = 0; i < nworkers; i++) {
        const bc_worker *w = WORKER(i);
        if (w->state != BC_DONE) {
            fprintf(stderr, "bench_comm: worker %d: %s\n", i, w->state == BC_FAILED ? w->err : "did not finish");
            continue;
        }
        done_ok++;
        const double r = w->secs > 0 ? (double)w->rounds / w->secs : 0;
        rps += r;
        if (r < rps_min) rps_min = r;
        if (r > rps_max) rps_max = r;
        total += w->rounds;
        dropped += w->dropped;
        nonfinite += w->nonfinite;
        nsamples += w->nsamples;
        cpu_w += w->cpu_s;
        if (w->secs > window) window = w->secs;
    }
    double *all = nsamples ? malloc((size_t)nsamples * sizeof(double)) : NULL;
    double p50 = 0, p90 = 0, p99 = 0;
    if (all) {
        size_t j = 0;
        for (int i = 0; i < nworkers; i++)
            if (WORKER(i)->state == BC_DONE) {
                memcpy(all + j, SAMPLES(i), WORKER(i)->nsamples * sizeof(double));
                j += WORKER(i)->nsamples;
            }
        qsort(all, j, sizeof(double), cmp_double);
        p50 = all[j / 2];
        p90 = all[(j * 9) / 10];
        p99 = all[(j * 99) / 100];
        free(all);
    }
    static const char *const dtypes[] = {"fp32", "bf16", "fp16"};
    const char *dtype = o.wire_dtype >= 0 && o.wire_dtype < 3 ? dtypes[o.wire_dtype] : "?";
    printf("bench_comm: %d workers x %d ps (%s, %s), %.1f s window, wire %s, pushpull %d, %s; %ld cores\n", W, P,
           a.label, a.ps_addrs[0] ? "ps given" : "ps started here", a.seconds, dtype, o.pushpull,
           tfps_consistency_name(o.consistency), ncpu);
    printf("  start: the workers registered and warmed up (%d rounds each) %.1f s after the bench started\n", a.warmup,
           t_ready - t_start);
    double bytes_in = 0, bytes_out = 0, cpu_ps = 0;
    int lost = 0;
    for (int k = 0; status_ok && k < P; k++) {
        // async applies every push it gets (a non-finite one is refused, and counted as such)
        const uint64_t applied = s1[k].applied - s0[k].applied, refused = s1[k].nonfinite - s0[k].nonfinite;
        const int short_k = o.consistency == TFPS_CONSISTENCY_ASYNC && tfps_shard_plan_ps_elems(&plan, k) > 0 &&
                            applied + refused != total;
        lost |= short_k;
        bytes_in += (double)(s1[k].bytes_in - s0[k].bytes_in);
        bytes_out += (double)(s1[k].bytes_out - s0[k].bytes_out);
        printf("  ps %d (%s): applied %" PRIu64 " updates in the window (rounds %" PRIu64 "), %.1f MB in, %.1f MB out%s\n",
               k, targets[k], applied, total, (double)(s1[k].bytes_in - s0[k].bytes_in) / 1e6,
               (double)(s1[k].bytes_out - s0[k].bytes_out) / 1e6, short_k ? "  <-- pushes lost" : "");
    }
    int have_ps_cpu = ncpu_pids > 0;
    for (int k = 0; k < ncpu_pids; k++) {
        if (ps_cpu0[k] < 0 || ps_cpu1[k] < 0) have_ps_cpu = 0;   // gone, or not ours to read
        cpu_ps += ps_cpu1[k] - ps_cpu0[k];
    }
    const double bpr = total ? (bytes_in + bytes_out) / (double)total : 0;
    const double busy = total1 > total0 ? (busy1 - busy0) / (total1 - total0) : 0;
    printf("  rounds/s: %.1f in all (%" PRIu64 " rounds), per worker %.1f .. %.1f\n", rps, total,
           done_ok ? rps_min : 0.0, rps_max);
    printf("  round ms: p50 %.2f, p90 %.2f, p99 %.2f\n", p50 * 1e3, p90 * 1e3, p99 * 1e3);
    // against the fp32 model each way: what --wire-dtype saves shows here
    printf("  bytes per round (ps counters, messages, both directions): %.0f (%.0f up + %.0f down) = %.3f x the fp32 "
           "model both ways; %.3f GB/s\n", bpr, total ? bytes_in / (double)total : 0.0,
           total ? bytes_out / (double)total : 0.0, bpr / (2.0 * (double)l.total * sizeof(float)), rps * bpr / 1e9);
    // this bench's share of the machine: the workers' and (when known) the ps's CPU time over the window
    const double own = window > 0 ? (cpu_w + (have_ps_cpu ? cpu_ps : 0)) / (window * (double)ncpu) : 0;
    printf("  CPU per round: workers %.2f ms", total ? cpu_w / (double)total * 1e3 : 0.0);
    if (have_ps_cpu) printf(", ps %.2f ms", total ? cpu_ps / (double)total * 1e3 : 0.0);
    printf("; machine %.0f%% busy of %ld cores, this bench's %s%.0f%%%s\n", busy * 100, ncpu,
           have_ps_cpu ? "" : "workers ", own * 100,
           busy > 0.9 ? " (CPU-bound: the cell measured the cores, not the link)" : "");
    if (W + nps_started > ncpu)
        printf("  note: %d worker and %d ps processes share %ld cores\n", W, nps_started, ncpu);
    if (dropped || nonfinite) printf("  note: %" PRIu64 " rounds had a push dropped, %" PRIu64 " refused as non-finite\n",
                                     dropped, nonfinite);
    char ps_cpu_ms[32] = "-";   // the ps started elsewhere: not known here
    if (have_ps_cpu && total) snprintf(ps_cpu_ms, sizeof(ps_cpu_ms), "%.3f", cpu_ps / (double)total * 1e3);
    printf("RESULT link=%s W=%d P=%d dtype=%s rounds=%" PRIu64 " rps=%.2f rps_min=%.2f rps_max=%.2f "
           "bytes_per_round=%.0f gbs=%.4f p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f worker_cpu_ms=%.3f ps_cpu_ms=%s "
           "busy=%.2f own=%.2f ok=%d\n",
           a.label, W, P, dtype, total, rps, done_ok ? rps_min : 0.0, rps_max, bpr, rps * bpr / 1e9, p50 * 1e3,
           p90 * 1e3, p99 * 1e3, total ? cpu_w / (double)total * 1e3 : 0.0, ps_cpu_ms, busy, own,
           done_ok == nworkers && status_ok && !lost);
    if (done_ok == nworkers && status_ok && !lost) rc = 0;
    else if (lost) fprintf(stderr, "bench_comm: a ps applied fewer pushes than the workers counted rounds\n");

done:
    if (bc_stop) {
        fprintf(stderr, "bench_comm: stopped by signal %d\n", (int)bc_stop);
        rc = 128 + (int)bc_stop;
    }
    if (go_pipe[1] >= 0) close(go_pipe[1]);   // workers still waiting: they start and are killed below
    for (int i = 0; i < nworkers; i++)
        if (wpid[i] > 0) stop_pid(wpid[i], SIGKILL, 5.0);
    if (have_pc) tfps_psclient_destroy(&pc);
    if (rpc_up) tfps_rpc_shutdown();
    tfps_shard_plan_destroy(&plan);
    free(s0);
    free(s1);
    for (int k = 0; k < nps_started; k++) {
        int st = stop_pid(ps_pid[k], SIGTERM, 10.0);
        if (st != 0 && rc == 0) {
            fprintf(stderr, "bench_comm: ps %d exited %d (log: %s/ps-%d.log)\n", k, st, tmp, k);
            rc = 1;
        }
    }
    if (rc != 0 && have_tmp) {   // what the ps said
        for (int k = 0; k < nps_started; k++) {
            char path[128], line[512];
            snprintf(path, sizeof(path), "%s/ps-%d.log", tmp, k);
            FILE *f = fopen(path, "r");
            for (int n = 0; f && n < 10 && fgets(line, sizeof(line), f); n++) fprintf(stderr, "  ps %d: %s", k, line);
            if (f) fclose(f);
        }
    }
    if (have_tmp) {
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", tmp);
        if (system(cmd) != 0) fprintf(stderr, "bench_comm: could not remove %s\n", tmp);
    }
    if (ready_pipe[0] >= 0) close(ready_pipe[0]);
    if (go_pipe[0] >= 0) close(go_pipe[0]);
    if (shm != MAP_FAILED) munmap(shm, shm_len);
    free(a.opt_argv);
    return rc;
}
