"""The pure parts of observability: the record's JSON, the log file, metrics, sampling."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from mediaproxy.access_control import AdminAccess
from mediaproxy.config import ConfigError, load
from mediaproxy.errors import Termination
from mediaproxy.ops.access_log import AccessLog, ExchangeRecord, open_access_log
from mediaproxy.ops.metrics import RESTRICTED, Metrics
from mediaproxy.ops.status import find_samples, sample_streams

SAMPLE_MEDIA = Path(__file__).resolve().parents[2] / "sample_media"


def record(**changes: object) -> ExchangeRecord:
    fields: dict[str, object] = dict(
        route="/media",
        integration="file",
        method="GET",
        path="/media/a.mp4",
        status=206,
        bytes_sent=1000,
        bytes_received=0,
        ttfb_s=0.0021234,
        duration_s=1.5,
        termination=Termination.COMPLETE,
        client="127.0.0.1",
        upstream_status=None,
        request_range="bytes=0-999",
        content_range="bytes 0-999/5000",
    )
    fields.update(changes)
    return ExchangeRecord(**fields)  # type: ignore[arg-type]


def test_record_json_has_every_field_in_milliseconds() -> None:
    line = json.loads(record(upstream_status=502, path="/media/\u00e9").to_json())
    assert line["ttfb_ms"] == 2.123 and line["duration_ms"] == 1500.0
    assert line["termination"] == "complete" and line["upstream_status"] == 502
    assert line["path"] == "/media/\u00e9"
    assert line["time"].endswith("+00:00")
    assert "\n" not in record(path="/a\nb").to_json()


def test_record_json_says_which_range_was_asked_for_and_which_was_served() -> None:
    line = json.loads(record().to_json())
    assert (line["range"], line["content_range"]) == ("bytes=0-999", "bytes 0-999/5000")
    plain = json.loads(record(status=200, request_range=None, content_range=None).to_json())
    assert (plain["range"], plain["content_range"]) == (None, None)
    # A Range header may be as long as the headers may be: the line stays a line.
    long = json.loads(record(request_range="bytes=" + "1-2," * 10_000).to_json())
    assert len(long["range"]) <= 256 and long["range"].endswith("...")


def test_access_log_appends_lines_and_reopens_after_rotation(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    log = open_access_log(str(path))
    assert isinstance(log, AccessLog)
    log.write(record())
    os.rename(path, tmp_path / "access.log.1")  # logrotate moves the file ...
    log.write(record(status=200))  # ... lines still go to the moved file until reopened
    log.reopen()
    log.write(record(status=404))
    log.close()

    def statuses(log_file: Path) -> list[int]:
        return [json.loads(line)["status"] for line in log_file.read_text().splitlines()]

    assert statuses(tmp_path / "access.log.1") == [206, 200]
    assert statuses(path) == [404]
    assert open_access_log("off") is None


def test_metrics_count_one_exchange_per_observe() -> None:
    metrics = Metrics()
    route = SimpleNamespace(prefix="/media", integration="file")
    metrics.stream_started(route)  # type: ignore[arg-type]
    labels = {"route": "/media", "integration": "file"}
    get = metrics.registry.get_sample_value
    assert get("mediaproxy_active_streams", labels) == 1
    metrics.stream_ended(route)  # type: ignore[arg-type]
    metrics.observe(record())
    metrics.observe(
        record(
            status=200,
            ttfb_s=None,
            bytes_sent=0,
            bytes_received=7,
            termination=Termination.CLIENT_CLOSED,
        )
    )
    assert get("mediaproxy_active_streams", labels) == 0
    assert get("mediaproxy_requests_total", {**labels, "status": "206"}) == 1
    assert get("mediaproxy_terminations_total", {**labels, "reason": "client_closed"}) == 1
    assert get("mediaproxy_sent_bytes_total", labels) == 1000
    assert get("mediaproxy_received_bytes_total", labels) == 7
    assert get("mediaproxy_ttfb_seconds_count", labels) == 1
    assert get("mediaproxy_ttfb_seconds_bucket", {**labels, "le": "0.0025"}) == 1
    assert get("mediaproxy_stream_duration_seconds_count", labels) == 2
    assert b"mediaproxy_requests_total" in metrics.exposition()


def test_metrics_show_every_route_before_its_first_request(tmp_path: Path) -> None:
    (tmp_path / "m.toml").write_text(
        f'[[routes]]\nprefix = "/a"\nintegration = "file"\nroot = "{tmp_path}"\n'
    )
    metrics = Metrics(load(tmp_path / "m.toml").routes)
    labels = {"route": "/a", "integration": "file"}
    assert metrics.registry.get_sample_value("mediaproxy_sent_bytes_total", labels) == 0
    assert metrics.registry.get_sample_value("mediaproxy_active_streams", labels) == 0


PUBLIC = AdminAccess(())
ADMIN = AdminAccess(("admin-key",))


def fake_handler(
    sent: int, received: int, started_at: float, restricted: bool = False
) -> SimpleNamespace:
    return SimpleNamespace(
        exchange=SimpleNamespace(bytes_sent=sent, content_range="bytes 100-199/1000", cache=None),
        bytes_received=received,
        started_at=started_at,
        route=SimpleNamespace(
            prefix="/media", integration="file", access=SimpleNamespace(restricted=restricted)
        ),
        request=SimpleNamespace(
            method="GET", path="/media/a.mp4", remote_ip="::1", headers={"Range": "bytes=100-199"}
        ),
        get_status=lambda: 200,
    )


def test_stream_rates_are_per_second_since_the_last_sample() -> None:
    handler = fake_handler(sent=4000, received=0, started_at=10.0)
    first = sample_streams([handler], {}, 12.0, PUBLIC)  # type: ignore[list-item]
    (sample,) = first.values()
    assert (sample.sent_per_s, sample.age_s) == (2000.0, 2.0)  # from the start
    handler.exchange.bytes_sent = 5000
    handler.bytes_received = 300
    (later,) = sample_streams([handler], first, 12.5, PUBLIC).values()  # type: ignore[list-item]
    assert (later.sent_per_s, later.received_per_s) == (2000.0, 600.0)
    assert sample_streams([], first, 13.0, PUBLIC) == {}  # finished streams drop out
    assert (later.range, later.content_range) == ("bytes=100-199", "bytes 100-199/1000")


def test_private_streams_show_only_behind_an_admin_key() -> None:
    private = fake_handler(sent=1, received=0, started_at=10.0, restricted=True)
    assert sample_streams([private], {}, 12.0, PUBLIC) == {}  # type: ignore[list-item]
    assert len(sample_streams([private], {}, 12.0, ADMIN)) == 1  # type: ignore[list-item]


def test_private_routes_share_one_label_unless_revealed(tmp_path: Path) -> None:
    (tmp_path / "m.toml").write_text(
        f'[[routes]]\nprefix = "/a"\nintegration = "file"\nroot = "{tmp_path}"\n'
        f'[[routes]]\nprefix = "/secret"\nintegration = "file"\nroot = "{tmp_path}"\n'
        f'api_keys = ["k"]\n'
    )
    routes = load(tmp_path / "m.toml").routes
    for reveal, label in ((False, RESTRICTED), (True, "/secret")):
        metrics = Metrics(routes, reveal_restricted=reveal)
        metrics.observe(record(route="/secret"))
        text = metrics.exposition().decode()
        assert f'route="{label}"' in text and ("/secret" in text) == reveal


def test_samples_are_the_playable_files_typed_by_their_bytes(tmp_path: Path) -> None:
    (tmp_path / "clips").mkdir()
    (tmp_path / ".hidden").mkdir()
    for folder in ("clips", ".hidden"):
        (tmp_path / folder / "not really.mp4").write_bytes(
            (SAMPLE_MEDIA / "video" / "testsrc-h264-aac.mp4").read_bytes()[:4096]
        )
    (tmp_path / "clips" / "song.bin").write_bytes(
        (SAMPLE_MEDIA / "audio" / "sine-523hz.mp3").read_bytes()
    )
    (tmp_path / "clips" / "notes.mp3").write_text("text, whatever the name says")
    (tmp_path / "m.toml").write_text(
        f'[[routes]]\nprefix = "/m/"\nintegration = "file"\nroot = "{tmp_path}"\n'
    )
    samples = find_samples(load(tmp_path / "m.toml").routes)
    assert [(s.url, s.kind, s.media_type) for s in samples] == [
        ("/m/clips/not%20really.mp4", "video", "video/mp4"),
        ("/m/clips/song.bin", "audio", "audio/mpeg"),
    ]


@pytest.mark.parametrize(
    "text, key, reason",
    [
        ("processes = -1", "server.processes", "between 0 and 1024"),
        ("processes = 2.5", "server.processes", "an integer"),
        (
            'access_log = "/no/such/folder/access.log"',
            "server.access_log",
            "is not an existing directory",
        ),
        ("access_log = true", "server.access_log", "a string"),
        ('status_page = "yes"', "server.status_page", "true or false"),
    ],
)
def test_bad_server_settings(tmp_path: Path, text: str, key: str, reason: str) -> None:
    path = tmp_path / "m.toml"
    path.write_text(f"[server]\n{text}\n")
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert caught.value.key == key
    assert reason in caught.value.reason


def test_server_settings_and_their_defaults(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text("")
    server = load(path).server
    assert (server.processes, server.access_log, server.status_page, server.tls) == (
        1,
        "stderr",
        True,
        None,
    )
    path.write_text(
        '[server]\nprocesses = 0\naccess_log = "logs/access.log"\nstatus_page = false\n'
    )
    (tmp_path / "logs").mkdir()
    server = load(path).server
    assert (server.processes, server.access_log, server.status_page) == (
        0,
        str(tmp_path / "logs" / "access.log"),
        False,
    )
