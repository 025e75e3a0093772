"""The annotation drawn on frames for people (live view, recording, window): the label in red when
it is a trigger label and green otherwise, the FPS, the ROI, the drift state and, when parts are
inspected, the last part's verdict; while a candidate model runs in shadow, its agreement."""

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
    scale = max(0.5, out.shape[1] / 900)
    thick = max(1, int(2 * scale))
    label = record.label or "uncertain"
    colour = RED if record.label in triggers else GREEN
    lines = [(f"{label} {record.confidence:.2f}", colour, scale), (f"{fps:.1f} FPS", YELLOW, 0.7)]
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
