/* SPDX-License-Identifier: MIT */
/*
 * test_table.c - unit tests for the lock-free table: single-thread
 * semantics (CAS, tombstones, growth, counters, walks, full-hash
 * collisions), then a multi-thread stress with exact final-state checks,
 * meant to run under ASan and TSan as well. A table made for one writer
 * (the store of a server with one reactor) runs the single-thread tests
 * that write in place, the stress with one writer, and a torture of its
 * sequence lock.
 */
#include "helpers.h"

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "hash.h"
#include "qsbr.h"
#include "table.h"

/* The fixture: a table of 16 slots, for any number of writers or for one
 * (f->one_writer), with the test thread registered as f->qt. */
static int setup_mode(void **state, bool one_writer)
{
	struct t_table *f = t_calloc(1, sizeof(*f));

	t_table_open(f, 16, one_writer);
	*state = f;
	return 0;
}

static int setup(void **state)
{
	return setup_mode(state, false);
}

static int setup_one_writer(void **state)
{
	return setup_mode(state, true);
}

static int teardown(void **state)
{
	struct t_table *f = *state;

	t_table_close(f);
	free(f);
	return 0;
}

static struct table_entry *mk_h(uint64_t h, const char *k, uint64_t v)
{
	return table_entry_new(h, k, strlen(k), &v, sizeof(v), NULL, 0);
}

static struct table_entry *mk(const char *k, uint64_t v)
{
	return mk_h(hash_key(k, strlen(k)), k, v);
}

static uint64_t val_of(const struct table_entry *e)
{
	uint64_t v;

	memcpy(&v, table_entry_val(e), sizeof(v));
	return v;
}

/* table_get, checked against table_get_batch: every lookup of these tests
 * (collisions, tombstones, migrations) takes both paths. */
static struct table_entry *get_h(struct t_table *f, uint64_t h, const char *k)
{
	struct table_entry *e = table_get(f->t, f->qt, h, k, strlen(k)), *b;
	const void *kp = k;
	size_t kl = strlen(k);

	table_get_batch(f->t, f->qt, 1, &h, &kp, &kl, 8, &b);
	assert_ptr_equal(b, e);
	return e;
}

static struct table_entry *get(struct t_table *f, const char *k)
{
	return get_h(f, hash_key(k, strlen(k)), k);
}

static int cas_h(struct t_table *f, uint64_t h, const char *k,
		 struct table_entry *exp, struct table_entry *des)
{
	return table_cas(f->t, f->qt, h, k, strlen(k), exp,
			 exp ? table_read_begin(exp) : 0, des);
}

static int cas(struct t_table *f, const char *k, struct table_entry *exp,
	       struct table_entry *des)
{
	return cas_h(f, hash_key(k, strlen(k)), k, exp, des);
}

/* Unconditional set through a CAS loop, as the op layer does it. */
static void set(struct t_table *f, const char *k, uint64_t v)
{
	for (;;) {
		struct table_entry *cur = get(f, k), *n = mk(k, v);
		int r;

		assert_non_null(n);
		r = cas(f, k, cur, n);
		if (r == 0)
			return;
		assert_int_equal(r, -EAGAIN);
		table_entry_unref(n);
	}
}

static void del(struct t_table *f, const char *k)
{
	struct table_entry *cur = get(f, k);

	assert_non_null(cur);
	assert_int_equal(cas(f, k, cur, NULL), 0);
}

static void test_basic(void **state)
{
	struct t_table *f = *state;
	struct table_entry *e, *n;

	assert_null(get(f, "a"));
	set(f, "a", 1);
	e = get(f, "a");
	assert_non_null(e);
	assert_int_equal(e->klen, 1);
	assert_memory_equal(table_entry_key(e), "a", 1);
	assert_int_equal(val_of(e), 1);
	/* Replace. */
	n = mk("a", 2);
	assert_int_equal(cas(f, "a", e, n), 0);
	assert_ptr_equal(get(f, "a"), n);
	assert_int_equal(val_of(get(f, "a")), 2);
	/* Delete, then delete again (absent, expected NULL: no-op). */
	del(f, "a");
	assert_null(get(f, "a"));
	assert_int_equal(cas(f, "a", NULL, NULL), 0);
	assert_int_equal(table_count(f->t), 0);
	qsbr_quiescent(f->qt);
}

static void test_cas_mismatch(void **state)
{
	struct t_table *f = *state;
	struct table_entry *e, *n, *stale;

	set(f, "k", 1);
	e = get(f, "k");
	/* Insert over a present key. */
	n = mk("k", 9);
	assert_int_equal(cas(f, "k", NULL, n), -EAGAIN);
	/* Replace with a stale expected entry. */
	stale = mk("k", 7);
	assert_int_equal(cas(f, "k", stale, n), -EAGAIN);
	/* Delete with a stale expected entry. */
	assert_int_equal(cas(f, "k", stale, NULL), -EAGAIN);
	/* Expecting a value for an absent key. */
	assert_int_equal(cas(f, "nope", stale, NULL), -EAGAIN);
	assert_ptr_equal(get(f, "k"), e);
	assert_int_equal(val_of(get(f, "k")), 1);
	/* After a failure, @desired still belongs to us; use it now. */
	assert_int_equal(cas(f, "k", e, n), 0);
	assert_int_equal(val_of(get(f, "k")), 9);
	/* The old entry is no longer expected. */
	assert_int_equal(cas(f, "k", e, NULL), -EAGAIN);
	table_entry_unref(stale);
	assert_int_equal(table_count(f->t), 1);
}

static int put_h(struct t_table *f, uint64_t h, const char *k, uint64_t v)
{
	struct table_entry *n = mk_h(h, k, v);

	assert_non_null(n);
	return table_put(f->t, f->qt, h, k, strlen(k), n);
}

/* table_put: insert, replace whatever is live, re-insert over a tombstone,
 * and keep keys with one hash apart; the counters follow. */
