"""Folder datasets, TF-free and shared by training and the board: the two layouts users have,
one validation pass, stratified splits.

`DIR/<class>/*` is split into train/val/test here; `DIR/{train,test}/<class>/*` (optional `val/`)
keeps the user's split. Every file is decoded once, by the same reader the model will be fed
with, before anything trains: what cannot be read is skipped and listed, never a crash mid-epoch.
Evaluation order is fixed (class, then path), so predictions and labels cannot drift apart.
Folders are walked by the bounded `Walker` (each real folder once, MAX_WALK_ENTRIES in all) and
files read by the bounded reader, so no folder a user points at can hang or exhaust the machine.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgecls.bundle.preprocess import (
    UnreadableImage,
    Walker,
    decode_file,
    file_key,
    is_image_file,
)
from edgecls.errors import EdgeclsError


@dataclass(frozen=True)
class SplitConfig:
    """Split fractions for `DIR/<class>/*` (and for `val` when a split layout has none)."""

    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 42

    def __post_init__(self):
        if not (0 <= self.val_fraction < 1 and 0 <= self.test_fraction < 1):
            raise EdgeclsError("--val-fraction and --test-fraction must be in [0, 1)")
        if self.val_fraction + self.test_fraction >= 1:
            raise EdgeclsError("--val-fraction + --test-fraction must leave images for training")


@dataclass
class Split:
    paths: list[Path] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)

    def counts(self, classes: list[str]) -> dict[str, int]:
        c = Counter(self.labels)
        return {name: c.get(i, 0) for i, name in enumerate(classes)}


@dataclass
class FolderDataset:
    root: Path
    layout: str  # "class-folders" or "split-folders"
    classes: list[str]
    splits: dict[str, Split]
    skipped: list[tuple[Path, str]]

    def write_skipped(self, path: Path) -> None:
        lines = [f"{p}\t{why}" for p, why in self.skipped]
        # a file name that is not UTF-8 is written back as its own bytes
        text = "\n".join(lines) + ("\n" if lines else "")
        path.write_text(text, encoding="utf-8", errors="surrogateescape")


def _visible(path: Path) -> bool:
    return not any(part.startswith((".", "__")) for part in path.parts)


def _class_dirs(folder: Path, walker: Walker) -> list[Path]:
    return [
        p
        for p, names, is_dir in walker.walk(folder, max_depth=1)
        if is_dir and _visible(Path(*names))
    ]


def _files(class_dir: Path, walker: Walker) -> list[Path]:
    """Every file under a class folder, sorted; hidden folders (.git, __MACOSX) are not entered."""
    visible = lambda names: _visible(Path(*names))  # noqa: E731
    return [
        p
        for p, names, is_dir in walker.walk(class_dir, None, visible)
        if not is_dir and visible(names)
    ]


def _check(path: Path) -> tuple[Path, str | None]:
    """(path, why it is unusable or None): decoded by the very reader training will use."""
    if not _utf8(str(path)):  # TensorFlow's file reader and the reports take UTF-8 only
        return path, "its name is not UTF-8; rename the file"
    if not is_image_file(path):
        return path, f"not an image type ({path.suffix or 'no suffix'})"
    try:
        decode_file(path)
    except UnreadableImage as exc:
        return path, str(exc)
    return path, None


def _scan(
    class_dirs: dict[str, Path], walker: Walker, progress=None, seen: dict | None = None
) -> tuple[dict[str, list[Path]], list]:
    """Validate every file under each class folder; a class with nothing usable is an error.
    A file reached twice (through a symlink) counts once: twice, it could land in training and
    in the test split both, and the test would flatter the model (`seen` carries the files of
    the splits scanned before)."""
    files, twice = {}, []
    seen = {} if seen is None else seen
    for name, d in class_dirs.items():
        files[name] = []
        for p in _files(d, walker):
            first = seen.setdefault(file_key(p), p)
            if first is p:
                files[name].append(p)
            else:
                twice.append((p, f"the same file as {first}, reached twice through a link"))
    every = [p for paths in files.values() for p in paths]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = {}
        for path, why in pool.map(_check, every):
            results[path] = why
            if progress is not None:
                progress()
    usable: dict[str, list[Path]] = {}
    skipped = twice
    for name, paths in files.items():
        usable[name] = [p for p in paths if results[p] is None]
        skipped += [(p, results[p]) for p in paths if results[p] is not None]
        if not usable[name]:
            raise EdgeclsError(
                f"class folder {class_dirs[name]} has no usable image "
                f"({len(paths)} files, none readable): add images or remove the folder"
            )
    return usable, skipped


def _stratified(
    usable: dict[str, list[Path]], classes: list[str], fractions: dict[str, float], seed: int
) -> dict[str, Split]:
    splits = {name: Split() for name in ("train", *fractions)}
    for label, name in enumerate(classes):
        paths = usable[name]
        order = np.random.default_rng([seed, label]).permutation(len(paths))
        start = 0
        for split, frac in fractions.items():
            n = round(len(paths) * frac) if len(paths) >= 3 else 0
            for i in order[start : start + n]:
                splits[split].paths.append(paths[i])
                splits[split].labels.append(label)
            start += n
        for i in order[start:]:
            splits["train"].paths.append(paths[i])
            splits["train"].labels.append(label)
    for split in splits.values():  # fixed order: class, then path
        pairs = sorted(zip(split.labels, split.paths, strict=True))
        split.labels = [y for y, _ in pairs]
        split.paths = [p for _, p in pairs]
    return splits


def _split_from(usable: dict[str, list[Path]], classes: list[str]) -> Split:
    split = Split()
    for label, name in enumerate(classes):
        for p in usable.get(name, []):
            split.paths.append(p)
            split.labels.append(label)
    return split


def _find_split_dir(root: Path, name: str, walker: Walker) -> Path | None:
    names = {name, "valid", "validation"} if name == "val" else {name}
    for d, _, is_dir in walker.walk(root, max_depth=1):
        if is_dir and d.name.lower() in names:
            return d
    return None


def load_folder_dataset(
    root: Path, config: SplitConfig = SplitConfig(), progress=None
) -> FolderDataset:
    """Discover, validate and split a labelled image folder in either layout."""
    root, walker = Path(root), Walker()
    if not root.is_dir():
        raise EdgeclsError(f"--data {root}: not a folder")
    train_dir = _find_split_dir(root, "train", walker)
    splits_beside = any(_find_split_dir(root, name, walker) for name in ("val", "test"))
    if train_dir is not None and not _class_dirs(train_dir, walker) and not splits_beside:
        train_dir = None  # images right in it, no val/ or test/: a class (trains, buses, ...)
    if train_dir is None:
        class_dirs = {d.name: d for d in _class_dirs(root, walker)}
        _require_classes(root, class_dirs)
        usable, skipped = _scan(class_dirs, walker, progress)
        classes = sorted(class_dirs)
        fractions = {"val": config.val_fraction, "test": config.test_fraction}
        splits = _stratified(usable, classes, fractions, config.seed)
        return FolderDataset(root, "class-folders", classes, splits, skipped)

    class_dirs = {d.name: d for d in _class_dirs(train_dir, walker)}
    _require_classes(train_dir, class_dirs)
    classes = sorted(class_dirs)
    seen: dict = {}
    usable, skipped = _scan(class_dirs, walker, progress, seen)
    splits: dict[str, Split] = {}
    for name in ("val", "test"):
        split_dir = _find_split_dir(root, name, walker)
        if split_dir is None:
            continue
        dirs = {d.name: d for d in _class_dirs(split_dir, walker)}
        extra = sorted(set(dirs) - set(classes))
        if extra:
            raise EdgeclsError(
                f"{split_dir} has class folders not in {train_dir}: {', '.join(extra)}; "
                "every class needs training images"
            )
        u, s = _scan(dirs, walker, progress, seen)
        skipped += s
        splits[name] = _split_from(u, classes)
    carve = {} if "val" in splits else {"val": config.val_fraction}
    if "test" not in splits:
        carve["test"] = config.test_fraction
    splits.update(_stratified(usable, classes, carve, config.seed))
    return FolderDataset(root, "split-folders", classes, splits, skipped)


def _name_problem(name: str) -> str | None:
    """Why a name cannot be a label (one line of labels.txt, a JSON string, a file-name part)."""
    if not _utf8(name):
        return "bytes that are not UTF-8"
    if name != name.strip():
        return "spaces at its start or end"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        return "a control character (a newline, a tab)"
    return None


def _utf8(text: str) -> bool:
    """A file name Python could only decode with surrogate escapes is not UTF-8 on disk."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _require_classes(folder: Path, class_dirs: dict[str, Path]) -> None:
    for name, path in class_dirs.items():
        if (why := _name_problem(name)) is not None:
            raise EdgeclsError(
                f"class folder {str(path)!a}: its name has {why}, which a label cannot "
                "hold (labels.txt is one label a line); rename the folder"
            )
    if len(class_dirs) < 2:
        found = ", ".join(class_dirs) or "none"
        raise EdgeclsError(
            f"{folder} needs at least two class folders (found: {found}); "
            "lay images out as DIR/<class>/* or DIR/{train,test}/<class>/*"
        )


def load_eval_split(root: Path, classes: list[str]) -> tuple[Split, list[tuple[Path, str]]]:
    """Labelled images for evaluation against a model's classes, in fixed order, never shuffled.

    A split-layout folder contributes its `test/` split; a class-folder layout, all of it.
    """
    root, walker = Path(root), Walker()
    if not root.is_dir():
        raise EdgeclsError(f"--data {root}: not a folder")
    test_dir = _find_split_dir(root, "test", walker)
    has_train = _find_split_dir(root, "train", walker) is not None
    folder = test_dir if test_dir is not None and has_train else root
    dirs = {d.name: d for d in _class_dirs(folder, walker)}
    if not dirs:
        raise EdgeclsError(f"{folder} has no class folders: lay images out as {folder}/<class>/*")
    unknown = sorted(set(dirs) - set(classes))
    if unknown:
        raise EdgeclsError(
            f"{folder} has class folders the model does not know: {', '.join(unknown)} "
            f"(model labels: {', '.join(classes)})"
        )
    usable, skipped = _scan(dirs, walker)
    return _split_from(usable, classes), skipped
