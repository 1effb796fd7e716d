"""``sandboxctl``: run files in sandboxd and look at it, in the habits of ``docker``.

    sandboxctl run hello.py                      # stream its output, exit with its code
    sandboxctl run --memory 64M --json main.c    # one JSON object with every result field
    sandboxctl run -i repl.py                    # forward this terminal's stdin
    sandboxctl run util.sh main.sh -- bash main.sh x y   # ARGV after -- replaces the command
    sandboxctl ps | kill REF... | profiles | stats | ping   # --json for programs
    sandboxctl judge examples/problems/sum-batches solution.py   # a problem directory

Strategy: a thin layer on the blocking ``Client``: parse flags (limit flags
spelled as ``sandboxd run-once``'s), call the client, print a table for
people or JSON for programs, and turn the outcome into an exit code. For
``run``, the first file is the entry point: it is uploaded under the
profile's entry name (``main.py``...), so ``sandboxctl run hello.py`` works
whatever the file is called; with ``-- ARGV`` every file keeps its name.

Exit codes of ``run`` are those of ``sandboxd run-once`` (the job's own code,
128+N for signal N, 124 time limit, 137 memory limit, 153 output limit, 125
sandbox error or cancelled; see ``EXIT_CODES``); errors before or around the
job have codes of their own (sysexits.h), listed in ``EXIT_CODES`` and
docs/clients.md. A job may exit with those numbers too: ``--json`` tells them
apart.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

import sandboxd_protocol as proto

from ._errors import (
    AuthenticationError,
    ConnectError,
    ConnectionLost,
    JobRejected,
    ProtocolVersionError,
    ProtocolViolation,
    SandboxdError,
    ServerBusy,
    ServerError,
)
from ._jobs import Compile, Limits
from ._problem import ProblemError, load_problem
from ._results import EXIT_MEMORY, EXIT_OUTPUT, EXIT_SANDBOX, EXIT_TIME, JobResult
from ._sync import Client

__all__ = ["EXIT_CODES", "exit_code_for_error", "main"]

PROG = "sandboxctl"

EXIT_USAGE = 2
"""Bad flags, unreadable files, limits that are not numbers."""
EXIT_NOT_FOUND = 1
"""``kill``: no such job."""
EXIT_REJECTED = 65
"""EX_DATAERR: the daemon refused the job as written (profile, limit, file name)."""
EXIT_UNAVAILABLE = 69
"""EX_UNAVAILABLE: cannot connect (no daemon at the socket, nobody listening)."""
EXIT_SERVER = 70
"""EX_SOFTWARE: the daemon's own failure (``internal_error``)."""
EXIT_CONNECTION_LOST = 74
"""EX_IOERR: the connection ended before the job's result."""
EXIT_BUSY = 75
"""EX_TEMPFAIL: the daemon is busy or shutting down: try again later."""
EXIT_PROTOCOL = 76
"""EX_PROTOCOL: no common protocol version, or a protocol violation."""
EXIT_AUTH = 77
"""EX_NOPERM: the daemon refused the token."""
EXIT_INTERRUPTED = 130
"""Ctrl-C: the job was cancelled."""
EXIT_NOT_ACCEPTED = 1
"""``judge``: the solution was not accepted (a test not ``ok``, or it did not compile)."""
EXIT_JUDGE_ERROR = 3
"""``judge``: the problem's own program failed (``judge_error``): fix the problem."""

