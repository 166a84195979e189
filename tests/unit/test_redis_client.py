"""RESP2 as the plans' Redis client writes and reads it, and the Redis URLs it accepts."""

from __future__ import annotations

import pytest

from mediaproxy.server.redis_client import (
    Address,
    RedisError,
    ReplyError,
    Script,
    encode_command,
    missing_script,
    parse_reply,
)


def test_a_command_is_an_array_of_bulk_strings() -> None:
    assert encode_command("EVALSHA", b"ab", 2, 0.5) == (
        b"*4\r\n$7\r\nEVALSHA\r\n$2\r\nab\r\n$1\r\n2\r\n$3\r\n0.5\r\n"
    )


@pytest.mark.parametrize(
    "data, reply",
    [
        (b"+OK\r\n", b"OK"),
        (b":42\r\n", 42),
        (b":-3\r\n", -3),
        (b"$5\r\nhe\r\no\r\n", b"he\r\no"),
        (b"$0\r\n\r\n", b""),
        (b"$-1\r\n", None),
        (b"*-1\r\n", None),
        (b"*0\r\n", []),
        (b"*2\r\n:0\r\n$3\r\n0.5\r\n", [0, b"0.5"]),
        (b"*2\r\n*1\r\n:1\r\n+x\r\n", [[1], b"x"]),
    ],
)
def test_replies_are_read_whole(data: bytes, reply: object) -> None:
    assert parse_reply(data + b":7\r\n", 0) == (reply, len(data))


@pytest.mark.parametrize(
    "data", [b"", b"+OK", b"+OK\r", b"$5\r\nhel", b"$5\r\nhello\r", b"*2\r\n:1\r\n", b"*2\r\n"]
)
def test_an_incomplete_reply_waits_for_more(data: bytes) -> None:
    assert parse_reply(data, 0) is None


def test_an_error_reply_is_returned_in_step_and_spoils_its_array() -> None:
    first = b"-NOSCRIPT No matching script\r\n"
    error, after = parse_reply(first + b":1\r\n", 0) or (None, 0)
    assert isinstance(error, ReplyError) and missing_script(error) and after == len(first)
    first = b"*3\r\n:1\r\n-ERR bad\r\n:2\r\n"
    error, after = parse_reply(first + b"+next\r\n", 0) or (None, 0)
    assert isinstance(error, ReplyError) and str(error) == "ERR bad" and after == len(first)


@pytest.mark.parametrize(
    "data", [b"?what\r\n", b":1x\r\n", b":+1\r\n", b":\xd9\xa1\r\n", b"$-2\r\n", b"*1_0\r\n"]
)
def test_bytes_that_are_not_resp_fail(data: bytes) -> None:
    with pytest.raises(RedisError):
        parse_reply(data, 0)


@pytest.mark.parametrize(
    "url, address",
    [
        ("redis://10.0.0.5:6380/2", Address("10.0.0.5", 6380, None, False, None, None, 2)),
        ("redis://h", Address("h", 6379, None, False, None, None, 0)),
        ("redis://:s%40cret@h/0", Address("h", 6379, None, False, None, "s@cret", 0)),
        ("rediss://app:pw@h:7000", Address("h", 7000, None, True, "app", "pw", 0)),
        ("unix:///run/redis.sock?db=3", Address(None, 0, "/run/redis.sock", False, None, None, 3)),
    ],
)
def test_redis_urls(url: str, address: Address) -> None:
    assert Address.from_url(url) == address


def test_a_script_goes_by_its_digest_and_whole_when_redis_lacks_it() -> None:
    script = Script("return 1")
    command = script.command(["k"], [5])
    assert command == ["EVALSHA", "e0e1f9fabfc9d4800c877a703b823ac0578ff8db", 1, "k", 5]
    assert script.whole(command) == ["EVAL", "return 1", 1, "k", 5]
