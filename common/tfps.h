/* tfps.h -- names every module shares: version, error convention, OK/ERR.
 *
 * Error convention (redis's anet style): a fallible call returns TFPS_OK or
 * TFPS_ERR and, on error, writes one human-readable line (no trailing newline)
 * into the caller's buffer `char err[TFPS_ERR_LEN]`. On error the call changed
 * nothing the caller can see, unless its comment says otherwise. */
#ifndef TFPS_H
#define TFPS_H

#include <stddef.h>
#include <stdint.h>

/* TFPS_VERSION comes from CMake's project(tfps VERSION ...), the
 * one source of truth, as a compile definition of tfps_common. */
#ifndef TFPS_VERSION
#error "TFPS_VERSION is undefined: build with CMake, or link the target to tfps_common"
#endif
#define TFPS_OK 0
#define TFPS_ERR -1
#define TFPS_ERR_LEN 512

/* Exit codes of the daemons: 2 is a user mistake (config, flags, data, network). */
#define TFPS_EXIT_OK 0
#define TFPS_EXIT_FAIL 1
#define TFPS_EXIT_USAGE 2

/* snprintf into err when err is not NULL; returns TFPS_ERR so callers can
 * `return tfps_seterr(err, errlen, "...", ...)`. */
int tfps_seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* mkdir -p: creates path and its missing parents (mode 0755), each new
 * directory fsynced into its parent. Paths are at most 4095 bytes. */
int tfps_mkdirs(const char *path, char *err, size_t errlen);
/* Writes data to path via "<path>.tmp.<pid>", fsync, rename and an fsync of
 * the directory, so a crash leaves the old file or the new one, never half of
 * one, and a successful return means the new one survives a crash. On error
 * the temp file is gone and path holds the old file (or, when only the last
 * directory fsync failed, the new one, not yet durable). */
int tfps_write_file_atomic(const char *path, const void *data, size_t len, char *err, size_t errlen);
/* fsync of a directory, which makes the names created, renamed or removed in
 * it durable (a file's own fsync does not cover its name). */
int tfps_fsync_dir(const char *dir, char *err, size_t errlen);
/* tfps_fsync_dir of the directory that holds path ("." for a bare name). */
int tfps_fsync_parent(const char *path, char *err, size_t errlen);
/* The shortest "%g" text of v that reads back (strtod) as exactly v: at
 * most 17 significant digits for a double, 9 for a float. Two different
 * values never print alike (a message comparing 0.1 with 0.10000000000000002
 * shows the difference) and round values stay short ("0.1", "1e-07").
 * buf of TFPS_NUM_LEN bytes; returns buf. */
#define TFPS_NUM_LEN 32
const char *tfps_fmt_double(char *buf, size_t n, double v);
const char *tfps_fmt_float(char *buf, size_t n, float v);
/* Monotonic seconds. */
/* n bytes from the kernel's random source (getrandom, else /dev/urandom):
 * session tokens. TFPS_ERR only if neither works. */
int tfps_random_bytes(void *buf, size_t n);
double tfps_now(void);
/* Sleeps s seconds (s >= 0); a signal may cut it short. */
void tfps_sleep(double s);
/* CRC-32C (Castagnoli, reflected polynomial 0x82F63B78; not zlib's CRC-32),
 * as TFRecord and TensorBoard event files use it and checkpoints (ckpt.h):
 * crc = tfps_crc32c(0, p, n), and chained: tfps_crc32c(crc, more, m).
 * Check value: tfps_crc32c(0, "123456789", 9) == 0xE3069283. */
uint32_t tfps_crc32c(uint32_t crc, const void *p, size_t n);

#endif
