/* sandboxd-init: the fork server, every container's init, and its job process.
 *
 * Why C: the first version ran the container init in Python, a clone of the
 * zygote's interpreter, and forked the job process from it. Measured with
 * perf over 400 back-to-back jobs, most of a container's CPU was then the
 * interpreter, not the isolation: page tables copied at each clone,
 * hundreds of copy-on-write faults, the interpreter's own work, and the
 * teardown of those address spaces. The decisions stay in Python
 * (isolation/mounts.py compiles the mount plan, seccomp.py the filter,
 * landlock.py the rules, once per container shape, in the zygote); this
 * program only carries them out, from a sealed memfd, the "plan".
 *
 * Three roles, one static binary, one exec (of the fork server) per daemon:
 * - the fork server (``--forkserver``, started by the zygote, or by run-once):
 *   clones each container straight into its namespaces, copying only itself,
 *   and writes the child's id maps;
 * - the init: the clone's child, the namespace's root, PID 1; it carries out
 *   the plan (mounts, hostname, lo, the Landlock ruleset), forks the job
 *   process, and serves the supervisor's channel. Its descriptors:
 *     3 the control channel to the supervisor (channel.py's frames: a 4-byte
 *       big-endian length, a msgpack map; descriptors ride with the first byte);
 *     4 the plan (its layout: sandboxd/isolation/initplan.py);
 * - the job process: the init's fork; it drops everything and waits for the
 *   job, then execs it (the first exec since the fork server's).
 *
 * Messages, as container.py documents them: to the supervisor "ready" (+ the
 * job process's pidfd), "started", "exited", "files", "error"; from it "job"
 * (files, the job process's message, + stdin, stdout, stderr) and "collect".
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <limits.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CTRL_FD 3
#define PLAN_FD 4
#define JOB_FD 3 /* where the job process finds its socket */
#define MAX_FRAME (1u << 30)
#define PLAN_MAGIC 0x50444253u /* "SBDP" */
#define PLAN_VERSION 1u

#ifndef SYS_landlock_create_ruleset
#define SYS_landlock_create_ruleset 444
#define SYS_landlock_add_rule 445
#endif
#ifndef CLONE_PIDFD
#define CLONE_PIDFD 0x00001000
#endif
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

/* ------------------------------------------------------------ errors */

static char errmsg[4096];

/* Record why setup failed; the caller returns -1 and main reports it. */
static int failf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errmsg, sizeof errmsg, fmt, ap);
    va_end(ap);
    return -1;
}

static void die(const char *what) {
    dprintf(2, "sandboxd-init: %s: %s\n", what, strerror(errno));
    _exit(1);
}

/* ------------------------------------------------------------ msgpack out */

struct buf { unsigned char *p; size_t len, cap; };

static void put(struct buf *b, const void *d, size_t n) {
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n) cap *= 2;
        unsigned char *p = realloc(b->p, cap);
        if (!p) die("realloc");
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, d, n);
    b->len += n;
}

static void put_be(struct buf *b, uint64_t v, int n) {
    unsigned char t[8];
    for (int i = 0; i < n; i++) t[i] = (unsigned char)(v >> (8 * (n - 1 - i)));
    put(b, t, (size_t)n);
}

static void mp_head(struct buf *b, unsigned fix, unsigned fixmax, unsigned c8, unsigned c16,
                    unsigned c32, uint64_t n) {
    unsigned char c;
    if (fix && n < fixmax) { c = (unsigned char)(fix | n); put(b, &c, 1); }
    else if (c8 && n < 256) { c = (unsigned char)c8; put(b, &c, 1); put_be(b, n, 1); }
    else if (n < 65536) { c = (unsigned char)c16; put(b, &c, 1); put_be(b, n, 2); }
    else { c = (unsigned char)c32; put(b, &c, 1); put_be(b, n, 4); }
}

static void mp_map(struct buf *b, uint32_t n) { mp_head(b, 0x80, 16, 0, 0xde, 0xdf, n); }
static void mp_str(struct buf *b, const char *s, size_t n) {
    mp_head(b, 0xa0, 32, 0xd9, 0xda, 0xdb, n);
    put(b, s, n);
}
static void mp_cstr(struct buf *b, const char *s) { mp_str(b, s, strlen(s)); }
static void mp_bin(struct buf *b, const void *d, size_t n) {
    mp_head(b, 0, 0, 0xc4, 0xc5, 0xc6, n);
    put(b, d, n);
}
static void mp_int(struct buf *b, int64_t v) {
    unsigned char c;
    if (v >= 0 && v < 128) { c = (unsigned char)v; put(b, &c, 1); return; }
    c = v >= 0 ? 0xcf : 0xd3;
    put(b, &c, 1);
    put_be(b, (uint64_t)v, 8);
}
static void mp_float(struct buf *b, double d) {
    unsigned char c = 0xcb;
    uint64_t bits;
    memcpy(&bits, &d, 8);
    put(b, &c, 1);
    put_be(b, bits, 8);
}

/* One frame to the supervisor; `fds` ride with its first byte. */
static int send_frame(struct buf *m, const int *fds, int nfds) {
    unsigned char hdr[4] = {(unsigned char)(m->len >> 24), (unsigned char)(m->len >> 16),
                            (unsigned char)(m->len >> 8), (unsigned char)m->len};
    struct iovec iov[2] = {{hdr, 4}, {m->p, m->len}};
    union { struct cmsghdr h; char buf[CMSG_SPACE(4 * sizeof(int))]; } anc;
    struct msghdr mh = {.msg_iov = iov, .msg_iovlen = 2};
    if (nfds) {
        mh.msg_control = anc.buf;
        mh.msg_controllen = CMSG_SPACE((size_t)nfds * sizeof(int));
        struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN((size_t)nfds * sizeof(int));
        memcpy(CMSG_DATA(cm), fds, (size_t)nfds * sizeof(int));
    }
    size_t total = 4 + m->len, done = 0;
    while (done < total) {
        ssize_t r = sendmsg(CTRL_FD, &mh, MSG_NOSIGNAL);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return -1;
        done += (size_t)r;
        mh.msg_control = NULL; /* the descriptors went with the first byte */
        mh.msg_controllen = 0;
        while (mh.msg_iovlen && (size_t)r >= mh.msg_iov->iov_len) {
            r -= (ssize_t)mh.msg_iov->iov_len;
            mh.msg_iov++;
            mh.msg_iovlen--;
        }
        if (mh.msg_iovlen) {
            mh.msg_iov->iov_base = (char *)mh.msg_iov->iov_base + r;
            mh.msg_iov->iov_len -= (size_t)r;
        }
    }
    m->len = 0;
    return 0;
}

