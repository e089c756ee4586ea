"""reports.tables: the paper table from its CSV (numbers, Means, marks), seeds, missing cells, Δ, LaTeX."""

from __future__ import annotations

import csv
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from reports.collect import ReportInputError, ResultSet, collect_csv
from reports.tables import build_table, delta_grid, fmt2, notes_text, render_latex, render_markdown, shown_label, summary_frame

PAPER_CSV = Path(__file__).parent / "data" / "ablation_freeze_augment_mix.csv"
DOMAINS = ["C", "B", "M", "S", "AN", "AS", "AR", "AF"]


def _paper_rows() -> list[dict[str, str]]:
    with PAPER_CSV.open() as f:
        return list(csv.DictReader(f))


def _md_rows(md: str) -> list[list[str]]:
    """Body cells of the first Markdown table."""
    lines = [ln for ln in md.splitlines() if ln.startswith("|")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:]]


def _md_number(cell: str) -> float:
    return float(re.sub(r"[^0-9.+-]", "", cell.replace("<ins>", "").replace("</ins>", "").split("±")[0]))


def _expected_marks(values: list[float]) -> list[str | None]:
    """Independent reference: bold = max, underline = the next lower distinct value."""
    distinct = sorted(set(values), reverse=True)
    return ["best" if v == distinct[0] else "second" if v == distinct[1] else None for v in values]


def _runs(records: list[dict], labels: list[str], domains: list[str]) -> ResultSet:
    frame = pd.DataFrame(records)
    for c, default in (("trial_index", None), ("status", "done"), ("run_id", None), ("train_key", None)):
        if c not in frame:
            frame[c] = list(range(len(frame))) if c == "trial_index" else default
    frame["status"] = frame["status"].fillna("done")
    return ResultSet(sweep="t", source="test", label_columns=labels, domains=domains, runs=frame)


def test_paper_csv_markdown_rows_numbers_means_and_marks():
    paper = _paper_rows()
    table = build_table(collect_csv(PAPER_CSV))
    md = render_markdown(table)
    rows = _md_rows(md)
    assert len(rows) == 8
    header = [c.strip() for c in md.splitlines()[0].strip("|").split("|")]
    assert header == ["Freeze", "Augment", "Mix", *DOMAINS, "Mean"]
    for got, ref in zip(rows, paper):
        assert got[:3] == [{"yes": "✓", "no": "✗"}[ref[k]] for k in ("freeze", "augment", "mix")]
        for j, d in enumerate(DOMAINS):
            assert _md_number(got[3 + j]) == pytest.approx(float(ref[d]), abs=1e-9)
        assert _md_number(got[11]) == pytest.approx(float(ref["Mean"]), abs=0.01)
    # marks, per column, computed independently from the CSV numbers
    for j, col in enumerate([*DOMAINS, "Mean"]):
        values = [float(r[col]) if col != "Mean" else float(fmt2(sum(float(r[d]) for d in DOMAINS) / 8)) for r in paper]
        for i, mark in enumerate(_expected_marks(values)):
            cell = rows[i][3 + j]
            assert cell.startswith("**") == (mark == "best"), (col, i, cell)
            assert cell.startswith("<ins>") == (mark == "second"), (col, i, cell)
    # specific known cells
    assert rows[7][3] == "**48.15**" and rows[6][3] == "<ins>43.43</ins>"
    assert rows[7][11] == "**38.88**" and rows[6][11] == "<ins>36.29</ins>"
    assert rows[5][7] == "<ins>14.72</ins>" and rows[4][7] == "12.41"  # AN: second best is row 6, not row 7's neighbour


