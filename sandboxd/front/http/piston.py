"""Piston v2-compatible endpoints at ``/api/v2`` and ``/api/v2/piston``, over the job service.

Strategy: Piston's own shapes (its ``api/v2.js`` and ``job.js``): ``GET
/runtimes`` from the profiles this host can run (language names and aliases
as Piston's packages spell them, versions as semver from the host's
toolchains), ``POST /execute`` with its validation messages (400, and 415 for
a body that is not JSON), limits in its units (milliseconds, bytes), and the
answer's ``run``/``compile`` stages with ``output`` interleaved in arrival
order, ``code``, ``signal`` names and isolate's status letters (RE, SG, TO,
OL, EL, XX). ``WS /connect`` speaks Piston's interactive protocol (init,
data, signal; runtime, stage, data, exit; close codes 4000-4999).

The first UTF-8 file is saved under the profile's entry name (``main.py``,
``Main.java``), the program its run command starts; the others keep theirs.
Every mapping is a pure function of this module, unit-tested without a
daemon; the limits a job gets are built in one place, ``job_limits``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import json
import re
import signal as _signal
from dataclasses import dataclass
from typing import Any

import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

import sandboxd_protocol as proto
from sandboxd.jobs import JobOutcome, JobSpec
from sandboxd.limits import LimitError, Limits
from sandboxd.profiles import Profile
from sandboxd.result import Result
from sandboxd.runtimes import RUNTIMES as WARM_RUNTIMES
from sandboxd.service import JobService, ServiceError

from ._common import BadJson, parse_json
from ._context import HttpContext

# sandboxd profile -> (Piston language, aliases, runtime): as Piston's packages name them.
RUNTIMES: dict[str, tuple[str, tuple[str, ...], str | None]] = {
    "bash": ("bash", ("sh",), None),
    "c": ("c", ("gcc",), "gcc"),
    "cpp": ("c++", ("cpp", "g++"), "gcc"),
    "go": ("go", ("go", "golang"), None),
    "java": ("java", (), None),
    "javascript": ("javascript", ("node-javascript", "node-js", "javascript", "js"), "node"),
    "python3": ("python", ("py", "py3", "python3"), None),
    "rust": ("rust", ("rs",), None),
}

LINGER = 2.0  # seconds a closed WebSocket's client has to send its closing reply

# Piston's configuration defaults (api/src/config.js), in its units.
DEFAULT_LIMITS = {"compile_timeout": 10000, "run_timeout": 3000, "compile_cpu_time": 10000,
                  "run_cpu_time": 3000}

# ----------------------------------------------------------------- semver


Version = tuple[int, int, int]


def semver_of(text: str) -> str | None:
    """``3.11.2`` from a toolchain's version line (``Python 3.11.2``, ``v20.1.0``)."""
    m = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    if not m:
        return None
    return f"{m.group(1)}.{m.group(2)}.{m.group(3) or 0}"


def _parse(v: str) -> Version:
    a, b, c = (int(x) for x in v.split("."))
    return a, b, c


_PARTIAL = re.compile(r"^v?(\d+|[xX*])(?:\.(\d+|[xX*]))?(?:\.(\d+|[xX*]))?(?:-[0-9A-Za-z.-]+)?"
                      r"(?:\+[0-9A-Za-z.-]+)?$")


def _partial(text: str) -> tuple[int | None, int | None, int | None] | None:
    m = _PARTIAL.match(text)
    if not m:
        return None
    parts: list[int | None] = []
    for g in m.groups():
        if g is None or g in "xX*":
            parts.append(None)
        else:
            parts.append(int(g))
    # a wildcard wipes what follows it: 1.x.3 is 1.x
    for i, p in enumerate(parts):
        if p is None:
            parts[i:] = [None] * (3 - i)
            break
    return parts[0], parts[1], parts[2]


