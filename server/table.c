/* SPDX-License-Identifier: MIT */
/*
 * table.c - the lock-free open-addressing hash table (see table.h).
 *
 * Layout. A table is a chain of slot arrays, oldest first: t->cur is the
 * oldest array still in use and each array's `next` is its successor while
 * it is being migrated. Only the newest array (next == NULL) receives new
 * keys. A slot is two words:
 *   hw   0 (empty), 1 (DEAD: an empty slot closed by migration), or the tag
 *        of the key hash (the hash, moved off 0 and 1). Set once, by CAS.
 *   ptr  0, or an entry pointer with three low flag bits: TOMB (the entry is
 *        a tombstone: it only carries the key), MOVED (frozen by migration:
 *        no writer may change it in this array) and COPIED (the frozen
 *        entry has reached the next array).
 * The first entry installed in a slot fixes the slot's key ("identity") for
 * the life of the array: later values and tombstones of that key replace
 * the pointer, never a different key. A delete installs a key-only
 * tombstone entry (or, if that allocation fails, keeps the old entry as the
 * tombstone), so identity survives deletion and a re-insert reuses the slot.
 *
 * The terminal slot of key K in an array is the first slot on K's probe
 * sequence that is empty, DEAD, or has K's tag and either no identity or
 * identity K. Because hw and identity are set once, every thread finds the
 * same terminal, so K has at most one slot per array. Two first inserts of K
 * race on the terminal: both claim hw (one CAS wins, the other sees the same
 * tag), then CAS ptr 0 -> entry; the loser re-probes and finds identity K.
 * A different key with the same 64-bit hash that loses that CAS just probes
 * on.
 *
 * Reads: probe t->cur for K's terminal. Empty, no identity or a tombstone
 * means absent; a live entry is the answer; DEAD, a frozen slot with no
 * identity or a frozen COPIED slot send the reader to the next array; a
 * frozen but not yet COPIED entry is still the current value (a writer must
 * set COPIED before it may write K in the next array). Readers only load.
 *
 * Writes (table_cas): find K's terminal; if frozen, migrate that slot (copy
 * its entry into the next array if absent there, then set COPIED) and retry
 * in the next array; otherwise compare with @expected and CAS the pointer.
 * Any slot may be frozen at any time, so a writer's CAS either lands before
 * the freeze (and is copied) or fails and moves on. Invariant: K is written
 * in an array only after K's terminal in every older array is frozen and
 * copied, so the newest value is always found by following the chain.
 *
 * Growth: an insert that would push an array's claimed slots (live keys,
 * tombstones and pending claims) past 70% allocates the next array, twice
 * the size, or the same size when fewer than a quarter of the slots are
 * live (so tombstones are dropped, not copied). Every table_cas first
 * migrates one chunk of CHUNK slots of the oldest array with work left;
 * migrating a slot is idempotent and any thread may do it. The thread that
 * marks the last slot COPIED moves t->cur forward and retires the old array
 * through QSBR. Migrating an empty slot first sets hw to DEAD, so no tag
 * can be claimed there afterwards and terminals stay stable; an insert
 * that meets an empty terminal in an array with a next array migrates it
 * and moves on rather than claiming it. A copy is a put-if-absent that
 * stops at the first array holding identity K, so a slow copier can never
 * resurrect a key that was copied, then deleted, then migrated. If a copy
 * cannot allocate a new array (-ENOMEM), its slot stays frozen and
 * uncopied: reads still see its entry, writes of that key fail with
 * -ENOMEM until a later migration of the slot succeeds.
 *
 * Values in place: table_set may rewrite the value bytes of a live entry
 * under the entry's sequence lock instead of replacing it (see table_set).
 * Everything above holds for entry pointers; the lock only adds that the
 * bytes of a value shorter than TABLE_INPLACE_MAX may change while the
 * entry is live, and that table_cas validates the value it was given.
 *
 * Ownership: every slot that holds an entry pointer (live or tombstone,
 * frozen or not) owns one reference to it. A copy takes a reference for the
 * new slot, so a frozen slot's entry, which readers of the old array may
 * still compare keys against, lives until the old array is retired, even
 * if the key was replaced in the new array meanwhile. Replacing a pointer
 * retires the old one; retiring an array drops all of its slots' references.
 *
 * Memory orders: every CAS that publishes (ptr, hw, next, cur) is seq_cst or
 * release and every load that dereferences the result is acquire; the pairs
 * are named at each site. Counters (count, bytes, used, copy_idx) are
 * relaxed hints, except `done` and `cur`, which are seq_cst so that the two
 * threads finishing adjacent arrays cannot both miss each other.
 *
 * Threads: every function may run on any number of threads at once, each
 * with its own struct qsbr_thread; table_destroy runs alone. A table made
 * for one writer (one reactor) takes its writes from one thread: only
 * value_lock differs, see there.
 */
#include "table.h"

#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "blkcache.h"
#include "compiler.h"
#include "qsbr.h"

#define SLOT_TOMB ((uintptr_t)1)
#define SLOT_MOVED ((uintptr_t)2)
#define SLOT_COPIED ((uintptr_t)4)
#define SLOT_FLAGS ((uintptr_t)7)

#define HW_EMPTY ((uint64_t)0)
#define HW_DEAD ((uint64_t)1)

#define TABLE_MIN_CAP 16
#define CHUNK 64
/* Slots prefetch_entry_at looks at for K, from its home on. */
#define PREFETCH_SCAN 4
/* No slot: prefetch_entry_at did not see the key's tag. */
#define SLOT_NONE SIZE_MAX

struct table_slot {
	_Atomic uint64_t hw;
	_Atomic uintptr_t ptr;
};

_Static_assert(sizeof(struct table_slot) == TABLE_SLOT_BYTES,
	       "a slot is two words");
_Static_assert(_Alignof(struct table_entry) >= 8, "three flag bits");

