"""Every private attribute of Tornado the gateway reads or writes, and why, in one place.

Checked against Tornado 6.6.1 (setup.cfg allows ``>=6.4,<7``); the attributes exist in
6.4 and 6.5 as well. ``tests/unit/test_tornado_internals.py`` exercises each one on real
Tornado objects, so a release that renames or drops one fails there by name. Nothing else in
the package touches an underscore name of Tornado's.

- ``RequestHandler._finished``: whether ``finish()`` ran; Tornado has no public reader.
- ``RequestHandler._reason``: the reason phrase ``set_status`` chose, for plain-text errors.
- ``RequestHandler._stream_request_body``: what ``@stream_request_body`` sets; a subclass of a
  streaming handler turns it off to have Tornado read a body-less request in one step.
- ``IOStream._read_buffer_size``: bytes already read from the socket and not yet consumed; an
  idle pooled connection holding any belongs to no request.
- ``IOStream._read_buffer`` (with ``_read_buffer_size``): unread input, served to reads first.
  A client's header block, read and checked before Tornado parses it
  (``server.connections``), is put back there.
- ``HTTPServer._connections``: the connections a server has open; a replaced worker waits
  for them to end, ``max_client_connections`` counts them, and a server subclass with its own
  connection class adds each there, as ``handle_stream`` does.
- ``httpserver._HTTPRequestContext``: the per-connection context HTTPServer gives each request
  (remote address, protocol); a server with its own connection loop builds the same one.
- Behaviour, not attributes: HTTP1Connection ends a header block at ``\r?\n\r?\n``, and
  ``SSLIOStream`` logs each failed TLS handshake as a WARNING on "tornado.general" with the
  format below.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

from tornado.http1connection import HTTP1ServerConnection
from tornado.httpserver import HTTPServer, _HTTPRequestContext
from tornado.iostream import IOStream
from tornado.web import RequestHandler

TORNADO_CHECKED = "6.6.1"

H = TypeVar("H", bound=type[RequestHandler])


def handler_finished(handler: RequestHandler) -> bool:
    return handler._finished


def reason_phrase(handler: RequestHandler) -> str:
    return handler._reason


def not_streaming_body(handler_class: H) -> H:
    """The opposite of Tornado's ``@stream_request_body``, for a subclass of a streaming one."""
    handler_class._stream_request_body = False
    return handler_class


def open_connections(server: HTTPServer) -> int:
    """Connections the server still has open (its own close_all_connections walks them)."""
    return len(server._connections)


def track_connection(server: HTTPServer, connection: HTTP1ServerConnection) -> None:
    """Count a connection a server subclass made itself, as ``handle_stream`` counts its own:
    HTTPServer's ``on_close`` forgets it and ``close_all_connections`` closes it."""
    server._connections.add(connection)


def buffered_read_bytes(stream: IOStream) -> int:
    return stream._read_buffer_size


def unread(stream: IOStream, data: bytes) -> None:
    """Put ``data`` back in front of whatever the stream holds unread."""
    stream._read_buffer[:0] = data
    stream._read_buffer_size += len(data)


def request_context(
    stream: IOStream,
    address: tuple[Any, ...],
    protocol: str | None,
    trusted_downstream: list[str] | None,
) -> object:
    """The context HTTPServer.handle_stream gives a connection's requests."""
    return _HTTPRequestContext(stream, address, protocol, trusted_downstream)


# Where HTTP1Connection ends a header block (its read_until_regex).
HEADER_BLOCK_END = re.compile(rb"\r?\n\r?\n")
# SSLIOStream._do_ssl_handshake's WARNING for a failed handshake, and its logger.
HANDSHAKE_FAILURE_FORMAT = "SSL Error on %s %s: %s"
HANDSHAKE_FAILURE_LOGGER = "tornado.general"
