/* saver.h -- a ps's checkpoint job: copy the store (the only pause in
 * serving), write the copy in the background, report when it is durable.
 *
 *   tfps_saver_start    copies weights, optimizer state and counters, starts
 *                       a thread that writes step-N/ps-K.ckpt (ckpt.h)
 *   tfps_saver_poll     from the server's tick: 1 once the write ended
 *
 * One write at a time: a start while one runs is refused (the chief waits
 * for every ps before it asks again). The file format is common/ckpt.h's. */
#ifndef TFPS_PS_SAVER_H
#define TFPS_PS_SAVER_H

#include "store.h"

#include <stdint.h>

typedef struct tfps_saver tfps_saver;

typedef struct {
    int num_ps, ps_index, strategy;
    uint64_t plan_digest;
    uint64_t step, version;
    uint64_t optim_digest;
} tfps_saver_meta;

typedef struct {
    int ok;                 /* 1: written; 0: err says why */
    char err[512];
    uint64_t step, version, bytes;
    uint32_t crc;
    double write_s;         /* seconds the write and its fsyncs took */
} tfps_saver_result;

tfps_saver *tfps_saver_new(void);
void tfps_saver_free(tfps_saver *sv);   /* NULL-safe; waits for a write in flight */

/* Copies s's state and starts writing it under dir. *pause_s gets the
 * seconds the copy took. TFPS_ERR with err when a write is in flight, on
 * OOM, or when the thread cannot start. */
int tfps_saver_start(tfps_saver *sv, const tfps_store *s, const char *dir, const tfps_saver_meta *m,
                     double *pause_s, char *err, size_t errlen);
/* 1 with *r when a started write ended (the saver is free again), else 0. */
int tfps_saver_poll(tfps_saver *sv, tfps_saver_result *r);
/* A write is in flight. */
int tfps_saver_busy(const tfps_saver *sv);

#endif
