"""Reports: collect a sweep's results (MLflow or a results CSV) and print the paper's tables and figures.

Modules: :mod:`reports.collect` (MLflow / CSV -> :class:`~reports.collect.ResultSet`),
:mod:`reports.tables` (Markdown / LaTeX, pure pandas), :mod:`reports.plots` (bars, loss curves),
:mod:`reports.qualitative` (input / ground truth / prediction grid), :mod:`reports.report`
(the output folder), :mod:`reports.cli` (``famix report``). Nothing is imported here, so
``famix --help`` stays fast.
"""
