"""`edgecls data pull`: the frames people labelled on a board, copied into a training folder on
the workstation, resumable and verified.

The board lists its files with their sha256 (`GET /collect/files`); each is fetched into
`.NAME.partial` beside its place and resumed from there with a Range request after a cut, then
checked against the listed sha256 and renamed into place. A file that does not match is deleted
and refused, never kept. A frame the board has since moved to another class (relabelled) is
moved here too; anything else already in the folder is left as it is, and nothing is deleted
that this command did not write.
"""

from __future__ import annotations

import base64
import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from edgecls.bundle.folder import size_and_sha256
from edgecls.collected import HIDDEN, NAME_PATTERN
from edgecls.durable import check_writable_folder, fsync_dir
from edgecls.errors import EdgeclsError
from edgecls.redact import redact

CHUNK = 1 << 16
TIMEOUT = 30.0
MAX_LISTING = 64 << 20  # a listing of a million frames is ~150 MB; a board's is far smaller
SAFE_PART = re.compile(r"^[^/\\\0]+$")


@dataclass(frozen=True)
class PullOptions:
    url: str
    out: Path
    token: str | None = field(default=None, repr=False)
    user: str | None = field(default=None, repr=False)  # USER:PASSWORD
    unlabelled: bool = False  # also the queue and the unclear frames


@dataclass
class PullResult:
    fetched: int = 0
    resumed: int = 0
    present: int = 0  # already here, same sha256
    moved: int = 0  # relabelled on the board since the last pull
    bytes: int = 0
    classes: dict[str, int] = field(default_factory=dict)


class Board:
    """The board's HTTP server, with the run's auth on every request."""

    def __init__(self, options: PullOptions):
        self.base = options.url.rstrip("/")
        self.shown = redact(self.base)
        self.headers = {}
        if options.token:
            self.headers["Authorization"] = f"Bearer {options.token}"
        elif options.user:
            self.headers["Authorization"] = (
                "Basic " + base64.b64encode(options.user.encode()).decode()
            )

    def open(self, path: str, start: int = 0):
        headers = dict(self.headers)
        if start:
            headers["Range"] = f"bytes={start}-"
        request = urllib.request.Request(self.base + path, headers=headers)
        try:
            return urllib.request.urlopen(request, timeout=TIMEOUT)
        except urllib.error.HTTPError as exc:
            raise EdgeclsError(self._refused(path, exc.code)) from None
        except (urllib.error.URLError, OSError) as exc:
            why = getattr(exc, "reason", exc)
            raise EdgeclsError(
                f"{self.shown}: cannot reach the board ({why}); check the URL and that "
                "`edgecls run --http` is running there"
            ) from None

    def _refused(self, path: str, code: int) -> str:
        if code == 401:
            return f"{self.shown}: the board refused the request (401): give its --token or --user"
        if code == 404 and path.startswith("/collect/files"):
            return f"{self.shown}: the board collects nothing: run it with --collect DIR"
        return f"{self.shown}{path}: the board answered HTTP {code}"

    def listing(self, unlabelled: bool) -> dict:
        with self.open("/collect/files" + ("?all=1" if unlabelled else "")) as response:
            body = response.read(MAX_LISTING + 1)
        try:
            listing = json.loads(body)
            files = listing["files"]
            assert isinstance(files, list)
        except (ValueError, KeyError, TypeError, AssertionError):
            raise EdgeclsError(
                f"{self.shown}/collect/files: not a listing of collected frames; is this an "
                "edgecls board?"
            ) from None
        return listing


def pull(options: PullOptions, progress: Callable[[int, int], None] | None = None) -> PullResult:
    """Copy the board's labelled frames into `options.out` (DIR/<class>/NAME.jpg)."""
    out = Path(options.out)
    check_writable_folder(out, "--out")
    board = Board(options)
    files = [_checked(entry, board.shown) for entry in board.listing(options.unlabelled)["files"]]
    result = PullResult()
    here = _ours_by_name(out)
    for n, (relative, size, sha) in enumerate(files):
        place, _, name = relative.rpartition("/")
        target = out / relative
        result.classes[place] = result.classes.get(place, 0) + 1
        if _same(target, size, sha):
            result.present += 1
        elif (elsewhere := here.get(name)) is not None and _same(elsewhere, size, sha):
            target.parent.mkdir(parents=True, exist_ok=True)
            os.rename(elsewhere, target)  # relabelled on the board: the frame follows
            fsync_dir(target.parent)
            result.moved += 1
        elif target.exists():
            raise EdgeclsError(
                f"{target}: exists and differs from the board's {relative}; move it away and "
                "pull again (nothing of it was changed)"
            )
        else:
            _fetch(board, relative, target, size, sha, result)
        if progress:
            progress(n + 1, len(files))
    return result


def _checked(entry, shown: str) -> tuple[str, int, str]:
    """A listed file as (relative path, bytes, sha256), refused unless it names a file below
    the folder: a board (or what answers as one) cannot write outside --out."""
    try:
        relative, size, sha = entry["path"], int(entry["bytes"]), str(entry["sha256"]).lower()
        parts = relative.split("/")
        assert all(SAFE_PART.match(p) and p not in (".", "..") for p in parts)
        assert 2 <= len(parts) <= 3 and re.fullmatch(r"[0-9a-f]{64}", sha) and size >= 0
    except (KeyError, TypeError, ValueError, AssertionError, AttributeError):
        raise EdgeclsError(
            f"{shown}/collect/files: a listed file is not valid: {entry!r:.200}"
        ) from None
    return relative, size, sha


def _fetch(board: Board, relative: str, target: Path, size: int, sha: str, result: PullResult):
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    start = partial.stat().st_size if partial.exists() else 0
    if start > size:  # not a prefix of this file: start over
        partial.unlink()
        start = 0
    with board.open("/collect/file/" + quote(relative), start) as response:
        if start and response.status != 206:  # the server ignored the Range: take it whole
            start = 0
        with open(partial, "ab" if start else "wb") as f:
            while chunk := response.read1(CHUNK):  # what came, at once: a cut keeps it
                f.write(chunk)
                f.flush()
            os.fsync(f.fileno())
    got_size, got_sha = size_and_sha256(partial)
    if (got_size, got_sha) != (size, sha):
        partial.unlink()
        raise EdgeclsError(
            f"{relative}: what arrived ({got_size} bytes, sha256 {got_sha[:12]}) is not what "
            f"{board.shown} listed ({size} bytes, {sha[:12]}); it was deleted: pull again, and "
            "check the board's card if it repeats"
        )
    os.replace(partial, target)
    fsync_dir(target.parent)
    result.fetched += 1
    result.resumed += bool(start)
    result.bytes += size - start


def _same(path: Path, size: int, sha: str) -> bool:
    try:
        return path.stat().st_size == size and size_and_sha256(path)[1] == sha
    except OSError:
        return False


def _ours_by_name(out: Path) -> dict[str, Path]:
    """Frames from a board already here, by name (class folders and the hidden queue), so a
    relabelled one can be moved instead of fetched again."""
    found = {}
    for path in out.glob("*/*.jpg"):
        if NAME_PATTERN.match(path.name):
            found[path.name] = path
    for path in out.glob(f"{HIDDEN}/*/*.jpg"):
        if NAME_PATTERN.match(path.name):
            found[path.name] = path
    return found
