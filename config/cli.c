/* cli.c -- see cli.h. */
#include "cli.h"
#include "log.h"
#include "tfps.h"

#include <stdlib.h>
#include <string.h>

/* s with control characters as '?', at most 200 bytes: one line whatever a user typed. */
static const char *shown(char out[208], const char *s) {
    size_t j = 0;
    for (; s[j] && j < 200; j++) out[j] = (unsigned char)s[j] < 0x20 || s[j] == 0x7f ? '?' : s[j];
    out[j] = '\0';
    return out;
}

static int name_is(const char *name, size_t nlen, const char *want) {
    return strlen(want) == nlen && strncmp(name, want, nlen) == 0;
}

int tfps_cli_parse(int argc, char **argv, const tfps_cli_flag *own, int nown, const char *const *shared,
                   int quiet_level, tfps_options *o, const char **pos, int maxpos, int *npos, char *err,
                   size_t errlen) {
    /* The shared options are handed to tfps_options_parse as an argv of their own. */
    char **sub = calloc((size_t)argc + 1, sizeof(*sub));
    if (!sub) return tfps_seterr(err, errlen, "out of memory");
    int nsub = 0, flags_done = 0, log_level_flag = 0, rc = TFPS_ERR;
    char txt[208];
    sub[nsub++] = argc > 0 ? argv[0] : "tfps";
    *npos = 0;
    for (int a = 1; a < argc; a++) {
        const char *arg = argv[a];
        if (!flags_done && strcmp(arg, "--") == 0) {
            flags_done = 1;
            continue;
        }
        if (flags_done || arg[0] != '-' || strcmp(arg, "-") == 0) {
            if (*npos >= maxpos) {
                tfps_seterr(err, errlen, "unexpected argument \"%s\": expected at most %d (see --help)", shown(txt, arg),
                            maxpos);
                goto done;
            }
            pos[(*npos)++] = arg;
            continue;
        }
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0 || strcmp(arg, "--version") == 0) {
            sub[nsub++] = argv[a];
            continue;
        }
        if (strncmp(arg, "--", 2) != 0) {
            tfps_seterr(err, errlen, "unknown option \"%s\": see --help for the options", shown(txt, arg));
            goto done;
        }
        const char *name = arg + 2, *eq = strchr(name, '=');
        const size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        const tfps_cli_flag *f = NULL;
        for (int i = 0; i < nown && !f; i++)
            if (name_is(name, nlen, own[i].name)) f = &own[i];
        if (f) {
            if (f->set) *f->set = 1;
            if (!f->value) {
                if (eq) {
                    tfps_seterr(err, errlen, "--%s takes no value: expected --%s alone", f->name, f->name);
                    goto done;
                }
                continue;
            }
            if (eq) {
                *f->value = eq + 1;
            } else if (a + 1 < argc) {
                *f->value = argv[++a];
            } else {
                tfps_seterr(err, errlen, "--%s: missing value: expected --%s VALUE", f->name, f->name);
                goto done;
            }
            if (!**f->value) {
                tfps_seterr(err, errlen, "--%s: empty value: expected --%s VALUE", f->name, f->name);
                goto done;
            }
            continue;
        }
        int is_shared = 0;
        for (int i = 0; shared && shared[i] && !is_shared; i++) is_shared = name_is(name, nlen, shared[i]);
        if (!is_shared) {
            tfps_seterr(err, errlen, "unknown option \"%s\": see --help for the options", shown(txt, arg));
            goto done;
        }
        if (name_is(name, nlen, "log-level")) log_level_flag = 1;
        sub[nsub++] = argv[a];
        if (!eq && a + 1 < argc) sub[nsub++] = argv[++a];   // its value (options.c says when one is missing)
    }
    if (tfps_options_parse(o, nsub, sub, err, errlen) != TFPS_OK) goto done;
    if (!log_level_flag && !getenv("TFPS_LOG_LEVEL")) o->log_level = quiet_level;
    tfps_log_min_level = o->log_level;
    rc = TFPS_OK;
done:
    free(sub);
    return rc;
}