static void send_error(const char *where, const char *message) {
    struct buf m = {0};
    mp_map(&m, 3);
    mp_cstr(&m, "t"); mp_cstr(&m, "error");
    mp_cstr(&m, "where"); mp_cstr(&m, where);
    mp_cstr(&m, "message"); mp_cstr(&m, message);
    send_frame(&m, NULL, 0);
    free(m.p);
}

/* ------------------------------------------------------------ msgpack in */

enum { T_BAD, T_NIL, T_BOOL, T_INT, T_FLOAT, T_STR, T_BIN, T_ARR, T_MAP, T_EXT };

struct rd { const unsigned char *p, *end; };

static int rd_be(struct rd *r, int n, uint64_t *v) {
    if (r->end - r->p < n) return -1;
    *v = 0;
    for (int i = 0; i < n; i++) *v = (*v << 8) | r->p[i];
    r->p += n;
    return 0;
}

/* The next item's type; `n` is its value (ints), length (str, bin) or count (arr, map);
 * `data` points at a str's or bin's bytes, which are skipped. */
static int mp_next(struct rd *r, uint64_t *n, const unsigned char **data) {
    if (r->p >= r->end) return T_BAD;
    unsigned c = *r->p++;
    int t = T_BAD, w = 0;
    *n = 0;
    if (c < 0x80) { *n = c; return T_INT; }
    if (c >= 0xe0) { *n = (uint64_t)(int64_t)(int8_t)c; return T_INT; }
    if ((c & 0xf0) == 0x80) { *n = c & 0x0f; return T_MAP; }
    if ((c & 0xf0) == 0x90) { *n = c & 0x0f; return T_ARR; }
    if ((c & 0xe0) == 0xa0) { *n = c & 0x1f; t = T_STR; goto bytes; }
    switch (c) {
    case 0xc0: return T_NIL;
    case 0xc2: case 0xc3: *n = c & 1; return T_BOOL;
    case 0xc4: t = T_BIN; w = 1; break;
    case 0xc5: t = T_BIN; w = 2; break;
    case 0xc6: t = T_BIN; w = 4; break;
    case 0xd9: t = T_STR; w = 1; break;
    case 0xda: t = T_STR; w = 2; break;
    case 0xdb: t = T_STR; w = 4; break;
    case 0xcc: return rd_be(r, 1, n) ? T_BAD : T_INT;
    case 0xcd: return rd_be(r, 2, n) ? T_BAD : T_INT;
    case 0xce: return rd_be(r, 4, n) ? T_BAD : T_INT;
    case 0xcf: return rd_be(r, 8, n) ? T_BAD : T_INT;
    case 0xd0: if (rd_be(r, 1, n)) return T_BAD; *n = (uint64_t)(int64_t)(int8_t)*n; return T_INT;
    case 0xd1: if (rd_be(r, 2, n)) return T_BAD; *n = (uint64_t)(int64_t)(int16_t)*n; return T_INT;
    case 0xd2: if (rd_be(r, 4, n)) return T_BAD; *n = (uint64_t)(int64_t)(int32_t)*n; return T_INT;
    case 0xd3: return rd_be(r, 8, n) ? T_BAD : T_INT;
    case 0xca: return rd_be(r, 4, n) ? T_BAD : T_FLOAT;
    case 0xcb: return rd_be(r, 8, n) ? T_BAD : T_FLOAT;
    case 0xdc: return rd_be(r, 2, n) ? T_BAD : T_ARR;
    case 0xdd: return rd_be(r, 4, n) ? T_BAD : T_ARR;
    case 0xde: return rd_be(r, 2, n) ? T_BAD : T_MAP;
    case 0xdf: return rd_be(r, 4, n) ? T_BAD : T_MAP;
    default: return T_BAD; /* ext types: never sent on this channel */
    }
    if (rd_be(r, w, n)) return T_BAD;
bytes:
    if ((uint64_t)(r->end - r->p) < *n) return T_BAD;
    *data = r->p;
    r->p += *n;
    return t;
}

static int mp_skip(struct rd *r, int depth) {
    uint64_t n;
    const unsigned char *d;
    int t = mp_next(r, &n, &d);
    if (t == T_BAD || depth > 32) return -1;
    if (t == T_ARR || t == T_MAP) {
        uint64_t items = t == T_MAP ? 2 * n : n;
        for (uint64_t i = 0; i < items; i++)
            if (mp_skip(r, depth + 1)) return -1;
    }
    return 0;
}

static int key_is(const unsigned char *k, uint64_t n, const char *want) {
    return n == strlen(want) && !memcmp(k, want, n);
}

/* One frame from the supervisor, with up to `maxfds` descriptors (the rest closed).
 * Returns its length, 0 at EOF, -1 on error; the frame is malloc'ed into *out. */
static ssize_t recv_frame(unsigned char **out, int *fds, int maxfds, int *nfds) {
    unsigned char hdr[4];
    union { struct cmsghdr h; char buf[CMSG_SPACE(8 * sizeof(int))]; } anc;
    struct iovec iov = {hdr, 4};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1,
                        .msg_control = anc.buf, .msg_controllen = sizeof anc.buf};
    ssize_t r;
    do r = recvmsg(CTRL_FD, &mh, MSG_WAITALL | MSG_CMSG_CLOEXEC); while (r < 0 && errno == EINTR);
    *nfds = 0;
    for (struct cmsghdr *cm = r > 0 ? CMSG_FIRSTHDR(&mh) : NULL; cm; cm = CMSG_NXTHDR(&mh, cm)) {
        if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS) continue;
        int n = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        int *got = (int *)CMSG_DATA(cm);
        for (int i = 0; i < n; i++) {
            if (*nfds < maxfds) fds[(*nfds)++] = got[i];
            else close(got[i]);
        }
    }
    if (r == 0) return 0;
    if (r != 4) { errno = EPROTO; return -1; }
    uint32_t len = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | hdr[3];
    if (len > MAX_FRAME) { errno = E2BIG; return -1; }
    unsigned char *p = malloc(len ? len : 1);
    if (!p) return -1;
    for (size_t done = 0; done < len;) {
        ssize_t k = read(CTRL_FD, p + done, len - done);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) { free(p); errno = k ? errno : EPROTO; return -1; }
        done += (size_t)k;
    }
    *out = p;
    return len ? (ssize_t)len : -1;
}

