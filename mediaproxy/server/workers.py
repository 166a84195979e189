"""``[server] processes = N``: N worker processes sharing one listening socket.

The parent binds the port, then forks the workers; each runs a whole gateway on the inherited
socket and the kernel hands each new connection to one of them (the pattern of tornado's
``fork_processes``). One socket rather than SO_REUSEPORT: port 0 and the start-up line name a
single port, and a draining worker leaves no connections stranded in an accept queue of its
own. Not ``fork_processes`` itself: its parent dies on SIGTERM without telling the workers (a
container runtime signals only PID 1), and it cannot tell the metrics a worker is gone.

The parent forwards SIGTERM, SIGINT and SIGQUIT to every worker, which drains as a single
process does (``RunningServer.shutdown``); it closes its own copy of the socket at once, so
the port refuses new connections as soon as every worker has stopped accepting. SIGUSR1 is
passed on (every worker reopens the access log). A worker that crashes is restarted, unless it
crashed within ``MIN_UPTIME_S`` of starting (that would only repeat). The parent exits 0 once
every worker has drained and exited 0.

SIGHUP reloads: the parent reads the config again; invalid, it logs why and nothing changes;
valid, it forks a new set of workers with it and sends the old ones SIGQUIT. They stop
accepting at once (the new ones accept from then on), serve what reaches them on the
connections they have, closing each after its response, and exit once their streams have
finished: no request is refused or cut. A fresh process also imports function handlers anew.

Caps hold for the instance, not each worker: the stream counts live in a ``SharedTable`` the
parent creates before forking, one column per worker, and the parent frees a worker's column
(whatever it still counted) when it reaps it, so a crashed worker's slots come back at once.

Metrics: prometheus_client's multiprocess mode, in ``PROMETHEUS_MULTIPROC_DIR`` (the
operator's, emptied at start, or a temporary folder removed at exit). The variable must be set
before prometheus_client is first imported, which is why the gateway is imported only here.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from types import FrameType
from typing import NoReturn

from mediaproxy.config import Config, ConfigError
from mediaproxy.ops.metrics_dir import multiprocess_dir, prepare_metrics_dir
from mediaproxy.server import eventloop
from mediaproxy.server.shared_table import SharedTable

log = logging.getLogger("mediaproxy")

MIN_UPTIME_S = 1.0
# The parent's part in each signal: stop (and pass it on), reload, or only pass it on.
STOPPING_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
RELOAD_SIGNAL = signal.SIGHUP
PASSED_ON_SIGNALS = (signal.SIGUSR1,)
FORWARDED_SIGNALS = STOPPING_SIGNALS + (RELOAD_SIGNAL,) + PASSED_ON_SIGNALS


def process_count(config: Config) -> int:
    return config.server.processes or os.cpu_count() or 1


def run(config: Config, read_config: Callable[[], Config] | None = None) -> int:
    """Serve until SIGTERM, SIGINT or SIGQUIT and a graceful drain; the exit code.
    ``read_config`` reads the config again, on SIGHUP.

    Raises ListenError when the address cannot be taken (nothing has started then)."""
    count = process_count(config)
    if count == 1:
        from mediaproxy.server.app import listen, serve

        # Held until serve() handles them, as in a worker: the start-up line below tells a
        # supervisor it may signal us.
        signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED_SIGNALS)
        # Bound before the loop starts, as the parent does below: a failure is the same line.
        sockets = listen(config)
        eventloop.run(serve(config, sockets, read_config=read_config), config.server.event_loop)
        return 0
    remove_metrics_dir = prepare_metrics_dir()
    try:
        config = replace(config, server=replace(config.server, processes=count))
        return _Supervisor(config, count, read_config).run()
    finally:
        remove_metrics_dir()


@dataclass
class _Worker:
    index: int
    started_at: float
    column: int  # its column in the shared table


# Columns of the shared table per worker: a worker being replaced still counts its running
# streams while its successor starts, and a crash loop's replacements are not yet reaped.
COLUMNS_PER_WORKER = 4


class _Supervisor:
    def __init__(
        self, config: Config, count: int, read_config: Callable[[], Config] | None
    ) -> None:
        self.config = config
        self.count = count
        self.read_config = read_config
        self.workers: dict[int, _Worker] = {}
        self.replaced: set[int] = set()  # pids told to finish and exit (a reload)
        self.stopping = False
        self.failed = False
        self.sockets: list[socket.socket] = []
        self.table = SharedTable(columns=COLUMNS_PER_WORKER * count)
        self.free_columns = list(range(self.table.columns))

    def run(self) -> int:
        from mediaproxy.ops import metrics, status
        from mediaproxy.server import app

        metrics_folder = multiprocess_dir()
        assert metrics_folder is not None  # run() prepared it
        self.sockets = app.listen(self.config)
        for signum in STOPPING_SIGNALS:
            signal.signal(signum, self._stop)
        signal.signal(RELOAD_SIGNAL, self._reload)
        for signum in PASSED_ON_SIGNALS:
            signal.signal(signum, self._pass_on)
        for index in range(self.count):
            self._fork(index)
        log.info(
            "mediaproxy: %d worker processes (pids %s)",
            self.count,
            " ".join(map(str, self.workers)),
        )
        while self.workers:
            pid, wait_status = os.wait()
            worker = self.workers.pop(pid, None)
            if worker is None:
                continue
            metrics.forget_process(pid)
            status.forget_worker(metrics_folder, pid)
            # Its streams are over, however it ended: the instance's caps count them no more.
            self.table.reclaim(worker.column)
            self.free_columns.append(worker.column)
            self._exited(pid, worker, os.waitstatus_to_exitcode(wait_status))
        self._close_sockets()
        self.table.close()
        log.info("mediaproxy stopped")
        return 1 if self.failed else 0

    def _exited(self, pid: int, worker: _Worker, code: int) -> None:
        if pid in self.replaced:
            self.replaced.discard(pid)
            if code != 0:
                log.error("replaced worker %d (pid %d) exited with %d", worker.index, pid, code)
            return  # its successor runs already
        if code == 0:
            return  # drained (or told to stop on its own): not restarted
        how = f"killed by signal {-code}" if code < 0 else f"exited with {code}"
        if self.stopping:
            log.error("worker %d (pid %d) %s while stopping", worker.index, pid, how)
            self.failed = True
        elif time.monotonic() - worker.started_at < MIN_UPTIME_S:
            log.error("worker %d (pid %d) %s at start-up; stopping", worker.index, pid, how)
            self.failed = True
            self._stop(signal.SIGTERM, None)
        else:
            log.error("worker %d (pid %d) %s; restarting it", worker.index, pid, how)
            self._fork(worker.index)

    def _fork(self, index: int) -> None:
        # Blocked across the fork: a SIGTERM now waits until this worker is in self.workers
        # (parent) or until serve() has its own handlers in place (child, which unblocks).
        signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED_SIGNALS)
        try:
            if self.stopping:
                return
            column = self.free_columns.pop(0)
            pid = os.fork()
            if pid == 0:
                self.table.column = column
                self._serve_in_child(index)
            self.workers[pid] = _Worker(index, time.monotonic(), column)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED_SIGNALS)

    def _serve_in_child(self, index: int) -> NoReturn:
        from mediaproxy.server.app import serve

        for signum in FORWARDED_SIGNALS:
            signal.signal(signum, signal.SIG_DFL)  # not the parent's: it signals the workers
        code = 0
        try:
            eventloop.run(
                serve(self.config, self.sockets, self.table), self.config.server.event_loop
            )
        except BaseException:
            log.exception("worker %d failed", index)
            code = 1
        finally:
            logging.shutdown()
            os._exit(code)  # never return into the parent's loop

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        """Stop accepting here and tell every worker to drain."""
        if not self.stopping:
            log.info(
                "mediaproxy stopping %d workers (grace %.0f s)",
                len(self.workers),
                self.config.server.shutdown_grace_s,
            )
        self.stopping = True
        self._close_sockets()
        self._pass_on(signum, frame)

    def _pass_on(self, signum: int, frame: FrameType | None) -> None:
        """Send the signal to every worker."""
        self._signal(list(self.workers), signum)

    @staticmethod
    def _signal(pids: list[int], signum: int) -> None:
        for pid in pids:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass  # exited already; os.wait() will tell

    def _reload(self, signum: int, frame: FrameType | None) -> None:
        """Read the config again; valid, replace every worker by one running it."""
        from mediaproxy.server.app import restartless

        if self.stopping or self.read_config is None:
            return
        try:
            config = self.read_config()
        except ConfigError as error:
            log.error("reload refused, the running config stays: %s", error)
            return
        if len(self.free_columns) < self.count:
            log.error(
                "reload refused: workers replaced by an earlier reload are still "
                "finishing their streams; send SIGHUP again once they have"
            )
            return
        self.config = restartless(self.config, config)
        previous = [pid for pid in self.workers if pid not in self.replaced]
        for index in range(self.count):
            self._fork(index)
        self.replaced.update(previous)
        self._signal(previous, signal.SIGQUIT)
        log.info(
            "config reloaded from %s: workers %s replace %s, which finish their streams",
            config.path,
            " ".join(str(pid) for pid in self.workers if pid not in self.replaced),
            " ".join(map(str, previous)),
        )

    def _close_sockets(self) -> None:
        for sock in self.sockets:
            sock.close()
