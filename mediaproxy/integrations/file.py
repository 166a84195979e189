"""Files from a local folder, the way browsers, players and download managers need them.

The protocol decisions (ranges, validators, preconditions, disposition) are the pure modules'
in ``mediaproxy.http``; this module only looks at the disk and streams bytes.

Bytes go out through ``Exchange.send_file``: zero-copy ``sendfile`` where the connection
allows it, else reads on a dedicated pool (``mediaproxy.streaming.diskio``).
"""

from __future__ import annotations

import collections
import errno
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs

from mediaproxy.config import Route, Table
from mediaproxy.errors import (
    Forbidden,
    MethodNotAllowed,
    NotFound,
    PreconditionFailed,
    RangeNotSatisfiable,
    RequestError,
)
from mediaproxy.http.conditional import (
    Outcome,
    Validators,
    evaluate,
    format_http_date,
    if_range_allows_partial,
    make_etag,
)
from mediaproxy.http.disposition import content_disposition
from mediaproxy.http.paths import decode_path_segments
from mediaproxy.http.ranges import (
    ByteRange,
    FullContent,
    NotSatisfiable,
    PartialContent,
    parse_range,
    plan_multipart,
)
from mediaproxy.integrations.base import Exchange, Integration
from mediaproxy.streaming import diskio, sniff

DOWNLOAD_FLAG = "download"


# O_NONBLOCK: opening a FIFO that somebody left in the root must not hang the loop.
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC

# Names the file system refuses to look up are the client's doing, never a 500 with a
# traceback per request: too long a name (nginx answers 404 as well), a symlink cycle (it names
# no file, as a dangling link does not), a name this file system cannot hold.
_REFUSED_NAMES: dict[int, type[RequestError]] = {
    errno.ENAMETOOLONG: NotFound,
    errno.ELOOP: NotFound,
    errno.EINVAL: RequestError,
}


@dataclass(frozen=True)
class FileSettings:
    root: Path
    serve_dotfiles: bool = False
    # sendfile reads through the page cache on the event loop; a mostly cold, slow disk
    # (network storage) is better served by the reader pool: set zero_copy = false.
    zero_copy: bool = True


def read_settings(table: Table) -> FileSettings:
    return FileSettings(
        root=table.directory("root"),
        serve_dotfiles=table.boolean("serve_dotfiles", False),
        zero_copy=table.boolean("zero_copy", True),
    )


def refusal(error: OSError, path: str) -> RequestError | None:
    """The client error for a name the file system refused, or None for any other failure."""
    kind = None if error.errno is None else _REFUSED_NAMES.get(error.errno)
    return None if kind is None else kind(f"{path}: {error.strerror}")


@dataclass(frozen=True)
class FileVersion:
    """What one version of a file looks like to a client, worked out once per version.

    Cached by (path, inode, size, mtime in ns), the triple the ETag is made of: the file is
    still stat-ed on every request, so a changed file is a new key, never a stale answer.
    """

    validators: Validators
    content_type: str
    headers: tuple[tuple[str, str], ...]  # Accept-Ranges, ETag, Last-Modified


@dataclass(frozen=True)
class OpenFile:
    fd: int
    name: str
    size: int
    version: FileVersion


