/* predict.c -- see predict.h. */
#define _POSIX_C_SOURCE 200809L
#include "predict.h"
#include "ckpt.h"
#include "log.h"
#include "model.h"
#include "tfps.h"

#include <errno.h>
#include <math.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define IMAGE_FILE_MAX ((size_t)64 << 20)   /* a PGM or PNG larger than this is not one 28x28 image */

#define USAGE(...) (*usage = 1, tfps_seterr(err, errlen, __VA_ARGS__))

/* ---- the model ---- */

static int is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static int is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int load_file(tfps_predict_model *m, const char *file, char *err, size_t errlen, int *usage) {
    if (tfps_model_read(file, &m->l, &m->params, &m->step, err, errlen) != TFPS_OK) {
        *usage = !strstr(err, "out of memory");   // a missing, short or corrupt file is the user's to fix
        return TFPS_ERR;
    }
    snprintf(m->path, sizeof(m->path), "%s", file);
    return TFPS_OK;
}

/* dir: a checkpoint folder or one step-N folder. The layout comes from the
 * MANIFEST, so any model's checkpoint loads without its training flags. */
static int load_checkpoint(tfps_predict_model *m, const char *dir, char *err, size_t errlen, int *usage) {
    char newest[TFPS_PATH_LEN + 64], why[TFPS_ERR_LEN];
    int r = tfps_ckpt_peek(dir, &m->l, &m->step, newest, sizeof(newest), err, errlen);
    if (r == TFPS_CKPT_NONE) return USAGE("--model %s: no checkpoint: %.300s", dir, err);
    if (r != TFPS_OK) {
        *usage = !strstr(err, "out of memory");
        return TFPS_ERR;
    }
    if (!(m->params = malloc(m->l.total * sizeof(float))))
        return tfps_seterr(err, errlen, "out of memory for %zu parameters", m->l.total);
    const tfps_ckpt_range all = {0, m->l.total, 0};
    tfps_ckpt_info info;
    // restore logs every checkpoint it refuses; we say it once, below, with the reason
    const int level = tfps_log_min_level;
    tfps_log_min_level = TFPS_LOG_ERROR + 1;
    r = tfps_ckpt_restore(dir, &m->l, NULL, -1, 0, &all, 1, m->params, NULL, &info, why, sizeof(why));
    tfps_log_min_level = level;
    if (r == TFPS_ERR) {
        tfps_seterr(err, errlen, "--model %s: %s", dir, why);
        return TFPS_ERR;
    }
    if (r == TFPS_CKPT_NONE || strcmp(info.path, newest) != 0) {
        if (tfps_ckpt_verify(newest, &m->l, why, sizeof(why)) == TFPS_OK) snprintf(why, sizeof(why), "refused");
        if (r == TFPS_CKPT_NONE)
            return USAGE("--model %s: no complete checkpoint: %s: %s", dir, newest, why);
        tfps_warn("checkpoint %s refused (%s): using the older %s", newest, why, info.path);
    }
    m->step = info.step;
    m->from_checkpoint = 1;
    snprintf(m->path, sizeof(m->path), "%s", info.path);
    return TFPS_OK;
}

int tfps_predict_model_load(tfps_predict_model *m, const char *path, char *err, size_t errlen, int *usage) {
    char p[TFPS_PATH_LEN + 64];
    int rc;
    memset(m, 0, sizeof(*m));
    *usage = 0;
    if (strlen(path) >= TFPS_PATH_LEN) return USAGE("--model: path of %zu bytes: expected at most %d", strlen(path),
                                                    TFPS_PATH_LEN - 1);
    struct stat st;
    if (stat(path, &st) != 0)
        return USAGE("--model %s: %s: expected a model.tfps file, an output folder or a checkpoint folder", path,
                     strerror(errno));
    if (S_ISREG(st.st_mode)) {
        rc = load_file(m, path, err, errlen, usage);
    } else if (!S_ISDIR(st.st_mode)) {
        return USAGE("--model %s: not a file or a folder: expected a model.tfps file, an output folder or a "
                     "checkpoint folder", path);
    } else if (snprintf(p, sizeof(p), "%s/MANIFEST", path), is_file(p)) {   // one step-N folder
        rc = load_checkpoint(m, path, err, errlen, usage);
    } else if (snprintf(p, sizeof(p), "%s/model/" TFPS_MODEL_FILE, path), is_file(p)) {   // an output folder
        rc = load_file(m, p, err, errlen, usage);
    } else if (snprintf(p, sizeof(p), "%s/" TFPS_MODEL_FILE, path), is_file(p)) {   // its model/ folder
        rc = load_file(m, p, err, errlen, usage);
    } else {
        // a checkpoint folder, or an output folder whose run stopped before the export: its checkpoints
        tfps_layout l;
        uint64_t step;
        char sd[TFPS_PATH_LEN + 64], why[TFPS_ERR_LEN];
        const int peek = tfps_ckpt_peek(path, &l, &step, sd, sizeof(sd), why, sizeof(why));
        snprintf(p, sizeof(p), "%s/checkpoints", path);
        if (peek == TFPS_CKPT_NONE && is_dir(p))
            rc = load_checkpoint(m, p, err, errlen, usage);
        else if (peek == TFPS_CKPT_NONE && strstr(why, TFPS_CKPT_NO_STEPS))
            rc = USAGE("--model %s: no %s, no model/%s, no step-N/MANIFEST, no checkpoints/: expected a model.tfps "
                       "file, an output folder or a checkpoint folder", path, TFPS_MODEL_FILE, TFPS_MODEL_FILE);
        else
            rc = load_checkpoint(m, path, err, errlen, usage);
    }
    if (rc != TFPS_OK) tfps_predict_model_free(m);
    return rc;
}

