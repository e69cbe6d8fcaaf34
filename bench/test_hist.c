/* SPDX-License-Identifier: MIT */
/*
 * test_hist.c - unit tests for the latency histogram: bucket arithmetic is
 * continuous and covers uint64_t, percentiles of known distributions match
 * the exact order statistics within one bucket (1/32 relative), and merging
 * per-thread histograms equals recording everything into one.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <math.h>

#include <cmocka.h>

#include "hist.h"

/* Every value lies inside its bucket and indices never go backwards. */
static void test_buckets(void **state)
{
	(void)state;
	unsigned prev = 0;

	for (uint64_t v = 0; v < (1u << 20); v++) {
		unsigned i = hist_index(v);
		assert_true(i >= prev && i <= prev + 1);
		assert_true(hist_bucket_low(i) <= v &&
			    v <= hist_bucket_high(i));
		prev = i;
	}
	for (unsigned k = 6; k < 64; k++) {
		uint64_t v = (uint64_t)1 << k;
		assert_int_equal(hist_index(v - 1) + 1, hist_index(v));
		assert_int_equal(hist_bucket_low(hist_index(v)), v);
	}
	assert_int_equal(hist_index(UINT64_MAX), HIST_BUCKETS - 1);
	assert_true(hist_bucket_high(HIST_BUCKETS - 1) == UINT64_MAX);
}

static void test_empty(void **state)
{
	(void)state;
	static struct hist h;

	hist_init(&h);
	assert_int_equal(hist_percentile(&h, 50), 0);
	assert_true(hist_mean(&h) == 0.0);
}

/* True when @got is within one bucket (1/32 relative) above @want. */
static void assert_close(uint64_t got, uint64_t want)
{
	double lo = (double)want;
	double hi = (double)want * (1.0 + 1.0 / HIST_SUB) + 1.0;

	if ((double)got < lo || (double)got > hi)
		fail_msg("got %llu, want %llu (+1/%u)", (unsigned long long)got,
			 (unsigned long long)want, HIST_SUB);
}

/* 1..100000 uniform: percentile p is p*1000 exactly. */
static void test_uniform(void **state)
{
	(void)state;
	static struct hist h;

	hist_init(&h);
	for (uint64_t v = 1; v <= 100000; v++)
		hist_record(&h, v);
	assert_int_equal(h.count, 100000);
	assert_int_equal(h.min, 1);
	assert_int_equal(h.max, 100000);
	assert_close(hist_percentile(&h, 50), 50000);
	assert_close(hist_percentile(&h, 99), 99000);
	assert_close(hist_percentile(&h, 99.9), 99900);
	assert_int_equal(hist_percentile(&h, 100), 100000);
	assert_true(fabs(hist_mean(&h) - 50000.5) < 1e-6);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Exponential latencies around 50 us with a heavy tail, vs exact ranks. */
static void test_exponential(void **state)
{
	(void)state;
	enum {
		N = 200000
	};
	static struct hist h;
	static uint64_t v[N];
	uint64_t x = 88172645463325252ull;
	const double ps[] = { 1, 25, 50, 90, 99, 99.9, 99.99 };

	hist_init(&h);
	for (int i = 0; i < N; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		double u = ((double)(x >> 11) + 0.5) / 9007199254740992.0;
		v[i] = (uint64_t)(-log(u) * 50000.0) + 1000;
		hist_record(&h, v[i]);
	}
	qsort(v, N, sizeof(v[0]), cmp_u64);
	for (size_t k = 0; k < sizeof(ps) / sizeof(ps[0]); k++) {
		size_t rank = (size_t)ceil(ps[k] / 100.0 * N);
		assert_close(hist_percentile(&h, ps[k]), v[rank - 1]);
	}
	assert_int_equal(hist_percentile(&h, 100), v[N - 1]);
}

/* Two per-thread histograms merged equal one that saw every value. */
static void test_merge(void **state)
{
	(void)state;
	static struct hist a, b, all;

	hist_init(&a);
	hist_init(&b);
	hist_init(&all);
	for (uint64_t v = 0; v < 50000; v++) {
		uint64_t w = v * v % 1000003;
		hist_record(v & 1 ? &a : &b, w);
		hist_record(&all, w);
	}
	hist_merge(&a, &b);
	assert_memory_equal(&a, &all, sizeof(a));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_buckets),
		cmocka_unit_test(test_empty),
		cmocka_unit_test(test_uniform),
		cmocka_unit_test(test_exponential),
		cmocka_unit_test(test_merge),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
