"""What `--onnx-int8 u8u8 | u8s8 | s8s8` give on this CPU: accuracy, agreement with the float
model and latency of each, with ONNX Runtime's fused int8 kernels and unfused (dequantize, float
op, quantize: the arithmetic every CPU agrees on), side by side in one run.

    python benchmarks/onnx_int8_types.py [--samples insects,casting] [--size 64] [--json out.json]

A seed-cnn is trained on each embedded sample (as the test suite does: 12 epochs, no
augmentation), exported to float32 ONNX and to static int8 QDQ ONNX with each type pair, and
compared with the Keras model on the sample's test split. The fused figure is what this CPU's
board would see; where it falls below the unfused one, this CPU's kernels lose what the model
does not (u8s8 and s8s8 saturate on x86 without VNNI: `edgecls doctor` says which CPU this is).
Latency is the median per image of alternating rounds, as the export's repair table measures it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _model(sample: str, size: int, work: Path):
    """A seed-cnn trained on `sample`, with its test split and calibration images."""
    from edgecls.bundle.preprocess import load_batch
    from edgecls.export.calibration import balanced_sample
    from edgecls.folders import load_eval_split
    from edgecls.samples import SampleSpec, write_sample
    from edgecls.train import TrainConfig, train
    from edgecls.train.models import ModelConfig

    data, run = work / sample, work / f"{sample}-run"
    write_sample(sample, data, SampleSpec(n_train=160, n_test=100, size=96, seed=1))
    model = ModelConfig("seed-cnn", (size, size))
    train(TrainConfig(data=data, out=run, model=model, epochs=12, seed=3, augment=False))
    labels = (run / "labels.txt").read_text().split()
    split, _ = load_eval_split(data / "test", labels)
    calibration = load_batch(balanced_sample(data / "train", 64), (size, size))
    return run, load_batch(split.paths, (size, size)), split.labels, calibration


def measure(sample: str, size: int, work: Path) -> list[dict]:
    import keras
    import numpy as np

    from edgecls.bundle.backends import RuntimeOptions, load_predictor
    from edgecls.bundle.latency import median_latencies
    from edgecls.bundle.manifest import ParityThresholds
    from edgecls.bundle.parity import compare
    from edgecls.export.context import ONNX_INT8, ExportContext, logits_model
    from edgecls.export.onnx import write_int8_qdq
    from edgecls.keras_predictor import KerasPredictor

    run, images, y_true, calibration = _model(sample, size, work)
    model = keras.models.load_model(run / "model.keras")
    reference = KerasPredictor.from_model(model).predict(images)
    y_true = np.asarray(y_true)
    files = {}
    rows = []
    for kind in ONNX_INT8:
        ctx = ExportContext(logits_model(model), (size, size), calibration, onnx_int8=kind)
        ctx.workdir = work / f"{sample}-{kind}"
        ctx.workdir.mkdir()
        files[kind] = ctx.workdir / "model_int8.onnx"
        write_int8_qdq(ctx, files[kind])
        files.setdefault("float32", ctx.onnx_float)
        for fused in (True, False):
            predictor = load_predictor(files[kind], RuntimeOptions(fused_int8=fused))
            f = compare(reference, predictor.predict(images), y_true, "int8", ParityThresholds())
            rows.append(
                {
                    "sample": sample,
                    "type": kind,
                    "kernels": "fused" if fused else "unfused",
                    "accuracy": round(f.accuracy, 4),
                    "drop_points": round(f.accuracy_drop, 2),
                    "agreement": round(f.agreement, 4),
                    "max_abs_prob_diff": round(f.max_abs_prob_diff, 4),
                    "gate": "pass" if f.passed else "FAIL",
                }
            )
    latency = median_latencies(files, rounds=7, runs=20)
    for row in rows:
        if row["kernels"] == "fused":
            row["latency_ms"] = latency[row["type"]]
            row["latency_vs_float32"] = round(latency[row["type"]] / latency["float32"], 2)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", default="insects,casting")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    from edgecls import logs
    from edgecls.bundle.cpu import this_cpu

    logs.configure(logs.NORMAL)
    work = Path(tempfile.mkdtemp(prefix="edgecls-onnx-int8-"))
    rows = [r for s in args.samples.split(",") for r in measure(s, args.size, work)]
    print(f"CPU: {this_cpu().summary()}")
    cols = list(rows[0])  # a fused row: it has the latency columns too
    print(" | ".join(cols))
    for r in rows:
        print(" | ".join(str(r.get(c, "")) for c in cols))
    if args.json:
        args.json.write_text(json.dumps({"cpu": this_cpu().summary(), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
