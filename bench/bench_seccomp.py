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

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sandboxd.isolation import seccomp

SOURCE = Path(__file__).resolve().parent / "native" / "seccomp_load.c"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--children", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sandboxd-bench-seccomp-"))
    try:
        exe = tmp / "seccomp_load"
        subprocess.run(["gcc", "-O2", "-o", str(exe), str(SOURCE)], check=True)
        (tmp / "ours.bpf").write_bytes(seccomp.compile_policy("default"))
        (tmp / "libseccomp.bpf").write_bytes(seccomp.libseccomp_program("default"))
        variants = {"none": "-", "sandboxd": str(tmp / "ours.bpf"),
                    "libseccomp": str(tmp / "libseccomp.bpf")}
        got: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
        names = list(variants)
        for r in range(args.rounds):
            for name in names[r % 3:] + names[:r % 3]:
                out = subprocess.run([str(exe), str(args.children), variants[name]],
                                     check=True, capture_output=True, text=True).stdout
                got[name].append(json.loads(out))
        control = statistics.median(x["cpu_us"] for x in got["none"])
        summary = {}
        for name, runs in got.items():
            cpu = statistics.median(x["cpu_us"] for x in runs)
            summary[name] = {"instructions": runs[0]["instructions"], "cpu_us": cpu,
                             "load_us": cpu - control}
            print(f"{name:>11}: {runs[0]['instructions']:4d} instructions, {cpu:6.1f} us "
                  f"per child, {cpu - control:6.1f} us for the load")
        if args.json:
            Path(args.json).write_text(json.dumps({"runs": got, "summary": summary}, indent=1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
