"""What the engine's commands do with what --out, --weights and the data roots already hold: another
training's or pretraining's outputs are refused, never overwritten; a training checkpoint given as
weights is named as such; every missing domain is said at once; an unknown key of pretrain-clip is
named whole, with the key it has for it."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest

from orchestrator.__main__ import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# famix-tiny, random init, no style op, 2 iterations on 2 synthetic 64x96 images, CPU: seconds
TRAIN = ["model.backbone=famix-tiny", "model.pretrained=none", "style.strategy=none", "train.device=cpu",
         "train.iterations=2", "train.batch_size=2", "data.crop_size=48", "train.val_crop=null"]  # fmt: skip
PRETRAIN = ["corpus.scenes=1", "corpus.styles_per_scene=2", "steps=2", "batch_size=4", "warmup=1"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished `famix train --out run` (checkpoints in run/checkpoints) on a synthetic benchmark: (data root, run)."""
    import torch

    root = tmp_path_factory.mktemp("trained")
    data, run = root / "data", root / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the tests' own trainings (one_torch_thread): the same float sums, the same bytes
    try:
        assert main(["data", "synth", "--out", str(data), "--train", "2", "--val", "1", "--height", "64", "--width", "96"]) == 0
        assert main(["train", "--out", str(run), f"data.root={data}", *TRAIN]) == 0
    finally:
        torch.set_num_threads(threads)
    return data, run


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _refused(capsys, argv: list[str]) -> str:
    """Run ``famix argv``: exit 2, one line on stderr, no Python warning; return that line."""
    with warnings.catch_warnings(record=True) as shown_by_python:
        rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert not shown_by_python, shown_by_python[0]
    lines = [x for x in err.splitlines() if not x.startswith("famix: warning:")]  # the CPU notice may come first
    assert len(lines) == 1 and lines[0].startswith("famix: error: "), err
    return lines[0].removeprefix("famix: error: ")


# ----------------------------------------------------------------------------- famix train --out


def test_a_training_killed_while_writing_its_outputs_finishes_them_on_a_rerun(trained, tmp_path, capsys, monkeypatch):
    """Killed between model.safetensors and summary.json, with no checkpoint yet (the last one came after
    the outputs): the rerun was refused as "of an unknown training". The last checkpoint now comes first,
    so the rerun resumes it, trains nothing, and writes the outputs again."""
    import famix_core.train

    data, finished = trained
    run = tmp_path / "run"
    argv = ["train", "--out", str(run), f"data.root={data}", *TRAIN, "train.checkpoint_every=100"]

    def killed(path, obj):
        raise KeyboardInterrupt  # as a kill: nothing after the weights is written

    monkeypatch.setattr(famix_core.train, "atomic_write_json", killed)
    assert main(argv) == 130
    assert (run / "model.safetensors").is_file() and not (run / "summary.json").exists()
    monkeypatch.undo()
    capsys.readouterr()
    assert main(argv) == 0
    assert "[train] resuming from iteration 2/2" in capsys.readouterr().err
    assert (run / "model.safetensors").read_bytes() == (finished / "model.safetensors").read_bytes()


def test_train_refuses_the_outputs_of_another_training_without_its_checkpoints(trained, tmp_path, capsys):
    """`famix train --out DIR` where DIR held another training's model.safetensors and summary.json, and
    no checkpoint of it (deleted, or --ckpt elsewhere), wrote its own over them without a word. The
    summary now records what training it is of: another one is refused, naming DIR, what it holds and
    how to go on; the same training trains again (to the same weights)."""
    data, finished = trained
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    argv = ["train", "--out", str(run), f"data.root={data}", *TRAIN]
    before = _files(run)
    line = (f"{run}: holds model.safetensors and summary.json of another training (train.lr_decoder 0.1, here 0.05);"
            " write elsewhere (another --out), or delete them to train there")  # fmt: skip
    assert _refused(capsys, [*argv, "--ckpt", str(tmp_path / "elsewhere"), "train.lr_decoder=0.05"]) == line
    assert _files(run) == before and not (tmp_path / "elsewhere").exists()
    shutil.rmtree(run / "checkpoints")
    before = _files(run)
    assert _refused(capsys, [*argv, "train.lr_decoder=0.05"]) == line
    assert _files(run) == before

    assert main(argv) == 0  # the same training, its checkpoints gone: trained again, to the same weights
    assert (run / "model.safetensors").read_bytes() == before["model.safetensors"]
    assert "training" not in json.loads(capsys.readouterr().out)  # the summary printed: as it was

    # a summary.json written before it recorded its training, and no checkpoint: whose it is cannot be told
    summary = json.loads((run / "summary.json").read_text())
    del summary["training"]
    (run / "summary.json").write_text(json.dumps(summary))
    shutil.rmtree(run / "checkpoints")
    before = _files(run)
    assert _refused(capsys, argv) == (
        f"{run}: holds model.safetensors and summary.json of an unknown training (no record in summary.json, and no"
        f" checkpoint of this one in {run / 'checkpoints'}); write elsewhere (another --out), or delete them to train there"
    )
    assert _files(run) == before


