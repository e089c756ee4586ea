"""CLIP models (open_clip ModifiedResNet + text encoder) by backbone name.

The registry maps every name of :data:`famix_core.config.BACKBONES` to an
open_clip architecture. ``RN50`` / ``RN101`` are open_clip's built-in configs;
``famix-tiny`` is a small random-init architecture kept as data in
``famix_core/model_configs/famix-tiny.json`` and handed to
``open_clip.create_model`` as keyword overrides, so nothing is registered in
open_clip's global config table.

Weights (``pretrained``):
  * ``"none"``: random initialization;
  * a packaged name (``"famix-synth"`` for ``famix-tiny``: :mod:`famix_core.weights`), loaded strictly;
  * a tag (``"openai"``): the file in ``cache_dir`` that ``famix sweep run`` fetched before
    submitting (:mod:`famix_core.models.download`), loaded strictly from disk; if it is not
    there, open_clip's own download (Hugging Face hub, then the URL);
  * a path: a local CLIP state dict (``.safetensors``, or a torch file read with
    ``weights_only=True``; OpenAI's TorchScript archives are read through
    ``torch.jit.load``), or a FAMix checkpoint whose ``backbone.*`` keys fill
    the image encoder.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from famix_core.errors import FamixWarning, WeightsError
from famix_core.weights import PACKAGED_WEIGHTS, is_packaged, looks_like_path, packaged_path

__all__ = [
    "check_weights_format",
    "BackboneSpec",
    "BACKBONE_REGISTRY",
    "get_backbone_spec",
    "create_clip",
    "locate_weights",
    "create_visual",
    "get_tokenizer",
    "stage_channels",
    "read_state_dict",
    "STAGES",
]

STAGES: tuple[str, ...] = ("stem", "layer1", "layer2", "layer3", "layer4")
"""Stages of the ModifiedResNet, in forward order."""


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one backbone.

    Attributes:
        name: registry name (``RN50``).
        open_clip_name: open_clip's built-in architecture the model starts from.
        config_file: JSON under ``famix_core/model_configs`` whose ``embed_dim`` /
            ``vision_cfg`` / ``text_cfg`` override the built-in config (``None``: use it as is).
        quick_gelu: OpenAI CLIP's text tower uses QuickGELU; keep it so OpenAI weights load as trained.
        pretrained_tags: open_clip tags that can be downloaded for this architecture.
        aspp_channels: DeepLabv3+ ASPP / decoder width (256 in the paper).
        low_level_channels: DeepLabv3+ low-level projection width (48 in the paper).
    """

    name: str
    open_clip_name: str
    config_file: str | None = None
    quick_gelu: bool = True
    pretrained_tags: tuple[str, ...] = ("openai",)
    aspp_channels: int = 256
    low_level_channels: int = 48

    def model_overrides(self) -> dict[str, Any]:
        """open_clip ``create_model`` keyword overrides read from :attr:`config_file`."""
        if self.config_file is None:
            return {}
        text = resources.files("famix_core").joinpath("model_configs", self.config_file).read_text()
        cfg = json.loads(text)
        return {k: cfg[k] for k in ("embed_dim", "vision_cfg", "text_cfg") if k in cfg}


BACKBONE_REGISTRY: dict[str, BackboneSpec] = {
    s.name: s
    for s in (
        BackboneSpec("RN50", "RN50"),
        BackboneSpec("RN101", "RN101"),
        # The smoke-scale backbone: packaged weights (famix-synth, pretrained on the synthetic caption
        # corpus) or none, and a decoder scaled to its width so that CPU training runs hundreds of
        # iterations a minute (the paper's head is 256/48).
        BackboneSpec(
            "famix-tiny",
            "RN50",
            config_file="famix-tiny.json",
            quick_gelu=False,
            pretrained_tags=(),
            aspp_channels=64,
            low_level_channels=16,
        ),
    )
}
"""Backbone name -> spec; holds exactly ``famix_core.config.BACKBONES`` (checked by tests)."""


def get_backbone_spec(name: str) -> BackboneSpec:
    """Look a backbone up by name.

    Raises:
        WeightsError: the name is unknown; the message lists the known ones.
    """
    try:
        return BACKBONE_REGISTRY[name]
    except KeyError:
        raise WeightsError(
            f"model.backbone: unknown backbone {name!r} (known: {', '.join(BACKBONE_REGISTRY)})"
        ) from None


