/* SPDX-License-Identifier: MIT */
/*
 * io_uring.c - the io_uring backend (see io.h).
 *
 * Completion tags: every SQE's user_data is an io_tag (io.h): an opcode,
 * the connection's generation and its slot. A slot is reused only once no
 * SQE of its previous connection is in flight (io_conn.held counts them),
 * so RECV and SEND completions always match their connection.
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
 * Spread sends (--spread-sends N; the reactor picks the sends, io.h's
 * IO_SEND_ELSEWHERE): such a SEND carries IOSQE_ASYNC, so the ring's io-wq
 * worker (one: the ring's limit on unbound workers) issues it on another
 * CPU while this thread issues the rest. With one reactor, 16k wake-ups
 * took 0.1 s on one CPU without it. A connection has one send in flight at
 * a time, so its bytes stay in order.
 *
 * Registered files (--fixed-files on; off by default, since on loopback
 * it did not lower CPU per operation measurably: see bench/RESULTS.md):
 * the ring has a sparse registered-file table, and a new
 * connection's socket goes into it at the connection's slot (a FILES_UPDATE
 * SQE, submitted with its first RECV and held like any SQE).
 * Once that completes, sends name the slot with IOSQE_FIXED_FILE: the
 * kernel skips a file lookup and a reference count per send (perf: fget
 * was 2% of the server's CPU on ops-mix). A multishot RECV takes its file
 * once per arming, so receives keep the fd. The slot is cleared (another
 * FILES_UPDATE) when the reactor forgets the connection, so the socket is
 * released.
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

#include "log.h"
#include "recvbufs.h"
#include "server.h"
#include "stats.h"

enum tag_op {
	TAG_ACCEPT = 1, /* slot = enum io_listener */
	TAG_RECV,
	TAG_SEND,
	TAG_WAKE,    /* arrives from another reactor: res = wait seq */
	TAG_NEWCONN, /* a socket handed over by the acceptor: res = fd */
	TAG_MSGSENT, /* our MSG_RING finished: slot = message index */
	TAG_STOP,    /* the eventfd read */
	TAG_BACKOFF, /* accept back-off timer: slot = enum io_listener */
	TAG_FILES,   /* a socket into the file table at its conn's slot */
	TAG_UNFILE,  /* a freed conn's slot cleared: nothing to do */
};

#define BGID 0

_Static_assert(sizeof(uint64_t) ==
		       sizeof(((struct io_uring_cqe *)0)->user_data),
	       "user_data is 64 bits");

/* The socket's place in the ring's registered-file table (its slot). */
enum ur_fixed {
	UR_FIXED_NONE,    /* not registered: sends name the fd */
	UR_FIXED_PENDING, /* the update is in flight */
	UR_FIXED_OK,      /* sends name the slot (IOSQE_FIXED_FILE) */
	UR_FIXED_FAILED,  /* the update failed: sends name the fd */
};

/* What this backend keeps per connection, in io_conn.priv. */
struct ur_conn {
	struct msghdr msg; /* lent to the kernel while a SENDMSG is in flight */
	uint8_t fixed;     /* enum ur_fixed */
};

_Static_assert(sizeof(struct ur_conn) <= IO_CONN_PRIV,
	       "struct ur_conn fits in io_conn.priv");

static inline struct ur_conn *ur_conn(struct io_conn *ic)
{
	return (struct ur_conn *)ic->priv;
}

/* A message sent to another ring, kept until the kernel confirms it. */
struct rmsg {
	struct io *to;
	int32_t res;
	uint64_t data;
	int32_t next_free;
};

struct io {
	struct io_base b; /* the reactor's context (io.h) */
	struct io_uring ring;
	bool ring_ok;
	bool stopped;
	bool accept_armed[2];

	struct recv_bufs rb; /* owned, lent to the kernel */

	struct rmsg *msgs; /* owned */
	uint32_t nmsgs;
	int32_t msg_free;

	int stop_fd;
	uint64_t stop_val; /* lent to the kernel (eventfd read) */
	struct __kernel_timespec backoff;
	unsigned seen;   /* CQEs waiting for dispatch */
	uint32_t nfiles; /* registered-file slots (0: none) */
	bool spread;     /* IO_SEND_ELSEWHERE is carried out */
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
		     struct stats *stats, const struct io_events *ev, void *arg)
{
	struct io *io = calloc(1, sizeof(*io));

	if (!io)
		return -ENOMEM;
	io_base_init(&io->b, cfg, stats, ev, arg);
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
	io_uring_sqe_set_data64(sqe, io_tag(TAG_STOP, 0, 0));
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
			 "name file descriptors",
			 strerror(-ret));
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
			 "(%s): sends are not spread",
			 strerror(-ret));
		return;
	}
	io->spread = true;
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
	io_uring_sqe_set_data64(sqe, io_tag(TAG_ACCEPT, 0, l));
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
			io_uring_sqe_set_data64(sqe, io_tag(TAG_BACKOFF, 0, l));
		}
		return;
	}
	if (!io->accept_armed[l] && !io->stopped)
		arm_accept(io, l);
}

