"""Sweep files: YAML -> typed :class:`SweepSpec` -> resolved profile -> list of :class:`Trial`.

A sweep file (``sweeps/*.yaml``, plain YAML data only) names a base engine config, the values to
vary (``grid``: cartesian product in file order; ``zip``: keys that vary together), the seeds,
how each value is shown in tables (``labels``), the evaluation columns, named ``profiles``
(overlays; ``smoke`` and ``paper`` are built in), the backend and MLflow tracking. See docs/sweeps.md.

One job per module: :mod:`~orchestrator.sweep.schema` (the typed file and built-in profiles),
:mod:`~orchestrator.sweep.load` (find, read, validate), :mod:`~orchestrator.sweep.profile`
(profile + command-line overrides), :mod:`~orchestrator.sweep.expand` (trials and their ids).
Every mistake is ONE line: ``<file>: <dotted.path>: <what was expected>[ (did you mean …?)]``.
No torch is imported here.
"""

from orchestrator.sweep.expand import expand_trials, trial_id
from orchestrator.sweep.load import load_sweep, resolve_sweep_path
from orchestrator.sweep.profile import resolve_profile
from orchestrator.sweep.schema import (
    BUILTIN_PROFILES,
    DEFAULT_PROFILE,
    BackendSpec,
    LabelSpec,
    ProfileSpec,
    RayOptions,
    ResolvedSweep,
    ResourceSpec,
    SweepSpec,
    TrackingSpec,
    Trial,
    ZipGroup,
    canon_value,
)

__all__ = [
    "BUILTIN_PROFILES",
    "DEFAULT_PROFILE",
    "LabelSpec",
    "ZipGroup",
    "ResourceSpec",
    "RayOptions",
    "BackendSpec",
    "TrackingSpec",
    "ProfileSpec",
    "SweepSpec",
    "ResolvedSweep",
    "Trial",
    "load_sweep",
    "resolve_sweep_path",
    "resolve_profile",
    "expand_trials",
    "trial_id",
    "canon_value",
]
