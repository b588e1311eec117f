/* status.c -- see status.h. */
#include "status.h"
#include "rpc.h"
#include "service.h"
#include "tfps.h"

#include <cJSON.h>
#include <stdlib.h>
#include <string.h>

#define HEALTH_METHOD "/grpc.health.v1.Health/Check"
#define STATUS_MAX_MSG (1 << 20)   /* a StatusResponse is a few hundred bytes */

/* gRPC's message for an unreachable target is long ("failed to connect to
 * all addresses; last error: UNKNOWN: ipv4:127.0.0.1:5001: Failed to connect
 * to remote host: Connection refused"): its last part says why. */
static void short_reason(const tfps_rpc_result *r, double timeout_s, char *out, size_t n) {
    if (r->status == TFPS_RPC_DEADLINE_EXCEEDED) {
        snprintf(out, n, "no answer in %gs", timeout_s);
        return;
    }
    const char *d = r->details, *p = d, *q;
    if (r->status != TFPS_RPC_UNAVAILABLE) {   // it answered, but not as a ps would: the status says most
        snprintf(out, n, "%s%s%.120s", tfps_rpc_status_name(r->status), *d ? ": " : "", d);
        return;
    }
    while ((q = strstr(p, ": ")) != NULL) p = q + 2;
    if (!*p) p = d;
    // a ps that serves mTLS closes a plaintext connection at once
    const char *hint = tfps_rpc_tls_mode() == 0 && strstr(p, "Socket closed") ? " (serving mTLS? give --tls-*)" : "";
    if (*p) snprintf(out, n, "%.120s%s", p, hint);
    else snprintf(out, n, "%s", tfps_rpc_status_name(r->status));
}

static int unreachable(const tfps_status_ps *s) {
    return s->health_rpc == TFPS_RPC_UNAVAILABLE || s->health_rpc == TFPS_RPC_DEADLINE_EXCEEDED;
}

static void describe_failure(tfps_status_ps *s, const char *what, const tfps_rpc_result *r) {
    snprintf(s->error, sizeof(s->error), "%s: %s%s%.500s", what, tfps_rpc_status_name(r->status),
             r->details[0] ? ": " : "", r->details);
}

