"""A rollout's bundle fetched over HTTP into a staging folder of the state folder, resumable and
verified, before the intake sees a byte of it.

manifest.json first: its sha256 must be the one the rollout pins, so a wrong bundle at the URL is
refused before megabytes move. Then the files of `URL/index.json` (or, from a web server with no
index, the manifest's artifacts, labels.txt, parity.md and bundle.sig): each artifact's sha256 in
the index must be the manifest's, each file is fetched into `.FILE.partial` and resumed with a
Range request after a cut, checked against the listed bytes and sha256 and renamed into place. A
file that does not match is deleted and fetched once more from its start; a second mismatch
refuses the bundle. A server that cannot be reached is a `Retry`: the staged files stay, and the
next try goes on from them."""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import urllib.error
from dataclasses import dataclass
from pathlib import Path

from edgecls.bundle.folder import size_and_sha256
from edgecls.errors import EdgeclsError
from edgecls.fleet import Rollout, open_url
from edgecls.redact import redact
from edgecls.runtime.models.intake import fault_point

CHUNK = 1 << 16
MAX_FILES = 256
MAX_INDEX_BYTES = 1 << 20
MAX_FILE_BYTES = 4 << 30
PLAIN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}$")
WITHOUT_INDEX = ("labels.txt", "parity.md", "bundle.sig")  # beside the manifest's artifacts
REQUIRED = frozenset({"manifest.json", "labels.txt"})


class Retry(EdgeclsError):
    """The server could not be reached (or answered 5xx): try again later, from what is staged."""


@dataclass(frozen=True)
class Listed:
    file: str
    bytes: int | None  # None: unknown (no index); the manifest or the signature guards it
    sha256: str | None


def staging(folder: Path, rollout: Rollout) -> Path:
    return Path(folder) / "fetch" / re.sub(r"[^A-Za-z0-9_.-]", "_", rollout.short)


def fetch_bundle(rollout: Rollout, folder: Path, stop: threading.Event, log) -> Path:
    """The rollout's bundle, whole and verified, in `staging(folder, rollout)`; EdgeclsError
    (refused: the bundle is not the one pinned) or Retry (not reachable now)."""
    dest = staging(folder, rollout)
    dest.mkdir(parents=True, exist_ok=True)
    manifest = Listed("manifest.json", None, rollout.manifest_sha256)
    _file(rollout.url, dest, manifest, stop)
    listed = _listing(rollout.url, dest)
    for entry in listed:
        if entry.file != "manifest.json":
            _file(rollout.url, dest, entry, stop)
    log(f"model: fetched {rollout.short} from {redact(rollout.url)} ({len(listed)} files)")
    return dest


def _listing(url: str, dest: Path) -> list[Listed]:
    """The files to fetch: the index's (cross-checked with the manifest), else the manifest's."""
    artifacts = _artifacts(dest / "manifest.json")
    try:
        with open_url(url, "/index.json") as response:
            body = response.read(MAX_INDEX_BYTES + 1)
    except urllib.error.HTTPError as exc:
        if exc.code != 404:
            raise _unreachable(url, exc) from None
        listed = [Listed(f, b, s) for f, (b, s) in artifacts.items()]
        return [*listed, *(Listed(f, None, None) for f in WITHOUT_INDEX)]
    except OSError as exc:
        raise _unreachable(url, exc) from None
    listed = _parse_index(body, redact(url))
    names = {e.file for e in listed}
    for entry in listed:
        want = artifacts.get(entry.file)
        if want is not None and (entry.bytes, entry.sha256) != want:
            raise EdgeclsError(f"{entry.file}: the index's sha256 differs from the manifest's")
    missing = (set(artifacts) | REQUIRED) - names
    if missing:
        raise EdgeclsError(f"the index lists no {', '.join(sorted(missing))}")
    return listed


