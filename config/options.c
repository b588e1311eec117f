/* options.c -- see options.h. */
#define _GNU_SOURCE   /* sched_getaffinity, CPU_COUNT */
#include "options.h"
#include "log.h"
#include "tfps.h"

#include <cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <sched.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef enum { OPT_INT, OPT_I64, OPT_FLOAT, OPT_PATH, OPT_ENUM } opt_type;

typedef struct {
    const char *name;      /* flag without "--"; env is TFPS_ + upper-cased, '-' -> '_' */
    opt_type type;
    size_t off;            /* into tfps_options */
    const char *def;       /* default, parsed by the same code as user input */
    double min, max;       /* numeric limits, inclusive */
    const char *const *choices;   /* OPT_ENUM: NULL-terminated names, index = value */
    const char *help;
} opt_def;

static const char *const device_names[] = {"auto", "cpu", "cuda", NULL};
static const char *const strategy_names[] = {"balanced", "round-robin", "greedy", NULL};
static const char *const level_names[] = {"debug", "info", "warn", "error", NULL};
static const char *const consistency_names[] = {"async", "sync", "ssp", NULL};
static const char *const optimizer_names[] = {"sgd", "momentum", "adam", "adagrad", NULL};   /* = tfps_optim_kind */
static const char *const wire_dtype_names[] = {"fp32", "bf16", "fp16", NULL};   /* = tfps_wire_dtype (wire.h) */

