/* SPDX-License-Identifier: MIT */
/*
 * helpers.c - see helpers.h. Runs on the test's thread only: every failure
 * is a cmocka failure of the running test.
 */
#include "helpers.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "buf.h"
#include "outq.h"
#include "proto.h"
#include "qsbr.h"
#include "store.h"
#include "table.h"

void *t_malloc(size_t size)
{
	void *p = malloc(size);

	if (!p && size)
		fail_msg("malloc(%zu) failed", size);
	return p;
}

void *t_calloc(size_t n, size_t size)
{
	void *p = calloc(n, size);

	if (!p && n && size)
		fail_msg("calloc(%zu, %zu) failed", n, size);
	return p;
}

pthread_t t_thread(void *(*fn)(void *), void *arg)
{
	pthread_t t;
	int ret = pthread_create(&t, NULL, fn, arg);

	if (ret)
		fail_msg("pthread_create: %s", strerror(ret));
	return t;
}

void *t_join(pthread_t t)
{
	void *res;
	int ret = pthread_join(t, &res);

	if (ret)
		fail_msg("pthread_join: %s", strerror(ret));
	return res;
}

void t_socketpair(int sv[2], bool nonblock)
{
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv))
		fail_msg("socketpair: %s", strerror(errno));
	if (nonblock && fcntl(sv[0], F_SETFL, O_NONBLOCK))
		fail_msg("O_NONBLOCK: %s", strerror(errno));
}

void t_close_pair(int sv[2])
{
	close(sv[0]);
	close(sv[1]);
	sv[0] = sv[1] = -1;
}

int t_eventfd(void)
{
	int fd = eventfd(0, EFD_CLOEXEC);

	if (fd < 0)
		fail_msg("eventfd: %s", strerror(errno));
	return fd;
}

void t_tmpdir(char *dir, size_t size, const char *name)
{
	int n = snprintf(dir, size, "/tmp/%s.XXXXXX", name);

	if (n < 0 || (size_t)n >= size)
		fail_msg("t_tmpdir: %s does not fit", name);
	if (!mkdtemp(dir))
		fail_msg("mkdtemp %s: %s", dir, strerror(errno));
}

/* nftw's callback: a positive errno stops the walk. */
static int rm_one(const char *path, const struct stat *st, int flag,
		  struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path) ? errno : 0;
}

int t_rmtree(const char *dir)
{
	/* Depth first, so a directory goes after what it holds; FTW_PHYS
	 * removes links rather than what they point to. */
	int ret = nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);

	return ret == -1 ? -errno : -ret;
}

void t_table_open(struct t_table *tt, size_t slots, bool one_writer)
{
	tt->q = qsbr_create();
	assert_non_null(tt->q);
	tt->qt = qsbr_register(tt->q);
	assert_non_null(tt->qt);
	tt->t = table_create(tt->q, slots, one_writer);
	assert_non_null(tt->t);
	tt->one_writer = one_writer;
}

void t_table_close(struct t_table *tt)
{
	table_destroy(tt->t);
	qsbr_unregister(tt->qt);
	/* Everything retired has been freed once the last thread left. */
	assert_int_equal(qsbr_pending(tt->q), 0);
	qsbr_destroy(tt->q);
	*tt = (struct t_table){ 0 };
}

size_t t_outq_gather(const struct outq *q, uint8_t *out, size_t cap)
{
	struct iovec iov[64];
	int n = outq_iov(q, iov, 64);
	size_t len = 0;

	for (int i = 0; i < n; i++) {
		assert_true(len + iov[i].iov_len <= cap);
		memcpy(out + len, iov[i].iov_base, iov[i].iov_len);
		len += iov[i].iov_len;
	}
	return len;
}

int t_store_exec(struct store_thread *th, struct wait_state *ws,
		 struct buf *req, struct outq *out)
{
	struct proto_limits lim;
	struct proto_decoder d;
	struct proto_req r;
	size_t used;
	int ret;

	proto_limits_default(&lim);
	proto_decoder_init(&d, &lim, false);
	assert_int_equal(
		proto_decoder_feed(&d, buf_head(req), buf_used(req), &used), 1);
	assert_int_equal(used, buf_used(req));
	assert_int_equal(proto_parse(buf_head(req), used, &r), 0);
	ret = store_exec(th, ws, &r, out);
	buf_reset(req);
	return ret;
}

uint16_t t_server_start(char *const argv[], pid_t *pid)
{
	int out[2];
	char line[256] = { 0 };
	size_t n = 0;
	char *colon;
	long port;

	assert_int_equal(pipe(out), 0);
	*pid = fork();
	assert_true(*pid >= 0);
	if (*pid == 0) {
		dup2(out[1], STDOUT_FILENO);
		close(out[0]);
		close(out[1]);
		execv(argv[0], argv);
		_exit(127);
	}
	close(out[1]);
	while (n < sizeof(line) - 1) {
		ssize_t r = read(out[0], line + n, 1);
		if (r <= 0 || line[n] == '\n')
			break;
		n++;
	}
	close(out[0]);
	colon = strrchr(line, ':');
	if (!colon)
		fail_msg("%s printed no \"listening on HOST:PORT\": \"%s\"",
			 argv[0], line);
	port = strtol(colon + 1, NULL, 10);
	assert_true(port > 0 && port <= 65535);
	return (uint16_t)port;
}

void t_server_stop(pid_t pid)
{
	int status;

	kill(pid, SIGTERM);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

void t_no_deliver(void *arg, const struct waiter_ref *who, uint32_t seq)
{
	(void)arg;
	(void)who;
	fail_msg("a wake-up (seq %u) was delivered across threads in a test "
		 "with one store thread",
		 seq);
}
