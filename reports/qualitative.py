"""Qualitative grid: for one trial, input / ground truth / prediction on one image of each domain.

Needs the trial's trained weights (``<run_dir>/store/train/<key>/model.safetensors``, key from the
``famix.stage.train`` tag) and its resolved config (the run's MLflow params, ``FamixConfig.flat()``).
torch and famix_core's model/data modules are imported inside the functions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from famix_core.classes import CLASS_NAMES, IGNORE_INDEX, PALETTE
from famix_core.errors import WeightsError
from reports.collect import ReportInputError, ResultSet

__all__ = [
    "NEEDS_MLFLOW",
    "colorize",
    "denormalize",
    "config_from_params",
    "find_trial",
    "weights_path",
    "render_qualitative",
    "qualitative_grid",
    "class_legend_handles",
]

MAX_HEIGHT_IN = 8.5
"""Tallest qualitative figure, in inches: within a paper's text block (CVPR's is 8.875 in)."""
NEEDS_MLFLOW = "--qualitative needs MLflow input (the trial's config and weights), not --csv"
"""Refuses ``--qualitative`` with ``--csv``: said by the CLI's flag check and by :func:`qualitative_grid`."""


def colorize(label: np.ndarray) -> np.ndarray:
    """Cityscapes colours of a train-id map.

    Args:
        label: (H, W) integer train ids; ignore (255) and unknown ids are black.

    Returns:
        (H, W, 3) uint8 RGB.
    """
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[: len(PALETTE)] = np.asarray(PALETTE, dtype=np.uint8)
    lut[IGNORE_INDEX] = 0
    return lut[np.clip(label, 0, 255).astype(np.int64)]  # (H, W, 3)


def denormalize(image: np.ndarray) -> np.ndarray:
    """Undo CLIP normalization for display.

    Args:
        image: (3, H, W) float, CLIP-normalized.

    Returns:
        (H, W, 3) uint8 RGB.
    """
    from famix_core.data.transforms import CLIP_MEAN, CLIP_STD

    mean = np.asarray(CLIP_MEAN, dtype=np.float32)[:, None, None]
    std = np.asarray(CLIP_STD, dtype=np.float32)[:, None, None]
    rgb = np.clip(image * std + mean, 0.0, 1.0)  # (3, H, W)
    return (rgb.transpose(1, 2, 0) * 255.0 + 0.5).astype(np.uint8)  # (H, W, 3)


def _param_value(text: str) -> Any:
    if text == "None":
        return None
    if text in ("True", "False"):
        return text == "True"
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def config_from_params(params: dict[str, str], source: str = "MLflow params"):
    """Rebuild the trial's :class:`~famix_core.config.FamixConfig` from its flattened MLflow params.

    Args:
        params: dotted key -> string value (``FamixConfig.flat()`` as MLflow stores it).
        source: named in the error message.

    Raises:
        ConfigError: the params do not form a valid config.
    """
    from famix_core.config import FamixConfig
    from famix_core.config_io import set_dotted, validate

    tree: dict[str, Any] = {}
    for key, text in params.items():
        set_dotted(tree, key, _param_value(text))
    return validate(FamixConfig, tree, source)


def find_trial(results: ResultSet, spec: str) -> dict[str, Any]:
    """The run row for ``--qualitative``: a trial id (``famix.trial``), a run id, or a 1-based table row.

    Raises:
        ReportInputError: naming the known trial ids.
    """
    runs = results.runs
    for col in ("trial", "run_id"):
        hit = runs[runs[col].astype(str) == spec]
        if len(hit):
            return hit.iloc[0].to_dict()
    labels = results.label_columns
    row_of = runs[labels].astype(str).agg("\x1f".join, axis=1) if labels else None  # each run's table row
    keys = list(dict.fromkeys(row_of)) if row_of is not None else [""]
    if spec.isdigit():
        k = int(spec)
        if 1 <= k <= len(keys):
            mask = row_of == keys[k - 1] if row_of is not None else runs.index == runs.index
            return runs[mask].iloc[0].to_dict()
    known = ", ".join(str(t) for t in runs["trial"][:8])
    raise ReportInputError(
        f"--qualitative {spec}: no such trial or row (rows: 1..{len(keys)}; trials: {known}{', …' if len(runs) > 8 else ''})"
    )


def weights_path(run_dir: str | Path, train_key: str | None, trial: str) -> Path:
    """``<run_dir>/store/train/<key>/model.safetensors``, checked to exist.

    Raises:
        WeightsError: no train key for the trial, or the file is missing.
    """
    if not train_key:
        raise WeightsError(f"trial {trial}: no famix.stage.train tag, so no trained weights to draw predictions with")
    path = Path(run_dir) / "store" / "train" / train_key / "model.safetensors"
    if not path.is_file():
        raise WeightsError(f"trial {trial}: trained weights not found at {path} (run the sweep, or pass --run-dir)")
    return path


