"""The blocking client: a socket, a ``Core``, and whoever waits reads.

Strategy: there is no background thread. A caller that waits for something
(a result, an output chunk, an answer) reads from the socket itself and
feeds every event to the ``Core``, so events for *other* jobs are kept in
their slots until their owners ask. That makes many jobs over one
connection work from one thread (``submit`` several, then ``result`` each),
and from several threads too: one reads at a time (a condition variable
elects it) while the others wait to be woken.

Writes keep reading: a large submission is written piece by piece while
whatever the daemon sends meanwhile is read, because a daemon blocked
writing results to us stops reading, and two peers that both only write
would wait for each other forever.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket as _socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from types import TracebackType
from typing import Any, BinaryIO, TypeVar, Unpack

import sandboxd_protocol as proto

from ._cluster import RedisBridge
from ._core import (
    CLIENT_NAME,
    Core,
    JobSlot,
    busy_delays,
    connect_error,
    resolve_address,
)
from ._core import (
    pieces as _pieces,
)
from ._errors import ServerBusy
from ._jobs import Data, JobOptions, build_submission, open_workspace
from ._results import JobResult, Output

__all__ = ["Client", "Job", "run"]

T = TypeVar("T")
_READ = 1 << 16


class Client:
    """A blocking connection to sandboxd (by Unix socket, or TCP with a token).

    The socket defaults to ``$SANDBOXD_SOCKET``, else the daemon's default
    ``/run/sandboxd/sandboxd.sock``. ``timeout`` bounds connecting and each
    request (``ping``, ``jobs``, ``stats``, ``kill``), not a job: the daemon's
    limits bound those. ``busy_retries`` resubmits a job the daemon refuses as
    busy, with exponential backoff. Safe to share between threads.

        from sandboxd_client import Client

        with Client() as client:
            result = client.run("python3", {"main.py": "print(6 * 7)"})
            print(result.verdict, result.text)     # ok 42
    """

    def __init__(
        self,
        socket: str | os.PathLike[str] | None = None,
        *,
        host: str | None = None,
        port: int | None = None,
        token: str | None = None,
        timeout: float | None = 30.0,
        busy_retries: int = 0,
        name: str = CLIENT_NAME,
    ) -> None:
        self.address = resolve_address(socket, host, port, token)
        self.timeout = timeout
        self.busy_retries = busy_retries
        self._core = Core(self.address, name)
        self._cv = threading.Condition(threading.Lock())
        self._send_lock = threading.Lock()
        self._reading = False
        self._bridge: RedisBridge | None = None
        self._sock = self._connect()
        try:
            self._write(self._core.hello())
            if not self._wait(lambda: self._core.welcome is not None, timeout):
                raise connect_error(self.address, None, timeout)
            self._core.raise_if_broken()
        except BaseException:
            self._sock.close()
            raise

    def _connect(self) -> _socket.socket:
        addr = self.address
        try:
            if addr.url is not None:
                self._bridge = RedisBridge(addr.url)
                sock = self._bridge.open(self.timeout)
            elif addr.path is not None:
                sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
                try:
                    sock.settimeout(self.timeout)
                    sock.connect(addr.path)
                except BaseException:
                    sock.close()
                    raise
            else:
                assert addr.host is not None and addr.port is not None
                sock = _socket.create_connection((addr.host, addr.port), self.timeout)
                sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
        except (OSError, TimeoutError) as e:
            raise connect_error(addr, e, self.timeout) from None
        sock.settimeout(None)  # waits use select() with their own timeouts
        return sock

    # -- context -----------------------------------------------------------------

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Say goodbye and close; jobs still running are cancelled by the daemon."""
        if self._core.broken is None:
            with contextlib.suppress(Exception):
                self._send_event(proto.Goodbye())
        with contextlib.suppress(OSError):
            self._sock.close()
        if self._bridge is not None:  # it cancels our unfinished jobs in Redis first
            self._bridge.join(2.0)

    # -- what the daemon said in its welcome ---------------------------------------

    @property
    def server(self) -> str:
        """The daemon's name and version (``"sandboxd/0.1.0"``)."""
        return self._core.welcome.server if self._core.welcome else ""

    @property
    def version(self) -> int:
        """The protocol version agreed with the daemon."""
        return self._core.conn.version or 0

    def profiles(self) -> list[proto.ProfileInfo]:
        """The daemon's profiles, with their default and maximum limits (no round trip).

        with Client() as client:
            print([p.name for p in client.profiles()])   # ['bash', 'c', 'cpp', ...]
        """
        return list(self._core.welcome.profiles) if self._core.welcome else []

    # -- jobs ----------------------------------------------------------------------

    def run(
        self, profile: str, files: Mapping[str, Data] | None = None, **job: Unpack[JobOptions]
    ) -> JobResult:
        """Run a job and wait for its result.

        ``files`` maps names in the job's directory to contents (``bytes`` or
        ``str``); the profile's entry file (``main.py``, ``main.c``...) is
        what runs unless ``argv`` says otherwise. See ``JobOptions`` for every
        keyword. Raises ``JobRejected``, ``ServerBusy``, ``ConnectionLost``...;
        a program's failure is a result, never an exception.

            with Client() as client:
                r = client.run("python3", {"main.py": "print(input()[::-1])"}, stdin="abc\\n",
                               limits={"cpu_time": 1, "memory": "128M"})
                assert r.ok and r.text == "cba\\n"
        """
        with self.submit(profile, files, **job) as handle:
            return handle.result()

    def submit(
        self,
        profile: str,
        files: Mapping[str, Data] | None = None,
        *,
        stream: bool = False,
        interactive_stdin: bool = False,
        **job: Unpack[JobOptions],
    ) -> Job:
        """Submit a job and return its handle once the daemon has accepted it.

        Submit several before waiting on any: they run at the same time over
        this one connection, each result to its own handle.

            with Client() as client:
                jobs = [client.submit("bash", {"main.sh": f"echo {i}"}) for i in range(3)]
                print([j.result().text for j in jobs])     # ['0\\n', '1\\n', '2\\n']
        """
        opts: dict[str, Any] = dict(job)
        source = opts.pop("workspace", None)
        if source is None:
            return self._submit(profile, files, stream, interactive_stdin, opts)
        archive, opts["workspace"], opened = open_workspace(source)
        try:
            handle = self._submit(profile, files, stream, interactive_stdin, opts)
            self._upload(handle, archive)  # accepted first: a refused job sends none
        finally:
            if opened:
                archive.close()
        return handle

    def _submit(self, profile: str, files: Mapping[str, Data] | None, stream: bool,
                interactive_stdin: bool, opts: dict[str, Any]) -> Job:
        retries = opts.pop("busy_retries", None)
        delays = busy_delays(self.busy_retries if retries is None else retries)
        attempt = 0
        while True:
            attempt += 1
            with self._cv:
                job_id = self._core.new_job_id()
            sub = build_submission(
                job_id, profile, files, stream=stream, interactive_stdin=interactive_stdin, **opts
            )
            slot = self._send(partial(self._core.submit, sub))
            self._wait(partial(getattr, slot, "settled"), None)
            err = slot.error
            if isinstance(err, ServerBusy):
                if delays:
                    time.sleep(delays.pop(0))
                    continue
                err.attempts = attempt
            if err is not None:
                raise err
            return Job(self, slot)

    def _upload(self, handle: Job, archive: BinaryIO) -> None:
        """Send a workspace archive in chunks (its job already accepted), then its end;
        stop early once the job has ended (the daemon refused the archive, say)."""
        limits = self._core.conn.peer_limits
        size = (limits or proto.DEFAULT_SIZE_LIMITS).max_chunk
        while not handle.done and (piece := archive.read(size)):
            self._send_job_event(proto.WorkspaceChunk(id=handle.id, data=piece))
        self._send_job_event(proto.EndOfWorkspace(id=handle.id))

    def stream(
        self,
        profile: str,
        files: Mapping[str, Data] | None = None,
        *,
        interactive_stdin: bool = False,
        **job: Unpack[JobOptions],
    ) -> Job:
        """Submit a job whose output arrives as it is written: iterate over the handle.

        With ``interactive_stdin=True``, ``write`` feeds the program's stdin as
        you go and ``close_stdin`` ends it. Leaving the ``with`` block cancels
        the job if it is still running.

            with Client() as client, client.stream("bash", {"main.sh": "for i in 1 2 3; do "
                                                    "echo $i; sleep 0.1; done"}) as job:
                for chunk in job:
                    print(chunk.stream, chunk.text, end="")   # stdout 1, stdout 2...
                print(job.result().verdict)                    # ok
        """
        return self.submit(profile, files, stream=True, interactive_stdin=interactive_stdin, **job)

    # -- requests --------------------------------------------------------------------

    def ping(self) -> float:
        """Seconds a round trip to the daemon takes (raises if it does not answer).

        with Client() as client:
            print(f"{client.ping() * 1000:.2f} ms")
        """
        start = time.monotonic()
        self._request(proto.Ping())
        return time.monotonic() - start

    def jobs(self) -> list[proto.JobInfo]:
        """Every job the daemon has queued or running, of every connection (``ps``).

        with Client() as client:
            for info in client.jobs():
                print(info.id, info.profile, info.state, info.cpu_time)
        """
        answer = self._request(proto.JobListRequest())
        assert isinstance(answer, proto.JobList)
        return list(answer.jobs)

    def kill(self, ref: str) -> bool:
        """Stop job ``ref`` (a ``JobInfo.id`` from ``jobs()``) of any connection.

        Returns False if no such job is queued or running. The job's owner gets
        its result, with the verdict ``cancelled``.

            with Client() as client:
                for info in client.jobs():
                    client.kill(info.id)
        """
        answer = self._request(proto.KillRequest(job=ref))
        assert isinstance(answer, proto.KillResult)
        return answer.found

    def stats(self) -> proto.ServerStats:
        """The daemon's counters: uptime, jobs queued/running/completed, warm pools...

        with Client() as client:
            print(client.stats().jobs_completed)
        """
        answer = self._request(proto.StatsRequest())
        assert isinstance(answer, proto.ServerStats)
        return answer

    def _request(self, event: proto.Event) -> proto.Event:
        slot = self._send(lambda: self._core.request(event))
        if not self._wait(lambda: slot.done, self.timeout):
            raise TimeoutError(f"sandboxd at {self.address} did not answer in {self.timeout} s")
        if slot.error is not None:
            raise slot.error
        assert slot.value is not None
        return slot.value

    # -- I/O -------------------------------------------------------------------------

    def _send_event(self, event: proto.Event) -> None:
        """Send a message that opens nothing (stdin, cancel, goodbye, pong)."""
        core = self._core
        self._send(lambda: (None, core.message(event)))

    def _send_job_event(
        self, event: proto.StdinChunk | proto.EndOfStdin | proto.Cancellation
        | proto.WorkspaceChunk | proto.EndOfWorkspace
    ) -> None:
        """Send stdin, its end or a cancel, unless the job has ended or was cancelled."""
        core = self._core
        self._send(lambda: (None, core.job_message(event)))

    def _send(self, make: Callable[[], tuple[T, bytes]]) -> T:
        """Encode under the core's lock, write in the same order as encoded."""
        with self._send_lock:
            with self._cv:
                value, data = make()
            if data:
                self._write(data)
        return value

    def _write(self, data: bytes) -> None:
        """Write all of ``data``, reading whatever arrives meanwhile (see the module doc)."""
        view = memoryview(data)
        sock = self._sock
        while view:
            readers = [] if self._reading else [sock]
            try:
                readable, writable, _ = select.select(readers, [sock], [])
                if writable:
                    n = sock.send(view[: 1 << 20], _socket.MSG_DONTWAIT)
                    view = view[n:]
                    continue
            except BlockingIOError:
                continue
            except OSError as e:
                self._last_words()
                with self._cv:
                    self._core.lost(e)  # unless the daemon said why it closed
                    self._cv.notify_all()
                self._core.raise_if_broken()
            if readable:
                self._read_once(0)

    def _last_words(self) -> None:
        """After a failed write, read what the daemon sent before it closed.

        A daemon that refuses a connection (too many, shutting down) writes its
        error and closes at once, maybe before our hello is written: the error
        it sent says more than our broken pipe.
        """
        with self._cv:
            if self._reading:
                return  # the thread that reads will get it
            self._reading = True
        try:
            while True:
                try:
                    data = self._sock.recv(_READ, _socket.MSG_DONTWAIT)
                except OSError:
                    return
                with self._cv:
                    self._core.receive(data)
                if not data or self._core.broken is not None:
                    return
        finally:
            with self._cv:
                self._reading = False
                self._core.take_changed()
                self._cv.notify_all()

    def _read_once(self, timeout: float | None) -> None:
        """Be the reader for one ``recv`` if nobody else is; feed what comes in."""
        with self._cv:
            if self._reading:
                return
            self._reading = True
        data: bytes | None = None
        err: BaseException | None = None
        try:
            try:
                readable, _, _ = select.select([self._sock], [], [], timeout)
                if readable:
                    data = self._sock.recv(_READ)
            except OSError as e:
                err = e
        finally:
            with self._cv:
                self._reading = False
                if err is not None:
                    self._core.lost(err)
                elif data is not None:
                    self._core.receive(data)
                self._core.take_changed()
                self._cv.notify_all()

    def _flush_outbox(self) -> None:
        """Send the answers we owe (pongs). Not from inside ``_write``: a frame must not
        start in the middle of another."""
        with self._cv:
            outbox = self._core.take_outbox()
        for event in outbox:
            with contextlib.suppress(Exception):
                self._send_event(event)

    def _wait(self, cond: Callable[[], bool], timeout: float | None) -> bool:
        """Read until ``cond()`` holds (True) or ``timeout`` passes (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._cv:
                while True:
                    if cond():
                        return True
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    if self._core.broken is not None:
                        return True  # cond() will not change any more: the caller raises
                    if not self._reading:
                        break
                    self._cv.wait(remaining)
            self._read_once(remaining)
            self._flush_outbox()


class Job:
    """A job the daemon accepted: its output (if streaming), its stdin, its result.

    Got from ``Client.submit`` or ``Client.stream``. Use it in a ``with``
    block: leaving the block cancels the job if it has not finished, so it
    does not keep running unobserved.

        with Client() as client, client.stream("python3", {"main.py": "print(input())"},
                                               interactive_stdin=True) as job:
            job.write("hello\\n")
            job.close_stdin()
            print("".join(chunk.text for chunk in job))    # hello
    """

    def __init__(self, client: Client, slot: JobSlot) -> None:
        self._client = client
        self._slot = slot
        self._stdin_open = slot.sub.interactive_stdin

    @property
    def id(self) -> str:
        """This connection's id for the job (``ps`` shows ``<connection>/<id>``)."""
        return self._slot.id

    @property
    def done(self) -> bool:
        """True once the result (or an error) has arrived."""
        return self._slot.done

    def __enter__(self) -> Job:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self._slot.done and self._client._core.broken is None:
            with contextlib.suppress(Exception):
                self.cancel()
                self._client._wait(lambda: self._slot.done, self._client.timeout)
        self._slot.abandoned = True

    def __iter__(self) -> Iterator[Output]:
        """The output chunks, in order, until the job ends (none unless streaming)."""
        while True:
            chunk = self.next_output()
            if chunk is None:
                return
            yield chunk

    def next_output(self, timeout: float | None = None) -> Output | None:
        """The next chunk of output; ``None`` once the job has ended.

        Raises ``TimeoutError`` if nothing came in ``timeout`` seconds (the job
        goes on), and the connection's error if it was lost.
        """
        slot = self._slot
        if not self._client._wait(lambda: bool(slot.chunks) or slot.done, timeout):
            raise TimeoutError(f"no output from job {slot.id} in {timeout} s")
        with self._client._cv:
            if slot.chunks:
                return slot.chunks.popleft()
        if slot.error is not None:
            raise slot.error
        return None

    def write(self, data: Data) -> None:
        """Send bytes (or text, as UTF-8) to the program's stdin (``interactive_stdin`` jobs).

        Bytes written after the job has ended are dropped.
        """
        if not self._stdin_open:
            raise ValueError(
                f"job {self.id}: stdin is closed (or the job was not submitted with "
                "interactive_stdin=True)"
            )
        raw = data.encode() if isinstance(data, str) else bytes(data)
        for piece in _pieces(raw, self._client._core):
            self._client._send_job_event(proto.StdinChunk(id=self.id, data=piece))

    def close_stdin(self) -> None:
        """End the program's stdin: it reads end-of-file. Idempotent."""
        if self._stdin_open:
            self._stdin_open = False
            self._client._send_job_event(proto.EndOfStdin(id=self.id))

    def cancel(self) -> None:
        """Ask the daemon to stop the job; ``result()`` then says ``cancelled``
        (or the verdict it reached first)."""
        self._stdin_open = False
        self._client._send_job_event(proto.Cancellation(id=self.id))

    def result(self, timeout: float | None = None) -> JobResult:
        """Wait for the job's result; raises ``TimeoutError`` after ``timeout`` seconds
        (the job goes on), or the error that ended it (``ConnectionLost``...)."""
        slot = self._slot
        if not self._client._wait(lambda: slot.done, timeout):
            raise TimeoutError(f"job {slot.id} did not finish in {timeout} s")
        if slot.error is not None:
            raise slot.error
        assert slot.result is not None
        return slot.result


def run(
    profile: str,
    files: Mapping[str, Data] | None = None,
    *,
    socket: str | os.PathLike[str] | None = None,
    host: str | None = None,
    port: int | None = None,
    token: str | None = None,
    timeout: float | None = 30.0,
    **job: Unpack[JobOptions],
) -> JobResult:
    """Connect, run one job, close: the whole client in one call.

    from sandboxd_client import run

    result = run("python3", {"main.py": "print(sum(range(10)))"})
    print(result.text)                               # 45
    """
    with Client(socket, host=host, port=port, token=token, timeout=timeout) as client:
        return client.run(profile, files, **job)
