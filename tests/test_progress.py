"""The sweep's live progress: ETA from finished stages of the same kind (fake clock), running stages'
own progress from their progress files, plain summary lines every minute, the rich display."""

from __future__ import annotations

import io
import re
from collections import Counter
from pathlib import Path

import pytest
from rich.console import Console

from orchestrator.stages import StageOutcome, StageTask
from orchestrator.progress import Eta, EtaModel, Progress, RunningStage, format_duration, progress_path, read_progress, write_progress


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _task(kind: str, i: int, tmp_path, iterations: int = 300) -> StageTask:
    key = f"{kind}{i:02d}" + "0" * 58
    return StageTask(
        kind=kind, key=key, config={"train": {"iterations": iterations}},
        log_path=str(tmp_path / "logs" / f"{kind}-{key}.log"), name=f"{kind} [✓,✗] {key[:8]}",
    )  # fmt: skip


def _done(task: StageTask, seconds: float = 0.0) -> StageOutcome:
    return StageOutcome(task.key, "done", seconds, 1)


def test_eta_model_means_per_kind_and_parallel_slots():
    m = EtaModel(slots=2)
    assert m.eta([], Counter(train=2)) == Eta(None, False) and str(m.eta([], Counter(train=2))) == "?"
    m.finished("train", 100.0)
    m.finished("train", 140.0)  # mean 120
    m.finished("evaluate", 10.0)
    # one train running for 30 s (90 left), 3 trains + 8 evaluations to go: (90 + 360 + 80) / 2 slots
    assert m.eta([("train", 30.0, None)], Counter(train=3, evaluate=8)) == Eta(pytest.approx(265.0), True)
    # a single stage left cannot use two slots
    assert m.eta([("train", 30.0, None)], Counter()).seconds == pytest.approx(90.0)
    # a running stage past the mean counts as finishing now, never negative
    assert m.eta([("train", 500.0, None)], Counter()).seconds == 0.0
    # before the first mine finishes, the running one's own expected duration stands in (50 s, 20 s in)
    assert m.eta([("mine", 20.0, 50.0)], Counter()) == Eta(pytest.approx(30.0), True)
    assert m.eta([("mine", 1.0, None)], Counter()).seconds is None  # too early to extrapolate
    # kinds without an estimate are left out, and it says so: 2 trains known (240 s on 2 slots), 4 "other"
    # unknown; not "≥": the stages counted may take less than their kind's mean so far
    low = m.eta([], Counter(train=2, other=4))
    assert low == Eta(pytest.approx(120.0), False) and str(low) == "~2:00"


def test_progress_eta_from_stage_durations_with_fake_clock(tmp_path):
    clock = FakeClock()
    trains = [_task("train", i, tmp_path) for i in range(3)]
    evals = [_task("evaluate", i, tmp_path) for i in range(6)]
    p = Progress([*trains, *evals], total=10, cached=1, console=Console(file=io.StringIO()), live=False,
                 max_parallel=1, clock=clock)  # fmt: skip
    assert p.eta().seconds is None
    p.on_event("start", trains[0], None)
    clock.advance(60.0)
    p.on_event("done", trains[0], _done(trains[0], 59.0))  # train took 60 s on the driver's clock
    p.on_event("start", evals[0], None)
    clock.advance(5.0)
    p.on_event("done", evals[0], _done(evals[0], 5.0))
    # 2 trains and 5 evaluations left, one slot: 2*60 + 5*5
    assert p.eta() == Eta(pytest.approx(145.0), True)
    p.on_event("start", trains[1], None)
    clock.advance(20.0)
    assert p.eta().seconds == pytest.approx(40.0 + 60.0 + 25.0)
    assert p.counts == {"done": 2, "cached": 1, "running": 1, "failed": 0, "retry": 0}
    # a retry puts the stage back to the queue
    p.on_event("retry", trains[1], StageOutcome(trains[1].key, "failed", error="boom"))
    assert p.eta().seconds == pytest.approx(2 * 60.0 + 25.0) and p.counts["running"] == 0
    # a stage whose start was seen only as it ended (Ray asks its timer once a second) counts its own 15 s, not 0
    p.on_event("start", evals[1], None)
    p.on_event("done", evals[1], _done(evals[1], 15.0))
    assert p.eta().seconds == pytest.approx(2 * 60.0 + 4 * (5.0 + 15.0) / 2)


