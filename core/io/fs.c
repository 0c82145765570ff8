/*
 * core/io/fs.c: the file-system primitives of io.h (POSIX): the atomic write
 * that every file Lunar saves goes through (safetensors files, checkpoint
 * indexes), and the directory helpers that checkpoint directories need.
 * Every failure returns LUNAR_ERR_IO (LUNAR_ERR_OOM, LUNAR_ERR_ARG) with a
 * message naming the path and the system error.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lunar/io.h"

static int write_all(int fd, const void *p, size_t n) {
    const unsigned char *c = p;
    while (n > 0) {
        size_t k = n > (1u << 30) ? (1u << 30) : n;
        ssize_t r = write(fd, c, k);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            if (r == 0) errno = EIO;
            return -1;
        }
        c += r;
        n -= (size_t)r;
    }
    return 0;
}

/* fsync of a directory: 0 or an errno (EINVAL, a file system that cannot
 * fsync a directory, counts as success). */
static int fsync_dir_errno(const char *dir) {
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) return errno;
    int err = fsync(dfd) != 0 ? errno : 0;
    close(dfd);
    return err == EINVAL ? 0 : err;
}

lunar_status lunar_fsync_dir(const char *path) {
    if (!path || !*path) return lunar_error(LUNAR_ERR_ARG, "fsync_dir: empty or NULL path");
    int err = fsync_dir_errno(path);
    if (err) return lunar_error(LUNAR_ERR_IO, "cannot fsync directory %s: %s", path, strerror(err));
    return LUNAR_OK;
}

lunar_status lunar_atomic_write(const char *path, const lunar_io_part *parts, int nparts) {
    if (!path || !*path) return lunar_error(LUNAR_ERR_ARG, "atomic write: empty or NULL path");
    if (nparts < 0 || (nparts > 0 && !parts))
        return lunar_error(LUNAR_ERR_ARG, "cannot write %s: %d parts given", path, nparts);
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 32);
    if (!tmp) return lunar_error(LUNAR_ERR_OOM, "cannot write %s: out of memory", path);
    snprintf(tmp, plen + 32, "%s.tmp.%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        lunar_status s = lunar_error(LUNAR_ERR_IO, "cannot write %s: cannot create %s: %s", path, tmp,
                                     strerror(errno));
        free(tmp);
        return s;
    }
    const char *what = NULL;
    for (int i = 0; i < nparts && !what; i++)
        if (parts[i].len && (!parts[i].data || write_all(fd, parts[i].data, parts[i].len))) {
            if (!parts[i].data) errno = EFAULT;
            what = "write";
        }
    if (!what && fsync(fd) != 0) what = "fsync";
    int err = errno;
    if (close(fd) != 0 && !what) { what = "close"; err = errno; }
    if (!what && rename(tmp, path) != 0) { what = "rename onto the path"; err = errno; }
    if (what) {
        lunar_status s = lunar_error(LUNAR_ERR_IO, "cannot write %s: %s of %s failed: %s", path, what,
                                     tmp, strerror(err));
        unlink(tmp);
        free(tmp);
        return s;
    }
    free(tmp);
    /* make the rename durable: fsync the directory (best effort: the file is
     * complete at path whatever happens here) */
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
    if (dir) fsync_dir_errno(dir);
    free(dir);
    return LUNAR_OK;
}

