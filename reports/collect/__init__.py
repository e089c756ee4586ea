"""Collect a sweep's results into one pandas frame, a :class:`ResultSet`: from MLflow trial runs or a results CSV.

One job per module: :mod:`~reports.collect.resultset` (the frame and the input error),
:mod:`~reports.collect.csv` (a results CSV, wide or long), :mod:`~reports.collect.mlflow`
(trial runs through MLflow's client), :mod:`~reports.collect.sqlite` (the same records read
directly from an embedded SQLite store), :mod:`~reports.collect.store` (the store's URI).
Names the tags, metrics and columns by :mod:`reports.schema`. Imports pandas; MLflow is imported
when :func:`collect_mlflow` runs.
"""

from reports.collect.csv import collect_csv
from reports.collect.mlflow import collect_mlflow
from reports.collect.resultset import ReportInputError, ResultSet, domain_column
from reports.collect.store import DAMAGED_STORE_FIX, DamagedStoreError, check_tracking_uri, default_tracking_uri, sqlite_damage, sqlite_path

__all__ = [
    "DamagedStoreError",
    "ReportInputError",
    "ResultSet",
    "check_tracking_uri",
    "collect_csv",
    "collect_mlflow",
    "default_tracking_uri",
    "domain_column",
    "sqlite_damage",
    "sqlite_path",
    "DAMAGED_STORE_FIX",
]
