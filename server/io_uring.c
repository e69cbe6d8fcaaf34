/* SPDX-License-Identifier: MIT */
/*
 * io_uring.c - the io_uring backend (see io.h).
 *
 * Completion tags: every SQE's user_data packs an opcode (8 bits), the
 * connection slot's generation (24 bits) and the slot (32 bits). A slot is
 * reused only once no SQE of its previous connection is in flight
 * (conn->inflight), so RECV and SEND completions always match their
 * connection.
 *
 * Accepts are multishot, one per listener. Receives are multishot RECVs
 * drawing from this ring's provided-buffer ring (common/recvbufs.h: it is
 * kept as full as the receives per batch need, so that it cycles through
 * buffers still in cache). A buffer is handed back as soon as its bytes
 * went through the decoder, and the ring is refilled once per batch. When
 * a RECV ends (the ring ran dry: -ENOBUFS, or the kernel stopped it) it is
 * re-armed at once: the new SQE is only submitted by the next
 * io_uring_enter, after the batch's buffers are back.
 * A reply batch goes out as one SEND (one iovec) or SENDMSG.
 *
 * Spread sends (--spread-sends N, on by default where the process has more
 * CPUs than reactors): past N sends in one batch, every other SEND carries
 * IOSQE_ASYNC, so the ring's io-wq worker (one: the ring's limit on
 * unbound workers) issues it on another CPU while this thread issues the
 * rest. That is for bursts: one SET releasing thousands of WAITs is
 * thousands of sends, and on loopback each also pays its receiver's TCP
 * path; with one reactor, 16k wake-ups took 0.1 s on one CPU. A
 * connection has one send in flight at a time, so its bytes stay in order.
 *
 * Registered files (--fixed-files on; off by default, since on loopback
 * it did not lower CPU per operation measurably: see bench/RESULTS.md):
 * the ring has a sparse registered-file table, and a new
 * connection's socket goes into it at the connection's slot (a FILES_UPDATE
 * SQE, submitted with its first RECV and pinning the slot like any SQE).
 * Once that completes, sends name the slot with IOSQE_FIXED_FILE: the
 * kernel skips a file lookup and a reference count per send (perf: fget
 * was 2% of the server's CPU on ops-mix). A multishot RECV takes its file
 * once per arming, so receives keep the fd. The slot is cleared (another
 * FILES_UPDATE) when the connection is freed, so the socket is released.
 * Without the table (an old kernel, RLIMIT_NOFILE) everything names fds.
 *
 * Messages to other reactors are MSG_RING SQEs; each is kept until the
 * kernel confirms it (and sent again while the target's CQ is full).
 *
 * Threads: everything runs on the reactor's thread, except stop() (an
 * eventfd write) and other reactors' MSG_RING SQEs that target this ring.
 */
#include "io.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <liburing.h>

#include "conn.h"
#include "recvbufs.h"
#include "log.h"
#include "server.h"
#include "stats.h"

enum tag_op {
	TAG_ACCEPT = 1, /* slot = enum io_listener */
	TAG_RECV,
	TAG_SEND,
	TAG_WAKE,       /* arrives from another reactor: res = wait seq */
	TAG_NEWCONN,    /* a socket handed over by the acceptor: res = fd */
	TAG_MSGSENT,    /* our MSG_RING finished: slot = message index */
	TAG_STOP,       /* the eventfd read */
	TAG_BACKOFF,    /* accept back-off timer: slot = enum io_listener */
	TAG_FILES,      /* a socket into the file table at its conn's slot */
	TAG_UNFILE,     /* a freed conn's slot cleared: nothing to do */
};

#define BGID 0

_Static_assert(sizeof(uint64_t) == sizeof(((struct io_uring_cqe *)0)->user_data),
	       "user_data is 64 bits");

static inline uint64_t tag_make(enum tag_op op, uint32_t gen, uint32_t slot)
{
	return (uint64_t)op << 56 | (uint64_t)(gen & CONN_GEN_MASK) << 32 | slot;
}

static inline enum tag_op tag_op(uint64_t t)
{
	return (enum tag_op)(t >> 56);
}

static inline uint32_t tag_gen(uint64_t t)
{
	return (uint32_t)(t >> 32) & CONN_GEN_MASK;
}

static inline uint32_t tag_slot(uint64_t t)
{
	return (uint32_t)t;
}

