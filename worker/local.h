/* local.h -- local mode (TF_CONFIG unset): training in one process.
 *
 * The reference every distributed run is compared with: the training loop
 * (loop.h) over the whole training set, the same initial weights (layout.h)
 * and batches (data.h) as the cluster, each gradient applied at once to this
 * process's own weights with the optimizer; then an evaluation on the test
 * set, <output-dir>/model/model.tfps and summary.json (export.h).
 *
 * Checkpoints: the ones one ps owning everything would write (ckpt.h), on
 * the chief's schedule (--checkpoint-every-secs/-steps, and a final one). A
 * run starts from the newest complete checkpoint under --checkpoint-dir, as
 * TF's MonitoredTrainingSession does, also one a cluster wrote. */
#ifndef TFPS_LOCAL_H
#define TFPS_LOCAL_H

#include "options.h"

/* Runs local training; returns the process exit code (0, 1, or 2 for a user
 * mistake such as a missing data folder). Logs what went wrong. */
int tfps_local_train(const tfps_options *o);

/* --export-checkpoint PATH: the weights of a checkpoint (a step-N folder,
 * or a checkpoint folder: its newest complete one), written by any number of
 * ps, into <output-dir>/model/model.tfps; prints their test accuracy. */
int tfps_local_export_checkpoint(const tfps_options *o);

#endif
