/* ckpt.c -- see ckpt.h. */
#define _POSIX_C_SOURCE 200809L
#include "ckpt.h"
#include "log.h"
#include "shard.h"
#include "tfps.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "checkpoints are written with a little-endian host's bytes");
_Static_assert(sizeof(float) == 4, "checkpoints hold 4-byte IEEE fp32 floats");

/* Byte offsets of the shard header's fields (see ckpt.h). */
enum {
    H_MAGIC = 0, H_FORMAT = 8, H_IN = 12, H_H1 = 16, H_H2 = 20, H_OUT = 24, H_LAYOUT_DIGEST = 28,
    H_NUM_PS = 36, H_STRATEGY = 40, H_PLAN_DIGEST = 44, H_PS_INDEX = 52, H_STEP = 56, H_VERSION = 64,
    H_UPDATES = 72, H_OPT_KIND = 80, H_OPT_DIGEST = 84, H_OPT_SLOTS = 92, H_NRANGES = 96, HEADER = 100
};
#define MAGIC "TFPSCKPT"
#define FORMAT 1
#define RANGE_BYTES 16
#define PATH_LEN 4096
#define MANIFEST_MAX (1u << 20)   /* TFPS_MAX_PS lines are ~60 KiB; more is not a MANIFEST */

static void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static uint32_t get32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t get64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

/* ---- paths and the step directories under dir ---- */

int tfps_ckpt_step_dir(const char *dir, uint64_t step, char *out, size_t n, char *err, size_t errlen) {
    int k = snprintf(out, n, "%s/step-%" PRIu64, dir, step);
    if (k < 0 || (size_t)k >= n)
        return tfps_seterr(err, errlen, "checkpoint directory %.64s...: path of %zu bytes is too long (at most %zu)",
                           dir, strlen(dir), n > 27 ? n - 27 : 0);
    return TFPS_OK;
}

/* "step-<N>" as tfps_ckpt_step_dir writes it (decimal, no leading zero, no
 * overflow) into *step: 1, else 0. */
static int parse_step_name(const char *name, uint64_t *step) {
    if (strncmp(name, "step-", 5) != 0) return 0;
    const char *p = name + 5;
    uint64_t v = 0;
    if (*p < '0' || *p > '9' || (p[0] == '0' && p[1] != '\0')) return 0;
    for (; *p; p++) {
        if (*p < '0' || *p > '9' || v > (UINT64_MAX - 9) / 10) return 0;
        v = v * 10 + (uint64_t)(*p - '0');
    }
    *step = v;
    return 1;
}

static int cmp_desc(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x < y) - (x > y);
}

/* The N of every step-N under dir, newest first, into a malloc'd *steps.
 * A missing dir has none. */
static int list_steps(const char *dir, uint64_t **steps, int *n, char *err, size_t errlen) {
    *steps = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d) {
        if (errno == ENOENT) return TFPS_OK;
        return tfps_seterr(err, errlen, "checkpoint directory %s: %s", dir, strerror(errno));
    }
    int cap = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        uint64_t step;
        if (!parse_step_name(e->d_name, &step)) continue;
        if (*n == cap) {
            int ncap = cap ? 2 * cap : 16;
            uint64_t *s = realloc(*steps, (size_t)ncap * sizeof(*s));
            if (!s) {
                closedir(d);
                free(*steps);
                *steps = NULL;
                *n = 0;
                return tfps_seterr(err, errlen, "checkpoint directory %s: out of memory", dir);
            }
            *steps = s;
            cap = ncap;
        }
        (*steps)[(*n)++] = step;
    }
    closedir(d);
    if (*n > 1) qsort(*steps, (size_t)*n, sizeof(**steps), cmp_desc);
    return TFPS_OK;
}

