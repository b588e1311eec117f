#define _POSIX_C_SOURCE 200809L
/* test_train.c -- local mode end to end: the real tfps-worker binary, TF_CONFIG
 * unset, trains on the offline MNIST digits (deploy/get-data.sh mnist) and
 * must reach at least 90% test accuracy; summary.json must say so, and a
 * second run with the same flags must give the same numbers. This run is the
 * reference every distributed run is compared with. A run stopped and started
 * again resumes from its checkpoint to the same model file, byte for byte. */
#include "testutil.h"

#include <CUnit/Basic.h>
#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *WORKER = TFPS_BIN_DIR "/tfps-worker";
static char data_dir[1024];

static cJSON *train(const char *out_dir, const char *threads) {
    const char *argv[] = {WORKER, "--data-folder", data_dir, "--output-dir", out_dir, "--epochs", "10",
                          "--batch-size", "64", "--learning-rate", "0.1", "--seed", "1", "--threads", threads,
                          "--log-every", "500", NULL};
    const char *env[] = {"TF_CONFIG", NULL};
    char *out = NULL, *err = NULL;
    int rc = tu_run(argv, env, &out, &err);
    if (rc != 0) printf("\n  tfps-worker exited %d: %s", rc, err);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "test accuracy"));   // the final summary line on stdout
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "loss"));            // progress lines
    free(out);
    free(err);
    char path[1200];
    snprintf(path, sizeof(path), "%s/summary.json", out_dir);
    cJSON *j = tu_read_json(path);   // written and valid JSON
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    return j;
}

static double num(cJSON *j, const char *k) {
    cJSON *v = cJSON_GetObjectItem(j, k);
    CU_ASSERT_FATAL(cJSON_IsNumber(v));
    return v->valuedouble;
}

static void test_local_training(void) {
    char d1[] = "/tmp/tfps-train-aXXXXXX", d2[] = "/tmp/tfps-train-bXXXXXX";
    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(d1));
    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(d2));
    cJSON *a = train(d1, "1");
    double acc = num(a, "test_accuracy");
    printf("\n  local run: test accuracy %.4f, %g steps, %.0f examples/s ", acc, num(a, "steps"),
           num(a, "examples_per_s"));
    CU_ASSERT(acc >= 0.90);
    CU_ASSERT(acc <= 1.0);
    // 10 epochs of ceil(train_examples / 64) steps
    double per_epoch = (double)(((long long)num(a, "train_examples") + 63) / 64);
    CU_ASSERT_EQUAL(num(a, "steps"), 10 * per_epoch);
    CU_ASSERT(num(a, "examples_per_s") > 0);
    CU_ASSERT(num(a, "wall_s") >= num(a, "train_s"));
    cJSON *opts = cJSON_GetObjectItem(a, "options");
    CU_ASSERT_EQUAL(cJSON_GetObjectItem(opts, "batch-size")->valueint, 64);
    CU_ASSERT_STRING_EQUAL(cJSON_GetObjectItem(opts, "data-folder")->valuestring, data_dir);
    // same flags, same numbers
    cJSON *b = train(d2, "1");
    CU_ASSERT_EQUAL(num(b, "test_accuracy"), acc);
    CU_ASSERT_EQUAL(num(b, "final_loss"), num(a, "final_loss"));
    cJSON_Delete(a);
    cJSON_Delete(b);
    char cmd[200];
    snprintf(cmd, sizeof(cmd), "rm -rf %s %s", d1, d2);
    CU_ASSERT(system(cmd) == 0);
}

/* A diverging run (SGD at lr 100 on a wide model: the gradients turn NaN
 * within ~15 steps) stops on its own: its updates are refused as
 * non-finite (the weights stay finite), each of the first 10 and the 100th
 * logged, and after 100 in a row the worker exits 1 saying the training
 * diverged and to lower --learning-rate (worker/loop.h). */
static void test_diverging_run(void) {
    char d[] = "/tmp/tfps-train-dXXXXXX";
    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(d));
    const char *argv[] = {WORKER, "--data-folder", data_dir, "--output-dir", d, "--learning-rate", "100",
                          "--first-layer-neurons", "2048", "--second-layer-neurons", "1024", "--steps", "300",
                          "--threads", "1", "--log-every", "0", "--device", "cpu", NULL};
    const char *env[] = {"TF_CONFIG", NULL};
    char *out = NULL, *err = NULL;
    int rc = tu_run(argv, env, &out, &err);
    CU_ASSERT_EQUAL(rc, 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "training diverged: the updates of the last 100 steps"));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "lower --learning-rate (now 100)"));
    int warned = 0;
    for (const char *p = err; (p = strstr(p, "refused the update as non-finite")); p++) warned++;
    printf("\n  diverging run: exit %d, %d refusal lines", rc, warned);
    CU_ASSERT_EQUAL(warned, 11);   // the first 10 and the 100th
    CU_ASSERT_PTR_NULL(strstr(out, "test accuracy"));   // no summary line: the run failed
    free(out);
    free(err);
    char cmd[200];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", d);
    CU_ASSERT(system(cmd) == 0);
}

