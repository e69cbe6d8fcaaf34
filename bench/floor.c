/* SPDX-License-Identifier: MIT */
/*
 * floor.c - ringstore-floor: a TCPStore server that does no store work, so
 * that its CPU per operation is what the kernel alone charges for a
 * workload's traffic. A server cannot do better; ringstore-bench's figures
 * for a real server are read as multiples of this one's.
 *
 * It reads the same request bytes and writes the same reply bytes as
 * ringstore does for every ringstore-bench workload that does not depend on
 * the store's state (everything but rendezvous, fanout and queue; fanout
 * with --park-waits, below), with the same batching: replies are gathered
 * per connection while a batch of events is handled and written with one
 * send per connection per loop iteration. Requests are framed by proto's
 * decoder (framing is not store work); only their first bytes (opcode, then
 * a count or a nonce) are kept.
 * Replies are canned, with the shape of each opcode: none for VALIDATE, SET,
 * MULTI_SET, APPEND and QUEUE_PUSH; the nonce for PING; READY for CHECK;
 * STOP_WAITING for WAIT; WAIT_CANCELED for CANCEL_WAIT; a counter for ADD;
 * 0 for GETNUMKEYS, DELETE_KEY and QUEUE_LEN; one --value-bytes value for
 * GET, COMPARE_SET and QUEUE_POP; n of them for a MULTI_GET of n keys (the
 * bench populates every key it reads with --value-bytes values, so these are
 * the bytes ringstore sends). LIST_KEYS and BARRIER close the connection.
 *
 * With --park-waits (the fanout workload) a WAIT gets no reply until the
 * next SET, which answers every parked WAIT with STOP_WAITING at once: the
 * wake-up burst ringstore sends when a key that N connections wait for is
 * set, with no store behind it.
 *
 * With --table-keys N it is the floor of a table-bound workload instead:
 * before answering a MULTI_GET or MULTI_SET of n keys it touches the cache
 * lines that n random keys cost in a table of N keys laid out as
 * ringstore's (tablemodel.h), reading them or writing a value, and does no
 * hashing, parsing or locking: what the memory alone charges inside a
 * serving process, whose kernel work shares the caches with it.
 *
 * Replies of 4 KiB or more are sent by reference from one immutable
 * template of values, so the kernel copies them once, as it must; smaller
 * ones are copied into the connection's output buffer, as ringstore does.
 *
 * Two I/O mechanisms, both on one thread (compare with ringstore at one
 * reactor):
 *  uring  multishot accept, multishot recv drawing from a provided-buffer
 *         ring (common/recvbufs.h, as the server's), SEND (one buffer) or
 *         SENDMSG (with --send-zc BYTES, their zero-copy forms for writes
 *         of BYTES or more), one io_uring_enter per loop iteration (the
 *         submit of the sends is the wait), as the server's io_uring
 *         backend does (server/io_uring.c);
 *  epoll  level-triggered epoll, nonblocking accept4 and recv into one
 *         loop-wide buffer, one writev per connection per iteration, and
 *         EPOLLOUT only while a connection has unsent bytes.
 *
 * Connections are indexed by fd. A connection's fd is closed only once no
 * SQE of it is in flight, so the number cannot be reused under a
 * completion that still names it.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <liburing.h>

#include "buf.h"
#include "log.h"
#include "net.h"
#include "proto.h"
#include "recvbufs.h"
#include "tablemodel.h"
#include "uring.h"

#define FLOOR_SEGS 40       /* output segments per connection and set */
#define FLOOR_REF_MIN 4096u /* replies this large go by reference */
#define FLOOR_HDR 9         /* request bytes kept: opcode + u64 */
#define FLOOR_TMPL_MAX (64u << 20)
#define FLOOR_BUFSZ 16384
#define FLOOR_RBUF (64u << 10)
#define FLOOR_TABLE_BATCH 16 /* as server/table.h's TABLE_BATCH_MAX */

enum {
	UD_ACCEPT = 1,
	UD_RECV,
	UD_SEND
};

/* One piece of output: @len bytes at @ext, or at @off in the set's bytes. */
struct fseg {
	const uint8_t *ext; /* borrowed from the template, or NULL */
	uint32_t off;
	uint32_t len;
};

/* Replies in order: inline bytes and references to the template. */
struct fout {
	struct buf bytes; /* owned */
	struct fseg seg[FLOOR_SEGS];
	uint32_t head, nseg;
};

