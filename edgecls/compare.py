"""`edgecls compare`: champion (A) against challenger (B) on a fixed holdout, and the gate
`edgecls export --champion` puts in front of a new model.

A and B are each a run folder (its model.keras), a bundle folder (its float32 artifact, which
export proved equal to the float model), a bundle's artifact file (loaded only if its bytes are
the manifest's), or a model file (.keras, .tflite, .onnx) with its labels; every one goes
through the same `Predictor` interface as `edgecls evaluate`. Both answer the same images; the
report gives each one's accuracy and per-class recall, the change, and McNemar's exact test on
the images where exactly one of them is right (b: A right and B wrong, c: A wrong and B right),
with a page of the images where their answers differ. A bundle compared needs no TensorFlow.
"""

from __future__ import annotations

import html
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from edgecls.bundle.folder import load_bundle
from edgecls.bundle.manifest import MANIFEST
from edgecls.bundle.preprocess import UnreadableImage, decode_file
from edgecls.durable import check_replaceable, staged_folder
from edgecls.errors import EdgeclsError
from edgecls.evaluate import LabelledModel, open_model, predict_split
from edgecls.folders import Split, load_eval_split
from edgecls.runs import MODEL_FILE

MAX_THUMBNAILS = 200  # disagree.html: at most this many images; the rest are counted
THUMBNAIL_SIDE = 160
SIGNIFICANCE = 0.05


class ChampionRefused(EdgeclsError):
    """The candidate is worse than the champion on the holdout: exit 1, as a failed parity gate
    (the model, not a setting, is what must change)."""

    exit_code = 1


def mcnemar_p(b: int, c: int) -> float:
    """McNemar's exact two-sided p-value for b and c discordant pairs: under "A and B are as
    good", each of the n = b + c images only one of them gets right is B's with probability 1/2,
    so p = min(1, 2 P(X <= min(b, c))), X ~ Binomial(n, 1/2). Summed in log space (numpy and
    math alone: no scipy), so any n is exact to float precision; b=10, c=2 gives 0.0386."""
    n, k = b + c, min(b, c)
    if n == 0:
        return 1.0
    lgn = math.lgamma(n + 1) - n * math.log(2)
    terms = np.array([lgn - math.lgamma(i + 1) - math.lgamma(n - i + 1) for i in range(k + 1)])
    top = terms.max()
    log_tail = top + math.log(np.exp(terms - top).sum())
    return min(1.0, 2 * math.exp(log_tail))


@dataclass
class Comparison:
    """A's and B's answers on the holdout's images (in its fixed order), and what they show."""

    a: str
    b: str
    holdout: str
    classes: list[str]  # the holdout's classes
    paths: list[Path]
    truth: list[str]
    pred_a: list[str]
    pred_b: list[str]
    conf_a: list[float]
    conf_b: list[float]
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    out: Path | None = None

    @property
    def right_a(self) -> np.ndarray:
        return np.asarray(self.pred_a) == np.asarray(self.truth)

    @property
    def right_b(self) -> np.ndarray:
        return np.asarray(self.pred_b) == np.asarray(self.truth)

    @property
    def accuracy_a(self) -> float:
        return float(self.right_a.mean())

    @property
    def accuracy_b(self) -> float:
        return float(self.right_b.mean())

    @property
    def delta_points(self) -> float:
        """B's accuracy minus A's, in points (from the counts: equal hits are exactly 0)."""
        return 100.0 * int(self.right_b.sum() - self.right_a.sum()) / len(self.truth)

    @property
    def b_count(self) -> int:
        """b: images A gets right and B wrong."""
        return int((self.right_a & ~self.right_b).sum())

    @property
    def c_count(self) -> int:
        """c: images A gets wrong and B right."""
        return int((~self.right_a & self.right_b).sum())

    @property
    def p_value(self) -> float:
        return mcnemar_p(self.b_count, self.c_count)

    def disagreements(self) -> list[int]:
        """The images where A's and B's answers differ: B's losses first (A right, B wrong),
        then its gains, then those both get wrong in different ways; holdout order within."""
        differ = [i for i in range(len(self.truth)) if self.pred_a[i] != self.pred_b[i]]
        ra, rb = self.right_a, self.right_b
        return sorted(differ, key=lambda i: (0 if ra[i] else 1 if rb[i] else 2, i))

    def recall(self, preds: list[str]) -> dict[str, float]:
        truth = np.asarray(self.truth)
        hits = np.asarray(preds) == truth
        return {c: float(hits[truth == c].mean()) for c in self.classes}

    @property
    def verdict(self) -> str:
        d, p = self.delta_points, self.p_value
        note = "" if p < SIGNIFICANCE else f" (not significant at {SIGNIFICANCE})"
        if d == 0:
            return f"no difference: the same accuracy, McNemar p={p:.3g}"
        if d > 0:
            return f"B is better: {d:+.1f} points, McNemar p={p:.3g}{note}"
        return f"A is better: B is {-d:.1f} points worse, McNemar p={p:.3g}{note}"

    def summary(self) -> dict:
        """compare.json's figures: each model's accuracy and per-class recall, the change in
        points, McNemar's b, c and p."""
        models = {
            role: {"model": name, "accuracy": acc, "recall": self.recall(preds)}
            for role, name, acc, preds in (
                ("a", self.a, self.accuracy_a, self.pred_a),
                ("b", self.b, self.accuracy_b, self.pred_b),
            )
        }
        return {
            "holdout": self.holdout,
            "n": len(self.truth),
            "classes": self.classes,
            **models,
            "delta_points": self.delta_points,
            "mcnemar": {"b": self.b_count, "c": self.c_count, "p": self.p_value},
            "verdict": self.verdict,
            "disagreements": len(self.disagreements()),
            "skipped": [[str(p), why] for p, why in self.skipped],
        }