static void test_put(void **state)
{
	struct t_table *f = *state;
	uint64_t h = hash_key("p", 1);
	struct table_entry *first;

	assert_int_equal(put_h(f, h, "p", 1), 0);
	first = get(f, "p");
	assert_non_null(first);
	assert_int_equal(val_of(first), 1);
	assert_int_equal(table_count(f->t), 1);
	assert_int_equal(table_bytes(f->t), 1 + 8);
	assert_int_equal(put_h(f, h, "p", 2), 0);
	assert_ptr_not_equal(get(f, "p"), first);
	assert_int_equal(val_of(get(f, "p")), 2);
	assert_int_equal(table_count(f->t), 1);
	assert_int_equal(table_bytes(f->t), 1 + 8);
	/* A CAS expecting the replaced entry now fails. */
	assert_int_equal(cas(f, "p", first, NULL), -EAGAIN);
	del(f, "p");
	assert_null(get(f, "p"));
	assert_int_equal(table_count(f->t), 0);
	assert_int_equal(put_h(f, h, "p", 3), 0);
	assert_int_equal(val_of(get(f, "p")), 3);
	/* Same hash, other key: a slot of its own. */
	assert_int_equal(put_h(f, h, "q", 4), 0);
	assert_int_equal(put_h(f, h, "q", 5), 0);
	assert_int_equal(val_of(get_h(f, h, "p")), 3);
	assert_int_equal(val_of(get_h(f, h, "q")), 5);
	assert_int_equal(table_count(f->t), 2);
	/* Through growth: every put is found, last value wins. */
	for (int round = 0; round < 2; round++) {
		for (int i = 0; i < 3000; i++) {
			char k[24];

			snprintf(k, sizeof(k), "grow-%d", i);
			assert_int_equal(put_h(f, hash_key(k, strlen(k)), k,
					       (uint64_t)(i + round)),
					 0);
		}
		qsbr_quiescent(f->qt);
	}
	for (int i = 0; i < 3000; i++) {
		char k[24];

		snprintf(k, sizeof(k), "grow-%d", i);
		assert_int_equal(val_of(get(f, k)), (uint64_t)i + 1);
	}
	assert_int_equal(table_count(f->t), 3002);
}

static void test_growth(void **state)
{
	struct t_table *f = *state;
	const int n = 20000;
	char k[32];

	for (int i = 0; i < n; i++) {
		snprintf(k, sizeof(k), "key-%d", i);
		set(f, k, (uint64_t)i * 3);
		if (i % 100 == 0)
			qsbr_quiescent(f->qt);
		/* Spot-check earlier keys while arrays are migrating. */
		if (i % 97 == 0) {
			snprintf(k, sizeof(k), "key-%d", i / 2);
			assert_non_null(get(f, k));
			assert_int_equal(val_of(get(f, k)),
					 (uint64_t)(i / 2) * 3);
		}
	}
	for (int i = 0; i < n; i++) {
		struct table_entry *e;

		snprintf(k, sizeof(k), "key-%d", i);
		e = get(f, k);
		assert_non_null(e);
		assert_int_equal(val_of(e), (uint64_t)i * 3);
	}
	assert_int_equal(table_count(f->t), n);
	/* Delete the odd ones, across further migrations. */
	for (int i = 1; i < n; i += 2) {
		snprintf(k, sizeof(k), "key-%d", i);
		del(f, k);
		if (i % 101 == 0)
			qsbr_quiescent(f->qt);
	}
	for (int i = 0; i < n; i++) {
		snprintf(k, sizeof(k), "key-%d", i);
		if (i % 2)
			assert_null(get(f, k));
		else
			assert_int_equal(val_of(get(f, k)), (uint64_t)i * 3);
	}
	assert_int_equal(table_count(f->t), n / 2);
	qsbr_quiescent(f->qt);
}

static void test_tombstone_reuse(void **state)
{
	struct t_table *f = *state;
	char k[32];

	/* A key deleted and re-inserted many times, among neighbours, in a
	 * table that starts at 16 slots: tombstones must be reused or
	 * cleaned so the churn does not grow without bound. */
	for (int i = 0; i < 5; i++) {
		snprintf(k, sizeof(k), "n%d", i);
		set(f, k, (uint64_t)i);
	}
	for (int r = 0; r < 20000; r++) {
		snprintf(k, sizeof(k), "churn%d", r % 7);
		assert_int_equal(cas(f, k, NULL, mk(k, (uint64_t)r)), 0);
		assert_int_equal(val_of(get(f, k)), (uint64_t)r);
		del(f, k);
		assert_null(get(f, k));
		if (r % 64 == 0)
			qsbr_quiescent(f->qt);
	}
	assert_int_equal(table_count(f->t), 5);
	/* Distinct keys inserted and deleted: tombstones pile up and are
	 * dropped by same-size migrations, without losing the neighbours. */
	for (int r = 0; r < 20000; r++) {
		snprintf(k, sizeof(k), "gone%d", r);
		assert_int_equal(cas(f, k, NULL, mk(k, (uint64_t)r)), 0);
		del(f, k);
		if (r % 64 == 0)
			qsbr_quiescent(f->qt);
	}
	assert_int_equal(table_count(f->t), 5);
	assert_int_equal(table_bytes(f->t), 5 * (2 + 8));
	for (int i = 0; i < 5; i++) {
		snprintf(k, sizeof(k), "n%d", i);
		assert_int_equal(val_of(get(f, k)), (uint64_t)i);
	}
	assert_null(get(f, "gone7"));
	/* Everything retired along the way is reclaimed promptly. */
	qsbr_quiescent(f->qt);
	qsbr_quiescent(f->qt);
	assert_int_equal(qsbr_pending(f->q), 0);
}

static void test_count_bytes(void **state)
{
	struct t_table *f = *state;
	size_t want = 0;
	char k[32];

	for (int i = 0; i < 1000; i++) {
		snprintf(k, sizeof(k), "b%d", i);
		set(f, k, 1);
		want += strlen(k) + 8;
	}
	assert_int_equal(table_count(f->t), 1000);
	assert_int_equal(table_bytes(f->t), want);
	/* Replacing with a longer value changes bytes, not count. */
	{
		struct table_entry *e = get(f, "b5");
		struct table_entry *n = table_entry_new(
			e->hash, "b5", 2, "0123456789", 10, "xy", 2);

		assert_int_equal(n->vlen, 12);
		assert_memory_equal(table_entry_val(n), "0123456789xy", 12);
		assert_int_equal(cas(f, "b5", e, n), 0);
		want += 12 - 8;
	}
	assert_int_equal(table_count(f->t), 1000);
	assert_int_equal(table_bytes(f->t), want);
	for (int i = 0; i < 1000; i += 3) {
		snprintf(k, sizeof(k), "b%d", i);
		want -= strlen(k) + (i == 5 ? 12 : 8);
		del(f, k);
	}
	assert_int_equal(table_count(f->t), 1000 - 334);
	assert_int_equal(table_bytes(f->t), want);
}

struct walk {
	unsigned char seen[4000];
	int calls;
	int stop_at;
};

static int walk_cb(struct table_entry *e, void *arg)
{
	struct walk *w = arg;
	char k[32];
	int i;

	memcpy(k, table_entry_key(e), e->klen);
	k[e->klen] = 0;
	if (sscanf(k, "w%d", &i) != 1 || i < 0 || i >= 4000)
		return -1000;
	w->seen[i]++;
	w->calls++;
	return w->calls == w->stop_at ? 42 : 0;
}

