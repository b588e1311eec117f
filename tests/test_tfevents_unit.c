/* test_tfevents_unit.c -- CUnit suite for common/tfevents.c and the CRC-32C it
 * frames records with (tests/test_tfevents.py decodes whole files with an
 * independent decoder; this suite checks the pieces and the error paths).
 *
 *   - CRC-32C check values; the mask and unmask against values computed by
 *     python3-crc32c and by hand;
 *   - the file name, and the exact bytes of the first record and of one
 *     scalar event (hand-encoded protobuf), both CRCs of every record;
 *   - a scalar of 0.0 is written (TensorBoard needs simple_value set);
 *   - errors with their text: a folder that cannot be made, bad tags
 *     (empty, NULL, invalid UTF-8), n < 0: nothing written;
 *   - a write that fails half-way (RLIMIT_FSIZE) is rolled back and the
 *     writer goes on;
 *   - writers opened in the same second in one folder get .1, .2 suffixes. */
#define _XOPEN_SOURCE 700

#include <CUnit/Basic.h>
#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tfevents.h"
#include "tfps.h"

static char g_root[64]; /* the suite's mkdtemp folder */
static int g_seq;

#define ASSERT_ERR_HAS(err, sub)                                                          \
    do {                                                                                  \
        int has_ = strstr((err), (sub)) != NULL;                                          \
        if (!has_) fprintf(stderr, "\n  error text \"%s\" lacks \"%s\"\n", (err), (sub)); \
        CU_ASSERT(has_);                                                                  \
    } while (0)

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

static int suite_init(void) {
    snprintf(g_root, sizeof(g_root), "/tmp/tfps-tfevents-XXXXXX");
    return mkdtemp(g_root) ? 0 : -1;
}

