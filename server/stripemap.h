/* SPDX-License-Identifier: MIT */
/*
 * stripemap.h - a hash map split into lock stripes: records keyed by (hash,
 * key bytes), each record in the chain of the stripe its hash's low bits
 * pick. The waiters (a record per waited-on key) and the queues (a record
 * per non-empty queue) are built on it.
 *
 * A stripe is a mutex, the chain of its records and one atomic counter that
 * belongs to the map's owner, padded to a cache line so that unrelated keys
 * do not contend. The mutex covers the chain and every record in it: find,
 * add and del are called with it held, and so is anything the owner does to
 * its records. The counter is there so that a hot path can ask "is anything
 * here?" with one load of the line the lock lives on, without taking the
 * lock; the owner keeps it and states its memory ordering (waiters.c counts
 * its nodes there and gives the Dekker argument that makes the unlocked
 * check safe; queues.c does not use it).
 *
 * Records are the owner's structs, allocated by the map: the struct starts
 * with a struct stripemap_rec (at offset 0: assert it) and ends with the
 * key bytes (a flexible array member), and the map is told both sizes at
 * init. Records are freed when they are deleted, and by stripemap_fini.
 *
 * The number of stripes is fixed (4096): the map is embedded in its owner,
 * so a stripe's address is computed from the owner's without a load.
 */
#ifndef RS_SERVER_STRIPEMAP_H
#define RS_SERVER_STRIPEMAP_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "compiler.h"
#include "list.h"

#define STRIPEMAP_STRIPES 4096

/* The head of every record: its place in the chain, its hash and key. */
struct stripemap_rec {
	struct stripemap_rec *next, *prev; /* in the stripe's chain */
	uint64_t hash;
	size_t klen;
};

LIST_DEFINE(stripemap_chain, struct stripemap_rec, next, prev)

struct stripe {
	pthread_mutex_t lock;
	atomic_uint_fast64_t count;  /* the owner's (see the top) */
	struct stripemap_chain recs; /* owned; newest first */
} RS_ALIGNED_CACHELINE;

struct stripemap {
	struct stripe stripes[STRIPEMAP_STRIPES];
	/* Read-only after init, and read by every lookup: an owner keeps
	 * fields it writes often off this line (RS_ALIGNED_CACHELINE). */
	size_t rec_size; /* the owner's record struct, key excluded */
	size_t key_off;  /* where a record's key bytes start */
};

/*
 * Initialise @m (embedded in its owner) for records of @rec_size bytes plus
 * the key, whose bytes start @key_off bytes into the record: pass
 * sizeof(struct rec) and offsetof(struct rec, key).
 */
void stripemap_init(struct stripemap *m, size_t rec_size, size_t key_off);

/*
 * Free every record (calling @drop, if not NULL, on each first, to release
 * what the owner hangs off it) and the locks. No thread may use @m.
 */
void stripemap_fini(struct stripemap *m,
		    void (*drop)(struct stripemap_rec *r, void *arg),
		    void *arg);

/* The stripe of @hash. */
static inline struct stripe *stripemap_stripe(struct stripemap *m,
					      uint64_t hash)
{
	return &m->stripes[hash & (STRIPEMAP_STRIPES - 1)];
}

/*
 * Under @s's lock: the record of key @key (hashed to @hash, in stripe @s),
 * or NULL. Inline: every wake-up and every queue operation looks up.
 */
static inline struct stripemap_rec *
stripemap_find(const struct stripemap *m, const struct stripe *s, uint64_t hash,
	       const uint8_t *key, size_t klen)
{
	for (struct stripemap_rec *r = s->recs.head; r; r = r->next)
		if (r->hash == hash && r->klen == klen &&
		    !memcmp((const uint8_t *)r + m->key_off, key, klen))
			return r;
	return NULL;
}

/*
 * Under @s's lock: a new record for @key (not in the map yet), first in
 * @s's chain: its head and its copy of the key are set, the owner's fields
 * between them are not (the owner sets them before it unlocks). NULL on
 * ENOMEM. Inline, as stripemap_del: a key's first waiter, and a queue's
 * first item, make a record; the wake-up and the pop that empty it free it.
 */
static inline struct stripemap_rec *
stripemap_add(struct stripemap *m, struct stripe *s, uint64_t hash,
	      const uint8_t *key, size_t klen)
{
	struct stripemap_rec *r = malloc(m->rec_size + klen);

	if (!r)
		return NULL;
	r->next = r->prev = NULL;
	r->hash = hash;
	r->klen = klen;
	memcpy((uint8_t *)r + m->key_off, key, klen);
	stripemap_chain_push_head(&s->recs, r);
	return r;
}

/* Under @s's lock: take @r out of @s's chain and free it. */
static inline void stripemap_del(struct stripe *s, struct stripemap_rec *r)
{
	stripemap_chain_remove(&s->recs, r);
	free(r);
}

#endif
