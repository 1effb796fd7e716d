"""The same attacks written in every shipped language, so that no runtime is a way around.

Each program is a template: ``@@CANARY@@`` is replaced by the canary's host
path, ``@@SECONDS@@`` by how long a bomb may go on, ``@@COUNT@@`` by how many
units (processes, MiB, bytes) it may make at most. Every bomb and flood stops by
itself at either bound, so a broken sandbox cannot take the machine down.

The canary programs try each route to a host file (its path, ``..`` from
/box, a symlink, a hard link, the init's root and cwd in /proc) and print one
line per route: ``ROUTE: blocked WHY`` or ``ROUTE: ESCAPED CONTENT``.
"""

from __future__ import annotations

LANGUAGES = ("python3", "bash", "c", "cpp", "javascript", "java")
ENTRY = {"python3": "main.py", "bash": "main.sh", "c": "main.c", "cpp": "main.cpp",
         "javascript": "main.js", "java": "Main.java"}
ROUTES = ("path", "dotdot", "symlink", "hardlink", "proc-root", "proc-cwd")

CANARY = {
    "python3": r"""
import os
c = '@@CANARY@@'
def attempt(name, f):
    try:
        print(f'{name}: ESCAPED {f()!r}')
    except OSError as e:
        print(f'{name}: blocked {type(e).__name__}')
def via_symlink():
    os.symlink(c, '/box/l')
    return open('/box/l').read()
def via_link():
    os.link(c, '/box/h')
    return open('/box/h').read()
attempt('path', lambda: open(c).read())
attempt('dotdot', lambda: open('/box' + '/..' * 12 + c).read())
attempt('symlink', via_symlink)
attempt('hardlink', via_link)
attempt('proc-root', lambda: open('/proc/1/root' + c).read())
attempt('proc-cwd', lambda: open('/proc/1/cwd/../../..' + c).read())
""",
    "bash": r"""
c='@@CANARY@@'
attempt() {
    local name=$1 out; shift
    if out=$("$@" 2>&1); then echo "$name: ESCAPED $out"; else echo "$name: blocked ${out##*: }"; fi
}
via_link() { ln "$c" /box/h && cat /box/h; }
attempt path cat "$c"
attempt dotdot cat "/box/../../../../../../../..$c"
ln -s "$c" /box/l
attempt symlink cat /box/l
attempt hardlink via_link
attempt proc-root cat "/proc/1/root$c"
attempt proc-cwd cat "/proc/1/cwd/../../..$c"
""",
    "c": r"""
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
static const char *c = "@@CANARY@@";
static void attempt(const char *name, const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) { printf("%s: blocked %s\n", name, strerror(errno)); return; }
    char buf[256] = {0};
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    printf("%s: ESCAPED %zu bytes: %s\n", name, n, buf);
}
int main(void) {
    char p[4096];
    attempt("path", c);
    snprintf(p, sizeof p, "/box/../../../../../../..%s", c); attempt("dotdot", p);
    if (symlink(c, "/box/l")) printf("symlink: blocked %s\n", strerror(errno));
    else attempt("symlink", "/box/l");
    if (link(c, "/box/h")) printf("hardlink: blocked %s\n", strerror(errno));
    else attempt("hardlink", "/box/h");
    snprintf(p, sizeof p, "/proc/1/root%s", c); attempt("proc-root", p);
    snprintf(p, sizeof p, "/proc/1/cwd/../../..%s", c); attempt("proc-cwd", p);
    return 0;
}
""",
    "cpp": r"""
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <sstream>
#include <string>
namespace fs = std::filesystem;
static const std::string c = "@@CANARY@@";
static std::string slurp(const std::string &path) {
    std::ifstream f(path);
    if (!f) throw std::runtime_error("cannot open");
    std::stringstream s;
    s << f.rdbuf();
    return s.str();
}
static void attempt(const char *name, const std::function<std::string()> &f) {
    try {
        std::string got = f();  // first: operator<< would print the prefix before f() throws
        std::cout << name << ": ESCAPED " << got << "\n";
    } catch (const std::exception &e) {
        std::cout << name << ": blocked " << e.what() << "\n";
    }
}
int main() {
    attempt("path", [] { return slurp(c); });
    attempt("dotdot", [] { return slurp("/box/../../../../../../.." + c); });
    attempt("symlink", [] { fs::create_symlink(c, "/box/l"); return slurp("/box/l"); });
    attempt("hardlink", [] { fs::create_hard_link(c, "/box/h"); return slurp("/box/h"); });
    attempt("proc-root", [] { return slurp("/proc/1/root" + c); });
    attempt("proc-cwd", [] { return slurp("/proc/1/cwd/../../.." + c); });
}
""",
    "javascript": r"""
const fs = require('fs');
const c = '@@CANARY@@';
function attempt(name, f) {
    try { console.log(`${name}: ESCAPED ${f()}`); }
    catch (e) { console.log(`${name}: blocked ${e.code}`); }
}
attempt('path', () => fs.readFileSync(c, 'utf8'));
attempt('dotdot', () => fs.readFileSync('/box/../../../../../../..' + c, 'utf8'));
attempt('symlink', () => {
    fs.symlinkSync(c, '/box/l');
    return fs.readFileSync('/box/l', 'utf8');
});
attempt('hardlink', () => {
    fs.linkSync(c, '/box/h');
    return fs.readFileSync('/box/h', 'utf8');
});
attempt('proc-root', () => fs.readFileSync('/proc/1/root' + c, 'utf8'));
attempt('proc-cwd', () => fs.readFileSync('/proc/1/cwd/../../..' + c, 'utf8'));
""",
    "java": r"""
import java.nio.file.*;
public class Main {
    interface Route { String run() throws Exception; }
    static void attempt(String name, Route r) {
        try { System.out.println(name + ": ESCAPED " + r.run()); }
        catch (Exception e) {
            System.out.println(name + ": blocked " + e.getClass().getSimpleName());
        }
    }
    public static void main(String[] args) {
        String c = "@@CANARY@@";
        attempt("path", () -> Files.readString(Path.of(c)));
        attempt("dotdot", () -> Files.readString(Path.of("/box/../../../../../../.." + c)));
        attempt("symlink", () -> {
            Files.createSymbolicLink(Path.of("/box/l"), Path.of(c));
            return Files.readString(Path.of("/box/l"));
        });
        attempt("hardlink", () -> {
            Files.createLink(Path.of("/box/h"), Path.of(c));
            return Files.readString(Path.of("/box/h"));
        });
        attempt("proc-root", () -> Files.readString(Path.of("/proc/1/root" + c)));
        attempt("proc-cwd", () -> Files.readString(Path.of("/proc/1/cwd/../../.." + c)));
    }
}
""",
}

