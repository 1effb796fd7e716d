/* The fork server (``sandboxd-init --forkserver``, started by the zygote or by run-once,
 * one per process that makes containers), the program's entry, and its error helpers.
 *
 * One container per request: clone straight into the new namespaces (copying this small
 * process, not an interpreter), write the child's id maps, let it go. The child becomes
 * the namespace's root and runs the init (init.c) with no exec. */
#include "sandboxd.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#ifndef CLONE_PIDFD
#define CLONE_PIDFD 0x00001000
#endif

#define FS_SOCK 3 /* to the process that started us (the zygote, or run-once) */
/* The most descriptors one message brings: an engine RUN's (see "the engine"). */
#define RECV_MAX_FDS 40
#define FS_MAGIC 0x53464253u /* "SBFS" (spawn.ForkServer) */

/* ------------------------------------------------------------ errors */

char errmsg[4096];

int failf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errmsg, sizeof errmsg, fmt, ap);
    va_end(ap);
    return -1;
}

_Noreturn void die(const char *what) {
    dprintf(2, "sandboxd-init: %s: %s\n", what, strerror(errno));
    _exit(1);
}

/* ------------------------------------------------------------ the fork server */

struct fs_request { uint32_t magic, uid_map_len, gid_map_len; };
struct fs_reply { int32_t pid, err; };

/* Move descriptors into place (via high numbers: any may already sit on the targets),
 * and close every other one but 0, 1 and 2. */
static void arrange_fds(const int *from, int n) {
    int high[2 + MAX_PROCS_FDS];
    for (int i = 0; i < n; i++) {
        high[i] = fcntl(from[i], F_DUPFD_CLOEXEC, 64);
        if (high[i] < 0) die("F_DUPFD");
    }
    for (int i = 0; i < n; i++)
        if (dup3(high[i], CTRL_FD + i, O_CLOEXEC) < 0) die("dup3");
    syscall(SYS_close_range, (unsigned)(CTRL_FD + n), ~0u, 0u);
}

/* Close these descriptors: runs of consecutive numbers with one close_range each (a
 * message's descriptors arrive at the lowest free numbers, mostly in one run: an engine
 * RUN's twenty cost one or two system calls, not twenty). */
static void close_fds(const int *fds, int n) {
    int sorted[RECV_MAX_FDS];
    if (n > RECV_MAX_FDS) {
        for (int i = 0; i < n; i++) close(fds[i]);
        return;
    }
    for (int i = 0; i < n; i++) { /* insertion sort: n is small */
        int v = fds[i], j = i;
        for (; j > 0 && sorted[j - 1] > v; j--) sorted[j] = sorted[j - 1];
        sorted[j] = v;
    }
    for (int i = 0; i < n;) {
        int j = i;
        while (j + 1 < n && sorted[j + 1] == sorted[j] + 1) j++;
        if (j == i) close(sorted[i]);
        else if (syscall(SYS_close_range, (unsigned)sorted[i], (unsigned)sorted[j], 0u))
            for (int k = i; k <= j; k++) close(sorted[k]);
        i = j + 1;
    }
}

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

/* One message of ``len`` bytes on ``sock`` with ``n`` (at most 2) descriptors: sendmsg's
 * result. */
static ssize_t send_fds(int sock, const void *buf, size_t len, const int *fds, int n) {
    struct iovec iov = {(void *)buf, len};
    union { struct cmsghdr h; char buf[CMSG_SPACE(2 * sizeof(int))]; } anc;
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    if (n > 0) {
        mh.msg_control = anc.buf;
        mh.msg_controllen = CMSG_SPACE((size_t)n * sizeof(int));
        struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN((size_t)n * sizeof(int));
        memcpy(CMSG_DATA(cm), fds, (size_t)n * sizeof(int));
    }
    ssize_t s;
    do s = sendmsg(sock, &mh, MSG_NOSIGNAL); while (s < 0 && errno == EINTR);
    return s;
}

static void fs_reply(int32_t pid, int32_t err, int pidfd) {
    struct fs_reply rep = {pid, err};
    if (send_fds(FS_SOCK, &rep, sizeof rep, &pidfd, pidfd >= 0) != sizeof rep)
        _exit(0); /* our parent is gone */
}

/* A container's mount namespace starts as a copy of ours (one without a template: an
 * image's root), which its init detaches after pivot_root, and so does a template
 * builder's: each mount here is copied, made a slave and torn down for nothing. /sys and
 * what hangs below it (on a v1 host: a tmpfs, a dozen cgroup hierarchies, tracing; 14 of
 * this machine's 25 mounts) is never a bind source (mounts.py refuses one) and no
 * container mounts a sysfs, so it goes from a namespace of our own; /proc stays (a user
 * namespace mounts a proc only where one is fully visible). A slave of the host's: its
 * later mounts still reach us where the host's root is shared (systemd's default), and
 * nothing of ours reaches it. Not as an ordinary user (a rootless daemon): unshare is
 * refused and the containers copy the caller's namespace, as before. */
static int own_ns = -1; /* our mount namespace (templates are built from it), or -1 */

static void slim_mounts(void) {
    if (unshare(CLONE_NEWNS)) return;
    if (mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL)) die("fork server: make-rslave");
    if (umount2("/sys", MNT_DETACH) && errno != EINVAL && errno != ENOENT)
        die("fork server: detaching /sys");
    own_ns = open("/proc/self/ns/mnt", O_RDONLY | O_CLOEXEC);
    if (own_ns < 0) die("fork server: our mount namespace");
}

/* ------------------------------------------------------------ templates
 *
 * A plan may begin with the ops that build its container's root (binds, the generated
 * /etc, /dev, a hollow /proc; pivoted), up to ``template_end`` (mounts.py, compile_plan).
 * Those are the same for every container of the shape, so they run once, here, as host
 * root, in a mount namespace of their own kept by a descriptor; each container is then
 * cloned from inside it, and the kernel copies that root in one go (the copy, into a new
 * user namespace, locks every mount of it). The init goes on with the rest of the plan:
 * its own /box, /tmp, /dev/shm and /proc. Templates are found by their ops' bytes, not
 * by the plan's descriptor (a memfd's inode number may come back for another plan). */

