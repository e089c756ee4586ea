"""Config precedence (general to specific) and ``famix sweep plan --explain``; hostile YAML input.

Precedence: engine defaults < built-in profile < the file's ``base`` < the file's
``profiles.<name>`` < grid/zip < command-line overrides.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from orchestrator.__main__ import main
from famix_core.errors import FamixError
from orchestrator.errors import SweepError
from orchestrator.explain import explain_key, explain_rows
from famix_core.config import FamixConfig
from famix_core.config_io import parse_overrides
from orchestrator.sweep import BUILTIN_PROFILES, expand_trials, load_sweep, resolve_profile

SWEEP = """\
name: prec
base:
  train: {iterations: 40, momentum: 0.8}
  eval: {max_images: 3}
grid:
  style.mix: [true, false]
domains: [C]
profiles:
  smoke:
    base: {train: {momentum: 0.7, batch_size: 4}}
"""


def _write(text: str, name: str = "p.yaml") -> Path:
    p = Path(name)
    p.write_text(textwrap.dedent(text))
    return p


def _resolve(text: str, profile: str = "smoke", overrides: list[str] | None = None):
    spec, src = load_sweep(_write(text))
    rs = resolve_profile(spec, src, profile, parse_overrides(overrides or []))
    return rs, expand_trials(rs)


def test_file_base_beats_builtin_profile_and_file_profile_beats_base():
    builtin = BUILTIN_PROFILES["smoke"]["base"]["train"]
    assert builtin["iterations"] != 40 and builtin["checkpoint_every"] != 1000  # each layer's value tells it apart
    rs, trials = _resolve(SWEEP, overrides=["train.weight_decay=0.5"])
    for t in trials:
        c = t.config
        assert c.train.iterations == 40  # file base > built-in profile
        assert c.eval.max_images == 3  # file base > built-in profile (8)
        assert c.train.momentum == 0.7  # file profiles.smoke > file base (0.8)
        assert c.train.batch_size == 4  # file profiles.smoke > built-in profile (8)
        assert c.train.checkpoint_every == builtin["checkpoint_every"]  # built-in profile > engine default (1000)
        assert c.train.lr_decoder == 0.1  # engine default
        assert c.train.weight_decay == 0.5  # command line
    assert [t.config.style.mix for t in trials] == [True, False]  # grid
    layer = {k: explain_key(rs, trials[1], k).layer for k in (
        "train.iterations", "train.momentum", "train.checkpoint_every", "train.lr_decoder", "train.weight_decay",
        "style.mix", "train.seed", "eval.domains")}  # fmt: skip
    assert layer == {
        "train.iterations": "p.yaml: base",
        "train.momentum": "p.yaml: profiles.smoke.base",
        "train.checkpoint_every": "built-in profile smoke",
        "train.lr_decoder": "engine default",
        "train.weight_decay": "command line",
        "style.mix": "grid",
        "train.seed": "seeds",
        "eval.domains": "domains",
    }
    assert explain_key(rs, trials[1], "style.mix").value is False


def test_file_seeds_beat_builtin_profile_seeds_but_not_the_files_profile():
    _, trials = _resolve(SWEEP + "seeds: [5]\n", profile="paper", overrides=["data.root=/nowhere"])
    assert sorted({t.seed for t in trials}) == [5]  # not the built-in paper profile's 0 1 2
    _, trials = _resolve(SWEEP.replace("domains: [C]", "domains: [C]\nseeds: [5]").replace("smoke:", "smoke:\n    seeds: [7, 8]"))
    assert sorted({t.seed for t in trials}) == [7, 8]


def test_command_line_seeds_beat_every_layer():
    rs, trials = _resolve(SWEEP + "seeds: [5]\n", profile="paper", overrides=["data.root=/nowhere", "seeds=[0,1,2]"])
    assert rs.seeds == [0, 1, 2] and sorted({t.seed for t in trials}) == [0, 1, 2]
    assert len(trials) == 6 and all(t.config.train.seed == t.seed for t in trials)
    assert explain_key(rs, trials[0], "train.seed").layer == "seeds (command line)"
    _, one = _resolve(SWEEP + "seeds: [5]\n", overrides=["seeds=[3]"])
    assert {t.seed for t in one} == {3}


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("seeds=3", "command line: seeds=3: expected a list of integers (e.g. seeds=[0,1,2])"),
        ("seeds=[]", "command line: seeds=[]: expected a list of integers (e.g. seeds=[0,1,2])"),
        ("seeds=[0,a]", "command line: seeds=[0, 'a']: expected a list of integers (e.g. seeds=[0,1,2])"),
        ("seeds=[0,true]", "command line: seeds=[0, True]: expected a list of integers (e.g. seeds=[0,1,2])"),
        ("seeds=[1,1]", "command line: seeds=[1, 1]: duplicate seeds"),
        ("~seeds", "command line: ~seeds: the sweep's seeds are replaced with seeds=[...] (e.g. seeds=[0,1,2])"),
        ("+seeds=[1]", "command line: +seeds: the sweep's seeds are replaced with seeds=[...] (e.g. seeds=[0,1,2])"),
    ],
)
def test_bad_command_line_seeds_get_one_line_before_anything_is_written(capsys, item, message):
    assert _refused(capsys, item) == f"famix: error: {message}"


def _refused(capsys, item: str) -> str:
    """The one error line of ``sweep run`` with a bad command-line ``item`` (exit 2, nothing written)."""
    rc = main(["sweep", "run", str(_write(SWEEP)), "--run-dir", "out", item])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert not Path("out").exists()
    return err[0]


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("train.iterations=-5", "command line: train.iterations: Input should be greater than or equal to 1"),
        ("data.crop_size=abc", "command line: data.crop_size: Input should be a valid integer, unable to parse string as an integer"),
        ("style.strategy=nope", "command line: style.strategy: unknown style strategy 'nope'"),
    ],
)
def test_a_bad_override_value_is_named_as_the_command_lines_not_the_files(capsys, item, message):
    assert _refused(capsys, item).startswith(f"famix: error: {message}")


def test_plan_explain_prints_value_and_layer(capsys):
    p = _write(SWEEP)
    rc = main(["sweep", "plan", str(p), "--run-dir", "out", "--explain", "train", "--explain", "style.mix", "train.weight_decay=0.5"])
    out = capsys.readouterr().out
    assert rc == 0, out
    rows = {tuple(c.strip() for c in line.strip("│┃ ").split("│")) for line in out.splitlines() if "│" in line}
    assert ("train.iterations", "all", "40", "p.yaml: base") in rows
    assert ("train.momentum", "all", "0.7", "p.yaml: profiles.smoke.base") in rows
    every = str(BUILTIN_PROFILES["smoke"]["base"]["train"]["checkpoint_every"])
    assert ("train.checkpoint_every", "all", every, "built-in profile smoke") in rows
    assert ("train.weight_decay", "all", "0.5", "command line") in rows
    assert ("style.mix", "1", "true", "grid") in rows and ("style.mix", "2", "false", "grid") in rows  # the plan table's #, from 1
    rc = main(["sweep", "plan", str(p), "--run-dir", "out", "--explain", "train.iteratons"])
    err = capsys.readouterr().err
    assert rc == 2 and "--explain train.iteratons: unknown key (did you mean train.iterations?)" in err
    rc = main(["sweep", "plan", str(p), "--run-dir", "out", "--explain", "backend.slurm.partition"])  # read "unknown key"
    assert rc == 2 and capsys.readouterr().err == (
        "famix: error: command line: --explain backend.slurm.partition: a setting of the sweep file, not an engine config key; "
        "--explain traces the trials' config keys only (read it in the file's backend or its profiles.<name>.backend)\n")
    # the inputs the plan would refuse (no data root, no weights, no GPU) are what --explain helps to debug
    rc = main(["sweep", "plan", str(p), "--run-dir", "out", "--profile", "paper", "data.root=nowhere", "--explain", "data.root"])
    out = capsys.readouterr().out
    assert rc == 0 and ("data.root", "all", str(Path("nowhere").absolute()), "command line") in {
        tuple(c.strip() for c in line.strip("│┃ ").split("│")) for line in out.splitlines() if "│" in line
    }, out


def _one_line_error(capsys, path: Path) -> str:
    rc = main(["sweep", "plan", str(path), "--run-dir", "out"])
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.strip()]
    assert rc == 2 and len(lines) == 1, err
    assert not Path("out").exists()
    return lines[0]


def test_duplicate_key_names_file_line_and_key(capsys):
    p = _write("name: d\ngrid:\n  style.mix: [true, false]\ndomains: [C]\ngrid:\n  style.augment: [true]\n")
    assert _one_line_error(capsys, p) == "famix: error: p.yaml: line 5: duplicate key 'grid' (first at line 2); each key may appear once"
    p = _write("name: d\nbackend:\n  resources:\n    train: {cpus: 1, cpus: 2}\n")
    assert "p.yaml: line 4: duplicate key 'cpus' (first at line 4)" in _one_line_error(capsys, p)
    # a merge key (<<: *anchor) whose keys the mapping overrides is not a duplicate
    p = _write("name: m\nbackend:\n  resources:\n    mine: &r {cpus: 1, mem_gb: 4}\n    train: {<<: *r, cpus: 2}\n")
    spec, _ = load_sweep(p)
    assert spec.backend.resources["train"].cpus == 2 and spec.backend.resources["train"].mem_gb == 4


def test_anchor_bomb_and_size_cap_fail_fast_in_one_line(capsys, monkeypatch):
    from famix_core import config_io

    built: list[int] = []
    construct = config_io._Loader.construct_document
    monkeypatch.setattr(config_io._Loader, "construct_document", lambda self, node: built.append(1) or construct(self, node))
    lines = ["name: bomb", "backend:", "  slurm:", "    a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"    a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 12)]  # 10^12 nodes
    bomb = _write("\n".join(lines) + "\n")
    line = _one_line_error(capsys, bomb)
    assert "p.yaml: more than 100000 YAML nodes once aliases are expanded" in line
    assert built == []  # refused from its node graph: no Python object was built from the bomb
    big = Path("big.yaml")
    big.write_text("name: big\n" + "# padding\n" * 120_000)  # 1.2 MB of comments
    assert _one_line_error(capsys, big) == "famix: error: big.yaml: file is 1.2 MB; sweep files are limited to 1024 KB"


@pytest.mark.parametrize("depth", [150, 600])
def test_deep_nesting_and_a_self_referencing_alias_are_one_line(capsys, depth):
    """600 nested lists in a 1.2 KB file raised a RecursionError; 300 were called "more than 100000
    YAML nodes once aliases are expanded" in a file without an alias."""
    deep = _write("name: deep\nbase: " + "[" * depth + "]" * depth + "\n")
    line = _one_line_error(capsys, deep)
    assert line.endswith("p.yaml: lists or mappings nested more than 100 levels deep (or an alias inside itself); sweep files are a few levels deep")
    assert "aliases are expanded" not in line
    loop = _write("name: loop\nbase: &a [*a]\n")
    assert "nested more than 100 levels deep (or an alias inside itself)" in _one_line_error(capsys, loop)


