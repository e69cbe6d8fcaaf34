/* SPDX-License-Identifier: MIT */
/*
 * wal.c - the write log's stream (see wal.h for why it is correct): the
 * ring of reserved records, the stripe locks, the flusher, group commit,
 * and the log files it appends to. Start-up replay is recover.c's, the
 * rewrite into a snapshot compact.c's.
 *
 * The ring. Positions (LSNs) count bytes of the stream, so a record's place
 * in the ring is lsn & (size - 1), and records are whole multiples of 16
 * bytes. A writer reserves with a compare-and-swap on `reserved`, after
 * checking there is room (the record must fit before `written` + size); a
 * record that would run past the ring's end is preceded by padding to the
 * end. The record's header carries its own LSN, stored last with a release:
 * that store publishes it. A flusher walks from `written`, takes each
 * record whose header holds the LSN expected there (a slot still holding an
 * older lap's record, or nothing, holds another number), and writes the
 * run with one writev. A record too large for the ring (more than an
 * eighth of it) lives in a buffer of its own; the ring holds a stub that
 * points to it, the flusher writes the buffer in the stub's place and frees
 * it.
 *
 * Flushers take `mu`, so the file is written by one thread at a time, in
 * order. The flusher thread writes every few milliseconds (and syncs once
 * a second for everysec); with --fsync always the reactors also flush and
 * sync at the end of each pass (wal_commit). A flusher that must write past
 * a record still being filled (a commit: everything up to the committer's
 * own record) waits for it: the filler is inside a short critical section
 * and waits for nothing, so the wait is short and cannot deadlock (a
 * writer holds at most one unpublished reservation, taken after all the
 * locks it needs).
 */
#include "wal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "compact.h"
#include "compiler.h"
#include "log.h"
#include "now.h"
#include "recover.h"
#include "store.h"
#include "walfile.h"
#include "wal_impl.h"

/* A stub's len: the flag, and a payload of the buffer's address and size. */
#define JUMBO_FLAG (1u << 31)
#define JUMBO_STUB_LEN 16
/* How often the flusher thread writes while records keep coming. */
#define WRITE_EVERY_MS 5
#define SYNC_EVERY_MS 1000
/* After this long without a record, the flusher sleeps until kicked. */
#define IDLE_AFTER_MS 1000
/* iovecs per writev. */
#define WRITE_IOVS 64

/* ---- stripe locks ------------------------------------------------------ */

static inline uint32_t stripe_of(uint64_t h)
{
	/* The high bits: the table uses the low ones for its slots. */
	return (uint32_t)(h >> 48) & (WAL_STRIPES - 1);
}

static void stripe_take(struct wal *w, uint32_t s)
{
	_Atomic uint32_t *l = &w->stripes[s].lock;
	unsigned spins = 0;

	/* Acquire: pairs with the release in stripe_give; the previous
	 * holder's change and reservation happen before ours. */
	while (atomic_exchange_explicit(l, 1, memory_order_acquire)) {
		while (atomic_load_explicit(l, memory_order_relaxed)) {
			if (++spins < 1000)
				cpu_relax();
			else
				sched_yield();
		}
	}
}

static void stripe_give(struct wal *w, uint32_t s)
{
	atomic_store_explicit(&w->stripes[s].lock, 0, memory_order_release);
}

void wal_lock(struct wal *w, uint64_t h)
{
	if (w && w->locking)
		stripe_take(w, stripe_of(h));
}

