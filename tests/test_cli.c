/* test_cli.c -- the real tfps-ps and tfps-worker binaries: flags, errors,
 * --print-cluster, role checks, --tls-* and --bind. Every user mistake exits
 * 2 with one line that names what was wrong. */
#define _POSIX_C_SOURCE 200809L
#include "options.h"
#include "testutil.h"
#include "tfps.h"

#include <CUnit/Basic.h>
#include <arpa/inet.h>
#include <math.h>
#include <cJSON.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char *PS = TFPS_BIN_DIR "/tfps-ps";
static const char *WORKER = TFPS_BIN_DIR "/tfps-worker";

#define CLUSTER2x2 "\"cluster\": {\"worker\": [\"127.0.0.1:5001\", \"127.0.0.1:5002\"], " \
                   "\"ps\": [\"127.0.0.1:5003\", \"127.0.0.1:5004\"]}"

/* Runs bin with the given flags and TF_CONFIG (NULL: unset); asserts the exit
 * code; returns stdout (caller frees); *errout gets stderr when not NULL. */
static char *run(const char *bin, const char *tf_config, int want_rc, char **errout, const char *a1, const char *a2,
                 const char *a3) {
    const char *argv[] = {bin, a1, a2, a3, NULL};
    char envbuf[2048];
    const char *env[] = {envbuf, "TFPS_BATCH_SIZE", "TFPS_LOG_LEVEL", NULL};
    if (tf_config) snprintf(envbuf, sizeof(envbuf), "TF_CONFIG=%s", tf_config);
    else snprintf(envbuf, sizeof(envbuf), "TF_CONFIG");
    char *out = NULL, *err = NULL;
    int rc = tu_run(argv, env, &out, &err);
    if (rc != want_rc) printf("\n  %s exited %d, expected %d; stderr: %s", bin, rc, want_rc, err);
    CU_ASSERT_EQUAL(rc, want_rc);
    if (errout) *errout = err;
    else free(err);
    return out;
}

static void test_version_help(void) {
    // both print the version of CMake's project(), the one source of it
    char *out = run(WORKER, NULL, 0, NULL, "--version", NULL, NULL);
    CU_ASSERT_STRING_EQUAL(out, "tfps-worker " TFPS_PROJECT_VERSION "\n");
    free(out);
    out = run(PS, NULL, 0, NULL, "--version", NULL, NULL);
    CU_ASSERT_STRING_EQUAL(out, "tfps-ps " TFPS_PROJECT_VERSION "\n");
    free(out);
    out = run(PS, NULL, 0, NULL, "--help", NULL, NULL);
    const char *flags[] = {"--data-folder", "--batch-size", "--first-layer-neurons", "--second-layer-neurons",
                           "--learning-rate", "--epochs", "--steps", "--output-dir", "--seed", "--device",
                           "--log-every", "--print-cluster", "TFPS_BATCH_SIZE", "default 64", "default 300"};
    for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
        if (!strstr(out, flags[i])) printf("\n  --help lacks %s", flags[i]);
        CU_ASSERT_PTR_NOT_NULL(strstr(out, flags[i]));
    }
    free(out);
}

static void expect_usage_error(const char *bin, const char *tf, const char *a1, const char *a2, const char *needle) {
    char *err = NULL;
    free(run(bin, tf, 2, &err, a1, a2, NULL));
    if (!strstr(err, needle)) printf("\n  stderr lacks \"%s\": %s", needle, err);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, needle));
    CU_ASSERT_EQUAL(tu_count_lines(err), 1);
    free(err);
}

static void test_bad_flags(void) {
    expect_usage_error(WORKER, NULL, "--batch-size", "0", "--batch-size: invalid value \"0\": expected an integer in 1..65536");
    expect_usage_error(WORKER, NULL, "--learning-rate", "fast", "--learning-rate: invalid value \"fast\"");
    expect_usage_error(WORKER, NULL, "--device", "tpu", "expected one of auto, cpu, cuda");
    expect_usage_error(PS, NULL, "--bogus", "1", "unknown option \"--bogus\"");
    expect_usage_error(WORKER, NULL, "--epochs", NULL, "--epochs: missing value");
    expect_usage_error(WORKER, NULL, "stray", NULL, "unexpected argument \"stray\"");
    expect_usage_error(WORKER, NULL, "--consistency", "bsp", "expected one of async, sync, ssp");
    // options that depend on the cluster, on both daemons
    const char *tfw = "{" CLUSTER2x2 ", \"task\": {\"type\": \"worker\", \"index\": 0}}";
    const char *tfp = "{" CLUSTER2x2 ", \"task\": {\"type\": \"ps\", \"index\": 0}}";
    expect_usage_error(WORKER, tfw, "--consistency=sync", "--replicas-to-aggregate=3",
                       "--replicas-to-aggregate 3: expected at most the 2 training replicas");
    expect_usage_error(PS, tfp, "--consistency=sync", "--replicas-to-aggregate=3",
                       "--replicas-to-aggregate 3: expected at most the 2 training replicas");
    // backup workers over 2 ps are taken (ps 0 decides each step's members: worker/psclient.h)
    free(run(PS, tfp, 0, NULL, "--consistency=sync", "--replicas-to-aggregate=1", "--print-cluster"));
    free(run(WORKER, tfw, 0, NULL, "--consistency=sync", "--replicas-to-aggregate=1", "--print-cluster"));
    // the environment is checked too, and named
    const char *argv[] = {WORKER, "--print-cluster", NULL}, *env[] = {"TFPS_BATCH_SIZE=abc", "TF_CONFIG", NULL};
    char *err = NULL;
    CU_ASSERT_EQUAL(tu_run(argv, env, NULL, &err), 2);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "TFPS_BATCH_SIZE: invalid value \"abc\""));
    free(err);
}