def test_an_override_nested_past_what_yaml_can_parse_is_one_line():
    from famix_core.config_io import parse_overrides
    from famix_core.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        parse_overrides(["train.val_crop=" + "[" * 3000 + "]" * 3000])
    assert str(e.value) == "command line: 'train.val_crop=[[[[[[[[[[[[[[[[[[[[[[[[['…: lists or mappings nested past what a value can hold"


def test_binary_and_non_utf8_sweep_files(capsys):
    Path("bin.yaml").write_bytes(b"name: x\n\x00\x01\x02\xff")
    assert _one_line_error(capsys, Path("bin.yaml")) == "famix: error: bin.yaml: binary file (NUL bytes); expected a YAML text file"
    Path("latin.yaml").write_bytes("name: x\ndescription: caf\xe9\n".encode("latin-1"))
    line = _one_line_error(capsys, Path("latin.yaml"))
    assert line == "famix: error: latin.yaml: not UTF-8 text (line 2, byte 24); save the file as UTF-8"


def test_override_of_a_varied_key_is_rejected_not_silently_lost():
    with pytest.raises(SweepError, match="style.mix: this key is varied"):
        _resolve(SWEEP, overrides=["style.mix=true"])


def test_override_of_a_section_merges_into_it_and_may_not_set_a_varied_key():
    """`model={freeze: paper}` on the ablation replaced the whole section: the profile's backbone and
    weights went with it (the error then named RN50 weights). A mapping now merges into the section, as
    in Hydra; one that names a varied key is refused (the grid's value would beat it, silently)."""
    with pytest.raises(SweepError, match=r"^command line: style: sets style.mix, which the sweep's grid/zip varies; edit the grid instead$"):
        _resolve(SWEEP, overrides=["style={mix: true, strategy: mixstyle}"])
    rs, trials = _resolve(SWEEP, overrides=["train={momentum: 0.5}", "style={strategy: mixstyle}"])
    for t in trials:
        c = t.config.train
        assert (c.momentum, c.iterations, c.batch_size) == (0.5, 40, 4)  # the file base's and the profile's other keys stay
        assert t.config.style.strategy == "mixstyle"
    assert sorted(t.config.style.mix for t in trials) == [False, True]
    _, trials = _resolve(SWEEP, overrides=["~train", "train={momentum: 0.5}", "style={strategy: mixstyle}"])  # delete, then set: replaced
    assert {(t.config.train.momentum, t.config.train.iterations) for t in trials} == {(0.5, FamixConfig().train.iterations)}
    assert sorted(t.config.style.mix for t in trials) == [False, True]  # expansion sets the grid's values after the overrides


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("train.seed=3", "command line: train.seed: set in every trial by the sweep's seeds; give seeds=[...] instead (e.g. seeds=[0,1,2])"),
        ("~mining.seed", "command line: mining.seed: set in every trial by the sweep's seeds; give seeds=[...] instead (e.g. seeds=[0,1,2])"),
        ("eval.domains=[C,B]", "command line: eval.domains: set in every trial by the sweep's domains (C, from p.yaml: domains); "
         "give domains=[...] instead (e.g. domains=[C,B])"),
        ("train={seed: 3, momentum: 0.5}", "command line: train: sets train.seed, which is set in every trial by the sweep's seeds; "
         "give seeds=[...] instead (e.g. seeds=[0,1,2])"),
        ("eval={domains: [B]}", "command line: eval: sets eval.domains, which is set in every trial by the sweep's domains "
         "(C, from p.yaml: domains); give domains=[...] instead (e.g. domains=[C,B])"),
    ],
)
def test_override_of_a_key_the_seeds_or_domains_set_is_rejected_not_silently_lost(capsys, item, message):
    assert _refused(capsys, item) == f"famix: error: {message}"


