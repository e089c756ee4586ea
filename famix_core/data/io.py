"""Reading images and label maps with PIL + numpy (no torch), and writing 16-bit PNGs.

Every read failure becomes a one-line :class:`~famix_core.errors.DataError`
naming the file. SYNTHIA's labels are 16-bit RGB PNGs, which PIL only exposes
as 8-bit RGB (high bytes); :func:`read_label` recovers the full 16-bit first
channel by decoding the file a second time with the little-endian unpacker,
which yields the low bytes.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from famix_core.errors import DataError

__all__ = ["read_rgb", "read_label", "write_png16", "image_size"]

_ONE_LINE = str.maketrans({"\n": " ", "\r": " "})


def _unreadable(path: Path, err: Exception) -> DataError:
    return DataError(f"unreadable image: {path} ({type(err).__name__}: {str(err).translate(_ONE_LINE)})")


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image as RGB.

    Args:
        path: image file (PNG, JPEG, ...).

    Returns:
        (H, W, 3) uint8 array.

    Raises:
        DataError: naming the path when the file is missing or cannot be decoded.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB")).copy()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise _unreadable(path, e) from None


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) of an image from its header only."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            w, h = im.size
    except (OSError, SyntaxError, ValueError) as e:
        raise _unreadable(path, e) from None
    return h, w


def _rawmode(im: Image.Image) -> str | None:
    if not im.tile:
        return None
    args = im.tile[0][3]
    return args if isinstance(args, str) else (args[0] if args else None)


def _with_rawmode(im: Image.Image, rawmode: str) -> None:
    tile = im.tile[0]
    new = tile._replace(args=rawmode) if hasattr(tile, "_replace") else (tile[0], tile[1], tile[2], rawmode)
    im.tile = [new]


def read_label(path: str | Path, *, first_channel: bool = False) -> np.ndarray:
    """Read a label map as integers.

    Args:
        path: PNG label file: palette ("P", indices are ids), 8-bit grey, 16-bit grey, or (with
            ``first_channel``) an RGB PNG of 8 or 16 bits per channel whose first channel holds the id.
        first_channel: take channel 0 of a colour label (SYNTHIA); otherwise colour labels are refused.

    Returns:
        (H, W) array of uint8 or uint16 (int32 for 32-bit integer images).

    Raises:
        DataError: naming the path when unreadable or not a single-channel label.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            mode = im.mode
            rawmode = _rawmode(im)
            if mode in ("P", "L"):
                return np.asarray(im).copy()
            if mode.startswith("I;16"):
                return np.asarray(im).astype(np.uint16)
            if mode == "I":
                return np.asarray(im).astype(np.int32)
            if mode in ("RGB", "RGBA") and first_channel:
                if rawmode in ("RGB;16B", "RGBA;16B"):
                    high = np.asarray(im)[..., 0].astype(np.uint16)
                else:
                    return np.asarray(im)[..., 0].copy()
            else:
                raise DataError(
                    f"unexpected label image mode {mode!r}: {path} (expected a single-channel PNG of ids)"
                )
        # second pass: the little-endian unpacker applied to big-endian samples yields the low bytes
        with Image.open(path) as im:
            _with_rawmode(im, rawmode.replace("16B", "16L"))
            low = np.asarray(im)[..., 0].astype(np.uint16)
        return (high << 8) | low
    except DataError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise _unreadable(path, e) from None


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png16(path: str | Path, array: np.ndarray) -> None:
    """Write a 16-bit PNG (grey for (H, W), RGB for (H, W, 3)), which PIL cannot write in colour.

    Args:
        path: destination file.
        array: (H, W) or (H, W, 3) integer array with values in [0, 65535].
    """
    arr = np.asarray(array)
    if arr.ndim == 2:
        color_type, channels = 0, 1
    elif arr.ndim == 3 and arr.shape[2] == 3:
        color_type, channels = 2, 3
    else:
        raise ValueError(f"write_png16 expects (H, W) or (H, W, 3), got {arr.shape}")
    h, w = arr.shape[:2]
    rows = np.zeros((h, 1 + w * channels * 2), dtype=np.uint8)  # filter byte 0 (none) + big-endian samples
    rows[:, 1:] = arr.astype(">u2").reshape(h, w * channels).view(np.uint8)
    png = (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0))
        + _chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
        + _chunk(b"IEND", b"")
    )
    Path(path).write_bytes(png)
