/* ckpt.h -- checkpoint files: one shard file per ps and a MANIFEST per step,
 * read by both daemons (a ps restores its ranges; local mode resumes;
 * tfps-worker --export-checkpoint turns one into model files).
 *
 *   <checkpoint-dir>/step-N/ps-K.ckpt   what ps K owned at global step N
 *   <checkpoint-dir>/step-N/MANIFEST    written last, once every shard is durable
 *
 * A shard file, little-endian:
 *   header   magic "TFPSCKPT", format 1, layout (in h1 h2 out, digest),
 *            plan (num_ps, strategy, digest), ps_index, step, version,
 *            updates, optimizer (kind, digest, slots), nranges
 *   ranges   nranges x [begin, end) as u64 pairs, sorted by begin
 *   weights  the ranges' floats back to back (as tfps_store keeps them)
 *   slots    `slots` more arrays of the same length (momentum, adam m v, ...)
 *   crc      CRC-32C of every byte before it
 * The header's 100 bytes, at their offsets (u32 unless marked):
 *   0 magic[8]  8 format  12 in  16 h1  20 h2  24 out  28 layout digest u64
 *   36 num_ps  40 strategy  44 plan digest u64  52 ps_index  56 step u64
 *   64 version u64  72 updates u64  80 optimizer kind  84 its digest u64
 *   92 slots  96 nranges
 * The MANIFEST is text: one line per shard (file, bytes, CRC) and a CRC line
 * of its own, so a half-written step is never taken for a complete one:
 *   tfps-checkpoint 1
 *   step 1200
 *   layout 784-300-100-10 <layout digest, 16 hex digits>
 *   num_ps 2
 *   shard ps-0.ckpt <bytes> <crc, 8 hex digits>
 *   shard ps-1.ckpt <bytes> <crc>
 *   crc <CRC-32C of every line above, newlines included>
 * A checkpoint is complete when its MANIFEST's CRC holds, every shard it
 * lists has the size and CRC it says, and the shards' ranges cover [0, total)
 * exactly once.
 *
 * Restore reads any flat range from whichever shards hold it, so a
 * checkpoint restores onto a different number of ps (or one process). A
 * checkpoint that is incomplete or corrupt (no MANIFEST, a missing shard, a
 * bad CRC, a short file, another layout or optimizer) is refused with one log
 * line naming the file and the reason, and the previous complete one is used.
 * The CRCs are CRC-32C (tfps_crc32c, tfps.h). */
#ifndef TFPS_CKPT_H
#define TFPS_CKPT_H

#include "layout.h"
#include "optim.h"

#include <stddef.h>
#include <stdint.h>

#define TFPS_CKPT_NONE 1   /* restore: no complete checkpoint (not an error) */
#define TFPS_CKPT_NO_STEPS "no step-N folder with a MANIFEST"   /* peek's message when there is not even one */

typedef struct {
    uint64_t begin, end;   /* flat range */
    size_t at;             /* offset of begin in the arrays written or read */
} tfps_ckpt_range;

/* One ps's shard, as written (the arrays are not copied or owned). */
typedef struct {
    const tfps_layout *layout;
    int num_ps, ps_index, strategy;
    uint64_t plan_digest;
    uint64_t step;          /* the global step: the N of step-N */
    uint64_t version;       /* the ps's model version */
    uint64_t updates;       /* optimizer updates applied (adam's t) */
    int optim_kind;         /* tfps_optim_kind */
    uint64_t optim_digest;
    int nslots;             /* tfps_optim_slots */
    int nranges;
    const tfps_ckpt_range *ranges;   /* sorted by begin; at = offset into w and each slot */
    const float *w;
    const float *slot[TFPS_OPTIM_MAX_SLOTS];
} tfps_ckpt_shard;

/* "<dir>/step-<step>" into out (TFPS_ERR if it does not fit). */
int tfps_ckpt_step_dir(const char *dir, uint64_t step, char *out, size_t n, char *err, size_t errlen);

/* Writes <stepdir>/ps-<ps_index>.ckpt (creating stepdir) by temp file, fsync,
 * rename and directory fsync. *bytes and *crc (may be NULL) get the file's
 * size and trailing CRC, for the MANIFEST. */
