"""The layout of a folder of collected frames: the contract between the board that writes it
(`edgecls run --collect DIR`, its labelling page) and the workstation that pulls it
(`edgecls data pull`) and trains on it (`DIR/<class>/*` is a training folder as it stands).

    DIR/<class>/NAME.jpg          labelled
    DIR/.edgecls/queue/NAME.jpg   waiting for a person
    DIR/.edgecls/unclear/NAME.jpg a person could not tell
    DIR/.edgecls/meta/NAME.json   every frame's sidecar: the record, why it was kept, the bundle
    DIR/.edgecls/full/NAME.jpg    the whole camera frame, where the model saw only an --roi

Only names of this pattern are ever moved or deleted by edgecls.
"""

from __future__ import annotations

import re

HIDDEN = ".edgecls"
QUEUE, UNCLEAR, META, FULL = "queue", "unclear", "meta", "full"
NAME_PATTERN = re.compile(r"^c-\d{8}T\d{6}\.\d{6}Z-f\d{8,}(-\d+)?\.jpg$")
