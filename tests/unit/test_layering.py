"""Dependencies point one way (README.md, "Layout"), checked from the source.

``sandboxd_protocol`` imports nothing of ours; ``sandboxd_client`` imports only the protocol;
``sandboxd`` never imports ``sandboxd_client``; the kernel-facing code (isolation,
cgroups, the container and the zygote's server side) never imports trio at
module level, so the zygote (which must not run an event loop) stays small.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def imports(path: Path, top_level_only: bool = False) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def files(*parts: str) -> list[Path]:
    base = ROOT.joinpath(*parts)
    return sorted(base.rglob("*.py")) if base.is_dir() else [base]


@pytest.mark.parametrize("path", files("sandboxd_protocol"), ids=lambda p: p.name)
def test_protocol_imports_nothing_of_ours(path: Path):
    assert not imports(path) & {"sandboxd", "sandboxd_client", "trio"}


@pytest.mark.parametrize("path", files("sandboxd_client"), ids=lambda p: p.name)
def test_clients_import_only_the_protocol(path: Path):
    assert "sandboxd" not in imports(path)


@pytest.mark.parametrize("path", files("sandboxd"), ids=lambda p: str(p.relative_to(ROOT)))
def test_daemon_never_imports_clients(path: Path):
    assert "sandboxd_client" not in imports(path)


KERNEL_FACING = [*files("sandboxd", "isolation"), *files("sandboxd", "cgroups"),
                 *files("sandboxd", "native"), ROOT / "sandboxd" / "container.py",
                 ROOT / "sandboxd" / "zygote.py", ROOT / "sandboxd" / "channel.py"]


@pytest.mark.parametrize("path", KERNEL_FACING, ids=lambda p: str(p.relative_to(ROOT)))
def test_kernel_facing_code_does_not_import_trio_at_module_level(path: Path):
    assert "trio" not in imports(path, top_level_only=True)


def test_zygote_process_stays_free_of_trio():
    import subprocess
    import sys

    code = "import sys, sandboxd.zygote; print('trio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
