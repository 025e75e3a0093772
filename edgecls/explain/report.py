"""The report a person reads: its summary (faithfulness, per class, float against the artifact)
and one self-contained HTML page with a colour legend, the true label beside the prediction and
the misclassified and least confident images first; an anomaly model's report (anomaly.py) has
the same shape, its maps in place of SHAP's."""

from __future__ import annotations

import base64
import html
import os
import re
from pathlib import Path

import numpy as np

from edgecls.durable import check_replaceable, check_writable_folder
from edgecls.explain.checks import DELETION_FRACTION

# what a report folder holds: anything else in it is the user's, and the folder is not replaced
_REPORT_FILE = re.compile(r"explain\.json|report\.html|\d{3}_.*\.png")


def _is_report(folder: Path) -> bool:
    return (folder / "explain.json").is_file()


def check_out(out: Path) -> None:
    """The report replaces an earlier report whole, and nothing else: a folder holding other
    files (or an earlier report mixed with them) is the user's."""
    check_replaceable(out, "an edgecls report", _is_report, _REPORT_FILE.fullmatch)


def report_folder(out: Path | None, name: str) -> Path:
    """Where the report goes (default reports/NAME), checked before the model runs, not after."""
    out = Path(out or Path("reports") / name)
    check_out(out)
    check_writable_folder(Path(os.path.abspath(out)).parent, "--out")  # where it is built
    return out


def _mean(values) -> float | None:
    return float(np.mean(values)) if len(values) else None


def _deletion(rows: list[dict]) -> dict | None:
    if not rows:
        return None
    top = np.asarray([r["deletion"]["top_drop"] for r in rows])
    rand = np.asarray([r["deletion"]["random_drop"] for r in rows])
    return {
        "fraction": DELETION_FRACTION,
        "mean_top_drop": float(top.mean()),
        "mean_random_drop": float(rand.mean()),
        "top_beats_random": float((top > rand).mean()),
    }


def per_class(rows: list[dict], labels: list[str]) -> list[dict]:
    """Per class: images of it (by folder), how many the model got right, how many it predicted
    as the class, with what mean confidence and how often their deletion check held."""
    table = []
    for label in labels:
        truly = [r for r in rows if r["true_label"] == label]
        predicted = [r for r in rows if r["predicted"] == label]
        if not truly and not predicted:
            continue
        table.append(
            {
                "label": label,
                "images": len(truly),
                "correct": sum(r["predicted"] == label for r in truly),
                "predicted": len(predicted),
                "mean_confidence": _mean([r["confidence"] for r in predicted]),
                "top_beats_random": _mean(
                    [r["deletion"]["top_drop"] > r["deletion"]["random_drop"] for r in predicted]
                ),
            }
        )
    return table


def summary(config, subject, rows, background, seconds, compared) -> dict:
    hits = [r["pointing_hit"] for r in rows if r["pointing_hit"] is not None]
    if compared is not None:
        compared = {"reference": subject.reference.name, "artifact": subject.model.name, **compared}
    return {
        "method": config.method,
        "model": subject.model.name,
        "parity": subject.model.parity or None,
        "settings": {"max_evals": config.max_evals, "segments": config.segments},
        "n": len(rows),
        "seconds_per_image": seconds,
        "background": background,  # None: partition and kernel hide regions behind a blur
        "deletion": _deletion(rows),
        "pointing_game": {"n": len(hits), "hit_rate": _mean(hits)},
        "unlabelled": sum(r["true_label"] is None for r in rows),
        "classes": per_class(rows, subject.labels),
        "compare": compared,
    }


LEGEND = """<div id="legend"><b>How to read the heat maps</b>
<div class="scale"><span>pushes the class down</span><span>no effect</span>
<span>pushes the class up</span></div>
<p>Each heat map is the grey input with the SHAP attribution for one class laid over it: red
regions raise that class's probability, blue regions lower it; the stronger the colour, the larger
the effect (all maps of one image share one scale, set by its largest values). A yellow outline
on the input is the ground-truth defect mask. The rows below show misclassified images first,
then the least confident.</p></div>"""

CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}
img{max-width:100%}section{border-top:1px solid #ddd;padding:.5em 0}
.ok{color:#186a18}.bad{color:#b00}td,th{padding:.2em .8em;text-align:left}
#legend{border:1px solid #ccc;padding:.5em 1em;max-width:900px}
.scale{display:flex;justify-content:space-between;height:1.6em;align-items:center;padding:0 .5em;
background:linear-gradient(to right,#0000ff,#ffffff,#ff0000);font-size:.85em}
.scale span{background:#fffc;padding:0 .3em}#layers code{word-break:break-all}"""


def _faithful(s: dict, what: str = "predicted probability", point: str = "most attributed") -> str:
    d, pg = s["deletion"], s["pointing_game"]
    if d is None:
        return ""
    pointing = (
        f"{pg['hit_rate']:.0%} of {pg['n']} images with a ground-truth mask"
        if pg["n"]
        else "no ground-truth masks for these images"
    )
    faithful = d["mean_top_drop"] > d["mean_random_drop"]
    verdict_class, verdict = ("ok", "faithful") if faithful else ("bad", "NOT better than random")
    return f"""<h2>Are the attributions faithful?</h2>
<table><tr><th>deletion check (mean over images)</th><td>masking the top-attributed 10% of pixels
lowers the {what} by <b>{d["mean_top_drop"]:+.3f}</b>; a random 10% by
<b>{d["mean_random_drop"]:+.3f}</b>; top beats random on {d["top_beats_random"]:.0%} of images
<span class="{verdict_class}">({verdict})</span>
</td></tr><tr><th>pointing game</th>
<td>{point} point inside the defect: {pointing}</td></tr>
</table>"""


def _share(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


def _classes(s: dict) -> str:
    if not s["classes"]:
        return ""
    rows = "".join(
        f"<tr><td>{html.escape(c['label'])}</td><td>{c['images']}</td><td>{c['correct']}</td>"
        f"<td>{c['predicted']}</td><td>{_share(c['mean_confidence'])}</td>"
        f"<td>{_share(c['top_beats_random'])}</td></tr>"
        for c in s["classes"]
    )
    unlabelled = s["unlabelled"]
    note = (
        f"<p>{unlabelled} image{'s' * (unlabelled != 1)} in a folder that is not a class name: "
        "no true label.</p>"
        if unlabelled
        else ""
    )
    return f"""<h2>Per class</h2>
<table id="per-class"><tr><th>class</th><th>images (by folder)</th><th>correct</th>
<th>predicted as</th><th>mean confidence (predicted)</th><th>deletion: top beats random</th></tr>
{rows}</table>{note}"""


def _truth(row: dict) -> str:
    truth = row["true_label"]
    if truth is None:
        return "<span class='truth'>true label unknown</span>"
    right = truth == row["predicted"]
    return (
        f"<span class='truth {'ok' if right else 'bad'}'>true: {html.escape(truth)} "
        f"{'✓' if right else '✗ misclassified'}</span>"
    )


def _distance(c: dict) -> str:
    parts = []
    for d in c["distance"]:
        rho = d["rank_correlation"]
        shown = "– (a constant map)" if rho is None else f"{rho:+.2f}"
        parts.append(
            f"{html.escape(d['label'])}: rank correlation {shown}, top-10% overlap "
            f"{d['top_overlap']:.0%}"
        )
    return (
        f"<p class='compare'>float model: {html.escape(c['reference_predicted'])} "
        f"({c['reference_confidence']:.2f}); max |Δprob| {c['max_abs_prob_diff']:.3f}. "
        f"How far apart the maps are: {'; '.join(parts)}</p>"
    )


_POINTING = {None: "", True: " · pointing game: <b>hit</b>", False: " · pointing game: <b>miss</b>"}


def _wrong(row: dict) -> bool:
    return row["true_label"] is not None and row["true_label"] != row["predicted"]


def _card(row: dict, png: bytes) -> str:
    dl = row["deletion"]
    wrong = _wrong(row)
    return (
        f"<section class='image{' wrong' * wrong}' data-confidence='{row['confidence']:.6f}'>"
        f"<h3>{html.escape(Path(row['image']).name)}: predicted "
        f"<span class='predicted'>{html.escape(row['predicted'])}</span> "
        f"({row['confidence']:.2f}) · {_truth(row)}</h3>"
        f"<img alt='{html.escape(row['figure'])}' src='data:image/png;base64,"
        f"{base64.b64encode(png).decode()}'/>"
        + (_distance(row["compare"]) if "compare" in row else "")
        + f"<p>deletion: masking the top 10% drops p by {dl['top_drop']:+.3f}, random 10% by "
        f"{dl['random_drop']:+.3f}{_POINTING[row['pointing_hit']]}</p></section>"
    )


def _compare(c: dict | None) -> str:
    if c is None:
        return ""
    ref, art = html.escape(Path(c["reference"]).name), html.escape(Path(c["artifact"]).name)
    head = (
        f"<h2>Float against {art}</h2><p>{art} and the float model ({ref}) on {c['checked']} "
        f"images: top-1 agreement {c['agreement']:.2%}, max |Δprob| "
        f"{c['max_abs_prob_diff']:.3f}. "
    )
    if c["disagree"]:
        head += (
            f"They disagree on {c['disagree']}; below, the {c['shown']} most apart, each with "
            "both models' heat maps side by side for both predictions.</p>"
        )
    else:
        head += "<b id='none-to-show'>They disagree on none: no image to show.</b></p>"
    layers = "".join(
        f"<tr><td><code>{html.escape(r['tensor'])}</code></td><td>{html.escape(r['op'])}</td>"
        f"<td>{r['error']:.3f}</td><td>{r['rmse_scale']:.3f}</td></tr>"
        for r in c["layers"]
    )
    return head + (
        "<h3>Layers the per-layer error table names for this artifact (worst first)</h3>"
        "<table id='layers'><tr><th>tensor</th><th>op</th><th>error (RMS/std)</th>"
        f"<th>RMSE in steps</th></tr>{layers}</table>"
        if layers
        else "<p>No per-layer error table for this artifact (not an int8 one).</p>"
    )


def _about(s: dict) -> str:
    bg = s["background"]
    hidden = (
        f"background {bg['n']} images from {html.escape(bg['source'])}"
        if bg
        else "hidden regions show a blur of the image"
    )
    per_image = "" if s["seconds_per_image"] is None else f", {s['seconds_per_image']:.2f} s/image"
    parity = f"<br>The artifact {html.escape(s['parity'])}." if s["parity"] else ""
    return (
        f"<p>Model <code>{html.escape(s['model'])}</code>, method <b>{s['method']}</b> "
        f"({s['settings']['max_evals']} evaluations per image{per_image}), {s['n']} images, "
        f"{hidden}.{parity}</p>"
    )


def _page(report: dict, title: str, sections: list[str], cards: str) -> str:
    s = report["summary"]
    skipped = "".join(
        f"<li>{html.escape(r['image'])}: {html.escape(r['reason'])}</li>" for r in report["skipped"]
    )
    body = "\n".join(sections)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>edgecls explain: {html.escape(s["model"])}</title>
<style>{CSS}</style></head>
<body><h1>{title}</h1>
{body}
{"<h2>Skipped</h2><ul>" + skipped + "</ul>" if skipped else ""}
{"<h2>Images</h2>" + cards if cards else ""}
</body></html>
"""


def report_html(report: dict, figures: list[bytes]) -> str:
    s = report["summary"]
    cards = "".join(_card(r, png) for r, png in zip(report["images"], figures, strict=True))
    sections = [_about(s), LEGEND, _compare(s["compare"]), _faithful(s), _classes(s)]
    return _page(report, "SHAP report", sections, cards)


def anomaly_summary(subject, rows: list[dict], seconds: float) -> dict:
    """The SHAP summary's shape where it fits (deletion, pointing game, per class); the score's
    threshold in place of SHAP's settings."""
    hits = [r["pointing_hit"] for r in rows if r["pointing_hit"] is not None]
    spec = subject.anomaly
    return {
        "task": "anomaly",
        "method": "anomaly map",  # the model's own: no SHAP
        "model": subject.model.name,
        "parity": subject.model.parity or None,
        "threshold": spec.threshold,
        "map_size": list(spec.map_size),
        "max_false_reject": spec.max_false_reject,
        "n": len(rows),
        "seconds_per_image": seconds,
        "verdicts": {label: sum(r["predicted"] == label for r in rows) for label in subject.labels},
        "deletion": _deletion(rows),  # drops of the score, not of a probability
        "pointing_game": {"n": len(hits), "hit_rate": _mean(hits)},
        "unlabelled": sum(r["true_label"] is None for r in rows),
        "classes": per_class(rows, subject.labels),
    }


ANOMALY_LEGEND = """<div id="legend"><b>How to read the anomaly maps</b>
<p>The model scores every region of the image; the image's score is the largest of them, and an
image whose score reaches the threshold is an anomaly. Each map is laid over the grey input on one
colour scale for the whole report: dark regions score like good images, bright ones are the most
anomalous; the cyan outline on a map encloses what is above the threshold, and the cyan x marks
the map's peak, where the score comes from. A yellow outline on the input is the ground-truth
defect mask. Wrong verdicts come first, then the scores nearest the threshold.</p></div>"""


def _anomaly_about(s: dict) -> str:
    parity = f"<br>The artifact {html.escape(s['parity'])}." if s["parity"] else ""
    verdicts = ", ".join(f"{n} {html.escape(label)}" for label, n in s["verdicts"].items())
    h, w = s["map_size"]
    return (
        f"<p>Anomaly model <code>{html.escape(s['model'])}</code>, explained by its own "
        f"{h}x{w} anomaly map (no SHAP): {s['n']} images ({verdicts}), threshold "
        f"<b>{s['threshold']:.3f}</b> (set to reject {s['max_false_reject']:.1%} of good images), "
        f"{s['seconds_per_image']:.3f} s per image.{parity}</p>"
    )


def _anomaly_card(row: dict, png: bytes, threshold: float) -> str:
    dl, bad = row["deletion"], row["predicted"] == "anomaly"
    wrong = _wrong(row)
    return (
        f"<section class='image{' wrong' * wrong}' data-score='{row['score']:.6f}'>"
        f"<h3>{html.escape(Path(row['image']).name)}: "
        f"<span class='predicted {'bad' if bad else 'ok'}'>{html.escape(row['predicted'])}</span>"
        f", score <span class='score'>{row['score']:.3f}</span> {'≥' if bad else '<'} "
        f"threshold {threshold:.3f} · {_truth(row)}</h3>"
        f"<img alt='{html.escape(row['figure'])}' src='data:image/png;base64,"
        f"{base64.b64encode(png).decode()}'/>"
        f"<p>deletion: blurring the most anomalous 10% lowers the score by "
        f"{dl['top_drop']:+.3f}, a random 10% by {dl['random_drop']:+.3f}"
        f"{_POINTING[row['pointing_hit']]}</p></section>"
    )


def anomaly_html(report: dict, figures: list[bytes]) -> str:
    s = report["summary"]
    cards = "".join(
        _anomaly_card(r, png, s["threshold"])
        for r, png in zip(report["images"], figures, strict=True)
    )
    faithful = _faithful(s, "score", "the map's most anomalous")
    sections = [_anomaly_about(s), ANOMALY_LEGEND, faithful, _classes(s)]
    return _page(report, "Anomaly map report", sections, cards)
