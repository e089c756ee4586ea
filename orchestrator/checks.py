"""Plan-time checks, before anything runs or is submitted: data folders and pretrained weights exist, and
``train.device`` is one of the devices the stages will have (this machine's, or the GPUs a scheduler gives them)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from famix_core.config import FamixConfig
from famix_core.errors import DataError
from famix_core.io import nearest_existing, what_blocks, write_denied
from famix_core.text import count
from famix_core.weights import is_packaged, packaged_path

__all__ = ["check_data", "check_weights", "check_device", "check_stage_gpus", "check_run_dir", "check_run_dir_is_folder"]


def check_run_dir_is_folder(run_dir: str | Path) -> Path:
    """The nearest of the run dir and the folders above it that exists, which must be a folder (the
    commands that only read, ``status`` and ``cancel``, check this much).

    Raises:
        SweepError: one line naming the run dir and the file in its way.
    """
    from orchestrator.errors import SweepError

    path = Path(run_dir).absolute()
    existing = nearest_existing(path)
    if not existing.is_dir():
        where = "it" if existing == path else existing
        raise SweepError(f"{path}: the run dir must be a folder, and {where} is {what_blocks(existing)}; choose another with --run-dir")
    return existing


def check_run_dir(run_dir: str | Path, create: bool = True) -> None:
    """The run dir exists (created if needed) and a file can be written in it, before anything else is.

    With ``create=False`` (``famix sweep plan``: it writes nothing) only the permission is checked: on the
    run dir, or on the nearest folder above it that exists.

    Raises:
        SweepError: one line naming the folder and the OS's reason (read-only filesystem, permission, …).
    """
    import tempfile

    from orchestrator.errors import SweepError

    path = Path(run_dir).absolute()
    existing = check_run_dir_is_folder(path)
    if not create:
        reason = write_denied(existing)
        if reason is not None:
            where = "" if existing == path else f" on {existing}"
            raise SweepError(f"{path}: the run dir is not writable ({reason}{where}); choose another with --run-dir")
        return
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        # a folder on the way that could not be made is named; the probe's temp file is not
        where = path if e.filename is None or Path(e.filename).parent == path else e.filename
        raise SweepError(f"{where}: the run dir is not writable ({e.strerror}); choose another with --run-dir") from None


def check_data(cfg: FamixConfig, generate: bool = True) -> None:
    """Generate the synthetic benchmark when configured, then check the source (its val split too when
    ``train.val_every`` is set) and every target domain.

    With ``generate=False`` (``famix sweep plan``) a synthetic benchmark is left to ``famix sweep run``
    (it is made from its settings, so nothing can be missing); real data folders are checked, those
    that ``data.roots`` gives beside a synthetic benchmark too.

    A domain whose root is not found is one line, however many of its splits are needed (GTA5's
    train and val): one key (``data.root`` or ``data.roots.<domain>``) fixes them all. Domains that
    share that missing folder (the four ACDC conditions) are one line too, naming the key of the
    folder (``data.roots.acdc``).

    What the settings alone decide is checked first, before a benchmark is drawn: that
    ``data.split_file`` is a file, and that the benchmark writes the splits read of its domains.

    Raises:
        DataError: one line naming the domain and the missing folder/file (from famix_core.data);
            InputErrors: one such line per unusable domain split, when there are several.
    """
    from famix_core.data import split_errors, splits_read
    from famix_core.data.layouts import split_file_not_found
    from famix_core.data.synth.benchmark import ensure_synthetic
    from famix_core.domains import resolve_domain

    from famix_core.errors import FamixError
    from orchestrator.errors import raise_all

    data = cfg.data
    errors: list[FamixError] = []
    if data.split_file and not Path(data.split_file).is_file():
        errors.append(split_file_not_found(data.split_file))
    if data.synthetic is not None:
        errors += _synthetic_split_errors(cfg)
        if generate:
            raise_all(errors)  # nothing drawn for a run that cannot start
            ensure_synthetic(data)
        else:  # the benchmark is left to the run; the real domains given in data.roots are checked now
            data = data.model_copy(update={"synthetic": None})
    # every missing root at once, not one per try; without a benchmark yet, the real domains in data.roots
    read = [(d, s) for d, s in splits_read(cfg) if data is cfg.data or resolve_domain(d).name in data.roots]
    raise_all(errors + split_errors(data, read))


def _synthetic_split_errors(cfg: FamixConfig) -> list[DataError]:
    """One line per split the synthetic benchmark does not write of a domain read from it (``eval.split=test``:
    its folders were reported as missing after a benchmark was drawn, naming generated paths, not the key)."""
    from famix_core.data import splits_read
    from famix_core.data.synth.benchmark import synthetic_splits
    from famix_core.domains import resolve_domain

    missing: dict[str, list[str]] = {}  # split -> the benchmark's domains without it
    for domain, split in splits_read(cfg):
        name = resolve_domain(domain).name
        if name not in cfg.data.roots and split not in synthetic_splits(name) and name not in missing.get(split, []):
            missing.setdefault(split, []).append(name)
    return [
        DataError(
            f"eval.split={split}: the synthetic benchmark has no {split} split of {', '.join(names)} (it writes the val"
            f" split of every domain, and the train split of gta5, synthia and cityscapes); expected eval.split=val,"
            f" or real data in data.roots"
        )
        for split, names in missing.items()
    ]


def _runs_anywhere(train: Any) -> bool:
    """``train.device`` ``cpu``, or ``auto`` with the CPU fallback: a stage runs with it on any machine."""
    return train.device == "cpu" or (train.device == "auto" and train.cpu_fallback)


WHERE_STAGES_RUN = "this backend runs the stages on this machine; `--backend slurm` runs them on the cluster's nodes"
"""What :func:`check_device`'s line adds to the stage's own: why this machine's devices matter."""


