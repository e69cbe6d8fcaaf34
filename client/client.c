/* SPDX-License-Identifier: MIT */
/*
 * client.c - libringstore: the blocking TCPStore client behind ringstore.h.
 *
 * One struct rs_client is one connection. Every call encodes its request
 * with common/proto (the encoders that also serve the benchmark), writes it
 * in one go, and reads the reply into the client's input buffer until the
 * shared reply scanner says it is complete; only then is the reply parsed,
 * so parsing never sees a partial reply. At most one reply-bearing request
 * is outstanding, exactly like PyTorch's client, with one exception: after a
 * WAIT or BARRIER times out, CANCEL_WAIT is sent while the wait is still
 * pending on the server (docs/protocol.md section 5.6), and the one or two bytes
 * that follow are consumed here so the stream stays in sync.
 *
 * Invariants: between calls the input buffer is empty and c->fd is either a
 * healthy, in-sync connection or -1 (broken: every call returns -ENOTCONN,
 * or, with reconnect on, reconnects first). Any I/O error, EOF, unexpected
 * reply byte or timeout in the middle of a non-wait reply breaks the
 * client, because the byte stream can no longer be trusted. Allocation
 * failures while encoding leave the connection intact.
 *
 * Reconnect (RS_RECONNECT; the rule is in ringstore.h). Every public call
 * is a loop over attempts: begin() reconnects when the connection is gone,
 * the body runs, and read_again() or write_again() decides whether a
 * connection error allows one more attempt. Reads always do; a write does
 * only while c->maybe_applied is false, i.e. send_out() has not written a
 * byte of it (c->writing marks the request in c->out as a write). One
 * struct attempt per call carries the reconnect deadline and the backoff,
 * so a request the server keeps refusing backs off like a connect does.
 *
 * Threads: a client is touched by one thread at a time (the caller's
 * contract, see ringstore.h); there is no global or static mutable state.
 */
#include "ringstore.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "net.h"
#include "now.h"
#include "proto.h"

/* PyTorch's ExponentialBackoffWithJitter defaults (socket.cpp). */
#define BACKOFF_INITIAL_MS 500.0
#define BACKOFF_MULTIPLIER 1.5
#define BACKOFF_JITTER 0.5
#define BACKOFF_MAX_MS 60000.0

/* Sanity cap on any length or count in a reply (4 GiB). */
#define MAX_REPLY_FIELD 0xffffffffull
/* Receive granularity, and the input buffer size kept between calls. */
#define RECV_CHUNK 65536

struct rs_client {
	int fd;               /* owned socket; -1 once broken */
	bool raw;             /* send keys without the "/" prefix */
	bool reconnect;       /* RS_RECONNECT */
	bool writing;         /* the request in out changes the store */
	bool maybe_applied;   /* this call wrote a byte of its write */
	int64_t timeout_ms;   /* >= 0, or RS_TIMEOUT_NONE */
	int64_t reconnect_ms; /* >= 0, or RS_TIMEOUT_NONE */
	uint64_t reconnects;  /* connections re-established */
	char *host;           /* owned: where to (re)connect */
	uint16_t port;
	uint32_t nonce;    /* last PING nonce */
	uint64_t rng;      /* xorshift state for backoff jitter */
	struct buf out;    /* owned: the request being written */
	struct buf in;     /* owned: received, not yet consumed bytes */
	struct buf kbytes; /* owned: prefixed keys of the current request */
	const void **kptr; /* owned array: wire keys (borrowed bytes) */
	size_t *klen;      /* owned array: wire key lengths */
	size_t kcap;       /* capacity of kptr and klen */
};

/*
 * One call's connection attempts. The deadline and backoff start with the
 * call's first (re)connect; tries counts the attempts so far, so that only
 * the first is made at once and every later one waits its backoff, also
 * when a reconnected request is lost again.
 */
struct attempt {
	int64_t deadline; /* absolute, ms; -1: none */
	double interval;  /* next backoff interval, ms */
	unsigned tries;
	bool armed; /* deadline and interval set */
};

/* Absolute deadline for a timeout in ms; -1 means none. */
static int64_t deadline_after(int64_t timeout_ms)
{
	if (timeout_ms < 0)
		return -1;
	return (int64_t)now_mono_ms() + timeout_ms;
}

/* Milliseconds left before @deadline, clamped to [0, INT32_MAX]; -1: none. */
static int ms_left(int64_t deadline)
{
	if (deadline < 0)
		return -1;
	int64_t left = deadline - (int64_t)now_mono_ms();
	if (left < 0)
		return 0;
	return left > INT32_MAX ? INT32_MAX : (int)left;
}

static int64_t resolve_timeout(const struct rs_client *c, int64_t timeout_ms)
{
	if (timeout_ms == RS_TIMEOUT_DEFAULT)
		return c->timeout_ms;
	if (timeout_ms < 0)
		return RS_TIMEOUT_NONE;
	return timeout_ms;
}

/* Has @deadline (from deadline_after) passed? */
static bool past(int64_t deadline)
{
	return deadline >= 0 && (int64_t)now_mono_ms() >= deadline;
}

/* Close the socket after a fault; returns @err for tail calls. */
static int break_conn(struct rs_client *c, int err)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	buf_reset(&c->in);
	buf_reset(&c->out);
	return err;
}

