"""The paper table on a terminal: a rich table (bold best, underlined second, right-aligned numbers).

Markdown (:func:`reports.tables.render_markdown`) stays the format for files and pipes; this is
what a person reading a terminal sees. rich is imported inside the functions. A :class:`Table`
also round-trips through JSON (:func:`table_to_json` / :func:`table_from_json`), so a driver can
show the same table again later without reading MLflow.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from reports.tables import PARTIAL_MARK, CellValue, Table, TableRow, column_title, fmt2, n_text, notes_text, shown_label

__all__ = ["render_rich", "print_rich", "table_to_json", "table_from_json"]

_SUPERSCRIPT = str.maketrans("0123456789,", "⁰¹²³⁴⁵⁶⁷⁸⁹˒")


def _cell_text(c: CellValue, stacked: bool = False):
    from rich.text import Text

    if c.mean is None:
        text = Text("–", style="dim")
    else:
        sep = "\n" if stacked else " "
        value = fmt2(c.mean, signed=c.signed) + (f"{sep}± {fmt2(c.std)}" if c.std is not None else "")
        text = Text(value, style={"best": "bold", "second": "underline"}.get(c.mark or "", ""))
    if c.partial:
        text.append(PARTIAL_MARK)
    if c.notes:
        text.append(",".join(str(n) for n in c.notes).translate(_SUPERSCRIPT))
    return text


def render_rich(table: Table, tight: bool = False, stacked: bool = False):
    """A ``rich.table.Table`` of ``table``: labels centred, numbers right-aligned, best bold, second underlined.

    The notes (seeds, Δ, footnotes, what the marks mean) are the table's caption. ``tight``: one
    space between columns (not two, nor a margin); ``stacked``: each ``± std`` on a line under its
    mean. Printed alone on a narrower console, rich shortens its columns (``Fr…``); :func:`print_rich`
    picks a layout that fits and never cuts.
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
    if tight:  # the box's blank rule between columns is the one space left
        rt.padding, rt.pad_edge = (0, 0), False
    for c in table.label_columns:
        rt.add_column(column_title(c), justify="center", no_wrap=True)
    if table.show_n:
        rt.add_column("n", justify="right")
    for c in table.columns:
        rt.add_column(c, justify="right", no_wrap=True)
    if table.baseline is not None:
        rt.add_column("Δ", justify="right", no_wrap=True)
    for i, r in enumerate(table.rows):
        cells: list[Any] = [shown_label(r.labels[c]) for c in table.label_columns]
        if table.show_n:
            cells.append(n_text(r))
        cells += [_cell_text(r.cells[d], stacked) for d in table.domains]
        cells.append(_cell_text(r.mean, stacked))
        if table.baseline is not None:
            cells.append(Text("(baseline)", style="dim") if i == table.baseline else _cell_text(r.delta or CellValue(), stacked))
        rt.add_row(*cells)
    return rt


def _width(rt: Any) -> int:
    """The columns ``rt`` takes when nothing in it wraps or shortens (its caption aside: that wraps at any width)."""
    from rich.console import Console
    from rich.measure import Measurement

    caption, rt.caption = rt.caption, None
    try:
        wide = Console(width=10_000)
        return Measurement.get(wide, wide.options, rt).maximum
    finally:
        rt.caption = caption


def print_rich(console: Any, table: Table) -> None:
    """Print ``table`` on ``console`` in the first layout that fits its width: the roomy one, then
    :func:`render_rich`'s ``tight``, then ``tight`` and ``stacked`` (several seeds). Where even that
    is wider than the terminal, it is printed whole at its own width (the terminal folds its lines):
    a label cut to ``Fr…`` or a number to ``13.84 ± 0.…`` would mislead."""
    layouts = [(False, False), (True, False)]
    if any(c.std is not None for r in table.rows for c in (*r.cells.values(), r.mean, r.delta or CellValue())):
        layouts.append((True, True))
    for tight, stacked in layouts:
        rt = render_rich(table, tight=tight, stacked=stacked)
        width = _width(rt)
        if width <= console.width:
            break
    if width <= console.width:
        console.print(rt)
        return
    from rich.segment import Segments

    console.print(Segments(console.render(rt, console.options.update_width(width))), crop=False)


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
