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
 * Three roles, one static binary, one exec (of the fork server) per daemon
 * (sandboxd.h lists the files):
 * - the fork server (forkserver.c; ``--forkserver``, started by the zygote, or by
 *   run-once): clones each container straight into its namespaces, copying only
 *   itself, and writes the child's id maps;
 * - the init (this file): the clone's child, the namespace's root, PID 1; it carries
 *   out the plan (plan.c: mounts, hostname, lo, the Landlock ruleset, the job process),
 *   and serves the supervisor's channel. Its descriptors:
 *     3 the control channel to the supervisor (channel.c: a 4-byte big-endian length,
 *       a msgpack map; descriptors ride with the first byte);
 *     4 the plan (its layout: sandboxd/isolation/initplan.py);
 * - the job process (jobproc.c): the init's fork; it drops everything and waits for
 *   the job, then execs it (the first exec since the fork server's).
 *
 * Messages, as spawn.py documents them: to the supervisor "ready" (+ the job
 * process's pidfd), "warmed", "started" (if the job runs past STARTED_AFTER_MS), "exited",
 * "files", "error" (where, message; from
 * the job process's own faults also step and errno); from it "warm" (a warm runtime's
 * request, and "boot": optional bytes passed on after it on the job process's socket, for
 * the started interpreter to read; + stdin, stdout, stderr: optional, once, before the
 * job), "job" (files, the
 * job process's exec request, + stdin, stdout, stderr, or none after "warm") and
 * "collect". A "job" with "capture" (and its "stdin" as bytes) comes without descriptors:
 * the init makes the job's stdio, reads its output (watch_captured) and sends it in
 * "exited".
 */
#include "sandboxd.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* How long a job runs before the init reports its start ("started"; see serve). */
#define STARTED_AFTER_MS 2

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

/* The plan's job_process op: fork the job process, which drops everything and waits for
 * the job (jobproc.c), with the plan's job ids, seccomp program and the ruleset built so
 * far; keep our end of its socket and a pidfd for the supervisor. */
int start_job_process(uid_t uid, gid_t gid, const char *bpf, size_t bpf_len, struct setup *st) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv))
        return failf("socketpair: %s", strerror(errno));
    int ruleset = st->ruleset;
    pid_t pid = fork();
    if (pid == 0) {
        /* Its socket on JOB_FD (over the supervisor's channel), the ruleset on 4, nothing
         * else. Until the socket is in place a fault cannot be reported on it. */
        if (dup2(sv[1], JOB_FD) < 0 || (ruleset >= 0 && dup2(ruleset, 4) < 0)) {
            dprintf(2, "sandboxd-jobexec: dup2: %s\n", strerror(errno));
            _exit(JOB_FAULT_EXIT);
        }
        syscall(SYS_close_range, ruleset >= 0 ? 5u : 4u, ~0u, 0u);
        job_process_main(uid, gid, ruleset >= 0 ? 4 : -1, bpf, bpf_len);
    }
    close(sv[1]);
    if (pid < 0) { close(sv[0]); return failf("fork: %s", strerror(errno)); }
    /* Into the job's cgroup (each hierarchy's cgroup.procs, the freezer's first), where
     * the supervisor lent them: the pid is read in our PID namespace, the permission
     * is the opener's (host root's), and the files go before anything else runs here.
     * So the supervisor writes nothing per container, and waits for no RCU grace
     * period (docs/isolation.md, "Who is in the job's cgroup"). */
    for (int i = 0; i < st->nprocs; i++) {
        if (dprintf(PROCS_FD + i, "%d", (int)pid) < 0) {
            int e = errno;
            kill(pid, SIGKILL);
            return failf("moving the job process into its cgroup: %s", strerror(e));
        }
        close(PROCS_FD + i);
    }
    st->started = 1;
    st->uid = uid;
    st->gid = gid;
    st->job.pid = pid;
    st->job.sock = sv[0];
    st->job.pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (st->job.pidfd < 0) return failf("pidfd_open: %s", strerror(errno));
    return 0;
}