struct table_array {
	size_t cap;   /* power of two */
	size_t limit; /* claimed slots beyond which an insert grows */
	_Atomic(struct table_array *) next; /* owned by the chain */
	_Atomic size_t used;                /* slots with a tag in hw */
	_Atomic size_t copy_idx;            /* next chunk to migrate */
	_Atomic size_t done;                /* slots frozen and COPIED */
	struct table_slot slots[];
};

struct table {
	struct qsbr *q;                    /* borrowed */
	_Atomic(struct table_array *) cur; /* oldest array in use; owned */
	bool one_writer;                   /* see table_create */
#ifndef NDEBUG
	_Atomic(const void *) writer; /* the one writer's token */
#endif
	_Atomic int64_t count RS_ALIGNED_CACHELINE;
	_Atomic int64_t bytes;
};

enum probe_result {
	PROBE_FOUND,  /* *idx is K's terminal with K's tag */
	PROBE_ABSENT, /* reached an empty slot (lookups only) */
	PROBE_NEXT,   /* K lives in a->next */
	PROBE_FULL,   /* no terminal and no next array */
};

static uint64_t tag_of(uint64_t hash)
{
	return hash < 2 ? hash + 2 : hash;
}

static struct table_entry *entry_of(uintptr_t w)
{
	return (struct table_entry *)(w & ~SLOT_FLAGS);
}

/* Bytes [0, n) of @a and @b equal? Keys are mostly 8 to 16 bytes (rank
 * and store keys): two overlapping word compares instead of a call. */
static inline bool bytes_eq(const uint8_t *a, const uint8_t *b, size_t n)
{
	uint64_t x0, x1, y0, y1;

	if (n < 8 || n > 16)
		return memcmp(a, b, n) == 0;
	memcpy(&x0, a, 8);
	memcpy(&y0, b, 8);
	memcpy(&x1, a + n - 8, 8);
	memcpy(&y1, b + n - 8, 8);
	return ((x0 ^ y0) | (x1 ^ y1)) == 0;
}

static inline bool key_eq(const struct table_entry *e, uint64_t hash,
			  const void *key, size_t klen)
{
	return e->hash == hash && e->klen == klen &&
	       bytes_eq(e->data, key, klen);
}

static struct table_array *next_of(struct table_array *a)
{
	/* Acquire: pairs with the release CAS in grow(), so the zeroed
	 * slots of the new array are visible. */
	return atomic_load_explicit(&a->next, memory_order_acquire);
}

static size_t entry_bytes(const struct table_entry *e)
{
	return (size_t)e->klen + (size_t)e->vlen;
}

/*
 * Allocate one block holding the key and v1 || v2; refs starts at 1 (the
 * caller's). Returns NULL on ENOMEM or if the sizes overflow.
 */
struct table_entry *table_entry_new(uint64_t hash, const void *key, size_t klen,
				    const void *v1, size_t l1, const void *v2,
				    size_t l2)
{
	struct table_entry *e;
	size_t total = sizeof(*e);

	if (klen > UINT32_MAX || l1 > SIZE_MAX - total - klen)
		return NULL;
	total += klen + l1;
	if (l2 > SIZE_MAX - total)
		return NULL;
	total += l2;
	e = blk_alloc(total);
	if (!e)
		return NULL;
	atomic_init(&e->refs, 1);
	atomic_init(&e->seq, 0);
	e->unused = 0;
	e->klen = (uint32_t)klen;
	e->hash = hash;
	e->vlen = l1 + l2;
	table_copy_short(e->data, key, klen);
	if (v1)
		table_copy_short(e->data + klen, v1, l1);
	if (l2)
		memcpy(e->data + klen + l1, v2, l2);
	return e;
}

/* Take a reference; the caller must already hold one or be in a QSBR
 * read-side section that borrowed @e. */
void table_entry_ref(struct table_entry *e)
{
	atomic_fetch_add_explicit(&e->refs, 1, memory_order_relaxed);
}

/* Drop a reference; the last one frees @e. */
void table_entry_unref(struct table_entry *e)
{
	/* acq_rel: the release half orders our reads of @e before the free;
	 * the acquire half pairs with the other holders' decrements. (A
	 * release decrement plus an acquire fence would do, but TSan does not
	 * model fences and would report the free as a race.) */
	if (atomic_fetch_sub_explicit(&e->refs, 1, memory_order_acq_rel) == 1)
		blk_free(e, sizeof(*e) + entry_bytes(e));
}

static void entry_retired(void *p)
{
	table_entry_unref(p);
}

/*
 * A large array is aligned to 2 MiB and advised into transparent huge
 * pages: lookups of random keys touch random slots, and with 4 KiB pages
 * each one is a TLB miss as well as a cache miss (a page walk that costs
 * twice as much under virtualization).
 */
#define HUGE_PAGE ((size_t)2 << 20)

static struct table_array *array_new(size_t cap)
{
	struct table_array *a;
	size_t bytes;

	if (cap >
	    (SIZE_MAX - sizeof(*a) - HUGE_PAGE) / sizeof(struct table_slot))
		return NULL;
	bytes = sizeof(*a) + cap * sizeof(struct table_slot);
	if (bytes < HUGE_PAGE) {
		a = calloc(1, bytes);
	} else {
		bytes = (bytes + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1);
		if (posix_memalign((void **)&a, HUGE_PAGE, bytes) != 0)
			a = NULL;
		if (a) {
			/* Advice only: without THP the array just uses small
			 * pages. */
			(void)madvise(a, bytes, MADV_HUGEPAGE);
			memset(a, 0, bytes);
		}
	}
	if (!a)
		return NULL;
	a->cap = cap;
	a->limit = cap / 10 * 7 + (cap % 10) * 7 / 10;
	return a;
}

