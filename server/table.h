/* SPDX-License-Identifier: MIT */
/*
 * table.h - the lock-free open-addressing hash table of the key-value store.
 *
 * Keys map to immutable entries (key bytes and value bytes in one block).
 * Readers never lock: a lookup returns a borrowed pointer that stays valid
 * until the calling thread's next quiescent point (qsbr.h); to keep an entry
 * longer (a reply still being sent), take a reference. Writers replace an
 * entry with one compare-and-swap (table_cas); read-modify-write operations
 * (ADD, APPEND, COMPARE_SET) are CAS loops in the caller. A replaced or
 * deleted entry is retired through QSBR and its table reference dropped
 * after the grace period. Growth migrates slots to a larger array without
 * stopping readers; see table.c for the protocol.
 *
 * Every function may be called from any number of threads at once, each with
 * its own struct qsbr_thread. A successful table_cas or table_put publishes
 * with a seq_cst read-modify-write (qsbr_retire_sc and waiters_wake_sc rely
 * on it).
 */
#ifndef RS_SERVER_TABLE_H
#define RS_SERVER_TABLE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct qsbr;
struct qsbr_thread;
struct table;

struct table_entry {
	atomic_uint refs; /* one for the table, one per holder (e.g. a send) */
	uint32_t klen;
	uint64_t hash;
	uint64_t vlen;
	uint8_t data[];   /* klen key bytes, then vlen value bytes */
};

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
struct table_entry *table_entry_new(uint64_t hash, const void *key,
				    size_t klen, const void *v1, size_t l1,
				    const void *v2, size_t l2);
void table_entry_ref(struct table_entry *e);
/* Drops a reference; frees the entry at zero. */
void table_entry_unref(struct table_entry *e);

/* @q receives retired entries and arrays; @initial is a slot-count hint. */
struct table *table_create(struct qsbr *q, size_t initial);
/* Frees the table and every entry. No other thread may use it. */
void table_destroy(struct table *t);

/* The live entry for @key (hashed to @hash), or NULL. Borrowed (see top). */
struct table_entry *table_get(struct table *t, struct qsbr_thread *qt,
			      uint64_t hash, const void *key, size_t klen);

/*
 * Hints for a batch of lookups: prefetch each key's slot, then each key's
 * entry, then call table_get for each, so their cache misses overlap. They
 * never change results. Safe from any thread inside a QSBR online section.
 */
void table_prefetch(struct table *t, uint64_t hash);
void table_prefetch_entry(struct table *t, uint64_t hash);

/*
 * If the live entry for @key is @expected (NULL: absent), make it @desired
 * (NULL: delete). @desired, when not NULL, must have been made with the same
 * key and hash; on success the table owns the caller's reference to it, and
 * @expected is retired. Returns 0 on success, -EAGAIN if the entry is no
 * longer @expected (re-read and retry), -ENOMEM if the table could not grow.
 * On failure @desired still belongs to the caller.
 */
int table_cas(struct table *t, struct qsbr_thread *qt, uint64_t hash,
	      const void *key, size_t klen, struct table_entry *expected,
	      struct table_entry *desired);

/*
 * Make @desired (not NULL, made with @key and @hash) the live entry of
 * @key, replacing whatever was there; the table takes the caller's
 * reference and retires the old entry. Returns 0 or -ENOMEM (then
 * @desired still belongs to the caller). Cheaper than a table_get and a
 * table_cas when the old value does not matter (SET).
 */
int table_put(struct table *t, struct qsbr_thread *qt, uint64_t hash,
	      const void *key, size_t klen, struct table_entry *desired);

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