@pytest.mark.parametrize("item", ["data.root=/datasets", "+data.root=/datasets"])
def test_a_data_root_the_synthetic_benchmark_would_ignore_is_refused(capsys, item):
    """`data.root=/datasets` on the smoke profile planned and ran on the built-in synthetic benchmark,
    the override dropped without a word (`--explain data.root` showed the run dir's synth folder).
    (`data.roots.<domain>` is read even then: not refused.)"""
    key = item.lstrip("+").split("=")[0]
    assert _refused(capsys, item) == (
        f"famix: error: command line: {key}: ignored: every trial of profile smoke reads the built-in synthetic benchmark "
        "(data.synthetic is set); for real data use --profile paper, or add data.synthetic=null"
    )
    assert _refused(capsys, "data={root: /datasets}") == (
        "famix: error: command line: data: sets data.root, which is ignored: every trial of profile smoke reads the built-in "
        "synthetic benchmark (data.synthetic is set); for real data use --profile paper, or add data.synthetic=null"
    )
    rs, trials = _resolve(SWEEP, overrides=[item, "data.synthetic=null"])  # real data on purpose: read
    assert all(t.config.data.synthetic is None for t in trials)
    _resolve(SWEEP, profile="paper", overrides=[item])


def test_eval_domains_on_the_command_line_sets_a_sweep_without_domains():
    rs, trials = _resolve(SWEEP.replace("domains: [C]\n", ""), overrides=["eval.domains=[C,B]"])
    assert rs.domains == ["C", "B"] and {tuple(t.config.eval.domains) for t in trials} == {("C", "B")}


