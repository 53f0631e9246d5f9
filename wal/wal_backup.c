/*
 * wal_backup: a consistent copy of a live store. LMDB's copy API reads
 * the whole environment inside one read transaction, so the copy is one
 * snapshot (every batch committed before that transaction began, nothing
 * half-written) while relayd keeps writing beside it; the compacting
 * copy writes only the pages in use, so the copy is no larger than the
 * data it holds. The copy is written through a file descriptor of our
 * own (mode 0600, as relayd's: batches carry credentials) rather than
 * mdb_env_copy2's path form, which would create the file with the
 * umask's mode and never fsync it.
 */
#include "wal/wal.h"
#include "wal/wal_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define WHY(...)                                          \
	do {                                              \
		if (why && whylen)                        \
			snprintf(why, whylen, __VA_ARGS__); \
	} while (0)

/* 1 when dir holds any entry but . and .., 0 when empty, -errno. */
static int dir_has_entries(const char *dir)
{
	DIR *d = opendir(dir);
	if (!d)
		return -errno;
	struct dirent *e;
	int any = 0;
	while (!any && (e = readdir(d)))
		any = strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
	closedir(d);
	return any;
}

/* The directory that holds path ("." for a name without a slash). */
static void parent_of(const char *path, char *out, size_t n)
{
	snprintf(out, n, "%s", path);
	size_t len = strlen(out);
	while (len > 1 && out[len - 1] == '/')
		out[--len] = '\0';
	char *slash = strrchr(out, '/');
	if (!slash)
		snprintf(out, n, ".");
	else if (slash == out)
		out[1] = '\0';
	else
		*slash = '\0';
}

int wal_backup(struct wal *w, const char *dst_dir, struct wal_backup_stat *st, char *why, size_t whylen)
{
	char path[4096], parent[4096];
	int created = 0, fd = -1, rc;

	if (why && whylen)
		why[0] = '\0';
	if (st)
		memset(st, 0, sizeof(*st));
	if (!dst_dir || !*dst_dir || strlen(dst_dir) > sizeof(path) - 16)
		return WAL_EINVAL;
	/* A copy never lands on anything: not on a queue (relayd's own data
	 * directory given by mistake), not beside other files. */
	rc = dir_has_entries(dst_dir);
	if (rc == -ENOENT) {
		if (mkdir(dst_dir, 0700) < 0) {
			rc = -errno;
			WHY("cannot create '%s': %s", dst_dir, strerror(errno));
			return rc;
		}
		created = 1;
	} else if (rc < 0) {
		WHY("cannot read '%s': %s", dst_dir, strerror(-rc));
		return rc;
	} else if (rc > 0) {
		WHY("'%s' is not empty: a backup goes into a new or empty directory", dst_dir);
		return WAL_EINVAL;
	}
	snprintf(path, sizeof(path), "%s/data.mdb", dst_dir);
	/* O_EXCL: if anything made the file since the check, it is not ours
	 * to overwrite. */
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		rc = -errno;
		WHY("cannot create '%s': %s", path, strerror(errno));
		goto fail;
	}
	if ((rc = wali_enter(w)))
		goto fail;
	/* The compacting copy runs inside one read transaction of its own: the
	 * snapshot of the last commit before it began, however long it takes
	 * and whatever relayd commits meanwhile. */
	rc = mdb_env_copyfd2(w->env, fd, MDB_CP_COMPACT);
	if (rc == MDB_MAP_RESIZED && (w->flags & WAL_F_RDONLY)) {
		/* relayd grew the file past the read-only map (the file's
		 * length plus 64 MiB at the open, wal.c) before the copy's
		 * transaction began: map what it holds now, and copy afresh
		 * (nothing was written: the copy fails at its first step). */
		rc = wali_remap_exclusive(w);
		if (rc == 0 && (ftruncate(fd, 0) != 0 || lseek(fd, 0, SEEK_SET) != 0))
			rc = -errno;
		if (rc == 0)
			rc = mdb_env_copyfd2(w->env, fd, MDB_CP_COMPACT);
	}
	wali_leave(w);
	if (rc) {
		rc = wali_map_rc(rc);
		WHY("copying the queue: %s", rc == WAL_EFULL ? "the disk is full" : wal_strerror(rc));
		goto fail;
	}
	/* LMDB writes the copy with write(2) and never syncs it: the copy is
	 * on disk only after this fsync, and a backup is not reported done
	 * before it is. */
	if (fsync(fd) < 0) {
		rc = -errno;
		WHY("syncing '%s': %s", path, strerror(errno));
		goto fail;
	}
	struct stat sb;
	if (fstat(fd, &sb) < 0) {
		rc = -errno;
		goto fail;
	}
	if (close(fd) < 0) {
		fd = -1;
		rc = -errno;
		WHY("closing '%s': %s", path, strerror(errno));
		goto fail;
	}
	fd = -1;
	/* The file's entry in the directory, and the directory's in its
	 * parent when we made it: without them a crash could leave a synced
	 * file that no name reaches. */
	if ((rc = wali_fsync_dir(dst_dir))) {
		WHY("syncing directory '%s': %s", dst_dir, strerror(-rc));
		goto fail;
	}
	if (created) {
		parent_of(dst_dir, parent, sizeof(parent));
		if ((rc = wali_fsync_dir(parent))) {
			WHY("syncing directory '%s': %s", parent, strerror(-rc));
			goto fail;
		}
	}
	if (st)
		st->bytes = (uint64_t)sb.st_size;
	return 0;
fail:
	if (fd >= 0)
		close(fd);
	/* Nothing half-written is left to be taken for a backup. */
	if (fd >= 0 || rc != -EEXIST)
		unlink(path);
	if (created)
		rmdir(dst_dir);
	return rc;
}
