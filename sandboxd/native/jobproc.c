/* The job process: a fork of the init (a few hundred kilobytes, not an interpreter), never
 * an exec until the job's own. It drops everything, in bubblewrap's order
 * (docs/isolation.md, steps 7 to 11), then waits on its socket (JOB_FD, to the init) for
 * the job's exec request, which the supervisor made (container.encode_exec) and the init
 * passed on untouched, with stdin, stdout and stderr riding with its first byte: a u32
 * length, then
 *   u32 argc, argc NUL-terminated strings;
 *   u32 envc, envc NUL-terminated strings ("K=V");
 *   one NUL-terminated string: the working directory;
 *   u32 nlimits, nlimits x (u32 resource, u64 value): soft = hard = value.
 * It applies the rlimits, takes the stdio, enters the working directory, closes every
 * other descriptor and execs.
 *
 * A warm runtime (docs/profiles.md): a request whose length has WARM_FLAG set is not the
 * job but an interpreter to start before it (the profile's, running sandboxd's bootstrap
 * for it, sandboxd/runtimes/). It is carried out exactly as a job's (every restriction
 * above already in place, the rlimits, stdio and working directory of the shape's jobs),
 * except that the socket stays open across that execve: the bootstrap says it is up
 * (WARM_READY), then reads the job's own request from it (the same encoding, without
 * descriptors: its stdio is already in place) and closes it before running any of the
 * job's code. That execve failing is the sandbox's fault, not a job's.
 *
 * Whose fault a failure is (isolate's rule, sandboxd/result.py):
 * - anything that fails before the execve (dropping privileges, the exec request, an
 *   rlimit, the stdio, the working directory) is the sandbox's: the job process reports
 *   it to the init on its socket (``fault``) and exits JOB_FAULT_EXIT; the init passes it
 *   to the supervisor as a typed error, which ends as ``sandbox_error`` with the report
 *   as its reason, never as the job's runtime error;
 * - the execve failing is the job's (a program that is not there, not executable, not a
 *   format the kernel runs): one line on the job's stderr ("sandboxd: program not found:
 *   /box/x") and exit 127, the shell's "command not found", so ``runtime_error``.
 */
#include "sandboxd.h"

#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MAX_BODY (64u << 20)
/* SECBIT_NOROOT, SECBIT_NO_SETUID_FIXUP, SECBIT_KEEP_CAPS (locked) and
 * SECBIT_NO_CAP_AMBIENT_RAISE, each with its lock. */
#define SECUREBITS_LOCKED 0xEFul

/* A fault of the sandbox's own, before the job's execve: reported to the init, which reads
 * it once it reaped us (exit JOB_FAULT_EXIT) or when it could not hand the job over. The
 * report is the step, the errno's name and the message ("{step} {detail}: {strerror}
 * ({errno name})", `detail` from `fmt`), each NUL-terminated, in one write
 * (under JOB_FAULT_MAX bytes into the socket's empty buffer: never short). Nothing but
 * this process ever holds the socket's other end, and it is closed before the execve, so
 * the job cannot forge a report. */
