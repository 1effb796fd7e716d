"""``Connection``: bytes in, events out; events in, bytes out. No I/O.

Strategy: a ``Connection`` glues three pieces that know nothing of each other:
``FrameReader`` cuts bytes into frame bodies, ``_schema`` checks fields and
builds events, ``StateMachine`` checks that a message may come now. The
caller owns the socket and every clock: it passes bytes to ``receive_data``,
pulls events with ``next_event`` until ``NEED_DATA``, and writes what ``send``
returns. Timeouts, retries and closing the socket are its business.

Failure is permanent, as in h11: a ``LocalProtocolError`` (our own misuse)
breaks both directions; a ``RemoteProtocolError`` (the peer's) is raised again
by every later ``next_event``, and leaves us allowed to send exactly one
fatal ``ErrorReport`` saying why, so the peer learns what it did wrong.

This module must not import trio, sockets, time or anything of sandboxd.
"""

from __future__ import annotations

from collections.abc import KeysView
from enum import Enum
from typing import Any, Literal

from ._errors import (
    ERROR_CODES,
    ErrorCode,
    Invalid,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
)
from ._events import ConnectionClosed, ErrorReport, Event, Welcome
from ._framing import HEADER_SIZE, FrameReader, encode_frame, unpack_body
from ._limits import DEFAULT_SIZE_LIMITS, SizeLimits
from ._schema import check_job_id, decode_message, encode_message
from ._state import DropMessage, Role, State, StateMachine

__all__ = ["NEED_DATA", "Connection", "NeedData"]


class NeedData(Enum):
    """The type of ``NEED_DATA``."""

    NEED_DATA = "NEED_DATA"


NEED_DATA: Literal[NeedData.NEED_DATA] = NeedData.NEED_DATA
"""Returned by ``next_event`` when no complete frame is buffered: feed more bytes."""


