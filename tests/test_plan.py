"""Stage keys (which config changes invalidate which stage), sharing of stages, the store, plan printing."""

from __future__ import annotations

import io
import json
import socket
from pathlib import Path

import pytest
from rich.console import Console

from famix_core.config import FamixConfig
from orchestrator.checks import WHERE_STAGES_RUN
from orchestrator.keys import FORMAT_VERSION, evaluate_inputs, mine_inputs, stage_key, train_inputs
from orchestrator.plan import build_plan, print_plan
from orchestrator.store import code_version, git_version
from orchestrator.sweep import load_sweep, resolve_profile, resolve_sweep_path

REPO_SWEEPS = Path(__file__).resolve().parent.parent / "sweeps"


def _keys(cfg: FamixConfig, domain: str = "C") -> dict[str, str | None]:
    m = stage_key(mine_inputs(cfg)) if cfg.style.needs_bank() else None
    t = stage_key(train_inputs(cfg, m))
    return {"mine": m, "train": t, "evaluate": stage_key(evaluate_inputs(cfg, t, domain))}


def _cfg(**over) -> FamixConfig:
    tree: dict = {"data": {"synthetic": {"seed": 0}}, "model": {"backbone": "famix-tiny", "pretrained": "none"}}
    for k, v in over.items():
        node = tree
        parts = k.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = v
    return FamixConfig.model_validate(tree)


# change -> set of stages it must invalidate (the others must keep their key)
INVALIDATION = [
    ({"model.freeze": "none"}, {"train", "evaluate"}),
    ({"style.mix": False}, {"train", "evaluate"}),
    ({"mining.prompt": "class"}, {"mine", "train", "evaluate"}),
    ({"mining.steps": 3}, {"mine", "train", "evaluate"}),
    ({"mining.seed": 5}, {"mine", "train", "evaluate"}),
    ({"train.seed": 5}, {"train", "evaluate"}),
    ({"train.iterations": 9}, {"train", "evaluate"}),
    ({"train.lr_decoder": 0.5}, {"train", "evaluate"}),
    ({"train.device": "cpu"}, {"mine", "train", "evaluate"}),
    ({"train.log_every": 7}, set()),
    ({"train.checkpoint_every": 7}, set()),
    ({"train.cpu_fallback": False}, set()),
    ({"train.precision": "bf16"}, {"train", "evaluate"}),
    ({"mining.precision": "bf16"}, {"mine", "train", "evaluate"}),
    ({"mining.epochs": 2}, {"mine", "train", "evaluate"}),
    ({"mining.epochs": 1}, set()),  # the default: banks mined before the field existed keep their key
    ({"eval.precision": "bf16"}, {"evaluate"}),  # whether a GPU-less stage runs, not what it computes
    ({"model.cache_dir": "/somewhere"}, set()),
    ({"eval.max_images": 3}, {"evaluate"}),
    ({"eval.scales": [1.0, 0.5]}, {"evaluate"}),
    ({"eval.batch_size": 4}, set()),
    ({"eval.domains": ["C", "B"]}, set()),  # the list of domains does not change one domain's stage
    ({"data.synthetic": {"seed": 1}}, {"mine", "train", "evaluate"}),
    ({"data.crop_size": 32}, {"train", "evaluate"}),
    ({"data.num_workers": 3}, set()),  # batches do not depend on it (test_train: same weights with 0 and 2 workers)
    ({"model.backbone": "RN50"}, {"mine", "train", "evaluate"}),
    ({"style.grid": 2}, {"mine", "train", "evaluate"}),
    ({"style.alpha": 0.3}, {"train", "evaluate"}),
    ({"style.noise_std": 0.3}, set()),  # not read by the famix strategy
    ({"style.detach_stats": True}, {"train", "evaluate"}),
]


@pytest.mark.parametrize("change,invalidated", INVALIDATION, ids=[next(iter(c)) for c, _ in INVALIDATION])
def test_which_change_invalidates_which_stage(change, invalidated):
    before = _keys(_cfg())
    after = _keys(_cfg(**change))
    changed = {k for k in before if before[k] != after[k]}
    assert changed == invalidated


