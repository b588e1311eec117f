/* tfevents_write.c -- test driver for tests/test_tfevents.py (not installed).
 *
 *   tfevents_write DIR [-s STEP [TAG VALUE]...]...
 *
 * Opens a TensorBoard event writer in DIR (common/tfevents.c), writes one
 * event per -s with the TAG VALUE pairs that follow it (VALUE as strtof reads
 * it: hex floats such as 0x1.8p+0 are exact), prints the file's path on
 * stdout, and exits 0; on any error it prints the message and exits 1 (2 for
 * a usage error). */
#include "tfevents.h"
#include "tfps.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int usage(const char *why) {
    fprintf(stderr, "tfevents_write: %s\nusage: tfevents_write DIR [-s STEP [TAG VALUE]...]...\n", why);
    return 2;
}

int main(int argc, char **argv) {
    if (argc < 2) return usage("no DIR");
    char err[TFPS_ERR_LEN];
    const char **tags = calloc((size_t)argc, sizeof(*tags));
    float *vals = calloc((size_t)argc, sizeof(*vals));
    if (!tags || !vals) return 1;
    tfps_tfevents *w = tfps_tfevents_open(argv[1], err, sizeof(err));
    if (!w) {
        fprintf(stderr, "tfevents_write: %s\n", err);
        return 1;
    }
    int i = 2;
    while (i < argc) {
        if (strcmp(argv[i], "-s") != 0 || i + 1 >= argc) return usage("expected -s STEP");
        char *end;
        errno = 0;
        const long long step = strtoll(argv[i + 1], &end, 10);
        if (errno || *end || end == argv[i + 1]) return usage("STEP is not an integer");
        i += 2;
        int n = 0;
        while (i < argc && strcmp(argv[i], "-s") != 0) {
            if (i + 1 >= argc) return usage("a TAG without a VALUE");
            tags[n] = argv[i];
            vals[n] = strtof(argv[i + 1], &end);
            if (*end || end == argv[i + 1]) return usage("VALUE is not a number");
            n++;
            i += 2;
        }
        if (tfps_tfevents_scalars(w, step, n, tags, vals, err, sizeof(err)) != TFPS_OK) {
            fprintf(stderr, "tfevents_write: %s\n", err);
            return 1;
        }
    }
    printf("%s\n", tfps_tfevents_path(w));
    tfps_tfevents_close(w);
    free(tags);
    free(vals);
    return 0;
}
