"""Retraining on several folders (`edgecls train --data base --data line1`): the classes must
match (or `--allow-new-classes`), every folder is in every split in proportion, the report
gives accuracy per folder, and the run's splits are rebuilt from its config as trained."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from edgecls.cli import app
from edgecls.errors import EdgeclsError
from edgecls.folders import SplitConfig, load_folder_dataset, load_folders
from edgecls.runs import resolve_source, run_split
from edgecls.samples import SampleSpec, write_sample

SPLIT = SplitConfig(0.2, 0.2, seed=0)


def write_classes(root: Path, n: int, seed: int, classes=("a", "b"), tint: int = 0) -> Path:
    """DIR/<class>/*.jpg, 32 px, easy to learn (dark with a bright square, or the reverse);
    `tint` darkens every image, as a line's other lighting would."""
    rng = np.random.default_rng(seed)
    for label, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(n):
            base = 60 if label % 2 == 0 else 190
            img = np.clip(rng.normal(base, 20, (32, 32, 3)) - tint, 0, 255).astype(np.uint8)
            x, y = rng.integers(2, 20, 2)
            img[y : y + 10, x : x + 10] = 255 - base
            Image.fromarray(img).save(root / name / f"{name}_{seed}_{i:03d}.jpg")
    return root


def collected(root: Path, n: int, seed: int, classes=("a", "b")) -> Path:
    """What the board's collection leaves once labelled: DIR/<class>/*.jpg, and its hidden
    DIR/.edgecls/ folder (state, sidecars) that is no class."""
    write_classes(root, n, seed, classes, tint=40)
    (root / ".edgecls").mkdir()
    (root / ".edgecls" / "state.json").write_text("{}")
    Image.new("RGB", (32, 32)).save(root / ".edgecls" / "pending.jpg")
    return root


def _one_error(result) -> str:
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    return errors[0]


def test_merged_folders_are_each_split_in_proportion(tmp_path):
    base = write_classes(tmp_path / "base", 30, 1)
    line = collected(tmp_path / "line1", 20, 2)
    ds = load_folders([base, line], SPLIT)
    assert ds.classes == ["a", "b"] and ds.layout == "merged"
    assert [s.root for s in ds.sources] == [base, line]
    for name in ("train", "val", "test"):
        split = ds.splits[name]
        for source, root, n in ((0, base, 30), (1, line, 20)):
            for label in (0, 1):
                mine = [
                    p
                    for p, y, s in zip(split.paths, split.labels, split.source_of(), strict=True)
                    if s == source and y == label
                ]
                assert all(p.is_relative_to(root) for p in mine)
                want = n - 2 * round(n * 0.2) if name == "train" else round(n * 0.2)
                assert len(mine) == want, (name, root, label)
    every = [p for s in ds.splits.values() for p in s.paths]
    assert len(every) == len(set(every)) == 100  # each image once; .edgecls/ is no class
    assert not any(".edgecls" in str(p) for p in every)
    test = ds.splits["test"]
    assert test.labels == sorted(test.labels)  # fixed order: class first


def test_one_folder_is_split_exactly_as_before(tmp_path):
    base = write_classes(tmp_path / "base", 30, 1)
    one, alone = load_folders([base], SPLIT), load_folder_dataset(base, SPLIT)
    assert one.layout == alone.layout == "class-folders"
    for name, split in alone.splits.items():
        assert one.splits[name].paths == split.paths
        assert one.splits[name].source_of() == [0] * len(split)


def test_a_split_layout_folder_keeps_its_own_test_split(tmp_path):
    casting = tmp_path / "casting"
    write_sample("casting", casting, SampleSpec(n_train=10, n_test=4, size=32, seed=1))
    line = collected(tmp_path / "line1", 10, 2, classes=("def", "ok"))
    ds = load_folders([casting, line], SPLIT)
    test = ds.splits["test"]
    theirs = [p for p, s in zip(test.paths, test.source_of(), strict=True) if s == 0]
    assert len(theirs) == 8 and all(p.parent.parent.name == "test" for p in theirs)
    assert sum(s == 1 for s in test.source_of()) == 4  # 20% of each class of line1


def test_a_class_only_one_folder_has_is_refused_naming_it(tmp_path):
    base = write_classes(tmp_path / "base", 12, 1)
    line = collected(tmp_path / "line1", 12, 2, classes=("a", "b", "cracked"))
    out = tmp_path / "run"
    args = ["train", "--data", str(base), "--data", str(line), "--epochs", "1", "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--img-size", "32"])
    assert result.exit_code == 2
    error = _one_error(result)
    assert str(line) in error and "'cracked'" in error and "--allow-new-classes" in error
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["base", "line1"]
    # and the other way round: a class the new folder lacks
    fewer = write_classes(tmp_path / "line2", 12, 3, classes=("a",))
    with pytest.raises(EdgeclsError, match=r"line2: has no class folder 'b'.*--allow-new-classes"):
        load_folders([base, fewer], SPLIT)


def test_a_folder_given_twice_or_inside_another_is_refused(tmp_path):
    base = write_classes(tmp_path / "base", 12, 1)
    with pytest.raises(EdgeclsError, match="is given twice"):
        load_folders([base, tmp_path / "base" / ".." / "base"], SPLIT)
    with pytest.raises(EdgeclsError, match="is inside --data"):
        load_folders([base, base / "a"], SPLIT)


def test_allow_new_classes_trains_on_the_union(tmp_path):
    base = write_classes(tmp_path / "base", 12, 1)
    line = collected(tmp_path / "line1", 12, 2, classes=("a", "c"))
    ds = load_folders([base, line], SPLIT, allow_new_classes=True)
    assert ds.classes == ["a", "b", "c"]
    assert {ds.classes[y] for y in ds.splits["test"].labels} == {"a", "b", "c"}
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        [
            *("train", "--data", str(base), "--data", str(line), "--allow-new-classes"),
            *("--img-size", "32", "--epochs", "1", "--out", str(out)),
        ],
    )
    assert result.exit_code == 0, result.output
    assert (out / "labels.txt").read_text().split() == ["a", "b", "c"]
    config = json.loads((out / "config.json").read_text())
    assert config["allow_new_classes"] is True
    split, _ = run_split(resolve_source(out), "test")  # rebuilt with the union
    trained = load_folders([base, line], SplitConfig(), allow_new_classes=True)  # CLI defaults
    assert split.paths == trained.splits["test"].paths and len(split) > 0


def test_merged_run_reports_each_folder_and_rebuilds_its_splits(tmp_path):
    base = write_classes(tmp_path / "base", 30, 1)
    line = collected(tmp_path / "line1", 20, 2)
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        [
            *("train", "--data", str(base), "--data", str(line), "--img-size", "32"),
            *("--epochs", "3", "--out", str(out), "--val-fraction", "0.2"),
            *("--test-fraction", "0.2"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "accuracy per --data folder" in result.output
    config = json.loads((out / "config.json").read_text())
    assert config["data"] == [str(base.resolve()), str(line.resolve())]
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["per_source"]) == {str(base), str(line)}
    assert m["per_source"][str(base)]["n"] == 12 and m["per_source"][str(line)]["n"] == 8
    with open(out / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    hits = {r["path"]: r["true"] == r["predicted"] for r in rows}
    for root, r in ((base, m["per_source"][str(base)]), (line, m["per_source"][str(line)])):
        mine = [ok for p, ok in hits.items() if Path(p).is_relative_to(root)]
        assert r["accuracy"] == pytest.approx(sum(mine) / len(mine))
    assert "accuracy per --data folder" in (out / "classification_report.txt").read_text()
    # export, explain and parity rebuild the very splits training used, from config.json
    source = resolve_source(out)
    test, where = run_split(source, "test")
    assert [str(p) for p in test.paths] == [r["path"] for r in rows]
    assert str(base.resolve()) in where and str(line.resolve()) in where
    train, _ = run_split(source, "train")
    assert {s for s in train.source_of()} == {0, 1}
