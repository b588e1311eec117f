/* main.c -- tfps-ps: the parameter server daemon.
 *
 * Resolves TF_CONFIG, builds the shard plan, initialises its ranges, and
 * serves tfps.v1.ParameterServer (and grpc.health.v1.Health) on its own
 * TF_CONFIG address, host and port, and nowhere else: not on every interface
 * as TF's servers do, so a ps whose address is 127.0.0.1 or a private
 * network's is not reachable from the others. A name binds every address it
 * resolves to (a Kubernetes headless service resolves to the pod's own);
 * --bind HOST:PORT overrides it, e.g. 0.0.0.0:2222 in a container whose
 * address is a service name no interface of its own has. With --tls-cert,
 * --tls-key and --tls-ca it serves mTLS only (config/daemon.c checks the
 * files and hands them to rpc.c); else plaintext, with a warning when an
 * address is not loopback. At start it
 * restores the newest complete checkpoint under --checkpoint-dir. It exits 0
 * on the chief's Shutdown or on SIGTERM/SIGINT, after draining calls in
 * flight (a checkpoint being written is finished first); 1 on --idle-timeout
 * or when the chief's Shutdown says the job failed. */
#define _POSIX_C_SOURCE 200809L
#include "daemon.h"
#include "log.h"
#include "ps.h"
#include "rpc.h"
#include "service.h"
#include "tfps.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>

typedef struct {
    tfps_ps *ps;
    tfps_rpc_server *server;
} ps_daemon;

/* SIGTERM/SIGINT: a flag the tick reads (every 100 ms), never a pointer to the server, which main frees
 * while the signal may be running on any of the process's threads */
static volatile sig_atomic_t stop_signal;

static void on_signal(int sig) {
    (void)sig;
    stop_signal = 1;
}

static void handle(void *ctx, tfps_rpc_call *call, int method, const uint8_t *req, size_t len) {
    ps_daemon *d = ctx;
    tfps_ps_serve(d->ps, d->server, call, method, req, len);
}

/* Outside the server's handler lock, on the thread that received the call. */
static void *prepare(void *ctx, int method, const uint8_t *req, size_t len) {
    ps_daemon *d = ctx;
    return tfps_ps_prepare(d->ps, method, req, len);
}

static void release(void *ctx, void *prepared) {
    (void)ctx;
    tfps_ps_prepared_free(prepared);
}

static void tick(void *ctx) {
    ps_daemon *d = ctx;
    if (tfps_ps_tick(d->ps) || stop_signal) tfps_rpc_server_request_stop(d->server);
}

