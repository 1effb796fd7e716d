"""The suite's outputs: medians and ratios to the floor, the targets, and the plots.

Strategy: ``suite.py`` only measures and keeps every raw sample; everything
derived (percentiles, ratios, met or missed) is computed here, from the same
``results`` dictionary that goes into results.json, so that the JSON alone
is enough to redraw the tables or check a figure later.
"""

from __future__ import annotations

import itertools
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import pct

MiB = 1 << 20
COLOURS = {"bare": "black", "sandboxd-warm": "tab:green", "sandboxd-cold": "tab:olive",
           "bwrap": "tab:blue", "runc": "tab:orange", "crun": "tab:brown",
           "firejail": "tab:red"}
LABELS = {"true": "/bin/true", "py": "python3 -c pass", "hello": "hello-world C binary"}


def latency_summary(lat: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, Any]]:
    """{system: {command: p50, p90, p99, max (ms), n, ratio of p50 to the floor and bwrap}}."""
    out: dict[str, dict[str, Any]] = {}
    for system, per_cmd in lat.items():
        for cmd, v in per_cmd.items():
            if not v:
                continue
            out.setdefault(system, {})[cmd] = {
                "p50": statistics.median(v) * 1000, "p90": pct(v, .9) * 1000,
                "p99": pct(v, .99) * 1000, "max": max(v) * 1000, "n": len(v)}
    for per_cmd in out.values():
        for cmd, s in per_cmd.items():
            for ref in ("bare", "bwrap"):
                base = out.get(ref, {}).get(cmd)
                s[f"vs_{ref}"] = s["p50"] / base["p50"] if base else None
    return out


def throughput_summary(tput: dict[str, dict[str, dict[str, list[float]]]],
                       ) -> dict[str, dict[str, dict[str, float]]]:
    """{system: {command: {concurrency: median jobs/s}}}."""
    return {system: {cmd: {c: statistics.median(v) for c, v in per_c.items()}
                     for cmd, per_c in per_cmd.items()}
            for system, per_cmd in tput.items()}


def targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 10's targets, each with its figure, met or not, and the margin."""
    lat, tput, costs = r["latency_summary_ms"], r["throughput_summary"], r["costs"]
    rows: list[dict[str, Any]] = []
    warm, bare, bw = lat.get("sandboxd-warm", {}), lat.get("bare", {}), lat.get("bwrap", {})
    for cmd, s in warm.items():
        if cmd in bare:
            gap = s["p50"] - bare[cmd]["p50"]
            rows.append({"target": f"warm p50 within 1 ms of bare fork+exec ({LABELS[cmd]})",
                         "figure": f"{s['p50']:.2f} ms vs {bare[cmd]['p50']:.2f} ms "
                                   f"(+{gap:.2f} ms)",
                         "met": gap <= 1.0, "margin": f"{1.0 - gap:+.2f} ms"})
        if cmd in bw:
            half = bw[cmd]["p50"] / 2
            rows.append({"target": f"warm p50 at most half of bubblewrap's ({LABELS[cmd]})",
                         "figure": f"{s['p50']:.2f} ms vs {bw[cmd]['p50']:.2f} ms "
                                   f"({s['p50'] / bw[cmd]['p50']:.2f}x)",
                         "met": s["p50"] <= half, "margin": f"{half - s['p50']:+.2f} ms"})
    for cmd, per_c in tput.get("sandboxd-warm", {}).items():
        for c, rate in per_c.items():
            ref = tput.get("bwrap", {}).get(cmd, {}).get(c)
            if ref:
                rows.append({"target": f"throughput >= bubblewrap's ({LABELS[cmd]}, {c} "
                                       f"client{'s' if c != '1' else ''})",
                             "figure": f"{rate:.1f} vs {ref:.1f} jobs/s ({rate / ref:.2f}x)",
                             "met": rate >= ref, "margin": f"{rate - ref:+.1f} jobs/s"})
    tail = r.get("cold_tail_summary_ms") or {}
    if "sandboxd-cold" in tail and "bwrap" in tail:
        ours, ref = tail["sandboxd-cold"]["p99"], tail["bwrap"]["p99"]
        rows.append({"target": f"cold p99 within 2x of bubblewrap's (/bin/true, "
                               f"{tail['bwrap']['n']} of each)",
                     "figure": f"{ours:.2f} ms vs {ref:.2f} ms ({ours / ref:.2f}x)",
                     "met": ours <= 2 * ref, "margin": f"{2 * ref - ours:+.2f} ms"})
    cpu = costs["supervisor_cpu_per_job_ms"]
    rows.append({"target": "supervisor CPU per job < 0.5 ms", "figure": f"{cpu:.3f} ms",
                 "met": cpu < 0.5, "margin": f"{0.5 - cpu:+.3f} ms"})
    boxes = costs["uss_per_warm_container_bytes"]
    if boxes:
        worst = max(boxes) / MiB
        rows.append({"target": "USS per warm container < 2 MiB",
                     "figure": f"median {statistics.median(boxes) / MiB:.2f} MiB, max "
                               f"{worst:.2f} MiB ({len(boxes)} containers)",
                     "met": worst < 2.0, "margin": f"{2.0 - worst:+.2f} MiB"})
    if r.get("http_summary"):
        import bench_http

        rows += bench_http.targets(r["http_summary"])
    if r.get("cluster_summary"):
        import bench_cluster

        rows += bench_cluster.targets(r["cluster_summary"])
    spread = r.get("cpu_spread_s") or {}
    if len(spread.get("sandboxd-warm", ())) > 1 and len(spread.get("bare", ())) > 1:
        ours, bare = cpu_spread(spread["sandboxd-warm"]), cpu_spread(spread["bare"])
        rows.append({"target": "pinned CPU-time spread < 5 % (max - min over the median)",
                     "figure": f"{100 * ours:.2f} % (bare, the host's own: {100 * bare:.2f} %)",
                     "met": ours < 0.05, "margin": f"{100 * (0.05 - ours):+.2f} pp"})
    return rows


def cpu_spread(samples: list[float]) -> float:
    """(max - min) / median of repeated runs of the same work."""
    return (max(samples) - min(samples)) / statistics.median(samples)


def _f(x: float | None, fmt: str = ".2f") -> str:
    return "-" if x is None else format(x, fmt)


def markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(r["started"]))
    lines = [f"# sandboxd benchmarks, {when}", ""]
    if r["quick"]:
        lines += ["**Quick mode: a smoke check, too few samples to quote.**", ""]
    lines += [
        f"Machine: {m['cpu_model']}, {m['cores']} cores, {m['memory_bytes'] / (1 << 30):.0f} GiB, "
        f"kernel {m['kernel']}, Debian {m['debian']}, Python {m['python']}; cgroup {m['cgroup']}.",
        f"Load average {m['loadavg_start'][0]:.2f} at the start, {m['loadavg_end'][0]:.2f} at "
        f"the end; over the {m['seconds']:.0f} s run the machine was busy "
        f"{m['busy_cores']:.2f} cores on average (all processes, ours included), hypervisor "
        f"steal {m['steal_cores']:.2f} cores.",
        "Tools: " + ", ".join(f"{k} {v}" for k, v in m["tools"].items()) + ".", ""]

    lines += ["## Targets", "", "| target | figure | met | margin |", "|---|---|---|---|"]
    lines += [f"| {t['target']} | {t['figure']} | {'yes' if t['met'] else '**no**'} | "
              f"{t['margin']} |" for t in r["targets"]]

    plan = r["plan"]
    lines += ["", "## Latency per job (ms)", "",
              f"{plan['rounds']} rounds, every system once per command per round in a rotating "
              "order; sandboxd's samples are taken with the daemon idle (pool refilled) before "
              "each job. Ratios are of medians.", ""]
    lat = r["latency_summary_ms"]
    for cmd in r["commands"]:
        lines += [f"### {LABELS[cmd]}", "",
                  "| system | p50 | p90 | p99 | max | n | p50 / floor | p50 / bwrap |",
                  "|---|---|---|---|---|---|---|---|"]
        for system, per_cmd in lat.items():
            s = per_cmd.get(cmd)
            if s:
                lines.append(f"| {system} | {s['p50']:.2f} | {s['p90']:.2f} | {s['p99']:.2f} | "
                             f"{s['max']:.2f} | {s['n']} | {_f(s['vs_bare'])} | "
                             f"{_f(s['vs_bwrap'])} |")
        lines.append("")

    tail = r.get("cold_tail_summary_ms") or {}
    if tail:
        lines += ["## The cold start's tail (ms)", "",
                  "`/bin/true` on a daemon with no pool (every job makes its container) and "
                  "on bubblewrap, alternating, each sample with the daemon idle.", "",
                  "| system | p50 | p90 | p99 | p99.9 | max | n |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {name} | {t['p50']:.2f} | {t['p90']:.2f} | {t['p99']:.2f} | "
                  f"{t['p999']:.2f} | {t['max']:.2f} | {t['n']} |" for name, t in tail.items()]
        lines.append("")

    lines += ["## Throughput (jobs/s)", "",
              f"Closed loops of N clients for {plan['seconds']} s, median of {plan['reps']} "
              "windows; in brackets, the ratio to the floor (bare fork+exec) at the same "
              "concurrency.", ""]
    tput = r["throughput_summary"]
    for cmd in plan["throughput_commands"]:
        conc = [str(c) for c in plan["concurrency"]]
        lines += [f"### {LABELS[cmd]}", "", "| system | " + " | ".join(
            f"{c} client{'s' if c != '1' else ''}" for c in conc) + " |",
                  "|---|" + "---|" * len(conc)]
        floor = tput.get("bare", {}).get(cmd, {})
        for system, per_cmd in tput.items():
            if cmd not in per_cmd:
                continue
            cells = []
            for c in conc:
                v = per_cmd[cmd].get(c)
                ratio = f" ({v / floor[c]:.2f}x)" if v is not None and floor.get(c) else ""
                cells.append(f"{_f(v, '.1f')}{ratio}")
            lines.append(f"| {system} | " + " | ".join(cells) + " |")
        lines.append("")

    c = r["costs"]
    boxes = c["uss_per_warm_container_bytes"]
    lines += ["## sandboxd's own costs", "", "| cost | figure |", "|---|---|",
              f"| supervisor CPU per job | {c['supervisor_cpu_per_job_ms']:.3f} ms "
              f"({c['cpu_jobs']} `/bin/true` jobs back to back, {c['cpu_jobs_s']:.0f} jobs/s; "
              f"clock tick {c['clock_tick_ms']:.0f} ms) |",
              f"| zygote + fork server CPU per job (making the next container) | "
              f"{c['zygote_cpu_per_job_ms']:.3f} ms |"]
    total = c.get("sandboxd_cpu_per_job_ms")
    if total is not None:
        rest = total - c["supervisor_cpu_per_job_ms"] - c["zygote_cpu_per_job_ms"]
        lines += [f"| CPU per job, all of sandboxd (cpuacct of the daemon's cgroup tree) | "
                  f"{total:.3f} ms, of which the containers (init, job process, job) "
                  f"{rest:.3f} ms |"]
    peers = c.get("peer_cpu_per_job_ms") or {}
    if peers:
        lines += ["| CPU per `/bin/true` job of the others (wait4 rusage) | " + ", ".join(
            f"{k} {v:.3f} ms" for k, v in peers.items()) + " |"]
    peers_cg = c.get("peer_cpu_cgroup_per_job_ms") or {}
    if peers_cg:
        lines += ["| CPU per `/bin/true` job of the others (a cpuacct cgroup around each, "
                  "its launcher loop included: see bare) | " + ", ".join(
                      f"{k} {v:.3f} ms" for k, v in peers_cg.items()) + " |"]
    lines += [

              "| USS per warm container (init + job process) | " + (
                  f"median {statistics.median(boxes) / MiB:.2f} MiB, max {max(boxes) / MiB:.2f} "
                  f"MiB, {len(boxes)} containers |" if boxes else "none found |"),
              f"| pool refill rate, empty to {c['pool_size']} warm | median "
              f"{statistics.median(c['refill_containers_per_s']):.1f} containers/s "
              f"({len(c['refill_containers_per_s'])} fills; mean time to make one "
              f"{statistics.median(c['refill_mean_s']) * 1000:.1f} ms) |",
              f"| protocol encode + decode per job (both ends, CPU) | best "
              f"{min(c['protocol_us_per_job']):.1f} µs, median "
              f"{statistics.median(c['protocol_us_per_job']):.1f} µs |", ""]

    judge = r["judge_s"]
    bare = statistics.median(judge["bare"]) if judge.get("bare") else None
    bw = statistics.median(judge["bwrap"]) if judge.get("bwrap") else None
    lines += ["## The judge path: one compile and 50 tests", "",
              "sandboxd: one job (profile `c`, 50 tests with expected output). bwrap and bare: "
              "gcc, then 50 runs of the binary, one process at a time, output compared by "
              "the driver.", "",
              "| system | median s | min | max | n | vs bare | vs bwrap |",
              "|---|---|---|---|---|---|---|"]
    for system, v in judge.items():
        if v:
            med = statistics.median(v)
            lines.append(f"| {system} | {med:.3f} | {min(v):.3f} | {max(v):.3f} | {len(v)} | "
                         f"{_f(med / bare if bare else None)} | {_f(med / bw if bw else None)} |")
    lines.append("")

    spread = r.get("cpu_spread_s") or {}
    if any(spread.values()):
        lines += ["## CPU time of a fixed workload, pinned (the same binary bare is the control)",
                  "", "A register-only busy loop calibrated to the plan's CPU seconds; "
                  "sandboxd runs it in a fresh container per run (`cpuset_pin`), bare "
                  "pinned to the same CPU, interleaved round by round.", "",
                  "| system | median s | min | max | n | spread |", "|---|---|---|---|---|---|"]
        for system, v in spread.items():
            if v:
                lines.append(f"| {system} | {statistics.median(v):.4f} | {min(v):.4f} | "
                             f"{max(v):.4f} | {len(v)} | {100 * cpu_spread(v):.2f} % |")
        lines.append("")

    prof = c.get("profile")
    if prof:
        lines += ["## Where the supervisor's CPU goes (py-spy --gil, during the CPU-per-job loop)",
                  "", f"{int(prof['samples'][0][1])} samples of the thread holding the GIL; "
                  "`supervisor-profile.txt` has the collapsed stacks.", "",
                  "| share | trio task the samples ran in | | share | innermost frame's file |",
                  "|---|---|---|---|---|"]
        for (ft, st), (ff, sf) in itertools.zip_longest(prof["by_task"], prof["by_file"],
                                                        fillvalue=("", 0.0)):
            lines.append(f"| {st:.1%} | `{ft}` | | {sf:.1%} | `{ff}` |")
        lines.append("")

    if r.get("http_summary"):
        import bench_http

        lines += bench_http.markdown(r["http"], r["http_summary"], plan["seconds"],
                                     plan["reps"])
    if r.get("cluster_summary"):
        import bench_cluster

        lines += bench_cluster.markdown(r["cluster"], r["cluster_summary"], plan["seconds"],
                                        plan["reps"])

    lines += ["## Isolation of each system", "", "| system | isolation |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in r["isolation"].items()]
    if r["unavailable"] or r["failures"] or r["leftovers_removed"]:
        lines += ["", "## Left out, failed, cleaned up", ""]
        lines += [f"- left out: {k}: {v}" for k, v in r["unavailable"].items()]
        lines += [f"- failed jobs: {k}: {v}" for k, v in r["failures"].items()]
        lines += [f"- removed after the run: {x}" for x in r["leftovers_removed"]]
    return "\n".join(lines) + "\n"


def _panels(path: Path, cmds: list[str], title: str, xlabel: str, ylabel: str,
            draw: Callable[[Any, str], None]) -> None:
    """One panel per command, drawn by ``draw(ax, cmd)``, titled, gridded, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(cmds), figsize=(max(8, 6 * len(cmds)), 5), squeeze=False)
    for ax, cmd in zip(axes[0], cmds, strict=True):
        draw(ax, cmd)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(LABELS[cmd])
        ax.grid(True, which="both", alpha=0.3)
    # One legend for all panels, below them, where it hides no curve.
    labelled = {lab: h for ax in axes[0] for h, lab in zip(*ax.get_legend_handles_labels(),
                                                           strict=True)}
    fig.legend(list(labelled.values()), list(labelled), loc="lower center",
               ncol=len(labelled), fontsize=9, frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plots(r: dict[str, Any], out: Path) -> None:
    """latency.png: the distribution per system and command (ECDF, log time axis);
    throughput.png: jobs/s against concurrency, median and the spread of the windows."""

    def ecdf(ax: Any, cmd: str) -> None:
        for system, per_cmd in r["latency_s"].items():
            v = sorted(x * 1000 for x in per_cmd.get(cmd, []))
            if v:
                ax.plot(v, [100 * (i + 1) / len(v) for i in range(len(v))], label=system,
                        color=COLOURS.get(system), drawstyle="steps-post")
        ax.set_xscale("log")

    def rates(ax: Any, cmd: str) -> None:
        for system, per_cmd in r["throughput_jobs_s"].items():
            per_c = per_cmd.get(cmd)
            if not per_c:
                continue
            cs = sorted(per_c, key=int)
            med = [statistics.median(per_c[c]) for c in cs]
            lo = [m - min(per_c[c]) for m, c in zip(med, cs, strict=True)]
            hi = [max(per_c[c]) - m for m, c in zip(med, cs, strict=True)]
            ax.errorbar([int(c) for c in cs], med, yerr=[lo, hi], marker="o", capsize=3,
                        label=system, color=COLOURS.get(system))
        conc = r["plan"]["concurrency"]
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(conc), [str(c) for c in conc])
        ax.set_yscale("log")

    _panels(out / "latency.png", list(r["commands"]),
            "Latency distribution per system (ECDF); left is faster",
            "latency per job, ms (log scale)", "% of jobs at most this long", ecdf)
    _panels(out / "throughput.png", list(r["plan"]["throughput_commands"]),
            "Throughput against concurrency (median, bars: min-max of the windows)",
            "concurrent clients", "jobs/s (log scale)", rates)


def write_outputs(r: dict[str, Any], out: Path) -> None:
    """results.json (samples and derived figures), results.md, latency.png, throughput.png."""
    r["latency_summary_ms"] = latency_summary(r["latency_s"])
    r["throughput_summary"] = throughput_summary(r["throughput_jobs_s"])
    r["cold_tail_summary_ms"] = {
        name: {"p50": statistics.median(v) * 1000, "p90": pct(v, .9) * 1000,
               "p99": pct(v, .99) * 1000, "p999": pct(v, .999) * 1000,
               "max": max(v) * 1000, "n": len(v)}
        for name, v in (r.get("cold_tail_s") or {}).items() if v}
    if r.get("http"):
        import bench_http

        r["http_summary"] = bench_http.summary(r["http"])
    if r.get("cluster"):
        import bench_cluster

        r["cluster_summary"] = bench_cluster.summary(r["cluster"])
    r["targets"] = targets(r)
    (out / "results.json").write_text(json.dumps(r, indent=1))
    (out / "results.md").write_text(markdown(r))
    plots(r, out)
