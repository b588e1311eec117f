/* test_ckpt.c -- checkpoint files: CRC-32C, a shard's round trip, restore
 * onto other plans, every corruption refused for the previous checkpoint,
 * a fuzz of shard headers with valid CRCs, prune, the atomic write, and a
 * writer killed with SIGKILL at random moments (the seed is printed;
 * TFPS_FUZZ_SEED=... replays the delays).
 *
 * Every checkpoint's values are a pure function of (step, array, flat index),
 * so a restore is checked float for float against the step it reports. */
#define _XOPEN_SOURCE 700
#include "ckpt.h"
#include "layout.h"
#include "log.h"
#include "optim.h"
#include "shard.h"
#include "tfps.h"

#include <CUnit/Basic.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- plumbing: temp dirs, files, values ---- */

static void mktmp(char *dir) {
    strcpy(dir, "/tmp/tfps-ckpt-XXXXXX");
    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(dir));
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static void rm_rf(const char *path) { nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS); }

static uint8_t *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    uint8_t *b = malloc((size_t)n + 1);
    *len = fread(b, 1, (size_t)n, f);
    b[*len] = '\0';
    fclose(f);
    return b;
}

/* Plain write, no fsync: the fuzz writes thousands of files. */
static void write_all(const char *path, const void *b, size_t len) {
    FILE *f = fopen(path, "wb");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    CU_ASSERT(fwrite(b, 1, len, f) == len);
    fclose(f);
}

static int count_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    while (d && readdir(d)) n++;
    if (d) closedir(d);
    return n;
}

