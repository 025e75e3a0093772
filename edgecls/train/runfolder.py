"""A run folder is written whole or not at all.

Training writes into a hidden staging folder beside `--out`; only a finished run is fsynced and
swapped in by rename, so a run that fails (unknown model, no network, a stop signal before the
first epoch ends, a full disk) leaves an existing run folder exactly as it was, and no staging
folder: one a killed run left (`.NAME.partial-PID`) is removed by the next run of that name. A
non-empty `--out` that is not an edgecls run folder, or one holding files edgecls did not write,
is refused: nothing edgecls did not create is deleted."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

from edgecls.durable import StagedFolder, check_replaceable
from edgecls.errors import EdgeclsError

# Everything `edgecls train` writes into a run folder; anything else there is the user's.
RUN_ENTRIES = frozenset(
    {
        "model.keras",
        "labels.txt",
        "config.json",
        "history.csv",
        "curves.png",
        "metrics.json",
        "classification_report.txt",
        "confusion_matrix.png",
        "predictions.csv",
        "skipped.txt",
        "backbone.weights.h5",
        "scores.png",  # an anomaly run's score histogram and ROC curve
        "roc.png",
    }
)
_USER_FIXABLE = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT, errno.EPERM}
SCRATCH = ".scratch"  # inside the staging folder: disk cache files, removed before the swap


def is_run_folder(path: Path) -> bool:
    try:
        return "edgecls_version" in json.loads((path / "config.json").read_text())
    except (OSError, ValueError, TypeError):
        return False


def check_out(out: Path) -> None:
    """Refuse, in one line, an --out that training could only fill by mixing or deleting."""
    check_replaceable(out, "an edgecls run folder", is_run_folder, RUN_ENTRIES.__contains__)


class RunFolder(StagedFolder):
    """`with RunFolder(out) as run:` write into `run.staging`, call `commit()` when complete; a
    StagedFolder with a scratch folder inside (removed before the swap) and the run's wording."""

    def __init__(self, out: Path):
        check_out(out)
        super().__init__(out)

    @property
    def staging(self) -> Path:
        return self.path

    @property
    def scratch(self) -> Path:
        return self.path / SCRATCH

    def __enter__(self) -> RunFolder:
        try:
            super().__enter__()
            self.scratch.mkdir()
        except OSError as exc:
            raise EdgeclsError(f"--out {self.out}: cannot write there ({exc.strerror})") from None
        return self

    def commit(self) -> Path:
        shutil.rmtree(self.scratch, ignore_errors=True)
        check_out(self.out)  # still ours to replace: nobody wrote into it meanwhile
        return super().commit()

    def __exit__(self, exc_type, exc, tb) -> None:
        super().__exit__(exc_type, exc, tb)
        if isinstance(exc, OSError) and exc.errno in _USER_FIXABLE:
            raise EdgeclsError(
                f"--out {self.out}: could not write the run ({exc.strerror}); "
                f"{'it is as it was' if self.out.exists() else 'nothing was written'}"
            ) from None