/* Write the whole output buffer. Breaks the client on failure. */
static int send_out(struct rs_client *c)
{
	while (buf_used(&c->out)) {
		ssize_t n = send(c->fd, buf_head(&c->out), buf_used(&c->out),
				 MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return break_conn(c, -errno);
		if (n > 0 && c->writing)
			c->maybe_applied = true;
		buf_consume(&c->out, (size_t)n);
	}
	buf_reset(&c->out);
	return 0;
}

/*
 * Receive more bytes into the input buffer, waiting until @deadline.
 * Returns 0, -ETIMEDOUT (nothing arrived; the client is left intact for the
 * caller to decide), or breaks the client and returns -errno.
 */
static int recv_more(struct rs_client *c, int64_t deadline)
{
	if (buf_reserve(&c->in, RECV_CHUNK))
		return break_conn(c, -ENOMEM);
	for (;;) {
		if (deadline >= 0) {
			struct pollfd pfd = { .fd = c->fd, .events = POLLIN };
			int r = poll(&pfd, 1, ms_left(deadline));
			if (r < 0 && errno == EINTR)
				continue;
			if (r < 0)
				return break_conn(c, -errno);
			if (r == 0)
				return -ETIMEDOUT;
		}
		ssize_t n = recv(c->fd, c->in.data + c->in.len,
				 c->in.cap - c->in.len, 0);
		if (n > 0) {
			c->in.len += (size_t)n;
			return 0;
		}
		if (n == 0)
			return break_conn(c, -ECONNRESET);
		if (errno == EINTR)
			continue;
		return break_conn(c, -errno);
	}
}

/*
 * Read until the input buffer starts with one complete reply to @op (with
 * @nkeys values for MULTI_GET) and store its size in *len; the caller parses
 * buf_head(&c->in) and then calls done_reply(). A timeout returns -ETIMEDOUT
 * and breaks the client unless @keep_on_timeout (one-byte wait replies,
 * which cannot be half-read).
 */
static int read_reply(struct rs_client *c, enum proto_op op, uint64_t nkeys,
		      int64_t deadline, bool keep_on_timeout, size_t *len)
{
	static const uint8_t none[1];
	struct proto_reply_scanner r;
	size_t fed = 0;

	proto_reply_init(&r, op, nkeys, MAX_REPLY_FIELD);
	for (;;) {
		size_t avail = buf_used(&c->in) - fed, used;
		const uint8_t *p = avail ? buf_head(&c->in) + fed : none;
		int ret = proto_reply_feed(&r, p, avail, &used);

		fed += used;
		if (ret == 1) {
			*len = fed;
			return 0;
		}
		if (ret < 0)
			return break_conn(c, -EPROTO);
		ret = recv_more(c, deadline);
		if (ret == -ETIMEDOUT && !keep_on_timeout)
			return break_conn(c, ret);
		if (ret)
			return ret;
	}
}

/* Drop a parsed reply; return the input buffer to its idle size. */
static void done_reply(struct rs_client *c, size_t len)
{
	buf_consume(&c->in, len);
	buf_shrink(&c->in, RECV_CHUNK);
}

/* Reply deadline for ordinary (non-wait) replies. */
static int64_t reply_deadline(const struct rs_client *c)
{
	return deadline_after(c->timeout_ms);
}

/* Send the request and read a reply that is one fixed-width integer. */
static int roundtrip_int(struct rs_client *c, enum proto_op op, void *v,
			 size_t width)
{
	size_t len;
	int ret = send_out(c);

	if (!ret)
		ret = read_reply(c, op, 0, reply_deadline(c), false, &len);
	if (ret)
		return ret;
	memcpy(v, buf_head(&c->in), width);
	done_reply(c, len);
	return 0;
}

/* A malloc'd, NUL-terminated copy of @n bytes at @p. */
static void *dup_bytes(const uint8_t *p, size_t n)
{
	uint8_t *v = malloc(n + 1);

	if (!v)
		return NULL;
	if (n)
		memcpy(v, p, n);
	v[n] = 0;
	return v;
}

static uint64_t rd_u64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
	return v;
}

/*
 * Send the request and read a one-value reply (GET, COMPARE_SET) into a
 * malloc'd copy; @val may be NULL to discard it.
 */
static int roundtrip_bytes(struct rs_client *c, enum proto_op op, void **val,
			   size_t *vlen)
{
	size_t len;
	int ret = send_out(c);

	if (!ret)
		ret = read_reply(c, op, 0, reply_deadline(c), false, &len);
	if (ret)
		return ret;
	const uint8_t *p = buf_head(&c->in);
	size_t n = (size_t)rd_u64(p);
	if (val) {
		void *v = dup_bytes(p + 8, n);
		if (!v) {
			done_reply(c, len);
			return -ENOMEM;
		}
		*val = v;
	}
	if (vlen)
		*vlen = n;
	done_reply(c, len);
	return 0;
}

/*
 * Turn user keys into wire keys in c->kptr/c->klen: the same pointers in raw
 * mode, "/" + key (built in c->kbytes) otherwise. The result lives until
 * the next call on this client.
 */
