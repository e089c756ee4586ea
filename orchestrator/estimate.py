"""``famix sweep plan --estimate``: device time of every stage from short probes, before submitting.

Each distinct stage kind is timed on this machine's device on random inputs of its real shapes
(:mod:`famix_core.probe`; no dataset, no weights): trainings once per distinct compute
signature (backbone, stride, batch, crop, freeze, style op on/off, precision), mining and
evaluation once each. The per-unit times are multiplied by what each stage does:

  * train: ``train.iterations`` iterations, plus, with ``train.val_every``, one scale-1 evaluation
    of the source's val split every ``val_every`` iterations and at the last (:data:`SOURCE_VAL`,
    GTA5 centre-cropped to ``train.val_crop``), timed by the evaluation probe;
  * mine: groups of ``mining.patches_per_step`` patches x ``mining.steps`` steps, with at most one
    kept patch per class (and ignore) per source batch, the source read ``mining.epochs`` times (or
    ``mining.max_batches`` batches): an upper bound;
  * evaluate: the split's images x seconds per image, scaled by pixel count from the probed size.

Split sizes come from the real datasets' published sizes (:data:`SOURCE_IMAGES`,
:data:`EVAL_SPLITS`) or the synthetic settings. On a machine without a GPU the probes run on the
CPU, at reduced shapes when the full ones would take too long (a reduced probe that turns out cheap
runs again at the real shape: :data:`CPU_FULL_PROBE_S`), and the output says so. This is
the only part of ``sweep plan`` that computes anything (torch is imported here, lazily).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from famix_core.config import FamixConfig
from famix_core.domains import resolve_domain
from famix_core.text import count
from orchestrator.stages import STAGE_KINDS

if TYPE_CHECKING:
    from orchestrator.plan import Plan

__all__ = ["SOURCE_IMAGES", "SOURCE_VAL", "EVAL_SPLITS", "StageEstimate", "estimate_plan", "print_estimate", "split_size"]

SOURCE_IMAGES: dict[str, int] = {"gta5": 12382, "synthia": 6580, "cityscapes": 2975}
"""Training images of each source domain (GTA5: the official gtav_split_train.txt list; SYNTHIA-RAND-CITYSCAPES
minus the 2,820 of synthia_split_val.txt; Cityscapes train)."""

EVAL_SPLITS: dict[str, tuple[int, int, int]] = {
    "cityscapes": (500, 1024, 2048),
    "bdd100k": (1000, 720, 1280),
    "mapillary": (2000, 1536, 1536),
    "synthia": (2820, 760, 1280),
    "acdc_night": (106, 1080, 1920),
    "acdc_snow": (100, 1080, 1920),
    "acdc_rain": (100, 1080, 1920),
    "acdc_fog": (100, 1080, 1920),
}
"""Domain -> (val images, height, width) at full resolution (Mapillary: its typical evaluation size)."""

SOURCE_VAL: dict[str, tuple[int, int, int]] = {**EVAL_SPLITS, "gta5": (1000, 1052, 1914)}
"""Source domain -> (val images, height, width) that source validation scores: GTA5's
gtav_split_val.txt, else the domain's evaluation split (SYNTHIA: synthia_split_val.txt)."""

CPU_MAX_TRAIN = (2, 128)  # batch (>= 2 for the ASPP pooling BatchNorm), crop: larger iterations are probed at this size on the CPU
CPU_MAX_PATCHES = 2
CPU_MAX_PIXELS = 256 * 128
CPU_FULL_PROBE_S = 30.0
"""A reduced CPU probe whose scaled-up units would take at most this long in all is run again at the
real shape, and that time is used: scaling up from a tiny probe counts its fixed costs many times
(the smoke ablation's mining read 0.11 h from 2 patches per step; it takes 20 s)."""
GPU_COUNTS = (5, 20)  # warm-up, timed units
CPU_COUNTS = (1, 1)


@dataclass
class StageEstimate:
    """The estimate of one stage."""

    kind: str
    key: str
    seconds: float
    limit_min: int
    gpus: int
    to_run: bool
    what: str


def split_size(
    cfg: FamixConfig, domain: str, split: str, published: dict[str, tuple[int, int, int]] = EVAL_SPLITS
) -> tuple[int, int, int]:
    """(images, height, width) of a domain split: the synthetic settings, else the published sizes
    (a val split: ``published``, by default the evaluation splits)."""
    d = resolve_domain(domain)
    syn = cfg.data.synthetic
    if syn is not None and d.name not in cfg.data.roots:
        n = syn.train_images if split == "train" else syn.val_images
        return n, syn.height, syn.width
    if split == "train":
        return SOURCE_IMAGES.get(d.name, SOURCE_IMAGES["gta5"]), 1052, 1914
    return published.get(d.name, EVAL_SPLITS["cityscapes"])


