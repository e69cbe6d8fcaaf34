/* SPDX-License-Identifier: MIT */
/*
 * reactor.c - the event loop (see reactor.h), docs/design.md's request
 * path from top to bottom:
 *
 *   1. wait: the backend submits what is queued and waits for events;
 *   2. dispatch: new sockets go through admission (admit.c); received bytes
 *      go straight into the connection's decoder and the store (conn.c),
 *      replies collect in its output queue and the connection is marked
 *      dirty once; wake-ups from other reactors answer waits (xmsg.c);
 *   3. expire connections past their handshake or idle time;
 *   4. flush: one gathered send per dirty connection, all its replies
 *      together; which sends go to another CPU is decided here
 *      (--spread-sends), the backend only carries it out;
 *   5. a quiescent point for reclamation.
 *
 * The backend (io.h) reports events about a connection by its struct
 * io_conn; the handlers below turn that into the connection (conn_of) and
 * decide: close, mark dirty, release. Only this side opens, closes,
 * releases and frees connections.
 *
 * Threads: everything here runs on the reactor's own thread, except
 * reactor_create/start/stop/join/destroy (the main thread).
 */
#include "reactor.h"

#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admit.h"
#include "conn.h"
#include "control.h"
#include "io.h"
#include "log.h"
#include "now.h"
#include "qsbr.h"
#include "server.h"
#include "stats.h"
#include "store.h"
#include "wal.h"
#include "xmsg.h"

/* Reply segments handed to one send; more wait for the next. */
#define IOV_BATCH 256
/* Guest output scratch kept between requests. */
#define GUEST_OUT_KEEP (1u << 20)

struct reactor {
	struct server *srv; /* borrowed */
	uint32_t id;
	int listen_fd;            /* borrowed */
	const struct io_ops *ops; /* borrowed: srv->io */
	struct io *io;            /* owned */
	bool stopping;
	uint32_t nsends; /* sends started by this flush */

	struct conn_table ct;
	struct admit admit;
	struct store_thread th;
	struct stats stats;
	struct buf guest_out; /* owned: a guest's answers */

	pthread_t thread;
	bool started;
	sem_t ready;
	int start_err;
};

/* ---- events from the backend ----------------------------------------- */

static void on_accepted(void *arg, enum io_listener l, int fd)
{
	struct reactor *r = arg;

	admit_accepted(&r->admit, l, fd);
}

static bool on_accept_failed(void *arg, enum io_listener l, int err)
{
	struct reactor *r = arg;

	return admit_accept_failed(&r->admit, l, err) && !r->stopping;
}

/* Bytes for a guest protocol: answer through the reply queue. */
static void guest_input(struct reactor *r, struct conn *c, const uint8_t *p,
			size_t n)
{
	int ret = c->guest->input(c->guest_state, p, n, &r->guest_out);

	c->active_ms = now_mono_ms();
	if (ret >= 0 && buf_used(&r->guest_out) &&
	    outq_put(conn_out(c), buf_head(&r->guest_out),
		     buf_used(&r->guest_out)))
		ret = -ENOMEM;
	buf_reset(&r->guest_out);
	buf_shrink(&r->guest_out, GUEST_OUT_KEEP);
	if (ret < 0) {
		conn_close(&r->ct, c, STATS_CLOSE_NOMEM, ret);
		return;
	}
	if (ret == 1)
		c->close_after_send = true;
	conn_mark_dirty(&r->ct, c);
}

static struct io_conn *on_lookup(void *arg, uint32_t slot, uint32_t gen)
{
	struct reactor *r = arg;
	struct conn *c = conn_get(&r->ct, slot, gen);

	return c ? &c->io : NULL;
}

static void on_received(void *arg, struct io_conn *ic, const uint8_t *p,
			ssize_t n)
{
	struct reactor *r = arg;
	struct conn *c = conn_of(ic);
	enum stats_close why;
	int ret;

	if (n > 0 && c->state == CONN_OPEN && c->guest) {
		guest_input(r, c, p, (size_t)n);
	} else if (n > 0 && c->state == CONN_OPEN) {
		stat_add(&r->stats.bytes_in, (uint64_t)n);
		ret = conn_input(c, &r->th, p, (size_t)n, &why, &r->stats);
		if (ret)
			conn_close(&r->ct, c, why, ret);
		else if (outq_len(conn_out(c)))
			conn_mark_dirty(&r->ct, c);
		conn_validated(&r->ct, c);
	} else if (n == 0) {
		conn_close(&r->ct, c, STATS_CLOSE_EOF, 0);
	} else if (n < 0) {
		conn_close(&r->ct, c, STATS_CLOSE_IO, (int)n);
	}
	conn_release(&r->ct, c);
}