def test_command_line_domains_replace_the_sweeps_and_keep_its_trainings(capsys):
    """A quick look at fewer domains: `domains=[…]` (like `seeds=[…]`) was refused as an unknown key,
    and `eval.domains` pointed at the sweep file. The trainings are the same stages; only the
    evaluations change."""
    from orchestrator.plan import build_plan

    rs, trials = _resolve(SWEEP.replace("domains: [C]", "domains: [C, B, AN]"), overrides=["domains=[AN,C]"])
    assert rs.domains == ["AN", "C"] and {tuple(t.config.eval.domains) for t in trials} == {("AN", "C")}
    assert explain_rows(rs, trials, "eval.domains")[0][2:] == ('["AN", "C"]', "domains (command line)")
    spec, src = load_sweep(_write(SWEEP.replace("domains: [C]", "domains: [C, B, AN]")))
    plans = [build_plan(resolve_profile(spec, src, "smoke", parse_overrides(o)), "runs", check_data=lambda c: None) for o in ([], ["domains=[AN,C]"])]
    train = [{k for k, st in p.stages.items() if st.kind == "train"} for p in plans]
    assert train[0] == train[1]  # the same trainings
    assert sorted(st.domain for st in plans[1].stages.values() if st.kind == "evaluate") == ["AN", "AN", "C", "C"]
    for item, message in [
        ("domains=[C,X]", "command line: domains=['C', 'X']: unknown domain 'X'"),
        ("domains=[C,cityscapes]", "command line: domains=['C', 'cityscapes']: domain C appears twice"),
        ("domains=C", "command line: domains='C': expected a list of domains (e.g. domains=[C,B])"),
        ("+domains=[C]", "command line: +domains: the sweep's domains are replaced with domains=[...] (e.g. domains=[C,B])"),
    ]:
        assert _refused(capsys, item).startswith(f"famix: error: {message}")


