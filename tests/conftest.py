"""Shared fixtures. Heavy ones (Ray, an MLflow server, Slurm) live with their tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(autouse=True)
def _isolated_cwd(tmp_path, monkeypatch):
    """Every test runs in its own folder so nothing lands in the source tree (mlruns/, runs/)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    yield


@pytest.fixture
def one_torch_thread():
    """Tiny tensors gain nothing from threads, and 2 OpenMP threads on a busy 2-core machine crawl."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def plain_tiny_config(data_root: str | Path, **train):
    """famix-tiny, random init, no style op, on 2 synthetic 64x96 images, CPU: the cheapest real training.

    ``train`` entries go into the ``train`` block (e.g. ``iterations``, ``checkpoint_every``).
    """
    from famix_core.config import FamixConfig

    return FamixConfig.model_validate(
        {
            "model": {"backbone": "famix-tiny", "pretrained": "none"},
            "style": {"strategy": "none", "augment": False, "mix": False},
            "data": {"root": str(data_root), "crop_size": 48,
                     "synthetic": {"height": 64, "width": 96, "train_images": 2, "val_images": 1}},
            "train": {"batch_size": 2, "log_every": 1, "device": "cpu", **train},
        }
    )  # fmt: skip


def mixstyle_tiny_config(data_root: str | Path, train_images: int, **train):
    """famix-tiny, random init, fully trained, with MixStyle (so the style op runs) on 64x96 synthetic images, CPU.

    ``train`` entries form the ``train`` block (``device`` defaults to the CPU).
    """
    from famix_core.config import FamixConfig

    return FamixConfig.model_validate(
        {
            "model": {"backbone": "famix-tiny", "pretrained": "none", "freeze": "none"},
            "style": {"strategy": "famix", "augment": False, "mix": True},
            "data": {"root": str(data_root), "crop_size": 48,
                     "synthetic": {"height": 64, "width": 96, "train_images": train_images, "val_images": 2}},
            "train": {"device": "cpu", **train},
        }
    )  # fmt: skip


def _start_mlflow_server(tmp_path, port: int) -> subprocess.Popen:
    with open(tmp_path / "server.log", "w") as log:
        return subprocess.Popen(
            [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{tmp_path}/srv.db",
             "--default-artifact-root", str(tmp_path / "srv-artifacts"), "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1"],
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
            stdout=subprocess.DEVNULL, stderr=log, start_new_session=True,
        )  # fmt: skip


def _stop_process_group(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


@pytest.fixture
def mlflow_server_uri(tmp_path):
    """A real ``mlflow server`` (light form) on a free 127.0.0.1 port; stopped by its process group.

    The port is free when it is chosen and let go before the server binds it: should something take
    it meanwhile, the server exits saying so, and another port is tried (three in all)."""
    for attempt in range(3):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        proc = _start_mlflow_server(tmp_path, port)
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 90
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as r:
                    if r.status == 200 and proc.poll() is None:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                break
            time.sleep(0.5)
        if proc.poll() is None and time.time() <= deadline:
            break
        _stop_process_group(proc)
        log = (tmp_path / "server.log").read_text()
        if "in use" not in log or attempt == 2:
            pytest.fail("mlflow server did not become healthy: " + log[-2000:])
    try:
        yield url
    finally:
        _stop_process_group(proc)
