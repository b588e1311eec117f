/* predict_main.c -- tfps-predict: classifies with a trained model.
 *
 *   tfps-predict --model PATH --data-folder DIR [--json]     the test set: accuracy,
 *                                                             loss, confusion matrix
 *   tfps-predict --model PATH [--labels FILE] IMAGE... [--json]   each image's class
 *
 * Exit 0 done, 2 a user mistake (one line on stderr naming it), 1 an
 * internal failure. predict.h finds the model and reads the images. */
#include "backend.h"
#include "cli.h"
#include "data.h"
#include "log.h"
#include "predict.h"
#include "tfps.h"

#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ME "tfps-predict"
#define MAX_FILES 4096

/* The daemons' options tfps-predict takes (options.h parses them). */
static const char *const shared_opts[] = {"device", "gpu", "threads", "log-level", NULL};

static void usage(FILE *f) {
    fprintf(f,
            "usage: " ME " --model PATH --data-folder DIR [--json] [options]\n"
            "       " ME " --model PATH [--labels FILE] IMAGE... [--json] [options]\n\n"
            "Classifies with a model trained by tfps-worker.\n\n"
            "  --model PATH         a model.tfps file; an output folder (PATH/model/model.tfps, else its\n"
            "                       checkpoints/); a checkpoint folder (its newest complete step-N) or one\n"
            "                       step-N folder (weights only, whatever the optimizer)\n"
            "  --data-folder DIR    evaluate the test set of DIR (t10k-images-idx3-ubyte[.gz] and its labels,\n"
            "                       as training reads them): accuracy, mean loss, the confusion matrix\n"
            "                       (rows: true class, columns: predicted), each class's count and recall\n"
            "  IMAGE...             classify each: an IDX images file (every image in it, shown FILE#INDEX),\n"
            "                       a PGM (P5 or P2, 8-bit) or a PNG (made 8-bit gray, alpha on black), each\n"
            "                       of the model's input size (28x28); pixels / 255 as in training. Prints\n"
            "                       the predicted class and the softmax probabilities (float64)\n"
            "  --labels FILE        an IDX labels file, one label per image given (in order): adds each\n"
            "                       image's label and the accuracy\n"
            "  --json               one JSON document on stdout instead of text\n"
            "  --help, --version\n\n"
            "Options shared with the daemons (flag, environment variable, default):\n");
    tfps_options_usage_of(f, shared_opts);
    fprintf(f, "  (" ME " logs only warnings to stderr unless --log-level or TFPS_LOG_LEVEL is given)\n");
    fprintf(f, "\nExit status: 0 done; 2 a user mistake (a missing or corrupt model, data or image that does not fit\n"
               "the model, a bad flag), named in one line on stderr; 1 an internal failure.\n");
}

static cJSON *model_json(const tfps_predict_model *m, const char *arg) {
    cJSON *j = cJSON_CreateObject(), *l = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "path", arg);
    cJSON_AddStringToObject(j, "source", m->from_checkpoint ? "checkpoint" : "model");
    cJSON_AddStringToObject(j, "file", m->path);
    cJSON_AddNumberToObject(j, "step", (double)m->step);
    cJSON_AddNumberToObject(l, "input", m->l.in);
    cJSON_AddNumberToObject(l, "first_layer_neurons", m->l.h1);
    cJSON_AddNumberToObject(l, "second_layer_neurons", m->l.h2);
    cJSON_AddNumberToObject(l, "classes", m->l.out);
    cJSON_AddItemToObject(j, "layout", l);
    cJSON_AddNumberToObject(j, "parameters", (double)m->l.total);
    return j;
}

static void model_text(const tfps_predict_model *m, const char *device) {
    printf("model %s (%s, step %llu, %d-%d-%d-%d, %zu parameters) on %s\n", m->path,
           m->from_checkpoint ? "checkpoint" : "model file", (unsigned long long)m->step, m->l.in, m->l.h1, m->l.h2,
           m->l.out, m->l.total, device);
}