static int suite_clean(void) {
    nftw(g_root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

static void fresh_dir(char *out, size_t n) { snprintf(out, n, "%s/t%d", g_root, ++g_seq); }

/* The whole file into a malloc'd buffer; *len its size. NULL when unreadable. */
static uint8_t *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    uint8_t *b = NULL;
    size_t cap = 0;
    *len = 0;
    for (;;) {
        if (*len + 4096 > cap) {
            cap = cap * 2 + 4096;
            uint8_t *nb = realloc(b, cap);
            if (!nb) break;
            b = nb;
        }
        size_t k = fread(b + *len, 1, cap - *len, f);
        if (k == 0) break;
        *len += k;
    }
    fclose(f);
    return b;
}

static uint32_t get32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* Walks the records of a file checking both CRCs of each; returns the number
 * of records, or -1 (with a message) at the first bad one. rec_off/rec_len,
 * when not NULL, get the data offset and length of record `want`. */
static int walk(const uint8_t *b, size_t len, int want, size_t *rec_off, size_t *rec_len) {
    size_t at = 0;
    int n = 0;
    while (at < len) {
        if (len - at < 12) { fprintf(stderr, "\n  truncated header at %zu\n", at); return -1; }
        uint64_t l;
        memcpy(&l, b + at, 8);
        if (get32(b + at + 8) != tfps_tfevents_mask_crc(tfps_crc32c(0, b + at, 8))) {
            fprintf(stderr, "\n  length CRC mismatch at %zu\n", at);
            return -1;
        }
        if (l > len - at - 12 || len - at - 12 - l < 4) { fprintf(stderr, "\n  truncated data at %zu\n", at); return -1; }
        if (get32(b + at + 12 + l) != tfps_tfevents_mask_crc(tfps_crc32c(0, b + at + 12, (size_t)l))) {
            fprintf(stderr, "\n  data CRC mismatch at %zu\n", at);
            return -1;
        }
        if (n == want) {
            if (rec_off) *rec_off = at + 12;
            if (rec_len) *rec_len = (size_t)l;
        }
        at += 12 + (size_t)l + 4;
        n++;
    }
    return n;
}

static long file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

static void test_crc(void) {
    CU_ASSERT_EQUAL(tfps_crc32c(0, "123456789", 9), 0xE3069283u);
    CU_ASSERT_EQUAL(tfps_crc32c(tfps_crc32c(0, "1234", 4), "56789", 5), 0xE3069283u);
    CU_ASSERT_EQUAL(tfps_crc32c(0, "", 0), 0u);
    /* by hand: rot15(0xE3069283) = 0x0001C60D | 0x25060000 = 0x2507C60D; + 0xA282EAD8 = 0xC78AB0E5 */
    CU_ASSERT_EQUAL(tfps_tfevents_mask_crc(0xE3069283u), 0xC78AB0E5u);
    CU_ASSERT_EQUAL(tfps_tfevents_mask_crc(0), 0xA282EAD8u);
    CU_ASSERT_EQUAL(tfps_tfevents_mask_crc(0xFFFFFFFFu), 0xA282EAD7u);   /* the addition wraps */
    /* python3-crc32c: masked crc32c of the u64 LE lengths 0 and 24 (24: every first record here) */
    const uint64_t l0 = 0, l24 = 24;
    CU_ASSERT_EQUAL(tfps_tfevents_mask_crc(tfps_crc32c(0, &l0, 8)), 0x07980329u);
    CU_ASSERT_EQUAL(tfps_tfevents_mask_crc(tfps_crc32c(0, &l24, 8)), 0x224B7FA3u);
    const uint32_t xs[] = {0, 1, 0x80000000u, 0xE3069283u, 0xA282EAD8u, 0xFFFFFFFFu, 0x12345678u};
    for (size_t i = 0; i < sizeof(xs) / sizeof(xs[0]); i++) {
        CU_ASSERT_EQUAL(tfps_tfevents_unmask_crc(tfps_tfevents_mask_crc(xs[i])), xs[i]);
        CU_ASSERT_NOT_EQUAL(tfps_tfevents_mask_crc(xs[i]), xs[i]);
    }
}

static void test_file_and_bytes(void) {
    char dir[128], err[TFPS_ERR_LEN] = "";
    fresh_dir(dir, sizeof(dir));
    strcat(dir, "/a/b/logs");   /* missing parents are made */
    const time_t t0 = time(NULL);
    tfps_tfevents *w = tfps_tfevents_open(dir, err, sizeof(err));
    if (!w) fprintf(stderr, "\n  open: %s\n", err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(w);
    const char *path = tfps_tfevents_path(w);
    char host[256] = "";
    gethostname(host, sizeof(host));
    char want_prefix[256];
    snprintf(want_prefix, sizeof(want_prefix), "%s/events.out.tfevents.", dir);
    CU_ASSERT_EQUAL_FATAL(strncmp(path, want_prefix, strlen(want_prefix)), 0);
    const char *secs = path + strlen(want_prefix);
    for (int i = 0; i < 10; i++) CU_ASSERT(secs[i] >= '0' && secs[i] <= '9');
    CU_ASSERT_EQUAL(secs[10], '.');
    CU_ASSERT_STRING_EQUAL(secs + 11, host);
    const long long s = strtoll(secs, NULL, 10);
    CU_ASSERT(s >= (long long)t0 && s <= (long long)time(NULL));

    /* first record: Event{wall_time (field 1, fixed64), file_version (field 3) "brain.Event:2"} */
    size_t len = 0, off = 0, rl = 0;
    uint8_t *b = slurp(path, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    CU_ASSERT_EQUAL(walk(b, len, 0, &off, &rl), 1);
    CU_ASSERT_EQUAL(len, 12 + 24 + 4);
    CU_ASSERT_EQUAL_FATAL(rl, 24);
    CU_ASSERT_EQUAL(b[off], 0x09);   /* field 1, wire type 1 */
    double wt;
    memcpy(&wt, b + off + 1, 8);
    CU_ASSERT(wt >= (double)t0 && wt < (double)time(NULL) + 1);
    CU_ASSERT_EQUAL(b[off + 9], 0x1a);   /* field 3, wire type 2 */
    CU_ASSERT_EQUAL(b[off + 10], 13);
    CU_ASSERT_EQUAL(memcmp(b + off + 11, "brain.Event:2", 13), 0);
    free(b);

    /* step 7, {"a": 0.0}: 09 <wall_time> 10 07 2a 0a [0a 08 [0a 01 'a' 15 00 00 00 00]] */
    const char *tags[] = {"a"};
    const float vals[] = {0.0f};
    CU_ASSERT_EQUAL(tfps_tfevents_scalars(w, 7, 1, tags, vals, err, sizeof(err)), TFPS_OK);
    b = slurp(path, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    CU_ASSERT_EQUAL(walk(b, len, 1, &off, &rl), 2);
    const uint8_t want[] = {0x10, 0x07, 0x2a, 0x0a, 0x0a, 0x08, 0x0a, 0x01, 'a', 0x15, 0, 0, 0, 0};
    CU_ASSERT_EQUAL_FATAL(rl, 9 + sizeof(want));
    CU_ASSERT_EQUAL(b[off], 0x09);
    CU_ASSERT_EQUAL(memcmp(b + off + 9, want, sizeof(want)), 0);
    free(b);

    /* several scalars, UTF-8 tags (2, 3 and 4-byte sequences), NaN and infinity, a large and a negative step */
    const char *tags2[] = {"loss", "λ/ü", "✓", "\xf0\x9d\x84\x9e"};
    const float vals2[] = {-1.5f, 1e-30f, __builtin_nanf(""), __builtin_inff()};
    CU_ASSERT_EQUAL(tfps_tfevents_scalars(w, (int64_t)1 << 40, 4, tags2, vals2, err, sizeof(err)), TFPS_OK);
    CU_ASSERT_EQUAL(tfps_tfevents_scalars(w, -3, 0, NULL, NULL, err, sizeof(err)), TFPS_OK);
    b = slurp(path, &len);
    CU_ASSERT_EQUAL(walk(b, len, -1, NULL, NULL), 4);
    CU_ASSERT_EQUAL((long)len, file_size(path));
    free(b);
    tfps_tfevents_close(w);
    tfps_tfevents_close(NULL);   /* NULL-safe */
}

static void test_open_errors(void) {
    char dir[128], path[192], err[TFPS_ERR_LEN] = "";
    fresh_dir(dir, sizeof(dir));
    CU_ASSERT_EQUAL_FATAL(tfps_mkdirs(dir, err, sizeof(err)), TFPS_OK);
    /* a regular file where a folder should be */
    snprintf(path, sizeof(path), "%s/file", dir);
    FILE *f = fopen(path, "w");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fclose(f);
    strcat(path, "/logs");
    err[0] = '\0';
    CU_ASSERT_PTR_NULL(tfps_tfevents_open(path, err, sizeof(err)));
    ASSERT_ERR_HAS(err, "mkdir");
    ASSERT_ERR_HAS(err, "not a directory");
    err[0] = '\0';
    CU_ASSERT_PTR_NULL(tfps_tfevents_open("", err, sizeof(err)));
    ASSERT_ERR_HAS(err, "no folder");
    /* a read-only folder: root writes there all the same, so only checked for other users */
    if (geteuid() != 0) {
        snprintf(path, sizeof(path), "%s/ro", dir);
        CU_ASSERT_EQUAL_FATAL(mkdir(path, 0555), 0);
        err[0] = '\0';
        CU_ASSERT_PTR_NULL(tfps_tfevents_open(path, err, sizeof(err)));
        ASSERT_ERR_HAS(err, "create");
        ASSERT_ERR_HAS(err, "Permission denied");
    }
    /* a folder path too long for the file name */
    char longdir[4200];
    memset(longdir, 'x', sizeof(longdir) - 1);
    longdir[sizeof(longdir) - 1] = '\0';
    err[0] = '\0';
    CU_ASSERT_PTR_NULL(tfps_tfevents_open(longdir, err, sizeof(err)));
    CU_ASSERT(err[0] != '\0');
}

static void test_scalar_errors(void) {
    char dir[128], err[TFPS_ERR_LEN] = "";
    fresh_dir(dir, sizeof(dir));
    tfps_tfevents *w = tfps_tfevents_open(dir, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(w);
    const long size0 = file_size(tfps_tfevents_path(w));
    const float v[] = {1.0f, 2.0f};
    struct {
        const char *tag, *why;
    } bad[] = {
        {"", "empty tag"},
        {NULL, "empty tag"},
        {"\xff", "UTF-8"},
        {"a\xc0\xaf", "UTF-8"},           /* overlong '/' */
        {"\xed\xa0\x80", "UTF-8"},        /* a surrogate */
        {"\xe2\x82", "UTF-8"},            /* cut short */
        {"\xf4\x90\x80\x80", "UTF-8"},    /* above U+10FFFF */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *tags[] = {"ok", bad[i].tag};
        err[0] = '\0';
        CU_ASSERT_EQUAL(tfps_tfevents_scalars(w, 1, 2, tags, v, err, sizeof(err)), TFPS_ERR);
        ASSERT_ERR_HAS(err, bad[i].why);
        ASSERT_ERR_HAS(err, "scalar 1");
    }
    const char *tags[] = {"ok"};
    err[0] = '\0';
    CU_ASSERT_EQUAL(tfps_tfevents_scalars(w, 1, -1, tags, v, err, sizeof(err)), TFPS_ERR);
    ASSERT_ERR_HAS(err, "-1 scalars");
    err[0] = '\0';
    CU_ASSERT_EQUAL(tfps_tfevents_scalars(w, 1, 1, NULL, v, err, sizeof(err)), TFPS_ERR);
    ASSERT_ERR_HAS(err, "no tags or values");
    err[0] = '\0';
    CU_ASSERT_EQUAL(tfps_tfevents_scalars(NULL, 1, 1, tags, v, err, sizeof(err)), TFPS_ERR);
    ASSERT_ERR_HAS(err, "no writer");
    CU_ASSERT_EQUAL(file_size(tfps_tfevents_path(w)), size0);   /* nothing written */
    tfps_tfevents_close(w);
}

/* A write cut short by the file size limit: the partial record is removed,
 * the error names the file, and the next event is written whole. */
static void test_write_failure(void) {
    char dir[128], err[TFPS_ERR_LEN] = "";
    fresh_dir(dir, sizeof(dir));
    tfps_tfevents *w = tfps_tfevents_open(dir, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(w);
    const char *path = tfps_tfevents_path(w);
    const long size0 = file_size(path);
    struct rlimit old;
    CU_ASSERT_EQUAL_FATAL(getrlimit(RLIMIT_FSIZE, &old), 0);
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    struct rlimit lim = old;
    lim.rlim_cur = (rlim_t)size0 + 10;   /* room for part of the header only */
    CU_ASSERT_EQUAL_FATAL(setrlimit(RLIMIT_FSIZE, &lim), 0);
    const char *tags[] = {"loss"};
    const float v[] = {0.25f};
    err[0] = '\0';
    const int rc = tfps_tfevents_scalars(w, 5, 1, tags, v, err, sizeof(err));
    const long size1 = file_size(path);
    setrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, prev);
    CU_ASSERT_EQUAL(rc, TFPS_ERR);
    ASSERT_ERR_HAS(err, "write ");
    ASSERT_ERR_HAS(err, path);
    ASSERT_ERR_HAS(err, strerror(EFBIG));
    CU_ASSERT_EQUAL(size1, size0);   /* rolled back */
    CU_ASSERT_EQUAL(tfps_tfevents_scalars(w, 6, 1, tags, v, err, sizeof(err)), TFPS_OK);
    size_t len = 0;
    uint8_t *b = slurp(path, &len);
    CU_ASSERT_EQUAL(walk(b, len, -1, NULL, NULL), 2);
    free(b);
    tfps_tfevents_close(w);
}

/* Writers opened in the same second: <name>, <name>.1, <name>.2, each a whole file. */
static void test_same_second(void) {
    char err[TFPS_ERR_LEN] = "";
    for (int attempt = 0; attempt < 5; attempt++) {
        char dir[128];
        fresh_dir(dir, sizeof(dir));
        tfps_tfevents *w[3];
        for (int i = 0; i < 3; i++) {
            w[i] = tfps_tfevents_open(dir, err, sizeof(err));
            CU_ASSERT_PTR_NOT_NULL_FATAL(w[i]);
        }
        const char *p0 = tfps_tfevents_path(w[0]);
        const size_t n0 = strlen(p0);
        const int same = strncmp(tfps_tfevents_path(w[2]), p0, n0) == 0;   /* the third is p0 + suffix */
        if (same) {
            char want[300];
            snprintf(want, sizeof(want), "%s.1", p0);
            CU_ASSERT_STRING_EQUAL(tfps_tfevents_path(w[1]), want);
            snprintf(want, sizeof(want), "%s.2", p0);
            CU_ASSERT_STRING_EQUAL(tfps_tfevents_path(w[2]), want);
        }
        for (int i = 0; i < 3; i++) {
            const char *tags[] = {"x"};
            const float v[] = {(float)i};
            CU_ASSERT_EQUAL(tfps_tfevents_scalars(w[i], i, 1, tags, v, err, sizeof(err)), TFPS_OK);
        }
        for (int i = 0; i < 3; i++) {
            size_t len = 0;
            uint8_t *b = slurp(tfps_tfevents_path(w[i]), &len);
            CU_ASSERT_EQUAL(walk(b, len, -1, NULL, NULL), 2);   /* nobody wrote into another's file */
            free(b);
            tfps_tfevents_close(w[i]);
        }
        if (same) return;
        /* the three opens straddled a second: try again */
    }
    CU_FAIL("three writers never opened within one second in 5 attempts");
}

int main(void) {
    if (CU_initialize_registry() != CUE_SUCCESS) return CU_get_error();
    CU_pSuite s = CU_add_suite("tfevents", suite_init, suite_clean);
    if (!s) {
        CU_cleanup_registry();
        return CU_get_error();
    }
    const struct {
        const char *name;
        CU_TestFunc fn;
    } tests[] = {
        {"crc32c and the mask: check values", test_crc},
        {"file name, first record and an event byte for byte", test_file_and_bytes},
        {"open errors: the folder cannot be made", test_open_errors},
        {"scalar errors: bad tags and counts write nothing", test_scalar_errors},
        {"a failed write is rolled back", test_write_failure},
        {"writers opened in the same second: .1, .2", test_same_second},
    };
    for (size_t i = 0; i < sizeof(tests) / sizeof(tests[0]); i++) {
        if (!CU_add_test(s, tests[i].name, tests[i].fn)) {
            CU_cleanup_registry();
            return CU_get_error();
        }
    }
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    int failed = (int)(CU_get_number_of_tests_failed() + CU_get_number_of_suites_failed());
    CU_cleanup_registry();
    return failed;
}
