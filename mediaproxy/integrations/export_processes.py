"""Export worker processes: each export's rows are produced and formatted in a process of its
own, so the CPU it burns never holds the event loop's GIL.

The gateway relays bytes; everything costly (SQLite's steps and Python's csv module, libpq's
COPY messages, Arrow's batches) happens in the export's process, on its own core when the
machine has one. The pieces:

* a **fork server**, started once per gateway process (``python -m`` this module), that has
  imported the export code and, once asked for them, the database libraries: a new export is a
  ``fork`` of it, milliseconds, not an interpreter start and psycopg's import.
* per export, a **socketpair**. The gateway sends the fork server the export's end (over a
  ``SOCK_SEQPACKET`` control socket, as SCM_RIGHTS) and the job on its own end; the forked
  process answers with frames on the same socket: ``P`` its pid, ``D`` CSV bytes, ``E`` the
  failure's message, ``Z`` the end (rows, peak RSS). The socket is the flow control: the
  process blocks on it when the client is slow, so it holds one batch and the kernel's buffer.
* **stopping**: the process watches its socket from a thread; when the gateway closes it (a
  timer, a disconnect, a shutdown, the gateway's own death), it interrupts the query (a
  PostgreSQL cancel request) and exits at once, taking its SQLite statement with it. The
  gateway holds a pidfd for it and SIGKILLs it if it is still there ``EXIT_GRACE_S`` later:
  no process outlives its request. The fork server ignores SIGCHLD, so the kernel reaps them.

The fork server exits when every gateway process that holds its control socket has gone.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import gc
import importlib
import logging
import os
import pickle
import resource
import signal
import socket
import struct
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from tornado.iostream import IOStream, StreamClosedError

log = logging.getLogger("mediaproxy.csv_export")

# Frame header: kind (one byte) and payload length (unsigned 32-bit, big-endian).
_HEADER = struct.Struct(">cI")
_JOB_LENGTH = struct.Struct(">I")
# The gateway reads a data frame in pieces of at most this size, so its memory per export
# stays bounded whatever batch the process sends; fewer, larger reads than Tornado's 64 KiB
# default cost the event loop less per byte relayed (bench/csv_export.py's gateway CPU).
PIECE_BYTES = 1024 * 1024
READ_CHUNK_BYTES = 256 * 1024
# After its socket closes an export process cancels its query (a round trip to PostgreSQL at
# most) and exits; one still there this much later is killed.
EXIT_GRACE_S = 5.0
# The package's parent folder, for the fork server's sys.path: the gateway may run from a
# checkout that is not installed.
_PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])


class QueryFailed(Exception):
    """The query failed (the database refused it or broke it off), or its process ended
    without its closing frame; the message is for the log."""


class Producer(Protocol):
    """What an export process runs: ``mediaproxy.integrations.csv_export``'s CsvChunks."""

    rows: int

    def first(self, query: str, params: Any) -> bytes: ...

    def next(self) -> bytes: ...

    def interrupt(self) -> None: ...

    def close(self) -> None: ...


# --- in the gateway --------------------------------------------------------------------------


class ForkServer:
    """The gateway's handle on its fork server: started on first use, restarted if it died."""

    def __init__(self) -> None:
        self._control: socket.socket | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._owner_pid = 0
        self._warm: set[str] = set()

    def warm(self, module: str) -> None:
        """Have the fork server import ``module`` now, so no export waits for it later."""
        if module not in self._warm:
            self._warm.add(module)
            self._send(b"warm " + module.encode(), None)

    def spawn(self, module: str) -> socket.socket:
        """A new export process (with ``module`` imported); the gateway's end of its socket."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._send(b"fork " + module.encode(), theirs)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        return ours

    def _send(self, message: bytes, passed: socket.socket | None) -> None:
        fds = [passed.fileno()] if passed is not None else []
        for attempt in (1, 2):
            control = self._running()
            try:
                socket.send_fds(control, [message], fds)
                return
            except OSError:  # the fork server has died: start another, once
                if attempt == 2:
                    raise
                self._stop()

    def _running(self) -> socket.socket:
        if self._control is not None and self._owner_pid == os.getpid():
            return self._control
        # First use, or a gateway process forked from the one that started it: each gateway
        # process has its own, so that its exports are its own children's grandchildren.
        if self._control is not None:  # the copy a fork inherited: the parent keeps its own
            self._control.close()
            self._process = None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PACKAGE_PARENT, env.get("PYTHONPATH")]))
        with theirs:
            self._process = subprocess.Popen(
                [sys.executable, "-m", __name__, str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        if self._owner_pid != os.getpid():
            atexit.register(self._stop)
        self._control, self._owner_pid = ours, os.getpid()
        # A fork server started again (the last one died) imports what the first was asked to.
        for module in ("mediaproxy.integrations.csv_export", *sorted(self._warm)):
            socket.send_fds(ours, [b"warm " + module.encode()], [])
        return ours

    def _stop(self) -> None:
        """Close the control socket (the fork server reads its end and exits) and reap it."""
        if self._control is not None:
            self._control.close()
            self._control = None
        process, self._process = self._process, None
        if process is not None and self._owner_pid == os.getpid():
            try:
                process.wait(1.0)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class ExportProcess:
    """One export's process, as the gateway reads it: CSV pieces, then the end."""

    def __init__(self, sock: socket.socket) -> None:
        self._stream = IOStream(sock, read_chunk_size=READ_CHUNK_BYTES)
        self._remaining = 0  # bytes of the current data frame not read yet
        self._pidfd = -1
        self._kill_timer: asyncio.TimerHandle | None = None
        self.finished = False
        self.rows = 0
        self.peak_rss_kib = 0

    async def start(self, job: Any) -> None:
        """Send the job (any picklable object; the process hands it to its producer)."""
        payload = pickle.dumps(job)
        try:
            await self._stream.write(_JOB_LENGTH.pack(len(payload)) + payload)
        except StreamClosedError:
            raise QueryFailed("the export process ended before it started") from None

    async def read(self) -> bytes:
        """The next piece of CSV; b"" once the export has ended well. QueryFailed if not."""
        try:
            while self._remaining == 0:
                kind, length = _HEADER.unpack(await self._stream.read_bytes(_HEADER.size))
                if kind == b"D":
                    self._remaining = length
                    continue
                payload = await self._stream.read_bytes(length) if length else b""
                if kind == b"P":
                    self._watch(int(payload))
                elif kind == b"E":
                    raise QueryFailed(payload.decode("utf-8", "replace"))
                elif kind == b"Z":
                    rows, rss = payload.split()
                    self.rows, self.peak_rss_kib, self.finished = int(rows), int(rss), True
                    return b""
                else:
                    raise QueryFailed(f"unknown frame {kind!r} from the export process")
            piece = await self._stream.read_bytes(min(self._remaining, PIECE_BYTES))
        except StreamClosedError:
            raise QueryFailed("the export process ended without finishing") from None
        self._remaining -= len(piece)
        return piece

    def _watch(self, pid: int) -> None:
        try:
            self._pidfd = os.pidfd_open(pid)
        except ProcessLookupError:  # gone already
            return
        asyncio.get_running_loop().add_reader(self._pidfd, self._exited)

    def _exited(self) -> None:
        asyncio.get_running_loop().remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._pidfd = -1
        if self._kill_timer is not None:
            self._kill_timer.cancel()

    def close(self) -> None:
        """Close the socket: a process still running stops its query and exits (killed if it
        has not within EXIT_GRACE_S)."""
        self._stream.close()
        if self._pidfd >= 0:
            self._kill_timer = asyncio.get_running_loop().call_later(EXIT_GRACE_S, self._kill)

    def _kill(self) -> None:
        if self._pidfd >= 0:
            log.warning("an export process outlived its request by %.0f s: killed", EXIT_GRACE_S)
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)


