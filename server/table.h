/* SPDX-License-Identifier: MIT */
/*
 * table.h - the lock-free open-addressing hash table of the key-value store.
 *
 * Keys map to entries (key bytes and value bytes in one block). Readers
 * never lock: a lookup returns a borrowed pointer that stays valid until the
 * calling thread's next quiescent point (qsbr.h); to keep an entry longer (a
 * reply still being sent), take a reference. Writers replace an entry with
 * one compare-and-swap (table_cas, table_put); read-modify-write operations
 * (ADD, APPEND, COMPARE_SET) are CAS loops in the caller. A replaced or
 * deleted entry is retired through QSBR and its table reference dropped
 * after the grace period. Growth migrates slots to a larger array without
 * stopping readers; see table.c for the protocol.
 *
 * Values written in place. table_set overwrites a live value of the same
 * length, shorter than TABLE_INPLACE_MAX, inside its entry instead of
 * replacing the entry (no allocation, no retirement: SET of a heartbeat, a
 * MULTI_SET over keys that exist). Such a value is guarded by the entry's
 * seq, a sequence lock: read it with table_entry_read_val (or between
 * table_read_begin and table_read_valid), and hand the seq a value was read
 * at to table_cas. Keys, key and value lengths never change; values of
 * TABLE_INPLACE_MAX bytes or more never change, so they may be read, and
 * sent by reference, directly.
 *
 * Every function may be called from any number of threads at once, each with
 * its own struct qsbr_thread, except that a table created for one writer
 * (table_create) takes its writes from one thread only. A successful
 * table_cas or table_put publishes with a seq_cst read-modify-write
 * (qsbr_retire_sc and waiters_wake_sc rely on it); a write in place by
 * table_set does not (see there).
 */
#ifndef RS_SERVER_TABLE_H
#define RS_SERVER_TABLE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "compiler.h"

struct qsbr;
struct qsbr_thread;
struct table;

struct table_entry {
	atomic_uint refs; /* one for the table, one per holder (e.g. a send) */
	uint32_t klen;
	uint64_t hash;
	uint64_t vlen;
	_Atomic uint32_t seq; /* bit 0: a writer holds the value; + 2 a write */
	uint32_t unused;
	uint8_t data[]; /* klen key bytes, then vlen value bytes */
};

/* Values shorter than this may be rewritten in place (see above). At most
 * OUTQ_REF_MIN, so a value sent by reference never changes under the send. */
#define TABLE_INPLACE_MAX 4096

#if defined(__SANITIZE_THREAD__)
#define TABLE_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TABLE_TSAN 1
#endif
#endif

/*
 * memcpy for the short keys and values of most entries: up to 64 bytes, two
 * overlapping moves of 32, 16 or 8 bytes, inline and without a loop,
 * instead of a call that dispatches on the length; longer copies are
 * memcpy's.
 */
static inline void table_copy_short(uint8_t *d, const void *src, size_t n)
{
	const uint8_t *s = src;
	uint64_t a, b;

	if (n > 64) {
		memcpy(d, s, n);
	} else if (n >= 32) {
		memcpy(d, s, 32);
		memcpy(d + n - 32, s + n - 32, 32);
	} else if (n >= 16) {
		memcpy(d, s, 16);
		memcpy(d + n - 16, s + n - 16, 16);
	} else if (n >= 8) {
		memcpy(&a, s, 8);
		memcpy(&b, s + n - 8, 8);
		memcpy(d, &a, 8);
		memcpy(d + n - 8, &b, 8);
	} else {
		for (size_t i = 0; i < n; i++)
			d[i] = s[i];
	}
}

/*
 * Copy @n bytes that a writer in place may be changing (the copy is
 * validated by the seq afterwards). Under TSan, byte by byte as relaxed
 * atomics, so that the race a sequence lock accepts is not reported.
 */
static inline void table_racy_copy(void *dst, const void *src, size_t n)
{
#ifdef TABLE_TSAN
	for (size_t i = 0; i < n; i++)
		((uint8_t *)dst)[i] = atomic_load_explicit(
			(_Atomic const uint8_t *)src + i, memory_order_relaxed);
#else
	table_copy_short(dst, src, n);
#endif
}

/* The seq to read @e's value at: waits out a write in place (a copy of at
 * most TABLE_INPLACE_MAX bytes). Acquire: pairs with the writer's unlock. */
