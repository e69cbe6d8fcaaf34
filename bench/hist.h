/* SPDX-License-Identifier: MIT */
/*
 * hist.h - a log-linear latency histogram in the spirit of HdrHistogram.
 *
 * Values are unsigned 64-bit counts of nanoseconds. Values below 64 get one
 * bucket each; above that every power-of-two range [2^k, 2^(k+1)) is split
 * into 32 equal sub-buckets, so any recorded value is known to within 1/32
 * (about 3 %) of itself. The whole range of uint64_t fits in 1920 buckets
 * (15 KiB), so recording is a count-leading-zeros and an increment, and two
 * histograms merge by adding their arrays: each bench thread records into its
 * own and the main thread merges them at the end. Not thread-safe.
 */
#ifndef RS_BENCH_HIST_H
#define RS_BENCH_HIST_H

#include <stdint.h>

#define HIST_SUB_BITS 5
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_BUCKETS ((64 - HIST_SUB_BITS + 1) * HIST_SUB)

struct hist {
	uint64_t count;
	uint64_t min;
	uint64_t max;
	uint64_t sum; /* saturates instead of wrapping */
	uint64_t b[HIST_BUCKETS];
};

/* Empty the histogram. */
void hist_init(struct hist *h);

/* Bucket index of @v, and the lowest and highest value of bucket @i. */
unsigned hist_index(uint64_t v);
uint64_t hist_bucket_low(unsigned i);
uint64_t hist_bucket_high(unsigned i);

/* Count one value. */
static inline void hist_record(struct hist *h, uint64_t v)
{
	h->b[hist_index(v)]++;
	h->count++;
	if (v < h->min)
		h->min = v;
	if (v > h->max)
		h->max = v;
	h->sum = h->sum + v < h->sum ? UINT64_MAX : h->sum + v;
}

/* Add every count of @src to @dst. */
void hist_merge(struct hist *dst, const struct hist *src);

/*
 * The value at percentile @p (0 < p <= 100): the highest value equivalent to
 * the bucket that holds the ceil(p/100 * count)-th smallest value, clipped to
 * the exact min and max. Returns 0 for an empty histogram.
 */
uint64_t hist_percentile(const struct hist *h, double p);

/* Exact mean (0 when empty). */
double hist_mean(const struct hist *h);

#endif
