"""A daemon of ``workers = 2`` as a cluster node: each worker is a node of its own
(``<node_id>-w<k>``), fed from the same Redis queue (docs/configuration.md, "Workers")."""

from __future__ import annotations

import pytest

from sandboxd_client import Client
from sandboxd_testing.daemon import Daemon

pytestmark = [pytest.mark.root, pytest.mark.slow]


def test_each_worker_is_a_node(tmp_path, redis_server):
    with Daemon(tmp_path, redis=redis_server.url, node_id="wk", workers=2, concurrency=2,
                pool_profiles=["bash"], redis_claim_idle=2.0) as d:
        with Client(redis_server.url) as c:
            jobs = [c.submit("bash", {"main.sh": f"sleep 0.3; echo job-{i}"}) for i in range(8)]
            results = [j.result() for j in jobs]
            assert [r.text for r in results] == [f"job-{i}\n" for i in range(8)]
            assert c.stats().counters["cluster_nodes"] == 2
        log = d.log.read_text()
        # Each worker has one job slot: the two nodes share the eight jobs.
        assert log.count("client=cluster@wk-w0") > 0 and log.count("client=cluster@wk-w1") > 0