def _bounds(op: str, p: tuple[int | None, int | None, int | None]
            ) -> list[tuple[str, Version]] | None:
    """One comparator (``>=1.2``, ``^1.2.3``, ``~1.2``, ``1.x``) as simple comparisons."""
    major, minor, patch = p
    if major is None:
        return [] if op in ("", "=", ">=", "<=") else None if op in ("<", ">") else []
    lo = (major, minor or 0, patch or 0)
    if minor is None:
        hi = (major + 1, 0, 0)
    elif patch is None:
        hi = (major, minor + 1, 0)
    else:
        hi = None
    if op == "^":
        if major > 0 or minor is None:
            return [(">=", lo), ("<", (major + 1, 0, 0))]
        if minor > 0 or patch is None:
            return [(">=", lo), ("<", (0, minor + 1, 0))]
        return [(">=", lo), ("<", (0, 0, (patch or 0) + 1))]
    if op == "~":
        if minor is None:
            return [(">=", lo), ("<", (major + 1, 0, 0))]
        return [(">=", lo), ("<", (major, minor + 1, 0))]
    if op in ("", "="):
        return [("=", lo)] if hi is None else [(">=", lo), ("<", hi)]
    if op == ">":
        return [(">", lo)] if hi is None else [(">=", hi)]
    if op == ">=":
        return [(">=", lo)]
    if op == "<":
        return [("<", lo)]
    if op == "<=":
        return [("<=", lo)] if hi is None else [("<", hi)]
    return None


_CMP = {"=": lambda a, b: a == b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b,
        "<": lambda a, b: a < b, "<=": lambda a, b: a <= b}


def satisfies(version: str, spec: str) -> bool:
    """node-semver's ``satisfies`` for the ranges clients send: ``*``, ``x``, ``3``,
    ``3.11.x``, ``3.11.2``, ``^3.8``, ``~3.11.0``, ``>=3.8 <4``, ``1.2 - 2.3``, ``a || b``.
    A range it cannot read matches nothing (Piston: "runtime is unknown")."""
    try:
        v = _parse(version)
    except ValueError:
        return False
    for alternative in spec.split("||"):
        text = alternative.strip()
        hyphen = re.match(r"^(\S+)\s+-\s+(\S+)$", text)
        if hyphen:
            a, b = _partial(hyphen.group(1)), _partial(hyphen.group(2))
            if a is None or b is None:
                continue
            lo_b, hi_b = _bounds(">=", a), _bounds("<=", b)
            checks = (lo_b or []) + (hi_b or [])
        else:
            text = re.sub(r"(<=|>=|<|>|=|\^|~)\s+", r"\1", text)
            checks = []
            ok = True
            for token in text.split() or ["*"]:
                m = re.match(r"^(<=|>=|<|>|=|\^|~>?|)(.*)$", token)
                assert m is not None
                op = m.group(1).replace("~>", "~")
                p = _partial(m.group(2))
                bounds = _bounds(op, p) if p is not None else None
                if bounds is None:
                    ok = False
                    break
                checks.extend(bounds)
            if not ok:
                continue
        if all(_CMP[op](v, bound) for op, bound in checks):
            return True
    return False


# ----------------------------------------------------------------- stages


@dataclass(frozen=True, slots=True)
class Status:
    status: str | None
    message: str | None
    code: int | None
    signal: str | None


def signal_name(sig: int) -> str:
    """Piston's names: SIGSEGV, and SIGRTMIN+n / SIGRTMAX-n for the real-time signals."""
    if _signal.SIGRTMIN <= sig <= _signal.SIGRTMAX:
        low, high = sig - _signal.SIGRTMIN, _signal.SIGRTMAX - sig
        if low == 0:
            return "SIGRTMIN"
        if high == 0:
            return "SIGRTMAX"
        return f"SIGRTMIN+{low}" if low <= 15 else f"SIGRTMAX-{high}"
    try:
        return _signal.Signals(sig).name
    except ValueError:
        return str(sig)


