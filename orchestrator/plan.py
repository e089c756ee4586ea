"""The plan: trials x content-addressed stages (mine -> train -> evaluate per domain), and its printing.

Trials that read the same inputs share a stage (one key, one artifact, one run);
a stage whose ``DONE.json`` exists in the store (and reads as one) is done and never runs again.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from famix_core.config import FamixConfig
from famix_core.config_io import canonical_hash
from famix_core.text import count
from famix_core.weights import is_packaged, looks_like_path
from orchestrator.errors import SweepError
from orchestrator.keys import evaluate_inputs, mine_inputs, stage_key, train_inputs
from orchestrator.stages import STAGE_KINDS
from orchestrator.store import Store, atomic_write_text
from orchestrator.sweep import ResolvedSweep, Trial, expand_trials

__all__ = ["StageSpec", "TrialStages", "Plan", "build_plan", "print_plan", "slurm_jobs_line", "slurm_request_lines"]


@dataclass
class StageSpec:
    """One stage of the plan (possibly shared by several trials)."""

    kind: str
    key: str
    config: dict[str, Any]
    deps: dict[str, str] = field(default_factory=dict)
    domain: str | None = None
    trials: list[str] = field(default_factory=list)  # ids of the trials that use it, in order

    @property
    def name(self) -> str:
        return f"{self.kind}{'/' + self.domain if self.domain else ''} {self.key[:8]}"


@dataclass
class TrialStages:
    mine: str | None
    train: str
    evaluate: dict[str, str]  # column -> key, in column order

    def keys(self) -> list[str]:
        return ([self.mine] if self.mine else []) + [self.train] + list(self.evaluate.values())


@dataclass
class Plan:
    """Trials, their stages (topological order: all mines, all trains, all evaluations) and where things go."""

    sweep: ResolvedSweep
    run_dir: Path
    trials: list[Trial]
    stages: dict[str, StageSpec]
    trial_stages: dict[str, TrialStages]

    @property
    def name(self) -> str:
        return self.sweep.name

    @property
    def store(self) -> Store:
        return Store(self.run_dir / "store")

    @property
    def sweep_dir(self) -> Path:
        return inside(self.run_dir, self.run_dir / self.sweep.name)

    def log_path(self, stage: StageSpec) -> Path:
        return inside(self.run_dir, self.sweep_dir / "logs" / f"{stage.kind}-{stage.key}.log")

    def arguments(self) -> str:
        """The sweep, ``--profile``, ``--run-dir`` (when not the default) and overrides of this plan as
        shell words: what ``famix sweep status``, ``famix report`` or a rerun is given to mean this plan."""
        import shlex

        return shlex.join([self._sweep_word(), "--profile", self.sweep.profile, *self._run_dir_words(), *self.sweep.override_words()])

    def _sweep_word(self) -> str:
        """The sweep as a command names it from here: its bare name where that finds this file, else its path."""
        return self.name if self._names_this_sweep(self.name) else str(self.sweep.source)

    def _names_this_sweep(self, word: str) -> bool:
        """Whether ``famix sweep … word`` run from here reads this plan's sweep file."""
        from orchestrator.sweep import resolve_sweep_path

        try:
            return resolve_sweep_path(word).resolve() == Path(self.sweep.source).resolve()
        except SweepError:
            return False

    def _run_dir_words(self) -> list[str]:
        return ["--run-dir", str(self.run_dir)] if Path(self.run_dir).resolve() != Path("runs").resolve() else []

    def follows(self, recorded: str | None) -> bool:
        """Whether ``recorded``, the :meth:`arguments` a driver wrote into this sweep's folder, mean this
        plan. ``--run-dir`` is left out: the record was read from this run dir, which may have been
        moved or named from another folder since. A recorded absolute path to this sweep file is this
        sweep however this plan names it; a relative one, written from that driver's folder, only
        where the words are the same (from here it may name another file of the same sweep name)."""
        if recorded is None:
            return False
        theirs, mine = _without_run_dir(recorded), _without_run_dir(self.arguments())
        if not theirs or theirs[1:] != mine[1:]:
            return False
        return theirs[0] == mine[0] or (Path(theirs[0]).is_absolute() and self._names_this_sweep(theirs[0]))

    def from_here(self, recorded: str) -> str:
        """``recorded`` (the :meth:`arguments` of another plan, written into this sweep's folder) as named
        from here: with this plan's ``--run-dir`` (the run dir it was read from), and this plan's sweep
        where the recorded one does not name this sweep file from here (a bare name found in that
        driver's ``sweeps/``, a relative path from its folder). The record's own words were named
        from wherever that driver started."""
        import shlex

        words = _without_run_dir(recorded)
        if words and not self._names_this_sweep(words[0]):  # this sweep's folder holds results of sweeps of this name only
            words[0] = self._sweep_word()
        return shlex.join([*words[:3], *self._run_dir_words(), *words[3:]])

    def status(self) -> dict[str, str]:
        """Stage key -> ``done`` | ``to run``."""
        st = self.store
        return {k: ("done" if st.is_done(s.kind, k) else "to run") for k, s in self.stages.items()}

    def to_json(self) -> dict[str, Any]:
        return {
            "sweep": self.sweep.name,
            "profile": self.sweep.profile,
            "source": self.sweep.source,
            "domains": self.sweep.domains,
            "trials": [
                {
                    "id": t.id,
                    "index": t.index,
                    "seed": t.seed,
                    "labels": t.labels,
                    "stages": {
                        "mine": self.trial_stages[t.id].mine,
                        "train": self.trial_stages[t.id].train,
                        "evaluate": self.trial_stages[t.id].evaluate,
                    },
                }
                for t in self.trials
            ],
            "stages": {
                k: {"kind": s.kind, "domain": s.domain, "deps": s.deps, "trials": s.trials} for k, s in self.stages.items()
            },
        }

    def write(self) -> Path:
        path = self.sweep_dir / "plan.json"
        atomic_write_text(path, json.dumps(self.to_json(), indent=1, ensure_ascii=False))
        return path


