"""The two ways a protocol exchange can fail, and the codes that name them.

Strategy: one base class with a machine-readable ``code``; ``LocalProtocolError``
when *we* misused the API (a bug on our side, never the peer's), and
``RemoteProtocolError`` when the *peer* sent something the protocol forbids.
Keeping the two apart tells the caller whom to blame: a remote error is
answered with an ``error`` message and a closed connection, a local one is a
bug to fix. The codes are plain strings (``ErrorCode`` is a ``StrEnum``) so a
code received from a newer peer that we do not know still fits the type.

This module must not know about frames, events or state: it only names failures.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "APPLICATION_ERROR_CODES",
    "ERROR_CODES",
    "PROTOCOL_ERROR_CODES",
    "ErrorCode",
    "Invalid",
    "LocalProtocolError",
    "ProtocolError",
    "RemoteProtocolError",
]


class ErrorCode(StrEnum):
    """Every error code this version of the protocol defines (PROTOCOL.md §7).

    The first group is raised by ``Connection`` itself and is always fatal to
    the connection. The second group is sent by the server application; with a
    job id it ends only that job.
    """

    # -- protocol errors: raised by Connection, always end the connection --
    MALFORMED = "malformed"
    FRAME_TOO_LARGE = "frame_too_large"
    UNKNOWN_MESSAGE = "unknown_message"
    INVALID_FIELD = "invalid_field"
    UNEXPECTED_MESSAGE = "unexpected_message"
    DUPLICATE_JOB = "duplicate_job"
    UNKNOWN_JOB = "unknown_job"
    BAD_SEQUENCE = "bad_sequence"
    TOO_MANY_JOBS = "too_many_jobs"
    TOO_MANY_REQUESTS = "too_many_requests"
    UNSUPPORTED_VERSION = "unsupported_version"
    # -- application errors: sent by the daemon about a job or the connection --
    UNAUTHORIZED = "unauthorized"
    UNKNOWN_PROFILE = "unknown_profile"
    LIMIT_EXCEEDED = "limit_exceeded"
    INVALID_JOB = "invalid_job"
    SERVER_BUSY = "server_busy"
    SHUTTING_DOWN = "shutting_down"
    TIMEOUT = "timeout"
    INTERNAL_ERROR = "internal_error"


PROTOCOL_ERROR_CODES: frozenset[str] = frozenset(
    {
        ErrorCode.MALFORMED,
        ErrorCode.FRAME_TOO_LARGE,
        ErrorCode.UNKNOWN_MESSAGE,
        ErrorCode.INVALID_FIELD,
        ErrorCode.UNEXPECTED_MESSAGE,
        ErrorCode.DUPLICATE_JOB,
        ErrorCode.UNKNOWN_JOB,
        ErrorCode.BAD_SEQUENCE,
        ErrorCode.TOO_MANY_JOBS,
        ErrorCode.TOO_MANY_REQUESTS,
        ErrorCode.UNSUPPORTED_VERSION,
    }
)
"""Codes that always end the connection, whether or not a job id is attached."""

ERROR_CODES: frozenset[str] = frozenset(ErrorCode)
"""Every code we may *send*; we accept any well-formed code from a peer."""

APPLICATION_ERROR_CODES: frozenset[str] = ERROR_CODES - PROTOCOL_ERROR_CODES
"""Codes the server application sends; with a job id they end only that job."""


class ProtocolError(Exception):
    """Base of both protocol failures; ``code`` is one of ``ErrorCode``.

    ``job_id`` is the id of the job the offending message was about, when the
    message was readable enough to tell: a server can echo it back in its
    ``ErrorReport`` so that the client knows which submission was refused.
    """

    code: str
    job_id: str | None

    def __init__(self, message: str, *, code: str, job_id: str | None = None) -> None:
        super().__init__(message)
        self.code = str(code)  # a plain str, even when given an ErrorCode
        self.job_id = job_id

    @property
    def message(self) -> str:
        """The human-readable text, naming the offending field where there is one."""
        return str(self.args[0]) if self.args else ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, code={self.code!r})"


class Invalid(Exception):
    """Internal: a rule was broken. ``Connection`` re-raises it as a local or remote error.

    The schema and the state machine do not know whether they are checking our
    own message or the peer's, so they raise this and let the caller choose.
    ``path`` names the field (empty for a frame-level or state rule).
    """

    def __init__(self, path: str, reason: str, code: str = "invalid_field") -> None:
        super().__init__(f"{path}: {reason}" if path else reason)
        self.path = path
        self.reason = reason
        self.code = code


class LocalProtocolError(ProtocolError):
    """We tried to do something the protocol forbids: a bug in the caller."""


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes or a message that the protocol forbids."""
