"""Tornado's own StaticFileHandler, as plain as an application would use it.

It is the baseline that mediaproxy's file integration must beat or match on
the same interpreter and event loop: one process, default settings, files
under /files/. Run: python bench/tornado_static.py --port 8081 --root DIR
"""

import argparse
import asyncio

import tornado.web


async def serve(port: int, root: str) -> None:
    """Serve `root` under /files/ on 127.0.0.1:`port` until the process is killed."""
    app = tornado.web.Application([(r"/files/(.*)", tornado.web.StaticFileHandler, {"path": root})])
    app.listen(port, address="127.0.0.1")
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--root", required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.root))


if __name__ == "__main__":
    main()
