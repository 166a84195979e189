"""The TLS handshake log: one info line per interval, the rest at debug level (a fake clock)."""

from __future__ import annotations

import logging

import pytest

from mediaproxy.server.connections import HandshakeFailureLog


def tornado_record(message: str = "SSL Error on %s %s: %s") -> logging.LogRecord:
    return logging.LogRecord(
        "tornado.general",
        logging.WARNING,
        __file__,
        1,
        message,
        (7, ("192.0.2.1", 5000), "[SSL: HTTP_REQUEST] http request"),
        None,
    )


def test_handshake_failures_are_one_info_line_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="mediaproxy")
    now = [1000.0]
    failures = HandshakeFailureLog(clock=lambda: now[0], interval_s=60)
    levels = []
    for at in (0, 1, 59, 60, 61, 200):
        now[0] = 1000.0 + at
        caplog.clear()
        assert failures.filter(tornado_record()) is False  # Tornado's WARNING is dropped
        (record,) = caplog.records
        assert "192.0.2.1" in record.getMessage() and "HTTP_REQUEST" in record.getMessage()
        levels.append(record.levelname)
    assert levels == ["INFO", "DEBUG", "DEBUG", "INFO", "DEBUG", "INFO"]


def test_other_tornado_lines_pass() -> None:
    assert HandshakeFailureLog().filter(tornado_record("Malformed HTTP message from %s: %s"))