struct fconn {
	int fd;
	bool recv_armed; /* uring: a multishot recv is in flight */
	bool sending;    /* uring: a send of @fly is in flight */
	bool dirty;      /* on the dirty list */
	bool closing;    /* shut down; freed when nothing is in flight */
	bool want_out;   /* epoll: EPOLLOUT is armed */
	uint8_t hlen;
	uint8_t hdr[FLOOR_HDR]; /* the current request's first bytes */
	struct proto_decoder dec;
	struct fout out; /* replies being gathered */
	struct fout fly; /* replies being written (uring: lent to the kernel) */
	struct iovec iov[FLOOR_SEGS];
	struct msghdr msg;
	int64_t counter; /* ADD replies */
	uint32_t parked; /* --park-waits: WAITs not yet answered */
	int zc_res;      /* --send-zc: the send's result, until its notif */
};

struct floor {
	bool epoll;
	int lfd;
	int epfd;
	uint32_t value_bytes;
	struct proto_limits lim;
	uint8_t *tmpl; /* owned: tmpl_n canned values, back to back */
	size_t entry;  /* bytes of one canned value: 8 + value_bytes */
	uint32_t tmpl_n;
	struct fconn **conns; /* owned, indexed by fd */
	uint32_t maxfd;
	struct fconn **dirty; /* owned */
	uint32_t ndirty;
	struct io_uring ring;
	struct recv_bufs rb;      /* owned, lent to the kernel */
	uint32_t nbufs, bufs_min; /* --recv-buffers, --recv-buffers-min */
	uint8_t *rbuf;            /* epoll: owned receive buffer */
	uint64_t closed_bad;
	bool park_waits;
	size_t zc_min; /* --send-zc: writes of this many bytes go zero-copy */
	struct fconn **parked; /* owned: connections with parked WAITs */
	uint32_t nparked;
	struct tmodel table; /* --table-keys; idx NULL: off */
};

static volatile sig_atomic_t g_stop;

static void on_signal(int sig)
{
	(void)sig;
	g_stop = 1;
}

static inline uint64_t ud_make(unsigned kind, int fd)
{
	return (uint64_t)kind << 32 | (uint32_t)fd;
}

/* An SQE, never NULL (common/uring.h). */
static struct io_uring_sqe *floor_sqe(struct floor *f)
{
	return uring_sqe(&f->ring, "floor");
}

static void mark_dirty(struct floor *f, struct fconn *c)
{
	if (c->dirty)
		return;
	c->dirty = true;
	f->dirty[f->ndirty++] = c;
}

static void fout_reset(struct fout *o)
{
	buf_reset(&o->bytes);
	o->head = o->nseg = 0;
}

static bool fout_empty(const struct fout *o)
{
	return o->head == o->nseg;
}

/* Copy @n bytes to the tail of @o. Returns 0 or -ENOMEM. */
static int fout_copy(struct fout *o, const void *p, size_t n)
{
	size_t off = o->bytes.len;
	struct fseg *last = o->nseg ? &o->seg[o->nseg - 1] : NULL;

	if (buf_append(&o->bytes, p, n))
		return -ENOMEM;
	if (last && !last->ext && last->off + last->len == off) {
		last->len += (uint32_t)n;
		return 0;
	}
	if (o->nseg == FLOOR_SEGS)
		return -ENOMEM; /* cannot happen: fout_ref keeps a slot */
	o->seg[o->nseg++] =
		(struct fseg){ .off = (uint32_t)off, .len = (uint32_t)n };
	return 0;
}

/*
 * Append @n bytes of the template at @p by reference, or by copy when the
 * segments are all but used up (the last slot is kept for inline bytes).
 */
static int fout_ref(struct fout *o, const uint8_t *p, size_t n)
{
	if (n < FLOOR_REF_MIN || o->nseg + 2 >= FLOOR_SEGS)
		return fout_copy(o, p, n);
	o->seg[o->nseg++] = (struct fseg){ .ext = p, .len = (uint32_t)n };
	return 0;
}

/* Fill @iov from the unsent segments of @o; returns how many. */
static int fout_iov(const struct fout *o, struct iovec *iov)
{
	int n = 0;

	for (uint32_t i = o->head; i < o->nseg; i++) {
		const struct fseg *s = &o->seg[i];
		iov[n].iov_base =
			(void *)(s->ext ? s->ext : o->bytes.data + s->off);
		iov[n].iov_len = s->len;
		n++;
	}
	return n;
}

