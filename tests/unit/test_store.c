/* SPDX-License-Identifier: MIT */
/*
 * test_store.c - the semantics of every opcode (docs/protocol.md §5),
 * driven through store_exec without sockets. Requests are built with the
 * protocol encoders and parsed by the real decoder; replies are read back
 * from the outq byte for byte. Wake-ups are captured by a fake deliver
 * callback, which lets a test hold a wake-up "in flight" (as a cross-reactor
 * MSG_RING would be) and race it against CANCEL_WAIT.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "outq.h"
#include "proto.h"
#include "stats.h"
#include "store.h"
#include "table.h"

#define MAX_WAKES 64

struct wake {
	struct waiter_ref who;
	uint32_t seq;
};

struct fixture {
	struct store st;
	struct store_thread th;
	struct stats stats; /* th's counters */
	struct wake wakes[MAX_WAKES];
	int nwakes;
	struct wait_state ws[4]; /* four clients */
	struct outq out[4];
	struct buf req;
	uint8_t reply[1 << 18];
	size_t rlen;
};

static void fake_deliver(void *arg, const struct waiter_ref *who, uint32_t seq)
{
	struct fixture *f = arg;

	assert_true(f->nwakes < MAX_WAKES);
	f->wakes[f->nwakes].who = *who;
	f->wakes[f->nwakes].seq = seq;
	f->nwakes++;
}

static int setup_threads(void **state, unsigned threads)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	assert_int_equal(store_init(&f->st, 16, threads), 0);
	assert_int_equal(store_thread_init(&f->th, &f->st, &f->stats,
					   fake_deliver, f),
			 0);
	for (uint32_t i = 0; i < 4; i++)
		wait_state_init(&f->ws[i], (struct waiter_ref){ .slot = i });
	*state = f;
	return 0;
}

/* One store thread, as a server with one reactor has: its table has one
 * writer (table_create). */
static int setup(void **state)
{
	return setup_threads(state, 1);
}

/* Room for more store threads: a table for several writers. */
static int setup_many(void **state)
{
	return setup_threads(state, 4);
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	for (int i = 0; i < 4; i++) {
		store_client_gone(&f->th, &f->ws[i]);
		outq_free(&f->out[i]);
	}
	buf_free(&f->req);
	store_thread_destroy(&f->th);
	store_destroy(&f->st);
	free(f);
	return 0;
}

/* Run the request in f->req as client @cl on store thread @th. */
static int exec_on(struct fixture *f, struct store_thread *th, int cl)
{
	struct proto_limits lim;
	struct proto_decoder d;
	struct proto_req r;
	size_t used;

	proto_limits_default(&lim);
	proto_decoder_init(&d, &lim, false);
	assert_int_equal(proto_decoder_feed(&d, buf_head(&f->req),
					    buf_used(&f->req), &used),
			 1);
	assert_int_equal(used, buf_used(&f->req));
	assert_int_equal(proto_parse(buf_head(&f->req), used, &r), 0);
	int ret = store_exec(th, &f->ws[cl], &r, &f->out[cl]);
	buf_reset(&f->req);
	return ret;
}

/* Run the request in f->req as client @cl; returns store_exec's result. */
static int exec(struct fixture *f, int cl)
{
	return exec_on(f, &f->th, cl);
}

/* Move client @cl's pending reply bytes into f->reply. */
static size_t take(struct fixture *f, int cl)
{
	struct iovec iov[64];
	int n = outq_iov(&f->out[cl], iov, 64);

	f->rlen = 0;
	for (int i = 0; i < n; i++) {
		assert_true(f->rlen + iov[i].iov_len <= sizeof(f->reply));
		memcpy(f->reply + f->rlen, iov[i].iov_base, iov[i].iov_len);
		f->rlen += iov[i].iov_len;
	}
	outq_consume(&f->out[cl], f->rlen);
	return f->rlen;
}

static void want_bytes(struct fixture *f, int cl, const void *p, size_t n)
{
	take(f, cl);
	assert_int_equal(f->rlen, n);
	assert_memory_equal(f->reply, p, n);
}

static void want_value(struct fixture *f, int cl, const char *v)
{
	uint64_t len;

	take(f, cl);
	assert_true(f->rlen >= 8);
	memcpy(&len, f->reply, 8);
	assert_int_equal(len, strlen(v));
	assert_int_equal(f->rlen, 8 + len);
	assert_memory_equal(f->reply + 8, v, len);
}

static void want_i64(struct fixture *f, int cl, int64_t v)
{
	want_bytes(f, cl, &v, 8);
}

static void want_u8(struct fixture *f, int cl, uint8_t v)
{
	want_bytes(f, cl, &v, 1);
}

static void want_nothing(struct fixture *f, int cl)
{
	assert_int_equal(take(f, cl), 0);
}

