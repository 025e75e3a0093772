"""The model of a running line changes here, on one thread of its own (`models`): candidates come
in (--inbox, POST /deploy, MQTT PREFIX/deploy, a fleet's rollout: fleet.py), are taken in and
checked (intake.py), run in shadow on the frames the loop hands over newest-wins, and are
promoted or refused; operators promote, reject or roll back. The loop's only parts are two cheap
calls a frame: `offer` (while a candidate is in shadow) and, at the top of an iteration, the swap
of its classifier when one is pending, so a swap falls between two frames. Every step is written
to the state file before it takes effect, so a restart at any moment runs a whole, approved
bundle."""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import replace
from pathlib import Path

from edgecls.errors import EdgeclsError
from edgecls.redact import one_line
from edgecls.runtime.models.config import SwapConfig
from edgecls.runtime.models.inbox import Inbox
from edgecls.runtime.models.intake import Loaded, Loader, fault_point, take
from edgecls.runtime.models.shadow import Disagreements, ShadowStats, top
from edgecls.runtime.models.state import ModelState, check_whole, identify, write_state
from edgecls.runtime.records import LatencyStats, Record, Summary

POLL_SECONDS = 0.5  # the inbox is looked at this often
ACTIONS = ("promote", "rollback", "reject")
SWAP_WAIT_SECONDS = 5.0  # a command waits this long for the loop to take a pending swap
FAULT_SHADOW_FRAMES = 5  # the "shadow" fault point: this many frames into a shadow
# a promoted model's latency budget on the line: the policy's factor times the slower of the two
# models as the shadow measured them, plus this much for the scheduler's jitter, which for a
# sub-millisecond model is larger than the model (a p90 of 0.6 ms and then 1.1 ms on a busy
# 2-core machine, with nothing wrong)
JITTER_MS = 1.0


class Probation:
    """The latencies of a promoted model's first frames on the line (the loop's thread adds,
    under the manager's lock), against the budget its promotion allowed."""

    def __init__(self, bundle: str, budget_ms: float, frames: int):
        self.bundle, self.budget_ms, self.frames = bundle, budget_ms, frames
        self.latency = LatencyStats()

    def add(self, latency_ms: float) -> bool:
        """Whether the window is full."""
        self.latency.add(latency_ms)
        return self.latency.count >= self.frames