def test_fields_added_later_key_nothing_at_their_default():
    """mining.epochs=1 (the engine before the field) leaves stage keys and trial ids as they were
    (tests/test_config_io.py pins them); any other value is part of both."""
    from orchestrator.sweep.expand import trial_id

    assert "epochs" not in mine_inputs(_cfg())["mining"]
    assert "epochs" not in _cfg().identity_dict()["mining"] and "epochs" in _cfg().to_dict()["mining"]
    assert mine_inputs(_cfg(**{"mining.epochs": 3}))["mining"]["epochs"] == 3
    assert trial_id(_cfg(**{"mining.epochs": 1})) == trial_id(_cfg()) != trial_id(_cfg(**{"mining.epochs": 3}))
    assert "detach_stats" not in _cfg().identity_dict()["style"] and "detach_stats" in _cfg().to_dict()["style"]
    assert trial_id(_cfg(**{"style.detach_stats": False})) == trial_id(_cfg()) != trial_id(_cfg(**{"style.detach_stats": True}))
    plain = {"style.augment": False, "style.mix": False}  # no style op: nothing to detach, the same training
    assert _keys(_cfg(**plain, **{"style.detach_stats": True}))["train"] == _keys(_cfg(**plain))["train"]


def test_key_depends_on_format_version_and_domain(monkeypatch):
    cfg = _cfg()
    k = _keys(cfg)
    assert _keys(cfg, "B")["evaluate"] != k["evaluate"]
    assert _keys(cfg, "cityscapes") == k  # name and column are the same domain
    monkeypatch.setattr("orchestrator.keys.FORMAT_VERSION", FORMAT_VERSION + 1)
    assert _keys(cfg)["mine"] != k["mine"]


def test_no_bank_no_mine_and_effective_strategy_dedupes():
    plain = _cfg(**{"style.augment": False, "style.mix": False})
    assert _keys(plain)["mine"] is None
    # famix with augment and mix off IS plain training: same train stage as strategy none
    assert _keys(plain)["train"] == _keys(_cfg(**{"style.strategy": "none"}))["train"]
    # mining fields do not matter without a bank
    assert _keys(plain)["train"] == _keys(_cfg(**{"style.augment": False, "style.mix": False, "mining.prompt": "class"}))["train"]


def test_synthetic_location_does_not_change_keys_but_a_real_root_does():
    assert _keys(_cfg(**{"data.root": "/a"})) == _keys(_cfg(**{"data.root": "/b"}))
    real = {"data.synthetic": None}
    assert _keys(_cfg(**real, **{"data.root": "/a"}))["mine"] != _keys(_cfg(**real, **{"data.root": "/b"}))["mine"]
    # a target domain's root changes only that domain's evaluation
    a = _keys(_cfg(**real, **{"data.roots": {"B": "/elsewhere"}}), "C")
    b = _keys(_cfg(**real), "C")
    assert a == b
    assert _keys(_cfg(**real, **{"data.roots": {"B": "/elsewhere"}}), "B")["evaluate"] != _keys(_cfg(**real), "B")["evaluate"]


def _plan(name: str, run_dir: str = "runs", profile: str | None = None, checks: list | None = None):
    spec, src = load_sweep(resolve_sweep_path(name, search=[REPO_SWEEPS]))
    rs = resolve_profile(spec, src, profile)
    seen = checks if checks is not None else []
    return build_plan(rs, run_dir, check_data=lambda c: seen.append(("data", c.data.root)), check_weights=lambda c: seen.append(("w", c.model.pretrained)))


def test_a_recorded_command_is_shown_with_the_run_dir_as_named_from_here(tmp_path, monkeypatch):
    """The note naming the plan whose results a run replaces gave that plan's command as its driver
    wrote it, with the run dir as named from that driver's folder: from another folder it pointed at
    another run dir (`runs` there), and would have run everything again. It is now named from here."""
    monkeypatch.chdir(tmp_path)
    recorded = "ablation --profile smoke train.iterations=200 'domains=[C]'"  # written from the run dir's parent
    here = _plan("ablation", run_dir=str(tmp_path / "ux" / "runs"))
    assert here.from_here(recorded) == f"ablation --profile smoke --run-dir {tmp_path / 'ux' / 'runs'} train.iterations=200 'domains=[C]'"
    assert here.from_here("ablation --profile smoke --run-dir elsewhere/runs") == f"ablation --profile smoke --run-dir {tmp_path / 'ux' / 'runs'}"
    assert _plan("ablation").from_here("ablation --profile smoke --run-dir ../ux/runs eval.max_images=3") == "ablation --profile smoke eval.max_images=3"
    assert here.follows(recorded.replace(" train.iterations=200 'domains=[C]'", ""))  # the same plan, wherever named from
    # a sweep word that does not name this sweep from here (a bare name found in that driver's own
    # sweeps/, a path relative to its folder) is this plan's own
    assert here.from_here("myabl --profile smoke").startswith("ablation --profile smoke --run-dir ")
    assert here.from_here("../proj/sweeps/myabl.yaml --profile paper seeds=[1]").startswith("ablation --profile paper --run-dir ")


