"""Language profiles (issue 6): the schema and its errors, and every shipped profile end to end.

The schema tests are pure (no root). The per-language tests start a real
daemon each and run, through its socket, the six programs a judge meets:
hello world (under the profile's *default* limits: javac and java must fit),
a compile error where there is a compiler, a runtime error, a wrong answer,
a time limit and a memory limit. A profile whose runtime is missing here is
skipped with the reason the daemon gives.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import sandboxd_protocol as proto
from sandboxd.limits import Limits, MiB
from sandboxd.profiles import PLACEHOLDERS, SCHEMA, ProfileError, expand, load_dir, load_file
from sandboxd_testing.daemon import Daemon

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = load_dir()
DOC = (ROOT / "docs" / "profiles.md").read_text()

# ----------------------------------------------------------------------- schema


def write(tmp: Path, text: str, name: str = "p.toml") -> Path:
    path = tmp / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(("text", "match"), [
    ('name = "x"\nrun = ["a"]\nrunn = ["b"]\n', r"p\.toml:3: runn: unknown key"),
    ('name = "x"\nrun = "a"\n', r"p\.toml:2: run: must be a list"),
    ('name = "x"\n', r"p\.toml:1: run: required key is missing"),
    ('name = "X Y"\nrun = ["a"]\n', r"p\.toml:1: name: must be lowercase"),
    ('name = "x"\nrun = ["a", "{entyr}"]\n', r"p\.toml:2: run: unknown placeholder \{entyr\}"),
    ('name = "x"\nrun = ["a", "-f{sources}"]\n', r"p\.toml:2: run: \{sources\} must be a whole"),
    ('name = "x"\nrun = ["a", "{entry:50%}"]\n', r"p\.toml:2: run: .*only \{memory_mb:N%\}"),
    ('name = "x"\nrun = ["a", "{memory_mb:150%}"]\n', r"p\.toml:2: run: .*1 to 100 %"),
    ('name = "x"\nrun = ["a"]\n\n[compile]\nargv = ["cc", "{srcs}"]\n',
     r"p\.toml:4: compile: argv: unknown placeholder \{srcs\}"),
    ('name = "x"\nrun = ["a"]\n\n[compile]\nargv = ["cc"]\nlimit = {}\n',
     r"p\.toml:4: compile: unknown key\(s\) \['limit'\]"),
    ('name = "x"\nrun = ["a"]\nout_of_memory = [""]\n', r"p\.toml:3: out_of_memory: .*empty"),
    ('name = "x"\nrun = ["a"]\nlimits = { memory = "1T" }\n', r"p\.toml:3: limits: .*memory"),
    ('name = "x"\nrun = ["a"]\nseccomp = "lax"\n', r"p\.toml:3: seccomp: unknown policy 'lax'"),
    ('name = "x"\nrun = ["a"]\nbinds = [["rel", "/x"]]\n', r"p\.toml:3: binds: each bind"),
    ('name = "x"\nrun = ["a"]\nmemory_modes = ["virtual"]\n',
     r"p\.toml:3: memory_modes: a non-empty list of peak, address_space"),
    ('name = "x"\nrun = ["a"]\nmemory_modes = ["peak"]\nmemory_mode = "address_space"\n',
     r"p\.toml:4: memory_mode: must be one of memory_modes \(peak\)"),
])
def test_schema_errors_name_file_line_and_key(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(ProfileError, match=match):
        load_file(write(tmp_path, text))


def test_a_missing_runtime_makes_the_profile_unavailable_with_the_reason(tmp_path: Path) -> None:
    p = load_file(write(tmp_path, 'name = "x"\nrun = ["a"]\nneeds = ["/nonexistent/cc"]\n'))
    assert p.unavailable == "/nonexistent/cc is not installed on this host"
    assert p.version() == ""  # and asking for its version does not run anything


def test_commands_are_looked_up_on_the_containers_path(tmp_path: Path, monkeypatch: Any) -> None:
    """A compiler the daemon sees on its own PATH (rustup's ~/.cargo/bin) but that no
    container can see is unavailable, not a sandbox error at the first job."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    tool = bindir / "private-cc"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:/usr/bin:/bin")
    p = load_file(write(tmp_path, 'name = "x"\nrun = ["a"]\nneeds = ["private-cc", "sh"]\n'))
    assert p.unavailable == "private-cc is not installed on this host"
    p = load_file(write(tmp_path, f'name = "x"\nrun = ["a"]\nneeds = ["private-cc"]\n'
                                  f'env = {{ PATH = "{bindir}" }}\n'))
    assert p.unavailable is None


