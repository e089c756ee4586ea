"""Sweep files: every user mistake is ONE line naming file, dotted path and expectation; exit 2; nothing runs."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from orchestrator.__main__ import main
from orchestrator.errors import SweepError
from famix_core.config_io import parse_overrides
from orchestrator.sweep import expand_trials, load_sweep, resolve_profile, resolve_sweep_path

GOOD = """\
name: tiny
grid:
  model.freeze: [paper, none]
  style.mix: [true, false]
labels:
  model.freeze: {column: Freeze, values: {paper: "✓", none: "✗"}}
  style.mix: {column: Mix, values: {true: "✓", false: "✗"}}
domains: [C, B]
"""


def _write(text: str, name: str = "x.yaml") -> Path:
    p = Path("sweeps") / name
    p.parent.mkdir(exist_ok=True)
    p.write_text(textwrap.dedent(text))
    return p


def _cli_error(capsys, text: str, *extra: str) -> str:
    p = _write(text)
    rc = main(["sweep", "plan", str(p), "--run-dir", "out", *extra])
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert not Path("out").exists() or not any(Path("out").rglob("DONE.json"))
    return lines[0]


CASES = [
    # (yaml, expected fragments)
    (GOOD.replace("model.freeze: [paper", "model.freez: [paper"), ["sweeps/x.yaml: grid.model.freez: unknown key", "did you mean model.freeze?"]),
    (GOOD + "gird: {}\n", ["sweeps/x.yaml: gird: unknown key", "did you mean grid?"]),
    # a misspelt section holding keys is named as typed, with the section's hint (not "gird.model.freeze: … grid?")
    (GOOD + "gird: {model.freeze: [paper]}\n", ["sweeps/x.yaml: gird: unknown key (did you mean grid?)"]),
    (GOOD.replace("style.mix: [true, false]", "style.mix: [true, 3]"), ["grid.style.mix[1]", "style.mix", "boolean"]),
    (GOOD.replace("style.mix: [true, false]", "style.mix: []"), ["grid.style.mix: empty list"]),
    (GOOD.replace("style.mix: [true, false]", "style.mix: [true, true]"), ["grid.style.mix[1]: duplicate grid point"]),
    (GOOD.replace("[paper, none]", "[paper, nope]"), ["grid.model.freeze[1]", "unknown freeze policy 'nope'"]),
    (GOOD.replace("domains: [C, B]", "domains: [C, X]"), ["domains", "unknown domain 'X'"]),
    # said of trial 0's eval.domains before, where the file has no such key
    (GOOD.replace("domains: [C, B]", "domains: [C, B, cityscapes]"), ["sweeps/x.yaml: domains[2]: domain C appears twice (first at [0])"]),
    (GOOD + "base: {model: {backbone: RN5000}}\n", ["base", "model.backbone", "unknown backbone 'RN5000'"]),
    (GOOD + "base: {style: {strategy: magic}}\n", ["unknown style strategy 'magic'"]),
    (GOOD + "base: {mining: {prompt: poem}}\n", ["unknown prompt type 'poem'"]),
    (GOOD + "base: {model: {frezee: paper}}\n", ["base.model.frezee: unknown key", "did you mean model.freeze?"]),
    (
        GOOD + "zip:\n  - values: {style.strategy: [none, famix], style.augment: [false]}\n",
        ["zip.0", "unequal length", "style.strategy=2", "style.augment=1"],
    ),
    (GOOD + "seeds: []\n", ["seeds: empty list"]),
    (GOOD + "seeds: [a]\n", ["seeds.0", "integer"]),
    # pydantic's words: "Input should be a valid dictionary or instance of BackendSpec", "String should match pattern …"
    (GOOD + "backend: local\n", ["sweeps/x.yaml: backend: expected a mapping (got 'local')"]),
    (GOOD.replace("model.freeze: {column", "model.freeze: Freeze\n  x: {column"), ["labels.model.freeze: expected a mapping (got 'Freeze')"]),
    (GOOD.replace("name: tiny", "name: my sweep/1"), ["sweeps/x.yaml: name: 'my sweep/1': expected ASCII letters, digits, '_', '.'"
                                                      " and '-' only (the name is a folder"]),
    # "grid.style: Input should be a valid list"; "grid.eval.scales[0]: eval.scales: Input should be a valid list (got 1.0)"
    ("name: tiny\ngrid:\n  style:\n    mix: [false, true]\n", ["sweeps/x.yaml: grid: style: a mapping; a grid key is a dotted"
                                                            " path with its list of values (style.mix: [...])"]),
    ("name: tiny\ngrid: {eval.scales: [1.0, 0.5]}\n", ["grid.eval.scales[0]: eval.scales: Input should be a valid list (got 1.0);"
                                                     " eval.scales takes a list, so each of its grid values is one: eval.scales:"
                                                     " [[1.0, 0.5]] is one grid point, eval.scales: [[1.0], [0.5]] is 2"]),
    # YAML 1.1 reads 1e3 as a string: the quotes of "(got '1e3')" alone suggested the user had typed one
    (GOOD + "seeds: [1e3]\n", ["seeds.0: Input should be a valid integer", "(got '1e3'); YAML reads an exponent without a dot"
                                " as text: write 1000"]),
    (GOOD + "base: [1, 2]\n", ["sweeps/x.yaml: base: expected a config mapping or the path of a YAML config file, got a list"]),
    (GOOD + "base:\n", ["base: expected a config mapping or the path of a YAML config file, got an empty value"]),
    (GOOD + "base: .\n", ["sweeps/x.yaml: base: . is a folder (relative to sweeps); expected a YAML config file or a mapping"]),
    (GOOD + "seeds: [0, -3]\n", ["seeds.1: expected a seed from 0 to 4294967295, got -3"]),
    (GOOD + "seeds: [18446744073709551616]\n", ["seeds.0: expected a seed from 0 to 4294967295"]),
    (GOOD + "seeds: [0, true]\n", ["seeds: expected a number, got [0, true] (true/false, yes/no and on/off are YAML booleans)"]),
    (GOOD + "backend: {retries: true}\n", ["backend.retries: expected a number, got true"]),  # it was read as 1
    (GOOD.replace("style.mix: [true, false]", "train.seed: [1, 2]"), ["grid.train.seed: set in every trial by the sweep's seeds: list"]),
    (GOOD + "zip:\n  - values: {eval.domains: [[C], [B]]}\n", ["zip[0].values.eval.domains: set in every trial by the sweep's domains: list"]),
    (GOOD + "grid2: [\n", ["invalid YAML (line", "column"]),
    # was "…: but found another document", the first half of PyYAML's sentence dropped
    (GOOD + "---\nname: again\n", ["invalid YAML (line", "expected a single document in the stream, but found another document"]),
    ("name: tiny\ngrid: !!python/object:os.system {}\n", ["YAML tag 'tag:yaml.org,2002:python/object:os.system'", "not allowed", "line 2", "plain data only"]),
    ("name: tiny\ngrid: !!python/object/apply:os.system ['echo hi']\n", ["YAML tag 'tag:yaml.org,2002:python/object/apply:os.system'", "not allowed"]),
    (GOOD + "backend: {kind: local, resources: {trian: {cpus: 1}}}\n", ["backend.resources", "unknown stage kind 'trian'", "did you mean train?"]),
    (GOOD + "backend: {slurm: {partitoin: gpu}}\n", ["backend.slurm.partitoin", "unknown"]),
    (GOOD + "backend: {local: {workers: many}}\n", ["backend.local.workers: expected an integer >= 1 or 'auto', got 'many'"]),
    (GOOD + "backend: {local: {workers: 0}}\n", ["backend.local.workers: expected an integer >= 1 or 'auto', got 0"]),
    (GOOD + "backend: {kind: rey}\n", ["backend.kind: unknown backend 'rey'", "did you mean ray?"]),
    (GOOD + "labels2: 1\n", ["labels2: unknown key", "did you mean labels?"]),
    (GOOD.replace("style.mix: {column", "style.mox: {column"), ["labels.style.mox: not a grid or zip key", "did you mean style.mix?"]),
    ("- a\n- b\n", ["<root>: expected a mapping"]),
    (GOOD.replace("values: {paper:", "values: {papr:"), ["labels.model.freeze.values.papr: not a value model.freeze takes (it takes paper, none)"]),
    (GOOD.replace("{column: Freeze", "{colum: Freeze"), ["labels.model.freeze.colum: unknown key"]),  # not "column: Field required"
]


@pytest.mark.parametrize("text,fragments", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_bad_sweep_is_one_line_exit_2(capsys, text, fragments):
    line = _cli_error(capsys, text)
    assert line.startswith("famix: error: ")
    for frag in fragments:
        assert frag in line, line


def test_bad_override_and_profile(capsys):
    line = _cli_error(capsys, GOOD, "train.iteratoins=5")
    assert "command line: train.iteratoins: unknown key (did you mean train.iterations?)" in line
    line = _cli_error(capsys, GOOD, "--profile", "papr")
    assert "unknown profile" in line and "did you mean paper?" in line
    line = _cli_error(capsys, GOOD, "model.freeze=none")
    assert "model.freeze" in line and "varied by the sweep" in line
    line = _cli_error(capsys, GOOD, "train.iterations=-3")
    assert "train.iterations" in line and "greater than or equal to 1" in line
    line = _cli_error(capsys, GOOD, "seeds=[0,-1]")
    assert "command line: seeds=[0, -1]: expected a seed from 0 to 4294967295, got -1" in line


def test_a_mistake_in_another_profile_is_found_whichever_profile_runs(capsys):
    """A typo in ``profiles.paper.backend.slurm`` (or its grid's keys, its domains) passed every smoke run
    of the file and came out only on the cluster; a profile's ``base`` was checked at load already."""
    cluster = GOOD + "profiles:\n  paper:\n    backend: {kind: slurm, slurm: {partiton: gpu}}\n"
    line = _cli_error(capsys, cluster)  # the smoke profile runs
    assert line == ("famix: error: sweeps/x.yaml: profiles.paper: backend.slurm.partiton: unknown option (did you mean partition? "
                    "valid: partition, time, gpus, cpus_per_task, mem, account, qos, constraint, reservation, additional, "
                    "array_parallelism, pack, mine, train, evaluate)")  # fmt: skip
    line = _cli_error(capsys, GOOD + "profiles:\n  mine:\n    tracking: {experment: x}\n")
    assert line.startswith("famix: error: sweeps/x.yaml: profiles.mine.tracking.experment: ") and "did you mean experiment?" in line
    line = _cli_error(capsys, GOOD + "profiles:\n  paper:\n    grid: {style.mxi: [true]}\n")
    assert line == "famix: error: sweeps/x.yaml: profiles.paper.grid.style.mxi: unknown key (did you mean style.mix?)"
    line = _cli_error(capsys, GOOD + "profiles:\n  paper:\n    domains: [C, Q]\n")
    assert line.startswith("famix: error: sweeps/x.yaml: profiles.paper.domains[1]: unknown domain 'Q' (known: ")
    assert main(["sweep", "plan", str(_write(cluster.replace("partiton", "partition"))), "--run-dir", "out"]) == 0


def test_a_misspelt_profile_of_the_file_is_pointed_out_when_the_built_in_one_runs(capsys):
    """`profiles: papr:` in the file, `--profile paper` on the command line: the built-in paper profile
    ran without the file's settings for it (its partition, its iterations), without a word."""
    p = _write(GOOD + "profiles:\n  papr:\n    base: {train: {iterations: 7}}\n")
    assert main(["sweep", "plan", str(p), "--run-dir", "out", "--profile", "paper", "data.root=nowhere"]) == 2  # no data: refused after the note
    err = capsys.readouterr().err
    assert err.startswith("famix: warning: sweeps/x.yaml: no profiles.paper: the built-in paper profile runs without the file's own "
                          "settings for it (the file has profiles.papr: a misspelling? --profile papr runs that one)\n"), err
    assert main(["sweep", "plan", str(p), "--run-dir", "out"]) == 0  # smoke: nothing like it
    assert "warning" not in capsys.readouterr().err
    p = _write(GOOD + "profiles:\n  paper_rn101:\n    base: {train: {iterations: 7}}\n")  # one that extends the name
    main(["sweep", "plan", str(p), "--run-dir", "out", "--profile", "paper", "data.root=nowhere"])
    assert "warning" not in capsys.readouterr().err


def test_missing_sweep_file_names_search_path(capsys, monkeypatch):
    rc = main(["sweep", "plan", "nothere", "--run-dir", "out"])
    err = capsys.readouterr().err
    assert rc == 2 and "nothere: sweep file not found" in err
    Path("folder.yaml").mkdir()
    rc = main(["sweep", "plan", "folder.yaml", "--run-dir", "out"])
    err = capsys.readouterr().err
    assert rc == 2 and err == "famix: error: folder.yaml: a folder; expected a sweep YAML file (e.g. sweeps/ablation.yaml)\n"
    os.mkfifo("fifo.yaml")  # was "sweep file not found (did you mean fifo.yaml?)"
    assert main(["sweep", "plan", "fifo.yaml", "--run-dir", "out"]) == 2
    assert "fifo.yaml: not a regular file; expected a sweep YAML file" in capsys.readouterr().err
    Path("fifo.yaml").unlink()
    Path("results.csv").write_text("Freeze,C\n✓,20.0\n")  # was "<root>: expected a mapping with 'name', 'grid', …"
    assert main(["report", "results.csv", "--run-dir", "out"]) == 2
    assert capsys.readouterr().err == ("famix: error: results.csv: a table, not a sweep file; `famix report SWEEP --csv results.csv`"
                                       " reads results from it\n")  # fmt: skip
    Path("other").mkdir()
    Path("other/ablation.yaml").write_text(GOOD)
    Path("environment.yml").write_text("name: env\n")
    assert main(["sweep", "plan", "other/ablaton.yaml"]) == 2  # the folder it names, as named there
    assert capsys.readouterr().err.strip().endswith("(did you mean other/ablation.yaml?)")
    assert main(["sweep", "plan", "environmnt"]) == 2  # a bare name: sweeps/ only, not any YAML file here
    assert "did you mean" not in capsys.readouterr().err
    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)  # ./sweeps is the project's sweeps/: named once (it was named twice)
    assert main(["sweep", "plan", "nothere"]) == 2
    assert capsys.readouterr().err.strip() == f"famix: error: nothere: sweep file not found (looked as given and in {root / 'sweeps'})"
    # a misspelt name gets the closest sweep file; an absolute path was said to be looked for in sweeps/ too
    assert main(["sweep", "plan", "ablaton"]) == 2
    assert capsys.readouterr().err.strip().endswith(f"(looked as given and in {root / 'sweeps'}) (did you mean ablation.yaml?)")
    assert main(["sweep", "plan", str(root / "sweeps" / "ablaton.yaml")]) == 2
    assert capsys.readouterr().err.strip() == f"famix: error: {root / 'sweeps' / 'ablaton.yaml'}: sweep file not found (did you mean {root / 'sweeps' / 'ablation.yaml'}?)"
    assert main(["sweep", "plan", "ablation.yml"]) == 2  # the same name, another extension: that file, not ablation_3seeds
    assert capsys.readouterr().err.strip().endswith("(did you mean ablation.yaml?)")