static int count_lines(const char *s) {
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

/* The value of array a (0 weights, 1.. slots) at flat index i in step's
 * checkpoint: exact in float, different for every step. */
static float val(uint64_t step, int a, size_t i) {
    uint64_t x = step * 0x9E3779B97F4A7C15ull ^ (uint64_t)a << 56 ^ i;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return (float)(int32_t)(x >> 40) / 4096.0f - 2048.0f;
}

static uint64_t fuzz_rng = 0x1234567;
static uint64_t rnd(void) {   /* xorshift64: reproducible */
    fuzz_rng ^= fuzz_rng << 13;
    fuzz_rng ^= fuzz_rng >> 7;
    fuzz_rng ^= fuzz_rng << 17;
    return fuzz_rng;
}

static tfps_layout mk_layout(int h1) {
    tfps_layout l;
    CU_ASSERT_FATAL(tfps_layout_init(&l, 784, h1, 100, 10, NULL, 0) == TFPS_OK);
    return l;
}

static tfps_shard_plan mk_plan(const tfps_layout *l, int num_ps, tfps_shard_strategy s) {
    tfps_shard_plan p;
    CU_ASSERT_FATAL(tfps_shard_plan_build(&p, l, num_ps, s, NULL, 0) == TFPS_OK);
    return p;
}

/* ps's ranges in p, back to back from offset 0 (as a ps's store keeps them);
 * returns how many, *elems their length. */
static int ranges_of(const tfps_shard_plan *p, int ps, tfps_ckpt_range *out, size_t *elems) {
    int n = 0;
    size_t at = 0;
    for (int r = 0; r < p->nranges; r++) {
        if (p->ranges[r].ps != ps) continue;
        out[n] = (tfps_ckpt_range){p->ranges[r].begin, p->ranges[r].end, at};
        at += p->ranges[r].end - p->ranges[r].begin;
        n++;
    }
    *elems = at;
    return n;
}

static int slots_of(int kind) {
    tfps_optim o = {.kind = kind};
    return tfps_optim_slots(&o);
}

/* Writes step's checkpoint under dir as the plan's ps would: one shard each
 * (version 2 * step + ps, updates 3 * step + ps), then the MANIFEST. No
 * CUnit calls: the crash test's writer runs it in a child. */
static int try_write_ckpt(const char *dir, const tfps_layout *l, const tfps_shard_plan *p, int kind, uint64_t step,
                          int with_manifest, char *err, size_t errlen) {
    char sd[1100];
    if (tfps_ckpt_step_dir(dir, step, sd, sizeof(sd), err, errlen) != TFPS_OK) return TFPS_ERR;
    const int ns = slots_of(kind);
    tfps_optim o = {.kind = kind, .lr = 0.01f};
    tfps_ckpt_entry e[8];
    tfps_ckpt_range rg[8];
    for (int ps = 0; ps < p->num_ps; ps++) {
        size_t n;
        int nr = ranges_of(p, ps, rg, &n);
        float *arr = malloc((n ? n : 1) * sizeof(float) * 3);
        for (int a = 0; a <= ns; a++)
            for (int r = 0; r < nr; r++)
                for (size_t i = rg[r].begin; i < rg[r].end; i++)
                    arr[a * n + rg[r].at + i - rg[r].begin] = val(step, a, i);
        tfps_ckpt_shard s = {.layout = l, .num_ps = p->num_ps, .ps_index = ps, .strategy = p->strategy,
                             .plan_digest = p->digest, .step = step, .version = 2 * step + (uint64_t)ps,
                             .updates = 3 * step + (uint64_t)ps, .optim_kind = kind,
                             .optim_digest = tfps_optim_digest(&o), .nslots = ns, .nranges = nr, .ranges = rg,
                             .w = arr, .slot = {arr + n, arr + 2 * n}};
        e[ps].ps_index = ps;
        int rc = tfps_ckpt_write_shard(sd, &s, &e[ps].bytes, &e[ps].crc, err, errlen);
        free(arr);
        if (rc != TFPS_OK) return rc;
    }
    return with_manifest ? tfps_ckpt_write_manifest(sd, step, l, p->num_ps, e, err, errlen) : TFPS_OK;
}

static void write_ckpt(const char *dir, const tfps_layout *l, const tfps_shard_plan *p, int kind, uint64_t step,
                       int with_manifest) {
    char err[TFPS_ERR_LEN];
    if (try_write_ckpt(dir, l, p, kind, step, with_manifest, err, sizeof(err)) != TFPS_OK) {
        printf("\n    write step %" PRIu64 ": %s", step, err);
        CU_FAIL_FATAL("checkpoint write failed");
    }
}

/* Restores [0, total) (weights and kind's slots; weights only if kind < 0)
 * and checks every float against the step it reports. Returns the restore's
 * code; *info filled on TFPS_OK. */
static int restore_all(const char *dir, const tfps_layout *l, int kind, tfps_ckpt_info *info) {
    tfps_optim o = {.kind = kind < 0 ? 0 : kind};
    const int ns = kind < 0 ? 0 : slots_of(kind);
    float *arr = malloc(l->total * sizeof(float) * 3);
    float *slot[TFPS_OPTIM_MAX_SLOTS] = {arr + l->total, arr + 2 * l->total};
    tfps_ckpt_range all = {0, l->total, 0};
    char err[TFPS_ERR_LEN];
    int rc = tfps_ckpt_restore(dir, l, kind < 0 ? NULL : &o, -1, 0, &all, 1, arr, kind < 0 ? NULL : slot, info, err,
                               sizeof(err));
    if (rc == TFPS_OK) {
        size_t bad = 0;
        for (int a = 0; a <= ns; a++)
            for (size_t i = 0; i < l->total; i++) bad += arr[a * l->total + i] != val(info->step, a, i);
        CU_ASSERT_EQUAL(bad, 0);
    } else if (rc == TFPS_ERR) {
        fprintf(stderr, "restore: %s\n", err);
    }
    free(arr);
    return rc;
}

/* stderr into a file around a call, to check the lines it logs. */
static char cap_path[64];
static int cap_saved = -1;

static void capture_begin(void) {
    fflush(stderr);
    strcpy(cap_path, "/tmp/tfps-ckpt-log-XXXXXX");
    int fd = mkstemp(cap_path);
    CU_ASSERT_FATAL(fd >= 0);
    cap_saved = dup(2);
    dup2(fd, 2);
    close(fd);
}

static char *capture_end(void) {
    fflush(stderr);
    dup2(cap_saved, 2);
    close(cap_saved);
    size_t len;
    char *s = (char *)read_all(cap_path, &len);
    unlink(cap_path);
    fputs(s, stderr);   /* still shown */
    return s;
}

/* The MANIFEST as ckpt.h documents it, rendered here independently. */
static size_t manifest_text(char *out, size_t cap, uint64_t step, const tfps_layout *l, int n,
                            const tfps_ckpt_entry *e) {
    size_t k = (size_t)snprintf(out, cap, "tfps-checkpoint 1\nstep %" PRIu64 "\nlayout %d-%d-%d-%d %016" PRIx64
                                "\nnum_ps %d\n", step, l->in, l->h1, l->h2, l->out, tfps_layout_digest(l), n);
    for (int i = 0; i < n; i++)
        k += (size_t)snprintf(out + k, cap - k, "shard ps-%d.ckpt %" PRIu64 " %08" PRIx32 "\n", e[i].ps_index,
                              e[i].bytes, e[i].crc);
    k += (size_t)snprintf(out + k, cap - k, "crc %08" PRIx32 "\n", tfps_crc32c(0, out, k));
    return k;
}

/* ---- tests ---- */

static void test_crc32c(void) {
    CU_ASSERT_EQUAL(tfps_crc32c(0, "123456789", 9), 0xE3069283u);
    CU_ASSERT_EQUAL(tfps_crc32c(0, "", 0), 0);
    CU_ASSERT_EQUAL(tfps_crc32c(tfps_crc32c(0, "1234", 4), "56789", 5), 0xE3069283u);   // chained
    uint8_t zeros[32] = {0};
    CU_ASSERT_EQUAL(tfps_crc32c(0, zeros, 32), 0x8A9136AAu);   // RFC 3720 B.4
}

/* One shard holding everything, its two ranges stored out of order, adam's
 * two slots, odd floats (-0, inf, NaN payload, denormal): bit-exact back. */
static void test_shard_round_trip(void) {
    char dir[64], sd[1100], err[TFPS_ERR_LEN];
    mktmp(dir);
    tfps_layout l = mk_layout(300);
    const size_t n = l.total, cut = 1000;
    float *arr = malloc(n * 3 * sizeof(float)), *back = malloc(n * 3 * sizeof(float));
    for (size_t i = 0; i < 3 * n; i++) arr[i] = (float)i * 0.25f - 7.0f;
    const uint32_t odd[] = {0x80000000u, 0x7f800000u, 0x7fc01234u, 0x00000001u, 0xff800000u};
    for (int k = 0; k < 5; k++) memcpy(&arr[17 + 1000 * k], &odd[k], 4);
    /* [cut, n) first in the arrays, then [0, cut) */
    tfps_ckpt_range rg[2] = {{0, cut, n - cut}, {cut, n, 0}};
    tfps_ckpt_shard s = {.layout = &l, .num_ps = 1, .ps_index = 0, .strategy = 0, .plan_digest = 42, .step = 1200,
                         .version = 77, .updates = 1199, .optim_kind = TFPS_OPT_ADAM, .optim_digest = 5, .nslots = 2,
                         .nranges = 2, .ranges = rg, .w = arr, .slot = {arr + n, arr + 2 * n}};
    CU_ASSERT_FATAL(tfps_ckpt_step_dir(dir, 1200, sd, sizeof(sd), err, sizeof(err)) == TFPS_OK);
    uint64_t bytes;
    uint32_t crc;
    CU_ASSERT_FATAL(tfps_ckpt_write_shard(sd, &s, &bytes, &crc, err, sizeof(err)) == TFPS_OK);
    char path[1200];
    snprintf(path, sizeof(path), "%s/ps-0.ckpt", sd);
    size_t len;
    uint8_t *file = read_all(path, &len);
    CU_ASSERT_FATAL(file != NULL);
    CU_ASSERT_EQUAL(len, 100 + 2 * 16 + n * 4 * 3 + 4);
    CU_ASSERT_EQUAL(bytes, len);
    uint32_t trailer, u32;
    uint64_t u64;
    memcpy(&trailer, file + len - 4, 4);
    CU_ASSERT_EQUAL(trailer, crc);
    CU_ASSERT_EQUAL(tfps_crc32c(0, file, len - 4), crc);
    CU_ASSERT(memcmp(file, "TFPSCKPT", 8) == 0);   // the offsets ckpt.h documents
    memcpy(&u32, file + 16, 4);
    CU_ASSERT_EQUAL(u32, 300);
    memcpy(&u64, file + 56, 8);
    CU_ASSERT_EQUAL(u64, 1200);
    memcpy(&u32, file + 96, 4);
    CU_ASSERT_EQUAL(u32, 2);
    memcpy(&u64, file + 100 + 16, 8);   // the second range's begin
    CU_ASSERT_EQUAL(u64, cut);
    free(file);

    tfps_ckpt_entry e = {0, bytes, crc};
    CU_ASSERT_FATAL(tfps_ckpt_write_manifest(sd, 1200, &l, 1, &e, err, sizeof(err)) == TFPS_OK);
    char want_text[512], mpath[1200];
    size_t wlen = manifest_text(want_text, sizeof(want_text), 1200, &l, 1, &e);
    snprintf(mpath, sizeof(mpath), "%s/MANIFEST", sd);
    char *text = (char *)read_all(mpath, &len);
    CU_ASSERT(len == wlen && memcmp(text, want_text, len) == 0);
    free(text);
    CU_ASSERT_EQUAL(tfps_ckpt_has_manifest(dir, 1200), 1);
    CU_ASSERT_EQUAL(tfps_ckpt_has_manifest(dir, 1201), 0);
    CU_ASSERT_EQUAL(tfps_ckpt_verify(sd, &l, err, sizeof(err)), TFPS_OK);

    tfps_optim o = {.kind = TFPS_OPT_ADAM};
    float *slot[TFPS_OPTIM_MAX_SLOTS] = {back + n, back + 2 * n};
    tfps_ckpt_range all = {0, n, 0};
    tfps_ckpt_info info;
    CU_ASSERT_FATAL(tfps_ckpt_restore(dir, &l, &o, 0, 42, &all, 1, back, slot, &info, err, sizeof(err)) == TFPS_OK);
    for (int a = 0; a < 3; a++) {   // flat order: [0, cut) sat at n - cut
        CU_ASSERT(memcmp(back + a * n, arr + a * n + n - cut, cut * 4) == 0);
        CU_ASSERT(memcmp(back + a * n + cut, arr + a * n, (n - cut) * 4) == 0);
    }
    CU_ASSERT_EQUAL(info.step, 1200);
    CU_ASSERT_EQUAL(info.version, 77);
    CU_ASSERT_EQUAL(info.updates, 1199);
    CU_ASSERT_EQUAL(info.num_ps, 1);
    CU_ASSERT_STRING_EQUAL(info.path, sd);
    /* another plan digest: the version is the step */
    CU_ASSERT(tfps_ckpt_restore(dir, &l, &o, 0, 43, &all, 1, back, slot, &info, err, sizeof(err)) == TFPS_OK);
    CU_ASSERT_EQUAL(info.version, 1200);
    /* small ranges at odd offsets, one across the stored ranges' seam */
    tfps_ckpt_range few[2] = {{5, 17, 100}, {cut - 3, cut + 5, 0}};
    memset(back, 0, n * 3 * sizeof(float));
    CU_ASSERT(tfps_ckpt_restore(dir, &l, NULL, -1, 0, few, 2, back, NULL, &info, err, sizeof(err)) == TFPS_OK);
    CU_ASSERT(memcmp(back + 100, arr + n - cut + 5, 12 * 4) == 0);
    CU_ASSERT(memcmp(back, arr + n - 3, 3 * 4) == 0 && memcmp(back + 3, arr, 5 * 4) == 0);
    CU_ASSERT_EQUAL(back[n], 0.0f);   // weights only: slots untouched
    /* a range outside the layout is the caller's error */
    tfps_ckpt_range out = {n - 1, n + 1, 0};
    CU_ASSERT_EQUAL(tfps_ckpt_restore(dir, &l, NULL, -1, 0, &out, 1, back, NULL, &info, err, sizeof(err)), TFPS_ERR);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "outside"));
    free(arr);
    free(back);
    rm_rf(dir);
}