int tfps_ckpt_has_manifest(const char *dir, uint64_t step) {
    char sd[PATH_LEN], path[PATH_LEN + 16];
    if (tfps_ckpt_step_dir(dir, step, sd, sizeof(sd), NULL, 0) != TFPS_OK) return 0;
    snprintf(path, sizeof(path), "%s/MANIFEST", sd);
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* ---- writing ---- */

int tfps_ckpt_write_shard(const char *stepdir, const tfps_ckpt_shard *s, uint64_t *bytes, uint32_t *crc, char *err,
                          size_t errlen) {
    const tfps_layout *l = s->layout;
    assert(s->num_ps >= 1 && s->num_ps <= TFPS_MAX_PS && s->ps_index >= 0 && s->ps_index < s->num_ps);
    assert(s->nslots >= 0 && s->nslots <= TFPS_OPTIM_MAX_SLOTS && s->nranges >= 0);
    char path[PATH_LEN];
    int k = snprintf(path, sizeof(path), "%s/ps-%d.ckpt", stepdir, s->ps_index);
    if (k < 0 || (size_t)k >= sizeof(path))
        return tfps_seterr(err, errlen, "checkpoint %.64s...: path too long (at most %d bytes)", stepdir, PATH_LEN - 1);
    size_t n = 0;
    for (int r = 0; r < s->nranges; r++) {
        const tfps_ckpt_range *g = &s->ranges[r];
        assert(g->begin < g->end && g->end <= l->total && (r == 0 || g->begin >= s->ranges[r - 1].end));
        n += (size_t)(g->end - g->begin);
    }
    const size_t len = HEADER + (size_t)s->nranges * RANGE_BYTES + n * 4 * (size_t)(1 + s->nslots) + 4;
    uint8_t *buf = malloc(len);
    if (!buf) return tfps_seterr(err, errlen, "checkpoint %s: out of memory for %zu bytes", path, len);
    memcpy(buf + H_MAGIC, MAGIC, 8);
    put32(buf + H_FORMAT, FORMAT);
    put32(buf + H_IN, (uint32_t)l->in);
    put32(buf + H_H1, (uint32_t)l->h1);
    put32(buf + H_H2, (uint32_t)l->h2);
    put32(buf + H_OUT, (uint32_t)l->out);
    put64(buf + H_LAYOUT_DIGEST, tfps_layout_digest(l));
    put32(buf + H_NUM_PS, (uint32_t)s->num_ps);
    put32(buf + H_STRATEGY, (uint32_t)s->strategy);
    put64(buf + H_PLAN_DIGEST, s->plan_digest);
    put32(buf + H_PS_INDEX, (uint32_t)s->ps_index);
    put64(buf + H_STEP, s->step);
    put64(buf + H_VERSION, s->version);
    put64(buf + H_UPDATES, s->updates);
    put32(buf + H_OPT_KIND, (uint32_t)s->optim_kind);
    put64(buf + H_OPT_DIGEST, s->optim_digest);
    put32(buf + H_OPT_SLOTS, (uint32_t)s->nslots);
    put32(buf + H_NRANGES, (uint32_t)s->nranges);
    uint8_t *p = buf + HEADER;
    for (int r = 0; r < s->nranges; r++, p += RANGE_BYTES) {
        put64(p, s->ranges[r].begin);
        put64(p + 8, s->ranges[r].end);
    }
    for (int a = -1; a < s->nslots; a++) {   /* a = -1: the weights */
        const float *src = a < 0 ? s->w : s->slot[a];
        for (int r = 0; r < s->nranges; r++) {
            size_t m = (size_t)(s->ranges[r].end - s->ranges[r].begin) * 4;
            memcpy(p, src + s->ranges[r].at, m);
            p += m;
        }
    }
    const uint32_t c = tfps_crc32c(0, buf, len - 4);
    put32(p, c);
    int rc = tfps_mkdirs(stepdir, err, errlen);
    if (rc == TFPS_OK) rc = tfps_write_file_atomic(path, buf, len, err, errlen);
    free(buf);
    if (rc == TFPS_OK) {
        if (bytes) *bytes = len;
        if (crc) *crc = c;
    }
    return rc;
}

typedef struct {
    uint64_t step, digest;
    uint64_t in, h1, h2, out;
    int num_ps;
    tfps_ckpt_entry *entries;   /* [num_ps]; the writer's order */
} manifest;

/* The MANIFEST's lines before its crc line, malloc'd; *len its length. */
static char *manifest_body(const manifest *m, size_t *len) {
    const size_t cap = 192 + (size_t)m->num_ps * 64;
    char *s = malloc(cap);
    if (!s) return NULL;
    size_t k = (size_t)snprintf(s, cap,
                                "tfps-checkpoint %d\nstep %" PRIu64 "\nlayout %" PRIu64 "-%" PRIu64 "-%" PRIu64
                                "-%" PRIu64 " %016" PRIx64 "\nnum_ps %d\n",
                                FORMAT, m->step, m->in, m->h1, m->h2, m->out, m->digest, m->num_ps);
    for (int i = 0; i < m->num_ps; i++)
        k += (size_t)snprintf(s + k, cap - k, "shard ps-%d.ckpt %" PRIu64 " %08" PRIx32 "\n", m->entries[i].ps_index,
                              m->entries[i].bytes, m->entries[i].crc);
    assert(k < cap);
    *len = k;
    return s;
}

int tfps_ckpt_write_manifest(const char *stepdir, uint64_t step, const tfps_layout *l, int num_ps,
                             const tfps_ckpt_entry *entries, char *err, size_t errlen) {
    if (num_ps < 1 || num_ps > TFPS_MAX_PS)
        return tfps_seterr(err, errlen, "checkpoint %s: %d shards: expected 1..%d", stepdir, num_ps, TFPS_MAX_PS);
    char path[PATH_LEN];
    int k = snprintf(path, sizeof(path), "%s/MANIFEST", stepdir);
    if (k < 0 || (size_t)k >= sizeof(path))
        return tfps_seterr(err, errlen, "checkpoint %.64s...: path too long (at most %d bytes)", stepdir, PATH_LEN - 1);
    /* The MANIFEST vouches for the shards: check each is there, at its size,
     * and listed once, so a complete-looking step is never a broken one. */
    for (int i = 0; i < num_ps; i++) {
        const int ps = entries[i].ps_index;
        if (ps < 0 || ps >= num_ps)
            return tfps_seterr(err, errlen, "checkpoint %s: shard of ps %d: expected 0..%d", stepdir, ps, num_ps - 1);
        for (int j = 0; j < i; j++)
            if (entries[j].ps_index == ps)
                return tfps_seterr(err, errlen, "checkpoint %s: shard of ps %d listed twice", stepdir, ps);
        char sp[PATH_LEN + 32];
        snprintf(sp, sizeof(sp), "%s/ps-%d.ckpt", stepdir, ps);
        struct stat st;
        if (stat(sp, &st) != 0)
            return tfps_seterr(err, errlen, "checkpoint %s: %s (write every shard before the MANIFEST)", sp,
                               strerror(errno));
        if ((uint64_t)st.st_size != entries[i].bytes)
            return tfps_seterr(err, errlen, "checkpoint %s: %jd bytes, the entry says %" PRIu64, sp,
                               (intmax_t)st.st_size, entries[i].bytes);
    }
    manifest m = {step, tfps_layout_digest(l), (uint64_t)l->in, (uint64_t)l->h1, (uint64_t)l->h2, (uint64_t)l->out,
                  num_ps, (tfps_ckpt_entry *)entries};
    size_t blen;
    char *body = manifest_body(&m, &blen);
    if (!body) return tfps_seterr(err, errlen, "checkpoint %s: out of memory", path);
    char *text = realloc(body, blen + 16);
    if (!text) {
        free(body);
        return tfps_seterr(err, errlen, "checkpoint %s: out of memory", path);
    }
    size_t len = blen + (size_t)snprintf(text + blen, 16, "crc %08" PRIx32 "\n", tfps_crc32c(0, text, blen));
    int rc = tfps_write_file_atomic(path, text, len, err, errlen);
    free(text);
    return rc;
}

/* ---- reading: everything is checked before anything is used ---- */

/* What loading a checkpoint gave: usable, refused (why says "<file>: <reason>"),
 * or an error of this process (out of memory) that no older checkpoint cures. */
enum { LOAD_OK, LOAD_REFUSED, LOAD_ERR };

typedef struct {
    uint8_t *buf;          /* the whole file */
    uint64_t plan_digest, version, updates;
    int kind, nslots, nranges;
    size_t n;              /* floats per array: the ranges' lengths summed */
    const uint8_t *data;   /* n weights, then nslots arrays of n */
} shard_file;

typedef struct {
    uint64_t begin, end;
    int ps;      /* the shard that holds it */
    size_t at;   /* element offset of begin in that shard's arrays */
} piece;

typedef struct {
    manifest m;
    tfps_layout layout;
    int kind, nslots;      /* every shard's */
    shard_file *shards;    /* [m.num_ps], by ps index */
    piece *pieces;         /* every shard's ranges, sorted: they cover [0, total) once */
    int npieces;
} ckpt;

static void ckpt_free(ckpt *c) {
    if (c->shards)
        for (int i = 0; i < c->m.num_ps; i++) free(c->shards[i].buf);
    free(c->shards);
    free(c->pieces);
    free(c->m.entries);
    memset(c, 0, sizeof(*c));
}

#define REFUSE(...) (snprintf(why, whylen, __VA_ARGS__), LOAD_REFUSED)

/* Reads <stepdir>/<name> whole into a malloc'd, NUL-terminated *out. expect:
 * the size the file must have, or 0 for any size up to MANIFEST_MAX. */
static int slurp(const char *stepdir, const char *name, uint64_t expect, uint8_t **out, size_t *len, char *why,
                 size_t whylen) {
    char path[PATH_LEN + 32];
    snprintf(path, sizeof(path), "%s/%s", stepdir, name);
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return REFUSE("%s: %s", name, errno == ENOENT ? "missing" : strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return REFUSE("%s: not a regular file", name);
    }
    const uint64_t size = (uint64_t)st.st_size;
    if (expect ? size != expect : size > MANIFEST_MAX) {
        close(fd);
        if (expect)
            return REFUSE("%s: %" PRIu64 " bytes, the MANIFEST says %" PRIu64 " (truncated?)", name, size, expect);
        return REFUSE("%s: %" PRIu64 " bytes, more than a MANIFEST can have", name, size);
    }
    uint8_t *b = malloc((size_t)size + 1);
    if (!b) {
        close(fd);
        snprintf(why, whylen, "%s: out of memory for %" PRIu64 " bytes", path, size);
        return LOAD_ERR;
    }
    size_t got = 0;
    while (got < size) {
        ssize_t r = read(fd, b + got, (size_t)size - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            int e = errno;
            close(fd);
            free(b);
            return REFUSE("%s: %s", name, r == 0 ? "shorter than it was a moment ago" : strerror(e));
        }
        got += (size_t)r;
    }
    close(fd);
    b[size] = '\0';
    *out = b;
    *len = (size_t)size;
    return LOAD_OK;
}

/* The MANIFEST's parser: each take_* consumes exactly what the writer
 * prints, so only text the writer could have written parses. */
static int take(const char **p, const char *lit) {
    size_t k = strlen(lit);
    if (strncmp(*p, lit, k) != 0) return 0;
    *p += k;
    return 1;
}

static int take_u64(const char **p, uint64_t *v) {
    const char *s = *p;
    if (*s < '0' || *s > '9' || (s[0] == '0' && s[1] >= '0' && s[1] <= '9')) return 0;
    uint64_t x = 0;
    for (; *s >= '0' && *s <= '9'; s++) {
        if (x > (UINT64_MAX - 9) / 10) return 0;
        x = x * 10 + (uint64_t)(*s - '0');
    }
    *v = x;
    *p = s;
    return 1;
}

static int take_hex(const char **p, int digits, uint64_t *v) {
    uint64_t x = 0;
    for (int i = 0; i < digits; i++) {
        char c = (*p)[i];
        if (c >= '0' && c <= '9') x = x << 4 | (uint64_t)(c - '0');
        else if (c >= 'a' && c <= 'f') x = x << 4 | (uint64_t)(c - 'a' + 10);
        else return 0;
    }
    *p += digits;
    *v = x;
    return 1;
}

/* text: len bytes, NUL-terminated. Fills *m (m->entries malloc'd). */
static int parse_manifest(const char *text, size_t len, manifest *m, char *why, size_t whylen) {
    if (len == 0 || text[len - 1] != '\n') return REFUSE("MANIFEST: malformed: no final newline");
    size_t body = len - 1;
    while (body > 0 && text[body - 1] != '\n') body--;
    const char *p = text + body;
    uint64_t crc, v;
    if (!take(&p, "crc ") || !take_hex(&p, 8, &crc) || !take(&p, "\n") || p != text + len)
        return REFUSE("MANIFEST: malformed: its last line is not \"crc <8 hex digits>\"");
    const uint32_t got = tfps_crc32c(0, text, body);
    if (got != crc)
        return REFUSE("MANIFEST: CRC mismatch: its crc line says %08" PRIx64 ", its lines give %08" PRIx32, crc, got);
    p = text;
    if (!take(&p, "tfps-checkpoint ") || !take_u64(&p, &v) || !take(&p, "\n"))
        return REFUSE("MANIFEST: malformed: no \"tfps-checkpoint <format>\" line");
    if (v != FORMAT) return REFUSE("MANIFEST: format %" PRIu64 ", expected %d", v, FORMAT);
    if (!take(&p, "step ") || !take_u64(&p, &m->step) || !take(&p, "\nlayout ") || !take_u64(&p, &m->in) ||
        !take(&p, "-") || !take_u64(&p, &m->h1) || !take(&p, "-") || !take_u64(&p, &m->h2) || !take(&p, "-") ||
        !take_u64(&p, &m->out) || !take(&p, " ") || !take_hex(&p, 16, &m->digest) || !take(&p, "\nnum_ps ") ||
        !take_u64(&p, &v) || !take(&p, "\n"))
        return REFUSE("MANIFEST: malformed: expected step, layout and num_ps lines");
    if (v < 1 || v > TFPS_MAX_PS) return REFUSE("MANIFEST: num_ps %" PRIu64 ": expected 1..%d", v, TFPS_MAX_PS);
    m->num_ps = (int)v;
    m->entries = calloc((size_t)m->num_ps, sizeof(*m->entries));
    if (!m->entries) {
        snprintf(why, whylen, "MANIFEST: out of memory");
        return LOAD_ERR;
    }
    for (int i = 0; i < m->num_ps; i++) {
        tfps_ckpt_entry *e = &m->entries[i];
        uint64_t c;
        if (!take(&p, "shard ps-") || !take_u64(&p, &v) || !take(&p, ".ckpt ") || !take_u64(&p, &e->bytes) ||
            !take(&p, " ") || !take_hex(&p, 8, &c) || !take(&p, "\n"))
            return REFUSE("MANIFEST: malformed: shard line %d of %d", i + 1, m->num_ps);
        if (v >= (uint64_t)m->num_ps)
            return REFUSE("MANIFEST: ps-%" PRIu64 ".ckpt in a checkpoint of %d ps", v, m->num_ps);
        e->ps_index = (int)v;
        e->crc = (uint32_t)c;
        for (int j = 0; j < i; j++)
            if (m->entries[j].ps_index == e->ps_index) return REFUSE("MANIFEST: ps-%d.ckpt listed twice", e->ps_index);
    }
    if (p != text + body) return REFUSE("MANIFEST: malformed: more lines than its %d shards", m->num_ps);
    return LOAD_OK;
}

/* Checks the shard file b (len bytes, listed as entry e) against the
 * checkpoint's MANIFEST and layout, and fills *s. */
static int parse_shard(const ckpt *c, const tfps_ckpt_entry *e, uint8_t *b, size_t len, shard_file *s, char *why,
                       size_t whylen) {
    char name[32];
    snprintf(name, sizeof(name), "ps-%d.ckpt", e->ps_index);
    if (len < HEADER + 4) return REFUSE("%s: %zu bytes, shorter than its header", name, len);
    const uint32_t stored = get32(b + len - 4), got = tfps_crc32c(0, b, len - 4);
    if (stored != got)
        return REFUSE("%s: CRC mismatch: the file says %08" PRIx32 ", its bytes give %08" PRIx32 " (corrupt)", name,
                      stored, got);
    if (stored != e->crc)
        return REFUSE("%s: CRC %08" PRIx32 ", the MANIFEST says %08" PRIx32 " (a shard of another write)", name, stored,
                      e->crc);
    if (memcmp(b + H_MAGIC, MAGIC, 8) != 0) return REFUSE("%s: bad magic: not a tfps checkpoint shard", name);
    if (get32(b + H_FORMAT) != FORMAT)
        return REFUSE("%s: format %" PRIu32 ", expected %d", name, get32(b + H_FORMAT), FORMAT);
    const tfps_layout *l = &c->layout;
    if (get32(b + H_IN) != (uint32_t)l->in || get32(b + H_H1) != (uint32_t)l->h1 ||
        get32(b + H_H2) != (uint32_t)l->h2 || get32(b + H_OUT) != (uint32_t)l->out ||
        get64(b + H_LAYOUT_DIGEST) != tfps_layout_digest(l))
        return REFUSE("%s: layout %" PRIu32 "-%" PRIu32 "-%" PRIu32 "-%" PRIu32 " (digest %016" PRIx64
                      "), the MANIFEST's is %d-%d-%d-%d",
                      name, get32(b + H_IN), get32(b + H_H1), get32(b + H_H2), get32(b + H_OUT),
                      get64(b + H_LAYOUT_DIGEST), l->in, l->h1, l->h2, l->out);
    if (get32(b + H_NUM_PS) != (uint32_t)c->m.num_ps || get32(b + H_PS_INDEX) != (uint32_t)e->ps_index)
        return REFUSE("%s: ps %" PRIu32 " of %" PRIu32 ", the MANIFEST lists it as ps %d of %d", name,
                      get32(b + H_PS_INDEX), get32(b + H_NUM_PS), e->ps_index, c->m.num_ps);
    if (get64(b + H_STEP) != c->m.step)
        return REFUSE("%s: step %" PRIu64 ", the MANIFEST's is %" PRIu64, name, get64(b + H_STEP), c->m.step);
    const uint32_t kind = get32(b + H_OPT_KIND), nslots = get32(b + H_OPT_SLOTS);
    tfps_optim o = {.kind = (int)kind};
    if (kind >= TFPS_OPT_COUNT || nslots != (uint32_t)tfps_optim_slots(&o))
        return REFUSE("%s: optimizer %" PRIu32 " with %" PRIu32 " slots: unknown", name, kind, nslots);
    /* Every count is bounded by the file's size before it is used. */
    const uint32_t nranges = get32(b + H_NRANGES);
    if (nranges > (len - HEADER - 4) / RANGE_BYTES)
        return REFUSE("%s: %" PRIu32 " ranges do not fit its %zu bytes", name, nranges, len);
    const uint8_t *r = b + HEADER;
    uint64_t prev = 0, n = 0;
    for (uint32_t i = 0; i < nranges; i++, r += RANGE_BYTES) {
        uint64_t begin = get64(r), end = get64(r + 8);
        if (begin >= end || end > l->total || begin < prev)
            return REFUSE("%s: range %" PRIu32 " [%" PRIu64 ", %" PRIu64 "): expected sorted, non-empty, "
                          "disjoint ranges within [0, %zu)", name, i, begin, end, l->total);
        prev = end;
        n += end - begin;
    }
    const uint64_t want = HEADER + (uint64_t)nranges * RANGE_BYTES + n * 4 * (1 + nslots) + 4;
    if (want != len)
        return REFUSE("%s: %zu bytes, its ranges and %" PRIu32 " slots make %" PRIu64, name, len, nslots, want);
    s->plan_digest = get64(b + H_PLAN_DIGEST);
    s->version = get64(b + H_VERSION);
    s->updates = get64(b + H_UPDATES);
    s->kind = (int)kind;
    s->nslots = (int)nslots;
    s->nranges = (int)nranges;
    s->n = (size_t)n;
    s->data = b + HEADER + (size_t)nranges * RANGE_BYTES;
    return LOAD_OK;
}

static int cmp_piece(const void *a, const void *b) {
    uint64_t x = ((const piece *)a)->begin, y = ((const piece *)b)->begin;
    return (x > y) - (x < y);
}

/* Loads and checks the whole checkpoint in stepdir: its MANIFEST, every
 * shard's size, CRC and header, and that the shards' ranges cover [0, total)
 * exactly once. l: the layout it must have (NULL: the MANIFEST's). step: the
 * N of its directory's name (NULL: not known). */
static int load(const char *stepdir, const tfps_layout *l, const uint64_t *step, ckpt *c, char *why, size_t whylen) {
    memset(c, 0, sizeof(*c));
    uint8_t *text;
    size_t len;
    int rc = slurp(stepdir, "MANIFEST", 0, &text, &len, why, whylen);
    if (rc == LOAD_OK) {
        rc = parse_manifest((const char *)text, len, &c->m, why, whylen);
        free(text);
    }
    if (rc != LOAD_OK) return rc;
    const manifest *m = &c->m;
    if (step && m->step != *step) return REFUSE("MANIFEST: step %" PRIu64 " in step-%" PRIu64, m->step, *step);
    if (l) {
        if (m->in != (uint64_t)l->in || m->h1 != (uint64_t)l->h1 || m->h2 != (uint64_t)l->h2 ||
            m->out != (uint64_t)l->out || m->digest != tfps_layout_digest(l))
            return REFUSE("MANIFEST: layout %" PRIu64 "-%" PRIu64 "-%" PRIu64 "-%" PRIu64 " (digest %016" PRIx64
                          "), expected %d-%d-%d-%d (digest %016" PRIx64 ")",
                          m->in, m->h1, m->h2, m->out, m->digest, l->in, l->h1, l->h2, l->out, tfps_layout_digest(l));
        c->layout = *l;
    } else {
        if (m->in > TFPS_MAX_UNITS || m->h1 > TFPS_MAX_UNITS || m->h2 > TFPS_MAX_UNITS || m->out > TFPS_MAX_UNITS ||
            tfps_layout_init(&c->layout, (int)m->in, (int)m->h1, (int)m->h2, (int)m->out, NULL, 0) != TFPS_OK)
            return REFUSE("MANIFEST: layout %" PRIu64 "-%" PRIu64 "-%" PRIu64 "-%" PRIu64 ": not a valid layout",
                          m->in, m->h1, m->h2, m->out);
        if (m->digest != tfps_layout_digest(&c->layout))
            return REFUSE("MANIFEST: layout digest does not match its widths");
    }
    c->shards = calloc((size_t)m->num_ps, sizeof(*c->shards));
    if (!c->shards) {
        snprintf(why, whylen, "%s: out of memory", stepdir);
        return LOAD_ERR;
    }
    int npieces = 0;
    for (int i = 0; i < m->num_ps; i++) {
        const tfps_ckpt_entry *e = &m->entries[i];
        shard_file *s = &c->shards[e->ps_index];
        char name[32];
        snprintf(name, sizeof(name), "ps-%d.ckpt", e->ps_index);
        if (e->bytes < HEADER + 4)
            return REFUSE("MANIFEST: %s of %" PRIu64 " bytes, shorter than a header", name, e->bytes);
        if ((rc = slurp(stepdir, name, e->bytes, &s->buf, &len, why, whylen)) != LOAD_OK) return rc;
        if ((rc = parse_shard(c, e, s->buf, len, s, why, whylen)) != LOAD_OK) return rc;
        if (i > 0 && s->kind != c->kind)
            return REFUSE("%s: optimizer %s, the other shards' is %s", name, tfps_optim_name(s->kind),
                          tfps_optim_name(c->kind));
        c->kind = s->kind;
        c->nslots = s->nslots;
        npieces += s->nranges;   /* each nranges fits its file, and the files are in memory */
    }
    c->pieces = malloc((size_t)(npieces ? npieces : 1) * sizeof(*c->pieces));
    if (!c->pieces) {
        snprintf(why, whylen, "%s: out of memory", stepdir);
        return LOAD_ERR;
    }
    for (int ps = 0; ps < m->num_ps; ps++) {
        const shard_file *s = &c->shards[ps];
        const uint8_t *r = s->buf + HEADER;
        size_t at = 0;
        for (int i = 0; i < s->nranges; i++, r += RANGE_BYTES) {
            piece *q = &c->pieces[c->npieces++];
            q->begin = get64(r);
            q->end = get64(r + 8);
            q->ps = ps;
            q->at = at;
            at += (size_t)(q->end - q->begin);
        }
    }
    qsort(c->pieces, (size_t)c->npieces, sizeof(*c->pieces), cmp_piece);
    uint64_t next = 0;
    for (int i = 0; i < c->npieces; i++) {
        const piece *q = &c->pieces[i];
        if (q->begin < next)
            return REFUSE("ps-%d.ckpt: range [%" PRIu64 ", %" PRIu64 ") overlaps another shard's", q->ps, q->begin,
                          q->end);
        if (q->begin > next) return REFUSE("shards: no shard holds [%" PRIu64 ", %" PRIu64 ")", next, q->begin);
        next = q->end;
    }
    if (next != c->layout.total) return REFUSE("shards: no shard holds [%" PRIu64 ", %zu)", next, c->layout.total);
    return LOAD_OK;
}

/* Copies flat [begin, end) of array a (0: weights, k: slot k-1) into dst. */
static void copy_range(const ckpt *c, int a, uint64_t begin, uint64_t end, float *dst) {
    int lo = 0, hi = c->npieces - 1;   /* the piece that holds begin: the pieces tile [0, total) */
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (c->pieces[mid].begin <= begin) lo = mid;
        else hi = mid - 1;
    }
    for (int i = lo; begin < end; i++) {
        const piece *q = &c->pieces[i];
        const shard_file *s = &c->shards[q->ps];
        const uint64_t stop = q->end < end ? q->end : end;
        const size_t from = (size_t)a * s->n + q->at + (size_t)(begin - q->begin);
        memcpy(dst, s->data + from * 4, (size_t)(stop - begin) * 4);
        dst += stop - begin;
        begin = stop;
    }
}

