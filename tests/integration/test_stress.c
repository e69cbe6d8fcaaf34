/* SPDX-License-Identifier: MIT */
/*
 * test_stress.c - cross-reactor correctness under load (issue 5).
 *
 * Starts the real ringstore binary with --threads N (argv[1] is the binary,
 * argv[2] the thread count) and drives it from many client threads, each
 * with several connections (SO_REUSEPORT spreads them over the reactors).
 * Every phase ends with an exact check of the final state:
 *  - ADD from every connection never loses an increment;
 *  - COMPARE_SET increments (GET, CAS, retry on mismatch) are exact;
 *  - APPEND keeps every byte, so each writer's tag count is exact;
 *  - queue items pushed by producers are popped exactly once each, with
 *    blocking consumers (WAIT, then QUEUE_POP) released by pushes that may
 *    come from other reactors;
 *  - every BARRIER round releases every connection exactly once;
 *  - WAITs released by SETs from other connections answer exactly one 00;
 *  - CANCEL_WAIT racing a wake-up answers 01 or 00 01, never anything else.
 * After every release a PING proves the byte stream is still in sync (a
 * duplicated 00 would show up in place of the nonce). Bounded in count and
 * time; talks to 127.0.0.1 only.
 */
#include "helpers.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "net.h"
#include "proto.h"

#define THREADS 8
#define CONNS 4 /* per thread */
#define NCONN (THREADS * CONNS)
#define ADDS 300
#define CASES 40
#define APPENDS 100
#define ITEMS 200 /* per producer */
#define ROUNDS 15
#define RACES 60

static const char *server_bin;
static const char *server_threads;
static char **server_extra; /* more flags for the server, NULL-terminated */
/* "--data-dir TMP" among them: a fresh directory, removed at the end. */
static char data_dir[64];
static pid_t server_pid;
static uint16_t server_port;

/* ---- a tiny blocking client over the shared codec -------------------- */

struct cl {
	int fd;
	struct buf b;
};

static void cl_send(struct cl *c)
{
	size_t off = 0;

	while (off < buf_used(&c->b)) {
		ssize_t n = send(c->fd, buf_head(&c->b) + off,
				 buf_used(&c->b) - off, MSG_NOSIGNAL);
		assert_true(n > 0);
		off += (size_t)n;
	}
	buf_reset(&c->b);
}

static void rd(struct cl *c, void *p, size_t n)
{
	size_t got = 0;

	while (got < n) {
		ssize_t r = recv(c->fd, (char *)p + got, n - got, 0);
		if (r <= 0)
			fail_msg("recv: %s", r ? strerror(errno) : "EOF");
		got += (size_t)r;
	}
}

static int64_t rd_i64(struct cl *c)
{
	int64_t v;

	rd(c, &v, 8);
	return v;
}

static uint8_t rd_u8(struct cl *c)
{
	uint8_t v;

	rd(c, &v, 1);
	return v;
}

/* Reads a length-prefixed value into a malloc'd NUL-terminated string. */
static char *rd_bytes(struct cl *c, uint64_t *len)
{
	uint64_t n;

	rd(c, &n, 8);
	assert_true(n < (64u << 20));
	char *p = t_malloc(n + 1);
	rd(c, p, n);
	p[n] = '\0';
	if (len)
		*len = n;
	return p;
}

static void cl_ping_sync(struct cl *c, uint32_t nonce)
{
	uint32_t echo;

	assert_int_equal(proto_enc_ping(&c->b, nonce), 0);
	cl_send(c);
	rd(c, &echo, 4);
	assert_int_equal(echo, nonce);
}

static void cl_open(struct cl *c)
{
	memset(c, 0, sizeof(*c));
	c->fd = net_connect("127.0.0.1", server_port, NULL, 10000);
	assert_true(c->fd >= 0);
	struct timeval tv = { .tv_sec = 30 };
	setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	assert_int_equal(proto_enc_validate(&c->b), 0);
	cl_ping_sync(c, 0x5157);
}

