/* SPDX-License-Identifier: MIT */
/*
 * io_epoll.c - the epoll backend (see io.h), for where io_uring is denied
 * (container seccomp profiles, kernel.io_uring_disabled) or too old.
 *
 * Level-triggered epoll, one instance per reactor. Every registration
 * carries an io_tag (io.h: kind, generation, slot), so an event for a
 * connection freed earlier in the same batch is recognised and dropped; a
 * connection the reactor closed leaves the set at once.
 *
 * Receiving: a readable connection is read with recv() into one
 * per-reactor buffer, a few reads per event at most (level triggering
 * reports the rest next time), and each chunk goes to the reactor at once -
 * the decoder and the spill path are the same as with io_uring.
 *
 * Sending: the reactor gathers a connection's replies once per iteration and
 * send() writes them with one sendmsg, and reports the send at once. After
 * a short write or EAGAIN the report waits: EPOLLOUT is registered, and
 * when the socket drains the send is reported with the bytes the write
 * took, so the reactor starts the next one only then.
 *
 * Spread sends (IO_SEND_ELSEWHERE, chosen by the reactor: --spread-sends):
 * such a send goes to a helper thread (sender.c, named rs-spread-TID after
 * its reactor's thread), which makes it on another CPU while the reactor
 * makes the rest. Its result is reported like an io_uring SEND's
 * completion, from dispatch(); meanwhile the job is held (io_conn.held), so
 * the connection is not freed nor its fd closed. The helper wakes the
 * reactor through the eventfd, like a message.
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

/* What this backend keeps per connection, in io_conn.priv. */
struct ep_conn {
	bool out_armed;  /* EPOLLOUT is registered: a send waits for it */
	int32_t written; /* what the waiting send's first write took */
};

_Static_assert(sizeof(struct ep_conn) <= IO_CONN_PRIV,
	       "struct ep_conn fits in io_conn.priv");

static inline struct ep_conn *ep_conn(struct io_conn *ic)
{
	return (struct ep_conn *)ic->priv;
}

/* ---- the backend ------------------------------------------------------- */

/* A message waiting for room in its target's queue. */
struct pending {
	struct io *to; /* borrowed: the target */
	struct io_msg m;
};

struct io {
	struct io_base b; /* the reactor's context (io.h) */
	int epfd;
	int efd;               /* eventfd: messages and stop */
	struct mpsc q;         /* messages to this reactor */
	atomic_bool signalled; /* efd written since the last drain */
	atomic_bool stop_asked;
	bool stopped;
	bool quit;
	bool listening[2];      /* registered (not resting) */
	uint64_t rest_until[2]; /* CLOCK_MONOTONIC ms while resting */
	uint8_t *rbuf;          /* owned: the receive buffer */
	size_t rbuf_size;
	struct epoll_event events[MAX_EVENTS];
	int nevents;
	struct pending *pend; /* owned */
	uint32_t npend, pend_cap;
	struct sender *sender; /* owned: spread sends; NULL: none */
};

/* The connection a TAG_CONN tag names, or NULL if its slot was freed. */
static inline struct io_conn *tag_conn(struct io *io, uint64_t t)
{
	return io->b.ev->lookup(io->b.arg, io_tag_slot(t), io_tag_gen(t));
}

static void ep_destroy(struct io *io);

static int ep_create(struct io **out, const struct server_config *cfg,
		     struct stats *stats, const struct io_events *ev, void *arg)
{
	/* Aligned for the queue's cache-line-aligned tail and head. */
	struct io *io = aligned_alloc(_Alignof(struct io), sizeof(*io));
	struct epoll_event ee = { .events = EPOLLIN,
				  .data.u64 = io_tag(TAG_EVENT, 0, 0) };
	int ret;

	if (!io)
		return -ENOMEM;
	memset(io, 0, sizeof(*io));
	atomic_init(&io->signalled, false);
	atomic_init(&io->stop_asked, false);
	io_base_init(&io->b, cfg, stats, ev, arg);
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
			 "sends are not spread",
			 strerror(-ret));
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
		.data.u64 = io_tag(TAG_LISTEN, 0, l),
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
			io->rest_until[l] =
				now_mono_ms() + IO_ACCEPT_BACKOFF_MS;
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

static int ep_recv_start(struct io *io, struct io_conn *ic)
{
	struct epoll_event ee = {
		.events = EPOLLIN,
		.data.u64 = io_tag(TAG_CONN, ic->gen, ic->slot),
	};

	*ep_conn(ic) = (struct ep_conn){ 0 };
	if (epoll_ctl(io->epfd, EPOLL_CTL_ADD, ic->fd, &ee))
		return -errno;
	return 0;
}

