"""Shared helpers for the protocol tests: hypothesis strategies for valid events,
and ways to bring a client/server pair to where an event may be sent.

(Named ``protocol_helpers`` rather than ``conftest``/``helpers`` so that it
cannot clash with helper modules of other test directories.)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from hypothesis import strategies as st

from sandboxd_protocol import (
    CLIENT,
    COMPARE_MODES,
    NEED_DATA,
    SERVER,
    STREAMS,
    VERDICTS,
    Batch,
    BatchResult,
    Cancellation,
    CompileStep,
    Connection,
    EndOfStdin,
    ErrorCode,
    ErrorReport,
    Event,
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
    OutputChunk,
    Ping,
    Pong,
    PoolStats,
    ProfileInfo,
    Program,
    RepeatStats,
    ServerStats,
    SizeLimits,
    StatsRequest,
    StdinChunk,
    StepResult,
    TestCase,
    Welcome,
)
from sandboxd_protocol._errors import APPLICATION_ERROR_CODES

# --------------------------------------------------------------------------
# Driving connections
# --------------------------------------------------------------------------


def drain(conn: Connection) -> list[Event]:
    """Every event available now (stops at NEED_DATA; includes ConnectionClosed once)."""
    out: list[Event] = []
    while True:
        event = conn.next_event()
        if event is NEED_DATA:
            return out
        out.append(event)
        if type(event).__name__ == "ConnectionClosed":
            return out


def transfer(sender: Connection, receiver: Connection, event: Event) -> Event | None:
    """Send ``event`` one way; return what the receiver made of it (None if dropped)."""
    data = sender.send(event)
    receiver.receive_data(data)
    got = drain(receiver)
    assert len(got) <= 1, got
    return got[0] if got else None


def handshake(
    limits: SizeLimits | None = None, *, server_limits: SizeLimits | None = None
) -> tuple[Connection, Connection]:
    """A client and a server, both READY."""
    client = Connection(CLIENT, limits=limits or SizeLimits())
    server = Connection(SERVER, limits=server_limits or limits or SizeLimits())
    assert transfer(client, server, Hello(client="test")) == Hello(client="test")
    welcome = Welcome(server="test", limits=server.limits)
    assert transfer(server, client, welcome) == welcome
    return client, server


def submit(
    client: Connection, server: Connection, job_id: str = "j1", *, accept: bool = True, **kw: Any
) -> JobSubmission:
    """Submit (and by default accept) a job."""
    sub = JobSubmission(id=job_id, profile=kw.pop("profile", "python3"), **kw)
    assert transfer(client, server, sub) == sub
    if accept:
        assert transfer(server, client, JobAcceptance(id=job_id)) == JobAcceptance(id=job_id)
    return sub


def feed_whole(conn: Connection, data: bytes) -> tuple[list[Event], str | None]:
    """Events from ``data`` fed in one piece, and the error code that stopped it, if any."""
    events: list[Event] = []
    conn.receive_data(data)
    try:
        events.extend(drain(conn))
    except Exception as exc:
        return events, getattr(exc, "code", repr(exc))
    return events, None


def feed_bytewise(conn: Connection, data: bytes) -> tuple[list[Event], str | None]:
    """Events from ``data`` fed one byte at a time."""
    events: list[Event] = []
    try:
        for i in range(len(data)):
            conn.receive_data(data[i : i + 1])
            events.extend(drain(conn))
    except Exception as exc:
        return events, getattr(exc, "code", repr(exc))
    return events, None


def prepare(event: Event) -> tuple[Connection, Connection, Event]:
    """A (sender, receiver) pair in a state where ``event`` may be sent.

    Returns the event itself, or a copy adjusted to the state (a chunk's ``seq``).
    """
    kind = type(event)
    if kind is Hello:
        return Connection(CLIENT), Connection(SERVER), event
    if kind is Welcome:
        client = Connection(CLIENT, limits=event.limits)
        server = Connection(SERVER, limits=event.limits)
        transfer(client, server, Hello(version=event.version))
        return server, client, event
    client, server = handshake()
    if kind is JobSubmission:
        return client, server, event
    if kind in (StdinChunk, EndOfStdin):
        submit(client, server, event.id, interactive_stdin=True)
        return client, server, event
    if kind is Cancellation:
        submit(client, server, event.id)
        return client, server, event
    if kind is JobAcceptance:
        submit(client, server, event.id, accept=False)
        return server, client, event
    if kind is OutputChunk:
        steps = event.step + 1
        submit(client, server, event.id, stream=True, tests=[TestCase()] * steps)
        return server, client, dataclasses.replace(event, seq=0)
    if kind is JobResult:
        tests = [TestCase()] * max(1, len(event.steps))
        submit(client, server, event.id, tests=tests)
        return server, client, event
    if kind is ErrorReport:
        if event.job_scoped:
            submit(client, server, event.id, accept=False)
        return server, client, event
    if kind is JobList:
        transfer(client, server, JobListRequest())
        return server, client, event
    if kind is ServerStats:
        transfer(client, server, StatsRequest())
        return server, client, event
    if kind is KillResult:
        transfer(client, server, KillRequest(job=event.job))
        return server, client, event
    if kind is Pong:
        transfer(server, client, Ping(nonce=event.nonce))
        return client, server, event
    if kind in (JobListRequest, KillRequest, StatsRequest, Ping, Goodbye):
        return client, server, event
    raise AssertionError(f"no preparation for {kind.__name__}")


# --------------------------------------------------------------------------
# Strategies for valid events
# --------------------------------------------------------------------------

text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30
)
job_ids = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=64
)
job_refs = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=128
)
profiles = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,15}", fullmatch=True)
small_bytes = st.binary(max_size=40)
seconds = st.floats(min_value=0.0, max_value=1e9, allow_nan=False)
limit_seconds = st.floats(min_value=0.0, max_value=1e6, exclude_min=True, allow_nan=False)
int64 = st.integers(0, 2**63 - 1)
positive64 = st.integers(1, 2**63 - 1)
argvs = st.lists(text, min_size=1, max_size=4).map(tuple)


def _opt(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


_component = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00/"),
    min_size=1,
    max_size=12,
).filter(lambda s: s not in (".", ".."))
paths = (
    st.lists(_component, min_size=1, max_size=3)
    .map("/".join)
    .filter(lambda p: len(p.encode()) <= 255)
)


def _no_file_dir_clash(files: dict[str, bytes]) -> bool:
    for p in files:
        parts = p.split("/")
        if any("/".join(parts[:i]) in files for i in range(1, len(parts))):
            return False
    return True


files = st.dictionaries(paths, small_bytes, max_size=4).filter(_no_file_dir_clash)
env = st.dictionaries(
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True), text, max_size=3
)

job_limits = st.builds(
    JobLimits,
    cpu_time=_opt(limit_seconds),
    wall_time=_opt(limit_seconds),
    memory=_opt(positive64),
    pids=_opt(positive64),
    output=_opt(int64),
    file_size=_opt(int64),
    box_size=_opt(int64),
    tmp_size=_opt(int64),
    open_files=_opt(positive64),
    stack=_opt(int64),
)
test_cases = st.builds(
    TestCase,
    stdin=small_bytes,
    expected_output=_opt(small_bytes),
    limits=_opt(job_limits),
    repeat=st.integers(1, 1000),
)
programs = st.builds(Program, profile=profiles, files=files, argv=_opt(argvs),
                     limits=_opt(job_limits))
batch_names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,10}", fullmatch=True)


@st.composite
def judging(draw: st.DrawFn, tests: tuple[TestCase, ...] | None) -> dict[str, Any]:
    """A checker, generators (and tests that use them) and batches, consistent with
    ``tests``: each test in one batch, dependencies only on earlier batches."""
    out: dict[str, Any] = {"checker": draw(_opt(programs))}
    gens = draw(_opt(st.lists(programs, min_size=1, max_size=2).map(tuple)))
    out["generators"] = gens
    if tests is None:
        return out
    if gens:
        tests = tuple(dataclasses.replace(t, generator=draw(_opt(st.integers(0, len(gens) - 1))))
                      for t in tests)
        tests = tuple(dataclasses.replace(t, generator_args=draw(_opt(argvs)))
                      if t.generator is not None else t for t in tests)
    out["tests"] = tests
    if draw(st.booleans()):
        names = draw(st.lists(batch_names, min_size=1, max_size=len(tests), unique=True))
        owner = [draw(st.integers(0, len(names) - 1)) for _ in tests]
        owner[: len(names)] = range(len(names))[: len(tests)]
        out["batches"] = tuple(
            Batch(name=n, tests=tuple(i for i, o in enumerate(owner) if o == k),
                  points=draw(st.floats(0, 1e9)), stop_on_failure=draw(st.booleans()),
                  depends=tuple(names[:k]) if k and draw(st.booleans()) else None)
            for k, n in enumerate(names))
        out["stop_on_failure"] = False
    return out


@st.composite
def submissions(draw: st.DrawFn, job_id: st.SearchStrategy[str] = job_ids) -> JobSubmission:
    tests = draw(_opt(st.lists(test_cases, min_size=1, max_size=3).map(tuple)))
    batch = tests is not None
    compare = draw(st.sampled_from(COMPARE_MODES))
    sub = JobSubmission(
        id=draw(job_id),
        profile=draw(profiles),
        files=draw(files),
        stdin=b"" if batch else draw(small_bytes),
        argv=draw(_opt(argvs)),
        env=draw(_opt(env)),
        limits=draw(_opt(job_limits)),
        cpuset_pin=draw(_opt(st.booleans())),
        compile=draw(_opt(st.builds(CompileStep, argv=_opt(argvs), limits=_opt(job_limits)))),
        tests=tests,
        expected_output=None if batch else draw(_opt(small_bytes)),
        compare=compare,
        float_tolerance=draw(_opt(st.floats(0, 1e9))) if compare == "tokens" else None,
        stop_on_failure=draw(st.booleans()),
        stream=draw(st.booleans()),
        interactive_stdin=False if batch else draw(st.booleans()),
        interactor=draw(_opt(st.builds(Program, profile=profiles, files=files,
                                       argv=_opt(argvs), limits=_opt(job_limits)))),
    )
    return dataclasses.replace(sub, **draw(judging(tests)))


repeat_stats = st.builds(
    RepeatStats,
    runs=st.integers(1, 2**31 - 1),
    cpu_time_min=seconds,
    cpu_time_median=seconds,
    cpu_time_max=seconds,
    wall_time_min=seconds,
    wall_time_median=seconds,
    wall_time_max=seconds,
    memory_peak_max=int64,
)


@st.composite
def step_results(draw: st.DrawFn, nested: bool = True) -> StepResult:
    verdict = draw(st.sampled_from(VERDICTS))
    if verdict == "time_limit":
        reason: str | None = draw(st.sampled_from(["cpu", "wall"]))
    elif verdict in ("sandbox_error", "judge_error"):
        reason = draw(text.filter(bool))
    else:
        reason = draw(_opt(text))
    return StepResult(
        verdict=verdict,
        reason=reason,
        exit_code=draw(_opt(st.integers(0, 255))),
        signal=draw(_opt(st.integers(1, 127))),
        cpu_time=draw(seconds),
        user_time=draw(seconds),
        sys_time=draw(seconds),
        wall_time=draw(seconds),
        memory_peak=draw(int64),
        oom_killed=draw(st.booleans()),
        stdout=draw(small_bytes),
        stderr=draw(small_bytes),
        stdout_truncated=draw(st.booleans()),
        stderr_truncated=draw(st.booleans()),
        repeat=draw(_opt(repeat_stats)),
        score=draw(_opt(st.floats(0, 1))),
        checker_message=draw(_opt(text)),
        checker=draw(_opt(step_results(nested=False))) if nested else None,
        interactor=draw(_opt(step_results(nested=False))) if nested else None,
    )


size_limits = st.builds(
    SizeLimits,
    max_frame_size=st.integers(1024 * 1024, 2**32 - 1),
    max_files=st.integers(1, 10_000),
    max_jobs_in_flight=st.integers(8, 10_000),
    max_pending_requests=st.integers(8, 1000),
)

nonces = st.integers(0, 2**64 - 1)

events: st.SearchStrategy[Event] = st.one_of(
    st.builds(Hello, version=st.integers(1, 2**31 - 1), client=text, token=_opt(text)),
    st.builds(
        Welcome,
        version=st.just(1),
        server=text,
        limits=size_limits,
        profiles=st.lists(
            st.builds(
                ProfileInfo,
                name=profiles,
                description=text,
                compiled=st.booleans(),
                default_limits=_opt(job_limits),
                max_limits=_opt(job_limits),
                entry=_opt(text),
            ),
            max_size=3,
        ).map(tuple),
    ),
    submissions(),
    st.builds(JobAcceptance, id=job_ids),
    st.builds(
        OutputChunk,
        id=job_ids,
        stream=st.sampled_from(STREAMS),
        data=small_bytes,
        seq=st.just(0),
        step=st.integers(0, 3),
    ).map(lambda c: c),
    st.builds(
        OutputChunk,
        id=job_ids,
        stream=st.sampled_from(STREAMS),
        data=small_bytes,
        seq=st.just(0),
        compile=st.just(True),
    ),
    st.builds(StdinChunk, id=job_ids, data=small_bytes),
    st.builds(EndOfStdin, id=job_ids),
    st.builds(
        JobResult,
        id=job_ids,
        compile=_opt(step_results()),
        steps=st.lists(step_results(), max_size=3).map(tuple),
        batches=_opt(st.lists(st.builds(BatchResult, name=batch_names,
                                        verdict=st.sampled_from(VERDICTS),
                                        score=st.floats(0, 1e9), points=st.floats(0, 1e9)),
                              max_size=3).map(tuple)),
        score=_opt(st.floats(0, 1e18)),
    ),
    st.builds(Cancellation, id=job_ids),
    st.builds(JobListRequest),
    st.builds(
        JobList,
        jobs=st.lists(
            st.builds(
                JobInfo,
                id=job_refs,
                profile=profiles,
                state=st.sampled_from(["queued", "running"]),
                elapsed=seconds,
                client=text,
                cpu_time=_opt(seconds),
                memory=_opt(int64),
            ),
            max_size=3,
        ).map(tuple),
    ),
    st.builds(KillRequest, job=job_refs),
    st.builds(KillResult, job=job_refs, found=st.booleans()),
    st.builds(StatsRequest),
    st.builds(
        ServerStats,
        uptime=seconds,
        connections=int64,
        jobs_queued=int64,
        jobs_running=int64,
        jobs_completed=int64,
        pools=st.lists(
            st.builds(PoolStats, profile=profiles, warm=int64, target=int64), max_size=3
        ).map(tuple),
        counters=st.dictionaries(
            st.from_regex(r"[A-Za-z_][A-Za-z0-9_.]{0,20}", fullmatch=True),
            st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False, allow_infinity=False),
            max_size=3,
        ),
    ),
    st.builds(Ping, nonce=nonces),
    st.builds(Pong, nonce=nonces),
    st.one_of(
        st.builds(ErrorReport, code=st.sampled_from(sorted(ErrorCode)), message=text),
        st.builds(
            ErrorReport,
            code=st.sampled_from(sorted(APPLICATION_ERROR_CODES)),
            message=text,
            id=job_ids,
        ),
    ),
    st.builds(Goodbye, reason=text),
)


def all_event_types() -> Iterable[type]:
    from sandboxd_protocol import MESSAGE_TYPES

    return MESSAGE_TYPES.values()
