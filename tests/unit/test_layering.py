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
                 *files("sandboxd", "native"), ROOT / "sandboxd" / "spawn.py",
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


# ------------------------------------------------------------ the front doors
# Every front door is an adapter over the job service (docs/architecture.md): the
# service knows no transport, and a new front door is one new file that imports the
# service and never another front door.

TRANSPORTS = {"sandboxd_protocol", "socket", "msgpack", "hypercorn", "starlette", "redis",
              "coredis", "h11", "wsproto"}


def modules(path: Path) -> set[str]:
    """Every module ``path`` imports, by full dotted name (relative imports resolved)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


FRONT_DOORS = [p for p in files("sandboxd", "front") if p != ROOT / "sandboxd/front/__init__.py"
               and not (p.parent == ROOT / "sandboxd" / "front" and p.name.startswith("_"))]
# Underscore modules of sandboxd.front (``_wire``: the msgpack records in the service's
# terms) are shared by front doors and are none themselves: they import no front door.
SHARED = [p for p in files("sandboxd", "front")
          if p.parent == ROOT / "sandboxd" / "front" and p.name.startswith("_")
          and p.name != "__init__.py"]


def front_door(path: Path) -> str:
    """The front door a file belongs to: a module of sandboxd.front, or a package there."""
    return "sandboxd.front." + path.relative_to(ROOT / "sandboxd" / "front").parts[0].removesuffix(
        ".py")


def test_there_are_front_doors():
    assert any(p.name == "msgpack_api.py" for p in FRONT_DOORS)
    assert front_door(ROOT.joinpath("sandboxd", "front", "x", "y.py")) == "sandboxd.front.x"
    assert front_door(ROOT / "sandboxd/front/msgpack_api.py") == "sandboxd.front.msgpack_api"


@pytest.mark.parametrize("path", files("sandboxd", "service"), ids=lambda p: p.name)
def test_service_knows_no_transport(path: Path):
    found = modules(path)
    assert not {m.split(".")[0] for m in found} & TRANSPORTS
    assert not {m for m in found if m.startswith(("sandboxd.front", "sandboxd.daemon"))}


@pytest.mark.parametrize("path", FRONT_DOORS, ids=lambda p: p.name)
def test_front_door_uses_the_service_and_no_other_front_door(path: Path):
    found = modules(path)
    own = front_door(path)
    if path.parent == ROOT / "sandboxd" / "front":  # a package's own files may use each other
        assert "sandboxd.service" in found
    others = {m for m in found if m.startswith("sandboxd.front.")
              and m != own and not m.startswith(own + ".")
              and not m.split(".")[2].startswith("_")}
    assert not others, f"{path.name} imports another front door: {sorted(others)}"


@pytest.mark.parametrize("path", SHARED, ids=lambda p: p.name)
def test_shared_front_modules_import_no_front_door(path: Path):
    found = modules(path)
    assert not {m for m in found if m.startswith("sandboxd.front.")
                and not m.split(".")[2].startswith("_")}


# The programs that open the front doors (`sandboxd serve`, `sandboxd gateway`) and the
# command line stand above them.
CORE = [p for p in files("sandboxd") if not p.is_relative_to(ROOT / "sandboxd" / "front")
        and p.name not in ("daemon.py", "gateway.py", "cli.py")]


@pytest.mark.parametrize("path", CORE, ids=lambda p: str(p.relative_to(ROOT)))
def test_nothing_below_the_front_doors_imports_them(path: Path):
    found = modules(path)
    assert not {m for m in found if m.startswith(("sandboxd.front", "sandboxd.daemon"))}


def test_the_import_rules_see_imports():
    """The checks above would pass vacuously if ``modules`` found nothing."""
    found = modules(ROOT / "sandboxd" / "front" / "msgpack_api.py")
    assert {"sandboxd_protocol", "sandboxd.service", "trio"} <= found
    found = modules(ROOT / "sandboxd" / "service" / "__init__.py")
    assert "sandboxd.service._service" in found
