"""The naive Tornado proxy: a RequestHandler relaying through AsyncHTTPClient, as tutorials do.

The floor mediaproxy's relay must stay far above on the same interpreter: one process,
simple_httpclient with a streaming callback that writes and awaits each flush (so it is
flow-controlled), the response head copied from the header callback. Only what correctness
needs is set: no decoding, no 100 MB body ceiling, no total deadline, and enough concurrent
fetches that 32 connections are not queued behind the default 10.
Run: python bench/tornado_proxy.py --port 8083 --upstream http://127.0.0.1:8081
"""

import argparse
import asyncio

import tornado.web
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.httputil import HTTPHeaders, parse_response_start_line

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


class ProxyHandler(tornado.web.RequestHandler):
    def initialize(self, upstream: str) -> None:
        self.upstream = upstream

    def set_default_headers(self) -> None:
        self.clear_header("Content-Type")

    async def get(self) -> None:
        headers = HTTPHeaders(
            {
                name: value
                for name, value in self.request.headers.get_all()
                if name.lower() not in HOP_BY_HOP and name.lower() != "host"
            }
        )
        request = HTTPRequest(
            self.upstream + self.request.uri,
            method=self.request.method,
            headers=headers,
            header_callback=self._header_line,
            streaming_callback=self._chunk,
            decompress_response=False,
            follow_redirects=False,
            request_timeout=0,
            connect_timeout=10,
        )
        await AsyncHTTPClient().fetch(request, raise_error=False)  # an origin's 404 is relayed
        self.finish()

    head = get

    def _header_line(self, line: str) -> None:
        if line.startswith("HTTP/"):
            start = parse_response_start_line(line.rstrip())
            self.set_status(start.code, start.reason)
        elif line.strip():
            name, _, value = line.partition(":")
            if name.lower() not in HOP_BY_HOP:
                self.add_header(name.strip(), value.strip())

    async def _chunk(self, chunk: bytes) -> None:
        self.write(chunk)
        await self.flush()


async def serve(port: int, upstream: str) -> None:
    AsyncHTTPClient.configure(None, max_clients=128, max_body_size=2**62)
    app = tornado.web.Application(
        [(r"/files/.*", ProxyHandler, {"upstream": upstream.rstrip("/")})]
    )
    app.listen(port, address="127.0.0.1")
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.upstream))


if __name__ == "__main__":
    main()