static void cl_close(struct cl *c)
{
	close(c->fd);
	buf_free(&c->b);
}

static int64_t cl_add(struct cl *c, const char *k, int64_t d)
{
	assert_int_equal(proto_enc_key_i64(&c->b, OP_ADD, k, strlen(k), d), 0);
	cl_send(c);
	return rd_i64(c);
}

static void cl_wait1(struct cl *c, const char *k)
{
	const void *keys[1] = { k };
	size_t lens[1] = { strlen(k) };

	assert_int_equal(proto_enc_keys(&c->b, OP_WAIT, 1, keys, lens), 0);
	cl_send(c);
}

/*
 * WAIT with a client-side timeout, as torch's client does: on expiry send
 * CANCEL_WAIT and read 01, or 00 01 when the wake-up raced the cancel.
 * Returns true if the wait was satisfied.
 */
static bool cl_wait_for(struct cl *c, const char *k, int ms)
{
	struct pollfd pfd = { .fd = c->fd, .events = POLLIN };
	uint8_t r;

	cl_wait1(c, k);
	if (poll(&pfd, 1, ms) == 1) {
		assert_int_equal(rd_u8(c), PROTO_WAIT_STOP);
		return true;
	}
	assert_int_equal(proto_enc_bare(&c->b, OP_CANCEL_WAIT), 0);
	cl_send(c);
	r = rd_u8(c);
	if (r == PROTO_WAIT_STOP) {
		assert_int_equal(rd_u8(c), PROTO_WAIT_CANCELED);
		return true;
	}
	assert_int_equal(r, PROTO_WAIT_CANCELED);
	return false;
}

/* ---- the server ------------------------------------------------------ */

static int start_server(void **state)
{
	char *args[32] = { (char *)server_bin,
			   "--port",
			   "0",
			   "--bind",
			   "127.0.0.1",
			   "--threads",
			   (char *)server_threads,
			   "--log-level",
			   "warn" };
	int na = 9;

	(void)state;
	for (char **e = server_extra; *e; e++) {
		if (strcmp(*e, "TMP") || e == server_extra ||
		    strcmp(e[-1], "--data-dir"))
			continue;
		t_tmpdir(data_dir, sizeof(data_dir), "stress-wal");
		*e = data_dir;
	}
	for (char **e = server_extra; *e && na < 31; e++)
		args[na++] = *e;
	args[na] = NULL;
	server_port = t_server_start(args, &server_pid);
	return 0;
}

static int stop_server(void **state)
{
	(void)state;
	t_server_stop(server_pid);
	if (data_dir[0])
		assert_int_equal(t_rmtree(data_dir), 0);
	return 0;
}

/* ---- phases ---------------------------------------------------------- */

struct worker {
	pthread_t t;
	int id;
	struct cl c[CONNS];
	void (*fn)(struct worker *w);
	uint64_t seen[THREADS * ITEMS / 64 + 1]; /* queue ids popped */
	int released;
	int races_00_01, races_01;
};

static pthread_barrier_t go;

static void *worker_main(void *arg)
{
	struct worker *w = arg;

	pthread_barrier_wait(&go);
	w->fn(w);
	return NULL;
}

static void run_workers(struct worker *ws, int n, void (*fn)(struct worker *))
{
	pthread_barrier_init(&go, NULL, (unsigned)n);
	for (int i = 0; i < n; i++) {
		ws[i].fn = fn;
		ws[i].t = t_thread(worker_main, &ws[i]);
	}
	for (int i = 0; i < n; i++)
		t_join(ws[i].t);
	pthread_barrier_destroy(&go);
}

static struct worker *open_workers(void)
{
	struct worker *ws = t_calloc(THREADS, sizeof(*ws));

	for (int i = 0; i < THREADS; i++) {
		ws[i].id = i;
		for (int j = 0; j < CONNS; j++)
			cl_open(&ws[i].c[j]);
	}
	return ws;
}