static int setup(struct setup *st) {
    struct plan pl;
    if (read_plan(&pl)) return -1;
    /* After the last credential change (the clone's), which clears it. If the zygote is gone
     * already, the supervisor is too, or will see this container's channel fail. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0)) return failf("death signal: %s", strerror(errno));
    return run_plan(&pl, st);
}

static double monotonic(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Pass the job process's fault report (jobproc.c's ``fault``), if it made one, to the
 * supervisor as a typed error: the sandbox failed, not the job (sandbox_error). Costs a
 * system call only when the job process exited JOB_FAULT_EXIT or would not take its job.
 * Returns 1 if there was a report. */
static int report_job_fault(int sock) {
    char rep[JOB_FAULT_MAX];
    ssize_t n = recv(sock, rep, sizeof rep, MSG_DONTWAIT);
    if (n <= 0) return 0; /* none: the job itself exited JOB_FAULT_EXIT */
    const char *field[3];
    size_t at = 0;
    for (int i = 0; i < 3; i++) {
        const char *nul = memchr(rep + at, 0, (size_t)n - at);
        if (!nul) return 0;
        field[i] = rep + at;
        at = (size_t)(nul - rep) + 1;
        if (at >= (size_t)n && i < 2) return 0;
    }
    struct buf m = {0};
    mp_map(&m, 5);
    mp_cstr(&m, "t"); mp_cstr(&m, "error");
    mp_cstr(&m, "where"); mp_cstr(&m, "job process");
    mp_cstr(&m, "step"); mp_cstr(&m, field[0]);
    mp_cstr(&m, "errno"); mp_cstr(&m, field[1]);
    mp_cstr(&m, "message"); mp_cstr(&m, field[2]);
    send_frame(&m, NULL, 0);
    free(m.p);
    return 1;
}

/* A warm runtime was started (its request handed over): wait until its bootstrap says it
 * waits for the job (WARM_READY), or, if it ended first, pass on why (its fault report, or
 * its exit status). 0 when it is up. */
static int await_warm(struct job *job) {
    unsigned char b = 0;
    ssize_t n;
    do n = recv(job->sock, &b, 1, MSG_PEEK); while (n < 0 && errno == EINTR);
    if (n == 1 && b == WARM_READY) {
        do n = recv(job->sock, &b, 1, 0); while (n < 0 && errno == EINTR);
        return 0;
    }
    int status = 0;
    pid_t pid;
    do pid = waitpid(job->pid, &status, 0); while (pid < 0 && errno == EINTR);
    if (report_job_fault(job->sock)) return 1;
    snprintf(errmsg, sizeof errmsg, "OSError: the warm runtime ended before its job "
             "(wait status %#x)", (unsigned)status);
    send_error("warm runtime", errmsg);
    return 1;
}

/* A job whose stdio the init makes (a "job" message with "capture", the most bytes kept
 * of each of stdout and stderr, and its stdin as bytes), so that the supervisor sends one
 * message and reads one: it made two pipes and a memfd per job, gave them their owner, and
 * watched the pipes with the channel, ~30 system calls and their Python on its one thread.
 * The init reads the pipes here, keeps at most ``cap`` bytes of each (one byte more: it
 * kills the job, "output", as the supervisor did), and sends them in "exited". */
struct capture {
    int on, killed;
    uint64_t cap;
    int fd[2];         /* read ends of stdout, stderr; -1 once at EOF or cut */
    int trunc[2];
    struct buf data[2];
    /* With "order" (the HTTP front door's Piston and Judge0 answers, which merge stdout
     * and stderr as they came): the order of the reads, as runs of one stream, each 5
     * bytes (the stream, 0 or 1, then the run's length, big-endian); consecutive reads of
     * one stream make one run. At most ORDER_RUNS runs: past them, "order_cut" (the rest
     * of each stream follows, stdout's first). */
    int order_on, order_cut, last;
    uint64_t runs;
    struct buf order;
};

#define ORDER_RUNS (1u << 20) /* 5 MiB at most, for output whose streams alternate */

static uint32_t be32(const unsigned char *b) {
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

static void put_be32(unsigned char *b, uint32_t v) {
    b[0] = (unsigned char)(v >> 24); b[1] = (unsigned char)(v >> 16);
    b[2] = (unsigned char)(v >> 8); b[3] = (unsigned char)v;
}

static void order_note(struct capture *c, int i, size_t n) {
    if (!c->order_on || c->order_cut || !n) return;
    if (c->runs && c->last == i) { /* the same stream again: its run grows */
        unsigned char *run = c->order.p + c->order.len - 5;
        if ((uint64_t)be32(run + 1) + n <= UINT32_MAX) {
            put_be32(run + 1, be32(run + 1) + (uint32_t)n);
            return;
        }
    }
    if (c->runs == ORDER_RUNS) { c->order_cut = 1; return; }
    unsigned char entry[5] = {(unsigned char)i};
    put_be32(entry + 1, (uint32_t)n);
    put(&c->order, entry, 5);
    c->runs++;
    c->last = i;
}

/* The job's stdio for a capture: stdin a memfd holding ``in`` (at offset 0), stdout and
 * stderr pipes whose write ends the job user owns (container.py's ``_give_stdio`` says
 * why); ``give`` gets the three ends for the job process, ``c`` keeps the read ends. */
static int capture_stdio(struct setup *st, struct capture *c, const unsigned char *in,
                         uint64_t in_len, int give[3]) {
    int out[2] = {-1, -1}, err[2] = {-1, -1};
    int mem = memfd_create("sandboxd-stdin", MFD_CLOEXEC);
    if (mem < 0) return failf("OSError: memfd_create: %s", strerror(errno));
    for (uint64_t done = 0; done < in_len;) {
        ssize_t w = write(mem, in + done, in_len - done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) { close(mem); return failf("OSError: writing stdin: %s", strerror(errno)); }
        done += (uint64_t)w;
    }
    if (lseek(mem, 0, SEEK_SET) < 0 || pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC) ||
        fchown(out[1], st->uid, st->gid) || fchown(err[1], st->uid, st->gid)) {
        int e = errno;
        close(mem);
        for (int i = 0; i < 2; i++) {
            if (out[i] >= 0) close(out[i]);
            if (err[i] >= 0) close(err[i]);
        }
        return failf("OSError: the job's stdio: %s", strerror(e));
    }
    give[0] = mem; give[1] = out[1]; give[2] = err[1];
    c->fd[0] = out[0]; c->fd[1] = err[0];
    return 0;
}

/* Read what stream ``i`` holds now (poll said so); at EOF, or past the cap, stop reading
 * it. Past the cap the job is killed: every process of our PID namespace but us. */
static void capture_read(struct capture *c, int i) {
    unsigned char chunk[65536];
    ssize_t n;
    do n = read(c->fd[i], chunk, sizeof chunk); while (n < 0 && errno == EINTR);
    if (n > 0) {
        uint64_t room = c->cap - c->data[i].len;
        if ((uint64_t)n <= room) {
            put(&c->data[i], chunk, (size_t)n);
            order_note(c, i, (size_t)n);
            return;
        }
        put(&c->data[i], chunk, (size_t)room);
        order_note(c, i, (size_t)room);
        c->trunc[i] = 1;
        if (!c->killed) { c->killed = 1; kill(-1, SIGKILL); }
    }
    close(c->fd[i]);
    c->fd[i] = -1;
}

/* Receive the next message, "warm" (a warm runtime to start, with its stdio) or "job"
 * (files, the exec request, and its stdio unless a warm runtime has it already); hand the
 * request over to the job process. *kind is 'w' or 'j'; 0 on EOF (the supervisor gave up
 * on this container), 1 when it failed (reported), 2 when handed over (*t0 its time). */
static int deliver(struct setup *st, int warmed, int *kind, double *t0, struct capture *cap) {
    struct job *job = &st->job;
    unsigned char *frame = NULL;
    int fds[3], nfds;
    ssize_t len = recv_frame(&frame, fds, 3, &nfds);
    if (len == 0) return 0;
    if (len < 0) { send_error("job delivery", strerror(errno)); return 1; }
    struct rd r = {frame, frame + len};
    uint64_t n, count = 0;
    const unsigned char *k, *req = NULL, *files = NULL, *boot = NULL, *in = NULL;
    uint64_t req_len = 0, boot_len = 0, in_len = 0;
    int faulted = 0;
    *kind = 0;
    errmsg[0] = 0;
    if (mp_next(&r, &n, &k) != T_MAP) failf("ValueError: the job is not a map");
    for (uint64_t i = 0; i < n && !errmsg[0]; i++) {
        uint64_t kl, vl;
        const unsigned char *v;
        if (mp_next(&r, &kl, &k) != T_STR) { failf("ValueError: a key is not a string"); break; }
        if (key_is(k, kl, "t")) {
            if (mp_next(&r, &vl, &v) == T_STR)
                *kind = key_is(v, vl, "job") ? 'j' : key_is(v, vl, "warm") ? 'w' : 0;
        } else if (key_is(k, kl, "exec")) {
            if (mp_next(&r, &req_len, &req) != T_BIN) failf("ValueError: exec is not bytes");
        } else if (key_is(k, kl, "boot")) {
            if (mp_next(&r, &boot_len, &boot) != T_BIN) failf("ValueError: boot is not bytes");
        } else if (key_is(k, kl, "capture")) {
            if (mp_next(&r, &cap->cap, &v) != T_INT) failf("ValueError: capture is not an int");
            cap->on = 1;
        } else if (key_is(k, kl, "order")) {
            if (mp_next(&r, &vl, &v) != T_INT) failf("ValueError: order is not an int");
            cap->order_on = vl != 0;
        } else if (key_is(k, kl, "stdin")) {
            if (mp_next(&r, &in_len, &in) != T_BIN) failf("ValueError: stdin is not bytes");
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
    /* A warm runtime's request carries WARM_FLAG, a job's must not: the job process tells
     * them apart by it. */
    int flagged = req && req_len >= 4 && (req[3] & 0x80);
    if (!errmsg[0] && *kind == 'w' && (warmed || nfds != 3 || !req || files || !flagged))
        failf("ValueError: expected a warm message, once, with its request and 3 descriptors");
    if (!errmsg[0] && *kind == 'j' && (nfds != (warmed || cap->on ? 0 : 3) || !req || flagged ||
                                       boot || (cap->on && warmed) || (in && !cap->on)))
        failf("ValueError: expected a job message with its exec request and %d descriptors "
              "(none with capture, which takes stdin, and not after warm)",
              warmed || cap->on ? 0 : 3);
    if (!errmsg[0] && *kind != 'j' && (cap->on || in))
        failf("ValueError: capture and stdin are a job's");
    if (!errmsg[0] && cap->order_on && !cap->on) failf("ValueError: order is a capture's");
    if (!errmsg[0] && !*kind) failf("ValueError: expected a job or warm message");
    if (!errmsg[0] && files) {
        struct rd fr = {files, frame + len};
        mp_next(&fr, &n, &k);
        write_files(&fr, count, st->uid, st->gid);
    }
    if (!errmsg[0] && cap->on && !capture_stdio(st, cap, in, in_len, fds))
        nfds = 3; /* closed below, once handed over, as the supervisor's would be */
    if (!errmsg[0]) {
        struct iovec iov = {(void *)req, req_len};
        union { struct cmsghdr h; char buf[CMSG_SPACE(3 * sizeof(int))]; } anc;
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
        if (nfds) {
            mh.msg_control = anc.buf;
            mh.msg_controllen = sizeof anc.buf;
            struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
            cm->cmsg_level = SOL_SOCKET;
            cm->cmsg_type = SCM_RIGHTS;
            cm->cmsg_len = CMSG_LEN(3 * sizeof(int));
            memcpy(CMSG_DATA(cm), fds, 3 * sizeof(int));
        }
        *t0 = monotonic();
        ssize_t sent = sendmsg(job->sock, &mh, MSG_NOSIGNAL);
        for (size_t done = sent > 0 ? (size_t)sent : 0; sent > 0 && done < req_len;) {
            ssize_t w = send(job->sock, req + done, req_len - done, MSG_NOSIGNAL);
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) { sent = -1; break; }
            done += (size_t)w;
        }
        /* A warm runtime's bootstrap, if the supervisor sends its code this way: after the
         * request, which the job process reads to its exact length, so that what follows
         * is the interpreter's to read once it runs. */
        for (size_t done = 0; sent > 0 && done < boot_len;) {
            ssize_t w = send(job->sock, boot + done, boot_len - done, MSG_NOSIGNAL);
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) { sent = -1; break; }
            done += (size_t)w;
        }
        if (sent < 0) { /* the job process is gone: did it say why? */
            int e = errno;
            faulted = report_job_fault(job->sock);
            if (!faulted) failf("OSError: handing the job over: %s", strerror(e));
        }
    }
    for (int i = 0; i < nfds; i++) close(fds[i]);
    free(frame);
    if (faulted) return 1;
    if (errmsg[0]) { send_error("job delivery", errmsg); return 1; }
    return 2;
}

static void send_started(double t0) {
    struct buf m = {0};
    mp_map(&m, 2);
    mp_cstr(&m, "t"); mp_cstr(&m, "started");
    mp_cstr(&m, "t0"); mp_float(&m, t0);
    send_frame(&m, NULL, 0);
    free(m.p);
}

/* "exited": the job process's wait status, the hand-over's time and the reaping's; with
 * a capture (else NULL), the output too, sent from the capture's buffers as they are (up
 * to twice the cap: not copied into the message once more). */
static void send_exited(int status, double t0, double t1, const struct capture *c) {
    struct buf m = {0}, mid = {0}, end = {0};
    mp_map(&m, c ? (c->order_on ? 11 : 9) : 4);
    mp_cstr(&m, "t"); mp_cstr(&m, "exited");
    mp_cstr(&m, "status"); mp_int(&m, status);
    mp_cstr(&m, "t0"); mp_float(&m, t0);
    mp_cstr(&m, "t1"); mp_float(&m, t1);
    if (!c) {
        send_frame(&m, NULL, 0);
        free(m.p);
        return;
    }
    mp_cstr(&m, "stdout"); mp_bin_head(&m, c->data[0].len);
    mp_cstr(&mid, "stderr"); mp_bin_head(&mid, c->data[1].len);
    mp_cstr(&end, "stdout_truncated"); mp_int(&end, c->trunc[0]);
    mp_cstr(&end, "stderr_truncated"); mp_int(&end, c->trunc[1]);
    mp_cstr(&end, "output_killed"); mp_int(&end, c->killed);
    if (c->order_on) {
        mp_cstr(&end, "order"); mp_bin(&end, c->order.p, c->order.len);
        mp_cstr(&end, "order_cut"); mp_int(&end, c->order_cut);
    }
    struct iovec parts[5] = {{m.p, m.len}, {c->data[0].p, c->data[0].len}, {mid.p, mid.len},
                             {c->data[1].p, c->data[1].len}, {end.p, end.len}};
    send_parts(parts, 5);
    free(m.p);
    free(mid.p);
    free(end.p);
}

/* A captured job (``struct capture``), handed over at ``t0``: read its output while it runs,
 * report "started" as serve does, and, once the job process is reaped, kill what it left
 * in our PID namespace (the supervisor's own kill, through the cgroup, follows "exited" as
 * for any job), read the pipes to their end (every writer is dead: promptly; 2 s at most,
 * as the supervisor allowed) and send "exited" with the output. 0, or 1 when failed
 * (reported). */
static int watch_captured(struct setup *st, struct capture *c, double t0) {
    struct job *job = &st->job;
    int status = 0, reaped = 0, started = 0;
    double t1 = 0, until = 0;
    for (;;) {
        double now = monotonic();
        int timeout = -1;
        if (reaped) {
            if (c->fd[0] < 0 && c->fd[1] < 0) break;
            if (now >= until) break; /* a pipe held open past its writers: give up on it */
            timeout = (int)((until - now) * 1000) + 1;
        } else if (!started) {
            double left = t0 + STARTED_AFTER_MS / 1000.0 - now;
            timeout = left > 0 ? (int)(left * 1000) + 1 : 0;
        }
        struct pollfd p[3] = {{reaped ? -1 : job->pidfd, POLLIN, 0},
                              {c->fd[0], POLLIN, 0}, {c->fd[1], POLLIN, 0}};
        int n = poll(p, 3, timeout);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            snprintf(errmsg, sizeof errmsg, "OSError: poll: %s", strerror(errno));
            send_error("watching the job", errmsg);
            return 1;
        }
        if (n == 0 && !reaped && !started) {
            started = 1;
            send_started(t0);
            continue;
        }
        for (int i = 0; i < 2; i++)
            if (c->fd[i] >= 0 && p[i + 1].revents) capture_read(c, i);
        if (reaped || !p[0].revents) continue;
        for (;;) { /* the job process, and any orphans of its that ended before it */
            int s;
            pid_t pid = waitpid(-1, &s, WNOHANG);
            if (pid < 0 && errno == EINTR) continue;
            if (pid < 0 && errno != ECHILD) {
                snprintf(errmsg, sizeof errmsg, "ChildProcessError: %s", strerror(errno));
                send_error("reaping the job process", errmsg);
                return 1;
            }
            if (pid <= 0) break;
            if (pid == job->pid) {
                t1 = monotonic();
                status = s;
                reaped = 1;
            }
        }
        if (!reaped) continue;
        if (WIFEXITED(status) && WEXITSTATUS(status) == JOB_FAULT_EXIT &&
            report_job_fault(job->sock))
            return 1;
        close(job->sock);
        kill(-1, SIGKILL);
        until = monotonic() + 2.0;
    }
    while (waitpid(-1, NULL, WNOHANG) > 0) {} /* what died of our kill by now */
    for (int i = 0; i < 2; i++)
        if (c->fd[i] >= 0) close(c->fd[i]);
    send_exited(status, t0, t1, c);
    return 0;
}

