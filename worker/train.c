/* train.c -- see train.h. */
#include "train.h"
#include "data.h"
#include "idx.h"
#include "log.h"
#include "model.h"
#include "tfps.h"

#include <cJSON.h>
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

tfps_backend *tfps_backend_open(const tfps_options *o, const tfps_layout *l, int max_batch, int *usage, char *err,
                                size_t errlen) {
    *usage = 0;
    if (o->threads > 0) openblas_set_num_threads(o->threads);
#ifdef TFPS_WITH_CUDA
    if (o->device != TFPS_DEVICE_CPU) {
        char name[256], why[TFPS_ERR_LEN];
        size_t mem = 0;
        const int found = tfps_cuda_probe(o->gpu, name, sizeof(name), &mem, why, sizeof(why));
        if (found > 0) {
            tfps_backend *b = tfps_cuda_backend_new(l, max_batch, o->gpu, err, errlen);
            if (b) {
                tfps_info("device: GPU %d, %s, %.1f GiB", o->gpu, name, mem / 1073741824.0);
                return b;
            }
            if (o->device == TFPS_DEVICE_CUDA) return NULL;
            tfps_warn("device auto: the GPU failed (%s); using the CPU", err);
        } else if (o->device == TFPS_DEVICE_CUDA) {
            *usage = 1;
            tfps_seterr(err, errlen, "--device cuda: %s; expected a visible GPU, or --device cpu / auto", why);
            return NULL;
        } else if (found < 0) {
            tfps_warn("device auto: %s; using the CPU", why);
        } else {
            tfps_info("device auto: %s; using the CPU", why);
        }
    }
#else
    if (o->device == TFPS_DEVICE_CUDA) {
        *usage = 1;
        tfps_seterr(err, errlen, "--device cuda: this build has no CUDA backend (nvcc was not found when it was "
                                 "built); expected --device cpu or auto");
        return NULL;
    }
    if (o->device == TFPS_DEVICE_AUTO) tfps_debug("device auto: this build has no CUDA backend; using the CPU");
#endif
    tfps_backend *b = tfps_cpu_backend_new(l, max_batch);
    if (!b) tfps_seterr(err, errlen, "cpu backend: out of memory for batch %d", max_batch);
    return b;
}

int tfps_write_summary(const tfps_options *o, cJSON *summary) {
    char err[TFPS_ERR_LEN], path[TFPS_PATH_LEN + 64];
    if (tfps_mkdirs(o->output_dir, err, sizeof(err)) != TFPS_OK) {
        tfps_error("--output-dir: %s", err);
        return TFPS_EXIT_USAGE;
    }
    char *text = cJSON_Print(summary);
    if (!text) return TFPS_EXIT_FAIL;
    snprintf(path, sizeof(path), "%s/summary.json", o->output_dir);
    size_t len = strlen(text);
    text[len] = '\n';   /* replaces the terminator; the length below excludes it */
    int rc = tfps_write_file_atomic(path, text, len + 1, err, sizeof(err));
    free(text);
    if (rc != TFPS_OK) {
        tfps_error("summary: %s", err);
        return TFPS_EXIT_FAIL;
    }
    tfps_info("wrote %s", path);
    return TFPS_EXIT_OK;
}

int tfps_export_model(const tfps_options *o, const tfps_layout *l, const float *params, uint64_t step, char *path,
                      size_t pathlen) {
    char err[TFPS_ERR_LEN];
    snprintf(path, pathlen, "%s/model", o->output_dir);
    int rc = tfps_mkdirs(path, err, sizeof(err));
    snprintf(path, pathlen, "%s/model/%s", o->output_dir, TFPS_MODEL_FILE);
    if (rc == TFPS_OK) rc = tfps_model_write(path, l, params, step, err, sizeof(err));
    if (rc != TFPS_OK) tfps_error("model: %s", err);
    else tfps_info("wrote %s", path);
    return rc;
}

