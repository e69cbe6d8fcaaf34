/* SPDX-License-Identifier: MIT */
/*
 * qsbr.c - quiescent-state-based reclamation with a global epoch.
 *
 * State. A global epoch E (starting at 1, only ever incremented by CAS) and,
 * per registered thread, a cache-line-padded word `seen`: the epoch that
 * thread observed at its last quiescent point, or 0 while it is offline or
 * the record is unused. Each thread keeps a private ring of retired objects
 * tagged with the value of E read at retirement; tags in a ring never
 * decrease.
 *
 * Advancing. Any thread may move E from e to e + 1 once every online thread
 * has seen == e. Only threads with something to free try (their own ring or
 * the orphan list is not empty), so idle reactors stay cheap.
 *
 * Grace period. An object tagged e is freed once E >= e + 2. Proof sketch,
 * with X the seq_cst fence in qsbr_retire() that follows the caller's unlink
 * (or, for qsbr_retire_sc(), that unlink itself: see there),
 * B the seq_cst load of E after it (it returned e), C1 the CAS e -> e + 1,
 * C2 the CAS e + 1 -> e + 2, all in the single total order S:
 *   - B read e, so B precedes C1 in S.
 *   - C2's advancer loaded E == e + 1 (after C1) and then every record: a
 *     thread j that was online had seen == e + 1, stored by a quiescent or
 *     online step whose seq_cst load of E returned e + 1, so that load and the
 *     seq_cst fence Y_j after it follow C1, hence X, in S. By the fence rule
 *     ([atomics.order]: A sequenced before X, Y before B', X before Y in S),
 *     every pointer load j makes after Y_j sees the unlink, so j could only
 *     have reached the object before that quiescent point, and its uses are
 *     ordered before the free by the release store of seen (acquired by the
 *     advancer) and C2 (acquired by whoever reads E >= e + 2).
 *   - A thread the advancer saw offline (seen == 0) either went offline after
 *     its uses (the release store of 0 orders them), or comes online later:
 *     its seq_cst store of seen and the fence after it follow the advancer's
 *     load in S, hence C1 and X, so it cannot reach the object at all.
 * A new thread's record is made visible (nslots) before its seen store, so
 * an advancer that misses the record is in the "comes online later" case.
 *
 * Registration, unregistration and the orphan list (rings handed over by
 * unregistered threads) take q->lock; the fast paths never do. A ring that
 * cannot grow when full leaks the object and counts it in q->leaked instead
 * of blocking a reactor or failing.
 *
 * Threads: qsbr_thread records are private to their thread; struct qsbr is
 * shared by all.
 */
#include "qsbr.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "compiler.h"

#define QSBR_MAX_THREADS 128
#define QSBR_RING_INITIAL 1024
#define RECLAIM_AHEAD 4

struct qsbr_retired {
	void *p;
	qsbr_free_fn fn;
	uint64_t epoch;
};

/* A FIFO of retired objects, tags non-decreasing from head to tail. */
struct qsbr_ring {
	struct qsbr_retired *items; /* owned */
	size_t cap;                 /* power of two, or 0 */
	size_t head;
	size_t n;
};

struct qsbr_record {
	_Atomic uint64_t seen; /* 0: offline or unused */
	/* Objects in the owner's ring, stored by the owner only (relaxed):
	 * a count shared by all threads made every retirement a contended
	 * atomic add. On its own line, so advancers reading `seen` do not
	 * collide with the owner's retirements. */
	_Atomic size_t pending RS_ALIGNED_CACHELINE;
} RS_ALIGNED_CACHELINE;

struct qsbr {
	_Atomic uint64_t epoch RS_ALIGNED_CACHELINE;
	_Atomic size_t leaked RS_ALIGNED_CACHELINE;
	_Atomic unsigned nslots;     /* records [0, nslots) may be in use */
	_Atomic size_t norphans;     /* objects on the orphan list */
	pthread_mutex_t lock;        /* registration and orphans */
	bool used[QSBR_MAX_THREADS]; /* under lock */
	struct qsbr_thread *orphans; /* under lock; owned */
	struct qsbr_record rec[QSBR_MAX_THREADS];
};

struct qsbr_thread {
	struct qsbr *q; /* borrowed */
	unsigned idx;   /* our record in q->rec */
	bool online;
	struct qsbr_ring ring;
	struct qsbr_thread *next; /* orphan list link, under q->lock */
};