def test_run_help_gives_the_sweep_file_as_the_default_of_retries_and_parallelism(capsys):
    """Without --retries / --max-parallel the sweep file's backend block decides: the help says so, not a fixed number."""
    with pytest.raises(SystemExit):
        main(["sweep", "run", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "(default: the sweep's backend.retries, 1 unless set)" in out
    assert "(default: the sweep's backend.max_parallel, else the backend's own" in out
    assert "(default 1)" not in out


def test_make_leaves_the_profile_and_the_backend_to_the_sweep_file_unless_given():
    """``make sweep`` without PROFILE / BACKEND passes neither flag, so a file's ``default_profile`` and
    ``backend.kind`` (e.g. ``kind: slurm``) hold; given, they are passed on (``make -n``: nothing runs)."""
    import shutil
    import subprocess

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    root = Path(__file__).resolve().parents[1]

    def dry(*args: str) -> str:
        cmd = ["make", "-s", "-n", "--no-print-directory", "-C", str(root), *args]
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout

    plain = dry("sweep", "SWEEP=sweeps/mine.yaml")
    assert "famix sweep run sweeps/mine.yaml" in plain and "--profile" not in plain and "--backend" not in plain
    assert "--profile paper --backend slurm" in dry("sweep", "SWEEP=sweeps/mine.yaml", "PROFILE=paper", "BACKEND=slurm")
    for target in ("plan", "status", "report"):
        assert "--profile" not in dry(target) and "--profile paper" in dry(target, "PROFILE=paper")


@pytest.mark.parametrize("run_dir", [".", "runs sweeps", "mine", ""])
def test_make_clean_deletes_only_a_run_dir(run_dir):
    """`make clean` ran `rm -rf $(RUN_DIR)`: `RUN_DIR=.` deleted the project, `RUN_DIR="runs sweeps"`
    its sweep files. It now deletes a folder that holds a famix run (its mlflow.db or store/), or
    nothing, with one line."""
    import shutil
    import subprocess

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    makefile = Path(__file__).resolve().parents[1] / "Makefile"
    for folder in ("runs/store", "sweeps", "mine"):
        Path(folder).mkdir(parents=True)
    Path("mine/notes.md").write_text("mine")

    def clean(value: str) -> subprocess.CompletedProcess:
        return subprocess.run(["make", "-s", "-f", str(makefile), "clean", f"RUN_DIR={value}"], capture_output=True, text=True)

    refused = clean(run_dir)
    assert refused.returncode == 2 and "nothing deleted" in refused.stderr, refused.stderr
    assert Path("runs/store").is_dir() and Path("sweeps").is_dir() and Path("mine/notes.md").is_file()
    assert clean("runs").returncode == 0 and not Path("runs").exists()  # a run dir goes


@pytest.mark.parametrize("target", ["sweep", "plan", "status", "report"])
def test_make_targets_refuse_an_empty_sweep_and_say_an_ignored_backend(target):
    """`make plan SWEEP=` printed argparse's usage block, naming `sweep` rather than SWEEP=; `make status
    BACKEND=slurm` and `make report BACKEND=…` dropped BACKEND without a word."""
    import os
    import shutil
    import subprocess
    import time

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    makefile = Path(__file__).resolve().parents[1] / "Makefile"
    Path("pyproject.toml").write_text("")
    famix = Path("venv/bin/famix")
    famix.parent.mkdir(parents=True)
    famix.write_text('#!/bin/sh\necho "famix $*"\n')
    famix.chmod(0o755)
    Path("venv/.installed").touch()
    earlier = time.time() - 60
    os.utime("pyproject.toml", (earlier, earlier))  # older than venv/.installed: nothing is installed

    def make(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["make", "-s", "-f", str(makefile), target, "VENV=venv", *args], capture_output=True, text=True)

    empty = make("SWEEP=")
    assert empty.returncode != 0 and empty.stdout == ""
    assert empty.stderr.splitlines()[0] == f"make {target}: SWEEP= is empty; give a sweep file, e.g. SWEEP=sweeps/ablation.yaml"
    given = make("SWEEP=sweeps/x.yaml", "BACKEND=slurm")
    assert given.returncode == 0, given.stderr
    if target in ("sweep", "plan"):
        assert "--backend slurm" in given.stdout and given.stderr == ""
    else:
        assert "--backend" not in given.stdout
        assert given.stderr == f"note: make {target} ignores BACKEND=slurm: it reads the run dir, whichever backend ran the sweep\n"


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("backend.ray.address=auto", "set backend.ray.address in the sweep file, or in its profiles.<name>.backend for one profile"),
        ("resources.train.cpus=2", "set backend.resources.train.cpus in the sweep file, or in its profiles.<name>.backend for one profile"),
        ("tracking.uri=http://127.0.0.1:5000", "set tracking.uri in the sweep file, or in its profiles.<name>.tracking for one profile"),
        ("labels.style.mix.column=M", "set labels.style.mix.column in the sweep file"),
    ],
)
def test_a_sweep_file_setting_given_as_an_override_says_where_it_goes(capsys, item, message):
    """`backend.ray.address=auto` read `unknown key`, as if misspelt (the README says it is a sweep-file setting)."""
    key = item.split("=")[0]
    assert _refused(capsys, item) == (
        f"famix: error: command line: {key}: a setting of the sweep file, not an engine config key (key=value sets those); {message}"
    )
    assert _refused(capsys, "backend.kind=ray") == ("famix: error: command line: backend.kind: a setting of the sweep file, "
                                                    "not an engine config key; on the command line it is --backend (of famix sweep plan, run and cancel)")  # fmt: skip
    assert _refused(capsys, "trian.iterations=3") == "famix: error: command line: trian.iterations: unknown key (did you mean train.iterations?)"