/* ---- receiving and sending --------------------------------------------- */

/* Put @ic's socket into the file table at its slot (the first RECV). The
 * SQE is held like any other, so ic->fd is there to read when the kernel
 * runs it. */
static void file_register(struct io *io, struct io_conn *ic)
{
	struct io_uring_sqe *sqe = get_sqe(io);

	io_uring_prep_files_update(sqe, &ic->fd, 1, (int)ic->slot);
	io_uring_sqe_set_data64(sqe, io_tag(TAG_FILES, ic->gen, ic->slot));
	ur_conn(ic)->fixed = UR_FIXED_PENDING;
	ic->held++;
}

static void on_file_registered(struct io *io, struct io_conn *ic, int res)
{
	ic->held--;
	if (res == 1) {
		ur_conn(ic)->fixed = UR_FIXED_OK;
		stat_add(&io->b.stats->files_registered, 1);
	} else {
		ur_conn(ic)->fixed = UR_FIXED_FAILED;
		stat_add(&io->b.stats->files_failed, 1);
		log_debug("io_uring: fd %d not registered (%s): its sends "
			  "name the fd",
			  ic->fd, strerror(res < 0 ? -res : EIO));
	}
	io->b.ev->released(io->b.arg, ic); /* it may have closed meanwhile */
}

/* @ic is about to be freed: clear its slot, so the table drops the
 * socket. */
static void ur_forget(struct io *io, struct io_conn *ic)
{
	static const int none = -1;
	struct io_uring_sqe *sqe;

	if (ur_conn(ic)->fixed != UR_FIXED_OK || !io->ring_ok)
		return;
	sqe = get_sqe(io);
	io_uring_prep_files_update(sqe, (int *)&none, 1, (int)ic->slot);
	io_uring_sqe_set_data64(sqe, io_tag(TAG_UNFILE, 0, ic->slot));
	ur_conn(ic)->fixed = UR_FIXED_NONE;
}

