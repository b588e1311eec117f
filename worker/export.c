/* export.c -- see export.h. */
#define _POSIX_C_SOURCE 200809L
#include "export.h"
#include "log.h"
#include "model.h"
#include "onnx.h"
#include "tfps.h"

#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* dir exists (made if missing) and takes a new file. */
static int probe_dir(const char *dir, const char *flag) {
    char err[TFPS_ERR_LEN], path[TFPS_PATH_LEN + 64];
    if (tfps_mkdirs(dir, err, sizeof(err)) != TFPS_OK) {
        tfps_error("%s %s: cannot be made: %s", flag, dir, err);
        return TFPS_ERR;
    }
    snprintf(path, sizeof(path), "%s/.tfps-probe-%ld", dir, (long)getpid());
    if (tfps_write_file_atomic(path, "", 0, err, sizeof(err)) != TFPS_OK) {
        tfps_error("%s %s: not writable: %s", flag, dir, err);
        return TFPS_ERR;
    }
    unlink(path);
    return TFPS_OK;
}

int tfps_check_output_dir(const tfps_options *o, int checkpoints) {
    char ckpt[TFPS_PATH_LEN + 32];
    if (probe_dir(o->output_dir, "--output-dir") != TFPS_OK) return TFPS_ERR;
    if (!checkpoints) return TFPS_OK;
    if (tfps_options_checkpoint_dir(o, ckpt, sizeof(ckpt)) != TFPS_OK) {
        tfps_error("--checkpoint-dir: the path is too long");
        return TFPS_ERR;
    }
    return probe_dir(ckpt, o->checkpoint_dir[0] ? "--checkpoint-dir" : "--output-dir's checkpoints/");
}

int tfps_write_summary(const tfps_options *o, cJSON *summary) {
    char err[TFPS_ERR_LEN], path[TFPS_PATH_LEN + 64];
    if (tfps_mkdirs(o->output_dir, err, sizeof(err)) != TFPS_OK) {
        tfps_error("--output-dir: %s", err);
        return TFPS_EXIT_USAGE;
    }
    cJSON *opts = cJSON_CreateObject();
    if (!opts) return TFPS_EXIT_FAIL;
    tfps_options_to_json(o, opts);
    cJSON_AddItemToObject(summary, "options", opts);
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
    if (rc != TFPS_OK) {
        tfps_error("model: %s", err);
        return rc;
    }
    tfps_info("wrote %s", path);
    // the same weights as ONNX, beside it (path keeps model.tfps's name for the caller)
    char opath[TFPS_PATH_LEN + 64];
    snprintf(opath, sizeof(opath), "%s/model/%s", o->output_dir, TFPS_ONNX_FILE);
    if (!tfps_onnx_fits(l)) {
        tfps_warn("%s not written: %zu parameters exceed the 2 GiB an ONNX file holds without external data "
                  "(model.tfps has them)", opath, l->total);
        return TFPS_OK;
    }
    if (tfps_onnx_write(opath, l, params, TFPS_VERSION, err, sizeof(err)) != TFPS_OK) {
        tfps_error("model: %s", err);
        return TFPS_ERR;
    }
    tfps_info("wrote %s", opath);
    return TFPS_OK;
}