/* @n bytes of @o were written: drop them; reset when all went. */
static void fout_consume(struct fout *o, size_t n)
{
	while (n && o->head < o->nseg) {
		struct fseg *s = &o->seg[o->head];
		size_t k = n < s->len ? n : s->len;
		if (s->ext)
			s->ext += k;
		else
			s->off += (uint32_t)k;
		s->len -= (uint32_t)k;
		n -= k;
		if (!s->len)
			o->head++;
	}
	if (fout_empty(o))
		fout_reset(o);
}

/* @n canned values, by reference to the template, in template-sized runs. */
static int put_values(struct floor *f, struct fout *o, uint64_t n)
{
	while (n) {
		uint64_t k = n < f->tmpl_n ? n : f->tmpl_n;
		if (fout_ref(o, f->tmpl, (size_t)(k * f->entry)))
			return -ENOMEM;
		n -= k;
	}
	return 0;
}

/* --park-waits: a SET answers every parked WAIT. */
static int release_parked(struct floor *f)
{
	static const uint8_t stop = PROTO_WAIT_STOP;

	for (uint32_t i = 0; i < f->nparked; i++) {
		struct fconn *w = f->parked[i];

		for (; w->parked; w->parked--)
			if (fout_copy(&w->out, &stop, 1))
				return -ENOMEM;
		mark_dirty(f, w);
	}
	f->nparked = 0;
	return 0;
}

/*
 * The canned reply to the request whose first bytes are c->hdr. Returns 0,
 * -ENOMEM, or -EPROTO for an opcode the floor does not serve.
 */
static int reply(struct floor *f, struct fconn *c)
{
	struct fout *o = &c->out;
	uint8_t u8;
	int64_t i64;
	uint64_t n;

	switch (c->hdr[0]) {
	case OP_WAIT:
		if (!f->park_waits)
			break;
		if (!c->parked++)
			f->parked[f->nparked++] = c;
		return 0;
	case OP_SET:
		if (f->park_waits)
			return release_parked(f);
		return 0;
	default:
		break;
	}
	if (f->table.idx &&
	    (c->hdr[0] == OP_MULTI_GET || c->hdr[0] == OP_MULTI_SET)) {
		memcpy(&n, c->hdr + 1, 8);
		tmodel_touch(&f->table, n, FLOOR_TABLE_BATCH,
			     c->hdr[0] == OP_MULTI_SET, f->value_bytes);
	}
	switch (c->hdr[0]) {
	case OP_VALIDATE:
	case OP_SET:
	case OP_MULTI_SET:
	case OP_APPEND:
	case OP_QUEUE_PUSH:
		return 0;
	case OP_PING:
		return fout_copy(o, c->hdr + 1, 4);
	case OP_CHECK:
	case OP_WAIT:
		u8 = c->hdr[0] == OP_CHECK ? PROTO_CHECK_READY
					   : PROTO_WAIT_STOP;
		return fout_copy(o, &u8, 1);
	case OP_CANCEL_WAIT:
		u8 = PROTO_WAIT_CANCELED;
		return fout_copy(o, &u8, 1);
	case OP_ADD:
		i64 = ++c->counter;
		return fout_copy(o, &i64, 8);
	case OP_GETNUMKEYS:
	case OP_DELETE_KEY:
	case OP_QUEUE_LEN:
		i64 = 0;
		return fout_copy(o, &i64, 8);
	case OP_GET:
	case OP_COMPARE_SET:
	case OP_QUEUE_POP:
		return put_values(f, o, 1);
	case OP_MULTI_GET:
		memcpy(&n, c->hdr + 1, 8);
		return put_values(f, o, n);
	default:
		return -EPROTO;
	}
}

/* Frame @n received bytes of @c and queue a reply to each request. */
static int conn_input(struct floor *f, struct fconn *c, const uint8_t *p,
		      size_t n)
{
	while (n) {
		size_t used;
		int r = proto_decoder_feed(&c->dec, p, n, &used);
		if (r < 0)
			return r;
		if (c->hlen < FLOOR_HDR) {
			size_t k = FLOOR_HDR - c->hlen;
			if (k > used)
				k = used;
			memcpy(c->hdr + c->hlen, p, k);
			c->hlen += (uint8_t)k;
		}
		p += used;
		n -= used;
		if (r == 0)
			break;
		r = reply(f, c);
		if (r < 0)
			return r;
		proto_decoder_next(&c->dec);
		c->hlen = 0;
	}
	if (!fout_empty(&c->out))
		mark_dirty(f, c);
	return 0;
}

