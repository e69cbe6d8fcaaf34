/* SPDX-License-Identifier: MIT */
/*
 * recover.c - see recover.h: replay at start-up, with the rules for a file
 * that ends badly.
 *
 * Only the log being appended at a crash can end in a torn record: every
 * other file was synced whole before the manifest named its successor. A
 * torn tail is recognised by what follows the first bad record: a crash in
 * mid-write leaves nothing valid after the cut (walfile_valid_after), so
 * the log is cut there with a warning naming the file and the offset, and
 * the server starts with every record before it. A bad record with valid
 * records after it, or a bad record in any other file, is damage: the
 * server refuses to start and says how to proceed - --repair-log keeps the
 * good prefix and moves the rest aside (the damaged log's tail to
 * <log>.damaged-<offset>, and every later log to <log>.damaged), or the
 * directory is restored from a backup.
 */
#include "recover.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hash.h"
#include "log.h"
#include "now.h"
#include "outq.h"
#include "proto.h"
#include "queues.h"
#include "stats.h"
#include "store.h"
#include "table.h"
#include "waiters.h"
#include "wal_impl.h"
#include "walfile.h"

/* One thread executing records against a store. */
struct replayer {
	struct store_thread th;
	struct stats stats; /* what replay's requests count, dropped */
	struct wait_state ws;
	struct outq out; /* replies, dropped */
	struct recover_result *res;
	struct walfile_snap_end end; /* counted while a snapshot is read */
	bool seen_end;
};

static void no_deliver(void *arg, const struct waiter_ref *who, uint32_t seq)
{
	(void)arg;
	(void)who;
	(void)seq;
}

static int replayer_init(struct replayer *rp, struct store *st,
			 struct recover_result *res)
{
	memset(rp, 0, sizeof(*rp));
	rp->res = res;
	wait_state_init(&rp->ws, (struct waiter_ref){ 0 });
	return store_thread_init(&rp->th, st, &rp->stats, no_deliver, NULL);
}

static void replayer_done(struct replayer *rp)
{
	store_client_gone(&rp->th, &rp->ws);
	outq_free(&rp->out);
	store_thread_destroy(&rp->th);
}

/* Execute one record. 0, or -EBADMSG with *why. */
static int apply(struct replayer *rp, const struct walfile_rec *rec,
		 enum walfile_kind kind, const char **why)
{
	struct proto_req req;
	int ret;

	if (!rec->len || rec->payload[0] == WAL_OP_PAD)
		return 0;
	if (kind == WALFILE_SNAP && rec->payload[0] == WAL_OP_SNAP_END) {
		struct walfile_snap_end e;
		if (rec->len != 1 + sizeof(e) || rp->seen_end) {
			*why = "a malformed snapshot end";
			return -EBADMSG;
		}
		memcpy(&e, rec->payload + 1, sizeof(e));
		if (e.records != rp->end.records) {
			*why = "a snapshot whose record count does not match";
			return -EBADMSG;
		}
		rp->seen_end = true;
		return 0;
	}
	if (rp->seen_end) {
		*why = "a record after the snapshot's end";
		return -EBADMSG;
	}
	switch (rec->payload[0]) {
	case OP_SET:
	case OP_APPEND:
	case OP_DELETE_KEY:
	case OP_MULTI_SET:
	case OP_QUEUE_PUSH:
	case OP_QUEUE_POP:
		break;
	default:
		*why = "a record that is not a change";
		return -EBADMSG;
	}
	if (proto_parse(rec->payload, rec->len, &req)) {
		*why = "a record that does not parse";
		return -EBADMSG;
	}
	ret = store_exec(&rp->th, &rp->ws, &req, &rp->out);
	outq_consume(&rp->out, outq_len(&rp->out));
	if (ret) {
		*why = ret == -ENOMEM ? "out of memory while replaying"
				      : "a change the store refuses";
		return ret == -ENOMEM ? ret : -EBADMSG;
	}
	rp->res->records++;
	rp->end.records++;
	return 0;
}

/*
 * Replay one file. Returns 0, or -EBADMSG / -errno with r left at the bad
 * record (r->bad_off, r->why) for the caller to judge; @open_err says the
 * file could not even be opened.
 */
static int replay_file(struct replayer *rp, struct walfile_reader *r,
		       const char *path, enum walfile_kind kind, bool *open_err)
{
	struct walfile_rec rec;
	int ret;

	*open_err = false;
	ret = walfile_open(r, path, kind);
	if (ret) {
		*open_err = true;
		return ret;
	}
	rp->end = (struct walfile_snap_end){ 0 };
	rp->seen_end = false;
	while ((ret = walfile_next(r, &rec)) == 1) {
		const char *why = NULL;

		ret = apply(rp, &rec, kind, &why);
		if (ret) {
			r->bad_off = rec.off;
			r->why = why;
			return ret;
		}
	}
	if (!ret && kind == WALFILE_SNAP && !rp->seen_end) {
		r->bad_off = r->off;
		r->why = "a snapshot without its end";
		return -EBADMSG;
	}
	rp->res->bytes += r->size;
	return ret;
}

