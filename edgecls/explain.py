"""`edgecls explain`: SHAP reports for the float Keras model, with checks that they are faithful.

Two methods, looked up by name: `gradient` (SHAP's GradientExplainer, background drawn from the
run's training images) and `partition` (SHAP's Partition explainer with a blur image masker,
model-agnostic, bounded by --max-evals). Per image the report shows the original, heat maps for
the predicted and top-k classes and a bar chart of probabilities; it also measures, unlike a
picture, whether the attributions mean anything: masking the most attributed 10% of pixels must
lower the predicted probability more than masking a random 10% (deletion check), and on images
with ground-truth defect masks the most attributed point should fall on the defect (pointing game).
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import Progress

from edgecls.errors import EdgeclsError
from edgecls.runtime.preprocess import image_paths, load_image

DELETION_FRACTION = 0.10


@dataclass(frozen=True)
class ExplainConfig:
    run: Path  # run folder or .keras file (labels.txt beside it)
    images: tuple[Path, ...]
    out: Path | None = None  # default reports/<run name>
    method: str = "gradient"
    background: int = 50
    max_evals: int = 500  # partition: model evaluations per image; gradient: samples per image
    top_k: int = 2
    seed: int = 0


EXPLAINERS: dict[str, Callable] = {}


def register_explainer(name: str):
    def deco(fn):
        EXPLAINERS[name] = fn
        return fn

    return deco


@register_explainer("gradient")
def gradient_attributions(model, images, background, classes, config, progress) -> np.ndarray:
    """(N, K, H, W) attributions for the classes given per image, by expected gradients."""
    import keras
    import shap

    # SHAP calls the model with a list of inputs: give it a model that expects one
    listed = keras.Model([model.inputs[0]], model.outputs[0])
    explainer = shap.GradientExplainer(listed, background)
    out = []
    for i, image in enumerate(images):
        values = explainer.shap_values(
            image[None], nsamples=max(50, min(config.max_evals, 1000)), rseed=config.seed
        )  # (1, H, W, C, n_classes)
        values = np.asarray(values)[0]
        out.append(np.stack([values[..., c].sum(axis=-1) for c in classes[i]]))
        progress(1)
    return np.stack(out)


@register_explainer("partition")
def partition_attributions(model, images, background, classes, config, progress) -> np.ndarray:
    """(N, K, H, W) by SHAP's Partition explainer over a blur masker: only calls the model."""
    import shap

    def predict(x):
        return np.asarray(model(np.asarray(x, np.float32), training=False))

    masker = shap.maskers.Image("blur(16,16)", images[0].shape)
    explainer = shap.Explainer(predict, masker)
    out = []
    for i, image in enumerate(images):
        result = explainer(
            image[None],
            max_evals=max(config.max_evals, 20),
            batch_size=50,
            outputs=np.asarray(classes[i]),
            silent=True,
        )
        values = np.asarray(result.values)[0]  # (H, W, C, K)
        out.append(np.moveaxis(values.sum(axis=2), -1, 0))
        progress(1)
    return np.stack(out)


def _mask_for(image_path: Path) -> Path | None:
    """The sample's ground-truth mask: DATA/masks/<split>/<class>/<stem>.png."""
    parts = image_path.resolve().parts
    if len(parts) < 4:
        return None
    root, split, label = Path(*parts[:-3]), parts[-3], parts[-2]
    mask = root / "masks" / split / label / f"{image_path.stem}.png"
    return mask if mask.is_file() else None


def deletion_check(model, image: np.ndarray, attribution: np.ndarray, cls: int, rng) -> dict:
    """Probability of `cls` after replacing the top-attributed vs random 10% of pixels by a blur."""
    import cv2

    blurred = cv2.GaussianBlur(image, (0, 0), 8)
    n = int(DELETION_FRACTION * attribution.size)
    top = np.argsort(attribution.ravel())[::-1][:n]
    variants = []
    for idx in [top] + [rng.choice(attribution.size, n, replace=False) for _ in range(3)]:
        mask = np.zeros(attribution.size, bool)
        mask[idx] = True
        mask = mask.reshape(attribution.shape)[..., None]
        variants.append(np.where(mask, blurred, image))
    probs = np.asarray(model(np.stack([image, *variants]).astype(np.float32), training=False))[
        :, cls
    ]
    return {
        "prob": float(probs[0]),
        "top_drop": float(probs[0] - probs[1]),
        "random_drop": float(np.mean(probs[0] - probs[2:])),
    }


