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
		  const stat_t *v)
{
	int w;

	if (n >= len)
		return n;
	if (v)
		w = snprintf(out + n, len - n, " %s=%llu", name,
			     (unsigned long long)stat_get(v));
	else
		w = snprintf(out + n, len - n, " %s", name);
	return w < 0 ? n : n + (size_t)w;
}

void stats_format(const struct stats *s, char *out, size_t len)
{
	size_t n = (size_t)snprintf(out, len, "stats:");

	/* The table's fields marked for the line, in its order. */
#define X_FIELD(field, ...) X_SCALAR(field, __VA_ARGS__)
#define X_PER_REACTOR(field, line) X_SCALAR(field, NULL, line)
#define X_SCALAR(field, value, line) \
	if (line)                    \
		n = add(out, len, n, #field, &s->field);
#define X_ARRAY(field, count, first, name_of, line)                     \
	if (line) {                                                     \
		n = add(out, len, n, #field ":", NULL);                 \
		for (unsigned i = first; i < count; i++)                \
			n = add(out, len, n, name_of(i), &s->field[i]); \
	}
	STATS_METRICS(STATS_X_NONE, X_FIELD, X_ARRAY, X_PER_REACTOR,
		      STATS_X_NONE, STATS_X_NONE)
#undef X_FIELD
#undef X_PER_REACTOR
#undef X_SCALAR
#undef X_ARRAY
}
