"""The one config layer (famix_core.config_io): overrides, one-line errors, canonical hash, atomic folder commit.

Also the regression guard for stage keys and trial ids: a run directory made before a change
of the config layer must find its finished stages under the same keys.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.__main__ import main
from famix_core.config import load_config
from famix_core.config_io import Override, apply_overrides, canonical_hash, merge, parse_overrides, read_yaml
from famix_core.errors import ConfigError
from famix_core.io import commit_dir, file_in_the_way, make_temp_dir, what_blocks
from orchestrator.keys import FORMAT_VERSION
from orchestrator.plan import build_plan
from orchestrator.sweep import load_sweep, resolve_profile, resolve_sweep_path

REPO = Path(__file__).resolve().parent.parent

# ----------------------------------------------------------------------------------------------- keys

# Recorded from the code before the config layer was unified (FORMAT_VERSION 2): first and last
# trial ids, the first mine key, and the last trial's train and Cityscapes evaluate keys, with the
# plan built in /runs/famix (paper: data.root=/datasets/famix). A change here re-runs finished stages.
# The smoke rows were re-recorded when the smoke profile moved to a one-epoch bank, and again for
# 400 iterations and the famix-synth weights of 1,500 pretraining steps (the weights' hash is in the keys),
# and again for the 128x256 images.
PINNED = {
    ("ablation", "smoke"): (8, "t-ec8269411e71", "t-c8924e1fb0fa",
                            "340cda7e20c04eaf80c066471b1bc7dcefb787589dd5ed3c849246e517c2d6f7",
                            "bcb0dcec6d746d72a6a069e021630d13dd958b9879261000e05b47488006cbc7",
                            "2ab4282555948a422823da80c8d8992ec4e436e60e07cde208f4a2d5f3b6cdfb"),
    ("ablation", "paper"): (24, "t-8d3689488f6f", "t-add76bf5ed89",
                            "f311e918f1b1edb3a4800496bdd4d65b5a8d982e0c29667430968497ee135aeb",
                            "c2956b63394a7d1a62b8e31c1ce3087bd80244ec561f63cb3c7191eef1ce912a",
                            "853312b8c485ba72165a7d33a1f1488248eafaacc1b161e6214f7afd98189f78"),
    ("prompts", "smoke"): (5, "t-a889748b2146", "t-c8924e1fb0fa",
                           "e20602ba8885956bff1687b98f74d44964b997831c978cadb47fd21be5f7b425",
                           "bcb0dcec6d746d72a6a069e021630d13dd958b9879261000e05b47488006cbc7",
                           "2ab4282555948a422823da80c8d8992ec4e436e60e07cde208f4a2d5f3b6cdfb"),
    ("prompts", "paper"): (15, "t-77378076a79c", "t-add76bf5ed89",
                           "3e9db6f5d83712c0c4f21c8f057852e4fcb19fa0a8ac8e11b76bc4787284b34d",
                           "c2956b63394a7d1a62b8e31c1ce3087bd80244ec561f63cb3c7191eef1ce912a",
                           "853312b8c485ba72165a7d33a1f1488248eafaacc1b161e6214f7afd98189f78"),
    ("baselines", "smoke"): (4, "t-81b4578efe65", "t-c8924e1fb0fa",
                             "340cda7e20c04eaf80c066471b1bc7dcefb787589dd5ed3c849246e517c2d6f7",
                             "bcb0dcec6d746d72a6a069e021630d13dd958b9879261000e05b47488006cbc7",
                             "2ab4282555948a422823da80c8d8992ec4e436e60e07cde208f4a2d5f3b6cdfb"),
    ("baselines", "paper"): (12, "t-1b2fe02df048", "t-add76bf5ed89",
                             "f311e918f1b1edb3a4800496bdd4d65b5a8d982e0c29667430968497ee135aeb",
                             "c2956b63394a7d1a62b8e31c1ce3087bd80244ec561f63cb3c7191eef1ce912a",
                             "853312b8c485ba72165a7d33a1f1488248eafaacc1b161e6214f7afd98189f78"),
}  # fmt: skip


@pytest.mark.parametrize(("name", "profile"), list(PINNED), ids=[f"{n}-{p}" for n, p in PINNED])
def test_stage_keys_and_trial_ids_of_existing_run_dirs_stay_valid(name, profile):
    assert FORMAT_VERSION == 2  # a deliberate bump re-keys everything: update the pins with it
    spec, src = load_sweep(resolve_sweep_path(name, search=[REPO / "sweeps"]))
    over = parse_overrides(["data.root=/datasets/famix"] if profile == "paper" else [])
    rs = resolve_profile(spec, src, profile, over)
    plan = build_plan(rs, "/runs/famix", check_data=lambda c: None, check_weights=lambda c: None)
    n, first, last, mine, train, evaluate = PINNED[(name, profile)]
    ids = [t.id for t in plan.trials]
    assert (len(ids), ids[0], ids[-1]) == (n, first, last)
    ts_first, ts_last = plan.trial_stages[first], plan.trial_stages[last]
    assert (ts_first.mine or ts_last.mine) == mine
    assert (ts_last.train, ts_last.evaluate["C"]) == (train, evaluate)
    # where the plan puts the synthetic benchmark: data/synth-<canonical hash of data.synthetic, 10 hex>
    # (it was synth-fae4b35ee5 before the hash was unified; stage keys never depend on the folder)
    roots = {t.config.data.root for t in plan.trials}
    assert roots == ({"/runs/famix/data/synth-23a2d80154"} if profile == "smoke" else {"/datasets/famix"})


def test_canonical_hash_is_sha256_of_sorted_compact_ascii_json():
    obj = {"b": [1, 2.5, None], "a": {"é": True}}
    want = hashlib.sha256(b'{"a":{"\\u00e9":true},"b":[1,2.5,null]}').hexdigest()
    assert canonical_hash(obj) == want
    assert canonical_hash({"a": {"é": True}, "b": [1, 2.5, None]}) == want  # key order does not matter


# ----------------------------------------------------------------------------------------------- overrides


def test_override_syntax_set_add_delete_lists_and_quotes():
    got = parse_overrides(
        ["train.iterations=10", "+data.roots.AF=/x/acdc", "~eval.max_images", "eval.domains=[C,B]",
         "eval.scales=[1.0, 0.5]", "data.split_file='1.0'", 'model.cache_dir="true"', "data.root=%TMP%", "x.y="]
    )  # fmt: skip
    assert got == [
        Override("set", "train.iterations", 10),
        Override("add", "data.roots.AF", "/x/acdc"),
        Override("delete", "eval.max_images"),
        Override("set", "eval.domains", ["C", "B"]),
        Override("set", "eval.scales", [1.0, 0.5]),
        Override("set", "data.split_file", "1.0"),  # quoted: a string, not a number
        Override("set", "model.cache_dir", "true"),
        Override("set", "data.root", "%TMP%"),  # a plain word YAML refuses stays a string
        Override("set", "x.y", ""),
    ]
    tree = {"eval": {"max_images": 4, "split": "val"}, "data": {"synthetic": None}}
    out = apply_overrides(tree, got)
    assert out["eval"] == {"split": "val", "domains": ["C", "B"], "scales": [1.0, 0.5]}  # max_images deleted
    assert out["data"]["roots"] == {"AF": "/x/acdc"} and out["train"] == {"iterations": 10}
    assert tree["eval"]["max_images"] == 4  # the input is not changed


@pytest.mark.parametrize(
    ("items", "needle"),
    [
        (["eval.scales=[1.0"], "command line: 'eval.scales=[1.0': malformed value"),
        (["data.root='/x"], "command line: \"data.root='/x\": malformed value"),
        (["train.iterations"], "command line: 'train.iterations': expected key=value, +key=value or ~key"),
        (["=3"], "command line: '=3': expected key=value"),
        (["a..b=1"], "command line: 'a..b=1': expected key=value"),
        (["~eval.split=val"], "~key deletes a key and takes no value"),
        (["eval.x=!!python/object/apply:os.system [ls]"], "YAML tags are not allowed"),
    ],
)
def test_malformed_override_is_one_line(items, needle):
    with pytest.raises(ConfigError) as err:
        parse_overrides(items)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_add_needs_a_new_key_and_delete_an_existing_one():
    tree = {"train": {"iterations": 5}, "data": {"root": "/d"}}
    with pytest.raises(ConfigError, match=r"^command line: \+train.iterations: already set; use train.iterations=… to change it$"):
        apply_overrides(tree, parse_overrides(["+train.iterations=6"]))
    with pytest.raises(ConfigError, match=r"^command line: ~eval.split: not set, nothing to delete$"):
        apply_overrides(tree, parse_overrides(["~eval.split"]))
    with pytest.raises(ConfigError, match=r"^command line: data.root.x: data.root is not a mapping"):
        apply_overrides(tree, parse_overrides(["data.root.x=1"]))
    assert apply_overrides(tree, parse_overrides(["~train"])) == {"data": {"root": "/d"}}


def test_a_mapping_value_merges_into_the_section_and_delete_then_set_replaces_it():
    """`model={backbone: RN101}` replaced the section (the profile's weights went with it); as in Hydra it merges."""
    tree = {"model": {"backbone": "famix-tiny", "pretrained": "famix-synth"}, "eval": {"scales": [1.0, 0.5]}}
    merged = apply_overrides(tree, parse_overrides(["model={backbone: RN101, freeze: {layers: 2}}", "eval={scales: [0.5]}"]))
    assert merged == {"model": {"backbone": "RN101", "pretrained": "famix-synth", "freeze": {"layers": 2}}, "eval": {"scales": [0.5]}}
    replaced = apply_overrides(tree, parse_overrides(["~model", "model={backbone: RN101}"]))
    assert replaced["model"] == {"backbone": "RN101"}
    assert apply_overrides(tree, parse_overrides(["model=null"]))["model"] is None  # not a mapping: replaces
    assert tree["model"] == {"backbone": "famix-tiny", "pretrained": "famix-synth"}  # the input is untouched
    # OmegaConf's merge kept the old value under its MISSING marker "???", silently; now "???" replaces it (and is asked for)
    assert apply_overrides(tree, parse_overrides(['model={backbone: "???"}']))["model"]["backbone"] == "???"


@pytest.mark.parametrize(
    ("item", "line"),
    [
        ("model={null: 3}", "command line: model: Incompatible key type 'NoneType' (keys are names, values plain data)"),
        ("model.backbone=${oops", "command line: model.backbone: no viable alternative at input '${oops' "
         "(${…} is an interpolation, which config values do not use)"),
    ],
)
def test_an_override_value_omegaconf_cannot_hold_is_one_line(item, line):
    """A null key or a broken ${…} in a value was an omegaconf traceback."""
    with pytest.raises(ConfigError) as e:
        apply_overrides({"model": {"backbone": "famix-tiny"}}, parse_overrides([item]))
    assert str(e.value) == line


def test_load_config_applies_overrides_over_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train: {iterations: 5, batch_size: 2}\neval: {max_images: 3}\n")
    cfg = load_config(path, ["+train.seed=7", "~eval.max_images", "train.iterations=9", "eval.domains=[C,B]"])
    assert (cfg.train.iterations, cfg.train.batch_size, cfg.train.seed) == (9, 2, 7)
    assert cfg.eval.max_images is None and cfg.eval.domains == ["C", "B"]
    with pytest.raises(ConfigError, match=r"^command line: model.freez: unknown key \(did you mean model.freeze\?\)$"):
        load_config(path, ["model.freez=none"])
    # a key that begins several: all of them, not the closest spelling (it was train.min_lr)
    with pytest.raises(ConfigError, match=r"^command line: train.lr: unknown key \(did you mean train.lr_backbone or train.lr_decoder\?\)$"):
        load_config(path, ["train.lr=0.01"])


def test_config_file_with_a_duplicate_key_is_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  iterations: 5\n  iterations: 6\n")
    with pytest.raises(ConfigError, match=r"c.yaml: line 3: duplicate key 'iterations' \(first at line 2\)"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"^x.yaml: file not found$"):
        read_yaml(tmp_path / "nothere.yaml", "x.yaml")


def test_a_tree_omegaconf_cannot_hold_is_one_line_and_dates_stay_strings(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  null: 1\n")
    with pytest.raises(ConfigError, match=r"c.yaml: model: Incompatible key type 'NoneType' \(config keys are strings"):
        load_config(path)
    path.write_text("model: {cache_dir: 2024-01-01}\n")
    assert load_config(path, ["data.root=2024-02-02"]).model.cache_dir == "2024-01-01"
    assert parse_overrides(["data.root=2024-02-02"])[0].value == "2024-02-02"


def test_a_value_still_to_give_must_be_given(tmp_path):
    """``???`` (OmegaConf's and Hydra's marker of a value still to give) over an earlier value: the
    merge kept the earlier value, silently; a config file holding it trained with a default, or failed
    on '???' as an integer. It must now be given, and the refusal says how."""
    assert merge({"train": {"iterations": 5, "batch_size": 2}}, {"train": {"iterations": "???"}}) == {"train": {"iterations": "???", "batch_size": 2}}
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  iterations: ???\n  batch_size: 2\ndata: {root: '???'}\n")  # as YAML has it: quoted in {…}
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value) == (f"{path}: train.iterations, data.root: ??? (a value still to give) was not given; "
                            "give them on the command line: train.iterations=… data.root=…")  # fmt: skip
    with pytest.raises(ConfigError, match=r"c.yaml: data.root: \?\?\? \(a value still to give\) was not given; give it on the command line: data.root=…$"):
        load_config(path, ["train.iterations=9"])
    cfg = load_config(path, ["train.iterations=9", "data.root=/d"])
    assert (cfg.train.iterations, cfg.train.batch_size, cfg.data.root) == (9, 2, "/d")
    with pytest.raises(ConfigError, match=r"^command line: train.iterations: Input should be a valid integer"):
        load_config(path, ["train.iterations=x", "data.root=/d"])  # the command line's own mistake is its
    path.write_text("train:\n  select: best_source_val\n  val_every: ???\n")  # a rule across keys waits for the value
    with pytest.raises(ConfigError, match=r"c.yaml: train.val_every: \?\?\? \(a value still to give\) was not given; give it on the command line: train.val_every=…$"):
        load_config(path)
    assert load_config(path, ["train.val_every=2"]).train.val_every == 2
    with pytest.raises(ConfigError, match=r"c.yaml: train: select=best_source_val needs val_every"):
        load_config(path, ["~train.val_every"])  # ~ deletes a ??? (back to the default), as any value
    path.write_text("train:\n  iteratons: ???\n")  # a misspelt key is named as one, not asked for
    with pytest.raises(ConfigError, match=r"c.yaml: train.iteratons: unknown key \(did you mean train.iterations\?\)$"):
        load_config(path)
    path.write_text("train:\n  val_crop: ['???', 64]\n")  # a list is one value: pydantic read '???' as an integer
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value) == f"{path}: train.val_crop.0: ??? stands for a whole value, not an item of a list; write train.val_crop: ??? and give the whole list"
    path.write_text("train:\n  val_crp: ['???', 64]\n")  # a misspelt key holding it is named as one first
    with pytest.raises(ConfigError, match=r"c.yaml: train.val_crp: unknown key \(did you mean train.val_crop\?\)$"):
        load_config(path)
    path.write_text("train:\n  val_crop: ???\n")
    assert load_config(path, ["train.val_crop=[32,64]"]).train.val_crop == (32, 64)


