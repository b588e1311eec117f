/* status.h -- what tfps-status asks each ps, and how it shows the answers.
 *
 * For every ps, two unary calls in flight together (one batch on one
 * completion queue, rpc.h), each with the same deadline: the standard
 * grpc.health.v1.Health/Check (what Kubernetes probes) and tfps's Status
 * (counters; served to any caller that can connect, no session needed).
 * A ps that does not answer by the deadline, or refuses the connection, is
 * "unreachable" with gRPC's reason; nothing is retried past the deadline.
 *
 * Ownership: the addresses are the caller's and must outlive the results;
 * a result owns nothing else (the Status strings are copied in). */
#ifndef TFPS_STATUS_H
#define TFPS_STATUS_H

#include "wire.h"

#include <stdio.h>

struct cJSON;

typedef struct {
    const char *addr;            /* host:port, the caller's */
    int health_rpc;              /* rpc status of Health/Check (TFPS_RPC_OK: serving says what it said) */
    int serving;                 /* 1 SERVING, 2 NOT_SERVING, 0 no answer */
    int status_rpc;              /* rpc status of Status */
    int answered;                /* Status answered and decoded: st is valid */
    char error[600];             /* why not, "" when both calls answered */
    char reason[160];            /* the short form of error, for the table */
    tfps_wire_status_resp st;    /* its consistency and optimizer point into the arrays below */
    char consistency[32], optimizer[256];
} tfps_status_ps;

/* Asks addrs[0..n) in parallel, each call with a deadline of timeout_s,
 * and fills out[0..n). Returns how many ps answered both calls, or -1 with
 * err when the client could not be made (out of memory). */
int tfps_status_query(const char *const *addrs, int n, double timeout_s, tfps_status_ps *out, char *err,
                      size_t errlen);

/* One table, a row per ps: index, address, up, version, applied, refused,
 * workers live/done/dead, bytes in/out, uptime, checkpoint, consistency. */
void tfps_status_table(FILE *f, const tfps_status_ps *ps, int n);
/* A JSON array, an object per ps with every StatusResponse field (NULL on out of memory). */
struct cJSON *tfps_status_json(const tfps_status_ps *ps, int n);

/* "1.5 MiB", "512 B" into buf. */
const char *tfps_status_bytes(char *buf, size_t n, double bytes);
/* "45s", "3m05s", "2h03m", "1d02h" into buf. */
const char *tfps_status_duration(char *buf, size_t n, double s);

#endif
