/* status_main.c -- tfps-status: one table of every ps of a cluster.
 *
 *   tfps-status [--ps HOST:PORT,...] [--timeout SECS] [--json] [--watch SECS] [--tls-*]
 *
 * The ps list is --ps, else TF_CONFIG's cluster.ps. Exit 0 when every ps
 * answered, 1 when any did not (the table is printed all the same), 2 for a
 * usage mistake. status.h asks and formats. */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"
#include "log.h"
#include "rpc.h"
#include "status.h"
#include "tfconfig.h"
#include "tfps.h"
#include "tlscheck.h"

#include <cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ME "tfps-status"

static const char *const shared_opts[] = {"tls-cert", "tls-key", "tls-ca", "log-level", NULL};

static void usage(FILE *f) {
    fprintf(f,
            "usage: " ME " [--ps HOST:PORT,...] [--timeout SECS] [--json] [--watch SECS] [options]\n\n"
            "Asks every ps of a tfps cluster, in parallel, for its gRPC health (grpc.health.v1) and its Status,\n"
            "and prints one table: ps index, address, up (SERVING, NOT_SERVING or unreachable: why), version,\n"
            "applied updates, refused calls (unauthenticated and non-finite when any), workers live/done/dead,\n"
            "bytes in/out, uptime, last checkpoint step, consistency.\n\n"
            "  --ps LIST          comma-separated host:port of the ps, index 0 first; default: TF_CONFIG's\n"
            "                     cluster.ps (TF_CONFIG of any task of the job; a cluster without a task does too)\n"
            "  --timeout SECS     deadline of the calls to every ps together (default 3)\n"
            "  --json             a JSON array instead, an object per ps with every Status field\n"
            "  --watch SECS       ask again every SECS seconds until interrupted (JSON: one array per line)\n"
            "  --help, --version\n\n"
            "Options shared with the daemons (flag, environment variable, default); for a ps that serves mTLS\n"
            "give all three, e.g. a worker's certificate (deploy/make-certs.sh):\n");
    tfps_options_usage_of(f, shared_opts);
    fprintf(f, "  (" ME " logs only errors to stderr unless --log-level or TFPS_LOG_LEVEL is given)\n");
    fprintf(f, "\nStatus and the health check need no session or job secret.\n"
               "Exit status: 0 every ps answered; 1 some ps did not (shown unreachable, or its error); 2 a usage\n"
               "mistake (no TF_CONFIG and no --ps, a malformed address, a bad flag or TLS file).\n");
}

/* A positive number of seconds, at most max. */
static int parse_secs(const char *flag, const char *text, double max, double *out, char *err, size_t errlen) {
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (end == text || *end || errno || !isfinite(v) || v <= 0 || v > max || strpbrk(text, "xX") ||
        (text[0] < '0' && text[0] != '.') ||
        text[0] > '9')
        return tfps_seterr(err, errlen, "--%s: invalid value \"%.100s\": expected seconds, above 0 and at most %g",
                           flag, text, max);
    *out = v;
    return TFPS_OK;
}

/* Appends a copy of addr to the list. */
static int add_addr(char ***list, int *n, const char *addr, size_t len, char *err, size_t errlen) {
    char **l = realloc(*list, (size_t)(*n + 1) * sizeof(*l));
    if (!l) return tfps_seterr(err, errlen, "out of memory");
    *list = l;
    if (!(l[*n] = strndup(addr, len))) return tfps_seterr(err, errlen, "out of memory");
    (*n)++;
    return TFPS_OK;
}

static int ps_from_flag(const char *text, char ***list, int *n, char *err, size_t errlen) {
    for (const char *p = text;;) {
        const char *comma = strchr(p, ',');
        const size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (add_addr(list, n, p, len, err, errlen) != TFPS_OK) return TFPS_ERR;
        char why[TFPS_ERR_LEN];
        if (tfps_addr_check((*list)[*n - 1], why, sizeof(why)) != TFPS_OK)
            return tfps_seterr(err, errlen, "--ps: entry %d: %s", *n - 1, why);
        if (!comma) return TFPS_OK;
        p = comma + 1;
    }
}

/* TF_CONFIG's ps list. A TF_CONFIG with a cluster and no task (a cluster spec
 * copied to an operator's shell) is read as if it were ps 0's: tfconfig.c
 * insists on a task, and the ps list is all this needs. */
static int ps_from_tfconfig(const char *json, char ***list, int *n, char *err, size_t errlen) {
    tfps_cluster c;
    if (tfps_cluster_parse(&c, json, err, errlen) != TFPS_OK) {
        cJSON *root = cJSON_Parse(json);
        int retried = 0;
        if (root && cJSON_IsObject(root) && !cJSON_GetObjectItemCaseSensitive(root, "task")) {
            cJSON *task = cJSON_AddObjectToObject(root, "task");
            char *again = NULL;
            if (task && cJSON_AddStringToObject(task, "type", "ps") && cJSON_AddNumberToObject(task, "index", 0))
                again = cJSON_PrintUnformatted(root);
            char why[TFPS_ERR_LEN];
            retried = again && tfps_cluster_parse(&c, again, why, sizeof(why)) == TFPS_OK;
            free(again);
        }
        cJSON_Delete(root);
        if (!retried) return TFPS_ERR;   // err: the first parse's, about the TF_CONFIG as given
    }
    int rc = TFPS_OK;
    if (c.local)
        rc = tfps_seterr(err, errlen, "TF_CONFIG has no cluster: expected one with a ps job, or --ps HOST:PORT,...");
    for (int i = 0; rc == TFPS_OK && i < c.num_ps; i++)
        rc = add_addr(list, n, c.jobs[TFPS_JOB_PS].addr[i], strlen(c.jobs[TFPS_JOB_PS].addr[i]), err, errlen);
    tfps_cluster_destroy(&c);
    return rc;
}