def source_val_size(cfg: FamixConfig) -> tuple[int, int, int]:
    """(images, height, width) that one source validation scores: the source's val split, a GTA5
    source's images centre-cropped to ``train.val_crop`` (:mod:`famix_core.source_val`)."""
    n, h, w = split_size(cfg, cfg.data.source, "val", SOURCE_VAL)
    if cfg.train.val_crop is not None and resolve_domain(cfg.data.source).name == "gta5":
        h, w = min(h, cfg.train.val_crop[0]), min(w, cfg.train.val_crop[1])
    return n, h, w


def _train_signature(cfg: FamixConfig) -> tuple:
    m, t = cfg.model, cfg.train
    return (m.backbone, m.output_stride, m.freeze, t.batch_size, cfg.data.crop_size,
            cfg.style.effective_strategy(), t.precision, t.channels_last)  # fmt: skip


def _limits(plan: "Plan", kind: str) -> tuple[int, int]:
    """(Slurm time in minutes, GPUs) of a stage kind, by the slurm backend's own precedence."""
    from orchestrator.backends.slurm.options import stage_parameters

    be = plan.sweep.backend
    res = be.resources.get(kind)
    params = stage_parameters(kind, res.model_dump() if res is not None else {}, be.slurm)
    return int(params["time"]), int(params.get("gpus_per_node") or 0)


def estimate_plan(plan: "Plan", *, device: Any = None, say: Callable[[str], None] = print) -> tuple[list[StageEstimate], str]:
    """Probe each stage kind and estimate every stage of the plan.

    Args:
        plan: the planned sweep.
        device: where to probe (default: CUDA when present, else the CPU).
        say: receives one line per probe as it finishes.

    Returns:
        (one :class:`StageEstimate` per stage, in plan order; the device probed, as text).
    """
    import torch

    from famix_core import probe

    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cpu = dev.type == "cpu"
    warmup, iters = CPU_COUNTS if cpu else GPU_COUNTS
    status = plan.status()
    per_train: dict[tuple, float] = {}
    mine_step: float | None = None  # seconds per mining step, probed once
    per_pixel: dict[tuple[float, ...], float] = {}  # evaluation seconds per pixel, by test-time scales
    out: list[StageEstimate] = []

    def note(p: "probe.Probe", unit: str) -> None:
        if p.scale != 1.0:
            say(f"probe {p.kind}: {p.shape}: {p.seconds:.4g} s/{unit} (reduced from the real shape: x{p.scale:.3g}) -> {p.full_seconds:.4g} s/{unit}")
        else:
            say(f"probe {p.kind}: {p.shape}: {p.seconds:.4g} s/{unit}")

    def again(p: "probe.Probe") -> bool:
        """Whether a reduced CPU probe is cheap enough at the real shape to run there (:data:`CPU_FULL_PROBE_S`)."""
        return cpu and p.scale > 1.0 and p.full_seconds * (warmup + iters) <= CPU_FULL_PROBE_S

    def eval_seconds_per_pixel(cfg: FamixConfig, h: int, w: int) -> float:
        scales = tuple(cfg.eval.scales)
        if scales not in per_pixel:
            f = min(1.0, math.sqrt(CPU_MAX_PIXELS / (h * w))) if cpu else 1.0
            ph, pw = max(32, round(h * f)), max(32, round(w * f))
            s = probe.probe_evaluate(cfg, dev, height=ph, width=pw, warmup=warmup, iters=iters)
            p = probe.Probe("evaluate", s, f"{cfg.model.backbone} {cfg.eval.precision}, {ph}x{pw}, scales {list(scales)}",
                            (h * w) / (ph * pw))  # fmt: skip
            note(p, "image")
            per_pixel[scales] = p.seconds / (ph * pw)  # per pixel, for every split's size
        return per_pixel[scales]

    for key, st in plan.stages.items():
        cfg = FamixConfig.model_validate(st.config)
        limit, gpus = _limits(plan, st.kind)
        if st.kind == "train":
            sig = _train_signature(cfg)
            if sig not in per_train:
                b, c = cfg.train.batch_size, cfg.data.crop_size
                too_big = cpu and b * c * c > CPU_MAX_TRAIN[0] * CPU_MAX_TRAIN[1] ** 2
                pb, pc = (min(b, CPU_MAX_TRAIN[0]), min(c, CPU_MAX_TRAIN[1])) if too_big else (b, c)
                what = f"{cfg.model.backbone} OS{cfg.model.output_stride} freeze={cfg.model.freeze} style={cfg.style.effective_strategy()} {cfg.train.precision}"
                s = probe.probe_train(cfg, dev, batch=pb, crop=pc, warmup=warmup, iters=iters)
                p = probe.Probe("train", s, f"{what}, batch {pb}, crop {pc}", (b * c * c) / (pb * pc * pc))
                note(p, "iteration")
                if again(p):
                    p = probe.Probe("train", probe.probe_train(cfg, dev, batch=b, crop=c, warmup=warmup, iters=iters), f"{what}, batch {b}, crop {c}")
                    note(p, "iteration")
                per_train[sig] = p.full_seconds
            secs = per_train[sig] * cfg.train.iterations
            what = f"{cfg.train.iterations} iterations"
            if cfg.train.val_every is not None:
                checks = math.ceil(cfg.train.iterations / cfg.train.val_every)  # every val_every, and the last
                n, h, w = source_val_size(cfg)
                at_one = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"scales": [1.0]})})
                secs += checks * n * h * w * eval_seconds_per_pixel(at_one, h, w)
                what += f" + {count(checks, 'source validation')} of {count(n, 'image')}"
        elif st.kind == "mine":
            mc = cfg.mining
            if mine_step is None:
                k = min(mc.patches_per_step, CPU_MAX_PATCHES) if cpu else mc.patches_per_step
                s = probe.probe_mine(cfg, dev, patches=k, warmup=warmup, iters=iters)
                p = probe.Probe("mine", s, f"{cfg.model.backbone} {mc.precision}, {k} patches per step", mc.patches_per_step / k)
                note(p, "step")
                if again(p):
                    s = probe.probe_mine(cfg, dev, patches=mc.patches_per_step, warmup=warmup, iters=iters)
                    p = probe.Probe("mine", s, f"{cfg.model.backbone} {mc.precision}, {mc.patches_per_step} patches per step")
                    note(p, "step")
                mine_step = p.full_seconds
            n_src = split_size(cfg, cfg.data.source, "train")[0]
            batches = n_src // mc.batch_size * mc.epochs  # drop_last, as the mining loader
            if mc.max_batches is not None:
                batches = min(batches, mc.max_batches)
            groups = math.ceil(batches * (cfg.model.num_classes + 1) / mc.patches_per_step)
            secs = mine_step * groups * mc.steps
            what = f"<= {count(groups, 'group')} x {count(mc.steps, 'step')} ({count(batches, 'source batch', 'source batches')})"
        else:
            n, h, w = split_size(cfg, st.domain or "C", cfg.eval.split)
            if cfg.eval.max_images is not None:
                n = min(n, cfg.eval.max_images)
            secs = eval_seconds_per_pixel(cfg, h, w) * h * w * n
            what = f"{st.domain}: {count(n, 'image')} {w}x{h}"
        out.append(StageEstimate(st.kind, key, secs, limit, gpus, status[key] != "done", what))
    return out, str(dev)


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 360 else f"{seconds / 60:.1f} min"