void tfps_predict_model_free(tfps_predict_model *m) {
    free(m->params);
    memset(m, 0, sizeof(*m));
}

/* ---- images ---- */

/* The whole file into a malloc'd buffer (at most IMAGE_FILE_MAX bytes). */
static int read_all(const char *path, uint8_t **out, size_t *len, char *err, size_t errlen, int *usage) {
    FILE *f = fopen(path, "rb");
    if (!f) return USAGE("%s: %s: expected a readable image file", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    uint8_t *b = malloc(cap);
    while (b) {
        size_t got = fread(b + n, 1, cap - n, f);
        n += got;
        if (n < cap) break;
        if (cap >= IMAGE_FILE_MAX) {
            free(b);
            fclose(f);
            return USAGE("%s: larger than %zu MiB: expected one image", path, IMAGE_FILE_MAX >> 20);
        }
        uint8_t *nb = realloc(b, cap * 2);
        if (!nb) free(b);
        b = nb;
        cap *= 2;
    }
    if (!b) {
        fclose(f);
        return tfps_seterr(err, errlen, "%s: out of memory", path);
    }
    const int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(b);
        return USAGE("%s: read error: expected a readable image file", path);
    }
    *out = b;
    *len = n;
    return TFPS_OK;
}

/* The expected shape, for messages: "28x28" or "784 pixels". */
static void expected_shape(int in, int side, char *buf, size_t n) {
    if (side) snprintf(buf, n, "%dx%d (the model takes %d inputs)", side, side, in);
    else snprintf(buf, n, "an image of %d pixels (the model's inputs)", in);
}

static int shape_ok(int w, int h, int in, int side) {
    return side ? w == side && h == side : (long long)w * h == in;
}

/* PGM header: whitespace and # comments between tokens. */
static int pgm_token(const uint8_t *b, size_t len, size_t *at, long *v) {
    size_t i = *at;
    for (;;) {
        while (i < len && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r' || b[i] == '\v' ||
                           b[i] == '\f'))
            i++;
        if (i < len && b[i] == '#') {
            while (i < len && b[i] != '\n') i++;
            continue;
        }
        break;
    }
    if (i >= len || b[i] < '0' || b[i] > '9') return 0;
    long x = 0;
    for (; i < len && b[i] >= '0' && b[i] <= '9'; i++) {
        if (x > 100000000) return 0;
        x = x * 10 + (b[i] - '0');
    }
    *v = x;
    *at = i;
    return 1;
}

