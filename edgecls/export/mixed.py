"""int8 within an accuracy budget: when a plain int8 artifact fails its parity gate, repair the
float model (cross-layer equalization, bias correction), try the runtime's other calibration
methods, then keep the worst layers in float one step at a time until the gate passes.

The result is one extra artifact per format (`model_int8_mixed.*`, precision `int8-mixed`) whose
`changes` say what was done; the failed plain int8 stays as it was, so the record is honest. A
model whose int8 passes never comes here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from edgecls.bundle.formats import FORMATS, MIXED, artifact_file
from edgecls.export.context import ExportContext
from edgecls.export.formats import quantizer
from edgecls.export.layer_error import LayerReport

MIXED_FILES = {fmt: artifact_file(fmt, MIXED) for fmt in FORMATS}
BIAS_IMAGES = 32  # calibration images for the bias correction's E[x]

Evaluate = Callable[[Path], object]  # artifact -> parity figures (passed, agreement, drop)


def _figure(parity, name: str):
    """A parity figure from the manifest's ParityFigures or a plain dict."""
    return parity[name] if isinstance(parity, dict) else getattr(parity, name)


@dataclass(frozen=True)
class RepairOptions:
    enabled: bool = True  # --no-repair turns the whole search off
    equalize: bool = True
    bias_correction: bool = True
    calibration_methods: tuple[str, ...] = ("percentile", "entropy")  # where the runtime has them
    max_float_fraction: float = 0.5  # of the conv/dense layers: the search stays below it
    max_steps: int = 8  # mixed-precision steps, each one quantization and one parity check


@dataclass
class Changes:
    """What an int8-mixed artifact differs in from the plain int8 one."""

    equalized: list[tuple[str, str]] = field(default_factory=list)  # (first, second) layers
    bias_corrected: list[str] = field(default_factory=list)
    calibration: str = "minmax"
    float_nodes: list[str] = field(default_factory=list)
    float_layers: int = 0  # conv/dense layers among float_nodes
    weighted_layers: int = 0

    def to_dict(self) -> dict:
        return asdict(self) | {"equalized": [list(p) for p in self.equalized]}

    def summary(self) -> str:
        parts = []
        if self.equalized:
            parts.append(f"cross-layer equalization ({len(self.equalized)} layer pairs)")
        if self.bias_corrected:
            parts.append(f"bias correction ({len(self.bias_corrected)} layers)")
        if self.calibration != "minmax":
            parts.append(f"{self.calibration} calibration")
        if self.float_nodes:
            parts.append(
                f"{self.float_layers} of {self.weighted_layers} conv/dense layers in float "
                f"({len(self.float_nodes)} ops)"
            )
        return "; ".join(parts) or "none"


@dataclass
class Attempt:
    changes: str
    passed: bool
    agreement: float
    accuracy_drop: float
    seconds: float


@dataclass
class RepairResult:
    format: str
    passed: bool
    changes: Changes
    parity: object | None  # of the written artifact; None when nothing beat the plain int8
    attempts: list[Attempt]
    seconds: float

    def to_dict(self) -> dict:
        return {
            "format": self.format,
            "passed": self.passed,
            "changes": self.changes.to_dict(),
            "summary": self.changes.summary(),
            "attempts": [asdict(a) for a in self.attempts],
            "seconds": round(self.seconds, 2),
        }


def layer_errors(fmt: str, ctx: ExportContext, artifact: Path) -> LayerReport:
    """Per-layer error of a plain int8 artifact (every int8 artifact gets this table)."""
    return quantizer(fmt).errors(ctx, artifact)


def _score(parity) -> tuple:
    passed, agreement = _figure(parity, "passed"), _figure(parity, "agreement")
    return (passed, agreement, -_figure(parity, "accuracy_drop"))


class _Search:
    """The state of one format's repair: every try is written, checked and recorded."""

    def __init__(self, fmt: str, evaluate: Evaluate, workdir: Path, ext: str):
        self.fmt, self.evaluate, self.workdir, self.ext = fmt, evaluate, workdir, ext
        self.quantizer = quantizer(fmt)
        self.attempts: list[Attempt] = []
        self.best: tuple | None = None  # (parity, ctx, changes, path)

    def attempt(self, ctx: ExportContext, changes: Changes) -> bool:
        t0 = time.perf_counter()
        path = self.workdir / f"{self.fmt}-try{len(self.attempts)}{self.ext}"
        self.quantizer.write(ctx, path, tuple(changes.float_nodes), changes.calibration)
        parity = self.evaluate(path)
        self.attempts.append(
            Attempt(
                changes.summary(),
                _figure(parity, "passed"),
                _figure(parity, "agreement"),
                _figure(parity, "accuracy_drop"),
                round(time.perf_counter() - t0, 2),
            )
        )
        if self.best is None or _score(parity) > _score(self.best[0]):
            self.best = (parity, ctx, changes, path)
        return bool(_figure(parity, "passed"))

    @property
    def passed(self) -> bool:
        return self.best is not None and bool(_figure(self.best[0], "passed"))


