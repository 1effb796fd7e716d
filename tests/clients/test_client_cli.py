"""``sandboxctl``: its exit codes, its ``--json``, its tables; and that it agrees with
``sandboxd run-once`` (exit codes, limit flags, result fields) and the daemon's defaults."""

from __future__ import annotations

import argparse
import base64
import dataclasses
import json
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from client_helpers import SANDBOXCTL, SLEEPER, sandboxctl

import sandboxd_client as sc
from sandboxd import cli as sandboxd_cli
from sandboxd.config import DEFAULT_SOCKET
from sandboxd.result import VERDICTS, Result
from sandboxd_client import cli
from sandboxd_testing.daemon import Daemon

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

# -- agreement with sandboxd, no daemon needed ------------------------------------------


def test_exit_codes_match_sandboxd_run_once() -> None:
    """The table is copied into the client (which may not import sandboxd): keep them equal."""
    for verdict in VERDICTS:
        for exit_code in (None, 0, 1, 3, 124, 255):
            for sig in (None, 6, 9, 11, 24):
                assert sc.exit_status(verdict, exit_code, sig) == sandboxd_cli.exit_code_for(
                    verdict, exit_code, sig
                ), (verdict, exit_code, sig)
    assert (sc.EXIT_TIME, sc.EXIT_SANDBOX, sc.EXIT_MEMORY, sc.EXIT_OUTPUT) == (
        sandboxd_cli.EXIT_TIME,
        sandboxd_cli.EXIT_SANDBOX,
        sandboxd_cli.EXIT_MEMORY,
        sandboxd_cli.EXIT_OUTPUT,
    )
    assert set(sc.Verdict) == set(VERDICTS)


def _limit_flags(parser: argparse.ArgumentParser) -> set[str]:
    for group in parser._action_groups:
        if group.title and group.title.startswith("limits"):
            return {s for a in group._group_actions for s in a.option_strings}
    raise AssertionError("no limits group")


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[name]  # type: ignore[no-any-return]
    raise AssertionError(name)


def test_limit_flags_are_spelled_as_in_run_once() -> None:
    ours = _limit_flags(_subparser(cli._parser(), "run"))
    theirs = _limit_flags(_subparser(sandboxd_cli._parser(), "run-once"))
    assert ours <= theirs
    assert theirs == ours
    assert {"--cpu-time", "--wall-time", "--memory", "--pids", "--output"} <= ours


def test_the_default_socket_is_the_daemons() -> None:
    assert sc.DEFAULT_SOCKET == DEFAULT_SOCKET


def test_every_error_has_its_exit_code() -> None:
    codes = {
        sc.ConnectError("x", address="/s"): 69,
        sc.AuthenticationError("x"): 77,
        sc.ProtocolVersionError("x"): 76,
        sc.ProtocolViolation("x"): 76,
        sc.ConnectionLost("x"): 74,
        sc.JobRejected("x"): 65,
        sc.UnknownProfile("x"): 65,
        sc.LimitExceeded("x"): 65,
        sc.ServerBusy("x"): 75,
        sc.ServerError("x", code="shutting_down"): 75,
        sc.ServerError("x", code="internal_error"): 70,
    }
    for error, code in codes.items():
        assert cli.exit_code_for_error(error) == code, error
        assert code in cli.EXIT_CODES


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("print(1)")
    for args, message in (
        (["run"], "the following arguments are required: FILE"),
        (["run", "--memory", "lots", "a.py"], "--memory must be a size"),
        (["run", "--pids", "2.5", "a.py"], "--pids must be an integer"),
        (["run", "--compile-memory", "lots", "a.py"], "--compile-memory must be a size"),
        (["run", "-i", "--stdin", "a.py", "a.py"], "choose one"),
        (["run", "a.py", "--"], "nothing after --"),
        (["ps", "--", "x"], "takes nothing after --"),
        (["run", "--env", "NOEQUALS", "a.py"], "--env wants K=V"),
        (["frobnicate"], "invalid choice"),
    ):
        p = sandboxctl(*args, cwd=tmp_path, socket=str(tmp_path / "none.sock"))
        assert p.returncode == 2, (args, p.stderr)
        assert message in p.stderr.decode(), (args, p.stderr)