EXIT_CODES: dict[int, str] = {
    0: "the job exited 0 (run); the command succeeded (others)",
    1: "kill: no such job; judge: not accepted (run: the job's own exit code 1)",
    EXIT_USAGE: "bad flags or arguments",
    EXIT_JUDGE_ERROR: "judge: the problem's checker, interactor or generator failed (judge_error)",
    EXIT_REJECTED: "the daemon rejected the job (unknown profile, limit too high, bad file name)",
    EXIT_UNAVAILABLE: "cannot connect to the daemon",
    EXIT_SERVER: "the daemon failed (internal error)",
    EXIT_CONNECTION_LOST: "the connection ended before the result",
    EXIT_BUSY: "the daemon is busy or shutting down",
    EXIT_PROTOCOL: "protocol version mismatch or violation",
    EXIT_AUTH: "the daemon refused the token",
    EXIT_TIME: "the job hit its time limit (CPU or wall)",
    EXIT_SANDBOX: "sandboxd failed to run the job, or it was cancelled",
    EXIT_MEMORY: "the job hit its memory limit",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C); the job was cancelled",
    EXIT_OUTPUT: "the job hit its output or file-size limit",
}
"""Every exit code ``sandboxctl`` uses besides a job's own (128+N: signal N)."""

# Profiles of the daemon's shipped set: how to guess one from a file name, and the
# entry file each runs (a daemon that says its profiles' ``entry`` overrides these).
PROFILE_BY_SUFFIX = {
    ".py": "python3",
    ".sh": "bash",
    ".bash": "bash",
    ".c": "c",
    ".cc": "cpp",
    ".cpp": "cpp",
    ".cxx": "cpp",
    ".js": "javascript",
    ".java": "java",
    ".go": "go",
    ".rs": "rust",
}
ENTRY_BY_PROFILE = {
    "python3": "main.py",
    "bash": "main.sh",
    "c": "main.c",
    "cpp": "main.cpp",
    "javascript": "main.js",
    "java": "Main.java",
    "go": "main.go",
    "rust": "main.rs",
}

class UsageError(Exception):
    """A bad argument: exit 2 with this message."""


def exit_code_for_error(e: SandboxdError) -> int:
    """The exit code for an error of the client library (see ``EXIT_CODES``).

    >>> exit_code_for_error(ServerBusy("busy"))
    75
    """
    if isinstance(e, ConnectError):
        return EXIT_UNAVAILABLE
    if isinstance(e, AuthenticationError):
        return EXIT_AUTH
    if isinstance(e, ProtocolVersionError | ProtocolViolation):
        return EXIT_PROTOCOL
    if isinstance(e, ConnectionLost):
        return EXIT_CONNECTION_LOST
    if isinstance(e, JobRejected):
        return EXIT_REJECTED
    if isinstance(e, ServerBusy) or (isinstance(e, ServerError) and e.code == "shutting_down"):
        return EXIT_BUSY
    return EXIT_SERVER


