/* test_cluster.c -- real tfps-ps and tfps-worker processes on loopback.
 *
 * 2 ps + 2 workers (deploy/local-cluster.sh) train the offline digits to
 * >= 90% test accuracy, every process exits 0, the model and summary exist,
 * and the model file evaluated by the single-process code gives the same
 * accuracy. A worker with a different shard plan is refused with both
 * digests. A worker started before its ps still trains. The 2 x 2 run again
 * over mTLS, every task with its own certificate from deploy/make-certs.sh.
 * Ports come from the kernel; nothing is fixed. */
#define _POSIX_C_SOURCE 200809L
#include "backend.h"
#include "data.h"
#include "idx.h"
#include "model.h"
#include "testutil.h"

#include <CUnit/Basic.h>
#include <cJSON.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static char data_dir[1024];
static const char *PS = TFPS_BIN_DIR "/tfps-ps", *WORKER = TFPS_BIN_DIR "/tfps-worker";

static void nap(double s) {
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

/* tls: every task with a certificate of its own (local-cluster.sh --tls) */
static void two_by_two(int tls) {
    char out[] = "/tmp/tfps-cluster-XXXXXX", path[1200];
    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(out));
    const char *argv[] = {"/bin/bash", TFPS_SOURCE_DIR "/deploy/local-cluster.sh", "--ps", "2", "--workers", "2",
                          "--evaluator", "--data-folder", data_dir, "--output-dir", out, "--epochs", "10",
                          "--log-every", "200", tls ? "--tls" : NULL, NULL};
    const char *env[] = {"TFPS_BIN=" TFPS_BIN_DIR, "TF_CONFIG", NULL};
    char *so = NULL, *se = NULL;
    int rc = tu_run(argv, env, &so, &se);
    if (rc != 0) printf("\n  local-cluster.sh exited %d:\n%s\n%s", rc, so, se);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    // every task exited 0 (the launcher says so for each) and logged to its own file
    const char *tasks[] = {"ps-0", "ps-1", "worker-0", "worker-1", "evaluator-0"};
    for (int i = 0; i < 5; i++) {
        char needle[64];
        snprintf(needle, sizeof(needle), "%s exited 0", tasks[i]);
        CU_ASSERT_PTR_NOT_NULL(strstr(se, needle));
        snprintf(path, sizeof(path), "%s/logs/%s.log", out, tasks[i]);
        char *log = tu_read_file(path);
        CU_ASSERT_PTR_NOT_NULL(log);
        // each task loaded its own certificate, each ps served mTLS only; without --tls, plaintext
        snprintf(needle, sizeof(needle), "mTLS: certificate \"O = tfps, CN = %s\"", tasks[i]);
        CU_ASSERT(log && !!strstr(log, needle) == tls);
        if (i < 2) CU_ASSERT(log && strstr(log, tls ? ") over mTLS:" : ") over plaintext:"));
        free(log);
    }
    CU_ASSERT_PTR_NOT_NULL(strstr(so, "test accuracy"));
    // live progress where the user is: the chief's lines on the launcher's stderr (plain lines: not a terminal),
    // with the cluster's throughput and the global step
    CU_ASSERT_PTR_NOT_NULL(strstr(se, "chief: step 200/"));
    CU_ASSERT_PTR_NOT_NULL(strstr(se, " (cluster "));
    CU_ASSERT_PTR_NOT_NULL(strstr(se, "(global step "));
    CU_ASSERT_PTR_NOT_NULL(strstr(se, "evaluator: final evaluation"));
    snprintf(path, sizeof(path), "%s/logs/evaluator-0.log", out);
    char *elog = tu_read_file(path);
    CU_ASSERT_PTR_NOT_NULL(elog && strstr(elog, "test accuracy"));   // the evaluator evaluated
    CU_ASSERT_PTR_NOT_NULL(elog && strstr(elog, "registered with 2 ps as the evaluator"));
    CU_ASSERT_PTR_NULL(elog && strstr(elog, "100000"));   // not a worker id
    free(elog);
    snprintf(path, sizeof(path), "%s/logs/ps-0.log", out);
    char *plog = tu_read_file(path);
    CU_ASSERT_PTR_NOT_NULL(plog && strstr(plog, "the evaluator registered"));
    free(plog);
    free(so);
    free(se);

    snprintf(path, sizeof(path), "%s/summary.json", out);
    cJSON *s = tu_read_json(path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    double acc = cJSON_GetObjectItem(s, "test_accuracy")->valuedouble;
    printf("\n  2 ps + 2 workers%s: test accuracy %.4f, %g steps, %.0f examples/s ", tls ? " over mTLS" : "", acc,
           cJSON_GetObjectItem(s, "steps")->valuedouble, cJSON_GetObjectItem(s, "examples_per_s")->valuedouble);
    CU_ASSERT(acc >= 0.90);
    CU_ASSERT_STRING_EQUAL(cJSON_GetObjectItem(s, "mode")->valuestring, "cluster");
    CU_ASSERT_EQUAL(cJSON_GetObjectItem(s, "num_ps")->valueint, 2);
    CU_ASSERT_EQUAL(cJSON_GetObjectItem(s, "num_workers")->valueint, 2);
    CU_ASSERT_EQUAL(cJSON_GetObjectItem(s, "refused")->valueint, 0);
    // 10 epochs over the whole training set, split between the two workers
    CU_ASSERT_EQUAL(cJSON_GetObjectItem(s, "examples")->valuedouble,
                    10 * cJSON_GetObjectItem(s, "train_examples")->valuedouble);

    // the exported model, evaluated by the single-process code, gives the same accuracy
    snprintf(path, sizeof(path), "%s/model/model.tfps", out);
    tfps_layout l;
    float *params = NULL;
    char err[512];
    CU_ASSERT_FATAL(tfps_model_read(path, &l, &params, NULL, err, sizeof(err)) == 0);
    CU_ASSERT_EQUAL(l.total, 266610);
    tfps_mnist m = {0};
    CU_ASSERT_FATAL(tfps_mnist_load(&m, data_dir, err, sizeof(err)) == 0);
    tfps_backend *be = tfps_cpu_backend_new(&l, 1000);
    tfps_eval ev = {0};
    CU_ASSERT(tfps_evaluate(be, params, &m.test, &ev, err, sizeof(err)) == 0);
    const double acc2 = ev.accuracy;
    // the same count of correct test examples; the tolerance only absorbs cJSON printing
    // doubles with 15 significant digits (1e-9 is far below one example in 1/N)
    if (fabs(acc2 - acc) > 1e-9) printf("\n  model file evaluates to %.9f, summary says %.9f", acc2, acc);
    CU_ASSERT(fabs(acc2 - acc) <= 1e-9);
    // summary.json: the dataset, the test loss (the same evaluation) and the chief's last training loss
    const cJSON *ds = cJSON_GetObjectItem(s, "dataset");
    CU_ASSERT_PTR_NOT_NULL_FATAL(ds);
    CU_ASSERT(cJSON_IsString(cJSON_GetObjectItem(ds, "name")) && cJSON_GetObjectItem(ds, "name")->valuestring[0]);
    CU_ASSERT(cJSON_IsString(cJSON_GetObjectItem(ds, "source")));
    CU_ASSERT_EQUAL(cJSON_GetObjectItem(ds, "train_examples")->valueint, m.train.n);
    CU_ASSERT_EQUAL(cJSON_GetObjectItem(ds, "test_examples")->valueint, m.test.n);
    // the loss to 1e-6 relative: this process's OpenBLAS may use more threads than the chief's (TFPS_THREADS=1
    // in local-cluster.sh), which reorders sgemm's float sums (seen: 3e-9 apart); the accuracy above is exact
    const double test_loss = cJSON_GetObjectItem(s, "test_loss")->valuedouble;
    if (fabs(test_loss - ev.loss) > 1e-6 * ev.loss)
        printf("\n  model file's loss %.9f, summary says %.9f", ev.loss, test_loss);
    CU_ASSERT(fabs(test_loss - ev.loss) <= 1e-6 * ev.loss);
    const double final_loss = cJSON_GetObjectItem(s, "final_loss")->valuedouble;
    CU_ASSERT(final_loss > 0 && final_loss < 1.0);

    // the evaluator's final evaluation saw the chief's final weights: the same numbers
    snprintf(path, sizeof(path), "%s/eval.json", out);
    cJSON *e = tu_read_json(path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(e);
    const cJSON *fin = cJSON_GetObjectItem(e, "final"), *best = cJSON_GetObjectItem(e, "best");
    CU_ASSERT_FATAL(cJSON_IsObject(fin) && cJSON_IsObject(best));
    const double eacc = cJSON_GetObjectItem(fin, "accuracy")->valuedouble;
    printf("\n  evaluator: %d evaluations, final accuracy %.4f at step %g (%s), chief %.4f", 
           cJSON_GetObjectItem(e, "evaluations")->valueint, eacc, cJSON_GetObjectItem(fin, "step")->valuedouble,
           cJSON_GetObjectItem(fin, "source")->valuestring, acc);
    CU_ASSERT(fabs(eacc - acc) <= 1e-9);
    CU_ASSERT(fabs(cJSON_GetObjectItem(fin, "loss")->valuedouble - test_loss) <= 1e-9);
    CU_ASSERT_EQUAL(cJSON_GetObjectItem(fin, "step")->valuedouble, cJSON_GetObjectItem(s, "steps")->valuedouble);
    CU_ASSERT(cJSON_GetObjectItem(best, "accuracy")->valuedouble >= eacc);
    CU_ASSERT_STRING_EQUAL(cJSON_GetObjectItem(e, "task")->valuestring, "evaluator-0");
    cJSON_Delete(e);

    // metrics history: the chief's training lines (global step rising, loss) and its final evaluation; the
    // evaluator's lines ending with its final one
    const char *files[] = {"metrics-worker-0.jsonl", "metrics-worker-1.jsonl", "metrics-evaluator-0.jsonl"};
    for (int f = 0; f < 3; f++) {
        snprintf(path, sizeof(path), "%s/logs/%s", out, files[f]);
        char *text = tu_read_file(path);
        CU_ASSERT_PTR_NOT_NULL(text);
        int lines = 0, train = 0, bad = 0;
        double last_step = -1;
        cJSON *last = NULL;
        for (char *line = text ? strtok(text, "\n") : NULL; line; line = strtok(NULL, "\n")) {
            cJSON *j = cJSON_Parse(line);
            lines++;
            if (!j || !cJSON_IsNumber(cJSON_GetObjectItem(j, "time")) || !cJSON_IsNumber(cJSON_GetObjectItem(j, "step"))) {
                bad++;
                cJSON_Delete(j);
                continue;
            }
            if (cJSON_GetObjectItem(j, "loss") && !cJSON_GetObjectItem(j, "kind")) {
                train++;
                const double st = cJSON_GetObjectItem(j, "step")->valuedouble;
                if (st <= last_step) bad++;   // the global step only rises
                last_step = st;
                if (!cJSON_IsNumber(cJSON_GetObjectItem(j, "examples_per_s")) ||
                    !cJSON_IsNumber(cJSON_GetObjectItem(j, "cluster_examples_per_s")) ||
                    !cJSON_IsNumber(cJSON_GetObjectItem(j, "lr")))
                    bad++;
            }
            cJSON_Delete(last);
            last = j;
        }
        printf("\n  %s: %d lines, %d training", files[f], lines, train);
        CU_ASSERT_EQUAL(bad, 0);
        CU_ASSERT(f == 2 ? train == 0 : train >= 1);
        if (f != 1) {   // the chief's and the evaluator's last line: the final evaluation, the summary's accuracy
            CU_ASSERT_FATAL(last != NULL);
            const cJSON *kind = cJSON_GetObjectItem(last, "kind");
            CU_ASSERT(cJSON_IsString(kind) && strcmp(kind->valuestring, "final") == 0);
            CU_ASSERT(fabs(cJSON_GetObjectItem(last, "accuracy")->valuedouble - acc) <= 1e-9);
        }
        cJSON_Delete(last);
        free(text);
    }

    tfps_backend_free(be);
    tfps_mnist_free(&m);
    free(params);
    cJSON_Delete(s);
    snprintf(path, sizeof(path), "rm -rf %s", out);
    CU_ASSERT(system(path) == 0);
}

static void test_two_by_two(void) { two_by_two(0); }
static void test_two_by_two_tls(void) { two_by_two(1); }

/* TF_CONFIG for 1 ps + 1 worker on the given ports. */
static void tf_config(char *buf, size_t n, int ps_port, int w_port, const char *type) {
    snprintf(buf, n,
             "TF_CONFIG={\"cluster\": {\"worker\": [\"127.0.0.1:%d\"], \"ps\": [\"127.0.0.1:%d\"]}, "
             "\"task\": {\"type\": \"%s\", \"index\": 0}}",
             w_port, ps_port, type);
}

static void test_plan_mismatch_refused(void) {
    char dir[] = "/tmp/tfps-refuse-XXXXXX", log[1200], tfp[512], tfw[512];
    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(dir));
    int pp = tu_free_port(), wp = tu_free_port();
    tf_config(tfp, sizeof(tfp), pp, wp, "ps");
    tf_config(tfw, sizeof(tfw), pp, wp, "worker");
    snprintf(log, sizeof(log), "%s/ps.log", dir);
    const char *penv[] = {tfp, NULL}, *pargv[] = {PS, NULL};
    int ps = tu_spawn(pargv, penv, log);
    const char *wargv[] = {WORKER, "--data-folder", data_dir, "--output-dir", dir, "--shard-strategy", "greedy",
                           "--startup-timeout", "20", NULL};
    const char *wenv[] = {tfw, NULL};
    char *err = NULL;
    int rc = tu_run(wargv, wenv, NULL, &err);
    CU_ASSERT_EQUAL(rc, 2);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "shard plan differs"));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "greedy"));
    CU_ASSERT_PTR_NULL(strstr(err, "balanced"));   // the ps's plan: in its log, not told to a caller without the secret
    if (rc != 2 || !strstr(err, "shard plan differs")) printf("\n  worker said: %s", err);
    free(err);
    kill(ps, SIGTERM);   // a ps stops cleanly on SIGTERM
    CU_ASSERT_EQUAL(tu_wait(ps, 20), 0);
    char *plog = tu_read_file(log);
    CU_ASSERT_PTR_NOT_NULL(plog && strstr(plog, "refused 1"));   // counted
    CU_ASSERT_PTR_NOT_NULL(plog && strstr(plog, "this ps has balanced over 1 ps"));
    free(plog);
    snprintf(log, sizeof(log), "rm -rf %s", dir);
    CU_ASSERT(system(log) == 0);
}

