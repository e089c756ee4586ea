"""The Slurm backend: stages as submitit job arrays with ``afterok`` dependencies.

One job per module: :mod:`.backend` (submission in waves of arrays, waiting), :mod:`.sbatch`
(the sbatch parameters of one array, how split arrays share the cap), :mod:`.job` (the body every
job runs), :mod:`.cluster` (asking Slurm: is it there, job states), :mod:`.records` (the sweep's
job records, status rows, cancel), :mod:`.options` (the sweep file's ``backend.slurm`` block).

How a plan becomes jobs:

- Stages are submitted wave by wave, one kind each (mine, then train, then
  evaluate: a stage goes out once every stage it depends on has a job id).
  Within a wave, stages of the same sbatch parameters and the same dependency jobs
  form one job array (``executor.batch()``), split where the cluster's
  ``MaxArraySize`` is smaller. The arrays of one kind share its
  ``array_parallelism`` (:func:`.sbatch.share_cap`: ``--array=0-N%share``, and
  lanes of ``afterany`` on the earlier arrays where there are more arrays than the cap),
  so no more than that many stages of the kind that one submission made run
  at once: also each
  training's evaluation pack, which waits on its own training task and so is
  an array of one.
- Packs. Stages of a kind listed in ``backend.slurm.pack`` (default ``[evaluate]``) that read the
  same inputs (one trained model's evaluations) run as one task of the array, one after another in
  one process (:class:`.job.SlurmPack`): Python, torch and the model load once instead of once a
  stage. Stage keys, artifacts, outcomes and records stay per stage; the pack's time limit is the
  per-stage ``time`` times its size; a failed stage fails alone (the others are reported as they end,
  the job ends FAILED). Only stages nothing depends on can be packed.
- Dependencies are ``--dependency=afterok:<job>[_<task>]:…`` with
  ``--kill-on-invalid-dep=yes``, so the driver may exit right after submitting
  (``detach``): Slurm runs the DAG by itself and drops what can never run.
- Every job runs :class:`.job.SlurmStage` (picklable, checkpointable): it calls
  :func:`orchestrator.execute.execute_stage`, retries a failed stage in the same
  job, writes the outcome as JSON beside the submitit logs, and raises when the
  stage failed for good (so ``afterok`` never fires for it). On preemption or
  timeout (SIGUSR2) a running training first finishes its iteration and saves a
  checkpoint there (:class:`orchestrator.execute.StopRequest`); then submitit calls
  ``checkpoint()``, which requeues the same stage, and the requeued job resumes
  from that checkpoint without losing an iteration. Other stages are requeued at
  once and start over. After an external ``scontrol requeue``, which sends no
  signal, training resumes from its latest periodic checkpoint in
  ``runs/work/train/<key>/``.
- Job ids go to ``<sweep dir>/slurm/jobs.json`` (atomically), so ``status`` and
  ``cancel`` work from a new process, and a rerun attaches to stages whose jobs
  are still queued or running instead of submitting them twice.
- Each invocation uses a fresh submitit folder ``<sweep dir>/slurm/<uuid>/``:
  Slurm job ids restart at 1 on a fresh cluster and submitit would read an old
  result from a reused ``%j`` folder.

submitit is imported lazily: every module here imports without it. The registry names
``orchestrator.backends.slurm.backend:SlurmBackend``; this file imports nothing, so the sweep
schema reads :mod:`.options` without loading the backend.
"""
