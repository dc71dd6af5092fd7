"""The SQLite writer in a process of its own (``writer="process"``, the default).

Why: in one process the writer thread's Python work (deciding a group, binding its
rows) needs the GIL that the event loop holds while it parses requests, so the two
take turns and every group waits for the loop to go idle. Measured under ``wrk`` (16
connections, durable sets): the writer's share was ~0.4 ms of every ~2 ms cycle,
spent while the loop stood still. In its own process the same group commit
(:func:`~.sqlite_writer.commit_group`) runs while the loop goes on serving.

The server keeps everything else: reads (its own WAL connection), the read cache,
events to watchers, the vector index. Units cross a socket pair as pickled
``(ticket, ops)`` batches, one frame per loop iteration; each durable group comes
back as one frame of ``(commit_seconds, [(ticket, results, error, events), ...])``,
sent after its COMMIT returned, which with ``synchronous=FULL`` includes the WAL's
fsync: an acknowledged write is on disk. So ``commit_seconds`` includes that fsync,
and no separate fsync time is reported (SQLite does not expose it).

If the writer process dies, writes in flight fail with 503 (they may or may not have
committed), a new one is started, and events committed but not yet published are read
back from the log and published, so subscribers miss nothing. If the server dies,
the writer sees the socket close, commits what it was given, and exits.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import socket
import struct
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from ...errors import StorageUnavailable
from .writer import MAX_GROUP, Deliver, Unit, commit_group, connect, is_io_failure

log = logging.getLogger("agentfield_asgi.store")

_HEADER = struct.Struct("!I")  # frame length
_READY = "ready"
START_SECONDS = 30.0  # a loaded machine may take long to start Python
STOP_SECONDS = 60.0  # for the writer to finish what it was sent, at close
RECOVER_ATTEMPTS = 5


def _frame(message: Any) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(data)) + data


def _split_frames(buffer: bytearray) -> Iterator[Any]:
    """The complete frames at the start of ``buffer`` (removed from it), decoded."""
    at = 0
    while len(buffer) - at >= _HEADER.size:
        (size,) = _HEADER.unpack_from(buffer, at)
        if len(buffer) - at - _HEADER.size < size:
            break
        start = at + _HEADER.size
        yield pickle.loads(buffer[start : start + size])
        at = start + size
    del buffer[:at]


# ------------------------------------------------------------ server side
class ProcessWriter:
    """Drives the writer process from the event loop.

    ``submit(unit)`` on the loop; ``deliver(group, commit_seconds, None)`` is called on
    the loop, in commit order, with each group's results filled in.
    ``recover(after_id)`` is awaited after a replacement writer started: it publishes
    the events after ``after_id`` and returns the last id it published.
    """

    def __init__(
        self,
        path: str,
        synchronous: str,
        deliver: Deliver,
        recover: Callable[[int], Awaitable[int]],
    ) -> None:
        self.path = path
        self.synchronous = synchronous
        self._deliver = deliver
        self._recover = recover
        self._inflight: dict[int, Unit] = {}
        self._pending: list[int] = []  # tickets to send, once a writer is ready
        self._next_ticket = 0
        self._channel: _Channel | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._restarting: asyncio.Task[None] | None = None
        self._stopping = False
        self.last_event_id = 0  # the newest event delivered: what a replacement resumes after

    @property
    def pid(self) -> int | None:
        """The writer process's id (the newest one started)."""
        return self._proc.pid if self._proc is not None else None

    def problem(self) -> str | None:
        """Why the writer process cannot take writes now, or None when it can."""
        if self._channel is None or self._proc is None:
            return "the SQLite writer process is not running (restarting)"
        if self._proc.poll() is not None:
            return f"the SQLite writer process exited with {self._proc.returncode}"
        return None

    async def start(self) -> None:
        """Start the writer process; returns once it has opened the database."""
        self._channel = await self._spawn()
        self._flush()

    def submit(self, unit: Unit) -> None:
        self._next_ticket += 1
        self._inflight[self._next_ticket] = unit
        self._pending.append(self._next_ticket)
        if self._channel is None:
            if self._restarting is None and not self._stopping:  # the last start failed
                self._restarting = asyncio.get_running_loop().create_task(self._restart())
        elif len(self._pending) == 1:
            # Everything submitted in this loop iteration goes in one frame.
            asyncio.get_running_loop().call_soon(self._flush)

    async def stop(self) -> None:
        """Let the writer commit and answer everything sent, then wait for it to exit."""
        self._stopping = True
        if self._restarting is not None:
            await asyncio.gather(self._restarting, return_exceptions=True)
        channel = self._channel
        if channel is not None:
            self._flush()
            channel.transport.write_eof()  # the writer finishes its queue and exits
            try:
                async with asyncio.timeout(STOP_SECONDS):
                    await channel.closed
            except TimeoutError:
                log.error("the SQLite writer did not finish in %ss; killing it", STOP_SECONDS)
                if self._proc is not None:
                    self._proc.kill()
                channel.close()
        if self._proc is not None:
            await asyncio.to_thread(_reap, self._proc)
            self._proc = None
        self._fail_all(StorageUnavailable("store is closed"))

    async def _spawn(self) -> _Channel:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        try:
            self._proc = await asyncio.to_thread(
                subprocess.Popen,
                [sys.executable, "-m", __name__, str(theirs.fileno()), self.path, self.synchronous],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches the server, which then closes us
                # Finds the package where this process did (an --app-dir, a sys.path edit).
                env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
            )
        finally:
            theirs.close()
        ready: asyncio.Future[None] = loop.create_future()
        _, channel = await loop.create_unix_connection(lambda: _Channel(self, ready), sock=ours)
        try:
            async with asyncio.timeout(START_SECONDS):
                await ready
        except BaseException:
            channel.close()
            await asyncio.to_thread(_reap, self._proc)
            raise
        return channel

    async def _restart(self) -> None:
        try:
            if self._proc is not None:
                await asyncio.to_thread(_reap, self._proc)
            channel = await self._spawn()
        except Exception as exc:
            self._restarting = None
            log.error("could not start a new SQLite writer process: %s", exc)
            self._fail_all(StorageUnavailable(f"the database writer could not start: {exc}"))
            return
        # What the old writer committed but never reported goes out before anything the
        # new one commits; writes submitted meanwhile wait.
        for attempt in range(RECOVER_ATTEMPTS):
            try:
                self.last_event_id = await self._recover(self.last_event_id)
                break
            except Exception:
                log.exception("could not publish the events of the writer that ended")
                await asyncio.sleep(0.1 * 2**attempt)
        self._restarting = None
        if channel.lost:  # died already: once more
            if not self._stopping:
                self._restarting = asyncio.get_running_loop().create_task(self._restart())
            return
        self._channel = channel
        self._flush()

    # ------------------------------------------------------------ from the channel
    def _flush(self) -> None:
        if not self._pending or self._channel is None:
            return
        batch, self._pending = self._pending, []
        # Each unit's work pickled apart: one that will not pickle (here) or unpickle
        # (there) fails alone.
        encoded = []
        for ticket in batch:
            work = self._inflight[ticket].ops
            try:
                encoded.append((ticket, pickle.dumps(work, protocol=pickle.HIGHEST_PROTOCOL)))
            except Exception as exc:
                failure = TypeError(f"a write for the writer process must pickle: {exc}")
                self._fail([ticket], failure)
        if encoded:
            self._channel.transport.write(_frame(encoded))

    def _replies(
        self,
        message: tuple[float | None, list[tuple[int, Any, BaseException | None, list[Any]]]],
    ) -> None:
        commit_seconds, replies = message
        group: list[Unit] = []
        for ticket, results, error, events in replies:
            unit = self._inflight.pop(ticket, None)
            if unit is None:
                continue
            unit.results, unit.error, unit.events = results, error, events
            if events:
                self.last_event_id = max(self.last_event_id, events[-1].id)
            group.append(unit)
        if group:
            try:
                self._deliver(group, commit_seconds, None)
            except Exception:  # never leave a caller waiting
                log.exception("answering a group failed")
                for unit in group:
                    if not unit.ticket.done():
                        unit.ticket.set_exception(StorageUnavailable("the write was not answered"))

    def _lost(self, channel: _Channel) -> None:
        """The writer process is gone (or its socket is)."""
        channel.lost = True
        if channel is not self._channel:
            return  # not yet in use (a start in progress notices it)
        self._channel = None
        if self._stopping:
            return
        log.error("the SQLite writer process ended; starting another")
        unsent = set(self._pending)
        self._fail(
            [t for t in self._inflight if t not in unsent],
            StorageUnavailable("the database writer exited; the write may not have been made"),
        )
        if self._restarting is None:
            self._restarting = asyncio.get_running_loop().create_task(self._restart())

    def _fail(self, tickets: list[int], error: BaseException) -> None:
        group = []
        for ticket in tickets:
            unit = self._inflight.pop(ticket)
            unit.results, unit.error, unit.events = None, error, []
            group.append(unit)
        if group:
            self._deliver(group, None, None)

    def _fail_all(self, error: BaseException) -> None:
        self._pending = []
        self._fail(list(self._inflight), error)