/* Written by 2 ps (balanced, round-robin), read back by every ps of plans of
 * 1, 2 and 3 ps (both strategies) and by one process wanting everything. */
static void test_restore_across_plans(void) {
    tfps_layout l = mk_layout(300);
    const tfps_shard_strategy st[2] = {TFPS_SHARD_BALANCED, TFPS_SHARD_ROUND_ROBIN};
    float *arr = malloc(l.total * 3 * sizeof(float));
    char err[TFPS_ERR_LEN];
    int checked = 0;
    for (int ws = 0; ws < 2; ws++) {
        char dir[64];
        mktmp(dir);
        tfps_shard_plan wp = mk_plan(&l, 2, st[ws]);
        write_ckpt(dir, &l, &wp, TFPS_OPT_ADAM, 1200, 1);
        tfps_optim o = {.kind = TFPS_OPT_ADAM};
        for (int m = 1; m <= 3; m++)
            for (int rs = 0; rs < 2; rs++) {
                tfps_shard_plan rp = mk_plan(&l, m, st[rs]);
                for (int ps = 0; ps < m; ps++) {
                    tfps_ckpt_range rg[8];
                    size_t n;
                    int nr = ranges_of(&rp, ps, rg, &n);
                    float *slot[TFPS_OPTIM_MAX_SLOTS] = {arr + n, arr + 2 * n};
                    tfps_ckpt_info info;
                    memset(arr, 0xff, l.total * 3 * sizeof(float));
                    CU_ASSERT_FATAL(tfps_ckpt_restore(dir, &l, &o, ps, rp.digest, rg, nr, arr, slot, &info, err,
                                                      sizeof(err)) == TFPS_OK);
                    size_t bad = 0;
                    for (int a = 0; a < 3; a++)
                        for (int r = 0; r < nr; r++)
                            for (size_t i = rg[r].begin; i < rg[r].end; i++)
                                bad += arr[a * n + rg[r].at + i - rg[r].begin] != val(1200, a, i);
                    CU_ASSERT_EQUAL(bad, 0);
                    CU_ASSERT_EQUAL(info.step, 1200);
                    CU_ASSERT_EQUAL(info.num_ps, 2);
                    /* its own shard's version and update count only under the plan that wrote it; else
                     * the step and the most updates any shard had */
                    CU_ASSERT_EQUAL(info.updates, rp.digest == wp.digest ? 3 * 1200 + (uint64_t)ps : 3 * 1200 + 1);
                    CU_ASSERT_EQUAL(info.version, rp.digest == wp.digest ? 2 * 1200 + (uint64_t)ps : 1200);
                    checked++;
                }
                tfps_shard_plan_destroy(&rp);
            }
        tfps_ckpt_info info;
        CU_ASSERT_EQUAL(restore_all(dir, &l, TFPS_OPT_ADAM, &info), TFPS_OK);   // one process: [0, total)
        CU_ASSERT_EQUAL(restore_all(dir, &l, -1, &info), TFPS_OK);              // weights only
        CU_ASSERT_EQUAL(info.version, 1200);
        tfps_shard_plan_destroy(&wp);
        rm_rf(dir);
    }
    CU_ASSERT_EQUAL(checked, 2 * 2 * (1 + 2 + 3));
    free(arr);
}

