"""Device choice and per-device state: cuda:N is made current, only its RNG state is saved and restored."""

from __future__ import annotations

import pytest
import torch

from famix_core.device import activate, device_rng_state, set_device_rng_state


@pytest.fixture
def fake_cuda(monkeypatch):
    """Record what would be asked of CUDA; the all-devices calls are forbidden."""
    calls = []

    def forbidden(*_a, **_k):
        raise AssertionError("touches every visible GPU")

    def set_device(d):
        if torch.device(d).index is None:  # as torch 2.11 does
            raise ValueError(f"Expected a torch.device with a specified index or an integer, but got:{d}")
        calls.append(("set_device", torch.device(d)))

    monkeypatch.setattr(torch.cuda, "set_device", set_device)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda d="cuda": (calls.append(("get", torch.device(d))), torch.tensor([7, int(torch.device(d).index or 0)], dtype=torch.uint8))[1])
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, d="cuda": calls.append(("set", torch.device(d), s.tolist())))
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", forbidden)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", forbidden)
    return calls


def test_cuda_n_is_made_current_and_only_its_rng_state_travels(fake_cuda):
    dev = torch.device("cuda:1")
    assert activate(dev) == dev
    state = device_rng_state(dev)
    assert list(state) == ["cuda"] and state["cuda"].tolist() == [7, 1]
    set_device_rng_state(state, dev)
    assert fake_cuda == [("set_device", dev), ("get", dev), ("set", dev, [7, 1])]


def test_old_checkpoints_restore_the_entry_of_this_device(fake_cuda):
    rng = {"cuda.0": torch.tensor([0], dtype=torch.uint8), "cuda.1": torch.tensor([1], dtype=torch.uint8)}
    set_device_rng_state(rng, torch.device("cuda:1"))
    set_device_rng_state(rng, torch.device("cuda"))  # no index: the current device (0 here)
    assert fake_cuda == [("set", torch.device("cuda:1"), [1]), ("set", torch.device("cuda"), [0])]


def test_plain_cuda_is_already_current(fake_cuda):
    dev = torch.device("cuda")
    assert activate(dev) == dev and fake_cuda == []


def test_cpu_needs_no_cuda_state(fake_cuda):
    cpu = torch.device("cpu")
    assert activate(cpu) == cpu and device_rng_state(cpu) == {}
    set_device_rng_state({"cuda": torch.tensor([1], dtype=torch.uint8)}, cpu)
    assert fake_cuda == []


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices (cuda:1)")
def test_training_on_cuda_1_leaves_gpu_0_alone(tmp_path):
    from famix_core.train import Trainer
    from conftest import plain_tiny_config

    cfg = plain_tiny_config(tmp_path / "data", iterations=2, device="cuda:1", checkpoint_every=1)
    g0 = torch.cuda.get_rng_state(0)
    t = Trainer(cfg, tmp_path / "o", ckpt_dir=tmp_path / "ck")
    t.run()
    assert torch.cuda.current_device() == 1 and torch.equal(torch.cuda.get_rng_state(0), g0)
    assert torch.cuda.memory_allocated(0) == 0


def test_auto_without_gpu_warns_or_refuses(monkeypatch):
    """device=auto on a stage given no GPU: the CPU with a warning, or a one-line refusal (paper profile)."""
    from famix_core.config import FamixConfig
    from famix_core.device import CpuFallbackWarning, DeviceError, pick_device, stage_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.warns(CpuFallbackWarning, match="no CUDA device visible .CUDA_VISIBLE_DEVICES=''.; running on the CPU"):
        assert pick_device("auto") == torch.device("cpu")
    with pytest.raises(DeviceError, match=r"^train.device=auto: no CUDA device visible .* set train.device=cpu$"):
        stage_device(FamixConfig.model_validate({"train": {"cpu_fallback": False}}))
    # explicit cpu runs silently, whatever the fallback setting
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert stage_device(FamixConfig.model_validate({"train": {"device": "cpu", "cpu_fallback": False}})).type == "cpu"


def test_paper_profile_refuses_cpu_fallback_and_smoke_runs_on_cpu():
    from orchestrator.sweep import BUILTIN_PROFILES

    assert BUILTIN_PROFILES["paper"]["base"]["train"]["cpu_fallback"] is False
    assert BUILTIN_PROFILES["smoke"]["base"]["train"]["device"] == "cpu"


@pytest.fixture
def restore_kernel_flags(monkeypatch):
    flags = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)  # fmt: skip
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    yield
    torch.use_deterministic_algorithms(flags[0], warn_only=flags[1])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = flags[2], flags[3]


def test_deterministic_mode_and_benchmark_mode_on_cuda(restore_kernel_flags):
    """train.deterministic on CUDA: cuBLAS workspace, deterministic algorithms (warn-only), no cuDNN benchmark;
    otherwise benchmark mode for training's fixed crops, off for evaluation; the CPU is left alone."""
    import os

    from famix_core.device import CUBLAS_WORKSPACE, configure_kernels

    cuda = torch.device("cuda")
    configure_kernels(torch.device("cpu"), deterministic=True, benchmark=False)
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ and not torch.are_deterministic_algorithms_enabled()
    configure_kernels(cuda, deterministic=True, benchmark=True)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == CUBLAS_WORKSPACE == ":4096:8"
    assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    configure_kernels(cuda, deterministic=False, benchmark=True)  # training
    assert not torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.benchmark
    assert not torch.backends.cudnn.deterministic
    configure_kernels(cuda, deterministic=False, benchmark=False)  # evaluation: image sizes vary
    assert not torch.backends.cudnn.benchmark
