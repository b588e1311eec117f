#define _POSIX_C_SOURCE 200809L
/* dist.c -- cluster mode of tfps-worker: worker, chief and evaluator duties.
 *
 * Training replicas (TF's chief/master + worker tasks) are ranked: the
 * chief/master task is rank 0 and worker i is rank i+1 when there is one,
 * else worker i is rank i. Rank r trains on slice r of the training set
 * (data.h), pushing to and pulling from every ps each step (psclient.h).
 * The chief also trains (as in TF's estimator PS mode), then waits until
 * every replica has reported done, pulls the final weights, evaluates,
 * writes <output-dir>/model/model.tfps and summary.json, and tells every ps
 * to shut down. */
#include "data.h"
#include "log.h"
#include "model.h"
#include "psclient.h"
#include "service.h"
#include "tfps.h"
#include "train.h"

#include <cJSON.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void sleep_s(double s) {
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

static int rank_of(const tfps_cluster *c) {
    if (c->task_type == TFPS_JOB_CHIEF || c->task_type == TFPS_JOB_MASTER) return 0;
    int has_chief = c->jobs[TFPS_JOB_CHIEF].present || c->jobs[TFPS_JOB_MASTER].present;
    return c->task_index + (has_chief ? 1 : 0);
}

typedef struct {
    const tfps_options *o;
    const tfps_cluster *c;
    tfps_layout l;
    tfps_shard_plan plan;
    tfps_psclient pc;
    tfps_mnist data;
    tfps_backend *be;
    float *params;    /* [total] the weights the next step computes on */
    float *params2;   /* [total] with --overlap: the pull in flight writes here */
} cluster_ctx;

/* With --overlap, the push of step t and the pull for step t+2 run on this
 * thread while the main thread computes step t+1. gRPC core only makes
 * progress on a thread that polls its queue, so overlap needs a thread of its
 * own; the psclient is used by one thread at a time (posting waits). */
typedef struct {
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    tfps_psclient *pc;
    double timeout_s;
    int has_job, quit;
    const float *grads;
    float loss;
    int batch;
    uint64_t step;
    float *params;
    int rc;
    char err[TFPS_ERR_LEN];
} comm_thread;

static void *comm_main(void *arg) {
    comm_thread *ct = arg;
    pthread_mutex_lock(&ct->mu);
    for (;;) {
        while (!ct->has_job && !ct->quit) pthread_cond_wait(&ct->cv, &ct->mu);
        if (ct->quit) break;
        pthread_mutex_unlock(&ct->mu);
        int rc = tfps_psclient_round(ct->pc, ct->grads, ct->loss, ct->batch, ct->step, ct->params, ct->timeout_s,
                                     ct->err, sizeof(ct->err));
        pthread_mutex_lock(&ct->mu);
        ct->rc = rc;
        ct->has_job = 0;
        pthread_cond_broadcast(&ct->cv);
    }
    pthread_mutex_unlock(&ct->mu);
    return NULL;
}

static void comm_post(comm_thread *ct, const float *grads, float loss, int batch, uint64_t step, float *params) {
    pthread_mutex_lock(&ct->mu);
    ct->grads = grads;
    ct->loss = loss;
    ct->batch = batch;
    ct->step = step;
    ct->params = params;
    ct->has_job = 1;
    pthread_cond_broadcast(&ct->cv);
    pthread_mutex_unlock(&ct->mu);
}

/* Waits for the round in flight; returns its TFPS_OK/TFPS_ERR (err copied). */
static int comm_wait(comm_thread *ct, char *err, size_t errlen) {
    pthread_mutex_lock(&ct->mu);
    while (ct->has_job) pthread_cond_wait(&ct->cv, &ct->mu);
    int rc = ct->rc;
    if (rc != TFPS_OK) snprintf(err, errlen, "%s", ct->err);
    pthread_mutex_unlock(&ct->mu);
    return rc;
}

/* Everything a task needs before training: layout, plan, backend, data, the
 * ps connections and registration. Returns -1 to go on, else an exit code. */
