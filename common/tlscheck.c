/* tlscheck.c -- see tlscheck.h. OpenSSL 3 (libcrypto only). */
#define _POSIX_C_SOURCE 200809L
#include "tlscheck.h"
#include "tfps.h"

#include <arpa/inet.h>
#include <errno.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TLS_MAX_FILE (1u << 20)

/* The whole file as a NUL-terminated string, or NULL with err. */
static char *read_text(const char *flag, const char *path, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        tfps_seterr(err, errlen, "%s %s: cannot be read: %s", flag, path, strerror(errno));
        return NULL;
    }
    char *buf = malloc(TLS_MAX_FILE + 1);
    size_t n = buf ? fread(buf, 1, TLS_MAX_FILE + 1, f) : 0;
    int bad = buf ? ferror(f) : 0;
    fclose(f);
    if (!buf) {
        tfps_seterr(err, errlen, "%s %s: out of memory", flag, path);
        return NULL;
    }
    if (bad || n > TLS_MAX_FILE || n == 0) {
        tfps_seterr(err, errlen, "%s %s: %s", flag, path,
                    bad ? "cannot be read (a folder?)" : n == 0 ? "empty file: expected PEM text"
                                                            : "larger than 1 MiB: not a PEM file");
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    return buf;
}

/* What a PEM file holds instead, for the message: " (it holds a private key)". */
static const char *pem_hint(const char *text) {
    if (strstr(text, "ENCRYPTED PRIVATE KEY") || strstr(text, "Proc-Type: 4,ENCRYPTED"))
        return " (it holds an encrypted private key: tfps takes keys without a passphrase)";
    if (strstr(text, "PRIVATE KEY-----")) return " (it holds a private key)";
    if (strstr(text, "CERTIFICATE REQUEST-----")) return " (it holds a certificate request: sign it first)";
    if (strstr(text, "BEGIN CERTIFICATE-----")) return " (it holds a certificate)";
    if (!strstr(text, "-----BEGIN ")) return " (no -----BEGIN line: not PEM; DER? convert with openssl x509 -outform PEM)";
    return "";
}

/* Never prompts for a passphrase on the terminal of a daemon. */
static int no_password(char *buf, int size, int rwflag, void *u) {
    (void)buf, (void)size, (void)rwflag, (void)u;
    return 0;
}

static void time_text(const ASN1_TIME *t, char *out, size_t n) {
    struct tm tm;
    if (t && ASN1_TIME_to_tm(t, &tm) == 1) strftime(out, n, "%Y-%m-%d %H:%M:%S UTC", &tm);
    else snprintf(out, n, "?");
}

static void name_text(const X509_NAME *name, char *out, size_t n) {
    out[0] = '\0';
    BIO *b = BIO_new(BIO_s_mem());
    if (!b) return;
    X509_NAME_print_ex(b, name, 0, XN_FLAG_ONELINE & ~ASN1_STRFLGS_ESC_MSB);
    int len = BIO_read(b, out, (int)n - 1);
    out[len > 0 ? len : 0] = '\0';
    BIO_free(b);
}

static void sans_text(X509 *cert, char *out, size_t n) {
    out[0] = '\0';
    GENERAL_NAMES *names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    size_t j = 0;
    for (int i = 0; names && i < sk_GENERAL_NAME_num(names) && j + 1 < n; i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
        char one[300] = "";
        if (g->type == GEN_DNS) {
            snprintf(one, sizeof(one), "DNS:%.*s", ASN1_STRING_length(g->d.dNSName),
                     (const char *)ASN1_STRING_get0_data(g->d.dNSName));
        } else if (g->type == GEN_IPADD) {
            char ip[INET6_ADDRSTRLEN] = "?";
            int len = ASN1_STRING_length(g->d.iPAddress);
            const unsigned char *p = ASN1_STRING_get0_data(g->d.iPAddress);
            if (len == 4 || len == 16) inet_ntop(len == 4 ? AF_INET : AF_INET6, p, ip, sizeof(ip));
            snprintf(one, sizeof(one), "IP:%s", ip);
        } else {
            continue;
        }
        j += (size_t)snprintf(out + j, n - j, "%s%s", j ? ", " : "", one);
        if (j >= n) j = n - 1;
    }
    GENERAL_NAMES_free(names);
}

