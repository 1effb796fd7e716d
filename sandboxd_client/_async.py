"""The async client, for trio and asyncio alike: a reader task, a ``Core``, two transports.

Strategy: ``async with AsyncClient() as client`` connects and starts one
reader task (in a nursery under trio, a task under asyncio) that feeds the
daemon's bytes to the ``Core`` and wakes the callers waiting on the slots
that changed. Callers only ever wait on an event of their own library, so
any number of them (``asyncio.gather``, a trio nursery) share the connection,
each getting its own job's output and result. The reader never raises: a
failure breaks the ``Core``, which hands the error to every waiting caller.

What differs between trio and asyncio is small and lives in two backend
classes (``_TrioIO``, ``_AsyncioIO``): open a stream, read, write a whole
frame, start a task, make an event, sleep, time out. Which one is used is
decided at ``__aenter__`` with ``sniffio`` (installed with trio), or by
asking asyncio whether it is running when sniffio is missing.

Writes are ordered as they were encoded: under trio, encode and write happen
under one lock and the write is shielded (a cancelled write would cut a frame
in half); under asyncio, encode and ``write()`` are synchronous, so nothing
can come between them. A caller cancelled while its job runs (a timeout, a
nursery cancelled) leaves a cancel to be sent by a task of the client, so
the daemon stops the job rather than run it for nobody.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from functools import partial
from types import TracebackType
from typing import Any, TypeVar, Unpack

import sandboxd_protocol as proto

from ._cluster import RedisBridge
from ._core import (
    CLIENT_NAME,
    Address,
    Core,
    JobSlot,
    Waitable,
    busy_delays,
    connect_error,
    pieces,
    resolve_address,
)
from ._errors import ProtocolViolation, ServerBusy
from ._jobs import Data, JobOptions, build_submission, open_workspace
from ._results import JobResult, Output

__all__ = ["AsyncClient", "AsyncJob"]

T = TypeVar("T")
_READ = 1 << 16


def _current_library() -> str:
    """``"trio"`` or ``"asyncio"``: the library running the caller."""
    try:
        import sniffio
    except ImportError:  # pragma: no cover - sniffio comes with trio
        import asyncio

        try:
            asyncio.get_running_loop()
            return "asyncio"
        except RuntimeError:
            if "trio" in sys.modules:
                return "trio"
    else:
        try:
            return sniffio.current_async_library()
        except sniffio.AsyncLibraryNotFoundError:
            pass
    raise RuntimeError("AsyncClient runs under trio or asyncio (no running event loop found)")


# --------------------------------------------------------------------------------
# The two backends
# --------------------------------------------------------------------------------


class _IO:
    """What the client needs of an async library. One instance per connection."""

    async def open(self, address: Address) -> None:
        raise NotImplementedError

    async def receive(self) -> bytes:
        """Bytes from the daemon, ``b""`` at the end; ``OSError`` if the socket failed."""
        raise NotImplementedError

    async def send(self, make: Callable[[], tuple[T, bytes]]) -> T:
        """Encode with ``make`` and write the bytes whole, in encoding order."""
        raise NotImplementedError

    def spawn(self, fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``fn()`` in a task of the client (it must not raise)."""
        raise NotImplementedError

    def event(self) -> Any:
        """A fresh one-shot event with ``set()`` and ``await wait()``."""
        raise NotImplementedError

    async def sleep(self, seconds: float) -> None:
        raise NotImplementedError

    def fail_after(self, seconds: float | None) -> contextlib.AbstractAsyncContextManager[None]:
        """Raise ``TimeoutError`` if the block takes more than ``seconds`` (None: never)."""
        raise NotImplementedError

    async def start(self, reader: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Start the reader task."""
        raise NotImplementedError

    async def close(self) -> None:
        """Close the stream and stop every task of the client."""
        raise NotImplementedError


class _TrioIO(_IO):
    def __init__(self) -> None:
        import trio

        self.trio = trio
        self.lock = trio.Lock()
        self.stream: Any = None
        self._nursery_cm: Any = None
        self._nursery: Any = None

    async def open(self, address: Address) -> None:
        trio = self.trio
        if address.url is not None:
            sock = await _open_bridge(address, self.sleep)
            self.stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
        elif address.path is not None:
            self.stream = await trio.open_unix_socket(address.path)
        else:
            assert address.host is not None and address.port is not None
            self.stream = await trio.open_tcp_stream(address.host, address.port)

    async def receive(self) -> bytes:
        try:
            return bytes(await self.stream.receive_some(_READ))
        except (self.trio.BrokenResourceError, self.trio.ClosedResourceError) as e:
            raise ConnectionResetError(str(e) or type(e).__name__) from e

    async def send(self, make: Callable[[], tuple[T, bytes]]) -> T:
        async with self.lock:
            value, data = make()
            if data:
                with self.trio.CancelScope(shield=True):
                    try:
                        await self.stream.send_all(data)
                    except (self.trio.BrokenResourceError, self.trio.ClosedResourceError) as e:
                        raise ConnectionResetError(str(e) or type(e).__name__) from e
        return value

    def spawn(self, fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(fn)

    def event(self) -> Any:
        return self.trio.Event()

    async def sleep(self, seconds: float) -> None:
        await self.trio.sleep(seconds)

    @contextlib.asynccontextmanager
    async def fail_after(self, seconds: float | None) -> AsyncIterator[None]:
        if seconds is None:
            yield
            return
        try:
            with self.trio.fail_after(seconds):
                yield
        except self.trio.TooSlowError:
            raise TimeoutError(f"no answer in {seconds} s") from None

    async def start(self, reader: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self._nursery_cm = self.trio.open_nursery()
        self._nursery = await self._nursery_cm.__aenter__()
        self._nursery.start_soon(reader)

    async def close(self) -> None:
        if self.stream is not None:
            with self.trio.CancelScope(shield=True), contextlib.suppress(Exception):
                await self.stream.aclose()
        if self._nursery_cm is not None:
            self._nursery.cancel_scope.cancel()
            cm, self._nursery_cm = self._nursery_cm, None
            # The caller's own exception (if any) goes on from our __aexit__; the
            # nursery itself ends cleanly, so it is not wrapped in an ExceptionGroup.
            await cm.__aexit__(None, None, None)
            self._nursery = None


class _AsyncioIO(_IO):
    """A non-blocking socket driven with ``loop.sock_*``, rather than asyncio streams.

    Streams drop what was received when a write fails (the transport stops
    reading and ``read()`` raises before returning buffered bytes), and a
    daemon that refuses us writes why, then closes: here the socket stays
    readable until we close it. One writer task writes the frames in the order
    they were encoded; a caller cancelled while its frame waits leaves it to be
    written whole.
    """

    def __init__(self) -> None:
        import asyncio

        self.asyncio = asyncio
        self.sock: socket.socket | None = None
        self.tasks: set[Any] = set()
        self.queue: deque[tuple[bytes, Any]] = deque()
        self.pending: Any = None  # an asyncio.Event: the queue is not empty
        self.write_error: OSError | None = None

    async def open(self, address: Address) -> None:
        loop = self.asyncio.get_running_loop()
        targets: list[tuple[int, int, int, Any]]
        if address.url is not None:
            sock = await _open_bridge(address, self.sleep)
            sock.setblocking(False)
            self.sock = sock
            self.pending = self.asyncio.Event()
            self.spawn(self._writer)
            return
        if address.path is not None:
            targets = [(socket.AF_UNIX, socket.SOCK_STREAM, 0, address.path)]
        else:
            infos = await loop.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM)
            targets = [(family, kind, proto_, addr) for family, kind, proto_, _, addr in infos]
        error: OSError = OSError(f"cannot resolve {address}")
        for family, kind, proto_, addr in targets:
            sock = socket.socket(family, kind, proto_)
            try:
                sock.setblocking(False)
                await loop.sock_connect(sock, addr)
            except OSError as e:
                sock.close()
                error = e
                continue
            except BaseException:
                sock.close()
                raise
            if family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock = sock
            self.pending = self.asyncio.Event()
            self.spawn(self._writer)
            return
        raise error

    async def receive(self) -> bytes:
        assert self.sock is not None
        loop = self.asyncio.get_running_loop()
        return bytes(await loop.sock_recv(self.sock, _READ))

    async def send(self, make: Callable[[], tuple[T, bytes]]) -> T:
        value, data = make()  # encoded and queued with no await between: in order
        if data:
            if self.write_error is not None:
                raise ConnectionResetError(str(self.write_error))
            written = self.asyncio.get_running_loop().create_future()
            written.add_done_callback(_retrieve)
            self.queue.append((data, written))
            self.pending.set()
            await self.asyncio.shield(written)
        return value

    async def _writer(self) -> None:
        loop = self.asyncio.get_running_loop()
        sock = self.sock
        assert sock is not None
        while True:
            while not self.queue:
                self.pending.clear()
                await self.pending.wait()
            data, written = self.queue.popleft()
            if self.write_error is None:
                try:
                    await loop.sock_sendall(sock, data)
                except OSError as e:
                    self.write_error = e
            if not written.done():
                if self.write_error is not None:
                    written.set_exception(ConnectionResetError(str(self.write_error)))
                else:
                    written.set_result(None)

    def spawn(self, fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
        task = self.asyncio.get_running_loop().create_task(fn())
        self.tasks.add(task)  # keep a reference: asyncio holds tasks weakly
        task.add_done_callback(self.tasks.discard)

    def event(self) -> Any:
        return self.asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        await self.asyncio.sleep(seconds)

    @contextlib.asynccontextmanager
    async def fail_after(self, seconds: float | None) -> AsyncIterator[None]:
        async with self.asyncio.timeout(seconds):
            yield

    async def start(self, reader: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self.spawn(reader)

    async def close(self) -> None:
        # Frames already queued (a goodbye, a cancel) go out before the socket closes.
        with contextlib.suppress(Exception):
            async with self.asyncio.timeout(1.0):
                while self.queue and self.write_error is None:
                    await self.asyncio.sleep(0)
        tasks, self.tasks = list(self.tasks), set()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        if self.sock is not None:
            self.sock.close()


async def _open_bridge(address: Address, sleep: Callable[[float], Any]) -> socket.socket:
    """The client's end of a ``RedisBridge``, waited for without blocking the event loop."""
    assert address.url is not None
    bridge = RedisBridge(address.url)
    result: list[Any] = []

    def opener() -> None:
        try:
            result.append(bridge.open(None))
        except BaseException as e:
            result.append(e)

    import threading

    threading.Thread(target=opener, daemon=True).start()
    while not result:  # the caller's fail_after bounds this
        await sleep(0.002)
    if isinstance(result[0], BaseException):
        raise result[0]
    sock: socket.socket = result[0]
    return sock


def _retrieve(future: Any) -> None:
    """Mark a write's outcome as seen: its caller may have been cancelled meanwhile."""
    if not future.cancelled():
        future.exception()


# --------------------------------------------------------------------------------
# The client
# --------------------------------------------------------------------------------


class AsyncClient:
    """An async connection to sandboxd, for trio and asyncio alike.

    Same arguments as ``Client``; use it with ``async with``, which connects,
    and closes at the end (cancelling this connection's unfinished jobs).
    Any number of tasks may use one client at once.

        import asyncio
        from sandboxd_client import AsyncClient

        async def main():
            async with AsyncClient() as client:
                results = await asyncio.gather(
                    *(client.run("bash", {"main.sh": f"echo {i}"}) for i in range(10)))
                print([r.text for r in results])     # ['0\\n', '1\\n', ...]

        asyncio.run(main())                          # or trio.run(main)
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
        self._io: _IO | None = None

    # -- context -----------------------------------------------------------------

    async def __aenter__(self) -> AsyncClient:
        if self._io is not None:
            raise RuntimeError("this AsyncClient is already open")
        io: _IO = _TrioIO() if _current_library() == "trio" else _AsyncioIO()
        try:
            async with io.fail_after(self.timeout):
                await io.open(self.address)
        except (OSError, TimeoutError) as e:
            raise connect_error(self.address, e, self.timeout) from None
        self._io = io
        await io.start(self._reader)
        try:
            try:
                async with io.fail_after(self.timeout):
                    await self._send(lambda: (None, self._core.hello()))
                    await self._until(lambda: self._core.welcome is not None, self._core.state)
            except TimeoutError:
                raise connect_error(self.address, None, self.timeout) from None
            self._core.raise_if_broken()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Say goodbye and close; the daemon cancels this connection's unfinished jobs."""
        io, self._io = self._io, None
        if io is None:
            return
        if self._core.broken is None:
            with contextlib.suppress(Exception):
                await io.send(lambda: (None, self._core.message(proto.Goodbye())))
        await io.close()

    # -- I/O -------------------------------------------------------------------------

    def _running(self) -> _IO:
        if self._io is None:
            raise RuntimeError("use `async with AsyncClient(...) as client:` before calling it")
        return self._io

    async def _send(self, make: Callable[[], tuple[T, bytes]]) -> T:
        """Encode with ``make`` (under the write order) and write; a failed write breaks
        the connection."""
        io = self._running()
        try:
            return await io.send(make)
        except OSError as e:
            # A daemon that refuses us writes why, then closes: let the reader deliver
            # that rather than report our broken pipe.
            with contextlib.suppress(TimeoutError):
                async with io.fail_after(1.0):
                    await self._until(lambda: False, self._core.state)
            self._core.lost(e)
            self._wake()
            self._core.raise_if_broken()
            raise

    async def _send_event(self, event: proto.Event) -> None:
        core = self._core
        await self._send(lambda: (None, core.message(event)))

    async def _send_job_event(
        self, event: proto.StdinChunk | proto.EndOfStdin | proto.Cancellation
        | proto.WorkspaceChunk | proto.EndOfWorkspace
    ) -> None:
        """Send stdin, its end or a cancel, unless the job has ended or was cancelled."""
        core = self._core
        await self._send(lambda: (None, core.job_message(event)))

    def _cancel_later(self, job_id: str) -> None:
        """From a cancelled caller: send the job's cancel from a task of the client."""

        async def send() -> None:
            with contextlib.suppress(Exception):
                await self._send_job_event(proto.Cancellation(id=job_id))

        if self._io is not None and self._core.broken is None:
            self._io.spawn(send)

    async def _until(self, cond: Callable[[], bool], slot: Waitable) -> None:
        """Wait until ``cond()`` holds or the connection breaks (the caller then raises)."""
        io = self._running()
        while not cond() and self._core.broken is None:
            event = io.event()
            slot.waiters.append(event.set)
            await event.wait()

    def _wake(self) -> None:
        for slot in self._core.take_changed():
            slot.notify()

    async def _reader(self) -> None:
        """The one task that reads; it never raises (see the module doc)."""
        core = self._core
        io = self._io
        assert io is not None
        try:
            while core.broken is None:
                try:
                    data = await io.receive()
                except OSError as e:
                    core.lost(e)
                else:
                    core.receive(data)
                self._wake()
                for event in core.take_outbox():
                    await self._send_event(event)
        except Exception as e:  # our own bug: report it to the callers, do not crash theirs
            core.fail(
                ProtocolViolation(
                    f"sandboxd_client failed reading from {self.address}: {e!r}",
                    hint="a bug in sandboxd_client; please report it",
                )
            )
            self._wake()

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
        """The daemon's profiles with their limits (from the welcome: no round trip).

        async with AsyncClient() as client:
            print([p.name for p in client.profiles()])
        """
        return list(self._core.welcome.profiles) if self._core.welcome else []

    # -- jobs ----------------------------------------------------------------------

    async def run(
        self, profile: str, files: Mapping[str, Data] | None = None, **job: Unpack[JobOptions]
    ) -> JobResult:
        """Run a job and wait for its result (``Client.run``, awaited).

        Cancelling the caller cancels the job on the daemon.

            async with AsyncClient() as client:
                r = await client.run("python3", {"main.py": "print(2 ** 10)"})
                assert r.text == "1024\\n"
        """
        async with await self.submit(profile, files, **job) as handle:
            return await handle.result()

    async def submit(
        self,
        profile: str,
        files: Mapping[str, Data] | None = None,
        *,
        stream: bool = False,
        interactive_stdin: bool = False,
        **job: Unpack[JobOptions],
    ) -> AsyncJob:
        """Submit a job; return its handle once the daemon has accepted it.

        async with AsyncClient() as client:
            handle = await client.submit("bash", {"main.sh": "sleep 1; echo done"})
            ...                                  # other work meanwhile
            print((await handle.result()).text)  # done
        """
        io = self._running()
        opts: dict[str, Any] = dict(job)
        source = opts.pop("workspace", None)
        archive = None
        opened = False
        if source is not None:  # read in blocking calls: a local file, a chunk at a time
            archive, opts["workspace"], opened = open_workspace(source)
        try:
            handle = await self._submit_retrying(io, profile, files, stream,
                                                 interactive_stdin, opts)
            if archive is not None:
                limits = self._core.conn.peer_limits
                size = (limits or proto.DEFAULT_SIZE_LIMITS).max_chunk
                while not handle.done and (piece := archive.read(size)):
                    await self._send_job_event(proto.WorkspaceChunk(id=handle.id, data=piece))
                await self._send_job_event(proto.EndOfWorkspace(id=handle.id))
        finally:
            if opened and archive is not None:
                archive.close()
        return handle

    async def _submit_retrying(self, io: Any, profile: str, files: Mapping[str, Data] | None,
                               stream: bool, interactive_stdin: bool,
                               opts: dict[str, Any]) -> AsyncJob:
        retries = opts.pop("busy_retries", None)
        delays = busy_delays(self.busy_retries if retries is None else retries)
        attempt = 0
        while True:
            attempt += 1
            sub = build_submission(
                self._core.new_job_id(),
                profile,
                files,
                stream=stream,
                interactive_stdin=interactive_stdin,
                **opts,
            )
            slot = await self._submit_once(sub)
            err = slot.error
            if isinstance(err, ServerBusy):
                if delays:
                    await io.sleep(delays.pop(0))
                    continue
                err.attempts = attempt
            if err is not None:
                raise err
            return AsyncJob(self, slot)

    async def _submit_once(self, sub: proto.JobSubmission) -> JobSlot:
        """Send one submission; wait until it is accepted or refused."""
        slot: JobSlot = await self._send(partial(self._core.submit, sub))
        try:
            await self._until(lambda: slot.settled, slot)
        except BaseException:
            slot.abandoned = True
            self._cancel_later(slot.id)
            raise
        return slot

    async def stream(
        self,
        profile: str,
        files: Mapping[str, Data] | None = None,
        *,
        interactive_stdin: bool = False,
        **job: Unpack[JobOptions],
    ) -> AsyncJob:
        """Submit a job whose output arrives as it is written: ``async for`` over the handle.

        async with AsyncClient() as client:
            async with await client.stream("python3", {"main.py": source}) as job:
                async for chunk in job:
                    await websocket.send(chunk.text)      # a playground's back end
                result = await job.result()
        """
        return await self.submit(
            profile, files, stream=True, interactive_stdin=interactive_stdin, **job
        )

    # -- requests --------------------------------------------------------------------

    async def ping(self) -> float:
        """Seconds a round trip to the daemon takes.

        async with AsyncClient() as client:
            print(await client.ping())
        """
        start = time.monotonic()
        await self._request(proto.Ping())
        return time.monotonic() - start

    async def jobs(self) -> list[proto.JobInfo]:
        """Every job queued or running on the daemon, of every connection (``ps``).

        async with AsyncClient() as client:
            print([(j.id, j.state) for j in await client.jobs()])
        """
        answer = await self._request(proto.JobListRequest())
        assert isinstance(answer, proto.JobList)
        return list(answer.jobs)

    async def kill(self, ref: str) -> bool:
        """Stop job ``ref`` (a ``JobInfo.id``) of any connection; False if there is none.

        async with AsyncClient() as client:
            for info in await client.jobs():
                await client.kill(info.id)
        """
        answer = await self._request(proto.KillRequest(job=ref))
        assert isinstance(answer, proto.KillResult)
        return answer.found

    async def stats(self) -> proto.ServerStats:
        """The daemon's counters (uptime, jobs, warm pools...).

        async with AsyncClient() as client:
            print((await client.stats()).uptime)
        """
        answer = await self._request(proto.StatsRequest())
        assert isinstance(answer, proto.ServerStats)
        return answer

    async def _request(self, event: proto.Event) -> proto.Event:
        io = self._running()
        slot = await self._send(partial(self._core.request, event))
        async with io.fail_after(self.timeout):
            await self._until(lambda: slot.done, slot)
        if slot.error is not None:
            raise slot.error
        self._core.raise_if_broken()
        assert slot.value is not None
        return slot.value


class AsyncJob:
    """A job the daemon accepted, seen from async code: output, stdin, result.

    Leaving ``async with`` cancels it if it has not finished.

        async with AsyncClient() as client:
            async with await client.stream("bash", {"main.sh": "read x; echo got $x"},
                                           interactive_stdin=True) as job:
                await job.write("42\\n")
                await job.close_stdin()
                print([chunk.text async for chunk in job])     # ['got 42\\n']
    """

    def __init__(self, client: AsyncClient, slot: JobSlot) -> None:
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

    async def __aenter__(self) -> AsyncJob:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        slot = self._slot
        if not slot.done and self._client._core.broken is None:
            if e is None:
                with contextlib.suppress(Exception):
                    await self.cancel()
                    async with self._client._running().fail_after(self._client.timeout):
                        await self._client._until(lambda: slot.done, slot)
            else:  # cancelled, or failed: no more awaiting here
                self._client._cancel_later(slot.id)
        slot.abandoned = True

    def __aiter__(self) -> AsyncJob:
        return self

    async def __anext__(self) -> Output:
        """The next output chunk, in order; the iteration ends with the job."""
        slot = self._slot
        try:
            await self._client._until(lambda: bool(slot.chunks) or slot.done, slot)
        except BaseException:
            if not slot.done:
                slot.abandoned = True
                self._client._cancel_later(slot.id)
            raise
        if slot.chunks:
            return slot.chunks.popleft()
        if slot.error is not None:
            raise slot.error
        raise StopAsyncIteration

    async def write(self, data: Data) -> None:
        """Send bytes (or text, as UTF-8) to stdin (``interactive_stdin`` jobs only)."""
        if not self._stdin_open:
            raise ValueError(
                f"job {self.id}: stdin is closed (or the job was not submitted with "
                "interactive_stdin=True)"
            )
        raw = data.encode() if isinstance(data, str) else bytes(data)
        for piece in pieces(raw, self._client._core):
            await self._client._send_job_event(proto.StdinChunk(id=self.id, data=piece))

    async def close_stdin(self) -> None:
        """End stdin: the program reads end-of-file. Idempotent."""
        if self._stdin_open:
            self._stdin_open = False
            await self._client._send_job_event(proto.EndOfStdin(id=self.id))

    async def cancel(self) -> None:
        """Ask the daemon to stop the job; ``result()`` then says ``cancelled``."""
        self._stdin_open = False
        await self._client._send_job_event(proto.Cancellation(id=self.id))

    async def result(self) -> JobResult:
        """Wait for the result; raises the error that ended the job instead, if any.

        Cancelling the caller cancels the job on the daemon.
        """
        slot = self._slot
        try:
            await self._client._until(lambda: slot.done, slot)
        except BaseException:
            if not slot.done:
                slot.abandoned = True
                self._client._cancel_later(slot.id)
            raise
        if slot.error is not None:
            raise slot.error
        assert slot.result is not None
        return slot.result
