"""The annotation drawn on frames for people (live view, recording, window): the label in red when
it is a trigger label and green otherwise, the FPS, the ROI, the drift state and, when parts are
inspected, the last part's verdict; while a candidate model runs in shadow, its agreement. An
anomaly bundle's frames also get the anomaly map as a heat overlay on what the model saw."""

from __future__ import annotations

import cv2
import numpy as np

from edgecls.runtime.records import PartRecord, Record

RED, GREEN, YELLOW, ORANGE = (0, 0, 255), (0, 200, 0), (0, 255, 255), (0, 140, 255)


def draw(
    record: Record,
    triggers: frozenset[str],
    fps: float,
    drift: dict | None,
    part: PartRecord | None = None,
    shadow: dict | None = None,
) -> np.ndarray:
    """A copy of the record's frame with the overlay; the frame itself is left untouched."""
    out = record.image.copy()
    if record.anomaly_map is not None:
        heat_overlay(out, record.anomaly_map, record.identity.roi)
    scale = max(0.5, out.shape[1] / 900)
    thick = max(1, int(2 * scale))
    label = record.label or "uncertain"
    colour = RED if record.label in triggers else GREEN
    lines = [(_headline(record, label), colour, scale), (f"{fps:.1f} FPS", YELLOW, 0.7)]
    if drift and drift.get("state") not in (None, "warming up"):
        warn = drift.get("state") == "drift"
        lines.append((f"drift {drift['score']:.2f}", ORANGE if warn else YELLOW, 0.7))
    if shadow and shadow.get("state") == "shadow":
        text = f"shadow {shadow['bundle']}: agree {shadow['agreement']:.2f} ({shadow['frames']})"
        lines.append((text, YELLOW, 0.6))
    if part is not None:
        verdict = "FAIL-SAFE" if part.fail_safe else part.label
        text = f"part {part.part}: {'REJECT' if part.reject else 'pass'} {verdict or ''}"
        lines.append((text.strip(), RED if part.reject else GREEN, 0.8))
    for i, (text, col, rel) in enumerate(lines):
        y = int((30 + 30 * i) * scale)
        cv2.putText(
            out, text, (10, y), cv2.FONT_HERSHEY_SIMPLEX, scale * rel, col, thick, cv2.LINE_AA
        )
    roi = record.identity.roi
    if roi:
        x, y, w, h = roi
        cv2.rectangle(out, (x, y), (x + w - 1, y + h - 1), colour, thick)
    return out


def _headline(record: Record, label: str) -> str:
    spec = record.identity.anomaly
    if spec is None or record.score is None:
        return f"{label} {record.confidence:.2f}"
    return f"{label} score {record.score:.2f} (threshold {spec.threshold:.2f})"


HEAT_RANGE = 6.0  # score - threshold units from blue to red: the same colours in every frame


def heat_overlay(image: np.ndarray, heat: np.ndarray, roi=None, alpha: float = 0.4) -> None:
    """Blend an anomaly map (score - threshold units) over the region the model saw, in place:
    red at and above the threshold + HEAT_RANGE / 2, blue far below it."""
    x, y, w, h = roi or (0, 0, image.shape[1], image.shape[0])
    region = image[y : y + h, x : x + w]
    level = np.clip((heat + HEAT_RANGE / 2) / HEAT_RANGE, 0, 1)
    big = cv2.resize((255 * level).astype(np.uint8), (w, h), interpolation=cv2.INTER_LINEAR)
    colours = cv2.applyColorMap(big, cv2.COLORMAP_JET)
    cv2.addWeighted(colours, alpha, region, 1 - alpha, 0, dst=region)
