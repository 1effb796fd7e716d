"""The ``sandboxd`` command: ``serve``, ``run-once``, ``check-environment``, ``image``.

Bad flags or absurd limits end with a one-line message and exit code 2,
never a traceback. Exit codes of ``run-once`` (also used by ``sandboxctl
run``), in the habits of ``docker run`` and ``timeout``:

====================  ==========================================
the job's own code    ``ok`` and ``runtime_error`` with an exit code
128 + N               ``runtime_error`` by signal N
124                   ``time_limit`` (CPU or wall)
137                   ``memory_limit``
153                   ``output_limit``
125                   ``sandbox_error`` (sandboxd's own failure)
2                     bad flags or limits
====================  ==========================================
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from sandboxd.limits import DEFAULT, LimitError, Limits
from sandboxd_protocol import LIMITS, JobLimits, LimitValueError

EXIT_USAGE = 2
_STORE = "/var/lib/sandboxd-images"  # sandboxd.images.DEFAULT_STORE, without importing it
EXIT_TIME = 124
EXIT_SANDBOX = 125
EXIT_MEMORY = 137
EXIT_OUTPUT = 153


def exit_code_for(verdict: str, exit_code: int | None, signal: int | None) -> int:
    if verdict in ("ok", "runtime_error", "wrong_answer", "compile_error",
                   "presentation_error"):
        if signal:
            return 128 + signal
        return exit_code or (1 if verdict != "ok" else 0)
    return {"time_limit": EXIT_TIME, "memory_limit": EXIT_MEMORY,
            "output_limit": EXIT_OUTPUT}.get(verdict, EXIT_SANDBOX)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def add_limit_flags(p: argparse.ArgumentParser) -> None:
    """The limit flags, one per row of the table of limits, as ``sandboxctl run`` has them."""
    g = p.add_argument_group("limits (sizes take K, M, G suffixes)")
    for spec in LIMITS:
        g.add_argument(spec.flag(), dest=spec.name, metavar=spec.metavar,
                       help=f"{spec.help} (default {spec.show(getattr(DEFAULT, spec.name))})")


def limit_overrides(args: argparse.Namespace) -> JobLimits:
    """The limits given as flags (the others unset); a value that cannot be read names
    its flag. Ranges are ``Limits.merged``'s to check."""
    values: dict[str, float | int] = {}
    for spec in LIMITS:
        raw = getattr(args, spec.name, None)
        if raw is not None:
            try:
                values[spec.name] = spec.parse(raw)
            except LimitValueError as e:
                raise LimitError(f"{spec.flag()} {e.reason}") from None
    return JobLimits(**values)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="sandboxd", description="Run untrusted code in hardened containers.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    once = sub.add_parser("run-once", help="run one job in a fresh container, without a daemon")
    add_limit_flags(once)
    once.add_argument("--file", action="append", default=[], metavar="NAME=PATH",
                      help="copy host file PATH into /box/NAME (repeatable)")
    once.add_argument("--stdin", metavar="PATH", help="file to use as the job's stdin")
    once.add_argument("--env", action="append", default=[], metavar="K=V")
    once.add_argument("--seccomp", default="default", metavar="POLICY")
    once.add_argument("--memory-mode", choices=("peak", "address_space"), default="peak",
                      help="how --memory counts: peak (the cgroup's touched memory, default) "
                      "or address_space (also RLIMIT_AS per process, as isolate's --mem)")
    once.add_argument("--json", action="store_true", help="print one JSON object with the result")
    once.add_argument("--image", metavar="NAME", help="run on an image's root instead of the "
                      "host's files; its Env, WorkingDir and Entrypoint+Cmd are the defaults")
    once.add_argument("--image-store", metavar="DIR", help=f"image store (default {_STORE})")
    once.add_argument("argv", nargs=argparse.REMAINDER, help="-- ARGV...")

    serve = sub.add_parser("serve", help="run the daemon")
    serve.add_argument("--config", metavar="FILE", help="TOML configuration file")
    serve.add_argument("--socket", metavar="PATH", help="Unix socket to listen on")
    serve.add_argument("--http", metavar="HOST:PORT", help="also serve HTTP there (docs/http.md)")
    serve.add_argument("--redis", metavar="URL", help="also run jobs from the cluster's queue "
                       "at URL (redis://HOST:PORT/DB; docs/cluster.md)")
    serve.add_argument("--workers", metavar="N", type=int, help="supervisor processes sharing "
                       "the listening sockets (default 1; docs/configuration.md, \"Workers\")")

    gateway = sub.add_parser("gateway", help="serve HTTP (/v1, Judge0, Piston) over a cluster, "
                             "running nothing here (docs/cluster.md)")
    gateway.add_argument("--config", metavar="FILE", help="TOML configuration file")
    gateway.add_argument("--redis", metavar="URL", help="the cluster's Redis: "
                         "redis://HOST:PORT/DB")
    gateway.add_argument("--http", metavar="HOST:PORT", help="serve HTTP there")

    check = sub.add_parser("check-environment", help="report what the kernel offers")
    check.add_argument("--json", action="store_true")

    image = sub.add_parser("image", help="import, list, inspect and remove images")
    isub = image.add_subparsers(dest="image_command", required=True, parser_class=_Parser)
    store_help = f"image store directory (default {_STORE})"
    imp = isub.add_parser("import", help="import a docker save tarball or an OCI image layout")
    imp.add_argument("file", metavar="FILE", help="tar (maybe gzip/xz/bz2) or OCI layout directory")
    imp.add_argument("--name", metavar="NAME:TAG", help="name the image (the file must hold one)")
    imp.add_argument("--max-layer-size", metavar="SIZE", help="refuse larger layers (default 8G)")
    imp.add_argument("--max-files", metavar="N",
                     help="refuse layers of more entries (default 1000000)")
    ls = isub.add_parser("ls", help="list the images")
    ls.add_argument("--json", action="store_true")
    inspect = isub.add_parser("inspect", help="print an image's record as JSON")
    inspect.add_argument("ref", metavar="NAME", help="NAME[:TAG], id or id prefix")
    rm = isub.add_parser("rm", help="remove a name, or an image and the layers only it uses")
    rm.add_argument("ref", metavar="NAME", help="NAME[:TAG], id or id prefix")
    rm.add_argument("--profiles", metavar="DIR", help="profiles that may use the image "
                    "(default: the shipped ones)")
    for p_ in (imp, ls, inspect, rm):
        p_.add_argument("--store", metavar="DIR", help=store_help)
    return p


