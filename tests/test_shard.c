/* test_shard.c -- model layout, deterministic init and the three shard plans. */
#include "layout.h"
#include "shard.h"
#include "tfps.h"

#include <CUnit/Basic.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static tfps_layout mk(int h1, int h2) {
    tfps_layout l;
    CU_ASSERT_FATAL(tfps_layout_init(&l, 784, h1, h2, 10, NULL, 0) == TFPS_OK);
    return l;
}

static void test_layout_default(void) {
    tfps_layout l = mk(300, 100);
    CU_ASSERT_EQUAL(l.total, 266610);
    CU_ASSERT_EQUAL(l.total * sizeof(float), 1066440);
    CU_ASSERT_EQUAL(tfps_max_message_bytes(&l), 1066440 + 1048576);   // a whole-model pull + 1 MiB of framing
    size_t want_off[] = {0, 235200, 235500, 265500, 265600, 266600};
    size_t want_size[] = {235200, 300, 30000, 100, 1000, 10};
    for (int v = 0; v < TFPS_NVARS; v++) {
        CU_ASSERT_EQUAL(l.off[v], want_off[v]);
        CU_ASSERT_EQUAL(l.size[v], want_size[v]);
    }
    CU_ASSERT_EQUAL(tfps_layout_var_of(&l, 0), TFPS_VAR_W1);
    CU_ASSERT_EQUAL(tfps_layout_var_of(&l, 235199), TFPS_VAR_W1);
    CU_ASSERT_EQUAL(tfps_layout_var_of(&l, 235200), TFPS_VAR_B1);
    CU_ASSERT_EQUAL(tfps_layout_var_of(&l, 266609), TFPS_VAR_B3);
    CU_ASSERT_STRING_EQUAL(tfps_var_name(TFPS_VAR_W2), "W2");
}

static void test_layout_errors(void) {
    tfps_layout l = mk(300, 100), before = l;
    char err[TFPS_ERR_LEN];
    CU_ASSERT_EQUAL(tfps_layout_init(&l, 784, 0, 100, 10, err, sizeof(err)), TFPS_ERR);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "first layer neurons 0"));
    CU_ASSERT_EQUAL(tfps_layout_init(&l, 784, 300, 70000, 10, err, sizeof(err)), TFPS_ERR);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "second layer neurons 70000"));
    CU_ASSERT(memcmp(&l, &before, sizeof(l)) == 0);   // untouched on error
    tfps_layout a = mk(300, 100), b = mk(300, 101);
    CU_ASSERT_NOT_EQUAL(tfps_layout_digest(&a), tfps_layout_digest(&b));
}

static void test_init_values(void) {
    tfps_layout l = mk(300, 100);
    float *all = malloc(l.total * sizeof(float)), *part = malloc(l.total * sizeof(float));
    tfps_layout_init_range(&l, 7, 0, l.total, all);
    // any sub-range computed alone equals the same slice of the whole: a ps can init its own ranges
    tfps_layout_init_range(&l, 7, 100003, 250000, part);
    CU_ASSERT(memcmp(part, all + 100003, (250000 - 100003) * sizeof(float)) == 0);
    const double a1 = sqrt(6.0 / (784 + 300)), a3 = sqrt(6.0 / (100 + 10));
    double sum = 0, maxabs = 0;
    for (size_t i = l.off[TFPS_VAR_W1]; i < l.off[TFPS_VAR_W1] + l.size[TFPS_VAR_W1]; i++) {
        sum += all[i];
        if (fabs(all[i]) > maxabs) maxabs = fabs(all[i]);
    }
    CU_ASSERT(maxabs <= a1 && maxabs > 0.99 * a1);   // Glorot-uniform limit, and it is reached
    CU_ASSERT(fabs(sum / l.size[TFPS_VAR_W1]) < 0.01 * a1);   // mean ~ 0
    for (size_t i = 0; i < l.size[TFPS_VAR_B1]; i++) CU_ASSERT_EQUAL(all[l.off[TFPS_VAR_B1] + i], 0.0f);
    for (size_t i = 0; i < l.size[TFPS_VAR_W3]; i++) CU_ASSERT(fabs(all[l.off[TFPS_VAR_W3] + i]) <= a3);
    // another seed, other numbers
    tfps_layout_init_range(&l, 8, 0, l.total, part);
    size_t same = 0;
    for (size_t i = 0; i < l.off[TFPS_VAR_B1]; i++) same += part[i] == all[i];
    CU_ASSERT(same < 100);
    free(all);
    free(part);
}