def test_paper_csv_latex_cells():
    table = build_table(collect_csv(PAPER_CSV))
    tex = render_latex(table)
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex
    body = [ln for ln in tex.splitlines() if ln.endswith(r"\\") and "$" in ln.split("&")[0]]
    assert len(body) == 8
    last = [c.strip() for c in body[7].removesuffix(r"\\").split("&")]
    assert last[:3] == [r"$\checkmark$"] * 3
    assert last[3] == r"\textbf{48.15}" and last[11] == r"\textbf{38.88}"
    second_last = [c.strip() for c in body[6].removesuffix(r"\\").split("&")]
    assert second_last[3] == r"\underline{43.43}" and second_last[:3] == [r"$\checkmark$", r"$\times$", r"$\checkmark$"]
    first = [c.strip() for c in body[0].removesuffix(r"\\").split("&")]
    assert first[3:] == ["16.81", "16.31", "17.80", "27.10", "2.95", "8.58", "14.35", "13.61", "14.69"]
    assert tex.count(r"\textbf{") == 9 and tex.count(r"\underline{") == 9
    assert tex.splitlines()[1].startswith("% Requires") and r"\usepackage{amssymb}" in tex.splitlines()[1]


def test_fmt2_rounds_half_up_and_shown_label():
    assert fmt2(32.925) == "32.93"  # 263.40 / 8: the paper's Mean of row 6
    assert fmt2(14.68875) == "14.69"
    assert fmt2(-0.004, signed=True) == "+0.00"
    assert fmt2(1.5, signed=True) == "+1.50"
    assert [shown_label(v) for v in ("yes", "No", "true", "✓", "RN50")] == ["✓", "✗", "✓", "✓", "RN50"]


def test_ties_share_marks_on_rounded_values():
    recs = [
        {"trial": "a", "seed": 0, "m": "x", "C": 50.004, "B": 10.0},
        {"trial": "b", "seed": 0, "m": "y", "C": 49.996, "B": 30.0},  # rounds to 50.00 too: tie for best
        {"trial": "c", "seed": 0, "m": "z", "C": 40.0, "B": 20.0},
    ]
    t = build_table(_runs(recs, ["m"], ["C", "B"]))
    assert [t.cell(i, "C").mark for i in range(3)] == ["best", "best", "second"]
    assert [t.cell(i, "B").mark for i in range(3)] == [None, "best", "second"]


def test_seeds_mean_std_n_and_marks_by_mean():
    recs = []
    for s, (a, b) in enumerate([(40.0, 30.0), (42.0, 34.0), (44.0, 32.0)]):
        recs.append({"trial": f"a{s}", "seed": s, "m": "A", "C": a, "B": b})
    for s, (a, b) in enumerate([(45.0, 20.0), (45.5, 22.0), (46.0, 24.0)]):
        recs.append({"trial": f"b{s}", "seed": s, "m": "B", "C": a, "B": b})
    t = build_table(_runs(recs, ["m"], ["C", "B"]))
    assert t.show_n and [r.n for r in t.rows] == [3, 3]
    c = t.cell(0, "C")
    assert c.mean == pytest.approx(42.0) and c.std == pytest.approx(2.0) and c.n == 3
    mean = t.cell(0, "Mean")  # per-seed means 35, 38, 38 -> std over seeds
    assert mean.mean == pytest.approx(37.0) and mean.std == pytest.approx(pd.Series([35.0, 38.0, 38.0]).std())
    md = render_markdown(t)
    rows = _md_rows(md)
    assert rows[0][1] == "3" and rows[0][2] == "<ins>42.00 ± 2.00</ins>" and rows[1][2] == "**45.50 ± 0.50**"
    assert rows[0][3] == "**32.00 ± 2.00**" and rows[1][3] == "<ins>22.00 ± 2.00</ins>"
    # LaTeX marks the mean alone: an \underline under "mean ± std" sat almost on the next row's digits
    assert r"\underline{42.00} $\pm$ 2.00" in render_latex(t, width="page") and r"\textbf{45.50} $\pm$ 0.50" in render_latex(t, width="page")
    assert r"\underline{42.00}\,{\scriptsize$\pm$2.00}" in render_latex(t, width="column")  # the std in script size


