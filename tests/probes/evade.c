/* evade MODE [SECONDS] [N]: try to escape the time limits or outlive the job.
 *
 * Every process this starts stops by itself after SECONDS (default 5) of wall
 * time, so that a broken sandbox leaves nothing running for long; N bounds the
 * number of processes (default 8).
 *
 *   spread     fork N processes that all burn CPU; the parent burns too, then waits
 *   orphans    fork N burners, each double-forked so init inherits it; exit at once
 *   sigxcpu    ignore SIGXCPU, try to raise RLIMIT_CPU (soft to hard, hard to infinity), burn
 *   sigterm    ignore every catchable signal, then sleep in a loop
 *   stopped    a child stops itself (SIGSTOP); the parent stops itself too
 *   stopped-orphan  a child stops itself; the parent exits at once
 *   daemon     the classic daemon: fork, setsid, fork, close stdio, sleep in a loop; exit
 *   zombies    fork N children that exit at once, never reap them, exit
 *   zombies-wait  the same, then sleep in a loop with the zombies unreaped
 * Output: one line of what was done, before any waiting.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double deadline;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void burn(void) {
    volatile unsigned long x = 0;
    while (now() < deadline)
        for (int i = 0; i < 100000; i++) x += (unsigned long)i;
}

static void idle(void) {
    while (now() < deadline) usleep(20000);
}

static void ignore_all(void) {
    for (int s = 1; s < NSIG; s++)
        if (s != SIGKILL && s != SIGSTOP) signal(s, SIG_IGN);
}

static int say(const char *fmt, long a) {
    printf(fmt, a);
    putchar('\n');
    return fflush(stdout);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: evade MODE [SECONDS] [N]\n");
        return 2;
    }
    const char *mode = argv[1];
    deadline = now() + (argc > 2 ? atof(argv[2]) : 5.0);
    long n = argc > 3 ? atol(argv[3]) : 8;
    if (n > 256) n = 256;

    if (!strcmp(mode, "spread")) {
        long made = 0;
        for (long i = 0; i < n; i++) {
            pid_t p = fork();
            if (p == 0) { burn(); _exit(0); }
            if (p > 0) made++;
        }
        say("spread: %ld burners", made);
        burn();
        while (wait(NULL) > 0) {}
        return 0;
    }
    if (!strcmp(mode, "orphans")) {
        long made = 0;
        for (long i = 0; i < n; i++) {
            pid_t p = fork();
            if (p == 0) {
                if (fork() == 0) { burn(); _exit(0); }
                _exit(0);
            }
            if (p > 0) { waitpid(p, NULL, 0); made++; }
        }
        return say("orphans: %ld burners left to init", made);
    }
    if (!strcmp(mode, "sigxcpu")) {
        signal(SIGXCPU, SIG_IGN);
        struct rlimit rl;
        getrlimit(RLIMIT_CPU, &rl);
        rl.rlim_cur = rl.rlim_max;
        int soft = setrlimit(RLIMIT_CPU, &rl);
        rl.rlim_cur = rl.rlim_max = RLIM_INFINITY;
        int hard = setrlimit(RLIMIT_CPU, &rl) ? errno : 0;
        printf("sigxcpu: soft to hard %s, hard to infinity %s\n", soft ? "refused" : "ok",
               hard ? strerror(hard) : "ALLOWED");
        fflush(stdout);
        burn();
        return 0;
    }
    if (!strcmp(mode, "sigterm")) {
        ignore_all();
        say("sigterm: %ld signals ignored", NSIG - 3);
        idle();
        return 0;
    }
    if (!strcmp(mode, "stopped") || !strcmp(mode, "stopped-orphan")) {
        pid_t p = fork();
        if (p == 0) { raise(SIGSTOP); idle(); _exit(0); }
        say("stopped: child %ld stops itself", (long)p);
        if (!strcmp(mode, "stopped")) raise(SIGSTOP);
        return 0;
    }
    if (!strcmp(mode, "daemon")) {
        pid_t p = fork();
        if (p == 0) {
            setsid();
            if (fork() != 0) _exit(0);
            ignore_all();
            close(0);
            close(1);
            close(2);
            idle();
            _exit(0);
        }
        waitpid(p, NULL, 0);
        return say("daemon: detached (first child %ld reaped)", (long)p);
    }
    if (!strcmp(mode, "zombies") || !strcmp(mode, "zombies-wait")) {
        long made = 0;
        for (long i = 0; i < n; i++) {
            pid_t p = fork();
            if (p == 0) _exit(0);
            if (p > 0) made++;
        }
        say("zombies: %ld unreaped", made);
        if (!strcmp(mode, "zombies-wait")) idle();
        return 0;
    }
    fprintf(stderr, "evade: unknown mode %s\n", mode);
    return 2;
}
