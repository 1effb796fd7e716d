// The checker of "squares": print the squares of 1..n, one per line.
//
// It speaks testlib's protocol without testlib.h (written for sandboxd's examples):
//   checker <input> <output> <answer>
//   exit 0 ok, 1 wrong answer, 2 presentation error, 3 the checker's own failure,
//   7 partial points, with "points X" first on stderr (X in [0, 1]), as testlib's
//   quitp(X, ...) prints them.
// It reads the contestant's output token by token with a bounded buffer, so any
// output (huge, binary, a token of megabytes) gets a verdict, never a crash.
#include <cctype>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>

enum { OK = 0, WA = 1, PE = 2, FAIL = 3, POINTS = 7 };

[[noreturn]] static void quit(int code, const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(code);
}

[[noreturn]] static void quitp(double points, const char* msg) {
    // testlib: "points " + removeDoubleTrailingZeroes("%.10f") + " " + message
    quit(POINTS, "points %.10g %s", points, msg);
}

// The next whitespace-separated token of f into buf (at most cap-1 chars; a longer
// token is cut and *longer set). False at end of file.
static bool token(FILE* f, char* buf, size_t cap, bool* longer) {
    int c;
    do c = fgetc(f); while (c != EOF && isspace(c));
    if (c == EOF) return false;
    size_t n = 0;
    *longer = false;
    while (c != EOF && !isspace(c)) {
        if (n + 1 < cap) buf[n++] = (char)c; else *longer = true;
        c = fgetc(f);
    }
    buf[n] = '\0';
    return true;
}

static bool integer(const char* s, long long* x) {
    if (!*s) return false;
    for (const char* p = s; *p; p++)
        if (!isdigit((unsigned char)*p) && !(p == s && *p == '-')) return false;
    errno = 0;
    *x = strtoll(s, nullptr, 10);
    return errno == 0;
}

int main(int argc, char** argv) {
    if (argc < 4) quit(FAIL, "usage: checker input output answer");
    FILE* in = fopen(argv[1], "r");
    FILE* out = fopen(argv[2], "r");
    if (!in || !out) quit(FAIL, "cannot open the input or the output");
    long long n;
    if (fscanf(in, "%lld", &n) != 1 || n < 1 || n > 1000000) quit(FAIL, "bad test input");
    long long correct = 0;
    char buf[32];
    bool longer;
    for (long long i = 1; i <= n; i++) {
        if (!token(out, buf, sizeof buf, &longer)) break;  // a short output: partial
        long long x;
        if (longer || !integer(buf, &x)) quit(PE, "line %lld: not an integer", i);
        if (x == i * i) correct++;
    }
    if (token(out, buf, sizeof buf, &longer)) quit(PE, "more than %lld numbers", n);
    if (correct == n) quit(OK, "%lld squares", n);
    if (correct == 0) quit(WA, "no square right");
    char msg[64];
    snprintf(msg, sizeof msg, "%lld of %lld squares right", correct, n);
    quitp((double)correct / (double)n, msg);
}
