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
 * Threads: worker threads (barrier, blocking pop, late set) never call
 * cmocka; they store results that the test thread asserts.
 */
#include "ringstore.h"

#include <errno.h>
#include <netinet/in.h>
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
	assert_int_equal(rs_get_nowait(c, k2, strlen(k2), &val, &len),
			 -ENOENT);
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
	assert_int_equal(rs_compare_set(c, k, strlen(k), "x", 1, "y", 1, &cur,
					&len), 0);
	assert_int_equal(len, 1);
	assert_memory_equal(cur, "x", 1);
	rs_free(cur);
	assert_int_equal(rs_check(c, 1, (const void *[]){ k },
				  (size_t[]){ strlen(k) }), 0);
	/* missing key, empty expected: created */
	assert_int_equal(rs_compare_set(c, k, strlen(k), "", 0, "v1", 2, &cur,
					&len), 0);
	assert_int_equal(len, 2);
	assert_memory_equal(cur, "v1", 2);
	rs_free(cur);
	/* wrong expected: current value returned */
	assert_int_equal(rs_compare_set(c, k, strlen(k), "zz", 2, "v2", 2,
					&cur, &len), 0);
	assert_memory_equal(cur, "v1", 2);
	rs_free(cur);
	/* right expected: swapped */
	assert_int_equal(rs_compare_set(c, k, strlen(k), "v1", 2, "v2", 2,
					NULL, NULL), 0);
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
				      &val, &len), 0);
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
				      &val, &len), 0);
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
	assert_int_equal(rs_get_nowait(c, rk, strlen(rk), &val, &len),
			 -ENOENT);

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
		assert_int_equal(pthread_create(&t[i], NULL, barrier_thread,
						&b[i]), 0);
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
	assert_true((int64_t)now_mono_ms() - t0 >= 950); /* it retried until the listen */
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
