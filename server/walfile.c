/* SPDX-License-Identifier: MIT */
/*
 * walfile.c - see walfile.h.
 *
 * Files are read through one read-only mapping each: replay walks millions
 * of small records, and a mapping costs no copy and no system call per
 * record. Writing is wal.c's (logs) and compact.c's (snapshots); what they
 * share with reading is here: the record layout, the checksum, the file
 * header, the manifest and the directory.
 */
#include "walfile.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hash.h"
#include "log.h"

static const char magic_log[8] = { 'r', 's', 'l', 'o', 'g', 0, 0, 1 };
static const char magic_snap[8] = { 'r', 's', 's', 'n', 'a', 'p', 0, 1 };

uint32_t wal_sum(const void *payload, size_t len, uint64_t lsn)
{
	return (uint32_t)hash_seeded(payload, len, lsn);
}

void wal_rec_seal(uint8_t *rec, uint32_t len, uint64_t lsn)
{
	uint32_t sum = wal_sum(rec + WAL_HDR, len, lsn);
	size_t pad = wal_span(len) - WAL_HDR - len;

	memcpy(rec, &len, 4);
	memcpy(rec + 4, &sum, 4);
	memcpy(rec + 8, &lsn, 8);
	memset(rec + WAL_HDR + len, 0, pad);
}

void walfile_header(uint8_t out[WAL_FILE_HDR], enum walfile_kind kind,
		    uint64_t start_lsn)
{
	uint32_t version = 1, sum;

	memset(out, 0, WAL_FILE_HDR);
	memcpy(out, kind == WALFILE_LOG ? magic_log : magic_snap, 8);
	memcpy(out + 8, &start_lsn, 8);
	memcpy(out + 16, &version, 4);
	sum = (uint32_t)hash_seeded(out, 20, 0);
	memcpy(out + 20, &sum, 4);
}

/* ---- reading ----------------------------------------------------------- */

int walfile_open(struct walfile_reader *r, const char *path,
		 enum walfile_kind kind)
{
	struct stat st;
	uint32_t version, sum;
	int fd, err = 0;

	*r = (struct walfile_reader){ .path = path, .kind = kind };
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st)) {
		err = -errno;
		goto out;
	}
	r->size = (size_t)st.st_size;
	if (r->size < WAL_FILE_HDR) {
		r->why = "shorter than its header";
		err = -EBADMSG;
		goto out;
	}
	r->map = mmap(NULL, r->size, PROT_READ, MAP_PRIVATE, fd, 0);
	if (r->map == MAP_FAILED) {
		r->map = NULL;
		err = -errno;
		goto out;
	}
	/* Replay reads front to back once. */
	madvise((void *)r->map, r->size, MADV_SEQUENTIAL);
	memcpy(&version, r->map + 16, 4);
	memcpy(&sum, r->map + 20, 4);
	if (memcmp(r->map, kind == WALFILE_LOG ? magic_log : magic_snap, 8)) {
		r->why = kind == WALFILE_LOG ? "not a ringstore log"
					     : "not a ringstore snapshot";
		err = -EBADMSG;
	} else if (version != 1) {
		r->why = "written by another version of ringstore";
		err = -EBADMSG;
	} else if (sum != (uint32_t)hash_seeded(r->map, 20, 0)) {
		r->why = "its header is damaged";
		err = -EBADMSG;
	}
	memcpy(&r->start_lsn, r->map + 8, 8);
	r->off = WAL_FILE_HDR;
	r->end_lsn = r->start_lsn;
out:
	close(fd);
	if (err)
		walfile_close(r);
	return err;
}

/* Whether a valid record starts at @off, given the last good position
 * (its checksum checked if @sum). */
