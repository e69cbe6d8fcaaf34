/* SPDX-License-Identifier: MIT */
/*
 * helpers.h - what the cmocka test programs share, so that no test copies
 * its set-up (liburing's test/helpers.h is the model). Every unit test and
 * tests/integration/test_stress.c link helpers.c.
 *
 * It includes cmocka with the headers cmocka needs before it, in their
 * order, so a test includes "helpers.h" instead of the five of them.
 *
 * Helpers that can fail do not return an error: they fail the running test
 * (as an assert_* would), with a message that says what failed. cmocka can
 * only fail a test from the test's own thread, so call them there, never
 * from a thread the test started.
 *
 * Skips: t_skip() skips one test and says why; a test program that cannot
 * run at all exits T_EXIT_SKIP, which CTest reports as skipped
 * (SKIP_RETURN_CODE in CMakeLists.txt).
 */
#ifndef RS_TESTS_UNIT_HELPERS_H
#define RS_TESTS_UNIT_HELPERS_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <sys/types.h>

struct buf;
struct outq;
struct qsbr;
struct qsbr_thread;
struct store_thread;
struct table;
struct wait_state;
struct waiter_ref;

#define T_EXIT_SKIP 77

/* Skip the running test, printing why (printf-style) on stderr. */
#define t_skip(...)                                       \
	do {                                              \
		fprintf(stderr, "skipped: " __VA_ARGS__); \
		fputc('\n', stderr);                      \
		skip();                                   \
	} while (0)

/* malloc and calloc that fail the test instead of returning NULL. */
void *t_malloc(size_t size);
void *t_calloc(size_t n, size_t size);

/* Start a thread running @fn(@arg); join one, returning what it returned. */
pthread_t t_thread(void *(*fn)(void *), void *arg);
void *t_join(pthread_t t);

/* A connected AF_UNIX stream socket pair; sv[0] non-blocking if @nonblock. */
void t_socketpair(int sv[2], bool nonblock);
void t_close_pair(int sv[2]);
/* An eventfd (counter 0, close-on-exec). */
int t_eventfd(void);

/*
 * A new empty directory /tmp/@name.XXXXXX; its path goes to @dir (@size
 * bytes). t_rmtree removes it and everything below: 0 or -errno.
 */
void t_tmpdir(char *dir, size_t size, const char *name);
int t_rmtree(const char *dir);

/*
 * A lock-free table (table_create(@slots, @one_writer)) in its own
 * reclamation domain, with the test thread registered as @qt. Close checks
 * that, once the test thread has left, nothing retired is still pending,
 * then frees it all. A test that starts threads which use the table takes
 * @qt offline while they run (qsbr_offline), or they never reclaim.
 */
struct t_table {
	struct qsbr *q;
	struct qsbr_thread *qt;
	struct table *t;
	bool one_writer;
};
void t_table_open(struct t_table *tt, size_t slots, bool one_writer);
void t_table_close(struct t_table *tt);

/*
 * Everything queued in @q, copied through its iovecs to @out (at most @cap
 * bytes: more fails the test). Returns the length; @q is left as it was.
 */
size_t t_outq_gather(const struct outq *q, uint8_t *out, size_t cap);

/*
 * Decode the one whole request in @req (nothing may follow it), as a
 * connection would, and run it with store_exec as the client of @ws, its
 * replies to @out. Resets @req; returns store_exec's result.
 */
int t_store_exec(struct store_thread *th, struct wait_state *ws,
		 struct buf *req, struct outq *out);

/*
 * A store thread's deliver callback (store_thread_init) for a test with one
 * store thread, where no wake-up crosses threads: being called fails the test.
 */
void t_no_deliver(void *arg, const struct waiter_ref *who, uint32_t seq);

/*
 * Start a server: @argv (NULL-terminated, argv[0] the binary) with its
 * standard output on a pipe, from which the first line, "listening on
 * HOST:PORT", gives the port. Returns the port; the process id goes to
 * *@pid. t_server_stop sends SIGTERM and checks the server exited with 0.
 */
uint16_t t_server_start(char *const argv[], pid_t *pid);
void t_server_stop(pid_t pid);

#endif
