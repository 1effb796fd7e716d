"""The daemon's configuration: defaults, then a TOML file, then ``SANDBOXD_*`` variables.

Strategy (isolate's): parsed once, at start; an unknown key is an error that
names the file and line, a bad value an error that names the key and what is
allowed. The environment wins over the file, so a container orchestrator can
override one key without writing a file. Every key is listed in ``KEYS`` with
its type and a line of documentation, from which docs/configuration.md is
written.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any

DEFAULT_SOCKET = "/run/sandboxd/sandboxd.sock"
DEFAULT_STATE_DIR = "/run/sandboxd"
MAX_WORKERS = 64


class ConfigError(ValueError):
    """The configuration is invalid; the message names the file, line and key."""


@dataclass(frozen=True, slots=True)
class Config:
    socket: str = DEFAULT_SOCKET
    socket_mode: int = 0o660
    socket_group: str = ""
    state_dir: str = DEFAULT_STATE_DIR
    instance: str = "main"
    tcp: str = ""  # "127.0.0.1:7070": TCP listening, only with a token
    token: str = ""
    concurrency: int = field(default_factory=lambda: os.cpu_count() or 1)
    workers: int = 1  # supervisor processes sharing the listeners (sandboxd/workers.py)
    queue_length: int = 64
    pool_size: int = 2
    pool_profiles: tuple[str, ...] = ()  # warm from the start; others once first used
    profiles_dir: str = ""  # "" = the profiles shipped with sandboxd
    max_frame: int = 64 << 20
    max_buffered: int = 0  # 0: four frames' worth
    max_connections: int = 256
    cgroup_favordynmods: bool = True  # sandboxd/cgroups/_dynmods.py: moves that never wait
    handshake_timeout: float = 10.0
    idle_timeout: float = 300.0
    grace_period: float = 10.0
    log_level: str = "info"
    # The HTTP front door (docs/http.md): off unless `http` names an address.
    http: str = ""  # "127.0.0.1:8080"
    http_tokens: tuple[str, ...] = ()
    http_loopback_open: bool = False
    http_max_body: int = 64 << 20
    http_max_buffered: int = 0  # 0: four bodies' worth
    http_max_connections: int = 256
    http_token_concurrency: int = 64
    http_request_timeout: float = 30.0
    http_keepalive_timeout: float = 5.0
    http_send_timeout: float = 60.0
    http_ws_buffer: int = 4 << 20
    http_results_kept: int = 1000
    http_result_ttl: float = 600.0
    metrics_token: str = ""
    # The Judge0-compatible API (docs/http.md).
    judge0_batch_size: int = 20
    judge0_callbacks: tuple[str, ...] = ()
    redis: str = ""  # "redis://HOST:PORT/DB": also take jobs from the cluster's queue
    node_id: str = ""  # "": <hostname>-<instance>
    redis_claim_idle: float = 30.0
    redis_max_deliveries: int = 3
    redis_result_ttl: float = 3600.0
    # CI jobs (docs/ci.md): read-only caches, the workspace's and the artifacts' caps.
    caches: tuple[tuple[str, str], ...] = ()  # [caches] name = "/host/dir"
    max_workspace: int = 1 << 30
    workspace_max_files: int = 100_000
    artifacts_max_files: int = 1000
    artifacts_max_bytes: int = 16 << 20
    # Network egress (sandboxd/egress.py): the destinations jobs may be allowed; none by default.
    egress_allow: tuple[str, ...] = ()
    egress_hosts: tuple[str, ...] = ()


KEYS: dict[str, tuple[type, str]] = {
    "socket": (str, "Unix socket path the daemon listens on."),
    "socket_mode": (int, "permissions of the socket (default 0o660)."),
    "socket_group": (str, "group that owns the socket, so its members may submit jobs."),
    "state_dir": (str, "directory for the daemon's state (pid file); created if missing."),
    "instance": (str, "name of this daemon: its cgroups are sandboxd-<instance>."),
    "tcp": (str, "HOST:PORT to also listen on TCP; requires token. Off when empty."),
    "token": (str, "shared secret TCP clients must present in their hello."),
    "concurrency": (int, "jobs run at once (default: number of CPUs)."),
    "workers": (int, "supervisor processes sharing the listening sockets, each with its own "
                     "zygote, pool and cgroups (1: one process, the default); concurrency, "
                     "queue_length and the CPUs are divided among them (docs/configuration.md, "
                     "\"Workers\")."),
    "queue_length": (int, "jobs that may wait; past it a submission is answered busy."),
    "pool_size": (int, "warm containers kept per profile in use."),
    "pool_profiles": (list, "profiles whose pools are warmed at start."),
    "profiles_dir": (str, "directory of *.toml profiles (default: the shipped ones)."),
    "max_frame": (int, "largest protocol frame accepted, in bytes."),
    "max_buffered": (int, "bytes of unfinished frames all connections may hold together "
                          "(0: 4 x max_frame); past it, the connection adding to it is refused "
                          "busy."),
    "max_connections": (int, "connections served at once; more are refused."),
    "cgroup_favordynmods": (bool, "put the kernel in its cgroup favordynmods mode at start "
                                  "(root only), so that moving a job process into its "
                                  "cgroup never waits for an RCU grace period; host-wide "
                                  "until reboot (docs/isolation.md, \"favordynmods\")."),
    "handshake_timeout": (float, "seconds a new connection has to say hello."),
    "idle_timeout": (float, "seconds a connection with no job in flight may stay silent."),
    "grace_period": (float, "seconds running jobs get to finish after SIGTERM."),
    "log_level": (str, "debug, info, warning or error."),
    "http": (str, "HOST:PORT of the HTTP front door (docs/http.md); port 0 picks a free one. "
                  "Off when empty."),
    "http_tokens": (list, "bearer tokens HTTP clients may present; required unless `http` is "
                          "a loopback address and http_loopback_open is true."),
    "http_loopback_open": (bool, "on a loopback `http` address, serve requests without a "
                                 "token."),
    "http_max_body": (int, "largest HTTP request body (or WebSocket message), in bytes; "
                           "past it, 413."),
    "http_max_buffered": (int, "bytes of request bodies all HTTP requests in flight may hold "
                               "together (0: 4 x http_max_body); past it, 503 (a body under "
                               "256 KiB never is)."),
    "http_max_connections": (int, "HTTP requests and WebSockets served at once; past it, 503."),
    "http_token_concurrency": (int, "HTTP requests, WebSockets and background jobs in flight "
                                    "per token; past it, 429."),
    "http_request_timeout": (float, "seconds a request's body (a WebSocket's first message) "
                                    "has to arrive; past it, 408 and the connection closes."),
    "http_keepalive_timeout": (float, "seconds an idle HTTP connection stays open, and the "
                                      "time its request's headers have to arrive."),
    "http_send_timeout": (float, "seconds sent data may stay unacknowledged by an HTTP client "
                                 "(TCP_USER_TIMEOUT) before its connection is dropped."),
    "http_ws_buffer": (int, "bytes of output queued for a WebSocket client that reads too "
                            "slowly; past it, the job is cancelled and the socket closed."),
    "http_results_kept": (int, "finished results of background (wait=false) HTTP jobs kept "
                               "for polling; the oldest go first."),
    "http_result_ttl": (float, "seconds a finished background job's result is kept."),
    "metrics_token": (str, "bearer token GET /metrics requires (empty: the http tokens' "
                           "rules)."),
    "judge0_batch_size": (int, "most submissions in one Judge0 batch (POST or GET "
                               "/submissions/batch)."),
    "judge0_callbacks": (list, "hosts (names, addresses or networks such as 10.0.0.0/8) a "
                               "Judge0 callback_url may name; none by default."),
    "redis": (str, "redis://[USER:PASSWORD@]HOST:PORT/DB (or rediss:// for TLS): also run "
                   "jobs from the cluster's queue there (docs/cluster.md). Off when empty."),
    "node_id": (str, "this node's name in the cluster (default: <hostname>-<instance>)."),
    "redis_claim_idle": (float, "seconds a job may stay unacknowledged by a node that "
                                "stopped renewing it before a live node claims and reruns it."),
    "redis_max_deliveries": (int, "times a cluster job may be handed to a node; past it, it "
                                  "ends as sandbox_error instead of running again."),
    "redis_result_ttl": (float, "seconds a cluster job's result and output stay in Redis."),
    "caches": (dict, "table [caches]: name = \"/absolute/host/dir\", read-only directories "
                     "a profile or job may mount at /cache/<name> (docs/ci.md)."),
    "max_workspace": (int, "largest workspace archive a job may upload, in bytes (spooled "
                           "to the state dir's disk, never held in memory)."),
    "workspace_max_files": (int, "most entries a workspace archive may have."),
    "artifacts_max_files": (int, "most artifact files a run step returns; past it, "
                                 "truncated."),
    "artifacts_max_bytes": (int, "most artifact bytes a run step returns; past it, "
                                 "truncated."),
    "egress_allow": (list, "outbound TCP destinations a job's (or profile's) network.allow "
                           "may name: \"HOST:PORT\", \"HOST:*\", \"10.0.0.0/8:443\", "
                           "\"*:443\". Empty (the default): jobs get no network at all "
                           "(docs/profiles.md, \"Network\")."),
    "egress_hosts": (list, "\"NAME=IPv4\" entries: names jobs' allow-lists may use, pinned to "
                           "these addresses instead of the host's resolver (a mirror, say)."),
}


def _line_of(text: str, key: str) -> int:
    for i, line in enumerate(text.splitlines(), 1):
        if re.match(rf"\s*{re.escape(key)}\s*=", line):
            return i
    return 0


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _coerce(key: str, value: Any, where: str) -> Any:
    kind, _doc = KEYS[key]
    if kind is bool:
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {key} must be true or false, not {value!r}")
        return value
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind is int and isinstance(value, str):
        try:
            value = int(value, 0)
        except ValueError:
            raise ConfigError(f"{where}: {key} must be an integer, not {value!r}") from None
    if kind is float and isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ConfigError(f"{where}: {key} must be a number, not {value!r}") from None
    if kind is dict:
        return _caches(value, where)
    if kind is list and isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, bool) or not isinstance(value, kind):
        raise ConfigError(f"{where}: {key} must be {kind.__name__}, not {value!r}")
    if kind is list:
        if not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: {key} must be a list of strings")
        value = tuple(value)
    if kind in (int, float) and value < 0:
        raise ConfigError(f"{where}: {key} must not be negative")
    return value


def _caches(value: Any, where: str) -> tuple[tuple[str, str], ...]:
    """``[caches]`` (a table) or ``name=/dir,name2=/dir2`` (the environment's form)."""
    if isinstance(value, str):
        pairs = [p.partition("=") for p in value.split(",") if p.strip()]
        value = {k.strip(): v.strip() for k, _, v in pairs}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: caches must be a table of name = \"/host/dir\"")
    out = []
    for name, path in value.items():
        if not re.fullmatch(r"[a-z][a-z0-9_-]{0,63}", str(name)):
            raise ConfigError(f"{where}: cache name {name!r} must match [a-z][a-z0-9_-]*")
        if not isinstance(path, str) or not path.startswith("/") or not os.path.isdir(path):
            raise ConfigError(f"{where}: cache {name!r} must be an absolute path to an "
                              f"existing directory, not {path!r}")
        if os.path.realpath(path) == "/tmp" or os.path.realpath(path).startswith("/tmp/"):
            raise ConfigError(f"{where}: cache {name!r} is under /tmp, which the container's "
                              "root hides from its mounts: use another directory")
        out.append((str(name), os.path.realpath(path)))
    return tuple(out)