/* A job whose stdio the supervisor gave (it reads the output): report "started" if it
 * runs past STARTED_AFTER_MS, reap everything until the job process, report its end. 0,
 * or 1 when failed (reported). */
static int watch_plain(struct setup *st, double t0) {
    struct job *job = &st->job;
    /* "started" only for a job still running STARTED_AFTER_MS after the hand-over: a
     * shorter one gets "exited" alone (it carries t0 too), so the supervisor wakes once
     * for it, not twice (it did for 95 % of /bin/true jobs). The supervisor's wall
     * deadline counts from its own send until "started" comes, a little earlier. */
    struct pollfd job_end = {job->pidfd, POLLIN, 0};
    int polled;
    do polled = poll(&job_end, 1, STARTED_AFTER_MS); while (polled < 0 && errno == EINTR);
    if (polled == 0) send_started(t0);
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
            if (WIFEXITED(status) && WEXITSTATUS(status) == JOB_FAULT_EXIT &&
                report_job_fault(job->sock))
                return 1;
            close(job->sock);
            send_exited(status, t0, t1, NULL);
            return 0;
        }
    }
}

/* The one job (after a warm runtime, if the supervisor starts one first): write its files,
 * hand the job process its exec request and stdio, report the hand-over and the job
 * process's end; then the files, if the supervisor asks. */
