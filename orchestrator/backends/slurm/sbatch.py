"""What one job array of stages is submitted with: its sbatch parameters (dependencies, job name,
array cap), and how the arrays of a group split at the cluster's ``MaxArraySize`` share one cap.

The script itself is rendered by submitit from these parameters (``SlurmExecutor.update_parameters``);
the golden-file tests submit through submitit's public API with ``sbatch`` stood in and compare the
script it wrote.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

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
            arrays of a split group whose turn this array waits for (see :func:`share_cap`).
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