static void close_workers(struct worker *ws)
{
	for (int i = 0; i < THREADS; i++)
		for (int j = 0; j < CONNS; j++)
			cl_close(&ws[i].c[j]);
	free(ws);
}

static void do_adds(struct worker *w)
{
	for (int i = 0; i < ADDS; i++)
		for (int j = 0; j < CONNS; j++)
			assert_true(cl_add(&w->c[j], "/cnt", 1) >= 1);
}

static void test_add_is_exact(void **state)
{
	struct worker *ws = open_workers();

	(void)state;
	run_workers(ws, THREADS, do_adds);
	assert_int_equal(cl_add(&ws[0].c[0], "/cnt", 0), (int64_t)NCONN * ADDS);
	close_workers(ws);
}

static void do_cas(struct worker *w)
{
	struct cl *c = &w->c[w->id % CONNS];

	for (int i = 0; i < CASES; i++) {
		for (;;) {
			char *cur;
			char next[32];
			uint64_t clen;

			assert_int_equal(
				proto_enc_key(&c->b, OP_GET, "/cas", 4), 0);
			cl_send(c);
			cur = rd_bytes(c, &clen);
			/* Unique values: a lost CAS can never reply our own
			 * desired bytes (plain numbers could collide). */
			snprintf(next, sizeof(next), "%lld:%d:%d",
				 (long long)(clen ? atoll(cur) : 0) + 1, w->id,
				 i);
			assert_int_equal(proto_enc_compare_set(&c->b, "/cas", 4,
							       cur, clen, next,
							       strlen(next)),
					 0);
			cl_send(c);
			char *got = rd_bytes(c, NULL);
			bool won = !strcmp(got, next);
			free(cur);
			free(got);
			if (won)
				break;
		}
	}
}

static void test_compare_set_is_exact(void **state)
{
	struct worker *ws = open_workers();
	uint64_t len;

	(void)state;
	run_workers(ws, THREADS, do_cas);
	struct cl *c = &ws[0].c[0];
	assert_int_equal(proto_enc_key(&c->b, OP_GET, "/cas", 4), 0);
	cl_send(c);
	char *v = rd_bytes(c, &len);
	assert_int_equal(atoll(v), (long long)THREADS * CASES);
	free(v);
	close_workers(ws);
}

static void do_append(struct worker *w)
{
	char tag = (char)('A' + w->id);

	for (int i = 0; i < APPENDS; i++) {
		struct cl *c = &w->c[i % CONNS];
		assert_int_equal(proto_enc_key_val(&c->b, OP_APPEND, "/app", 4,
						   &tag, 1),
				 0);
		cl_send(c);
	}
	for (int j = 0; j < CONNS; j++)
		cl_ping_sync(&w->c[j], 1); /* the appends were applied */
}

static void test_append_keeps_every_byte(void **state)
{
	struct worker *ws = open_workers();
	uint64_t len;
	int count[THREADS] = { 0 };

	(void)state;
	run_workers(ws, THREADS, do_append);
	struct cl *c = &ws[0].c[0];
	assert_int_equal(proto_enc_key(&c->b, OP_GET, "/app", 4), 0);
	cl_send(c);
	char *v = rd_bytes(c, &len);
	assert_int_equal(len, (uint64_t)THREADS * APPENDS);
	for (uint64_t i = 0; i < len; i++) {
		assert_true(v[i] >= 'A' && v[i] < 'A' + THREADS);
		count[v[i] - 'A']++;
	}
	for (int i = 0; i < THREADS; i++)
		assert_int_equal(count[i], APPENDS);
	free(v);
	close_workers(ws);
}

/*
 * Half the workers produce, half consume. A consumer blocks like the real
 * client: WAIT on the queue (timed, with the CANCEL_WAIT dance), then
 * QUEUE_POP; a pop that finds the queue already drained by another
 * consumer (length 0) just waits again. Consumers stop once the shared
 * /q-taken counter says every item was taken.
 */
