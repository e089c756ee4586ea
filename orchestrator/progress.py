"""What the user sees while a sweep runs: stage counts, the running stages with their own progress, an ETA.

On a terminal: a live rich display, refreshed twice a second::

    stages ━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━  12/73  done 4 · running 1 · failed 0 · cached 7  0:01:23  ETA 0:02:10
      train [✗,✓,✗] 3f2a9c1b  ━━━━━━━━━━╸━━━━━━━━━  iteration 120/300   0:00:14

Not on a terminal (a log file, CI, ``| tee``): one timestamped line per stage event (start,
including evaluations, done, failed, retry) and, while stages run, a one-line summary every minute.

A running stage reports its progress through a small JSON file beside its log
(``<kind>-<key>.progress.json``: ``{"step", "total", "time"}``), written by
:mod:`orchestrator.execute` (a training's iterations from the engine's log callback, the mining's
steps and an evaluation's images from their progress callbacks). The driver only reads it, so the
same display works for stages in-process, on Ray workers and on Slurm nodes (shared run dir).

The ETA sums, per stage kind, the mean duration of the finished stages of that kind over the
stages still to run (and what is left of the running ones), divided by the parallel slots. Before
the first stage of a kind finishes, a running one's pace since its first report stands in.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from famix_core.io import atomic_write_json
from famix_core.text import count
from orchestrator.stages import NOT_STARTED_DISK_FULL, StageOutcome, StageTask, disk_full, failed_dependency

__all__ = [
    "progress_path",
    "write_progress",
    "read_progress",
    "Eta",
    "EtaModel",
    "Progress",
    "format_duration",
    "make_console",
    "print_table",
    "print_notes",
    "busy",
    "print_failures",
]

Clock = Callable[[], float]


# ----------------------------------------------------------------------------------------------- progress files


def progress_path(log_path: str | Path) -> Path:
    """The progress file of a stage: its log path with ``.progress.json`` instead of ``.log``."""
    p = Path(log_path)
    return p.with_name(p.stem + ".progress.json")


def write_progress(path: str | Path, step: int, total: int | None) -> None:
    """Record that a stage reached ``step`` (of ``total``, when known)."""
    atomic_write_json(path, {"step": int(step), "total": int(total) if total else None, "time": time.time()})


def read_progress(path: str | Path) -> tuple[int, int | None] | None:
    """``(step, total)`` from a progress file, or None when there is none (yet) or it is unreadable."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return int(data["step"]), (int(data["total"]) if data.get("total") else None)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def format_duration(seconds: float | None) -> str:
    """``1:02:03`` / ``2:03``; ``?`` when unknown."""
    if seconds is None:
        return "?"
    s = int(round(max(seconds, 0.0)))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


# ----------------------------------------------------------------------------------------------- ETA


@dataclass
class RunningStage:
    """A stage that started and has not finished: when it started, how far it says it is, and when
    the driver first saw it report a step (its own pace is measured from there, so that the seconds
    a stage spends before its first step, or the steps a resumed training had already done, do not
    bend the estimate)."""

    task: StageTask
    started: float
    step: int | None = None
    total: int | None = None
    first: tuple[int, float] | None = None  # (step, when) of the first report seen
    step_seen: float | None = None  # when the current step was first seen

    @property
    def fraction(self) -> float | None:
        return self.step / self.total if self.step is not None and self.total else None

    def saw(self, step: int, total: int | None, now: float) -> None:
        """The stage's progress file says ``step`` of ``total`` at ``now`` (the driver's clock)."""
        if self.first is None:
            self.first = (step, now)
        if step != self.step:
            self.step_seen = now
        self.step, self.total = step, total

    def expected(self) -> float | None:
        """This stage's whole duration (from its start), extrapolated from its pace since its first
        report; None until it has gone 5 % of its total since then."""
        if self.first is None or self.step is None or self.step_seen is None or not self.total:
            return None
        first_step, first_seen = self.first
        steps = self.step - first_step
        if steps <= 0 or steps < 0.05 * self.total:
            return None
        per_step = (self.step_seen - first_seen) / steps
        return self.step_seen - self.started + max(self.total - self.step, 0) * per_step