/* A PGM (P5 binary or P2 text) of in pixels into px. */
static int read_pgm(const char *path, const uint8_t *b, size_t len, int in, int side, uint8_t *px, char *err,
                    size_t errlen, int *usage) {
    const int ascii = b[1] == '2';
    size_t at = 2;
    long w, h, maxval;
    char want[96];
    expected_shape(in, side, want, sizeof(want));
    if (!pgm_token(b, len, &at, &w) || !pgm_token(b, len, &at, &h) || !pgm_token(b, len, &at, &maxval))
        return USAGE("%s: PGM header malformed: expected \"P5 <width> <height> <maxval>\"", path);
    if (maxval < 1 || maxval > 255)
        return USAGE("%s: PGM maxval %ld: expected 8-bit gray (maxval 1..255)", path, maxval);
    if (!shape_ok((int)w, (int)h, in, side)) return USAGE("%s: %ldx%ld pixels: expected %s", path, w, h, want);
    const size_t n = (size_t)w * (size_t)h;
    if (!ascii) {
        // exactly one whitespace byte ends the header
        if (at >= len || !(b[at] == ' ' || b[at] == '\t' || b[at] == '\n' || b[at] == '\r'))
            return USAGE("%s: PGM header malformed: no whitespace after maxval", path);
        at++;
        if (len - at < n)
            return USAGE("%s: PGM of %ldx%ld holds %zu pixel bytes: expected %zu (truncated?)", path, w, h, len - at, n);
    }
    for (size_t i = 0; i < n; i++) {
        long v;
        if (ascii) {
            if (!pgm_token(b, len, &at, &v))
                return USAGE("%s: P2 PGM: pixel %zu of %zu missing or not a number (truncated?)", path, i + 1, n);
        } else {
            v = b[at + i];
        }
        if (v > maxval) return USAGE("%s: PGM pixel %zu is %ld, above maxval %ld", path, i, v, maxval);
        // maxval 255 keeps the byte as it is, as training reads it; otherwise rescaled to 0..255
        px[i] = (uint8_t)(maxval == 255 ? v : (v * 255 + maxval / 2) / maxval);
    }
    return TFPS_OK;
}

/* A PNG of in pixels into px, made 8-bit gray by libpng's simplified API. */
static int read_png(const char *path, const uint8_t *b, size_t len, int in, int side, uint8_t *px, char *err,
                    size_t errlen, int *usage) {
    png_image img;
    char want[96];
    expected_shape(in, side, want, sizeof(want));
    memset(&img, 0, sizeof(img));
    img.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_memory(&img, b, len))
        return USAGE("%s: PNG unreadable: %s", path, img.message);
    if (!shape_ok((int)img.width, (int)img.height, in, side)) {
        const unsigned w = img.width, h = img.height;
        png_image_free(&img);
        return USAGE("%s: %ux%u pixels: expected %s", path, w, h, want);
    }
    img.format = PNG_FORMAT_GRAY;   // colour to gray; alpha composited on the background below
    const png_color black = {0, 0, 0};   // MNIST's background
    if (!png_image_finish_read(&img, &black, px, 0, NULL)) {
        png_image_free(&img);
        return USAGE("%s: PNG unreadable: %s", path, img.message);
    }
    return TFPS_OK;
}

/* Appends n images of d pixels (and their origin) to im. */
static int append(tfps_predict_images *im, const char *file, const uint8_t *px, int n, int d, int many, char *err,
                  size_t errlen) {
    const int total = im->set.n + n;
    uint8_t *images = realloc(im->set.images, (size_t)total * d);
    if (images) im->set.images = images;
    const char **f = images ? realloc(im->file, (size_t)total * sizeof(*f)) : NULL;
    if (f) im->file = f;
    int *index = f ? realloc(im->index, (size_t)total * sizeof(*index)) : NULL;
    if (index) im->index = index;
    uint8_t *m = index ? realloc(im->many, (size_t)total) : NULL;
    if (!m) return tfps_seterr(err, errlen, "out of memory for %d images", total);
    im->many = m;
    memcpy(im->set.images + (size_t)im->set.n * d, px, (size_t)n * d);
    for (int i = 0; i < n; i++) {
        im->file[im->set.n + i] = file;
        im->index[im->set.n + i] = i;
        im->many[im->set.n + i] = (uint8_t)many;
    }
    im->set.n = total;
    return TFPS_OK;
}

/* The first bytes of path, to tell the formats apart. */
static int sniff(const char *path, uint8_t *b, size_t n, size_t *got, char *err, size_t errlen, int *usage) {
    FILE *f = fopen(path, "rb");
    if (!f) return USAGE("%s: %s: expected a readable image file", path, strerror(errno));
    *got = fread(b, 1, n, f);
    const int bad = ferror(f);
    fclose(f);
    if (bad) return USAGE("%s: read error: expected a readable image file", path);
    return TFPS_OK;
}