/* A message sent to another ring, kept until the kernel confirms it. */
struct rmsg {
	struct io *to;
	int32_t res;
	uint64_t data;
	int32_t next_free;
};

struct io {
	struct io_base b;             /* the reactor's context (io.h) */
	struct io_uring ring;
	bool ring_ok;
	bool stopped;
	bool accept_armed[2];

	struct recv_bufs rb;          /* owned, lent to the kernel */

	struct rmsg *msgs;            /* owned */
	uint32_t nmsgs;
	int32_t msg_free;

	int stop_fd;
	uint64_t stop_val;            /* lent to the kernel (eventfd read) */
	struct __kernel_timespec backoff;
	unsigned seen;                /* CQEs waiting for dispatch */
	uint32_t nfiles;              /* registered-file slots (0: none) */
	uint32_t spread;              /* --spread-sends; 0: off */
	uint32_t nsends;              /* SENDs queued since the last wait */
};

/* The most registered-file slots a ring asks for (the kernel refuses more
 * than RLIMIT_NOFILE, so files_setup() asks for at most that). */
#define FILES_MAX 65536u

/* An SQE, submitting first if the queue is full; never NULL. */
static struct io_uring_sqe *get_sqe(struct io *io)
{
	struct io_uring_sqe *sqe;

	while (!(sqe = io_uring_get_sqe(&io->ring)))
		io_uring_submit(&io->ring);
	return sqe;
}

/* ---- set-up ------------------------------------------------------------ */

static int ur_create(struct io **out, const struct server_config *cfg,
		     struct conn_table *ct, struct stats *stats,
		     const struct io_events *ev, void *arg)
{
	struct io *io = calloc(1, sizeof(*io));

	if (!io)
		return -ENOMEM;
	io_base_init(&io->b, cfg, ct, stats, ev, arg);
	io->msg_free = -1;
	io->backoff.tv_nsec = IO_ACCEPT_BACKOFF_MS * 1000000L;
	io->stop_fd = eventfd(0, EFD_CLOEXEC);
	if (io->stop_fd < 0) {
		int err = -errno;
		free(io);
		return err;
	}
	*out = io;
	return 0;
}

static void arm_stop(struct io *io)
{
	struct io_uring_sqe *sqe = get_sqe(io);

	io_uring_prep_read(sqe, io->stop_fd, &io->stop_val,
			   sizeof(io->stop_val), 0);
	io_uring_sqe_set_data64(sqe, tag_make(TAG_STOP, 0, 0));
}

/* The sparse registered-file table; without it, sends name fds. */
static void files_setup(struct io *io)
{
	struct rlimit rl;
	uint32_t n = FILES_MAX;
	int ret;

	if (!getrlimit(RLIMIT_NOFILE, &rl) && rl.rlim_cur < n)
		n = (uint32_t)rl.rlim_cur;
	ret = io_uring_register_files_sparse(&io->ring, n);
	if (ret) {
		log_info("io_uring: no registered-file table (%s): sends "
			 "name file descriptors", strerror(-ret));
		return;
	}
	io->nfiles = n;
}

/* One io-wq worker for spread sends: without the limit, a burst of
 * async SENDs could start a kernel thread for each. */
static void spread_setup(struct io *io)
{
	unsigned int max[2] = { 0, 1 }; /* bounded: unchanged; unbound: 1 */
	int ret = io_uring_register_iowq_max_workers(&io->ring, max);

	if (ret) {
		log_info("io_uring: cannot limit the ring's kernel workers "
			 "(%s): sends are not spread", strerror(-ret));
		return;
	}
	io->spread = io->b.cfg->spread_sends;
}

static int ur_init(struct io *io)
{
	struct io_uring_params p = { 0 };
	uint32_t entries = io->b.cfg->ring_entries;
	int ret;

	p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
		  IORING_SETUP_SUBMIT_ALL | IORING_SETUP_CQSIZE;
	p.cq_entries = entries * 8;
	ret = io_uring_queue_init_params(entries, &io->ring, &p);
	if (ret == -EINVAL) {
		/* Older kernel: no DEFER_TASKRUN / SINGLE_ISSUER. */
		memset(&p, 0, sizeof(p));
		p.flags = IORING_SETUP_CQSIZE;
		p.cq_entries = entries * 8;
		ret = io_uring_queue_init_params(entries, &io->ring, &p);
	}
	if (ret)
		return ret;
	io->ring_ok = true;
	if (!(p.features & IORING_FEAT_EXT_ARG) ||
	    !(p.features & IORING_FEAT_NODROP))
		return -EOPNOTSUPP;
	ret = recv_bufs_init(&io->rb, &io->ring, BGID, io->b.cfg->buf_count,
			     io->b.cfg->buf_size, io->b.cfg->buf_min);
	if (!ret)
		arm_stop(io);
	if (!ret && io->b.cfg->fixed_files)
		files_setup(io);
	if (!ret && io->b.cfg->spread_sends)
		spread_setup(io);
	return ret;
}

