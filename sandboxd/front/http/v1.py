"""sandboxd's own HTTP API, ``/v1``: docs/http.md describes it, ``/v1/openapi.json`` too.

Strategy: every route decodes JSON into the service's terms (``job_spec``,
``job_limits``), calls the ``JobService`` and encodes the answer
(``job_json``), as the msgpack front door does with its frames; admission,
running, verdicts and counting are the service's. A job is submitted and
awaited in its request (``wait=true``, the default; the client going away
cancels it), or run in the listener's nursery (``wait=false``): its result
is then kept for polling, for a bounded time and count (``Results``). The
WebSocket ``/v1/jobs/stream`` runs one job with its output streamed as it
comes and stdin typed in: what a playground's terminal needs.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import contextlib
import json
import logging
import math
import re
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket

import sandboxd_protocol as proto
from sandboxd import __version__
from sandboxd.compare import COMPARE_MODES
from sandboxd.jobs import BatchSpec, JobOutcome, JobSpec, ProgramSpec, StepOutcome, TestSpec
from sandboxd.limits import Limits
from sandboxd.log import event
from sandboxd.result import Result
from sandboxd.service import Job, JobService, ServiceError, final_verdict
from sandboxd.workspace import WorkspaceError, check_globs
from sandboxd_protocol import DEFAULT_SIZE_LIMITS, ErrorCode

from . import _openapi
from ._common import (
    CONNECTION,
    BadJson,
    FrontContext,
    HttpError,
    data_field,
    describe,
    error_body,
    error_response,
    output_fields,
    parse_json,
    read_json,
    token_of,
)
from ._context import HttpContext
from ._workspaces import Workspaces

LINGER = 2.0  # seconds a closed WebSocket's client has to send its closing reply
SIZES = DEFAULT_SIZE_LIMITS  # the msgpack protocol's caps on a job's fields, the same here
LIMIT_KEYS = tuple(Limits.__dataclass_fields__)
_SIZE_LIMITS = {s.name for s in proto.LIMITS if s.unit is proto.Unit.BYTES}
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")
JOB_FIELDS = ("profile", "files", "stdin", "argv", "env", "limits", "compile", "tests",
              "expected_output", "compare", "float_tolerance", "stop_on_failure", "cpuset_pin",
              "warm_runtime", "memory_mode", "checker", "generators", "batches", "interactor",
              "workspace", "caches", "artifacts", "network")
PROGRAM_FIELDS = ("profile", "files", "argv", "limits")
BATCH_FIELDS = ("name", "tests", "points", "stop_on_failure", "depends")
_BATCH_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")


def routes(ctx: HttpContext) -> list[BaseRoute]:
    api = V1(ctx)
    return [
        Route("/v1/workspaces", api.workspaces, methods=["POST"]),
        Route("/v1/health", api.health, methods=["GET"]),
        Route("/v1/openapi.json", api.openapi, methods=["GET"]),
        Route("/v1/profiles", api.profiles, methods=["GET"]),
        Route("/v1/stats", api.stats, methods=["GET"]),
        Route("/v1/ps", api.ps, methods=["GET"]),
        Route("/v1/kill/{ref:path}", api.kill, methods=["POST"]),
        WebSocketRoute("/v1/jobs/stream", api.stream),
        Route("/v1/jobs", api.submit, methods=["POST"]),
        Route("/v1/jobs/{id}/log", api.log, methods=["GET"]),
        Route("/v1/jobs/{id}", api.poll, methods=["GET"]),
        Route("/v1/jobs/{id}", api.cancel, methods=["DELETE"]),
    ]


# ------------------------------------------------------------------ decoding


def _invalid(where: str, message: str) -> HttpError:
    return HttpError(ErrorCode.INVALID_FIELD, f"{where} {message}")


def _object(value: Any, where: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _invalid(where, f"must be an object, not {describe(value)}")
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise _invalid(where, f"has unknown field {unknown[0]!r} (known: {', '.join(allowed)})")
    return value


def _string(value: Any, where: str, cap: int) -> str:
    if not isinstance(value, str):
        raise _invalid(where, f"must be a string, not {describe(value)}")
    if "\x00" in value:
        raise _invalid(where, "must not contain NUL")
    if len(value.encode()) > cap:
        raise _invalid(where, f"must be at most {cap} bytes of UTF-8")
    return value


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise _invalid(where, f"must be true or false, not {describe(value)}")
    return value


def _argv(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not value:
        raise _invalid(where, f"must be a non-empty array of strings, not {describe(value)}")
    if len(value) > SIZES.max_argv:
        raise _invalid(where, f"must have at most {SIZES.max_argv} items")
    return [_string(v, f"{where}[{i}]", SIZES.max_arg_length) for i, v in enumerate(value)]


def _path_problem(p: str) -> str | None:
    """Why ``p`` cannot name a file in /box (the protocol's rule: relative, no empty, '.'
    or '..' component, no NUL), or ``None``."""
    if not p:
        return "must not be empty"
    if "\x00" in p:
        return "must not contain NUL"
    if p.startswith("/"):
        return "must be relative (no leading '/')"
    if len(p.encode()) > SIZES.max_path_length:
        return f"must be at most {SIZES.max_path_length} bytes of UTF-8"
    if any(part in ("", ".", "..") for part in p.split("/")):
        return "must not have an empty, '.' or '..' component"
    return None


def _files(value: Any, where: str) -> dict[str, bytes]:
    if not isinstance(value, dict):
        raise _invalid(where, f"must be an object of path: content, not {describe(value)}")
    if len(value) > SIZES.max_files:
        raise _invalid(where, f"must have at most {SIZES.max_files} files")
    out: dict[str, bytes] = {}
    total = 0
    for path, content in value.items():
        why = _path_problem(path)
        if why:
            raise _invalid(f"{where}[{path!r}]", why)
        out[path] = data_field(content, f"{where}[{path!r}]", SIZES.max_file_size)
        total += len(out[path])
    if total > SIZES.max_total_file_size:
        raise _invalid(where, f"must total at most {SIZES.max_total_file_size} bytes")
    for path in out:
        parts = path.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in out:
                raise _invalid(f"{where}[{path!r}]",
                               f"{'/'.join(parts[:i])!r} is both a file and a directory")
    return out


def _env(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise _invalid(where, f"must be an object of NAME: value, not {describe(value)}")
    if len(value) > SIZES.max_env:
        raise _invalid(where, f"must have at most {SIZES.max_env} variables")
    out = {}
    for name, v in value.items():
        if not _ENV_NAME.fullmatch(name):
            raise _invalid(f"{where}[{name!r}]", "must be a variable name [A-Za-z_][A-Za-z0-9_]*")
        out[name] = _string(v, f"{where}[{name!r}]", SIZES.max_arg_length)
    return out


def job_limits(value: Any, where: str) -> proto.JobLimits | None:
    """A job's (or a test's, or a compile step's) limits as ``JobSpec`` takes them.

    The one place that builds them: seconds as numbers, sizes as bytes or
    strings with K/M/G; ranges and ceilings are the service's to check
    (``limit_exceeded``).
    """
    if value is None:
        return None
    limits = _object(value, where, LIMIT_KEYS)
    for key, v in limits.items():
        ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        if not ok and not (key in _SIZE_LIMITS and isinstance(v, str)):
            kind = "bytes (a number or a string like \"64M\")" if key in _SIZE_LIMITS else \
                "a number"
            raise _invalid(f"{where}.{key}", f"must be {kind}, not {describe(v)}")
    if not limits:
        return None
    try:
        return proto.parse_limits(limits)
    except proto.LimitValueError as e:
        raise _invalid(f"{where}.{e.limit}", e.reason) from None


def job_spec(service: JobService, body: Any, workspaces: Workspaces | None = None,
             token: str = "", **streams: Any) -> JobSpec:
    """A ``POST /v1/jobs`` body as the service's ``JobSpec`` (``streams``: its
    ``on_output``, ``on_compile_output`` and ``stdin_stream``, for a WebSocket; with
    ``workspaces``, a ``workspace`` id names an uploaded archive of ``token``'s)."""
    body = _object(body, "the job", JOB_FIELDS)
    if "profile" not in body:
        raise _invalid("profile", "is required")
    profile = service.profile(_string(body["profile"], "profile", 64))
    files = _files(body.get("files", {}), "files")
    stdin = data_field(body["stdin"], "stdin", SIZES.max_input) if "stdin" in body else b""
    expected = (data_field(body["expected_output"], "expected_output", SIZES.max_input)
                if body.get("expected_output") is not None else None)
    compile_argv = compile_limits = None
    if body.get("compile") is not None:
        step = _object(body["compile"], "compile", ("argv", "limits"))
        compile_argv = _argv(step["argv"], "compile.argv") if step.get("argv") else None
        compile_limits = job_limits(step.get("limits"), "compile.limits")
    tests = None
    if body.get("tests") is not None:
        raw = body["tests"]
        if not isinstance(raw, list):  # [] = compile only
            raise _invalid("tests", f"must be an array, not {describe(raw)}")
        if len(raw) > SIZES.max_tests:
            raise _invalid("tests", f"must have at most {SIZES.max_tests} tests")
        if "stdin" in body or expected is not None:
            raise _invalid("stdin", "and expected_output must be absent when tests are given "
                           "(each test has its own)")
        tests = [_test(t, f"tests[{i}]") for i, t in enumerate(raw)]
    compare = body.get("compare", "trailing_ws")
    if compare not in COMPARE_MODES:
        raise _invalid("compare", f"must be one of {', '.join(COMPARE_MODES)}, not {compare!r}")
    tolerance = body.get("float_tolerance")
    if tolerance is not None:
        if isinstance(tolerance, bool) or not isinstance(tolerance, int | float) or not (
                0 <= tolerance <= 1e9):
            raise _invalid("float_tolerance", "must be a number from 0 to 1e9")
        if compare != "tokens":
            raise _invalid("float_tolerance", "is only allowed with compare 'tokens'")
    caches = tuple(_names(body.get("caches"), "caches", 16, 64))
    artifacts = (tuple(_names(body["artifacts"], "artifacts", 64, 1024))
                 if body.get("artifacts") is not None else None)
    if artifacts is not None:
        try:
            check_globs(artifacts)
        except WorkspaceError as e:
            raise _invalid("artifacts", str(e)) from None
    if body.get("workspace") is not None:  # last: the archive is claimed (used once)
        if workspaces is None:
            raise _invalid("workspace", "is only for POST /v1/jobs")
        streams["workspace"] = workspaces.claim(body["workspace"], token)
    return JobSpec(
        caches=caches, artifacts=artifacts,
        profile=profile, files=files, stdin=stdin,
        argv=_argv(body["argv"], "argv") if body.get("argv") is not None else None,
        env=_env(body.get("env") or {}, "env"),
        limits=job_limits(body.get("limits"), "limits"),
        compile_argv=compile_argv, compile_limits=compile_limits, tests=tests,
        expected_output=expected, compare=compare,
        float_tolerance=float(tolerance) if tolerance is not None else None,
        stop_on_failure=_bool(body.get("stop_on_failure", False), "stop_on_failure"),
        cpuset_pin=_bool(body.get("cpuset_pin", False), "cpuset_pin"),
        warm_runtime=(_bool(body["warm_runtime"], "warm_runtime")
                      if body.get("warm_runtime") is not None else None),
        memory_mode=_memory_mode(body.get("memory_mode")),
        checker=(_program(service, body["checker"], "checker")
                 if body.get("checker") is not None else None),
        generators=_generators(service, body.get("generators"), tests),
        batches=_batches(body.get("batches"), len(tests) if tests is not None else 1,
                         body.get("stop_on_failure", False)),
        interactor=(_program(service, body["interactor"], "interactor")
                    if body.get("interactor") is not None else None),
        network_allow=_network(body.get("network")),
        **streams)


