/* SPDX-License-Identifier: MIT */
/*
 * reactor.c - the io_uring event loop (see reactor.h).
 *
 * Completion tags: every SQE's user_data packs an opcode (8 bits), the
 * connection slot's generation (24 bits) and the slot (32 bits). A slot is
 * reused only once no SQE of its previous connection is in flight, so RECV
 * and SEND completions always match their connection; only cross-reactor
 * wake-ups (MSG_RING) can arrive for a connection that is gone, and the
 * generation check drops them.
 *
 * Receives are multishot RECVs drawing from this reactor's provided-buffer
 * ring. A buffer is handed back as soon as its bytes went through the
 * decoder, and the ring tail is published once per batch. When the ring runs
 * dry the kernel ends a RECV with -ENOBUFS; the connection is re-armed after
 * the batch, once buffers are back.
 *
 * Threads: everything here runs on the reactor's own thread, except
 * reactor_stop() (an eventfd write) and other reactors' MSG_RING SQEs that
 * target this ring.
 */
#include "reactor.h"

#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <semaphore.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <liburing.h>

#include "compiler.h"
#include "conn.h"
#include "control.h"
#include "log.h"
#include "net.h"
#include "qsbr.h"

enum tag_op {
	TAG_ACCEPT = 1,
	TAG_RECV,
	TAG_SEND,
	TAG_WAKE,     /* arrives from another reactor: res = wait seq */
	TAG_MSGSENT,  /* our MSG_RING finished: slot = message index */
	TAG_STOP,     /* the eventfd read */
	TAG_BACKOFF,  /* accept back-off timer */
	TAG_NEWCONN,  /* a socket handed over by the acceptor: res = fd */
	TAG_CACCEPT,  /* the control plane's listener (reactor 0) */
};

#define TAG_GEN_MASK 0xffffffu
#define CONN_CHUNK 256
#define BGID 0
#define ACCEPT_BACKOFF_MS 100
#define IOV_BATCH 256
/* Control-plane clients at once; more are closed at accept, so that local
 * HTTP clients can never take the descriptors the store needs. */
#define CONTROL_MAX_CONNS 64

_Static_assert(sizeof(uint64_t) == sizeof(((struct io_uring_cqe *)0)->user_data),
	       "user_data is 64 bits");

static inline uint64_t tag_make(enum tag_op op, uint32_t gen, uint32_t slot)
{
	return (uint64_t)op << 56 | (uint64_t)(gen & TAG_GEN_MASK) << 32 | slot;
}

static inline enum tag_op tag_op(uint64_t t)
{
	return (enum tag_op)(t >> 56);
}

static inline uint32_t tag_gen(uint64_t t)
{
	return (uint32_t)(t >> 32) & TAG_GEN_MASK;
}

static inline uint32_t tag_slot(uint64_t t)
{
	return (uint32_t)t;
}

/* A wake-up sent to another ring, kept until the kernel confirms it. */
struct rmsg {
	uint32_t target;
	uint32_t seq;
	uint64_t data;
	int32_t next_free;
};

struct reactor {
	struct server *srv;          /* borrowed */
	uint32_t id;
	int listen_fd;               /* borrowed */
	struct io_uring ring;
	bool ring_ok;
	bool stopping;
	bool accept_armed;
	uint32_t next_target;         /* round robin of the single acceptor */

	struct io_uring_buf_ring *br; /* owned mmap, lent to the kernel */
	size_t br_bytes;
	uint8_t *bufs;                /* owned, lent to the kernel */
	uint32_t nbufs, bufsize;
	uint16_t returned;            /* buffers added since the last advance */

	struct conn **chunks;         /* owned */
	uint32_t nchunks;
	uint32_t *free_slots;         /* owned stack */
	uint32_t nfree;
	uint32_t open;                /* conns not yet released */
	struct conn *dirty;
	struct conn *hs_head, *hs_tail; /* awaiting VALIDATE, oldest first */
	uint64_t reject_log_ms;       /* last accept-rejection log line */
	uint64_t rejects_unlogged;

	struct rmsg *msgs;            /* owned */
	uint32_t nmsgs;
	int32_t msg_free;

	struct store_thread th;
	struct stats stats;
	struct buf http_out;          /* owned: control-plane responses */
	struct conn *http[CONTROL_MAX_CONNS]; /* open control-plane clients */
	uint32_t nhttp;
	uint64_t http_scan_ms;        /* last idle scan */
	int stop_fd;
	uint64_t stop_val;            /* lent to the kernel (eventfd read) */
	struct __kernel_timespec backoff;

	pthread_t thread;
	bool started;
	sem_t ready;
	int start_err;
};

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static struct conn *conn_at(struct reactor *r, uint32_t slot)
{
	if (slot / CONN_CHUNK >= r->nchunks)
		return NULL;
	return &r->chunks[slot / CONN_CHUNK][slot % CONN_CHUNK];
}