# --- in the fork server and its children ----------------------------------------------------


def serve(control: socket.socket) -> None:
    """The fork server's loop: ``warm MODULE`` imports it, ``fork MODULE`` (with a socket)
    starts an export process; an empty read means every gateway process has gone."""
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the export processes
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is for the gateway
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(control, 1024, 1)
        except OSError:
            return
        if not message:
            return
        verb, _, module = message.decode().partition(" ")
        try:
            loaded = importlib.import_module(module)
        except ImportError:  # an optional package: the export that needs it will say so
            loaded = None
        if verb != "fork" or not fds:
            continue
        if loaded is None:
            os.close(fds[0])  # the gateway reads "ended without finishing"
            continue
        produce = loaded.produce
        if os.fork() == 0:
            control.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            code = 1
            try:
                run(socket.socket(fileno=fds[0]), produce)
                code = 0
            except (EOFError, OSError):  # the gateway closed the socket: nobody to tell
                pass
            except BaseException:
                traceback.print_exc()  # to the gateway's stderr; it reports a cut export
            finally:
                os._exit(code)
        os.close(fds[0])


def run(sock: socket.socket, produce: Callable[[Any], tuple[Producer, str, Any]]) -> None:
    """One export process: read the job, stream its frames, stop when the gateway leaves.

    The cycle collector is off: each batch's rows are freed by reference counting as it
    leaves, and the collector would only walk them again and again, costing a PostgreSQL
    export about as much CPU as the COPY itself (bench/RESULTS.md). The process lives for one
    export, so anything cyclic it leaves is freed when it exits.
    """
    gc.disable()
    (length,) = _JOB_LENGTH.unpack(_receive_exactly(sock, _JOB_LENGTH.size))
    job = pickle.loads(_receive_exactly(sock, length))
    producer, query, params = produce(job)
    _send(sock, b"P", str(os.getpid()).encode())
    threading.Thread(target=_stop_when_abandoned, args=(sock, producer), daemon=True).start()
    try:
        chunk = producer.first(query, params)
        while chunk:
            _send(sock, b"D", chunk)
            chunk = producer.next()
    except QueryFailed as error:
        _send(sock, b"E", str(error).encode())
        return
    finally:
        producer.close()
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    _send(sock, b"Z", f"{producer.rows} {peak_kib}".encode())


def _stop_when_abandoned(sock: socket.socket, producer: Producer) -> None:
    """Wait for the gateway to close its end (it never writes after the job); then stop the
    query and exit without finishing anything."""
    with contextlib.suppress(OSError):
        while sock.recv(1):
            pass
    with contextlib.suppress(Exception):
        producer.interrupt()
    os._exit(0)


def _receive_exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        part = sock.recv(size - len(data))
        if not part:
            raise EOFError("the gateway closed the export's socket")
        data += part
    return bytes(data)


def _send(sock: socket.socket, kind: bytes, payload: bytes) -> None:
    sock.sendall(_HEADER.pack(kind, len(payload)))
    sock.sendall(payload)


def _main() -> None:
    serve(socket.socket(fileno=int(sys.argv[1])))


if __name__ == "__main__":
    _main()