static int read_one(tfps_predict_images *im, const char *path, int in, int side, char *err, size_t errlen,
                    int *usage) {
    uint8_t h[8], *b = NULL, *px = NULL;
    size_t len = 0;
    char want[96];
    expected_shape(in, side, want, sizeof(want));
    if (sniff(path, h, sizeof(h), &len, err, errlen, usage) != TFPS_OK) return TFPS_ERR;
    int rc = TFPS_ERR;
    const int gz = len >= 2 && h[0] == 0x1f && h[1] == 0x8b;
    const int idx3 = len >= 4 && h[0] == 0 && h[1] == 0 && h[2] == 8 && h[3] == 3;
    const int idx1 = len >= 4 && h[0] == 0 && h[1] == 0 && h[2] == 8 && h[3] == 1;
    const int pgm = len >= 2 && h[0] == 'P' && (h[1] == '5' || h[1] == '2');
    const int png = len >= 8 && png_sig_cmp(h, 0, 8) == 0;
    if (gz || idx3) {   // idx.c reads gzip and raw alike and checks everything
        int n, rows, cols;
        if (tfps_idx_read_images(path, &px, &n, &rows, &cols, err, errlen) != TFPS_OK) {
            *usage = !strstr(err, "out of memory");
            return TFPS_ERR;
        }
        if (!shape_ok(cols, rows, in, side))
            USAGE("%s: IDX images of %dx%d pixels: expected %s", path, rows, cols, want);
        else
            rc = append(im, path, px, n, in, 1, err, errlen);
    } else if (idx1) {
        USAGE("%s: an IDX labels file: expected images (labels go with --labels FILE)", path);
    } else if (pgm || png) {
        if (read_all(path, &b, &len, err, errlen, usage) != TFPS_OK) return TFPS_ERR;
        if (!(px = malloc((size_t)in))) tfps_seterr(err, errlen, "out of memory");
        else if ((pgm ? read_pgm : read_png)(path, b, len, in, side, px, err, errlen, usage) == TFPS_OK)
            rc = append(im, path, px, 1, in, 0, err, errlen);
    } else if (len >= 2 && h[0] == 'P' && h[1] >= '1' && h[1] <= '7') {
        USAGE("%s: a P%c Netpbm file: expected a gray PGM (P5 or P2), a PNG or IDX images", path, h[1]);
    } else {
        USAGE("%s: not an image: expected IDX images (idx3, raw or .gz), a PGM (P5 or P2) or a PNG", path);
    }
    free(b);
    free(px);
    return rc;
}

int tfps_predict_images_read(tfps_predict_images *im, const char *const *files, int nfiles, const char *labels,
                             int in, int classes, char *err, size_t errlen, int *usage) {
    memset(im, 0, sizeof(*im));
    *usage = 0;
    int side = (int)lround(sqrt((double)in));
    if (side * side != in) side = 0;
    im->set.rows = side ? side : 1;
    im->set.cols = side ? side : in;
    for (int i = 0; i < nfiles; i++)
        if (read_one(im, files[i], in, side, err, errlen, usage) != TFPS_OK) goto fail;
    if (!im->set.n) {
        USAGE("no images in %s: expected at least one", nfiles == 1 ? files[0] : "the files given");
        goto fail;
    }
    if (labels) {
        uint8_t *y;
        int n;
        if (tfps_idx_read_labels(labels, &y, &n, err, errlen) != TFPS_OK) {
            *usage = !strstr(err, "out of memory");
            goto fail;
        }
        im->set.labels = y;
        if (n != im->set.n) {
            USAGE("--labels %s: %d labels for %d images: expected one label per image, in order", labels, n,
                  im->set.n);
            goto fail;
        }
        for (int k = 0; k < n; k++)
            if (y[k] >= classes) {
                USAGE("--labels %s: label %d of example %d: expected below the model's %d classes", labels, y[k], k,
                      classes);
                goto fail;
            }
        im->has_labels = 1;
    } else if (!(im->set.labels = calloc((size_t)im->set.n, 1))) {
        tfps_seterr(err, errlen, "out of memory");
        goto fail;
    }
    return TFPS_OK;
fail:
    tfps_predict_images_free(im);
    return TFPS_ERR;
}

void tfps_predict_images_free(tfps_predict_images *im) {
    free(im->set.images);
    free(im->set.labels);
    free(im->file);
    free(im->index);
    free(im->many);
    memset(im, 0, sizeof(*im));
}

/* ---- the report's arithmetic ---- */

void tfps_predict_softmax(double *p, const float *z, int V) {
    double m = z[0], s = 0.0;
    for (int j = 1; j < V; j++) m = z[j] > m ? z[j] : m;
    for (int j = 0; j < V; j++) s += p[j] = exp((double)z[j] - m);
    for (int j = 0; j < V; j++) p[j] /= s;
}

void tfps_predict_confusion(long long *cm, const uint8_t *labels, const uint8_t *pred, long long n, int V) {
    memset(cm, 0, (size_t)V * V * sizeof(*cm));
    for (long long i = 0; i < n; i++) cm[(size_t)labels[i] * V + pred[i]]++;
}