static int wire_keys(struct rs_client *c, size_t n, const void *const *keys,
		     const size_t *klens)
{
	if (n && (!keys || !klens))
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		if (!keys[i] && klens[i])
			return -EINVAL;
	if (n > c->kcap) {
		size_t cap = n < 8 ? 8 : n;
		const void **kp = malloc(cap * sizeof(*kp));
		size_t *kl = malloc(cap * sizeof(*kl));
		if (!kp || !kl) {
			free(kp);
			free(kl);
			return -ENOMEM;
		}
		free(c->kptr);
		free(c->klen);
		c->kptr = kp;
		c->klen = kl;
		c->kcap = cap;
	}
	if (c->raw) {
		for (size_t i = 0; i < n; i++) {
			c->kptr[i] = keys[i];
			c->klen[i] = klens[i];
		}
		return 0;
	}
	/* Append everything first: the buffer may move while it grows. */
	buf_reset(&c->kbytes);
	for (size_t i = 0; i < n; i++) {
		if (buf_append(&c->kbytes, "/", 1) ||
		    buf_append(&c->kbytes, keys[i], klens[i]))
			return -ENOMEM;
		c->klen[i] = klens[i] + 1;
	}
	size_t off = 0;
	for (size_t i = 0; i < n; i++) {
		c->kptr[i] = c->kbytes.data + off;
		off += c->klen[i];
	}
	return 0;
}

static int wire_key(struct rs_client *c, const void *key, size_t klen)
{
	return wire_keys(c, 1, &key, &klen);
}

/*
 * The CANCEL_WAIT exchange after a wait timed out: send 0x0C, read 01, or
 * 00 (the wake raced the cancel) followed by 01. Returns -ETIMEDOUT when the
 * cancel won, 0 when the wait had completed after all (the server sent
 * STOP_WAITING before it saw the cancel), and breaks the client on anything
 * else.
 */
static int cancel_wait(struct rs_client *c)
{
	int64_t deadline = reply_deadline(c);
	size_t len;
	int ret;

	buf_reset(&c->out);
	if (proto_enc_bare(&c->out, OP_CANCEL_WAIT))
		return break_conn(c, -ENOMEM);
	ret = send_out(c);
	if (ret)
		return ret;
	for (int i = 0; i < 2; i++) {
		ret = read_reply(c, OP_CANCEL_WAIT, 0, deadline, false, &len);
		if (ret)
			return ret;
		uint8_t b = buf_head(&c->in)[0];
		done_reply(c, len);
		if (b == PROTO_WAIT_CANCELED)
			return i == 0 ? -ETIMEDOUT : 0;
		if (b != PROTO_WAIT_STOP || i == 1)
			break;
	}
	return break_conn(c, -EPROTO);
}

/*
 * Send the WAIT or BARRIER request in c->out and await its one-byte
 * STOP_WAITING reply until @deadline (absolute; -1: none).
 */
static int await_wait(struct rs_client *c, enum proto_op op, int64_t deadline)
{
	size_t len;
	int ret = send_out(c);

	if (!ret)
		ret = read_reply(c, op, 0, deadline, true, &len);
	if (ret == -ETIMEDOUT)
		return cancel_wait(c);
	if (ret)
		return ret;
	uint8_t b = buf_head(&c->in)[0];
	done_reply(c, len);
	if (b != PROTO_WAIT_STOP)
		return break_conn(c, -EPROTO);
	return 0;
}

/*
 * The absolute deadline of a wait given @timeout_ms as the API takes it.
 * Taken once per call, so a wait resent after a reconnect keeps it.
 */
static int64_t wait_deadline(const struct rs_client *c, int64_t timeout_ms)
{
	return c ? deadline_after(resolve_timeout(c, timeout_ms)) : -1;
}

/* WAIT for the wire keys already in c->kptr/c->klen until @deadline. */
static int wait_wired(struct rs_client *c, size_t n, int64_t deadline)
{
	buf_reset(&c->out);
	if (proto_enc_keys(&c->out, OP_WAIT, n, c->kptr, c->klen))
		return -ENOMEM;
	return await_wait(c, OP_WAIT, deadline);
}

/*
 * Append a PING to c->out, send everything and check the echo. Requests on
 * one connection are executed in order, so the echo vouches for every
 * request sent before it.
 */
static int send_and_ping(struct rs_client *c)
{
	uint32_t echo;
	int ret;

	c->nonce = c->nonce * 1664525u + 1013904223u;
	if (proto_enc_ping(&c->out, c->nonce))
		return -ENOMEM;
	ret = roundtrip_int(c, OP_PING, &echo, 4);
	if (ret)
		return ret;
	return echo == c->nonce ? 0 : break_conn(c, -EPROTO);
}

/*
 * Send the write in c->out that has no reply of its own (SET, APPEND,
 * MULTI_SET, QUEUE_PUSH). With reconnect on, a PING goes with it, so that
 * success means applied and a loss is seen by this call (ringstore.h).
 */
static int send_noreply(struct rs_client *c)
{
	c->writing = true;
	return c->reconnect ? send_and_ping(c) : send_out(c);
}

/* Connection set-up. */

static double next_backoff(struct rs_client *c, double *interval)
{
	/* xorshift64*: plenty for jitter, and per client, so no globals. */
	c->rng ^= c->rng >> 12;
	c->rng ^= c->rng << 25;
	c->rng ^= c->rng >> 27;
	double u = (double)((c->rng * 0x2545F4914F6CDD1Dull) >> 11) /
		   (double)(1ull << 53);
	double d = *interval * (1.0 + BACKOFF_JITTER * (2.0 * u - 1.0));

	*interval *= BACKOFF_MULTIPLIER;
	if (*interval > BACKOFF_MAX_MS)
		*interval = BACKOFF_MAX_MS;
	return d;
}

