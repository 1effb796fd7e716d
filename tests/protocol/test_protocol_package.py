"""The package's shape: its imports, its public names, and a document that covers it."""

from __future__ import annotations

import ast
import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import sandboxd_protocol as p
from sandboxd_protocol._schema import MESSAGES

PACKAGE = Path(p.__file__).resolve().parent
DOC = (PACKAGE / "PROTOCOL.md").read_text(encoding="utf-8")

ALLOWED_IMPORTS = {
    "__future__",
    "collections",
    "dataclasses",
    "enum",
    "math",
    "re",
    "struct",
    "typing",
    "msgpack",
}


def test_package_imports_only_stdlib_and_msgpack() -> None:
    """No I/O, no trio, nothing of ours: the daemon and every client can use it."""
    for source in PACKAGE.glob("*.py"):
        tree = ast.parse(source.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: within the package
                    continue
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] in ALLOWED_IMPORTS, f"{source.name} imports {name}"


def test_importing_the_package_pulls_in_no_io_modules() -> None:
    code = (
        "import sys, sandboxd_protocol; "
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('trio', 'socket', 'asyncio', 'selectors', 'threading', 'sandboxd', 'sandboxd_client')]; "
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_public_names() -> None:
    assert sorted(p.__all__) == sorted(set(p.__all__))
    for name in p.__all__:
        assert hasattr(p, name), name
    assert (PACKAGE / "py.typed").exists()


def test_events_are_frozen_dataclasses() -> None:
    for cls in p.MESSAGE_TYPES.values():
        assert dataclasses.is_dataclass(cls)
        assert cls.__dataclass_params__.frozen  # type: ignore[attr-defined]


def test_every_message_field_and_code_is_documented() -> None:
    for record in MESSAGES:
        assert f"`{record.type_name}`" in DOC, record.type_name
    records = [m for m in MESSAGES]
    seen: set[int] = set()
    while records:
        record = records.pop()
        if id(record) in seen:
            continue
        seen.add(id(record))
        for name, kind, _ in record.fields:
            assert f"`{name}`" in DOC, f"{record.cls.__name__}.{name}"
            for inner in (kind, getattr(kind, "item", None)):
                if inner is not None and hasattr(inner, "fields"):
                    records.append(inner)
    for code in p.ErrorCode:
        assert re.search(rf"\| `{code.value}` \|", DOC), code.value
    for name in p.VERDICTS + p.COMPARE_MODES + p.STREAMS + p.JOB_STATES:
        assert f"`{name}`" in DOC, name
    for field in dataclasses.fields(p.SizeLimits):
        assert f"| `{field.name}` |" in DOC, field.name


def test_every_vector_is_listed_in_the_document() -> None:
    for vector in sorted((PACKAGE / "vectors").glob("*.json")):
        _number, _, name = vector.stem.partition("-")
        assert f"`{vector.stem}`" in DOC or (name.startswith("error-") and "error-*" in DOC)
