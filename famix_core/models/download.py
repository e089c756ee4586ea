"""Pretrained CLIP weights from open_clip's download URL, fetched once into a cache that every node reads.

On a cluster the compute nodes often have no internet, while the login node that runs
``famix sweep run`` does. So the driver fetches a tag's weights (``model.pretrained=openai``)
into ``model.cache_dir`` (on the shared filesystem) before anything is submitted, and every stage
then loads that file from disk: :func:`cached_file` is what :func:`famix_core.models.clip.create_clip`
looks for first, so a node never tries the network when the file is there.

The cache layout is open_clip's own URL cache (``<cache_dir>/<file name of the URL>``, default
``~/.cache/clip``), so weights that open_clip downloaded earlier count too, and so do weights it
fetched from the Hugging Face hub. OpenAI's URLs carry the file's sha256; a download that does not
match it is refused, and a cached copy that does not counts as absent (an interrupted download or a
copy made by hand may be truncated): the next download replaces it. Downloads go to a temporary
file in the cache and are renamed when complete, so a killed download never leaves a file that
looks finished.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

from famix_core.errors import WeightsError

__all__ = ["weights_url", "url_cache_dir", "cached_file", "damaged_copy", "damaged_note", "unresolvable", "unreachable_error", "fetch_weights", "print_progress"]

ProgressFn = Callable[[int, int | None], None]
"""``progress(bytes_done, bytes_total or None)``, called as a download goes."""

_CHUNK = 1 << 20


def _pretrained_cfg(open_clip_name: str, tag: str) -> dict:
    from open_clip.pretrained import get_pretrained_cfg  # imports torch: only when a tag is used

    return get_pretrained_cfg(open_clip_name, tag) or {}


def weights_url(open_clip_name: str, tag: str) -> str:
    """open_clip's download URL for ``tag`` of architecture ``open_clip_name`` (RN50/openai: OpenAI's file).

    Raises:
        WeightsError: open_clip knows no URL for that tag.
    """
    url = _pretrained_cfg(open_clip_name, tag).get("url", "")
    if not url:
        raise WeightsError(f"model.pretrained={tag}: open_clip has no download URL for {open_clip_name}")
    return url


def url_cache_dir(cache_dir: str | None) -> Path:
    """Where URL downloads live: ``model.cache_dir``, else open_clip's default ``~/.cache/clip``."""
    return Path(cache_dir).expanduser() if cache_dir else Path("~/.cache/clip").expanduser()


def _url_copy(url: str, cache_dir: str | None) -> Path:
    """Where the download of ``url`` lives in the cache: open_clip's name for it, the URL's file name."""
    return url_cache_dir(cache_dir) / Path(urlparse(url).path).name


def cached_file(open_clip_name: str, tag: str, cache_dir: str | None) -> Path | None:
    """The tag's weights already on disk: the URL download, else a Hugging Face hub snapshot; None if neither."""
    cfg = _pretrained_cfg(open_clip_name, tag)
    url = cfg.get("url", "")
    if url:
        p = _url_copy(url, cache_dir)
        if p.is_file() and _matches(p, url):  # a damaged copy counts as absent: a download replaces it
            return p
    hub = cfg.get("hf_hub", "")
    if hub:
        from huggingface_hub import try_to_load_from_cache  # open_clip's own dependency

        repo, fname = hub.rstrip("/"), None
        if not hub.endswith("/"):
            repo, fname = hub.rsplit("/", 1)
        for f in [fname] if fname else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]:
            hit = try_to_load_from_cache(repo, f, cache_dir=cache_dir)
            if isinstance(hit, str):
                return Path(hit)
    return None


def damaged_copy(open_clip_name: str, tag: str, cache_dir: str | None) -> Path | None:
    """The tag's download in the cache when it is not the file its URL names (sha256): truncated (an
    interrupted download, a copy made by hand) or another file; else None. It counts as absent."""
    url = _pretrained_cfg(open_clip_name, tag).get("url", "")
    if not url:
        return None
    p = _url_copy(url, cache_dir)
    return p if p.is_file() and not _matches(p, url) else None


def _matches(path: Path, url: str) -> bool:
    """Whether ``path`` has the sha256 its URL names (OpenAI's URLs do; True for a URL without one).

    Raises:
        WeightsError: the file cannot be read.
    """
    want = _expected_sha256(url)
    if want is None:
        return True
    try:
        st = path.stat()
        return _sha256_of(str(path), st.st_mtime_ns, st.st_size) == want
    except OSError as e:
        raise WeightsError(f"model.pretrained: cannot read {path} ({e.strerror})") from None