/* Checks the plan's invariants against a flat reference: every index owned exactly once. */
static void check_plan(const tfps_layout *l, const tfps_shard_plan *p) {
    unsigned char *seen = calloc(l->total, 1);
    size_t prev_end = 0;
    CU_ASSERT_FATAL(p->nranges >= 1);
    for (int r = 0; r < p->nranges; r++) {
        const tfps_shard_range *g = &p->ranges[r];
        CU_ASSERT(g->begin == prev_end);   // sorted and contiguous
        CU_ASSERT(g->end > g->begin);      // non-empty
        CU_ASSERT(g->ps >= 0 && g->ps < p->num_ps);
        if (r > 0) CU_ASSERT(p->ranges[r - 1].ps != g->ps);   // merged
        for (size_t i = g->begin; i < g->end && i < l->total; i++) seen[i]++;
        prev_end = g->end;
    }
    CU_ASSERT_EQUAL(prev_end, l->total);
    size_t bad = 0, sum = 0;
    for (size_t i = 0; i < l->total; i++) bad += seen[i] != 1;
    CU_ASSERT_EQUAL(bad, 0);
    for (int k = 0; k < p->num_ps; k++) sum += tfps_shard_plan_ps_elems(p, k);
    CU_ASSERT_EQUAL(sum, l->total);
    // owner() agrees with a linear scan on a spread of indices
    for (size_t i = 0; i < l->total; i += 997) {
        int want = -1;
        for (int r = 0; r < p->nranges; r++)
            if (i >= p->ranges[r].begin && i < p->ranges[r].end) want = p->ranges[r].ps;
        CU_ASSERT_EQUAL(tfps_shard_plan_owner(p, i), want);
    }
    CU_ASSERT_EQUAL(tfps_shard_plan_owner(p, l->total), -1);
    free(seen);
}

static void test_balanced(void) {
    int sizes[][2] = {{300, 100}, {1, 1}, {17, 3}, {1024, 512}};
    for (int s = 0; s < 4; s++) {
        tfps_layout l = mk(sizes[s][0], sizes[s][1]);
        for (int m = 1; m <= 9; m++) {
            tfps_shard_plan p, q;
            CU_ASSERT_FATAL(tfps_shard_plan_build(&p, &l, m, TFPS_SHARD_BALANCED, NULL, 0) == TFPS_OK);
            check_plan(&l, &p);
            CU_ASSERT_EQUAL(p.nranges, m);   // one contiguous range per ps
            size_t lo = (size_t)-1, hi = 0;
            for (int k = 0; k < m; k++) {
                size_t e = tfps_shard_plan_ps_elems(&p, k);
                if (e < lo) lo = e;
                if (e > hi) hi = e;
            }
            CU_ASSERT(hi - lo <= 1);   // balanced within one element
            CU_ASSERT_FATAL(tfps_shard_plan_build(&q, &l, m, TFPS_SHARD_BALANCED, NULL, 0) == TFPS_OK);
            CU_ASSERT_EQUAL(p.digest, q.digest);   // deterministic
            CU_ASSERT(memcmp(p.ranges, q.ranges, (size_t)p.nranges * sizeof(*p.ranges)) == 0);
            tfps_shard_plan_destroy(&q);
            tfps_shard_plan_destroy(&p);
        }
    }
}

static size_t ps_bytes(const tfps_shard_plan *p, int k) { return tfps_shard_plan_ps_elems(p, k) * sizeof(float); }

static void test_tf_strategies(void) {
    tfps_layout l = mk(300, 100);
    tfps_shard_plan rr, gr;
    CU_ASSERT_FATAL(tfps_shard_plan_build(&rr, &l, 2, TFPS_SHARD_ROUND_ROBIN, NULL, 0) == TFPS_OK);
    check_plan(&l, &rr);
    CU_ASSERT_EQUAL(ps_bytes(&rr, 0), 1064800);   // W1 + W2 + W3
    CU_ASSERT_EQUAL(ps_bytes(&rr, 1), 1640);      // b1 + b2 + b3
    CU_ASSERT_FATAL(tfps_shard_plan_build(&gr, &l, 2, TFPS_SHARD_GREEDY, NULL, 0) == TFPS_OK);
    check_plan(&l, &gr);
    CU_ASSERT_EQUAL(ps_bytes(&gr, 0), 940800);    // W1 alone
    CU_ASSERT_EQUAL(ps_bytes(&gr, 1), 125640);    // everything else
    CU_ASSERT_NOT_EQUAL(rr.digest, gr.digest);
    tfps_shard_plan_destroy(&rr);
    tfps_shard_plan_destroy(&gr);
    // more ps than variables: some ps own nothing, coverage stays exact
    for (int s = TFPS_SHARD_ROUND_ROBIN; s <= TFPS_SHARD_GREEDY; s++) {
        tfps_shard_plan p;
        CU_ASSERT_FATAL(tfps_shard_plan_build(&p, &l, 8, (tfps_shard_strategy)s, NULL, 0) == TFPS_OK);
        check_plan(&l, &p);
        CU_ASSERT_EQUAL(tfps_shard_plan_ps_elems(&p, 7), 0);
        tfps_shard_plan_destroy(&p);
    }
}