static void sleep_ms(int64_t ms)
{
	struct timespec ts = { .tv_sec = ms / 1000,
			       .tv_nsec = (ms % 1000) * 1000000 };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

/* Errors after which PyTorch's client sleeps and tries again. */
static bool retryable(int err)
{
	switch (-err) {
	case ECONNREFUSED:
	case ECONNRESET:
	case ECONNABORTED:
	case ETIMEDOUT:
	case EHOSTUNREACH: /* net_connect's code for a failed name lookup */
	case ENETUNREACH:
	case EAGAIN:
	case EPIPE:
	case EPROTO: /* wrong PING echo */
		return true;
	default:
		return false;
	}
}

/*
 * Errors that mean the connection itself is gone (not a timeout, not a
 * protocol fault): the ones after which a call may reconnect.
 */
static bool conn_error(int err)
{
	switch (-err) {
	case ECONNRESET:
	case ECONNABORTED:
	case EPIPE:
	case ENETDOWN:
	case ENETRESET:
	case ENETUNREACH:
	case EHOSTDOWN:
	case EHOSTUNREACH:
		return true;
	default:
		return false;
	}
}

/* VALIDATE, then PING with our pid as the nonce and check the echo. */
static int handshake(struct rs_client *c, int64_t deadline)
{
	size_t len;
	uint32_t echo;
	int ret;

	c->nonce = (uint32_t)getpid();
	buf_reset(&c->out);
	if (proto_enc_validate(&c->out) || proto_enc_ping(&c->out, c->nonce))
		return -ENOMEM;
	ret = send_out(c);
	if (!ret)
		ret = read_reply(c, OP_PING, 0, deadline, false, &len);
	if (ret)
		return ret;
	memcpy(&echo, buf_head(&c->in), 4);
	done_reply(c, len);
	return echo == c->nonce ? 0 : break_conn(c, -EPROTO);
}

/* One connect and handshake before @deadline. Returns 0 or -errno. */
static int dial(struct rs_client *c, int64_t deadline)
{
	int fd = net_connect(c->host, c->port, NULL, ms_left(deadline));
	int ret;

	if (fd < 0)
		return fd;
	c->fd = fd;
	ret = handshake(c, deadline);
	if (ret)
		break_conn(c, 0);
	return ret;
}

/*
 * Connect and handshake like PyTorch's client: retry the errors of
 * retryable() with its backoff until a->deadline. Returns 0, -ETIMEDOUT
 * when the deadline passed, or an error that is not retried.
 */
static int dial_until(struct rs_client *c, struct attempt *a)
{
	for (;;) {
		if (a->tries++) {
			if (past(a->deadline))
				return -ETIMEDOUT;
			int64_t d = (int64_t)next_backoff(c, &a->interval);
			if (a->deadline >= 0 && d > ms_left(a->deadline))
				d = ms_left(a->deadline);
			sleep_ms(d);
			if (past(a->deadline))
				return -ETIMEDOUT;
		}
		int ret = dial(c, a->deadline);
		if (!ret || !retryable(ret))
			return ret;
	}
}

/*
 * Re-establish a lost connection within the call's reconnect deadline,
 * which starts now if this is the call's first reconnect. Returns 0,
 * -ENOTCONN when the deadline passed, or an error that is not retried.
 */
static int reconnect(struct rs_client *c, struct attempt *a)
{
	int ret;

	if (!a->armed) {
		a->armed = true;
		a->deadline = deadline_after(c->reconnect_ms);
		a->interval = BACKOFF_INITIAL_MS;
	}
	ret = dial_until(c, a);
	if (!ret)
		c->reconnects++;
	return ret == -ETIMEDOUT ? -ENOTCONN : ret;
}

/*
 * Has the server closed (or written to) this idle connection? Between
 * calls nothing is due from the server, so any readable byte, EOF or error
 * means the stream can no longer be used.
 */
static bool peer_closed(int fd)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	int r;

	do
		r = poll(&pfd, 1, 0);
	while (r < 0 && errno == EINTR);
	return r != 0;
}

/*
 * Start one attempt of a call: clear the output buffer and the write
 * marks, then refuse on a broken client or, with reconnect on, reconnect
 * first. With reconnect on, an idle connection the server has closed counts
 * as broken, so a request is not written into it (where it would be lost
 * with an unknown outcome) but sent once, on the new connection.
 */
static int begin(struct rs_client *c, struct attempt *a)
{
	if (!c)
		return -EINVAL;
	buf_reset(&c->out);
	c->writing = false;
	c->maybe_applied = false;
	if (c->fd >= 0 && c->reconnect && peer_closed(c->fd))
		break_conn(c, 0);
	if (c->fd < 0) {
		if (!c->reconnect)
			return -ENOTCONN;
		return reconnect(c, a);
	}
	return 0;
}

/* After an attempt of a read: was the connection lost, so try again? */
static bool read_again(const struct rs_client *c, int ret)
{
	return ret < 0 && c && c->reconnect && c->fd < 0 && conn_error(ret);
}

/*
 * After an attempt of a write: true when the connection was lost before a
 * byte of the write was written, so it may be sent on a new one. A loss
 * after that turns *ret into -RS_EUNKNOWN: the write is never sent twice.
 */
static bool write_again(const struct rs_client *c, int *ret)
{
	if (!read_again(c, *ret))
		return false;
	if (!c->maybe_applied)
		return true;
	*ret = -RS_EUNKNOWN;
	return false;
}

/* begin(), then the @n wire keys of the request into c->kptr/c->klen. */
static int begin_keys(struct rs_client *c, struct attempt *a, size_t n,
		      const void *const *keys, const size_t *klens)
{
	int ret = begin(c, a);

	return ret ? ret : wire_keys(c, n, keys, klens);
}

