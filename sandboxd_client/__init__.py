"""sandboxd's client library: run untrusted code in sandboxd from Python, blocking or async.

One call::

    from sandboxd_client import run

    print(run("python3", {"main.py": "print(6 * 7)"}).text)          # 42

A connection, many jobs, typed results::

    from sandboxd_client import Client, Test

    with Client() as client:                     # $SANDBOXD_SOCKET or the default socket
        result = client.run("c", {"main.c": source},
                            tests=[Test(stdin="1 2\\n", expected_output="3\\n")])
        for step in result.steps:
            print(step.verdict, step.cpu_time, step.memory_peak)

From trio or asyncio (the same ``AsyncClient`` runs under both)::

    async with AsyncClient() as client:
        results = await asyncio.gather(*(client.run("bash", {"main.sh": f"echo {i}"})
                                         for i in range(100)))

Errors are exceptions that say what to do (``ConnectError``, ``ServerBusy``,
``JobRejected``, ``ConnectionLost``...); a program's failure is a result with
a ``Verdict``, never an exception. ``sandboxctl`` is this package's command
line (``sandboxd_client.cli``). The wire protocol is ``sandboxd_protocol``;
this package imports nothing else of sandboxd.
"""

from sandboxd_protocol import JobInfo, PoolStats, ProfileInfo, RepeatStats, ServerStats

from ._async import AsyncClient, AsyncJob
from ._core import DEFAULT_SOCKET
from ._errors import (
    AuthenticationError,
    ConnectError,
    ConnectionLost,
    JobRejected,
    LimitExceeded,
    ProtocolVersionError,
    ProtocolViolation,
    SandboxdError,
    ServerBusy,
    ServerError,
    UnknownProfile,
)
from ._jobs import Batch, Compile, Interactor, JobOptions, Limits, Program, Test, parse_size
from ._results import (
    EXIT_MEMORY,
    EXIT_OUTPUT,
    EXIT_SANDBOX,
    EXIT_TIME,
    BatchResult,
    JobResult,
    Output,
    StepResult,
    Verdict,
    exit_status,
)
from ._sync import Client, Job, run

__all__ = [
    "DEFAULT_SOCKET",
    "EXIT_MEMORY",
    "EXIT_OUTPUT",
    "EXIT_SANDBOX",
    "EXIT_TIME",
    "AsyncClient",
    "AsyncJob",
    "AuthenticationError",
    "Batch",
    "BatchResult",
    "Client",
    "Compile",
    "ConnectError",
    "ConnectionLost",
    "Interactor",
    "Job",
    "JobInfo",
    "JobOptions",
    "JobRejected",
    "JobResult",
    "LimitExceeded",
    "Limits",
    "Output",
    "PoolStats",
    "ProfileInfo",
    "Program",
    "ProtocolVersionError",
    "ProtocolViolation",
    "RepeatStats",
    "SandboxdError",
    "ServerBusy",
    "ServerError",
    "ServerStats",
    "StepResult",
    "Test",
    "UnknownProfile",
    "Verdict",
    "exit_status",
    "parse_size",
    "run",
]
