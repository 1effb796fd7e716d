/* The plan: everything a container's init carries out, compiled by the zygote
 * (sandboxd/isolation/initplan.py: its layout) into a sealed memfd on PLAN_FD.
 *
 * The plan is a magic number and a list of ops, bubblewrap's shape: each op a u8 code
 * and its fields (SANDBOXD_OPS in sandboxd.h says which), read here by the op's
 * signature before the op runs, so that a corrupt plan is refused before its op does
 * anything. The ops end with ``end``, after ``job_process`` (the fork of the job process,
 * which takes the Landlock ruleset and the seccomp program with it). */
#include "sandboxd.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const struct op_info op_table[] = {
#define SANDBOXD_OP_INFO(id, code, name, fields) [code] = {code, name, fields},
    SANDBOXD_OPS(SANDBOXD_OP_INFO)
#undef SANDBOXD_OP_INFO
};
const size_t op_count = sizeof op_table / sizeof op_table[0];

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
    *len = n;
    return s;
}

/* The plan from ``fd``, in a buffer of its own (``pl->base``; ``pl->p`` past the magic,
 * which is checked); on failure nothing is left to free. */
int read_plan_fd(int fd, struct plan *pl) {
    struct stat st;
    if (fstat(fd, &st)) return failf("the plan: %s", strerror(errno));
    unsigned char *p = malloc((size_t)st.st_size + 1);
    if (!p || pread(fd, p, (size_t)st.st_size, 0) != st.st_size) {
        free(p);
        return failf("reading the plan: %s", strerror(errno));
    }
    *pl = (struct plan){p, p, p + st.st_size};
    if (plan_u64(pl) != ((uint64_t)PLAN_VERSION << 32 | PLAN_MAGIC)) {
        free(p);
        *pl = (struct plan){NULL, NULL, NULL};
        return failf("not a plan");
    }
    return 0;
}

/* The plan from PLAN_FD, which is closed. The buffer is never freed: the job process's
 * seccomp program points into it. */
int read_plan(struct plan *pl) {
    int r = read_plan_fd(PLAN_FD, pl);
    close(PLAN_FD);
    return r;
}

/* One op's code and fields (into ``a``), or -1 at the plan's end or on a corrupt op. */
static int next_op(struct plan *pl, struct op_arg *a) {
    if (pl->p >= pl->end) return failf("the plan ends without its end op");
    unsigned op = *pl->p++;
    if (op >= op_count || !op_table[op].name) return failf("unknown op %u in the plan", op);
    const char *fields = op_table[op].fields;
    for (int k = 0; fields[k]; k++) {
        if (fields[k] == 'i') a[k].i = plan_u64(pl);
        else a[k].s = plan_str(pl, &a[k].len);
    }
    if (pl->p > pl->end) return failf("the plan is corrupt (op %s)", op_table[op].name);
    return (int)op;
}

/* How many bytes of the plan, from ``pl->base``, end with its ``template_end`` op: the part
 * that builds its template, the same for every container of the shape; 0 if it has none. */
size_t plan_template_len(const struct plan *pl) {
    struct plan walk = *pl;
    struct op_arg a[MAX_OP_FIELDS];
    for (;;) {
        int op = next_op(&walk, a);
        if (op < 0 || op == OP_END) return 0;
        if (op == OP_TEMPLATE_END) return (size_t)(walk.p - pl->base);
    }
}

/* Carry out the plan's ops in order; -1 with errmsg set on the first failure. */
int run_plan(struct plan *pl, struct setup *st) {
    struct op_arg a[MAX_OP_FIELDS];
    /* A copy of the template skips the ops that built it (its fork server ran them). */
    int skipping = st->template == TEMPLATE_COPY;
    for (;;) {
        int op = next_op(pl, a);
        if (op < 0) return -1;
        if (op == OP_TEMPLATE_END) {
            if (st->template == TEMPLATE_BUILD) return 0;
            if (!skipping) return failf("the plan has a template its fork server did not build");
            skipping = 0;
            continue;
        }
        if (skipping) continue;
        /* A template holds filesystem ops only, and only a template a hollow proc. */
        int fs_op = op >= OP_MKDIRS && op <= OP_PIVOT;
        if (st->template == TEMPLATE_BUILD ? !fs_op && op != OP_HOLLOW_PROC
                                           : op == OP_HOLLOW_PROC)
            return failf("op %s out of its place (in a template: %s)", op_table[op].name,
                         st->template == TEMPLATE_BUILD ? "yes" : "no");
        if (st->started && op != OP_END)
            return failf("the plan has op %s after job_process", op_table[op].name);
        switch (op) {
        case OP_END:
            if (st->lock >= 0) close(st->lock);
            if (st->ruleset >= 0) close(st->ruleset); /* the job process has its own */
            st->lock = st->ruleset = -1;
            return st->started ? 0 : failf("the plan ends without its job_process op");
        case OP_HOSTNAME:
            if (sethostname(a[0].s, a[0].len)) return failf("sethostname: %s", strerror(errno));
            break;
        case OP_LOOPBACK:
            if (loopback_up()) return -1;
            break;
        case OP_LANDLOCK: /* handled_access_fs 0: no Landlock, and its rules are ignored */
            if (a[0].i && (st->ruleset = landlock_ruleset(a[0].i, a[1].i)) < 0) return -1;
            break;
        case OP_LANDLOCK_RULE:
            if (st->ruleset >= 0 && landlock_rule(st->ruleset, a[0].s, a[1].i)) {
                st->ruleset = -1; /* closed by landlock_rule */
                return -1;
            }
            break;
        case OP_JOB_PROCESS:
            if (start_job_process((uid_t)a[0].i, (gid_t)a[1].i, a[2].s, a[2].len, st)) return -1;
            break;
        default:
            if (mounts_op(op, a, st)) return -1;
        }
    }
}
