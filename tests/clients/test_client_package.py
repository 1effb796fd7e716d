"""The package's shape: it imports nothing of sandboxd but the protocol, it is typed, every
public name has a docstring with an example, and the examples that can run do."""

from __future__ import annotations

import ast
import doctest
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import sandboxd_client as sc
from sandboxd_client import _core, _errors, _jobs, _results, cli

PACKAGE = Path(sc.__file__).resolve().parent


def test_imports_only_the_protocol_of_sandboxd() -> None:
    for source in PACKAGE.glob("*.py"):
        tree = ast.parse(source.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top != "sandboxd", f"{source.name} imports {name}"


def test_importing_it_loads_neither_trio_nor_asyncio() -> None:
    """A blocking program pays for no event loop: the async backends load on first use."""
    code = (
        "import sys, sandboxd_client, sandboxd_client.cli; "
        "print(sorted(m for m in ('trio', 'asyncio', 'sandboxd') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_public_names_are_typed_and_documented_with_examples() -> None:
    assert (PACKAGE / "py.typed").exists()
    assert sorted(sc.__all__) == sorted(set(sc.__all__))
    own = [
        n
        for n in sc.__all__
        if getattr(getattr(sc, n), "__module__", "").startswith("sandboxd_client")
    ]
    for name in own:
        obj = getattr(sc, name)
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        doc = inspect.getdoc(obj) or ""
        assert doc, name
        if name not in ("JobOptions",):  # a TypedDict: the keywords themselves
            assert ">>>" in doc or "    " in doc.split("\n\n", 1)[-1], f"{name}: no example"
        if inspect.isclass(obj) and name in ("Client", "AsyncClient", "Job", "AsyncJob"):
            for meth_name, meth in vars(obj).items():
                if meth_name.startswith("_") or not callable(meth):
                    continue
                assert inspect.getdoc(meth), f"{name}.{meth_name}"
                sig = inspect.signature(meth)
                assert sig.return_annotation is not inspect.Signature.empty, meth_name


@pytest.mark.parametrize("module", [_results, _errors, _jobs, _core, cli])
def test_doctests(module: object) -> None:
    failures, tests = doctest.testmod(module, optionflags=doctest.ELLIPSIS)  # type: ignore[arg-type]
    assert failures == 0 and tests > 0