def _repaired_models(ctx: ExportContext, options: RepairOptions):
    """(context, changes) for each repaired float model: equalized, then bias-corrected."""
    from edgecls.export.equalize import correct_bias, equalize

    base, changes = ctx, Changes()
    if options.equalize:
        equalized, pairs = ctx.variant("equalized", lambda: equalize(ctx.model))
        if equalized is not None:
            base, changes = equalized, replace(changes, equalized=pairs)
            yield base, changes
    if options.bias_correction:
        images = ctx.calibration[:BIAS_IMAGES]
        name = "bias-corrected" + ("-equalized" if changes.equalized else "")
        corrected, layers = ctx.variant(name, lambda: correct_bias(base.model, images))
        if corrected is not None:
            yield corrected, replace(changes, bias_corrected=layers)


MIN_LAYER_ERROR = 0.01  # below this a layer's rounding is ordinary: keeping it in float won't help
BAD_SHARE = 0.5  # layers within this share of the worst error count as bad alike


def _search_order(report: LayerReport) -> list:
    """Bad layers upstream first (an early layer's damage shows again in the layers after it, and
    keeping it in float often cures those too), then the rest worst first."""
    top = report.layers[0].error if report.layers else 0.0
    useful = [x for x in report.layers if x.error >= MIN_LAYER_ERROR]
    bad = sorted((x for x in useful if x.error >= BAD_SHARE * top), key=lambda x: x.position)
    return bad + [x for x in useful if x not in bad]


def _keep_in_float(search: _Search, report: LayerReport, options: RepairOptions) -> None:
    """Each step adds the nodes that keep one more tensor in float, as long as fewer than
    `max_float_fraction` of the conv/dense layers end in float."""
    _, ctx, base, _ = search.best
    total, nodes, steps = len(report.weighted), [], 0
    for layer in _search_order(report):
        if steps >= options.max_steps:
            break
        candidate = nodes + [n for n in layer.float_nodes if n not in nodes]
        in_float = sum(n in report.weighted for n in candidate)
        if candidate == nodes or (total and in_float / total >= options.max_float_fraction):
            continue
        nodes, steps = candidate, steps + 1
        changes = replace(
            base, float_nodes=list(nodes), float_layers=in_float, weighted_layers=total
        )
        if search.attempt(ctx, changes):
            return


def repair(
    fmt: str,
    ctx: ExportContext,
    plain: tuple[Path, dict, LayerReport],
    evaluate: Evaluate,
    out: Path,
    options: RepairOptions = RepairOptions(),
) -> RepairResult:
    """Search for an int8 artifact of `fmt` that passes where the plain one (its path, parity
    and per-layer error) failed; a passing one is written to `out`."""
    import shutil

    t0 = time.perf_counter()
    search = _Search(fmt, evaluate, ctx.workdir / "repair", Path(MIXED_FILES[fmt]).suffix)
    search.workdir.mkdir(parents=True, exist_ok=True)
    search.best = (plain[1], ctx, Changes(), plain[0])  # the bar to beat
    for variant, changes in _repaired_models(ctx, options):
        if search.attempt(variant, changes):
            break
    methods = [m for m in search.quantizer.methods[1:] if m in options.calibration_methods]
    for method in methods if not search.passed else []:
        _, best_ctx, best_changes, _ = search.best
        if search.attempt(best_ctx, replace(best_changes, calibration=method)):
            break
    if not search.passed:
        parity, best_ctx, changes, path = search.best
        report = plain[2] if path == plain[0] else search.quantizer.errors(best_ctx, path, ())
        _keep_in_float(search, report, options)
    parity, _, changes, path = search.best
    if search.passed:
        shutil.copyfile(path, out)
    return RepairResult(
        fmt,
        search.passed,
        changes,
        parity if search.passed else None,
        search.attempts,
        time.perf_counter() - t0,
    )