static void conn_free(struct floor *f, struct fconn *c)
{
	if (c->parked) {
		for (uint32_t i = 0; i < f->nparked; i++) {
			if (f->parked[i] == c) {
				f->parked[i] = f->parked[--f->nparked];
				break;
			}
		}
	}
	f->conns[c->fd] = NULL;
	close(c->fd);
	buf_free(&c->out.bytes);
	buf_free(&c->fly.bytes);
	free(c);
}

/*
 * Close @c: epoll frees it at once; uring shuts the socket down (which ends
 * its multishot recv) and frees it once nothing of it is in flight.
 */
static void conn_close(struct floor *f, struct fconn *c, int err)
{
	if (err && err != -ECONNRESET && err != -EPIPE) {
		f->closed_bad++;
		log_info("floor: closing fd %d: %s", c->fd, strerror(-err));
	}
	if (f->epoll) {
		epoll_ctl(f->epfd, EPOLL_CTL_DEL, c->fd, NULL);
		if (c->dirty)
			c->closing = true; /* flush frees it */
		else
			conn_free(f, c);
		return;
	}
	if (!c->closing) {
		c->closing = true;
		shutdown(c->fd, SHUT_RDWR);
	}
	if (!c->recv_armed && !c->sending && !c->dirty)
		conn_free(f, c);
}

static struct fconn *conn_new(struct floor *f, int fd)
{
	struct fconn *c;

	if (fd < 0 || (uint32_t)fd >= f->maxfd) {
		log_warn("floor: fd %d over the table", fd);
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		close(fd);
		return NULL;
	}
	c->fd = fd;
	proto_decoder_init(&c->dec, &f->lim, true);
	net_set_nodelay(fd);
	f->conns[fd] = c;
	return c;
}

/* One write of @c's output: the batch gathered since the last one. */
static void flush_conn(struct floor *f, struct fconn *c)
{
	if (c->sending || c->closing)
		return;
	if (fout_empty(&c->fly)) {
		struct fout tmp = c->fly;
		c->fly = c->out;
		c->out = tmp;
	}
	if (fout_empty(&c->fly))
		return;
	int n = fout_iov(&c->fly, c->iov);
	if (f->epoll) {
		ssize_t w = writev(c->fd, c->iov, n);
		if (w < 0 && errno != EAGAIN) {
			conn_close(f, c, -errno);
			return;
		}
		if (w > 0)
			fout_consume(&c->fly, (size_t)w);
		bool want = !fout_empty(&c->fly) || !fout_empty(&c->out);
		if (want != c->want_out) {
			struct epoll_event ev = {
				.events = EPOLLIN | (want ? EPOLLOUT : 0),
				.data.fd = c->fd,
			};
			epoll_ctl(f->epfd, EPOLL_CTL_MOD, c->fd, &ev);
			c->want_out = want;
		}
		return;
	}
	struct io_uring_sqe *sqe = floor_sqe(f);
	bool zc = false;
	if (f->zc_min) { /* --send-zc: only then is the total needed */
		size_t total = 0;
		for (int i = 0; i < n; i++)
			total += c->iov[i].iov_len;
		zc = total >= f->zc_min;
	}
	c->msg.msg_iov = c->iov;
	c->msg.msg_iovlen = (size_t)n;
	if (n == 1 && zc)
		io_uring_prep_send_zc(sqe, c->fd, c->iov[0].iov_base,
				      c->iov[0].iov_len, MSG_NOSIGNAL, 0);
	else if (n == 1)
		io_uring_prep_send(sqe, c->fd, c->iov[0].iov_base,
				   c->iov[0].iov_len, MSG_NOSIGNAL);
	else if (zc)
		io_uring_prep_sendmsg_zc(sqe, c->fd, &c->msg, MSG_NOSIGNAL);
	else
		io_uring_prep_sendmsg(sqe, c->fd, &c->msg, MSG_NOSIGNAL);
	io_uring_sqe_set_data64(sqe, ud_make(UD_SEND, c->fd));
	c->sending = true;
}