/* Drop the reference each slot of @a holds, and free @a. */
static void array_free(struct table_array *a)
{
	for (size_t i = 0; i < a->cap; i++) {
		uintptr_t w = atomic_load_explicit(&a->slots[i].ptr,
						   memory_order_relaxed);

		if (entry_of(w))
			table_entry_unref(entry_of(w));
	}
	free(a);
}

/* QSBR callback for an array that migration has emptied. */
static void array_retired(void *p)
{
	array_free(p);
}

/* Make sure @a has a next array. Returns 0 or -ENOMEM. */
static int grow(struct table *t, struct table_array *a)
{
	struct table_array *b, *expected = NULL;
	int64_t live;
	size_t cap;

	if (next_of(a))
		return 0;
	live = atomic_load_explicit(&t->count, memory_order_relaxed);
	if (live < 0)
		live = 0;
	cap = (size_t)live * 4 >= a->cap ? a->cap * 2 : a->cap;
	if (cap < a->cap)
		return -ENOMEM;
	b = array_new(cap);
	if (!b)
		return -ENOMEM;
	/* Release: pairs with next_of(); publishes the zeroed array. */
	if (!atomic_compare_exchange_strong_explicit(&a->next, &expected, b,
						     memory_order_release,
						     memory_order_acquire))
		free(b);
	return 0;
}

/*
 * Move t->cur past every array that is fully migrated, retiring each. Run
 * by whoever marks an array's last slot COPIED.
 */
static void advance_cur(struct table *t, struct qsbr_thread *qt)
{
	for (;;) {
		/* seq_cst with the fetch_add on done in slot_migrate(): of two
		 * threads finishing adjacent arrays, one sees the other. */
		struct table_array *c =
			atomic_load_explicit(&t->cur, memory_order_seq_cst);
		struct table_array *n = next_of(c);
		size_t done;

		if (!n)
			return;
		done = atomic_load_explicit(&c->done, memory_order_seq_cst);
		if (done != c->cap)
			return;
		if (atomic_compare_exchange_strong_explicit(
			    &t->cur, &c, n, memory_order_seq_cst,
			    memory_order_seq_cst))
			qsbr_retire(qt, c, array_retired);
	}
}

static int slot_migrate(struct table *t, struct qsbr_thread *qt,
			struct table_array *a, size_t i);

/*
 * Find K's terminal in @a without changing anything: PROBE_FOUND (*idx has
 * K's tag and either no identity or identity K; *wp is its pointer word),
 * PROBE_ABSENT (*idx is an empty slot), PROBE_NEXT (a DEAD slot, or no
 * terminal while @a has a next array) or PROBE_FULL. Inline: it is the
 * whole of a lookup's work on the hot path.
 */
static inline int probe_read(struct table_array *a, uint64_t hash,
			     const void *key, size_t klen, size_t *idx,
			     uintptr_t *wp)
{
	uint64_t tag = tag_of(hash);
	size_t mask = a->cap - 1;
	size_t i = hash & mask;

	for (size_t n = 0; n < a->cap; n++, i = (i + 1) & mask) {
		struct table_slot *s = &a->slots[i];
		/* Acquire: pairs with the CAS that set hw (claim or DEAD,
		 * the latter published after `next`). */
		uint64_t hw =
			atomic_load_explicit(&s->hw, memory_order_acquire);
		struct table_entry *e;
		uintptr_t w;

		if (hw == HW_DEAD)
			return PROBE_NEXT;
		if (hw == HW_EMPTY) {
			*idx = i;
			return PROBE_ABSENT;
		}
		if (hw != tag)
			continue; /* another hash: probe on */
		/* Acquire: pairs with the release CAS that installed the
		 * entry (its bytes). */
		w = atomic_load_explicit(&s->ptr, memory_order_acquire);
		e = entry_of(w);
		if (e && !key_eq(e, hash, key, klen))
			continue; /* same hash, other key */
		*idx = i;
		*wp = w;
		return PROBE_FOUND;
	}
	return next_of(a) ? PROBE_NEXT : PROBE_FULL;
}

/*
 * Find K's terminal in @a. With @claim (an insert or a copy), an empty
 * terminal is claimed with K's tag first, or, when @a already has a next
 * array or must grow, closed by migrating it, and the probe starts over
 * (the slot is no longer empty, so every pass makes progress). Returns a
 * probe_result or -ENOMEM (from migrating a slot).
 */
static int probe(struct table *t, struct qsbr_thread *qt, struct table_array *a,
		 uint64_t hash, const void *key, size_t klen, bool claim,
		 size_t *idx, uintptr_t *wp)
{
	for (;;) {
		int r = probe_read(a, hash, key, klen, idx, wp);
		struct table_slot *s;
		uint64_t zero = HW_EMPTY;
		struct table_array *nx;

		if (r != PROBE_ABSENT || !claim)
			return r;
		s = &a->slots[*idx];
		nx = next_of(a);
		if (!nx &&
		    atomic_load_explicit(&a->used, memory_order_relaxed) >=
			    a->limit) {
			/* On ENOMEM, use the room that is left. */
			(void)grow(t, a);
			nx = next_of(a);
		}
		if (nx) {
			/* Close this terminal so that no insert of K can land
			 * here once K may be in nx. */
			r = slot_migrate(t, qt, a, *idx);
			if (r < 0)
				return r;
			continue;
		}
		/* Release: pairs with the acquire loads of hw in other
		 * threads' probes (ordering the slot's zeroed state, published
		 * with the array, before it). */
		if (atomic_compare_exchange_strong_explicit(
			    &s->hw, &zero, tag_of(hash), memory_order_release,
			    memory_order_relaxed))
			atomic_fetch_add_explicit(&a->used, 1,
						  memory_order_relaxed);
	}
}

/*
 * Put-if-absent of entry @e, frozen in an older array, into @b or the
 * array it leads to: stop at the first array where K has an identity (live
 * or tombstone, frozen or not), which means the copy already happened.
 * The slot that receives @e takes a reference of its own. Returns 0 or
 * -ENOMEM.
 */
