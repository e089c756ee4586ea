"""The engine's commands on bad input: one line naming the option, exit 2, nothing written; the CPU-fallback notice."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from orchestrator.__main__ import main

# each command fails fast on what follows its --out if the --out check is missing (no data, no weights)
TINY = ["model.backbone=famix-tiny", "model.pretrained=none", "data.root=missing", "style.strategy=none"]
OUT_COMMANDS = {
    "data synth": (["data", "synth", "--train", "1", "--val", "1", "--height", "32", "--width", "32"], "--out"),
    "data synth-captions": (["data", "synth-captions", "--scenes", "1", "--styles-per-scene", "1"], "--out"),
    "pretrain-clip": (["pretrain-clip", "steps=1", "batch_size=2", "corpus.scenes=2", "corpus.styles_per_scene=1"], "--out"),
    "mine-styles": (["mine-styles", *TINY], "--out"),
    "train": (["train", *TINY], "--out"),
    "train --ckpt": (["train", "--out", "ok", *TINY], "--ckpt"),
    "evaluate": (["evaluate", "--weights", "missing.safetensors", *TINY], "--out"),
}


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _refused(capsys, argv: list[str]) -> str:
    """Run ``famix argv`` in the test's folder; assert exit 2 and that nothing was written; return stderr."""
    before = _tree(Path.cwd())
    with warnings.catch_warnings(record=True) as shown_by_python:
        rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert not shown_by_python, shown_by_python[0]  # a notice is the command's own line on stderr
    assert _tree(Path.cwd()) == before
    return err


