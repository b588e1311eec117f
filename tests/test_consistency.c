/* test_consistency.c -- the consistency models and optimizers with real
 * tfps-ps and tfps-worker processes (deploy/local-cluster.sh) on loopback.
 *
 * - sync, 2 ps + 2 workers: >= 0.90 on the digits; the same run again, and
 *   with 1 and 3 ps, writes byte-identical model files (rank-order sums,
 *   elementwise updates: neither arrival order nor sharding changes a bit);
 * - sync, 3 workers, --replicas-to-aggregate 2, one worker slowed, with 1
 *   and with 2 ps: the run finishes and the slow one's gradients are
 *   counted as dropped;
 * - replicas with different --steps (sync and ssp): no hang, all exit 0;
 * - ssp, staleness 2, one worker slowed: the ps never answered a read more
 *   than 2 clocks ahead of the slowest live worker, and it did hold reads;
 * - 1 ps + 1 worker without overlap equals local mode bit for bit with
 *   momentum (Nesterov), adam and adagrad (sgd: test_cluster). */
#define _POSIX_C_SOURCE 200809L
#include "model.h"
#include "testutil.h"

#include <CUnit/Basic.h>
#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char data_dir[1024];
static const char *WORKER = TFPS_BIN_DIR "/tfps-worker";

static double num(const cJSON *s, const char *key) {
    const cJSON *v = cJSON_GetObjectItem(s, key);
    if (!cJSON_IsNumber(v)) {
        printf("\n  summary.json has no number \"%s\"", key);
        CU_FAIL("summary field missing");
        return -1;
    }
    return v->valuedouble;
}

/* Runs local-cluster.sh with --ps P --workers N and extra args (NULL-ended)
 * into out; returns its exit code. Prints its output on failure. */
static int cluster(int P, int N, const char *out, const char *const *extra) {
    char ps[8], ws[8];
    snprintf(ps, sizeof(ps), "%d", P);
    snprintf(ws, sizeof(ws), "%d", N);
    const char *argv[48] = {"/bin/bash", TFPS_SOURCE_DIR "/deploy/local-cluster.sh", "--ps", ps, "--workers", ws,
                            "--data-folder", data_dir, "--output-dir", out, "--log-every", "0"};
    int a = 12;
    for (int i = 0; extra && extra[i] && a < 47; i++) argv[a++] = extra[i];
    argv[a] = NULL;
    const char *env[] = {"TFPS_BIN=" TFPS_BIN_DIR, "TF_CONFIG", NULL};
    char *so = NULL, *se = NULL;
    int rc = tu_run(argv, env, &so, &se);
    if (rc != 0) printf("\n  local-cluster.sh --ps %d --workers %d exited %d:\n%s\n%s", P, N, rc, so, se);
    free(so);
    free(se);
    return rc;
}

static char *model_bytes(const char *out, size_t *len) {
    char path[1200];
    snprintf(path, sizeof(path), "%s/model/model.tfps", out);
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n);
    *len = fread(b, 1, (size_t)n, f);
    fclose(f);
    return b;
}

static char root[] = "/tmp/tfps-consistency-XXXXXX";

static void sub(char *buf, size_t n, const char *name) { snprintf(buf, n, "%s/%s", root, name); }

