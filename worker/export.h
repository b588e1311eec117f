/* export.h -- what a finished run leaves in --output-dir: the model files
 * (<output-dir>/model/model.tfps, model.h, and model.onnx, onnx.h) and
 * summary.json.
 *
 * Local mode and the chief both end here; neither file is written half: the
 * writes go through a temp file and a rename. */
#ifndef TFPS_EXPORT_H
#define TFPS_EXPORT_H

#include "layout.h"
#include "options.h"

#include <stddef.h>
#include <stdint.h>

/* Writes <output-dir>/model/model.tfps (model.h) with params [l->total] as
 * of step, then the same weights as <output-dir>/model/model.onnx (onnx.h;
 * skipped with a warning only for a model over ONNX's 2 GiB); path gets
 * model.tfps's name, written or not. Returns TFPS_OK, or TFPS_ERR after
 * logging why. */
int tfps_export_model(const tfps_options *o, const tfps_layout *l, const float *params, uint64_t step, char *path,
                      size_t pathlen);

/* --output-dir (and, with checkpoints, the checkpoint folder) can be made
 * and written: a probe file is created and removed. TFPS_ERR after logging
 * one line naming the folder and why. */
int tfps_check_output_dir(const tfps_options *o, int checkpoints);

/* Appends the options o to summary (a cJSON object) as its last member,
 * "options", then writes it to <output-dir>/summary.json atomically. Returns
 * an exit code: TFPS_EXIT_OK, or TFPS_EXIT_USAGE / TFPS_EXIT_FAIL after
 * logging why. */
struct cJSON;
int tfps_write_summary(const tfps_options *o, struct cJSON *summary);

#endif
