"""The run's counters in Prometheus text exposition format (version 0.0.4), written by hand: the
format is a few lines, and the board needs no client library for it."""

from __future__ import annotations

import time
from collections.abc import Sequence

from edgecls.runtime.records import Identity, LatencyStats, PartCounts, Summary


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**kv) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in kv.items()) + "}" if kv else ""


def _family(name: str, kind: str, help: str, samples: list[tuple[str, dict, float]]) -> list[str]:
    lines = [f"# HELP {name} {help}", f"# TYPE {name} {kind}"]
    lines += [f"{name}{suffix}{_labels(**labels)} {value:g}" for suffix, labels, value in samples]
    return lines


COUNTERS = (
    ("frames", "frames", "Frames read from the source."),
    ("classified", "classified", "Frames classified."),
    ("corrupt_frames", "corrupt_frames", "Corrupt frames skipped."),
    ("reconnects", "reconnects", "Times the live source was reopened."),
    ("skipped_frames", "skipped_frames", "Live frames replaced by newer ones before classifying."),
    ("decisions", "decisions", "Decisions made by the trigger rule."),
    ("saved", "saved_frames", "Frames saved to --save-dir."),
    ("collected", "collected_frames", "Frames kept for labelling in --collect."),
)
PER_OUTPUT = (
    ("outputs_dropped", "Events an output dropped (full queue, broker queue, disk reserve)."),
    ("output_errors", "Events an output failed to write."),
)
DRIFT = (
    ("score", "Drift score (1.0 = the warning threshold by default)."),
    ("psi", "Population stability index of the confidence."),
    ("input_shift", "Largest input feature shift, in reference spreads."),
)


def prometheus_text(
    summary: Summary, identity: Identity, fps: float, extra: Sequence[tuple[str, str, float]] = ()
) -> str:
    """The run's families, and `extra` counters (name, help, value) an output keeps itself (the
    HTTP server's clients dropped and refused)."""
    d = summary.to_dict()
    out: list[str] = []
    for key, name, help in COUNTERS:
        out += _family(f"edgecls_{name}_total", "counter", help, [("", {}, d[key])])
    for name, help, value in extra:
        out += _family(name, "counter", help, [("", {}, value)])
    labels = [("", {"label": k}, v) for k, v in sorted(d["labels"].items())]
    out += _family("edgecls_label_frames_total", "counter", "Frames per label.", labels)
    for key, help in PER_OUTPUT:
        per = [("", {"output": k}, v) for k, v in sorted(d[key].items())]
        out += _family(f"edgecls_{key}_total", "counter", help, per)
    out += _histogram(
        "edgecls_inference_latency_milliseconds", "Model latency per frame.", summary.latency
    )
    if summary.parts is not None:
        out += _parts(summary.parts)
    if summary.shadow or summary.swaps:
        out += _shadow(summary)
    out += _gauges(summary, identity, fps)
    return "\n".join(out) + "\n"


def _histogram(name: str, help: str, lat: LatencyStats) -> list[str]:
    samples = [("_bucket", {"le": le}, n) for le, n in lat.cumulative_buckets()]
    samples += [("_sum", {}, lat.total_ms), ("_count", {}, lat.count)]
    return _family(name, "histogram", help, samples)


PART_COUNTERS = (
    ("answered", "parts", "Parts answered (each trigger gets one verdict)."),
    ("rejected", "parts_rejected", "Parts answered reject."),
    ("fail_safe", "parts_fail_safe", "Parts given the fail-safe verdict (no verdict in time)."),
    ("overflow", "parts_overflow", "Triggers beyond --part-queue, answered fail-safe at once."),
    ("late", "parts_late", "Verdicts the model reached after the window had answered."),
)


def _parts(counts: PartCounts) -> list[str]:
    d = counts.to_dict()
    out = []
    for key, name, help in PART_COUNTERS:
        out += _family(f"edgecls_{name}_total", "counter", help, [("", {}, d[key])])
    labels = [("", {"label": k}, v) for k, v in sorted(d["labels"].items())]
    out += _family("edgecls_part_label_total", "counter", "Parts per verdict label.", labels)
    with counts.lock:
        out += _histogram(
            "edgecls_part_latency_milliseconds", "Part trigger to verdict.", counts.latency
        )
    return out


def _shadow(summary: Summary) -> list[str]:
    """The last candidate's shadow run (model swaps): how far, how alike, how fast, what it saw."""
    out = _family(
        "edgecls_model_swaps_total", "counter", "Models swapped in while running.",
        [("", {}, summary.swaps)],
    )  # fmt: skip
    s = summary.shadow
    if not s:
        return out
    info = {"bundle": s["bundle"], "state": s["state"]}
    out += _family("edgecls_shadow_info", "gauge", "The candidate in (or last in) shadow.",
                   [("", info, 1)])  # fmt: skip
    out += _family("edgecls_shadow_frames", "gauge", "Frames the candidate classified in shadow.",
                   [("", {}, s["frames"])])  # fmt: skip
    out += _family(
        "edgecls_shadow_agreement", "gauge", "Top-1 agreement of the candidate with the active "
        "model over its shadow frames.", [("", {}, s["agreement"])],
    )  # fmt: skip
    latency = [
        ("", {"model": model, "quantile": f"0.{q[1:]}"}, value)
        for model, qs in s["latency_ms"].items()
        for q, value in qs.items()
    ]
    out += _family(
        "edgecls_shadow_latency_milliseconds", "gauge", "Latency over the shadow frames, of the "
        "candidate and of the active model.", latency,
    )  # fmt: skip
    labels = [("", {"label": k}, v) for k, v in sorted(s["labels"].items())]
    out += _family("edgecls_shadow_label_frames", "gauge", "The candidate's labels in shadow.",
                   labels)  # fmt: skip
    return out


def _gauges(summary: Summary, identity: Identity, fps: float) -> list[str]:
    since = time.monotonic() - summary.last_frame if summary.last_frame is not None else -1
    drift = summary.drift or {}
    out = _family(
        "edgecls_fps", "gauge", "Classified frames per second since the start.", [("", {}, fps)]
    )
    out += _family(
        "edgecls_seconds_since_frame", "gauge", "Seconds since the last frame (-1: none yet).",
        [("", {}, round(since, 3))],
    )  # fmt: skip
    for key, help in DRIFT:
        out += _family(f"edgecls_drift_{key}", "gauge", help, [("", {}, drift.get(key, 0.0))])
    warning = 1 if drift.get("state") == "drift" else 0
    out += _family(
        "edgecls_drift_warning", "gauge", "1 while the drift score is over its threshold.",
        [("", {}, warning)],
    )  # fmt: skip
    model = {"bundle": identity.bundle, "artifact": identity.artifact, "sha256": identity.sha256}
    out += _family("edgecls_model_info", "gauge", "The model running.", [("", model, 1)])
    return out
