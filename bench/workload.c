/* SPDX-License-Identifier: MIT */
/*
 * workload.c - the request patterns of ringstore-bench.
 *
 * Keys are fixed-width: "/b" + a tag letter + "/" + a zero-padded decimal
 * number filling --key-bytes, so every key of a run has the same size and no
 * formatting call sits on the hot path. Tags: k (the key space), c (ADD
 * counters), s (COMPARE_SET keys), h (heartbeat), q (queues), f (the fanout
 * key), r (rendezvous counter and release keys).
 *
 * Each workload is a row of hooks in the table at the end of this file; the
 * engine calls them and knows no workload by name.
 *
 * The workloads:
 *  multi-set  MULTI_SET of --keys random keys, followed by a PING fence (the
 *             op has no reply, so the fence gives back-pressure and latency);
 *             --pipeline such pairs in flight per connection.
 *  multi-get  MULTI_GET of --keys random keys, pipelined; the key space is
 *             populated first (unmeasured).
 *  multi-mix  half of each.
 *             With --rate or --total-rate the multi-* workloads are paced
 *             (open loop) instead, at most --pipeline in flight each.
 *  multi-get-hot, multi-get-wide
 *             multi-get with 256 connections, 4 requests in flight each,
 *             16 keys x 64 B, drawn from 1024 keys (all in cache) or from
 *             100k keys (the table's cache misses).
 *  ops-mix    one operation at a time per connection, as PyTorch clients
 *             do: get 40 % (WAIT, then GET: two round trips), set 20 % (no
 *             reply, so it rides in front of the next op), add 20 %, check
 *             10 %, compare_set 10 %.
 *  rendezvous every rank connects (inside the measurement), VALIDATE, PING,
 *             ADD "init/", ADD the barrier counter; the rank that reads N
 *             SETs the release key; all WAIT on it, then get it (WAIT, GET).
 *  fanout     N connections WAIT on a fresh key (a PING after the WAIT
 *             proves the server has registered it), then one extra
 *             connection SETs it; the latency of each wake-up is recorded.
 *  heartbeat  CHECK of one key per connection, --rate times a second each
 *             (or --total-rate CHECKs a second over all connections);
 *             heartbeat-16k: 16000 connections, 100k CHECKs a second.
 *  nccl-init  the shape of NCCL's scalable init: --keys values (782 x
 *             128 B) are written first; then every connection (2000) sends
 *             one MULTI_GET of all of them (~100 KB replies), --rounds times
 *             one after the other; the window ends with the last reply.
 *  queue      even connections produce (QUEUE_PUSH + QUEUE_LEN, pausing while
 *             the queue holds more than --queue-max), odd ones consume like
 *             PyTorch's blocking queue_pop: QUEUE_LEN, WAIT when empty,
 *             QUEUE_POP.
 */
#include "workload.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "now.h"
#include "proto.h"

/* Scratch arrays for one request of up to --keys keys. */
struct wl_scratch {
	char *keybuf;      /* owned: keys * key_bytes */
	const void **keys; /* owned */
	size_t *klens;     /* owned */
	const void **vals; /* owned */
	size_t *vlens;     /* owned */
};

/* Per-connection states of the multi-step workloads (bench_conn.wl). */
enum {
	OPM_IDLE = 0,
	OPM_GET_WAIT, /* WAIT sent, GET follows */
	OPM_GET_NEXT, /* WAIT answered: send the GET */
};
enum {
	RV_INIT = 0,
	RV_INIT_SENT,
	RV_COUNT,
	RV_COUNT_SENT,
	RV_LAST,
	RV_OTHER,
	RV_WAIT_SENT,
	RV_GET_WAIT,
	RV_GET_WAIT_SENT,
	RV_GET,
	RV_GET_SENT,
	RV_DONE,
};
enum {
	QC_LEN = 0,
	QC_LEN_SENT,
	QC_WAIT,
	QC_WAIT_SENT,
	QC_POP,
	QC_POP_SENT
};

/*
 * Write a @len-byte key for (@tag, @n) into @dst: "/b<tag>/" then @n in
 * decimal, right-aligned and zero-padded (truncated to its low digits if it
 * does not fit; callers keep @n within the width).
 */
static void wl_key(char *dst, unsigned len, char tag, uint64_t n)
{
	dst[0] = '/';
	dst[1] = 'b';
	dst[2] = tag;
	dst[3] = '/';
	for (unsigned i = len; i > 4; i--) {
		dst[i - 1] = (char)('0' + n % 10);
		n /= 10;
	}
}

