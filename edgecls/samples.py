"""Embedded sample data: deterministic synthetic datasets in the layouts users have.

`casting`: grey top views of pump impellers (the Kaggle casting layout), class `def` with
blowholes, pinholes, cracks, burrs or edge chips and a ground-truth mask per defect image,
class `ok` without. `insects`: beetles, cockroaches and dragonflies with their body plans on
natural-looking backgrounds. Both are made to be learnable but not trivial: small defects and
look-alike colours keep a small CNN below 100%.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edgecls.errors import EdgeclsError
from edgecls.registry import Registry
from edgecls.schema import option


@dataclass(frozen=True)
class SampleSpec:
    """How many images of what size; defaults keep generation to seconds."""

    n_train: int = option(400, "training images per class")
    n_test: int = option(60, "test images per class")
    size: int = option(192, "image side in pixels")
    seed: int = option(0, "seed of the generated images")


Generator = Callable[[np.random.Generator, int, str], tuple[np.ndarray, np.ndarray | None]]


@dataclass(frozen=True)
class SampleDataset:
    classes: tuple[str, ...]
    generate: Generator  # (rng, size, class) -> (BGR or grey image, defect mask or None)
    suffix: str = ".jpg"


SAMPLES: Registry[SampleDataset] = Registry("sample dataset")


def register_sample(name: str, classes: tuple[str, ...]):
    return SAMPLES.register(name, lambda fn: SampleDataset(classes, fn))


# ---------------------------------------------------------------------------------------------
# shared drawing helpers


def _smooth_noise(rng: np.random.Generator, size: int, cells: int, channels: int = 1) -> np.ndarray:
    """Low-frequency noise in [-1, 1]: a small random grid upsampled with cubic interpolation."""
    grid = rng.uniform(-1, 1, (cells, cells, channels)).astype(np.float32)
    out = cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)
    return out.reshape(size, size, channels) if channels > 1 else out


def _transform(points: np.ndarray, angle: float, scale: float, center: tuple[float, float]):
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    return (points * scale) @ rot.T + np.asarray(center)


def _ellipse_points(cx: float, cy: float, a: float, b: float, n: int = 28) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + a * np.cos(t), cy + b * np.sin(t)], axis=1)


def _poly(img: np.ndarray, pts: np.ndarray, color, shift: int = 4) -> None:
    cv2.fillPoly(img, [np.round(pts * (1 << shift)).astype(np.int32)], color, cv2.LINE_AA, shift)


def _line(img: np.ndarray, pts: np.ndarray, color, thickness: int, shift: int = 4) -> None:
    pts = np.round(pts * (1 << shift)).astype(np.int32)
    cv2.polylines(img, [pts], False, color, max(1, thickness), cv2.LINE_AA, shift)


def _finish(img: np.ndarray, rng: np.random.Generator, noise: float, blur: float) -> np.ndarray:
    if blur > 0:
        img = cv2.GaussianBlur(img, (0, 0), blur)
    img = img + rng.normal(0, noise, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# casting: impeller top views


def _impeller(rng: np.random.Generator, size: int):
    """A defect-free impeller: returns the grey float image and its geometry."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cx, cy = size / 2 + rng.normal(0, size * 0.015, 2)
    radius = size * rng.uniform(0.40, 0.46)
    r = np.hypot(xx - cx, yy - cy)

    img = np.full((size, size), rng.uniform(25, 60), np.float32)
    img += 8 * _smooth_noise(rng, size, 5)
    body = rng.uniform(115, 165)
    rings = rng.uniform(2, 6) * np.sin(r * rng.uniform(1.0, 2.2) + rng.uniform(0, 6))
    grain = 3 * _smooth_noise(rng, size, 40)
    disk = r < radius
    img[disk] = (body + rings + grain)[disk]
    rim = (r > radius * 0.90) & disk
    img[rim] -= rng.uniform(15, 30)
    hub = r < radius * 0.24
    img[hub] = (body + 18 + 2 * np.sin(r * 3.0))[hub]
    img[r < radius * 0.09] = rng.uniform(15, 40)

    n_vanes = int(rng.integers(6, 10))
    phase, bend = rng.uniform(0, 2 * np.pi), rng.uniform(0.4, 0.9)
    thick = max(2, round(size * 0.018))
    for k in range(n_vanes):
        a0 = phase + 2 * np.pi * k / n_vanes
        t = np.linspace(0.27, 0.86, 12)
        ang = a0 + bend * (t - 0.27)
        pts = np.stack([cx + radius * t * np.cos(ang), cy + radius * t * np.sin(ang)], 1)
        _line(img, pts, float(body - 28), thick)
        _line(img, pts + 1.2, float(body + 14), max(1, thick // 2))

    light = rng.uniform(0, 2 * np.pi)
    grad = ((xx - cx) * np.cos(light) + (yy - cy) * np.sin(light)) / size
    img *= 1 + rng.uniform(0.1, 0.35) * grad
    img *= 1 - 0.25 * (r / size) ** 2
    img *= rng.uniform(0.8, 1.15)
    # benign surface stains on both classes: a model must look for defects, not any blemish
    for _ in range(int(rng.integers(0, 3))):
        sx, sy = _point_on_disk(rng, cx, cy, radius * 0.85)
        blob = np.exp(
            -((xx - sx) ** 2 + (yy - sy) ** 2) / (2 * (size * rng.uniform(0.03, 0.07)) ** 2)
        )
        img -= rng.uniform(6, 14) * blob
    return img, (cx, cy, radius, light)


def _point_on_disk(rng, cx, cy, rmax, rmin=0.0):
    rr = math.sqrt(rng.uniform((rmin / rmax) ** 2, 1.0)) * rmax
    a = rng.uniform(0, 2 * np.pi)
    return cx + rr * math.cos(a), cy + rr * math.sin(a)


def _defect(rng, img, mask, geom, size, kind):
    cx, cy, radius, light = geom
    s = size / 224
    ox, oy = -math.cos(light), -math.sin(light)
    if kind == "blowhole":
        x, y = _point_on_disk(rng, cx, cy, radius * 0.86, radius * 0.26)
        a, b = rng.uniform(5, 13) * s, rng.uniform(5, 13) * s
        pts = _ellipse_points(x, y, a, b)
        _poly(img, pts + np.array([ox * 1.2, oy * 1.2]), float(img[int(y), int(x)] + 25))
        _poly(img, pts, float(rng.uniform(10, 40)))
        _poly(mask, _ellipse_points(x, y, a + 1.5, b + 1.5), 255)
    elif kind == "pinholes":
        x0, y0 = _point_on_disk(rng, cx, cy, radius * 0.84, radius * 0.26)
        for _ in range(int(rng.integers(4, 10))):
            x, y = x0 + rng.normal(0, 6 * s), y0 + rng.normal(0, 6 * s)
            rad = rng.uniform(1.5, 3.0) * s
            _poly(img, _ellipse_points(x, y, rad, rad, 12), float(rng.uniform(25, 60)))
            _poly(mask, _ellipse_points(x, y, rad + 2, rad + 2, 12), 255)
    elif kind == "crack":
        x, y = _point_on_disk(rng, cx, cy, radius * 0.8, radius * 0.28)
        ang, pts = rng.uniform(0, 2 * np.pi), [(x, y)]
        for _ in range(int(rng.integers(8, 20))):
            ang += rng.normal(0, 0.5)
            x, y = x + 4 * s * math.cos(ang), y + 4 * s * math.sin(ang)
            pts.append((x, y))
        pts = np.array(pts)
        width = max(1, round(rng.uniform(1.5, 3.2) * s))
        _line(img, pts, float(rng.uniform(20, 50)), width)
        _line(mask, pts, 255, width + 3)
    elif kind in ("burr", "chip"):
        a = rng.uniform(0, 2 * np.pi)
        depth, half = rng.uniform(6, 16) * s, rng.uniform(0.06, 0.15)
        if kind == "burr":
            inner, outer, shade = radius - 1, radius + depth, float(rng.uniform(150, 200))
        else:
            inner, outer, shade = radius - depth, radius + 2, float(rng.uniform(20, 50))
        angs = np.linspace(a - half, a + half, 8)
        jag = rng.uniform(0.6, 1.0, angs.size)
        tip = np.stack(
            [
                cx + (inner + (outer - inner) * jag) * np.cos(angs),
                cy + (inner + (outer - inner) * jag) * np.sin(angs),
            ],
            1,
        )
        base = np.stack([cx + inner * np.cos(angs[::-1]), cy + inner * np.sin(angs[::-1])], 1)
        pts = np.concatenate([tip, base])
        _poly(img, pts, shade)
        _poly(mask, pts, 255)
        cv2.dilate(mask, np.ones((3, 3), np.uint8), dst=mask)


DEFECT_KINDS = ("blowhole", "pinholes", "crack", "burr", "chip")


@register_sample("casting", ("def", "ok"))
def casting_image(rng: np.random.Generator, size: int, label: str):
    img, geom = _impeller(rng, size)
    mask = None
    if label == "def":
        mask = np.zeros((size, size), np.uint8)
        for kind in rng.choice(DEFECT_KINDS, size=int(rng.integers(2, 4)), replace=False):
            _defect(rng, img, mask, geom, size, kind)
    return _finish(img, rng, noise=rng.uniform(2, 6), blur=rng.uniform(0.3, 0.9)), mask


# ---------------------------------------------------------------------------------------------
# insects


_BACKGROUNDS = [
    ((60, 120, 70), (30, 70, 40)),
    ((70, 110, 140), (40, 70, 100)),
    ((150, 170, 180), (100, 120, 140)),
    ((90, 100, 110), (60, 70, 80)),
    ((80, 150, 120), (50, 100, 80)),
]  # BGR: foliage, soil, sand, bark, moss


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    light, dark = (np.array(c, np.float32) for c in _BACKGROUNDS[rng.integers(len(_BACKGROUNDS))])
    t = (_smooth_noise(rng, size, int(rng.integers(3, 8))) + 1) / 2
    img = dark + (light - dark) * t[..., None]
    img += 18 * _smooth_noise(rng, size, int(rng.integers(12, 30)), 3)
    for _ in range(int(rng.integers(4, 20))):  # grass blades, twigs, leaf edges
        p0 = rng.uniform(0, size, 2)
        d = (
            rng.uniform(0.1, 0.6)
            * size
            * np.array([math.cos(a := rng.uniform(0, 6.3)), math.sin(a)])
        )
        shade = (light + rng.uniform(-60, 40)).tolist()
        _line(
            img,
            np.stack([p0, p0 + d / 2 + rng.normal(0, 4, 2), p0 + d]),
            shade,
            int(rng.integers(1, 4)),
        )
    for _ in range(int(rng.integers(0, 4))):
        x, y = rng.uniform(0, size, 2)
        _poly(
            img,
            _ellipse_points(x, y, rng.uniform(8, 25), rng.uniform(4, 10)),
            (light * rng.uniform(0.6, 1.2)).tolist(),
        )
    return img


def _legs(img, tf, length, color, width, rng, spiny=False, xs=(0.15, 0.0, -0.15)):
    """Jointed legs in pairs; front legs lean forward, hind legs back."""
    for i, x in enumerate(xs):
        lean = (1 - i) * 0.6
        for s in (-1, 1):
            knee = np.array([x + lean * 0.3 * length, s * (0.08 + 0.45 * length)])
            foot = knee + np.array([lean * 0.6 * length + rng.normal(0, 0.03), s * 0.35 * length])
            _line(img, tf(np.array([[x, s * 0.06], knee, foot])), color, width)
            if spiny:
                for t in (0.35, 0.7):
                    q = knee + t * (foot - knee)
                    _line(img, tf(np.array([q, q + np.array([0.04, s * 0.02])])), color, 1)


def _beetle(img: np.ndarray, tf, lw: int, rng: np.random.Generator) -> np.ndarray:
    base = np.array(
        rng.choice([(20, 20, 25), (30, 60, 30), (20, 40, 90), (60, 30, 20), (25, 45, 70)]),
        np.float32,
    ) * rng.uniform(0.7, 1.4)
    _legs(img, tf, 0.32, (base * 0.7).tolist(), lw, rng)
    for s in (-1, 1):
        _line(img, tf([[0.46, s * 0.03], [0.56, s * 0.08], [0.6, s * 0.09]]), base.tolist(), lw)
    _poly(img, tf(_ellipse_points(-0.06, 0, 0.34, 0.24)), base.tolist())
    _poly(img, tf(_ellipse_points(0.3, 0, 0.11, 0.16)), (base * 0.85).tolist())
    _poly(img, tf(_ellipse_points(0.44, 0, 0.07, 0.09)), (base * 0.7).tolist())
    _line(img, tf([[0.26, 0], [-0.38, 0]]), (base * 0.5).tolist(), lw)
    _poly(img, tf(_ellipse_points(0.02, -0.1, 0.12, 0.05)), (base + 60).clip(0, 255).tolist())
    if rng.random() < 0.3:
        for _ in range(int(rng.integers(2, 6))):
            px, py = rng.uniform(-0.3, 0.15), rng.uniform(-0.16, 0.16)
            _poly(img, tf(_ellipse_points(px, py, 0.035, 0.035, 10)), (30, 30, 200))
    return img


def _cockroach(img: np.ndarray, tf, lw: int, rng: np.random.Generator) -> np.ndarray:
    base = np.array(
        rng.choice([(30, 60, 110), (20, 40, 80), (40, 80, 140), (25, 35, 60)]), np.float32
    ) * rng.uniform(0.75, 1.3)
    _legs(img, tf, 0.5, (base * 0.75).tolist(), lw, rng, spiny=True)
    for s in (-1, 1):
        curl = rng.uniform(0.3, 0.9)
        t = np.linspace(0, 1, 10)[:, None]
        ant = np.concatenate(
            [
                0.48 + t * rng.uniform(0.6, 0.95),
                s * (0.04 + t * 0.3 * curl + (t**2) * 0.3 * curl),
            ],
            1,
        )
        _line(img, tf(ant), (base * 0.8).tolist(), lw)
    for s in (-1, 1):
        _line(img, tf([[-0.48, s * 0.04], [-0.6, s * 0.1]]), (base * 0.8).tolist(), lw)
    _poly(img, tf(_ellipse_points(-0.08, 0, 0.44, 0.15)), base.tolist())
    _line(img, tf([[0.28, 0], [-0.5, 0]]), (base * 0.7).tolist(), lw)
    _poly(img, tf(_ellipse_points(0.35, 0, 0.12, 0.16)), (base * 1.25).clip(0, 255).tolist())
    _poly(img, tf(_ellipse_points(0.36, 0, 0.07, 0.1)), (base * 0.8).tolist())
    _poly(img, tf(_ellipse_points(0.47, 0, 0.04, 0.05)), (base * 0.6).tolist())
    return img


def _dragonfly(img: np.ndarray, tf, lw: int, rng: np.random.Generator) -> np.ndarray:
    """Long thin abdomen, big eyes, four veined translucent wings."""
    base = np.array(
        rng.choice([(180, 120, 40), (40, 40, 190), (60, 150, 60), (40, 80, 120), (150, 150, 60)]),
        np.float32,
    ) * rng.uniform(0.75, 1.2)
    wings = img.copy()
    for x0, a in ((0.2, 1.35), (0.12, 1.75)):
        for s in (-1, 1):
            wl = rng.uniform(0.42, 0.55)
            c = (x0 + 0.5 * wl * math.cos(a), s * 0.5 * wl * math.sin(a))
            pts = _ellipse_points(0, 0, wl / 2, 0.055)
            ang = s * a
            rot = np.array([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]])
            _poly(wings, tf(pts @ rot.T + c), (225, 225, 215))
            vein = np.array([[-wl / 2, 0], [wl / 2, 0]]) @ rot.T + c
            _line(img, tf(vein), (60, 60, 60), 1)
    alpha = rng.uniform(0.3, 0.5)
    img = img * (1 - alpha) + wings * alpha
    _poly(img, tf(_ellipse_points(-0.22, 0, 0.34, 0.035)), base.tolist())
    for k in range(6):
        x = -0.5 + 0.09 * k
        _line(img, tf([[x, -0.035], [x, 0.035]]), (base * 0.5).tolist(), 1)
    _poly(img, tf(_ellipse_points(0.17, 0, 0.09, 0.065)), (base * 0.8).tolist())
    for s in (-1, 1):
        _poly(
            img,
            tf(_ellipse_points(0.28, s * 0.045, 0.05, 0.05)),
            (base * 1.2).clip(0, 255).tolist(),
        )
    _legs(img, tf, 0.15, (30, 30, 30), 1, rng, xs=(0.2, 0.12))
    return img


_BODIES = {"beetles": _beetle, "cockroach": _cockroach, "dragonflies": _dragonfly}


def _insect(rng: np.random.Generator, size: int, label: str) -> np.ndarray:
    img = _background(rng, size)
    length = size * rng.uniform(0.38, 0.62)
    angle = rng.uniform(0, 2 * np.pi)
    center = (size / 2 + rng.normal(0, size * 0.08), size / 2 + rng.normal(0, size * 0.08))
    tf = lambda p: _transform(np.asarray(p, np.float64), angle, length, center)  # noqa: E731
    lw = max(1, round(size / 110))
    img = _BODIES[label](img, tf, lw, rng)
    # occluding grass over some insects, then camera effects
    for _ in range(int(rng.integers(0, 3))):
        p0 = rng.uniform(0, size, 2)
        p1 = p0 + rng.normal(0, size * 0.3, 2)
        _line(
            img, np.stack([p0, p1]), (50, float(rng.uniform(90, 150)), 60), int(rng.integers(1, 3))
        )
    img *= rng.uniform(0.7, 1.25)
    return img


@register_sample("insects", ("beetles", "cockroach", "dragonflies"))
def insect_image(rng: np.random.Generator, size: int, label: str):
    img = _insect(rng, size, label)
    return _finish(img, rng, noise=rng.uniform(3, 9), blur=rng.uniform(0.4, 1.3)), None


# ---------------------------------------------------------------------------------------------


def write_sample(name: str, out: Path, spec: SampleSpec = SampleSpec()) -> dict[str, int]:
    """Write `out/{train,test}/<class>/*` (and `out/masks/...` for defects); returns counts."""
    sample = SAMPLES.get(name)
    if spec.n_train < 1 or spec.n_test < 1 or spec.size < 32:
        raise EdgeclsError("sample sizes: --n-train and --n-test must be >= 1 and --size >= 32")
    counts: dict[str, int] = {}
    for split_index, (split, n) in enumerate((("train", spec.n_train), ("test", spec.n_test))):
        for class_index, label in enumerate(sample.classes):
            rng = np.random.default_rng([spec.seed, split_index, class_index])
            folder = out / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                image, mask = sample.generate(rng, spec.size, label)
                stem = f"{label}_{i:04d}"
                cv2.imwrite(
                    str(folder / f"{stem}{sample.suffix}"), image, [cv2.IMWRITE_JPEG_QUALITY, 92]
                )
                if mask is not None:
                    mask_dir = out / "masks" / split / label
                    mask_dir.mkdir(parents=True, exist_ok=True)
                    cv2.imwrite(str(mask_dir / f"{stem}.png"), mask)
            counts[f"{split}/{label}"] = n
    return counts
