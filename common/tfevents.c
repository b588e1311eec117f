/* tfevents.c -- TensorBoard event files (see tfevents.h). With wire.c, the
 * only code that calls protobuf-c: this one for proto/tfevents.proto. */
#define _POSIX_C_SOURCE 200809L
#include "tfevents.h"
#include "tfps.h"
#include "tfevents.pb-c.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "record headers are written with a little-endian host's bytes");

#define FILE_VERSION "brain.Event:2"
#define PATH_LEN 4096
#define MAX_SUFFIX 999        /* .1 ... .999 after the plain name */
#define MAX_SCALARS (1 << 20) /* per event: far beyond any use, well inside size_t arithmetic */
#define HOST_LEN 256

struct tfps_tfevents {
    int fd;
    uint64_t size;       /* bytes of complete records: where the next one goes */
    uint8_t *buf;        /* the record being written, reused */
    size_t cap;
    char path[PATH_LEN];
};

uint32_t tfps_tfevents_mask_crc(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }

uint32_t tfps_tfevents_unmask_crc(uint32_t masked) {
    const uint32_t rot = masked - 0xa282ead8u;
    return (rot >> 17) | (rot << 15);
}

const char *tfps_tfevents_path(const tfps_tfevents *w) { return w->path; }

static double wall_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)(ts.tv_nsec / 1000) * 1e-6;   /* microseconds, as TensorFlow */
}

/* 1 when s is well-formed UTF-8 (no overlong forms, no surrogates, <= U+10FFFF). */
static int utf8_valid(const char *s) {
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        unsigned c = *p;
        int more;
        unsigned min;
        if (c < 0x80) { p++; continue; }
        if (c >= 0xC2 && c <= 0xDF) { more = 1; min = 0x80; c &= 0x1F; }
        else if (c >= 0xE0 && c <= 0xEF) { more = 2; min = 0x800; c &= 0x0F; }
        else if (c >= 0xF0 && c <= 0xF4) { more = 3; min = 0x10000; c &= 0x07; }
        else return 0;
        p++;
        for (int k = 0; k < more; k++, p++) {
            if ((*p & 0xC0) != 0x80) return 0;   /* the terminating NUL fails here too */
            c = (c << 6) | (*p & 0x3F);
        }
        if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return 0;
    }
    return 1;
}

/* pwrite(2) of all n bytes at off; 0, or -1 with errno. */
static int pwrite_all(int fd, const uint8_t *p, size_t n, uint64_t off) {
    while (n > 0) {
        ssize_t k = pwrite(fd, p, n, (off_t)off);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) {
            if (k == 0) errno = EIO;   /* no progress: never loop on it */
            return -1;
        }
        p += k;
        n -= (size_t)k;
        off += (uint64_t)k;
    }
    return 0;
}

/* Frames the packed Event and writes the record at w->size. */
static int write_event(tfps_tfevents *w, const Tfps__Tfevents__Event *ev, char *err, size_t errlen) {
    const size_t len = tfps__tfevents__event__get_packed_size(ev);
    const size_t need = 12 + len + 4;
    if (need > w->cap) {
        uint8_t *b = realloc(w->buf, need);
        if (!b) return tfps_seterr(err, errlen, "%s: out of memory for a record of %zu bytes", w->path, need);
        w->buf = b;
        w->cap = need;
    }
    uint8_t *b = w->buf;
    const uint64_t len64 = len;
    memcpy(b, &len64, 8);
    const uint32_t hcrc = tfps_tfevents_mask_crc(tfps_crc32c(0, b, 8));
    memcpy(b + 8, &hcrc, 4);
    const size_t packed = tfps__tfevents__event__pack(ev, b + 12);
    if (packed != len) return tfps_seterr(err, errlen, "%s: event packed to %zu bytes, expected %zu", w->path, packed, len);
    const uint32_t dcrc = tfps_tfevents_mask_crc(tfps_crc32c(0, b + 12, len));
    memcpy(b + 12 + len, &dcrc, 4);
    if (pwrite_all(w->fd, b, need, w->size) != 0) {
        const int e = errno;
        /* Whatever part of the record reached the file goes: never a torn record before the next one. */
        if (ftruncate(w->fd, (off_t)w->size) != 0)
            return tfps_seterr(err, errlen, "write %s: %s (and truncating the partial record: %s)", w->path,
                               strerror(e), strerror(errno));
        return tfps_seterr(err, errlen, "write %s: %s", w->path, strerror(e));
    }
    w->size += need;
    return TFPS_OK;
}