void wal_unlock(struct wal *w, uint64_t h)
{
	if (w && w->locking)
		stripe_give(w, stripe_of(h));
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

void wal_lock_many(struct wal *w, const uint64_t *h, size_t n, uint32_t *held,
		   size_t *nheld)
{
	size_t m = 0;

	*nheld = 0;
	if (!w || !w->locking)
		return;
	for (size_t i = 0; i < n; i++)
		held[i] = stripe_of(h[i]);
	qsort(held, n, sizeof(*held), cmp_u32);
	for (size_t i = 0; i < n; i++)
		if (!m || held[m - 1] != held[i])
			held[m++] = held[i];
	for (size_t i = 0; i < m; i++)
		stripe_take(w, held[i]);
	*nheld = m;
}

void wal_unlock_many(struct wal *w, const uint32_t *held, size_t nheld)
{
	for (size_t i = nheld; i-- > 0;)
		stripe_give(w, held[i]);
}

/* ---- reserving and publishing ------------------------------------------ */

static inline uint8_t *at(struct wal *w, uint64_t lsn)
{
	return w->ring + (lsn & (w->size - 1));
}

/* The header's LSN: the record is published once it holds its own. */
static inline _Atomic uint64_t *lsn_word(uint8_t *hdr)
{
	return (_Atomic uint64_t *)(hdr + 8);
}

/* Seal a record in the ring (walfile.h's layout; a jumbo stub's length
 * word also carries @flags) and publish it: the LSN goes in last. */
static void publish_at(uint8_t *hdr, uint32_t len, uint32_t flags, uint64_t lsn)
{
	uint32_t sum = wal_sum(hdr + WAL_HDR, len, lsn), word = len | flags;

	memcpy(hdr, &word, 4);
	memcpy(hdr + 4, &sum, 4);
	memset(hdr + WAL_HDR + len, 0, wal_span(len) - WAL_HDR - len);
	/* Release: pairs with the flusher's acquire load of the LSN; the
	 * record's bytes are written before it may be taken. */
	atomic_store_explicit(lsn_word(hdr), lsn, memory_order_release);
}

/* Take @span bytes of the ring at the position returned, padding to the
 * ring's end first if needed. Waits for room (flushing) while it lacks. */
static uint64_t take(struct wal *w, size_t span)
{
	for (;;) {
		uint64_t r = atomic_load_explicit(&w->reserved,
						  memory_order_relaxed);
		uint64_t off = r & (w->size - 1);
		uint64_t pad = off + span > w->size ? w->size - off : 0;
		/* Acquire: pairs with the flusher's release of `written`;
		 * the ring bytes before it are free to reuse. */
		uint64_t done =
			atomic_load_explicit(&w->written, memory_order_acquire);

		if (r + pad + span - done > w->size) {
			wal_flush(w, 0, false);
			continue;
		}
		/* seq_cst: the reservation and wal_reserve's load of `idle`
		 * pair with nap()'s store of `idle` and load of `reserved`
		 * (a Dekker pair: one side sees the other). On x86 this is
		 * the same locked instruction as a relaxed CAS. */
		if (!atomic_compare_exchange_weak_explicit(
			    &w->reserved, &r, r + pad + span,
			    memory_order_seq_cst, memory_order_relaxed))
			continue;
		if (pad) {
			uint8_t *h = at(w, r);
			memset(h + WAL_HDR, 0, pad - WAL_HDR);
			if (pad > WAL_HDR)
				h[WAL_HDR] = WAL_OP_PAD;
			publish_at(h, (uint32_t)(pad - WAL_HDR), 0, r);
		}
		return r + pad;
	}
}

int wal_reserve(struct wal_writer *ww, size_t len, struct wal_rec *r)
{
	struct wal *w = ww->w;
	int err = atomic_load_explicit(&w->failed, memory_order_relaxed);

	if (unlikely(err))
		return err;
	if (len > WAL_MAX_PAYLOAD)
		return -EMSGSIZE;
	*r = (struct wal_rec){ .len = (uint32_t)len };
	if (unlikely(wal_span(len) > w->size / 8)) {
		/* A record of its own, written in its stub's place. */
		r->hdr = malloc(wal_span(len));
		if (!r->hdr)
			return -ENOMEM;
		r->lsn = take(w, wal_span(JUMBO_STUB_LEN));
		r->stub = at(w, r->lsn);
	} else {
		r->lsn = take(w, wal_span(len));
		r->hdr = at(w, r->lsn);
	}
	r->p = r->hdr + WAL_HDR;
	ww->end = r->lsn + wal_span(r->stub ? JUMBO_STUB_LEN : len);
	/* seq_cst: see take(). A flusher about to sleep without a deadline
	 * either sees this record or is seen asleep here, and kicked. */
	if (atomic_load_explicit(&w->idle, memory_order_seq_cst))
		wal_kick(w);
	if (unlikely(w->cfg.after_reserve))
		w->cfg.after_reserve(w->cfg.hook_arg);
	return 0;
}

void wal_publish(struct wal_writer *ww, struct wal_rec *r)
{
	struct wal *w = ww->w;

	atomic_fetch_add_explicit(&w->count[WAL_STAT_RECORDS], 1,
				  memory_order_relaxed);
	if (!r->stub) {
		publish_at(r->hdr, r->len, 0, r->lsn);
		return;
	}
	/* The buffer is the flusher's from here on (it frees it). */
	wal_rec_seal(r->hdr, r->len, r->lsn);
	uint64_t size = wal_span(r->len);
	memcpy(r->stub + WAL_HDR, &r->hdr, sizeof(r->hdr));
	memcpy(r->stub + WAL_HDR + 8, &size, 8);
	publish_at(r->stub, JUMBO_STUB_LEN, JUMBO_FLAG, r->lsn);
}

void wal_cancel(struct wal_writer *ww, struct wal_rec *r)
{
	if (r->stub) {
		free(r->hdr);
		r->hdr = r->stub;
		r->len = JUMBO_STUB_LEN;
		r->stub = NULL;
	}
	if (r->len)
		r->hdr[WAL_HDR] = WAL_OP_PAD;
	publish_at(r->hdr, r->len, 0, r->lsn);
	(void)ww;
}

/* ---- flushing ---------------------------------------------------------- */

void wal_fail(struct wal *w, int err, const char *what)
{
	int none = 0;

	if (!atomic_compare_exchange_strong(&w->failed, &none, err))
		return;
	log_error("write log: %s %s: %s; stopping, so that no write that is "
		  "not in the log is acknowledged",
		  what, w->log_path, strerror(-err));
	if (w->cfg.on_fail)
		w->cfg.on_fail();
}

/* Write @iov[0..@n) whole. */
static int write_all(int fd, struct iovec *iov, int n)
{
	while (n > 0) {
		ssize_t k = writev(fd, iov, n);

		if (k < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		while (n > 0 && (size_t)k >= iov->iov_len) {
			k -= (ssize_t)iov->iov_len;
			iov++;
			n--;
		}
		if (n > 0) {
			iov->iov_base = (uint8_t *)iov->iov_base + k;
			iov->iov_len -= (size_t)k;
		}
	}
	return 0;
}

/* The published record at @pos, waiting for it while @pos < @need. NULL
 * when it is not published (and need not be). */
static uint8_t *ready_at(struct wal *w, uint64_t pos, uint64_t need)
{
	uint8_t *h = at(w, pos);
	unsigned spins = 0;

	/* Acquire: pairs with publish_at's release. */
	while (atomic_load_explicit(lsn_word(h), memory_order_acquire) != pos) {
		if (pos >= need)
			return NULL;
		if (++spins < 1000)
			cpu_relax();
		else
			sched_yield();
	}
	return h;
}

int wal_flush(struct wal *w, uint64_t need, bool sync)
{
	int err;

	pthread_mutex_lock(&w->mu);
	err = wal_flush_locked(w, need, sync);
	pthread_mutex_unlock(&w->mu);
	if (err)
		wal_fail(w, err, "cannot write or sync");
	return err;
}

int wal_flush_locked(struct wal *w, uint64_t need, bool sync)
{
	struct iovec iov[WRITE_IOVS];
	void *jumbo[WRITE_IOVS];
	int n = 0, nj = 0, err = 0;
	uint64_t pos = atomic_load_explicit(&w->written, memory_order_relaxed);
	uint64_t bytes = 0;

	for (;;) {
		uint64_t end = atomic_load_explicit(&w->reserved,
						    memory_order_acquire);
		uint8_t *h = pos < end ? ready_at(w, pos, need) : NULL;
		uint32_t len = 0;

		if (h)
			memcpy(&len, h, 4);
		if (!h || n == WRITE_IOVS) {
			/* Write the run so far (and free its buffers). */
			if (n && !err) {
				err = write_all(w->fd, iov, n);
				atomic_fetch_add_explicit(
					&w->count[WAL_STAT_WRITES], 1,
					memory_order_relaxed);
			}
			for (int i = 0; i < nj; i++)
				free(jumbo[i]);
			n = nj = 0;
			if (err || !h)
				break;
		}
		if (len & JUMBO_FLAG) {
			uint64_t size;
			memcpy(&jumbo[nj], h + WAL_HDR, sizeof(void *));
			memcpy(&size, h + WAL_HDR + 8, 8);
			iov[n++] = (struct iovec){ jumbo[nj++], size };
			bytes += size;
			pos += wal_span(JUMBO_STUB_LEN);
			continue;
		}
		size_t span = wal_span(len);
		if (n &&
		    (uint8_t *)iov[n - 1].iov_base + iov[n - 1].iov_len == h)
			iov[n - 1].iov_len += span;
		else
			iov[n++] = (struct iovec){ h, span };
		bytes += span;
		pos += span;
	}
	if (err)
		return err;
	w->file_bytes += bytes;
	atomic_fetch_add_explicit(&w->log_bytes, bytes, memory_order_relaxed);
	atomic_fetch_add_explicit(&w->count[WAL_STAT_BYTES], bytes,
				  memory_order_relaxed);
	/* Release: pairs with take()'s acquire: the ring up to here is free. */
	atomic_store_explicit(&w->written, pos, memory_order_release);
	if (sync &&
	    atomic_load_explicit(&w->synced, memory_order_relaxed) < pos) {
		if (fdatasync(w->fd))
			return -errno;
		atomic_fetch_add_explicit(&w->count[WAL_STAT_SYNCS], 1,
					  memory_order_relaxed);
		atomic_store_explicit(&w->last_sync_ms, now_mono_ms(),
				      memory_order_relaxed);
		atomic_store_explicit(&w->synced, pos, memory_order_release);
	}
	return 0;
}

int wal_commit(struct wal_writer *ww)
{
	struct wal *w = ww->w;

	if (!w || w->cfg.fsync != WAL_FSYNC_ALWAYS)
		return 0;
	/* Acquire: pairs with the release of `synced` by whoever synced. */
	if (ww->end <= atomic_load_explicit(&w->synced, memory_order_acquire))
		return atomic_load_explicit(&w->failed, memory_order_relaxed);
	return wal_flush(w, ww->end, true);
}

int wal_failed(const struct wal *w)
{
	return w ? atomic_load_explicit(&w->failed, memory_order_relaxed) : 0;
}

/* ---- the flusher thread ------------------------------------------------ */

void wal_kick(struct wal *w)
{
	pthread_mutex_lock(&w->wake_mu);
	w->kicked = true;
	pthread_cond_signal(&w->wake_cv);
	pthread_mutex_unlock(&w->wake_mu);
}

/* Sleep until kicked, stopped, or @ms passed (0: no deadline). Returns
 * whether the log is closing. */
static bool nap(struct wal *w, uint64_t ms)
{
	struct timespec ts;
	bool stop;

	pthread_mutex_lock(&w->wake_mu);
	if (!ms) {
		/* seq_cst, both: pairs with take()'s reservation and
		 * wal_reserve's load of `idle`. A writer that reads `idle`
		 * before this store reserved before this load sees it. */
		atomic_store_explicit(&w->idle, true, memory_order_seq_cst);
		if (atomic_load_explicit(&w->reserved, memory_order_seq_cst) !=
		    atomic_load_explicit(&w->written, memory_order_relaxed))
			w->kicked = true;
	}
	while (!w->kicked && !w->stop) {
		if (!ms) {
			pthread_cond_wait(&w->wake_cv, &w->wake_mu);
			continue;
		}
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_nsec += (long)(ms % 1000) * 1000000L;
		ts.tv_sec += (time_t)(ms / 1000) + ts.tv_nsec / 1000000000L;
		ts.tv_nsec %= 1000000000L;
		if (pthread_cond_timedwait(&w->wake_cv, &w->wake_mu, &ts))
			break;
	}
	w->kicked = false;
	atomic_store_explicit(&w->idle, false, memory_order_relaxed);
	stop = w->stop;
	pthread_mutex_unlock(&w->wake_mu);
	return stop;
}

static void *flusher_main(void *arg)
{
	struct wal *w = arg;
	uint64_t busy_ms = 0;

	/* Named by itself (the creator's pthread_setname_np would write
	 * /proc/self/task/TID/comm, which a sandboxed /proc may refuse), and
	 * before wal_start returns: it has its name before the server
	 * announces itself (ps, top -H and tests look for it). */
	pthread_setname_np(pthread_self(), "rs-wal");
	sem_post(&w->named);
	for (;;) {
		uint64_t now = now_mono_ms();
		bool pending =
			atomic_load_explicit(&w->reserved,
					     memory_order_relaxed) !=
			atomic_load_explicit(&w->written, memory_order_relaxed);
		bool unsynced =
			w->cfg.fsync == WAL_FSYNC_EVERYSEC &&
			atomic_load_explicit(&w->synced,
					     memory_order_relaxed) !=
				atomic_load_explicit(&w->written,
						     memory_order_relaxed);

		/*
		 * While records come, write every few milliseconds, whether
		 * or not there is one right now: a writer that found the
		 * flusher asleep wakes it with a system call (wal_kick), and
		 * with a nap between records that would be one per record.
		 * A second after the last record, with all of it synced,
		 * sleep until kicked.
		 */
		if (pending)
			busy_ms = now;
		if (nap(w, pending || unsynced || now - busy_ms < IDLE_AFTER_MS
				   ? WRITE_EVERY_MS
				   : 0))
			break;
		if (atomic_load_explicit(&w->failed, memory_order_relaxed))
			continue;
		wal_flush(
			w, 0,
			w->cfg.fsync == WAL_FSYNC_EVERYSEC &&
				now_mono_ms() - atomic_load_explicit(
							&w->last_sync_ms,
							memory_order_relaxed) >=
					SYNC_EVERY_MS);
		compact_maybe(w);
	}
	return NULL;
}

int wal_start(struct wal *w)
{
	int ret = pthread_create(&w->thread, NULL, flusher_main, w);

	if (ret)
		return -ret;
	while (sem_wait(&w->named) && errno == EINTR)
		;
	w->started = true;
	return 0;
}

/* ---- opening and closing ----------------------------------------------- */

int wal_open_log(struct wal *w, uint32_t num, uint64_t start_lsn, bool create)
{
	uint8_t hdr[WAL_FILE_HDR];
	int fd;

	walfile_name(w->log_path, sizeof(w->log_path), w->cfg.dir, WALFILE_LOG,
		     num);
	fd = open(w->log_path,
		  O_WRONLY | O_APPEND | O_CLOEXEC |
			  (create ? O_CREAT | O_EXCL : 0),
		  0644);
	if (fd < 0)
		return -errno;
	if (create) {
		walfile_header(hdr, WALFILE_LOG, start_lsn);
		if (write(fd, hdr, sizeof(hdr)) != (ssize_t)sizeof(hdr) ||
		    fdatasync(fd)) {
			int err = errno ? -errno : -EIO;
			close(fd);
			unlink(w->log_path);
			return err;
		}
		w->file_bytes = sizeof(hdr);
	}
	if (w->fd >= 0)
		close(w->fd);
	w->fd = fd;
	w->log_num = num;
	return 0;
}

static void wal_free(struct wal *w)
{
	compact_free(w);
	if (w->fd >= 0)
		close(w->fd);
	if (w->lock_fd >= 0)
		close(w->lock_fd);
	pthread_mutex_destroy(&w->mu);
	pthread_mutex_destroy(&w->wake_mu);
	pthread_cond_destroy(&w->wake_cv);
	sem_destroy(&w->named);
	free(w->ring);
	free(w->stripes);
	free(w);
}

int wal_open(struct wal **out, const struct wal_config *cfg, struct store *st,
	     char *why, size_t whylen)
{
	struct wal *w = calloc(1, sizeof(*w));
	long pid;
	int err;

	*out = NULL;
	if (!w)
		return -ENOMEM;
	w->cfg = *cfg;
	w->store = st;
	w->fd = w->lock_fd = -1;
	pthread_mutex_init(&w->mu, NULL);
	sem_init(&w->named, 0, 0);
	pthread_mutex_init(&w->wake_mu, NULL);
	/* nap()'s deadlines are CLOCK_MONOTONIC (a condvar's default clock
	 * is the wall clock: a monotonic deadline would lie in its past). */
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&w->wake_cv, &ca);
	pthread_condattr_destroy(&ca);
	if (!w->cfg.ring_bytes)
		w->cfg.ring_bytes = WAL_RING_DEFAULT;
	if (!w->cfg.compact_min)
		w->cfg.compact_min = WAL_COMPACT_MIN_DEFAULT;
	w->size = w->cfg.ring_bytes;
	w->locking = cfg->writers > 1;
	if (posix_memalign((void **)&w->ring, 4096, w->size) ||
	    posix_memalign((void **)&w->stripes, 64,
			   WAL_STRIPES * sizeof(*w->stripes))) {
		wal_free(w);
		return -ENOMEM;
	}
	memset(w->ring, 0, w->size);
	memset(w->stripes, 0, WAL_STRIPES * sizeof(*w->stripes));

	w->lock_fd = walfile_lock(cfg->dir, &pid);
	if (w->lock_fd < 0) {
		err = w->lock_fd;
		if (err == -EBUSY)
			snprintf(why, whylen,
				 "%s is in use by another "
				 "ringstore (pid %ld): one server per data "
				 "directory",
				 cfg->dir, pid);
		else
			snprintf(why, whylen,
				 "cannot use %s as the data "
				 "directory: %s",
				 cfg->dir, strerror(-err));
		w->lock_fd = -1;
		wal_free(w);
		return err;
	}
	err = compact_init(w);
	if (!err)
		err = recover(w, st, why, whylen);
	if (err) {
		wal_free(w);
		return err;
	}
	atomic_store(&w->reserved, w->next_lsn);
	atomic_store(&w->written, w->next_lsn);
	atomic_store(&w->synced, w->next_lsn);
	atomic_store(&w->last_sync_ms, now_mono_ms());
	*out = w;
	return 0;
}

int wal_close(struct wal *w)
{
	int err;

	if (!w)
		return 0;
	if (w->started) {
		pthread_mutex_lock(&w->wake_mu);
		w->stop = true;
		pthread_cond_signal(&w->wake_cv);
		pthread_mutex_unlock(&w->wake_mu);
		pthread_join(w->thread, NULL);
	}
	compact_stop(w);
	if (!atomic_load(&w->failed) && w->cfg.fsync != WAL_FSYNC_NO)
		wal_flush(w, atomic_load(&w->reserved), true);
	else if (!atomic_load(&w->failed))
		wal_flush(w, atomic_load(&w->reserved), false);
	err = atomic_load(&w->failed);
	wal_free(w);
	return err;
}

uint64_t wal_stat(const struct wal *w, enum wal_stat s)
{
	return w ? atomic_load_explicit(&w->count[s], memory_order_relaxed) : 0;
}

uint64_t wal_log_bytes(const struct wal *w)
{
	return w ? atomic_load_explicit(&w->log_bytes, memory_order_relaxed)
		 : 0;
}
