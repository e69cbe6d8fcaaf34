/* SPDX-License-Identifier: MIT */
/*
 * test_conn.c - the connection layer without a reactor or a kernel ring:
 * conn_input (sans-I/O intake: requests in, replies out, split requests,
 * protocol faults) and the contract between a connection and its I/O
 * backend (server/io.h), checked against a fake backend that records what
 * it is asked to do and holds operations the way io_uring holds SQEs:
 *  - opening starts receiving on the connection's io_conn;
 *  - closing tells the backend, and the slot is freed only once the
 *    backend holds nothing of it and it is off the dirty list;
 *  - the backend's forget() runs while the socket is still open, and the
 *    socket is closed after it;
 *  - a freed slot's generation changes, so a late event for the old
 *    connection finds nothing.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "conn.h"
#include "helpers.h"
#include "io.h"
#include "outq.h"
#include "proto.h"
#include "server.h"
#include "stats.h"
#include "store.h"

/* The fake backend: what the connection layer asked of it. */
struct io {
	int recv_started;
	int closes;
	int forgets;
	bool fd_open_at_forget;
	bool hold_recv; /* keep one operation held per connection, as
			 * io_uring's multishot RECV is */
	struct io_conn *last;
};

static int fake_recv_start(struct io *io, struct io_conn *ic)
{
	io->recv_started++;
	io->last = ic;
	if (io->hold_recv)
		ic->held++;
	return 0;
}

static void fake_close(struct io *io, struct io_conn *ic)
{
	io->closes++;
	ic->closed = true;
}

static void fake_forget(struct io *io, struct io_conn *ic)
{
	io->forgets++;
	io->fd_open_at_forget = fcntl(ic->fd, F_GETFD) >= 0;
}

static const struct io_ops fake_ops = {
	.name = "fake",
	.recv_start = fake_recv_start,
	.close = fake_close,
	.forget = fake_forget,
};

struct fixture {
	struct server srv;
	struct store_thread th;
	struct stats stats;
	struct io io;
	struct conn_table t;
	struct buf req;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	proto_limits_default(&f->srv.cfg.limits);
	assert_int_equal(store_init(&f->srv.store, 16, 1), 0);
	assert_int_equal(store_thread_init(&f->th, &f->srv.store, &f->stats,
					   t_no_deliver, NULL),
			 0);
	f->t = (struct conn_table){ .srv = &f->srv,
				    .th = &f->th,
				    .stats = &f->stats,
				    .ops = &fake_ops,
				    .io = &f->io };
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	conn_table_destroy(&f->t);
	buf_free(&f->req);
	store_thread_destroy(&f->th);
	store_destroy(&f->srv.store);
	free(f);
	return 0;
}

/* A connected socket for a connection (its peer is closed at once: these
 * tests never touch the network). */
static int one_socket(void)
{
	int sv[2];

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv),
			 0);
	close(sv[1]);
	return sv[0];
}

static struct conn *open_one(struct fixture *f)
{
	static const struct sockaddr_in6 peer = { .sin6_family = AF_INET6 };
	struct conn *c = conn_open(&f->t, one_socket(), &peer, NULL, NULL);

	assert_non_null(c);
	return c;
}

/* Everything queued for @c's client, as one byte string. */
static size_t replies(struct conn *c, uint8_t *out, size_t cap)
{
	struct iovec iov[64];
	int n = outq_iov(conn_out(c), iov, 64);
	size_t len = 0;

	for (int i = 0; i < n; i++) {
		assert_true(len + iov[i].iov_len <= cap);
		memcpy(out + len, iov[i].iov_base, iov[i].iov_len);
		len += iov[i].iov_len;
	}
	outq_consume(conn_out(c), len);
	return len;
}