#define MAX_TEMPLATES 64
/* A template's binds of single files (/etc/ld.so.cache, /etc/localtime...) hold the inode
 * they found: a file the host replaces since (ldconfig renames a new cache over the old)
 * reaches containers only from a template built after it. So one is built again once it
 * is this old: a few ms of the fork server's CPU per shape and half-minute. */
#define TEMPLATE_MAX_AGE 30.0
struct template { unsigned char *ops; size_t len; int ns; double built; };
static struct template templates[MAX_TEMPLATES];
static unsigned next_evicted;

/* Build the template of ``pl``: in a child that makes a mount namespace of its own and
 * carries out the plan's ops up to ``template_end``; we keep its namespace. -1 (errno
 * EIO, the reason on our stderr) if it fails. */
static int build_template(const struct plan *pl) {
    int done[2], go[2];
    if (pipe2(done, O_CLOEXEC)) return -1;
    if (pipe2(go, O_CLOEXEC)) {
        close(done[0]);
        close(done[1]);
        return -1;
    }
    pid_t b = fork();
    if (b == 0) {
        close(done[0]);
        close(go[1]);
        signal(SIGCHLD, SIG_DFL); /* hollow_proc waits for its helpers */
        struct plan copy = *pl;
        struct setup st = {.template = TEMPLATE_BUILD, .lock = -1, .ruleset = -1,
                           .job = {0, -1, -1}};
        if (unshare(CLONE_NEWNS)) failf("template: unshare: %s", strerror(errno));
        else if (!run_plan(&copy, &st)) errmsg[0] = 0;
        if (write(done[1], errmsg, strlen(errmsg) + 1) < 0) _exit(1);
        char c;
        while (read(go[0], &c, 1) < 0 && errno == EINTR) {}
        _exit(0);
    }
    close(done[1]);
    close(go[0]);
    int ns = -1, err = b < 0 ? errno : 0;
    if (!err) {
        char why[sizeof errmsg];
        ssize_t k;
        do k = read(done[0], why, sizeof why - 1); while (k < 0 && errno == EINTR);
        why[k > 0 ? k : 0] = 0;
        if (k <= 0 || why[0]) {
            dprintf(2, "sandboxd-init: fork server: building a container template: %s\n",
                    k <= 0 ? "its builder died" : why);
            err = EIO;
        } else {
            char path[64];
            snprintf(path, sizeof path, "/proc/%d/ns/mnt", (int)b);
            ns = open(path, O_RDONLY | O_CLOEXEC);
            if (ns < 0) err = errno;
        }
    }
    close(done[0]);
    close(go[1]); /* the builder exits; we ignore SIGCHLD, so the kernel reaps it */
    errno = err;
    return ns;
}

/* The namespace of the template that begins the plan on ``planfd``: -1 with errno 0 if
 * it has none (or is no plan: the init reports that), -1 with errno set if it cannot be
 * built. */
static int template_ns(int planfd) {
    struct plan pl;
    if (read_plan_fd(planfd, &pl)) { /* not a plan: its init says so, on its channel */
        errno = 0;
        return -1;
    }
    const unsigned char *start = pl.base;
    size_t len = plan_template_len(&pl);
    int ns = -1;
    errno = 0;
    if (len > 0 && own_ns >= 0) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        double t_now = (double)now.tv_sec + now.tv_nsec / 1e9;
        struct template *t = NULL;
        for (unsigned i = 0; i < MAX_TEMPLATES && !t; i++)
            if (templates[i].ops && templates[i].len == len &&
                !memcmp(templates[i].ops, start, len))
                t = &templates[i];
        if (t && t_now - t->built <= TEMPLATE_MAX_AGE) {
            ns = t->ns;
        } else if ((ns = build_template(&pl)) < 0 && t) {
            /* Its rebuild failed (on our stderr): the old one serves another while. */
            t->built = t_now;
            ns = t->ns;
            errno = 0;
        } else if (ns >= 0) {
            if (!t) t = &templates[next_evicted++ % MAX_TEMPLATES];
            if (t->built > 0) { /* in use: replaced */
                free(t->ops);
                close(t->ns);
            }
            *t = (struct template){malloc(len), len, ns, t_now};
            if (t->ops) memcpy(t->ops, start, len);
            else t->len = 0; /* out of memory: kept unnamed, built again next time */
        }
    } else if (len > 0) {
        errno = EPERM; /* no namespace of our own (not host root): the plan is not for us */
    }
    free((void *)start);
    return ns;
}

/* Clone one container init into the plan on fds[1], with fds[0] as its channel and
 * fds[2..] the job cgroup's cgroup.procs files (which its init writes its job process's
 * pid into), and write its id maps. Closes every fds[i]. The init's pid, with its pidfd in
 * ``*pidfd``; -1 with errno set if it could not be made (then nothing of it is left). */