def inside(run_dir: Path, path: Path) -> Path:
    """``path``, after checking that it stays inside ``run_dir`` (no ``..`` or symlink escapes by name).

    Raises:
        SweepError: naming both paths.
    """
    if not os.path.normpath(path).startswith(os.path.normpath(run_dir) + os.sep):
        raise SweepError(f"{path}: outside the run dir {run_dir}; sweep names and stage keys are single folder names")
    return path


def _localize(cfg: FamixConfig, run_dir: Path) -> FamixConfig:
    """Absolute data/weights paths; the synthetic benchmark goes under ``<run_dir>/data/synth-<hash>``."""
    tree = cfg.to_dict()
    data = tree["data"]
    if data.get("synthetic") is not None:
        h = canonical_hash(data["synthetic"])[:10]
        data["root"] = str((run_dir / "data" / f"synth-{h}").absolute())
    else:
        data["root"] = os.path.abspath(data["root"])
    data["roots"] = {k: os.path.abspath(v) for k, v in data["roots"].items()}
    for k in ("split_file",):
        if data.get(k):
            data[k] = os.path.abspath(data[k])
    model = tree["model"]
    if model["pretrained"] not in ("openai", "none") and not is_packaged(model["pretrained"]) and looks_like_path(model["pretrained"]):
        model["pretrained"] = os.path.abspath(os.path.expanduser(model["pretrained"]))
    return FamixConfig.model_validate(tree)