def test_plain_lines_include_evaluations_and_a_summary_every_minute(tmp_path):
    clock = FakeClock()
    buf = io.StringIO()
    train, ev = _task("train", 0, tmp_path, iterations=300), _task("evaluate", 0, tmp_path)
    p = Progress([train, ev], total=2, cached=0, console=Console(file=buf, width=300), live=False, clock=clock)
    p.on_event("start", train, None)
    write_progress(progress_path(train.log_path), 30, 300)
    clock.advance(30.0)
    assert p.tick() is False  # less than a minute since the start; the progress is read all the same
    write_progress(progress_path(train.log_path), 120, 300)
    clock.advance(31.0)
    assert p.tick() is True
    clock.advance(10.0)
    assert p.tick() is False  # the next one comes a minute later
    p.on_event("done", train, _done(train, 71.0))
    p.on_event("start", ev, None)
    p.on_event("done", ev, _done(ev, 2.0))
    clock.advance(120.0)
    assert p.tick() is False  # nothing running: no summary
    lines = buf.getvalue().splitlines()
    stamp = r"^\[\d\d:\d\d:\d\d \+\s*[\d.]+s\] "
    assert all(re.match(stamp, ln) for ln in lines), lines
    assert any("start   evaluate [✓,✗]" in ln for ln in lines)
    summaries = [ln for ln in lines if "progress 0/2" in ln]
    assert len(summaries) == 1
    assert "running 1" in summaries[0] and "iteration 120/300" in summaries[0] and "(1:01)" in summaries[0]
    # no train finished: 90 iterations in the 31 s since the first report seen, 180 to go (62 s); the
    # evaluation has no estimate yet
    assert "ETA ~1:02" in summaries[0]
    assert any("done    train" in ln and "[1/2]" in ln for ln in lines)


def test_a_running_stage_extrapolates_from_its_pace_after_its_first_report(tmp_path):
    """Before the first stage of a kind finishes, a running one's own pace stands in for the kind's
    duration. Measured from its first report, not from its start: the smoke mining spends 6 s loading
    and reading batches, then takes 10 s for its 100 steps, and elapsed / fraction at 5 % guessed 2:10
    for it; a resumed training at iteration 200/400 two seconds in guessed it would take 4 s."""
    clock = FakeClock()

    def started(task: StageTask) -> Progress:
        p = Progress([task], total=1, cached=0, console=Console(file=io.StringIO()), live=False, clock=clock)
        p.on_event("start", task, None)
        return p

    def reports(p: Progress, task: StageTask, after: float, step: int | None, total: int) -> Eta:
        """``after`` seconds on, the stage's progress file says ``step`` (None: unchanged); the ETA then."""
        clock.advance(after)
        if step is not None:
            write_progress(progress_path(task.log_path), step, total)
        p.refresh_running()
        return p.eta()

    mine = _task("mine", 0, tmp_path)
    p = started(mine)
    assert reports(p, mine, 6.0, 0, 100).seconds is None  # one report: no pace yet
    assert reports(p, mine, 0.5, 5, 100) == Eta(pytest.approx(9.5), True)  # 0.1 s a step, 95 to go
    # the same step seen again: the pace is kept from when it was first seen
    assert reports(p, mine, 0.5, None, 100).seconds == pytest.approx(9.0)

    resumed = _task("train", 0, tmp_path, iterations=400)
    p = started(resumed)
    reports(p, resumed, 2.0, 200, 400)
    assert reports(p, resumed, 5.0, 210, 400).seconds is None  # 10 iterations since its first report: under 5 % of 400
    assert reports(p, resumed, 5.0, 220, 400) == Eta(pytest.approx(90.0), True)  # 0.5 s an iteration, 180 to go


