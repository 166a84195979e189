"""The export process's own loop (``export_processes.run``), forked as the fork server forks
it, with a producer that reports what it sees from inside."""

from __future__ import annotations

import gc
import os
import socket
from typing import Any

from mediaproxy.integrations import export_processes


class Inspecting:
    """A producer whose only batch says whether the cycle collector runs in its process."""

    rows = 1

    def first(self, query: str, params: Any) -> bytes:
        return f"collector enabled: {gc.isenabled()}".encode()

    def next(self) -> bytes:
        return b""

    def interrupt(self) -> None:
        pass

    def close(self) -> None:
        pass


def produce(job: Any) -> tuple[Inspecting, str, Any]:
    return Inspecting(), "", {}


def frames(sock: socket.socket) -> dict[bytes, bytes]:
    """The process's frames by kind, up to its closing one."""
    out: dict[bytes, bytes] = {}
    while b"Z" not in out:
        kind, length = export_processes._HEADER.unpack(receive(sock, export_processes._HEADER.size))
        out[kind] = receive(sock, length)
    return out


def receive(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        part = sock.recv(size - len(data))
        assert part, "the export process ended early"
        data += part
    return data


def test_the_export_process_frees_its_rows_without_the_cycle_collector() -> None:
    # Rows are freed by reference counting as each batch leaves; the collector would only walk
    # them again and again (the export's CPU, bench/RESULTS.md).
    assert gc.isenabled()
    ours, theirs = socket.socketpair()
    pid = os.fork()
    if pid == 0:  # the export process
        ours.close()
        try:
            export_processes.run(theirs, produce)
        finally:
            os._exit(0)
    theirs.close()
    with ours:
        job = b"\x80\x04N."  # pickle.dumps(None)
        ours.sendall(export_processes._JOB_LENGTH.pack(len(job)) + job)
        received = frames(ours)
    os.waitpid(pid, 0)
    assert received[b"D"] == b"collector enabled: False"
    assert received[b"Z"].split()[0] == b"1"