static int setup(cluster_ctx *x, int rank) {
    const tfps_options *o = x->o;
    const tfps_cluster *c = x->c;
    char err[TFPS_ERR_LEN];
    int usage = 0, refused = 0;
    if (tfps_layout_init(&x->l, TFPS_INPUT_WIDTH, o->h1, o->h2, TFPS_CLASSES, err, sizeof(err)) != TFPS_OK ||
        tfps_shard_plan_build(&x->plan, &x->l, c->num_ps, (tfps_shard_strategy)o->shard_strategy, err,
                              sizeof(err)) != TFPS_OK) {
        tfps_error("%s", err);
        return TFPS_EXIT_USAGE;
    }
    const int B = o->batch_size;
    if (tfps_mnist_load(&x->data, o->data_folder, err, sizeof(err)) != TFPS_OK) {
        tfps_error("%s", err);
        return TFPS_EXIT_USAGE;
    }
    x->be = tfps_backend_open(o, &x->l, B > 1000 ? B : 1000, &usage, err, sizeof(err));
    if (!x->be) {
        tfps_error("%s", err);
        return usage ? TFPS_EXIT_USAGE : TFPS_EXIT_FAIL;
    }
    if (x->data.train.rows * x->data.train.cols != TFPS_INPUT_WIDTH) {
        tfps_error("data: images are %dx%d: expected 28x28 (MNIST)", x->data.train.rows, x->data.train.cols);
        return TFPS_EXIT_USAGE;
    }
    // page-locked on the GPU: the per-step weight upload is DMA
    x->params = tfps_backend_host_alloc(x->be, x->l.total * sizeof(float));
    x->params2 = tfps_backend_host_alloc(x->be, x->l.total * sizeof(float));
    if (!x->params || !x->params2) {
        tfps_error("out of memory for %zu parameters", x->l.total);
        return TFPS_EXIT_FAIL;
    }
    if (tfps_psclient_init(&x->pc, c->jobs[TFPS_JOB_PS].addr, &x->l, &x->plan, err, sizeof(err)) != TFPS_OK) {
        tfps_error("%s", err);
        return TFPS_EXIT_FAIL;
    }
    tfps_optim opt;
    char opt_desc[160];
    tfps_options_optim(o, &opt);
    tfps_optim_describe(&opt, opt_desc, sizeof(opt_desc));
    tfps_wire_register_req q = {
        .task_type = tfps_job_name(c->task_type), .task_index = (uint32_t)c->task_index,
        .worker_rank = (uint32_t)(rank < 0 ? 0 : rank), .num_workers = (uint32_t)c->num_workers,
        .num_ps = (uint32_t)c->num_ps, .input = (uint32_t)x->l.in, .h1 = (uint32_t)x->l.h1, .h2 = (uint32_t)x->l.h2,
        .classes = (uint32_t)x->l.out, .layout_digest = tfps_layout_digest(&x->l),
        .shard_plan_digest = x->plan.digest, .shard_strategy = tfps_shard_strategy_name(x->plan.strategy),
        .seed = (uint64_t)o->seed, .learning_rate = o->learning_rate,
        .consistency = tfps_consistency_name(o->consistency), .replicas_to_aggregate = (uint32_t)o->replicas_to_aggregate,
        .staleness = (uint32_t)o->staleness, .optimizer = opt_desc, .optimizer_digest = tfps_optim_digest(&opt)};
    tfps_info("registering with %d ps (waiting up to %.0fs for them to come up)", c->num_ps, o->startup_timeout);
    if (tfps_psclient_register(&x->pc, &q, o->startup_timeout, &refused, err, sizeof(err)) != TFPS_OK) {
        tfps_error("register: %s", err);
        return refused ? TFPS_EXIT_USAGE : TFPS_EXIT_FAIL;
    }
    tfps_info("registered with %d ps as worker id %" PRIu32 "; model %d-%d-%d-%d, %s plan %016" PRIx64 ", %s backend",
              c->num_ps, x->pc.worker_id, x->l.in, x->l.h1, x->l.h2, x->l.out,
              tfps_shard_strategy_name(x->plan.strategy), x->plan.digest, x->be->name);
    return -1;
}

