/* Binary search, in C. */
#include <stdio.h>
int main(void) {
    long n, lo = 1, hi, mid;
    char r[4];
    if (scanf("%ld", &n) != 1) return 1;
    hi = n;
    for (;;) {
        mid = lo + (hi - lo) / 2;
        printf("? %ld\n", mid);
        fflush(stdout);
        if (scanf("%3s", r) != 1) return 1;
        if (r[0] == '=') { printf("! %ld\n", mid); return 0; }
        if (r[0] == '<') hi = mid - 1; else lo = mid + 1;
    }
}