/* After a batch of events: one write per connection with output. */
static void flush(struct floor *f)
{
	for (uint32_t i = 0; i < f->ndirty; i++) {
		struct fconn *c = f->dirty[i];
		c->dirty = false;
		if (c->closing) {
			conn_close(f, c, 0);
			continue;
		}
		if (!f->epoll && !c->recv_armed) {
			struct io_uring_sqe *sqe = floor_sqe(f);
			io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
			sqe->flags |= IOSQE_BUFFER_SELECT;
			sqe->buf_group = 0;
			io_uring_sqe_set_data64(sqe, ud_make(UD_RECV, c->fd));
			c->recv_armed = true;
		}
		flush_conn(f, c);
	}
	f->ndirty = 0;
}

static void arm_accept(struct floor *f)
{
	struct io_uring_sqe *sqe = floor_sqe(f);

	io_uring_prep_multishot_accept(sqe, f->lfd, NULL, NULL, 0);
	io_uring_sqe_set_data64(sqe, ud_make(UD_ACCEPT, f->lfd));
}

static void uring_cqe(struct floor *f, struct io_uring_cqe *cqe)
{
	uint64_t ud = io_uring_cqe_get_data64(cqe);
	unsigned kind = (unsigned)(ud >> 32);
	int fd = (int)(uint32_t)ud, res = cqe->res;
	bool more = cqe->flags & IORING_CQE_F_MORE;
	struct fconn *c;

	if (kind == UD_ACCEPT) {
		if (res >= 0 && (c = conn_new(f, res)))
			mark_dirty(f, c); /* flush arms its recv */
		if (!more)
			arm_accept(f);
		return;
	}
	c = (uint32_t)fd < f->maxfd ? f->conns[fd] : NULL;
	if (kind == UD_RECV) {
		if (cqe->flags & IORING_CQE_F_BUFFER) {
			unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
			uint8_t *p = recv_bufs_take(&f->rb, bid);
			int r = 0;
			if (c && !c->closing && res > 0)
				r = conn_input(f, c, p, (size_t)res);
			recv_bufs_give(&f->rb, bid);
			if (r < 0 && c)
				conn_close(f, c, r);
		}
		if (res == -ENOBUFS)
			recv_bufs_dry(&f->rb);
		if (!c)
			return;
		if (!more)
			c->recv_armed = false;
		if (res == 0 || (res < 0 && res != -ENOBUFS))
			conn_close(f, c, res);
		else if (!more)
			mark_dirty(f, c); /* re-armed after the batch */
		else if (c->closing)
			conn_close(f, c, 0);
		return;
	}
	if (kind == UD_SEND && c) {
		/* Zero-copy: the result comes first (with F_MORE), and the
		 * buffers are the kernel's until the notification after it. */
		if (cqe->flags & IORING_CQE_F_NOTIF) {
			res = c->zc_res;
		} else if (more) {
			c->zc_res = res;
			return;
		}
		c->sending = false;
		if (res < 0 || c->closing) {
			conn_close(f, c, res < 0 ? res : 0);
			return;
		}
		fout_consume(&c->fly, (size_t)res);
		if (!fout_empty(&c->fly) || !fout_empty(&c->out))
			mark_dirty(f, c);
	}
}

static int uring_setup(struct floor *f)
{
	struct io_uring_params p = { 0 };
	int ret;

	p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
		  IORING_SETUP_SUBMIT_ALL | IORING_SETUP_CQSIZE;
	p.cq_entries = 4096 * 8;
	ret = io_uring_queue_init_params(4096, &f->ring, &p);
	if (ret < 0)
		return ret;
	ret = recv_bufs_init(&f->rb, &f->ring, 0, f->nbufs, FLOOR_BUFSZ,
			     f->bufs_min);
	if (ret < 0)
		return ret;
	arm_accept(f);
	return 0;
}

static int uring_loop(struct floor *f)
{
	struct __kernel_timespec ts = { .tv_sec = 1 };
	struct io_uring_cqe *cqe;
	unsigned head, n;

	while (!g_stop) {
		int ret = io_uring_submit_and_wait_timeout(&f->ring, &cqe, 1,
							   &ts, NULL);
		if (ret < 0 && ret != -ETIME && ret != -EINTR && ret != -EBUSY)
			return ret;
		n = 0;
		io_uring_for_each_cqe (&f->ring, head, cqe) {
			uring_cqe(f, cqe);
			n++;
		}
		io_uring_cq_advance(&f->ring, n);
		recv_bufs_flush(&f->rb);
		flush(f);
	}
	return 0;
}

