"""What one job array of stages is submitted with: its sbatch parameters (dependencies, job name,
array cap), and how the arrays of one stage kind share its cap.

The script itself is rendered by submitit from these parameters (``SlurmExecutor.update_parameters``);
the golden-file tests submit through submitit's public API with ``sbatch`` stood in and compare the
script it wrote.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

from orchestrator.backends.slurm.options import sanitize_job_name

__all__ = ["executor_parameters", "share_cap", "chunks"]


def executor_parameters(
    params: Mapping[str, Any],
    *,
    sweep: str,
    kind: str,
    dep_jobs: Iterable[str] = (),
    cap: int,
    after_jobs: Iterable[str] = (),
) -> dict[str, Any]:
    """Everything ``SlurmExecutor.update_parameters`` gets for one array of stages.

    Args:
        params: :func:`orchestrator.backends.slurm.options.stage_parameters` of the stage kind.
        sweep: sweep name (sanitized into the job name).
        kind: stage kind.
        dep_jobs: job ids (``123`` / ``123_4``) that must end COMPLETED first (``afterok``).
        cap: ``array_parallelism`` (``--array=0-N%cap``).
        after_jobs: job ids that must have ended in any state first (``afterany``): the earlier
            arrays of the kind whose turn this array waits for (see :func:`share_cap`).
    """
    p = dict(params)
    additional = dict(p.pop("additional_parameters", None) or {})
    ok, any_end = list(dep_jobs), list(after_jobs)
    deps = ([f"afterok:{':'.join(ok)}"] if ok else []) + ([f"afterany:{':'.join(any_end)}"] if any_end else [])
    if deps:
        p["dependency"] = ",".join(deps)  # ',' = all of them
        additional["kill-on-invalid-dep"] = "yes"  # a failed dependency drops the job instead of leaving it pending
    if additional:
        p["additional_parameters"] = additional
    p["job_name"] = sanitize_job_name("famix", sweep, kind)
    p["array_parallelism"] = max(1, int(cap))
    return p


def share_cap(cap: int, sizes: Sequence[int]) -> list[tuple[int, tuple[int, ...]]]:
    """How the arrays of one stage kind in one wave share ``cap`` running tasks.

    Args:
        cap: ``array_parallelism`` of the kind.
        sizes: tasks per array, in submission order (the arrays of a group split at ``MaxArraySize``,
            and the arrays that wait on different jobs: each training's evaluation pack).

    Returns:
        Per array, ``(its --array %cap, indices of the earlier arrays it waits for)``. While there
        are no more arrays than ``cap``, the caps add up to ``cap`` (or to all the tasks, where there
        are fewer): no array gets more than its size, and what a small one leaves goes to the bigger
        ones. Where there are more arrays than ``cap``, they run one task at a time in ``cap`` lanes:
        array ``i`` waits (``afterany``) for arrays ``i - cap``, ``i - 2 cap``, … to end. Not just
        for the one before it in its lane: a job whose own dependency failed is dropped at once
        (``kill-on-invalid-dep``), without waiting for the one before it. Either way, no more than
        ``cap`` tasks run at once.
    """
    cap = max(1, cap)
    if len(sizes) > cap:
        return [(1, tuple(range(i % cap, i, cap))) for i in range(len(sizes))]
    shares, left = [0] * len(sizes), cap
    growing = [i for i, n in enumerate(sizes) if n > 0]
    while left and growing:  # an even share each, again and again, until the cap or the tasks run out
        each = max(1, left // len(growing))
        for i in list(growing):
            give = min(each, sizes[i] - shares[i], left)
            shares[i], left = shares[i] + give, left - give
            if shares[i] == sizes[i]:
                growing.remove(i)
    return [(max(1, c), ()) for c in shares]


def chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    """``items`` in consecutive lists of at most ``size`` (the arrays of a group split at ``MaxArraySize``)."""
    size = max(1, size)
    for i in range(0, len(items), size):
        yield items[i : i + size]