static _Noreturn __attribute__((format(printf, 2, 3))) void fault(const char *step,
                                                                   const char *fmt, ...) {
    int e = errno;
    char detail[512], report[JOB_FAULT_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    const char *name = strerrorname_np(e);
    if (!name) name = "?";
    int n = snprintf(report, sizeof report, "%s%c%s%c%s%s%s: %s (%s)", step, 0, name, 0, step,
                     *detail ? " " : "", detail, strerror(e), name);
    if (n >= (int)sizeof report) n = (int)sizeof report - 1;
    report[n] = 0;
    ssize_t w = write(JOB_FD, report, (size_t)n + 1);
    (void)w; /* if the init is gone, so is whoever would read it */
    _exit(JOB_FAULT_EXIT);
}

static int read_all(int fd, void *buf, size_t n) {
    char *p = buf;
    while (n) {
        ssize_t r = read(fd, p, n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            if (!r) errno = EPROTO;
            return -1;
        }
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

/* ------------------------------------------------------------ the exec request */

struct cursor { const char *p, *end; };

static uint32_t get_u32(struct cursor *c) {
    uint32_t v;
    if (c->end - c->p < 4) { errno = EPROTO; fault("exec request", "cut short"); }
    memcpy(&v, c->p, 4);
    c->p += 4;
    return v;
}

static uint64_t get_u64(struct cursor *c) {
    uint64_t v;
    if (c->end - c->p < 8) { errno = EPROTO; fault("exec request", "cut short"); }
    memcpy(&v, c->p, 8);
    c->p += 8;
    return v;
}

static char *get_str(struct cursor *c) {
    const char *nul = memchr(c->p, 0, (size_t)(c->end - c->p));
    if (!nul) { errno = EPROTO; fault("exec request", "with an unterminated string"); }
    char *s = (char *)c->p;
    c->p = nul + 1;
    return s;
}

static char **get_strv(struct cursor *c) {
    uint32_t n = get_u32(c);
    if (n > 1u << 20) { errno = E2BIG; fault("exec request", "with %u strings", n); }
    char **v = calloc((size_t)n + 1, sizeof *v);
    if (!v) fault("exec request", "allocation");
    for (uint32_t i = 0; i < n; i++) v[i] = get_str(c);
    return v;
}

/* Receive the request's length, and up to `nfds` descriptors with it; 0 on EOF. */
static ssize_t recv_header(uint32_t *len, int *fds, size_t nfds, size_t *got) {
    union { struct cmsghdr h; char buf[CMSG_SPACE(3 * sizeof(int))]; } anc;
    struct iovec iov = {len, sizeof *len};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1,
                        .msg_control = anc.buf, .msg_controllen = CMSG_SPACE(nfds * sizeof(int))};
    ssize_t r;
    do r = recvmsg(JOB_FD, &mh, MSG_WAITALL | MSG_CMSG_CLOEXEC); while (r < 0 && errno == EINTR);
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

static const char *rlimit_name(uint32_t res) {
    static const char *const names[] = {
        [RLIMIT_CPU] = "RLIMIT_CPU", [RLIMIT_FSIZE] = "RLIMIT_FSIZE",
        [RLIMIT_DATA] = "RLIMIT_DATA", [RLIMIT_STACK] = "RLIMIT_STACK",
        [RLIMIT_CORE] = "RLIMIT_CORE", [RLIMIT_RSS] = "RLIMIT_RSS",
        [RLIMIT_NPROC] = "RLIMIT_NPROC", [RLIMIT_NOFILE] = "RLIMIT_NOFILE",
        [RLIMIT_MEMLOCK] = "RLIMIT_MEMLOCK", [RLIMIT_AS] = "RLIMIT_AS",
        [RLIMIT_LOCKS] = "RLIMIT_LOCKS", [RLIMIT_SIGPENDING] = "RLIMIT_SIGPENDING",
        [RLIMIT_MSGQUEUE] = "RLIMIT_MSGQUEUE", [RLIMIT_NICE] = "RLIMIT_NICE",
        [RLIMIT_RTPRIO] = "RLIMIT_RTPRIO", [RLIMIT_RTTIME] = "RLIMIT_RTTIME",
    };
    return res < sizeof names / sizeof names[0] && names[res] ? names[res] : "RLIMIT_?";
}

/* ------------------------------------------------------------ exec */

/* execvpe() searches the PATH of *our* environment; the job's own PATH counts. */
static void exec_search(char **argv, char **envp, const char **path_used) {
    const char *file = argv[0];
    if (!file || !*file) { errno = ENOENT; return; }
    if (strchr(file, '/')) { execve(file, argv, envp); return; }
    const char *path = "/usr/local/bin:/usr/bin:/bin";
    for (char **e = envp; *e; e++)
        if (!strncmp(*e, "PATH=", 5)) path = *e + 5;
    *path_used = path;
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

/* The execve failed: the job's fault, said on its stderr in the words a user looks for. */
static _Noreturn void exec_failed(const char *prog, const char *path) {
    int e = errno;
    const char *name = strerrorname_np(e);
    switch (e) {
    case ENOENT:
    case ENOTDIR:
        if (path)
            dprintf(2, "sandboxd: program not found: %s (looked in PATH=%s)\n", prog, path);
        else
            dprintf(2, "sandboxd: program not found: %s\n", prog);
        break;
    case EACCES:
        dprintf(2, "sandboxd: program not executable: %s (%s)\n", prog, strerror(e));
        break;
    case ENOEXEC:
        dprintf(2, "sandboxd: not a program the kernel can run (no #! line?): %s (%s)\n", prog,
                strerror(e));
        break;
    default:
        dprintf(2, "sandboxd: cannot execute %s: %s (%s)\n", prog, strerror(e), name ? name : "?");
    }
    _exit(127);
}

/* ------------------------------------------------------------ the process */

/* Everything the job will never need again, before the job exists (docs/isolation.md,
 * steps 7 to 11). */
static void drop(uid_t uid, gid_t gid, int ruleset, const char *bpf, size_t bpf_len) {
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0))
        fault("clearing ambient capabilities", "%s", "");
    for (unsigned long cap = 0;; cap++) { /* EINVAL past the kernel's last capability */
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == 0) continue;
        if (errno == EINVAL && cap > 0) break;
        fault("dropping capability", "%lu from the bounding set", cap);
    }
    if (prctl(PR_SET_SECUREBITS, SECUREBITS_LOCKED, 0, 0, 0)) fault("locking securebits", "%s", "");
    /* A rootless daemon's namespace has setgroups denied (its one-uid map, where the job
     * stays uid 0): the kernel then refuses to drop the daemon user's supplementary
     * groups, which the job keeps (docs/rootless.md). Only there is EPERM accepted. */
    if (setgroups(0, NULL) && !(errno == EPERM && uid == 0)) fault("setgroups", "to none");
    if (setresgid(gid, gid, gid)) fault("setresgid", "to %u", (unsigned)gid);
    if (setresuid(uid, uid, uid)) fault("setresuid", "to %u", (unsigned)uid);
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0)) fault("death signal", "%s", "");
    struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2] = {{0, 0, 0}, {0, 0, 0}};
    if (syscall(SYS_capset, &hdr, data)) fault("capset", "to no capabilities");
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)) fault("no_new_privs", "%s", "");
    if (ruleset >= 0 && landlock_enforce(ruleset)) fault("landlock", "restrict_self");
    if (!bpf_len || bpf_len % sizeof(struct sock_filter) ||
        bpf_len / sizeof(struct sock_filter) > 0xFFFF) {
        errno = EPROTO;
        fault("seccomp", "program of %zu bytes", bpf_len);
    }
    struct sock_fprog prog = {(unsigned short)(bpf_len / sizeof(struct sock_filter)),
                              (struct sock_filter *)bpf};
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog)) fault("seccomp", "%s", "");
}