/* Flags and environment values are decimal only: strtod alone took
 * "--learning-rate 0x10" as 16, "inf", "nan", and "1e" as 1. Each is now a
 * one-line exit 2 naming the flag (or variable), the value and what is
 * accepted; the decimal forms people write still parse to the right value. */
static void test_decimal_only(void) {
    const char *bad_float[] = {"0x10", "inf", "nan", "1e", "1 2", " 0.5", "0.5 ", "1e+", ".", "+", "1..2", "0x1p-3",
                               "infinity", "1,5", ""};
    for (size_t i = 0; i < sizeof(bad_float) / sizeof(bad_float[0]); i++) {
        char needle[128];
        snprintf(needle, sizeof(needle), "--learning-rate: invalid value \"%s\": expected a decimal number in "
                 "1e-09..100", bad_float[i]);
        expect_usage_error(WORKER, NULL, "--learning-rate", bad_float[i], needle);
    }
    const char *bad_int[] = {"0x10", "1e3", "64.", " 64", "64 ", "+0x1", "inf", "nan", "1 2", "6_4"};
    for (size_t i = 0; i < sizeof(bad_int) / sizeof(bad_int[0]); i++) {
        char needle[128];
        snprintf(needle, sizeof(needle), "--batch-size: invalid value \"%s\": expected an integer in 1..65536",
                 bad_int[i]);
        expect_usage_error(PS, NULL, "--batch-size", bad_int[i], needle);
    }
    expect_usage_error(WORKER, NULL, "--seed", "0x10", "--seed: invalid value \"0x10\"");
    // a newline in a value is shown as '?': the message stays one line (found by tests/fuzz/fuzz_config)
    expect_usage_error(WORKER, NULL, "--learning-rate", "1\n2", "--learning-rate: invalid value \"1?2\"");
    expect_usage_error(WORKER, NULL, "--no\nsuch", "1", "unknown option \"--no?such\"");
    // the environment: the same rule, the variable named
    const char *argv[] = {WORKER, "--print-cluster", NULL};
    const char *bad_env[] = {"TFPS_LEARNING_RATE=0x10", "TFPS_MOMENTUM=nan", "TFPS_EPOCHS=0x10", "TFPS_BETA1=1e"};
    for (size_t i = 0; i < sizeof(bad_env) / sizeof(bad_env[0]); i++) {
        const char *env[] = {bad_env[i], "TF_CONFIG", NULL};
        char *err = NULL, name[64];
        snprintf(name, sizeof(name), "%.*s: invalid value", (int)(strchr(bad_env[i], '=') - bad_env[i]), bad_env[i]);
        CU_ASSERT_EQUAL(tu_run(argv, env, NULL, &err), 2);
        if (!strstr(err, name)) printf("\n  %s: stderr lacks \"%s\": %s", bad_env[i], name, err);
        CU_ASSERT_PTR_NOT_NULL(strstr(err, name));
        CU_ASSERT_EQUAL(tu_count_lines(err), 1);
        free(err);
    }
    // still accepted, by the binaries...
    const char *good[] = {"1e-3", ".5", "5.", "0.1", "+2", "1E2", "2.5e-1"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        free(run(WORKER, NULL, 0, NULL, "--learning-rate", good[i], "--print-cluster"));
    // ... and to these values
    const struct {
        const char *text;
        double want;
    } vals[] = {{"1e-3", 1e-3}, {".5", 0.5}, {"5.", 5.0}, {"+2", 2.0}, {"1E2", 100.0}, {"2.5e-1", 0.25}};
    for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
        char *args[] = {"test", "--learning-rate", (char *)vals[i].text, "--batch-size", "+32", NULL};
        tfps_options o;
        char err[TFPS_ERR_LEN];
        CU_ASSERT_FATAL(tfps_options_parse(&o, 5, args, err, sizeof(err)) == TFPS_OK);
        CU_ASSERT_EQUAL(o.learning_rate, vals[i].want);
        CU_ASSERT_EQUAL(o.batch_size, 32);
    }
}

/* Numbers in messages (Register's mismatches, the optimizer's description)
 * are printed in their shortest exact form: two different values never
 * print alike, round ones stay short. */