def stage_status(r: Result) -> Status:
    """Isolate's status letter and message, the exit code and the signal's name of a step.

    A compile step that failed carries what ended it in its reason
    (``time_limit (cpu)``); Piston's TO, OL and EL come with SIGKILL.
    """
    verdict, reason = r.verdict, r.reason or ""
    if verdict == "compile_error":  # what ended the compiler, from the reason
        head = reason.split(" ", 1)[0]
        if head in ("time_limit", "memory_limit", "output_limit"):
            verdict = head
            reason = reason[len(head):].strip(" ()")
        else:
            verdict = "runtime_error"
    if verdict in ("ok", "wrong_answer"):
        return Status(None, None, r.exit_code if r.exit_code is not None else 0, None)
    if verdict == "time_limit":
        message = "Time limit exceeded (wall clock)" if reason == "wall" else \
            "Time limit exceeded"
        return Status("TO", message, None, "SIGKILL")
    if verdict == "output_limit":
        if reason == "stderr":
            return Status("EL", "stderr length exceeded", None, "SIGKILL")
        if reason == "file_size":
            return Status("SG", "Caught fatal signal 25", None, "SIGXFSZ")
        return Status("OL", "stdout length exceeded", None, "SIGKILL")
    if verdict == "memory_limit":
        if r.signal:
            return Status("SG", "Memory limit exceeded", None, signal_name(r.signal))
        return Status("RE", "Memory limit exceeded", r.exit_code, None)
    if verdict == "runtime_error":
        if r.signal:
            return Status("SG", f"Caught fatal signal {r.signal}", None, signal_name(r.signal))
        return Status("RE", f"Exited with error status {r.exit_code}", r.exit_code, None)
    return Status("XX", r.reason or verdict, None, None)  # sandbox_error, cancelled


def stage(r: Result, output: bytes | None = None) -> dict[str, Any]:
    """One stage of Piston's answer; ``output``: stdout and stderr in arrival order."""
    st = stage_status(r)
    return {
        "stdout": r.stdout.decode("utf-8", "replace"),
        "stderr": r.stderr.decode("utf-8", "replace"),
        "code": st.code,
        "signal": st.signal,
        "output": (output if output is not None else r.stdout + r.stderr).decode(
            "utf-8", "replace"),
        "memory": r.memory_peak,
        "message": st.message,
        "status": st.status,
        "cpu_time": round(r.cpu_time * 1000),
        "wall_time": round(r.wall_time * 1000),
        # The exact figures besides Piston's whole milliseconds (seconds, as /v1's).
        "sandboxd": {"verdict": r.verdict, "reason": r.reason, "cpu_time": r.cpu_time,
                     "wall_time": r.wall_time},
    }


# ----------------------------------------------------------------- requests


class BadRequest(Exception):
    """A request Piston refuses with 400 and ``{"message": ...}``."""


@dataclass(frozen=True, slots=True)
class Runtime:
    language: str
    version: str
    aliases: tuple[str, ...]
    runtime: str | None
    profile: Profile

    def as_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"language": self.language, "version": self.version,
                             "aliases": list(self.aliases)}
        if self.runtime:
            d["runtime"] = self.runtime
        return d


def runtimes(service: JobService) -> list[Runtime]:
    """The runtimes of the profiles this host can run."""
    out = []
    for name, (language, aliases, runtime) in RUNTIMES.items():
        profile = service.profiles.get(name)
        if profile is None or profile.unavailable:
            continue
        version = semver_of(service.versions.get(name, "")) or "0.0.0"
        out.append(Runtime(language, version, aliases, runtime, profile))
    return out


def find_runtime(table: list[Runtime], language: str, version: str) -> Runtime | None:
    """The latest runtime named ``language`` (or aliased so) whose version satisfies."""
    found = [rt for rt in table if (rt.language == language or language in rt.aliases)
             and satisfies(rt.version, version)]
    return max(found, key=lambda rt: _parse(rt.version), default=None)


def _bad_name(name: str) -> bool:
    parts = name.split("/")
    return name.startswith("/") or "\x00" in name or any(p in ("", ".", "..") for p in parts)


