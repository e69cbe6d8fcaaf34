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
 * The workloads:
 *  multi-set  MULTI_SET of --keys random keys, followed by a PING fence (the
 *             op has no reply, so the fence gives back-pressure and latency);
 *             --pipeline such pairs in flight per connection.
 *  multi-get  MULTI_GET of --keys random keys, pipelined; the key space is
 *             populated first (unmeasured).
 *  multi-mix  half of each.
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
 *  heartbeat  CHECK of one key per connection, --rate times a second each.
 *  queue      even connections produce (QUEUE_PUSH + QUEUE_LEN, pausing while
 *             the queue holds more than --queue-max), odd ones consume like
 *             PyTorch's blocking queue_pop: QUEUE_LEN, WAIT when empty,
 *             QUEUE_POP.
 */
#include "workload.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"

static const char *const wl_names[] = {
#define WL_X_NAME(name, text) text,
	WORKLOADS(WL_X_NAME)
#undef WL_X_NAME
};

/* Scratch arrays for one request of up to --keys keys. */
struct wl_scratch {
	char *keybuf;             /* owned: keys * key_bytes */
	const void **keys;        /* owned */
	size_t *klens;            /* owned */
	const void **vals;        /* owned */
	size_t *vlens;            /* owned */
};

/* Per-connection states of the multi-step workloads (bench_conn.wl). */
enum {
	OPM_IDLE = 0,
	OPM_GET_WAIT, /* WAIT sent, GET follows */
	OPM_GET_NEXT, /* WAIT answered: send the GET */
};
enum {
	RV_INIT = 0, RV_INIT_SENT, RV_COUNT, RV_COUNT_SENT, RV_LAST, RV_OTHER,
	RV_WAIT_SENT, RV_GET_WAIT, RV_GET_WAIT_SENT, RV_GET, RV_GET_SENT,
	RV_DONE,
};
enum { QC_LEN = 0, QC_LEN_SENT, QC_WAIT, QC_WAIT_SENT, QC_POP, QC_POP_SENT };

int workload_parse(const char *name)
{
	for (int i = 0; i < WL__COUNT; i++)
		if (!strcmp(name, wl_names[i]))
			return i;
	return -EINVAL;
}

const char *workload_name(int w)
{
	return w >= 0 && w < WL__COUNT ? wl_names[w] : "?";
}

void workload_defaults(struct bench_opts *o)
{
	switch (o->workload) {
	case WL_MULTI_SET:
	case WL_MULTI_GET:
	case WL_MULTI_MIX:
		if (!o->keyspace)
			o->keyspace = 100000;
		break;
	case WL_QUEUE:
		if (!o->keyspace)
			o->keyspace = o->conns / 8 ? o->conns / 8 : 1;
		o->pipeline = 1;
		break;
	default:
		if (!o->keyspace)
			o->keyspace = 10000;
		o->pipeline = 1; /* one request in flight, like real clients */
		break;
	}
	if (o->workload == WL_HEARTBEAT && o->rate <= 0)
		o->rate = 1.0;
}

uint32_t workload_total_conns(const struct bench_opts *o)
{
	return o->workload == WL_FANOUT ? o->conns + 1 : o->conns;
}

static bool populates(int w)
{
	return w == WL_MULTI_GET || w == WL_MULTI_MIX || w == WL_OPS_MIX ||
	       w == WL_HEARTBEAT;
}

int64_t workload_prep_count(const struct bench_opts *o)
{
	if (populates(o->workload))
		return 1; /* connection 0 populates, then decrements */
	if (o->workload == WL_FANOUT)
		return o->conns; /* every waiter decrements once armed */
	return 0;
}

bool workload_connects_in_run(const struct bench_opts *o)
{
	return o->workload == WL_RENDEZVOUS;
}

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

int workload_thread_init(struct bench_thread *t)
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

void workload_thread_free(struct bench_thread *t)
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
		wl_key(s->keybuf + (size_t)i * o->key_bytes, o->key_bytes,
		       'k', k);
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
			c->wl_a = bench_now();
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
		atomic_store_explicit(&t->b->fire_ns, bench_now(),
				      memory_order_release);
		bench_tx_end(t, c);
	} else {
		c->wl = 0;
	}
}

static void wl_queue(struct bench_thread *t, struct bench_conn *c,
		     uint64_t now)
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
		proto_enc_key_val(&c->out, OP_QUEUE_PUSH, key, kb,
				  t->b->value, o->value_bytes);
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