class ModelManager:
    def __init__(self, config: SwapConfig, state: ModelState, active: Loaded, loader: Loader,
                 summary: Summary, log, stop: threading.Event):  # fmt: skip
        self.config, self.state, self.active, self.loader = config, state, active, loader
        self.summary, self.log, self.stop = summary, log, stop
        self.cond = threading.Condition()
        self.commands: deque = deque()
        self.slot: tuple | None = None  # the newest frame for the shadow: (record, input, image)
        self.candidate: Loaded | None = None  # in shadow; the loop offers frames while set
        self.pending: Loaded | None = None  # promoted or rolled back to: the loop swaps it in
        self.retired: Loaded | None = None  # swapped out: released on this thread, not the loop's
        self.probation: Probation | None = None  # a promoted model's first frames on the line
        self.budget: Probation | None = None  # the probation the pending promotion starts
        self.listening = False  # the loop offers frames: a candidate in shadow, or a probation
        self.stats: ShadowStats | None = None
        self.kept: Disagreements | None = None
        self.inbox = Inbox(config.inbox, config.settle_seconds) if config.inbox else None
        self.next_shadow = self.next_poll = 0.0
        self.closing = False
        self.on_swap = lambda loaded: None  # the run's: the view's and the station's identity
        self.policy = config  # the candidate's: a rollout may set its own
        self.key: str | None = None  # the candidate's rollout (`rollout:ID`), decided with it
        self.fleet = None  # with --group: the board's part in a fleet (fleet.py)
        self.on_state = lambda event: None  # the fleet's: told after each step is written
        self.thread = threading.Thread(target=self._work, name="models", daemon=True)

    # --- the loop's side: quick, never waits on the model work ---------------------------------

    def offer(self, record: Record, model_input, image) -> None:
        with self.cond:
            if self.probation is not None and self.probation.add(record.latency_ms):
                self.commands.append(("probation", self.probation, ""))
                self.probation = None
                self._listen()
            if self.candidate is not None:
                self.slot = (record, model_input, image)
            self.cond.notify()

    def _listen(self) -> None:
        """Whether the loop offers its frames (set under the lock)."""
        self.listening = self.candidate is not None or self.probation is not None

    def swap_into(self, classify):
        """The loop's classifier with the pending model in it (called between two frames)."""
        with self.cond:
            loaded, self.pending = self.pending, None
            if loaded is None:
                return classify
            self.retired, self.active = self.active, loaded
            self.probation, self.budget = self.budget, None
            self._listen()
            self.cond.notify()
        self.summary.swaps += 1
        self.on_swap(loaded)
        self.log(
            f"model: running {loaded.ref.short} ({loaded.identity.artifact}) from frame "
            f"{self.summary.frames}"
        )
        return replace(classify, predictor=loaded.choice.predictor, identity=loaded.identity)

    # --- commands (HTTP, MQTT): checked here, done on the models thread ------------------------

    def command(self, body, origin: str) -> tuple[int, dict]:
        """(HTTP status, answer) for {"path": "/abs/folder"} or {"action": ACTION}."""
        if isinstance(body, str):
            try:
                body = json.loads(body or "null")
            except ValueError:
                body = None
        if not isinstance(body, dict):
            return 400, {"error": 'give JSON: {"path": "/abs/bundle"} or {"action": "promote"}'}
        if "path" in body:
            path = Path(str(body["path"]))
            if not path.is_absolute() or not path.is_dir():
                return 400, {"error": f"path {path}: give the absolute path of a bundle folder"}
            job = ("path", path)
        elif body.get("action") in ACTIONS:
            job = (body["action"], None)
        else:
            return 400, {"error": f"give a path, or an action: {', '.join(ACTIONS)}"}
        with self.cond:
            self.commands.append((*job, origin))
            self.cond.notify()
        return 202, {"accepted": job[0], "state": self.state.to_dict()}

    def poke(self, kind: str) -> None:
        """A step without argument for the models thread (the fleet's news), queued once."""
        with self.cond:
            if not any(job[0] == kind for job in self.commands):
                self.commands.append((kind, None, ""))
            self.cond.notify()

    def start(self) -> None:
        self.thread.start()

    def close(self, timeout: float = 2.0) -> None:
        with self.cond:
            self.closing = True
            self.cond.notify()
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(timeout)

    # --- the models thread ---------------------------------------------------------------------

    def _work(self) -> None:
        while (job := self._next()) is not None:
            self.retired = None
            kind, arg, origin = job
            try:
                STEPS[kind](self, arg, origin)
            except Exception as exc:  # a fault of ours: said, and the active model runs on
                self.log(f"warning: model: {kind} failed ({type(exc).__name__}: {exc})")

    def _next(self) -> tuple | None:
        with self.cond:
            while not (self.closing or self.stop.is_set()):
                now = time.monotonic()
                if self.commands:
                    return self.commands.popleft()
                shadow = self.candidate is not None and self.slot is not None
                if shadow and now >= self.next_shadow:
                    slot, self.slot = self.slot, None
                    return ("shadow", slot, "")
                if self.inbox is not None and now >= self.next_poll:
                    self.next_poll = now + POLL_SECONDS
                    return ("inbox", None, "")
                if self.fleet is not None and now >= self.fleet.due:
                    return ("fleet", None, "")
                due = [self.next_poll] if self.inbox is not None else []
                due += [self.fleet.due] if self.fleet is not None else []
                if self.candidate is not None and self.slot is not None:
                    due.append(self.next_shadow)
                self.cond.wait(min([0.5, *(max(0.0, t - now) for t in due)]))
        return None

    def _poll(self, _arg, _origin) -> None:
        for folder in self.inbox.settled():
            self._intake(folder, "inbox")

    def _intake(self, source: Path, origin: str, policy: SwapConfig | None = None,
                key: str | None = None) -> bool:  # fmt: skip
        """Whether the candidate was taken into the shadow; a rollout's (`key`) comes with its
        own policy and is decided even when refused here (a new rollout tries it again)."""
        also = (key,) if key else ()
        try:
            ref = identify(source)
            if origin == "inbox" and ref.manifest_sha256 in self.state.decided:
                return False  # decided before (a restart sees the inbox again)
            self._wait_for_swap()
            loaded = take(source, ref, self.config.bundles, self.active, self.loader, self.log)
        except EdgeclsError as exc:  # not `decided`: the same manifest may come again, whole
            self._refuse(None, f"candidate {source} ({origin}) refused: {exc}", also=also)
            return False
        if self.candidate is not None:
            self._end("replaced", f"replaced by {loaded.ref.short}")
        self.policy, self.key = policy or self.config, key
        self.stats = ShadowStats(loaded.ref.short, self.policy.shadow_frames)
        self.kept = Disagreements(self.config.disagreements / loaded.ref.short,
                                  self.config.keep_disagreements)  # fmt: skip
        self.kept.start()
        why = (
            f"candidate {loaded.ref.short} ({origin}): checked, {loaded.identity.artifact} "
            f"chosen ({loaded.choice.reason}); in shadow for {self.policy.shadow_frames} frames"
        )
        self._write(self.state.next(why, candidate=loaded.ref), "shadow")
        self.log(f"model: {why}")
        self.summary.shadow = self.stats.to_dict()
        with self.cond:
            self.slot, self.candidate = None, loaded
            self._listen()
        return True

    def _refuse(self, ref, why: str, event: str = "refused", **refs) -> None:
        why = one_line(f"{why}; the active model {self.active.ref.short} keeps running")
        self.log(f"model: {why}")
        self._write(self.state.next(why, decided=ref, **refs), event)

    def _shadow(self, slot, _origin) -> None:
        record, x, image = slot
        candidate, stats = self.candidate, self.stats
        t0 = time.perf_counter()
        probs = candidate.choice.predictor.predict(x[None])[0]
        seconds = time.perf_counter() - t0
        label, confidence = top(probs, candidate.identity.labels)
        if not stats.add(record, label, seconds * 1000):
            try:
                self.kept.add(record, label, confidence, image)
            except OSError as exc:
                self.kept.keep = 0
                self.log(f"warning: model: cannot keep disagreements ({exc}); counted only")
        self.summary.shadow = stats.to_dict()
        # the shadow computes at most --shadow-share of the time: the active loop keeps its rate
        self.next_shadow = time.monotonic() + seconds * (1 / self.config.shadow_share - 1)
        if stats.frames == FAULT_SHADOW_FRAMES:
            fault_point("shadow")
        if stats.frames >= stats.wanted:
            self._decide()

    def _decide(self) -> None:
        s, cfg = self.stats, self.policy
        c, a = s.p90()
        if s.agreement < cfg.promote_agreement:
            why = f"agreement {s.agreement:.3f} < {cfg.promote_agreement:g} over {s.frames} frames"
            return self._end("refused", why)
        if c > cfg.promote_latency * a:
            why = f"p90 latency {c:.2f} ms > {cfg.promote_latency:g} x the active's {a:.2f} ms"
            return self._end("refused", why)
        self._promote(
            f"agreement {s.agreement:.3f} >= {cfg.promote_agreement:g} over {s.frames} frames, "
            f"p90 {c:.2f} ms <= {cfg.promote_latency:g} x {a:.2f} ms"
        )

    def _end(self, state: str, why: str) -> None:
        """The candidate leaves the shadow without being promoted."""
        loaded, self.stats.state, self.stats.why = self.candidate, state, why
        self.summary.shadow = self.stats.to_dict()
        with self.cond:
            self.candidate = self.slot = None
            self._listen()
        also, self.key = ((self.key,) if self.key else ()), None
        self._refuse(loaded.ref, f"candidate {loaded.ref.short} {state}: {why}", state,
                     candidate=None, also=also)  # fmt: skip

    def _promote(self, why: str) -> None:
        loaded = self.candidate
        self.stats.state = "promoted"
        self.summary.shadow = self.stats.to_dict()
        why = f"promoted {loaded.ref.short}: {why}"
        also, self.key = ((self.key,) if self.key else ()), None
        promoted = self.state.next(why, decided=loaded.ref, also=also, active=loaded.ref,
                                   previous=self.active.ref, candidate=None)  # fmt: skip
        self._write(promoted, "promoted")
        fault_point("swap")
        self.log(f"model: {why}; the loop swaps at its next frame")
        candidate_p90, active_p90 = self.stats.p90()  # none shadowed (an operator at once): none
        budget = self.policy.promote_latency * max(candidate_p90, active_p90) + JITTER_MS
        probation = Probation(loaded.ref.short, budget, self.policy.shadow_frames)
        with self.cond:
            self.candidate, self.slot, self.pending = None, None, loaded
            self.budget = probation if active_p90 > 0 else None
            self._listen()

    def _operator(self, action: str, origin: str) -> None:
        if action == "rollback":
            return self._rollback(origin)
        if self.candidate is None:
            return self.log(f"model: {action} ({origin}): no candidate in shadow")
        if action == "reject":
            return self._end("rejected", f"by {origin}")
        s = self.stats
        self._promote(f"by {origin} after {s.frames} frames, agreement {s.agreement:.3f}")

    def _rollback(self, origin: str) -> None:
        self._wait_for_swap()
        previous = self.state.previous
        if previous is None:
            return self.log(f"model: rollback ({origin}): no previous bundle in the state")
        try:
            loaded = self.loader.load(previous, check_whole(previous, self.loader.trust), self.log)
        except EdgeclsError as exc:
            return self._refuse(None, f"rollback ({origin}) to {previous.short} refused: {exc}")
        if self.candidate is not None:
            self._end("rejected", f"rolled back by {origin}")
        why = f"rolled back to {previous.short} by {origin}"
        back = self.state.next(why, decided=self.active.ref, active=previous,
                               previous=self.active.ref, candidate=None)  # fmt: skip
        self._write(back, "rolled back")
        self.log(f"model: {why}; the loop swaps at its next frame")
        with self.cond:
            self.pending, self.budget, self.probation = loaded, None, None
            self._listen()

    def _probation(self, probation: Probation, _origin) -> None:
        """A promoted model's first frames on the line: over its latency budget (JITTER_MS), it
        is rolled back at once."""
        if probation.bundle != self.active.ref.short:
            return  # rolled back or replaced meanwhile
        p90 = probation.latency.percentile(90)
        if p90 <= probation.budget_ms:
            return self.log(
                f"model: {probation.bundle} kept: p90 {p90:.2f} ms on the line over "
                f"{probation.frames} frames, within {probation.budget_ms:.2f} ms"
            )
        self._rollback(
            f"its latency budget: p90 {p90:.2f} ms on the line over {probation.frames} frames "
            f"> {probation.budget_ms:.2f} ms"
        )

    def _wait_for_swap(self) -> None:
        """A step that reads the active model waits for the loop to take a pending swap."""
        deadline = time.monotonic() + SWAP_WAIT_SECONDS
        with self.cond:
            while self.pending is not None and time.monotonic() < deadline:
                self.cond.wait(0.05)
        if self.pending is not None:
            raise EdgeclsError("the loop has not taken the last swap yet (no frames?); try again")

    def _write(self, state: ModelState, event: str = "") -> None:
        try:
            write_state(self.config.state, state)
        except EdgeclsError as exc:  # the step goes on: the state file says it at the next one
            self.log(f"warning: model: {exc}")
        self.state = state
        self.on_state(event)


STEPS = {
    "inbox": ModelManager._poll,
    "probation": ModelManager._probation,
    "shadow": ModelManager._shadow,
    "path": lambda self, path, origin: self._intake(path, origin),
    "fleet": lambda self, _arg, _origin: self.fleet.step(),
    **{a: lambda self, _arg, origin, a=a: self._operator(a, origin) for a in ACTIONS},
}