class EtaModel:
    """Remaining wall time from the durations of finished stages of the same kind.

    Args:
        slots: stages that run at once (``max_parallel``).
    """

    def __init__(self, slots: int):
        self.slots = max(int(slots), 1)
        self.durations: dict[str, list[float]] = {}

    def finished(self, kind: str, seconds: float) -> None:
        """Record the duration of a finished (not cached) stage."""
        self.durations.setdefault(kind, []).append(float(seconds))

    def typical(self, kind: str, running: list[tuple[str, float, float | None]] = ()) -> float | None:
        """Mean duration of the finished stages of ``kind``; before the first one finishes, the longest
        that a running stage of that kind expects from its own pace (:meth:`RunningStage.expected`)."""
        done = self.durations.get(kind)
        if done:
            return sum(done) / len(done)
        guesses = [expected for k, _, expected in running if k == kind and expected is not None]
        return max(guesses) if guesses else None

    def eta(self, running: list[tuple[str, float, float | None]], pending: Counter) -> Eta:
        """Time until every stage is finished.

        Args:
            running: ``(kind, elapsed seconds, its expected duration or None)`` per running stage.
            pending: kind -> number of stages not started yet.

        Returns:
            The estimate; stages of a kind with no estimate yet are left out (``exact`` False), and
            with no estimate at all ``seconds`` is None.
        """
        work = 0.0
        longest = 0.0
        known = unknown = 0
        for kind, elapsed, _ in running:
            typ = self.typical(kind, running)
            if typ is None:
                unknown += 1
                continue
            known += 1
            left = max(typ - elapsed, 0.0)
            work += left
            longest = max(longest, left)
        for kind, n in pending.items():
            if n <= 0:
                continue
            typ = self.typical(kind, running)
            if typ is None:
                unknown += n
                continue
            known += n
            work += n * typ
        if known == 0 and unknown:
            return Eta(None, False)
        busy = min(self.slots, max(known + unknown, 1))
        return Eta(max(work / busy, longest), unknown == 0)


@dataclass(frozen=True)
class Eta:
    """Seconds left (None: unknown); ``exact`` False when some stages have no estimate yet and are left
    out (shown ``~``: rougher, and not a bound, since the stages that are counted may take less or more
    than their kind's mean so far)."""

    seconds: float | None
    exact: bool = True

    def __str__(self) -> str:
        if self.seconds is None:
            return "?"
        return format_duration(self.seconds) if self.exact else f"~{format_duration(self.seconds)}"


# ----------------------------------------------------------------------------------------------- display


def _stamp(elapsed: float) -> str:
    return f"[{time.strftime('%H:%M:%S')} +{elapsed:7.1f}s]"


def _first_line(outcome: StageOutcome | None) -> str:
    return (outcome.error or "").splitlines()[0] if outcome is not None and outcome.error else ""


