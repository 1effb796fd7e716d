"""``GET /metrics``: the service's counters and the listener's, in Prometheus's text
format (version 0.0.4), written by hand: a dozen families need no client library.

Names follow Prometheus's conventions (``_total`` counters, ``_seconds`` units,
cumulative ``_bucket`` histograms with ``le``); docs/http.md lists them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from sandboxd.service import Histogram, JobMetrics

if TYPE_CHECKING:
    from ._app import HttpFront

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def _number(v: float) -> str:
    if isinstance(v, int):
        return str(v)
    return repr(float(v)) if v == v else "NaN"


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_: str,
               samples: Iterable[tuple[dict[str, str], float]]) -> None:
        self.lines.append(f"# HELP {name} {help_}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            self.lines.append(f"{name}{_labels(labels)} {_number(value)}")

    def histogram(self, name: str, help_: str, h: Histogram) -> None:
        self.lines.append(f"# HELP {name} {help_}")
        self.lines.append(f"# TYPE {name} histogram")
        for le, count in zip(h.buckets, h.counts, strict=True):
            self.lines.append(f'{name}_bucket{{le="{le:g}"}} {count}')
        self.lines.append(f'{name}_bucket{{le="+Inf"}} {h.count}')
        self.lines.append(f"{name}_sum {_number(h.sum)}")
        self.lines.append(f"{name}_count {h.count}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def render(front: HttpFront, st: Any = None, m: JobMetrics | None = None,
           workers: Mapping[str, int | float] | None = None) -> str:
    """The exposition: of this process's service, or of ``st`` (a ``Statistics`` or the
    whole daemon's ``ServerStats``: the same fields) and ``m`` (with workers, summed
    over them); ``workers``: the counters saying how many workers there are and
    answered."""
    service = front.service
    st = service.statistics() if st is None else st
    m = service.metrics if m is None else m
    c = st.counters
    w = _Writer()
    w.family("sandboxd_jobs_total", "counter",
             "Jobs finished, by profile and the verdict that decides the job.",
             (({"profile": p, "verdict": v}, n) for (p, v), n in sorted(m.jobs.items())))
    w.family("sandboxd_steps_total", "counter", "Steps finished (runs, failed compiles), "
             "by verdict.",
             (({"verdict": k.removeprefix("verdict_")}, v) for k, v in sorted(c.items())
              if k.startswith("verdict_")))
    w.family("sandboxd_job_cpu_seconds_total", "counter",
             "CPU seconds of finished jobs' steps (compile included), by profile.",
             (({"profile": p}, round(s, 6)) for p, s in sorted(m.cpu_seconds.items())))
    w.family("sandboxd_jobs_queued", "gauge", "Jobs admitted and waiting to run.",
             [({}, st.jobs_queued)])
    w.family("sandboxd_jobs_running", "gauge", "Jobs running now.", [({}, st.jobs_running)])
    w.histogram("sandboxd_queue_wait_seconds",
                "Seconds a finished job waited in the queue before its first step ran.",
                m.queue_wait)
    w.histogram("sandboxd_job_run_seconds",
                "Seconds from a finished job's first step to its end.", m.run_time)
    for name, key, help_ in (
            ("sandboxd_pool_hits_total", "pool_hits", "Steps that found a warm container."),
            ("sandboxd_pool_misses_total", "pool_misses",
             "Steps that waited for a container to be made."),
            ("sandboxd_containers_created_total", "containers_created", "Containers made."),
            ("sandboxd_containers_destroyed_total", "containers_destroyed",
             "Containers destroyed."),
            ("sandboxd_busy_refusals_total", "busy_refusals",
             "Submissions refused because the queue was full.")):
        w.family(name, "counter", help_, [({}, c.get(key, 0))])
    w.family("sandboxd_pool_warm", "gauge", "Warm containers waiting, by profile.",
             (({"profile": p.profile}, p.warm) for p in st.pools))
    w.family("sandboxd_uptime_seconds", "gauge", "Seconds since the daemon started.",
             [({}, round(st.uptime, 3))])
    if workers is not None:
        w.family("sandboxd_workers", "gauge", "Worker processes configured (workers).",
                 [({}, workers.get("workers", 0))])
        w.family("sandboxd_workers_answering", "gauge",
                 "Workers whose figures this scrape includes (a restarting one is left out).",
                 [({}, workers.get("workers_answering", 0))])
    w.family("sandboxd_http_requests_total", "counter",
             "HTTP requests and WebSockets answered, by route, method and status.",
             (({"route": r, "method": meth, "status": s}, n)
              for (r, meth, s), n in sorted(m.http.items())))
    w.family("sandboxd_http_in_flight", "gauge", "HTTP requests and WebSockets being served.",
             [({}, m.http_in_flight)])
    return w.text()