def test_missing_cell_footnote_and_partial_mean():
    recs = [
        {"trial": "t-ok", "seed": 0, "m": "A", "C": 40.0, "B": 30.0, "M": 20.0},
        {"trial": "t-bad", "seed": 0, "m": "B", "C": 50.0, "B": math.nan, "M": 10.0, "status": "failed"},
        {"trial": "t-low", "seed": 0, "m": "C", "C": 10.0, "B": 5.0, "M": 5.0},
    ]
    t = build_table(_runs(recs, ["m"], ["C", "B", "M"]))
    bad = t.rows[1]
    assert bad.cells["B"].mean is None and bad.mean.partial and bad.mean.mean == pytest.approx(30.0)
    assert t.cell(1, "Mean").mark is None  # partial means are not ranked
    assert t.cell(0, "Mean").mark == "best" and t.cell(2, "Mean").mark == "second"
    md = render_markdown(t)
    rows = _md_rows(md)
    assert rows[1][2] == "–¹" and rows[1][4] == "30.00†"
    assert "¹ row 2 (M B), seed 0: failed (no mIoU for B); trial t-bad" in md  # the table's own row number
    tex = render_latex(t)
    assert "--$^{1}$" in tex and r"30.00$^\dagger$" in tex and "row 2 (M B), seed 0: failed" in tex


def test_footnote_of_a_csv_without_trial_ids_names_the_table_row_not_the_csv_line(tmp_path):
    csv = tmp_path / "res.csv"
    lines = ["Freeze,Mix,seed,status,C,B"]
    for i in range(6):  # six rows, then row 6 again under seed 1 with B missing (CSV line 8)
        lines.append(f"{'yes' if i % 2 else 'no'},m{i},0,done,{10 + i},{20 + i}")
    lines.append("yes,m5,1,failed,16,")
    csv.write_text("\n".join(lines) + "\n")
    t = build_table(collect_csv(csv, domains=["C", "B"]))
    assert t.footnotes == ["row 6 (Freeze ✓, Mix m5), seed 1: failed (no mIoU for B)"]
    assert _md_rows(render_markdown(t))[5][4] == "**25.00**¹"  # the mark sits in table row 6, column B


def test_paired_difference_column():
    recs = []
    for s in range(2):
        recs.append({"trial": f"base{s}", "seed": s, "m": "base", "C": 10.0 + s, "B": 20.0})
        recs.append({"trial": f"new{s}", "seed": s, "m": "new", "C": 14.0 + 3 * s, "B": 22.0})
    t = build_table(_runs(recs, ["m"], ["C", "B"]), baseline="m=base")
    assert t.baseline == 0
    d = t.rows[1].delta  # seed 0: mean(4, 2) = 3; seed 1: mean(6, 2) = 4
    assert d.mean == pytest.approx(3.5) and d.std == pytest.approx(pd.Series([3.0, 4.0]).std()) and d.n == 2
    rows = _md_rows(render_markdown(t))
    assert rows[0][-1] == "(baseline)" and rows[1][-1] == "+3.50 ± 0.71"
    assert build_table(_runs(recs, ["m"], ["C", "B"]), baseline="1").baseline == 0
    with pytest.raises(Exception, match="matches 0 rows"):
        build_table(_runs(recs, ["m"], ["C", "B"]), baseline="m=nope")
    assert build_table(_runs(recs, ["m"], ["C", "B"]), baseline="M=new").baseline == 1  # label names in any case
    notes = [text for _, text in notes_text(t)]
    assert any(n.startswith("Δ: paired difference") and n.endswith("from the unrounded values.") for n in notes), notes


def test_a_baseline_named_in_another_case_is_that_label_unless_two_are_spelt_so():
    """docs/reports.md's `--baseline freeze=no,augment=no,mix=no` was refused on a sweep's own report,
    whose labels are Freeze, Augment, Mix (the paper's CSV spells them in lower case)."""
    recs = [{"trial": f"t{i}", "seed": 0, "Freeze": f, "Augment": "no", "Mix": m, "C": 10.0 + i, "B": 20.0}
            for i, (f, m) in enumerate([("no", "no"), ("yes", "no"), ("yes", "yes")])]  # fmt: skip
    assert build_table(_runs(recs, ["Freeze", "Augment", "Mix"], ["C", "B"]), baseline="freeze=yes,augment=✗,MIX=no").baseline == 1
    twice = [dict(r, mix=r["Mix"]) for r in recs]
    with pytest.raises(ReportInputError, match="label 'MIX' could be Mix or mix; write it as one of them"):  # not guessed
        build_table(_runs(twice, ["Freeze", "Augment", "Mix", "mix"], ["C", "B"]), baseline="MIX=no")


