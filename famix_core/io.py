"""Atomic file writes (torch-free): every artifact of the project goes through here.

A file is written to a temp file in its destination folder, flushed and fsynced,
then moved over the destination with ``os.replace``; a crash leaves either the
old file or the new one, never half of one.

Temp files and folders are created with ``os.open(..., 0o666)`` / ``os.mkdir(..., 0o777)``,
so the kernel applies the user's umask (``tempfile.mkstemp``/``mkdtemp`` would force 0600 /
0700): on a run dir shared with the lab, files come out 0644 and folders 0755 under umask 022.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator

__all__ = [
    "nearest_existing",
    "file_in_the_way",
    "what_blocks",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "make_temp_dir",
    "process_start",
    "owner_tag",
    "writer_gone",
    "commit_dir",
    "building_dir",
    "CommitFailed",
    "check_out_dir",
    "refuse_other_files",
    "exclusive_lock",
    "safetensors_problem",
]


def _temp_name(folder: Path, prefix: str, suffix: str) -> Path:
    return folder / f"{prefix}{secrets.token_hex(6)}{suffix}"


def process_start(pid: int) -> int | None:
    """Start time of process ``pid`` (clock ticks since boot, ``/proc/<pid>/stat`` field 22), or None when
    there is no such process: with the pid, it tells a process from a later one given the same pid."""
    if pid <= 0:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()  # after "pid (comm)": state is fields[0], starttime fields[19]
    if fields[0] == "Z":
        return None
    return int(fields[19])


def owner_tag() -> str:
    """``<host>+<pid>+<start>+``: what the name of a temp folder says of the process writing it, so
    that a later one can tell debris (its writer killed) from work in progress (:func:`writer_gone`)."""
    import socket

    pid = os.getpid()
    return f"{socket.gethostname()}+{pid}+{process_start(pid)}+"


def writer_gone(name: str) -> bool | None:
    """Whether the writer that :func:`owner_tag` names at the start of ``name`` is gone (its pid no longer
    has that start time). None where that cannot be told: no owner in the name, or another host's."""
    import socket

    parts = name.split("+")
    if len(parts) != 4 or parts[0] != socket.gethostname():
        return None
    try:
        return str(process_start(int(parts[1]))) != parts[2]
    except ValueError:
        return None


def make_temp_dir(parent: str | Path, prefix: str = ".tmp-") -> Path:
    """A new, uniquely named folder under ``parent`` whose mode follows the umask (``mkdtemp`` forces 0700)."""
    parent = Path(parent)
    while True:
        path = _temp_name(parent, prefix, "")
        try:
            os.mkdir(path, 0o777)
            return path
        except FileExistsError:
            continue


def nearest_existing(path: str | os.PathLike[str]) -> Path:
    """``path`` itself, or the nearest folder above it that exists (a dangling symlink is there too):
    where a folder still to be made would be made, and what a check of it looks at."""
    path = Path(path)
    return next(p for p in (path, *path.parents) if p.exists() or p.is_symlink())


def file_in_the_way(path: str | os.PathLike[str]) -> Path | None:
    """What keeps ``path`` from being a folder: :func:`nearest_existing` when that is not a folder
    (``path`` itself, or a file above it), else ``None`` (a missing folder can still be made)."""
    existing = nearest_existing(path)
    return None if existing.is_dir() else existing


def write_denied(folder: str | os.PathLike[str]) -> str | None:
    """The OS's reason no file can be made in ``folder`` (read-only file system, immutable, permission),
    else None, leaving nothing behind: an unnamed file (``O_TMPFILE``) where the filesystem has them,
    else ``access()`` and the mount's read-only flag (NFS, CIFS)."""
    import errno

    flag = getattr(os, "O_TMPFILE", None)
    if flag is not None:
        try:
            os.close(os.open(folder, flag | os.O_WRONLY, 0o600))
            return None
        except OSError as e:
            if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                return e.strerror
    if os.access(folder, os.W_OK | os.X_OK):
        return None
    return "Read-only file system" if os.statvfs(folder).f_flag & os.ST_RDONLY else "Permission denied"


def what_blocks(path: Path) -> str:
    """How a message names a path that :func:`nearest_existing` found and that is not a folder:
    ``a file`` or ``a broken symlink``."""
    return "a broken symlink" if path.is_symlink() and not path.exists() else "a file"


