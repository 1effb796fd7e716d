"""Warm runtimes (issue 18): Python started in a warm container before its job.

The oracle is the plain start itself: every program here runs twice on one daemon, once
handed to the waiting interpreter and once started plainly (``warm_runtime: false``),
and what the program observes of itself (argv, ``__main__``, sys.path, stdio, rlimits,
ids, capabilities, descriptors...), its output, exit status and tracebacks must be the
same, but for the differences docs/profiles.md lists (which are checked to be exactly
those). Which start a run had is told by ``/proc/self/cmdline`` (the warm one shows the
bootstrap: a listed difference).

Also: which jobs get the warm start (the judge path keeps the plain one), the pool's
shapes, CPU counted from the hand-over, and the native init's warm-start failures
(a runtime that cannot start is the sandbox's fault, with its reason).
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

import sandboxd_protocol as proto
from sandboxd import cgroups, jobs, runtimes, slots, spawn
from sandboxd.container import Container, RunStep
from sandboxd.isolation import identity
from sandboxd.isolation.rlimits import Rlimits
from sandboxd.limits import DEFAULT, MiB
from sandboxd.profiles import load_dir
from sandboxd.result import SandboxError
from sandboxd_testing import leftovers
from sandboxd_testing.daemon import Daemon, module_daemon

pytestmark = pytest.mark.root

PROFILES = load_dir()
PROFILE = PROFILES["python3"]
NODE = PROFILES["javascript"]
IS_WARM = ("import sys\n"
           "print('WARM' if b'_sandboxd_warm' in open('/proc/self/cmdline', 'rb').read() "
           "else 'PLAIN')\n")
IS_WARM_JS = ("console.log(require('fs').readFileSync('/proc/self/cmdline')"
              ".includes('_sandboxd_warm') ? 'WARM' : 'PLAIN')\n")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    if PROFILE.unavailable:
        pytest.skip(PROFILE.unavailable)
    warm = ["python3", *([] if NODE.unavailable else ["javascript"])]
    yield from module_daemon(tmp_path_factory.mktemp("warm"), pool_profiles=warm, pool_size=1,
                             concurrency=2)


def _ours(snap: leftovers.Snapshot) -> leftovers.Snapshot:
    """For the tests that make containers themselves: what other runs on a shared machine
    make meanwhile is not theirs (containers another live supervisor owns, cgroups not
    named after this process)."""
    foreign = leftovers.supervised_elsewhere(os.getpid())
    out = dict(snap)
    out["procs"] = [p for p in snap["procs"] if p[0] not in foreign]  # type: ignore[attr-defined]
    out["cgroups"] = {c for c in snap["cgroups"]  # type: ignore[attr-defined]
                      if f"sandboxd-warm-{os.getpid()}" in c}
    return out


@pytest.fixture
def leftovers_view(request: pytest.FixtureRequest) -> Iterator[leftovers.View | None]:
    if "daemon" not in request.fixturenames:
        yield _ours
        return
    d: Daemon = request.getfixturevalue("daemon")
    yield leftovers.daemon_view(d.pid, d.instance)
    d.wait_warm()


def run(d: Daemon, source: str | bytes | None = None, *, files: dict[str, bytes] | None = None,
        profile: str = "python3", **kw: Any) -> proto.StepResult:
    if files is None:
        files = {PROFILES[profile].entry: source.encode() if isinstance(source, str)
                 else source or b""}
    c = d.connect()
    try:
        res = c.job(profile=profile, files=files, **kw)
    finally:
        c.close()
    assert len(res.steps) == 1, res
    return res.steps[0]


def both(d: Daemon, source: str | bytes | None = None, profile: str = "python3", **kw: Any
         ) -> tuple[proto.StepResult, proto.StepResult]:
    """The same job handed to a warm runtime and started plainly; each checked to be so."""
    files = kw.pop("files", None)
    if files is None:
        files = {PROFILES[profile].entry: source.encode() if isinstance(source, str)
                 else source or b""}
    d.wait_warm()  # a miss would start the job plainly
    warm = run(d, files=files, profile=profile, **kw)
    plain = run(d, files=files, profile=profile, warm_runtime=False, **kw)
    assert _started(d, profile=profile, **kw) == "WARM"
    return warm, plain


def _started(d: Daemon, profile: str = "python3", **kw: Any) -> str:
    """Which start a job with these options gets: WARM or PLAIN."""
    d.wait_warm()
    step = run(d, IS_WARM if profile == "python3" else IS_WARM_JS, profile=profile, **kw)
    assert step.verdict in ("ok", "wrong_answer"), step
    return step.stdout.decode().strip()


def same(warm: proto.StepResult, plain: proto.StepResult) -> None:
    assert (warm.verdict, warm.exit_code, warm.signal, warm.stdout, warm.stderr) == (
        plain.verdict, plain.exit_code, plain.signal, plain.stdout, plain.stderr)


# ------------------------------------------------------------------ what the job sees

SELF = r'''
import json, os, resource, signal, sys, traceback
keys = sorted(globals())
def kind(fd):
    t = os.readlink(f"/proc/self/fd/{fd}")
    return t.split("[")[0] if "[" in t else t
def status():
    out = {}
    for line in open("/proc/self/status"):
        k, _, v = line.partition(":")
        if k.startswith(("Cap", "NoNewPrivs", "Seccomp", "Uid", "Gid", "Groups")):
            out[k] = v.strip()
    return out
import __main__
info = {
    "globals": keys, "argv": sys.argv, "orig_argv": sys.orig_argv, "path": sys.path,
    "file": __file__, "name": __name__, "doc": __doc__, "package": __package__,
    "spec": repr(__spec__), "cached": __cached__, "builtins": type(__builtins__).__name__,
    "loader": [type(__loader__).__name__, __loader__.name, __loader__.path],
    "main": sys.modules["__main__"] is __main__ and __main__.__dict__ is globals(),
    "flags": repr(sys.flags), "cwd": os.getcwd(), "env": dict(os.environ),
    "environ_block": open("/proc/self/environ", "rb").read().decode(),
    "fds": sorted(os.listdir("/proc/self/fd")), "kinds": [kind(fd) for fd in (0, 1, 2)],
    "stdin": [sys.stdin.seekable(), sys.stdin.isatty(), sys.stdin.encoding, sys.stdin.errors,
              sys.stdin.line_buffering, type(sys.stdin.buffer).__name__,
              sys.stdin.buffer.raw.name, sys.stdin.read()],
    "stdout": [s and [s.line_buffering, s.write_through, s.encoding, s.errors, s.mode,
                      type(s.buffer).__name__, s.seekable(), s.isatty()]
               for s in (sys.stdout, sys.stderr)],
    "rlimits": {r: resource.getrlimit(getattr(resource, r)) for r in (
        "RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_NOFILE", "RLIMIT_STACK", "RLIMIT_CORE",
        "RLIMIT_NICE", "RLIMIT_RTPRIO", "RLIMIT_AS", "RLIMIT_NPROC")},
    "ids": [os.getuid(), os.geteuid(), os.getgid(), os.getegid(), os.getgroups(),
            os.getpid(), os.getppid(), os.getpgrp(), os.getsid(0)],
    "status": status(), "umask": os.umask(0o22), "nice": os.nice(0),
    "signals": [str(signal.getsignal(s)) for s in (signal.SIGINT, signal.SIGPIPE,
                signal.SIGXFSZ, signal.SIGTERM, signal.SIGCHLD)],
    "blocked": sorted(signal.pthread_sigmask(signal.SIG_BLOCK, [])),
    "modules": sorted(sys.modules), "importers": sorted(sys.path_importer_cache),
    "recursionlimit": sys.getrecursionlimit(), "stack": len(traceback.extract_stack()),
    "hash": hash("x") == hash("x"), "affinity": sorted(os.sched_getaffinity(0)),
    "frozen": __import__("gc").get_freeze_count(),
}
print(json.dumps(info, default=repr, sort_keys=True))
'''


def test_the_job_sees_what_a_plain_start_gives_it(daemon: Daemon) -> None:
    warm, plain = both(daemon, SELF, stdin=b"line one\nline two\n")
    assert warm.verdict == plain.verdict == "ok", (warm, plain)
    w, p = json.loads(warm.stdout), json.loads(plain.stdout)
    # The listed differences (docs/profiles.md), and nothing else: one frame of the
    # bootstrap under the job's code.
    assert w.pop("stack") == p.pop("stack") + 1
    # ... and the start-up's objects frozen (gc.freeze) before the hand-over.
    assert w.pop("frozen") > 1000 and p.pop("frozen") == 0
    assert w == p
    assert p["argv"] == ["main.py"] and p["file"] == "/box/main.py" and p["path"][0] == "/box"
    assert p["fds"] == ["0", "1", "2", "3"]  # 3: listdir's own; the init's socket is gone
    assert p["stdin"][-1] == "line one\nline two\n"
    assert p["status"]["NoNewPrivs"] == "1" and p["status"]["CapEff"] == "0000000000000000"


@pytest.mark.parametrize("source", [
    # an uncaught exception, two frames deep: the traceback names only the job's frames
    "def f():\n    return 1 / 0\ndef g():\n    f()\ng()\n",
    "print('out')\nraise ValueError('bad') from KeyError('k')\n",
    "print(\n",  # SyntaxError: no traceback header, as CPython prints it
    "x = 1\n  y = 2\n",  # IndentationError
    "import sys\nsys.exit(3)\n",
    "import sys\nsys.exit('bye')\n",
    "raise SystemExit\n",
    "import os\nos._exit(7)\n",
    "raise KeyboardInterrupt\n",  # CPython exits by SIGINT
    "import os, signal\nos.kill(os.getpid(), signal.SIGTERM)\n",
    "import sys\nsys.excepthook = lambda *a: 1 / 0\nraise ValueError('x')\n",
    "import sys\ndef hook(t, v, tb):\n"
    "    print('hooked', t.__name__, tb.tb_frame.f_code.co_filename)\n"
    "sys.excepthook = hook\nraise ValueError('x')\n",
    "import sys\ndel sys.excepthook\nraise ValueError('x')\n",
    # atexit (in order), a thread joined at exit, __del__ at finalisation, __file__ gone by
    # then, a traceback from a thread
    "import atexit, threading, time, __main__\n"
    "class A:\n    def __del__(self):\n        print('del', flush=True)\n"
    "a = A()\natexit.register(print, 'atexit 1')\n"
    "atexit.register(lambda: print('atexit 2', hasattr(__main__, '__file__')))\n"
    "go = threading.Event()\n"
    "def t():\n    go.wait()\n    time.sleep(0.05)\n    print('thread done')\n"
    "threading.Thread(target=t).start()\nthreading.Thread(target=lambda: 1 / 0).start()\n"
    "print('main done', flush=True)\ngo.set()\n",
    "import sys\nprint(input()[::-1])\nprint(sys.stdin.read())\n",
    "print('no newline', end='')\n",
    "import sys\nsys.stdout.write('x' * 100000)\nsys.stderr.write('e' * 100000)\n",
    b"# -*- coding: latin-1 -*-\nprint('caf\xe9')\n",
    b"\xef\xbb\xbfprint('with a BOM')\n",
    "import inspect, pickle\nclass P:\n    pass\nprint(len(pickle.dumps(P())), P.__module__)\n",
    "if __name__ == '__main__':\n    print('main', __name__)\n",
    "import warnings\nwarnings.warn('careful')\n",
    "import sys\nprint(sys.argv, sys.flags.dont_write_bytecode)\n",
    # the exit, which the bootstrap carries out itself (docs/profiles.md): statuses as C
    # takes them, and the message of a SystemExit that is not an integer
    "import sys\nsys.exit(True)\n",
    "import sys\nsys.exit(2 ** 70)\n",
    "import sys\nsys.exit(-1)\n",
    "import sys\nsys.exit([1, 2])\n",
    "import sys\nsys.stderr = None\nsys.exit('no stderr')\n",
    "exit(2)\n",
    "import sys\nsys.excepthook = lambda *a: sys.exit(5)\nraise ValueError\n",
    # a failed flush of stdout at exit: reported, and status 120
    "import sys\nsys.stdout = open('/dev/full', 'w')\nprint('x')\n",
    "import os\nprint('x')\nos.close(1)\n",
    # __del__ when the frame that held it goes (SystemExit: before atexit; an uncaught
    # exception: after, the traceback held in sys.last_traceback until the teardown)
    "class A:\n    def __del__(self):\n        print('del A', flush=True)\n"
    "def f():\n    a = A()\n    raise SystemExit(4)\nimport atexit\n"
    "atexit.register(print, 'atexit')\nf()\n",
    "class A:\n    def __del__(self):\n        print('del A', flush=True)\n"
    "def f():\n    a = A()\n    1 / 0\nimport atexit\natexit.register(print, 'atexit')\nf()\n",
    "class A:\n    def __del__(self):\n        print('del A', flush=True)\n"
    "x = A()\nraise KeyboardInterrupt\n",
    # objects of the job's finalised at exit: a generator's finally, a file left open,
    # one hung on builtins or sys, a cycle, weakref.finalize, one of an imported module's
    "def g():\n    try:\n        yield 1\n    finally:\n        print('finally', flush=True)\n"
    "it = g()\nnext(it)\n",
    "f = open('out.txt', 'w')\nf.write('data')\nimport atexit\n"
    "atexit.register(lambda: print(open('out.txt').read()))\n",
    "import os\nclass A:\n    def __init__(s, n): s.n = n\n    def __del__(self, w=os.write):\n"
    "        w(1, b'del %d\\n' % self.n)\n"
    "a, _b = A(1), A(2)\nc = [A(3)]\nc.append(c)\nimport builtins, sys\nbuiltins.zz = A(4)\n",
    "import weakref\nclass A:\n    pass\na = A()\nweakref.finalize(a, print, 'finalized')\n",
    "import signal, os, atexit\nsignal.signal(signal.SIGTERM, lambda *a: print('handler'))\n"
    "atexit.register(lambda: os.kill(os.getpid(), signal.SIGTERM))\n",
    "import os\nif os.fork() == 0:\n    print('child')\n"
    "else:\n    os.wait()\n    print('parent')\n",
    # C stdio (flushed by exit() only): the interpreter's own finalisation
    "import ctypes\nctypes.CDLL(None).printf(b'from C\\n')\nprint('py')\n",
], ids=lambda s: (s if isinstance(s, str) else s.decode("latin-1")).splitlines()[0][:40])
def test_outcomes_match_the_plain_start(daemon: Daemon, source: str | bytes) -> None:
    warm, plain = both(daemon, source, stdin=b"abc\nrest\n")
    same(warm, plain)


def test_a_module_of_the_jobs_is_torn_down_at_exit(daemon: Daemon) -> None:
    files = {"main.py": b"import helper\nprint(helper.X)\n",
             "helper.py": b"class A:\n    def __del__(self):\n        print('helper del')\n"
                          b"X = 1\nobj = A()\n"}
    warm, plain = both(daemon, files=files)
    same(warm, plain)
    assert warm.stdout == b"1\nhelper del\n", warm


def test_an_object_hung_on_a_start_up_module_is_not_finalised(daemon: Daemon) -> None:
    """The listed difference (docs/profiles.md): the modules loaded before the job are not
    torn down at its exit, so what the job left only there is not finalised."""
    warm, plain = both(daemon, "import os\nclass A:\n    def __del__(self):\n"
                               "        print('del')\nos.cache = A()\nprint('end')\n")
    assert plain.stdout == b"end\ndel\n" and warm.stdout == b"end\n", (warm, plain)
    assert warm.exit_code == plain.exit_code == 0


def test_the_entry_file_missing_is_said_as_python_says_it(daemon: Daemon) -> None:
    warm, plain = both(daemon, files={"other.py": b"print(1)\n"})
    same(warm, plain)
    assert warm.exit_code == 2 and b"can't open file '/box/main.py'" in warm.stderr


def test_a_zip_or_a_directory_as_the_entry_runs_its___main__(daemon: Daemon) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("__main__.py", "import sys\nprint('from the zip', sys.path[0], __name__)\n")
    same(*both(daemon, buf.getvalue()))
    in_dir = "/".join(("main.py", "__main__.py"))  # the entry a directory, this file in it
    same(*both(daemon, files={in_dir: b"import sys\nprint('dir', sys.path[0])\n"}))
    same(*both(daemon, files={in_dir.replace("__main__", "x"): b"print(1)\n"}))  # no __main__


def test_a_module_beside_the_entry_is_importable(daemon: Daemon) -> None:
    warm, plain = both(daemon, files={"main.py": b"import helper\nprint(helper.X)\n",
                                      "helper.py": b"X = 42\n"})
    same(warm, plain)
    assert warm.stdout == b"42\n"


# ------------------------------------------------------------------ who gets it

@pytest.mark.parametrize(("options", "expected"), [
    ({}, "WARM"),
    ({"warm_runtime": False}, "PLAIN"),
    ({"warm_runtime": True}, "WARM"),
    # the judge path keeps the plain start, unless the job asks
    ({"expected_output": b"WARM\n"}, "PLAIN"),
    ({"expected_output": b"WARM\n", "warm_runtime": True}, "WARM"),
    ({"tests": (proto.TestCase(expected_output=b"PLAIN\n"),)}, "PLAIN"),
    ({"cpuset_pin": True}, "PLAIN"),
    # what the interpreter started with must be the job's
    ({"argv": ("/usr/bin/python3", "-B", "main.py")}, "PLAIN"),
    ({"env": {"X": "1"}}, "PLAIN"),
    # rlimits lower than the interpreter's: Python lowers its own at the hand-over
    ({"limits": proto.JobLimits(cpu_time=2.0)}, "WARM"),
    ({"limits": proto.JobLimits(file_size=MiB, open_files=64, stack=8 * MiB)}, "WARM"),
    ({"limits": proto.JobLimits(cpu_time=9.0)}, "PLAIN"),  # higher: it could not raise it
    ({"limits": proto.JobLimits(cpu_time=2.0, open_files=1024)}, "PLAIN"),
    ({"limits": proto.JobLimits(memory=16 * MiB)}, "PLAIN"),  # under the runtime's floor
    ({"limits": proto.JobLimits(wall_time=3.0, memory=200 * MiB, pids=20)}, "WARM"),
    ({"interactive_stdin": True}, "PLAIN"),
])
def test_which_jobs_are_handed_to_the_warm_runtime(daemon: Daemon, options: dict[str, Any],
                                                   expected: str) -> None:
    daemon.wait_warm()
    c = daemon.connect()
    try:
        c.submit("which", "python3", files={"main.py": IS_WARM.encode()}, **options)
        if options.get("interactive_stdin"):
            c.send(proto.EndOfStdin(id="which"))
        res, _ = c.result("which")
    finally:
        c.close()
    assert isinstance(res, proto.JobResult), res
    assert res.steps[0].stdout.decode().strip() == expected, res


LOWER = proto.JobLimits(cpu_time=2.0, file_size=MiB, open_files=64, stack=8 * MiB)


def test_lower_rlimits_are_the_jobs_exactly(daemon: Daemon) -> None:
    source = ("import resource as r\nprint([r.getrlimit(getattr(r, 'RLIMIT_' + n)) for n in"
              " ('CPU', 'FSIZE', 'NOFILE', 'STACK', 'CORE', 'NICE', 'RTPRIO')])\n")
    warm, plain = both(daemon, source, limits=LOWER)
    same(warm, plain)
    assert warm.stdout == (b"[(3, 3), (1048576, 1048576), (64, 64), (8388608, 8388608),"
                           b" (0, 0), (0, 0), (0, 0)]\n"), warm


@pytest.mark.parametrize("source", [
    # past the lowered file size: SIGXFSZ, as a plain start gets
    "open('big', 'wb').write(b'x' * (2 << 20))\n",
    # past the lowered open files
    "fs = [open('/dev/null') for _ in range(100)]\n",
    # raising a lowered limit back is refused
    "import resource as r\nr.setrlimit(r.RLIMIT_CPU, (5, 5))\n",
    # past the lowered CPU time: the watch or SIGXCPU ends it, as a plain start's
    "while True: pass\n",
])
def test_lowered_rlimits_hold_as_a_plain_starts(daemon: Daemon, source: str) -> None:
    limits = LOWER if "while" not in source else proto.JobLimits(cpu_time=0.3, wall_time=5.0,
                                                                  file_size=MiB)
    warm, plain = both(daemon, source, limits=limits)
    assert warm.verdict == plain.verdict != "ok", (warm, plain)
    assert (warm.exit_code, warm.signal) == (plain.exit_code, plain.signal), (warm, plain)


def test_the_pool_keeps_warm_and_plain_shapes_apart(daemon: Daemon) -> None:
    run(daemon, "print(1)", warm_runtime=False)
    daemon.wait_warm()
    # Two shapes: the warm one, and the plain one (which has python3's default limits,
    # and so is the very shape of other profiles with those: it is listed under the first
    # such profile's name, "python3+plain" if none).
    pools = [p for p in daemon.stats().pools if "javascript" not in p.profile]
    assert len(pools) == 2 and all(p.target == 1 for p in pools), pools
    assert "python3" in {p.profile for p in pools}
    # Both kinds wait side by side, each recognised as unused by the leftovers check.
    waiting = leftovers.warm_containers(daemon.pid)
    assert any(leftovers.waiting_runtime(pid) for pid in waiting)
    assert any(not leftovers.waiting_runtime(pid) and pid in waiting
               and Path(f"/proc/{pid}/comm").read_text().startswith("sandboxd-jobexe")
               for pid in waiting)


def test_cpu_counts_from_the_hand_over(daemon: Daemon) -> None:
    """The interpreter's own CPU clock includes its start-up; the job's CPU time does not
    when warm (the start-up ran before the hand-over) and does when plain."""
    source = ("import resource\nr = resource.getrusage(resource.RUSAGE_SELF)\n"
              "print(r.ru_utime + r.ru_stime)\n")
    warm, plain = both(daemon, source)
    assert warm.cpu_time < float(warm.stdout), warm
    assert float(plain.stdout) <= plain.cpu_time, plain


# ------------------------------------------------------------------ the container itself

def _container_run(warm: spawn.WarmStart, step: RunStep | None
                   ) -> tuple[int, int, Any]:
    """A container made as the pool makes one, with ``warm`` started in it; then ``step``.
    Returns the cgroup's CPU (ns) and memory at the hand-over, and the result."""
    allocator = slots.SlotAllocator()
    slot = allocator.take()
    spec = spawn.ContainerSpec(slot=slot, box_size=DEFAULT.box_size,
                                   tmp_size=DEFAULT.tmp_size)
    backend = cgroups.open_backend(f"warm-{os.getpid()}")
    server = spawn.ForkServer()
    plan_fd = os.memfd_create("sandboxd-test-plan", os.MFD_CLOEXEC)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        os.write(plan_fd, spawn.plan_bytes(spec))
        try:
            pid, pidfd = server.clone(identity.IdMap(slot), theirs, plan_fd)
        finally:
            theirs.close()
        cg = backend.create(f"sandboxd-warm-{os.getpid()}-{slot}")

        async def go() -> tuple[int, int, Any]:
            box = Container(spawn.Spawned(pid, pidfd, ours), cg)
            try:
                await box.wait_ready(warm)
                stats = cg.stats()
                result = await box.run(step) if step is not None else None
                return stats.cpu_usage_ns, stats.memory_peak, result
            finally:
                await box.destroy()

        return trio.run(go)
    finally:
        ours.close()
        os.close(plan_fd)
        server.close()
        backend.close()
        allocator.give(slot)