def test_delta_grid_per_domain_and_mean_match_the_delta_column():
    recs = []
    for s in range(2):
        recs.append({"trial": f"base{s}", "seed": s, "m": "base", "C": 10.0 + s, "B": 20.0})
        recs.append({"trial": f"new{s}", "seed": s, "m": "new", "C": 14.0 + 3 * s, "B": 22.0})
        recs.append({"trial": f"low{s}", "seed": s, "m": "low", "C": 9.0, "B": math.nan if s else 18.0})
    rs = _runs(recs, ["m"], ["C", "B"])
    g = delta_grid(rs, baseline=0)
    assert g.columns == ["C", "B", "Mean"] and list(g.n) == [2, 2, 2]
    # new: C diffs 4, 6 -> 5 ± 1.414; B diffs 2, 2 -> 2 ± 0; Mean per seed 3, 4 -> 3.5 ± 0.707
    assert g.mean[1] == pytest.approx([5.0, 2.0, 3.5]) and g.std[1] == pytest.approx([2**0.5, 0.0, 0.5**0.5])
    # low: C -1, -2; B -2 (seed 0 only: no std); Mean per seed -1.5, -2
    assert g.mean[2] == pytest.approx([-1.5, -2.0, -1.75]) and np.isnan(g.std[2, 1])
    assert g.mean[0] == pytest.approx([0.0, 0.0, 0.0])
    table = build_table(rs, baseline="1")
    for i, row in enumerate(table.rows):  # the Mean column is the table's Δ
        assert g.mean[i, -1] == pytest.approx(row.delta.mean)
    assert delta_grid(rs, baseline=1).mean[0] == pytest.approx([-5.0, -2.0, -3.5])
    with pytest.raises(Exception, match="must be in 1..3"):
        delta_grid(rs, baseline=3)


def test_summary_frame_numbers():
    table = build_table(collect_csv(PAPER_CSV))
    frame = summary_frame(table)
    assert list(frame["C"]) == pytest.approx([float(r["C"]) for r in _paper_rows()])
    assert list(frame["Mean"]) == pytest.approx([float(r["Mean"]) for r in _paper_rows()], abs=0.01)
    assert frame["C_mark"].tolist()[-2:] == ["second", "best"]


def _seeded_paper_table():
    """The paper's 8 rows with 3 seeds each (± std in every cell), one missing cell, Δ vs row 1."""
    recs = []
    for i, row in enumerate(_paper_rows()):
        for s in range(3):
            rec = {"trial": f"t-{i}{s}", "seed": s, "Freeze": row["freeze"], "Augment": row["augment"], "Mix": row["mix"]}
            rec.update({d: float(row[d]) + 0.37 * s - 0.21 * (i % 3) for d in DOMAINS})
            recs.append(rec)
    recs[5]["AN"], recs[5]["status"] = math.nan, "failed"
    return build_table(_runs(recs, ["Freeze", "Augment", "Mix"], DOMAINS), baseline="1")


def _pdflatex(tmp_path: Path, name: str, body: str, *, twocolumn: bool) -> str:
    """Compile ``body`` in an article (two columns, like a conference paper); returns the log."""
    doc = tmp_path / f"{name}.tex"
    doc.write_text(
        f"\\documentclass[{'twocolumn' if twocolumn else 'onecolumn'}]{{article}}\n"
        "\\usepackage{booktabs}\n\\usepackage{amssymb}\n\\usepackage{graphicx}\n"
        "\\begin{document}\n" + body + "\n\\end{document}\n"
    )
    proc = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert (tmp_path / f"{name}.pdf").stat().st_size > 1000
    return (tmp_path / f"{name}.log").read_text(errors="replace")


