/* SPDX-License-Identifier: MIT */
/*
 * walfile.h - the write log's bytes on disk: records, file headers, the
 * manifest that names the live files, and the data directory's lock.
 *
 * A data directory (--data-dir) holds:
 *   MANIFEST           which files make up the store, in replay order: at
 *                      most one snapshot, then one or more logs;
 *   snap-NNNNNN.rs     a snapshot: the whole store at one log position;
 *   log-NNNNNN.rs      a log: every change after the previous file's end;
 *   LOCK               held (flock) by the one server using the directory.
 * Anything else named like these and not in MANIFEST is left over from a
 * crash during compaction and removed at start-up.
 *
 * Both kinds of file are a 64-byte header followed by records:
 *
 *   u32 len   payload bytes (at most WAL_MAX_PAYLOAD)
 *   u32 sum   checksum of the payload, seeded with lsn (wal_sum)
 *   u64 lsn   the record's position in the log's stream: strictly rising
 *             through the files, so a stale or misplaced record is caught
 *   payload   the change as the request that makes it: an opcode byte and
 *             the wire body of SET, APPEND, DELETE_KEY, MULTI_SET,
 *             QUEUE_PUSH or QUEUE_POP (docs/protocol.md), so that replay is the
 *             store executing the request again. ADD, COMPARE_SET and
 *             BARRIER are logged as the SET of the value they left.
 *   zeros     to the next multiple of 16 bytes.
 *
 * A payload that is empty or starts with WAL_OP_PAD is padding (the end of
 * the in-memory ring, or a write that failed after its place was taken)
 * and changes nothing. A snapshot ends with one WAL_OP_SNAP_END record
 * (its counts), without which it is incomplete.
 *
 * All integers are little-endian (the hosts PyTorch runs on).
 */
#ifndef RS_SERVER_WALFILE_H
#define RS_SERVER_WALFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WAL_HDR 16                 /* a record's header */
#define WAL_ALIGN 16               /* records start at multiples of this */
#define WAL_FILE_HDR 64            /* a file's header */
#define WAL_MAX_PAYLOAD (1u << 30) /* the longest record */
#define WAL_OP_PAD 0xffu           /* payload[0] of padding */
#define WAL_OP_SNAP_END 0xfeu      /* payload[0] of a snapshot's last record */
#define WAL_MAX_FILES 64           /* files one manifest may name */

/* A file's kind, in its header's magic. */
enum walfile_kind {
	WALFILE_LOG,
	WALFILE_SNAP,
};

/* The bytes a record of @len payload bytes takes, padding included. */
static inline size_t wal_span(size_t len)
{
	return (WAL_HDR + len + WAL_ALIGN - 1) & ~(size_t)(WAL_ALIGN - 1);
}

/* The checksum of a payload at @lsn. */
uint32_t wal_sum(const void *payload, size_t len, uint64_t lsn);

/* Fill a record header (the caller wrote the payload after it). */
void wal_rec_seal(uint8_t *rec, uint32_t len, uint64_t lsn);

/* A file's header: its kind and the log position its records start at. */
void walfile_header(uint8_t out[WAL_FILE_HDR], enum walfile_kind kind,
		    uint64_t start_lsn);

/* A snapshot's last record's payload: counts of what it holds. */
struct walfile_snap_end {
	uint64_t keys;
	uint64_t items; /* queue items */
	uint64_t records;
};

/*
 * Reading a file: one mapped file, a cursor over its records.
 * walfile_next() returns 1 with the next record, 0 at a clean end of the
 * file, or -EBADMSG at a record that is not valid (bad length, checksum,
 * a position that does not rise, a truncated record); then r->bad_off is
 * its offset and r->why says what was wrong.
 */
struct walfile_reader {
	const char *path;   /* borrowed, for messages */
	const uint8_t *map; /* owned mapping, NULL for an empty file */
	size_t size;
	enum walfile_kind kind;
	uint64_t start_lsn; /* from the header */
	size_t off;         /* the next record */
	uint64_t last_lsn;  /* of the last good record (0: none yet) */
	uint64_t end_lsn;   /* the position after the last good record */
	size_t bad_off;
	const char *why;
};

/* A record handed out by walfile_next (pointers into the mapping). */
struct walfile_rec {
	uint64_t lsn;
	const uint8_t *payload;
	uint32_t len;
	size_t off; /* its offset in the file */
};

/*
 * Open and map @path, check its header (-EBADMSG with r->why if it is not
 * a ringstore file of @kind; -errno if it cannot be read).
 */
int walfile_open(struct walfile_reader *r, const char *path,
		 enum walfile_kind kind);
int walfile_next(struct walfile_reader *r, struct walfile_rec *rec);
/* walfile_next without checking checksums: a quick look ahead. */
int walfile_scan(struct walfile_reader *r, struct walfile_rec *rec);
/*
 * After a bad record: is there a valid record anywhere after it? True means
 * the damage is inside the file, not a torn tail (a crash in mid-write
 * leaves nothing valid after the cut).
 */
bool walfile_valid_after(const struct walfile_reader *r);
void walfile_close(struct walfile_reader *r);

/*
 * The manifest: the files of the store in replay order (at most one
 * snapshot first, then logs), by number. Files are named from numbers by
 * walfile_name.
 */
struct walfile_manifest {
	uint32_t snap; /* 0: none */
	uint32_t logs[WAL_MAX_FILES];
	uint32_t nlogs;
	uint32_t next; /* the next number to use */
};

void walfile_name(char *out, size_t len, const char *dir,
		  enum walfile_kind kind, uint32_t num);

/*
 * Read DIR/MANIFEST into @m. Returns 0, -ENOENT when there is none (a new
 * directory), or -EBADMSG (with a message in @why) if it cannot be parsed.
 */
int walfile_manifest_read(const char *dir, struct walfile_manifest *m,
			  char *why, size_t whylen);
/* Replace DIR/MANIFEST atomically and durably (temp file, fsync, rename,
 * fsync of the directory). Returns 0 or -errno. */
int walfile_manifest_write(const char *dir, const struct walfile_manifest *m);

/*
 * Remove the files in @dir that look like ours but @m does not name (left
 * by a crash during compaction), logging each. Returns how many.
 */
int walfile_remove_strays(const char *dir, const struct walfile_manifest *m);

/* fsync the directory @dir (a new or renamed name in it is durable). */
int walfile_sync_dir(const char *dir);

/*
 * Take DIR/LOCK (creating DIR if needed): returns its fd (kept open while
 * the server runs), or -EBUSY with the holder's pid in @pid when another
 * process holds it, or -errno.
 */
int walfile_lock(const char *dir, long *pid);

#endif