@pytest.mark.parametrize("action", ["plan", "run", "status", "cancel"])
def test_a_run_dir_that_is_a_file_is_named_so(capsys, action):
    p = _write(GOOD)
    Path("afile").write_text("")
    for run_dir, blocker in (("afile", "it"), ("afile/sub", Path("afile").absolute())):
        rc = main(["sweep", action, str(p), "--run-dir", run_dir])
        err = capsys.readouterr().err
        expected = f"{Path(run_dir).absolute()}: the run dir must be a folder, and {blocker} is a file; choose another with --run-dir"
        assert rc == 2 and err == f"famix: error: {expected}\n", err
    assert Path("afile").read_text() == ""


def test_status_of_a_run_dir_that_does_not_exist_says_so(capsys):
    p = _write(GOOD)
    assert main(["sweep", "status", str(p), "--run-dir", "nowhere"]) == 0
    out = capsys.readouterr().out
    assert f"note: run dir {Path('nowhere').absolute()} does not exist: nothing has run there (another --run-dir?)" in out
    assert not Path("nowhere").exists()


def test_cancel_of_a_sweep_never_run_creates_nothing_and_says_so(capsys):
    """`cancelled 0 item(s)` after a mistyped --run-dir read as a cancel that worked."""
    p = _write(GOOD)
    assert main(["sweep", "cancel", str(p), "--run-dir", "never"]) == 0
    out = capsys.readouterr().out
    assert out == f"note: {Path('never/tiny').absolute()} does not exist: this sweep never ran there, nothing to cancel (another --run-dir?)\n"
    assert not Path("never").exists()
    Path("never/tiny").mkdir(parents=True)  # it ran there, and nothing of it runs now
    assert main(["sweep", "cancel", str(p), "--run-dir", "never"]) == 0
    assert capsys.readouterr().out == "nothing to cancel: no driver of sweep tiny runs, and local holds no job of it\n"


