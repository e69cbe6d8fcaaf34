/* SPDX-License-Identifier: MIT */
/*
 * test_wal.c - the write log against its promises (server/wal.h):
 *  - what the live store holds, replay rebuilds exactly, also when several
 *    threads wrote the same keys at once (the per-key order argument), and
 *    through a ring small enough to wrap many times and to need buffers of
 *    its own for large records;
 *  - a log cut at any byte of its last record restarts with every record
 *    before the cut; a damaged record before the end refuses to start and
 *    says what to do, and --repair-log then keeps the good prefix and moves
 *    the rest aside;
 *  - a compaction leaves a snapshot and a new log that replay to the same
 *    state, and files a crash left behind are removed.
 * Stores are driven through store_exec with real requests, as a reactor
 * does; files live in a fresh temporary directory per test.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <semaphore.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "buf.h"
#include "compact.h"
#include "helpers.h"
#include "log.h"
#include "outq.h"
#include "proto.h"
#include "queues.h"
#include "stats.h"
#include "store.h"
#include "table.h"
#include "wal.h"
#include "wal_impl.h"
#include "walfile.h"

#define SMALL_RING (64u << 10)

struct fixture {
	char dir[64];
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	t_tmpdir(f->dir, sizeof(f->dir), "test_wal");
	log_set_level(LOG_LVL_ERROR);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(t_rmtree(f->dir), 0);
	free(f);
	return 0;
}

/* A store with a log over @dir: @writers store threads write at once
 * (more than one: the stripe locks), one more may read it. No compaction
 * starts by itself. */
struct db {
	struct store st;
	struct wal *w;
	char why[4096];
};

/* A hook db_open installs (test_order_under_contention). */
static void (*next_hook)(void *arg);

static int db_open(struct db *d, const char *dir, unsigned writers, bool repair,
		   enum wal_fsync fsync)
{
	struct wal_config cfg = { .dir = dir,
				  .fsync = fsync,
				  .repair = repair,
				  .ring_bytes = SMALL_RING,
				  .writers = writers,
				  .compact_min = UINT64_MAX / 4,
				  .after_reserve = next_hook };
	int ret;

	memset(d, 0, sizeof(*d));
	/* One store thread: the one-writer table a one-reactor server has;
	 * dumps then run after the writer is done. */
	assert_int_equal(store_init(&d->st, 16, writers > 1 ? writers + 1 : 1),
			 0);
	ret = wal_open(&d->w, &cfg, &d->st, d->why, sizeof(d->why));
	if (ret) {
		store_destroy(&d->st);
		return ret;
	}
	d->st.wal = d->w;
	assert_int_equal(wal_start(d->w), 0);
	return 0;
}

static void db_close(struct db *d)
{
	assert_int_equal(wal_close(d->w), 0);
	d->st.wal = NULL;
	store_destroy(&d->st);
}

/* One client on one store thread. */
struct cli {
	struct store_thread th;
	struct stats stats;
	struct wait_state ws;
	struct outq out;
	struct buf req;
};

static void cli_init(struct cli *c, struct db *d)
{
	memset(c, 0, sizeof(*c));
	assert_int_equal(store_thread_init(&c->th, &d->st, &c->stats,
					   t_no_deliver, NULL),
			 0);
	wait_state_init(&c->ws, (struct waiter_ref){ 0 });
}

static void cli_done(struct cli *c)
{
	store_client_gone(&c->th, &c->ws);
	outq_free(&c->out);
	buf_free(&c->req);
	store_thread_destroy(&c->th);
}

/* Run the request in c->req; the reply is dropped. */
static void run(struct cli *c)
{
	struct proto_req r;

	assert_int_equal(proto_parse(buf_head(&c->req), buf_used(&c->req), &r),
			 0);
	assert_int_equal(store_exec(&c->th, &c->ws, &r, &c->out), 0);
	outq_consume(&c->out, outq_len(&c->out));
	buf_reset(&c->req);
	/* What a reactor does at the end of a pass. */
	assert_int_equal(wal_commit(&c->th.ww), 0);
}