int tfps_ckpt_restore(const char *dir, const tfps_layout *l, const tfps_optim *opt, int ps_index,
                      uint64_t plan_digest, const tfps_ckpt_range *want, int nwant, float *w,
                      float *const slot[TFPS_OPTIM_MAX_SLOTS], tfps_ckpt_info *info, char *err, size_t errlen) {
    assert(!slot || opt);
    for (int i = 0; i < nwant; i++)
        if (want[i].begin > want[i].end || want[i].end > l->total)
            return tfps_seterr(err, errlen, "checkpoint restore: range [%" PRIu64 ", %" PRIu64 ") outside [0, %zu)",
                               want[i].begin, want[i].end, l->total);
    char stepdir[sizeof(info->path)];   /* checked once with the longest step name */
    if (tfps_ckpt_step_dir(dir, UINT64_MAX, stepdir, sizeof(stepdir), err, errlen) != TFPS_OK) return TFPS_ERR;
    uint64_t *steps;
    int n;
    // dir may be one step-N folder itself (it has a MANIFEST): that checkpoint alone
    snprintf(stepdir, sizeof(stepdir), "%s/MANIFEST", dir);
    const int direct = access(stepdir, F_OK) == 0;
    if (direct) {
        if (!(steps = malloc(sizeof(*steps)))) return tfps_seterr(err, errlen, "checkpoint restore: out of memory");
        n = 1;
    } else if (list_steps(dir, &steps, &n, err, errlen) != TFPS_OK) {
        return TFPS_ERR;
    }
    int rc = TFPS_CKPT_NONE;
    for (int i = 0; i < n && rc == TFPS_CKPT_NONE; i++) {
        if (direct) snprintf(stepdir, sizeof(stepdir), "%s", dir);
        else tfps_ckpt_step_dir(dir, steps[i], stepdir, sizeof(stepdir), NULL, 0);
        ckpt c;
        char why[TFPS_ERR_LEN];
        int r = load(stepdir, l, direct ? NULL : &steps[i], &c, why, sizeof(why));
        if (r == LOAD_OK && slot && c.kind != opt->kind) {
            snprintf(why, sizeof(why),
                     "ps-0.ckpt: optimizer %s, this run's is %s (only weights restore across optimizers)",
                     tfps_optim_name(c.kind), tfps_optim_name(opt->kind));
            r = LOAD_REFUSED;
        }
        if (r == LOAD_REFUSED) {
            tfps_warn("checkpoint %s: refused: %s; %s", stepdir, why,
                      i + 1 < n ? "trying the previous one" : "no older one");
        } else if (r == LOAD_ERR) {
            rc = tfps_seterr(err, errlen, "checkpoint %s: %s", stepdir, why);
        } else {
            const int ns = slot ? tfps_optim_slots(opt) : 0;
            for (int k = 0; k < nwant; k++) {
                copy_range(&c, 0, want[k].begin, want[k].end, w + want[k].at);
                for (int a = 0; a < ns; a++) copy_range(&c, a + 1, want[k].begin, want[k].end, slot[a] + want[k].at);
            }
            memset(info, 0, sizeof(*info));
            info->step = c.m.step;
            info->version = c.m.step;
            info->num_ps = c.m.num_ps;
            int own = 0;   // the shard this ps wrote under the same plan gives its version and update count
            for (int ps = 0; ps < c.m.num_ps; ps++) {
                const shard_file *s = &c.shards[ps];
                if (ps == ps_index && s->plan_digest == plan_digest) {
                    info->version = s->version;
                    info->updates = s->updates;
                    own = 1;
                }
            }
            for (int ps = 0; ps < c.m.num_ps && !own; ps++)   // another plan: the most any shard had
                if (c.shards[ps].updates > info->updates) info->updates = c.shards[ps].updates;
            snprintf(info->path, sizeof(info->path), "%s", stepdir);
            rc = TFPS_OK;
        }
        ckpt_free(&c);
    }
    free(steps);
    return rc;
}