static void test_foreach(void **state)
{
	struct t_table *f = *state;
	struct walk *w = t_calloc(1, sizeof(*w));
	char k[32];

	for (int i = 0; i < 4000; i++) {
		snprintf(k, sizeof(k), "w%d", i);
		set(f, k, (uint64_t)i);
	}
	for (int i = 0; i < 4000; i += 4) {
		snprintf(k, sizeof(k), "w%d", i);
		del(f, k);
	}
	/* Freshly grown (migration may be in progress): each key once. */
	assert_int_equal(table_foreach(f->t, f->qt, walk_cb, w), 0);
	assert_int_equal(w->calls, 3000);
	for (int i = 0; i < 4000; i++)
		assert_int_equal(w->seen[i], i % 4 ? 1 : 0);
	/* Early stop returns the callback's value. */
	memset(w, 0, sizeof(*w));
	w->stop_at = 10;
	assert_int_equal(table_foreach(f->t, f->qt, walk_cb, w), 42);
	assert_int_equal(w->calls, 10);
	free(w);
}

/*
 * table_get_batch gives table_get's answers for full batches of present,
 * deleted and never-set keys, while arrays grow and migrate, and with
 * colliding hashes, where the slot its prefetch finds holds another key.
 */
static void batch_check(struct t_table *f, int first, int n, int step)
{
	char ks[TABLE_BATCH_MAX][32];
	const void *kp[TABLE_BATCH_MAX] = { 0 };
	size_t kl[TABLE_BATCH_MAX] = { 0 };
	uint64_t h[TABLE_BATCH_MAX] = { 0 };
	struct table_entry *e[TABLE_BATCH_MAX];
	struct table_prefetch pf;
	size_t m = 0;

	table_prefetch_begin(f->t, &pf);
	for (int i = first; i < n && m < TABLE_BATCH_MAX; i += step, m++) {
		snprintf(ks[m], sizeof(ks[m]), "key-%d", i);
		kp[m] = ks[m];
		kl[m] = strlen(ks[m]);
		h[m] = hash_key(ks[m], kl[m]);
		table_prefetch_slot(&pf, h[m]);
	}
	table_get_batch(f->t, f->qt, m, h, kp, kl, 8, e);
	for (size_t j = 0; j < m; j++)
		assert_ptr_equal(e[j],
				 table_get(f->t, f->qt, h[j], kp[j], kl[j]));
}

static void test_get_batch(void **state)
{
	struct t_table *f = *state;
	const int n = 20000;
	const uint64_t h = 777;
	const char *same[] = { "a", "b", "c", "d", "e" };
	char k[32];

	for (int i = 0; i < n; i++) {
		snprintf(k, sizeof(k), "key-%d", i);
		set(f, k, (uint64_t)i);
		if (i % 100 == 0)
			qsbr_quiescent(f->qt);
		if (i % 37 == 0) /* half of them not set yet */
			batch_check(f, i / 2, i + 16, (i + 16) / 16 | 1);
	}
	for (int i = 0; i < n; i += 3) {
		snprintf(k, sizeof(k), "key-%d", i);
		del(f, k);
		if (i % 53 == 0)
			batch_check(f, i % 16, n, 7);
	}
	for (int i = 0; i < n; i += 16)
		batch_check(f, i, n, 1);
	/* Five keys of one hash: each lookup's prefetch stops at the first
	 * slot with the tag, mostly another key's. */
	for (size_t j = 0; j < 5; j++)
		assert_int_equal(
			cas_h(f, h, same[j], NULL, mk_h(h, same[j], j + 1)), 0);
	assert_int_equal(cas_h(f, h, "c", get_h(f, h, "c"), NULL), 0);
	{
		const void *kp[6] = { "e", "d", "c", "b", "a", "z" };
		size_t kl[6] = { 1, 1, 1, 1, 1, 1 };
		uint64_t hs[6] = { h, h, h, h, h, h };
		struct table_entry *e[6];

		table_get_batch(f->t, f->qt, 6, hs, kp, kl, 8, e);
		for (size_t j = 0; j < 6; j++) {
			if (j == 2 || j == 5) {
				assert_null(e[j]);
				continue;
			}
			assert_non_null(e[j]);
			assert_int_equal(val_of(e[j]), 5 - j);
		}
	}
	qsbr_quiescent(f->qt);
}

/*
 * table_set_batch against a model of the store: batches of up to
 * TABLE_BATCH_MAX pairs (the same key twice in a batch, values whose
 * length changes or stays, keys of one hash whose prefetch finds another
 * key's slot) while the array grows and keys are deleted. Every key must
 * read back as the model says; with a table that does not grow, each pair
 * over a live value of the same length must be written in place (the same
 * entry), and the batch must count exactly those.
 */
struct set_model {
	char val[600][8];
	size_t vlen[600]; /* 0: absent */
};

static uint64_t model_hash(int i, const char *k)
{
	return i % 50 == 0 ? 777 : hash_key(k, strlen(k)); /* 12 share one */
}

/* Key i reads back as the model says (absent, or its value). */
static void model_check_key(struct t_table *f, const struct set_model *md,
			    int i)
{
	char k[16];
	struct table_entry *e;

	snprintf(k, sizeof(k), "key-%d", i);
	e = get_h(f, model_hash(i, k), k);
	if (!md->vlen[i]) {
		assert_null(e);
		return;
	}
	assert_non_null(e);
	assert_int_equal(e->vlen, md->vlen[i]);
	assert_memory_equal(table_entry_val(e), md->val[i], md->vlen[i]);
}