static void test_sync_reaches_90_and_is_bit_exact(void) {
    const char *args[] = {"--consistency", "sync", "--epochs", "12", "--learning-rate", "0.2", NULL};
    char out[4][1100];
    const int ps[4] = {2, 2, 1, 3};
    const char *names[4] = {"sync-2ps", "sync-2ps-again", "sync-1ps", "sync-3ps"};
    for (int i = 0; i < 4; i++) {
        sub(out[i], sizeof(out[i]), names[i]);
        CU_ASSERT_EQUAL_FATAL(cluster(ps[i], 2, out[i], args), 0);
    }
    char path[1200];
    snprintf(path, sizeof(path), "%s/summary.json", out[0]);
    cJSON *s = tu_read_json(path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    const double acc = num(s, "test_accuracy");
    printf("\n  sync 2 ps + 2 workers: test accuracy %.4f, %g steps, dropped %g ", acc, num(s, "steps"),
           num(s, "dropped"));
    CU_ASSERT(acc >= 0.90);
    CU_ASSERT_STRING_EQUAL(cJSON_GetStringValue(cJSON_GetObjectItem(s, "consistency")), "sync");
    CU_ASSERT_EQUAL(num(s, "dropped"), 0);
    // every step averages both replicas: steps = one worker's steps
    CU_ASSERT_EQUAL(num(s, "aggregated"), 2 * num(s, "steps"));
    cJSON_Delete(s);
    size_t n0 = 0, n;
    char *m0 = model_bytes(out[0], &n0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m0);
    for (int i = 1; i < 4; i++) {
        char *m = model_bytes(out[i], &n);
        int same = m && n == n0 && memcmp(m, m0, n) == 0;
        if (!same) printf("\n  %s: model.tfps differs from %s", names[i], names[0]);
        CU_ASSERT(same);
        free(m);
    }
    free(m0);
}

/* With 1 ps, and with 2 (ps 0 decides each step's members for both:
 * worker/psclient.h): every process exits 0, the slow one's gradients are dropped. */
static void test_backup_worker_dropped(void) {
    for (int P = 1; P <= 2; P++) {
        char out[1100], name[32];
        snprintf(name, sizeof(name), "backup-%dps", P);
        sub(out, sizeof(out), name);
        const char *args[] = {"--consistency", "sync", "--replicas-to-aggregate", "2", "--steps", "80",
                              "--task-args", "worker-2", "--slow-step-ms 40", NULL};
        CU_ASSERT_EQUAL_FATAL(cluster(P, 3, out, args), 0);   // every process exited 0 (the launcher checks each)
        char path[1200];
        snprintf(path, sizeof(path), "%s/summary.json", out);
        cJSON *s = tu_read_json(path);
        CU_ASSERT_PTR_NOT_NULL_FATAL(s);
        printf("\n  %d ps, 3 workers, 2 aggregated, worker 2 slowed: %g steps, %g gradients dropped ", P,
               num(s, "steps"), num(s, "dropped"));
        CU_ASSERT(num(s, "dropped") > 0);
        cJSON_Delete(s);
        // the slow worker said so in its own log: its dropped steps
        snprintf(path, sizeof(path), "%s/logs/worker-2.log", out);
        char *log = tu_read_file(path);
        CU_ASSERT_PTR_NOT_NULL(log && strstr(log, "dropped as stale"));
        free(log);
    }
}

static void test_different_steps_no_hang(void) {
    const char *modes[] = {"sync", "ssp"};
    for (int i = 0; i < 2; i++) {
        char out[1100], name[32];
        snprintf(name, sizeof(name), "steps-%s", modes[i]);
        sub(out, sizeof(out), name);
        const char *args[] = {"--consistency", modes[i], "--steps", "60", "--task-args", "worker-1", "--steps 25",
                              "--task-args", "worker-2", "--steps 40", NULL};
        CU_ASSERT_EQUAL(cluster(2, 3, out, args), 0);   // every process exited 0 (the launcher checks each)
    }
}

static void test_ssp_bound_held(void) {
    char out[1100];
    sub(out, sizeof(out), "ssp");
    const char *args[] = {"--consistency", "ssp", "--staleness", "2", "--steps", "60", "--task-args", "worker-1",
                          "--slow-step-ms 30", NULL};
    CU_ASSERT_EQUAL_FATAL(cluster(2, 2, out, args), 0);
    char path[1200];
    snprintf(path, sizeof(path), "%s/summary.json", out);
    cJSON *s = tu_read_json(path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    printf("\n  ssp staleness 2, worker 1 slowed: largest read lead %g, pulls held %.2f s ", num(s, "max_lead"),
           num(s, "wait_s"));
    CU_ASSERT(num(s, "max_lead") <= 2);
    CU_ASSERT(num(s, "max_lead") >= 1);   // the fast one did run ahead
    CU_ASSERT(num(s, "wait_s") > 0.1);    // and was held back
    cJSON_Delete(s);
    // the ps's own account: its last line names the largest lead
    snprintf(path, sizeof(path), "%s/logs/ps-0.log", out);
    char *log = tu_read_file(path);
    CU_ASSERT_PTR_NOT_NULL(log && strstr(log, "largest read lead"));
    free(log);
}

static void test_optimizers_match_local(void) {
    const char *opt[][6] = {{"--optimizer", "momentum", "--learning-rate", "0.02", "--nesterov", "1"},
                            {"--optimizer", "adam", "--learning-rate", "0.001", "--beta2", "0.99"},
                            {"--optimizer", "adagrad", "--learning-rate", "0.05", "--initial-accumulator", "0.2"}};
    for (int i = 0; i < 3; i++) {
        char a[1100], b[1100], name[32], path[1200];
        snprintf(name, sizeof(name), "local-%s", opt[i][1]);
        sub(a, sizeof(a), name);
        snprintf(name, sizeof(name), "cluster-%s", opt[i][1]);
        sub(b, sizeof(b), name);
        const char *largv[] = {WORKER, "--data-folder", data_dir, "--output-dir", a, "--steps", "200", "--threads",
                               "1", "--log-every", "0", opt[i][0], opt[i][1], opt[i][2], opt[i][3], opt[i][4],
                               opt[i][5], NULL};
        const char *lenv[] = {"TF_CONFIG", NULL};
        CU_ASSERT_EQUAL_FATAL(tu_run(largv, lenv, NULL, NULL), 0);
        const char *cargs[] = {"--steps", "200", "--threads", "1", "--overlap", "0", opt[i][0], opt[i][1], opt[i][2],
                               opt[i][3], opt[i][4], opt[i][5], NULL};
        CU_ASSERT_EQUAL_FATAL(cluster(1, 1, b, cargs), 0);
        tfps_layout la, lb;
        float *pa = NULL, *pb = NULL;
        char err[512];
        snprintf(path, sizeof(path), "%s/model/model.tfps", a);
        CU_ASSERT_FATAL(tfps_model_read(path, &la, &pa, NULL, err, sizeof(err)) == 0);
        snprintf(path, sizeof(path), "%s/model/model.tfps", b);
        CU_ASSERT_FATAL(tfps_model_read(path, &lb, &pb, NULL, err, sizeof(err)) == 0);
        size_t differ = 0;
        for (size_t k = 0; k < la.total && la.total == lb.total; k++) differ += memcmp(&pa[k], &pb[k], 4) != 0;
        // and the optimizer moved the weights (a run that ignored --optimizer would differ from local mode)
        printf("\n  %s: %zu of %zu parameters differ between local mode and 1 ps + 1 worker ", opt[i][1], differ,
               la.total);
        CU_ASSERT_EQUAL(differ, 0);
        free(pa);
        free(pb);
    }
}

int main(void) {
    if (tu_test_data(data_dir, sizeof(data_dir), TFPS_DEFAULT_TEST_DATA, "test_consistency")) return 1;
    if (!mkdtemp(root)) return 1;
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("consistency", NULL, NULL);
    CU_add_test(s, "sync 2x2 >= 90%; byte-identical over reruns and 1, 2, 3 ps", test_sync_reaches_90_and_is_bit_exact);
    CU_add_test(s, "sync backup workers (1 and 2 ps): the slow one's gradients dropped", test_backup_worker_dropped);
    CU_add_test(s, "replicas with different --steps: no hang", test_different_steps_no_hang);
    CU_add_test(s, "ssp: reads never more than the staleness ahead", test_ssp_bound_held);
    CU_add_test(s, "momentum, adam, adagrad: 1 ps + 1 worker = local mode bit for bit", test_optimizers_match_local);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    int failed = (int)(CU_get_number_of_tests_failed() + CU_get_number_of_suites_failed());
    CU_cleanup_registry();
    char rm[200];
    snprintf(rm, sizeof(rm), "rm -rf %s", root);
    if (!failed && system(rm) != 0) return 1;
    return failed;
}