# Processes (or, where a runtime cannot fork, threads) without end, until a bound.
FORK_BOMB = {
    "python3": r"""
import os, time
end = time.monotonic() + @@SECONDS@@
made = 0
while time.monotonic() < end and made < @@COUNT@@:
    try:
        os.fork()
        made += 1
    except OSError:
        time.sleep(0.001)
""",
    "bash": r"""
end=$((SECONDS + @@SECONDS@@))
bomb() {
    local n=0
    while [ $SECONDS -lt $end ] && [ $n -lt @@COUNT@@ ]; do
        bomb & n=$((n + 1))
    done
}
bomb 2>/dev/null
wait
""",
    "c": r"""
#include <time.h>
#include <unistd.h>
int main(void) {
    time_t end = time(NULL) + @@SECONDS@@;
    for (int made = 0; time(NULL) < end && made < @@COUNT@@;)
        if (fork() >= 0) made++; else usleep(1000);
    return 0;
}
""",
    "cpp": r"""
#include <chrono>
#include <system_error>
#include <thread>
int main() {
    auto end = std::chrono::steady_clock::now() + std::chrono::seconds(@@SECONDS@@);
    for (int made = 0; std::chrono::steady_clock::now() < end && made < @@COUNT@@;) {
        try {
            std::thread([end] { std::this_thread::sleep_until(end); }).detach();
            made++;
        } catch (const std::system_error &) {
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
    }
}
""",
    "javascript": r"""
const { spawn } = require('child_process');
const end = Date.now() + @@SECONDS@@ * 1000;
let made = 0;
function more() {
    while (Date.now() < end && made < @@COUNT@@) {
        const p = spawn('/bin/sleep', ['@@SECONDS@@']);
        p.on('error', () => {});
        made++;
        if (made % 16 === 0) return setTimeout(more, 1);
    }
}
more();
""",
    "java": r"""
public class Main {
    public static void main(String[] args) throws Exception {
        long end = System.currentTimeMillis() + @@SECONDS@@ * 1000L;
        int made = 0;
        while (System.currentTimeMillis() < end && made < @@COUNT@@) {
            try {
                Thread t = new Thread(() -> {
                    try { Thread.sleep(Math.max(1, end - System.currentTimeMillis())); }
                    catch (InterruptedException e) { }
                });
                t.setDaemon(true);
                t.start();
                made++;
            } catch (Throwable e) {
                Thread.sleep(1);
            }
        }
    }
}
""",
}