class FileVersions:
    """The FileVersion of each (path, inode, size, mtime in ns), for the most recent files.

    A miss sniffs the descriptor the request already opened and checked as a regular file,
    never the path again: the name may meanwhile be another file, or a FIFO that would block.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._versions: collections.OrderedDict[tuple[str, int, int, int], FileVersion] = (
            collections.OrderedDict()
        )

    def get(self, path: str, fd: int, info: os.stat_result) -> FileVersion:
        key = (path, info.st_ino, info.st_size, info.st_mtime_ns)
        version = self._versions.get(key)
        if version is None:
            version = self._versions[key] = _file_version(path, fd, info)
            if len(self._versions) > self.capacity:
                self._versions.popitem(last=False)
        else:
            self._versions.move_to_end(key)
        return version


def _file_version(path: str, fd: int, info: os.stat_result) -> FileVersion:
    etag = make_etag(info.st_ino, info.st_size, info.st_mtime_ns)
    last_modified_s = info.st_mtime_ns // 1_000_000_000
    content_type = sniff.content_type(os.pread(fd, sniff.SNIFF_BYTES, 0), os.path.basename(path))
    headers = (
        ("Accept-Ranges", "bytes"),
        ("ETag", etag),
        ("Last-Modified", format_http_date(last_modified_s)),
    )
    return FileVersion(Validators(etag, last_modified_s), content_type, headers)


_versions = FileVersions(capacity=4096)


class FileIntegration(Integration):
    def __init__(self, route: Route) -> None:
        super().__init__(route)
        settings: FileSettings = route.settings
        self.settings = settings
        self.root = os.path.realpath(settings.root)

    def _open_path(self, raw_path: str) -> tuple[str, int]:
        """The real path of the file the request names, and a descriptor open on it.

        Where no symlink is involved the joined path is already the real one (the root is
        real, and the segments hold no "..", "." or empty part), so the file system is asked
        only about the request's own directories and opens the file with O_NOFOLLOW. Any
        symlink on the way sends the request through ``realpath`` and the containment check.
        """
        segments = decode_path_segments(raw_path, serve_dotfiles=self.settings.serve_dotfiles)
        path = os.path.join(self.root, *segments)
        try:
            if not self._crosses_symlinked_directory(segments):
                try:
                    return path, os.open(path, _OPEN_FLAGS | os.O_NOFOLLOW)
                except OSError as error:
                    if error.errno != errno.ELOOP:  # ELOOP: the file itself is a symlink
                        raise
            real = self._resolve(raw_path, path)
            return real, os.open(real, _OPEN_FLAGS)
        except (FileNotFoundError, NotADirectoryError) as error:
            raise NotFound(f"no file {path}") from error
        except PermissionError as error:
            raise Forbidden(f"cannot read {path}") from error
        except OSError as error:
            refused = refusal(error, path)
            if refused is None:
                raise
            raise refused from error

    def _crosses_symlinked_directory(self, segments: tuple[str, ...]) -> bool:
        directory = self.root
        for segment in segments[:-1]:
            directory = os.path.join(directory, segment)
            if stat.S_ISLNK(os.lstat(directory).st_mode):
                return True
        return False

    def _resolve(self, raw_path: str, path: str) -> str:
        real = os.path.realpath(path)
        if os.path.commonpath([self.root, real]) != self.root:
            raise Forbidden(f"{raw_path!r} resolves outside the root")
        if not self.settings.serve_dotfiles and any(
            part.startswith(".") for part in Path(real).relative_to(self.root).parts
        ):
            raise NotFound(f"{raw_path!r} resolves to a dotfile")
        return real

    def _open(self, raw_path: str) -> OpenFile:
        path, fd = self._open_path(raw_path)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise NotFound(f"{path} is not a regular file")
            version = _versions.get(path, fd, info)
        except BaseException:
            os.close(fd)
            raise
        return OpenFile(fd, os.path.basename(path), info.st_size, version)

    async def respond(self, exchange: Exchange) -> None:
        request = exchange.request
        if request.method not in ("GET", "HEAD"):
            raise MethodNotAllowed(request.method, ("GET", "HEAD"))
        opened = self._open(request.path)
        try:
            await self._respond_with(exchange, opened)
        finally:
            os.close(opened.fd)

    async def _respond_with(self, exchange: Exchange, opened: OpenFile) -> None:
        request = exchange.request
        headers = list(opened.version.headers)

        outcome = evaluate(request.method, request.headers, opened.version.validators)
        if outcome is Outcome.PRECONDITION_FAILED:
            raise PreconditionFailed(f"precondition failed for {opened.name}")
        if outcome is Outcome.NOT_MODIFIED:
            exchange.start(304, headers)
            await exchange.finish()
            return

        if request.query and DOWNLOAD_FLAG in parse_qs(request.query, keep_blank_values=True):
            headers.append(("Content-Disposition", content_disposition(opened.name)))

        # RFC 9110 §14.2: GET is the only method for which range handling is defined.
        range_header = request.headers.get("Range") if request.method == "GET" else None
        if range_header and not if_range_allows_partial(
            request.headers.get("If-Range"), opened.version.validators
        ):
            range_header = None
        selection = parse_range(range_header, opened.size)
        send_body = request.method == "GET"

        if isinstance(selection, NotSatisfiable):
            raise RangeNotSatisfiable(selection.content_range())
        if isinstance(selection, FullContent):
            headers += [
                ("Content-Type", opened.version.content_type),
                ("Content-Length", str(opened.size)),
            ]
            exchange.start(200, headers)
            if send_body:
                await _send_range(
                    exchange, opened.fd, ByteRange(0, opened.size), self.settings.zero_copy
                )
        elif len(selection.ranges) == 1:
            (only,) = selection.ranges
            headers += [
                ("Content-Type", opened.version.content_type),
                ("Content-Length", str(only.length)),
                ("Content-Range", only.content_range(opened.size)),
            ]
            exchange.start(206, headers)
            if send_body:
                await _send_range(exchange, opened.fd, only, self.settings.zero_copy)
        else:
            await _send_multipart(
                exchange, opened, selection, headers, send_body, self.settings.zero_copy
            )
        await exchange.finish()


async def _send_multipart(
    exchange: Exchange,
    opened: OpenFile,
    selection: PartialContent,
    headers: list[tuple[str, str]],
    send_body: bool,
    zero_copy: bool,
) -> None:
    plan = plan_multipart(
        selection.ranges, opened.size, opened.version.content_type, secrets.token_hex(16)
    )
    exchange.start(
        206,
        headers
        + [("Content-Type", plan.content_type), ("Content-Length", str(plan.content_length))],
    )
    exchange.content_range = selection.summary(opened.size)
    if send_body:
        for part_header, byte_range in plan.parts:
            await exchange.send(part_header)
            await _send_range(exchange, opened.fd, byte_range, zero_copy)
        await exchange.send(plan.epilogue)


async def _send_range(exchange: Exchange, fd: int, byte_range: ByteRange, zero_copy: bool) -> None:
    if zero_copy:
        await exchange.send_file(fd, byte_range.start, byte_range.length)
    else:
        await diskio.send_by_reading(exchange, fd, byte_range.start, byte_range.length)