static int wl_thread_init(struct bench_thread *t)
{
	const struct bench_opts *o = &t->b->o;
	struct wl_scratch *s = calloc(1, sizeof(*s));
	size_t n = o->keys > 64 ? o->keys : 64;

	t->wl_priv = s;
	if (!s)
		return -ENOMEM;
	s->keybuf = malloc(n * o->key_bytes);
	s->keys = calloc(n, sizeof(*s->keys));
	s->klens = calloc(n, sizeof(*s->klens));
	s->vals = calloc(n, sizeof(*s->vals));
	s->vlens = calloc(n, sizeof(*s->vlens));
	if (!s->keybuf || !s->keys || !s->klens || !s->vals || !s->vlens)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		s->keys[i] = s->keybuf + i * o->key_bytes;
		s->klens[i] = o->key_bytes;
		s->vals[i] = t->b->value;
		s->vlens[i] = o->value_bytes;
	}
	return 0;
}

static void wl_thread_free(struct bench_thread *t)
{
	struct wl_scratch *s = t->wl_priv;

	if (!s)
		return;
	free(s->keybuf);
	free(s->keys);
	free(s->klens);
	free(s->vals);
	free(s->vlens);
	free(s);
	t->wl_priv = NULL;
}

/* Fill the first @n scratch keys with tag 'k' keys, random or from @first. */
static void wl_fill_keys(struct bench_thread *t, unsigned n, bool random,
			 uint64_t first)
{
	const struct bench_opts *o = &t->b->o;
	struct wl_scratch *s = t->wl_priv;

	for (unsigned i = 0; i < n; i++) {
		uint64_t k = random ? bench_rand(t, o->keyspace) : first + i;
		wl_key(s->keybuf + (size_t)i * o->key_bytes, o->key_bytes, 'k',
		       k);
	}
}

/* One key of (@tag, @n) in scratch slot 0; returns it. */
static const char *wl_key1(struct bench_thread *t, char tag, uint64_t n)
{
	struct wl_scratch *s = t->wl_priv;

	wl_key(s->keybuf, t->b->o.key_bytes, tag, n);
	return s->keybuf;
}

/* A PING fence whose nonce is the connection id (checked on the reply). */
static void wl_fence(struct bench_conn *c)
{
	proto_enc_ping(&c->out, c->id);
	bench_expect(c, OP_PING, 0);
}

/* The PREPARE phase: connection 0 writes the key space, 64 keys a batch. */
static void wl_populate(struct bench_thread *t, struct bench_conn *c)
{
	const struct bench_opts *o = &t->b->o;
	struct wl_scratch *s = t->wl_priv;

	if (c->id != 0)
		return;
	while (t->wl_next < o->keyspace && bench_can_issue(c, 16)) {
		uint64_t n = o->keyspace - t->wl_next;
		if (n > 64)
			n = 64;
		wl_fill_keys(t, (unsigned)n, false, t->wl_next);
		t->wl_next += n;
		bench_tx_begin(t, c, 0, 0, 0);
		proto_enc_multi_set(&c->out, n, s->keys, s->klens, s->vals,
				    s->vlens);
		wl_fence(c);
		bench_tx_end(t, c);
	}
}

static void wl_multi(struct bench_thread *t, struct bench_conn *c, bool set)
{
	const struct bench_opts *o = &t->b->o;
	struct wl_scratch *s = t->wl_priv;

	wl_fill_keys(t, o->keys, true, 0);
	bench_tx_begin(t, c, 1, (uint16_t)o->keys, 0);
	if (set) {
		proto_enc_multi_set(&c->out, o->keys, s->keys, s->klens,
				    s->vals, s->vlens);
		wl_fence(c);
	} else {
		proto_enc_keys(&c->out, OP_MULTI_GET, o->keys, s->keys,
			       s->klens);
		bench_expect(c, OP_MULTI_GET, (uint16_t)o->keys);
	}
	bench_tx_end(t, c);
}