void workload_issue(struct bench_thread *t, struct bench_conn *c, int phase,
		    uint64_t now)
{
	const struct bench_opts *o = &t->b->o;

	if (c->state != CS_READY)
		return;
	if (phase == PH_PREPARE) {
		if (o->workload == WL_FANOUT)
			wl_fanout(t, c, phase);
		else if (populates(o->workload))
			wl_populate(t, c);
		return;
	}
	if (phase != PH_RUN)
		return;
	switch (o->workload) {
	case WL_MULTI_SET:
	case WL_MULTI_GET:
	case WL_MULTI_MIX:
		for (uint32_t i = 0; i < o->pipeline &&
				     bench_can_issue(c, o->pipeline); i++) {
			bool set = o->workload == WL_MULTI_SET ||
				   (o->workload == WL_MULTI_MIX &&
				    bench_rand(t, 2));
			wl_multi(t, c, set);
		}
		break;
	case WL_OPS_MIX:
		wl_ops_mix(t, c);
		break;
	case WL_RENDEZVOUS:
		wl_rendezvous(t, c);
		break;
	case WL_FANOUT:
		wl_fanout(t, c, phase);
		break;
	case WL_QUEUE:
		wl_queue(t, c, now);
		break;
	default: /* heartbeat issues from workload_tick */
		break;
	}
}

static int64_t cap_i64(const uint8_t *cap, unsigned caplen)
{
	int64_t v = 0;

	if (caplen >= 8)
		memcpy(&v, cap, 8);
	return v;
}

int workload_reply(struct bench_thread *t, struct bench_conn *c, uint8_t op,
		   const uint8_t *cap, unsigned caplen, uint64_t now)
{
	const struct bench_opts *o = &t->b->o;
	int64_t v;

	switch (op) {
	case OP_PING: {
		uint32_t nonce;
		if (caplen < 4)
			return -EPROTO;
		memcpy(&nonce, cap, 4);
		if (nonce != c->id)
			return -EPROTO;
		if (t->seen_phase != PH_PREPARE)
			return 0;
		/* Populating: the fence of the last batch is the last reply. */
		if (c->id == 0 && populates(o->workload)) {
			if (t->wl_next >= o->keyspace && c->tn == 1 &&
			    !t->wl_acked) {
				t->wl_acked = 1;
				atomic_fetch_sub(&t->b->prep_left, 1);
			}
		} else if (o->workload == WL_FANOUT) {
			atomic_fetch_sub(&t->b->prep_left, 1);
		}
		return 0;
	}
	case OP_WAIT:
		if (caplen < 1 || cap[0] != PROTO_WAIT_STOP)
			return -EPROTO;
		break;
	case OP_CHECK:
		if (caplen < 1 || cap[0] > PROTO_CHECK_NOT_READY)
			return -EPROTO;
		return 0;
	default:
		break;
	}

	switch (o->workload) {
	case WL_OPS_MIX:
		if (op == OP_WAIT && c->wl == OPM_GET_WAIT)
			c->wl = OPM_GET_NEXT;
		break;
	case WL_RENDEZVOUS:
		switch (c->wl) {
		case RV_INIT_SENT:
			c->wl = RV_COUNT;
			break;
		case RV_COUNT_SENT:
			v = cap_i64(cap, caplen);
			c->wl = v == (int64_t)o->conns ? RV_LAST : RV_OTHER;
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
		break;
	case WL_FANOUT:
		if (op == OP_WAIT) {
			uint64_t fire = atomic_load_explicit(
				&t->b->fire_ns, memory_order_acquire);
			if (!fire || now < fire)
				return -EPROTO; /* woken before the SET */
			hist_record(&t->lat, now - fire);
			t->done++;
			t->last_done_ns = now;
		}
		break;
	case WL_QUEUE:
		v = cap_i64(cap, caplen);
		if (!(c->id & 1)) {
			if (op == OP_QUEUE_LEN && v > (int64_t)o->queue_max) {
				c->wl_b = now + 2000000;
				t->wl_paused++;
			}
			break;
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
		break;
	default:
		break;
	}
	return 0;
}

void workload_tick(struct bench_thread *t, int phase, uint64_t now)
{
	const struct bench_opts *o = &t->b->o;

	if (phase != PH_RUN) {
		t->wl_last_ns = now;
		return;
	}
	if (o->workload == WL_QUEUE && t->wl_paused &&
	    now - t->wl_last_ns >= 1000000) {
		t->wl_last_ns = now;
		for (uint32_t i = 0; i < t->nconns && t->wl_paused; i++) {
			struct bench_conn *c = &t->conns[i];
			if (c->wl_b && now >= c->wl_b)
				wl_queue(t, c, now);
		}
		return;
	}
	if (o->workload != WL_HEARTBEAT)
		return;
	double dt = (double)(now - t->wl_last_ns) / 1e9;
	t->wl_last_ns = now;
	t->wl_credit += dt * o->rate * t->nconns;
	if (t->wl_credit > t->nconns)
		t->wl_credit = t->nconns;
	size_t kb = o->key_bytes;
	for (uint32_t scanned = 0; t->wl_credit >= 1.0 && scanned < t->nconns;
	     scanned++) {
		struct bench_conn *c = &t->conns[t->wl_cursor++ % t->nconns];
		if (!bench_can_issue(c, 1))
			continue;
		const void *key = wl_key1(t, 'k', c->id % o->keyspace);
		bench_tx_begin(t, c, 1, 1, 0);
		proto_enc_keys(&c->out, OP_CHECK, 1, &key, &kb);
		bench_expect(c, OP_CHECK, 1);
		bench_tx_end(t, c);
		t->wl_credit -= 1.0;
	}
}
