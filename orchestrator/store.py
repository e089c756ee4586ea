"""Content-addressed artifact store: ``<store>/<kind>/<key>/`` with ``DONE.json`` written last.

A stage is written into ``<store>/.tmp/<host>+<pid>+<start>+<uuid>/`` and renamed into place in one
``os.rename`` (:func:`famix_core.io.commit_dir`), so a killed job never leaves a half
artifact that counts as done.
Resumable scratch (training checkpoints) lives beside the store in
``<run_dir>/work/<kind>/<key>/`` and survives crashes.

One process at a time runs a given stage: it holds an exclusive ``flock`` on
``<store>/.locks/<kind>-<key>.lock`` (released by the OS even on SIGKILL). Two drivers of
different sweeps sharing a run dir (or the same stage submitted twice) would otherwise train
into the same checkpoint folder at once.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Collection, Iterator

from famix_core.io import atomic_write_text, commit_dir, owner_tag, writer_gone

__all__ = ["Store", "atomic_write_text", "code_version", "git_version"]


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
        """Whether ``<kind>/<key>`` has a readable ``DONE.json``; a damaged one (truncated by a lost
        write) is not done: the stage runs again and its new artifact replaces the folder."""
        return self.done_info(kind, key) is not None

    def done_info(self, kind: str, key: str) -> dict[str, Any] | None:
        """The stage's ``DONE.json`` (``{"kind", "key", "seconds", "finished", "result", "files", "code"}``;
        ``code`` is missing from stages stored before it was recorded), or None when
        there is none or it cannot be read as one."""
        return _read_done(self.path(kind, key))

    def _lock_path(self, kind: str, key: str) -> Path:
        return self.root / ".locks" / f"{kind}-{key}.lock"

    def is_running(self, kind: str, key: str) -> bool:
        """Whether a process holds ``<kind>/<key>``'s lock (:meth:`running`) now, as far as this machine's
        locks tell (``famix sweep status``). Creates nothing: no lock file means not running. The probe
        takes a shared lock for an instant; a stage starting in that instant waits that instant."""
        import fcntl

        try:
            fd = os.open(self._lock_path(kind, key), os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:  # no locks on this filesystem: cannot be told
            return False
        finally:
            os.close(fd)  # releases the probe's lock
        return False

    @contextmanager
    def running(self, kind: str, key: str, on_wait: Callable[[str], None] | None = None) -> Iterator[bool]:
        """Hold the stage's lock for the block: the one process that runs ``<kind>/<key>`` now.

        When another process holds it, ``on_wait`` gets one line naming that process and this one
        waits for it. Yields whether it waited: the caller then looks for the artifact the other one
        may have finished. A filesystem without ``flock`` (ENOLCK, EOPNOTSUPP) runs the stage unlocked.
        """
        import fcntl

        from orchestrator.liveness import driver_identity

        path = self._lock_path(kind, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        me = driver_identity()  # before the lock: the holder says who it is right after taking it
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        waited = False
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                waited = True
                if on_wait is not None:
                    holder = _read_holder(path)
                    on_wait(f"waiting: another process runs this stage ({holder}; lock {path})")
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError:
                yield False  # no locks on this filesystem: as before, unguarded
                return
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(me).encode(), 0)
            yield waited
        finally:
            os.close(fd)  # releases the lock

    def begin(self) -> Path:
        """A fresh temp folder to write one artifact into: ``.tmp/<host>+<pid>+<start>+<uuid>``.

        The name says which process owns it, so :meth:`clean_tmp` can tell debris from work in progress.
        """
        tmp = self.root / ".tmp" / f"{owner_tag()}{uuid.uuid4().hex}"
        tmp.mkdir(parents=True)
        return tmp

    def clean_tmp(self, older_than_s: float = 3600.0) -> int:
        """Remove temp folders whose writer is gone (a ``kill -9``): on this host, when that pid no longer
        has that start time; folders of other hosts, or without an owner in their name, once older than
        ``older_than_s``. Returns how many were removed."""
        n = 0
        for d in (self.root / ".tmp").glob("*"):
            stale = writer_gone(d.name)
            try:
                if stale is None:
                    stale = time.time() - d.stat().st_mtime > older_than_s
            except OSError:
                continue
            if stale:
                shutil.rmtree(d, ignore_errors=True)
                n += 1
        return n

    def commit(self, tmp: Path, kind: str, key: str, result: dict[str, Any], seconds: float) -> Path:
        """Write ``DONE.json`` into ``tmp`` and rename it to ``<kind>/<key>``; a concurrent winner is kept.

        ``DONE.json`` records every file's size and sha256 (``files``), so a damaged artifact is found
        (:meth:`problem`) instead of failing whatever reads it, and the code that computed it
        (``code``: :func:`code_version`), which a cached rerun does not change.
        """
        files = {
            str(f.relative_to(tmp)): {"size": f.stat().st_size, "sha256": _sha256(f)}
            for f in sorted(tmp.rglob("*"))
            if f.is_file()
        }
        info = {"kind": kind, "key": key, "seconds": seconds, "finished": time.time(), "result": result, "files": files, "code": code_version()}
        (tmp / "DONE.json").write_text(json.dumps(info, indent=1, sort_keys=True), encoding="utf-8")
        final = self.path(kind, key)
        # a done artifact of another worker wins; debris of an older, interrupted layout is replaced
        commit_dir(tmp, final, lambda p: _read_done(p) is not None)
        return final

    def abort(self, tmp: Path) -> None:
        shutil.rmtree(tmp, ignore_errors=True)

    def problem(self, kind: str, key: str, deep: bool = False, names: Collection[str] | None = None) -> str | None:
        """Why the done artifact ``<kind>/<key>`` is damaged (one line naming the file), or None.

        Checks every file ``DONE.json`` lists (present, same size; with ``deep`` also the same
        sha256); for an older ``DONE.json`` without that list, the header and length of every
        ``.safetensors`` file.

        Args:
            names: only these files (paths inside the folder), when a caller reads just those: MLflow
                ingestion hashes a stage's small records, not its weights. A name ``DONE.json`` does
                not list is not checked.
        """
        from famix_core.io import safetensors_problem

        folder = self.path(kind, key)
        info = self.done_info(kind, key)
        if info is None:
            return f"{folder / 'DONE.json'}: missing or unreadable"
        files = info.get("files")
        if files is None:  # written before DONE.json listed its files: check what can be checked
            for f in sorted(folder.glob("*.safetensors")):
                bad = safetensors_problem(f) if names is None or f.name in names else None
                if bad:
                    return bad
            return None
        if names is not None:
            files = {name: want for name, want in files.items() if name in names}
        for name, want in files.items():
            f = folder / name
            if not f.is_file():
                return f"{f}: missing"
            if f.stat().st_size != want["size"]:
                return f"{f}: {f.stat().st_size} bytes, expected {want['size']}"
            if deep and _sha256(f) != want["sha256"]:
                return f"{f}: content changed (sha256 differs from DONE.json)"
        return None

    def set_aside(self, kind: str, key: str) -> Path:
        """Move a damaged artifact to ``<store>/.corrupt/<kind>-<key>-<time>`` (kept to inspect); its stage then runs again."""
        dest = self.root / ".corrupt" / f"{kind}-{key}-{int(time.time())}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.rename(self.path(kind, key), dest)
        return dest


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """The project checkout's :func:`git_version`, read once per process: the code a process runs is the
    code it had when it started, whatever is committed later."""
    return git_version(Path(__file__).resolve().parent.parent)


CODE_DIRS = ("famix_core", "orchestrator", "reports")
"""The project's packages: a file git does not track (and does not ignore) in one of them is code."""


