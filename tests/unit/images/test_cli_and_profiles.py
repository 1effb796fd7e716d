"""The image commands (one-line errors, exit 2, quiet off a terminal), profiles that name an
image (resolution and the Env/WorkingDir/Cmd fallbacks), and the image mount plan as data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sandboxd import cli, spawn
from sandboxd.images import DEFAULT_STORE, Store, import_image
from sandboxd.isolation import mounts
from sandboxd.profiles import ProfileError, load_dir, load_file
from sandboxd.spawn import ContainerSpec
from sandboxd_testing.images import BuiltImage, Entry, config, write_docker_save, write_layer


def sandboxd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sandboxd", *args], capture_output=True,
                          text=True, timeout=60)


@pytest.fixture
def image_file(work: Path) -> Path:
    base = write_layer(work / "base.tar", [Entry("etc/motd", data=b"hi\n"),
                                           Entry("bin/tool", data=b"x", mode=0o4755)])
    top = write_layer(work / "top.tar", [Entry("srv/app", data=b"app\n")])
    img = BuiltImage("tools:1", [base, top],
                     config([base, top], env=["PATH=/opt/bin:/bin", "MODE=image"],
                            entrypoint=["/bin/tool"], cmd=["--serve"], workdir="/srv"))
    return write_docker_save(work / "tools.tar", [img])


def test_cli_import_ls_inspect_rm(store_dir: Path, image_file: Path) -> None:
    s = ["--store", str(store_dir)]
    r = sandboxd("image", "import", str(image_file), *s)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("imported tools:1 sha256:")
    assert "setuid/setgid removed from 1 file(s)" in r.stdout
    assert r.stderr == ""  # no progress bar when stderr is not a terminal
    r = sandboxd("image", "ls", *s)
    assert r.returncode == 0 and "tools:1" in r.stdout.splitlines()[1]
    rows = json.loads(sandboxd("image", "ls", "--json", *s).stdout)
    assert [row["names"] for row in rows] == [["tools:1"]]
    doc = json.loads(sandboxd("image", "inspect", "tools:1", *s).stdout)
    assert doc["config"]["WorkingDir"] == "/srv"
    assert all(Path(d).is_dir() for d in doc["layer_dirs"])
    r = sandboxd("image", "rm", "tools:1", *s)
    assert r.returncode == 0 and r.stdout.startswith("deleted sha256:")
    assert "2 layers removed" in r.stdout
    assert Store(str(store_dir)).images() == []


@pytest.mark.parametrize("args,message", [
    (["image", "import", "/nonexistent.tar"], "cannot read /nonexistent.tar"),
    (["image", "import", "{file}", "--name", "NO WAY"], "not an image name"),
    (["image", "import", "{file}", "--max-layer-size", "lots"], "bad limit"),
    (["image", "inspect", "nope:1"], "no image 'nope:1'"),
    (["image", "rm", "nope:1"], "no image 'nope:1'"),
    (["image", "import", "{junk}"], "not a tar archive"),
    (["run-once", "--image", "nope:1", "--", "/bin/true"], "no image 'nope:1'"),
])
def test_cli_errors_are_one_line_and_exit_2(store_dir: Path, image_file: Path, work: Path,
                                            args: list[str], message: str) -> None:
    import_image(Store(str(store_dir)), str(image_file))
    (work / "junk").write_text("junk\n" * 200)
    args = [a.format(file=image_file, junk=work / "junk") for a in args]
    if args[0] == "run-once":
        args[1:1] = ["--image-store", str(store_dir)]
    else:
        args += ["--store", str(store_dir)]
    r = sandboxd(*args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.count("\n") == 1 and message in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_cli_rm_refused_while_a_profile_uses_it(store_dir: Path, image_file: Path,
                                                work: Path) -> None:
    import_image(Store(str(store_dir)), str(image_file))
    (work / "profiles").mkdir()
    (work / "profiles/web.toml").write_text('name = "web"\nimage = "tools:1"\n')
    r = sandboxd("image", "rm", "tools:1", "--store", str(store_dir),
                 "--profiles", str(work / "profiles"))
    assert r.returncode == 2 and "in use by profile web" in r.stderr
    assert Store(str(store_dir)).resolve("tools:1")


def test_default_store_is_documented_once() -> None:
    assert cli._STORE == DEFAULT_STORE


# ------------------------------------------------------------------ profiles


def test_profile_image_fills_in_what_the_profile_leaves_out(store_dir: Path,
                                                            image_file: Path,
                                                            work: Path) -> None:
    (got,) = import_image(Store(str(store_dir)), str(image_file))
    p = work / "p.toml"
    p.write_text('name = "tools"\nimage = "tools:1"\nenv = { MODE = "profile" }\n')
    prof = load_file(p, image_store=str(store_dir))
    assert prof.unavailable is None
    assert prof.image_id == got.id and prof.image_store == str(store_dir)
    assert prof.run == ("/bin/tool", "--serve")
    assert prof.env == {"PATH": "/opt/bin:/bin", "MODE": "profile"}
    assert prof.workdir == "/srv"
    p.write_text('name = "tools"\nimage = "tools:1"\nrun = ["/bin/sh", "{entry}"]\n'
                 'workdir = "/box"\n')
    prof = load_file(p, image_store=str(store_dir))
    assert (prof.run, prof.workdir) == (("/bin/sh", "{entry}"), "/box")


def test_profile_with_a_missing_image_is_unavailable(store_dir: Path, work: Path) -> None:
    (work / "p.toml").write_text('name = "gone"\nimage = "gone:1"\n')
    prof = load_dir(work, image_store=str(store_dir))["gone"]
    assert prof.unavailable and "gone:1" in prof.unavailable
    assert prof.image_id == ""


@pytest.mark.parametrize("text,match", [
    ('name = "x"\n', "run: required key is missing"),
    ('name = "x"\nimage = ""\n', "image: must not be empty"),
    ('name = "x"\nimage = "a:1"\nworkdir = "rel"\n', "workdir: must be an absolute path"),
    ('name = "x"\nimage = 3\n', "image: must be a str"),
])
def test_profile_image_keys_are_checked(work: Path, text: str, match: str) -> None:
    (work / "p.toml").write_text(text)
    with pytest.raises(ProfileError, match=match):
        load_file(work / "p.toml", image_store=str(work / "none"))


def test_shipped_profiles_still_load_without_a_store() -> None:
    profiles = load_dir()
    assert all(not p.image and p.workdir == "/box" for p in profiles.values())


# ------------------------------------------------------------------ the plan


def test_spec_wire_roundtrip_keeps_the_image() -> None:
    spec = ContainerSpec(slot=3, box_size=1 << 20, tmp_size=1 << 20, image="sha256:" + "a" * 64,
                         image_store="/srv/images")
    assert ContainerSpec.from_wire(spec.to_wire()) == spec
    old = spec.to_wire()
    del old["image"], old["image_store"]
    assert ContainerSpec.from_wire(old).image == ""


def test_image_plan(store_dir: Path, image_file: Path) -> None:
    (got,) = import_image(Store(str(store_dir)), str(image_file))
    spec = ContainerSpec(slot=0, box_size=1 << 20, tmp_size=2 << 20, image=got.id,
                         image_store=str(store_dir), extra_binds=(("/etc/hostname", "/x"),))
    plan = spec.mount_plan()
    ov = plan.overlay
    assert ov is not None
    assert ov.lower == tuple(x.hex for x in reversed(got.layers))  # top layer first
    assert ov.layers_dir == str(store_dir / "layers")
    assert ov.label == f"sandboxd-image:{got.hex}" and ov.dirs == ("/srv",)
    kinds = [(type(s).__name__, getattr(s, "path", getattr(s, "target", ""))) for s in plan.steps]
    assert kinds == [("File", "/etc/hostname"), ("File", "/etc/hosts"), ("Bind", "/x"),
                     ("Tmpfs", "/box"), ("Tmpfs", "/tmp"), ("Dev", "/dev"), ("Proc", "/proc")]
    host = ContainerSpec(slot=0, box_size=1 << 20, tmp_size=2 << 20).mount_plan()
    assert host.overlay is None and spawn._mount_plan.cache_info().currsize >= 2
    assert plan.steps[-4:] == host.steps[-4:]


def test_repeated_layers_are_mounted_once_at_their_topmost_place() -> None:
    from sandboxd.images import Image, LayerInfo

    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    img = Image("sha256:" + "c" * 64, (), (LayerInfo(a), LayerInfo(b), LayerInfo(a)))
    assert img.lower_layers() == ("a" * 64, "b" * 64)
    assert mounts.OverlayRoot("/x", img.lower_layers()).lower[0] == "a" * 64