def test_the_summary_file_records_its_training(trained):
    """summary.json records the training's identity (what the check above compares)."""
    from famix_core.identity import resume_view

    _, run = trained
    written = json.loads((run / "summary.json").read_text())
    assert resume_view(written["training"])["train"]["iterations"] == 2
    assert {"iterations", "final_loss", "images_per_s", "selected_iteration"} <= set(written)


# ----------------------------------------------------------------------------- famix pretrain-clip --out


@pytest.fixture
def quick_checks(monkeypatch):
    """The zero-shot checks at the end of a pretraining, made instant (they are not what is tested)."""
    import famix_core.zero_shot

    scores = {"style_top1": 0.5, "style_chance": 0.05, "class_r_precision": 0.3, "class_chance": 0.1}
    monkeypatch.setattr(famix_core.zero_shot, "zero_shot", lambda model, backbone, cfg: dict(scores))


@pytest.fixture
def no_corpus(monkeypatch):
    """Fail the test if a refused command renders the corpus (the refusal must come before any work)."""
    import famix_core.pretrain

    def rendered(*args, **kwargs):
        raise AssertionError("rendered a corpus for a folder it refuses")

    monkeypatch.setattr(famix_core.pretrain, "build_corpus", rendered)


def test_pretrain_refuses_the_weights_of_another_config(tmp_path, capsys, quick_checks, monkeypatch):
    """`famix pretrain-clip --out DIR` again with other settings replaced DIR's weights.safetensors without
    a word (and deleted a checkpoint of another config, when there was one). It is refused now, as
    `famix train` refuses another training's; the same config again writes the same weights."""
    from famix_core.pretrain import SUMMARY_FILE, WEIGHTS_FILE

    out = tmp_path / "pc"
    assert main(["pretrain-clip", "--out", str(out), *PRETRAIN]) == 0
    capsys.readouterr()
    before = _files(out)
    import famix_core.pretrain

    render = famix_core.pretrain.build_corpus
    monkeypatch.setattr(famix_core.pretrain, "build_corpus", lambda *a, **k: pytest.fail("rendered a corpus it refuses to train"))
    assert _refused(capsys, ["pretrain-clip", "--out", str(out), *PRETRAIN, "lr=0.01", "steps=3"]) == (
        f"{out}: holds {WEIGHTS_FILE} and {SUMMARY_FILE} of another config (steps 2, here 3; lr 0.002, here 0.01);"
        " write elsewhere (another --out), or delete them to pretrain there"
    )
    assert _files(out) == before
    monkeypatch.setattr(famix_core.pretrain, "build_corpus", render)
    assert main(["pretrain-clip", "--out", str(out), *PRETRAIN, "log_every=7"]) == 0  # log_every changes no weight
    assert (out / WEIGHTS_FILE).read_bytes() == before[WEIGHTS_FILE]


def test_a_pretraining_written_before_a_field_existed_is_of_the_same_config(tmp_path):
    """A pretrain.json without a field added later (corpus.paper_styles) was refused as another config
    (`corpus.paper_styles unset, here 0.0`); the field's default does what the code did before it."""
    import json

    from famix_core.errors import FamixError
    from famix_core.pretrain import SUMMARY_FILE, WEIGHTS_FILE, PretrainConfig, check_out

    cfg = PretrainConfig()
    older = cfg.model_dump(mode="json")
    del older["corpus"]["paper_styles"]
    out = tmp_path / "pc"
    out.mkdir()
    (out / WEIGHTS_FILE).write_bytes(b"weights")
    (out / SUMMARY_FILE).write_text(json.dumps({"config": older}))
    check_out(cfg, out)  # taken
    with pytest.raises(FamixError, match=r"of another config \(corpus.paper_styles 0.0, here 0.5\)"):
        check_out(cfg.model_copy(update={"corpus": cfg.corpus.model_copy(update={"paper_styles": 0.5})}), out)