def test_latex_width_fits_a_two_column_paper(tmp_path):
    """Single-seed and seeded tables (± std) compile at column and page width without exceeding it;
    the bare tabular of the seeded table does not fit a column (the check can fail)."""
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex not installed (apt-get install texlive-latex-base texlive-latex-recommended)")
    single, seeded = build_table(collect_csv(PAPER_CSV), baseline="1"), _seeded_paper_table()
    assert seeded.show_n and r"$\pm$" in render_latex(seeded)
    for name, table in (("single", single), ("seeded", seeded)):
        tex = render_latex(table, width="column")
        assert r"\resizebox{\linewidth}" in tex and r"\usepackage{graphicx}" in tex
        float_ = f"\\begin{{table}}[t]\\centering\n{tex}\\caption{{{name}}}\\end{{table}}"
        log = _pdflatex(tmp_path, f"{name}-column", float_ + "\nText.", twocolumn=True)
        assert "Overfull \\hbox" not in log, name
        wide = f"\\begin{{table*}}[t]\\centering\n{render_latex(table, width='page')}\\caption{{{name}}}\\end{{table*}}"
        log = _pdflatex(tmp_path, f"{name}-page", wide + "\nText.", twocolumn=True)
        assert "Overfull \\hbox" not in log, name
    bare = f"\\begin{{table}}[t]\\centering\n{render_latex(seeded, width='none')}\\end{{table}}"
    log = _pdflatex(tmp_path, "seeded-none", bare + "\nText.", twocolumn=True)
    assert "Overfull \\hbox" in log


def test_a_bare_tabular_keeps_its_notes_out_of_the_box():
    """`--latex-width none` is for the user's own \\resizebox, but its notes followed the tabular as a
    printed paragraph, which landed in the box and shrank the table to a tenth. Now the file holds the
    tabular and comment lines only; the notes are comments, for the caption."""
    table = _seeded_paper_table()  # a footnote, the partial and seeds notes, Δ
    tex = render_latex(table, width="none")
    lines = tex.splitlines()
    begin, end = lines.index(next(ln for ln in lines if ln.startswith(r"\begin{tabular}"))), lines.index(r"\end{tabular}")
    outside = lines[:begin] + lines[end + 1 :]
    assert all(ln.startswith("%") for ln in outside), [ln for ln in outside if not ln.startswith("%")]
    assert any(ln.startswith("% $^{1}$ row 2 (Freeze") for ln in outside)  # the footnote, as LaTeX, in a comment
    assert any(ln.startswith("% Several seeds:") for ln in outside)
    assert r"{\footnotesize\raggedright $^\dagger$" in render_latex(table, width="column")  # printed where the file sizes the table


def test_n_counts_the_runs_with_values_and_a_csv_without_status_gets_none_made_up(tmp_path):
    """A seed whose cells were all empty counted in n (n=3 over a mean ± std of 2 seeds), and a CSV
    without a status column had "done" made up: "seed 1: done (no mIoU for C, B, M)", and `done` in
    the report's results.csv."""
    path = tmp_path / "res.csv"
    path.write_text("Mix,seed,C,B,M\na,0,10,20,30\na,1,,,\na,2,12,22,32\nb,0,15,25,35\nb,1,16,26,\nb,2,17,27,37\n")
    rs = collect_csv(path, domains=["C", "B", "M"])
    table = build_table(rs)
    assert [r.n for r in table.rows] == [2, 3] and table.cell(0, "C").std == pytest.approx(2**0.5)
    md = render_markdown(table)
    rows = _md_rows(md)
    assert rows[0][1] == "2" and rows[1][1] == "2–3"  # row b: M over two runs, C and B over three
    assert "over the n runs with values (a range where a row's cells average different numbers of runs)" in md
    assert table.footnotes == ["row 1 (Mix a), seed 1: no mIoU for C, B, M", "row 2 (Mix b), seed 1: no mIoU for M"]
    assert "done" not in md
    assert " & 2--3 & " in render_latex(table)
    assert rs.to_results_csv()["status"].tolist() == [""] * 6
    again = tmp_path / "again.csv"
    rs.to_results_csv().to_csv(again, index=False)
    assert build_table(collect_csv(again, domains=["C", "B", "M"])).footnotes == table.footnotes  # read back the same


