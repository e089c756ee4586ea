"""Typed configuration of the FAMix engine: one model per concern.

Every number of the method (docs/method.md) is a field here. Configs hold names,
not classes, so they serialize to YAML/JSON/MLflow params; they are validated on
construction and a bad value names its dotted field.

This module imports no torch: the orchestrator validates sweep files with it.
The implementation registries (backbones, strategies, prompt types) must hold
exactly the names listed here; ``tests/test_config.py`` checks that.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Annotated, Any, Literal, Sequence

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from famix_core.classes import NUM_CLASSES
from famix_core.config_io import apply_overrides, check_overrides, parse_overrides, read_yaml, validate
from famix_core.domains import (
    DEFAULT_TARGETS, SHARED_FOLDERS, UnknownDomainError, repeated_domain, resolve_domain, unknown_domain,
)
from famix_core.errors import ConfigError, FamixDeprecation, unknown

__all__ = [
    "SEED_MAX",
    "check_seed",
    "parse_device_spec",
    "Seed",
    "check_backbone",
    "Backbone",
    "PRECISIONS",
    "BACKBONES",
    "FREEZE_POLICIES",
    "STRATEGIES",
    "PROMPT_TYPES",
    "ModelConfig",
    "StyleConfig",
    "MiningConfig",
    "SynthConfig",
    "DataConfig",
    "TrainConfig",
    "EvalConfig",
    "FamixConfig",
    "load_config",
    "config_paths",
]

Precision = Literal["fp32", "bf16"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16")
"""Compute precision of a stage: fp32 (the official recipe), or bf16 autocast (style statistics stay fp32)."""

BACKBONES: tuple[str, ...] = ("RN50", "RN101", "famix-tiny")
"""CLIP ModifiedResNet architectures (``famix-tiny``: width 16, one block per stage, 64 px)."""

FREEZE_POLICIES: tuple[str, ...] = ("none", "layer3", "paper", "all")
"""Stage boundaries: train everything; freeze stem..layer3; FAMix's, by source (all but ``layer4[-1]`` for GTA5 and
SYNTHIA, stem..layer3 for Cityscapes); freeze the whole backbone."""

STRATEGIES: tuple[str, ...] = ("none", "famix", "mixstyle", "noise")
"""Feature-style strategies acting on layer-1 features during training."""

PROMPT_TYPES: tuple[str, ...] = ("class", "chars", "style", "chars_class", "style_class")
"""Prompt types for style mining (docs/method.md): class name; random characters; random style; and the combinations."""


SEED_MAX = 2**32 - 1
"""The largest seed: numpy's generators take none below 0, and every seed fits every RNG below 2**32."""


def check_seed(v: int) -> int:
    """``v`` if it is a seed (0 to :data:`SEED_MAX`), else ValueError in the one wording of every seed field."""
    if not 0 <= v <= SEED_MAX:
        raise ValueError(f"expected a seed from 0 to {SEED_MAX}, got {v}")
    return v


def _not_a_bool(v: Any) -> Any:
    if isinstance(v, bool):  # YAML's yes/true would be seed 1
        raise ValueError(f"expected a seed from 0 to {SEED_MAX}, got {str(v).lower()}")
    return v


Seed = Annotated[int, BeforeValidator(_not_a_bool), AfterValidator(check_seed)]
"""A seed field: an integer from 0 to :data:`SEED_MAX`."""


def check_backbone(v: str) -> str:
    """``v`` if it names a backbone of :data:`BACKBONES`, else ValueError listing them."""
    if v not in BACKBONES:
        raise ValueError(unknown("backbone", v, BACKBONES))
    return v


Backbone = Annotated[str, AfterValidator(check_backbone)]
"""A backbone field: a name of :data:`BACKBONES` (checked with the config, before any work)."""

DEVICE_SPECS = "auto, cpu, cuda or cuda:N"


