/* SPDX-License-Identifier: MIT */
/*
 * io_epoll.c - the epoll backend (see io.h), for where io_uring is denied
 * (container seccomp profiles, kernel.io_uring_disabled) or too old.
 *
 * Level-triggered epoll, one instance per reactor. Every registration
 * carries a tag like io_uring.c's (kind, generation, slot), so an event for
 * a connection that closed earlier in the same batch is recognised and
 * dropped.
 *
 * Receiving: a readable connection is read with recv() into one
 * per-reactor buffer, a few reads per event at most (level triggering
 * reports the rest next time), and each chunk goes to the reactor at once -
 * the decoder and the spill path are the same as with io_uring.
 *
 * Sending: the reactor gathers a connection's replies once per iteration and
 * send() writes them with one sendmsg. A short write or EAGAIN keeps the
 * rest queued and registers EPOLLOUT; when the socket drains, the reactor
 * is told (sent with 0 bytes) and flushes again.
 *
 * Spread sends (--spread-sends N, as with io_uring): past N sends in one
 * iteration every other one goes to a helper thread (sender.c, named
 * rs-spread-TID after its reactor's thread), which makes it on another CPU
 * while the reactor makes the rest. Its result is reported like an
 * io_uring SEND's completion, from dispatch(): the connection counts it in
 * inflight (so it is not freed, nor its fd closed, meanwhile) and keeps
 * sending set (so its bytes stay in order). The helper wakes the reactor
 * through the eventfd, like a message.
 *
 * Accepting: accept4() until EAGAIN (a bounded number per event); store
 * listeners are registered with EPOLLEXCLUSIVE, so a listener shared by
 * all reactors wakes one of them. Out of descriptors, a listener is taken
 * out of the set for IO_ACCEPT_BACKOFF_MS (a deadline, so no descriptor is
 * needed to rest).
 *
 * Messages: each reactor has a bounded lock-free multi-producer,
 * single-consumer queue (mpsc.c) and an eventfd, written only when the
 * consumer may be asleep (the signalled flag). A sender that finds the queue
 * full keeps the message and retries every iteration (waiting 1 ms at most
 * meanwhile), so a burst of wake-ups costs no allocation on either side.
 * stop() sets a flag and writes the same eventfd.
 *
 * Threads: everything runs on the reactor's thread except msg() (the
 * sending reactor's thread pushes into the target's queue) and stop().
 */
#include "io.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "conn.h"
#include "log.h"
#include "mpsc.h"
#include "now.h"
#include "sender.h"
#include "server.h"
#include "stats.h"

enum tag_kind {
	TAG_CONN = 1,
	TAG_LISTEN, /* slot = enum io_listener */
	TAG_EVENT,  /* the eventfd: messages and stop */
};

#define MAX_EVENTS 256
#define READS_PER_EVENT 4
#define ACCEPTS_PER_EVENT 64
#define QUEUE_CELLS 16384 /* per reactor, a power of two */

static inline uint64_t tag_make(enum tag_kind k, uint32_t gen, uint32_t slot)
{
	return (uint64_t)k << 56 | (uint64_t)(gen & CONN_GEN_MASK) << 32 | slot;
}

/* ---- the backend ------------------------------------------------------- */

/* A message waiting for room in its target's queue. */
struct pending {
	struct io *to;                /* borrowed: the target */
	struct io_msg m;
};

struct io {
	struct io_base b;             /* the reactor's context (io.h) */
	int epfd;
	int efd;                      /* eventfd: messages and stop */
	struct mpsc q;                /* messages to this reactor */
	atomic_bool signalled;        /* efd written since the last drain */
	atomic_bool stop_asked;
	bool stopped;
	bool quit;
	bool listening[2];            /* registered (not resting) */
	uint64_t rest_until[2];       /* CLOCK_MONOTONIC ms while resting */
	uint8_t *rbuf;                /* owned: the receive buffer */
	size_t rbuf_size;
	struct epoll_event events[MAX_EVENTS];
	int nevents;
	struct pending *pend;         /* owned */
	uint32_t npend, pend_cap;
	struct sender *sender;        /* owned: spread sends; NULL: none */
	uint32_t nsends;              /* sends since the last wait */
};

/* The connection a TAG_CONN tag names, or NULL if its slot was reused. */
static inline struct conn *tag_conn(struct io *io, uint64_t t)
{
	return conn_get(io->b.ct, (uint32_t)t,
			(uint32_t)(t >> 32) & CONN_GEN_MASK);
}

static void ep_destroy(struct io *io);