static void test_worker_before_ps(void) {
    char dir[] = "/tmp/tfps-late-XXXXXX", log[1200], wlog[1200], tfp[512], tfw[512];
    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(dir));
    int pp = tu_free_port(), wp = tu_free_port();
    tf_config(tfp, sizeof(tfp), pp, wp, "ps");
    tf_config(tfw, sizeof(tfw), pp, wp, "worker");
    snprintf(wlog, sizeof(wlog), "%s/worker.log", dir);
    const char *wargv[] = {WORKER, "--data-folder", data_dir, "--output-dir", dir, "--steps", "200", NULL};
    const char *wenv[] = {tfw, NULL};
    int w = tu_spawn(wargv, wenv, wlog);
    nap(2.0);   // the worker waits for a ps that is not there yet
    snprintf(log, sizeof(log), "%s/ps.log", dir);
    const char *penv[] = {tfp, NULL}, *pargv[] = {PS, NULL};
    int ps = tu_spawn(pargv, penv, log);
    int wrc = tu_wait(w, 120), prc = tu_wait(ps, 30);
    CU_ASSERT_EQUAL(wrc, 0);
    CU_ASSERT_EQUAL(prc, 0);   // told to shut down by the chief
    if (wrc != 0) {
        char *t = tu_read_file(wlog);
        printf("\n  worker log:\n%s", t);
        free(t);
    }
    snprintf(log, sizeof(log), "%s/summary.json", dir);
    cJSON *s = tu_read_json(log);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_EQUAL(cJSON_GetObjectItem(s, "steps")->valueint, 200);
    cJSON_Delete(s);
    snprintf(log, sizeof(log), "rm -rf %s", dir);
    CU_ASSERT(system(log) == 0);
}