def open_compared(path: Path, role: str = "A") -> LabelledModel:
    """A run folder, a bundle folder, a bundle's artifact file or a model file, with its labels
    and input path; `role` names it in errors."""
    path = Path(path)
    if path.is_dir() and (path / MANIFEST).is_file():
        bundle = load_bundle(path)
        return _bundle_model(bundle, bundle.float_reference())
    if path.is_dir():
        if not (path / MODEL_FILE).is_file():
            raise EdgeclsError(
                f"{role} {path}: neither a run folder ({MODEL_FILE}) nor a bundle ({MANIFEST}); "
                "give a run folder, a bundle folder or a model file"
            )
        return open_model(path / MODEL_FILE)
    if path.is_file() and path.suffix != ".keras" and (path.parent / MANIFEST).is_file():
        bundle = load_bundle(path.parent)
        return _bundle_model(bundle, bundle.artifact(path.name))
    if not path.exists():
        raise EdgeclsError(f"{role} {path}: no such run folder, bundle or model file")
    return open_model(path)


def _bundle_model(bundle, artifact) -> LabelledModel:
    """An artifact of a bundle, loaded only if it is the file the manifest lists (one that failed
    its parity gate too: comparing it is how one learns what it costs)."""
    predictor = bundle.load(artifact, allow_failed=True)
    return LabelledModel(bundle.root / artifact.file, predictor, bundle.labels, bundle.input_spec)


@dataclass
class _Holdout:
    split: Split
    truth: list[str]  # each image's class, by name
    classes: list[str]  # the classes present, in label order
    skipped: list[tuple[Path, str]]


def _holdout(holdout: Path, a: LabelledModel, b: LabelledModel) -> _Holdout:
    """The holdout's images, labelled by name: each class folder must be a label of both."""
    names = list(dict.fromkeys([*a.classes, *b.classes]))
    split, skipped = load_eval_split(holdout, names)
    if len(split) == 0:
        raise EdgeclsError(f"--data {holdout}: no labelled images to compare on")
    labels = set(split.labels)
    present = [c for i, c in enumerate(names) if i in labels]
    for role, m in (("A", a), ("B", b)):
        unknown = [c for c in present if c not in m.classes]
        if unknown:
            raise EdgeclsError(
                f"--data {holdout}: class {unknown[0]!r} is not a label of {role} ({m.path}: "
                f"{', '.join(m.classes)}); compare on classes both models know"
            )
    return _Holdout(split, [names[y] for y in split.labels], present, skipped)


def compare_on(a: LabelledModel, b: LabelledModel, holdout: Path, progress=None) -> Comparison:
    """A's and B's answers on every readable image of the holdout; nothing is written."""
    h = _holdout(Path(holdout), a, b)
    answers = []
    for m in (a, b):
        probs = predict_split(m.predictor, h.split, progress=progress, spec=m.spec)
        answers.append(([m.classes[i] for i in probs.argmax(1)], probs.max(1).tolist()))
    (pred_a, conf_a), (pred_b, conf_b) = answers
    return Comparison(
        a=str(a.path),
        b=str(b.path),
        holdout=str(holdout),
        classes=h.classes,
        paths=list(h.split.paths),
        truth=h.truth,
        pred_a=pred_a,
        pred_b=pred_b,
        conf_a=conf_a,
        conf_b=conf_b,
        skipped=h.skipped,
    )


