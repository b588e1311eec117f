/* test_auth.c -- a stranger on the ps's port, against a real job.
 *
 * 1 ps + 2 workers (sync: bit-for-bit reproducible) with a job secret train
 * twice: once alone, once while this test, a client that speaks the
 * protocol but holds no session, sends what took over jobs before sessions
 * existed: Registers without and with a wrong secret, a Push as "worker 1"
 * of -3.4e38 everywhere, a Heartbeat(done) for worker 2, a Shutdown and a
 * Checkpoint as the chief. Every one is refused UNAUTHENTICATED, the ps
 * counts them, and the attacked run ends exactly like the clean one: every
 * task exits 0 and the model file is byte-identical. A worker with a wrong
 * secret exits 2 naming it. */
#define _POSIX_C_SOURCE 200809L
#include "rpc.h"
#include "service.h"
#include "tfps.h"
#include "testutil.h"
#include "wire.h"

#include <CUnit/Basic.h>
#include <cJSON.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static char data_dir[1024];
static char root[] = "/tmp/tfps-auth-XXXXXX";
static char secret_file[1100];
static const char *PS = TFPS_BIN_DIR "/tfps-ps", *WORKER = TFPS_BIN_DIR "/tfps-worker";

static void nap(double s) {
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

static int file_has(const char *path, const char *needle) {
    char *s = tu_read_file(path);
    int yes = s && strstr(s, needle);
    free(s);
    return yes;
}

static int wait_file_has(const char *path, const char *needle, double timeout_s) {
    for (double t = 0; t < timeout_s; t += 0.05) {
        if (file_has(path, needle)) return 1;
        nap(0.05);
    }
    return 0;
}

typedef struct {
    char out[1200], tf[3][512], log[3][1300];
    int pid[3];   /* ps, chief, worker */
    int ps_port;
} job;

static const char *TASKS[3] = {"ps", "chief", "worker"};

static void job_start(job *j, const char *name) {
    snprintf(j->out, sizeof(j->out), "%s/%s", root, name);
    CU_ASSERT_FATAL(mkdir(j->out, 0755) == 0);
    int pp = tu_free_port(), cp = tu_free_port(), wp = tu_free_port();
    j->ps_port = pp;
    for (int t = 0; t < 3; t++) {
        snprintf(j->tf[t], sizeof(j->tf[t]),
                 "TF_CONFIG={\"cluster\": {\"chief\": [\"127.0.0.1:%d\"], \"worker\": [\"127.0.0.1:%d\"], "
                 "\"ps\": [\"127.0.0.1:%d\"]}, \"task\": {\"type\": \"%s\", \"index\": 0}}",
                 cp, wp, pp, TASKS[t]);
        snprintf(j->log[t], sizeof(j->log[t]), "%s/%s.log", j->out, TASKS[t]);
        // sync: both runs make the same model bit for bit; slowed steps leave the stranger time to call
        const char *argv[] = {t == 0 ? PS : WORKER, "--data-folder", data_dir, "--output-dir", j->out,
                              "--consistency", "sync", "--epochs", "1", "--batch-size", "32", "--log-every", "10",
                              "--slow-step-ms", "4", "--job-secret-file", secret_file, NULL};
        const char *env[] = {j->tf[t], "TFPS_JOB_SECRET", NULL};
        j->pid[t] = tu_spawn(argv, env, j->log[t]);
    }
}

static void job_finish(job *j) {
    for (int t = 0; t < 3; t++) {
        int rc = tu_wait(j->pid[t], 180);
        if (rc != 0) {
            char *s = tu_read_file(j->log[t]);
            printf("\n  %s exited %d; its log:\n%s", TASKS[t], rc, s ? s : "(none)");
            free(s);
        }
        CU_ASSERT_EQUAL(rc, 0);
        j->pid[t] = 0;
    }
}

static uint8_t *read_model(const job *j, size_t *n) {
    char path[1300];
    snprintf(path, sizeof(path), "%s/model/model.tfps", j->out);
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    uint8_t *buf = malloc(4u << 20);
    *n = fread(buf, 1, 4u << 20, f);
    fclose(f);
    return buf;
}

/* One call of the stranger: its status (message in details). */
static int stranger_call(tfps_rpc_client *c, int method, const tfps_buf *b, char *details, size_t n) {
    tfps_rpc_result r;
    char err[512];
    memset(&r, 0, sizeof(r));
    tfps_rpc_call_one(c, 0, tfps_method_paths[method], b->data, b->len, 10.0, 0, &r, err, sizeof(err));
    snprintf(details, n, "%s", r.details);
    int st = r.status;
    tfps_rpc_result_clear(&r);
    return st;
}

static void attack(const job *j) {
    char target[64], d[512];
    snprintf(target, sizeof(target), "127.0.0.1:%d", j->ps_port);
    const char *targets[] = {target};
    tfps_rpc_client *c = tfps_rpc_client_new(targets, 1, 8u << 20, NULL, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    tfps_buf b = {0};
    // Register, without and with a wrong secret: refused before anything of the ps is told
    tfps_wire_register_req rq = {.task_type = "worker", .worker_rank = 1, .num_workers = 2, .num_ps = 1};
    tfps_wire_pack_register_req(&rq, &b);
    CU_ASSERT_EQUAL(stranger_call(c, TFPS_M_REGISTER, &b, d, sizeof(d)), TFPS_RPC_UNAUTHENTICATED);
    CU_ASSERT_PTR_NOT_NULL(strstr(d, "no job secret"));
    rq.job_secret = (const uint8_t *)"guess";
    rq.job_secret_len = 5;
    tfps_wire_pack_register_req(&rq, &b);
    CU_ASSERT_EQUAL(stranger_call(c, TFPS_M_REGISTER, &b, d, sizeof(d)), TFPS_RPC_UNAUTHENTICATED);
    CU_ASSERT_PTR_NOT_NULL(strstr(d, "a wrong job secret"));
    // a Push as worker 1: the largest finite floats, which would have made weights inf
    static float g[1000];
    for (int i = 0; i < 1000; i++) g[i] = -3.4e38f;
    tfps_session forged = {{0}};
    for (int i = 0; i < TFPS_SESSION_LEN; i++) forged.b[i] = (uint8_t)(i * 37 + 1);
    for (int k = 0; k < 2; k++) {
        tfps_wire_push_req pq = {.worker_id = 1, .step = 1, .batch_size = 32, .ntensors = 1,
                                 .gradients = {{{0, 1000}, g}}};
        if (k) pq.session = forged;
        tfps_wire_pack_push_req(&pq, &b);
        CU_ASSERT_EQUAL(stranger_call(c, TFPS_M_PUSH, &b, d, sizeof(d)), TFPS_RPC_UNAUTHENTICATED);
    }
    // Heartbeat(done) for worker 2: the chief would have finished without it
    tfps_wire_heartbeat_req hq = {.worker_id = 2, .step = 99999, .done = 1, .session = forged};
    tfps_wire_pack_heartbeat_req(&hq, &b);
    CU_ASSERT_EQUAL(stranger_call(c, TFPS_M_HEARTBEAT, &b, d, sizeof(d)), TFPS_RPC_UNAUTHENTICATED);
    // Shutdown and Checkpoint as the chief
    tfps_wire_shutdown_req sq = {.reason = "bye\nE fake error line", .worker_id = 1, .session = forged};
    tfps_wire_pack_shutdown_req(&sq, &b);
    CU_ASSERT_EQUAL(stranger_call(c, TFPS_M_SHUTDOWN, &b, d, sizeof(d)), TFPS_RPC_UNAUTHENTICATED);
    tfps_wire_checkpoint_req cq = {.worker_id = 1, .step = 5, .session = forged};
    tfps_wire_pack_checkpoint_req(&cq, &b);
    CU_ASSERT_EQUAL(stranger_call(c, TFPS_M_CHECKPOINT, &b, d, sizeof(d)), TFPS_RPC_UNAUTHENTICATED);
    // the ps counted all seven, and is still training
    tfps_wire_pack_status_req(&b);
    tfps_rpc_result r;
    char err[512];
    CU_ASSERT_EQUAL(tfps_rpc_call_one(c, 0, tfps_method_paths[TFPS_M_STATUS], b.data, b.len, 10.0, 0, &r, err,
                                      sizeof(err)),
                    TFPS_OK);
    tfps_wire_status_resp st;
    void *owner = NULL;
    if (tfps_wire_unpack_status_resp(r.resp, r.resp_len, &st, &owner, err, sizeof(err)) == TFPS_OK) {
        CU_ASSERT_EQUAL(st.unauthenticated, 7);
        CU_ASSERT_EQUAL(st.workers_done, 0);
        CU_ASSERT_EQUAL(st.workers_registered, 2);
    } else {
        CU_FAIL("Status did not unpack");
    }
    tfps_wire_release(owner);
    tfps_rpc_result_clear(&r);
    tfps_buf_free(&b);
    tfps_rpc_client_free(c);
}

static void test_stranger_changes_nothing(void) {
    job clean, hit;
    job_start(&clean, "clean");
    job_finish(&clean);
    job_start(&hit, "attacked");
    CU_ASSERT_FATAL(wait_file_has(hit.log[1], "step 10/", 60));
    attack(&hit);
    CU_ASSERT(!file_has(hit.log[1], "training finished"));   // the attack came while both trained
    job_finish(&hit);
    size_t n0 = 0, n1 = 0;
    uint8_t *m0 = read_model(&clean, &n0), *m1 = read_model(&hit, &n1);
    if (!m0 || !m1) {   // (not FATAL before the frees: a failed run must not also leak)
        free(m0);
        free(m1);
        CU_FAIL_FATAL("a run wrote no model");
    }
    CU_ASSERT(n0 > 1000 && n0 == n1 && memcmp(m0, m1, n0) == 0);
    free(m0);
    free(m1);
    CU_ASSERT(file_has(hit.log[0], "unauthenticated 7)"));            // the ps's last line
    CU_ASSERT(file_has(hit.log[0], "refused UNAUTHENTICATED"));       // the first refusal, logged
    CU_ASSERT(!file_has(hit.log[0], "\nE fake error line"));           // a client's newline forges no line
    CU_ASSERT(file_has(clean.log[0], "unauthenticated 0)"));
}

/* A task with another secret (from the environment this time) is refused
 * and exits 2 naming the secret; the ps serves on. */
static void test_wrong_secret_exits_2(void) {
    job j;
    snprintf(j.out, sizeof(j.out), "%s/wrong", root);
    CU_ASSERT_FATAL(mkdir(j.out, 0755) == 0);
    int pp = tu_free_port(), wp = tu_free_port();
    char tfp[512], tfw[512], log[1300];
    snprintf(tfp, sizeof(tfp),
             "TF_CONFIG={\"cluster\": {\"worker\": [\"127.0.0.1:%d\"], \"ps\": [\"127.0.0.1:%d\"]}, "
             "\"task\": {\"type\": \"ps\", \"index\": 0}}", wp, pp);
    snprintf(tfw, sizeof(tfw),
             "TF_CONFIG={\"cluster\": {\"worker\": [\"127.0.0.1:%d\"], \"ps\": [\"127.0.0.1:%d\"]}, "
             "\"task\": {\"type\": \"worker\", \"index\": 0}}", wp, pp);
    snprintf(log, sizeof(log), "%s/ps.log", j.out);
    const char *pargv[] = {PS, NULL}, *penv[] = {tfp, "TFPS_JOB_SECRET=right one", NULL};
    int ps = tu_spawn(pargv, penv, log);
    const char *wargv[] = {WORKER, "--data-folder", data_dir, "--output-dir", j.out, "--startup-timeout", "20", NULL};
    const char *wenv[] = {tfw, "TFPS_JOB_SECRET=wrong one", NULL};
    char *err = NULL;
    int rc = tu_run(wargv, wenv, NULL, &err);
    CU_ASSERT_EQUAL(rc, 2);
    CU_ASSERT_PTR_NOT_NULL(err && strstr(err, "wrong job secret"));
    if (rc != 2) printf("\n  worker exited %d: %s", rc, err ? err : "");
    free(err);
    kill(ps, SIGTERM);
    CU_ASSERT_EQUAL(tu_wait(ps, 20), 0);
    CU_ASSERT(file_has(log, "unauthenticated 1)"));
}

/* A client that fails the TLS handshake on purpose, 100 times: the ps logs
 * at most 20 of gRPC's warnings per 10 s and then the count of the rest, so
 * a flood cannot fill its log; it serves on. */
static void test_handshake_flood_log_bounded(void) {
    char dir[1100], tf[400], log[1200], cmd[2600];
    snprintf(dir, sizeof(dir), "%s/flood", root);
    CU_ASSERT_FATAL(mkdir(dir, 0755) == 0);
    const int pp = tu_free_port();
    snprintf(tf, sizeof(tf), "{\"cluster\": {\"worker\": [\"127.0.0.1:1\"], \"ps\": [\"127.0.0.1:%d\"]}, "
             "\"task\": {\"type\": \"ps\", \"index\": 0}}", pp);
    snprintf(cmd, sizeof(cmd), "bash %s/deploy/make-certs.sh --out %s/certs '%s' >/dev/null 2>&1", TFPS_SOURCE_DIR, dir, tf);
    CU_ASSERT_FATAL(system(cmd) == 0);
    char env_tf[450], cert[1200], key[1200], ca[1200];
    snprintf(env_tf, sizeof(env_tf), "TF_CONFIG=%s", tf);
    snprintf(cert, sizeof(cert), "%s/certs/ps-0.pem", dir);
    snprintf(key, sizeof(key), "%s/certs/ps-0.key", dir);
    snprintf(ca, sizeof(ca), "%s/certs/ca.pem", dir);
    snprintf(log, sizeof(log), "%s/ps.log", dir);
    const char *argv[] = {PS, "--tls-cert", cert, "--tls-key", key, "--tls-ca", ca, NULL};
    const char *env[] = {env_tf, NULL};
    int ps = tu_spawn(argv, env, log);
    CU_ASSERT_FATAL(wait_file_has(log, "serving", 30));
    const char junk[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nnot a TLS ClientHello";
    int sent = 0;
    for (int i = 0; i < 100; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)pp)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0 && write(fd, junk, sizeof(junk)) > 0) {
            char buf[64];
            struct timeval tv = {1, 0};
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
            sent += read(fd, buf, sizeof(buf)) >= 0;   // the ps's alert or close
        }
        if (fd >= 0) close(fd);
    }
    CU_ASSERT(sent >= 90);
    nap(0.5);
    kill(ps, SIGTERM);
    CU_ASSERT_EQUAL(tu_wait(ps, 20), 0);   // served on, and stops cleanly
    char *text = tu_read_file(log);
    int warnings = 0;
    for (const char *p = text; p && (p = strstr(p, " W grpc: Handshake failed")); p++) warnings++;
    const char *more = text ? strstr(text, "more warnings not logged") : NULL;
    printf("\n  100 failed handshakes: %d gRPC warnings logged", warnings);
    CU_ASSERT(warnings >= 1 && warnings <= 20);
    CU_ASSERT_PTR_NOT_NULL(more);
    free(text);
}