static int copy_entry(struct table *t, struct qsbr_thread *qt,
		      struct table_array *b, struct table_entry *e)
{
	for (;;) {
		size_t j;
		uintptr_t w;
		int r = probe(t, qt, b, e->hash, e->data, e->klen, true, &j,
			      &w);

		if (r < 0)
			return r;
		if (r == PROBE_FULL) {
			r = grow(t, b);
			if (r < 0)
				return r;
			r = PROBE_NEXT;
		}
		if (r == PROBE_NEXT) {
			b = next_of(b);
			continue;
		}
		assert(r == PROBE_FOUND);
		if (entry_of(w))
			return 0;
		if ((w & SLOT_MOVED) || next_of(b)) {
			r = slot_migrate(t, qt, b, j);
			if (r < 0)
				return r;
			if (w & SLOT_MOVED)
				b = next_of(b);
			continue; /* else re-probe: now frozen or taken */
		}
		/* Release: pairs with the acquire loads of ptr (readers,
		 * probe()); the entry's bytes were published to us by the
		 * acquire load of the old slot. */
		if (atomic_compare_exchange_strong_explicit(
			    &b->slots[j].ptr, &w, (uintptr_t)e,
			    memory_order_release, memory_order_relaxed)) {
			/* The new slot's reference. @e cannot be freed yet:
			 * the old slot holds one until its array is retired. */
			table_entry_ref(e);
			return 0;
		}
	}
}

/*
 * Freeze slot @i of @a (closing it with DEAD if empty), copy its live entry
 * into the next array and mark it COPIED. Idempotent; any thread may call
 * it once a->next exists. Returns 0 or -ENOMEM (the slot then stays frozen
 * and uncopied; readers still see its entry, writers of that key retry).
 */
static int slot_migrate(struct table *t, struct qsbr_thread *qt,
			struct table_array *a, size_t i)
{
	struct table_slot *s = &a->slots[i];
	uint64_t zero = HW_EMPTY;
	struct table_entry *e;
	uintptr_t w;

	/* Release: the DEAD mark is published after a->next (which we
	 * loaded with acquire), pairing with probe()'s acquire load. */
	atomic_compare_exchange_strong_explicit(&s->hw, &zero, HW_DEAD,
						memory_order_release,
						memory_order_relaxed);
	/* Acquire: pairs with the release CAS that installed the entry we
	 * may copy (its bytes). */
	w = atomic_load_explicit(&s->ptr, memory_order_acquire);
	/* acq_rel: acquire the entry we freeze (we may copy it), release
	 * so that a reader seeing MOVED also sees a->next. */
	while (!(w & SLOT_MOVED) &&
	       !atomic_compare_exchange_weak_explicit(
		       &s->ptr, &w, w | SLOT_MOVED, memory_order_acq_rel,
		       memory_order_acquire))
		;
	w |= SLOT_MOVED;
	if (w & SLOT_COPIED)
		return 0;
	e = entry_of(w);
	if (e && !(w & SLOT_TOMB)) {
		int r = copy_entry(t, qt, next_of(a), e);

		if (r < 0)
			return r;
	}
	/* Release: a reader that sees COPIED and goes to the next array
	 * must see our copy there (pairs with its acquire load of ptr).
	 * The seq_cst fetch_add on done pairs with advance_cur()'s loads. */
	if (atomic_compare_exchange_strong_explicit(
		    &s->ptr, &w, w | SLOT_COPIED, memory_order_release,
		    memory_order_relaxed) &&
	    atomic_fetch_add_explicit(&a->done, 1, memory_order_seq_cst) + 1 ==
		    a->cap)
		advance_cur(t, qt);
	return 0;
}

/* Migrate one chunk of the oldest array that still has unclaimed chunks. */
static void help_migrate(struct table *t, struct qsbr_thread *qt)
{
	struct table_array *a, *nx;

	/* Acquire: pairs with the seq_cst CAS in advance_cur(). */
	a = atomic_load_explicit(&t->cur, memory_order_acquire);
	for (; (nx = next_of(a)) != NULL; a = nx) {
		size_t start, end;

		if (atomic_load_explicit(&a->copy_idx, memory_order_relaxed) >=
		    a->cap)
			continue;
		start = atomic_fetch_add_explicit(&a->copy_idx, CHUNK,
						  memory_order_relaxed);
		if (start >= a->cap)
			continue;
		end = start + CHUNK < a->cap ? start + CHUNK : a->cap;
		for (size_t i = start; i < end; i++)
			if (slot_migrate(t, qt, a, i) < 0)
				break;
		return;
	}
}

/* The current entry for K starting at array @a, or NULL. Loads only. */
static inline struct table_entry *lookup(struct table_array *a, uint64_t hash,
					 const void *key, size_t klen)
{
	for (;;) {
		size_t i;
		uintptr_t w;
		struct table_entry *e;
		int r = probe_read(a, hash, key, klen, &i, &w);

		if (r == PROBE_ABSENT || r == PROBE_FULL)
			return NULL;
		if (r == PROBE_NEXT) {
			a = next_of(a);
			continue;
		}
		e = entry_of(w);
		if (!(w & SLOT_MOVED))
			return e && !(w & SLOT_TOMB) ? e : NULL;
		/* Frozen: uncopied means still current (a writer sets COPIED
		 * before writing K in the next array). */
		if (e && !(w & SLOT_COPIED))
			return (w & SLOT_TOMB) ? NULL : e;
		a = next_of(a);
	}
}

/*
 * Create a table of at least @initial slots (rounded to a power of two, at
 * least TABLE_MIN_CAP). Returns NULL on ENOMEM.
 */
struct table *table_create(struct qsbr *q, size_t initial, bool one_writer)
{
	struct table *t;
	struct table_array *a;
	size_t cap = TABLE_MIN_CAP;

