"""The paper table on a terminal: a rich table (bold best, underlined second, right-aligned numbers).

Markdown (:func:`reports.tables.render_markdown`) stays the format for files and pipes; this is
what a person reading a terminal sees. rich is imported inside the functions. A :class:`Table`
also round-trips through JSON (:func:`table_to_json` / :func:`table_from_json`), so a driver can
show the same table again later without reading MLflow.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from reports.tables import PARTIAL_MARK, CellValue, Table, TableRow, notes_text, fmt2, shown_label

__all__ = ["render_rich", "table_to_json", "table_from_json"]

_SUPERSCRIPT = str.maketrans("0123456789,", "⁰¹²³⁴⁵⁶⁷⁸⁹˒")


def _cell_text(c: CellValue):
    from rich.text import Text

    if c.mean is None:
        text = Text("–", style="dim")
    else:
        value = fmt2(c.mean, signed=c.signed) + (f" ± {fmt2(c.std)}" if c.std is not None else "")
        text = Text(value, style={"best": "bold", "second": "underline"}.get(c.mark or "", ""))
    if c.partial:
        text.append(PARTIAL_MARK)
    if c.notes:
        text.append(",".join(str(n) for n in c.notes).translate(_SUPERSCRIPT))
    return text


def render_rich(table: Table):
    """A ``rich.table.Table`` of ``table``: labels centred, numbers right-aligned, best bold, second underlined.

    The notes (seeds, Δ, footnotes, what the marks mean) are the table's caption.
    """
    from rich import box
    from rich.table import Table as RichTable
    from rich.text import Text

    notes = [f"{PARTIAL_MARK} {t}" if kind == "partial" else t for kind, t in notes_text(table)]
    notes += [f"{str(i).translate(_SUPERSCRIPT)} {t}" for i, t in enumerate(table.footnotes, 1)]
    legend = Text("mIoU (%); ")
    legend.append("bold", style="bold")
    legend.append(": best, ")
    legend.append("underlined", style="underline")
    legend.append(": second best of each column; Mean computed over the domain columns.")
    caption = Text("\n").join([*(Text(n) for n in notes), legend])
    rt = RichTable(title=table.title, caption=caption, caption_justify="left", box=box.SIMPLE_HEAD, header_style="bold")
    for c in table.label_columns:
        rt.add_column(c[:1].upper() + c[1:], justify="center")
    if table.show_n:
        rt.add_column("n", justify="right")
    for c in table.columns:
        rt.add_column(c, justify="right", no_wrap=True)
    if table.baseline is not None:
        rt.add_column("Δ", justify="right", no_wrap=True)
    for i, r in enumerate(table.rows):
        cells: list[Any] = [shown_label(r.labels[c]) for c in table.label_columns]
        if table.show_n:
            cells.append(str(r.n))
        cells += [_cell_text(r.cells[d]) for d in table.domains]
        cells.append(_cell_text(r.mean))
        if table.baseline is not None:
            cells.append(Text("(baseline)", style="dim") if i == table.baseline else _cell_text(r.delta or CellValue()))
        rt.add_row(*cells)
    return rt


def table_to_json(table: Table) -> dict[str, Any]:
    """A JSON-able dict of a :class:`Table` (exact numbers, marks and notes)."""
    return dataclasses.asdict(table)


def table_from_json(data: dict[str, Any]) -> Table:
    """The :class:`Table` that :func:`table_to_json` wrote."""
    rows = []
    for r in data["rows"]:
        rows.append(
            TableRow(
                labels=dict(r["labels"]),
                trials=list(r["trials"]),
                n=int(r["n"]),
                cells={k: CellValue(**v) for k, v in r["cells"].items()},
                mean=CellValue(**r["mean"]),
                delta=CellValue(**r["delta"]) if r.get("delta") else None,
            )
        )
    return Table(**{**data, "rows": rows})
