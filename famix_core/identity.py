"""What a training is: the inputs that decide its weights, as a JSON-able dict.

Two readers: the orchestrator's train stage key hashes it (:func:`orchestrator.keys.train_inputs`;
the module docstring of :mod:`orchestrator.keys` lists what counts and why), and a training's
checkpoints record it, so that a checkpoint is resumed only by the training that wrote it
(:meth:`famix_core.train.Trainer.resume`, which compares :func:`resume_view`: where the files lie
and which device runs it do not make another training).
Fields that do not change the weights are left out: ``train.log_every``/``checkpoint_every``
(resume is exact), ``train.cpu_fallback`` (whether to run, not how), ``model.cache_dir`` and
``data.num_workers``; ``eval`` is not read by a training, and the style section counts only the
fields its effective strategy uses.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

from famix_core.domains import resolve_domain
from famix_core.weights import weights_identity

if TYPE_CHECKING:
    from famix_core.config import FamixConfig

__all__ = ["data_identity", "pretrained_identity", "resume_view", "style_identity", "training_identity"]


def data_identity(cfg: "FamixConfig", domain: str) -> dict[str, Any]:
    """What identifies a domain's data: the synthetic settings, or the absolute root folder."""
    name = resolve_domain(domain).name
    if cfg.data.synthetic is not None and name not in cfg.data.roots:
        return {"domain": name, "synthetic": cfg.data.synthetic.model_dump(mode="json")}
    return {"domain": name, "root": os.path.abspath(cfg.data.root_of(name))}


def pretrained_identity(cfg: "FamixConfig") -> str:
    """``none``/``openai`` as is, a packaged name with its file's hash (famix-synth@sha256:...), else the absolute path."""
    return weights_identity(cfg.model.backbone, cfg.model.pretrained)


def style_identity(cfg: "FamixConfig") -> dict[str, Any]:
    """The effective style strategy and only the style fields it uses."""
    s = cfg.style
    eff = s.effective_strategy()
    if eff == "none":
        return {"strategy": "none"}
    out: dict[str, Any] = {"strategy": eff, "grid": s.grid, "eps": s.eps}
    if eff == "noise":
        out["noise_std"] = s.noise_std
    if eff == "mixstyle" or (eff == "famix" and s.mix):
        out["alpha"] = s.alpha
    if eff == "famix":
        out["mix"] = s.mix
    if s.detach_stats:  # a field added later: absent at its default, so older keys hold
        out["detach_stats"] = True
    return out


def training_identity(cfg: "FamixConfig") -> dict[str, Any]:
    """The training's inputs but the style bank: model, style, source data and its training
    protocol, ``train.*`` (module docstring for what is left out)."""
    model = cfg.model.model_dump(mode="json")
    model.pop("cache_dir")
    model["pretrained"] = pretrained_identity(cfg)
    train = cfg.train.model_dump(mode="json")
    for k in ("log_every", "checkpoint_every", "cpu_fallback"):
        train.pop(k)
    d = cfg.data
    return {
        "model": model,
        "style": style_identity(cfg),
        "source": data_identity(cfg, d.source),
        "data": {
            "crop_size": d.crop_size,
            "jitter": list(d.jitter),
            "hflip": d.hflip,
            "split_file": d.split_file,
            "protocol": d.train_protocol(),
        },
        "train": train,
    }


def resume_view(identity: dict[str, Any]) -> dict[str, Any]:
    """What of a training's identity a checkpoint must share to be resumed: all but where its files lie
    (the source's root folder; a weights or split file by its name, not its folder) and the device
    (a moved dataset or project, another cwd, another GPU index resume the same training)."""
    view = json.loads(json.dumps(identity))
    view.get("source", {}).pop("root", None)
    view.get("train", {}).pop("device", None)
    for section, key in (("model", "pretrained"), ("data", "split_file")):
        value = view.get(section, {}).get(key)
        if isinstance(value, str):
            view[section][key] = os.path.basename(value)
    return view