/* The job process, from the fork to the job's execve: it never returns. Its socket to the
 * init is on JOB_FD, the Landlock ruleset (if any) on 4, nothing else above stderr. */
_Noreturn void job_process_main(uid_t uid, gid_t gid, int ruleset, const char *bpf,
                                size_t bpf_len) {
    prctl(PR_SET_NAME, "sandboxd-jobexec", 0, 0, 0);
    drop(uid, gid, ruleset, bpf, bpf_len);
    uint32_t len;
    int fds[3] = {-1, -1, -1};
    size_t got;
    ssize_t r = recv_header(&len, fds, 3, &got);
    if (r == 0) _exit(0); /* the container was destroyed unused */
    if (r != (ssize_t)sizeof len) {
        if (r > 0) errno = EPROTO;
        fault("exec request", "header");
    }
    if (got != 3) {
        errno = EPROTO;
        fault("exec request", "with %zu descriptors, not 3 (stdin, stdout, stderr)", got);
    }
    int warm = (len & WARM_FLAG) != 0;
    len &= ~WARM_FLAG;
    if (len > MAX_BODY) { errno = E2BIG; fault("exec request", "of %u bytes", len); }
    char *body = malloc(len ? len : 1);
    if (!body) fault("exec request", "allocation of %u bytes", len);
    if (read_all(JOB_FD, body, len)) fault("exec request", "body of %u bytes", len);
    struct cursor c = {body, body + len};
    char **argv = get_strv(&c);
    char **envp = get_strv(&c);
    char *cwd = get_str(&c);
    /* The stdio first: under a judge's tiny open-files limit (1 to 3) dup2 onto 1 or 2
     * would fail once the limit is set; the limit then binds what the job opens. */
    for (int i = 0; i < 3; i++) {
        if (dup2(fds[i], i) < 0) fault("dup2", "onto descriptor %d", i);
    }
    uint32_t nlim = get_u32(&c);
    for (uint32_t i = 0; i < nlim; i++) {
        uint32_t res = get_u32(&c);
        uint64_t val = get_u64(&c);
        struct rlimit rl = {val, val};
        if (setrlimit((int)res, &rl))
            fault("setrlimit", "%s=%llu", rlimit_name(res), (unsigned long long)val);
    }
    if (chdir(cwd)) fault("chdir", "%s", cwd);
    const char *path = NULL;
    if (warm) {
        /* Every descriptor but the stdio and the socket (which dup2 made without
         * close-on-exec) goes; the bootstrap closes the socket before the job's code. */
        syscall(SYS_close_range, JOB_FD + 1u, ~0u, 0u);
        exec_search(argv, envp, &path);
        fault("warm runtime", "execve %s", argv[0] && *argv[0] ? argv[0] : "(empty)");
    }
    /* Every signal disposition is the default and none is blocked: the init set them so
     * before forking us. The socket closes here: nothing after this can report a fault. */
    syscall(SYS_close_range, 3u, ~0u, 0u);
    exec_search(argv, envp, &path);
    exec_failed(argv[0] && *argv[0] ? argv[0] : "(an empty argv[0])", path);
}