static inline uint32_t table_read_begin(const struct table_entry *e)
{
	uint32_t s;

	while ((s = atomic_load_explicit(&e->seq, memory_order_acquire)) & 1)
		cpu_relax();
	return s;
}

/* Whether what was read of @e's value since table_read_begin returned @s
 * is consistent (no write in place began meanwhile). */
static inline bool table_read_valid(const struct table_entry *e, uint32_t s)
{
	/* Acquire fence: orders the value reads before the seq re-read. */
	atomic_thread_fence(memory_order_acquire);
	return atomic_load_explicit(&e->seq, memory_order_relaxed) == s;
}

/* Copy the first min(e->vlen, @cap) bytes of @e's value to @dst,
 * consistently; returns the seq they were read at (for table_cas). */
static inline uint32_t table_entry_read_val(const struct table_entry *e,
					    void *dst, size_t cap)
{
	const uint8_t *src = e->data + e->klen;
	size_t n = e->vlen < cap ? e->vlen : cap; /* vlen is fixed */
	uint32_t s;

	do {
		s = table_read_begin(e);
		if (e->vlen >= TABLE_INPLACE_MAX) { /* never rewritten */
			memcpy(dst, src, n);
			return s;
		}
		table_racy_copy(dst, src, n);
	} while (!table_read_valid(e, s));
	return s;
}

static inline const uint8_t *table_entry_key(const struct table_entry *e)
{
	return e->data;
}

static inline const uint8_t *table_entry_val(const struct table_entry *e)
{
	return e->data + e->klen;
}

/*
 * A new entry with refs = 1, holding the key and the concatenation of two
 * value parts (APPEND builds old+new without a temporary; pass len 0 for an
 * unused part). A NULL @v1 leaves its @l1 bytes for the caller to fill
 * before anyone else sees the entry. Returns NULL on ENOMEM.
 */
struct table_entry *table_entry_new(uint64_t hash, const void *key, size_t klen,
				    const void *v1, size_t l1, const void *v2,
				    size_t l2);
void table_entry_ref(struct table_entry *e);
/* Drops a reference; frees the entry at zero. */
void table_entry_unref(struct table_entry *e);

/*
 * @q receives retired entries and arrays; @initial is a slot-count hint.
 * With @one_writer, only one thread ever calls the functions that write
 * (table_set, table_set_batch, table_cas, table_put), while any number may
 * read: a value's sequence lock is then taken with plain stores instead of
 * a locked compare-and-swap, which a second writer would race (a debug
 * build asserts that no second thread takes one).
 */
struct table *table_create(struct qsbr *q, size_t initial, bool one_writer);
/* Frees the table and every entry. No other thread may use it. */
void table_destroy(struct table *t);

/*
 * Room for @keys keys in an empty table, before any thread uses it (the
 * write log's replay, which knows roughly how many keys it brings: growing
 * a million keys from the first array migrates every slot about twice and
 * took 44 % of the replay). Returns 0 or -ENOMEM; a table that is not
 * empty is left to grow as usual.
 */
int table_reserve(struct table *t, size_t keys);

/*
 * The one writer of a one-writer table is done (start-up replay hands the
 * table to the reactor): another thread may become the writer. The caller
 * orders the two threads' writes (a thread join or start in between).
 */
void table_writer_done(struct table *t);

/* The live entry for @key (hashed to @hash), or NULL. Borrowed (see top). */
struct table_entry *table_get(struct table *t, struct qsbr_thread *qt,
			      uint64_t hash, const void *key, size_t klen);

/*
 * A hint for a batch of lookups or writes: prefetch each key's slot first,
 * then call table_get_batch or table_set_batch, so that the cache misses of
 * the batch's keys overlap instead of adding up. Never changes results.
 *
 * table_prefetch_begin takes the current array once per batch, and
 * table_prefetch_slot, inline, prefetches a key's slot in it: no call per
 * key (with a call per key, a 16-pair MULTI_SET ran about 4 % more CPU;
 * bench/RESULTS.md). Safe from any thread inside a QSBR online section: an
 * array that a concurrent growth replaces stays readable until the
 * caller's next quiescent state, and a prefetch never faults, so a stale
 * view only wastes the hint.
 */
struct table_prefetch {
	const uint8_t *slots;
	size_t mask;
};

#define TABLE_SLOT_BYTES 16

void table_prefetch_begin(struct table *t, struct table_prefetch *p);

