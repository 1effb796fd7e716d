/* Landlock: the init builds the ruleset from the plan's rules (sandboxd/isolation/
 * landlock.py's plan_rules, opened as paths of the new root); the job process enforces it
 * on itself, after no_new_privs and before seccomp (docs/isolation.md, step 10). */
#include "sandboxd.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SYS_landlock_create_ruleset
#define SYS_landlock_create_ruleset 444
#define SYS_landlock_add_rule 445
#endif
#ifndef SYS_landlock_restrict_self
#define SYS_landlock_restrict_self 446
#endif

struct landlock_ruleset_attr_v6 { uint64_t handled_access_fs, handled_access_net, scoped; };
struct landlock_path_beneath_attr_ {
    uint64_t allowed_access;
    int32_t parent_fd;
} __attribute__((packed));

/* A new ruleset, or -1 with errmsg set. */
int landlock_ruleset(uint64_t handled_access_fs, uint64_t scoped) {
    struct landlock_ruleset_attr_v6 attr = {handled_access_fs, 0, scoped};
    int fd = (int)syscall(SYS_landlock_create_ruleset, &attr, sizeof attr, 0);
    return fd < 0 ? failf("landlock_create_ruleset: %s", strerror(errno)) : fd;
}

/* `access` beneath `path`; on failure the ruleset is closed and errmsg set. */
int landlock_rule(int ruleset, const char *path, uint64_t access) {
    struct landlock_path_beneath_attr_ rule = {access, -1};
    rule.parent_fd = open(path, O_PATH | O_CLOEXEC);
    if (rule.parent_fd < 0) {
        close(ruleset);
        return failf("landlock: cannot open %s for a rule: %s", path, strerror(errno));
    }
    if (syscall(SYS_landlock_add_rule, ruleset, 1 /* PATH_BENEATH */, &rule, 0)) {
        int e = errno;
        close(rule.parent_fd);
        close(ruleset);
        return failf("landlock_add_rule on %s (access %#llx): %s", path,
                     (unsigned long long)access, strerror(e));
    }
    close(rule.parent_fd);
    return 0;
}

/* Restrict the calling process (no_new_privs set already), then close the ruleset. */
int landlock_enforce(int ruleset) {
    if (syscall(SYS_landlock_restrict_self, ruleset, 0)) return -1;
    close(ruleset);
    return 0;
}