/* ------------------------------------------------------------ the plan */

struct plan { const unsigned char *p, *end; };

static uint64_t plan_u64(struct plan *pl) {
    uint64_t v = 0;
    if (pl->end - pl->p >= 8) memcpy(&v, pl->p, 8);
    pl->p += 8;
    return v;
}

/* Strings are u32 length, the bytes, a NUL (so they can be used in place). */
static const char *plan_str(struct plan *pl, uint32_t *len) {
    uint32_t n = 0;
    if (pl->end - pl->p >= 4) memcpy(&n, pl->p, 4);
    pl->p += 4;
    const char *s = (const char *)pl->p;
    if (pl->p > pl->end || (size_t)(pl->end - pl->p) < (size_t)n + 1 || pl->p[n]) {
        pl->p = pl->end + 1; /* marks the plan corrupt */
        return "";
    }
    pl->p += n + 1;
    if (len) *len = n;
    return s;
}

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

static int mkdirs(const char *path) {
    char buf[PATH_MAX];
    size_t n = strlen(path);
    if (n >= sizeof buf) { errno = ENAMETOOLONG; return -1; }
    memcpy(buf, path, n + 1);
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || !*p) {
            char c = *p;
            *p = 0;
            if (mkdir(buf, 0755) && errno != EEXIST) return -1;
            *p = c;
            if (!c) return 0;
        }
    }
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

enum {
    OP_END = 0, OP_MKDIRS, OP_TOUCH, OP_MOUNT, OP_REMOUNT_RO, OP_SYMLINK, OP_FILE, OP_CHDIR,
    OP_LOCK, OP_UNLOCK, OP_MKDIR, OP_PIVOT,
};

/* Carry out the mount ops; -1 with errmsg set on the first failure. */
static int run_ops(struct plan *pl) {
    int lock = -1;
    for (;;) {
        if (pl->p >= pl->end) return failf("the plan ends without its end op");
        unsigned op = *pl->p++;
        const char *path, *a, *b, *c, *what, *hint;
        uint64_t flags;
        uint32_t len;
        int fd;
        switch (op) {
        case OP_END:
            if (lock >= 0) close(lock);
            return 0;
        case OP_MKDIRS:
            path = plan_str(pl, NULL);
            if (mkdirs(path)) return failf("mkdir %s: %s", path, strerror(errno));
            break;
        case OP_TOUCH:
            path = plan_str(pl, NULL);
            struct stat st;
            if (mkparent(path)) return failf("mkdir for %s: %s", path, strerror(errno));
            if (lstat(path, &st) && errno == ENOENT) {
                fd = open(path, O_CREAT | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0644);
                if (fd < 0) return failf("create %s: %s", path, strerror(errno));
                close(fd);
            }
            break;
        case OP_MOUNT: /* source, target, fstype, data, flags, what, hint */
            a = plan_str(pl, NULL);
            path = plan_str(pl, NULL);
            b = plan_str(pl, NULL);
            c = plan_str(pl, NULL);
            flags = plan_u64(pl);
            what = plan_str(pl, NULL);
            hint = plan_str(pl, NULL);
            if (mount(opt(a), path, opt(b), (unsigned long)flags, opt(c))) {
                char tmp[512];
                int e = errno;
                return failf("mount step %s failed on %s: %s. %s", what, path, strerror(e),
                             pick_hint(hint, e, tmp, sizeof tmp));
            }
            break;
        case OP_REMOUNT_RO: /* path, extra flags, what, hint */
            path = plan_str(pl, NULL);
            flags = plan_u64(pl);
            what = plan_str(pl, NULL);
            hint = plan_str(pl, NULL);
            if (mount(NULL, path, NULL, locked_flags(path) | MS_BIND | MS_REMOUNT | MS_RDONLY |
                      (unsigned long)flags, NULL))
                return failf("mount step %s failed on %s: %s. %s", what, path, strerror(errno), hint);
            break;
        case OP_SYMLINK: /* target, path */
            a = plan_str(pl, NULL);
            path = plan_str(pl, NULL);
            if (mkparent(path) || symlink(a, path))
                return failf("symlink %s: %s", path, strerror(errno));
            break;
        case OP_FILE: /* path, mode, content */
            path = plan_str(pl, NULL);
            flags = plan_u64(pl);
            a = plan_str(pl, &len);
            if (mkparent(path)) return failf("mkdir for %s: %s", path, strerror(errno));
            fd = open(path, O_CREAT | O_WRONLY | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, (mode_t)flags);
            if (fd < 0) return failf("create %s: %s", path, strerror(errno));
            if (write(fd, a, len) != (ssize_t)len) {
                close(fd);
                return failf("write %s: %s", path, strerror(errno));
            }
            close(fd);
            break;
        case OP_CHDIR: /* path, what, hint */
            path = plan_str(pl, NULL);
            what = plan_str(pl, NULL);
            hint = plan_str(pl, NULL);
            if (chdir(path))
                return failf("mount step %s failed on %s: %s. %s", what, path, strerror(errno), hint);
            break;
        case OP_LOCK: /* path, what, hint: a shared flock, held until OP_UNLOCK */
            path = plan_str(pl, NULL);
            what = plan_str(pl, NULL);
            hint = plan_str(pl, NULL);
            lock = open(path, O_RDONLY | O_CLOEXEC);
            if (lock < 0 || flock(lock, LOCK_SH))
                return failf("mount step %s failed on %s: %s. %s", what, path, strerror(errno), hint);
            break;
        case OP_UNLOCK:
            if (lock >= 0) close(lock);
            lock = -1;
            break;
        case OP_MKDIR: /* path, mode */
            path = plan_str(pl, NULL);
            flags = plan_u64(pl);
            if (mkdir(path, (mode_t)flags)) return failf("mkdir %s: %s", path, strerror(errno));
            break;
        case OP_PIVOT: /* the new root */
            path = plan_str(pl, NULL);
            if (chdir(path) || syscall(SYS_pivot_root, ".", ".") || umount2(".", MNT_DETACH))
                return failf("mount step pivot_root failed on %s: %s. The new root must be a "
                             "mount point.", path, strerror(errno));
            break;
        default:
            return failf("unknown op %u in the plan", op);
        }
        if (pl->p > pl->end) return failf("the plan is corrupt (op %u)", op);
    }
}