static inline void table_prefetch_slot(const struct table_prefetch *p,
				       uint64_t hash)
{
	__builtin_prefetch(p->slots + (hash & p->mask) * TABLE_SLOT_BYTES);
}

/* The most bytes of an entry that the batch calls prefetch. */
#define TABLE_PREFETCH_SPAN_MAX 256

/* The bytes of an entry with a @klen-byte key and a @vlen-byte value. */
static inline size_t table_entry_span(size_t klen, size_t vlen)
{
	return sizeof(struct table_entry) + klen + vlen;
}

/* The most keys table_get_batch and table_set_batch take at once. */
#define TABLE_BATCH_MAX 16

/*
 * m <= TABLE_BATCH_MAX calls of table_get in one, for keys whose slots the
 * caller has prefetched (table_prefetch_slot): prefetches each entry (the lines
 * of a @vguess-byte value), then looks each key up into @out. The same
 * results as table_get; cheaper, because the lookup starts at the slot the
 * entry prefetch found instead of probing again from the key's home.
 */
void table_get_batch(struct table *t, struct qsbr_thread *qt, size_t m,
		     const uint64_t *hash, const void *const *key,
		     const size_t *klen, size_t vguess,
		     struct table_entry **out);

/*
 * If the live entry for @key is @expected (NULL: absent) with the value
 * read at @seq (from table_entry_read_val or table_read_begin; ignored for
 * NULL), make it @desired (NULL: delete). @desired, when not NULL, must have
 * been made with the same key and hash; on success the table owns the
 * caller's reference to it, and @expected is retired. Returns 0 on success,
 * -EAGAIN if the entry is no longer @expected or its value was rewritten in
 * place (re-read and retry), -ENOMEM if the table could not grow. On
 * failure @desired still belongs to the caller.
 */
int table_cas(struct table *t, struct qsbr_thread *qt, uint64_t hash,
	      const void *key, size_t klen, struct table_entry *expected,
	      uint32_t seq, struct table_entry *desired);

/*
 * Make @desired (not NULL, made with @key and @hash) the live entry of
 * @key, replacing whatever was there; the table takes the caller's
 * reference and retires the old entry. Returns 0 or -ENOMEM (then
 * @desired still belongs to the caller). Cheaper than a table_get and a
 * table_cas when the old value does not matter (SET).
 */
int table_put(struct table *t, struct qsbr_thread *qt, uint64_t hash,
	      const void *key, size_t klen, struct table_entry *desired);

/*
 * Make @val the value of @key (hashed to @hash), whatever it was: in place
 * when the live value has the same length and is short enough (see the
 * top), else as a new entry through table_put. Returns 0 if it published a
 * new entry (with a seq_cst read-modify-write, as table_put), 1 if it wrote
 * in place (published with a release store only: a caller about to rely on
 * a seq_cst publication, as waiters_wake_sc does, issues a seq_cst fence
 * first, once for a batch of writes), or -ENOMEM.
 */
int table_set(struct table *t, struct qsbr_thread *qt, uint64_t hash,
	      const void *key, size_t klen, const void *val, size_t vlen);

/*
 * m <= TABLE_BATCH_MAX calls of table_set in one, in order, for keys whose
 * slots the caller has prefetched (table_prefetch_slot): prefetches each entry,
 * then sets each value, starting at the slot the prefetch found instead of
 * probing again from the key's home. Stops at the first failure. Returns
 * how many values were written in place (see table_set: the caller issues
 * one seq_cst fence for them), or -ENOMEM; *@done is the number of values
 * set either way.
 */
int table_set_batch(struct table *t, struct qsbr_thread *qt, size_t m,
		    const uint64_t *hash, const void *const *key,
		    const size_t *klen, const void *const *val,
		    const size_t *vlen, size_t *done);

/* Live keys, and the bytes of their keys and values (relaxed reads). */
size_t table_count(struct table *t);
size_t table_bytes(struct table *t);

/*
 * Call @cb for every live entry (weakly consistent: an entry changed during
 * the walk may be seen old, new or not at all, but an entry present for the
 * whole walk is seen once). Stops early and returns @cb's value if it is not
 * 0. Entries are borrowed as for table_get.
 */
int table_foreach(struct table *t, struct qsbr_thread *qt,
		  int (*cb)(struct table_entry *e, void *arg), void *arg);

#endif