static void path_of(char *out, size_t len, const char *dir,
		    enum walfile_kind kind, uint32_t num)
{
	walfile_name(out, len, dir, kind, num);
}

int recover_files(struct store *st, const char *dir,
		  const struct walfile_manifest *m, struct recover_result *res,
		  char *why, size_t whylen)
{
	struct replayer rp;
	struct walfile_reader r;
	char path[4096];
	bool open_err;
	int ret;

	memset(res, 0, sizeof(*res));
	ret = replayer_init(&rp, st, res);
	if (ret)
		return ret;
	for (uint32_t i = 0; i <= m->nlogs && !ret; i++) {
		enum walfile_kind kind = i == 0 ? WALFILE_SNAP : WALFILE_LOG;
		uint32_t num = i == 0 ? m->snap : m->logs[i - 1];

		if (!num)
			continue;
		path_of(path, sizeof(path), dir, kind, num);
		ret = replay_file(&rp, &r, path, kind, &open_err);
		if (ret && open_err && !r.why)
			snprintf(why, whylen, "%s: %s", path, strerror(-ret));
		else if (ret)
			snprintf(why, whylen, "%s: %s at offset %zu", path,
				 r.why, r.bad_off);
		res->end_lsn = r.end_lsn;
		walfile_close(&r);
	}
	replayer_done(&rp);
	return ret;
}

/*
 * About how many distinct keys the files of @m hold: a HyperLogLog sketch
 * (2^12 registers, about 2 % off) of every key that a SET, APPEND or
 * MULTI_SET names, read without checking checksums and stopping quietly at
 * anything odd (replay judges the files). Distinct, not a count of
 * records: a log of a million heartbeats of a thousand keys asks for a
 * thousand.
 */
#define HLL_BITS 12

struct hll {
	uint8_t reg[1u << HLL_BITS];
};

static void hll_add(struct hll *h, const uint8_t *key, size_t len)
{
	uint64_t x = hash_key(key, len);
	uint64_t rest = x << HLL_BITS | (1ull << (HLL_BITS - 1));
	uint8_t rank = (uint8_t)(__builtin_clzll(rest) + 1);
	uint8_t *r = &h->reg[x >> (64 - HLL_BITS)];

	if (rank > *r)
		*r = rank;
}

static size_t hll_count(const struct hll *h)
{
	const double m = 1u << HLL_BITS, alpha = 0.7213 / (1 + 1.079 / m);
	double sum = 0;
	unsigned zeros = 0;

	for (size_t i = 0; i < (1u << HLL_BITS); i++) {
		sum += 1.0 / (double)(1ull << h->reg[i]);
		zeros += !h->reg[i];
	}
	double e = alpha * m * m / sum;
	if (e <= 2.5 * m && zeros) /* small range: linear counting */
		e = m * log(m / zeros);
	return (size_t)e;
}

/* Feed the keys one record names to @h. */
static void hll_record(struct hll *h, const struct walfile_rec *rec)
{
	const uint8_t *p = rec->payload, *end = p + rec->len;
	uint64_t n = 1, len;

	if (!rec->len)
		return;
	if (p[0] == OP_MULTI_SET) {
		if (rec->len < 9)
			return;
		memcpy(&n, p + 1, 8);
		p += 9;
	} else if (p[0] == OP_SET || p[0] == OP_APPEND) {
		p += 1;
	} else {
		return;
	}
	for (uint64_t i = 0; i < n && end - p >= 8; i++) {
		memcpy(&len, p, 8); /* the key */
		if (len > (uint64_t)(end - p - 8))
			return;
		hll_add(h, p + 8, (size_t)len);
		p += 8 + len;
		if (end - p < 8)
			return;
		memcpy(&len, p, 8); /* its value, skipped */
		if (len > (uint64_t)(end - p - 8))
			return;
		p += 8 + len;
	}
}

