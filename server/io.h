/* SPDX-License-Identifier: MIT */
/*
 * io.h - the I/O backend seam: how a reactor accepts, receives, sends and
 * hears from other reactors, behind one small table of operations.
 *
 * Two backends implement it: io_uring.c (multishot ACCEPT and RECV from a
 * provided-buffer ring, one io_uring_enter per iteration, MSG_RING
 * messages) and io_epoll.c (level-triggered epoll, nonblocking recv into one
 * per-reactor buffer, one sendmsg per connection per iteration, an eventfd
 * plus a lock-free queue for messages). Everything above the seam -
 * connections, decoding, the store, waiters, replies, limits, counters and
 * logs - is one code path.
 *
 * A backend reports what happened through struct io_events, always on the
 * reactor's own thread and only from inside dispatch() (or, for epoll, from
 * inside send() when the bytes went out at once). Only stop() and msg() are
 * called from other threads.
 */
#ifndef RS_SERVER_IO_H
#define RS_SERVER_IO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct conn;
struct conn_table;
struct server_config;
struct stats;
struct io;

/* How long a listener rests after running out of descriptors or memory. */
#define IO_ACCEPT_BACKOFF_MS 100

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

/* What a backend reports; @arg is the one given to create(). */
struct io_events {
	/* A new socket (owned by the callee) from listener @l. */
	void (*accepted)(void *arg, enum io_listener l, int fd);
	/*
	 * accept on @l failed with @err. Returns true if the listener must
	 * rest for IO_ACCEPT_BACKOFF_MS (out of descriptors or memory).
	 */
	bool (*accept_failed)(void *arg, enum io_listener l, int err);
	/* @n > 0 bytes arrived for @c (borrowed until return); 0: EOF;
	 * < 0: -errno. */
	void (*received)(void *arg, struct conn *c, const uint8_t *p,
			 ssize_t n);
	/*
	 * The send started by io_ops.send ended: @res bytes of c->iov went
	 * out (possibly fewer than asked, or 0 when a blocked socket became
	 * writable again), or -errno.
	 */
	void (*sent)(void *arg, struct conn *c, int res);
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
	struct conn_table *ct;
	struct stats *stats;
	const struct io_events *ev;
	void *arg;            /* for ev's callbacks */
	int listen_fd[2];     /* by enum io_listener; -1 until listen() */
};

static inline void io_base_init(struct io_base *b,
				const struct server_config *cfg,
				struct conn_table *ct, struct stats *stats,
				const struct io_events *ev, void *arg)
{
	*b = (struct io_base){ .cfg = cfg, .ct = ct, .stats = stats,
			       .ev = ev, .arg = arg, .listen_fd = { -1, -1 } };
}

struct io_ops {
	const char *name; /* "io_uring" or "epoll", as logged and reported */
	/*
	 * Create an instance for one reactor (any thread, before any reactor
	 * runs). @ct (the reactor's connections: slots are looked up there),
	 * @stats, @ev and @arg are borrowed. Returns 0 or -errno.
	 */
	int (*create)(struct io **out, const struct server_config *cfg,
		      struct conn_table *ct, struct stats *stats,
		      const struct io_events *ev, void *arg);
	/* Set up what must belong to the reactor's thread. 0 or -errno. */
	int (*init)(struct io *io);
	/*
	 * On the reactor's thread after its loop: let go of the kernel's
	 * hold on our memory (no event is reported after this). Idempotent.
	 */
	void (*quit)(struct io *io);
	/* Free everything, once no thread can reach @io any more. */
	void (*destroy)(struct io *io);
	/* Accept from listening socket @fd (borrowed). 0 or -errno. */
	int (*listen)(struct io *io, int fd, enum io_listener l);
	/* Start receiving on a new connection. 0 or -errno. */
	int (*recv_start)(struct io *io, struct conn *c);
	/* @c is being freed (nothing of it in flight), its fd still open:
	 * drop what the backend holds of it. NULL: nothing to do. */
	void (*conn_freed)(struct io *io, struct conn *c);
	/*
	 * Send c->iov[0..n) (c->sending is set); the end is reported by
	 * io_events.sent, possibly before this returns.
	 */
	void (*send)(struct io *io, struct conn *c, unsigned n);
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
