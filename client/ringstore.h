/* SPDX-License-Identifier: MIT */
/*
 * ringstore.h - C client for ringstore and any PyTorch c10d TCPStore server.
 *
 * This is the only installed header of libringstore. A client is one TCP
 * connection to a store server (ringstore, or PyTorch's own TCPStore server)
 * and speaks exactly the bytes PyTorch's TCPStore client sends, so C programs
 * and Python processes share one key space:
 *
 *  - rs_connect() retries like PyTorch (exponential backoff from 500 ms,
 *    x1.5, +-50 % jitter, capped at 60 s) on refused/reset/timed-out connects
 *    and DNS failures until the connect deadline, then sends VALIDATE and a
 *    PING whose echo it checks; a failed handshake is retried the same way.
 *  - Keys get PyTorch's "/" prefix: rs_set(c, "foo") writes wire key "/foo",
 *    which Python reads as store.get("foo"). A client in raw-key mode
 *    (RS_RAW_KEYS, or rs_set_raw_keys()) sends keys exactly as given, which
 *    is how one reads the "init/" counter or keys written by non-PyTorch
 *    tools. rs_list_keys() follows the mode: prefixed clients see only keys
 *    starting with "/", with the "/" removed (like Python's list_keys()); raw
 *    clients see every key unchanged.
 *  - rs_get(), rs_multi_get() and blocking rs_queue_pop() WAIT for their keys
 *    first (with the client's timeout), as PyTorch does. rs_wait(),
 *    rs_barrier() and blocking pops take a per-call timeout; when it expires
 *    the client cancels the wait on the server (CANCEL_WAIT) and reads the
 *    reply, so the connection stays usable, and the call returns -ETIMEDOUT.
 *    If the server's wake-up crossed the cancel (it answers 00 01), the wait
 *    did complete and the call returns 0 (PyTorch raises a timeout there).
 *
 * Keys and values are binary: (pointer, length) pairs, any bytes allowed.
 *
 * Errors: every function that can fail returns 0 (or a documented count or
 * boolean >= 0) on success and a negative errno value on failure; none sets
 * errno. rs_strerror() turns the value into text. The codes with a meaning
 * of their own:
 *   -ETIMEDOUT     connect deadline passed, or a wait/barrier/pop timed out
 *                  (after a wait timeout the connection is still usable)
 *   -ENOENT        rs_get_nowait(): the key does not exist
 *   -EAGAIN        rs_queue_pop(): the queue is empty
 *   -ENOTCONN      no connection: it broke earlier and reconnecting is off
 *                  (close the client), or reconnecting did not succeed
 *                  within its deadline (a later call tries again)
 *   -ECONNRESET    the server closed the connection (it does that on bad
 *                  input, e.g. ADD on a non-numeric value); the client is
 *                  broken from then on
 *   -ECOMM         (reconnect on) outcome unknown: the connection broke after
 *                  a write was sent, so it may or may not have been applied
 *   -EPROTO        the server sent bytes that are not a valid reply
 *   -EINVAL        bad arguments
 *   -ENOMEM        out of memory (the connection stays usable)
 * Once an I/O or protocol error has happened the stream can no longer be
 * trusted: the client closes its socket and every later call returns
 * -ENOTCONN, unless reconnecting is on (PyTorch's client has no reconnect).
 *
 * Reconnect (opt-in: RS_RECONNECT in rs_options.flags). A call that finds
 * the connection broken, or breaks it with a connection error (reset,
 * EOF), connects again with the backoff of rs_connect() and the same
 * VALIDATE + PING handshake, for at most rs_options.reconnect_timeout_ms
 * (default 60 s) from the moment the call found it broken, then goes on by
 * this rule, which is etcd clientv3's write-at-most-once:
 *  - Reads are safe to repeat and are sent again on the new connection:
 *    rs_get, rs_get_nowait, rs_check, rs_wait, rs_multi_get, rs_num_keys,
 *    rs_list_keys, rs_queue_len, rs_ping and the WAIT of a blocking
 *    rs_queue_pop. A wait keeps its own deadline across the reconnect.
 *  - A write is never sent twice once any byte of it may have reached the
 *    server: rs_set, rs_append, rs_multi_set, rs_queue_push, rs_add,
 *    rs_delete_key, rs_queue_pop, rs_barrier then return -ECOMM, and the
 *    next call reconnects. A write that provably never left (the connection
 *    was found closed before it, or nothing of it was written) is sent on
 *    the new connection. Before each call the client checks that the
 *    server has not closed an idle connection, so a call after a server
 *    restart is sent once, on the new connection, and succeeds.
 *  - rs_compare_set whose reply was lost is answered by reading the key
 *    again (see rs_compare_set); rs_add's is not (see rs_add).
 *  - SET, APPEND, MULTI_SET and QUEUE_PUSH have no reply in the protocol;
 *    with reconnect on, each is sent together with a PING and the call
 *    returns once the PING is answered, so 0 means the server has applied
 *    the write and a write lost with a connection is reported (-ECOMM)
 *    instead of passing unnoticed. That costs one round trip per write.
 * A wait or reply read that times out (-ETIMEDOUT) and a protocol error
 * (-EPROTO) are not connection errors: they are returned as before, and
 * the next call reconnects. A request the server rejects by closing the
 * connection (a key over its limit, say) looks like a lost connection: a
 * read is then sent again, with backoff, until the deadline.
 *
 * Memory: values and lists returned through out-pointers are malloc'd and
 * owned by the caller, who releases each with rs_free(). On failure nothing
 * is allocated and the out-pointers are left untouched.
 *
 * Threads: there is no global state. A client is not thread-safe: use one
 * client per thread (connect several; each is its own connection, like
 * PyTorch's clone()), or serialise every call on a shared client with your
 * own lock. A thread blocked in rs_wait() holds the connection until it
 * returns.
 *
 * Signals: writes use MSG_NOSIGNAL, so a dead server never raises SIGPIPE.
 * A call interrupted by a signal handler simply continues.
 */
