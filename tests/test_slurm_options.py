"""The slurm backend's pure parts: option validation, sbatch parameters, golden sbatch scripts.

No cluster needed (the cluster tests are in test_slurm.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from famix_core.errors import FamixError
from orchestrator.backends.slurm.options import (
    SLURM_OPTIONS,
    SlurmOptionError,
    parse_mem_gb,
    parse_time_min,
    sanitize_job_name,
    stage_parameters,
    validate_slurm_options,
)

GOLDEN = Path(__file__).parent / "golden"
NASTY = "abl ation;$(touch PWNED)'q\"`x`"


def test_validator_imports_neither_submitit_nor_torch():
    code = (
        "import sys; from orchestrator.backends.slurm.options import validate_slurm_options; "
        "validate_slurm_options({'partition': 'gpu'}, 's.yaml'); "
        "print(sorted(m for m in ('submitit', 'torch', 'ray', 'mlflow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "block, where",
    [
        ({"partiton": "gpu"}, "backend.slurm.partiton: unknown option (did you mean partition? valid: partition, time"),
        ({"train": {"gpu": 1}}, "backend.slurm.train.gpu: unknown option (did you mean gpus? valid: partition"),
        ({"cpus": 4}, "backend.slurm.cpus: unknown option (did you mean cpus_per_task? valid: partition"),  # was gpus
        ({"finetune": {}}, "backend.slurm.finetune: unknown option ("),
    ],
)
def test_unknown_option_is_one_line_listing_valid_names(block, where):
    with pytest.raises(FamixError) as e:
        validate_slurm_options(block, "sweeps/x.yaml")
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("sweeps/x.yaml: " + where)
    for name in SLURM_OPTIONS:
        assert name in msg


@pytest.mark.parametrize(
    "block, expected",
    [
        ({"time": "soon"}, "backend.slurm.time: expected minutes or a Slurm time"),
        ({"time": 0}, "backend.slurm.time: expected at least 1 minute"),
        ({"gpus": -1}, "backend.slurm.gpus: expected an integer >= 0"),
        ({"cpus_per_task": 1.5}, "backend.slurm.cpus_per_task: expected an integer >= 1"),
        ({"mem": "lots"}, "backend.slurm.mem: expected GB or a size"),
        ({"partition": ""}, "backend.slurm.partition: expected a non-empty one-line string"),
        ({"additional": {"output": "/tmp/x"}}, "backend.slurm.additional: 'output' is set by the backend"),
        ({"additional": {"mail type": "END"}}, "backend.slurm.additional: 'mail type' is not an sbatch option name"),
        # passed beside the block's own key: `time` twice (sbatch took the last) while the plan showed 60 min
        ({"additional": {"time": "10:00"}}, "backend.slurm.additional: 'time' has a key of its own: write backend.slurm.time"),
        ({"additional": {"mem_per_cpu": "4G"}}, "backend.slurm.additional: 'mem_per_cpu' has a key of its own: write backend.slurm.mem"),
        ({"train": {"additional": {"gres": "nvme:1,gpu:a100:1"}}}, "backend.slurm.train.additional: 'gres' has a key of its own: write"
         " backend.slurm.gpus (or backend.slurm.<kind>.gpus), which the plan shows and checks"),
        ({"additional": {"comment": "a\nb"}}, "backend.slurm.additional: comment: expected a one-line"),
        ({"array_parallelism": 0}, "backend.slurm.array_parallelism: expected an integer >= 1"),
        ({"evaluate": "gpu"}, "backend.slurm.evaluate: expected a mapping"),
        # names outside Slurm's character set (shell metacharacters, separators)
        ({"partition": "gpu; touch /tmp/x"}, "backend.slurm.partition: 'gpu; touch /tmp/x' is not a valid Slurm partition"),
        ({"account": "proj $(id)"}, "backend.slurm.account: 'proj $(id)' is not a valid Slurm account"),
        ({"qos": "high,low"}, "backend.slurm.qos: 'high,low' is not a valid Slurm qos"),
        ({"constraint": "a100 && `x`"}, "backend.slurm.constraint: 'a100 && `x`' is not a valid Slurm constraint"),
        ({"reservation": "maint'"}, "backend.slurm.reservation: \"maint'\" is not a valid Slurm reservation"),
        ({"train": {"partition": "gpu,"}}, "backend.slurm.train.partition: 'gpu,' is not a valid Slurm partition"),
    ],
)
def test_bad_values_name_the_key(block, expected):
    with pytest.raises(FamixError) as e:
        validate_slurm_options(block, "s.yaml")
    assert str(e.value).startswith("s.yaml: " + expected), str(e.value)
    assert "\n" not in str(e.value)


def test_valid_block_passes():
    block = {
        "partition": "gpu",
        "time": "1-00:00:00",
        "gpus": 1,
        "cpus_per_task": 8,
        "mem": "32G",
        "account": "proj",
        "qos": "normal",
        "constraint": "a100",
        "additional": {"exclude": "node[01-02]", "exclusive": True},
        "array_parallelism": 4,
        "pack": ["evaluate"],
        "train": {"time": 720},
        "evaluate": {"gpus": 0, "array_parallelism": 16},
    }
    assert validate_slurm_options(block, "s.yaml") == []
    assert validate_slurm_options(None) == []


@pytest.mark.parametrize(
    "value, minutes",
    [(90, 90), ("90", 90), ("1:30", 2), ("02:00:00", 120), ("1-0", 1440), ("1-02:30", 1590), ("0:00:59", 1)],
)
def test_parse_time(value, minutes):
    assert parse_time_min(value) == minutes


@pytest.mark.parametrize("value, gb", [(4, 4.0), (0.5, 0.5), ("16G", 16.0), ("16GB", 16.0), ("512M", 0.5), ("2048", 2.0), ("1T", 1024.0)])
def test_parse_mem(value, gb):
    assert parse_mem_gb(value) == pytest.approx(gb)


def test_stage_parameters_precedence():
    resources = {"cpus": 2, "gpus": 0.5, "mem_gb": 6, "timeout_min": 30}
    options = {
        "partition": "cpu",
        "time": 45,
        "additional": {"exclude": "n1", "comment": "all"},
        "train": {"partition": "gpu", "time": "12:00:00", "mem": "1500M", "additional": {"comment": "train"}},
    }
    train = stage_parameters("train", resources, options)
    assert train == {
        "time": 720,
        "cpus_per_task": 2,
        "gpus_per_node": 1,  # 0.5 GPU rounds up to a whole one
        "mem": "1500MB",
        "partition": "gpu",
        "additional_parameters": {"comment": "train", "exclude": "n1"},
    }
    mine = stage_parameters("mine", {"cpus": 1, "gpus": 0, "mem_gb": 4, "timeout_min": 60}, options)
    assert mine["time"] == 45 and mine["partition"] == "cpu" and mine["mem"] == "4GB"
    assert "gpus_per_node" not in mine
    assert mine["additional_parameters"] == {"comment": "all", "exclude": "n1"}
    assert stage_parameters("evaluate", None, None) == {"time": 60, "cpus_per_task": 1}


def test_job_names_are_sanitized():
    name = sanitize_job_name("famix", NASTY, "train")
    assert name == "famix-abl_ation_touch_PWNED_q_x-train"
    assert sanitize_job_name("", "$()", "") == "famix"
    assert len(sanitize_job_name("x" * 500)) == 64


def _golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("FAMIX_UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert path.is_file(), f"{path} missing: run with FAMIX_UPDATE_GOLDEN=1 once"
    assert text == path.read_text(), f"sbatch script differs from {path} (FAMIX_UPDATE_GOLDEN=1 to accept)"


def _normalize(text: str, tmp_path: Path) -> str:
    """Replace what varies between runs (the test folder, the interpreter) by placeholders."""
    return text.replace(str(tmp_path), "<TMP>").replace(sys.executable, "<PYTHON>")


@pytest.fixture
def nasty_folder(tmp_path):
    """A submitit folder below a sweep folder whose name holds spaces, quotes, ';' and '$(...)'."""
    return str(tmp_path / NASTY / "slurm" / "20260101-000000-abcdef12" / "%j")


def _command(folder: str) -> str:
    import shlex

    return " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(folder)])


def _submitted_script(params: dict, folder: str, n_tasks: int, tmp_path: Path, monkeypatch) -> str:
    """The sbatch script submitit submits for ``params`` (``n_tasks`` > 1: one job array), written through
    submitit's public API as the backend uses it, with ``sbatch`` and ``srun`` stood in (no cluster)."""
    import submitit

    bin_dir = tmp_path / "fake-slurm-bin"
    bin_dir.mkdir()
    for tool, out in (("sbatch", "Submitted batch job 42"), ("srun", "")):
        (bin_dir / tool).write_text(f"#!/bin/sh\necho '{out}'\n")
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    ex = submitit.SlurmExecutor(folder=folder)
    ex.update_parameters(**params)
    with ex.batch():
        jobs = [ex.submit(print, i) for i in range(n_tasks)]
    assert [j.job_id for j in jobs] == (["42"] if n_tasks == 1 else [f"42_{i}" for i in range(n_tasks)])
    (script,) = Path(folder.replace("%j", "42")).glob("*_submission.sh")  # one script per job or array
    return script.read_text()