/* An SQE, submitting first if the queue is full; never NULL. */
static struct io_uring_sqe *get_sqe(struct reactor *r)
{
	struct io_uring_sqe *sqe;

	while (!(sqe = io_uring_get_sqe(&r->ring)))
		io_uring_submit(&r->ring);
	return sqe;
}

static void mark_dirty(struct reactor *r, struct conn *c)
{
	if (c->dirty)
		return;
	c->dirty = true;
	c->next_dirty = r->dirty;
	r->dirty = c;
}

/* ---- provided buffers ------------------------------------------------ */

static int bufs_setup(struct reactor *r)
{
	struct io_uring_buf_reg reg = { 0 };
	int ret;

	r->br_bytes = r->nbufs * sizeof(struct io_uring_buf);
	r->br = mmap(NULL, r->br_bytes, PROT_READ | PROT_WRITE,
		     MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
	if (r->br == MAP_FAILED) {
		r->br = NULL;
		return -errno;
	}
	r->bufs = aligned_alloc(4096, (size_t)r->nbufs * r->bufsize);
	if (!r->bufs)
		return -ENOMEM;
	reg.ring_addr = (unsigned long)r->br;
	reg.ring_entries = r->nbufs;
	reg.bgid = BGID;
	ret = io_uring_register_buf_ring(&r->ring, &reg, 0);
	if (ret)
		return ret;
	io_uring_buf_ring_init(r->br);
	for (uint32_t i = 0; i < r->nbufs; i++)
		io_uring_buf_ring_add(r->br, r->bufs + (size_t)i * r->bufsize,
				      r->bufsize, (unsigned short)i,
				      io_uring_buf_ring_mask(r->nbufs), (int)i);
	io_uring_buf_ring_advance(r->br, (int)r->nbufs);
	return 0;
}

static void buf_give_back(struct reactor *r, unsigned bid)
{
	io_uring_buf_ring_add(r->br, r->bufs + (size_t)bid * r->bufsize,
			      r->bufsize, (unsigned short)bid,
			      io_uring_buf_ring_mask(r->nbufs), r->returned++);
}

/* ---- connections ----------------------------------------------------- */

static int slots_grow(struct reactor *r)
{
	struct conn **chunks = realloc(r->chunks,
				       (r->nchunks + 1) * sizeof(*chunks));
	if (!chunks)
		return -ENOMEM;
	r->chunks = chunks;
	uint32_t *fs = realloc(r->free_slots,
			       (size_t)(r->nchunks + 1) * CONN_CHUNK *
				       sizeof(*fs));
	if (!fs)
		return -ENOMEM;
	r->free_slots = fs;
	struct conn *chunk = calloc(CONN_CHUNK, sizeof(*chunk));
	if (!chunk)
		return -ENOMEM;
	uint32_t base = r->nchunks * CONN_CHUNK;
	r->chunks[r->nchunks++] = chunk;
	/* Push in reverse so the lowest slot is reused first. */
	for (uint32_t i = CONN_CHUNK; i-- > 0;) {
		chunk[i].slot = base + i;
		chunk[i].fd = -1;
		r->free_slots[r->nfree++] = base + i;
	}
	return 0;
}

static void arm_recv(struct reactor *r, struct conn *c)
{
	struct io_uring_sqe *sqe = get_sqe(r);

	io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = BGID;
	io_uring_sqe_set_data64(sqe, tag_make(TAG_RECV, c->gen, c->slot));
	c->recv_armed = true;
	c->rearm = false;
	c->inflight++;
}

static void hs_link(struct reactor *r, struct conn *c)
{
	c->hs_next = NULL;
	c->hs_prev = r->hs_tail;
	if (r->hs_tail)
		r->hs_tail->hs_next = c;
	else
		r->hs_head = c;
	r->hs_tail = c;
	c->in_hs = true;
}

static void hs_unlink(struct reactor *r, struct conn *c)
{
	if (!c->in_hs)
		return;
	if (c->hs_prev)
		c->hs_prev->hs_next = c->hs_next;
	else
		r->hs_head = c->hs_next;
	if (c->hs_next)
		c->hs_next->hs_prev = c->hs_prev;
	else
		r->hs_tail = c->hs_prev;
	c->in_hs = false;
}

/* The peer as an IPv6 address (IPv4 v4-mapped), kept for diagnostics. */
static void peer_addr(int fd, struct sockaddr_in6 *out)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);

	memset(out, 0, sizeof(*out));
	if (getpeername(fd, (struct sockaddr *)&ss, &sl))
		return;
	if (ss.ss_family == AF_INET6) {
		memcpy(out, &ss, sizeof(*out));
	} else if (ss.ss_family == AF_INET) {
		const struct sockaddr_in *a4 = (const void *)&ss;
		out->sin6_family = AF_INET6;
		out->sin6_port = a4->sin_port;
		out->sin6_addr.s6_addr[10] = 0xff;
		out->sin6_addr.s6_addr[11] = 0xff;
		memcpy(&out->sin6_addr.s6_addr[12], &a4->sin_addr, 4);
	}
}