int tfps_train_local(const tfps_options *o) {
    const double t0 = tfps_now();
    char err[TFPS_ERR_LEN];
    int rc = TFPS_EXIT_FAIL, usage = 0;
    tfps_mnist data = {0};
    tfps_layout l;
    tfps_batcher batcher = {0};
    tfps_backend *be = NULL;
    float *params = NULL, *grads = NULL;
    tfps_feeder feed = {0};

    const int in = TFPS_INPUT_WIDTH, B = o->batch_size;
    if (tfps_layout_init(&l, in, o->h1, o->h2, TFPS_CLASSES, err, sizeof(err)) != TFPS_OK) {
        tfps_error("%s", err);
        rc = TFPS_EXIT_USAGE;
        goto done;
    }
    if (tfps_mnist_load(&data, o->data_folder, err, sizeof(err)) != TFPS_OK) {
        tfps_error("%s", err);
        rc = TFPS_EXIT_USAGE;
        goto done;
    }
    be = tfps_backend_open(o, &l, B > 1000 ? B : 1000, &usage, err, sizeof(err));
    if (!be) {
        tfps_error("%s", err);
        rc = usage ? TFPS_EXIT_USAGE : TFPS_EXIT_FAIL;
        goto done;
    }
    if (data.train.rows * data.train.cols != in || data.test.rows * data.test.cols != in) {
        tfps_error("data: train images are %dx%d and test images %dx%d: expected 28x28 (MNIST)", data.train.rows,
                   data.train.cols, data.test.rows, data.test.cols);
        rc = TFPS_EXIT_USAGE;
        goto done;
    }
    if (tfps_batcher_init(&batcher, &data.train, 0, 1, (uint64_t)o->seed, err, sizeof(err)) != TFPS_OK) {
        tfps_error("%s", err);
        rc = TFPS_EXIT_USAGE;
        goto done;
    }
    // page-locked on the GPU: the per-step copies are DMA
    params = tfps_backend_host_alloc(be, l.total * sizeof(float));
    grads = tfps_backend_host_alloc(be, l.total * sizeof(float));
    if (!params || !grads) {
        tfps_error("out of memory for %zu parameters", l.total);
        goto done;
    }
    if (tfps_feeder_init(&feed, &batcher, be, B, err, sizeof(err)) != TFPS_OK) {
        tfps_error("%s", err);
        goto done;
    }
    tfps_layout_init_range(&l, (uint64_t)o->seed, 0, l.total, params);

    const long long per_epoch = tfps_batcher_steps_per_epoch(&batcher, B);
    const long long total_steps = o->steps > 0 ? o->steps : per_epoch * o->epochs;
    tfps_info("local mode: %d train / %d test examples from %s; model %d-%d-%d-%d (%zu parameters); %lld steps of "
              "batch %d on %s",
              data.train.n, data.test.n, o->data_folder, l.in, l.h1, l.h2, l.out, l.total, total_steps, B, be->name);

    const float lr = (float)o->learning_rate;
    const double t_train = tfps_now();
    long long examples = 0, step;
    int epoch = 0;
    float loss = 0.0f;
    double loss_sum = 0.0;
    int loss_n = 0;
    for (step = 0; step < total_steps; step++) {
        if (step + 1 < total_steps && tfps_feeder_prefetch(&feed) != TFPS_OK) {
            tfps_error("step %lld: %s", step, be->err);
            goto done;
        }
        const int n = feed.n[feed.cur];
        epoch = feed.epoch[feed.cur];
        if (be->step(be, params, feed.x[feed.cur], feed.y[feed.cur], n, grads, &loss) != TFPS_OK) {
            tfps_error("step %lld: %s backend failed: %s", step, be->name, be->err);
            goto done;
        }
        tfps_feeder_advance(&feed);
        tfps_sgd_apply(params, grads, l.total, lr);
        examples += n;
        loss_sum += loss;
        loss_n++;
        if (o->log_every > 0 && (step + 1) % o->log_every == 0) {
            double el = tfps_now() - t_train, eps = examples / el;
            tfps_info("step %lld/%lld epoch %d loss %.4f examples/s %.0f eta %.1fs", step + 1, total_steps, epoch + 1,
                      loss_sum / loss_n, eps, (double)(total_steps - step - 1) * el / (double)(step + 1));
            loss_sum = 0.0;
            loss_n = 0;
        }
    }
    const double train_s = tfps_now() - t_train;
    double acc = 0.0;
    if (tfps_evaluate(be, params, &data.test, &acc, err, sizeof(err)) != TFPS_OK) {
        tfps_error("%s", err);
        goto done;
    }
    const double wall_s = tfps_now() - t0, eps = train_s > 0 ? examples / train_s : 0.0;

    char mpath[TFPS_PATH_LEN + 64];
    if (tfps_export_model(o, &l, params, (uint64_t)step, mpath, sizeof(mpath)) != TFPS_OK) goto done;
    cJSON *s = cJSON_CreateObject(), *opts = cJSON_CreateObject();
    cJSON_AddStringToObject(s, "mode", "local");
    cJSON_AddStringToObject(s, "model", mpath);
    cJSON_AddStringToObject(s, "version", TFPS_VERSION);
    cJSON_AddNumberToObject(s, "test_accuracy", acc);
    cJSON_AddNumberToObject(s, "test_examples", data.test.n);
    cJSON_AddNumberToObject(s, "train_examples", data.train.n);
    cJSON_AddNumberToObject(s, "steps", (double)step);
    cJSON_AddNumberToObject(s, "epochs", (double)examples / data.train.n);
    cJSON_AddNumberToObject(s, "examples", (double)examples);
    cJSON_AddNumberToObject(s, "examples_per_s", eps);
    cJSON_AddNumberToObject(s, "final_loss", loss);
    cJSON_AddNumberToObject(s, "train_s", train_s);
    cJSON_AddNumberToObject(s, "wall_s", wall_s);
    cJSON_AddNumberToObject(s, "parameters", (double)l.total);
    cJSON_AddStringToObject(s, "backend", be->name);
    tfps_options_to_json(o, opts);
    cJSON_AddItemToObject(s, "options", opts);
    rc = tfps_write_summary(o, s);
    cJSON_Delete(s);
    if (rc == TFPS_EXIT_OK)
        printf("tfps: steps %lld, examples/s %.0f, test accuracy %.4f, wall %.2fs\n", step, eps, acc, wall_s);
done:
    tfps_batcher_destroy(&batcher);
    tfps_mnist_free(&data);
    tfps_feeder_destroy(&feed);
    if (params) tfps_backend_host_free(be, params);
    if (grads) tfps_backend_host_free(be, grads);
    tfps_backend_free(be);
    return rc;
}
