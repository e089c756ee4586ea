"""Atomic training checkpoints in safe formats (safetensors + JSON; never pickle).

Layout of a checkpoint folder ``ckpt_dir``::

    ckpt_dir/
      latest.json                 {"name": "iter-00000120", "iteration": 120}  (os.replace'd last)
      iter-00000120/
        tensors.safetensors       model.*, optim.state.<i>.<name>, rng.* tensors
        state.json                iteration, optimizer param groups, scheduler, extra (JSON)

Every checkpoint is written into a temp folder inside ``ckpt_dir`` and renamed
into place before ``latest.json`` is replaced, so a job killed at any moment
leaves either the previous checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from famix_core.io import atomic_write_bytes, atomic_write_json, building_dir, safetensors_problem

__all__ = [
    "FORMAT_VERSION",
    "CheckpointState",
    "save_checkpoint",
    "load_checkpoint",
    "latest_checkpoint",
    "checkpoint_iteration",
    "checkpoint_problem",
    "atomic_write_bytes",
    "atomic_write_json",
    "save_safetensors_atomic",
    "optimizer_to_flat",
    "optimizer_from_flat",
]

FORMAT_VERSION = 1
_LATEST = "latest.json"


def _cpu_contiguous(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors needs contiguous, unshared storage: clone detaches from any shared buffer
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}


def _sorted_metadata(blob: bytes) -> bytes:
    """``blob`` (a serialized safetensors file) with its ``__metadata__`` keys in sorted order.

    safetensors keeps the metadata in a hash map whose order changes from one save to the next, so
    the same tensors and metadata gave other bytes each time. The header is JSON; this rewrites it
    with sorted metadata (the tensors' entries and data untouched) and pads it with spaces to a
    multiple of 8 bytes, as safetensors does.
    """
    import struct

    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n])
    if len(header.get("__metadata__") or {}) < 2:
        return blob
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + blob[8 + n :]


def save_safetensors_atomic(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Save tensors to ``.safetensors`` atomically; the same tensors and metadata give the same bytes."""
    from safetensors.torch import save

    atomic_write_bytes(path, _sorted_metadata(save(_cpu_contiguous(tensors), metadata=metadata)))


def optimizer_to_flat(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state dict into tensors (``optim.state.<i>.<name>``) and JSON."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        for name, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim.state.{idx}.{name}"] = v
            else:
                scalars.setdefault(str(idx), {})[name] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_flat(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Inverse of :func:`optimizer_to_flat`: load the state into ``opt``."""
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        if key.startswith("optim.state."):
            idx, name = key[len("optim.state.") :].split(".", 1)
            state.setdefault(int(idx), {})[name] = v
    for idx, st in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(st)
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


@dataclass
class CheckpointState:
    """What one checkpoint holds.

    Attributes:
        iteration: iterations completed.
        model: the model's state dict.
        optimizer: flat optimizer tensors (:func:`optimizer_to_flat`).
        optimizer_meta: the optimizer's JSON part.
        rng: RNG state tensors (``torch_cpu``, ``cuda.<i>``, generators by name).
        extra: JSON-able trainer state (scheduler, loss window, timing).
    """

    iteration: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, torch.Tensor] = field(default_factory=dict)
    optimizer_meta: dict[str, Any] = field(default_factory=dict)
    rng: dict[str, torch.Tensor] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def save_checkpoint(ckpt_dir: str | Path, state: CheckpointState, keep: int = 2) -> Path:
    """Write a checkpoint atomically and point ``latest.json`` at it; prune older ones.

    Args:
        ckpt_dir: the checkpoint folder (created if missing).
        state: what to save.
        keep: how many checkpoints to keep (the newest; the one before is the fallback when the
            newest turns out corrupt).

    Returns:
        The folder of the new checkpoint.
    """
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    name = f"iter-{state.iteration:08d}"
    final = ckpt_dir / name
    with building_dir(final, prefix=".tmp-") as tmp:  # the same iteration saved twice (on-demand after periodic): replaced
        tensors = {f"model.{k}": v for k, v in state.model.items()}
        tensors.update(state.optimizer)
        tensors.update({f"rng.{k}": v for k, v in state.rng.items()})
        save_safetensors_atomic(tmp / "tensors.safetensors", tensors)
        meta = {
            "format_version": FORMAT_VERSION,
            "iteration": state.iteration,
            "optimizer": state.optimizer_meta,
            "extra": state.extra,
        }
        atomic_write_json(tmp / "state.json", meta)
    atomic_write_json(ckpt_dir / _LATEST, {"name": name, "iteration": state.iteration})
    olds = sorted(p for p in ckpt_dir.glob("iter-*") if p.is_dir() and p.name != name)
    for p in olds[: max(0, len(olds) - (keep - 1))]:
        shutil.rmtree(p, ignore_errors=True)
    for p in ckpt_dir.glob(".tmp-*"):  # leftovers of a killed writer
        shutil.rmtree(p, ignore_errors=True)
    return final


def checkpoint_problem(path: str | Path) -> str | None:
    """Why the checkpoint folder ``path`` cannot be resumed from (naming the file), or None when it is sound.

    Checks, without loading any tensor: ``state.json`` is a JSON object with an integer ``iteration``;
    ``tensors.safetensors`` has a readable header and exactly the length its header announces.
    """
    path = Path(path)
    state = path / "state.json"
    try:
        meta = json.loads(state.read_text(encoding="utf-8"))
        if not isinstance(meta, dict) or not isinstance(meta.get("iteration"), int):
            return f"{state}: no integer 'iteration'"
    except FileNotFoundError:
        return f"{state}: missing"
    except (OSError, UnicodeDecodeError, ValueError) as e:
        return f"{state}: unreadable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
    return safetensors_problem(path / "tensors.safetensors")


def _set_aside(path: Path) -> Path:
    """Rename a corrupt checkpoint folder to ``corrupt-<name>[-k]`` so that it is never tried again (kept to inspect)."""
    k = 0
    while True:
        dest = path.with_name(f"corrupt-{path.name}" + (f"-{k}" if k else ""))
        if not dest.exists():
            break
        k += 1
    os.rename(path, dest)
    return dest


def latest_checkpoint(ckpt_dir: str | Path, warn: Any = None) -> Path | None:
    """The newest sound checkpoint folder in ``ckpt_dir``, or None.

    A corrupt checkpoint (:func:`checkpoint_problem`) is renamed to ``corrupt-iter-…`` and ``warn``
    is called with one line naming the bad file and what happens instead (the previous checkpoint,
    or training from the start); so a corrupt file costs one warning, never a retry loop.

    Args:
        ckpt_dir: the checkpoint folder.
        warn: ``warn(line)``; default: print to stderr.
    """
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return None
    warn = warn or (lambda line: print(f"famix: warning: {line}", file=sys.stderr, flush=True))
    candidates = sorted((p for p in ckpt_dir.glob("iter-*") if p.is_dir()), reverse=True)
    latest = ckpt_dir / _LATEST
    try:
        named = ckpt_dir / json.loads(latest.read_text())["name"]
        if named in candidates:  # the one latest.json names first (it is also the newest in practice)
            candidates.remove(named)
            candidates.insert(0, named)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    for i, p in enumerate(candidates):
        problem = checkpoint_problem(p)
        if problem is None:
            return p
        moved = _set_aside(p)
        rest = [q for q in candidates[i + 1 :] if checkpoint_problem(q) is None]
        instead = f"resuming from {rest[0].name} instead" if rest else "no earlier sound checkpoint: training starts over"
        warn(f"corrupt checkpoint {problem}; set aside as {moved.name}, {instead}")
    return None


def checkpoint_iteration(path: str | Path) -> int:
    """The iteration a checkpoint folder was saved at, from its ``state.json`` (no tensor is read)."""
    return int(json.loads((Path(path) / "state.json").read_text(encoding="utf-8"))["iteration"])


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> CheckpointState:
    """Read a checkpoint folder written by :func:`save_checkpoint`.

    Model and optimizer tensors go to ``device``; RNG states stay on CPU (torch wants them there).
    """
    from safetensors.torch import load_file

    from famix_core.errors import FamixError

    path = Path(path)
    meta = json.loads((path / "state.json").read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise FamixError(
            f"{path}: checkpoint format {meta.get('format_version')} is not {FORMAT_VERSION}; remove the folder to restart"
        )
    flat = load_file(str(path / "tensors.safetensors"), device="cpu")
    dev = torch.device(device)
    model = {k[len("model.") :]: v.to(dev) for k, v in flat.items() if k.startswith("model.")}
    optim = {k: v.to(dev) for k, v in flat.items() if k.startswith("optim.")}
    rng = {k[len("rng.") :]: v for k, v in flat.items() if k.startswith("rng.")}
    return CheckpointState(
        iteration=int(meta["iteration"]),
        model=model,
        optimizer=optim,
        optimizer_meta=meta.get("optimizer", {}),
        rng=rng,
        extra=meta.get("extra", {}),
    )
