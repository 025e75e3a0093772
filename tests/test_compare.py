"""Champion against challenger: `edgecls compare A B --data HOLDOUT` and the gate
`edgecls export --champion C --holdout H` puts in front of a new model."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from edgecls.cli import app
from edgecls.compare import Comparison, mcnemar_p, write_report


def write_classes(root: Path, n: int, seed: int, swap: bool = False) -> Path:
    """DIR/{a,b}/*.jpg, 32 px, easy to learn; `swap` files each class under the other's name,
    so a model trained on it learns the opposite."""
    rng = np.random.default_rng(seed)
    for label, name in enumerate(("a", "b")):
        folder = root / ("ba"[label] if swap else name)
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            base = 60 if label == 0 else 190
            img = np.clip(rng.normal(base, 20, (32, 32, 3)), 0, 255).astype(np.uint8)
            x, y = rng.integers(2, 20, 2)
            img[y : y + 10, x : x + 10] = 255 - base
            Image.fromarray(img).save(folder / f"{name}_{seed}_{i:03d}.jpg")
    return root


def _train(data: Path, out: Path, epochs: int) -> Path:
    args = ["train", "--data", str(data), "--img-size", "32", "--epochs", str(epochs)]
    result = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A model that learned (good), one that learned the opposite (bad), and a holdout."""
    root = tmp_path_factory.mktemp("compare")
    good = _train(write_classes(root / "data", 30, 1), root / "good", 4)
    bad = _train(write_classes(root / "swapped", 30, 1, swap=True), root / "bad", 4)
    return good, bad, write_classes(root / "holdout", 15, 7)


def _error_lines(result) -> list[str]:
    assert "Traceback" not in result.output, result.output
    return [line for line in result.output.splitlines() if line.startswith("error:")]


def test_mcnemar_exact_two_sided():
    # b=10, c=2: 2 * P(X <= 2), X ~ Binomial(12, 1/2) = 2 * 79 / 4096
    assert mcnemar_p(10, 2) == pytest.approx(0.0386, abs=5e-5)
    assert mcnemar_p(10, 2) == pytest.approx(2 * 79 / 4096, rel=1e-9)
    assert mcnemar_p(2, 10) == mcnemar_p(10, 2)
    assert mcnemar_p(0, 0) == 1.0 and mcnemar_p(5, 5) == 1.0 and mcnemar_p(0, 1) == 1.0
    for b, c in ((0, 6), (3, 17), (40, 60), (400, 480)):  # against the exact sum
        n = b + c
        exact = min(1.0, 2 * sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2**n)
        assert mcnemar_p(b, c) == pytest.approx(exact, rel=1e-9)
    assert 0 < mcnemar_p(5000, 5400) < 1e-4  # large n: no overflow, no scipy


def test_disagreement_page_lists_exactly_the_images_where_the_answers_differ(tmp_path):
    holdout = write_classes(tmp_path / "holdout", 4, 3)
    paths = sorted(holdout.rglob("*.jpg"))
    truth = [p.parent.name for p in paths]
    pred_a = ["a", "a", "b", "b", "a", "b", "a", "b"]
    pred_b = ["a", "b", "b", "a", "b", "b", "b", "b"]
    cmp = Comparison("A", "B", str(holdout), ["a", "b"], paths, truth, pred_a, pred_b,
                     [0.9] * 8, [0.8] * 8)  # fmt: skip
    differ = {str(p) for p, x, y in zip(paths, pred_a, pred_b, strict=True) if x != y}
    out = write_report(cmp, tmp_path / "report", max_images=3)
    page = (out / "disagree.html").read_text()
    listed = re.findall(r'data-path="([^"]+)"', page)
    report = json.loads((out / "compare.json").read_text())
    assert {row["path"] for row in report["images"]} == differ
    assert len(listed) == 3 and set(listed) <= differ
    assert f"{len(differ) - 3} more not shown" in page and report["left_out"] == len(differ) - 3
    assert sorted(p.name for p in out.glob("thumb-*.jpg")) == [
        f"thumb-000{i}.jpg" for i in range(3)
    ]
    # B's losses come first: the page opens with what the challenger breaks
    first = next(r for r in report["images"])
    assert first["kind"] == "A right, B wrong"
    full = write_report(cmp, tmp_path / "report", max_images=200)  # replaces its own report
    assert set(re.findall(r'data-path="([^"]+)"', (full / "disagree.html").read_text())) == differ


def test_compare_two_runs_writes_the_report(runs, tmp_path):
    good, bad, holdout = runs
    out = tmp_path / "cmp"
    result = CliRunner().invoke(app, ["compare", str(bad), str(good), "--data", str(holdout),
                                      "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((out / "compare.json").read_text())
    a, b = report["a"], report["b"]
    assert a["model"] == str(bad) and b["model"] == str(good)
    assert report["n"] == 30 and b["accuracy"] > a["accuracy"] + 0.5
    assert report["delta_points"] == pytest.approx(100 * (b["accuracy"] - a["accuracy"]))
    m = report["mcnemar"]
    assert m["p"] == pytest.approx(mcnemar_p(m["b"], m["c"])) and m["c"] > m["b"]
    assert set(a["recall"]) == set(b["recall"]) == {"a", "b"}
    assert "B is better: +" in result.output and "McNemar p=" in result.output
    md = (out / "compare.md").read_text()
    assert "| accuracy |" in md and "recall `a`" in md and "McNemar" in md
    # the page holds exactly the images where the two models' own evaluations differ
    answers = []
    for run in (bad, good):
        ev = tmp_path / f"eval-{run.name}"
        r = CliRunner().invoke(
            app, ["evaluate", str(run / "model.keras"), "--data", str(holdout), "--out", str(ev)]
        )
        assert r.exit_code == 0, r.output
        with open(ev / "predictions.csv", newline="") as f:
            answers.append({row["path"]: row["predicted"] for row in csv.DictReader(f)})
    differ = {p for p in answers[0] if answers[0][p] != answers[1][p]}
    listed = re.findall(r'data-path="([^"]+)"', (out / "disagree.html").read_text())
    assert len(differ) > 0 and sorted(listed) == sorted(differ)
    assert len(list(out.glob("thumb-*.jpg"))) == len(differ)


def test_compare_refuses_a_holdout_class_a_model_does_not_know(runs, tmp_path):
    good, bad, _ = runs
    other = write_classes(tmp_path / "other", 3, 9)
    (other / "b").rename(other / "c")
    out = tmp_path / "cmp"
    result = CliRunner().invoke(app, ["compare", str(good), str(bad), "--data", str(other),
                                      "--out", str(out)])  # fmt: skip
    assert result.exit_code == 2 and len(_error_lines(result)) == 1
    assert "does not know: c" in result.output and not out.exists()


def _export(run, out, *extra):
    args = ["export", str(run), "--format", "tflite", "--out", str(out), *map(str, extra)]
    return CliRunner().invoke(app, args)


def test_export_refuses_a_model_worse_than_the_champion(runs, tmp_path):
    good, bad, holdout = runs
    out = tmp_path / "export" / "bad"
    result = _export(bad, out, "--champion", good, "--holdout", holdout)
    assert result.exit_code == 1, result.output
    (error,) = _error_lines(result)
    assert re.search(r"accuracy \d+\.\d% on --holdout .*below --champion .* at \d+\.\d%", error)
    assert str(good) in error and str(holdout) in error
    assert not out.exists() and not list((tmp_path / "export").glob("*"))  # no staging left
    # --champion and --holdout go together
    for given in (["--champion", good], ["--holdout", holdout]):
        result = _export(good, out, *given)
        assert result.exit_code == 2 and len(_error_lines(result)) == 1, result.output
        assert "--champion" in result.output and "--holdout" in result.output
        assert not out.exists()


def test_export_accepts_a_better_or_equal_model_and_compare_takes_its_bundle(runs, tmp_path):
    good, bad, holdout = runs
    better = _export(good, tmp_path / "better", "--champion", bad, "--holdout", holdout)
    assert better.exit_code == 0, better.output
    assert "passes" in better.output and (tmp_path / "better" / "manifest.json").is_file()
    equal = _export(good, tmp_path / "equal", "--champion", good, "--holdout", holdout)
    assert equal.exit_code == 0, equal.output
    assert "+0.0 points" in equal.output and (tmp_path / "equal" / "manifest.json").is_file()
    # a bundle is compared through its float32 artifact; so is one of its artifact files
    out = tmp_path / "cmp"
    for a in (tmp_path / "better", tmp_path / "better" / "model_float32.tflite"):
        result = CliRunner().invoke(app, ["compare", str(a), str(good), "--data", str(holdout),
                                          "--out", str(out)])  # fmt: skip
        assert result.exit_code == 0, result.output
        report = json.loads((out / "compare.json").read_text())
        assert report["a"]["accuracy"] == pytest.approx(report["b"]["accuracy"], abs=0.05)