int tfps_ckpt_verify(const char *stepdir, const tfps_layout *l, char *err, size_t errlen) {
    const char *base = strrchr(stepdir, '/');
    uint64_t step;
    ckpt c;
    int r = load(stepdir, l, parse_step_name(base ? base + 1 : stepdir, &step) ? &step : NULL, &c, err, errlen);
    ckpt_free(&c);
    return r == LOAD_OK ? TFPS_OK : TFPS_ERR;
}

/* stepdir's MANIFEST read and parsed into *m (zeroed first): LOAD_OK (free
 * m->entries), LOAD_REFUSED with why, LOAD_ERR. */
static int read_manifest(const char *stepdir, manifest *m, char *why, size_t whylen) {
    uint8_t *text;
    size_t len;
    memset(m, 0, sizeof(*m));
    int rc = slurp(stepdir, "MANIFEST", 0, &text, &len, why, whylen);
    if (rc != LOAD_OK) return rc;
    rc = parse_manifest((const char *)text, len, m, why, whylen);
    free(text);
    return rc;
}

/* The MANIFEST of stepdir parsed into *l and *step: LOAD_OK, LOAD_REFUSED
 * with why, LOAD_ERR (out of memory). */
static int peek_one(const char *stepdir, tfps_layout *l, uint64_t *step, char *why, size_t whylen) {
    manifest m;
    int rc = read_manifest(stepdir, &m, why, whylen);
    if (rc != LOAD_OK) return rc;
    free(m.entries);
    if (rc != LOAD_OK) return rc;
    tfps_layout got;
    if (m.in > TFPS_MAX_UNITS || m.h1 > TFPS_MAX_UNITS || m.h2 > TFPS_MAX_UNITS || m.out > TFPS_MAX_UNITS ||
        tfps_layout_init(&got, (int)m.in, (int)m.h1, (int)m.h2, (int)m.out, NULL, 0) != TFPS_OK)
        return REFUSE("MANIFEST: layout %" PRIu64 "-%" PRIu64 "-%" PRIu64 "-%" PRIu64 ": not a valid layout", m.in,
                      m.h1, m.h2, m.out);
    if (m.digest != tfps_layout_digest(&got)) return REFUSE("MANIFEST: layout digest does not match its widths");
    *l = got;
    *step = m.step;
    return LOAD_OK;
}

