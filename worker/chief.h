/* chief.h -- the chief's duties after its own training (cluster mode).
 *
 * The chief (the chief/master task, or worker 0 when there is none) waits
 * until every training replica has reported done, pulls the final weights,
 * evaluates them on the test set, writes <output-dir>/model/model.tfps and
 * summary.json (export.h), prints the summary line, and tells every ps to
 * shut down (TF's ps never stopped on their own). */
#ifndef TFPS_CHIEF_H
#define TFPS_CHIEF_H

#include "cluster.h"

/* x: registered (tfps_cluster_ctx_open) and trained (tfps_cluster_ctx_train)
 * on this task. Waits for every replica to be done or dead, takes the final
 * checkpoint, evaluates, exports; then, whether that worked or not, tells
 * every ps to stop (except after a signal: a restarted chief resumes with
 * them). Returns the exit code, after logging why when not TFPS_EXIT_OK. */
int tfps_chief_finish(tfps_cluster_ctx *x);
/* Best effort, bounded: Shutdown to every ps (failed: they exit 1, and the
 * reason they log is "<reason>: <the chief's last error line>", at most
 * TFPS_WIRE_SHUTDOWN_REASON_MAX bytes). */
void tfps_chief_stop_ps(tfps_cluster_ctx *x, const char *reason, int failed);

#endif