/* Prints j (and frees it); TFPS_EXIT_FAIL when it cannot be printed. */
static int print_json(cJSON *j) {
    char *text = j ? cJSON_Print(j) : NULL;
    cJSON_Delete(j);
    if (!text) {
        fprintf(stderr, ME ": out of memory for the JSON output\n");
        return TFPS_EXIT_FAIL;
    }
    printf("%s\n", text);
    free(text);
    return TFPS_EXIT_OK;
}

/* --data-folder: the test set, with the confusion matrix. */
static int run_data(tfps_backend *be, const tfps_predict_model *m, const char *model_arg, const char *folder,
                    const tfps_idx_set *test, int json) {
    const int V = m->l.out;
    char err[TFPS_ERR_LEN];
    tfps_eval ev;
    memset(&ev, 0, sizeof(ev));
    long long *cm = malloc((size_t)V * V * sizeof(*cm));
    if (!(ev.pred = malloc((size_t)test->n)) || !cm) {
        free(ev.pred);
        free(cm);
        fprintf(stderr, ME ": out of memory for %d predictions\n", test->n);
        return TFPS_EXIT_FAIL;
    }
    int rc = TFPS_EXIT_FAIL;
    if (tfps_evaluate(be, m->params, test, &ev, err, sizeof(err)) != TFPS_OK) {
        fprintf(stderr, ME ": %s\n", err);
        goto done;
    }
    tfps_predict_confusion(cm, test->labels, ev.pred, ev.n, V);
    if (json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddItemToObject(j, "model", model_json(m, model_arg));
        cJSON_AddStringToObject(j, "device", be->name);
        cJSON_AddStringToObject(j, "data_folder", folder);
        cJSON_AddNumberToObject(j, "examples", (double)ev.n);
        cJSON_AddNumberToObject(j, "correct", (double)ev.correct);
        cJSON_AddNumberToObject(j, "accuracy", ev.accuracy);   // the same double as summary.json's test_accuracy
        cJSON_AddNumberToObject(j, "loss", ev.loss);
        cJSON *rows = cJSON_AddArrayToObject(j, "confusion_matrix"), *pc = cJSON_AddArrayToObject(j, "per_class");
        for (int t = 0; t < V; t++) {
            cJSON *row = cJSON_CreateArray();
            long long count = 0;
            for (int p = 0; p < V; p++) {
                cJSON_AddItemToArray(row, cJSON_CreateNumber((double)cm[t * V + p]));
                count += cm[t * V + p];
            }
            cJSON_AddItemToArray(rows, row);
            cJSON *c = cJSON_CreateObject();
            cJSON_AddNumberToObject(c, "class", t);
            cJSON_AddNumberToObject(c, "count", (double)count);
            cJSON_AddNumberToObject(c, "correct", (double)cm[t * V + t]);
            cJSON_AddNumberToObject(c, "accuracy", count ? (double)cm[t * V + t] / count : 0.0);
            cJSON_AddItemToArray(pc, c);
        }
        cJSON *pred = cJSON_AddArrayToObject(j, "predictions");   // per example, in the file's order
        for (long long i = 0; pred && i < ev.n; i++) cJSON_AddItemToArray(pred, cJSON_CreateNumber(ev.pred[i]));
        rc = print_json(j);
        goto done;
    }
    model_text(m, be->name);
    printf("data %s: %lld test images of %dx%d\n", folder, ev.n, test->rows, test->cols);
    printf("accuracy %.4f (%lld of %lld), mean loss %.6f\n\n", ev.accuracy, ev.correct, ev.n, ev.loss);
    printf("confusion matrix (rows: true class, columns: predicted class)\n");
    printf("true\\pred");
    for (int p = 0; p < V; p++) printf(" %5d", p);
    printf("   count  recall\n");
    for (int t = 0; t < V; t++) {
        long long count = 0;
        printf("%9d", t);
        for (int p = 0; p < V; p++) {
            printf(" %5lld", cm[t * V + p]);
            count += cm[t * V + p];
        }
        printf(" %7lld  %6.4f\n", count, count ? (double)cm[t * V + t] / count : 0.0);
    }
    rc = TFPS_EXIT_OK;
done:
    free(ev.pred);
    free(cm);
    return rc;
}

