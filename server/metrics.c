/* SPDX-License-Identifier: MIT */
/*
 * metrics.c - see metrics.h. The writer below knows families and samples,
 * never a metric: metrics_write expands stats.h's table into one call per
 * family and sample.
 */
#include "metrics.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "blkcache.h"
#include "io.h"
#include "json.h"
#include "qsbr.h"
#include "queues.h"
#include "server.h"
#include "stats.h"
#include "store.h"
#include "table.h"
#include "waiters.h"
#include "wal.h"

/*
 * One writer for both formats. A family's heading is written with its
 * first sample, so a family without samples (no reactors, no backend)
 * leaves nothing.
 */
struct metrics_out {
	struct json_out o;
	bool json;
	size_t families;  /* written so far */
	size_t samples;   /* in the current family */
	const char *name; /* of the current family */
	const char *type;
	const char *label; /* its label name, or NULL */
	const char *help;
};

/* Close the current family (a JSON object of labelled samples). */
static void fam_end(struct metrics_out *m)
{
	if (m->json && m->label && m->samples)
		json_text(&m->o, "}");
	m->samples = 0;
}

static void fam_begin(struct metrics_out *m, const char *name, const char *type,
		      const char *label, const char *help)
{
	fam_end(m);
	m->name = name;
	m->type = type;
	m->label = label;
	m->help = help;
}

/* The family's heading, before its first sample. */
static void fam_heading(struct metrics_out *m)
{
	if (!m->json)
		json_printf(&m->o, "# HELP %s %s\n# TYPE %s %s\n", m->name,
			    m->help, m->name, m->type);
	else
		json_printf(&m->o, "%s\"%s\":%s", m->families ? "," : "",
			    m->name, m->label ? "{" : "");
	m->families++;
}

/* One sample; @lv is the label value (NULL for an unlabelled family). */
static void fam_sample(struct metrics_out *m, const char *lv, uint64_t v)
{
	if (!m->samples)
		fam_heading(m);
	if (!lv)
		lv = "";
	if (!m->json && m->label)
		json_printf(&m->o, "%s{%s=\"%s\"} %" PRIu64 "\n", m->name,
			    m->label, lv, v);
	else if (!m->json)
		json_printf(&m->o, "%s %" PRIu64 "\n", m->name, v);
	else if (m->label)
		json_printf(&m->o, "%s\"%s\":%" PRIu64, m->samples ? "," : "",
			    lv, v);
	else
		json_printf(&m->o, "%" PRIu64, v);
	m->samples++;
}

/* An info family's one sample: the string @s as its label's value. */
static void fam_info(struct metrics_out *m, const char *s)
{
	if (!s)
		return;
	if (!m->json) {
		fam_heading(m);
		json_printf(&m->o, "%s{%s=\"%s\"} 1\n", m->name, m->label, s);
		return;
	}
	json_printf(&m->o, "%s\"%s\":", m->families++ ? "," : "", m->label);
	json_cstr(&m->o, s);
}

/* Resident set size from /proc/self/statm; 0 if it cannot be read. */
static uint64_t rss_bytes(void)
{
	char text[128];
	unsigned long long pages_total, pages_rss;
	int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return 0;
	n = read(fd, text, sizeof(text) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	text[n] = '\0';
	if (sscanf(text, "%llu %llu", &pages_total, &pages_rss) != 2)
		return 0;
	return (uint64_t)pages_rss * (uint64_t)sysconf(_SC_PAGESIZE);
}

/* Reactor @i's counter @field (0 for a reactor not created yet). */
#define REACTOR_STAT(rs, i, field) ((rs)[i] ? stat_get(&(rs)[i]->field) : 0)

int metrics_write(struct buf *out, bool json, const char *backend,
		  const struct stats *const *rs, size_t nreactors,
		  struct store *st)
{
	struct metrics_out m = { .o = { .b = out }, .json = json };
	struct stats t = { 0 };
	char id[24];

	for (size_t i = 0; i < nreactors; i++)
		if (rs[i])
			stats_sum(&t, rs[i]);
	if (json)
		json_text(&m.o, "{");
#define X_FAMILY(name, type, label, help) \
	fam_begin(&m, #name, #type, label, help);
#define X_FIELD(field, value, line) fam_sample(&m, value, stat_get(&t.field));
#define X_ARRAY(field, count, first, name_of, line) \
	for (unsigned i = first; i < count; i++)    \
		fam_sample(&m, name_of(i), stat_get(&t.field[i]));
#define X_PER_REACTOR(field, line)                              \
	for (size_t i = 0; i < nreactors; i++) {                \
		snprintf(id, sizeof(id), "%zu", i);             \
		fam_sample(&m, id, REACTOR_STAT(rs, i, field)); \
	}
#define X_COMPUTED(value, expr) fam_sample(&m, value, (uint64_t)(expr));
#define X_INFO(expr) fam_info(&m, expr);
	STATS_METRICS(X_FAMILY, X_FIELD, X_ARRAY, X_PER_REACTOR, X_COMPUTED,
		      X_INFO)
#undef X_FAMILY
#undef X_FIELD
#undef X_ARRAY
#undef X_PER_REACTOR
#undef X_COMPUTED
#undef X_INFO
	fam_end(&m);
	if (json)
		json_text(&m.o, "}\n");
	return m.o.err;
}

int metrics_of_server(struct buf *out, bool json, const struct server *srv,
		      struct store *st)
{
	size_t n = srv ? srv->nreactors : 0;
	const struct stats **rs = NULL;
	int ret;

	if (n) {
		rs = calloc(n, sizeof(*rs));
		if (!rs)
			return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++)
		rs[i] = srv->stats ? srv->stats[i] : NULL;
	ret = metrics_write(out, json, srv ? srv->io->name : NULL, rs, n, st);
	free(rs);
	return ret;
}
