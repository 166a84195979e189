"""Content-Disposition for downloads (RFC 6266, with RFC 8187 ``filename*``).

Strategy: reduce the name to something safe to suggest -- its last path
component, without control characters or text-direction overrides -- then
write it twice, as RFC 6266 Appendix D advises:

* ``filename="..."``, an ASCII-only fallback: Latin letters lose their
  accents, a few letters and punctuation marks are spelled in ASCII
  (``résumé – notes.txt`` becomes ``resume - notes.txt``), and every other
  character, or one some user agent mishandles, becomes ``_``, and
* ``filename*=UTF-8''...``, the exact name percent-encoded, whenever the
  fallback had to change anything.

The fallback is what ``curl -OJ`` and other clients that ignore ``filename*``
save under, so it should read as the name does. Transliteration is the
standard library's: NFKD compatibility decomposition with the combining marks
dropped (accents, ligatures, full-width forms), plus a table for the letters
and marks it leaves alone (ß, æ, ø, ł, dashes, curly quotes). That covers the
Latin scripts; the packages that go further (Unidecode is GPL; anyascii guesses
readings, Chinese ones for Japanese kanji) would add a dependency for names
that every browser takes from ``filename*`` anyway.

The header value is always printable ASCII, whatever the input, so it can be
written by any HTTP stack and cannot inject a header.
"""

from __future__ import annotations

import unicodedata
from urllib.parse import quote

from mediaproxy.http.grammar import is_token

__all__ = ["content_disposition"]

# RFC 8187 §3.2.1: attr-char = ALPHA / DIGIT / "!" / "#" / "$" / "&" / "+" /
# "-" / "." / "^" / "_" / "`" / "|" / "~". quote() always keeps letters, digits
# and "_.-~"; these are the rest.
_ATTR_CHAR_EXTRA = "!#$&+^`|"
# Characters that reorder how a name is displayed, so "invoice\u202efdp.exe"
# shows as "invoiceexe.pdf": Unicode bidi embedding, override and isolate
# controls, plus the implicit marks.
_BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
# In the quoted fallback. RFC 6266 Appendix D: "Avoid including the "\"
# character in the quoted-string form of the filename parameter, as escaping
# is not implemented by some user agents, and "\" can be considered an illegal
# path character." A quote would need that escaping. "Avoid including the
# percent character followed by two hexadecimal digits (e.g., %A9) in the
# filename parameter, since some existing implementations consider it to be
# an escape character, while others will pass it through unchanged."
_FALLBACK_UNSAFE = frozenset('"\\%/')
# What NFKD leaves as it is, in ASCII. A double quote would be replaced: a single one reads
# the same.
_TRANSLITERATIONS = {
    "ß": "ss",
    "ẞ": "SS",
    "æ": "ae",
    "Æ": "AE",
    "œ": "oe",
    "Œ": "OE",
    "ø": "o",
    "Ø": "O",
    "ł": "l",
    "Ł": "L",
    "đ": "d",
    "Đ": "D",
    "ð": "d",
    "Ð": "D",
    "þ": "th",
    "Þ": "Th",
    "ı": "i",
    "ħ": "h",
    "Ħ": "H",
    "ŧ": "t",
    "Ŧ": "T",
    **dict.fromkeys("\u2010\u2011\u2012\u2013\u2014\u2015\u2212", "-"),  # dashes, minus
    **dict.fromkeys(
        "\u2018\u2019\u201a\u201b\u2032\u201c\u201d\u201e\u201f\u2033\u00ab\u00bb\u2039\u203a", "'"
    ),  # quotes, primes, guillemets
    "\u00d7": "x",  # multiplication sign
}


def content_disposition(filename: str, disposition: str = "attachment") -> str:
    """A Content-Disposition value suggesting ``filename`` (only its basename).

    If nothing usable remains of the name, the value is the bare disposition
    type and the user agent names the file itself.
    """
    # RFC 6266 §4.1: disposition-type = "inline" | "attachment" | disp-ext-type
    if not is_token(disposition):
        raise ValueError(f"disposition type {disposition!r} is not a token")

    name = _clean(filename)
    if not name:
        return disposition

    fallback = "".join(map(_to_ascii, name))
    if fallback in {".", ".."}:  # from a compatibility form ("\u2025"): not a dot segment
        fallback = "_" * len(fallback)
    value = f'{disposition}; filename="{fallback}"'
    if fallback != name:
        # RFC 6266 Appendix D: "Include a "filename*" parameter where the
        # desired filename cannot be expressed faithfully using the "filename"
        # form." [...] "When a "filename" parameter is included as a fallback
        # (as per above), "filename" should occur first, due to parsing
        # problems in some existing implementations."
        value += "; filename*=UTF-8''" + quote(name, safe=_ATTR_CHAR_EXTRA)
    return value


def _to_ascii(char: str) -> str:
    """One character of the fallback name: itself, its ASCII spelling, or ``_``."""
    if char in _TRANSLITERATIONS:
        return _TRANSLITERATIONS[char]
    if " " <= char <= "~":
        return "_" if char in _FALLBACK_UNSAFE else char
    decomposed = [c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c)]
    if not decomposed or decomposed == [char]:
        return "_"
    return "".join(map(_to_ascii, decomposed))  # one level: NFKD's output is fully decomposed


def _clean(filename: str) -> str:
    # A name from the file system may carry lone surrogates (undecodable bytes
    # under surrogateescape). They cannot be encoded as UTF-8; U+FFFD says
    # "a character was here" without failing the download.
    name = "".join("\ufffd" if unicodedata.category(c) == "Cs" else c for c in filename)
    # NFC, not NFKC: compatibility folding can create a path separator
    # (U+FF0F FULLWIDTH SOLIDUS becomes "/") after the split below.
    name = unicodedata.normalize("NFC", name)
    # RFC 6266 §4.3: "Recipients MUST NOT be able to write into any location
    # other than one to which they are specifically entitled." Only the last
    # component is a file name; both separators, since the user agent may run
    # on Windows whatever this server runs on.
    name = name.replace("\\", "/").rpartition("/")[2]
    name = "".join(c for c in name if unicodedata.category(c) != "Cc" and c not in _BIDI_CONTROLS)
    # Checked after the removals: "..\x00" is ".." once the NUL is gone.
    if name in {".", ".."}:
        return ""
    return name