def load(path: str | None = None, env: dict[str, str] | None = None,
         **overrides: Any) -> Config:
    """Defaults, then the file at ``path``, then ``SANDBOXD_<KEY>`` variables, then overrides."""
    env = dict(os.environ) if env is None else env
    values: dict[str, Any] = {}
    if path:
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except OSError as e:
            raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
        text = raw.decode("utf-8", "replace")
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: {e}") from None
        for key, value in data.items():
            where = f"{path}:{_line_of(text, key)}"
            if key not in KEYS:
                raise ConfigError(f"{where}: unknown key {key!r} (known: {', '.join(KEYS)})")
            values[key] = _coerce(key, value, where)
    for name, value in env.items():
        if not name.startswith("SANDBOXD_") or name in _NOT_CONFIG:
            continue
        key = name[len("SANDBOXD_"):].lower()
        if key not in KEYS:
            raise ConfigError(f"environment: unknown variable {name} "
                              f"(known: {', '.join('SANDBOXD_' + k.upper() for k in KEYS)})")
        values[key] = _coerce(key, value, f"environment {name}")
    for key, value in overrides.items():
        if value is not None:
            values[key] = _coerce(key, value, f"option {key}")
    cfg = Config(**values)
    _validate(cfg)
    return cfg


# Variables that configure tests and tools, not the daemon.
_NOT_CONFIG = {"SANDBOXD_SKIP_V2VM", "SANDBOXD_CGROUP_TEST", "SANDBOXD_LEFTOVERS",
               "SANDBOXD_LANGUAGES"}