#ifndef RS_CLIENT_RINGSTORE_H
#define RS_CLIENT_RINGSTORE_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) || defined(__clang__)
#define RS_API __attribute__((visibility("default")))
#else
#define RS_API
#endif

/* One connection to a store server; opaque. */
struct rs_client;

/* Timeout arguments (milliseconds) accept these besides a count >= 0. */
#define RS_TIMEOUT_DEFAULT (-1) /* the client's timeout (rs_set_timeout) */
#define RS_TIMEOUT_NONE (-2)    /* wait without limit */

/* PyTorch's default store timeout, used when rs_options.timeout_ms is 0. */
#define RS_DEFAULT_TIMEOUT_MS 300000

/* rs_options.flags */
#define RS_RAW_KEYS 0x1u  /* send keys as given, without the "/" prefix */
#define RS_RECONNECT 0x2u /* reconnect a broken connection (file comment) */

/* Reconnect deadline used when rs_options.reconnect_timeout_ms is 0. */
#define RS_DEFAULT_RECONNECT_MS 60000

/* -errno of a write whose outcome is unknown (reconnect on; file comment). */
#define RS_EUNKNOWN ECOMM

/*
 * Connection options. A zeroed struct (or a NULL pointer) means: timeout
 * 300 s, connect deadline = timeout, prefixed keys, no reconnect.
 */
struct rs_options {
	/*
	 * The client's timeout in ms: the default for rs_get, rs_multi_get,
	 * rs_wait, rs_barrier and blocking rs_queue_pop, and the bound on
	 * reading any other reply. 0: RS_DEFAULT_TIMEOUT_MS;
	 * RS_TIMEOUT_NONE: no limit.
	 */
	int64_t timeout_ms;
	/*
	 * Deadline for rs_connect (retries included) in ms. 0: the same as
	 * timeout_ms; RS_TIMEOUT_NONE: retry forever.
	 */
	int64_t connect_timeout_ms;
	unsigned flags; /* RS_RAW_KEYS, RS_RECONNECT */
	/*
	 * How long a call may spend reconnecting (retries included) in ms.
	 * 0: RS_DEFAULT_RECONNECT_MS; RS_TIMEOUT_NONE: no limit. Added with
	 * RS_RECONNECT and read only when flags has it, so a program built
	 * against an older ringstore.h, whose struct ends at flags, is never
	 * read past its end.
	 */
	int64_t reconnect_timeout_ms;
};

/*
 * Connect to @host:@port (a name, an IPv4 or an IPv6 address), retrying with
 * PyTorch's backoff until the connect deadline, then perform the VALIDATE +
 * PING handshake. @opts may be NULL. On success *out is a new client that
 * the caller closes with rs_close(). Returns 0, -ETIMEDOUT when the deadline
 * passed without a working connection, or another -errno for failures that
 * are not retried (-EINVAL, -ENOMEM, -EACCES, ...).
 */
RS_API int rs_connect(struct rs_client **out, const char *host, uint16_t port,
		      const struct rs_options *opts);

/*
 * rs_connect() with the address given as "host:port", "[v6]:port" or
 * ":port" (host defaults to 127.0.0.1). Returns -EINVAL for a bad address.
 */
RS_API int rs_connect_addr(struct rs_client **out, const char *addr,
			   const struct rs_options *opts);

/* Close the connection and free the client. NULL is ignored. */
RS_API void rs_close(struct rs_client *c);