/* Every certificate in a PEM text into a new stack (NULL if none). */
static STACK_OF(X509) *read_certs(const char *text) {
    BIO *b = BIO_new_mem_buf(text, -1);
    STACK_OF(X509) *sk = sk_X509_new_null();
    X509 *x;
    while (b && sk && (x = PEM_read_bio_X509(b, NULL, no_password, NULL)) != NULL)
        if (!sk_X509_push(sk, x)) X509_free(x);
    BIO_free(b);
    ERR_clear_error();   /* the read that ended the loop */
    if (sk && sk_X509_num(sk) == 0) {
        sk_X509_free(sk);
        sk = NULL;
    }
    return sk;
}

void tfps_tls_files_destroy(tfps_tls_files *t) {
    if (!t) return;
    free(t->cert_pem);
    if (t->key_pem) OPENSSL_cleanse(t->key_pem, strlen(t->key_pem));
    free(t->key_pem);
    free(t->ca_pem);
    memset(t, 0, sizeof(*t));
}

int tfps_tls_load(tfps_tls_files *t, const char *cert_path, const char *key_path, const char *ca_path,
                  tfps_tls_role role, char *err, size_t errlen) {
    memset(t, 0, sizeof(*t));
    int rc = TFPS_ERR;
    STACK_OF(X509) *certs = NULL, *cas = NULL;
    EVP_PKEY *key = NULL;
    X509_STORE *store = NULL;
    X509_STORE_CTX *ctx = NULL;
    if (!(t->cert_pem = read_text("--tls-cert", cert_path, err, errlen)) ||
        !(t->key_pem = read_text("--tls-key", key_path, err, errlen)) ||
        !(t->ca_pem = read_text("--tls-ca", ca_path, err, errlen)))
        goto done;
    if (!(certs = read_certs(t->cert_pem))) {
        tfps_seterr(err, errlen, "--tls-cert %s: no PEM certificate in it%s; expected -----BEGIN CERTIFICATE-----",
                    cert_path, pem_hint(t->cert_pem));
        goto done;
    }
    X509 *cert = sk_X509_value(certs, 0);   /* the rest, if any, is a chain to the CA */
    BIO *kb = BIO_new_mem_buf(t->key_pem, -1);
    key = kb ? PEM_read_bio_PrivateKey(kb, NULL, no_password, NULL) : NULL;
    BIO_free(kb);
    ERR_clear_error();
    if (!key) {
        tfps_seterr(err, errlen, "--tls-key %s: no PEM private key in it%s; expected -----BEGIN PRIVATE KEY-----",
                    key_path, pem_hint(t->key_pem));
        goto done;
    }
    if (!(cas = read_certs(t->ca_pem))) {
        tfps_seterr(err, errlen, "--tls-ca %s: no PEM certificate in it%s; expected the CA's -----BEGIN "
                    "CERTIFICATE-----", ca_path, pem_hint(t->ca_pem));
        goto done;
    }
    name_text(X509_get_subject_name(cert), t->subject, sizeof(t->subject));
    sans_text(cert, t->sans, sizeof(t->sans));
    time_text(X509_get0_notAfter(cert), t->not_after, sizeof(t->not_after));
    int days = 0, secs = 0;
    if (ASN1_TIME_diff(&days, &secs, NULL, X509_get0_notAfter(cert))) t->days_left = days + secs / 86400.0;
    if (X509_check_private_key(cert, key) != 1) {
        ERR_clear_error();
        tfps_seterr(err, errlen, "--tls-key %s does not match --tls-cert %s (%s): give the key the certificate "
                    "was made for", key_path, cert_path, t->subject);
        goto done;
    }
    store = X509_STORE_new();
    ctx = X509_STORE_CTX_new();
    if (!store || !ctx) {
        tfps_seterr(err, errlen, "--tls-cert: out of memory checking it");
        goto done;
    }
    for (int i = 0; i < sk_X509_num(cas); i++) X509_STORE_add_cert(store, sk_X509_value(cas, i));
    ERR_clear_error();   /* a CA given twice */
    if (X509_STORE_CTX_init(ctx, store, cert, certs) != 1 ||
        X509_STORE_CTX_set_purpose(ctx, role == TFPS_TLS_SERVER ? X509_PURPOSE_SSL_SERVER : X509_PURPOSE_SSL_CLIENT) !=
            1) {
        tfps_seterr(err, errlen, "--tls-cert %s: cannot set up its verification", cert_path);
        goto done;
    }
    if (X509_verify_cert(ctx) == 1) {
        rc = TFPS_OK;
        goto done;
    }
    const int code = X509_STORE_CTX_get_error(ctx), depth = X509_STORE_CTX_get_error_depth(ctx);
    X509 *bad = X509_STORE_CTX_get_current_cert(ctx);
    char when[32], issuer[256], ca_subject[256];
    name_text(X509_get_issuer_name(cert), issuer, sizeof(issuer));
    name_text(X509_get_subject_name(sk_X509_value(cas, 0)), ca_subject, sizeof(ca_subject));
    const int is_leaf = depth == 0 || bad == cert;
    const char *flag = is_leaf ? "--tls-cert" : "--tls-ca", *path = is_leaf ? cert_path : ca_path;
    switch (code) {
    case X509_V_ERR_CERT_HAS_EXPIRED:
        time_text(bad ? X509_get0_notAfter(bad) : NULL, when, sizeof(when));
        tfps_seterr(err, errlen, "%s %s: the certificate expired on %s: make new ones (deploy/make-certs.sh)", flag,
                    path, when);
        break;
    case X509_V_ERR_CERT_NOT_YET_VALID:
        time_text(bad ? X509_get0_notBefore(bad) : NULL, when, sizeof(when));
        tfps_seterr(err, errlen, "%s %s: the certificate is not valid before %s (is this machine's clock right?)",
                    flag, path, when);
        break;
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_CERT_SIGNATURE_FAILURE:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
        tfps_seterr(err, errlen, "--tls-cert %s is not signed by --tls-ca %s: the certificate's issuer is \"%s\", "
                    "the CA is \"%s\"; give every task certificates of one CA", cert_path, ca_path, issuer,
                    ca_subject);
        break;
    case X509_V_ERR_INVALID_PURPOSE:
        tfps_seterr(err, errlen, "--tls-cert %s is not for a TLS %s: its extendedKeyUsage lacks %s "
                    "(deploy/make-certs.sh makes certificates with serverAuth and clientAuth)", cert_path,
                    role == TFPS_TLS_SERVER ? "server (tfps-ps)" : "client (tfps-worker)",
                    role == TFPS_TLS_SERVER ? "serverAuth" : "clientAuth");
        break;
    default:
        tfps_seterr(err, errlen, "--tls-cert %s does not verify against --tls-ca %s: %s (at depth %d)", cert_path,
                    ca_path, X509_verify_cert_error_string(code), depth);
    }
done:
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(store);
    EVP_PKEY_free(key);
    sk_X509_pop_free(certs, X509_free);
    sk_X509_pop_free(cas, X509_free);
    ERR_clear_error();
    if (rc != TFPS_OK) tfps_tls_files_destroy(t);
    return rc;
}

int tfps_tls_names_host(const char *cert_pem, const char *host) {
    BIO *b = BIO_new_mem_buf(cert_pem, -1);
    X509 *cert = b ? PEM_read_bio_X509(b, NULL, no_password, NULL) : NULL;
    BIO_free(b);
    ERR_clear_error();
    if (!cert) return -1;
    char h[300];
    size_t n = strlen(host);
    if (n >= 2 && host[0] == '[' && host[n - 1] == ']' && n - 2 < sizeof(h)) {
        memcpy(h, host + 1, n - 2);
        h[n - 2] = '\0';
    } else {
        snprintf(h, sizeof(h), "%s", host);
    }
    unsigned char ip[16];
    int yes;
    if (inet_pton(AF_INET, h, ip) == 1 || inet_pton(AF_INET6, h, ip) == 1)
        yes = X509_check_ip_asc(cert, h, 0) == 1;
    else
        yes = X509_check_host(cert, h, 0, X509_CHECK_FLAG_NEVER_CHECK_SUBJECT, NULL) == 1;
    X509_free(cert);
    ERR_clear_error();
    return yes;
}