static int serve(struct setup *st) {
    struct job *job = &st->job;
    unsigned char *frame = NULL;
    int fds[3], nfds, kind = 0, warmed = 0;
    double t0 = 0;
    struct capture cap = {.fd = {-1, -1}};
    for (;;) {
        int got = deliver(st, warmed, &kind, &t0, &cap);
        if (got != 2) return got;
        if (kind == 'j') break;
        if (await_warm(job)) return 1;
        warmed = 1;
        struct buf w = {0};
        mp_map(&w, 1);
        mp_cstr(&w, "t"); mp_cstr(&w, "warmed");
        send_frame(&w, NULL, 0);
        free(w.p);
    }
    int watched = cap.on ? watch_captured(st, &cap, t0) : watch_plain(st, t0);
    for (int i = 0; i < 2; i++) free(cap.data[i].p);
    free(cap.order.p);
    if (watched) return watched;
    /* The supervisor kills what is left, then may ask for the files the job made. */
    struct buf m = {0};
    ssize_t len = recv_frame(&frame, fds, 0, &nfds);
    if (len <= 0) return 0;
    struct rd r = {frame, frame + len};
    uint64_t n;
    const unsigned char *k;
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

/* The init proper: descriptors 3 and 4 in place, root of the container's user namespace;
 * ``template``: TEMPLATE_COPY when its mount namespace is a copy of its plan's template. */
int init_main(enum template_mode template, int nprocs) {
    prctl(PR_SET_NAME, "sandboxd-init", 0, 0, 0);
    /* The fork server ignores SIGCHLD (the kernel reaps its inits; an init must reap) and
     * SIGPIPE, and has every other signal at its default (forkserver.c). */
    struct sigaction dfl = {.sa_handler = SIG_DFL};
    sigaction(SIGCHLD, &dfl, NULL);
    sigaction(SIGPIPE, &dfl, NULL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    struct setup st = {.template = template, .nprocs = nprocs, .lock = -1, .ruleset = -1,
                       .job = {0, -1, -1}};
    if (setup(&st)) {
        char msg[sizeof errmsg + 16];
        snprintf(msg, sizeof msg, "OSError: %s", errmsg);
        send_error("container setup", msg);
        return 1;
    }
    struct buf m = {0};
    mp_map(&m, 2);
    mp_cstr(&m, "t"); mp_cstr(&m, "ready");
    mp_cstr(&m, "job_pid"); mp_int(&m, st.job.pid);
    if (send_frame(&m, &st.job.pidfd, 1)) return 0; /* the supervisor is gone */
    free(m.p); /* our pidfd stays open: serve polls it for the job process's end */
    return serve(&st);
}