def _program(service: JobService, value: Any, where: str) -> ProgramSpec:
    """A checker's, generator's or interactor's program record (PROTOCOL.md §4.1), as JSON."""
    p = _object(value, where, PROGRAM_FIELDS)
    if "profile" not in p:
        raise _invalid(f"{where}.profile", "is required")
    return ProgramSpec(
        profile=service.profile(_string(p["profile"], f"{where}.profile", 64)),
        files=_files(p.get("files", {}), f"{where}.files"),
        argv=_argv(p["argv"], f"{where}.argv") if p.get("argv") is not None else None,
        limits=job_limits(p.get("limits"), f"{where}.limits"))


def _generators(service: JobService, value: Any, tests: list[TestSpec] | None
                ) -> list[ProgramSpec]:
    gens: list[ProgramSpec] = []
    if value is not None:
        if not isinstance(value, list) or len(value) > 1024:
            raise _invalid("generators", "must be an array of at most 1024 programs")
        gens = [_program(service, g, f"generators[{i}]") for i, g in enumerate(value)]
    for i, t in enumerate(tests or []):
        if t.generator is not None and t.generator >= len(gens):
            raise _invalid(f"tests[{i}].generator", f"must name one of the job's {len(gens)} "
                           "generators")
    return gens


def _batches(value: Any, n: int, stop_on_failure: Any) -> list[BatchSpec] | None:
    """Batches as PROTOCOL.md §4.1 has them: each test in exactly one."""
    if value is None:
        return None
    if not isinstance(value, list) or not value or len(value) > SIZES.max_tests:
        raise _invalid("batches", f"must be a non-empty array, not {describe(value)}")
    if stop_on_failure:
        raise _invalid("stop_on_failure", "must be false with batches (each batch has its own)")
    out: list[BatchSpec] = []
    owner: dict[int, str] = {}
    for k, raw in enumerate(value):
        where = f"batches[{k}]"
        b = _object(raw, where, BATCH_FIELDS)
        name = b.get("name")
        if not isinstance(name, str) or not _BATCH_NAME.fullmatch(name):
            raise _invalid(f"{where}.name", "must be a batch name [A-Za-z0-9._+-]")
        tests = b.get("tests")
        if not isinstance(tests, list) or not tests or not all(
                isinstance(t, int) and not isinstance(t, bool) for t in tests):
            raise _invalid(f"{where}.tests", "must be a non-empty array of test indices")
        for t in tests:
            if not 0 <= t < n:
                raise _invalid(f"{where}.tests", f"must be below {n} (the job's tests), got {t}")
            if t in owner:
                raise _invalid(f"{where}.tests", f"test {t} is already in batch {owner[t]!r}")
            owner[t] = name
        points = b.get("points", 1.0)
        if isinstance(points, bool) or not isinstance(points, int | float) or not (
                0 <= points <= 1e9):
            raise _invalid(f"{where}.points", "must be a number from 0 to 1e9")
        depends = b.get("depends") or []
        if not isinstance(depends, list) or not all(isinstance(d, str) for d in depends):
            raise _invalid(f"{where}.depends", "must be an array of batch names")
        out.append(BatchSpec(name=name, tests=list(tests), points=float(points),
                             stop_on_failure=_bool(b.get("stop_on_failure", False),
                                                   f"{where}.stop_on_failure"),
                             depends=list(depends)))
    if len(owner) != n:
        missing = min(set(range(n)) - set(owner))
        raise _invalid("batches", f"must hold every test: test {missing} is in none")
    return out


