/* exhaust MODE AMOUNT [SECONDS] [ARG]: try to exhaust one resource, within bounds.
 *
 * Every mode stops by itself after AMOUNT units or SECONDS of wall time
 * (default 5), whichever comes first, so that a broken sandbox cannot take the
 * machine down; run only under the limits the test sets. When it stops by
 * itself it prints one line saying how far it got and why it stopped.
 *
 *   thread N          start up to N threads that sleep until the deadline
 *   heap MIB          malloc 1 MiB chunks and write every page
 *   mmap MIB          anonymous private mmaps of 1 MiB, every page written
 *   stack MIB         recurse with 64 KiB frames, each page written
 *   memfd MIB         write 1 MiB chunks into a memfd
 *   file MIB PATH     write 1 MiB chunks into PATH (a tmpfs: /box, /tmp, /dev/shm)
 *   inodes N DIR      create up to N empty files in DIR
 *   output BYTES nl|raw  write BYTES to stdout and stderr alternately, 64 KiB at a time,
 *                     in lines of 80 ('nl') or without a single newline ('raw')
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define MIB (1L << 20)

static double deadline;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int expired(void) { return now() >= deadline; }

static void *sleeper(void *arg) {
    (void)arg;
    while (!expired()) usleep(10000);
    return NULL;
}

static int threads(long n) {
    long made = 0;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 64 << 10);
    int err = 0;
    while (made < n && !expired()) {
        pthread_t t;
        err = pthread_create(&t, &attr, sleeper, NULL);
        if (err) break;
        made++;
    }
    printf("threads: made %ld (%s)\n", made, err ? strerror(err) : "bound reached");
    fflush(stdout);
    sleeper(NULL);
    return 0;
}

static void touch(char *p, size_t n) {
    for (size_t i = 0; i < n; i += 4096) p[i] = 1;
}

static int heap(long mib, int use_mmap) {
    long got = 0;
    while (got < mib && !expired()) {
        char *p = use_mmap ? mmap(NULL, MIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                                  -1, 0)
                           : malloc(MIB);
        if (p == NULL || p == MAP_FAILED) {
            printf("%s: refused after %ld MiB (%s)\n", use_mmap ? "mmap" : "heap", got,
                   strerror(errno));
            return 0;
        }
        touch(p, MIB);
        got++;
    }
    printf("%s: %ld MiB (bound reached)\n", use_mmap ? "mmap" : "heap", got);
    return 0;
}

static long depth, max_depth;

static int recurse(void) {
    volatile char frame[64 << 10];
    for (size_t i = 0; i < sizeof frame; i += 4096) frame[i] = 1;
    if (++depth >= max_depth || (depth % 16 == 0 && expired())) return (int)frame[0];
    return recurse() + frame[4096];
}

static int stack(long mib) {
    max_depth = mib * 16;
    recurse();
    printf("stack: %ld KiB deep (bound reached)\n", depth * 64);
    return 0;
}

static int fill(int fd, long mib, const char *what) {
    static char buf[1 << 20];
    memset(buf, 'x', sizeof buf);
    long got = 0;
    while (got < mib && !expired()) {
        ssize_t n = write(fd, buf, sizeof buf);
        if (n < 0) {
            printf("%s: refused after %ld MiB (%s)\n", what, got, strerror(errno));
            return 0;
        }
        if (n < (ssize_t)sizeof buf) {
            printf("%s: short write after %ld MiB\n", what, got);
            return 0;
        }
        got++;
    }
    printf("%s: %ld MiB (bound reached)\n", what, got);
    return 0;
}

static int inodes(long n, const char *dir) {
    char path[4096];
    long made = 0;
    while (made < n && !expired()) {
        snprintf(path, sizeof path, "%s/i%ld", dir, made);
        int fd = open(path, O_CREAT | O_EXCL | O_WRONLY, 0600);
        if (fd < 0) {
            printf("inodes: refused after %ld (%s)\n", made, strerror(errno));
            return 0;
        }
        close(fd);
        made++;
    }
    printf("inodes: %ld (bound reached)\n", made);
    return 0;
}

static int output(long long total, int lines) {
    static char buf[64 << 10];
    memset(buf, 'x', sizeof buf);
    if (lines)
        for (size_t i = 79; i < sizeof buf; i += 80) buf[i] = '\n';
    int fd = 1;
    while (total > 0 && !expired()) {
        size_t n = total < (long long)sizeof buf ? (size_t)total : sizeof buf;
        if (write(fd, buf, n) < 0) return 3;
        total -= (long long)n;
        fd = 3 - fd; /* 1, 2, 1, 2... */
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: exhaust MODE AMOUNT [SECONDS] [ARG]\n");
        return 2;
    }
    const char *mode = argv[1];
    long amount = atol(argv[2]);
    deadline = now() + (argc > 3 ? atof(argv[3]) : 5.0);
    const char *arg = argc > 4 ? argv[4] : "";
    if (!strcmp(mode, "thread")) return threads(amount);
    if (!strcmp(mode, "heap")) return heap(amount, 0);
    if (!strcmp(mode, "mmap")) return heap(amount, 1);
    if (!strcmp(mode, "stack")) return stack(amount);
    if (!strcmp(mode, "memfd")) return fill(memfd_create("bomb", 0), amount, "memfd");
    if (!strcmp(mode, "file")) {
        int fd = open(arg, O_CREAT | O_WRONLY | O_TRUNC, 0600);
        if (fd < 0) { perror(arg); return 3; }
        return fill(fd, amount, arg);
    }
    if (!strcmp(mode, "inodes")) return inodes(amount, arg);
    if (!strcmp(mode, "output")) return output(amount, strcmp(arg, "raw") != 0);
    fprintf(stderr, "exhaust: unknown mode %s\n", mode);
    return 2;
}
