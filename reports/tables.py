"""The paper's tables from a :class:`~reports.collect.ResultSet`: Markdown, LaTeX (booktabs) and a summary frame.

Pure pandas (no MLflow, no matplotlib). Rules, applied identically to both formats:

* rows are grid points (distinct label tuples) in the sweep's order; several trials with the
  same labels (seeds) are averaged: ``mean ± std`` (sample std) with an ``n`` column;
* columns are the domains in the sweep's order, then ``Mean`` = the average of the row's
  domain cells, computed here (never read from the input);
* values are percent with two decimals; in each column the best value is bold and the second
  best underlined, comparing the two-decimal values (ties share the mark; "second" is the next
  distinct value); a partial Mean takes no mark;
* a missing cell shows "–" with a numbered footnote naming the trial(s) and their status; the
  Mean of a row with an empty cell is partial: the average of the cells it has, marked "†";
* optional paired difference vs a baseline row: per seed, the mean over domains of
  (row − baseline); then mean ± std over the paired seeds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Callable

import numpy as np
import pandas as pd

from reports.collect import ReportInputError, ResultSet

__all__ = [
    "CellValue",
    "TableRow",
    "Table",
    "build_table",
    "render_markdown",
    "render_latex",
    "summary_frame",
    "LATEX_PACKAGES",
    "shown_label",
    "fmt2",
]

LATEX_PACKAGES: tuple[str, ...] = ("booktabs", "amssymb")
"""Packages ``table.tex`` needs in the including document (amssymb for ``\\checkmark``)."""

PARTIAL_MARK = "†"
_YES = {"yes", "true", "on", "y", "✓", "1.0"}
_NO = {"no", "false", "off", "n", "✗", "0.0"}
_SUPERSCRIPT = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")


def fmt2(value: float, *, signed: bool = False) -> str:
    """Two decimals, rounding half up as tables in papers do (32.925 -> 32.93), immune to binary noise."""
    d = Decimal(repr(round(value, 9))).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    if d == 0:
        d = abs(d)  # never "-0.00"
    return f"{d:+}" if signed else f"{d}"


def shown_label(value: str) -> str:
    """A label as tables show it: yes/true/on → ✓, no/false/off → ✗, anything else unchanged."""
    v = str(value).strip()
    if v.lower() in _YES:
        return "✓"
    if v.lower() in _NO:
        return "✗"
    return v


@dataclass
class CellValue:
    """One table cell.

    Attributes:
        mean: mean over the cell's values (percent), ``None`` when it has none.
        std: sample std over seeds (``None`` for fewer than two values).
        n: number of values averaged.
        mark: ``"best"``, ``"second"`` or ``None``.
        notes: footnote numbers attached to the cell.
        partial: the value averages fewer domains than the table has (Mean only).
        signed: show an explicit sign (paired differences).
    """

    mean: float | None = None
    std: float | None = None
    n: int = 0
    mark: str | None = None
    notes: list[int] = field(default_factory=list)
    partial: bool = False
    signed: bool = False

    def rounded(self) -> float | None:
        """The two-decimal value the table shows (what ranking compares)."""
        return None if self.mean is None else float(fmt2(self.mean))


@dataclass
class TableRow:
    """One grid point: its labels, trials and cells."""

    labels: dict[str, str]
    trials: list[str]
    n: int
    cells: dict[str, CellValue]
    mean: CellValue
    delta: CellValue | None = None


@dataclass
class Table:
    """A rendered-format-independent table; see the module docstring for the rules."""

    title: str
    label_columns: list[str]
    domains: list[str]
    rows: list[TableRow]
    footnotes: list[str]
    show_n: bool
    baseline: int | None = None
    baseline_name: str = ""

    @property
    def columns(self) -> list[str]:
        """Value columns in order: domains, then ``Mean``."""
        return [*self.domains, "Mean"]

    def cell(self, row: int, column: str) -> CellValue:
        """Cell of row ``row`` (0-based) in ``column`` (a domain or ``Mean``)."""
        r = self.rows[row]
        return r.mean if column == "Mean" else r.cells[column]


def _std(values: list[float]) -> float | None:
    return float(np.std(values, ddof=1)) if len(values) >= 2 else None


def _rank(cells: list[CellValue]) -> None:
    """Bold the best and underline the second-best distinct two-decimal value; ties share the mark."""
    ranked = [c for c in cells if c.mean is not None and not c.partial]
    if len(ranked) < 2:
        return
    distinct = sorted({c.rounded() for c in ranked}, reverse=True)
    for c in ranked:
        if c.rounded() == distinct[0]:
            c.mark = "best"
        elif len(distinct) > 1 and c.rounded() == distinct[1]:
            c.mark = "second"


def _seed_key(seed: float, position: int) -> object:
    return ("pos", position) if seed is None or (isinstance(seed, float) and math.isnan(seed)) else seed


def _resolve_baseline(spec: str, rows: list[TableRow], label_columns: list[str]) -> int:
    """Row index of ``--baseline``: a 1-based row number, or ``col=value[,col=value]`` matching one row."""
    text = spec.strip()
    if text.isdigit():
        k = int(text)
        if not 1 <= k <= len(rows):
            raise ReportInputError(f"--baseline {spec}: row number must be in 1..{len(rows)}")
        return k - 1
    wanted: dict[str, str] = {}
    for part in text.split(","):
        if "=" not in part:
            raise ReportInputError(
                f"--baseline {spec!r}: expected a row number or label=value pairs (labels: {', '.join(label_columns)})"
            )
        k, v = (s.strip() for s in part.split("=", 1))
        if k not in label_columns:
            raise ReportInputError(f"--baseline {spec!r}: unknown label {k!r} (labels: {', '.join(label_columns)})")
        wanted[k] = shown_label(v)
    hits = [i for i, r in enumerate(rows) if all(shown_label(r.labels[k]) == v for k, v in wanted.items())]
    if len(hits) != 1:
        raise ReportInputError(f"--baseline {spec!r}: matches {len(hits)} rows, expected exactly one")
    return hits[0]


def build_table(results: ResultSet, *, baseline: str | None = None, title: str | None = None) -> Table:
    """Aggregate a ResultSet into a :class:`Table` (means, stds, marks, footnotes, optional Δ column).

    Args:
        results: the collected runs (percent).
        baseline: optional row for the paired-difference column: 1-based row number or
            ``label=value,…`` (e.g. ``freeze=no,augment=no,mix=no``).
        title: caption (default: the sweep name).

    Returns:
        Table with one row per distinct label tuple, in grid order.
    """
    runs = results.runs
    doms = results.domains
    labels = results.label_columns
    if runs.empty:
        raise ReportInputError(f"{results.source}: no runs")
    group_key = runs[labels].astype(str).agg("\x1f".join, axis=1) if labels else pd.Series("", index=runs.index)
    order = list(dict.fromkeys(group_key))  # first appearance = grid order (runs are sorted by trial_index)

    footnotes: list[str] = []
    rows: list[TableRow] = []
    per_seed: list[dict[object, dict[str, float]]] = []  # row -> seed -> domain -> value (for Δ)
    for key in order:
        grp = runs[group_key == key]
        label_vals = {c: str(grp.iloc[0][c]) for c in labels}
        trial_notes: dict[str, int] = {}
        for _, t in grp.iterrows():
            missing = [d for d in doms if pd.isna(t[d])]
            if missing or str(t["status"]) not in ("done", "ok", "finished"):
                seed = "" if pd.isna(t["seed"]) else f", seed {int(t['seed'])}"
                what = f"no mIoU for {', '.join(missing)}" if missing else "all domains present"
                footnotes.append(f"trial {t['trial']}{seed}: {t['status']} ({what})")
                trial_notes[str(t["trial"])] = len(footnotes)
        cells: dict[str, CellValue] = {}
        for d in doms:
            vals = [float(v) for v in grp[d] if not pd.isna(v)]
            notes = sorted(trial_notes[str(t)] for t, v in zip(grp["trial"], grp[d]) if pd.isna(v) and str(t) in trial_notes)
            cells[d] = CellValue(
                mean=float(np.mean(vals)) if vals else None, std=_std(vals), n=len(vals), notes=notes
            )
        have = [c.mean for c in cells.values() if c.mean is not None]
        complete = grp[doms].dropna()
        seed_means = list(complete.mean(axis=1)) if len(doms) else []
        mean = CellValue(
            mean=float(np.mean(have)) if have else None,
            std=_std(seed_means),
            n=len(seed_means),
            partial=len(have) < len(doms),
        )
        rows.append(
            TableRow(labels=label_vals, trials=[str(t) for t in grp["trial"]], n=len(grp), cells=cells, mean=mean)
        )
        per_seed.append(
            {
                _seed_key(s, i): {d: float(v) for d, v in zip(doms, vals) if not pd.isna(v)}
                for i, (s, vals) in enumerate(zip(grp["seed"], grp[doms].itertuples(index=False)))
            }
        )

    for col in doms:
        _rank([r.cells[col] for r in rows])
    _rank([r.mean for r in rows])

    base_idx = None
    base_name = ""
    if baseline is not None:
        base_idx = _resolve_baseline(baseline, rows, labels)
        base_name = ", ".join(f"{k}={shown_label(v)}" for k, v in rows[base_idx].labels.items()) or f"row {base_idx + 1}"
        base = per_seed[base_idx]
        for i, row in enumerate(rows):
            mine = per_seed[i]
            pairs = [s for s in mine if s in base]
            if not pairs and len(mine) == 1 and len(base) == 1:
                pairs = [next(iter(mine))]  # one run each and no seeds to match: pair them
                base_of = {pairs[0]: next(iter(base.values()))}
            else:
                base_of = {s: base[s] for s in pairs}
            diffs = []
            for s in pairs:
                common = [d for d in doms if d in mine[s] and d in base_of[s]]
                if common:
                    diffs.append(float(np.mean([mine[s][d] - base_of[s][d] for d in common])))
            row.delta = CellValue(
                mean=float(np.mean(diffs)) if diffs else None, std=_std(diffs), n=len(diffs), signed=True
            )

    return Table(
        title=title or results.sweep,
        label_columns=labels,
        domains=doms,
        rows=rows,
        footnotes=footnotes,
        show_n=any(r.n != 1 for r in rows),
        baseline=base_idx,
        baseline_name=base_name,
    )


# ----------------------------------------------------------------------------- rendering


@dataclass(frozen=True)
class _Style:
    """How one output format writes the pieces of a cell."""

    bold: Callable[[str], str]
    underline: Callable[[str], str]
    pm: str
    dash: str
    partial: str
    note: Callable[[list[int]], str]
    label: Callable[[str], str]
    text: Callable[[str], str]


def _md_escape(s: str) -> str:
    return s.replace("|", "\\|")


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "–": "--",
    "—": "---",
    "±": r"$\pm$",
    "Δ": r"$\Delta$",
    "†": r"$^\dagger$",
    "✓": r"$\checkmark$",
    "✗": r"$\times$",
}


def _tex_escape(s: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in s)


def _tex_label(value: str) -> str:
    shown = shown_label(value)
    return {"✓": r"$\checkmark$", "✗": r"$\times$"}.get(shown, _tex_escape(shown))


_MARKDOWN = _Style(
    bold=lambda s: f"**{s}**",
    underline=lambda s: f"<u>{s}</u>",
    pm=" ± ",
    dash="–",
    partial=PARTIAL_MARK,
    note=lambda ns: ",".join(str(n) for n in ns).translate(_SUPERSCRIPT).replace(",", "˒"),
    label=lambda v: _md_escape(shown_label(v)),
    text=_md_escape,
)

_LATEX = _Style(
    bold=lambda s: rf"\textbf{{{s}}}",
    underline=lambda s: rf"\underline{{{s}}}",
    pm=r" $\pm$ ",
    dash="--",
    partial=r"$^\dagger$",
    note=lambda ns: "$^{" + ",".join(str(n) for n in ns) + "}$",
    label=_tex_label,
    text=_tex_escape,
)


def _fmt_cell(c: CellValue, st: _Style) -> str:
    if c.mean is None:
        return st.dash + (st.note(c.notes) if c.notes else "")
    value = fmt2(c.mean, signed=c.signed)
    if c.std is not None:
        value += f"{st.pm}{fmt2(c.std)}"
    if c.mark == "best":
        value = st.bold(value)
    elif c.mark == "second":
        value = st.underline(value)
    if c.partial:
        value += st.partial
    if c.notes:
        value += st.note(c.notes)
    return value


def _header(table: Table, st: _Style) -> list[str]:
    head = [st.text(c[:1].upper() + c[1:]) for c in table.label_columns]
    if table.show_n:
        head.append("n")
    head += [st.text(c) for c in table.columns]
    if table.baseline is not None:
        head.append("Δ" if st is _MARKDOWN else r"$\Delta$")
    return head


def _body(table: Table, st: _Style) -> list[list[str]]:
    out = []
    for i, r in enumerate(table.rows):
        line = [st.label(r.labels[c]) for c in table.label_columns]
        if table.show_n:
            line.append(str(r.n))
        line += [_fmt_cell(r.cells[d], st) for d in table.domains]
        line.append(_fmt_cell(r.mean, st))
        if table.baseline is not None:
            line.append("(baseline)" if i == table.baseline else _fmt_cell(r.delta or CellValue(), st))
        out.append(line)
    return out


def _notes_text(table: Table) -> list[str]:
    """Footnote sentences shared by both formats (format-specific markers are added by the renderer)."""
    lines = []
    if any(r.mean.partial and r.mean.mean is not None for r in table.rows):
        lines.append(("partial", "Mean over the available domains only (a domain cell is missing); not ranked."))
    if table.show_n:
        lines.append(("", "Several seeds: mean ± sample std over n runs; marks compare the means."))
    if table.baseline is not None:
        lines.append(
            ("", f"Δ: paired difference to the baseline ({table.baseline_name}): per seed, the mean over domains "
             "of the difference; mean ± std over seeds.")
        )
    return lines


def render_markdown(table: Table) -> str:
    """The table as GitHub Markdown (``**best**``, ``<u>second</u>``), footnotes below it."""
    head = _header(table, _MARKDOWN)
    align = [":-:"] * len(table.label_columns) + ([":-:"] if table.show_n else []) + ["--:"] * (len(head) - len(table.label_columns) - (1 if table.show_n else 0))
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in _body(table, _MARKDOWN)]
    notes = [f"{PARTIAL_MARK} {t}" if kind == "partial" else t for kind, t in _notes_text(table)]
    notes += [f"{str(i).translate(_SUPERSCRIPT)} {_md_escape(t)}" for i, t in enumerate(table.footnotes, 1)]
    notes.append("mIoU (%); **bold**: best, <u>underlined</u>: second best of each column; Mean computed over the domain columns.")
    return "\n".join(lines) + "\n\n" + "\n".join(f"{n}  " for n in notes).rstrip() + "\n"


def render_latex(table: Table) -> str:
    """The table as a booktabs ``tabular`` (needs ``\\usepackage{booktabs,amssymb}``), footnotes below it."""
    head = _header(table, _LATEX)
    spec = "c" * (len(table.label_columns) + (1 if table.show_n else 0)) + "r" * (len(head) - len(table.label_columns) - (1 if table.show_n else 0))
    lines = [
        f"% FAMix report: {table.title.replace(chr(10), ' ')} (mIoU %).",
        "% Requires in the preamble: " + " ".join(rf"\usepackage{{{p}}}" for p in LATEX_PACKAGES),
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        " & ".join(head) + r" \\",
        r"\midrule",
    ]
    lines += [" & ".join(row) + r" \\" for row in _body(table, _LATEX)]
    lines += [r"\bottomrule", r"\end{tabular}"]
    notes = [(r"$^\dagger$ " if kind == "partial" else "") + _tex_escape(t) for kind, t in _notes_text(table)]
    notes += [f"$^{{{i}}}$ {_tex_escape(t)}" for i, t in enumerate(table.footnotes, 1)]
    if notes:
        lines.append(r"\par\smallskip{\footnotesize " + r" \\ ".join(notes) + r"\par}")
    return "\n".join(lines) + "\n"


def summary_frame(table: Table) -> pd.DataFrame:
    """The table's numbers (unrounded): labels, n, ``<col>`` / ``<col>_std`` per domain and Mean, marks, Δ."""
    recs = []
    for r in table.rows:
        rec: dict[str, object] = {c: r.labels[c] for c in table.label_columns}
        rec["n"] = r.n
        for col in table.columns:
            c = table.cell(table.rows.index(r), col)
            rec[col] = c.mean
            rec[f"{col}_std"] = c.std
            rec[f"{col}_mark"] = c.mark or ""
        rec["Mean_partial"] = r.mean.partial
        if table.baseline is not None and r.delta is not None:
            rec["delta"] = r.delta.mean
            rec["delta_std"] = r.delta.std
        recs.append(rec)
    return pd.DataFrame(recs)
