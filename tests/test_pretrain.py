"""The caption corpus, CLIP pretraining on it, and the famix-synth weights shipped in the package."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from famix_core.classes import CLASS_NAMES
from famix_core.config import FamixConfig, SynthConfig
from famix_core.data.captions import (
    NAMED_STYLES,
    PAPER_STYLE_LOOKS,
    CorpusConfig,
    bind_nonsense,
    build_corpus,
    check_disjoint,
    classes_by_area,
    nonsense_names,
    scene_caption,
    write_corpus,
)
from famix_core.data.synth.benchmark import scene_ids
from famix_core.errors import WeightsError
from famix_core.weights import packaged_path, weights_identity

TINY_CORPUS = CorpusConfig(scenes=3, styles_per_scene=2, nonsense_styles=4, nonsense_fraction=0.5)


def test_corpus_is_deterministic_and_seeded():
    a, b = build_corpus(TINY_CORPUS), build_corpus(TINY_CORPUS)
    assert a.images.shape == (6, 64, 128, 3)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
    assert a.words == b.words and a.named == b.named
    c = build_corpus(TINY_CORPUS.model_copy(update={"seed": 1}))
    assert np.array_equal(a.labels, c.labels)  # same scenes ...
    assert not np.array_equal(a.images, c.images)  # ... other styles
    # two appearances of one scene differ
    assert np.abs(a.images[0].astype(int) - a.images[1].astype(int)).mean() > 5


def test_corpus_scene_ids_never_overlap_the_benchmark():
    for synth in (SynthConfig(), SynthConfig(height=64, width=128, train_images=32, val_images=8)):
        bench = set(scene_ids(synth)["train"]) | set(scene_ids(synth)["val"])
        assert not bench & set(CorpusConfig().scene_ids())
        check_disjoint(CorpusConfig(), synth)
    with pytest.raises(ValueError, match="inside the benchmark"):
        check_disjoint(CorpusConfig(), SynthConfig(train_images=2_000_000))
    with pytest.raises(ValidationError, match="first_scene_id"):
        CorpusConfig(first_scene_id=10)


def test_captions_say_the_classes_and_the_style():
    corpus = build_corpus(TINY_CORPUS)
    rng = np.random.default_rng(0)
    for i in range(len(corpus.images)):
        classes = classes_by_area(corpus.labels[i])
        caption = scene_caption(corpus.words[i], classes, rng)
        assert classes and all(CLASS_NAMES[c] in caption for c in classes)
        assert all(w in caption for w in corpus.words[i])
    # the largest class first
    counts = np.bincount(corpus.labels[0].reshape(-1), minlength=256)
    assert classes_by_area(corpus.labels[0])[0] == int(np.argmax(counts[:19]))
    # nonsense names are bound to fixed parameters (one draw per name and corpus seed)
    names = nonsense_names(4, 0)
    assert len(set(names)) == 4 and names == nonsense_names(4, 0) != nonsense_names(4, 1)
    assert bind_nonsense(TINY_CORPUS) == bind_nonsense(TINY_CORPUS)
    nonsense = [w for ws in corpus.words for w in ws if w.endswith(" style")]
    named = [w for ws in corpus.words for w in ws if not w.endswith(" style")]
    assert nonsense and named, corpus.words
    assert all(w[: -len(" style")] in names for w in nonsense)
    assert all(any(w in s.words for s in NAMED_STYLES.values()) for w in named)


def test_paper_style_names_caption_the_looks_their_words_mean():
    """``paper_styles``: the paper's 20 mining names, each bound to named looks of distinct groups."""
    from famix_core.prompts import STYLE_NAMES

    assert tuple(PAPER_STYLE_LOOKS) == STYLE_NAMES
    for name, looks in PAPER_STYLE_LOOKS.items():
        groups = [NAMED_STYLES[k].group for k in looks]
        assert len(set(groups)) == len(groups) >= 2, name
    # off (the default): the corpus is the one the shipped weights were trained on, no paper name in it
    off = build_corpus(TINY_CORPUS)
    assert off.words == build_corpus(TINY_CORPUS.model_copy(update={"paper_styles": 0.0})).words
    assert not any(w[: -len(" style")] in STYLE_NAMES for ws in off.words for w in ws)
    every = TINY_CORPUS.model_copy(update={"paper_styles": 1.0})
    a, b = build_corpus(every), build_corpus(every)
    assert np.array_equal(a.images, b.images) and a.words == b.words
    for words, named in zip(a.words, a.named):
        (word,) = words
        assert word.endswith(" style") and word[: -len(" style")] in STYLE_NAMES
        assert named == PAPER_STYLE_LOOKS[word[: -len(" style")]]
    with pytest.raises(ValidationError, match="paper_styles"):
        CorpusConfig(paper_styles=1.5)


