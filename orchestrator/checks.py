"""Plan-time checks: data folders and pretrained weights exist, before anything runs or is submitted."""

from __future__ import annotations

import os
from pathlib import Path

from famix_core.config import FamixConfig
from famix_core.errors import WeightsError
from famix_core.weights import PACKAGED_WEIGHTS, is_packaged, packaged_path

__all__ = ["check_data", "check_weights", "check_run_dir", "openai_cache_dirs"]


def check_run_dir(run_dir: str | Path) -> None:
    """The run dir exists (created if needed) and a file can be written in it, before anything else is.

    Raises:
        SweepError: one line naming the folder and the OS's reason (read-only filesystem, permission, …).
    """
    import tempfile

    from orchestrator.errors import SweepError

    path = Path(run_dir).absolute()
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        where = e.filename or path
        raise SweepError(f"{where}: the run dir is not writable ({e.strerror}); choose another with --run-dir") from None


def check_data(cfg: FamixConfig) -> None:
    """Generate the synthetic benchmark when configured, then check the source (its val split too when
    ``train.val_every`` is set) and every target domain.

    Raises:
        DataError: one line naming the domain and the missing folder/file (from famix_core.data).
    """
    from famix_core.data import check_domain
    from famix_core.data.synth.benchmark import ensure_synthetic

    if cfg.data.synthetic is not None:
        ensure_synthetic(cfg.data)
    check_domain(cfg.data, cfg.data.source, "train")
    if cfg.train.val_every is not None:  # source validation during training reads the source's val split
        check_domain(cfg.data, cfg.data.source, "val")
    for col in cfg.eval.domains:
        check_domain(cfg.data, col, cfg.eval.split)


def openai_cache_dirs(cache_dir: str | None) -> list[Path]:
    """Where open_clip keeps downloaded weights: the given dir, else the HF hub cache and ``~/.cache/clip``."""
    if cache_dir:
        return [Path(cache_dir).expanduser()]
    hf_home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    hub = Path(os.environ.get("HF_HUB_CACHE", os.environ.get("HUGGINGFACE_HUB_CACHE", hf_home / "hub")))
    return [hub, Path.home() / ".cache" / "clip"]


def _openai_sources(backbone: str) -> tuple[str | None, str | None]:
    """(url file name, hf hub repo folder name) of the OpenAI weights of ``backbone`` per open_clip."""
    from open_clip.pretrained import get_pretrained_cfg  # imports torch: only for pretrained=openai

    pc = get_pretrained_cfg(backbone, "openai") or {}
    url_file = pc.get("url", "").rsplit("/", 1)[-1] or None
    hub = pc.get("hf_hub", "").strip("/")
    hub_dir = ("models--" + hub.split("/")[0] + "--" + hub.split("/")[1]) if hub.count("/") >= 1 else None
    return url_file, hub_dir


def check_weights(cfg: FamixConfig) -> None:
    """``model.pretrained`` is usable offline: a path that exists, ``none``, or ``openai`` found in the cache.

    Raises:
        WeightsError: one line naming the backbone / path / cache dir and how to fix it.
    """
    m = cfg.model
    if m.pretrained == "none":
        return
    if is_packaged(m.pretrained):
        path = packaged_path(m.backbone, m.pretrained)
        if path is None:
            raise WeightsError(
                f"model.pretrained: the packaged weights {m.pretrained!r} exist for"
                f" {', '.join(PACKAGED_WEIGHTS[m.pretrained])}, not for backbone {m.backbone}"
            )
        if not path.is_file():
            raise WeightsError(f"model.pretrained={m.pretrained}: the package's file {path} is missing (reinstall)")
        return
    if m.pretrained != "openai":
        if not Path(m.pretrained).expanduser().is_file():
            raise WeightsError(f"model.pretrained: file {m.pretrained} not found (expected a CLIP or FAMix checkpoint)")
        return
    if m.backbone == "famix-tiny":
        raise WeightsError("model.pretrained: there are no 'openai' weights for famix-tiny (use model.pretrained=famix-synth or none)")
    url_file, hub_dir = _openai_sources(m.backbone)
    dirs = openai_cache_dirs(m.cache_dir)
    for d in dirs:
        if url_file and (d / url_file).is_file():
            return
        if hub_dir and any(p.is_file() for p in (d / hub_dir).glob("snapshots/*/*")):
            return
    where = " or ".join(str(d) for d in dirs)
    raise WeightsError(
        f"model.pretrained=openai: no {m.backbone} weights in the open_clip cache ({where}); "
        f"nothing is downloaded here: put them there, set model.cache_dir=<dir>, or pass model.pretrained=<path>"
    )
