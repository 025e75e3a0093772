import json
import re
import shutil

import pytest
from typer.testing import CliRunner

from edgecls.cli import app


@pytest.mark.parametrize("method", ["gradient", "partition", "kernel"])
def test_explain_writes_a_self_contained_faithful_report(
    method, insects_run, insects_data, tmp_path
):
    images = sorted((insects_data / "test" / "dragonflies").glob("*.jpg"))[:4]
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not a jpeg")
    out = tmp_path / method
    args = [
        "explain",
        str(insects_run),
        "--method",
        method,
        "--background",
        "20",
        "--max-evals",
        "200",
        "--out",
        str(out),
        "--images",
        str(bad),
    ]
    for p in images:
        args += ["--images", str(p)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output  # the report is written; one image was not read
    assert str(bad) in result.output  # skipped and named
    assert "not explained: 1 image (listed in the report)" in result.output
    report = json.loads((out / "explain.json").read_text())
    assert report["summary"]["n"] == 4 and report["skipped"][0]["image"] == str(bad)
    page = (out / "report.html").read_text()
    embedded = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(embedded) == 4 and all(len(e) > 1000 for e in embedded)
    assert "http" not in page.replace("http-equiv", "")  # opens offline: nothing fetched
    for row in report["images"]:
        assert (out / row["figure"]).is_file()
        assert len(row["top_k"]) == 2 and row["predicted"] == row["top_k"][0]["label"]
        assert set(row["deletion"]) == {"prob", "top_drop", "random_drop"}
        assert row["pointing_hit"] is None  # insects ship no masks
    d = report["summary"]["deletion"]
    assert d["mean_top_drop"] > d["mean_random_drop"], d
    if method == "kernel":  # superpixels (SLIC) that pass the deletion check on most images
        assert d["top_beats_random"] >= 0.75, d
        assert report["summary"]["settings"] == {"max_evals": 200, "segments": 50}


def test_pointing_game_uses_the_casting_masks(insects_run, casting_data, tmp_path):
    out = tmp_path / "e"
    result = CliRunner().invoke(
        app,
        [
            "explain",
            str(insects_run),
            "--images",
            str(casting_data / "test" / "def" / "def_000[0-2].jpg"),
            "--background",
            "10",
            "--max-evals",
            "50",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "explain.json").read_text())
    assert report["summary"]["pointing_game"]["n"] == 3
    assert all(isinstance(r["pointing_hit"], bool) for r in report["images"])
    assert "pointing game" in result.output


def test_explain_bad_inputs(insects_run, insects_data, tmp_path):
    image = str(next((insects_data / "test" / "beetles").glob("*.jpg")))
    runner = CliRunner()
    result = runner.invoke(
        app, ["explain", str(insects_run), "--images", image, "--method", "lime"]
    )
    assert result.exit_code == 2 and "lime" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["explain", str(tmp_path), "--images", image])
    assert result.exit_code == 2 and "no model.keras" in result.output
    result = runner.invoke(
        app, ["explain", str(insects_run), "--images", str(tmp_path / "none.jpg")]
    )
    assert result.exit_code == 2 and "no readable image" in result.output


def test_a_run_whose_training_data_is_gone_says_its_background_is_the_images(
    insects_run, insects_data, tmp_path
):
    moved = tmp_path / "moved"
    moved.mkdir()
    for name in ("model.keras", "labels.txt", "config.json"):
        shutil.copy(insects_run / name, moved / name)
    cfg = json.loads((moved / "config.json").read_text())
    cfg["data"] = str(tmp_path / "deleted-photos")  # the run was copied to another machine
    (moved / "config.json").write_text(json.dumps(cfg))
    images = sorted((insects_data / "test" / "beetles").glob("*.jpg"))[:2]
    args = ["explain", str(moved), "--max-evals", "50", "--out", str(tmp_path / "e")]
    result = CliRunner().invoke(app, [*args, *(a for p in images for a in ("--images", str(p)))])
    assert result.exit_code == 0, result.output
    assert "note: background from the explained images" in result.output
    report = json.loads((tmp_path / "e" / "explain.json").read_text())
    assert "training data is not here" in report["summary"]["background"]["source"]


def test_a_report_replaces_an_earlier_one_whole_and_never_a_users_folder(
    insects_run, insects_data, tmp_path
):
    images = sorted((insects_data / "test" / "beetles").glob("*.jpg"))[:2]
    pick = [a for p in images for a in ("--images", str(p))]

    def explain(out):
        args = ["explain", str(insects_run), "--max-evals", "50", "--background", "10"]
        return CliRunner().invoke(app, [*args, "--out", str(out), *pick])

    out = tmp_path / "report"
    assert explain(out).exit_code == 0
    (out / "007_beetles_9999.png").write_bytes(b"a figure of the last report")
    result = explain(out)
    assert result.exit_code == 0, result.output
    assert not (out / "007_beetles_9999.png").exists()  # replaced whole, not mixed into
    assert (out / "report.html").is_file() and (out / "explain.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["report"]  # nothing left aside
    (out / "notes.txt").write_text("mine")  # a report the user wrote into: theirs now
    result = explain(out)
    assert (
        result.exit_code == 2
        and "also holds files edgecls did not write (notes.txt)" in result.output
    )
    assert (out / "notes.txt").read_text() == "mine" and (out / "explain.json").is_file()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.txt").write_text("precious")
    result = explain(mine)
    assert result.exit_code == 2 and "not an edgecls report" in result.output
    assert [p.name for p in mine.iterdir()] == ["thesis.txt"]