def check_device(cfg: FamixConfig) -> None:
    """``train.device`` is on this machine, as every stage will pick it
    (:func:`famix_core.device.stage_device`: ``train.device`` with ``train.cpu_fallback``).

    Only for backends whose stages run on this machine (the driver decides:
    :meth:`orchestrator.backends.base.Backend.remote_workers`). ``cpu``, and ``auto`` with the CPU
    fallback (a warning where no GPU is, by design), cannot fail: they are not looked at, and torch is
    not imported. ``cuda``, ``cuda:N`` and ``auto`` without the fallback (the paper profile) are resolved
    by :func:`famix_core.device.pick_device`, as a stage resolves them.

    Raises:
        DeviceError: one line naming ``train.device``, its value and what this machine has.
    """
    t = cfg.train
    if _runs_anywhere(t):
        return
    from famix_core.device import DeviceError, pick_device  # imports torch

    try:  # no scheduler gives these stages a GPU: this machine's are all they have
        pick_device(t.device, cpu_fallback=t.cpu_fallback, fix="set train.device=cpu to train on this machine's CPU")
    except DeviceError as e:  # a login node without GPUs, planning for a cluster: say how
        raise DeviceError(f"{e} ({WHERE_STAGES_RUN})") from None


DEVICE_STAGE_KINDS = ("mine", "train", "evaluate")
"""The stage kinds that run on ``train.device`` (the synthetic benchmark is drawn on the CPU)."""


