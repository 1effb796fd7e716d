"""What a mount costs every container: the copy of its maker's mount namespace, by size.

Usage: ``.venv/bin/python bench/bench_mountns.py [--children N] [--rounds R] [--json FILE]``

Every container's mount namespace starts as a copy of the fork server's, made a
slave and torn down when its init pivots away: the fork server therefore makes
containers from a namespace of its own without ``/sys`` (docs/isolation.md). This
builds ``bench/native/mountns_copy.c`` and, round by round in turn, runs its loop
from this host's namespace and from one without ``/sys`` (the fork server's),
reporting the CPU per child of each and the difference per mount dropped. Needs
root and gcc; creates nothing outside a temporary directory and the children's
own namespaces.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import c_loop_main

SOURCE = Path(__file__).resolve().parent / "native" / "mountns_copy.c"


def _summary(got: dict[str, list[dict[str, float]]]) -> dict[str, Any]:
    summary = {}
    for name, runs in got.items():
        summary[name] = {"mounts": runs[0]["mounts"],
                         "cpu_us": statistics.median(x["cpu_us"] for x in runs)}
        print(f"{name:>14}: {summary[name]['mounts']:3d} mounts, "
              f"{summary[name]['cpu_us']:6.1f} us of CPU per namespace copy")
    dropped = summary["host"]["mounts"] - summary["without /sys"]["mounts"]
    saved = summary["host"]["cpu_us"] - summary["without /sys"]["cpu_us"]
    if dropped > 0:
        print(f"saved per container: {saved:.1f} us ({saved / dropped:.2f} us per mount, "
              f"{dropped} mounts)")
    return summary


if __name__ == "__main__":
    raise SystemExit(c_loop_main(SOURCE, lambda _tmp: {"host": [], "without /sys": ["/sys"]},
                                 _summary, children=2000))