def git_version(root: Path) -> str:
    """``root``'s commit (``git rev-parse HEAD``), with ``-dirty`` when a tracked file differs from it or
    a file in one of :data:`CODE_DIRS` is untracked (a new module, not yet added, is code the commit
    lacks; an untracked file elsewhere, notes or a run folder, is not); ``unknown`` outside a git
    checkout or without git."""

    def git(*args: str) -> subprocess.CompletedProcess[str] | None:
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None

    head = git("rev-parse", "--verify", "-q", "HEAD")
    commit = head.stdout.strip() if head is not None and head.returncode == 0 else ""
    if not commit:
        return "unknown"
    diff = git("diff", "--quiet", "HEAD", "--")
    if diff is not None and diff.returncode == 1:
        return commit + "-dirty"
    new = git("ls-files", "--others", "--exclude-standard", "--", *CODE_DIRS)
    return commit + "-dirty" if new is not None and new.returncode == 0 and new.stdout.strip() else commit


def _read_done(folder: Path) -> dict[str, Any] | None:
    try:
        info = json.loads((folder / "DONE.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and isinstance(info.get("result"), dict) else None


def _read_holder(lock: Path, patience_s: float = 2.0) -> str:
    """Who holds a stage lock, as its holder wrote it: ``pid N on HOST``.

    The holder writes it just after taking the lock, so a waiter that came at that instant reads an
    empty or half-written file: it reads again for up to ``patience_s`` before it says it cannot tell.
    """
    deadline = time.monotonic() + patience_s
    while True:
        try:
            info = json.loads(lock.read_text() or "{}")
            return f"pid {info['pid']} on {info['host']}"
        except (OSError, ValueError, KeyError, TypeError):
            if time.monotonic() >= deadline:
                return "a process that has not said which"
            time.sleep(0.05)


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
