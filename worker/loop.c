/* loop.c -- see loop.h. */
#include "loop.h"
#include "log.h"
#include "metrics.h"
#include "tfps.h"

#include <cJSON.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

int tfps_loop_open(tfps_loop *lp, const tfps_options *o) {
    char err[TFPS_ERR_LEN];
    int usage = 0;
    memset(lp, 0, sizeof(*lp));
    lp->o = o;
    lp->t0 = tfps_now();
    const int in = TFPS_INPUT_WIDTH;
    if (tfps_layout_init(&lp->l, in, o->h1, o->h2, TFPS_CLASSES, err, sizeof(err)) != TFPS_OK ||
        tfps_mnist_load(&lp->data, o->data_folder, err, sizeof(err)) != TFPS_OK) {
        tfps_error("%s", err);
        return TFPS_EXIT_USAGE;
    }
    lp->be = tfps_backend_open(o, &lp->l, tfps_eval_max_batch(o->batch_size), &usage, err, sizeof(err));
    if (!lp->be) {
        tfps_error("%s", err);
        return usage ? TFPS_EXIT_USAGE : TFPS_EXIT_FAIL;
    }
    const tfps_mnist *d = &lp->data;
    if (d->train.rows * d->train.cols != in || d->test.rows * d->test.cols != in) {
        tfps_error("data: train images are %dx%d and test images %dx%d: expected 28x28 (MNIST)", d->train.rows,
                   d->train.cols, d->test.rows, d->test.cols);
        return TFPS_EXIT_USAGE;
    }
    // page-locked on the GPU: the per-step weight upload is DMA
    lp->params = tfps_backend_host_alloc(lp->be, lp->l.total * sizeof(float));
    if (!lp->params) {
        tfps_error("out of memory for %zu parameters", lp->l.total);
        return TFPS_EXIT_FAIL;
    }
    return TFPS_EXIT_OK;
}

volatile sig_atomic_t tfps_loop_stop_signal;

int tfps_loop_prepare(tfps_loop *lp, int slice, int num_slices, long long first_step) {
    const tfps_options *o = lp->o;
    char err[TFPS_ERR_LEN];
    if (tfps_batcher_init(&lp->batcher, &lp->data.train, slice, num_slices, (uint64_t)o->seed, err, sizeof(err)) !=
        TFPS_OK) {
        tfps_error("%s", err);
        return TFPS_EXIT_USAGE;
    }
    const long long per_epoch = tfps_batcher_steps_per_epoch(&lp->batcher, o->batch_size);
    lp->total_steps = o->steps > 0 ? o->steps : per_epoch * o->epochs;
    // a resumed run: the data position follows from the step (before the feeder gathers its first batch)
    lp->first_step = first_step < lp->total_steps ? first_step : lp->total_steps;
    if (lp->first_step > 0) tfps_batcher_skip(&lp->batcher, o->batch_size, lp->first_step);
    lp->grads[0] = tfps_backend_host_alloc(lp->be, lp->l.total * sizeof(float));
    if (!lp->grads[0]) {
        tfps_error("out of memory for %zu parameters", lp->l.total);
        return TFPS_EXIT_FAIL;
    }
    if (tfps_feeder_init(&lp->feed, &lp->batcher, lp->be, o->batch_size, err, sizeof(err)) != TFPS_OK) {
        tfps_error("%s", err);
        return TFPS_EXIT_FAIL;
    }
    return TFPS_EXIT_OK;
}

/* With overlap, the exchange of step t runs on this thread while the main
 * thread computes step t+1. One exchange in flight at a time: the loop waits
 * for it before it posts the next. */
typedef struct {
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    const tfps_loop_mode *m;
    int has_job, quit;
    const float *grads;
    float loss;
    int batch;
    uint64_t step;
    float *params;
    tfps_loop_info info;
    int rc;
    char err[TFPS_ERR_LEN];
} exchange_thread;

