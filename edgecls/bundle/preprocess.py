"""The preprocessing contract, in one place for training, evaluation, calibration and the device.

Models take RGB uint8 pixels at a fixed height x width; normalisation lives inside the model.
Every path that feeds a model goes through `resize` (and `read_image` for files), so the pixels
the device sees are the pixels the model was trained and calibrated on.

Files and folders are users' input, read within bounds: an image file is checked (a regular file,
at most MAX_IMAGE_BYTES, an image header) before it is read, and folders and globs are walked by
one `Walker` that enters each real folder once and stops at MAX_WALK_ENTRIES or a stop signal.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from fnmatch import fnmatchcase
from pathlib import Path

import cv2
import numpy as np

from edgecls.bundle.image_size import SEQUENTIAL_JPEG, image_size, jpeg_frame_type
from edgecls.errors import EdgeclsError
from edgecls.registry import Registry
from edgecls.schema import FileRefused, open_regular

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

# OpenCV prints its own warnings for every corrupt file; we report them ourselves, once.
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


@dataclass(frozen=True)
class Preprocessing:
    """One version of the input path: how a decoded RGB image becomes the model's pixels."""

    id: str
    interpolation: int  # the final resize, after area-averaging by the largest integer factor
    legacy_resize: str  # how config.json / manifests before identifiers described it


PREPROCESSING: Registry[Preprocessing] = Registry("preprocessing")
for _p in (
    # edgecls 0.1 before 2026-11-23: INTER_LINEAR rounds differently on ARM NEON and x86
    Preprocessing(
        "rgb8-stretch-area-linear/1",
        cv2.INTER_LINEAR,
        "stretch: cv2.INTER_AREA by the largest integer factor, then cv2.INTER_LINEAR",
    ),
    Preprocessing(
        "rgb8-stretch-area-linear-exact/2",
        cv2.INTER_LINEAR_EXACT,
        "stretch: cv2.INTER_AREA by the largest integer factor, then cv2.INTER_LINEAR_EXACT",
    ),
):
    PREPROCESSING.add(_p.id, _p)
CURRENT = "rgb8-stretch-area-linear-exact/2"


def preprocessing_from_legacy(resize_text: str) -> str:
    """The identifier of a run or bundle written before identifiers existed."""
    for p in PREPROCESSING.values():
        if p.legacy_resize == resize_text:
            return p.id
    raise EdgeclsError(f"unknown resize description {resize_text!r}: retrain with this edgecls")


@dataclass(frozen=True)
class InputSpec:
    """What the model expects; recorded in config.json, the bundle manifest and each artifact."""

    height: int
    width: int
    channels: int = 3
    color: str = "RGB"
    layout: str = "NHWC"
    dtype: str = "uint8"
    value_range: tuple[int, int] = (0, 255)
    preprocessing: str = CURRENT

    def __post_init__(self):
        if self.height < 1 or self.width < 1:
            raise ValueError(f"input size {self.height}x{self.width} must be positive")
        fixed = {"channels": 3, "color": "RGB", "layout": "NHWC", "dtype": "uint8"}
        for name, want in fixed.items():
            if getattr(self, name) != want:
                raise ValueError(f"input {name} {getattr(self, name)!r}: edgecls feeds {want!r}")
        if tuple(self.value_range) != (0, 255):
            raise ValueError(f"input value_range {self.value_range}: edgecls feeds [0, 255]")
        if self.preprocessing not in PREPROCESSING:
            raise ValueError(
                f"preprocessing {self.preprocessing!r} is not known to this edgecls (knows "
                f"{PREPROCESSING.choices()}): upgrade edgecls here or re-export the bundle"
            )

    @property
    def size(self) -> tuple[int, int]:
        return (self.height, self.width)

    def to_dict(self) -> dict:
        return {**asdict(self), "value_range": list(self.value_range)}

    def resize(self, image: np.ndarray) -> np.ndarray:
        return resize(image, self.size, self.preprocessing)

    def load_image(self, path: str | Path) -> np.ndarray:
        return self.resize(read_image(path))

    def load_batch(self, paths: list[Path]) -> np.ndarray:
        return load_batch(paths, self.size, self.preprocessing)

    def frame_to_input(self, frame: np.ndarray) -> np.ndarray:
        return frame_to_input(frame, self.size, self.preprocessing)


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def to_rgb8(image: np.ndarray) -> np.ndarray:
    """Any decoded OpenCV image (grey, BGR, BGRA, 16-bit, float) as 3-channel RGB uint8."""
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