def test_rich_display_shows_counts_running_stage_iteration_and_eta(tmp_path):
    clock = FakeClock()
    trains = [_task("train", i, tmp_path, iterations=300) for i in range(2)]
    buf = io.StringIO()
    console = Console(file=buf, width=160, force_terminal=True, color_system=None)
    p = Progress(trains, total=5, cached=2, console=console, live=False, clock=clock, max_parallel=1)
    p.on_event("start", trains[0], None)
    clock.advance(100.0)
    p.on_event("done", trains[0], _done(trains[0]))
    p.on_event("start", trains[1], None)
    write_progress(progress_path(trains[1].log_path), 150, 300)
    clock.advance(25.0)
    console.print(p.render())
    text = buf.getvalue()
    assert "3/5" in text and "done 1 · running 1 · failed 0 · cached 2" in text
    assert "train [✓,✗] train010" in text and "iteration 150/300" in text
    assert "ETA 1:15" in text  # the one finished train took 100 s; 25 s in
    assert "━" in text  # bars


@pytest.mark.parametrize("width, counts", [
    (160, "done 1 · running 1 · failed 0 · cached 2"),
    (80, "done 1 · running 1 · cached 2"),  # had wrapped mid-counters, the clock between them
    (60, "done 1 · running 1 · cached 2"),
])
def test_the_overall_line_stays_one_line_at_any_terminal_width(tmp_path, width, counts):
    clock = FakeClock()
    trains = [_task("train", i, tmp_path, iterations=300) for i in range(2)]
    buf = io.StringIO()
    console = Console(file=buf, width=width, force_terminal=True, color_system=None)
    p = Progress(trains, total=125, cached=2, console=console, live=False, clock=clock, max_parallel=1)
    p.on_event("start", trains[0], None)
    clock.advance(100.0)
    p.on_event("done", trains[0], _done(trains[0]))
    p.on_event("start", trains[1], None)
    clock.advance(4000.0)
    buf.seek(0)
    buf.truncate()  # the event lines of a display that is not live
    console.print(p.render())
    head, *_ = buf.getvalue().splitlines()
    assert head.startswith("stages ") and len(head.rstrip()) <= width, buf.getvalue()
    assert " ".join(head.split()).endswith(f"3/125 {counts} 1:08:20 ETA 0:00"), head


def test_ctrl_c_shows_stopping_in_place_of_the_eta(tmp_path):
    """After Ctrl-C the display went on for seconds (the workers stopping, a training checkpointing)
    with `running 0 … ETA 0:00`, as if the sweep were ending well. The driver's handler now tells the
    display first, which then says it is stopping."""
    import os
    import signal
    import time

    from orchestrator.driver import _stopping_for_a_checkpoint
    from orchestrator.execute import StopRequest

    trains = [_task("train", i, tmp_path, iterations=300) for i in range(2)]
    buf = io.StringIO()
    console = Console(file=buf, width=160, force_terminal=True, color_system=None)
    p = Progress(trains, total=2, cached=0, console=console, live=False, clock=FakeClock())
    p.on_event("start", trains[0], None)
    console.print(p.render())
    assert "ETA" in buf.getvalue() and "stopping" not in buf.getvalue()
    with pytest.raises(KeyboardInterrupt), _stopping_for_a_checkpoint(StopRequest(), p.stopping):
        os.kill(os.getpid(), signal.SIGINT)  # no training in this process: it stops at once
        time.sleep(10)
    buf.seek(0)
    buf.truncate()
    console.print(p.render())
    assert "stopping…" in buf.getvalue() and "ETA" not in buf.getvalue(), buf.getvalue()
    assert p.summary().startswith("progress 0/2: done 0 · running 1 · failed 0 · cached 0 · stopping…")  # not on a terminal


