/* sandboxd-jobexec: the job process of a warm container, from its first instruction.
 *
 * Why C: the container init (Python) starts this with posix_spawn (vfork and
 * exec: no copy of the interpreter's address space, no copy-on-write faults,
 * no teardown of it at exec), and this program makes itself into the job
 * process: it drops everything, waits for its job, and execs it. Done from a
 * forked Python process, the same drops cost several ms of CPU per container
 * (the fork, the page faults, and ~2 ms for execve to tear the interpreter
 * down); here they cost microseconds, and a waiting container costs
 * kilobytes instead of megabytes.
 *
 * Two frames arrive on fd 3 (a Unix stream socket from the container init),
 * each a u32 length (little endian) and then `length` bytes:
 *
 * 1. prep, sent at once: u32 flags (bit 0: a Landlock ruleset descriptor
 *    rides with the first byte, SCM_RIGHTS); u32 uid; u32 gid; then the
 *    seccomp program (struct sock_filter[]), the rest of the frame. With it
 *    the process drops, in bubblewrap's order and as docs/isolation.md lists:
 *    the ambient and bounding capability sets, securebits locked; the job's
 *    uid and gid (no supplementary groups); the death signal (after the uid
 *    change, which clears it); the effective, permitted and inheritable
 *    sets; no_new_privs; Landlock; seccomp, last. What is left to do
 *    (recvmsg, read, dup2, chdir, setrlimit, sigaction, close_range, execve)
 *    is on every policy's allow-list.
 * 2. the job, whenever the container is used; the 3 descriptors (stdin,
 *    stdout, stderr) ride with its first byte:
 *    u32 argc, argc NUL-terminated strings;
 *    u32 envc, envc NUL-terminated strings ("K=V");
 *    one NUL-terminated string: the working directory;
 *    u32 nlimits, nlimits x (u32 resource, u64 value): soft = hard = value.
 *
 * A failure in prep is a broken container: a line on stderr and exit 125
 * (the init and the supervisor see the job process die before any job). On
 * a failure after the job arrived it writes one line to the job's stderr and
 * exits 127 (the shell's "command not found"), or 126 for a bad message.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#define CTRL_FD 3
#define MAX_BODY (64u << 20)
#define MAX_PREP (1u << 20)
#define PREP_LANDLOCK 1u
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

static void prep_fail(const char *what) {
    dprintf(2, "sandboxd-jobexec: %s: %s\n", what, strerror(errno));
    _exit(125);
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

static void prep(void) {
    uint32_t len;
    int ruleset = -1;
    size_t got;
    ssize_t r = recv_header(&len, &ruleset, 1, &got);
    if (r == 0) _exit(0); /* the container was destroyed before it was ready */
    if (r != (ssize_t)sizeof len) prep_fail("reading the prep header");
    if (len < 12 || len > MAX_PREP) { errno = EPROTO; prep_fail("prep frame length"); }
    char *body = malloc(len);
    if (!body || read_all(CTRL_FD, body, len)) prep_fail("reading the prep frame");
    uint32_t flags, uid, gid;
    memcpy(&flags, body, 4);
    memcpy(&uid, body + 4, 4);
    memcpy(&gid, body + 8, 4);
    size_t bpf_len = len - 12;
    if ((flags & PREP_LANDLOCK) != (got == 1)) { errno = EPROTO; prep_fail("Landlock ruleset"); }
    if (!bpf_len || bpf_len % sizeof(struct sock_filter) ||
        bpf_len / sizeof(struct sock_filter) > 0xFFFF) {
        errno = EPROTO;
        prep_fail("seccomp program");
    }
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)) prep_fail("clearing ambient");
    for (unsigned long cap = 0;; cap++) { /* EINVAL past the kernel's last capability */
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == 0) continue;
        if (errno == EINVAL && cap > 0) break;
        prep_fail("dropping from the bounding set");
    }
    if (prctl(PR_SET_SECUREBITS, SECUREBITS_LOCKED, 0, 0, 0)) prep_fail("locking securebits");
    if (setgroups(0, NULL)) prep_fail("setgroups");
    if (setresgid(gid, gid, gid)) prep_fail("setresgid");
    if (setresuid(uid, uid, uid)) prep_fail("setresuid");
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0)) prep_fail("death signal");
    struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2] = {{0, 0, 0}, {0, 0, 0}};
    if (syscall(SYS_capset, &hdr, data)) prep_fail("capset");
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)) prep_fail("no_new_privs");
    if (ruleset >= 0) {
        if (syscall(SYS_landlock_restrict_self, ruleset, 0)) prep_fail("landlock_restrict_self");
        close(ruleset);
    }
    struct sock_fprog prog = {(unsigned short)(bpf_len / sizeof(struct sock_filter)),
                              (struct sock_filter *)(body + 12)};
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog)) prep_fail("seccomp");
    free(body);
}

int main(void) {
    /* Exec'd through /proc/self/fd/N, the kernel named this process "N". */
    prctl(PR_SET_NAME, "sandboxd-jobexec", 0, 0, 0);
    prep();
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
    /* Python ignored SIGPIPE and SIGXFSZ; ignored dispositions survive execve. */
    struct sigaction dfl = {.sa_handler = SIG_DFL};
    for (int s = 1; s < NSIG; s++) sigaction(s, &dfl, NULL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    syscall(SYS_close_range, 3u, ~0u, 0u);
    exec_search(argv, envp);
    dprintf(2, "sandboxd: cannot execute '%s': %s\n", argv[0] ? argv[0] : "", strerror(errno));
    _exit(127);
}