def _validate(cfg: Config) -> None:
    if cfg.tcp and not cfg.token:
        raise ConfigError("tcp listening needs a token (set token or SANDBOXD_TOKEN)")
    if cfg.tcp and ":" not in cfg.tcp:
        raise ConfigError(f"tcp must be HOST:PORT, not {cfg.tcp!r}")
    if cfg.http:
        _validate_http(cfg)
    if cfg.concurrency < 1:
        raise ConfigError("concurrency must be at least 1")
    if not 1 <= cfg.workers <= MAX_WORKERS:
        raise ConfigError(f"workers must be 1 to {MAX_WORKERS}, not {cfg.workers}")
    if cfg.workers > 1 and cfg.workers > cfg.concurrency:
        raise ConfigError(f"workers ({cfg.workers}) must not exceed concurrency "
                          f"({cfg.concurrency}): concurrency is divided among the workers, "
                          "and a worker needs at least one job slot")
    if cfg.workers > 1 and len(f"{cfg.instance}-w{cfg.workers - 1}") > 64:
        raise ConfigError(f"instance {cfg.instance!r} is too long for {cfg.workers} workers "
                          "(each worker's cgroups are sandboxd-<instance>-w<k>, at most 64 "
                          "characters after sandboxd-)")
    if cfg.workers > 1 and cfg.node_id and len(f"{cfg.node_id}-w{cfg.workers - 1}") > 128:
        raise ConfigError(f"node_id {cfg.node_id!r} is too long for {cfg.workers} workers "
                          "(each worker is the cluster node <node_id>-w<k>, at most 128 "
                          "characters)")
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", cfg.instance):
        raise ConfigError(f"instance must be 1-64 of [A-Za-z0-9_.-], not {cfg.instance!r}")
    if cfg.redis and not cfg.redis.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"redis must be a redis://, rediss:// or unix:// URL, not "
                          f"{cfg.redis!r}")
    if cfg.node_id and not re.fullmatch(r"[A-Za-z0-9_.-]{1,128}", cfg.node_id):
        raise ConfigError(f"node_id must be 1-128 of [A-Za-z0-9_.-], not {cfg.node_id!r}")
    if cfg.redis_max_deliveries < 1:
        raise ConfigError("redis_max_deliveries must be at least 1")
    if cfg.redis_claim_idle < 1 or cfg.redis_result_ttl < 1:
        raise ConfigError("redis_claim_idle and redis_result_ttl must be at least 1 second")
    try:
        egress_policy(cfg)
    except ValueError as e:
        raise ConfigError(f"egress_allow / egress_hosts: {e}") from None
    if cfg.log_level not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"log_level must be debug, info, warning or error, not "
                          f"{cfg.log_level!r}")