def _first_mismatches(model: nn.Module, sd: Mapping[str, torch.Tensor], n: int = 3) -> str:
    """Describe the first missing / unexpected / wrongly shaped keys of ``sd`` against ``model``."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [
        f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)
    ]
    parts = []
    if missing:
        parts.append(f"missing {missing[:n]}" + (f" (+{len(missing) - n} more)" if len(missing) > n else ""))
    if unexpected:
        parts.append(f"unexpected {unexpected[:n]}" + (f" (+{len(unexpected) - n} more)" if len(unexpected) > n else ""))
    if shapes:
        parts.append(f"shape mismatch {shapes[:n]}" + (f" (+{len(shapes) - n} more)" if len(shapes) > n else ""))
    return "; ".join(parts) or "no key differs"


def check_weights_format(path: str | Path) -> None:
    """A look at a weights file's first bytes, reading no tensor (microseconds, so the plan can do it):
    a ``.safetensors`` file needs its JSON header; any other a torch file, i.e. a zip archive
    (``torch.save``, TorchScript) or a pickle (legacy ``torch.save``).

    Raises:
        WeightsError: one line naming the file and what it should be.
    """
    import zipfile

    p = Path(path)
    try:
        with p.open("rb") as f:
            head = f.read(8)
            if p.suffix == ".safetensors":
                n = int.from_bytes(head, "little") if len(head) == 8 else -1
                ok = 0 < n <= p.stat().st_size - 8 and isinstance(json.loads(f.read(n)), dict)
            else:
                ok = head[:1] == b"\x80" or zipfile.is_zipfile(f)  # pickle protocol >= 2, or a zip archive
    except OSError as e:
        raise WeightsError(f"model.pretrained: cannot read {p} ({e.strerror})") from None
    except ValueError:  # a header that is not JSON (UnicodeDecodeError is a ValueError)
        ok = False
    if not ok:
        kind = "safetensors file (8-byte header size, then a JSON header)" if p.suffix == ".safetensors" else "torch file (torch.save or TorchScript: a zip archive or a pickle)"
        raise WeightsError(f"model.pretrained: {p} is not a {kind}; expected CLIP or FAMix weights")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a torch file (``weights_only=True``), on CPU.

    Unwraps ``{"model_state": ...}`` (FAMix), ``{"state_dict": ...}`` and a ``module.`` prefix.

    Raises:
        WeightsError: the file is missing or is not a state dict of tensors.
    """
    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"{p}: weights file not found")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            sd: Any = load_file(str(p), device="cpu")
        except Exception as e:  # noqa: BLE001 - corrupt file: one line for the user
            raise WeightsError(f"{p}: not a readable safetensors file ({type(e).__name__}: {e})") from None
    else:
        try:
            with warnings.catch_warnings():  # a TorchScript archive: torch.load says it dispatches, then fails below
                warnings.filterwarnings("ignore", message=".*TorchScript archive", category=UserWarning)
                sd = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001
            try:  # OpenAI's released CLIP weights are TorchScript archives
                with warnings.catch_warnings():  # torch.jit's deprecation notice: the archive is only read
                    warnings.simplefilter("ignore", FutureWarning)
                    sd = torch.jit.load(str(p), map_location="cpu").state_dict()
            except Exception:  # noqa: BLE001
                raise WeightsError(
                    f"{p}: not a state dict readable with torch.load(weights_only=True) ({type(e).__name__})"
                ) from None
    if isinstance(sd, dict):
        for wrapper in ("model_state", "state_dict", "model"):
            if wrapper in sd and isinstance(sd[wrapper], dict):
                sd = sd[wrapper]
                break
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsError(f"{p}: expected a state dict of tensors")
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return dict(sd)


