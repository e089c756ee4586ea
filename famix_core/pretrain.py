"""Contrastive CLIP pretraining of ``famix-tiny`` on the synthetic caption corpus (CPU, minutes).

``famix pretrain-clip --out DIR`` renders the corpus (:mod:`famix_core.data.captions`), then
trains the whole CLIP (image and text towers) with open_clip's ``ClipLoss`` and tokenizer:
AdamW, linear warm-up then cosine decay. A batch mixes two kinds of samples, cut from the
rendered 64x128 images by one ``roi_align`` call:

* scene crops (a square of the image's height, resized to the CLIP input) captioned with the
  classes present and the style words;
* patches (a square of a quarter to a half of the image height, zoomed to the CLIP input)
  captioned with their dominant class and the style words: the shape of style mining's
  prompts ("<style> <class>") and of its patches (a layer-1 patch pooled to the input size).

Deterministic for a seed: the corpus, the model init (``torch.manual_seed``) and the batch
sampler (a numpy Generator) are all seeded, so two runs with the same config and thread count
write identical weights. ``DIR`` receives ``weights.safetensors`` (fp16) and ``pretrain.json``
(config; ``loss.first`` and ``loss.last``, the mean loss of the first and of the last 10 steps;
seconds; zero-shot scores of :mod:`famix_core.zero_shot`).

Nothing is lost to a kill or Ctrl-C: every minute of training (and at a stop request, the CLI's
Ctrl-C, and once the last step is done) the model, the optimizer and the sampler's RNG go to
``DIR/checkpoint/`` (:mod:`famix_core.checkpoint`), and the same command resumes from there, to
the same weights bit for bit; the folder goes once the weights are written.

``DIR`` is checked before any work (:func:`check_out`): a new or empty folder, or one of a previous
pretraining of the same config (which is resumed, or done again to the same weights). A folder of
other files, or the weights or a checkpoint of another config, is refused, as ``famix train`` refuses
the outputs and checkpoints of another training: nothing is replaced or deleted.
"""

from __future__ import annotations

import math
import os
import shutil
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from famix_core.config import Backbone, Seed, no_boolean_for_a_number
from famix_core.data.captions import Corpus, CorpusConfig, build_corpus, classes_by_area, patch_caption, scene_caption
from famix_core.data.transforms import CLIP_MEAN, CLIP_STD

if TYPE_CHECKING:
    from famix_core.errors import WeightsError

__all__ = ["PretrainConfig", "sample_batch", "pretrain_clip", "check_out", "save_weights", "WEIGHTS_FILE", "SUMMARY_FILE",
           "CHECKPOINT_DIR"]

WEIGHTS_FILE = "weights.safetensors"
SUMMARY_FILE = "pretrain.json"
CHECKPOINT_DIR = "checkpoint"