static void set(struct cli *c, const char *k, const void *v, size_t vlen)
{
	assert_int_equal(
		proto_enc_key_val(&c->req, OP_SET, k, strlen(k), v, vlen), 0);
	run(c);
}

static void add(struct cli *c, const char *k, int64_t n)
{
	assert_int_equal(proto_enc_key_i64(&c->req, OP_ADD, k, strlen(k), n),
			 0);
	run(c);
}

static void op_key(struct cli *c, enum proto_op op, const char *k)
{
	assert_int_equal(proto_enc_key(&c->req, op, k, strlen(k)), 0);
	run(c);
}

static void op_key_val(struct cli *c, enum proto_op op, const char *k,
		       const char *v)
{
	assert_int_equal(
		proto_enc_key_val(&c->req, op, k, strlen(k), v, strlen(v)), 0);
	run(c);
}

/* ---- comparing stores -------------------------------------------------- */

/* Every key and value of a store, and every queue's items, as text lines
 * ("k=<hex>" / "q=<hex>"), sorted: two stores hold the same state iff
 * their dumps are equal. */
struct dump {
	char **line;
	size_t n, cap;
	char queue[256]; /* the queue being walked */
	size_t idx;      /* the next item's place in it */
};

static void dump_add(struct dump *d, char kind, const uint8_t *k, size_t kl,
		     const uint8_t *v, size_t vl)
{
	char *s = malloc(4 + 2 * (kl + vl)), *p;

	assert_non_null(s);
	p = s;
	*p++ = kind;
	for (size_t i = 0; i < kl; i++)
		p += sprintf(p, "%02x", k[i]);
	*p++ = '=';
	for (size_t i = 0; i < vl; i++)
		p += sprintf(p, "%02x", v[i]);
	*p = '\0';
	if (d->n == d->cap) {
		d->cap = d->cap ? 2 * d->cap : 64;
		d->line = realloc(d->line, d->cap * sizeof(*d->line));
		assert_non_null(d->line);
	}
	d->line[d->n++] = s;
}

static int dump_key(struct table_entry *e, void *arg)
{
	dump_add(arg, 'k', table_entry_key(e), e->klen, table_entry_val(e),
		 e->vlen);
	return 0;
}

static int dump_item(const uint8_t *key, size_t klen,
		     const struct table_entry *item, void *arg)
{
	/* Queue order matters: the item's place in its queue is part of the
	 * line (a queue's items come one after another, head first). */
	struct dump *d = arg;
	char k[300];
	int n;

	if (strlen(d->queue) != klen || memcmp(d->queue, key, klen)) {
		snprintf(d->queue, sizeof(d->queue), "%.*s", (int)klen, key);
		d->idx = 0;
	}
	n = snprintf(k, sizeof(k), "%.*s#%zu", (int)klen, key, d->idx++);

	dump_add(d, 'q', (const uint8_t *)k, (size_t)n, table_entry_val(item),
		 item->vlen);
	return 0;
}