static void teardown(cluster_ctx *x) {
    tfps_psclient_destroy(&x->pc);
    if (x->params) tfps_backend_host_free(x->be, x->params);
    if (x->params2) tfps_backend_host_free(x->be, x->params2);
    tfps_backend_free(x->be);
    tfps_mnist_free(&x->data);
    tfps_shard_plan_destroy(&x->plan);
}

/* The evaluator: pull, evaluate, log, every --eval-every seconds, until the ps go away. */
static int run_evaluator(cluster_ctx *x) {
    char err[TFPS_ERR_LEN];
    double best = 0.0;
    int evals = 0;
    for (;;) {
        if (tfps_psclient_round(&x->pc, NULL, 0, 0, 0, x->params, 5.0, err, sizeof(err)) != TFPS_OK) {
            tfps_info("ps unreachable (%s): training is over; %d evaluations, best test accuracy %.4f", err, evals,
                      best);
            return TFPS_EXIT_OK;
        }
        double acc = 0.0;
        if (tfps_evaluate(x->be, x->params, &x->data.test, &acc, err, sizeof(err)) != TFPS_OK) {
            tfps_error("%s", err);
            return TFPS_EXIT_FAIL;
        }
        evals++;
        if (acc > best) best = acc;
        tfps_info("evaluation %d: ps version %" PRIu64 ", test accuracy %.4f", evals, x->pc.version_sum, acc);
        sleep_s(x->o->eval_every);
    }
}

/* The chief's duties after its own training. */
static int chief_finish(cluster_ctx *x, double t0, double t_train, long long my_steps) {
    const tfps_options *o = x->o;
    char err[TFPS_ERR_LEN], path[TFPS_PATH_LEN + 64];
    tfps_wire_heartbeat_resp hb = {0};
    double last_log = 0;
    for (;;) {
        if (tfps_psclient_heartbeat(&x->pc, (uint64_t)my_steps, 0, 1, &hb, o->rpc_timeout, err, sizeof(err)) !=
            TFPS_OK) {
            tfps_error("waiting for the workers: %s", err);
            return TFPS_EXIT_FAIL;
        }
        if (hb.workers_done >= (uint32_t)x->c->num_workers) break;
        if (tfps_now() - last_log > 10.0) {
            tfps_info("waiting for the workers: %" PRIu32 " of %d done (%" PRIu32 " registered)", hb.workers_done,
                      x->c->num_workers, hb.workers_registered);
            last_log = tfps_now();
        }
        sleep_s(0.05);
    }
    const double train_s = tfps_now() - t_train;
    tfps_wire_status_resp st;
    if (tfps_psclient_round(&x->pc, NULL, 0, 0, 0, x->params, o->rpc_timeout, err, sizeof(err)) != TFPS_OK ||
        tfps_psclient_status(&x->pc, 0, &st, o->rpc_timeout, err, sizeof(err)) != TFPS_OK) {
        tfps_error("final pull: %s", err);
        return TFPS_EXIT_FAIL;
    }
    double acc = 0.0;
    if (tfps_evaluate(x->be, x->params, &x->data.test, &acc, err, sizeof(err)) != TFPS_OK) {
        tfps_error("%s", err);
        return TFPS_EXIT_FAIL;
    }
    if (tfps_export_model(o, &x->l, x->params, st.applied, path, sizeof(path)) != TFPS_OK) return TFPS_EXIT_FAIL;
    int rc;

    const double eps = train_s > 0 ? (double)st.examples / train_s : 0.0;
    cJSON *s = cJSON_CreateObject(), *opts = cJSON_CreateObject();
    cJSON_AddStringToObject(s, "mode", "cluster");
    cJSON_AddStringToObject(s, "version", TFPS_VERSION);
    cJSON_AddNumberToObject(s, "test_accuracy", acc);
    cJSON_AddNumberToObject(s, "test_examples", x->data.test.n);
    cJSON_AddNumberToObject(s, "train_examples", x->data.train.n);
    cJSON_AddNumberToObject(s, "steps", (double)st.applied);   // pushes applied by ps 0: every worker step
    cJSON_AddNumberToObject(s, "chief_steps", (double)my_steps);
    cJSON_AddNumberToObject(s, "examples", (double)st.examples);
    cJSON_AddNumberToObject(s, "epochs", (double)st.examples / x->data.train.n);
    cJSON_AddNumberToObject(s, "examples_per_s", eps);
    cJSON_AddNumberToObject(s, "refused", (double)st.refused);
    cJSON_AddNumberToObject(s, "train_s", train_s);
    cJSON_AddNumberToObject(s, "wall_s", tfps_now() - t0);
    cJSON_AddNumberToObject(s, "num_ps", x->c->num_ps);
    cJSON_AddNumberToObject(s, "num_workers", x->c->num_workers);
    cJSON_AddNumberToObject(s, "parameters", (double)x->l.total);
    cJSON_AddStringToObject(s, "backend", x->be->name);
    cJSON_AddStringToObject(s, "model", path);
    tfps_options_to_json(o, opts);
    cJSON_AddItemToObject(s, "options", opts);
    rc = tfps_write_summary(o, s);
    cJSON_Delete(s);
    if (tfps_psclient_shutdown(&x->pc, "training finished (chief)", o->rpc_timeout, err, sizeof(err)) != TFPS_OK)
        tfps_warn("shutdown: %s", err);   // the model and summary are written; a ps that is gone already is fine
    if (rc == TFPS_EXIT_OK)
        printf("tfps: %d ps, %d workers, steps %" PRIu64 ", examples/s %.0f, test accuracy %.4f, wall %.2fs\n",
               x->c->num_ps, x->c->num_workers, st.applied, eps, acc, tfps_now() - t0);
    return rc;
}

