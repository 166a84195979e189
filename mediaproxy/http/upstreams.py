"""Where a proxied request goes, and how the origin's own URLs are turned back into ours.

A route ``prefix = "/media"`` with ``upstream = "http://origin:8000/base/"`` maps the
gateway's ``/media/a/b?q=1`` to the origin's ``/base/a/b?q=1``, and the origin's
``Location: http://origin:8000/base/c`` back to ``http://<gateway>/media/c``.

Strategy: the request target is passed on byte for byte, never decoded and re-encoded, so
``%2F``, ``%25``, ``+``, ``;`` and doubled slashes reach the origin exactly as the client sent
them (an origin may give them meaning the gateway cannot know). The one exception is a byte
that may not appear in a request-target at all (RFC 9112 §3.2: control characters, space,
anything beyond ASCII): Tornado hands those over as Latin-1 characters, and they are
percent-encoded here rather than sent raw.

``Location`` rewriting only touches URLs that point below the upstream's base path; a
relative reference ("next", "../x") resolves the same way against either URL, and a URL
elsewhere (another host, or outside the base) is the origin's business and left alone. A
rewritten one never names another host: ``/base//evil`` below a root route is ``/evil``, not
``//evil``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from mediaproxy.http.paths import normalise_path

_DEFAULT_PORTS = {"http": 80, "https": 443}


def _encode_forbidden(text: str) -> str:
    """Percent-encode what a request-target may not contain; leave every other byte as is."""
    if text.isascii() and text.isprintable() and " " not in text:
        return text
    out = []
    for char in text:
        if "!" <= char <= "~":
            out.append(char)
        else:
            encoded = char.encode("latin-1") if ord(char) < 256 else char.encode("utf-8")
            out.extend(f"%{byte:02X}" for byte in encoded)
    return "".join(out)


@dataclass(frozen=True)
class Upstream:
    """An origin and the base path the route's prefix maps to (always ending in '/')."""

    scheme: str
    host: str  # an IPv6 literal without its brackets
    port: int
    base_path: str

    @classmethod
    def parse(cls, url: str, schemes: tuple[str, ...] = ("http",)) -> Upstream:
        """'http://host:port/base/' -> Upstream; ValueError says what is wrong with it."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as error:
            raise ValueError(f"not a valid URL ({error}): {url!r}") from error
        scheme = parts.scheme.lower()
        if scheme not in schemes:
            raise ValueError(
                f"must be an {' or '.join(f'{s}://' for s in schemes)} URL, got {url!r}"
            )
        if not parts.hostname:
            raise ValueError(f"names no host: {url!r}")
        if parts.username is not None or parts.password is not None:
            raise ValueError(f"must not carry credentials: {url!r}")
        if parts.query or parts.fragment or url.rstrip().endswith(("?", "#")):
            raise ValueError(f"must not have a query or fragment: {url!r}")
        if any(not "!" <= char <= "~" for char in url):
            raise ValueError(f"must be plain ASCII without spaces: {url!r}")
        try:
            parts.hostname.encode("idna")
        except UnicodeError as error:
            raise ValueError(f"{parts.hostname!r} is not a valid host name ({error})") from error
        base_path = parts.path if parts.path.endswith("/") else parts.path + "/"
        return cls(scheme, parts.hostname, port or _DEFAULT_PORTS[scheme], base_path)

    @property
    def authority(self) -> str:
        """The Host header for the origin: 'host', 'host:8000' or '[::1]:8000'."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == _DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.scheme}://{self.authority}{self.base_path}"

    def target(self, path: str, query: str) -> str:
        """The origin's request-target for a path below the route prefix ('/a/b' or '')."""
        below = path[1:] if path.startswith("/") else path
        target = self.base_path + _encode_forbidden(below)
        return f"{target}?{_encode_forbidden(query)}" if query else target

    def rewrite_location(self, location: str, public_base: str) -> str:
        """An origin URL below the base path, as the same URL below ``public_base``.

        ``public_base`` is the route as the client sees it, ending in '/': either a full URL
        ('http://gateway:8080/media/') for absolute locations, and its path is used for
        absolute-path ones ('/base/x' -> '/media/x').
        """
        try:
            parts = urlsplit(location)
            port = parts.port
        except ValueError:
            return location
        if parts.scheme or location.startswith("//"):
            scheme = parts.scheme.lower() or self.scheme
            same_origin = (
                scheme == self.scheme
                and parts.hostname is not None
                and parts.hostname.lower() == self.host.lower()
                and (port or _DEFAULT_PORTS.get(scheme)) == self.port
            )
            if not same_origin or parts.username is not None:
                return location
            mapped = self._below_base(_path_and_after(location))
            return location if mapped is None else public_base + mapped
        if location.startswith("/"):
            mapped = self._below_base(location)
            return (
                location if mapped is None else _on_this_host(_path_and_after(public_base) + mapped)
            )
        return location

    def _below_base(self, path_and_after: str) -> str | None:
        """'/base/x?y' -> 'x?y'; '/base' -> ''; None for a path outside the base."""
        if path_and_after.startswith(self.base_path):
            return path_and_after[len(self.base_path) :]
        bare_base = self.base_path.rstrip("/")
        rest = path_and_after[len(bare_base) :]
        if bare_base and path_and_after.startswith(bare_base) and rest[:1] in ("", "?", "#"):
            return rest
        return None


