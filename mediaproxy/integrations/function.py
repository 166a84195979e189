"""Python callables behind a route, the way API Gateway's AWS_PROXY integration calls Lambda.

The handler is called as ``handler(event, context)`` with an API Gateway REST proxy event
(version 1.0: httpMethod, path, headers, multiValueHeaders, queryStringParameters,
multiValueQueryStringParameters, pathParameters, requestContext, body, isBase64Encoded) and a
context object shaped like Lambda's, so existing Lambda handlers run unchanged. What it may
give back:

* the proxy response dict: ``statusCode``, ``headers``, ``multiValueHeaders``, ``body`` (a
  str, or base64 with ``isBase64Encoded``; bytes are taken as they are) -- sent with
  Content-Length;
* the same dict whose ``body`` is an iterator or async iterator of chunks (bytes or str) --
  streamed, chunked, each chunk sent as it is produced;
* or the handler is itself a generator or async generator of chunks; if its first item is a
  dict, that dict is the response head (statusCode, headers) and the chunks follow.

A 204 or 304 goes out without the body it was given (those have none, RFC 9110 §6.4.1); a 1xx
statusCode is no response at all, so it is a 502 like any other malformed one.

Without a Content-Type the first bytes are sniffed (libmagic), so binary stays binary and
compression (on by default for this integration) is decided by what the body really is.

Where code runs: async handlers and async iterators on the event loop (they must not block).
Plain sync functions run on the function thread pool (``FUNCTION_THREADS`` threads). A sync
generator or iterator gets a thread of its own for its whole life, because user code is often
tied to the thread that began it (a sqlite3 connection refuses any other); at most
``SYNC_STREAMS_PER_ROUTE`` such streams run at once per route, the others wait for a slot
(meeting the idle timer if it takes too long). Those two numbers bound the threads blocking user
code can hold: a sync handler that blocks forever keeps its thread for good.

Failure and cancellation: an exception before the first byte is a 502 (the traceback is logged,
never sent); after it, the connection is aborted. A timer or a client disconnect cancels the
task: an async handler sees CancelledError at its await and its ``finally`` blocks run; an async
generator is closed; a sync generator is closed (GeneratorExit, its ``finally``) on its thread
as soon as its current step returns.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import importlib
import inspect
import logging
import sys
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing, contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote

from mediaproxy.config import Route, Table
from mediaproxy.errors import PayloadTooLarge, UpstreamError
from mediaproxy.http.grammar import GrammarError, is_field_value, is_token, parse_digits
from mediaproxy.http.headers import end_to_end
from mediaproxy.http.statuses import is_bodyless
from mediaproxy.integrations.base import Exchange, Integration, Request
from mediaproxy.streaming import sniff
from mediaproxy.streaming.threads import LazyPool, SerialSteps

log = logging.getLogger("mediaproxy.function")

# Plain sync handlers run here; sync streams each get a thread, at most this many per route.
FUNCTION_THREADS = 16
SYNC_STREAMS_PER_ROUTE = 64
# After a disconnect, how long the response waits for a sync generator's clean-up before it
# lets go (the clean-up still runs when the generator's current step returns).
SYNC_CLOSE_WAIT_S = 1.0
MEMORY_LIMIT_MB = 128  # what context.memory_limit_in_mb says; nothing enforces it

_function_pool = LazyPool(FUNCTION_THREADS, "mediaproxy-function")
# The cap the gateway puts on an origin's header block too (Tornado's default for a request's).
MAX_HEADER_BYTES = 64 * 1024
_END = object()


@dataclass(frozen=True)
class FunctionSettings:
    handler: Callable[..., Any]
    handler_name: str  # "package.module:callable", as configured


def read_settings(table: Table) -> FunctionSettings:
    raw_path = table.raw("python_path")
    entries = [raw_path] if isinstance(raw_path, str) else raw_path or []
    if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
        raise table.error("python_path", "must be a folder or an array of folders")
    for entry in reversed(entries):
        folder = (table.path.parent / entry).resolve()
        if not folder.is_dir():
            raise table.error("python_path", f"{folder} is not an existing directory")
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
    name = table.string("handler")
    module_name, _, attribute = name.partition(":")
    if not module_name or not attribute:
        raise table.error("handler", f"must be 'package.module:callable', got {name!r}")
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as error:  # the user's module may fail in any way while it loads
        raise table.error(
            "handler", f"cannot import {module_name!r}: {type(error).__name__}: {error}"
        ) from None
    try:
        for part in attribute.split("."):
            target = getattr(target, part)
    except AttributeError:
        raise table.error("handler", f"{module_name!r} has no {attribute!r}") from None
    if not callable(target):
        raise table.error("handler", f"{name!r} is not callable")
    return FunctionSettings(handler=target, handler_name=name)


class MalformedResponse(Exception):
    """The handler's return value is not a proxy response (API Gateway: 502 as well)."""