static void set_batch_rounds(struct t_table *f, struct set_model *md, int n,
			     int rounds, bool exact, unsigned *seed)
{
	char ks[TABLE_BATCH_MAX][16], vs[TABLE_BATCH_MAX][8];
	const void *kp[TABLE_BATCH_MAX], *vp[TABLE_BATCH_MAX];
	size_t kl[TABLE_BATCH_MAX], vl[TABLE_BATCH_MAX];
	uint64_t h[TABLE_BATCH_MAX];
	int idx[TABLE_BATCH_MAX];

	for (int r = 0; r < rounds; r++) {
		size_t m = 1 + (size_t)rand_r(seed) % TABLE_BATCH_MAX, done;
		struct table_entry *before[TABLE_BATCH_MAX];
		bool live_same[TABLE_BATCH_MAX];
		int expect_in_place = 0, got;
		struct table_prefetch pf;

		table_prefetch_begin(f->t, &pf);
		for (size_t j = 0; j < m; j++) {
			/* A repeat of the batch's previous key now and then. */
			int i = j && rand_r(seed) % 8 == 0 ? idx[j - 1]
							   : rand_r(seed) % n;

			idx[j] = i;
			snprintf(ks[j], sizeof(ks[j]), "key-%d", i);
			kp[j] = ks[j];
			kl[j] = strlen(ks[j]);
			vl[j] = 1 + (size_t)rand_r(seed) % 3; /* 1 to 3 */
			for (size_t b = 0; b < vl[j]; b++)
				vs[j][b] = (char)('a' + rand_r(seed) % 26);
			vp[j] = vs[j];
			h[j] = model_hash(i, ks[j]);
			table_prefetch_slot(&pf, h[j]);
		}
		/* What the table holds before, applied in order. */
		for (size_t j = 0; j < m; j++) {
			int i = idx[j];

			live_same[j] = md->vlen[i] == vl[j];
			before[j] = table_get(f->t, f->qt, h[j], kp[j], kl[j]);
			expect_in_place += live_same[j];
			md->vlen[i] = vl[j];
			memcpy(md->val[i], vs[j], vl[j]);
		}
		got = table_set_batch(f->t, f->qt, m, h, kp, kl, vp, vl, &done);
		assert_int_equal(done, m);
		assert_true(got >= 0 && got <= expect_in_place);
		if (exact) {
			assert_int_equal(got, expect_in_place);
			for (size_t j = 0; j < m; j++) {
				struct table_entry *e = table_get(
					f->t, f->qt, h[j], kp[j], kl[j]);
				bool once = true;

				/* A key set twice may end in the batch's own
				 * entry. */
				for (size_t b = 0; b < m; b++)
					once = once &&
					       (b == j || idx[b] != idx[j]);
				if (live_same[j] && once)
					assert_ptr_equal(e, before[j]);
			}
		}
		for (size_t j = 0; j < m; j++)
			model_check_key(f, md, idx[j]);
		if (r % 16 == 0) { /* delete a key */
			int i = rand_r(seed) % n;
			char k[16];

			snprintf(k, sizeof(k), "key-%d", i);
			if (md->vlen[i]) {
				uint64_t hk = model_hash(i, k);

				assert_int_equal(cas_h(f, hk, k,
						       get_h(f, hk, k), NULL),
						 0);
				md->vlen[i] = 0;
			}
		}
		if (r % 8 == 0)
			qsbr_quiescent(f->qt);
	}
	for (int i = 0; i < n; i++)
		model_check_key(f, md, i);
}

static void test_set_batch(void **state)
{
	struct t_table *f = *state;
	struct set_model *md = t_calloc(1, sizeof(*md));
	struct table *grown = f->t;
	unsigned seed = 12345;

	/* From 16 slots to 1,024 and more: writes meet arrays that migrate. */
	set_batch_rounds(f, md, 600, 3000, false, &seed);
	/* Room for every key: no growth, so every write that can be in place
	 * must be. */
	f->t = table_create(f->q, 2048, f->one_writer);
	assert_non_null(f->t);
	memset(md, 0, sizeof(*md));
	set_batch_rounds(f, md, 600, 600, false, &seed); /* fill */
	set_batch_rounds(f, md, 600, 3000, true, &seed);
	table_destroy(f->t);
	f->t = grown;
	qsbr_quiescent(f->qt);
	free(md);
}

static void test_hash_collision(void **state)
{
	struct t_table *f = *state;
	const uint64_t h = 12345; /* same full hash for distinct keys */

	assert_int_equal(cas_h(f, h, "x", NULL, mk_h(h, "x", 1)), 0);
	assert_int_equal(cas_h(f, h, "y", NULL, mk_h(h, "y", 2)), 0);
	assert_int_equal(cas_h(f, 0, "z", NULL, mk_h(0, "z", 3)), 0);
	assert_int_equal(cas_h(f, 2, "w", NULL, mk_h(2, "w", 4)), 0);
	assert_int_equal(val_of(get_h(f, h, "x")), 1);
	assert_int_equal(val_of(get_h(f, h, "y")), 2);
	assert_int_equal(val_of(get_h(f, 0, "z")), 3);
	assert_int_equal(val_of(get_h(f, 2, "w")), 4);
	assert_null(get_h(f, h, "q"));
	/* Deleting x leaves a tombstone that y must not take over. */
	assert_int_equal(cas_h(f, h, "x", get_h(f, h, "x"), NULL), 0);
	assert_null(get_h(f, h, "x"));
	assert_int_equal(val_of(get_h(f, h, "y")), 2);
	{
		struct table_entry *y5 = mk_h(h, "y", 5);

		assert_int_equal(cas_h(f, h, "y", NULL, y5), -EAGAIN);
		table_entry_unref(y5);
	}
	assert_int_equal(cas_h(f, h, "q", NULL, mk_h(h, "q", 6)), 0);
	assert_int_equal(cas_h(f, h, "x", NULL, mk_h(h, "x", 7)), 0);
	assert_int_equal(val_of(get_h(f, h, "x")), 7);
	assert_int_equal(val_of(get_h(f, h, "y")), 2);
	assert_int_equal(val_of(get_h(f, h, "q")), 6);
	assert_int_equal(table_count(f->t), 5);
}

static int set_s(struct t_table *f, const char *k, const char *v)
{
	return table_set(f->t, f->qt, hash_key(k, strlen(k)), k, strlen(k), v,
			 strlen(v));
}

static void expect_str(struct t_table *f, const char *k, const char *v)
{
	struct table_entry *e = get(f, k);
	char buf[64] = { 0 };

	assert_non_null(e);
	assert_int_equal(e->vlen, strlen(v));
	table_entry_read_val(e, buf, sizeof(buf));
	assert_string_equal(buf, v);
}

/* table_set: a value of the same length is written into the live entry;
 * another length, a missing key or a tombstone gets a new entry; the
 * counters follow either way. */
static void test_set_in_place(void **state)
{
	struct t_table *f = *state;
	struct table_entry *e;
	char big[TABLE_INPLACE_MAX];

	assert_int_equal(set_s(f, "s", "abc"), 0); /* insert */
	e = get(f, "s");
	assert_int_equal(set_s(f, "s", "xyz"), 1); /* same length */
	assert_ptr_equal(get(f, "s"), e);
	expect_str(f, "s", "xyz");
	assert_int_equal(set_s(f, "s", "longer"), 0); /* new entry */
	assert_ptr_not_equal(get(f, "s"), e);
	expect_str(f, "s", "longer");
	assert_int_equal(table_count(f->t), 1);
	assert_int_equal(table_bytes(f->t), 1 + 6);
	assert_int_equal(cas(f, "s", get(f, "s"), NULL), 0); /* delete */
	assert_int_equal(set_s(f, "s", "gone!!"), 0); /* over a tombstone */
	expect_str(f, "s", "gone!!");
	assert_int_equal(table_count(f->t), 1);
	/* Values that may go out by reference are never rewritten. */
	memset(big, 'b', sizeof(big));
	assert_int_equal(table_set(f->t, f->qt, hash_key("b", 1), "b", 1, big,
				   sizeof(big)),
			 0);
	e = get(f, "b");
	memset(big, 'c', sizeof(big));
	assert_int_equal(table_set(f->t, f->qt, hash_key("b", 1), "b", 1, big,
				   sizeof(big)),
			 0);
	assert_ptr_not_equal(get(f, "b"), e);
	assert_int_equal(table_entry_val(get(f, "b"))[0], 'c');
}