def _warm(argv: list[str] | None = None) -> spawn.WarmStart:
    return jobs.default_spec(PROFILE).warm if argv is None else spawn.WarmStart(
        argv=tuple(argv), env=(("PATH", spawn.JOB_PATH),), cwd="/box",
        rlimits=runtimes.step_rlimits(DEFAULT), runtime="python")


def test_the_interpreter_is_in_the_jobs_cgroup_before_the_job() -> None:
    warm = _warm()
    step = RunStep(argv=PROFILE.run_argv(["main.py"]), limits=PROFILE.limits,
                   files={"main.py": b"print('hi')\n"}, env=dict(PROFILE.env),
                   cwd=PROFILE.workdir)
    cpu_before, memory_before, result = _container_run(warm, step)
    # The start-up ran, and was charged, in the job's cgroup: the job's memory peak holds
    # what the interpreter holds; its CPU is counted from the hand-over.
    assert cpu_before > 0 and memory_before > 0
    assert result.verdict == "ok" and result.stdout == b"hi\n", result
    assert result.memory_peak >= memory_before


def test_a_job_not_the_one_warmed_for_is_refused() -> None:
    step = RunStep(argv=["/usr/bin/python3", "-I", "main.py"], limits=PROFILE.limits,
                   files={"main.py": b"print('hi')\n"}, env=dict(PROFILE.env))
    with pytest.raises(SandboxError, match="not the one the warm runtime was started for"):
        _container_run(_warm(), step)