static struct conn *conn_open(struct reactor *r, int fd,
			      const struct sockaddr_in6 *peer)
{
	struct conn *c;

	if (!r->nfree && slots_grow(r))
		return NULL;
	c = conn_at(r, r->free_slots[--r->nfree]);
	c->fd = fd;
	c->gen = (c->gen + 1) & TAG_GEN_MASK;
	c->state = CONN_OPEN;
	c->fill = 0;
	c->inflight = 0;
	c->recv_armed = c->sending = c->dirty = c->rearm = false;
	c->close_after_send = false;
	c->http = NULL;
	proto_decoder_init(&c->dec, &r->srv->cfg.limits, true);
	wait_state_init(&c->ws, (struct waiter_ref){ .reactor = r->id,
						     .slot = c->slot,
						     .gen = c->gen });
	memset(&c->msg, 0, sizeof(c->msg));
	c->ws.peer = *peer;
	c->opened_ms = now_ms();
	r->open++;
	arm_recv(r, c);
	return c;
}

/* Free the slot once the connection is closing and idle. */
static void conn_release(struct reactor *r, struct conn *c)
{
	if (c->state != CONN_CLOSING || c->inflight || c->dirty)
		return;
	close(c->fd);
	c->fd = -1;
	if (c->http) {
		control_conn_destroy(c->http);
		c->http = NULL;
		for (uint32_t i = 0; i < r->nhttp; i++)
			if (r->http[i] == c) {
				r->http[i] = r->http[--r->nhttp];
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
	r->free_slots[r->nfree++] = c->slot;
	r->open--;
}

static void peer_name(const struct conn *c, char *out, size_t len)
{
	if (c->ws.peer.sin6_family)
		net_format_addr((const struct sockaddr *)&c->ws.peer, out, len);
	else
		snprintf(out, len, "fd %d", c->fd);
}

/*
 * Close @c: stop processing its input, withdraw its waits, and shut the
 * socket down so its RECV and SEND complete; the slot is freed by
 * conn_release once they have.
 */
static void conn_close(struct reactor *r, struct conn *c, enum stats_close why,
		       int err)
{
	char peer[NET_ADDRSTRLEN];

	if (c->state != CONN_OPEN)
		return;
	if (c->http) {
		/* Control-plane clients are not counted as store clients. */
		c->state = CONN_CLOSING;
		shutdown(c->fd, SHUT_RDWR);
		conn_release(r, c);
		return;
	}
	stat_add(&r->stats.closed[why], 1);
	stat_add(&r->stats.active, (uint64_t)-1);
	if (why == STATS_CLOSE_PROTO)
		stat_add(&r->stats.proto_errors[c->dec.err], 1);
	/* Routine closes (and clients that reset, common at job end) are
	 * logged at debug level; the rest are warnings. */
	bool reset = why == STATS_CLOSE_IO &&
		     (err == -ECONNRESET || err == -EPIPE);
	bool routine = reset || why == STATS_CLOSE_EOF ||
		       why == STATS_CLOSE_SHUTDOWN;
	if (!routine || log_enabled(LOG_LVL_DEBUG)) {
		peer_name(c, peer, sizeof(peer));
		if (why == STATS_CLOSE_PROTO)
			log_warn("closing %s: %s (%s)", peer,
				 proto_err_text(c->dec.err),
				 proto_err_name(c->dec.err));
		else if (why == STATS_CLOSE_IO || why == STATS_CLOSE_NOMEM)
			log_msg(reset ? LOG_LVL_DEBUG : LOG_LVL_WARN,
				"closing %s: %s (%s)", peer,
				stats_close_text(why), strerror(-err));
		else if (routine)
			log_debug("closing %s: %s", peer,
				  stats_close_name(why));
		else
			log_warn("closing %s: %s (%s)", peer,
				 stats_close_text(why), stats_close_id(why));
	}
	c->state = CONN_CLOSING;
	hs_unlink(r, c);
	atomic_fetch_sub_explicit(&r->srv->conns, 1, memory_order_relaxed);
	store_client_gone(&r->th, &c->ws);
	shutdown(c->fd, SHUT_RDWR);
	conn_release(r, c);
}

/* ---- sending --------------------------------------------------------- */

static void start_send(struct reactor *r, struct conn *c)
{
	struct outq *sq = &c->oq[c->fill ^ 1];
	struct io_uring_sqe *sqe;
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
			conn_close(r, c, STATS_CLOSE_NOMEM, -ENOMEM);
			return;
		}
		c->iov = iov;
		c->iov_cap = want;
	}
	n = outq_iov(sq, c->iov, (int)want);
	sqe = get_sqe(r);
	if (n == 1) {
		/* The common case: plain SEND, no msghdr for the kernel to
		 * import. */
		io_uring_prep_send(sqe, c->fd, c->iov[0].iov_base,
				   c->iov[0].iov_len, MSG_NOSIGNAL);
	} else {
		c->msg.msg_iov = c->iov;
		c->msg.msg_iovlen = (size_t)n;
		io_uring_prep_sendmsg(sqe, c->fd, &c->msg, MSG_NOSIGNAL);
	}
	io_uring_sqe_set_data64(sqe, tag_make(TAG_SEND, c->gen, c->slot));
	c->sending = true;
	c->inflight++;
}