/*
 * Every key and value length from 0 to 80 bytes (the inline copies switch
 * at 8, 16, 32 and 64), through a new entry and then a write in place: the
 * bytes read back are the bytes written, and the key before the value is
 * intact.
 */
static void test_copy_lengths(void **state)
{
	struct t_table *f = *state;
	/* Room for all 81 keys: a table that grows refuses writes in place
	 * while it migrates. */
	struct table *t = table_create(f->q, 256, f->one_writer);
	uint8_t key[80] = { 0 }, val[80] = { 0 };

	assert_non_null(t);
	for (size_t n = 0; n <= 80; n++) {
		uint64_t h;
		struct table_entry *e;

		for (size_t i = 0; i < n; i++) {
			key[i] = (uint8_t)('k' + i);
			val[i] = (uint8_t)(n * 7 + i);
		}
		h = hash_key(key, n);
		assert_int_equal(table_set(t, f->qt, h, key, n, val, n), 0);
		for (size_t i = 0; i < n; i++)
			val[i] = (uint8_t)~val[i];
		/* Same length: in place (an empty value is no exception). */
		assert_int_equal(table_set(t, f->qt, h, key, n, val, n), 1);
		e = table_get(t, f->qt, h, key, n);
		assert_non_null(e);
		assert_int_equal(e->klen, n);
		assert_int_equal(e->vlen, n);
		assert_memory_equal(e->data, key, n);
		assert_memory_equal(table_entry_val(e), val, n);
	}
	assert_int_equal(table_count(t), 81);
	table_destroy(t);
}

/* A read-modify-write that read a value must fail if the value was
 * rewritten in place meanwhile, although the entry is the same (ABA). */
static void test_cas_after_write_in_place(void **state)
{
	struct t_table *f = *state;
	uint64_t h = hash_key("c", 1);
	struct table_entry *cur, *n;
	char v[4] = { 0 };
	uint32_t seq;

	assert_int_equal(set_s(f, "c", "100"), 0);
	cur = get(f, "c");
	seq = table_entry_read_val(cur, v, sizeof(v));
	assert_memory_equal(v, "100", 3);
	assert_int_equal(set_s(f, "c", "555"), 1); /* in place */
	assert_ptr_equal(get(f, "c"), cur);
	n = table_entry_new(h, "c", 1, "101", 3, NULL, 0);
	assert_non_null(n);
	assert_int_equal(table_cas(f->t, f->qt, h, "c", 1, cur, seq, n),
			 -EAGAIN);
	expect_str(f, "c", "555");
	/* Read again: now it succeeds. */
	seq = table_entry_read_val(cur, v, sizeof(v));
	assert_int_equal(table_cas(f->t, f->qt, h, "c", 1, cur, seq, n), 0);
	expect_str(f, "c", "101");
	/* And the replaced entry takes no more writes in place. */
	assert_int_equal(set_s(f, "c", "777"), 1);
	assert_ptr_equal(get(f, "c"), n);
	expect_str(f, "c", "777");
}

/*
 * Stress: writers do CAS-loop increments of shared counters and insert,
 * replace and delete their own keys; readers read all of it. The table
 * starts at 16 slots so it grows many times during the run.
 */
#define S_WRITERS 4
#define S_READERS 2
#define S_ITERS 6000
#define S_COUNTERS 8
#define S_WORDS 8 /* words in the shared key's value */

struct stress {
	struct t_table tab;
	int nwriters; /* up to S_WRITERS */
	_Atomic int writers_left;
	_Atomic int bad;
	_Atomic uint64_t incs[S_COUNTERS];
	_Atomic uint64_t in_place; /* shared-key writes done in place */
	_Atomic uint64_t torn;     /* shared-key reads seen mixed */
};

static struct stress g;

static void key_of(char *k, size_t n, int thr, int i)
{
	snprintf(k, n, "t%d/key-%d", thr, i);
}

/* Own key i: inserted at step i with value i, replaced by i + 1000000 when
 * i % 5 == 1, deleted at step i + 1 when i % 3 == 0 (so keys i with
 * i % 3 == 0 survive only if i is the last one). */
static bool expect_present(int i)
{
	return i % 3 != 0 || i == S_ITERS - 1;
}

static uint64_t expect_val(int i)
{
	return i % 5 == 1 ? (uint64_t)i + 1000000 : (uint64_t)i;
}

static uint64_t sval(const struct table_entry *e)
{
	uint64_t v;

	memcpy(&v, table_entry_val(e), sizeof(v));
	return v;
}

static void s_fail(void)
{
	atomic_fetch_add(&g.bad, 1);
}

static struct table_entry *s_new(const char *k, uint64_t v)
{
	struct table_entry *e = mk(k, v);

	if (!e)
		s_fail();
	return e;
}

