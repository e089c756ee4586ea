"""Report figures: paper widths, vector PDFs, titles and legends, the Δ-heatmap's numbers and colours.

Text and page sizes are read back from the PDFs with poppler (``pdftotext``, ``pdfinfo``; Debian
``poppler-utils``, installed by .ci/run); pixel colours from the PNGs.
"""

from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from reports.collect import ReportInputError, ResultSet, collect_csv
from reports.plots import FIGURE_WIDTHS, ROW_COLOURS, plot_bars, plot_delta_heatmap, plot_loss_curves, row_style
from reports.report import write_report
from reports.tables import build_table, delta_grid

PAPER_CSV = Path(__file__).parent / "data" / "ablation_freeze_augment_mix.csv"
DOMAINS = ["C", "B", "M", "S", "AN", "AS", "AR", "AF"]


def _poppler() -> None:
    if shutil.which("pdftotext") is None or shutil.which("pdfinfo") is None:
        pytest.skip("poppler-utils not installed (apt-get install poppler-utils): PDF text and size not checked")


def _pdf_text(path: Path) -> str:
    return subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True, check=True).stdout


def _pdf_width_in(path: Path) -> float:
    info = subprocess.run(["pdfinfo", str(path)], capture_output=True, text=True, check=True).stdout
    size = next(ln for ln in info.splitlines() if ln.startswith("Page size:"))
    return float(size.split()[2]) / 72.0


def _drawn(monkeypatch) -> list:
    """Collects the figures the plots save, to read back what they drew (positions, colours, sizes)."""
    import reports.plots

    figures = []
    save = reports.plots.save_figure

    def keep(fig, out_dir, stem):
        figures.append(fig)
        return save(fig, out_dir, stem)

    monkeypatch.setattr(reports.plots, "save_figure", keep)
    return figures


def _seeded(n_seeds: int = 3) -> ResultSet:
    rows = pd.read_csv(PAPER_CSV)
    recs = []
    for i, r in rows.iterrows():
        for s in range(n_seeds):
            rec = {"trial": f"t-{i}-{s}", "seed": s, "trial_index": len(recs), "status": "done", "run_id": None, "train_key": None}
            rec.update({"freeze": r["freeze"], "augment": r["augment"], "mix": r["mix"]})
            rec.update({d: float(r[d]) + (s - 1) * 0.5 * (1 + i % 3) for d in DOMAINS})
            recs.append(rec)
    return ResultSet(sweep="ablation", source="test", label_columns=["freeze", "augment", "mix"], domains=DOMAINS,
                     runs=pd.DataFrame(recs))  # fmt: skip


def test_palette_keeps_rows_apart_and_has_no_faint_colour():
    rgb = np.array([[int(c[i : i + 2], 16) / 255 for i in (1, 3, 5)] for c in ROW_COLOURS])  # (9, 3)
    lum = rgb @ np.array([0.2126, 0.7152, 0.0722])
    assert len(set(ROW_COLOURS)) >= 8 and lum.max() < 0.8  # viridis' last yellow (#fde725) is 0.87
    styles = [tuple(row_style(i).values()) for i in range(24)]
    assert len(set(styles)) == 24  # colour x hatch x line style: 24 rows, 24 looks
    assert all(row_style(i)["color"] != row_style(i + 1)["color"] for i in range(23))


