/* SPDX-License-Identifier: MIT */
/*
 * stripemap.c - see stripemap.h. What is not inline: set-up and tear-down.
 */
#include "stripemap.h"

#if defined(__x86_64__)
/* glibc's mutex is 40 bytes here; where it is 48 (aarch64) a stripe takes
 * two lines, its lock and count still in the first. */
_Static_assert(sizeof(struct stripe) == RS_CACHELINE,
	       "a stripe is one cache line: lock, count and chain");
#endif

void stripemap_init(struct stripemap *m, size_t rec_size, size_t key_off)
{
	for (size_t i = 0; i < STRIPEMAP_STRIPES; i++) {
		struct stripe *s = &m->stripes[i];

		pthread_mutex_init(&s->lock, NULL);
		atomic_init(&s->count, 0);
		s->recs = (struct stripemap_chain){ 0 };
	}
	m->rec_size = rec_size;
	m->key_off = key_off;
}

void stripemap_fini(struct stripemap *m,
		    void (*drop)(struct stripemap_rec *r, void *arg), void *arg)
{
	for (size_t i = 0; i < STRIPEMAP_STRIPES; i++) {
		struct stripe *s = &m->stripes[i];
		struct stripemap_rec *r, *next;

		for (r = s->recs.head; r; r = next) {
			next = r->next;
			if (drop)
				drop(r, arg);
			free(r);
		}
		s->recs = (struct stripemap_chain){ 0 };
		pthread_mutex_destroy(&s->lock);
	}
}