static int do_set(struct fixture *f, int cl, const char *k, const char *v)
{
	assert_int_equal(proto_enc_key_val(&f->req, OP_SET, k, strlen(k), v,
					   strlen(v)),
			 0);
	return exec(f, cl);
}

static int do_key(struct fixture *f, int cl, enum proto_op op, const char *k)
{
	assert_int_equal(proto_enc_key(&f->req, op, k, strlen(k)), 0);
	return exec(f, cl);
}

static int do_add(struct fixture *f, int cl, const char *k, int64_t d)
{
	assert_int_equal(proto_enc_key_i64(&f->req, OP_ADD, k, strlen(k), d),
			 0);
	return exec(f, cl);
}

static int do_keys(struct fixture *f, int cl, enum proto_op op, size_t n,
		   const char *const *keys)
{
	const void *kp[8] = { 0 };
	size_t kl[8] = { 0 };

	for (size_t i = 0; i < n; i++) {
		kp[i] = keys[i];
		kl[i] = strlen(keys[i]);
	}
	assert_int_equal(proto_enc_keys(&f->req, op, n, kp, kl), 0);
	return exec(f, cl);
}

static int do_bare(struct fixture *f, int cl, enum proto_op op)
{
	assert_int_equal(proto_enc_bare(&f->req, op), 0);
	return exec(f, cl);
}

static int do_barrier(struct fixture *f, int cl, const char *k, int64_t ws)
{
	assert_int_equal(
		proto_enc_key_i64(&f->req, OP_BARRIER, k, strlen(k), ws), 0);
	return exec(f, cl);
}

static int do_cas(struct fixture *f, int cl, const char *k, const char *e,
		  const char *d)
{
	assert_int_equal(proto_enc_compare_set(&f->req, k, strlen(k), e,
					       strlen(e), d, strlen(d)),
			 0);
	return exec(f, cl);
}

/* Deliver every captured wake-up to its client, as the reactor would. */
static void arrive_all(struct fixture *f)
{
	for (int i = 0; i < f->nwakes; i++) {
		uint32_t cl = f->wakes[i].who.slot;
		store_wake_arrived(&f->ws[cl], f->wakes[i].seq, &f->out[cl]);
	}
	f->nwakes = 0;
}

static void test_set_get(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(do_set(f, 0, "/a", "xy"), 0);
	want_nothing(f, 0); /* SET has no reply */
	assert_int_equal(do_key(f, 0, OP_GET, "/a"), 0);
	want_value(f, 0, "xy");
	/* The same length again: written in place, and counted in the
	 * stats the store thread was given. */
	assert_int_equal(stat_get(&f->stats.writes_in_place), 0);
	assert_int_equal(do_set(f, 0, "/a", "zw"), 0);
	assert_int_equal(stat_get(&f->stats.writes_in_place), 1);
	assert_int_equal(do_key(f, 0, OP_GET, "/a"), 0);
	want_value(f, 0, "zw");
	assert_int_equal(do_set(f, 0, "/a", ""), 0);
	assert_int_equal(do_key(f, 0, OP_GET, "/a"), 0);
	want_value(f, 0, "");
	/* Missing key: an empty value (libuv behaviour). */
	assert_int_equal(do_key(f, 0, OP_GET, "/missing"), 0);
	want_value(f, 0, "");
}

static void test_get_large_value_by_reference(void **state)
{
	struct fixture *f = *state;
	size_t n = 100000;
	char *v = malloc(n + 1);

	for (size_t i = 0; i < n; i++)
		v[i] = (char)('a' + i % 26);
	v[n] = '\0';
	assert_int_equal(do_set(f, 0, "/big", v), 0);
	assert_int_equal(do_key(f, 0, OP_GET, "/big"), 0);
	/* Overwrite while the reply still references the old value. */
	assert_int_equal(do_set(f, 1, "/big", "small"), 0);
	want_value(f, 0, v);
	free(v);
}

static void test_add(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(do_add(f, 0, "/c", 5), 0);
	want_i64(f, 0, 5);
	assert_int_equal(do_add(f, 0, "/c", -7), 0);
	want_i64(f, 0, -2);
	assert_int_equal(do_key(f, 0, OP_GET, "/c"), 0);
	want_value(f, 0, "-2");
	/* add(k, 0) reads the counter. */
	assert_int_equal(do_add(f, 0, "/c", 0), 0);
	want_i64(f, 0, -2);
	/* set("k", "5") then add works (stoll semantics). */
	assert_int_equal(do_set(f, 0, "/s", "  +5xyz"), 0);
	assert_int_equal(do_add(f, 0, "/s", 1), 0);
	want_i64(f, 0, 6);
	/* Wraps like two's complement. */
	assert_int_equal(do_set(f, 0, "/w", "9223372036854775807"), 0);
	assert_int_equal(do_add(f, 0, "/w", 1), 0);
	want_i64(f, 0, INT64_MIN);
	/* Non-numeric: the connection must close; the value is untouched. */
	assert_int_equal(do_set(f, 0, "/n", "potato"), 0);
	assert_int_equal(do_add(f, 0, "/n", 1), -EINVAL);
	want_nothing(f, 0);
	assert_int_equal(do_key(f, 0, OP_GET, "/n"), 0);
	want_value(f, 0, "potato");
	/* Out of int64 range is an error too. */
	assert_int_equal(do_set(f, 0, "/o", "9223372036854775808"), 0);
	assert_int_equal(do_add(f, 0, "/o", 1), -EINVAL);
}

