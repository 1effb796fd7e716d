"""The table of limits is the one list of them, and its policy rows say truly what enforces each.

``sandboxd_protocol.LIMITS`` owns each limit (name, unit, wire range, help,
parsing); ``sandboxd.limits.POLICY`` adds sandboxd's default, minimum,
maximum and enforcing mechanism. These tests check that the two agree, that
everything else is derived from them (no other source file lists the names),
that each row's mechanism is the one the code uses, and that PROTOCOL.md's
table is the protocol's.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import math
import re
import resource
from pathlib import Path

import pytest

import sandboxd_client as sc
import sandboxd_protocol as proto
from sandboxd import jobs
from sandboxd.cli import add_limit_flags, limit_overrides
from sandboxd.isolation import mounts, rlimits
from sandboxd.limits import DEFAULT, MAXIMUM, POLICY, LimitError, Limits, Mechanism
from sandboxd.profiles import Profile
from sandboxd_client import cli as client_cli

ROOT = Path(__file__).resolve().parents[2]
NAMES = [spec.name for spec in proto.LIMITS]


# -- one table, and everything built from it ---------------------------------------------


def test_policy_has_a_row_for_every_limit_and_no_other() -> None:
    assert list(POLICY) == NAMES


@pytest.mark.parametrize("spec", proto.LIMITS, ids=lambda s: s.name)
def test_policy_fits_the_wire_and_the_unit(spec: proto.LimitSpec) -> None:
    policy = POLICY[spec.name]
    for value in (policy.default, policy.minimum, policy.maximum):
        assert type(value) is spec.type or (spec.type is float and type(value) is int), value
        above_lo = value > spec.lo if spec.lo_open else value >= spec.lo
        assert above_lo and value <= spec.hi, (spec.name, value, spec.range_text)
    assert policy.minimum <= policy.default <= policy.maximum
    assert policy.enforced_by, f"{spec.name}: nothing enforces it"


def test_records_are_built_from_the_table() -> None:
    for record in (proto.JobLimits, Limits, sc.Limits):
        assert [f.name for f in dataclasses.fields(record)] == NAMES, record
    assert dataclasses.astuple(proto.JobLimits()) == (None,) * len(NAMES)
    assert Limits(**{n: p.default for n, p in POLICY.items()}) == DEFAULT
    assert MAXIMUM.to_wire() == proto.JobLimits(**{n: p.maximum for n, p in POLICY.items()})
    assert [name for name, _, _ in _schema_fields()] == NAMES


def _schema_fields() -> tuple[tuple[str, object, bool], ...]:
    from sandboxd_protocol._schema import JOB_LIMITS

    return JOB_LIMITS.fields


def test_both_command_lines_have_a_flag_per_limit() -> None:
    p = argparse.ArgumentParser()
    add_limit_flags(p)
    flags = {s for a in p._actions for s in a.option_strings} - {"-h", "--help"}
    assert flags == {spec.flag() for spec in proto.LIMITS}
    run = next(a for a in client_cli._parser()._actions
               if isinstance(a, argparse._SubParsersAction)).choices["run"]
    theirs = {s for a in run._actions for s in a.option_strings}
    assert flags <= theirs
    assert {spec.flag("compile-") for spec in proto.LIMITS} <= theirs


def test_flags_parse_each_unit() -> None:
    p = argparse.ArgumentParser()
    add_limit_flags(p)
    got = limit_overrides(p.parse_args(["--cpu-time", "1.5", "--memory", "64M", "--pids", "8"]))
    assert got == proto.JobLimits(cpu_time=1.5, memory=64 << 20, pids=8)
    assert DEFAULT.merged(got).memory == 64 << 20
    with pytest.raises(LimitError, match=r"^--open-files must be an integer, not 'x'$"):
        limit_overrides(p.parse_args(["--open-files", "x"]))


@pytest.mark.parametrize(("spec", "raw", "value"), [
    (proto.LIMITS_BY_NAME["cpu_time"], "0.25", 0.25),
    (proto.LIMITS_BY_NAME["cpu_time"], 2, 2.0),
    (proto.LIMITS_BY_NAME["memory"], "1.5K", 1536),
    (proto.LIMITS_BY_NAME["memory"], 4096.0, 4096),
    (proto.LIMITS_BY_NAME["pids"], "12", 12),
])
def test_parse(spec: proto.LimitSpec, raw: object, value: float) -> None:
    parsed = spec.parse(raw)
    assert parsed == value and type(parsed) is spec.type


@pytest.mark.parametrize(("name", "raw"), [("cpu_time", True), ("memory", "lots"),
                                            ("pids", 1.5), ("stack", None), ("open_files", "")])
def test_parse_refuses(name: str, raw: object) -> None:
    with pytest.raises(proto.LimitValueError) as info:
        proto.LIMITS_BY_NAME[name].parse(raw)
    assert info.value.limit == name and str(info.value).startswith(f"limit {name} must be")


def test_typed_limits_travel_without_a_dict() -> None:
    """The wire's JobLimits goes into a JobSpec as it is and is merged once; the result
    is the same as from the friendly mapping a profile's TOML gives."""
    wire = proto.JobLimits(cpu_time=1.5, memory=64 << 20)
    assert DEFAULT.merged(wire) == DEFAULT.merged({"cpu_time": "1.5", "memory": "64M"})
    spec = jobs.JobSpec(profile=Profile(name="p"), files={}, limits=wire,
                        tests=[jobs.TestSpec(limits=proto.JobLimits(pids=2))])
    jobs.validate(spec)
    with pytest.raises(jobs.JobError, match=r"tests\[0\]: limit pids=0 is outside"):
        jobs.validate(dataclasses.replace(spec, tests=[jobs.TestSpec(
            limits=proto.JobLimits(pids=0))]))
    # True == 1 and hashes alike: a cached merge of 1 must not let True through
    assert DEFAULT.merged(proto.JobLimits(pids=1)).pids == 1
    with pytest.raises(LimitError, match="boolean"):
        DEFAULT.merged(proto.JobLimits(pids=True))