def test_write_corpus(tmp_path):
    corpus = build_corpus(TINY_CORPUS)
    out = write_corpus(corpus, TINY_CORPUS, tmp_path / "corpus")
    lines = (out / "captions.jsonl").read_text().splitlines()
    assert len(lines) == 6 and (out / "images" / "1000000_0.png").is_file()
    assert '"caption": "' in lines[0] and (out / "corpus.json").is_file()


def test_write_corpus_replaces_a_previous_corpus_whole(tmp_path):
    """A second corpus into the same folder left the first one's images: 3 scenes then 2 gave 6 images
    under 4 captions. It is built beside the folder and replaces the previous corpus whole."""
    import json

    out = tmp_path / "corpus"
    write_corpus(build_corpus(TINY_CORPUS), TINY_CORPUS, out)
    two = TINY_CORPUS.model_copy(update={"scenes": 2})
    write_corpus(build_corpus(two), two, out)
    lines = [json.loads(x) for x in (out / "captions.jsonl").read_text().splitlines()]
    assert sorted(f"images/{p.name}" for p in (out / "images").iterdir()) == sorted(x["image"] for x in lines)
    assert len(lines) == 4 and len(list((out / "labels").iterdir())) == 4
    assert json.loads((out / "corpus.json").read_text())["scenes"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["corpus"]  # no temporary folder left beside it


def test_a_failed_corpus_write_leaves_the_previous_corpus_as_it_was(tmp_path, monkeypatch):
    """The images were saved in place: a write that failed halfway (a full disk, a Ctrl-C) left a
    mixture of two corpora. The previous corpus stays whole, and nothing is left beside it."""
    import famix_core.data.captions as captions

    out = tmp_path / "corpus"
    write_corpus(build_corpus(TINY_CORPUS), TINY_CORPUS, out)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    other = TINY_CORPUS.model_copy(update={"seed": 1})
    corpus = build_corpus(other)
    calls = []

    def fails_on_the_second_caption(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return scene_caption(*args)

    monkeypatch.setattr(captions, "scene_caption", fails_on_the_second_caption)
    with pytest.raises(KeyboardInterrupt):
        write_corpus(corpus, other, out)
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["corpus"]


def _tiny_pretrain():
    from famix_core.pretrain import PretrainConfig

    return PretrainConfig(corpus=TINY_CORPUS, steps=3, batch_size=8, warmup=1, log_every=1)


def test_pretraining_is_deterministic(tmp_path, one_torch_thread):
    from safetensors.torch import load_file

    from famix_core.models.clip import create_clip
    from famix_core.pretrain import WEIGHTS_FILE, pretrain_clip

    cfg = _tiny_pretrain()
    m1, s1 = pretrain_clip(cfg, tmp_path / "a", evaluate=False)
    m2, _ = pretrain_clip(cfg, tmp_path / "b", evaluate=False)
    sd1, sd2 = m1.state_dict(), m2.state_dict()
    assert all(torch.equal(sd1[k], sd2[k]) for k in sd1)
    f1, f2 = load_file(str(tmp_path / "a" / WEIGHTS_FILE)), load_file(str(tmp_path / "b" / WEIGHTS_FILE))
    assert f1.keys() == f2.keys() and all(torch.equal(f1[k], f2[k]) for k in f1)
    assert f1["visual.conv1.weight"].dtype == torch.float16
    torch.manual_seed(0)
    init = create_clip("famix-tiny", "none").state_dict()
    assert not torch.equal(init["visual.layer1.0.conv1.weight"], sd1["visual.layer1.0.conv1.weight"])  # it trained
    assert np.isfinite(s1["loss"]["last"])
    m3, _ = pretrain_clip(cfg.model_copy(update={"seed": 1}), None, evaluate=False)
    assert not torch.equal(m3.state_dict()["visual.conv1.weight"], sd1["visual.conv1.weight"])


def test_an_interrupted_pretraining_resumes_to_the_same_weights(tmp_path, one_torch_thread):
    """`famix pretrain-clip` trains for minutes: a stop (Ctrl-C) checkpoints the steps done, and the
    same call resumes from them to the weights of a run never stopped, bit for bit."""
    import threading

    from famix_core.errors import TrainingInterrupted
    from famix_core.pretrain import CHECKPOINT_DIR, SUMMARY_FILE, WEIGHTS_FILE, pretrain_clip

    cfg = _tiny_pretrain().model_copy(update={"steps": 6})
    pretrain_clip(cfg, tmp_path / "whole", evaluate=False)

    stop, lines = threading.Event(), []

    def log(line: str) -> None:
        lines.append(line)
        if line.startswith("step 3/6"):
            stop.set()  # as the CLI's Ctrl-C handler does, in the middle of the run

    out = tmp_path / "stopped"
    with pytest.raises(TrainingInterrupted):
        pretrain_clip(cfg, out, log=log, evaluate=False, stop=stop)
    assert (out / CHECKPOINT_DIR).is_dir() and not (out / WEIGHTS_FILE).exists()
    assert any("stopped at step 3/6; checkpoint" in x for x in lines), lines

    lines.clear()
    _, summary = pretrain_clip(cfg, out, log=lines.append, evaluate=False)
    assert any(x.startswith("resuming from step 3/6") for x in lines), lines
    assert not any(x.startswith(("step 1/", "step 3/")) for x in lines)  # the steps done are not trained again
    assert (out / WEIGHTS_FILE).read_bytes() == (tmp_path / "whole" / WEIGHTS_FILE).read_bytes()
    whole = __import__("json").loads((tmp_path / "whole" / SUMMARY_FILE).read_text())
    assert summary["loss"] == whole["loss"] and summary["resumed_at_step"] == 3
    assert summary["seconds"]["total"] >= summary["seconds"]["train"] > 0  # both runs' seconds
    assert not (out / CHECKPOINT_DIR).exists()  # the weights are written: nothing left to resume


def test_a_checkpoint_of_another_pretraining_config_is_not_resumed_nor_deleted(tmp_path, one_torch_thread, monkeypatch):
    """A pretraining of another config into the folder of a stopped one deleted that one's checkpoint
    (`removed; training starts over`), where `famix train` refuses another training's: it is refused
    now, before the corpus renders, and the checkpoint stays to be resumed by its own config."""
    import threading

    import famix_core.pretrain
    from famix_core.errors import TrainingInterrupted, WeightsError
    from famix_core.pretrain import CHECKPOINT_DIR, WEIGHTS_FILE, pretrain_clip

    cfg = _tiny_pretrain()
    stop = threading.Event()
    out = tmp_path / "o"
    with pytest.raises(TrainingInterrupted):  # stopped after step 1
        pretrain_clip(cfg, out, log=lambda line: line.startswith("step 1/") and stop.set(), evaluate=False, stop=stop)
    kept = {p: p.read_bytes() for p in (out / CHECKPOINT_DIR).rglob("*") if p.is_file()}
    render = famix_core.pretrain.build_corpus
    monkeypatch.setattr(famix_core.pretrain, "build_corpus", lambda *a, **k: pytest.fail("rendered a corpus it refuses to train"))
    with pytest.raises(WeightsError) as e:
        pretrain_clip(cfg.model_copy(update={"seed": 1}), out, evaluate=False)
    assert str(e.value) == (f"{out / CHECKPOINT_DIR}: its checkpoint (step 1) is of another config (seed 0, here 1);"
                            " write elsewhere (another --out), or delete that folder to pretrain from scratch")  # fmt: skip
    assert {p: p.read_bytes() for p in (out / CHECKPOINT_DIR).rglob("*") if p.is_file()} == kept
    assert not (out / WEIGHTS_FILE).exists()
    monkeypatch.setattr(famix_core.pretrain, "build_corpus", render)
    lines: list[str] = []
    pretrain_clip(cfg, out, log=lines.append, evaluate=False)  # its own config resumes it
    assert any(x.startswith("resuming from step 1/3") for x in lines), lines


def test_a_stop_before_the_first_step_leaves_no_checkpoint(tmp_path, one_torch_thread):
    """Ctrl-C while the corpus renders (20 s of the default recipe) stops at the first step boundary with
    nothing trained: no empty checkpoint is written, and the line says the same command starts over."""
    import threading

    from famix_core.errors import TrainingInterrupted
    from famix_core.pretrain import CHECKPOINT_DIR, WEIGHTS_FILE, pretrain_clip

    stop, lines = threading.Event(), []
    stop.set()
    with pytest.raises(TrainingInterrupted) as e:
        pretrain_clip(_tiny_pretrain(), tmp_path / "o", log=lines.append, evaluate=False, stop=stop)
    assert e.value.iteration == 0 and e.value.checkpoint is None
    assert not (tmp_path / "o" / CHECKPOINT_DIR).exists() and not (tmp_path / "o" / WEIGHTS_FILE).exists()
    assert "stopped before the first step: nothing to keep; the same command starts over" in lines, lines


@pytest.mark.parametrize("how", ["SIGINT", "SIGHUP"], ids=["ctrl-c", "hangup"])
def test_ctrl_c_of_the_pretrain_command_keeps_its_steps(tmp_path, how):
    """A real SIGINT to `famix pretrain-clip`: exit 130 with a checkpoint; the same command resumes and
    writes the weights of an uninterrupted run. A hangup (a closed terminal) too: it stopped the
    command at once, losing the steps since the last checkpoint."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from famix_core.pretrain import CHECKPOINT_DIR, WEIGHTS_FILE, pretrain_clip

    args = ["corpus.scenes=3", "corpus.styles_per_scene=2", "corpus.nonsense_styles=4", "corpus.nonsense_fraction=0.5",
            "steps=40", "batch_size=8", "warmup=1", "log_every=1"]  # fmt: skip
    out = tmp_path / "o"
    cmd = [sys.executable, "-m", "orchestrator", "pretrain-clip", "--out", str(out), *args]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    def default_signals() -> None:  # not ignored, as the test runner may have them (SIGHUP under nohup)
        for sig in (signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)

    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_signals)
    err = []
    try:
        for line in proc.stderr:  # type: ignore[union-attr]
            err.append(line)
            if line.startswith("[pretrain] step 5/40"):
                proc.send_signal(getattr(signal, how))
                break
        rest = proc.communicate(timeout=120)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err_text = "".join(err) + rest
    assert proc.returncode == 130, err_text
    assert "stopping at the next step" in err_text and "the same command resumes" in err_text and "Traceback" not in err_text
    assert (out / CHECKPOINT_DIR).is_dir() and not (out / WEIGHTS_FILE).exists()

    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "[pretrain] resuming from step " in again.stderr and f"wrote {out}/{WEIGHTS_FILE}" in again.stdout
    from famix_core.cli_pretrain import load_pretrain_config

    pretrain_clip(load_pretrain_config(None, args), tmp_path / "whole", evaluate=False)
    assert (out / WEIGHTS_FILE).read_bytes() == (tmp_path / "whole" / WEIGHTS_FILE).read_bytes()


_TINY_ARGS = ["corpus.scenes=1", "corpus.styles_per_scene=2", "steps=2", "batch_size=4", "warmup=1"]
_SCORES = {"style_top1": 0.5, "style_chance": 0.05, "class_r_precision": 0.3, "class_chance": 0.1}


def test_ctrl_c_while_the_corpus_renders_says_nothing_was_kept(tmp_path, monkeypatch, capsys):
    """A Ctrl-C while the corpus renders stops at the first step with nothing trained: every line says so.
    The last one said "the same command resumes from the checkpoint", of a checkpoint never written."""
    import signal

    import famix_core.pretrain
    from famix_core.pretrain import CHECKPOINT_DIR
    from orchestrator.__main__ import main

    render = famix_core.pretrain.build_corpus

    def ctrl_c_while_rendering(cfg):
        signal.raise_signal(signal.SIGINT)  # the handler runs before this returns
        return render(cfg)

    monkeypatch.setattr(famix_core.pretrain, "build_corpus", ctrl_c_while_rendering)
    assert main(["pretrain-clip", "--out", str(tmp_path / "o"), *_TINY_ARGS]) == 130
    err = capsys.readouterr().err
    assert "[pretrain] stopping once the corpus is rendered, before any step is trained" in err, err
    assert "checkpoint" not in err and "resumes" not in err, err
    assert err.strip().splitlines()[-1] == "famix: interrupted before the first step: nothing to keep; the same command starts over"
    assert not (tmp_path / "o" / CHECKPOINT_DIR).exists()


def test_ctrl_c_during_the_final_checks_finishes_the_run_and_says_so(tmp_path, monkeypatch, capsys):
    """A Ctrl-C during the zero-shot checks, after the last step, said "stopping at the next step, with a
    checkpoint", then wrote the weights and exited 0: it now says that the training is finished and is
    written once the checks end, which it does."""
    import signal

    import famix_core.zero_shot
    from famix_core.pretrain import CHECKPOINT_DIR, SUMMARY_FILE, WEIGHTS_FILE
    from orchestrator.__main__ import main

    def ctrl_c_during_the_checks(model, backbone, cfg):
        signal.raise_signal(signal.SIGINT)
        return dict(_SCORES)

    monkeypatch.setattr(famix_core.zero_shot, "zero_shot", ctrl_c_during_the_checks)
    out = tmp_path / "o"
    assert main(["pretrain-clip", "--out", str(out), *_TINY_ARGS]) == 0
    captured = capsys.readouterr()
    assert "[pretrain] the training is finished and checkpointed: the zero-shot checks end" in captured.err, captured.err
    assert "stopping at the next step" not in captured.err and "interrupted" not in captured.err
    assert f"wrote {out}/{WEIGHTS_FILE}" in captured.out
    assert __import__("json").loads((out / SUMMARY_FILE).read_text())["zero_shot"] == _SCORES
    assert not (out / CHECKPOINT_DIR).exists()


def test_the_summary_seconds_count_the_zero_shot_checks(tmp_path, monkeypatch, capsys):
    """`wrote …: 1 s` for a 10 s command: the total stopped before the zero-shot checks. And the
    corpus's half minute of rendering is said as it starts (it was silent until it ended)."""
    import json
    import time

    import famix_core.zero_shot
    from famix_core.pretrain import SUMMARY_FILE

    def slow_checks(model, backbone, cfg):
        time.sleep(0.5)
        return dict(_SCORES)

    monkeypatch.setattr(famix_core.zero_shot, "zero_shot", slow_checks)
    from orchestrator.__main__ import main

    assert main(["pretrain-clip", "--out", str(tmp_path / "o"), *_TINY_ARGS]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("[pretrain] rendering the corpus: ") and err[1].startswith("[pretrain] corpus: "), err[:3]
    seconds = json.loads((tmp_path / "o" / SUMMARY_FILE).read_text())["seconds"]
    assert seconds["zero_shot"] >= 0.5 and seconds["total"] >= seconds["corpus"] + seconds["train"] + 0.5 - 0.2, seconds


def test_a_second_ctrl_c_during_the_final_checks_keeps_the_finished_training(tmp_path, monkeypatch, capsys):
    """Ctrl-C twice during the zero-shot checks stops at once; every step is in the checkpoint (saved when
    the training ended, not a minute before), so the same command resumes at the checks."""
    import signal

    import famix_core.zero_shot
    from famix_core.pretrain import CHECKPOINT_DIR, WEIGHTS_FILE
    from orchestrator.__main__ import main

    def ctrl_c_twice(model, backbone, cfg):
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGINT)  # stop now: a KeyboardInterrupt
        raise AssertionError("not reached")

    monkeypatch.setattr(famix_core.zero_shot, "zero_shot", ctrl_c_twice)
    out = tmp_path / "o"
    assert main(["pretrain-clip", "--out", str(out), *_TINY_ARGS]) == 130
    assert (out / CHECKPOINT_DIR).is_dir() and not (out / WEIGHTS_FILE).exists()
    capsys.readouterr()
    monkeypatch.setattr(famix_core.zero_shot, "zero_shot", lambda model, backbone, cfg: dict(_SCORES))
    assert main(["pretrain-clip", "--out", str(out), *_TINY_ARGS]) == 0
    err = capsys.readouterr().err
    assert "[pretrain] resuming from step 2/2" in err and "[pretrain] step " not in err, err  # no step trained again
    assert (out / WEIGHTS_FILE).is_file() and not (out / CHECKPOINT_DIR).exists()


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640)], ids=["umask022", "umask027"])
def test_pretrained_weights_follow_the_umask(tmp_path, umask, mode):
    """``weights.safetensors`` is shared like every other artifact: its mode is the umask's, not 0600."""
    import os

    from safetensors.torch import load_file

    from famix_core.models.clip import create_clip
    from famix_core.pretrain import save_weights

    model = create_clip("famix-tiny", "none")
    old = os.umask(umask)
    try:
        path = save_weights(model, tmp_path / "pt" / "weights.safetensors")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == mode
    saved, own = load_file(str(path)), model.state_dict()
    assert saved.keys() == own.keys() and torch.equal(saved["visual.conv1.weight"], own["visual.conv1.weight"].half())