def test_golden_train_job(nasty_folder, tmp_path, monkeypatch):
    from orchestrator.backends.slurm.sbatch import executor_parameters

    options = {
        "partition": "gpu",
        "account": "proj",
        "qos": "high",
        "constraint": "a100",
        "additional": {"exclude": "node[01-02]"},
        "train": {"time": "12:00:00", "gpus": 1, "cpus_per_task": 8, "mem": "32G"},
    }
    params = stage_parameters("train", {"cpus": 1, "gpus": 0, "mem_gb": 4, "timeout_min": 60}, options)
    ex = executor_parameters(params, sweep=NASTY, kind="train", dep_jobs=["41"], cap=4)
    text = _submitted_script(ex, nasty_folder, 1, tmp_path, monkeypatch)
    _golden("slurm_train.sbatch", _normalize(text, tmp_path))
    assert "#SBATCH --job-name=famix-abl_ation_touch_PWNED_q_x-train\n" in text
    assert "#SBATCH --kill-on-invalid-dep=yes\n" in text
    # every line holding the folder quotes it whole: bash reads it back as the literal path
    import shlex

    srun = next(line for line in text.splitlines() if line.startswith("srun "))
    assert shlex.split(srun)[-1] == nasty_folder


def test_golden_evaluate_array(nasty_folder, tmp_path, monkeypatch):
    from orchestrator.backends.slurm.sbatch import executor_parameters

    params = stage_parameters("evaluate", {"cpus": 2, "gpus": 0, "mem_gb": 8, "timeout_min": 20}, {"partition": "cpu"})
    ex = executor_parameters(params, sweep=NASTY, kind="evaluate", dep_jobs=["42_0", "42_3"], cap=2)
    text = _submitted_script(ex, nasty_folder, 8, tmp_path, monkeypatch)
    _golden("slurm_evaluate_array.sbatch", _normalize(text, tmp_path))
    assert "#SBATCH --array=0-7%2" in text
    assert "#SBATCH --dependency=afterok:42_0:42_3" in text