/* The ring goes first, so the kernel holds no buffer of ours. */
static void ur_quit(struct io *io)
{
	if (io->ring_ok)
		io_uring_queue_exit(&io->ring);
	io->ring_ok = false;
}

static void ur_destroy(struct io *io)
{
	ur_quit(io);
	free(io->msgs);
	recv_bufs_destroy(&io->rb, NULL);
	close(io->stop_fd);
	free(io);
}

static void ur_stop(struct io *io)
{
	uint64_t one = 1;

	if (write(io->stop_fd, &one, sizeof(one)) < 0)
		log_error("stop: %s", strerror(errno));
}

/* ---- accepting --------------------------------------------------------- */

static void arm_accept(struct io *io, enum io_listener l)
{
	struct io_uring_sqe *sqe = get_sqe(io);

	io_uring_prep_multishot_accept(sqe, io->b.listen_fd[l], NULL, NULL,
				       SOCK_CLOEXEC);
	io_uring_sqe_set_data64(sqe, tag_make(TAG_ACCEPT, 0, l));
	io->accept_armed[l] = true;
}

static int ur_listen(struct io *io, int fd, enum io_listener l)
{
	io->b.listen_fd[l] = fd;
	arm_accept(io, l);
	return 0;
}

static void on_accept(struct io *io, enum io_listener l,
		      struct io_uring_cqe *cqe)
{
	int res = cqe->res;

	if (!(cqe->flags & IORING_CQE_F_MORE))
		io->accept_armed[l] = false;
	if (res >= 0) {
		io->b.ev->accepted(io->b.arg, l, res);
	} else if (io->b.ev->accept_failed(io->b.arg, l, res)) {
		if (!io->accept_armed[l]) {
			struct io_uring_sqe *sqe = get_sqe(io);
			io_uring_prep_timeout(sqe, &io->backoff, 0, 0);
			io_uring_sqe_set_data64(sqe,
						tag_make(TAG_BACKOFF, 0, l));
		}
		return;
	}
	if (!io->accept_armed[l] && !io->stopped)
		arm_accept(io, l);
}

/* ---- receiving and sending --------------------------------------------- */

/* Put @c's socket into the file table at its slot (the first RECV). The
 * SQE pins the slot, so c->fd is there to read when the kernel runs it. */
static void file_register(struct io *io, struct conn *c)
{
	struct io_uring_sqe *sqe = get_sqe(io);

	io_uring_prep_files_update(sqe, &c->fd, 1, (int)c->slot);
	io_uring_sqe_set_data64(sqe, tag_make(TAG_FILES, c->gen, c->slot));
	c->fixed = CONN_FIXED_PENDING;
	c->inflight++;
}

static void on_file_registered(struct io *io, struct conn *c, int res)
{
	c->inflight--;
	if (res == 1) {
		c->fixed = CONN_FIXED_OK;
		stat_add(&io->b.stats->files_registered, 1);
	} else {
		c->fixed = CONN_FIXED_FAILED;
		stat_add(&io->b.stats->files_failed, 1);
		log_debug("io_uring: fd %d not registered (%s): its sends "
			  "name the fd", c->fd, strerror(res < 0 ? -res : EIO));
	}
	conn_release(io->b.ct, c); /* it may have closed meanwhile */
}

/* @c is being freed: clear its slot, so the table drops the socket. */
static void ur_conn_freed(struct io *io, struct conn *c)
{
	static const int none = -1;
	struct io_uring_sqe *sqe;

	if (c->fixed != CONN_FIXED_OK || !io->ring_ok)
		return;
	sqe = get_sqe(io);
	io_uring_prep_files_update(sqe, (int *)&none, 1, (int)c->slot);
	io_uring_sqe_set_data64(sqe, tag_make(TAG_UNFILE, 0, c->slot));
	c->fixed = CONN_FIXED_NONE;
}