def render_qualitative(
    cfg,
    weights: str | Path,
    domains: list[str],
    out_dir: str | Path,
    *,
    device: str = "cpu",
    title: str = "",
    stem: str = "qualitative",
    index: int = 0,
    width: str = "page",
) -> list[Path]:
    """Predict on image ``index`` of each domain's evaluation split and draw input / GT / prediction rows.

    Args:
        cfg: the trial's FamixConfig (model architecture, data roots, eval split).
        weights: segmenter weights (``model.safetensors``).
        domains: domain columns, one figure row each.
        out_dir: output folder.
        device: torch device string.
        title: figure title.
        stem: file name without extension.
        index: which image of each split.
        width: ``column`` or ``page`` (:data:`reports.plots.FIGURE_WIDTHS`); the grid is kept
            within a text block's height (8.5 in: many domains make smaller panels).

    Returns:
        Paths of the PNG and PDF.
    """
    import torch

    from famix_core.data import build_dataset
    from famix_core.models.segmenter import build_segmenter
    from reports.plots import FIGURE_WIDTHS, figure, save_figure

    dev = torch.device(device)
    model_cfg = cfg.model.model_copy(update={"pretrained": str(weights)})
    model = build_segmenter(model_cfg, device=dev).eval()
    rows = []
    with torch.inference_mode():
        for col in domains:
            ds = build_dataset(cfg.data, col, cfg.eval.split, train=False, max_items=index + 1)
            if len(ds) <= index:
                raise ReportInputError(f"domain {col}: split {cfg.eval.split!r} has no image {index}")
            image, label = ds[index]  # (3, H, W), (H, W)
            logits = model(image.unsqueeze(0).to(dev))  # (1, K, H, W)
            pred = logits.argmax(1)[0].cpu().numpy()  # (H, W)
            rows.append((col, denormalize(image.numpy()), colorize(label.numpy()), colorize(pred)))

    h, w = rows[0][1].shape[:2]
    column = width == "column"
    fig_w = FIGURE_WIDTHS.get(width, FIGURE_WIDTHS["page"])  # an unknown width: figure() refuses it, in one line
    panel_w = (fig_w - (0.35 if column else 0.5)) / 3  # minus the domain labels; three panels
    legend_h = 1.05 if column else 0.75  # the 20 class patches in 4 columns, or 7
    title_h = (0.45 if column else 0.3) if title else 0.15  # at column width the title takes two lines
    grid_h = min(len(rows) * panel_w * h / w, MAX_HEIGHT_IN - legend_h - title_h)  # panels shrink to fit the height
    with figure(width, grid_h + legend_h + title_h) as fig:
        axes = fig.subplots(len(rows), 3, squeeze=False)
        for r, (col, rgb, gt, pred) in enumerate(rows):
            for c, (img, name) in enumerate(((rgb, "input"), (gt, "ground truth"), (pred, "prediction"))):
                ax = axes[r][c]
                ax.imshow(img, interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                for spine in ax.spines.values():  # the figures' left and bottom axis lines framed each image in an L
                    spine.set_visible(False)
                if r == 0:
                    ax.set_title(name)
                if c == 0:
                    ax.set_ylabel(col)
        fig.legend(handles=class_legend_handles(), loc="outside lower center", ncols=4 if column else 7, frameon=False,
                   handlelength=1.0, handleheight=0.9, columnspacing=0.9, fontsize=6.0 if column else 6.5)  # fmt: skip
        if title:
            from reports.plots import fit_title, title_size

            fig.suptitle(fit_title(fig, title, width), fontsize=title_size(width))
        return save_figure(fig, out_dir, stem)


def class_legend_handles() -> list:
    """One colour patch per class (the Cityscapes palette of the ground truth and predictions), then ignore."""
    from matplotlib.patches import Patch

    handles = [
        Patch(facecolor=np.asarray(PALETTE[i]) / 255.0, edgecolor="#333333", linewidth=0.3, label=name)
        for i, name in enumerate(CLASS_NAMES)
    ]
    handles.append(Patch(facecolor="black", edgecolor="#333333", linewidth=0.3, label="ignore"))
    return handles


def qualitative_grid(
    results: ResultSet, trial: str, out_dir: str | Path, *, run_dir: str | Path, device: str = "cpu", width: str | None = None
) -> list[Path]:
    """The qualitative figure of one trial of an MLflow-collected sweep (config from its params).

    Raises:
        ReportInputError: CSV input (no run to read a config from), unknown trial.
        WeightsError: the trial's weights are missing.
    """
    if not results.tracking_uri:
        raise ReportInputError(NEEDS_MLFLOW)
    row = find_trial(results, trial)
    weights = weights_path(run_dir, row.get("train_key"), str(row["trial"]))
    from reports.mlflow_client import mlflow_client

    params = mlflow_client(results.tracking_uri).get_run(row["run_id"]).data.params
    cfg = config_from_params(params, f"MLflow run {row['run_id']} params")
    from reports.plots import row_caption

    title = f"{results.sweep}: {row['trial']} ({row_caption({c: row[c] for c in results.label_columns})})"
    return render_qualitative(cfg, weights, results.domains, out_dir, device=device, title=title, width=width or "page")
