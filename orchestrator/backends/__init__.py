"""Backend registry: name -> ``module:Class``, imported only when used (Ray / submitit stay unimported otherwise).

Adding a backend: a module (or package) under ``orchestrator/backends/`` with a :class:`Backend`
subclass, and one line in :data:`BACKENDS`. The driver, the CLI and the sweep schema ask the
registry and the class (:class:`orchestrator.backends.base.Backend`), never a backend by name.
"""

from __future__ import annotations

import importlib
from typing import Any

from famix_core.errors import unknown
from orchestrator.backends.base import Backend
from orchestrator.errors import SweepError

__all__ = ["BACKENDS", "get_backend_class", "create_backend", "detachable"]

BACKENDS: dict[str, str] = {
    "local": "orchestrator.backends.local:LocalBackend",
    "ray": "orchestrator.backends.ray_backend:RayBackend",
    "slurm": "orchestrator.backends.slurm.backend:SlurmBackend",
}


def get_backend_class(name: str) -> type[Backend]:
    """The backend class registered as ``name``.

    Raises:
        SweepError: unknown name (listing the known ones).
    """
    if name not in BACKENDS:
        raise SweepError(f"backend: {unknown('backend', name, BACKENDS)}")
    mod_name, cls_name = BACKENDS[name].split(":")
    return getattr(importlib.import_module(mod_name), cls_name)


def create_backend(name: str, **options: Any) -> Backend:
    """Instantiate a backend; ``options`` are the keyword arguments its constructor accepts."""
    return get_backend_class(name)(**options)


def detachable() -> list[str]:
    """Names of the backends whose stages go on without the driver (``famix sweep run --detach``)."""
    return [name for name in BACKENDS if get_backend_class(name).supports_detach]
