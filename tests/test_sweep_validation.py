"""Sweep-file mistakes that used to pass the plan (and broke a table, results.csv or the run later),
or were blamed on the wrong place: each is ONE line naming the file, the dotted path and what was
expected, exit 2, and nothing is written."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from orchestrator.__main__ import main

HEAD = "name: v\ndomains: [C, B]\n"


def _write(text: str, name: str = "x.yaml") -> Path:
    p = Path("sweeps") / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(textwrap.dedent(text))
    return p


def _one_line(capsys, *args: str) -> str:
    """The error line of ``famix sweep <args>``, which must exit 2 having written nothing."""
    rc = main(["sweep", *args, "--run-dir", "out"])
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert not Path("out").exists()
    return lines[0]


def _plan_error(capsys, text: str) -> str:
    return _one_line(capsys, "plan", str(_write(HEAD + text)))


RESERVED = "(reserved, in any case: trial, trial_index, seed, status, run_id, train_key, mean, n, domain, miou; also with _std, _mark, _partial); choose another name"

LABEL_CASES = {
    # two varied keys in one column: the table showed one key's values under both
    "two labels, one column": (
        "grid: {model.freeze: [none, paper], style.mix: [false, true]}\n"
        "labels: {model.freeze: {column: Freeze}, style.mix: {column: Freeze}}\n",
        "labels.style.mix.column: column 'Freeze' is already used by labels.model.freeze.column; each varied key or zip group needs its own column",
    ),
    "a label in a zip group's column": (
        "grid: {style.mix: [false, true]}\n"
        "zip: [{column: Method, names: [A, B], values: {style.strategy: [none, famix]}}]\n"
        "labels: {style.mix: {column: Method}}\n",
        "labels.style.mix.column: column 'Method' is already used by zip[0].column; each varied key or zip group needs its own column",
    ),
    "a label in an unlabelled key's column": (
        "grid: {style.mix: [false, true], model.freeze: [none, paper]}\nlabels: {model.freeze: {column: style.mix}}\n",
        "labels.model.freeze.column: column 'style.mix' is already used by grid.style.mix; each varied key or zip group needs its own column",
    ),
    # reserved names: results.csv / famix report crashed after every stage had run
    **{
        f"label column {c}": (
            f"grid: {{style.mix: [false, true]}}\nlabels: {{style.mix: {{column: {c}}}}}\n",
            f"labels.style.mix.column: the results have a column {c!r} of their own {RESERVED}",
        )
        for c in ("seed", "status", "n", "Mean", "Seed", "trial", "miou", "Mean_std")
    },
    # summary.csv's Δ overwrote a label column named delta (its labels read 0.0, 5.0); Delta sits beside it
    **{
        f"label column {c}": (
            f"grid: {{style.mix: [false, true]}}\nlabels: {{style.mix: {{column: {c}}}}}\n",
            f"labels.style.mix.column: a report's summary.csv or source.csv has a column {c!r} of its own (reserved as "
            "written: delta, source_val, drop, kept; also with _std); choose another name",
        )
        for c in ("delta", "source_val", "drop", "kept_std")
    },
    "zip column seed": (
        "zip: [{column: seed, names: [A, B], values: {style.strategy: [none, famix]}}]\n",
        f"zip[0].column: the results have a column 'seed' of their own {RESERVED}",
    ),
    "label column C": (
        "grid: {style.mix: [false, true]}\nlabels: {style.mix: {column: C}}\n",
        "labels.style.mix.column: the results have a column 'C' for the domain cityscapes; choose another name",
    ),
    "label column AN": (
        "grid: {style.mix: [false, true]}\nlabels: {style.mix: {column: AN}}\n",
        "labels.style.mix.column: the results have a column 'AN' for the domain acdc_night; choose another name",
    ),
    "zip column C": (
        "zip: [{column: C, names: [A, B], values: {style.strategy: [none, famix]}}]\n",
        "zip[0].column: the results have a column 'C' for the domain cityscapes; choose another name",
    ),
    "label column a domain's name": (
        "grid: {style.mix: [false, true]}\nlabels: {style.mix: {column: cityscapes}}\n",
        "labels.style.mix.column: the results have a column 'cityscapes' for the domain cityscapes (C); choose another name",
    ),
    # rows that could not be told apart
    "two values shown alike": (
        "grid: {style.mix: [false, true]}\nlabels: {style.mix: {column: Mix, values: {false: x, true: x}}}\n",
        "labels.style.mix.values.true: shown as 'x', as false is; each value needs its own text, or its rows could not be told apart",
    ),
    "a shown text equal to another value": (
        "grid: {style.mix: [false, true]}\nlabels: {style.mix: {column: Mix, values: {false: 'true'}}}\n",
        "labels.style.mix.values.true: shown as 'true', as false is; each value needs its own text, or its rows could not be told apart",
    ),
    "zip names twice": (
        "zip: [{column: Method, names: [a, a], values: {style.strategy: [none, famix]}}]\n",
        "zip.0: names[1]: 'a' again (also names[0]); each point needs its own name, or its rows could not be told apart",
    ),
}


@pytest.mark.parametrize("text,message", list(LABEL_CASES.values()), ids=list(LABEL_CASES))
def test_label_columns_that_clash_or_are_reserved_are_refused_at_plan_time(capsys, text, message):
    assert _plan_error(capsys, text) == f"famix: error: sweeps/x.yaml: {message}"


def test_a_zip_key_that_takes_a_value_twice_and_summary_like_columns_plan(capsys):
    """A labelled zip key may take one value at several points (mix off for two methods, on for two);
    a first version of the 'shown alike' check refused it. Columns named like a report summary's
    (Drop, Kept, Delta) sit beside them in source.csv and summary.csv, and are allowed."""
    text = (
        "zip: [{column: Method, names: [Plain, MixStyle, Noise, FAMix],\n"
        "       values: {style.strategy: [none, mixstyle, noise, famix], style.mix: [false, true, false, true]}}]\n"
        "labels: {style.mix: {column: Drop, values: {false: 'no', true: 'yes'}}}\n"
    )
    assert main(["sweep", "plan", str(_write(HEAD + text)), "--run-dir", "out"]) == 0, capsys.readouterr().err


def test_a_label_column_taken_twice_is_refused_where_distinct_ones_plan(capsys):
    text = (
        "grid: {model.freeze: [none, paper], style.mix: [false, true]}\n"
        "zip: [{column: Method, names: [Plain, FAMix], values: {style.strategy: [none, famix]}}]\n"
        "labels: {model.freeze: {column: Freeze, values: {none: '✗', paper: '✓'}}, style.mix: {column: Mixed}}\n"
    )
    assert main(["sweep", "plan", str(_write(HEAD + text)), "--run-dir", "out"]) == 0
    out = capsys.readouterr().out
    assert "Freeze" in out and "Mixed" in out and "Method" in out and "8 trials" in out
    line = _plan_error(capsys, text.replace("column: Mixed", "column: Freeze"))
    assert line == (
        "famix: error: sweeps/x.yaml: labels.style.mix.column: column 'Freeze' is already used by "
        "labels.model.freeze.column; each varied key or zip group needs its own column"
    )


TWICE_CASES = {
    # the grid's value was dropped, silently
    "grid and zip": (
        "grid: {style.mix: [false]}\nzip: [{values: {style.mix: [true]}}]\n",
        "zip[0].values.style.mix: style.mix is already varied by grid.style.mix; a key varies in the grid or in one zip group, never both",
    ),
    # "duplicate grid point" named neither place
    "grid and zip, same values": (
        "grid: {style.mix: [false, true]}\nzip: [{values: {style.mix: [false, true]}}]\n",
        "zip[0].values.style.mix: style.mix is already varied by grid.style.mix; a key varies in the grid or in one zip group, never both",
    ),
    "two zip groups": (
        "zip:\n  - values: {style.mix: [false, true]}\n  - values: {style.mix: [true, false], style.augment: [true, false]}\n",
        "zip[1].values.style.mix: style.mix is already varied by zip[0].values.style.mix; a key varies in the grid or in one zip group, never both",
    ),
    "a profile's grid and a zip": (
        "zip: [{values: {style.mix: [true]}}]\nprofiles: {smoke: {grid: {style.mix: [false]}}}\n",
        "zip[0].values.style.mix: style.mix is already varied by profiles.smoke.grid.style.mix; a key varies in the grid or in one zip group, never both",
    ),
}


@pytest.mark.parametrize("text,message", list(TWICE_CASES.values()), ids=list(TWICE_CASES))
def test_a_key_varied_in_two_places_names_both(capsys, text, message):
    assert _plan_error(capsys, text) == f"famix: error: sweeps/x.yaml: {message}"


PROFILE_CASES = {
    "grid key": ("grid: {style.mixx: [true]}", "profiles.smoke.grid.style.mixx: unknown key (did you mean style.mix?)"),
    "grid value": ("grid: {style.mix: [true, 3]}", "profiles.smoke.grid.style.mix[1]: style.mix: Input should be a valid boolean, unable to interpret input"),
    "domain": ("domains: [Q]", "profiles.smoke.domains[0]: unknown domain 'Q' (known: "),
    "backend": ("backend: {kind: lokal}", "profiles.smoke.backend.kind: unknown backend 'lokal' (known: local, ray, slurm) (did you mean local?)"),
    "tracking": ("tracking: {writer: x}", "profiles.smoke.tracking.writer: Input should be 'auto', 'stages' or 'driver'"),
    # named the top-level seeds, which the file did not have
    "seeds": ("seeds: [0, 0]", "profiles.smoke.seeds: duplicate seeds in [0, 0]"),
}


@pytest.mark.parametrize("block,message", list(PROFILE_CASES.values()), ids=list(PROFILE_CASES))
def test_a_mistake_in_a_profile_names_its_path_in_the_profile(capsys, block, message):
    line = _plan_error(capsys, f"grid: {{style.mix: [false, true]}}\nprofiles: {{smoke: {{{block}}}}}\n")
    assert line.startswith(f"famix: error: sweeps/x.yaml: {message}"), line


def test_a_slurm_mistake_is_named_in_the_profile_or_the_top_level_where_it_is_written(capsys):
    profile = "profiles: {smoke: {backend: {slurm: {time: 5}}}}\n"
    line = _plan_error(capsys, "grid: {style.mix: [true]}\nbackend: {slurm: {partitoin: gpu}}\n" + profile)
    assert line.startswith("famix: error: sweeps/x.yaml: backend.slurm.partitoin: unknown option"), line
    line = _plan_error(capsys, "grid: {style.mix: [true]}\nbackend: {slurm: {partition: gpu}}\n" + profile.replace("time: 5", "time: -5"))
    assert line.startswith("famix: error: sweeps/x.yaml: profiles.smoke: backend.slurm.time: "), line


BASE_CASES = {
    "unknown key": ("train: {iteratons: 3}\n", "sweeps/cfg/b1.yaml: train.iteratons: unknown key (did you mean train.iterations?)"),
    "bad value": ("model: {freeze: nope}\n", "sweeps/cfg/b1.yaml: model.freeze: unknown freeze policy 'nope' (known: none, layer3, paper, all)"),
    "invalid YAML": ("train: [1\n", "sweeps/cfg/b1.yaml: invalid YAML (line 2, column 1)"),
    "not a mapping": ("- 1\n", "sweeps/cfg/b1.yaml: <root>: expected a config mapping"),
    # was "sweeps/cfg/b1.yaml: name: unknown key (+1 more)", naming neither the sweep file nor its base key
    "a sweep file": ("name: other\ngrid: {style.mix: [true]}\n", "sweeps/x.yaml: base: cfg/b1.yaml is a sweep file (it has name and"
                     " grid), not a config; expected a YAML config file (model, style, mining, data, train, eval) or a mapping"),
}


@pytest.mark.parametrize("base,message", list(BASE_CASES.values()), ids=list(BASE_CASES))
def test_a_mistake_in_a_base_file_names_that_file_and_its_key(capsys, base, message):
    _write(base, "cfg/b1.yaml")
    line = _plan_error(capsys, "base: cfg/b1.yaml\ngrid: {style.mix: [false, true]}\n")
    assert line.startswith(f"famix: error: {message}"), line


@pytest.mark.parametrize("action", ["plan", "run"])
@pytest.mark.parametrize(
    "arg,message",
    [
        ("", "'': an empty sweep argument; expected a sweep file or a name in sweeps/ (e.g. sweeps/ablation.yaml or ablation)"),
        ("  ", "'  ': an empty sweep argument; expected a sweep file or a name in sweeps/ (e.g. sweeps/ablation.yaml or ablation)"),
        ("a" * 300, "a" * 40 + "… (300 characters): not a sweep file: File name too long"),
        (".", ".: a folder; expected a sweep YAML file (e.g. sweeps/ablation.yaml)"),
    ],
    ids=["empty", "blank", "300 characters", "dot"],
)
def test_an_empty_or_overlong_sweep_argument_is_one_line(capsys, action, arg, message):
    assert _one_line(capsys, action, arg) == f"famix: error: {message}"


@pytest.mark.parametrize("command", [["sweep", "plan"], ["sweep", "run"], ["sweep", "status"], ["report"]])
def test_an_override_before_the_sweep_file_says_the_file_comes_first(capsys, command):
    """Was `train.iterations=5: sweep file not found (looked as given and in …)` (report: `y.yaml: overrides
    need a sweep file; 'train.iterations=5' is a sweep name without one`)."""
    sweep = str(_write(HEAD + "grid: {style.mix: [true]}\n"))
    assert main([*command, "train.iterations=5", sweep, "--run-dir", "out"]) == 2
    assert capsys.readouterr().err == ("famix: error: train.iterations=5: an override where the sweep file was expected; the sweep"
                                       " file comes first, then key=value items (e.g. sweeps/ablation.yaml train.iterations=5)\n")
    assert not Path("out").exists()


@pytest.mark.parametrize("dash", ["\u2014", "\u2013-", "\u2212\u2212"])
def test_an_option_pasted_with_a_typographic_dash_is_named_as_one(capsys, dash):
    """`—profile paper` (an em dash from a document) read as an override: `expected key=value, +key=value or ~key`."""
    sweep = str(_write(HEAD + "grid: {style.mix: [true]}\n"))
    with pytest.raises(SystemExit) as exit_:
        main(["sweep", "plan", sweep, f"{dash}profile", "paper", "--run-dir", "out"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert err.startswith(f"famix sweep: error: {dash}profile: begins with a typographic dash (pasted from a document?); an option"
                          " begins with two hyphens: --profile"), err
    assert err.count("\n") == 1 and not Path("out").exists()


@pytest.mark.parametrize("argv, command, where", [
    (["sweep", "report", "ablation"], "famix sweep", "famix report"),
    (["plan", "ablation"], "famix", "famix sweep plan"),
    (["data", "pretrain-clip"], "famix data", "famix pretrain-clip"),
])
def test_an_action_given_to_another_command_says_where_it_is(capsys, argv, command, where):
    """`famix sweep report` (by analogy with plan, run and status) said only `invalid choice: 'report'`."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1
    assert err.startswith(f"{command}: error: argument ") and f"(did you mean '{where}'?) (see '{command} --help')" in err, err