	while (cap < initial && cap <= SIZE_MAX / 2)
		cap *= 2;
	if (posix_memalign((void **)&t, RS_CACHELINE, sizeof(*t)) != 0)
		return NULL;
	a = array_new(cap);
	if (!a) {
		free(t);
		return NULL;
	}
	t->q = q;
	t->one_writer = one_writer;
#ifndef NDEBUG
	atomic_init(&t->writer, NULL);
#endif
	atomic_init(&t->cur, a);
	atomic_init(&t->count, 0);
	atomic_init(&t->bytes, 0);
	return t;
}

int table_reserve(struct table *t, size_t keys)
{
	struct table_array *a =
		atomic_load_explicit(&t->cur, memory_order_relaxed);
	struct table_array *b;
	size_t cap = a->cap;

	if (atomic_load_explicit(&t->count, memory_order_relaxed) || next_of(a))
		return 0; /* not empty: it grows as usual */
	while (cap / 10 * 7 < keys && cap <= SIZE_MAX / 4)
		cap *= 2;
	if (cap == a->cap)
		return 0;
	b = array_new(cap);
	if (!b)
		return -ENOMEM;
	atomic_store_explicit(&t->cur, b, memory_order_relaxed);
	array_free(a);
	return 0;
}

/*
 * Free every array of the chain, dropping each slot's reference. Arrays
 * already retired are freed by QSBR.
 */
void table_destroy(struct table *t)
{
	struct table_array *a, *nx;

	if (!t)
		return;
	for (a = atomic_load_explicit(&t->cur, memory_order_relaxed); a;
	     a = nx) {
		nx = atomic_load_explicit(&a->next, memory_order_relaxed);
		array_free(a);
	}
	free(t);
}

/*
 * Prefetch hints for batches (MULTI_GET, MULTI_SET): a lookup of a random key
 * costs a cache miss on its slot and another on its entry. A caller with
 * several keys prefetches every slot, then table_get_batch or
 * table_set_batch prefetches every entry, then looks each key up, so the
 * misses overlap instead of adding up. Only the home slot in t->cur is
 * touched; these are hints and never affect results.
 */
void table_prefetch_begin(struct table *t, struct table_prefetch *p)
{
	/* Acquire, though only a hint: it reads the array's size, which
	 * must be ordered after the array's initialization (pairs with the
	 * seq_cst CAS in advance_cur(), as in table_get; on x86 the same
	 * plain load as relaxed). */
	struct table_array *a =
		atomic_load_explicit(&t->cur, memory_order_acquire);

	p->slots = (const uint8_t *)a->slots;
	p->mask = a->cap - 1;
}

/*
 * Prefetch the entry in K's slot of @a: every line of its first @span
 * bytes. Returns the slot where K's tag was found, or SLOT_NONE. The slot
 * is a hint for lookup_at: its loads are relaxed and its entry unchecked.
 */
static inline size_t prefetch_entry_at(struct table_array *a, uint64_t hash,
				       size_t span)
{
	size_t mask = a->cap - 1, i = hash & mask;
	uint64_t tag = tag_of(hash);

	/* K's slot is within a few of its home in all but a crowded array:
	 * scan up to PREFETCH_SCAN of them (the home's line, and the next one
	 * the hardware has likely fetched too), stopping at an empty slot. */
	for (size_t n = 0; n < PREFETCH_SCAN; n++, i = (i + 1) & mask) {
		struct table_slot *s = &a->slots[i];
		uint64_t hw =
			atomic_load_explicit(&s->hw, memory_order_relaxed);
		uintptr_t e, end;

		if (hw == HW_EMPTY)
			return SLOT_NONE;
		if (hw != tag)
			continue;
		e = (uintptr_t)entry_of(
			atomic_load_explicit(&s->ptr, memory_order_relaxed));
		/* Every line of the entry's first @span bytes: one of 112
		 * bytes (a 16-byte key and a 64-byte value) spans two lines
		 * of a slab slot, three of a malloc'd block half the time.
		 * A write wants them too: the entry it replaces is freed
		 * after a grace period, and its block is the next one this
		 * thread's cache hands out. */
		if (span > TABLE_PREFETCH_SPAN_MAX)
			span = TABLE_PREFETCH_SPAN_MAX;
		end = e + (span ? span : 1);
		for (e &= ~(uintptr_t)(RS_CACHELINE - 1); e < end;
		     e += RS_CACHELINE)
			__builtin_prefetch((const void *)e);
		return i;
	}
	return SLOT_NONE;
}

/*
 * lookup(), starting from slot @i of @a, where prefetch_entry_at saw K's
 * tag. If that slot's entry has key K, the slot is K's terminal in @a: no
 * slot before it on K's probe sequence was K's terminal when K was put
 * there, and none can become it, since hw and identity are set once (an
 * empty slot there would have taken K, and only an empty slot turns DEAD).
 * Otherwise (no identity yet, or another key with K's 64-bit tag) the full
 * probe decides.
 */
static inline struct table_entry *lookup_at(struct table_array *a, size_t i,
					    uint64_t hash, const void *key,
					    size_t klen)
{
	/* Acquire: pairs with the release CAS that installed the entry. */
	uintptr_t w =
		atomic_load_explicit(&a->slots[i].ptr, memory_order_acquire);
	struct table_entry *e = entry_of(w);

	if (!e || !key_eq(e, hash, key, klen))
		return lookup(a, hash, key, klen);
	if (!(w & SLOT_MOVED) || !(w & SLOT_COPIED))
		return (w & SLOT_TOMB) ? NULL : e;
	return lookup(next_of(a), hash, key, klen);
}

void table_get_batch(struct table *t, struct qsbr_thread *qt, size_t m,
		     const uint64_t *hash, const void *const *key,
		     const size_t *klen, size_t vguess,
		     struct table_entry **out)
{
	/* Acquire: pairs with the seq_cst CAS in advance_cur(), as in
	 * table_get. One load for the batch: a lookup that starts at an
	 * array cur has since moved past finds the newest value by following
	 * the chain, and the array stays until our next quiescent point. */
	struct table_array *a =
		atomic_load_explicit(&t->cur, memory_order_acquire);
	size_t at[TABLE_BATCH_MAX];

