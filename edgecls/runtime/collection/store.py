"""The folder of collected frames: a queue for people to label and, once labelled, a training set
in the layout `edgecls train` reads.

    DIR/<class>/NAME.jpg          labelled: DIR is a training folder as it stands
    DIR/.edgecls/queue/NAME.jpg   waiting for a person
    DIR/.edgecls/unclear/NAME.jpg a person could not tell
    DIR/.edgecls/meta/NAME.json   every frame's sidecar: the record, why it was kept, the bundle
    DIR/.edgecls/full/NAME.jpg    the whole camera frame, where the model saw only an --roi

The hidden folder is skipped by the training folder scan. A frame is written sidecar first and its
image last, each to a temporary name, fsynced and renamed: an image in the queue is whole and has
its sidecar. Labelling is one rename of the image (atomic on one file system) under the store's
lock: two people labelling the same frame at once get one label and one "already labelled", never
two copies or none. Only names edgecls wrote (NAME_PATTERN) are ever moved or deleted.

A labeller may lease the frame it shows (LEASE_SECONDS, renewed while shown): the others' queues
leave it out, so two people are not shown the same frame at the same time. A lease is advice, not
a lock: a label from anyone still applies, and the rename decides who was first.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from edgecls.bundle.folder import sha256
from edgecls.collected import FULL, HIDDEN, META, NAME_PATTERN, QUEUE, UNCLEAR
from edgecls.durable import fsync_dir
from edgecls.errors import EdgeclsError

UNCLEAR_LABEL = "unclear"
LEASE_SECONDS = 60.0  # a frame shown to one labeller is left out of the others' queues this long


class LabelRefused(Exception):
    """A label that cannot be applied: the message says why, in one line (an HTTP 4xx)."""

    def __init__(self, message: str, status: int = 409):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Item:
    """A queued frame as the labelling page shows it."""

    name: str
    time: float
    guess: str
    confidence: float
    margin: float
    reasons: tuple[str, ...]

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "time": self.time,
            "guess": self.guess,
            "confidence": round(self.confidence, 4),
            "margin": round(self.margin, 4),
            "reasons": list(self.reasons),
        }


def class_folder_problem(label: str) -> str | None:
    """Why a label cannot be a class folder's name (then it cannot be labelled into one)."""
    if not label or label in (".", "..") or "/" in label or "\\" in label or "\0" in label:
        return "is not a folder name"
    if label.startswith((".", "__")):
        return "starts with '.' or '__', which the training folder scan skips"
    return None


