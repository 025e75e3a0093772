"""Named metadata inside a .tflite file, read without TensorFlow or generated schema code.

A .tflite file is a flatbuffer whose root `Model` table has `buffers` (field 4) and `metadata`
(field 6: tables of `name` and a buffer index); the export writes the edgecls metadata there, so
the artifact's sha256 also covers its labels and input spec. Reading it is a few struct reads.
"""

from __future__ import annotations

import struct

_MODEL_BUFFERS, _MODEL_METADATA = 4, 6
_META_NAME, _META_BUFFER = 0, 1
_BUFFER_DATA, _BUFFER_OFFSET, _BUFFER_SIZE = 0, 1, 2


class _Table:
    def __init__(self, buf: bytes, pos: int):
        self.buf, self.pos = buf, pos
        self.vtable = pos - struct.unpack_from("<i", buf, pos)[0]
        self.vsize = struct.unpack_from("<H", buf, self.vtable)[0]

    def _field(self, index: int) -> int | None:
        slot = 4 + 2 * index
        if slot >= self.vsize:
            return None
        off = struct.unpack_from("<H", self.buf, self.vtable + slot)[0]
        return self.pos + off if off else None

    def scalar(self, index: int, fmt: str, default=0):
        at = self._field(index)
        return default if at is None else struct.unpack_from(fmt, self.buf, at)[0]

    def _target(self, index: int) -> int | None:
        at = self._field(index)
        return None if at is None else at + struct.unpack_from("<I", self.buf, at)[0]

    def vector(self, index: int) -> tuple[int, int] | None:
        """(start of elements, length) of a vector field."""
        at = self._target(index)
        return None if at is None else (at + 4, struct.unpack_from("<I", self.buf, at)[0])

    def tables(self, index: int) -> list[_Table]:
        vec = self.vector(index)
        if vec is None:
            return []
        start, n = vec
        return [
            _Table(self.buf, start + 4 * i + struct.unpack_from("<I", self.buf, start + 4 * i)[0])
            for i in range(n)
        ]

    def string(self, index: int) -> str | None:
        vec = self.vector(index)
        return (
            None if vec is None else self.buf[vec[0] : vec[0] + vec[1]].decode("utf-8", "replace")
        )


def read_metadata(data: bytes, name: str) -> bytes | None:
    """The bytes of the metadata entry `name`, or None; ValueError for a malformed file."""
    try:
        model = _Table(data, struct.unpack_from("<I", data, 0)[0])
        buffers = model.tables(_MODEL_BUFFERS)
        for meta in model.tables(_MODEL_METADATA):
            if meta.string(_META_NAME) != name:
                continue
            buffer = buffers[meta.scalar(_META_BUFFER, "<I")]
            vec = buffer.vector(_BUFFER_DATA)
            if vec is not None and vec[1]:
                return bytes(data[vec[0] : vec[0] + vec[1]])
            offset = buffer.scalar(_BUFFER_OFFSET, "<Q")
            size = buffer.scalar(_BUFFER_SIZE, "<Q")
            return bytes(data[offset : offset + size]) if offset > 1 else b""
    except (struct.error, IndexError) as exc:
        raise ValueError(f"not a TFLite flatbuffer ({exc})") from None
    return None
