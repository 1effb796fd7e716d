/* What loading a seccomp program costs a job process: a loop of forked children, each
 * loading the program in the file given (or nothing, the control) and exiting; prints the
 * children's mean CPU (user + system, from wait4) as JSON. bench/bench_seccomp.py runs it
 * for sandboxd's program and libseccomp's, in turn. */
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s CHILDREN PROGRAM|-\n", argv[0]);
        return 2;
    }
    static unsigned char buf[1 << 16];
    size_t n = 0;
    if (argv[2][0] != '-') {
        FILE *f = fopen(argv[2], "rb");
        if (!f) return perror(argv[2]), 1;
        n = fread(buf, 1, sizeof buf, f);
        fclose(f);
    }
    int children = atoi(argv[1]);
    struct sock_fprog prog = {(unsigned short)(n / 8), (struct sock_filter *)buf};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)) return perror("no_new_privs"), 1;
    double total = 0;
    for (int i = 0; i < children; i++) {
        pid_t pid = fork();
        if (pid < 0) return perror("fork"), 1;
        if (!pid) _exit(n && syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) ? 1 : 0);
        int status;
        struct rusage ru;
        if (wait4(pid, &status, 0, &ru) < 0 || status) return fprintf(stderr, "child failed\n"), 1;
        total += (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e6 + ru.ru_utime.tv_usec +
                 ru.ru_stime.tv_usec;
    }
    printf("{\"instructions\": %zu, \"cpu_us\": %.2f}\n", n / 8, total / children);
    return 0;
}