/* --tls-cert, --tls-key, --tls-ca: all three (mTLS, as a worker) or none. */
static int setup_tls(const tfps_options *o, char *err, size_t errlen) {
    const int ntls = !!o->tls_cert[0] + !!o->tls_key[0] + !!o->tls_ca[0];
    if (ntls == 0) return TFPS_OK;
    if (ntls < 3)
        return tfps_seterr(err, errlen, "TLS: missing%s%s%s: expected all three of --tls-cert, --tls-key and --tls-ca "
                           "(PEM files; deploy/make-certs.sh makes them), or none for plaintext",
                           o->tls_cert[0] ? "" : " --tls-cert", o->tls_key[0] ? "" : " --tls-key",
                           o->tls_ca[0] ? "" : " --tls-ca");
    tfps_tls_files t;
    if (tfps_tls_load(&t, o->tls_cert, o->tls_key, o->tls_ca, TFPS_TLS_CLIENT, err, errlen) != TFPS_OK)
        return TFPS_ERR;
    int rc = tfps_rpc_set_tls(t.cert_pem, t.key_pem, t.ca_pem, err, errlen);
    tfps_tls_files_destroy(&t);
    return rc;
}

/* One round: ask, print; the exit code of this round. */
static int round_once(const char *const *addrs, int n, double timeout_s, int json, int watch) {
    char err[TFPS_ERR_LEN];
    tfps_status_ps *ps = calloc((size_t)n, sizeof(*ps));
    if (!ps) {
        fprintf(stderr, ME ": out of memory\n");
        return TFPS_EXIT_FAIL;
    }
    const int answered = tfps_status_query(addrs, n, timeout_s, ps, err, sizeof(err));
    if (answered < 0) {
        fprintf(stderr, ME ": %s\n", err);
        free(ps);
        return TFPS_EXIT_FAIL;
    }
    if (json) {
        cJSON *a = tfps_status_json(ps, n);
        char *text = a ? (watch ? cJSON_PrintUnformatted(a) : cJSON_Print(a)) : NULL;
        cJSON_Delete(a);
        if (!text) {
            fprintf(stderr, ME ": out of memory for the JSON output\n");
            free(ps);
            return TFPS_EXIT_FAIL;
        }
        printf("%s\n", text);
        free(text);
    } else {
        if (watch) {
            char when[32];
            time_t now = time(NULL);
            strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", localtime(&now));
            printf("%s  %d of %d ps answered\n", when, answered, n);
        }
        tfps_status_table(stdout, ps, n);
        if (watch) printf("\n");
    }
    fflush(stdout);
    free(ps);
    return answered == n ? TFPS_EXIT_OK : TFPS_EXIT_FAIL;
}

int main(int argc, char **argv) {
    const char *ps_flag = NULL, *timeout_flag = NULL, *watch_flag = NULL, *pos[1];
    int json = 0, npos = 0, n = 0, rc = TFPS_EXIT_USAGE;
    double timeout_s = 3, watch_s = 0;
    char err[TFPS_ERR_LEN], **addrs = NULL;
    const tfps_cli_flag own[] = {{"ps", &ps_flag, NULL}, {"timeout", &timeout_flag, NULL},
                                 {"watch", &watch_flag, NULL}, {"json", NULL, &json}};
    tfps_options o;
    tfps_log_set_role('T', 0);
    // quiet unless asked: the table says why a ps did not answer (gRPC would add a line per failed handshake)
    if (tfps_cli_parse(argc, argv, own, (int)(sizeof(own) / sizeof(own[0])), shared_opts, TFPS_LOG_ERROR, &o, pos, 0,
                       &npos, err, sizeof(err)) != TFPS_OK) {
        fprintf(stderr, ME ": %s\n", err);
        return TFPS_EXIT_USAGE;
    }
    if (o.help) {
        usage(stdout);
        return TFPS_EXIT_OK;
    }
    if (o.version) {
        printf(ME " %s\n", TFPS_VERSION);
        return TFPS_EXIT_OK;
    }
    const char *tf = getenv("TF_CONFIG");
    if ((timeout_flag && parse_secs("timeout", timeout_flag, 3600, &timeout_s, err, sizeof(err)) != TFPS_OK) ||
        (watch_flag && parse_secs("watch", watch_flag, 86400, &watch_s, err, sizeof(err)) != TFPS_OK) ||
        (ps_flag && ps_from_flag(ps_flag, &addrs, &n, err, sizeof(err)) != TFPS_OK) ||
        (!ps_flag && tf && strspn(tf, " \t\r\n") < strlen(tf) &&
         ps_from_tfconfig(tf, &addrs, &n, err, sizeof(err)) != TFPS_OK)) {
        fprintf(stderr, ME ": %s\n", err);
        goto done;
    }
    if (n == 0) {
        fprintf(stderr, ME ": no ps to ask: expected --ps HOST:PORT,... or TF_CONFIG with a cluster.ps job\n");
        goto done;
    }
    tfps_rpc_init();
    if (setup_tls(&o, err, sizeof(err)) != TFPS_OK) {
        fprintf(stderr, ME ": %s\n", err);
    } else {
        do {
            rc = round_once((const char *const *)addrs, n, timeout_s, json, watch_s > 0);
            if (watch_s > 0 && rc != TFPS_EXIT_USAGE) tfps_sleep(watch_s);
        } while (watch_s > 0);   // until a signal ends the process
    }
    tfps_rpc_shutdown();
done:
    for (int i = 0; i < n; i++) free(addrs[i]);
    free(addrs);
    return rc;
}
