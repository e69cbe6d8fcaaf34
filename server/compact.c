/* SPDX-License-Identifier: MIT */
/*
 * compact.c - see compact.h: the compaction thread.
 *
 * State: one struct compaction per log, under its own mutex (the flusher
 * thread starts and reaps compactions, the control plane asks for one, the
 * closing thread stops one). The manifest and the log file are wal.c's,
 * changed here under wal's mu like every other change to them.
 */
#include "compact.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "now.h"
#include "queues.h"
#include "recover.h"
#include "stats.h"
#include "store.h"
#include "table.h"
#include "wal_impl.h"
#include "walfile.h"

/* After a failed compaction, wait this long before trying again. */
#define RETRY_MS 60000
/* The snapshot is written through a buffer of this size. */
#define SNAP_BUF (1u << 20)

struct compaction {
	pthread_mutex_t mu;
	pthread_cond_t cancelled; /* with mu: cancel was set */
	pthread_t thread;
	bool running;      /* started, not yet joined */
	_Atomic bool done; /* the thread has finished */
	_Atomic bool cancel;
	uint64_t retry_at_ms; /* no automatic start before this */
	const char *pause_at; /* RINGSTORE_COMPACT_PAUSE, or NULL */
};

/*
 * Tests only: with RINGSTORE_COMPACT_PAUSE set to a step's name ("rotated",
 * "snapshot-written" or "switched"), a compaction stops after that step and
 * waits until it is cancelled, so a test can SIGKILL the server at exactly
 * that point of compact.h's steps.
 */
static void pause_point(struct wal *w, const char *step)
{
	struct compaction *c = w->compact;

	if (!c->pause_at || strcmp(c->pause_at, step))
		return;
	log_warn("write log: compaction paused after '%s' "
		 "(RINGSTORE_COMPACT_PAUSE)",
		 step);
	pthread_mutex_lock(&c->mu);
	while (!atomic_load(&c->cancel))
		pthread_cond_wait(&c->cancelled, &c->mu);
	pthread_mutex_unlock(&c->mu);
}

/* ---- writing a snapshot ------------------------------------------------ */

struct snap_writer {
	struct wal *w;
	int fd;
	uint8_t *buf;
	size_t used;
	uint64_t lsn; /* the snapshot's own numbering */
	struct walfile_snap_end end;
	int err;
};

static void sw_flush(struct snap_writer *sw)
{
	size_t off = 0;

	while (!sw->err && off < sw->used) {
		ssize_t n = write(sw->fd, sw->buf + off, sw->used - off);
		if (n < 0 && errno != EINTR)
			sw->err = -errno;
		else if (n > 0)
			off += (size_t)n;
	}
	sw->used = 0;
}

/* A record of @len payload bytes: returns where to write the payload (in
 * the buffer, or in @big for one larger than it), then sw_end. */
static uint8_t *sw_begin(struct snap_writer *sw, size_t len, uint8_t **big)
{
	*big = NULL;
	if (wal_span(len) > SNAP_BUF) {
		sw_flush(sw);
		*big = malloc(wal_span(len));
		if (!*big) {
			sw->err = -ENOMEM;
			return NULL;
		}
		return *big + WAL_HDR;
	}
	if (sw->used + wal_span(len) > SNAP_BUF)
		sw_flush(sw);
	return sw->buf + sw->used + WAL_HDR;
}

static void sw_end(struct snap_writer *sw, size_t len, uint8_t *big)
{
	uint8_t *rec = big ? big : sw->buf + sw->used;

	sw->lsn += WAL_ALIGN;
	wal_rec_seal(rec, (uint32_t)len, sw->lsn);
	sw->end.records++;
	if (!big) {
		sw->used += wal_span(len);
		return;
	}
	size_t off = 0, n = wal_span(len);
	while (!sw->err && off < n) {
		ssize_t k = write(sw->fd, big + off, n - off);
		if (k < 0 && errno != EINTR)
			sw->err = -errno;
		else if (k > 0)
			off += (size_t)k;
	}
	free(big);
}

/* One change as the request that makes it: @op, a key, a value. */
static void sw_put(struct snap_writer *sw, uint8_t op, const uint8_t *key,
		   uint64_t klen, const uint8_t *val, uint64_t vlen)
{
	size_t len = 1 + 8 + klen + 8 + vlen;
	uint8_t *big, *p = sw_begin(sw, len, &big);

	if (!p)
		return;
	p[0] = op;
	memcpy(p + 1, &klen, 8);
	memcpy(p + 9, key, klen);
	memcpy(p + 9 + klen, &vlen, 8);
	memcpy(p + 17 + klen, val, vlen);
	sw_end(sw, len, big);
}

static int dump_key(struct table_entry *e, void *arg)
{
	struct snap_writer *sw = arg;

	/* The private store has one thread: values can be read directly. */
	sw_put(sw, OP_SET, table_entry_key(e), e->klen, table_entry_val(e),
	       e->vlen);
	sw->end.keys++;
	if (atomic_load_explicit(&sw->w->compact->cancel, memory_order_relaxed))
		return -ECANCELED;
	return sw->err;
}

