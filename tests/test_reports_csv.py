"""reports.collect (CSV input) and `famix report --csv` end to end, including bad input (exit 2, one line)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from orchestrator.__main__ import main
from reports.collect import ReportInputError, collect_csv

PAPER_CSV = Path(__file__).parent / "data" / "ablation_freeze_augment_mix.csv"
DOMAINS = ["C", "B", "M", "S", "AN", "AS", "AR", "AF"]


def _paper() -> pd.DataFrame:
    return pd.read_csv(PAPER_CSV)


def _write(frame: pd.DataFrame, name: str = "res.csv") -> Path:
    path = Path(name)
    frame.to_csv(path, index=False)
    return path


def _cli_error(argv: list[str], capsys) -> str:
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("famix: error: ") and "Traceback" not in err
    return err


def test_wide_csv_reads_labels_domains_and_ignores_mean():
    rs = collect_csv(PAPER_CSV)
    assert rs.label_columns == ["freeze", "augment", "mix"]
    assert rs.domains == DOMAINS
    assert len(rs.runs) == 8 and "Mean" not in rs.runs
    assert rs.runs["C"].tolist() == pytest.approx(_paper()["C"].tolist())
    assert rs.runs["freeze"].tolist()[:2] == ["no", "no"]


def test_long_csv_equals_wide(tmp_path):
    paper = _paper().drop(columns=["Mean"])
    long = paper.melt(id_vars=["freeze", "augment", "mix"], var_name="domain", value_name="miou")
    long["seed"] = 0
    rs = collect_csv(_write(long))
    assert rs.domains == DOMAINS and rs.label_columns == ["freeze", "augment", "mix"]
    assert rs.runs[DOMAINS].to_numpy() == pytest.approx(paper[DOMAINS].to_numpy())


def test_fraction_units_are_converted_and_ambiguity_refused():
    paper = _paper()
    frac = paper.copy()
    frac[DOMAINS] = frac[DOMAINS] / 100.0
    path = _write(frac.drop(columns=["Mean"]))
    rs = collect_csv(path, units="fraction")
    assert rs.runs["C"].tolist() == pytest.approx(paper["C"].tolist())
    with pytest.raises(ReportInputError, match="--units fraction"):
        collect_csv(path)  # every value in [0, 1]: never guessed silently
    assert collect_csv(path, units="percent").runs["C"].iloc[-1] == pytest.approx(0.4815)
    with pytest.raises(ReportInputError, match=r"outside \[0, 1\]"):
        collect_csv(PAPER_CSV, units="fraction")


def test_missing_domain_column_named(capsys):
    path = _write(_paper().drop(columns=["AS"]))
    with pytest.raises(ReportInputError, match="missing domain column AS"):
        collect_csv(path)
    err = _cli_error(["report", "ablation", "--csv", str(path), "--out", "rep"], capsys)
    assert "missing domain column AS" in err and "res.csv" in err
    # fewer domains on purpose
    assert collect_csv(path, domains=["C", "B"]).domains == ["C", "B"]


def test_non_numeric_value_named(capsys):
    frame = _paper().astype(str)
    frame.loc[2, "M"] = "abc"
    path = _write(frame)
    err = _cli_error(["report", "x", "--csv", str(path), "--out", "rep"], capsys)
    assert "column 'M', line 4" in err and "'abc'" in err


@pytest.mark.parametrize("column", ["delta", "kept_std"])
def test_a_label_column_a_report_summary_writes_over_is_refused(capsys, column):
    """A label column named delta read fine, then summary.csv wrote the Δ values over its labels."""
    frame = pd.DataFrame({column: ["no", "yes"], "C": [10.0, 15.0]})
    err = _cli_error(["report", "x", "--csv", str(_write(frame)), "--domains", "C", "--baseline", "1", "--out", "o"], capsys)
    assert err == (f"famix: error: res.csv: column {column!r}: a report's summary.csv or source.csv has a column of that name "
                   "(delta, source_val, drop, kept, as written); rename this label column")  # fmt: skip
    frame = pd.DataFrame({"Delta": ["no", "yes"], "C": [10.0, 15.0]})  # as written: Delta sits beside delta
    assert main(["report", "x", "--csv", str(_write(frame)), "--domains", "C", "--baseline", "1", "--out", "o"]) == 0
    assert pd.read_csv("o/summary.csv")["Delta"].tolist() == ["no", "yes"]


@pytest.mark.parametrize("seed", ["abc", "1.5"])
def test_a_seed_that_is_not_an_integer_is_named_not_read_as_no_seed(capsys, seed):
    frame = pd.DataFrame({"m": ["a", "a", "b"], "seed": ["0", seed, ""], "C": [10.0, 12.0, 20.0]})
    err = _cli_error(["report", "x", "--csv", str(_write(frame)), "--domains", "C", "--out", "o"], capsys)
    assert err == f"famix: error: res.csv: line 3: seed {seed!r}: expected an integer (or an empty cell for no seed)"
    assert not Path("o").exists()


def test_row_with_other_field_count_than_header_refused(capsys):
    """pandas fills a short row with empty cells without a word; a long one it refuses in its own words."""
    lines = PAPER_CSV.read_text().splitlines()
    short = lines[2].rsplit(",", 2)[0]  # 10 fields: AF and Mean left out
    Path("short.csv").write_text("\n".join([lines[0], "", lines[1], short, *lines[3:]]) + "\n")  # a blank line 2
    err = _cli_error(["report", "paper", "--csv", "short.csv", "--out", "o/sub", "--no-figures"], capsys)
    assert err == "famix: error: short.csv: line 4: 10 fields, but the header has 12"  # the file's own line number
    Path("long.csv").write_text("\n".join([*lines[:3], lines[3] + ",1", *lines[4:]]) + "\n")
    err = _cli_error(["report", "paper", "--csv", "long.csv", "--out", "o/sub", "--no-figures"], capsys)
    assert err == "famix: error: long.csv: line 4: 13 fields, but the header has 12"
    assert not Path("o").exists()


def test_repeated_run_refused(capsys):
    """Each (labels, seed) once: a row given twice is not a second seed of its grid point."""
    lines = PAPER_CSV.read_text().splitlines()
    Path("dup.csv").write_text("\n".join([*lines, lines[1]]) + "\n")
    err = _cli_error(["report", "paper", "--csv", "dup.csv", "--out", "o", "--no-figures"], capsys)
    assert err == (
        "famix: error: dup.csv: lines 2, 10: freeze=no, augment=no, mix=no, no seed appears 2 times "
        "(each labels and seed may appear once; runs of one grid point need distinct seeds)"
    )
    frame = pd.DataFrame({"m": ["a", "a", "b", "a"], "seed": ["0", "1", "0", "1.0"], "C": [10.0, 12.0, 20.0, 13.0]})
    err = _cli_error(["report", "x", "--csv", str(_write(frame)), "--domains", "C", "--out", "o"], capsys)
    assert err == (
        "famix: error: res.csv: lines 3, 5: m=a, seed 1 appears 2 times "
        "(each labels and seed may appear once; runs of one grid point need distinct seeds)"
    )
    long = frame.melt(id_vars=["m", "seed"], var_name="domain", value_name="miou")
    with pytest.raises(ReportInputError, match=r"^res.csv: lines 3, 5: m=a, seed 1 appears 2 times"):
        collect_csv(_write(long), domains=["C"])  # long form: "1" and "1.0" are one seed
    assert not Path("o").exists()


def test_out_that_cannot_be_a_folder_refused_before_any_work(capsys):
    Path("afile").write_text("x")
    for out, what in [
        ("afile", "is a file (expected a folder)"),
        ("afile/sub", f"{Path('afile').resolve()} is a file (expected a folder)"),
        ("/proc/rep", "cannot create the folder (No such file or directory)"),
    ]:
        err = _cli_error(["report", "paper", "--csv", str(PAPER_CSV), "--out", out, "--no-figures"], capsys)
        assert err == f"famix: error: --out {out}: {what}"
    err = _cli_error(["report", "paper", "--csv", "nope.csv", "--out", "afile/sub"], capsys)
    assert err.startswith("famix: error: --out afile/sub: ")  # before the input is read
    assert Path("afile").read_text() == "x" and not Path("/proc/rep").exists()


def test_a_report_refused_on_its_input_leaves_no_folder_made_for_it(capsys):
    """`--out new/out --baseline 99`: refused after the folders for the report were made; `new/` stayed."""
    err = _cli_error(["report", "paper", "--csv", str(PAPER_CSV), "--out", "new/deeper/out", "--baseline", "99", "--no-figures"], capsys)
    assert err == "famix: error: --baseline 99: row number must be in 1..8"
    assert not Path("new").exists()
    Path("kept").mkdir()
    _cli_error(["report", "paper", "--csv", str(PAPER_CSV), "--out", "kept/out", "--baseline", "99", "--no-figures"], capsys)
    assert Path("kept").is_dir() and list(Path("kept").iterdir()) == []  # a folder that was there stays


def test_a_csv_cut_off_mid_line_is_noted():
    """A results.csv copied or downloaded only in part read as whole: its last value `13.5…`, cut to `13.`, was 13.00."""
    text = PAPER_CSV.read_text()
    assert text.endswith("\n")
    assert collect_csv(PAPER_CSV).notes == []
    cut = Path("cut.csv")
    cut.write_text(text.rstrip("\n")[:-3])
    notes = collect_csv(cut).notes
    assert notes == [f"cut.csv does not end with a line break: its last row (line {len(text.splitlines())}) may be cut short; check its values"]
    Path("long.csv").write_text("M,seed,domain,miou\na,0,C,10\na,0,B,20\nb,0,C,30\nb,0,B,4")  # long form: the file's last line
    assert collect_csv("long.csv", domains=["C", "B"]).notes[0].startswith("long.csv does not end with a line break: its last row (line 5)")


def test_csv_that_is_a_directory_named(capsys):
    Path("somedir").mkdir()
    err = _cli_error(["report", "paper", "--csv", "somedir/", "--out", "o"], capsys)
    assert err == "famix: error: somedir/: a directory, not a results CSV"
    assert not Path("o").exists()


def test_missing_csv_and_unknown_units(capsys):
    err = _cli_error(["report", "x", "--csv", "nope.csv", "--out", "rep"], capsys)
    assert "nope.csv" in err and "not found" in err
    path = _write(_paper()[DOMAINS] / 100.0)
    err = _cli_error(["report", "x", "--csv", str(path), "--out", "rep"], capsys)
    assert "--units" in err


def test_cli_report_from_paper_csv(capsys):
    rc = main(["report", "ablation_table", "--csv", str(PAPER_CSV), "--baseline", "freeze=no,augment=no,mix=no"])
    out = capsys.readouterr().out
    assert rc == 0
    report = Path("runs/ablation_table/report")
    for name in ("table.md", "table.tex", "results.csv", "summary.csv", "README.md", "bars.png", "bars.pdf"):
        assert (report / name).is_file() and (report / name).stat().st_size > 0, name
    assert "**48.15**" in out and "<ins>43.43</ins>" in out and "+24.19" in out
    md = (report / "table.md").read_text()
    assert "| ✓ | ✓ | ✓ | **48.15** |" in md
    assert "![bars](bars.png)" in (report / "README.md").read_text()
    assert "needs: booktabs, amssymb, graphicx)" in (report / "README.md").read_text()  # it named two of the three
    back = pd.read_csv(report / "results.csv")
    assert back["AF"].tolist() == pytest.approx(_paper()["AF"].tolist())
    # results.csv follows the Results CSV contract: it reads back into the same table
    rc = main(["report", "again", "--csv", str(report / "results.csv"), "--out", "rep2", "--no-figures", "--baseline", "1"])
    assert rc == 0 and (Path("rep2") / "table.md").read_text().split("\n", 2)[2] == md.split("\n", 2)[2]
    assert not list(report.glob(".*.tmp")), "temp files left behind"


def test_cli_uses_sweep_yaml_order_and_labels(tmp_path, capsys):
    sweep = tmp_path / "mini.yaml"
    sweep.write_text(
        "name: mini\ngrid:\n  style.mix: [false, true]\n"
        "labels:\n  style.mix: {column: Mix, values: {true: '✓', false: '✗'}}\n"
        "domains: [B, C]\n"
    )
    data = pd.DataFrame({"mix": ["no", "yes"], "C": [10.0, 20.0], "B": [30.0, 40.0]})
    path = _write(data)
    rc = main(["report", str(sweep), "--csv", str(path), "--out", "rep", "--no-figures"])
    assert rc == 0, capsys.readouterr().err
    header = (Path("rep") / "table.md").read_text().splitlines()[2]
    assert [c.strip() for c in header.strip("|").split("|")] == ["Mix", "B", "C", "Mean"]


def test_the_profile_is_named_in_every_heading_and_for_a_csv_only_when_given(tmp_path, capsys):
    """Only the figure titles said which profile (smoke, paper) made a report; table.md (`# mini`),
    table.tex and the README did not. A CSV may come from any profile: the sweep's default is not named for it."""
    sweep = tmp_path / "mini.yaml"
    sweep.write_text("name: mini\ngrid:\n  style.mix: [false, true]\ndomains: [B, C]\n")
    path = _write(pd.DataFrame({"mix": ["no", "yes"], "C": [10.0, 20.0], "B": [30.0, 40.0]}))

    def headings(out: str) -> list[str]:
        return [(Path(out) / f).read_text().splitlines()[0] for f in ("table.md", "table.tex", "README.md")]

    assert main(["report", str(sweep), "--csv", str(path), "--out", "given", "--no-figures", "--profile", "smoke"]) == 0
    assert headings("given") == ["# mini, smoke profile", "% FAMix report: mini, smoke profile (mIoU %); width: column.",
                                 "# Report: mini, smoke profile"]  # fmt: skip
    assert main(["report", str(sweep), "--csv", str(path), "--out", "csv"]) == 0  # the sweep's default profile is smoke
    assert headings("csv") == ["# mini", "% FAMix report: mini (mIoU %); width: column.", "# Report: mini"]
    # a sweep name with no file: the profile given is named all the same
    assert main(["report", "nofile", "--csv", str(path), "--out", "bare", "--no-figures", "--profile", "paper", "--domains", "C,B"]) == 0
    assert headings("bare")[0] == "# nofile, paper profile"
    from tests.test_reports_figures import _pdf_text

    assert "profile" not in _pdf_text(Path("csv/bars.pdf"))  # nor in the figure titles (skipped, saying why, without poppler)


