"""The board's model as state: the active, previous and candidate bundles in one file written
atomically (state.py), candidates taken while the line runs, checked, shadowed on live frames and
promoted or refused (manager.py, shadow.py), from a folder (inbox.py), POST /deploy or MQTT."""

from edgecls.runtime.models.config import SwapConfig

__all__ = ["SwapConfig"]