/* After the batch: one SEND per connection with output, RECV re-arms. */
static void flush(struct reactor *r)
{
	struct conn *c;

	while ((c = r->dirty)) {
		r->dirty = c->next_dirty;
		c->dirty = false;
		if (c->state != CONN_OPEN) {
			conn_release(r, c);
			continue;
		}
		if (outq_len(&c->oq[0]) + outq_len(&c->oq[1]) >
		    r->srv->cfg.max_output) {
			conn_close(r, c, STATS_CLOSE_SLOW_READER, 0);
			conn_release(r, c);
			continue;
		}
		if (c->rearm && !c->recv_armed)
			arm_recv(r, c);
		if (!c->sending)
			start_send(r, c);
		if (!c->sending && c->close_after_send)
			conn_close(r, c, STATS_CLOSE_EOF, 0);
	}
}

/* ---- wake-ups -------------------------------------------------------- */

static int32_t msg_alloc(struct reactor *r)
{
	if (r->msg_free < 0) {
		uint32_t n = r->nmsgs ? r->nmsgs * 2 : 64;
		struct rmsg *m = realloc(r->msgs, n * sizeof(*m));
		if (!m)
			return -1;
		for (uint32_t i = r->nmsgs; i < n; i++)
			m[i].next_free = i + 1 < n ? (int32_t)(i + 1) : -1;
		r->msg_free = (int32_t)r->nmsgs;
		r->msgs = m;
		r->nmsgs = n;
	}
	int32_t i = r->msg_free;
	r->msg_free = r->msgs[i].next_free;
	return i;
}

static void msg_submit(struct reactor *r, int32_t i)
{
	struct rmsg *m = &r->msgs[i];
	struct reactor *t = r->srv->reactors[m->target];
	struct io_uring_sqe *sqe = get_sqe(r);

	io_uring_prep_msg_ring(sqe, t->ring.ring_fd, m->seq, m->data, 0);
	io_uring_sqe_set_data64(sqe, tag_make(TAG_MSGSENT, 0, (uint32_t)i));
}

/* A wait owned by this reactor completed (or a message announced it). */
static void wake_local(struct reactor *r, uint32_t slot, uint32_t gen,
		       uint32_t seq)
{
	struct conn *c = conn_at(r, slot);
	int ret;

	if (!c || c->gen != gen || c->state != CONN_OPEN) {
		stat_add(&r->stats.stale_cqes, 1);
		return;
	}
	ret = store_wake_arrived(&c->ws, seq, conn_out(c));
	if (ret < 0)
		conn_close(r, c, STATS_CLOSE_NOMEM, ret);
	else if (ret > 0)
		mark_dirty(r, c);
}

/* waiters_deliver_fn: runs on the waker's reactor, under a stripe lock. */
static void deliver(void *arg, const struct waiter_ref *who, uint32_t seq)
{
	struct reactor *r = arg;
	int32_t i;

	if (who->reactor == r->id) {
		stat_add(&r->stats.wakes_local, 1);
		wake_local(r, who->slot, who->gen, seq);
		return;
	}
	i = msg_alloc(r);
	if (i < 0) {
		log_error("out of memory for a cross-reactor wake-up");
		return;
	}
	r->msgs[i].target = who->reactor;
	r->msgs[i].seq = seq;
	r->msgs[i].data = tag_make(TAG_WAKE, who->gen, who->slot);
	stat_add(&r->stats.wakes_remote_sent, 1);
	msg_submit(r, i);
}

static void on_msgsent(struct reactor *r, uint32_t i, int res)
{
	if (res == -EOVERFLOW || res == -EAGAIN) {
		msg_submit(r, (int32_t)i); /* target CQ full: try again */
		return;
	}
	if (res < 0 && tag_op(r->msgs[i].data) == TAG_NEWCONN) {
		/* The target is gone (shutting down): drop the socket. */
		close((int)r->msgs[i].seq);
	} else if (res < 0 && !r->srv->stopping) {
		log_error("cross-reactor wake-up failed: %s", strerror(-res));
	}
	r->msgs[i].next_free = r->msg_free;
	r->msg_free = (int32_t)i;
}