/* ops-mix: queue ops until one that has a reply is in flight. */
static void wl_ops_mix(struct bench_thread *t, struct bench_conn *c)
{
	const struct bench_opts *o = &t->b->o;
	const uint8_t *v = t->b->value;
	size_t kb = o->key_bytes, vb = o->value_bytes;

	for (int guard = 0; guard < 16 && bench_can_issue(c, 1); guard++) {
		uint64_t k = bench_rand(t, o->keyspace);
		const void *key;

		if (c->wl == OPM_GET_NEXT) {
			/* Second round trip of get: latency from the WAIT. */
			key = wl_key1(t, 'k', c->wl_b);
			bench_tx_begin(t, c, 1, 1, c->wl_a);
			proto_enc_key(&c->out, OP_GET, key, kb);
			bench_expect(c, OP_GET, 0);
			bench_tx_end(t, c);
			c->wl = OPM_IDLE;
			return;
		}
		unsigned r = (unsigned)bench_rand(t, 100);
		if (r < 40) {
			key = wl_key1(t, 'k', k);
			c->wl = OPM_GET_WAIT;
			c->wl_a = now_mono_ns();
			c->wl_b = k;
			bench_tx_begin(t, c, 0, 0, 0);
			proto_enc_keys(&c->out, OP_WAIT, 1, &key, &kb);
			bench_expect(c, OP_WAIT, 1);
			bench_tx_end(t, c);
			return;
		}
		if (r < 60) {
			/* No reply: completes at once, loop for the next op. */
			key = wl_key1(t, 'k', k);
			bench_tx_begin(t, c, 1, 1, 0);
			proto_enc_key_val(&c->out, OP_SET, key, kb, v, vb);
			bench_tx_end(t, c);
			continue;
		}
		bench_tx_begin(t, c, 1, 1, 0);
		if (r < 80) {
			key = wl_key1(t, 'c', k);
			proto_enc_key_i64(&c->out, OP_ADD, key, kb, 1);
			bench_expect(c, OP_ADD, 0);
		} else if (r < 90) {
			key = wl_key1(t, 'k', k);
			proto_enc_keys(&c->out, OP_CHECK, 1, &key, &kb);
			bench_expect(c, OP_CHECK, 1);
		} else {
			key = wl_key1(t, 's', k);
			proto_enc_compare_set(&c->out, key, kb, "", 0, v, vb);
			bench_expect(c, OP_COMPARE_SET, 0);
		}
		bench_tx_end(t, c);
		return;
	}
}

static void wl_rendezvous(struct bench_thread *t, struct bench_conn *c)
{
	const struct bench_opts *o = &t->b->o;
	size_t kb = o->key_bytes;
	uint64_t run = t->b->run_id;
	const void *key;

	if (!bench_can_issue(c, 1))
		return;
	switch (c->wl) {
	case RV_INIT:
		bench_tx_begin(t, c, 1, 1, 0);
		proto_enc_key_i64(&c->out, OP_ADD, "init/", 5, 1);
		bench_expect(c, OP_ADD, 0);
		c->wl = RV_INIT_SENT;
		break;
	case RV_COUNT:
		key = wl_key1(t, 'r', run * 2);
		bench_tx_begin(t, c, 1, 1, 0);
		proto_enc_key_i64(&c->out, OP_ADD, key, kb, 1);
		bench_expect(c, OP_ADD, 0);
		c->wl = RV_COUNT_SENT;
		break;
	case RV_LAST:
	case RV_OTHER:
		key = wl_key1(t, 'r', run * 2 + 1);
		bench_tx_begin(t, c, c->wl == RV_LAST ? 2 : 1, 1, 0);
		if (c->wl == RV_LAST)
			proto_enc_key_val(&c->out, OP_SET, key, kb, "1", 1);
		proto_enc_keys(&c->out, OP_WAIT, 1, &key, &kb);
		bench_expect(c, OP_WAIT, 1);
		c->wl = RV_WAIT_SENT;
		break;
	case RV_GET_WAIT:
		key = wl_key1(t, 'r', run * 2 + 1);
		bench_tx_begin(t, c, 1, 1, 0);
		proto_enc_keys(&c->out, OP_WAIT, 1, &key, &kb);
		bench_expect(c, OP_WAIT, 1);
		c->wl = RV_GET_WAIT_SENT;
		break;
	case RV_GET:
		key = wl_key1(t, 'r', run * 2 + 1);
		bench_tx_begin(t, c, 1, 1, 0);
		proto_enc_key(&c->out, OP_GET, key, kb);
		bench_expect(c, OP_GET, 0);
		c->wl = RV_GET_SENT;
		break;
	default:
		return;
	}
	bench_tx_end(t, c);
}

static void wl_fanout(struct bench_thread *t, struct bench_conn *c, int phase)
{
	const struct bench_opts *o = &t->b->o;
	size_t kb = o->key_bytes;
	const void *key = wl_key1(t, 'f', t->b->run_id);

	if (c->wl || !bench_can_issue(c, 1))
		return;
	c->wl = 1;
	if (c->id != 0 && phase == PH_PREPARE) {
		bench_tx_begin(t, c, 0, 0, 0);
		proto_enc_keys(&c->out, OP_WAIT, 1, &key, &kb);
		/* The PING's echo comes first: the WAIT is still pending. */
		wl_fence(c);
		bench_expect(c, OP_WAIT, 1);
		bench_tx_end(t, c);
	} else if (c->id == 0 && phase == PH_RUN) {
		bench_tx_begin(t, c, 1, 1, 0);
		proto_enc_key_val(&c->out, OP_SET, key, kb, "go", 2);
		/* Pairs with the acquire load in wl_fanout_reply. */
		atomic_store_explicit(&t->b->fire_ns, now_mono_ns(),
				      memory_order_release);
		bench_tx_end(t, c);
	} else {
		c->wl = 0;
	}
}

