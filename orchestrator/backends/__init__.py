"""Backend registry: name -> ``module:Class``, imported only when used (Ray / submitit stay unimported otherwise)."""

from __future__ import annotations

import importlib
from typing import Any

from orchestrator.backends.base import Backend, StageOutcome, StageTask
from famix_core.errors import suggest
from orchestrator.errors import SweepError

__all__ = ["BACKENDS", "get_backend_class", "create_backend", "Backend", "StageTask", "StageOutcome"]

BACKENDS: dict[str, str] = {
    "local": "orchestrator.backends.local:LocalBackend",
    "ray": "orchestrator.backends.ray_backend:RayBackend",
    "slurm": "orchestrator.backends.slurm:SlurmBackend",
}


def get_backend_class(name: str) -> type[Backend]:
    """The backend class registered as ``name``.

    Raises:
        SweepError: unknown name (listing the known ones) or a backend whose module is missing.
    """
    if name not in BACKENDS:
        raise SweepError(f"backend: unknown backend {name!r} (known: {', '.join(BACKENDS)}){suggest(name, BACKENDS)}")
    mod_name, cls_name = BACKENDS[name].split(":")
    try:
        mod = importlib.import_module(mod_name)
    except ModuleNotFoundError as e:
        raise SweepError(f"backend {name!r}: cannot import {mod_name} ({e})") from None
    return getattr(mod, cls_name)


def create_backend(name: str, **options: Any) -> Backend:
    """Instantiate a backend; ``options`` are the keyword arguments its constructor accepts."""
    return get_backend_class(name)(**options)
