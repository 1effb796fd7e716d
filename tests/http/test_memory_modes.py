"""Memory modes (docs/profiles.md, "Memory modes"), through every front door that has them.

``peak`` counts what the job's processes touch (its cgroup); ``address_space``
also sets ``RLIMIT_AS`` per process, as isolate's ``--mem`` does for Judge0.
The judge's test case: ``new int[512][512][512]`` (512 MiB), touched at one
element, under 256 MiB: it runs in ``peak`` mode and fails at once in
``address_space`` mode, whose ``std::bad_alloc`` is ``memory_limit``. One
daemon for the module, with HTTP, reached over msgpack, ``/v1`` and Judge0.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import sandboxd_protocol as proto
from sandboxd.limits import MiB
from sandboxd.profiles import load_dir
from sandboxd_client.cli import main as sandboxctl_main
from sandboxd_testing.daemon import Client, Daemon

pytestmark = pytest.mark.root

TOKEN = "sandboxd-memory-modes-token"
DAEMON_CONFIG = {"http_tokens": [TOKEN], "pool_profiles": ["python3", "cpp"]}

# volatile-free, but the pointer is printed: g++ -O2 may not elide the allocation.
NEW_3D = (b"#include <iostream>\n"
          b"int main() {\n"
          b"    auto *p = new int[512][512][512];\n"
          b"    p[511][511][511] = 7;\n"
          b'    std::cout << "allocated " << (p != nullptr) << " at " << (void *)p << std::endl;\n'
          b"}\n")
MALLOC_C = (b"#include <stdio.h>\n#include <stdlib.h>\n"
            b"int main(void) { char *p = malloc(300 << 20);\n"
            b'  if (!p) { puts("malloc failed"); return 3; }\n'
            b'  puts("malloc ok"); return 0; }\n')
PY_BIG = b"x = bytearray(300 << 20)\nprint(len(x))\n"
LIMITS = proto.JobLimits(memory=256 * MiB)
SHIPPED = load_dir()


@pytest.fixture(scope="module")
def sock(http_daemon: Daemon) -> Iterator[Client]:
    c = http_daemon.connect()
    try:
        yield c
    finally:
        c.close()


def need(profile: str) -> None:
    if SHIPPED[profile].unavailable:
        pytest.skip(f"{profile} is unavailable here: {SHIPPED[profile].unavailable}")


def one(res: proto.JobResult) -> proto.StepResult:
    assert res.compile is None or res.compile.verdict == "ok", res.compile
    (step,) = res.steps
    return step


def test_new_int_512_cubed_passes_in_peak_and_fails_in_address_space(sock: Client) -> None:
    need("cpp")
    peak = one(sock.job(profile="cpp", files={"main.cpp": NEW_3D}, limits=LIMITS,
                        memory_mode="peak"))
    assert peak.verdict == "ok" and peak.stdout.startswith(b"allocated 1 at 0x"), peak
    assert peak.memory_peak < 64 * MiB, "untouched: the cgroup counted almost nothing"
    space = one(sock.job(profile="cpp", files={"main.cpp": NEW_3D}, limits=LIMITS,
                         memory_mode="address_space"))
    assert (space.verdict, space.reason) == ("memory_limit", "address space: std::bad_alloc")
    assert space.stdout == b"" and space.signal == 6, space  # abort() after terminate
    # The profile's default is peak: no memory_mode is the first case.
    default = one(sock.job(profile="cpp", files={"main.cpp": NEW_3D}, limits=LIMITS))
    assert default.verdict == "ok", default


def test_what_can_and_cannot_be_told_apart(sock: Client) -> None:
    """Python's MemoryError is a memory limit; C's NULL from malloc, checked by the program,
    is the program's own exit (nothing marks it)."""
    py = one(sock.job(profile="python3", files={"main.py": PY_BIG}, limits=LIMITS,
                      memory_mode="address_space"))
    assert (py.verdict, py.reason) == ("memory_limit", "address space: MemoryError"), py
    need("c")
    c = one(sock.job(profile="c", files={"main.c": MALLOC_C}, limits=LIMITS,
                     memory_mode="address_space"))
    assert (c.verdict, c.exit_code, c.stdout) == ("runtime_error", 3, b"malloc failed\n"), c
    c = one(sock.job(profile="c", files={"main.c": MALLOC_C}, limits=LIMITS,
                     memory_mode="peak"))
    assert (c.verdict, c.stdout) == ("ok", b"malloc ok\n"), c


