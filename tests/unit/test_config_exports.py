"""Config keys of csv_export routes and the per-route `compress` switch."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from mediaproxy.config import DEFAULT_BATCH_ROWS, Config, ConfigError, load
from mediaproxy.http.params import ParamSpec


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    with sqlite3.connect(tmp_path / "shop.sqlite") as connection:
        connection.execute("CREATE TABLE orders (id INTEGER, ordered_at TEXT)")
    connection.close()
    return tmp_path


def route(body: str) -> str:
    return f'[[routes]]\nprefix = "/x"\nintegration = "csv_export"\n{body}\n'


GOOD = route('database = "shop.sqlite"\n'
             'query = "SELECT * FROM orders WHERE ordered_at >= :since"\n'
             'params = { since = "date" }')


def load_text(folder: Path, text: str) -> Config:
    path = folder / "m.toml"
    path.write_text(text)
    return load(path)


def test_sqlite_export_settings(folder: Path) -> None:
    config = load_text(folder, GOOD)
    (only,) = config.routes
    settings = only.settings
    assert settings.database == str(folder / "shop.sqlite")
    assert settings.params == {"since": ParamSpec("since", "date")}
    assert settings.filename == "export-{date}.csv"
    assert settings.batch_rows == DEFAULT_BATCH_ROWS
    assert not settings.is_postgres
    assert only.compress  # on by default for generated text


def test_postgres_url_is_kept_and_not_opened(folder: Path) -> None:
    config = load_text(folder, route('database = "postgresql://u@/db?host=/nowhere"\n'
                                     'query = "SELECT %(x)s"\nparams = { x = "text?" }\n'
                                     "compress = false"))
    (only,) = config.routes
    assert only.settings.is_postgres and not only.compress
    assert only.settings.params["x"].optional


@pytest.mark.parametrize(("body", "key", "reason"), [
    ('database = "missing.sqlite"\nquery = "SELECT 1"', "routes[0].database",
     "not an existing SQLite file"),
    ('database = "shop.sqlite"\nquery = "SELEC 1"', "routes[0].query", "SQLite refuses it"),
    ('database = "shop.sqlite"\nquery = "SELECT * FROM nope"', "routes[0].query",
     "no such table"),
    # A placeholder the route does not declare would fail every request: refused at start.
    ('database = "shop.sqlite"\nquery = "SELECT :undeclared"', "routes[0].query",
     "SQLite refuses it"),
    ('database = "shop.sqlite"\nquery = "SELECT 1"\nparams = { since = "day" }',
     "routes[0].params.since", "types are text"),
    ('database = "shop.sqlite"\nquery = "SELECT 1"\nfilename = "x-{when}.csv"',
     "routes[0].filename", "unknown placeholder {when}"),
    ('database = "shop.sqlite"\nquery = "SELECT 1"\nfilename = "x-{.csv"',
     "routes[0].filename", "not a valid template"),
    ('database = "shop.sqlite"\nquery = "SELECT 1"\nbatch_rows = 0', "routes[0].batch_rows",
     "between 1 and"),
    ('database = "shop.sqlite"\nquery = "SELECT 1"\ncompress = "yes"', "routes[0].compress",
     "true or false"),
])
def test_bad_export_settings(folder: Path, body: str, key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_text(folder, route(body))
    assert caught.value.key == key
    assert reason in caught.value.reason


def test_compress_is_off_by_default_for_files(folder: Path) -> None:
    config = load_text(folder, '[[routes]]\nprefix = "/m"\nintegration = "file"\nroot = "."\n')
    assert not config.routes[0].compress