static void wl_queue(struct bench_thread *t, struct bench_conn *c, uint64_t now)
{
	const struct bench_opts *o = &t->b->o;
	size_t kb = o->key_bytes;
	const void *key;

	if (!bench_can_issue(c, 1))
		return;
	key = wl_key1(t, 'q', (c->id / 2) % o->keyspace);
	if (!(c->id & 1)) {
		if (c->wl_b) {
			if (now < c->wl_b)
				return;
			c->wl_b = 0;
			t->wl_paused--;
		}
		bench_tx_begin(t, c, 1, 1, 0);
		proto_enc_key_val(&c->out, OP_QUEUE_PUSH, key, kb, t->b->value,
				  o->value_bytes);
		proto_enc_key(&c->out, OP_QUEUE_LEN, key, kb);
		bench_expect(c, OP_QUEUE_LEN, 0);
		bench_tx_end(t, c);
		return;
	}
	switch (c->wl) {
	case QC_LEN:
		bench_tx_begin(t, c, 0, 0, 0);
		proto_enc_key(&c->out, OP_QUEUE_LEN, key, kb);
		bench_expect(c, OP_QUEUE_LEN, 0);
		c->wl = QC_LEN_SENT;
		break;
	case QC_WAIT:
		bench_tx_begin(t, c, 0, 0, 0);
		proto_enc_keys(&c->out, OP_WAIT, 1, &key, &kb);
		bench_expect(c, OP_WAIT, 1);
		c->wl = QC_WAIT_SENT;
		break;
	case QC_POP:
		bench_tx_begin(t, c, 1, 1, 0);
		proto_enc_key(&c->out, OP_QUEUE_POP, key, kb);
		bench_expect(c, OP_QUEUE_POP, 0);
		c->wl = QC_POP_SENT;
		break;
	default:
		return;
	}
	bench_tx_end(t, c);
}

/* The i64 at the start of a reply (ADD, QUEUE_LEN); 0 if it is shorter. */
static int64_t cap_i64(const uint8_t *cap, unsigned caplen)
{
	int64_t v = 0;

	if (caplen >= 8)
		memcpy(&v, cap, 8);
	return v;
}

/* Workloads of single requests, one in flight like a real client. */
static void wl_single_adjust(struct bench_opts *o)
{
	o->pipeline = 1;
}

static void wl_heartbeat_adjust(struct bench_opts *o)
{
	o->pipeline = 1;
	if (o->total_rate > 0 && o->conns)
		o->rate = o->total_rate / o->conns;
	if (o->rate <= 0)
		o->rate = 1.0;
}

static void wl_heartbeat16k_adjust(struct bench_opts *o)
{
	if (!(o->rate > 0) && !(o->total_rate > 0))
		o->total_rate = 100000;
	wl_heartbeat_adjust(o);
}

static void wl_queue_adjust(struct bench_opts *o)
{
	if (!o->keyspace)
		o->keyspace = o->conns / 8 ? o->conns / 8 : 1;
	o->pipeline = 1;
}

static void wl_nccl_adjust(struct bench_opts *o)
{
	o->keyspace = o->keys; /* every connection reads the same keys */
	o->pipeline = 1;
}

static uint32_t wl_fanout_conns(const struct bench_opts *o)
{
	return o->conns + 1; /* the releasing SETter */
}

static int64_t wl_populate_count(const struct bench_opts *o)
{
	(void)o;
	return 1; /* connection 0 populates, then decrements */
}

static int64_t wl_fanout_prep(const struct bench_opts *o)
{
	return o->conns; /* every waiter decrements once armed */
}

static uint64_t wl_all_done(const struct bench_opts *o, uint32_t total)
{
	(void)o;
	return total;
}

static uint64_t wl_waiters_done(const struct bench_opts *o, uint32_t total)
{
	(void)total;
	return o->conns;
}

/*
 * The reply checks every workload shares. Returns -EPROTO for a wrong
 * reply, 1 if nothing more is to be done with it, 0 otherwise.
 */
static int wl_check(struct bench_conn *c, uint8_t op, const uint8_t *cap,
		    unsigned caplen)
{
	uint32_t nonce;

	switch (op) {
	case OP_PING:
		if (caplen < 4)
			return -EPROTO;
		memcpy(&nonce, cap, 4);
		return nonce == c->id ? 0 : -EPROTO;
	case OP_WAIT:
		return caplen >= 1 && cap[0] == PROTO_WAIT_STOP ? 0 : -EPROTO;
	case OP_CHECK:
		return caplen >= 1 && cap[0] <= PROTO_CHECK_NOT_READY ? 1
								      : -EPROTO;
	default:
		return 0;
	}
}

