/* SPDX-License-Identifier: MIT */
/*
 * wal_impl.h - what wal.c (the stream and its files), recover.c (start-up
 * replay) and compact.c (snapshots) share; not part of the log's interface
 * (wal.h).
 */
#ifndef RS_SERVER_WAL_IMPL_H
#define RS_SERVER_WAL_IMPL_H

#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "compiler.h"
#include "wal.h"
#include "walfile.h"

/* Stripe locks: one per 64-byte line, so writers of different stripes do
 * not share one. */
#define WAL_STRIPES 1024
/* Where a new data directory's stream starts (not 0: a zeroed ring slot
 * must never look published). */
#define WAL_FIRST_LSN 4096

struct wal_stripe {
	_Atomic uint32_t lock;
} RS_ALIGNED_CACHELINE;

struct compaction;

struct wal {
	struct wal_config cfg;
	struct store *store; /* borrowed: the live store */

	/* The ring (wal.c). */
	uint8_t *ring;                                  /* owned */
	size_t size;                                    /* a power of two */
	RS_ALIGNED_CACHELINE _Atomic uint64_t reserved; /* the next LSN */
	RS_ALIGNED_CACHELINE _Atomic uint64_t written;  /* in the file below */
	_Atomic uint64_t synced;                        /* on disk below */
	_Atomic int failed;         /* the first I/O error, or 0 */
	_Atomic bool idle;          /* the flusher sleeps with no deadline */
	struct wal_stripe *stripes; /* owned [WAL_STRIPES] */
	bool locking;               /* more than one writer */

	/* The files, under mu (flushers, rotation, the manifest). */
	pthread_mutex_t mu;
	int fd; /* the log being appended */
	uint32_t log_num;
	char log_path[4096];
	uint64_t file_bytes;        /* of the log being appended */
	_Atomic uint64_t log_bytes; /* of the logs since the snapshot */
	struct walfile_manifest man;
	int lock_fd;       /* DIR/LOCK, held while open */
	uint64_t next_lsn; /* recover(): where the stream goes on */
	_Atomic uint64_t
		last_sync_ms; /* written under mu, read by the flusher */

	/* The flusher thread. */
	pthread_t thread;
	bool started;
	sem_t named; /* the thread has its name */
	pthread_mutex_t wake_mu;
	pthread_cond_t wake_cv;
	bool kicked, stop;

	struct compaction *compact; /* owned by compact.c; NULL: none yet */

	/* Counters (wal_stat), each a relaxed add. */
	_Atomic uint64_t count[WAL_STAT__COUNT];
};

/*
 * Write every published record from `written` on (waiting for those below
 * @need), then fdatasync if @sync. 0, or the I/O error (also recorded in
 * w->failed, and reported through cfg.on_fail).
 */
int wal_flush(struct wal *w, uint64_t need, bool sync);
/* The same with mu held. */
int wal_flush_locked(struct wal *w, uint64_t need, bool sync);
/* Record the log's first I/O error, log it and ask the server to stop. */
void wal_fail(struct wal *w, int err, const char *what);
/* Wake the flusher thread. */
void wal_kick(struct wal *w);
/*
 * Make log @num the one appended to (under mu, or before any writer):
 * created with a header for @start_lsn, or (@create false) opened as it is.
 * 0 or -errno.
 */
int wal_open_log(struct wal *w, uint32_t num, uint64_t start_lsn, bool create);

/* recover.c: replay the data directory into @st; fills w->man, w->fd,
 * w->next_lsn, w->file_bytes and w->log_bytes. */
int recover(struct wal *w, struct store *st, char *why, size_t whylen);

#endif