int tfps_ckpt_peek(const char *dir, tfps_layout *l, uint64_t *step, char *stepdir, size_t n, char *err,
                   size_t errlen) {
    char sd[PATH_LEN], why[TFPS_ERR_LEN];
    snprintf(sd, sizeof(sd), "%s/MANIFEST", dir);
    if (access(sd, F_OK) == 0) {   // a step-N folder itself
        snprintf(sd, sizeof(sd), "%s", dir);
        int r = peek_one(sd, l, step, why, sizeof(why));
        if (r == LOAD_OK) {
            snprintf(stepdir, n, "%s", sd);
            return TFPS_OK;
        }
        tfps_seterr(err, errlen, "checkpoint %s: %s", dir, why);
        return r == LOAD_ERR ? TFPS_ERR : TFPS_CKPT_NONE;
    }
    uint64_t *steps;
    int nsteps;
    if (list_steps(dir, &steps, &nsteps, err, errlen) != TFPS_OK) return TFPS_ERR;
    int rc = TFPS_CKPT_NONE;
    tfps_seterr(err, errlen, "%s: " TFPS_CKPT_NO_STEPS, dir);
    for (int i = 0; i < nsteps && rc == TFPS_CKPT_NONE; i++) {
        if (tfps_ckpt_step_dir(dir, steps[i], sd, sizeof(sd), err, errlen) != TFPS_OK) {
            rc = TFPS_ERR;
            break;
        }
        int r = peek_one(sd, l, step, why, sizeof(why));
        if (r == LOAD_OK) {
            snprintf(stepdir, n, "%s", sd);
            rc = TFPS_OK;
        } else if (r == LOAD_ERR) {
            rc = tfps_seterr(err, errlen, "checkpoint %s: %s", sd, why);
        } else if (i == 0) {   // the newest says why there is none
            tfps_seterr(err, errlen, "checkpoint %s: %s", sd, why);
        }
    }
    free(steps);
    return rc;
}