@dataclass
class LambdaContext:
    """The attributes and method Lambda handlers use of their ``context``."""

    function_name: str
    aws_request_id: str
    deadline_monotonic_s: float
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = MEMORY_LIMIT_MB
    invoked_function_arn: str = ""
    log_group_name: str = "mediaproxy"
    log_stream_name: str = "mediaproxy"
    identity: Any = None
    client_context: Any = None

    def get_remaining_time_in_millis(self) -> int:
        """Until the route's max_stream_duration cuts the exchange."""
        return max(0, int((self.deadline_monotonic_s - time.monotonic()) * 1000))


@dataclass
class Head:
    status: int = 200
    fields: list[tuple[str, str]] = field(default_factory=list)
    base64: bool = False


class FunctionIntegration(Integration):
    def __init__(self, route: Route) -> None:
        super().__init__(route)
        settings: FunctionSettings = route.settings
        self.settings = settings
        self._sync_slots = asyncio.Semaphore(SYNC_STREAMS_PER_ROUTE)

    async def respond(self, exchange: Exchange) -> None:
        request = exchange.request
        request_id = str(uuid.uuid4())
        event = make_event(request, await _read_body(exchange), request_id)
        context = LambdaContext(
            function_name=self.settings.handler_name,
            aws_request_id=request_id,
            deadline_monotonic_s=time.monotonic() + exchange.limits.max_stream_duration_s,
            invoked_function_arn=f"arn:mediaproxy:function:{self.settings.handler_name}",
        )
        with self._blame("failed"):
            head, body = await self._call(event, context)
        if isinstance(body, bytes):
            await self._send_whole(exchange, head, body)
            return
        async with aclosing(body) as chunks:
            await self._send_stream(exchange, head, chunks)

    @contextmanager
    def _blame(self, what: str) -> Iterator[None]:
        """User code's exceptions become a 502 (or an abort), the traceback only in the log."""
        try:
            yield
        except MalformedResponse as error:
            log.error(
                "function %s returned a malformed response: %s", self.settings.handler_name, error
            )
            raise UpstreamError(
                str(error), phrase="Bad Gateway: malformed function response"
            ) from None
        except Exception as error:
            log.exception("function %s %s", self.settings.handler_name, what)
            raise UpstreamError(f"function {what}: {type(error).__name__}") from None

    async def _call(
        self, event: dict[str, Any], context: LambdaContext
    ) -> tuple[Head, bytes | AsyncGenerator[Any, None]]:
        """Run the handler up to its response head; the body whole or as chunks to come."""
        handler = self.settings.handler
        if inspect.isasyncgenfunction(handler):
            return await _split_head(handler(event, context))
        if inspect.isgeneratorfunction(handler):
            return await _split_head(_sync_chunks(handler(event, context), self._sync_slots))
        if inspect.iscoroutinefunction(handler):
            result = await handler(event, context)
        else:
            result = await asyncio.get_running_loop().run_in_executor(
                _function_pool.get(), handler, event, context
            )
        return _read_response(result, self._sync_slots)

    async def _send_whole(self, exchange: Exchange, head: Head, body: bytes) -> None:
        if is_bodyless(head.status):
            exchange.start(head.status, head.fields)  # the body dropped, no Content-Length
            return
        fields = head.fields
        if body and not _has(fields, "Content-Type"):
            fields = fields + [("Content-Type", sniff.content_type(body[: sniff.SNIFF_BYTES], ""))]
        exchange.start(head.status, fields + [("Content-Length", str(len(body)))])
        if exchange.request.method != "HEAD" and body:
            await exchange.send(body)

    async def _send_stream(
        self, exchange: Exchange, head: Head, chunks: AsyncGenerator[Any, None]
    ) -> None:
        if head.base64:
            raise UpstreamError(
                "isBase64Encoded with a streamed body",
                phrase="Bad Gateway: malformed function response",
            )
        # A 204 or 304 stream is closed unread (by respond()), like a HEAD's.
        sends_body = exchange.request.method != "HEAD" and not is_bodyless(head.status)
        first = b""
        if sends_body:
            with self._blame("failed before its first byte"):
                while not first:  # empty chunks say nothing: wait for a real first one
                    item = await anext(chunks, _END)
                    if item is _END:
                        break
                    first = _chunk_bytes(item)
        fields = head.fields
        if not _has(fields, "Content-Type") and first:
            fields = fields + [("Content-Type", sniff.content_type(first[: sniff.SNIFF_BYTES], ""))]
        exchange.start(head.status, fields)
        if not sends_body:
            return
        await exchange.send(first)  # with the headers: an empty stream still goes out chunked
        if not first:
            return
        while True:
            with self._blame("failed while streaming"):
                item = await anext(chunks, _END)
                if item is _END:
                    return
                chunk = _chunk_bytes(item)
            if chunk:
                await exchange.send(chunk)


