/* SPDX-License-Identifier: MIT */
/*
 * conn.c - client connections (see conn.h): the slot table, the lifecycle
 * from conn_open to conn_release, and request intake.
 *
 * Slots come in chunks that never move, so a pointer to a conn stays valid
 * while the table lives; a slot is reused only after conn_release, and its
 * generation then changes, so late events and wake-ups for the previous
 * connection are told apart.
 *
 * The common case of intake costs no copy: requests that lie wholly inside
 * one receive buffer are parsed and executed in place. Only the bytes of a
 * request that spans receive buffers are gathered in the spill buffer, which
 * is released again when it grew large (so an idle connection holds no heap
 * memory).
 */
#include "conn.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io.h"
#include "log.h"
#include "net.h"
#include "now.h"
#include "server.h"
#include "store.h"

#define CONN_CHUNK 256
/* A spill buffer above this is freed once its request is done. */
#define CONN_SPILL_KEEP 16384

static struct conn *conn_at(struct conn_table *t, uint32_t slot)
{
	if (slot / CONN_CHUNK >= t->nchunks)
		return NULL;
	return &t->chunks[slot / CONN_CHUNK][slot % CONN_CHUNK];
}

struct conn *conn_get(struct conn_table *t, uint32_t slot, uint32_t gen)
{
	struct conn *c = conn_at(t, slot);

	if (!c || c->state == CONN_FREE || c->io.gen != gen)
		return NULL;
	return c;
}

static int slots_grow(struct conn_table *t)
{
	struct conn **chunks =
		realloc(t->chunks, (t->nchunks + 1) * sizeof(*chunks));
	if (!chunks)
		return -ENOMEM;
	t->chunks = chunks;
	uint32_t *fs = realloc(t->free_slots, (size_t)(t->nchunks + 1) *
						      CONN_CHUNK * sizeof(*fs));
	if (!fs)
		return -ENOMEM;
	t->free_slots = fs;
	struct conn *chunk = calloc(CONN_CHUNK, sizeof(*chunk));
	if (!chunk)
		return -ENOMEM;
	uint32_t base = t->nchunks * CONN_CHUNK;
	t->chunks[t->nchunks++] = chunk;
	/* Push in reverse so the lowest slot is reused first. */
	for (uint32_t i = CONN_CHUNK; i-- > 0;) {
		chunk[i].io.slot = base + i;
		chunk[i].io.fd = -1;
		t->free_slots[t->nfree++] = base + i;
	}
	return 0;
}

static void hs_unlink(struct conn_table *t, struct conn *c)
{
	if (conn_hs_list_linked(&t->hs, c))
		conn_hs_list_remove(&t->hs, c);
}

void conn_validated(struct conn_table *t, struct conn *c)
{
	if (!c->dec.handshake)
		hs_unlink(t, c);
}

/* Everything a conn owns, back to a free slot's state. */
static void conn_free(struct conn_table *t, struct conn *c)
{
	/* libuv's rule: only a closed handle that nothing refers to. */
	assert(c->state == CONN_CLOSING);
	assert(c->io.held == 0 && c->io.closed);
	assert(!c->dirty && !conn_hs_list_linked(&t->hs, c));
	if (t->ops->forget)
		t->ops->forget(t->io, &c->io);
	close(c->io.fd);
	c->io.fd = -1;
	if (c->guest) {
		c->guest->destroy(c->guest_state);
		c->guest = NULL;
		c->guest_state = NULL;
		for (uint32_t i = 0; i < t->nguests; i++)
			if (t->guests[i] == c) {
				t->guests[i] = t->guests[--t->nguests];
				break;
			}
	}
	outq_free(&c->oq[0]);
	outq_free(&c->oq[1]);
	buf_free(&c->spill);
	free(c->iov);
	c->iov = NULL;
	c->iov_cap = 0;
	c->state = CONN_FREE;
}

struct conn *conn_open(struct conn_table *t, int fd,
		       const struct sockaddr_in6 *peer,
		       const struct conn_guest_ops *guest, void *state)
{
	struct conn *c;

	if (!t->nfree && slots_grow(t)) {
		if (guest)
			guest->destroy(state);
		close(fd);
		return NULL;
	}
	c = conn_at(t, t->free_slots[--t->nfree]);
	c->io = (struct io_conn){ .fd = fd,
				  .slot = c->io.slot,
				  .gen = (c->io.gen + 1) & IO_GEN_MASK };
	c->state = CONN_OPEN;
	c->fill = 0;
	c->sending = c->dirty = c->close_after_send = false;
	c->guest = guest;
	c->guest_state = state;
	proto_decoder_init(&c->dec, &t->srv->cfg.limits, true);
	wait_state_init(&c->ws, (struct waiter_ref){ .reactor = t->reactor,
						     .slot = c->io.slot,
						     .gen = c->io.gen });
	c->ws.peer = *peer;
	c->active_ms = now_mono_ms();
	t->open++;
	if (guest)
		t->guests[t->nguests++] = c;
	if (t->ops->recv_start(t->io, &c->io)) {
		/* Nothing was started: the backend holds nothing of it. */
		c->state = CONN_CLOSING;
		c->io.closed = true;
		conn_free(t, c);
		t->free_slots[t->nfree++] = c->io.slot;
		t->open--;
		return NULL;
	}
	/* A store client owes a VALIDATE in time. */
	if (!guest && t->srv->cfg.handshake_ms)
		conn_hs_list_push_tail(&t->hs, c);
	return c;
}