static pid_t clone_init(const char maps[2][256], const uint32_t lens[2], int *fds, int nfds,
                        int *pidfd) {
    *pidfd = -1;
    /* The child waits on this pipe until its id maps are written. */
    int mapped[2];
    if (pipe2(mapped, O_CLOEXEC)) {
        int e = errno;
        close_fds(fds, nfds);
        errno = e;
        return -1;
    }
    /* A plan with a template: clone from inside the template's namespace. */
    int tns = template_ns(fds[1]);
    if (tns < 0 && errno) {
        int e = errno;
        close(mapped[0]);
        close(mapped[1]);
        close_fds(fds, nfds);
        errno = e;
        return -1;
    }
    if (tns >= 0 && setns(tns, CLONE_NEWNS)) die("fork server: entering a template");
    pid_t pid = (pid_t)syscall(SYS_clone, SANDBOXD_CLONE_FLAGS | CLONE_PIDFD | SIGCHLD, NULL,
                               pidfd, NULL, 0UL);
    if (pid != 0 && tns >= 0 && setns(own_ns, CLONE_NEWNS)) /* /proc/PID is there */
        die("fork server: leaving a template");
    if (pid == 0) { /* the container init */
        close(mapped[1]);
        char g = 0;
        ssize_t k;
        do k = read(mapped[0], &g, 1); while (k < 0 && errno == EINTR);
        if (k != 1 || g != 'm') _exit(1); /* our maps were never written */
        if (setresgid(0, 0, 0) || setresuid(0, 0, 0)) die("becoming the namespace's root");
        arrange_fds(fds, nfds);
        _exit(init_main(tns >= 0 ? TEMPLATE_COPY : TEMPLATE_NONE, nfds - 2));
    }
    int err = pid < 0 ? errno : 0;
    close(mapped[0]);
    close_fds(fds, nfds);
    /* An ordinary user (a rootless daemon, docs/rootless.md) may write its own gid
     * into the map only once setgroups is denied in the namespace. */
    if (!err && ((geteuid() != 0 && write_map(pid, "setgroups", "deny", 4)) ||
                 write_map(pid, "uid_map", maps[0], lens[0]) ||
                 write_map(pid, "gid_map", maps[1], lens[1]))) {
        err = errno;
        syscall(SYS_pidfd_send_signal, *pidfd, SIGKILL, NULL, 0);
    }
    if (!err && write(mapped[1], "m", 1) != 1) err = errno;
    close(mapped[1]);
    if (err) {
        if (*pidfd >= 0) close(*pidfd);
        *pidfd = -1;
        errno = err;
        return -1;
    }
    return pid;
}

/* One message of ``sock`` into ``buf`` with up to ``maxfds`` descriptors (``*nfds`` of
 * them came; ``*mflags``, the message's flags): recvmsg's result. */
static ssize_t recv_fds(int sock, void *buf, size_t len, int flags, int *fds, int maxfds,
                        int *nfds, int *mflags) {
    union { struct cmsghdr h; char buf[CMSG_SPACE(RECV_MAX_FDS * sizeof(int))]; } anc;
    struct iovec iov = {buf, len};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = anc.buf,
                        .msg_controllen = CMSG_SPACE((size_t)maxfds * sizeof(int))};
    ssize_t r;
    do r = recvmsg(sock, &mh, flags | MSG_CMSG_CLOEXEC); while (r < 0 && errno == EINTR);
    *nfds = 0;
    *mflags = r < 0 ? 0 : mh.msg_flags;
    struct cmsghdr *cm = r < 0 ? NULL : CMSG_FIRSTHDR(&mh);
    if (cm && cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
        *nfds = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        memcpy(fds, CMSG_DATA(cm), (size_t)*nfds * sizeof(int));
    }
    return r;
}

/* One clone request on FS_SOCK, answered at once: the init's pid and pidfd. */
static void serve_clone(void) {
    struct fs_request req;
    /* The init's channel, its plan, and the cgroup.procs files of its job's cgroup
     * when the supervisor lends them (the init moves the job process itself). */
    int fds[2 + MAX_PROCS_FDS], nfds, mflags;
    ssize_t r = recv_fds(FS_SOCK, &req, sizeof req, MSG_WAITALL, fds, 2 + MAX_PROCS_FDS, &nfds,
                         &mflags);
    if (r == 0) _exit(0);
    if (r < 0) die("fork server: recvmsg");
    char maps[2][256];
    if (r != sizeof req || req.magic != FS_MAGIC || nfds < 2 ||
        (mflags & MSG_CTRUNC) || req.uid_map_len >= sizeof maps[0] ||
        req.gid_map_len >= sizeof maps[1]) {
        errno = EPROTO;
        die("fork server: bad request");
    }
    uint32_t lens[2] = {req.uid_map_len, req.gid_map_len};
    for (int i = 0; i < 2; i++) {
        size_t got = 0;
        while (got < lens[i]) {
            ssize_t k = read(FS_SOCK, maps[i] + got, lens[i] - got);
            if (k < 0 && errno == EINTR) continue;
            if (k <= 0) die("fork server: reading the id maps");
            got += (size_t)k;
        }
    }
    int pidfd;
    pid_t pid = clone_init(maps, lens, fds, nfds, &pidfd);
    fs_reply(pid, pid < 0 ? errno : 0, pidfd);
    if (pidfd >= 0) close(pidfd);
}

/* ------------------------------------------------------------ the engine
 *
 * The pool's container turnover, off the supervisor's event loop (docs/engine.md, stage
 * 2). On a second socket (ENGINE_FD, SOCK_SEQPACKET, one request or reply per packet)
 * the pool asks for one of three things (sandboxd/engine.py):
 *   RECYCLE  a used container whose job cgroup it has already proven empty and reset: the
 *            old init's pidfd, the shape's plan, the id maps of its slot and the cgroup's
 *            cgroup.procs files. We SIGKILL the old init, wait for its death (its uids are
 *            then free for the next container of the slot), clone the next container into
 *            the same slot and cgroup, wait until its channel is readable (its ``ready``,
 *            or its end), and give the pool its pid, pidfd and channel;
 *   KILL     the old init's pidfd only: killed, and the pool told once it is dead;
 *   MAKE     RECYCLE without an old init (a slot and cgroup the pool took afresh).
 * No cgroup file is opened or read here: what is reset, and when, stays the pool's
 * decision (Python deciding, C executing). */

#define ENGINE_FD 4
#define ENGINE_MAGIC 0x4e454253u /* "SBEN" (sandboxd/engine.py) */
#define MAX_INFLIGHT 1024

enum { ENG_RECYCLE = 1, ENG_KILL = 2, ENG_MAKE = 3, ENG_RUN = 4, ENG_STOP = 5, ENG_GO = 6 };
struct eng_request { uint32_t magic, uid_map_len, gid_map_len, kind; uint64_t key; };
/* job_pid: the new container's job process (host pid) once we read its ``ready``; 0 if
 * the pool is to read the channel itself; -1 if we read a ready that was not one.
 * kind: 0, or ENG_RUN for a run's end (``done``: job_pid is then its flags, and the
 * counters' texts follow). */
struct eng_reply { uint64_t key; int32_t pid, err, job_pid, kind; };