async def _read_body(exchange: Exchange) -> bytes | None:
    """The whole request body (Lambda gets it in the event), at most buffered_max_bytes."""
    limit = exchange.limits.buffered_max_bytes
    parts: list[bytes] = []
    size = 0
    async for chunk in exchange.body():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(
                f"request body over {limit} bytes",
                phrase=f"Payload Too Large: a function takes at most {limit} bytes",
            )
        parts.append(chunk)
    return b"".join(parts) if parts else None


def make_event(request: Request, body: bytes | None, request_id: str) -> dict[str, Any]:
    """The API Gateway REST (v1.0) proxy event for one request."""
    path = unquote(request.prefix.rstrip("/") + request.path) or "/"
    headers: dict[str, str] = {}
    multi_headers: dict[str, list[str]] = {}
    for name, value in request.headers.get_all():
        headers[name] = value
        multi_headers.setdefault(name, []).append(value)
    query: dict[str, str] = {}
    multi_query: dict[str, list[str]] = {}
    for name, value in parse_qsl(request.query, keep_blank_values=True, errors="replace"):
        query[name] = value
        multi_query.setdefault(name, []).append(value)
    proxy = unquote(request.path).lstrip("/")
    resource = request.prefix.rstrip("/") + "/{proxy+}"
    text_body, is_base64 = _event_body(body)
    return {
        "resource": resource,
        "path": path,
        "httpMethod": request.method,
        "headers": headers or None,
        "multiValueHeaders": multi_headers or None,
        "queryStringParameters": query or None,
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": {"proxy": proxy} if proxy else None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": resource,
            "httpMethod": request.method,
            "path": path,
            "protocol": request.version,
            "requestId": request_id,
            "requestTimeEpoch": int(time.time() * 1000),
            "stage": "$default",
            "domainName": request.host,
            "identity": {
                "sourceIp": request.remote_ip,
                "userAgent": request.headers.get("User-Agent"),
            },
        },
        "body": text_body,
        "isBase64Encoded": is_base64,
    }


def _event_body(body: bytes | None) -> tuple[str | None, bool]:
    """UTF-8 text as it is; anything else base64, as API Gateway does for binary types."""
    if body is None:
        return None, False
    try:
        return body.decode("utf-8"), False
    except UnicodeDecodeError:
        return base64.b64encode(body).decode("ascii"), True


def _has(fields: list[tuple[str, str]], name: str) -> bool:
    return any(field_name.lower() == name.lower() for field_name, _ in fields)


def _read_head(response: Mapping[str, Any]) -> Head:
    status = response.get("statusCode", 200)
    if isinstance(status, str):
        try:  # API Gateway takes "200" as well as 200; never "+200" or "٢٠٠"
            status = parse_digits(status, maximum=999)
        except GrammarError:
            raise MalformedResponse(f"statusCode {status[:20]!r} is not ASCII digits") from None
    # 1xx are interim responses, never the answer (and would promise another head to come).
    if not isinstance(status, int) or isinstance(status, bool) or not 200 <= status <= 599:
        raise MalformedResponse(f"statusCode must be an integer 200-599, got {status!r}")
    fields: list[tuple[str, str]] = []
    single = response.get("headers") or {}
    multi = response.get("multiValueHeaders") or {}
    if not isinstance(single, Mapping) or not isinstance(multi, Mapping):
        raise MalformedResponse("headers and multiValueHeaders must be objects")
    for name, values in [*((n, [v]) for n, v in single.items()), *multi.items()]:
        if not isinstance(values, list):
            raise MalformedResponse(f"multiValueHeaders[{name!r}] must be a list")
        for value in values:
            fields.append(_header_field(name, value))
    # Framing is the gateway's: a function cannot set Transfer-Encoding, Connection or a
    # Content-Length that its body might contradict.
    fields = [(n, v) for n, v in end_to_end(fields) if n.lower() != "content-length"]
    # Each field costs ": " and CRLF on the wire besides its name and value.
    if sum(len(n) + len(v) + 4 for n, v in fields) > MAX_HEADER_BYTES:
        raise MalformedResponse(f"headers over {MAX_HEADER_BYTES} bytes")
    return Head(status, fields, base64=bool(response.get("isBase64Encoded", False)))