/* begin_keys() for one key. */
static int begin_key(struct rs_client *c, struct attempt *a, const void *key,
		     size_t klen)
{
	return begin_keys(c, a, 1, &key, &klen);
}

/*
 * begin_keys(), then, if @wait, WAIT for the keys until @deadline: the
 * first half of rs_get, rs_multi_get and a blocking rs_queue_pop.
 */
static int begin_waited(struct rs_client *c, struct attempt *a, size_t n,
			const void *const *keys, const size_t *klens, bool wait,
			int64_t deadline)
{
	int ret = begin_keys(c, a, n, keys, klens);

	return ret || !wait ? ret : wait_wired(c, n, deadline);
}

RS_API int rs_connect(struct rs_client **out, const char *host, uint16_t port,
		      const struct rs_options *opts)
{
	struct rs_options o = { 0 };
	struct timespec ts;
	struct rs_client *c;
	int ret;

	if (!out || !host)
		return -EINVAL;
	if (opts) {
		/* Field by field: a caller built against an older header has
		 * no reconnect_timeout_ms, and sets no RS_RECONNECT. */
		o.timeout_ms = opts->timeout_ms;
		o.connect_timeout_ms = opts->connect_timeout_ms;
		o.flags = opts->flags;
		if (o.flags & RS_RECONNECT)
			o.reconnect_timeout_ms = opts->reconnect_timeout_ms;
	}
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->fd = -1;
	c->port = port;
	c->host = strdup(host);
	if (!c->host) {
		free(c);
		return -ENOMEM;
	}
	c->raw = o.flags & RS_RAW_KEYS;
	c->reconnect = o.flags & RS_RECONNECT;
	if (o.reconnect_timeout_ms == 0)
		c->reconnect_ms = RS_DEFAULT_RECONNECT_MS;
	else if (o.reconnect_timeout_ms < 0)
		c->reconnect_ms = RS_TIMEOUT_NONE;
	else
		c->reconnect_ms = o.reconnect_timeout_ms;
	rs_set_timeout(c, o.timeout_ms);
	clock_gettime(CLOCK_REALTIME, &ts);
	c->rng = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^
		 ((uint64_t)getpid() << 40) ^ (uint64_t)(uintptr_t)c;
	if (!c->rng)
		c->rng = 1;

	int64_t ctimeout = o.connect_timeout_ms ? o.connect_timeout_ms
						: c->timeout_ms;
	struct attempt a = {
		.deadline = deadline_after(ctimeout < 0 ? -1 : ctimeout),
		.interval = BACKOFF_INITIAL_MS,
		.armed = true,
	};

	ret = dial_until(c, &a);
	if (ret) {
		rs_close(c);
		return ret;
	}
	*out = c;
	return 0;
}

RS_API int rs_connect_addr(struct rs_client **out, const char *addr,
			   const struct rs_options *opts)
{
	char host[256];
	uint16_t port;

	if (!addr || net_split_hostport(addr, host, sizeof(host), &port))
		return -EINVAL;
	return rs_connect(out, host[0] ? host : "127.0.0.1", port, opts);
}

RS_API void rs_close(struct rs_client *c)
{
	if (!c)
		return;
	break_conn(c, 0);
	buf_free(&c->in);
	buf_free(&c->out);
	buf_free(&c->kbytes);
	free(c->kptr);
	free(c->klen);
	free(c->host);
	free(c);
}

RS_API void rs_free(void *p)
{
	free(p);
}

RS_API const char *rs_strerror(int err)
{
	if (err < 0)
		err = -err;
	switch (err) {
	case 0:
		return "success";
	case ETIMEDOUT:
		return "timed out";
	case ENOENT:
		return "key not found";
	case EAGAIN:
		return "queue is empty";
	case ENOTCONN:
		return "not connected: the connection broke and was not "
		       "re-established (reconnect off, or its deadline passed)";
	case RS_EUNKNOWN:
		return "outcome unknown: the connection broke after the write "
		       "was sent, so it may or may not have been applied; read "
		       "the state to find out";
	case ECONNRESET:
		return "connection closed by the server";
	case EPIPE:
		return "connection closed by the server (broken pipe)";
	case ECONNREFUSED:
		return "connection refused";
	case EHOSTUNREACH:
		return "host unreachable or name not resolved";
	case EPROTO:
		return "protocol error: unexpected reply from the server";
	case EINVAL:
		return "invalid argument";
	case ENOMEM:
		return "out of memory";
	}
#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 32)
	const char *s = strerrordesc_np(err);
	if (s)
		return s;
#endif
	return "unknown error";
}

RS_API void rs_set_timeout(struct rs_client *c, int64_t timeout_ms)
{
	if (!c)
		return;
	if (timeout_ms == 0)
		timeout_ms = RS_DEFAULT_TIMEOUT_MS;
	c->timeout_ms = timeout_ms < 0 ? RS_TIMEOUT_NONE : timeout_ms;
}

RS_API int64_t rs_get_timeout(const struct rs_client *c)
{
	return c ? c->timeout_ms : RS_TIMEOUT_NONE;
}

RS_API void rs_set_raw_keys(struct rs_client *c, bool raw)
{
	if (c)
		c->raw = raw;
}

RS_API bool rs_raw_keys(const struct rs_client *c)
{
	return c && c->raw;
}

RS_API bool rs_connected(const struct rs_client *c)
{
	return c && c->fd >= 0;
}

RS_API uint64_t rs_reconnects(const struct rs_client *c)
{
	return c ? c->reconnects : 0;
}