class Progress:
    """Stage counts, running stages and an ETA; failures printed as they happen.

    Args:
        tasks: the stages handed to the backend (those not done yet).
        total: stages in the plan.
        cached: stages already done before this run.
        console: a rich Console.
        live: rich live display (a terminal) instead of plain lines.
        max_parallel: stages that run at once (for the ETA).
        clock: monotonic seconds (tests pass a fake one).
        summary_every: seconds between plain summary lines while stages run (not on a terminal).
    """

    def __init__(
        self,
        tasks: list[StageTask],
        total: int,
        cached: int,
        console: Any,
        live: bool,
        *,
        max_parallel: int = 1,
        clock: Clock = time.monotonic,
        summary_every: float = 60.0,
    ):
        self.total = total
        self.console = console
        self.clock = clock
        self.counts = {"done": 0, "cached": cached, "running": 0, "failed": 0, "retry": 0}
        self.t0 = clock()
        self.failures: list[tuple[StageTask, StageOutcome]] = []
        self.not_started: list[StageTask] = []  # not started after a full disk
        self.pending: dict[str, StageTask] = {t.key: t for t in tasks}
        self.names = {t.key: t.name for t in tasks if t.name}  # "dependency <key> failed" names the stage
        self.running: dict[str, RunningStage] = {}
        self.eta_model = EtaModel(max_parallel)
        self.summary_every = summary_every
        self._last_summary = self.t0
        self._lock = threading.RLock()
        self._live_on = live
        self._live = None
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._stopping = False  # Ctrl-C or SIGTERM came: the stages are being stopped

    # -------------------------------------------------------------------------------- lifecycle

    def __enter__(self) -> "Progress":
        if self._live_on:
            from rich.live import Live

            self._live = Live(get_renderable=self.render, console=self.console, refresh_per_second=2, transient=False)
            self._live.start()
        else:
            self._ticker = threading.Thread(target=self._tick_loop, name="famix-progress", daemon=True)
            self._ticker.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._live is not None:
            self._live.stop()
        if self._ticker is not None:
            self._ticker.join(timeout=5)

    def stopping(self) -> None:
        """The sweep was told to stop (Ctrl-C, SIGTERM): the display says so in place of its ETA while
        the stages stop (a training checkpoints first). Signal-safe: it only sets a flag."""
        self._stopping = True

    def _tick_loop(self) -> None:
        while not self._stop.wait(min(5.0, self.summary_every)):
            self.tick()

    # -------------------------------------------------------------------------------- state

    def _line(self, text: str) -> None:
        self.console.print(f"{_stamp(self.clock() - self.t0)} {text}", highlight=False, markup=False)

    def refresh_running(self) -> None:
        """Read the progress file of every running stage."""
        now = self.clock()
        for r in self.running.values():
            if r.task.log_path:
                got = read_progress(progress_path(r.task.log_path))
                if got is not None:
                    r.saw(*got, now)

    def _running_view(self, now: float) -> list[tuple[str, float, float | None]]:
        return [(r.task.kind, now - r.started, r.expected()) for r in self.running.values()]

    def eta(self) -> Eta:
        """Time left (rougher, ``~``, while some kind still to run has no finished stage: it is left out)."""
        with self._lock:
            now = self.clock()
            pending = Counter(t.kind for t in self.pending.values())
            return self.eta_model.eta(self._running_view(now), pending)

    def on_event(self, event: str, task: StageTask, outcome: StageOutcome | None) -> None:
        """The backends' event callback (``start | done | failed | retry | cancelled``)."""
        with self._lock:
            self._on_event(event, task, outcome)

    def _on_event(self, event: str, task: StageTask, outcome: StageOutcome | None) -> None:
        c = self.counts
        now = self.clock()
        if event == "start":
            self.pending.pop(task.key, None)
            self.running[task.key] = RunningStage(task, now)
            if self._live is None:
                self._line(f"start   {task.name}")
        elif event == "retry":
            self.running.pop(task.key, None)
            self.pending[task.key] = task
            c["retry"] += 1
            self._line(f"RETRY   {task.name}: {_first_line(outcome)}")
        elif event in ("done", "failed", "cancelled"):
            self.pending.pop(task.key, None)
            started = self.running.pop(task.key, None)
            if event == "done":
                key = "cached" if outcome is not None and outcome.status == "cached" else "done"
                c[key] += 1
                ran = outcome.seconds if outcome else 0.0  # the stage's own clock: a Ray stage seen starting only as it ended
                seconds = max(now - started.started, ran) if started is not None else ran
                if key == "done" and seconds > 0:
                    self.eta_model.finished(task.kind, seconds)
                if self._live is None:
                    secs = f" in {outcome.seconds:.1f}s" if outcome else ""
                    self._line(f"{key:<7} {task.name}{secs} [{self.finished}/{self.total}]")
            elif event == "failed":
                c["failed"] += 1
                assert outcome is not None
                self.failures.append((task, outcome))
                first = _first_line(outcome)
                dep = failed_dependency(first)
                if dep is not None:
                    self._line(f"SKIPPED {task.name}: needs {self.names.get(dep, dep[:8])}, which failed")
                else:
                    log = f" (log: {outcome.log_path})" if outcome.log_path else ""
                    self._line(f"FAILED  {task.name}: {first}{log}")
            elif outcome is not None and outcome.error == NOT_STARTED_DISK_FULL:
                if not self.not_started:
                    self._line("HALT    the disk is full: no further stage is started; the running ones finish")
                self.not_started.append(task)
            elif outcome is not None and outcome.job_id:  # its job cancelled (`scancel` from outside): said nowhere,
                c["failed"] += 1  # while the last line counted it failed; not a Ctrl-C here (those stages have no job)
                self.failures.append((task, outcome))
                log = f" (log: {outcome.log_path})" if outcome.log_path else ""
                self._line(f"CANCELLED {task.name}: {_first_line(outcome)}{log}")
        c["running"] = len(self.running)

    @property
    def finished(self) -> int:
        c = self.counts
        return c["done"] + c["cached"] + c["failed"]

    def counts_text(self, short: bool = False) -> str:
        """``done 4 · running 1 · failed 0 · cached 7``; ``short``: without the counts that are 0 (``done`` stays)."""
        c = self.counts
        parts = [(k, c[k]) for k in ("done", "running", "failed", "cached")]
        return " · ".join(f"{k} {n}" for k, n in parts if n or k == "done" or not short)

    # -------------------------------------------------------------------------------- plain summary

    def tick(self) -> bool:
        """Read the running stages' progress; print a summary line when stages run and ``summary_every``
        seconds passed since the last one."""
        with self._lock:
            now = self.clock()
            self.refresh_running()
            if not self.running or now - self._last_summary < self.summary_every:
                return False
            self._last_summary = now
            self._line(self.summary())
            return True

    def _eta_text(self) -> str:
        return "stopping…" if self._stopping else f"ETA {self.eta()}"

    def summary(self) -> str:
        """One line: counts, ETA, each running stage with its progress."""
        now = self.clock()
        parts = [f"progress {self.finished}/{self.total}: {self.counts_text()} · {self._eta_text()}"]
        for r in self.running.values():
            parts.append(f"{r.task.name} {self._stage_progress(r)} ({format_duration(now - r.started)})")
        return "; ".join(parts)

    @staticmethod
    def _stage_progress(r: RunningStage) -> str:
        if r.step is None:
            return "starting" if r.task.kind != "evaluate" else "evaluating"
        if r.task.kind == "train" and r.total:
            return f"iteration {r.step}/{r.total}"
        if r.task.kind == "evaluate":
            return f"image {r.step}" + (f"/{r.total}" if r.total else "")
        return f"step {r.step}" + (f"/{r.total}" if r.total else "")

    # -------------------------------------------------------------------------------- rich display

    def render(self):
        """The live display: one overall line, then one line per running stage."""
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        with self._lock:
            self.refresh_running()
            now = self.clock()
            # one line at any terminal width (at 80 columns the counters had wrapped, the clock between
            # them): the bar takes what the text leaves, up to 30 columns; short of 10 the zero counts
            # go, and short of 5 the bar
            cells = ["stages", f"{self.finished}/{self.total}", self.counts_text(), format_duration(now - self.t0), self._eta_text()]
            room = lambda: self.console.width - sum(map(len, cells)) - len(cells)  # noqa: E731 (one space between cells)
            if room() < 10:
                cells[2] = self.counts_text(short=True)
            bar = min(30, room())
            head = Table.grid(padding=(0, 1))
            head.add_column(style="bold")
            if bar >= 5:
                head.add_column(width=bar)
            head.add_column(justify="right")
            head.add_column()
            head.add_column(justify="right", style="dim")
            head.add_column(justify="right")
            head.add_row(
                cells[0],
                *([ProgressBar(total=max(self.total, 1), completed=self.finished, width=bar)] if bar >= 5 else []),
                *cells[1:4],
                Text(cells[4], style="yellow" if self._stopping else "cyan"),
            )
            rows = Table.grid(padding=(0, 1))
            rows.add_column(no_wrap=True, overflow="ellipsis", max_width=48)
            rows.add_column(width=20)
            rows.add_column()
            rows.add_column(justify="right", style="dim")
            for r in self.running.values():
                frac = r.fraction
                bar = ProgressBar(total=1.0, completed=frac, width=20) if frac is not None else Text("")
                rows.add_row(Text("  " + r.task.name), bar, self._stage_progress(r), format_duration(now - r.started))
            return Group(head, rows) if self.running else head