static _Atomic uint64_t *seen_of(struct qsbr_thread *t)
{
	return &t->q->rec[t->idx].seen;
}

/* Publish the size of our ring for qsbr_pending(). */
static void note_pending(struct qsbr_thread *t)
{
	atomic_store_explicit(&t->q->rec[t->idx].pending, t->ring.n,
			      memory_order_relaxed);
}

/*
 * Publish the current epoch as seen by this thread: the L_j load, Y_j fence
 * and release store of the proof at the top of the file.
 */
static void publish(struct qsbr_thread *t)
{
	/* Pairs with the advancer's CAS; seq_cst places it in S after C1. */
	uint64_t e = atomic_load_explicit(&t->q->epoch, memory_order_seq_cst);

	/* Y_j: later pointer loads see every unlink fenced before C1. */
	atomic_thread_fence(memory_order_seq_cst);
	/* Release: our earlier uses happen before an advancer's load. */
	atomic_store_explicit(seen_of(t), e, memory_order_release);
}

/* Move E forward by one if every online thread has seen it. */
static bool try_advance(struct qsbr *q)
{
	/* seq_cst: the advancer's loads are ordered in S (see the proof). */
	uint64_t e = atomic_load_explicit(&q->epoch, memory_order_seq_cst);
	unsigned n = atomic_load_explicit(&q->nslots, memory_order_seq_cst);

	for (unsigned i = 0; i < n; i++) {
		/* Acquire (seq_cst): pairs with publish()/offline stores. */
		uint64_t s = atomic_load_explicit(&q->rec[i].seen,
						  memory_order_seq_cst);
		if (s != 0 && s != e)
			return false;
	}
	/* Release: pairs with the acquire load in reclaim(). */
	return atomic_compare_exchange_strong_explicit(&q->epoch, &e, e + 1,
						       memory_order_seq_cst,
						       memory_order_seq_cst);
}

/* Free the objects of @r whose grace period is over; returns how many. */
static size_t reclaim(struct qsbr *q, struct qsbr_ring *r)
{
	/* Acquire: pairs with the CAS in try_advance() that made E >= tag+2. */
	uint64_t e = atomic_load_explicit(&q->epoch, memory_order_acquire);
	size_t freed = 0;

	while (r->n > 0) {
		struct qsbr_retired *it = &r->items[r->head];

		if (it->epoch + 2 > e)
			break;
		/* fn() will touch an object retired long ago (cold): start
		 * fetching the one a few places further on. */
		if (r->n > RECLAIM_AHEAD)
			__builtin_prefetch(r->items[(r->head + RECLAIM_AHEAD) &
						    (r->cap - 1)]
						   .p,
					   1);
		it->fn(it->p);
		r->head = (r->head + 1) & (r->cap - 1);
		r->n--;
		freed++;
	}
	return freed;
}

static void ring_free_all(struct qsbr_ring *r)
{
	while (r->n > 0) {
		struct qsbr_retired *it = &r->items[r->head];

		it->fn(it->p);
		r->head = (r->head + 1) & (r->cap - 1);
		r->n--;
	}
	free(r->items);
	r->items = NULL;
	r->cap = 0;
}

/* Double the ring's capacity. Returns 0 or -ENOMEM. */
static int ring_grow(struct qsbr_ring *r)
{
	size_t ncap = r->cap ? r->cap * 2 : QSBR_RING_INITIAL;
	struct qsbr_retired *ni;

	if (ncap < r->cap || ncap > SIZE_MAX / sizeof(*ni))
		return -ENOMEM;
	ni = malloc(ncap * sizeof(*ni));
	if (!ni)
		return -ENOMEM;
	for (size_t i = 0; i < r->n; i++)
		ni[i] = r->items[(r->head + i) & (r->cap - 1)];
	free(r->items);
	r->items = ni;
	r->cap = ncap;
	r->head = 0;
	return 0;
}

/* Reclaim what is safe on the orphan list; caller holds q->lock. */
static void reclaim_orphans_locked(struct qsbr *q)
{
	struct qsbr_thread **pp = &q->orphans;

	while (*pp) {
		struct qsbr_thread *o = *pp;
		size_t freed = reclaim(q, &o->ring);

		if (freed)
			atomic_fetch_sub_explicit(&q->norphans, freed,
						  memory_order_relaxed);
		if (o->ring.n == 0) {
			*pp = o->next;
			free(o->ring.items);
			free(o);
		} else {
			pp = &o->next;
		}
	}
}