def decode_file(content: str, encoding: str) -> bytes:
    """Node's ``Buffer.from(content, encoding)``: lenient base64, hex up to a bad pair."""
    if encoding == "base64":
        clean = re.sub(r"[^A-Za-z0-9+/\-_]", "", content).replace("-", "+").replace("_", "/")
        clean = clean[: len(clean) - len(clean) % 4] if len(clean) % 4 == 1 else clean
        try:
            return base64.b64decode(clean + "=" * (-len(clean) % 4))
        except (binascii.Error, ValueError):
            return b""
    if encoding == "hex":
        m = re.match(r"^(?:[0-9A-Fa-f]{2})*", content)
        return bytes.fromhex(m.group(0) if m else "")
    return content.encode("utf-8")


@dataclass(slots=True)
class Request_:
    """A validated ``/execute`` (or ``init``): what the job is made of."""

    runtime: Runtime
    files: dict[str, bytes]
    sources: list[str]
    args: list[str]
    stdin: bytes
    limits: dict[str, float | int]  # Piston's names and units, defaults filled in
    given: frozenset[str] = frozenset()  # the limits the request set itself


def parse_execute(body: Any, table: list[Runtime]) -> Request_:
    """Piston's ``get_job``: the same checks in the same order, the same messages."""
    if not isinstance(body, dict):
        body = {}
    language, version, files = body.get("language"), body.get("version"), body.get("files")
    if not language or not isinstance(language, str):
        raise BadRequest("language is required as a string")
    if not version or not isinstance(version, str):
        raise BadRequest("version is required as a string")
    if not isinstance(files, list):
        raise BadRequest("files is required as an array")
    for i, f in enumerate(files):
        if not isinstance(f, dict) or not isinstance(f.get("content"), str):
            raise BadRequest(f"files[{i}].content is required as a string")
    rt = find_runtime(table, language, version)
    if rt is None:
        raise BadRequest(f"{language}-{version} runtime is unknown")
    encodings = [f.get("encoding") if f.get("encoding") in ("base64", "hex", "utf8") else "utf8"
                 for f in files]
    if "utf8" not in encodings:
        raise BadRequest("files must include at least one utf8 encoded file")
    maxima = max_limits(rt.profile)
    limits: dict[str, float | int] = {}
    for constraint in ("memory_limit", "timeout", "cpu_time"):
        for kind in ("compile", "run"):
            name = f"{kind}_{constraint}"
            value = body.get(name)
            if constraint == "memory_limit" and value == -1:
                value = None  # Piston's "no limit": the profile's own
            if not value:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise BadRequest(f"If specified, {name} must be a number")
            if value > maxima[name]:
                raise BadRequest(f"{name} cannot exceed the configured limit of "
                                 f"{maxima[name]}")
            if value < 0:
                raise BadRequest(f"{name} must be non-negative")
            limits[name] = value
    args = body.get("args") or []
    if not isinstance(args, list):
        args = [args]
    stdin = body.get("stdin")
    stdin_text = stdin if isinstance(stdin, str) else ""
    if not stdin_text.endswith("\n"):
        stdin_text += "\n"  # Piston adds a trailing newline
    out: dict[str, bytes] = {}
    sources: list[str] = []
    entry_taken = False
    for i, (f, enc) in enumerate(zip(files, encodings, strict=True)):
        name = f.get("name") if isinstance(f.get("name"), str) and f.get("name") else \
            f"file{i}.code"
        if _bad_name(name):
            raise BadRequest(f'File path "{name}" tries to escape parent directory')
        if enc == "utf8" and not entry_taken:
            name, entry_taken = rt.profile.entry, True
        out[name] = decode_file(f["content"], enc)
        if enc == "utf8":
            sources.append(name)
    given = frozenset(limits)
    for name, default in DEFAULT_LIMITS.items():
        limits.setdefault(name, min(default, maxima[name]))
    return Request_(rt, out, sources, [str(a) for a in args], stdin_text.encode(), limits,
                    given)


def max_limits(profile: Profile) -> dict[str, float | int]:
    """The configured limits a request may not exceed, in Piston's units."""
    top = profile.max_limits
    return {"compile_timeout": round(top.wall_time * 1000),
            "run_timeout": round(top.wall_time * 1000),
            "compile_cpu_time": round(top.cpu_time * 1000),
            "run_cpu_time": round(top.cpu_time * 1000),
            "compile_memory_limit": top.memory, "run_memory_limit": top.memory}


