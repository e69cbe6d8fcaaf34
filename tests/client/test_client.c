/* SPDX-License-Identifier: MIT */
/*
 * test_client.c - libringstore against a live server.
 *
 * The server address comes from $RS_TEST_ADDR (host:port); without it the
 * program exits 77 (skipped). tests/compat/test_c_client.py runs it against
 * ringstore and against PyTorch's own TCPStore server, so every assertion
 * here must hold for both. Tests share one server: every key carries a
 * per-process, per-test prefix, and counts are checked as differences.
 *
 * Connection set-up and the CANCEL_WAIT race are also checked against tiny
 * scripted fake servers on 127.0.0.1 (a socket that starts listening late,
 * one that drops the first handshake, one that answers a cancel with 00 01),
 * because a real server cannot be made to do those things on demand.
 *
 * Reconnect (RS_RECONNECT) is checked through a fault-injecting TCP proxy
 * in front of the real server. It can drop the connection when a reply
 * arrives from the server, i.e. after the request was executed and before
 * the client sees the answer: the one way to lose a reply on purpose. What
 * the server then holds is read over a direct connection, so a write that
 * was sent twice shows. It can also close an idle connection (waiting
 * until the client's kernel has the FIN) and turn connections away.
 *
 * Threads: worker threads (barrier, blocking pop, late set, the proxy)
 * never call cmocka; they store results that the test thread asserts.
 */
#include "ringstore.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "now.h"

static const char *addr;
static char prefix[64];

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

/* A key unique to this process and test: "<prefix><name>". */
static const char *K(char *out, size_t len, const char *name)
{
	snprintf(out, len, "%s%s", prefix, name);
	return out;
}

static struct rs_client *conn_flags(unsigned flags)
{
	struct rs_options o = { .timeout_ms = 10000, .flags = flags };
	struct rs_client *c = NULL;
	int ret = rs_connect_addr(&c, addr, &o);

	if (ret)
		fprintf(stderr, "connect %s: %s\n", addr, rs_strerror(ret));
	assert_int_equal(ret, 0);
	assert_non_null(c);
	return c;
}

static struct rs_client *conn(void)
{
	return conn_flags(0);
}

static void set_str(struct rs_client *c, const char *k, const char *v)
{
	assert_int_equal(rs_set(c, k, strlen(k), v, strlen(v)), 0);
}

static void want_value(struct rs_client *c, const char *k, const char *v)
{
	void *val = NULL;
	size_t len = 99;

	assert_int_equal(rs_get(c, k, strlen(k), &val, &len), 0);
	assert_int_equal(len, strlen(v));
	assert_memory_equal(val, v, len);
	assert_int_equal(((char *)val)[len], 0); /* NUL after the value */
	rs_free(val);
}

static void test_set_get(void **state)
{
	struct rs_client *c = conn();
	char k[128], k2[128];
	void *val = (void *)1;
	size_t len;

	(void)state;
	K(k, sizeof(k), "sg");
	set_str(c, k, "hello");
	want_value(c, k, "hello");
	set_str(c, k, "world!");
	want_value(c, k, "world!");
	set_str(c, k, "");
	want_value(c, k, "");
	K(k2, sizeof(k2), "sg-missing");
	assert_int_equal(rs_get_nowait(c, k2, strlen(k2), &val, &len), -ENOENT);
	assert_ptr_equal(val, (void *)1); /* untouched on failure */
	assert_int_equal(rs_get_nowait(c, k, strlen(k), &val, &len), 0);
	assert_int_equal(len, 0);
	rs_free(val);
	assert_int_equal(rs_get(c, k, strlen(k), NULL, &len), -EINVAL);
	rs_close(c);
}

static void test_add(void **state)
{
	struct rs_client *c = conn();
	char k[128];
	int64_t v = 0;

	(void)state;
	K(k, sizeof(k), "add");
	assert_int_equal(rs_add(c, k, strlen(k), 5, &v), 0);
	assert_int_equal(v, 5);
	assert_int_equal(rs_add(c, k, strlen(k), -7, &v), 0);
	assert_int_equal(v, -2);
	assert_int_equal(rs_add(c, k, strlen(k), 0, NULL), 0);
	want_value(c, k, "-2");
	set_str(c, k, "41");
	assert_int_equal(rs_add(c, k, strlen(k), 1, &v), 0);
	assert_int_equal(v, 42);
	rs_close(c);
}

static void test_compare_set(void **state)
{
	struct rs_client *c = conn();
	char k[128];
	void *cur;
	size_t len;

	(void)state;
	K(k, sizeof(k), "cas");
	/* missing key, non-empty expected: the server echoes expected */
	assert_int_equal(
		rs_compare_set(c, k, strlen(k), "x", 1, "y", 1, &cur, &len), 0);
	assert_int_equal(len, 1);
	assert_memory_equal(cur, "x", 1);
	rs_free(cur);
	assert_int_equal(rs_check(c, 1, (const void *[]){ k },
				  (size_t[]){ strlen(k) }),
			 0);
	/* missing key, empty expected: created */
	assert_int_equal(
		rs_compare_set(c, k, strlen(k), "", 0, "v1", 2, &cur, &len), 0);
	assert_int_equal(len, 2);
	assert_memory_equal(cur, "v1", 2);
	rs_free(cur);
	/* wrong expected: current value returned */
	assert_int_equal(rs_compare_set(c, k, strlen(k), "zz", 2, "v2", 2, &cur,
					&len),
			 0);
	assert_memory_equal(cur, "v1", 2);
	rs_free(cur);
	/* right expected: swapped */
	assert_int_equal(rs_compare_set(c, k, strlen(k), "v1", 2, "v2", 2, NULL,
					NULL),
			 0);
	want_value(c, k, "v2");
	rs_close(c);
}

static void test_check_wait(void **state)
{
	struct rs_client *c = conn();
	char a[128], b[128];
	const void *keys[2] = { a, b };
	size_t lens[2];

	(void)state;
	K(a, sizeof(a), "cw-a");
	K(b, sizeof(b), "cw-b");
	lens[0] = strlen(a);
	lens[1] = strlen(b);
	assert_int_equal(rs_check(c, 2, keys, lens), 0);
	assert_int_equal(rs_check(c, 0, NULL, NULL), 1);
	set_str(c, a, "1");
	assert_int_equal(rs_check(c, 1, keys, lens), 1);
	assert_int_equal(rs_check(c, 2, keys, lens), 0);
	set_str(c, b, "2");
	assert_int_equal(rs_check(c, 2, keys, lens), 1);
	assert_int_equal(rs_wait(c, 2, keys, lens, 1000), 0);
	assert_int_equal(rs_wait(c, 2, keys, lens, RS_TIMEOUT_DEFAULT), 0);
	/* zero timeout on present keys: the STOP_WAITING is not lost */
	for (int i = 0; i < 20; i++)
		assert_int_equal(rs_wait(c, 2, keys, lens, 0), 0);
	assert_int_equal(rs_ping(c), 0);
	rs_close(c);
}

