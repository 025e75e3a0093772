"""Calibration images: a representative, class-balanced sample, loaded through the training
preprocessing so int8 ranges are measured on the pixels the model will really see."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from edgecls.bundle.preprocess import InputSpec, Walker, is_image_file
from edgecls.errors import EdgeclsError

MIN_RECOMMENDED = 100


def _groups(source: Path) -> dict[str, list[Path]]:
    """Images grouped by class folder (a split layout contributes its train/); flat: one group."""
    source = Path(source)
    if not source.is_dir():
        raise EdgeclsError(f"--calibration {source}: not a folder")
    train = source / "train"
    root = train if train.is_dir() else source
    groups: dict[str, list[Path]] = {}
    for p, parts, is_dir in Walker().walk(root):  # each real folder once, bounded
        if not is_dir and is_image_file(p) and not any(s.startswith(".") for s in parts):
            groups.setdefault(parts[0] if len(parts) > 1 else "", []).append(p)
    if not groups:
        raise EdgeclsError(f"--calibration {source}: no images found (jpg, jpeg, png, bmp, webp)")
    return groups


def balanced_sample(source: Path, n: int, seed: int = 0) -> list[Path]:
    """Up to n images of a folder, every class represented (see `round_robin`)."""
    return round_robin(_groups(source), n, seed)


def round_robin(groups: dict, n: int, seed: int = 0) -> list[Path]:
    """Up to n paths taken in turn from each group, each group in a seeded random order."""
    rng = np.random.default_rng(seed)
    queues = [
        list(np.asarray(paths)[rng.permutation(len(paths))]) for _, paths in sorted(groups.items())
    ]
    picked: list[Path] = []
    while len(picked) < n and any(queues):
        for q in queues:
            if q and len(picked) < n:
                picked.append(Path(q.pop(0)))
    return picked


def load_calibration(paths: list[Path], spec: InputSpec) -> tuple[np.ndarray, list[Path]]:
    """uint8 images through the model's own input path; unreadable files are skipped and
    returned."""
    images, skipped = [], []
    for p in paths:
        try:
            images.append(spec.load_image(p))
        except EdgeclsError:
            skipped.append(p)
    if not images:
        raise EdgeclsError(
            "no readable calibration image among "
            f"{len(paths)} files (e.g. {paths[0] if paths else '-'})"
        )
    return np.stack(images), skipped


def write_calibration_set(source: Path, out: Path, n: int = 200, seed: int = 0) -> list[Path]:
    """`edgecls data calibration`: copy a balanced sample to out/<class>/<relative path>, keeping
    nested folders, never overwriting a file that is already there."""
    if n < 1:
        raise EdgeclsError(f"--size {n}: must be at least 1")
    out, source = Path(out), Path(source)
    if not source.is_dir():
        raise EdgeclsError(f"--from {source}: not a folder of labelled images")
    if out.exists() and not out.is_dir():
        raise EdgeclsError(f"--out {out}: is a file; give a folder for the calibration set")
    root = source / "train" if (source / "train").is_dir() else source
    picked = balanced_sample(source, n, seed)
    plan = [(p, out / p.relative_to(root)) for p in picked]
    taken = [str(dest) for _, dest in plan if dest.exists()]
    if taken:
        raise EdgeclsError(
            f"--out {out}: already holds {taken[0]} (and {len(taken) - 1} more of the files to "
            "copy); give an empty folder"
        )
    written = []
    try:
        for p, dest in plan:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, dest)
            written.append(dest)
    except OSError as exc:
        raise EdgeclsError(
            f"--out {out}: cannot copy ({exc.strerror or exc}) after {len(written)} files"
        ) from None
    return written
