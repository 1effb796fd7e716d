"""What the tests, the benchmarks (bench/) and the fuzzers (fuzz/) share to drive sandboxd
from the outside: one way to start a daemon, one bare protocol client, one definition of
"left behind". Not part of sandboxd: pyproject.toml does not install it.

- ``daemon``: ``Daemon`` (``sandboxd serve`` in a directory of its own, stopped
  by SIGTERM), ``Client`` (one blocking socket speaking ``sandboxd_protocol``,
  no client library), and a process's descriptors and memory.
- ``leftovers``: the processes, cgroups, mounts and SysV IPC objects a test or a
  run may leave, and views that hide what a live daemon legitimately keeps.
- ``wire``: frames built by hand, for hostile clients and misbehaving daemons.
- ``images``: Docker and OCI images built without a registry, from entries or
  host files.

It imports from the repository's root, which is on ``sys.path`` for pytest
(``pythonpath`` in pyproject.toml); the scripts that run on their own
(bench/_common.py, which the bench scripts that drive a daemon import first,
bench/bench_images.py, fuzz/fuzz_daemon.py and tests/soak/soak.py) put it there
themselves.
"""