static void *exchange_main(void *arg) {
    exchange_thread *xt = arg;
    pthread_mutex_lock(&xt->mu);
    for (;;) {
        while (!xt->has_job && !xt->quit) pthread_cond_wait(&xt->cv, &xt->mu);
        if (xt->quit) break;
        pthread_mutex_unlock(&xt->mu);
        tfps_loop_info info = {0};
        int rc = xt->m->exchange(xt->m->ctx, xt->grads, xt->loss, xt->batch, xt->step, xt->params, &info, xt->err,
                                 sizeof(xt->err));
        pthread_mutex_lock(&xt->mu);
        xt->info = info;
        xt->rc = rc;
        xt->has_job = 0;
        pthread_cond_broadcast(&xt->cv);
    }
    pthread_mutex_unlock(&xt->mu);
    return NULL;
}

static int exchange_start(exchange_thread *xt, const tfps_loop_mode *m) {
    memset(xt, 0, sizeof(*xt));
    xt->m = m;
    pthread_mutex_init(&xt->mu, NULL);
    pthread_cond_init(&xt->cv, NULL);
    if (pthread_create(&xt->th, NULL, exchange_main, xt) != 0) {
        pthread_mutex_destroy(&xt->mu);
        pthread_cond_destroy(&xt->cv);
        return TFPS_ERR;
    }
    return TFPS_OK;
}

static void exchange_post(exchange_thread *xt, const float *grads, float loss, int batch, uint64_t step,
                          float *params) {
    pthread_mutex_lock(&xt->mu);
    xt->grads = grads;
    xt->loss = loss;
    xt->batch = batch;
    xt->step = step;
    xt->params = params;
    xt->has_job = 1;
    pthread_cond_broadcast(&xt->cv);
    pthread_mutex_unlock(&xt->mu);
}

/* Waits for the exchange in flight; returns its TFPS_OK/TFPS_ERR, its info
 * and (on error) its err. */
static int exchange_wait(exchange_thread *xt, tfps_loop_info *info, char *err, size_t errlen) {
    pthread_mutex_lock(&xt->mu);
    while (xt->has_job) pthread_cond_wait(&xt->cv, &xt->mu);
    int rc = xt->rc;
    *info = xt->info;
    if (rc != TFPS_OK) snprintf(err, errlen, "%s", xt->err);
    pthread_mutex_unlock(&xt->mu);
    return rc;
}

static void exchange_stop(exchange_thread *xt) {
    pthread_mutex_lock(&xt->mu);
    xt->quit = 1;
    pthread_cond_broadcast(&xt->cv);
    pthread_mutex_unlock(&xt->mu);
    pthread_join(xt->th, NULL);
    pthread_mutex_destroy(&xt->mu);
    pthread_cond_destroy(&xt->cv);
}

/* How each field of tfps_loop_info adds up: counters sum, states keep the newest. */
static void fold_info(tfps_loop_info *into, const tfps_loop_info *x) {
    if (x->version) into->version = x->version;
    into->dropped += x->dropped;
    into->steps += x->steps;
    into->wait_s += x->wait_s;
    into->nonfinite += x->nonfinite;
    into->nonfinite_ps = x->nonfinite_ps;
    if (x->cluster_examples) into->cluster_examples = x->cluster_examples;
    if (x->evals) {
        into->evals = x->evals;
        into->eval_step = x->eval_step;
        into->eval_accuracy = x->eval_accuracy;
    }
}

/* After the exchange of step `step` (info, before folding): a refused
 * update is logged and counted; TFPS_ERR when the run diverged
 * (TFPS_LOOP_DIVERGED_STEPS refused in a row). */
static int check_nonfinite(tfps_loop *lp, const tfps_loop_info *info, long long step) {
    if (!info->nonfinite) {
        lp->nonfinite_streak = 0;
        return TFPS_OK;
    }
    lp->nonfinite_streak++;
    const uint64_t n = lp->totals.nonfinite + 1;   // this one included (folded after)
    if (n <= 10 || n % 100 == 0) {
        char who[48];
        if (info->nonfinite_ps >= 0) snprintf(who, sizeof(who), "ps %d", info->nonfinite_ps);
        else snprintf(who, sizeof(who), "local mode");
        tfps_warn("step %lld: %s refused the update as non-finite (a weight or optimizer slot would have become "
                  "inf/NaN): weights unchanged, training goes on (%" PRIu64 " refused so far, %lld in a row; %s)",
                  step, who, n, lp->nonfinite_streak,
                  n == 10 ? "from now on every 100th is logged" : "lower --learning-rate if it goes on");
    }
    if (lp->nonfinite_streak < TFPS_LOOP_DIVERGED_STEPS) return TFPS_OK;
    tfps_error("training diverged: the updates of the last %lld steps (to step %lld) were all refused as non-finite "
               "(each would have made a weight inf/NaN): lower --learning-rate (now %g)", lp->nonfinite_streak, step,
               lp->o->learning_rate);
    return TFPS_ERR;
}