/*
 * Operations. Each public call is a loop over attempts (see the file
 * comment): reads end with read_again(), writes with write_again(), and a
 * wait's deadline is taken once, before the first attempt.
 */

/* SET, APPEND, QUEUE_PUSH: one key, one value, no reply. */
static int key_val_op(struct rs_client *c, enum proto_op op, const void *key,
		      size_t klen, const void *val, size_t vlen)
{
	struct attempt a = { 0 };
	int ret;

	if (!val && vlen)
		return -EINVAL;
	do {
		ret = begin_key(c, &a, key, klen);
		if (!ret && proto_enc_key_val(&c->out, op, c->kptr[0],
					      c->klen[0], val, vlen))
			ret = -ENOMEM;
		if (!ret)
			ret = send_noreply(c);
	} while (write_again(c, &ret));
	return ret;
}

RS_API int rs_set(struct rs_client *c, const void *key, size_t klen,
		  const void *val, size_t vlen)
{
	return key_val_op(c, OP_SET, key, klen, val, vlen);
}

RS_API int rs_append(struct rs_client *c, const void *key, size_t klen,
		     const void *val, size_t vlen)
{
	return key_val_op(c, OP_APPEND, key, klen, val, vlen);
}

RS_API int rs_queue_push(struct rs_client *c, const void *key, size_t klen,
			 const void *val, size_t vlen)
{
	return key_val_op(c, OP_QUEUE_PUSH, key, klen, val, vlen);
}

/* GET of the wire key in c->kptr[0]. */
static int get_wired(struct rs_client *c, void **val, size_t *vlen)
{
	buf_reset(&c->out);
	if (proto_enc_key(&c->out, OP_GET, c->kptr[0], c->klen[0]))
		return -ENOMEM;
	return roundtrip_bytes(c, OP_GET, val, vlen);
}

RS_API int rs_get(struct rs_client *c, const void *key, size_t klen, void **val,
		  size_t *vlen)
{
	struct attempt a = { 0 };
	int64_t deadline = wait_deadline(c, RS_TIMEOUT_DEFAULT);
	int ret;

	if (!val)
		return -EINVAL;
	do {
		ret = begin_waited(c, &a, 1, &key, &klen, true, deadline);
		if (!ret)
			ret = get_wired(c, val, vlen);
	} while (read_again(c, ret));
	return ret;
}

/* CHECK of the n wire keys in c->kptr/c->klen: 1 ready, 0 not, -errno. */
static int check_wired(struct rs_client *c, size_t n)
{
	uint8_t b;
	int ret;

	buf_reset(&c->out);
	if (proto_enc_keys(&c->out, OP_CHECK, n, c->kptr, c->klen))
		return -ENOMEM;
	ret = roundtrip_int(c, OP_CHECK, &b, 1);
	if (ret)
		return ret;
	if (b == PROTO_CHECK_READY)
		return 1;
	if (b == PROTO_CHECK_NOT_READY)
		return 0;
	return break_conn(c, -EPROTO);
}

/* CHECK, then GET if present: 1 and the value, 0 if missing, or -errno. */
static int get_if_present(struct rs_client *c, const void *key, size_t klen,
			  void **val, size_t *vlen)
{
	int ret = wire_key(c, key, klen);

	if (!ret)
		ret = check_wired(c, 1);
	if (ret == 1 && (ret = get_wired(c, val, vlen)) == 0)
		ret = 1;
	return ret;
}

RS_API int rs_get_nowait(struct rs_client *c, const void *key, size_t klen,
			 void **val, size_t *vlen)
{
	struct attempt a = { 0 };
	int ret;

	if (!val)
		return -EINVAL;
	do {
		ret = begin(c, &a);
		if (!ret)
			ret = get_if_present(c, key, klen, val, vlen);
	} while (read_again(c, ret));
	if (ret == 0)
		return -ENOENT;
	return ret < 0 ? ret : 0;
}

RS_API int rs_add(struct rs_client *c, const void *key, size_t klen,
		  int64_t delta, int64_t *result)
{
	struct attempt a = { 0 };
	int64_t v;
	int ret;

	do {
		ret = begin_key(c, &a, key, klen);
		if (!ret && proto_enc_key_i64(&c->out, OP_ADD, c->kptr[0],
					      c->klen[0], delta))
			ret = -ENOMEM;
		if (!ret) {
			c->writing = true;
			ret = roundtrip_int(c, OP_ADD, &v, 8);
		}
	} while (write_again(c, &ret));
	if (!ret && result)
		*result = v;
	return ret;
}

/*
 * Answer a COMPARE_SET whose reply was lost by reading the key on a new
 * connection (ringstore.h): its value, or @expected when it is missing.
 * Returns 0, or -RS_EUNKNOWN when no read succeeded in the call's
 * reconnect deadline.
 */
static int cas_read_back(struct rs_client *c, struct attempt *a,
			 const void *key, size_t klen, const void *expected,
			 size_t elen, void **cur, size_t *curlen)
{
	int ret;

	do {
		ret = begin(c, a);
		if (!ret)
			ret = get_if_present(c, key, klen, cur, curlen);
	} while (read_again(c, ret));
	if (ret == 0) {
		void *v = cur ? dup_bytes(expected, elen) : NULL;
		if (cur && !v)
			return -RS_EUNKNOWN;
		if (cur)
			*cur = v;
		if (curlen)
			*curlen = elen;
		ret = 1;
	}
	return ret == 1 ? 0 : -RS_EUNKNOWN;
}