static void reclaim_orphans(struct qsbr *q)
{
	if (atomic_load_explicit(&q->norphans, memory_order_relaxed) == 0)
		return;
	if (pthread_mutex_trylock(&q->lock) != 0)
		return;
	reclaim_orphans_locked(q);
	pthread_mutex_unlock(&q->lock);
}

/*
 * Allocate the shared state. Returns NULL on ENOMEM. The epoch starts at 1
 * because 0 means "offline" in a record.
 */
struct qsbr *qsbr_create(void)
{
	struct qsbr *q;

	if (posix_memalign((void **)&q, RS_CACHELINE, sizeof(*q)) != 0)
		return NULL;
	memset(q, 0, sizeof(*q));
	if (pthread_mutex_init(&q->lock, NULL) != 0) {
		free(q);
		return NULL;
	}
	atomic_init(&q->epoch, 1);
	atomic_init(&q->leaked, 0);
	atomic_init(&q->nslots, 0);
	atomic_init(&q->norphans, 0);
	for (unsigned i = 0; i < QSBR_MAX_THREADS; i++) {
		atomic_init(&q->rec[i].seen, 0);
		atomic_init(&q->rec[i].pending, 0);
	}
	return q;
}

/*
 * Run every pending free function (of orphaned rings) and release @q. No
 * thread may be registered, so no grace period is needed.
 */
void qsbr_destroy(struct qsbr *q)
{
	if (!q)
		return;
	for (unsigned i = 0; i < QSBR_MAX_THREADS; i++)
		assert(!q->used[i]);
	while (q->orphans) {
		struct qsbr_thread *o = q->orphans;

		q->orphans = o->next;
		ring_free_all(&o->ring);
		free(o);
	}
	pthread_mutex_destroy(&q->lock);
	free(q);
}

/*
 * Register the calling thread; it starts online. Returns NULL on ENOMEM or
 * when QSBR_MAX_THREADS records are in use. The ring is preallocated so that
 * qsbr_retire() rarely allocates.
 */
struct qsbr_thread *qsbr_register(struct qsbr *q)
{
	struct qsbr_thread *t = calloc(1, sizeof(*t));
	unsigned idx;

	if (!t)
		return NULL;
	if (ring_grow(&t->ring) != 0) {
		free(t);
		return NULL;
	}
	t->q = q;
	pthread_mutex_lock(&q->lock);
	for (idx = 0; idx < QSBR_MAX_THREADS && q->used[idx]; idx++)
		;
	if (idx == QSBR_MAX_THREADS) {
		pthread_mutex_unlock(&q->lock);
		free(t->ring.items);
		free(t);
		return NULL;
	}
	q->used[idx] = true;
	/* seq_cst: ordered before our seen store (see "A new thread"). */
	if (idx >= atomic_load_explicit(&q->nslots, memory_order_relaxed))
		atomic_store_explicit(&q->nslots, idx + 1,
				      memory_order_seq_cst);
	pthread_mutex_unlock(&q->lock);
	t->idx = idx;
	qsbr_online(t);
	return t;
}

/*
 * Go offline for good, free what is already safe, and hand the rest of the
 * ring to the orphan list (freed by later quiescent points of other threads
 * or by qsbr_destroy). Never blocks on other threads' progress.
 */
void qsbr_unregister(struct qsbr_thread *t)
{
	struct qsbr *q;

	if (!t)
		return;
	q = t->q;
	if (t->online)
		qsbr_offline(t);
	/* Offline, we no longer hold anyone back: with no other thread
	 * online, two advances make everything we retired safe. */
	for (int i = 0; i < 2 && t->ring.n > 0; i++) {
		try_advance(q);
		reclaim(q, &t->ring);
	}
	/* Our ring is counted in norphans from here on. */
	atomic_store_explicit(&q->rec[t->idx].pending, 0, memory_order_relaxed);
	pthread_mutex_lock(&q->lock);
	q->used[t->idx] = false;
	if (t->ring.n > 0) {
		atomic_fetch_add_explicit(&q->norphans, t->ring.n,
					  memory_order_relaxed);
		t->next = q->orphans;
		q->orphans = t;
		t = NULL;
	}
	pthread_mutex_unlock(&q->lock);
	if (t) {
		free(t->ring.items);
		free(t);
	}
}