/* RUN: after the request's head, before the maps (those of the slot, for the recycle). */
struct eng_run {
    uint64_t next_key;    /* the recycle's reply comes under this key */
    uint64_t limit_ns;    /* CPU limit: the job is killed at it */
    uint64_t leftover_ok; /* the memory an empty cgroup may show charged and be reused */
    uint64_t caches;      /* what the per-CPU charge caches can hold beyond it */
    double wall, sent;    /* the wall limit; when the job was sent (CLOCK_MONOTONIC) */
    double ncpu, watch_min, watch_max; /* the watchdog's schedule (container.py's) */
    uint32_t ncounters, nzero, recycle, restore_len;
    char restore[32];     /* the memory limit's text, written back after a drain */
};
#define RUN_MAX_COUNTERS 8
#define RUN_MAX_ZERO 4
enum { DONE_EMPTY = 1, DONE_HELD = 2 }; /* and the kill's reason << 4 */
enum { KILL_CPU = 1, KILL_WALL = 2, KILL_STOP = 3 };

struct run {
    int chan, fstate, fdir, musage, drain;
    int counters[RUN_MAX_COUNTERS], ncounters;
    int zero[RUN_MAX_ZERO], nzero;
    struct eng_run rq;
    double deadline, check; /* check: when cpuacct.usage is read next (0: not any more) */
    int killed;
};

struct inflight {
    uint64_t key;
    /* 0 free, 1 the old init dying, 2 the new one starting, 3 a job running, 4 its
     * container held (its cgroup reset) until the pool's GO */
    int state;
    int kind;
    int old, chan, pidfd;
    pid_t pid;
    int fds[2 + MAX_PROCS_FDS], nfds; /* fds[0] is the new init's end of its channel */
    /* State 4: the held init's channel, our copy, closed once the init is killed (GO), so
     * that the supervisor's close of its own is not the last one: the last one wakes the
     * init (its EOF), which would then exit at once, in the middle of the job's answer. */
    int held_chan;
    char maps[2][256];
    uint32_t lens[2];
    struct run run; /* state 3 */
};

static struct inflight *inflight; /* MAX_INFLIGHT of them, allocated once */
static int epfd = -1;
/* The pool closed its end: what is in flight is finished, new inits killed, nothing sent.
 * Clone requests are still served (the supervisor may still make containers itself). */
static int engine_closed;
#define EV_FS (~0ull)
#define EV_ENGINE (~0ull - 1)

static void eng_reply(uint64_t key, pid_t pid, int err, pid_t job_pid, int pidfd, int chan) {
    if (engine_closed) { /* nobody will run this one */
        if (pidfd >= 0) syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
        return;
    }
    struct eng_reply rep = {key, pid, err, job_pid, 0};
    int fds[2] = {pidfd, chan};
    if (send_fds(ENGINE_FD, &rep, sizeof rep, fds, pidfd >= 0 ? 2 : 0) != sizeof rep &&
        pidfd >= 0) /* the pool is gone: nobody will run this one */
        syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
}

static void watch(int fd, uint64_t tag) {
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = tag};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev)) die("engine: epoll_ctl");
}

static void unwatch(int fd) { epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL); }

/* The old init of ``f`` is dead (or there was none): make the next container in its slot
 * and cgroup; for a KILL, only say so. */
static void engine_remake(struct inflight *f) {
    if (f->old >= 0) {
        unwatch(f->old);
        close(f->old);
        f->old = -1;
    }
    if (f->kind == ENG_KILL) {
        eng_reply(f->key, 0, 0, 0, -1, -1);
        f->state = 0;
        return;
    }
    if (engine_closed) { /* nobody to give it to */
        close_fds(f->fds + 1, f->nfds - 1);
        f->state = 0;
        return;
    }
    int pair[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair)) {
        int e = errno;
        close_fds(f->fds + 1, f->nfds - 1);
        eng_reply(f->key, -1, e, 0, -1, -1);
        f->state = 0;
        return;
    }
    f->fds[0] = pair[1];
    f->pid = clone_init((const char (*)[256])f->maps, f->lens, f->fds, f->nfds, &f->pidfd);
    if (f->pid < 0) {
        int e = errno;
        close(pair[0]);
        eng_reply(f->key, -1, e, 0, -1, -1);
        f->state = 0;
        return;
    }
    f->chan = pair[0];
    f->state = 2;
    watch(f->chan, (uint64_t)(f - inflight));
}

/* PIDFD_GET_INFO (Linux 6.13): its struct's pid field, in our pid namespace (the host's). */
#define PIDFD_INFO_IOCTL _IOWR(0xFF, 11, unsigned char[64])
static int pidfd_info_works = -1; /* not known yet */

static pid_t pidfd_host_pid(int pidfd) {
    unsigned char info[64] = {0};
    if (ioctl(pidfd, PIDFD_INFO_IOCTL, info)) return -1;
    uint32_t pid;
    memcpy(&pid, info + 16, sizeof pid);
    return (pid_t)pid;
}

