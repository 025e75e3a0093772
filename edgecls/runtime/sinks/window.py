"""The desktop window (unless --headless): the annotated frame; q or Esc stops the run. Where
OpenCV has no GUI (the headless wheel, a board without a display) it says so once and closes."""

from __future__ import annotations

import contextlib

import cv2

from edgecls.runtime.records import Record
from edgecls.runtime.sinks import SINKS, Sink, SinkContext
from edgecls.runtime.sinks.overlay import draw


class WindowSink(Sink):
    name = "window"
    needs = frozenset({"image"})

    def __init__(self, config):
        self.shown = False
        self.off = False

    def open(self, context: SinkContext) -> None:
        self.context = context

    def handle(self, event) -> None:
        if self.off or not isinstance(event, Record) or event.image is None:
            return
        c = self.context
        try:
            summary = c.summary
            image = draw(event, c.triggers, summary.fps(), summary.drift, shadow=summary.shadow)
            cv2.imshow("edgecls", image)
            self.shown = True
            if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                c.stop.set()
        except cv2.error:
            self.off = True
            c.log("no display available (or OpenCV built headless): continuing with --headless")

    def close(self) -> None:
        if self.shown:
            with contextlib.suppress(cv2.error):
                cv2.destroyAllWindows()


@SINKS.register("window")
def make(config):
    return None if config.headless else WindowSink(config)