static void fold(tfps_loop *lp, const tfps_loop_info *info) {
    fold_info(&lp->window, info);
    fold_info(&lp->totals, info);
}

/* The weights the exchange in flight wrote become the current ones. */
static void swap_params(tfps_loop *lp) {
    float *t = lp->params;
    lp->params = lp->params2;
    lp->params2 = t;
}

/* The progress line after `done` steps (and the metrics line): see loop.h. */
static void progress_line(tfps_loop *lp, const tfps_loop_mode *m, long long done, int epoch, double loss) {
    const tfps_options *o = lp->o;
    const tfps_loop_info *w = &lp->window;
    const double now = tfps_now(), el = now - lp->t_train;
    const double rate = el > 0 ? lp->examples / el : 0.0;
    char tail[256] = "", cluster[48] = "";
    if (m->progress) m->progress(m->ctx, w, tail, sizeof(tail));
    double crate = -1.0;
    if (w->cluster_examples > 0) {   // every replica's: what ps 0 applied since the last line
        if (lp->prog_t > 0 && w->cluster_examples >= lp->prog_cx && now > lp->prog_t)
            crate = (double)(w->cluster_examples - lp->prog_cx) / (now - lp->prog_t);
        else if (el > 0)
            crate = (double)w->cluster_examples / el;   // the first line: since training began (a resumed run's ps count from their start)
        lp->prog_t = now;
        lp->prog_cx = w->cluster_examples;
        snprintf(cluster, sizeof(cluster), " (cluster %.0f)", crate);
    }
    const double eta = (double)(lp->total_steps - done) * el / (double)(done - lp->first_step);
    tfps_info("step %lld/%lld epoch %d loss %.4f examples/s %.0f%s eta %.1fs%s", done, lp->total_steps, epoch, loss,
              rate, cluster, eta, tail);
    // the global step: the mode's (the window's newest version), else the last line's (no exchange told one since)
    if (m->cluster && w->version) lp->prog_step = w->version;
    const uint64_t global = m->cluster ? lp->prog_step : (uint64_t)done;
    const tfps_metrics_train r = {.step = global, .local_step = done,
                                  .epoch = epoch, .loss = loss, .examples_per_s = rate,
                                  .cluster_examples_per_s = crate, .lr = o->learning_rate,
                                  .cluster = m->cluster, .version = global,
                                  .dropped = w->dropped, .nonfinite = w->nonfinite, .wait_s = w->wait_s};
    tfps_metrics_train_line(lp->metrics, &r);
}

