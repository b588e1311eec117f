/* daemon.c -- see daemon.h. */
#define _POSIX_C_SOURCE 200809L
#include "daemon.h"
#include "layout.h"
#include "log.h"
#include "rpc.h"
#include "shard.h"
#include "tfps.h"
#include "tlscheck.h"

#include <cJSON.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>

static const char *daemon_names[] = {"tfps-ps", "tfps-worker"};

static cJSON *job_addresses(const tfps_job_tasks *t) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < t->nslots; i++)
        cJSON_AddItemToArray(a, t->addr[i] ? cJSON_CreateString(t->addr[i]) : cJSON_CreateNull());
    return a;
}

char *tfps_describe_cluster(const tfps_cluster *c, const tfps_options *o, char *err, size_t errlen) {
    tfps_layout l;
    tfps_shard_plan plan = {0};
    if (tfps_layout_init(&l, TFPS_INPUT_WIDTH, o->h1, o->h2, TFPS_CLASSES, err, errlen) != TFPS_OK) return NULL;
    if (!c->local &&
        tfps_shard_plan_build(&plan, &l, c->num_ps, (tfps_shard_strategy)o->shard_strategy, err, errlen) != TFPS_OK)
        return NULL;

    cJSON *root = cJSON_CreateObject(), *task = cJSON_CreateObject(), *cluster = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "mode", c->local ? "local" : "cluster");
    cJSON_AddStringToObject(task, "type", c->local ? "worker" : tfps_job_name(c->task_type));
    cJSON_AddNumberToObject(task, "index", c->local ? 0 : c->task_index);
    cJSON_AddItemToObject(root, "task", task);
    cJSON_AddBoolToObject(root, "is_chief", c->local ? 1 : c->is_chief);
    if (!c->local) {
        cJSON *chief = cJSON_CreateObject();
        cJSON_AddStringToObject(chief, "type", tfps_job_name(c->chief_type));
        cJSON_AddNumberToObject(chief, "index", c->chief_index);
        cJSON_AddItemToObject(root, "chief", chief);
    }
    /* The training cluster; the evaluator stands outside it, as in TF. */
    for (int j = 0; j < TFPS_JOB_COUNT; j++)
        if (j != TFPS_JOB_EVALUATOR && c->jobs[j].present)
            cJSON_AddItemToObject(cluster, tfps_job_name((tfps_job)j), job_addresses(&c->jobs[j]));
    cJSON_AddItemToObject(root, "cluster", cluster);
    if (c->jobs[TFPS_JOB_EVALUATOR].present)
        cJSON_AddItemToObject(root, "evaluator", job_addresses(&c->jobs[TFPS_JOB_EVALUATOR]));
    cJSON_AddNumberToObject(root, "num_ps", c->local ? 0 : c->num_ps);
    cJSON_AddNumberToObject(root, "num_workers", c->local ? 1 : c->num_workers);

    cJSON *layout = cJSON_CreateObject();
    cJSON_AddNumberToObject(layout, "input", l.in);
    cJSON_AddNumberToObject(layout, "first_layer_neurons", l.h1);
    cJSON_AddNumberToObject(layout, "second_layer_neurons", l.h2);
    cJSON_AddNumberToObject(layout, "classes", l.out);
    cJSON_AddNumberToObject(layout, "parameters", (double)l.total);
    cJSON_AddNumberToObject(layout, "bytes", (double)(l.total * sizeof(float)));
    cJSON *vars = cJSON_CreateArray();
    for (int v = 0; v < TFPS_NVARS; v++) {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "name", tfps_var_name(v));
        cJSON_AddNumberToObject(e, "offset", (double)l.off[v]);
        cJSON_AddNumberToObject(e, "size", (double)l.size[v]);
        cJSON_AddItemToArray(vars, e);
    }
    cJSON_AddItemToObject(layout, "variables", vars);
    cJSON_AddItemToObject(root, "layout", layout);

    cJSON_AddStringToObject(root, "shard_strategy", tfps_shard_strategy_name((tfps_shard_strategy)o->shard_strategy));
    cJSON *ranges = cJSON_CreateArray();
    for (int r = 0; r < plan.nranges; r++) {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddNumberToObject(e, "ps", plan.ranges[r].ps);
        cJSON_AddNumberToObject(e, "begin", (double)plan.ranges[r].begin);
        cJSON_AddNumberToObject(e, "end", (double)plan.ranges[r].end);
        cJSON_AddNumberToObject(e, "bytes", (double)((plan.ranges[r].end - plan.ranges[r].begin) * sizeof(float)));
        cJSON_AddItemToArray(ranges, e);
    }
    cJSON_AddItemToObject(root, "shard_plan", ranges);
    if (!c->local) {
        char hex[17];
        snprintf(hex, sizeof(hex), "%016" PRIx64, plan.digest);
        cJSON_AddStringToObject(root, "shard_plan_digest", hex);
    }
    tfps_shard_plan_destroy(&plan);
    cJSON *opts = cJSON_CreateObject();   // the options as resolved (defaults < environment < flags)
    tfps_options_to_json(o, opts);
    cJSON_AddItemToObject(root, "options", opts);
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    if (!text) tfps_seterr(err, errlen, "print-cluster: out of memory");
    return text;
}