# A browser (WHATWG URL parsing) removes tabs and newlines anywhere and reads a backslash as
# "/": a path-absolute reference that starts with two of these names another host ("//evil").
_HOST_MARKERS = re.compile(r"[/\\\t\n\r]+")


def _on_this_host(path: str) -> str:
    """'//evil/x' -> '/evil/x': the leading run of slashes (as a browser reads them) made one.

    Only a rewritten Location needs it: '/base//evil' below a root route would otherwise come
    out as '//evil', an open redirect the origin never asked for.
    """
    run = _HOST_MARKERS.match(path)
    return "/" + path[run.end() :] if run else path


def _path_and_after(url: str) -> str:
    """'http://h:1/p?q#f' -> '/p?q#f'; the path, query and fragment exactly as written."""
    if "://" in url:
        after_scheme = url.split("://", 1)[1]
    elif url.startswith("//"):
        after_scheme = url[2:]
    else:
        return url
    cut = min(
        (i for i in (after_scheme.find(c) for c in "/?#") if i >= 0), default=len(after_scheme)
    )
    rest = after_scheme[cut:]
    return rest if rest.startswith("/") else "/" + rest


@dataclass(frozen=True)
class PublicUrl:
    """Where clients reach the gateway (``public_url``), when something in front of it (a load
    balancer, a TLS terminator, a path-based router) means the request's own Host and scheme
    are not that, or cannot be trusted to be."""

    scheme: str  # "http" or "https"
    authority: str  # "media.example.com" or "media.example.com:8443", host lower-cased
    mount: str  # the path in front of every route: "" or "/gw"

    @classmethod
    def parse(cls, url: str) -> PublicUrl:
        """'https://media.example.com/gw/' -> PublicUrl; ValueError says what is wrong."""
        if any(not "!" <= char <= "~" for char in url):
            raise ValueError(f"must be plain ASCII without spaces: {url!r}")
        try:
            parts = urlsplit(url)
            _ = parts.port  # raises ValueError for a port that is not one
        except ValueError as error:
            raise ValueError(f"not a valid URL ({error}): {url!r}") from error
        if parts.scheme.lower() not in ("http", "https"):
            raise ValueError(f"must be an http:// or https:// URL, got {url!r}")
        if not parts.hostname or parts.username is not None or parts.password is not None:
            raise ValueError(f"must name a host, and no credentials: {url!r}")
        if parts.query or parts.fragment or url.endswith(("?", "#")):
            raise ValueError(f"must not have a query or fragment: {url!r}")
        mount = parts.path.rstrip("/")
        if mount:
            read = normalise_path(mount)
            if read.text != mount or read.refusal is not None:
                raise ValueError(f"its path must be plain and normalised: {parts.path!r}")
        return cls(parts.scheme.lower(), parts.netloc.lower(), mount)


def public_base(scheme: str, host: str, prefix: str) -> str:
    """The route's URL as the client sees it: ('http', 'gw:8080', '/media') -> '.../media/'."""
    return f"{scheme}://{host}{prefix.rstrip('/')}/"
