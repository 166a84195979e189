"""Request paths: one normalisation at the boundary, used for routing, access, files and origins.

A path that means one thing to the gateway and another to the origin behind it is how a
private prefix or an upstream base path is escaped (``/pub/../admin``, ``/%61dmin``,
``//admin``, ``/admin%2fx``): the gateway routes and checks one string, the origin normalises
it and serves another. So the path is read exactly once, here, into a ``RequestPath``, and
every later decision uses that one reading.

Strategy:

1. ``normalise_path`` puts the path in RFC 3986 §6.2.2 normal form: hex digits of
   percent-escapes upper-cased, escapes of unreserved characters decoded ("%61" is "a", "%2E"
   is "."), characters a path may not hold raw percent-encoded; then removes dot segments
   (§5.2.4). A malformed escape, or a target that is not an absolute path (origin-form, RFC
   9112 §3.2.1), is a 400 at once.
2. It also records what makes the path ambiguous between readers (``refusal``): ``.`` or
   ``..`` segments (also as ``..;x``, which Tomcat, Jetty and Spring read as ``..``), an encoded
   ``/`` or ``\\``, a raw ``\\``, NUL, or an empty segment (``//``) anywhere but at the end.
   Normal-form escapes of "/" stay escapes, yet many origins decode them before routing;
   backslashes are separators on Windows origins; frameworks collapse ``//``. A route refuses
   such a path (400) unless it takes raw paths, and then still refuses dot segments in every
   reading (``raw_refusal``): no origin reads them as anything but a way up.
3. Routing (``match_prefix``) compares prefixes with the most lenient reading an origin could
   make (``lenient_segments``: every escape decoded, ``\\`` and ``/`` both separators,
   ``;params`` dropped, empty and dot segments resolved), so no spelling of ``/admin/x``
   reaches a route other than ``/admin``. ``below_prefix`` then insists that the path spells
   the prefix plainly too; what remains is what the integration serves.

Prefixes are compared case-sensitively, as RFC 3986 §6.2.2.1 says paths are: an origin that
ignores case must not be split across routes by case.

Files (``decode_path_segments``) add their own checks on the decoded segments: dotfiles,
directories, text that is not UTF-8.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from mediaproxy.errors import NotFound, RequestError

_HEX = frozenset("0123456789abcdefABCDEF")
# RFC 3986 §2.3.
UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# §3.3: pchar = unreserved / pct-encoded / sub-delims / ":" / "@"; plus the separator.
_RAW_IN_PATH = UNRESERVED | frozenset("!$&'()*+,;=:@/")
_DOT_SEGMENTS = (".", "..")
_PLAIN = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/]*")  # nothing to decode or escape


@dataclass(frozen=True)
class RequestPath:
    """One request path, read once.

    ``segments`` are in normal form, dot segments removed, still percent-encoded where a
    character needs it: ``/v/a%20b/../c.mp4`` has ``("v", "c.mp4")``; ``/a/`` has
    ``("a", "")``.
    """

    raw: str  # as the client sent it (Tornado's Latin-1 text of the request-target's path)
    segments: tuple[str, ...]
    refusal: str | None  # why a route that takes no raw paths refuses it; None: nothing
    raw_refusal: str | None  # why a route that takes raw paths refuses it; None: nothing

    @property
    def text(self) -> str:
        """The normalised path: '/v/c.mp4'. Access checks and signatures use this."""
        return "/" + "/".join(self.segments)


@dataclass(frozen=True)
class Below:
    """What a route serves of a path: the part below its prefix."""

    path: str  # '/a/b%20c', '/' or '': normalised, or as sent on a route taking raw paths
    segments: tuple[str, ...]  # decoded: ('a', 'b c'); a segment may hold '/' on a raw route


def _escape(char: str) -> str:
    # Tornado decodes the request line as Latin-1, so a raw byte is one character below 256;
    # text from elsewhere (the command line) is UTF-8.
    encoded = char.encode("latin-1") if ord(char) < 256 else char.encode("utf-8")
    return "".join(f"%{byte:02X}" for byte in encoded)


def _normal_form(raw: str) -> str:
    """RFC 3986 §6.2.2.1-2: escapes upper-cased, unreserved ones decoded, the rest escaped."""
    if _PLAIN.fullmatch(raw):  # most paths: already in normal form
        return raw
    out: list[str] = []
    index = 0
    while index < len(raw):
        char = raw[index]
        if char == "%":
            digits = raw[index + 1 : index + 3]
            # urllib would leave "%zz" as it is; a path not encoded as it claims is a 400.
            if len(digits) != 2 or not set(digits) <= _HEX:
                raise RequestError(f"malformed percent-escape in {raw!r}")
            decoded = chr(int(digits, 16))
            out.append(decoded if decoded in UNRESERVED else "%" + digits.upper())
            index += 3
            continue
        out.append(char if char in _RAW_IN_PATH else _escape(char))
        index += 1
    return "".join(out)


def decode_segment(segment: str) -> str:
    """'b%20c' -> 'b c'. Octets that are not UTF-8 become lone surrogates (surrogateescape),
    so encoding back is lossless; a consumer that needs text refuses them."""
    if "%" not in segment and segment.isascii():
        return segment
    return unquote_to_bytes(segment).decode("utf-8", "surrogateescape")


def _remove_dot_segments(parts: list[str]) -> tuple[str, ...]:
    """RFC 3986 §5.2.4 on the segments of an absolute path; nothing climbs above the root."""
    out: list[str] = []
    for position, part in enumerate(parts):
        last = position == len(parts) - 1
        if part in _DOT_SEGMENTS:
            if part == ".." and out:
                out.pop()
            if last:
                out.append("")  # '/a/b/..' is '/a/': the result names a directory
        else:
            out.append(part)
    return tuple(out) or ("",)


def _is_dot_segment(text: str) -> bool:
    """'.', '..', and the same with ';parameters', which servlet containers read as '..'."""
    return text.split(";", 1)[0] in _DOT_SEGMENTS


def _dot_segment_in_any_reading(parts: list[str]) -> bool:
    for part in parts:
        decoded = decode_segment(part).replace("\\", "/")
        if any(_is_dot_segment(piece) for piece in decoded.split("/")):
            return True
    return False


def _refusal(parts: list[str]) -> str | None:
    """Why ``parts`` (normal form, dot segments still in) is ambiguous; None if it is not."""
    if _dot_segment_in_any_reading(parts):
        return "'.' or '..' segment"
    for position, part in enumerate(parts):
        if "%2F" in part or "%5C" in part:  # normal form: a raw backslash is escaped too
            return "encoded '/', or '\\'"
        if "%00" in part:
            return "NUL"
        if not part and position < len(parts) - 1:
            return "empty segment"
    return None


_ABSOLUTE_FORM = re.compile(r"(?i:https?)://([^/?#]*)(.*)")


def split_absolute_form(target: str) -> tuple[str | None, str]:
    """RFC 9112 §3.2.2: a server "MUST accept the absolute-form in requests" and take the host
    from it: 'http://gw:8080/a/b' -> ('gw:8080', '/a/b'). Origin-form: (None, target)."""
    match = _ABSOLUTE_FORM.fullmatch(target)
    if match is None:
        return None, target
    return match[1], match[2] or "/"


def normalise_path(raw: str) -> RequestPath:
    """Read a request path once; RequestError (400) if it is not a well-formed absolute path."""
    if not raw.startswith("/"):
        raise RequestError(f"request-target is not an absolute path: {raw[:80]!r}")
    parts = _normal_form(raw)[1:].split("/")
    return RequestPath(
        raw=raw,
        segments=_remove_dot_segments(parts),
        refusal=_refusal(parts),
        raw_refusal="'.' or '..' segment" if _dot_segment_in_any_reading(parts) else None,
    )


def lenient_segments(path: RequestPath) -> tuple[str, ...]:
    """The path as the most lenient origin would read it: every escape decoded, '\\' a
    separator, ';params' dropped, empty and dot segments resolved. Routing compares this."""
    pieces: list[str] = []
    for segment in path.segments:
        for piece in decode_segment(segment).replace("\\", "/").split("/"):
            piece = piece.split(";", 1)[0]
            if piece == "..":
                if pieces:
                    pieces.pop()
            elif piece not in ("", "."):
                pieces.append(piece)
    return tuple(pieces)


@functools.cache
def prefix_segments(prefix: str) -> tuple[str, ...]:
    """'/media/private' -> ('media', 'private'); '/' -> ()."""
    return tuple(prefix.strip("/").split("/")) if prefix.strip("/") else ()


def match_prefix(path: RequestPath, prefixes: list[str]) -> str | None:
    """The longest of ``prefixes`` ('/media', '/') that the path lies under, whole segments
    only ('/media' never serves '/mediax'), in its lenient reading; None if none does."""
    lenient = lenient_segments(path)
    best: str | None = None
    for prefix in prefixes:
        wanted = prefix_segments(prefix)
        if lenient[: len(wanted)] == wanted and (
            best is None or len(wanted) > len(prefix_segments(best))
        ):
            best = prefix
    return best


def below_prefix(path: RequestPath, prefix: str, *, raw: bool = False) -> Below:
    """What the route at ``prefix`` serves of ``path``, or RequestError (400).

    ``raw``: the route takes raw paths, and gets the rest of the path as the client sent it.
    """
    refusal = path.raw_refusal if raw else path.refusal
    if refusal is not None:
        raise RequestError(
            f"{refusal} in path {path.raw[:200]!r}", phrase="Bad Request: ambiguous path"
        )
    wanted = prefix_segments(prefix)
    raw_parts = path.raw[1:].split("/")
    if tuple(decode_segment(_normal_form(part)) for part in raw_parts[: len(wanted)]) != wanted:
        # Routed here by a lenient reading ('//media', '/media;x') that the path does not
        # spell plainly: neither this route nor the next one may guess.
        raise RequestError(
            f"path {path.raw[:200]!r} does not spell the prefix {prefix}",
            phrase="Bad Request: ambiguous path",
        )
    if raw:
        rest = raw_parts[len(wanted) :]
        segments = tuple(decode_segment(_normal_form(part)) for part in rest)
    else:
        # Not refused: no dot segments, so normal-form segments and raw parts correspond.
        rest = list(path.segments[len(wanted) :])
        segments = tuple(decode_segment(part) for part in rest)
    return Below("/" + "/".join(rest) if rest else "", segments)


def decode_path_segments(raw_path: str, *, serve_dotfiles: bool = False) -> tuple[str, ...]:
    """A file's segments: '/video/a%20b.mp4' -> ('video', 'a b.mp4'); RequestError or NotFound.

    Decoded exactly once, strictly (bytes that are not UTF-8 are a 400), and judged segment by
    segment: '..' and '.' in any encoding, NUL, backslashes and empty segments are refused
    before the file system is asked anything. Symlinks that lead out of the root are the file
    integration's check, because only the file system knows where they lead.
    """
    _normal_form(raw_path)  # the strict check of every escape
    try:
        decoded = unquote_to_bytes(raw_path).decode("utf-8")
    except UnicodeDecodeError as error:
        raise RequestError(f"path is not UTF-8: {raw_path!r}") from error
    if "\x00" in decoded or "\\" in decoded:
        raise RequestError(f"NUL or backslash in path {raw_path!r}")
    segments = (
        tuple(decoded.split("/")[1:]) if decoded.startswith("/") else tuple(decoded.split("/"))
    )
    if segments and segments[-1] == "":
        # "/dir/" names a directory, which is never served.
        raise NotFound(f"directory path {raw_path!r}")
    for segment in segments:
        if segment in ("", ".", ".."):
            raise RequestError(f"empty, '.' or '..' segment in {raw_path!r}")
        if segment.startswith(".") and not serve_dotfiles:
            raise NotFound(f"dotfile in {raw_path!r}")
    return segments
