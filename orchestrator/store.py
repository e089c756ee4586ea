"""Content-addressed artifact store: ``<store>/<kind>/<key>/`` with ``DONE.json`` written last.

A stage is written into ``<store>/.tmp/<uuid>/`` and renamed into place in one
``os.rename``, so a killed job never leaves a half artifact that counts as done.
Resumable scratch (training checkpoints) lives beside the store in
``<run_dir>/work/<kind>/<key>/`` and survives crashes.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from famix_core.io import atomic_write_text

__all__ = ["Store", "atomic_write_text"]


class Store:
    """The artifact store of one run directory.

    Args:
        root: the store folder (``<run_dir>/store``).
    """

    def __init__(self, root: str | Path):
        self.root = Path(root).absolute()

    @property
    def work_root(self) -> Path:
        return self.root.parent / "work"

    def path(self, kind: str, key: str) -> Path:
        return self.root / kind / key

    def work_dir(self, kind: str, key: str) -> Path:
        return self.work_root / kind / key

    def is_done(self, kind: str, key: str) -> bool:
        return (self.path(kind, key) / "DONE.json").is_file()

    def done_info(self, kind: str, key: str) -> dict[str, Any] | None:
        """The stage's ``DONE.json`` (``{"kind", "key", "seconds", "finished", "result"}``) or None."""
        p = self.path(kind, key) / "DONE.json"
        try:
            return json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def begin(self) -> Path:
        """A fresh temp folder to write one artifact into."""
        tmp = self.root / ".tmp" / uuid.uuid4().hex
        tmp.mkdir(parents=True)
        return tmp

    def commit(self, tmp: Path, kind: str, key: str, result: dict[str, Any], seconds: float) -> Path:
        """Write ``DONE.json`` into ``tmp`` and rename it to ``<kind>/<key>``; a concurrent winner is kept."""
        info = {"kind": kind, "key": key, "seconds": seconds, "finished": time.time(), "result": result}
        (tmp / "DONE.json").write_text(json.dumps(info, indent=1, sort_keys=True), encoding="utf-8")
        final = self.path(kind, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists() and not self.is_done(kind, key):
            shutil.rmtree(final, ignore_errors=True)  # debris of an older, interrupted layout
        try:
            os.rename(tmp, final)
        except OSError:
            if not self.is_done(kind, key):
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another worker finished the same stage first
        return final

    def abort(self, tmp: Path) -> None:
        shutil.rmtree(tmp, ignore_errors=True)