static size_t count_keys(const char *dir, const struct walfile_manifest *m)
{
	struct walfile_reader r;
	struct walfile_rec rec;
	struct hll *h = calloc(1, sizeof(*h));
	char path[4096];
	size_t n;

	if (!h)
		return 0;
	for (uint32_t i = 0; i <= m->nlogs; i++) {
		enum walfile_kind kind = i == 0 ? WALFILE_SNAP : WALFILE_LOG;
		uint32_t num = i == 0 ? m->snap : m->logs[i - 1];

		if (!num)
			continue;
		path_of(path, sizeof(path), dir, kind, num);
		if (walfile_open(&r, path, kind))
			continue;
		while (walfile_scan(&r, &rec) == 1)
			hll_record(h, &rec);
		walfile_close(&r);
	}
	n = hll_count(h);
	free(h);
	return n + n / 16; /* the sketch's error, and some room */
}

/* ---- start-up ---------------------------------------------------------- */

/* Copy [@off, end) of @path to @aside, then cut @path at @off. */
static int move_tail_aside(const char *path, size_t off, const char *aside)
{
	char buf[65536];
	int in = open(path, O_RDWR | O_CLOEXEC), out = -1, err = 0;
	ssize_t n;

	if (in < 0)
		return -errno;
	out = open(aside, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (out < 0 || lseek(in, (off_t)off, SEEK_SET) < 0)
		err = -errno;
	while (!err && (n = read(in, buf, sizeof(buf))) != 0) {
		if (n < 0 || write(out, buf, (size_t)n) != n)
			err = errno ? -errno : -EIO;
	}
	if (!err && (fsync(out) || ftruncate(in, (off_t)off) || fsync(in)))
		err = -errno;
	if (out >= 0)
		close(out);
	close(in);
	return err;
}

/* Cut @path at @off (a torn tail), durably. */
static int cut(const char *path, size_t off)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC), err = 0;

	if (fd < 0)
		return -errno;
	if (ftruncate(fd, (off_t)off) || fsync(fd))
		err = -errno;
	close(fd);
	return err;
}

/*
 * A bad record at r->bad_off in log @i of @m (snapshots cannot be
 * repaired). With cfg.repair: move the rest aside and drop the later logs
 * from the manifest; else explain in @why. Returns 0 when repaired.
 */
static int repair_or_refuse(struct wal *w, struct walfile_manifest *m,
			    uint32_t i, const struct walfile_reader *r,
			    char *why, size_t whylen)
{
	char path[4096], aside[4200];
	int err;

	path_of(path, sizeof(path), w->cfg.dir, WALFILE_LOG, m->logs[i]);
	snprintf(aside, sizeof(aside), "%s.damaged-%zu", path, r->bad_off);
	if (!w->cfg.repair) {
		snprintf(why, whylen,
			 "%s: %s at offset %zu, and the log does not simply "
			 "end there (%s): it is damaged, not cut short by a "
			 "crash. To start with every record before offset "
			 "%zu and move the rest aside (to %s%s), run with "
			 "--repair-log; or restore %s from a backup",
			 path, r->why, r->bad_off,
			 i + 1 < m->nlogs ? "newer logs follow it"
					  : "valid records follow",
			 r->bad_off, aside,
			 i + 1 < m->nlogs ? ", and the newer logs to "
					    "<log>.damaged"
					  : "",
			 w->cfg.dir);
		return -EBADMSG;
	}
	err = move_tail_aside(path, r->bad_off, aside);
	if (err) {
		snprintf(why, whylen,
			 "--repair-log: cannot move the end of "
			 "%s aside: %s",
			 path, strerror(-err));
		return err;
	}
	log_warn("--repair-log: %s: %s at offset %zu; kept the records "
		 "before it, moved the rest to %s",
		 path, r->why, r->bad_off, aside);
	for (uint32_t j = i + 1; j < m->nlogs; j++) {
		path_of(path, sizeof(path), w->cfg.dir, WALFILE_LOG,
			m->logs[j]);
		snprintf(aside, sizeof(aside), "%s.damaged", path);
		if (rename(path, aside)) {
			err = -errno;
			snprintf(why, whylen,
				 "--repair-log: cannot move %s "
				 "aside: %s",
				 path, strerror(-err));
			return err;
		}
		log_warn("--repair-log: moved %s, which comes after the "
			 "damage, to %s",
			 path, aside);
	}
	m->nlogs = i + 1;
	err = walfile_manifest_write(w->cfg.dir, m);
	if (err)
		snprintf(why, whylen,
			 "--repair-log: cannot write the "
			 "manifest: %s",
			 strerror(-err));
	return err;
}

/* A new data directory: an empty first log, named by a new manifest. */
static int create_fresh(struct wal *w, char *why, size_t whylen)
{
	int err;

	w->man = (struct walfile_manifest){ .nlogs = 1,
					    .logs = { 1 },
					    .next = 2 };
	w->next_lsn = WAL_FIRST_LSN;
	err = wal_open_log(w, 1, WAL_FIRST_LSN, true);
	if (!err)
		err = walfile_manifest_write(w->cfg.dir, &w->man);
	if (err)
		snprintf(why, whylen, "cannot create the log in %s: %s",
			 w->cfg.dir, strerror(-err));
	else
		log_info("write log: new data directory %s", w->cfg.dir);
	return err;
}