static void test_numbers_print_exactly(void) {
    char a[TFPS_NUM_LEN], b[TFPS_NUM_LEN];
    CU_ASSERT_STRING_EQUAL(tfps_fmt_double(a, sizeof(a), 0.1), "0.1");
    CU_ASSERT_STRING_EQUAL(tfps_fmt_double(a, sizeof(a), 0.1 + 0.2), "0.30000000000000004");
    CU_ASSERT_STRING_NOT_EQUAL(tfps_fmt_double(a, sizeof(a), 0.1), tfps_fmt_double(b, sizeof(b), nextafter(0.1, 1)));
    CU_ASSERT_STRING_EQUAL(tfps_fmt_double(a, sizeof(a), 600), "600");
    CU_ASSERT_STRING_EQUAL(tfps_fmt_double(a, sizeof(a), 1e-9), "1e-09");
    CU_ASSERT_STRING_EQUAL(tfps_fmt_double(a, sizeof(a), 0.9999999), "0.9999999");   // %g said 1
    CU_ASSERT_STRING_EQUAL(tfps_fmt_float(a, sizeof(a), 0.1f), "0.1");
    CU_ASSERT_STRING_EQUAL(tfps_fmt_float(a, sizeof(a), 1e-7f), "1e-07");
    CU_ASSERT_STRING_NOT_EQUAL(tfps_fmt_float(a, sizeof(a), 0.1f), tfps_fmt_float(b, sizeof(b), nextafterf(0.1f, 1)));
    // every double read back from its text is the same double (random bit patterns, finite ones)
    uint64_t x = 0x9E3779B97F4A7C15ULL;
    for (int i = 0; i < 100000; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        double d;
        memcpy(&d, &x, sizeof(d));
        if (!isfinite(d)) continue;
        if (strtod(tfps_fmt_double(a, sizeof(a), d), NULL) != d) {
            printf("\n  %s does not read back as %a", a, d);
            CU_FAIL("round trip");
            break;
        }
        float f = (float)(d / 1e300);
        if ((float)strtod(tfps_fmt_float(a, sizeof(a), f), NULL) != f) {
            printf("\n  %s does not read back as %a", a, (double)f);
            CU_FAIL("float round trip");
            break;
        }
    }
}

static void test_print_cluster(void) {
    const char *tf = "{" CLUSTER2x2 ", \"task\": {\"type\": \"worker\", \"index\": 1}}";
    char *out = run(WORKER, tf, 0, NULL, "--print-cluster", NULL, NULL);
    cJSON *j = cJSON_Parse(out);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    CU_ASSERT_STRING_EQUAL(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "task"), "type")->valuestring, "worker");
    CU_ASSERT_EQUAL(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "task"), "index")->valueint, 1);
    CU_ASSERT(cJSON_IsFalse(cJSON_GetObjectItem(j, "is_chief")));   // worker 0 is the chief
    CU_ASSERT_EQUAL(cJSON_GetObjectItem(j, "num_ps")->valueint, 2);
    CU_ASSERT_EQUAL(cJSON_GetObjectItem(j, "num_workers")->valueint, 2);
    cJSON *ps = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "cluster"), "ps");
    CU_ASSERT_EQUAL(cJSON_GetArraySize(ps), 2);
    CU_ASSERT_STRING_EQUAL(cJSON_GetArrayItem(ps, 1)->valuestring, "127.0.0.1:5004");
    cJSON *plan = cJSON_GetObjectItem(j, "shard_plan");
    CU_ASSERT_EQUAL(cJSON_GetArraySize(plan), 2);
    double bytes = 0;
    cJSON *r;
    cJSON_ArrayForEach(r, plan) bytes += cJSON_GetObjectItem(r, "bytes")->valuedouble;
    CU_ASSERT_EQUAL(bytes, 1066440);
    CU_ASSERT_EQUAL(cJSON_GetObjectItem(cJSON_GetArrayItem(plan, 0), "end")->valuedouble, 133305);
    char digest[32];
    snprintf(digest, sizeof(digest), "%s", cJSON_GetObjectItem(j, "shard_plan_digest")->valuestring);
    cJSON_Delete(j);
    free(out);

    // the ps of the same cluster computes the same plan; it is no chief
    const char *tfps = "{" CLUSTER2x2 ", \"task\": {\"type\": \"ps\", \"index\": 0}}";
    out = run(PS, tfps, 0, NULL, "--print-cluster", NULL, NULL);
    j = cJSON_Parse(out);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    CU_ASSERT_STRING_EQUAL(cJSON_GetObjectItem(j, "shard_plan_digest")->valuestring, digest);
    CU_ASSERT(cJSON_IsFalse(cJSON_GetObjectItem(j, "is_chief")));
    cJSON_Delete(j);
    free(out);

    // round-robin: TF's split, ps 0 holds the kernels
    out = run(PS, tfps, 0, NULL, "--print-cluster", "--shard-strategy", "round-robin");
    j = cJSON_Parse(out);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    double ps0 = 0;
    cJSON_ArrayForEach(r, cJSON_GetObjectItem(j, "shard_plan")) if (cJSON_GetObjectItem(r, "ps")->valueint == 0) ps0 +=
        cJSON_GetObjectItem(r, "bytes")->valuedouble;
    CU_ASSERT_EQUAL(ps0, 1064800);
    CU_ASSERT_STRING_NOT_EQUAL(cJSON_GetObjectItem(j, "shard_plan_digest")->valuestring, digest);
    cJSON_Delete(j);
    free(out);

    // chief job: the chief is the chief task, which counts as a worker replica
    const char *tfc = "{\"cluster\": {\"chief\": [\"h0:1\"], \"worker\": [\"h1:1\"], \"ps\": [\"h2:1\"]}, "
                      "\"task\": {\"type\": \"chief\", \"index\": 0}, \"environment\": \"cloud\"}";
    out = run(WORKER, tfc, 0, NULL, "--print-cluster", NULL, NULL);
    j = cJSON_Parse(out);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    CU_ASSERT(cJSON_IsTrue(cJSON_GetObjectItem(j, "is_chief")));
    CU_ASSERT_EQUAL(cJSON_GetObjectItem(j, "num_workers")->valueint, 2);
    cJSON_Delete(j);
    free(out);

    // local mode: TF_CONFIG unset
    out = run(WORKER, NULL, 0, NULL, "--print-cluster", NULL, NULL);
    j = cJSON_Parse(out);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    CU_ASSERT_STRING_EQUAL(cJSON_GetObjectItem(j, "mode")->valuestring, "local");
    CU_ASSERT(cJSON_IsTrue(cJSON_GetObjectItem(j, "is_chief")));
    CU_ASSERT_EQUAL(cJSON_GetObjectItem(j, "num_workers")->valueint, 1);
    cJSON_Delete(j);
    free(out);
}