def parse_device_spec(spec: str) -> str:
    """``train.device`` as a canonical spec (``auto``, ``cpu``, ``cuda`` or ``cuda:N``), checked
    without torch: the config refuses a bad one before anything runs, and
    :func:`famix_core.device.pick_device` reads it the same way where the stage runs.

    Raises:
        ValueError: not one of those.
    """
    v = spec.strip().lower()
    kind, _, index = v.partition(":")
    if v in ("auto", "cpu", "cuda") or (kind == "cuda" and index.isdigit()):
        return v
    raise ValueError(f"unknown device {spec!r} (expected {DEVICE_SPECS})")


def _holds(annotation: Any, kinds: tuple[type, ...]) -> bool:
    """Whether ``annotation`` is one of ``kinds`` or has one inside (``int | None``, ``list[float]``)."""
    import typing

    return annotation in kinds or any(_holds(a, kinds) for a in typing.get_args(annotation) if not isinstance(a, (int, str)))


def no_boolean_for_a_number(cls: type[BaseModel], v: Any, info: Any) -> Any:
    """A ``field_validator("*", mode="before")`` for models read from YAML: ``iterations: true`` (or
    ``yes``, ``on``: YAML booleans) was read as 1, ``false`` as 0, wherever a number goes."""
    if v is not True and v is not False and not (isinstance(v, (list, tuple)) and any(isinstance(x, bool) for x in v)):
        return v  # the common case, first: this runs for every field of every config validated
    annotation = cls.model_fields[info.field_name].annotation
    if _holds(annotation, (int, float)) and not _holds(annotation, (bool,)):
        raise ValueError(f"expected a number, got {str(v).lower()} (true/false, yes/no and on/off are YAML booleans)")
    return v


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    _no_boolean_for_a_number = field_validator("*", mode="before")(no_boolean_for_a_number)