/* A populating workload's reply: the fence of the last batch ends PREPARE. */
static int wl_populated_reply(struct bench_thread *t, struct bench_conn *c,
			      uint8_t op, const uint8_t *cap, unsigned caplen,
			      uint64_t now)
{
	int r = wl_check(c, op, cap, caplen);

	(void)now;
	if (r)
		return r < 0 ? r : 0;
	if (op == OP_PING && t->seen_phase == PH_PREPARE && c->id == 0 &&
	    t->wl_next >= t->b->o.keyspace && c->tn == 1 && !t->wl_acked) {
		t->wl_acked = 1;
		/* Pairs with the main thread's load in prepared(). */
		atomic_fetch_sub(&t->b->prep_left, 1);
	}
	return 0;
}

static int wl_plain_reply(struct bench_thread *t, struct bench_conn *c,
			  uint8_t op, const uint8_t *cap, unsigned caplen,
			  uint64_t now)
{
	(void)t;
	(void)now;
	int r = wl_check(c, op, cap, caplen);
	return r < 0 ? r : 0;
}

/* One heartbeat: a CHECK of this connection's key. */
static void wl_check_one(struct bench_thread *t, struct bench_conn *c)
{
	const struct bench_opts *o = &t->b->o;
	const void *key = wl_key1(t, 'k', c->id % o->keyspace);
	size_t kb = o->key_bytes;

	bench_tx_begin(t, c, 1, 1, 0);
	proto_enc_keys(&c->out, OP_CHECK, 1, &key, &kb);
	bench_expect(c, OP_CHECK, 1);
	bench_tx_end(t, c);
}

/*
 * Open-loop pacing: the credit earned since the last tick at @rate requests
 * per connection per second (at most one per connection is banked) goes
 * round-robin to connections with fewer than @depth transactions open;
 * @one queues one request on a connection.
 */
static void wl_pace(struct bench_thread *t, int phase, uint64_t now,
		    double rate, uint32_t depth,
		    void (*one)(struct bench_thread *t, struct bench_conn *c))
{
	if (phase != PH_RUN) {
		t->wl_last_ns = now;
		return;
	}
	double dt = (double)(now - t->wl_last_ns) / 1e9;
	t->wl_last_ns = now;
	t->wl_credit += dt * rate * t->nconns;
	if (t->wl_credit > t->nconns)
		t->wl_credit = t->nconns;
	for (uint32_t scanned = 0; t->wl_credit >= 1.0 && scanned < t->nconns;
	     scanned++) {
		struct bench_conn *c = &t->conns[t->wl_cursor++ % t->nconns];
		if (!bench_can_issue(c, depth))
			continue;
		one(t, c);
		t->wl_credit -= 1.0;
		scanned = 0; /* keep going while there is credit */
	}
}

/*
 * multi-*: requests per connection per second when paced (--rate or
 * --total-rate), else 0: closed loop, --pipeline requests always in flight.
 */
static double wl_multi_rate(const struct bench_opts *o)
{
	return o->total_rate > 0 ? o->total_rate / o->conns : o->rate;
}

static void wl_multi_issue(struct bench_thread *t, struct bench_conn *c,
			   int phase, uint64_t now, int mode)
{
	const struct bench_opts *o = &t->b->o;

	(void)now;
	if (c->state != CS_READY)
		return;
	if (phase == PH_PREPARE && mode != 1)
		wl_populate(t, c);
	if (phase != PH_RUN || wl_multi_rate(o) > 0)
		return; /* paced: the tick issues */
	for (uint32_t i = 0; i < o->pipeline && bench_can_issue(c, o->pipeline);
	     i++) {
		bool set = mode == 1 || (mode == 2 && bench_rand(t, 2));
		wl_multi(t, c, set);
	}
}

static void wl_get_one(struct bench_thread *t, struct bench_conn *c)
{
	wl_multi(t, c, false);
}

static void wl_set_one(struct bench_thread *t, struct bench_conn *c)
{
	wl_multi(t, c, true);
}

static void wl_mix_one(struct bench_thread *t, struct bench_conn *c)
{
	wl_multi(t, c, bench_rand(t, 2));
}

static void wl_get_tick(struct bench_thread *t, int phase, uint64_t now)
{
	const struct bench_opts *o = &t->b->o;

	if (wl_multi_rate(o) > 0)
		wl_pace(t, phase, now, wl_multi_rate(o), o->pipeline,
			wl_get_one);
}