def test_the_same_sweep_file_named_by_its_absolute_path_is_the_same_plan(tmp_path, monkeypatch):
    """A sweep file outside ``sweeps/`` is recorded by the path the command gave: run by its absolute
    path and then by a relative one, the second command read the first as "another plan" (a note on
    replaced results, and a killed driver's MLflow runs left running). A recorded relative path was
    written from that driver's folder: from here it may name another file of the same sweep name,
    so only the same words count for it."""
    import shutil

    for folder in ("mine", "other"):
        (tmp_path / folder).mkdir()
        shutil.copy(REPO_SWEEPS / "ablation.yaml", tmp_path / folder / "abl.yaml")  # both `name: ablation`

    def plan(word: str, cwd: str):
        monkeypatch.chdir(tmp_path / cwd)
        spec, src = load_sweep(resolve_sweep_path(word))
        return build_plan(resolve_profile(spec, src, None), "runs", check_data=lambda c: None, check_weights=lambda c: None)

    by_path, relative = plan(str(tmp_path / "mine" / "abl.yaml"), "mine"), plan("abl.yaml", "mine")
    assert by_path.arguments() != relative.arguments()  # each says the sweep as its command named it
    assert relative.follows(by_path.arguments()) and relative.follows(relative.arguments())
    assert not relative.follows(by_path.arguments() + " seeds=[1]")  # other overrides: another plan
    other, other_relative = plan(str(tmp_path / "other" / "abl.yaml"), "other"), plan("abl.yaml", "other")
    monkeypatch.chdir(tmp_path / "mine")  # back here, where `relative` was named
    assert not relative.follows(other.arguments())  # another file, by its absolute path
    # `abl.yaml` recorded by a driver in other/: from mine/ the same words name mine/abl.yaml
    assert not by_path.follows(other_relative.arguments())


def test_a_shared_stage_says_how_many_more_trials_it_serves():
    """The ablation's mining stage showed as `mine [✗,✓,✗]+3 340cda7e` in the progress display and the
    stage lines, with the `+3` unexplained."""
    import re

    from orchestrator.driver import stage_tasks

    plan = _plan("ablation")
    tasks = stage_tasks(plan, {k: "to run" for k in plan.stages}, {}, None, {})
    (mine,) = [t.name for t in tasks if t.kind == "mine"]
    assert re.fullmatch(r"mine \[[^\]]+\] \(\+3 trials\) [0-9a-f]{8}", mine), mine
    assert all(re.fullmatch(r"train \[[^\]]+\] [0-9a-f]{8}", t.name) for t in tasks if t.kind == "train")


def test_ablation_mines_once_prompts_five_times():
    checks: list = []
    plan = _plan("ablation", checks=checks)
    kinds = [s.kind for s in plan.stages.values()]
    assert kinds.count("mine") == 1 and kinds.count("train") == 8 and kinds.count("evaluate") == 64
    mine = next(s for s in plan.stages.values() if s.kind == "mine")
    assert len(mine.trials) == 4  # only the Augment rows need a bank
    assert sum(plan.trial_stages[t.id].mine is None for t in plan.trials) == 4
    # topological order: mines, then trains, then evaluations
    order = [s.kind for s in plan.stages.values()]
    assert order == sorted(order, key=["mine", "train", "evaluate"].index)
    # checks ran once per distinct input, the synthetic data lives under the run dir
    assert checks.count(checks[0]) == 1 and len([c for c in checks if c[0] == "data"]) == 1
    assert all(t.config.data.root.startswith(str(Path("runs").absolute() / "data" / "synth-")) for t in plan.trials)
    assert sum(s.kind == "mine" for s in _plan("prompts").stages.values()) == 5
    paper = _plan("ablation", profile="paper")
    assert sum(s.kind == "mine" for s in paper.stages.values()) == 3  # one bank per seed


def test_plan_checks_report_every_problem_once_and_a_single_one_as_it_is():
    """The data and weights checks run for every distinct input even after one fails; repeated
    messages are named once; one problem keeps its own type and line."""
    from famix_core.errors import DataError, WeightsError
    from orchestrator.errors import InputErrors

    spec, src = load_sweep(resolve_sweep_path("baselines", search=[REPO_SWEEPS]))
    rs = resolve_profile(spec, src, None)
    calls: list[str] = []

    def missing_data(cfg):
        calls.append("data")
        raise DataError("gta5 train: data root not found: /nowhere/gta5")

    def missing_weights(cfg):
        calls.append("weights")
        raise WeightsError(f"model.pretrained: file {cfg.model.pretrained} not found")

    with pytest.raises(InputErrors) as e:
        build_plan(rs, "runs", check_data=missing_data, check_weights=missing_weights)
    lines = str(e.value).splitlines()
    assert lines[0] == "2 problems with the sweep's inputs (nothing was run):"
    assert lines[1].startswith("  model.pretrained: file") and lines[2] == "  gta5 train: data root not found: /nowhere/gta5"
    assert "weights" in calls and calls.count("data") >= 1
    with pytest.raises(DataError, match="^gta5 train: data root not found"):  # alone: the error itself
        build_plan(rs, "runs", check_data=missing_data, check_weights=lambda cfg: None)


