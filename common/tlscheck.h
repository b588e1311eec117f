/* tlscheck.h -- reads and checks --tls-cert, --tls-key and --tls-ca before
 * any of them reaches gRPC (OpenSSL's X.509 code; no grpc_* here, see rpc.h).
 *
 * gRPC finds a bad certificate only at the first handshake, on the far side,
 * as an UNAVAILABLE that is retried until the deadline; an unreadable key
 * string aborts it. So a daemon checks its files at start and exits 2 with
 * one line naming the file and the fault:
 *
 *   read       each file readable, at most 1 MiB
 *   kind       --tls-cert holds a PEM certificate, --tls-key a PEM private
 *              key (unencrypted), --tls-ca one or more PEM certificates
 *   pair       the key is the certificate's key
 *   chain      the certificate is signed by the CA, and neither is expired or
 *              not yet valid (checked as of now)
 *   purpose    its extended key usage allows a TLS server (tfps-ps) or client
 *              (tfps-worker), as the peer's OpenSSL will insist
 *
 * The host names a certificate is good for (SANs) are the peer's business
 * (a worker checks the ps's against its target host); tfps_tls_names_host
 * lets a daemon warn early when its own TF_CONFIG host is not among them. */
#ifndef TFPS_TLSCHECK_H
#define TFPS_TLSCHECK_H

#include <stddef.h>

typedef enum { TFPS_TLS_SERVER, TFPS_TLS_CLIENT } tfps_tls_role;

typedef struct {
    char *cert_pem, *key_pem, *ca_pem;   /* the files' text, malloc'd, NUL-terminated */
    char subject[256];                   /* the certificate's subject, one line */
    char sans[512];                      /* its SANs, "DNS:ps-0, IP:10.0.0.5, ..." ("" if none) */
    char not_after[32];                  /* "2027-01-31 12:00:00 UTC" */
    double days_left;                    /* until not_after */
} tfps_tls_files;

/* Reads the three files and runs every check above for role. TFPS_OK with *t
 * filled (free with tfps_tls_files_destroy), or TFPS_ERR with one line in err
 * naming the flag, the file and what was expected; *t then holds nothing. */
int tfps_tls_load(tfps_tls_files *t, const char *cert_path, const char *key_path, const char *ca_path,
                  tfps_tls_role role, char *err, size_t errlen);
/* Frees (and wipes the key text); safe on a zeroed or destroyed struct. */
void tfps_tls_files_destroy(tfps_tls_files *t);
/* Is host (a DNS name, an IPv4 literal, an IPv6 literal with or without
 * brackets) among the certificate's SANs? 1 yes, 0 no, -1 unreadable PEM.
 * The subject's CN is not looked at (gRPC's check reads the SANs). */
int tfps_tls_names_host(const char *cert_pem, const char *host);

#endif