/* ------------------------------------------------------------ the job process
 *
 * A fork of the init (a few hundred kilobytes, not an interpreter), never an
 * exec until the job's own: it drops everything, in bubblewrap's order, then
 * waits on its socket (fd 3) for the job. The job message (the supervisor
 * makes it: container.encode_go), with stdin, stdout and stderr riding with
 * its first byte: a u32 length, then
 *   u32 argc, argc NUL-terminated strings;
 *   u32 envc, envc NUL-terminated strings ("K=V");
 *   one NUL-terminated string: the working directory;
 *   u32 nlimits, nlimits x (u32 resource, u64 value): soft = hard = value.
 * A failure before the job exists is a broken container: a line on stderr and
 * exit 125 (the init and the supervisor see the job process die before any
 * job). After the job arrived, one line goes to the job's stderr and the exit
 * status is 127 (the shell's "command not found"), or 126 for a bad message.
 */

#define MAX_BODY (64u << 20)
/* SECBIT_NOROOT, SECBIT_NO_SETUID_FIXUP, SECBIT_KEEP_CAPS (locked) and
 * SECBIT_NO_CAP_AMBIENT_RAISE, each with its lock. */
#define SECUREBITS_LOCKED 0xEFul
#ifndef SYS_landlock_restrict_self
#define SYS_landlock_restrict_self 446
#endif

static void fail(const char *what) {
    dprintf(2, "sandboxd: %s: %s\n", what, strerror(errno));
    _exit(126);
}

static int read_all(int fd, void *buf, size_t n) {
    char *p = buf;
    while (n) {
        ssize_t r = read(fd, p, n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

struct cursor { const char *p, *end; };

static uint32_t get_u32(struct cursor *c) {
    uint32_t v;
    if (c->end - c->p < 4) { errno = EPROTO; fail("short job message"); }
    memcpy(&v, c->p, 4);
    c->p += 4;
    return v;
}

static uint64_t get_u64(struct cursor *c) {
    uint64_t v;
    if (c->end - c->p < 8) { errno = EPROTO; fail("short job message"); }
    memcpy(&v, c->p, 8);
    c->p += 8;
    return v;
}

static char *get_str(struct cursor *c) {
    const char *nul = memchr(c->p, 0, (size_t)(c->end - c->p));
    if (!nul) { errno = EPROTO; fail("unterminated string in job message"); }
    char *s = (char *)c->p;
    c->p = nul + 1;
    return s;
}

static char **get_strv(struct cursor *c) {
    uint32_t n = get_u32(c);
    if (n > 1u << 20) { errno = E2BIG; fail("job message"); }
    char **v = calloc((size_t)n + 1, sizeof *v);
    if (!v) fail("calloc");
    for (uint32_t i = 0; i < n; i++) v[i] = get_str(c);
    return v;
}

/* execvpe() searches the PATH of *our* environment; the job's own PATH counts. */
static void exec_search(char **argv, char **envp) {
    const char *file = argv[0];
    if (!file || !*file) { errno = ENOENT; return; }
    if (strchr(file, '/')) { execve(file, argv, envp); return; }
    const char *path = "/usr/local/bin:/usr/bin:/bin";
    for (char **e = envp; *e; e++)
        if (!strncmp(*e, "PATH=", 5)) path = *e + 5;
    int saved = ENOENT;
    char buf[PATH_MAX];
    for (const char *p = path;; ) {
        const char *colon = strchrnul(p, ':');
        size_t len = (size_t)(colon - p);
        if (len + strlen(file) + 2 <= sizeof buf) {
            memcpy(buf, len ? p : ".", len ? len : 1);
            size_t off = len ? len : 1;
            buf[off] = '/';
            strcpy(buf + off + 1, file);
            execve(buf, argv, envp);
            if (errno != ENOENT && errno != ENOTDIR) saved = errno;
        }
        if (!*colon) break;
        p = colon + 1;
    }
    errno = saved;
}

/* Receive one frame's length, and up to `nfds` descriptors with it; 0 on EOF. */
static ssize_t recv_header(uint32_t *len, int *fds, size_t nfds, size_t *got) {
    union { struct cmsghdr h; char buf[CMSG_SPACE(3 * sizeof(int))]; } anc;
    struct iovec iov = {len, sizeof *len};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1,
                        .msg_control = anc.buf, .msg_controllen = CMSG_SPACE(nfds * sizeof(int))};
    ssize_t r;
    do r = recvmsg(CTRL_FD, &mh, MSG_WAITALL | MSG_CMSG_CLOEXEC); while (r < 0 && errno == EINTR);
    *got = 0;
    struct cmsghdr *cm = r > 0 ? CMSG_FIRSTHDR(&mh) : NULL;
    if (cm && cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
        *got = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        if (*got > nfds) *got = nfds;
        memcpy(fds, CMSG_DATA(cm), *got * sizeof(int));
    }
    if (mh.msg_flags & MSG_CTRUNC) { errno = EPROTO; *got = 0; return -1; }
    return r;
}

static void drop_fail(const char *what) {
    dprintf(2, "sandboxd-jobexec: %s: %s\n", what, strerror(errno));
    _exit(125);
}

/* Everything the job will never need again, before the job exists (docs/isolation.md,
 * steps 7 to 11). */
static void drop(uid_t uid, gid_t gid, int ruleset, const char *bpf, size_t bpf_len) {
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)) drop_fail("clearing ambient");
    for (unsigned long cap = 0;; cap++) { /* EINVAL past the kernel's last capability */
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == 0) continue;
        if (errno == EINVAL && cap > 0) break;
        drop_fail("dropping from the bounding set");
    }
    if (prctl(PR_SET_SECUREBITS, SECUREBITS_LOCKED, 0, 0, 0)) drop_fail("locking securebits");
    if (setgroups(0, NULL)) drop_fail("setgroups");
    if (setresgid(gid, gid, gid)) drop_fail("setresgid");
    if (setresuid(uid, uid, uid)) drop_fail("setresuid");
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0)) drop_fail("death signal");
    struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2] = {{0, 0, 0}, {0, 0, 0}};
    if (syscall(SYS_capset, &hdr, data)) drop_fail("capset");
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)) drop_fail("no_new_privs");
    if (ruleset >= 0) {
        if (syscall(SYS_landlock_restrict_self, ruleset, 0)) drop_fail("landlock_restrict_self");
        close(ruleset);
    }
    if (!bpf_len || bpf_len % sizeof(struct sock_filter) ||
        bpf_len / sizeof(struct sock_filter) > 0xFFFF) {
        errno = EPROTO;
        drop_fail("seccomp program");
    }
    struct sock_fprog prog = {(unsigned short)(bpf_len / sizeof(struct sock_filter)),
                              (struct sock_filter *)bpf};
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog)) drop_fail("seccomp");
}