def _memory_mode(value: Any) -> str | None:
    """``memory_mode``: absent or null (the profile's), or one of the protocol's modes."""
    if value is None:
        return None
    if value not in proto.MEMORY_MODES:
        raise _invalid("memory_mode", f"must be one of {', '.join(proto.MEMORY_MODES)}, "
                       f"not {describe(value)}")
    return str(value)


def _names(value: Any, where: str, most: int, cap: int) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > most:
        raise _invalid(where, f"must be an array of at most {most} strings")
    return [_string(v, f"{where}[{i}]", cap) for i, v in enumerate(value)]


def _network(value: Any) -> tuple[str, ...] | None:
    """``{"allow": ["host:port", ...]}`` (the msgpack ``network`` record); None: the
    profile's. The service checks the entries themselves (sandboxd/egress.py)."""
    if value is None:
        return None
    net = _object(value, "network", ("allow",))
    allow = net.get("allow", [])
    if not isinstance(allow, list) or len(allow) > 32 or not all(
            isinstance(a, str) and len(a) <= 260 for a in allow):
        raise _invalid("network.allow", "must be an array of at most 32 \"host:port\" "
                       "strings")
    return tuple(allow)


def _test(value: Any, where: str) -> TestSpec:
    t = _object(value, where, ("stdin", "expected_output", "limits", "repeat", "generator",
                               "generator_args"))
    repeat = t.get("repeat", 1)
    if isinstance(repeat, bool) or not isinstance(repeat, int) or not 1 <= repeat <= 1000:
        raise _invalid(f"{where}.repeat", "must be an integer from 1 to 1000")
    generator = t.get("generator")
    if generator is not None and (isinstance(generator, bool) or not isinstance(generator, int)
                                  or not 0 <= generator <= 1023):
        raise _invalid(f"{where}.generator", "must be an index into generators (0 to 1023)")
    args = t.get("generator_args")
    if args is not None and generator is None:
        raise _invalid(f"{where}.generator_args", "needs a generator")
    return TestSpec(
        stdin=data_field(t["stdin"], f"{where}.stdin", SIZES.max_input) if "stdin" in t else b"",
        expected_output=(data_field(t["expected_output"], f"{where}.expected_output",
                                    SIZES.max_input)
                         if t.get("expected_output") is not None else None),
        limits=job_limits(t.get("limits"), f"{where}.limits"), repeat=repeat,
        generator=generator,
        generator_args=_argv(args, f"{where}.generator_args") if args else [])