/* Rewrites ps's shard with b (len bytes), fixing its CRC trailer and the
 * MANIFEST's entry, so the parser behind the CRCs is what gets tested. */
static void rewrite_shard(const char *sd, uint64_t step, const tfps_layout *l, int num_ps, int ps, uint8_t *b,
                          size_t len) {
    char path[1200], text[1024];
    if (len >= 4) {
        uint32_t c = tfps_crc32c(0, b, len - 4);
        memcpy(b + len - 4, &c, 4);
    }
    snprintf(path, sizeof(path), "%s/ps-%d.ckpt", sd, ps);
    write_all(path, b, len);
    tfps_ckpt_entry e[8];
    for (int i = 0; i < num_ps; i++) {
        size_t n;
        snprintf(path, sizeof(path), "%s/ps-%d.ckpt", sd, i);
        uint8_t *f = read_all(path, &n);
        e[i] = (tfps_ckpt_entry){i, n, n >= 4 ? tfps_crc32c(0, f, n - 4) : 0};
        free(f);
    }
    snprintf(path, sizeof(path), "%s/MANIFEST", sd);
    write_all(path, text, manifest_text(text, sizeof(text), step, l, num_ps, e));
}

/* Replaces from with to in sd's MANIFEST under a crc line that matches. */
static void edit_manifest(const char *sd, const char *from, const char *to) {
    char path[1200], text[1024];
    snprintf(path, sizeof(path), "%s/MANIFEST", sd);
    size_t len;
    char *b = (char *)read_all(path, &len), *at = strstr(b, from);
    CU_ASSERT_PTR_NOT_NULL_FATAL(at);
    *strstr(b, "crc ") = '\0';
    int k = snprintf(text, sizeof(text), "%.*s%s%s", (int)(at - b), b, to, at + strlen(from));
    snprintf(text + k, sizeof(text) - (size_t)k, "crc %08" PRIx32 "\n", tfps_crc32c(0, text, (size_t)k));
    write_all(path, text, strlen(text));
    free(b);
}

typedef enum {
    BIT_FLIP, TRUNCATED, MISSING_SHARD, MISSING_MANIFEST, MANIFEST_CRC, MANIFEST_STEP, MANIFEST_NONCANONICAL,
    OTHER_LAYOUT, OTHER_OPTIMIZER, SHARD_OF_OTHER_STEP, BAD_MAGIC, GAP, NCASES
} corruption;

/* Step 10 is good; step 20 is broken one way; restore must log one line
 * naming the file and the reason, and take step 10. */