def check_out_dir(path: str | Path, option: str = "--out") -> None:
    """Refuse an output folder that cannot be made or written, before any work; leaves nothing behind.

    The nearest folder that exists on the way to ``path`` is probed by making and removing an empty
    folder in it: permission bits say nothing of a read-only mount or of a pseudo filesystem (/proc).

    Args:
        path: the folder a command will write into (it need not exist yet).
        option: the command-line option that named it.

    Raises:
        ConfigError: ``command line: <option>: <path>: <what is wrong>``.
    """
    from famix_core.errors import ConfigError

    path = existing = Path(path)
    try:
        existing = nearest_existing(path)
        if existing.is_dir():
            os.rmdir(make_temp_dir(existing, ".famix-probe-"))
            return
        problem = "not a folder" if existing == path else f"{existing} is not a folder"
        kind = what_blocks(existing)
        if kind != "a file":
            problem += f" ({kind})"
    except OSError as e:
        problem = f"cannot write in {existing} ({e.strerror})"
    raise ConfigError(f"command line: {option}: {path}: {problem}")


def refuse_other_files(folder: str | Path, marker: str, needs: str, where: str = "", also: tuple[str, ...] = ()) -> None:
    """Refuse an output folder holding anything but a previous output of the same command, before any work.

    A new or empty folder is taken, and so is one holding the file ``marker`` (or one of ``also``):
    what every previous output of the command has. A file, or a folder of other files, is refused:
    the command would write among, or over, someone else's files (``data synth``, ``data
    synth-captions`` and ``pretrain-clip`` refuse their ``--out`` through here).

    Args:
        folder: the output folder (it need not exist).
        marker: the file a previous output always holds, named in the message.
        needs: what the command needs, for the message (``the caption corpus needs a new or empty folder``).
        where: what named ``folder``, for the message (``command line: --out``, ``data.root``).
        also: other names that mark a previous output (an interrupted one's checkpoint).

    Raises:
        DataError: ``[<where>: ]<folder> holds files but no <marker>: <needs>``.
    """
    from famix_core.errors import DataError

    folder = Path(folder)
    if not folder.exists() or (folder / marker).is_file() or any((folder / name).exists() for name in also):
        return
    if not folder.is_dir() or any(folder.iterdir()):
        raise DataError(f"{where + ': ' if where else ''}{folder} holds files but no {marker}: {needs}")


def _exchange(a: Path, b: Path) -> bool:
    """Swap the paths ``a`` and ``b`` in one step (Linux's ``renameat2`` with ``RENAME_EXCHANGE``, which
    Python does not expose); False where the C library or the filesystem cannot (then nothing moved).

    Raises:
        OSError: the swap failed for another reason (a path gone, permissions).
    """
    import ctypes
    import errno

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):  # not Linux, or a C library older than glibc 2.28
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):  # an old kernel, or a filesystem without it (NFS)
        return False
    raise OSError(err, os.strerror(err), str(b))


def _sync_tree(folder: Path) -> None:
    """fsync every regular file and folder under ``folder`` (itself included), so that a rename of it
    that survives a power loss or a node crash shows complete files, whatever wrote them (an image
    saved by PIL, a torch checkpoint). Links and special files are left alone."""
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            if os.path.isfile(path) and not os.path.islink(path):
                _fsync(path)
        _fsync(root)


def _fsync(path: str | Path) -> None:
    """fsync the file or folder ``path`` (a folder: so that a rename into it is durable); a
    filesystem that cannot sync a folder is let be."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def commit_dir(tmp: str | Path, final: str | Path, is_complete: Callable[[Path], bool] | None = None) -> bool:
    """Move the finished folder ``tmp`` (from :func:`make_temp_dir`, same filesystem) to ``final`` in one rename.

    A ``final`` that ``is_complete`` accepts is kept (``tmp`` is removed: another writer finished the
    same thing first, also when it wins the race during the rename); any other ``final`` (debris of an
    interrupted writer, a stale version, or everything when ``is_complete`` is None) is replaced:
    swapped with ``tmp`` in one step where the filesystem can (:func:`_exchange`), so that ``final`` is
    never missing, and removed. Elsewhere it is moved aside (into a folder beside ``tmp``) first, and
    ``final`` is missing for an instant between the two renames; an exception there (a Ctrl-C, a
    failed rename) moves the old ``final`` back rather than removing it with ``tmp``. A SIGKILL there
    leaves it in ``<tmp>.old-*/<final name>``.

    Everything under ``tmp`` is fsynced before the rename, and the parent after it, so that a
    ``final`` that looks complete holds complete files after a crash of the machine too.

    Returns:
        True when ``tmp`` became ``final``, False when a complete ``final`` was kept.

    Raises:
        OSError: the rename failed and no complete ``final`` is there (``tmp`` is removed).
    """
    tmp, final = Path(tmp), Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    done = is_complete or (lambda _: False)
    old = None
    try:
        if (final.exists() or final.is_symlink()) and done(final):
            return False
        _sync_tree(tmp)
        if final.exists() or final.is_symlink():
            if final.is_dir() and not final.is_symlink() and _exchange(tmp, final):
                _fsync(final.parent)
                return True  # tmp now holds the old final: removed below
            old = make_temp_dir(tmp.parent, f"{tmp.name}.old-")  # beside tmp: cleaned up like it
            with contextlib.suppress(FileNotFoundError):
                os.rename(final, old / final.name)
        try:
            os.rename(tmp, final)
        except OSError:
            if not done(final):
                raise
            return False
        _fsync(final.parent)
        return True
    finally:
        aside = None if old is None else old / final.name
        if aside is not None and (aside.exists() or aside.is_symlink()) and not (final.exists() or final.is_symlink()):
            with contextlib.suppress(OSError):  # interrupted between the renames: the old one goes back
                os.rename(aside, final)
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


class CommitFailed(OSError):
    """:func:`building_dir` built its folder, but could not move it into place (the rename failed)."""


@contextlib.contextmanager
def building_dir(
    final: str | Path, *, prefix: str | None = None, is_complete: Callable[[Path], bool] | None = None
) -> Iterator[Path]:
    """A new temporary folder beside ``final`` to build it in; when the block ends, it becomes ``final``
    in one rename (:func:`commit_dir`, with ``is_complete``). An exception in the block (a Ctrl-C
    included) removes it and leaves ``final`` as it was.

    Args:
        final: the folder to build; its parent is created.
        prefix: of the temporary folder's name (default ``.<final name>.tmp-``).
        is_complete: a ``final`` it accepts is kept (another writer finished first).

    Raises:
        CommitFailed: the block ran, but the rename failed (the temporary folder is removed).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{final.name}.tmp-" if prefix is None else prefix
    for old in final.parent.glob(f"{glob.escape(prefix)}*"):  # a killed build's (a `kill -9`) had stayed for good
        if old.is_dir() and writer_gone(old.name[len(prefix) :]):
            shutil.rmtree(old, ignore_errors=True)
    tmp = make_temp_dir(final.parent, prefix + owner_tag())
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        commit_dir(tmp, final, is_complete)
    except OSError as e:
        raise CommitFailed(e.errno, e.strerror or type(e).__name__, str(final)) from e


