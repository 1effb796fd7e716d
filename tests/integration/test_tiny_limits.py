"""Limits as judges set them: down to what the kernel can enforce, never refused for being small.

A judge's memory limit of 1 KiB, an open-files limit of 1 or a stack of 0 is
the judge's business: the job gets the verdict the limit deserves
(``memory_limit``, a runtime error of the program), never a refusal and never
``sandbox_error``, whatever part of starting the job (the cgroup write, the
job process reading its exec request, the execve, the interpreter's start)
the limit hits first. docs/profiles.md, "Tiny limits", has the table these
tests hold.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import sandboxd_protocol as proto
from sandboxd.limits import KiB, MiB
from sandboxd_testing import leftovers
from sandboxd_testing.daemon import Client, Daemon, module_daemon

pytestmark = pytest.mark.root

HELLO_PY = b'print("hello")\n'
HELLO_C = b'#include <stdio.h>\nint main(void) { puts("hello"); return 0; }\n'


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    yield from module_daemon(tmp_path_factory.mktemp("tiny"), pool_profiles=["python3"],
                             concurrency=2)


@pytest.fixture
def leftovers_view(daemon: Daemon) -> Iterator[leftovers.View | None]:
    """The module's daemon keeps warm containers between tests by design."""
    yield leftovers.daemon_view(daemon.pid, daemon.instance)
    daemon.wait_warm()


@pytest.fixture(scope="module")
def client(daemon: Daemon) -> Iterator[Client]:
    c = daemon.connect()
    try:
        yield c
    finally:
        c.close()


def only_step(res: proto.JobResult) -> proto.StepResult:
    assert res.compile is None or res.compile.verdict == "ok", res.compile
    (step,) = res.steps
    return step


@pytest.mark.parametrize("memory", [1, 1 * KiB, 4 * KiB, 64 * KiB, 256 * KiB, 1 * MiB, 2 * MiB])
@pytest.mark.parametrize("warm", [True, False])
def test_python_under_a_tiny_memory_limit_is_memory_limit(client: Client, memory: int,
                                                          warm: bool) -> None:
    res = client.job(profile="python3", files={"main.py": HELLO_PY},
                     limits=proto.JobLimits(memory=memory), warm_runtime=warm)
    step = only_step(res)
    assert step.verdict == "memory_limit", step
    assert step.reason is not None and step.reason.startswith("memory"), step
    assert b"hello" not in step.stdout
    assert "/sys/fs/cgroup" not in step.reason, "no host path in a verdict's reason"


def test_python_starts_at_a_few_mib(client: Client) -> None:
    """The other side of the edge: the table in the docs says where the interpreter fits."""
    step = only_step(client.job(profile="python3", files={"main.py": HELLO_PY},
                                limits=proto.JobLimits(memory=8 * MiB)))
    assert step.verdict == "ok" and step.stdout == b"hello\n", step


@pytest.mark.parametrize("memory", [1, 1 * KiB, 64 * KiB])
def test_a_huge_exec_request_under_a_tiny_limit_is_memory_limit(client: Client,
                                                               memory: int) -> None:
    """The job process reads its exec request (argv, env) after the limit is set: with a
    300 KB argv it dies of the limit while reading, before its execve."""
    step = only_step(client.job(profile="bash", files={}, argv=["/bin/echo", *["x" * 100_000] * 3],
                                limits=proto.JobLimits(memory=memory)))
    assert step.verdict == "memory_limit", step


def test_c_under_1_kib_is_memory_limit_and_compiles_normally(client: Client) -> None:
    res = client.job(profile="c", files={"main.c": HELLO_C},
                     limits=proto.JobLimits(memory=1 * KiB))
    assert res.compile is not None and res.compile.verdict == "ok", res.compile
    assert only_step(res).verdict == "memory_limit"


@pytest.mark.parametrize(("limits", "verdict", "reason"), [
    # The dynamic loader cannot open libc: exit 127, EMFILE on stderr.
    (proto.JobLimits(open_files=1), "runtime_error", "exit code 127"),
    (proto.JobLimits(open_files=3), "runtime_error", "exit code 127"),
    # The kernel starts the program with no stack to grow into.
    (proto.JobLimits(stack=0), "runtime_error", "signal SIGSEGV"),
    (proto.JobLimits(cpu_time=1e-6), "time_limit", "cpu"),
    (proto.JobLimits(wall_time=1e-6), "time_limit", "wall"),
])
def test_other_tiny_limits_are_the_jobs_verdict(client: Client, limits: proto.JobLimits,
                                                verdict: str, reason: str) -> None:
    step = only_step(client.job(profile="bash", files={}, argv=["/bin/echo", "hi"],
                                limits=limits, warm_runtime=False))
    assert (step.verdict, step.reason) == (verdict, reason), step


def test_a_one_byte_tmp_holds_one_page(client: Client) -> None:
    """tmpfs rounds size up to a page (size=0 would mean unlimited: 1 is the floor)."""
    code = (b"import os\nfd = os.open('/tmp/a', os.O_WRONLY | os.O_CREAT)\n"
            b"os.write(fd, b'x' * 4096)\n"
            b"try:\n    os.write(fd, b'x')\nexcept OSError as e:\n    print(e.strerror)\n")
    step = only_step(client.job(profile="python3", files={"main.py": code},
                                limits=proto.JobLimits(tmp_size=1), warm_runtime=False))
    assert step.verdict == "ok" and step.stdout == b"No space left on device\n", step


