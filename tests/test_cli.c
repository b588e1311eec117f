/* test_cli.c -- the real tfps-ps and tfps-worker binaries: flags, errors,
 * --print-cluster, role checks. Every user mistake exits 2 with one line that
 * names what was wrong. */
#include "options.h"
#include "testutil.h"
#include "tfps.h"

#include <CUnit/Basic.h>
#include <math.h>
#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    int failed = (int)(CU_get_number_of_tests_failed() + CU_get_number_of_suites_failed());
    CU_cleanup_registry();
    return failed;
}