def test_placeholders_expand_per_step_limits() -> None:
    template = ("java", "-Xmx{memory_mb:75%}m", "-m{memory_mb}", "{entry}", "{sources}")
    argv = expand(template, "Main.java", ["A.java", "Main.java"], Limits(memory=1024 * MiB))
    assert argv == ["java", "-Xmx768m", "-m1024", "Main.java", "A.java", "Main.java"]
    assert SHIPPED["java"].run_argv([], Limits(memory=256 * MiB))[2] == "-Xmx192m"
    assert SHIPPED["javascript"].run_argv(["main.js"])[1] == "--max-old-space-size=384"


def test_every_shipped_profile_loads_and_names_a_version_command() -> None:
    assert {"python3", "c", "cpp", "bash", "javascript", "java", "rust", "go", "pypy3", "pascal",
            "csharp", "asm", "ruby", "php", "kotlin", "haskell", "lua", "perl"} <= set(SHIPPED)
    for p in SHIPPED.values():
        assert p.version_argv and p.needs and p.description, p.name
        assert p.limits.memory <= p.max_limits.memory, p.name
        if p.compile:
            assert p.compile.limits.output <= 64 * 1024, f"{p.name}: compiler output capped"


def test_the_doc_covers_every_key_and_placeholder() -> None:
    for key in SCHEMA:
        assert f"| `{key}` |" in DOC, key
    for name in PLACEHOLDERS:
        assert f"`{{{name}" in DOC, name


# ------------------------------------------------------------- every language

HELLO = b"hello, world\n"


def c_like(header: str, hello: str, rt: str, tle: str, mle: str) -> dict[str, bytes]:
    def prog(body: str) -> bytes:
        return f"{header}\nint main() {{ {body} }}\n".encode()

    return {"hello": prog(hello), "ce": prog("return undeclared_name;"), "re": prog(rt),
            "wa": prog(hello.replace("hello, world", "goodbye")), "tle": prog(tle),
            "mle": prog(mle)}


def java(body: str) -> bytes:
    return ("import java.util.*;\npublic class Main {\n  public static void main(String[] a) "
            f"{{ {body} }}\n}}\n").encode()


def csharp(body: str) -> bytes:
    return ("using System;\nusing System.Collections.Generic;\n"
            f"class Program {{\n  static void Main() {{ {body} }}\n}}\n").encode()


def asm_start(body: str, data: str = "") -> bytes:
    """A NASM program with _start (linked by ld alone) that runs ``body`` then exits 0."""
    head = f"section .data\n{data}\n" if data else ""
    return (f"{head}section .text\nglobal _start\n_start:\n    {body}\n"
            "    mov rax, 60\n    xor edi, edi\n    syscall\n").encode()