def test_split_arrays_share_the_cap():
    from orchestrator.backends.slurm.sbatch import executor_parameters, share_cap

    assert share_cap(8, [20]) == [(8, ())]
    assert share_cap(8, [3, 3, 2]) == [(3, ()), (3, ()), (2, ())]  # the caps add up to 8
    assert share_cap(8, [20, 2, 1]) == [(5, ()), (2, ()), (1, ())]  # what a small array leaves goes to the big one
    assert share_cap(8, [1, 1]) == [(1, ()), (1, ())]  # never more than an array's tasks
    # more arrays than the cap (a fresh sweep's evaluation packs, one array each): they run one task
    # at a time in 2 lanes, each after all the earlier ones of its lane ended (one may be dropped early)
    assert share_cap(2, [1, 1, 1, 1, 1]) == [(1, ()), (1, ()), (1, (0,)), (1, (1,)), (1, (0, 2))]
    for cap in range(1, 7):
        for sizes in ([1] * 8, [3, 1, 4, 1, 5], [2, 7], [9]):
            for n in range(1, len(sizes) + 1):
                shares = share_cap(cap, sizes[:n])
                free = [c for c, waits in shares if not waits]
                assert len(shares) == n and sum(free) == min(cap, sum(sizes[:n])), (cap, sizes[:n], shares)  # all the cap it can use
                assert all(c <= size for (c, _), size in zip(shares, sizes))  # within each array's tasks
                for i, (c, waits) in enumerate(shares):  # in lanes: all the earlier ones of its lane
                    assert not waits or (c == 1 and waits == tuple(range(i % cap, i, cap)))

    p = executor_parameters({}, sweep="s", kind="evaluate", dep_jobs=["42_0"], cap=1, after_jobs=["77"])
    assert p["dependency"] == "afterok:42_0,afterany:77"
    assert p["additional_parameters"]["kill-on-invalid-dep"] == "yes"
    assert executor_parameters({}, sweep="s", kind="mine", cap=1, after_jobs=["77"])["dependency"] == "afterany:77"


def test_slurm_names_that_slurm_accepts_pass_and_reservation_reaches_sbatch():
    block = {"partition": "gpu,gpu-long", "account": "proj_1.a", "qos": "normal", "reservation": "maint-2",
             "constraint": "[a100*2&ib]|v100"}  # fmt: skip
    validate_slurm_options(block, "s.yaml")
    params = stage_parameters("train", {"cpus": 1}, block)
    assert params["partition"] == "gpu,gpu-long" and params["additional_parameters"] == {"reservation": "maint-2"}


