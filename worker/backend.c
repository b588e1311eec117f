/* backend.c -- what every backend shares: choosing one for --device, and the
 * calls that go through the interface (backend.h). */
#include "backend.h"
#include "log.h"
#include "tfps.h"

#include <cblas.h>
#include <stdlib.h>

tfps_backend *tfps_backend_open(const tfps_options *o, const tfps_layout *l, int max_batch, int *usage, char *err,
                                size_t errlen) {
    *usage = 0;
    if (o->threads > 0) openblas_set_num_threads(o->threads);
#ifdef TFPS_WITH_CUDA
    if (o->device != TFPS_DEVICE_CPU) {
        char name[256], why[TFPS_ERR_LEN];
        size_t mem = 0;
        const int found = tfps_cuda_probe(o->gpu, name, sizeof(name), &mem, why, sizeof(why));
        if (found > 0) {
            tfps_backend *b = tfps_cuda_backend_new(l, max_batch, o->gpu, err, errlen);
            if (b) {
                tfps_info("device: GPU %d, %s, %.1f GiB", o->gpu, name, mem / 1073741824.0);
                return b;
            }
            if (o->device == TFPS_DEVICE_CUDA) return NULL;
            tfps_warn("device auto: the GPU failed (%s); using the CPU", err);
        } else if (o->device == TFPS_DEVICE_CUDA) {
            *usage = 1;
            tfps_seterr(err, errlen, "--device cuda: %s; expected a visible GPU, or --device cpu / auto", why);
            return NULL;
        } else if (found < 0) {
            tfps_warn("device auto: %s; using the CPU", why);
        } else {
            tfps_info("device auto: %s; using the CPU", why);
        }
    }
#else
    if (o->device == TFPS_DEVICE_CUDA) {
        *usage = 1;
        tfps_seterr(err, errlen, "--device cuda: this build has no CUDA backend (nvcc was not found when it was "
                                 "built); expected --device cpu or auto");
        return NULL;
    }
    if (o->device == TFPS_DEVICE_AUTO) tfps_debug("device auto: this build has no CUDA backend; using the CPU");
#endif
    tfps_backend *b = tfps_cpu_backend_new(l, max_batch);
    if (!b) tfps_seterr(err, errlen, "cpu backend: out of memory for batch %d", max_batch);
    return b;
}

void tfps_backend_free(tfps_backend *b) {
    if (b) b->free(b);
}

void *tfps_backend_host_alloc(tfps_backend *b, size_t bytes) {
    return b && b->host_alloc ? b->host_alloc(b, bytes) : malloc(bytes);
}

void tfps_backend_host_free(tfps_backend *b, void *p) {
    if (b && b->host_free) b->host_free(b, p);
    else free(p);
}