int main(void) {
    if (tu_test_data(data_dir, sizeof(data_dir), TFPS_DEFAULT_TEST_DATA, "test_auth")) return 1;
    if (!mkdtemp(root)) return 1;
    snprintf(secret_file, sizeof(secret_file), "%s/job-secret", root);
    FILE *f = fopen(secret_file, "w");
    if (!f || fputs("correct horse battery staple\n", f) < 0 || fclose(f) != 0) return 1;
    chmod(secret_file, 0600);
    tfps_rpc_init();
    CU_initialize_registry();
    CU_pSuite s = CU_add_suite("auth", NULL, NULL);
    CU_add_test(s, "a stranger's Register, Push, done, Shutdown, Checkpoint: refused, the model bit for bit the same",
                test_stranger_changes_nothing);
    CU_add_test(s, "a worker with a wrong job secret exits 2", test_wrong_secret_exits_2);
    CU_add_test(s, "100 failed TLS handshakes: at most 20 gRPC warnings logged, then their count",
                test_handshake_flood_log_bounded);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    const unsigned failed = CU_get_number_of_failures();
    CU_cleanup_registry();
    tfps_rpc_shutdown();
    if (!failed) {
        char cmd[200];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", root);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", root);
    } else {
        printf("\nlogs kept in %s\n", root);
    }
    return failed ? 1 : 0;
}