/* ---- accepting ------------------------------------------------------- */

static void arm_accept(struct reactor *r)
{
	struct io_uring_sqe *sqe = get_sqe(r);

	io_uring_prep_multishot_accept(sqe, r->listen_fd, NULL, NULL,
				       SOCK_CLOEXEC);
	io_uring_sqe_set_data64(sqe, tag_make(TAG_ACCEPT, 0, 0));
	r->accept_armed = true;
}

/* Log a refused connection, at most one line a second per reactor. */
static void log_reject(struct reactor *r, const struct sockaddr_in6 *peer,
		       enum stats_close why)
{
	uint64_t now = now_ms();
	char name[NET_ADDRSTRLEN];

	stat_add(&r->stats.rejected, 1);
	stat_add(&r->stats.closed[why], 1);
	if (now - r->reject_log_ms < 1000) {
		r->rejects_unlogged++;
		return;
	}
	net_format_addr((const struct sockaddr *)peer, name, sizeof(name));
	log_warn("refusing %s: %s (%s); %llu more refused since the last "
		 "such line", name, stats_close_text(why), stats_close_id(why),
		 (unsigned long long)r->rejects_unlogged);
	r->reject_log_ms = now;
	r->rejects_unlogged = 0;
}

static bool allowed(const struct server_config *cfg,
		    const struct sockaddr_in6 *peer)
{
	if (!cfg->nallow)
		return true;
	for (uint32_t i = 0; i < cfg->nallow; i++)
		if (net_cidr_match(&cfg->allow[i], peer))
			return true;
	return false;
}

/* A new socket from accept: check it against the limits, then serve it. */
static void admit(struct reactor *r, int fd)
{
	const struct server_config *cfg = &r->srv->cfg;
	struct sockaddr_in6 peer;
	uint64_t n;

	if (r->stopping) {
		close(fd);
		return;
	}
	peer_addr(fd, &peer);
	if (!allowed(cfg, &peer)) {
		log_reject(r, &peer, STATS_CLOSE_NOT_ALLOWED);
		close(fd);
		return;
	}
	n = atomic_fetch_add_explicit(&r->srv->conns, 1, memory_order_relaxed);
	if (cfg->max_conns && n >= cfg->max_conns) {
		atomic_fetch_sub_explicit(&r->srv->conns, 1,
					  memory_order_relaxed);
		log_reject(r, &peer, STATS_CLOSE_CONN_LIMIT);
		close(fd);
		return;
	}
	net_set_nodelay(fd);
	struct conn *c = conn_open(r, fd, &peer);
	if (!c) {
		atomic_fetch_sub_explicit(&r->srv->conns, 1,
					  memory_order_relaxed);
		log_error("out of memory accepting a connection");
		close(fd);
		return;
	}
	/* A store client: counted, and owed a VALIDATE in time. */
	if (cfg->handshake_ms)
		hs_link(r, c);
	stat_add(&r->stats.accepted, 1);
	stat_add(&r->stats.active, 1);
}

/*
 * With a single acceptor, spread new sockets round robin over the reactors:
 * the fd number travels in a MSG_RING to its new owner, which admits it.
 */
static void hand_out(struct reactor *r, int fd)
{
	uint32_t n = r->srv->nreactors, target;
	int32_t i;

	if (!r->srv->cfg.single_acceptor || n == 1) {
		admit(r, fd);
		return;
	}
	target = r->next_target++ % n;
	if (target == r->id || (i = msg_alloc(r)) < 0) {
		admit(r, fd);
		return;
	}
	r->msgs[i].target = target;
	r->msgs[i].seq = (uint32_t)fd;
	r->msgs[i].data = tag_make(TAG_NEWCONN, 0, 0);
	msg_submit(r, i);
}

static void arm_control_accept(struct reactor *r)
{
	struct io_uring_sqe *sqe = get_sqe(r);

	io_uring_prep_multishot_accept(sqe, r->srv->control_fd, NULL, NULL,
				       SOCK_CLOEXEC);
	io_uring_sqe_set_data64(sqe, tag_make(TAG_CACCEPT, 0, 0));
}

/* A control-plane client: HTTP instead of the store protocol. */
static void on_control_accept(struct reactor *r, struct io_uring_cqe *cqe)
{
	int fd = cqe->res;
	struct sockaddr_in6 none = { 0 };
	struct conn *c;

	if (!(cqe->flags & IORING_CQE_F_MORE) && !r->stopping)
		arm_control_accept(r);
	if (fd < 0)
		return;
	if (r->stopping) {
		close(fd);
		return;
	}
	if (r->nhttp == CONTROL_MAX_CONNS) {
		log_warn("refusing a control-plane connection: %d are open",
			 CONTROL_MAX_CONNS);
		close(fd);
		return;
	}
	struct control_conn *cc = control_conn_create(r->srv->control);
	if (!cc || !(c = conn_open(r, fd, &none))) {
		if (cc)
			control_conn_destroy(cc);
		log_error("out of memory accepting a control connection");
		close(fd);
		return;
	}
	c->http = cc;
	r->http[r->nhttp++] = c;
	stat_add(&r->stats.control_conns, 1);
}