int main(int argc, char **argv) {
    tfps_options o;
    tfps_cluster c;
    int rc = tfps_daemon_setup(TFPS_DAEMON_PS, argc, argv, &o, &c);
    if (rc >= 0) {
        tfps_cluster_destroy(&c);
        return rc;
    }
    char err[TFPS_ERR_LEN];
    tfps_layout l;
    tfps_shard_plan plan = {0};
    ps_daemon d = {0};
    rc = TFPS_EXIT_FAIL;
    if (tfps_layout_init(&l, TFPS_INPUT_WIDTH, o.h1, o.h2, TFPS_CLASSES, err, sizeof(err)) != TFPS_OK ||
        tfps_shard_plan_build(&plan, &l, c.num_ps, (tfps_shard_strategy)o.shard_strategy, err, sizeof(err)) !=
            TFPS_OK) {
        fprintf(stderr, "tfps-ps: %s\n", err);
        rc = TFPS_EXIT_USAGE;
        goto done;
    }
    d.ps = tfps_ps_new(&l, &plan, c.task_index, &o, c.num_workers, NULL, NULL, err, sizeof(err));
    if (!d.ps) {
        fprintf(stderr, "tfps-ps: %s\n", err);
        rc = TFPS_EXIT_USAGE;   // bad options (e.g. --replicas-to-aggregate) or no memory at start
        goto done;
    }
    char ckpt_dir[TFPS_PATH_LEN + 32];
    if (tfps_options_checkpoint_dir(&o, ckpt_dir, sizeof(ckpt_dir)) != TFPS_OK ||
        tfps_mkdirs(ckpt_dir, err, sizeof(err)) != TFPS_OK) {
        fprintf(stderr, "tfps-ps: --checkpoint-dir %s: cannot be made: %s\n", ckpt_dir, err);
        rc = TFPS_EXIT_USAGE;
        goto done;
    }
    if (tfps_ps_restore(d.ps, err, sizeof(err)) != TFPS_OK) {
        fprintf(stderr, "tfps-ps: restore: %s\n", err);
        goto done;
    }
    tfps_rpc_init();
    // README "Limits": a client cannot hold more than these (20 s to speak HTTP/2; 5 min idle, then GOAWAY)
    tfps_rpc_set_server_limits(&(tfps_rpc_limits){.max_streams = o.max_streams,
                                                  .memory_limit = (size_t)o.memory_limit_mb << 20,
                                                  .handshake_timeout_ms = 20000, .idle_timeout_ms = 300000});
    const char *addr = c.jobs[TFPS_JOB_PS].addr[c.task_index];
    const char *bind = o.bind[0] ? o.bind : addr;   // checked by tfps_daemon_setup
    // the largest message is a pull of the whole model (plus framing)
    const size_t max_msg = tfps_max_message_bytes(&l);
    int port = 0;
    d.server = tfps_rpc_server_new(bind, tfps_method_paths, TFPS_M_COUNT, max_msg, handle, tick, 100, &d, &port, err,
                                   sizeof(err));
    if (!d.server) {
        if (o.bind[0])
            fprintf(stderr, "tfps-ps: cannot serve --bind %s: %s\n", bind, err);
        else
            fprintf(stderr, "tfps-ps: cannot serve its TF_CONFIG address cluster.ps[%d] %s: %s; no interface of this "
                            "host has that address? --bind HOST:PORT listens elsewhere (e.g. 0.0.0.0:PORT)\n",
                    c.task_index, addr, err);
        rc = TFPS_EXIT_USAGE;
        tfps_rpc_shutdown();
        goto done;
    }
    tfps_rpc_server_set_threads(d.server, tfps_ps_threads(d.ps));
    tfps_rpc_server_set_prepare(d.server, prepare, release);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    tfps_optim opt;
    char opt_desc[160];
    tfps_options_optim(&o, &opt);
    tfps_optim_describe(&opt, opt_desc, sizeof(opt_desc));
    tfps_info("ps %d of %d serving %s (%s, port %d) over %s: %zu parameters of %zu (%s plan %016llx), %d workers "
              "expected; %s, %s; %d thread%s (%s), updates split over %d", c.task_index, c.num_ps, bind,
              o.bind[0] ? "--bind" : "its TF_CONFIG address", port, tfps_rpc_tls_mode() ? "mTLS" : "plaintext",
              tfps_ps_owned(d.ps), l.total, tfps_shard_strategy_name(plan.strategy), (unsigned long long)plan.digest,
              c.num_workers, tfps_consistency_name(o.consistency), opt_desc, tfps_ps_threads(d.ps),
              tfps_ps_threads(d.ps) == 1 ? "" : "s", o.ps_threads ? "--ps-threads" : "the cores available",
              tfps_ps_apply_threads(d.ps));
    tfps_rpc_server_run(d.server);
    tfps_ps_stats s;
    tfps_ps_get_stats(d.ps, &s);
    tfps_info("stopped: version %llu, applied %llu, refused %llu (unauthenticated %llu), dropped %llu, non-finite "
              "%llu, pulls held %.1fs in all, %.1f MB in, %.1f MB out, uptime %.1fs%s",
              (unsigned long long)s.version, (unsigned long long)s.applied, (unsigned long long)s.refused,
              (unsigned long long)s.unauthenticated, (unsigned long long)s.dropped, (unsigned long long)s.nonfinite,
              s.wait_s, s.bytes_in / 1e6, s.bytes_out / 1e6, s.uptime_s,
              tfps_ps_shutdown_requested(d.ps) ? " (chief's Shutdown)"
              : tfps_ps_idle_exit(d.ps)        ? " (--idle-timeout)"
                                               : " (signal)");
    if (o.consistency != TFPS_CONSISTENCY_ASYNC) {
        char waits[400];
        tfps_ps_describe_waits(d.ps, waits, sizeof(waits));
        tfps_info("%s: pulls held per worker: %s", tfps_consistency_name(o.consistency), waits);
    }
    if (o.consistency == TFPS_CONSISTENCY_SSP)
        tfps_info("ssp: largest read lead %llu clocks over the slowest live worker (staleness %d)",
                  (unsigned long long)s.max_lead, o.staleness);
    tfps_rpc_server_free(d.server);
    tfps_rpc_shutdown();
    rc = tfps_ps_exit_code(d.ps);
done:
    tfps_ps_free(d.ps);
    tfps_shard_plan_destroy(&plan);
    tfps_cluster_destroy(&c);
    return rc;
}
