"""The chat shape: a reply streamed token by token, as a language model would produce it.

An async generator handler: its first item (a dict) is the response head, then each yielded
string goes to the client at once. Query: prompt, delay_ms (between tokens, default 40).
"""

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

REPLY = (
    "Streaming means the first words reach you while the rest are still being written. "
    "Each token you see was sent the moment it existed, with nothing buffered in between. "
    "You asked: "
)
MAX_DELAY_MS = 1000


async def stream(event: dict[str, Any], context: Any) -> AsyncIterator[Any]:
    query = event.get("queryStringParameters") or {}
    prompt = query.get("prompt", "nothing yet")[:500]
    delay_s = min(max(int(query.get("delay_ms", "40") or 0), 0), MAX_DELAY_MS) / 1000
    yield {
        "statusCode": 200,
        "headers": {"Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-store"},
    }
    for token in re.findall(r"\s*\S+", REPLY + f"\u201c{prompt}\u201d"):
        yield token
        await asyncio.sleep(delay_s)
    yield "\n"