def test_store_commit_is_atomic_and_plan_status_follows_it():
    plan = _plan("baselines")
    store = plan.store
    key = next(iter(plan.stages))
    kind = plan.stages[key].kind
    assert plan.status()[key] == "to run"
    tmp = store.begin()
    (tmp / "artifact.txt").write_text("x")
    assert not store.is_done(kind, key)  # nothing visible before the rename
    store.commit(tmp, kind, key, {"miou": 0.5}, 1.0)
    assert store.is_done(kind, key) and not tmp.exists()
    assert store.done_info(kind, key)["result"] == {"miou": 0.5}
    assert plan.status()[key] == "done"
    # a second commit of the same stage (a concurrent worker) keeps the first artifact
    tmp2 = store.begin()
    store.commit(tmp2, kind, key, {"miou": 0.9}, 1.0)
    assert store.done_info(kind, key)["result"] == {"miou": 0.5} and not tmp2.exists()
    # a half-written folder without DONE.json does not count
    half = store.path("train", "f" * 64)
    half.mkdir(parents=True)
    assert not store.is_done("train", "f" * 64)
    assert store.done_info(kind, key)["code"] == code_version()  # the code that computed it


def test_git_version_names_the_commit_and_uncommitted_changes(tmp_path, monkeypatch):
    """What a stored stage records as the code that computed it: the commit, ``-dirty`` when a tracked
    file was changed or a new file sits untracked in a package (an untracked file elsewhere is not the
    code, nor is an ignored one in a package), ``unknown`` outside a git checkout."""
    import subprocess

    def git(*args: str) -> str:
        ident = ["-c", "user.name=t", "-c", "user.email=t@localhost", "-c", "commit.gpgsign=false"]
        return subprocess.run(["git", *ident, *args], cwd=tmp_path, check=True, capture_output=True, text=True).stdout.strip()

    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))  # whatever holds the temp folder
    assert git_version(tmp_path) == "unknown"
    git("init", "-q")
    assert git_version(tmp_path) == "unknown"  # no commit yet
    (tmp_path / "model.py").write_text("x = 1\n")
    git("add", "model.py")
    git("commit", "-q", "-m", "one")
    head = git("rev-parse", "HEAD")
    assert len(head) == 40 and git_version(tmp_path) == head
    (tmp_path / "notes.txt").write_text("untracked")
    assert git_version(tmp_path) == head
    (tmp_path / "model.py").write_text("x = 2\n")
    assert git_version(tmp_path) == f"{head}-dirty"
    git("commit", "-q", "-am", "two")
    head = git("rev-parse", "HEAD")
    assert git_version(tmp_path) == head
    (tmp_path / ".gitignore").write_text("__pycache__/\n")
    git("add", ".gitignore")
    git("commit", "-q", "-m", "ignore")
    head = git("rev-parse", "HEAD")
    package = tmp_path / "famix_core"
    (package / "__pycache__").mkdir(parents=True)
    (package / "__pycache__" / "styles.cpython-311.pyc").write_bytes(b"\0")
    assert git_version(tmp_path) == head  # ignored: not code
    (package / "styles.py").write_text("def mix(): ...\n")  # a new module, not yet added
    assert git_version(tmp_path) == f"{head}-dirty"
    git("add", "famix_core/styles.py")
    assert git_version(tmp_path) == f"{head}-dirty"  # staged, not committed
    git("commit", "-q", "-m", "styles")
    assert git_version(tmp_path) == git("rev-parse", "HEAD") != head


def test_print_plan_shows_labels_and_states():
    plan = _plan("ablation")
    mine_key = next(k for k, s in plan.stages.items() if s.kind == "mine")
    tmp = plan.store.begin()
    plan.store.commit(tmp, "mine", mine_key, {}, 0.1)
    buf = io.StringIO()
    counts = print_plan(plan, Console(file=buf, width=200))
    out = buf.getvalue()
    assert "Freeze" in out and "Augment" in out and "✓" in out and "✗" in out
    assert "done (shared)" in out and "to run" in out and "0/8 done" in out
    assert counts == {"done": 1, "to run": 72}
    path = plan.write()
    data = json.loads(path.read_text())
    assert len(data["trials"]) == 8 and data["trials"][2]["stages"]["mine"] == mine_key