static void wl_set_tick(struct bench_thread *t, int phase, uint64_t now)
{
	const struct bench_opts *o = &t->b->o;

	if (wl_multi_rate(o) > 0)
		wl_pace(t, phase, now, wl_multi_rate(o), o->pipeline,
			wl_set_one);
}

static void wl_mix_tick(struct bench_thread *t, int phase, uint64_t now)
{
	const struct bench_opts *o = &t->b->o;

	if (wl_multi_rate(o) > 0)
		wl_pace(t, phase, now, wl_multi_rate(o), o->pipeline,
			wl_mix_one);
}

/* mode: 0 MULTI_GET, 1 MULTI_SET, 2 half of each. */
static void wl_get_issue(struct bench_thread *t, struct bench_conn *c,
			 int phase, uint64_t now)
{
	wl_multi_issue(t, c, phase, now, 0);
}

static void wl_set_issue(struct bench_thread *t, struct bench_conn *c,
			 int phase, uint64_t now)
{
	wl_multi_issue(t, c, phase, now, 1);
}

static void wl_mix_issue(struct bench_thread *t, struct bench_conn *c,
			 int phase, uint64_t now)
{
	wl_multi_issue(t, c, phase, now, 2);
}

static void wl_ops_mix_issue(struct bench_thread *t, struct bench_conn *c,
			     int phase, uint64_t now)
{
	(void)now;
	if (c->state != CS_READY)
		return;
	if (phase == PH_PREPARE)
		wl_populate(t, c);
	else if (phase == PH_RUN)
		wl_ops_mix(t, c);
}

static int wl_ops_mix_reply(struct bench_thread *t, struct bench_conn *c,
			    uint8_t op, const uint8_t *cap, unsigned caplen,
			    uint64_t now)
{
	int r = wl_populated_reply(t, c, op, cap, caplen, now);

	if (!r && op == OP_WAIT && c->wl == OPM_GET_WAIT)
		c->wl = OPM_GET_NEXT;
	return r;
}

static void wl_rendezvous_issue(struct bench_thread *t, struct bench_conn *c,
				int phase, uint64_t now)
{
	(void)now;
	if (c->state == CS_READY && phase == PH_RUN)
		wl_rendezvous(t, c);
}

static int wl_rendezvous_reply(struct bench_thread *t, struct bench_conn *c,
			       uint8_t op, const uint8_t *cap, unsigned caplen,
			       uint64_t now)
{
	int r = wl_check(c, op, cap, caplen);

	if (r)
		return r < 0 ? r : 0;
	switch (c->wl) {
	case RV_INIT_SENT:
		c->wl = RV_COUNT;
		break;
	case RV_COUNT_SENT:
		c->wl = cap_i64(cap, caplen) == (int64_t)t->b->o.conns
				? RV_LAST
				: RV_OTHER;
		break;
	case RV_WAIT_SENT:
		c->wl = RV_GET_WAIT;
		break;
	case RV_GET_WAIT_SENT:
		c->wl = RV_GET;
		break;
	case RV_GET_SENT:
		c->wl = RV_DONE;
		t->done++;
		t->last_done_ns = now;
		hist_record(&t->lat, now - c->t_start);
		break;
	default:
		break;
	}
	return 0;
}

static void wl_fanout_issue(struct bench_thread *t, struct bench_conn *c,
			    int phase, uint64_t now)
{
	(void)now;
	if (c->state == CS_READY && (phase == PH_PREPARE || phase == PH_RUN))
		wl_fanout(t, c, phase);
}

static int wl_fanout_reply(struct bench_thread *t, struct bench_conn *c,
			   uint8_t op, const uint8_t *cap, unsigned caplen,
			   uint64_t now)
{
	int r = wl_check(c, op, cap, caplen);

	if (r)
		return r < 0 ? r : 0;
	if (op == OP_PING && t->seen_phase == PH_PREPARE)
		atomic_fetch_sub(&t->b->prep_left, 1); /* as in populate */
	if (op == OP_WAIT) {
		/* Pairs with the release store of fire_ns in wl_fanout. */
		uint64_t fire = atomic_load_explicit(&t->b->fire_ns,
						     memory_order_acquire);
		if (!fire || now < fire)
			return -EPROTO; /* woken before the SET */
		hist_record(&t->lat, now - fire);
		t->done++;
		t->last_done_ns = now;
	}
	return 0;
}

static void wl_heartbeat_issue(struct bench_thread *t, struct bench_conn *c,
			       int phase, uint64_t now)
{
	(void)now;
	/* The CHECKs themselves are issued from the tick, at --rate. */
	if (c->state == CS_READY && phase == PH_PREPARE)
		wl_populate(t, c);
}

