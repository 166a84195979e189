"""Config keys of csv_export and function routes, and the per-route `compress` switch."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from mediaproxy.config import Config, ConfigError, load
from mediaproxy.http.params import ParamSpec
from mediaproxy.integrations.csv_export import DEFAULT_BATCH_ROWS
from mediaproxy.sql_statements import single_statement


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    with sqlite3.connect(tmp_path / "shop.sqlite") as connection:
        connection.execute("CREATE TABLE orders (id INTEGER, ordered_at TEXT)")
    connection.close()
    return tmp_path


def route(body: str) -> str:
    return f'[[routes]]\nprefix = "/x"\nintegration = "csv_export"\n{body}\n'


GOOD = route(
    'database = "shop.sqlite"\n'
    'query = "SELECT * FROM orders WHERE ordered_at >= :since"\n'
    'params = { since = "date" }'
)


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
    assert not settings.escape_formulas
    assert only.compress  # on by default for generated text


def test_escape_formulas_is_read(folder: Path) -> None:
    config = load_text(folder, GOOD + "escape_formulas = true\n")
    assert config.routes[0].settings.escape_formulas
    with pytest.raises(ConfigError, match=r"routes\[0\]\.escape_formulas: must be true or false"):
        load_text(folder, GOOD + 'escape_formulas = "yes"\n')


def test_postgres_url_is_kept_and_not_opened(folder: Path) -> None:
    config = load_text(
        folder,
        route(
            'database = "postgresql://u@/db?host=/nowhere"\n'
            'query = "SELECT %(x)s"\nparams = { x = "text?" }\n'
            "compress = false"
        ),
    )
    (only,) = config.routes
    assert only.settings.is_postgres and not only.compress
    assert only.settings.params["x"].optional


@pytest.mark.parametrize(
    ("body", "key", "reason"),
    [
        (
            'database = "missing.sqlite"\nquery = "SELECT 1"',
            "routes[0].database",
            "not an existing SQLite file",
        ),
        ('database = "shop.sqlite"\nquery = "SELEC 1"', "routes[0].query", "SQLite refuses it"),
        (
            'database = "shop.sqlite"\nquery = "SELECT * FROM nope"',
            "routes[0].query",
            "no such table",
        ),
        # A placeholder the route does not declare would fail every request: refused at start.
        (
            'database = "shop.sqlite"\nquery = "SELECT :undeclared"',
            "routes[0].query",
            "SQLite refuses it",
        ),
        (
            'database = "shop.sqlite"\nquery = "SELECT 1"\nparams = { since = "day" }',
            "routes[0].params.since",
            "types are text",
        ),
        (
            'database = "shop.sqlite"\nquery = "SELECT 1"\nfilename = "x-{when}.csv"',
            "routes[0].filename",
            "unknown placeholder {when}",
        ),
        (
            'database = "shop.sqlite"\nquery = "SELECT 1"\nfilename = "x-{.csv"',
            "routes[0].filename",
            "not a valid template",
        ),
        (
            'database = "shop.sqlite"\nquery = "SELECT 1"\nbatch_rows = 0',
            "routes[0].batch_rows",
            "between 1 and",
        ),
        (
            'database = "shop.sqlite"\nquery = "SELECT 1"\ncompress = "yes"',
            "routes[0].compress",
            "true or false",
        ),
        (
            'database = "shop.sqlite"\nquery = "SELECT 1"\nline_terminator = "cr"',
            "routes[0].line_terminator",
            "crlf, lf",
        ),
        (
            'database = "shop.sqlite"\nquery = "SELECT 1"\nengine = "fast"',
            "routes[0].engine",
            "default, arrow",
        ),
        (
            'database = "shop.sqlite"\nquery = "SELECT 1"\nniceness = 20',
            "routes[0].niceness",
            "between 0 and 19",
        ),
        (
            'database = "shop.sqlite"\nquery = "SELECT 1"\nscheduling = "fifo"',
            "routes[0].scheduling",
            "must be one of idle, batch",
        ),
        (
            'database = "postgresql://db/shop"\nquery = "SELECT 1"\nengine = "arrow"',
            "routes[0].engine",
            "only SQLite routes",
        ),
        # One statement only: a second one would run with the export's connection (for
        # PostgreSQL nothing checks the query before the first request, so the text is read here).
        (
            'database = "shop.sqlite"\nquery = "SELECT 1; SELECT 2"',
            "routes[0].query",
            "one statement",
        ),  # SQLite's own parser says so
        (
            'database = "postgresql://db/shop"\nquery = "SELECT 1; DELETE FROM orders"',
            "routes[0].query",
            "one statement",
        ),
        (
            'database = "postgresql://db/shop"\nquery = "SELECT 1 /* ; */ ; -- \\n SELECT 2"',
            "routes[0].query",
            "one statement",
        ),
        (
            'database = "postgresql://db/shop"\nquery = "SELECT \'unterminated"',
            "routes[0].query",
            "unterminated",
        ),
        (
            'database = "shop.sqlite"\nquery = "SELECT 1"\ncompress_min_bytes = -1',
            "routes[0].compress_min_bytes",
            ">= 0",
        ),
    ],
)
def test_bad_export_settings(folder: Path, body: str, key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_text(folder, route(body))
    assert caught.value.key == key
    assert reason in caught.value.reason


@pytest.mark.parametrize(
    ("query", "kept"),
    [
        ("SELECT ';' AS a", "SELECT ';' AS a"),
        ("SELECT 'it''s; fine' AS a", "SELECT 'it''s; fine' AS a"),
        ('SELECT 1 AS "odd;name"', 'SELECT 1 AS "odd;name"'),
        ("SELECT 1 -- a comment; with a semicolon\n", "SELECT 1 -- a comment; with a semicolon\n"),
        ("SELECT /* nested /* ; */ still; */ 1", "SELECT /* nested /* ; */ still; */ 1"),
        ("SELECT $$ ; $$ AS a, $t$ ; $$ ; $t$ AS b", "SELECT $$ ; $$ AS a, $t$ ; $$ ; $t$ AS b"),
        # E'...' takes backslash escapes: E'\\'' is a backslash and a quote, the string goes on.
        ("SELECT E'\\\\'';' AS a", "SELECT E'\\\\'';' AS a"),
        ("SELECT E'\\';' AS a", "SELECT E'\\';' AS a"),
        ("SELECT 1;", "SELECT 1"),
        ("SELECT 1 ;  \n -- done\n", "SELECT 1 "),
    ],
)
def test_semicolons_inside_literals_and_comments_are_one_statement(query: str, kept: str) -> None:
    assert single_statement(query) == kept


@pytest.mark.parametrize(
    "query",
    [
        "SELECT 1; SELECT 2",
        "SELECT 1;;",
        "SELECT 'a'';'; DROP TABLE t",
        "SELECT E'\\\\'; DROP TABLE t",  # E'\\\\' ends the string: the ; is outside
        "SELECT $a$ $b$ ; $a$; SELECT 2",
    ],
)
def test_a_second_statement_is_refused(query: str) -> None:
    with pytest.raises(ValueError, match="one statement"):
        single_statement(query)


def test_a_trailing_semicolon_is_dropped_from_the_query(folder: Path) -> None:
    config = load_text(
        folder, route('database = "postgresql://db/shop"\nquery = "SELECT 1 AS a;  "')
    )
    assert config.routes[0].settings.query == "SELECT 1 AS a"
    assert config.routes[0].settings.line_terminator == "\r\n"


def test_compress_is_off_by_default_for_files(folder: Path) -> None:
    config = load_text(folder, '[[routes]]\nprefix = "/m"\nintegration = "file"\nroot = "."\n')
    assert not config.routes[0].compress


def test_compress_min_bytes_defaults_to_1_kib(folder: Path) -> None:
    assert load_text(folder, GOOD).routes[0].compress_min_bytes == 1024
    config = load_text(folder, GOOD + "compress_min_bytes = 0\n")
    assert config.routes[0].compress_min_bytes == 0


def function_route(body: str) -> str:
    return f'[[routes]]\nprefix = "/f"\nintegration = "function"\n{body}\n'


def test_function_handler_is_imported_from_python_path(folder: Path) -> None:
    (folder / "lib").mkdir()
    (folder / "lib" / "mp_test_handlers.py").write_text(
        "class Box:\n    @staticmethod\n    def handle(event, context):\n        return {}\n"
    )
    config = load_text(
        folder, function_route('python_path = "lib"\nhandler = "mp_test_handlers:Box.handle"')
    )
    settings = config.routes[0].settings
    assert settings.handler_name == "mp_test_handlers:Box.handle"
    assert settings.handler({}, None) == {}
    assert config.routes[0].compress


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ('handler = "no_colon"', "must be 'package.module:callable'"),
        ('handler = "mp_absent_module_xyz:handler"', "cannot import 'mp_absent_module_xyz'"),
        ('handler = "json:no_such_function"', "'json' has no 'no_such_function'"),
        ('handler = "json:__doc__"', "is not callable"),
        ('python_path = "missing"\nhandler = "json:dumps"', "is not an existing directory"),
        ('python_path = 3\nhandler = "json:dumps"', "a folder or an array of folders"),
    ],
)
def test_bad_function_settings(folder: Path, body: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_text(folder, function_route(body))
    assert reason in caught.value.reason


def test_a_module_that_fails_to_import_is_a_config_error(folder: Path) -> None:
    (folder / "mp_broken_handlers.py").write_text("raise RuntimeError('boom')\n")
    with pytest.raises(ConfigError, match="RuntimeError: boom"):
        load_text(folder, function_route('python_path = "."\nhandler = "mp_broken_handlers:x"'))