# --------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _connection_flags(p: argparse.ArgumentParser, default: Any) -> None:
    g = p.add_argument_group("connection")
    g.add_argument(
        "--socket",
        metavar="PATH",
        default=default,
        help="the daemon's Unix socket (default: $SANDBOXD_SOCKET, else "
        "/run/sandboxd/sandboxd.sock)",
    )
    g.add_argument(
        "--tcp",
        metavar="HOST:PORT",
        default=default,
        help="connect over TCP instead (needs --token)",
    )
    g.add_argument(
        "--token", metavar="TOKEN", default=default, help="TCP token (default: $SANDBOXD_TOKEN)"
    )
    g.add_argument(
        "--redis",
        metavar="URL",
        default=default,
        help="submit through a cluster's queue instead: redis://[USER:PASS@]HOST:PORT/DB "
        "(or rediss://); needs sandboxd[cluster]",
    )
    g.add_argument(
        "--timeout",
        metavar="S",
        type=float,
        default=default,
        help="seconds to wait for connecting and for answers (default 30; not for jobs)",
    )


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG,
        description="Run files in sandboxd, and see what it runs.",
        epilog="exit codes: "
        + "; ".join(f"{code} {what}" for code, what in sorted(EXIT_CODES.items())),
    )
    _connection_flags(p, None)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser(
        "run",
        help="run files with a profile; stream their output; exit with the job's code",
        description="Run FILE... with a profile: the first file is the entry point (uploaded "
        "under the profile's entry name, e.g. main.py); `-- ARGV` replaces the command (files "
        "keep their names). Streams the job's stdout/stderr, prints a summary to stderr and "
        "exits with the job's exit code.",
    )
    run.add_argument("--profile", "-p", metavar="P", help="profile (default: from the suffix)")
    g = run.add_argument_group("limits (sizes take K, M, G suffixes)")
    for spec in proto.LIMITS:  # as ``sandboxd run-once`` spells them
        g.add_argument(spec.flag(), dest=spec.name, metavar=spec.metavar, help=spec.help)
    g = run.add_argument_group(
        "compile-step limits (profiles that compile; default: the profile's)"
    )
    for spec in proto.LIMITS:
        g.add_argument(
            spec.flag(_COMPILE.replace("_", "-")),
            dest=_COMPILE + spec.name,
            metavar=spec.metavar,
            help=spec.help,
        )
    run.add_argument(
        "--memory-mode",
        choices=proto.MEMORY_MODES,
        help="how --memory counts: peak (the cgroup's touched memory) or address_space "
        "(also RLIMIT_AS per process, as isolate's --mem); default: the profile's",
    )
    run.add_argument("--stdin", metavar="FILE", help="file to use as the job's stdin ('-': ours)")
    run.add_argument(
        "-i",
        "--interactive",
        action="store_true",
        help="forward this process's stdin to the job as it comes",
    )
    run.add_argument("--env", action="append", default=[], metavar="K=V", help="(repeatable)")
    run.add_argument("--json", action="store_true", help="print one JSON object with the result")
    run.add_argument("-q", "--quiet", action="store_true", help="no summary line on stderr")
    run.add_argument(
        "--busy-retries",
        metavar="N",
        type=int,
        default=3,
        help="resubmit N times with backoff while the daemon is busy (default 3)",
    )
    run.add_argument("files", nargs="+", metavar="FILE")

    for name, what in (
        ("ps", "list the jobs queued or running, of every client"),
        ("profiles", "list the profiles and their limits"),
        ("stats", "show the daemon's counters"),
    ):
        q = sub.add_parser(name, help=what, description=what)
        q.add_argument("--json", action="store_true", help="print JSON for programs")
    kill = sub.add_parser("kill", help="stop jobs by their ID from `ps`", description="stop jobs")
    kill.add_argument("refs", nargs="+", metavar="ID", help="a job ID as `ps` shows it")
    kill.add_argument("--json", action="store_true", help="print JSON for programs")
    judge = sub.add_parser(
        "judge",
        help="judge a solution against a problem directory (tests, checker, interactor, "
        "batches)",
        description="Judge SOLUTION against the problem in PROBLEM_DIR (problem.toml and "
        "tests/NAME.in, NAME.ans; docs/judge.md). Prints a table of the tests and batches "
        "and the score; exits 0 if accepted, 1 if not, 3 if the problem's own program "
        "failed.",
    )
    judge.add_argument("problem", metavar="PROBLEM_DIR")
    judge.add_argument("solution", metavar="SOLUTION_FILE")
    judge.add_argument("--profile", "-p", metavar="P", help="profile (default: from the suffix)")
    judge.add_argument("--json", action="store_true", help="print one JSON object")
    ping = sub.add_parser("ping", help="check that the daemon answers", description="ping")
    ping.add_argument("-c", "--count", type=int, default=1, metavar="N", help="pings to send")
    ping.add_argument("--json", action="store_true", help="print JSON for programs")
    for sp in sub.choices.values():
        _connection_flags(sp, argparse.SUPPRESS)
    return p


def _client(args: argparse.Namespace, **kw: Any) -> Client:
    timeout = args.timeout if args.timeout is not None else 30.0
    redis = getattr(args, "redis", None)
    if redis:
        if args.tcp:
            raise UsageError("--redis and --tcp exclude each other")
        if not redis.startswith(("redis://", "rediss://", "unix://")):
            raise UsageError(f"--redis wants a redis:// or rediss:// URL, not {redis!r}")
        return Client(redis, timeout=timeout, **kw)
    if args.tcp:
        host, sep, port = args.tcp.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise UsageError(f"--tcp wants HOST:PORT, not {args.tcp!r}")
        host = host.strip("[]")  # [::1]:7070
        return Client(host=host, port=int(port), token=args.token, timeout=timeout, **kw)
    return Client(args.socket, token=args.token, timeout=timeout, **kw)