def test_an_evaluation_stage_reports_its_images(tmp_path, monkeypatch):
    """An evaluation showed only "evaluating" (a real domain's 500 to 2,000 full-resolution images
    take minutes); it now counts its images, from the real evaluation loop."""
    import torch

    from famix_core.evaluate import evaluate_model
    from orchestrator import execute
    from orchestrator.stages import StageTask
    from orchestrator.store import Store

    task = StageTask(kind="evaluate", key="e" * 64, config={}, store=str(tmp_path / "store"), domain="C",
                     deps={"train": "t" * 64}, log_path=str(tmp_path / "logs" / "evaluate-e.log"))  # fmt: skip
    seen: list = []

    class Model(torch.nn.Module):
        num_classes = 3

        def forward(self, x):
            return torch.zeros(x.shape[0], 3, *x.shape[-2:])

    data = [(torch.zeros(3, 8, 8), torch.zeros(8, 8, dtype=torch.long)) for _ in range(5)]

    def fake_evaluate_domain(cfg, weights, domain, out_dir, *, progress=None):
        def tell(done, total):
            progress(done, total)
            seen.append(read_progress(progress_path(task.log_path)))

        _, n = evaluate_model(Model(), data, 3, torch.device("cpu"), batch_size=2, progress=tell)
        return {"miou": 0.5, "iou": {}, "pixel_acc": 1.0, "n_images": n}

    store = Store(task.store)
    tmp = store.begin()
    (tmp / "model.safetensors").write_bytes(b"")  # never read: the evaluation is the fake's
    store.commit(tmp, "train", task.deps["train"], {}, 1.0)
    monkeypatch.setattr("famix_core.evaluate.evaluate_domain", fake_evaluate_domain)
    monkeypatch.setattr(execute.StageContext, "config", lambda self: None)
    monkeypatch.setattr(execute.StageContext, "artifact", lambda self, path, name: None)
    out = execute.execute_stage(task)
    assert out.status == "done", out.error
    assert seen[0] == (2, 5) and seen[-1] == (5, 5)  # 3 forwards of up to 2 images; the last is always written
    running = RunningStage(task, 0.0)
    running.step, running.total = 2, 5
    assert Progress._stage_progress(running) == "image 2/5"


def test_progress_file_round_trip_and_stage_writes_it(tmp_path):
    path = progress_path(tmp_path / "logs" / "train-abc.log")
    assert path.name == "train-abc.progress.json" and read_progress(path) is None
    write_progress(path, 7, 20)
    assert read_progress(path) == (7, 20)
    path.write_text("{broken")
    assert read_progress(path) is None
    assert format_duration(3725) == "1:02:05" and format_duration(65) == "1:05" and format_duration(None) == "?"


def test_execute_stage_reports_training_iterations_and_removes_the_file(tmp_path, monkeypatch):
    from orchestrator import execute

    seen: list[tuple[int, int | None] | None] = []
    task = StageTask(kind="train", key="k" * 64, config={"train": {"iterations": 20}}, store=str(tmp_path / "store"),
                     log_path=str(tmp_path / "logs" / "train-k.log"))  # fmt: skip

    def fake_train(ctx):
        for it in (10, 20):
            ctx.log({"train/loss": 1.0}, it)
            seen.append(read_progress(progress_path(task.log_path)))
        return {}

    monkeypatch.setitem(execute.STAGE_RUNNERS, "train", fake_train)
    out = execute.execute_stage(task)
    assert out.status == "done"
    assert seen == [(10, 20), (20, 20)]
    assert not progress_path(task.log_path).exists()