class ModelConfig(_Base):
    """The segmenter: CLIP ResNet backbone + DeepLabv3+ head."""

    backbone: Backbone = Field("RN50", description=f"one of {BACKBONES}")
    pretrained: str = Field(
        "openai",
        description="'openai' (open_clip download/cache), 'none' (random init), 'famix-synth' (famix-tiny weights"
        " shipped in the package), or a path to a CLIP or FAMix checkpoint",
    )
    cache_dir: str | None = Field(None, description="open_clip weights cache directory")
    output_stride: Literal[8, 16, 32] = 16
    num_classes: int = Field(NUM_CLASSES, description="the 19 Cityscapes train ids every domain's labels are mapped to")
    freeze: str = Field("paper", description=f"one of {FREEZE_POLICIES}")
    aspp_dropout: float = Field(0.1, ge=0.0, lt=1.0)

    @field_validator("pretrained")
    @classmethod
    def _pretrained(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("empty: expected none, famix-synth, openai or a path to a CLIP or FAMix checkpoint")
        return v

    @field_validator("num_classes")
    @classmethod
    def _num_classes(cls, v: int) -> int:
        # a training with fewer classes failed at its first loss (a label id out of range); more are never seen
        if v != NUM_CLASSES:
            raise ValueError(
                f"{v}, but every domain's labels are mapped to the {NUM_CLASSES} Cityscapes train ids; expected {NUM_CLASSES}"
            )
        return v

    @field_validator("freeze")
    @classmethod
    def _freeze(cls, v: str) -> str:
        if v not in FREEZE_POLICIES:
            raise ValueError(unknown("freeze policy", v, FREEZE_POLICIES))
        return v


class StyleConfig(_Base):
    """Where and how styles act on layer-1 features (training only).

    ``strategy`` picks the source of target statistics; ``augment`` and ``mix``
    are the paper's ablation toggles. For ``famix``: augment off + mix on is
    MixStyle, both off is plain training (see :meth:`effective_strategy`).
    """

    strategy: str = Field("famix", description=f"one of {STRATEGIES}")
    augment: bool = True
    mix: bool = True
    alpha: float = Field(0.1, gt=0.0, description="Beta(alpha, alpha) mixing weight s")
    grid: int = Field(3, ge=1, description="patches per side")
    eps: float = Field(1e-5, gt=0.0)
    noise_std: float = Field(1.0, ge=0.0, description="'noise': scale of the Gaussian perturbation, in batch std units")
    detach_stats: bool = Field(
        False,
        description="no gradient through the patch mean and std (as the original MixStyle); matters only when "
        "layers before the op train (model.freeze=none): the official code never runs that case",
    )

    @field_validator("strategy")
    @classmethod
    def _strategy(cls, v: str) -> str:
        if v not in STRATEGIES:
            raise ValueError(unknown("style strategy", v, STRATEGIES))
        return v

    def effective_strategy(self) -> str:
        """The strategy actually run, after the augment/mix toggles."""
        if self.strategy == "famix" and not self.augment:
            return "mixstyle" if self.mix else "none"
        return self.strategy

    def needs_bank(self) -> bool:
        return self.effective_strategy() == "famix"


class MiningConfig(_Base):
    """Offline prompt-driven style mining (docs/method.md)."""

    prompt: str = Field("style_class", description=f"one of {PROMPT_TYPES}")
    steps: int = Field(100, ge=1)
    lr: float = Field(1.0, gt=0.0)
    momentum: float = Field(0.9, ge=0.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    batch_size: int = Field(16, ge=1)
    crop_size: int = Field(768, ge=8)
    epochs: int = Field(
        1, ge=1, description="passes over the source (official: 1); each pass draws new crops and prompt words"
    )
    max_batches: int | None = Field(
        None, ge=1, description="mine from at most this many source batches in all (None: every batch of every epoch)"
    )
    patches_per_step: int = Field(256, ge=1, description="kept patches optimized together in one batched problem")
    precision: Precision = Field("fp32", description="fp32 | bf16 autocast of the style optimization (CLIP forward/backward)")
    seed: Seed = 0

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, v: str) -> str:
        if v not in PROMPT_TYPES:
            raise ValueError(unknown("prompt type", v, PROMPT_TYPES))
        return v


class SynthConfig(_Base):
    """The built-in synthetic benchmark (generated under ``data.root`` when missing)."""

    seed: Seed = 0
    height: int = Field(128, ge=32)
    width: int = Field(256, ge=32)
    train_images: int = Field(64, ge=1, description="source (gta5/synthia) images")
    val_images: int = Field(16, ge=1, description="images per target domain split")


def layer1_side(crop: int) -> int:
    """Layer-1 feature side of a ``crop``-pixel side through the CLIP ResNet stem (a stride-2 convolution
    with padding 1, then a 2×2 average pool): ``floor(ceil(crop / 2) / 2)``, one more than ``crop // 4``
    when ``crop % 4 == 3``."""
    return (crop + 1) // 4


def _folder_path(v: str) -> str:
    """A path as the shell would have given it (``~`` expanded: ``data.root=~/datasets`` is not a shell
    word, so the shell leaves it); an empty one, which would read the current folder, is refused."""
    if not v.strip():
        raise ValueError("expected a path, got an empty string")
    return os.path.expanduser(v)


class DataConfig(_Base):
    """Where the datasets are and how training batches are made."""

    root: str = Field("data", description="folder holding one sub-folder per dataset (see famix_core.domains)")
    roots: dict[str, str] = Field(default_factory=dict, description="per-domain root overrides, by name or column")
    source: str = "gta5"
    synthetic: SynthConfig | None = Field(None, description="use (and generate if missing) the synthetic benchmark")
    split_file: str | None = Field(None, description="optional list of source file stems to train on")
    crop_size: int = Field(768, ge=8)
    mapillary_protocol: Literal["official", "ignore_pad"] = Field(
        "official",
        description="Mapillary evaluation: resize to height mapillary_size, centre crop mapillary_size^2; the pad of"
        " narrower images is label 0 (road) as in the official code, or 255 (ignore_pad)",
    )
    mapillary_size: int = Field(1536, ge=1, description="height and crop side of the Mapillary evaluation (1536 in the paper)")
    synthia_protocol: Literal["official", "ignore_pad"] = Field(
        "official",
        description="SYNTHIA as a source: the pad of the random size-and-crop is label 0 (road) as in the official"
        " code, or 255 (ignore_pad)",
    )
    synthia_crop: int = Field(720, ge=1, description="SYNTHIA as a source: random crop side before the resize to crop_size")
    synthia_scale: tuple[float, float] = Field((0.5, 2.0), description="SYNTHIA as a source: random scale range")
    jitter: tuple[float, float, float] = Field(
        (0.8, 0.8, 0.8), description="colour jitter of the source crops: brightness, contrast, saturation (0: off)"
    )
    hflip: bool = True
    num_workers: int | None = Field(
        None, ge=0, description="loader worker processes; unset: SLURM_CPUS_PER_TASK or the CPU affinity, minus one"
    )

    @field_validator("jitter")
    @classmethod
    def _jitter(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if min(v) < 0:
            raise ValueError(f"expected three factors >= 0 (brightness, contrast, saturation; 0 turns one off), got {list(v)}")
        return v

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        d = resolve_domain(v)
        if d.name not in ("gta5", "synthia", "cityscapes"):
            raise ValueError(f"source must be gta5, synthia or cityscapes, got {v!r}")
        return d.name

    @field_validator("root")
    @classmethod
    def _root(cls, v: str) -> str:
        return _folder_path(v)

    @field_validator("split_file")
    @classmethod
    def _split_file(cls, v: str | None) -> str | None:
        return None if v is None or not v.strip() else _folder_path(v)  # data.split_file= clears a profile's list

    @field_validator("roots")
    @classmethod
    def _roots(cls, v: dict[str, str]) -> dict[str, str]:
        """Keyed by domain name (a column is one too), or by a dataset folder that holds several
        domains (``acdc``: its four conditions), which a domain's own key beats in any order."""
        by_domain, by_folder = {}, {}
        for k, p in v.items():
            try:
                names, into = [resolve_domain(k).name], by_domain
            except UnknownDomainError:
                names, into = SHARED_FOLDERS.get(k, []), by_folder
                if not names:
                    raise unknown_domain(k, folders=list(SHARED_FOLDERS)) from None
            try:
                path = _folder_path(p)
            except ValueError as e:  # which domain's root
                raise ValueError(f"{k}: {e}") from None
            into.update(dict.fromkeys(names, path))
        return {**by_folder, **by_domain}

    @field_validator("synthia_scale")
    @classmethod
    def _synthia_scale(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 < v[0] <= v[1]:
            raise ValueError(f"expected 0 < min <= max, got {list(v)}")
        return v

    def train_protocol(self) -> dict[str, Any]:
        """The fields of this config that the source's training transform reads besides crop/jitter/flip."""
        if self.source == "synthia":
            return {"synthia_protocol": self.synthia_protocol, "synthia_crop": self.synthia_crop,
                    "synthia_scale": list(self.synthia_scale)}  # fmt: skip
        return {}

    def eval_protocol(self, domain: str) -> dict[str, Any]:
        """The fields of this config that a domain's evaluation reads besides its files (stage keys hash them)."""
        if resolve_domain(domain).name == "mapillary":
            return {"mapillary_protocol": self.mapillary_protocol, "mapillary_size": self.mapillary_size}
        return {}

    def root_of(self, domain: str) -> Path:
        """Root folder of a domain (override, else ``root/<folder>``)."""
        d = resolve_domain(domain)
        if d.name in self.roots:
            return Path(self.roots[d.name])
        return Path(self.root) / d.folder


class TrainConfig(_Base):
    """The training recipe (docs/method.md)."""

    iterations: int = Field(40_000, ge=1)
    batch_size: int = Field(8, description="images per step, >= 2 (the decoder's BatchNorms train on the batch)")
    lr_decoder: float = Field(0.1, gt=0.0)
    lr_backbone: float = Field(0.01, gt=0.0)
    momentum: float = Field(0.9, ge=0.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    poly_power: float = Field(0.9, gt=0.0)
    min_lr: float = Field(1e-6, ge=0.0)
    label_smoothing: float = Field(0.1, ge=0.0, lt=1.0)
    checkpoint_every: int = Field(1000, ge=1, description="iterations between periodic checkpoints")
    log_every: int = Field(50, ge=1)
    seed: Seed = 0
    device: Annotated[str, AfterValidator(parse_device_spec)] = Field(
        "auto", description="'auto' (CUDA when present), 'cpu', 'cuda', 'cuda:N'"
    )
    select: Literal["last", "best_source_val"] = Field(
        "last", description="which weights the training outputs: the last, or the best on the source val split"
    )
    val_every: int | None = Field(
        None, ge=1, description="validate on the source val split every N iterations and at the last (paper: 750); None: never"
    )
    val_crop: tuple[int, int] | None = Field(
        (1046, 1914), description="centre crop (h, w) of GTA5 source-val images (official); other sources: full images"
    )
    cpu_fallback: bool = Field(
        True, description="device=auto without a GPU: run on the CPU with a warning (true) or refuse (false: paper profile)"
    )
    precision: Precision = Field(
        "fp32",
        description="fp32 (the official recipe) | bf16 autocast of the segmenter forward and the loss",
        json_schema_extra={"also": ["amp"]},  # its former name: a config file's `amp` is still read (_amp)
    )
    channels_last: bool = Field(True, description="channels_last memory format on CUDA (training and evaluation)")
    deterministic: bool = Field(
        False,
        description="CUDA: deterministic kernels (cuBLAS workspace, no cuDNN benchmark) instead of benchmark mode; "
        "CPU runs are bit-exact either way (docs/gpu.md)",
    )

    @field_validator("batch_size")
    @classmethod
    def _batch_size(cls, v: int) -> int:
        if v < 2:  # BatchNorm of ASPP's image pooling sees one value per channel and image
            raise ValueError(f"expected >= 2 (the decoder's BatchNorm layers need two images to normalize over), got {v}")
        return v

    @model_validator(mode="after")
    def _select_needs_validation(self) -> "TrainConfig":
        if self.select == "best_source_val" and self.val_every is None:
            raise ValueError("select=best_source_val needs val_every (source validation every N iterations, paper: 750)")
        if self.val_crop is not None and min(self.val_crop) < 1:
            raise ValueError(f"val_crop must be two positive sizes (h, w), got {list(self.val_crop)}")
        return self

    @model_validator(mode="before")
    @classmethod
    def _amp(cls, data: Any) -> Any:
        """Read the former ``amp`` bool as ``precision`` (``amp: true`` = ``precision: bf16``)."""
        if not isinstance(data, dict) or "amp" not in data:
            return data
        data = dict(data)
        amp = data.pop("amp")
        if not isinstance(amp, bool):
            raise ValueError(f"amp: replaced by train.precision (fp32 | bf16); got amp={amp!r}")
        want = "bf16" if amp else "fp32"
        if "precision" in data and data["precision"] != want:
            raise ValueError(f"amp: replaced by train.precision; amp={str(amp).lower()} contradicts precision={data['precision']}")
        data["precision"] = want
        warnings.warn(f"train.amp is replaced by train.precision: read amp={str(amp).lower()} as precision={want}", FamixDeprecation, stacklevel=2)
        return data


class EvalConfig(_Base):
    """Evaluation on target domains."""

    domains: list[str] = Field(default_factory=lambda: list(DEFAULT_TARGETS), min_length=1)
    split: str = "val"
    scales: list[float] = Field(
        default_factory=lambda: [1.0],
        min_length=1,
        description="test-time input scales; [0.5] = official --scale 0.5, [1.0, 0.5] = --scale 0.5 --ensemble (logits averaged)",
    )
    max_images: int | None = Field(None, ge=1)
    batch_size: int = Field(1, ge=1)
    precision: Precision = Field("fp32", description="fp32 | bf16 autocast of the segmenter forward")

    @field_validator("domains")
    @classmethod
    def _domains(cls, v: list[str]) -> list[str]:
        if repeated_domain(v) is not None:
            raise ValueError(f"duplicate domains in {v}")
        return [resolve_domain(d).short_name for d in v]

    @field_validator("scales")
    @classmethod
    def _scales(cls, v: list[float]) -> list[float]:
        if any(s <= 0 for s in v):
            raise ValueError(f"scales must be > 0, got {v}")
        return v


# Fields added after trial ids and stage keys were pinned (tests/test_config_io.py), with the default
# that does what the engine did before they existed: left out of identities while they hold it.
IDENTITY_NEUTRAL: dict[tuple[str, str], Any] = {("mining", "epochs"): 1, ("style", "detach_stats"): False}


class FamixConfig(_Base):
    """The whole engine config; the orchestrator hashes sub-trees of it into stage keys."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    style: StyleConfig = Field(default_factory=StyleConfig)
    mining: MiningConfig = Field(default_factory=MiningConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @model_validator(mode="after")
    def _grid_fits_the_crops(self) -> "FamixConfig":
        """``style.grid`` splits layer-1 features (a quarter of a crop's side) into patches: each patch needs
        a feature (a grid of 1000 failed in every stage, after the plan had passed it)."""
        if self.style.effective_strategy() == "none":
            return self
        crops = {"data.crop_size": self.data.crop_size}
        if self.style.needs_bank():
            crops["mining.crop_size"] = self.mining.crop_size
        key, crop = min(crops.items(), key=lambda kv: kv[1])
        side = layer1_side(crop)
        if self.style.grid > side:
            raise ValueError(
                f"style.grid={self.style.grid}: more patches a side than the layer-1 features of {key}={crop} have"
                f" ({side}, a quarter of the crop); expected at most {side}"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def identity_dict(self) -> dict[str, Any]:
        """:meth:`to_dict` without the fields of :data:`IDENTITY_NEUTRAL` that hold their default.

        What trial ids and stage keys hash: a field added later, left at its default, must not re-key
        the run dirs made before it existed.
        """
        d = self.to_dict()
        for (section, key), default in IDENTITY_NEUTRAL.items():
            if d[section].get(key) == default:
                del d[section][key]
        return d

    def flat(self) -> dict[str, Any]:
        """Dotted key -> value (for MLflow params)."""
        out: dict[str, Any] = {}

        def walk(prefix: str, node: Any) -> None:
            if isinstance(node, dict) and node and prefix != "data.roots":
                for k, v in node.items():
                    walk(f"{prefix}.{k}" if prefix else k, v)
            else:
                out[prefix] = json.dumps(node) if isinstance(node, (list, dict)) else node

        walk("", self.to_dict())
        return out


def config_paths(schema: type[BaseModel] | None = None) -> list[str]:
    """Every dotted path of ``schema`` (default :class:`FamixConfig`): ``model``, ``model.freeze``, ``data.synthetic.seed`` …"""
    out: list[str] = []

    def walk(prefix: str, model: type[BaseModel]) -> None:
        for name, f in model.model_fields.items():
            path = f"{prefix}.{name}" if prefix else name
            out.append(path)
            sub = _submodel(f.annotation)
            if sub is not None:
                walk(path, sub)

    walk("", schema or FamixConfig)
    return out


def _submodel(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def sweep_file_keys(data: dict[str, Any]) -> str | None:
    """``name and grid, seeds`` when a YAML mapping reads as a sweep file rather than a config, else None."""
    found = [k for k in ("grid", "zip", "seeds", "profiles", "base") if k in data]
    return f"name and {', '.join(found)}" if "name" in data and found else None


def load_config(
    path: str | Path | None = None, overrides: Sequence[str] = (), *, schema: type[BaseModel] | None = None
) -> Any:
    """Load a config from YAML/JSON and apply command-line overrides (:func:`famix_core.config_io.parse_overrides`).

    ``schema`` is the model validated (default :class:`FamixConfig`; e.g. the pretraining config).

    Raises:
        ConfigError: one line naming the file (``config`` without one) or ``command line``, the
            dotted key and what was expected.
    """
    schema = schema or FamixConfig
    source = str(path) if path else "config"
    data: Any = {}
    if path is not None:
        data = read_yaml(path, source)
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
        if (keys := sweep_file_keys(data)) and "name" not in schema.model_fields:
            raise ConfigError(  # was "name: unknown key (+8 more)"
                f"{source}: a sweep file (it has {keys}), not a config; run it with `famix sweep run {path}`, or give a"
                " trial's config.yaml"
            )
    parsed = parse_overrides(overrides)
    after = apply_overrides(data, parsed, tree_source=source)
    if parsed:
        check_overrides(schema, data, after, config_paths(schema))
    return validate(schema, after, source, valid_keys=config_paths(schema), overridable=True)