lunar_status lunar_mkdirs(const char *path) {
    if (!path || !*path) return lunar_error(LUNAR_ERR_ARG, "mkdir: empty or NULL path");
    size_t n = strlen(path);
    char *p = strdup(path);
    if (!p) return lunar_error(LUNAR_ERR_OOM, "cannot create directory %s: out of memory", path);
    for (size_t i = 1; i <= n; i++) {
        if (p[i] != '/' && p[i] != 0) continue;
        char c = p[i];
        p[i] = 0;
        if (mkdir(p, 0755) != 0 && errno != EEXIST) {
            int err = errno;
            free(p);
            return lunar_error(LUNAR_ERR_IO, "cannot create directory %s: %s", path, strerror(err));
        }
        p[i] = c;
    }
    free(p);
    struct stat sb;
    if (stat(path, &sb) != 0)
        return lunar_error(LUNAR_ERR_IO, "cannot create directory %s: %s", path, strerror(errno));
    if (!S_ISDIR(sb.st_mode))
        return lunar_error(LUNAR_ERR_IO, "cannot create directory %s: %s", path, strerror(ENOTDIR));
    return LUNAR_OK;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

void lunar_free_names(char **names, size_t n) {
    if (!names) return;
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
}

lunar_status lunar_listdir(const char *path, char ***names_out, size_t *n_out) {
    *names_out = NULL;
    *n_out = 0;
    if (!path || !*path) return lunar_error(LUNAR_ERR_ARG, "listdir: empty or NULL path");
    DIR *d = opendir(path);
    if (!d) return lunar_error(LUNAR_ERR_IO, "cannot list directory %s: %s", path, strerror(errno));
    size_t cap = 16, n = 0;
    char **names = malloc(cap * sizeof *names);
    struct dirent *de;
    int oom = !names;
    while (!oom && (de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        if (n == cap) {
            char **nn = realloc(names, (cap *= 2) * sizeof *names);
            if (!nn) { oom = 1; break; }
            names = nn;
        }
        if (!(names[n] = strdup(de->d_name))) { oom = 1; break; }
        n++;
    }
    closedir(d);
    if (oom) {
        lunar_free_names(names, n);
        return lunar_error(LUNAR_ERR_OOM, "cannot list directory %s: out of memory", path);
    }
    qsort(names, n, sizeof *names, cmp_str);
    *names_out = names;
    *n_out = n;
    return LUNAR_OK;
}

lunar_status lunar_path_stat(const char *path, lunar_path_kind *kind, int64_t *size) {
    struct stat sb;
    if (!path || stat(path, &sb) != 0)
        return lunar_error(LUNAR_ERR_IO, "cannot stat %s: %s", path ? path : "(null)",
                           strerror(path ? errno : EINVAL));
    if (kind) *kind = S_ISDIR(sb.st_mode) ? LUNAR_PATH_DIR : S_ISREG(sb.st_mode) ? LUNAR_PATH_FILE
                                                                                : LUNAR_PATH_OTHER;
    if (size) *size = (int64_t)sb.st_size;
    return LUNAR_OK;
}

/* 0, or an errno; *where gets the path that failed (malloc'd) */
static int remove_tree(const char *path, char **where) {
    struct stat sb;
    if (lstat(path, &sb) != 0) { *where = strdup(path); return errno; }
    if (S_ISDIR(sb.st_mode)) {
        DIR *d = opendir(path);
        if (!d) { *where = strdup(path); return errno; }
        struct dirent *de;
        int err = 0;
        while (!err && (de = readdir(d))) {
            if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
            size_t k = strlen(path) + strlen(de->d_name) + 2;
            char *child = malloc(k);
            if (!child) { err = ENOMEM; *where = strdup(path); break; }
            snprintf(child, k, "%s/%s", path, de->d_name);
            err = remove_tree(child, where);
            free(child);
        }
        closedir(d);
        if (err) return err;
        if (rmdir(path) != 0) { *where = strdup(path); return errno; }
        return 0;
    }
    if (unlink(path) != 0) { *where = strdup(path); return errno; }
    return 0;
}

lunar_status lunar_remove_tree(const char *path) {
    if (!path || !*path || !strcmp(path, "/"))
        return lunar_error(LUNAR_ERR_ARG, "remove_tree: refusing to remove '%s'", path ? path : "(null)");
    char *where = NULL;
    int err = remove_tree(path, &where);
    if (!err) return LUNAR_OK;
    lunar_status s = lunar_error(LUNAR_ERR_IO, "cannot remove %s: %s", where ? where : path, strerror(err));
    free(where);
    return s;
}

lunar_status lunar_rename(const char *from, const char *to) {
    if (!from || !to) return lunar_error(LUNAR_ERR_ARG, "rename: NULL path");
    if (rename(from, to) != 0)
        return lunar_error(LUNAR_ERR_IO, "cannot rename %s to %s: %s", from, to, strerror(errno));
    return LUNAR_OK;
}