@pytest.mark.parametrize(
    ("item", "line"),
    [
        ("base.train.iterations=3", "base.train.iterations: key=value items set keys of the sweep's base: drop 'base.'; did you mean train.iterations=…?"),
        ("default_profile=paper", "default_profile: a setting of the sweep file, not an engine config key; on the command line it is --profile"),
        ("tracking.urii=x", "tracking.urii: unknown key, in the engine config and in a sweep file's tracking (did you mean uri?)"),
        ("backend.resources.train.cpuz=2", "backend.resources.train.cpuz: unknown key, in the engine config and in a sweep file's "
         "backend.resources.train (did you mean cpus?)"),
    ],
)
def test_the_sweep_setting_hint_names_the_right_fix(capsys, item, line):
    """`base.train.iterations=3` was told to set base.train.iterations in the sweep file; `tracking.urii=x`
    to set tracking.urii there; `default_profile=paper` was not pointed at --profile."""
    assert _refused(capsys, item) == f"famix: error: command line: {line}"


def test_a_grid_value_that_is_a_mapping_merges_into_its_section():
    """`grid: {model: [{freeze: paper}, {freeze: none}]}` replaced the model section in every trial: the
    profile's backbone and weights went with it (the plan then asked for RN50 weights)."""
    text = "name: gm\ngrid:\n  model: [{freeze: paper}, {freeze: none}]\ndomains: [C]\n"
    smoke = BUILTIN_PROFILES["smoke"]["base"]["model"]
    rs, trials = _resolve(text)
    assert [(t.config.model.freeze, t.config.model.backbone, t.config.model.pretrained) for t in trials] == [
        ("paper", smoke["backbone"], smoke["pretrained"]), ("none", smoke["backbone"], smoke["pretrained"])
    ]
    assert {row[3] for row in explain_rows(rs, trials, "model.freeze")} == {"grid"}
    assert {row[3] for row in explain_rows(rs, trials, "model.backbone")} == {"built-in profile smoke"}
    with pytest.raises(SweepError, match=r"^command line: model.freeze: set by the values of model, which the sweep's grid/zip varies; edit the grid instead$"):
        _resolve(text, overrides=["model.freeze=none"])
    _, trials = _resolve(text, overrides=["model.aspp_dropout=0.2"])  # a key the grid's mappings do not set
    assert {t.config.model.aspp_dropout for t in trials} == {0.2}