#define OFF(f) offsetof(tfps_options, f)
static const opt_def opts[] = {
    {"data-folder", OPT_PATH, OFF(data_folder), "data/mnist", 0, 0, NULL,
     "folder with the four MNIST IDX files (.gz or raw); deploy/get-data.sh fills it"},
    {"batch-size", OPT_INT, OFF(batch_size), "64", 1, 65536, NULL, "examples per step per worker"},
    {"first-layer-neurons", OPT_INT, OFF(h1), "300", 1, 65536, NULL, "width of hidden layer 1"},
    {"second-layer-neurons", OPT_INT, OFF(h2), "100", 1, 65536, NULL, "width of hidden layer 2"},
    {"learning-rate", OPT_FLOAT, OFF(learning_rate), "0.1", 1e-9, 100, NULL, "learning rate of the optimizer (Keras's defaults: sgd 0.01, adam 0.001)"},
    {"epochs", OPT_INT, OFF(epochs), "10", 1, 100000, NULL, "passes over the training set"},
    {"steps", OPT_I64, OFF(steps), "0", 0, 1e12, NULL, "stop after this many steps; 0 = as --epochs gives"},
    {"output-dir", OPT_PATH, OFF(output_dir), "outputs", 0, 0, NULL,
     "where summary.json, model/, checkpoints/ and logs/ go"},
    {"seed", OPT_I64, OFF(seed), "1", 0, 9007199254740991.0, NULL, "seeds initial weights and shuffling"},
    {"device", OPT_ENUM, OFF(device), "auto", 0, 0, device_names, "gradient backend: auto, cpu or cuda"},
    {"gpu", OPT_INT, OFF(gpu), "0", 0, 1024, NULL, "CUDA device index among the visible ones (CUDA_VISIBLE_DEVICES)"},
    {"log-every", OPT_INT, OFF(log_every), "100", 0, 1000000000, NULL, "progress line every N steps; 0 = off"},
    {"shard-strategy", OPT_ENUM, OFF(shard_strategy), "balanced", 0, 0, strategy_names,
     "how the flat array is split over ps: balanced, round-robin or greedy"},
    {"threads", OPT_INT, OFF(threads), "0", 0, 1024, NULL, "OpenBLAS threads; 0 = library default"},
    {"log-level", OPT_ENUM, OFF(log_level), "info", 0, 0, level_names, "debug, info, warn or error"},
    {"startup-timeout", OPT_FLOAT, OFF(startup_timeout), "120", 1, 86400, NULL,
     "seconds a task waits for the ps (and the chief for the workers' registration) at start-up"},
    {"rpc-timeout", OPT_FLOAT, OFF(rpc_timeout), "60", 0.1, 86400, NULL,
     "seconds: deadline of each pull/push round; UNAVAILABLE is retried until then"},
    {"overlap", OPT_INT, OFF(overlap), "1", 0, 1, NULL,
     "1: a worker computes step t+1 while step t's push and pull are in flight (async SGD, weights one step "
     "stale); 0: strictly pull, compute, push"},
    {"pushpull", OPT_INT, OFF(pushpull), "1", 0, 1, NULL,
     "1: a step's push and pull to each ps as one PushPull call (one round trip); 0: a Push and a Pull"},
    {"wire-dtype", OPT_ENUM, OFF(wire_dtype), "fp32", 0, 0, wire_dtype_names,
     "number format of gradients and weights on the wire: fp32, bf16 or fp16 (half the bytes; gradients with "
     "error feedback, weights rounded to nearest; the ps keep fp32 weights and optimizer state and answer each "
     "worker in the format it asks for)"},
    {"ps-threads", OPT_INT, OFF(ps_threads), "0", 0, 64, NULL,
     "ps: threads taking calls off its completion queue (one handler at a time) and splitting an optimizer update "
     "over its ranges; 0 = the cores this process may run on, at most 16"},
    {"eval-every", OPT_FLOAT, OFF(eval_every), "2", 0.1, 86400, NULL, "evaluator task: seconds between evaluations"},
    {"consistency", OPT_ENUM, OFF(consistency), "async", 0, 0, consistency_names,
     "async: the ps apply each gradient on arrival (TF's default); sync: they apply the mean of "
     "--replicas-to-aggregate gradients per step (TF SyncReplicasOptimizer); ssp: async with a worker at most "
     "--staleness steps ahead of the slowest"},
    {"replicas-to-aggregate", OPT_INT, OFF(replicas_to_aggregate), "0", 0, 100000, NULL,
     "sync: gradients averaged per step; fewer than the training replicas = backup workers; 0 = all of them"},
    {"staleness", OPT_INT, OFF(staleness), "2", 0, 1000000, NULL,
     "ssp: steps a worker may run ahead of the slowest live worker (0 = a barrier every step)"},
    {"optimizer", OPT_ENUM, OFF(optimizer), "sgd", 0, 0, optimizer_names,
     "update rule, run on the ps (Keras's formulas): sgd, momentum, adam or adagrad"},
    {"momentum", OPT_FLOAT, OFF(momentum), "0.9", 0, 1, NULL, "momentum optimizer: the momentum"},
    {"nesterov", OPT_INT, OFF(nesterov), "0", 0, 1, NULL, "momentum optimizer: 1 = Nesterov momentum"},
    {"beta1", OPT_FLOAT, OFF(beta1), "0.9", 0, 0.9999999, NULL, "adam: decay of the first moment"},
    {"beta2", OPT_FLOAT, OFF(beta2), "0.999", 0, 0.9999999, NULL,
     "adam: decay of the second moment (below 1 - 1e-7, so 1 - beta2 stays a float above 0)"},
    {"epsilon", OPT_FLOAT, OFF(epsilon), "1e-07", 1e-12, 1, NULL, "adam, adagrad: the epsilon of the denominator"},
    {"initial-accumulator", OPT_FLOAT, OFF(initial_accumulator), "0.1", 0, 1e6, NULL,
     "adagrad: initial value of the accumulator"},
    {"checkpoint-dir", OPT_PATH, OFF(checkpoint_dir), NULL, 0, 0, NULL,
     "where the ps write step-N/ps-K.ckpt and the chief step-N/MANIFEST (default <output-dir>/checkpoints); a "
     "starting ps restores the newest complete one. Across hosts: a shared filesystem, as in TF"},
    {"checkpoint-every-secs", OPT_FLOAT, OFF(checkpoint_every_secs), "600", 0, 1e9, NULL,
     "chief: seconds between checkpoints (TF's default 600); 0 = none but the final one"},
    {"checkpoint-every-steps", OPT_I64, OFF(checkpoint_every_steps), "0", 0, 1e12, NULL,
     "chief: also a checkpoint every N of its own steps; 0 = off"},
    {"keep-checkpoints", OPT_INT, OFF(keep_checkpoints), "5", 1, 1000000, NULL,
     "complete checkpoints kept; older ones are removed (TF's max_to_keep)"},
    {"ps-recovery-timeout", OPT_FLOAT, OFF(ps_recovery_timeout), "300", 1, 86400, NULL,
     "seconds a task waits for an unreachable or restarted ps to come back before it exits non-zero"},
    {"heartbeat-secs", OPT_FLOAT, OFF(heartbeat_secs), "10", 0.1, 3600, NULL,
     "ps: a replica with no call for 3 intervals is marked dead (sync stops waiting for it, the chief too)"},
    {"idle-timeout", OPT_FLOAT, OFF(idle_timeout), "600", 1, 1e9, NULL,
     "ps: with no live training replica for this long, checkpoint and exit 1 (no ps outlives its job)"},
    {"job-secret-file", OPT_PATH, OFF(job_secret_file), NULL, 0, 0, NULL,
     "a file holding the job's shared secret (1..1024 bytes; one trailing newline ignored): the ps then accept only "
     "Registers that carry it. The secret itself may come from TFPS_JOB_SECRET instead. Give every task the same"},
    {"export-checkpoint", OPT_PATH, OFF(export_checkpoint), NULL, 0, 0, NULL,
     "tfps-worker: write <output-dir>/model from this checkpoint (a step-N folder, or a checkpoint folder: its "
     "newest complete one), evaluate it and exit"},
    {"max-streams", OPT_INT, OFF(max_streams), "64", 1, 1000000, NULL,
     "ps: concurrent calls per client connection (HTTP/2 MAX_CONCURRENT_STREAMS); more wait in the client"},
    {"memory-limit-mb", OPT_INT, OFF(memory_limit_mb), "1024", 16, 1048576, NULL,
     "ps: gRPC's memory quota, and replies sent but not yet read by their clients: beyond it new calls get "
     "UNAVAILABLE (clients retry until their deadline)"},
    {"max-open-files", OPT_I64, OFF(max_open_files), "0", 0, 1e9, NULL,
     "file descriptors (RLIMIT_NOFILE) a daemon sets at start, capped by the hard limit; 0 = the hard limit. "
     "Each client connection takes one"},
    {"slow-step-ms", OPT_INT, OFF(slow_step_ms), "0", 0, 600000, NULL,
     "testing: a worker sleeps this long after each step (a straggler, for the fault and backup-worker tests)"},
    {"tls-cert", OPT_PATH, OFF(tls_cert), NULL, 0, 0, NULL,
     "mTLS: this task's PEM certificate (signed by --tls-ca; deploy/make-certs.sh makes them); with --tls-key and "
     "--tls-ca, or none of the three for plaintext"},
    {"tls-key", OPT_PATH, OFF(tls_key), NULL, 0, 0, NULL, "mTLS: the PEM private key of --tls-cert (no passphrase)"},
    {"tls-ca", OPT_PATH, OFF(tls_ca), NULL, 0, 0, NULL,
     "mTLS: the PEM certificate of the CA every task's certificate is signed by; peers without one are refused"},
    {"bind", OPT_PATH, OFF(bind), NULL, 0, 0, NULL,
     "tfps-ps: HOST:PORT to listen on instead of its TF_CONFIG address (e.g. 0.0.0.0:2222 in a container whose "
     "address is a service name)"},
    {"model_dir", OPT_PATH, OFF(model_dir), NULL, 0, 0, NULL,
     "SageMaker/Estimator convention, accepted by both daemons: a URI (s3://...) is ignored with one info line; a "
     "local path is the output folder (as --output-dir) unless --output-dir is given as a flag"},
};
#define NOPTS (sizeof(opts) / sizeof(opts[0]))