static int cmp_line(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void dump_store(struct store *st, struct dump *d)
{
	struct store_thread th;
	struct stats stats;

	memset(d, 0, sizeof(*d));
	assert_int_equal(store_thread_init(&th, st, &stats, t_no_deliver, NULL),
			 0);
	assert_int_equal(table_foreach(st->table, th.qt, dump_key, d), 0);
	assert_int_equal(queues_foreach(st->queues, dump_item, d), 0);
	qsort(d->line, d->n, sizeof(*d->line), cmp_line);
	store_thread_destroy(&th);
}

static void dump_free(struct dump *d)
{
	for (size_t i = 0; i < d->n; i++)
		free(d->line[i]);
	free(d->line);
}

static void assert_same(struct dump *a, struct dump *b)
{
	assert_int_equal(a->n, b->n);
	for (size_t i = 0; i < a->n; i++)
		assert_string_equal(a->line[i], b->line[i]);
}

/* Reopen @dir and compare with @want. */
static void assert_replays_to(const char *dir, struct dump *want)
{
	struct db d;
	struct dump got;

	assert_int_equal(db_open(&d, dir, 1, false, WAL_FSYNC_EVERYSEC), 0);
	dump_store(&d.st, &got);
	assert_same(&got, want);
	dump_free(&got);
	db_close(&d);
}

/* ---- the tests --------------------------------------------------------- */

/* Every kind of change, through a ring that wraps many times and values
 * too large for it: replay rebuilds the same store. */
static void test_replay_rebuilds_every_change(void **state)
{
	struct fixture *f = *state;
	struct db d;
	struct cli c;
	struct dump want;
	static uint8_t big[3 * SMALL_RING];
	char k[32], v[600];

	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (uint8_t)(i * 7);
	assert_int_equal(db_open(&d, f->dir, 1, false, WAL_FSYNC_NO), 0);
	cli_init(&c, &d);
	for (int i = 0; i < 3000; i++) {
		snprintf(k, sizeof(k), "key-%d", i % 97);
		memset(v, 'a' + i % 26, sizeof(v));
		set(&c, k, v, (size_t)(i % 500));
		add(&c, "counter", i);
		if (i % 7 == 0)
			op_key_val(&c, OP_APPEND, "log", "x");
		if (i % 11 == 0)
			op_key(&c, OP_DELETE_KEY, k);
		if (i % 13 == 0)
			op_key_val(&c, OP_QUEUE_PUSH, "q", k);
		if (i % 29 == 0)
			op_key(&c, OP_QUEUE_POP, "q");
		if (i % 500 == 0)
			set(&c, "big", big, sizeof(big) - (size_t)i);
	}
	{
		const void *keys[3] = { "m1", "m2", "counter" };
		size_t kl[3] = { 2, 2, 7 };
		const void *vals[3] = { "one", "two", "55" };
		size_t vl[3] = { 3, 3, 2 };
		assert_int_equal(
			proto_enc_multi_set(&c.req, 3, keys, kl, vals, vl), 0);
		run(&c);
	}
	assert_int_equal(
		proto_enc_compare_set(&c.req, "m1", 2, "one", 3, "uno", 3), 0);
	run(&c);
	cli_done(&c);
	dump_store(&d.st, &want);
	db_close(&d);
	assert_replays_to(f->dir, &want);
	dump_free(&want);
}

/* Several store threads write overlapping keys at once (SET, ADD, APPEND,
 * QUEUE_PUSH): the state replay rebuilds is exactly the live one, which
 * holds only if, for every key, log order is the order the changes took
 * effect. */
struct writer_arg {
	struct db *d;
	int id;
};

static void *writer(void *arg)
{
	struct writer_arg *a = arg;
	struct cli c;
	char k[16], v[16];

	cli_init(&c, a->d);
	for (int i = 0; i < 4000; i++) {
		snprintf(k, sizeof(k), "k%d", i % 8);
		snprintf(v, sizeof(v), "%d-%d", a->id, i);
		set(&c, k, v, strlen(v)); /* lengths vary: in place or not */
		add(&c, "n", 1);
		if (i % 5 == 0)
			op_key_val(&c, OP_APPEND, "a", v);
		if (i % 9 == 0)
			op_key_val(&c, OP_QUEUE_PUSH, "q", v);
		if (i % 17 == 0)
			op_key(&c, OP_QUEUE_POP, "q");
	}
	cli_done(&c);
	return NULL;
}

static void test_concurrent_writers_replay_exactly(void **state)
{
	struct fixture *f = *state;
	struct writer_arg args[4];
	pthread_t t[4];
	struct dump want;
	struct db d;

	assert_int_equal(db_open(&d, f->dir, 4, false, WAL_FSYNC_NO), 0);
	for (int i = 0; i < 4; i++) {
		args[i] = (struct writer_arg){ .d = &d, .id = i };
		assert_int_equal(pthread_create(&t[i], NULL, writer, &args[i]),
				 0);
	}
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	dump_store(&d.st, &want);
	db_close(&d);
	assert_replays_to(f->dir, &want);
	dump_free(&want);
}

/*
 * The interleaving the stripe locks exist for, forced: writer 1 takes its
 * record's place for a key and stops there; writer 2 then writes the same
 * key. Writer 2 must wait for writer 1's change (the key's lock), so its
 * record comes after writer 1's in the log and its change after writer 1's
 * in the table. Without the lock, writer 2's record follows writer 1's but
 * its change lands first, and replay would end with writer 2's value where
 * the live store holds writer 1's. Writer 1 waits at most a while for
 * writer 2 (with the lock it never comes): a slow machine can only hide a
 * broken lock, never fail a working one.
 */
struct race {
	pthread_t first;
	sem_t reserved, second_done;
	bool stopped;
};

static struct race race;

static void hold_first(void *arg)
{
	struct timespec ts;

	(void)arg;
	if (!pthread_equal(pthread_self(), race.first) || race.stopped)
		return;
	race.stopped = true;
	sem_post(&race.reserved);
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_nsec += 300 * 1000000L;
	ts.tv_sec += ts.tv_nsec / 1000000000L;
	ts.tv_nsec %= 1000000000L;
	while (sem_timedwait(&race.second_done, &ts) && errno == EINTR)
		;
}

struct race_arg {
	struct db *d;
	bool multi;
	const char *val;
};

static void race_write(struct race_arg *a)
{
	struct cli c;

	cli_init(&c, a->d);
	if (a->multi) {
		const void *k[2] = { "k", "other" }, *v[2] = { a->val, "x" };
		size_t kl[2] = { 1, 5 }, vl[2] = { strlen(a->val), 1 };
		assert_int_equal(proto_enc_multi_set(&c.req, 2, k, kl, v, vl),
				 0);
		run(&c);
	} else {
		set(&c, "k", a->val, strlen(a->val));
	}
	cli_done(&c);
}

static void *race_first(void *arg)
{
	race_write(arg);
	return NULL;
}

static void *race_second(void *arg)
{
	while (sem_wait(&race.reserved) && errno == EINTR)
		;
	race_write(arg);
	sem_post(&race.second_done);
	return NULL;
}

static void race_once(const char *dir, bool multi)
{
	struct race_arg a1, a2;
	struct dump want;
	pthread_t t2;
	struct db d;

	memset(&race, 0, sizeof(race));
	sem_init(&race.reserved, 0, 0);
	sem_init(&race.second_done, 0, 0);
	next_hook = hold_first;
	assert_int_equal(db_open(&d, dir, 2, false, WAL_FSYNC_NO), 0);
	next_hook = NULL;
	a1 = (struct race_arg){ .d = &d, .multi = multi, .val = "first" };
	a2 = (struct race_arg){ .d = &d, .multi = multi, .val = "second" };
	assert_int_equal(pthread_create(&race.first, NULL, race_first, &a1), 0);
	assert_int_equal(pthread_create(&t2, NULL, race_second, &a2), 0);
	pthread_join(race.first, NULL);
	pthread_join(t2, NULL);
	dump_store(&d.st, &want);
	db_close(&d);
	assert_replays_to(dir, &want);
	dump_free(&want);
	sem_destroy(&race.reserved);
	sem_destroy(&race.second_done);
}

static void test_order_under_contention(void **state)
{
	struct fixture *f = *state;
	char dir[96];

	snprintf(dir, sizeof(dir), "%s/set", f->dir);
	race_once(dir, false);
	snprintf(dir, sizeof(dir), "%s/multi", f->dir);
	race_once(dir, true);
}

/* The newest log's path and size. */
static off_t newest_log(const char *dir, char *path, size_t len)
{
	struct walfile_manifest m;
	struct stat st;
	char why[256];

	assert_int_equal(walfile_manifest_read(dir, &m, why, sizeof(why)), 0);
	walfile_name(path, len, dir, WALFILE_LOG, m.logs[m.nlogs - 1]);
	assert_int_equal(stat(path, &st), 0);
	return st.st_size;
}

static void copy_dir(const char *from, const char *to)
{
	char cmd[256];

	snprintf(cmd, sizeof(cmd), "rm -rf %s && cp -a %s %s", to, from, to);
	assert_int_equal(system(cmd), 0);
}

/* A log whose last record is cut at any of its bytes restarts with every
 * record before it. */
static void test_torn_tail_at_every_offset(void **state)
{
	struct fixture *f = *state;
	char base[80], work[80], path[4200];
	struct dump before, after;
	struct db d;
	struct cli c;
	off_t cut_from, end;

	snprintf(base, sizeof(base), "%s/base", f->dir);
	snprintf(work, sizeof(work), "%s/work", f->dir);
	assert_int_equal(db_open(&d, base, 1, false, WAL_FSYNC_ALWAYS), 0);
	cli_init(&c, &d);
	for (int i = 0; i < 20; i++)
		add(&c, "n", 1);
	set(&c, "k", "before", 6);
	cut_from = newest_log(base, path, sizeof(path));
	set(&c, "k", "the last record, cut", 20);
	end = newest_log(base, path, sizeof(path));
	cli_done(&c);
	dump_store(&d.st, &after);
	db_close(&d);
	/* The state before the last record: the same ADDs and k's old value. */
	snprintf(work, sizeof(work), "%s/before", f->dir);
	assert_int_equal(db_open(&d, work, 1, false, WAL_FSYNC_NO), 0);
	cli_init(&c, &d);
	for (int i = 0; i < 20; i++)
		add(&c, "n", 1);
	set(&c, "k", "before", 6);
	cli_done(&c);
	dump_store(&d.st, &before);
	db_close(&d);
	snprintf(work, sizeof(work), "%s/work", f->dir);
	assert_true(end > cut_from);

	for (off_t cut = cut_from; cut <= end; cut++) {
		copy_dir(base, work);
		newest_log(work, path, sizeof(path));
		assert_int_equal(truncate(path, cut), 0);
		assert_replays_to(work, cut == end ? &after : &before);
		/* The cut is durable: the log now ends at the good prefix. */
		assert_int_equal(newest_log(work, path, sizeof(path)),
				 cut == end ? end : cut_from);
	}
	dump_free(&before);
	dump_free(&after);
}

/* The state of SET a=1, SET b=2 (in a scratch directory). */
static void prefix_of(const char *dir, struct dump *out)
{
	char scratch[128];
	struct db d;
	struct cli c;

	snprintf(scratch, sizeof(scratch), "%s-prefix", dir);
	assert_int_equal(db_open(&d, scratch, 1, false, WAL_FSYNC_NO), 0);
	cli_init(&c, &d);
	set(&c, "a", "1", 1);
	set(&c, "b", "2", 1);
	cli_done(&c);
	dump_store(&d.st, out);
	db_close(&d);
	snprintf(scratch, sizeof(scratch), "rm -rf %s-prefix", dir);
	assert_int_equal(system(scratch), 0);
}

/* A damaged record with good ones after it: refused, with the way out;
 * --repair-log keeps the prefix and moves the rest aside. */
static void test_damage_refuses_then_repairs(void **state)
{
	struct fixture *f = *state;
	char path[4200], aside[4300];
	struct dump prefix;
	struct db d;
	struct cli c;
	off_t at;
	int fd;
	uint8_t b;

	assert_int_equal(db_open(&d, f->dir, 1, false, WAL_FSYNC_ALWAYS), 0);
	cli_init(&c, &d);
	set(&c, "a", "1", 1);
	set(&c, "b", "2", 1);
	at = newest_log(f->dir, path, sizeof(path));
	set(&c, "c", "3", 1); /* to be damaged */
	set(&c, "d", "4", 1);
	set(&c, "e", "5", 1);
	cli_done(&c);
	db_close(&d);
	prefix_of(f->dir, &prefix);

	/* Flip one byte of c's payload. */
	fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, &b, 1, at + WAL_HDR + 3), 1);
	b ^= 0x40;
	assert_int_equal(pwrite(fd, &b, 1, at + WAL_HDR + 3), 1);
	close(fd);

	assert_int_equal(db_open(&d, f->dir, 1, false, WAL_FSYNC_EVERYSEC),
			 -EBADMSG);
	assert_non_null(strstr(d.why, "checksum"));
	assert_non_null(strstr(d.why, "--repair-log"));
	assert_non_null(strstr(d.why, path));

	assert_int_equal(db_open(&d, f->dir, 1, true, WAL_FSYNC_EVERYSEC), 0);
	{
		struct dump got;
		dump_store(&d.st, &got);
		assert_same(&got, &prefix);
		dump_free(&got);
	}
	db_close(&d);
	snprintf(aside, sizeof(aside), "%s.damaged-%lld", path, (long long)at);
	assert_int_equal(access(aside, F_OK), 0);
	/* Repaired for good: a plain start now works. */
	assert_replays_to(f->dir, &prefix);
	dump_free(&prefix);
}