static void on_sent(void *arg, struct io_conn *ic, int res)
{
	struct reactor *r = arg;
	struct conn *c = conn_of(ic);

	c->sending = false;
	if (res < 0) {
		conn_close(&r->ct, c, STATS_CLOSE_IO, res);
	} else {
		if (!c->guest)
			stat_add(&r->stats.bytes_out, (uint64_t)res);
		outq_consume(&c->oq[c->fill ^ 1], (uint64_t)res);
		if (c->state == CONN_OPEN &&
		    (outq_len(&c->oq[0]) || outq_len(&c->oq[1])))
			conn_mark_dirty(&r->ct, c);
		else if (c->state == CONN_OPEN && c->close_after_send)
			conn_close(&r->ct, c, STATS_CLOSE_EOF, 0);
	}
	conn_release(&r->ct, c);
}

static void on_released(void *arg, struct io_conn *ic)
{
	struct reactor *r = arg;

	conn_release(&r->ct, conn_of(ic));
}

static void on_message(void *arg, const struct io_msg *m)
{
	struct reactor *r = arg;

	if (m->kind == IO_MSG_WAKE) {
		stat_add(&r->stats.wakes_remote_recv, 1);
		xmsg_wake(&r->ct, m->slot, m->gen, (uint32_t)m->arg);
	} else if (m->kind == IO_MSG_CONN) {
		admit_store(&r->admit, m->arg);
	}
}

static void on_stop(void *arg)
{
	struct reactor *r = arg;

	if (r->stopping)
		return;
	r->stopping = true;
	if (r->id == 0 && r->srv->control)
		control_shutting_down(r->srv->control, true);
	conn_close_all(&r->ct);
}

static const struct io_events reactor_events = {
	.lookup = on_lookup,
	.accepted = on_accepted,
	.accept_failed = on_accept_failed,
	.received = on_received,
	.sent = on_sent,
	.released = on_released,
	.message = on_message,
	.stop = on_stop,
};

/* ---- flushing --------------------------------------------------------- */

/*
 * Whether the next send goes to another CPU: --spread-sends N, past N sends
 * in one batch every other one (the reactor's policy; the backend carries
 * it out where it can: io.h's IO_SEND_ELSEWHERE). A burst of wake-ups (one
 * SET releasing thousands of WAITs) is thousands of sends, and on loopback
 * each also pays its receiver's TCP path.
 */
static unsigned send_flags(struct reactor *r)
{
	uint32_t n = r->srv->cfg.spread_sends;

	return n && ++r->nsends > n && (r->nsends & 1) ? IO_SEND_ELSEWHERE : 0;
}

/* Hand @c's queued replies to the backend as one gathered send. */
static void start_send(struct reactor *r, struct conn *c)
{
	struct outq *sq = &c->oq[c->fill ^ 1];
	uint32_t want;
	int n;

	if (!outq_len(sq)) {
		if (!outq_len(&c->oq[c->fill]))
			return;
		c->fill ^= 1; /* the collecting queue becomes the sending one */
		sq = &c->oq[c->fill ^ 1];
	}
	want = sq->nsegs - sq->head;
	if (want > IOV_BATCH)
		want = IOV_BATCH;
	if (want > c->iov_cap) {
		struct iovec *iov = realloc(c->iov, want * sizeof(*iov));
		if (!iov) {
			conn_close(&r->ct, c, STATS_CLOSE_NOMEM, -ENOMEM);
			return;
		}
		c->iov = iov;
		c->iov_cap = want;
	}
	n = outq_iov(sq, c->iov, (int)want);
	c->sending = true;
	r->ops->send(r->io, &c->io, c->iov, (unsigned)n, send_flags(r));
}

/* After the batch: one send per connection with output. */
static void flush(struct reactor *r)
{
	struct conn *c;

	r->nsends = 0;
	while ((c = r->ct.dirty)) {
		r->ct.dirty = c->next_dirty;
		c->dirty = false;
		if (c->state != CONN_OPEN) {
			conn_release(&r->ct, c);
			continue;
		}
		if (outq_len(&c->oq[0]) + outq_len(&c->oq[1]) >
		    r->srv->cfg.max_output) {
			conn_close(&r->ct, c, STATS_CLOSE_SLOW_READER, 0);
			continue;
		}
		if (!c->sending)
			start_send(r, c);
		if (c->state == CONN_OPEN && !c->sending &&
		    !outq_len(&c->oq[0]) && !outq_len(&c->oq[1]) &&
		    c->close_after_send)
			conn_close(&r->ct, c, STATS_CLOSE_EOF, 0);
	}
}

/* ---- the loop --------------------------------------------------------- */