int tfps_ckpt_write_shard(const char *stepdir, const tfps_ckpt_shard *s, uint64_t *bytes, uint32_t *crc, char *err,
                          size_t errlen);

typedef struct {
    int ps_index;
    uint64_t bytes;
    uint32_t crc;
} tfps_ckpt_entry;

/* Writes <stepdir>/MANIFEST (atomically, directory fsynced) naming num_ps
 * shards entries[0..num_ps), the step and the layout. Each entry's shard
 * must be in stepdir already, at its size: a MANIFEST vouches for them. */
int tfps_ckpt_write_manifest(const char *stepdir, uint64_t step, const tfps_layout *l, int num_ps,
                             const tfps_ckpt_entry *entries, char *err, size_t errlen);

/* Has <dir>/step-<step>/MANIFEST (complete or not checked): 1/0. */
int tfps_ckpt_has_manifest(const char *dir, uint64_t step);

typedef struct {
    uint64_t step;          /* the checkpoint's global step */
    uint64_t version;       /* the ps's version: the shard with the same ps_index and plan, else step */
    uint64_t updates;       /* optimizer updates: the largest among the shards read */
    int num_ps;             /* shards in the checkpoint */
    char path[1100];        /* its step directory */
} tfps_ckpt_info;

/* Restores from the newest complete checkpoint under dir (step-N with the
 * largest N that passes every check), or from dir itself when it is one
 * step-N folder (it has a MANIFEST): for each want[i], the floats of
 * [begin, end) into w + at and each of slot[0..tfps_optim_slots(opt)) + at.
 * With slot NULL only weights are restored (opt may be NULL) and any
 * optimizer's checkpoint will do; otherwise one of another optimizer kind is
 * refused. The wanted ranges may span any shards, so a checkpoint restores
 * onto another plan. Every shard is checked before anything is copied, so
 * w and the slots change only on TFPS_OK. ps_index and plan_digest pick the
 * shard whose version is taken (-1: none). Every checkpoint refused on the
 * way is logged (tfps_warn), one line each naming the file and the reason.
 * Returns TFPS_OK with *info, TFPS_CKPT_NONE when no complete checkpoint
 * exists (dir missing or empty included), or TFPS_ERR with err (a wanted
 * range outside the layout, dir unreadable, out of memory). */
int tfps_ckpt_restore(const char *dir, const tfps_layout *l, const tfps_optim *opt, int ps_index,
                      uint64_t plan_digest, const tfps_ckpt_range *want, int nwant, float *w,
                      float *const slot[TFPS_OPTIM_MAX_SLOTS], tfps_ckpt_info *info, char *err, size_t errlen);

/* The layout and step of the checkpoint restore would try first, for a
 * caller that does not know the layout (tfps-predict): dir's own MANIFEST
 * when dir is a step-N folder, else the newest step-N under dir whose
 * MANIFEST parses. Reads MANIFESTs only; restore still checks everything.
 * Returns TFPS_OK with *l, *step and its step directory in stepdir (n bytes),
 * TFPS_CKPT_NONE when no MANIFEST under dir parses (err says why, naming the
 * newest one tried), or TFPS_ERR with err (dir unreadable, out of memory). */
int tfps_ckpt_peek(const char *dir, tfps_layout *l, uint64_t *step, char *stepdir, size_t n, char *err, size_t errlen);

/* Checks one step directory completely (MANIFEST, every shard's size,
 * CRC and header, the layout, the ranges' cover): TFPS_OK, or TFPS_ERR with
 * "<file>: <reason>" in err. */
int tfps_ckpt_verify(const char *stepdir, const tfps_layout *l, char *err, size_t errlen);

/* Removes every step-N under dir older than the newest `keep` complete ones
 * (incomplete ones older than the newest complete one included; newer ones
 * may be being written and stay). Complete here means a MANIFEST that
 * parses, every shard it lists at its listed size, and (when l is not NULL
 * and optim_kind >= 0) this run's layout and optimizer: cheap for any model
 * size (the chief prunes between its steps), and another run's checkpoints
 * that restore would refuse never count toward `keep` (they would make it
 * delete this run's own). The CRCs are restore's to check. keep < 1 counts
 * as 1. Returns the number removed; failures are logged, not fatal. */
int tfps_ckpt_prune(const char *dir, int keep, const tfps_layout *l, int optim_kind);

#endif