def pointing_game(attribution: np.ndarray, mask_path: Path, size: tuple[int, int]) -> bool:
    """Whether the most attributed point (after a light smoothing) lies on the defect."""
    import cv2

    mask = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE)
    mask = cv2.resize(mask, (size[1], size[0]), interpolation=cv2.INTER_NEAREST) > 0
    mask = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0  # one-pixel tolerance
    smooth = cv2.GaussianBlur(attribution.astype(np.float32), (0, 0), 1.0)
    y, x = np.unravel_index(np.argmax(smooth), smooth.shape)
    return bool(mask[y, x])


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def _figure(image, attributions, classes, probs, labels, mask_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(classes)
    fig, axes = plt.subplots(1, k + 2, figsize=(3.0 * (k + 2), 3.2))
    axes[0].imshow(image.astype(np.uint8))
    axes[0].set_title("input")
    if mask_path is not None:
        import cv2

        m = cv2.resize(
            cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE),
            image.shape[1::-1],
            interpolation=cv2.INTER_NEAREST,
        )
        axes[0].contour(m > 0, levels=[0.5], colors="yellow", linewidths=0.8)
    limit = float(np.percentile(np.abs(attributions), 99.5)) or 1.0
    grey = image.mean(axis=2)
    cmap = plt.get_cmap("bwr")
    for ax, att, c in zip(axes[1 : k + 1], attributions, classes, strict=True):
        ax.imshow(grey, cmap="gray", vmin=0, vmax=255)
        overlay = cmap(np.clip(att / limit, -1, 1) * 0.5 + 0.5)
        overlay[..., 3] = np.clip(np.abs(att) / limit, 0, 1) * 0.9  # only where attribution is
        ax.imshow(overlay)
        ax.set_title(f"SHAP: {labels[c]} ({probs[c]:.2f})")
    order = np.argsort(probs)[::-1]
    axes[-1].barh([labels[i] for i in order][::-1], probs[order][::-1], color="tab:blue")
    axes[-1].set_xlim(0, 1)
    axes[-1].set_title("probabilities")
    for ax in axes[:-1]:
        ax.axis("off")
    fig.tight_layout()
    data = _png(fig)
    plt.close(fig)
    return data


def _background(config: ExplainConfig, source, size, rng) -> tuple[np.ndarray, str]:
    """Background images from the run's training split, or none when that data is not here."""
    from edgecls.export import run_split

    try:
        split, where = run_split(source, "train")
    except EdgeclsError:
        return np.zeros((0, *size, 3), np.uint8), "the explained images"
    picks = rng.choice(len(split), min(config.background, len(split)), replace=False)
    return np.stack([load_image(split.paths[i], size) for i in picks]), where


def explain(config: ExplainConfig, console: Console | None = None) -> dict:
    console = console or Console()
    if config.method not in EXPLAINERS:
        raise EdgeclsError(
            f"--method {config.method!r} is not known: choose {', '.join(EXPLAINERS)}"
        )
    if config.top_k < 1 or config.background < 1:
        raise EdgeclsError("--top-k and --background must be at least 1")
    from edgecls.export import resolve_source
    from edgecls.keras_predictor import load_keras_model

    source = resolve_source(config.run, None)
    model = load_keras_model(source.model_path)
    size = (int(model.input_shape[1]), int(model.input_shape[2]))
    images, paths, skipped = [], [], []
    for p in (q for spec in config.images for q in image_paths(spec)):
        try:
            images.append(load_image(p, size))
            paths.append(Path(p))
        except EdgeclsError as exc:
            skipped.append({"image": str(p), "reason": str(exc)})
            console.print(f"[yellow]skipped[/] {exc}", highlight=False, soft_wrap=True)
    if not images:
        raise EdgeclsError("no readable image to explain among --images")
    x = np.stack(images).astype(np.float32)
    rng = np.random.default_rng(config.seed)
    background, bg_where = _background(config, source, size, rng)
    background = (background if len(background) else x).astype(np.float32)
    probs = np.asarray(model(x, training=False))
    k = min(config.top_k, probs.shape[1])
    classes = [list(np.argsort(p)[::-1][:k]) for p in probs]

    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"SHAP {config.method}", total=len(x))
        attributions = EXPLAINERS[config.method](
            model, x, background, classes, config, lambda n: progress.advance(task, n)
        )

    out = Path(config.out or Path("reports") / source.name)
    out.mkdir(parents=True, exist_ok=True)
    labels = source.labels
    rows, figures = [], []
    for i, path in enumerate(paths):
        pred = classes[i][0]
        row = {
            "image": str(path),
            "predicted": labels[pred],
            "confidence": float(probs[i, pred]),
            "top_k": [{"label": labels[c], "probability": float(probs[i, c])} for c in classes[i]],
            "deletion": deletion_check(model, x[i], attributions[i, 0], pred, rng),
        }
        mask = _mask_for(path)
        row["pointing_hit"] = pointing_game(attributions[i, 0], mask, size) if mask else None
        png = _figure(x[i], attributions[i], classes[i], probs[i], labels, mask)
        name = f"{i:03d}_{path.stem}.png"
        (out / name).write_bytes(png)
        row["figure"] = name
        rows.append(row)
        figures.append(png)
    top = [r["deletion"]["top_drop"] for r in rows]
    rand = [r["deletion"]["random_drop"] for r in rows]
    hits = [r["pointing_hit"] for r in rows if r["pointing_hit"] is not None]
    summary = {
        "method": config.method,
        "model": str(source.model_path),
        "n": len(rows),
        "background": {"n": len(background), "source": bg_where},
        "deletion": {
            "fraction": DELETION_FRACTION,
            "mean_top_drop": float(np.mean(top)),
            "mean_random_drop": float(np.mean(rand)),
            "top_beats_random": float(np.mean(np.asarray(top) > np.asarray(rand))),
        },
        "pointing_game": {"n": len(hits), "hit_rate": float(np.mean(hits)) if hits else None},
    }
    report = {"summary": summary, "images": rows, "skipped": skipped}
    (out / "explain.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.html").write_text(_html(report, figures))
    report["out"] = str(out)
    return report