static void epoll_accept(struct floor *f)
{
	for (;;) {
		int fd = accept4(f->lfd, NULL, NULL,
				 SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0)
			return;
		struct fconn *c = conn_new(f, fd);
		if (!c)
			continue;
		struct epoll_event ev = { .events = EPOLLIN, .data.fd = fd };
		if (epoll_ctl(f->epfd, EPOLL_CTL_ADD, fd, &ev))
			conn_close(f, c, -errno);
	}
}

static void epoll_event(struct floor *f, const struct epoll_event *ev)
{
	int fd = ev->data.fd;
	struct fconn *c;

	if (fd == f->lfd) {
		epoll_accept(f);
		return;
	}
	c = f->conns[fd];
	if (!c || c->closing)
		return;
	if (ev->events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
		ssize_t r;
		do {
			r = recv(fd, f->rbuf, FLOOR_RBUF, 0);
			if (r > 0) {
				int e = conn_input(f, c, f->rbuf, (size_t)r);
				if (e < 0) {
					conn_close(f, c, e);
					return;
				}
			}
		} while (r == FLOOR_RBUF);
		if (r == 0 || (r < 0 && errno != EAGAIN)) {
			conn_close(f, c, r == 0 ? 0 : -errno);
			return;
		}
	}
	if (ev->events & EPOLLOUT)
		mark_dirty(f, c);
}

static int epoll_loop(struct floor *f)
{
	struct epoll_event evs[1024];
	struct epoll_event ev = { .events = EPOLLIN, .data.fd = f->lfd };

	f->epfd = epoll_create1(EPOLL_CLOEXEC);
	f->rbuf = malloc(FLOOR_RBUF);
	if (f->epfd < 0 || !f->rbuf)
		return f->epfd < 0 ? -errno : -ENOMEM;
	if (epoll_ctl(f->epfd, EPOLL_CTL_ADD, f->lfd, &ev))
		return -errno;
	while (!g_stop) {
		int n = epoll_wait(f->epfd, evs, 1024, 1000);
		if (n < 0 && errno != EINTR)
			return -errno;
		for (int i = 0; i < n; i++)
			epoll_event(f, &evs[i]);
		flush(f);
	}
	return 0;
}

/* The canned values: as many as fit FLOOR_TMPL_MAX, at most 4096. */
static int make_template(struct floor *f)
{
	uint64_t len = f->value_bytes;

	f->entry = 8 + (size_t)f->value_bytes;
	f->tmpl_n = (uint32_t)(FLOOR_TMPL_MAX / f->entry);
	if (f->tmpl_n > 4096)
		f->tmpl_n = 4096;
	if (!f->tmpl_n)
		f->tmpl_n = 1;
	f->tmpl = malloc(f->entry * f->tmpl_n);
	if (!f->tmpl)
		return -ENOMEM;
	for (uint32_t i = 0; i < f->tmpl_n; i++) {
		uint8_t *e = f->tmpl + (size_t)i * f->entry;
		memcpy(e, &len, 8);
		memset(e + 8, 'v', f->value_bytes);
	}
	return 0;
}

