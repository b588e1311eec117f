/* daemon.c -- see daemon.h. */
#include "daemon.h"
#include "layout.h"
#include "log.h"
#include "shard.h"
#include "tfps.h"

#include <cJSON.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    if (!text) tfps_seterr(err, errlen, "print-cluster: out of memory");
    return text;
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
    if (tfps_cluster_parse(c, getenv("TF_CONFIG"), err, sizeof(err)) != TFPS_OK) {
        fprintf(stderr, "%s: %s\n", me, err);
        return TFPS_EXIT_USAGE;
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