static int dump_item(const uint8_t *key, size_t klen,
		     const struct table_entry *item, void *arg)
{
	struct snap_writer *sw = arg;

	sw_put(sw, OP_QUEUE_PUSH, key, klen, table_entry_val(item), item->vlen);
	sw->end.items++;
	return sw->err;
}

/* Write @st's whole state as snapshot @path (through a .tmp file). */
static int write_snapshot(struct wal *w, struct store *st,
			  struct store_thread *th, const char *path)
{
	struct snap_writer sw = { .w = w };
	char tmp[4200];
	uint8_t *big, *p;
	int err;

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	sw.buf = malloc(SNAP_BUF);
	sw.fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (!sw.buf || sw.fd < 0) {
		err = sw.fd < 0 ? -errno : -ENOMEM;
		goto out;
	}
	walfile_header(sw.buf, WALFILE_SNAP, WAL_ALIGN);
	sw.used = WAL_FILE_HDR;
	sw.lsn = 0;
	err = table_foreach(st->table, th->qt, dump_key, &sw);
	if (!err)
		err = queues_foreach(st->queues, dump_item, &sw);
	if (!err && !sw.err) {
		size_t len = 1 + sizeof(sw.end);
		p = sw_begin(&sw, len, &big);
		if (p) {
			p[0] = WAL_OP_SNAP_END;
			memcpy(p + 1, &sw.end, sizeof(sw.end));
			/* end.records counts the records before this one. */
			sw_end(&sw, len, big);
		}
		sw_flush(&sw);
	}
	if (!err)
		err = sw.err;
	if (!err && fdatasync(sw.fd))
		err = -errno;
	if (!err && rename(tmp, path))
		err = -errno;
	if (!err)
		err = walfile_sync_dir(w->cfg.dir);
out:
	if (sw.fd >= 0)
		close(sw.fd);
	if (err)
		unlink(tmp);
	free(sw.buf);
	return err;
}

/* ---- the steps ---------------------------------------------------------- */

/* Step 1 (compact.h): a new log at the current end; @old receives the
 * files to fold, @snap the number of the snapshot to write. */
static int rotate(struct wal *w, struct walfile_manifest *old, uint32_t *snap)
{
	uint32_t num;
	int err;

	pthread_mutex_lock(&w->mu);
	err = wal_flush_locked(w, 0, true);
	if (!err && w->man.nlogs >= WAL_MAX_FILES)
		err = -EMFILE;
	if (!err) {
		*old = w->man;
		num = w->man.next++;
		*snap = w->man.next++;
		err = wal_open_log(w, num, atomic_load(&w->written), true);
	}
	if (!err) {
		w->man.logs[w->man.nlogs++] = num;
		err = walfile_manifest_write(w->cfg.dir, &w->man);
		atomic_store(&w->log_bytes, w->file_bytes);
	}
	pthread_mutex_unlock(&w->mu);
	return err;
}

/* Step 3: the manifest names the snapshot and the logs after @old. */
static int switch_to(struct wal *w, const struct walfile_manifest *old,
		     uint32_t snap)
{
	uint32_t keep = 0;
	int err;

	pthread_mutex_lock(&w->mu);
	for (uint32_t i = old->nlogs; i < w->man.nlogs; i++)
		w->man.logs[keep++] = w->man.logs[i];
	w->man.nlogs = keep;
	w->man.snap = snap;
	err = walfile_manifest_write(w->cfg.dir, &w->man);
	pthread_mutex_unlock(&w->mu);
	return err;
}

static void remove_old(struct wal *w, const struct walfile_manifest *old)
{
	char path[4096];

	if (old->snap) {
		walfile_name(path, sizeof(path), w->cfg.dir, WALFILE_SNAP,
			     old->snap);
		unlink(path);
	}
	for (uint32_t i = 0; i < old->nlogs; i++) {
		walfile_name(path, sizeof(path), w->cfg.dir, WALFILE_LOG,
			     old->logs[i]);
		unlink(path);
	}
	walfile_sync_dir(w->cfg.dir);
}

static int fold(struct wal *w, const struct walfile_manifest *old,
		uint32_t snap, struct recover_result *res, char *why,
		size_t whylen)
{
	struct store ps;
	struct store_thread th;
	struct stats unused; /* what the private store counts */
	char path[4096];
	int err;

	err = store_init(&ps, 1024, 1);
	if (err) {
		snprintf(why, whylen, "no memory for a private store");
		return err;
	}
	err = recover_files(&ps, w->cfg.dir, old, res, why, whylen);
	if (!err && atomic_load(&w->compact->cancel))
		err = -ECANCELED;
	if (!err)
		err = store_thread_init(&th, &ps, &unused, NULL, NULL);
	if (!err) {
		walfile_name(path, sizeof(path), w->cfg.dir, WALFILE_SNAP,
			     snap);
		err = write_snapshot(w, &ps, &th, path);
		if (err)
			snprintf(why, whylen, "cannot write %s: %s", path,
				 strerror(-err));
		store_thread_destroy(&th);
	}
	store_destroy(&ps);
	return err;
}