static int ur_recv_start(struct io *io, struct conn *c)
{
	struct io_uring_sqe *sqe;

	if (c->fixed == CONN_FIXED_NONE && c->slot < io->nfiles)
		file_register(io, c);
	sqe = get_sqe(io);

	io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = BGID;
	io_uring_sqe_set_data64(sqe, tag_make(TAG_RECV, c->gen, c->slot));
	c->inflight++;
	return 0;
}

static void on_recv(struct io *io, struct conn *c, struct io_uring_cqe *cqe)
{
	bool more = cqe->flags & IORING_CQE_F_MORE;
	int res = cqe->res;

	if (!more)
		c->inflight--;
	if (res > 0) {
		unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
		uint8_t *p = recv_bufs_take(&io->rb, bid);

		io->b.ev->received(io->b.arg, c, p, res);
		recv_bufs_give(&io->rb, bid);
	} else if (res == -ENOBUFS) {
		stat_add(&io->b.stats->enobufs, 1);
		recv_bufs_dry(&io->rb);
		conn_release(io->b.ct, c);
	} else {
		io->b.ev->received(io->b.arg, c, NULL, res);
	}
	if (!more && c->state == CONN_OPEN)
		ur_recv_start(io, c);
}

static void ur_send(struct io *io, struct conn *c, unsigned n)
{
	struct io_uring_sqe *sqe = get_sqe(io);

	bool fixed = c->fixed == CONN_FIXED_OK;
	int fd = fixed ? (int)c->slot : c->fd;

	if (n == 1) {
		/* The common case: plain SEND, no msghdr for the kernel to
		 * import. */
		io_uring_prep_send(sqe, fd, c->iov[0].iov_base,
				   c->iov[0].iov_len, MSG_NOSIGNAL);
	} else {
		c->msg.msg_iov = c->iov;
		c->msg.msg_iovlen = n;
		io_uring_prep_sendmsg(sqe, fd, &c->msg, MSG_NOSIGNAL);
	}
	if (fixed)
		sqe->flags |= IOSQE_FIXED_FILE;
	if (io->spread && ++io->nsends > io->spread && (io->nsends & 1)) {
		sqe->flags |= IOSQE_ASYNC; /* the ring's io-wq worker sends it */
		stat_add(&io->b.stats->sends_spread, 1);
	}
	io_uring_sqe_set_data64(sqe, tag_make(TAG_SEND, c->gen, c->slot));
	c->inflight++;
}

/* ---- messages ---------------------------------------------------------- */

static int32_t msg_alloc(struct io *io)
{
	if (io->msg_free < 0) {
		uint32_t n = io->nmsgs ? io->nmsgs * 2 : 64;
		struct rmsg *m = realloc(io->msgs, n * sizeof(*m));
		if (!m)
			return -ENOMEM;
		for (uint32_t i = io->nmsgs; i < n; i++)
			m[i].next_free = i + 1 < n ? (int32_t)(i + 1) : -1;
		io->msg_free = (int32_t)io->nmsgs;
		io->msgs = m;
		io->nmsgs = n;
	}
	int32_t i = io->msg_free;
	io->msg_free = io->msgs[i].next_free;
	return i;
}

static void msg_submit(struct io *io, int32_t i)
{
	struct rmsg *m = &io->msgs[i];
	struct io_uring_sqe *sqe = get_sqe(io);

	io_uring_prep_msg_ring(sqe, m->to->ring.ring_fd, (unsigned)m->res,
			       m->data, 0);
	io_uring_sqe_set_data64(sqe, tag_make(TAG_MSGSENT, 0, (uint32_t)i));
}

static int ur_msg(struct io *from, struct io *to, const struct io_msg *m)
{
	int32_t i = msg_alloc(from);

	if (i < 0)
		return i;
	from->msgs[i].to = to;
	from->msgs[i].res = m->arg;
	from->msgs[i].data = tag_make(m->kind == IO_MSG_WAKE ? TAG_WAKE
							     : TAG_NEWCONN,
				      m->gen, m->slot);
	msg_submit(from, i);
	return 0;
}

