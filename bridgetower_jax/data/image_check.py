"""Cheap validity check of encoded image bytes, run once per image when a dataset is built.

A full decode of every image would double the build time, so the check parses the header with
PIL and looks for the end-of-image marker that a truncated file lacks. Corruption that keeps the
trailer intact is caught at decode time in the pipeline, with the record named.
"""
from __future__ import annotations

import io

from PIL import Image

_JPEG_SOI, _JPEG_EOI, _JPEG_SOS = b"\xff\xd8", b"\xff\xd9", b"\xff\xda"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def image_problem(data: bytes) -> str | None:
    """Returns a description of what is wrong with `data`, or None if it looks like a full image."""
    if not data:
        return "empty image data"
    if data.startswith(_JPEG_SOI):
        # The entropy-coded scan escapes 0xFF bytes, so an EOI after the last start-of-scan
        # only exists when the file was written to the end.
        last_scan = data.rfind(_JPEG_SOS)
        if last_scan < 0 or data.rfind(_JPEG_EOI) < last_scan:
            return f"truncated JPEG ({len(data)} bytes, no end-of-image marker after a scan)"
    elif data.startswith(_PNG_SIGNATURE):
        if b"IEND" not in data[-64:]:
            return f"truncated PNG ({len(data)} bytes, no IEND chunk)"
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except Exception as e:  # PIL raises many types for undecodable headers
        return f"undecodable image header ({type(e).__name__}: {e})"
    if width <= 0 or height <= 0:
        return f"image has size {width}x{height}"
    return None
