/* SPDX-License-Identifier: MIT */
/*
 * io.h - the I/O backend boundary: how a reactor accepts, receives, sends
 * and hears from other reactors, behind one small table of operations.
 *
 * Two backends implement it: io_uring.c (multishot ACCEPT and RECV from a
 * provided-buffer ring, one io_uring_enter per iteration, MSG_RING
 * messages) and io_epoll.c (level-triggered epoll, nonblocking recv into one
 * per-reactor buffer, one sendmsg per connection per iteration, an eventfd
 * plus a lock-free queue for messages).
 *
 * A backend is a mechanism (Redis's ae_epoll.c is the model): it knows
 * sockets, buffers and completions. It never reads a connection's state,
 * never opens, closes or frees one, and decides no policy. What it keeps
 * per connection lives in the struct io_conn that the reactor embeds in
 * each connection; the backend owns that struct's contents, the reactor
 * only reads ic->held. The reactor (reactor.c, conn.c) owns everything
 * else: connection state, the decision to close, when to free, which sends
 * go to another CPU (memcached's dispatch_conn_new: policy first, then the
 * mechanism).
 *
 * The contract, from the reactor's side:
 *  - recv_start(ic): receive on ic->fd until close(ic); every chunk, the end
 *    of the stream or an error is reported by `received`.
 *  - send(ic, iov, n): write iov[0..n); the send ends with exactly one
 *    `sent` report. A FINISHED SEND (`sent` reported) means the kernel no
 *    longer reads the memory the iovecs point to: only then may the reactor
 *    consume the replies (outq_consume drops the references that keep table
 *    entries alive). A zero-copy send (IORING_OP_SEND_ZC) must therefore
 *    report `sent` after its notification (IORING_CQE_F_NOTIF), not at its
 *    first completion. The reactor starts at most one send per connection
 *    at a time, so a connection's bytes stay in order.
 *  - close(ic): the reactor is done with the connection. The backend shuts
 *    the socket down and reports nothing more for it, except the ends of
 *    the operations it still holds (ic->held counts them: SQEs in flight,
 *    a helper thread's jobs). A send it does not hold (epoll waiting for
 *    the socket to drain) ends silently.
 *  - forget(ic): ic is about to be freed and its fd closed; ic->held is 0.
 *    The backend drops whatever else it keeps of it (a registered file).
 *  - lookup: a completion or readiness event names its connection by slot
 *    and generation (io_tag_*); the backend asks the reactor for the
 *    io_conn, which is NULL for a slot freed or reused since.
 *
 * Events are reported on the reactor's own thread, only from inside
 * dispatch() (epoll's sends that complete at once are reported from
 * inside send()). Only stop() and msg() are called from other threads.
 */
#ifndef RS_SERVER_IO_H
#define RS_SERVER_IO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

struct server_config;
struct stats;
struct io;

/* How long a listener rests after running out of descriptors or memory. */
#define IO_ACCEPT_BACKOFF_MS 100

/* Connection generations wrap at 24 bits: they share a tag with a slot. */
#define IO_GEN_MASK 0xffffffu

/* Backend-private bytes in every io_conn (see struct io_conn). */
#define IO_CONN_PRIV 64

/*
 * What a backend keeps per connection, embedded in the reactor's struct
 * conn. The reactor fills fd, slot and gen before recv_start and reads
 * held; everything else belongs to the backend, which keeps its own state
 * in priv (io_uring: the registered-file state and the msghdr lent to the
 * kernel; epoll: whether EPOLLOUT is armed, and a short write's count).
 */
struct io_conn {
	int fd;        /* the socket; the reactor opens and closes it */
	uint32_t slot; /* the reactor's names for the connection, */
	uint32_t gen;  /* carried in tags (gen & IO_GEN_MASK) */
	uint32_t held; /* operations of the backend in flight on it */
	bool closed;   /* close() was called */
	_Alignas(8) unsigned char priv[IO_CONN_PRIV];
};

/*
 * The one tag codec of both backends: what a completion (io_uring's
 * user_data) or a registration (epoll's data.u64) carries, 64 bits:
 * kind (8) | generation (24) | slot (32).
 */
static inline uint64_t io_tag(unsigned kind, uint32_t gen, uint32_t slot)
{
	return (uint64_t)kind << 56 | (uint64_t)(gen & IO_GEN_MASK) << 32 |
	       slot;
}

static inline unsigned io_tag_kind(uint64_t t)
{
	return (unsigned)(t >> 56);
}

static inline uint32_t io_tag_gen(uint64_t t)
{
	return (uint32_t)(t >> 32) & IO_GEN_MASK;
}

static inline uint32_t io_tag_slot(uint64_t t)
{
	return (uint32_t)t;
}

enum io_listener {
	IO_LISTEN_STORE,   /* store clients */
	IO_LISTEN_CONTROL, /* the control plane's HTTP clients (reactor 0) */
};

/* A cross-reactor message. */
enum io_msg_kind {
	IO_MSG_WAKE = 1, /* a wait of conn (slot, gen) completed: arg = seq */
	IO_MSG_CONN,     /* a socket handed out by the acceptor: arg = fd */
};