static void on_accept(struct reactor *r, struct io_uring_cqe *cqe)
{
	bool more = cqe->flags & IORING_CQE_F_MORE;
	int res = cqe->res;

	if (!more)
		r->accept_armed = false;
	if (res >= 0) {
		hand_out(r, res);
	} else {
		stat_add(&r->stats.accept_errors, 1);
		if (res == -EMFILE || res == -ENFILE || res == -ENOMEM ||
		    res == -ENOBUFS) {
			/* Out of descriptors: back off rather than spin. */
			log_warn("accept: %s; pausing accepts for %d ms",
				 strerror(-res), ACCEPT_BACKOFF_MS);
			if (!r->accept_armed) {
				struct io_uring_sqe *sqe = get_sqe(r);
				io_uring_prep_timeout(sqe, &r->backoff, 0, 0);
				io_uring_sqe_set_data64(
					sqe, tag_make(TAG_BACKOFF, 0, 0));
			}
			return;
		} else if (res != -ECANCELED) {
			log_debug("accept: %s", strerror(-res));
		}
	}
	if (!r->accept_armed && !r->stopping)
		arm_accept(r);
}

/* ---- receiving ------------------------------------------------------- */

/* Bytes from a control-plane client: answer through its reply queue. */
static void http_input(struct reactor *r, struct conn *c, const uint8_t *p,
		       size_t n)
{
	int ret = control_conn_input(c->http, p, n, &r->http_out);

	c->opened_ms = now_ms(); /* for control clients: last activity */

	if (ret >= 0 && buf_used(&r->http_out) &&
	    outq_put(conn_out(c), buf_head(&r->http_out),
		     buf_used(&r->http_out)))
		ret = -ENOMEM;
	buf_reset(&r->http_out);
	buf_shrink(&r->http_out, 1 << 20);
	if (ret < 0) {
		conn_close(r, c, STATS_CLOSE_NOMEM, ret);
		return;
	}
	if (ret == 1)
		c->close_after_send = true;
	mark_dirty(r, c);
}

static void on_recv(struct reactor *r, struct conn *c, struct io_uring_cqe *cqe)
{
	int res = cqe->res;
	enum stats_close why;

	if (!(cqe->flags & IORING_CQE_F_MORE)) {
		c->recv_armed = false;
		c->inflight--;
	}
	if (res > 0) {
		unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
		if (c->state == CONN_OPEN && c->http) {
			http_input(r, c, r->bufs + (size_t)bid * r->bufsize,
				   (size_t)res);
		} else if (c->state == CONN_OPEN) {
			const uint8_t *p = r->bufs + (size_t)bid * r->bufsize;
			stat_add(&r->stats.bytes_in, (uint64_t)res);
			int ret = conn_input(c, &r->th, p, (size_t)res, &why,
					     &r->stats);
			if (ret)
				conn_close(r, c, why, ret);
			else if (outq_len(conn_out(c)))
				mark_dirty(r, c);
			if (c->in_hs && !c->dec.handshake)
				hs_unlink(r, c);
		}
		buf_give_back(r, bid);
		if (!c->recv_armed && c->state == CONN_OPEN) {
			c->rearm = true;
			mark_dirty(r, c);
		}
	} else if (res == 0) {
		conn_close(r, c, STATS_CLOSE_EOF, 0);
	} else if (res == -ENOBUFS) {
		stat_add(&r->stats.enobufs, 1);
		if (c->state == CONN_OPEN) {
			c->rearm = true;
			mark_dirty(r, c);
		}
	} else if (c->state == CONN_OPEN) {
		conn_close(r, c, STATS_CLOSE_IO, res);
	}
	conn_release(r, c);
}

static void on_send(struct reactor *r, struct conn *c, int res)
{
	c->sending = false;
	c->inflight--;
	if (res < 0) {
		conn_close(r, c, STATS_CLOSE_IO, res);
	} else {
		if (!c->http)
			stat_add(&r->stats.bytes_out, (uint64_t)res);
		outq_consume(&c->oq[c->fill ^ 1], (uint64_t)res);
		if (c->state == CONN_OPEN &&
		    (outq_len(&c->oq[0]) || outq_len(&c->oq[1])))
			mark_dirty(r, c);
		else if (c->state == CONN_OPEN && c->close_after_send)
			conn_close(r, c, STATS_CLOSE_EOF, 0);
	}
	conn_release(r, c);
}

/* ---- the loop -------------------------------------------------------- */