/* The output-dir and model_dir of --print-cluster's options (caller frees both). */
static void print_cluster_dirs(const char *bin, const char *tf, const char *a1, const char *a2, const char *a3,
                               char **output_dir, char **model_dir, char **err) {
    char *out = run(bin, tf, 0, err, a1, a2, a3);
    cJSON *j = cJSON_Parse(out), *o = cJSON_GetObjectItem(j, "options");
    CU_ASSERT_PTR_NOT_NULL_FATAL(o);
    *output_dir = strdup(cJSON_GetObjectItem(o, "output-dir")->valuestring);
    *model_dir = strdup(cJSON_GetObjectItem(o, "model_dir")->valuestring);
    cJSON_Delete(j);
    free(out);
}

static void test_model_dir_and_task_type(void) {
    const char *tfps = "{" CLUSTER2x2 ", \"task\": {\"type\": \"ps\", \"index\": 1}}";
    const char *tfw = "{" CLUSTER2x2 ", \"task\": {\"type\": \"worker\", \"index\": 0}}";
    char *od, *md, *err;
    // SageMaker's s3:// model_dir: accepted by both daemons, ignored with one info line
    print_cluster_dirs(PS, tfps, "--print-cluster", "--model_dir", "s3://bucket/job/model", &od, &md, &err);
    CU_ASSERT_STRING_EQUAL(od, "outputs");
    CU_ASSERT_STRING_EQUAL(md, "s3://bucket/job/model");
    CU_ASSERT_PTR_NOT_NULL(strstr(err, " I --model_dir s3://bucket/job/model: a URI, ignored"));
    CU_ASSERT_EQUAL(tu_count_lines(err), 1);
    free(od), free(md), free(err);
    // a local path is the output folder, in both flag forms
    print_cluster_dirs(WORKER, tfw, "--print-cluster", "--model_dir=/tmp/tfps-md", NULL, &od, &md, &err);
    CU_ASSERT_STRING_EQUAL(od, "/tmp/tfps-md");
    CU_ASSERT_STRING_EQUAL(err, "");
    free(od), free(md), free(err);
    // ... unless --output-dir is a flag, before or after it
    print_cluster_dirs(WORKER, NULL, "--print-cluster", "--output-dir=/tmp/tfps-od", "--model_dir=/tmp/tfps-md", &od,
                       &md, NULL);
    CU_ASSERT_STRING_EQUAL(od, "/tmp/tfps-od");
    CU_ASSERT_STRING_EQUAL(md, "/tmp/tfps-md");
    free(od), free(md);
    char *out = run(WORKER, NULL, 0, NULL, "--model_dir=/tmp/tfps-md", "--output-dir=/tmp/tfps-od", "--print-cluster");
    cJSON *j = cJSON_Parse(out);
    CU_ASSERT_STRING_EQUAL(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "options"), "output-dir")->valuestring,
                           "/tmp/tfps-od");
    cJSON_Delete(j);
    free(out);
    // it needs a value like every option
    expect_usage_error(WORKER, NULL, "--print-cluster", "--model_dir", "--model_dir: missing value");
    // the help documents it
    out = run(PS, NULL, 0, NULL, "--help", NULL, NULL);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "--model_dir"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "--print-task-type"));
    free(out);

    // --print-task-type: the entrypoint's question, answered by either daemon for any task
    const char *types[] = {"chief", "master", "worker", "ps", "evaluator"};
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        char tf[512];
        snprintf(tf, sizeof(tf), "{\"cluster\": {\"%s\": [\"h0:1\"], \"worker\": [\"h1:1\"], \"ps\": [\"h2:1\"]}, "
                 "\"task\": {\"type\": \"%s\", \"index\": 0}}", strcmp(types[i], "master") ? "chief" : "master",
                 types[i]);
        char want[32];
        snprintf(want, sizeof(want), "%s\n", types[i]);
        for (int b = 0; b < 2; b++) {
            out = run(b ? PS : WORKER, tf, 0, NULL, "--print-task-type", NULL, NULL);
            if (strcmp(out, want) != 0) printf("\n  %s: --print-task-type printed \"%s\"", types[i], out);
            CU_ASSERT_STRING_EQUAL(out, want);
            free(out);
        }
    }
    out = run(PS, NULL, 0, NULL, "--print-task-type", NULL, NULL);
    CU_ASSERT_STRING_EQUAL(out, "local\n");
    free(out);
    expect_usage_error(WORKER, "{" CLUSTER2x2 ", \"task\": {\"type\": \"trainer\", \"index\": 0}}",
                       "--print-task-type", NULL, "task.type \"trainer\" unknown");
}