# ------------------------------------------------------------------ encoding

_RESULT_FIELDS = tuple(Result.__dataclass_fields__)


def step_json(outcome: StepOutcome) -> dict[str, Any]:
    """A step's fields as the msgpack StepResult names them; outputs as text, and as
    ``stdout_b64``/``stderr_b64`` too when they are not UTF-8."""
    r = outcome.result
    out: dict[str, Any] = {}
    for name in _RESULT_FIELDS:
        if name in ("stdout", "stderr"):
            out.update(output_fields(name, getattr(r, name)))
        else:
            out[name] = getattr(r, name)
    rp = outcome.repeat
    out["repeat"] = None if rp is None else {
        "runs": rp.runs, "cpu_time_min": rp.cpu[0], "cpu_time_median": rp.cpu[1],
        "cpu_time_max": rp.cpu[2], "wall_time_min": rp.wall[0], "wall_time_median": rp.wall[1],
        "wall_time_max": rp.wall[2], "memory_peak_max": rp.memory_peak_max,
        "chosen": rp.chosen}
    if outcome.score is not None or outcome.checker is not None:  # a judged job's
        out["score"] = outcome.score
        out["checker_message"] = outcome.checker_message
        c = outcome.checker
        out["checker"] = None if c is None else {
            name: getattr(c, name) for name in _RESULT_FIELDS
            if not name.startswith(("stdout", "stderr"))}
    if outcome.interactor is not None:  # an interactive test: the interactor's own run
        out["interactor"] = step_json(StepOutcome(outcome.interactor))
    if outcome.artifacts is not None:  # the job named artifacts: path -> base64
        out["artifacts"] = {k: base64.b64encode(v).decode()
                            for k, v in outcome.artifacts.files.items()}
        out["artifacts_truncated"] = outcome.artifacts.truncated
    return out