NO_FALLBACK = ("no CUDA device visible and this profile does not fall back to the CPU; "
               "set train.device=cpu to train on this machine's CPU")  # fmt: skip


@pytest.fixture
def gpus(monkeypatch):
    """``gpus(n)``: this machine has ``n`` CUDA devices, as torch sees them (no GPU is touched)."""
    import torch

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)

    def have(n: int) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)

    return have


@pytest.fixture
def gpu_slurm(monkeypatch):
    """Slurm's plan-time check sees one node with 8 CPUs and 4 GPUs, whatever cluster this machine runs (or none)."""
    from orchestrator.backends.slurm import backend
    from orchestrator.backends.slurm.cluster import ClusterShape, Node, Partition

    shape = ClusterShape({"gpu": Partition(default=True, max_time=None, total_nodes=1)}, {"g1": Node(8, 64000, 4, ("gpu",))})
    monkeypatch.setattr(backend, "slurm_available", lambda: None)
    monkeypatch.setattr(backend, "cluster_shape", lambda: shape)


DEVICE_SWEEP = """\
name: dev
grid:
  style.mix: [false, true]
domains: [C]
backend: %s
"""


@pytest.mark.parametrize("n, device, problem", [
    (1, "cuda:1", "this machine has 1 CUDA device (cuda:0); use train.device=auto, cpu or cuda:0"),
    (2, "cuda:2", "this machine has 2 CUDA devices (cuda:0 to cuda:1); use train.device=auto, cpu or cuda:0 to cuda:1"),
    (0, "cuda", "CUDA is not available on this machine; use train.device=auto or cpu"),
    (0, "auto train.cpu_fallback=false", NO_FALLBACK),
], ids=["cuda:1 of one", "cuda:2 of two", "cuda without CUDA", "auto without CPU fallback"])  # fmt: skip
def test_a_device_this_machine_lacks_is_one_line_at_plan_time(capsys, gpus, n, device, problem):
    """The local backend's stages run here: ``train.device`` must be one of this machine's devices, said in
    one line by `sweep plan` and by `sweep run` before anything runs (every stage failed on it before)."""
    from orchestrator.__main__ import main

    gpus(n)
    Path("sweeps").mkdir()
    Path("sweeps/dev.yaml").write_text(DEVICE_SWEEP % "{kind: local}")
    spec, *more = device.split()
    for command in ("plan", "run"):
        assert main(["sweep", command, "dev", "--run-dir", "out", f"train.device={spec}", *more]) == 2
        assert capsys.readouterr().err.strip() == f"famix: error: train.device={spec}: {problem} ({WHERE_STAGES_RUN})"
    assert not Path("out").exists()  # nothing made: no run dir, no synthetic benchmark, nothing tracked


def test_sweep_run_makes_nothing_until_every_input_is_checked(capsys, gpus):
    """`sweep run` checks every input, in one report, before it makes the run dir, draws the synthetic
    benchmark or downloads weights (a wrong device once came after all three, a missing data root
    after an empty run dir)."""
    from orchestrator.__main__ import main

    gpus(0)
    Path("sweeps").mkdir()
    Path("sweeps/dev.yaml").write_text(DEVICE_SWEEP % "{kind: local}")
    real = ["--profile", "paper", "data.root=no-data", "model.pretrained=none"]
    assert main(["sweep", "run", "dev", "--run-dir", "out/run", *real, "train.device=cuda"]) == 2
    err = capsys.readouterr().err
    assert "3 problems" in err and "train.device=cuda:" in err and "gta5 train: data root not found" in err, err
    assert not Path("out").exists()
    assert main(["sweep", "run", "dev", "--run-dir", "out/run", *real, "train.device=cpu"]) == 2
    assert capsys.readouterr().err.startswith("famix: error: 2 problems")  # gta5 and cityscapes
    assert not Path("out").exists()


