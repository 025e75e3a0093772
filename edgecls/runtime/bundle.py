"""Reading a bundle on the device: the manifest, sha256 checks, and which artifacts may run."""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import dataclass
from pathlib import Path

from edgecls.errors import EdgeclsError
from edgecls.runtime.preprocess import InputSpec

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class Bundle:
    root: Path
    manifest: dict

    @property
    def labels(self) -> list[str]:
        return list(self.manifest["labels"])

    @property
    def input_spec(self) -> InputSpec:
        return InputSpec.from_dict(self.manifest["input"])

    @property
    def artifacts(self) -> list[dict]:
        return list(self.manifest["artifacts"])

    def artifact(self, file: str) -> dict:
        for a in self.artifacts:
            if a["file"] == file or Path(file).name == a["file"]:
                return a
        raise EdgeclsError(
            f"{self.root}: no artifact {file!r} in the manifest "
            f"(has: {', '.join(a['file'] for a in self.artifacts)})"
        )

    def verified_path(self, artifact: dict, allow_failed: bool = False) -> Path:
        """The artifact's path, only if its bytes are the ones the parity check proved."""
        path = self.root / artifact["file"]
        if not path.is_file():
            raise EdgeclsError(f"{path}: listed in the manifest but missing; copy the whole bundle")
        if sha256(path) != artifact["sha256"]:
            raise EdgeclsError(
                f"{path}: sha256 differs from the manifest (corrupt or altered copy); "
                "copy the bundle again"
            )
        if not artifact.get("parity", {}).get("passed", False) and not allow_failed:
            raise EdgeclsError(
                f"{path}: failed its parity gate at export "
                f"({'; '.join(artifact['parity'].get('failures', []))}); "
                "re-export, or pass --allow-failed to run it anyway"
            )
        return path

    def unchecked_here(self) -> str | None:
        """Why this machine's results are unproven, if they are: kernels differ between
        architectures, so a parity check elsewhere does not carry over by itself."""
        here = platform.machine()
        parity = self.manifest.get("parity", {})
        checked = parity.get("checked_on", [])
        if here in checked:
            return None
        failed = [
            c
            for c in parity.get("device_checks", [])
            if c["architecture"] == here and not c["passed"]
        ]
        if failed:
            return (
                f"parity FAILED on {here} ({failed[-1]['board']}, {failed[-1]['date']}); "
                f"see {self.root / 'parity.md'}"
            )
        return (
            f"parity was checked on {', '.join(checked) or 'no machine'}, not on {here}; run "
            f"`edgecls parity {self.root} --data DIR --record` here to prove it"
        )


def load_bundle(root: Path) -> Bundle:
    root = Path(root)
    path = root / MANIFEST
    if not path.is_file():
        raise EdgeclsError(f"{root}: not a bundle (no {MANIFEST}); make one with `edgecls export`")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EdgeclsError(f"{path}: not valid JSON ({exc})") from None
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise EdgeclsError(
            f"{path}: schema version {version} is not supported "
            f"(this edgecls reads {SCHEMA_VERSION}); upgrade edgecls on this machine"
        )
    for key in ("labels", "input", "artifacts"):
        if key not in manifest:
            raise EdgeclsError(f"{path}: manifest has no {key!r}")
    return Bundle(root, manifest)