static void do_queue(struct worker *w)
{
	int producers = THREADS / 2;
	int total = producers * ITEMS;

	if (w->id < producers) {
		for (int i = 0; i < ITEMS; i++) {
			char item[16];
			int id = w->id * ITEMS + i;
			snprintf(item, sizeof(item), "%d", id);
			struct cl *c = &w->c[i % CONNS];
			assert_int_equal(proto_enc_key_val(&c->b, OP_QUEUE_PUSH,
							   "/q", 2, item,
							   strlen(item)),
					 0);
			cl_send(c);
		}
		return;
	}
	/* Consumers share the work through a counter key. */
	struct cl *c = &w->c[0];
	for (;;) {
		if (cl_add(c, "/q-taken", 0) >= total)
			return;
		if (!cl_wait_for(c, "/q", 50))
			continue;
		assert_int_equal(proto_enc_key(&c->b, OP_QUEUE_POP, "/q", 2),
				 0);
		cl_send(c);
		int64_t before = rd_i64(c);
		if (before <= 0)
			continue;
		char *item = rd_bytes(c, NULL);
		int id = atoi(item);
		free(item);
		assert_true(id >= 0 && id < total);
		assert_false(w->seen[id / 64] & (1ull << (id % 64)));
		w->seen[id / 64] |= 1ull << (id % 64);
		cl_add(c, "/q-taken", 1);
	}
}

static void test_queue_items_delivered_once(void **state)
{
	struct worker *ws = open_workers();
	int producers = THREADS / 2, total = producers * ITEMS;

	(void)state;
	run_workers(ws, THREADS, do_queue);
	int seen = 0;
	for (int id = 0; id < total; id++) {
		int owners = 0;
		for (int i = producers; i < THREADS; i++)
			owners += !!(ws[i].seen[id / 64] & (1ull << (id % 64)));
		assert_int_equal(owners, 1);
		seen++;
	}
	assert_int_equal(seen, total);
	struct cl *c = &ws[0].c[0];
	assert_int_equal(proto_enc_key(&c->b, OP_QUEUE_LEN, "/q", 2), 0);
	cl_send(c);
	assert_int_equal(rd_i64(c), 0);
	close_workers(ws);
}

static void do_barrier(struct worker *w)
{
	for (int r = 0; r < ROUNDS; r++) {
		char key[32];
		snprintf(key, sizeof(key), "/bar%d", r);
		for (int j = 0; j < CONNS; j++) {
			struct cl *c = &w->c[j];
			assert_int_equal(proto_enc_key_i64(&c->b, OP_BARRIER,
							   key, strlen(key),
							   NCONN),
					 0);
			cl_send(c);
		}
		for (int j = 0; j < CONNS; j++) {
			assert_int_equal(rd_u8(&w->c[j]), PROTO_WAIT_STOP);
			cl_ping_sync(&w->c[j], (uint32_t)r);
			w->released++;
		}
	}
}

static void test_barrier_rounds_release_everyone_once(void **state)
{
	struct worker *ws = open_workers();

	(void)state;
	run_workers(ws, THREADS, do_barrier);
	for (int i = 0; i < THREADS; i++)
		assert_int_equal(ws[i].released, CONNS * ROUNDS);
	for (int r = 0; r < ROUNDS; r++) {
		char key[32];
		snprintf(key, sizeof(key), "/bar%d", r);
		assert_int_equal(cl_add(&ws[0].c[0], key, 0), NCONN);
	}
	close_workers(ws);
}

/*
 * Even workers wait on /w<i>, odd workers set /w<i-1>: the release crosses
 * connections and, usually, reactors.
 */
