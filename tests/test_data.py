import numpy as np
import pytest
from messy import BAD, write_messy_folder
from typer.testing import CliRunner

from edgecls.bundle.preprocess import read_image
from edgecls.cli import app
from edgecls.errors import EdgeclsError
from edgecls.folders import SplitConfig, load_eval_split, load_folder_dataset


def test_messy_folder_skips_each_broken_file_and_keeps_the_odd_ones(tmp_path):
    files = write_messy_folder(tmp_path)
    ds = load_folder_dataset(tmp_path, SplitConfig(0.2, 0.2, seed=0))
    skipped = {p: why for p, why in ds.skipped}
    assert set(skipped) == set(files["bad"])
    for p in files["bad"]:
        assert BAD[p.name] in skipped[p]
    used = {p for s in ds.splits.values() for p in s.paths}
    assert set(files["odd"]) <= used
    for p in files["odd"]:
        image = read_image(p)
        assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    files = write_messy_folder(tmp_path)
    grey16 = next(p for p in files["odd"] if p.name == "grey16.png")
    grey8 = next(p for p in files["odd"] if p.name == "grey.png" and p.parent == grey16.parent)
    assert read_image(grey16).mean() > 30  # clipping 16-bit to 255 would make it white
    assert (
        abs(read_image(grey16).astype(float).mean() - read_image(grey8).astype(float).mean()) < 60
    )


def test_class_folder_layout_is_split_stratified_and_deterministic(tmp_path):
    write_messy_folder(tmp_path, n_per_class=20)
    a = load_folder_dataset(tmp_path, SplitConfig(0.2, 0.2, seed=5))
    b = load_folder_dataset(tmp_path, SplitConfig(0.2, 0.2, seed=5))
    c = load_folder_dataset(tmp_path, SplitConfig(0.2, 0.2, seed=6))
    assert a.layout == "class-folders" and a.classes == ["a", "b"]
    assert a.splits["test"].paths == b.splits["test"].paths
    assert a.splits["test"].paths != c.splits["test"].paths
    for split in a.splits.values():
        counts = split.counts(a.classes)
        assert abs(counts["a"] - counts["b"]) <= 1  # stratified
    every = [p for s in a.splits.values() for p in s.paths]
    assert len(every) == len(set(every))  # no image in two splits


def test_a_class_named_train_is_a_class_not_the_split_layout(tmp_path):
    write_messy_folder(tmp_path, n_per_class=12)
    (tmp_path / "a").rename(tmp_path / "train")  # vehicles: trains and buses
    ds = load_folder_dataset(tmp_path, SplitConfig(0.2, 0.2, seed=0))
    assert ds.layout == "class-folders" and ds.classes == ["b", "train"]


def test_a_file_linked_twice_is_used_once_so_it_cannot_cross_the_split(tmp_path):
    import os

    write_messy_folder(tmp_path, n_per_class=12)
    (tmp_path / "a" / "more").mkdir()
    for p in sorted((tmp_path / "a").glob("a_*.jpg")):
        os.symlink(p, tmp_path / "a" / "more" / p.name)  # the same photos, a second path each
    ds = load_folder_dataset(tmp_path, SplitConfig(0.2, 0.2, seed=0))
    used = [p.resolve() for s in ds.splits.values() for p in s.paths]
    assert len(used) == len(set(used))
    links = [why for p, why in ds.skipped if p.parent.name == "more"]
    assert len(links) == 12 and all("the same file as" in why for why in links)


def test_split_layout_keeps_user_test_and_carves_val(casting_data):
    ds = load_folder_dataset(casting_data, SplitConfig(0.2, 0.2, seed=0))
    assert ds.layout == "split-folders" and ds.classes == ["def", "ok"]
    assert len(ds.splits["test"]) == 60
    assert len(ds.splits["val"]) == 60 and len(ds.splits["train"]) == 240
    assert all("/test/" in str(p) for p in ds.splits["test"].paths)


def test_kaggle_casting_layout_with_val_folder_named_valid(tmp_path):
    write_messy_folder(tmp_path / "casting_data" / "train")
    write_messy_folder(tmp_path / "casting_data" / "test")
    write_messy_folder(tmp_path / "casting_data" / "valid")
    ds = load_folder_dataset(tmp_path / "casting_data")
    assert ds.layout == "split-folders"
    assert all("/valid/" in str(p) for p in ds.splits["val"].paths)


def test_empty_class_folder_is_a_one_line_error_naming_it(tmp_path):
    write_messy_folder(tmp_path)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "broken.jpg").write_bytes(b"")
    result = CliRunner().invoke(app, ["train", "--data", str(tmp_path), "--epochs", "1"])
    assert result.exit_code != 0
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = [line for line in result.output.splitlines() if line.strip()]
    error = [line for line in lines if line.startswith("error:")]
    assert len(error) == 1 and str(tmp_path / "c") in error[0], result.output
    assert "Traceback" not in result.output


def test_fewer_than_two_classes_is_an_error(tmp_path):
    write_messy_folder(tmp_path)
    import shutil

    shutil.rmtree(tmp_path / "b")
    with pytest.raises(EdgeclsError, match="at least two class folders"):
        load_folder_dataset(tmp_path)


def test_eval_split_rejects_unknown_classes_and_keeps_order(tmp_path):
    write_messy_folder(tmp_path)
    with pytest.raises(EdgeclsError, match="does not know"):
        load_eval_split(tmp_path, ["a", "x"])
    split, skipped = load_eval_split(tmp_path, ["a", "b"])
    assert split.labels == sorted(split.labels)
    assert len(skipped) == 2 * len(BAD)