def test_a_misspelt_action_gets_no_other_commands_hint(capsys):
    with pytest.raises(SystemExit):
        main(["sweep", "plna", "ablation"])
    assert "did you mean" not in capsys.readouterr().err


@pytest.mark.parametrize("override, hint", [
    ("train.amp=true", " (did you mean train.precision?)"),  # was "did you mean train?"
    ("+train.amp=true", " (did you mean train.precision?)"),
    ("mining.amp=true", " (did you mean mining.prompt?)"),  # only train.precision was amp once
    ("amp=true", ""),
])
def test_the_former_train_amp_on_a_sweeps_command_line_names_its_key_now(capsys, override, hint):
    key = override.lstrip("+").split("=")[0]
    sweep = str(_write(HEAD + "grid: {style.mix: [true]}\n"))
    assert _one_line(capsys, "plan", sweep, override) == f"famix: error: command line: {key}: unknown key{hint}"


def test_a_sweep_name_over_100_characters_is_refused_before_anything_runs(capsys):
    text = "grid: {style.mix: [false, true]}\ndomains: [C]\n"
    line = _one_line(capsys, "run", str(_write(f"name: {'n' * 260}\n{text}")))
    assert line == "famix: error: sweeps/x.yaml: name: 260 characters; at most 100 (the name is a folder, <run_dir>/<name>/, and an MLflow experiment)"
    assert main(["sweep", "plan", str(_write(f"name: {'n' * 100}\n{text}")), "--run-dir", "out"]) == 0  # the limit itself passes