def test_bar_chart_title_legend_error_bars_and_widths(tmp_path, monkeypatch):
    _poppler()
    table = build_table(_seeded())
    drawn = _drawn(monkeypatch)
    # a CVPR column is 237.14 pt (3.281 in) and its text 6.875 in: 3.3 and 6.9 in figures overflowed them
    fits = {"column": 237.14, "page": 6.875 * 72}
    for width in ("page", "column"):
        png, pdf = plot_bars(table, tmp_path / width, subject="ablation, smoke profile", width=width)
        assert png.suffix == ".png" and pdf.suffix == ".pdf"
        assert _pdf_width_in(pdf) == pytest.approx(FIGURE_WIDTHS[width], abs=0.01) and _pdf_width_in(pdf) * 72 <= fits[width]
        ax = drawn[-1].axes[0]  # ticks and legend were 6.5 pt at column width, where the docs promise 7 pt or more
        assert min(t.get_fontsize() for t in [*ax.get_xticklabels(), *ax.get_yticklabels(), *drawn[-1].legends[0].get_texts()]) >= 7
        text = _pdf_text(pdf)
        assert "mIoU (%) per target domain — ablation, smoke profile" in " ".join(text.split())
        assert "± std over 3 seeds" in text and "Freeze ✓ · Augment ✓ · Mix ✓" in text
        raw = pdf.read_bytes()
        assert b"/FontFile2" in raw and b"/Subtype /Image" not in raw  # vector: TrueType text, no raster
    single = build_table(collect_csv(PAPER_CSV))
    _, pdf = plot_bars(single, tmp_path / "single", subject="x")
    assert "± std" not in _pdf_text(pdf)  # no error bars, no legend entry for them
    # a missing cell and the partial Mean it makes were a gap and an ordinary (the tallest) bar
    runs = collect_csv(PAPER_CSV).runs.copy()
    runs.loc[0, "C"] = np.nan
    partial = build_table(ResultSet(sweep="p", source="t", label_columns=["freeze", "augment", "mix"], domains=DOMAINS, runs=runs))
    assert partial.rows[0].mean.partial
    _, pdf = plot_bars(partial, tmp_path / "partial", subject="x")
    text = _pdf_text(pdf)
    assert text.count("†") == 1 and text.count("–") >= 1


def test_the_partial_mark_sits_above_its_error_bar_cap(monkeypatch, tmp_path):
    """At column width the † of a partial Mean sat on its error bar's cap (its bottom at the cap's
    centre): it read as part of the bar."""
    rs = _seeded()
    rs.runs.loc[0, "C"] = np.nan  # row 1, seed 0 lacks C: its Mean is partial, with a std over the other seeds
    table = build_table(rs)
    mean = table.rows[0].mean
    assert mean.partial and mean.std
    drawn = _drawn(monkeypatch)
    plot_bars(table, tmp_path, width="column")
    fig = drawn[-1]
    ax = fig.axes[0]
    dagger = next(t for t in ax.texts if t.get_text() == "†")
    cap_y = ax.transData.transform((0, mean.mean + mean.std))[1]  # display pixels
    gap_pt = (dagger.get_window_extent(fig.canvas.get_renderer()).y0 - cap_y) * 72 / fig.dpi
    assert gap_pt >= 1.5  # clear of the cap (0.6 pt thick)


def test_a_title_too_wide_for_a_column_goes_on_two_lines_and_each_fits():
    """At column width, "mIoU (%) per target domain — ablation-3seeds, smoke profile" was cut off at
    "smoke pro": the title was one line, whatever its length."""
    from reports.plots import figure, fit_title, title_size

    long = "mIoU (%) per target domain — ablation-3seeds, smoke profile"
    with figure("column", 2.0) as fig:
        title = fit_title(fig, long, "column")
        assert title == "mIoU (%) per target domain\nablation-3seeds, smoke profile"
        t = fig.suptitle(title)
        fig.canvas.draw()
        box = t.get_window_extent()
        assert 0 <= box.x0 and box.x1 <= fig.bbox.x1  # inside the figure, as drawn
        assert fit_title(fig, "mIoU (%) per target domain — ablation, smoke profile", "column").count("\n") == 0  # fits: kept
        assert fit_title(fig, "x — " + "word " * 30, "column").count("\n") >= 3  # a subject wider still wraps at spaces
        name = "a_sweep_name_of_seventy_five_characters_with_no_space_in_it_to_break_at_0123"  # cut where it must be
        lines = fit_title(fig, f"mIoU (%) per target domain — {name}, smoke profile", "column").split("\n")
        assert "".join(lines[1:]).replace(" ", "").startswith(name) and len(lines) >= 3
        for line in lines:
            t = fig.text(0, 0, line, fontsize=title_size("column"))
            assert t.get_window_extent(fig.canvas.get_renderer()).width / fig.dpi <= FIGURE_WIDTHS["column"] - 0.15
            t.remove()
    with figure("page", 2.0) as fig:
        assert fit_title(fig, long, "page") == long