/* The job process, from the fork to the job's execve: it never returns. */
static void job_process_main(uid_t uid, gid_t gid, int ruleset, const char *bpf, size_t bpf_len) {
    prctl(PR_SET_NAME, "sandboxd-jobexec", 0, 0, 0);
    drop(uid, gid, ruleset, bpf, bpf_len);
    uint32_t len;
    int fds[3] = {-1, -1, -1};
    size_t got;
    ssize_t r = recv_header(&len, fds, 3, &got);
    if (r == 0) _exit(0); /* the container was destroyed unused */
    if (r != (ssize_t)sizeof len) fail("reading the job header");
    if (got != 3) {
        errno = EPROTO;
        fail("job message without its 3 descriptors");
    }
    if (len > MAX_BODY) { errno = E2BIG; fail("job message"); }
    char *body = malloc(len ? len : 1);
    if (!body || read_all(CTRL_FD, body, len)) fail("reading the job message");
    struct cursor c = {body, body + len};
    char **argv = get_strv(&c);
    char **envp = get_strv(&c);
    char *cwd = get_str(&c);
    uint32_t nlim = get_u32(&c);
    for (uint32_t i = 0; i < nlim; i++) {
        uint32_t res = get_u32(&c);
        uint64_t val = get_u64(&c);
        struct rlimit rl = {val, val};
        if (setrlimit((int)res, &rl)) fail("setrlimit");
    }
    for (int i = 0; i < 3; i++) {
        if (dup2(fds[i], i) < 0) fail("dup2");
    }
    if (chdir(cwd)) fail("chdir");
    /* Every signal disposition is the default and none is blocked: the init set them so
     * before forking us. */
    syscall(SYS_close_range, 3u, ~0u, 0u);
    exec_search(argv, envp);
    dprintf(2, "sandboxd: cannot execute '%s': %s\n", argv[0] ? argv[0] : "", strerror(errno));
    _exit(127);
}

/* ------------------------------------------------------------ setup */

struct landlock_ruleset_attr_v6 { uint64_t handled_access_fs, handled_access_net, scoped; };
struct landlock_path_beneath_attr_ {
    uint64_t allowed_access;
    int32_t parent_fd;
} __attribute__((packed));

/* The ruleset the job process enforces on itself (-1: no Landlock). */
static int landlock_ruleset(struct plan *pl) {
    struct landlock_ruleset_attr_v6 attr = {plan_u64(pl), 0, plan_u64(pl)};
    uint64_t nrules = plan_u64(pl);
    int fd = -1;
    if (attr.handled_access_fs) {
        fd = (int)syscall(SYS_landlock_create_ruleset, &attr, sizeof attr, 0);
        if (fd < 0) return failf("landlock_create_ruleset: %s", strerror(errno));
    }
    for (uint64_t i = 0; i < nrules; i++) {
        const char *path = plan_str(pl, NULL);
        struct landlock_path_beneath_attr_ rule = {plan_u64(pl), -1};
        if (fd < 0) continue;
        rule.parent_fd = open(path, O_PATH | O_CLOEXEC);
        if (rule.parent_fd < 0) {
            close(fd);
            return failf("landlock: cannot open %s for a rule: %s", path, strerror(errno));
        }
        if (syscall(SYS_landlock_add_rule, fd, 1 /* PATH_BENEATH */, &rule, 0)) {
            int e = errno;
            close(rule.parent_fd);
            close(fd);
            return failf("landlock_add_rule on %s (access %#llx): %s", path,
                         (unsigned long long)rule.allowed_access, strerror(e));
        }
        close(rule.parent_fd);
    }
    return fd;
}

static int loopback_up(void) {
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) return failf("socket for lo: %s", strerror(errno));
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strcpy(ifr.ifr_name, "lo");
    int r = ioctl(s, SIOCGIFFLAGS, &ifr);
    if (!r) {
        ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
        r = ioctl(s, SIOCSIFFLAGS, &ifr);
    }
    close(s);
    return r ? failf("bringing lo up: %s", strerror(errno)) : 0;
}

struct job { pid_t pid; int pidfd, sock; };
static uid_t job_uid;
static gid_t job_gid;

/* The job process: a fork of this init that drops everything and waits for the job. */
static int start_job_process(struct plan *pl, int ruleset, struct job *job) {
    job_uid = (uid_t)plan_u64(pl);
    job_gid = (gid_t)plan_u64(pl);
    uint32_t bpf_len;
    const char *bpf = plan_str(pl, &bpf_len);
    if (pl->p > pl->end) return failf("the plan is corrupt (job process)");
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv))
        return failf("socketpair: %s", strerror(errno));
    pid_t pid = fork();
    if (pid == 0) {
        /* Its socket on 3 (over the supervisor's channel), the ruleset on 4, nothing else. */
        if (dup2(sv[1], JOB_FD) < 0 || (ruleset >= 0 && dup2(ruleset, 4) < 0)) drop_fail("dup2");
        syscall(SYS_close_range, ruleset >= 0 ? 5u : 4u, ~0u, 0u);
        job_process_main(job_uid, job_gid, ruleset >= 0 ? 4 : -1, bpf, bpf_len);
    }
    close(sv[1]);
    if (pid < 0) { close(sv[0]); return failf("fork: %s", strerror(errno)); }
    job->pid = pid;
    job->sock = sv[0];
    job->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (job->pidfd < 0) return failf("pidfd_open: %s", strerror(errno));
    return 0;
}

