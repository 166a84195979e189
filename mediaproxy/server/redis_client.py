"""The Redis client of the usage plans: one pipelined connection per process, on asyncio.

Why not redis-py's asyncio client: for each command it takes a connection from a pool, runs the
read under a timeout context and parses through a StreamReader, which cost more than the
script's own round trip on loopback (bench/plans.py; figures in bench/RESULTS.md), on the path
of every request on a plan. Here a command is written to the socket in the caller's own stack
and its reply resolves one future: the only event-loop hop is the reply waking the request.

RESP2, the protocol every Redis speaks: a command is an array of bulk strings, and replies come
back in the order the commands were sent, so one queue of futures matches them and any number
of commands may be in flight (pipelining falls out: ``send_many`` writes several at once).

Time: a command not answered within ``timeout_s`` fails, and with it every command in flight
and the connection (a late answer could no longer be matched to its command); the next call
connects again. One timer per connection watches the oldest command, not one per command.

Every failure (refused or lost connection, timeout, a reply that is not RESP) is a
``RedisError``; an error reply (``-ERR ...``) is its subclass ``ReplyError``.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import ssl
from dataclasses import dataclass
from typing import NoReturn, TypeAlias, cast
from urllib.parse import parse_qs, unquote, urlsplit

Reply: TypeAlias = int | bytes | None | list["Reply"]
Argument: TypeAlias = bytes | str | int | float


class RedisError(Exception):
    """Redis could not be reached, did not answer in time, or answered something unreadable."""


class ReplyError(RedisError):
    """Redis answered with an error (``-NOSCRIPT ...``, ``-ERR ...``)."""


def encode_command(*args: Argument) -> bytes:
    """One command as RESP's array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def parse_reply(buffer: bytes, start: int) -> tuple[Reply | ReplyError, int] | None:
    """The reply that begins at ``buffer[start]`` and where the next one begins, or None while
    it is incomplete. An error reply is returned (as a ReplyError), not raised, so the replies
    after it stay in step; an array holding one is that error. RedisError for bytes that are
    not RESP2."""
    end = buffer.find(b"\r\n", start)
    if end < 0:
        return None
    kind, line = buffer[start : start + 1], buffer[start + 1 : end]
    after = end + 2
    if kind == b"+":
        return line, after
    if kind == b"-":
        return ReplyError(line.decode("utf-8", "replace")), after
    if kind == b":":
        return _integer(line), after
    if kind == b"$":
        length = _integer(line)
        if length < 0:
            return None if length == -1 else _unreadable(line), after
        if len(buffer) < after + length + 2:
            return None
        return buffer[after : after + length], after + length + 2
    if kind == b"*":
        count = _integer(line)
        if count < 0:
            return None if count == -1 else _unreadable(line), after
        items: list[Reply] = []
        failed: ReplyError | None = None  # an error inside is the whole reply's, once read
        for _ in range(count):
            parsed = parse_reply(buffer, after)
            if parsed is None:
                return None
            item, after = parsed
            if isinstance(item, ReplyError):
                failed = failed or item
            else:
                items.append(item)
        return failed or items, after
    raise RedisError(f"not a RESP reply: {buffer[start : start + 20]!r}")


def _integer(line: bytes) -> int:
    digits = line[1:] if line[:1] == b"-" else line
    if not digits.isdigit() or not digits.isascii():
        raise RedisError(f"not a RESP integer: {line[:20]!r}")
    return int(line)


def _unreadable(line: bytes) -> NoReturn:
    raise RedisError(f"not a RESP length: {line[:20]!r}")


@dataclass(frozen=True)
class Address:
    """Where a Redis URL points: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://``
    the same over TLS, ``unix:///path/to.sock[?db=N&password=...]``."""

    host: str | None
    port: int
    path: str | None
    tls: bool
    username: str | None
    password: str | None
    db: int

    @classmethod
    def from_url(cls, url: str) -> Address:
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        password = parts.password or query.get("password", [""])[0] or None
        if parts.scheme == "unix":
            db = (query.get("db") or ["0"])[0]
            return cls(None, 0, unquote(parts.path), False, None, password, int(db))
        db_path = parts.path.strip("/")
        return cls(
            parts.hostname or "localhost",
            parts.port or 6379,
            None,
            parts.scheme == "rediss",
            unquote(parts.username) if parts.username else None,
            unquote(password) if password else None,
            int(db_path) if db_path else 0,
        )