def job_json(job_id: str, outcome: JobOutcome) -> dict[str, Any]:
    out = {"id": job_id, "state": "done", "verdict": final_verdict(outcome),
           "compile": step_json(outcome.compile) if outcome.compile else None,
           "steps": [step_json(s) for s in outcome.steps]}
    if outcome.score is not None:  # a judged job (PROTOCOL.md §4.1)
        out["score"] = outcome.score
        out["batches"] = None if outcome.batches is None else [
            {"name": b.name, "verdict": b.verdict, "score": b.score, "points": b.points}
            for b in outcome.batches]
    return out


def _limits_json(lim: Limits) -> dict[str, Any]:
    return lim.as_dict()


# ------------------------------------------------------------------ background jobs


@dataclass(eq=False)
class Entry:
    """A ``wait=false`` job: its handle while it runs, its answer once done."""

    id: str
    job: Job
    answer: dict[str, Any] | None = None
    finished: float | None = None  # monotonic
    # Its output as it comes, stdout and stderr interleaved (compile output first), for
    # GET /v1/jobs/{id}/log: bounded by its output limits, kept as long as its answer.
    log: bytearray = field(default_factory=bytearray)
    grew: trio.Event = field(default_factory=trio.Event)

    def append(self, data: bytes) -> None:
        self.log += data
        self.grew.set()
        self.grew = trio.Event()

    def view(self) -> dict[str, Any]:
        if self.answer is not None:
            return self.answer
        return {"id": self.id, "state": self.job.state, "profile": self.job.profile}


@dataclass(eq=False)
class Results:
    """Background jobs by id: every one in flight (the service's queue bounds them), and
    the answers of at most ``kept`` finished ones for at most ``ttl`` seconds."""

    kept: int
    ttl: float
    entries: OrderedDict[str, Entry] = field(default_factory=OrderedDict)

    def prune(self) -> None:
        now = time.monotonic()
        done = [e for e in self.entries.values() if e.finished is not None]
        excess = len(done) - self.kept
        for e in done:  # oldest first: entries keep their submission order
            if excess > 0 or now - (e.finished or now) > self.ttl:
                self.entries.pop(e.id, None)
                excess -= 1

    def get(self, job_id: str) -> Entry | None:
        self.prune()
        return self.entries.get(job_id)


# ------------------------------------------------------------------ the API


def _query_flag(request: Request, name: str, default: bool) -> bool:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if raw.lower() in ("true", "1", "yes", ""):
        return True
    if raw.lower() in ("false", "0", "no"):
        return False
    raise _invalid(f"?{name}", f"must be true or false, not {raw!r}")