def test_shipped_weights_load_strictly(tmp_path):
    from safetensors.torch import load_file, save_file

    from famix_core.config import ModelConfig
    from famix_core.models.clip import create_clip
    from famix_core.models.segmenter import build_segmenter

    path = packaged_path("famix-tiny", "famix-synth")
    assert path is not None and path.is_file() and path.stat().st_size < 10 * 2**20
    shipped = load_file(str(path))
    model = create_clip("famix-tiny", "famix-synth")
    own = model.state_dict()
    assert own.keys() == shipped.keys()
    assert all(torch.equal(own[k], shipped[k].to(own[k].dtype)) for k in own)
    seg = build_segmenter(ModelConfig(backbone="famix-tiny", pretrained="famix-synth", freeze="paper"))
    assert torch.equal(seg.backbone.layer1[0].conv1.weight, shipped["visual.layer1.0.conv1.weight"].float())
    # one key missing or an extra one: refused with the key named
    broken = dict(shipped)
    broken.pop("text_projection")
    save_file(broken, str(tmp_path / "broken.safetensors"))
    with pytest.raises(WeightsError, match="text_projection"):
        create_clip("famix-tiny", str(tmp_path / "broken.safetensors"))
    with pytest.raises(WeightsError, match="famix-synth"):
        create_clip("famix-tiny", "famix-synt")