def test_latex_width_option_is_checked():
    table = build_table(collect_csv(PAPER_CSV))
    with pytest.raises(Exception, match="--latex-width wide: expected one of column, page, none"):
        render_latex(table, width="wide")
    assert r"\resizebox" not in render_latex(table, width="none") and "graphicx" not in render_latex(table, width="none")


def test_latex_compiles_with_pdflatex(tmp_path):
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex not installed (apt-get install texlive-latex-base texlive-latex-recommended)")
    recs = [
        {"trial": "t-a", "seed": 0, "Freeze": "yes", "Method": "a_b & c%", "C": 40.0, "B": 30.0},
        {"trial": "t-b", "seed": 0, "Freeze": "no", "Method": "x", "C": 41.0, "B": math.nan, "status": "failed"},
        {"trial": "t-c", "seed": 1, "Freeze": "no", "Method": "x", "C": 43.0, "B": 33.0},
        # Greek letters and symbols stopped pdflatex ("Unicode character λ not set up"); | < > printed as — ¡ ¿
        {"trial": "t-d", "seed": 0, "Freeze": "no", "Method": "λ=0.5 → α≥β·2 a|b <c> Ω", "C": 20.0, "B": 10.0},
    ]
    tables = [build_table(collect_csv(PAPER_CSV), baseline="1"), build_table(_runs(recs, ["Freeze", "Method"], ["C", "B"]), baseline="2")]
    tex = render_latex(tables[1])
    assert r"$\lambda$=0.5 $\rightarrow$ $\alpha$$\geq$$\beta$$\cdot$2 a\textbar{}b \textless{}c\textgreater{} $\Omega$" in tex
    assert "$-$21.00" in tex and " -21.00" not in tex  # the Δ of the last row: a minus sign, not a hyphen
    assert r"{\footnotesize\raggedright " in tex  # the notes: not centred by the float's \centering
    for i, t in enumerate(tables):
        doc = tmp_path / f"doc{i}.tex"
        doc.write_text(
            "\\documentclass{article}\n\\usepackage{booktabs}\n\\usepackage{amssymb}\n\\usepackage{graphicx}\n"
            "\\begin{document}\n" + render_latex(t) + "\\end{document}\n"
        )
        proc = subprocess.run(
            ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name],
            cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )
        assert proc.returncode == 0, proc.stdout[-2000:]
        assert (tmp_path / f"doc{i}.pdf").stat().st_size > 1000


def test_a_seed_that_failed_outright_leaves_its_row_ranked():
    """One failed seed of three (no value at all) is the commonest failure of a seeded sweep: every
    cell and the Mean average the same two seeds, so the Mean is neither partial nor unranked."""
    recs = [{"trial": f"a{s}", "seed": s, "M": "a", "C": 20.0 + s, "B": 30.0} for s in range(3)]
    recs += [{"trial": "b0", "seed": 0, "M": "b", "C": 30.0, "B": 40.0}, {"trial": "b1", "seed": 1, "M": "b", "C": 32.0, "B": 42.0},
             {"trial": "b2", "seed": 2, "M": "b", "C": math.nan, "B": math.nan, "status": "failed"}]  # fmt: skip
    table = build_table(_runs(recs, ["M"], ["C", "B"]))
    b = table.rows[1]
    assert not b.mean.partial and b.mean.mark == "best" and b.mean.n == 2
    md = render_markdown(table)
    assert _md_rows(md)[1][-1] == "**36.00 ± 1.41**" and "†" not in md
    assert not build_table(_runs(recs, ["M"], ["C", "B"]), baseline="1").rows[1].delta.partial  # nor its Δ (it was)


