/* SPDX-License-Identifier: MIT */
/*
 * sender.h - a helper thread that makes some of a reactor's sends on
 * another CPU: the epoll backend's --spread-sends (io_uring has the ring's
 * io-wq worker for it). A SET that releases thousands of WAITs is thousands
 * of sends, and on loopback each also pays its receiver's TCP path; made
 * by one thread they take that thread's CPU alone.
 *
 * The reactor posts jobs (a socket and the iovecs to write), the helper
 * writes each with one nonblocking send, and the reactor reaps the results
 * in posting order. Jobs and results share one ring of SENDER_SLOTS; a full
 * ring refuses a post (the caller sends the job itself). The helper calls
 * the owner's wake function after a run of results, from its own thread,
 * so the reactor comes to reap them.
 *
 * Threads: sender_post, sender_reap, sender_stop and sender_destroy on the
 * owner's (the reactor's) thread only; the helper runs the jobs.
 */
#ifndef RS_SERVER_SENDER_H
#define RS_SERVER_SENDER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

/* Jobs posted and not yet reaped, at most: a power of two. */
#define SENDER_SLOTS 16384

struct sender;

struct sender_job {
	const struct iovec *iov; /* borrowed until the job is reaped */
	uint64_t tag;            /* the owner's, returned as given */
	int fd;                  /* borrowed: open until the job is reaped */
	uint32_t n;              /* iovecs */
	int32_t res;             /* the helper's answer: bytes, or -errno
				  * (-EAGAIN: the socket was full) */
};

/*
 * Start the helper thread, named @name (at most 15 characters are kept).
 * @wake(@arg) is called from the helper's thread after results are ready.
 * Returns 0 or -errno.
 */
int sender_start(struct sender **out, const char *name, void (*wake)(void *arg),
		 void *arg);

/*
 * Post @job (its res is ignored). Returns false when SENDER_SLOTS jobs are
 * already posted and not reaped: then nothing was posted.
 */
bool sender_post(struct sender *s, const struct sender_job *job);

/* Take the oldest finished job into @job. Returns false if there is none. */
bool sender_reap(struct sender *s, struct sender_job *job);

/*
 * Stop the helper and wait for it: posted jobs are sent first (the
 * sockets are nonblocking). Results not reaped by then are dropped.
 * Idempotent; NULL is allowed.
 */
void sender_stop(struct sender *s);

/* sender_stop, then free. NULL is allowed. */
void sender_destroy(struct sender *s);

/*
 * Write @iov[0..@n) to nonblocking socket @fd with one send (one iovec)
 * or sendmsg, without SIGPIPE. Returns the bytes written or -errno. The
 * helper's send; the epoll backend makes its own with it too.
 */
ssize_t sender_send_now(int fd, const struct iovec *iov, unsigned n);

#endif
