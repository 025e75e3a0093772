"""The figure a person looks at per image: the input, its heat maps on one colour scale, and the
probabilities of each model explained; for an anomaly model, its own map, its peak and verdict."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

CMAP = "bwr"  # blue: pushes the class down, white: nothing, red: pushes it up (the legend's)


@dataclass(frozen=True)
class Panel:
    title: str
    attribution: np.ndarray  # (H, W)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def _outline(ax, image: np.ndarray, mask_path) -> None:
    """The ground-truth defect mask as a yellow outline on the input."""
    import cv2

    m = cv2.resize(
        cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE),
        image.shape[1::-1],
        interpolation=cv2.INTER_NEAREST,
    )
    ax.contour(m > 0, levels=[0.5], colors="yellow", linewidths=0.8)


def _bars(ax, bars: dict[str, np.ndarray], labels: list[str]) -> None:
    """Probabilities per class, one bar per model, the first model's most likely class on top."""
    order = np.argsort(next(iter(bars.values())))
    height = 0.8 / len(bars)
    for j, (name, probs) in enumerate(bars.items()):
        offset = (len(bars) - 1 - j) * height
        ax.barh(np.arange(len(order)) + offset, probs[order], height, label=name)
    ax.set_yticks(np.arange(len(order)) + 0.4 - height / 2, [labels[i] for i in order])
    ax.set_xlim(0, 1)
    ax.set_title("probabilities")
    if len(bars) > 1:
        ax.legend(fontsize=7, loc="lower right")


def figure(image, panels: list[Panel], bars: dict[str, np.ndarray], labels, mask_path) -> bytes:
    """PNG: input | one heat map per panel, all on one colour scale | probabilities."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(panels)
    fig, axes = plt.subplots(1, n + 2, figsize=(3.0 * (n + 2), 3.2))
    axes[0].imshow(image.astype(np.uint8))
    axes[0].set_title("input")
    if mask_path is not None:
        _outline(axes[0], image, mask_path)
    maps = np.stack([p.attribution for p in panels])
    limit = float(np.percentile(np.abs(maps), 99.5)) or 1.0
    grey = image.mean(axis=2)
    cmap = plt.get_cmap(CMAP)
    for ax, panel in zip(axes[1 : n + 1], panels, strict=True):
        ax.imshow(grey, cmap="gray", vmin=0, vmax=255)
        overlay = cmap(np.clip(panel.attribution / limit, -1, 1) * 0.5 + 0.5)
        overlay[..., 3] = np.clip(np.abs(panel.attribution) / limit, 0, 1) * 0.9
        ax.imshow(overlay)  # only where there is attribution: the image shows through
        ax.set_title(panel.title, fontsize=9)
    _bars(axes[-1], bars, labels)
    for ax in axes[:-1]:
        ax.axis("off")
    fig.tight_layout()
    data = _png(fig)
    plt.close(fig)
    return data


ANOMALY_CMAP = "inferno"  # dark: the good images' level, bright: the most anomalous


def _heat(ax, image: np.ndarray, heat: np.ndarray, threshold: float, limits) -> None:
    """The map (score units) over the grey input, more opaque where more anomalous, with the
    region above the threshold outlined in cyan and a colour bar marking the threshold."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import Normalize

    norm, cmap = Normalize(*limits, clip=True), plt.get_cmap(ANOMALY_CMAP)
    ax.imshow(image.mean(axis=2), cmap="gray", vmin=0, vmax=255)
    overlay = cmap(norm(heat))
    overlay[..., 3] = 0.15 + 0.75 * norm(heat)
    ax.imshow(overlay)
    if heat.min() < threshold <= heat.max():
        ax.contour(heat, levels=[threshold], colors="cyan", linewidths=0.8)
    bar = ax.figure.colorbar(
        plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, fraction=0.046, pad=0.04
    )
    bar.ax.axhline(threshold, color="cyan", linewidth=1.5)
    bar.ax.tick_params(labelsize=7)
    bar.set_label("map (cyan: threshold)", fontsize=7)


def anomaly_figure(image, heat, row: dict, threshold: float, limits, mask_path) -> bytes:
    """PNG: input (defect mask outlined) | anomaly map over it, its peak marked; the verdict,
    score and threshold in the title. `heat` is in score units, on the report's one scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(6.6, 3.4))
    axes[0].imshow(image.astype(np.uint8))
    axes[0].set_title("input", fontsize=9)
    if mask_path is not None:
        _outline(axes[0], image, mask_path)
    _heat(axes[1], image, heat, threshold, limits)
    y, x = row["peak"]
    for ax in axes:  # where the score comes from, on both: is it on the defect?
        ax.plot(x, y, marker="x", color="cyan", markersize=9, markeredgewidth=2)
        ax.axis("off")
    axes[1].set_title("anomaly map, peak x", fontsize=9)
    sign = "≥" if row["predicted"] == "anomaly" else "<"
    fig.suptitle(
        f"{row['predicted']}: score {row['score']:.3f} {sign} threshold {threshold:.3f}",
        fontsize=10,
        color="#b00" if row["predicted"] == "anomaly" else "#186a18",
    )
    fig.tight_layout()
    data = _png(fig)
    plt.close(fig)
    return data
