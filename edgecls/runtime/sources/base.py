"""What every frame source is and gives: the `Source` interface, its `Frame`, its end."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class CaptureSettings:
    width: int | None = None
    height: int | None = None
    fps: int | None = None


@dataclass
class Frame:
    index: int  # position in the source (frames read, corrupt ones included)
    image: np.ndarray | None  # BGR uint8; None for a corrupt frame
    name: str = ""  # an image folder's file, as the folder's path to it (sub/img.jpg)
    problem: str = ""  # why a named image could not be read
    # monotonic time the frame arrived (a live source's capture thread stamps it as it grabs), so a
    # part trigger takes only frames captured after it, never one that was already waiting
    captured: float = field(default_factory=time.monotonic)
    # the model's input, made by the source's own thread (`Source.prepare`) while the model works
    # on the frame before; the exception it raised instead; None where the loop makes it itself
    prepared: np.ndarray | Exception | None = None


class SourceEnded(Exception):
    """A file source reached its end, or a live source could not be reopened."""


def prepared(prepare: Callable[[np.ndarray], np.ndarray] | None, image) -> object:
    """`Frame.prepared` for an image read on a source's thread: the input, or what stopped it
    (raised by the loop, as if it had made the input itself)."""
    if prepare is None or not valid_image(image):
        return None
    try:
        return prepare(image)
    except Exception as exc:
        return exc


def valid_image(image) -> bool:
    """A frame the preprocessing can take: colour or grey, 8 or 16 bit."""
    return (
        isinstance(image, np.ndarray)
        and image.size > 0
        and (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3, 4)))
    )


class Source:
    """Frames for the loop, one `read()` at a time, until `SourceEnded`.

    The members below the name have the defaults of a source that has nothing to say about them;
    a source sets those it knows (as class attributes, or in its constructor)."""

    name: str  # what the log and every record call it

    live: bool = True
    """A camera or stream, whose frames do not wait: a full output queue drops events instead of
    holding up the loop, and a recording measures the rate frames really arrive at. False for a
    file or folder, read as fast as the loop goes and ended by its end."""

    reconnects: int = 0
    """Times the source was reopened after it dropped: the summary's and /metrics' count."""

    dropped_frames: int = 0
    """Frames replaced by newer ones before the model saw them (a camera faster than the model):
    the summary's "skipped older camera frames"."""

    ended_early: str | None = None
    """Why a file ended before its announced length (truncated, damaged), warned at the end."""

    fps: float | None = None
    """The source's own frame rate where it announces one (a video's header), for a recording
    of a file; None or 0 where unknown."""

    stop: threading.Event | None = None
    """The event that ends the source's own waits (reading, reconnecting), set on a stop signal
    along with the loop's, so a source that is down does not hold up a Ctrl-C."""

    prepare: Callable[[np.ndarray], np.ndarray] | None = None
    """The frame work (ROI crop, resize, colours) the loop hands over: a source that reads on a
    thread of its own runs it there on each frame (`prepared`), so it overlaps the model's work
    on the frame before; a source without one leaves it to the loop."""

    def read(self) -> Frame:
        """The next frame (a live source's newest); raise SourceEnded when there are no more."""
        raise NotImplementedError(f"{type(self).__name__} reads no frames")

    def close(self) -> None:
        """Release what the source holds (a capture, a thread); called once, at the end."""
