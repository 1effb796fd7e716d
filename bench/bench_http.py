"""The HTTP front door against the msgpack socket: the same daemon, the same jobs, one run.

Usage (as root): ``.venv/bin/python bench/bench_http.py [--rounds N] [--seconds S]
[--json FILE] [--quick] [--client lean|stdlib]``; ``bench/suite.py`` runs the same
measurement (``measure``) as part of ``bench/run`` and reports it (docs/benchmarks.md).

One daemon serves both doors: its msgpack socket and ``--http`` on a loopback port
(open, no token), with warm pools of the ``python3`` and ``c`` profiles. Two
programs: a Python hello world, and a C hello world (compiled, then run). Four
doors:

- ``msgpack``: a ``JobSubmission`` over the socket (the control);
- ``v1``: ``POST /v1/jobs`` (sandboxd's own API, wait=true by default);
- ``judge0``: ``POST /submissions?wait=true`` with Judge0's language id;
- ``piston``: ``POST /api/v2/execute`` with Piston's language name.

Latency: every round runs every door once per program, in an order that
rotates, each sample taken with the daemon idle (pools refilled, containers
destroyed), as ``suite.measure_latency`` does; with each sample, the daemon's CPU
time during it (all its threads, ``schedstat``), the door's cost that a loaded
machine leaves as it is where it blurs latency. Each sample's round is kept, so that
a door's excess over msgpack is also taken pair by pair: the median of the per-round
differences (docs/benchmarks.md: why the latency target is judged on it).
Throughput: closed loops of 1, 8 and 32 clients per door for a window each, windows
of the doors interleaved.

Every client keeps its connection for all its jobs (HTTP/1.1 keep-alive: no
connection set-up per request). The HTTP client is lean, as the msgpack control's
bare protocol client is: the request's bytes written to the socket, the answer
read by llhttp's C parser (``httptools``), so that the figures are the doors' and
not a Python HTTP library's (``http.client`` and ``h11`` cost ~0.2 ms of the
client's CPU per request more than the msgpack control's client; ``--client
stdlib`` runs the doors through ``http.client`` instead, for that comparison).
Every answer is checked: the program's output must be ``hello, world``.

Each sample also keeps the job's own time in the sandbox (the wall time of its
compile and run steps, which every door reports exactly), so that a door's excess
can be taken net of it: the C hello world's compile alone varies by 5-20 ms from
one sample to the next, far more than the excess measured (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import shutil
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httptools
from _common import BareClient, pct, throughput

DOORS = ("msgpack", "v1", "judge0", "piston")
HTTP_DOORS = DOORS[1:]
GREETING = "hello, world\n"


@dataclass(frozen=True)
class Program:
    """A hello world as each door names it."""

    profile: str  # sandboxd's profile (msgpack, /v1)
    entry: str
    source: str
    judge0_id: int  # Judge0 CE's language id
    piston: str  # Piston's language name


PROGRAMS = {
    "py": Program("python3", "main.py", 'print("hello, world")\n', 71, "python"),
    "c": Program("c", "main.c", '#include <stdio.h>\nint main(void) { puts("hello, world"); '
                                'return 0; }\n', 50, "c"),
}
LABELS = {"py": "Python hello world", "c": "C hello world (compiled)"}
CONFIG = {"http_loopback_open": True, "http_keepalive_timeout": 120.0}
POOL_PROFILES = ("python3", "c")


def free_port() -> int:
    """A loopback port nobody listens on now (the daemon's ready line, which says the port
    it took with port 0, is not logged at the bench's ``warning`` level)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_args() -> tuple[str, ...]:
    return ("--http", f"127.0.0.1:{free_port()}")


def _address(args: tuple[str, ...]) -> tuple[str, int]:
    host, port = args[args.index("--http") + 1].rsplit(":", 1)
    return host, int(port)


class HttpClient:
    """One keep-alive HTTP/1.1 connection; ``post`` returns the status and the JSON.

    The request is written as bytes (a client's fixed headers and the body's length);
    the answer is read by llhttp (``httptools``), the parser of Node's HTTP and of
    uvicorn: what a compiled HTTP client costs, not a pure-Python one's ~0.2 ms."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.sock = socket.create_connection(address, timeout=120)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.host = f"{address[0]}:{address[1]}".encode()
        self.body: list[bytes] = []
        self.complete = False
        self.parser = httptools.HttpResponseParser(self)

    # httptools' callbacks
    def on_body(self, data: bytes) -> None:
        self.body.append(data)

    def on_message_complete(self) -> None:
        self.complete = True

    def post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        data = json.dumps(body).encode()
        self.sock.sendall(b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json"
                          b"\r\nContent-Length: %d\r\n\r\n%s"
                          % (path.encode(), self.host, len(data), data))
        self.body, self.complete = [], False
        while not self.complete:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("the daemon closed the connection")
            self.parser.feed_data(chunk)
        return self.parser.get_status_code(), json.loads(b"".join(self.body))

    def close(self) -> None:
        self.sock.close()


class StdlibHttpClient:
    """``HttpClient`` through the standard library's ``http.client`` (``--client stdlib``)."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.conn = http.client.HTTPConnection(*address, timeout=120)

    def post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        self.conn.request("POST", path, json.dumps(body).encode(),
                          {"Content-Type": "application/json"})
        response = self.conn.getresponse()
        data = response.read()
        return response.status, json.loads(data)

    def close(self) -> None:
        self.conn.close()


CLIENTS: dict[str, type[HttpClient] | type[StdlibHttpClient]] = {
    "lean": HttpClient, "stdlib": StdlibHttpClient}


def _check(door: str, ok: bool, answer: Any) -> None:
    if not ok:
        raise RuntimeError(f"{door}: unexpected answer {str(answer)[:400]}")


def runner(door: str, prog: Program, socket_path: str, address: tuple[str, int],
           opened: list[Any], client: str = "lean") -> Callable[[], float]:
    """The call that runs ``prog`` once through ``door`` on a connection of its own (kept
    in ``opened`` for closing), checks the answer and returns the job's time in the
    sandbox (s): its compile's and run's wall time, as the door reports them exactly
    (Judge0's and Piston's in the ``sandboxd`` attribute)."""
    if door == "msgpack":
        bare = BareClient(socket_path, name="bench", timeout=None)
        opened.append(bare)
        files = {prog.entry: prog.source.encode()}

        def msgpack() -> float:
            res = bare.job(profile=prog.profile, files=files)
            _check(door, bool(res.steps) and res.steps[0].verdict == "ok"
                   and res.steps[0].stdout == GREETING.encode(), res)
            return res.steps[0].wall_time + (res.compile.wall_time if res.compile else 0.0)
        return msgpack
    http = CLIENTS[client](address)
    opened.append(http)
    if door == "v1":
        body: dict[str, Any] = {"profile": prog.profile, "files": {prog.entry: prog.source}}

        def v1() -> float:
            status, res = http.post("/v1/jobs", body)
            _check(door, status == 200 and res["verdict"] == "ok"
                   and res["steps"][0]["stdout"] == GREETING, res)
            comp = res["compile"]
            return float(res["steps"][0]["wall_time"] + (comp["wall_time"] if comp else 0.0))
        return v1
    if door == "judge0":
        body = {"source_code": prog.source, "language_id": prog.judge0_id}

        def judge0() -> float:
            status, res = http.post("/submissions?wait=true", body)
            _check(door, status == 201 and res["status"]["id"] == 3
                   and res["stdout"] == GREETING, res)
            exact = res["sandboxd"]
            comp = exact.get("compile")
            return float(exact["wall_time"] + (comp["wall_time"] if comp else 0.0))
        return judge0
    body = {"language": prog.piston, "version": "*",
            "files": [{"name": prog.entry, "content": prog.source}]}

    def piston() -> float:
        status, res = http.post("/api/v2/execute", body)
        _check(door, status == 200 and res["run"]["code"] == 0
               and res["run"]["stdout"] == GREETING, res)
        comp = res.get("compile")
        return float(res["run"]["sandboxd"]["wall_time"]
                     + (comp["sandboxd"]["wall_time"] if comp else 0.0))
    return piston


def cpu_ns(pid: int) -> int:
    """CPU time (ns) of process ``pid`` so far, all its threads (``schedstat``: finer than
    ``stat``'s clock ticks, enough for one request)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass  # a thread that ended meanwhile
    return total


def close_all(opened: list[Any]) -> None:
    for c in opened:
        c.close()
    opened.clear()


def measure(daemon: Any, args: tuple[str, ...], *, rounds: int, warmup: int, seconds: float,
            reps: int, concurrency: tuple[int, ...], throughput_programs: tuple[str, ...],
            log: Callable[[str], None] = lambda _m: None, client: str = "lean"
            ) -> dict[str, Any]:
    """Latency and throughput of every door (``daemon``: the suite's ``Daemon`` wrapper,
    started with ``args`` = ``http_args()`` and ``CONFIG``; its ``settle()`` waits until
    it is idle; ``client``: a key of ``CLIENTS``). Every sample is kept: ``_report``
    derives the figures."""
    sock = daemon.daemon.socket
    address = _address(args)
    opened: list[Any] = []
    lat: dict[str, dict[str, list[float]]] = {d: {p: [] for p in PROGRAMS} for d in DOORS}
    # The daemon's CPU during each latency sample: what a door costs the daemon, which a
    # loaded machine leaves as it is (its latency it does not).
    cpu: dict[str, dict[str, list[float]]] = {d: {p: [] for p in PROGRAMS} for d in DOORS}
    # The round of each sample (a failed job leaves a gap), which pairs it with msgpack's
    # sample of the same program in the same round (``paired_over``).
    rounds_of: dict[str, dict[str, list[int]]] = {d: {p: [] for p in PROGRAMS} for d in DOORS}
    # The job's own time in the sandbox in each sample (``runner``), which
    # ``paired_over(..., net=True)`` takes out of the latency.
    inside: dict[str, dict[str, list[float]]] = {d: {p: [] for p in PROGRAMS} for d in DOORS}
    pid = daemon.daemon.pid
    failures: dict[str, int] = {}
    runs = {(d, p): runner(d, prog, sock, address, opened, client)
            for d in DOORS for p, prog in PROGRAMS.items()}
    for one in runs.values():  # a door that cannot run its job fails the run at once
        one()
        daemon.settle()
    log(f"http: latency, {rounds} rounds of {len(runs)} jobs")
    order = list(DOORS)
    for r in range(warmup + rounds):
        k = r % len(order)
        for d in order[k:] + order[:k]:
            for p in PROGRAMS:
                c0, t = cpu_ns(pid), time.perf_counter()
                try:
                    in_sandbox = runs[d, p]()
                except Exception:
                    failures[f"{d} {p}"] = failures.get(f"{d} {p}", 0) + 1
                    continue
                dt, c1 = time.perf_counter() - t, cpu_ns(pid)
                daemon.settle()
                if r >= warmup:
                    lat[d][p].append(dt)
                    cpu[d][p].append((c1 - c0) / 1e9)
                    rounds_of[d][p].append(r - warmup)
                    inside[d][p].append(in_sandbox)
    close_all(opened)
    log(f"http: throughput at {concurrency} clients")
    tput: dict[str, dict[str, dict[str, list[float]]]] = {d: {} for d in DOORS}
    n = 0
    for _rep in range(reps):
        for p in throughput_programs:
            for conc in concurrency:
                n += 1
                k = n % len(order)
                for d in order[k:] + order[:k]:
                    rate = throughput(lambda d=d, p=p: runner(d, PROGRAMS[p], sock, address,
                                                              opened, client), conc, seconds)
                    close_all(opened)
                    daemon.settle()
                    tput[d].setdefault(p, {}).setdefault(str(conc), []).append(rate)
    return {"latency_s": lat, "daemon_cpu_s": cpu, "latency_round": rounds_of,
            "in_sandbox_s": inside, "client": client,
            "throughput_jobs_s": tput,
            "failures": failures,
            "programs": {p: LABELS[p] for p in PROGRAMS}}


# ------------------------------------------------------------------ figures


def paired_over(http: dict[str, Any], door: str, prog: str, of: str = "latency"
                ) -> list[float]:
    """Door minus msgpack, in seconds, per round in which both ran ``prog``: of the
    latency, of the job's time in the sandbox (``of="inside"``) or of the latency net of
    it (``of="net"``: what the door and the daemon's handling add around the job, without
    the job's own variation). A run recorded before rounds were kept has them only if no
    job failed (its i-th sample is then round i); else this is empty, as is ``inside`` or
    ``net`` for a run recorded before the sandbox time was."""
    rounds = http.get("latency_round")
    if not rounds:
        if http.get("failures"):
            return []
        rounds = {d: {p: list(range(len(v))) for p, v in per.items()}
                  for d, per in http["latency_s"].items()}
    if of == "latency":
        values = http["latency_s"]
    elif not http.get("in_sandbox_s"):
        return []
    elif of == "inside":
        values = http["in_sandbox_s"]
    else:
        values = {d: {p: [t - w for t, w in zip(v, http["in_sandbox_s"][d][p], strict=True)]
                      for p, v in per.items()} for d, per in http["latency_s"].items()}
    base = dict(zip(rounds["msgpack"][prog], values["msgpack"][prog], strict=True))
    return [v - base[r] for r, v in zip(rounds[door][prog], values[door][prog], strict=True)
            if r in base]


def median_ci(values: list[float], z: float = 1.96) -> tuple[float, float] | None:
    """A distribution-free 95 % confidence interval of the median (order statistics: the
    ranks n/2 -+ z*sqrt(n)/2 of the sorted values, the binomial's normal approximation);
    None below 6 values."""
    n = len(values)
    if n < 6:
        return None
    v = sorted(values)
    half = z * math.sqrt(n) / 2
    lo, hi = max(1, math.floor(n / 2 - half)), min(n, math.ceil(1 + n / 2 + half))
    return v[lo - 1], v[hi - 1]


def summary(http: dict[str, Any]) -> dict[str, Any]:
    """Per door and program: p50, p90, p99 (ms), n, the p50's excess over msgpack's (a
    difference of two medians), the paired excess (the median of the per-round
    differences, with its 95 % interval), the same net of the job's time in the sandbox
    (docs/benchmarks.md says why the target is judged on it) and of that time itself;
    throughput medians and their ratio to msgpack's at the same concurrency."""
    lat: dict[str, dict[str, dict[str, float]]] = {}
    for d, per in http["latency_s"].items():
        for p, v in per.items():
            if v:
                lat.setdefault(d, {})[p] = {"p50": statistics.median(v) * 1000,
                                            "p90": pct(v, .9) * 1000, "p99": pct(v, .99) * 1000,
                                            "n": len(v)}
    for d, per in http.get("daemon_cpu_s", {}).items():
        for p, v in per.items():
            if v and p in lat.get(d, {}):
                lat[d][p]["cpu_p50"] = statistics.median(v) * 1000
    for d, per in lat.items():
        for p, s in per.items():
            base = lat.get("msgpack", {}).get(p)
            s["over_msgpack_ms"] = s["p50"] - base["p50"] if base else None
            for key, of in (("paired", "latency"), ("net_paired", "net"),
                            ("inside_paired", "inside")):
                pairs = paired_over(http, d, p, of) if d != "msgpack" and base else []
                ci = median_ci(pairs)
                s[f"{key}_over_msgpack_ms"] = (statistics.median(pairs) * 1000 if pairs
                                               else None)
                s[f"{key}_ci_ms"] = [ci[0] * 1000, ci[1] * 1000] if ci else None
                if of == "latency":
                    s["pairs"] = len(pairs)
            s["cpu_over_msgpack_ms"] = (s["cpu_p50"] - base["cpu_p50"]
                                        if base and "cpu_p50" in s and "cpu_p50" in base
                                        else None)
    tput: dict[str, dict[str, dict[str, dict[str, float | None]]]] = {}
    for d, per in http["throughput_jobs_s"].items():
        for p, per_c in per.items():
            for c, v in per_c.items():
                base = http["throughput_jobs_s"].get("msgpack", {}).get(p, {}).get(c)
                med = statistics.median(v)
                ref = statistics.median(base) if base else None
                tput.setdefault(d, {}).setdefault(p, {})[c] = {
                    "jobs_s": med, "vs_msgpack": med / ref if ref else None}
    return {"latency_ms": lat, "throughput": tput}


def targets(s: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 14's: each HTTP door adds at most 1 ms to msgpack's p50 and keeps at least
    80 % of its throughput. The latency is judged on the paired excess net of the job's
    time in the sandbox (docs/benchmarks.md says why), else on the paired excess (a run
    recorded without the sandbox time), else on the difference of the two medians (a run
    recorded without rounds)."""
    rows = []
    for d in HTTP_DOORS:
        for p, st in s["latency_ms"].get(d, {}).items():
            gap = st["over_msgpack_ms"]
            if gap is None:
                continue
            base = s["latency_ms"]["msgpack"][p]["p50"]
            parts = []
            for key, what in (("net_paired", "net of the sandbox"), ("paired", "paired"),
                              ("inside_paired", "the sandbox time")):
                value, ci = st.get(f"{key}_over_msgpack_ms"), st.get(f"{key}_ci_ms")
                if value is not None:
                    parts.append(f"{what} {value:+.2f} ms" + (
                        f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else ""))
            gap = next((v for v in (st.get("net_paired_over_msgpack_ms"),
                                    st.get("paired_over_msgpack_ms")) if v is not None), gap)
            parts.append(f"medians {st['p50']:.2f} ms vs {base:.2f} ms "
                         f"({st['over_msgpack_ms']:+.2f} ms), {st.get('pairs', 0)} rounds")
            figure = "; ".join(parts)
            rows.append({"target": f"HTTP {d} p50 at most 1 ms over msgpack's ({LABELS[p]})",
                         "figure": figure, "met": gap <= 1.0, "margin": f"{1.0 - gap:+.2f} ms"})
        for p, per_c in s["throughput"].get(d, {}).items():
            for c, t in per_c.items():
                ratio = t["vs_msgpack"]
                if ratio is None:
                    continue
                ref = s["throughput"]["msgpack"][p][c]["jobs_s"]
                rows.append({"target": f"HTTP {d} throughput >= 80 % of msgpack's ({LABELS[p]},"
                                       f" {c} client{'s' if c != '1' else ''})",
                             "figure": f"{t['jobs_s']:.1f} vs {ref:.1f} jobs/s ({ratio:.2f}x)",
                             "met": ratio >= 0.8, "margin": f"{ratio - 0.8:+.2f}"})
    return rows


def markdown(http: dict[str, Any], s: dict[str, Any], seconds: float, reps: int) -> list[str]:
    """The report's section: latency per door and program, throughput per concurrency."""
    client = {"lean": "a lean client: the request's bytes, llhttp's parser (`httptools`)",
              "stdlib": "`http.client`"}.get(http.get("client", "stdlib"), "?")
    lines = ["## The HTTP front door against the msgpack socket", "",
             "One daemon (warm pools of `python3` and `c`), both doors open; every door once "
             f"per program per round, rotating, each sample with the daemon idle; keep-alive "
             f"HTTP/1.1 ({client}), the bare protocol client for msgpack. \"Over "
             "msgpack\": the difference of the two medians; \"paired\": the median of the "
             "per-round differences (the door's sample minus msgpack's in the same round), "
             "with its 95 % interval; \"net\": the same of the latency less the job's own "
             "time in the sandbox (its compile's and run's wall time), on which the target is "
             "judged; \"sandbox time\": the paired difference of that time itself.", "",
             "| door | program | p50 ms | p90 | p99 | n | p50 over msgpack | paired over "
             "msgpack [95 % CI] | net [95 % CI] | sandbox time | daemon CPU ms (p50) | "
             "CPU over msgpack |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def paired(st: dict[str, Any], key: str) -> str:
        value, ci = st.get(f"{key}_over_msgpack_ms"), st.get(f"{key}_ci_ms")
        if value is None:
            return "-"
        return f"{value:+.2f} ms" + (f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "")

    for d in DOORS:
        for p, st in s["latency_ms"].get(d, {}).items():
            over, cpu_over = st["over_msgpack_ms"], st.get("cpu_over_msgpack_ms")
            cpu = f"{st['cpu_p50']:.2f}" if "cpu_p50" in st else "-"
            lines.append(f"| {d} | {LABELS[p]} | {st['p50']:.2f} | {st['p90']:.2f} | "
                         f"{st['p99']:.2f} | {int(st['n'])} | "
                         f"{'-' if d == 'msgpack' or over is None else f'{over:+.2f} ms'} | "
                         f"{paired(st, 'paired')} | {paired(st, 'net_paired')} | "
                         f"{paired(st, 'inside_paired')} | {cpu} | "
                         f"{'-' if d == 'msgpack' or cpu_over is None else f'{cpu_over:+.2f} ms'}"
                         " |")
    conc = sorted({c for per in s["throughput"].values() for per_c in per.values()
                   for c in per_c}, key=int)
    lines += ["", f"Throughput (jobs/s, median of {reps} windows of {seconds:g} s; in brackets "
              "the ratio to msgpack's at the same concurrency):", "",
              "| door | program | " + " | ".join(f"{c} client{'s' if c != '1' else ''}"
                                                for c in conc) + " |",
              "|---|---|" + "---|" * len(conc)]
    for d in DOORS:
        for p, per_c in s["throughput"].get(d, {}).items():
            cells = []
            for c in conc:
                t = per_c.get(c)
                cells.append("-" if t is None else f"{t['jobs_s']:.1f}" + (
                    f" ({t['vs_msgpack']:.2f}x)" if d != "msgpack" and t["vs_msgpack"] else ""))
            lines.append(f"| {d} | {LABELS[p]} | " + " | ".join(cells) + " |")
    if http.get("failures"):
        lines += ["", "Failed jobs: " + ", ".join(f"{k} {v}" for k, v in
                                                  http["failures"].items())]
    return [*lines, ""]


# ------------------------------------------------------------------ on its own


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--client", choices=sorted(CLIENTS), default="lean",
                    help="the HTTP client: lean (llhttp's parser) or stdlib (http.client)")
    a = ap.parse_args()
    from suite import Daemon  # the suite's wrapper (settle, stats); suite imports us too

    tmp = Path(tempfile.mkdtemp(prefix="sandboxd-bench-http-"))
    args = http_args()
    d = Daemon(tmp, "http", 4, pool_profiles=POOL_PROFILES, args=args, **CONFIG)
    try:
        out = measure(d, args, rounds=2 if a.quick else a.rounds, warmup=1 if a.quick else 3,
                      seconds=0.25 if a.quick else a.seconds, reps=1 if a.quick else a.reps,
                      concurrency=(1, 8, 32), throughput_programs=("py",),
                      log=lambda m: print(m, file=sys.stderr, flush=True), client=a.client)
    finally:
        d.close()
        shutil.rmtree(tmp, ignore_errors=True)
    s = summary(out)
    print("\n".join(markdown(out, s, 0.25 if a.quick else a.seconds, 1 if a.quick else a.reps)))
    for t in targets(s):
        print(f"{'met ' if t['met'] else 'MISS'} {t['target']}: {t['figure']}")
    if a.json:
        Path(a.json).write_text(json.dumps({**out, "summary": s}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

