"""Every Tornado private attribute the gateway relies on still exists and still means what
``mediaproxy.tornado_internals`` says: a Tornado release that renames or drops one fails here,
by name, instead of somewhere in a stream."""

from __future__ import annotations

import ast
import asyncio
import inspect
import socket
from pathlib import Path

from tornado.http1connection import HTTP1Connection
from tornado.httputil import HTTPHeaders, HTTPServerRequest, RequestStartLine
from tornado.iostream import IOStream, SSLIOStream
from tornado.log import gen_log
from tornado.web import Application, RequestHandler, _has_stream_request_body, stream_request_body

from mediaproxy import tornado_internals as internals


async def _with_connection(is_client: bool) -> tuple[HTTP1Connection, socket.socket]:
    ours, theirs = socket.socketpair()
    return HTTP1Connection(IOStream(ours), is_client), theirs


def test_an_iostream_counts_its_buffered_bytes() -> None:
    async def check() -> None:
        ours, theirs = socket.socketpair()
        stream = IOStream(ours)
        assert internals.buffered_read_bytes(stream) == 0
        theirs.sendall(b"stray")
        assert await stream.read_bytes(1) == b"s"
        assert internals.buffered_read_bytes(stream) == 4
        stream.close()
        theirs.close()

    asyncio.run(check())


def test_a_handler_keeps_its_reason_and_whether_it_finished() -> None:
    async def check() -> None:
        connection, theirs = await _with_connection(is_client=False)
        request = HTTPServerRequest(
            connection=connection,
            start_line=RequestStartLine("GET", "/", "HTTP/1.1"),
            headers=HTTPHeaders({"Host": "localhost"}),
        )
        handler = RequestHandler(Application(), request)
        assert internals.reason_phrase(handler) == "OK"
        handler.set_status(404)
        assert internals.reason_phrase(handler) == "Not Found"
        assert not internals.handler_finished(handler)
        stream = handler.detach()  # public, and done with the response as finish() is
        assert internals.handler_finished(handler)
        stream.close()
        theirs.close()

    asyncio.run(check())


def test_a_subclass_can_stop_streaming_the_request_body() -> None:
    @stream_request_body
    class Streaming(RequestHandler):
        pass

    @internals.not_streaming_body
    class Whole(Streaming):
        pass

    assert _has_stream_request_body(Streaming)
    assert not _has_stream_request_body(Whole)


def test_a_server_counts_its_open_connections() -> None:
    async def check() -> None:
        from tornado.httpserver import HTTPServer
        from tornado.netutil import bind_sockets

        server = HTTPServer(Application())
        sockets = bind_sockets(0, "127.0.0.1")
        server.add_sockets(sockets)
        assert internals.open_connections(server) == 0
        reader, writer = await asyncio.open_connection("127.0.0.1", sockets[0].getsockname()[1])
        for _ in range(100):
            await asyncio.sleep(0.01)
            if internals.open_connections(server):
                break
        assert internals.open_connections(server) == 1
        writer.close()
        server.stop()
        await server.close_all_connections()

    asyncio.run(check())


def test_no_other_module_touches_them() -> None:
    package = Path(internals.__file__).parent
    names = {
        "_finished",
        "_reason",
        "_stream_request_body",
        "_chunking_output",
        "_expected_content_remaining",
        "_read_buffer_size",
        "_connections",
        "_read_buffer",
        "_HTTPRequestContext",
    }
    touching = sorted(
        f"{path.relative_to(package)}:{getattr(node, 'lineno', '?')} "
        f"{getattr(node, 'attr', None) or getattr(node, 'name', '')}"
        for path in package.rglob("*.py")
        if path.name != "tornado_internals.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if (isinstance(node, ast.Attribute) and node.attr in names)
        or (isinstance(node, ast.alias) and node.name in names)
    )
    assert touching == []


def test_bytes_put_back_are_read_first() -> None:
    async def check() -> None:
        ours, theirs = socket.socketpair()
        stream = IOStream(ours)
        theirs.sendall(b"GET / HTTP/1.1\r\n\r\nnext")
        head = await stream.read_bytes(6, partial=True)
        internals.unread(stream, head)
        assert internals.buffered_read_bytes(stream) >= len(head)
        found = await stream.read_until_regex(internals.HEADER_BLOCK_END.pattern)
        assert found == b"GET / HTTP/1.1\r\n\r\n"
        assert await stream.read_bytes(4) == b"next"
        stream.close()
        theirs.close()

    asyncio.run(check())


def test_a_request_context_names_the_client() -> None:
    async def check() -> None:
        ours, theirs = socket.socketpair()
        stream = IOStream(ours)
        context = internals.request_context(stream, ("192.0.2.7", 4000), None, None)
        assert getattr(context, "protocol") == "http"
        stream.close()
        theirs.close()

    asyncio.run(check())


def test_tornado_logs_a_failed_handshake_as_we_expect() -> None:
    source = inspect.getsource(SSLIOStream._do_ssl_handshake)
    assert f'"{internals.HANDSHAKE_FAILURE_FORMAT}"' in source and "gen_log.warning" in source
    assert SSLIOStream.__module__ == "tornado.iostream"
    assert gen_log.name == internals.HANDSHAKE_FAILURE_LOGGER