static void test_wait_timeout_keeps_connection(void **state)
{
	struct rs_client *c = conn();
	char k[128], m[128];
	const void *key;
	size_t klen;
	void *val;
	size_t len;

	(void)state;
	K(k, sizeof(k), "wt");
	K(m, sizeof(m), "wt-missing");
	key = m;
	klen = strlen(m);
	for (int i = 0; i < 3; i++) {
		int64_t t0 = (int64_t)now_mono_ms();
		assert_int_equal(rs_wait(c, 1, &key, &klen, 200), -ETIMEDOUT);
		int64_t dt = (int64_t)now_mono_ms() - t0;
		assert_true(dt >= 190); /* not before its deadline */
		assert_true(rs_connected(c));
		/* the stream is in sync: ordinary ops still work */
		set_str(c, k, "after-timeout");
		want_value(c, k, "after-timeout");
		assert_int_equal(rs_ping(c), 0);
	}
	/* zero timeout: returns at once */
	assert_int_equal(rs_wait(c, 1, &key, &klen, 0), -ETIMEDOUT);
	/* get waits with the client timeout, like PyTorch */
	rs_set_timeout(c, 150);
	assert_int_equal(rs_get_timeout(c), 150);
	assert_int_equal(rs_get(c, m, klen, &val, &len), -ETIMEDOUT);
	rs_set_timeout(c, 10000);
	want_value(c, k, "after-timeout");
	rs_close(c);
}

struct late_set {
	char key[128];
	int delay_ms;
	int ret;
	bool queue; /* push instead of set */
};

static void *late_set_thread(void *arg)
{
	struct late_set *ls = arg;
	struct rs_options o = { .timeout_ms = 10000 };
	struct rs_client *c;

	ls->ret = rs_connect_addr(&c, addr, &o);
	if (ls->ret)
		return NULL;
	sleep_ms(ls->delay_ms);
	if (ls->queue)
		ls->ret = rs_queue_push(c, ls->key, strlen(ls->key), "item", 4);
	else
		ls->ret = rs_set(c, ls->key, strlen(ls->key), "late", 4);
	if (!ls->ret)
		ls->ret = rs_ping(c);
	rs_close(c);
	return NULL;
}

static void test_wait_released_by_other_client(void **state)
{
	struct rs_client *c = conn();
	struct late_set ls = { .delay_ms = 300 };
	pthread_t t;

	(void)state;
	K(ls.key, sizeof(ls.key), "late");
	assert_int_equal(pthread_create(&t, NULL, late_set_thread, &ls), 0);
	int64_t t0 = (int64_t)now_mono_ms();
	void *val;
	size_t len;
	assert_int_equal(rs_get(c, ls.key, strlen(ls.key), &val, &len), 0);
	assert_true((int64_t)now_mono_ms() - t0 >= 250);
	assert_int_equal(len, 4);
	assert_memory_equal(val, "late", 4);
	rs_free(val);
	pthread_join(t, NULL);
	assert_int_equal(ls.ret, 0);
	rs_close(c);
}

static void test_delete_num_keys(void **state)
{
	struct rs_client *c = conn();
	char a[128], b[128];
	int64_t n0, n;

	(void)state;
	K(a, sizeof(a), "del-a");
	K(b, sizeof(b), "del-b");
	assert_int_equal(rs_num_keys(c, &n0), 0);
	assert_true(n0 >= 0);
	set_str(c, a, "1");
	set_str(c, b, "2");
	assert_int_equal(rs_num_keys(c, &n), 0);
	assert_int_equal(n, n0 + 2);
	assert_int_equal(rs_delete_key(c, a, strlen(a)), 1);
	assert_int_equal(rs_delete_key(c, a, strlen(a)), 0);
	assert_int_equal(rs_num_keys(c, &n), 0);
	assert_int_equal(n, n0 + 1);
	want_value(c, b, "2");
	rs_close(c);
}

static void test_append(void **state)
{
	struct rs_client *c = conn();
	char k[128];

	(void)state;
	K(k, sizeof(k), "app");
	assert_int_equal(rs_append(c, k, strlen(k), "po", 2), 0);
	assert_int_equal(rs_append(c, k, strlen(k), "ta", 2), 0);
	assert_int_equal(rs_append(c, k, strlen(k), "to", 2), 0);
	want_value(c, k, "potato");
	rs_close(c);
}

static void test_multi(void **state)
{
	struct rs_client *c = conn();
	char k0[128], k1[128], k2[128];
	const void *keys[3] = { k0, k1, k2 };
	size_t klens[3];
	const void *vals[3] = { "zero", "", "t\0o" };
	size_t vlens[3] = { 4, 0, 3 };
	void **out = NULL;
	size_t *olens = NULL;

	(void)state;
	K(k0, sizeof(k0), "m0");
	K(k1, sizeof(k1), "m1");
	K(k2, sizeof(k2), "m2");
	for (int i = 0; i < 3; i++)
		klens[i] = strlen(keys[i]);
	assert_int_equal(rs_multi_set(c, 3, keys, klens, vals, vlens), 0);
	assert_int_equal(rs_multi_get(c, 3, keys, klens, &out, &olens), 0);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(olens[i], vlens[i]);
		assert_memory_equal(out[i], vals[i], vlens[i]);
		assert_int_equal(((char *)out[i])[vlens[i]], 0);
	}
	rs_free(out);
	/* reversed order and a repeat */
	const void *rk[3] = { k2, k0, k2 };
	size_t rl[3] = { klens[2], klens[0], klens[2] };
	assert_int_equal(rs_multi_get(c, 3, rk, rl, &out, NULL), 0);
	assert_memory_equal(out[0], "t\0o", 3);
	assert_memory_equal(out[1], "zero", 4);
	assert_memory_equal(out[2], "t\0o", 3);
	rs_free(out);
	assert_int_equal(rs_multi_get(c, 0, NULL, NULL, &out, &olens), 0);
	assert_null(out);
	want_value(c, k0, "zero");
	rs_close(c);
}