static void *writer(void *arg)
{
	int id = (int)(intptr_t)arg;
	struct qsbr_thread *qt = qsbr_register(g.tab.q);
	char k[48];

	if (!qt) {
		s_fail();
		return NULL;
	}
	for (int i = 0; i < S_ITERS; i++) {
		int c = (i + id) % S_COUNTERS;
		uint64_t h;

		/* Increment counter c. */
		snprintf(k, sizeof(k), "counter-%d", c);
		h = hash_key(k, strlen(k));
		for (;;) {
			struct table_entry *cur =
				table_get(g.tab.t, qt, h, k, strlen(k));
			uint64_t v = 0;
			uint32_t seq =
				cur ? table_entry_read_val(cur, &v, sizeof(v))
				    : 0;
			struct table_entry *n = s_new(k, v + 1);
			int r;

			if (!n)
				break;
			r = table_cas(g.tab.t, qt, h, k, strlen(k), cur, seq,
				      n);
			if (r == 0)
				break;
			table_entry_unref(n);
			if (r != -EAGAIN) {
				s_fail();
				break;
			}
		}
		atomic_fetch_add_explicit(&g.incs[c], 1, memory_order_relaxed);

		/* Insert own key i. */
		key_of(k, sizeof(k), id, i);
		h = hash_key(k, strlen(k));
		{
			struct table_entry *n = s_new(k, (uint64_t)i);

			if (n &&
			    table_cas(g.tab.t, qt, h, k, strlen(k), NULL, 0, n))
				s_fail();
		}
		/* Replace it for some i: by CAS, or every other time by an
		 * unconditional put. */
		if (i % 5 == 1) {
			struct table_entry *cur =
				table_get(g.tab.t, qt, h, k, strlen(k));
			struct table_entry *n = s_new(k, expect_val(i));

			if (!cur || sval(cur) != (uint64_t)i)
				s_fail();
			if (n &&
			    (i % 10 == 1 ? table_put(g.tab.t, qt, h, k,
						     strlen(k), n)
					 : table_cas(g.tab.t, qt, h, k,
						     strlen(k), cur,
						     table_read_begin(cur), n)))
				s_fail();
		}
		/* Everyone writes the shared key, a value of S_WORDS equal
		 * words: in place (table_set, table_set_batch), or as a new
		 * entry (table_put) that races with the writes in place. The
		 * last write wins. */
		if (i % 4 == 0) {
			uint64_t w[S_WORDS];
			uint64_t sh = hash_key("shared-put", 10);

			for (int j = 0; j < S_WORDS; j++)
				w[j] = (uint64_t)i;
			if (i % 8 == 0) {
				/* Every other one through table_set_batch,
				 * which starts at the slot its prefetch saw. */
				const void *kp = "shared-put", *vp = w;
				size_t kl = 10, vl = sizeof(w), done;
				int r = i % 16 ? table_set(g.tab.t, qt, sh, kp,
							   kl, w, sizeof(w))
					       : table_set_batch(g.tab.t, qt, 1,
								 &sh, &kp, &kl,
								 &vp, &vl,
								 &done);

				if (r < 0)
					s_fail();
				atomic_fetch_add(&g.in_place, (uint64_t)r);
			} else {
				struct table_entry *n =
					table_entry_new(sh, "shared-put", 10, w,
							sizeof(w), NULL, 0);

				if (!n || table_put(g.tab.t, qt, sh,
						    "shared-put", 10, n))
					s_fail();
			}
		}
		/* Delete the previous key for some i. */
		if (i > 0 && (i - 1) % 3 == 0) {
			struct table_entry *cur;

			key_of(k, sizeof(k), id, i - 1);
			h = hash_key(k, strlen(k));
			cur = table_get(g.tab.t, qt, h, k, strlen(k));
			if (!cur || sval(cur) != expect_val(i - 1))
				s_fail();
			if (table_cas(g.tab.t, qt, h, k, strlen(k), cur,
				      cur ? table_read_begin(cur) : 0, NULL))
				s_fail();
			if (table_get(g.tab.t, qt, h, k, strlen(k)))
				s_fail();
		}
		/* Every earlier surviving key of ours is still there. */
		if (i > 10) {
			int j = (i * 7919) % (i - 2);

			key_of(k, sizeof(k), id, j);
			h = hash_key(k, strlen(k));
			struct table_entry *cur =
				table_get(g.tab.t, qt, h, k, strlen(k));
			if (expect_present(j) != (cur != NULL) ||
			    (cur && sval(cur) != expect_val(j)))
				s_fail();
		}
		if (i % 32 == 0)
			qsbr_quiescent(qt);
	}
	qsbr_unregister(qt);
	atomic_fetch_sub(&g.writers_left, 1);
	return NULL;
}

/* Own key @i's entry @e (looked up as @k): its key, and a value it has
 * had. */
static bool own_ok(const struct table_entry *e, const char *k, int i)
{
	uint64_t v = sval(e);

	return e->klen == strlen(k) &&
	       !memcmp(table_entry_key(e), k, e->klen) &&
	       (v == (uint64_t)i || v == (uint64_t)i + 1000000);
}

/* TABLE_BATCH_MAX own keys of one writer around step n % S_ITERS, in one
 * table_get_batch. */
static void reader_batch(struct qsbr_thread *qt, unsigned n)
{
	char ks[TABLE_BATCH_MAX][48];
	const void *kp[TABLE_BATCH_MAX];
	size_t kl[TABLE_BATCH_MAX];
	uint64_t h[TABLE_BATCH_MAX];
	struct table_entry *e[TABLE_BATCH_MAX];
	int id = (int)(n / 7 % (unsigned)g.nwriters), i0 = (int)(n % S_ITERS);
	struct table_prefetch pf;

	table_prefetch_begin(g.tab.t, &pf);
	for (int j = 0; j < TABLE_BATCH_MAX; j++) {
		key_of(ks[j], sizeof(ks[j]), id, (i0 + j) % S_ITERS);
		kp[j] = ks[j];
		kl[j] = strlen(ks[j]);
		h[j] = hash_key(ks[j], kl[j]);
		table_prefetch_slot(&pf, h[j]);
	}
	table_get_batch(g.tab.t, qt, TABLE_BATCH_MAX, h, kp, kl, 8, e);
	for (int j = 0; j < TABLE_BATCH_MAX; j++)
		if (e[j] && !own_ok(e[j], ks[j], (i0 + j) % S_ITERS))
			s_fail();
}

static void *reader(void *arg)
{
	struct qsbr_thread *qt = qsbr_register(g.tab.q);
	uint64_t last[S_COUNTERS] = { 0 };
	unsigned n = (unsigned)(intptr_t)arg;
	char k[48];

	if (!qt) {
		s_fail();
		return NULL;
	}
	while (atomic_load(&g.writers_left) > 0) {
		int c = (int)(n % S_COUNTERS);
		uint64_t h;
		struct table_entry *e;

		/* Counters never go backwards for one observer. */
		snprintf(k, sizeof(k), "counter-%d", c);
		h = hash_key(k, strlen(k));
		e = table_get(g.tab.t, qt, h, k, strlen(k));
		if (e) {
			uint64_t v;

			table_entry_read_val(e, &v, sizeof(v));
			if (v < last[c] || e->klen != strlen(k) ||
			    memcmp(table_entry_key(e), k, e->klen))
				s_fail();
			last[c] = v;
		}
		/* The shared key's words are never seen mixed. */
		e = table_get(g.tab.t, qt, hash_key("shared-put", 10),
			      "shared-put", 10);
		if (e) {
			uint64_t w[S_WORDS];

			if (e->vlen != sizeof(w)) {
				s_fail();
			} else {
				table_entry_read_val(e, w, sizeof(w));
				for (int j = 1; j < S_WORDS; j++)
					if (w[j] != w[0])
						atomic_fetch_add(&g.torn, 1);
			}
		}
		/* Any key found has the right key bytes and a valid value:
		 * one by table_get, a batch of them by table_get_batch. */
		key_of(k, sizeof(k), (int)(n % (unsigned)g.nwriters),
		       (int)(n % S_ITERS));
		h = hash_key(k, strlen(k));
		e = table_get(g.tab.t, qt, h, k, strlen(k));
		if (e && !own_ok(e, k, (int)(n % S_ITERS)))
			s_fail();
		reader_batch(qt, n);
		n = n * 1103515245u + 12345u;
		if (n % 16 == 0)
			qsbr_quiescent(qt);
	}
	qsbr_unregister(qt);
	return NULL;
}