@pytest.fixture
def no_gpu(monkeypatch):
    """``train.device=auto`` finds no GPU, wherever the test runs."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")


# ----------------------------------------------------------------------------- output folders


@pytest.mark.parametrize("command", list(OUT_COMMANDS))
def test_out_under_a_file_is_one_line_before_any_work(command, capsys, no_gpu):
    argv, option = OUT_COMMANDS[command]
    Path("afile").write_text("")
    err = _refused(capsys, [*argv, option, "afile/x"])
    assert err == f"famix: error: command line: {option}: afile/x: afile is not a folder\n"
    err = _refused(capsys, [*argv, option, "afile"])
    assert err == f"famix: error: command line: {option}: afile: not a folder\n"


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
@pytest.mark.parametrize("command", ["data synth", "data synth-captions", "pretrain-clip", "train --ckpt"])
def test_out_where_no_folder_can_be_made_is_one_line(command, capsys, no_gpu):
    argv, option = OUT_COMMANDS[command]
    err = _refused(capsys, [*argv, option, "/proc/famix-out"])
    assert err == f"famix: error: command line: {option}: /proc/famix-out: cannot write in /proc (No such file or directory)\n"


def test_synth_into_a_folder_of_other_files_names_out(capsys):
    Path("mine").mkdir()
    Path("mine/notes.txt").write_text("x")
    err = _refused(capsys, ["data", "synth", "--out", "mine"])
    assert err == (
        "famix: error: command line: --out: mine holds files but no famix_synthetic.json: "
        "the synthetic benchmark needs a new or empty folder\n"
    )


def test_synth_captions_into_a_folder_of_other_files_names_out_before_rendering(capsys, monkeypatch):
    """``data synth-captions`` wrote its images among any files in --out; like ``data synth`` it now
    takes a new or empty folder, or one holding a previous corpus (corpus.json), and says so first."""
    import famix_core.data.captions

    def no_work(*args, **kwargs):
        raise AssertionError("rendered a corpus for a folder it refuses")

    monkeypatch.setattr(famix_core.data.captions, "build_corpus", no_work)
    Path("mine").mkdir()
    Path("mine/notes.txt").write_text("x")
    err = _refused(capsys, ["data", "synth-captions", "--scenes", "1", "--styles-per-scene", "1", "--out", "mine"])
    assert err == (
        "famix: error: command line: --out: mine holds files but no corpus.json: "
        "the caption corpus needs a new or empty folder, or one of a previous corpus\n"
    )
    # the folder the command runs in cannot be replaced (it was a traceback: Device or resource busy)
    err = _refused(capsys, ["data", "synth-captions", "--scenes", "1", "--styles-per-scene", "1", "--out", "."])
    assert err == "famix: error: command line: --out: . is the current folder, which the corpus would replace whole; name a folder in it\n"


def test_out_check_leaves_nothing_in_a_writable_folder(tmp_path):
    from famix_core.io import check_out_dir

    check_out_dir(tmp_path / "new" / "deeper")
    check_out_dir(tmp_path)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- options named as typed


@pytest.mark.parametrize(
    "argv, line",
    [
        (["data", "synth", "--train", "0"], "--train: Input should be greater than or equal to 1 (got 0)"),
        (["data", "synth", "--val", "0"], "--val: Input should be greater than or equal to 1 (got 0)"),
        (["data", "synth", "--height", "8"], "--height: Input should be greater than or equal to 32 (got 8)"),
        (["data", "synth-captions", "--styles-per-scene", "0"], "--styles-per-scene: Input should be greater than or equal to 1 (got 0)"),
        (["data", "synth-captions", "--scenes", "0"], "--scenes: Input should be greater than or equal to 1 (got 0)"),
    ],
)
def test_synth_options_are_named_as_typed(argv, line, capsys):
    assert _refused(capsys, [*argv, "--out", "data"]) == f"famix: error: command line: {line}\n"


def test_train_without_bank_names_the_option(capsys, no_gpu):
    err = _refused(capsys, ["train", "--out", "o", *TINY, "style.strategy=famix"])
    assert err == (
        "famix: error: command line: --bank: style.strategy=famix with style.augment=true needs a style bank:"
        " pass --bank DIR (mine styles first: famix mine-styles --out DIR)\n"
    )


def test_a_bank_the_training_would_not_use_is_refused(capsys, no_gpu):
    """`--bank DIR style.augment=false` trained MixStyle and ignored the bank, without a word."""
    err = _refused(capsys, ["train", "--out", "o", *TINY, "style.strategy=famix", "style.augment=false", "--bank", "b"])
    assert err == ("famix: error: command line: --bank b: not used by this training (style strategy mixstyle mines no styles);"
                   " drop it, or set style.strategy=famix style.augment=true\n")  # fmt: skip
    assert not Path("o").exists()


def test_a_bank_that_is_a_file_is_named_so(capsys, no_gpu):
    """`--bank bank.safetensors` (a file of the bank, not its folder) read `…/bank.safetensors/bank.safetensors: not found`."""
    Path("bank.safetensors").write_text("")
    err = _refused(capsys, ["train", "--out", "o", *TINY, "style.strategy=famix", "--bank", "bank.safetensors"])
    assert err == "famix: error: bank.safetensors: a file; expected the style bank's folder (it holds bank.safetensors and bank.json)\n"


def test_trainer_without_bank_names_its_argument(tmp_path):
    """A library caller is told about the ``bank_dir`` argument, not a command-line option."""
    from famix_core.config import FamixConfig
    from famix_core.errors import DataError
    from famix_core.train import Trainer

    cfg = FamixConfig.model_validate({"model": {"backbone": "famix-tiny", "pretrained": "none"}, "train": {"device": "cpu"}})
    with pytest.raises(DataError, match="needs a style bank: pass bank_dir"):
        Trainer(cfg, tmp_path / "o")


# ----------------------------------------------------------------------------- CPU-fallback notice

NOTICE = "famix: warning: train.device=auto: no CUDA device visible (CUDA_VISIBLE_DEVICES=''); running on the CPU\n"


def test_cpu_fallback_is_one_line_without_source(capsys, no_gpu):
    before = warnings.showwarning
    err = _refused(capsys, ["train", "--out", "o", *TINY])
    assert err == NOTICE + (
        "famix: error: gta5 train: data root not found: missing/gta5"
        " (expected images/*.png under it; set data.root or data.roots.gta5)\n"
    )
    assert warnings.showwarning is before  # in-process callers get their own display back


@pytest.mark.parametrize(
    "argv, line",
    [
        (["evaluate", "--weights", "w.safetensors"], "w.safetensors: weights file not found"),
        (["mine-styles", "model.pretrained=w.pt"], "model.pretrained: weights file not found: w.pt"),
        (["train", "model.pretrained=w.pt"], "model.pretrained: weights file not found: w.pt"),
        (["train", "model.pretrained=famix-synth", "model.backbone=RN50"],
         "model.pretrained: the packaged weights 'famix-synth' exist for famix-tiny, not for backbone RN50"),
    ],
)
def test_weights_error_comes_alone_before_the_device_notice(argv, line, capsys, no_gpu):
    given = {a.split("=")[0] for a in argv if "=" in a}
    tiny = [a for a in TINY if a.split("=")[0] not in {"model.pretrained", *given}]
    assert _refused(capsys, [*argv, "--out", "o", *tiny]) == f"famix: error: {line}\n"


@pytest.mark.parametrize(
    "argv, line",
    [
        (["data", "synth", "--out", "s", "--seed", "-5"], "command line: --seed: expected a seed from 0 to 4294967295, got -5"),
        (["data", "synth-captions", "--out", "c", "--seed", "-5"], "command line: --seed: expected a seed from 0 to 4294967295, got -5"),
        (["pretrain-clip", "--out", "p", "corpus.seed=-5"], "command line: corpus.seed: expected a seed from 0 to 4294967295, got -5"),
        (["pretrain-clip", "--out", "p", "seed=4294967296"], "command line: seed: expected a seed from 0 to 4294967295, got 4294967296"),
    ],
)
def test_a_seed_numpy_cannot_take_is_one_line_not_a_traceback(argv, line, capsys):
    """numpy's generators refuse negative seeds (a traceback from the generator, once): the config says so first."""
    assert _refused(capsys, argv) == f"famix: error: {line}\n"


