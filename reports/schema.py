"""The results schema: every MLflow tag, metric and CSV column name that a sweep writes and a report reads.

The orchestrator writes these (:mod:`orchestrator.tracking`, the parent run, the driver); :mod:`reports.collect`
reads them. A new name is added here once and used by both sides. docs/ARCHITECTURE.md, "MLflow schema",
says what each one holds. Plain constants and string builders: importing this module imports nothing.
"""

from __future__ import annotations

# ----------------------------------------------------------------------------- MLflow tags

TAG_SWEEP = "famix.sweep"
TAG_ROLE = "famix.role"
TAG_PROFILE = "famix.profile"
TAG_TRIAL = "famix.trial"
TAG_TRIAL_INDEX = "famix.trial_index"
TAG_SEED = "famix.seed"
TAG_LABELS = "famix.labels"
TAG_LABEL_PREFIX = "famix.label."
TAG_STATUS = "famix.status"
TAG_DOMAINS = "famix.domains"
TAG_STAGE_MINE = "famix.stage.mine"
TAG_STAGE_TRAIN = "famix.stage.train"
TAG_STAGE_EVALUATE_PREFIX = "famix.stage.evaluate."
TAG_GIT_COMMIT = "famix.git_commit"
TAG_BACKEND = "famix.backend"
TAG_OVERRIDES = "famix.overrides"
TAG_TRIALS = "famix.trials"
TAG_BEST_ROW = "famix.best_row"
TAG_BEST_ROW_INDEX = "famix.best_row_index"
TAG_HISTORY_PREFIX = "famix.history."
TAG_WRITER = "famix.writer"
TAG_HOST = "famix.host"
TAG_RUN_DIR = "famix.run_dir"
TAG_ERROR = "famix.error"
TAG_NOTE = "mlflow.note.content"
TAG_USER = "mlflow.user"
TAG_SOURCE_NAME = "mlflow.source.name"
TAG_SOURCE_COMMIT = "mlflow.source.git.commit"
TAG_PARENT_RUN = "mlflow.parentRunId"

ROLE_SWEEP = "sweep"
ROLE_TRIAL = "trial"
ROLE_SUPERSEDED = "superseded"

TRIAL_TAGS_READ: tuple[str, ...] = (
    TAG_TRIAL,
    TAG_TRIAL_INDEX,
    TAG_SEED,
    TAG_LABELS,
    TAG_STATUS,
    TAG_DOMAINS,
    TAG_STAGE_TRAIN,
    TAG_PROFILE,
    TAG_OVERRIDES,
    TAG_GIT_COMMIT,
    TAG_ROLE,
)
"""The trial tags a report reads (plus ``famix.label.<column>``, the fallback for ``famix.labels``)."""


def label_tag(column: str) -> str:
    """``famix.label.<column>``: one label's shown value."""
    return TAG_LABEL_PREFIX + column


def labels_text(labels: dict[str, object]) -> str:
    """A trial's labels as its MLflow run name holds them and ``famix.best_row`` repeats them:
    ``Freeze=✓,Augment=✓`` (no spaces), so the tag pasted into a run-name search finds the row's runs."""
    return ",".join(f"{k}={v}" for k, v in labels.items())


def history_tag(kind: str) -> str:
    """``famix.history.<kind>``: the key of the ``kind`` stage whose recorded metric history
    (``history.jsonl`` in its artifact) is in this run."""
    return TAG_HISTORY_PREFIX + kind


def evaluate_stage_tag(column: str) -> str:
    """``famix.stage.evaluate.<column>``: the key of the stage that evaluated one domain."""
    return TAG_STAGE_EVALUATE_PREFIX + column


# ----------------------------------------------------------------------------- MLflow metrics (percent)

METRIC_MIOU_PREFIX = "miou/"
METRIC_MIOU_MEAN = "miou/mean"
METRIC_TRAIN_LOSS = "train/loss"
TRAIN_COST_METRICS = {"seconds": "train/seconds", "images_per_s": "train/images_per_s", "peak_mem_mb": "train/peak_mem_mb"}
"""A training's cost as the trial run shows it (one value each): its ``summary.json`` key -> metric."""
METRIC_BEST_MEAN = "best/miou/mean"
METRIC_SOURCE_VAL = "source_val/miou"
"""What a training logs at each source validation (``famix_core.source_val.METRIC``; ``train.val_every``)."""


def miou_metric(column: str) -> str:
    """``miou/<column>``: a trial's mIoU on one domain."""
    return METRIC_MIOU_PREFIX + column


def iou_metric(column: str, cls: str) -> str:
    """``iou/<column>/<class>``: one class's IoU on one domain."""
    return f"iou/{column}/{cls}"


def pixel_acc_metric(column: str) -> str:
    """``pixel_acc/<column>``: pixel accuracy on one domain."""
    return f"pixel_acc/{column}"


def row_mean_metric(row: int) -> str:
    """``row/<NN>/miou/mean`` of the parent run: one table row's Mean (``row`` is 1-based)."""
    return f"row/{row:02d}/miou/mean"


def best_metric(column: str) -> str:
    """``best/miou/<column>`` of the parent run: the best value of one table column."""
    return f"best/miou/{column}"


def is_summary_metric(key: str) -> bool:
    """Whether ``key`` is one of the parent run's summary metrics (:func:`row_mean_metric`, :func:`best_metric`,
    :data:`METRIC_BEST_MEAN`)."""
    return key.startswith(("row/", "best/"))


# ----------------------------------------------------------------------------- Results CSV columns

COL_TRIAL = "trial"
COL_TRIAL_INDEX = "trial_index"
COL_SEED = "seed"
COL_STATUS = "status"
COL_RUN_ID = "run_id"
COL_TRAIN_KEY = "train_key"
RESERVED_COLUMNS: tuple[str, ...] = (COL_TRIAL, COL_TRIAL_INDEX, COL_SEED, COL_STATUS, COL_RUN_ID, COL_TRAIN_KEY)
"""Bookkeeping columns of a :class:`~reports.collect.ResultSet`'s runs (never label or domain columns)."""

LONG_DOMAIN = "domain"
LONG_MIOU = "miou"
"""The long form's domain and value columns (one row per trial × domain)."""

IGNORED_CSV_COLUMNS: tuple[str, ...] = ("mean", "n")
"""Columns a results CSV may carry that are neither labels nor domains; the tool recomputes the mean."""

COL_DELTA = "delta"
SOURCE_GAP_COLUMNS: tuple[str, ...] = ("source_val", "mean", "drop", "kept")
REPORT_COLUMNS: tuple[str, ...] = (COL_DELTA, *(c for c in SOURCE_GAP_COLUMNS if c != "mean"))
"""Value columns of a report's ``summary.csv`` (Δ vs the baseline row) and ``source.csv`` (source val,
target mean, drop, kept), beside the label columns: a label column may not share their names."""


def is_report_column(name: str) -> bool:
    """Whether a label column named ``name`` would share a column of a report's summary.csv or source.csv
    (:data:`REPORT_COLUMNS` or their ``_std``, as written: ``Drop`` sits beside ``drop``)."""
    return name in REPORT_COLUMNS or (name.endswith("_std") and name[: -len("_std")] in REPORT_COLUMNS)
