"""The learning loop end to end, on a condition the model never saw: the insect model (trained on
well-lit photos) runs on a board that now sees dark frames; the board collects them, people label
them through the labelling page's API, the workstation pulls them, retrains on base + collected,
and `compare` proves the new model better on a holdout of the dark condition and not worse on the
base holdout."""

from __future__ import annotations

import json
import threading
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
from mjpeg_server import free_port
from typer.testing import CliRunner

from edgecls.cli import app
from edgecls.runtime.collection.store import HIDDEN
from edgecls.runtime.loop import run
from edgecls.runtime.loop_options import LoopOptions
from edgecls.runtime.sources import Source, SourceEnded, open_source
from edgecls.samples import SampleSpec, write_sample

TOKEN = "line-token"
DARK = 0.35  # the new condition: a lamp failed (measured: the base model drops from ~0.8 to ~0.5)

pytestmark = pytest.mark.slow


def _darken(src: Path, dst: Path, flat: bool) -> None:
    """Every image of src/<class>/ darkened into dst (flat: named <class>_<name> in one folder,
    as a camera's frames come without a folder per class)."""
    for p in sorted(src.rglob("*.jpg")):
        q = dst / f"{p.parent.name}_{p.name}" if flat else dst / p.parent.name / p.name
        q.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(q), (cv2.imread(str(p)).astype(np.float32) * DARK).astype(np.uint8))


class HeldOpen(Source):
    """A folder played once, then held open (no frames, the server up) until `done` is set: the
    board keeps serving its labelling page after the line has passed."""

    def __init__(self, source: Source, done: threading.Event):
        self.source, self.done = source, done
        self.name, self.live, self.reconnects = source.name, False, 0

    def read(self):
        try:
            return self.source.read()
        except SourceEnded:
            self.done.wait(300)
            raise

    def close(self):
        self.source.close()


def _call(port: int, path: str, body: dict | None = None):
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _label_everything(port: int, folder: Path) -> int:
    """A person at the page: each queued frame labelled with what it shows (here: its source
    file's class, from the sidecar's record)."""
    labelled = 0
    while items := _call(port, "/label/queue?order=uncertain")["items"]:
        for item in items:
            meta = json.loads((folder / HIDDEN / "meta" / f"{item['name'][:-4]}.json").read_text())
            truth = meta["record"]["name"].partition("_")[0]
            _call(port, "/label", {"name": item["name"], "label": truth})
            labelled += 1
    return labelled


def _compare(a: Path, b: Path, holdout: Path, out: Path) -> dict:
    result = CliRunner().invoke(
        app, ["compare", str(a), str(b), "--data", str(holdout), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    return json.loads((out / "compare.json").read_text())


def test_collect_label_pull_retrain_and_prove_it_better(
    int8_bundle, insects_run, insects_data, tmp_path
):
    line = tmp_path / "line-sample"
    write_sample("insects", line, SampleSpec(n_train=60, n_test=60, size=96, seed=7))
    frames, holdout = tmp_path / "frames", tmp_path / "dark-holdout"
    _darken(line / "train", frames, flat=True)
    _darken(line / "test", holdout, flat=False)

    collect, port, done = tmp_path / "collect", free_port(), threading.Event()
    options = LoopOptions(
        bundle=int8_bundle, source=str(frames), headless=True, http=str(port), http_token=TOKEN,
        collect=collect, collect_margin=1.0, collect_rate=1000.0,  # the new condition, wholesale
    )  # fmt: skip
    board = threading.Thread(
        target=lambda: run(
            options.to_config(), log=print, source=HeldOpen(open_source(str(frames)), done)
        )
    )
    board.start()
    try:
        queue = collect / HIDDEN / "queue"
        for _ in range(600):
            if len(list(queue.glob("c-*.jpg"))) >= 180:
                break
            done.wait(0.1)
        assert _label_everything(port, collect) == 180
        pulled = tmp_path / "line1"
        result = CliRunner().invoke(
            app,
            ["data", "pull", f"http://127.0.0.1:{port}", "--out", str(pulled), "--token", TOKEN],
        )
        assert result.exit_code == 0, result.output
    finally:
        done.set()
        board.join(60)
    assert sorted(
        len(list((pulled / c).glob("*.jpg"))) for c in ("beetles", "cockroach", "dragonflies")
    ) == [60, 60, 60]

    new = tmp_path / "run-new"
    args = ["train", "--data", str(insects_data), "--data", str(pulled), "--out", str(new)]
    args += [
        "--model",
        "seed-cnn",
        "--img-size",
        "64",
        "--epochs",
        "12",
        "--seed",
        "3",
        "--no-augment",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output

    dark = _compare(insects_run, new, holdout, tmp_path / "cmp-dark")
    base = _compare(insects_run, new, insects_data / "test", tmp_path / "cmp-base")
    for name, c in (("dark holdout", dark), ("base holdout", base)):
        a, b, p = c["a"]["accuracy"], c["b"]["accuracy"], c["mcnemar"]["p"]
        print(f"{name}: base model {a:.3f}, retrained {b:.3f}, McNemar p={p:.3g}")
    assert dark["b"]["accuracy"] >= dark["a"]["accuracy"] + 0.15 and dark["mcnemar"]["p"] < 0.01
    assert base["b"]["accuracy"] >= base["a"]["accuracy"] - 0.03
