/* SPDX-License-Identifier: MIT */
/*
 * blkcache.h - a per-thread cache of small freed blocks, in front of malloc.
 *
 * The store allocates one block per value written (table_entry_new) and
 * frees the entry it replaced a grace period later, in bursts: QSBR hands a
 * reactor back thousands of blocks at one quiescent point. glibc's own
 * thread cache holds seven blocks per size, so a burst spills into its bins
 * and every write paid malloc's and free's slow paths (a fifth of a
 * MULTI_SET's instructions). This cache keeps freed blocks of up to
 * BLKCACHE_MAX bytes on per-thread LIFO lists, one per 16-byte size class,
 * up to BLKCACHE_BYTES bytes per thread; beyond that, or for larger blocks,
 * it is malloc and free.
 *
 * A block may be freed on another thread than the one that allocated it
 * (the caller orders its uses before the free, e.g. by a reference count);
 * it joins the freeing thread's cache. A block only ever goes back to
 * blk_free with the size it was allocated with: the size picks its class.
 *
 * Under AddressSanitizer a cached block is poisoned, so a use after
 * blk_free is still reported.
 *
 * Threads: each function acts on the calling thread's cache only. A thread
 * that exits through pthread_exit or by returning from its start routine
 * drains its cache itself (a pthread key destructor); the main thread calls
 * blk_drain() before exit if it wants its blocks back (e.g. for a leak
 * checker).
 */
#ifndef RS_SERVER_BLKCACHE_H
#define RS_SERVER_BLKCACHE_H

#include <stddef.h>

#define BLKCACHE_MAX 512                /* largest cached block, bytes */
#define BLKCACHE_BYTES ((size_t)8 << 20) /* per thread */

/* A block of at least @size bytes (aligned as malloc's), or NULL. */
void *blk_alloc(size_t size);
/* Free @p, a block from blk_alloc(@size) (the same @size). NULL is a no-op. */
void blk_free(void *p, size_t size);
/* Return every block cached by this thread to malloc. */
void blk_drain(void);
/* Bytes this thread holds cached (for tests and stats). */
size_t blk_cached_bytes(void);

#endif