def _html(report: dict, figures: list[bytes]) -> str:
    s = report["summary"]
    d = s["deletion"]
    pg = s["pointing_game"]
    pointing = (
        f"{pg['hit_rate']:.0%} of {pg['n']} images with a ground-truth mask"
        if pg["n"]
        else "no ground-truth masks for these images"
    )
    faithful = d["mean_top_drop"] > d["mean_random_drop"]
    verdict_class, verdict = ("ok", "faithful") if faithful else ("bad", "NOT better than random")
    cards = []
    for row, png in zip(report["images"], figures, strict=True):
        dl = row["deletion"]
        hit = {
            None: "",
            True: " · pointing game: <b>hit</b>",
            False: " · pointing game: <b>miss</b>",
        }
        cards.append(
            f"<section><h3>{html.escape(Path(row['image']).name)}: {html.escape(row['predicted'])} "
            f"({row['confidence']:.2f})</h3>"
            f"<img alt='{html.escape(row['figure'])}' src='data:image/png;base64,"
            f"{base64.b64encode(png).decode()}'/>"
            f"<p>deletion: masking the top 10% drops p by {dl['top_drop']:+.3f}, random 10% by "
            f"{dl['random_drop']:+.3f}{hit[row['pointing_hit']]}</p></section>"
        )
    skipped = "".join(
        f"<li>{html.escape(r['image'])}: {html.escape(r['reason'])}</li>" for r in report["skipped"]
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>edgecls explain: {html.escape(s["model"])}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}}
img{{max-width:100%}}section{{border-top:1px solid #ddd;padding:.5em 0}}
.ok{{color:#186a18}}.bad{{color:#b00}}td,th{{padding:.2em .8em;text-align:left}}</style></head>
<body><h1>SHAP report</h1>
<p>Model <code>{html.escape(s["model"])}</code>, method <b>{s["method"]}</b>, {s["n"]} images,
background {s["background"]["n"]} images from {html.escape(s["background"]["source"])}.
Red pixels push the class up, blue push it down.</p>
<h2>Are the attributions faithful?</h2>
<table><tr><th>deletion check (mean over images)</th><td>masking the top-attributed 10% of pixels
lowers the predicted probability by <b>{d["mean_top_drop"]:+.3f}</b>; a random 10% by
<b>{d["mean_random_drop"]:+.3f}</b>; top beats random on {d["top_beats_random"]:.0%} of images
<span class="{verdict_class}">({verdict})</span>
</td></tr><tr><th>pointing game</th>
<td>most attributed point inside the defect: {pointing}</td></tr>
</table>
{"<h2>Skipped</h2><ul>" + skipped + "</ul>" if skipped else ""}
<h2>Images</h2>
{"".join(cards)}
</body></html>
"""
