"""Everything that can go wrong talking to sandboxd, as exceptions that say what to do.

Strategy: one base class, ``SandboxdError``, with a ``message`` (what went
wrong, naming the socket, the job or the field) and a ``hint`` (what to do
about it); ``str()`` shows both. Subclasses are what a caller branches on:
retry on ``ServerBusy``, fix the job on ``JobRejected``, reconnect on
``ConnectionLost``, fix the deployment on ``ConnectError``. A job's *bad
outcome* (a crash, a time limit, a wrong answer) is never an exception: it is
a ``JobResult`` with a verdict.

``from_report`` turns the daemon's ``error`` messages into these classes, so
the sync and async clients raise the same exception for the same answer.
"""

from __future__ import annotations

import re

import sandboxd_protocol as proto

__all__ = [
    "AuthenticationError",
    "ConnectError",
    "ConnectionLost",
    "JobRejected",
    "LimitExceeded",
    "ProtocolVersionError",
    "ProtocolViolation",
    "SandboxdError",
    "ServerBusy",
    "ServerError",
    "UnknownProfile",
    "from_report",
]


class SandboxdError(Exception):
    """Base of every error of this package: ``message`` says what, ``hint`` what to do.

    >>> try:
    ...     raise SandboxdError("no socket at /x", hint="start the daemon")
    ... except SandboxdError as e:
    ...     print(e)
    no socket at /x
      hint: start the daemon
    """

    message: str
    hint: str
    code: str | None

    def __init__(self, message: str, *, hint: str = "", code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.code = code
        """The protocol's error code when the daemon sent one (``server_busy``...)."""

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message


class ConnectError(SandboxdError):
    """Could not reach the daemon: no socket, nobody listening, no permission, no answer.

    ``address`` is the socket path or ``host:port`` that was tried.

        >>> from sandboxd_client import Client
        >>> Client("/nonexistent/sandboxd.sock")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        sandboxd_client._errors.ConnectError: cannot connect to sandboxd at /nonexistent/...
    """

    def __init__(self, message: str, *, address: str, hint: str = "") -> None:
        super().__init__(message, hint=hint)
        self.address = address


class AuthenticationError(SandboxdError):
    """The daemon refused the token (TCP connections need the daemon's ``token``).

    >>> from sandboxd_client import Client
    >>> Client(host="127.0.0.1", port=7070, token="wrong")  # doctest: +SKIP
    Traceback (most recent call last):
    AuthenticationError: sandboxd at 127.0.0.1:7070 refused the connection: ...
    """


class ProtocolVersionError(SandboxdError):
    """The daemon and this client have no protocol version in common.

    >>> raise ProtocolVersionError("sandboxd speaks version 2", hint="upgrade")
    Traceback (most recent call last):
    sandboxd_client._errors.ProtocolVersionError: sandboxd speaks version 2
      hint: upgrade
    """


class ProtocolViolation(SandboxdError):
    """One side broke the protocol: a bug in the daemon or in this client, never the job's.

    >>> raise ProtocolViolation("bad frame", hint="report it")
    Traceback (most recent call last):
    sandboxd_client._errors.ProtocolViolation: bad frame
      hint: report it
    """


class ConnectionLost(SandboxdError):
    """The connection ended while a job or request was waiting for its answer.

    ``job_id`` is the job that lost its result (``None`` for a request).
    ``ran`` is False when the daemon said goodbye before it saw the job (it
    did not run: submitting it again is safe), None when unknown.

        >>> raise ConnectionLost("sandboxd closed the connection", hint="resubmit")
        Traceback (most recent call last):
        sandboxd_client._errors.ConnectionLost: sandboxd closed the connection
          hint: resubmit
    """

    def __init__(
        self,
        message: str,
        *,
        hint: str = "",
        job_id: str | None = None,
        ran: bool | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint, code=code)
        self.job_id = job_id
        self.ran = ran


class JobRejected(SandboxdError):
    """The daemon (or this client, before sending) refused the job as it was written.

    ``field`` names the offending part of the job when known (``"profile"``,
    ``"limits.memory"``, ``"files['../x']"``, ``"tests[2].limits.cpu_time"``).

        >>> from sandboxd_client import Client
        >>> with Client() as c:  # doctest: +SKIP
        ...     c.run("python3", {"../x.py": "1"})
        Traceback (most recent call last):
        JobRejected: job rejected: files['../x.py']: must not have an empty, '.' or '..' ...
    """

    def __init__(
        self,
        message: str,
        *,
        hint: str = "",
        code: str | None = None,
        field: str | None = None,
        job_id: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint, code=code)
        self.field = field
        self.job_id = job_id


class UnknownProfile(JobRejected):
    """No such profile on this daemon (or it is unavailable on its host).

    >>> raise UnknownProfile("no profile 'cobol'", field="profile")
    Traceback (most recent call last):
    sandboxd_client._errors.UnknownProfile: no profile 'cobol'
    """


class LimitExceeded(JobRejected):
    """A limit asked for is above what the profile allows (``field`` names it).

    >>> raise LimitExceeded("limit memory=32G is too high", field="limits.memory")
    Traceback (most recent call last):
    sandboxd_client._errors.LimitExceeded: limit memory=32G is too high
    """


class ServerBusy(SandboxdError):
    """The daemon's queue is full. ``attempts`` says how often the job was submitted.

    Pass ``busy_retries=N`` to the client (or to ``run``) to retry with
    exponential backoff before this is raised.

        >>> raise ServerBusy("sandboxd is busy", attempts=3)
        Traceback (most recent call last):
        sandboxd_client._errors.ServerBusy: sandboxd is busy
    """

    def __init__(
        self,
        message: str,
        *,
        hint: str = "",
        attempts: int = 1,
        job_id: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint, code="server_busy")
        self.attempts = attempts
        self.job_id = job_id


class ServerError(SandboxdError):
    """The daemon failed (``internal_error``), is stopping (``shutting_down``), or timed
    us out (``timeout``); ``code`` says which.

        >>> raise ServerError("sandboxd is shutting down", code="shutting_down")
        Traceback (most recent call last):
        sandboxd_client._errors.ServerError: sandboxd is shutting down
    """


# --------------------------------------------------------------------------------
# From the daemon's error messages
# --------------------------------------------------------------------------------

_LIMIT_RE = re.compile(r"^(?:(tests\[\d+\]|compile): )?(?:unknown )?limit '?([a-z_]+)'?")


def limit_field(message: str) -> str | None:
    """The field a ``limit_exceeded`` message is about, e.g. ``"tests[1].limits.cpu_time"``.

    sandboxd writes ``"[tests[i]: |compile: ]limit NAME=VALUE is outside ..."``.

        >>> limit_field("tests[1]: limit cpu_time=900 is outside the allowed range [0.001, 600]")
        'tests[1].limits.cpu_time'
        >>> limit_field("compile: limit memory=1024G is outside the allowed range [4M, 16G]")
        'compile.limits.memory'
    """
    m = _LIMIT_RE.match(message)
    if m is None:
        return None
    return f"{m.group(1) + '.' if m.group(1) else ''}limits.{m.group(2)}"


def from_report(report: proto.ErrorReport, *, where: str) -> SandboxdError:
    """The exception for one ``error`` message of the daemon; ``where`` names the daemon.

    Job-scoped reports become ``JobRejected`` (and subclasses), ``ServerBusy``
    or ``ServerError``; fatal ones (no job id) the error that ended the
    connection.

        >>> e = from_report(proto.ErrorReport(code="unknown_profile", message="no", id="1"),
        ...                 where="/s")
        >>> type(e).__name__, e.field
        ('UnknownProfile', 'profile')
    """
    code, text, job = report.code, report.message, report.id
    about = f"job {job}" if job else "the connection"
    if code == "server_busy":
        if job is None:
            return ServerBusy(
                f"sandboxd at {where} is busy and refused the connection: {text}",
                hint="too many connections are open; close some or try again later",
            )
        return ServerBusy(
            f"sandboxd at {where} is busy and refused {about}: {text}",
            hint="retry later, or pass busy_retries=N to retry with backoff",
            job_id=job,
        )
    if code == "unknown_profile":
        return UnknownProfile(
            f"job rejected: profile: {text}",
            hint="list the profiles with `sandboxctl profiles` (or Client.profiles())",
            code=code,
            field="profile",
            job_id=job,
        )
    if code == "limit_exceeded":
        field = limit_field(text)
        return LimitExceeded(
            f"job rejected: {field + ': ' if field else ''}{text}",
            hint="ask for at most the profile's max_limits (see `sandboxctl profiles --json`)",
            code=code,
            field=field,
            job_id=job,
        )
    if code == "invalid_job":
        return JobRejected(
            f"job rejected: {text}",
            hint="the job is well-formed but this profile cannot run it as written",
            code=code,
            job_id=job,
        )
    if code == "unauthorized":
        return AuthenticationError(
            f"sandboxd at {where} refused the connection: {text}",
            hint="pass the daemon's token (token=..., --token or SANDBOXD_TOKEN)",
            code=code,
        )
    if code == "unsupported_version":
        return ProtocolVersionError(
            f"sandboxd at {where} speaks no protocol version this client speaks "
            f"(client: {sorted(proto.SUPPORTED_VERSIONS)}): {text}",
            hint="install the same sandboxd release for the daemon and the client",
            code=code,
        )
    if code == "shutting_down":
        return ServerError(
            f"sandboxd at {where} is shutting down and refused {about}: {text}",
            hint="submit again once the daemon is back (or to another one)",
            code=code,
        )
    if code == "timeout":
        return ServerError(
            f"sandboxd at {where} closed {about}: {text}",
            hint="the daemon drops connections idle past its idle_timeout; reconnect",
            code=code,
        )
    if code in proto.PROTOCOL_ERROR_CODES:
        return ProtocolViolation(
            f"sandboxd at {where} says this client broke the protocol ({code}): {text}",
            hint="a bug in sandboxd_client or a version mismatch; please report it",
            code=code,
        )
    return ServerError(
        f"sandboxd at {where} failed on {about} ({code}): {text}",
        hint="the daemon's own failure, not the job's; its log says more",
        code=code,
    )
