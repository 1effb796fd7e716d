"""The cluster's layout in Redis: key names, and the msgpack records stored under them.

Strategy: many sandboxd nodes take jobs from one Redis stream (a consumer
group: each entry goes to one node, and stays *pending* until that node
acknowledges it), and submitters wait for each job's answer under keys named
after the job's id. Nodes and submitters are different programs
(``sandboxd.front.redis_queue`` and ``sandboxd_client``) that must agree on
every name and record, so both take them from here; this module does no I/O
and imports no Redis client. docs/cluster.md explains the design.

A record is one protocol message (``JobSubmission``, ``JobResult``,
``OutputChunk``, ``ErrorReport``...) packed as the body of a socket frame,
without the length prefix: a node decodes a job from the stream with the
same checks as one from its socket.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import msgpack  # type: ignore[import-untyped]

from ._errors import ErrorCode, Invalid, LocalProtocolError, RemoteProtocolError
from ._events import PoolStats, ServerStats
from ._framing import unpack_body
from ._limits import DEFAULT_SIZE_LIMITS, SizeLimits
from ._schema import check_job_id, decode_message, encode_message

__all__ = [
    "ANSWER_SCRIPT",
    "CANCELS",
    "GROUP",
    "INLINE_ANSWER",
    "JOBS",
    "NODES",
    "SUBMIT_SCRIPT",
    "cancel_key",
    "cluster_stats",
    "kill_target",
    "node_key",
    "node_part",
    "node_record",
    "pack",
    "reply_key",
    "resp_command",
    "result_key",
    "stdin_key",
    "unpack",
]

PREFIX = "sandboxd:"

JOBS = PREFIX + "jobs"
"""The job stream. Entry fields: ``job`` (a packed ``JobSubmission``) and ``reply`` (the
submitter's id, see ``reply_key``; optional: without it, poll ``result_key``)."""

GROUP = "sandboxd"
"""The consumer group every node reads ``JOBS`` in; a node's consumer name is its node id."""

NODES = PREFIX + "nodes"
"""A set of node ids that have announced themselves (see ``node_key``)."""

CANCELS = PREFIX + "cancels"
"""A stream of cancels (field ``job``: a job's id) that every node reads as it comes
(``XREAD BLOCK``), so a running job stops at once; capped (``MAXLEN ~``). The job's
``cancel_key`` is set too, for a node that takes the job later."""

CANCELS_MAXLEN = 10_000

INLINE_ANSWER = 64 * 1024
"""An answer up to this size rides in its ``done`` entry too, so a submitter needs no
second read (a bigger one is only under ``result_key``)."""

SUBMIT_SCRIPT = """
local n = redis.call('XLEN', KEYS[1])
if n >= tonumber(ARGV[1]) then return {0, n} end
return {1, redis.call('XADD', KEYS[1], '*', 'job', ARGV[2], 'reply', ARGV[3])}
"""
"""Queue a job unless the queue is full, in one round trip: KEYS = [JOBS]; ARGV = [max
queue length, packed JobSubmission, submitter id]. Returns ``[1, entry id]`` or ``[0,
queue length]`` (refused: busy)."""

ANSWER_SCRIPT = """
local stored = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2])
if stored and ARGV[5] ~= '' then
  if ARGV[6] == '1' then
    redis.call('XADD', KEYS[2], '*', 'job', ARGV[3], 'done', '1', 'answer', ARGV[1])
  else
    redis.call('XADD', KEYS[2], '*', 'job', ARGV[3], 'done', '1')
  end
  redis.call('EXPIRE', KEYS[2], ARGV[2])
end
redis.call('XACK', KEYS[3], ARGV[4], ARGV[7])
redis.call('XDEL', KEYS[3], ARGV[7])
if stored then return 1 end
return 0
"""
"""Answer a job once, atomically: store the answer (``SET NX EX``); only if it was the
first, post ``done`` (with the answer inline if ``ARGV[6]`` is ``1``) on the
submitter's reply stream; acknowledge and delete the job's entry either way. KEYS =
[result key, reply stream (any key when there is none), JOBS]; ARGV = [answer, ttl, job
id, GROUP, submitter id or '', inline flag, entry id]. Returns 1 if this answer was
stored, 0 if one was there already."""

SUBMITTER_ID = re.compile(r"[0-9a-f]{32}")
"""What a ``reply`` field must be (a uuid4's hex): a node builds the key from it."""


def resp_command(args: tuple[Any, ...]) -> bytes:
    """One command in Redis's wire format (RESP2, an array of bulk strings): what the
    cluster's lean connections write, the node's and the client's alike, several to a
    write (the library clients build them one call at a time)."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def result_key(job_id: str) -> str:
    """The job's answer: a packed ``JobResult`` or job-scoped ``ErrorReport``, set once (NX)."""
    return f"{PREFIX}result:{job_id}"


def reply_key(submitter: str) -> str:
    """A stream per submitter (a client, a gateway), read by it alone. Each entry names its
    ``job``; ``chunk`` entries (a packed ``OutputChunk`` and the ``attempt`` that wrote it)
    come in order, and one ``done`` entry once the job's answer is in ``result_key``."""
    return f"{PREFIX}reply:{submitter}"


def stdin_key(job_id: str) -> str:
    """An ``interactive_stdin`` job's input: a stream its submitter writes (``data``
    entries: bytes, in order; then one ``eof`` entry) and the node running it reads from
    the start (a rerun after a node died reads it all again); it expires."""
    return f"{PREFIX}stdin:{job_id}"


def cancel_key(job_id: str) -> str:
    """Set by a submitter that cancels the job; the node running it polls it."""
    return f"{PREFIX}cancel:{job_id}"


def node_key(node_id: str) -> str:
    """A node's announcement (a msgpack map: its capacity, jobs, stats and profiles),
    refreshed while it lives and expiring when it stops."""
    return f"{PREFIX}node:{node_id}"


_packer = msgpack.Packer(use_bin_type=True, autoreset=True)


def pack(event: Any, limits: SizeLimits = DEFAULT_SIZE_LIMITS) -> bytes:
    """A protocol message as stored bytes; ``LocalProtocolError`` names a bad field."""
    try:
        body: bytes = _packer.pack(encode_message(event, limits))
    except Invalid as exc:
        raise LocalProtocolError(str(exc), code=exc.code) from None
    if len(body) > limits.max_frame_size:
        raise LocalProtocolError(f"record of {len(body)} bytes exceeds the maximum of "
                                 f"{limits.max_frame_size}", code=ErrorCode.FRAME_TOO_LARGE)
    return body


def unpack(data: bytes, limits: SizeLimits = DEFAULT_SIZE_LIMITS) -> Any:
    """Stored bytes as a protocol message, checked as a frame from a socket is.

    Raises ``RemoteProtocolError`` (with the job id, when the record names a
    well-formed one) for a record that is not a valid message.
    """
    msg: Any = None
    try:
        if len(data) > limits.max_frame_size:
            raise Invalid("", f"record of {len(data)} bytes exceeds the maximum of "
                          f"{limits.max_frame_size}", ErrorCode.FRAME_TOO_LARGE)
        msg = unpack_body(data)
        return decode_message(msg, limits)
    except Invalid as exc:
        job_id = check_job_id(msg.get("id")) if type(msg) is dict else None
        raise RemoteProtocolError(str(exc), code=exc.code, job_id=job_id) from None


# -- what submitters make of the nodes' announcements (no I/O: the client's bridge and
# the gateway read the records, these read them alike) ------------------------------


def node_record(data: bytes | None) -> dict[str, Any] | None:
    """A node's announcement (``node_key``) as a map; ``None`` if gone or unreadable."""
    if data is None:
        return None
    try:
        rec = msgpack.unpackb(data, raw=False)
    except Exception:
        return None
    return rec if isinstance(rec, dict) else None


def node_part(node: dict[str, Any], key: str, kind: type) -> Any:
    """The announcement's ``welcome``, ``stats`` or ``jobs`` as that message, or ``None``."""
    data = node.get(key)
    if not isinstance(data, bytes):
        return None
    try:
        ev = unpack(data)
    except RemoteProtocolError:
        return None
    return ev if isinstance(ev, kind) else None


def kill_target(ref: str) -> str | None:
    """The job id of a cluster job's ``ps`` reference (``<node>/cluster/<id>``), else None."""
    _node, _, rest = ref.partition("/")
    owner, _, job_id = rest.partition("/")
    return job_id if owner == "cluster" and job_id else None


def cluster_stats(nodes: list[dict[str, Any]], queue_length: int, oldest_age: float,
                  now: float) -> ServerStats:
    """Every live node's counters added up, with the queue's length and oldest job's age
    and, per node, ``node.<id>.capacity``, ``running``, ``done`` and ``last_seen_s``."""
    stats = [s for n in nodes if (s := node_part(n, "stats", ServerStats)) is not None]
    counters: Counter[str] = Counter()
    pools: dict[str, list[int]] = {}
    for s in stats:
        for k, v in s.counters.items():
            counters[k] += v
        for p in s.pools:
            w = pools.setdefault(p.profile, [0, 0])
            w[0] += p.warm
            w[1] += p.target
    counters.update(cluster_nodes=len(nodes), cluster_queue_length=queue_length)
    extra: dict[str, int | float] = {"cluster_oldest_job_age_s": round(oldest_age, 3)}
    for n in nodes:
        name = re.sub(r"[^A-Za-z0-9_]", "_", str(n.get("node", "?")))[:36]
        extra[f"node.{name}.capacity"] = int(n.get("capacity", 0))
        extra[f"node.{name}.running"] = int(n.get("running", 0))
        extra[f"node.{name}.done"] = int(n.get("done", 0))
        extra[f"node.{name}.last_seen_s"] = round(now - float(n.get("last_seen", now)), 3)
    return ServerStats(
        uptime=max((s.uptime for s in stats), default=0.0), connections=0,
        jobs_queued=sum(s.jobs_queued for s in stats),
        jobs_running=sum(s.jobs_running for s in stats),
        jobs_completed=sum(s.jobs_completed for s in stats),
        pools=tuple(PoolStats(profile=k, warm=v[0], target=v[1])
                    for k, v in sorted(pools.items())),
        counters={**dict(counters), **extra})