def test_bad_partition_is_refused_by_sweep_plan_before_any_submission(capsys):
    from pathlib import Path

    from orchestrator.__main__ import main

    Path("s.yaml").write_text('name: s\ngrid: {style.mix: [true, false]}\ndomains: [C]\nbackend: {slurm: {partition: "gpu; touch /tmp/x"}}\n')
    rc = main(["sweep", "plan", "s.yaml", "--run-dir", "out"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "backend.slurm.partition: 'gpu; touch /tmp/x' is not a valid Slurm partition" in err
    assert not Path("out").exists()


@pytest.mark.parametrize(
    "block, line",
    [
        ({"time": 1}, "s.yaml: backend.slurm.time: 1 min is shorter than a training job needs: Slurm warns it 90 s before "
                      "its limit to checkpoint and requeue; give at least 2 min (or set backend.slurm.train.time)"),
        ({"time": 600, "train": {"time": "0:59"}}, "s.yaml: backend.slurm.train.time: 1 min is shorter than a training job needs: "
                                                   "Slurm warns it 90 s before its limit to checkpoint and requeue; give at least 2 min"),
    ],
)  # fmt: skip
def test_a_training_time_under_the_checkpoint_warning_is_refused(block, line):
    """`backend.slurm.train.time: 1`: the 90 s warning came at once, the job was requeued until it failed
    ('job ended FAILED without a stage outcome'), and nothing named the time limit."""
    with pytest.raises(SlurmOptionError) as e:
        validate_slurm_options(block, "s.yaml")
    assert str(e.value) == line
    assert validate_slurm_options({"time": 1, "train": {"time": 2}}, "s.yaml") == []  # the other kinds may be short


# ----------------------------------------------------------------------------- backend.slurm.pack


@pytest.mark.parametrize(
    "block, kinds",
    [
        ({}, ("evaluate",)),  # the default: a trained model's evaluations run as one job
        (None, ("evaluate",)),
        ({"pack": ["evaluate"]}, ("evaluate",)),
        ({"pack": "evaluate"}, ("evaluate",)),
        ({"pack": []}, ()),
        ({"pack": "none"}, ()),
        ({"pack": False}, ()),
        ({"pack": None}, ()),
    ],
)
def test_pack_default_and_off(block, kinds):
    from orchestrator.backends.slurm.options import pack_kinds

    assert pack_kinds(block) == kinds
    assert validate_slurm_options(block, "s.yaml") == []


@pytest.mark.parametrize(
    "block, expected",
    [
        ({"pack": ["train"]}, "backend.slurm.pack: expected a list of stage kinds to pack (evaluate; "),
        ({"pack": ["evaluate", "mine"]}, "backend.slurm.pack: expected a list of stage kinds to pack"),
        ({"pack": True}, "backend.slurm.pack: expected a list of stage kinds to pack"),
        ({"pack": "all"}, "backend.slurm.pack: expected a list of stage kinds to pack"),
        ({"pack": 8}, "backend.slurm.pack: expected a list of stage kinds to pack"),
        ({"evaluate": {"pack": ["evaluate"]}}, "backend.slurm.evaluate.pack: not a per stage kind option; set backend.slurm.pack"),
    ],
)
def test_bad_pack_is_one_line_naming_the_key(block, expected):
    with pytest.raises(FamixError) as e:
        validate_slurm_options(block, "s.yaml")
    assert str(e.value).startswith("s.yaml: " + expected), str(e.value)
    assert "\n" not in str(e.value)


def test_a_pack_gets_the_time_of_its_stages_and_the_resources_of_one():
    from orchestrator.backends.slurm.options import pack_parameters

    params = stage_parameters("evaluate", {"cpus": 2, "mem_gb": 4, "timeout_min": 30}, {"pack": ["evaluate"], "evaluate": {"gpus": 1}})
    assert params == {"time": 30, "cpus_per_task": 2, "gpus_per_node": 1, "mem": "4GB"}  # pack is no sbatch option
    assert pack_parameters(params, 8) == {**params, "time": 240}
    assert pack_parameters(params, 1) == params


def test_packs_group_the_evaluations_of_one_model():
    from orchestrator.backends.slurm.backend import packs
    from orchestrator.stages import StageTask

    def ev(key, train):
        return StageTask(kind="evaluate", key=key, config={}, deps={"train": train})

    tasks = [ev("a1", "A"), ev("b1", "B"), ev("a2", "A"), ev("b2", "B"), ev("a3", "A")]
    assert [[t.key for t in u] for u in packs(tasks, ("evaluate",))] == [["a1", "a2", "a3"], ["b1", "b2"]]
    assert [[t.key for t in u] for u in packs(tasks, ())] == [["a1"], ["b1"], ["a2"], ["b2"], ["a3"]]


def test_sweep_plan_shows_the_packs_and_refuses_a_bad_pack(capsys):
    from pathlib import Path

    from orchestrator.__main__ import main

    sweep = "name: s\ngrid: {style.mix: [true, false]}\ndomains: [C, B, M]\nbackend: {kind: slurm, slurm: {time: 10%s}}\n"
    Path("s.yaml").write_text(sweep % "")
    assert main(["sweep", "plan", "s.yaml", "--run-dir", "out"]) == 0
    out = capsys.readouterr().out
    assert "slurm: 9 stages to run as 5 jobs; backend.slurm.pack: evaluate (6 stages packed" in out  # 1 mine, 2 train, 2 packs
    Path("s.yaml").write_text(sweep % ", pack: none")
    assert main(["sweep", "plan", "s.yaml", "--run-dir", "out"]) == 0
    assert "slurm: 9 stages to run as 9 jobs (backend.slurm.pack: none)" in capsys.readouterr().out
    # what each job asks for: resources, then backend.slurm, then its <kind> block; a pack's time covers its stages
    Path("s.yaml").write_text(sweep.replace("slurm: {", "resources: {train: {cpus: 2, mem_gb: 1}}, slurm: {") % ", evaluate: {time: 5}")
    assert main(["sweep", "plan", "s.yaml", "--run-dir", "out"]) == 0
    asks = [line for line in capsys.readouterr().out.splitlines() if "job asks for" in line]
    assert asks[1:] == ["  each train job asks for: the default partition, 10 min, 0 GPUs, 2 CPUs, mem 1GB",
                        "  each evaluate job asks for: the default partition, 15 min, 0 GPUs, 1 CPU, mem 4GB (a pack of up to "
                        "3 stages, 5 min each; at most the partition's MaxTime)"], asks  # fmt: skip
    Path("s.yaml").write_text(sweep % ", pack: [train]")
    rc = main(["sweep", "plan", "s.yaml", "--run-dir", "out"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "s.yaml: backend.slurm.pack: expected a list of stage kinds to pack" in err


def test_a_pack_longer_than_the_partition_allows_is_cut_to_its_max_time(monkeypatch):
    """8 stages of 1440 min would ask for 8 days; a partition with MaxTime 2 days gets 2 days (the pack is
    requeued when it runs out), an unlimited one the whole 8 x 1440."""
    import subprocess as sp

    from orchestrator.backends.slurm import cluster
    from orchestrator.backends.slurm.options import pack_parameters

    text = (
        "PartitionName=cpu Default=YES MaxTime=UNLIMITED State=UP TRES=cpu=2,mem=24105M\n"
        "PartitionName=gpu Default=NO MaxTime=2-00:00:00 State=UP\n"
        "PartitionName=gpu-long Default=NO MaxTime=4-00:00:00 State=UP\n"
    )
    monkeypatch.setattr(cluster, "_run", lambda cmd, timeout=60: sp.CompletedProcess(cmd, 0, text, ""))
    assert cluster.max_time_min("gpu") == 2880
    assert cluster.max_time_min("gpu,gpu-long") == 5760  # the job may run in either: the longer limit counts
    assert cluster.max_time_min(None) is None and cluster.max_time_min("cpu") is None  # the default: unlimited
    assert cluster.max_time_min("nope") is None
    params = {"time": 1440, "cpus_per_task": 8}
    assert pack_parameters(params, 8, cluster.max_time_min("gpu")) == {"time": 2880, "cpus_per_task": 8}
    assert pack_parameters(params, 8, None)["time"] == 11520
    assert pack_parameters({"time": 3000}, 8, 2880)["time"] == 3000  # never less than one stage's own time


def test_the_backend_notes_a_pack_cut_short_once(monkeypatch, tmp_path):
    from orchestrator.backends.slurm import backend as mod

    monkeypatch.setattr(mod, "max_time_min", lambda partition: 2880)
    notes: list[str] = []
    backend = mod.SlurmBackend(tmp_path, notify=notes.append)
    limits: dict = {}
    for _ in range(3):  # one group per trained model: noted once
        assert backend._pack_parameters("evaluate", {"time": 1440, "partition": "gpu"}, 8, limits)["time"] == 2880
    assert len(notes) == 1 and "would ask for 11520 min (8 x time); partition gpu allows 2880 min" in notes[0]
    assert backend._pack_parameters("evaluate", {"time": 30}, 8, limits)["time"] == 240 and len(notes) == 1


def test_a_tasks_own_sacct_line_beats_the_cancelled_range_it_left():
    """After the pending rest of an array is cancelled, sacct still shows its range record
    (``1045_[1-4%1]``) naming a task that had already started and completed: that task reads
    COMPLETED (it was read CANCELLED, and its finished stage counted as failed)."""
    from orchestrator.backends.slurm.cluster import sacct_states

    out = "JobID|State\n1045_0|FAILED\n1045_1|COMPLETED\n1045_[1-4%1]|CANCELLED by 0\n7|RUNNING\n8|COMPLETED+\n"
    assert sacct_states(out) == {"1045_0": "FAILED", "1045_1": "COMPLETED", "1045_2": "CANCELLED", "1045_3": "CANCELLED",
                                 "1045_4": "CANCELLED", "7": "RUNNING", "8": "COMPLETED"}  # fmt: skip
    assert sacct_states("") == {} and sacct_states("JobID|State\n") == {}


def test_the_tasks_of_an_array_cancelled_before_it_started_read_cancelled(monkeypatch):
    """An array cancelled while all its tasks were pending is one sacct line, its bare id
    (``1358|CANCELLED by 0``): its tasks read UNKNOWN for good, so `status` listed them as not ended
    and their sweep's MLflow runs were never ended. For `status` they now take the array's ended
    state; a task with a line or a queue entry of its own keeps that. sacct also shows such a line
    for a moment while it records an array's tasks (``1519|FAILED`` for the task that failed, while
    its sister task has just completed): the backend's wait loop does not read it (a first version
    of this read a completed stage as failed), nor does anything when squeue does not answer."""
    from orchestrator.backends.slurm import cluster

    squeue = {"rc": 0}

    def run(cmd, timeout=60):
        out = {"sacct": "JobID|State\n1358|CANCELLED by 0\n1361|PENDING\n1362_0|COMPLETED\n1362|CANCELLED\n",
               "squeue": "1363_0|RUNNING\n"}[cmd[0]]  # fmt: skip
        return subprocess.CompletedProcess(cmd, squeue["rc"] if cmd[0] == "squeue" else 0, out, "")

    monkeypatch.setattr(cluster, "_run", run)
    ids = ["1358_0", "1358_1", "1361_0", "1362_0", "1363_0", "1364_0"]
    assert cluster.query_states(ids, settled=True) == {
        "1358_0": "CANCELLED", "1358_1": "CANCELLED",  # the bare array line, ended: its tasks
        "1361_0": "ENDED",  # a pending bare line that squeue does not list: sacct has not caught up
        "1362_0": "COMPLETED",  # its own line wins
        "1363_0": "RUNNING", "1364_0": "ENDED",
    }  # fmt: skip
    waiting = cluster.query_states(ids)
    assert waiting["1358_0"] == waiting["1358_1"] == "UNKNOWN" and waiting["1362_0"] == "COMPLETED"
    squeue["rc"] = 1
    assert cluster.query_states(ids, settled=True)["1358_0"] == "UNKNOWN"


def _fake_slurm(monkeypatch, tmp_path, job_ids, answers):
    """A sweep dir whose ``jobs.json`` records ``job_ids``; Slurm's commands answer from ``answers``
    (``{command: (returncode, stdout, stderr)}``, as measured on the local cluster)."""
    import json

    from orchestrator.backends.slurm import cluster, records

    def run(cmd, timeout=60):
        return subprocess.CompletedProcess(cmd, *answers[cmd[0]])

    monkeypatch.setattr(cluster, "_run", run)
    monkeypatch.setattr(records, "slurm_available", lambda: None)
    stages = {f"train/{j}": {"job_id": j, "kind": "train", "name": f"train {j}"} for j in job_ids}
    records.jobs_path(tmp_path).parent.mkdir(parents=True, exist_ok=True)
    records.jobs_path(tmp_path).write_text(json.dumps({"stages": stages}))
    return tmp_path


def test_without_slurm_accounting_the_jobs_squeue_no_longer_lists_have_ended(monkeypatch, tmp_path):
    """On a cluster without accounting (sacct: "accounting storage is disabled"), an ended job read
    UNKNOWN for good, so `status` never saw a Slurm sweep's jobs end and left its MLflow runs
    RUNNING. squeue lists every queued or running job: one it does not list reads ENDED for
    `status`, and the sweep's jobs have ended once squeue lists none of them."""
    from orchestrator.backends.slurm import cluster, records

    no_acct = (1, "", "sacct: error: Slurm accounting storage is disabled\n")
    answers = {"sacct": no_acct, "squeue": (0, "2001_1|RUNNING\n", "")}
    sweep_dir = _fake_slurm(monkeypatch, tmp_path, ["2001_0", "2001_1"], answers)
    assert cluster.query_states(["2001_0", "2001_1"], settled=True) == {"2001_0": "ENDED", "2001_1": "RUNNING"}
    assert cluster.query_states(["2001_0", "2001_1"])["2001_0"] == "UNKNOWN"  # the wait loop goes by outcome files
    assert not records.recorded_jobs_ended(sweep_dir)
    answers["squeue"] = (0, "", "")
    assert records.recorded_jobs_ended(sweep_dir)
    rows = records.slurm_status(sweep_dir)
    assert {r["state"] for r in rows} == {"ENDED"}
    answers["squeue"] = (1, "", "squeue: error: Unable to contact slurm controller (connect failure)\n")
    assert not records.recorded_jobs_ended(sweep_dir)  # no answer: it cannot tell


def test_a_job_the_controller_has_forgotten_has_ended(monkeypatch, tmp_path):
    """squeue refuses a lone job id that slurmctld no longer holds (MinJobAge after the job ended):
    ``slurm_load_jobs error: Invalid job id specified``, exit 1 (two ids, one forgotten: exit 0).
    That answer lists no job, so a one-array sweep whose jobs ended long ago has ended, with its
    states from sacct, or ENDED where accounting is off too."""
    from orchestrator.backends.slurm import cluster, records

    forgotten = (1, "", "slurm_load_jobs error: Invalid job id specified\n")
    answers = {"sacct": (0, "JobID|State\n3001_0|COMPLETED\n3001_1|FAILED\n", ""), "squeue": forgotten}
    sweep_dir = _fake_slurm(monkeypatch, tmp_path, ["3001_0", "3001_1"], answers)
    assert records.recorded_jobs_ended(sweep_dir)
    assert cluster.query_states(["3001_0", "3001_1"], settled=True) == {"3001_0": "COMPLETED", "3001_1": "FAILED"}
    answers["sacct"] = (1, "", "sacct: error: Slurm accounting storage is disabled\n")
    assert cluster.query_states(["3001_0", "3001_1"], settled=True) == {"3001_0": "ENDED", "3001_1": "ENDED"}
    assert records.recorded_jobs_ended(sweep_dir)


SHAPE_PARTITIONS = (
    "PartitionName=cpu Default=YES MaxTime=UNLIMITED State=UP TotalNodes=1\n"
    "PartitionName=gpu Default=NO MaxTime=2-00:00:00 State=UP TotalNodes=2\n"
    "PartitionName=gpu-long Default=NO MaxTime=4-00:00:00 State=UP TotalNodes=1\n"
    "PartitionName=empty Default=NO MaxTime=60 State=UP TotalNodes=0\n"
    "PartitionName=short Default=NO MaxTime=30 State=UP TotalNodes=1\n"
    "PartitionName=hidden Default=NO MaxTime=UNLIMITED State=UP Hidden=YES TotalNodes=8\n"
)
SHAPE_NODES = (
    "NodeName=c1 CPUTot=64 RealMemory=256000 Gres=(null) State=IDLE Partitions=cpu\n"
    "NodeName=g1 CPUTot=32 RealMemory=512000 Gres=gpu:a100:4(S:0-1) State=DRAIN Partitions=gpu,gpu-long\n"
    "NodeName=g2 CPUTot=16 RealMemory=128000 Gres=gpu:v100:2,gpu:t4:2(S:0,1) State=IDLE Partitions=gpu\n"
    "NodeName=s1 CPUTot=4 RealMemory=8000 Gres=gpu:a100:no_consume:1 State=IDLE Partitions=short,hidden\n"
)


@pytest.fixture
def fake_scontrol(monkeypatch):
    import subprocess as sp

    from orchestrator.backends.slurm import cluster

    answers = {"partition": SHAPE_PARTITIONS, "node": SHAPE_NODES}

    def scontrol(cmd, timeout=60):
        assert cmd[:2] == ["scontrol", "-a"] and cmd[-2] == "show", cmd  # -a: hidden partitions too
        return sp.CompletedProcess(cmd, 0, answers[cmd[-1]], "")

    monkeypatch.setattr(cluster, "_run", scontrol)
    return answers


def test_the_cluster_shape_reads_partitions_time_limits_and_each_nodes_cpus_memory_and_gpus(fake_scontrol):
    from orchestrator.backends.slurm.cluster import cluster_shape

    shape = cluster_shape()
    assert shape.partitions == {"cpu": (True, None, 1), "gpu": (False, 2880, 2), "gpu-long": (False, 5760, 1), "empty": (False, 60, 0),
                                "short": (False, 30, 1), "hidden": (False, None, 8)}  # fmt: skip
    assert shape.nodes == {"c1": (64, 256000, 0, ("cpu",)), "g1": (32, 512000, 4, ("gpu", "gpu-long")),
                           "g2": (16, 128000, 4, ("gpu",)), "s1": (4, 8000, 1, ("short", "hidden"))}  # fmt: skip


@pytest.mark.parametrize(
    "params, why",
    [
        ({"time": 60, "cpus_per_task": 64, "mem": "250GB"}, None),
        ({"time": 60, "cpus_per_task": 65}, "needs 65 CPUs, the largest node of the default partition (cpu) has 64"),
        ({"time": 60, "cpus_per_task": 1, "mem": "300GB"}, "needs 300GB of memory, the largest node of the default partition (cpu) has 256000 MB (RealMemory)"),
        ({"time": 60, "cpus_per_task": 1, "gpus_per_node": 1}, "needs 1 GPU, the largest node of the default partition (cpu) has 0"),
        ({"time": 60, "cpus_per_task": 32, "gpus_per_node": 4, "partition": "gpu"}, None),  # g1: drained, it may come back
        ({"time": 60, "cpus_per_task": 8, "gpus_per_node": 5, "partition": "gpu"}, "needs 5 GPUs, the largest node of partition gpu has 4"),
        ({"time": 60, "cpus_per_task": 20, "gpus_per_node": 4, "mem": "200GB", "partition": "gpu"}, None),
        ({"time": 60, "cpus_per_task": 20, "gpus_per_node": 4, "mem": "600GB", "partition": "gpu"},
         "needs 600GB of memory, the largest node of partition gpu has 512000 MB (RealMemory)"),
        ({"time": 3000, "cpus_per_task": 1, "partition": "gpu"}, "needs 3000 min, partition gpu allows 2880 (MaxTime)"),
        ({"time": 3000, "cpus_per_task": 1, "partition": "gpu,gpu-long"}, None),  # either: the longer limit counts
        ({"time": 60, "cpus_per_task": 1, "partition": "gpu,nosuch"},
         "partition 'nosuch' does not exist (partitions: cpu, empty, gpu, gpu-long, hidden, short)"),
        ({"time": 60, "cpus_per_task": 1, "partition": "empty"}, "partition empty has no node"),
        # several partitions: refused only when none could run it, with the first one's reason
        ({"time": 60, "cpus_per_task": 2, "partition": "short,cpu"}, None),  # short's MaxTime, cpu's fits
        ({"time": 60, "cpus_per_task": 128, "partition": "short,cpu"}, "needs 60 min, partition short allows 30 (MaxTime)"),
        # fewer of its nodes seen than it has (hidden from this user): its nodes give no verdict
        ({"time": 60, "cpus_per_task": 999, "partition": "hidden"}, None),
    ],
)
def test_a_job_no_node_could_run_says_what_it_needs_and_what_the_partition_has(fake_scontrol, params, why):
    from orchestrator.backends.slurm.cluster import cluster_shape

    assert cluster_shape().unrunnable(params) == why


def test_each_need_met_by_another_node_is_still_unrunnable(fake_scontrol):
    """16 CPUs (only g2 has them) and 400 GB (only g1 has it): each need is met by some node, both by none;
    a job runs on one node, so the check is per node, not per largest value."""
    from orchestrator.backends.slurm.cluster import cluster_shape

    fake_scontrol["node"] = fake_scontrol["node"].replace("g1 CPUTot=32", "g1 CPUTot=8")
    assert cluster_shape().unrunnable({"time": 60, "cpus_per_task": 16, "mem": "400GB", "partition": "gpu"}) == (
        "needs 16 CPUs and 400GB of memory on one node; no node of partition gpu has all of them"
    )


def test_no_default_partition_and_a_silent_controller(fake_scontrol, monkeypatch):
    from orchestrator.backends.slurm import cluster

    fake_scontrol["partition"] = fake_scontrol["partition"].replace("Default=YES", "Default=NO")
    assert cluster.cluster_shape().unrunnable({"time": 60}) == "the cluster has no default partition: set backend.slurm.partition"

    def silent(cmd, timeout=60):
        raise subprocess.TimeoutExpired(cmd, timeout)

    monkeypatch.setattr(cluster, "_run", silent)
    assert cluster.cluster_shape() is None


def test_a_silent_controller_loses_no_job_and_is_said_once(monkeypatch, tmp_path):
    """squeue and sacct both fail while the head node restarts, so every job reads UNKNOWN; after
    ``lost_after_s`` the wait loop failed the stages as lost while their jobs ran on. While
    ``scontrol ping`` says the controller is down, no job counts as lost: the wait says so once,
    and once more when the controller answers again."""
    import json

    from orchestrator.backends.slurm import backend as mod
    from orchestrator.stages import StageTask

    down = "slurmctld does not answer 'scontrol ping': Slurmctld(primary) at vm is DOWN"
    polls = iter(["RUNNING", "UNKNOWN", "UNKNOWN", "UNKNOWN", "RUNNING", "COMPLETED"])  # one state per poll
    last = {"state": ""}

    def query_states(ids):
        last["state"] = next(polls)
        return {j: last["state"] for j in ids}

    monkeypatch.setattr(mod, "query_states", query_states)
    monkeypatch.setattr(mod, "slurm_available", lambda: down if last["state"] == "UNKNOWN" else None)
    notes: list[str] = []
    backend = mod.SlurmBackend(tmp_path, poll_s=0.0, lost_after_s=0.0, notify=notes.append)
    task = StageTask(kind="train", key="k", config={}, deps={}, store=str(tmp_path / "store"), name="train k")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "k.json").write_text(json.dumps({"key": "k", "status": "done", "seconds": 1.0}))
    rec = {"job_id": "41", "key": "k", "outcome_dir": str(tmp_path / "out"), "stdout": "o", "stderr": "e"}
    events: list[str] = []
    out = backend.wait({"k": task}, {"k": rec}, lambda event, task, outcome: events.append(event))
    assert out["k"].status == "done" and events == ["start", "done"], (out, events)
    assert notes[0] == f"slurm: {down}; waiting for it (the jobs run on without it; Ctrl-C leaves them running)"
    assert len(notes) == 2 and notes[1].startswith("slurm: the controller answers again after "), notes


def test_a_slurm_command_that_outlives_its_bound_reads_as_no_answer(monkeypatch):
    """squeue against a controller whose host is gone waits on each connection; past the 60 s bound
    subprocess raised TimeoutExpired out of the wait loop, a traceback in place of the driver's wait.
    It now reads as an unanswered question: the states sacct gave, else UNKNOWN."""
    from orchestrator.backends.slurm import cluster

    def run(cmd, timeout=60):
        if cmd[0] == "squeue":
            raise subprocess.TimeoutExpired(cmd, timeout)
        return subprocess.CompletedProcess(cmd, 0, "JobID|State\n5001|RUNNING\n", "")

    monkeypatch.setattr(cluster, "_run", run)
    assert cluster.query_states(["5001", "5002"]) == {"5001": "RUNNING", "5002": "UNKNOWN"}
    assert cluster.pending_reasons(["5001"]) == {}
    cluster.cancel_pending("5001")  # nothing raised


def test_a_kinds_stages_keep_to_its_cap_across_the_plan(tmp_path, monkeypatch):
    """The ablation's shape: 4 trainings read a style bank, 4 do not. The 4 that do not went out in
    the first wave with the mining, the others in the second, each wave capped on its own (6
    trainings at once at cap 3), and so did their evaluations. A wave is now one stage kind: the 8
    trainings share the cap, and so do the 8 evaluation packs, in 3 lanes. Submitted through
    submitit, with `sbatch` stood in."""
    from orchestrator.backends.slurm import backend as slurm_backend
    from orchestrator.backends.slurm.backend import SlurmBackend
    from orchestrator.stages import StageTask

    bin_dir = tmp_path / "fake-slurm-bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(  # job ids 101, 102, ... in submission order
        f'#!/bin/sh\nn=$(cat {tmp_path}/n 2>/dev/null || echo 100); n=$((n+1)); echo $n > {tmp_path}/n; echo "Submitted batch job $n"\n'
    )
    (bin_dir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(slurm_backend, "max_time_min", lambda partition: None)
    monkeypatch.setattr(slurm_backend, "slurm_available", lambda: None)  # no cluster asked: sbatch is the stand-in
    real, seen = slurm_backend.executor_parameters, []  # each array's executor_parameters keywords
    monkeypatch.setattr(slurm_backend, "executor_parameters", lambda params, **kw: seen.append(kw) or real(params, **kw))

    def stage(kind: str, key: str, deps: dict[str, str]) -> StageTask:
        return StageTask(kind=kind, key=key, config={}, deps=deps, store=str(tmp_path / "store"), name=key,
                         log_path=str(tmp_path / "logs" / f"{key}.log"))  # fmt: skip

    tasks = [stage("mine", "m", {})]
    tasks += [stage("train", f"t{i}", {"mine": "m"} if i % 2 else {}) for i in range(8)]  # odd ones read the bank
    tasks += [stage("evaluate", f"e{i}{d}", {"train": f"t{i}"}) for i in range(8) for d in "CB"]  # one pack a training
    backend = SlurmBackend(sweep_dir=tmp_path / "runs" / "abl", options={"array_parallelism": 3}, max_array_size=1000, notify=lambda s: None)
    records = backend.submit(tasks)

    def arrays(kind: str) -> list[tuple[str, int, str]]:  # (job id, --array %cap, dependency), in submission order
        ids = list(dict.fromkeys(r["array_job_id"] for r in records.values() if r["kind"] == kind))
        kws = [kw for kw in seen if kw["kind"] == kind]
        return [(i, kw["cap"], next(r["dependency"] or "" for r in records.values() if r["array_job_id"] == i)) for i, kw in zip(ids, kws)]

    trains = arrays("train")
    assert len(trains) == 2 and sum(cap for _, cap, _ in trains) == 3  # one wave: the two arrays share the cap of 3
    assert [dep.count("afterany") for _, _, dep in trains] == [0, 0]  # side by side, neither waits for the other
    packs = arrays("evaluate")
    assert len(packs) == 8 and all(cap == 1 for _, cap, _ in packs)
    for i, (_, _, dep) in enumerate(packs):  # 3 lanes: each pack waits for the earlier ones of its lane
        lane = [packs[j][0] for j in range(i % 3, i, 3)]
        assert dep.endswith(f",afterany:{':'.join(lane)}" if lane else dep.split(",")[0]), (i, dep)
        assert dep.startswith(f"afterok:{records[f't{i}']['job_id']}")