_COMPILE = "compile_"
"""The prefix of the compile-step limits' ``dest`` (``--compile-memory``: ``compile_memory``)."""


def _limits(args: argparse.Namespace, prefix: str = "") -> Limits | None:
    """The limits given as flags (``prefix``: ``_COMPILE`` for the compile step's), or None."""
    values: dict[str, float | int] = {}
    for spec in proto.LIMITS:
        raw = getattr(args, prefix + spec.name, None)
        if raw is None:
            continue
        try:
            values[spec.name] = spec.parse(raw)
        except proto.LimitValueError as e:
            raise UsageError(f"{spec.flag(prefix.replace('_', '-'))} {e.reason}") from None
    return Limits(**values) if values else None


def _read(path: str, what: str) -> bytes:
    try:
        if path == "-":
            return sys.stdin.buffer.read()
        return Path(path).read_bytes()
    except OSError as e:
        raise UsageError(f"cannot read {what} {path!r}: {e.strerror or e}") from None


# --------------------------------------------------------------------------------
# run
# --------------------------------------------------------------------------------


def _profile_and_files(
    args: argparse.Namespace, argv: list[str] | None, client: Client
) -> tuple[str, dict[str, bytes]]:
    """The profile, and the files as they go into the job (the entry renamed)."""
    first = args.files[0]
    profiles = {p.name: p for p in client.profiles()}
    profile = args.profile
    if profile is None:
        suffix = Path(first).suffix
        by_entry = {Path(p.entry).suffix: p.name for p in profiles.values() if p.entry}
        profile = by_entry.get(suffix) or PROFILE_BY_SUFFIX.get(suffix)
        if profile is None:
            raise UsageError(
                f"cannot tell the profile of {first!r} from its suffix: pass --profile "
                f"(one of {', '.join(sorted(profiles)) or 'the daemon has none'})"
            )
    files: dict[str, bytes] = {}
    for path in args.files:
        name = Path(path).name
        if name in files:
            raise UsageError(f"two files are named {name!r}: the job's files are flat")
        files[name] = _read(path, "file")
    if argv is None:
        info = profiles.get(profile)
        entry = (info.entry if info is not None else None) or ENTRY_BY_PROFILE.get(profile)
        first_name = Path(first).name
        if entry and entry != first_name:
            if entry in files:
                raise UsageError(
                    f"{first!r} is the entry point and goes in as {entry!r}, but another "
                    f"file has that name: put {entry!r} first, or rename it"
                )
            files = {(entry if k == first_name else k): v for k, v in files.items()}
    return profile, files


def _cmd_run(args: argparse.Namespace, argv: list[str] | None, out: _Out) -> int:
    if args.interactive and args.stdin:
        raise UsageError("-i and --stdin both give the job's stdin: choose one")
    env: dict[str, str] = {}
    for item in args.env:
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise UsageError(f"--env wants K=V, not {item!r}")
        env[k] = v
    limits = _limits(args)
    compile_limits = _limits(args, _COMPILE)
    stdin = _read(args.stdin, "--stdin") if args.stdin else b""
    with _client(args, busy_retries=max(0, args.busy_retries)) as client:
        profile, files = _profile_and_files(args, argv, client)
        if compile_limits is not None:
            info = next((p for p in client.profiles() if p.name == profile), None)
            if info is not None and not info.compiled:
                raise UsageError(f"--compile-* limits: profile {profile!r} has no compile step")
        job_args: dict[str, Any] = {
            "stdin": stdin,
            "argv": argv,
            "env": env or None,
            "limits": limits,
            "compile": Compile(limits=compile_limits) if compile_limits is not None else None,
            "memory_mode": args.memory_mode,
        }
        interrupted = threading.Event()
        installed = threading.current_thread() is threading.main_thread()
        if installed:  # Ctrl-C cancels the job, then we wait for its result
            previous = signal.signal(signal.SIGINT, lambda *_: interrupted.set())
        try:
            with client.submit(
                profile,
                files,
                stream=not args.json,
                interactive_stdin=args.interactive,
                **job_args,
            ) as job:
                if args.interactive:
                    threading.Thread(target=_forward_stdin, args=(job,), daemon=True).start()
                saw_compile_output = False
                cancelled = False
                while True:
                    if interrupted.is_set() and not cancelled:
                        job.cancel()
                        cancelled = True
                    try:
                        chunk = job.next_output(timeout=0.2)
                    except TimeoutError:
                        continue
                    if chunk is None:
                        break
                    saw_compile_output |= chunk.compile
                    out.job_output(chunk.stream, chunk.data)
                result = job.result()
        finally:
            if installed:
                signal.signal(signal.SIGINT, previous)
    if args.json:
        out.json(result.as_json())
    else:
        if result.compile is not None and not result.compile.ok and not saw_compile_output:
            out.job_output("stderr", result.compile.stdout + result.compile.stderr)
        if not args.quiet:
            out.err(_summary(result))
    if interrupted.is_set():
        return EXIT_INTERRUPTED
    return result.exit_status