def test_delta_heatmap_numbers_colours_and_std(tmp_path):
    _poppler()
    rs = _seeded()
    grid = delta_grid(rs, baseline=0)
    labels = [r.labels for r in build_table(rs).rows]
    png, pdf = plot_delta_heatmap(grid, labels, tmp_path, subject="ablation, smoke profile", width="page")
    text = _pdf_text(pdf)
    words = " ".join(text.split())
    # the last row's Mean cell: the table's Δ, signed, with its std over the three paired seeds
    last = build_table(rs, baseline="1").rows[-1].delta
    assert f"+{last.mean:.2f}" in words and f"±{last.std:.2f}" in words
    assert "baseline" in words and "± std over 3 seeds (paired by seed)" in words and "Δ mIoU (points)" in words
    assert "Freeze ✗ · Augment ✗ · Mix ✗ (baseline)" in words
    assert _pdf_width_in(pdf) == pytest.approx(6.875, abs=0.01)
    assert b"/Subtype /Image" not in pdf.read_bytes()  # vector cells and colour bar (imshow embedded a bitmap)
    # at column width a ± line under each number was 4.5 pt type: the means alone, the std left to the table
    _, pdf = plot_delta_heatmap(grid, labels, tmp_path / "col", subject="ablation", width="column")
    words = " ".join(_pdf_text(pdf).split())
    assert f"+{last.mean:.1f}" in words and "±" not in words.replace("± std in the table", "")
    assert "means over 3 seeds (paired by seed; ± std in the table)" in words

    # colours: diverging, centred at 0: a +10 cell is blue, a -10 cell red, a 0 cell near white
    signs = ResultSet(sweep="s", source="t", label_columns=["m"], domains=["C", "B"], runs=pd.DataFrame([
        {"trial": "a", "seed": 0, "m": "base", "C": 20.0, "B": 20.0, "trial_index": 0, "status": "done"},
        {"trial": "b", "seed": 0, "m": "up", "C": 30.0, "B": 20.0, "trial_index": 1, "status": "done"},
        {"trial": "c", "seed": 0, "m": "down", "C": 10.0, "B": 20.0, "trial_index": 2, "status": "done"},
    ]))  # fmt: skip
    g = delta_grid(signs)
    png, pdf = plot_delta_heatmap(g, [{"m": "base"}, {"m": "$up$"}, {"m": "down"}], tmp_path / "signs", width="page")
    assert "M $up$" in " ".join(_pdf_text(pdf).split())  # as the table shows it: matplotlib read it as maths (an italic up)
    png, pdf = plot_delta_heatmap(g, [{"m": "base"}, {"m": "up"}, {"m": "down"}], tmp_path / "signs", width="column")
    from PIL import Image

    img = np.asarray(Image.open(png).convert("RGB")).astype(int)  # (H, W, 3)
    blue = (img[..., 2] - img[..., 0] > 90).sum()
    red = (img[..., 0] - img[..., 2] > 90).sum()
    assert blue > 2000 and red > 2000  # the +10 and -10 cells (and the colour bar's ends)
    words = " ".join(_pdf_text(pdf).split())
    assert "+10.0" in words and "−10.0" in words and "-10.0" not in words and "+0.0" in words  # one decimal at column width; a minus, not a hyphen
    assert _pdf_width_in(pdf) == pytest.approx(3.25, abs=0.01)


def test_delta_colour_bar_has_no_seams_in_the_pdf(monkeypatch, tmp_path):
    """PDF viewers drew a hairline, lighter than both neighbours, between the colour bar's cells
    (its cells had no edges): the PDF rendered by poppler, read down the bar's middle."""
    _poppler()
    if shutil.which("pdftoppm") is None:
        pytest.skip("pdftoppm (poppler-utils) not installed: the PDF is not rendered")
    from PIL import Image

    rs = _seeded()
    drawn = _drawn(monkeypatch)
    _, pdf = plot_delta_heatmap(delta_grid(rs), [r.labels for r in build_table(rs).rows], tmp_path, width="page")
    box = drawn[-1].axes[1].get_position()  # the colour bar, in figure fractions
    subprocess.run(["pdftoppm", "-r", "300", "-png", "-singlefile", str(pdf), str(tmp_path / "r")], check=True)
    img = np.asarray(Image.open(tmp_path / "r.png").convert("RGB")).astype(float)  # (H, W, 3)
    h, w = img.shape[:2]
    x = int((box.x0 + box.x1) / 2 * w)
    column = img[int((1 - box.y1) * h) + 3 : int((1 - box.y0) * h) - 3, x].sum(axis=1)  # (N,) brightness down the bar
    assert len(column) > 300
    seams = (column[1:-1] - column[:-2] > 6) & (column[1:-1] - column[2:] > 6)
    assert not seams.any(), np.flatnonzero(seams)[:10]


