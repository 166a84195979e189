"""The smallest rules of HTTP's grammar, each written once; every parser builds on these.

Strategy: a rule is a function over ``str`` that either returns the value or raises
``GrammarError`` (a ``ValueError``), so a caller's ``except ValueError`` keeps working and a
caller that wants the status knows it (``status_hint``, as h11's errors carry it).

Python is laxer than HTTP: ``int()`` takes "+5", "-1", " 7", "1_0" and any Unicode digit
("٣", the Arabic-Indic three), ``str.isdigit()`` takes "²" (which ``int()`` then refuses),
and ``int()`` refuses more than 4,300 digits with its own ValueError. RFC 5234 appendix B.1:
``DIGIT = %x30-39``, nothing else.
"""

from __future__ import annotations

import re

# A signed 64-bit file offset (off_t) is the largest size any file or body here can have;
# nginx refuses a Content-Length beyond it as well.
MAX_INT64 = 2**63 - 1
_MAX_INT64_DIGITS = len(str(MAX_INT64))


class GrammarError(ValueError):
    """Text that does not follow the rule it was parsed by."""

    status_hint = 400


def is_digits(text: str) -> bool:
    """Whether ``text`` is ``1*DIGIT``: one or more ASCII digits, nothing else."""
    # Among ASCII characters, isdigit() holds for 0-9 alone.
    return text.isascii() and text.isdigit()


def parse_digits(text: str, *, maximum: int = MAX_INT64) -> int:
    """The value of ``1*DIGIT``; GrammarError for anything else or a value over ``maximum``.

    Leading zeros are allowed (the grammar allows them); the length check comes before any
    conversion, so a numeral of a million digits costs nothing.
    """
    if not is_digits(text):
        raise GrammarError(f"not 1*DIGIT: {text[:40]!r}")
    significant = text.lstrip("0") or "0"  # int() counts leading zeros against its limit
    if len(significant) > _MAX_INT64_DIGITS or int(significant) > maximum:
        raise GrammarError(f"{text[:40]} is over {maximum}")
    return int(significant)


def parse_digits_or_none(text: str) -> int | None:
    """``parse_digits``, or None where it refuses: for values that only inform (a size in a
    listing, an error document's), whose absence is no error."""
    try:
        return parse_digits(text)
    except GrammarError:
        return None


def parse_digits_capped(text: str, ceiling: int) -> int:
    """The value of ``1*DIGIT``, or ``ceiling`` when it is larger; GrammarError if not digits.

    For positions such as a byte range's, where RFC 9110 §14.1.2 asks recipients to "anticipate
    potentially large decimal numerals" and any value past the end means the end.
    """
    if not is_digits(text):
        raise GrammarError(f"not 1*DIGIT: {text[:40]!r}")
    significant = text.lstrip("0") or "0"
    if len(significant) > len(str(ceiling)):
        return ceiling
    return min(int(significant), ceiling)


# RFC 9110 §5.6.2: token = 1*tchar
#   tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." / "^" / "_" / "`" / "|"
#           / "~" / DIGIT / ALPHA
TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"  # a pattern, for rules built on this one
_TOKEN = re.compile(TOKEN)


def is_token(text: str) -> bool:
    """Whether ``text`` is an RFC 9110 token (a field name, a method, a range unit)."""
    return _TOKEN.fullmatch(text) is not None


# RFC 9110 §5.5:
#   field-value   = *field-content
#   field-content = field-vchar [ 1*( SP / HTAB / field-vchar ) field-vchar ]
#   field-vchar   = VCHAR / obs-text          ; obs-text = %x80-FF
# No control character but HTAB, nothing past Latin-1 (the wire is octets), and no whitespace
# at either end ("a field value does not include leading or trailing whitespace").
_FIELD_VCHAR = r"[\x21-\x7e\x80-\xff]"
FIELD_VALUE = rf"(?:{_FIELD_VCHAR}(?:[\t\x20-\x7e\x80-\xff]*{_FIELD_VCHAR})?)?"
_FIELD_VALUE = re.compile(FIELD_VALUE)


def is_field_value(text: str) -> bool:
    """Whether ``text`` is an RFC 9110 field-value (each character one octet on the wire)."""
    return _FIELD_VALUE.fullmatch(text) is not None


_HEX_DIGITS = re.compile(r"[0-9A-Fa-f]+")
_MAX_INT64_HEX_DIGITS = len(f"{MAX_INT64:x}")


def parse_hex_digits(text: str, *, maximum: int = MAX_INT64) -> int:
    """The value of ``1*HEXDIG`` (a chunk size, RFC 9112 §7.1); GrammarError for anything
    else or a value over ``maximum``. ``int(text, 16)`` would take "0x1f", " 1f", "1_f"."""
    if _HEX_DIGITS.fullmatch(text) is None:
        raise GrammarError(f"not 1*HEXDIG: {text[:40]!r}")
    significant = text.lstrip("0") or "0"
    if len(significant) > _MAX_INT64_HEX_DIGITS or int(significant, 16) > maximum:
        raise GrammarError(f"{text[:40]} is over {maximum:x}")
    return int(significant, 16)