def check_stage_gpus(cfg: FamixConfig, gpus: dict[str, int], backend: str, keys: dict[str, str] | None = None) -> None:
    """``train.device`` is one of the GPUs each stage is given where the backend gives them (Slurm,
    Ray: :meth:`~orchestrator.backends.base.Backend.stage_gpus`; ``gpus``: stage kind -> count). A stage
    sees its GPUs as ``cuda:0`` and up whichever GPUs of the node they are, so ``cuda:1`` of a stage
    given one GPU, or ``cuda`` (or ``auto`` without the CPU fallback) of one given none, fails every
    such stage once it is scheduled. ``cpu``, and ``auto`` with the fallback, cannot fail. ``keys``:
    stage kind -> the sweep-file key that sets its count (default ``resources.<kind>.gpus``).

    Raises:
        FamixError: one line naming ``train.device``, the stage kind, the GPUs it is given and the fix.
    """
    from famix_core.errors import FamixError

    t = cfg.train
    if _runs_anywhere(t):
        return
    spec = t.device  # canonical: the config parsed it (parse_device_spec)
    index = int(spec.partition(":")[2] or 0)
    for kind in DEVICE_STAGE_KINDS:
        n = gpus.get(kind, 0)
        where = f"{backend} gives each {kind} stage"
        key = (keys or {}).get(kind, f"resources.{kind}.gpus")
        if n == 0:
            fix = "or set train.device=cpu" + ("" if spec == "auto" else " or auto")
            raise FamixError(f"train.device={spec}: {where} no GPU ({key} is 0); ask for one there {fix}")
        if index >= n:
            seen = "cuda:0" if n == 1 else f"cuda:0 to cuda:{n - 1}"
            raise FamixError(f"train.device={spec}: {where} {count(n, 'GPU')} ({key}), which it "
                             f"sees as {seen} whichever {'GPUs' if n > 1 else 'GPU'} of the node; use train.device=cuda or auto")  # fmt: skip


def check_weights(cfg: FamixConfig, fetch: bool = True, announce: bool = True, probe: bool = False) -> None:
    """``model.pretrained`` is usable by every stage: a path that exists, ``none``, a packaged name, or
    ``openai`` in the cache, where it is downloaded now (with progress) when missing, once for all
    the stages and nodes (``model.cache_dir`` should be on the shared filesystem on a cluster).

    The stages look for their weights with :func:`famix_core.models.clip.locate_weights`, and so does
    this check (after a fast path for ``none`` and the packaged weights, which needs no torch): a
    mistake gets the same line here, before anything is submitted, as in a stage.

    Raises:
        WeightsError: one line naming the backbone / path / cache dir and how to fix it (offline:
            which file to copy where).

    With ``fetch=False`` (``famix sweep plan``: it writes nothing) missing weights are only announced
    (``announce=False``: not even that), and refused when their host does not resolve (an offline
    machine), or with ``probe=True`` (``famix sweep run``'s first pass) when its server does not answer.
    """
    m = cfg.model
    if m.pretrained == "none":
        return
    if is_packaged(m.pretrained):
        path = packaged_path(m.backbone, m.pretrained)
        if path is not None and path.is_file():
            return
    from famix_core.models.clip import get_backbone_spec, locate_weights  # imports torch: a file or a tag only

    _, tag = locate_weights(m.backbone, m.pretrained, m.cache_dir)
    if tag is None:
        return  # a file on disk: given, packaged or already in the cache
    from famix_core.models.download import damaged_note, fetch_weights, print_progress, unreachable_error, url_cache_dir, weights_url

    def say(line: str) -> None:
        print(f"weights: {line}", file=sys.stderr, flush=True)

    name, where = get_backbone_spec(m.backbone).open_clip_name, url_cache_dir(m.cache_dir)
    if not fetch:
        if probe and (error := unreachable_error(name, tag, m.cache_dir)) is not None:
            raise error
        if announce:
            say(f"{m.backbone} {tag} is not in {where}{damaged_note(name, tag, m.cache_dir)}: `famix sweep run` downloads it first "
                f"({weights_url(name, tag)})")  # fmt: skip
        return
    path = fetch_weights(name, tag, m.cache_dir, progress=print_progress(f"downloading {m.backbone} {tag} into {where}", say))
    say(f"{m.backbone} {tag} saved as {path}")