def _fail(message: str) -> int:
    sys.stderr.write(f"sandboxd: {message}\n")
    return EXIT_USAGE


def _cmd_run_once(args: argparse.Namespace) -> int:
    from sandboxd.container import RunStep
    from sandboxd.runonce import OneOffJob, run_once

    argv = list(args.argv)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv and not args.image:
        return _fail("run-once needs a command after --")
    try:
        limits: Limits = DEFAULT.merged(limit_overrides(args))
    except LimitError as e:
        return _fail(str(e))
    files: dict[str, bytes] = {}
    for spec in args.file:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            return _fail(f"--file wants NAME=PATH, not {spec!r}")
        if name.startswith("/") or ".." in name.split("/"):
            return _fail(f"--file name {name!r} must be relative and stay inside /box")
        try:
            with open(path, "rb") as f:
                files[name] = f.read()
        except OSError as e:
            return _fail(f"cannot read --file {path!r}: {e.strerror}")
    stdin = b""
    if args.stdin:
        try:
            with open(args.stdin, "rb") as f:
                stdin = f.read()
        except OSError as e:
            return _fail(f"cannot read --stdin {args.stdin!r}: {e.strerror}")
    env: dict[str, str] = {}
    for item in args.env:
        k, sep, v = item.partition("=")
        if not sep or not k:
            return _fail(f"--env wants K=V, not {item!r}")
        env[k] = v
    from sandboxd.isolation import seccomp

    if args.seccomp not in seccomp.POLICIES:
        return _fail(f"unknown seccomp policy {args.seccomp!r} "
                     f"(known: {', '.join(sorted(seccomp.POLICIES))})")
    step = RunStep(argv=argv, limits=limits, files=files, stdin=stdin, env=env,
                   address_space=limits.memory if args.memory_mode == "address_space" else None)
    job = OneOffJob(step=step, seccomp_policy=args.seccomp)
    if args.image:
        from sandboxd.images import ImageError, Store

        try:
            image = Store(args.image_store).resolve(args.image)
        except ImageError as e:
            return _fail(str(e))
        step.argv = step.argv or list(image.config.argv())
        step.env = {**image.config.environ(), **env}
        step.cwd = image.config.workdir or step.cwd
        job.image, job.image_store = image.id, args.image_store or ""
    if not step.argv:
        return _fail("run-once needs a command after -- (the image has no Entrypoint or Cmd)")
    result = run_once(job)
    if step.address_space is not None:
        from sandboxd.result import judged

        result = judged(result, address_space=True)
    if args.json:
        sys.stdout.write(json.dumps(result.as_json()) + "\n")
    else:
        sys.stdout.buffer.write(result.stdout)
        sys.stdout.flush()
        sys.stderr.buffer.write(result.stderr)
        sys.stderr.write(summary_line(result.as_dict()) + "\n")
    return exit_code_for(result.verdict, result.exit_code, result.signal)


