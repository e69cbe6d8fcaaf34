/* SPDX-License-Identifier: MIT */
/*
 * wal.h - the write log (--data-dir): every change to the store, appended
 * in one ordered stream, written out in groups, replayed at start-up.
 *
 * The stream. A store thread that changes the store reserves its record's
 * place in one in-memory ring (a position, the LSN, taken with one atomic
 * add), writes the record there, makes the change in the table, and
 * publishes the record. A flusher writes published records to the current
 * log file strictly in LSN order, so the file always holds a prefix of the
 * stream. Records are the requests that make the changes (walfile.h), and
 * replay executes them again in file order.
 *
 * Why replay rebuilds a state the live server could have shown (the
 * argument, as table.c and qsbr.c give theirs):
 *  1. Writes to one key are ordered by the key's stripe lock (wal_lock):
 *     a writer holds it from before its reservation until its change is
 *     in the table, so for one key, LSN order is the order in which the
 *     changes took effect. With one store thread there is one writer and
 *     the locks are skipped: program order is that order.
 *  2. A change becomes visible (table, queue) only after its record's LSN
 *     was taken. So if a write W2 could have seen the effect of W1 (read
 *     its value, or started after W1's reply), LSN(W1) < LSN(W2): the
 *     stream never puts an effect before its cause.
 *  3. Together: executing the stream's records in LSN order is a legal
 *     execution of the same writes, each taking effect at its reservation
 *     (a point inside the operation), keeping every key's order and every
 *     causal order. Any prefix of the stream is therefore a state that
 *     execution passes through - one the live server could have shown had
 *     each write landed at its reservation. A torn tail cuts the file at a
 *     record boundary, so what survives is such a prefix.
 *  4. A record is published only after its change succeeded; a change that
 *     failed (out of memory) turns its reserved place into padding, so
 *     replay never makes a change the live server refused.
 *
 * Durability (--fsync):
 *  - always: at the end of every loop pass, a reactor that wrote makes its
 *    records durable (wal_commit: one write of everything published, one
 *    fdatasync) before its replies go out; reactors that commit at the
 *    same time share the write and the sync (group commit). A reply a
 *    client received vouches for every write it made before.
 *  - everysec (the default, as Redis's): a background thread writes what
 *    is published every few milliseconds and syncs once a second; the
 *    event loop never waits for the disk. A SIGKILL loses what was not yet
 *    written (milliseconds); a power loss about a second.
 *  - no: as everysec, never synced by us (the kernel's writeback decides).
 *
 * Threads: wal_reserve/publish/cancel/lock/unlock/commit from any store
 * thread (each with its own struct wal_writer); the flusher and the
 * compactor are this module's own threads. A write or sync error is fatal
 * for durability: it is logged, every later reservation fails, and the
 * server is asked to stop (wal_config.on_fail), so that nothing unlogged is
 * ever acknowledged.
 */
#ifndef RS_SERVER_WAL_H
#define RS_SERVER_WAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct store;
struct wal;

enum wal_fsync {
	WAL_FSYNC_ALWAYS,
	WAL_FSYNC_EVERYSEC,
	WAL_FSYNC_NO,
};

#define WAL_RING_DEFAULT (16u << 20)
#define WAL_COMPACT_MIN_DEFAULT (64u << 20)

struct wal_config {
	const char *dir; /* the data directory (borrowed) */
	enum wal_fsync fsync;
	bool repair;           /* keep the good prefix of a damaged log */
	uint64_t compact_min;  /* log bytes before compaction is considered */
	size_t ring_bytes;     /* the in-memory ring (a power of two) */
	unsigned writers;      /* store threads that write: with one, no
				   * stripe locks */
	void (*on_fail)(void); /* an I/O error: ask the server to stop */
	/* Tests only: called by a writer right after it reserved a record,
	 * before its change (to force interleavings). NULL in the server. */
	void (*after_reserve)(void *arg);
	void *hook_arg;
};

/* One store thread's handle on the log. */
struct wal_writer {
	struct wal *w; /* NULL: no log */
	uint64_t end;  /* the end of its last reserved record */
};

/* A reserved record: write len payload bytes at p, then publish or
 * cancel it. */
struct wal_rec {
	uint8_t *p;
	uint32_t len;
	uint64_t lsn;
	uint8_t *hdr;  /* the record's header (ring or jumbo) */
	uint8_t *stub; /* a jumbo record's stub in the ring */
};

/*
 * Open the data directory of @cfg (taking its lock), replay it into @st
 * (which no other thread uses yet) and get ready to append. Logs one line
 * with what was replayed. On failure returns -errno with the reason, and
 * what to do, in @why.
 */
int wal_open(struct wal **out, const struct wal_config *cfg, struct store *st,
	     char *why, size_t whylen);
/* Start the flusher thread (after wal_open, before writers). */
int wal_start(struct wal *w);
/* Write and sync everything, stop the threads, close the files and free.
 * NULL is allowed. Returns 0 or the first I/O error. */
int wal_close(struct wal *w);

/* The first I/O error (-errno), or 0. */
int wal_failed(const struct wal *w);

/*
 * Take a place for a record of @len payload bytes. Returns 0, -EIO once
 * the log has failed, or -ENOMEM (a record too large for the ring needs a
 * buffer of its own). The caller holds the stripe lock of every key the
 * change touches (wal_lock).
 */
int wal_reserve(struct wal_writer *ww, size_t len, struct wal_rec *r);
/* The change was made: the record may be written. */
void wal_publish(struct wal_writer *ww, struct wal_rec *r);
/* The change failed: the place becomes padding. */
void wal_cancel(struct wal_writer *ww, struct wal_rec *r);

/* The stripe lock of a key hashed to @h (no-op with one writer). */
void wal_lock(struct wal *w, uint64_t h);
void wal_unlock(struct wal *w, uint64_t h);
/*
 * The stripe locks of @n keys at once, taken in one global order (so two
 * writers of overlapping key sets cannot deadlock); each stripe once.
 * @held receives the stripes taken (at most @n), *nheld their count, for
 * wal_unlock_many.
 */
void wal_lock_many(struct wal *w, const uint64_t *h, size_t n, uint32_t *held,
		   size_t *nheld);
void wal_unlock_many(struct wal *w, const uint32_t *held, size_t nheld);

/*
 * End of a loop pass: with --fsync always, return once every record this
 * writer reserved is on disk (0), or the log's error. Otherwise 0 at once.
 */
int wal_commit(struct wal_writer *ww);

/* The log's own counters (stats.h's table reads them at scrape time). */
enum wal_stat {
	WAL_STAT_RECORDS,     /* records published */
	WAL_STAT_BYTES,       /* bytes written to log files */
	WAL_STAT_WRITES,      /* write system calls */
	WAL_STAT_SYNCS,       /* fdatasyncs */
	WAL_STAT_COMPACTIONS, /* compactions finished */
	WAL_STAT__COUNT,
};
/* Counter @s of @w (NULL: no log, 0). */
uint64_t wal_stat(const struct wal *w, enum wal_stat s);
/* Bytes in the logs since the last snapshot (a gauge); 0 without a log. */
uint64_t wal_log_bytes(const struct wal *w);

/* Start a compaction now (the control plane; tests). 0, or -EBUSY while
 * one runs. */
int wal_compact_now(struct wal *w);

#endif
