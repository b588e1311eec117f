/* local.h -- local mode (TF_CONFIG unset): training in one process.
 *
 * The reference every distributed run is compared with: the training loop
 * (loop.h) over the whole training set, the same initial weights (layout.h)
 * and batches (data.h) as the cluster, each gradient applied at once to this
 * process's own weights with plain SGD; then an evaluation on the test set,
 * <output-dir>/model/model.tfps and summary.json (export.h). */
#ifndef TFPS_LOCAL_H
#define TFPS_LOCAL_H

#include "options.h"

/* Runs local training; returns the process exit code (0, 1, or 2 for a user
 * mistake such as a missing data folder). Logs what went wrong. */
int tfps_local_train(const tfps_options *o);

#endif