static bool valid_at(const struct walfile_reader *r, size_t off, uint64_t after,
		     bool sum_too, struct walfile_rec *rec, const char **why)
{
	uint32_t len, sum;
	uint64_t lsn;

	if (r->size - off < WAL_HDR) {
		*why = "a record cut short (its header)";
		return false;
	}
	memcpy(&len, r->map + off, 4);
	memcpy(&sum, r->map + off + 4, 4);
	memcpy(&lsn, r->map + off + 8, 8);
	if (len > WAL_MAX_PAYLOAD) {
		*why = "an impossible record length";
		return false;
	}
	if (wal_span(len) > r->size - off) {
		*why = "a record cut short";
		return false;
	}
	if (lsn <= after || lsn < r->start_lsn || lsn % WAL_ALIGN) {
		*why = "a record out of sequence";
		return false;
	}
	if (sum_too && wal_sum(r->map + off + WAL_HDR, len, lsn) != sum) {
		*why = "a checksum mismatch";
		return false;
	}
	*rec = (struct walfile_rec){ .lsn = lsn,
				     .len = len,
				     .off = off,
				     .payload = r->map + off + WAL_HDR };
	return true;
}

static int next(struct walfile_reader *r, struct walfile_rec *rec, bool sum_too)
{
	if (r->off == r->size)
		return 0;
	if (!valid_at(r, r->off, r->last_lsn, sum_too, rec, &r->why)) {
		r->bad_off = r->off;
		return -EBADMSG;
	}
	r->off += wal_span(rec->len);
	r->last_lsn = rec->lsn;
	r->end_lsn = rec->lsn + wal_span(rec->len);
	return 1;
}

int walfile_next(struct walfile_reader *r, struct walfile_rec *rec)
{
	return next(r, rec, true);
}

int walfile_scan(struct walfile_reader *r, struct walfile_rec *rec)
{
	return next(r, rec, false);
}

bool walfile_valid_after(const struct walfile_reader *r)
{
	struct walfile_rec rec;
	const char *why;

	for (size_t off = r->bad_off + WAL_ALIGN; off + WAL_HDR <= r->size;
	     off += WAL_ALIGN)
		if (valid_at(r, off, r->last_lsn, true, &rec, &why))
			return true;
	return false;
}

void walfile_close(struct walfile_reader *r)
{
	if (r->map)
		munmap((void *)r->map, r->size);
	r->map = NULL;
}

/* ---- the manifest and the directory ----------------------------------- */

void walfile_name(char *out, size_t len, const char *dir,
		  enum walfile_kind kind, uint32_t num)
{
	snprintf(out, len, "%s/%s-%06" PRIu32 ".rs", dir,
		 kind == WALFILE_LOG ? "log" : "snap", num);
}

int walfile_manifest_read(const char *dir, struct walfile_manifest *m,
			  char *why, size_t whylen)
{
	char path[4096], line[128];
	unsigned version;
	uint32_t num;
	FILE *f;
	int err = 0;

	*m = (struct walfile_manifest){ .next = 1 };
	snprintf(path, sizeof(path), "%s/MANIFEST", dir);
	f = fopen(path, "re");
	if (!f)
		return -errno;
	if (!fgets(line, sizeof(line), f) ||
	    sscanf(line, "ringstore manifest %u", &version) != 1 ||
	    version != 1) {
		snprintf(why, whylen, "%s: not a ringstore manifest", path);
		err = -EBADMSG;
	}
	while (!err && fgets(line, sizeof(line), f)) {
		if (sscanf(line, "next %" SCNu32, &num) == 1) {
			m->next = num;
		} else if (sscanf(line, "snapshot %" SCNu32, &num) == 1 &&
			   !m->snap && !m->nlogs) {
			m->snap = num;
		} else if (sscanf(line, "log %" SCNu32, &num) == 1 &&
			   m->nlogs < WAL_MAX_FILES) {
			m->logs[m->nlogs++] = num;
		} else {
			snprintf(why, whylen, "%s: cannot read line '%.60s'",
				 path, line);
			err = -EBADMSG;
		}
	}
	if (!err && !m->nlogs) {
		snprintf(why, whylen, "%s names no log", path);
		err = -EBADMSG;
	}
	fclose(f);
	return err;
}