RS_API int rs_compare_set(struct rs_client *c, const void *key, size_t klen,
			  const void *expected, size_t elen,
			  const void *desired, size_t dlen, void **cur,
			  size_t *curlen)
{
	struct attempt a = { 0 };
	int ret;

	if ((!expected && elen) || (!desired && dlen))
		return -EINVAL;
	do {
		ret = begin_key(c, &a, key, klen);
		if (!ret &&
		    proto_enc_compare_set(&c->out, c->kptr[0], c->klen[0],
					  expected, elen, desired, dlen))
			ret = -ENOMEM;
		if (!ret) {
			c->writing = true;
			ret = roundtrip_bytes(c, OP_COMPARE_SET, cur, curlen);
		}
	} while (write_again(c, &ret));
	if (ret == -RS_EUNKNOWN && c->maybe_applied && c->fd < 0)
		ret = cas_read_back(c, &a, key, klen, expected, elen, cur,
				    curlen);
	return ret;
}

RS_API int rs_check(struct rs_client *c, size_t n, const void *const *keys,
		    const size_t *klens)
{
	struct attempt a = { 0 };
	int ret;

	do {
		ret = begin_keys(c, &a, n, keys, klens);
		if (!ret)
			ret = check_wired(c, n);
	} while (read_again(c, ret));
	return ret;
}

RS_API int rs_wait(struct rs_client *c, size_t n, const void *const *keys,
		   const size_t *klens, int64_t timeout_ms)
{
	struct attempt a = { 0 };
	int64_t deadline = wait_deadline(c, timeout_ms);
	int ret;

	do
		ret = begin_waited(c, &a, n, keys, klens, true, deadline);
	while (read_again(c, ret));
	return ret;
}

RS_API int rs_delete_key(struct rs_client *c, const void *key, size_t klen)
{
	struct attempt a = { 0 };
	int64_t v;
	int ret;

	do {
		ret = begin_key(c, &a, key, klen);
		if (!ret && proto_enc_key(&c->out, OP_DELETE_KEY, c->kptr[0],
					  c->klen[0]))
			ret = -ENOMEM;
		if (!ret) {
			c->writing = true;
			ret = roundtrip_int(c, OP_DELETE_KEY, &v, 8);
		}
	} while (write_again(c, &ret));
	return ret ? ret : v == 1;
}

/* A read whose request has no arguments and whose reply is an int64. */
static int read_int(struct rs_client *c, enum proto_op op, int64_t *out)
{
	struct attempt a = { 0 };
	int64_t v;
	int ret;

	do {
		ret = begin(c, &a);
		if (!ret && proto_enc_bare(&c->out, op))
			ret = -ENOMEM;
		if (!ret)
			ret = roundtrip_int(c, op, &v, 8);
	} while (read_again(c, ret));
	if (!ret && out)
		*out = v;
	return ret;
}

RS_API int rs_num_keys(struct rs_client *c, int64_t *n)
{
	return read_int(c, OP_GETNUMKEYS, n);
}

/*
 * Copy @n length-prefixed strings starting at @p (already validated by the
 * reply scanner) into one allocation: n pointers, n lengths, then each
 * string with a NUL after it. With @strip, only strings that start with "/"
 * are kept, without it. *kept is the number kept.
 */
static int pack_strings(const uint8_t *p, size_t n, bool strip, void ***ptrs,
			size_t **lens, size_t *kept)
{
	const uint8_t *q = p;
	size_t total = 0, k = 0;

	for (size_t i = 0; i < n; i++) {
		size_t len = (size_t)rd_u64(q);
		if (!strip || (len && q[8] == '/')) {
			total += len + 1 - strip;
			k++;
		}
		q += 8 + len;
	}
	if (k == 0) {
		*ptrs = NULL;
		if (lens)
			*lens = NULL;
		*kept = 0;
		return 0;
	}
	size_t head = k * (sizeof(void *) + sizeof(size_t));
	uint8_t *block = malloc(head + total);
	if (!block)
		return -ENOMEM;
	void **pv = (void **)block;
	size_t *lv = (size_t *)(block + k * sizeof(void *));
	uint8_t *d = block + head;

	q = p;
	k = 0;
	for (size_t i = 0; i < n; i++) {
		size_t len = (size_t)rd_u64(q);
		const uint8_t *s = q + 8;
		q += 8 + len;
		if (strip) {
			if (!len || s[0] != '/')
				continue;
			s++;
			len--;
		}
		pv[k] = d;
		lv[k] = len;
		if (len)
			memcpy(d, s, len);
		d[len] = 0;
		d += len + 1;
		k++;
	}
	*ptrs = pv;
	if (lens)
		*lens = lv;
	*kept = k;
	return 0;
}

/* MULTI_GET of the n wire keys in c->kptr/c->klen. */
static int multi_get_wired(struct rs_client *c, size_t n, void ***vals,
			   size_t **vlens)
{
	size_t len, kept;
	int ret;

	buf_reset(&c->out);
	if (proto_enc_keys(&c->out, OP_MULTI_GET, n, c->kptr, c->klen))
		return -ENOMEM;
	ret = send_out(c);
	if (!ret)
		ret = read_reply(c, OP_MULTI_GET, n, reply_deadline(c), false,
				 &len);
	if (ret)
		return ret;
	ret = pack_strings(buf_head(&c->in), n, false, vals, vlens, &kept);
	done_reply(c, len);
	return ret;
}