# ----------------------------------------------------------------------------------------------- after the run


def make_console() -> Any:
    """stdout console; when piped, wide and unwrapped so log lines stay whole."""
    from rich.console import Console

    probe = Console()
    return Console(highlight=False, soft_wrap=True, width=None if probe.is_terminal else 200)


def print_table(console: Any, markdown: str, table_json: dict[str, Any] | None) -> None:
    """The results table: a rich table on a terminal, the Markdown otherwise (pipes, files, CI logs)."""
    if console.is_terminal and table_json:
        from reports.terminal import print_rich, table_from_json

        print_rich(console, table_from_json(table_json))
    else:
        console.print(markdown, highlight=False, markup=False)


def busy(console: Any, text: str) -> Any:
    """A spinner with ``text`` while the block runs, on a terminal only; it leaves no line behind. The
    streams are left alone (rich's ``console.status`` would send stderr's notes to stdout meanwhile)."""
    from contextlib import nullcontext

    if not console.is_terminal:
        return nullcontext()
    from rich.live import Live
    from rich.spinner import Spinner

    return Live(Spinner("dots", text=text), console=console, transient=True, redirect_stdout=False, redirect_stderr=False)


def print_notes(console: Any, notes: list[str]) -> None:
    """The report's notes under the results table (the overrides or code versions that made it)."""
    for note in notes:
        console.print(f"note: {note}", highlight=False, markup=False)