def test_device_check_applies_where_the_stages_run(capsys, gpus, monkeypatch, gpu_slurm):
    """A device that exists is planned; ``auto`` falls back to the CPU as before; the stages of Slurm and of
    a Ray cluster run on other machines, whose devices this one cannot see: not checked here."""
    from orchestrator.__main__ import main
    from orchestrator.backends import ray_backend
    from orchestrator.backends.ray_cluster import NodeInfo

    Path("sweeps").mkdir()

    def plan(backend: str, *overrides: str) -> int:
        Path("sweeps/dev.yaml").write_text(DEVICE_SWEEP % backend)
        rc = main(["sweep", "plan", "dev", "--run-dir", "out", *overrides])
        capsys.readouterr()
        return rc

    gpus(2)
    local = "{kind: local}"
    assert plan(local, "train.device=cuda:1") == plan(local, "train.device=cuda") == 0
    gpus(0)
    assert plan(local, "train.device=auto") == 0  # the CPU, with a warning when a stage starts
    assert plan("{kind: ray}", "train.device=cuda:1") == 2  # in-process Ray: this machine
    monkeypatch.setattr(ray_backend, "probe_cluster", lambda address: [NodeInfo("n1", 8.0, 2.0)])
    two = "resources: {mine: {gpus: 2}, train: {gpus: 2}, evaluate: {gpus: 2}}"  # each stage sees cuda:0 and cuda:1
    for backend in (f"{{kind: slurm, {two}}}", f"{{kind: ray, ray: {{address: 'head:6379'}}, {two}}}"):
        assert plan(backend, "train.device=cuda:1") == 0, backend
        assert plan(backend, "train.device=auto", "train.cpu_fallback=false") == 0, backend


def test_plan_checks_the_sweep_as_the_backend_it_is_given_would_run_it(capsys, gpus, gpu_slurm):
    """A login node without a GPU plans a sweep whose file says `kind: local` for Slurm, as `run
    --backend slurm` would run it: `plan` had no `--backend`, so it refused the device that the
    cluster's nodes have (and the refusal itself suggested `--backend slurm`)."""
    from orchestrator.__main__ import main

    gpus(0)
    Path("sweeps").mkdir()
    one_gpu = ", ".join(f"{k}: {{gpus: 1}}" for k in ("mine", "train", "evaluate"))
    Path("sweeps/dev.yaml").write_text(DEVICE_SWEEP % f"{{kind: local, resources: {{{one_gpu}}}}}")
    no_fallback = ["train.device=auto", "train.cpu_fallback=false"]
    assert main(["sweep", "plan", "dev", "--run-dir", "out", *no_fallback]) == 2
    assert "--backend slurm` runs them on the cluster's nodes" in capsys.readouterr().err
    assert main(["sweep", "plan", "dev", "--run-dir", "out", "--backend", "slurm", *no_fallback]) == 0
    out = capsys.readouterr().out
    assert "slurm: 5 stages to run as 5 jobs; backend.slurm.pack: evaluate" in out, out  # what it would submit
    assert main(["sweep", "plan", "dev", "--run-dir", "out", "--backend", "slurmx"]) == 2
    assert capsys.readouterr().err.strip().endswith("unknown backend 'slurmx' (known: local, ray, slurm) (did you mean slurm?)")
    assert not Path("out").exists()


@pytest.mark.parametrize("backend", ["slurm", "ray-cluster"])
def test_device_check_on_the_gpus_each_stage_is_given(capsys, monkeypatch, backend, gpu_slurm):
    """Slurm and Ray give each stage its GPUs, which it sees as cuda:0 and up: `train.device=cuda:1` of
    a stage given one GPU, or `cuda` of one given none, was submitted and failed in every job once
    scheduled. The plan says so in one line; the GPUs the stage is given decide, not this machine's."""
    from orchestrator.__main__ import main
    from orchestrator.backends import ray_backend
    from orchestrator.backends.ray_cluster import NodeInfo

    monkeypatch.setattr(ray_backend, "probe_cluster", lambda address: [NodeInfo("n1", 8.0, 4.0)])
    Path("sweeps").mkdir()
    block = "kind: slurm" if backend == "slurm" else "kind: ray, ray: {address: 'head:6379'}"
    name = backend.split("-")[0]

    def plan(gpus: str, *overrides: str) -> str:
        resources = ", ".join(f"{k}: {{gpus: {gpus}}}" for k in ("mine", "train", "evaluate"))
        Path("sweeps/dev.yaml").write_text(DEVICE_SWEEP % f"{{{block}, resources: {{{resources}}}}}")
        rc = main(["sweep", "plan", "dev", "--run-dir", "out", *overrides])
        err = capsys.readouterr().err.strip()
        return "ok" if rc == 0 else err

    assert plan("1", "train.device=cuda:0") == plan("1", "train.device=cuda") == "ok"
    assert plan("0.5", "train.device=auto", "train.cpu_fallback=false") == "ok"  # a fraction is one GPU
    assert plan("0", "train.device=cpu") == plan("0", "train.device=auto") == "ok"
    assert plan("1", "train.device=cuda:1") == (
        f"famix: error: train.device=cuda:1: {name} gives each mine stage 1 GPU (resources.mine.gpus), "
        "which it sees as cuda:0 whichever GPU of the node; use train.device=cuda or auto")
    assert plan("2", "train.device=cuda:2").startswith(f"famix: error: train.device=cuda:2: {name} gives each mine stage 2 GPUs")
    assert plan("0", "train.device=cuda") == (
        f"famix: error: train.device=cuda: {name} gives each mine stage no GPU (resources.mine.gpus is 0); "
        "ask for one there or set train.device=cpu or auto")
    assert plan("0", "train.device=auto", "train.cpu_fallback=false") == (
        f"famix: error: train.device=auto: {name} gives each mine stage no GPU (resources.mine.gpus is 0); "
        "ask for one there or set train.device=cpu")
    if backend == "slurm":  # backend.slurm's own gpus count, its <kind> block first
        Path("sweeps/dev.yaml").write_text(DEVICE_SWEEP % "{kind: slurm, slurm: {gpus: 2, evaluate: {gpus: 1}}}")
        assert main(["sweep", "plan", "dev", "--run-dir", "out", "train.device=cuda:1"]) == 2
        assert "gives each evaluate stage 1 GPU (backend.slurm.evaluate.gpus)" in capsys.readouterr().err
        # the key that gave the count is named: backend.slurm.gpus outranks resources.<kind>.gpus
        Path("sweeps/dev.yaml").write_text(DEVICE_SWEEP % "{kind: slurm, resources: {mine: {gpus: 1}}, slurm: {gpus: 0}}")
        assert main(["sweep", "plan", "dev", "--run-dir", "out", "train.device=cuda"]) == 2
        assert "gives each mine stage no GPU (backend.slurm.gpus is 0); ask for one there" in capsys.readouterr().err