@pytest.mark.parametrize("name, what", [
    ("mlflow.db", "MLflow database"), ("mlflow.db-wal", "MLflow database"), ("store", "folder"), ("data", "folder"),
    ("work", "folder"), ("mlartifacts", "folder"), ("Store", "folder"), ("MLflow.db", "MLflow database"),
])  # fmt: skip
def test_a_sweep_named_like_an_entry_of_the_run_dir_is_refused(capsys, name, what):
    """`name: mlflow.db` passed the plan and crashed `run` on the file; `name: store` or `data` ran
    and wrote the sweep's plan, results and report among the stages or the benchmark; so would `Store`
    on a filesystem that ignores case."""
    text = "grid: {style.mix: [false, true]}\ndomains: [C]\n"
    line = _one_line(capsys, "run", str(_write(f"name: {name}\n{text}")))
    where = "" if name == name.lower() else ", where case is ignored (macOS, Windows)"
    assert line == (f"famix: error: sweeps/x.yaml: name: '{name}' is the name of the run dir's own {what} (<run_dir>/{name.lower()}){where},"
                    " not free for a sweep's; choose another name")  # fmt: skip
    assert main(["sweep", "plan", str(_write(f"name: stores\n{text}")), "--run-dir", "out"]) == 0


@pytest.mark.parametrize("text, line", [
    ("grid:\n  [a]: [1]\n", "line 4: a list or mapping used as a key; keys are plain names (e.g. style.mix)"),
    ("grid:\n  1: [a]\n", "grid.1: a key that is not a name (got int 1); keys are names (e.g. style.mix)"),
    ("base: ''\ngrid:\n  style.mix: [true]\n", "base: an empty path; expected a YAML config file (relative to this file) or a mapping"),
], ids=["list-as-key", "number-as-key", "empty-base"])  # fmt: skip
def test_a_key_that_is_no_name_or_an_empty_base_path_is_said_plainly(capsys, text, line):
    """A list used as a key read `invalid YAML tag 'found unhashable key'`, a number `grid.1.[key]:
    Input should be a valid string`, and `base: ''` `base:  is a folder`."""
    assert _plan_error(capsys, text).endswith(f"x.yaml: {line}")



