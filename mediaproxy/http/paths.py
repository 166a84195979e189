"""Request paths into file-system segments, refusing every way out of the root.

The path arrives percent-encoded. It is decoded exactly once, strictly (a malformed escape or
bytes that are not UTF-8 are a 400), and then judged segment by segment: ``..`` and ``.`` in
any encoding, NUL, backslashes and empty segments are refused here, before the file system is
asked anything. Symlinks that lead out of the root are the file integration's check, because
only the file system knows where they lead.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from mediaproxy.errors import NotFound, RequestError

_HEX = set("0123456789abcdefABCDEF")


def _decode_strictly(raw_path: str) -> str:
    # urllib's unquote leaves a malformed escape such as "%zz" as it is; a path that was not
    # encoded the way it claims is a client error, not a file name containing "%zz".
    for index, char in enumerate(raw_path):
        if char == "%" and not (set(raw_path[index + 1:index + 3]) <= _HEX
                                and len(raw_path[index + 1:index + 3]) == 2):
            raise RequestError(f"malformed percent-escape in {raw_path!r}")
    try:
        return unquote_to_bytes(raw_path).decode("utf-8")
    except UnicodeDecodeError as error:
        raise RequestError(f"path is not UTF-8: {raw_path!r}") from error


def decode_path_segments(raw_path: str, *, serve_dotfiles: bool = False) -> tuple[str, ...]:
    """'/video/a%20b.mp4' -> ('video', 'a b.mp4'); raises RequestError or NotFound."""
    decoded = _decode_strictly(raw_path)
    if "\x00" in decoded or "\\" in decoded:
        raise RequestError(f"NUL or backslash in path {raw_path!r}")
    segments = tuple(decoded.split("/")[1:]) if decoded.startswith("/") else tuple(decoded.split("/"))
    if segments and segments[-1] == "":
        # "/dir/" names a directory, which is never served.
        raise NotFound(f"directory path {raw_path!r}")
    for segment in segments:
        if segment in ("", ".", ".."):
            raise RequestError(f"empty, '.' or '..' segment in {raw_path!r}")
        if segment.startswith(".") and not serve_dotfiles:
            raise NotFound(f"dotfile in {raw_path!r}")
    return segments