def test_the_mining_stage_reports_its_steps_of_a_total(tmp_path, monkeypatch):
    """The mining row showed a step count with no total, bar or ETA of its own (its optimization steps
    depend on the classes each batch holds). It now tells its steps of an estimated total."""
    from famix_core import mining
    from orchestrator import execute

    seen: list[tuple[int, int | None] | None] = []
    task = StageTask(kind="mine", key="m" * 64, config={}, store=str(tmp_path / "store"), log_path=str(tmp_path / "logs" / "mine-m.log"))

    def fake_mine(cfg, out, *, log, progress):
        for step in (1, 2, 3):
            log({"mine/loss": 1.0}, step - 1)  # the loss's step, 0-based, writes no progress of its own
            progress(step, 3)
            seen.append(read_progress(progress_path(task.log_path)))
        (Path(out) / "summary.json").write_text("{}")
        return {}

    monkeypatch.setattr(mining, "mine_styles", fake_mine)
    monkeypatch.setattr(execute.StageContext, "config", lambda self: None)
    monkeypatch.setattr(execute.StageContext, "artifact", lambda self, path, name: None)
    out = execute.execute_stage(task)
    assert out.status == "done", out.error
    assert seen[0] == (1, 3) and seen[-1] == (3, 3)  # the first and the last are always written; others twice a second
    running = RunningStage(task, 0.0)
    running.step, running.total = 2, 5
    assert running.fraction == pytest.approx(0.4) and Progress._stage_progress(running) == "step 2/5"


def test_the_spinner_leaves_stderr_alone_and_no_line_behind(capsys):
    """rich's console.status sends stderr to the console (stdout) while it spins: the driver's one-line
    notes (``famix: note: … skipped``) came out on stdout. Not on a terminal it shows nothing at all."""
    import io
    import sys

    from rich.console import Console

    from orchestrator.progress import busy

    for terminal in (True, False):
        buf = io.StringIO()
        console = Console(file=buf, force_terminal=terminal, width=80)
        with busy(console, "writing the report"):
            print("famix: note: report skipped", file=sys.stderr)
        assert capsys.readouterr().err == "famix: note: report skipped\n"
        assert "famix: note" not in buf.getvalue()
        if not terminal:
            assert buf.getvalue() == ""


@pytest.mark.parametrize("n_lines", [1, 5, 12])
def test_a_failed_stages_error_shows_its_first_lines_and_its_last(n_lines):
    """A Slurm stage's error ends with `(slurm job N; logs: OUT ERR)`; after a traceback it was cut at
    the 4th line, so the summary named neither the job nor its logs (docs/slurm.md says it does)."""
    from orchestrator.progress import print_failures

    error = "\n".join([f"line {i}" for i in range(n_lines - 1)] + ["(slurm job 27_1; logs: a.out a.err)"])
    task = StageTask(kind="train", key="k" * 64, config={}, store="s", name="train [✓] k")
    buf = io.StringIO()
    print_failures(Console(file=buf, width=200), [(task, StageOutcome(task.key, "failed", error=error, attempts=2))])
    shown = [line.strip() for line in buf.getvalue().splitlines()[3:]]
    assert shown[-1] == "(slurm job 27_1; logs: a.out a.err)", buf.getvalue()
    assert shown == (error.splitlines() if n_lines <= 5 else ["line 0", "line 1", "line 2", "… (8 lines more in the log)", shown[-1]])


def test_a_slurm_job_cancelled_from_outside_is_said_and_counted(tmp_path):
    """`scancel` of one job of an attached Slurm sweep: no line, `failed 0` on the progress line and no
    failure list, while the last line counted it failed. A stage an interrupt cancelled (no job) stays quiet."""
    buf = io.StringIO()
    trains = [_task("train", i, tmp_path) for i in range(2)]
    p = Progress(trains, total=2, cached=0, console=Console(file=buf, width=300), live=False, clock=FakeClock())
    p.on_event("start", trains[0], None)
    scancelled = StageOutcome(trains[0].key, "cancelled", error="cancelled (slurm job 27_1; logs: a.out a.err)", job_id="27_1")
    p.on_event("cancelled", trains[0], scancelled)
    p.on_event("cancelled", trains[1], StageOutcome(trains[1].key, "cancelled", error="cancelled"))  # Ctrl-C's cancel_rest
    assert f"CANCELLED {trains[0].name}: cancelled (slurm job 27_1; logs: a.out a.err)" in buf.getvalue()
    assert trains[1].name not in buf.getvalue().split("CANCELLED")[-1]
    assert p.counts["failed"] == 1 and p.failures == [(trains[0], scancelled)]