static void test_roles_and_tf_config_errors(void) {
    const char *tfw = "{" CLUSTER2x2 ", \"task\": {\"type\": \"worker\", \"index\": 0}}";
    const char *tfps = "{" CLUSTER2x2 ", \"task\": {\"type\": \"ps\", \"index\": 1}}";
    expect_usage_error(PS, tfw, "--print-cluster", NULL, "run tfps-worker");
    expect_usage_error(WORKER, tfps, "--print-cluster", NULL, "run tfps-ps");
    expect_usage_error(PS, NULL, "--print-cluster", NULL, "TF_CONFIG is not set");
    // the seeds' example, trailing comma and all
    expect_usage_error(WORKER,
                       "{\"cluster\": {\"worker\": [\"localhost:12345\", \"localhost:23456\"], \"ps\": "
                       "[\"localhost:34567\"],}, \"task\": {\"type\": \"worker\", \"index\": 0}}",
                       "--print-cluster", NULL, "trailing comma");
    expect_usage_error(WORKER, "{" CLUSTER2x2 ", \"task\": {\"type\": \"worker\", \"index\": 3}}", "--print-cluster",
                       NULL, "task.index 3");
}

static void test_local_user_errors(void) {
    expect_usage_error(WORKER, NULL, "--data-folder", "/nonexistent/tfps-data", "/nonexistent/tfps-data");
    // the rest needs real data: without it the worker would stop at the data folder, not at --device
    char data_dir[1024];
    if (tu_test_data(data_dir, sizeof(data_dir), TFPS_DEFAULT_TEST_DATA, "test_cli")) {
        CU_FAIL("no MNIST data (see the line above): --device cuda --gpu 1000 not checked");
        return;
    }
    // no machine has a visible GPU 1000, and a build without CUDA refuses --device cuda outright
    const char *argv[] = {WORKER, "--data-folder", data_dir, "--device", "cuda", "--gpu", "1000", NULL};
    const char *env[] = {"TF_CONFIG", NULL};
    char *err = NULL;
    CU_ASSERT_EQUAL(tu_run(argv, env, NULL, &err), 2);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "--device cuda"));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, " E "));   // logged as an error line
    free(err);
}

/* Runs bin with argv (NULL-terminated, without bin) and TF_CONFIG tf (NULL:
 * unset); asserts the exit code and that stderr holds needle (on one line
 * when one_line); returns stderr (caller frees). */
static char *run_args(const char *bin, const char *tf, const char *const *args, int want_rc, const char *needle,
                      int one_line) {
    const char *argv[24] = {bin};
    int n = 1;
    for (; args[n - 1] && n < 23; n++) argv[n] = args[n - 1];
    argv[n] = NULL;
    char envbuf[2048];
    const char *env[] = {envbuf, "TFPS_LOG_LEVEL", "TFPS_TLS_CERT", "TFPS_TLS_KEY", "TFPS_TLS_CA", "TFPS_BIND", NULL};
    if (tf) snprintf(envbuf, sizeof(envbuf), "TF_CONFIG=%s", tf);
    else snprintf(envbuf, sizeof(envbuf), "TF_CONFIG");
    char *err = NULL;
    int rc = tu_run(argv, env, NULL, &err);
    if (rc != want_rc || (needle && !strstr(err, needle)) || (one_line && tu_count_lines(err) != 1))
        printf("\n  %s %s ... exited %d (expected %d with \"%s\"); stderr: %s", bin, args[0], rc, want_rc,
               needle ? needle : "", err);
    CU_ASSERT_EQUAL(rc, want_rc);
    if (needle) CU_ASSERT_PTR_NOT_NULL(strstr(err, needle));
    if (one_line) CU_ASSERT_EQUAL(tu_count_lines(err), 1);
    return err;
}

static char certs[64];   /* made by deploy/make-certs.sh: certs/a (CA a), certs/b (CA b) */

static const char *cert(const char *ca, const char *file) {
    static char buf[8][128];
    static int k;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof(buf[k]), "%s/%s/%s", certs, ca, file);
    return buf[k];
}