@pytest.mark.parametrize(("argv", "match"), [
    (["/nonexistent/python3", "-c", "x"],
     r"job process: warm runtime execve /nonexistent/python3: No such file or directory"),
    (["/bin/true", "-c", "x"], r"warm runtime: .*ended before its job \(wait status 0\)"),
    (["/usr/bin/python3", "-c", "import os; os.write(3, b'not ready'); os._exit(1)"],
     r"warm runtime: .*ended before its job \(wait status 0x100\)"),
])
def test_a_runtime_that_cannot_start_is_the_sandboxs_fault(argv: list[str], match: str) -> None:
    with pytest.raises(SandboxError, match=match):
        _container_run(_warm(argv), None)


def test_a_container_destroyed_unused_ends_its_interpreter_quietly() -> None:
    cpu, _memory, result = _container_run(_warm(), None)
    assert cpu > 0 and result is None  # destroy() found nothing left behind (no leftovers)


def _loader_run(tmp_path: Path, boot: bytes) -> subprocess.CompletedProcess[bytes]:
    """The Python runtime's -c loader started as a warm container's job process starts it
    (its socket on descriptor 3), given ``boot`` and then a job: outside any container,
    which the loader does not depend on."""
    (tmp_path / "main.py").write_text("import sys\nprint('ran', sys.argv)\n")
    rt = runtimes.RUNTIMES["python"]
    ours, theirs = socket.socketpair()
    env = {"PATH": spawn.JOB_PATH}
    argv = ["/usr/bin/python3", "-B"]
    with ours, theirs:
        proc = subprocess.Popen([*argv, rt.code_option, rt.source()], cwd=tmp_path, env=env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, close_fds=False,
                                preexec_fn=lambda: os.dup2(theirs.fileno(), 3))
        theirs.close()
        ours.sendall(boot)
        assert ours.recv(1) == b"\x06"
        ours.sendall(spawn.encode_exec([*argv, "main.py"], env, str(tmp_path),
                                       Rlimits()))
        out, err = proc.communicate(timeout=30)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_the_loader_compiles_the_bootstrap_for_another_python(tmp_path: Path) -> None:
    """The bootstrap's code is the supervisor's Python's; an interpreter of another magic
    number (an image's) compiles the source sent with it instead."""
    boot = runtimes.RUNTIMES["python"].boot_code()
    native = _loader_run(tmp_path, boot)
    assert (native.returncode, native.stdout) == (0, b"ran ['main.py']\n"), native
    other = boot[:4] + bytes(b ^ 0xFF for b in boot[4:8]) + boot[8:]  # another magic number
    assert other != boot
    compiled = _loader_run(tmp_path, other)
    assert (compiled.returncode, compiled.stdout) == (0, b"ran ['main.py']\n"), compiled