static void on_msgsent(struct io *io, uint32_t i, int res)
{
	if (res == -EOVERFLOW || res == -EAGAIN) {
		msg_submit(io, (int32_t)i); /* target CQ full: try again */
		return;
	}
	if (res < 0 && tag_op(io->msgs[i].data) == TAG_NEWCONN) {
		/* The target is gone (shutting down): drop the socket. */
		close(io->msgs[i].res);
	} else if (res < 0 && !io->stopped) {
		log_error("cross-reactor message failed: %s", strerror(-res));
	}
	io->msgs[i].next_free = io->msg_free;
	io->msg_free = (int32_t)i;
}

/* ---- the batch --------------------------------------------------------- */

static int ur_wait(struct io *io, int timeout_ms)
{
	struct __kernel_timespec ts = {
		.tv_sec = timeout_ms / 1000,
		.tv_nsec = (long)(timeout_ms % 1000) * 1000000L,
	};
	struct io_uring_cqe *cqe;
	int ret = io_uring_submit_and_wait_timeout(&io->ring, &cqe, 1, &ts,
						   NULL);

	io->nsends = 0;

	if (ret < 0 && ret != -ETIME && ret != -EINTR && ret != -EBUSY)
		return ret;
	return 0;
}

static void handle_cqe(struct io *io, struct io_uring_cqe *cqe)
{
	uint64_t t = cqe->user_data;
	struct io_msg m;
	struct conn *c;

	switch (tag_op(t)) {
	case TAG_ACCEPT:
		on_accept(io, (enum io_listener)tag_slot(t), cqe);
		return;
	case TAG_RECV:
	case TAG_SEND:
	case TAG_FILES:
		/* In-flight SQEs pin their slot, so this is never stale. */
		c = conn_get(io->b.ct, tag_slot(t), tag_gen(t));
		if (!c)
			break;
		if (tag_op(t) == TAG_RECV) {
			on_recv(io, c, cqe);
		} else if (tag_op(t) == TAG_FILES) {
			on_file_registered(io, c, cqe->res);
		} else {
			c->inflight--;
			io->b.ev->sent(io->b.arg, c, cqe->res);
		}
		return;
	case TAG_WAKE:
	case TAG_NEWCONN:
		m = (struct io_msg){
			.kind = tag_op(t) == TAG_WAKE ? IO_MSG_WAKE
						      : IO_MSG_CONN,
			.slot = tag_slot(t),
			.gen = tag_gen(t),
			.arg = cqe->res,
		};
		io->b.ev->message(io->b.arg, &m);
		return;
	case TAG_MSGSENT:
		on_msgsent(io, tag_slot(t), cqe->res);
		return;
	case TAG_STOP:
		io->stopped = true;
		io->b.ev->stop(io->b.arg);
		return;
	case TAG_BACKOFF:
		if (!io->accept_armed[tag_slot(t)] && !io->stopped)
			arm_accept(io, (enum io_listener)tag_slot(t));
		return;
	case TAG_UNFILE:
		if (cqe->res == 1)
			stat_add(&io->b.stats->files_released, 1);
		else
			log_error("io_uring: clearing file slot %u: %s",
				  tag_slot(t),
				  strerror(cqe->res < 0 ? -cqe->res : EIO));
		return;
	}
	stat_add(&io->b.stats->stale_cqes, 1);
}

static unsigned ur_dispatch(struct io *io)
{
	struct io_uring_cqe *cqe;
	unsigned head, n = 0;

	io_uring_for_each_cqe(&io->ring, head, cqe) {
		handle_cqe(io, cqe);
		n++;
	}
	io_uring_cq_advance(&io->ring, n);
	recv_bufs_flush(&io->rb);
	/* A gauge, one writer: a plain store. */
	atomic_store_explicit(&io->b.stats->recv_bufs_target, io->rb.target,
			      memory_order_relaxed);
	return n;
}

const struct io_ops io_uring_ops = {
	.name = "io_uring",
	.create = ur_create,
	.init = ur_init,
	.quit = ur_quit,
	.destroy = ur_destroy,
	.listen = ur_listen,
	.recv_start = ur_recv_start,
	.conn_freed = ur_conn_freed,
	.send = ur_send,
	.msg = ur_msg,
	.stop = ur_stop,
	.wait = ur_wait,
	.dispatch = ur_dispatch,
};

/* ---- the start-up probe ------------------------------------------------ */

/*
 * Does a multishot RECV with a buffer ring deliver and stay armed? (It came
 * in 6.0, after multishot ACCEPT and buffer rings in 5.19, so it stands for
 * all three.)
 */