int recover(struct wal *w, struct store *st, char *why, size_t whylen)
{
	struct recover_result res = { 0 };
	struct walfile_manifest *m = &w->man;
	struct walfile_reader r;
	struct replayer rp;
	uint64_t t0 = now_mono_ns(), prev_last = 0;
	char path[4096];
	bool open_err;
	int err;

	err = walfile_manifest_read(w->cfg.dir, m, why, whylen);
	if (err == -ENOENT)
		return create_fresh(w, why, whylen);
	if (err) {
		if (err != -EBADMSG)
			snprintf(why, whylen, "cannot read %s/MANIFEST: %s",
				 w->cfg.dir, strerror(-err));
		return err;
	}
	walfile_remove_strays(w->cfg.dir, m);
	if (table_reserve(st->table, count_keys(w->cfg.dir, m)))
		log_warn("write log: cannot size the table for replay (out "
			 "of memory): it grows as it goes");
	err = replayer_init(&rp, st, &res);
	if (err) {
		snprintf(why, whylen, "cannot replay: %s", strerror(-err));
		return err;
	}
	if (m->snap) {
		path_of(path, sizeof(path), w->cfg.dir, WALFILE_SNAP, m->snap);
		err = replay_file(&rp, &r, path, WALFILE_SNAP, &open_err);
		if (err)
			snprintf(why, whylen,
				 "%s: %s (offset %zu): a snapshot "
				 "cannot be repaired; restore %s from a "
				 "backup",
				 path,
				 open_err && !r.why ? strerror(-err) : r.why,
				 r.bad_off, w->cfg.dir);
		walfile_close(&r);
	}
	for (uint32_t i = 0; !err && i < m->nlogs; i++) {
		bool newest = i + 1 == m->nlogs;

		path_of(path, sizeof(path), w->cfg.dir, WALFILE_LOG,
			m->logs[i]);
		err = replay_file(&rp, &r, path, WALFILE_LOG, &open_err);
		if (!err && r.start_lsn <= prev_last) {
			r.why = "a log that starts before the end of the one "
				"before it";
			err = -EBADMSG;
			open_err = true;
		}
		if (err && open_err) {
			snprintf(why, whylen,
				 "%s: %s; restore %s from a "
				 "backup",
				 path, r.why ? r.why : strerror(-err),
				 w->cfg.dir);
		} else if (err == -EBADMSG && newest &&
			   !walfile_valid_after(&r)) {
			/* A torn tail: the crash's, cut off. */
			log_warn("%s: %s at offset %zu is the end of a write "
				 "a crash interrupted: cut there (%zu bytes), "
				 "every record before it kept",
				 path, r.why, r.bad_off, r.size - r.bad_off);
			err = cut(path, r.bad_off);
			if (err)
				snprintf(why, whylen, "cannot cut %s: %s", path,
					 strerror(-err));
			res.bytes += r.bad_off;
			r.size = r.bad_off;
		} else if (err == -EBADMSG) {
			err = repair_or_refuse(w, m, i, &r, why, whylen);
			res.bytes += r.bad_off;
			r.size = r.bad_off;
			if (!err)
				i = m->nlogs; /* the logs after it are gone */
		}
		if (!err) {
			prev_last = r.last_lsn;
			res.end_lsn = r.end_lsn > r.start_lsn ? r.end_lsn
							      : r.start_lsn;
			res.newest_size = r.size;
			res.log_bytes += r.size;
		}
		walfile_close(&r);
	}
	replayer_done(&rp);
	if (err)
		return err;

	w->next_lsn = res.end_lsn;
	err = wal_open_log(w, m->logs[m->nlogs - 1], 0, false);
	if (err) {
		snprintf(why, whylen, "cannot append to %s: %s", w->log_path,
			 strerror(-err));
		return err;
	}
	w->file_bytes = res.newest_size;
	atomic_store(&w->log_bytes, res.log_bytes);
	log_info("write log: replayed %" PRIu64 " records (%zu keys, %" PRIu64
		 " queue items, %zu bytes stored) from %" PRIu64
		 " bytes of %s in %.3f s",
		 res.records, table_count(st->table), queues_items(st->queues),
		 table_bytes(st->table), res.bytes, w->cfg.dir,
		 (double)(now_mono_ns() - t0) / 1e9);
	return 0;
}
