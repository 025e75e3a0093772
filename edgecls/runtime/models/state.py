"""The board's model state: which bundle is active, which was before it (the rollback), which is
a candidate, and why, in one JSON file written atomically, so a power cut at any moment leaves the
last state whole. At start the active bundle runs if it is still whole and approved, else the
previous one, else the BUNDLE given; each fallback is one log line and a new state.

    {"active": {"path": ..., "name": ..., "manifest_sha256": ...}, "previous": ...,
     "candidate": ..., "why": "...", "time": 1700000000.0,
     "decided": ["<manifest sha256>", "rollout:<id>", ...]}

A bundle is named by its folder and the sha256 of its manifest.json, which lists the sha256 of
every artifact: the manifest's hash and the artifacts' hashes together say the files are the ones
approved."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from edgecls.bundle.folder import Bundle, load_bundle, sha256
from edgecls.bundle.signing import verify_bundle
from edgecls.durable import sweep_leftovers, write_json_atomic
from edgecls.errors import EdgeclsError
from edgecls.runtime.models.config import SwapConfig
from edgecls.schema import read_limited

MAX_STATE_BYTES = 1 << 20
DECIDED_KEPT = 50  # manifests the inbox does not take again (promoted, refused, rolled back)


@dataclass(frozen=True)
class BundleRef:
    """A bundle as the state names it: its folder and its manifest's identity."""

    path: str
    name: str
    manifest_sha256: str

    def to_dict(self) -> dict:
        return {"path": self.path, "name": self.name, "manifest_sha256": self.manifest_sha256}

    @property
    def short(self) -> str:
        return f"{self.name}-{self.manifest_sha256[:12]}"


@dataclass(frozen=True)
class ModelState:
    active: BundleRef | None = None
    previous: BundleRef | None = None
    candidate: BundleRef | None = None
    why: str = ""
    time: float = field(default_factory=time.time)
    decided: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        refs = {k: getattr(self, k) for k in ("active", "previous", "candidate")}
        return {
            **{k: ref.to_dict() if ref else None for k, ref in refs.items()},
            "why": self.why,
            "time": round(self.time, 3),
            "decided": list(self.decided),
        }

    def next(self, why: str, decided: BundleRef | None = None, also: tuple[str, ...] = (),
             **refs) -> ModelState:  # fmt: skip
        """The state after a step, stamped now; `decided` (its manifest's sha256) and `also`
        (a fleet's `rollout:ID`) are remembered (bounded)."""
        seen = self.decided
        for key in (*([decided.manifest_sha256] if decided else []), *also):
            if key not in seen:
                seen = (*seen, key)[-DECIDED_KEPT:]
        return replace(self, **refs, why=why, time=time.time(), decided=seen)


def identify(root: Path) -> BundleRef:
    """The bundle's name (from its validated manifest) and its manifest's sha256."""
    root = Path(root)
    bundle = load_bundle(root)
    return BundleRef(str(root.resolve()), bundle.manifest.name, sha256(root / "manifest.json"))


def check_whole(ref: BundleRef, trust: Path | None) -> Bundle:
    """The bundle as approved, or one EdgeclsError line saying what differs: its manifest, its
    signature (when a trust key is set), the sha256 of every artifact."""
    root = Path(ref.path)
    manifest = root / "manifest.json"
    if not manifest.is_file():
        raise EdgeclsError(f"{root}: missing (no manifest.json)")
    if sha256(manifest) != ref.manifest_sha256:
        raise EdgeclsError(f"{manifest}: changed since it was approved")
    if trust is not None:
        verify_bundle(root, trust)
    bundle = load_bundle(root)
    for artifact in bundle.artifacts:  # every one, not only the one chosen to run
        bundle.verified_path(artifact, allow_failed=True)
    return bundle


def _ref(data, key: str) -> BundleRef | None:
    value = data.get(key)
    if value is None:
        return None
    return BundleRef(str(value["path"]), str(value["name"]), str(value["manifest_sha256"]))


def read_state(path: Path) -> ModelState | None:
    """The state, None where there is none yet; an unreadable one is one line (it is written
    atomically, so only a person's edit or a broken disk makes it so)."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        data = json.loads(read_limited(path, MAX_STATE_BYTES, "a model state file"))
        refs = {k: _ref(data, k) for k in ("active", "previous", "candidate")}
        decided = tuple(str(s) for s in data.get("decided", ()))
        return ModelState(**refs, why=str(data.get("why", "")), time=float(data.get("time", 0)),
                          decided=decided)  # fmt: skip
    except (OSError, ValueError, TypeError, KeyError, AttributeError, EdgeclsError) as exc:
        raise EdgeclsError(
            f"--model-state {path}: not a model state file ({exc}); fix or remove it (the run "
            "then starts from BUNDLE)"
        ) from None


def write_state(path: Path, state: ModelState) -> None:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, state.to_dict())
    except OSError as exc:
        raise EdgeclsError(
            f"--model-state {path}: cannot write ({exc.strerror or exc}); give a writable file"
        ) from None


def sweep_bundles(folder: Path) -> None:
    """What a copy killed mid-way left (`.NAME.partial-PID` of a gone process)."""
    if not folder.is_dir():
        return
    for entry in folder.glob(".*.partial-*"):
        name = entry.name[1:].rpartition(".partial-")[0]
        sweep_leftovers(folder, name, ("partial",))


def resume(config: SwapConfig, given: Path, trust: Path | None, log) -> tuple[Path, ModelState]:
    """The bundle to start with: the state's active if whole, else its previous, else `given`;
    the state written where it changed."""
    sweep_bundles(config.bundles)
    state = read_state(config.state) or ModelState()
    notes = []
    if state.candidate is not None:
        notes.append(f"candidate {state.candidate.short} dropped: restarted before it was decided")
    for which in ("active", "previous"):
        ref = getattr(state, which)
        if ref is None:
            continue
        try:
            check_whole(ref, trust)
        except EdgeclsError as exc:
            notes.append(f"{which} {ref.short} is not whole or approved ({exc})")
            continue
        if which == "active" and not notes:
            return Path(ref.path), state
        state = state.next("; ".join([*notes, f"running {which} {ref.short}"]),
                           active=ref, previous=None if which == "previous" else state.previous,
                           candidate=None)  # fmt: skip
        return _noted(config, state, log)
    try:
        ref = identify(given)
    except EdgeclsError:  # the run's own checks say it, in their words
        return Path(given), state
    why = "; ".join([*notes, f"running BUNDLE {ref.short}"]) if notes else "started from BUNDLE"
    state = state.next(why, active=ref, previous=None, candidate=None)
    if notes:
        return _noted(config, state, log)
    write_state(config.state, state)
    return Path(given), state


def _noted(config: SwapConfig, state: ModelState, log) -> tuple[Path, ModelState]:
    log(f"model: {state.why}")
    write_state(config.state, state)
    return Path(state.active.path), state


def atomic_bytes(path: Path, data: bytes) -> None:
    """A small file of ours (a kept frame), whole or absent."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