def test_shipped_weights_zero_shot():
    """Held-out rendered images: style prompts rank the right style first, class prompts find their patches."""
    from famix_core.models.clip import create_clip
    from famix_core.zero_shot import zero_shot

    torch.set_num_threads(max(1, torch.get_num_threads()))
    z = zero_shot(create_clip("famix-tiny", "famix-synth"), "famix-tiny", CorpusConfig())
    print(z)
    assert z["style_images"] >= 200 and z["class_patches"] >= 150
    assert z["style_top1"] >= 3 * z["style_chance"], z
    assert z["class_r_precision"] >= 1.5 * z["class_chance"], z


def test_pretrained_identity_is_name_and_content_hash(tmp_path, monkeypatch):
    import hashlib

    import famix_core.weights as weights
    from orchestrator.keys import mine_inputs, stage_key, train_inputs

    path = packaged_path("famix-tiny", "famix-synth")
    ident = weights_identity("famix-tiny", "famix-synth")
    assert ident == "famix-synth@sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    assert str(path.parent) not in ident
    assert weights_identity("famix-tiny", "none") == "none" and weights_identity("RN50", "openai") == "openai"
    cfg = FamixConfig.model_validate({"model": {"backbone": "famix-tiny", "pretrained": "famix-synth"}})
    keys = stage_key(mine_inputs(cfg)), stage_key(train_inputs(cfg, None))
    # the same bytes installed elsewhere: same keys; other bytes: other keys
    copy = tmp_path / "elsewhere" / "famix-tiny-synth.safetensors"
    copy.parent.mkdir()
    shutil.copy(path, copy)
    monkeypatch.setattr(weights, "packaged_path", lambda b, n: copy if n == "famix-synth" else None)
    assert (stage_key(mine_inputs(cfg)), stage_key(train_inputs(cfg, None))) == keys
    with copy.open("r+b") as f:
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 1]))
    assert stage_key(mine_inputs(cfg)) != keys[0] and stage_key(train_inputs(cfg, None)) != keys[1]