def job_limits(limits: dict[str, float | int], kind: str) -> proto.JobLimits:
    """The one place Piston's limits become sandboxd's: ms to seconds, bytes stay bytes."""
    out: dict[str, Any] = {"wall_time": limits[f"{kind}_timeout"] / 1000,
                           "cpu_time": limits[f"{kind}_cpu_time"] / 1000}
    memory = limits.get(f"{kind}_memory_limit")
    if memory:
        out["memory"] = int(memory)
    return proto.parse_limits(out)


def job_spec(req: Request_, outputs: dict[str, bytearray], *,
             stream: Any = None, stdin_stream: Any = None) -> JobSpec:
    """The job of a request: its files, run argv with the args, limits per stage.

    ``outputs`` collects each stage's stdout and stderr in arrival order;
    ``stream(stage, name, data)``, if given, is called with every chunk too.
    """
    profile = req.runtime.profile
    run = job_limits(req.limits, "run")
    runtime = WARM_RUNTIMES.get(profile.warm_runtime or "")
    if ("run_cpu_time" not in req.given and runtime is not None
            and not runtime.lowers_rlimits):
        # Piston's default CPU time would start node plainly (its RLIMIT_CPU differs from
        # the warm interpreter's, and node cannot lower its own): left to the profile's,
        # the wall limit (run_timeout, 3 s by default) ends a single thread first.
        run = dataclasses.replace(run, cpu_time=None)
    merged: Limits = profile.limits.merged(run, profile.max_limits)
    argv = profile.run_argv(sorted(req.files), merged) + req.args
    run_out, compile_out = bytearray(), bytearray()
    outputs["run"], outputs["compile"] = run_out, compile_out

    async def on_output(step: int, name: str, data: bytes) -> None:
        run_out.extend(data)
        if stream is not None:
            await stream("run", name, data)

    async def on_compile_output(name: str, data: bytes) -> None:
        compile_out.extend(data)
        if stream is not None:
            await stream("compile", name, data)

    # A run without args is the profile's own argv (None: the service builds the same
    # one) and a single untested run, not a test: a profile with a warm runtime then
    # hands it to a waiting interpreter (jobs.warm_start), as a playground wants.
    return JobSpec(profile=profile, files=req.files, argv=argv if req.args else None,
                   limits=run, stdin=b"" if stdin_stream else req.stdin,
                   compile_limits=job_limits(req.limits, "compile") if profile.compile else None,
                   on_output=on_output, on_compile_output=on_compile_output,
                   # Without a WebSocket to send to, they only append to a buffer: the
                   # steps keep the one-task watch (container.RunStep.output_inline).
                   output_inline=stream is None, stdin_stream=stdin_stream)


def answer(req: Request_, outcome: JobOutcome, outputs: dict[str, bytearray]) -> dict[str, Any]:
    """Piston's response: ``run`` (the compile stage's again if it failed), ``compile``."""
    out: dict[str, Any] = {}
    if outcome.compile is not None:
        out["compile"] = stage(outcome.compile.result, bytes(outputs["compile"]))
    if outcome.steps:
        out["run"] = stage(outcome.steps[0].result, bytes(outputs["run"]))
    else:
        out["run"] = out.get("compile") or stage(Result.sandbox_error("no step ran"))
    out["language"] = req.runtime.language
    out["version"] = req.runtime.version
    return out


# ----------------------------------------------------------------- routes


def _message(text: str, status: int) -> JSONResponse:
    return JSONResponse({"message": text}, status_code=status)