def test_cannot_connect_exits_69_and_says_why(tmp_path: Path) -> None:
    path = str(tmp_path / "none.sock")
    p = sandboxctl("ps", socket=path)
    assert p.returncode == 69
    err = p.stderr.decode()
    assert f"cannot connect to sandboxd at {path}" in err and "is the daemon running?" in err
    p = sandboxctl("--socket", path, "ping", "--json", socket=None)
    assert p.returncode == 69
    doc = json.loads(p.stdout)
    assert doc["error"] == "ConnectError" and doc["exit"] == 69 and path in doc["message"]


# -- against the daemon -------------------------------------------------------------------


def _files(tmp_path: Path, **files: str) -> Path:
    for name, text in files.items():
        (tmp_path / name.replace("__", ".")).write_text(text)
    return tmp_path


SUMMARY = re.compile(r"^sandboxctl: (\w+).*  cpu \d+\.\d{3}s  wall \d+\.\d{3}s  mem \d+\.\dMiB$")


@pytest.mark.root
def test_run_exit_codes(tmp_path: Path) -> None:
    _files(
        tmp_path,
        ok__py="print('hello')",
        three__sh="echo out; echo err >&2; exit 3",
        segv__sh="kill -SEGV $$",
        spin__sh="while :; do :; done",
        mem__py="x = bytearray(200 << 20)",
        loud__py="print('x' * 100000)",
        bad__c="int main( {",
        sum__c='#include <stdio.h>\nint main(){int a,b;scanf("%d %d",&a,&b);'
        'printf("%d\\n",a+b);return 0;}',
        input__txt="2 40\n",
    )
    with Daemon(tmp_path, pool_profiles=["bash", "python3"]) as d:
        for args, code, verdict in (
            (["ok.py"], 0, "ok"),
            (["three.sh"], 3, "runtime_error"),
            (["segv.sh"], 128 + 11, "runtime_error"),
            (["--cpu-time", "0.3", "spin.sh"], 124, "time_limit"),
            (["--memory", "32M", "mem.py"], 137, "memory_limit"),
            (["--output", "1K", "loud.py"], 153, "output_limit"),
            (["bad.c"], 1, "compile_error"),
            (["--stdin", "input.txt", "sum.c"], 0, "ok"),
        ):
            p = sandboxctl("run", *args, socket=d.socket, cwd=tmp_path)
            assert p.returncode == code, (args, p.stderr[-2000:])
            summary = p.stderr.decode().splitlines()[-1]
            m = SUMMARY.match(summary)
            assert m and m.group(1) == verdict, (args, summary)
        p = sandboxctl("run", "three.sh", socket=d.socket, cwd=tmp_path)
        assert (p.stdout, p.stderr.splitlines()[0]) == (b"out\n", b"err")
        p = sandboxctl("run", "--stdin", "input.txt", "sum.c", socket=d.socket, cwd=tmp_path)
        assert p.stdout == b"42\n"
        p = sandboxctl("run", "bad.c", socket=d.socket, cwd=tmp_path)
        assert b"error" in p.stderr and b"[compile]" in p.stderr  # the compiler's messages
        p = sandboxctl("run", "-q", "three.sh", socket=d.socket, cwd=tmp_path)
        assert p.stderr == b"err\n" and p.returncode == 3
        # rejected jobs: 65, with the field named
        p = sandboxctl("run", "--profile", "cobol", "ok.py", socket=d.socket, cwd=tmp_path)
        assert p.returncode == 65 and b"cobol" in p.stderr
        p = sandboxctl("run", "--memory", "1T", "ok.py", socket=d.socket, cwd=tmp_path)
        assert p.returncode == 65 and b"limits.memory" in p.stderr
        p = sandboxctl("run", "input.txt", socket=d.socket, cwd=tmp_path)
        assert p.returncode == 2 and b"pass --profile" in p.stderr


