/* SPDX-License-Identifier: MIT */
/*
 * conn.c - request intake for one connection (see conn.h).
 *
 * The common case costs no copy: requests that lie wholly inside one receive
 * buffer are parsed and executed in place. Only the bytes of a request that
 * spans receive buffers are gathered in the spill buffer, which is released
 * again when it grew large (so an idle connection holds no heap memory).
 */
#include "conn.h"

#include <errno.h>

#include "store.h"

/* A spill buffer above this is freed once its request is done. */
#define CONN_SPILL_KEEP 16384

static int run(struct conn *c, struct store_thread *th, const uint8_t *p,
	       size_t len, enum stats_close *why, struct stats *stats)
{
	struct proto_req req;
	int ret = proto_parse(p, len, &req);

	if (ret) {
		*why = STATS_CLOSE_PROTO;
		return ret;
	}
	stat_add(&stats->requests[req.op], 1);
	ret = store_exec(th, &c->ws, &req, conn_out(c));
	if (ret == -EINVAL)
		*why = STATS_CLOSE_BAD_NUMBER;
	else if (ret == -ENOSPC)
		*why = STATS_CLOSE_MEMORY_LIMIT;
	else if (ret)
		*why = STATS_CLOSE_NOMEM;
	return ret;
}

int conn_input(struct conn *c, struct store_thread *th, const uint8_t *p,
	       size_t n, enum stats_close *why, struct stats *stats)
{
	while (n) {
		size_t used;
		int r = proto_decoder_feed(&c->dec, p, n, &used);

		if (r < 0) {
			*why = STATS_CLOSE_PROTO;
			return r;
		}
		if (r == 0) {
			/* Partial request: keep its bytes for the next read. */
			if (buf_append(&c->spill, p, n)) {
				*why = STATS_CLOSE_NOMEM;
				return -ENOMEM;
			}
			return 0;
		}
		if (!buf_used(&c->spill)) {
			r = run(c, th, p, used, why, stats);
		} else {
			if (buf_append(&c->spill, p, used)) {
				*why = STATS_CLOSE_NOMEM;
				return -ENOMEM;
			}
			r = run(c, th, buf_head(&c->spill),
				buf_used(&c->spill), why, stats);
			buf_reset(&c->spill);
			buf_shrink(&c->spill, CONN_SPILL_KEEP);
		}
		if (r)
			return r;
		proto_decoder_next(&c->dec);
		p += used;
		n -= used;
	}
	return 0;
}
