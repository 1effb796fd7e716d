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

import argparse
import json
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path

SOURCE = Path(__file__).resolve().parent / "native" / "mountns_copy.c"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--children", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sandboxd-bench-mountns-"))
    try:
        exe = tmp / "mountns_copy"
        subprocess.run(["gcc", "-O2", "-o", str(exe), str(SOURCE)], check=True)
        variants = {"host": [], "without /sys": ["/sys"]}
        got: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
        for r in range(args.rounds):
            names = list(variants)[r % 2:] + list(variants)[:r % 2]  # alternate the order
            for name in names:
                out = subprocess.run([str(exe), str(args.children), *variants[name]],
                                     check=True, capture_output=True, text=True).stdout
                got[name].append(json.loads(out))
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
        if args.json:
            Path(args.json).write_text(json.dumps({"runs": got, "summary": summary}, indent=1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