def test_plan_checks_a_real_domain_given_beside_the_synthetic_benchmark(capsys):
    """`famix sweep plan ablation data.roots.C=/nonexistent` passed (the plan skipped every data check
    of a synthetic sweep), then `famix sweep run` refused it: the plan checks the real domains that
    data.roots gives, and still makes no synthetic benchmark."""
    from orchestrator.__main__ import main

    assert main(["sweep", "plan", "ablation", "--run-dir", "out", "data.roots.C=/nonexistent"]) == 2
    assert capsys.readouterr().err.startswith("famix: error: cityscapes val: data root not found: /nonexistent (")
    assert main(["sweep", "plan", "ablation", "--run-dir", "out"]) == 0
    assert not any(Path("out").glob("**/famix_synthetic.json"))  # the benchmark is the run's to make


def _paper_error(capsys, *extra: str) -> str:
    """The error of a paper run without data (and maybe weights): every problem in one report, one line each."""
    from orchestrator.__main__ import main

    rc = main(["sweep", "run", "ablation", "--profile", "paper", "--run-dir", "out", "data.root=missing-data", *extra])
    err = capsys.readouterr().err.strip()
    lines = err.splitlines()
    assert rc == 2 and lines[0] == f"famix: error: {len(lines) - 1} problems with the sweep's inputs (nothing was run):", err
    assert all(line.startswith("  ") and "\n" not in line for line in lines[1:]), err
    # no GPU here and no CPU fallback in the paper profile: every stage of the local backend would refuse
    assert lines[1] == f"  train.device=auto: {NO_FALLBACK} ({WHERE_STAGES_RUN})", err
    # the source's root (its train and val splits: one line), then the target columns' folders, each named
    # once: the four ACDC conditions' shared folder is one line, naming its one key
    for domain in ("gta5 train", "cityscapes val", "bdd100k val", "mapillary val", "synthia val",
                   "acdc_night, acdc_snow, acdc_rain, acdc_fog val"):  # fmt: skip
        assert sum(line.startswith(f"  {domain}: data root not found") for line in lines) == 1, (domain, err)
    assert (f"  acdc_night, acdc_snow, acdc_rain, acdc_fog val: data root not found: {Path.cwd() / 'missing-data' / 'acdc'} (expected "
            "rgb_anon/{night,snow,rain,fog}/val/<sequence>/*_rgb_anon.png under it; set data.root or data.roots.acdc)") in lines, err
    assert not any(line.startswith("  gta5 val") for line in lines), err
    assert not Path("out").exists()  # nothing made: no run dir, nothing tracked
    return err


