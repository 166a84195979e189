"""Server-sent events for a long job: one event per step, heartbeats, and resumption.

* Each step is ``id: N``, ``event: progress``, ``data: {"step": N, ...}``; the end is
  ``event: done``. EventSource reconnects by itself after ``retry`` ms.
* While a step runs, a comment line (``: heartbeat``) goes out every heartbeat_ms, so neither
  the gateway's idle timer nor a proxy in between ever sees a silent connection.
* A client that reconnects sends ``Last-Event-ID``; the feed resumes after that step instead
  of starting over (``?lastEventId=N`` does the same for clients that cannot set headers).

Query: steps (default 10), step_ms (time per step, default 1000), heartbeat_ms (default 15000).
"""

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

MAX_STEPS = 1000
MAX_STEP_MS = 60_000


def _number(query: dict[str, str], name: str, default: int, maximum: int) -> int:
    try:
        return min(max(int(query.get(name, default)), 0), maximum)
    except ValueError:
        return default


def _last_event_id(event: dict[str, Any]) -> int:
    headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
    query = event.get("queryStringParameters") or {}
    raw = headers.get("last-event-id", query.get("lastEventId", "0"))
    return int(raw) if raw.isdigit() else 0


def _message(event_name: str, data: dict[str, Any], event_id: int | None = None) -> str:
    lines = [f"id: {event_id}"] if event_id is not None else []
    lines += [f"event: {event_name}", f"data: {json.dumps(data)}"]
    return "\n".join(lines) + "\n\n"


async def feed(event: dict[str, Any], context: Any) -> AsyncIterator[Any]:
    query = event.get("queryStringParameters") or {}
    steps = _number(query, "steps", 10, MAX_STEPS)
    step_s = _number(query, "step_ms", 1000, MAX_STEP_MS) / 1000
    heartbeat_s = max(_number(query, "heartbeat_ms", 15_000, MAX_STEP_MS), 50) / 1000
    yield {
        "statusCode": 200,
        "headers": {
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache",
        },
    }
    yield "retry: 1000\n\n"
    for step in range(_last_event_id(event) + 1, steps + 1):
        remaining_s = step_s
        while remaining_s > heartbeat_s:  # the job is working: say so, without an event
            await asyncio.sleep(heartbeat_s)
            remaining_s -= heartbeat_s
            yield ": heartbeat\n\n"
        await asyncio.sleep(remaining_s)
        yield _message(
            "progress", {"step": step, "of": steps, "percent": round(100 * step / steps)}, step
        )
    yield _message("done", {"steps": steps})