@pytest.mark.parametrize("holds", ["other files", "a training"])
def test_pretrain_refuses_a_folder_of_other_files(holds, trained, tmp_path, capsys, no_corpus):
    """`pretrain-clip --out` into a folder of unrelated files (or a training's folder) wrote its weights
    among them; like `data synth` and `data synth-captions` it takes a new or empty folder, or its own."""
    out = tmp_path / "o"
    if holds == "a training":
        shutil.copytree(trained[1], out)
    else:
        out.mkdir()
        (out / "notes.txt").write_text("mine")
    before = _files(out)
    assert _refused(capsys, ["pretrain-clip", "--out", str(out), *PRETRAIN]) == (
        f"command line: --out: {out} holds files but no pretrain.json: CLIP pretraining needs a new or empty folder,"
        " or one of a previous pretraining"
    )
    assert _files(out) == before


# ----------------------------------------------------------------------------- famix evaluate


def test_evaluate_names_a_training_checkpoint_given_as_weights(trained, tmp_path, capsys):
    """A training checkpoint's tensors.safetensors as --weights gave a list of 160 missing and 200
    unexpected keys; it is named for what it is, with the file to pass instead."""
    data, run = trained
    ckpt = run / "checkpoints" / "iter-00000002" / "tensors.safetensors"
    argv = ["evaluate", "--out", str(tmp_path / "ev"), "--weights", str(ckpt), "--domains", "C", f"data.root={data}", *TRAIN]
    assert _refused(capsys, argv) == (
        f"{ckpt}: a training checkpoint of iteration 2 (model, optimizer and RNG state), not a model's weights file;"
        f" pass the training's model.safetensors ({run / 'model.safetensors'})"
    )
    assert not (tmp_path / "ev").exists()
    # a checkpoint folder moved away from its training: the file to pass is said in general
    moved = tmp_path / "ck" / "iter-00000002"
    shutil.copytree(ckpt.parent, moved)
    argv[argv.index("--weights") + 1] = str(moved / "tensors.safetensors")
    assert _refused(capsys, argv).endswith("not a model's weights file; pass the training's OUT/model.safetensors (written when it finishes)")


def test_evaluate_names_every_missing_domain_at_once(trained, tmp_path, capsys):
    """`famix evaluate --domains C,B` with neither data folder named C alone; `famix sweep plan` named
    both. Each missing root is one line, the ACDC conditions sharing a folder one line for them all."""
    _, run = trained
    nodata = tmp_path / "nodata"
    argv = ["evaluate", "--out", str(tmp_path / "ev"), "--weights", str(run / "model.safetensors"), f"data.root={nodata}", *TRAIN]
    with warnings.catch_warnings(record=True):
        assert main([*argv, "--domains", "C,AN,AF,B"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "famix: error: 3 problems with the domains' data (nothing was scored):\n"
        f"  cityscapes val: data root not found: {nodata}/cityscapes (expected leftImg8bit/val/<city>/*_leftImg8bit.png"
        " under it; set data.root or data.roots.cityscapes)\n"
        f"  acdc_night, acdc_fog val: data root not found: {nodata}/acdc (expected rgb_anon/{{night,fog}}/val/<sequence>/"
        "*_rgb_anon.png under it; set data.root or data.roots.acdc)\n"
        f"  bdd100k val: data root not found: {nodata}/bdd100k (expected images/10k/val/*.jpg, or images/val/*.jpg"
        " (official README layout) under it; set data.root or data.roots.bdd100k)\n"
    )
    assert not (tmp_path / "ev").exists()
    assert _refused(capsys, [*argv, "--domains", "B"]).startswith(f"bdd100k val: data root not found: {nodata}/bdd100k")


# ----------------------------------------------------------------------------- pretrain-clip's keys


@pytest.mark.parametrize(
    "override, line",
    [
        ("train.iterations=10", "train.iterations: unknown key (did you mean steps?)"),
        ("iterations=10", "iterations: unknown key (did you mean steps?)"),
        ("model.backbone=RN50", "model.backbone: unknown key (did you mean backbone?)"),
        ("train.lr_decoder=0.1", "train.lr_decoder: unknown key (did you mean lr?)"),
        ("corpus.scenez=3", "corpus.scenez: unknown key (did you mean corpus.scenes?)"),
    ],
)
def test_an_unknown_pretrain_key_is_named_whole_with_the_key_it_has(override, line, capsys):
    """`famix pretrain-clip train.iterations=10` said `command line: train: unknown key`: the first part
    alone, and nothing to use instead. The key is named as typed, with pretrain-clip's own key for it."""
    assert _refused(capsys, ["pretrain-clip", "--out", "o", override]) == f"command line: {line}"
    assert not Path("o").exists()


def test_an_unknown_section_in_a_pretrain_config_file_is_named_whole(capsys):
    Path("p.yaml").write_text("steps: 5\ntrain:\n  iterations: 10\n")
    assert _refused(capsys, ["pretrain-clip", "--config", "p.yaml", "--out", "o"]) == (
        "p.yaml: train.iterations: unknown key (did you mean steps?)"
    )
