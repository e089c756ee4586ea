"""What both sources of results end in: a :class:`ResultSet`, and the error a bad input raises.

One row per trial (trial × seed) with its label columns (as shown in tables), its status and one
float column per domain column (mIoU in percent, NaN where missing). Tables and plots read only
that frame, so they never touch MLflow.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from famix_core.domains import DEFAULT_TARGETS, UnknownDomainError, resolve_domain
from famix_core.errors import FamixError
from reports.schema import COL_SEED, COL_STATUS, COL_TRIAL

__all__ = ["ReportInputError", "ResultSet", "domain_column", "order_domains"]


class ReportInputError(FamixError, ValueError):
    """Report input is missing or malformed: one line naming the file / sweep / column and what was expected."""


@dataclass
class ResultSet:
    """A sweep's results, one row per trial (trial × seed).

    Attributes:
        sweep: sweep name (titles, default output folder).
        source: where the numbers came from (``mlflow <uri>`` or the CSV path), for messages.
        label_columns: label column names, in the sweep's order (e.g. ``freeze, augment, mix``).
        domains: domain columns (``C``, ``B`` …), in the sweep's order.
        runs: DataFrame with :data:`reports.schema.RESERVED_COLUMNS`, the label columns (str) and the
            domain columns (float, percent, NaN = missing); rows in grid order.
        tracking_uri: the MLflow URI when read from MLflow (loss curves, qualitative), else ``None``.
        notes: lines for the reader of the report (printed, and in its README).
        provenance: those of the notes that say how the numbers were made (command-line overrides,
            code versions): they also travel with the tables (table.md, table.tex), which are pasted elsewhere.
    """

    sweep: str
    source: str
    label_columns: list[str]
    domains: list[str]
    runs: pd.DataFrame
    tracking_uri: str | None = None
    notes: list[str] = field(default_factory=list)
    provenance: list[str] = field(default_factory=list)

    def to_results_csv(self) -> pd.DataFrame:
        """The Results CSV (wide, percent): label columns, ``seed``, ``status``, ``trial`` (where the runs
        have ids: it reads back into the same footnotes), one column per domain."""
        with_ids = COL_TRIAL in self.runs and self.runs[COL_TRIAL].astype(str).str.strip().ne("").any()
        cols = [*self.label_columns, COL_SEED, COL_STATUS, *([COL_TRIAL] if with_ids else []), *self.domains]
        out = self.runs[cols].copy()
        seeds = pd.to_numeric(out[COL_SEED], errors="coerce")
        if (seeds.dropna() % 1 == 0).all():
            out[COL_SEED] = seeds.astype("Int64")  # 0, not 0.0; missing stays empty
        return out


def domain_column(name: str) -> str | None:
    """Table column of a domain given by column (``C``) or registry name (``cityscapes``); ``None`` if not a domain."""
    try:
        d = resolve_domain(name)
    except UnknownDomainError:
        return None
    return d.column


def order_domains(found: list[str]) -> list[str]:
    """Known domains in the paper's order, then any others in the order found."""
    paper = [c for c in DEFAULT_TARGETS if c in found]
    return paper + [c for c in found if c not in paper]