static void usage(FILE *out)
{
	fprintf(out,
		"Usage: ringstore-floor [options]\n"
		"A TCPStore server that does no store work: canned replies of the\n"
		"right shape, for measuring what the kernel alone costs.\n\n"
		"  --bind HOST         address to listen on (default 127.0.0.1)\n"
		"  --port N            port (default 29500, 0: any)\n"
		"  --value-bytes N     size of every value it replies (default 64)\n"
		"  --io uring|epoll    I/O mechanism (default uring)\n"
		"  --park-waits        answer WAITs only at the next SET, all at\n"
		"                      once (the floor of the fanout workload)\n"
		"  --table-keys N      before a MULTI_GET or MULTI_SET, touch the\n"
		"                      lines its keys cost in a table of N keys\n"
		"                      laid out as ringstore's (default 0: none)\n"
		"  --send-zc BYTES     uring: writes of BYTES or more use SEND_ZC\n"
		"                      (default 0: never)\n"
		"  --recv-buffers N    uring: receive buffers, a power of two\n"
		"                      (default 1024, as ringstore)\n"
		"  --recv-buffers-min N  uring: the fewest kept in the buffer ring\n"
		"                      (default 64, as ringstore; N = --recv-buffers:\n"
		"                      a fixed ring)\n"
		"  -h, --help\n"
		"Prints 'ringstore-floor listening on HOST:PORT' when ready.\n");
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "bind", 1, NULL, 'b' },
		{ "port", 1, NULL, 'p' },
		{ "value-bytes", 1, NULL, 'v' },
		{ "io", 1, NULL, 'i' },
		{ "park-waits", 0, NULL, 'w' },
		{ "table-keys", 1, NULL, 'T' },
		{ "send-zc", 1, NULL, 'z' },
		{ "recv-buffers", 1, NULL, 'n' },
		{ "recv-buffers-min", 1, NULL, 'm' },
		{ "help", 0, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	static struct floor f;
	const char *host = "127.0.0.1";
	long port = 29500, vb = 64, nbufs = RECV_BUFS_DEFAULT_COUNT, nmin = 0,
	     tkeys = 0;
	bool nmin_given = false;
	char addr[128];
	struct rlimit rl;
	int c, ret;

	while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		switch (c) {
		case 'b':
			host = optarg;
			break;
		case 'p':
			port = strtol(optarg, NULL, 10);
			break;
		case 'v':
			vb = strtol(optarg, NULL, 10);
			break;
		case 'w':
			f.park_waits = true;
			break;
		case 'T':
			tkeys = strtol(optarg, NULL, 10);
			break;
		case 'z':
			f.zc_min = strtoul(optarg, NULL, 10);
			break;
		case 'n':
			nbufs = strtol(optarg, NULL, 10);
			break;
		case 'm':
			nmin = strtol(optarg, NULL, 10);
			nmin_given = true;
			break;
		case 'i':
			if (!strcmp(optarg, "epoll")) {
				f.epoll = true;
			} else if (strcmp(optarg, "uring")) {
				usage(stderr);
				return 2;
			}
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	/* The default minimum follows a smaller ring. */
	if (!nmin_given)
		nmin = nbufs < RECV_BUFS_DEFAULT_MIN ? nbufs
						     : RECV_BUFS_DEFAULT_MIN;
	if (optind != argc || port < 0 || port > 65535 || vb < 0 ||
	    vb > (8l << 20) || nbufs < 1 || nbufs > 32768 ||
	    (nbufs & (nbufs - 1)) || nmin < 1 || nmin > nbufs || tkeys < 0 ||
	    (unsigned long)tkeys > TM_MAX_KEYS) {
		usage(stderr);
		return 2;
	}
	f.nbufs = (uint32_t)nbufs;
	f.bufs_min = (uint32_t)nmin;
	f.value_bytes = (uint32_t)vb;
	proto_limits_default(&f.lim);
	if (!getrlimit(RLIMIT_NOFILE, &rl) && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	f.maxfd = getrlimit(RLIMIT_NOFILE, &rl) || rl.rlim_cur > (1u << 22)
			  ? (1u << 16)
			  : (uint32_t)rl.rlim_cur;
	f.conns = calloc(f.maxfd, sizeof(*f.conns));
	f.dirty = calloc(f.maxfd, sizeof(*f.dirty));
	f.parked = calloc(f.maxfd, sizeof(*f.parked));
	if (!f.conns || !f.dirty || !f.parked || make_template(&f) ||
	    (tkeys && tmodel_init(&f.table, (size_t)tkeys, true))) {
		log_error("floor: out of memory");
		return 1;
	}
	f.lfd = net_listen(host, (uint16_t)port, 65535, false);
	if (f.lfd < 0) {
		log_error("floor: cannot listen on %s:%ld: %s", host, port,
			  strerror(-f.lfd));
		return 1;
	}
	signal(SIGPIPE, SIG_IGN);
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	if (!f.epoll) {
		ret = uring_setup(&f);
		if (ret < 0) {
			log_error("floor: io_uring: %s", strerror(-ret));
			return 1;
		}
	}
	net_local_addr(f.lfd, addr, sizeof(addr));
	printf("ringstore-floor listening on %s\n", addr);
	fflush(stdout);
	ret = f.epoll ? epoll_loop(&f) : uring_loop(&f);
	if (ret < 0) {
		log_error("floor: %s", strerror(-ret));
		return 1;
	}
	if (f.closed_bad)
		log_info("floor: %llu connections closed on bad input",
			 (unsigned long long)f.closed_bad);
	return 0;
}