	(void)qt;
	assert(m <= TABLE_BATCH_MAX);
	for (size_t j = 0; j < m; j++)
		at[j] = prefetch_entry_at(a, hash[j],
					  table_entry_span(klen[j], vguess));
	for (size_t j = 0; j < m; j++)
		out[j] =
			at[j] == SLOT_NONE
				? lookup(a, hash[j], key[j], klen[j])
				: lookup_at(a, at[j], hash[j], key[j], klen[j]);
}

/* Lock-free lookup; the result is borrowed until the next quiescent point. */
struct table_entry *table_get(struct table *t, struct qsbr_thread *qt,
			      uint64_t hash, const void *key, size_t klen)
{
	(void)qt;
	/* Acquire: pairs with the seq_cst CAS in advance_cur(). */
	return lookup(atomic_load_explicit(&t->cur, memory_order_acquire), hash,
		      key, klen);
}

static void account(struct table *t, const struct table_entry *gone,
		    const struct table_entry *added)
{
	int64_t dc = 0, db = 0;

	if (gone) {
		dc--;
		db -= (int64_t)entry_bytes(gone);
	}
	if (added) {
		dc++;
		db += (int64_t)entry_bytes(added);
	}
	if (dc)
		atomic_fetch_add_explicit(&t->count, dc, memory_order_relaxed);
	if (db)
		atomic_fetch_add_explicit(&t->bytes, db, memory_order_relaxed);
}

#ifndef NDEBUG
/* A debug build's proof that a one-writer table has one writer: the first
 * thread to take a value's lock leaves its token, and every later one must
 * be the same thread. */
static _Thread_local char writer_token;

static void one_writer_check(struct table *t)
{
	const void *none = NULL;

	if (!atomic_compare_exchange_strong(&t->writer, &none, &writer_token))
		assert(none == &writer_token);
}
#else
static void one_writer_check(struct table *t)
{
	(void)t;
}
#endif

void table_writer_done(struct table *t)
{
#ifndef NDEBUG
	atomic_store_explicit(&t->writer, NULL, memory_order_relaxed);
#else
	(void)t;
#endif
}

/*
 * The sequence lock of a value written in place (table.h). A writer takes
 * bit 0 of seq from the even value it expects, writes, and releases by
 * storing seq + 2 (one more write); table_cas, which writes nothing,
 * stores the old seq back. Readers wait while bit 0 is set and retry if
 * seq moved. Writers never wait: one that finds the lock taken goes the
 * replacing way instead.
 *
 * Among several writers the lock is a CAS. With one writer nobody else
 * can take it or move seq, and no slot changes but by that writer, so
 * plain stores do: the single-writer sequence lock. That is one locked
 * instruction less per write in place (a MULTI_SET of 16 keys costs about
 * 5 % less CPU with one reactor); readers are the same in both modes.
 */
static bool value_lock(struct table *t, struct table_entry *e, uint32_t seq)
{
	if (seq & 1)
		return false;
	if (t->one_writer) {
		one_writer_check(t);
		if (atomic_load_explicit(&e->seq, memory_order_relaxed) != seq)
			return false;
		atomic_store_explicit(&e->seq, seq | 1, memory_order_relaxed);
		/* Release fence: no byte of the value written after it is
		 * seen without the odd seq (pairs with the acquire fence in
		 * table_read_valid). */
		atomic_thread_fence(memory_order_release);
		return true;
	}
	/* seq_cst: the lock is ordered before the slot load that checks the
	 * entry is still live (table_set) and before the replacing CAS
	 * (swap), both seq_cst. */
	return atomic_compare_exchange_strong_explicit(&e->seq, &seq, seq | 1,
						       memory_order_seq_cst,
						       memory_order_relaxed);
}

/* Release without a write: readers that waited see the same seq. */
static void value_unlock(struct table_entry *e, uint32_t seq)
{
	/* Release: pairs with table_read_begin's acquire. */
	atomic_store_explicit(&e->seq, seq, memory_order_release);
}

/* The value's bytes, by a writer holding the lock (racing readers only
 * copy them and then see seq move). */
static void value_write(struct table_entry *e, const void *val, size_t n)
{
#ifdef TABLE_TSAN
	for (size_t i = 0; i < n; i++)
		atomic_store_explicit((_Atomic uint8_t *)e->data + e->klen + i,
				      ((const uint8_t *)val)[i],
				      memory_order_relaxed);
#else
	table_copy_short(e->data + e->klen, val, n);
#endif
}

/*
 * SET: rewrite K's value in place when the slot is K's live entry in the
 * only array, not frozen, with a value of the same length under
 * TABLE_INPLACE_MAX, and its lock is free; else put a new entry. Why the
 * in-place write is linearizable: after taking the lock the writer checks
 * that the slot still holds the entry, unchanged (not replaced, not
 * frozen); that check is its linearization point, and the lock keeps every
 * reader of the entry's value, and every table_cas that read it, from
 * seeing a mix. A replacement after the check (a table_put, which does not
 * take the lock) is ordered after the write: whoever reads the slot after
 * it sees the new entry, and the old one is retired as usual. A frozen
 * slot's entry may also sit in the next array; a write that won the check
 * before the freeze is then the value in both, which is what a copy after
 * the write would have been.
 */