static void *compact_main(void *arg)
{
	struct wal *w = arg;
	struct compaction *c = w->compact;
	struct walfile_manifest old;
	struct recover_result res;
	uint64_t t0 = now_mono_ns();
	char why[8192] = "";
	uint32_t snap;
	int err;

	pthread_setname_np(pthread_self(), "rs-compact");
	err = rotate(w, &old, &snap);
	if (err) {
		/* The log's own file operations failed: durability is gone. */
		wal_fail(w, err, "cannot start a new log after");
		goto out;
	}
	pause_point(w, "rotated");
	err = fold(w, &old, snap, &res, why, sizeof(why));
	if (!err)
		pause_point(w, "snapshot-written");
	if (!err)
		err = switch_to(w, &old, snap);
	if (!err)
		pause_point(w, "switched");
	if (err) {
		if (err != -ECANCELED)
			log_warn("write log: compaction failed (%s); the logs "
				 "stay as they are, next try in %d s",
				 why[0] ? why : strerror(-err),
				 RETRY_MS / 1000);
		pthread_mutex_lock(&c->mu);
		c->retry_at_ms = now_mono_ms() + RETRY_MS;
		pthread_mutex_unlock(&c->mu);
		goto out;
	}
	remove_old(w, &old);
	atomic_fetch_add(&w->count[WAL_STAT_COMPACTIONS], 1);
	log_info("write log: compacted %" PRIu64 " records (%" PRIu64
		 " bytes of logs) into snapshot %06" PRIu32 " in %.3f s",
		 res.records, res.bytes, snap,
		 (double)(now_mono_ns() - t0) / 1e9);
out:
	atomic_store(&c->done, true);
	return NULL;
}

/* ---- starting and stopping ---------------------------------------------- */

int compact_init(struct wal *w)
{
	struct compaction *c = calloc(1, sizeof(*c));

	if (!c)
		return -ENOMEM;
	pthread_mutex_init(&c->mu, NULL);
	pthread_cond_init(&c->cancelled, NULL);
	c->pause_at = getenv("RINGSTORE_COMPACT_PAUSE");
	w->compact = c;
	return 0;
}

/* With c->mu held: join a finished run. */
static void reap(struct compaction *c)
{
	if (c->running && atomic_load(&c->done)) {
		pthread_join(c->thread, NULL);
		c->running = false;
	}
}

/*
 * Wait for a running compaction to end (waking it at a pause point if
 * @wake). mu is not held while joining: the thread takes it on its way
 * out. Whoever clears `running` joins, so a thread is joined once.
 */
static void join_running(struct compaction *c, bool wake)
{
	pthread_t t;
	bool run;

	pthread_mutex_lock(&c->mu);
	if (wake)
		pthread_cond_broadcast(&c->cancelled);
	run = c->running;
	t = c->thread;
	c->running = false;
	pthread_mutex_unlock(&c->mu);
	if (run)
		pthread_join(t, NULL);
}

/* With c->mu held. */
static int start(struct wal *w, struct compaction *c)
{
	int ret;

	reap(c);
	if (c->running)
		return -EBUSY;
	atomic_store(&c->done, false);
	atomic_store(&c->cancel, false);
	ret = pthread_create(&c->thread, NULL, compact_main, w);
	if (ret)
		return -ret;
	c->running = true;
	return 0;
}

void compact_maybe(struct wal *w)
{
	struct store *st = w->store;
	uint64_t logs = atomic_load(&w->log_bytes);
	uint64_t live = table_bytes(st->table) + queues_bytes(st->queues);
	struct compaction *c = w->compact;

	pthread_mutex_lock(&c->mu);
	reap(c);
	if (!c->running && logs >= w->cfg.compact_min && logs >= 2 * live &&
	    now_mono_ms() >= c->retry_at_ms)
		start(w, c);
	pthread_mutex_unlock(&c->mu);
}

int wal_compact_now(struct wal *w)
{
	struct compaction *c = w->compact;
	int ret;

	pthread_mutex_lock(&c->mu);
	ret = start(w, c);
	pthread_mutex_unlock(&c->mu);
	return ret;
}

void compact_stop(struct wal *w)
{
	struct compaction *c = w->compact;

	if (!c)
		return;
	atomic_store(&c->cancel, true);
	join_running(c, true);
}

void compact_wait(struct wal *w)
{
	join_running(w->compact, false);
}

void compact_free(struct wal *w)
{
	struct compaction *c = w->compact;

	if (!c)
		return;
	pthread_mutex_destroy(&c->mu);
	pthread_cond_destroy(&c->cancelled);
	free(c);
	w->compact = NULL;
}
