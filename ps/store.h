/* store.h -- a ps's shard of the flat array: the ranges it owns, their
 * weights, and the optimizer's state at the same offsets.
 *
 *   flat array   | ... [b0, e0) ... [b1, e1) ... |     (ranges of this ps in the plan)
 *   w            | e0-b0 floats | e1-b1 floats |       (one array, ranges back to back)
 *   slot[k]      | same offsets as w             |       (momentum, adam m and v, adagrad a)
 *
 * The weights start at the single-process numbers (layout.h: a pure function
 * of seed and flat index) and the slots at the optimizer's initial values, so
 * no init round trip is needed and the numbers do not depend on the plan. */
#ifndef TFPS_PS_STORE_H
#define TFPS_PS_STORE_H

#include "ckpt.h"
#include "layout.h"
#include "optim.h"
#include "pool.h"
#include "shard.h"

#include <stddef.h>
#include <stdint.h>

typedef struct {
    size_t begin, end;   /* flat range */
    size_t at;           /* offset of begin in w (and in every slot) */
} tfps_store_range;

typedef struct {
    tfps_layout layout;
    int nown;
    tfps_store_range *own;   /* [nown], sorted by begin */
    size_t nelems;           /* floats owned */
    float *w;                /* [nelems] */
    tfps_optim opt;
    float *slot[TFPS_OPTIM_MAX_SLOTS];   /* [nelems] each, or NULL */
    uint64_t updates;        /* optimizer updates applied (t of the next is updates + 1) */
    /* the update loops over several cores (pool.h); not owned: NULL = one loop on the caller */
    tfps_pool *pool;
    size_t min_chunk;        /* floats: momentum's, adam's, adagrad's updates are split only into chunks at least
                                this long (sgd's: TFPS_STORE_SGD_FACTOR x longer, tfps_store_min_chunk) */
} tfps_store;

/* The floats an update must be split into chunks of, at least, before the
 * pool's threads are woken (TFPS_PS_APPLY_MIN_CHUNK overrides it, for tests
 * that split a small model): below it the wake-ups cost more than they win.
 * Measured (bench_rpc --multicore, the update alone): momentum, adam and
 * adagrad cost 2-5 ns per float, so a chunk is 0.1-0.3 ms of work; sgd costs
 * 0.3 ns, so its chunks are 8 x longer (a 266,610-float sgd update ran 72 us
 * in one loop, 86 us split in two). */
#define TFPS_STORE_MIN_CHUNK 65536
#define TFPS_STORE_SGD_FACTOR 8

/* Takes the ranges the plan gives ps_index and initialises them. TFPS_ERR
 * with a message on OOM; nothing to destroy then. */
int tfps_store_init(tfps_store *s, const tfps_layout *l, const tfps_shard_plan *plan, int ps_index, uint64_t seed,
                    const tfps_optim *opt, char *err, size_t errlen);
void tfps_store_destroy(tfps_store *s);   /* safe on a zeroed store */

/* The shortest chunk (floats) an update of this store's rule is split into:
 * min_chunk, or TFPS_STORE_SGD_FACTOR x min_chunk for sgd. */
size_t tfps_store_min_chunk(const tfps_store *s);

/* Offset in w of [begin, end) if it is non-empty and inside one owned range;
 * else -1. */
long long tfps_store_locate(const tfps_store *s, uint64_t begin, uint64_t end);
/* "[0, 133305) [200000, 200100)", or "nothing". */
void tfps_store_describe(const tfps_store *s, char *buf, size_t n);

/* One optimizer update, t = updates + 1, made of npieces pieces of the
 * gradient: piece k is n[k] floats g[k] for the elements at offset at[k]
 * (from locate; pieces do not overlap). All or nothing: every piece is
 * checked first (tfps_optim_finite); when the update would make any weight
 * or optimizer slot non-finite (inf, NaN), nothing is written, updates
 * stays, and 0 is returned. Else every piece is applied, updates = t: 1.
 * With a pool and at least 2 x tfps_store_min_chunk floats, the pieces (as one run of
 * floats) are cut into chunks checked in parallel, then, if every chunk is
 * finite, applied in parallel: the rules are elementwise, so the result is
 * the same bits and the same decision as one loop. */
int tfps_store_update(tfps_store *s, int npieces, const size_t *at, const float *const *g, const size_t *n);

/* Overwrites the owned ranges, optimizer state and update count with the
 * newest complete checkpoint under dir that holds them (ckpt.h: from any
 * number of ps). TFPS_OK with *info, TFPS_CKPT_NONE (nothing changed), or
 * TFPS_ERR with err. */
int tfps_store_restore(tfps_store *s, const char *dir, int ps_index, uint64_t plan_digest, tfps_ckpt_info *info,
                       char *err, size_t errlen);

#endif