/* Release a value or list returned by this library. NULL is ignored. */
RS_API void rs_free(void *p);

/*
 * A static, thread-safe description of @err (a negative errno as returned by
 * this library; positive values are accepted too). Never NULL.
 */
RS_API const char *rs_strerror(int err);

/*
 * Change the client's timeout (see rs_options.timeout_ms; 0 restores the
 * default). No traffic, like Python's set_timeout().
 */
RS_API void rs_set_timeout(struct rs_client *c, int64_t timeout_ms);
/* The client's timeout in ms (RS_TIMEOUT_NONE when unlimited). */
RS_API int64_t rs_get_timeout(const struct rs_client *c);

/*
 * Switch raw-key mode on or off for the following calls (see the file
 * comment). No traffic.
 */
RS_API void rs_set_raw_keys(struct rs_client *c, bool raw);
RS_API bool rs_raw_keys(const struct rs_client *c);

/*
 * true while the client holds a usable connection (no I/O or protocol error
 * since it was made). With RS_RECONNECT a false client reconnects on its
 * next call.
 */
RS_API bool rs_connected(const struct rs_client *c);

/*
 * How many times the client has re-established its connection (always 0
 * without RS_RECONNECT). A change across a call means the call ran, at
 * least in part, on a new connection.
 */
RS_API uint64_t rs_reconnects(const struct rs_client *c);

/* SET: store @key = @val (overwriting). Returns 0 or -errno. */
RS_API int rs_set(struct rs_client *c, const void *key, size_t klen,
		  const void *val, size_t vlen);

/*
 * GET as PyTorch does it: WAIT until @key exists (client timeout), then GET.
 * On success *val is a malloc'd copy of the value with a NUL byte after its
 * *vlen bytes (not counted), so text values can be used as C strings; free
 * it with rs_free(). Returns 0, -ETIMEDOUT if the key did not appear in time
 * (connection still usable), or -errno.
 */
RS_API int rs_get(struct rs_client *c, const void *key, size_t klen, void **val,
		  size_t *vlen);

/*
 * GET without waiting: CHECK, then GET if the key exists. Same output as
 * rs_get(). Returns 0, -ENOENT if the key does not exist, or -errno.
 */
RS_API int rs_get_nowait(struct rs_client *c, const void *key, size_t klen,
			 void **val, size_t *vlen);

/*
 * ADD: treat @key's value as a decimal integer (a missing key counts as 0),
 * add @delta, store and return the sum in *result (may be NULL). A key
 * holding a non-number makes the server close the connection
 * (-ECONNRESET; -ECOMM with RS_RECONNECT, which cannot tell that close from
 * a crash). Returns 0 or -errno.
 *
 * With RS_RECONNECT, an ADD whose reply was lost returns -ECOMM
 * (RS_EUNKNOWN) and leaves *result untouched: the ADD is not sent again,
 * and the counter is not read either, because its value cannot say whether
 * this delta is in it (other clients add too, and a restarted server may
 * have lost recent writes). A caller that can tell, e.g. the only writer
 * of the key, reads it itself with rs_get_nowait().
 */
RS_API int rs_add(struct rs_client *c, const void *key, size_t klen,
		  int64_t delta, int64_t *result);

/*
 * COMPARE_SET: if @key's value equals @expected (or @key is missing and
 * @expected is empty), set it to @desired. *cur receives the value after the
 * operation (as rs_get: malloc'd, NUL-terminated; may be NULL to discard):
 * @desired on success, else the current value - or @expected when the key is
 * missing and @expected is not empty (the protocol's documented quirk).
 * Returns 0 or -errno.
 *
 * With RS_RECONNECT, a COMPARE_SET whose reply was lost is not sent again:
 * the call reconnects and reads the key (CHECK, then GET), and *cur is the
 * value read, or @expected if the key is missing (what the server answers
 * for a missing key, and a sign the swap is not there). It returns 0 as
 * if the reply had arrived, or -ECOMM if no read succeeded within the
 * reconnect deadline. The value read is the key's value at some moment
 * after the swap, not right after it: a client that changed it in between
 * shows its value. *cur equal to @desired means the key holds @desired,
 * not that this call put it there; when another client may write the same
 * bytes, the live reply cannot tell those apart either, so use values
 * that name their writer (a rank, a uuid) when the difference matters.
 */
RS_API int rs_compare_set(struct rs_client *c, const void *key, size_t klen,
			  const void *expected, size_t elen,
			  const void *desired, size_t dlen, void **cur,
			  size_t *curlen);

/*
 * CHECK: are all @n keys present (a non-empty queue of that name counts on
 * servers with queues)? Returns 1 (all present), 0 (some missing) or -errno.
 * n == 0 returns 1.
 */