/*
 * Only table_prefetch_begin and table_prefetch_slot, while the writers grow
 * the table: the begin's load of the current array must order the array's
 * initialization before its read of the array's size (under TSan, a
 * relaxed load there is a data race with grow()'s calloc, reported the
 * first time a new array is seen this way).
 */
static void *prefetcher(void *arg)
{
	struct qsbr_thread *qt = qsbr_register(g.tab.q);
	uint64_t h = (uint64_t)(intptr_t)arg;

	if (!qt) {
		s_fail();
		return NULL;
	}
	while (atomic_load_explicit(&g.writers_left, memory_order_relaxed) >
	       0) {
		struct table_prefetch pf;

		table_prefetch_begin(g.tab.t, &pf);
		for (int i = 0; i < 64; i++) {
			h = h * 6364136223846793005ull + 1442695040888963407ull;
			table_prefetch_slot(&pf, h);
		}
		qsbr_quiescent(qt);
	}
	qsbr_unregister(qt);
	return NULL;
}

static int count_cb(struct table_entry *e, void *arg)
{
	(void)e;
	(*(size_t *)arg)++;
	return 0;
}

static void stress_run(int writers, bool one_writer)
{
	pthread_t th[S_WRITERS + S_READERS], pf;
	struct qsbr_thread *qt;
	size_t want_count = S_COUNTERS, want_bytes = 0, walked = 0;
	char k[48];

	memset(&g, 0, sizeof(g));
	g.nwriters = writers;
	t_table_open(&g.tab, 16, one_writer);
	qt = g.tab.qt;
	qsbr_offline(qt); /* the threads' reclamation must not wait for us */
	atomic_store(&g.writers_left, writers);
	for (intptr_t i = 0; i < writers; i++)
		th[i] = t_thread(writer, (void *)i);
	for (intptr_t i = 0; i < S_READERS; i++)
		th[writers + i] = t_thread(reader, (void *)(i * 77 + 1));
	pf = t_thread(prefetcher, (void *)7);
	for (int i = 0; i < writers + S_READERS; i++)
		t_join(th[i]);
	t_join(pf);
	qsbr_online(qt);
	assert_int_equal(atomic_load(&g.bad), 0);
	assert_int_equal(atomic_load(&g.torn), 0);
	/* The writes in place happened (the shared key's value always has
	 * the same length, so most table_set calls find it live). */
	assert_true(atomic_load(&g.in_place) > 0);

	for (int c = 0; c < S_COUNTERS; c++) {
		struct table_entry *e;

		snprintf(k, sizeof(k), "counter-%d", c);
		e = table_get(g.tab.t, qt, hash_key(k, strlen(k)), k,
			      strlen(k));
		assert_non_null(e);
		assert_int_equal(sval(e), atomic_load(&g.incs[c]));
		want_bytes += strlen(k) + 8;
	}
	for (int id = 0; id < writers; id++) {
		for (int i = 0; i < S_ITERS; i++) {
			struct table_entry *e;

			key_of(k, sizeof(k), id, i);
			e = table_get(g.tab.t, qt, hash_key(k, strlen(k)), k,
				      strlen(k));
			if (!expect_present(i)) {
				assert_null(e);
				continue;
			}
			assert_non_null(e);
			assert_int_equal(sval(e), expect_val(i));
			want_count++;
			want_bytes += strlen(k) + 8;
		}
	}
	{
		/* The shared key holds one writer's last put. */
		struct table_entry *e = table_get(g.tab.t, qt,
						  hash_key("shared-put", 10),
						  "shared-put", 10);

		uint64_t w[S_WORDS];

		assert_non_null(e);
		assert_int_equal(e->vlen, sizeof(w));
		table_entry_read_val(e, w, sizeof(w));
		for (int j = 0; j < S_WORDS; j++)
			assert_int_equal(w[j], (S_ITERS - 1) / 4 * 4);
		want_count++;
		want_bytes += 10 + sizeof(w);
	}
	assert_int_equal(table_count(g.tab.t), want_count);
	assert_int_equal(table_bytes(g.tab.t), want_bytes);
	assert_int_equal(table_foreach(g.tab.t, qt, count_cb, &walked), 0);
	assert_int_equal(walked, want_count);
	t_table_close(&g.tab);
}

static void test_stress(void **state)
{
	(void)state;
	stress_run(S_WRITERS, false);
}

/* The same with one writer thread, on a table made for one writer. */
static void test_stress_one_writer(void **state)
{
	(void)state;
	stress_run(1, true);
}

/*
 * The one-writer sequence lock under torture: one thread rewrites one
 * value in place as fast as it can (table_set, table_set_batch, and now
 * and then a table_cas of the value it read), each time eight equal words
 * counting up; readers copy the value with table_entry_read_val and
 * between table_read_begin and table_read_valid. No reader may see words
 * that differ (a torn read) or a count lower than one it saw before.
 *
 * The writer writes T_WRITES times, and then on until the readers have
 * read T_MIN_SEEN values: on a busy machine the readers may not run at all
 * while 200,000 writes take their few milliseconds (ctest -j2 on two CPUs
 * did that), and a torture without readers proves nothing.
 */
#define T_WRITES 200000
#define T_MIN_SEEN 20000
#define T_READERS 2

struct torture {
	struct t_table tab;
	_Atomic bool done;
	_Atomic uint64_t torn, backwards, seen, in_place, cas_ok;
	uint64_t last; /* the writer's last count, read after the join */
};

static const char t_key[] = "torture";

static uint64_t t_hash(void)
{
	return hash_key(t_key, sizeof(t_key) - 1);
}