/* Removes a step directory, its MANIFEST first: a crash half way leaves an
 * incomplete checkpoint (skipped, pruned next time), never a corrupt one. */
static int remove_step_dir(const char *path) {
    char m[PATH_LEN + 16];
    snprintf(m, sizeof(m), "%s/MANIFEST", path);
    if (unlink(m) != 0 && errno != ENOENT) {
        tfps_warn("checkpoint prune: remove %s: %s", m, strerror(errno));
        return TFPS_ERR;
    }
    DIR *d = opendir(path);
    if (!d) {
        tfps_warn("checkpoint prune: %s: %s", path, strerror(errno));
        return TFPS_ERR;
    }
    int rc = TFPS_OK;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        if (unlinkat(dirfd(d), e->d_name, 0) != 0) {
            tfps_warn("checkpoint prune: remove %s/%s: %s", path, e->d_name, strerror(errno));
            rc = TFPS_ERR;
        }
    }
    closedir(d);
    if (rc == TFPS_OK && rmdir(path) != 0) {
        tfps_warn("checkpoint prune: remove %s: %s", path, strerror(errno));
        rc = TFPS_ERR;
    }
    return rc;
}

/* Prune's test of completeness, cheap whatever the model's size: a MANIFEST
 * that parses (its CRC line included) for this step, and every shard it
 * lists on disk at its listed size. The shards' CRCs are restore's to check. */