@pytest.mark.parametrize("argv", [
    ["report", "sweeps/x.yaml", "--no-figures", "--out", ""], ["report", "sweeps/x.yaml", "--experiment", " "],
    ["report", "sweeps/x.yaml", "--tracking-uri", ""], ["sweep", "plan", "sweeps/x.yaml", "--profile", ""],
    ["evaluate", "--config", "c.yaml", "--weights", "w", "--out", "o", "--domains", ""],
])  # fmt: skip
def test_an_empty_option_value_is_refused_not_taken_for_the_default(capsys, argv):
    """`famix report … --out "$OUT"` with OUT unset wrote over the run's own report (the default
    folder); an empty --experiment, --tracking-uri or --profile meant the default too, and an empty
    `evaluate --domains` every domain."""
    _write(GOOD)
    with pytest.raises(SystemExit) as e:  # argparse's own exit
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    option = next(a for a, b in zip(argv, argv[1:]) if not b.strip())
    assert err.startswith(f"famix {argv[0]}") and f"error: argument {option}: expected a value, got an empty string" in err, err
    assert len(err.splitlines()) == 1 and [x.name for x in Path(".").iterdir()] == ["sweeps"]  # nothing made


@pytest.mark.parametrize("action", ["plan", "run", "status", "cancel"])
def test_an_empty_or_too_long_run_dir_is_one_line(capsys, action):
    """`--run-dir ''` meant the current folder (the store and mlflow.db spread over it); a path the
    filesystem cannot hold ended in a traceback (ENAMETOOLONG)."""
    p = _write(GOOD)
    with pytest.raises(SystemExit) as e:
        main(["sweep", action, str(p), "--run-dir", ""])
    assert e.value.code == 2
    assert capsys.readouterr().err == (f"famix sweep {action}: error: argument --run-dir: expected a value, got an empty string (an unset"
                                       f" shell variable?; default: runs) (see 'famix sweep {action} --help')\n")  # fmt: skip
    long_dir = "d" * 300
    assert main(["sweep", action, str(p), "--run-dir", long_dir]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"famix: error: {Path(long_dir).absolute()}") and err.endswith(": File name too long; choose a shorter name or folder\n"), err
    assert [x.name for x in Path(".").iterdir()] == ["sweeps"]  # nothing made