static int setup(struct job *job) {
    struct stat st;
    if (fstat(PLAN_FD, &st)) return failf("the plan: %s", strerror(errno));
    unsigned char *p = malloc((size_t)st.st_size + 1);
    if (!p || pread(PLAN_FD, p, (size_t)st.st_size, 0) != st.st_size)
        return failf("reading the plan: %s", strerror(errno));
    close(PLAN_FD);
    struct plan pl = {p, p + st.st_size};
    uint64_t magic = plan_u64(&pl);
    if (magic != ((uint64_t)PLAN_VERSION << 32 | PLAN_MAGIC)) return failf("not a plan");
    /* After the last credential change (the clone's), which clears it. If the zygote is gone already,
     * the supervisor is too, or will see this container's channel fail. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0)) return failf("death signal: %s", strerror(errno));
    if (run_ops(&pl)) return -1;
    uint32_t n;
    const char *hostname = plan_str(&pl, &n);
    if (sethostname(hostname, n)) return failf("sethostname: %s", strerror(errno));
    if (loopback_up()) return -1;
    int ruleset = landlock_ruleset(&pl);
    if (ruleset == -1 && errmsg[0]) return -1;
    int r = start_job_process(&pl, ruleset, job);
    if (ruleset >= 0) close(ruleset);
    free(p);
    return r;
}

/* ------------------------------------------------------------ the job */

static int write_files(struct rd *r, uint64_t count, uid_t uid, gid_t gid) {
    for (uint64_t i = 0; i < count; i++) {
        uint64_t nlen, clen;
        const unsigned char *name, *content;
        if (mp_next(r, &nlen, &name) != T_STR || mp_next(r, &clen, &content) != T_BIN)
            return failf("ValueError: a file is not a name and its bytes");
        char rel[PATH_MAX], path[PATH_MAX + 8];
        if (nlen == 0 || nlen >= sizeof rel || memchr(name, 0, nlen) || name[0] == '/')
            return failf("ValueError: file name must be relative and stay inside /box");
        memcpy(rel, name, nlen);
        rel[nlen] = 0;
        for (const char *c = rel; *c;) { /* no ".." component */
            size_t clen = strcspn(c, "/");
            if (clen == 2 && c[0] == '.' && c[1] == '.')
                return failf("ValueError: file name %s must be relative and stay inside /box", rel);
            c += clen;
            c += *c == '/';
        }
        snprintf(path, sizeof path, "/box/%s", rel);
        /* Subdirectories of /box are made here and given to the job user, each level. */
        for (char *c = path + 5; (c = strchr(c, '/')); c++) {
            *c = 0;
            int made = mkdir(path, 0755) == 0;
            if (!made && errno != EEXIST) return failf("OSError: mkdir %s: %s", path, strerror(errno));
            if (made && lchown(path, uid, gid)) return failf("OSError: chown %s: %s", path, strerror(errno));
            *c = '/';
        }
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0755);
        if (fd < 0) return failf("OSError: %s: %s", path, strerror(errno));
        for (uint64_t done = 0; done < clen;) {
            ssize_t k = write(fd, content + done, clen - done);
            if (k < 0 && errno == EINTR) continue;
            if (k <= 0) { close(fd); return failf("OSError: write %s: %s", path, strerror(errno)); }
            done += (uint64_t)k;
        }
        if (fchown(fd, uid, gid)) { close(fd); return failf("OSError: chown: %s", strerror(errno)); }
        close(fd);
    }
    return 0;
}