static void test_tls_flags(void) {
    char cmd[2048];
    snprintf(certs, sizeof(certs), "/tmp/tfps-cli-tls-XXXXXX");
    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(certs));
    snprintf(cmd, sizeof(cmd),
             "set -e; tf='{\"cluster\": {\"worker\": [\"127.0.0.1:5001\"], \"ps\": [\"127.0.0.1:5003\"]}}';"
             "bash " TFPS_SOURCE_DIR "/deploy/make-certs.sh --out %s/a --days 2 \"$tf\" 2>/dev/null;"
             "bash " TFPS_SOURCE_DIR "/deploy/make-certs.sh --out %s/b --days 2 \"$tf\" 2>/dev/null;"
             // with the ps's key, signed by CA a: expired yesterday; and one for servers only
             "cd %s/a; openssl req -new -key ps-0.key -subj /CN=old -out x.csr;"
             "printf 'extendedKeyUsage=serverAuth,clientAuth\\nsubjectAltName=IP:127.0.0.1\\n' >both.ext;"
             "printf 'extendedKeyUsage=serverAuth\\nsubjectAltName=IP:127.0.0.1\\n' >server.ext;"
             "openssl x509 -req -in x.csr -CA ca.pem -CAkey ca.key -set_serial 9 -days -1 -extfile both.ext "
             "-out expired.pem 2>/dev/null;"
             "openssl x509 -req -in x.csr -CA ca.pem -CAkey ca.key -set_serial 10 -days 2 -extfile server.ext "
             "-out server-only.pem 2>/dev/null",
             certs, certs, certs);
    CU_ASSERT_EQUAL_FATAL(system(cmd), 0);
    const char *tfp = "{\"cluster\": {\"worker\": [\"127.0.0.1:5001\"], \"ps\": [\"127.0.0.1:5003\"]}, "
                      "\"task\": {\"type\": \"ps\", \"index\": 0}}";
    const char *tfw = "{\"cluster\": {\"worker\": [\"127.0.0.1:5001\"], \"ps\": [\"127.0.0.1:5003\"]}, "
                      "\"task\": {\"type\": \"worker\", \"index\": 0}}";
    // a regression that let the daemons start would end quickly, not hang: idle and start-up timeouts of 1 s
    const char *cert_only[] = {"--tls-cert", cert("a", "ps-0.pem"), "--idle-timeout", "1", NULL};
    free(run_args(PS, tfp, cert_only, 2, "missing --tls-key --tls-ca", 1));
    const char *no_file[] = {"--tls-cert", cert("a", "nope.pem"), "--tls-key", cert("a", "ps-0.key"), "--tls-ca",
                             cert("a", "ca.pem"), "--idle-timeout", "1", NULL};
    free(run_args(PS, tfp, no_file, 2, "nope.pem: cannot be read: No such file", 1));
    const char *wrong_key[] = {"--tls-cert", cert("a", "ps-0.pem"), "--tls-key", cert("a", "worker-0.key"), "--tls-ca",
                               cert("a", "ca.pem"), "--idle-timeout", "1", NULL};
    free(run_args(PS, tfp, wrong_key, 2, "worker-0.key does not match --tls-cert", 1));
    const char *other_ca[] = {"--tls-cert", cert("b", "ps-0.pem"), "--tls-key", cert("b", "ps-0.key"), "--tls-ca",
                              cert("a", "ca.pem"), "--idle-timeout", "1", NULL};
    free(run_args(PS, tfp, other_ca, 2, "is not signed by --tls-ca", 1));
    const char *other_ca_w[] = {"--tls-cert", cert("b", "worker-0.pem"), "--tls-key", cert("b", "worker-0.key"),
                                "--tls-ca", cert("a", "ca.pem"), "--startup-timeout", "1", NULL};
    free(run_args(WORKER, tfw, other_ca_w, 2, "is not signed by --tls-ca", 1));
    const char *swapped[] = {"--tls-cert", cert("a", "ps-0.key"), "--tls-key", cert("a", "ps-0.pem"), "--tls-ca",
                             cert("a", "ca.pem"), "--idle-timeout", "1", NULL};
    free(run_args(PS, tfp, swapped, 2, "no PEM certificate in it (it holds a private key)", 1));
    const char *key_as_ca[] = {"--tls-cert", cert("a", "ps-0.pem"), "--tls-key", cert("a", "ps-0.key"), "--tls-ca",
                               cert("a", "ps-0.key"), "--idle-timeout", "1", NULL};
    free(run_args(PS, tfp, key_as_ca, 2, "--tls-ca", 1));
    const char *expired[] = {"--tls-cert", cert("a", "expired.pem"), "--tls-key", cert("a", "ps-0.key"), "--tls-ca",
                             cert("a", "ca.pem"), "--idle-timeout", "1", NULL};
    free(run_args(PS, tfp, expired, 2, "expired.pem: the certificate expired on", 1));
    // serverAuth only: a ps may serve with it, a worker may not present it
    const char *server_only[] = {"--tls-cert", cert("a", "server-only.pem"), "--tls-key", cert("a", "ps-0.key"),
                                 "--tls-ca", cert("a", "ca.pem"), "--print-cluster", NULL};
    free(run_args(PS, tfp, server_only, 0, NULL, 0));
    free(run_args(WORKER, tfw, server_only, 2, "is not for a TLS client (tfps-worker): its extendedKeyUsage lacks "
                  "clientAuth", 1));
    // good files: accepted (on --print-cluster, which checks them too, and exits 0)
    const char *good[] = {"--tls-cert", cert("a", "ps-0.pem"), "--tls-key", cert("a", "ps-0.key"), "--tls-ca",
                          cert("a", "ca.pem"), "--print-cluster", NULL};
    free(run_args(PS, tfp, good, 0, NULL, 0));
    // local mode ignores them
    const char *local[] = {"--tls-cert", "/nonexistent", "--bind", "junk", "--print-cluster", NULL};
    free(run_args(WORKER, NULL, local, 0, NULL, 0));
    // the environment too: TFPS_TLS_CERT alone
    const char *argv[] = {PS, "--idle-timeout", "1", NULL};
    char tfenv[512], certenv[256];
    snprintf(tfenv, sizeof(tfenv), "TF_CONFIG=%s", tfp);
    snprintf(certenv, sizeof(certenv), "TFPS_TLS_CERT=%s", cert("a", "ps-0.pem"));
    const char *env[] = {tfenv, certenv, "TFPS_TLS_KEY", "TFPS_TLS_CA", NULL};
    char *err = NULL;
    CU_ASSERT_EQUAL(tu_run(argv, env, NULL, &err), 2);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "missing --tls-key --tls-ca"));
    free(err);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", certs);
    CU_ASSERT(system(cmd) == 0);
}