def _load_clip_file(model: nn.Module, path: str, backbone: str) -> bool:
    """Fill ``model`` (an open_clip CLIP) from a local CLIP or FAMix checkpoint, strictly; returns
    whether the text encoder was filled too (a FAMix segmenter checkpoint holds the image encoder only)."""
    sd = read_state_dict(path)
    for k in ("input_resolution", "context_length", "vocab_size"):  # OpenAI's archives carry these as tensors
        if k not in model.state_dict():
            sd.pop(k, None)
    if any(k.startswith("backbone.") for k in sd):  # FAMix segmenter checkpoint: image encoder only
        visual_sd = {k[len("backbone.") :]: v for k, v in sd.items() if k.startswith("backbone.")}
        target: nn.Module = model.visual
        own = {k for k in target.state_dict() if not k.startswith("attnpool.")}
        if own - set(visual_sd) or any(tuple(visual_sd[k].shape) != tuple(target.state_dict()[k].shape) for k in own & set(visual_sd)):
            raise WeightsError(
                f"{path}: FAMix checkpoint does not fit backbone {backbone}: {_first_mismatches(target, visual_sd)}"
            )
        target.load_state_dict(visual_sd, strict=False)
        return False
    own = model.state_dict()
    bad = set(own) != set(sd) or any(tuple(sd[k].shape) != tuple(own[k].shape) for k in own)
    if bad:
        raise WeightsError(f"{path}: CLIP state dict does not fit backbone {backbone}: {_first_mismatches(model, sd)}")
    model.load_state_dict(sd, strict=True)
    return True


class _DropRandomInitWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("No pretrained weights loaded")


_HINT = "use model.pretrained=none for random init or a path to a local CLIP state dict"


def _cache_where(cache_dir: str | None) -> str:
    return cache_dir or "open_clip's default cache (~/.cache/huggingface or ~/.cache/clip)"


def locate_weights(backbone: str, pretrained: str, cache_dir: str | None = None) -> tuple[str | None, str | None]:
    """Where :func:`create_clip` takes ``pretrained`` from, checked without building anything: a command
    calls it first, so a weights mistake is its first and only line.

    Returns:
        ``(local file, None)`` for a packaged, cached or given file; ``(None, tag)`` for an open_clip tag
        to download; ``(None, None)`` for ``none`` (random init).

    Raises:
        WeightsError: unknown backbone or weights, a missing file, or an uncached tag whose host does
            not resolve (an offline machine).
    """
    spec = get_backbone_spec(backbone)  # names are checked before importing open_clip (4 s)
    tag = pretrained if pretrained not in ("none", "", None) else None
    if tag is None:
        return None, None
    packaged = packaged_path(backbone, tag)
    if packaged is not None:
        if not packaged.is_file():
            raise WeightsError(f"model.pretrained={tag}: the package's file {packaged} is missing (reinstall)")
        return str(packaged), None
    if is_packaged(tag):
        raise WeightsError(f"model.pretrained: the packaged weights {tag!r} exist for {', '.join(PACKAGED_WEIGHTS[tag])}, not for backbone {backbone}")
    if tag in spec.pretrained_tags:
        from famix_core.models.download import cached_file, offline_error

        hit = cached_file(spec.open_clip_name, tag, cache_dir)  # fetched by the driver: no network on the nodes
        if hit is not None:
            return str(hit), None
        offline = offline_error(backbone, spec.open_clip_name, tag, cache_dir)
        if offline is not None:
            raise offline
        return None, tag
    if looks_like_path(tag):
        local_path = str(Path(tag).expanduser())
        if Path(local_path).is_dir():
            raise WeightsError(f"model.pretrained: {local_path} is a folder; expected a weights file in it (a CLIP or FAMix checkpoint)")
        if not Path(local_path).is_file():
            raise WeightsError(f"model.pretrained: weights file not found: {local_path}")
        check_weights_format(local_path)
        return local_path, None
    shipped = tuple(n for n, files in PACKAGED_WEIGHTS.items() if backbone in files)
    known = ", ".join(("none",) + shipped + spec.pretrained_tags + ("<path to a CLIP or FAMix checkpoint>",))
    raise WeightsError(f"model.pretrained: unknown weights {tag!r} for backbone {backbone} (known: {known})")