tfps_tfevents *tfps_tfevents_open(const char *dir, char *err, size_t errlen) {
    if (!dir || !*dir) {
        tfps_seterr(err, errlen, "TensorBoard event file: no folder given");
        return NULL;
    }
    if (tfps_mkdirs(dir, err, errlen) != TFPS_OK) return NULL;
    char host[HOST_LEN];
    if (gethostname(host, sizeof(host)) != 0 || !host[0]) snprintf(host, sizeof(host), "localhost");
    host[sizeof(host) - 1] = '\0';
    for (char *c = host; *c; c++)
        if (*c == '/') *c = '_';
    tfps_tfevents *w = calloc(1, sizeof(*w));
    if (!w) {
        tfps_seterr(err, errlen, "TensorBoard event file in %s: out of memory", dir);
        return NULL;
    }
    w->fd = -1;
    const double now = wall_now();
    const long long secs = (long long)now;
    for (int k = 0; k <= MAX_SUFFIX && w->fd < 0; k++) {
        char suffix[16] = "";
        if (k > 0) snprintf(suffix, sizeof(suffix), ".%d", k);
        int m = snprintf(w->path, sizeof(w->path), "%s/events.out.tfevents.%010lld.%s%s", dir, secs, host, suffix);
        if (m < 0 || (size_t)m >= sizeof(w->path)) {
            tfps_seterr(err, errlen, "TensorBoard event file in %.64s...: path too long (at most %d bytes)", dir,
                        PATH_LEN - 1);
            free(w);
            return NULL;
        }
        w->fd = open(w->path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (w->fd < 0 && errno != EEXIST) {
            tfps_seterr(err, errlen, "create %s: %s", w->path, strerror(errno));
            free(w);
            return NULL;
        }
    }
    if (w->fd < 0) {
        tfps_seterr(err, errlen, "create %s: every name up to suffix .%d exists", w->path, MAX_SUFFIX);
        free(w);
        return NULL;
    }
    Tfps__Tfevents__Event ev = TFPS__TFEVENTS__EVENT__INIT;
    ev.wall_time = now;
    ev.what_case = TFPS__TFEVENTS__EVENT__WHAT_FILE_VERSION;
    ev.file_version = (char *)FILE_VERSION;
    if (write_event(w, &ev, err, errlen) != TFPS_OK) {
        unlink(w->path);
        tfps_tfevents_close(w);
        return NULL;
    }
    return w;
}

int tfps_tfevents_scalars(tfps_tfevents *w, int64_t step, int n, const char *const *tags, const float *values,
                          char *err, size_t errlen) {
    if (!w) return tfps_seterr(err, errlen, "TensorBoard event file: no writer");
    if (n < 0 || n > MAX_SCALARS)
        return tfps_seterr(err, errlen, "%s: %d scalars in one event: expected 0..%d", w->path, n, MAX_SCALARS);
    if (n > 0 && (!tags || !values)) return tfps_seterr(err, errlen, "%s: %d scalars but no tags or values", w->path, n);
    for (int i = 0; i < n; i++) {
        if (!tags[i] || !tags[i][0])
            return tfps_seterr(err, errlen, "%s: scalar %d at step %" PRId64 ": empty tag", w->path, i, step);
        if (!utf8_valid(tags[i]))
            return tfps_seterr(err, errlen, "%s: scalar %d at step %" PRId64 ": tag is not valid UTF-8", w->path, i,
                               step);
    }
    Tfps__Tfevents__Summary__Value *vals = n ? calloc((size_t)n, sizeof(*vals)) : NULL;
    Tfps__Tfevents__Summary__Value **ptrs = n ? calloc((size_t)n, sizeof(*ptrs)) : NULL;
    if (n && (!vals || !ptrs)) {
        free(vals);
        free(ptrs);
        return tfps_seterr(err, errlen, "%s: out of memory for %d scalars", w->path, n);
    }
    for (int i = 0; i < n; i++) {
        const Tfps__Tfevents__Summary__Value init = TFPS__TFEVENTS__SUMMARY__VALUE__INIT;
        vals[i] = init;
        vals[i].tag = (char *)tags[i];
        /* a oneof member: written even when 0.0 (see tfevents.proto) */
        vals[i].value_case = TFPS__TFEVENTS__SUMMARY__VALUE__VALUE_SIMPLE_VALUE;
        vals[i].simple_value = values[i];
        ptrs[i] = &vals[i];
    }
    Tfps__Tfevents__Summary sum = TFPS__TFEVENTS__SUMMARY__INIT;
    sum.n_value = (size_t)n;
    sum.value = ptrs;
    Tfps__Tfevents__Event ev = TFPS__TFEVENTS__EVENT__INIT;
    ev.wall_time = wall_now();
    ev.step = step;
    ev.what_case = TFPS__TFEVENTS__EVENT__WHAT_SUMMARY;
    ev.summary = &sum;
    const int rc = write_event(w, &ev, err, errlen);
    free(vals);
    free(ptrs);
    return rc;
}

void tfps_tfevents_close(tfps_tfevents *w) {
    if (!w) return;
    if (w->fd >= 0) close(w->fd);
    free(w->buf);
    free(w);
}