/* Runs a shell command line; returns its exit code and stdout+stderr (caller frees). */
static int sh(const char *cmd, char **out) {
    const char *argv[] = {"/bin/bash", "-c", cmd, NULL};
    char *o = NULL, *e = NULL;
    int rc = tu_run(argv, NULL, &o, &e);
    size_t n = strlen(o ? o : "") + strlen(e ? e : "") + 1;
    *out = malloc(n);
    snprintf(*out, n, "%s%s", o ? o : "", e ? e : "");
    free(o);
    free(e);
    return rc;
}

static void test_make_certs(void) {
    char dir[] = "/tmp/tfps-cli-certs-XXXXXX", cmd[2048], *out = NULL;
    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(dir));
    // a file holding TF_CONFIG: a name, an IPv4 and an IPv6 address, a sparse job, an evaluator
    snprintf(cmd, sizeof(cmd),
             "cd %s && printf '%%s' '{\"cluster\": {\"chief\": [\"h0.example:2222\"], \"worker\": {\"1\": "
             "\"10.1.2.3:2222\"}, \"ps\": [\"[fd00::5]:2222\"], \"evaluator\": [\"h4:1\"]}}' >tf.json && "
             "bash " TFPS_SOURCE_DIR "/deploy/make-certs.sh --out c --days 3 tf.json 2>/dev/null && ls c | tr '\\n' ' ' && "
             "stat -c %%a c/ps-0.key && openssl verify -CAfile c/ca.pem c/chief-0.pem c/worker-1.pem c/ps-0.pem "
             "c/evaluator-0.pem && for t in chief-0 worker-1 ps-0; do "
             "openssl x509 -noout -ext subjectAltName,extendedKeyUsage -in c/$t.pem | tr -d '\\n'; echo; done && "
             "openssl x509 -noout -enddate -in c/ps-0.pem",
             dir);
    int rc = sh(cmd, &out);
    if (rc != 0) printf("\n  make-certs: %s", out);
    CU_ASSERT_EQUAL(rc, 0);
    const char *want[] = {
        "ca.key ca.pem chief-0.key chief-0.pem evaluator-0.key evaluator-0.pem ps-0.key ps-0.pem worker-1.key "
        "worker-1.pem",
        " 600\n", "c/worker-1.pem: OK", "c/ps-0.pem: OK", "c/evaluator-0.pem: OK",
        "Usage:     TLS Web Client AuthenticationX509v3 Subject Alternative Name:     DNS:h0.example",   // chief: client only
        "Usage:     TLS Web Server Authentication, TLS Web Client AuthenticationX509v3 Subject Alternative Name:     "
        "IP Address:FD00",   // the ps: both
        "DNS:h0.example, DNS:localhost, IP Address:127.0.0.1",
        "IP Address:10.1.2.3, DNS:localhost, IP Address:127.0.0.1",
        "IP Address:FD00:0:0:0:0:0:0:5, DNS:localhost, IP Address:127.0.0.1"};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        if (!strstr(out, want[i])) printf("\n  make-certs output lacks \"%s\":\n%s", want[i], out);
        CU_ASSERT_PTR_NOT_NULL(strstr(out, want[i]));
    }
    free(out);
    // again into the same folder: the CA is kept, new certificates still verify against it
    snprintf(cmd, sizeof(cmd), "cd %s && sum=$(sha256sum c/ca.pem) && bash " TFPS_SOURCE_DIR "/deploy/make-certs.sh "
             "--out c tf.json && [ \"$sum\" = \"$(sha256sum c/ca.pem)\" ] && openssl verify -CAfile c/ca.pem c/ps-0.pem",
             dir);
    CU_ASSERT_EQUAL(rc = sh(cmd, &out), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "reusing the CA"));
    if (rc != 0) printf("\n  make-certs again: %s", out);
    free(out);
    // bad input: exit 2, one line, nothing written
    const char *bad[][2] = {
        {"--days 0 '{\"cluster\": {\"ps\": [\"a:1\"]}}'", "--days \"0\": expected an integer in 1..36500"},
        {"'{\"cluster\": {\"ps\": [\"a:1\"],}}'", "TF_CONFIG: invalid JSON"},
        {"'{\"cluster\": {}}'", "no \"cluster\" object with tasks"},
        {"'{\"cluster\": {\"ps\": [\"a:1\"], \"boss\": [\"b:1\"]}}'", "cluster.boss: unknown job"},
        {"'{\"cluster\": {\"ps\": [\"no-port\"]}}'", "cluster.ps[0] \"no-port\": expected host:port"},
        {"nosuchfile.json", "neither a file nor TF_CONFIG JSON"},
        {"--bogus x", "unknown option \"--bogus\""},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(cmd, sizeof(cmd), "cd %s && TF_CONFIG= bash " TFPS_SOURCE_DIR "/deploy/make-certs.sh --out bad %s",
                 dir, bad[i][0]);
        rc = sh(cmd, &out);
        if (rc != 2 || !strstr(out, bad[i][1]) || tu_count_lines(out) != 1)
            printf("\n  make-certs %s: exit %d: %s", bad[i][0], rc, out);
        CU_ASSERT_EQUAL(rc, 2);
        CU_ASSERT_PTR_NOT_NULL(strstr(out, bad[i][1]));
        CU_ASSERT_EQUAL(tu_count_lines(out), 1);
        free(out);
    }
    snprintf(cmd, sizeof(cmd), "test ! -e %s/bad && rm -rf %s", dir, dir);
    CU_ASSERT(system(cmd) == 0);
}

