"""A bundle on the device: its validated manifest, and artifacts that load only when their bytes
are the ones parity proved and their own metadata agrees with the manifest."""

from __future__ import annotations

import hashlib
import platform
from dataclasses import dataclass
from pathlib import Path

from edgecls.bundle.formats import FORMATS
from edgecls.bundle.manifest import Artifact, Manifest, check_embedded, load_manifest
from edgecls.bundle.preprocess import InputSpec
from edgecls.errors import EdgeclsError
from edgecls.schema import FileRefused, open_regular

MAX_ARTIFACT_BYTES = 1 << 40  # hashing is streamed: only a FIFO or a device must be kept out


def size_and_sha256(path: Path) -> tuple[int, str]:
    """(bytes, sha256) of a file, as a transfer checks it against what was listed."""
    return Path(path).stat().st_size, sha256(path)


def sha256(path: Path) -> str:
    """The file's sha256, read in 1 MB blocks up to the size it had when opened; a FIFO or a
    device (which would block or never end) is one line naming it."""
    h = hashlib.sha256()
    try:
        with open_regular(path, MAX_ARTIFACT_BYTES, "a model file") as (f, size):
            while size > 0 and (block := f.read(min(size, 1 << 20))):
                h.update(block)
                size -= len(block)
    except FileRefused as exc:
        raise EdgeclsError(f"{path}: {exc}") from None
    return h.hexdigest()


@dataclass(frozen=True)
class Bundle:
    root: Path
    manifest: Manifest

    @property
    def labels(self) -> list[str]:
        return list(self.manifest.labels)

    @property
    def input_spec(self) -> InputSpec:
        return self.manifest.input

    @property
    def artifacts(self) -> tuple[Artifact, ...]:
        return self.manifest.artifacts

    def artifact(self, file: str) -> Artifact:
        """By file name, or by a path to it inside this bundle (`export/NAME/model_int8.tflite`)."""
        given = Path(file)
        if given.parent != Path(".") and given.parent.resolve() != self.root.resolve():
            raise EdgeclsError(
                f"--artifact {file}: not in the bundle {self.root}; give one of its files "
                f"({', '.join(self.manifest.files)})"
            )
        return self.manifest.artifact(given.name)

    def float_reference(self) -> Artifact:
        """The float32 artifact that stands for the float model where TensorFlow is not (the
        format table's first: TFLite); export proved it equal to the Keras model."""
        floats = sorted(
            (a for a in self.artifacts if a.precision == "float32"),
            key=lambda a: FORMATS.names.index(a.format),
        )
        if not floats:
            raise EdgeclsError(f"{self.root}: no float32 artifact to stand for the float model")
        return floats[0]

    def verified_path(self, artifact: Artifact, allow_failed: bool = False) -> Path:
        """The artifact's path, only if it lies in the bundle and its bytes are the ones the
        parity check proved (and, unless allowed, it passed that check)."""
        path = self.root / artifact.file
        if path.is_symlink() or not path.resolve().is_relative_to(self.root.resolve()):
            raise EdgeclsError(f"{path}: points outside the bundle folder; copy the whole bundle")
        if not path.exists():
            raise EdgeclsError(f"{path}: listed in the manifest but missing; copy the whole bundle")
        if not path.is_file():  # a FIFO would block the hash, a device never end it
            raise EdgeclsError(f"{path}: not a regular file; copy the whole bundle")
        # the size first: a file of another size is not worth hashing (a 2 GB stranger)
        if path.stat().st_size != artifact.bytes or sha256(path) != artifact.sha256:
            raise EdgeclsError(
                f"{path}: sha256 differs from the manifest (corrupt or altered copy); "
                "copy the bundle again"
            )
        if not artifact.passed and not allow_failed:
            raise EdgeclsError(
                f"{path}: failed its parity gate at export "
                f"({'; '.join(artifact.parity.failures)}); "
                "re-export, or pass --allow-failed to run it anyway"
            )
        return path

    def load(self, artifact: Artifact, options=None, allow_failed: bool = False):
        """A Predictor for the artifact, refused before the first frame if it is not the model
        the manifest describes (labels, input size and preprocessing, output count)."""
        from edgecls.bundle.backends import RuntimeOptions, load_predictor

        path = self.verified_path(artifact, allow_failed)
        predictor = load_predictor(path, options or RuntimeOptions())
        check_embedded(self.root, artifact, predictor.metadata, self.manifest)
        if tuple(predictor.input_size) != self.input_spec.size:
            raise EdgeclsError(
                f"{path}: takes {predictor.input_size[0]}x{predictor.input_size[1]} images but "
                f"the manifest says {self.input_spec.height}x{self.input_spec.width}; re-export"
            )
        return predictor

    def unchecked_here(self) -> str | None:
        """Why this machine's results are unproven, if they are: kernels differ between
        architectures, so a parity check elsewhere does not carry over by itself."""
        here = platform.machine()
        parity = self.manifest.parity
        if here in parity.checked_on:
            return None
        failed = [c for c in parity.device_checks if c.architecture == here and not c.passed]
        if failed:
            return (
                f"parity FAILED on {here} ({failed[-1].board}, {failed[-1].date}); "
                f"see {self.root / 'parity.md'}"
            )
        return (
            f"parity was checked on {', '.join(parity.checked_on) or 'no machine'}, not on "
            f"{here}; run `edgecls parity {self.root} --data DIR --record` here to prove it"
        )


def load_bundle(root: Path) -> Bundle:
    root = Path(root)
    return Bundle(root, load_manifest(root))