def test_the_readme_names_the_files_written_and_no_others(tmp_path):
    """With --no-figures the README still said "figures as PNG and vector PDF", and with --latex-width
    none that table.tex needs graphicx, which table.tex itself did not list."""
    import re

    from reports.report import write_report

    files = write_report(collect_csv(PAPER_CSV), tmp_path / "bare", figures=False, latex_width="none")
    said = next(ln for ln in files.readme.read_text().splitlines() if ln.startswith("Files:"))
    assert "figure" not in said and "PNG" not in said
    named = re.search(r"needs: ([^)]*)\)", said).group(1).split(", ")
    assert named == re.findall(r"\\usepackage\{(\w+)\}", files.table_tex.read_text().splitlines()[1]) == ["booktabs", "amssymb"]
    files = write_report(collect_csv(PAPER_CSV), tmp_path / "full")
    said = next(ln for ln in files.readme.read_text().splitlines() if ln.startswith("Files:"))
    assert "needs: booktabs, amssymb, graphicx)" in said and said.endswith("; figures `bars`, `delta` as PNG and vector PDF.")


def test_a_domain_that_domains_leaves_out_is_not_called_missing_from_the_sweep():
    """`famix report … --domains C,AN,AF` (MLflow input) noted "domain B has results but is not in
    the sweep's domains; left out" of a B that the sweep file lists."""
    from reports.collect import ResultSet
    from reports.report import SweepInfo, apply_sweep_order

    runs = pd.DataFrame({"trial": ["t"], "seed": [0], "status": ["done"], "Mix": ["✓"], "C": [1.0], "B": [2.0], "M": [3.0]})
    results = ResultSet(sweep="s", source="mlflow", label_columns=["Mix"], domains=["C", "B", "M"], runs=runs)
    sweeps_own = apply_sweep_order(results, SweepInfo(name="s", domains=["C", "B"]))
    assert sweeps_own.notes == ["domain M has results but is not in the sweep's domains; left out"]
    chosen = apply_sweep_order(results, SweepInfo(name="s", domains=["C"], domains_chosen=True))
    assert chosen.domains == ["C"] and chosen.notes == []