const char *tfps_device_name(int d) { return d >= 0 && d <= TFPS_DEVICE_CUDA ? device_names[d] : "?"; }
int tfps_options_check_cluster(const tfps_options *o, int num_workers, char *err, size_t errlen) {
    if (o->consistency != TFPS_CONSISTENCY_SYNC) return TFPS_OK;
    const int r2a = o->replicas_to_aggregate;
    if (r2a > num_workers)
        return tfps_seterr(err, errlen, "--replicas-to-aggregate %d: expected at most the %d training replicas of "
                           "TF_CONFIG (0 = all)", r2a, num_workers);
    return TFPS_OK;
}

void tfps_options_optim(const tfps_options *o, tfps_optim *out) {
    *out = (tfps_optim){.kind = o->optimizer, .lr = (float)o->learning_rate, .momentum = (float)o->momentum,
                        .nesterov = o->nesterov, .beta1 = o->beta1, .beta2 = o->beta2,
                        .epsilon = (float)o->epsilon, .initial_accumulator = (float)o->initial_accumulator};
}

int tfps_options_ps_threads(const tfps_options *o) {
    if (o->ps_threads > 0) return o->ps_threads < TFPS_PS_THREADS_MAX ? o->ps_threads : TFPS_PS_THREADS_MAX;
    // the cores this process may run on (a container's cpuset, taskset), else the ones online
    long n = 0;
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0) n = CPU_COUNT(&set);
    if (n < 1) n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1) n = 1;
    return n < TFPS_PS_THREADS_DEFAULT_MAX ? (int)n : TFPS_PS_THREADS_DEFAULT_MAX;
}