int walfile_sync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int err = 0;

	if (fd < 0)
		return -errno;
	if (fsync(fd))
		err = -errno;
	close(fd);
	return err;
}

int walfile_manifest_write(const char *dir, const struct walfile_manifest *m)
{
	char tmp[4096], path[4096];
	FILE *f;
	int err = 0;

	snprintf(tmp, sizeof(tmp), "%s/MANIFEST.tmp", dir);
	snprintf(path, sizeof(path), "%s/MANIFEST", dir);
	f = fopen(tmp, "we");
	if (!f)
		return -errno;
	fprintf(f, "ringstore manifest 1\nnext %" PRIu32 "\n", m->next);
	if (m->snap)
		fprintf(f, "snapshot %" PRIu32 "\n", m->snap);
	for (uint32_t i = 0; i < m->nlogs; i++)
		fprintf(f, "log %" PRIu32 "\n", m->logs[i]);
	if (fflush(f) || fdatasync(fileno(f)))
		err = -errno;
	if (fclose(f) && !err)
		err = -errno;
	if (!err && rename(tmp, path))
		err = -errno;
	if (!err)
		err = walfile_sync_dir(dir);
	return err;
}

/* Does @m name file @num of @kind? */
static bool named(const struct walfile_manifest *m, enum walfile_kind kind,
		  uint32_t num)
{
	if (kind == WALFILE_SNAP)
		return m->snap == num;
	for (uint32_t i = 0; i < m->nlogs; i++)
		if (m->logs[i] == num)
			return true;
	return false;
}

int walfile_remove_strays(const char *dir, const struct walfile_manifest *m)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	char path[4096];
	int n = 0;

	if (!d)
		return -errno;
	while ((de = readdir(d))) {
		enum walfile_kind kind;
		uint32_t num;
		char tail[8];

		if (sscanf(de->d_name, "log-%" SCNu32 ".r%7s", &num, tail) ==
			    2 &&
		    !strcmp(tail, "s"))
			kind = WALFILE_LOG;
		else if (sscanf(de->d_name, "snap-%" SCNu32 ".r%7s", &num,
				tail) == 2 &&
			 (!strcmp(tail, "s") || !strcmp(tail, "s.tmp")))
			kind = WALFILE_SNAP;
		else
			continue;
		if (!strcmp(tail, "s") && named(m, kind, num))
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		if (unlink(path) == 0) {
			log_warn("%s: removed, not part of the store (left by "
				 "a compaction a crash interrupted)",
				 path);
			n++;
		}
	}
	closedir(d);
	return n;
}

/* mkdir -p @dir, owner-only for what it creates. */
static int make_dirs(const char *dir)
{
	char path[4096];
	size_t n = strlen(dir);

	if (n == 0 || n >= sizeof(path))
		return -ENAMETOOLONG;
	memcpy(path, dir, n + 1);
	for (size_t i = 1; i <= n; i++) {
		if (path[i] != '/' && path[i] != '\0')
			continue;
		path[i] = '\0';
		if (mkdir(path, 0700) && errno != EEXIST)
			return -errno;
		path[i] = i < n ? '/' : '\0';
	}
	return 0;
}

int walfile_lock(const char *dir, long *pid)
{
	char path[4096], text[32];
	int fd, err, n;

	*pid = 0;
	err = make_dirs(dir);
	if (err)
		return err;
	snprintf(path, sizeof(path), "%s/LOCK", dir);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	if (flock(fd, LOCK_EX | LOCK_NB)) {
		err = errno == EWOULDBLOCK ? -EBUSY : -errno;
		n = (int)pread(fd, text, sizeof(text) - 1, 0);
		if (n > 0) {
			text[n] = '\0';
			*pid = strtol(text, NULL, 10);
		}
		close(fd);
		return err;
	}
	n = snprintf(text, sizeof(text), "%ld\n", (long)getpid());
	if (ftruncate(fd, 0) || pwrite(fd, text, (size_t)n, 0) != n) {
		err = -errno;
		close(fd);
		return err;
	}
	return fd;
}