static int tcp_connect(const char *ip, int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, ip, &a.sin_addr);
    int rc = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0 ? 0 : errno;
    close(fd);
    return rc;
}

static void test_bind(void) {
    const char *junk[] = {"--bind", "junk", "--idle-timeout", "1", NULL};
    const char *tfp = "{" CLUSTER2x2 ", \"task\": {\"type\": \"ps\", \"index\": 0}}";
    free(run_args(PS, tfp, junk, 2, "--bind: address \"junk\": no port", 1));
    const char *port0[] = {"--bind", "0.0.0.0:0", "--idle-timeout", "1", NULL};
    free(run_args(PS, tfp, port0, 2, "--bind: address \"0.0.0.0:0\"", 1));

    char dir[] = "/tmp/tfps-cli-bind-XXXXXX", tf[512], log[1200], bind[64];
    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(dir));
    // an address no interface here has (TEST-NET-1): the ps says so and points at --bind
    const int p = tu_free_port();
    snprintf(tf, sizeof(tf), "{\"cluster\": {\"worker\": [\"127.0.0.1:5001\"], \"ps\": [\"192.0.2.1:%d\"]}, "
             "\"task\": {\"type\": \"ps\", \"index\": 0}}", p);
    const char *elsewhere[] = {"--idle-timeout", "1", "--output-dir", dir, NULL};
    free(run_args(PS, tf, elsewhere, 2, "--bind HOST:PORT", 0));
    // --bind overrides it; the plaintext warning names the address that is not loopback
    snprintf(bind, sizeof(bind), "127.0.0.1:%d", p);
    const char *bound[] = {"--bind", bind, "--idle-timeout", "1", "--output-dir", dir, NULL};
    char *err = run_args(PS, tf, bound, 1, "(--bind, port", 0);   // exit 1: --idle-timeout
    char needle[128];
    snprintf(needle, sizeof(needle), "plaintext: cluster.ps[0] 192.0.2.1:%d is not loopback", p);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, needle));
    free(err);

    // a ps listens on its own TF_CONFIG address only: 127.0.0.1, not 127.0.0.2 (every interface would take both)
    snprintf(tf, sizeof(tf), "TF_CONFIG={\"cluster\": {\"worker\": [\"127.0.0.1:5001\"], \"ps\": "
             "[\"127.0.0.1:%d\"]}, \"task\": {\"type\": \"ps\", \"index\": 0}}", p);
    snprintf(log, sizeof(log), "%s/ps.log", dir);
    const char *argv[] = {PS, "--idle-timeout", "20", "--output-dir", dir, NULL}, *env[] = {tf, NULL};
    int pid = tu_spawn(argv, env, log), up = 0;
    for (int i = 0; i < 100 && !up; i++) {
        up = tcp_connect("127.0.0.1", p) == 0;
        if (!up) nanosleep(&(struct timespec){0, 100000000}, NULL);
    }
    CU_ASSERT(up);
    int other = tcp_connect("127.0.0.2", p);
    if (other != ECONNREFUSED) printf("\n  connect to 127.0.0.2:%d: %s (expected refused)", p, strerror(other));
    CU_ASSERT_EQUAL(other, ECONNREFUSED);
    kill(pid, SIGTERM);
    CU_ASSERT_EQUAL(tu_wait(pid, 20), 0);
    char *plog = tu_read_file(log);
    snprintf(needle, sizeof(needle), "serving 127.0.0.1:%d (its TF_CONFIG address, port %d) over plaintext", p, p);
    CU_ASSERT_PTR_NOT_NULL(plog && strstr(plog, needle));
    CU_ASSERT(plog && !strstr(plog, "not loopback"));   // every address loopback: no warning
    free(plog);
    snprintf(log, sizeof(log), "rm -rf %s", dir);
    CU_ASSERT(system(log) == 0);
}

int main(void) {
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("cli", NULL, NULL);
    CU_add_test(s, "--version and --help", test_version_help);
    CU_add_test(s, "bad flags and environment exit 2 with one line", test_bad_flags);
    CU_add_test(s, "flags and environment: decimal numbers only", test_decimal_only);
    CU_add_test(s, "numbers in messages print exactly", test_numbers_print_exactly);
    CU_add_test(s, "--print-cluster on both daemons", test_print_cluster);
    CU_add_test(s, "wrong daemon for the task, TF_CONFIG errors", test_roles_and_tf_config_errors);
    CU_add_test(s, "local mode user errors", test_local_user_errors);
    CU_add_test(s, "--model_dir (SageMaker) and --print-task-type (the entrypoint)", test_model_dir_and_task_type);
    CU_add_test(s, "--tls-cert/--tls-key/--tls-ca checked at start: exit 2, one line", test_tls_flags);
    CU_add_test(s, "the ps binds its TF_CONFIG address or --bind; bad --bind exits 2", test_bind);
    CU_add_test(s, "deploy/make-certs.sh: CA, a certificate per task with its SANs; bad input exits 2", test_make_certs);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    int failed = (int)(CU_get_number_of_tests_failed() + CU_get_number_of_suites_failed());
    CU_cleanup_registry();
    return failed;
}