def print_estimate(plan: "Plan", console: Any, *, device: Any = None) -> list[StageEstimate]:
    """Run :func:`estimate_plan` and print per stage kind, per sweep, and the stages over their Slurm ``time``."""
    import torch

    def say(line: str) -> None:
        console.print(line, highlight=False, markup=False)

    gpu = (device is None and torch.cuda.is_available()) or (device is not None and torch.device(device).type == "cuda")
    if gpu:
        say(f"estimate on {torch.cuda.get_device_name(torch.device(device) if device else None)}: "
            f"{GPU_COUNTS[1]} timed units after {GPU_COUNTS[0]} warm-up per probe, random inputs of the real shapes")  # fmt: skip
    else:
        say("no GPU on this machine: these are CPU estimates (a GPU is many times faster); probes ran at reduced "
            f"shapes (at most batch {CPU_MAX_TRAIN[0]}, crop {CPU_MAX_TRAIN[1]}, {CPU_MAX_PATCHES} patches, "
            f"{CPU_MAX_PIXELS} pixels) and were scaled to the real ones")  # fmt: skip
    ests, dev = estimate_plan(plan, device=device, say=say)
    unit = "GPU-hours" if gpu else "CPU-hours"
    total = {"all": 0.0, "run": 0.0}
    unchecked = 0  # stages given a GPU, timed here on the CPU: not held against their Slurm time
    for kind in STAGE_KINDS:
        ks = [e for e in ests if e.kind == kind]
        if not ks:
            continue
        worst = max(ks, key=lambda e: e.seconds)
        dev_h = sum(e.seconds * max(1, e.gpus) for e in ks) / 3600
        run_h = sum(e.seconds * max(1, e.gpus) for e in ks if e.to_run) / 3600
        total["all"] += dev_h
        total["run"] += run_h
        say(f"{kind:8s} {len(ks):3d} {'stage' if len(ks) == 1 else 'stages'}, each up to {_hours(worst.seconds)} ({worst.what}); "
            f"{dev_h:.2f} {unit} in all, {run_h:.2f} still to run")  # fmt: skip
        over = [e for e in ks if e.seconds > 60 * e.limit_min and (gpu or e.gpus == 0)]
        unchecked += sum(e.gpus > 0 for e in ks) if not gpu else 0
        if over:
            say(f"warning: {count(len(over), kind + ' stage')} {'needs' if len(over) == 1 else 'need'} up to {_hours(worst.seconds)}, over their Slurm time of "
                f"{worst.limit_min} min (set backend.slurm.{kind}.time, or backend.slurm.time)")  # fmt: skip
    say(f"sweep: {total['all']:.2f} {unit} in all, {total['run']:.2f} {unit} still to run (on {dev})")
    if unchecked:
        say(f"note: the Slurm time of the {count(unchecked, 'stage')} given a GPU (backend.resources or backend.slurm) is not compared with "
            "these CPU times; `famix sweep plan --estimate` on a GPU node compares it")  # fmt: skip
    return ests