/* 1 ps + 1 worker without overlap is the single-process SGD, step for step:
 * same init, same batches, same gradients, same update loop. The two exported
 * models must be identical to the bit. */
static void test_matches_single_process(void) {
    char dir[] = "/tmp/tfps-same-XXXXXX", path[1400], a[1200], b[1200];
    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(dir));
    snprintf(a, sizeof(a), "%s/local", dir);
    snprintf(b, sizeof(b), "%s/cluster", dir);
    const char *largv[] = {WORKER, "--data-folder", data_dir, "--output-dir", a, "--steps", "300", "--threads", "1",
                           "--log-every", "0", NULL};
    const char *lenv[] = {"TF_CONFIG", NULL};
    CU_ASSERT_EQUAL_FATAL(tu_run(largv, lenv, NULL, NULL), 0);
    const char *cargv[] = {"/bin/bash", TFPS_SOURCE_DIR "/deploy/local-cluster.sh", "--ps", "1", "--workers", "1",
                           "--data-folder", data_dir, "--output-dir", b, "--steps", "300", "--threads", "1",
                           "--overlap", "0", "--log-every", "0", NULL};
    const char *cenv[] = {"TFPS_BIN=" TFPS_BIN_DIR, "TF_CONFIG", NULL};
    CU_ASSERT_EQUAL_FATAL(tu_run(cargv, cenv, NULL, NULL), 0);
    tfps_layout la, lb;
    float *pa = NULL, *pb = NULL;
    uint64_t sa = 0, sb = 0;
    char err[512];
    snprintf(path, sizeof(path), "%s/model/model.tfps", a);
    CU_ASSERT_FATAL(tfps_model_read(path, &la, &pa, &sa, err, sizeof(err)) == 0);
    snprintf(path, sizeof(path), "%s/model/model.tfps", b);
    CU_ASSERT_FATAL(tfps_model_read(path, &lb, &pb, &sb, err, sizeof(err)) == 0);
    CU_ASSERT_EQUAL(la.total, lb.total);
    CU_ASSERT_EQUAL(sa, 300);
    CU_ASSERT_EQUAL(sb, 300);
    size_t differ = 0;
    for (size_t i = 0; i < la.total && la.total == lb.total; i++) differ += memcmp(&pa[i], &pb[i], 4) != 0;
    if (differ) printf("\n  %zu of %zu parameters differ", differ, la.total);
    CU_ASSERT_EQUAL(differ, 0);
    free(pa);
    free(pb);

    // the same cluster with --wire-dtype bf16: the ps received and sent half the bytes per step (their Status
    // counts, in summary.json), and the model trained as well (gradients with error feedback, fp32 on the ps)
    char c16[1200];
    snprintf(c16, sizeof(c16), "%s/bf16", dir);
    const char *hargv[] = {"/bin/bash", TFPS_SOURCE_DIR "/deploy/local-cluster.sh", "--ps", "1", "--workers", "1",
                           "--data-folder", data_dir, "--output-dir", c16, "--steps", "300", "--threads", "1",
                           "--overlap", "0", "--log-every", "0", "--wire-dtype", "bf16", NULL};
    CU_ASSERT_EQUAL_FATAL(tu_run(hargv, cenv, NULL, NULL), 0);
    snprintf(path, sizeof(path), "%s/summary.json", b);
    cJSON *s32 = tu_read_json(path);
    snprintf(path, sizeof(path), "%s/summary.json", c16);
    cJSON *s16 = tu_read_json(path);
    CU_ASSERT_FATAL(s32 && s16);
    const double b32 = cJSON_GetObjectItem(s32, "bytes_per_step")->valuedouble,
                 b16 = cJSON_GetObjectItem(s16, "bytes_per_step")->valuedouble,
                 a32 = cJSON_GetObjectItem(s32, "test_accuracy")->valuedouble,
                 a16 = cJSON_GetObjectItem(s16, "test_accuracy")->valuedouble;
    printf("\n  bf16 on the wire: %.0f bytes per step (fp32 %.0f: %.3fx), accuracy %.4f (fp32 %.4f) ", b16, b32,
           b16 / b32, a16, a32);
    CU_ASSERT(b32 > 2.0 * 4 * 266610 && b16 / b32 > 0.45 && b16 / b32 < 0.55);
    CU_ASSERT(fabs(a16 - a32) <= 0.01);   // 300 steps; README's benchmark: full runs within half a point
    CU_ASSERT_STRING_EQUAL(cJSON_GetObjectItem(s16, "wire_dtype")->valuestring, "bf16");
    cJSON_Delete(s32);
    cJSON_Delete(s16);
    snprintf(path, sizeof(path), "rm -rf %s", dir);
    CU_ASSERT(system(path) == 0);
}

int main(void) {
    if (tu_test_data(data_dir, sizeof(data_dir), TFPS_DEFAULT_TEST_DATA, "test_cluster")) return 1;
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("cluster", NULL, NULL);
    CU_add_test(s, "2 ps + 2 workers + evaluator: >= 90%, model evaluates the same", test_two_by_two);
    CU_add_test(s, "the same over mTLS (local-cluster.sh --tls)", test_two_by_two_tls);
    CU_add_test(s, "1 ps + 1 worker without overlap = the single process, bit for bit; bf16 halves the bytes",
                test_matches_single_process);
    CU_add_test(s, "a worker with a different shard plan is refused", test_plan_mismatch_refused);
    CU_add_test(s, "a worker started before its ps still trains", test_worker_before_ps);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    int failed = (int)(CU_get_number_of_tests_failed() + CU_get_number_of_suites_failed());
    CU_cleanup_registry();
    return failed;
}
