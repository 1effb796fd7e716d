"""What loading the job's seccomp program costs: sandboxd's own program against libseccomp's.

Usage: ``.venv/bin/python bench/bench_seccomp.py [--children N] [--rounds R] [--json FILE]``

Every job process loads its seccomp program (native/init.c), and the kernel checks,
converts and JIT-compiles each instruction then. This builds
``bench/native/seccomp_load.c`` and, round by round in an order that rotates, runs its
loop of forked children with no program (the control), with sandboxd's program for the
default policy (``seccomp.compile_policy``) and with libseccomp's for the same table
(``seccomp.libseccomp_program``), reporting each one's CPU per child and what a load
costs over the control. Needs gcc; creates nothing outside a temporary directory.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import c_loop_main  # (which puts the repository's root on the path)

from sandboxd.isolation import seccomp

SOURCE = Path(__file__).resolve().parent / "native" / "seccomp_load.c"


def _programs(tmp: Path) -> dict[str, list[str]]:
    (tmp / "ours.bpf").write_bytes(seccomp.compile_policy("default"))
    (tmp / "libseccomp.bpf").write_bytes(seccomp.libseccomp_program("default"))
    return {"none": ["-"], "sandboxd": [str(tmp / "ours.bpf")],
            "libseccomp": [str(tmp / "libseccomp.bpf")]}


def _summary(got: dict[str, list[dict[str, float]]]) -> dict[str, Any]:
    control = statistics.median(x["cpu_us"] for x in got["none"])
    summary = {}
    for name, runs in got.items():
        cpu = statistics.median(x["cpu_us"] for x in runs)
        summary[name] = {"instructions": runs[0]["instructions"], "cpu_us": cpu,
                         "load_us": cpu - control}
        print(f"{name:>11}: {runs[0]['instructions']:4d} instructions, {cpu:6.1f} us "
              f"per child, {cpu - control:6.1f} us for the load")
    return summary


if __name__ == "__main__":
    sys.exit(c_loop_main(SOURCE, _programs, _summary, children=3000))