def compare_models(
    a: Path, b: Path, holdout: Path, out: Path | None = None, max_images: int = MAX_THUMBNAILS
) -> Comparison:
    """`edgecls compare`: A against B on the holdout, the report written to `out` (default
    compare-<A>-vs-<B>): compare.json, compare.md and disagree.html with its thumbnails."""
    out = Path(out or f"compare-{display_name(a)}-vs-{display_name(b)}")
    check_out(out)  # before any model loads
    cmp = compare_on(open_compared(a, "A"), open_compared(b, "B"), holdout)
    cmp.a, cmp.b = str(a), str(b)  # as the user named them
    cmp.out = write_report(cmp, out, max_images)
    return cmp


def display_name(path: Path) -> str:
    """A short name for a run, a bundle or a model file, fit for a folder name."""
    path = Path(path)
    if path.is_file() or path.suffix in (".keras", ".tflite", ".onnx"):
        parent = path.parent.name or "model"
        name = parent if path.stem == "model" else f"{parent}-{path.stem}"
    else:
        name = path.resolve().name
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", name).strip("._") or "model"


# --- the report --------------------------------------------------------------------------------

# what a comparison folder holds: anything else in it is the user's, and it is not replaced
_REPORT_FILE = re.compile(r"compare\.json|compare\.md|disagree\.html|thumb-\d{4,}\.jpg")


def check_out(out: Path) -> None:
    check_replaceable(
        out,
        "an edgecls comparison",
        lambda f: (f / "compare.json").is_file(),
        _REPORT_FILE.fullmatch,
    )


def write_report(cmp: Comparison, out: Path, max_images: int = MAX_THUMBNAILS) -> Path:
    """compare.json (every disagreement), compare.md, disagree.html (at most `max_images`
    thumbnails, the rest counted), built aside and swapped in whole."""
    check_out(out)
    order = cmp.disagreements()
    rows = [_row(cmp, i) for i in order]
    with staged_folder(out, "the comparison") as folder:
        picked = list(zip(order, rows, strict=True))[: max(0, max_images)]
        shown = [(r, _thumbnail(cmp.paths[i], folder, n)) for n, (i, r) in enumerate(picked)]
        report = {**cmp.summary(), "shown": len(shown), "left_out": len(rows) - len(shown)}
        text = json.dumps({**report, "images": rows}, indent=2) + "\n"
        (folder / "compare.json").write_text(text, encoding="utf-8")
        (folder / "compare.md").write_text(report_markdown(report), encoding="utf-8")
        (folder / "disagree.html").write_text(disagree_html(report, shown), encoding="utf-8")
    return out


def _row(cmp: Comparison, i: int) -> dict:
    ra, rb = bool(cmp.right_a[i]), bool(cmp.right_b[i])
    kind = "A right, B wrong" if ra else "A wrong, B right" if rb else "both wrong"
    return {
        "path": str(cmp.paths[i]),
        "truth": cmp.truth[i],
        "a": cmp.pred_a[i],
        "confidence_a": round(cmp.conf_a[i], 6),
        "b": cmp.pred_b[i],
        "confidence_b": round(cmp.conf_b[i], 6),
        "kind": kind,
    }


def _thumbnail(path: Path, folder: Path, n: int) -> str | None:
    """A small JPEG of the image beside the page; None when it cannot be read any more."""
    try:
        image = decode_file(path)
    except UnreadableImage:
        return None
    scale = THUMBNAIL_SIDE / max(image.shape[:2])
    if scale < 1:
        size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(
        ".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85]
    )
    if not ok:
        return None
    name = f"thumb-{n:04d}.jpg"
    (folder / name).write_bytes(data.tobytes())
    return name