int tfps_status_query(const char *const *addrs, int n, double timeout_s, tfps_status_ps *out, char *err,
                      size_t errlen) {
    tfps_rpc_client *cli = tfps_rpc_client_new(addrs, n, STATUS_MAX_MSG, err, errlen);
    if (!cli) return -1;
    tfps_buf body = {0};
    tfps_rpc_req *reqs = calloc((size_t)n * 2, sizeof(*reqs));
    tfps_rpc_result *res = calloc((size_t)n * 2, sizeof(*res));
    static const uint8_t empty[1];   // a HealthCheckRequest for the whole server is 0 bytes
    if (!reqs || !res || tfps_wire_pack_status_req(&body) != TFPS_OK) {
        free(reqs);
        free(res);
        tfps_buf_free(&body);
        tfps_rpc_client_free(cli);
        tfps_seterr(err, errlen, "out of memory");
        return -1;
    }
    for (int i = 0; i < n; i++) {
        reqs[2 * i] = tfps_rpc_req_of(i, HEALTH_METHOD, empty, 0);
        reqs[2 * i + 1] = tfps_rpc_req_of(i, tfps_method_paths[TFPS_M_STATUS], body.data ? body.data : empty,
                                         body.len);
    }
    // every ps at once, one deadline: an unreachable ps costs timeout_s, not timeout_s each
    char ignored[TFPS_ERR_LEN];
    tfps_rpc_call_batch(cli, reqs, 2 * n, timeout_s, 0, res, ignored, sizeof(ignored));
    int answered = 0;
    for (int i = 0; i < n; i++) {
        tfps_status_ps *s = &out[i];
        const tfps_rpc_result *h = &res[2 * i], *r = &res[2 * i + 1];
        memset(s, 0, sizeof(*s));
        s->addr = addrs[i];
        s->health_rpc = h->status;
        s->status_rpc = r->status;
        if (h->status == TFPS_RPC_OK) {
            int st = 0;
            void *owner = NULL;
            char why[TFPS_ERR_LEN];
            if (tfps_wire_unpack_health_resp(h->resp, h->resp_len, &st, &owner, why, sizeof(why)) == TFPS_OK)
                s->serving = st == 1 ? 1 : 2;
            else
                snprintf(s->error, sizeof(s->error), "health check: %s", why);
            tfps_wire_release(owner);
        } else {
            describe_failure(s, "health check", h);
            short_reason(h, timeout_s, s->reason, sizeof(s->reason));
        }
        if (r->status == TFPS_RPC_OK) {
            void *owner = NULL;
            char why[TFPS_ERR_LEN];
            if (tfps_wire_unpack_status_resp(r->resp, r->resp_len, &s->st, &owner, why, sizeof(why)) == TFPS_OK) {
                snprintf(s->consistency, sizeof(s->consistency), "%s", s->st.consistency ? s->st.consistency : "");
                snprintf(s->optimizer, sizeof(s->optimizer), "%s", s->st.optimizer ? s->st.optimizer : "");
                s->answered = 1;
            } else if (!s->error[0]) {
                snprintf(s->error, sizeof(s->error), "Status: %s", why);
            }
            tfps_wire_release(owner);
        } else if (!s->error[0]) {
            describe_failure(s, "Status", r);
            short_reason(r, timeout_s, s->reason, sizeof(s->reason));
        }
        // the strings now point into this result's own arrays, never into the freed reply
        s->st.consistency = s->consistency;
        s->st.optimizer = s->optimizer;
        if (s->answered && s->serving) answered++;
        else if (!s->reason[0]) snprintf(s->reason, sizeof(s->reason), "%.150s", s->error);
    }
    for (int k = 0; k < 2 * n; k++) tfps_rpc_result_clear(&res[k]);
    free(reqs);
    free(res);
    tfps_buf_free(&body);
    tfps_rpc_client_free(cli);
    return answered;
}