/* A whole file's bytes (malloc'd, *n its size); NULL if unreadable. */
static unsigned char *read_bytes(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    unsigned char *b = NULL;
    long len = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    if (len >= 0 && fseek(f, 0, SEEK_SET) == 0 && (b = malloc((size_t)len + 1)) &&
        fread(b, 1, (size_t)len, f) != (size_t)len) {
        free(b);
        b = NULL;
    }
    fclose(f);
    *n = len >= 0 ? (size_t)len : 0;
    return b;
}

/* One local run of `steps` steps (Adam: its moments and t are in the
 * checkpoint too) into out_dir, a checkpoint every 20 steps; its stderr. */
static char *resume_run(const char *out_dir, const char *steps) {
    const char *argv[] = {WORKER, "--data-folder", data_dir, "--output-dir", out_dir, "--steps", steps,
                          "--checkpoint-every-steps", "20", "--optimizer", "adam", "--learning-rate", "0.001",
                          "--threads", "1", NULL};
    const char *env[] = {"TF_CONFIG", NULL};
    char *err = NULL;
    int rc = tu_run(argv, env, NULL, &err);
    if (rc != 0) printf("\n  tfps-worker --steps %s exited %d: %s", steps, rc, err);
    CU_ASSERT_EQUAL(rc, 0);
    return err ? err : calloc(1, 1);
}

/* Local mode resumes from its newest checkpoint: 60 steps, then the same
 * command with --steps 100 and the same --output-dir takes step-60 and
 * trains the 40 left; its model file equals, byte for byte, the one of 100
 * steps without a stop (the weights, the optimizer's state and the data
 * position all came back). */
static void test_local_resume(void) {
    char d1[] = "/tmp/tfps-train-rXXXXXX", d2[] = "/tmp/tfps-train-uXXXXXX";
    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(d1));
    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(d2));
    free(resume_run(d1, "60"));
    char *again = resume_run(d1, "100"), *whole = resume_run(d2, "100");
    char needle[200];
    snprintf(needle, sizeof(needle), "resumed from %s/checkpoints/step-60: step 60 of 100", d1);
    CU_ASSERT_PTR_NOT_NULL(strstr(again, needle));
    CU_ASSERT_PTR_NULL(strstr(whole, "resumed from"));   // a new --output-dir starts over
    free(again);
    free(whole);
    char path[300];
    snprintf(path, sizeof(path), "%s/summary.json", d1);
    cJSON *j = tu_read_json(path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    CU_ASSERT_EQUAL(num(j, "first_step"), 60);   // 40 steps trained, not 100
    CU_ASSERT_EQUAL(num(j, "steps"), 100);
    cJSON_Delete(j);
    size_t n1 = 0, n2 = 0;
    snprintf(path, sizeof(path), "%s/model/model.tfps", d1);
    unsigned char *m1 = read_bytes(path, &n1);
    snprintf(path, sizeof(path), "%s/model/model.tfps", d2);
    unsigned char *m2 = read_bytes(path, &n2);
    CU_ASSERT_FATAL(m1 && m2);
    printf("\n  model.tfps: %zu bytes resumed, %zu uninterrupted", n1, n2);
    CU_ASSERT(n1 == n2 && n1 > 0 && memcmp(m1, m2, n1) == 0);
    free(m1);
    free(m2);
    char cmd[200];
    snprintf(cmd, sizeof(cmd), "rm -rf %s %s", d1, d2);
    CU_ASSERT(system(cmd) == 0);
}

int main(void) {
    if (tu_test_data(data_dir, sizeof(data_dir), TFPS_DEFAULT_TEST_DATA, "test_train")) return 1;
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("local_training", NULL, NULL);
    // TFPS_TEST_ONLY=substring runs only the tests whose name holds it
    const char *only = getenv("TFPS_TEST_ONLY");
#define CU_add_test(s, name, fn) ((!only || strstr(name, only)) ? CU_add_test(s, name, fn) : NULL)
    CU_add_test(s, "one process reaches >= 90% on the offline digits, reproducibly", test_local_training);
    CU_add_test(s, "a diverging run stops after 100 refused updates in a row, exit 1", test_diverging_run);
    CU_add_test(s, "resume: 60 steps, then 100 from its step-60 = 100 without a stop, byte for byte", test_local_resume);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    int failed = (int)(CU_get_number_of_tests_failed() + CU_get_number_of_suites_failed());
    CU_cleanup_registry();
    return failed;
}