static void *t_writer(void *arg)
{
	struct torture *tt = arg;
	struct qsbr_thread *qt = qsbr_register(tt->tab.q);
	uint64_t w[S_WORDS], h = t_hash();
	const void *kp = t_key, *vp = w;
	size_t kl = sizeof(t_key) - 1, vl = sizeof(w), done;

	if (!qt)
		return NULL;
	uint64_t i;
	for (i = 1;
	     i <= T_WRITES ||
	     atomic_load_explicit(&tt->seen, memory_order_relaxed) < T_MIN_SEEN;
	     i++) {
		int r;

		for (int j = 0; j < S_WORDS; j++)
			w[j] = i;
		if (i % 1000 == 0) {
			/* A read-modify-write, as ADD does: read at seq,
			 * replace with a CAS that holds the lock. */
			struct table_entry *cur =
				table_get(tt->tab.t, qt, h, kp, kl);
			uint64_t old[S_WORDS];
			uint32_t seq =
				table_entry_read_val(cur, old, sizeof(old));
			struct table_entry *n =
				table_entry_new(h, kp, kl, w, vl, NULL, 0);

			r = n ? table_cas(tt->tab.t, qt, h, kp, kl, cur, seq, n)
			      : -ENOMEM;
			if (r)
				table_entry_unref(n);
			else
				atomic_fetch_add(&tt->cas_ok, 1);
			r = 0;
		} else if (i % 2) {
			r = table_set(tt->tab.t, qt, h, kp, kl, w, vl);
		} else {
			r = table_set_batch(tt->tab.t, qt, 1, &h, &kp, &kl, &vp,
					    &vl, &done);
		}
		if (r > 0)
			atomic_fetch_add_explicit(&tt->in_place, 1,
						  memory_order_relaxed);
		if (i % 64 == 0)
			qsbr_quiescent(qt);
	}
	qsbr_unregister(qt);
	tt->last = i - 1;
	atomic_store(&tt->done, true);
	return NULL;
}

static void *t_reader(void *arg)
{
	struct torture *tt = arg;
	struct qsbr_thread *qt = qsbr_register(tt->tab.q);
	uint64_t h = t_hash(), last = 0, n = 0, seen = 0;

	if (!qt)
		return NULL;
	while (!atomic_load(&tt->done)) {
		struct table_entry *e =
			table_get(tt->tab.t, qt, h, t_key, sizeof(t_key) - 1);
		uint64_t w[S_WORDS];

		if (e && n % 2) {
			table_entry_read_val(e, w, sizeof(w));
		} else if (e) {
			uint32_t s;

			do {
				s = table_read_begin(e);
				table_racy_copy(w, table_entry_val(e),
						sizeof(w));
			} while (!table_read_valid(e, s));
		}
		for (int j = 1; e && j < S_WORDS; j++)
			if (w[j] != w[0]) {
				atomic_fetch_add(&tt->torn, 1);
				break;
			}
		if (e && w[0] < last)
			atomic_fetch_add(&tt->backwards, 1);
		if (e) {
			last = w[0];
			/* Relaxed: a count that only ends the writer's run. */
			if (++seen % 64 == 0)
				atomic_fetch_add_explicit(&tt->seen, 64,
							  memory_order_relaxed);
		}
		if (++n % 64 == 0)
			qsbr_quiescent(qt);
	}
	qsbr_unregister(qt);
	return NULL;
}

#ifndef NDEBUG
static void *second_writer(void *arg)
{
	struct t_table *f = arg;

	set_s(f, "k", "two"); /* in place: the lock, from a second thread */
	return NULL;
}

/* A debug build stops a second thread that writes a one-writer table
 * (in a child process, which must die of the assertion). */
static void test_one_writer_guard(void **state)
{
	struct t_table *f = *state;
	pid_t pid;
	int st;

	assert_int_equal(set_s(f, "k", "one"), 0);
	assert_int_equal(set_s(f, "k", "uno"), 1); /* this thread writes */
	fflush(NULL);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		pthread_t th;

		/* No core file and no report on the parent's output. */
		(void)freopen("/dev/null", "w", stderr);
		if (pthread_create(&th, NULL, second_writer, f) == 0)
			pthread_join(th, NULL);
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFSIGNALED(st));
	assert_int_equal(WTERMSIG(st), SIGABRT);
	/* The same write from this thread is fine. */
	assert_int_equal(set_s(f, "k", "one"), 1);
	expect_str(f, "k", "one");
}
#else
static void test_one_writer_guard(void **state)
{
	(void)state;
	t_skip("the guard is an assertion: debug builds only");
}
#endif

static void test_one_writer_seqlock(void **state)
{
	struct torture tt = { 0 };
	pthread_t w, r[T_READERS];
	struct qsbr_thread *qt;
	uint64_t got[S_WORDS];
	struct table_entry *e;

	(void)state;
	t_table_open(&tt.tab, 16, true);
	qt = tt.tab.qt;
	qsbr_offline(qt); /* the threads' reclamation must not wait for us */
	/* Every write is the writer thread's, the first (an insert)
	 * included; the readers skip the key until it is there. */
	w = t_thread(t_writer, &tt);
	for (int i = 0; i < T_READERS; i++)
		r[i] = t_thread(t_reader, &tt);
	t_join(w);
	for (int i = 0; i < T_READERS; i++)
		t_join(r[i]);
	qsbr_online(qt);
	assert_int_equal(atomic_load(&tt.torn), 0);
	assert_int_equal(atomic_load(&tt.backwards), 0);
	/* The lock was taken (the writes were in place, the CASes held it);
	 * that the readers read while it was is how the writer ends. */
	assert_true(atomic_load(&tt.in_place) > T_WRITES / 2);
	assert_true(atomic_load(&tt.cas_ok) > 0);
	e = table_get(tt.tab.t, qt, t_hash(), t_key, sizeof(t_key) - 1);
	assert_non_null(e);
	table_entry_read_val(e, got, sizeof(got));
	for (int j = 0; j < S_WORDS; j++)
		assert_int_equal(got[j], tt.last);
	t_table_close(&tt.tab);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_basic, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cas_mismatch, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_put, setup, teardown),
		cmocka_unit_test_setup_teardown(test_set_in_place, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_cas_after_write_in_place,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_copy_lengths, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_growth, setup, teardown),
		cmocka_unit_test_setup_teardown(test_set_batch, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_get_batch, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_tombstone_reuse, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_count_bytes, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_foreach, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hash_collision, setup,
						teardown),
		cmocka_unit_test(test_stress),
		/* One writer: what writes in place or holds the lock. */
		cmocka_unit_test_setup_teardown(test_set_in_place,
						setup_one_writer, teardown),
		cmocka_unit_test_setup_teardown(test_cas_after_write_in_place,
						setup_one_writer, teardown),
		cmocka_unit_test_setup_teardown(test_copy_lengths,
						setup_one_writer, teardown),
		cmocka_unit_test_setup_teardown(test_set_batch,
						setup_one_writer, teardown),
		cmocka_unit_test_setup_teardown(test_put, setup_one_writer,
						teardown),
		cmocka_unit_test_setup_teardown(test_growth, setup_one_writer,
						teardown),
		cmocka_unit_test(test_stress_one_writer),
		cmocka_unit_test(test_one_writer_seqlock),
		cmocka_unit_test_setup_teardown(test_one_writer_guard,
						setup_one_writer, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
