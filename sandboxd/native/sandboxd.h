/* sandboxd-init: what its files share (see init.c for why the program exists at all).
 *
 * One static binary, three roles, built from these files (sandboxd/native/__init__.py
 * compiles every *.c here in one cc call):
 *   forkserver.c  the fork server (``--forkserver``) and main;
 *   init.c        the container init: carries out the plan, serves the supervisor;
 *   jobproc.c     the job process: drops everything, waits for its job, execs it;
 *   plan.c        the plan reader and its op interpreter (the op table is below);
 *   mounts.c      the filesystem ops (mount, mkdir, pivot_root...);
 *   landlock.c    the Landlock ruleset (built by the init, enforced by the job process);
 *   net.c         the loopback interface;
 *   msgpack.c     the small msgpack reader and writer of the supervisor's channel;
 *   channel.c     that channel's frames (sandboxd/channel.py's framing);
 *   boxfiles.c    the job's files in /box: written before the job, collected after.
 *
 * The contract with the Python side: the op table (``SANDBOXD_OPS``, mirrored by
 * sandboxd/isolation/initplan.py's ``OPS``), the plan's magic and the clone flags
 * (sandboxd/spawn.py's ``CLONE_FLAGS``). ``sandboxd-init --contract`` prints them
 * and tests/unit/isolation/test_native_contract.py holds both sides to each other.
 */
#ifndef SANDBOXD_H
#define SANDBOXD_H

#define _GNU_SOURCE
#include <sched.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#define CTRL_FD 3 /* the init's channel to the supervisor */
#define PLAN_FD 4 /* the init's plan, until it has read it */
#define PROCS_FD 5 /* the job cgroup's cgroup.procs files, when the supervisor lends them */
#define MAX_PROCS_FDS 8
#define JOB_FD 3  /* the job process's socket to the init */
#define MAX_FRAME (1u << 30)
#define PLAN_MAGIC 0x50444253u /* "SBDP" */
#define PLAN_VERSION 3u

/* The namespaces every container is cloned into (container.CLONE_FLAGS). */
#define SANDBOXD_CLONE_FLAGS (CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWNET | \
                              CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWCGROUP)

/* Every element of the plan is an op (bubblewrap's shape), carried out in order:
 * X(enum name, code, wire name, fields). Fields, one character each: ``s`` a string,
 * ``i`` a u64, ``b`` bytes (a string that may hold NULs), ``W`` and ``H`` the strings
 * that name the step and hint at a fix when it fails. Codes are the wire's, never
 * reused. */
#define SANDBOXD_OPS(X)                                                         \
    X(OP_END, 0, "end", "")                                                     \
    X(OP_MKDIRS, 1, "mkdirs", "s")                                              \
    X(OP_TOUCH, 2, "touch", "s")                                                \
    X(OP_MOUNT, 3, "mount", "ssssiWH")  /* source target fstype data flags */   \
    X(OP_REMOUNT_RO, 4, "remount_ro", "siWH") /* path, extra flags */           \
    X(OP_SYMLINK, 5, "symlink", "ss")   /* target, path */                      \
    X(OP_FILE, 6, "file", "sib")        /* path, mode, content */               \
    X(OP_CHDIR, 7, "chdir", "sWH")                                              \
    X(OP_LOCK, 8, "lock", "sWH")        /* a shared flock, held until unlock */ \
    X(OP_UNLOCK, 9, "unlock", "")                                               \
    X(OP_MKDIR, 10, "mkdir", "si")      /* path, mode */                        \
    X(OP_PIVOT, 11, "pivot", "s")       /* the new root */                      \
    X(OP_HOSTNAME, 12, "hostname", "s")                                         \
    X(OP_LOOPBACK, 13, "loopback", "")  /* lo up */                             \
    X(OP_LANDLOCK, 14, "landlock", "ii") /* handled_access_fs, scoped */       \
    X(OP_LANDLOCK_RULE, 15, "landlock_rule", "si") /* path, access */          \
    X(OP_JOB_PROCESS, 16, "job_process", "iib") /* uid, gid, seccomp program */ \
    X(OP_TEMPLATE_END, 17, "template_end", "") /* the ops before it build the template */ \
    X(OP_HOLLOW_PROC, 18, "hollow_proc", "s") /* a proc of an emptied PID namespace */

enum op {
#define SANDBOXD_OP_ENUM(id, code, name, fields) id = code,
    SANDBOXD_OPS(SANDBOXD_OP_ENUM)
#undef SANDBOXD_OP_ENUM
};

#define MAX_OP_FIELDS 8