def build_plan(
    rs: ResolvedSweep,
    run_dir: str | Path,
    *,
    check_data: Callable[[FamixConfig], None] | None = None,
    check_weights: Callable[[FamixConfig], None] | None = None,
    check_device: Callable[[FamixConfig], None] | None = None,
) -> Plan:
    """Expand, localize and key every trial; run the device, weights and data checks once per distinct input.

    Args:
        rs: the resolved sweep.
        run_dir: the run directory (everything the sweep writes goes below it).
        check_data / check_weights: plan-time checks (default: :mod:`orchestrator.checks`);
            they raise a one-line FamixError before anything runs. All of them run: one problem
            is raised as it is, several together as :class:`orchestrator.errors.InputErrors`.
        check_device: the same for ``train.device`` (default: none; where the stages run decides
            whether this machine's devices matter, so :func:`orchestrator.driver.prepare` passes
            :func:`orchestrator.checks.check_device` for a backend whose stages run here).

    Returns:
        the plan (not yet written; :meth:`Plan.write` puts plan.json in the sweep folder).
    """
    from famix_core.errors import FamixError
    from orchestrator import checks
    from orchestrator.errors import InputErrors, raise_all

    check_data = check_data or checks.check_data
    check_weights = check_weights or checks.check_weights
    run_dir = Path(run_dir).absolute()
    trials = expand_trials(rs)
    inside(run_dir, run_dir / rs.name)
    stages: dict[str, StageSpec] = {}
    trial_stages: dict[str, TrialStages] = {}
    mines: dict[str, StageSpec] = {}
    trains: dict[str, StageSpec] = {}
    evals: dict[str, StageSpec] = {}
    checked: set[str] = set()
    errors: list[FamixError] = []
    for t in trials:
        cfg = _localize(t.config, run_dir)
        t.config = cfg
        wkey = json.dumps(["weights", cfg.model.backbone, cfg.model.pretrained, cfg.model.cache_dir])
        dkey = json.dumps(["data", cfg.data.model_dump(mode="json"), cfg.eval.domains, cfg.eval.split])
        vkey = json.dumps(["device", cfg.train.device, cfg.train.cpu_fallback])
        for key, check in ((vkey, check_device), (wkey, check_weights), (dkey, check_data)):
            if check is None:
                continue
            if key not in checked:
                checked.add(key)
                try:
                    check(cfg)
                except InputErrors as e:
                    errors += e.errors
                except FamixError as e:  # the device, the weights and every data root, all in one report
                    errors.append(e)
        if errors:  # keep checking the other trials' inputs; their stage keys are not needed any more
            continue
        conf = cfg.to_dict()
        mkey = None
        if cfg.style.needs_bank():
            mkey = stage_key(mine_inputs(cfg))
            mines.setdefault(mkey, StageSpec("mine", mkey, conf)).trials.append(t.id)
        tkey = stage_key(train_inputs(cfg, mkey))
        trains.setdefault(tkey, StageSpec("train", tkey, conf, deps={"mine": mkey} if mkey else {})).trials.append(t.id)
        ekeys: dict[str, str] = {}
        for col in cfg.eval.domains:
            ekey = stage_key(evaluate_inputs(cfg, tkey, col))
            evals.setdefault(ekey, StageSpec("evaluate", ekey, conf, deps={"train": tkey}, domain=col)).trials.append(t.id)
            ekeys[col] = ekey
        trial_stages[t.id] = TrialStages(mkey, tkey, ekeys)
    raise_all(errors)
    for group in (mines, trains, evals):
        stages.update(group)
    return Plan(sweep=rs, run_dir=run_dir, trials=trials, stages=stages, trial_stages=trial_stages)


def print_plan(plan: Plan, console: Any = None, show_running: bool = False, backend: str | None = None) -> dict[str, int]:
    """Print the trials with their labels and, per stage, done / to run / shared; return counts by state.

    ``show_running`` (``famix sweep status``): stages not done whose lock a process holds now
    (:meth:`Store.is_running`) show ``running``, and are counted among those to run. ``backend``
    (``plan --backend``; default the sweep's ``backend.kind``): ``slurm`` adds how many jobs it would
    submit.
    """
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    status = plan.status()
    running = {k for k, s in plan.stages.items() if status[k] != "done" and plan.store.is_running(s.kind, k)} if show_running else set()
    label_cols: list[str] = []
    for t in plan.trials:
        for c in t.labels:
            if c not in label_cols:
                label_cols.append(c)
    table = Table(title=f"sweep {plan.name} (profile {plan.sweep.profile}) — {count(len(plan.trials), 'trial')}")
    for c in ["#", *label_cols, "seed", "trial", "mine", "train", "evaluate"]:
        table.add_column(c)

    def cell(key: str | None) -> str:
        if key is None:
            return "—"
        shared = len(plan.stages[key].trials) > 1
        return ("running" if key in running else status[key]) + (" (shared)" if shared else "")

    for t in plan.trials:
        ts = plan.trial_stages[t.id]
        n_done = sum(status[k] == "done" for k in ts.evaluate.values())
        n_running = sum(k in running for k in ts.evaluate.values())
        table.add_row(
            str(t.index + 1),  # numbered from 1, as MLflow's trial runs are (and, one seed per row, the table's rows)
            *[t.labels.get(c, "") for c in label_cols],
            str(t.seed),
            t.id,
            cell(ts.mine),
            cell(ts.train),
            f"{n_done}/{len(ts.evaluate)} done" + (f", {n_running} running" if n_running else ""),
        )
    console.print(table)
    counts = {"done": 0, "to run": 0}
    by_kind = {k: [0, 0, 0] for k in STAGE_KINDS}  # done, to run, of which running
    for key, s in plan.stages.items():
        counts[status[key]] += 1
        by_kind[s.kind][0 if status[key] == "done" else 1] += 1
        by_kind[s.kind][2] += key in running
    parts = ", ".join(f"{k}: {d} done / {r} to run" + (f" ({n} running)" if n else "") for k, (d, r, n) in by_kind.items())
    console.print(f"{len(plan.stages)} stages ({parts}); run dir {plan.run_dir}")
    be = plan.sweep.backend
    if (backend or be.kind) == "slurm" or be.slurm:
        console.print(slurm_jobs_line(plan, status), highlight=False, markup=False)
        for line in slurm_request_lines(plan, status):
            console.print(line, highlight=False, markup=False)
    return counts