static int complete_enough(const char *stepdir, uint64_t step, const tfps_layout *l, int optim_kind, char *why,
                           size_t whylen) {
    manifest m;
    int rc = read_manifest(stepdir, &m, why, whylen);
    if (rc != LOAD_OK) return rc;
    if (rc == LOAD_OK && m.step != step) rc = REFUSE("MANIFEST: step %" PRIu64 " in step-%" PRIu64, m.step, step);
    if (rc == LOAD_OK && l &&
        (m.in != (uint64_t)l->in || m.h1 != (uint64_t)l->h1 || m.h2 != (uint64_t)l->h2 ||
         m.out != (uint64_t)l->out || m.digest != tfps_layout_digest(l)))
        rc = REFUSE("MANIFEST: another layout");
    if (rc == LOAD_OK && optim_kind >= 0 && m.num_ps > 0) {   // the optimizer, from the first shard's header
        char path[PATH_LEN + 32];
        uint8_t h[HEADER];
        snprintf(path, sizeof(path), "%s/ps-%d.ckpt", stepdir, m.entries[0].ps_index);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        ssize_t got = fd >= 0 ? read(fd, h, sizeof(h)) : -1;
        if (fd >= 0) close(fd);
        if (got != (ssize_t)sizeof(h) || (int)get32(h + H_OPT_KIND) != optim_kind)
            rc = REFUSE("ps-%d.ckpt: another optimizer", m.entries[0].ps_index);
    }
    for (int i = 0; rc == LOAD_OK && i < m.num_ps; i++) {
        char path[PATH_LEN + 32];
        struct stat st;
        snprintf(path, sizeof(path), "%s/ps-%d.ckpt", stepdir, m.entries[i].ps_index);
        if (stat(path, &st) != 0) rc = REFUSE("ps-%d.ckpt: missing", m.entries[i].ps_index);
        else if ((uint64_t)st.st_size != m.entries[i].bytes)
            rc = REFUSE("ps-%d.ckpt: %" PRIu64 " bytes, the MANIFEST says %" PRIu64, m.entries[i].ps_index,
                        (uint64_t)st.st_size, m.entries[i].bytes);
    }
    free(m.entries);
    return rc;
}

