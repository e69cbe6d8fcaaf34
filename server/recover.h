/* SPDX-License-Identifier: MIT */
/*
 * recover.h - replaying a data directory's files into a store: at start-up
 * (recover(), wal_impl.h) and for a compaction, which rebuilds the state of
 * closed files in a private store (recover_files).
 *
 * Replay executes every record as the request it is (walfile.h), through
 * the store's own store_exec, on one thread that no other thread races: the
 * store ends in exactly the state the records describe.
 */
#ifndef RS_SERVER_RECOVER_H
#define RS_SERVER_RECOVER_H

#include <stddef.h>
#include <stdint.h>

#include "walfile.h"

struct store;

struct recover_result {
	uint64_t records;     /* executed (padding excluded) */
	uint64_t bytes;       /* of the files read */
	uint64_t end_lsn;     /* the position after the last record */
	uint64_t newest_size; /* the last log's bytes (after a cut) */
	uint64_t log_bytes;   /* the logs' bytes */
};

/*
 * Replay the snapshot (if any) and the logs @m names, in order, into @st,
 * all of which must be whole: 0, or -EBADMSG / -errno with the reason in
 * @why. (Start-up, which may cut a torn tail or repair, is recover().)
 */
int recover_files(struct store *st, const char *dir,
		  const struct walfile_manifest *m, struct recover_result *res,
		  char *why, size_t whylen);

#endif