def egress_policy(cfg: Config) -> Any:
    """The operator's ``egress_allow`` and ``egress_hosts`` as an ``egress.Policy``;
    ``ValueError`` if either is malformed."""
    from sandboxd import egress

    return egress.Policy(tuple(egress.parse_pattern(p) for p in cfg.egress_allow),
                         egress.parse_hosts(cfg.egress_hosts))


def split_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:80`` for IPv6) as ``(host, port)``; ``ConfigError`` if not."""
    host, sep, port = address.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"http must be HOST:PORT (port 0-65535), not {address!r}")
    return host, int(port)


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _validate_http(cfg: Config) -> None:
    """Refuse an HTTP front door that anyone could use, or that nobody could."""
    host, _port = split_address(cfg.http)
    if any(not t for t in cfg.http_tokens):
        raise ConfigError("http_tokens must not hold an empty token")
    if not cfg.http_tokens:
        if not is_loopback(host):
            raise ConfigError(f"http on {host}, not a loopback address, needs a token: set "
                              "http_tokens (or SANDBOXD_HTTP_TOKENS)")
        if not cfg.http_loopback_open:
            raise ConfigError("http needs http_tokens, or, on a loopback address, "
                              "http_loopback_open = true to serve without a token")
    for key in ("http_max_body", "http_max_connections", "http_token_concurrency",
                "http_ws_buffer"):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"{key} must be at least 1")
    for key in ("http_request_timeout", "http_keepalive_timeout", "http_send_timeout"):
        if getattr(cfg, key) <= 0:
            raise ConfigError(f"{key} must be more than 0 seconds")


def as_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