static void on_readable(struct io *io, struct io_conn *ic)
{
	for (int i = 0; i < READS_PER_EVENT && !ic->closed; i++) {
		ssize_t n = recv(ic->fd, io->rbuf, io->rbuf_size, 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		io->b.ev->received(io->b.arg, ic, io->rbuf, n < 0 ? -errno : n);
		if (n <= 0 || (size_t)n < io->rbuf_size)
			return;
	}
}

/* EPOLLOUT on or off for @ic. */
static int want_out(struct io *io, struct io_conn *ic, bool on)
{
	struct epoll_event ee = {
		.events = EPOLLIN | (on ? (uint32_t)EPOLLOUT : 0),
		.data.u64 = io_tag(TAG_CONN, ic->gen, ic->slot),
	};

	if (epoll_ctl(io->epfd, EPOLL_CTL_MOD, ic->fd, &ee))
		return -errno;
	ep_conn(ic)->out_armed = on;
	return 0;
}

/*
 * A write of @iov[0..@n) took @res (bytes, or -errno). A whole write or an
 * error ends the send; so does any result on a closed connection (a held
 * helper job: the reactor frees the connection after it). A short write on
 * an open one waits for EPOLLOUT before it is reported (on_writable).
 */
static void send_ended(struct io *io, struct io_conn *ic,
		       const struct iovec *iov, unsigned n, ssize_t res)
{
	struct ep_conn *ec = ep_conn(ic);
	size_t want = 0;
	int ret;

	if (res == -EAGAIN || res == -EWOULDBLOCK)
		res = 0;
	for (unsigned i = 0; i < n; i++)
		want += iov[i].iov_len;
	if (res < 0 || (size_t)res == want || ic->closed) {
		io->b.ev->sent(io->b.arg, ic, (int)res);
		return;
	}
	/* The socket is full: the rest goes out once it drains. */
	ec->written = (int32_t)res;
	ret = ec->out_armed ? 0 : want_out(io, ic, true);
	if (ret)
		io->b.ev->sent(io->b.arg, ic, ret);
}

/* Hand the send to the helper. Returns false if its ring is full. */
static bool spread(struct io *io, struct io_conn *ic, const struct iovec *iov,
		   unsigned n)
{
	struct sender_job j = {
		.iov = iov,
		.tag = io_tag(TAG_CONN, ic->gen, ic->slot),
		.fd = ic->fd,
		.n = n,
	};

	if (!sender_post(io->sender, &j))
		return false;
	ic->held++; /* until reap() */
	stat_add(&io->b.stats->sends_spread, 1);
	return true;
}

static void ep_send(struct io *io, struct io_conn *ic, const struct iovec *iov,
		    unsigned n, unsigned flags)
{
	if ((flags & IO_SEND_ELSEWHERE) && io->sender && spread(io, ic, iov, n))
		return;
	send_ended(io, ic, iov, n, sender_send_now(ic->fd, iov, n));
}

/* Out of the set and shut down: no event for @ic any more. A send waiting
 * for EPOLLOUT ends silently; a helper job still held is reaped as usual. */
static void ep_close(struct io *io, struct io_conn *ic)
{
	ic->closed = true;
	epoll_ctl(io->epfd, EPOLL_CTL_DEL, ic->fd, NULL);
	shutdown(ic->fd, SHUT_RDWR);
}

/* Report the helper's finished sends. */
static void reap(struct io *io)
{
	struct sender_job j;

	while (io->sender && sender_reap(io->sender, &j)) {
		/* Held until here: never stale. */
		struct io_conn *ic = tag_conn(io, j.tag);
		if (!ic) {
			stat_add(&io->b.stats->stale_cqes, 1);
			continue;
		}
		ic->held--;
		send_ended(io, ic, j.iov, j.n, j.res);
	}
}

/* The socket drained: the send that waited for it is over. */
static void on_writable(struct io *io, struct io_conn *ic)
{
	int ret = want_out(io, ic, false);

	io->b.ev->sent(io->b.arg, ic, ret ? ret : ep_conn(ic)->written);
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
		uint32_t slot = io_tag_slot(t);
		struct io_conn *ic;

		switch ((enum tag_kind)io_tag_kind(t)) {
		case TAG_EVENT:
			drain(io);
			continue;
		case TAG_LISTEN:
			on_listener(io, (enum io_listener)slot);
			continue;
		case TAG_CONN:
			ic = tag_conn(io, t);
			if (!ic)
				break;
			if (ic->closed)
				continue; /* closed earlier in this batch */
			if ((ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)) &&
			    ep_conn(ic)->out_armed)
				on_writable(io, ic);
			if ((ev & (EPOLLIN | EPOLLERR | EPOLLHUP)) &&
			    !ic->closed)
				on_readable(io, ic);
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
	.close = ep_close,
	.msg = ep_msg,
	.stop = ep_stop,
	.wait = ep_wait,
	.dispatch = ep_dispatch,
};