int tfps_options_checkpoint_dir(const tfps_options *o, char *out, size_t n) {
    int len = o->checkpoint_dir[0] ? snprintf(out, n, "%s", o->checkpoint_dir)
                                   : snprintf(out, n, "%s/checkpoints", o->output_dir);
    return len >= 0 && (size_t)len < n ? TFPS_OK : TFPS_ERR;
}

const char *tfps_consistency_name(int c) {
    return c >= 0 && c <= TFPS_CONSISTENCY_SSP ? consistency_names[c] : "?";
}

static void env_name(const opt_def *d, char *buf, size_t n) {
    size_t j = (size_t)snprintf(buf, n, "TFPS_");
    for (const char *p = d->name; *p && j + 1 < n; p++) buf[j++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
    buf[j] = '\0';
}

static void describe_expected(const opt_def *d, char *buf, size_t n) {
    switch (d->type) {
    case OPT_INT:
    case OPT_I64: snprintf(buf, n, "an integer in %.0f..%.0f", d->min, d->max); break;
    case OPT_FLOAT: {
        char lo[TFPS_NUM_LEN], hi[TFPS_NUM_LEN];
        snprintf(buf, n, "a decimal number in %s..%s", tfps_fmt_double(lo, sizeof(lo), d->min),
                 tfps_fmt_double(hi, sizeof(hi), d->max));
        break;
    }
    case OPT_PATH: snprintf(buf, n, "a path of 1..%d bytes", TFPS_PATH_LEN - 1); break;
    case OPT_ENUM: {
        size_t j = (size_t)snprintf(buf, n, "one of");
        for (int i = 0; d->choices[i] && j < n; i++)
            j += (size_t)snprintf(buf + j, n - j, "%s %s", i ? "," : "", d->choices[i]);
        break;
    }
    }
}

/* The user's text as it goes into a message: at most 200 bytes, control
 * characters (a newline in a value) as '?', so the message stays one line
 * (found by tests/fuzz/fuzz_config). Returns out. */
static const char *shown(char out[208], const char *s) {
    size_t j = 0;
    for (; s[j] && j < 200; j++) out[j] = (unsigned char)s[j] < 0x20 || s[j] == 0x7f ? '?' : s[j];
    out[j] = '\0';
    return out;
}

/* Decimal notation only, the whole text: [+-]digits, and for a float
 * [+-](digits[.digits] | .digits)[(e|E)[+-]digits]. strtod and strtoll alone
 * would also take leading spaces, and strtod hex ("0x10" = 16), "inf",
 * "nan" and "1e" (as 1): a typo must not become a value. */
static int is_decimal(const char *s, int allow_fraction) {
    const char *p = s;
    if (*p == '+' || *p == '-') p++;
    size_t digits = strspn(p, "0123456789");
    p += digits;
    if (!allow_fraction) return digits > 0 && *p == '\0';
    if (*p == '.') {
        size_t frac = strspn(p + 1, "0123456789");
        p += 1 + frac;
        digits += frac;
    }
    if (digits == 0) return 0;   // ".", "+", "e5"
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '+' || *p == '-') p++;
        size_t exp = strspn(p, "0123456789");
        if (exp == 0) return 0;   // "1e", "1e+"
        p += exp;
    }
    return *p == '\0';
}

/* Parses text into the field of d; `source` names where it came from for the
 * message ("--batch-size" or "TFPS_BATCH_SIZE"). */
