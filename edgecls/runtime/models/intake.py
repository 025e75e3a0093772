"""A candidate bundle taken in: copied into the state folder (whole or not at all), then checked
there, on the bytes that will run: its manifest and every artifact's sha256, its signature when a
trust key is set, the preprocessing contract and labels of the active model, an artifact that
passed its parity gate, chosen and loaded as the active one was, and warmed up."""

from __future__ import annotations

import os
import re
import shutil
import signal
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from edgecls.bundle.folder import Bundle
from edgecls.durable import StagedFolder
from edgecls.errors import EdgeclsError
from edgecls.runtime.models.state import BundleRef, check_whole
from edgecls.runtime.records import Identity
from edgecls.runtime.select import Choice, choose

MAX_FILES = 256
WARM_UP = 3  # runs before the first shadowed frame: the first ones allocate and compile
FAULT_ENV = "EDGECLS_FAULT_AT"  # tests: SIGKILL this process at a named step (copy, shadow, swap)


def fault_point(name: str) -> None:
    """For the power-cut tests: die here, as a power cut would, when asked by the environment."""
    if os.environ.get(FAULT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass(frozen=True)
class Loaded:
    """A bundle ready to run: checked, its artifact chosen and loaded, and its record identity."""

    ref: BundleRef
    bundle: Bundle
    choice: Choice
    identity: Identity


@dataclass(frozen=True)
class Loader:
    """How the run chose and loaded its model, so a candidate is chosen and loaded the same."""

    backend: str
    artifact: str | None
    runtime: object  # RuntimeOptions
    allow_failed: bool
    trust: Path | None
    roi: tuple[int, int, int, int] | None
    probe: object  # () -> Probe: the frames `auto` measures on

    def load(self, ref: BundleRef, bundle: Bundle, log) -> Loaded:
        artifact = self.artifact if self.artifact in bundle.manifest.files else None
        choice = choose(
            bundle, self.backend, artifact, self.runtime, self.allow_failed, log=log,
            probe=None if artifact else self.probe(),
        )  # fmt: skip
        a = choice.artifact
        identity = Identity.of(bundle, a, self.roi)
        warm_up(choice.predictor, bundle)
        return Loaded(ref, bundle, choice, identity)


def warm_up(predictor, bundle: Bundle) -> None:
    spec = bundle.input_spec
    x = spec.frame_to_input(np.zeros((spec.height, spec.width, 3), np.uint8))[None]
    for _ in range(WARM_UP):
        predictor.predict(x)


def folder_name(ref: BundleRef) -> str:
    """bundles/<name>-<sha12>: one folder per manifest, a name safe in any file system."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", ref.name)[:64] + "-" + ref.manifest_sha256[:12]


def copy_bundle(source: Path, dest: Path) -> None:
    """Every regular file of `source` into `dest`, built aside and renamed whole into place."""
    files = sorted(source.rglob("*"))
    if len(files) > MAX_FILES:
        raise EdgeclsError(f"{source}: over {MAX_FILES} files, not a bundle")
    for path in files:
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            raise EdgeclsError(f"{path}: not a regular file; copy the bundle's files themselves")
    try:
        with StagedFolder(dest) as stage:
            for i, path in enumerate(files):
                target = stage.path / path.relative_to(source)
                if path.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                shutil.copyfile(path, target)
                if i == 0:
                    fault_point("copy")
            stage.commit()
    except OSError as exc:
        raise EdgeclsError(
            f"cannot copy it into {dest.parent} ({exc.strerror or exc}); free space there"
        ) from None


def check_contract(active: Bundle, candidate: Bundle) -> None:
    """Same labels in the same order (outputs, decisions and PLC codes are wired to them), same
    input (the preprocessing contract: size, colours, preprocessing)."""
    if candidate.labels != active.labels:
        raise EdgeclsError(
            f"labels {','.join(candidate.labels)} differ from the active model's "
            f"{','.join(active.labels)} (same labels, same order)"
        )
    a, c = active.input_spec, candidate.input_spec
    if c != a:
        raise EdgeclsError(
            f"input {c.height}x{c.width} {c.preprocessing} differs from the active model's "
            f"{a.height}x{a.width} {a.preprocessing} (the preprocessing contract)"
        )


def take(source: Path, ref: BundleRef, folder: Path, active: Loaded, loader: Loader, log):
    """The candidate, copied, checked and loaded; one EdgeclsError line naming what failed."""
    if ref.manifest_sha256 == active.ref.manifest_sha256:
        raise EdgeclsError("it is the active bundle already")
    dest = folder / folder_name(ref)
    ref = replace(ref, path=str(dest))
    try:
        bundle = check_whole(ref, loader.trust)  # copied before, by an earlier offer
    except EdgeclsError:
        copy_bundle(Path(source), dest)
        bundle = check_whole(ref, loader.trust)
    check_contract(active.bundle, bundle)
    return loader.load(ref, bundle, log)
