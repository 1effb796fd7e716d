/* The filesystem ops of the plan: the new root, built by sandboxd/isolation/mounts.py's
 * compile_plan (which answered every question about the host already), carried out here
 * inside the container's new mount namespace. A failing step names itself and, from
 * the plan, a hint at the fix. */
#include "sandboxd.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef SYS_mount_setattr
#define SYS_mount_setattr 442
#endif

static const char *opt(const char *s) { return *s ? s : NULL; }

/* A hint, or from a table ("\1ENOENT=text\1EACCES=text") the one for this errno. */
static const char *pick_hint(const char *hint, int err, char *buf, size_t size) {
    if (hint[0] != '\1') return hint;
    const char *name = strerrorname_np(err);
    size_t n = name ? strlen(name) : 0;
    for (const char *e = hint; e && *e; e = strchr(e + 1, '\1')) {
        if (n && !strncmp(e + 1, name, n) && e[1 + n] == '=') {
            const char *text = e + 2 + n, *end = strchrnul(text, '\1');
            snprintf(buf, size, "%.*s", (int)(end - text), text);
            return buf;
        }
    }
    return "";
}

/* mkdir -p: the path itself first, its parents only when it has none (each failing mkdir
 * of an existing component is a path walk: ~65 of them per container, walking down). */
static int mkdirs_in(char *buf, size_t n) {
    if (!mkdir(buf, 0755) || errno == EEXIST) return 0;
    if (errno != ENOENT) return -1;
    size_t at = n;
    while (at > 1 && buf[at - 1] != '/') at--;
    if (at <= 1) return -1; /* ENOENT at the root's child: nothing to make under */
    buf[at - 1] = 0;
    int r = mkdirs_in(buf, at - 1);
    buf[at - 1] = '/';
    if (r) return -1;
    return mkdir(buf, 0755) && errno != EEXIST ? -1 : 0;
}

static int mkdirs(const char *path) {
    char buf[PATH_MAX];
    size_t n = strlen(path);
    if (n >= sizeof buf) { errno = ENAMETOOLONG; return -1; }
    memcpy(buf, path, n + 1);
    while (n > 1 && buf[n - 1] == '/') buf[--n] = 0;
    return mkdirs_in(buf, n);
}

static int mkparent(const char *path) {
    char buf[PATH_MAX];
    const char *slash = strrchr(path, '/');
    if (!slash || slash == path) return 0;
    size_t n = (size_t)(slash - path);
    if (n >= sizeof buf) { errno = ENAMETOOLONG; return -1; }
    memcpy(buf, path, n);
    buf[n] = 0;
    return mkdirs(buf);
}

/* The flags the host locked on a mount: a remount in a user namespace must keep them. */
static unsigned long locked_flags(const char *path) {
    struct statvfs st;
    if (statvfs(path, &st)) return 0;
    unsigned long f = 0;
    if (st.f_flag & ST_RDONLY) f |= MS_RDONLY;
    if (st.f_flag & ST_NOSUID) f |= MS_NOSUID;
    if (st.f_flag & ST_NODEV) f |= MS_NODEV;
    if (st.f_flag & ST_NOEXEC) f |= MS_NOEXEC;
    if (st.f_flag & ST_NOATIME) f |= MS_NOATIME;
    if (st.f_flag & ST_NODIRATIME) f |= MS_NODIRATIME;
    if (st.f_flag & ST_RELATIME) f |= MS_RELATIME;
    return f;
}

/* One filesystem op, its fields in `a` (SANDBOXD_OPS gives their order). */
/* Make one mount read-only (and ``flags``: MS_NOSUID, MS_NODEV, MS_NOEXEC) with
 * mount_setattr, which sets only what it is given: a bind remount must instead restate
 * every flag the mount has (the kernel refuses to clear a locked one), read first with
 * statvfs, two calls per mount. -1 with errno ENOSYS where the call does not exist. */
static int remount_ro(const char *path, unsigned long flags) {
    struct { uint64_t attr_set, attr_clr, propagation, userns_fd; } attr = {0x1 /* RDONLY */};
    if (flags & ~(unsigned long)(MS_NOSUID | MS_NODEV | MS_NOEXEC)) { errno = ENOSYS; return -1; }
    if (flags & MS_NOSUID) attr.attr_set |= 0x2;
    if (flags & MS_NODEV) attr.attr_set |= 0x4;
    if (flags & MS_NOEXEC) attr.attr_set |= 0x8;
    return (int)syscall(SYS_mount_setattr, AT_FDCWD, path, 0u, &attr, sizeof attr);
}

/* A proc at ``path`` that shows no process: mounted by the first process of a PID namespace
 * of its own, which then exits. A user namespace may mount a proc only where one is fully
 * visible already (the kernel's mount_too_revealing, which looks at the type alone); a
 * template, which has none of the host's mounts, keeps this one for its containers, each
 * mounting its own over it. Run by the fork server's template builder, as host root. */
#define ERRNO_EXIT (errno > 0 && errno < 240 ? 10 + errno : 1) /* hollow_proc's helpers */