static void loop(struct reactor *r)
{
	uint64_t stop_at = 0;

	while (!r->stopping || r->ct.open) {
		if (r->stopping) {
			uint64_t now = now_mono_ms();
			if (!stop_at) {
				stop_at = now + 2000;
			} else if (now > stop_at) {
				log_warn("reactor %u: %u connections still "
					 "busy at shutdown",
					 r->id, r->ct.open);
				break;
			}
		}
		qsbr_offline(r->th.qt);
		int ret = r->ops->wait(r->io, 1000);
		qsbr_online(r->th.qt);
		if (ret < 0) {
			log_error("reactor %u: %s: %s", r->id, r->ops->name,
				  strerror(-ret));
			break;
		}
		unsigned n = r->ops->dispatch(r->io);
		conn_expire(&r->ct);
		/* --fsync always: this pass's records are on disk before any
		 * of its replies leaves (group commit, wal.h). If the log
		 * failed, no reply leaves: every connection is closed (the
		 * server is stopping), and the flush only releases them. */
		if (wal_commit(&r->th.ww))
			conn_close_all(&r->ct);
		flush(r);
		stat_add(&r->stats.loops, 1);
		stat_add(&r->stats.cqes, n);
		qsbr_quiescent(r->th.qt);
	}
}

/* On the reactor's thread, after the loop: the backend quits first, so the
 * kernel holds no buffer of ours when the connections are freed. */
static void teardown(struct reactor *r)
{
	if (r->io)
		r->ops->quit(r->io);
	conn_table_destroy(&r->ct);
	if (r->id == 0 && r->srv->control) {
		control_destroy(r->srv->control);
		r->srv->control = NULL;
	}
	buf_free(&r->guest_out);
	if (r->th.qt)
		store_thread_destroy(&r->th);
}

static void *reactor_main(void *arg)
{
	struct reactor *r = arg;
	char name[16];
	int ret;

	/* top -H, perf and /proc show rs-reactor-N; io_uring's workers are
	 * iou-wrk-<this thread's id>. */
	snprintf(name, sizeof(name), "rs-reactor-%u", r->id);
	(void)pthread_setname_np(pthread_self(), name);
	ret = r->ops->init(r->io);

	if (!ret)
		ret = store_thread_init(&r->th, &r->srv->store, &r->stats,
					xmsg_deliver, &r->ct);
	if (!ret && r->listen_fd >= 0)
		ret = r->ops->listen(r->io, r->listen_fd, IO_LISTEN_STORE);
	if (!ret && r->id == 0 && r->srv->control_fd >= 0) {
		r->srv->control = control_create(r->srv, &r->th);
		if (r->srv->control)
			ret = r->ops->listen(r->io, r->srv->control_fd,
					     IO_LISTEN_CONTROL);
		else
			log_error("cannot create the control plane: out of "
				  "memory");
	}
	r->start_err = ret;
	sem_post(&r->ready);
	if (!ret)
		loop(r);
	teardown(r);
	outq_pool_drain(); /* this thread's pooled reply buffers */
	return NULL;
}

struct reactor *reactor_create(struct server *srv, uint32_t id, int listen_fd)
{
	struct reactor *r = calloc(1, sizeof(*r));
	int ret;

	if (!r) {
		log_error("cannot create reactor %u: out of memory", id);
		return NULL;
	}
	r->srv = srv;
	r->id = id;
	r->listen_fd = listen_fd;
	r->ops = srv->io;
	r->ct = (struct conn_table){ .srv = srv,
				     .reactor = id,
				     .th = &r->th,
				     .stats = &r->stats,
				     .ops = srv->io };
	r->admit.t = &r->ct;
	if (sem_init(&r->ready, 0, 0)) {
		free(r);
		return NULL;
	}
	ret = r->ops->create(&r->io, &srv->cfg, &r->stats, &reactor_events, r);
	if (ret) {
		log_error("cannot create reactor %u (%s): %s", id, r->ops->name,
			  strerror(-ret));
		sem_destroy(&r->ready);
		free(r);
		return NULL;
	}
	r->ct.io = r->io;
	srv->ios[id] = r->io;
	srv->stats[id] = &r->stats;
	return r;
}

int reactor_start(struct reactor *r)
{
	int ret = pthread_create(&r->thread, NULL, reactor_main, r);

	if (ret)
		return -ret;
	r->started = true;
	while (sem_wait(&r->ready) && errno == EINTR)
		;
	return r->start_err;
}

void reactor_stop(struct reactor *r)
{
	r->ops->stop(r->io);
}

void reactor_join(struct reactor *r, struct stats *total)
{
	if (r->started)
		pthread_join(r->thread, NULL);
	r->started = false;
	if (total)
		stats_sum(total, &r->stats);
}

void reactor_destroy(struct reactor *r)
{
	r->ops->destroy(r->io);
	sem_destroy(&r->ready);
	free(r);
}