# -- the one list ------------------------------------------------------------------------

TABLES = {"sandboxd_protocol/_job_limits.py", "sandboxd/limits.py"}
PACKAGES = ("sandboxd", "sandboxd_protocol", "sandboxd_client")
TOGETHER = 4
"""This many limit names in one list, one class body, one call or one signature make a
list of the limits; fewer are code about particular limits (``CgroupLimits(memory=...,
pids=...)``). Tests, benchmarks and docs may list them."""


def _lists(path: Path) -> list[tuple[int, list[str]]]:
    """The places (line, names) where this file spells out ``TOGETHER`` or more limit
    names as data: string constants (``"memory"``, ``"--cpu-time"``) or rows
    (``("memory", ...)``, ``Row("memory", ...)``) in one tuple, list, set or dict;
    fields of one class body; keywords of one call; parameters and string constants
    of one function (``add_argument("--memory")`` four times). Reading an attribute
    (``limits.memory``) uses a limit, it does not list it."""
    flags = {spec.flag(): spec.name for spec in proto.LIMITS}

    def text(node: ast.AST | None) -> str | None:
        if isinstance(node, ast.Call) and node.args:  # a row: Row("memory", ...)
            node = node.args[0]
        elif isinstance(node, ast.Tuple | ast.List) and node.elts:  # ("memory", ...)
            node = node.elts[0]
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return flags.get(node.value, node.value)
        return None

    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Tuple | ast.List | ast.Set):
            names = [text(e) for e in node.elts]
        elif isinstance(node, ast.Dict):
            names = [text(k) for k in node.keys]
        elif isinstance(node, ast.ClassDef):
            names = [i.target.id for i in node.body
                     if isinstance(i, ast.AnnAssign) and isinstance(i.target, ast.Name)]
        elif isinstance(node, ast.Call):
            names = [k.arg for k in node.keywords] + [text(a) for a in node.args]
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            a = node.args
            names = [x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs)]
            names += [text(x) for x in ast.walk(node) if isinstance(x, ast.Constant)]
        else:
            continue
        listed = sorted(set(names) & set(NAMES))
        if len(listed) >= TOGETHER:
            found.append((getattr(node, "lineno", 0), listed))
    return found


# Other systems' APIs map their own fields onto our limits (and their result fields share
# our names): a translation of someone else's list, not a list of ours to derive.
TRANSLATIONS = {"sandboxd/front/http/judge0.py", "sandboxd/front/http/piston.py"}


def test_no_source_file_but_the_tables_lists_the_limits() -> None:
    listed = {}
    for top in PACKAGES:
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel not in TABLES and rel not in TRANSLATIONS and _lists(path):
                listed[rel] = _lists(path)
    assert listed == {}, "derive these from sandboxd_protocol.LIMITS instead"
    for table in TABLES:  # the check sees a list where there is one
        assert any(names == sorted(NAMES) for _, names in _lists(ROOT / table)), table


