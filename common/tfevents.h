/* tfevents.h -- TensorBoard event files (scalars), written as TensorFlow's
 * EventsWriter writes them, so `tensorboard --logdir DIR` shows them live.
 *
 * The file: <dir>/events.out.tfevents.<10-digit unix secs>.<hostname>, a
 * sequence of records (TFRecord framing), each
 *     u64 length (little-endian)
 *     u32 masked CRC-32C of those 8 bytes
 *     length bytes: one Event (proto/tfevents.proto, TensorFlow's numbers)
 *     u32 masked CRC-32C of the data
 * with mask(crc) = ((crc >> 15) | (crc << 17)) + 0xa282ead8 (32-bit). The
 * first record is Event{wall_time, file_version "brain.Event:2"}; each
 * tfps_tfevents_scalars call adds one Event{wall_time, step, summary} whose
 * Summary holds one Value{tag, simple_value} per scalar.
 *
 * Two writers opened in the same second in the same folder (two tasks on one
 * host sharing a logdir, or a restart within the second) never share a file:
 * the file is created exclusively (O_EXCL), and when the name is taken a
 * suffix .1, .2, ... is appended (events.out.tfevents.<secs>.<host>.1) until
 * a free one is found. TensorBoard reads every file whose name contains
 * "tfevents", so each still shows; one task per folder keeps its runs apart.
 *
 * Each record leaves the process in one write(2) once complete (no stdio
 * buffer: a live TensorBoard sees it at once; no fsync: event files are not
 * worth a disk flush per step). A failed write is undone (the file is
 * truncated back to its last complete record), so the file never holds a torn
 * record and later calls may succeed. Hostnames come from gethostname(2); a
 * '/' in one becomes '_'.
 *
 * Only common/tfevents.c packs tfevents.proto (DESIGN.md: the one sibling
 * module of wire.c). A writer is not thread-safe: one per thread, or lock. */
#ifndef TFPS_TFEVENTS_H
#define TFPS_TFEVENTS_H

#include <stddef.h>
#include <stdint.h>

typedef struct tfps_tfevents tfps_tfevents;

/* Creates dir (tfps_mkdirs) and a new event file in it whose first record,
 * Event{wall_time now, file_version "brain.Event:2"}, is written. Returns the
 * writer, or NULL with err ("mkdir ...", "create ...: Permission denied").
 * On error no file is left behind (folders made on the way may be). */
tfps_tfevents *tfps_tfevents_open(const char *dir, char *err, size_t errlen);

/* Appends one Event at `step` (wall_time now) holding n scalars: tags[i] =
 * values[i], i < n (n = 0: an Event with an empty Summary). Each tag must be
 * non-empty valid UTF-8 (TensorBoard's protobuf parser refuses invalid UTF-8
 * and with it the whole event); values may be any float, NaN and infinities
 * included. Returns TFPS_OK, or TFPS_ERR with err and the file as it was (a
 * bad argument: nothing written; a write error: the partial record removed). */
int tfps_tfevents_scalars(tfps_tfevents *w, int64_t step, int n, const char *const *tags, const float *values,
                          char *err, size_t errlen);

/* The file's path (valid until tfps_tfevents_close). */
const char *tfps_tfevents_path(const tfps_tfevents *w);

/* Closes the file and frees the writer. NULL-safe. */
void tfps_tfevents_close(tfps_tfevents *w);

/* The record framing's CRC mask, and its inverse (for readers and tests). */
uint32_t tfps_tfevents_mask_crc(uint32_t crc);
uint32_t tfps_tfevents_unmask_crc(uint32_t masked);

#endif
