/* SPDX-License-Identifier: MIT */
/*
 * list.h - typed intrusive doubly linked lists: append at either end,
 * unlink and "is it linked?" in O(1), walks oldest first with plain
 * pointers.
 *
 * LIST_DEFINE(name, type, next, prev) defines
 *
 *	struct name { type *head, *tail; };
 *
 * and, for elements of @type whose link fields are `type *next, *prev`
 * (any two field names), the static inline functions
 * name_push_tail(l, n), name_push_head(l, n), name_remove(l, n) and
 * name_linked(l, n). Use it once the element type is complete; the
 * element may sit on several lists through several pairs of fields.
 *
 * Why this shape rather than the kernel's circular list_head:
 *  - all zeroes is a valid state: an empty list and an unlinked element,
 *    so calloc'd, memset or `= { 0 }` storage needs no init call (a zeroed
 *    list_head is neither empty nor valid);
 *  - a walk is `for (n = l->head; n; n = n->next)` over the element type,
 *    with no container_of and no need to know the head: code that is given
 *    a first element (the control plane's views of a key's waiters) walks
 *    on from it;
 *  - the element type is checked: appending a struct conn to a list of
 *    wait nodes does not compile.
 * The price is a test at each end in push and remove, as the hand-written
 * lists had.
 *
 * Membership: remove clears both links, so an element is linked iff its
 * prev is set or it is the head. That is what name_linked tests, and why
 * an element must be unlinked (zeroed, or removed) before it is pushed.
 *
 * A list is not thread-safe: its owner says which lock or thread covers it.
 */
#ifndef RS_COMMON_LIST_H
#define RS_COMMON_LIST_H

#include <assert.h>
#include <stdbool.h>
#include <stddef.h>

#define LIST_DEFINE(name, type, next, prev)                               \
	struct name {                                                     \
		type *head; /* oldest (or last pushed at the head) */     \
		type *tail;                                               \
	};                                                                \
                                                                          \
	/* Append unlinked @n after the tail. */                          \
	static inline __attribute__((unused)) void name##_push_tail(      \
		struct name *l, type *n)                                  \
	{                                                                 \
		assert(!n->next && !n->prev && l->head != n);             \
		n->prev = l->tail;                                        \
		if (l->tail)                                              \
			l->tail->next = n;                                \
		else                                                      \
			l->head = n;                                      \
		l->tail = n;                                              \
	}                                                                 \
                                                                          \
	/* Insert unlinked @n before the head. */                         \
	static inline __attribute__((unused)) void name##_push_head(      \
		struct name *l, type *n)                                  \
	{                                                                 \
		assert(!n->next && !n->prev && l->head != n);             \
		n->next = l->head;                                        \
		if (l->head)                                              \
			l->head->prev = n;                                \
		else                                                      \
			l->tail = n;                                      \
		l->head = n;                                              \
	}                                                                 \
                                                                          \
	/* Unlink @n, which is on @l, and clear its links. */             \
	static inline __attribute__((unused)) void name##_remove(         \
		struct name *l, type *n)                                  \
	{                                                                 \
		if (n->prev)                                              \
			n->prev->next = n->next;                          \
		else                                                      \
			l->head = n->next;                                \
		if (n->next)                                              \
			n->next->prev = n->prev;                          \
		else                                                      \
			l->tail = n->prev;                                \
		n->next = NULL;                                           \
		n->prev = NULL;                                           \
	}                                                                 \
                                                                          \
	/* Is @n on @l? (It must be on @l or on no list of this kind.) */ \
	static inline __attribute__((unused)) bool name##_linked(         \
		const struct name *l, const type *n)                      \
	{                                                                 \
		return n->prev || l->head == n;                           \
	}

#endif