int tfps_loop_run(tfps_loop *lp, const tfps_loop_mode *m) {
    const tfps_options *o = lp->o;
    tfps_backend *be = lp->be;
    tfps_feeder *feed = &lp->feed;
    const long long total = lp->total_steps;
    char err[TFPS_ERR_LEN];
    exchange_thread xt;
    tfps_loop_info info = {0};
    int thread_up = 0, posted = 0, failed = TFPS_EXIT_FAIL;
    if (m->overlap) {
        lp->grads[1] = tfps_backend_host_alloc(be, lp->l.total * sizeof(float));
        lp->params2 = tfps_backend_host_alloc(be, lp->l.total * sizeof(float));
        if (!lp->grads[1] || !lp->params2) {
            tfps_error("out of memory for %zu parameters", lp->l.total);
            return TFPS_EXIT_FAIL;
        }
    }
    lp->t_train = tfps_now();
    if (m->begin && m->begin(m->ctx, lp->params, &info, err, sizeof(err)) != TFPS_OK) {
        tfps_error("%s", err);
        return TFPS_EXIT_FAIL;
    }
    fold(lp, &info);
    if (m->overlap) {
        thread_up = exchange_start(&xt, m) == TFPS_OK;
        if (!thread_up) {
            tfps_error("cannot start the communication thread");
            return TFPS_EXIT_FAIL;
        }
    }
    double loss_sum = 0.0;
    int loss_n = 0, epoch = 0;
    long long step;
    for (step = lp->first_step; step < total; step++) {
        if (tfps_loop_stop_signal) {
            tfps_warn("signal %d: stopping at step %lld of %lld", (int)tfps_loop_stop_signal, step, total);
            failed = 128 + (int)tfps_loop_stop_signal;
            goto stop;
        }
        if (step + 1 < total && tfps_feeder_prefetch(feed) != TFPS_OK) {
            tfps_error("step %lld: %s", step, be->err);
            goto stop;
        }
        const int n = feed->n[feed->cur];
        epoch = feed->epoch[feed->cur];
        float loss = 0.0f, *grads = lp->grads[m->overlap ? step & 1 : 0];
        if (be->step(be, lp->params, feed->x[feed->cur], feed->y[feed->cur], n, grads, &loss) != TFPS_OK) {
            tfps_error("step %lld: %s backend failed: %s", step, be->name, be->err);
            goto stop;
        }
        tfps_feeder_advance(feed);
        if (o->slow_step_ms > 0) tfps_sleep(o->slow_step_ms / 1000.0);   // --slow-step-ms: a straggler, for tests
        if (m->overlap) {
            // the exchange of the previous step has written newer weights into params2: take them, then send
            // this step's gradient while the next step computes
            if (posted) {
                const long long sent = (long long)xt.step;
                posted = 0;
                if (exchange_wait(&xt, &info, err, sizeof(err)) != TFPS_OK) {
                    tfps_error("step %lld: %s", sent, err);
                    goto stop;
                }
                info.steps = 1;
                const int diverged = check_nonfinite(lp, &info, sent) != TFPS_OK;
                fold(lp, &info);
                swap_params(lp);
                if (diverged) goto stop;
            }
            exchange_post(&xt, grads, loss, n, (uint64_t)step + 1, lp->params2);
            posted = 1;
        } else {
            memset(&info, 0, sizeof(info));
            if (m->exchange(m->ctx, grads, loss, n, (uint64_t)step + 1, lp->params, &info, err, sizeof(err)) !=
                TFPS_OK) {
                tfps_error("step %lld: %s", step + 1, err);
                goto stop;
            }
            info.steps = 1;
            const int diverged = check_nonfinite(lp, &info, step + 1) != TFPS_OK;
            fold(lp, &info);
            if (diverged) {
                step++;   // this step was made (and exchanged): count it
                goto stop;
            }
        }
        lp->examples += n;
        lp->loss = loss;
        loss_sum += loss;
        loss_n++;
        if (o->log_every > 0 && (step + 1) % o->log_every == 0) {
            progress_line(lp, m, step + 1, epoch + 1, loss_sum / loss_n);
            loss_sum = 0.0;
            loss_n = 0;
            memset(&lp->window, 0, sizeof(lp->window));
        }
    }
    failed = TFPS_EXIT_OK;
stop:
    lp->steps = step - lp->first_step;
    if (thread_up) {
        if (posted) {
            if (exchange_wait(&xt, &info, err, sizeof(err)) != TFPS_OK) {
                tfps_error("last push: %s", err);
                failed = TFPS_EXIT_FAIL;
            } else {
                info.steps = 1;
                fold(lp, &info);
                swap_params(lp);
            }
        }
        exchange_stop(&xt);
    }
    lp->train_s = tfps_now() - lp->t_train;
    return failed;
}

int tfps_loop_evaluate(tfps_loop *lp, tfps_eval *ev) {
    char err[TFPS_ERR_LEN];
    memset(ev, 0, sizeof(*ev));
    if (tfps_evaluate(lp->be, lp->params, &lp->data.test, ev, err, sizeof(err)) != TFPS_OK) {
        tfps_error("%s", err);
        return TFPS_ERR;
    }
    return TFPS_OK;
}