def create_clip(
    backbone: str,
    pretrained: str = "none",
    cache_dir: str | None = None,
    device: torch.device | str | None = None,
    *,
    needs_text: bool = False,
) -> nn.Module:
    """Build a full open_clip CLIP model (``.visual`` ModifiedResNet + text encoder), in eval mode.

    Args:
        backbone: a name of :data:`BACKBONE_REGISTRY` (``RN50``, ``RN101``, ``famix-tiny``).
        pretrained: ``"none"`` (random init), an open_clip tag (``"openai"``) or a local file path.
        cache_dir: open_clip's download cache for tags.
        device: where the model goes (default CPU).
        needs_text: the caller reads the text encoder (mining): a FAMix segmenter checkpoint, which
            leaves it random, gets a :class:`~famix_core.errors.FamixWarning`.

    Returns:
        The CLIP model (``encode_image`` / ``encode_text``; ``.visual`` exposes the stages).

    Raises:
        WeightsError: unknown backbone, weights that cannot be downloaded, a missing or mismatched file.
    """
    spec = get_backbone_spec(backbone)
    kwargs: dict[str, Any] = dict(spec.model_overrides())
    local_path, oc_pretrained = locate_weights(backbone, pretrained, cache_dir)
    import open_clip

    # open_clip warns "No pretrained weights loaded for model 'RN50'" on every random init, naming
    # its base config even for famix-tiny; random init is what the config asked for, so drop it.
    quiet = _DropRandomInitWarning() if oc_pretrained is None else None
    if quiet:
        logging.getLogger().addFilter(quiet)
    try:
        model = open_clip.create_model(
            spec.open_clip_name,
            pretrained=oc_pretrained,
            cache_dir=cache_dir,
            force_quick_gelu=spec.quick_gelu,
            **kwargs,
        )
    except RuntimeError as e:
        if oc_pretrained is None:
            raise
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise WeightsError(
            f"model.pretrained={oc_pretrained!r}: cannot get {backbone} weights (cache dir: {_cache_where(cache_dir)}): {first[:200]}; {_HINT}"
        ) from None
    finally:
        if quiet:
            logging.getLogger().removeFilter(quiet)
    if local_path is not None and not _load_clip_file(model, local_path, backbone) and needs_text:
        warnings.warn(
            FamixWarning(
                f"model.pretrained={pretrained}: a FAMix segmenter checkpoint holds the image encoder only, so the text "
                "encoder that mining matches styles against stays random and the styles follow no prompt; "
                "mine with CLIP weights (famix-synth, openai or a CLIP state dict)"
            ),
            stacklevel=2,
        )
    if device is not None:
        model = model.to(torch.device(device))
    return model.eval()


def create_visual(
    backbone: str,
    pretrained: str = "none",
    cache_dir: str | None = None,
    device: torch.device | str | None = None,
) -> nn.Module:
    """Only the image encoder (open_clip ModifiedResNet) of :func:`create_clip`, in eval mode.

    With ``pretrained="none"`` the text tower is never built (the segmenter needs none);
    otherwise the whole CLIP is loaded and its ``.visual`` returned.
    """
    if pretrained not in ("none", "", None):
        return create_clip(backbone, pretrained, cache_dir=cache_dir, device=device).visual
    from open_clip.modified_resnet import ModifiedResNet

    import open_clip

    spec = get_backbone_spec(backbone)
    cfg = open_clip.get_model_config(spec.open_clip_name)
    cfg.update(spec.model_overrides())
    vision = cfg["vision_cfg"]
    width = vision.get("width", 64)
    visual = ModifiedResNet(
        layers=vision["layers"],
        output_dim=cfg["embed_dim"],
        heads=width * 32 // 64,  # as open_clip builds it
        image_size=vision.get("image_size", 224),
        width=width,
    )
    if device is not None:
        visual = visual.to(torch.device(device))
    return visual.eval()


def get_tokenizer(backbone: str):
    """The open_clip tokenizer of a backbone (BPE vocabulary ships with open_clip: no network).

    Returns:
        Callable ``tokenizer(list[str]) -> LongTensor (N, context_length)``.
    """
    import open_clip

    spec = get_backbone_spec(backbone)
    ctx = spec.model_overrides().get("text_cfg", {}).get("context_length")
    return open_clip.get_tokenizer(spec.open_clip_name, context_length=ctx)


def _out_channels(module: nn.Module) -> int:
    """Output channels of a stage: those of its last BatchNorm (conv3 bn of the last bottleneck)."""
    last = None
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            last = m
    if last is None:
        raise ValueError(f"no BatchNorm2d in {type(module).__name__}: cannot read its channel count")
    return int(last.num_features)


def stage_channels(visual: nn.Module) -> dict[str, int]:
    """Output channel count of each stage of a ModifiedResNet, read from its modules.

    Args:
        visual: an open_clip ModifiedResNet (``clip.visual``) or a Segmenter backbone.

    Returns:
        ``{"stem": C0, "layer1": C1, ..., "layer4": C4}`` (RN50: 64, 256, 512, 1024, 2048).
    """
    out = {"stem": int(visual.bn3.num_features)}
    for name in STAGES[1:]:
        out[name] = _out_channels(getattr(visual, name))
    return out
