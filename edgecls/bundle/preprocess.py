"""The preprocessing contract, in one place for training, evaluation, calibration and the device.

Models take RGB uint8 pixels at a fixed height x width; normalisation lives inside the model.
Every path that feeds a model goes through `resize` (and `read_image` for files), so the pixels
the device sees are the pixels the model was trained and calibrated on.
"""

from __future__ import annotations

import glob
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from edgecls.bundle.image_size import image_size
from edgecls.errors import EdgeclsError
from edgecls.registry import Registry

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
    if data[:2] == b"\xff\xd8":
        for k, flag in _REDUCED:
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


def image_paths(spec: str | Path) -> list[Path]:
    """A file as is, a folder's images (recursive, sorted) or a glob's matching images (sorted).
    Each file once, however many symlinks (or symlink loops) lead to it."""
    path, text = Path(spec), str(spec)
    if path.is_dir():
        found = (p for p in path.rglob("*") if p.is_file() and is_image_file(p))
    elif not path.exists() and any(ch in text for ch in "*?["):
        found = (p for p in map(Path, glob.glob(text, recursive=True)) if is_image_file(p))
    else:
        return [path]
    unique: dict[Path, Path] = {}
    for p in sorted(found, key=lambda p: (len(p.parts), p)):  # the shortest path to a file wins
        unique.setdefault(p.resolve(), p)
    return sorted(unique.values())


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as RGB uint8 (H, W, 3); a clear error when it cannot be read."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise EdgeclsError(f"{path}: cannot read file ({exc.strerror})") from None
    try:
        image = decode_image(data)
    except ImageTooLarge as exc:
        raise EdgeclsError(f"{path}: {exc}") from None
    if image is None:
        raise EdgeclsError(f"{path}: not a readable image (empty, corrupt or unknown format)")
    return image


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