@pytest.mark.root
def test_box_and_tmp_sizes_reach_the_container(tmp_path: Path) -> None:
    """--box-size and --tmp-size travel in the job's limits and size the tmpfs mounts
    (statvfs inside), and a write past them fails with ENOSPC."""
    _files(
        tmp_path,
        sizes__py="import os\nfor d in ('/box', '/tmp'):\n"
                  "    st = os.statvfs(d); print(d, st.f_blocks * st.f_frsize)\n"
                  "try:\n    open('/tmp/big', 'wb').write(b'x' * (3 << 20))\n"
                  "except OSError as e: print('write', e.errno)",
    )
    with Daemon(tmp_path, pool_profiles=["python3"]) as d:
        p = sandboxctl("run", "--box-size", "4M", "--tmp-size", "2M", "sizes.py",
                       socket=d.socket, cwd=tmp_path)
        assert p.returncode == 0, p.stderr[-2000:]
        assert p.stdout.decode().splitlines() == ["/box 4194304", "/tmp 2097152", "write 28"]
        p = sandboxctl("run", "--tmp-size", "8M", "sizes.py", socket=d.socket, cwd=tmp_path)
        assert p.stdout.decode().splitlines()[1:] == ["/tmp 8388608"], p.stdout


@pytest.mark.root
def test_run_json_files_and_argv(tmp_path: Path) -> None:
    _files(
        tmp_path,
        hello__py="import sys; print('hi', sys.argv[1:]); print('oops', file=sys.stderr)",
        lib__sh="echo lib",
        main__sh="echo main",
        prog__c="int main(void) { return 7; }",
    )
    run_once_fields = {f.name for f in dataclasses.fields(Result)}
    with Daemon(tmp_path, pool_profiles=["python3"]) as d:
        p = sandboxctl("run", "--json", "hello.py", socket=d.socket, cwd=tmp_path)
        assert p.returncode == 0 and p.stdout.count(b"\n") == 1
        doc = json.loads(p.stdout)
        assert set(doc) == run_once_fields | {"compile"}  # run-once's fields, and compile
        assert doc["stdout"] == "hi []\n" and doc["stderr"] == "oops\n" and doc["compile"] is None
        assert doc["verdict"] == "ok" and doc["cpu_time"] > 0 and doc["memory_peak"] > 0
        p = sandboxctl("run", "--json", "prog.c", socket=d.socket, cwd=tmp_path)
        doc = json.loads(p.stdout)
        assert p.returncode == 7 and doc["exit_code"] == 7
        assert set(doc["compile"]) == run_once_fields and doc["compile"]["verdict"] == "ok"
        # -- ARGV replaces the command; every file keeps its name
        p = sandboxctl(
            "run", "lib.sh", "main.sh", "--", "bash", "-c", "bash lib.sh; bash main.sh; ls",
            socket=d.socket, cwd=tmp_path,
        )  # fmt: skip
        assert p.returncode == 0 and p.stdout == b"lib\nmain\nlib.sh\nmain.sh\n"
        p = sandboxctl(
            "run", "--profile", "python3", "hello.py", "--", "python3", "hello.py", "a", "b",
            socket=d.socket, cwd=tmp_path,
        )  # fmt: skip
        assert p.stdout == b"hi ['a', 'b']\n"
        p = sandboxctl("run", "--env", "WHO=you", "main.sh", "--", "bash", "-c", "echo $WHO",
                       socket=d.socket, cwd=tmp_path)  # fmt: skip
        assert p.stdout == b"you\n"