void conn_release(struct conn_table *t, struct conn *c)
{
	if (c->state != CONN_CLOSING || c->io.held || c->dirty)
		return;
	conn_free(t, c);
	t->free_slots[t->nfree++] = c->io.slot;
	t->open--;
}

static void peer_name(const struct conn *c, char *out, size_t len)
{
	if (c->ws.peer.sin6_family)
		net_format_addr((const struct sockaddr *)&c->ws.peer, out, len);
	else
		snprintf(out, len, "fd %d", c->io.fd);
}

/* One line for a closed store client: routine closes at debug level. */
static void log_close(const struct conn *c, enum stats_close why, int err)
{
	char peer[NET_ADDRSTRLEN];
	/* Clients that reset are common at job end. */
	bool reset = why == STATS_CLOSE_IO &&
		     (err == -ECONNRESET || err == -EPIPE);
	bool routine = reset || why == STATS_CLOSE_EOF ||
		       why == STATS_CLOSE_SHUTDOWN;

	if (routine && !log_enabled(LOG_LVL_DEBUG))
		return;
	peer_name(c, peer, sizeof(peer));
	if (why == STATS_CLOSE_PROTO)
		log_warn("closing %s: %s (%s)", peer,
			 proto_err_text(c->dec.err),
			 proto_err_name(c->dec.err));
	else if (why == STATS_CLOSE_IO || why == STATS_CLOSE_NOMEM)
		log_msg(reset ? LOG_LVL_DEBUG : LOG_LVL_WARN,
			"closing %s: %s (%s)", peer, stats_close_text(why),
			strerror(-err));
	else if (routine)
		log_debug("closing %s: %s", peer, stats_close_name(why));
	else
		log_warn("closing %s: %s (%s)", peer, stats_close_text(why),
			 stats_close_id(why));
}

void conn_close(struct conn_table *t, struct conn *c, enum stats_close why,
		int err)
{
	if (c->state != CONN_OPEN)
		return;
	/* Guest clients are not counted as store clients. */
	if (!c->guest) {
		stat_add(&t->stats->closed[why], 1);
		stat_add(&t->stats->active, (uint64_t)-1);
		if (why == STATS_CLOSE_PROTO)
			stat_add(&t->stats->proto_errors[c->dec.err], 1);
		log_close(c, why, err);
		atomic_fetch_sub_explicit(&t->srv->conns, 1,
					  memory_order_relaxed);
		store_client_gone(t->th, &c->ws);
	}
	c->state = CONN_CLOSING;
	hs_unlink(t, c);
	t->ops->close(t->io, &c->io);
	conn_release(t, c);
}

void conn_close_all(struct conn_table *t)
{
	t->stopping = true;
	for (uint32_t ch = 0; ch < t->nchunks; ch++)
		for (uint32_t i = 0; i < CONN_CHUNK; i++) {
			struct conn *c = &t->chunks[ch][i];
			if (c->state == CONN_OPEN)
				conn_close(t, c, STATS_CLOSE_SHUTDOWN, 0);
		}
}

void conn_expire(struct conn_table *t)
{
	uint64_t limit = t->srv->cfg.handshake_ms, now;

	if (!t->hs.head && !t->nguests)
		return;
	now = now_mono_ms();
	/* Store clients that did not send VALIDATE in time (slowloris). */
	while (t->hs.head && now - t->hs.head->active_ms >= limit)
		conn_close(t, t->hs.head, STATS_CLOSE_HANDSHAKE_TIMEOUT, 0);
	/* Guests idle for longer than the configured time, scanned once a
	 * second at most. */
	limit = t->srv->cfg.control_idle_ms;
	if (!t->nguests || !limit || now - t->guest_scan_ms < 1000)
		return;
	t->guest_scan_ms = now;
	for (uint32_t i = t->nguests; i-- > 0;) {
		struct conn *c = t->guests[i];
		if (c->state == CONN_OPEN && !c->sending &&
		    now - c->active_ms >= limit)
			conn_close(t, c, STATS_CLOSE_EOF, 0);
	}
}

void conn_table_destroy(struct conn_table *t)
{
	for (uint32_t ch = 0; ch < t->nchunks; ch++) {
		for (uint32_t i = 0; i < CONN_CHUNK; i++) {
			struct conn *c = &t->chunks[ch][i];
			if (c->state == CONN_FREE)
				continue;
			if (c->state == CONN_OPEN && !c->guest)
				store_client_gone(t->th, &c->ws);
			/* The backend has quit (io.h): it holds nothing of
			 * any connection and reports nothing any more. */
			hs_unlink(t, c);
			c->state = CONN_CLOSING;
			c->io.held = 0;
			c->io.closed = true;
			c->dirty = false;
			conn_free(t, c);
		}
		free(t->chunks[ch]);
	}
	free(t->chunks);
	free(t->free_slots);
	t->dirty = NULL;
	t->chunks = NULL;
	t->free_slots = NULL;
	t->nchunks = t->nfree = t->open = 0;
}

static int run(struct conn *c, struct store_thread *th, const uint8_t *p,
	       size_t len, enum stats_close *why, struct stats *stats)
{
	struct proto_req req;
	int ret = proto_parse_framed(p, len, &req);

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
			/* Partial request: keep its bytes for the next read.
			 * A request that fills a receive buffer is usually
			 * large (a MULTI_GET of many keys): start the spill
			 * at twice what has arrived, so that it is not grown
			 * and copied again at every doubling from 256 B. */
			if ((!buf_used(&c->spill) &&
			     buf_reserve(&c->spill, 2 * n)) ||
			    buf_append(&c->spill, p, n)) {
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
			r = run(c, th, buf_head(&c->spill), buf_used(&c->spill),
				why, stats);
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