static void test_refusals(void) {
    static const char *expect[NCASES] = {
        "ps-1.ckpt: CRC mismatch",
        "ps-0.ckpt: 533 bytes, the MANIFEST says",
        "ps-1.ckpt: missing",
        "MANIFEST: missing",
        "MANIFEST: CRC mismatch",
        "MANIFEST: step 21 in step-20",
        "MANIFEST: malformed",
        "MANIFEST: layout 784-200-100-10",
        "ps-0.ckpt: optimizer momentum, this run's is adam",
        "ps-1.ckpt: CRC",
        "ps-0.ckpt: bad magic",
        "shards: no shard holds [133305, 266610)",
    };
    char dir[64], sd[1100], path[1200], err[TFPS_ERR_LEN];
    mktmp(dir);
    tfps_layout l = mk_layout(300), l200 = mk_layout(200);
    tfps_shard_plan p = mk_plan(&l, 2, TFPS_SHARD_BALANCED), p200 = mk_plan(&l200, 2, TFPS_SHARD_BALANCED);
    write_ckpt(dir, &l, &p, TFPS_OPT_ADAM, 10, 1);
    tfps_ckpt_step_dir(dir, 20, sd, sizeof(sd), NULL, 0);
    for (int c = 0; c < NCASES; c++) {
        rm_rf(sd);
        write_ckpt(dir, c == OTHER_LAYOUT ? &l200 : &l, c == OTHER_LAYOUT ? &p200 : &p,
                   c == OTHER_OPTIMIZER ? TFPS_OPT_MOMENTUM : TFPS_OPT_ADAM, 20, 1);
        size_t len;
        uint8_t *b;
        snprintf(path, sizeof(path), "%s/ps-%d.ckpt", sd,
                 c == BIT_FLIP || c == MISSING_SHARD || c == SHARD_OF_OTHER_STEP ? 1 : 0);
        switch ((corruption)c) {
        case BIT_FLIP:   // the last shard: shard 0 alone would pass
            b = read_all(path, &len);
            b[len / 2] ^= 0x10;
            write_all(path, b, len);
            free(b);
            break;
        case TRUNCATED:
            CU_ASSERT(truncate(path, 533) == 0);
            break;
        case MISSING_SHARD:
            unlink(path);
            break;
        case MISSING_MANIFEST:
            snprintf(path, sizeof(path), "%s/MANIFEST", sd);
            unlink(path);
            break;
        case MANIFEST_CRC:
            snprintf(path, sizeof(path), "%s/MANIFEST", sd);
            b = read_all(path, &len);
            b[len - 2] = b[len - 2] == '0' ? '1' : '0';
            write_all(path, b, len);
            free(b);
            break;
        case MANIFEST_STEP:
            edit_manifest(sd, "step 20", "step 21");
            break;
        case MANIFEST_NONCANONICAL:
            edit_manifest(sd, "num_ps 2", "num_ps 02");
            break;
        case SHARD_OF_OTHER_STEP: {   // same size, another write's bytes
            char from[1200];
            snprintf(from, sizeof(from), "%s/step-10/ps-1.ckpt", dir);
            b = read_all(from, &len);
            write_all(path, b, len);
            free(b);
            break;
        }
        case BAD_MAGIC:
            b = read_all(path, &len);
            b[0] = 'X';
            rewrite_shard(sd, 20, &l, 2, 0, b, len);
            free(b);
            break;
        case GAP: {   // one ps of one, holding only the first half
            rm_rf(sd);
            tfps_shard_range r0 = {0, 0, l.total / 2};
            tfps_shard_plan half = {.num_ps = 1, .total = l.total, .nranges = 1, .ranges = &r0, .digest = 7};
            write_ckpt(dir, &l, &half, TFPS_OPT_ADAM, 20, 1);
            break;
        }
        case OTHER_LAYOUT:
        case OTHER_OPTIMIZER:
        case NCASES:
            break;
        }
        tfps_ckpt_info info;
        capture_begin();
        int rc = restore_all(dir, &l, TFPS_OPT_ADAM, &info);
        char *log = capture_end();
        CU_ASSERT_EQUAL(rc, TFPS_OK);
        CU_ASSERT_EQUAL(info.step, 10);
        CU_ASSERT_EQUAL(count_lines(log), 1);
        CU_ASSERT_PTR_NOT_NULL(strstr(log, "step-20: refused: "));
        CU_ASSERT_PTR_NOT_NULL(strstr(log, "; trying the previous one"));
        if (!strstr(log, expect[c])) {
            printf("\n    case %d: expected \"%s\" in: %s", c, expect[c], log);
            CU_FAIL("the refusal does not name the file and reason");
        }
        free(log);
        CU_ASSERT_EQUAL(tfps_ckpt_verify(sd, &l, err, sizeof(err)), c == OTHER_OPTIMIZER ? TFPS_OK : TFPS_ERR);
        if (c == OTHER_OPTIMIZER) {   // weights only: any optimizer's checkpoint will do
            CU_ASSERT_EQUAL(restore_all(dir, &l, -1, &info), TFPS_OK);
            CU_ASSERT_EQUAL(info.step, 20);
        }
    }
    /* Only a broken checkpoint (its last shard): none, the arrays untouched. */
    rm_rf(dir);
    mktmp(dir);
    write_ckpt(dir, &l, &p, TFPS_OPT_ADAM, 5, 1);
    snprintf(path, sizeof(path), "%s/step-5/ps-1.ckpt", dir);
    CU_ASSERT(truncate(path, 1000) == 0);
    float *w = malloc(l.total * sizeof(float)), *slot[2] = {malloc(l.total * 4), malloc(l.total * 4)};
    for (size_t i = 0; i < l.total; i++) w[i] = slot[0][i] = slot[1][i] = 3.5f;
    tfps_optim o = {.kind = TFPS_OPT_ADAM};
    tfps_ckpt_range all = {0, l.total, 0};
    tfps_ckpt_info info;
    capture_begin();
    CU_ASSERT_EQUAL(tfps_ckpt_restore(dir, &l, &o, 0, p.digest, &all, 1, w, slot, &info, err, sizeof(err)),
                    TFPS_CKPT_NONE);
    char *log = capture_end();
    CU_ASSERT_PTR_NOT_NULL(strstr(log, "ps-1.ckpt: 1000 bytes"));
    CU_ASSERT_PTR_NOT_NULL(strstr(log, "; no older one"));
    free(log);
    size_t touched = 0;
    for (size_t i = 0; i < l.total; i++) touched += w[i] != 3.5f || slot[0][i] != 3.5f || slot[1][i] != 3.5f;
    CU_ASSERT_EQUAL(touched, 0);
    /* no directory, an empty one, one with strangers: none */
    rm_rf(dir);
    CU_ASSERT_EQUAL(restore_all(dir, &l, TFPS_OPT_ADAM, &info), TFPS_CKPT_NONE);
    mktmp(dir);
    CU_ASSERT_EQUAL(restore_all(dir, &l, TFPS_OPT_ADAM, &info), TFPS_CKPT_NONE);
    snprintf(path, sizeof(path), "%s/step-007", dir);
    mkdir(path, 0755);
    snprintf(path, sizeof(path), "%s/step-", dir);
    mkdir(path, 0755);
    CU_ASSERT_EQUAL(restore_all(dir, &l, TFPS_OPT_ADAM, &info), TFPS_CKPT_NONE);
    free(w);
    free(slot[0]);
    free(slot[1]);
    tfps_shard_plan_destroy(&p);
    tfps_shard_plan_destroy(&p200);
    rm_rf(dir);
}

