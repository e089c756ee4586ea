"""What one job array of stages is submitted with: its sbatch parameters (dependencies, job name,
array cap), how the arrays of a group split at the cluster's ``MaxArraySize`` share one cap, and
which jobs of a wave can be one array whose tasks each wait on the same task of an earlier array.

The script itself is rendered by submitit from these parameters (``SlurmExecutor.update_parameters``);
the golden-file tests submit through submitit's public API with ``sbatch`` stood in and compare the
script it wrote.
"""

from __future__ import annotations

from typing import Any, Hashable, Iterable, Mapping, TypeVar

from orchestrator.backends.slurm.options import sanitize_job_name

__all__ = ["executor_parameters", "share_cap", "chunks", "corresponding_arrays"]

K = TypeVar("K", bound=Hashable)


def executor_parameters(
    params: Mapping[str, Any],
    *,
    sweep: str,
    kind: str,
    dep_jobs: Iterable[str] = (),
    cap: int,
    after_jobs: Iterable[str] = (),
    corresponding: str | None = None,
) -> dict[str, Any]:
    """Everything ``SlurmExecutor.update_parameters`` gets for one array of stages.

    Args:
        params: :func:`orchestrator.backends.slurm.options.stage_parameters` of the stage kind.
        sweep: sweep name (sanitized into the job name).
        kind: stage kind.
        dep_jobs: job ids (``123`` / ``123_4``) that must end COMPLETED first (``afterok``).
        cap: ``array_parallelism`` (``--array=0-N%cap``).
        after_jobs: job ids that must have ended in any state first (``afterany``): the earlier
            arrays of a split group whose turn this array waits for (see :func:`share_cap`).
        corresponding: an array job id whose task ``i`` must end COMPLETED before task ``i`` of
            this array starts (``aftercorr``; see :func:`corresponding_arrays`).
    """
    p = dict(params)
    additional = dict(p.pop("additional_parameters", None) or {})
    ok, any_end = list(dep_jobs), list(after_jobs)
    deps = ([f"afterok:{':'.join(ok)}"] if ok else []) + ([f"afterany:{':'.join(any_end)}"] if any_end else [])
    deps += [f"aftercorr:{corresponding}"] if corresponding else []
    if deps:
        p["dependency"] = ",".join(deps)  # ',' = all of them
        additional["kill-on-invalid-dep"] = "yes"  # a failed dependency drops the job instead of leaving it pending
    if additional:
        p["additional_parameters"] = additional
    p["job_name"] = sanitize_job_name("famix", sweep, kind)
    p["array_parallelism"] = max(1, int(cap))
    return p


def share_cap(cap: int, parts: int) -> list[tuple[int, int | None]]:
    """How the ``parts`` arrays of one split group share ``cap`` running tasks.

    Returns, per part, ``(its --array %cap, index of the earlier part it waits for, or None)``.
    The caps add up to ``cap``; where there are more parts than ``cap``, part ``i`` runs one task at
    a time once part ``i - cap`` has ended, so no more than ``cap`` tasks of the group ever run at once.
    """
    cap, parts = max(1, cap), max(1, parts)
    shares = [cap // parts + (1 if i < cap % parts else 0) for i in range(parts)]
    return [(c, None) if c > 0 else (1, i - cap) for i, c in enumerate(shares)]


def chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    """``items`` in consecutive lists of at most ``size`` (the arrays of a group split at ``MaxArraySize``)."""
    size = max(1, size)
    for i in range(0, len(items), size):
        yield items[i : i + size]


def corresponding_arrays(jobs: Mapping[K, str | None], max_size: int) -> dict[str, list[K]]:
    """The jobs of a wave that can go out as one array with ``aftercorr`` on an earlier array.

    Args:
        jobs: per job to submit (of one kind and one set of sbatch parameters), the one task it waits
            for (``"123_4"``), or ``None`` (it waits on several jobs, on a whole job, or on none).
        max_size: the most tasks one array may hold (``MaxArraySize``).

    Returns:
        ``{array job id: jobs in task order}`` for each earlier array whose tasks ``0..n-1`` (n >= 2)
        are each waited on by exactly one of ``jobs``: submitted in that order, task ``i`` of the new
        array waits on task ``i`` of the earlier one, so each starts as soon as its own dependency
        ended well and ``array_parallelism`` caps them as one array. On a fresh sweep these are the
        evaluations, one pack per training task; each would otherwise be an array of one, capped by
        nothing. Jobs not returned keep ``afterok`` on their own dependency.
    """
    by_array: dict[str, dict[int, list[K]]] = {}
    for job, dep in jobs.items():
        array, _, task = (dep or "").partition("_")
        if array and task.isdigit():
            by_array.setdefault(array, {}).setdefault(int(task), []).append(job)
    return {
        array: [tasks[i][0] for i in range(len(tasks))]
        for array, tasks in by_array.items()
        if 2 <= len(tasks) <= max_size and sorted(tasks) == list(range(len(tasks))) and all(len(j) == 1 for j in tasks.values())
    }