class _Channel(asyncio.Protocol):
    """The server's end of the socket pair."""

    def __init__(self, owner: ProcessWriter, ready: asyncio.Future[None]) -> None:
        self.owner = owner
        self.ready = ready
        self.buffer = bytearray()
        self.lost = False
        self.transport: asyncio.WriteTransport = None  # type: ignore[assignment]
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        for message in _split_frames(self.buffer):
            if self.ready.done():
                self.owner._replies(message)
            elif message == _READY:
                self.ready.set_result(None)
            else:  # the writer could not open the database
                self.ready.set_exception(StorageUnavailable(f"database writer: {message}"))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(StorageUnavailable("the database writer exited at start"))
        if not self.closed.done():
            self.closed.set_result(None)
        self.owner._lost(self)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def _reap(proc: subprocess.Popen[bytes]) -> None:
    try:
        proc.wait(timeout=START_SECONDS)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# ------------------------------------------------------------ writer side
def serve_writer(sock: socket.socket, path: str, synchronous: str) -> int:
    """Commit what the server at the other end of ``sock`` sends until it closes its end.

    One thread, no hand-offs: whatever arrived while the last group was being committed
    is the next group. The connection uses SQLite's own ``synchronous`` (with ``FULL``
    each COMMIT fsyncs the WAL), so a group is durable when its COMMIT returns, and only
    then answered."""

    def send(message: Any) -> None:
        sock.sendall(_frame(message))

    def answer(group: list[Unit], commit_seconds: float | None = None) -> None:
        replies = [(u.ticket, u.results, u.error, u.events) for u in group]
        try:
            frame = _frame((commit_seconds, replies))
        except Exception:  # something will not pickle: send what can be
            frame = _frame((commit_seconds, [_portable_reply(*reply) for reply in replies]))
        sock.sendall(frame)

    try:
        conn = connect(path, synchronous, readonly=False)
    except Exception as exc:
        send(f"{type(exc).__name__}: {exc}")
        return 1
    send(_READY)
    buffer = bytearray()
    failed: BaseException | None = None  # a disk error: refuse writes from then on
    try:
        while chunk := sock.recv(1 << 20):
            buffer += chunk
            units = [_unit(t, work) for batch in _split_frames(buffer) for t, work in batch]
            unreadable = [u for u in units if u.error is not None]
            if unreadable:
                answer(unreadable)
                units = [u for u in units if u.error is None]
            for at in range(0, len(units), MAX_GROUP):
                group = units[at : at + MAX_GROUP]
                commit_seconds = None
                if failed is None:
                    commit_seconds = commit_group(conn, group)
                    failed = next((u.error for u in group if is_io_failure(u.error)), None)
                else:
                    for unit in group:
                        unit.error = StorageUnavailable(f"{failed}; restart the server")
                answer(group, commit_seconds)
    except OSError:
        pass  # the server is gone: nobody to answer
    finally:
        conn.close()
    return 0


def _unit(ticket: int, work: bytes) -> Unit:
    try:
        return Unit(pickle.loads(work), ticket)
    except Exception as exc:  # e.g. a function from a module this process cannot import
        failure = TypeError(f"the writer process could not read this write: {exc!r}")
        return Unit([], ticket, error=failure)


def _portable_reply(
    ticket: int, results: Any, error: BaseException | None, events: list[Any]
) -> tuple[int, Any, BaseException | None, list[Any]]:
    """A reply the server can unpickle: results that will not pickle become an error
    (the write was made: its events still go out)."""
    try:
        pickle.dumps(results, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        return ticket, None, StorageUnavailable(f"the write was made; its result: {exc}"), events
    return ticket, results, _portable(error), events


def _portable(error: BaseException | None) -> BaseException | None:
    """An error the server can unpickle: ours as they are, others as their message."""
    if error is None or isinstance(error, StorageUnavailable):
        return error
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return StorageUnavailable(f"{type(error).__name__}: {error}")


def main(argv: list[str]) -> int:
    fd, path, synchronous = int(argv[0]), argv[1], argv[2]
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with socket.socket(fileno=fd) as sock:
        return serve_writer(sock, path, synchronous)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