def test_merge_mappings_merge_everything_else_replaces():
    a = {"data": {"synthetic": {"seed": 0}, "root": "d"}, "eval": {"scales": [1.0, 0.5]}}
    b = {"data": {"synthetic": None}, "eval": {"scales": [0.5]}}
    assert merge(a, b) == {"data": {"synthetic": None, "root": "d"}, "eval": {"scales": [0.5]}}
    assert a["data"]["synthetic"] == {"seed": 0}


BAD = "eval.scales=[1.0"
LINE = "famix: error: command line: 'eval.scales=[1.0': malformed value (column 17): expected ',' or ']', but got '<stream end>'; quote a string, close a [list]"


@pytest.mark.parametrize(
    "argv",
    [
        ["data", "check", BAD],
        ["data", "bench", BAD],
        ["train", "--out", "out", BAD],
        ["mine-styles", "--out", "out", BAD],
        ["evaluate", "--out", "out", "--weights", "w.safetensors", BAD],
        ["pretrain-clip", "--out", "out", BAD],
        ["sweep", "plan", "ablation", "--run-dir", "runs", BAD],
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_every_command_answers_a_malformed_override_with_the_same_line(capsys, argv):
    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc == 2 and err.strip() == LINE, err
    assert not Path("out").exists() and not Path("runs").exists()


@pytest.mark.parametrize("argv", [["data", "check", BAD], ["train", "--out", "out", BAD], ["sweep", "plan", "ablation", BAD]])
def test_malformed_override_through_python_m(argv):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "orchestrator", *argv], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == LINE and "Traceback" not in proc.stderr


# ----------------------------------------------------------------------------------------------- sweeps


SWEEP = """\
name: s
grid:
  style.mix: [true, false]
base:
  eval: {max_images: 3}
domains: [C]
"""


def test_sweep_overrides_add_and_delete(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text(SWEEP)
    spec, src = load_sweep(p)
    rs = resolve_profile(spec, src, "smoke", parse_overrides(["~eval.max_images", "+model.cache_dir=/c"]))
    plan = build_plan(rs, tmp_path / "runs", check_data=lambda c: None, check_weights=lambda c: None)
    assert all(t.config.eval.max_images is None and t.config.model.cache_dir == "/c" for t in plan.trials)
    from orchestrator.explain import explain_key

    assert explain_key(rs, plan.trials[0], "eval.max_images").layer == "command line (~eval.max_images: engine default)"
    assert explain_key(rs, plan.trials[0], "model.cache_dir").layer == "command line"
    with pytest.raises(ConfigError, match=r"command line: \+train.iterations: already set"):  # the smoke profile sets it
        resolve_profile(spec, src, "smoke", parse_overrides(["+train.iterations=3"]))


# ----------------------------------------------------------------------------------------------- folders


def test_file_in_the_way_of_a_folder(tmp_path):
    """The check behind ``famix sweep``'s and ``famix report``'s ``--run-dir``: a dangling symlink is in the way too."""
    (tmp_path / "afile").write_text("")
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    assert file_in_the_way(tmp_path / "new" / "sub") is None and file_in_the_way(tmp_path) is None
    assert file_in_the_way(tmp_path / "afile") == tmp_path / "afile"
    assert file_in_the_way(tmp_path / "afile" / "sub") == tmp_path / "afile"
    assert file_in_the_way(tmp_path / "dangling" / "sub") == tmp_path / "dangling"
    assert [what_blocks(tmp_path / n) for n in ("afile", "dangling")] == ["a file", "a broken symlink"]


def test_a_run_dir_under_a_broken_symlink_is_named_as_one(tmp_path, capsys):
    """Both `--run-dir` checks said a dangling symlink "is a file"."""
    from orchestrator.__main__ import main

    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    assert main(["sweep", "status", "ablation", "--run-dir", str(tmp_path / "dangling")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"famix: error: {tmp_path / 'dangling'}: the run dir must be a folder, and it is a broken symlink; choose another with --run-dir"
    )
    assert main(["report", "ablation", "--run-dir", str(tmp_path / "dangling" / "x")]) == 2
    assert capsys.readouterr().err.strip().endswith(f"--run-dir {tmp_path / 'dangling' / 'x'}: {tmp_path / 'dangling'} is a broken symlink "
                                                    "(expected a folder, the run directory)")  # fmt: skip
    assert main(["train", "--out", str(tmp_path / "dangling" / "x")]) == 2  # the engine commands' --out
    assert capsys.readouterr().err.strip() == (
        f"famix: error: command line: --out: {tmp_path / 'dangling' / 'x'}: {tmp_path / 'dangling'} is not a folder (a broken symlink)"
    )


# ----------------------------------------------------------------------------------------------- atomic commit


def _folder(parent: Path, text: str) -> Path:
    tmp = make_temp_dir(parent)
    (tmp / "f.txt").write_text(text)
    return tmp


@pytest.mark.parametrize("swap", ["renameat2", "two-renames"])
def test_commit_dir_replaces_debris_keeps_a_complete_winner(tmp_path, monkeypatch, swap):
    if swap == "two-renames":  # a filesystem that cannot swap two paths in one step (NFS)
        import famix_core.io

        monkeypatch.setattr(famix_core.io, "_exchange", lambda a, b: False)
    final = tmp_path / "kind" / "key"
    complete = lambda p: (p / "DONE").is_file()  # noqa: E731

    assert commit_dir(_folder(tmp_path, "one"), final, complete) is True
    assert (final / "f.txt").read_text() == "one"  # debris-free first commit
    (final / "DONE").write_text("")
    tmp = _folder(tmp_path, "two")
    assert commit_dir(tmp, final, complete) is False  # a finished final wins; tmp is cleaned up
    assert (final / "f.txt").read_text() == "one" and not tmp.exists()
    (final / "DONE").unlink()
    assert commit_dir(_folder(tmp_path, "three"), final, complete) is True  # an unfinished one is replaced
    assert (final / "f.txt").read_text() == "three"
    assert commit_dir(_folder(tmp_path, "four"), final) is True  # no completeness test: always replaced
    assert (final / "f.txt").read_text() == "four"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kind"]  # no temp or set-aside folders left


@pytest.mark.parametrize("swap", ["renameat2", "two-renames"])
def test_commit_dir_syncs_the_files_it_commits_before_the_rename_and_the_parent_after(tmp_path, monkeypatch, swap):
    """Files written inside the folder by other writers (PIL's images of the synthetic benchmark, a
    checkpoint) were not fsynced: after a power loss or a node crash, the renamed folder could look
    complete and hold a truncated file."""
    import famix_core.io

    final = tmp_path / "kind" / "key"
    commit_dir(_folder(tmp_path, "old"), final)  # a folder to replace
    tmp = _folder(tmp_path, "new")
    (tmp / "sub").mkdir()
    (tmp / "sub" / "image.png").write_bytes(b"png")
    (tmp / "link").symlink_to("/dev/null")
    events: list[str] = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd):
        events.append("sync " + os.path.relpath(os.readlink(f"/proc/self/fd/{fd}"), tmp_path))
        real_fsync(fd)

    def rename(src, dst):
        events.append("rename")
        real_rename(src, dst)

    def exchange(a, b, real=famix_core.io._exchange):
        events.append("rename")
        return swap == "renameat2" and real(a, b)

    monkeypatch.setattr(famix_core.io.os, "fsync", fsync)
    monkeypatch.setattr(famix_core.io.os, "rename", rename)
    monkeypatch.setattr(famix_core.io, "_exchange", exchange)
    assert commit_dir(tmp, final) is True
    assert (final / "sub" / "image.png").read_bytes() == b"png"
    synced = {e.removeprefix("sync ") for e in events[: events.index("rename")]}
    name = tmp.name
    assert {f"{name}/f.txt", f"{name}/sub/image.png", f"{name}/sub", name} <= synced, events
    assert events[-1] == "sync kind", events  # the rename into the parent is made durable
    assert not any("link" in e for e in events)  # a link is not followed


def test_commit_dir_swaps_a_folder_in_without_a_moment_where_it_is_missing(tmp_path, monkeypatch):
    """Replacing a folder took two renames (the old one aside, the new one in), and between them the
    folder was missing: a reader (a LaTeX build of the report's tables) could find nothing. Where the
    filesystem can swap two paths in one step (Linux's renameat2, RENAME_EXCHANGE), it does so now."""
    import famix_core.io

    final = tmp_path / "report"
    commit_dir(_folder(tmp_path, "old"), final)
    (final / "gone.txt").write_text("of the old one only")
    if not famix_core.io._exchange(_folder(tmp_path, "probe"), _folder(tmp_path, "probe")):
        pytest.skip(f"the filesystem of {tmp_path} cannot swap two paths (renameat2 RENAME_EXCHANGE)")
    for p in tmp_path.iterdir():
        if p != final:
            shutil.rmtree(p)

    def no_rename(src, dst):
        raise AssertionError(f"renamed {src} -> {dst}: the folder went missing for an instant")

    monkeypatch.setattr(famix_core.io.os, "rename", no_rename)
    assert commit_dir(_folder(tmp_path, "new"), final) is True
    assert sorted(p.name for p in final.iterdir()) == ["f.txt"] and (final / "f.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]  # the old one is removed


def test_commit_dir_interrupted_between_its_renames_puts_the_old_folder_back(tmp_path, monkeypatch):
    """Where the filesystem cannot swap (NFS): a Ctrl-C after the old folder was renamed aside and
    before the new one was renamed in removed both (the set-aside folder with the temp one): the
    folder was gone. Now the old one goes back."""
    import famix_core.io

    monkeypatch.setattr(famix_core.io, "_exchange", lambda a, b: False)
    final = tmp_path / "report"
    commit_dir(_folder(tmp_path, "old"), final)
    renames = []
    real_rename = os.rename

    def ctrl_c_on_second(src, dst):
        renames.append(dst)
        if len(renames) == 2:
            raise KeyboardInterrupt
        real_rename(src, dst)

    monkeypatch.setattr(famix_core.io.os, "rename", ctrl_c_on_second)
    with pytest.raises(KeyboardInterrupt):
        commit_dir(_folder(tmp_path, "new"), final)
    monkeypatch.setattr(famix_core.io.os, "rename", real_rename)
    assert (final / "f.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]


def test_resolved_sweep_keeps_overrides_as_written(tmp_path):
    from orchestrator.parent_run import resolved_sweep

    p = tmp_path / "s.yaml"
    p.write_text(SWEEP)
    spec, src = load_sweep(p)
    rs = resolve_profile(spec, src, "smoke", parse_overrides(["train.iterations=7", "~eval.max_images", "+model.cache_dir=/c"]))
    plan = build_plan(rs, tmp_path / "runs", check_data=lambda c: None, check_weights=lambda c: None)
    got = resolved_sweep(plan)["overrides"]
    assert got == {"train.iterations": 7, "~eval.max_images": None, "+model.cache_dir": "/c"}
    json.dumps(got)


def test_cli_takes_delete_overrides_between_options(tmp_path, capsys):
    p = tmp_path / "s.yaml"
    p.write_text(SWEEP)
    argv = ["sweep", "plan", str(p), "--run-dir", "runs", "~eval.max_images", "--explain", "eval.max_images"]
    assert main(argv) == 0
    assert "command line (~eval.max_images: engine default)" in capsys.readouterr().out


def test_building_dir_removes_the_temp_folders_of_killed_builds_and_no_others(tmp_path):
    """A `kill -9` while the synthetic benchmark was drawn left `.synth-<hash>.tmp-<hex>` (6 MB) beside
    it for good, one more per kill: the next build now removes the temp folders whose writer is gone."""
    import os
    import socket

    from famix_core.io import building_dir, owner_tag, process_start

    host, pid = socket.gethostname(), os.getpid()
    final = tmp_path / "synth-1234"
    tmp_path.joinpath("synth-1234").mkdir()
    dead = tmp_path / f".synth-1234.tmp-{host}+{pid}+{process_start(pid) + 1}+0a1b2c"  # this pid, another start: a killed writer's
    kept = [
        tmp_path / f".synth-1234.tmp-{owner_tag()}3d4e5f",  # a live writer's (this process)
        tmp_path / f".synth-1234.tmp-{host}x+1+2+6a7b8c",  # another host's: cannot be told
        tmp_path / ".synth-1234.tmp-0123456789ab",  # no owner in the name
        tmp_path / f".other.tmp-{host}+{pid}+{process_start(pid) + 1}+9d0e1f",  # another folder's
    ]
    for d in (dead, *kept):
        d.mkdir()
        (d / "image.png").write_bytes(b"half")
    with building_dir(final, is_complete=lambda p: False) as tmp:
        assert tmp.name.startswith(f".synth-1234.tmp-{owner_tag()}")
        (tmp / "done").touch()
    assert not dead.exists() and all(d.is_dir() for d in kept) and (final / "done").is_file()


def test_building_dir_commits_on_success_and_leaves_the_old_folder_on_failure(tmp_path, monkeypatch):
    """The benchmark, the caption corpus and every checkpoint are built in a temporary sibling and
    renamed into place: an exception in the build (Ctrl-C included) leaves the old folder and no
    temporary one; a failed rename is a CommitFailed, told apart from a failed write."""
    import famix_core.io
    from famix_core.io import CommitFailed, building_dir

    final = tmp_path / "new" / "corpus"
    with building_dir(final) as tmp:
        assert tmp.parent == final.parent and tmp.name.startswith(".corpus.tmp-")
        (tmp / "f.txt").write_text("one")
    assert (final / "f.txt").read_text() == "one"
    for err in (KeyboardInterrupt(), OSError(28, "No space left on device")):  # the build failed: nothing moves
        with pytest.raises(type(err)) as caught:
            with building_dir(final, prefix=".tmp-") as tmp:
                (tmp / "f.txt").write_text("half")
                raise err
        assert not isinstance(caught.value, CommitFailed)
        assert (final / "f.txt").read_text() == "one" and sorted(p.name for p in final.parent.iterdir()) == ["corpus"]

    def refused(src, dst):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(famix_core.io, "_exchange", lambda a, b: False)
    monkeypatch.setattr(famix_core.io.os, "rename", refused)
    with pytest.raises(CommitFailed) as caught:
        with building_dir(final) as tmp:
            (tmp / "f.txt").write_text("two")
    assert caught.value.strerror == "Permission denied" and caught.value.filename == str(final)
    assert (final / "f.txt").read_text() == "one" and sorted(p.name for p in final.parent.iterdir()) == ["corpus"]