/* The host of "host:port" or "[v6]:port" (brackets kept) into out. */
static void addr_host(const char *addr, char *out, size_t n) {
    const char *colon = strrchr(addr, ':');
    size_t len = colon ? (size_t)(colon - addr) : strlen(addr);
    if (len >= n) len = n - 1;
    memcpy(out, addr, len);
    out[len] = '\0';
}

static int host_is_loopback(const char *host) {
    return strcasecmp(host, "localhost") == 0 || strncmp(host, "127.", 4) == 0 || strcmp(host, "[::1]") == 0;
}

/* The first address of the cluster (or the ps's --bind) that is not loopback,
 * named for the warning; NULL when all are. */
static const char *exposed_address(const tfps_cluster *c, const tfps_options *o, tfps_daemon_kind kind, char *what,
                                   size_t n) {
    char host[TFPS_MAX_ADDR + 1];
    if (kind == TFPS_DAEMON_PS && o->bind[0]) {
        addr_host(o->bind, host, sizeof(host));
        if (!host_is_loopback(host)) {
            snprintf(what, n, "this ps listens on %.200s (--bind)", o->bind);   // an address is < 200 bytes
            return o->bind;
        }
    }
    static const tfps_job order[] = {TFPS_JOB_PS, TFPS_JOB_CHIEF, TFPS_JOB_MASTER, TFPS_JOB_WORKER, TFPS_JOB_EVALUATOR};
    for (size_t k = 0; k < sizeof(order) / sizeof(order[0]); k++)   // the ps first: theirs are the open ports
        for (int i = 0, j = order[k]; i < c->jobs[j].nslots; i++) {
            const char *a = c->jobs[j].addr[i];
            if (!a) continue;
            addr_host(a, host, sizeof(host));
            if (!host_is_loopback(host)) {
                snprintf(what, n, "cluster.%s[%d] %s", tfps_job_name((tfps_job)j), i, a);
                return a;
            }
        }
    return NULL;
}

/* --bind and --tls-*: checked in cluster mode (local mode has no network and
 * ignores them); with apply, TLS is handed to the RPC module and the
 * warnings are logged. TFPS_ERR with one line in err for a user mistake. */