class Script:
    """A Lua script, called by its digest (EVALSHA) and sent whole only when Redis lacks it."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def command(self, keys: list[str], args: list[Argument]) -> list[Argument]:
        return ["EVALSHA", self.sha, len(keys), *keys, *args]

    def whole(self, command: list[Argument]) -> list[Argument]:
        """``command`` (this script's EVALSHA) with the script sent along (EVAL)."""
        return ["EVAL", self.source, *command[2:]]


def missing_script(error: object) -> bool:
    """A restarted (or flushed) Redis has forgotten the scripts loaded into it."""
    return isinstance(error, ReplyError) and str(error).startswith("NOSCRIPT")


class _Connection(asyncio.Protocol):
    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._buffer = b""
        self._waiting: collections.deque[tuple[asyncio.Future[Reply], float]] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is one, not a subclass

    def send(self, command: bytes, count: int = 1) -> list[asyncio.Future[Reply]]:
        """Write ``command`` (``count`` commands encoded back to back) and return the futures
        of their replies."""
        if self.closed or self.transport is None:
            raise RedisError("connection closed")
        deadline = self._loop.time() + self.timeout_s
        futures = [self._loop.create_future() for _ in range(count)]
        self._waiting.extend((future, deadline) for future in futures)
        self.transport.write(command)
        if self._timer is None:
            self._timer = self._loop.call_at(deadline, self._watch)
        return futures

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        start = 0
        try:
            while start < len(buffer):
                parsed = parse_reply(buffer, start)
                if parsed is None:
                    break
                reply, start = parsed
                if not self._waiting:
                    raise RedisError("a reply to no command")
                future, _ = self._waiting.popleft()
                if future.done():
                    continue  # its caller was cancelled
                if isinstance(reply, ReplyError):
                    future.set_exception(reply)
                else:
                    future.set_result(reply)
        except RedisError as error:
            self._fail(error)
            return
        self._buffer = buffer[start:]

    def _watch(self) -> None:
        self._timer = None
        if not self._waiting:
            return
        deadline = self._waiting[0][1]
        if self._loop.time() >= deadline:
            self._fail(RedisError(f"no answer within {self.timeout_s:g} s"))
        else:
            self._timer = self._loop.call_at(deadline, self._watch)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(RedisError(f"connection lost ({exc})" if exc else "connection closed"))

    def _fail(self, error: RedisError) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._waiting:
            future, _ = self._waiting.popleft()
            if not future.done():
                future.set_exception(error)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class RedisClient:
    """Commands to one Redis server over one connection, opened on first use and again after
    a failure."""

    def __init__(self, url: str, timeout_s: float) -> None:
        self.address = Address.from_url(url)
        self.timeout_s = timeout_s
        self._connection: _Connection | None = None
        self._connecting: asyncio.Task[_Connection] | None = None

    async def call(self, *args: Argument) -> Reply:
        """One command's reply; ReplyError for an error reply, RedisError for any failure."""
        connection = await self.connection()
        return await connection.send(encode_command(*args))[0]

    async def evalsha(self, script: Script, keys: list[str], args: list[Argument]) -> Reply:
        """Run ``script``: by its digest, and whole if Redis has forgotten it."""
        command = script.command(keys, args)
        try:
            return await self.call(*command)
        except ReplyError as error:
            if not missing_script(error):
                raise
        return await self.call(*script.whole(command))

    async def pipeline(self, commands: list[list[Argument]]) -> list[Reply | RedisError]:
        """Several commands in one write; each one's reply or error, in order."""
        connection = await self.connection()
        data = b"".join(encode_command(*command) for command in commands)
        futures = connection.send(data, len(commands))
        outcomes: list[Reply | RedisError] = []
        for future in futures:
            try:
                outcomes.append(await future)
            except RedisError as error:
                outcomes.append(error)
        return outcomes

    async def connection(self) -> _Connection:
        """The open connection, or a new one (one attempt shared by the callers meanwhile)."""
        connection = self._connection
        if connection is not None and not connection.closed:
            return connection
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._connect())
        connecting = self._connecting
        try:
            return await asyncio.shield(connecting)
        finally:
            if connecting.done():
                self._connecting = None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        address = self.address
        timeout_s = self.timeout_s
        try:
            if address.path is not None:
                opening = loop.create_unix_connection(lambda: _Connection(timeout_s), address.path)
            else:
                assert address.host is not None
                opening = loop.create_connection(
                    lambda: _Connection(timeout_s),
                    address.host,
                    address.port,
                    ssl=ssl.create_default_context() if address.tls else None,
                )
            _, connection = await asyncio.wait_for(opening, timeout_s)
        except (OSError, asyncio.TimeoutError) as error:
            raise RedisError(f"cannot connect: {type(error).__name__}: {error}") from error
        greeting: list[list[Argument]] = []
        if address.password is not None:
            greeting.append(
                ["AUTH", address.username, address.password]
                if address.username
                else ["AUTH", address.password]
            )
        if address.db:
            greeting.append(["SELECT", address.db])
        if greeting:
            data = b"".join(encode_command(*command) for command in greeting)
            for future in connection.send(data, len(greeting)):
                await future
        self._connection = connection
        return connection

    async def close(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
        if self._connection is not None:
            self._connection.close()
            self._connection = None
