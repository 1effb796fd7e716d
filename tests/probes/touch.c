/* touch MIB: allocate MIB mebibytes and write every page, then exit 0.
 * Known cost: MIB MiB of anonymous memory. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

int main(int argc, char **argv) {
    long mib = argc > 1 ? atol(argv[1]) : 100;
    size_t n = (size_t)mib << 20;
    char *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) { perror("mmap"); return 3; }
    for (size_t i = 0; i < n; i += 4096) p[i] = 1;
    printf("touched %ld MiB\n", mib);
    return 0;
}