def test_delta_cell_numbers_contrast_with_their_cell(monkeypatch, tmp_path):
    """Numbers turned white past 0.55 of the colour limit, 3:1 on RdBu's mid blues and reds where black
    has 6:1. Each must reach WCAG's 4.5:1 on its cell (black or white always can on RdBu)."""
    from matplotlib import colormaps
    from matplotlib.colors import TwoSlopeNorm, to_rgb

    from reports.tables import DeltaGrid

    def luminance(rgb):
        c = np.asarray(rgb, dtype=float)[:3]
        return float(np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4) @ [0.2126, 0.7152, 0.0722])

    def contrast(a, b):
        hi, lo = sorted((luminance(a), luminance(b)), reverse=True)
        return (hi + 0.05) / (lo + 0.05)

    values = np.linspace(-10.0, 10.0, 27).reshape(3, 9)  # every shade of the map, limit 10
    mean = np.vstack([np.zeros((1, 9)), values])  # (4, 9) row 0 the baseline
    grid = DeltaGrid(columns=[*DOMAINS, "Mean"], baseline=0, mean=mean, std=np.full_like(mean, np.nan), n=np.ones(4, int))
    drawn = _drawn(monkeypatch)
    plot_delta_heatmap(grid, [{"m": str(i)} for i in range(4)], tmp_path, width="page")
    cells = colormaps["RdBu"](TwoSlopeNorm(vcenter=0.0, vmin=-10.0, vmax=10.0)(values.ravel()))
    numbers = [t for t in drawn[-1].axes[0].texts if t.get_text() not in ("baseline", "–")]
    assert len(numbers) == values.size
    for t, cell, v in zip(numbers, cells, values.ravel()):
        assert contrast(to_rgb(t.get_color()), cell) >= 4.5, (v, t.get_color())


def test_loss_curves_title_axes_and_one_legend_entry_per_row(tmp_path):
    _poppler()
    steps = np.arange(10, 110, 10)
    hist = {f"t{r}{s}": pd.DataFrame({"step": steps, "value": 3.0 / (1 + steps / (50 + 10 * r)) + 0.01 * s}) for r in range(3) for s in range(2)}
    captions = {t: f"Mix {'✓' if int(t[1]) % 2 else '✗'} · row {t[1]}" for t in hist}
    groups = {t: int(t[1]) for t in hist}
    _, pdf = plot_loss_curves(hist, captions, tmp_path, groups=groups, subject="ablation, smoke profile")
    words = " ".join(_pdf_text(pdf).split())
    assert "Training loss — ablation, smoke profile" in words
    assert "iteration" in words and "training loss (cross-entropy)" in words
    assert words.count("(2 seeds)") == 3  # one entry per row, naming its seeds
    assert _pdf_width_in(pdf) == pytest.approx(3.25, abs=0.01)


def test_report_writes_every_figure_as_png_and_pdf_with_the_heatmap(tmp_path):
    files = write_report(collect_csv(PAPER_CSV), tmp_path / "r", profile="smoke", latex_width="page")
    names = sorted(p.name for p in files.figures)
    assert names == ["bars.pdf", "bars.png", "delta.pdf", "delta.png"]
    assert "delta.png" in files.readme.read_text() and r"\resizebox" in files.table_tex.read_text()
    one_row = collect_csv(PAPER_CSV)
    one_row.runs = one_row.runs.iloc[:1]
    files = write_report(one_row, tmp_path / "one")
    assert not any(p.stem == "delta" for p in files.figures)  # nothing to compare with
    assert math.isfinite(float(pd.read_csv(files.summary_csv)["Mean"][0]))


