/* SPDX-License-Identifier: MIT */
/*
 * stats.c - see stats.h.
 */
#include "stats.h"

#include <string.h>

static const char *const close_names[] = {
#define STATS_X_NAME(name, id, text) #name,
	STATS_CLOSE_REASONS(STATS_X_NAME)
#undef STATS_X_NAME
};

static const char *const close_texts[] = {
#define STATS_X_TEXT(name, id, text) text,
	STATS_CLOSE_REASONS(STATS_X_TEXT)
#undef STATS_X_TEXT
};

static const char *const close_ids[] = {
#define STATS_X_ID(name, id, text) #id,
	STATS_CLOSE_REASONS(STATS_X_ID)
#undef STATS_X_ID
};

const char *stats_close_name(enum stats_close c)
{
	return c < STATS_CLOSE__COUNT ? close_names[c] : "?";
}

const char *stats_close_text(enum stats_close c)
{
	return c < STATS_CLOSE__COUNT ? close_texts[c] : "?";
}

const char *stats_close_id(enum stats_close c)
{
	return c < STATS_CLOSE__COUNT ? close_ids[c] : "?";
}

void stats_sum(struct stats *dst, const struct stats *src)
{
	const stat_t *s = (const stat_t *)src;
	stat_t *d = (stat_t *)dst;

	for (size_t i = 0; i < sizeof(*src) / sizeof(stat_t); i++)
		stat_add(&d[i], stat_get(&s[i]));
}

/* Append " name=value" (or just " name" for a heading) to out. */
static size_t add(char *out, size_t len, size_t n, const char *name,
		  const uint64_t *v)
{
	int w;

	if (n >= len)
		return n;
	if (v)
		w = snprintf(out + n, len - n, " %s=%llu", name,
			     (unsigned long long)*v);
	else
		w = snprintf(out + n, len - n, " %s", name);
	return w < 0 ? n : n + (size_t)w;
}

void stats_format(const struct stats *s, char *out, size_t len)
{
	const struct {
		const char *name;
		const stat_t *v;
	} head[] = {
		{ "accepted", &s->accepted },   { "active", &s->active },
		{ "bytes_in", &s->bytes_in },   { "bytes_out", &s->bytes_out },
		{ "loops", &s->loops },         { "cqes", &s->cqes },
		{ "enobufs", &s->enobufs },
		{ "accept_errors", &s->accept_errors },
		{ "rejected", &s->rejected },
	};
	uint64_t v;
	size_t n = (size_t)snprintf(out, len, "stats:");

	for (size_t i = 0; i < sizeof(head) / sizeof(head[0]); i++) {
		v = stat_get(head[i].v);
		n = add(out, len, n, head[i].name, &v);
	}
	n = add(out, len, n, "closed:", NULL);
	for (int i = 0; i < STATS_CLOSE__COUNT; i++) {
		v = stat_get(&s->closed[i]);
		n = add(out, len, n, stats_close_id(i), &v);
	}
	n = add(out, len, n, "proto_errors:", NULL);
	for (int i = 1; i < PROTO_E__COUNT; i++) {
		v = stat_get(&s->proto_errors[i]);
		n = add(out, len, n, proto_err_name(i), &v);
	}
	v = stat_get(&s->closed[STATS_CLOSE_BAD_NUMBER]);
	add(out, len, n, "bad_number", &v);
}
