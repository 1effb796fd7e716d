/* try_syscall NR [ARG...]: make one raw system call and print what came back.
 *
 * bubblewrap's try-syscall habit: policy tests run this under the filter and
 * assert the errno, rather than trusting the filter's source. Arguments are
 * parsed with strtoull base 0 (so 0x.. and -1 work); missing ones are 0.
 * Output: "ret=R errno=E" on one line; exit status 0 whatever the call did.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 2 || argc > 8) {
        fprintf(stderr, "usage: %s NR [ARG...] (up to 6 args)\n", argv[0]);
        return 2;
    }
    long nr = (long)strtoull(argv[1], NULL, 0);
    unsigned long a[6] = {0};
    for (int i = 2; i < argc; i++)
        a[i - 2] = strtoull(argv[i], NULL, 0);
    errno = 0;
    long ret = syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
    printf("ret=%ld errno=%d\n", ret, ret == -1 ? errno : 0);
    return 0;
}