def test_an_unknown_option_gets_one_line_naming_the_action_and_a_bare_word_the_override_message(capsys):
    """A command-line mistake is one line naming the action and where its usage is; argparse printed
    its whole usage block first."""
    p = _write(GOOD)
    with pytest.raises(SystemExit) as e:  # argparse's exit: --detach is run's
        main(["sweep", "plan", str(p), "--detach"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err == "famix sweep plan: error: unrecognized arguments: --detach (see 'famix sweep plan --help')\n"
    with pytest.raises(SystemExit) as e:
        main(["sweep", "run", str(p), "--max-paralel", "2"])
    assert capsys.readouterr().err == (
        "famix sweep run: error: unrecognized arguments: --max-paralel 2 (did you mean --max-parallel?) (see 'famix sweep run --help')\n"
    )
    with pytest.raises(SystemExit) as e:
        main(["sweep", "run", str(p), "--retries", "x"])
    assert e.value.code == 2
    assert capsys.readouterr().err == "famix sweep run: error: argument --retries: invalid int value: 'x' (see 'famix sweep run --help')\n"
    for group in ("sweep", "data"):  # a command of subcommands, given none of them: named by it, not by famix
        with pytest.raises(SystemExit) as e:
            main([group, "--bogus"])
        assert e.value.code == 2
        assert capsys.readouterr().err == f"famix {group}: error: unrecognized arguments: --bogus (see 'famix {group} --help')\n"
    with pytest.raises(SystemExit) as e:  # an option before the action: named by the command it was given to
        main(["sweep", "--bogus", "plan", str(p)])
    assert e.value.code == 2
    assert capsys.readouterr().err == "famix sweep: error: unrecognized arguments: --bogus (see 'famix sweep --help')\n"
    with pytest.raises(SystemExit) as e:  # ... with the action's options among the close ones
        main(["sweep", "--detah", "run", str(p)])
    assert capsys.readouterr().err == "famix sweep: error: unrecognized arguments: --detah (did you mean --detach?) (see 'famix sweep --help')\n"
    # an action's own option given before it: argparse read `2` as the action ("invalid choice: '2'"),
    # `c.yaml` as the command, or passed the option up to famix
    for args, said in [
        (["sweep", "--max-parallel", "2", "run", str(p)], "famix sweep run: error: --max-parallel was given before 'run': options of 'famix sweep run' go after 'run'"),
        (["sweep", "--max-par", "2", "run", str(p)], "famix sweep run: error: --max-par was given before 'run': options of 'famix sweep run' go after 'run'"),
        (["sweep", "--detach", "run", str(p)], "famix sweep run: error: --detach was given before 'run': options of 'famix sweep run' go after 'run'"),
        (["sweep", "--run-dir", "plan", "run", str(p)], "famix sweep run: error: --run-dir was given before 'run': options of 'famix sweep run' go after 'run'"),
        (["--config", "c.yaml", "train", "--out", "o"], "famix train: error: --config was given before 'train': options of 'famix train' go after 'train'"),
        (["--out", "d", "data", "synth"], "famix data synth: error: --out was given before 'data': options of 'famix data synth' go after 'synth'"),
    ]:  # fmt: skip
        with pytest.raises(SystemExit) as e:
            main(args)
        assert e.value.code == 2
        prog = said.split(": error")[0]
        assert capsys.readouterr().err == f"{said} (see '{prog} --help')\n", args
    with pytest.raises(SystemExit) as e:
        main(["sweeep"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("famix: error: argument COMMAND: invalid choice: 'sweeep'") and err.count("\n") == 1, err
    for args in ([str(p), "train.iterations"], [str(p), "--run-dir", "out", "train.iterations"]):  # before or after an option
        assert main(["sweep", "plan", *args]) == 2
        err = capsys.readouterr().err
        assert err == "famix: error: command line: 'train.iterations': expected key=value, +key=value or ~key (e.g. train.iterations=100)\n"
    with pytest.raises(SystemExit) as e:
        main(["sweep", "plan"])
    assert e.value.code == 2  # overrides are optional: only the sweep is missing
    assert capsys.readouterr().err == "famix sweep plan: error: the following arguments are required: sweep (see 'famix sweep plan --help')\n"
    assert not Path("out").exists()


def test_unknown_backend_lists_known(capsys):
    p = _write(GOOD)
    rc = main(["sweep", "run", str(p), "--backend", "rey", "--run-dir", "out"])
    err = capsys.readouterr().err
    assert rc == 2 and "unknown backend 'rey'" in err and "local, ray, slurm" in err and "did you mean ray?" in err


def test_expansion_order_labels_and_seeds():
    p = _write(GOOD + "seeds: [1]\nprofiles: {smoke: {seeds: [3, 4]}}\n")  # the profile's seeds win
    spec, src = load_sweep(p)
    rs = resolve_profile(spec, src, "smoke", parse_overrides(["train.iterations=7"]))
    trials = expand_trials(rs)
    assert len(trials) == 2 * 2 * 2
    # grid keys in file order (freeze outermost), seeds innermost
    got = [(t.config.model.freeze, t.config.style.mix, t.seed) for t in trials]
    assert got[:3] == [("paper", True, 3), ("paper", True, 4), ("paper", False, 3)]
    assert trials[0].labels == {"Freeze": "✓", "Mix": "✓"}
    assert trials[-1].labels == {"Freeze": "✗", "Mix": "✗"}
    assert all(t.config.train.seed == t.seed == t.config.mining.seed for t in trials)
    assert all(t.config.train.iterations == 7 for t in trials)
    assert all(t.config.eval.domains == ["C", "B"] for t in trials)
    assert [t.index for t in trials] == list(range(8))
    assert len({t.id for t in trials}) == 8
    # the smoke profile is the embedded default: synthetic data, famix-tiny, no weights
    assert trials[0].config.model.backbone == "famix-tiny" and trials[0].config.data.synthetic is not None


def test_zip_with_names_and_duplicate_configs():
    p = _write(
        """\
        name: base
        zip:
          - column: Method
            names: [Baseline, MixStyle, FAMix]
            values:
              style.strategy: [none, mixstyle, famix]
              style.augment: [false, false, true]
        domains: [C]
        """
    )
    spec, src = load_sweep(p)
    trials = expand_trials(resolve_profile(spec, src))
    assert [t.labels for t in trials] == [{"Method": "Baseline"}, {"Method": "MixStyle"}, {"Method": "FAMix"}]
    assert [t.config.style.strategy for t in trials] == ["none", "mixstyle", "famix"]
    # two grid points that resolve to the same config are duplicates (an integer field reads 5.0 as 5)
    p = _write("name: d\ngrid:\n  train.iterations: [5, 5.0]\ndomains: [C]\n", "d.yaml")
    spec, src = load_sweep(p)
    with pytest.raises(SweepError, match=r"d.yaml: grid: duplicate grid point: train.iterations=5.0 gives the same config as train.iterations=5"):
        expand_trials(resolve_profile(spec, src))


def test_base_from_file_and_name_resolution(tmp_path):
    Path("sweeps").mkdir()
    Path("sweeps/base.yaml").write_text("train: {iterations: 11}\n")
    _write("name: b\nbase: base.yaml\ngrid: {model.freeze: [paper]}\ndomains: [C]\n", "b.yaml")
    path = resolve_sweep_path("b")
    assert path.name == "b.yaml"
    spec, src = load_sweep(path)
    assert spec.base == {"train": {"iterations": 11}}
    _write("name: b\nbase: missing.yaml\n", "c.yaml")
    with pytest.raises(SweepError, match=r"c.yaml: base: file missing.yaml not found"):
        load_sweep(Path("sweeps/c.yaml"))


def test_shipped_sweeps_validate_in_both_profiles():
    for name, n_trials in (("ablation", 8), ("prompts", 5), ("baselines", 4)):
        spec, src = load_sweep(resolve_sweep_path(name, search=[Path(__file__).resolve().parent.parent / "sweeps"]))
        assert len(expand_trials(resolve_profile(spec, src, "smoke"))) == n_trials
        paper = expand_trials(resolve_profile(spec, src, "paper"))
        assert len(paper) == 3 * n_trials
        assert {t.config.model.pretrained for t in paper} == {"openai"}
        assert {t.config.train.iterations for t in paper} == {40000}
        assert all(t.config.eval.domains == ["C", "B", "M", "S", "AN", "AS", "AR", "AF"] for t in paper)