# Memory without end, 1 MiB at a time, every page written, until a bound.
MEMORY_BOMB = {
    "python3": r"""
import time
end = time.monotonic() + @@SECONDS@@
kept = []
while len(kept) < @@COUNT@@ and time.monotonic() < end:
    kept.append(b'x' * (1 << 20))
print('kept', len(kept), 'MiB')
""",
    "bash": r"""
# printf pads in C, ~3 ns a byte: doubling a string through bash's word expansion
# cost ~2 s of CPU to reach 256 MiB and raced the CPU limit.
for ((i = 0; i < @@COUNT@@ && SECONDS < @@SECONDS@@; i++)); do
    printf -v "kept[$i]" '%*s' 1048576 ''
done
echo kept ${#kept[@]} MiB
""",
    "c": r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
int main(void) {
    time_t end = time(NULL) + @@SECONDS@@;
    int kept = 0;
    for (; kept < @@COUNT@@ && time(NULL) < end; kept++) {
        char *p = malloc(1 << 20);
        if (!p) break;
        memset(p, 'x', 1 << 20);
    }
    printf("kept %d MiB\n", kept);
}
""",
    "cpp": r"""
#include <chrono>
#include <iostream>
#include <vector>
int main() {
    auto end = std::chrono::steady_clock::now() + std::chrono::seconds(@@SECONDS@@);
    std::vector<std::vector<char>> kept;
    while (kept.size() < @@COUNT@@ && std::chrono::steady_clock::now() < end)
        kept.emplace_back(1 << 20, 'x');
    std::cout << "kept " << kept.size() << " MiB\n";
}
""",
    "javascript": r"""
const end = Date.now() + @@SECONDS@@ * 1000;
const kept = [];
while (kept.length < @@COUNT@@ && Date.now() < end) kept.push(Buffer.alloc(1 << 20, 1));
console.log('kept', kept.length, 'MiB');
""",
    "java": r"""
import java.util.ArrayList;
public class Main {
    public static void main(String[] args) {
        long end = System.currentTimeMillis() + @@SECONDS@@ * 1000L;
        ArrayList<byte[]> kept = new ArrayList<>();
        while (kept.size() < @@COUNT@@ && System.currentTimeMillis() < end) {
            byte[] b = new byte[1 << 20];
            java.util.Arrays.fill(b, (byte) 1);
            kept.add(b);
        }
        System.out.println("kept " + kept.size() + " MiB");
    }
}
""",
}

# Output on both streams at once, in 64 KiB lines, until a bound (in bytes).
OUTPUT_FLOOD = {
    "python3": r"""
import sys, time
end = time.monotonic() + @@SECONDS@@
line = 'x' * 65535 + '\n'
sent = 0
while sent < @@COUNT@@ and time.monotonic() < end:
    sys.stdout.write(line)
    sys.stderr.write(line)
    sent += 2 * len(line)
""",
    "bash": r"""
end=$((SECONDS + @@SECONDS@@))
line=$(head -c 65535 /dev/zero | tr '\0' x)
sent=0
while [ $sent -lt @@COUNT@@ ] && [ $SECONDS -lt $end ]; do
    echo "$line"; echo "$line" >&2
    sent=$((sent + 131072))
done
""",
    "c": r"""
#include <stdio.h>
#include <string.h>
#include <time.h>
int main(void) {
    static char line[65536];
    memset(line, 'x', sizeof line - 1);
    time_t end = time(NULL) + @@SECONDS@@;
    for (long long sent = 0; sent < @@COUNT@@LL && time(NULL) < end; sent += 2 * sizeof line) {
        puts(line);
        fputs(line, stderr);
        fputc('\n', stderr);
    }
}
""",
    "cpp": r"""
#include <chrono>
#include <iostream>
#include <string>
int main() {
    auto end = std::chrono::steady_clock::now() + std::chrono::seconds(@@SECONDS@@);
    std::string line(65535, 'x');
    for (long long sent = 0; sent < @@COUNT@@LL && std::chrono::steady_clock::now() < end;
         sent += 131072) {
        std::cout << line << '\n';
        std::cerr << line << '\n';
    }
}
""",
    "javascript": r"""
const fs = require('fs');
const end = Date.now() + @@SECONDS@@ * 1000;
const line = 'x'.repeat(65535) + '\n';
for (let sent = 0; sent < @@COUNT@@ && Date.now() < end; sent += 2 * line.length) {
    fs.writeSync(1, line);
    fs.writeSync(2, line);
}
""",
    "java": r"""
public class Main {
    public static void main(String[] args) {
        long end = System.currentTimeMillis() + @@SECONDS@@ * 1000L;
        String line = "x".repeat(65535);
        for (long sent = 0; sent < @@COUNT@@L && System.currentTimeMillis() < end; sent += 131072) {
            System.out.println(line);
            System.err.println(line);
        }
    }
}
""",
}


def source(programs: dict[str, str], language: str, **values: object) -> dict[str, bytes]:
    """The job's files: the language's program with its placeholders filled in."""
    text = programs[language]
    for key, value in values.items():
        text = text.replace(f"@@{key.upper()}@@", str(value))
    assert "@@" not in text, f"unfilled placeholder in {language}: {text}"
    return {ENTRY[language]: text.lstrip().encode()}
