/* predict.h -- what tfps-predict does, as functions: find and load a
 * trained model wherever a run left it, read images to classify, and the
 * arithmetic of its report (softmax probabilities, confusion matrix).
 *
 *   --model PATH     a model.tfps file (model.h)
 *                    an output folder: PATH/model/model.tfps, else PATH/checkpoints
 *                    a model/ folder: PATH/model.tfps
 *                    a checkpoint folder (its newest complete step-N) or one
 *                    step-N folder (ckpt.h; weights only, any optimizer)
 *   image files      IDX images (idx3, raw or .gz: every image in it),
 *                    PGM (P5 or P2, maxval up to 255), PNG (any colour type,
 *                    made 8-bit gray by libpng, alpha composited on black)
 *
 * Pixels become floats as in training (tfps_gather: byte / 255), so an
 * image written from a test example classifies exactly as that example.
 * Every function reports a mistake the user can fix (a missing or corrupt
 * model, an image of the wrong size, an unreadable file) with *usage = 1 and
 * one line in err naming the file, what was found and what was expected;
 * *usage = 0 means an internal failure (out of memory). */
#ifndef TFPS_PREDICT_H
#define TFPS_PREDICT_H

#include "idx.h"
#include "layout.h"
#include "options.h"

#include <stddef.h>
#include <stdint.h>

typedef struct {
    tfps_layout l;
    float *params;               /* [l.total], malloc'd */
    uint64_t step;               /* the model file's global step, or the checkpoint's */
    int from_checkpoint;         /* 1: read from a checkpoint (path is its step-N folder) */
    char path[TFPS_PATH_LEN + 128];  /* the file or step-N folder the weights came from */
} tfps_predict_model;

/* Loads the model at path (see the table above). TFPS_OK with *m filled
 * (tfps_predict_model_free), or TFPS_ERR with err, *usage and *m zeroed.
 * A newer checkpoint refused in favour of an older one is logged (warn). */
int tfps_predict_model_load(tfps_predict_model *m, const char *path, char *err, size_t errlen, int *usage);
void tfps_predict_model_free(tfps_predict_model *m);   /* safe on a zeroed struct */

/* The images of several files, as one IDX set the evaluator takes. */
typedef struct {
    tfps_idx_set set;            /* set.n images of rows x cols; labels from --labels, else all 0 */
    int has_labels;
    const char **file;           /* [n] the file each image came from (the caller's strings) */
    int *index;                  /* [n] its index in that file */
    uint8_t *many;               /* [n] 1: its file holds several images (IDX): shown as file#index */
} tfps_predict_images;

/* Reads files[0..nfiles) in order; every image must have `in` pixels: a
 * square side x side when `in` is a square (784: 28x28), else any shape of
 * `in` pixels. labels (NULL: none) is an IDX labels file with one label per
 * image read, in order, each below classes. TFPS_OK, or TFPS_ERR with err,
 * *usage and *im zeroed. */
int tfps_predict_images_read(tfps_predict_images *im, const char *const *files, int nfiles, const char *labels,
                             int in, int classes, char *err, size_t errlen, int *usage);
void tfps_predict_images_free(tfps_predict_images *im);   /* safe on a zeroed struct */

/* p[0..V) = softmax(z[0..V)) in float64 (max subtracted first). */
void tfps_predict_softmax(double *p, const float *z, int V);
/* cm [V][V] (rows: true class, columns: predicted), zeroed first, from n
 * labels and predictions (each < V). */
void tfps_predict_confusion(long long *cm, const uint8_t *labels, const uint8_t *pred, long long n, int V);

#endif
