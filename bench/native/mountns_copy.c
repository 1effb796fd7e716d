/* The CPU of one container's mount-namespace copy, by the number of mounts copied
 * (bench/bench_mountns.py builds and runs it): N children, each unsharing a user and a
 * mount namespace from ours, making it a slave (as every init does) and exiting (its
 * copy torn down). Arguments after N: mounts to detach from a namespace of our own
 * first, as the fork server does with /sys (native/forkserver.c). Prints one JSON line. */
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
int main(int argc, char **argv) {
    int n = atoi(argv[1]);
    /* argv[2..]: paths to detach in our own namespace first */
    if (argc > 2) {
        if (unshare(CLONE_NEWNS)) { perror("unshare"); return 1; }
        if (mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL)) { perror("rslave"); return 1; }
        for (int i = 2; i < argc; i++) if (umount2(argv[i], MNT_DETACH)) perror(argv[i]);
    }
    FILE *f = fopen("/proc/self/mountinfo", "r"); int lines = 0; char buf[4096];
    while (fgets(buf, sizeof buf, f)) lines++;
    fclose(f);
    struct timespec t0, t1; clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < n; i++) {
        pid_t p = fork();
        if (p == 0) {
            if (unshare(CLONE_NEWUSER | CLONE_NEWNS)) _exit(1);
            if (mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL)) _exit(2);
            _exit(0);
        }
        int st; waitpid(p, &st, 0);
        if (st) { fprintf(stderr, "child %d\n", st); return 1; }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    struct rusage ru; getrusage(RUSAGE_CHILDREN, &ru);
    double cpu = ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
    printf("{\"mounts\": %d, \"cpu_us\": %.1f, \"wall_us\": %.1f}\n", lines,
           cpu / n * 1e6, ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / n / 1e3);
    return 0;
}