def test_protocol_md_lists_the_table() -> None:
    doc = (ROOT / "sandboxd_protocol" / "PROTOCOL.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(\w+)` \| (float|int) \| ([\[(][^|]*) \| ([^|]*) \|$", doc, re.M)
    table = [(name, kind, rng.strip(), meaning.strip().replace("`", ""))
             for name, kind, rng, meaning in rows if name in proto.LIMITS_BY_NAME]
    assert table == [(s.name, s.type.__name__, s.range_text, s.help) for s in proto.LIMITS]


# -- each mechanism is the one the code uses ---------------------------------------------

# Where each mechanism takes its values: a call (its arguments) or a function (its body)
# in which the step's ``limits.<name>`` is read.
LEVERS: dict[Mechanism, list[tuple[str, str, str]]] = {
    Mechanism.CGROUP: [("sandboxd/container.py", "call", "CgroupLimits")],
    Mechanism.RLIMIT: [("sandboxd/container.py", "call", "Rlimits")],
    Mechanism.MOUNT_SIZE: [("sandboxd/jobs.py", "call", "ContainerSpec"),
                           ("sandboxd/runonce.py", "call", "ContainerSpec")],
    Mechanism.OUTPUT_CAP: [("sandboxd/container.py", "call", "_Capture")],
    Mechanism.WATCHDOG: [("sandboxd/container.py", "def", "_watchdog"),
                         ("sandboxd/container.py", "def", "_supervise")],
}


def _limits_read(path: str, kind: str, name: str) -> set[str]:
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
    read: set[str] = set()
    for node in ast.walk(tree):
        if kind == "call" and isinstance(node, ast.Call):
            f = node.func
            if (f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)) != name:
                continue
        elif not (kind == "def" and isinstance(node, ast.AsyncFunctionDef | ast.FunctionDef)
                  and node.name == name):
            continue
        for sub in ast.walk(node):
            if (isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name)
                    and sub.value.id == "limits" and sub.attr in POLICY):
                read.add(sub.attr)
    assert read or kind == "def", f"no {name}(...limits.x...) in {path}"
    return read


@pytest.mark.parametrize("mechanism", list(Mechanism), ids=lambda m: m.name)
def test_each_mechanism_enforces_exactly_the_limits_said(mechanism: Mechanism) -> None:
    said = {name for name, p in POLICY.items() if mechanism in p.enforced_by}
    read = [_limits_read(path, kind, name) for path, kind, name in LEVERS[mechanism]]
    if mechanism is Mechanism.MOUNT_SIZE:  # two places make containers: each sizes both
        assert all(r == said for r in read), read
    assert set().union(*read) == said


def test_rlimits_reach_setrlimit() -> None:
    """Each rlimit the supervisor builds (container.py) becomes a (resource, value) pair,
    and the native job process applies the pairs with setrlimit before execve."""
    source = (ROOT / "sandboxd" / "container.py").read_text(encoding="utf-8")
    call = re.search(r"rlimits\.Rlimits\(([^)]*)\)", source)
    assert call
    for keyword, attr in re.findall(r"(\w+)=limits\.(\w+)", call.group(1)):
        value = 7 << 20
        pairs = dict(rlimits.Rlimits(**{keyword: value}).pairs())
        expected = math.ceil(value) + 1 if attr == "cpu_time" else value
        assert expected in pairs.values(), (keyword, pairs)
        assert set(pairs) - {resource.RLIMIT_CORE, resource.RLIMIT_RTPRIO, resource.RLIMIT_NICE}
    assert "setrlimit(" in (ROOT / "sandboxd" / "native" / "jobproc.c").read_text()


def test_mount_sizes_size_the_tmpfs() -> None:
    lim = DEFAULT.merged({"box_size": "3M", "tmp_size": "5M"})
    plan = jobs.container_spec(Profile(name="p"), lim).mount_plan()
    sizes = {step.path: step.size for step in plan.steps if isinstance(step, mounts.Tmpfs)}
    assert (sizes["/box"], sizes["/tmp"]) == (3 << 20, 5 << 20)


def test_cgroup_limits_are_written_by_both_backends() -> None:
    for backend in ("v1.py", "v2.py"):
        source = (ROOT / "sandboxd" / "cgroups" / backend).read_text(encoding="utf-8")
        for name, policy in POLICY.items():
            if Mechanism.CGROUP in policy.enforced_by:
                assert f"limits.{name}" in source, (backend, name)
