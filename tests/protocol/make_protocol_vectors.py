"""Write ``sandboxd_protocol/vectors/*.json``: conversations as exact bytes, with what they mean.

Each vector is a whole conversation from the first byte: a list of frames,
each with its sender, its bytes in hex and the msgpack map they hold (bytes
as ``{"$bin": "<hex>"}``). A frame may say ``"error"``: the receiver must
refuse it with that code. A frame may give ``"canonical_hex"``: the bytes
this implementation's encoder writes for the same event (when the given
bytes use a lenient form: unknown fields, an int for a float).

The bytes are made by real ``Connection`` objects, so they are what the
implementation writes; ``test_protocol_vectors.py`` checks that the files
are up to date, and checks every vector both ways from the files alone.

    .venv/bin/python tests/protocol/make_protocol_vectors.py   # rewrite the files
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path
from typing import Any

import msgpack

from sandboxd_protocol import (
    CLIENT,
    SERVER,
    Batch,
    BatchResult,
    Cancellation,
    CompileStep,
    Connection,
    EndOfStdin,
    EndOfWorkspace,
    ErrorCode,
    ErrorReport,
    Goodbye,
    Hello,
    JobAcceptance,
    JobInfo,
    JobLimits,
    JobList,
    JobListRequest,
    JobResult,
    JobSubmission,
    KillRequest,
    KillResult,
    NetworkAccess,
    OutputChunk,
    Ping,
    Pong,
    PoolStats,
    ProfileInfo,
    Program,
    RemoteProtocolError,
    RepeatStats,
    Role,
    ServerStats,
    StatsRequest,
    StdinChunk,
    StepResult,
    TestCase,
    Welcome,
    WorkspaceChunk,
)

VECTORS = Path(__file__).resolve().parents[2] / "sandboxd_protocol" / "vectors"


def to_json(value: Any) -> Any:
    """A msgpack value as JSON: bytes become ``{"$bin": hex}``, arrays lists."""
    if isinstance(value, bytes):
        return {"$bin": value.hex()}
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    return value


def from_json(value: Any) -> Any:
    """The inverse of ``to_json``."""
    if isinstance(value, dict):
        if list(value) == ["$bin"] and isinstance(value["$bin"], str):
            return bytes.fromhex(value["$bin"])
        return {k: from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_json(v) for v in value]
    return value


def body_of(frame: bytes) -> bytes:
    (size,) = struct.unpack_from(">I", frame)
    assert len(frame) == 4 + size
    return frame[4:]


def raw_frame(message: dict[str, Any]) -> bytes:
    body = msgpack.packb(message, use_bin_type=True)
    return struct.pack(">I", len(body)) + body


class Conversation:
    """Drives a client and a server and records every frame."""

    def __init__(self, name: str, description: str) -> None:
        self.name = name
        self.description = description
        self.client = Connection(CLIENT)
        self.server = Connection(SERVER)
        self.frames: list[dict[str, Any]] = []

    def _ends(self, sender: Role) -> tuple[Connection, Connection]:
        if sender is CLIENT:
            return self.client, self.server
        return self.server, self.client

    def send(self, sender: Role, event: Any) -> Conversation:
        src, dst = self._ends(sender)
        data = src.send(event)
        dst.receive_data(data)
        got = dst.next_event()
        assert got == event, (got, event)
        self.frames.append(
            {
                "from": sender.value,
                "hex": data.hex(),
                "message": to_json(msgpack.unpackb(body_of(data), raw=False)),
            }
        )
        return self

    def lenient(self, sender: Role, message: dict[str, Any]) -> Conversation:
        """A frame in a form we accept but do not write; records the canonical bytes."""
        src, dst = self._ends(sender)
        data = raw_frame(message)
        dst.receive_data(data)
        event = dst.next_event()
        canonical = src.send(event)
        assert canonical != data
        self.frames.append(
            {
                "from": sender.value,
                "hex": data.hex(),
                "message": to_json(message),
                "canonical_hex": canonical.hex(),
            }
        )
        return self

    def refused(self, sender: Role, data: bytes, code: str, note: str) -> Conversation:
        """A frame the receiver must refuse with ``code``; the conversation ends here."""
        _, dst = self._ends(sender)
        dst.receive_data(data)
        try:
            dst.next_event()
        except RemoteProtocolError as exc:
            assert exc.code == code, (exc.code, str(exc))
        else:
            raise AssertionError(f"{self.name}: frame was not refused")
        frame: dict[str, Any] = {"from": sender.value, "hex": data.hex()}
        try:
            frame["message"] = to_json(msgpack.unpackb(body_of(data), raw=False))
        except Exception:
            pass
        frame["error"] = code
        frame["note"] = note
        self.frames.append(frame)
        return self

    def handshake(self) -> Conversation:
        self.send(CLIENT, Hello(client="vectors/1"))
        return self.send(SERVER, Welcome(server="sandboxd/0.1.0"))

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "frames": self.frames}


OK = StepResult(
    verdict="ok",
    exit_code=0,
    cpu_time=0.012,
    user_time=0.01,
    sys_time=0.002,
    wall_time=0.015,
    memory_peak=8_388_608,
    stdout=b"hi\n",
)


def build() -> list[Conversation]:
    """Every vector, in order."""
    out: list[Conversation] = []

    def new(name: str, description: str) -> Conversation:
        conv = Conversation(f"{len(out) + 1:02d}-{name}", description)
        out.append(conv)
        return conv

    new("handshake", "Hello and Welcome with one profile; the smallest useful exchange.").send(
        CLIENT, Hello(client="vectors/1")
    ).send(
        SERVER,
        Welcome(
            server="sandboxd/0.1.0",
            profiles=(
                ProfileInfo(
                    name="python3",
                    description="CPython 3.11",
                    default_limits=JobLimits(cpu_time=2.0, memory=268_435_456),
                    max_limits=JobLimits(cpu_time=10.0, memory=1_073_741_824),
                ),
            ),
        ),
    )

    new("simple-job", "Submit one file with stdin, accepted, one result.").handshake().send(
        CLIENT,
        JobSubmission(id="job-1", profile="python3", files={"main.py": b"print('hi')\n"}),
    ).send(SERVER, JobAcceptance(id="job-1")).send(SERVER, JobResult(id="job-1", steps=(OK,))).send(
        CLIENT, Goodbye()
    ).send(SERVER, Goodbye())

    new(
        "judge-batch",
        "Every submission field: compile once, two tests with expected output and repeats; "
        "a compile result, a wrong answer and a CPU time limit.",
    ).handshake().send(
        CLIENT,
        JobSubmission(
            id="sub-42",
            profile="cpp",
            files={"main.cpp": b"int main(){}\n", "include/x.h": b"#pragma once\n"},
            argv=("./a.out",),
            env={"LANG": "C.UTF-8"},
            limits=JobLimits(
                cpu_time=1.0,
                wall_time=3.0,
                memory=268_435_456,
                pids=16,
                output=65536,
                file_size=1_048_576,
                box_size=67_108_864,
                open_files=64,
                stack=8_388_608,
            ),
            cpuset_pin=True,
            compile=CompileStep(argv=("g++", "-O2", "main.cpp"), limits=JobLimits(cpu_time=10.0)),
            tests=(
                TestCase(stdin=b"1 2\n", expected_output=b"3\n"),
                TestCase(
                    stdin=b"2 2\n", expected_output=b"4\n", limits=JobLimits(cpu_time=0.5), repeat=3
                ),
            ),
            compare="tokens",
            float_tolerance=1e-06,
            stop_on_failure=True,
        ),
    ).send(SERVER, JobAcceptance(id="sub-42")).send(
        SERVER,
        JobResult(
            id="sub-42",
            compile=StepResult(
                verdict="ok", exit_code=0, cpu_time=0.8, wall_time=0.9, memory_peak=104_857_600
            ),
            steps=(
                StepResult(verdict="wrong_answer", exit_code=0, cpu_time=0.001, stdout=b"4\n"),
                StepResult(
                    verdict="time_limit",
                    reason="cpu",
                    signal=9,
                    cpu_time=0.5,
                    wall_time=0.51,
                    memory_peak=1_048_576,
                    stdout=b"partial",
                    stdout_truncated=True,
                    repeat=RepeatStats(
                        runs=3,
                        cpu_time_min=0.5,
                        cpu_time_median=0.5,
                        cpu_time_max=0.5,
                        wall_time_min=0.5,
                        wall_time_median=0.505,
                        wall_time_max=0.51,
                        memory_peak_max=1_048_576,
                    ),
                ),
            ),
        ),
    )

    new(
        "playground",
        "Streaming output and interactive stdin; compile output is marked; seq counts all chunks.",
    ).handshake().send(
        CLIENT,
        JobSubmission(
            id="p1", profile="c", files={"a.c": b"main(){}"}, stream=True, interactive_stdin=True
        ),
    ).send(SERVER, JobAcceptance(id="p1")).send(
        SERVER, OutputChunk(id="p1", stream="stderr", data=b"warning\n", seq=0, compile=True)
    ).send(CLIENT, StdinChunk(id="p1", data=b"hello\n")).send(
        SERVER, OutputChunk(id="p1", stream="stdout", data=b"hello\n", seq=1)
    ).send(CLIENT, EndOfStdin(id="p1")).send(
        SERVER,
        JobResult(
            id="p1", steps=(StepResult(verdict="runtime_error", exit_code=1, stderr=b"oops\n"),)
        ),
    )

    new(
        "cancel", "A cancel; the server still answers, with the verdict cancelled."
    ).handshake().send(CLIENT, JobSubmission(id="slow", profile="bash", stdin=b"")).send(
        SERVER, JobAcceptance(id="slow")
    ).send(CLIENT, Cancellation(id="slow")).send(
        SERVER, JobResult(id="slow", steps=(StepResult(verdict="cancelled", signal=9),))
    )

    new(
        "refused-job", "A job-scoped error ends only that job; the connection goes on."
    ).handshake().send(CLIENT, JobSubmission(id="x", profile="cobol")).send(
        SERVER, ErrorReport(code=ErrorCode.UNKNOWN_PROFILE, message="no profile 'cobol'", id="x")
    ).send(CLIENT, Ping(nonce=7)).send(SERVER, Pong(nonce=7))

    new("requests", "ps, stats and a ping from the server.").handshake().send(
        CLIENT, JobSubmission(id="a", profile="python3")
    ).send(SERVER, JobAcceptance(id="a")).send(CLIENT, JobListRequest()).send(
        SERVER,
        JobList(
            jobs=(
                JobInfo(
                    id="a", profile="python3", state="running", elapsed=0.25, client="uid:1000"
                ),
            )
        ),
    ).send(CLIENT, StatsRequest()).send(
        SERVER,
        ServerStats(
            uptime=3600.5,
            connections=2,
            jobs_queued=0,
            jobs_running=1,
            jobs_completed=1234,
            pools=(PoolStats(profile="python3", warm=4, target=4),),
            counters={"refills": 99, "fork_ms_p50": 2.5},
        ),
    ).send(SERVER, Ping(nonce=18446744073709551615)).send(CLIENT, Pong(nonce=18446744073709551615))

    new("unauthorized", "A server refuses the hello: a fatal error.").send(
        CLIENT, Hello(client="cli", token="wrong-token")
    ).send(SERVER, ErrorReport(code=ErrorCode.UNAUTHORIZED, message="bad token"))

    new(
        "lenient-decoding",
        "Unknown fields are ignored, nil means absent, an int is accepted for a float; "
        "canonical_hex is what an encoder writes for the same event.",
    ).lenient(
        CLIENT, {"type": "hello", "version": 3, "client": "future/9", "features": ["zstd"]}
    ).send(SERVER, Welcome(server="sandboxd/0.1.0")).lenient(
        CLIENT,
        {
            "type": "submit",
            "id": "n1",
            "profile": "python3",
            "stdin": None,
            "limits": {"cpu_time": 2, "gpu": True},
        },
    )

    # -- refusals ------------------------------------------------------------------

    new(
        "error-frame-too-large", "A length prefix over the limit is refused at once."
    ).handshake().refused(
        CLIENT,
        struct.pack(">I", 64 * 1024 * 1024 + 1),
        "frame_too_large",
        "only the 4-byte prefix: 67108865 > 67108864",
    )
    new("error-bad-path", "A file name that climbs out of the box.").handshake().refused(
        CLIENT,
        raw_frame(
            {"type": "submit", "id": "e1", "profile": "python3", "files": {"../etc/passwd": b"x"}}
        ),
        "invalid_field",
        "submit.files['../etc/passwd']: must not have an empty, '.' or '..' component",
    )
    new("error-wrong-type", "stdin as a string rather than bytes.").handshake().refused(
        CLIENT,
        raw_frame({"type": "submit", "id": "e2", "profile": "python3", "stdin": "text"}),
        "invalid_field",
        "submit.stdin: must be bytes (msgpack bin)",
    )
    dup = new("error-duplicate-job", "A job id reused while the job is in flight.").handshake()
    dup.send(CLIENT, JobSubmission(id="d", profile="python3"))
    dup.refused(
        CLIENT,
        bytes.fromhex(dup.frames[-1]["hex"]),
        "duplicate_job",
        "job 'd' is already in flight",
    )
    new("error-unknown-job", "A result for a job never submitted.").handshake().refused(
        SERVER,
        raw_frame({"type": "result", "id": "ghost", "steps": []}),
        "unknown_job",
        "no job 'ghost' is in flight",
    )
    new("error-before-hello", "A submit before the handshake.").refused(
        CLIENT,
        raw_frame({"type": "submit", "id": "early", "profile": "python3"}),
        "unexpected_message",
        "a client may not send 'submit' in state START",
    )
    gap = new("error-bad-sequence", "An output chunk that skips a sequence number.").handshake()
    gap.send(CLIENT, JobSubmission(id="s", profile="python3", stream=True)).send(
        SERVER, JobAcceptance(id="s")
    ).refused(
        SERVER,
        raw_frame({"type": "output", "id": "s", "stream": "stdout", "data": b"x", "seq": 1}),
        "bad_sequence",
        "expected seq 0",
    )
    new("error-unknown-type", "A message type this version does not define.").handshake().refused(
        CLIENT,
        raw_frame({"type": "teleport"}),
        "unknown_message",
        "unknown message type 'teleport'",
    )
    new("error-malformed", "A frame whose body is cut short inside a string.").handshake().refused(
        CLIENT,
        bytes.fromhex("00000005") + b"\x81\xa4typ",
        "malformed",
        "not one valid msgpack object",
    )

    # -- added to version 1 before its first release (PROTOCOL.md §8) ---------------

    long_ref = "12/" + "k" * 64  # a connection number and a 64-character job id
    new(
        "kill",
        "ps with live readings, then kill a job of another connection; a second kill "
        "finds nothing.",
    ).handshake().send(CLIENT, JobListRequest()).send(
        SERVER,
        JobList(
            jobs=(
                JobInfo(
                    id=long_ref,
                    profile="python3",
                    state="running",
                    elapsed=1.5,
                    client="judge/2",
                    cpu_time=1.25,
                    memory=12_582_912,
                ),
                JobInfo(id="12/q", profile="c", state="queued", elapsed=0.5),
            )
        ),
    ).send(CLIENT, KillRequest(job=long_ref)).send(CLIENT, KillRequest(job="3/gone")).send(
        SERVER, KillResult(job=long_ref, found=True)
    ).send(SERVER, KillResult(job="3/gone", found=False))

    checker_run = StepResult(verdict="runtime_error", reason="exit code 7", exit_code=7,
                             cpu_time=0.002, wall_time=0.004, memory_peak=1_048_576,
                             stderr_truncated=True)
    new(
        "judged-job",
        "A checker (testlib's protocol), a generator and two batches, the second depending on "
        "the first; partial points, a presentation error, a generator's failure, skipped tests.",
    ).handshake().send(
        CLIENT,
        JobSubmission(
            id="p1",
            profile="python3",
            files={"main.py": b"print(1)\n"},
            tests=(
                TestCase(stdin=b"4\n"),
                TestCase(generator=0, generator_args=("100", "7")),
                TestCase(stdin=b"9\n"),
                TestCase(stdin=b"16\n"),
            ),
            checker=Program(profile="cpp", files={"checker.cpp": b"int main() {}\n"},
                            limits=JobLimits(cpu_time=2.0)),
            generators=(Program(profile="python3", files={"main.py": b"print(4)\n"},
                                argv=("python3", "main.py")),),
            batches=(
                Batch(name="small", tests=(0, 1), points=40.0, stop_on_failure=True),
                Batch(name="large", tests=(2, 3), points=60.0, depends=("small",)),
            ),
        ),
    ).send(SERVER, JobAcceptance(id="p1")).send(
        SERVER,
        JobResult(
            id="p1",
            steps=(
                StepResult(verdict="wrong_answer", reason="partial (0.5)", exit_code=0,
                           stdout=b"1\n", score=0.5,
                           checker_message="points 0.5 1 of 2 right", checker=checker_run),
                StepResult(verdict="judge_error", reason="generator 0: runtime_error "
                           "(exit code 1)", score=0.0),
                StepResult(verdict="skipped", reason="batch 'small', which batch 'large' "
                           "depends on, failed", score=0.0),
                StepResult(verdict="skipped", reason="batch 'small', which batch 'large' "
                           "depends on, failed", score=0.0),
            ),
            batches=(
                BatchResult(name="small", verdict="wrong_answer", score=0.0, points=40.0),
                BatchResult(name="large", verdict="skipped", score=0.0, points=60.0),
            ),
            score=0.0,
        ),
    )

    new(
        "interactive",
        "An interactive problem: the job names an interactor (a program record); each step "
        "carries the interactor's own run, its message and the test's score: accepted, "
        "partial points, and the interactor's failure (judge_error).",
    ).handshake().send(
        CLIENT,
        JobSubmission(
            id="guess",
            profile="python3",
            files={"main.py": b"n = int(input())\n"},
            limits=JobLimits(cpu_time=1.0, wall_time=3.0),
            tests=(
                TestCase(stdin=b"10 7\n"),
                TestCase(stdin=b"8 7\n"),
                TestCase(stdin=b"0 0\n", expected_output=b"0\n"),
            ),
            interactor=Program(
                profile="c",
                files={"main.c": b"int main(void) { return 0; }\n"},
                argv=("./main",),
                limits=JobLimits(cpu_time=2.0),
            ),
        ),
    ).send(SERVER, JobAcceptance(id="guess")).send(
        SERVER,
        JobResult(
            id="guess",
            steps=(
                StepResult(
                    verdict="ok", exit_code=0, cpu_time=0.012, wall_time=0.05, score=1.0,
                    checker_message="found in 3 questions",
                    interactor=StepResult(verdict="ok", exit_code=0, cpu_time=0.001,
                                          wall_time=0.05, stderr=b"found in 3 questions\n"),
                ),
                StepResult(
                    verdict="wrong_answer", reason="partial (0.5)", exit_code=0, score=0.5,
                    checker_message="points 0.5 found in 7 questions (limit 4)",
                    interactor=StepResult(verdict="runtime_error", reason="exit code 7",
                                          exit_code=7,
                                          stderr=b"points 0.5 found in 7 questions (limit 4)\n"),
                ),
                StepResult(
                    verdict="judge_error", reason="interactor failed (exit code 3)", exit_code=0,
                    score=0.0, checker_message="bad test input (0)",
                    interactor=StepResult(verdict="runtime_error", reason="exit code 3",
                                          exit_code=3, stderr=b"bad test input (0)\n"),
                ),
            ),
        ),
    )

    new(
        "judge-limits",
        "Limits as judges set them: a compile-only job (tests: []) answered with its compile "
        "step and no steps, then a run whose memory limit counts address space (RLIMIT_AS) "
        "and whose tiny memory limit is its verdict, not a refusal.",
    ).handshake().send(
        CLIENT,
        JobSubmission(id="build", profile="cpp", files={"main.cpp": b"int main(){}\n"},
                      limits=JobLimits(memory=1024), tests=()),
    ).send(CLIENT, JobSubmission(
        id="as", profile="cpp", files={"main.cpp": b"int main(){ new int[512][512][512]; }\n"},
        limits=JobLimits(memory=268_435_456), memory_mode="address_space",
    )).send(SERVER, JobAcceptance(id="build")).send(SERVER, JobAcceptance(id="as")).send(
        SERVER,
        JobResult(id="build", compile=StepResult(verdict="ok", exit_code=0, cpu_time=0.3)),
    ).send(
        SERVER,
        JobResult(id="as", compile=StepResult(verdict="ok", exit_code=0, cpu_time=0.3), steps=(
            StepResult(verdict="memory_limit", reason="address space: std::bad_alloc",
                       signal=6, memory_peak=524_288,
                       stderr=b"terminate called after throwing an instance of "
                              b"'std::bad_alloc'\n"),
        )),
    )

    new(
        "ci-workspace",
        "A CI job: a gzip workspace archive in two workspace chunks and its end, a "
        "read-only cache, artifact globs; the result carries the matched files.",
    ).handshake().send(
        CLIENT,
        JobSubmission(id="ci-1", profile="bash", argv=("/bin/bash", "ci.sh"),
                      workspace="gzip", caches=("wheels",),
                      artifacts=("reports/*.xml", "coverage.json")),
    ).send(SERVER, JobAcceptance(id="ci-1")).send(
        CLIENT, WorkspaceChunk(id="ci-1", data=b"\x1f\x8b\x08\x00")
    ).send(CLIENT, WorkspaceChunk(id="ci-1", data=b"\x00\x00\x00\x00")).send(
        CLIENT, EndOfWorkspace(id="ci-1")
    ).send(
        SERVER,
        JobResult(id="ci-1", steps=(StepResult(
            verdict="ok", exit_code=0, wall_time=12.5,
            artifacts={"reports/junit.xml": b"<testsuites/>"}, artifacts_truncated=False),)),
    )

    new(
        "network-allow",
        "A job allowed outbound TCP to one name and one address (docs/profiles.md, "
        "'Network'); accepted, one result.",
    ).handshake().send(
        CLIENT,
        JobSubmission(id="ci-1", profile="python3", files={"main.py": b"import urllib\n"},
                      network=NetworkAccess(allow=("pypi.org:443", "10.0.0.5:3128"))),
    ).send(SERVER, JobAcceptance(id="ci-1")).send(SERVER, JobResult(id="ci-1", steps=(OK,)))
    return out


def render(conv: Conversation) -> str:
    return json.dumps(conv.as_json(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    VECTORS.mkdir(parents=True, exist_ok=True)
    wanted = {f"{c.name}.json": render(c) for c in build()}
    for old in VECTORS.glob("*.json"):
        if old.name not in wanted:
            old.unlink()
    for name, text in wanted.items():
        (VECTORS / name).write_text(text, encoding="utf-8")
    print(f"wrote {len(wanted)} vectors to {VECTORS}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
