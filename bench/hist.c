/* SPDX-License-Identifier: MIT */
/*
 * hist.c - see hist.h. Index arithmetic: a value v >= 2 * HIST_SUB with its
 * top set bit at position m is shifted right by s = m - HIST_SUB_BITS so that
 * it lands in [HIST_SUB, 2 * HIST_SUB); its bucket is (s + 1) * HIST_SUB plus
 * that shifted value minus HIST_SUB. Values below 2 * HIST_SUB map to
 * themselves, which makes the index continuous at the seam.
 */
#include "hist.h"

#include <math.h>
#include <string.h>

unsigned hist_index(uint64_t v)
{
	if (v < 2 * HIST_SUB)
		return (unsigned)v;
	unsigned m = 63u - (unsigned)__builtin_clzll(v);
	unsigned s = m - HIST_SUB_BITS;

	return (s + 1) * HIST_SUB + (unsigned)(v >> s) - HIST_SUB;
}

uint64_t hist_bucket_low(unsigned i)
{
	if (i < 2 * HIST_SUB)
		return i;
	unsigned s = i / HIST_SUB - 1;

	return (uint64_t)(i % HIST_SUB + HIST_SUB) << s;
}

uint64_t hist_bucket_high(unsigned i)
{
	if (i < 2 * HIST_SUB)
		return i;
	unsigned s = i / HIST_SUB - 1;

	return hist_bucket_low(i) + ((uint64_t)1 << s) - 1;
}

void hist_init(struct hist *h)
{
	memset(h, 0, sizeof(*h));
	h->min = UINT64_MAX;
}

void hist_merge(struct hist *dst, const struct hist *src)
{
	for (unsigned i = 0; i < HIST_BUCKETS; i++)
		dst->b[i] += src->b[i];
	dst->count += src->count;
	if (src->min < dst->min)
		dst->min = src->min;
	if (src->max > dst->max)
		dst->max = src->max;
	dst->sum = dst->sum + src->sum < dst->sum ? UINT64_MAX
						  : dst->sum + src->sum;
}

uint64_t hist_percentile(const struct hist *h, double p)
{
	if (!h->count)
		return 0;
	if (p > 100.0)
		p = 100.0;
	uint64_t rank = (uint64_t)ceil(p / 100.0 * (double)h->count);
	uint64_t seen = 0;

	if (rank < 1)
		rank = 1;
	for (unsigned i = 0; i < HIST_BUCKETS; i++) {
		seen += h->b[i];
		if (seen >= rank) {
			uint64_t v = hist_bucket_high(i);
			if (v > h->max)
				v = h->max;
			if (v < h->min)
				v = h->min;
			return v;
		}
	}
	return h->max;
}

double hist_mean(const struct hist *h)
{
	return h->count ? (double)h->sum / (double)h->count : 0.0;
}