static int setup_transport(tfps_daemon_kind kind, const tfps_options *o, const tfps_cluster *c, int apply, char *err,
                           size_t errlen) {
    const int ntls = !!o->tls_cert[0] + !!o->tls_key[0] + !!o->tls_ca[0];
    if (c->local) {
        if (ntls || o->bind[0]) tfps_debug("local mode: --tls-cert, --tls-key, --tls-ca and --bind ignored");
        return TFPS_OK;
    }
    if (o->bind[0]) {
        char why[TFPS_ERR_LEN];
        if (tfps_addr_check(o->bind, why, sizeof(why)) != TFPS_OK)
            return tfps_seterr(err, errlen, "--bind: %s (e.g. 0.0.0.0:2222 for every interface)", why);
        if (kind != TFPS_DAEMON_PS) tfps_debug("--bind %s: only tfps-ps listens; ignored", o->bind);
    }
    if (ntls > 0 && ntls < 3) {
        char missing[64] = "";
        if (!o->tls_cert[0]) strcat(missing, " --tls-cert");
        if (!o->tls_key[0]) strcat(missing, " --tls-key");
        if (!o->tls_ca[0]) strcat(missing, " --tls-ca");
        return tfps_seterr(err, errlen, "TLS: missing%s: expected all three of --tls-cert, --tls-key and --tls-ca "
                           "(PEM files; deploy/make-certs.sh makes them), or none for plaintext", missing);
    }
    const char *own = c->jobs[c->task_type].present && c->task_index < c->jobs[c->task_type].nslots
                          ? c->jobs[c->task_type].addr[c->task_index]
                          : NULL;   /* an evaluator may have no address */
    if (ntls == 0) {
        char what[TFPS_MAX_ADDR + 64];
        if (apply && exposed_address(c, o, kind, what, sizeof(what)))
            tfps_warn("plaintext: %s is not loopback; anyone who can reach the ps ports can read the model and the "
                      "sessions on the wire%s: use --tls-cert, --tls-key and --tls-ca (deploy/make-certs.sh)", what,
                      o->job_secret_len ? "" : " and, without a job secret, join the job");
        return TFPS_OK;
    }
    tfps_tls_files t;
    if (tfps_tls_load(&t, o->tls_cert, o->tls_key, o->tls_ca, kind == TFPS_DAEMON_PS ? TFPS_TLS_SERVER : TFPS_TLS_CLIENT,
                      err, errlen) != TFPS_OK)
        return TFPS_ERR;
    int rc = TFPS_OK;
    if (apply) {
        rc = tfps_rpc_set_tls(t.cert_pem, t.key_pem, t.ca_pem, err, errlen);
        if (rc == TFPS_OK) {
            tfps_info("mTLS: certificate \"%s\" (%s), valid until %s (%.0f days), CA %s", t.subject,
                      t.sans[0] ? t.sans : "no SANs", t.not_after, t.days_left, o->tls_ca);
            char host[TFPS_MAX_ADDR + 1];
            if (own) addr_host(own, host, sizeof(host));
            if (own && tfps_tls_names_host(t.cert_pem, host) == 0)
                tfps_warn("mTLS: this task's TF_CONFIG host %s is not among --tls-cert %s's SANs (%s): %s", host,
                          o->tls_cert, t.sans[0] ? t.sans : "none",
                          kind == TFPS_DAEMON_PS ? "workers that reach it by that name will refuse the handshake"
                                                 : "the certificate was made for another task?");
        }
    }
    tfps_tls_files_destroy(&t);
    return rc;
}

/* --max-open-files: each client connection of a ps is a descriptor, and the
 * usual soft limit (1024) is far below the hard one. */
static void set_open_files(long long want) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
    const rlim_t before = rl.rlim_cur, hard = rl.rlim_max == RLIM_INFINITY ? (rlim_t)1 << 20 : rl.rlim_max;
    rl.rlim_cur = want > 0 && (rlim_t)want < hard ? (rlim_t)want : hard;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
        tfps_warn("open files: cannot set the limit to %llu (hard %llu); keeping %llu", (unsigned long long)rl.rlim_cur,
                  (unsigned long long)hard, (unsigned long long)before);
        return;
    }
    tfps_debug("open files: limit %llu (was %llu, hard %llu; --max-open-files %lld)", (unsigned long long)rl.rlim_cur,
               (unsigned long long)before, (unsigned long long)hard, want);
}