struct io_msg {
	uint32_t kind; /* enum io_msg_kind */
	uint32_t slot;
	uint32_t gen;
	int32_t arg;
};

/* send() flags: the reactor's policy, carried out by the backend. */
enum io_send_flags {
	/* Make this send on another CPU if the backend can (--spread-sends:
	 * io_uring's io-wq worker, epoll's helper thread). */
	IO_SEND_ELSEWHERE = 1u << 0,
};

/* What a backend reports; @arg is the one given to create(). */
struct io_events {
	/* The io_conn of (slot, gen), or NULL if that connection is gone. */
	struct io_conn *(*lookup)(void *arg, uint32_t slot, uint32_t gen);
	/* A new socket (owned by the callee) from listener @l. */
	void (*accepted)(void *arg, enum io_listener l, int fd);
	/*
	 * accept on @l failed with @err. Returns true if the listener must
	 * rest for IO_ACCEPT_BACKOFF_MS (out of descriptors or memory).
	 */
	bool (*accept_failed)(void *arg, enum io_listener l, int err);
	/* @n > 0 bytes arrived for @ic (borrowed until return); 0: EOF;
	 * < 0: -errno. */
	void (*received)(void *arg, struct io_conn *ic, const uint8_t *p,
			 ssize_t n);
	/*
	 * The send started by send() ended (see the top: the iovecs' memory
	 * is the reactor's again): @res bytes went out, possibly fewer than
	 * asked, or -errno.
	 */
	void (*sent)(void *arg, struct io_conn *ic, int res);
	/* An operation the backend held on @ic ended with nothing to report
	 * (ic->held dropped): a closed connection may be freed now. */
	void (*released)(void *arg, struct io_conn *ic);
	/* A message from another reactor. */
	void (*message)(void *arg, const struct io_msg *m);
	/* stop() was called. */
	void (*stop)(void *arg);
};

/*
 * What every backend's struct io holds (as member b): its reactor's
 * borrowed context, set by io_base_init() in create().
 */
struct io_base {
	const struct server_config *cfg;
	struct stats *stats;
	const struct io_events *ev;
	void *arg;        /* for ev's callbacks */
	int listen_fd[2]; /* by enum io_listener; -1 until listen() */
};

static inline void io_base_init(struct io_base *b,
				const struct server_config *cfg,
				struct stats *stats, const struct io_events *ev,
				void *arg)
{
	*b = (struct io_base){ .cfg = cfg,
			       .stats = stats,
			       .ev = ev,
			       .arg = arg,
			       .listen_fd = { -1, -1 } };
}

struct io_ops {
	const char *name; /* "io_uring" or "epoll", as logged and reported */
	/*
	 * Create an instance for one reactor (any thread, before any reactor
	 * runs). @stats, @ev and @arg are borrowed. Returns 0 or -errno.
	 */
	int (*create)(struct io **out, const struct server_config *cfg,
		      struct stats *stats, const struct io_events *ev,
		      void *arg);
	/* Set up what must belong to the reactor's thread. 0 or -errno. */
	int (*init)(struct io *io);
	/*
	 * On the reactor's thread after its loop: let go of the kernel's
	 * hold on our memory; no event is reported after this, and the
	 * backend holds nothing of any connection. Idempotent.
	 */
	void (*quit)(struct io *io);
	/* Free everything, once no thread can reach @io any more. */
	void (*destroy)(struct io *io);
	/* Accept from listening socket @fd (borrowed). 0 or -errno. */
	int (*listen)(struct io *io, int fd, enum io_listener l);
	/* Start receiving on a new connection (see the top). 0 or -errno. */
	int (*recv_start)(struct io *io, struct io_conn *ic);
	/* Write @iov[0..@n) (borrowed until `sent`), with enum
	 * io_send_flags @flags (see the top). */
	void (*send)(struct io *io, struct io_conn *ic, const struct iovec *iov,
		     unsigned n, unsigned flags);
	/* The reactor is done with @ic (see the top). */
	void (*close)(struct io *io, struct io_conn *ic);
	/* @ic is about to be freed (see the top). NULL: nothing to drop. */
	void (*forget)(struct io *io, struct io_conn *ic);
	/*
	 * Post @m to the reactor of @to (from its thread or another). 0, or
	 * -errno when it cannot even be queued (then the caller drops it).
	 */
	int (*msg)(struct io *from, struct io *to, const struct io_msg *m);
	/* Ask the reactor to stop (any thread). */
	void (*stop)(struct io *io);
	/*
	 * Submit what is queued and wait up to @timeout_ms for events.
	 * Returns 0 or -errno (a fatal error for the reactor).
	 */
	int (*wait)(struct io *io, int timeout_ms);
	/* Report the events wait() collected. Returns how many. */
	unsigned (*dispatch)(struct io *io);
};

extern const struct io_ops io_uring_ops;
extern const struct io_ops io_epoll_ops;

/*
 * Can the io_uring backend run here? Probes once: io_uring_setup permitted,
 * the opcodes, features and ring registrations it uses. Returns 0, or
 * -errno with a one-line reason in @why (e.g. "io_uring denied (Operation
 * not permitted: a seccomp profile or kernel.io_uring_disabled?)").
 */
int io_uring_probe(char *why, size_t len);

#endif