/* Random bytes of a shard's header and ranges (CRCs fixed, so the parser
 * behind them runs), random truncations and edits of the MANIFEST: never a
 * crash (ASan checks the reads), and a restore that succeeds returns the
 * values of the file. */
static void test_fuzz_files(void) {
    char dir[64], sd[1100], spath[1200], mpath[1200];
    mktmp(dir);
    tfps_layout l;
    CU_ASSERT_FATAL(tfps_layout_init(&l, 3, 4, 2, 2, NULL, 0) == TFPS_OK);   // tiny: fast
    tfps_shard_plan p = mk_plan(&l, 2, TFPS_SHARD_ROUND_ROBIN);
    write_ckpt(dir, &l, &p, TFPS_OPT_MOMENTUM, 1, 1);
    tfps_ckpt_step_dir(dir, 1, sd, sizeof(sd), NULL, 0);
    size_t len0, mlen0;
    snprintf(spath, sizeof(spath), "%s/ps-0.ckpt", sd);
    uint8_t *orig = read_all(spath, &len0);
    snprintf(mpath, sizeof(mpath), "%s/MANIFEST", sd);
    uint8_t *morig = read_all(mpath, &mlen0);
    int saved = tfps_log_min_level, ok = 0, refused = 0;
    tfps_log_min_level = TFPS_LOG_ERROR;
    for (int it = 0; it < 3000; it++) {
        uint8_t b[4096];
        size_t len = len0;
        memcpy(b, orig, len0);
        if (it % 3 < 2) {   // shard header and ranges, CRCs fixed
            for (int k = 1 + (int)(rnd() % 4); k > 0; k--) {
                size_t at = rnd() % (100 + 16 * 3);
                b[at] = rnd() % 4 ? (uint8_t)rnd() : b[at] ^ (uint8_t)(1u << (rnd() % 8));
            }
            if (rnd() % 8 == 0) len = 4 + rnd() % (len0 + 64);
            if (len > len0) memset(b + len0, 0, len - len0);
            rewrite_shard(sd, 1, &l, 2, 0, b, len);
        } else {   // the shard as written, its MANIFEST cut or edited (CRC left as is)
            write_all(spath, orig, len0);
            memcpy(b, morig, mlen0);
            size_t mlen = mlen0;
            if (rnd() % 2) mlen = rnd() % mlen0;
            else b[rnd() % mlen0] ^= (uint8_t)(1 + rnd() % 255);
            write_all(mpath, b, mlen);
        }
        tfps_ckpt_info info;
        int rc = restore_all(dir, &l, TFPS_OPT_MOMENTUM, &info);   // checks the values when it succeeds
        CU_ASSERT(rc == TFPS_OK || rc == TFPS_CKPT_NONE);
        ok += rc == TFPS_OK;
        refused += rc == TFPS_CKPT_NONE;
    }
    tfps_log_min_level = saved;
    printf("\n    3000 broken files: %d refused, %d still valid (a changed version, updates, plan field)", refused, ok);
    CU_ASSERT(refused > 2500 && ok > 0);
    free(orig);
    free(morig);
    tfps_shard_plan_destroy(&p);
    rm_rf(dir);
}

static int exists(const char *dir, uint64_t step) {
    char sd[1100];
    struct stat st;
    tfps_ckpt_step_dir(dir, step, sd, sizeof(sd), NULL, 0);
    return stat(sd, &st) == 0;
}

/* Steps 1..8 complete but 7 corrupt and 3 without MANIFEST, 9 still being
 * written: keep 3 leaves 5 6 8 (complete) and 9 (newer than them all). */
