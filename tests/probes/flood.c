/* flood BYTES [FD]: write BYTES bytes of 'x' to FD (default 1), in 64 KiB writes. Bounded. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
    long long total = argc > 1 ? atoll(argv[1]) : 1000000000LL;
    int fd = argc > 2 ? atoi(argv[2]) : 1;
    static char buf[65536];
    memset(buf, 'x', sizeof buf);
    while (total > 0) {
        ssize_t n = write(fd, buf, total < (long long)sizeof buf ? (size_t)total : sizeof buf);
        if (n <= 0) return 1;
        total -= n;
    }
    return 0;
}