void tfps_loop_close(tfps_loop *lp) {
    tfps_batcher_destroy(&lp->batcher);
    tfps_feeder_destroy(&lp->feed);
    float *bufs[] = {lp->params, lp->params2, lp->grads[0], lp->grads[1]};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++)
        if (bufs[i]) tfps_backend_host_free(lp->be, bufs[i]);
    tfps_backend_free(lp->be);
    tfps_mnist_free(&lp->data);
    memset(lp, 0, sizeof(*lp));
}

double tfps_loop_examples_per_s(const tfps_loop_result *r) {
    return r->train_s > 0 ? r->examples / r->train_s : 0.0;
}

/* The "dataset" object: name and source from the data folder's SOURCE.txt
 * (deploy/get-data.sh writes its "dataset:" and "source:" lines), else the
 * folder's name and "unknown"; the counts the run used. */
static cJSON *dataset_json(const tfps_loop *lp) {
    char name[128] = "", source[512] = "", line[1024], path[TFPS_PATH_LEN + 32];
    snprintf(path, sizeof(path), "%s/SOURCE.txt", lp->o->data_folder);
    FILE *f = fopen(path, "r");
    while (f && fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\r\n")] = '\0';
        // %.*s: the line may be longer than the field (then cut)
        if (!name[0] && strncmp(line, "dataset: ", 9) == 0)
            snprintf(name, sizeof(name), "%.*s", (int)sizeof(name) - 1, line + 9);
        else if (!source[0] && strncmp(line, "source: ", 8) == 0)
            snprintf(source, sizeof(source), "%.*s", (int)sizeof(source) - 1, line + 8);
    }
    if (f) fclose(f);
    if (!name[0]) {
        const char *slash = strrchr(lp->o->data_folder, '/');
        snprintf(name, sizeof(name), "%.*s", (int)sizeof(name) - 1, slash && slash[1] ? slash + 1 : lp->o->data_folder);
    }
    if (!source[0]) snprintf(source, sizeof(source), "unknown (no SOURCE.txt in %.*s)", 400, lp->o->data_folder);
    cJSON *d = cJSON_CreateObject();
    if (!d) return NULL;
    cJSON_AddStringToObject(d, "name", name);
    cJSON_AddStringToObject(d, "source", source);
    cJSON_AddStringToObject(d, "folder", lp->o->data_folder);
    cJSON_AddNumberToObject(d, "train_examples", lp->data.train.n);
    cJSON_AddNumberToObject(d, "test_examples", lp->data.test.n);
    return d;
}

cJSON *tfps_loop_summary(const tfps_loop *lp, const tfps_loop_result *r) {
    cJSON *j = cJSON_CreateObject();
    if (!j) return NULL;
    cJSON *d = dataset_json(lp);
    if (!d) {
        cJSON_Delete(j);
        return NULL;
    }
    cJSON_AddItemToObject(j, "dataset", d);
    cJSON_AddStringToObject(j, "mode", r->mode);
    cJSON_AddStringToObject(j, "model", r->model);
    cJSON_AddStringToObject(j, "version", TFPS_VERSION);
    cJSON_AddNumberToObject(j, "test_accuracy", r->test_accuracy);
    cJSON_AddNumberToObject(j, "test_loss", r->test_loss);
    cJSON_AddNumberToObject(j, "final_loss", lp->loss);   // this process's last training step's mean loss
    cJSON_AddNumberToObject(j, "test_examples", lp->data.test.n);
    cJSON_AddNumberToObject(j, "train_examples", lp->data.train.n);
    cJSON_AddNumberToObject(j, "steps", r->steps);
    cJSON_AddNumberToObject(j, "epochs", r->examples / lp->data.train.n);
    cJSON_AddNumberToObject(j, "examples", r->examples);
    cJSON_AddNumberToObject(j, "examples_per_s", tfps_loop_examples_per_s(r));
    cJSON_AddNumberToObject(j, "train_s", r->train_s);
    cJSON_AddNumberToObject(j, "wall_s", r->wall_s);
    cJSON_AddNumberToObject(j, "parameters", (double)lp->l.total);
    cJSON_AddStringToObject(j, "backend", lp->be->name);
    return j;
}