/* A compaction folds the logs into a snapshot while writes go on; the
 * snapshot and the new log replay to the same state; the old files are
 * gone, and leftovers of an interrupted compaction are removed. */
static void test_compaction(void **state)
{
	struct fixture *f = *state;
	struct walfile_manifest m;
	struct dump want;
	struct db d;
	struct cli c;
	char path[4200], why[256];
	char v[64];

	assert_int_equal(db_open(&d, f->dir, 1, false, WAL_FSYNC_EVERYSEC), 0);
	cli_init(&c, &d);
	for (int i = 0; i < 5000; i++) {
		snprintf(v, sizeof(v), "value %d", i);
		set(&c, i % 2 ? "even" : "odd", v, strlen(v));
		if (i % 100 == 0)
			op_key_val(&c, OP_QUEUE_PUSH, "q", v);
	}
	assert_int_equal(wal_compact_now(d.w), 0);
	for (int i = 0; i < 1000; i++) /* while it runs, or after */
		add(&c, "n", 1);
	compact_wait(d.w);
	assert_int_equal(wal_stat(d.w, WAL_STAT_COMPACTIONS), 1);
	op_key(&c, OP_QUEUE_POP, "q");
	cli_done(&c);
	dump_store(&d.st, &want);
	db_close(&d);

	assert_int_equal(walfile_manifest_read(f->dir, &m, why, sizeof(why)),
			 0);
	assert_int_not_equal(m.snap, 0);
	assert_int_equal(m.nlogs, 1);
	walfile_name(path, sizeof(path), f->dir, WALFILE_LOG, 1);
	assert_int_equal(access(path, F_OK), -1); /* folded, removed */

	/* What a crash in mid-compaction leaves: an unnamed log and a
	 * half-written snapshot. */
	walfile_name(path, sizeof(path), f->dir, WALFILE_LOG, 99);
	assert_int_equal(close(open(path, O_CREAT | O_WRONLY, 0644)), 0);
	walfile_name(path, sizeof(path), f->dir, WALFILE_SNAP, 98);
	strcat(path, ".tmp");
	assert_int_equal(close(open(path, O_CREAT | O_WRONLY, 0644)), 0);
	assert_replays_to(f->dir, &want);
	assert_int_equal(access(path, F_OK), -1);
	walfile_name(path, sizeof(path), f->dir, WALFILE_LOG, 99);
	assert_int_equal(access(path, F_OK), -1);
	dump_free(&want);
}

/* One server per data directory. */
static void test_directory_lock(void **state)
{
	struct fixture *f = *state;
	struct db a, b;

	assert_int_equal(db_open(&a, f->dir, 1, false, WAL_FSYNC_NO), 0);
	assert_int_equal(db_open(&b, f->dir, 1, false, WAL_FSYNC_NO), -EBUSY);
	assert_non_null(strstr(b.why, "in use by another ringstore"));
	db_close(&a);
	assert_int_equal(db_open(&b, f->dir, 1, false, WAL_FSYNC_NO), 0);
	db_close(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(
			test_replay_rebuilds_every_change, setup, teardown),
		cmocka_unit_test_setup_teardown(
			test_concurrent_writers_replay_exactly, setup,
			teardown),
		cmocka_unit_test_setup_teardown(test_order_under_contention,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_torn_tail_at_every_offset,
						setup, teardown),
		cmocka_unit_test_setup_teardown(
			test_damage_refuses_then_repairs, setup, teardown),
		cmocka_unit_test_setup_teardown(test_compaction, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_directory_lock, setup,
						teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