def _artifacts(manifest: Path) -> dict[str, tuple[int, str]]:
    try:
        data = json.loads(manifest.read_text())
        found = {str(a["file"]): (int(a["bytes"]), str(a["sha256"])) for a in data["artifacts"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise EdgeclsError(f"manifest.json: not a bundle manifest ({exc})") from None
    if not all(PLAIN.match(f) for f in found) or len(found) > MAX_FILES:
        raise EdgeclsError("manifest.json: an artifact is not a plain file name")
    return found


def _parse_index(body: bytes, shown: str) -> list[Listed]:
    try:
        files = json.loads(body)["files"]
        listed = [Listed(str(f["file"]), int(f["bytes"]), str(f["sha256"])) for f in files]
        assert len(listed) <= MAX_FILES and len(body) <= MAX_INDEX_BYTES
        for e in listed:
            assert PLAIN.match(e.file) and 0 <= e.bytes <= MAX_FILE_BYTES
            assert re.fullmatch(r"[0-9a-f]{64}", e.sha256)
    except (ValueError, KeyError, TypeError, AssertionError):
        raise EdgeclsError(f"{shown}/index.json: not an index of bundle files") from None
    return listed


def _file(url: str, dest: Path, entry: Listed, stop: threading.Event) -> None:
    """One file into `dest`, unless it is there already as listed; one fresh try after a
    mismatch (a cut resumed from a changed file)."""
    target = dest / entry.file
    if entry.sha256 and target.is_file() and _matches(size_and_sha256(target), entry):
        return
    for _attempt in (1, 2):
        got = _download(url, target, entry, stop)
        if got is None:  # optional, and not served
            return
        if entry.sha256 is None or _matches(got, entry):
            os.replace(target.with_name(f".{entry.file}.partial"), target)
            return
        target.with_name(f".{entry.file}.partial").unlink(missing_ok=True)
    raise EdgeclsError(
        f"{entry.file}: what arrived (sha256 {got[1][:12]}) is not what is listed "
        f"({entry.sha256[:12]}); refused"
    )


def _matches(got: tuple[int, str], entry: Listed) -> bool:
    return got[1] == entry.sha256 and entry.bytes in (None, got[0])


def _download(url: str, target: Path, entry: Listed, stop) -> tuple[int, str] | None:
    partial = target.with_name(f".{target.name}.partial")
    start = partial.stat().st_size if partial.exists() else 0
    if entry.bytes is not None and start > entry.bytes:
        partial.unlink()
        start = 0
    try:
        with open_url(url, f"/{entry.file}", start) as response:
            if start and response.status != 206:  # the server ignored the Range: all of it
                start = 0
            _copy(response, partial, start, entry, stop)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start:  # all of it was there already
            return size_and_sha256(partial)
        if exc.code == 404 and entry.file not in REQUIRED and entry.sha256 is None:
            return None
        if exc.code < 500:
            raise EdgeclsError(f"{redact(url)}/{entry.file}: HTTP {exc.code}") from None
        raise _unreachable(url, exc) from None
    except OSError as exc:
        raise _unreachable(url, exc) from None
    return size_and_sha256(partial)


def _copy(response, partial: Path, start: int, entry: Listed, stop) -> None:
    limit = entry.bytes if entry.bytes is not None else MAX_FILE_BYTES
    with open(partial, "ab" if start else "wb") as f:
        got = start
        while chunk := response.read1(CHUNK):
            got += len(chunk)
            if got > limit:
                raise EdgeclsError(f"{entry.file}: more bytes than listed ({limit}); refused")
            f.write(chunk)
            f.flush()  # what came is kept: a cut (a power cut too) resumes from it
            fault_point("fetch")
            if stop.is_set():
                raise Retry("stopped")
        f.flush()
        os.fsync(f.fileno())


def _unreachable(url: str, exc: Exception) -> Retry:
    why = getattr(exc, "reason", None) or getattr(exc, "code", None) or exc
    return Retry(f"{redact(url)}: not reachable ({why}); trying again")


def discard(folder: Path) -> None:
    """A staging folder of ours, once the intake has its own copy (or refused it)."""
    shutil.rmtree(folder, ignore_errors=True)