class PretrainConfig(BaseModel):
    """Contrastive pretraining of a small CLIP on the caption corpus."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    _no_boolean_for_a_number = field_validator("*", mode="before")(no_boolean_for_a_number)

    corpus: CorpusConfig = Field(default_factory=CorpusConfig)
    backbone: Backbone = Field("famix-tiny", description="CLIP architecture (famix_core.models.clip registry)")
    # "also": the names a user may reach for (the training's keys), which an unknown key's message turns into this one
    steps: int = Field(1500, ge=1, json_schema_extra={"also": ["iterations"]})
    batch_size: int = Field(64, ge=2)
    lr: float = Field(2e-3, gt=0.0, json_schema_extra={"also": ["lr_decoder", "lr_backbone"]})
    weight_decay: float = Field(0.1, ge=0.0)
    warmup: int = Field(30, ge=0, description="linear warm-up steps, then cosine decay to 0")
    patch_fraction: float = Field(0.5, ge=0.0, le=1.0, description="share of patch samples in a batch")
    patch_min: float = Field(0.25, gt=0.0, le=1.0, description="smallest patch side, as a fraction of the image height")
    patch_max: float = Field(0.5, gt=0.0, le=1.0, description="largest patch side, as a fraction of the image height")
    text_context: int = Field(32, ge=8, le=77, description="tokens per caption while training (captions are shorter)")
    seed: Seed = 0
    threads: int | None = Field(
        1, ge=1, description="torch CPU threads while training (1: the same float sums on every machine; None: torch's default)"
    )
    log_every: int = Field(25, ge=1)

    @field_validator("patch_max")
    @classmethod
    def _patch_range(cls, v: float, info: ValidationInfo) -> float:
        low = info.data.get("patch_min")  # absent when patch_min itself was refused
        if low is not None and v < low:  # the sampler draws a side from patch_min to patch_max
            raise ValueError(f"expected >= patch_min ({low}): patch sides are drawn from patch_min to patch_max, got {v}")
        return v


def _boxes_and_captions(
    corpus: Corpus, cfg: PretrainConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Draw a batch: image indices (B,), boxes (B, 4) x0 y0 x1 y1 in pixels, flips (B,), captions."""
    n, h, w = corpus.labels.shape
    b = cfg.batch_size
    idx = rng.integers(0, n, b)
    boxes = np.zeros((b, 4), np.float32)
    flips = rng.random(b) < 0.5
    captions: list[str] = []
    side = min(h, w)
    for i, k in enumerate(idx):
        lab = corpus.labels[k]
        if rng.random() < cfg.patch_fraction:
            for _ in range(8):  # a patch that is not all void
                s = int(rng.integers(int(cfg.patch_min * h), int(cfg.patch_max * h) + 1))
                y0, x0 = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
                top = classes_by_area(lab[y0 : y0 + s, x0 : x0 + s], min_fraction=0.0, top=1)
                if top:
                    break
            if top:
                boxes[i] = (x0, y0, x0 + s, y0 + s)
                captions.append(patch_caption(corpus.words[k], top[0], rng))
                continue
        x0 = int(rng.integers(0, w - side + 1))
        y0 = int(rng.integers(0, h - side + 1))
        boxes[i] = (x0, y0, x0 + side, y0 + side)
        captions.append(scene_caption(corpus.words[k], classes_by_area(lab[y0 : y0 + side, x0 : x0 + side]), rng))
    return idx, boxes, flips, captions


