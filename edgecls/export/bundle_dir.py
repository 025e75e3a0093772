"""Where a bundle is written: never over a folder edgecls did not make, never half.

The bundle is assembled in a hidden sibling folder, every file fsynced, then swapped in with two
renames; the bundle it replaces (an edgecls bundle, checked) is removed only after that."""

from __future__ import annotations

import re
from pathlib import Path

from edgecls.durable import check_replaceable, refuse_working_folder
from edgecls.errors import EdgeclsError
from edgecls.schema import load_json

# What an edgecls bundle folder holds; anything else in it is the user's and stops the export.
_BUNDLE_FILE = re.compile(
    r"(model_[\w-]+\.(tflite|onnx)|labels\.txt|manifest\.json|parity\.md|[\w-]+\.json"
    r"|\.[\w.-]+\.tmp-\d+)"
)


def _is_bundle(folder: Path) -> bool:
    try:
        manifest = load_json(folder / "manifest.json")
    except EdgeclsError:  # absent, not a file, not JSON: not a bundle of ours
        return False
    return isinstance(manifest, dict) and "artifacts" in manifest and "schema_version" in manifest


def check_destination(out: Path, model: Path) -> None:
    """Refuse an --out that would destroy or mix what edgecls did not write: a file, the run
    folder (or any folder holding the model), a non-empty folder that is not an edgecls bundle."""
    out = Path(out)
    refuse_working_folder(out)  # first: `--out .` in the run folder holds the model too
    if out.resolve() in Path(model).resolve().parents:
        raise EdgeclsError(
            f"--out {out}: holds the model being exported; give a new folder, e.g. export/NAME"
        )
    check_replaceable(out, "an edgecls bundle", _is_bundle, _BUNDLE_FILE.fullmatch)
