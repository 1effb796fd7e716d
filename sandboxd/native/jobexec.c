/* sandboxd-jobexec: the waiting job process of a warm container.
 *
 * Why C: the job process waits, already stripped of everything (uid,
 * capabilities, no_new_privs, Landlock, seccomp: all applied by the Python
 * side before it exec'd this), for its job; then it execs the job. An
 * execve from a forked Python process spends ~2 ms tearing down the
 * interpreter's address space; from this program it costs almost nothing,
 * and a waiting container costs kilobytes instead of megabytes.
 *
 * Protocol, on fd 3 (a Unix stream socket from the container init):
 *   u32 length (little endian), then `length` bytes; the 3 descriptors
 *   (stdin, stdout, stderr) ride with the first byte (SCM_RIGHTS).
 *   body: u32 argc, argc NUL-terminated strings;
 *         u32 envc, envc NUL-terminated strings ("K=V");
 *         one NUL-terminated string: the working directory;
 *         u32 nlimits, nlimits x (u32 resource, u64 value): soft = hard = value.
 * On a failure before execve it writes one line to the job's stderr and
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
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#define CTRL_FD 3
#define MAX_BODY (64u << 20)

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

int main(void) {
    uint32_t len;
    int fds[3] = {-1, -1, -1};
    union { struct cmsghdr h; char buf[CMSG_SPACE(sizeof fds)]; } anc;
    struct iovec iov = {&len, sizeof len};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1,
                        .msg_control = anc.buf, .msg_controllen = sizeof anc.buf};
    ssize_t r;
    do r = recvmsg(CTRL_FD, &mh, MSG_WAITALL); while (r < 0 && errno == EINTR);
    if (r == 0) _exit(0); /* the container was destroyed unused */
    if (r != (ssize_t)sizeof len) fail("reading the job header");
    struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
    if (!cm || cm->cmsg_type != SCM_RIGHTS || cm->cmsg_len != CMSG_LEN(sizeof fds)) {
        errno = EPROTO;
        fail("job message without its 3 descriptors");
    }
    memcpy(fds, CMSG_DATA(cm), sizeof fds);
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
