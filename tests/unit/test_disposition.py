"""mediaproxy.http.disposition: Content-Disposition with RFC 8187 filename*."""

from __future__ import annotations

import email.message
import re
import unicodedata
from urllib.parse import unquote_to_bytes

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from mediaproxy.http.disposition import content_disposition

# RFC 8187 §3.2.1: ext-value with the UTF-8 charset and no language.
EXT_VALUE = re.compile(r"UTF-8''((?:[A-Za-z0-9!#$&+\-.^_`|~]|%[0-9A-F]{2})+)")
SHAPE = re.compile(
    r'(?P<type>[a-z]+)(?:; filename="(?P<fallback>[ !#-\[\]-~]*)"(?:; filename\*=(?P<ext>\S+))?)?'
)


def decode(value: str) -> tuple[str, str | None, str | None]:
    """(type, fallback, exact name) read back from a header we produced."""
    match = SHAPE.fullmatch(value)
    assert match is not None, value
    ext = match["ext"]
    exact = None
    if ext is not None:
        ext_match = EXT_VALUE.fullmatch(ext)
        assert ext_match is not None, ext
        exact = unquote_to_bytes(ext_match[1]).decode("utf-8")
    return match["type"], match["fallback"], exact


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("report.pdf", 'attachment; filename="report.pdf"'),
        ("a b.txt", 'attachment; filename="a b.txt"'),
        ("it's (1) [final].txt", """attachment; filename="it's (1) [final].txt\""""),
        # Non-ASCII: transliterated in the fallback where Latin letters can say it, "_" where
        # not, and the exact name in filename*.
        (
            "日本語.pdf",
            "attachment; filename=\"___.pdf\"; filename*=UTF-8''%E6%97%A5%E6%9C%AC%E8%AA%9E.pdf",
        ),
        ("naïve.mp4", "attachment; filename=\"naive.mp4\"; filename*=UTF-8''na%C3%AFve.mp4"),
        (
            "€ rates.csv",
            "attachment; filename=\"_ rates.csv\"; filename*=UTF-8''%E2%82%AC%20rates.csv",
        ),
        (
            "résumé – notes.txt",
            'attachment; filename="resume - notes.txt"; '
            "filename*=UTF-8''r%C3%A9sum%C3%A9%20%E2%80%93%20notes.txt",
        ),
        (
            "Straße Æble Øl œuvre Łódź.txt",
            "attachment; filename=\"Strasse AEble Ol oeuvre Lodz.txt\"; filename*=UTF-8''"
            "Stra%C3%9Fe%20%C3%86ble%20%C3%98l%20%C5%93uvre%20%C5%81%C3%B3d%C5%BA.txt",
        ),
        (
            "“quoted” ‘single’ a—b.txt",
            "attachment; filename=\"'quoted' 'single' a-b.txt\"; "
            "filename*=UTF-8''%E2%80%9Cquoted%E2%80%9D%20%E2%80%98single%E2%80%99%20a%E2%80%94b.txt",
        ),
        (
            "ﬁle½.txt",
            "attachment; filename=\"file1_2.txt\"; filename*=UTF-8''%EF%AC%81le%C2%BD.txt",
        ),
        # Compatibility forms never become a separator or a dot segment in the fallback.
        ("a\uff0fb.txt", "attachment; filename=\"a_b.txt\"; filename*=UTF-8''a%EF%BC%8Fb.txt"),
        ("\u2025", "attachment; filename=\"__\"; filename*=UTF-8''%E2%80%A5"),
        # Decomposed input is composed first.
        ("nai\u0308ve.mp4", "attachment; filename=\"naive.mp4\"; filename*=UTF-8''na%C3%AFve.mp4"),
        # Characters some user agents mishandle in the quoted form.
        (
            'say "hi".txt',
            "attachment; filename=\"say _hi_.txt\"; filename*=UTF-8''say%20%22hi%22.txt",
        ),
        ("100%.txt", "attachment; filename=\"100_.txt\"; filename*=UTF-8''100%25.txt"),
        ("%41.txt", "attachment; filename=\"_41.txt\"; filename*=UTF-8''%2541.txt"),
        # Only the last path component, with either separator.
        ("../../etc/passwd", 'attachment; filename="passwd"'),
        ("/srv/media/clip.mp4", 'attachment; filename="clip.mp4"'),
        ("C:\\Users\\me\\clip.mp4", 'attachment; filename="clip.mp4"'),
        ("..\\..\\boot.ini", 'attachment; filename="boot.ini"'),
        # Control characters and bidi overrides are removed, not replaced.
        ("a\x00b\r\nSet-Cookie: x.txt", 'attachment; filename="abSet-Cookie: x.txt"'),
        ("tab\there.txt", 'attachment; filename="tabhere.txt"'),
        ("del\x7f\x85.txt", 'attachment; filename="del.txt"'),
        ("invoice\u202efdp.exe", 'attachment; filename="invoicefdp.exe"'),
        ("\u2066x\u2069\u200f.txt", 'attachment; filename="x.txt"'),
        # A lone surrogate (an undecodable byte from the file system).
        ("\udcff.bin", "attachment; filename=\"_.bin\"; filename*=UTF-8''%EF%BF%BD.bin"),
        # Nothing usable left: the user agent picks the name.
        ("", "attachment"),
        ("dir/", "attachment"),
        ("..", "attachment"),
        ("a/..", "attachment"),
        (".", "attachment"),
        (".\x00.", "attachment"),
        ("\x00\x01", "attachment"),
        # Dots inside a name are fine.
        ("...", 'attachment; filename="..."'),
        (".hidden", 'attachment; filename=".hidden"'),
    ],
)
def test_content_disposition(filename: str, expected: str) -> None:
    assert content_disposition(filename) == expected


