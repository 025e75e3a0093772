"""The report a person looks at: a figure per image and a self-contained HTML page."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def figure(image, attributions, classes, probs, labels, mask_path):
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


def report_html(report: dict, figures: list[bytes]) -> str:
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