static int ep_create(struct io **out, const struct server_config *cfg,
		     struct conn_table *ct, struct stats *stats,
		     const struct io_events *ev, void *arg)
{
	/* Aligned for the queue's cache-line-aligned tail and head. */
	struct io *io = aligned_alloc(_Alignof(struct io), sizeof(*io));
	struct epoll_event ee = { .events = EPOLLIN,
				  .data.u64 = tag_make(TAG_EVENT, 0, 0) };
	int ret;

	if (!io)
		return -ENOMEM;
	memset(io, 0, sizeof(*io));
	atomic_init(&io->signalled, false);
	atomic_init(&io->stop_asked, false);
	io_base_init(&io->b, cfg, ct, stats, ev, arg);
	io->rbuf_size = cfg->buf_size;
	io->epfd = epoll_create1(EPOLL_CLOEXEC);
	io->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (io->epfd < 0 || io->efd < 0 ||
	    epoll_ctl(io->epfd, EPOLL_CTL_ADD, io->efd, &ee)) {
		ret = -errno;
		goto fail;
	}
	ret = mpsc_init(&io->q, QUEUE_CELLS);
	if (ret)
		goto fail;
	io->rbuf = malloc(io->rbuf_size);
	if (!io->rbuf) {
		ret = -ENOMEM;
		goto fail;
	}
	*out = io;
	return 0;
fail:
	ep_destroy(io);
	return ret;
}

static void signal_target(struct io *to);

/* The helper's results are ready (called on its thread). */
static void sender_woke(void *arg)
{
	signal_target(arg);
}

/* On the reactor's thread: its helper is named after it. */
static int ep_init(struct io *io)
{
	char name[32];
	int ret;

	if (!io->b.cfg->spread_sends)
		return 0;
	/* syscall(): gettid() is glibc 2.30's, and the wheel targets 2.28. */
	snprintf(name, sizeof(name), "rs-spread-%d", (int)syscall(SYS_gettid));
	ret = sender_start(&io->sender, name, sender_woke, io);
	if (ret)
		log_info("epoll: cannot start a send helper thread (%s): "
			 "sends are not spread", strerror(-ret));
	return 0;
}

/* Drop what can no longer be delivered; handed-out sockets are closed. */
static void drop_msg(const struct io_msg *m)
{
	if (m->kind == IO_MSG_CONN)
		close(m->arg);
}

static void ep_quit(struct io *io)
{
	if (io->quit)
		return;
	io->quit = true;
	/* Joined here: it must not touch a socket after this. */
	sender_stop(io->sender);
	for (uint32_t i = 0; i < io->npend; i++)
		drop_msg(&io->pend[i].m);
	io->npend = 0;
}

static void ep_destroy(struct io *io)
{
	struct io_msg m;

	ep_quit(io);
	if (io->q.cells) {
		while (mpsc_pop(&io->q, &m))
			drop_msg(&m);
		mpsc_destroy(&io->q);
	}
	if (io->epfd >= 0)
		close(io->epfd);
	if (io->efd >= 0)
		close(io->efd);
	sender_destroy(io->sender);
	free(io->pend);
	free(io->rbuf);
	free(io);
}