def test_a_warm_profile_starts_plainly_in_address_space_mode(sock: Client) -> None:
    """The warm interpreter started without RLIMIT_AS: the job must not be handed to it."""
    step = one(sock.job(profile="python3", files={"main.py": b"print('hi')\n"},
                        memory_mode="address_space", warm_runtime=True))
    assert step.verdict == "ok" and step.stdout == b"hi\n", step
    step = one(sock.job(profile="python3", files={"main.py": PY_BIG}, limits=LIMITS,
                        memory_mode="address_space", warm_runtime=True))
    assert step.reason == "address space: MemoryError", step


@pytest.mark.parametrize("profile", ["java", "javascript", "go", "haskell", "csharp", "kotlin"])
def test_runtimes_that_reserve_address_space_refuse_the_mode(sock: Client,
                                                             profile: str) -> None:
    assert SHIPPED[profile].memory_modes == ("peak",)
    need(profile)  # an unavailable profile is refused for that first
    sock.submit(f"as-{profile}", profile, files={SHIPPED[profile].entry: b"x"},
                memory_mode="address_space")
    got, _ = sock.result(f"as-{profile}")
    assert isinstance(got, proto.ErrorReport) and got.code == "invalid_job", got
    assert "memory_mode 'address_space'" in got.message and profile in got.message, got


def test_the_wire_refuses_an_unknown_mode(http_daemon: Daemon) -> None:
    c = http_daemon.connect()  # a local protocol error breaks its connection
    try:
        with pytest.raises(proto.LocalProtocolError, match="memory_mode"):
            c.send(proto.JobSubmission(id="x", profile="cpp", memory_mode="virtual"))
    finally:
        c.close()


def test_v1_takes_the_mode(base_url: str) -> None:
    need("cpp")
    with httpx.Client(base_url=base_url, timeout=60,
                      headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        job: dict[str, Any] = {"profile": "cpp", "files": {"main.cpp": NEW_3D.decode()},
                               "limits": {"memory": "256M"}, "memory_mode": "address_space"}
        r = c.post("/v1/jobs?wait=true", json=job)
        assert r.status_code == 200, r.text
        step = r.json()["steps"][0]
        assert step["verdict"] == "memory_limit" and "std::bad_alloc" in step["reason"], step
        r = c.post("/v1/jobs?wait=true", json={**job, "memory_mode": "virtual"})
        assert r.status_code == 422 and r.json()["error"] == "invalid_field", r.text
        assert "memory_mode" in r.json()["message"]


def test_judge0_per_process_memory_limit_is_address_space(base_url: str) -> None:
    """Judge0 1.13 runs isolate with -m (RLIMIT_AS) when the flag is true."""
    need("cpp")
    with httpx.Client(base_url=base_url, timeout=60, headers={"X-Auth-Token": TOKEN}) as c:
        outcome = {}
        for flag in (False, True):
            r = c.post("/submissions?base64_encoded=false&wait=true&fields=*,sandboxd",
                       json={"source_code": NEW_3D.decode(), "language_id": 54,
                             "memory_limit": 256000,
                             "enable_per_process_and_thread_memory_limit": flag})
            assert r.status_code == 201, r.text
            outcome[flag] = r.json()
        assert outcome[False]["status"]["id"] == 3, outcome[False]
        assert outcome[True]["status"]["id"] != 3, outcome[True]
        assert "std::bad_alloc" in (outcome[True]["stderr"] or ""), outcome[True]


def test_sandboxctl_has_the_flag(http_daemon: Daemon, tmp_path: Any,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    need("cpp")
    src = tmp_path / "new3d.cpp"
    src.write_bytes(NEW_3D)
    codes = {}
    for mode in ("peak", "address_space"):
        try:
            codes[mode] = sandboxctl_main(["run", "--socket", http_daemon.socket, "-q",
                                           "--memory", "256M", "--memory-mode", mode,
                                           str(src)])
        except SystemExit as e:
            codes[mode] = e.code
    out = capsys.readouterr()
    assert codes == {"peak": 0, "address_space": 137}, (codes, out.err)