static void test_queue(void **state)
{
	struct rs_client *c = conn();
	char q[128];
	const void *key = q;
	size_t klen;
	int64_t n = -1;
	void *val;
	size_t len;

	(void)state;
	K(q, sizeof(q), "queue");
	klen = strlen(q);
	assert_int_equal(rs_queue_len(c, q, klen, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(rs_check(c, 1, &key, &klen), 0);
	assert_int_equal(rs_queue_push(c, q, klen, "1", 1), 0);
	assert_int_equal(rs_queue_push(c, q, klen, "2", 1), 0);
	assert_int_equal(rs_queue_len(c, q, klen, &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(rs_check(c, 1, &key, &klen), 1);
	assert_int_equal(rs_wait(c, 1, &key, &klen, 1000), 0);
	assert_int_equal(rs_queue_pop(c, q, klen, true, RS_TIMEOUT_DEFAULT,
				      &val, &len),
			 0);
	assert_int_equal(len, 1);
	assert_memory_equal(val, "1", 1);
	rs_free(val);
	assert_int_equal(rs_queue_pop(c, q, klen, false, 0, &val, &len), 0);
	assert_memory_equal(val, "2", 1);
	rs_free(val);
	assert_int_equal(rs_queue_pop(c, q, klen, false, 0, &val, &len),
			 -EAGAIN);
	assert_int_equal(rs_queue_len(c, q, klen, &n), 0);
	assert_int_equal(n, 0);
	/* blocking pop on an empty queue times out and the client survives */
	int64_t t0 = (int64_t)now_mono_ms();
	assert_int_equal(rs_queue_pop(c, q, klen, true, 200, &val, &len),
			 -ETIMEDOUT);
	assert_true((int64_t)now_mono_ms() - t0 >= 190);
	assert_int_equal(rs_queue_push(c, q, klen, "3", 1), 0);
	assert_int_equal(rs_queue_pop(c, q, klen, true, 1000, &val, &len), 0);
	assert_memory_equal(val, "3", 1);
	rs_free(val);
	rs_close(c);
}

static void test_queue_pop_released_by_push(void **state)
{
	struct rs_client *c = conn();
	struct late_set ls = { .delay_ms = 300, .queue = true };
	pthread_t t;
	void *val;
	size_t len;

	(void)state;
	K(ls.key, sizeof(ls.key), "qblock");
	assert_int_equal(pthread_create(&t, NULL, late_set_thread, &ls), 0);
	int64_t t0 = (int64_t)now_mono_ms();
	assert_int_equal(rs_queue_pop(c, ls.key, strlen(ls.key), true, 5000,
				      &val, &len),
			 0);
	assert_true((int64_t)now_mono_ms() - t0 >= 250);
	assert_int_equal(len, 4);
	assert_memory_equal(val, "item", 4);
	rs_free(val);
	pthread_join(t, NULL);
	assert_int_equal(ls.ret, 0);
	rs_close(c);
}

/* Does the list hold @k (length @kl)? */
static bool listed(char **keys, size_t *lens, size_t n, const void *k,
		   size_t kl)
{
	for (size_t i = 0; i < n; i++)
		if (lens[i] == kl && !memcmp(keys[i], k, kl))
			return true;
	return false;
}

static void test_list_keys_and_raw(void **state)
{
	struct rs_client *c = conn();
	struct rs_client *r = conn_flags(RS_RAW_KEYS);
	char k[128], slash[130], rk[128];
	char **keys;
	size_t *lens, n;
	void *val;
	size_t len;

	(void)state;
	assert_true(rs_raw_keys(r));
	assert_false(rs_raw_keys(c));
	K(k, sizeof(k), "lk");
	snprintf(slash, sizeof(slash), "/%s", k);
	K(rk, sizeof(rk), "rawkey");
	set_str(c, k, "prefixed");
	set_str(r, rk, "raw");

	/* prefixed client wrote "/k": raw sees it with the slash */
	want_value(r, slash, "prefixed");
	/* raw key has no slash: invisible to prefixed lookups */
	assert_int_equal(rs_get_nowait(c, rk, strlen(rk), &val, &len), -ENOENT);

	assert_int_equal(rs_list_keys(c, &keys, &lens, &n), 0);
	assert_true(listed(keys, lens, n, k, strlen(k)));
	assert_false(listed(keys, lens, n, rk, strlen(rk)));
	assert_false(listed(keys, lens, n, slash, strlen(slash)));
	for (size_t i = 0; i < n; i++)
		assert_int_equal(keys[i][lens[i]], 0);
	rs_free(keys);

	assert_int_equal(rs_list_keys(r, &keys, NULL, &n), 0);
	assert_true(n >= 2);
	bool seen_slash = false, seen_raw = false;
	for (size_t i = 0; i < n; i++) {
		seen_slash |= !strcmp(keys[i], slash);
		seen_raw |= !strcmp(keys[i], rk);
	}
	assert_true(seen_slash);
	assert_true(seen_raw);
	rs_free(keys);

	/* toggling raw mode on a client */
	rs_set_raw_keys(c, true);
	want_value(c, rk, "raw");
	rs_set_raw_keys(c, false);
	want_value(c, k, "prefixed");

	/* "init/" is only reachable in raw mode */
	int64_t v0, v1;
	assert_int_equal(rs_add(r, "init/", 5, 0, &v0), 0);
	assert_int_equal(rs_add(r, "init/", 5, 1, &v1), 0);
	assert_int_equal(v1, v0 + 1);
	assert_int_equal(rs_list_keys(c, &keys, &lens, &n), 0);
	assert_false(listed(keys, lens, n, "init/", 5));
	rs_free(keys);
	rs_close(r);
	rs_close(c);
}

struct barrier_arg {
	char key[128];
	int delay_ms;
	int ret;
	int64_t arrived_at; /* just before its BARRIER */
	int64_t done_at;
};

static void *barrier_thread(void *arg)
{
	struct barrier_arg *b = arg;
	struct rs_options o = { .timeout_ms = 10000 };
	struct rs_client *c;

	b->ret = rs_connect_addr(&c, addr, &o);
	if (b->ret)
		return NULL;
	sleep_ms(b->delay_ms);
	b->arrived_at = (int64_t)now_mono_ms();
	b->ret = rs_barrier(c, b->key, strlen(b->key), 3, 5000);
	b->done_at = (int64_t)now_mono_ms();
	if (!b->ret)
		b->ret = rs_ping(c);
	rs_close(c);
	return NULL;
}

static void test_barrier_three_clients(void **state)
{
	struct barrier_arg b[3];
	pthread_t t[3];

	(void)state;
	int64_t last = 0;

	for (int i = 0; i < 3; i++) {
		memset(&b[i], 0, sizeof(b[i]));
		K(b[i].key, sizeof(b[i].key), "barrier");
		b[i].delay_ms = i * 200;
		assert_int_equal(
			pthread_create(&t[i], NULL, barrier_thread, &b[i]), 0);
	}
	for (int i = 0; i < 3; i++)
		pthread_join(t[i], NULL);
	for (int i = 0; i < 3; i++)
		last = b[i].arrived_at > last ? b[i].arrived_at : last;
	for (int i = 0; i < 3; i++) {
		assert_int_equal(b[i].ret, 0);
		/* nobody leaves before the last one arrives (an order, not a
		 * duration: the clock is the same one) */
		assert_true(b[i].done_at >= last);
	}
}

static void test_barrier_timeout(void **state)
{
	struct rs_client *c = conn();
	char k[128];

	(void)state;
	K(k, sizeof(k), "barrier-to");
	int64_t t0 = (int64_t)now_mono_ms();
	assert_int_equal(rs_barrier(c, k, strlen(k), 2, 200), -ETIMEDOUT);
	assert_true((int64_t)now_mono_ms() - t0 >= 190);
	assert_int_equal(rs_ping(c), 0);
	/* world size 1 passes at once */
	K(k, sizeof(k), "barrier-one");
	assert_int_equal(rs_barrier(c, k, strlen(k), 1, 1000), 0);
	rs_close(c);
}

static void test_large_value(void **state)
{
	struct rs_client *c = conn();
	size_t n = 1u << 20;
	uint8_t *big = malloc(n);
	char k[128];
	void *val;
	size_t len;

	(void)state;
	assert_non_null(big);
	for (size_t i = 0; i < n; i++)
		big[i] = (uint8_t)(i * 131 + (i >> 11));
	K(k, sizeof(k), "big");
	assert_int_equal(rs_set(c, k, strlen(k), big, n), 0);
	assert_int_equal(rs_get(c, k, strlen(k), &val, &len), 0);
	assert_int_equal(len, n);
	assert_memory_equal(val, big, n);
	rs_free(val);
	assert_int_equal(rs_append(c, k, strlen(k), big, n), 0);
	assert_int_equal(rs_get(c, k, strlen(k), &val, &len), 0);
	assert_int_equal(len, 2 * n);
	assert_memory_equal((uint8_t *)val + n, big, n);
	rs_free(val);
	free(big);
	rs_close(c);
}

static void test_binary_keys_values(void **state)
{
	struct rs_client *c = conn();
	char key[160];
	uint8_t v[256];
	size_t plen = strlen(prefix);
	void *val;
	size_t len;

	(void)state;
	memcpy(key, prefix, plen);
	const uint8_t tail[] = { 'b', 0, 0xff, '\n', '/', 0x80, 0 };
	memcpy(key + plen, tail, sizeof(tail));
	size_t klen = plen + sizeof(tail);
	for (int i = 0; i < 256; i++)
		v[i] = (uint8_t)i;
	assert_int_equal(rs_set(c, key, klen, v, sizeof(v)), 0);
	assert_int_equal(rs_get(c, key, klen, &val, &len), 0);
	assert_int_equal(len, sizeof(v));
	assert_memory_equal(val, v, sizeof(v));
	rs_free(val);
	/* the same key minus its trailing NUL is a different key */
	assert_int_equal(rs_get_nowait(c, key, klen - 1, &val, &len), -ENOENT);

	char **keys;
	size_t *lens, n;
	assert_int_equal(rs_list_keys(c, &keys, &lens, &n), 0);
	assert_true(listed(keys, lens, n, key, klen));
	rs_free(keys);
	rs_close(c);
}

static void test_ping_and_errors(void **state)
{
	struct rs_client *c = conn();

	(void)state;
	for (int i = 0; i < 10; i++)
		assert_int_equal(rs_ping(c), 0);
	assert_string_equal(rs_strerror(-ETIMEDOUT), "timed out");
	assert_string_equal(rs_strerror(-EAGAIN), "queue is empty");
	assert_non_null(rs_strerror(-12345));
	assert_int_equal(rs_set(c, NULL, 3, "x", 1), -EINVAL);
	assert_true(rs_connected(c));
	rs_close(c);
	rs_close(NULL);
	rs_free(NULL);
	/* a NULL client is a bad argument for every call */
	void *val;
	size_t len;
	int64_t v;
	assert_int_equal(rs_ping(NULL), -EINVAL);
	assert_int_equal(rs_get(NULL, "k", 1, &val, &len), -EINVAL);
	assert_int_equal(rs_get_nowait(NULL, "k", 1, &val, &len), -EINVAL);
	assert_int_equal(rs_add(NULL, "k", 1, 1, &v), -EINVAL);
	assert_int_equal(rs_compare_set(NULL, "k", 1, "", 0, "x", 1, NULL,
					NULL),
			 -EINVAL);
	assert_int_equal(rs_set(NULL, "k", 1, "x", 1), -EINVAL);
	assert_int_equal(rs_wait(NULL, 1, (const void *[]){ "k" },
				 (size_t[]){ 1 }, 0),
			 -EINVAL);
	assert_int_equal(rs_queue_pop(NULL, "k", 1, true, 0, &val, &len),
			 -EINVAL);
	assert_int_equal(rs_reconnects(NULL), 0);
}

/* ADD on a non-number makes the server close the connection. */
static void test_server_close_breaks_client(void **state)
{
	struct rs_client *c = conn();
	char k[128];
	int64_t v;

	(void)state;
	K(k, sizeof(k), "nan");
	set_str(c, k, "not a number");
	int ret = rs_add(c, k, strlen(k), 1, &v);
	assert_true(ret == -ECONNRESET || ret == -EPIPE);
	assert_false(rs_connected(c));
	assert_int_equal(rs_ping(c), -ENOTCONN);
	rs_close(c);
	/* the server and its data are fine */
	c = conn();
	want_value(c, k, "not a number");
	rs_close(c);
}

/* Scripted fake servers for connect and cancel behaviour. */

enum fake_mode {
	FAKE_LATE_LISTEN, /* listen after 1 s; drop the first conn; serve */
	FAKE_CANCEL_RACE, /* answer CANCEL_WAIT with 00 01, then echo pings */
	FAKE_CANCEL_BAD,  /* answer CANCEL_WAIT with 02 */
};

struct fake {
	enum fake_mode mode;
	int lfd;
	uint16_t port;
	int accepted;
	int err;
};

static int read_full(int fd, void *p, size_t n)
{
	size_t got = 0;

	while (got < n) {
		ssize_t r = recv(fd, (uint8_t *)p + got, n - got, 0);
		if (r <= 0)
			return -1;
		got += (size_t)r;
	}
	return 0;
}

/* Read VALIDATE + PING, check them, echo the nonce. */
static int fake_handshake(int fd)
{
	uint8_t h[10];
	static const uint8_t validate[5] = { 0x00, 0xce, 0xf7, 0x85, 0x3c };

	if (read_full(fd, h, 10) || memcmp(h, validate, 5) || h[5] != 0x0d)
		return -1;
	return send(fd, h + 6, 4, MSG_NOSIGNAL) == 4 ? 0 : -1;
}

static void *fake_thread(void *arg)
{
	struct fake *f = arg;
	int fd;

	if (f->mode == FAKE_LATE_LISTEN) {
		sleep_ms(1000);
		if (listen(f->lfd, 8)) {
			f->err = errno;
			return NULL;
		}
		fd = accept(f->lfd, NULL, NULL);
		f->accepted++;
		close(fd); /* first attempt: dropped before the PING echo */
	} else if (listen(f->lfd, 8)) {
		f->err = errno;
		return NULL;
	}
	fd = accept(f->lfd, NULL, NULL);
	f->accepted++;
	if (fd < 0 || fake_handshake(fd)) {
		f->err = EPROTO;
		goto out;
	}
	if (f->mode != FAKE_LATE_LISTEN) {
		uint8_t b[64];
		/* WAIT 1 key: 1 + 8 + 8 + klen; the test uses key "/w" */
		if (read_full(fd, b, 19) || b[0] != 6) {
			f->err = EPROTO;
			goto out;
		}
		if (read_full(fd, b, 1) || b[0] != 12) {
			f->err = EPROTO;
			goto out;
		}
		if (f->mode == FAKE_CANCEL_RACE) {
			send(fd, "\x00", 1, MSG_NOSIGNAL);
			sleep_ms(50); /* let the client see the 00 alone */
			send(fd, "\x01", 1, MSG_NOSIGNAL);
			/* then a PING must arrive in sync */
			if (read_full(fd, b, 5) || b[0] != 13) {
				f->err = EPROTO;
				goto out;
			}
			send(fd, b + 1, 4, MSG_NOSIGNAL);
		} else {
			send(fd, "\x02", 1, MSG_NOSIGNAL);
		}
	}
	/* hold the connection until the client closes it */
	uint8_t sink[256];
	while (recv(fd, sink, sizeof(sink), 0) > 0)
		;
out:
	if (fd >= 0)
		close(fd);
	return NULL;
}

/* Bind 127.0.0.1:0 without listening: connects are refused until listen. */
static void fake_start(struct fake *f, enum fake_mode mode, pthread_t *t)
{
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(sa);

	memset(f, 0, sizeof(*f));
	f->mode = mode;
	f->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(f->lfd >= 0);
	assert_int_equal(bind(f->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(getsockname(f->lfd, (struct sockaddr *)&sa, &sl), 0);
	f->port = ntohs(sa.sin_port);
	if (t)
		assert_int_equal(pthread_create(t, NULL, fake_thread, f), 0);
}

static void test_connect_retries_until_server_appears(void **state)
{
	struct rs_options o = { .timeout_ms = 10000 };
	struct rs_client *c = NULL;
	struct fake f;
	pthread_t t;

	(void)state;
	fake_start(&f, FAKE_LATE_LISTEN, &t);
	int64_t t0 = (int64_t)now_mono_ms();
	assert_int_equal(rs_connect(&c, "127.0.0.1", f.port, &o), 0);
	assert_true((int64_t)now_mono_ms() - t0 >=
		    950); /* it retried until the listen */
	rs_close(c);
	pthread_join(t, NULL);
	close(f.lfd);
	assert_int_equal(f.err, 0);
	assert_int_equal(f.accepted, 2); /* the dropped handshake was retried */
}

static void test_connect_deadline(void **state)
{
	/* No other limit: a client that ignored the connect deadline would
	 * retry until ctest's timeout, so the test needs no upper bound. */
	struct rs_options o = { .timeout_ms = RS_TIMEOUT_NONE,
				.connect_timeout_ms = 1200 };
	struct rs_client *c = NULL;
	struct fake f;

	(void)state;
	fake_start(&f, FAKE_LATE_LISTEN, NULL); /* never listens */
	int64_t t0 = (int64_t)now_mono_ms();
	assert_int_equal(rs_connect(&c, "127.0.0.1", f.port, &o), -ETIMEDOUT);
	int64_t dt = (int64_t)now_mono_ms() - t0;
	assert_null(c);
	assert_true(dt >= 1150); /* retried until the deadline */
	close(f.lfd);
	/* a malformed address is not retried */
	assert_int_equal(rs_connect_addr(&c, "no-port", &o), -EINVAL);
}

static void test_cancel_race_fake(void **state)
{
	struct rs_options o = { .timeout_ms = 5000 };
	struct rs_client *c = NULL;
	const void *key = "w";
	size_t klen = 1;
	struct fake f;
	pthread_t t;

	(void)state;
	/* the server's STOP_WAITING crosses our cancel: 00 then 01 */
	fake_start(&f, FAKE_CANCEL_RACE, &t);
	assert_int_equal(rs_connect(&c, "127.0.0.1", f.port, &o), 0);
	/* the wait did complete, just late: success, stream in sync */
	assert_int_equal(rs_wait(c, 1, &key, &klen, 100), 0);
	assert_true(rs_connected(c));
	assert_int_equal(rs_ping(c), 0);
	rs_close(c);
	pthread_join(t, NULL);
	close(f.lfd);
	assert_int_equal(f.err, 0);

	/* anything but 00/01 is a protocol error that breaks the client */
	fake_start(&f, FAKE_CANCEL_BAD, &t);
	assert_int_equal(rs_connect(&c, "127.0.0.1", f.port, &o), 0);
	assert_int_equal(rs_wait(c, 1, &key, &klen, 100), -EPROTO);
	assert_false(rs_connected(c));
	rs_close(c);
	pthread_join(t, NULL);
	close(f.lfd);
	assert_int_equal(f.err, 0);
}

/*
 * The fault-injecting proxy. One thread accepts on 127.0.0.1:port and
 * serves one connection at a time (a client holds one), forwarding bytes
 * both ways to the server at $RS_TEST_ADDR. The test thread steers it with
 * the fields under mu and with one-byte commands on a pipe.
 */
struct proxy {
	int lfd;
	uint16_t port;
	int cmd[2]; /* pipe: 'd' drop the idle connection, 'q' quit */
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	/* under mu */
	int drop_after; /* replies to forward before a drop; -1: none */
	void (*on_drop)(void *); /* run after a drop, before the next accept */
	void *arg;
	bool refuse;  /* close accepted connections at once */
	int accepted; /* connections forwarded */
	int refused;
	int drops;
	int unvalidated; /* connections that did not open with VALIDATE */
	int err;         /* an errno the proxy met, 0 if none */
};

/* A connected socket to the server under test, or -errno. */
static int dial_server(void)
{
	char host[128];
	const char *colon = strrchr(addr, ':');
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res;
	size_t hl;
	int fd;

	if (!colon)
		return -EINVAL;
	hl = (size_t)(colon - addr);
	if (hl && addr[0] == '[') {
		memcpy(host, addr + 1, hl - 2);
		host[hl - 2] = 0;
	} else {
		memcpy(host, addr, hl);
		host[hl] = 0;
	}
	if (getaddrinfo(hl ? host : "127.0.0.1", colon + 1, &hints, &res))
		return -EHOSTUNREACH;
	fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd >= 0 && connect(fd, res->ai_addr, res->ai_addrlen)) {
		close(fd);
		fd = -errno;
	}
	freeaddrinfo(res);
	return fd;
}

static int write_full(int fd, const void *p, size_t n)
{
	while (n) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		p = (const uint8_t *)p + w;
		n -= (size_t)w;
	}
	return 0;
}

/*
 * Close the client's side so that the client is sure to see EOF before its
 * next call: send the FIN and wait until its kernel has acknowledged it
 * (our side in FIN_WAIT2), which it does as it queues the EOF.
 */
static void close_after_fin(int fd)
{
	struct tcp_info ti;
	socklen_t len;

	shutdown(fd, SHUT_WR);
	for (;;) {
		len = sizeof(ti);
		if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len))
			break;
		if (ti.tcpi_state != TCP_ESTABLISHED &&
		    ti.tcpi_state != TCP_FIN_WAIT1)
			break;
		sleep_ms(1);
	}
	close(fd);
}

/* Count a drop; the hook runs once both sockets are closed. */
static void proxy_dropped(struct proxy *p, void (**hook)(void *), void **arg)
{
	pthread_mutex_lock(&p->mu);
	p->drops++;
	p->drop_after = -1;
	*hook = p->on_drop;
	*arg = p->arg;
	p->on_drop = NULL;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
}

/* Forward one connection until it ends. Returns false on 'q'. */
static bool proxy_serve(struct proxy *p, int cfd, int ufd)
{
	static const uint8_t validate[5] = { 0x00, 0xce, 0xf7, 0x85, 0x3c };
	uint8_t buf[65536];
	void (*hook)(void *) = NULL;
	void *arg = NULL;
	bool go_on = true;
	size_t seen = 0; /* bytes of the VALIDATE request checked so far */

	for (;;) {
		struct pollfd pf[3] = { { .fd = cfd, .events = POLLIN },
					{ .fd = ufd, .events = POLLIN },
					{ .fd = p->cmd[0], .events = POLLIN } };
		if (poll(pf, 3, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (pf[2].revents) {
			char c = 'q';
			if (read(p->cmd[0], &c, 1) != 1 || c == 'q') {
				go_on = false;
				break;
			}
			close_after_fin(cfd);
			cfd = -1;
			proxy_dropped(p, &hook, &arg);
			break;
		}
		if (pf[0].revents) {
			ssize_t n = recv(cfd, buf, sizeof(buf), 0);
			if (n <= 0)
				break;
			/* a reconnect must handshake like a first connect */
			size_t k = sizeof(validate) - seen;
			if (k > (size_t)n)
				k = (size_t)n;
			if (k && memcmp(buf, validate + seen, k)) {
				pthread_mutex_lock(&p->mu);
				p->unvalidated++;
				pthread_mutex_unlock(&p->mu);
			}
			seen += k;
			if (write_full(ufd, buf, (size_t)n))
				break;
		}
		if (pf[1].revents) {
			ssize_t n = recv(ufd, buf, sizeof(buf), 0);
			bool drop;
			if (n <= 0)
				break;
			pthread_mutex_lock(&p->mu);
			drop = p->drop_after == 0;
			if (p->drop_after > 0)
				p->drop_after--;
			pthread_mutex_unlock(&p->mu);
			if (drop) {
				/* executed by the server, never seen by the
				 * client */
				proxy_dropped(p, &hook, &arg);
				break;
			}
			if (write_full(cfd, buf, (size_t)n))
				break;
		}
	}
	if (cfd >= 0)
		close(cfd);
	close(ufd);
	if (hook)
		hook(arg);
	return go_on;
}

static void *proxy_thread(void *arg)
{
	struct proxy *p = arg;

	for (;;) {
		struct pollfd pf[2] = { { .fd = p->lfd, .events = POLLIN },
					{ .fd = p->cmd[0], .events = POLLIN } };
		if (poll(pf, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (pf[1].revents) {
			char c;
			if (read(p->cmd[0], &c, 1) != 1 || c == 'q')
				break;
			continue; /* 'd' with no connection: nothing to do */
		}
		int cfd = accept4(p->lfd, NULL, NULL, SOCK_CLOEXEC);
		if (cfd < 0)
			continue;
		pthread_mutex_lock(&p->mu);
		bool refuse = p->refuse;
		p->refused += refuse;
		pthread_mutex_unlock(&p->mu);
		if (refuse) {
			close(cfd);
			continue;
		}
		int ufd = dial_server();
		pthread_mutex_lock(&p->mu);
		if (ufd < 0)
			p->err = -ufd;
		else
			p->accepted++;
		pthread_mutex_unlock(&p->mu);
		if (ufd < 0) {
			close(cfd);
			continue;
		}
		if (!proxy_serve(p, cfd, ufd))
			break;
	}
	return NULL;
}

static void proxy_start(struct proxy *p)
{
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(sa);

	memset(p, 0, sizeof(*p));
	p->drop_after = -1;
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->cv, NULL);
	assert_int_equal(pipe2(p->cmd, O_CLOEXEC), 0);
	p->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(p->lfd >= 0);
	assert_int_equal(bind(p->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(getsockname(p->lfd, (struct sockaddr *)&sa, &sl), 0);
	assert_int_equal(listen(p->lfd, 8), 0);
	p->port = ntohs(sa.sin_port);
	assert_int_equal(pthread_create(&p->thread, NULL, proxy_thread, p), 0);
}

static void proxy_stop(struct proxy *p)
{
	assert_int_equal(write(p->cmd[1], "q", 1), 1);
	pthread_join(p->thread, NULL);
	close(p->lfd);
	close(p->cmd[0]);
	close(p->cmd[1]);
	assert_int_equal(p->err, 0);
	assert_int_equal(p->unvalidated, 0);
	pthread_cond_destroy(&p->cv);
	pthread_mutex_destroy(&p->mu);
}

/*
 * Drop the connection when the reply after the next @skip replies arrives
 * from the server; then run @hook (may be NULL) before the next accept.
 */
static void proxy_drop_reply(struct proxy *p, int skip, void (*hook)(void *),
			     void *arg)
{
	pthread_mutex_lock(&p->mu);
	p->drop_after = skip;
	p->on_drop = hook;
	p->arg = arg;
	pthread_mutex_unlock(&p->mu);
}

/* Close the idle connection; returns once the client's kernel has the FIN. */
static void proxy_drop_idle(struct proxy *p)
{
	pthread_mutex_lock(&p->mu);
	int want = p->drops + 1;
	pthread_mutex_unlock(&p->mu);
	assert_int_equal(write(p->cmd[1], "d", 1), 1);
	pthread_mutex_lock(&p->mu);
	while (p->drops < want)
		pthread_cond_wait(&p->cv, &p->mu);
	pthread_mutex_unlock(&p->mu);
}

static void proxy_refuse(struct proxy *p, bool on)
{
	pthread_mutex_lock(&p->mu);
	p->refuse = on;
	pthread_mutex_unlock(&p->mu);
}

/*
 * End a proxy test: @c reconnected @reconnects times, each time over one
 * more connection through the proxy; close it and stop the proxy.
 */
static void proxy_done(struct proxy *p, struct rs_client *c, int reconnects)
{
	pthread_mutex_lock(&p->mu);
	int accepted = p->accepted;
	pthread_mutex_unlock(&p->mu);
	assert_int_equal(rs_reconnects(c), reconnects);
	assert_int_equal(accepted, reconnects + 1);
	rs_close(c);
	proxy_stop(p);
}

/* A snapshot of one counter, read under the lock. */
static int proxy_count(struct proxy *p, const int *field)
{
	pthread_mutex_lock(&p->mu);
	int v = *field;
	pthread_mutex_unlock(&p->mu);
	return v;
}

/* Start the proxy and connect a client to the server through it. */
static struct rs_client *proxy_client(struct proxy *p, unsigned flags,
				      int64_t reconnect_ms)
{
	struct rs_options o = { .timeout_ms = 10000,
				.flags = flags,
				.reconnect_timeout_ms = reconnect_ms };
	struct rs_client *c = NULL;
	int ret;

	proxy_start(p);
	ret = rs_connect(&c, "127.0.0.1", p->port, &o);
	if (ret)
		fprintf(stderr,
			"connect via proxy :%u: %s (accepted %d, "
			"refused %d, proxy error %d)\n",
			p->port, rs_strerror(ret), proxy_count(p, &p->accepted),
			proxy_count(p, &p->refused), proxy_count(p, &p->err));
	assert_int_equal(ret, 0);
	return c;
}

/* The server's value of @k read directly (NULL when missing). */
static char *server_value(const char *k)
{
	struct rs_client *d = conn();
	void *val = NULL;
	size_t len;
	int ret = rs_get_nowait(d, k, strlen(k), &val, &len);

	assert_true(ret == 0 || ret == -ENOENT);
	rs_close(d);
	return val;
}

static void want_server_value(const char *k, const char *v)
{
	char *got = server_value(k);

	if (!v) {
		assert_null(got);
		return;
	}
	assert_non_null(got);
	assert_string_equal(got, v);
	rs_free(got);
}

/* Set @k directly, with a reply after it so every connection sees it. */
static void server_set(const char *k, const char *v)
{
	struct rs_client *d = conn();

	set_str(d, k, v);
	assert_int_equal(rs_ping(d), 0);
	rs_close(d);
}

/* An on_drop hook: another client writes (or deletes) a key. */
struct rewrite {
	const char *key;
	const char *value; /* NULL: delete */
	int err;
};

static void rewrite_key(void *arg)
{
	struct rewrite *r = arg;
	struct rs_options o = { .timeout_ms = 10000 };
	struct rs_client *d;
	size_t kl = strlen(r->key);

	r->err = rs_connect_addr(&d, addr, &o);
	if (r->err)
		return;
	if (r->value)
		r->err = rs_set(d, r->key, kl, r->value, strlen(r->value));
	else
		r->err = rs_delete_key(d, r->key, kl) == 1 ? 0 : -ENOENT;
	if (!r->err)
		r->err = rs_ping(d);
	rs_close(d);
}

/* Every read whose reply is lost is sent again on a new connection. */
static void test_reconnect_resends_reads(void **state)
{
	struct rs_client *c;
	struct proxy p;
	char k[128], q[128], m[128];
	const void *keys[2] = { k, m };
	size_t lens[2];
	void *val, **vals;
	size_t len, nk;
	char **names;
	int64_t n, n0;
	int drops = 0;

	(void)state;
	K(k, sizeof(k), "rr");
	K(m, sizeof(m), "rr-m");
	K(q, sizeof(q), "rr-q");
	lens[0] = strlen(k);
	lens[1] = strlen(m);
	server_set(k, "v");
	server_set(m, "w");
	c = proxy_client(&p, RS_RECONNECT, 0);

	/* rs_get: the WAIT's reply lost, then the GET's */
	for (int skip = 0; skip < 2; skip++) {
		proxy_drop_reply(&p, skip, NULL, NULL);
		assert_int_equal(rs_get(c, k, lens[0], &val, &len), 0);
		assert_string_equal(val, "v");
		rs_free(val);
		assert_int_equal(rs_reconnects(c), ++drops);
	}
	/* rs_get_nowait: the CHECK's, then the GET's */
	for (int skip = 0; skip < 2; skip++) {
		proxy_drop_reply(&p, skip, NULL, NULL);
		assert_int_equal(rs_get_nowait(c, k, lens[0], &val, &len), 0);
		assert_string_equal(val, "v");
		rs_free(val);
		assert_int_equal(rs_reconnects(c), ++drops);
	}
	proxy_drop_reply(&p, 0, NULL, NULL);
	assert_int_equal(rs_check(c, 2, keys, lens), 1);
	assert_int_equal(rs_reconnects(c), ++drops);
	proxy_drop_reply(&p, 0, NULL, NULL);
	assert_int_equal(rs_wait(c, 2, keys, lens, 5000), 0);
	assert_int_equal(rs_reconnects(c), ++drops);
	proxy_drop_reply(&p, 1, NULL, NULL); /* the MULTI_GET's reply */
	assert_int_equal(rs_multi_get(c, 2, keys, lens, &vals, NULL), 0);
	assert_string_equal(vals[0], "v");
	assert_string_equal(vals[1], "w");
	rs_free(vals);
	assert_int_equal(rs_reconnects(c), ++drops);
	assert_int_equal(rs_num_keys(c, &n0), 0);
	proxy_drop_reply(&p, 0, NULL, NULL);
	assert_int_equal(rs_num_keys(c, &n), 0);
	assert_int_equal(n, n0);
	assert_int_equal(rs_reconnects(c), ++drops);
	proxy_drop_reply(&p, 0, NULL, NULL);
	assert_int_equal(rs_list_keys(c, &names, NULL, &nk), 0);
	bool seen = false;
	for (size_t i = 0; i < nk; i++)
		seen |= !strcmp(names[i], k);
	assert_true(seen);
	rs_free(names);
	assert_int_equal(rs_reconnects(c), ++drops);
	proxy_drop_reply(&p, 0, NULL, NULL);
	assert_int_equal(rs_ping(c), 0);
	assert_int_equal(rs_reconnects(c), ++drops);

	/* queues: QUEUE_LEN, and the WAIT of a blocking pop */
	struct rs_client *d = conn();
	assert_int_equal(rs_queue_push(d, q, strlen(q), "i1", 2), 0);
	assert_int_equal(rs_queue_len(d, q, strlen(q), &n), 0);
	assert_int_equal(n, 1);
	proxy_drop_reply(&p, 0, NULL, NULL);
	assert_int_equal(rs_queue_len(c, q, strlen(q), &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(rs_reconnects(c), ++drops);
	proxy_drop_reply(&p, 0, NULL, NULL);
	assert_int_equal(rs_queue_pop(c, q, strlen(q), true, 5000, &val, &len),
			 0);
	assert_string_equal(val, "i1");
	rs_free(val);
	assert_int_equal(rs_reconnects(c), ++drops);
	assert_int_equal(rs_queue_len(d, q, strlen(q), &n), 0);
	assert_int_equal(n, 0);
	rs_close(d);

	assert_int_equal(proxy_count(&p, &p.drops), drops);
	proxy_done(&p, c, drops);
}

/* An ADD whose reply is lost is never sent again: -RS_EUNKNOWN. */
static void test_reconnect_add_not_resent(void **state)
{
	struct rs_client *c;
	struct proxy p;
	char k[128];
	int64_t v;

	(void)state;
	K(k, sizeof(k), "ra");
	c = proxy_client(&p, RS_RECONNECT, 0);
	assert_int_equal(rs_add(c, k, strlen(k), 1, &v), 0);
	assert_int_equal(v, 1);
	proxy_drop_reply(&p, 0, NULL, NULL);
	v = 12345;
	int ret = rs_add(c, k, strlen(k), 5, &v);
	/* applied exactly once: the server ran it, the client did not resend */
	want_server_value(k, "6");
	assert_int_equal(ret, -RS_EUNKNOWN);
	assert_int_equal(v, 12345); /* untouched */
	assert_non_null(strstr(rs_strerror(-RS_EUNKNOWN), "outcome unknown"));
	assert_false(rs_connected(c));
	/* the next call reconnects and goes on */
	assert_int_equal(rs_add(c, k, strlen(k), 1, &v), 0);
	assert_int_equal(v, 7);
	proxy_done(&p, c, 1);
}

/* A COMPARE_SET whose reply is lost is answered by reading the key. */
static void test_reconnect_compare_set_reads_back(void **state)
{
	struct rs_client *c;
	struct proxy p;
	char k[128];
	struct rewrite rw = { .key = k };
	void *cur;
	size_t len;

	(void)state;
	K(k, sizeof(k), "rc");
	c = proxy_client(&p, RS_RECONNECT, 0);

	/* nobody else writes: the read shows the swap */
	server_set(k, "A");
	proxy_drop_reply(&p, 0, NULL, NULL);
	assert_int_equal(
		rs_compare_set(c, k, strlen(k), "A", 1, "B", 1, &cur, &len), 0);
	assert_int_equal(len, 1);
	assert_memory_equal(cur, "B", 1);
	rs_free(cur);
	want_server_value(k, "B");
	assert_int_equal(rs_reconnects(c), 1);

	/* another client sets it back to A before we reconnect: we report A,
	 * where sending the COMPARE_SET again would have swapped A to B anew */
	server_set(k, "A");
	rw.value = "A";
	proxy_drop_reply(&p, 0, rewrite_key, &rw);
	assert_int_equal(
		rs_compare_set(c, k, strlen(k), "A", 1, "B", 1, &cur, &len), 0);
	assert_int_equal(rw.err, 0);
	assert_int_equal(len, 1);
	assert_memory_equal(cur, "A", 1);
	rs_free(cur);
	want_server_value(k, "A");
	assert_int_equal(rs_reconnects(c), 2);

	/* deleted meanwhile: a missing key reads as expected (not swapped) */
	rw.value = NULL;
	proxy_drop_reply(&p, 0, rewrite_key, &rw);
	assert_int_equal(
		rs_compare_set(c, k, strlen(k), "A", 1, "B", 1, &cur, &len), 0);
	assert_int_equal(rw.err, 0);
	assert_int_equal(len, 1);
	assert_memory_equal(cur, "A", 1);
	rs_free(cur);
	want_server_value(k, NULL);
	assert_int_equal(proxy_count(&p, &p.drops), 3);
	proxy_done(&p, c, 3);
}

/*
 * After a write lost its reply: the client is disconnected and its next
 * call reconnects. A PING does that here, so that a drop armed after it
 * hits the next write and not the reconnect's handshake.
 */
static void lost_then_reconnect(struct rs_client *c, int *lost)
{
	++*lost;
	assert_false(rs_connected(c));
	assert_int_equal(rs_ping(c), 0);
	assert_int_equal(rs_reconnects(c), *lost);
}

/*
 * Every other write whose reply (or acknowledging PING) is lost reports
 * -RS_EUNKNOWN, is applied exactly once, and the next call reconnects.
 */
static void test_reconnect_writes_report_unknown(void **state)
{
	struct rs_client *c, *d;
	struct proxy p;
	char k[128], k2[128], q[128], b[128];
	const void *keys[2] = { k, k2 };
	const void *vals[2] = { "m1", "m2" };
	size_t klens[2], vlens[2] = { 2, 2 };
	void *val;
	size_t len;
	int64_t n;
	int lost = 0;

	(void)state;
	K(k, sizeof(k), "rw");
	K(k2, sizeof(k2), "rw2");
	K(q, sizeof(q), "rw-q");
	K(b, sizeof(b), "rw-b");
	klens[0] = strlen(k);
	klens[1] = strlen(k2);
	c = proxy_client(&p, RS_RECONNECT, 0);
	d = conn();

	proxy_drop_reply(&p, 0, NULL, NULL);
	assert_int_equal(rs_set(c, k, klens[0], "x", 1), -RS_EUNKNOWN);
	lost_then_reconnect(c, &lost);
	want_server_value(k, "x");
	proxy_drop_reply(&p, 0, NULL, NULL);
	int ret = rs_append(c, k, klens[0], "y", 1);
	want_server_value(k, "xy"); /* appended once */
	assert_int_equal(ret, -RS_EUNKNOWN);
	lost_then_reconnect(c, &lost);
	proxy_drop_reply(&p, 0, NULL, NULL);
	assert_int_equal(rs_multi_set(c, 2, keys, klens, vals, vlens),
			 -RS_EUNKNOWN);
	lost_then_reconnect(c, &lost);
	want_server_value(k, "m1");
	want_server_value(k2, "m2");
	proxy_drop_reply(&p, 0, NULL, NULL);
	assert_int_equal(rs_delete_key(c, k2, klens[1]), -RS_EUNKNOWN);
	lost_then_reconnect(c, &lost);
	want_server_value(k2, NULL);
	proxy_drop_reply(&p, 0, NULL, NULL);
	assert_int_equal(rs_queue_push(c, q, strlen(q), "1", 1), -RS_EUNKNOWN);
	lost_then_reconnect(c, &lost);
	assert_int_equal(rs_queue_len(d, q, strlen(q), &n), 0);
	assert_int_equal(n, 1); /* pushed once */
	assert_int_equal(rs_queue_push(d, q, strlen(q), "2", 1), 0);
	proxy_drop_reply(&p, 0, NULL, NULL);
	assert_int_equal(rs_queue_pop(c, q, strlen(q), false, 0, &val, &len),
			 -RS_EUNKNOWN);
	lost_then_reconnect(c, &lost);
	assert_int_equal(rs_queue_len(d, q, strlen(q), &n), 0);
	assert_int_equal(n, 1); /* popped once: item 1 is gone with the reply */
	proxy_drop_reply(&p, 0, NULL, NULL);
	assert_int_equal(rs_barrier(c, b, strlen(b), 1, 5000), -RS_EUNKNOWN);
	lost_then_reconnect(c, &lost);

	/* and the client goes on */
	assert_int_equal(rs_queue_pop(c, q, strlen(q), false, 0, &val, &len),
			 0);
	assert_memory_equal(val, "2", 1);
	rs_free(val);
	assert_int_equal(rs_set(c, k, klens[0], "z", 1), 0);
	want_server_value(k, "z"); /* acknowledged: visible at once */
	assert_int_equal(proxy_count(&p, &p.drops), lost);
	rs_close(d);
	proxy_done(&p, c, lost);
}

/*
 * A server that closed an idle connection (a restart) has seen nothing of
 * the next request: it is sent once, on a new connection, and succeeds.
 */
static void test_reconnect_sends_unsent_once(void **state)
{
	struct rs_client *c;
	struct proxy p;
	char k[128], k2[128];
	int64_t v;

	(void)state;
	K(k, sizeof(k), "ru");
	K(k2, sizeof(k2), "ru2");
	c = proxy_client(&p, RS_RECONNECT, 0);
	assert_int_equal(rs_add(c, k, strlen(k), 1, &v), 0);
	proxy_drop_idle(&p);
	assert_int_equal(rs_add(c, k, strlen(k), 1, &v), 0);
	assert_int_equal(v, 2);
	want_server_value(k, "2");
	proxy_drop_idle(&p);
	assert_int_equal(rs_set(c, k2, strlen(k2), "s", 1), 0);
	want_server_value(k2, "s");
	proxy_done(&p, c, 2);
}

/* Without RS_RECONNECT a lost connection stays lost, as before. */
static void test_reconnect_off_by_default(void **state)
{
	struct rs_client *c;
	struct proxy p;

	(void)state;
	c = proxy_client(&p, 0, 0);
	proxy_drop_reply(&p, 0, NULL, NULL);
	assert_int_equal(rs_ping(c), -ECONNRESET);
	assert_int_equal(rs_ping(c), -ENOTCONN);
	proxy_done(&p, c, 0);
}

/*
 * A server that stays away past the reconnect deadline: the call returns
 * -ENOTCONN, a write that never left is not applied, and a later call
 * reconnects once the server is back.
 */
static void test_reconnect_deadline(void **state)
{
	struct rs_client *c;
	struct proxy p;
	char k[128];
	int64_t v;

	(void)state;
	K(k, sizeof(k), "rd");
	c = proxy_client(&p, RS_RECONNECT, 800);
	assert_int_equal(rs_add(c, k, strlen(k), 1, &v), 0);
	proxy_refuse(&p, true);
	proxy_drop_reply(&p, 0, NULL, NULL);
	assert_int_equal(rs_ping(c), -ENOTCONN); /* a read: retried, in vain */
	assert_true(proxy_count(&p, &p.refused) >= 1);
	assert_false(rs_connected(c));
	assert_int_equal(rs_add(c, k, strlen(k), 1, &v), -ENOTCONN);
	want_server_value(k, "1"); /* never sent */
	proxy_refuse(&p, false);
	assert_int_equal(rs_add(c, k, strlen(k), 1, &v), 0);
	assert_int_equal(v, 2);
	proxy_done(&p, c, 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_set_get),
		cmocka_unit_test(test_add),
		cmocka_unit_test(test_compare_set),
		cmocka_unit_test(test_check_wait),
		cmocka_unit_test(test_wait_timeout_keeps_connection),
		cmocka_unit_test(test_wait_released_by_other_client),
		cmocka_unit_test(test_delete_num_keys),
		cmocka_unit_test(test_append),
		cmocka_unit_test(test_multi),
		cmocka_unit_test(test_queue),
		cmocka_unit_test(test_queue_pop_released_by_push),
		cmocka_unit_test(test_list_keys_and_raw),
		cmocka_unit_test(test_barrier_three_clients),
		cmocka_unit_test(test_barrier_timeout),
		cmocka_unit_test(test_large_value),
		cmocka_unit_test(test_binary_keys_values),
		cmocka_unit_test(test_ping_and_errors),
		cmocka_unit_test(test_server_close_breaks_client),
		cmocka_unit_test(test_connect_retries_until_server_appears),
		cmocka_unit_test(test_connect_deadline),
		cmocka_unit_test(test_cancel_race_fake),
		cmocka_unit_test(test_reconnect_resends_reads),
		cmocka_unit_test(test_reconnect_add_not_resent),
		cmocka_unit_test(test_reconnect_compare_set_reads_back),
		cmocka_unit_test(test_reconnect_writes_report_unknown),
		cmocka_unit_test(test_reconnect_sends_unsent_once),
		cmocka_unit_test(test_reconnect_off_by_default),
		cmocka_unit_test(test_reconnect_deadline),
	};

	addr = getenv("RS_TEST_ADDR");
	if (!addr || !*addr) {
		fprintf(stderr, "test_client: RS_TEST_ADDR (host:port of a "
				"running server) is not set; skipping\n");
		return 77;
	}
	snprintf(prefix, sizeof(prefix), "ctest%d/", (int)getpid());
	return cmocka_run_group_tests(tests, NULL, NULL);
}
