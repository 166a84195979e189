"""The aiohttp peer: a streaming reverse proxy as a plain aiohttp script would write it.

It is what a team would deploy if it did not have mediaproxy: one aiohttp server, one
ClientSession with its connection pool, every response streamed as it arrives (nothing
buffered, nothing decoded), hop-by-hop headers dropped. It runs on uvloop where that is
installed, as mediaproxy does by default. Requests for /files/... go to the upstream with the
same path. Run: python bench/aiohttp_proxy.py --port 8082 --upstream http://127.0.0.1:8081
"""

import argparse
import asyncio
import importlib.util

import aiohttp
from aiohttp import web

# RFC 9110 §7.6.1, plus the framing aiohttp sets itself.
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
        "content-length",
    }
)


async def _proxy(request: web.Request) -> web.StreamResponse:
    session: aiohttp.ClientSession = request.app["session"]
    upstream: str = request.app["upstream"]
    headers = {
        name: value
        for name, value in request.headers.items()
        if name.lower() not in HOP_BY_HOP and name.lower() != "host"
    }
    body = request.content if request.body_exists else None
    async with session.request(
        request.method,
        upstream + request.rel_url.path_qs,
        headers=headers,
        data=body,
        allow_redirects=False,
    ) as answer:
        response = web.StreamResponse(status=answer.status, reason=answer.reason)
        for name, value in answer.headers.items():
            if name.lower() not in HOP_BY_HOP:
                response.headers.add(name, value)
        if answer.content_length is not None:
            response.content_length = answer.content_length
        await response.prepare(request)
        async for chunk in answer.content.iter_any():
            await response.write(chunk)
        await response.write_eof()
        return response


async def serve(port: int, upstream: str) -> None:
    app = web.Application()
    app["upstream"] = upstream.rstrip("/")
    app["session"] = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0),
        auto_decompress=False,
        timeout=aiohttp.ClientTimeout(total=None),
    )
    app.router.add_route("*", "/files/{tail:.*}", _proxy)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        await asyncio.Event().wait()
    finally:
        await app["session"].close()
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    factory = None
    if importlib.util.find_spec("uvloop") is not None:
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(serve(args.port, args.upstream))


if __name__ == "__main__":
    main()