static double monotonic(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct files { struct buf out; uint64_t count, total, max_bytes, max_files; };

static int namecmp(const struct dirent **a, const struct dirent **b) {
    return strcmp((*a)->d_name, (*b)->d_name);
}

#define MAX_DEPTH 64

/* Regular files under /box, never following a symlink the job may have planted; at most
 * MAX_DEPTH directories deep (each level costs this process a few KiB of stack). */
static int collect(const char *dir, struct files *f, int depth) {
    if (depth > MAX_DEPTH)
        return failf("ValueError: the job left directories more than %d deep in /box", MAX_DEPTH);
    struct dirent **names;
    int n = scandir(dir, &names, NULL, namecmp);
    if (n < 0) return failf("OSError: %s: %s", dir, strerror(errno));
    int r = 0;
    for (int pass = 0; pass < 2 && !r; pass++) { /* files of a directory, then its subdirs */
        for (int i = 0; i < n && !r; i++) {
            const char *name = names[i]->d_name;
            if (!strcmp(name, ".") || !strcmp(name, "..")) continue;
            char path[PATH_MAX];
            if (snprintf(path, sizeof path, "%s/%s", dir, name) >= (int)sizeof path) continue;
            struct stat st;
            if (lstat(path, &st)) { r = failf("OSError: %s: %s", path, strerror(errno)); break; }
            if (pass == 1) {
                if (S_ISDIR(st.st_mode)) r = collect(path, f, depth + 1);
                continue;
            }
            if (!S_ISREG(st.st_mode)) continue;
            f->total += (uint64_t)st.st_size;
            if (f->total > f->max_bytes || f->count >= f->max_files) {
                r = failf("ValueError: the job left more than %llu bytes or %llu files in /box",
                          (unsigned long long)f->max_bytes, (unsigned long long)f->max_files);
                break;
            }
            int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
            if (fd < 0) { r = failf("OSError: %s: %s", path, strerror(errno)); break; }
            size_t cap = (size_t)st.st_size < f->max_bytes ? (size_t)st.st_size + 1 : f->max_bytes + 1;
            char *data = malloc(cap ? cap : 1);
            size_t got = 0;
            ssize_t k = 0;
            while (data && got < cap && (k = read(fd, data + got, cap - got)) > 0) got += (size_t)k;
            close(fd);
            if (!data || k < 0) { free(data); r = failf("OSError: read %s: %s", path, strerror(errno)); break; }
            mp_cstr(&f->out, path + 5); /* relative to /box */
            mp_bin(&f->out, data, got);
            free(data);
            f->count++;
        }
    }
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
    return r;
}

static int serve(struct job *job) {
    unsigned char *frame = NULL;
    int fds[3], nfds;
    ssize_t len = recv_frame(&frame, fds, 3, &nfds);
    if (len == 0) return 0; /* the supervisor gave up on this container before using it */
    if (len < 0) { send_error("job delivery", strerror(errno)); return 1; }
    struct rd r = {frame, frame + len};
    uint64_t n, count = 0;
    const unsigned char *k, *go = NULL, *files = NULL;
    uint64_t go_len = 0;
    int is_job = 0;
    errmsg[0] = 0;
    if (mp_next(&r, &n, &k) != T_MAP) failf("ValueError: the job is not a map");
    for (uint64_t i = 0; i < n && !errmsg[0]; i++) {
        uint64_t kl, vl;
        const unsigned char *v;
        if (mp_next(&r, &kl, &k) != T_STR) { failf("ValueError: a key is not a string"); break; }
        if (key_is(k, kl, "t")) {
            is_job = mp_next(&r, &vl, &v) == T_STR && key_is(v, vl, "job");
        } else if (key_is(k, kl, "go")) {
            if (mp_next(&r, &go_len, &go) != T_BIN) failf("ValueError: go is not bytes");
        } else if (key_is(k, kl, "files")) {
            const unsigned char *start = r.p;
            if (mp_next(&r, &count, &v) != T_MAP) { failf("ValueError: files is not a map"); break; }
            files = start;
            for (uint64_t j = 0; j < 2 * count; j++)
                if (mp_skip(&r, 0)) { failf("ValueError: bad files"); break; }
        } else if (mp_skip(&r, 0)) {
            failf("ValueError: undecodable job");
        }
    }
    if (!errmsg[0] && (!is_job || nfds != 3 || !go))
        failf("ValueError: expected a job message with 3 descriptors");
    if (!errmsg[0] && files) {
        struct rd fr = {files, frame + len};
        mp_next(&fr, &n, &k);
        write_files(&fr, count, job_uid, job_gid);
    }
    double t0 = 0;
    if (!errmsg[0]) {
        struct iovec iov = {(void *)go, go_len};
        union { struct cmsghdr h; char buf[CMSG_SPACE(3 * sizeof(int))]; } anc;
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1,
                            .msg_control = anc.buf, .msg_controllen = sizeof anc.buf};
        struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(3 * sizeof(int));
        memcpy(CMSG_DATA(cm), fds, 3 * sizeof(int));
        t0 = monotonic();
        ssize_t sent = sendmsg(job->sock, &mh, MSG_NOSIGNAL);
        for (size_t done = sent > 0 ? (size_t)sent : 0; sent > 0 && done < go_len;) {
            ssize_t w = send(job->sock, go + done, go_len - done, MSG_NOSIGNAL);
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) { sent = -1; break; }
            done += (size_t)w;
        }
        if (sent < 0) failf("OSError: handing the job over: %s", strerror(errno));
    }
    for (int i = 0; i < nfds; i++) close(fds[i]);
    free(frame);
    if (errmsg[0]) { send_error("job delivery", errmsg); return 1; }
    close(job->sock);
    struct buf m = {0};
    mp_map(&m, 2);
    mp_cstr(&m, "t"); mp_cstr(&m, "started");
    mp_cstr(&m, "t0"); mp_float(&m, t0);
    send_frame(&m, NULL, 0);
    for (;;) { /* reap everything; report the job process */
        int status;
        pid_t pid = waitpid(-1, &status, 0);
        if (pid < 0 && errno == EINTR) continue;
        if (pid < 0) {
            snprintf(errmsg, sizeof errmsg, "ChildProcessError: %s", strerror(errno));
            send_error("reaping the job process", errmsg);
            return 1;
        }
        if (pid == job->pid) {
            double t1 = monotonic();
            mp_map(&m, 4);
            mp_cstr(&m, "t"); mp_cstr(&m, "exited");
            mp_cstr(&m, "status"); mp_int(&m, status);
            mp_cstr(&m, "t0"); mp_float(&m, t0);
            mp_cstr(&m, "t1"); mp_float(&m, t1);
            send_frame(&m, NULL, 0);
            break;
        }
    }
    /* The supervisor kills what is left, then may ask for the files the job made. */
    len = recv_frame(&frame, fds, 0, &nfds);
    if (len <= 0) return 0;
    r = (struct rd){frame, frame + len};
    int is_collect = 0;
    uint64_t max_bytes = 0, max_files = 0;
    if (mp_next(&r, &n, &k) == T_MAP) {
        for (uint64_t i = 0; i < n; i++) {
            uint64_t kl, vl;
            const unsigned char *v;
            if (mp_next(&r, &kl, &k) != T_STR) break;
            if (key_is(k, kl, "t"))
                is_collect = mp_next(&r, &vl, &v) == T_STR && key_is(v, vl, "collect");
            else if (key_is(k, kl, "max_bytes") && mp_next(&r, &vl, &v) == T_INT) max_bytes = vl;
            else if (key_is(k, kl, "max_files") && mp_next(&r, &vl, &v) == T_INT) max_files = vl;
            else if (mp_skip(&r, 0)) break;
        }
    }
    free(frame);
    if (!is_collect) return 0;
    struct files f = {.max_bytes = max_bytes, .max_files = max_files};
    errmsg[0] = 0;
    if (collect("/box", &f, 0)) {
        send_error("collecting files", errmsg);
    } else {
        mp_map(&m, 2);
        mp_cstr(&m, "t"); mp_cstr(&m, "files");
        mp_cstr(&m, "files");
        mp_map(&m, (uint32_t)f.count);
        put(&m, f.out.p, f.out.len);
        send_frame(&m, NULL, 0);
    }
    free(f.out.p);
    free(m.p);
    return 0;
}

/* ------------------------------------------------------------ main */

/* Move descriptors into place (via high numbers: any may already sit on the targets),
 * and close every other one but 0, 1 and 2. */
static void arrange_fds(const int *from, int n) {
    int high[4];
    for (int i = 0; i < n; i++) {
        high[i] = fcntl(from[i], F_DUPFD_CLOEXEC, 64);
        if (high[i] < 0) die("F_DUPFD");
    }
    for (int i = 0; i < n; i++)
        if (dup3(high[i], CTRL_FD + i, O_CLOEXEC) < 0) die("dup3");
    syscall(SYS_close_range, (unsigned)(CTRL_FD + n), ~0u, 0u);
}