def test_markdown_shows_a_label_as_written():
    """A label `<b>x` bolded the rest of the rendered table, and `*a*` was read as emphasis; only `|`
    was escaped. A label `&lt;i&gt;` rendered as `<i>`."""
    recs = [
        {"trial": "t-a", "seed": 0, "Method": "<b>x", "C": 40.0},
        {"trial": "t-b", "seed": 0, "Method": "*a* `b` c\\d style_class", "C": 30.0},
        {"trial": "t-c", "seed": 0, "Method": "a|b", "C": 20.0},
        {"trial": "t-d", "seed": 0, "Method": "&lt;i&gt; &#42; A & B", "C": 10.0},
    ]
    md = render_markdown(build_table(_runs(recs, ["Method"], ["C"])))
    rows = _md_rows(md)
    assert rows[0][0] == "&lt;b&gt;x"
    assert rows[1][0] == "\\*a\\* \\`b\\` c\\\\d style_class"
    assert "| a\\|b | 20.00 |" in md
    assert rows[3][0] == "&amp;lt;i&amp;gt; &amp;#42; A & B"  # an entity is shown as typed; a lone & stays plain


def test_a_delta_over_fewer_domains_is_marked_like_a_partial_mean():
    """A row whose seed lacks a domain got a Δ over the others, unmarked; and a Mean over every domain,
    unmarked and ranked, although one of its cells averages fewer seeds than the others."""
    recs = [
        {"trial": "b0", "seed": 0, "M": "base", "C": 10.0, "B": 20.0},
        {"trial": "b1", "seed": 1, "M": "base", "C": 10.0, "B": 20.0},
        {"trial": "x0", "seed": 0, "M": "mx", "C": 12.0, "B": 30.0},
        {"trial": "x1", "seed": 1, "M": "mx", "C": 12.0, "B": math.nan, "status": "failed"},
        {"trial": "y0", "seed": 0, "M": "my", "C": 9.0, "B": 18.0},
    ]
    table = build_table(_runs(recs, ["M"], ["C", "B"]), baseline="1")
    x, y = table.rows[1], table.rows[2]
    assert x.delta.partial and not y.delta.partial
    assert x.mean.partial and x.mean.mark is None and not y.mean.partial and not table.rows[0].mean.partial
    md = render_markdown(table)
    assert _md_rows(md)[1][-1] == "+4.00 ± 2.83†"  # seed 1 lacks B: its Δ is C's alone
    assert _md_rows(md)[1][-2] == "21.00†"  # (12 + 30) / 2: B over one seed; no ± (one seed has every domain)
    assert ("† Mean and Δ over the available values only (a domain cell is missing or averages fewer seeds than the row's others;"
            " the ± of such a Mean is over the seeds that have every domain); not ranked.") in md  # fmt: skip
    assert _md_rows(md)[2][-1] == "-1.50" and _md_rows(md)[2][-2] == "<ins>13.50</ins>"  # complete: unmarked; ranked second, after 15.00


def test_a_baseline_without_values_is_said_and_the_baseline_names_its_columns_as_the_header_does():
    """`--baseline 4` on a failed row gave a Δ column of dashes and nothing said why; the baseline was
    named with the CSV's raw lower-case columns (`freeze=✗`) under capitalised headers."""
    recs = [
        {"trial": "a", "seed": 0, "freeze": "✗", "C": 10.0, "B": 20.0},
        {"trial": "b", "seed": 0, "freeze": "✓", "C": math.nan, "B": math.nan, "status": "failed"},
    ]
    table = build_table(_runs(recs, ["freeze"], ["C", "B"]), baseline="2")
    md = render_markdown(table)
    assert _md_rows(md)[0][-1] == "–"
    assert "Δ: none, the baseline (row 2) has no value to compare with (see its footnote); choose another with --baseline." in md
    assert "(Freeze=✓)" in md and "freeze=" not in md
    fine = render_markdown(build_table(_runs(recs, ["freeze"], ["C", "B"]), baseline="1"))
    assert "Δ: none" not in fine