def test_sigint_is_what_ends_a_job_with_an_uncaught_keyboardinterrupt(daemon: Daemon) -> None:
    warm, plain = both(daemon, "raise KeyboardInterrupt\n")
    assert warm.signal == plain.signal == signal.SIGINT
    assert warm.stderr.startswith(b"Traceback (most recent call last):\n  File \"/box/main.py\"")


# ------------------------------------------------------------------ node

NODE_SELF = r"""
const fs = require("fs");
const kind = (fd) => { const t = fs.readlinkSync(`/proc/self/fd/${fd}`); return t.split("[")[0]; };
console.log(JSON.stringify({
  argv: process.argv, execArgv: process.execArgv, argv0: process.argv0,
  execPath: process.execPath, cwd: process.cwd(), env: process.env, eval: process._eval,
  main: require.main === module, filename: __filename, dirname: __dirname,
  paths: module.paths, globals: Object.keys(globalThis).sort(),
  fds: fs.readdirSync("/proc/self/fd").sort(), kinds: [0, 1, 2].map(kind),
  sockets: fs.readdirSync("/proc/self/fd").filter((fd) => {
    try { return fs.readlinkSync(`/proc/self/fd/${fd}`).startsWith("socket:"); }
    catch (e) { return false; }
  }),
  stdin: fs.readFileSync(0, "utf8"), isTTY: [process.stdout.isTTY, process.stderr.isTTY],
  ids: [process.getuid(), process.getgid(), process.getgroups(), process.pid, process.ppid],
  title: process.title, exitCode: process.exitCode, heap: require("v8").getHeapStatistics()
    .heap_size_limit,
}));
"""


