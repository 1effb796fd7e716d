/* escape ATTEMPT CANARY: try one way out of the container towards the host file CANARY.
 *
 * Prints one line: "ATTEMPT: blocked STEP errno=NAME" when the kernel refused
 * a step, or "ATTEMPT: ESCAPED ..." when the way was open (then, for reads, the
 * first bytes it got: the test looks for the canary's token in every output).
 * Never writes to anything outside /box and /tmp: a write attempt on a host
 * file stops at a successful open, which is reported as ESCAPED.
 *
 * Attempts: path dotdot symlink symlink-proc hardlink hardlink-host proc-root
 * proc-cwd proc-self-root handle chroot mount bind-mount pivot-root mount-api
 * cgroup-mount cgroupfs-write sysfs userns-unshare userns-clone setns-own setns-init
 * ptrace process-vm mknod devices proc-exe-write proc-exe-init self-exe-write
 * host-binary-write core-pattern setuid capset.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/sched.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *attempt;

static int blocked(const char *step) {
    int e = errno;
    printf("%s: blocked %s errno=%s\n", attempt, step, strerrorname_np(e) ? strerrorname_np(e) : "?");
    return 0;
}

static int escaped(const char *what) {
    printf("%s: ESCAPED %s\n", attempt, what);
    return 1;
}

/* Read a file the job should never reach; print what came out. */
static int read_path(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return blocked("open");
    char buf[256] = {0};
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n < 0) return blocked("read");
    printf("%s: ESCAPED read %zd bytes: %s\n", attempt, n, buf);
    return 1;
}

/* Open a host file for writing, and stop there. */
static int open_for_write(const char *path) {
    int fd = open(path, O_WRONLY | O_APPEND);
    if (fd < 0) return blocked(path);
    close(fd);
    printf("%s: ESCAPED opened %s for writing\n", attempt, path);
    return 1;
}

/* The same for each of a list; 1 if any opened. */
static int each_for_write(const char **paths, size_t n) {
    int any = 0;
    for (size_t i = 0; i < n; i++) any |= open_for_write(paths[i]);
    return any;
}

