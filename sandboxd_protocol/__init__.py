"""sandboxd's wire protocol, sans I/O: a ``Connection`` turns bytes into events and back.

No sockets, no trio, no clock: the daemon and every client drive a
``Connection`` from their own I/O loop (see ``PROTOCOL.md`` beside this file
for the wire format, the rules and the test vectors)::

    conn = Connection(CLIENT)
    sock.sendall(conn.send(Hello(client="me/1.0")))
    while True:
        event = conn.next_event()
        if event is NEED_DATA:
            conn.receive_data(sock.recv(65536))
            continue
        ...

This package imports nothing of sandboxd: only the standard library and msgpack.
"""

from ._connection import NEED_DATA, Connection, NeedData
from ._errors import (
    APPLICATION_ERROR_CODES,
    ERROR_CODES,
    PROTOCOL_ERROR_CODES,
    ErrorCode,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
)
from ._events import (
    COMPARE_MODES,
    JOB_STATES,
    MEMORY_MODES,
    PROTOCOL_VERSION,
    STREAMS,
    SUPPORTED_VERSIONS,
    VERDICTS,
    Batch,
    BatchResult,
    Cancellation,
    CompileStep,
    ConnectionClosed,
    EndOfStdin,
    EndOfWorkspace,
    ErrorReport,
    Event,
    Goodbye,
    Hello,
    JobAcceptance,
    JobInfo,
    JobLimits,
    JobList,
    JobListRequest,
    JobResult,
    JobSubmission,
    KillRequest,
    KillResult,
    NetworkAccess,
    OutputChunk,
    Ping,
    Pong,
    PoolStats,
    ProfileInfo,
    Program,
    RepeatStats,
    ServerStats,
    StatsRequest,
    StdinChunk,
    StepResult,
    TestCase,
    Welcome,
    WorkspaceChunk,
)
from ._job_limits import (
    LIMITS,
    LIMITS_BY_NAME,
    LimitSpec,
    LimitValueError,
    Unit,
    format_size,
    parse_limits,
    parse_size,
)
from ._limits import DEFAULT_SIZE_LIMITS, SizeLimits
from ._schema import MESSAGE_TYPES, TYPE_NAMES
from ._state import JobState, Role, State

CLIENT = Role.CLIENT
SERVER = Role.SERVER

__all__ = [
    "APPLICATION_ERROR_CODES",
    "CLIENT",
    "COMPARE_MODES",
    "DEFAULT_SIZE_LIMITS",
    "ERROR_CODES",
    "JOB_STATES",
    "LIMITS",
    "LIMITS_BY_NAME",
    "MEMORY_MODES",
    "MESSAGE_TYPES",
    "NEED_DATA",
    "PROTOCOL_ERROR_CODES",
    "PROTOCOL_VERSION",
    "SERVER",
    "STREAMS",
    "SUPPORTED_VERSIONS",
    "TYPE_NAMES",
    "VERDICTS",
    "Batch",
    "BatchResult",
    "Cancellation",
    "CompileStep",
    "Connection",
    "ConnectionClosed",
    "EndOfStdin",
    "EndOfWorkspace",
    "ErrorCode",
    "ErrorReport",
    "Event",
    "Goodbye",
    "Hello",
    "JobAcceptance",
    "JobInfo",
    "JobLimits",
    "JobList",
    "JobListRequest",
    "JobResult",
    "JobState",
    "JobSubmission",
    "KillRequest",
    "KillResult",
    "LimitSpec",
    "LimitValueError",
    "LocalProtocolError",
    "NeedData",
    "NetworkAccess",
    "OutputChunk",
    "Ping",
    "Pong",
    "PoolStats",
    "ProfileInfo",
    "Program",
    "ProtocolError",
    "RemoteProtocolError",
    "RepeatStats",
    "Role",
    "ServerStats",
    "SizeLimits",
    "State",
    "StatsRequest",
    "StdinChunk",
    "StepResult",
    "TestCase",
    "Unit",
    "Welcome",
    "WorkspaceChunk",
    "format_size",
    "parse_limits",
    "parse_size",
]
