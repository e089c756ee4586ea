"""Stage identity: sha256 of the canonical JSON of exactly the inputs a stage reads.

What each stage reads (a change anywhere else does not re-run it):

- ``mine``: ``model.backbone``, ``model.pretrained`` (a packaged name such as ``famix-synth``
  counts as the name plus the sha256 of its shipped file, never its path), ``model.num_classes``, all of ``mining.*``
  (its seed is the trial's seed; ``epochs`` only when not 1, see ``FamixConfig.identity_dict``), ``style.grid``/``style.eps`` (patch statistics), the source
  data identity (see below), ``data.split_file``, ``train.device``/``train.deterministic``.
  Not ``model.freeze``, not ``style.augment``/``mix``: the 8-row ablation mines once.
- ``train``: ``model.*`` (minus ``cache_dir``, a location), the *effective* style strategy and
  only the style fields it uses, the source data identity, ``data.crop_size/jitter/hflip/
  split_file`` (not ``num_workers``: batches are the same with any number of loader workers),
  the source's training protocol (``data.train_protocol``: SYNTHIA's ``synthia_protocol``/
  ``synthia_crop``/``synthia_scale``), ``train.*`` minus ``log_every``, ``checkpoint_every``
  (resume is exact, so they do not change results) and ``cpu_fallback`` (whether to run, not how;
  ``device``, ``precision``, ``channels_last``, ``deterministic`` stay in), and the mine key when
  the effective strategy needs a bank (else no mine stage and no mining fields).
- ``evaluate``: the train key, ``eval.split``/``scales``/``max_images``/``precision``, the domain
  column, that domain's data identity, its evaluation protocol (``data.eval_protocol``:
  Mapillary's ``mapillary_protocol``/``mapillary_size``) and ``train.device``.

Data identity: with ``data.synthetic`` set it is the synthetic settings (the generated folder's
location does not matter); otherwise the absolute root folder of the domain.
Every key also holds :data:`FORMAT_VERSION`; bump it when an artifact's format or meaning changes.
Version 2: the official mining, style-op, evaluation and data protocols (results differ from version 1).
"""

from __future__ import annotations

from typing import Any

from famix_core.config import FamixConfig
from famix_core.config_io import canonical_hash
from famix_core.domains import resolve_domain
from famix_core.identity import data_identity, pretrained_identity, training_identity

__all__ = ["FORMAT_VERSION", "stage_key", "mine_inputs", "train_inputs", "evaluate_inputs", "data_identity"]

FORMAT_VERSION = 2


def stage_key(inputs: dict[str, Any]) -> str:
    """:func:`~famix_core.config_io.canonical_hash` of ``inputs`` + the format version."""
    return canonical_hash({"format": FORMAT_VERSION, **inputs})


def mine_inputs(cfg: FamixConfig) -> dict[str, Any]:
    """The inputs of the mine stage (see the module docstring)."""
    return {
        "kind": "mine",
        "backbone": cfg.model.backbone,
        "pretrained": pretrained_identity(cfg),
        "num_classes": cfg.model.num_classes,
        "mining": cfg.identity_dict()["mining"],  # epochs=1 left out: the key of banks mined before it existed
        "patches": {"grid": cfg.style.grid, "eps": cfg.style.eps},
        "source": data_identity(cfg, cfg.data.source),
        "split_file": cfg.data.split_file,
        "device": cfg.train.device,
        "deterministic": cfg.train.deterministic,
    }


def train_inputs(cfg: FamixConfig, mine_key: str | None) -> dict[str, Any]:
    """The inputs of the train stage (:func:`famix_core.identity.training_identity`, which its
    checkpoints record too); ``mine_key`` must be given iff the strategy needs a bank."""
    return {"kind": "train", **training_identity(cfg), "mine": mine_key}


def evaluate_inputs(cfg: FamixConfig, train_key: str, domain: str) -> dict[str, Any]:
    """The inputs of one evaluate stage (``domain``: column or name)."""
    d = resolve_domain(domain)
    return {
        "kind": "evaluate",
        "train": train_key,
        "domain": d.short_name,
        "data": data_identity(cfg, d.name),
        "protocol": cfg.data.eval_protocol(d.name),
        "split": cfg.eval.split,
        "scales": list(cfg.eval.scales),
        "max_images": cfg.eval.max_images,
        "precision": cfg.eval.precision,
        "device": cfg.train.device,
    }
