"""Image dimensions read from the file header, before anything is decoded: a 1 MB PNG can hold
20000x20000 pixels (1.2 GB decoded), enough to kill a board. JPEG, PNG, BMP and WebP."""

from __future__ import annotations

import struct


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the header, or None when the format is not one of these."""
    try:
        if data[:8] == b"\x89PNG\r\n\x1a\n":
            return struct.unpack(">II", data[16:24])
        if data[:2] == b"BM":
            w, h = struct.unpack("<ii", data[18:26])
            return w, abs(h)
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return _webp(data)
        if data[:2] == b"\xff\xd8":
            return _jpeg(data)
    except struct.error:
        return None
    return None


def _webp(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X":
        w = int.from_bytes(data[24:27], "little") + 1
        h = int.from_bytes(data[27:30], "little") + 1
        return w, h
    if chunk == b"VP8L":
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 ":
        w, h = struct.unpack("<HH", data[26:30])
        return w & 0x3FFF, h & 0x3FFF
    return None


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


# baseline and extended sequential DCT: the ones libjpeg decodes at 1/2..1/8 scale without a
# buffer of the full image's coefficients (progressive and the others keep all of them)
SEQUENTIAL_JPEG = {0xC0, 0xC1}


def jpeg_frame_type(data: bytes) -> int | None:
    """The JPEG's start-of-frame marker (0xC0 baseline, 0xC2 progressive, ...), None if none."""
    found = _jpeg_sof(data)
    return found[0] if found else None


def _jpeg(data: bytes) -> tuple[int, int] | None:
    found = _jpeg_sof(data)
    return found[1] if found else None


def _jpeg_sof(data: bytes) -> tuple[int, tuple[int, int]] | None:
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _SOF:
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return marker, (w, h)
        i += 2 + struct.unpack(">H", data[i + 2 : i + 4])[0]
    return None