static void test_digest_and_errors(void) {
    tfps_layout l = mk(300, 100), l2 = mk(300, 99);
    tfps_shard_plan a, b, c;
    char err[TFPS_ERR_LEN];
    CU_ASSERT_FATAL(tfps_shard_plan_build(&a, &l, 2, TFPS_SHARD_BALANCED, NULL, 0) == TFPS_OK);
    CU_ASSERT_FATAL(tfps_shard_plan_build(&b, &l, 3, TFPS_SHARD_BALANCED, NULL, 0) == TFPS_OK);
    CU_ASSERT_FATAL(tfps_shard_plan_build(&c, &l2, 2, TFPS_SHARD_BALANCED, NULL, 0) == TFPS_OK);
    CU_ASSERT_NOT_EQUAL(a.digest, b.digest);
    CU_ASSERT_NOT_EQUAL(a.digest, c.digest);
    tfps_shard_plan_destroy(&a);
    tfps_shard_plan_destroy(&b);
    tfps_shard_plan_destroy(&c);
    tfps_shard_plan_destroy(&c);   // destroy twice is safe
    CU_ASSERT_EQUAL(tfps_shard_plan_build(&a, &l, 0, TFPS_SHARD_BALANCED, err, sizeof(err)), TFPS_ERR);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "0 ps out of range"));
    CU_ASSERT_PTR_NULL(a.ranges);
    CU_ASSERT_EQUAL(tfps_shard_plan_build(&a, &l, TFPS_MAX_PS + 1, TFPS_SHARD_GREEDY, err, sizeof(err)), TFPS_ERR);
    tfps_shard_strategy s;
    CU_ASSERT_EQUAL(tfps_shard_strategy_from_name("round-robin", &s), TFPS_OK);
    CU_ASSERT_EQUAL(s, TFPS_SHARD_ROUND_ROBIN);
    CU_ASSERT_EQUAL(tfps_shard_strategy_from_name("roundrobin", &s), TFPS_ERR);
}

/* Fuzz: random layouts and ps counts, every strategy, checked against the flat reference. */
static void test_fuzz(void) {
    srand(12345);
    for (int it = 0; it < 60; it++) {
        tfps_layout l;
        CU_ASSERT_FATAL(tfps_layout_init(&l, 1 + rand() % 50, 1 + rand() % 40, 1 + rand() % 40, 1 + rand() % 12,
                                         NULL, 0) == TFPS_OK);
        int m = 1 + rand() % 12;
        for (int s = 0; s < 3; s++) {
            tfps_shard_plan p;
            CU_ASSERT_FATAL(tfps_shard_plan_build(&p, &l, m, (tfps_shard_strategy)s, NULL, 0) == TFPS_OK);
            check_plan(&l, &p);
            tfps_shard_plan_destroy(&p);
        }
    }
}

int main(void) {
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("layout_and_shard", NULL, NULL);
    CU_add_test(s, "layout of 784-300-100-10", test_layout_default);
    CU_add_test(s, "layout errors and digest", test_layout_errors);
    CU_add_test(s, "deterministic Glorot init by flat index", test_init_values);
    CU_add_test(s, "balanced: exact cover, within one element, deterministic", test_balanced);
    CU_add_test(s, "round-robin and greedy reproduce TF's byte splits", test_tf_strategies);
    CU_add_test(s, "digests differ, bad ps counts refused", test_digest_and_errors);
    CU_add_test(s, "fuzz against a flat reference", test_fuzz);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    int failed = (int)(CU_get_number_of_tests_failed() + CU_get_number_of_suites_failed());
    CU_cleanup_registry();
    return failed;
}