# ----------------------------------------------------------------------------------------- the folder as a whole


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_a_report_interrupted_while_written_leaves_the_previous_one_byte_for_byte(tmp_path, monkeypatch):
    """A Ctrl-C or a crash while `famix report` (or a sweep's final report) wrote `report/` left it a
    mix: new tables beside old or missing figures. Now the report is built in a hidden sibling folder
    and swapped in whole: the previous report stays byte for byte, and the next report removes what a
    killed writer left, putting back a report it had set aside in the middle of its swap."""
    import reports.plots

    sweep_dir = tmp_path / "runs" / "ablation"
    out = sweep_dir / "report"
    write_report(_seeded(), out, profile="smoke")
    before = _snapshot(out)
    assert {"table.md", "table.tex", "bars.pdf", "delta.png", "README.md"} <= set(before)

    real_heatmap = reports.plots.plot_delta_heatmap

    def ctrl_c(*args, **kwargs):  # the tables and the bar chart of the new report are written by now
        raise KeyboardInterrupt

    monkeypatch.setattr(reports.plots, "plot_delta_heatmap", ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        write_report(collect_csv(PAPER_CSV), out, profile="other")
    assert _snapshot(out) == before
    assert sorted(p.name for p in sweep_dir.iterdir()) == ["report"]  # the interrupted one's folder is gone

    # a writer SIGKILLed between commit_dir's two renames: its half report, and the old one set aside
    dead = sweep_dir / ".report.tmp-0123456789ab"
    dead.mkdir()
    (dead / "table.md").write_text("half")
    (sweep_dir / ".report.tmp-0123456789ab.old-ba9876543210").mkdir()
    out.rename(sweep_dir / ".report.tmp-0123456789ab.old-ba9876543210" / "report")
    with pytest.raises(KeyboardInterrupt):
        write_report(collect_csv(PAPER_CSV), out, profile="other")
    assert _snapshot(out) == before  # put back before the interrupted report began
    assert sorted(p.name for p in sweep_dir.iterdir()) == ["report"]

    monkeypatch.setattr(reports.plots, "plot_delta_heatmap", real_heatmap)
    (sweep_dir / ".report.tmp-fedcba987654").mkdir()  # killed before its swap
    files = write_report(collect_csv(PAPER_CSV), out, profile="other")
    assert files.out_dir == out and files.table_md == out / "table.md" and files.readme.is_file()
    assert all(f.parent == out and f.is_file() for f in files.figures)
    after = _snapshot(out)
    assert after != before and after["table.md"] == files.table_md.read_bytes()
    assert sorted(p.name for p in sweep_dir.iterdir()) == ["report"]  # no temp folder left


def test_report_folder_swaps_only_a_report_and_spares_a_live_writer(tmp_path):
    """The swap deletes the old folder, so it is kept for report folders: a folder holding other files
    (a paper's) is refused before anything is written, its files untouched (writing beside them
    overwrote a README.md or results.csv of the user's). A temp folder whose writer still runs (its
    flock held) is not taken for debris. Every file a report writes is in REPORT_FILES, else the next
    report of that folder would no longer be swapped."""
    import fcntl
    import os

    from reports.report import REPORT_FILES, report_folder

    out = tmp_path / "r"
    files = write_report(_seeded(), out, profile="smoke", extra_figures=_qualitative_stand_in)
    assert files.figures[-1] == out / "qualitative.png" and files.figures[-1].is_file()
    assert {p.name for p in out.iterdir()} <= REPORT_FILES

    paper = tmp_path / "paper"
    paper.mkdir()
    (paper / "main.tex").write_text("\\input{table.tex}")
    with pytest.raises(ReportInputError, match=r"paper: the folder holds files that are not a famix report's \(main.tex\)"):
        write_report(_seeded(), paper)
    assert [p.name for p in paper.iterdir()] == ["main.tex"] and (paper / "main.tex").read_text() == "\\input{table.tex}"

    live = tmp_path / ".r.tmp-00000000live"
    live.mkdir()
    fd = os.open(live, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with report_folder(out) as folder:
            assert folder.parent == tmp_path and folder.name.startswith(".r.tmp-")
        assert live.is_dir()
    finally:
        os.close(fd)


def _qualitative_stand_in(folder: Path) -> list[Path]:
    (folder / "qualitative.png").write_bytes(b"\x89PNG")
    return [folder / "qualitative.png"]