/* VALIDATE, SET k=v, GET k, ADD n 5: the bytes a torch client sends. */
static void build_session(struct buf *b)
{
	assert_int_equal(proto_enc_validate(b), 0);
	assert_int_equal(proto_enc_key_val(b, OP_SET, "k", 1, "value", 5), 0);
	assert_int_equal(proto_enc_key(b, OP_GET, "k", 1), 0);
	assert_int_equal(proto_enc_key_i64(b, OP_ADD, "n", 1, 5), 0);
}

/* GET's reply (u64 length 5, "value"), then ADD's (i64 5). */
static const uint8_t want_replies[] = {
	5, 0, 0, 0, 0, 0, 0, 0, 'v', 'a', 'l', 'u', 'e', 5, 0, 0, 0, 0, 0, 0, 0,
};

static void test_input_whole_session(void **state)
{
	struct fixture *f = *state;
	struct conn *c = open_one(f);
	enum stats_close why = STATS_CLOSE_EOF;
	uint8_t out[256];

	build_session(&f->req);
	assert_int_equal(conn_input(c, &f->th, buf_head(&f->req),
				    buf_used(&f->req), &why, &f->stats),
			 0);
	assert_int_equal(replies(c, out, sizeof(out)), sizeof(want_replies));
	assert_memory_equal(out, want_replies, sizeof(want_replies));
	assert_int_equal(stat_get(&f->stats.requests[OP_SET]), 1);
	assert_int_equal(stat_get(&f->stats.requests[OP_ADD]), 1);
	assert_false(c->dec.handshake);
}

/* The same bytes one at a time: every request crosses reads, goes through
 * the spill buffer, and the replies are the same. */
static void test_input_byte_by_byte(void **state)
{
	struct fixture *f = *state;
	struct conn *c = open_one(f);
	enum stats_close why = STATS_CLOSE_EOF;
	uint8_t out[256];

	build_session(&f->req);
	for (size_t i = 0; i < buf_used(&f->req); i++)
		assert_int_equal(conn_input(c, &f->th, buf_head(&f->req) + i, 1,
					    &why, &f->stats),
				 0);
	assert_int_equal(replies(c, out, sizeof(out)), sizeof(want_replies));
	assert_memory_equal(out, want_replies, sizeof(want_replies));
	assert_int_equal(buf_used(&c->spill), 0);
}

/* A request before VALIDATE is a protocol fault: an error, the reason to
 * count, the decoder's error for the log line, and no reply. */
static void test_input_requires_validate(void **state)
{
	struct fixture *f = *state;
	struct conn *c = open_one(f);
	enum stats_close why = STATS_CLOSE_EOF;

	assert_int_equal(proto_enc_key(&f->req, OP_GET, "k", 1), 0);
	assert_true(conn_input(c, &f->th, buf_head(&f->req), buf_used(&f->req),
			       &why, &f->stats) < 0);
	assert_int_equal(why, STATS_CLOSE_PROTO);
	assert_int_not_equal(c->dec.err, PROTO_E_NONE);
	assert_int_equal(outq_len(conn_out(c)), 0);
}

/* A value over the limit closes before anything is stored. */
static void test_input_value_over_limit(void **state)
{
	struct fixture *f = *state;
	struct conn *c;
	enum stats_close why = STATS_CLOSE_EOF;

	f->srv.cfg.limits.max_value = 4;
	c = open_one(f);
	assert_int_equal(proto_enc_validate(&f->req), 0);
	assert_int_equal(proto_enc_key_val(&f->req, OP_SET, "k", 1, "12345", 5),
			 0);
	assert_true(conn_input(c, &f->th, buf_head(&f->req), buf_used(&f->req),
			       &why, &f->stats) < 0);
	assert_int_equal(why, STATS_CLOSE_PROTO);
	assert_int_equal(c->dec.err, PROTO_E_VALUE_TOO_LONG);
	assert_int_equal(stat_get(&f->stats.requests[OP_SET]), 0);
}

/* Opening starts receiving on the connection's io_conn, with its socket,
 * slot and generation. */