def report_markdown(r: dict) -> str:
    pct = lambda x: f"{100 * x:.1f}%"  # noqa: E731
    a, b = r["a"], r["b"]
    lines = [
        f"# A against B on `{r['holdout']}` ({r['n']} images)",
        "",
        f"- A: `{a['model']}`",
        f"- B: `{b['model']}`",
        f"- **{r['verdict']}**",
        "",
        "| | A | B | change (points) |",
        "|---|---:|---:|---:|",
        f"| accuracy | {pct(a['accuracy'])} | {pct(b['accuracy'])} | {r['delta_points']:+.1f} |",
    ]
    for c in r["classes"]:
        ra, rb = a["recall"][c], b["recall"][c]
        lines.append(f"| recall `{c}` | {pct(ra)} | {pct(rb)} | {100 * (rb - ra):+.1f} |")
    m = r["mcnemar"]
    lines += [
        "",
        f"McNemar's exact test: b = {m['b']} images A gets right and B wrong, c = {m['c']} "
        f"A wrong and B right; two-sided p = {m['p']:.4g}.",
        "",
        f"They disagree on {r['disagreements']} images: see `disagree.html` "
        f"({r['shown']} shown, {r['left_out']} left out; all in `compare.json`).",
    ]
    if r["skipped"]:
        lines.append(f"Not read: {len(r['skipped'])} images (listed in `compare.json`).")
    return "\n".join(lines) + "\n"


_STYLE = """body{font-family:sans-serif;margin:1.5em}figure{display:inline-block;margin:.4em;
width:180px;vertical-align:top;font-size:12px}img{max-width:160px;max-height:160px}
.wrong{color:#b00}.right{color:#070}"""


def _answer(row: dict, who: str) -> str:
    right = "right" if row[who] == row["truth"] else "wrong"
    return (
        f'<span class="{right}">{who.upper()}: {html.escape(row[who])} '
        f"({row['confidence_' + who]:.2f})</span>"
    )


def disagree_html(r: dict, shown: list[tuple[dict, str | None]]) -> str:
    """The images where A and B answer differently: thumbnail, the truth, both answers."""
    esc = html.escape
    parts = [
        f"<!doctype html><meta charset=utf-8><title>A vs B: where they disagree</title>"
        f"<style>{_STYLE}</style>",
        f"<h1>Where A and B disagree ({r['disagreements']} of {r['n']} images)</h1>",
        f"<p>A: <code>{esc(r['a']['model'])}</code><br>B: <code>{esc(r['b']['model'])}</code><br>"
        f"holdout: <code>{esc(r['holdout'])}</code><br><b>{esc(r['verdict'])}</b></p>",
    ]
    kind = None
    for row, thumb in shown:
        if row["kind"] != kind:
            kind = row["kind"]
            parts.append(f"<h2>{esc(kind)}</h2>")
        img = f'<img src="{esc(thumb)}" alt="">' if thumb else "<i>(not readable now)</i>"
        parts.append(
            f'<figure data-path="{esc(row["path"])}">{img}<figcaption>truth: '
            f"<b>{esc(row['truth'])}</b><br>{_answer(row, 'a')}<br>{_answer(row, 'b')}<br>"
            f"<small>{esc(Path(row['path']).name)}</small></figcaption></figure>"
        )
    if r["left_out"]:
        parts.append(f"<p>{r['left_out']} more not shown here; all are in compare.json.</p>")
    return "\n".join(parts) + "\n"


# --- the gate in front of export ---------------------------------------------------------------


def champion_gate(
    candidate: LabelledModel, champion: Path, holdout: Path, margin: float = 0.0
) -> Comparison:
    """`export --champion C --holdout H`: the candidate (B) against the champion (A) on H,
    before anything is exported. Refused (ChampionRefused, exit 1) when its accuracy is lower
    than the champion's by more than `margin` points; equal or better passes.

    Why accuracy and not significance: a line replaces the model it runs only with one at least
    as good on the holdout everyone agreed on. "Worse, but McNemar cannot tell at 0.05" would let
    a worse model through exactly when the holdout is small, so the burden of proof is on the
    challenger; the p-value is reported beside it, and `margin` is the tolerance a line may
    grant on purpose (e.g. 0.5 points for a much faster model)."""
    cmp = compare_on(open_compared(champion, "--champion"), candidate, holdout)
    if cmp.delta_points < -margin:
        raise ChampionRefused(
            f"{candidate.path}: accuracy {100 * cmp.accuracy_b:.1f}% on --holdout {holdout}, "
            f"below --champion {champion} at {100 * cmp.accuracy_a:.1f}% "
            f"({cmp.delta_points:+.1f} points, McNemar p={cmp.p_value:.3g}; --champion-margin "
            f"{margin:g}); not exported, nothing written: improve the model or keep the champion"
        )
    return cmp