def _header_field(name: object, value: object) -> tuple[str, str]:
    if not isinstance(name, str) or not is_token(name):
        raise MalformedResponse(f"header name {name!r} is not a token")
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise MalformedResponse(f"header {name} has a {type(value).__name__} value")
    text = str(value).strip(" \t")  # RFC 9110 §5.5: whitespace around is no part of a value
    if not is_field_value(text):
        raise MalformedResponse(
            f"header {name} is not a field value (a control character, "
            f"or one beyond Latin-1): {text[:40]!r}"
        )
    return name, text


def _read_response(
    result: object, sync_slots: asyncio.Semaphore
) -> tuple[Head, bytes | AsyncGenerator[Any, None]]:
    if not isinstance(result, Mapping):
        raise MalformedResponse(f"expected a dict with statusCode, got {type(result).__name__}")
    head = _read_head(result)
    body = result.get("body")
    if body is None:
        return head, b""
    if isinstance(body, str | bytes | bytearray | memoryview):
        data = body.encode("utf-8") if isinstance(body, str) else bytes(body)
        if head.base64:
            try:
                data = base64.b64decode(data, validate=True)
            except binascii.Error as error:
                raise MalformedResponse(f"body is not base64: {error}") from None
        return head, data
    if hasattr(body, "__aiter__"):
        return head, _async_chunks(body)
    if hasattr(body, "__iter__") and not isinstance(body, Mapping):
        return head, _sync_chunks(iter(body), sync_slots)
    raise MalformedResponse(
        f"body must be a string, bytes or an iterator of chunks, got {type(body).__name__}"
    )


async def _split_head(chunks: AsyncGenerator[Any, None]) -> tuple[Head, AsyncGenerator[Any, None]]:
    """A generator handler's optional leading dict is its response head."""
    first = await anext(chunks, _END)
    if isinstance(first, Mapping):
        if "body" in first:
            raise MalformedResponse("a generator's head dict cannot have a body: yield it")
        return _read_head(first), chunks
    return Head(), _prepend(first, chunks)


async def _prepend(first: object, rest: AsyncGenerator[Any, None]) -> AsyncGenerator[Any, None]:
    try:
        if first is not _END:
            yield first
            async for item in rest:
                yield item
    finally:
        await _aclose(rest)


async def _async_chunks(body: Any) -> AsyncGenerator[Any, None]:
    """Any async iterable as an async generator, closed (if it can be) when we are."""
    iterator = aiter(body)
    try:
        async for item in iterator:
            yield item
    finally:
        await _aclose(iterator)


async def _aclose(iterator: object) -> None:
    close = getattr(iterator, "aclose", None)
    if close is not None:
        await close()


async def _sync_chunks(
    iterator: Iterator[Any], slots: asyncio.Semaphore
) -> AsyncGenerator[Any, None]:
    """A sync iterator advanced on a thread of its own, one ``next()`` at a time."""
    async with slots:
        thread = ThreadPoolExecutor(1, thread_name_prefix="mediaproxy-function-stream")
        steps = SerialSteps(thread)
        try:
            while (item := await steps.run(next, iterator, _END)) is not _END:
                yield item
        finally:
            # Closed on its thread once the running step returns (GeneratorExit: its finally
            # runs); waited for briefly, so normally before the response is over.
            closed = steps.close(getattr(iterator, "close", None) or (lambda: None))
            closed.add_done_callback(lambda _: thread.shutdown(wait=False))
            await asyncio.wait([closed], timeout=SYNC_CLOSE_WAIT_S)


def _chunk_bytes(item: object) -> bytes:
    if isinstance(item, bytes):
        return item
    if isinstance(item, str):
        return item.encode("utf-8")
    if isinstance(item, bytearray | memoryview):
        return bytes(item)
    raise MalformedResponse(f"a body chunk must be bytes or str, got {type(item).__name__}")
