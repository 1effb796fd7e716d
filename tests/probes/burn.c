/* burn SECONDS [THREADS]: each of THREADS threads burns SECONDS of its own CPU time.
 * Known cost: THREADS * SECONDS of CPU, measured by the thread's own CPU clock. */
#include <pthread.h>
#include <stdio.h>
#include <sys/resource.h>
#include <stdlib.h>
#include <time.h>

static double target;

static double thread_cpu(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void *burn(void *arg) {
    (void)arg;
    volatile unsigned long x = 0;
    while (thread_cpu() < target)
        for (int i = 0; i < 200000; i++) x += i; /* ~0.2 ms between clock reads (syscalls) */
    return NULL;
}

static double rusage_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

int main(int argc, char **argv) {
    double at_start = rusage_s();
    target = argc > 1 ? atof(argv[1]) : 0.5;
    int n = argc > 2 ? atoi(argv[2]) : 1;
    pthread_t t[64];
    for (int i = 1; i < n && i < 64; i++) pthread_create(&t[i], NULL, burn, NULL);
    burn(NULL);
    for (int i = 1; i < n && i < 64; i++) pthread_join(t[i], NULL);
    /* The kernel's account of this program's own work: rusage since main() (the process's
     * rusage also holds whatever it ran before this exec, which a sandbox may not count). */
    printf("burned %d x %.3f s rusage %.6f\n", n, target, rusage_s() - at_start);
    return 0;
}
