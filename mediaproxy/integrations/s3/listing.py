"""A folder of a bucket as a listing: ListObjectsV2 pages in, HTML or JSON out, page by page.

S3 has no folders, only keys; with ``delimiter=/`` ListObjectsV2 answers the keys directly
below a prefix and the "common prefixes" (sub-folders) there, at most 1,000 per page, and a
continuation token for the next page. Each page is parsed and rendered on its own, so a
folder of a million keys costs one page of memory, never the whole list; the renderers write
a head, one fragment per page and a tail, so the response streams as the pages arrive.

Pure: no I/O. The page is parsed with ElementTree from a body of bounded size that came
from the configured store, never from a client.
"""

from __future__ import annotations

import datetime
import html
import json
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from urllib.parse import quote

from mediaproxy.http.conditional import format_http_date
from mediaproxy.http.grammar import parse_digits_or_none

# A page of 1,000 keys with long names is a few hundred KiB; beyond this it is not a page.
MAX_PAGE_BYTES = 8 * 1024 * 1024
PAGE_KEYS = 1000  # S3's own maximum per page
_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


class PageError(ValueError):
    """The store's answer is not a ListObjectsV2 page."""


@dataclass(frozen=True)
class Entry:
    name: str  # below the folder; a sub-folder's ends with "/"
    size: int | None = None  # None for a folder
    last_modified: str | None = None  # as the store wrote it (ISO 8601)


@dataclass(frozen=True)
class Page:
    entries: tuple[Entry, ...]
    next_token: str | None  # None: this was the last page


def list_query(prefix: str, token: str | None, max_keys: int | None = None) -> str:
    """The query of a ListObjectsV2 request, encoded and in order as SigV4 signs it."""
    params = [
        ("delimiter", "/"),
        ("list-type", "2"),
        ("max-keys", str(max_keys or PAGE_KEYS)),
        ("prefix", prefix),
    ]
    if token is not None:
        params.insert(0, ("continuation-token", token))
    return "&".join(f"{name}={quote(value, safe='-_.~')}" for name, value in params)


def parse_page(body: bytes, prefix: str) -> Page:
    """The entries of one page below ``prefix``, in the store's (key) order."""
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError as error:
        raise PageError(f"not XML: {error}") from error
    if root.tag.removeprefix(_NS) != "ListBucketResult":
        raise PageError(f"not a ListBucketResult but {root.tag!r}")
    entries: list[Entry] = []
    for element in root:
        tag = element.tag.removeprefix(_NS)
        if tag == "CommonPrefixes":
            name = _text(element, "Prefix").removeprefix(prefix)
            if name:
                entries.append(Entry(name))
        elif tag == "Contents":
            name = _text(element, "Key").removeprefix(prefix)
            size = _text(element, "Size")
            if name:  # "" is the folder's own marker object
                entries.append(
                    Entry(name, parse_digits_or_none(size), _text(element, "LastModified") or None)
                )
    truncated = _text(root, "IsTruncated") == "true"
    token = _text(root, "NextContinuationToken") if truncated else ""
    return Page(tuple(entries), token or None)


def _text(element: ElementTree.Element, child: str) -> str:
    found = element.find(_NS + child)
    if found is None:
        found = element.find(child)  # a store that omits the namespace
    return (found.text or "") if found is not None else ""


def wants_json(accept: str | None) -> bool:
    """Whether Accept prefers application/json to text/html (HTML on a tie, as browsers get)."""
    return _quality(accept, "application", "json") > _quality(accept, "text", "html")


def _quality(accept: str | None, kind: str, subtype: str) -> float:
    """The q of the most specific media range in ``accept`` that matches (RFC 9110 §12.5.1)."""
    if not accept:
        return 1.0 if kind == "text" else 0.0
    best: tuple[int, float] = (-1, 0.0)
    for member in accept.split(","):
        media_range, *params = (part.strip() for part in member.split(";"))
        range_kind, _, range_subtype = media_range.lower().partition("/")
        if range_kind == "*" and range_subtype == "*":
            specificity = 0
        elif range_kind == kind and range_subtype == "*":
            specificity = 1
        elif range_kind == kind and range_subtype == subtype:
            specificity = 2
        else:
            continue
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                quality = _qvalue(value.strip())
        if specificity > best[0]:
            best = (specificity, quality)
    return best[1]


def _qvalue(text: str) -> float:
    """RFC 9110 §12.4.2: qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )."""
    whole, _, fraction = text.partition(".")
    if whole not in ("0", "1") or len(fraction) > 3 or not all(c in "0123456789" for c in fraction):
        return 0.0
    value = float(f"{whole}.{fraction or '0'}")
    return value if value <= 1.0 else 0.0


class HtmlListing:
    """An index page: a table of links, relative so it works behind any prefix."""

    content_type = "text/html; charset=utf-8"

    def __init__(self, path: str, *, has_parent: bool) -> None:
        self.path = path  # as the client sees the folder, e.g. "/media/videos/"
        self.has_parent = has_parent  # False at the route's root: "../" would leave it

    def head(self) -> bytes:
        title = html.escape(f"Index of {self.path}")
        parent = (
            '<tr><td><a href="../">../</a></td><td></td><td></td></tr>\n' if self.has_parent else ""
        )
        return (
            f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{title}</title>'
            f"</head>\n<body><h1>{title}</h1>\n<table>\n<tr><th>Name</th><th>Size</th>"
            f"<th>Last modified</th></tr>\n{parent}"
        ).encode()

    def page(self, page: Page) -> bytes:
        rows = []
        for entry in page.entries:
            size = "" if entry.size is None else str(entry.size)
            rows.append(
                f'<tr><td><a href="{html.escape(quote(entry.name, safe="/"))}">'
                f"{html.escape(entry.name)}</a></td><td>{size}</td>"
                f"<td>{html.escape(_http_date(entry.last_modified))}</td></tr>\n"
            )
        return "".join(rows).encode()

    def tail(self) -> bytes:
        return b"</table>\n</body></html>\n"


class JsonListing:
    """``{"path": ..., "entries": [{"name", "type", "size", "last_modified"}, ...]}``."""

    content_type = "application/json"

    def __init__(self, path: str) -> None:
        self.path = path
        self._separator = ""  # ", " once an entry has been written

    def head(self) -> bytes:
        return f'{{"path": {json.dumps(self.path)}, "entries": ['.encode()

    def page(self, page: Page) -> bytes:
        items = []
        for entry in page.entries:
            if entry.size is None:
                items.append(json.dumps({"name": entry.name, "type": "folder"}))
            else:
                items.append(
                    json.dumps(
                        {
                            "name": entry.name,
                            "type": "file",
                            "size": entry.size,
                            "last_modified": _http_date(entry.last_modified) or None,
                        }
                    )
                )
        if not items:
            return b""
        text = self._separator + ", ".join(items)
        self._separator = ", "
        return text.encode()

    def tail(self) -> bytes:
        return b"]}\n"


def _http_date(iso: str | None) -> str:
    """S3's '2024-05-01T10:00:00.000Z' as an HTTP-date; '' when it is not one."""
    try:
        moment = datetime.datetime.fromisoformat(iso or "")
    except ValueError:
        return ""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return format_http_date(moment.timestamp())