class V1:
    def __init__(self, ctx: HttpContext) -> None:
        self.ctx = ctx
        self.service = ctx.service
        self.results = Results(ctx.cfg.http_results_kept, ctx.cfg.http_result_ttl)
        self.workspaces = Workspaces(ctx)  # POST /v1/workspaces: archives for CI jobs

    # -- small routes ----------------------------------------------------

    async def health(self, request: Request) -> Response:
        draining = self.service.draining
        return JSONResponse({"status": "draining" if draining else "ok",
                             "version": __version__},
                            status_code=503 if draining else 200)

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(_openapi.SPEC)

    async def profiles(self, request: Request) -> Response:
        versions = self.service.versions
        return JSONResponse({"profiles": [{
            "name": p.name, "description": p.description, "compiled": p.compile is not None,
            "entry": p.entry, "version": versions.get(p.name) or None,
            "available": not p.unavailable, "unavailable_reason": p.unavailable or None,
            "default_limits": _limits_json(p.limits), "max_limits": _limits_json(p.max_limits),
        } for p in self.service.profiles.values()]})

    async def stats(self, request: Request) -> Response:
        # With workers, the whole daemon's: summed as the msgpack socket's stats are.
        daemon = self.ctx.daemon
        st: Any = self.service.statistics() if daemon is None else await daemon.daemon_stats()
        return JSONResponse({
            "uptime": st.uptime, "jobs_queued": st.jobs_queued,
            "jobs_running": st.jobs_running, "jobs_completed": st.jobs_completed,
            "pools": [{"profile": p.profile, "warm": p.warm, "target": p.target}
                      for p in st.pools],
            "counters": dict(st.counters)})

    async def ps(self, request: Request) -> Response:
        daemon = self.ctx.daemon
        if daemon is not None:  # every worker's jobs (a reference names its worker)
            listed = await daemon.daemon_job_list()
            return JSONResponse({"jobs": [{
                "ref": j.id, "id": j.id.split("/", 1)[-1], "profile": j.profile,
                "client": j.client, "state": j.state, "elapsed": j.elapsed,
                "cpu_time": j.cpu_time, "memory": j.memory} for j in listed.jobs]})
        return JSONResponse({"jobs": [{
            "ref": j.ref, "id": j.id, "profile": j.profile, "client": j.client,
            "state": j.state, "elapsed": j.elapsed, "cpu_time": j.cpu_time,
            "memory": j.memory} for j in self.service.ps()]})

    async def kill(self, request: Request) -> Response:
        ref = request.path_params["ref"]
        daemon = self.ctx.daemon
        found = self.service.kill(ref) if daemon is None else await daemon.daemon_kill(ref)
        if not found:
            raise HttpError(ErrorCode.UNKNOWN_JOB, f"no job {ref!r} in flight (see GET /v1/ps)")
        return JSONResponse({"job": ref, "found": True})

    # -- jobs ------------------------------------------------------------

    def _admit(self, request_scope: dict[str, Any], spec: JobSpec) -> Job:
        job_id = self.ctx.mint().hex
        client = request_scope.get("client") or ("?", 0)
        return self.service.submit(spec, id=job_id, owner=self.ctx.owner("v1"),
                                   client=f"http {client[0]}:{client[1]}")

    async def submit(self, request: Request) -> Response:
        wait = _query_flag(request, "wait", True)
        body = await read_json(request)
        ctx = self.ctx
        assert isinstance(ctx, FrontContext)
        if isinstance(body, dict) and (  # the workspace's worker runs it
                relayed := await ctx.relayed(request, body.get("workspace"))) is not None:
            return relayed
        token = token_of(request.scope)
        # A background job holds a slot of its own, until it ends, besides its request's.
        if not wait and not ctx.gate.acquire(token):
            return error_response(ErrorCode.TOO_MANY_REQUESTS, "too many requests and "
                                  "background jobs in flight for this token "
                                  "(http_token_concurrency)")
        spec = None
        try:
            spec = job_spec(self.service, body, self.workspaces, token)
            job = self._admit(request.scope, spec)
        except BaseException as e:
            if spec is not None and spec.workspace is not None:
                spec.workspace.close()
            if not wait:
                ctx.gate.release(token)
            if isinstance(e, ServiceError):
                return error_response(e.code, e.message)
            raise
        if not wait:
            return self._background(job, token)
        try:
            outcome = await self._execute_watching(job, request.receive)
        except ServiceError as e:
            return error_response(e.code, e.message)
        finally:
            self.service.release(job)
            if spec.workspace is not None:
                spec.workspace.close()
        return JSONResponse(job_json(job.id, outcome))

    async def _execute_watching(self, job: Job,
                                receive: Callable[[], Awaitable[Any]]) -> JobOutcome:
        """``execute``, cancelling the job if the client goes away meanwhile: told by the
        listener's connection (``Connection``), or else by a task waiting on ``receive``."""
        conn = CONNECTION.get()
        if conn is not None:
            def gone() -> None:
                job.cancel("client disconnected")

            if conn.closed:
                gone()
            conn.on_close.append(gone)
            try:
                return await self.service.execute(job)
            finally:
                conn.on_close.remove(gone)
        outcome: JobOutcome | None = None
        error: ServiceError | None = None

        async def watch() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    job.cancel("client disconnected")
                    return

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            try:
                outcome = await self.service.execute(job)
            except ServiceError as e:
                error = e
            nursery.cancel_scope.cancel()
        if error is not None:
            raise error
        assert outcome is not None
        return outcome

    def _background(self, job: Job, token: str) -> Response:
        ctx = self.ctx
        assert isinstance(ctx, FrontContext) and ctx.nursery is not None
        entry = Entry(job.id, job)
        self.results.prune()
        self.results.entries[job.id] = entry
        spec = job.spec  # its output, kept for re-attaching clients (GET .../log)

        async def on_output(step: int, stream: str, data: bytes) -> None:
            entry.append(data)

        async def on_compile_output(stream: str, data: bytes) -> None:
            entry.append(data)

        if spec.on_output is None and spec.on_compile_output is None:
            spec.on_output, spec.on_compile_output = on_output, on_compile_output

        async def run() -> None:
            try:
                try:
                    outcome = await self.service.execute(job)
                    entry.answer = job_json(job.id, outcome)
                except ServiceError as e:
                    entry.answer = {"id": job.id, "state": "failed", **error_body(e.code,
                                                                                  e.message)}
                finally:
                    entry.finished = time.monotonic()
                    entry.grew.set()  # wakes the followers: the log is complete
                    self.service.release(job)
                    if job.spec.workspace is not None:
                        job.spec.workspace.close()
            finally:
                ctx.gate.release(token)

        ctx.nursery.start_soon(run)
        return JSONResponse({"id": job.id, "state": "queued"}, status_code=202,
                            headers={"Location": f"/v1/jobs/{job.id}"})

    async def log(self, request: Request) -> Response:
        """A background job's output from byte ``offset``: what there is now, or with
        ``follow=true`` streamed as it comes until the job ends (a client that lost its
        connection re-attaches by id from the last byte it had)."""
        if (relayed := await self.ctx.relayed(request, request.path_params["id"])) is not None:
            return relayed
        entry = self.results.get(request.path_params["id"])
        if entry is None:
            raise HttpError(ErrorCode.UNKNOWN_JOB, f"no job {request.path_params['id']!r} "
                            "(finished results are kept for http_result_ttl seconds)")
        raw = request.query_params.get("offset", "0")
        if not raw.isdigit():
            raise _invalid("?offset", f"must be a byte offset (0 or more), not {raw!r}")
        offset = int(raw)
        if not _query_flag(request, "follow", False):
            return Response(bytes(entry.log[offset:]), media_type="application/octet-stream",
                            headers={"X-Log-Size": str(len(entry.log)),
                                     "X-Job-State": "done" if entry.finished else
                                     entry.job.state})

        async def follow() -> AsyncIterator[bytes]:
            pos = offset
            while True:
                grew = entry.grew
                if pos < len(entry.log):
                    chunk = bytes(entry.log[pos:])
                    pos += len(chunk)
                    yield chunk
                    continue
                if entry.finished is not None:
                    return
                await grew.wait()

        return StreamingResponse(follow(), media_type="application/octet-stream")

    async def poll(self, request: Request) -> Response:
        if (relayed := await self.ctx.relayed(request, request.path_params["id"])) is not None:
            return relayed
        entry = self.results.get(request.path_params["id"])
        if entry is None:
            raise HttpError(ErrorCode.UNKNOWN_JOB, f"no job {request.path_params['id']!r} "
                            "(finished results are kept for http_result_ttl seconds)")
        return JSONResponse(entry.view())

    async def cancel(self, request: Request) -> Response:
        if (relayed := await self.ctx.relayed(request, request.path_params["id"])) is not None:
            return relayed
        job_id = request.path_params["id"]
        entry = self.results.get(job_id)
        if entry is None:
            raise HttpError(ErrorCode.UNKNOWN_JOB, f"no job {job_id!r}")
        if entry.answer is None:
            entry.job.cancel("cancelled by the client")
            return JSONResponse({"id": job_id, "cancelled": True}, status_code=202)
        self.results.entries.pop(job_id, None)  # finished: its result is forgotten
        return JSONResponse({"id": job_id, "cancelled": False})

    # -- the WebSocket ---------------------------------------------------

    async def stream(self, ws: WebSocket) -> None:
        await ws.accept()
        await StreamSession(self, ws).run()