static void do_wait_release(struct worker *w)
{
	for (int r = 0; r < ROUNDS; r++) {
		for (int j = 0; j < CONNS; j++) {
			char key[48];
			int pair = w->id & ~1;
			snprintf(key, sizeof(key), "/w%d-%d-%d", pair, j, r);
			struct cl *c = &w->c[j];
			if (w->id % 2 == 0) {
				cl_wait1(c, key);
			} else {
				struct timespec ts = { 0, 200000 };
				nanosleep(&ts, NULL);
				assert_int_equal(
					proto_enc_key_val(&c->b, OP_SET, key,
							  strlen(key), "x", 1),
					0);
				cl_send(c);
			}
		}
		if (w->id % 2 == 0)
			for (int j = 0; j < CONNS; j++) {
				assert_int_equal(rd_u8(&w->c[j]),
						 PROTO_WAIT_STOP);
				cl_ping_sync(&w->c[j], 77);
				w->released++;
			}
	}
}

static void test_waits_released_exactly_once(void **state)
{
	struct worker *ws = open_workers();

	(void)state;
	run_workers(ws, THREADS, do_wait_release);
	for (int i = 0; i < THREADS; i += 2)
		assert_int_equal(ws[i].released, CONNS * ROUNDS);
	close_workers(ws);
}

/*
 * Waiters send WAIT then, after a short random delay, CANCEL_WAIT, while
 * their partners set the key at a random moment: both outcomes of the race
 * must appear as exactly 01 or 00 01.
 */
static void do_cancel_race(struct worker *w)
{
	unsigned seed = (unsigned)w->id * 7919u;

	for (int r = 0; r < RACES; r++) {
		char key[48];
		struct cl *c = &w->c[0];
		snprintf(key, sizeof(key), "/race%d-%d", w->id & ~1, r);
		struct timespec ts = { 0, (rand_r(&seed) % 400) * 1000 };
		if (w->id % 2 == 0) {
			cl_wait1(c, key);
			nanosleep(&ts, NULL);
			assert_int_equal(proto_enc_bare(&c->b, OP_CANCEL_WAIT),
					 0);
			cl_send(c);
			uint8_t a = rd_u8(c);
			if (a == PROTO_WAIT_STOP) {
				assert_int_equal(rd_u8(c), PROTO_WAIT_CANCELED);
				w->races_00_01++;
			} else {
				assert_int_equal(a, PROTO_WAIT_CANCELED);
				w->races_01++;
			}
			cl_ping_sync(c, (uint32_t)r);
			/* Tell the partner this round is over. */
			cl_add(c, key, 0);
		} else {
			nanosleep(&ts, NULL);
			assert_int_equal(proto_enc_key_val(&c->b, OP_SET, key,
							   strlen(key), "1", 1),
					 0);
			cl_send(c);
			cl_ping_sync(c, (uint32_t)r);
		}
	}
}

static void test_cancel_racing_wake(void **state)
{
	struct worker *ws = open_workers();
	int raced = 0, clean = 0;

	(void)state;
	run_workers(ws, THREADS, do_cancel_race);
	for (int i = 0; i < THREADS; i += 2) {
		assert_int_equal(ws[i].races_00_01 + ws[i].races_01, RACES);
		raced += ws[i].races_00_01;
		clean += ws[i].races_01;
	}
	printf("cancel race: %d x '00 01', %d x '01'\n", raced, clean);
	close_workers(ws);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_add_is_exact),
		cmocka_unit_test(test_compare_set_is_exact),
		cmocka_unit_test(test_append_keeps_every_byte),
		cmocka_unit_test(test_queue_items_delivered_once),
		cmocka_unit_test(test_barrier_rounds_release_everyone_once),
		cmocka_unit_test(test_waits_released_exactly_once),
		cmocka_unit_test(test_cancel_racing_wake),
	};

	if (argc < 3) {
		fprintf(stderr,
			"usage: %s RINGSTORE_BINARY THREADS [FLAGS...]\n",
			argv[0]);
		return 2;
	}
	server_bin = argv[1];
	server_threads = argv[2];
	server_extra = argv + 3;
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests_name("stress", tests, start_server,
					   stop_server);
}
