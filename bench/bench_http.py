"""The HTTP front door against the msgpack socket: the same daemon, the same jobs, one run.

Usage (as root): ``.venv/bin/python bench/bench_http.py [--rounds N] [--seconds S]
[--json FILE] [--quick]``; ``bench/suite.py`` runs the same measurement (``measure``)
as part of ``bench/run`` and reports it (docs/benchmarks.md).

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

Every client keeps its connection for all its jobs (HTTP/1.1 keep-alive with
the standard library's ``http.client``: no connection set-up per request, and
no client library's own costs in the figures, as the msgpack control uses the
bare protocol client). Every answer is checked: the program's output must be
``hello, world``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    """One keep-alive HTTP/1.1 connection; ``post`` returns the status and the JSON."""

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


def _check(door: str, ok: bool, answer: Any) -> None:
    if not ok:
        raise RuntimeError(f"{door}: unexpected answer {str(answer)[:400]}")


def runner(door: str, prog: Program, socket_path: str, address: tuple[str, int],
           opened: list[Any]) -> Callable[[], None]:
    """The call that runs ``prog`` once through ``door`` on a connection of its own (kept
    in ``opened`` for closing) and checks the answer."""
    if door == "msgpack":
        client = BareClient(socket_path, name="bench", timeout=None)
        opened.append(client)
        files = {prog.entry: prog.source.encode()}

        def msgpack() -> None:
            res = client.job(profile=prog.profile, files=files)
            _check(door, bool(res.steps) and res.steps[0].verdict == "ok"
                   and res.steps[0].stdout == GREETING.encode(), res)
        return msgpack
    http = HttpClient(address)
    opened.append(http)
    if door == "v1":
        body: dict[str, Any] = {"profile": prog.profile, "files": {prog.entry: prog.source}}

        def v1() -> None:
            status, res = http.post("/v1/jobs", body)
            _check(door, status == 200 and res["verdict"] == "ok"
                   and res["steps"][0]["stdout"] == GREETING, res)
        return v1
    if door == "judge0":
        body = {"source_code": prog.source, "language_id": prog.judge0_id}

        def judge0() -> None:
            status, res = http.post("/submissions?wait=true", body)
            _check(door, status == 201 and res["status"]["id"] == 3
                   and res["stdout"] == GREETING, res)
        return judge0
    body = {"language": prog.piston, "version": "*",
            "files": [{"name": prog.entry, "content": prog.source}]}

    def piston() -> None:
        status, res = http.post("/api/v2/execute", body)
        _check(door, status == 200 and res["run"]["code"] == 0
               and res["run"]["stdout"] == GREETING, res)
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
            log: Callable[[str], None] = lambda _m: None) -> dict[str, Any]:
    """Latency and throughput of every door (``daemon``: the suite's ``Daemon`` wrapper,
    started with ``args`` = ``http_args()`` and ``CONFIG``; its ``settle()`` waits until
    it is idle). Every sample is kept: ``_report`` derives the figures."""
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
    pid = daemon.daemon.pid
    failures: dict[str, int] = {}
    runs = {(d, p): runner(d, prog, sock, address, opened)
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
                    runs[d, p]()
                except Exception:
                    failures[f"{d} {p}"] = failures.get(f"{d} {p}", 0) + 1
                    continue
                dt, c1 = time.perf_counter() - t, cpu_ns(pid)
                daemon.settle()
                if r >= warmup:
                    lat[d][p].append(dt)
                    cpu[d][p].append((c1 - c0) / 1e9)
                    rounds_of[d][p].append(r - warmup)
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
                                                              opened), conc, seconds)
                    close_all(opened)
                    daemon.settle()
                    tput[d].setdefault(p, {}).setdefault(str(conc), []).append(rate)
    return {"latency_s": lat, "daemon_cpu_s": cpu, "latency_round": rounds_of,
            "throughput_jobs_s": tput,
            "failures": failures,
            "programs": {p: LABELS[p] for p in PROGRAMS}}


# ------------------------------------------------------------------ figures


def paired_over(http: dict[str, Any], door: str, prog: str) -> list[float]:
    """Door minus msgpack, in seconds, per round in which both ran ``prog``. A run
    recorded before rounds were kept has them only if no job failed (its i-th sample is
    then round i); else this is empty."""
    rounds = http.get("latency_round")
    if not rounds:
        if http.get("failures"):
            return []
        rounds = {d: {p: list(range(len(v))) for p, v in per.items()}
                  for d, per in http["latency_s"].items()}
    base = dict(zip(rounds["msgpack"][prog], http["latency_s"]["msgpack"][prog], strict=True))
    return [v - base[r] for r, v in zip(rounds[door][prog], http["latency_s"][door][prog],
                                        strict=True) if r in base]


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
    difference of two medians) and the paired excess (the median of the per-round
    differences, with its 95 % interval: docs/benchmarks.md says why the target is judged
    on it); throughput medians and their ratio to msgpack's at the same concurrency."""
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
            pairs = paired_over(http, d, p) if d != "msgpack" and base else []
            ci = median_ci(pairs)
            s["paired_over_msgpack_ms"] = statistics.median(pairs) * 1000 if pairs else None
            s["paired_ci_ms"] = [ci[0] * 1000, ci[1] * 1000] if ci else None
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
    80 % of its throughput. The latency is judged on the paired excess (the median of the
    per-round differences; docs/benchmarks.md says why), or on the difference of the two
    medians for a run recorded without rounds."""
    rows = []
    for d in HTTP_DOORS:
        for p, st in s["latency_ms"].get(d, {}).items():
            gap = st["over_msgpack_ms"]
            if gap is None:
                continue
            base = s["latency_ms"]["msgpack"][p]["p50"]
            paired, ci = st.get("paired_over_msgpack_ms"), st.get("paired_ci_ms")
            figure = f"{st['p50']:.2f} ms vs {base:.2f} ms ({gap:+.2f} ms)"
            if paired is not None:
                gap = paired
                figure = (f"paired {paired:+.2f} ms" + (f" [{ci[0]:+.2f}, {ci[1]:+.2f}]"
                                                        if ci else "")
                          + f" over {st['pairs']} rounds; medians {figure}")
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
    lines = ["## The HTTP front door against the msgpack socket", "",
             "One daemon (warm pools of `python3` and `c`), both doors open; every door once "
             "per program per round, rotating, each sample with the daemon idle; keep-alive "
             "HTTP/1.1 (`http.client`), the bare protocol client for msgpack. \"Over "
             "msgpack\": the difference of the two medians; \"paired\": the median of the "
             "per-round differences (the door's sample minus msgpack's in the same round), "
             "with its 95 % interval, on which the target is judged.", "",
             "| door | program | p50 ms | p90 | p99 | n | p50 over msgpack | paired over "
             "msgpack [95 % CI] | daemon CPU ms (p50) | CPU over msgpack |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for d in DOORS:
        for p, st in s["latency_ms"].get(d, {}).items():
            over, cpu_over = st["over_msgpack_ms"], st.get("cpu_over_msgpack_ms")
            cpu = f"{st['cpu_p50']:.2f}" if "cpu_p50" in st else "-"
            paired, ci = st.get("paired_over_msgpack_ms"), st.get("paired_ci_ms")
            pair = "-" if d == "msgpack" or paired is None else f"{paired:+.2f} ms" + (
                f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "")
            lines.append(f"| {d} | {LABELS[p]} | {st['p50']:.2f} | {st['p90']:.2f} | "
                         f"{st['p99']:.2f} | {int(st['n'])} | "
                         f"{'-' if d == 'msgpack' or over is None else f'{over:+.2f} ms'} | "
                         f"{pair} | {cpu} | "
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
    a = ap.parse_args()
    from suite import Daemon  # the suite's wrapper (settle, stats); suite imports us too

    tmp = Path(tempfile.mkdtemp(prefix="sandboxd-bench-http-"))
    args = http_args()
    d = Daemon(tmp, "http", 4, pool_profiles=POOL_PROFILES, args=args, **CONFIG)
    try:
        out = measure(d, args, rounds=2 if a.quick else a.rounds, warmup=1 if a.quick else 3,
                      seconds=0.25 if a.quick else a.seconds, reps=1 if a.quick else a.reps,
                      concurrency=(1, 8, 32), throughput_programs=("py",),
                      log=lambda m: print(m, file=sys.stderr, flush=True))
    finally:
        d.close()
    s = summary(out)
    print("\n".join(markdown(out, s, 0.25 if a.quick else a.seconds, 1 if a.quick else a.reps)))
    for t in targets(s):
        print(f"{'met ' if t['met'] else 'MISS'} {t['target']}: {t['figure']}")
    if a.json:
        Path(a.json).write_text(json.dumps({**out, "summary": s}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