def test_explain_takes_the_overrides_in_order_and_a_domain_root_by_name_or_column():
    """`'train={momentum: 0.5}' '~train.momentum'` was explained as the command line's (0.9, the default);
    `~k +k=…` failed `--explain` with "already set" though the plan succeeded; `data.roots.B=/x` read
    `null` under `data.roots.B` and `engine default` under `data.roots.bdd100k`."""
    def explain(overrides: list[str], key: str) -> tuple[object, str]:
        rs, trials = _resolve(SWEEP, overrides=overrides)
        p = explain_key(rs, trials[0], key)
        return p.value, p.layer

    default = FamixConfig().train.momentum
    assert explain(["train={momentum: 0.5}", "~train.momentum"], "train.momentum") == (default, "command line (~train.momentum: engine default)")
    assert explain(["train.momentum=0.5", "~train.momentum", "+train.momentum=0.7"], "train.momentum") == (0.7, "command line")
    assert explain(["train={weight_decay: 0.5}"], "train.momentum") == (0.7, "p.yaml: profiles.smoke.base")  # merged around, not set
    for spelt in ("data.roots.B", "data.roots.bdd100k"):
        assert explain(["data.roots.B=/x"], spelt) == ("/x", "command line")
    assert explain(["data.roots.acdc=/x"], "data.roots.AN") == ("/x", "command line")  # the folder of four conditions
    rs, trials = _resolve(SWEEP, overrides=["data.roots.acdc=/x"])
    assert [row[0] for row in explain_rows(rs, trials, "data.roots.acdc")] == [
        "data.roots.acdc_night", "data.roots.acdc_snow", "data.roots.acdc_rain", "data.roots.acdc_fog"]


def test_explain_credits_a_former_key_to_the_layer_that_set_it():
    """A file's `train: {amp: true}` (read as precision bf16, with a FutureWarning) was explained as
    `bf16 │ engine default`."""
    text = "name: amp\nbase:\n  train: {amp: true}\ngrid: {style.mix: [true]}\ndomains: [C]\n"
    with pytest.warns(FutureWarning, match="train.amp is replaced by train.precision"):
        rs, trials = _resolve(text)
    p = explain_key(rs, trials[0], "train.precision")
    assert (p.value, p.layer) == ("bf16", "p.yaml: base")
    p = explain_key(rs, trials[0], "eval.precision")
    assert (p.value, p.layer) == ("fp32", "engine default")  # amp was train's alone


MISSING_SWEEP = """\
name: giv
base:
  train: {iterations: 40}
grid:
  style.mix: [true, false]
domains: [C]
profiles:
  smoke:
    base: {train: {iterations: '???'}, model: {freeze: '???'}}
"""