def _tqdm_progress() -> tuple[Any, Any]:
    """A progress callback for ``import_image`` drawing a tqdm bar on a terminal (stderr),
    silent otherwise; and a function that closes the bar."""
    from tqdm import tqdm

    bar: list[Any] = []

    def progress(done: int, total: int, what: str) -> None:
        if not bar:
            bar.append(tqdm(total=total, desc=what, unit="B", unit_scale=True,
                            unit_divisor=1024, disable=None, file=sys.stderr, leave=False))
        bar[0].set_description(what, refresh=False)
        bar[0].update(done - bar[0].n)

    def close() -> None:
        if bar:
            bar[0].close()

    return progress, close


def _cmd_image(args: argparse.Namespace) -> int:
    from sandboxd.images import ImageError, ImportLimits, Store, import_image
    from sandboxd.limits import parse_size

    store = Store(args.store)
    try:
        if args.image_command == "import":
            try:
                limits = ImportLimits(
                    **({"max_layer_size": parse_size(args.max_layer_size)}
                       if args.max_layer_size else {}),
                    **({"max_files": int(args.max_files)} if args.max_files else {}))
            except (LimitError, ValueError) as e:
                return _fail(f"bad limit: {e}")
            progress, close = _tqdm_progress()
            try:
                try:
                    images = import_image(store, args.file, name=args.name, limits=limits,
                                          progress=progress)
                finally:
                    close()
            except KeyboardInterrupt:
                sys.stderr.write("sandboxd: import interrupted; the store is unchanged\n")
                return 130
            for img in images:
                dropped = sum(x.dropped for x in img.layers)
                stripped = sum(x.setid_stripped for x in img.layers)
                notes = (f", {dropped} device node(s) dropped" if dropped else "") + (
                    f", setuid/setgid removed from {stripped} file(s)" if stripped else "")
                print(f"imported {', '.join(img.names) or '<no name>'} {img.id} "
                      f"({len(img.layers)} layers, {img.size / 1048576:.1f} MiB{notes})")
        elif args.image_command == "ls":
            rows = store.images()
            if args.json:
                print(json.dumps([img.to_json() for img in rows]))
                return 0
            print(f"{'NAME':40} {'ID':12} {'LAYERS':>6} {'SIZE':>10}  CREATED")
            for img in rows:
                for name in img.names or ("<none>",):
                    print(f"{name:40} {img.short_id:12} {len(img.layers):6} "
                          f"{img.size / 1048576:9.1f}M  {img.created[:19]}")
        elif args.image_command == "inspect":
            img = store.resolve(args.ref)
            doc = img.to_json()
            doc["store"] = store.path
            doc["layer_dirs"] = [store.layer_path(x.diff_id) for x in img.layers]
            print(json.dumps(doc, indent=2))
        elif args.image_command == "rm":
            from sandboxd.profiles import ProfileError, load_dir

            try:
                profiles = load_dir(args.profiles or None, image_store=store.path)
            except ProfileError as e:
                return _fail(f"cannot check the profiles: {e}")
            users = [(f"profile {p.name}", p.image) for p in profiles.values() if p.image]
            done = store.remove(args.ref, users)
            if done.untagged:
                print(f"untagged {done.untagged}")
            else:
                print(f"deleted {done.image.id} ({done.layers_removed} layers removed, "
                      f"{done.layers_kept} shared with other images kept)")
    except ImageError as e:
        return _fail(f"image: {e}")
    except OSError as e:
        return _fail(f"image: {e.filename or store.path}: {e.strerror}")
    return 0


def summary_line(r: dict[str, Any]) -> str:
    extra = f" ({r['reason']})" if r.get("reason") else ""
    return (f"sandboxd: {r['verdict']}{extra}  cpu {r['cpu_time']:.3f}s  "
            f"wall {r['wall_time']:.3f}s  mem {r['memory_peak'] / 1048576:.1f}MiB")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "run-once":
        return _cmd_run_once(args)
    if args.command == "image":
        return _cmd_image(args)
    if args.command == "check-environment":
        from sandboxd.checkenv import main as check_main

        return check_main(json_output=args.json)
    if args.command == "serve":
        from sandboxd.daemon import main as serve_main

        return serve_main(config_path=args.config, socket_path=args.socket, http=args.http,
                          redis=args.redis, workers=args.workers)
    if args.command == "gateway":
        from sandboxd.gateway import main as gateway_main

        return gateway_main(config_path=args.config, http=args.http, redis=args.redis)
    return _fail(f"unknown command {args.command!r}")


if __name__ == "__main__":
    sys.exit(main())