static int hollow_proc(const char *path) {
    pid_t child = fork();
    if (child < 0) return failf("hollow proc: fork: %s", strerror(errno));
    if (child == 0) {
        if (unshare(CLONE_NEWPID)) _exit(ERRNO_EXIT);
        pid_t first = fork(); /* the new namespace's PID 1 */
        if (first < 0) _exit(ERRNO_EXIT);
        if (first == 0)
            _exit(mount("proc", path, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL)
                  ? ERRNO_EXIT : 0);
        int status;
        while (waitpid(first, &status, 0) < 0)
            if (errno != EINTR) _exit(2);
        _exit(WIFEXITED(status) ? WEXITSTATUS(status) : 3);
    }
    int status;
    while (waitpid(child, &status, 0) < 0)
        if (errno != EINTR) return failf("hollow proc: waitpid: %s", strerror(errno));
    if (!WIFEXITED(status) || WEXITSTATUS(status))
        return failf("mount step hollow proc failed on %s: %s", path,
                     WIFEXITED(status) && WEXITSTATUS(status) >= 10
                         ? strerror(WEXITSTATUS(status) - 10) : "its process failed");
    return 0;
}

int mounts_op(unsigned op, const struct op_arg *a, struct setup *st) {
    const char *path = a[0].s;
    char tmp[512];
    int fd, e;
    struct stat sb;
    switch (op) {
    case OP_MKDIRS:
        if (mkdirs(path)) return failf("mkdir %s: %s", path, strerror(errno));
        return 0;
    case OP_TOUCH:
        if (mkparent(path)) return failf("mkdir for %s: %s", path, strerror(errno));
        if (lstat(path, &sb) && errno == ENOENT) {
            fd = open(path, O_CREAT | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0644);
            if (fd < 0) return failf("create %s: %s", path, strerror(errno));
            close(fd);
        }
        return 0;
    case OP_MOUNT: /* source, target, fstype, data, flags, what, hint */
        path = a[1].s;
        if (mount(opt(a[0].s), path, opt(a[2].s), (unsigned long)a[4].i, opt(a[3].s))) {
            e = errno;
            return failf("mount step %s failed on %s: %s. %s", a[5].s, path, strerror(e),
                         pick_hint(a[6].s, e, tmp, sizeof tmp));
        }
        return 0;
    case OP_REMOUNT_RO: /* path, extra flags, what, hint */
        if (!remount_ro(path, (unsigned long)a[1].i)) return 0;
        if (errno != ENOSYS) /* else a kernel before 5.12: the old call */
            return failf("mount step %s failed on %s: %s. %s", a[2].s, path, strerror(errno),
                         a[3].s);
        if (mount(NULL, path, NULL, locked_flags(path) | MS_BIND | MS_REMOUNT | MS_RDONLY |
                  (unsigned long)a[1].i, NULL))
            return failf("mount step %s failed on %s: %s. %s", a[2].s, path, strerror(errno),
                         a[3].s);
        return 0;
    case OP_SYMLINK: /* target, path */
        path = a[1].s;
        if (mkparent(path) || symlink(a[0].s, path))
            return failf("symlink %s: %s", path, strerror(errno));
        return 0;
    case OP_FILE: /* path, mode, content */
        if (mkparent(path)) return failf("mkdir for %s: %s", path, strerror(errno));
        fd = open(path, O_CREAT | O_WRONLY | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, (mode_t)a[1].i);
        if (fd < 0) return failf("create %s: %s", path, strerror(errno));
        if (write(fd, a[2].s, a[2].len) != (ssize_t)a[2].len) {
            e = errno;
            close(fd);
            return failf("write %s: %s", path, strerror(e));
        }
        close(fd);
        return 0;
    case OP_CHDIR: /* path, what, hint */
        if (chdir(path))
            return failf("mount step %s failed on %s: %s. %s", a[1].s, path, strerror(errno),
                         a[2].s);
        return 0;
    case OP_LOCK: /* path, what, hint: a shared flock, held until OP_UNLOCK */
        st->lock = open(path, O_RDONLY | O_CLOEXEC);
        if (st->lock < 0 || flock(st->lock, LOCK_SH))
            return failf("mount step %s failed on %s: %s. %s", a[1].s, path, strerror(errno),
                         a[2].s);
        return 0;
    case OP_UNLOCK:
        if (st->lock >= 0) close(st->lock);
        st->lock = -1;
        return 0;
    case OP_MKDIR: /* path, mode */
        if (mkdir(path, (mode_t)a[1].i)) return failf("mkdir %s: %s", path, strerror(errno));
        return 0;
    case OP_PIVOT: /* the new root */
        if (chdir(path) || syscall(SYS_pivot_root, ".", ".") || umount2(".", MNT_DETACH))
            return failf("mount step pivot_root failed on %s: %s. The new root must be a "
                         "mount point.", path, strerror(errno));
        return 0;
    case OP_HOLLOW_PROC: /* path */
        return hollow_proc(path);
    default:
        return failf("op %u is not a filesystem op", op);
    }
}