BINARY = bytes(range(256))
"""Every byte value: not valid UTF-8, so ``--json`` must carry it in base64 to be exact."""


@pytest.mark.root
def test_json_carries_the_exact_bytes(tmp_path: Path, run_once: Any) -> None:
    """``sandboxctl run --json`` and ``sandboxd run-once --json`` give output that is not
    UTF-8 exactly in ``stdout_b64`` (``stdout`` keeps the text with U+FFFD, for people);
    output that is UTF-8 has no ``_b64`` field."""
    code = "import sys; sys.stdout.buffer.write(bytes(range(256))); print('é', file=sys.stderr)"
    once = run_once(["/usr/bin/python3", "-c", code], expect_exit=0)
    _files(tmp_path, binary__py=code)
    with Daemon(tmp_path, pool_profiles=["python3"]) as d:
        p = sandboxctl("run", "--json", "binary.py", socket=d.socket, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    ctl = json.loads(p.stdout)
    for doc in (once, ctl):
        assert base64.b64decode(doc["stdout_b64"], validate=True) == BINARY
        assert doc["stdout"] == BINARY.decode("utf-8", "replace")
        assert doc["stderr"] == "é\n" and "stderr_b64" not in doc
    assert set(ctl) - {"compile"} == set(once) - {"_exit", "_stderr"}


@pytest.mark.root
def test_compile_limit_flags_reach_the_compile_step(tmp_path: Path) -> None:
    """--compile-* flags travel as the submission's compile.limits: a CPU limit no
    compiler can meet ends the compile as compile_error, naming the limit; one above
    the profile's maximum is refused naming compile.limits; the run step keeps its own."""
    (tmp_path / "sum.c").write_bytes((EXAMPLES / "sum.c").read_bytes())
    (tmp_path / "in.txt").write_text("2 40\n")
    with Daemon(tmp_path, pool_profiles=["c"]) as d:
        p = sandboxctl("run", "--json", "--compile-cpu-time", "0.001", "sum.c",
                       socket=d.socket, cwd=tmp_path)  # fmt: skip
        doc = json.loads(p.stdout)
        assert doc["compile"]["verdict"] == "compile_error", doc["compile"]
        assert doc["compile"]["reason"] == "time_limit (cpu)"
        p = sandboxctl("run", "--compile-memory", "1T", "sum.c", socket=d.socket, cwd=tmp_path)
        assert p.returncode == 65 and b"compile.limits.memory" in p.stderr, p.stderr
        # both together: each step runs under its own
        p = sandboxctl("run", "--cpu-time", "0.05", "--compile-cpu-time", "30",
                       "--stdin", "in.txt", "sum.c", socket=d.socket, cwd=tmp_path)  # fmt: skip
        assert p.returncode == 0 and p.stdout == b"42\n", p.stderr[-2000:]
        p = sandboxctl("run", "--compile-memory", "64M", "--profile", "python3", "sum.c",
                       socket=d.socket, cwd=tmp_path)  # fmt: skip
        assert p.returncode == 2 and b"has no compile step" in p.stderr


@pytest.mark.root
def test_ps_kill_profiles_stats_ping(tmp_path: Path) -> None:
    with Daemon(tmp_path, pool_profiles=["bash"]) as d, sc.Client(d.socket, name="owner/1") as c:
        job = c.stream("bash", {"main.sh": "echo started; while :; do :; done"})
        assert job.next_output(timeout=10) is not None
        time.sleep(0.1)
        p = sandboxctl("ps", socket=d.socket)
        assert p.returncode == 0
        header, row = p.stdout.decode().splitlines()
        assert header.split() == ["ID", "PROFILE", "STATE", "ELAPSED", "CPU", "MEMORY", "CLIENT"]
        ref, profile, state, *_, client = row.split()
        assert (profile, state, client) == ("bash", "running", "owner/1")
        (info,) = json.loads(sandboxctl("ps", "--json", socket=d.socket).stdout)
        assert info["id"] == ref and info["cpu_time"] > 0 and info["memory"] > 0
        p = sandboxctl("kill", ref, "9/nope", socket=d.socket)
        assert p.returncode == 1 and p.stdout == f"{ref}\n".encode()
        assert b"no such job: 9/nope" in p.stderr
        result = job.result(timeout=10)
        assert result.verdict == "cancelled" and result.final.reason == "killed by sandboxctl kill"
        p = sandboxctl("kill", "--json", ref, socket=d.socket)
        assert p.returncode == 1 and json.loads(p.stdout) == [{"job": ref, "found": False}]
        assert sandboxctl("ps", socket=d.socket).stdout.decode().splitlines()[1:] == []

        p = sandboxctl("profiles", socket=d.socket)
        assert p.returncode == 0 and re.search(
            rb"^bash +yes .* no +5\.00s +10\.00s", p.stdout, re.M
        )
        profiles = json.loads(sandboxctl("profiles", "--json", socket=d.socket).stdout)
        by_name = {x["name"]: x for x in profiles}
        assert by_name["c"]["compiled"] and by_name["bash"]["default_limits"]["cpu_time"] == 5.0

        p = sandboxctl("stats", socket=d.socket)
        assert p.returncode == 0 and b"jobs " in p.stdout and b"verdict_cancelled" in p.stdout
        stats = json.loads(sandboxctl("stats", "--json", socket=d.socket).stdout)
        assert stats["server"].startswith("sandboxd/") and stats["jobs_completed"] >= 1

        p = sandboxctl("ping", "-c", "2", socket=d.socket)
        assert p.returncode == 0 and p.stdout.count(b"pong from sandboxd/") == 2
        doc = json.loads(sandboxctl("ping", "--json", socket=d.socket).stdout)
        assert doc["version"] == 1 and doc["address"] == d.socket and doc["rtt"][0] > 0
        # the connection options may also come after the command
        assert sandboxctl("ping", "--socket", d.socket).returncode == 0


@pytest.mark.root
def test_busy_exits_75_unless_retried(tmp_path: Path) -> None:
    (tmp_path / "hi.sh").write_text("echo hi")
    with (
        Daemon(tmp_path, concurrency=1, queue_length=0, pool_profiles=["bash"]) as d,
        sc.Client(d.socket) as c,
    ):
        job = c.submit("bash", {"main.sh": "sleep 1.5"})
        p = sandboxctl("run", "--busy-retries", "0", "hi.sh", socket=d.socket, cwd=tmp_path)
        assert p.returncode == 75 and b"busy" in p.stderr
        p = sandboxctl("run", "--busy-retries", "12", "hi.sh", socket=d.socket, cwd=tmp_path)
        assert p.returncode == 0 and p.stdout == b"hi\n"
        assert job.result().ok


@pytest.mark.root
def test_ctrl_c_cancels_the_job_and_exits_130(tmp_path: Path) -> None:
    (tmp_path / "wait.sh").write_text(SLEEPER["main.sh"])
    with Daemon(tmp_path, pool_profiles=["bash"]) as d, sc.Client(d.socket) as watcher:
        proc = subprocess.Popen(
            [SANDBOXCTL, "--socket", d.socket, "run", "wait.sh"],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proc.stdout is not None and proc.stdout.readline() == b"started\n"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 130, err
        assert b"cancelled" in err
        assert watcher.jobs() == []


@pytest.mark.root
def test_interactive_forwards_stdin(tmp_path: Path) -> None:
    (tmp_path / "echo.sh").write_text('while read line; do echo "got $line"; done')
    with Daemon(tmp_path, pool_profiles=["bash"]) as d:
        p = sandboxctl("run", "-i", "echo.sh", socket=d.socket, cwd=tmp_path, stdin=b"a\nb\n")
        assert p.returncode == 0 and p.stdout == b"got a\ngot b\n"
