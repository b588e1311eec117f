/* util.c -- tiny helpers shared by every module (see tfps.h). */
#define _POSIX_C_SOURCE 200809L
#include "tfps.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int tfps_seterr(char *err, size_t errlen, const char *fmt, ...) {
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return TFPS_ERR;
}

int tfps_random_bytes(void *buf, size_t n) {
    unsigned char *p = buf;
    size_t got = 0;
    while (got < n) {
        ssize_t r = getrandom(p + got, n - got, 0);
        if (r > 0) got += (size_t)r;
        else if (r < 0 && errno != EINTR) break;
    }
    if (got == n) return TFPS_OK;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return TFPS_ERR;
    got = 0;
    while (got < n) {
        ssize_t r = read(fd, p + got, n - got);
        if (r > 0) got += (size_t)r;
        else if (r == 0 || errno != EINTR) break;
    }
    close(fd);
    return got == n ? TFPS_OK : TFPS_ERR;
}

/* Longest path these helpers build (the kernel's PATH_MAX). */
#define PATH_LEN 4096

int tfps_fsync_dir(const char *dir, char *err, size_t errlen) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return tfps_seterr(err, errlen, "open directory %s: %s", dir, strerror(errno));
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    /* Filesystems that cannot sync a directory say EINVAL: nothing more can be done there. */
    if (rc != 0 && e != EINVAL) return tfps_seterr(err, errlen, "fsync directory %s: %s", dir, strerror(e));
    return TFPS_OK;
}

int tfps_fsync_parent(const char *path, char *err, size_t errlen) {
    char dir[PATH_LEN];
    size_t n = strlen(path);
    if (n >= sizeof(dir))
        return tfps_seterr(err, errlen, "fsync: path of %zu bytes is too long (at most %d)", n, PATH_LEN - 1);
    memcpy(dir, path, n + 1);
    while (n > 1 && dir[n - 1] == '/') dir[--n] = '\0';   /* "a/b/" names b */
    char *slash = strrchr(dir, '/');
    if (!slash) return tfps_fsync_dir(".", err, errlen);
    while (slash > dir && slash[-1] == '/') slash--;
    slash[slash == dir] = '\0';   /* "/a" -> "/", "a/b" -> "a" */
    return tfps_fsync_dir(dir, err, errlen);
}

int tfps_mkdirs(const char *path, char *err, size_t errlen) {
    char buf[PATH_LEN];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof(buf))
        return tfps_seterr(err, errlen, "mkdir: path of %zu bytes: expected 1..%d", n, PATH_LEN - 1);
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != '\0') continue;
        char c = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, 0755) == 0) {
            /* A new directory's name is durable only once its parent is synced. */
            if (tfps_fsync_parent(buf, err, errlen) != TFPS_OK) return TFPS_ERR;
        } else if (errno != EEXIST) {
            return tfps_seterr(err, errlen, "mkdir %s: %s", buf, strerror(errno));
        }
        struct stat st;
        if (stat(buf, &st) != 0 || !S_ISDIR(st.st_mode))
            return tfps_seterr(err, errlen, "mkdir %s: exists and is not a directory", buf);
        buf[i] = c;
    }
    return TFPS_OK;
}

/* write(2) until done; 0, or -1 with errno. */
static int write_all(int fd, const void *data, size_t len) {
    const char *p = data;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            if (w == 0) errno = EIO;   /* no progress: never loop on it */
            return -1;
        }
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

int tfps_write_file_atomic(const char *path, const void *data, size_t len, char *err, size_t errlen) {
    char tmp[PATH_LEN];
    /* The pid keeps two processes writing the same file off each other's temp file. */
    int k = snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid());
    if (k < 0 || (size_t)k >= sizeof(tmp))
        return tfps_seterr(err, errlen, "write %.64s...: path of %zu bytes is too long (its temp name must fit %d)",
                           path, strlen(path), PATH_LEN - 1);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return tfps_seterr(err, errlen, "open %s: %s", tmp, strerror(errno));
    const char *failed = NULL;
    if (write_all(fd, data, len) != 0) failed = "write";
    else if (fsync(fd) != 0) failed = "fsync";
    int e = errno;
    if (close(fd) != 0 && !failed) {   /* the fd is gone even when close fails: never closed twice */
        failed = "close";
        e = errno;
    }
    if (!failed && rename(tmp, path) != 0) {
        e = errno;
        unlink(tmp);
        return tfps_seterr(err, errlen, "rename %s -> %s: %s", tmp, path, strerror(e));
    }
    if (failed) {
        unlink(tmp);
        return tfps_seterr(err, errlen, "%s %s: %s", failed, tmp, strerror(e));
    }
    return tfps_fsync_parent(path, err, errlen);   /* makes the rename itself durable */
}

const char *tfps_fmt_double(char *buf, size_t n, double v) {
    if (v > -1e15 && v < 1e15 && v == (double)(long long)v) {   // whole numbers as such: 600, not 6e+02
        snprintf(buf, n, "%.0f", v);
        return buf;
    }
    for (int p = 1; p <= 17; p++) {
        snprintf(buf, n, "%.*g", p, v);
        if (strtod(buf, NULL) == v) break;   // NaN never compares equal: it ends at 17 digits as "nan"
    }
    return buf;
}

const char *tfps_fmt_float(char *buf, size_t n, float v) {
    if (v > -1e7f && v < 1e7f && v == (float)(long long)v) {   // whole numbers as such (exact below 2^24)
        snprintf(buf, n, "%.0f", (double)v);
        return buf;
    }
    for (int p = 1; p <= 9; p++) {
        snprintf(buf, n, "%.*g", p, (double)v);
        if ((float)strtod(buf, NULL) == v) break;
    }
    return buf;
}

double tfps_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

void tfps_sleep(double s) {
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

/* ---- CRC-32C: reflected Castagnoli polynomial, one table lookup per byte ---- */

static uint32_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1)));
        crc_table[i] = c;
    }
}

uint32_t tfps_crc32c(uint32_t crc, const void *p, size_t n) {
    pthread_once(&crc_once, crc_init);
    const uint8_t *b = p;
    crc = ~crc;
    while (n--) crc = crc_table[(crc ^ *b++) & 0xff] ^ (crc >> 8);
    return ~crc;
}
