/* SPDX-License-Identifier: MIT */
/*
 * qsbr.h - quiescent-state-based reclamation.
 *
 * Memory unlinked from a shared structure (a replaced table entry, an old
 * slot array after growth) is retired, and freed only once every registered
 * thread has passed a quiescent point after the retirement. A reactor's
 * quiescent point is the end of a loop iteration, where it holds no borrowed
 * pointer into shared structures. A thread about to block (io_uring_enter
 * with a wait) goes offline, so it never holds back reclamation while idle.
 *
 * One struct qsbr per process; one struct qsbr_thread per thread, used only
 * by that thread.
 */
#ifndef RS_SERVER_QSBR_H
#define RS_SERVER_QSBR_H

#include <stddef.h>

struct qsbr;
struct qsbr_thread;

typedef void (*qsbr_free_fn)(void *p);

struct qsbr *qsbr_create(void);
/* Frees everything still retired. No thread may be registered. */
void qsbr_destroy(struct qsbr *q);

/* Register the calling thread; it starts online. Returns NULL on ENOMEM. */
struct qsbr_thread *qsbr_register(struct qsbr *q);
/* Unregister (frees what this thread retired once safe, or hands it over). */
void qsbr_unregister(struct qsbr_thread *t);

/* The thread holds no borrowed pointers now; frees what has become safe. */
void qsbr_quiescent(struct qsbr_thread *t);
/* Going to block: stop taking part until qsbr_online(). Implies quiescent. */
void qsbr_offline(struct qsbr_thread *t);
void qsbr_online(struct qsbr_thread *t);

/* Call fn(p) once every thread has passed a quiescent point. Never fails. */
void qsbr_retire(struct qsbr_thread *t, void *p, qsbr_free_fn fn);
/* The same, when the caller unlinked @p with a seq_cst read-modify-write
 * (it stands in for the fence qsbr_retire issues; see qsbr.c). */
void qsbr_retire_sc(struct qsbr_thread *t, void *p, qsbr_free_fn fn);

/* Objects retired and not yet freed (for stats and tests). */
size_t qsbr_pending(struct qsbr *q);

#endif