def _make_temp_file(folder: Path, prefix: str, suffix: str) -> Path:
    """A new, empty, uniquely named file in ``folder`` whose mode follows the umask (``mkstemp`` forces 0600)."""
    while True:
        path = _temp_name(folder, prefix, suffix)
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return path
        except FileExistsError:
            continue


@contextlib.contextmanager
def atomic_path(dest: str | Path) -> Iterator[Path]:
    """Yield a temp path beside ``dest``; on success it replaces ``dest``, on error it is removed.

    For writers that want a path (``df.to_csv``, ``fig.savefig``). Creates ``dest``'s folder.
    An OSError of the write itself (a full disk: the writer's ``write`` names no file; a read-only
    folder: the OS names the temp file) is raised naming ``dest``.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = None
    try:
        tmp = _make_temp_file(dest.parent, f".{dest.name}.", ".tmp")
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except BaseException as e:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if isinstance(e, OSError) and (e.filename is None or (tmp is not None and os.fspath(e.filename) == os.fspath(tmp))):
            raise OSError(e.errno, e.strerror, str(dest)) from e  # OSError(errno, …) is the errno's subclass
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any, *, indent: int = 1, sort_keys: bool = False) -> Path:
    """Write ``obj`` as JSON (UTF-8, trailing newline) atomically; returns ``path``."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=sort_keys, ensure_ascii=False) + "\n")


@contextlib.contextmanager
def exclusive_lock(path: str | Path, on_busy: Callable[[], None] | None = None) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on the file ``path`` (created when missing) for the block; yields
    whether it is held.

    When another process holds it, ``on_busy`` is called once and this one waits. Where the lock
    file cannot be made (a read-only folder) or the filesystem has no locks, the block runs
    unguarded (yields False). The OS releases the lock even on SIGKILL.
    """
    import fcntl

    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            locked = True
        except BlockingIOError:
            if on_busy is not None:
                on_busy()
            fcntl.flock(fd, fcntl.LOCK_EX)
            locked = True
        except OSError:
            locked = False  # no locks on this filesystem (ENOLCK)
        yield locked
    finally:
        os.close(fd)  # releases the lock


def safetensors_problem(path: str | Path) -> str | None:
    """Why ``path`` is not a whole ``.safetensors`` file (naming it), or None; reads only its header.

    A sound file has an 8-byte header length, a JSON header, and exactly the data length the header
    announces (so a truncated or appended-to file is caught without loading a tensor).
    """
    import struct

    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            if n > size - 8:
                return f"{path}: truncated ({size} bytes; the header alone announces {n})"
            header = json.loads(fh.read(n))
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except FileNotFoundError:
        return f"{path}: missing"
    except (OSError, struct.error, ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
        return f"{path}: unreadable header ({type(e).__name__})"
    if size != 8 + n + end:
        return f"{path}: {size} bytes, expected {8 + n + end} (truncated or overwritten)"
    return None