static void arm_stop(struct reactor *r)
{
	struct io_uring_sqe *sqe = get_sqe(r);

	io_uring_prep_read(sqe, r->stop_fd, &r->stop_val, sizeof(r->stop_val),
			   0);
	io_uring_sqe_set_data64(sqe, tag_make(TAG_STOP, 0, 0));
}

static void begin_stop(struct reactor *r)
{
	r->stopping = true;
	if (r->id == 0 && r->srv->control)
		control_shutting_down(r->srv->control, true);
	for (uint32_t ch = 0; ch < r->nchunks; ch++)
		for (uint32_t i = 0; i < CONN_CHUNK; i++) {
			struct conn *c = &r->chunks[ch][i];
			if (c->state == CONN_OPEN)
				conn_close(r, c, STATS_CLOSE_SHUTDOWN, 0);
		}
}

static void handle_cqe(struct reactor *r, struct io_uring_cqe *cqe)
{
	uint64_t t = cqe->user_data;
	struct conn *c;

	switch (tag_op(t)) {
	case TAG_ACCEPT:
		on_accept(r, cqe);
		return;
	case TAG_RECV:
	case TAG_SEND:
		c = conn_at(r, tag_slot(t));
		/* In-flight SQEs pin their slot, so this is never stale. */
		if (!c || c->state == CONN_FREE || c->gen != tag_gen(t)) {
			stat_add(&r->stats.stale_cqes, 1);
			return;
		}
		if (tag_op(t) == TAG_RECV)
			on_recv(r, c, cqe);
		else
			on_send(r, c, cqe->res);
		return;
	case TAG_WAKE:
		stat_add(&r->stats.wakes_remote_recv, 1);
		wake_local(r, tag_slot(t), tag_gen(t), (uint32_t)cqe->res);
		return;
	case TAG_MSGSENT:
		on_msgsent(r, tag_slot(t), cqe->res);
		return;
	case TAG_STOP:
		if (!r->stopping)
			begin_stop(r);
		return;
	case TAG_NEWCONN:
		admit(r, cqe->res);
		return;
	case TAG_CACCEPT:
		on_control_accept(r, cqe);
		return;
	case TAG_BACKOFF:
		if (!r->accept_armed && !r->stopping)
			arm_accept(r);
		return;
	}
	stat_add(&r->stats.stale_cqes, 1);
}

static int ring_setup(struct reactor *r)
{
	struct io_uring_params p = { 0 };
	uint32_t entries = r->srv->cfg.ring_entries;
	int ret;

	p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
		  IORING_SETUP_SUBMIT_ALL | IORING_SETUP_CQSIZE;
	p.cq_entries = entries * 8;
	ret = io_uring_queue_init_params(entries, &r->ring, &p);
	if (ret == -EINVAL) {
		/* Older kernel: no DEFER_TASKRUN / SINGLE_ISSUER. */
		memset(&p, 0, sizeof(p));
		p.flags = IORING_SETUP_CQSIZE;
		p.cq_entries = entries * 8;
		ret = io_uring_queue_init_params(entries, &r->ring, &p);
	}
	if (ret)
		return ret;
	r->ring_ok = true;
	if (!(p.features & IORING_FEAT_EXT_ARG) ||
	    !(p.features & IORING_FEAT_NODROP))
		return -EOPNOTSUPP;
	return bufs_setup(r);
}

/* Close connections that did not send VALIDATE in time (slowloris). */
static void expire_handshakes(struct reactor *r)
{
	uint64_t limit = r->srv->cfg.handshake_ms, now;

	if (!r->hs_head)
		return;
	now = now_ms();
	while (r->hs_head && now - r->hs_head->opened_ms >= limit) {
		struct conn *c = r->hs_head;
		conn_close(r, c, STATS_CLOSE_HANDSHAKE_TIMEOUT, 0);
	}
}

/* Close control-plane clients idle for longer than the configured time. */
static void expire_http(struct reactor *r)
{
	uint64_t limit = r->srv->cfg.control_idle_ms, now;

	if (!r->nhttp || !limit)
		return;
	now = now_ms();
	if (now - r->http_scan_ms < 1000)
		return;
	r->http_scan_ms = now;
	for (uint32_t i = r->nhttp; i-- > 0;) {
		struct conn *c = r->http[i];
		if (c->state == CONN_OPEN && !c->sending &&
		    now - c->opened_ms >= limit)
			conn_close(r, c, STATS_CLOSE_EOF, 0);
	}
}

