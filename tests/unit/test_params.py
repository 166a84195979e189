"""mediaproxy.http.params: typed, strict query-string parameters for exports."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mediaproxy.http.params import (
    MAX_TEXT_CHARS,
    TYPE_FORMS,
    InvalidParameter,
    ParamSpec,
    parse_declaration,
    parse_query,
    parse_value,
)


def spec(kind: str, name: str = "p") -> ParamSpec:
    return parse_declaration(name, kind)


@pytest.mark.parametrize(
    ("kind", "raw", "expected"),
    [
        ("text", 'Zoë, "quoted"', 'Zoë, "quoted"'),
        ("text", "", ""),
        ("integer", "42", 42),
        ("integer", "-7", -7),
        ("integer", "0042", 42),
        ("integer", "9223372036854775807", 2**63 - 1),
        ("integer", "-9223372036854775808", -(2**63)),
        ("number", "3.25", 3.25),
        ("number", "-1e3", -1000.0),
        ("number", "7", 7.0),
        ("date", "2024-01-01", date(2024, 1, 1)),
        ("date", "2024-02-29", date(2024, 2, 29)),
        ("datetime", "2024-01-01T10:30", datetime(2024, 1, 1, 10, 30)),
        ("datetime", "2024-01-01 10:30:05", datetime(2024, 1, 1, 10, 30, 5)),
        (
            "datetime",
            "2024-01-01T10:30:05.5Z",
            datetime(2024, 1, 1, 10, 30, 5, 500000, timezone.utc),
        ),
        (
            "datetime",
            "2024-01-01T10:30:05-02:30",
            datetime(2024, 1, 1, 10, 30, 5, tzinfo=timezone(-timedelta(hours=2, minutes=30))),
        ),
        # An unencoded "+" arrives as a space.
        (
            "datetime",
            "2024-01-01T10:30 01:00",
            datetime(2024, 1, 1, 10, 30, tzinfo=timezone(timedelta(hours=1))),
        ),
        ("boolean", "true", True),
        ("boolean", "FALSE", False),
        ("boolean", "1", True),
        ("boolean", "0", False),
    ],
)
def test_accepted_values(kind: str, raw: str, expected: object) -> None:
    value = parse_value(spec(kind), raw)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(
    ("kind", "raw"),
    [
        ("integer", ""),
        ("integer", "+5"),
        ("integer", "1_000"),
        ("integer", "١٢"),
        ("integer", " 5"),
        ("integer", "5.0"),
        ("integer", "9223372036854775808"),
        ("integer", "0x10"),
        ("number", "nan"),
        ("number", "inf"),
        ("number", "1e999"),
        ("number", ".5"),
        ("number", "5."),
        ("number", "1_0"),
        ("number", ""),
        ("date", "20240101"),
        ("date", "2024-W01-1"),
        ("date", "2024-02-30"),
        ("date", "2024-1-1"),
        ("date", "2024-01-01T00:00"),
        ("datetime", "2024-01-01"),
        ("datetime", "2024-01-01T24:00"),
        ("datetime", "2024-01-01T10"),
        ("datetime", "2024-01-01T10:00+25:00"),
        ("datetime", "2024-01-01T10:00:00.1234567"),
        ("boolean", "yes"),
        ("boolean", ""),
        ("boolean", "2"),
        ("text", "a\x00b"),
        ("text", "x" * (MAX_TEXT_CHARS + 1)),
    ],
)
def test_refused_values_name_the_parameter(kind: str, raw: str) -> None:
    with pytest.raises(InvalidParameter) as caught:
        parse_value(spec(kind, "since"), raw)
    assert caught.value.name == "since"
    assert "'since'" in str(caught.value)


SPECS = {"since": spec("date", "since"), "customer": spec("text?", "customer")}


def test_query_binds_declared_parameters() -> None:
    assert parse_query("since=2024-01-01&customer=Zo%C3%AB+M", SPECS) == {
        "since": date(2024, 1, 1),
        "customer": "Zoë M",
    }


def test_optional_parameter_is_none_when_absent() -> None:
    assert parse_query("since=2024-01-01", SPECS) == {"since": date(2024, 1, 1), "customer": None}


@pytest.mark.parametrize(
    ("query", "name", "reason"),
    [
        ("", "since", "is required: a date YYYY-MM-DD"),
        (
            "since=2024-01-01&sinec=2024",
            "sinec",
            "unknown parameter; this export takes customer, since",
        ),
        ("since=2024-01-01&since=2024-01-02", "since", "given more than once"),
        ("since=yesterday", "since", "must be a date YYYY-MM-DD, got 'yesterday'"),
        ("since=2024-01-01&customer=%FF", "(query string)", "is not UTF-8"),
        ("&".join(f"f{i}=1" for i in range(101)), "(query string)", "more than 100 fields"),
    ],
)
def test_query_refusals(query: str, name: str, reason: str) -> None:
    with pytest.raises(InvalidParameter) as caught:
        parse_query(query, SPECS)
    assert caught.value.name == name
    assert reason in caught.value.reason


def test_no_parameters_declared() -> None:
    assert parse_query("", {}) == {}
    with pytest.raises(InvalidParameter, match="takes no parameters"):
        parse_query("x=1", {})


@pytest.mark.parametrize(
    ("name", "declared", "message"),
    [
        ("since", "datee", "types are text, integer"),
        ("1st", "date", "letters, digits and _"),
        ("a-b", "text", "letters, digits and _"),
    ],
)
def test_bad_declarations(name: str, declared: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_declaration(name, declared)


@given(kind=st.sampled_from(sorted(TYPE_FORMS)), raw=st.text(max_size=60))
def test_any_value_parses_or_is_refused_by_name(kind: str, raw: str) -> None:
    try:
        value = parse_value(spec(kind, "p"), raw)
    except InvalidParameter as error:
        assert error.name == "p"
    else:
        assert value is not None


@given(st.text(max_size=200))
def test_any_query_string_parses_or_is_refused(query: str) -> None:
    try:
        values = parse_query(query, SPECS)
    except InvalidParameter:
        return
    assert set(values) == set(SPECS)
    assert isinstance(values["since"], date)


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_integers_round_trip(number: int) -> None:
    assert parse_value(spec("integer"), str(number)) == number


@given(st.datetimes(timezones=st.just(timezone.utc)))
def test_utc_datetimes_round_trip(moment: datetime) -> None:
    text = moment.isoformat().replace("+00:00", "Z")
    assert parse_value(spec("datetime"), text) == moment
