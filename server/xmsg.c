/* SPDX-License-Identifier: MIT */
/*
 * xmsg.c - cross-reactor messages (see xmsg.h).
 *
 * A wake-up names its connection by slot and generation, so one that
 * arrives after the connection closed (and its slot was reused) is counted
 * as stale and dropped.
 */
#include "xmsg.h"

#include <string.h>

#include "conn.h"
#include "io.h"
#include "log.h"
#include "server.h"
#include "store.h"

int xmsg_post(struct conn_table *t, uint32_t target, const struct io_msg *m)
{
	return t->ops->msg(t->io, t->srv->ios[target], m);
}

void xmsg_wake(struct conn_table *t, uint32_t slot, uint32_t gen, uint32_t seq)
{
	struct conn *c = conn_get(t, slot, gen);
	int ret;

	if (!c || c->state != CONN_OPEN) {
		stat_add(&t->stats->stale_cqes, 1);
		return;
	}
	ret = store_wake_arrived(&c->ws, seq, conn_out(c));
	if (ret < 0)
		conn_close(t, c, STATS_CLOSE_NOMEM, ret);
	else if (ret > 0)
		conn_mark_dirty(t, c);
}

void xmsg_deliver(void *arg, const struct waiter_ref *who, uint32_t seq)
{
	struct conn_table *t = arg;
	struct io_msg m = { .kind = IO_MSG_WAKE,
			    .slot = who->slot,
			    .gen = who->gen,
			    .arg = (int32_t)seq };
	int ret;

	if (who->reactor == t->reactor) {
		stat_add(&t->stats->wakes_local, 1);
		xmsg_wake(t, who->slot, who->gen, seq);
		return;
	}
	stat_add(&t->stats->wakes_remote_sent, 1);
	ret = xmsg_post(t, who->reactor, &m);
	if (ret)
		log_error("cross-reactor wake-up failed: %s", strerror(-ret));
}