@pytest.mark.parametrize("address", ['""', "'  '"])
def test_an_empty_ray_address_is_refused_not_read_as_in_process(capsys, address):
    """`ray: {address: ""}` (an unset environment variable, a template left blank) planned and ran on an
    in-process Ray instead of the cluster that was meant."""
    line = _plan_error(capsys, f"grid: {{style.mix: [false, true]}}\nbackend: {{kind: ray, ray: {{address: {address}}}}}\n")
    assert line == ("famix: error: sweeps/x.yaml: backend.ray.address: expected a cluster address (auto, host:port or ray://host:port), "
                    "got an empty string; leave address out (or null) for in-process Ray")  # fmt: skip


def test_a_report_of_a_sweep_whose_grid_the_engine_refuses_says_so_once(capsys):
    """With the sweep's folder in the run dir, `famix report` printed the mistake twice: as a note that
    the MLflow ingestion was skipped, then as the command's error."""
    sweep = _write(HEAD + "grid: {train.iterations: [5, -1]}\n")
    Path("runs/v").mkdir(parents=True)
    rc = main(["report", str(sweep), "--run-dir", "runs"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == 2 and err == [
        "famix: error: sweeps/x.yaml: grid.train.iterations[1]: train.iterations: Input should be greater than or equal to 1 (got -1)"
    ]


@pytest.mark.parametrize("action", ["plan", "run"])
@pytest.mark.parametrize(
    "override,message",
    [
        # `run` drew the 8 MB benchmark in the run dir, then named its generated folders, not the key
        ("eval.split=test", "eval.split=test: the synthetic benchmark has no test split of cityscapes, bdd100k (it writes"
         " the val split of every domain, and the train split of gta5, synthia and cityscapes); expected eval.split=val,"
         " or real data in data.roots"),
        ("eval.split=train", "eval.split=train: the synthetic benchmark has no train split of bdd100k (it writes"),
        # passed the plan; `run` refused it only once the run dir and the benchmark were made
        ("data.split_file=nolist.txt", "data.split_file: file not found: {cwd}/nolist.txt (expected file stems, one per line)"),
    ],
)
def test_data_the_settings_cannot_give_is_refused_before_anything_is_made(capsys, action, override, message):
    line = _one_line(capsys, action, str(_write(HEAD + "grid: {style.mix: [false, true]}\n")), override)
    assert line.startswith(f"famix: error: {message.format(cwd=Path.cwd())}"), line


@pytest.mark.parametrize("item,near,by", [("~train.nope", "train.seed", "seeds"), ("train.seeds=[1]", "train.seed", "seeds"),
                                          ("eval.domain=[C]", "eval.domains", "domains")])
def test_an_unknown_key_near_one_the_sweep_sets_says_where_that_one_comes_from(capsys, item, near, by):
    """`~train.nope` got a bare "did you mean train.seed?", a key the sweep's seeds set and an override may not."""
    sweep = str(_write(HEAD + "grid: {style.mix: [true]}\n"))
    key = item.lstrip("~").split("=")[0]
    line = _one_line(capsys, "plan", sweep, item)
    assert line.startswith(f"famix: error: command line: {key}: unknown key (did you mean {near}? it is set in every trial by"
                           f" the sweep's {by}: list; list the"), line