static int no_such(const char *path) {
    struct stat st;
    if (stat(path, &st) < 0) return blocked("stat");
    return escaped(path);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: escape ATTEMPT CANARY\n");
        return 2;
    }
    attempt = argv[1];
    const char *canary = argv[2];
    char path[8192];
    setvbuf(stdout, NULL, _IONBF, 0);

    if (!strcmp(attempt, "path")) return read_path(canary);
    if (!strcmp(attempt, "dotdot")) {
        snprintf(path, sizeof path, "/box/../../../../../../../../..%s", canary);
        return read_path(path);
    }
    if (!strcmp(attempt, "symlink")) {
        if (symlink(canary, "/box/link")) return blocked("symlink");
        return read_path("/box/link");
    }
    if (!strcmp(attempt, "symlink-proc")) {
        snprintf(path, sizeof path, "/proc/1/root%s", canary);
        if (symlink(path, "/tmp/link")) return blocked("symlink");
        return read_path("/tmp/link");
    }
    if (!strcmp(attempt, "hardlink")) {
        if (link(canary, "/box/hard")) return blocked("link");
        return read_path("/box/hard");
    }
    if (!strcmp(attempt, "hardlink-host")) {
        /* A host file that *is* visible (read-only bind): a link would be a writable name. */
        if (link("/etc/nsswitch.conf", "/box/hard")) return blocked("link");
        return escaped("linked a host file into /box");
    }
    if (!strcmp(attempt, "proc-root")) {
        snprintf(path, sizeof path, "/proc/1/root%s", canary);
        return read_path(path);
    }
    if (!strcmp(attempt, "proc-cwd")) {
        snprintf(path, sizeof path, "/proc/1/cwd/../../../..%s", canary);
        return read_path(path);
    }
    if (!strcmp(attempt, "proc-self-root")) {
        snprintf(path, sizeof path, "/proc/self/root/../../../..%s", canary);
        return read_path(path);
    }
    if (!strcmp(attempt, "handle")) {
        /* "shocker": a handle for inode 2 (an ext4 root) opened through a host-backed mount. */
        struct { unsigned int bytes; int type; unsigned char h[8]; } fh = {8, 1, {2, 0, 0, 0}};
        int mfd = open("/usr", O_RDONLY | O_DIRECTORY);
        int mount_id;
        struct { unsigned int bytes; int type; unsigned char h[128]; } probe = {128, 0, {0}};
        if (syscall(SYS_name_to_handle_at, AT_FDCWD, "/usr", &probe, &mount_id, 0) < 0)
            blocked("name_to_handle_at");
        int fd = (int)syscall(SYS_open_by_handle_at, mfd, &fh, O_RDONLY | O_DIRECTORY);
        if (fd < 0) return blocked("open_by_handle_at");
        return escaped("opened the host filesystem's root by handle");
    }
    if (!strcmp(attempt, "chroot")) {
        mkdir("/box/jail", 0700);
        int keep = open("/", O_RDONLY | O_DIRECTORY);
        if (chroot("/box/jail")) return blocked("chroot");
        if (fchdir(keep)) return blocked("fchdir");
        for (int i = 0; i < 64; i++) chdir("..");
        if (chroot(".")) return blocked("chroot-out");
        return read_path(canary);
    }
    if (!strcmp(attempt, "mount")) {
        mkdir("/box/m", 0700);
        if (mount("none", "/box/m", "tmpfs", 0, NULL)) return blocked("mount");
        return escaped("mounted a tmpfs");
    }
    if (!strcmp(attempt, "bind-mount")) {
        mkdir("/box/m", 0700);
        if (mount("/", "/box/m", NULL, MS_BIND | MS_REC, NULL)) return blocked("mount");
        return escaped("bind-mounted the root");
    }
    if (!strcmp(attempt, "pivot-root")) {
        mkdir("/box/old", 0700);
        if (syscall(SYS_pivot_root, "/box", "/box/old")) return blocked("pivot_root");
        return escaped("pivoted");
    }
    if (!strcmp(attempt, "mount-api")) {
        if (syscall(SYS_fsopen, "tmpfs", 0) >= 0) return escaped("fsopen");
        blocked("fsopen");
        if (syscall(SYS_open_tree, AT_FDCWD, "/", 1 /* OPEN_TREE_CLONE */) >= 0)
            return escaped("open_tree");
        return blocked("open_tree");
    }
    if (!strcmp(attempt, "cgroup-mount")) {
        /* CVE-2022-0492: mount cgroup v1, set release_agent, empty a cgroup. */
        mkdir("/tmp/cg", 0700);
        if (mount("cgroup", "/tmp/cg", "cgroup", 0, "rdma")
            && mount("cgroup", "/tmp/cg", "cgroup", 0, "memory"))
            return blocked("mount-cgroup");
        return escaped("mounted a cgroup v1 hierarchy");
    }
    if (!strcmp(attempt, "cgroupfs-write")) {
        const char *files[] = {"/sys/fs/cgroup/release_agent", "/sys/fs/cgroup/memory/release_agent",
                               "/sys/fs/cgroup/cgroup.procs", "/sys/fs/cgroup/memory/cgroup.procs",
                               "/proc/self/cgroup"};
        return each_for_write(files, sizeof files / sizeof *files);
    }
    if (!strcmp(attempt, "sysfs")) {
        if (no_such("/sys/kernel") == 1) return 1;
        mkdir("/tmp/sys", 0700);
        if (mount("sysfs", "/tmp/sys", "sysfs", 0, NULL)) return blocked("mount-sysfs");
        return escaped("mounted sysfs");
    }
    if (!strcmp(attempt, "userns-unshare")) {
        if (unshare(CLONE_NEWUSER | CLONE_NEWNS)) return blocked("unshare");
        return escaped("new user namespace");
    }
    if (!strcmp(attempt, "userns-clone")) {
        long pid = syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0);
        if (pid == 0) _exit(0);
        if (pid < 0) return blocked("clone");
        waitpid((pid_t)pid, NULL, 0);
        return escaped("cloned into a new user namespace");
    }
    if (!strcmp(attempt, "setns-own")) {
        int fd = open("/proc/self/ns/user", O_RDONLY);
        if (fd < 0) return blocked("open");
        if (setns(fd, 0)) return blocked("setns");
        return escaped("setns");
    }
    if (!strcmp(attempt, "setns-init")) {
        int fd = open("/proc/1/ns/mnt", O_RDONLY);
        if (fd < 0) return blocked("open");
        if (setns(fd, 0)) return blocked("setns");
        return escaped("joined the init's mount namespace");
    }
    if (!strcmp(attempt, "ptrace")) {
        if (ptrace(PTRACE_ATTACH, 1, 0, 0)) return blocked("ptrace");
        return escaped("attached to the init");
    }
    if (!strcmp(attempt, "process-vm")) {
        char buf[16];
        struct iovec local = {buf, sizeof buf}, remote = {(void *)0x400000, sizeof buf};
        if (syscall(SYS_process_vm_readv, 1, &local, 1, &remote, 1, 0) < 0)
            return blocked("process_vm_readv");
        return escaped("read the init's memory");
    }
    if (!strcmp(attempt, "mknod")) {
        if (mknod("/box/mem", S_IFCHR | 0600, makedev(1, 1)) == 0) return read_path("/box/mem");
        blocked("mknod-char");
        if (mknod("/box/disk", S_IFBLK | 0600, makedev(254, 0)) == 0) return escaped("mknod-block");
        return blocked("mknod-block");
    }
    if (!strcmp(attempt, "devices")) {
        const char *devs[] = {"/dev/mem", "/dev/kmem", "/dev/port", "/dev/vda", "/dev/sda",
                              "/dev/kmsg", "/dev/tty", "/dev/console", "/dev/mqueue",
                              "/dev/hugepages", "/dev/net/tun", "/dev/fuse", "/dev/kvm"};
        int any = 0;
        for (size_t i = 0; i < sizeof devs / sizeof *devs; i++) {
            int fd = open(devs[i], O_RDONLY);
            if (fd >= 0) { close(fd); any |= escaped(devs[i]); } else blocked(devs[i]);
        }
        /* /dev/core points at /proc/kcore, which must read as nothing. */
        int fd = open("/dev/core", O_RDONLY);
        if (fd >= 0) {
            char b[64];
            ssize_t n = read(fd, b, sizeof b);
            close(fd);
            if (n > 0) return escaped("read /proc/kcore");
        }
        return any;
    }
    if (!strcmp(attempt, "proc-exe-init")) return open_for_write("/proc/1/exe");
    if (!strcmp(attempt, "proc-exe-write")) {
        /* runc's CVE-2019-5736: an O_PATH handle on the init's binary, reopened for writing. */
        int fd = open("/proc/1/exe", O_PATH);
        if (fd < 0) return blocked("open-path");
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        return open_for_write(path);
    }
    if (!strcmp(attempt, "self-exe-write")) {
        /* Our own binary is the host's interpreter when a script runs: try python's. */
        return open_for_write("/usr/bin/python3");
    }
    if (!strcmp(attempt, "host-binary-write")) {
        const char *bins[] = {"/usr/bin/env", "/bin/sh", "/usr/lib/x86_64-linux-gnu/libc.so.6",
                              "/etc/passwd", "/etc/ld.so.cache"};
        return each_for_write(bins, sizeof bins / sizeof *bins);
    }
    if (!strcmp(attempt, "core-pattern")) {
        const char *files[] = {"/proc/sys/kernel/core_pattern", "/proc/sys/kernel/modprobe",
                               "/proc/sys/fs/binfmt_misc/register", "/proc/sys/kernel/hotplug"};
        return each_for_write(files, sizeof files / sizeof *files);
    }
    if (!strcmp(attempt, "setuid")) {
        if (setresuid(0, 0, 0) == 0) return escaped("became uid 0");
        blocked("setresuid");
        if (setgroups(0, NULL) == 0) return escaped("setgroups");
        return blocked("setgroups");
    }
    if (!strcmp(attempt, "capset")) {
        struct { unsigned int version; int pid; } hdr = {0x20080522, 0};
        struct { unsigned int eff, perm, inh; } data[2] = {{~0u, ~0u, ~0u}, {~0u, ~0u, ~0u}};
        if (syscall(SYS_capset, &hdr, data)) return blocked("capset");
        return escaped("gained capabilities");
    }
    fprintf(stderr, "escape: unknown attempt %s\n", attempt);
    return 2;
}