static int set_at(struct table *t, struct qsbr_thread *qt,
		  struct table_array *a, size_t hint, uint64_t hash,
		  const void *key, size_t klen, const void *val, size_t vlen)
{
	struct table_entry *e;
	size_t i = hint;
	uintptr_t w = 0;
	int ret;

	if (vlen >= TABLE_INPLACE_MAX || next_of(a))
		goto put;
	/* A slot holding K's entry is K's terminal in @a (see lookup_at):
	 * start there when the prefetch saw K's tag, else probe. */
	if (hint != SLOT_NONE) {
		/* Acquire: pairs with the release CAS that installed the
		 * entry, as in probe_read. */
		w = atomic_load_explicit(&a->slots[hint].ptr,
					 memory_order_acquire);
		e = entry_of(w);
		if (!e || !key_eq(e, hash, key, klen))
			hint = SLOT_NONE;
	}
	if (hint == SLOT_NONE &&
	    probe_read(a, hash, key, klen, &i, &w) != PROBE_FOUND)
		goto put;
	e = entry_of(w);
	if (e && !(w & (SLOT_TOMB | SLOT_MOVED)) && e->vlen == vlen) {
		uint32_t seq =
			atomic_load_explicit(&e->seq, memory_order_relaxed);

		if (value_lock(t, e, seq)) {
			/* seq_cst: after the lock in S (see value_lock). With
			 * one writer this always holds. */
			if (atomic_load_explicit(&a->slots[i].ptr,
						 memory_order_seq_cst) == w) {
				value_write(e, val, vlen);
				/* Release: pairs with table_read_begin's
				 * acquire (one more write: seq + 2). */
				atomic_store_explicit(&e->seq, seq + 2,
						      memory_order_release);
				return 1;
			}
			value_unlock(e, seq);
		}
	}
put:
	e = table_entry_new(hash, key, klen, val, vlen, NULL, 0);
	if (!e)
		return -ENOMEM;
	ret = table_put(t, qt, hash, key, klen, e);
	if (ret)
		table_entry_unref(e);
	return ret;
}

int table_set(struct table *t, struct qsbr_thread *qt, uint64_t hash,
	      const void *key, size_t klen, const void *val, size_t vlen)
{
	/* Acquire: pairs with the seq_cst CAS in advance_cur(). */
	return set_at(t, qt,
		      atomic_load_explicit(&t->cur, memory_order_acquire),
		      SLOT_NONE, hash, key, klen, val, vlen);
}

int table_set_batch(struct table *t, struct qsbr_thread *qt, size_t m,
		    const uint64_t *hash, const void *const *key,
		    const size_t *klen, const void *const *val,
		    const size_t *vlen, size_t *done)
{
	/* Acquire: pairs with the seq_cst CAS in advance_cur(). One load for
	 * the batch: writes in place happen only while @a has no next array,
	 * which makes it the newest array (and still cur); otherwise set_at
	 * puts a new entry through table_put, which finds the newest array. */
	struct table_array *a =
		atomic_load_explicit(&t->cur, memory_order_acquire);
	size_t at[TABLE_BATCH_MAX];
	int in_place = 0;

	assert(m <= TABLE_BATCH_MAX);
	for (size_t j = 0; j < m; j++)
		at[j] = prefetch_entry_at(a, hash[j],
					  table_entry_span(klen[j], vlen[j]));
	for (*done = 0; *done < m; ++*done) {
		size_t j = *done;
		int ret = set_at(t, qt, a, at[j], hash[j], key[j], klen[j],
				 val[j], vlen[j]);

		if (ret < 0)
			return ret;
		in_place += ret;
	}
	return in_place;
}

/*
 * Compare-and-swap the live entry of K (see table.h), or with @any swap
 * whatever is live (table_put). On success the table takes the caller's
 * reference to @desired, and the entry replaced (and any tombstone
 * replaced) is retired through @qt. A delete allocates a
 * key-only tombstone; if that fails the old entry itself becomes the
 * tombstone, so a delete never fails for lack of memory.
 */
static int swap(struct table *t, struct qsbr_thread *qt, uint64_t hash,
		const void *key, size_t klen, bool any,
		struct table_entry *expected, uint32_t seq,
		struct table_entry *desired)
{
	bool claim = desired && (any || !expected);
	struct table_entry *tomb = NULL; /* owned while not installed */
	struct table_array *a;
	int ret;

	assert(!desired || (desired->hash == hash && desired->klen == klen));
	help_migrate(t, qt);
	/* Acquire: pairs with the seq_cst CAS in advance_cur(). */
	a = atomic_load_explicit(&t->cur, memory_order_acquire);
	for (;;) {
		struct table_entry *e, *cur;
		struct table_slot *s;
		uintptr_t w, nw;
		size_t i;
		bool ok;
		int r = probe(t, qt, a, hash, key, klen, claim, &i, &w);

		if (r < 0) {
			ret = r;
			break;
		}
		if (r == PROBE_FULL && claim) {
			ret = grow(t, a);
			if (ret < 0)
				break;
			r = PROBE_NEXT;
		}
		if (r == PROBE_NEXT) {
			a = next_of(a);
			continue;
		}
		if (r != PROBE_FOUND) {
			/* K is absent everywhere (only a delete gets here). */
			ret = expected && !any ? -EAGAIN : 0;
			break;
		}
		s = &a->slots[i];
		e = entry_of(w);
		if (w & SLOT_MOVED) {
			ret = slot_migrate(t, qt, a, i);
			if (ret < 0)
				break;
			a = next_of(a);
			continue;
		}
		cur = e && !(w & SLOT_TOMB) ? e : NULL;
		if (!any && cur != expected) {
			ret = -EAGAIN;
			break;
		}
		if (!cur && !desired) {
			ret = 0;
			break;
		}
		if (!e) {
			/* An insert into a slot without identity. Only the
			 * newest array takes new keys. */
			if (next_of(a)) {
				ret = slot_migrate(t, qt, a, i);
				if (ret < 0)
					break;
				continue;
			}
			/* Release: pairs with the acquire loads of ptr.
			 * seq_cst: a publication waiters_wake_sc relies on
			 * (see below). */
			if (atomic_compare_exchange_strong_explicit(
				    &s->ptr, &w, (uintptr_t)desired,
				    memory_order_seq_cst,
				    memory_order_relaxed)) {
				account(t, NULL, desired);
				ret = 0;
				break;
			}
			continue;
		}
		if (desired) {
			nw = (uintptr_t)desired;
		} else {
			if (!tomb)
				tomb = table_entry_new(hash, key, klen, NULL, 0,
						       NULL, 0);
			nw = (uintptr_t)(tomb ? tomb : cur) | SLOT_TOMB;
		}
		/* The caller read @expected's value at @seq: hold its
		 * sequence lock across the CAS, so that no write in place
		 * lands between that read and the replacement (ABA). */
		if (!any && cur && !value_lock(t, cur, seq)) {
			ret = -EAGAIN;
			break;
		}
		/* Release: pairs with the acquire loads of ptr (the new
		 * entry's bytes); a failure means a writer or a freeze got
		 * there first, so re-probe. seq_cst (the same locked
		 * instruction on x86) because this CAS is the unlink that
		 * qsbr_retire_sc() relies on in place of its fence, and the
		 * publication that waiters_wake_sc() does. */
		ok = atomic_compare_exchange_strong_explicit(
			&s->ptr, &w, nw, memory_order_seq_cst,
			memory_order_relaxed);
		if (!any && cur)
			value_unlock(cur, seq);
		if (ok) {
			if (w & SLOT_TOMB)
				qsbr_retire_sc(qt, e, entry_retired);
			if (cur && (desired || tomb))
				qsbr_retire_sc(qt, cur, entry_retired);
			tomb = NULL;
			account(t, cur, desired);
			ret = 0;
			break;
		}
	}
	if (tomb)
		table_entry_unref(tomb);
	return ret;
}