class CollectStore:
    """One collection folder; safe to share between the collecting sink's thread and the HTTP
    server's threads of one process."""

    def __init__(self, folder: Path, classes: tuple[str, ...]):
        self.folder = Path(folder)
        self.classes = tuple(c for c in classes if class_folder_problem(c) is None)
        self.lock = threading.Lock()
        self.hashes: dict[str, tuple[int, int, str]] = {}  # path -> (size, mtime_ns, sha256)
        self.leases: dict[str, tuple[str, float]] = {}  # name -> (who, monotonic end)
        self.cached: dict[str, tuple[int, Item]] = {}  # name -> (sidecar mtime_ns, item)

    def path(self, kind: str, name: str = "") -> Path:
        return self.folder / HIDDEN / kind / name if name else self.folder / HIDDEN / kind

    def create(self) -> None:
        for kind in (QUEUE, UNCLEAR, META, FULL):
            self.path(kind).mkdir(parents=True, exist_ok=True)

    # --- the collecting side ---

    def add(self, name: str, jpeg: bytes, sidecar: dict, full: bytes | None = None) -> int:
        """Write one kept frame; returns the bytes it took. The queued image comes last, so a
        frame in the queue is whole."""
        meta = json.dumps({**sidecar, "name": name, "full": bool(full)}, indent=1).encode()
        written = _write(self.path(META), name[:-4] + ".json", meta)
        if full is not None:
            written += _write(self.path(FULL), name, full)
        return written + _write(self.path(QUEUE), name, jpeg)

    def free_name(self, name: str) -> str:
        """`name`, or `name` with -N where a frame of that name exists already (a restart)."""
        stem, n = name[:-4], 1
        while self.where(name) is not None or (self.path(META) / f"{name[:-4]}.json").exists():
            name, n = f"{stem}-{n}.jpg", n + 1
        return name

    def remove_queued(self, name: str) -> int:
        """Delete a frame still queued (the quota's oldest first) with its sidecar; the bytes freed.
        A frame labelled meanwhile is left alone: it is a person's work."""
        freed = 0
        with self.lock:
            if not self.path(QUEUE, name).is_file():  # labelled meanwhile: a person's now
                return 0
            for path in (self.path(QUEUE, name), self.path(FULL, name), self._meta(name)):
                try:
                    freed += path.stat().st_size
                    path.unlink()
                except FileNotFoundError:
                    pass
        return freed

    def queued(self) -> list[tuple[Path, int]]:
        """Our queued frames with their sizes (with the whole frame and sidecar), oldest first."""
        out = []
        for path in sorted(self.path(QUEUE).iterdir()):
            if NAME_PATTERN.match(path.name):
                size = sum(
                    _size(p) for p in (path, self.path(FULL, path.name), self._meta(path.name))
                )
                out.append((path, size))
        return out

    # --- the labelling side ---

    def items(self, order: str = "newest", limit: int = 200, who: str = "") -> list[Item]:
        """The queue, newest first or most uncertain (smallest top-1 margin) first; without the
        frames leased to a labeller other than `who`."""
        with self.lock:
            now = time.monotonic()
            others = {n for n, (w, end) in self.leases.items() if w != who and end > now}
        names = [p.name for p in self.path(QUEUE).iterdir() if NAME_PATTERN.match(p.name)]
        cached, fresh, items = self.cached, {}, []
        for name in names:
            entry = self._cached_item(name, cached.get(name))
            if entry is not None:
                fresh[name] = entry
                if name not in others:
                    items.append(entry[1])
        self.cached = fresh  # only the queue's frames stay cached
        key = (lambda i: (i.margin, -i.time)) if order == "uncertain" else (lambda i: -i.time)
        return sorted(items, key=key)[:limit]

    def _cached_item(self, name: str, cached: tuple[int, Item] | None) -> tuple[int, Item] | None:
        """A queued frame's item, read from its sidecar again only when that changed."""
        try:
            mtime = self._meta(name).stat().st_mtime_ns
        except OSError:
            return None
        if cached is not None and cached[0] == mtime:
            return cached
        meta = self.sidecar(name)
        return None if meta is None else (mtime, _item(name, meta))

    def lease(self, name: str, who: str, seconds: float = LEASE_SECONDS) -> None:
        """Lease a queued frame to labeller `who` (its other lease ends; "" only ends it).
        Refused (409) while another labeller holds it, or when it is not queued any more."""
        with self.lock:
            now = time.monotonic()
            self.leases = {n: (w, end) for n, (w, end) in self.leases.items() if end > now}
            holder = self.leases.get(name)
            if name and holder is not None and holder[0] != who:
                raise LabelRefused(f"{name} is being labelled by someone else")
            self.leases = {n: lease for n, lease in self.leases.items() if lease[0] != who}
            if not name:
                return
            if not NAME_PATTERN.match(name) or not self._image(QUEUE, name).is_file():
                if self.where(name) is None:
                    raise LabelRefused(f"no frame {name} in the collection", 404)
                raise LabelRefused(f"{name} is labelled already (by someone else?)")
            self.leases[name] = (who, now + seconds)

    def sidecar(self, name: str) -> dict | None:
        try:
            return json.loads(self._meta(name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def image_path(self, name: str) -> Path | None:
        """Where a frame's image is now (queue, unclear or a class folder), or None."""
        found = self.where(name)
        return None if found is None else self._image(found, name)

    def where(self, name: str) -> str | None:
        """The frame's place: QUEUE, UNCLEAR or its class; None if there is no such frame."""
        if not NAME_PATTERN.match(name):
            return None
        for place in (QUEUE, UNCLEAR, *self.classes):
            if self._image(place, name).is_file():
                return place
        return None

    def label(self, name: str, label: str, who: str = "") -> str:
        """Move a queued frame to its class folder (or UNCLEAR); returns where it was. Refused
        when the frame is not queued any more (another person labelled it) or unknown."""
        if label != UNCLEAR_LABEL and label not in self.classes:
            raise LabelRefused(
                f"{label!r} is not a class of this model: {', '.join(self.classes)}", 400
            )
        return self._move(name, QUEUE, label, who)

    def undo(self, name: str, who: str = "") -> str:
        """Put a labelled (or unclear) frame back in the queue; returns the label it had."""
        place = self.where(name)
        if place is None or place == QUEUE:
            raise LabelRefused(f"{name} is not labelled: nothing to undo")
        return self._move(name, place, QUEUE, who)

    def _move(self, name: str, src: str, dst: str, who: str) -> str:
        with self.lock:
            if not NAME_PATTERN.match(name) or not self._image(src, name).is_file():
                now = self.where(name)
                if now is None:
                    raise LabelRefused(f"no frame {name} in the collection", 404)
                raise LabelRefused(f"{name} is labelled {now!r} already (by someone else?)")
            target = self._image(dst, name)
            target.parent.mkdir(exist_ok=True)
            if target.exists():  # names are unique; a file of ours there is never overwritten
                raise LabelRefused(f"{target} exists already; move it away first")
            os.rename(self._image(src, name), target)
            self.leases.pop(name, None)
            fsync_dir(target.parent)
            self._note(name, dst, who)
        return src

    def _note(self, name: str, place: str, who: str) -> None:
        """The sidecar says who put the frame where, and when (the image's place is the truth;
        a cut between the two leaves only the note behind)."""
        meta = self.sidecar(name) or {"name": name}
        meta["label"] = None if place == QUEUE else place
        meta.setdefault("history", []).append(
            {"to": place, "by": who, "time": round(time.time(), 3)}
        )
        _write(self.path(META), name[:-4] + ".json", json.dumps(meta, indent=1).encode())

    def progress(self) -> dict:
        """Frames per class (ours only), queued and unclear, for the page and /metrics."""
        counts = {c: _count(self.folder / c) for c in self.classes}
        return {
            "labelled": counts,
            "queued": _count(self.path(QUEUE)),
            "unclear": _count(self.path(UNCLEAR)),
        }

    # --- the pulling side ---

    def labelled_files(self, unlabelled: bool = False) -> list[dict]:
        """Every labelled frame (and with `unlabelled`, the queue too) as path, bytes, sha256;
        paths relative to the folder, '/'-separated, the layout a puller writes."""
        places = [*self.classes] + (
            [f"{HIDDEN}/{QUEUE}", f"{HIDDEN}/{UNCLEAR}"] if unlabelled else []
        )
        files = []
        for place in places:
            folder = self.folder / place
            if not folder.is_dir():
                continue
            for path in sorted(folder.iterdir()):
                if NAME_PATTERN.match(path.name) and (digest := self.digest(path)) is not None:
                    files.append(
                        {"path": f"{place}/{path.name}", "bytes": digest[0], "sha256": digest[1]}
                    )
        return files

    def digest(self, path: Path) -> tuple[int, str] | None:
        """(size, sha256) of one of our files, cached by size and mtime."""
        try:
            st = path.stat()
        except OSError:
            return None
        key = str(path)
        cached = self.hashes.get(key)
        if cached is None or cached[:2] != (st.st_size, st.st_mtime_ns):
            try:
                sha = sha256(path)
            except (OSError, EdgeclsError):
                return None
            cached = self.hashes[key] = (st.st_size, st.st_mtime_ns, sha)
        return cached[0], cached[2]

    def resolve(self, relative: str) -> Path | None:
        """A path a puller asked for, if it names one of our files in a place it may read."""
        place, _, name = relative.rpartition("/")
        allowed = {*self.classes, f"{HIDDEN}/{QUEUE}", f"{HIDDEN}/{UNCLEAR}"}
        if place not in allowed or not NAME_PATTERN.match(name):
            return None
        path = self.folder / place / name
        return path if path.is_file() else None

    def _image(self, place: str, name: str) -> Path:
        return self.path(place, name) if place in (QUEUE, UNCLEAR) else self.folder / place / name

    def _meta(self, name: str) -> Path:
        return self.path(META, name[:-4] + ".json")


def _item(name: str, meta: dict) -> Item:
    record = meta.get("record") or {}
    by_class = record.get("probs") or {}
    probs = sorted(by_class.values(), reverse=True)
    margin = probs[0] - probs[1] if len(probs) > 1 else (probs[0] if probs else 0.0)
    # an uncertain record has no label: the guess is still its most probable class
    top = max(by_class, key=by_class.get) if by_class else ""
    return Item(
        name=name,
        time=float(record.get("time") or 0.0),
        guess=str(record.get("top") or record.get("label") or top),
        confidence=float(record.get("confidence") or 0.0),
        margin=float(margin),
        reasons=tuple(meta.get("reasons") or ()),
    )


def _write(folder: Path, name: str, data: bytes) -> int:
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".edgecls-tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, folder / name)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return len(data)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _count(folder: Path) -> int:
    try:
        return sum(1 for p in folder.iterdir() if NAME_PATTERN.match(p.name))
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return 0
        raise