struct op_info { unsigned code; const char *name, *fields; };
extern const struct op_info op_table[];
extern const size_t op_count;

/* ------------------------------------------------------------ errors */

/* Why the current step failed: failf records it and returns -1, the caller reports it. */
extern char errmsg[4096];
int failf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
_Noreturn void die(const char *what);

/* ------------------------------------------------------------ msgpack.c */

struct buf { unsigned char *p; size_t len, cap; };
void put(struct buf *b, const void *d, size_t n);
void mp_map(struct buf *b, uint32_t n);
void mp_str(struct buf *b, const char *s, size_t n);
void mp_cstr(struct buf *b, const char *s);
void mp_bin(struct buf *b, const void *d, size_t n);
/* A bin's header only: its n bytes follow from elsewhere (send_parts). */
void mp_bin_head(struct buf *b, size_t n);
void mp_int(struct buf *b, int64_t v);
void mp_float(struct buf *b, double d);

enum { T_BAD, T_NIL, T_BOOL, T_INT, T_FLOAT, T_STR, T_BIN, T_ARR, T_MAP, T_EXT };
struct rd { const unsigned char *p, *end; };
int mp_next(struct rd *r, uint64_t *n, const unsigned char **data);
int mp_skip(struct rd *r, int depth);
int key_is(const unsigned char *k, uint64_t n, const char *want);

/* ------------------------------------------------------------ channel.c */

int send_frame(struct buf *m, const int *fds, int nfds);
/* One frame made of ``n`` parts sent as they are (a large body not copied into a buf). */
int send_parts(struct iovec *parts, int n);
void send_error(const char *where, const char *message);
ssize_t recv_frame(unsigned char **out, int *fds, int maxfds, int *nfds);

/* ------------------------------------------------------------ plan.c */

struct plan { const unsigned char *base, *p, *end; }; /* base: the buffer, magic first */
/* One op's fields, in the order of its signature; strings are NUL-terminated in place. */
struct op_arg { const char *s; uint32_t len; uint64_t i; };
/* The state the ops build up, which outlives the plan. */
struct job { pid_t pid; int pidfd, sock; };
/* How an init meets a plan with a template (the ops before ``template_end``): its fork
 * server built the template once, as host root, and cloned the init from it (COPY: the
 * init skips those ops); BUILD: the fork server's builder carries them out and stops. */
enum template_mode { TEMPLATE_NONE, TEMPLATE_COPY, TEMPLATE_BUILD };
struct setup {
    enum template_mode template;
    int nprocs;        /* cgroup.procs files on PROCS_FD.. to move the job process into */
    int lock, ruleset; /* -1 when none */
    int started;       /* the job process exists */
    uid_t uid;         /* the job's ids, owner of the files the init writes to /box */
    gid_t gid;
    struct job job;
};
int read_plan(struct plan *pl);
int read_plan_fd(int fd, struct plan *pl);
size_t plan_template_len(const struct plan *pl);
int run_plan(struct plan *pl, struct setup *st);

/* ------------------------------------------------------------ mounts.c */

int mounts_op(unsigned op, const struct op_arg *a, struct setup *st);

/* ------------------------------------------------------------ landlock.c */

int landlock_ruleset(uint64_t handled_access_fs, uint64_t scoped);
int landlock_rule(int ruleset, const char *path, uint64_t access);
int landlock_enforce(int ruleset);

/* ------------------------------------------------------------ net.c */

int loopback_up(void);

/* ------------------------------------------------------------ jobproc.c */

/* The job process's report of a fault of its own (not the job's), read by the init once
 * the job process exited JOB_FAULT_EXIT: three NUL-terminated strings, the step, the
 * errno's name and the message. */
#define JOB_FAULT_EXIT 126
/* A warm runtime's request (jobproc.c): its length's top bit; and the byte its bootstrap
 * sends on the socket once it waits for the job (sandboxd/runtimes/). */
#define WARM_FLAG 0x80000000u
#define WARM_READY 0x06
#define JOB_FAULT_MAX 1024
_Noreturn void job_process_main(uid_t uid, gid_t gid, int ruleset, const char *bpf,
                                size_t bpf_len);

/* ------------------------------------------------------------ boxfiles.c */

struct files { struct buf out; uint64_t count, total, max_bytes, max_files; };
int write_files(struct rd *r, uint64_t count, uid_t uid, gid_t gid);
int collect(const char *dir, struct files *f, int depth);

/* ------------------------------------------------------------ init.c */

int start_job_process(uid_t uid, gid_t gid, const char *bpf, size_t bpf_len, struct setup *st);
int init_main(enum template_mode template, int nprocs);

#endif