/* Image files: each image's class and probabilities. */
static int run_images(tfps_backend *be, const tfps_predict_model *m, const char *model_arg,
                      const tfps_predict_images *im, int json) {
    const int V = m->l.out, n = im->set.n;
    char err[TFPS_ERR_LEN];
    tfps_eval ev;
    memset(&ev, 0, sizeof(ev));
    double *p = malloc((size_t)V * sizeof(*p));
    ev.pred = malloc((size_t)n);
    ev.logits = malloc((size_t)n * V * sizeof(float));
    int rc = TFPS_EXIT_FAIL;
    if (!p || !ev.pred || !ev.logits) {
        fprintf(stderr, ME ": out of memory for %d images\n", n);
        goto done;
    }
    if (tfps_evaluate(be, m->params, &im->set, &ev, err, sizeof(err)) != TFPS_OK) {
        fprintf(stderr, ME ": %s\n", err);
        goto done;
    }
    cJSON *j = NULL, *arr = NULL;
    if (json) {
        j = cJSON_CreateObject();
        cJSON_AddItemToObject(j, "model", model_json(m, model_arg));
        cJSON_AddStringToObject(j, "device", be->name);
        arr = cJSON_AddArrayToObject(j, "images");
    } else {
        model_text(m, be->name);
    }
    for (int i = 0; i < n; i++) {
        const int k = ev.pred[i];
        tfps_predict_softmax(p, ev.logits + (size_t)i * V, V);
        if (json) {
            cJSON *e = cJSON_CreateObject();
            cJSON_AddStringToObject(e, "file", im->file[i]);
            cJSON_AddNumberToObject(e, "index", im->index[i]);
            cJSON_AddNumberToObject(e, "predicted", k);
            cJSON_AddItemToObject(e, "probabilities", cJSON_CreateDoubleArray(p, V));
            if (im->has_labels) cJSON_AddNumberToObject(e, "label", im->set.labels[i]);
            cJSON_AddItemToArray(arr, e);
            continue;
        }
        if (im->many[i]) printf("%s#%d: %d", im->file[i], im->index[i], k);
        else printf("%s: %d", im->file[i], k);
        printf(" (p %.4f)", p[k]);
        if (im->has_labels) printf(" label %d%s", im->set.labels[i], im->set.labels[i] == k ? "" : " WRONG");
        printf("  [");
        for (int c = 0; c < V; c++) printf("%s%d:%.4f", c ? " " : "", c, p[c]);
        printf("]\n");
    }
    if (json) {
        if (im->has_labels) {
            cJSON_AddNumberToObject(j, "correct", (double)ev.correct);
            cJSON_AddNumberToObject(j, "accuracy", ev.accuracy);
            cJSON_AddNumberToObject(j, "loss", ev.loss);
        }
        rc = print_json(j);
    } else {
        if (im->has_labels)
            printf("accuracy %.4f (%lld of %lld), mean loss %.6f\n", ev.accuracy, ev.correct, ev.n, ev.loss);
        rc = TFPS_EXIT_OK;
    }
done:
    free(p);
    free(ev.pred);
    free(ev.logits);
    return rc;
}