static void wl_heartbeat_tick(struct bench_thread *t, int phase, uint64_t now)
{
	wl_pace(t, phase, now, t->b->o.rate, 1, wl_check_one);
}

static void wl_queue_issue(struct bench_thread *t, struct bench_conn *c,
			   int phase, uint64_t now)
{
	if (c->state == CS_READY && phase == PH_RUN)
		wl_queue(t, c, now);
}

static int wl_queue_reply(struct bench_thread *t, struct bench_conn *c,
			  uint8_t op, const uint8_t *cap, unsigned caplen,
			  uint64_t now)
{
	int r = wl_check(c, op, cap, caplen);
	int64_t v = cap_i64(cap, caplen);

	if (r)
		return r < 0 ? r : 0;
	if (!(c->id & 1)) {
		if (op == OP_QUEUE_LEN && v > (int64_t)t->b->o.queue_max) {
			c->wl_b = now + 2000000;
			t->wl_paused++;
		}
		return 0;
	}
	if (c->wl == QC_LEN_SENT)
		c->wl = v > 0 ? QC_POP : QC_WAIT;
	else if (c->wl == QC_WAIT_SENT)
		c->wl = QC_POP;
	else if (c->wl == QC_POP_SENT) {
		if (v <= 0)
			t->empty_pops++;
		c->wl = QC_LEN;
	}
	return 0;
}

/* Producers paused above --queue-max resume here, checked every 1 ms. */
static void wl_queue_tick(struct bench_thread *t, int phase, uint64_t now)
{
	if (phase != PH_RUN || !t->wl_paused) {
		t->wl_last_ns = now;
		return;
	}
	if (now - t->wl_last_ns < 1000000)
		return;
	t->wl_last_ns = now;
	for (uint32_t i = 0; i < t->nconns && t->wl_paused; i++) {
		struct bench_conn *c = &t->conns[i];
		if (c->wl_b && now >= c->wl_b)
			wl_queue(t, c, now);
	}
}

/* nccl-init: c->wl counts the MULTI_GETs this connection has sent. */
static void wl_nccl_issue(struct bench_thread *t, struct bench_conn *c,
			  int phase, uint64_t now)
{
	const struct bench_opts *o = &t->b->o;
	struct wl_scratch *s = t->wl_priv;

	(void)now;
	if (c->state != CS_READY)
		return;
	if (phase == PH_PREPARE) {
		wl_populate(t, c);
		return;
	}
	if (phase != PH_RUN || c->wl >= o->rounds || !bench_can_issue(c, 1))
		return;
	wl_fill_keys(t, o->keys, false, 0);
	bench_tx_begin(t, c, 1, (uint16_t)o->keys, 0);
	proto_enc_keys(&c->out, OP_MULTI_GET, o->keys, s->keys, s->klens);
	bench_expect(c, OP_MULTI_GET, (uint16_t)o->keys);
	bench_tx_end(t, c);
	c->wl++;
}

static int wl_nccl_reply(struct bench_thread *t, struct bench_conn *c,
			 uint8_t op, const uint8_t *cap, unsigned caplen,
			 uint64_t now)
{
	int r = wl_populated_reply(t, c, op, cap, caplen, now);

	if (!r && op == OP_MULTI_GET && t->seen_phase == PH_RUN &&
	    c->wl == t->b->o.rounds) {
		t->done++;
		t->last_done_ns = now;
	}
	return r;
}

#define WL_SCRATCH .thread_init = wl_thread_init, .thread_free = wl_thread_free

