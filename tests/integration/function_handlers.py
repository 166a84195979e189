"""Handlers the function-integration tests call (imported through the route's python_path).

The gateway runs in the test's own process, so ``CLEANED_UP`` lets a test see that a
handler's ``finally`` block ran after the client went away.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

CLEANED_UP: dict[str, threading.Event] = {}
BINARY = bytes(range(256)) * 64


def cleaned_up(token: str) -> threading.Event:
    return CLEANED_UP.setdefault(token, threading.Event())


def echo(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The event and part of the context, as JSON."""
    return {
        "statusCode": 201,
        "headers": {"Content-Type": "application/json"},
        "multiValueHeaders": {"X-Many": ["a", "b"]},
        "body": json.dumps(
            {
                "event": event,
                "function_name": context.function_name,
                "remaining_ms": context.get_remaining_time_in_millis(),
            }
        ),
    }


def short_reply(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """A reply as short as most API answers: compressing it saves nothing."""
    return {
        "statusCode": 200,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps({"message": "hello", "padding": "x" * 100}),
    }


async def binary(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return {
        "statusCode": 200,
        "headers": {"Content-Type": "application/octet-stream"},
        "isBase64Encoded": True,
        "body": base64.b64encode(BINARY).decode(),
    }


def iterator_body(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return {"statusCode": 200, "body": iter([b"one ", "two ", bytearray(b"three")])}


async def async_iterator_body(event: dict[str, Any], context: Any) -> dict[str, Any]:
    async def chunks() -> AsyncIterator[bytes]:
        for index in range(3):
            await asyncio.sleep(0)
            yield BINARY[index * 100 : (index + 1) * 100]

    return {
        "statusCode": 200,
        "headers": {"Content-Type": "application/octet-stream"},
        "body": chunks(),
    }


async def async_stream(event: dict[str, Any], context: Any) -> AsyncIterator[Any]:
    """Chunks until told to stop; records its finally."""
    query = event["queryStringParameters"] or {}
    yield {"statusCode": 200, "headers": {"Content-Type": "text/plain"}}
    try:
        for index in range(int(query.get("count", "1000000"))):
            yield f"chunk {index}\n"
            await asyncio.sleep(float(query.get("pause", "0.05")))
    finally:
        cleaned_up(query.get("token", "-")).set()


def sync_stream(event: dict[str, Any], context: Any) -> Iterator[Any]:
    """Blocking sleeps between chunks (on its thread); no head dict: 200 and a sniffed type."""
    query = event["queryStringParameters"] or {}
    try:
        for index in range(int(query.get("count", "1000000"))):
            yield f"line {index}\n"
            time.sleep(float(query.get("pause", "0.05")))
    finally:
        cleaned_up(query.get("token", "-")).set()


def fails_at_once(event: dict[str, Any], context: Any) -> dict[str, Any]:
    raise RuntimeError("secret detail that must not reach the client")


async def fails_later(event: dict[str, Any], context: Any) -> AsyncIterator[Any]:
    yield "a first chunk\n"
    raise RuntimeError("broke mid-stream")


def not_a_response(event: dict[str, Any], context: Any) -> str:
    return "just a string"


def bad_header(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return {"statusCode": 200, "headers": {"X-Bad": "a\r\nInjected: yes"}, "body": "x"}


async def status_with_body(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The status asked for (``?status=204``), with validators and a body all the same."""
    query = event["queryStringParameters"] or {}
    return {
        "statusCode": int(query["status"]),
        "headers": {"ETag": '"v1"', "Last-Modified": "Mon, 02 Jan 2006 15:04:05 GMT"},
        "body": "a body that must not be sent",
    }


async def status_with_streamed_body(event: dict[str, Any], context: Any) -> AsyncIterator[Any]:
    """As status_with_body, streamed; records its finally."""
    query = event["queryStringParameters"] or {}
    try:
        yield {"statusCode": int(query["status"]), "headers": {"ETag": '"v1"'}}
        yield "a body that must not be sent"
    finally:
        cleaned_up(query.get("token", "-")).set()


# Response heads that must be refused (a 502), and heads that must pass, by ?case=NAME.
MALFORMED_HEADS: dict[str, dict[str, Any]] = {
    "control-character": {"headers": {"X-A": "a\x01b"}},
    "delete": {"headers": {"X-A": "a\x7fb"}},
    "vertical-tab": {"headers": {"X-A": "a\x0bb"}},
    "beyond-latin-1": {"headers": {"X-A": "snow \u2603"}},
    "name-with-space": {"headers": {"X A": "1"}},
    "name-with-colon": {"multiValueHeaders": {"X:A": ["1"]}},
    "non-ascii-name": {"headers": {"\u00c4": "1"}},
    "empty-name": {"headers": {"": "1"}},
    "arabic-indic-status": {"statusCode": "\u0663\u0660\u0660"},
    "superscript-status": {"statusCode": "2\u00b2"},
    "signed-status": {"statusCode": "+200"},
    "spaced-status": {"statusCode": " 200"},
    "underscored-status": {"statusCode": "2_00"},
    "headers-over-the-cap": {"headers": {f"X-{n}": "v" * 1000 for n in range(80)}},
}
VALID_HEADS: dict[str, dict[str, Any]] = {
    "string-status": {"statusCode": "201"},
    "tab-inside": {"headers": {"X-A": "a\tb"}},
    "latin-1": {"headers": {"X-A": "caf\u00e9"}},
    "surrounding-space": {"headers": {"X-A": " trimmed \t"}},
    "empty-value": {"headers": {"X-A": ""}},
}


def head_case(event: dict[str, Any], context: Any) -> dict[str, Any]:
    case = (event["queryStringParameters"] or {})["case"]
    return {"statusCode": 200, "body": "x", **MALFORMED_HEADS.get(case, VALID_HEADS.get(case, {}))}