@pytest.fixture
def node() -> None:
    if NODE.unavailable:
        pytest.skip(NODE.unavailable)


def test_node_sees_what_a_plain_start_gives_it(daemon: Daemon, node: None) -> None:
    warm, plain = both(daemon, NODE_SELF, profile="javascript", stdin=b"in\n")
    assert warm.verdict == plain.verdict == "ok", (warm, plain)
    w, p = json.loads(warm.stdout), json.loads(plain.stdout)
    assert w == p
    assert p["argv"] == ["/usr/bin/node", "/box/main.js"] and p["main"] and p["stdin"] == "in\n"
    assert "require" not in p["globals"] and p["sockets"] == []  # the init's socket: closed


def _frames_of_node(stderr: bytes) -> bytes:
    """An error's report without node's own frames under the job's (a listed difference:
    the warm start's end in the bootstrap's -e frames)."""
    return b"\n".join(line for line in stderr.splitlines()
                      if not line.strip().startswith(b"at node:internal")
                      and b"[eval]" not in line and b"runScriptInThisContext" not in line
                      and b"node:internal/process/execution" not in line)


@pytest.mark.parametrize("source", [
    "function f() { throw new Error('boom'); }\nf();\n",
    "process.exitCode = 4;\nconsole.log('set');\n",
    "process.on('exit', (c) => console.log('exit', c));\nprocess.exit(3);\n",
    "Promise.reject(new Error('nobody catches me'));\n",
    "setTimeout(() => console.log('later'), 20);\nconsole.log('first');\n",
    "process.kill(process.pid, 'SIGTERM');\n",
    "console.log(require('fs').readFileSync(0, 'utf8').split('').reverse().join(''));\n",
    "console.log(typeof require, typeof module, typeof exports, typeof __filename);\n",
    "syntax error here\n",
], ids=lambda s: s.splitlines()[0][:40])
def test_node_outcomes_match_the_plain_start(daemon: Daemon, node: None, source: str) -> None:
    warm, plain = both(daemon, source, profile="javascript", stdin=b"abc")
    assert (warm.verdict, warm.exit_code, warm.signal, warm.stdout) == (
        plain.verdict, plain.exit_code, plain.signal, plain.stdout)
    assert _frames_of_node(warm.stderr) == _frames_of_node(plain.stderr)


def test_node_runs_an_es_module_entry(daemon: Daemon, node: None) -> None:
    files = {"main.js": b"import { readFileSync } from 'fs';\n"
                        b"console.log(typeof require, import.meta.url, readFileSync(0, 'utf8'));\n",
             "package.json": b'{"type": "module"}\n'}
    warm, plain = both(daemon, files=files, profile="javascript", stdin=b"x")
    assert warm.stdout == plain.stdout == b"undefined file:///box/main.js x\n", (warm, plain)


def test_node_gets_the_plain_start_when_its_heap_ceiling_would_differ(daemon: Daemon,
                                                                       node: None) -> None:
    assert _started(daemon, profile="javascript") == "WARM"
    assert _started(daemon, profile="javascript",
                    limits=proto.JobLimits(memory=300 * MiB)) == "PLAIN"
    # node cannot lower its own rlimits: a lower CPU time is the plain start's too
    assert _started(daemon, profile="javascript",
                    limits=proto.JobLimits(cpu_time=2.0)) == "PLAIN"