def test_a_value_still_to_give_is_asked_for_not_dropped(capsys):
    """``???`` in a profile over the file's base: OmegaConf's merge kept the base's 40, silently, and
    --explain credited it to the profile. Now the command line must give it, or a grid value."""
    with pytest.raises(SweepError) as e:
        _resolve(MISSING_SWEEP)
    assert str(e.value) == ("p.yaml: profiles.smoke.base.model.freeze, profiles.smoke.base.train.iterations: ??? (a value still to give) "
                            "was not given; give them on the command line: model.freeze=… train.iterations=…")  # fmt: skip
    rs, trials = _resolve(MISSING_SWEEP, overrides=["train.iterations=7", "model.freeze=none"])
    assert {(t.config.train.iterations, t.config.model.freeze) for t in trials} == {(7, "none")}
    assert explain_rows(rs, trials, "train.iterations") == [("train.iterations", "all", "7", "command line")]
    # a grid value gives it: to every trial, or a trial it leaves is named
    text = MISSING_SWEEP.replace("model: {freeze: '???'}", "model: {freeze: '???'}, mining: {steps: '???'}")
    given = text.replace("style.mix: [true, false]", "model.freeze: [none, paper]")
    _, trials = _resolve(given, overrides=["train.iterations=7", "mining.steps=3"])
    assert [t.config.model.freeze for t in trials] == ["none", "paper"]
    partly = text.replace("style.mix: [true, false]", "model: [{freeze: paper}, {backbone: RN50}]")
    with pytest.raises(SweepError, match=r'p.yaml: trial 2 \(model=\{"backbone": "RN50"\}\): model.freeze: \?\?\? \(a value still to give\) was not given: '
                                         r"this trial's grid/zip values leave it; set it in base, or in each of those values$"):
        _resolve(partly, overrides=["train.iterations=7", "mining.steps=3"])
    _write(MISSING_SWEEP)
    assert main(["sweep", "plan", "p.yaml", "--run-dir", "runs"]) == 2
    assert capsys.readouterr().err == f"famix: error: {e.value}\n"


@pytest.mark.parametrize(
    ("text", "overrides", "message"),
    [
        # a rule across keys (select needs val_every) waits for the value to give, on the command line or in the grid
        ("base: {train: {select: best_source_val, val_every: '???'}}\ngrid: {style.mix: [true]}", ["train.val_every=2"], None),
        ("base: {train: {select: best_source_val, val_every: '???'}}\ngrid: {train.val_every: [2, 4]}", [], None),
        ("base: {train: {select: best_source_val, val_every: '???'}}\ngrid: {style.mix: [true]}", [],
         "p.yaml: base.train.val_every: ??? (a value still to give) was not given; give it on the command line: train.val_every=…"),
        # the synthetic benchmark's folder is the plan's: a data.root to give is not asked for
        ("base: {data: {root: '???'}}\ngrid: {style.mix: [true]}", [], None),
        ("base: {data: {root: '???'}}\ngrid: {style.mix: [true]}", ["~data.root", "data.synthetic=null"], None),
        ("base: {data: {root: '???'}}\ngrid: {style.mix: [true]}", ["data.synthetic=null"],
         "p.yaml: base.data.root: ??? (a value still to give) was not given; give it on the command line: data.root=…"),
        ("base: {model: '???'}\ngrid: {style.mix: [true]}", ["model.freeze=none"],
         "p.yaml: base.model: ??? stands for one value, not a section; write it at each key to give (e.g. model.backbone: ???)"),
        ("grid: {model.freeze: [none, '???']}", [],
         "p.yaml: grid.model.freeze[1]: ??? is not a value to try; list the values the sweep varies model.freeze over"),
        ("base: b.yaml\nprofiles: {smoke: {base: {model: {freeze: '???'}}}}\ngrid: {style.mix: [true]}", [],
         "p.yaml: profiles.smoke.base.model.freeze; b.yaml: train.iterations: ??? (a value still to give) was not given; "
         "give them on the command line: model.freeze=… train.iterations=…"),
    ],
    ids=["rule-given", "rule-grid", "rule-asked", "synthetic-root", "root-deleted", "real-root", "section", "grid-value", "base-file"],
)
def test_a_value_still_to_give_where_the_plan_grid_or_a_base_file_has_a_say(text, overrides, message):
    Path("b.yaml").write_text("data: {root: '???'}\ntrain: {iterations: '???'}\n")
    text = "name: giv\ndomains: [C]\n" + text
    if message is None:
        assert _resolve(text, overrides=overrides)[1]
        return
    with pytest.raises(FamixError) as e:  # SweepError, or the config layer's ConfigError
        _resolve(text, overrides=overrides)
    assert str(e.value) == message
