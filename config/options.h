/* options.h -- the training options: one table of name, environment variable,
 * type, default, limits and help (redis's config table).
 *
 * Precedence: built-in default < environment (TFPS_BATCH_SIZE=...) < flag
 * (--batch-size 64 or --batch-size=64). Both daemons accept every option, so a
 * TFJob can give all replicas one command line; each daemon uses what it
 * needs. The flags of the seed scripts (--data-folder --batch-size
 * --first-layer-neurons --second-layer-neurons --learning-rate) keep their
 * names. */
#ifndef TFPS_OPTIONS_H
#define TFPS_OPTIONS_H

#include "optim.h"
#include "shard.h"

#include <stdint.h>
#include <stdio.h>

#define TFPS_PATH_LEN 1024
#define TFPS_JOB_SECRET_MAX 1024   /* = TFPS_WIRE_MAX_SECRET */

typedef enum { TFPS_DEVICE_AUTO = 0, TFPS_DEVICE_CPU, TFPS_DEVICE_CUDA } tfps_device;
/* --consistency: how the ps combine the replicas' gradients (README, "Consistency"). */
typedef enum { TFPS_CONSISTENCY_ASYNC = 0, TFPS_CONSISTENCY_SYNC, TFPS_CONSISTENCY_SSP } tfps_consistency;

typedef struct {
    char data_folder[TFPS_PATH_LEN];
    int batch_size;
    int h1, h2;                 /* --first-layer-neurons, --second-layer-neurons */
    double learning_rate;
    int epochs;
    long long steps;            /* 0: as many as --epochs gives; else stop after this many */
    char output_dir[TFPS_PATH_LEN];
    long long seed;
    int device;                 /* tfps_device */
    int gpu;                    /* --gpu: index among the visible CUDA devices */
    int log_every;              /* progress line every N steps; 0 = none */
    int shard_strategy;         /* tfps_shard_strategy */
    int threads;                /* OpenBLAS threads; 0 = library default */
    int log_level;              /* tfps_log_level */
    double startup_timeout;     /* seconds to wait for the ps at start-up */
    double rpc_timeout;         /* seconds: deadline of each training RPC round */
    double eval_every;          /* evaluator: seconds between evaluations */
    int overlap;                /* 1: push/pull of step t overlaps compute of t+1 (async staleness 1) */
    int pushpull;               /* 1: a step's push and pull to a ps go as one PushPull call (one round trip) */
    int wire_dtype;             /* tfps_wire_dtype: fp32, bf16 or fp16 tensors on the wire */
    int ps_threads;             /* ps: serving and apply threads; 0 = the cores available */
    int consistency;            /* tfps_consistency */
    int replicas_to_aggregate;  /* sync: gradients per step; 0 = every training replica */
    int staleness;              /* ssp: how many clocks a worker may run ahead of the slowest */
    int optimizer;              /* tfps_optim_kind (optim.h) */
    double momentum;            /* momentum optimizer */
    int nesterov;               /* momentum optimizer: 1 = Nesterov */
    double beta1, beta2;        /* adam */
    double epsilon;             /* adam, adagrad */
    double initial_accumulator; /* adagrad */
    char checkpoint_dir[TFPS_PATH_LEN];   /* "" = <output-dir>/checkpoints (tfps_options_checkpoint_dir) */
    double checkpoint_every_secs;   /* chief: 0 = only the final checkpoint */
    long long checkpoint_every_steps; /* chief: 0 = off */
    int keep_checkpoints;
    double ps_recovery_timeout; /* seconds an unreachable ps may take to come back */
    double heartbeat_secs;      /* ps: 3 intervals without a call = dead */
    double idle_timeout;        /* ps: no live replica this long = checkpoint and exit */
    char export_checkpoint[TFPS_PATH_LEN];   /* worker action: checkpoint -> model files */
    char job_secret_file[TFPS_PATH_LEN];     /* --job-secret-file */
    /* the job secret (--job-secret-file or TFPS_JOB_SECRET; never in summary.json); 0 bytes: none */
    uint8_t job_secret[TFPS_JOB_SECRET_MAX];
    size_t job_secret_len;
    int max_streams;            /* ps: concurrent calls per connection */
    int memory_limit_mb;        /* ps: gRPC resource quota and unread replies */
    long long max_open_files;   /* RLIMIT_NOFILE soft at start; 0 = the hard limit */
    int slow_step_ms;           /* testing: sleep after each step (a straggler) */
    char tls_cert[TFPS_PATH_LEN];   /* --tls-cert, --tls-key, --tls-ca: PEM files; all "" = plaintext */
    char tls_key[TFPS_PATH_LEN];
    char tls_ca[TFPS_PATH_LEN];
    char bind[TFPS_PATH_LEN];   /* tfps-ps: HOST:PORT to listen on; "" = its TF_CONFIG address */
    char model_dir[TFPS_PATH_LEN];  /* --model_dir (SageMaker): a URI is ignored, a local path = output_dir */
    /* actions, flags only */
    int print_cluster, print_task_type, help, version;
} tfps_options;

/* Fills *o from defaults, then the environment (envp-style lookup through
 * getenv), then argv[1..argc). Returns TFPS_ERR with one line naming the flag
 * or variable, the value and what was expected; *o is then unspecified. */
int tfps_options_parse(tfps_options *o, int argc, char **argv, char *err, size_t errlen);
/* 1 when --model_dir is a URI (holds "://", e.g. s3://bucket/model): accepted and ignored. A local
 * --model_dir has already been copied to output_dir by tfps_options_parse unless --output-dir was a flag. */
int tfps_options_model_dir_is_uri(const tfps_options *o);
/* --help text: every option with its environment variable, default and limits. */
void tfps_options_usage(FILE *f, const char *prog, const char *what);
/* The --help lines of the options named in names (NULL-terminated, without
 * "--"), in the same form: the tools' help (cli.h). */
void tfps_options_usage_of(FILE *f, const char *const *names);
/* Appends every option as a member of a cJSON object (cJSON *obj). */
struct cJSON;
void tfps_options_to_json(const tfps_options *o, struct cJSON *obj);
const char *tfps_device_name(int d);
const char *tfps_consistency_name(int c);
/* The options that depend on the cluster: --replicas-to-aggregate at most
 * the training replicas (backup workers over several ps: psclient.h).
 * TFPS_ERR with one line naming the flag, the value and what is expected. */
int tfps_options_check_cluster(const tfps_options *o, int num_workers, char *err, size_t errlen);
/* The checkpoint folder: --checkpoint-dir or <output-dir>/checkpoints.
 * TFPS_ERR if it does not fit in n. */
int tfps_options_checkpoint_dir(const tfps_options *o, char *out, size_t n);
/* The update rule the options ask for (--optimizer, --learning-rate, ...), as
 * the ps and local mode apply it. */
void tfps_options_optim(const tfps_options *o, tfps_optim *out);
/* The ps's thread count (serving and applying): --ps-threads, at most
 * TFPS_PS_THREADS_MAX; 0 = the cores this process may run on
 * (sched_getaffinity, else the ones online), at most
 * TFPS_PS_THREADS_DEFAULT_MAX (an update of this model is split into
 * chunks of 64K floats: more threads than that find no work). */
#define TFPS_PS_THREADS_MAX 64
#define TFPS_PS_THREADS_DEFAULT_MAX 16
int tfps_options_ps_threads(const tfps_options *o);

#endif