def test_a_box_too_small_for_the_jobs_files_is_refused_clearly(client: Client) -> None:
    """/box holds the job's own files: a box too small for them is a bad job, said so."""
    client.submit("big-files", "python3", files={"main.py": b"#" * 20_000 + b"\n"},
                  limits=proto.JobLimits(box_size=1))
    got, _ = client.result("big-files")
    assert isinstance(got, proto.ErrorReport), got
    assert "box_size" in got.message and "files" in got.message, got


def test_the_floor_is_the_wire_range() -> None:
    """No policy minimum above the wire's own range for these limits."""
    from sandboxd.limits import POLICY
    from sandboxd_protocol import LIMITS_BY_NAME

    for name in ("memory", "box_size", "tmp_size", "open_files", "stack", "file_size",
                 "output", "pids"):
        assert POLICY[name].minimum <= max(LIMITS_BY_NAME[name].lo, 1), name
    assert POLICY["cpu_time"].minimum <= 1e-6 and POLICY["wall_time"].minimum <= 1e-6


def test_a_compile_only_job_is_not_refused_for_its_run_limits(client: Client) -> None:
    """``tests: []`` compiles only: limits no step uses (above every ceiling here) are
    not checked, and the result has the compile step and no steps."""
    res = client.job(profile="c", files={"main.c": HELLO_C}, tests=[],
                     limits=proto.JobLimits(memory=1 << 50, cpu_time=1e5))
    assert res.compile is not None and res.compile.verdict == "ok", res.compile
    assert res.steps == ()
    res = client.job(profile="c", files={"main.c": b"int main( {"}, tests=[])
    assert res.compile is not None and res.compile.verdict == "compile_error", res
    # The compile step's own limits are still checked: it runs.
    client.submit("bad-compile", "c", files={"main.c": HELLO_C}, tests=[],
                  compile=proto.CompileStep(limits=proto.JobLimits(memory=1 << 50)))
    got, _ = client.result("bad-compile")
    assert isinstance(got, proto.ErrorReport) and got.code == "limit_exceeded", got
    assert got.message.startswith("compile: "), got


def test_compile_only_needs_a_compile_step(client: Client) -> None:
    client.submit("nothing-to-do", "python3", files={"main.py": HELLO_PY}, tests=[])
    got, _ = client.result("nothing-to-do")
    assert isinstance(got, proto.ErrorReport) and got.code == "invalid_job", got
    assert "compile only" in got.message, got


# ----------------------------------------------------------------------------- java

def _java(body: str, head: str = "public class Main") -> bytes:
    return (f'{head} {{ public static void main(String[] a) {{ {body} }} }}\n').encode()


@pytest.fixture
def java(client: Client) -> Client:
    from sandboxd.profiles import load_dir

    profile = load_dir()["java"]
    if profile.unavailable:
        pytest.skip(f"java is unavailable here: {profile.unavailable}")
    return client


def test_a_jvm_that_cannot_start_in_its_heap_is_memory_limit(java: Client) -> None:
    """-Xmx1m (75 % of 2 MiB, at least 1 MiB): the VM refuses to start. Its message, on
    stdout by default, comes on stderr (-XX:+DisplayVMOutputToStderr) as a heap marker.

    Before that check the VM's start-up touches about 2 MiB (its peak reached the limit in
    12 of 15 runs here, the kernel reclaiming page cache to stay under it), so now and
    then the kernel's OOM killer ends it first (once in CI): a memory limit too, for the
    reason "memory". The marker's own path is checked without that race below."""
    res = java.job(profile="java", files={"Main.java": _java('System.out.println("hi");')},
                   limits=proto.JobLimits(memory=2 * MiB))
    step = only_step(res)
    assert (step.verdict, step.reason) in (("memory_limit", "heap: Too small maximum heap"),
                                           ("memory_limit", "memory")), step
    assert step.stdout == b"", step
    if step.reason == "memory":
        assert step.signal == 9 and step.memory_peak >= 2 * MiB - 64 * KiB, step
    else:
        assert b"Too small maximum heap" in step.stderr, step


def test_a_jvm_out_of_its_heap_is_memory_limit(java: Client) -> None:
    """A 512 MiB array under 64 MiB (-Xmx48m): the VM's OutOfMemoryError, a heap marker,
    with the VM's peak far below the cgroup's limit (16-17 MiB here), so no OOM kill."""
    res = java.job(profile="java", limits=proto.JobLimits(memory=64 * MiB), files={
        "Main.java": _java("byte[] b = new byte[512 << 20]; System.out.println(b.length);")})
    step = only_step(res)
    assert (step.verdict, step.reason) == ("memory_limit", "heap: java.lang.OutOfMemoryError"), \
        step
    assert step.stdout == b"" and b"Java heap space" in step.stderr, step
    assert step.exit_code == 1 and step.memory_peak < 48 * MiB, step


@pytest.mark.parametrize("head", ["public class Solution", "public final class Hello",
                                  "import java.util.*;\n\npublic class Main"])
def test_the_public_class_may_have_any_name(java: Client, head: str) -> None:
    res = java.job(profile="java",
                   files={"Main.java": _java('System.out.println("hello");', head)},
                   tests=[proto.TestCase(expected_output=b"hello\n")])
    assert only_step(res).verdict == "ok", res


def test_without_a_public_class_main_must_be_called_main(java: Client) -> None:
    ok = java.job(profile="java", files={"Main.java": _java('System.out.println("x");',
                                                               "class Main")})
    assert only_step(ok).stdout == b"x\n"
    res = java.job(profile="java", files={"Main.java": _java("", "class Foo")})
    assert res.compile is not None and res.compile.verdict == "compile_error", res
    assert b"no public class, and no class Main" in res.compile.stderr, res.compile