static void test_prune(void) {
    char dir[64], sd[1100], path[1200], err[TFPS_ERR_LEN];
    mktmp(dir);
    tfps_layout l = mk_layout(300);
    tfps_shard_plan p = mk_plan(&l, 2, TFPS_SHARD_BALANCED);
    for (uint64_t s = 1; s <= 9; s++) write_ckpt(dir, &l, &p, TFPS_OPT_SGD, s, s != 9);
    snprintf(path, sizeof(path), "%s/step-3/MANIFEST", dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/step-7/ps-0.ckpt", dir);
    CU_ASSERT(truncate(path, 2000) == 0);
    snprintf(path, sizeof(path), "%s/notes", dir);   // not a step: left alone
    write_all(path, "x", 1);
    snprintf(path, sizeof(path), "%s/step-04", dir);
    mkdir(path, 0755);
    CU_ASSERT_EQUAL(tfps_ckpt_prune(dir, 3, NULL, -1), 5);
    for (uint64_t s = 1; s <= 9; s++) CU_ASSERT_EQUAL(exists(dir, s), s == 5 || s == 6 || s == 8 || s == 9);
    CU_ASSERT_EQUAL(access(path, F_OK), 0);
    snprintf(path, sizeof(path), "%s/notes", dir);
    CU_ASSERT_EQUAL(access(path, F_OK), 0);
    CU_ASSERT_EQUAL(tfps_ckpt_prune(dir, 3, NULL, -1), 0);
    /* 10 complete: 9 is now an incomplete one older than it */
    write_ckpt(dir, &l, &p, TFPS_OPT_SGD, 10, 1);
    CU_ASSERT_EQUAL(tfps_ckpt_prune(dir, 3, NULL, -1), 2);
    for (uint64_t s = 1; s <= 10; s++) CU_ASSERT_EQUAL(exists(dir, s), s == 6 || s == 8 || s == 10);
    CU_ASSERT_EQUAL(tfps_ckpt_prune(dir, 0, NULL, -1), 2);   // keep < 1 keeps the newest
    CU_ASSERT_EQUAL(exists(dir, 10), 1);
    tfps_ckpt_info info;
    CU_ASSERT_EQUAL(restore_all(dir, &l, TFPS_OPT_SGD, &info), TFPS_OK);
    CU_ASSERT_EQUAL(info.step, 10);
    CU_ASSERT_EQUAL(tfps_ckpt_prune("/tmp/tfps-ckpt-no-such-dir", 3, NULL, -1), 0);
    /* another run's checkpoints (adam, newer steps) never count toward keep: this run's (sgd) stay */
    char dir2[64];
    mktmp(dir2);
    for (uint64_t s = 50; s <= 60; s += 10) write_ckpt(dir2, &l, &p, TFPS_OPT_ADAM, s, 1);
    for (uint64_t s = 1; s <= 3; s++) write_ckpt(dir2, &l, &p, TFPS_OPT_SGD, s, 1);
    CU_ASSERT_EQUAL(tfps_ckpt_prune(dir2, 2, &l, TFPS_OPT_SGD), 1);
    for (uint64_t s = 1; s <= 60; s++) CU_ASSERT_EQUAL(exists(dir2, s), s == 2 || s == 3 || s == 50 || s == 60);
    tfps_layout l2 = mk_layout(200);   /* nor another layout's */
    CU_ASSERT_EQUAL(tfps_ckpt_prune(dir2, 1, &l2, TFPS_OPT_SGD), 0);
    rm_rf(dir2);
    /* path errors */
    char longdir[1200];
    memset(longdir, 'a', sizeof(longdir) - 1);
    longdir[sizeof(longdir) - 1] = '\0';
    CU_ASSERT_EQUAL(tfps_ckpt_step_dir(longdir, 1, sd, sizeof(sd), err, sizeof(err)), TFPS_ERR);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "too long"));
    CU_ASSERT_EQUAL(tfps_ckpt_restore(longdir, &l, NULL, -1, 0, NULL, 0, NULL, NULL, &info, err, sizeof(err)),
                    TFPS_ERR);
    /* a MANIFEST for a shard that is not there is refused at write time */
    tfps_ckpt_step_dir(dir, 11, sd, sizeof(sd), NULL, 0);
    mkdir(sd, 0755);
    tfps_ckpt_entry e[2] = {{0, 1000, 1}, {1, 1000, 2}};
    CU_ASSERT_EQUAL(tfps_ckpt_write_manifest(sd, 11, &l, 2, e, err, sizeof(err)), TFPS_ERR);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "ps-0.ckpt"));
    tfps_shard_plan_destroy(&p);
    rm_rf(dir);
}

/* tfps_write_file_atomic: long paths refused, no fd or temp file left on
 * an error after the temp file is open, the directory synced. */
static void test_atomic_write(void) {
    char dir[64], path[5000], err[TFPS_ERR_LEN];
    mktmp(dir);
    memset(path, 'a', sizeof(path) - 1);
    path[sizeof(path) - 1] = '\0';
    CU_ASSERT_EQUAL(tfps_write_file_atomic(path, "x", 1, err, sizeof(err)), TFPS_ERR);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "too long"));
    snprintf(path, sizeof(path), "%s/%0*d", dir, (int)(4090 - strlen(dir) - 1), 0);   // fits, ".tmp.<pid>" not
    CU_ASSERT_EQUAL(tfps_write_file_atomic(path, "x", 1, err, sizeof(err)), TFPS_ERR);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "too long"));

    const int fds = count_fds();
    snprintf(path, sizeof(path), "%s/no/such/dir/f", dir);
    CU_ASSERT_EQUAL(tfps_write_file_atomic(path, "x", 1, err, sizeof(err)), TFPS_ERR);
    CU_ASSERT_EQUAL(count_fds(), fds);
    /* a write that fails once the temp file is open: a file size limit */
    static char big[65536];
    struct rlimit old, small;
    getrlimit(RLIMIT_FSIZE, &old);
    small = old;
    small.rlim_cur = 1000;
    void (*was)(int) = signal(SIGXFSZ, SIG_IGN);
    setrlimit(RLIMIT_FSIZE, &small);
    snprintf(path, sizeof(path), "%s/f", dir);
    int rc = tfps_write_file_atomic(path, big, sizeof(big), err, sizeof(err));
    setrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, was);
    CU_ASSERT_EQUAL(rc, TFPS_ERR);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "write "));
    CU_ASSERT_EQUAL(count_fds(), fds);
    DIR *d = opendir(dir);
    int entries = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;) entries += e->d_name[0] != '.';
    closedir(d);
    CU_ASSERT_EQUAL(entries, 0);   // the temp file is gone, nothing renamed
    /* success, then an overwrite */
    CU_ASSERT_EQUAL(tfps_write_file_atomic(path, "hello", 5, err, sizeof(err)), TFPS_OK);
    CU_ASSERT_EQUAL(tfps_write_file_atomic(path, "bye", 3, err, sizeof(err)), TFPS_OK);
    size_t len;
    uint8_t *b = read_all(path, &len);
    CU_ASSERT(len == 3 && memcmp(b, "bye", 3) == 0);
    free(b);
    CU_ASSERT_EQUAL(count_fds(), fds);
    CU_ASSERT_EQUAL(tfps_fsync_parent(path, err, sizeof(err)), TFPS_OK);
    CU_ASSERT_EQUAL(tfps_fsync_parent("relative-name", err, sizeof(err)), TFPS_OK);   // "."
    CU_ASSERT_EQUAL(tfps_fsync_parent("/tmp", err, sizeof(err)), TFPS_OK);            // "/"
    CU_ASSERT_EQUAL(tfps_fsync_dir("/tmp/tfps-ckpt-no-such-dir", err, sizeof(err)), TFPS_ERR);
    /* mkdirs creates every level */
    snprintf(path, sizeof(path), "%s/a/b/c", dir);
    CU_ASSERT_EQUAL(tfps_mkdirs(path, err, sizeof(err)), TFPS_OK);
    CU_ASSERT_EQUAL(access(path, F_OK), 0);
    rm_rf(dir);
}

