/* clone_probe MODE [FLAGS]: the ways a process makes processes and threads.
 *
 *   fork            fork() (glibc uses clone, or clone3 first on new glibc)
 *   thread          pthread_create + join (glibc tries clone3, falls back to clone)
 *   spawn           posix_spawn of /bin/true (clone(CLONE_VM|CLONE_VFORK) after clone3)
 *   clone FLAGS     raw clone(FLAGS|SIGCHLD); the child exits at once
 *   clone3 FLAGS    raw clone3 with those flags
 *   unshare FLAGS   raw unshare(FLAGS)
 * Output: "ok" or "errno=E"; exit status 0 unless the probe itself broke.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/sched.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static void *thread_main(void *arg) { return arg; }

static int reap(pid_t pid) {
    int status;
    if (waitpid(pid, &status, __WALL) != pid) return errno;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    const char *mode = argv[1];
    unsigned long flags = argc > 2 ? strtoull(argv[2], NULL, 0) : 0;
    long ret;

    if (strcmp(mode, "fork") == 0) {
        pid_t pid = fork();
        if (pid == 0) _exit(0);
        if (pid < 0) { printf("errno=%d\n", errno); return 0; }
        printf(reap(pid) == 0 ? "ok\n" : "child failed\n");
    } else if (strcmp(mode, "thread") == 0) {
        pthread_t t;
        int err = pthread_create(&t, NULL, thread_main, NULL);
        if (err) { printf("errno=%d\n", err); return 0; }
        pthread_join(t, NULL);
        printf("ok\n");
    } else if (strcmp(mode, "spawn") == 0) {
        pid_t pid;
        char *child_argv[] = {"true", NULL};
        int err = posix_spawn(&pid, "/bin/true", NULL, NULL, child_argv, environ);
        if (err) { printf("errno=%d\n", err); return 0; }
        printf(reap(pid) == 0 ? "ok\n" : "child failed\n");
    } else if (strcmp(mode, "clone") == 0) {
        ret = syscall(SYS_clone, flags | SIGCHLD, 0, 0, 0, 0);
        if (ret == 0) syscall(SYS_exit_group, 0);
        if (ret < 0) { printf("errno=%d\n", errno); return 0; }
        printf(reap((pid_t)ret) == 0 ? "ok\n" : "child failed\n");
    } else if (strcmp(mode, "clone3") == 0) {
        struct clone_args args;
        memset(&args, 0, sizeof args);
        args.flags = flags;
        args.exit_signal = SIGCHLD;
        ret = syscall(SYS_clone3, &args, sizeof args);
        if (ret == 0) syscall(SYS_exit_group, 0);
        if (ret < 0) { printf("errno=%d\n", errno); return 0; }
        printf(reap((pid_t)ret) == 0 ? "ok\n" : "child failed\n");
    } else if (strcmp(mode, "unshare") == 0) {
        ret = syscall(SYS_unshare, flags);
        if (ret < 0) printf("errno=%d\n", errno);
        else printf("ok\n");
    } else {
        return 2;
    }
    return 0;
}
