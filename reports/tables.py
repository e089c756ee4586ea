"""The paper's tables from a :class:`~reports.collect.ResultSet`: Markdown, LaTeX (booktabs) and a summary frame.

Pure pandas (no MLflow, no matplotlib). Rules, applied identically to both formats:

* rows are grid points (distinct label tuples) in the sweep's order; several trials with the
  same labels (seeds) are averaged: ``mean ± std`` (sample std) with an ``n`` column that counts
  the runs with values (a range, ``2–3``, where the row's cells average different numbers of runs);
* columns are the domains in the sweep's order, then ``Mean`` = the average of the row's
  domain cells, computed here (never read from the input);
* values are percent with two decimals; in each column the best value is bold and the second
  best underlined, comparing the two-decimal values (ties share the mark; "second" is the next
  distinct value); a partial Mean takes no mark; LaTeX marks the mean alone, not its ``± std``;
* a missing cell shows "–" with a numbered footnote naming the trial(s) and their status (where the
  input has one: a CSV without a ``status`` column has none, and none is made up); the
  Mean of a row with an empty cell is partial: the average of the cells it has, marked "†"; so is
  the Mean of a row where a seed lacks some domains but not all (its cells average different seeds);
* optional paired difference vs a baseline row: per seed, the mean over domains of
  (row − baseline); then mean ± std over the paired seeds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from decimal import ROUND_HALF_UP, Decimal
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from reports.collect import ReportInputError, ResultSet
from reports.schema import COL_DELTA

__all__ = [
    "CellValue",
    "TableRow",
    "Table",
    "build_table",
    "DeltaGrid",
    "delta_grid",
    "render_markdown",
    "render_latex",
    "summary_frame",
    "LATEX_PACKAGES",
    "LATEX_WIDTHS",
    "latex_packages",
    "n_text",
    "shown_label",
    "column_title",
    "row_name",
    "fmt2",
    "notes_text",
    "md_escape",
    "markdown_cell",
    "summary_cell",
]

LATEX_PACKAGES: tuple[str, ...] = ("booktabs", "amssymb", "graphicx")
"""Packages ``table.tex`` needs in the including document (amssymb for ``\\checkmark``, graphicx for
``\\resizebox``; ``--latex-width none`` needs only the first two: :func:`latex_packages`)."""

LATEX_WIDTHS: tuple[str, ...] = ("column", "page", "none")
"""``render_latex`` widths: ``column`` (``\\small``, ``\\tabcolsep`` 3pt, shrunk to ``\\linewidth`` when
still wider: one column of a two-column paper), ``page`` (``\\tabcolsep`` 4pt, shrunk to ``\\linewidth``
when wider: a ``table*`` spanning the page), ``none`` (a bare ``tabular``, its notes in ``%`` comments)."""


def latex_packages(width: str) -> tuple[str, ...]:
    """The packages ``table.tex`` at ``width`` needs (what it and the report's README name): graphicx
    only for the ``\\resizebox`` of ``column`` and ``page``."""
    return LATEX_PACKAGES if width != "none" else LATEX_PACKAGES[:2]


PARTIAL_MARK = "†"
_YES = {"yes", "true", "on", "y", "✓", "1.0"}
_NO = {"no", "false", "off", "n", "✗", "0.0"}
_SUPERSCRIPT = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")


def fmt2(value: float, *, signed: bool = False) -> str:
    """Two decimals, rounding half up as tables in papers do (32.925 -> 32.93), immune to binary noise."""
    d = Decimal(repr(round(float(value), 9))).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    if d == 0:
        d = abs(d)  # never "-0.00"
    return f"{d:+}" if signed else f"{d}"


def row_name(number: int, labels: Mapping[str, str]) -> str:
    """A table row as the notes name it: ``row 6 (Freeze ✓, Augment ✓, Mix ✗)``; ``row 6`` without labels."""
    shown = ", ".join(f"{column_title(c)} {shown_label(v)}" for c, v in labels.items())
    return f"row {number}" + (f" ({shown})" if shown else "")


def shown_label(value: str) -> str:
    """A label as tables show it: yes/true/on → ✓, no/false/off → ✗, anything else unchanged."""
    v = str(value).strip()
    if v.lower() in _YES:
        return "✓"
    if v.lower() in _NO:
        return "✗"
    return v


def column_title(name: str) -> str:
    """A label column's name as headers, notes and titles write it: ``freeze`` → ``Freeze``, the rest
    as written (``style_class`` stays; ``AN`` is not lowered)."""
    return name[:1].upper() + name[1:]


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
    """One grid point: its labels, trials and cells; ``n``: the most runs any of its cells averages
    (a run without a value, a seed that failed outright, is not one of the ``n`` runs)."""

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


def n_text(row: TableRow) -> str:
    """A row's ``n`` as tables show it: ``3``, or ``2–3`` where its cells average different numbers of
    runs (a seed lacks some domains; its footnote names them). Empty cells do not count: they show ``–``."""
    counts = [c.n for c in row.cells.values() if c.n]
    if not counts or min(counts) == max(counts):
        return str(row.n)
    return f"{min(counts)}–{max(counts)}"


def summary_cell(values: list[float], *, signed: bool = False) -> CellValue:
    """Mean ± sample std (std for two values or more) of ``values``; an empty cell without values."""
    return CellValue(
        mean=float(np.mean(values)) if values else None,
        std=float(np.std(values, ddof=1)) if len(values) >= 2 else None,
        n=len(values),
        signed=signed,
    )


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


_OK_STATUS = np.array(["done", "ok", "finished"])


def _group_key(runs: pd.DataFrame, labels: list[str]) -> pd.Series:
    """One string per run identifying its grid point (vectorized concatenation of the label values)."""
    if not labels:
        return pd.Series("", index=runs.index)
    key = runs[labels[0]].astype(str)
    for c in labels[1:]:
        key = key.str.cat(runs[c].astype(str), sep="\x1f")
    return key


@dataclass
class DeltaGrid:
    """Paired differences to a baseline row, per row and column (the domains, then ``Mean``), in points.

    Attributes:
        columns: the domains, then ``Mean``.
        baseline: 0-based row index of the baseline.
        mean: (G, C) mean over paired seeds of (row − baseline); NaN where no pair has the value.
        std: (G, C) sample std over paired seeds; NaN for fewer than two pairs.
        n: (G,) paired seeds per row.
    """

    columns: list[str]
    baseline: int
    mean: np.ndarray
    std: np.ndarray
    n: np.ndarray


def _pair_differences(runs: pd.DataFrame, codes: np.ndarray, vals: np.ndarray, base: int) -> list[list[np.ndarray]]:
    """Per group, one (D,) array of (run − baseline run) per seed present in both (NaN where either lacks a value).

    Runs pair by seed; runs without a seed pair by their position within the row.
    """
    position = pd.Series(codes).groupby(codes).cumcount().to_numpy()  # (N,)
    seed = runs["seed"].to_numpy(dtype=float)
    pair_key = np.where(np.isnan(seed), -1.0 - position, seed)  # (N,) negative keys: "no seed, i-th run"
    base_of = {float(pair_key[i]): vals[i] for i in np.flatnonzero(codes == base)}
    out: list[list[np.ndarray]] = [[] for _ in range(int(codes.max()) + 1 if len(codes) else 0)]
    for i in range(len(runs)):
        ref = base_of.get(float(pair_key[i]))
        if ref is not None:
            out[int(codes[i])].append(vals[i] - ref)  # (D,)
    return out


def _paired_deltas(rows: list[TableRow], runs: pd.DataFrame, codes: np.ndarray, vals: np.ndarray, base: int) -> None:
    """Fill ``row.delta``: per seed, mean over shared domains of (row − baseline); mean ± std over seeds."""
    for row, pairs in zip(rows, _pair_differences(runs, codes, vals, base)):
        ds = [float(d[~np.isnan(d)].mean()) for d in pairs if (~np.isnan(d)).any()]
        row.delta = summary_cell(ds, signed=True)
        # fewer domains for a seed; one without any value (failed outright) is left out, as from the Mean
        row.delta.partial = any(np.isnan(d).any() and not np.isnan(d).all() for d in pairs) and row.delta.mean is not None


def delta_grid(results: ResultSet, baseline: int = 0) -> DeltaGrid:
    """Per-domain paired differences of every row to row ``baseline`` (0-based), plus the Mean column.

    The Mean column is the table's Δ: per seed, the mean over the shared domains of the difference.

    Raises:
        ReportInputError: ``baseline`` is not a row.
    """
    runs = results.runs.reset_index(drop=True)
    doms = list(results.domains)
    codes, uniques = pd.factorize(_group_key(runs, list(results.label_columns)), sort=False)
    if not 0 <= baseline < len(uniques):
        raise ReportInputError(f"--baseline {baseline + 1}: row number must be in 1..{len(uniques)}")
    vals = runs[doms].to_numpy(dtype=float)  # (N, D)
    g, c = len(uniques), len(doms) + 1
    mean, std = np.full((g, c), np.nan), np.full((g, c), np.nan)
    n = np.zeros(g, dtype=int)
    for k, pairs in enumerate(_pair_differences(runs, codes, vals, baseline)):
        if not pairs:
            continue
        d = np.stack(pairs)  # (P, D)
        have = ~np.isnan(d)
        row_mean = np.array([p[h].mean() if h.any() else np.nan for p, h in zip(d, have)])  # (P,)
        full = np.concatenate([d, row_mean[:, None]], axis=1)  # (P, D + 1)
        for j in range(c):
            col = full[:, j][~np.isnan(full[:, j])]
            if len(col):
                mean[k, j] = col.mean()
            if len(col) >= 2:
                std[k, j] = col.std(ddof=1)
        n[k] = int((~np.isnan(row_mean)).sum())
    return DeltaGrid(columns=[*doms, "Mean"], baseline=baseline, mean=mean, std=std, n=n)


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
        if k not in label_columns:  # `freeze=no` names the column Freeze, where no other column is spelt so
            alike = [c for c in label_columns if c.casefold() == k.casefold()]
            if len(alike) > 1:
                raise ReportInputError(f"--baseline {spec!r}: label {k!r} could be {' or '.join(alike)}; write it as one of them")
            if not alike:
                raise ReportInputError(f"--baseline {spec!r}: unknown label {k!r} (labels: {', '.join(label_columns)})")
            k = alike[0]
        wanted[k] = shown_label(v)
    hits = [i for i, r in enumerate(rows) if all(shown_label(r.labels[k]) == v for k, v in wanted.items())]
    if len(hits) != 1:
        raise ReportInputError(f"--baseline {spec!r}: matches {len(hits)} rows, expected exactly one")
    return hits[0]


def build_table(results: ResultSet, *, baseline: str | None = None, title: str | None = None) -> Table:
    """Aggregate a ResultSet into a :class:`Table` (means, stds, marks, footnotes, optional Δ column).

    Vectorized over runs (one groupby), so 10,000 runs take well under a second.

    Args:
        results: the collected runs (percent).
        baseline: optional row for the paired-difference column: 1-based row number or
            ``label=value,…`` (e.g. ``freeze=no,augment=no,mix=no``).
        title: caption (default: the sweep name).

    Returns:
        Table with one row per distinct label tuple, in grid order.
    """
    runs = results.runs.reset_index(drop=True)
    doms = list(results.domains)
    labels = list(results.label_columns)
    if runs.empty:
        raise ReportInputError(f"{results.source}: no runs")
    group_key = _group_key(runs, labels)
    codes, uniques = pd.factorize(group_key, sort=False)  # first appearance = grid order
    n_groups = len(uniques)
    vals = runs[doms].to_numpy(dtype=float) if doms else np.zeros((len(runs), 0))  # (N, D)
    by = pd.DataFrame(vals, columns=doms).groupby(codes, sort=True)
    cell_mean = by.mean().to_numpy()  # (G, D), NaN where a cell has no value
    cell_std = by.std(ddof=1).to_numpy()  # (G, D), NaN for fewer than two values
    cell_n = by.count().to_numpy()  # (G, D)
    size = np.bincount(codes, minlength=n_groups)  # (G,)
    complete = ~np.isnan(vals).any(axis=1) if doms else np.ones(len(runs), bool)  # (N,)
    trial_mean = pd.Series(np.where(complete, vals.mean(axis=1) if doms else np.nan, np.nan))  # (N,)
    seed_std = trial_mean.groupby(codes).std(ddof=1).reindex(range(n_groups)).to_numpy()  # (G,)
    seed_n = trial_mean.groupby(codes).count().reindex(range(n_groups)).to_numpy()  # (G,)
    first = pd.Series(range(len(runs))).groupby(codes).first().to_numpy()  # (G,) row of each group's first run
    trials_of = runs["trial"].astype(str).groupby(codes).agg(list)  # group -> trial ids

    # footnotes: only trials with a missing domain or a status other than done (usually few); an empty
    # status is none known (a CSV without the column): such a run's footnote says what is missing, no more
    footnotes: list[str] = []
    notes_at: dict[tuple[int, int], list[int]] = {}  # (group, domain index) -> footnote numbers
    status = runs["status"].fillna("").astype(str).str.strip().to_numpy()
    problem = np.flatnonzero(~complete | ((status != "") & ~np.isin(status, _OK_STATUS)))
    for i in problem:
        t = runs.iloc[i]
        missing = [j for j, d in enumerate(doms) if np.isnan(vals[i, j])]
        seed = "" if pd.isna(t["seed"]) else f", seed {int(t['seed'])}"
        what = f"no mIoU for {', '.join(doms[j] for j in missing)}" if missing else "all domains present"
        trial = str(t["trial"]) if str(t["trial"]) not in ("", "nan", "None") else ""
        footnotes.append(
            f"{row_name(int(codes[i]) + 1, {c: t[c] for c in labels})}{seed}: {f'{status[i]} ({what})' if status[i] else what}"
            + (f"; trial {trial}" if trial else "")
        )
        for j in missing:
            notes_at.setdefault((int(codes[i]), j), []).append(len(footnotes))

    def _f(x: float) -> float | None:
        return None if np.isnan(x) else float(x)

    rows: list[TableRow] = []
    for g in range(n_groups):
        cells = {
            d: CellValue(mean=_f(cell_mean[g, j]), std=_f(cell_std[g, j]), n=int(cell_n[g, j]), notes=notes_at.get((g, j), []))
            for j, d in enumerate(doms)
        }
        have = cell_mean[g][~np.isnan(cell_mean[g])]
        mean = CellValue(
            mean=float(have.mean()) if len(have) else None,
            std=_f(seed_std[g]),
            n=int(seed_n[g]),
            # a domain cell missing, or one averaging other seeds than the Mean's (a seed that lacks a domain; one
            # that failed outright leaves every cell and the Mean to the same seeds, and the row is ranked)
            partial=bool((cell_n[g] == 0).any() or (cell_n[g] != seed_n[g]).any()),
        )
        first_run = runs.iloc[int(first[g])]
        rows.append(
            TableRow(
                labels={c: str(first_run[c]) for c in labels},
                trials=trials_of[g],
                n=int(cell_n[g].max()) if doms else 0,
                cells=cells,
                mean=mean,
            )
        )

    for col in doms:
        _rank([r.cells[col] for r in rows])
    _rank([r.mean for r in rows])

    base_idx = None
    base_name = ""
    if baseline is not None:
        base_idx = _resolve_baseline(baseline, rows, labels)
        base_name = ", ".join(f"{column_title(k)}={shown_label(v)}" for k, v in rows[base_idx].labels.items()) or f"row {base_idx + 1}"
        _paired_deltas(rows, runs, codes, vals, base_idx)

    return Table(
        title=title or results.sweep,
        label_columns=labels,
        domains=doms,
        rows=rows,
        footnotes=footnotes,
        show_n=bool((size > 1).any()),  # several runs of a grid point, though some may have no value
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
    std: Callable[[str], str] | None = None  # how "± std" follows the mean (default: pm + std)
    minus: str = "-"  # a negative value's sign (LaTeX: a minus, not a hyphen)
    mark_mean_only: bool = False  # LaTeX: an \underline under "mean ± std" sat on the next row's digits


_ENTITY_START = re.compile(r"&(?=#?[0-9A-Za-z]+;)")


def md_escape(s: str) -> str:
    """``s`` as literal Markdown text: a pipe cannot end a cell; asterisks, backticks and backslashes
    are shown, not read as emphasis or code; angle brackets are not HTML (a label ``<b>x`` bolded the
    rest of the table), nor is an ampersand that starts an entity (a label ``&lt;b&gt;`` showed as
    ``<b>``). Underscores and a lone ``&`` are left: GitHub reads ``style_class`` and ``A & B`` as they
    are, and the raw table stays plain."""
    for ch in ("\\", "*", "`"):
        s = s.replace(ch, "\\" + ch)
    s = _ENTITY_START.sub("&amp;", s)
    return s.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


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
    "|": r"\textbar{}",  # OT1, LaTeX's default font encoding, prints these as — ¡ ¿
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "−": "$-$",
    "×": r"$\times$",
    "·": r"$\cdot$",
    "°": r"$^\circ$",
    "→": r"$\rightarrow$",
    "←": r"$\leftarrow$",
    "≥": r"$\geq$",
    "≤": r"$\leq$",
    "≠": r"$\neq$",
    "≈": r"$\approx$",
    "∞": r"$\infty$",
    **{chr(0x3B1 + i): (rf"$\{name}$" if len(name) > 1 else name) for i, name in enumerate(
        "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi o pi rho varsigma sigma tau upsilon "
        "phi chi psi omega".split())},  # Greek letters were a LaTeX error (omicron is a Latin o there)
    **{chr(0x391 + i): (rf"$\{name}$" if name[0].isupper() else name) for i, name in enumerate(
        "A B Gamma Delta E Z H Theta I K Lambda M N Xi O Pi P _ Sigma T Upsilon Phi X Psi Omega".split()) if name != "_"},
}


def _tex_escape(s: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in s)


def _tex_label(value: str) -> str:
    shown = shown_label(value)
    return {"✓": r"$\checkmark$", "✗": r"$\times$"}.get(shown, _tex_escape(shown))


_MARKDOWN = _Style(
    bold=lambda s: f"**{s}**",
    underline=lambda s: f"<ins>{s}</ins>",  # GitHub strips <u> from Markdown; <ins> shows underlined
    pm=" ± ",
    dash="–",
    partial=PARTIAL_MARK,
    note=lambda ns: ",".join(str(n) for n in ns).translate(_SUPERSCRIPT).replace(",", "˒"),
    label=lambda v: md_escape(shown_label(v)),
    text=md_escape,
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
    minus="$-$",
    mark_mean_only=True,
)


_LATEX_COLUMN = replace(_LATEX, std=lambda s: rf"\,{{\scriptsize$\pm${s}}}")
"""Column width: the std in script size right after the mean, so a seeded table shrinks less."""


def _fmt_cell(c: CellValue, st: _Style) -> str:
    if c.mean is None:
        return st.dash + (st.note(c.notes) if c.notes else "")
    value = fmt2(c.mean, signed=c.signed)
    if value.startswith("-"):
        value = st.minus + value[1:]
    std = ""
    if c.std is not None:
        std = st.std(fmt2(c.std)) if st.std is not None else f"{st.pm}{fmt2(c.std)}"
    mark = {"best": st.bold, "second": st.underline}.get(c.mark or "", lambda s: s)
    value = mark(value) + std if st.mark_mean_only else mark(value + std)
    if c.partial:
        value += st.partial
    if c.notes:
        value += st.note(c.notes)
    return value


def markdown_cell(c: CellValue) -> str:
    """A cell as the Markdown table shows it: ``mean ± std``, its marks and notes, ``–`` when empty."""
    return _fmt_cell(c, _MARKDOWN)


def _header(table: Table, st: _Style) -> list[str]:
    head = [st.text(column_title(c)) for c in table.label_columns]
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
            line.append(st.text(n_text(r)))
        line += [_fmt_cell(r.cells[d], st) for d in table.domains]
        line.append(_fmt_cell(r.mean, st))
        if table.baseline is not None:
            line.append("(baseline)" if i == table.baseline else _fmt_cell(r.delta or CellValue(), st))
        out.append(line)
    return out


def notes_text(table: Table) -> list[tuple[str, str]]:
    """Footnote sentences shared by every format, as ``(kind, text)``; each renderer adds its own markers."""
    lines = []
    mean = any(r.mean.partial and r.mean.mean is not None for r in table.rows)
    delta = table.baseline is not None and any(r.delta is not None and r.delta.partial for r in table.rows)
    # a Mean whose every domain has a value, but some from fewer seeds than the row has
    short = any(r.mean.partial and all(c.mean is not None for c in r.cells.values()) for r in table.rows)
    if mean or delta:
        what = "Mean and Δ" if mean and delta else "Mean" if mean else "Δ"
        why = "a domain cell is missing"
        if short:  # a Mean over every domain, but not of n runs
            why += " or averages fewer seeds than the row's others; the ± of such a Mean is over the seeds that have every domain"
        lines.append(("partial", f"{what} over the available {'values' if short else 'domains'} only ({why}); not ranked."))
    if table.show_n:
        ranged = " (a range where a row's cells average different numbers of runs)" if any("–" in n_text(r) for r in table.rows) else ""
        lines.append(("", f"Several seeds: mean ± sample std over the n runs with values{ranged}; marks compare the means."))
    if table.baseline is not None and table.show_n:
        lines.append(
            ("", f"Δ: paired difference to the baseline ({table.baseline_name}): per seed, the mean over domains "
             "of the difference; mean ± std over seeds; from the unrounded values.")
        )
    elif table.baseline is not None:  # one run a row: no seeds to speak of
        lines.append(("", f"Δ: difference to the baseline ({table.baseline_name}): the mean over domains of the difference, from the unrounded values."))
    if table.baseline is not None and all(c.mean is None for c in table.rows[table.baseline].cells.values()):
        lines.append(("", f"Δ: none, the baseline (row {table.baseline + 1}) has no value to compare with (see its footnote);"
                          " choose another with --baseline."))  # fmt: skip
    return lines


def render_markdown(table: Table) -> str:
    """The table as GitHub Markdown (``**best**``, ``<ins>second</ins>``), footnotes below it."""
    head = _header(table, _MARKDOWN)
    align = [":-:"] * len(table.label_columns) + ([":-:"] if table.show_n else []) + ["--:"] * (len(head) - len(table.label_columns) - (1 if table.show_n else 0))
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in _body(table, _MARKDOWN)]
    notes = [f"{PARTIAL_MARK} {t}" if kind == "partial" else t for kind, t in notes_text(table)]
    notes += [f"{str(i).translate(_SUPERSCRIPT)} {md_escape(t)}" for i, t in enumerate(table.footnotes, 1)]
    notes.append("mIoU (%); **bold**: best, <ins>underlined</ins>: second best of each column; Mean computed over the domain columns.")
    return "\n".join(lines) + "\n\n" + "\n".join(f"{n}  " for n in notes).rstrip() + "\n"


def render_latex(table: Table, width: str = "column", notes: Sequence[str] = ()) -> str:
    """The table as a booktabs ``tabular``, footnotes below it (``none``: in ``%`` comment lines).

    Args:
        table: the built table.
        width: ``column`` | ``page`` | ``none`` (see :data:`LATEX_WIDTHS`). ``column`` and ``page``
            set the font size and column padding, then scale the tabular down to ``\\linewidth``
            only when it is still wider (never up): ``\\resizebox`` needs ``graphicx``. ``none``
            is the tabular alone, for the user's own ``\\resizebox``: the footnotes printed below
            it would be shrunk with it, so they are comment lines after it, for the caption.
        notes: how the numbers were made (``ResultSet.provenance``), as ``% Note: …`` comment lines
            that travel with the fragment and do not print.

    Returns:
        A LaTeX fragment whose first comment lines name the table, the notes and the packages it needs.
    """
    if width not in LATEX_WIDTHS:
        raise ReportInputError(f"--latex-width {width}: expected one of {', '.join(LATEX_WIDTHS)}")
    style = _LATEX_COLUMN if width == "column" else _LATEX
    head = _header(table, _LATEX)
    spec = "c" * (len(table.label_columns) + (1 if table.show_n else 0)) + "r" * (len(head) - len(table.label_columns) - (1 if table.show_n else 0))
    packages = latex_packages(width)
    tabular = [
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        " & ".join(head) + r" \\",
        r"\midrule",
        *(" & ".join(row) + r" \\" for row in _body(table, style)),
        r"\bottomrule",
        r"\end{tabular}",
    ]
    lines = [
        f"% FAMix report: {table.title.replace(chr(10), ' ')} (mIoU %); width: {width}.",
        *(f"% Note: {' '.join(n.splitlines())}" for n in notes),
        "% Requires in the preamble: " + " ".join(rf"\usepackage{{{p}}}" for p in packages),
    ]
    below = [(r"$^\dagger$ " if kind == "partial" else "") + _tex_escape(t) for kind, t in notes_text(table)]
    below += [f"$^{{{i}}}$ {_tex_escape(t)}" for i, t in enumerate(table.footnotes, 1)]
    if width == "none":
        said = ["% The table's notes, not printed with --latex-width none (put them in the caption):"] if below else []
        return "\n".join([*lines, *tabular, *said, *(f"% {' '.join(n.splitlines())}" for n in below)]) + "\n"
    notes_tex = [r"\par\smallskip{\footnotesize\raggedright " + r" \\ ".join(below) + r"\par}"] if below else []
    size, sep = (r"\small", "3pt") if width == "column" else ("", "4pt")
    lines += [
        rf"\begingroup{size}\setlength{{\tabcolsep}}{{{sep}}}%",
        r"\setbox0=\hbox{%",
        *tabular,
        r"}%",
        r"\leavevmode\ifdim\wd0>\linewidth\resizebox{\linewidth}{!}{\box0}\else\box0\fi\par",
        *notes_tex,
        r"\endgroup",
    ]
    return "\n".join(lines) + "\n"


def summary_frame(table: Table) -> pd.DataFrame:
    """The table's numbers (unrounded): labels, n, ``<col>`` / ``<col>_std`` per domain and Mean, marks, Δ."""
    recs = []
    for i, r in enumerate(table.rows):
        rec: dict[str, object] = {c: r.labels[c] for c in table.label_columns}
        rec["n"] = r.n
        for col in table.columns:
            c = table.cell(i, col)
            rec[col] = c.mean
            rec[f"{col}_std"] = c.std
            rec[f"{col}_mark"] = c.mark or ""
        rec["Mean_partial"] = r.mean.partial
        if table.baseline is not None and r.delta is not None:
            rec[COL_DELTA] = r.delta.mean
            rec[f"{COL_DELTA}_std"] = r.delta.std
        recs.append(rec)
    return pd.DataFrame(recs)
