"""Pretrained weights shipped inside the package (torch-free lookups).

``model.pretrained=famix-synth`` selects ``famix-tiny`` CLIP weights pretrained on the
synthetic caption corpus (``famix pretrain-clip``; docs/pretraining.md). A packaged name is
resolved here to the file that ships in this folder; the stage keys of the orchestrator use
:func:`weights_identity`, the name plus a hash of the file's bytes, never a machine path.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from importlib import resources
from pathlib import Path

__all__ = ["PACKAGED_WEIGHTS", "is_packaged", "looks_like_path", "packaged_path", "weights_identity"]

PACKAGED_WEIGHTS: dict[str, dict[str, str]] = {
    "famix-synth": {"famix-tiny": "famix-tiny-synth.safetensors"},
}
"""Packaged weights name -> {backbone: file in this folder}."""


def is_packaged(name: str) -> bool:
    """Whether ``name`` is a packaged weights name (for any backbone)."""
    return name in PACKAGED_WEIGHTS


def looks_like_path(value: str) -> bool:
    """Whether ``model.pretrained`` names a file (one that exists, a value with a ``/``, or a weights
    suffix) rather than a tag or a packaged name: the one rule for the engine and the orchestrator,
    so a mistyped tag (``yfcc15m``) is refused as unknown weights, not as a missing file."""
    return Path(value).expanduser().exists() or "/" in value or value.endswith((".pt", ".pth", ".bin", ".safetensors"))


def packaged_path(backbone: str, name: str) -> Path | None:
    """The shipped file of a packaged name for a backbone, or None when there is none for it."""
    file = PACKAGED_WEIGHTS.get(name, {}).get(backbone)
    if file is None:
        return None
    return Path(str(resources.files("famix_core.weights").joinpath(file)))


@lru_cache(maxsize=8)
def _digest(path: str, mtime_ns: int, size: int) -> str:
    """First 16 hex digits of the file's sha256 (cached per path, mtime and size: plans key many trials)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def weights_identity(backbone: str, pretrained: str) -> str:
    """What identifies ``model.pretrained`` in stage keys.

    ``none`` and open_clip tags stay as they are; a packaged name becomes ``name@sha256:<16 hex>``
    of its file's bytes (the same on every machine, different when the weights change); a path
    becomes its absolute form.
    """
    path = packaged_path(backbone, pretrained)
    if path is not None:
        st = path.stat() if path.is_file() else None
        digest = _digest(str(path), st.st_mtime_ns, st.st_size) if st else "missing"
        return f"{pretrained}@sha256:{digest}"
    if pretrained in ("none", "openai") or is_packaged(pretrained):
        return pretrained
    import os

    return os.path.abspath(os.path.expanduser(pretrained))