def crop_resize(images: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear crop-and-resize of boxes, CLIP-normalized.

    Args:
        images: (B, H, W, 3) uint8, one per box.
        boxes: (B, 4) float x0, y0, x1, y1 in pixels.
        size: output side.

    Returns:
        (B, 3, size, size) float32.
    """
    from torchvision.ops import roi_align

    x = images.permute(0, 3, 1, 2).float() / 255.0  # (B, 3, H, W)
    rois = torch.cat([torch.arange(len(boxes), dtype=torch.float32)[:, None], boxes], dim=1)  # (B, 5)
    out = roi_align(x, rois, output_size=(size, size), spatial_scale=1.0, sampling_ratio=2, aligned=True)
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (out - mean) / std


def sample_batch(corpus: Corpus, cfg: PretrainConfig, rng: np.random.Generator, tokenizer, size: int):
    """One training batch: (B, 3, size, size) images and (B, L) tokens of their captions."""
    idx, boxes, flips, captions = _boxes_and_captions(corpus, cfg, rng)
    x = crop_resize(torch.from_numpy(corpus.images[idx]), torch.from_numpy(boxes), size)
    f = torch.from_numpy(flips)[:, None, None, None]
    x = torch.where(f, x.flip(-1), x)
    return x, tokenizer(captions), captions


def encode_text_short(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """``model.encode_text`` on tokens of a shorter context (B, L <= 77): the same features, less work.

    The text transformer is causal and pools at the end-of-text token, so the padding after it
    changes nothing; only the first L positions are computed.

    Args:
        model: an open_clip CLIP.
        tokens: (B, L) token ids, each row holding its end-of-text token.

    Returns:
        (B, D) text features (unnormalized).
    """
    from open_clip.transformer import text_global_pool

    n = tokens.shape[1]
    x = model.token_embedding(tokens) + model.positional_embedding[:n]  # (B, L, W)
    x = model.transformer(x, attn_mask=model.attn_mask[:n, :n])
    x = model.ln_final(x)
    x = text_global_pool(x, tokens, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))  # (B, W)
    proj = model.text_projection
    return proj(x) if isinstance(proj, torch.nn.Linear) else x @ proj


def _lr(step: int, cfg: PretrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return 0.5 * cfg.lr * (1 + math.cos(math.pi * t))


def save_weights(model: torch.nn.Module, path: str | Path) -> Path:
    """Write a CLIP state dict as fp16 safetensors, atomically (floating tensors halved, others kept)."""
    from safetensors.torch import save

    from famix_core.io import atomic_write_bytes

    sd = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()}
    # bytes through famix_core.io: safetensors' save_file creates its file 0600 whatever the umask
    return atomic_write_bytes(path, save(sd))


def _save_progress(ckpt_dir: Path, step: int, model: torch.nn.Module, opt: torch.optim.Optimizer,
                   rng: np.random.Generator, losses: list[float], cfg_json: dict, spent: dict[str, float]) -> Path:
    """Checkpoint the first ``step`` steps: weights, optimizer, the sampler's and torch's RNG, the loss
    curve, and the seconds ``spent`` so far (``train``, ``total``: all runs up to this one)."""
    from famix_core.checkpoint import CheckpointState, optimizer_to_flat, save_checkpoint

    tensors, meta = optimizer_to_flat(opt)
    extra = {"config": cfg_json, "sampler": rng.bit_generator.state, "losses": losses, "spent": spent}
    state = CheckpointState(step, model.state_dict(), tensors, meta, {"torch_cpu": torch.get_rng_state()}, extra)
    return save_checkpoint(ckpt_dir, state)


def _with_defaults(tree: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """``tree`` with the fields it lacks taken from ``defaults``, section by section."""
    out = dict(tree)
    for k, v in defaults.items():
        if k not in out:
            out[k] = v
        elif isinstance(v, dict) and isinstance(out[k], dict):
            out[k] = _with_defaults(out[k], v)
    return out


def _weights_view(cfg_json: Any) -> Any:
    """What of a pretraining config decides its weights: all but ``log_every`` (a resume is exact whatever it
    is). A field the config was written without holds its default, which does what the code did before the
    field existed (``corpus.paper_styles`` 0: no draw), so an older folder is one of the same config."""
    if not isinstance(cfg_json, dict):
        return cfg_json
    full = _with_defaults(cfg_json, PretrainConfig().model_dump(mode="json"))
    return {k: v for k, v in full.items() if k != "log_every"}


def _differences(theirs: Any, cfg_json: dict) -> str:
    """``lr 0.002, here 0.01; …``: the dotted fields in which another pretraining's config differs from ``cfg_json``."""
    from famix_core.train import identity_differences

    return identity_differences(_weights_view(theirs) if isinstance(theirs, dict) else {}, _weights_view(cfg_json))


def _another_config(ckpt_dir: Path, step: int, theirs: Any, cfg_json: dict) -> "WeightsError":
    from famix_core.errors import WeightsError

    return WeightsError(
        f"{ckpt_dir}: its checkpoint (step {step}) is of another config ({_differences(theirs, cfg_json)});"
        " write elsewhere (another --out), or delete that folder to pretrain from scratch"
    )


def check_out(cfg: PretrainConfig, out: str | Path, option: str | None = None, log: Callable[[str], None] | None = None) -> None:
    """Refuse ``out`` before any work unless it is new, empty, or holds a previous pretraining of ``cfg``.

    Args:
        cfg: the pretraining to run.
        out: its output folder (it need not exist).
        option: the command-line option that named ``out``, for the message.
        log: told of a corrupt checkpoint set aside (:func:`famix_core.checkpoint.latest_checkpoint`).

    Raises:
        DataError: ``out`` is a file, or a folder of files holding neither ``pretrain.json`` nor ``checkpoint/``.
        WeightsError: its ``pretrain.json`` (with ``weights.safetensors``) or its checkpoint is of another config.
    """
    import json

    from famix_core.checkpoint import latest_checkpoint
    from famix_core.errors import WeightsError
    from famix_core.io import refuse_other_files

    out = Path(out)
    needs = "CLIP pretraining needs a new or empty folder, or one of a previous pretraining"
    refuse_other_files(out, SUMMARY_FILE, needs, f"command line: {option}" if option else "", also=(CHECKPOINT_DIR,))
    cfg_json = cfg.model_dump(mode="json")
    summary = out / SUMMARY_FILE
    if summary.is_file():
        try:
            theirs = json.loads(summary.read_text(encoding="utf-8")).get("config")
        except (OSError, ValueError, AttributeError):
            theirs = None
        if _weights_view(theirs) != _weights_view(cfg_json):
            held = " and ".join(n for n in (WEIGHTS_FILE, SUMMARY_FILE) if (out / n).exists())
            raise WeightsError(
                f"{out}: holds {held} of another config ({_differences(theirs, cfg_json)});"
                " write elsewhere (another --out), or delete them to pretrain there"
            )
    path = latest_checkpoint(out / CHECKPOINT_DIR, warn=log)
    if path is not None:
        st = json.loads((path / "state.json").read_text(encoding="utf-8"))  # sound: latest_checkpoint read it
        theirs = (st.get("extra") or {}).get("config")
        if _weights_view(theirs) != _weights_view(cfg_json):
            raise _another_config(out / CHECKPOINT_DIR, st["iteration"], theirs, cfg_json)


def _resume(ckpt_dir: Path | None, model: torch.nn.Module, opt: torch.optim.Optimizer, rng: np.random.Generator,
            cfg_json: dict, log: Callable[[str], None]) -> tuple[int, list[float], dict[str, float]]:
    """Load the newest sound checkpoint of this config in ``ckpt_dir`` into ``model``, ``opt`` and ``rng``;
    returns (steps done, loss curve, seconds spent by the runs before), (0, [], zeros) when there is none.

    Raises:
        WeightsError: the checkpoint is of another config (:func:`check_out` refuses it before any work).
    """
    from famix_core.checkpoint import latest_checkpoint, load_checkpoint, optimizer_from_flat

    none: tuple[int, list[float], dict[str, float]] = (0, [], {"train": 0.0, "total": 0.0})
    path = latest_checkpoint(ckpt_dir, warn=log) if ckpt_dir is not None else None
    if path is None:
        return none
    st = load_checkpoint(path)
    if _weights_view(st.extra.get("config")) != _weights_view(cfg_json):
        raise _another_config(ckpt_dir, st.iteration, st.extra.get("config"), cfg_json)  # type: ignore[arg-type]
    model.load_state_dict(st.model)
    optimizer_from_flat(opt, st.optimizer, st.optimizer_meta)
    rng.bit_generator.state = st.extra["sampler"]
    torch.set_rng_state(st.rng["torch_cpu"])
    log(f"resuming from step {st.iteration}/{cfg_json['steps']} ({path})")
    return st.iteration, [float(x) for x in st.extra["losses"]], {k: float(v) for k, v in st.extra["spent"].items()}


def pretrain_clip(
    cfg: PretrainConfig,
    out: str | Path | None = None,
    log: Callable[[str], None] | None = None,
    evaluate: bool = True,
    stop: threading.Event | None = None,
    checkpoint_s: float = 60.0,
    on_stage: Callable[[str], None] | None = None,
    option: str | None = None,
) -> tuple[torch.nn.Module, dict]:
    """Render the corpus, train the CLIP contrastively, write ``out/weights.safetensors`` and ``out/pretrain.json``.

    Args:
        cfg: corpus and optimization settings.
        out: output folder (``None``: write nothing, keep no checkpoint). A checkpoint of ``cfg`` in
            ``out/checkpoint/`` is resumed from; a folder :func:`check_out` refuses is an error.
        log: a line printer (default: none).
        evaluate: run the zero-shot checks at the end and put them in the summary.
        stop: set (by a signal handler, say) to stop: checked
            before each step and after the last; when set, the steps done are checkpointed (none
            before the first) and the run stops. Set later, during the zero-shot checks and the
            writing of the weights, it changes nothing: the run ends as it would have.
        checkpoint_s: seconds of training between checkpoints (``out`` given).
        on_stage: told each stage as the run enters it, for what a stop request does there:
            ``"corpus"`` (rendering: a stop is answered at the first step, with nothing to keep),
            ``"train"`` (a stop checkpoints the steps done), ``"finish"`` (every step is done, and
            checkpointed when ``out`` is given and the checks run: the checks and the writing go on).
        option: the command-line option that named ``out`` (``--out``), for :func:`check_out`'s messages.

    Returns:
        (the trained CLIP in eval mode, fp32; the summary dict).

    Raises:
        TrainingInterrupted: ``stop`` was set; the checkpoint holds every step done.
        DataError, WeightsError: ``out`` holds other files, or a pretraining of another config (:func:`check_out`).
    """
    import open_clip

    from famix_core.errors import TrainingInterrupted
    from famix_core.models.clip import create_clip, get_tokenizer

    log = log or (lambda s: None)
    on_stage = on_stage or (lambda s: None)
    if out is not None:
        check_out(cfg, out, option, log=log)  # before any work: nothing of another pretraining is replaced
    on_stage("corpus")
    threads_before = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    log(f"rendering the corpus: {cfg.corpus.scenes * cfg.corpus.styles_per_scene} images of {cfg.corpus.scenes} scenes …")
    corpus = build_corpus(cfg.corpus)
    t_corpus = time.perf_counter() - t0
    log(f"corpus: {len(corpus.images)} images of {cfg.corpus.scenes} scenes in {t_corpus:.1f} s")
    torch.manual_seed(cfg.seed)
    model = create_clip(cfg.backbone, "none").train()
    size = int(model.visual.image_size if isinstance(model.visual.image_size, int) else model.visual.image_size[0])
    full_tokenizer = get_tokenizer(cfg.backbone)

    def tokenizer(texts: list[str]) -> torch.Tensor:
        return full_tokenizer(texts, context_length=cfg.text_context)  # (B, text_context); truncated keep their end token

    loss_fn = open_clip.ClipLoss()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr
    )
    rng = np.random.default_rng([cfg.seed, 0x9E7])
    cfg_json = cfg.model_dump(mode="json")
    ckpt_dir = Path(out) / CHECKPOINT_DIR if out is not None else None
    start, losses, before = _resume(ckpt_dir, model, opt, rng, cfg_json, log)
    t1 = last_save = time.perf_counter()

    def save(done: int) -> Path | None:
        if ckpt_dir is None:
            return None
        now = time.perf_counter()
        spent = {"train": before["train"] + now - t1, "total": before["total"] + now - t0}
        return _save_progress(ckpt_dir, done, model, opt, rng, losses, cfg_json, spent)

    def stop_if_asked(done: int) -> None:
        if stop is None or not stop.is_set():
            return
        if done == 0:  # stopped while the corpus rendered: a checkpoint would hold nothing
            log("stopped before the first step: nothing to keep; the same command starts over")
            raise TrainingInterrupted(0, None)
        path = save(done)
        log(f"stopped at step {done}/{cfg.steps}" + (f"; checkpoint {path}: the same command resumes" if path else ""))
        raise TrainingInterrupted(done, str(path) if path else None)

    on_stage("train")
    for step in range(start, cfg.steps):
        stop_if_asked(step)
        if ckpt_dir is not None and step > start and time.perf_counter() - last_save >= checkpoint_s:
            save(step)
            last_save = time.perf_counter()
        for g in opt.param_groups:
            g["lr"] = _lr(step, cfg)
        images, tokens, _ = sample_batch(corpus, cfg, rng, tokenizer, size)
        img_f = torch.nn.functional.normalize(model.encode_image(images), dim=-1)  # (B, D)
        txt_f = torch.nn.functional.normalize(encode_text_short(model, tokens), dim=-1)  # (B, D)
        loss = loss_fn(img_f, txt_f, model.logit_scale.exp())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(float(loss.detach()))
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            log(f"step {step + 1}/{cfg.steps} loss {np.mean(losses[-cfg.log_every:]):.3f} ({time.perf_counter() - t1:.0f} s)")
    stop_if_asked(cfg.steps)  # asked during the last step, when a stop still meant a checkpoint and an end
    on_stage("finish")  # from here a stop changes nothing (its notice says so), the save below included
    if evaluate and start < cfg.steps:
        save(cfg.steps)  # the checks take seconds: a kill or a second Ctrl-C there loses no step
    t_train = before["train"] + time.perf_counter() - t1
    threads = torch.get_num_threads()
    torch.set_num_threads(threads_before)
    model.eval()
    summary: dict = {
        "config": cfg_json,
        "images": int(len(corpus.images)),
        "seconds": {"corpus": round(t_corpus, 1), "train": round(t_train, 1), "total": round(before["total"] + time.perf_counter() - t0, 1)},
        # means of the first and the last 10 steps: one step's loss is noisy
        "loss": {"first": round(float(np.mean(losses[:10])), 4), "last": round(float(np.mean(losses[-10:])), 4)},
        "threads": threads,
        **({"resumed_at_step": start} if start else {}),
        "load": round(os.getloadavg()[0], 2),  # 1-minute load average at the end (the machine may be shared)
    }
    if evaluate:
        from famix_core.zero_shot import zero_shot

        t_checks = time.perf_counter()
        summary["zero_shot"] = zero_shot(model, cfg.backbone, cfg.corpus)
        log(f"zero-shot: {summary['zero_shot']}")
        summary["seconds"]["zero_shot"] = round(time.perf_counter() - t_checks, 1)
        summary["seconds"]["total"] = round(before["total"] + time.perf_counter() - t0, 1)  # the checks too
    if out is not None:
        from famix_core.io import atomic_write_json

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        save_weights(model, out / WEIGHTS_FILE)
        atomic_write_json(out / SUMMARY_FILE, summary)
        shutil.rmtree(out / CHECKPOINT_DIR, ignore_errors=True)  # the weights are written: nothing left to resume
    return model, summary