int tfps_ckpt_prune(const char *dir, int keep, const tfps_layout *l, int optim_kind) {
    if (keep < 1) keep = 1;   /* the newest complete checkpoint is never removed */
    char err[TFPS_ERR_LEN], stepdir[PATH_LEN];
    uint64_t *steps;
    int n, complete = 0, removed = 0;
    if (list_steps(dir, &steps, &n, err, sizeof(err)) != TFPS_OK) {
        tfps_warn("checkpoint prune: %s", err);
        return 0;
    }
    for (int i = 0; i < n; i++) {
        if (tfps_ckpt_step_dir(dir, steps[i], stepdir, sizeof(stepdir), err, sizeof(err)) != TFPS_OK) break;
        /* Past the keep-th complete one everything goes unread; before it,
         * each is checked by its MANIFEST and shard sizes (complete_enough). */
        if (complete < keep) {
            int r = complete_enough(stepdir, steps[i], l, optim_kind, err, sizeof(err));
            if (r == LOAD_OK) complete++;
            /* Newer than every complete one it may be being written; out of
             * memory says nothing about it. */
            if (r == LOAD_OK || complete == 0 || r == LOAD_ERR) continue;
            tfps_debug("checkpoint prune: %s: incomplete (%s)", stepdir, err);
        }
        if (remove_step_dir(stepdir) == TFPS_OK) removed++;
    }
    free(steps);
    return removed;
}