class Connection:
    """One end of one sandboxd protocol connection.

    ``limits`` are the caps we enforce on what we receive (and, until the
    server's ``Welcome`` says otherwise, on what we send). A server announces
    them in its ``Welcome``; a client then checks its own messages against
    the smaller of its limits and the server's.
    """

    def __init__(self, our_role: Role, *, limits: SizeLimits = DEFAULT_SIZE_LIMITS) -> None:
        if not isinstance(our_role, Role):
            raise TypeError(f"our_role must be a Role, got {our_role!r}")
        if not isinstance(limits, SizeLimits):
            raise TypeError(f"limits must be a SizeLimits, got {limits!r}")
        self.our_role = our_role
        self.their_role = Role.SERVER if our_role is Role.CLIENT else Role.CLIENT
        self.limits = limits
        self.peer_limits: SizeLimits | None = None
        self._send_limits = limits
        self._reader = FrameReader(limits.max_frame_size)
        self._machine = StateMachine(
            max_jobs_in_flight=limits.max_jobs_in_flight,
            max_pending_requests=limits.max_pending_requests,
        )
        self._local_error: LocalProtocolError | None = None
        self._remote_error: RemoteProtocolError | None = None

    # -- inspection --------------------------------------------------------------

    @property
    def our_state(self) -> State:
        """Our connection-level state."""
        return self._machine.states[self.our_role]

    @property
    def their_state(self) -> State:
        """The peer's connection-level state, as far as we have heard."""
        return self._machine.states[self.their_role]

    @property
    def states(self) -> dict[Role, State]:
        """Both roles' states (a copy)."""
        return dict(self._machine.states)

    @property
    def version(self) -> int | None:
        """The protocol version agreed in the handshake, once it is done."""
        return self._machine.version

    @property
    def jobs_in_flight(self) -> KeysView[str]:
        """Ids of jobs submitted and not yet answered (a live, read-only view).

        A client can check here before sending stdin or a cancel: after a
        job's end, ``send`` of those returns ``b""`` rather than failing.
        When the server's ``Goodbye`` arrives, the ids left here are jobs the
        server never saw: they did not run and may be submitted elsewhere.
        """
        return self._machine.jobs.keys()

    @property
    def buffered(self) -> int:
        """Bytes received and not yet turned into events."""
        return self._reader.buffered

    # -- receiving -----------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Buffer bytes from the peer; ``b""`` means the peer closed its end.

        Only buffers: call ``next_event`` until it returns ``NEED_DATA`` after
        each call, so that an oversized frame is refused before its body is kept.
        """
        if self._reader.eof and data:
            raise LocalProtocolError(
                "receive_data() after the end of the stream", code=ErrorCode.UNEXPECTED_MESSAGE
            )
        if self._remote_error is not None or self._local_error is not None:
            return  # nothing more will be read: do not let the buffer grow
        self._reader.feed(data)

    def next_event(self) -> Event | NeedData:
        """The next event from the peer, ``NEED_DATA``, or ``ConnectionClosed`` at the end.

        Raises ``RemoteProtocolError`` if the peer broke the protocol, and again
        on every later call.
        """
        if self._remote_error is not None:
            raise self._remote_error
        if self._local_error is not None:
            raise LocalProtocolError(
                f"the connection is broken by an earlier local error: {self._local_error.message}",
                code=self._local_error.code,
            )
        while True:
            msg: Any = None
            try:
                body = self._reader.next_body()
                if body is None:
                    if self._reader.eof:
                        return self._closed()
                    return NEED_DATA
                msg = unpack_body(body)
                event: Event = decode_message(msg, self.limits)
                self._machine.process(self.their_role, event, ours=False)
            except DropMessage:
                continue  # stale: see _state.STALE_AFTER_DONE and NEEDS_LIVE_RECEIVER
            except Invalid as exc:
                job_id = check_job_id(msg.get("id")) if type(msg) is dict else None
                self._machine.set_error(self.their_role)
                self._remote_error = RemoteProtocolError(str(exc), code=exc.code, job_id=job_id)
                raise self._remote_error from None
            if type(event) is Welcome:
                self._adopt_peer_limits(event.limits)
            return event

    def _closed(self) -> ConnectionClosed:
        if self.their_state is not State.ERROR:
            self._machine.states[self.their_role] = State.CLOSED
            for queue in self._machine.owed[self.their_role].values():
                queue.clear()
        return ConnectionClosed()

    def _adopt_peer_limits(self, peer: SizeLimits) -> None:
        """After a Welcome, a client sends nothing the server would refuse."""
        self.peer_limits = peer
        self._send_limits = self.limits.narrowed(peer)
        self._machine.max_jobs_in_flight = self._send_limits.max_jobs_in_flight
        self._machine.max_pending_requests = self._send_limits.max_pending_requests

    # -- sending -------------------------------------------------------------------

    def send(self, event: Event) -> bytes:
        """Check ``event`` and return the bytes to write to the peer.

        Returns ``b""`` for stdin or a cancel about a job that has just ended
        (nothing to say any more). Raises ``LocalProtocolError`` if the event
        breaks a rule, naming the field; the connection is then broken.
        """
        if self._local_error is not None:
            raise LocalProtocolError(
                f"the connection is broken by an earlier local error: {self._local_error.message}",
                code=ErrorCode.UNEXPECTED_MESSAGE,
            )
        try:
            if self._remote_error is not None and (
                type(event) is not ErrorReport or event.job_scoped
            ):
                raise Invalid(
                    "",
                    "after a remote protocol error only a fatal ErrorReport may be sent",
                    ErrorCode.UNEXPECTED_MESSAGE,
                )
            if type(event) is ErrorReport and event.code not in ERROR_CODES:
                raise Invalid("error.code", f"must be one of ErrorCode, got {event.code!r}")
            if type(event) is Welcome and event.limits != self.limits:
                raise Invalid("welcome.limits", "must be the Connection's own limits")
            frame = encode_frame(encode_message(event, self._send_limits))
            size = len(frame) - HEADER_SIZE
            if size > self._send_limits.max_frame_size:
                raise Invalid(
                    "",
                    f"frame of {size} bytes exceeds the maximum of "
                    f"{self._send_limits.max_frame_size}",
                    ErrorCode.FRAME_TOO_LARGE,
                )
            self._machine.process(self.our_role, event, ours=True)
        except DropMessage:
            return b""
        except Invalid as exc:
            self._fail_locally(str(exc), exc.code)
        except (ValueError, TypeError, OverflowError) as exc:
            # msgpack refusing a value the schema let through would be our bug;
            # still report it as misuse rather than crash the caller's loop.
            self._fail_locally(
                f"cannot encode {type(event).__name__}: {exc}", ErrorCode.INVALID_FIELD
            )
        return frame

    def check(self, event: Event) -> None:
        """Check ``event``'s fields as ``send`` would, without sending or changing anything.

        For a client that builds messages from its user's input (file names,
        limits): a bad value raises ``LocalProtocolError`` naming the field,
        and, unlike a refused ``send``, leaves the connection usable. Only the
        schema and the size caps are checked here; the frame size and the
        order rules are checked by ``send``.
        """
        try:
            encode_message(event, self._send_limits)
        except Invalid as exc:
            raise LocalProtocolError(str(exc), code=exc.code) from None
        except (ValueError, TypeError, OverflowError) as exc:
            raise LocalProtocolError(
                f"cannot encode {type(event).__name__}: {exc}", code=ErrorCode.INVALID_FIELD
            ) from None

    def _fail_locally(self, message: str, code: str) -> None:
        self._machine.set_error(self.our_role)
        self._local_error = LocalProtocolError(message, code=code)
        raise self._local_error from None

    @property
    def error(self) -> ProtocolError | None:
        """The error that broke the connection, if any."""
        return self._remote_error or self._local_error