/* ---- crash: a writer killed with SIGKILL at a random moment ---- */

#define CRASH_TRIALS 25
#define CRASH_KEEP 3

/* The writer: steps first, first + 1, ... each 2 shards, the MANIFEST,
 * prune, then the step reported on fd (it is durable from then on). */
static void crash_writer(const char *dir, const tfps_layout *l, const tfps_shard_plan *p, uint64_t first, int fd) {
    alarm(30);   // never outlives a test that lost it
    char err[TFPS_ERR_LEN];
    for (uint64_t s = first;; s++) {
        if (try_write_ckpt(dir, l, p, TFPS_OPT_ADAM, s, 1, err, sizeof(err)) != TFPS_OK) {
            fprintf(stderr, "crash writer: step %" PRIu64 ": %s\n", s, err);
            _exit(1);
        }
        tfps_ckpt_prune(dir, CRASH_KEEP, NULL, -1);
        if (write(fd, &s, sizeof(s)) != sizeof(s)) _exit(1);
    }
}

static void test_crash(void) {
    const char *env = getenv("TFPS_FUZZ_SEED");
    const unsigned seed = env ? (unsigned)strtoul(env, NULL, 10) : (unsigned)time(NULL) ^ (unsigned)getpid();
    printf("\n    seed %u (TFPS_FUZZ_SEED=%u replays the delays)", seed, seed);
    char dir[64], err[TFPS_ERR_LEN];
    mktmp(dir);
    tfps_layout l = mk_layout(300);
    tfps_shard_plan p = mk_plan(&l, 2, TFPS_SHARD_BALANCED);
    uint64_t rng = seed | 1ull << 32, next = 1;
    int saved = tfps_log_min_level, midway = 0, trials = 0;
    tfps_log_min_level = TFPS_LOG_ERROR;   // the refusals of half-written steps are expected
    const double t0 = tfps_now();
    for (; trials < CRASH_TRIALS && tfps_now() - t0 < 20; trials++) {
        int fds[2];
        CU_ASSERT_FATAL(pipe(fds) == 0);
        fflush(stdout);
        pid_t pid = fork();
        CU_ASSERT_FATAL(pid >= 0);
        if (pid == 0) {
            close(fds[0]);
            crash_writer(dir, &l, &p, next, fds[1]);
        }
        close(fds[1]);
        /* one step durable, then a kill 0-30 ms later */
        uint64_t done = 0, s;
        struct pollfd pf = {fds[0], POLLIN, 0};
        if (poll(&pf, 1, 10000) == 1 && read(fds[0], &s, sizeof(s)) == sizeof(s)) done = s;
        rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
        tfps_sleep((double)(rng % 31) / 1000.0);
        kill(pid, SIGKILL);
        int status;
        waitpid(pid, &status, 0);
        CU_ASSERT_FATAL(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);   // not dead of its own failure
        while (read(fds[0], &s, sizeof(s)) == sizeof(s)) done = s;
        close(fds[0]);
        CU_ASSERT_FATAL(done >= next);

        tfps_ckpt_info info;
        CU_ASSERT_FATAL(restore_all(dir, &l, TFPS_OPT_ADAM, &info) == TFPS_OK);   // checks every value
        CU_ASSERT(info.step >= done);   // what was reported durable is there, or a newer one
        CU_ASSERT_EQUAL(tfps_ckpt_verify(info.path, &l, err, sizeof(err)), TFPS_OK);
        CU_ASSERT_EQUAL(info.updates, 3 * info.step + 1);
        midway += exists(dir, info.step + 1);
        int complete = 0;
        for (uint64_t k = 1; k <= info.step; k++) complete += tfps_ckpt_has_manifest(dir, k);
        CU_ASSERT(complete <= CRASH_KEEP + 1);   // killed between a MANIFEST and its prune at worst
        next = info.step + 1;
    }
    tfps_log_min_level = saved;
    printf("\n    %d kills in %.1f s, %d of them mid-checkpoint, reached step %" PRIu64, trials, tfps_now() - t0,
           midway, next - 1);
    CU_ASSERT(trials >= CRASH_TRIALS);
    tfps_shard_plan_destroy(&p);
    rm_rf(dir);
}

int main(void) {
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("ckpt", NULL, NULL);
    CU_add_test(s, "crc32c check values", test_crc32c);
    CU_add_test(s, "a shard's round trip, bit exact, with two slots", test_shard_round_trip);
    CU_add_test(s, "written by 2 ps, restored onto 1, 2, 3 ps and one process", test_restore_across_plans);
    CU_add_test(s, "each corruption refused in one line, the previous one used", test_refusals);
    CU_add_test(s, "fuzz of shard headers and MANIFESTs: refused, never a crash", test_fuzz_files);
    CU_add_test(s, "prune keeps the newest complete ones and newer partial ones", test_prune);
    CU_add_test(s, "atomic write: long paths, no fd or temp file leaks", test_atomic_write);
    CU_add_test(s, "writer killed with SIGKILL: the newest complete checkpoint loads", test_crash);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    int failed = (int)(CU_get_number_of_tests_failed() + CU_get_number_of_suites_failed());
    CU_cleanup_registry();
    return failed;
}
