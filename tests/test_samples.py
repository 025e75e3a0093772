import hashlib

import cv2
import numpy as np
import pytest

from edgecls.errors import EdgeclsError
from edgecls.samples import SampleSpec, write_sample


def _digest(folder):
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode() + p.read_bytes())
    return h.hexdigest()


def test_samples_are_deterministic_and_in_split_layout(tmp_path):
    spec = SampleSpec(n_train=4, n_test=2, size=64, seed=7)
    write_sample("insects", tmp_path / "a", spec)
    write_sample("insects", tmp_path / "b", spec)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    for split, n in (("train", 4), ("test", 2)):
        for label in ("beetles", "cockroach", "dragonflies"):
            assert len(list((tmp_path / "a" / split / label).glob("*.jpg"))) == n


def test_casting_defects_have_masks_inside_the_image(tmp_path):
    write_sample("casting", tmp_path, SampleSpec(n_train=6, n_test=2, size=96, seed=0))
    masks = sorted((tmp_path / "masks" / "train" / "def").glob("*.png"))
    assert len(masks) == 6
    assert not (tmp_path / "masks" / "train" / "ok").exists()
    for m in masks:
        mask = cv2.imread(str(m), cv2.IMREAD_GRAYSCALE)
        image = cv2.imread(str(tmp_path / "train" / "def" / f"{m.stem}.jpg"), cv2.IMREAD_GRAYSCALE)
        assert mask.shape == image.shape
        frac = (mask > 0).mean()
        assert 0 < frac < 0.2, f"{m}: defect covers {frac:.3f} of the image"


def test_ok_and_def_differ_only_by_defects_on_average(tmp_path):
    write_sample("casting", tmp_path, SampleSpec(n_train=20, n_test=1, size=64, seed=0))
    mean = {
        c: np.mean([cv2.imread(str(p)).mean() for p in (tmp_path / "train" / c).glob("*.jpg")])
        for c in ("ok", "def")
    }
    assert abs(mean["ok"] - mean["def"]) < 10  # brightness alone must not give the class away


def test_unknown_sample_is_an_error(tmp_path):
    with pytest.raises(EdgeclsError, match=r"'dogs' is not known: choose one of casting, insects"):
        write_sample("dogs", tmp_path)
