/* SPDX-License-Identifier: MIT */
/*
 * compact.h - rewriting the write log as a snapshot plus a new log, without
 * stopping the reactors (the shape of Redis 7's multi-part AOF: a base
 * file, incremental files, and a manifest that names them).
 *
 * The steps, and why a crash at any point loses nothing:
 *  1. Rotate: the log being appended is written out, synced and closed at
 *     a record boundary S; a new log starting at S is created, and the
 *     manifest is replaced by one naming the old files and the new log.
 *     Before the rename the old manifest is whole; after it, the new one.
 *  2. Fold: the old snapshot and logs - closed, immutable now - are
 *     replayed into a private store on this thread, and that state (the
 *     store at exactly S) is written as snap-N.rs.tmp, synced, renamed to
 *     snap-N.rs. The live table is never read, so the snapshot is exact,
 *     not a fuzzy copy of a table that writers change under it.
 *  3. Switch: a manifest naming snap-N and the new log (and any log made
 *     since) replaces the old one; then the old files are removed. A crash
 *     before the switch replays the old files and the new log; one after
 *     it the snapshot and the new log; files left over either way are
 *     removed at start-up (walfile_remove_strays).
 * Memory: the private store holds a second copy of the data while it is
 * built. Runs on a thread of its own (rs-compact), one at a time.
 */
#ifndef RS_SERVER_COMPACT_H
#define RS_SERVER_COMPACT_H

struct wal;

/* The compaction state of @w (wal_open). 0 or -ENOMEM. */
int compact_init(struct wal *w);
/* Free it (after compact_stop). */
void compact_free(struct wal *w);

/* On the flusher thread, after a flush: start a compaction if the logs
 * have grown past max(--compact-min-bytes, twice the live data), and reap
 * one that finished. (wal_compact_now in wal.h starts one on demand.) */
void compact_maybe(struct wal *w);

/* Cancel a compaction that runs and wait for it (wal_close). The files
 * stay consistent: what it left is removed at the next start. */
void compact_stop(struct wal *w);

/* Wait for a compaction that runs to finish (tests). */
void compact_wait(struct wal *w);

#endif