static int set_option(tfps_options *o, const opt_def *d, const char *text, const char *source, char *err,
                      size_t errlen) {
    char *field = (char *)o + d->off, expected[256];
    char *end = NULL;
    describe_expected(d, expected, sizeof(expected));
    errno = 0;
    switch (d->type) {
    case OPT_INT:
    case OPT_I64: {
        if (!is_decimal(text, 0)) goto bad;
        long long v = strtoll(text, &end, 10);
        if (!*text || *end || errno || (double)v < d->min || (double)v > d->max) goto bad;
        if (d->type == OPT_INT) *(int *)field = (int)v;
        else *(long long *)field = v;
        return TFPS_OK;
    }
    case OPT_FLOAT: {
        if (!is_decimal(text, 1)) goto bad;
        double v = strtod(text, &end);
        if (!*text || *end || errno || !isfinite(v) || v < d->min || v > d->max) goto bad;
        *(double *)field = v;
        return TFPS_OK;
    }
    case OPT_PATH:
        if (!*text || strlen(text) >= TFPS_PATH_LEN) goto bad;
        memcpy(field, text, strlen(text) + 1);
        return TFPS_OK;
    case OPT_ENUM:
        for (int i = 0; d->choices[i]; i++)
            if (strcmp(text, d->choices[i]) == 0) {
                *(int *)field = i;
                return TFPS_OK;
            }
        goto bad;
    }
bad:;
    char txt[208];
    return tfps_seterr(err, errlen, "%s: invalid value \"%s\": expected %s", source, shown(txt, text), expected);
}

/* The job secret: from --job-secret-file (TFPS_JOB_SECRET_FILE), else from
 * TFPS_JOB_SECRET itself; both is a mistake (which one was meant?). */
static int load_job_secret(tfps_options *o, char *err, size_t errlen) {
    const char *env = getenv("TFPS_JOB_SECRET");
    char path[208];   // the path as messages show it (shown)
    o->job_secret_len = 0;
    if (o->job_secret_file[0] && env)
        return tfps_seterr(err, errlen, "--job-secret-file %s and TFPS_JOB_SECRET are both set: expected one of "
                           "them", shown(path, o->job_secret_file));
    if (env) {
        size_t n = strlen(env);
        if (n == 0 || n > TFPS_JOB_SECRET_MAX)
            return tfps_seterr(err, errlen, "TFPS_JOB_SECRET: %zu bytes: expected 1..%d", n, TFPS_JOB_SECRET_MAX);
        memcpy(o->job_secret, env, n);
        o->job_secret_len = n;
        return TFPS_OK;
    }
    if (!o->job_secret_file[0]) return TFPS_OK;
    FILE *f = fopen(o->job_secret_file, "rb");
    if (!f)
        return tfps_seterr(err, errlen, "--job-secret-file %s: %s: expected a readable file holding the secret",
                           shown(path, o->job_secret_file), strerror(errno));
    uint8_t buf[TFPS_JOB_SECRET_MAX + 3];
    size_t n = fread(buf, 1, sizeof(buf), f);
    const int bad = ferror(f);
    fclose(f);
    if (bad) return tfps_seterr(err, errlen, "--job-secret-file %s: read error", shown(path, o->job_secret_file));
    if (n && buf[n - 1] == '\n') n--;   // the newline an editor or echo adds
    if (n && buf[n - 1] == '\r') n--;
    if (n == 0 || n > TFPS_JOB_SECRET_MAX)
        return tfps_seterr(err, errlen, "--job-secret-file %s: %s: expected 1..%d bytes of secret",
                           shown(path, o->job_secret_file), n ? "too long" : "empty", TFPS_JOB_SECRET_MAX);
    memcpy(o->job_secret, buf, n);
    o->job_secret_len = n;
    return TFPS_OK;
}

int tfps_options_model_dir_is_uri(const tfps_options *o) { return strstr(o->model_dir, "://") != NULL; }