def test_famix_help_names_every_data_subcommand(capsys):
    """`famix --help` says what `famix data` holds: synth, synth-captions, check and bench, not only the first and third."""
    with pytest.raises(SystemExit):
        main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "data datasets: generate the synthetic benchmark or the caption corpus, check dataset roots, time the loaders" in out


# ----------------------------------------------------------------------------- interrupts


@pytest.mark.slow
def test_ctrl_c_of_famix_train_checkpoints_and_the_same_command_resumes(tmp_path):
    """`famix train` stopped at once on Ctrl-C: the iterations since the last periodic checkpoint were
    lost. Now it checkpoints the iteration it is in, as a sweep's training does, and says so once: a
    terminal's Ctrl-C also reaches the data loader's worker processes, which inherited the handler and
    printed the notice once more each."""
    import os
    import re
    import signal
    import subprocess
    import sys
    import time

    data = tmp_path / "data"
    assert main(["data", "synth", "--out", str(data), "--train", "2", "--val", "1", "--height", "64", "--width", "96"]) == 0
    cmd = [sys.executable, "-m", "orchestrator", "train", "--out", str(tmp_path / "o"), "model.backbone=famix-tiny",
           "model.pretrained=none", f"data.root={data}", "style.strategy=none", "train.device=cpu", "train.iterations=3000",
           "train.batch_size=2", "data.crop_size=48", "data.num_workers=2", "train.checkpoint_every=100000",
           "train.log_every=1"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # a terminal's Ctrl-C: SIGINT to the process group, at its default disposition whatever the runner's
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    err = []
    try:
        for line in proc.stderr:  # type: ignore[union-attr]
            err.append(line)
            if line.startswith("[train] step=5 "):
                os.killpg(proc.pid, signal.SIGINT)
                break
        err.append(proc.communicate(timeout=120)[1])
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = "".join(err)
    assert proc.returncode == 130, text[-3000:]
    assert text.count("[train] stopping after this iteration's checkpoint (Ctrl-C again stops at once)") == 1, text[-3000:]
    m = re.search(r"famix: interrupted at iteration (\d+); the same command resumes from its checkpoint", text)
    assert m and "Traceback" not in text, text[-3000:]
    stopped = int(m.group(1))
    assert (tmp_path / "o" / "checkpoints" / f"iter-{stopped:08d}").is_dir()  # no periodic one (every 100000)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        first = None
        for line in proc.stderr:  # type: ignore[union-attr]
            if line.startswith("[train] step="):
                first = int(line.split()[1].split("=")[1])
                break
            assert time.time() < deadline
    finally:
        proc.kill()
        proc.wait()
    assert first == stopped + 1  # the rerun goes on from the checkpoint
