"""``GET /metrics``, read with Prometheus's own parser (``prometheus_client``)."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.root


def scrape(client: httpx.Client) -> dict[str, list]:
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {f.name: f.samples for f in text_string_to_metric_families(r.text)}


def value(samples: list, name: str, **labels: str) -> float:
    found = [s.value for s in samples if s.name == name and all(
        s.labels.get(k) == v for k, v in labels.items())]
    return sum(found)


def test_metrics_after_jobs(client: httpx.Client):
    before = scrape(client)
    ok = client.post("/v1/jobs", json={"profile": "python3", "files": {"main.py": "print(1)"}})
    assert ok.json()["verdict"] == "ok"
    bad = client.post("/v1/jobs", json={"profile": "bash", "files": {"main.sh": "exit 3"}})
    assert bad.json()["verdict"] == "runtime_error"
    client.get("/v1/nowhere")
    m = scrape(client)

    def grew(family: str, name: str, **labels: str) -> float:
        return value(m[family], name, **labels) - value(before.get(family, []), name, **labels)

    # The parser names a counter family without its _total suffix.
    assert grew("sandboxd_jobs", "sandboxd_jobs_total", profile="python3", verdict="ok") == 1
    assert grew("sandboxd_jobs", "sandboxd_jobs_total", profile="bash",
                verdict="runtime_error") == 1
    assert grew("sandboxd_job_cpu_seconds", "sandboxd_job_cpu_seconds_total",
                profile="python3") > 0
    assert grew("sandboxd_queue_wait_seconds", "sandboxd_queue_wait_seconds_count") == 2
    assert grew("sandboxd_job_run_seconds", "sandboxd_job_run_seconds_count") == 2
    assert value(m["sandboxd_job_run_seconds"], "sandboxd_job_run_seconds_bucket",
                 le="+Inf") == value(m["sandboxd_job_run_seconds"],
                                     "sandboxd_job_run_seconds_count")
    assert grew("sandboxd_pool_hits", "sandboxd_pool_hits_total") + grew(
        "sandboxd_pool_misses", "sandboxd_pool_misses_total") == 2
    assert value(m["sandboxd_containers_created"], "sandboxd_containers_created_total") > 0
    assert "sandboxd_containers_destroyed" in m and "sandboxd_jobs_queued" in m
    assert grew("sandboxd_http_requests", "sandboxd_http_requests_total", route="/v1/jobs",
                method="POST", status="200") == 2
    assert grew("sandboxd_http_requests", "sandboxd_http_requests_total", route="unmatched",
                status="404") == 1
    assert value(m["sandboxd_steps"], "sandboxd_steps_total", verdict="runtime_error") >= 1