static void test_open_starts_receiving(void **state)
{
	struct fixture *f = *state;
	struct conn *c = open_one(f);

	assert_int_equal(f->io.recv_started, 1);
	assert_ptr_equal(f->io.last, &c->io);
	assert_true(c->io.fd >= 0);
	assert_ptr_equal(conn_get(&f->t, c->io.slot, c->io.gen), c);
	assert_ptr_equal(conn_of(&c->io), c);
	assert_int_equal(f->t.open, 1);
}

/* While the backend holds an operation, a closed connection keeps its slot
 * (a late completion must still find it); once the hold ends, release
 * frees it: forget first, with the socket open, then the socket closes and
 * the old (slot, generation) finds nothing. */
static void test_free_waits_for_the_backend(void **state)
{
	struct fixture *f = *state;
	struct conn *c, *d;
	uint32_t slot, gen;
	int fd;

	f->io.hold_recv = true;
	c = open_one(f);
	slot = c->io.slot;
	gen = c->io.gen;
	fd = c->io.fd;
	assert_int_equal(c->io.held, 1);

	conn_close(&f->t, c, STATS_CLOSE_EOF, 0);
	assert_int_equal(f->io.closes, 1);
	assert_int_equal(c->state, CONN_CLOSING);
	conn_release(&f->t, c);
	assert_int_equal(f->io.forgets, 0);
	assert_ptr_equal(conn_get(&f->t, slot, gen), c);
	assert_true(fcntl(fd, F_GETFD) >= 0);
	/* A new connection does not get the held slot. */
	d = open_one(f);
	assert_int_not_equal(d->io.slot, slot);

	c->io.held--; /* the backend's completion */
	conn_release(&f->t, c);
	assert_int_equal(f->io.forgets, 1);
	assert_true(f->io.fd_open_at_forget);
	assert_int_equal(fcntl(fd, F_GETFD), -1);
	assert_null(conn_get(&f->t, slot, gen));
	assert_int_equal(f->t.open, 1);
}

/* A closed connection on the dirty list is freed only after the flush
 * took it off; conn_close twice is harmless. */
static void test_free_waits_for_the_flush(void **state)
{
	struct fixture *f = *state;
	struct conn *c = open_one(f);
	uint32_t slot = c->io.slot, gen = c->io.gen;

	conn_mark_dirty(&f->t, c);
	conn_close(&f->t, c, STATS_CLOSE_IO, -ECONNRESET);
	conn_close(&f->t, c, STATS_CLOSE_IO, -ECONNRESET);
	assert_int_equal(f->io.closes, 1);
	assert_int_equal(stat_get(&f->stats.closed[STATS_CLOSE_IO]), 1);
	assert_ptr_equal(conn_get(&f->t, slot, gen), c);
	/* What the reactor's flush does with a closed connection. */
	f->t.dirty = c->next_dirty;
	c->dirty = false;
	conn_release(&f->t, c);
	assert_null(conn_get(&f->t, slot, gen));
	assert_int_equal(f->io.forgets, 1);
}

/* A freed slot comes back with another generation: a late event naming
 * the old one is stale. */
static void test_reused_slot_new_generation(void **state)
{
	struct fixture *f = *state;
	struct conn *c = open_one(f), *d;
	uint32_t slot = c->io.slot, gen = c->io.gen;

	conn_close(&f->t, c, STATS_CLOSE_EOF, 0);
	d = open_one(f);
	assert_int_equal(d->io.slot, slot);
	assert_int_equal(d->io.gen, (gen + 1) & IO_GEN_MASK);
	assert_null(conn_get(&f->t, slot, gen));
	assert_ptr_equal(conn_get(&f->t, slot, d->io.gen), d);
	assert_false(d->io.closed);
	assert_int_equal(d->io.held, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_input_whole_session, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_input_byte_by_byte, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_input_requires_validate,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_input_value_over_limit,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_starts_receiving,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_free_waits_for_the_backend,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_free_waits_for_the_flush,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_reused_slot_new_generation,
						setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