#: scenario -> the source of the entry file; "ce" only where there is a compiler.
SOURCES: dict[str, dict[str, bytes]] = {
    "python3": {
        "hello": b'print("hello, world")\n',
        "re": b"print(1 // 0)\n",
        "wa": b'print("goodbye")\n',
        "tle": b"while True:\n    pass\n",
        "mle": b'x = b"x" * (1 << 30)\n',
    },
    "bash": {
        "hello": b'echo "hello, world"\n',
        "re": b"exit 3\n",
        "wa": b"echo goodbye\n",
        "tle": b"while :; do :; done\n",
        # bash's own memory, padded by printf in C: doubling a string through word
        # expansion took ~2 s of CPU to 256 MiB and could meet the CPU limit first
        "mle": b"i=0; while :; do printf -v \"a[i++]\" '%*s' 1048576 ''; done\n",
    },
    "c": c_like("#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>",
                'puts("hello, world"); return 0;',
                "volatile int *p = 0; *p = 1; return 0;",
                "volatile unsigned x = 0; for (;;) x++;",
                # volatile: gcc -O2 may drop a malloc whose bytes it can predict
                "volatile char *p = malloc(1L << 30); "
                "for (long i = 0; i < (1L << 30); i += 4096) p[i] = 1; return 0;"),
    "cpp": c_like("#include <iostream>\n#include <stdexcept>\n#include <vector>",
                  'std::cout << "hello, world" << std::endl; return 0;',
                  'throw std::runtime_error("boom");',
                  "volatile unsigned x = 0; for (;;) x++;",
                  "std::vector<char> v(1 << 30, 1); return v[4095];"),
    "javascript": {
        "hello": b'console.log("hello, world");\n',
        "re": b'throw new Error("boom");\n',
        "wa": b'console.log("goodbye");\n',
        "tle": b"for (;;) {}\n",
        "mle": b"const a = []; for (;;) a.push(new Array(1 << 20).fill(1.5));\n",
    },
    "java": {
        "hello": java('System.out.println("hello, world");'),
        "ce": java('int x = "not an int";'),
        "re": java('throw new RuntimeException("boom");'),
        "wa": java('System.out.println("goodbye");'),
        "tle": java("long x = 0; while (true) { x++; }"),
        "mle": java("List<long[]> l = new ArrayList<>(); while (true) l.add(new long[1 << 20]);"),
    },
    "rust": {
        "hello": b'fn main() { println!("hello, world"); }\n',
        "ce": b'fn main() { let x: i32 = "s"; }\n',
        "re": b'fn main() { panic!("boom"); }\n',
        "wa": b'fn main() { println!("goodbye"); }\n',
        "tle": b"fn main() { let mut x: u64 = 0; loop { unsafe { "
               b"std::ptr::write_volatile(&mut x, x + 1) } } }\n",
        "mle": b'fn main() { let v = vec![1u8; 1 << 30]; println!("{}", v[4095]); }\n',
    },
    "go": {
        "hello": b'package main\nimport "fmt"\nfunc main() { fmt.Println("hello, world") }\n',
        "ce": b"package main\nfunc main() { x := 1 }\n",
        "re": b'package main\nfunc main() { panic("boom") }\n',
        "wa": b'package main\nimport "fmt"\nfunc main() { fmt.Println("goodbye") }\n',
        "tle": b"package main\nfunc main() { x := 0; for { x++ } }\n",
        "mle": b"package main\nfunc main() { b := make([]byte, 1<<30); for i := range b "
               b"{ b[i] = 1 }; println(b[4095]) }\n",
    },
    "pypy3": {
        "hello": b'print("hello, world")\n',
        "re": b"print(1 // 0)\n",
        "wa": b'print("goodbye")\n',
        "tle": b"x = 0\nwhile True:\n    x += 1\n",
        "mle": b"l = []\nwhile True:\n    l.append([7] * (1 << 17))\n",
    },
    "pascal": {
        "hello": b"begin\n  writeln('hello, world');\nend.\n",
        "ce": b"begin\n  x := 1;\nend.\n",
        "re": b"var i: integer;\nbegin\n  i := 0;\n  writeln(10 div i);\nend.\n",
        "wa": b"begin\n  writeln('goodbye');\nend.\n",
        "tle": b"var x: qword;\nbegin\n  x := 0;\n  while true do inc(x);\nend.\n",
        "mle": b"var p: PByte; i: longint;\nbegin\n  GetMem(p, 1 shl 30);\n  i := 0;\n"
               b"  while i < (1 shl 30) do begin p[i] := 1; inc(i, 4096); end;\n"
               b"  writeln(p[4096]);\nend.\n",
    },
    "csharp": {
        "hello": csharp('Console.WriteLine("hello, world");'),
        "ce": csharp('int x = "not an int";'),
        "re": csharp('throw new Exception("boom");'),
        "wa": csharp('Console.WriteLine("goodbye");'),
        "tle": csharp("long x = 0; while (true) { x++; }"),
        "mle": csharp("var l = new List<long[]>(); while (true) l.Add(new long[1 << 20]);"),
    },
    "asm": {
        "hello": asm_start('mov rax, 1\n    mov rdi, 1\n    lea rsi, [rel msg]\n    mov rdx, 13\n'
                           '    syscall', data='msg: db "hello, world", 10'),
        "ce": asm_start("movx rax, 1"),
        "re": asm_start("xor eax, eax\n    mov byte [rax], 1"),
        "wa": asm_start('mov rax, 1\n    mov rdi, 1\n    lea rsi, [rel msg]\n    mov rdx, 8\n'
                        '    syscall', data='msg: db "goodbye", 10'),
        "tle": asm_start("spin: jmp spin"),
        # mmap 1 GiB and touch every page of it
        "mle": asm_start("mov rax, 9\n    xor edi, edi\n    mov rsi, 1 << 30\n    mov rdx, 3\n"
                         "    mov r10, 0x22\n    mov r8, -1\n    xor r9, r9\n    syscall\n"
                         "    mov rcx, 1 << 30\n"
                         "touch: mov byte [rax], 1\n    add rax, 4096\n    sub rcx, 4096\n"
                         "    jnz touch"),
    },
    "ruby": {
        "hello": b'puts "hello, world"\n',
        "re": b'raise "boom"\n',
        "wa": b'puts "goodbye"\n',
        "tle": b"x = 0\nloop { x += 1 }\n",
        "mle": b'a = []\nloop { a << "x" * (1 << 20) }\n',
    },
    "php": {
        "hello": b'<?php\necho "hello, world\\n";\n',
        "re": b'<?php\nthrow new Exception("boom");\n',
        "wa": b'<?php\necho "goodbye\\n";\n',
        "tle": b"<?php\n$x = 0;\nwhile (true) $x++;\n",
        "mle": b'<?php\n$a = [];\nwhile (true) $a[] = str_repeat("x", 1 << 20);\n',
    },
    "kotlin": {
        "hello": b'fun main() { println("hello, world") }\n',
        "ce": b'fun main() { val x: Int = "not an int" }\n',
        "re": b'fun main() { throw RuntimeException("boom") }\n',
        "wa": b'fun main() { println("goodbye") }\n',
        "tle": b"fun main() { var x = 0L; while (true) { x++ } }\n",
        "mle": b"fun main() { val l = ArrayList<LongArray>(); "
               b"while (true) l.add(LongArray(1 shl 20)) }\n",
    },
    "haskell": {
        "hello": b'main :: IO ()\nmain = putStrLn "hello, world"\n',
        "ce": b"main :: IO ()\nmain = putStrLn (1 :: Int)\n",
        "re": b"main :: IO ()\nmain = print (head ([] :: [Int]))\n",
        "wa": b'main :: IO ()\nmain = putStrLn "goodbye"\n',
        "tle": b"loop :: Int -> Int\nloop n = if n < 0 then n else loop (n + 1)\n"
               b"main :: IO ()\nmain = print (loop 0)\n",
        "mle": b"import qualified Data.Map.Strict as M\nmain :: IO ()\n"
               b"main = print (M.size (M.fromList [(i, i) | i <- [1 :: Int ..]]))\n",
    },
    "lua": {
        "hello": b'print("hello, world")\n',
        "re": b'error("boom")\n',
        "wa": b'print("goodbye")\n',
        "tle": b"local x = 0\nwhile true do x = x + 1 end\n",
        "mle": b"local t = {}\nlocal i = 0\n"
               b'while true do i = i + 1; t[i] = string.rep("x", 1 << 20) .. i end\n',
    },
    "perl": {
        "hello": b'print "hello, world\\n";\n',
        "re": b'die "boom";\n',
        "wa": b'print "goodbye\\n";\n',
        "tle": b"my $x = 0;\nwhile (1) { $x++ }\n",
        "mle": b'my @a;\nwhile (1) { push @a, "x" x (1 << 20) }\n',
    },
}

