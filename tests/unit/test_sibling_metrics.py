"""With workers, HTTP's ``/metrics`` adds up every worker's job metrics, which a sibling
sends as ``m.*`` counters of its stats (front/_siblings.py): they survive the wire's
rules, come back equal, add up bucket by bucket, and stay out of the daemon's stats."""

from __future__ import annotations

import sandboxd_protocol as proto
from sandboxd.front._siblings import (
    MAX_METRIC_COUNTERS,
    METRIC,
    decode_metrics,
    encode_metrics,
    merge_metrics,
    merge_stats,
)
from sandboxd.service import JobMetrics
from sandboxd_protocol._schema import decode_message, encode_message

PROFILES = ["bash", "c++-gcc", "python3"]  # sorted; a name no counter could spell


def sample() -> JobMetrics:
    m = JobMetrics()
    m.jobs["bash", "ok"] += 3
    m.jobs["c++-gcc", "compile_error"] += 2
    m.cpu_seconds["python3"] += 1.25
    m.queue_wait.observe(0.003)
    m.run_time.observe(2.0)
    m.run_time.observe(700.0)  # past the last bucket: +Inf only
    # The HTTP front door's: routes hold what a counter name may not (/ { } . _ -)
    m.http["/submissions/{token}", "GET", "200"] += 5
    m.http["/v1/openapi.json", "GET", "200"] += 1
    m.http["/config_info", "GET", "404"] += 1
    m.http["/a-b:é", "WEBSOCKET", "101"] += 2
    m.http["unmatched", "other", "0"] += 1
    m.http_in_flight = 3
    return m


def test_metrics_cross_the_wire_and_come_back_equal():
    m = sample()
    st = proto.ServerStats(counters={"pool_hits": 4, **encode_metrics(m, PROFILES)})
    lim = proto.SizeLimits()
    back = decode_message(encode_message(st, lim), lim)
    assert back == st
    assert decode_metrics(back.counters, PROFILES) == m


def test_metrics_add_up_bucket_by_bucket():
    a, b = sample(), sample()
    b.jobs["bash", "time_limit"] += 1
    total = merge_metrics([a, b])
    assert total.jobs == {("bash", "ok"): 6, ("c++-gcc", "compile_error"): 4,
                          ("bash", "time_limit"): 1}
    assert total.cpu_seconds["python3"] == 2.5
    assert total.run_time.counts == [x * 2 for x in a.run_time.counts]
    assert total.run_time.count == 4 and total.run_time.sum == 2 * a.run_time.sum
    assert total.queue_wait.count == 2


def test_daemon_stats_leave_the_metric_counters_out():
    own = proto.ServerStats(jobs_completed=1, counters={"pool_hits": 1})
    sibling = proto.ServerStats(jobs_completed=2, counters={
        "pool_hits": 2, **encode_metrics(sample(), PROFILES)})
    st = merge_stats(0, {0: own, 1: sibling}, 2)
    assert st.counters["pool_hits"] == 3 and st.jobs_completed == 3
    assert not [k for k in st.counters if k.startswith(METRIC)]


def test_too_many_pairs_are_cut_to_fit_a_frame():
    m = JobMetrics()
    names = [f"p{i:04d}" for i in range(1000)]
    for name in names:
        m.jobs[name, "ok"] += 1
    enc = encode_metrics(m, names)
    assert len(enc) == MAX_METRIC_COUNTERS
    st = proto.ServerStats(counters=enc)
    lim = proto.SizeLimits()
    assert decode_message(encode_message(st, lim), lim) == st


def test_an_http_id_says_its_worker():
    """Ids HTTP keeps results under (front/http/_route.py) map back to the worker that
    minted them, and are still UUID v4."""
    import uuid

    from sandboxd.front.http._route import Router

    for count in (2, 3, 7):
        for index in range(count):
            r = Router(index, count, {})
            for _ in range(200):
                u = r.mint()
                assert u.version == 4 and u.variant == uuid.RFC_4122
                assert r.owner(str(u)) == r.owner(u.hex) == index
    r = Router(0, 2, {})
    assert r.owner("batch") is None and r.owner("not-a-uuid-at-all-but-36-chars-long") is None