def test_inline() -> None:
    assert content_disposition("clip.mp4", "inline") == 'inline; filename="clip.mp4"'


@pytest.mark.parametrize(
    "disposition", ["", "at tachment", "attachment;", 'x"y', "attachment\r\n", "ätt"]
)
def test_disposition_type_must_be_a_token(disposition: str) -> None:
    with pytest.raises(ValueError):
        content_disposition("a.txt", disposition)


def test_fallback_parses_with_the_stdlib() -> None:
    message = email.message.Message()
    message["Content-Disposition"] = content_disposition('weird "name" 100%.txt')
    assert message.get_filename() == "weird _name_ 100_.txt"


@given(filename=st.text())
@example(filename="a/b\\c")
@example(filename="\ud800")
@example(filename="x\u202e/y")
@example(filename="\uff0fetc\uff0fpasswd")
def test_any_name_gives_a_safe_header(filename: str) -> None:
    value = content_disposition(filename)
    # Printable ASCII only: nothing an HTTP stack could refuse or be split by.
    assert all(" " <= c <= "~" for c in value)
    kind, fallback, exact = decode(value)
    assert kind == "attachment"
    name = exact if exact is not None else fallback
    if name is None:
        return
    assert name not in {"", ".", ".."}
    assert "/" not in name and "\\" not in name
    assert not any(c < " " or "\x7f" <= c <= "\x9f" or c in "\u202e\u2066" for c in name)
    assert fallback is not None
    assert fallback not in {"", ".", ".."}
    assert "/" not in fallback and "\\" not in fallback
    # filename* appears exactly when the fallback is not faithful.
    assert (exact is None) == (fallback == name)


@given(
    filename=st.text(
        alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters='/\\"%')
    )
)
def test_plain_ascii_names_need_no_filename_star(filename: str) -> None:
    value = content_disposition(filename)
    if filename in {"", ".", ".."}:
        assert value == "attachment"
    else:
        assert value == f'attachment; filename="{filename}"'


# Names a person would give a file: any letters, marks, digits, punctuation,
# symbols and spaces, in any script, but no separators or invisible controls.
ordinary_names = st.text(
    alphabet=st.characters(
        categories=["L", "M", "N", "P", "S", "Zs"], exclude_characters="/\\\u061c"
    ),
    min_size=1,
).filter(lambda name: name not in {".", ".."})


@given(filename=ordinary_names)
@example(filename="e\u0301te\u0301.mp4")
def test_ordinary_names_round_trip(filename: str) -> None:
    _, fallback, exact = decode(content_disposition(filename))
    assert (exact if exact is not None else fallback) == unicodedata.normalize("NFC", filename)