int main(int argc, char **argv) {
    const char *model = NULL, *folder = NULL, *labels = NULL, *files[MAX_FILES];
    int json = 0, nfiles = 0, usage_err = 0, rc = TFPS_EXIT_USAGE;
    char err[TFPS_ERR_LEN];
    const tfps_cli_flag own[] = {{"model", &model, NULL}, {"data-folder", &folder, NULL},
                                 {"labels", &labels, NULL}, {"json", NULL, &json}};
    tfps_options o;
    tfps_log_set_role('T', 0);
    if (tfps_cli_parse(argc, argv, own, (int)(sizeof(own) / sizeof(own[0])), shared_opts, TFPS_LOG_WARN, &o, files,
                       MAX_FILES, &nfiles, err, sizeof(err)) != TFPS_OK) {
        fprintf(stderr, ME ": %s\n", err);
        return TFPS_EXIT_USAGE;
    }
    if (o.help) {
        usage(stdout);
        return TFPS_EXIT_OK;
    }
    if (o.version) {
        printf(ME " %s\n", TFPS_VERSION);
        return TFPS_EXIT_OK;
    }
    if (!model) {
        fprintf(stderr, ME ": --model missing: expected --model PATH (a model.tfps, an output folder or a checkpoint; "
                           "see --help)\n");
        return TFPS_EXIT_USAGE;
    }
    if (!folder == !nfiles) {
        fprintf(stderr, ME ": %s: expected --data-folder DIR or image files (see --help)\n",
                folder ? "--data-folder and image files both given" : "nothing to classify");
        return TFPS_EXIT_USAGE;
    }
    if (labels && folder) {
        fprintf(stderr, ME ": --labels goes with image files: the data folder has its own labels\n");
        return TFPS_EXIT_USAGE;
    }
    tfps_predict_model m;
    tfps_predict_images im;
    tfps_mnist data;
    tfps_backend *be = NULL;
    memset(&im, 0, sizeof(im));
    memset(&data, 0, sizeof(data));
    if (tfps_predict_model_load(&m, model, err, sizeof(err), &usage_err) != TFPS_OK) {
        fprintf(stderr, ME ": %s\n", err);
        return usage_err ? TFPS_EXIT_USAGE : TFPS_EXIT_FAIL;
    }
    const tfps_idx_set *set;
    if (folder) {
        if (tfps_mnist_load(&data, folder, err, sizeof(err)) != TFPS_OK) {
            fprintf(stderr, ME ": --data-folder: %s\n", err);
            goto done;
        }
        set = &data.test;
        if (set->rows * set->cols != m.l.in) {
            fprintf(stderr, ME ": --data-folder %s: images of %dx%d = %d pixels: the model %s takes %d inputs\n",
                    folder, set->rows, set->cols, set->rows * set->cols, m.path, m.l.in);
            goto done;
        }
        for (int i = 0; i < set->n; i++)
            if (set->labels[i] >= m.l.out) {
                fprintf(stderr, ME ": --data-folder %s: test label %d of example %d: the model %s has %d classes\n",
                        folder, set->labels[i], i, m.path, m.l.out);
                goto done;
            }
    } else {
        if (tfps_predict_images_read(&im, files, nfiles, labels, m.l.in, m.l.out, err, sizeof(err), &usage_err) !=
            TFPS_OK) {
            fprintf(stderr, ME ": %s\n", err);
            rc = usage_err ? TFPS_EXIT_USAGE : TFPS_EXIT_FAIL;
            goto done;
        }
        set = &im.set;
    }
    // chunks of TFPS_EVAL_CHUNK, as training's final evaluation runs: the same accuracy to the last bit
    const int chunk = set->n < 1 ? 1 : set->n < TFPS_EVAL_CHUNK ? set->n : TFPS_EVAL_CHUNK;
    if (!(be = tfps_backend_open(&o, &m.l, chunk, &usage_err, err, sizeof(err)))) {
        fprintf(stderr, ME ": %s\n", err);
        rc = usage_err ? TFPS_EXIT_USAGE : TFPS_EXIT_FAIL;
        goto done;
    }
    rc = folder ? run_data(be, &m, model, folder, set, json) : run_images(be, &m, model, &im, json);
done:
    tfps_backend_free(be);
    tfps_mnist_free(&data);
    tfps_predict_images_free(&im);
    tfps_predict_model_free(&m);
    return rc;
}