class Piston:
    def __init__(self, ctx: HttpContext) -> None:
        self.ctx = ctx
        self.service = ctx.service
        self.table = runtimes(ctx.service)

    async def runtimes(self, request: Request) -> Response:
        return JSONResponse([rt.as_json() for rt in self.table])

    async def packages(self, request: Request) -> Response:
        return JSONResponse([{"language": rt.runtime or rt.language,
                              "language_version": rt.version, "installed": True}
                             for rt in self.table])

    async def execute(self, request: Request) -> Response:
        if not request.headers.get("content-type", "").startswith("application/json"):
            return _message("requests must be of type application/json", 415)
        try:
            body = parse_json(await request.body() or b"null")
        except BadJson:
            return JSONResponse({"stack": "SyntaxError: Unexpected token in JSON"},
                                status_code=400)
        try:
            req = parse_execute(body, self.table)
        except BadRequest as e:
            return _message(str(e), 400)
        outputs: dict[str, bytearray] = {}
        try:
            job = self.service.submit(job_spec(req, outputs), id="execute",
                                      owner=self.ctx.owner("piston"), client="piston")
        except ServiceError as e:
            return self.refused(e)
        except LimitError as e:  # e.g. run_memory_limit 3 (bytes): a 500 until the fuzzer
            return _message(str(e), 400)
        try:
            outcome = await self.service.execute(job)
        except ServiceError as e:
            return _message(e.message, 500)
        finally:
            self.service.release(job)
        return JSONResponse(answer(req, outcome, outputs))

    def refused(self, e: ServiceError) -> Response:
        if e.code in ("server_busy", "shutting_down"):
            return _message(e.message, 429 if e.code == "server_busy" else 503)
        return _message(e.message, 400)

    async def not_allowed(self, request: Request) -> Response:
        # Installing or removing packages: a profile is the operator's, not the API's.
        return _message("packages are managed by the operator (sandboxd profiles)", 404)

    async def connect(self, ws: WebSocket) -> None:
        """Piston's interactive protocol over one WebSocket."""
        await ws.accept()
        await _Session(self, ws).run()


