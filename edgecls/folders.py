"""Folder datasets, TF-free and shared by training and the board: the two layouts users have,
one validation pass, stratified splits.

`DIR/<class>/*` is split into train/val/test here; `DIR/{train,test}/<class>/*` (optional `val/`)
keeps the user's split. Several folders (`--data` given again: a base set and what a line
collected) merge into one dataset: the same classes (or, asked for, their union), each folder
split class by class on its own, so each is in train, val and test in proportion; every image
knows its folder (`Split.sources`), so reports can give accuracy per folder.

Every file is decoded once, by the same reader the model will be fed with, before anything
trains: what cannot be read is skipped and listed, never a crash mid-epoch.
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
    sources: list[int] = field(default_factory=list)  # index of each image's --data folder

    def __len__(self) -> int:
        return len(self.paths)

    def counts(self, classes: list[str]) -> dict[str, int]:
        c = Counter(self.labels)
        return {name: c.get(i, 0) for i, name in enumerate(classes)}

    def source_of(self) -> list[int]:
        """The --data folder of each image (all the first where the split does not say)."""
        return self.sources if len(self.sources) == len(self.paths) else [0] * len(self.paths)


@dataclass(frozen=True)
class Source:
    """One --data folder of a dataset: where, in which layout, with which class folders."""

    root: Path
    layout: str
    classes: tuple[str, ...]


@dataclass
class FolderDataset:
    root: Path  # the first --data folder
    layout: str  # "class-folders" or "split-folders"; "merged" for several folders
    classes: list[str]
    splits: dict[str, Split]
    skipped: list[tuple[Path, str]]
    sources: list[Source] = field(default_factory=list)

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
    usable: dict[str, list[Path]],
    classes: list[str],
    fractions: dict[str, float],
    seed: int,
    source: int = 0,
) -> dict[str, Split]:
    """Each class of one folder split by the fractions; a second folder (`source` 1, 2, ...)
    draws its own order, so every folder is in every split in proportion."""
    splits = {name: Split() for name in ("train", *fractions)}
    for label, name in enumerate(classes):
        paths = usable.get(name, [])
        key = [seed, label] if source == 0 else [seed, label, source]
        order = np.random.default_rng(key).permutation(len(paths))
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
    for split in splits.values():
        split.sources = [source] * len(split)
    return {name: _sorted(split) for name, split in splits.items()}


def _sorted(split: Split) -> Split:
    """The fixed evaluation order: class, then path."""
    rows = sorted(zip(split.labels, split.paths, split.source_of(), strict=True))
    return Split([p for _, p, _ in rows], [y for y, _, _ in rows], [s for _, _, s in rows])


def _by_class(split: Split) -> Split:
    """Several folders' parts of a split in class order, each folder's images in their own
    order within a class (a stable sort: one folder's split is left exactly as it is)."""
    order = sorted(range(len(split)), key=lambda i: (split.labels[i], split.sources[i]))
    return Split(*([getattr(split, k)[i] for i in order] for k in ("paths", "labels", "sources")))


def _split_from(usable: dict[str, list[Path]], classes: list[str], source: int = 0) -> Split:
    split = Split()
    for label, name in enumerate(classes):
        for p in usable.get(name, []):
            split.paths.append(p)
            split.labels.append(label)
            split.sources.append(source)
    return split


def _find_split_dir(root: Path, name: str, walker: Walker) -> Path | None:
    names = {name, "valid", "validation"} if name == "val" else {name}
    for d, _, is_dir in walker.walk(root, max_depth=1):
        if is_dir and d.name.lower() in names:
            return d
    return None


@dataclass
class _Found:
    """One --data folder before its files are read: its layout, the class folders that train
    (the folder's own, or those of its train/), and those of the user's own val/ and test/."""

    root: Path
    layout: str
    folder: Path  # where the training class folders are
    class_dirs: dict[str, Path]
    given: dict[str, tuple[Path, dict[str, Path]]]  # split name: (its folder, class folders)


def _find(root: Path, walker: Walker) -> _Found:
    root = Path(root)
    if not root.is_dir():
        raise EdgeclsError(f"--data {root}: not a folder")
    train_dir = _find_split_dir(root, "train", walker)
    splits_beside = any(_find_split_dir(root, name, walker) for name in ("val", "test"))
    if train_dir is not None and not _class_dirs(train_dir, walker) and not splits_beside:
        train_dir = None  # images right in it, no val/ or test/: a class (trains, buses, ...)
    if train_dir is None:
        class_dirs = {d.name: d for d in _class_dirs(root, walker)}
        return _Found(root, "class-folders", root, class_dirs, {})
    class_dirs = {d.name: d for d in _class_dirs(train_dir, walker)}
    given = {}
    for name in ("val", "test"):
        split_dir = _find_split_dir(root, name, walker)
        if split_dir is not None:
            given[name] = (split_dir, {d.name: d for d in _class_dirs(split_dir, walker)})
    return _Found(root, "split-folders", train_dir, class_dirs, given)


def _read_source(
    found: _Found, index: int, classes: list[str], config: SplitConfig, ctx: tuple
) -> tuple[dict[str, Split], list]:
    """Validate one folder's files and split them: the user's own val/test kept, the rest
    carved from the training class folders, class by class."""
    walker, progress, seen = ctx
    usable, skipped = _scan(found.class_dirs, walker, progress, seen)
    splits: dict[str, Split] = {}
    for name, (split_dir, dirs) in found.given.items():
        extra = sorted(set(dirs) - set(found.class_dirs))
        if extra:
            raise EdgeclsError(
                f"{split_dir} has class folders not in {found.folder}: {', '.join(extra)}; "
                "every class needs training images"
            )
        u, s = _scan(dirs, walker, progress, seen)
        skipped += s
        splits[name] = _split_from(u, classes, index)
    carve = {name: getattr(config, f"{name}_fraction") for name in ("val", "test")}
    carve = {name: frac for name, frac in carve.items() if name not in splits}
    splits.update(_stratified(usable, classes, carve, config.seed, index))
    return splits, skipped


def load_folder_dataset(
    root: Path, config: SplitConfig = SplitConfig(), progress=None
) -> FolderDataset:
    """Discover, validate and split a labelled image folder in either layout."""
    return load_folders([root], config, progress=progress)


def load_folders(
    roots, config: SplitConfig = SplitConfig(), allow_new_classes: bool = False, progress=None
) -> FolderDataset:
    """Discover, validate and split one or several labelled folders (`--data` given again) as
    one dataset. Several must have the same class folders, or with `allow_new_classes` train on
    the union; each folder is split class by class on its own, so every folder is in the train,
    val and test splits in proportion. One folder is split exactly as it alone always was."""
    roots, walker = [Path(r) for r in roots], Walker()
    _check_roots(roots)
    found = [_find(root, walker) for root in roots]
    classes = _classes_of(found, allow_new_classes)
    ctx, splits, skipped = (walker, progress, {}), {}, []
    for index, f in enumerate(found):
        parts, s = _read_source(f, index, classes, config, ctx)
        skipped += s
        for name, part in parts.items():
            whole = splits.setdefault(name, Split())
            for key in ("paths", "labels", "sources"):
                getattr(whole, key).extend(getattr(part, key))
    splits = {name: _by_class(split) for name, split in splits.items()}
    layout = found[0].layout if len(found) == 1 else "merged"
    sources = [Source(f.root, f.layout, tuple(sorted(f.class_dirs))) for f in found]
    return FolderDataset(roots[0], layout, classes, splits, skipped, sources)


def _check_roots(roots: list[Path]) -> None:
    """Each folder once: a folder given twice, or inside another, would put the same images in
    the training and the test split."""
    if not roots:
        raise EdgeclsError("--data: give the folder of labelled images")
    real = [r.resolve() for r in roots]
    for i, a in enumerate(real):
        for j, b in enumerate(real[:i]):
            if a == b:
                raise EdgeclsError(f"--data {roots[i]}: is given twice; give each folder once")
            inner, outer = (i, j) if a.is_relative_to(b) else (j, i)
            if a.is_relative_to(b) or b.is_relative_to(a):
                raise EdgeclsError(
                    f"--data {roots[inner]}: is inside --data {roots[outer]}; give each folder "
                    "once (its images would count twice)"
                )


def _classes_of(found: list[_Found], allow_new_classes: bool) -> list[str]:
    """The classes of the dataset: those every folder has; with `allow_new_classes` the union.
    A class only some folder has is refused, naming the folder, the class and what to do."""
    first = found[0]
    if len(found) == 1 or not allow_new_classes:
        _require_classes(first.folder, first.class_dirs)
    for f in found:
        _check_names(f.class_dirs)
        if not f.class_dirs:
            raise EdgeclsError(
                f"--data {f.root}: no class folders; lay images out as {f.root}/<class>/*"
            )
    union = sorted({name for f in found for name in f.class_dirs})
    if allow_new_classes:
        _require_classes(first.folder, dict.fromkeys(union, first.folder))
        return union
    fix = "pass --allow-new-classes to train on the classes of every --data together"
    for f in found[1:]:
        new = sorted(set(f.class_dirs) - set(first.class_dirs))
        if new:
            raise EdgeclsError(
                f"--data {f.root}: class {new[0]!r} ({f.class_dirs[new[0]]}) is not a class of "
                f"--data {first.root}; rename or move that folder, or {fix}"
            )
        missing = sorted(set(first.class_dirs) - set(f.class_dirs))
        if missing:
            raise EdgeclsError(
                f"--data {f.root}: has no class folder {missing[0]!r}, which --data "
                f"{first.root} has; add {f.folder / missing[0]}/ with images, or {fix}"
            )
    return sorted(first.class_dirs)


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


def _check_names(class_dirs: dict[str, Path]) -> None:
    for name, path in class_dirs.items():
        if (why := _name_problem(name)) is not None:
            raise EdgeclsError(
                f"class folder {str(path)!a}: its name has {why}, which a label cannot "
                "hold (labels.txt is one label a line); rename the folder"
            )


def _require_classes(folder: Path, class_dirs: dict[str, Path]) -> None:
    _check_names(class_dirs)
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


GOOD_FOLDERS = ("ok", "good")  # in a folder of defects: good images (MVTec AD's test/good)


def _good_or_bad(root: Path, paths: list[Path]) -> tuple[list[Path], list[Path]]:
    """Images under `root`: those in a top folder named as GOOD_FOLDERS are good, the rest bad."""
    good = [
        p
        for p in paths
        if len(p.relative_to(root).parts) > 1
        and p.relative_to(root).parts[0].lower() in GOOD_FOLDERS
    ]
    chosen = set(good)
    return good, [p for p in paths if p not in chosen]


def load_good_images(
    good: Path, defects: Path | None, config: SplitConfig = SplitConfig(), progress=None
) -> FolderDataset:
    """An anomaly dataset: every image under `good` (any layout, read recursively) split into
    train (the model learns them), val (the threshold is set on them) and test; the images under
    `defects`, if given, join the test split only, labelled `anomaly` (but for those in its
    `good/` or `ok/` folder, as MVTec AD lays out its test images): never trained on."""
    from edgecls.bundle.anomaly import LABELS

    good, walker = Path(good), Walker()
    roots = [good] if defects is None else [good, Path(defects)]
    if defects is not None and _nested(good, Path(defects)):
        raise EdgeclsError(
            f"--defects {defects}: overlaps --data {good}; give two separate folders (defects "
            "among the good images would be learned as good)"
        )
    for root, option in zip(roots, ("--data", "--defects"), strict=False):
        if not root.is_dir():
            raise EdgeclsError(f"{option} {root}: not a folder of images")
    usable, skipped = _scan(dict(zip(LABELS, roots, strict=False)), walker, progress)
    fractions = {"val": config.val_fraction, "test": config.test_fraction}
    splits = _stratified({LABELS[0]: usable[LABELS[0]]}, list(LABELS), fractions, config.seed)
    if len(splits["val"]) == 0:
        raise EdgeclsError(
            f"--data {good}: {len(usable[LABELS[0]])} good images leave none to set the "
            "threshold on; add good images or raise --val-fraction"
        )
    if defects is not None:
        more_good, bad = _good_or_bad(Path(defects), usable[LABELS[1]])
        test = splits["test"]
        paths = test.paths + more_good + bad
        labels = test.labels + [0] * len(more_good) + [1] * len(bad)
        splits["test"] = Split(paths, labels, [0] * len(paths))
    return FolderDataset(good, "good-images", list(LABELS), splits, skipped)


def _nested(a: Path, b: Path) -> bool:
    a, b = a.resolve(), b.resolve()
    return a == b or a.is_relative_to(b) or b.is_relative_to(a)


def load_anomaly_eval_split(root: Path) -> tuple[Split, list[tuple[Path, str]]]:
    """Images to check an anomaly bundle on: those under `root/ok/` or `root/good/` are good,
    every other image under `root` is a defect."""
    from edgecls.bundle.anomaly import LABELS

    root = Path(root)
    if not root.is_dir():
        raise EdgeclsError(f"--data {root}: not a folder")
    usable, skipped = _scan({LABELS[1]: root}, Walker())
    good, bad = _good_or_bad(root, usable[LABELS[1]])
    return Split(
        good + bad, [0] * len(good) + [1] * len(bad), [0] * (len(good) + len(bad))
    ), skipped