/*
 * Declare that the calling thread holds no borrowed pointer, then free what
 * has become safe. Tries to advance the epoch (twice, so a lone thread frees
 * its retirements at once) only when it has something waiting.
 */
void qsbr_quiescent(struct qsbr_thread *t)
{
	struct qsbr *q = t->q;

	if (!t->online) {
		if (reclaim(q, &t->ring))
			note_pending(t);
		return;
	}
	publish(t);
	if (t->ring.n == 0 &&
	    atomic_load_explicit(&q->norphans, memory_order_relaxed) == 0)
		return;
	if (try_advance(q)) {
		publish(t);
		try_advance(q);
	}
	if (reclaim(q, &t->ring))
		note_pending(t);
	reclaim_orphans(q);
}

/* Quiescent, then stop holding back reclamation until qsbr_online(). */
void qsbr_offline(struct qsbr_thread *t)
{
	if (!t->online)
		return;
	qsbr_quiescent(t);
	t->online = false;
	/* Release: our uses happen before an advancer that reads 0. */
	atomic_store_explicit(seen_of(t), 0, memory_order_release);
}

/* Take part again; borrowed pointers may be taken after this returns. */
void qsbr_online(struct qsbr_thread *t)
{
	/* seq_cst load, store and fence: the "comes online later" case of
	 * the proof at the top of the file. */
	uint64_t e = atomic_load_explicit(&t->q->epoch, memory_order_seq_cst);

	atomic_store_explicit(seen_of(t), e, memory_order_seq_cst);
	atomic_thread_fence(memory_order_seq_cst);
	t->online = true;
}

/*
 * Queue fn(p) for after the grace period. The caller has already unlinked
 * @p. Never fails: when the ring is full and cannot grow even after freeing
 * what is safe, @p is leaked and counted rather than freed early.
 */
static void retire(struct qsbr_thread *t, void *p, qsbr_free_fn fn, uint64_t e)
{
	struct qsbr_ring *r = &t->ring;

	if (r->n == r->cap) {
		reclaim(t->q, r);
		if (r->n == r->cap && ring_grow(r) != 0) {
			atomic_fetch_add_explicit(&t->q->leaked, 1,
						  memory_order_relaxed);
			note_pending(t);
			return;
		}
	}
	r->items[(r->head + r->n) & (r->cap - 1)] =
		(struct qsbr_retired){ .p = p, .fn = fn, .epoch = e };
	r->n++;
	note_pending(t);
}

void qsbr_retire(struct qsbr_thread *t, void *p, qsbr_free_fn fn)
{
	/* X: orders the caller's unlink before our load of E in S. */
	atomic_thread_fence(memory_order_seq_cst);
	retire(t, p, fn,
	       atomic_load_explicit(&t->q->epoch, memory_order_seq_cst));
}

/*
 * The same for a caller whose unlink was itself a seq_cst read-modify-write
 * (a CAS or exchange with memory_order_seq_cst): that operation takes the
 * place of X in the proof at the top of the file, without a second fence.
 * It precedes our seq_cst load of E in S (sequenced before it), and a
 * thread j whose fence Y_j follows it in S loads, after Y_j, the unlinked
 * value or a later one (C11 7.17.3: a load sequenced after a seq_cst fence
 * observes the last seq_cst modification preceding that fence in S, or a
 * later one). On x86 this saves an mfence per retirement: the CAS is a
 * locked instruction either way.
 */
void qsbr_retire_sc(struct qsbr_thread *t, void *p, qsbr_free_fn fn)
{
	retire(t, p, fn,
	       atomic_load_explicit(&t->q->epoch, memory_order_seq_cst));
}

/* Objects retired and not yet freed, including orphaned ones (relaxed). */
size_t qsbr_pending(struct qsbr *q)
{
	unsigned n = atomic_load_explicit(&q->nslots, memory_order_relaxed);
	size_t sum = atomic_load_explicit(&q->norphans, memory_order_relaxed);

	for (unsigned i = 0; i < n; i++)
		sum += atomic_load_explicit(&q->rec[i].pending,
					    memory_order_relaxed);
	return sum;
}