class StreamSession:
    """One WebSocket job: the job as the first message, stdin messages in, output chunks
    and the result out (docs/http.md).

    Every message out goes through one queue, bounded in bytes
    (``http_ws_buffer``): a client that stops reading gets its job cancelled and
    its socket closed, never an unbounded buffer. Every message in is read by
    one task for the whole session, to the end: hypercorn hands them over
    through a short queue, and closing the socket waits for room in it.
    """

    def __init__(self, api: V1, ws: WebSocket) -> None:
        self.api = api
        self.ws = ws
        self.cfg = api.ctx.cfg
        self.out_send, self.out_recv = trio.open_memory_channel[str](math.inf)
        self.first_send, self.first_recv = trio.open_memory_channel[Any](1)
        self.queued = 0
        self.overflowed = False
        self.gone = trio.Event()  # the client disconnected
        self.sent = trio.Event()  # every queued message is out
        self.job: Job | None = None
        self.finished = False  # the job's execution is over
        self.stdin: trio.MemorySendChannel[bytes] | None = None
        self.decoders: dict[tuple[int, bool, str], codecs.IncrementalDecoder] = {}

    def put(self, message: dict[str, Any]) -> None:
        text = json.dumps(message, ensure_ascii=False)
        if self.overflowed:
            return
        if self.queued + len(text) > self.cfg.http_ws_buffer and message.get("type") == "output":
            self.overflowed = True
            event("ws_overflow", logging.WARNING, job=self.job.ref if self.job else "?",
                  queued=self.queued)
            if self.job is not None:
                self.job.cancel("the client did not read its output")
            return
        self.queued += len(text)
        self.out_send.send_nowait(text)

    def error(self, code: str, message: str) -> None:
        self.put({"type": "error", **error_body(code, message)})

    def _output(self, step: int, compile_: bool, stream: str, data: bytes) -> None:
        key = (step, compile_, stream)
        decoder = self.decoders.get(key)
        if decoder is None:
            decoder = self.decoders[key] = codecs.getincrementaldecoder("utf-8")("strict")
        message: dict[str, Any] = {"type": "output", "stream": stream, "step": step,
                                   "compile": compile_}
        try:
            message["data"] = decoder.decode(data)
        except UnicodeDecodeError:
            decoder.reset()
            message["data"] = data.decode("utf-8", "replace")
            message["data_b64"] = base64.b64encode(data).decode()
        self.put(message)

    # -- the tasks -------------------------------------------------------

    async def _sender(self) -> None:
        try:
            async for text in self.out_recv:
                self.queued -= len(text)
                if not self.overflowed and not self.gone.is_set():
                    await self.ws.send_text(text)
        finally:
            self.sent.set()

    async def _reader(self) -> None:
        """Every client message until it goes: the job, then stdin, eof, cancel."""
        try:
            while True:
                message = await self.ws.receive()
                if message["type"] == "websocket.disconnect":
                    return
                text = message.get("text")
                if text is None:
                    text = (message.get("bytes") or b"").decode("utf-8", "replace")
                if self.first_send is not None:
                    self.first_send.send_nowait(text)
                    self.first_send = None  # type: ignore[assignment]
                elif self.job is not None and not self.finished:
                    await self._client_text(self.job, text)
        finally:
            self.gone.set()
            if self.job is not None:
                self.job.cancel("client disconnected")

    async def _client_text(self, job: Job, text: str) -> None:
        try:
            await self._client_message(job, parse_json(text))
        except BadJson as e:
            self.error(ErrorCode.MALFORMED, f"not valid JSON: {e}")
        except HttpError as e:
            self.error(e.code, e.message)

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._sender)
            nursery.start_soon(self._reader)
            try:
                await self._job()
            except HttpError as e:
                self.error(e.code, e.message)
            except ServiceError as e:
                self.error(e.code, e.message)
            finally:
                self.out_send.close()
            await self.sent.wait()  # bounded: a client that reads nothing is dropped by
            # the kernel after http_send_timeout
            if not self.gone.is_set():
                with contextlib.suppress(Exception):  # it may have just gone
                    await self.ws.close(1008 if self.overflowed else 1000)
            with trio.move_on_after(LINGER):  # its closing reply, read by _reader
                await self.gone.wait()
            nursery.cancel_scope.cancel()

    async def _first(self) -> dict[str, Any] | None:
        text = None
        with trio.move_on_after(self.cfg.http_request_timeout):
            try:
                text = await self.first_recv.receive()
            except trio.EndOfChannel:  # closed by watch_gone
                pass
        if text is None:
            if self.gone.is_set():
                return None
            raise HttpError(ErrorCode.TIMEOUT, "no job within http_request_timeout")
        try:
            body = parse_json(text)
        except BadJson as e:
            raise HttpError(ErrorCode.MALFORMED, f"the job is not valid JSON: {e}") from None
        if not isinstance(body, dict):
            raise _invalid("the job", f"must be an object, not {describe(body)}")
        return body

    async def _job(self) -> None:
        first = self.first_send

        async def watch_gone() -> None:  # no first message and the client left
            await self.gone.wait()
            if first is not None:
                first.close()

        refused: HttpError | None = None
        body = None
        async with trio.open_nursery() as waiting:
            waiting.start_soon(watch_gone)
            try:
                body = await self._first()
            except HttpError as e:  # raised out of the nursery, it would be in a group
                refused = e
            waiting.cancel_scope.cancel()
        if refused is not None:
            raise refused
        if body is None:
            return
        interactive = body.pop("interactive", "stdin" not in body and "tests" not in body)
        _bool(interactive, "interactive")
        streams: dict[str, Any] = {}
        if interactive:
            if "stdin" in body or "tests" in body:
                raise _invalid("interactive", "must be false when stdin or tests are given")
            self.stdin, streams["stdin_stream"] = trio.open_memory_channel[bytes](16)

        async def on_output(step: int, stream: str, data: bytes) -> None:
            self._output(step, False, stream, data)

        async def on_compile_output(stream: str, data: bytes) -> None:
            self._output(0, True, stream, data)

        spec = job_spec(self.api.service, body, on_output=on_output,
                        on_compile_output=on_compile_output, **streams)
        job = self.job = self.api._admit(self.ws.scope, spec)
        try:
            self.put({"type": "accepted", "id": job.id, "ref": job.ref})
            if self.gone.is_set():
                job.cancel("client disconnected")
            try:
                outcome = await self.api.service.execute(job)
            finally:
                self.finished = True
                if self.stdin is not None:
                    self.stdin.close()  # also ends a send blocked on a program that is gone
            if not self.overflowed:
                self.put({"type": "result", **job_json(job.id, outcome)})
        finally:
            self.api.service.release(job)

    async def _client_message(self, job: Job, data: Any) -> None:
        msg = _object(data, "the message", ("stdin", "stdin_b64", "eof", "cancel"))
        if msg.get("cancel"):
            job.cancel("cancelled by the client")
            return
        if "stdin" in msg or "stdin_b64" in msg:
            if self.stdin is None:
                raise _invalid("stdin", "is only accepted by an interactive job")
            if "stdin" in msg:
                chunk = _string(msg["stdin"], "stdin", SIZES.max_chunk).encode()
            else:
                try:
                    chunk = base64.b64decode(_string(msg["stdin_b64"], "stdin_b64",
                                                     2 * SIZES.max_chunk), validate=True)
                except (binascii.Error, ValueError):
                    raise _invalid("stdin_b64", "is not valid base64") from None
                if len(chunk) > SIZES.max_chunk:
                    raise _invalid("stdin_b64", f"must be at most {SIZES.max_chunk} bytes")
            try:
                await self.stdin.send(chunk)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the program closed its stdin or ended: the bytes have nowhere to go
        if msg.get("eof") and self.stdin is not None:
            self.stdin.close()
