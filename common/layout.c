/* layout.c -- see layout.h. */
#include "layout.h"
#include "tfps.h"

#include <math.h>

static const char *var_names[TFPS_NVARS] = {"W1", "b1", "W2", "b2", "W3", "b3"};

const char *tfps_var_name(int var) { return var >= 0 && var < TFPS_NVARS ? var_names[var] : "?"; }

int tfps_layout_init(tfps_layout *l, int in, int h1, int h2, int out, char *err, size_t errlen) {
    const int w[4] = {in, h1, h2, out};
    static const char *what[4] = {"input width", "first layer neurons", "second layer neurons", "output classes"};
    for (int i = 0; i < 4; i++)
        if (w[i] < 1 || w[i] > TFPS_MAX_UNITS)
            return tfps_seterr(err, errlen, "layout: %s %d out of range: expected 1..%d", what[i], w[i],
                               TFPS_MAX_UNITS);
    tfps_layout n = {.in = in, .h1 = h1, .h2 = h2, .out = out};
    n.size[TFPS_VAR_W1] = (size_t)in * h1;
    n.size[TFPS_VAR_B1] = (size_t)h1;
    n.size[TFPS_VAR_W2] = (size_t)h1 * h2;
    n.size[TFPS_VAR_B2] = (size_t)h2;
    n.size[TFPS_VAR_W3] = (size_t)h2 * out;
    n.size[TFPS_VAR_B3] = (size_t)out;
    size_t off = 0;
    for (int v = 0; v < TFPS_NVARS; v++) {
        n.off[v] = off;
        off += n.size[v];
    }
    n.total = off;
    *l = n;
    return TFPS_OK;
}

int tfps_layout_var_of(const tfps_layout *l, size_t i) {
    for (int v = TFPS_NVARS - 1; v >= 0; v--)
        if (i >= l->off[v]) return v;
    return 0;
}

uint64_t tfps_fnv1a(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

uint64_t tfps_fnv1a_u64(uint64_t h, uint64_t v) {
    unsigned char b[8];
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(v >> (8 * i));   /* fixed byte order */
    return tfps_fnv1a(h, b, 8);
}

uint64_t tfps_layout_digest(const tfps_layout *l) {
    uint64_t h = TFPS_FNV_OFFSET;
    h = tfps_fnv1a_u64(h, (uint64_t)l->in);
    h = tfps_fnv1a_u64(h, (uint64_t)l->h1);
    h = tfps_fnv1a_u64(h, (uint64_t)l->h2);
    h = tfps_fnv1a_u64(h, (uint64_t)l->out);
    return h;
}

/* splitmix64's finaliser: a bijective mix, so (seed, i) -> 64 well-spread bits. */
static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static float glorot_limit(const tfps_layout *l, int var) {
    int fan_in = 0, fan_out = 0;
    switch (var) {
    case TFPS_VAR_W1: fan_in = l->in; fan_out = l->h1; break;
    case TFPS_VAR_W2: fan_in = l->h1; fan_out = l->h2; break;
    case TFPS_VAR_W3: fan_in = l->h2; fan_out = l->out; break;
    default: return 0.0f;
    }
    return (float)sqrt(6.0 / (double)(fan_in + fan_out));
}

float tfps_layout_init_value(const tfps_layout *l, uint64_t seed, size_t i) {
    int var = tfps_layout_var_of(l, i);
    float a = glorot_limit(l, var);
    if (a == 0.0f) return 0.0f;
    uint64_t r = mix64(mix64(seed + 0x9e3779b97f4a7c15ULL) ^ (uint64_t)i);
    double u = (double)(r >> 11) * (1.0 / 9007199254740992.0);   /* [0, 1) with 53 bits */
    return (float)((2.0 * u - 1.0) * a);
}

void tfps_layout_init_range(const tfps_layout *l, uint64_t seed, size_t begin, size_t end, float *out) {
    for (size_t i = begin; i < end; i++) out[i - begin] = tfps_layout_init_value(l, seed, i);
}

size_t tfps_max_message_bytes(const tfps_layout *l) {
    return l->total * sizeof(float) + (1u << 20);
}