class _Session:
    """One ``/connect``: init within 1 s, then stdin and signals in, stages and data out."""

    def __init__(self, api: Piston, ws: WebSocket) -> None:
        self.api = api
        self.ws = ws
        self.job: Any = None
        self.stdin_send, self.stdin_recv = trio.open_memory_channel[bytes](64)
        self.closed = False
        self.closing = trio.Event()  # set with ``closed``: the session ends LINGER later
        self.compiled = False
        self.run_started = False

    async def send(self, msg: dict[str, Any]) -> None:
        if not self.closed:
            with contextlib.suppress(Exception):
                await self.ws.send_text(json.dumps(msg))

    async def close(self, code: int, reason: str) -> None:
        if not self.closed:
            self.closed = True
            self.closing.set()
            with contextlib.suppress(Exception):
                await self.ws.close(code, reason)

    async def _end_after_close(self, scope: trio.CancelScope) -> None:
        """Once we closed, the client has ``LINGER`` seconds to answer with its own close;
        then the session ends whatever it does. Without this, a client that never spoke
        again after "Job Completed" (or an initialization timeout) held its connection
        and this session for ever (found by fuzz/fuzz_daemon.py)."""
        await self.closing.wait()
        await trio.sleep(LINGER)
        scope.cancel()

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._init_timeout)
            nursery.start_soon(self._end_after_close, nursery.cancel_scope)
            try:
                await self._receive(nursery)
            finally:
                if self.job is not None:
                    self.job.cancel("the WebSocket closed")
                nursery.cancel_scope.cancel()

    async def _init_timeout(self) -> None:
        await trio.sleep(1)
        if self.job is None:
            await self.close(4001, "Initialization Timeout")

    async def _receive(self, nursery: trio.Nursery) -> None:
        while not self.closed:
            try:
                message = await self.ws.receive()
            except (WebSocketDisconnect, RuntimeError):
                return
            if message["type"] == "websocket.disconnect":
                return
            # A binary message is JSON too, as Piston's server (node's ws) parses either;
            # it has no text (None), which crashed the session (found by the fuzzer).
            text = message.get("text")
            if text is None:
                text = (message.get("bytes") or b"").decode("utf-8", "replace")
            try:
                msg = parse_json(text)
                if not isinstance(msg, dict):
                    raise ValueError("a message must be a JSON object")
                kind = msg.get("type")
                if kind == "init":
                    if self.job is not None:
                        await self.close(4000, "Already Initialized")
                        return
                    await self._init(msg, nursery)
                elif kind == "data":
                    if self.job is None:
                        await self.close(4003, "Not yet initialized")
                    elif msg.get("stream") != "stdin":
                        await self.close(4004, "Can only write to stdin")
                    else:
                        data = msg.get("data")
                        with contextlib.suppress(trio.BrokenResourceError,
                                                 trio.ClosedResourceError):
                            await self.stdin_send.send(str(data).encode())
                elif kind == "signal":
                    if self.job is None:
                        await self.close(4003, "Not yet initialized")
                    elif not _valid_signal(msg.get("signal")):
                        await self.close(4005, "Invalid signal")
                    else:
                        self.job.cancel(f"killed by {msg.get('signal')}")
            except (BadRequest, ServiceError, ValueError) as e:
                text = e.message if isinstance(e, ServiceError) else str(e)
                await self.send({"type": "error", "message": text})
                await self.close(4002, "Notified Error")
                return

    async def _init(self, msg: dict[str, Any], nursery: trio.Nursery) -> None:
        req = parse_execute(msg, self.api.table)
        outputs: dict[str, bytearray] = {}

        async def stream(stage_name: str, name: str, data: bytes) -> None:
            if stage_name == "run":
                await self._run_started()
            await self.send({"type": "data", "stream": name,
                             "data": data.decode("utf-8", "replace")})

        spec = job_spec(req, outputs, stream=stream, stdin_stream=self.stdin_recv)
        self.job = self.api.service.submit(spec, id="connect", owner=self.api.ctx.owner(
            "piston"), client="piston-ws")
        await self.send({"type": "runtime", "language": req.runtime.language,
                         "version": req.runtime.version})
        nursery.start_soon(self._execute, req, outputs)

    async def _run_started(self) -> None:
        """The run stage began (its first output, or its end): the compile stage's exit
        (it succeeded) and the run stage's start, once, in Piston's order."""
        if self.run_started:
            return
        self.run_started = True
        if self.compiled:
            await self.send({"type": "exit", "stage": "compile", "code": 0, "signal": None})
        await self.send({"type": "stage", "stage": "run"})

    async def _execute(self, req: Request_, outputs: dict[str, bytearray]) -> None:
        job = self.job
        self.compiled = req.runtime.profile.compile is not None
        try:
            if self.compiled:
                await self.send({"type": "stage", "stage": "compile"})
            else:
                await self._run_started()
            outcome = await self.api.service.execute(job)
            if outcome.steps:
                await self._run_started()
                st = stage_status(outcome.steps[0].result)
                await self.send({"type": "exit", "stage": "run", "code": st.code,
                                 "signal": st.signal})
            elif outcome.compile is not None:
                st = stage_status(outcome.compile.result)
                await self.send({"type": "exit", "stage": "compile", "code": st.code,
                                 "signal": st.signal})
            await self.close(4999, "Job Completed")
        except ServiceError as e:
            await self.send({"type": "error", "message": e.message})
            await self.close(4002, "Notified Error")
        finally:
            self.api.service.release(job)


def _valid_signal(name: Any) -> bool:
    return isinstance(name, str) and name.startswith("SIG") and (
        name in _signal.Signals.__members__ or name.startswith(("SIGRTMIN", "SIGRTMAX")))


def routes(ctx: HttpContext) -> list[BaseRoute]:
    """The v2 API under both prefixes clients use, each route with and without a slash."""
    api = Piston(ctx)
    inner: list[BaseRoute] = []
    for path, handler, methods in (("/runtimes", api.runtimes, ["GET"]),
                                   ("/packages", api.packages, ["GET"]),
                                   ("/packages", api.not_allowed, ["POST", "DELETE"]),
                                   ("/execute", api.execute, ["POST"])):
        inner.append(Route(path, handler, methods=methods))
        inner.append(Route(path + "/", handler, methods=methods))
    inner.append(WebSocketRoute("/connect", api.connect))
    return [Mount("/api/v2/piston", routes=inner), Mount("/api/v2", routes=inner)]