static int probe_multishot(struct io_uring *ring, char *why, size_t len)
{
	struct io_uring_buf_reg reg = { .ring_entries = 1, .bgid = 0 };
	struct io_uring_buf_ring *br;
	struct io_uring_cqe *cqe;
	struct io_uring_sqe *sqe;
	static const char byte = 'x';
	char buf[16];
	int sv[2], ret;
	size_t br_bytes = 4096;

	br = mmap(NULL, br_bytes, PROT_READ | PROT_WRITE,
		  MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
	if (br == MAP_FAILED)
		return -errno;
	reg.ring_addr = (unsigned long)br;
	ret = io_uring_register_buf_ring(ring, &reg, 0);
	if (ret) {
		snprintf(why, len, "io_uring lacks provided-buffer rings (%s)",
			 strerror(-ret));
		munmap(br, br_bytes);
		return ret;
	}
	io_uring_buf_ring_init(br);
	io_uring_buf_ring_add(br, buf, sizeof(buf), 0, 0, 0);
	io_uring_buf_ring_advance(br, 1);
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)) {
		ret = -errno;
		snprintf(why, len, "socketpair: %s", strerror(errno));
		goto out;
	}
	sqe = io_uring_get_sqe(ring);
	io_uring_prep_recv_multishot(sqe, sv[0], NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = 0;
	ret = io_uring_submit(ring);
	if (ret >= 0 && write(sv[1], &byte, 1) != 1)
		ret = -errno;
	if (ret >= 0)
		ret = io_uring_wait_cqe(ring, &cqe);
	if (ret >= 0) {
		ret = cqe->res;
		if (ret > 0 && !(cqe->flags & IORING_CQE_F_MORE))
			ret = -EOPNOTSUPP;
		io_uring_cqe_seen(ring, cqe);
	}
	if (ret < 0)
		snprintf(why, len, "io_uring lacks multishot receive (%s)",
			 strerror(-ret));
	else
		ret = 0;
	close(sv[0]);
	close(sv[1]);
out:
	io_uring_queue_exit(ring); /* also cancels the probe's RECV */
	munmap(br, br_bytes);
	return ret;
}

int io_uring_probe(char *why, size_t len)
{
	static const struct {
		int op;
		const char *name;
	} ops[] = {
		{ IORING_OP_ACCEPT, "ACCEPT" },   { IORING_OP_RECV, "RECV" },
		{ IORING_OP_SEND, "SEND" },       { IORING_OP_SENDMSG, "SENDMSG" },
		{ IORING_OP_MSG_RING, "MSG_RING" }, { IORING_OP_READ, "READ" },
		{ IORING_OP_TIMEOUT, "TIMEOUT" },
	};
	struct io_uring_params p = { 0 };
	struct io_uring_probe *probe;
	struct io_uring ring;
	int ret = io_uring_queue_init_params(8, &ring, &p);

	if (ret == -EPERM || ret == -EACCES) {
		snprintf(why, len, "io_uring denied (%s: a seccomp profile or "
				   "kernel.io_uring_disabled?)", strerror(-ret));
		return ret;
	}
	if (ret == -ENOSYS) {
		snprintf(why, len, "io_uring not in this kernel (%s)",
			 strerror(-ret));
		return ret;
	}
	if (ret) {
		snprintf(why, len, "io_uring setup failed (%s)",
			 strerror(-ret));
		return ret;
	}
	if (!(p.features & IORING_FEAT_EXT_ARG) ||
	    !(p.features & IORING_FEAT_NODROP)) {
		snprintf(why, len, "io_uring lacks %s (kernel older than 5.11)",
			 p.features & IORING_FEAT_NODROP ? "FEAT_EXT_ARG"
							 : "FEAT_NODROP");
		io_uring_queue_exit(&ring);
		return -EOPNOTSUPP;
	}
	probe = io_uring_get_probe_ring(&ring);
	if (!probe) {
		snprintf(why, len, "io_uring cannot probe its opcodes");
		io_uring_queue_exit(&ring);
		return -EOPNOTSUPP;
	}
	for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
		if (!io_uring_opcode_supported(probe, ops[i].op)) {
			snprintf(why, len, "io_uring lacks IORING_OP_%s",
				 ops[i].name);
			io_uring_free_probe(probe);
			io_uring_queue_exit(&ring);
			return -EOPNOTSUPP;
		}
	}
	io_uring_free_probe(probe);
	return probe_multishot(&ring, why, len);
}