@functools.lru_cache(maxsize=16)
def _sha256_of(path: str, mtime_ns: int, size: int) -> str:
    """The file's sha256, once per path, modification time and size (a plan checks many trials)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def unresolvable(host: str) -> str | None:
    """Why ``host`` cannot be reached by name (this machine is offline), else None."""
    try:
        socket.getaddrinfo(host, 443)
    except OSError as e:
        return f"{host} does not resolve ({e})"
    return None


def offline_error(backbone: str, open_clip_name: str, tag: str, cache_dir: str | None) -> WeightsError | None:
    """The error for an uncached ``tag`` whose host does not resolve (this machine is offline), else None.

    One wording wherever weights are looked for (``famix sweep plan``/``run``, the engine's commands):
    which file to copy where, so an offline cluster node gets the fix, not open_clip's ~45 s of retries.
    """
    cfg = _pretrained_cfg(open_clip_name, tag)
    url = cfg.get("url", "")
    host = urlparse(url).hostname if url else "huggingface.co"
    if not host or unresolvable(host) is None:
        return None
    where = url_cache_dir(cache_dir) if url else cache_dir or "the Hugging Face cache (~/.cache/huggingface)"
    fix = _by_hand(url, Path(where)) if url else "pass model.pretrained=<path to the file>"
    return WeightsError(
        f"model.pretrained={tag}: {backbone} weights are not in {where}{damaged_note(open_clip_name, tag, cache_dir)} "
        f"and {host} does not resolve: this machine is offline; {fix}"
    )


def damaged_note(open_clip_name: str, tag: str, cache_dir: str | None) -> str:
    """`` (<file> there is not the file its URL names: …)`` where the cache holds a damaged copy, else ``""``."""
    bad = damaged_copy(open_clip_name, tag, cache_dir)
    return f" ({bad} there is not the file its URL names: truncated or damaged)" if bad is not None else ""


def _by_hand(url: str, folder: Path) -> str:
    return f"copy {Path(urlparse(url).path).name} (from {url}) into {folder} on a machine with internet, or pass model.pretrained=<path to the file>"


def _expected_sha256(url: str) -> str | None:
    """OpenAI's URLs hold the file's sha256 as the folder name (``…/models/<sha256>/RN50.pt``)."""
    m = re.search(r"/([0-9a-f]{64})/[^/]+$", urlparse(url).path)
    return m.group(1) if m else None


def _cannot_download(open_clip_name: str, tag: str, url: str, folder: Path, reason: object) -> WeightsError:
    """The line of a download that cannot be made (``reason``: the network's error), with the file to copy by hand."""
    if isinstance(reason, socket.gaierror):
        reason = f"{urlparse(url).hostname} does not resolve: this machine is offline"
    return WeightsError(f"model.pretrained={tag}: cannot download {open_clip_name} weights ({reason}); {_by_hand(url, folder)}")


def unreachable_error(open_clip_name: str, tag: str, cache_dir: str | None, timeout_s: float = 3.0) -> WeightsError | None:
    """The error :func:`fetch_weights` would raise because its URL's server does not answer (a proxy or
    firewall refuses it, nothing listens), found by opening one connection and sending nothing; else None.
    ``famix sweep run`` asks this before it downloads, so the line joins the report of every other input."""
    url = weights_url(open_clip_name, tag)
    parts = urlparse(url)
    try:
        socket.create_connection((parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)), timeout=timeout_s).close()
    except OSError as e:
        return _cannot_download(open_clip_name, tag, url, url_cache_dir(cache_dir), e)
    return None


def fetch_weights(
    open_clip_name: str,
    tag: str,
    cache_dir: str | None = None,
    *,
    progress: ProgressFn | None = None,
    timeout_s: float = 30.0,
) -> Path:
    """Make sure ``tag``'s weights are in the cache; download them from open_clip's URL if not.

    Args:
        open_clip_name: the architecture (``RN50``, ``RN101``).
        tag: the open_clip tag (``openai``).
        cache_dir: ``model.cache_dir`` (``None``: ``~/.cache/clip``).
        progress: called with (bytes done, total or None) while downloading.
        timeout_s: per network operation (connect, each read).

    Returns:
        The cached file.

    Raises:
        WeightsError: one line: the machine cannot reach the URL (offline) and how to provide the
            file by hand, or the download does not match the sha256 its URL names.
    """
    hit = cached_file(open_clip_name, tag, cache_dir)
    if hit is not None:
        return hit
    url = weights_url(open_clip_name, tag)
    folder = url_cache_dir(cache_dir)
    target = _url_copy(url, cache_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WeightsError(f"model.cache_dir={folder}: cannot create it ({e.strerror})") from None
    tmp = folder / f".{target.name}.part-{os.getpid()}"
    want = _expected_sha256(url)
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp, open(tmp, "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0) or None
            done = 0
            while chunk := resp.read(_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
            out.flush()
            os.fsync(out.fileno())
        if total is not None and done != total:
            raise WeightsError(f"model.pretrained={tag}: the download of {url} ended at {done} of {total} bytes; run again")
        if want is not None and digest.hexdigest() != want:
            raise WeightsError(
                f"model.pretrained={tag}: {url} gave a file whose sha256 is {digest.hexdigest()[:16]}…, "
                f"not the {want[:16]}… its URL names; nothing was kept"
            )
        os.replace(tmp, target)
    except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError) as e:
        raise _cannot_download(open_clip_name, tag, url, folder, getattr(e, "reason", None) or e) from None
    finally:
        tmp.unlink(missing_ok=True)
    return target


def print_progress(label: str, print_line: Callable[[str], None], every_s: float = 2.0) -> ProgressFn:
    """A :data:`ProgressFn` that prints ``label: 12.3/244.4 MB`` at most every ``every_s`` seconds and at the end."""
    last = [0.0]

    def report(done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - last[0] < every_s and done != total:
            return
        last[0] = now
        size = f"{done / 1e6:.1f}/{total / 1e6:.1f} MB" if total else f"{done / 1e6:.1f} MB"
        print_line(f"{label}: {size}")

    return report