int tfps_daemon_setup(tfps_daemon_kind kind, int argc, char **argv, tfps_options *o, tfps_cluster *c) {
    char err[TFPS_ERR_LEN];
    const char *me = daemon_names[kind];
    memset(c, 0, sizeof(*c));
    if (tfps_options_parse(o, argc, argv, err, sizeof(err)) != TFPS_OK) {
        fprintf(stderr, "%s: %s\n", me, err);
        return TFPS_EXIT_USAGE;
    }
    if (o->help) {
        tfps_options_usage(stdout, me,
                           kind == TFPS_DAEMON_PS
                               ? "The tfps parameter server: serves its shard of the model to the workers."
                               : "The tfps worker: computes gradients and pushes them to the ps; the chief also "
                                 "evaluates and exports.\nWith TF_CONFIG unset it trains in one process.");
        return TFPS_EXIT_OK;
    }
    if (o->version) {
        printf("%s %s\n", me, TFPS_VERSION);
        return TFPS_EXIT_OK;
    }
    tfps_log_min_level = o->log_level;
    if (tfps_options_model_dir_is_uri(o))
        tfps_info("--model_dir %.200s: a URI, ignored (the platform uploads the outputs); outputs go to %.200s",
                  o->model_dir, o->output_dir);
    if (tfps_cluster_parse(c, getenv("TF_CONFIG"), err, sizeof(err)) != TFPS_OK) {
        fprintf(stderr, "%s: %s\n", me, err);
        return TFPS_EXIT_USAGE;
    }
    if (o->print_task_type) {   // either daemon, any task: the entrypoint asks before it picks one
        printf("%s\n", c->local ? "local" : tfps_job_name(c->task_type));
        return TFPS_EXIT_OK;
    }
    if (kind == TFPS_DAEMON_PS && c->local) {
        fprintf(stderr, "%s: TF_CONFIG is not set: a ps needs a cluster with a ps task "
                        "(local mode trains in tfps-worker alone)\n", me);
        return TFPS_EXIT_USAGE;
    }
    if (!c->local) {
        int is_ps = c->task_type == TFPS_JOB_PS;
        if (kind == TFPS_DAEMON_PS && !is_ps) {
            fprintf(stderr, "%s: TF_CONFIG task.type is \"%s\": tfps-ps serves ps tasks only; run tfps-worker for "
                            "a %s task\n", me, tfps_job_name(c->task_type), tfps_job_name(c->task_type));
            return TFPS_EXIT_USAGE;
        }
        if (kind == TFPS_DAEMON_WORKER && is_ps) {
            fprintf(stderr, "%s: TF_CONFIG task.type is \"ps\": tfps-worker serves chief, master, worker and "
                            "evaluator tasks; run tfps-ps for a ps task\n", me);
            return TFPS_EXIT_USAGE;
        }
    }
    char role = 'L';
    if (!c->local) {
        switch (c->task_type) {
        case TFPS_JOB_PS: role = 'P'; break;
        case TFPS_JOB_EVALUATOR: role = 'E'; break;
        default: role = c->is_chief ? 'C' : 'W'; break;
        }
    }
    tfps_log_set_role(role, c->local ? 0 : c->task_index);
    if (!c->local && tfps_options_check_cluster(o, c->num_workers, err, sizeof(err)) != TFPS_OK) {
        fprintf(stderr, "%s: %s\n", me, err);
        return TFPS_EXIT_USAGE;
    }
    if (c->ignored) tfps_debug("TF_CONFIG: accepted and ignored: %s", c->ignored);
    if (setup_transport(kind, o, c, !o->print_cluster, err, sizeof(err)) != TFPS_OK) {
        fprintf(stderr, "%s: %s\n", me, err);
        return TFPS_EXIT_USAGE;
    }
    set_open_files(o->max_open_files);
    if (o->print_cluster) {
        char *text = tfps_describe_cluster(c, o, err, sizeof(err));
        if (!text) {
            fprintf(stderr, "%s: %s\n", me, err);
            return TFPS_EXIT_USAGE;
        }
        printf("%s\n", text);
        free(text);
        return TFPS_EXIT_OK;
    }
    return -1;
}