def slurm_jobs_line(plan: Plan, status: dict[str, str]) -> str:
    """How the stages still to run would go out on Slurm: one job each, but one per pack (``backend.slurm.pack``)."""
    from orchestrator.backends.slurm.backend import packs
    from orchestrator.backends.slurm.options import pack_kinds

    kinds = pack_kinds(plan.sweep.backend.slurm)
    to_run = [s for key, s in plan.stages.items() if status[key] != "done"]
    packed = [s for s in to_run if s.kind in kinds]
    jobs = len(packs(to_run, kinds))
    if not kinds:
        return f"slurm: {count(len(to_run), 'stage')} to run as {count(jobs, 'job')} (backend.slurm.pack: none)"
    return (f"slurm: {count(len(to_run), 'stage')} to run as {count(jobs, 'job')}; backend.slurm.pack: {', '.join(kinds)} "
            f"({count(len(packed), 'stage')} packed, one job per trained model)")  # fmt: skip


def slurm_request_lines(plan: Plan, status: dict[str, str]) -> list[str]:
    """What each job of a stage kind still to run asks Slurm for (``stage_parameters``: ``resources``,
    then ``backend.slurm``, then its ``<kind>`` block): one line per kind. A pack's time covers its
    stages one after another, cut at the partition's ``MaxTime`` when it is submitted."""
    from orchestrator.backends.slurm.backend import packs
    from orchestrator.backends.slurm.options import pack_kinds, pack_parameters, stage_parameters

    be = plan.sweep.backend
    packed = pack_kinds(be.slurm)
    lines = []
    for kind in STAGE_KINDS:
        stages = [s for key, s in plan.stages.items() if s.kind == kind and status[key] != "done"]
        if not stages:
            continue
        res = be.resources.get(kind)
        p = stage_parameters(kind, res.model_dump() if res is not None else {}, be.slurm)
        per_stage = int(p["time"])
        pack = ""
        if kind in packed:
            size = max(len(unit) for unit in packs(stages, packed))
            p = pack_parameters(p, size)
            pack = f" (a pack of up to {count(size, 'stage')}, {per_stage} min each; at most the partition's MaxTime)"
        asks = [f"partition {p['partition']}" if "partition" in p else "the default partition", f"{p['time']} min",
                count(int(p.get("gpus_per_node") or 0), "GPU"), count(int(p["cpus_per_task"]), "CPU"),
                f"mem {p['mem']}" if "mem" in p else "the partition's default memory"]  # fmt: skip
        asks += [f"{k} {p[k]}" for k in ("account", "qos", "constraint") if k in p]
        asks += [f"--{k}={v}" for k, v in (p.get("additional_parameters") or {}).items()]
        lines.append(f"  each {kind} job asks for: {', '.join(asks)}{pack}")
    return lines


def _without_run_dir(arguments: str) -> list[str]:
    """The words of a :meth:`Plan.arguments` without its ``--run-dir`` and the folder after it."""
    import shlex

    w = shlex.split(arguments)
    i = w.index("--run-dir") if "--run-dir" in w else -1
    return w[:i] + w[i + 2 :] if i >= 0 else w