static void arm_recv(struct io *io, struct io_conn *ic)
{
	struct io_uring_sqe *sqe = get_sqe(io);

	io_uring_prep_recv_multishot(sqe, ic->fd, NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = BGID;
	io_uring_sqe_set_data64(sqe, io_tag(TAG_RECV, ic->gen, ic->slot));
	ic->held++;
}

static int ur_recv_start(struct io *io, struct io_conn *ic)
{
	*ur_conn(ic) = (struct ur_conn){ .fixed = UR_FIXED_NONE };
	if (ic->slot < io->nfiles)
		file_register(io, ic);
	arm_recv(io, ic);
	return 0;
}

static void on_recv(struct io *io, struct io_conn *ic, struct io_uring_cqe *cqe)
{
	bool more = cqe->flags & IORING_CQE_F_MORE;
	int res = cqe->res;

	if (!more)
		ic->held--;
	if (res > 0) {
		unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
		uint8_t *p = recv_bufs_take(&io->rb, bid);

		io->b.ev->received(io->b.arg, ic, p, res);
		recv_bufs_give(&io->rb, bid);
	} else if (res == -ENOBUFS) {
		stat_add(&io->b.stats->enobufs, 1);
		recv_bufs_dry(&io->rb);
		io->b.ev->released(io->b.arg, ic);
	} else {
		io->b.ev->received(io->b.arg, ic, NULL, res);
	}
	/* The receive ended (the ring ran dry, or the kernel stopped it):
	 * again, unless the reactor closed the connection meanwhile. */
	if (!more && !ic->closed)
		arm_recv(io, ic);
}

static void ur_send(struct io *io, struct io_conn *ic, const struct iovec *iov,
		    unsigned n, unsigned flags)
{
	struct io_uring_sqe *sqe = get_sqe(io);
	struct ur_conn *uc = ur_conn(ic);
	bool fixed = uc->fixed == UR_FIXED_OK;
	int fd = fixed ? (int)ic->slot : ic->fd;

	if (n == 1) {
		/* The common case: plain SEND, no msghdr for the kernel to
		 * import. */
		io_uring_prep_send(sqe, fd, iov[0].iov_base, iov[0].iov_len,
				   MSG_NOSIGNAL);
	} else {
		/* The kernel only reads the iovecs. */
		uc->msg.msg_iov = (struct iovec *)iov;
		uc->msg.msg_iovlen = n;
		io_uring_prep_sendmsg(sqe, fd, &uc->msg, MSG_NOSIGNAL);
	}
	if (fixed)
		sqe->flags |= IOSQE_FIXED_FILE;
	if ((flags & IO_SEND_ELSEWHERE) && io->spread) {
		sqe->flags |=
			IOSQE_ASYNC; /* the ring's io-wq worker sends it */
		stat_add(&io->b.stats->sends_spread, 1);
	}
	io_uring_sqe_set_data64(sqe, io_tag(TAG_SEND, ic->gen, ic->slot));
	ic->held++;
}

/* The socket is shut down: the RECV ends and SENDs in flight fail, each
 * reported as usual; nothing is armed again. */
static void ur_close(struct io *io, struct io_conn *ic)
{
	(void)io;
	ic->closed = true;
	shutdown(ic->fd, SHUT_RDWR);
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
	io_uring_sqe_set_data64(sqe, io_tag(TAG_MSGSENT, 0, (uint32_t)i));
}

static int ur_msg(struct io *from, struct io *to, const struct io_msg *m)
{
	int32_t i = msg_alloc(from);

	if (i < 0)
		return i;
	from->msgs[i].to = to;
	from->msgs[i].res = m->arg;
	from->msgs[i].data =
		io_tag(m->kind == IO_MSG_WAKE ? TAG_WAKE : TAG_NEWCONN, m->gen,
		       m->slot);
	msg_submit(from, i);
	return 0;
}

static void on_msgsent(struct io *io, uint32_t i, int res)
{
	if (res == -EOVERFLOW || res == -EAGAIN) {
		msg_submit(io, (int32_t)i); /* target CQ full: try again */
		return;
	}
	if (res < 0 && io_tag_kind(io->msgs[i].data) == TAG_NEWCONN) {
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
	int ret =
		io_uring_submit_and_wait_timeout(&io->ring, &cqe, 1, &ts, NULL);

	if (ret < 0 && ret != -ETIME && ret != -EINTR && ret != -EBUSY)
		return ret;
	return 0;
}

static void handle_cqe(struct io *io, struct io_uring_cqe *cqe)
{
	uint64_t t = cqe->user_data;
	unsigned kind = io_tag_kind(t);
	struct io_conn *ic;
	struct io_msg m;

	switch ((enum tag_op)kind) {
	case TAG_ACCEPT:
		on_accept(io, (enum io_listener)io_tag_slot(t), cqe);
		return;
	case TAG_RECV:
	case TAG_SEND:
	case TAG_FILES:
		/* A held SQE keeps its slot from reuse: never stale. */
		ic = io->b.ev->lookup(io->b.arg, io_tag_slot(t), io_tag_gen(t));
		if (!ic)
			break;
		if (kind == TAG_RECV) {
			on_recv(io, ic, cqe);
		} else if (kind == TAG_FILES) {
			on_file_registered(io, ic, cqe->res);
		} else {
			ic->held--;
			io->b.ev->sent(io->b.arg, ic, cqe->res);
		}
		return;
	case TAG_WAKE:
	case TAG_NEWCONN:
		m = (struct io_msg){
			.kind = kind == TAG_WAKE ? IO_MSG_WAKE : IO_MSG_CONN,
			.slot = io_tag_slot(t),
			.gen = io_tag_gen(t),
			.arg = cqe->res,
		};
		io->b.ev->message(io->b.arg, &m);
		return;
	case TAG_MSGSENT:
		on_msgsent(io, io_tag_slot(t), cqe->res);
		return;
	case TAG_STOP:
		io->stopped = true;
		io->b.ev->stop(io->b.arg);
		return;
	case TAG_BACKOFF:
		if (!io->accept_armed[io_tag_slot(t)] && !io->stopped)
			arm_accept(io, (enum io_listener)io_tag_slot(t));
		return;
	case TAG_UNFILE:
		if (cqe->res == 1)
			stat_add(&io->b.stats->files_released, 1);
		else
			log_error("io_uring: clearing file slot %u: %s",
				  io_tag_slot(t),
				  strerror(cqe->res < 0 ? -cqe->res : EIO));
		return;
	}
	stat_add(&io->b.stats->stale_cqes, 1);
}

static unsigned ur_dispatch(struct io *io)
{
	struct io_uring_cqe *cqe;
	unsigned head, n = 0;

	io_uring_for_each_cqe (&io->ring, head, cqe) {
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
	.send = ur_send,
	.close = ur_close,
	.forget = ur_forget,
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
		{ IORING_OP_ACCEPT, "ACCEPT" },
		{ IORING_OP_RECV, "RECV" },
		{ IORING_OP_SEND, "SEND" },
		{ IORING_OP_SENDMSG, "SENDMSG" },
		{ IORING_OP_MSG_RING, "MSG_RING" },
		{ IORING_OP_READ, "READ" },
		{ IORING_OP_TIMEOUT, "TIMEOUT" },
	};
	struct io_uring_params p = { 0 };
	struct io_uring_probe *probe;
	struct io_uring ring;
	int ret = io_uring_queue_init_params(8, &ring, &p);

	if (ret == -EPERM || ret == -EACCES) {
		snprintf(why, len,
			 "io_uring denied (%s: a seccomp profile or "
			 "kernel.io_uring_disabled?)",
			 strerror(-ret));
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