/* A channel frame's length (its 4-byte big-endian prefix). */
static uint32_t frame_len(const unsigned char *b) {
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

/* Whether the frame body ``p`` (``len`` bytes) is exactly {"t": ``t``, ``key``: a value of
 * ``type``}, in either order; that value in *value (a float64's bits for T_FLOAT). The
 * init's ``ready`` and ``started`` are such frames. */
static int t_and_one(const unsigned char *p, uint32_t len, const char *t, const char *key,
                     int type, uint64_t *value) {
    struct rd r = {p, p + len};
    uint64_t count, kl, vl;
    const unsigned char *k, *v;
    int have_t = 0, have_key = 0;
    if (mp_next(&r, &count, &k) != T_MAP || count != 2) return 0;
    for (uint64_t i = 0; i < count; i++) {
        if (mp_next(&r, &kl, &k) != T_STR) return 0;
        int vt = mp_next(&r, &vl, &v);
        if (key_is(k, kl, "t") && vt == T_STR && key_is(v, vl, t)) have_t = 1;
        else if (key_is(k, kl, key) && vt == type) {
            *value = vl;
            have_key = 1;
        } else return 0;
    }
    return have_t && have_key && r.p == r.end;
}

/* The new init's first message, read here when it is the ``ready`` it should be, so that
 * the pool need not read the channel (four system calls on the supervisor's thread per
 * container): the job process's pid, from the descriptor that comes with it. 0, with
 * nothing read, for anything else (an error, the init's death, a message not all there
 * yet, a kernel without PIDFD_GET_INFO): the pool reads it itself, as it did. -1 for a
 * ready read whose job process is gone or whose descriptor did not come: the pool fails
 * the container, as its own read would. */
static pid_t take_ready(int chan) {
    if (!pidfd_info_works) return 0;
    unsigned char buf[64];
    ssize_t n;
    do n = recv(chan, buf, sizeof buf, MSG_PEEK | MSG_DONTWAIT); while (n < 0 && errno == EINTR);
    if (n < 4) return 0;
    uint32_t len = frame_len(buf);
    uint64_t job_pid;
    if (len > sizeof buf - 4 || (size_t)n < 4 + len ||
        !t_and_one(buf + 4, len, "ready", "job_pid", T_INT, &job_pid))
        return 0;
    if (pidfd_info_works < 0) { /* asked once, on ourselves, before anything is read */
        int self = (int)syscall(SYS_pidfd_open, getpid(), 0);
        pidfd_info_works = self >= 0 && pidfd_host_pid(self) == getpid();
        if (self >= 0) close(self);
        if (!pidfd_info_works) return 0;
    }
    int fd = -1, nfds, mflags;
    ssize_t got = recv_fds(chan, buf, 4 + len, MSG_DONTWAIT, &fd, 1, &nfds, &mflags);
    if (got != (ssize_t)(4 + len) || nfds != 1 || (mflags & (MSG_CTRUNC | MSG_TRUNC))) {
        if (nfds > 0) close(fd);
        return -1;
    }
    pid_t pid = pidfd_host_pid(fd);
    close(fd);
    return pid > 0 ? pid : -1;
}

/* The new init of ``f`` has said something (``ready``, or why not) or died: the pool's. */
static void engine_started(struct inflight *f) {
    unwatch(f->chan);
    eng_reply(f->key, f->pid, 0, take_ready(f->chan), f->pidfd, f->chan);
    close(f->pidfd);
    close(f->chan);
    f->state = 0;
}

/* ------------------------------------------------------------ a job's run (RUN, STOP)
 *
 * docs/engine.md, stage 3: the supervisor hands the job to the init itself (its message,
 * on the container's channel), then gives us the channel and the job cgroup's files. We
 * watch the channel and the job's CPU time and wall clock (container.py's watchdog
 * schedule), kill the job through the freezer at a limit or when asked (STOP), and once
 * the init has something to say that is not "started" (its "exited", an error, its end)
 * we prove the cgroup empty, read its counters for the supervisor and, if asked, reset
 * the cgroup and hold the container until the pool's GO (after the job's answer), which
 * remakes it (RECYCLE's work, under a second key) or kills it. The init's "exited" stays in the channel for the supervisor to read: the output
 * is the supervisor's business, and the counters are read here, on the host, never
 * reported by the container (docs/engine.md, "Why the counters stay with the host"). */

/* The inflights in state 3, by index: the watchdog's loop looks at these only (a scan of
 * every inflight, each over a kilobyte, cost more than the whole watch). */
static int running[MAX_INFLIGHT], nrunning;

static double mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double clampd(double v, double lo, double hi) { return v < lo ? lo : v > hi ? hi : v; }

/* A counter file's integer, or -1. */
static long long read_int(int fd) {
    char b[32];
    ssize_t n = pread(fd, b, sizeof b - 1, 0);
    if (n <= 0) return -1;
    b[n] = 0;
    char *e;
    long long v = strtoll(b, &e, 10);
    return e == b ? -1 : v;
}

/* The pids in ``name`` of the cgroup directory ``dir`` (opened afresh: a kept descriptor
 * re-reads as empty), each SIGKILLed if ``kill_them``: how many there were, -1 if the file
 * could not be read. */
static int pids_in(int dir, const char *name, int kill_them) {
    int fd = openat(dir, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    static char b[8192];
    size_t have = 0;
    int count = 0;
    for (;;) {
        ssize_t n = read(fd, b + have, sizeof b - 1 - have);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) { count = -1; break; }
        have += (size_t)n;
        b[have] = 0;
        char *p = b, *nl;
        while ((nl = strchr(p, '\n')) || (n == 0 && *p)) {
            long pid = strtol(p, NULL, 10);
            if (pid > 0) {
                count++;
                if (kill_them) kill((pid_t)pid, SIGKILL);
            }
            p = nl ? nl + 1 : p + strlen(p);
        }
        have = strlen(p);
        memmove(b, p, have);
        if (n == 0) break;
    }
    close(fd);
    return count;
}

/* Freeze the job cgroup, SIGKILL everything in it, thaw (cgroups/v1.py's kill_all, without
 * waiting for the freeze: a task still freezing gets its SIGKILL at the thaw, and what
 * forked meanwhile is killed at the next tick, or by the init, which kills the rest of its
 * PID namespace once the job process is reaped). */
static void run_kill(struct inflight *f, int why) {
    struct run *r = &f->run;
    if (!r->killed) r->killed = why;
    if (write(r->fstate, "FROZEN", 6) < 0) { /* no freezer to write: kill unfrozen */ }
    pids_in(r->fdir, "cgroup.procs", 1);
    pids_in(r->fdir, "tasks", 1);
    if (write(r->fstate, "THAWED", 6) < 0) { /* as above */ }
    r->check = mono() + 0.02; /* killed again then, if the init has not spoken */
}

static void run_tick(struct inflight *f, double now) {
    struct run *r = &f->run;
    if (r->killed) {
        if (now >= r->check) run_kill(f, r->killed);
        return;
    }
    if (now >= r->check) {
        long long used = read_int(r->counters[0]);
        if (used >= 0 && (uint64_t)used >= r->rq.limit_ns) { run_kill(f, KILL_CPU); return; }
        if (now >= r->deadline) { run_kill(f, KILL_WALL); return; }
        double left = used < 0 ? 0 : (double)(r->rq.limit_ns - (uint64_t)used) / 1e9 / r->rq.ncpu;
        r->check = now + clampd(left, r->rq.watch_min, r->rq.watch_max);
    } else if (now >= r->deadline) {
        run_kill(f, KILL_WALL);
    }
}

/* When the loop must wake for the runs' watchdogs: -1 (never), else milliseconds. */
static int run_timeout(void) {
    if (!nrunning) return -1;
    double now = mono(), wake = 1e300;
    for (int i = 0; i < nrunning; i++) {
        struct inflight *f = &inflight[running[i]];
        double w = f->run.killed || f->run.check < f->run.deadline ? f->run.check : f->run.deadline;
        if (w < wake) wake = w;
    }
    if (wake <= now) return 0;
    double ms = (wake - now) * 1000.0 + 1.0; /* a wake never early: at most a ms late */
    return ms > 1e6 ? 1000000 : (int)ms;
}

static void run_ticks(void) {
    if (!nrunning) return;
    double now = mono();
    for (int i = 0; i < nrunning; i++) run_tick(&inflight[running[i]], now);
}

static void run_close(struct run *r) {
    int fds[4 + RUN_MAX_COUNTERS + RUN_MAX_ZERO] = {r->fstate, r->fdir, r->musage, r->drain};
    int n = 4;
    for (int i = 0; i < r->ncounters; i++) fds[n++] = r->counters[i];
    for (int i = 0; i < r->nzero; i++) fds[n++] = r->zero[i];
    close_fds(fds, n);
}

/* The init has spoken (not "started") or is gone: the run's end. ``exited``: its "exited",
 * whole, is in the channel. */
static void run_end(struct inflight *f, int exited) {
    struct run *r = &f->run;
    unwatch(r->chan);
    int chan = r->chan;
    r->chan = -1;
    int me = (int)(f - inflight);
    for (int i = 0; i < nrunning; i++)
        if (running[i] == me) {
            running[i] = running[--nrunning];
            break;
        }
    int empty = pids_in(r->fdir, "cgroup.procs", 0) == 0;
    struct { struct eng_reply head; unsigned char body[RUN_MAX_COUNTERS * 130]; } rep;
    size_t off = 0;
    for (int i = 0; i < r->ncounters; i++) {
        ssize_t n = pread(r->counters[i], rep.body + off + 2, 128, 0);
        uint16_t len = n > 0 ? (uint16_t)n : 0; /* unreadable: empty, which the pool refuses */
        memcpy(rep.body + off, &len, 2);
        off += 2 + len;
    }
    int recycling = 0, flags = 0;
    if (exited && empty && r->rq.recycle && !engine_closed) {
        long long usage = read_int(r->musage);
        uint64_t ok = r->rq.leftover_ok;
        if (usage > (long long)ok && usage <= (long long)(ok + r->rq.caches) && r->rq.restore_len) {
            /* A memory limit below the usage drains the per-CPU charge caches
             * (cgroups/v1.py, reset_quick); then the limit goes back to the job's. */
            char t[24];
            int tl = snprintf(t, sizeof t, "%llu", (unsigned long long)ok);
            if (write(r->drain, t, (size_t)tl) < 0) { /* EBUSY: still above it */ }
            usage = read_int(r->musage);
            if (write(r->drain, r->rq.restore, r->rq.restore_len) != (ssize_t)r->rq.restore_len) {
                usage = -1;
                flags |= 4; /* the limit's text is unknown now: the pool writes it again */
            }
        }
        if (usage >= 0 && usage <= (long long)ok) {
            recycling = 1;
            for (int i = 0; i < r->nzero; i++)
                if (write(r->zero[i], "0", 1) != 1) recycling = 0;
        }
    }
    flags |= (empty ? DONE_EMPTY : 0) | (recycling ? DONE_HELD : 0) | r->killed << 4;
    rep.head = (struct eng_reply){f->key, 0, 0, flags, ENG_RUN};
    if (!engine_closed) send_fds(ENGINE_FD, &rep, sizeof rep.head + off, NULL, 0);
    run_close(r);
    if (recycling) { /* held, under its own key, until the pool's GO (once it answered) */
        f->key = r->rq.next_key;
        f->state = 4;
        f->held_chan = chan;
        return;
    }
    close(chan);
    if (f->old >= 0) close(f->old);
    f->old = -1;
    close_fds(f->fds + 1, f->nfds - 1);
    f->state = 0;
}

/* Whether a frame (its first bytes) is the init's "exited", whose "t" comes first: only
 * after one is the container recycled here (after an error the supervisor looks at it). */
static int is_exited(const unsigned char *buf, size_t n) {
    struct rd r = {buf + 4, buf + n};
    uint64_t count, kl, vl;
    const unsigned char *k, *v;
    return mp_next(&r, &count, &k) == T_MAP && mp_next(&r, &kl, &k) == T_STR &&
           key_is(k, kl, "t") && mp_next(&r, &vl, &v) == T_STR && key_is(v, vl, "exited");
}

static void run_event(struct inflight *f) {
    struct run *r = &f->run;
    unsigned char buf[256];
    ssize_t n;
    do n = recv(r->chan, buf, sizeof buf, MSG_PEEK | MSG_DONTWAIT); while (n < 0 && errno == EINTR);
    if (n < 0 && errno == EAGAIN) return;
    uint32_t len = n >= 4 ? frame_len(buf) : 0;
    uint64_t bits;
    if (n >= 4 && len <= sizeof buf - 4 && (size_t)n >= 4 + len &&
        t_and_one(buf + 4, len, "started", "t0", T_FLOAT, &bits)) {
        double t0;
        memcpy(&t0, &bits, sizeof t0);
        ssize_t got;
        do got = recv(r->chan, buf, 4 + len, MSG_DONTWAIT); while (got < 0 && errno == EINTR);
        r->deadline = t0 + r->rq.wall; /* the wall clock counts from the hand-over */
        return;
    }
    /* Recycled here only once the whole "exited" is in the channel: the rest of a long
     * one (its output) is still in the init's hands, which the recycle's kill ends. */
    int whole = 0, queued = 0;
    if (n >= 4 && is_exited(buf, (size_t)n) && !ioctl(r->chan, FIONREAD, &queued))
        whole = (uint64_t)queued >= 4 + (uint64_t)len;
    run_end(f, whole);
}

/* RUN: fds are the channel, freezer.state, the freezer directory, memory.usage_in_bytes,
 * memory.limit_in_bytes, the counters (cpuacct.usage first), the files zeroed at a
 * recycle, and for a recycle the old init's pidfd, the plan and the cgroup.procs files. */
static void engine_run(struct inflight *f, const struct eng_request *hd,
                       const struct eng_run *rq, const char *maps, int *fds, int nfds) {
    struct run *r = &f->run;
    memset(r, 0, sizeof *r);
    r->rq = *rq;
    int i = 0;
    r->chan = fds[i++];
    r->fstate = fds[i++];
    r->fdir = fds[i++];
    r->musage = fds[i++];
    r->drain = fds[i++];
    r->ncounters = (int)rq->ncounters;
    memcpy(r->counters, fds + i, (size_t)r->ncounters * sizeof(int));
    i += r->ncounters;
    r->nzero = (int)rq->nzero;
    memcpy(r->zero, fds + i, (size_t)r->nzero * sizeof(int));
    i += r->nzero;
    f->key = hd->key;
    f->kind = ENG_RUN;
    f->old = -1;
    f->nfds = 1;
    if (rq->recycle) {
        f->old = fds[i++];
        f->nfds = 1 + nfds - i;
        memcpy(f->fds + 1, fds + i, (size_t)(nfds - i) * sizeof(int));
        f->lens[0] = hd->uid_map_len;
        f->lens[1] = hd->gid_map_len;
        memcpy(f->maps[0], maps, f->lens[0]);
        memcpy(f->maps[1], maps + f->lens[0], f->lens[1]);
    }
    r->deadline = rq->sent + rq->wall;
    r->check = rq->sent + clampd((double)rq->limit_ns / 1e9 / rq->ncpu, rq->watch_min,
                                 rq->watch_max);
    f->state = 3;
    running[nrunning++] = (int)(f - inflight);
    watch(r->chan, (uint64_t)(f - inflight));
}

/* GO: a held container (state 4) is killed, and remade in its slot and cgroup if ``make``
 * (RECYCLE's reply), else only said dead (KILL's). The pool sends it once the job's answer
 * is out, so that the clone is off the job's critical path. */
static void engine_go(uint64_t key, int make) {
    for (int i = 0; i < MAX_INFLIGHT; i++) {
        struct inflight *f = &inflight[i];
        if (f->state != 4 || f->key != key) continue;
        if (!make) {
            close_fds(f->fds + 1, f->nfds - 1);
            f->nfds = 1;
        }
        f->kind = make ? ENG_RECYCLE : ENG_KILL;
        f->state = 1;
        syscall(SYS_pidfd_send_signal, f->old, SIGKILL, NULL, 0);
        close(f->held_chan);
        watch(f->old, (uint64_t)(f - inflight));
        return;
    }
    errno = ENOENT; /* the pool's bug: it knows what is held */
    die("engine: GO for nothing held");
}

static void engine_stop(uint64_t key) {
    for (int i = 0; i < nrunning; i++)
        if (inflight[running[i]].key == key) {
            run_kill(&inflight[running[i]], KILL_STOP);
            return;
        }
    /* over already (its done is on its way): nothing to kill */
}

/* One request from the pool; a malformed one is a bug of ours: we exit (the pool sees the
 * socket close and makes its containers itself, as it does with no engine). */
static void engine_request(void) {
    struct { struct eng_request hd; char body[sizeof(struct eng_run) + 512]; } req;
    int fds[RECV_MAX_FDS], nfds, mflags;
    ssize_t r = recv_fds(ENGINE_FD, &req, sizeof req, MSG_DONTWAIT, fds, RECV_MAX_FDS,
                         &nfds, &mflags);
    if (r < 0 && errno == EAGAIN) return;
    if (r <= 0) { /* the pool closed its end (or is gone) */
        unwatch(ENGINE_FD);
        close(ENGINE_FD);
        engine_closed = 1;
        for (int i = 0; i < MAX_INFLIGHT; i++) /* nobody will say GO to the held ones */
            if (inflight[i].state == 4) {
                syscall(SYS_pidfd_send_signal, inflight[i].old, SIGKILL, NULL, 0);
                close(inflight[i].old);
                close(inflight[i].held_chan);
                close_fds(inflight[i].fds + 1, inflight[i].nfds - 1);
                inflight[i].state = 0;
            }
        return;
    }
    int k = (size_t)r >= sizeof req.hd ? (int)req.hd.kind : 0;
    if ((size_t)r >= sizeof req.hd && req.hd.magic == ENGINE_MAGIC &&
        !(mflags & (MSG_CTRUNC | MSG_TRUNC)) && (k == ENG_RUN || k == ENG_STOP || k == ENG_GO)) {
        struct eng_run rq;
        size_t maps = (size_t)req.hd.uid_map_len + req.hd.gid_map_len;
        if (k == ENG_STOP && (size_t)r == sizeof req.hd && nfds == 0) {
            engine_stop(req.hd.key);
            return;
        }
        if (k == ENG_GO && (size_t)r == sizeof req.hd + sizeof(uint32_t) && nfds == 0) {
            uint32_t make;
            memcpy(&make, req.body, sizeof make);
            engine_go(req.hd.key, make != 0);
            return;
        }
        if (k == ENG_RUN && (size_t)r == sizeof req.hd + sizeof rq + maps &&
            req.hd.uid_map_len < 256 && req.hd.gid_map_len < 256) {
            memcpy(&rq, req.body, sizeof rq);
            int fixed = 5 + (int)rq.ncounters + (int)rq.nzero;
            if (rq.ncounters >= 1 && rq.ncounters <= RUN_MAX_COUNTERS &&
                rq.nzero <= RUN_MAX_ZERO && rq.restore_len < sizeof rq.restore &&
                rq.ncpu >= 1 && rq.watch_min > 0 &&
                (rq.recycle ? nfds >= fixed + 2 && nfds - fixed - 1 <= 1 + MAX_PROCS_FDS
                            : nfds == fixed)) {
                struct inflight *f = NULL;
                for (int i = 0; i < MAX_INFLIGHT && !f; i++)
                    if (!inflight[i].state) f = &inflight[i];
                if (f) {
                    engine_run(f, &req.hd, &rq, req.body + sizeof rq, fds, nfds);
                    return;
                }
                /* far more than the pool ever runs: refused; the pool watches it itself */
                close_fds(fds, nfds);
                eng_reply(req.hd.key, -1, EBUSY, 0, -1, -1);
                return;
            }
        }
        errno = EPROTO;
        die("engine: bad request");
    }
    /* fds: RECYCLE the old pidfd, the plan, the procs; KILL the pidfd; MAKE the plan, the
     * procs. */
    int first = k == ENG_MAKE ? 0 : 1; /* where the plan is */
    if ((size_t)r < sizeof req.hd || req.hd.magic != ENGINE_MAGIC ||
        !((k == ENG_RECYCLE && nfds >= 2) || (k == ENG_KILL && nfds == 1) ||
          (k == ENG_MAKE && nfds >= 1)) ||
        nfds - first > 1 + MAX_PROCS_FDS || /* the plan and the procs fit f->fds */
        (mflags & (MSG_CTRUNC | MSG_TRUNC)) || req.hd.uid_map_len >= 256 ||
        req.hd.gid_map_len >= 256 ||
        (size_t)r != sizeof req.hd + req.hd.uid_map_len + req.hd.gid_map_len) {
        errno = EPROTO;
        die("engine: bad request");
    }
    struct inflight *f = NULL;
    for (int i = 0; i < MAX_INFLIGHT && !f; i++)
        if (!inflight[i].state) f = &inflight[i];
    if (!f) { /* far more than the pool ever has in flight: refused, as a failed clone */
        if (k != ENG_MAKE) syscall(SYS_pidfd_send_signal, fds[0], SIGKILL, NULL, 0);
        close_fds(fds, nfds);
        eng_reply(req.hd.key, -1, EBUSY, 0, -1, -1);
        return;
    }
    f->key = req.hd.key;
    f->kind = k;
    f->old = first ? fds[0] : -1;
    /* f->fds[0], the channel, comes at the clone; the plan and the procs follow it. */
    f->nfds = 1 + nfds - first;
    if (k != ENG_KILL) memcpy(f->fds + 1, fds + first, (size_t)(nfds - first) * sizeof(int));
    f->lens[0] = req.hd.uid_map_len;
    f->lens[1] = req.hd.gid_map_len;
    memcpy(f->maps[0], req.body, f->lens[0]);
    memcpy(f->maps[1], req.body + f->lens[0], f->lens[1]);
    if (k == ENG_MAKE) {
        engine_remake(f);
        return;
    }
    f->state = 1;
    syscall(SYS_pidfd_send_signal, f->old, SIGKILL, NULL, 0); /* ESRCH: already dead */
    watch(f->old, (uint64_t)(f - inflight));
}

static int forkserver(void) {
    prctl(PR_SET_NAME, "sandboxd-forks", 0, 0, 0);
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0)) die("death signal");
    /* The engine's socket, when our starter gave us one (the zygote does, run-once not);
     * looked at before anything of ours can take descriptor 4. */
    int engine = 0, type = 0;
    socklen_t tl = sizeof type;
    if (!getsockopt(ENGINE_FD, SOL_SOCKET, SO_TYPE, &type, &tl) && type == SOCK_SEQPACKET)
        engine = 1;
    slim_mounts();
    /* Every disposition back to the default once (an ignored signal stays ignored across
     * the exec that started us), so that an init has only these two to undo. */
    struct sigaction dfl = {.sa_handler = SIG_DFL};
    for (int s = 1; s < NSIG; s++) sigaction(s, &dfl, NULL);
    signal(SIGCHLD, SIG_IGN); /* the kernel reaps our inits; the supervisor holds pidfds */
    signal(SIGPIPE, SIG_IGN);
    if (!engine)
        for (;;) serve_clone();
    inflight = calloc(MAX_INFLIGHT, sizeof *inflight);
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (!inflight || epfd < 0) die("engine: setting up");
    watch(FS_SOCK, EV_FS);
    watch(ENGINE_FD, EV_ENGINE);
    for (;;) {
        struct epoll_event evs[64];
        int n = epoll_wait(epfd, evs, 64, run_timeout());
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) die("engine: epoll_wait");
        run_ticks();
        for (int i = 0; i < n; i++) {
            uint64_t tag = evs[i].data.u64;
            if (tag == EV_FS) {
                serve_clone();
            } else if (tag == EV_ENGINE) {
                engine_request();
            } else {
                struct inflight *f = &inflight[tag];
                if (f->state == 1) engine_remake(f);
                else if (f->state == 2) engine_started(f);
                else if (f->state == 3) run_event(f);
            }
        }
    }
}

/* What the Python side must agree with (tests/unit/isolation/test_native_contract.py). */
static int contract(void) {
    printf("plan_magic %#llx\n", (unsigned long long)PLAN_VERSION << 32 | PLAN_MAGIC);
    printf("clone_flags %#x\n", (unsigned)SANDBOXD_CLONE_FLAGS);
    printf("job_fault_exit %d\n", JOB_FAULT_EXIT);
    printf("warm_flag %#x\n", WARM_FLAG);
    printf("warm_ready %#x\n", WARM_READY);
    printf("max_procs_fds %d\n", MAX_PROCS_FDS);
    for (size_t i = 0; i < op_count; i++)
        if (op_table[i].name)
            printf("op %u %s %s\n", op_table[i].code, op_table[i].name,
                   *op_table[i].fields ? op_table[i].fields : "-");
    return fflush(stdout) ? 1 : 0;
}

int main(int argc, char **argv) {
    if (argc == 2 && !strcmp(argv[1], "--forkserver")) return forkserver();
    if (argc == 2 && !strcmp(argv[1], "--contract")) return contract();
    errno = EINVAL;
    die("usage: sandboxd-init --forkserver (with its socket on fd 3) | --contract");
}