EXPECTED = {"hello": "ok", "ce": "compile_error", "re": "runtime_error", "wa": "wrong_answer",
            "tle": "time_limit", "mle": "memory_limit"}


def test_every_shipped_profile_has_its_programs() -> None:
    assert set(SOURCES) == set(SHIPPED)
    for name, p in SHIPPED.items():
        wanted = set(EXPECTED) if p.compile else set(EXPECTED) - {"ce"}
        assert set(SOURCES[name]) == wanted, name


@pytest.mark.root
@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_language(tmp_path: Path, name: str) -> None:
    """Hello world under the defaults; CE, RE, WA, TLE and MLE each get their verdict."""
    profile = SHIPPED[name]
    if profile.unavailable:
        pytest.skip(f"{name} is unavailable here: {profile.unavailable}")
    with Daemon(tmp_path, pool_profiles=[name], concurrency=2, pool_size=2) as d:
        c = d.connect()
        info = next(p for p in c.welcome.profiles if p.name == name)
        assert info.available is True and info.version, info
        t0 = time.monotonic()
        for scenario, source in SOURCES[name].items():
            limits = None
            if scenario == "tle":  # a short limit keeps the test short
                limits = proto.JobLimits(cpu_time=1.0, wall_time=10.0)
            c.submit(scenario, name, files={profile.entry: source}, limits=limits,
                     tests=[proto.TestCase(expected_output=HELLO)])
        row: dict[str, str] = {}
        for scenario in SOURCES[name]:
            res, _ = c.result(scenario)
            assert isinstance(res, proto.JobResult), (scenario, res)
            if scenario == "ce":
                assert res.compile is not None and not res.steps
                step = res.compile
                assert step.stderr, "the compiler's messages come back"
            else:
                assert res.compile is None or res.compile.verdict == "ok", res.compile
                step = res.steps[0]
            row[scenario] = f"{step.verdict} ({step.reason or '-'}, {step.cpu_time:.3f}s)"
            assert step.verdict == EXPECTED[scenario], (scenario, step)
            if scenario == "hello":
                assert step.stdout == HELLO and step.stderr == b"", step
            if scenario == "tle":
                # cpu, unless the host is so loaded that 10 s of wall time came first
                assert (step.reason == "cpu" and step.cpu_time < 1.2) or step.reason == "wall", step
        print(f"\n{name} ({info.version}): " + "; ".join(f"{k}={v}" for k, v in row.items())
              + f"; all in {time.monotonic() - t0:.1f}s")