def test_out_dir_inside_reports_package_refused(capsys):
    import reports

    inside = Path(reports.__file__).parent / "out"
    err = _cli_error(["report", "x", "--csv", str(PAPER_CSV), "--out", str(inside)], capsys)
    assert "inside the reports package" in err
    assert not inside.exists()


def test_cli_module_imports_nothing_heavy():
    import subprocess
    import sys

    code = (
        "import sys, argparse, reports.cli as c\n"
        "p = argparse.ArgumentParser(); c.register(p.add_subparsers(), sweep_info=None)\n"
        "print(','.join(m for m in ('mlflow', 'matplotlib', 'torch', 'pandas') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""


def test_results_csv_writes_integer_seeds_and_reads_seeds_back():
    frame = pd.DataFrame({"m": ["a", "a", "b"], "seed": [0, 1, 0], "C": [10.0, 12.0, 20.0], "B": [1.5, 2.5, 3.5]})
    rs = collect_csv(_write(frame), domains=["C", "B"])
    out = rs.to_results_csv()
    assert out["seed"].tolist() == [0, 1, 0] and str(out["seed"].dtype) == "Int64"
    assert rs.runs["seed"].tolist() == [0.0, 1.0, 0.0]


def test_repo_ablation_sweep_gives_label_columns_and_domains():
    from orchestrator.cli import report_sweep_info

    sweep = Path(__file__).resolve().parent.parent / "sweeps" / "ablation.yaml"
    info = report_sweep_info(str(sweep), None)
    assert info.name == "ablation" and info.label_columns == ["Freeze", "Augment", "Mix"]
    assert info.domains == DOMAINS
    rc = main(["report", str(sweep), "--csv", str(PAPER_CSV), "--out", "rep", "--no-figures"])
    assert rc == 0
    header = (Path("rep") / "table.md").read_text().splitlines()[2]
    assert header.startswith("| Freeze | Augment | Mix | C |")  # CSV's freeze/augment/mix take the sweep's names
    assert report_sweep_info("no_such_sweep_name", None).name == "no_such_sweep_name"
    with pytest.raises(ReportInputError, match="sweep file not found"):
        report_sweep_info("missing/dir/x.yaml", None)


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_out_folder_holding_the_users_files_is_refused_and_an_earlier_report_replaced(capsys, monkeypatch):
    """`--out proj` into a folder of the user's own files (a README.md and results.csv, names a report
    also writes) overwrote them with exit 0; `--out .` in a project root would replace its README.
    Refused before anything is written; a folder holding only an earlier report is still replaced whole."""
    proj = Path("proj")
    proj.mkdir()
    (proj / "README.md").write_text("# My project\n")
    (proj / "results.csv").write_text("a,b\n1,2\n")
    before = _tree(proj)
    err = _cli_error(["report", "paper", "--csv", str(PAPER_CSV), "--out", "proj", "--no-figures"], capsys)
    assert err == ("famix: error: --out proj: the folder holds files that are not a famix report's (README.md, results.csv), "
                   "which the report would overwrite or delete; choose an empty or new folder")
    assert _tree(proj) == before and sorted(p.name for p in Path(".").iterdir()) == ["proj"]  # no temp folder, no runs/

    monkeypatch.chdir(proj)  # `--out .` in the project's root
    err = _cli_error(["report", "paper", "--csv", str(PAPER_CSV), "--out", ".", "--no-figures"], capsys)
    assert err.startswith("famix: error: --out .: the folder holds files that are not a famix report's (README.md, results.csv)")
    assert _tree(Path(".")) == before
    for i in range(4):
        Path(f"f{i}.tex").write_text("")
    err = _cli_error(["report", "paper", "--csv", str(PAPER_CSV), "--out", "."], capsys)
    assert "(README.md, f0.tex, f1.tex and 3 more)" in err

    # an earlier report is replaced whole: the figures this one does not draw go
    assert main(["report", "paper", "--csv", str(PAPER_CSV), "--out", "rep"]) == 0
    assert Path("rep/bars.png").is_file()
    assert main(["report", "paper", "--csv", str(PAPER_CSV), "--out", "rep", "--no-figures"]) == 0
    assert sorted(p.name for p in Path("rep").iterdir()) == [".famix-report", "README.md", "results.csv", "summary.csv", "table.md", "table.tex"]
    Path("rep/README.md").unlink()  # a writer killed before the README (written last), or a deleted one: still a report
    Path("rep/.DS_Store").write_text("")  # and what a file browser leaves is not the user's work
    assert main(["report", "paper", "--csv", str(PAPER_CSV), "--out", "rep", "--no-figures"]) == 0
    capsys.readouterr()
    Path("rep/notes.md").write_text("mine")  # ... but not once the user has put a file of their own in it
    err = _cli_error(["report", "paper", "--csv", str(PAPER_CSV), "--out", "rep", "--no-figures"], capsys)
    assert "--out rep: the folder holds files that are not a famix report's (notes.md)" in err
    assert Path("rep/notes.md").read_text() == "mine"


def test_domains_given_twice_or_empty_refused(capsys):
    """`--domains C,C` made a table with two C columns (from MLflow; a CSV gave a pandas traceback), and
    `--domains ','` or `''` silently reported the default domains."""
    for given, what in [
        ("C,C", "domain C appears 2 times; each domain may appear once"),
        ("C,cityscapes,B", "domain C appears 2 times (C, cityscapes); each domain may appear once"),
    ]:
        err = _cli_error(["report", "x", "--csv", str(PAPER_CSV), "--domains", given, "--out", "o"], capsys)
        assert err == f"famix: error: --domains {given}: {what}"
    for given in (",", " , "):
        err = _cli_error(["report", "x", "--csv", str(PAPER_CSV), "--domains", given, "--out", "o"], capsys)
        assert err == (f"famix: error: --domains {given!r}: no domain given (expected comma-separated domains, e.g. C,B,M; "
                       "leave the flag out for the default)")
    with pytest.raises(SystemExit):  # an empty value, refused as for every option (an unset shell variable?)
        main(["report", "x", "--csv", str(PAPER_CSV), "--domains", "", "--out", "o"])
    assert "argument --domains: expected a value, got an empty string" in capsys.readouterr().err
    err = _cli_error(["report", "x", "--csv", str(PAPER_CSV), "--domains", "C,,B", "--out", "o"], capsys)
    assert err == "famix: error: --domains 'C,,B': an empty name between commas (expected comma-separated domains, e.g. C,B,M)"
    assert not Path("o").exists() and not Path("runs").exists()
    assert main(["report", "x", "--csv", str(PAPER_CSV), "--domains", "B, C", "--out", "o", "--no-figures"]) == 0
    assert Path("o/table.md").read_text().splitlines()[2].startswith("| Freeze | Augment | Mix | B | C | Mean |")


def test_flags_the_report_would_ignore_are_refused(capsys):
    """`--units` without `--csv` was ignored (MLflow holds percent), and `--tracking-uri` /
    `--experiment` with `--csv` too, without a word; so was `--device` without `--qualitative`."""
    csv = str(PAPER_CSV)
    cases = [
        (["--units", "fraction"], "--units fraction: only read with --csv (MLflow values are percent); drop it or pass --csv FILE"),
        (["--csv", csv, "--tracking-uri", "ftp://x"],
         f"--tracking-uri ftp://x: not used with --csv {csv} (the report reads the CSV, not MLflow); drop one of them"),
        (["--csv", csv, "--experiment", "other"],
         f"--experiment other: not used with --csv {csv} (the report reads the CSV, not MLflow); drop one of them"),
        (["--csv", csv, "--device", "cuda"], "--device cuda: only used by --qualitative; drop it or pass --qualitative TRIAL"),
        (["--csv", csv, "--qualitative", "1"], "--qualitative needs MLflow input (the trial's config and weights), not --csv"),
        # drawn, or sized, all the same
        (["--qualitative", "1", "--no-figures"], "--qualitative 1: a figure, and --no-figures writes none; drop one of them"),
        (["--csv", csv, "--figure-width", "column", "--no-figures"],
         "--figure-width column: sizes figures, and --no-figures writes none; drop one of them"),
    ]
    for flags, what in cases:
        err = _cli_error(["report", "x", *flags, "--out", "o"], capsys)
        assert err == f"famix: error: {what}"
    assert not Path("o").exists() and not Path("runs").exists()


def test_qualitative_with_csv_input_is_refused_in_the_same_words_by_the_cli_and_the_grid(capsys):
    """The flag check and :func:`reports.qualitative.qualitative_grid` (called without the CLI) refuse alike."""
    from reports.qualitative import qualitative_grid

    err = _cli_error(["report", "x", "--csv", str(PAPER_CSV), "--qualitative", "1", "--out", "o"], capsys)
    with pytest.raises(ReportInputError) as refused:
        qualitative_grid(collect_csv(PAPER_CSV), "1", "o", run_dir="runs")
    assert err == f"famix: error: {refused.value}"
    assert not Path("o").exists() and not Path("runs").exists()


def test_a_run_dir_that_is_a_file_is_named(capsys):
    """`--run-dir afile` said `afile/tiny/report: … is a file …; choose another folder with --out`,
    blaming the output folder for the run dir's mistake."""
    Path("afile").write_text("x")
    err = _cli_error(["report", "tiny", "--csv", str(PAPER_CSV), "--run-dir", "afile"], capsys)
    assert err == "famix: error: --run-dir afile: is a file (expected a folder, the run directory)"
    err = _cli_error(["report", "tiny", "--run-dir", "afile"], capsys)  # MLflow input: the store would be afile/mlflow.db
    assert err == "famix: error: --run-dir afile: is a file (expected a folder, the run directory)"
    err = _cli_error(["report", "tiny", "--run-dir", "afile/runs"], capsys)
    assert err == "famix: error: --run-dir afile/runs: afile is a file (expected a folder, the run directory)"
    assert Path("afile").read_text() == "x"
    # with --csv and --out the run dir is not used, so it is not looked at
    assert main(["report", "tiny", "--csv", str(PAPER_CSV), "--run-dir", "afile", "--out", "rep", "--no-figures"]) == 0