RS_API int rs_check(struct rs_client *c, size_t n, const void *const *keys,
		    const size_t *klens);

/*
 * WAIT until all @n keys are present, at most @timeout_ms (or
 * RS_TIMEOUT_DEFAULT / RS_TIMEOUT_NONE). Returns 0, -ETIMEDOUT (the wait was
 * cancelled on the server; the connection stays usable), or -errno.
 */
RS_API int rs_wait(struct rs_client *c, size_t n, const void *const *keys,
		   const size_t *klens, int64_t timeout_ms);

/*
 * DELETE_KEY. Returns 1 if the key existed and was removed, 0 if it did not
 * exist, or -errno. Waiters on the key keep waiting; queues are untouched.
 */
RS_API int rs_delete_key(struct rs_client *c, const void *key, size_t klen);

/*
 * GETNUMKEYS: number of keys on the server (all of them, whatever the key
 * mode: "init/" and raw keys count, queues do not). Returns 0 or -errno.
 */
RS_API int rs_num_keys(struct rs_client *c, int64_t *n);

/* APPEND @val to @key's value (creating the key if missing). 0 or -errno. */
RS_API int rs_append(struct rs_client *c, const void *key, size_t klen,
		     const void *val, size_t vlen);

/*
 * MULTI_GET as PyTorch does it: WAIT for all @n keys (client timeout), then
 * MULTI_GET. On success *vals is an array of @n pointers to the values and
 * *vlens (may be NULL) an array of their lengths; each value is followed by
 * a NUL byte. Arrays and values live in ONE allocation: release everything
 * with a single rs_free(*vals) (never free *vlens or single values).
 * n == 0 gives *vals = NULL. Returns 0, -ETIMEDOUT, or -errno.
 */
RS_API int rs_multi_get(struct rs_client *c, size_t n, const void *const *keys,
			const size_t *klens, void ***vals, size_t **vlens);

/* MULTI_SET: set @n key/value pairs in order. Returns 0 or -errno. */
RS_API int rs_multi_set(struct rs_client *c, size_t n, const void *const *keys,
			const size_t *klens, const void *const *vals,
			const size_t *vlens);

/*
 * QUEUE_PUSH @val to the tail of queue @key (queues are a namespace apart
 * from keys; PyTorch's classic server lacks them and closes the connection).
 * Returns 0 or -errno.
 */
RS_API int rs_queue_push(struct rs_client *c, const void *key, size_t klen,
			 const void *val, size_t vlen);

/*
 * QUEUE_POP the head of queue @key. With @block, first WAIT up to
 * @timeout_ms (or RS_TIMEOUT_DEFAULT / RS_TIMEOUT_NONE) for the queue to be
 * non-empty, as PyTorch's queue_pop(block=True) does; without it
 * @timeout_ms is ignored. *val as for rs_get(). Returns 0, -EAGAIN if the
 * queue is empty (also when another client won the race after the wait),
 * -ETIMEDOUT (connection still usable), or -errno.
 */
RS_API int rs_queue_pop(struct rs_client *c, const void *key, size_t klen,
			bool block, int64_t timeout_ms, void **val,
			size_t *vlen);

/* QUEUE_LEN: current length of queue @key into *len. 0 or -errno. */
RS_API int rs_queue_len(struct rs_client *c, const void *key, size_t klen,
			int64_t *len);

/*
 * LIST_KEYS. Prefixed mode: keys starting with "/", "/" removed; raw mode:
 * every key. *keys is an array of *n pointers to the keys (each followed by
 * a NUL byte), *klens (may be NULL) their lengths. Arrays and keys are ONE
 * allocation: release with a single rs_free(*keys). *keys is NULL when *n is
 * 0. Order is the server's (unspecified). Returns 0 or -errno.
 */
RS_API int rs_list_keys(struct rs_client *c, char ***keys, size_t **klens,
			size_t *n);

/*
 * BARRIER: count this client in at barrier @key and wait until
 * @world_size clients have arrived, at most @timeout_ms (or
 * RS_TIMEOUT_DEFAULT / RS_TIMEOUT_NONE). The key is a counter that is never
 * reset, so reuse needs a new key. Returns 0, -ETIMEDOUT (wait cancelled,
 * connection usable; the arrival still counts), or -errno.
 */
RS_API int rs_barrier(struct rs_client *c, const void *key, size_t klen,
		      int64_t world_size, int64_t timeout_ms);

/*
 * PING: send a nonce and check the echo (a round trip). Returns 0, -EPROTO
 * on a wrong echo, or -errno.
 */
RS_API int rs_ping(struct rs_client *c);

#ifdef __cplusplus
}
#endif

#endif