def print_failures(
    console: Any, failures: list[tuple[StageTask, StageOutcome]], not_started: list[StageTask] = (), run_dir: Path | None = None
) -> None:
    """The failed stages, each with its attempts, its log and the first and last lines of its error; then one
    line for the stages not run because a stage they need failed, and, after a full disk, what was
    not started and what to do."""
    own = [(t, o) for t, o in failures if failed_dependency(o.error) is None]
    waiting = [t for t, o in failures if failed_dependency(o.error) is not None]
    if own:
        console.print(f"\n{count(len(own), 'stage')} failed:", style="bold red")
    for task, out in own:
        lines = (out.error or "").splitlines()
        console.print(f"- {task.name} (attempts {out.attempts}){' log: ' + out.log_path if out.log_path else ''}", highlight=False, markup=False)
        # the first lines, and the last: where the error ends (a Slurm job's id and logs, after a traceback)
        shown = lines if len(lines) <= 5 else [*lines[:3], f"… ({len(lines) - 4} lines more in the log)", lines[-1]]
        for line in shown:
            console.print(f"    {line}", highlight=False, markup=False)
    if waiting:
        console.print(f"{_count_kinds(waiting)} not run: a stage they need failed (above)", highlight=False, markup=False)
    if any(disk_full(o.error) for _, o in own):
        free = ""
        if run_dir is not None:
            import shutil

            from famix_core.io import nearest_existing

            existing = nearest_existing(run_dir)
            free = f" ({_format_bytes(shutil.disk_usage(existing).free)} free where the run dir {run_dir} is)"
        skipped = f"; {_count_kinds(list(not_started))} not started" if not_started else ""
        console.print(
            f"the disk is full, or its quota used up{free}{skipped}. Free space (or choose another --run-dir) and run the "
            "same command again: the finished stages are kept.",
            style="bold red", highlight=False, markup=False,
        )  # fmt: skip


def _count_kinds(tasks: list[StageTask]) -> str:
    """``48 stages (evaluate ×48)``."""
    kinds = Counter(t.kind for t in tasks)
    return f"{count(len(tasks), 'stage')} ({', '.join(f'{k} ×{n}' for k, n in kinds.items())})"


def _format_bytes(n: float) -> str:
    """``292 KB``, ``1.5 GB``: decimal units, as ``df -H``."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} TB"