static const struct bench_workload wl_table[] = {
	{ .name = "multi-get",
	  .help = "MULTI_GET of --keys random keys, --pipeline in flight;\n"
		  "the key space is written first",
	  .dflt = { .keyspace = 100000 },
	  .prep_count = wl_populate_count,
	  .issue = wl_get_issue,
	  .reply = wl_populated_reply,
	  .tick = wl_get_tick,
	  WL_SCRATCH },
	{ .name = "multi-get-hot",
	  .help = "multi-get, 256 conns, pipeline 4, 1024-key space",
	  /* A small key space, which stays in the server's caches. */
	  .dflt = { .conns = 256, .pipeline = 4, .keyspace = 1024 },
	  .prep_count = wl_populate_count,
	  .issue = wl_get_issue,
	  .reply = wl_populated_reply,
	  .tick = wl_get_tick,
	  WL_SCRATCH },
	{ .name = "multi-get-wide",
	  .help = "multi-get, 256 conns, pipeline 4, 100k-key space",
	  .dflt = { .conns = 256, .pipeline = 4, .keyspace = 100000 },
	  .prep_count = wl_populate_count,
	  .issue = wl_get_issue,
	  .reply = wl_populated_reply,
	  .tick = wl_get_tick,
	  WL_SCRATCH },
	{ .name = "multi-set",
	  .help = "MULTI_SET of --keys random keys, each with a PING fence",
	  .dflt = { .keyspace = 100000 },
	  .issue = wl_set_issue,
	  .reply = wl_plain_reply,
	  .tick = wl_set_tick,
	  WL_SCRATCH },
	{ .name = "multi-mix",
	  .help = "half multi-get, half multi-set",
	  .dflt = { .keyspace = 100000 },
	  .prep_count = wl_populate_count,
	  .issue = wl_mix_issue,
	  .reply = wl_populated_reply,
	  .tick = wl_mix_tick,
	  WL_SCRATCH },
	{ .name = "ops-mix",
	  .help = "one op in flight per connection: get (WAIT+GET) 40%,\n"
		  "set 20%, add 20%, check 10%, compare_set 10%",
	  .adjust = wl_single_adjust,
	  .prep_count = wl_populate_count,
	  .issue = wl_ops_mix_issue,
	  .reply = wl_ops_mix_reply,
	  WL_SCRATCH },
	{ .name = "rendezvous",
	  .help = "every rank connects (timed), ADDs, WAITs for the last\n"
		  "rank's SET and GETs it",
	  .adjust = wl_single_adjust,
	  .issue = wl_rendezvous_issue,
	  .reply = wl_rendezvous_reply,
	  .done_target = wl_all_done,
	  .connects_in_run = true,
	  .own_latency = true,
	  WL_SCRATCH },
	{ .name = "fanout",
	  .help = "--conns WAITs on one key, then one SET wakes them all",
	  .adjust = wl_single_adjust,
	  .total_conns = wl_fanout_conns,
	  .prep_count = wl_fanout_prep,
	  .issue = wl_fanout_issue,
	  .reply = wl_fanout_reply,
	  .done_target = wl_waiters_done,
	  .own_latency = true,
	  WL_SCRATCH },
	{ .name = "heartbeat",
	  .help = "CHECK of one key per connection, --rate per connection\n"
		  "or --total-rate per second",
	  .dflt = { .conns = 64 },
	  .adjust = wl_heartbeat_adjust,
	  .prep_count = wl_populate_count,
	  .issue = wl_heartbeat_issue,
	  .reply = wl_populated_reply,
	  .tick = wl_heartbeat_tick,
	  WL_SCRATCH },
	{ .name = "heartbeat-16k",
	  .help = "heartbeat, 16000 conns, 100k CHECKs/s in total",
	  .dflt = { .conns = 16000 },
	  .adjust = wl_heartbeat16k_adjust,
	  .prep_count = wl_populate_count,
	  .issue = wl_heartbeat_issue,
	  .reply = wl_populated_reply,
	  .tick = wl_heartbeat_tick,
	  WL_SCRATCH },
	{ .name = "queue",
	  .help = "producers QUEUE_PUSH, consumers pop like PyTorch's\n"
		  "blocking queue_pop (QUEUE_LEN, WAIT, QUEUE_POP)",
	  .dflt = { .conns = 64 },
	  .adjust = wl_queue_adjust,
	  .issue = wl_queue_issue,
	  .reply = wl_queue_reply,
	  .tick = wl_queue_tick,
	  WL_SCRATCH },
	{ .name = "nccl-init",
	  .help = "NCCL's scalable init: --keys (782) values of --value-bytes\n"
		  "(128) are written, then each of --conns (2000) sends\n"
		  "--rounds (1) MULTI_GETs of all of them",
	  .dflt = { .conns = 2000, .keys = 782, .value_bytes = 128 },
	  .adjust = wl_nccl_adjust,
	  .prep_count = wl_populate_count,
	  .issue = wl_nccl_issue,
	  .reply = wl_nccl_reply,
	  .done_target = wl_all_done,
	  WL_SCRATCH },
};

const struct bench_workload *workload_find(const char *name)
{
	for (size_t i = 0; i < sizeof(wl_table) / sizeof(wl_table[0]); i++)
		if (!strcmp(name, wl_table[i].name))
			return &wl_table[i];
	return NULL;
}

void workload_usage(FILE *f)
{
	for (size_t i = 0; i < sizeof(wl_table) / sizeof(wl_table[0]); i++) {
		const char *h = wl_table[i].help;
		fprintf(f, "  %-22s  ", wl_table[i].name);
		for (; *h; h++) {
			fputc(*h, f);
			if (*h == '\n')
				fprintf(f, "  %-22s  ", "");
		}
		fputc('\n', f);
	}
}