# --------------------------------------------------------------- listing them


@pytest.mark.root
def test_welcome_and_sandboxctl_list_versions_and_availability(tmp_path: Path) -> None:
    with Daemon(tmp_path) as d:
        infos = {p.name: p for p in d.connect().welcome.profiles}
        assert set(infos) == set(SHIPPED)
        for name, p in SHIPPED.items():
            info = infos[name]
            assert info.entry == p.entry
            if p.unavailable:
                assert (info.available, info.unavailable_reason) == (False, p.unavailable)
                assert info.version is None
            else:
                assert info.available is True and info.unavailable_reason is None
                assert info.version == p.version() != ""
        sandboxctl = Path(sys.executable).parent / "sandboxctl"
        out = subprocess.run([str(sandboxctl), "--socket", d.socket, "profiles"],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert lines[0].split()[:4] == ["NAME", "AVAILABLE", "VERSION", "COMPILED"]
        for name, p in SHIPPED.items():
            line = next(line for line in lines if line.startswith(name + " "))
            if p.unavailable:
                assert line.split()[1] == "no" and f"(unavailable: {p.unavailable})" in line
            else:
                assert line.split()[1] == "yes" and p.version() in line


@pytest.mark.root
def test_an_unavailable_profile_is_listed_and_refused_never_a_crash(tmp_path: Path) -> None:
    pdir = tmp_path / "profiles"
    pdir.mkdir()
    (pdir / "bash.toml").write_text((ROOT / "profiles" / "bash.toml").read_text())
    (pdir / "cobol.toml").write_text('name = "cobol"\nrun = ["cobc", "-x", "{entry}"]\n'
                                     'needs = ["/opt/nonexistent/cobc"]\n'
                                     'version = ["/opt/nonexistent/cobc", "--version"]\n')
    with Daemon(tmp_path, profiles_dir=str(pdir), pool_profiles=["bash", "cobol"]) as d:
        c = d.connect()
        info = next(p for p in c.welcome.profiles if p.name == "cobol")
        assert info.available is False
        assert info.unavailable_reason == "/opt/nonexistent/cobc is not installed on this host"
        c.submit("x", "cobol", files={"main.cob": b""})
        err, _ = c.result("x")
        assert isinstance(err, proto.ErrorReport) and err.code == "unknown_profile"
        assert "/opt/nonexistent/cobc is not installed" in err.message
        assert c.run("y", "bash", files={"main.sh": b"echo fine"}).steps[0].stdout == b"fine\n"


@pytest.mark.root
def test_a_broken_profile_stops_the_daemon_with_file_line_and_key(tmp_path: Path) -> None:
    pdir = tmp_path / "profiles"
    pdir.mkdir()
    (pdir / "bad.toml").write_text('name = "bad"\nrun = ["x"]\nlimits = { cpu_tim = 1 }\n')
    d = Daemon(tmp_path, profiles_dir=str(pdir))
    with pytest.raises(RuntimeError, match=r"daemon exited 2: .*bad\.toml:3: limits: .*cpu_tim"):
        d.start()
