"""escape_formula: OWASP's CSV-injection rule, one cell at a time."""

from __future__ import annotations

import pytest

from mediaproxy.integrations.csv_export import escape_formula


@pytest.mark.parametrize(
    ("value", "escaped"),
    [
        ("=1+2", "'=1+2"),
        ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("-", "'-"),
        ("-inf", "'-inf"),
        ("-1e", "'-1e"),
        ("-١", "'-١"),  # not an ASCII digit: not a number
        # Plain numbers, as a database writes them, are data, not formulas.
        ("-3", "-3"),
        ("+3", "+3"),
        ("-2.5", "-2.5"),
        ("-.5", "-.5"),
        ("-5.", "-5."),
        ("-1.5E+10", "-1.5E+10"),
        # Nothing else changes.
        ("a=b", "a=b"),
        (" =1", " =1"),
        ("'=1", "'=1"),
        ("", ""),
        (None, None),
        (-3, -3),
        (-2.5, -2.5),
        (b"=x", b"=x"),
    ],
)
def test_escape_formula(value: object, escaped: object) -> None:
    assert escape_formula(value) == escaped