RS_API int rs_multi_get(struct rs_client *c, size_t n, const void *const *keys,
			const size_t *klens, void ***vals, size_t **vlens)
{
	struct attempt a = { 0 };
	int64_t deadline = wait_deadline(c, RS_TIMEOUT_DEFAULT);
	int ret;

	if (!vals)
		return -EINVAL;
	if (n == 0) { /* nothing to send */
		if (!c)
			return -EINVAL;
		*vals = NULL;
		if (vlens)
			*vlens = NULL;
		return 0;
	}
	do {
		ret = begin_waited(c, &a, n, keys, klens, true, deadline);
		if (!ret)
			ret = multi_get_wired(c, n, vals, vlens);
	} while (read_again(c, ret));
	return ret;
}

RS_API int rs_multi_set(struct rs_client *c, size_t n, const void *const *keys,
			const size_t *klens, const void *const *vals,
			const size_t *vlens)
{
	struct attempt a = { 0 };
	int ret;

	if (n && (!vals || !vlens))
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		if (!vals[i] && vlens[i])
			return -EINVAL;
	do {
		ret = begin_keys(c, &a, n, keys, klens);
		if (!ret && proto_enc_multi_set(&c->out, n, c->kptr, c->klen,
						vals, vlens))
			ret = -ENOMEM;
		if (!ret)
			ret = send_noreply(c);
	} while (write_again(c, &ret));
	return ret;
}

/* QUEUE_POP of the wire key in c->kptr[0]; a write (it removes an item). */
static int pop_wired(struct rs_client *c, void **val, size_t *vlen)
{
	size_t len;
	int64_t before;
	int ret;

	buf_reset(&c->out);
	if (proto_enc_key(&c->out, OP_QUEUE_POP, c->kptr[0], c->klen[0]))
		return -ENOMEM;
	c->writing = true;
	ret = send_out(c);
	if (!ret)
		ret = read_reply(c, OP_QUEUE_POP, 0, reply_deadline(c), false,
				 &len);
	if (ret)
		return ret;
	const uint8_t *p = buf_head(&c->in);
	memcpy(&before, p, 8);
	if (before <= 0) {
		done_reply(c, len);
		return -EAGAIN;
	}
	size_t n = (size_t)rd_u64(p + 8);
	void *v = dup_bytes(p + 16, n);
	done_reply(c, len);
	if (!v)
		return -ENOMEM;
	*val = v;
	if (vlen)
		*vlen = n;
	return 0;
}

RS_API int rs_queue_pop(struct rs_client *c, const void *key, size_t klen,
			bool block, int64_t timeout_ms, void **val,
			size_t *vlen)
{
	struct attempt a = { 0 };
	int64_t deadline = wait_deadline(c, timeout_ms);
	int ret;

	if (!val)
		return -EINVAL;
	do {
		ret = begin_waited(c, &a, 1, &key, &klen, block, deadline);
		if (!ret)
			ret = pop_wired(c, val, vlen);
	} while (write_again(c, &ret));
	return ret;
}

RS_API int rs_queue_len(struct rs_client *c, const void *key, size_t klen,
			int64_t *len)
{
	struct attempt a = { 0 };
	int64_t v;
	int ret;

	do {
		ret = begin_key(c, &a, key, klen);
		if (!ret && proto_enc_key(&c->out, OP_QUEUE_LEN, c->kptr[0],
					  c->klen[0]))
			ret = -ENOMEM;
		if (!ret)
			ret = roundtrip_int(c, OP_QUEUE_LEN, &v, 8);
	} while (read_again(c, ret));
	if (!ret && len)
		*len = v;
	return ret;
}

/* LIST_KEYS, filtered by the key mode. */
static int list_keys_once(struct rs_client *c, char ***keys, size_t **klens,
			  size_t *n)
{
	size_t len;
	int ret;

	if (proto_enc_bare(&c->out, OP_LIST_KEYS))
		return -ENOMEM;
	ret = send_out(c);
	if (!ret)
		ret = read_reply(c, OP_LIST_KEYS, 0, reply_deadline(c), false,
				 &len);
	if (ret)
		return ret;
	const uint8_t *p = buf_head(&c->in);
	ret = pack_strings(p + 8, (size_t)rd_u64(p), !c->raw, (void ***)keys,
			   klens, n);
	done_reply(c, len);
	return ret;
}

RS_API int rs_list_keys(struct rs_client *c, char ***keys, size_t **klens,
			size_t *n)
{
	struct attempt a = { 0 };
	int ret;

	if (!keys || !n)
		return -EINVAL;
	do {
		ret = begin(c, &a);
		if (!ret)
			ret = list_keys_once(c, keys, klens, n);
	} while (read_again(c, ret));
	return ret;
}

RS_API int rs_barrier(struct rs_client *c, const void *key, size_t klen,
		      int64_t world_size, int64_t timeout_ms)
{
	struct attempt a = { 0 };
	int64_t deadline = wait_deadline(c, timeout_ms);
	int ret;

	do {
		ret = begin_key(c, &a, key, klen);
		if (!ret && proto_enc_key_i64(&c->out, OP_BARRIER, c->kptr[0],
					      c->klen[0], world_size))
			ret = -ENOMEM;
		if (!ret) {
			c->writing = true;
			ret = await_wait(c, OP_BARRIER, deadline);
		}
	} while (write_again(c, &ret));
	return ret;
}

RS_API int rs_ping(struct rs_client *c)
{
	struct attempt a = { 0 };
	int ret;

	do {
		ret = begin(c, &a);
		if (!ret)
			ret = send_and_ping(c);
	} while (read_again(c, ret));
	return ret;
}