int tfps_train_cluster(const tfps_options *o, const tfps_cluster *c) {
    const double t0 = tfps_now();
    char err[TFPS_ERR_LEN];
    cluster_ctx x = {.o = o, .c = c};
    tfps_batcher batcher = {0};
    float *grads = NULL, *grads2 = NULL;
    tfps_feeder feed = {0};
    const int is_eval = c->task_type == TFPS_JOB_EVALUATOR, rank = is_eval ? -1 : rank_of(c);
    int rc = setup(&x, rank);
    if (rc >= 0) goto done;
    if (is_eval) {
        rc = run_evaluator(&x);
        goto done;
    }
    rc = TFPS_EXIT_FAIL;
    const int B = o->batch_size;
    if (tfps_batcher_init(&batcher, &x.data.train, rank, c->num_workers, (uint64_t)o->seed, err, sizeof(err)) !=
        TFPS_OK) {
        tfps_error("%s", err);
        rc = TFPS_EXIT_USAGE;
        goto done;
    }
    grads = tfps_backend_host_alloc(x.be, x.l.total * sizeof(float));
    grads2 = tfps_backend_host_alloc(x.be, x.l.total * sizeof(float));
    if (!grads || !grads2) {
        tfps_error("out of memory");
        goto done;
    }
    if (tfps_feeder_init(&feed, &batcher, x.be, B, err, sizeof(err)) != TFPS_OK) {
        tfps_error("%s", err);
        goto done;
    }
    const long long per_epoch = tfps_batcher_steps_per_epoch(&batcher, B);
    const long long total = o->steps > 0 ? o->steps : per_epoch * o->epochs;
    tfps_info("rank %d of %d: %d training examples in this slice, %lld steps of batch %d", rank, c->num_workers,
              batcher.n, total, B);
    const double t_train = tfps_now();
    if (tfps_psclient_round(&x.pc, NULL, 0, 0, 0, x.params, o->rpc_timeout, err, sizeof(err)) != TFPS_OK) {
        tfps_error("initial pull: %s", err);
        goto done;
    }
    long long step, examples = 0;
    double loss_sum = 0;
    int loss_n = 0, epoch = 0, posted = 0, thread_up = 0, failed = 0;
    float *g[2] = {grads, grads2};
    comm_thread ct = {.pc = &x.pc, .timeout_s = o->rpc_timeout};
    if (o->overlap) {
        pthread_mutex_init(&ct.mu, NULL);
        pthread_cond_init(&ct.cv, NULL);
        thread_up = pthread_create(&ct.th, NULL, comm_main, &ct) == 0;
        if (!thread_up) {
            tfps_error("cannot start the communication thread");
            goto done;
        }
    }
    for (step = 0; step < total; step++) {
        if (step + 1 < total && tfps_feeder_prefetch(&feed) != TFPS_OK) {
            tfps_error("step %lld: %s", step, x.be->err);
            failed = 1;
            break;
        }
        const int n = feed.n[feed.cur];
        epoch = feed.epoch[feed.cur];
        float loss = 0, *gs = g[step & 1];
        if (x.be->step(x.be, x.params, feed.x[feed.cur], feed.y[feed.cur], n, gs, &loss) != TFPS_OK) {
            tfps_error("step %lld: %s backend failed: %s", step, x.be->name, x.be->err);
            failed = 1;
            break;
        }
        tfps_feeder_advance(&feed);
        if (o->overlap) {
            // the round of the previous step has pulled newer weights into params2: take them, then send
            // this step's gradient and pull again while the next step computes
            if (posted && comm_wait(&ct, err, sizeof(err)) != TFPS_OK) {
                tfps_error("step %lld: %s", step, err);
                posted = 0;
                failed = 1;
                break;
            }
            if (posted) {
                float *t = x.params;
                x.params = x.params2;
                x.params2 = t;
            }
            comm_post(&ct, gs, loss, n, (uint64_t)step + 1, x.params2);
            posted = 1;
        } else if (tfps_psclient_round(&x.pc, gs, loss, n, (uint64_t)step + 1, x.params, o->rpc_timeout, err,
                                       sizeof(err)) != TFPS_OK) {
            // push this step's gradient and pull the weights for the next step, every ps in parallel
            tfps_error("step %lld: %s", step + 1, err);
            failed = 1;
            break;
        }
        examples += n;
        loss_sum += loss;
        loss_n++;
        if (o->log_every > 0 && (step + 1) % o->log_every == 0) {
            double el = tfps_now() - t_train;
            tfps_info("step %lld/%lld epoch %d loss %.4f examples/s %.0f eta %.1fs (ps version %" PRIu64 ")", step + 1,
                      total, epoch + 1, loss_sum / loss_n, examples / el,
                      (double)(total - step - 1) * el / (double)(step + 1), x.pc.version_sum);
            loss_sum = 0;
            loss_n = 0;
        }
    }
    if (thread_up) {
        if (posted) {
            if (comm_wait(&ct, err, sizeof(err)) != TFPS_OK) {
                tfps_error("last push: %s", err);
                failed = 1;
            } else {
                float *t = x.params;
                x.params = x.params2;
                x.params2 = t;
            }
        }
        pthread_mutex_lock(&ct.mu);
        ct.quit = 1;
        pthread_cond_broadcast(&ct.cv);
        pthread_mutex_unlock(&ct.mu);
        pthread_join(ct.th, NULL);
        pthread_mutex_destroy(&ct.mu);
        pthread_cond_destroy(&ct.cv);
    }
    if (failed) goto done;
    tfps_info("finished %lld steps, %lld examples in %.2fs (%.0f examples/s)", step, examples, tfps_now() - t_train,
              examples / (tfps_now() - t_train));
    if (!c->is_chief) {
        if (tfps_psclient_heartbeat(&x.pc, (uint64_t)step, (uint64_t)examples, 1, NULL, o->rpc_timeout, err,
                                    sizeof(err)) != TFPS_OK) {
            tfps_error("reporting done: %s", err);
            goto done;
        }
        rc = TFPS_EXIT_OK;
        goto done;
    }
    rc = chief_finish(&x, t0, t_train, step);
done:
    tfps_batcher_destroy(&batcher);
    tfps_feeder_destroy(&feed);
    if (grads) tfps_backend_host_free(x.be, grads);
    if (grads2) tfps_backend_host_free(x.be, grads2);
    teardown(&x);
    return rc;
}