def _single_seed_paper_table():
    recs = [
        {"trial": f"t-{i}", "Freeze": row["freeze"], "Augment": row["augment"], "Mix": row["mix"], **{d: float(row[d]) for d in DOMAINS}}
        for i, row in enumerate(_paper_rows())
    ]
    return build_table(_runs(recs, ["Freeze", "Augment", "Mix"], DOMAINS))


@pytest.mark.parametrize("seeded", [False, True])
def test_the_terminal_table_narrows_to_fit_and_never_cuts_a_label_or_a_number(seeded):
    """On an 80-column terminal, the end-of-sweep table lost its Freeze/Augment/Mix columns and cut
    numbers to `24.…`; with seeds, labels went below 140 columns and cells read `13.84 ± 0.…`."""
    import io

    from rich.console import Console

    from reports.terminal import print_rich

    table = _seeded_paper_table() if seeded else _single_seed_paper_table()
    widths = {}
    for width in (240, 120, 80, 40):
        buf = io.StringIO()
        print_rich(Console(file=buf, width=width, force_terminal=True, color_system=None, soft_wrap=True), table)
        lines = buf.getvalue().splitlines()
        assert "…" not in buf.getvalue(), (width, buf.getvalue())
        header = next(ln for ln in lines if "Mean" in ln and "Freeze" in ln)
        assert re.search(r"Freeze +Augment +Mix", header), header
        at = lines.index(header)
        body = lines[at + 2 : at + 2 + (16 if seeded and width < 240 else 8)]
        text = " ".join(body)
        for r in table.rows:
            for c in (*r.cells.values(), r.mean):
                if c.mean is not None:
                    assert fmt2(c.mean) in text
                if c.std is not None:
                    assert f"± {fmt2(c.std)}" in text
        widths[width] = max(len(ln.rstrip()) for ln in lines[at:at + len(body) + 2])
        if seeded and width < 240:  # each ± std on the line under its mean
            assert body[1].lstrip().startswith("± ") and "±" not in body[0], body[:2]
    if seeded:
        assert widths[240] > 120 >= widths[120]  # one line a row where it fits; stacked where that fits
        assert widths[80] == widths[40] == widths[120]  # wider than the terminal: printed whole, not cut
    else:
        assert widths[240] > 80 >= widths[80]  # the roomy layout at 240; one space between columns at 80
        assert widths[40] == widths[80]


def test_rich_table_marks_alignment_and_json_round_trip():
    import io
    import json

    from rich.console import Console

    from reports.terminal import render_rich, table_from_json, table_to_json

    table = _seeded_paper_table()
    again = table_from_json(json.loads(json.dumps(table_to_json(table))))
    assert again == table  # the driver's rerun shows exactly the table it printed
    buf = io.StringIO()
    Console(file=buf, width=220, force_terminal=True, color_system="standard").print(render_rich(again))
    out = buf.getvalue()
    best = table.cell(7, "C")  # row 8 is best in C, row 7 second
    assert best.mark == "best" and table.cell(6, "C").mark == "second"
    assert f"\x1b[1m{fmt2(best.mean)} ± {fmt2(best.std)}\x1b[0m" in out
    assert f"\x1b[4m{fmt2(table.cell(6, 'C').mean)} ± {fmt2(table.cell(6, 'C').std)}\x1b[0m" in out
    assert "**" not in out and "<ins>" not in out and "(baseline)" in out and "¹" in out
    plain = re.sub(r"\x1b\[[0-9;]*m", "", out)
    lines = plain.splitlines()
    header = next(ln for ln in lines if "Freeze" in ln and "Mean" in ln)
    row8 = next(ln for ln in lines if fmt2(best.mean) in ln)
    assert row8.index(fmt2(best.std)) + len(fmt2(best.std)) == header.index(" C ") + 2  # right-aligned under "C"
