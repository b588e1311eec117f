/* fuzz_config.c -- libFuzzer target: what a user types. Byte 0 picks:
 *   0..5  TF_CONFIG text (config/tfconfig.c): parsed; a success must hold a
 *         consistent cluster (task inside its job, chief found, counts);
 *         an error must be one line.
 *   6     one address (tfps_addr_check).
 *   7     options: the rest split at NUL bytes into argv (config/options.c);
 *         an error must be one line.
 * Built only by tests/fuzz/run.sh (clang). */
#include "options.h"
#include "tfconfig.h"
#include "tfps.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void one_line(const char *err) {
    if (!err[0] || strchr(err, '\n')) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    char *text = malloc(size);   // the rest, NUL-terminated (a NUL inside ends the TF_CONFIG early: fine)
    if (!text) return 0;
    memcpy(text, data + 1, size - 1);
    text[size - 1] = '\0';
    char err[TFPS_ERR_LEN] = "";
    const int sel = data[0] % 8;
    if (sel < 6) {
        tfps_cluster c;
        if (tfps_cluster_parse(&c, text, err, sizeof(err)) == TFPS_OK) {
            if (!c.local) {
                if (c.task_type < 0 || c.task_type >= TFPS_JOB_COUNT) abort();
                const tfps_job_tasks *j = &c.jobs[c.task_type];
                if (c.task_type != TFPS_JOB_EVALUATOR &&
                    (c.task_index < 0 || c.task_index >= j->nslots || !j->addr[c.task_index]))
                    abort();
                if (c.num_ps < 1 || c.num_workers < 0) abort();
                for (int k = 0; k < TFPS_JOB_COUNT; k++)
                    for (int i = 0; i < c.jobs[k].nslots; i++)
                        if (c.jobs[k].addr[i] && tfps_addr_check(c.jobs[k].addr[i], NULL, 0) != TFPS_OK) abort();
            }
            tfps_cluster_destroy(&c);
            tfps_cluster_destroy(&c);   // documented safe twice
        } else {
            one_line(err);
        }
    } else if (sel == 6) {
        if (tfps_addr_check(text, err, sizeof(err)) != TFPS_OK) one_line(err);
    } else {
        char *argv[34] = {"fuzz"};
        int argc = 1;
        for (char *p = text; argc < 33 && p < text + size - 1; p += strlen(p) + 1) argv[argc++] = p;
        argv[argc] = NULL;
        tfps_options o;
        if (tfps_options_parse(&o, argc, argv, err, sizeof(err)) != TFPS_OK) one_line(err);
    }
    free(text);
    return 0;
}