int table_cas(struct table *t, struct qsbr_thread *qt, uint64_t hash,
	      const void *key, size_t klen, struct table_entry *expected,
	      uint32_t seq, struct table_entry *desired)
{
	return swap(t, qt, hash, key, klen, false, expected, seq, desired);
}

/*
 * Make @desired the live entry of K whatever it was: one probe, where a
 * lookup followed by table_cas would probe twice.
 */
int table_put(struct table *t, struct qsbr_thread *qt, uint64_t hash,
	      const void *key, size_t klen, struct table_entry *desired)
{
	/* Acquire: pairs with the seq_cst CAS in advance_cur(). */
	struct table_array *a =
		atomic_load_explicit(&t->cur, memory_order_acquire);
	size_t i;
	uintptr_t w;

	assert(desired && desired->hash == hash && desired->klen == klen);
	/*
	 * The common case without swap()'s generality: K already has its
	 * slot in the only array (no migration under way, so nothing to help
	 * with), not frozen. A slot frozen after our check of `next` fails
	 * the CAS (MOVED changed the word), and one frozen after the CAS
	 * copies our entry: either way as in swap(). Inserts, frozen slots
	 * and lost races go the general way. The CAS is seq_cst as in
	 * swap(): the unlink for qsbr_retire_sc() and the publication for
	 * readers and waiters_wake_sc().
	 */
	if (!next_of(a) &&
	    probe_read(a, hash, key, klen, &i, &w) == PROBE_FOUND &&
	    entry_of(w) && !(w & SLOT_MOVED) &&
	    atomic_compare_exchange_strong_explicit(
		    &a->slots[i].ptr, &w, (uintptr_t)desired,
		    memory_order_seq_cst, memory_order_relaxed)) {
		qsbr_retire_sc(qt, entry_of(w), entry_retired);
		account(t, (w & SLOT_TOMB) ? NULL : entry_of(w), desired);
		return 0;
	}
	return swap(t, qt, hash, key, klen, true, NULL, 0, desired);
}

/* Live keys (relaxed; may lag concurrent writers). */
size_t table_count(struct table *t)
{
	int64_t n = atomic_load_explicit(&t->count, memory_order_relaxed);

	return n > 0 ? (size_t)n : 0;
}

/* Bytes of live keys and values (relaxed; may lag concurrent writers). */
size_t table_bytes(struct table *t)
{
	int64_t n = atomic_load_explicit(&t->bytes, memory_order_relaxed);

	return n > 0 ? (size_t)n : 0;
}

/*
 * Walk every live entry. Older arrays are first migrated to completion, so
 * every key present when the walk starts has its one identity slot in the
 * newest array; each identity slot is reported once, with the key's current
 * entry (looked up further down the chain if that array froze meanwhile).
 * Returns 0, @cb's first non-zero value, or -ENOMEM if a migration could
 * not finish.
 */
int table_foreach(struct table *t, struct qsbr_thread *qt,
		  int (*cb)(struct table_entry *e, void *arg), void *arg)
{
	struct table_array *a, *nx;

	/* Acquire: pairs with the seq_cst CAS in advance_cur(). */
	a = atomic_load_explicit(&t->cur, memory_order_acquire);
	for (; (nx = next_of(a)) != NULL; a = nx) {
		for (size_t i = 0; i < a->cap; i++) {
			int r = slot_migrate(t, qt, a, i);

			if (r < 0)
				return r;
		}
	}
	for (size_t i = 0; i < a->cap; i++) {
		struct table_slot *s = &a->slots[i];
		struct table_entry *e, *cur;
		uintptr_t w;
		int r;

		/* Acquire: pairs with the claim CAS in probe(). */
		if (atomic_load_explicit(&s->hw, memory_order_acquire) <=
		    HW_DEAD)
			continue;
		/* Acquire: pairs with the release CAS that installed it. */
		w = atomic_load_explicit(&s->ptr, memory_order_acquire);
		e = entry_of(w);
		if (!e)
			continue;
		if (!(w & SLOT_MOVED) || !(w & SLOT_COPIED))
			cur = (w & SLOT_TOMB) ? NULL : e;
		else
			cur = lookup(next_of(a), e->hash, e->data, e->klen);
		if (cur) {
			r = cb(cur, arg);
			if (r)
				return r;
		}
	}
	return 0;
}