@pytest.mark.slow  # imports open_clip for its pretrained table
def test_paper_profile_fails_fast_without_weights_or_data(capsys, monkeypatch, tmp_path, gpus):
    """The device, missing weights and data roots are all named in one report before anything runs."""
    gpus(0)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    Path("sweeps").mkdir()
    Path("sweeps/ablation.yaml").write_text((REPO_SWEEPS / "ablation.yaml").read_text())
    import open_clip.pretrained as oc

    with socket.socket() as s:  # open_clip's URL now points where nothing listens: an offline machine
        s.bind(("127.0.0.1", 0))  # held while it is asked, so that nothing else takes the port
        monkeypatch.setitem(oc._PRETRAINED["RN50"]["openai"], "url", f"http://127.0.0.1:{s.getsockname()[1]}/RN50.pt")
        monkeypatch.setitem(oc._PRETRAINED["RN50"]["openai"], "hf_hub", "")
        err = _paper_error(capsys)
    assert "model.pretrained=openai: cannot download RN50 weights" in err
    assert str(tmp_path / "home" / ".cache" / "clip") in err and "model.pretrained=<path" in err
    err = _paper_error(capsys, "model.pretrained=nowhere/RN50.pt")
    assert "model.pretrained: file nowhere/RN50.pt not found" in err or "nowhere/RN50.pt" in err
    # weights present in the cache (the url file name open_clip would download): now the data check fails
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "RN50.pt").write_bytes(b"stand-in")
    err = _paper_error(capsys, f"model.cache_dir={cache}")
    assert "model.pretrained" not in err and err.count("missing-data") == 6


def test_sweep_plan_writes_nothing(tmp_path, capsys):
    """`famix sweep plan` (and `--explain`) creates no run dir and generates no synthetic benchmark."""
    from orchestrator.__main__ import main

    run_dir = tmp_path / "runs"
    for extra in ([], ["--explain", "train.iterations"]):
        assert main(["sweep", "plan", str(REPO_SWEEPS / "ablation.yaml"), "--run-dir", str(run_dir), *extra]) == 0
        assert not run_dir.exists(), sorted(str(p) for p in run_dir.rglob("*"))[:5]
    assert "73 stages" in capsys.readouterr().out


def _doc_yaml_blocks() -> list[tuple[str, int, str]]:
    """Every ```yaml block of the README and docs/: (file, line, text)."""
    import re

    root = Path(__file__).resolve().parent.parent
    blocks = []
    for doc in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        text = doc.read_text()
        for m in re.finditer(r"```ya?ml\n(.*?)```", text, re.S):
            blocks.append((doc.relative_to(root).as_posix(), text[: m.start()].count("\n") + 2, m.group(1)))
    return blocks


@pytest.mark.parametrize("text", [pytest.param(text, id=f"{doc}:{line}") for doc, line, text in _doc_yaml_blocks()
                                  if "backend:" in text or "name:" in text])  # fmt: skip
def test_the_sweep_file_examples_in_the_docs_validate(request, text):
    """A reader copies these into a sweep file: the annotated sweep file of docs/sweeps.md failed
    (`backend.slurm.account: expected a non-empty one-line string, got None`, then a key varied by
    both `grid` and `zip`). A block that is only a `backend:` section goes into a one-key sweep."""
    import yaml

    from orchestrator.driver import prepare

    tree = yaml.safe_load(text)
    if "name" not in tree:
        tree = {"name": "doc", "grid": {"style.mix": [False, True]}, "domains": ["C"], **tree}
    Path("sweeps").mkdir()
    Path("sweeps/doc.yaml").write_text(yaml.safe_dump(tree, allow_unicode=True))
    plan = prepare("sweeps/doc.yaml", writable=False, dry=True, check_data=lambda cfg: None, check_weights=lambda cfg: None)
    assert plan.trials, request.node.callspec.id


def test_counts_are_said_in_the_singular_for_one(capsys):
    """A one-trial, one-stage-kind sweep's plan reads "1 trial", never "1 trials"."""
    from famix_core.text import count
    from orchestrator.__main__ import main

    assert [count(1, "trial"), count(2, "trial"), count(1.0, "CPU"), count(0, "GPU"), count(1, "sky", "skies"), count(2, "sky", "skies"), count(1_000_000, "run"), count(2.5, "GPU")] == [
        "1 trial", "2 trials", "1 CPU", "0 GPUs", "1 sky", "2 skies", "1000000 runs", "2.5 GPUs"]  # fmt: skip
    sweep = Path("one.yaml")
    sweep.write_text("name: one\ngrid: {}\nbase:\n  style: {strategy: none}\ndomains: [C]\nseeds: [0]\n")
    assert main(["sweep", "plan", str(sweep)]) == 0
    out = capsys.readouterr().out
    assert "— 1 trial" in out and "1 trials" not in out, out