int tfps_options_parse(tfps_options *o, int argc, char **argv, char *err, size_t errlen) {
    int output_dir_flag = 0;   /* --output-dir given as a flag: it wins over a local --model_dir */
    memset(o, 0, sizeof(*o));
    for (size_t i = 0; i < NOPTS; i++)   // no default (NULL): stays empty, the code picks (see the help)
        if (opts[i].def && set_option(o, &opts[i], opts[i].def, "default", err, errlen) != TFPS_OK) return TFPS_ERR;
    for (size_t i = 0; i < NOPTS; i++) {
        char name[64];
        env_name(&opts[i], name, sizeof(name));
        const char *v = getenv(name);
        if (v && set_option(o, &opts[i], v, name, err, errlen) != TFPS_OK) return TFPS_ERR;
    }
    for (int a = 1; a < argc; a++) {
        const char *arg = argv[a];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) { o->help = 1; continue; }
        if (strcmp(arg, "--version") == 0) { o->version = 1; continue; }
        if (strcmp(arg, "--print-cluster") == 0) { o->print_cluster = 1; continue; }
        if (strcmp(arg, "--print-task-type") == 0) { o->print_task_type = 1; continue; }
        char txt[208];
        if (strncmp(arg, "--", 2) != 0)
            return tfps_seterr(err, errlen, "unexpected argument \"%s\": expected --option value (see --help)",
                               shown(txt, arg));
        const char *name = arg + 2, *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        const opt_def *d = NULL;
        for (size_t i = 0; i < NOPTS; i++)
            if (strlen(opts[i].name) == nlen && strncmp(opts[i].name, name, nlen) == 0) d = &opts[i];
        if (!d) return tfps_seterr(err, errlen, "unknown option \"%s\": see --help for the options", shown(txt, arg));
        const char *val = eq ? eq + 1 : NULL;
        if (!val) {
            if (a + 1 >= argc)
                return tfps_seterr(err, errlen, "--%s: missing value: expected --%s VALUE", d->name, d->name);
            val = argv[++a];
        }
        char source[80];
        snprintf(source, sizeof(source), "--%s", d->name);
        if (set_option(o, d, val, source, err, errlen) != TFPS_OK) return TFPS_ERR;
        if (d->off == OFF(output_dir)) output_dir_flag = 1;
    }
    // SageMaker passes --model_dir s3://...: the platform uploads SM_MODEL_DIR itself, so a URI is only noted
    // (tfps_daemon_setup logs it); a local path is where the outputs go
    if (o->model_dir[0] && !tfps_options_model_dir_is_uri(o) && !output_dir_flag)
        memcpy(o->output_dir, o->model_dir, strlen(o->model_dir) + 1);
    return load_job_secret(o, err, errlen);
}

void tfps_options_usage(FILE *f, const char *prog, const char *what) {
    fprintf(f, "usage: %s [--option VALUE]... [--print-cluster] [--print-task-type] [--help] [--version]\n\n%s\n\n",
            prog, what);
    fprintf(f, "Options (flag, environment variable, default, accepted values):\n");
    for (size_t i = 0; i < NOPTS; i++) {
        char env[64], expected[256];
        env_name(&opts[i], env, sizeof(env));
        describe_expected(&opts[i], expected, sizeof(expected));
        fprintf(f, "  --%-22s %-28s default %s\n      %s; %s\n", opts[i].name, env,
                opts[i].def ? opts[i].def : "(none)", opts[i].help, expected);
    }
    fprintf(f, "\nActions:\n"
               "  --print-cluster          resolve TF_CONFIG and options, print the cluster as JSON, exit 0\n"
               "  --print-task-type        print TF_CONFIG's task.type (chief, master, worker, ps, evaluator; local\n"
               "                           when TF_CONFIG is unset) after checking TF_CONFIG, exit 0; the container\n"
               "                           entrypoint (deploy/entrypoint.sh) picks the daemon by it\n"
               "  --help                   this text\n"
               "  --version                print the version\n\n"
               "TF_CONFIG (environment) describes the cluster exactly as TensorFlow reads it; unset means\n"
               "local mode: tfps-worker trains in one process.\n");
}

void tfps_options_usage_of(FILE *f, const char *const *names) {
    for (int k = 0; names && names[k]; k++)
        for (size_t i = 0; i < NOPTS; i++) {
            if (strcmp(opts[i].name, names[k]) != 0) continue;
            char env[64], expected[256];
            env_name(&opts[i], env, sizeof(env));
            describe_expected(&opts[i], expected, sizeof(expected));
            fprintf(f, "  --%-22s %-28s default %s\n      %s; %s\n", opts[i].name, env,
                    opts[i].def ? opts[i].def : "(none)", opts[i].help, expected);
        }
}

void tfps_options_to_json(const tfps_options *o, cJSON *obj) {
    for (size_t i = 0; i < NOPTS; i++) {
        const opt_def *d = &opts[i];
        const char *field = (const char *)o + d->off;
        switch (d->type) {
        case OPT_INT: cJSON_AddNumberToObject(obj, d->name, *(const int *)field); break;
        case OPT_I64: cJSON_AddNumberToObject(obj, d->name, (double)*(const long long *)field); break;
        case OPT_FLOAT: cJSON_AddNumberToObject(obj, d->name, *(const double *)field); break;
        case OPT_PATH: cJSON_AddStringToObject(obj, d->name, field); break;
        case OPT_ENUM: cJSON_AddStringToObject(obj, d->name, d->choices[*(const int *)field]); break;
        }
    }
}