def _forward_stdin(job: Any) -> None:
    """Copy our stdin to the job's as it comes, then close it (a daemon thread)."""
    try:
        read = getattr(sys.stdin.buffer, "read1", sys.stdin.buffer.read)
        while not job.done:
            data = read(1 << 16)
            if not data:
                break
            job.write(data)
        job.close_stdin()
    except (OSError, ValueError, SandboxdError):
        pass  # the job ended, or our stdin went away: nothing more to forward


def _summary(result: JobResult) -> str:
    """The one line ``sandboxd run-once`` prints, for the step that decided the job."""
    r = result.final
    extra = f" ({r.reason})" if r.reason else ""
    step = " [compile]" if r is result.compile else ""
    return (
        f"{PROG}: {r.verdict.value}{extra}{step}  cpu {r.cpu_time:.3f}s  "
        f"wall {r.wall_time:.3f}s  mem {r.memory_peak / 1048576:.1f}MiB"
    )


# --------------------------------------------------------------------------------
# ps, kill, profiles, stats, ping
# --------------------------------------------------------------------------------


def _record(value: Any) -> Any:
    """A protocol record as JSON-able data."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _record(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [_record(v) for v in value]
    if isinstance(value, dict):
        return {k: _record(v) for k, v in value.items()}
    return value


def _size(n: int | None) -> str:
    return "-" if n is None else f"{n / 1048576:.1f}MiB"


def _seconds(s: float | None) -> str:
    return "-" if s is None else f"{s:.2f}s"


def _table(out: _Out, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]
    for row in (header, *rows):
        out.line("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _cmd_ps(args: argparse.Namespace, out: _Out) -> int:
    with _client(args) as client:
        jobs = client.jobs()
    if args.json:
        out.json([_record(j) for j in jobs])
        return 0
    rows = [
        [
            j.id,
            j.profile,
            j.state,
            _seconds(j.elapsed),
            _seconds(j.cpu_time),
            _size(j.memory),
            j.client,
        ]
        for j in jobs
    ]
    _table(out, ["ID", "PROFILE", "STATE", "ELAPSED", "CPU", "MEMORY", "CLIENT"], rows)
    return 0


def _cmd_kill(args: argparse.Namespace, out: _Out) -> int:
    results = []
    with _client(args) as client:
        for ref in args.refs:
            results.append((ref, client.kill(ref)))
    if args.json:
        out.json([{"job": ref, "found": found} for ref, found in results])
    else:
        for ref, found in results:
            if found:
                out.line(ref)
            else:
                out.err(f"{PROG}: no such job: {ref} (see `{PROG} ps`)")
    return 0 if all(found for _, found in results) else EXIT_NOT_FOUND


def _cmd_profiles(args: argparse.Namespace, out: _Out) -> int:
    with _client(args) as client:
        profiles = client.profiles()
    if args.json:
        out.json([_record(p) for p in profiles])
        return 0
    rows = []
    for p in profiles:
        lim = p.default_limits or proto.JobLimits()
        available = p.available is not False  # None: an older daemon that does not say
        rows.append(
            [
                p.name,
                "yes" if available else "no",
                p.version or "-",
                "yes" if p.compiled else "no",
                _seconds(lim.cpu_time),
                _seconds(lim.wall_time),
                _size(lim.memory),
                p.description
                + ("" if available else f" (unavailable: {p.unavailable_reason or '?'})"),
            ]
        )
    header = ["NAME", "AVAILABLE", "VERSION", "COMPILED", "CPU", "WALL", "MEMORY", "DESCRIPTION"]
    _table(out, header, rows)
    return 0


def _cmd_stats(args: argparse.Namespace, out: _Out) -> int:
    with _client(args) as client:
        stats = client.stats()
        server = client.server
    if args.json:
        out.json({"server": server, **_record(stats)})
        return 0
    out.line(f"server          {server}")
    out.line(f"uptime          {stats.uptime:.1f}s")
    out.line(f"connections     {stats.connections}")
    out.line(
        f"jobs            {stats.jobs_running} running, {stats.jobs_queued} queued, "
        f"{stats.jobs_completed} completed"
    )
    if stats.pools:
        out.line("")
        pools = [[p.profile, str(p.warm), str(p.target)] for p in stats.pools]
        _table(out, ["POOL", "WARM", "TARGET"], pools)
    if stats.counters:
        out.line("")
        width = max(len(k) for k in stats.counters)
        for key in sorted(stats.counters):
            value = stats.counters[key]
            shown = f"{value:.6g}" if isinstance(value, float) else str(value)
            out.line(f"{key.ljust(width)}  {shown}")
    return 0


def _cmd_ping(args: argparse.Namespace, out: _Out) -> int:
    rtts = []
    with _client(args) as client:
        for _ in range(max(1, args.count)):
            rtts.append(client.ping())
            if not args.json:
                out.line(
                    f"pong from {client.server} at {client.address} (protocol "
                    f"{client.version}): {rtts[-1] * 1000:.3f} ms"
                )
        if args.json:
            out.json(
                {
                    "server": client.server,
                    "address": str(client.address),
                    "version": client.version,
                    "rtt": rtts,
                }
            )
    return 0


# --------------------------------------------------------------------------------
# Output and main
# --------------------------------------------------------------------------------
# judge
# --------------------------------------------------------------------------------


def _cmd_judge(args: argparse.Namespace, out: _Out) -> int:
    try:
        problem = load_problem(args.problem)
    except ProblemError as e:
        raise UsageError(f"{args.problem}: {e}") from None
    args.files = [args.solution]
    with _client(args) as client:
        profile, files = _profile_and_files(args, None, client)
        entries = {p.name: p.entry for p in client.profiles() if p.entry}
        job = problem.job({**ENTRY_BY_PROFILE, **entries})
        result = client.run(profile, files, **job)
    steps = result.steps
    accepted = bool(steps) and all(s.ok for s in steps) and (
        result.compile is None or result.compile.ok)
    score = result.score if result.score is not None else float(sum(s.ok for s in steps))
    batch_of = {t: b.name for b in problem.batches or [] for t in b.tests}
    if args.json:
        out.json({
            "problem": problem.name, "accepted": accepted, "score": score,
            "max_score": problem.max_score,
            "compile": result.compile.as_json() if result.compile is not None else None,
            "tests": [{"name": problem.test_names[i], "batch": batch_of.get(i),
                       **s.as_json()} for i, s in enumerate(steps)],
            "batches": [{"name": b.name, "verdict": b.verdict.value, "score": b.score,
                         "points": b.points} for b in result.batches or ()],
        })
    else:
        if result.compile is not None and not result.compile.ok:
            out.line(f"compile: {result.compile.verdict.value}"
                     + (f" ({result.compile.reason})" if result.compile.reason else ""))
            out.job_output("stdout", result.compile.stdout + result.compile.stderr)
        if steps:
            rows = []
            for i, s in enumerate(steps):
                why = s.reason or ""
                if s.checker_message:
                    why = f"{why}: {s.checker_message}" if why else s.checker_message
                why = why.replace("\n", " ")
                rows.append([problem.test_names[i], batch_of.get(i, "-"), s.verdict.value,
                             f"{s.score:g}" if s.score is not None else "-",
                             _seconds(s.cpu_time), _size(s.memory_peak),
                             why[:70] + ("..." if len(why) > 70 else "")])
            _table(out, ["TEST", "BATCH", "VERDICT", "SCORE", "CPU", "MEMORY", "DETAIL"],
                   rows)
        if result.batches:
            out.line("")
            _table(out, ["BATCH", "VERDICT", "SCORE"],
                   [[b.name, b.verdict.value, f"{b.score:g}/{b.points:g}"]
                    for b in result.batches])
        out.line("")
        out.line(f"{problem.name}: {'accepted' if accepted else 'not accepted'}, score "
                 f"{score:g}/{problem.max_score:g}")
    if accepted:
        return 0
    if any(s.verdict == "judge_error" for s in steps):
        return EXIT_JUDGE_ERROR
    if any(s.verdict in ("sandbox_error", "cancelled") for s in steps):
        return EXIT_SANDBOX
    return EXIT_NOT_ACCEPTED


# --------------------------------------------------------------------------------


class _Out:
    """Where sandboxctl writes: stdout for results, stderr for messages."""

    def __init__(self, stdout: TextIO, stderr: TextIO) -> None:
        self.stdout = stdout
        self.stderr = stderr

    def line(self, text: str) -> None:
        self.stdout.write(text + "\n")

    def err(self, text: str) -> None:
        self.stderr.flush()
        self.stderr.write(text + "\n")
        self.stderr.flush()

    def json(self, value: Any) -> None:
        self.stdout.write(json.dumps(value) + "\n")
        self.stdout.flush()

    def job_output(self, stream: str, data: bytes) -> None:
        target = self.stdout if stream == "stdout" else self.stderr
        buffer = getattr(target, "buffer", None)
        if buffer is not None:
            target.flush()
            buffer.write(data)
            buffer.flush()
        else:  # a StringIO in tests
            target.write(data.decode("utf-8", "replace"))


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``sandboxctl`` with ``argv`` (default: ``sys.argv[1:]``); return its exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    job_argv: list[str] | None = None
    if "--" in args_list:
        i = args_list.index("--")
        args_list, job_argv = args_list[:i], args_list[i + 1 :]
    args = _parser().parse_args(args_list)
    out = _Out(sys.stdout, sys.stderr)
    commands: dict[str, Callable[[argparse.Namespace, _Out], int]] = {
        "ps": _cmd_ps,
        "kill": _cmd_kill,
        "profiles": _cmd_profiles,
        "stats": _cmd_stats,
        "ping": _cmd_ping,
        "judge": _cmd_judge,
    }
    try:
        if args.command == "run":
            if job_argv is not None and not job_argv:
                raise UsageError("nothing after --: give the command to run")
            return _cmd_run(args, job_argv, out)
        if job_argv is not None:
            raise UsageError(f"`{PROG} {args.command}` takes nothing after --")
        return commands[args.command](args, out)
    except UsageError as e:
        out.err(f"{PROG}: error: {e}")
        return EXIT_USAGE
    except SandboxdError as e:
        code = exit_code_for_error(e)
        if getattr(args, "json", False):
            out.json(
                {
                    "error": type(e).__name__,
                    "code": e.code,
                    "message": e.message,
                    "hint": e.hint,
                    "exit": code,
                }
            )
        out.err(f"{PROG}: error: {e}")
        return code
    except TimeoutError as e:
        out.err(f"{PROG}: error: {e}")
        return EXIT_UNAVAILABLE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # Our reader went away (`sandboxctl run x.py | head`): exit as a killed writer would.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + signal.SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