# Decoded images above this many pixels are refused; JPEGs are decoded at 1/2, 1/4 or 1/8 scale
# (DCT scaling, no full-size buffer) to stay under it. 64 MP is 192 MB as RGB: a 48 MP phone
# photo decodes in full, a 20000x20000 PNG does not.
MAX_PIXELS = 64_000_000
_REDUCED = ((2, cv2.IMREAD_REDUCED_COLOR_2), (4, cv2.IMREAD_REDUCED_COLOR_4))
_REDUCED += ((8, cv2.IMREAD_REDUCED_COLOR_8),)


class ImageTooLarge(EdgeclsError):
    """An image whose decoded size would exceed MAX_PIXELS."""


def _decode_flag(data: bytes, size: tuple[int, int]) -> int:
    w, h = size
    if w * h <= MAX_PIXELS:
        return cv2.IMREAD_COLOR
    if data[:2] == b"\xff\xd8" and jpeg_frame_type(data) in SEQUENTIAL_JPEG:
        for k, flag in _REDUCED:  # a progressive JPEG holds every coefficient even when reduced
            if (w // k) * (h // k) <= MAX_PIXELS:
                return flag
    raise ImageTooLarge(
        f"{w}x{h} pixels ({w * h / 1e6:.0f} MP) is above the {MAX_PIXELS / 1e6:.0f} MP limit; "
        "downscale the image"
    )


def decode_image(data: bytes) -> np.ndarray | None:
    """Decode encoded bytes to RGB uint8, or None when OpenCV cannot read them; ImageTooLarge
    for an image too large to decode safely."""
    size = image_size(data)
    if size is None:  # a format whose size the header does not tell (a TIFF named .png) would
        return None  # be decoded whatever its size: only JPEG, PNG, BMP and WebP are
    buf = np.frombuffer(data, dtype=np.uint8)
    # IMREAD_COLOR applies EXIF orientation and turns grey, alpha, CMYK and 16-bit into 8-bit BGR
    # (the reduced flags likewise).
    image = cv2.imdecode(buf, _decode_flag(data, size))
    if image is None or image.size == 0:
        return None
    return to_rgb8(image)


# An image file is refused above this size before a byte is read: a 48 MP JPEG is ~25 MB, an
# uncompressed 8-bit 64 MP BMP or PNG (MAX_PIXELS) ~200 MB; a 2.5 GB sparse "photo" never loads.
MAX_IMAGE_BYTES = 256_000_000
# Entries (files and folders) one walk of a folder or glob may look at, so a link to / or a
# folder of millions ends with a clear error instead of filling memory.
MAX_WALK_ENTRIES = 1_000_000


class _Stopped(Exception):
    """The walk's stop event was set."""


@dataclass
class Walker:
    """Walks folder trees within one budget of `limit` entries, ending quietly when `stop` is set
    (a run's stop signal). Each walk enters each real folder (device, inode) once, so symlink
    loops end at once, and keeps only the open folders' listings."""

    limit: int = MAX_WALK_ENTRIES
    stop: threading.Event | None = None
    seen: int = 0  # entries looked at, over every walk of this walker

    def walk(
        self,
        root: Path,
        max_depth: int | None = None,
        descend: Callable[[tuple[str, ...]], bool] = lambda parts: True,
    ) -> Iterator[tuple[Path, tuple[str, ...], bool]]:
        """(path, its parts below root, is a folder) of every entry under `root`, depth-first in
        sorted order (a folder's entries right after it: the order of sorted paths); a folder is
        entered when `descend(parts)` and within `max_depth`. Unreadable sub-folders are passed."""
        root = Path(root)
        entered = {_folder_key(root, root)}
        try:
            stack = [(root, (), self._list(root, root))]
            while stack:
                folder, parts, entries = stack[-1]
                entry = next(entries, None)
                if entry is None:
                    stack.pop()
                    continue
                path, sub = folder / entry.name, (*parts, entry.name)
                is_dir = _is_dir(entry)
                yield path, sub, is_dir
                if not is_dir or (max_depth is not None and len(sub) >= max_depth):
                    continue
                key = _folder_key(entry, root)
                if key is not None and key not in entered and descend(sub):
                    entered.add(key)
                    stack.append((path, sub, self._list(path, root)))
        except _Stopped:
            return

    def _list(self, folder: Path, root: Path) -> Iterator[os.DirEntry]:
        if self.stop is not None and self.stop.is_set():  # checked per folder and per entry
            raise _Stopped
        entries = []
        try:
            with os.scandir(folder) as it:
                for entry in it:
                    self._count(root)
                    entries.append(entry)
        except OSError as exc:
            if folder == root:
                raise EdgeclsError(f"{root}: cannot read folder ({exc.strerror or exc})") from None
            return iter(())  # a sub-folder we may not read: passed, as glob and rglob do
        entries.sort(key=lambda e: e.name)
        return iter(entries)

    def _count(self, root: Path) -> None:
        if self.stop is not None and self.stop.is_set():
            raise _Stopped
        self.seen += 1
        if self.seen > self.limit:
            raise EdgeclsError(
                f"{root}: more than {self.limit:,} files and folders to look through (a link "
                "to a large tree?); give a smaller folder or a narrower glob"
            )


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # a symlink counts as its target
    except OSError:
        return False


def _folder_key(entry: os.DirEntry | Path, root: Path) -> tuple[int, int] | None:
    try:
        st = entry.stat() if isinstance(entry, os.DirEntry) else os.stat(entry)
    except OSError as exc:
        if entry is root:
            raise EdgeclsError(f"{root}: cannot read folder ({exc.strerror or exc})") from None
        return None
    return st.st_dev, st.st_ino


def file_key(path: Path) -> tuple[int, int] | str:
    """What makes two paths one file (device, inode); a path that cannot be stat'ed is itself."""
    try:
        st = os.stat(path)
    except OSError:  # a broken link: itself, named when it fails to read
        return str(path)
    return st.st_dev, st.st_ino


class _Glob:
    """A glob pattern below its literal root, matched a path part at a time as glob.glob does
    (`**` any folders, wildcards never match a leading dot), without glob's unbounded walk."""

    def __init__(self, parts: list[str]):
        self.parts = parts

    def _states(self, names: tuple[str, ...]) -> set[int]:
        states, n = {0}, len(self.parts)
        for name in names:
            step = set()
            for i in self._closure(states):
                if i == n or (name.startswith(".") and not self.parts[i].startswith(".")):
                    continue
                if self.parts[i] == "**":
                    step.add(i)
                elif fnmatchcase(name, self.parts[i]):
                    step.add(i + 1)
            states = step
        return states

    def _closure(self, states: set[int]) -> set[int]:
        out = set()
        for i in states:
            out.add(i)
            while i < len(self.parts) and self.parts[i] == "**":
                i += 1
                out.add(i)
        return out

    def matches(self, names: tuple[str, ...]) -> bool:
        return len(self.parts) in self._closure(self._states(names))

    def may_descend(self, names: tuple[str, ...]) -> bool:
        return any(i < len(self.parts) for i in self._states(names))


def _glob(text: str, walker: Walker) -> Iterator[Path]:
    parts = text.split("/")
    first = next(i for i, part in enumerate(parts) if any(ch in part for ch in "*?["))
    root = Path("/".join(parts[:first]) or ("/" if text.startswith("/") else "."))
    rest = [part for part in parts[first:] if part not in ("", ".")]
    if not root.is_dir() or not rest:
        return
    pattern = _Glob(rest)
    depth = None if "**" in rest else len(rest)
    for path, names, is_dir in walker.walk(root, depth, pattern.may_descend):
        if not is_dir and is_image_file(path) and pattern.matches(names):
            yield path


def iter_image_paths(spec: str | Path, walker: Walker | None = None) -> Iterator[Path]:
    """A file as is, a folder's images (recursive) or a glob's matching images, in sorted order,
    found as they are asked for (a run starts on the first while the walk goes on). Each file
    once, however many links lead to it; symlink loops end at once (`Walker`)."""
    path, text, walker = Path(spec), str(spec), walker or Walker()
    if path.is_dir():
        found = (p for p, _, is_dir in walker.walk(path) if not is_dir and is_image_file(p))
    elif not path.exists() and any(ch in text for ch in "*?["):
        found = _glob(text, walker)
    else:
        yield path
        return
    once: set = set()
    for p in found:
        key = file_key(p)
        if key not in once:
            once.add(key)
            yield p


def image_paths(spec: str | Path) -> list[Path]:
    """`iter_image_paths` as a list."""
    return list(iter_image_paths(spec))


class UnreadableImage(EdgeclsError):
    """Why a file is not an image this edgecls reads, without its path (the caller names it)."""


NOT_AN_IMAGE = "not a readable image (corrupt, truncated, or not JPEG, PNG, BMP or WebP)"


def image_file_bytes(path: str | Path) -> bytes:
    """An image file's bytes, read only once it is known to be a regular file of at most
    MAX_IMAGE_BYTES that starts with an image header; else UnreadableImage."""
    try:
        with open_regular(path, MAX_IMAGE_BYTES, "an image file") as (f, size):
            head = f.read(16)
            if not head:
                raise UnreadableImage("empty file")
            if not _image_header(head):
                raise UnreadableImage(NOT_AN_IMAGE)
            f.seek(0)
            return f.read(size)
    except FileRefused as exc:
        raise UnreadableImage(str(exc)) from None
    except OSError as exc:
        raise UnreadableImage(f"cannot read file ({exc.strerror or exc})") from None


def _image_header(head: bytes) -> bool:
    """The file starts as a format `decode_image` reads (JPEG, PNG, BMP, WebP)."""
    return head.startswith((b"\xff\xd8", b"\x89PNG\r\n\x1a\n", b"BM")) or (
        head[:4] == b"RIFF" and head[8:12] == b"WEBP"
    )


def decode_file(path: str | Path) -> np.ndarray:
    """An image file as RGB uint8 (H, W, 3), or UnreadableImage saying why not."""
    data = image_file_bytes(path)
    try:
        image = decode_image(data)
    except ImageTooLarge as exc:
        raise UnreadableImage(str(exc)) from None
    if image is None:
        raise UnreadableImage(NOT_AN_IMAGE)
    return image


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as RGB uint8 (H, W, 3); one line naming it when it cannot be read."""
    try:
        return decode_file(path)
    except UnreadableImage as exc:
        raise EdgeclsError(f"{path}: {exc}") from None


def resize(image: np.ndarray, size: tuple[int, int], preprocessing: str = CURRENT) -> np.ndarray:
    """Resize to (height, width), stretching: the one resize every path uses.

    Area-averaging by the largest integer factor removes aliasing; bilinear does the rest. It looks
    like a single INTER_AREA resize but costs a fifth of it (640x480 to 224: 0.27 ms, not 1.5 ms),
    which is the loop's budget on a board. INTER_LINEAR_EXACT, not INTER_LINEAR: the latter rounds
    differently on ARM NEON and x86 (off by one on a third of the pixels, measured under emulation),
    so a board would not see the pixels the model was calibrated and checked on.
    """
    height, width = size
    if image.shape[:2] == (height, width):
        return np.ascontiguousarray(image)
    k = min(image.shape[0] // height, image.shape[1] // width)
    if k >= 2:
        image = cv2.resize(
            image, (image.shape[1] // k, image.shape[0] // k), interpolation=cv2.INTER_AREA
        )
    interpolation = PREPROCESSING.get(preprocessing).interpolation
    return cv2.resize(image, (width, height), interpolation=interpolation)


def load_image(path: str | Path, size: tuple[int, int], preprocessing: str = CURRENT) -> np.ndarray:
    """Read and resize a file: what training, evaluation and calibration feed the model."""
    return resize(read_image(path), size, preprocessing)


def frame_to_input(
    frame_bgr: np.ndarray, size: tuple[int, int], preprocessing: str = CURRENT
) -> np.ndarray:
    """A camera/video frame (BGR, as OpenCV delivers it) as the model's RGB input. Resizing first
    and swapping channels after gives the same pixels for less work."""
    if frame_bgr.dtype == np.uint8 and frame_bgr.ndim == 3 and frame_bgr.shape[2] == 3:
        return cv2.cvtColor(resize(frame_bgr, size, preprocessing), cv2.COLOR_BGR2RGB)
    return resize(to_rgb8(frame_bgr), size, preprocessing)


def load_batch(
    paths: list[Path], size: tuple[int, int], preprocessing: str = CURRENT
) -> np.ndarray:
    if not paths:
        return np.zeros((0, *size, 3), dtype=np.uint8)
    return np.stack([load_image(p, size, preprocessing) for p in paths])