const char *tfps_status_bytes(char *buf, size_t n, double b) {
    static const char *const unit[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    int u = 0;
    while (b >= 1024 && u < 5) {
        b /= 1024;
        u++;
    }
    if (u == 0) snprintf(buf, n, "%.0f B", b);
    else snprintf(buf, n, "%.*f %s", b < 10 ? 2 : b < 100 ? 1 : 0, b, unit[u]);
    return buf;
}

const char *tfps_status_duration(char *buf, size_t n, double s) {
    const long long t = s < 0 ? 0 : (long long)s;
    if (t < 60) snprintf(buf, n, "%llds", t);
    else if (t < 3600) snprintf(buf, n, "%lldm%02llds", t / 60, t % 60);
    else if (t < 86400) snprintf(buf, n, "%lldh%02lldm", t / 3600, t % 3600 / 60);
    else snprintf(buf, n, "%lldd%02lldh", t / 86400, t % 86400 / 3600);
    return buf;
}

static const char *up_text(const tfps_status_ps *s, char *buf, size_t n) {
    if (unreachable(s))
        snprintf(buf, n, "unreachable: %s", s->reason);
    else if (s->serving && s->answered) snprintf(buf, n, "%s", s->serving == 1 ? "SERVING" : "NOT_SERVING");
    else if (s->serving) snprintf(buf, n, "%s, Status: %s", s->serving == 1 ? "SERVING" : "NOT_SERVING", s->reason);
    else snprintf(buf, n, "error: %s", s->reason);
    return buf;
}

#define NCOLS 13
enum { C_PS, C_ADDR, C_UP, C_VERSION, C_APPLIED, C_REFUSED, C_WORKERS, C_IN, C_OUT, C_UPTIME, C_CKPT, C_EVAL, C_CONS };

void tfps_status_table(FILE *f, const tfps_status_ps *ps, int n) {
    static const char *const head[NCOLS] = {"PS",      "ADDRESS", "UP",     "VERSION", "APPLIED", "REFUSED",
                                            "WORKERS", "IN",      "OUT",    "UPTIME",  "CKPT",    "EVAL",
                                            "CONSISTENCY"};
    static const int right[NCOLS] = {1, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0};   // numbers right-aligned
    char(*cell)[NCOLS][200] = calloc((size_t)n + 1, sizeof(*cell));
    if (!cell) return;
    size_t w[NCOLS];
    for (int c = 0; c < NCOLS; c++) {
        snprintf(cell[0][c], sizeof(cell[0][c]), "%s", head[c]);
        w[c] = strlen(head[c]);
    }
    for (int i = 0; i < n; i++) {
        const tfps_status_ps *s = &ps[i];
        const tfps_wire_status_resp *st = &s->st;
        char(*row)[200] = cell[i + 1];
        for (int c = 0; c < NCOLS; c++) snprintf(row[c], sizeof(row[c]), "-");
        if (s->answered && st->ps_index != (uint32_t)i)   // the list and the ps disagree: say so
            snprintf(row[C_PS], sizeof(row[C_PS]), "%d (says %u)", i, st->ps_index);
        else
            snprintf(row[C_PS], sizeof(row[C_PS]), "%d", i);
        snprintf(row[C_ADDR], sizeof(row[C_ADDR]), "%.190s", s->addr);
        up_text(s, row[C_UP], sizeof(row[C_UP]));
        if (s->answered) {
            snprintf(row[C_VERSION], sizeof(row[C_VERSION]), "%llu", (unsigned long long)st->version);
            snprintf(row[C_APPLIED], sizeof(row[C_APPLIED]), "%llu", (unsigned long long)st->applied);
            int k = snprintf(row[C_REFUSED], sizeof(row[C_REFUSED]), "%llu", (unsigned long long)st->refused);
            if (st->unauthenticated || st->nonfinite) {
                k += snprintf(row[C_REFUSED] + k, sizeof(row[C_REFUSED]) - (size_t)k, " (");
                if (st->unauthenticated)
                    k += snprintf(row[C_REFUSED] + k, sizeof(row[C_REFUSED]) - (size_t)k, "unauthenticated %llu%s",
                                  (unsigned long long)st->unauthenticated, st->nonfinite ? ", " : "");
                if (st->nonfinite)
                    k += snprintf(row[C_REFUSED] + k, sizeof(row[C_REFUSED]) - (size_t)k, "nonfinite %llu",
                                  (unsigned long long)st->nonfinite);
                snprintf(row[C_REFUSED] + k, sizeof(row[C_REFUSED]) - (size_t)k, ")");
            }
            const long long reg = st->workers_registered, done = st->workers_done, dead = st->workers_dead;
            const long long live = reg - done - dead > 0 ? reg - done - dead : 0;
            snprintf(row[C_WORKERS], sizeof(row[C_WORKERS]), "%lld/%lld/%lld", live, done, dead);
            tfps_status_bytes(row[C_IN], sizeof(row[C_IN]), (double)st->bytes_in);
            tfps_status_bytes(row[C_OUT], sizeof(row[C_OUT]), (double)st->bytes_out);
            tfps_status_duration(row[C_UPTIME], sizeof(row[C_UPTIME]), st->uptime_s);
            if (st->checkpoints || st->last_checkpoint_step)
                snprintf(row[C_CKPT], sizeof(row[C_CKPT]), "%llu", (unsigned long long)st->last_checkpoint_step);
            else if (st->restored_step)
                snprintf(row[C_CKPT], sizeof(row[C_CKPT]), "restored %llu", (unsigned long long)st->restored_step);
            if (st->eval.count)   // the evaluator's latest report: accuracy at its global step
                snprintf(row[C_EVAL], sizeof(row[C_EVAL]), "%.4f@%llu", st->eval.accuracy,
                         (unsigned long long)st->eval.step);
            snprintf(row[C_CONS], sizeof(row[C_CONS]), "%s", s->consistency[0] ? s->consistency : "-");
        }
        for (int c = 0; c < NCOLS; c++)
            if (strlen(row[c]) > w[c]) w[c] = strlen(row[c]);
    }
    for (int r = 0; r <= n; r++) {
        for (int c = 0; c < NCOLS; c++) {
            const int last = c == NCOLS - 1;
            if (right[c]) fprintf(f, "%*s", (int)w[c], cell[r][c]);
            else if (last) fputs(cell[r][c], f);   // no trailing blanks
            else fprintf(f, "%-*s", (int)w[c], cell[r][c]);
            if (!last) fputs("  ", f);
        }
        fputc('\n', f);
    }
    free(cell);
}

cJSON *tfps_status_json(const tfps_status_ps *ps, int n) {
    cJSON *a = cJSON_CreateArray();
    if (!a) return NULL;
    for (int i = 0; i < n; i++) {
        const tfps_status_ps *s = &ps[i];
        const tfps_wire_status_resp *st = &s->st;
        cJSON *o = cJSON_CreateObject();
        if (!o) break;
        cJSON_AddItemToArray(a, o);
        cJSON_AddNumberToObject(o, "index", i);
        cJSON_AddStringToObject(o, "address", s->addr);
        cJSON_AddStringToObject(o, "health", s->serving == 1   ? "SERVING"
                                             : s->serving == 2 ? "NOT_SERVING"
                                             : unreachable(s)  ? "unreachable"
                                                               : "error");
        cJSON_AddBoolToObject(o, "answered", s->answered && s->serving);
        if (s->error[0]) cJSON_AddStringToObject(o, "error", s->error);
        if (!s->answered) continue;
        cJSON_AddNumberToObject(o, "ps_index", st->ps_index);
        cJSON_AddNumberToObject(o, "version", (double)st->version);
        cJSON_AddNumberToObject(o, "applied", (double)st->applied);
        cJSON_AddNumberToObject(o, "refused", (double)st->refused);
        cJSON_AddNumberToObject(o, "unauthenticated", (double)st->unauthenticated);
        cJSON_AddNumberToObject(o, "nonfinite", (double)st->nonfinite);
        cJSON_AddNumberToObject(o, "bytes_in", (double)st->bytes_in);
        cJSON_AddNumberToObject(o, "bytes_out", (double)st->bytes_out);
        cJSON_AddNumberToObject(o, "uptime_s", st->uptime_s);
        cJSON_AddNumberToObject(o, "workers_registered", st->workers_registered);
        cJSON_AddNumberToObject(o, "workers_done", st->workers_done);
        cJSON_AddNumberToObject(o, "workers_dead", st->workers_dead);
        const long long live = (long long)st->workers_registered - st->workers_done - st->workers_dead;
        cJSON_AddNumberToObject(o, "workers_live", (double)(live > 0 ? live : 0));
        cJSON_AddNumberToObject(o, "examples", (double)st->examples);
        cJSON_AddStringToObject(o, "consistency", s->consistency);
        cJSON_AddStringToObject(o, "optimizer", s->optimizer);
        cJSON_AddNumberToObject(o, "dropped", (double)st->dropped);
        cJSON_AddNumberToObject(o, "aggregated", (double)st->aggregated);
        cJSON_AddNumberToObject(o, "wait_s", st->wait_s);
        cJSON_AddNumberToObject(o, "max_lead", (double)st->max_lead);
        cJSON_AddNumberToObject(o, "held", st->held);
        cJSON_AddNumberToObject(o, "checkpoints", (double)st->checkpoints);
        cJSON_AddNumberToObject(o, "last_checkpoint_step", (double)st->last_checkpoint_step);
        cJSON_AddNumberToObject(o, "restored_step", (double)st->restored_step);
        cJSON_AddNumberToObject(o, "checkpoint_pause_s", st->checkpoint_pause_s);
        if (st->eval.count) {   // the evaluator's latest report to this ps
            cJSON *e = cJSON_AddObjectToObject(o, "eval");
            if (e) {
                cJSON_AddNumberToObject(e, "count", st->eval.count);
                cJSON_AddNumberToObject(e, "step", (double)st->eval.step);
                cJSON_AddNumberToObject(e, "accuracy", st->eval.accuracy);
                cJSON_AddNumberToObject(e, "loss", st->eval.loss);
            }
        } else {
            cJSON_AddNullToObject(o, "eval");
        }
    }
    return a;
}
