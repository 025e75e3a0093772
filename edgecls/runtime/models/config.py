"""The options of model swaps (`--model-state`, `--inbox`, the shadow and promotion policy)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from edgecls.errors import EdgeclsError

STATE_FILE = "model-state.json"


def state_folder() -> Path:
    """systemd's StateDirectory= for the service, else the user's state folder (as part ids)."""
    if os.environ.get("STATE_DIRECTORY"):
        return Path(os.environ["STATE_DIRECTORY"])
    base = os.environ.get("XDG_STATE_HOME")
    return (Path(base) if base else Path.home() / ".local" / "state") / "edgecls"


@dataclass(frozen=True)
class SwapConfig:
    """Where the model state lives, where candidates come from, and when one is promoted."""

    state: Path  # the state file; candidates are kept in bundles/ beside it
    inbox: Path | None = None
    shadow_frames: int = 200
    promote_agreement: float = 0.95  # top-1 agreement with the active model, at least
    promote_latency: float = 1.5  # candidate p90 over the active's p90, at most
    shadow_share: float = 0.05  # of the wall time, the most the candidate computes in shadow
    keep_disagreements: int = 50  # frames kept (JPEG + JSON) where the two disagree
    settle_seconds: float = 1.0  # an inbox folder is taken once unchanged this long

    def __post_init__(self):
        checks = (
            ("--shadow-frames", self.shadow_frames >= 1, "must be at least 1"),
            ("--promote-agreement", 0.0 <= self.promote_agreement <= 1.0, "must be within 0..1"),
            ("--promote-latency", self.promote_latency > 0, "must be > 0"),
            ("--shadow-share", 0.0 < self.shadow_share <= 1.0, "must be within 0..1 (not 0)"),
        )
        for option, ok, why in checks:
            if not ok:
                raise EdgeclsError(f"{option} {why}")

    @property
    def folder(self) -> Path:
        return self.state.parent

    @property
    def bundles(self) -> Path:
        return self.folder / "bundles"

    @property
    def disagreements(self) -> Path:
        return self.folder / "shadow"


def swap_config(state: Path | None, inbox: Path | None, on: bool = False,
                **policy) -> SwapConfig | None:  # fmt: skip
    """Model swaps are on with --model-state, --inbox or `on` (a fleet's --group; the state file
    then defaults to the state folder); off, the run is as it always was."""
    if state is None and inbox is None and not on:
        return None
    return SwapConfig(Path(state) if state else state_folder() / STATE_FILE, inbox, **policy)
