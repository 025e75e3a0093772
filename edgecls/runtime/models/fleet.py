"""This board's part in a fleet (`--group`): the group's rollout and the other boards' states come
in on MQTT (edgecls/fleet.py names the topics and messages); here, on the models thread, a rollout
not yet decided is fetched (fetch.py), handed to the intake as any candidate (checks, signature
under --trust, shadow, the rollout's promotion policy) and decided; this board's model state is
published, retained, after every change.

The canary rule: a rollout with a canary is taken by the canary first; every other board waits
until the canary runs the bundle (its retained state names it active), so a bundle the canary
refused, or rolled back, goes no further. A rollout is decided once (`rollout:ID` in the model
state's `decided` list, whatever the outcome), so a restart or the broker's replay of the
retained rollout does not redo it; a new rollout of the same bundle is tried again."""

from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import replace

from edgecls.errors import EdgeclsError
from edgecls.fleet import Rollout
from edgecls.redact import one_line, redact
from edgecls.runtime.models.fetch import Retry, discard, fetch_bundle, staging

RETRY_SECONDS = (5.0, 60.0)  # an unreachable server: the first wait, doubling up to the last
SHADOW_REPORT_SECONDS = 5.0  # while in shadow, the agreement so far is published this often
WHY_CHARS = 300
HELD = ("refused", "rejected", "rolled back")


def key(rollout: Rollout) -> str:
    return f"rollout:{rollout.rollout}"


def _ref(ref) -> dict | None:
    return {"name": ref.name, "manifest_sha256": ref.manifest_sha256} if ref else None


class Fleet:
    def __init__(self, manager, group: str, board: str, publish, log):
        self.manager, self.group, self.board = manager, group, board
        self.publish, self.log = publish, log  # publish(payload): retained on .../model
        self.lock = threading.Lock()
        self.rollout: Rollout | None = None
        self.boards: dict[str, dict] = {}  # the other boards' last states
        self.working: str | None = None  # the rollout this board took last
        self.phase, self.why = "running", ""
        self.due = math.inf  # monotonic time of the next step on the models thread
        self.delay = RETRY_SECONDS[0]
        self.said: str | None = None  # the last refused rollout message, said once
        manager.fleet = self
        manager.on_state = self.changed

    # --- the MQTT client's reports thread --------------------------------------------------------

    def receive(self, topic: str, payload: str) -> None:
        """A rollout (PREFIX/rollouts/GROUP) or a board's state (PREFIX/boards/B/model)."""
        if topic.endswith("/model"):
            state = _json(payload)
            if not isinstance(state, dict) or state.get("board") in (None, self.board):
                return
            with self.lock:
                self.boards[str(state["board"])] = state
        else:
            try:
                rollout = Rollout.from_dict(json.loads(payload)) if payload else None
            except (EdgeclsError, ValueError) as exc:
                if payload != self.said:
                    self.said = payload
                    self.log(f"warning: fleet: {topic}: {one_line(str(exc))}; ignored")
                return
            if rollout is not None and rollout.group != self.group:
                return
            with self.lock:
                self.rollout = rollout
        self.manager.poke("fleet")

    # --- the models thread ---------------------------------------------------------------------

    def step(self) -> None:
        self.due = math.inf
        with self.lock:
            rollout = self.rollout
        m = self.manager
        if rollout is None or self._decided(rollout):
            return
        if m.key == key(rollout) and m.candidate is not None:  # in shadow: the agreement so far
            self.due = time.monotonic() + SHADOW_REPORT_SECONDS
            return self.changed("shadow")
        held = self._held(rollout)
        if held:
            return self._say(rollout, "waiting", held)
        self._say(rollout, "fetching", f"{rollout.short} from {redact(rollout.url)}")
        try:
            folder = fetch_bundle(rollout, m.config.folder, m.stop, m.log)
        except Retry as exc:
            self.due = time.monotonic() + self.delay
            self.delay = min(self.delay * 2, RETRY_SECONDS[1])
            return self._say(rollout, "fetching", f"{exc} in {self.due - time.monotonic():.0f} s")
        except EdgeclsError as exc:
            discard(staging(m.config.folder, rollout))
            why = f"rollout {rollout.rollout} ({rollout.short}) refused at the fetch: {exc}"
            return m._refuse(None, why, also=(key(rollout),))
        self.delay = RETRY_SECONDS[0]
        if m._intake(folder, f"rollout {rollout.rollout}", self._policy(rollout), key(rollout)):
            self.due = time.monotonic() + SHADOW_REPORT_SECONDS
        discard(folder)  # the intake has its own copy in bundles/

    def _decided(self, rollout: Rollout) -> bool:
        state = self.manager.state
        running = (
            state.active is not None and state.active.manifest_sha256 == rollout.manifest_sha256
        )
        return key(rollout) in state.decided or running

    def _held(self, rollout: Rollout) -> str | None:
        """Why this board waits (the canary has not promoted it yet), or None: go."""
        canary = rollout.canary
        if canary is None or canary == self.board:
            return None
        with self.lock:
            state = self.boards.get(canary) or {}
        active = state.get("active") or {}
        if active.get("manifest_sha256") == rollout.manifest_sha256:
            return None
        if state.get("rollout") == rollout.rollout and state.get("state") in HELD:
            return f"canary {canary} {state['state']} {rollout.short}: not following"
        return f"for canary {canary} to promote {rollout.short}"

    def _policy(self, rollout: Rollout):
        p, config = rollout.policy, self.manager.config
        changes = {"promote_agreement": p.agreement, "promote_latency": p.latency,
                   "shadow_frames": p.frames}  # fmt: skip
        return replace(config, **{k: v for k, v in changes.items() if v is not None})

    def _say(self, rollout: Rollout, phase: str, why: str) -> None:
        if (self.working, self.phase, self.why) == (rollout.rollout, phase, why):
            return  # no news: nothing to publish
        self.working, self.phase, self.why = rollout.rollout, phase, why
        self.log(f"fleet: {phase} {why}")
        self._publish()

    def changed(self, event: str) -> None:
        """After each step the manager wrote (or at start): the board's state, retained."""
        if event:
            self.phase, self.why = event, ""
        self._publish()

    def _publish(self) -> None:
        m = self.manager
        state, stats = m.state, m.stats
        self.publish({
            "board": self.board, "group": self.group, "rollout": self.working,
            "state": self.phase, "active": _ref(state.active), "candidate": _ref(state.candidate),
            "agreement": round(stats.agreement, 4) if stats and stats.frames else None,
            "frames": stats.frames if stats else 0,
            "why": one_line(self.why or state.why)[:WHY_CHARS], "time": round(time.time(), 3),
        })  # fmt: skip


def _json(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return None
