/* The guessing game's interactor, with testlib's protocol and exit codes (no testlib
 * needed): run as `interactor input.txt output.txt [answer.txt]`, stdin is the
 * solution's stdout and stdout the solution's stdin.
 *
 * input.txt: "n x" (1 <= x <= n). The interactor tells the solution n; the solution
 * asks "? y" and hears "<" (x < y), ">" (x > y) or "="; it answers "! y" once.
 * Within ceil(log2(n)) + 1 questions: ok (0). Within twice that: partial points, 0.5
 * (exit 7, "points 0.5" on stderr, as testlib's quitp). Else, a wrong final answer, a
 * malformed line or the solution's output ending early: wrong answer (1). Bad input:
 * the interactor's own failure (3). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void quit(int code, const char *msg, long a) {
    fprintf(stderr, msg, a);
    fputc('\n', stderr);
    exit(code);
}

int main(int argc, char **argv) {
    if (argc < 3) quit(3, "usage: interactor input output [answer] (%ld given)", argc - 1);
    FILE *in = fopen(argv[1], "r");
    long n, x;
    if (!in || fscanf(in, "%ld %ld", &n, &x) != 2 || x < 1 || x > n)
        quit(3, "bad test input (%ld)", 0);
    long limit = 1;
    while ((1L << (limit - 1)) < n) limit++;  /* ceil(log2 n) + 1 */
    printf("%ld\n", n);
    fflush(stdout);
    long asked = 0;
    char op[8];
    long y;
    for (;;) {
        if (scanf("%7s %ld", op, &y) != 2)
            quit(1, "the solution's output ended or is malformed after %ld questions", asked);
        if (strcmp(op, "!") == 0) {
            if (y != x) quit(1, "wrong guess %ld", y);
            if (asked <= limit) quit(0, "found in %ld questions", asked);
            if (asked <= 2 * limit) {
                fprintf(stderr, "points 0.5 found in %ld questions (limit %ld)\n", asked, limit);
                exit(7);
            }
            quit(1, "too many questions: %ld", asked);
        }
        if (strcmp(op, "?") != 0) quit(1, "expected '?' or '!' (question %ld)", asked + 1);
        if (++asked > 2 * limit) quit(1, "too many questions: %ld", asked);
        puts(x < y ? "<" : x > y ? ">" : "=");
        fflush(stdout);
    }
}