/* The init proper: descriptors 3 and 4 in place, root of the container's user namespace. */
static int init_main(void) {
    prctl(PR_SET_NAME, "sandboxd-init", 0, 0, 0);
    /* The fork server ignores SIGCHLD (the kernel reaps its inits); an init must reap. */
    struct sigaction dfl = {.sa_handler = SIG_DFL};
    for (int s = 1; s < NSIG; s++) sigaction(s, &dfl, NULL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    struct job job = {0, -1, -1};
    if (setup(&job)) {
        char msg[sizeof errmsg + 16];
        snprintf(msg, sizeof msg, "OSError: %s", errmsg);
        send_error("container setup", msg);
        return 1;
    }
    struct buf m = {0};
    mp_map(&m, 2);
    mp_cstr(&m, "t"); mp_cstr(&m, "ready");
    mp_cstr(&m, "job_pid"); mp_int(&m, job.pid);
    if (send_frame(&m, &job.pidfd, 1)) return 0; /* the supervisor is gone */
    close(job.pidfd);
    free(m.p);
    return serve(&job);
}

/* ------------------------------------------------------------ the fork server */

#define FS_SOCK 3 /* to the process that started us (the zygote, or run-once) */
#define FS_MAGIC 0x53464253u /* "SBFS" */
#define CLONE_FLAGS (CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWNET | \
                     CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWCGROUP)

struct fs_request { uint32_t magic, uid_map_len, gid_map_len; };
struct fs_reply { int32_t pid, err; };

static int write_map(pid_t pid, const char *file, const char *text, size_t len) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/%s", (int)pid, file);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t w = write(fd, text, len);
    int e = errno;
    close(fd);
    errno = e;
    return w == (ssize_t)len ? 0 : -1;
}

static void fs_reply(int32_t pid, int32_t err, int pidfd) {
    struct fs_reply rep = {pid, err};
    struct iovec iov = {&rep, sizeof rep};
    union { struct cmsghdr h; char buf[CMSG_SPACE(sizeof(int))]; } anc;
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    if (pidfd >= 0) {
        mh.msg_control = anc.buf;
        mh.msg_controllen = sizeof anc.buf;
        struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cm), &pidfd, sizeof(int));
    }
    if (sendmsg(FS_SOCK, &mh, MSG_NOSIGNAL) != sizeof rep) _exit(0); /* our parent is gone */
}

/* One container per request: clone straight into the new namespaces (copying this small
 * process, not an interpreter), write the child's id maps, let it go. The child becomes
 * the namespace's root and runs init_main, with no exec. */
static int forkserver(void) {
    prctl(PR_SET_NAME, "sandboxd-forks", 0, 0, 0);
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0)) die("death signal");
    signal(SIGCHLD, SIG_IGN); /* the kernel reaps our inits; the supervisor holds pidfds */
    signal(SIGPIPE, SIG_IGN);
    for (;;) {
        struct fs_request req;
        int fds[2] = {-1, -1}, nfds = 0;
        union { struct cmsghdr h; char buf[CMSG_SPACE(2 * sizeof(int))]; } anc;
        struct iovec iov = {&req, sizeof req};
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1,
                            .msg_control = anc.buf, .msg_controllen = sizeof anc.buf};
        ssize_t r;
        do r = recvmsg(FS_SOCK, &mh, MSG_WAITALL | MSG_CMSG_CLOEXEC); while (r < 0 && errno == EINTR);
        if (r == 0) return 0;
        if (r < 0) die("fork server: recvmsg");
        struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
        if (cm && cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
            nfds = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            memcpy(fds, CMSG_DATA(cm), (size_t)(nfds < 2 ? nfds : 2) * sizeof(int));
        }
        char maps[2][256];
        if (r != sizeof req || req.magic != FS_MAGIC || nfds != 2 ||
            req.uid_map_len >= sizeof maps[0] || req.gid_map_len >= sizeof maps[1]) {
            errno = EPROTO;
            die("fork server: bad request");
        }
        for (int i = 0; i < 2; i++) {
            size_t want = i ? req.gid_map_len : req.uid_map_len, got = 0;
            while (got < want) {
                ssize_t k = read(FS_SOCK, maps[i] + got, want - got);
                if (k < 0 && errno == EINTR) continue;
                if (k <= 0) die("fork server: reading the id maps");
                got += (size_t)k;
            }
        }
        int go[2];
        if (pipe2(go, O_CLOEXEC)) {
            fs_reply(-1, errno, -1);
            close(fds[0]);
            close(fds[1]);
            continue;
        }
        int pidfd = -1;
        pid_t pid = (pid_t)syscall(SYS_clone, CLONE_FLAGS | CLONE_PIDFD | SIGCHLD, NULL, &pidfd,
                                   NULL, 0UL);
        if (pid == 0) { /* the container init */
            close(go[1]);
            char g = 0;
            ssize_t k;
            do k = read(go[0], &g, 1); while (k < 0 && errno == EINTR);
            if (k != 1 || g != 'g') _exit(1); /* our maps were never written */
            if (setresgid(0, 0, 0) || setresuid(0, 0, 0)) die("becoming the namespace's root");
            int from[2] = {fds[0], fds[1]};
            arrange_fds(from, 2);
            _exit(init_main());
        }
        int err = pid < 0 ? errno : 0;
        close(go[0]);
        close(fds[0]);
        close(fds[1]);
        if (!err && (write_map(pid, "uid_map", maps[0], req.uid_map_len) ||
                     write_map(pid, "gid_map", maps[1], req.gid_map_len))) {
            err = errno;
            syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
        }
        if (!err && write(go[1], "g", 1) != 1) err = errno;
        close(go[1]);
        fs_reply(err ? -1 : pid, err, err ? -1 : pidfd);
        if (pidfd >= 0) close(pidfd);
    }
}

int main(int argc, char **argv) {
    if (argc == 2 && !strcmp(argv[1], "--forkserver")) return forkserver();
    errno = EINVAL;
    die("usage: sandboxd-init --forkserver (with its socket on fd 3)");
}