/* A store takes as many store threads as store_init was told, and no
 * more: a second thread on a one-writer table would race its writes in
 * place. */
static void test_thread_limit(void **state)
{
	struct store st;
	struct store_thread a, b;
	struct stats sa = { 0 }, sb = { 0 };

	(void)state;
	assert_int_equal(store_init(&st, 16, 0), -EINVAL);
	assert_int_equal(store_init(&st, 16, STORE_MAX_THREADS + 1), -EINVAL);
	assert_int_equal(store_init(&st, 16, 1), 0);
	assert_int_equal(store_thread_init(&a, &st, &sa, NULL, NULL), 0);
	assert_int_equal(store_thread_init(&b, &st, &sb, NULL, NULL), -EINVAL);
	store_thread_destroy(&a);
	store_destroy(&st);
	assert_int_equal(store_init(&st, 16, 2), 0);
	assert_int_equal(store_thread_init(&a, &st, &sa, NULL, NULL), 0);
	assert_int_equal(store_thread_init(&b, &st, &sb, NULL, NULL), 0);
	store_thread_destroy(&b);
	store_thread_destroy(&a);
	store_destroy(&st);
}

static void test_parse_i64(void **state)
{
	int64_t v;

	(void)state;
	assert_int_equal(store_parse_i64((const uint8_t *)"42", 2, &v), 0);
	assert_int_equal(v, 42);
	assert_int_equal(store_parse_i64((const uint8_t *)"\t-0x1", 5, &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(
		store_parse_i64((const uint8_t *)"-9223372036854775808", 20,
				&v),
		0);
	assert_int_equal(v, INT64_MIN);
	assert_int_equal(store_parse_i64((const uint8_t *)"", 0, &v), -EINVAL);
	assert_int_equal(store_parse_i64((const uint8_t *)" -", 2, &v),
			 -EINVAL);
	assert_int_equal(store_parse_i64((const uint8_t *)"x1", 2, &v),
			 -EINVAL);
	/* Bytes beyond the given length are not read. */
	assert_int_equal(store_parse_i64((const uint8_t *)"12345", 2, &v), 0);
	assert_int_equal(v, 12);
}

static void test_compare_set(void **state)
{
	struct fixture *f = *state;
	const char *k[] = { "/k" };

	/* A waiter on /k: it must not wake while /k does not exist. */
	assert_int_equal(do_keys(f, 1, OP_WAIT, 1, k), 0);
	want_nothing(f, 1);
	/* Missing key, non-empty expected: reply expected, store nothing. */
	assert_int_equal(do_cas(f, 0, "/k", "old", "new"), 0);
	want_value(f, 0, "old");
	assert_int_equal(do_keys(f, 0, OP_CHECK, 1, k), 0);
	want_u8(f, 0, PROTO_CHECK_NOT_READY);
	assert_int_equal(f->nwakes, 0);
	/* Missing key, empty expected: create, reply desired, wake. */
	assert_int_equal(do_cas(f, 0, "/k", "", "first"), 0);
	want_value(f, 0, "first");
	assert_int_equal(f->nwakes, 1);
	arrive_all(f);
	want_u8(f, 1, PROTO_WAIT_STOP);
	/* Present, wrong expected: reply current, nothing changes. */
	assert_int_equal(do_cas(f, 0, "/k", "nope", "x"), 0);
	want_value(f, 0, "first");
	/* Present, right expected: swap, reply desired. */
	assert_int_equal(do_cas(f, 0, "/k", "first", "second"), 0);
	want_value(f, 0, "second");
	assert_int_equal(do_key(f, 0, OP_GET, "/k"), 0);
	want_value(f, 0, "second");
}

static void test_check_and_wait(void **state)
{
	struct fixture *f = *state;
	const char *ab[] = { "/a", "/b" };
	const char *none[] = { NULL };

	assert_int_equal(do_keys(f, 0, OP_CHECK, 0, none), 0);
	want_u8(f, 0, PROTO_CHECK_READY); /* n = 0 is READY */
	assert_int_equal(do_set(f, 0, "/a", "1"), 0);
	assert_int_equal(do_keys(f, 0, OP_CHECK, 2, ab), 0);
	want_u8(f, 0, PROTO_CHECK_NOT_READY);
	/* WAIT on a present key answers at once. */
	assert_int_equal(do_keys(f, 0, OP_WAIT, 1, ab), 0);
	want_u8(f, 0, PROTO_WAIT_STOP);
	/* WAIT on a and b: deferred until b exists. */
	assert_int_equal(do_keys(f, 1, OP_WAIT, 2, ab), 0);
	want_nothing(f, 1);
	assert_int_equal(do_set(f, 0, "/a", "again"), 0);
	assert_int_equal(f->nwakes, 0); /* a was never missing */
	assert_int_equal(do_set(f, 0, "/b", "2"), 0);
	assert_int_equal(f->nwakes, 1);
	assert_int_equal(f->wakes[0].who.slot, 1);
	arrive_all(f);
	want_u8(f, 1, PROTO_WAIT_STOP);
	assert_int_equal(do_keys(f, 0, OP_CHECK, 2, ab), 0);
	want_u8(f, 0, PROTO_CHECK_READY);
	/* A second write wakes nobody: the waiter list was consumed. */
	assert_int_equal(do_set(f, 0, "/b", "3"), 0);
	assert_int_equal(f->nwakes, 0);
}

static void test_wait_duplicate_keys(void **state)
{
	struct fixture *f = *state;
	const char *kk[] = { "/d", "/d" };

	assert_int_equal(do_keys(f, 1, OP_WAIT, 2, kk), 0);
	want_nothing(f, 1);
	assert_int_equal(do_add(f, 0, "/d", 1), 0);
	want_i64(f, 0, 1);
	assert_int_equal(f->nwakes, 1);
	arrive_all(f);
	want_u8(f, 1, PROTO_WAIT_STOP);
}

static void test_wake_all_waiters(void **state)
{
	struct fixture *f = *state;
	const char *k[] = { "/go" };

	for (int cl = 1; cl < 4; cl++) {
		assert_int_equal(do_keys(f, cl, OP_WAIT, 1, k), 0);
		want_nothing(f, cl);
	}
	assert_int_equal(
		proto_enc_key_val(&f->req, OP_APPEND, "/go", 3, "x", 1), 0);
	assert_int_equal(exec(f, 0), 0);
	assert_int_equal(f->nwakes, 3);
	arrive_all(f);
	for (int cl = 1; cl < 4; cl++)
		want_u8(f, cl, PROTO_WAIT_STOP);
}

static void test_numkeys_delete(void **state)
{
	struct fixture *f = *state;
	const char *k[] = { "/x" };

	assert_int_equal(do_bare(f, 0, OP_GETNUMKEYS), 0);
	want_i64(f, 0, 0);
	assert_int_equal(do_add(f, 0, "init/", 1), 0);
	want_i64(f, 0, 1);
	assert_int_equal(do_set(f, 0, "/x", "1"), 0);
	assert_int_equal(do_bare(f, 0, OP_GETNUMKEYS), 0);
	want_i64(f, 0, 2);
	/* A waiter on /x stays waiting through a delete. */
	assert_int_equal(do_key(f, 0, OP_DELETE_KEY, "/x"), 0);
	want_i64(f, 0, 1);
	assert_int_equal(do_keys(f, 1, OP_WAIT, 1, k), 0);
	want_nothing(f, 1);
	assert_int_equal(do_key(f, 0, OP_DELETE_KEY, "/x"), 0);
	want_i64(f, 0, 0);
	assert_int_equal(f->nwakes, 0);
	assert_int_equal(do_bare(f, 0, OP_GETNUMKEYS), 0);
	want_i64(f, 0, 1);
	assert_int_equal(do_set(f, 0, "/x", "back"), 0);
	assert_int_equal(f->nwakes, 1);
}

static void test_append(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(
		proto_enc_key_val(&f->req, OP_APPEND, "/p", 2, "po", 2), 0);
	assert_int_equal(exec(f, 0), 0);
	want_nothing(f, 0);
	assert_int_equal(
		proto_enc_key_val(&f->req, OP_APPEND, "/p", 2, "tato", 4), 0);
	assert_int_equal(exec(f, 0), 0);
	assert_int_equal(do_key(f, 0, OP_GET, "/p"), 0);
	want_value(f, 0, "potato");
}

static void test_multi_get_set(void **state)
{
	struct fixture *f = *state;
	const void *keys[] = { "/m1", "/m2" };
	const void *vals[] = { "one", "" };
	size_t kl[] = { 3, 3 }, vl[] = { 3, 0 };
	const char *k3[] = { "/m1", "/zz", "/m2" };
	const char *w[] = { "/m2" };
	uint8_t want[8 + 3 + 8 + 8];
	uint64_t l;

	assert_int_equal(do_keys(f, 1, OP_WAIT, 1, w), 0);
	assert_int_equal(proto_enc_multi_set(&f->req, 2, keys, kl, vals, vl),
			 0);
	assert_int_equal(exec(f, 0), 0);
	want_nothing(f, 0);
	assert_int_equal(f->nwakes, 1); /* each pair wakes its waiters */
	assert_int_equal(do_keys(f, 0, OP_MULTI_GET, 3, k3), 0);
	l = 3;
	memcpy(want, &l, 8);
	memcpy(want + 8, "one", 3);
	l = 0;
	memcpy(want + 11, &l, 8); /* missing: empty */
	memcpy(want + 19, &l, 8); /* present but empty */
	want_bytes(f, 0, want, sizeof(want));
	/* Both pairs again, same lengths: both written in place. */
	assert_int_equal(proto_enc_multi_set(&f->req, 2, keys, kl, vals, vl),
			 0);
	assert_int_equal(exec(f, 0), 0);
	assert_int_equal(stat_get(&f->stats.writes_in_place), 2);
}

/*
 * The MULTI_GET reply cache (store.h): a byte-identical large MULTI_GET is
 * answered from the cache only while nothing was written, by any store
 * thread; every reply is checked against the table's values byte for byte.
 */
#define MG_KEYS 100

/* What f->th counted: replies built and cached, and replies served. */
static uint64_t cache_builds(struct fixture *f)
{
	return stat_get(&f->stats.mget_cache_builds);
}

static uint64_t cache_hits(struct fixture *f)
{
	return stat_get(&f->stats.mget_cache_hits);
}

static void mg_request(struct fixture *f, size_t n, const char *const *keys)
{
	const void *kp[MG_KEYS + 1];
	size_t kl[MG_KEYS + 1];

	for (size_t i = 0; i < n; i++) {
		kp[i] = keys[i];
		kl[i] = strlen(keys[i]);
	}
	assert_int_equal(proto_enc_keys(&f->req, OP_MULTI_GET, n, kp, kl), 0);
}

/* Run the MULTI_GET of @keys on @th and check the reply against @vals
 * (NULL: missing, empty). */
static void mg_check(struct fixture *f, struct store_thread *th, size_t n,
		     const char *const *keys, const char *const *vals)
{
	static uint8_t want[1 << 17];
	size_t wl = 0;

	mg_request(f, n, keys);
	assert_int_equal(exec_on(f, th, 0), 0);
	for (size_t i = 0; i < n; i++) {
		uint64_t l = vals[i] ? strlen(vals[i]) : 0;

		memcpy(want + wl, &l, 8);
		wl += 8;
		memcpy(want + wl, vals[i] ? vals[i] : "", l);
		wl += l;
	}
	want_bytes(f, 0, want, wl);
}

static void test_multi_get_cache(void **state)
{
	struct fixture *f = *state;
	static char kbuf[MG_KEYS][16], vbuf[MG_KEYS][16], big[5001];
	const char *keys[MG_KEYS + 1], *vals[MG_KEYS + 1], *rev[MG_KEYS];
	struct store_thread th2;
	struct stats s2 = { 0 }, s3 = { 0 };
	uint64_t builds, hits;

	assert_int_equal(store_thread_init(&th2, &f->st, &s2, fake_deliver, f),
			 0);
	for (int i = 0; i < MG_KEYS; i++) {
		snprintf(kbuf[i], sizeof(kbuf[i]), "/c%03d", i);
		snprintf(vbuf[i], sizeof(vbuf[i]), "v%03d", i);
		keys[i] = kbuf[i];
		vals[i] = vbuf[i];
		rev[MG_KEYS - 1 - i] = kbuf[i];
		assert_int_equal(do_set(f, 1, keys[i], vals[i]), 0);
	}
	/* Built, then served from the cache. */
	mg_check(f, &f->th, MG_KEYS, keys, vals);
	assert_non_null(f->th.mget);
	assert_int_equal(cache_builds(f), 1);
	assert_int_equal(cache_hits(f), 0);
	mg_check(f, &f->th, MG_KEYS, keys, vals);
	assert_int_equal(cache_hits(f), 1);
	mg_check(f, &f->th, MG_KEYS, keys, vals);
	assert_int_equal(cache_hits(f), 2);

	/* A write on another store thread invalidates it. */
	assert_int_equal(
		proto_enc_key_val(&f->req, OP_SET, "/c005", 5, "new", 3), 0);
	assert_int_equal(exec_on(f, &th2, 1), 0);
	vals[5] = "new";
	mg_check(f, &f->th, MG_KEYS, keys, vals);
	assert_int_equal(cache_hits(f), 2);
	assert_int_equal(cache_builds(f), 2);
	/* So does one on our own thread, and a write to a key not in the
	 * list (any write counts). */
	assert_int_equal(do_key(f, 1, OP_DELETE_KEY, "/c006"), 0);
	take(f, 1);
	vals[6] = NULL;
	mg_check(f, &f->th, MG_KEYS, keys, vals);
	assert_int_equal(cache_builds(f), 3);
	assert_int_equal(do_add(f, 1, "/elsewhere", 1), 0);
	take(f, 1);
	mg_check(f, &f->th, MG_KEYS, keys, vals);
	assert_int_equal(cache_builds(f), 4);
	assert_int_equal(cache_hits(f), 2);
	mg_check(f, &f->th, MG_KEYS, keys, vals);
	assert_int_equal(cache_hits(f), 3);

	/* Another list of the same length is another request. */
	{
		const char *rv[MG_KEYS];

		for (int i = 0; i < MG_KEYS; i++)
			rv[i] = vals[MG_KEYS - 1 - i];
		mg_check(f, &f->th, MG_KEYS, rev, rv);
		assert_int_equal(cache_builds(f), 5);
		mg_check(f, &f->th, MG_KEYS, keys, vals);
		assert_int_equal(cache_builds(f), 6);
		assert_int_equal(cache_hits(f), 3);
	}

	/* A write in progress on another thread (odd generation): answered,
	 * not cached, until it ends. */
	builds = cache_builds(f);
	hits = cache_hits(f);
	atomic_fetch_add(&f->st.gens[th2.gen].v, 1);
	mg_check(f, &f->th, MG_KEYS, keys, vals);
	mg_check(f, &f->th, MG_KEYS, keys, vals);
	assert_int_equal(cache_builds(f), builds);
	assert_int_equal(cache_hits(f), hits);
	atomic_fetch_add(&f->st.gens[th2.gen].v, 1);
	mg_check(f, &f->th, MG_KEYS, keys, vals);
	mg_check(f, &f->th, MG_KEYS, keys, vals);
	assert_int_equal(cache_builds(f), builds + 1);
	assert_int_equal(cache_hits(f), hits + 1);

	/* A new store thread (ngens changes) invalidates too. */
	{
		struct store_thread th3;

		assert_int_equal(store_thread_init(&th3, &f->st, &s3,
						   fake_deliver, f),
				 0);
		mg_check(f, &f->th, MG_KEYS, keys, vals);
		assert_int_equal(cache_builds(f), builds + 2);
		store_thread_destroy(&th3);
	}

	/* A value that goes by reference: answered the usual way. */
	memset(big, 'b', sizeof(big) - 1);
	assert_int_equal(do_set(f, 1, "/big", big), 0);
	keys[MG_KEYS] = "/big";
	vals[MG_KEYS] = big;
	builds = cache_builds(f);
	hits = cache_hits(f);
	mg_check(f, &f->th, MG_KEYS + 1, keys, vals);
	mg_check(f, &f->th, MG_KEYS + 1, keys, vals);
	assert_int_equal(cache_builds(f), builds);
	assert_int_equal(cache_hits(f), hits);

	/* Below STORE_MGET_CACHE_MIN keys: never cached. */
	mg_check(f, &f->th, STORE_MGET_CACHE_MIN - 1, keys, vals);
	mg_check(f, &f->th, STORE_MGET_CACHE_MIN - 1, keys, vals);
	assert_int_equal(cache_builds(f), builds);
	assert_int_equal(cache_hits(f), hits);
	store_thread_destroy(&th2);
}

static void test_cancel_wait(void **state)
{
	struct fixture *f = *state;
	const char *k[] = { "/cw" };
	const uint8_t canceled[] = { 1 }, raced[] = { 0, 1 };

	/* Nothing pending: 01 anyway. */
	assert_int_equal(do_bare(f, 0, OP_CANCEL_WAIT), 0);
	want_bytes(f, 0, canceled, 1);
	/* Pending and withdrawn: 01; a later set wakes nobody. */
	assert_int_equal(do_keys(f, 1, OP_WAIT, 1, k), 0);
	assert_int_equal(do_bare(f, 1, OP_CANCEL_WAIT), 0);
	want_bytes(f, 1, canceled, 1);
	assert_int_equal(do_set(f, 0, "/cw", "v"), 0);
	assert_int_equal(f->nwakes, 0);
	want_nothing(f, 1);
	/* Racing: the wake-up is in flight when the cancel arrives: 00 01,
	 * and the late arrival adds nothing. */
	assert_int_equal(do_key(f, 0, OP_DELETE_KEY, "/cw"), 0);
	take(f, 0);
	assert_int_equal(do_keys(f, 1, OP_WAIT, 1, k), 0);
	assert_int_equal(do_set(f, 0, "/cw", "v"), 0);
	assert_int_equal(f->nwakes, 1);
	assert_int_equal(do_bare(f, 1, OP_CANCEL_WAIT), 0);
	want_bytes(f, 1, raced, 2);
	arrive_all(f);
	want_nothing(f, 1);
	/* The connection stays usable. */
	assert_int_equal(do_key(f, 1, OP_GET, "/cw"), 0);
	want_value(f, 1, "v");
}

static void test_ping(void **state)
{
	struct fixture *f = *state;
	uint32_t nonce = 0xdeadbeef;

	assert_int_equal(proto_enc_ping(&f->req, nonce), 0);
	assert_int_equal(exec(f, 0), 0);
	want_bytes(f, 0, &nonce, 4);
}

static void test_queues(void **state)
{
	struct fixture *f = *state;
	const char *q[] = { "/q" };
	uint8_t want[8 + 8 + 1];
	int64_t n;
	uint64_t l;

	assert_int_equal(do_key(f, 0, OP_QUEUE_LEN, "/q"), 0);
	want_i64(f, 0, 0);
	assert_int_equal(do_key(f, 0, OP_QUEUE_POP, "/q"), 0);
	want_i64(f, 0, 0); /* empty: the length only */
	assert_int_equal(do_keys(f, 0, OP_CHECK, 1, q), 0);
	want_u8(f, 0, PROTO_CHECK_NOT_READY);
	/* Two blocked poppers; each push wakes exactly one. */
	assert_int_equal(do_keys(f, 1, OP_WAIT, 1, q), 0);
	assert_int_equal(do_keys(f, 2, OP_WAIT, 1, q), 0);
	assert_int_equal(
		proto_enc_key_val(&f->req, OP_QUEUE_PUSH, "/q", 2, "1", 1), 0);
	assert_int_equal(exec(f, 0), 0);
	want_nothing(f, 0);
	assert_int_equal(f->nwakes, 1);
	assert_int_equal(f->wakes[0].who.slot, 1); /* first come first */
	arrive_all(f);
	want_u8(f, 1, PROTO_WAIT_STOP);
	want_nothing(f, 2);
	assert_int_equal(
		proto_enc_key_val(&f->req, OP_QUEUE_PUSH, "/q", 2, "2", 1), 0);
	assert_int_equal(exec(f, 0), 0);
	assert_int_equal(f->nwakes, 1);
	arrive_all(f);
	want_u8(f, 2, PROTO_WAIT_STOP);
	/* A non-empty queue counts as present; not as a key. */
	assert_int_equal(do_keys(f, 0, OP_CHECK, 1, q), 0);
	want_u8(f, 0, PROTO_CHECK_READY);
	assert_int_equal(do_bare(f, 0, OP_GETNUMKEYS), 0);
	want_i64(f, 0, 0);
	assert_int_equal(do_key(f, 0, OP_QUEUE_LEN, "/q"), 0);
	want_i64(f, 0, 2);
	/* FIFO, replying the length before the pop. */
	assert_int_equal(do_key(f, 0, OP_QUEUE_POP, "/q"), 0);
	n = 2;
	l = 1;
	memcpy(want, &n, 8);
	memcpy(want + 8, &l, 8);
	want[16] = '1';
	want_bytes(f, 0, want, sizeof(want));
	assert_int_equal(do_key(f, 0, OP_QUEUE_POP, "/q"), 0);
	n = 1;
	memcpy(want, &n, 8);
	want[16] = '2';
	want_bytes(f, 0, want, sizeof(want));
	assert_int_equal(do_keys(f, 0, OP_CHECK, 1, q), 0);
	want_u8(f, 0, PROTO_CHECK_NOT_READY);
}

static void test_list_keys(void **state)
{
	struct fixture *f = *state;
	const char *names[] = { "/a", "/bb", "init/" };
	int seen[3] = { 0 };
	int64_t n;

	for (int i = 0; i < 3; i++)
		assert_int_equal(do_set(f, 0, names[i], "v"), 0);
	assert_int_equal(
		proto_enc_key_val(&f->req, OP_QUEUE_PUSH, "/q", 2, "x", 1), 0);
	assert_int_equal(exec(f, 0), 0);
	assert_int_equal(do_bare(f, 0, OP_LIST_KEYS), 0);
	take(f, 0);
	memcpy(&n, f->reply, 8);
	assert_int_equal(n, 3); /* queues are not keys */
	const uint8_t *p = f->reply + 8;
	for (int64_t i = 0; i < n; i++) {
		uint64_t l;
		memcpy(&l, p, 8);
		p += 8;
		int hit = -1;
		for (int j = 0; j < 3; j++)
			if (strlen(names[j]) == l && !memcmp(p, names[j], l))
				hit = j;
		assert_true(hit >= 0);
		seen[hit]++;
		p += l;
	}
	assert_int_equal((size_t)(p - f->reply), f->rlen);
	for (int j = 0; j < 3; j++)
		assert_int_equal(seen[j], 1);
}

static void test_barrier(void **state)
{
	struct fixture *f = *state;

	/* world_size 1: immediate. */
	assert_int_equal(do_barrier(f, 0, "/b1", 1), 0);
	want_u8(f, 0, PROTO_WAIT_STOP);
	/* world_size 3: two wait, the third releases everyone. */
	assert_int_equal(do_barrier(f, 1, "/b3", 3), 0);
	want_nothing(f, 1);
	assert_int_equal(do_barrier(f, 2, "/b3", 3), 0);
	want_nothing(f, 2);
	assert_int_equal(f->nwakes, 0);
	assert_int_equal(do_barrier(f, 3, "/b3", 3), 0);
	want_u8(f, 3, PROTO_WAIT_STOP);
	assert_int_equal(f->nwakes, 2);
	arrive_all(f);
	want_u8(f, 1, PROTO_WAIT_STOP);
	want_u8(f, 2, PROTO_WAIT_STOP);
	/* The counter is a visible key and is never reset. */
	assert_int_equal(do_key(f, 0, OP_GET, "/b3"), 0);
	want_value(f, 0, "3");
	assert_int_equal(do_barrier(f, 0, "/b3", 3), 0);
	want_u8(f, 0, PROTO_WAIT_STOP);
	/* A cancelled barrier wait keeps its arrival counted. */
	assert_int_equal(do_barrier(f, 1, "/bc", 2), 0);
	assert_int_equal(do_bare(f, 1, OP_CANCEL_WAIT), 0);
	want_u8(f, 1, PROTO_WAIT_CANCELED);
	assert_int_equal(do_barrier(f, 2, "/bc", 2), 0);
	want_u8(f, 2, PROTO_WAIT_STOP);
	assert_int_equal(f->nwakes, 0);
	/* Any write to the key releases barrier waiters (generic wake). */
	assert_int_equal(do_barrier(f, 1, "/bs", 5), 0);
	assert_int_equal(do_set(f, 0, "/bs", "7"), 0);
	assert_int_equal(f->nwakes, 1);
	arrive_all(f);
	want_u8(f, 1, PROTO_WAIT_STOP);
	/* Non-numeric value: close. */
	assert_int_equal(do_set(f, 0, "/bn", "zz"), 0);
	assert_int_equal(do_barrier(f, 1, "/bn", 2), -EINVAL);
	want_nothing(f, 1);
	assert_false(f->ws[1].active);
}

static void test_client_gone_withdraws_wait(void **state)
{
	struct fixture *f = *state;
	const char *k[] = { "/gone" };

	assert_int_equal(do_keys(f, 1, OP_WAIT, 1, k), 0);
	store_client_gone(&f->th, &f->ws[1]);
	assert_int_equal(do_set(f, 0, "/gone", "v"), 0);
	assert_int_equal(f->nwakes, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_set_get, setup, teardown),
		cmocka_unit_test_setup_teardown(
			test_get_large_value_by_reference, setup, teardown),
		cmocka_unit_test_setup_teardown(test_add, setup, teardown),
		cmocka_unit_test(test_parse_i64),
		cmocka_unit_test_setup_teardown(test_compare_set, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_check_and_wait, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_wait_duplicate_keys, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_wake_all_waiters, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_numkeys_delete, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_append, setup, teardown),
		cmocka_unit_test_setup_teardown(test_multi_get_set, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_multi_get_cache,
						setup_many, teardown),
		cmocka_unit_test_setup_teardown(test_cancel_wait, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_ping, setup, teardown),
		cmocka_unit_test_setup_teardown(test_queues, setup, teardown),
		cmocka_unit_test_setup_teardown(test_list_keys, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_barrier, setup, teardown),
		cmocka_unit_test_setup_teardown(test_client_gone_withdraws_wait,
						setup, teardown),
		cmocka_unit_test(test_thread_limit),
		/* The writes again, on a table for several writers. */
		cmocka_unit_test_setup_teardown(test_set_get, setup_many,
						teardown),
		cmocka_unit_test_setup_teardown(test_add, setup_many, teardown),
		cmocka_unit_test_setup_teardown(test_compare_set, setup_many,
						teardown),
		cmocka_unit_test_setup_teardown(test_append, setup_many,
						teardown),
		cmocka_unit_test_setup_teardown(test_multi_get_set, setup_many,
						teardown),
	};
	return cmocka_run_group_tests_name("store", tests, NULL, NULL);
}