/* Any thread: make the target's epoll_wait return. */
static void signal_target(struct io *to)
{
	uint64_t one = 1;

	/*
	 * Pairs with the fence in drain(): either the consumer's drain sees
	 * our message, or we see its cleared flag and write the eventfd.
	 */
	atomic_thread_fence(memory_order_seq_cst);
	if (atomic_exchange_explicit(&to->signalled, true,
				     memory_order_relaxed))
		return;
	if (write(to->efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		log_error("cross-reactor signal: %s", strerror(errno));
}

static void ep_stop(struct io *io)
{
	uint64_t one = 1;

	/* No data rides on the flag: the eventfd only wakes the loop. */
	atomic_store_explicit(&io->stop_asked, true, memory_order_relaxed);
	if (write(io->efd, &one, sizeof(one)) < 0)
		log_error("stop: %s", strerror(errno));
}

static int ep_msg(struct io *from, struct io *to, const struct io_msg *m)
{
	if (from->quit)
		return -ESHUTDOWN;
	if (!from->npend && !mpsc_push(&to->q, m)) {
		signal_target(to);
		return 0;
	}
	/* Full (or older messages wait): keep it, in order. */
	if (from->npend == from->pend_cap) {
		uint32_t n = from->pend_cap ? from->pend_cap * 2 : 64;
		struct pending *p = realloc(from->pend, n * sizeof(*p));
		if (!p)
			return -ENOMEM;
		from->pend = p;
		from->pend_cap = n;
	}
	from->pend[from->npend++] = (struct pending){ .to = to, .m = *m };
	return 0;
}

/* Retry the messages that found their target's queue full. */
static void retry_pending(struct io *io)
{
	uint32_t i = 0;

	while (i < io->npend && !mpsc_push(&io->pend[i].to->q, &io->pend[i].m))
		signal_target(io->pend[i++].to);
	memmove(io->pend, io->pend + i, (io->npend - i) * sizeof(*io->pend));
	io->npend -= i;
}

/* The eventfd fired: messages or the helper's results arrived (those are
 * reaped at the end of dispatch()), or stop() was called. */
static void drain(struct io *io)
{
	uint64_t v;
	struct io_msg m;

	if (read(io->efd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		log_error("eventfd: %s", strerror(errno));
	atomic_store_explicit(&io->signalled, false, memory_order_relaxed);
	/* Pairs with the fence in signal_target(). */
	atomic_thread_fence(memory_order_seq_cst);
	while (mpsc_pop(&io->q, &m))
		io->b.ev->message(io->b.arg, &m);
	if (!io->stopped &&
	    atomic_load_explicit(&io->stop_asked, memory_order_relaxed)) {
		io->stopped = true;
		io->b.ev->stop(io->b.arg);
	}
}

/* ---- accepting --------------------------------------------------------- */

static int listener_add(struct io *io, enum io_listener l)
{
	struct epoll_event ee = {
		.events = EPOLLIN |
			  (l == IO_LISTEN_STORE ? (uint32_t)EPOLLEXCLUSIVE : 0),
		.data.u64 = tag_make(TAG_LISTEN, 0, l),
	};

	if (epoll_ctl(io->epfd, EPOLL_CTL_ADD, io->b.listen_fd[l], &ee))
		return -errno;
	io->listening[l] = true;
	return 0;
}

static int ep_listen(struct io *io, int fd, enum io_listener l)
{
	int fl = fcntl(fd, F_GETFL);

	/* Accepting must not block the loop, also on an inherited fd. */
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK))
		return -errno;
	io->b.listen_fd[l] = fd;
	return listener_add(io, l);
}

static void on_listener(struct io *io, enum io_listener l)
{
	for (int i = 0; i < ACCEPTS_PER_EVENT && io->listening[l]; i++) {
		int fd = accept4(io->b.listen_fd[l], NULL, NULL,
				 SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd >= 0) {
			io->b.ev->accepted(io->b.arg, l, fd);
			continue;
		}
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return;
		if (errno == EINTR)
			continue;
		if (io->b.ev->accept_failed(io->b.arg, l, -errno)) {
			/* Rest: out of the set until the deadline. */
			epoll_ctl(io->epfd, EPOLL_CTL_DEL, io->b.listen_fd[l],
				  NULL);
			io->listening[l] = false;
			io->rest_until[l] = now_mono_ms() +
					    IO_ACCEPT_BACKOFF_MS;
		}
	}
}

/* Listeners whose rest is over go back into the set. */
static void wake_listeners(struct io *io)
{
	uint64_t now = 0;

	for (int l = 0; l < 2; l++) {
		if (io->b.listen_fd[l] < 0 || io->listening[l] || io->stopped)
			continue;
		if (!now)
			now = now_mono_ms();
		if (now >= io->rest_until[l] &&
		    listener_add(io, (enum io_listener)l))
			io->rest_until[l] = now + IO_ACCEPT_BACKOFF_MS;
	}
}

/* ---- receiving and sending --------------------------------------------- */

static int ep_recv_start(struct io *io, struct conn *c)
{
	struct epoll_event ee = {
		.events = EPOLLIN,
		.data.u64 = tag_make(TAG_CONN, c->gen, c->slot),
	};

	if (epoll_ctl(io->epfd, EPOLL_CTL_ADD, c->fd, &ee))
		return -errno;
	return 0;
}

static void on_readable(struct io *io, struct conn *c)
{
	for (int i = 0; i < READS_PER_EVENT && c->state == CONN_OPEN; i++) {
		ssize_t n = recv(c->fd, io->rbuf, io->rbuf_size, 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		io->b.ev->received(io->b.arg, c, io->rbuf, n < 0 ? -errno : n);
		if (n <= 0 || (size_t)n < io->rbuf_size)
			return;
	}
}

/* EPOLLOUT on or off for @c. */
static int want_out(struct io *io, struct conn *c, bool on)
{
	struct epoll_event ee = {
		.events = EPOLLIN | (on ? (uint32_t)EPOLLOUT : 0),
		.data.u64 = tag_make(TAG_CONN, c->gen, c->slot),
	};

	if (epoll_ctl(io->epfd, EPOLL_CTL_MOD, c->fd, &ee))
		return -errno;
	c->out_armed = on;
	return 0;
}

/*
 * A send of c->iov[0..@n) ended with @res (bytes, or -errno). The rest of
 * a short write stays queued until the socket drains (EPOLLOUT). A closed
 * connection is always told, so that it can be freed.
 */
static void send_ended(struct io *io, struct conn *c, unsigned n,
		       ssize_t res)
{
	size_t want = 0;

	if (res == -EAGAIN || res == -EWOULDBLOCK)
		res = 0;
	if (res < 0) {
		io->b.ev->sent(io->b.arg, c, (int)res);
		return;
	}
	for (unsigned i = 0; i < n; i++)
		want += c->iov[i].iov_len;
	if (res > 0 || c->state != CONN_OPEN)
		io->b.ev->sent(io->b.arg, c, (int)res);
	if ((size_t)res == want || c->state != CONN_OPEN)
		return;
	/* The socket is full: keep the rest, wait until it drains. */
	c->sending = true;
	if (!c->out_armed) {
		int ret = want_out(io, c, true);
		if (ret)
			io->b.ev->sent(io->b.arg, c, ret);
	}
}

/* Hand the send to the helper. Returns false if its ring is full. */
static bool spread(struct io *io, struct conn *c, unsigned n)
{
	struct sender_job j = {
		.iov = c->iov,
		.tag = tag_make(TAG_CONN, c->gen, c->slot),
		.fd = c->fd,
		.n = n,
	};

	if (!sender_post(io->sender, &j))
		return false;
	c->inflight++; /* reaped: reap() */
	stat_add(&io->b.stats->sends_spread, 1);
	return true;
}

static void ep_send(struct io *io, struct conn *c, unsigned n)
{
	if (io->sender && ++io->nsends > io->b.cfg->spread_sends &&
	    (io->nsends & 1) && spread(io, c, n))
		return;
	send_ended(io, c, n, sender_send_now(c->fd, c->iov, n));
}

/* Report the helper's finished sends. */
static void reap(struct io *io)
{
	struct sender_job j;

	while (io->sender && sender_reap(io->sender, &j)) {
		/* Pinned by inflight: never stale. */
		struct conn *c = tag_conn(io, j.tag);
		if (!c) {
			stat_add(&io->b.stats->stale_cqes, 1);
			continue;
		}
		c->inflight--;
		send_ended(io, c, j.n, j.res);
	}
}

static void on_writable(struct io *io, struct conn *c)
{
	int ret = want_out(io, c, false);

	io->b.ev->sent(io->b.arg, c, ret);
}

/* ---- the batch --------------------------------------------------------- */

static int ep_wait(struct io *io, int timeout_ms)
{
	uint64_t now = now_mono_ms();

	if (io->npend)
		retry_pending(io);
	if (io->npend)
		timeout_ms = 1;
	for (int l = 0; l < 2; l++)
		if (io->b.listen_fd[l] >= 0 && !io->listening[l] &&
		    io->rest_until[l] > now &&
		    io->rest_until[l] - now < (uint64_t)timeout_ms)
			timeout_ms = (int)(io->rest_until[l] - now);
	io->nsends = 0;
	io->nevents = epoll_wait(io->epfd, io->events, MAX_EVENTS, timeout_ms);
	if (io->nevents < 0) {
		io->nevents = 0;
		if (errno != EINTR)
			return -errno;
	}
	return 0;
}

static unsigned ep_dispatch(struct io *io)
{
	for (int i = 0; i < io->nevents; i++) {
		uint64_t t = io->events[i].data.u64;
		uint32_t ev = io->events[i].events;
		uint32_t slot = (uint32_t)t;
		struct conn *c;

		switch ((enum tag_kind)(t >> 56)) {
		case TAG_EVENT:
			drain(io);
			continue;
		case TAG_LISTEN:
			on_listener(io, (enum io_listener)slot);
			continue;
		case TAG_CONN:
			c = tag_conn(io, t);
			if (!c)
				break;
			if (c->state != CONN_OPEN)
				continue; /* closing: released at the flush */
			if ((ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)) &&
			    c->out_armed)
				on_writable(io, c);
			if ((ev & (EPOLLIN | EPOLLERR | EPOLLHUP)) &&
			    c->state == CONN_OPEN)
				on_readable(io, c);
			continue;
		}
		stat_add(&io->b.stats->stale_cqes, 1);
	}
	/*
	 * After drain(), if the eventfd fired: a result whose helper found
	 * signalled still set is seen here (the fences in drain() and
	 * signal_target() pair), and any later one writes the eventfd.
	 */
	reap(io);
	wake_listeners(io);
	return (unsigned)io->nevents;
}

const struct io_ops io_epoll_ops = {
	.name = "epoll",
	.create = ep_create,
	.init = ep_init,
	.quit = ep_quit,
	.destroy = ep_destroy,
	.listen = ep_listen,
	.recv_start = ep_recv_start,
	.send = ep_send,
	.msg = ep_msg,
	.stop = ep_stop,
	.wait = ep_wait,
	.dispatch = ep_dispatch,
};