static void loop(struct reactor *r)
{
	struct __kernel_timespec ts = { .tv_sec = 1 };
	struct io_uring_cqe *cqe;
	unsigned head, n;

	struct timespec stop_at = { 0 };

	while (!r->stopping || r->open) {
		if (r->stopping) {
			struct timespec now;
			clock_gettime(CLOCK_MONOTONIC, &now);
			if (!stop_at.tv_sec) {
				stop_at = now;
				stop_at.tv_sec += 2;
			} else if (now.tv_sec > stop_at.tv_sec) {
				log_warn("reactor %u: %u connections still "
					 "busy at shutdown", r->id, r->open);
				break;
			}
		}
		qsbr_offline(r->th.qt);
		int ret = io_uring_submit_and_wait_timeout(&r->ring, &cqe, 1,
							   &ts, NULL);
		qsbr_online(r->th.qt);
		if (ret < 0 && ret != -ETIME && ret != -EINTR &&
		    ret != -EBUSY) {
			log_error("reactor %u: io_uring_enter: %s", r->id,
				  strerror(-ret));
			break;
		}
		n = 0;
		io_uring_for_each_cqe(&r->ring, head, cqe) {
			handle_cqe(r, cqe);
			n++;
		}
		io_uring_cq_advance(&r->ring, n);
		if (r->returned) {
			io_uring_buf_ring_advance(r->br, r->returned);
			r->returned = 0;
		}
		expire_handshakes(r);
		expire_http(r);
		flush(r);
		stat_add(&r->stats.loops, 1);
		stat_add(&r->stats.cqes, n);
		qsbr_quiescent(r->th.qt);
	}
}

static void teardown(struct reactor *r);

static void *reactor_main(void *arg)
{
	struct reactor *r = arg;
	int ret = ring_setup(r);

	if (!ret)
		ret = store_thread_init(&r->th, &r->srv->store, deliver, r);
	r->start_err = ret;
	sem_post(&r->ready);
	if (ret)
		return NULL;
	arm_stop(r);
	if (r->listen_fd >= 0)
		arm_accept(r);
	if (r->id == 0 && r->srv->control_fd >= 0) {
		r->srv->control = control_create(r->srv, &r->th);
		if (r->srv->control)
			arm_control_accept(r);
		else
			log_error("cannot create the control plane: out of "
				  "memory");
	}
	loop(r);
	teardown(r);
	outq_pool_drain(); /* this thread's pooled reply buffers */
	return NULL;
}

struct reactor *reactor_create(struct server *srv, uint32_t id, int listen_fd)
{
	struct reactor *r = calloc(1, sizeof(*r));

	if (!r)
		return NULL;
	r->srv = srv;
	r->id = id;
	r->listen_fd = listen_fd;
	r->nbufs = srv->cfg.buf_count;
	r->bufsize = srv->cfg.buf_size;
	r->msg_free = -1;
	r->backoff.tv_nsec = ACCEPT_BACKOFF_MS * 1000000L;
	r->stop_fd = eventfd(0, EFD_CLOEXEC);
	if (r->stop_fd < 0 || sem_init(&r->ready, 0, 0)) {
		if (r->stop_fd >= 0)
			close(r->stop_fd);
		free(r);
		return NULL;
	}
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
	uint64_t one = 1;

	if (write(r->stop_fd, &one, sizeof(one)) < 0)
		log_error("reactor %u: stop: %s", r->id, strerror(errno));
}

/* On the reactor's thread, after the loop: the ring goes first, so the
 * kernel holds no buffer of ours when the connections are freed. */
static void teardown(struct reactor *r)
{
	if (r->ring_ok)
		io_uring_queue_exit(&r->ring);
	r->ring_ok = false;
	for (uint32_t ch = 0; ch < r->nchunks; ch++) {
		for (uint32_t i = 0; i < CONN_CHUNK; i++) {
			struct conn *c = &r->chunks[ch][i];
			if (c->state == CONN_FREE)
				continue;
			if (c->state == CONN_OPEN)
				store_client_gone(&r->th, &c->ws);
			if (c->http)
				control_conn_destroy(c->http);
			close(c->fd);
			outq_free(&c->oq[0]);
			outq_free(&c->oq[1]);
			buf_free(&c->spill);
			free(c->iov);
			c->state = CONN_FREE;
		}
		free(r->chunks[ch]);
	}
	r->nchunks = 0;
	if (r->id == 0 && r->srv->control) {
		control_destroy(r->srv->control);
		r->srv->control = NULL;
	}
	buf_free(&r->http_out);
	if (r->th.qt)
		store_thread_destroy(&r->th);
}

void reactor_join(struct reactor *r, struct stats *total)
{
	if (r->started)
		pthread_join(r->thread, NULL);
	teardown(r);
	if (total)
		stats_sum(total, &r->stats);
	free(r->chunks);
	free(r->free_slots);
	free(r->msgs);
	free(r->bufs);
	if (r->br)
		munmap(r->br, r->br_bytes);
	close(r->stop_fd);
	sem_destroy(&r->ready);
	free(r);
}

const struct stats *reactor_stats(const struct reactor *r)
{
	return &r->stats;
}