def test_smoke_profile_defaults_to_famix_synth_and_none_stays(tmp_path):
    from orchestrator import checks
    from orchestrator.sweep import BUILTIN_PROFILES

    assert BUILTIN_PROFILES["smoke"]["base"]["model"]["pretrained"] == "famix-synth"
    checks.check_weights(FamixConfig.model_validate({"model": {"backbone": "famix-tiny", "pretrained": "famix-synth"}}))
    checks.check_weights(FamixConfig.model_validate({"model": {"backbone": "famix-tiny", "pretrained": "none"}}))
    with pytest.raises(WeightsError, match="not for backbone RN50"):
        checks.check_weights(FamixConfig.model_validate({"model": {"backbone": "RN50", "pretrained": "famix-synth"}}))


def test_pretrain_cli_bad_input_is_one_line(capsys, tmp_path):
    from orchestrator.__main__ import main

    assert main(["pretrain-clip", "--out", str(tmp_path / "o"), "steps=0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "steps" in err[0] and "greater than or equal to 1" in err[0]
    assert main(["pretrain-clip", "--out", str(tmp_path / "o"), "corpus.scenez=3"]) == 2
    assert "corpus.scenez: unknown key" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_pretrain_cli_refuses_a_patch_range_whose_min_exceeds_its_max(capsys, tmp_path):
    """patch_min > patch_max passed each field's bounds, then failed in numpy's sampler (``low >= high``)
    after the corpus rendered: it is one line naming both keys, before any work."""
    from orchestrator.__main__ import main

    args = ["pretrain-clip", "--out", str(tmp_path / "o"), "patch_min=0.6", "patch_max=0.3", "steps=1", "corpus.scenes=1"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "patch_max" in err[0] and "patch_min" in err[0] and "0.6" in err[0], err
    assert not (tmp_path / "o").exists()
    from famix_core.pretrain import PretrainConfig

    assert PretrainConfig(patch_min=0.4, patch_max=0.4).patch_max == 0.4  # one patch size is a range too


def test_pretrain_cli_refuses_an_unknown_backbone_before_any_work(capsys, tmp_path, monkeypatch):
    """``backbone`` was a plain string checked by create_clip after the whole corpus rendered, under the
    name ``model.backbone`` (not a key of this command): it is checked with the config, named as typed."""
    import famix_core.pretrain
    from orchestrator.__main__ import main

    def no_work(*args, **kwargs):
        raise AssertionError("the corpus was rendered for a config that does not validate")

    monkeypatch.setattr(famix_core.pretrain, "build_corpus", no_work)
    assert main(["pretrain-clip", "--out", str(tmp_path / "o"), "backbone=nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and ": backbone: unknown backbone 'nope' (known: RN50, RN101, famix-tiny)" in err[0], err
    assert "model.backbone" not in err[0] and not (tmp_path / "o").exists()


def test_short_context_text_features_equal_the_full_context():
    from famix_core.models.clip import create_clip, get_tokenizer
    from famix_core.pretrain import encode_text_short

    torch.manual_seed(0)
    model = create_clip("famix-tiny", "none")
    tok = get_tokenizer("famix-tiny")
    captions = ["a photo of a street with road, building and sky, at night.", "a photo of a dromorlo style road."]
    full = model.encode_text(tok(captions))
    short = encode_text_short(model, tok(captions, context_length=32))
    assert short.shape == full.shape == (2, 64)
    assert torch.allclose(short, full, atol=1e-6), (short - full).abs().max()
    assert not torch.allclose(full[0], full[1])


def test_cli_makes_idle_openmp_threads_sleep(monkeypatch, capsys):
    import os

    from orchestrator.__main__ import main

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert main([]) == 2
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # a user's choice stays
    main([])
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
