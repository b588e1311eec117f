/* metrics.c -- see metrics.h. */
#define _POSIX_C_SOURCE 200809L
#include "metrics.h"
#include "log.h"
#include "options.h"
#include "tfevents.h"
#include "tfps.h"

#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

struct tfps_metrics {
    char task[64];
    FILE *jsonl;          /* NULL: none (could not be made, or a write failed) */
    char path[TFPS_PATH_LEN + 96];
    tfps_tfevents *tb;    /* NULL: none (likewise) */
};

static double unix_now(void) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + tv.tv_usec / 1e6;
}

tfps_metrics *tfps_metrics_open(const char *output_dir, const char *task) {
    char err[TFPS_ERR_LEN], dir[TFPS_PATH_LEN + 16];
    if (!output_dir || !output_dir[0]) return NULL;
    tfps_metrics *m = calloc(1, sizeof(*m));
    if (!m) return NULL;
    snprintf(m->task, sizeof(m->task), "%s", task);
    snprintf(dir, sizeof(dir), "%s/logs", output_dir);
    snprintf(m->path, sizeof(m->path), "%s/metrics-%s.jsonl", dir, m->task);
    if (tfps_mkdirs(dir, err, sizeof(err)) != TFPS_OK) {
        tfps_warn("metrics: %s (training goes on without them)", err);
        free(m);
        return NULL;
    } else if (!(m->jsonl = fopen(m->path, "a"))) {
        tfps_warn("metrics: %s: cannot be opened for appending (training goes on without it)", m->path);
    }
    snprintf(dir, sizeof(dir), "%s/logs/tensorboard", output_dir);
    char tbdir[TFPS_PATH_LEN + 96];
    snprintf(tbdir, sizeof(tbdir), "%s/%s", dir, m->task);
    if (!(m->tb = tfps_tfevents_open(tbdir, err, sizeof(err))))
        tfps_warn("metrics: TensorBoard events: %s (training goes on without them)", err);
    if (!m->jsonl && !m->tb) {
        free(m);
        return NULL;
    }
    return m;
}

/* n scalars at step into the event file; a failure ends it for this run. */
static void put_scalars(tfps_metrics *m, uint64_t step, int n, const char *const *tags, const float *values) {
    char err[TFPS_ERR_LEN];
    if (!m->tb) return;
    if (tfps_tfevents_scalars(m->tb, (int64_t)step, n, tags, values, err, sizeof(err)) != TFPS_OK) {
        tfps_warn("metrics: TensorBoard events: %s (no more events this run)", err);
        tfps_tfevents_close(m->tb);
        m->tb = NULL;
    }
}

/* One line: the object printed unformatted, a newline, flushed (a reader
 * such as plot-metrics sees whole lines). Consumes j. */
static void put_line(tfps_metrics *m, cJSON *j) {
    if (!m->jsonl) {
        cJSON_Delete(j);
        return;
    }
    char *text = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    if (!text || fprintf(m->jsonl, "%s\n", text) < 0 || fflush(m->jsonl) != 0) {
        tfps_warn("metrics: %s: %s (no more lines in it this run)", m->path, text ? "write failed" : "out of memory");
        fclose(m->jsonl);
        m->jsonl = NULL;
    }
    free(text);
}

static cJSON *line(const tfps_metrics *m, uint64_t step) {
    cJSON *j = cJSON_CreateObject();
    if (!j) return NULL;
    cJSON_AddNumberToObject(j, "time", unix_now());
    cJSON_AddStringToObject(j, "task", m->task);
    cJSON_AddNumberToObject(j, "step", (double)step);
    return j;
}

void tfps_metrics_train_line(tfps_metrics *m, const tfps_metrics_train *r) {
    if (!m) return;
    cJSON *j = line(m, r->step);
    if (!j) return;
    cJSON_AddNumberToObject(j, "local_step", (double)r->local_step);
    cJSON_AddNumberToObject(j, "epoch", r->epoch);
    cJSON_AddNumberToObject(j, "loss", r->loss);
    cJSON_AddNumberToObject(j, "examples_per_s", r->examples_per_s);
    if (r->cluster_examples_per_s >= 0) cJSON_AddNumberToObject(j, "cluster_examples_per_s", r->cluster_examples_per_s);
    cJSON_AddNumberToObject(j, "lr", r->lr);
    if (r->cluster) {
        cJSON_AddNumberToObject(j, "version", (double)r->version);
        cJSON_AddNumberToObject(j, "dropped", (double)r->dropped);
        cJSON_AddNumberToObject(j, "wait_s", r->wait_s);
    }
    if (r->nonfinite) cJSON_AddNumberToObject(j, "nonfinite", (double)r->nonfinite);
    put_line(m, j);
    const char *tags[] = {"loss", "examples_per_sec", "learning_rate", "cluster_examples_per_sec"};
    const float values[] = {(float)r->loss, (float)r->examples_per_s, (float)r->lr, (float)r->cluster_examples_per_s};
    put_scalars(m, r->step, r->cluster_examples_per_s >= 0 ? 4 : 3, tags, values);
}

void tfps_metrics_eval(tfps_metrics *m, const char *kind, uint64_t step, double accuracy, double loss,
                       const char *source) {
    if (!m) return;
    cJSON *j = line(m, step);
    if (!j) return;
    cJSON_AddStringToObject(j, "kind", kind);
    cJSON_AddNumberToObject(j, "accuracy", accuracy);
    cJSON_AddNumberToObject(j, "loss", loss);
    if (source) cJSON_AddStringToObject(j, "source", source);
    put_line(m, j);
    const char *tags[] = {"eval/accuracy", "eval/loss"};
    const float values[] = {(float)accuracy, (float)loss};
    put_scalars(m, step, 2, tags, values);
}

void tfps_metrics_close(tfps_metrics *m) {
    if (!m) return;
    if (m->jsonl) fclose(m->jsonl);
    tfps_tfevents_close(m->tb);
    free(m);
}
