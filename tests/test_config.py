"""Config validation: defaults are the paper's constants, mistakes are one clear line."""

from __future__ import annotations

import pytest
import torch

from famix_core.config import FamixConfig, ModelConfig, StyleConfig, load_config
from famix_core.errors import ConfigError
from famix_core.domains import DEFAULT_TARGETS, resolve_domain


def test_defaults_are_the_papers_constants():
    cfg = FamixConfig()
    assert (cfg.model.backbone, cfg.model.output_stride, cfg.model.freeze) == ("RN50", 16, "paper")
    assert (cfg.style.alpha, cfg.style.grid, cfg.style.eps) == (0.1, 3, 1e-5)
    m = cfg.mining
    assert (m.steps, m.lr, m.momentum, m.weight_decay, m.batch_size, m.crop_size, m.prompt) == (
        100, 1.0, 0.9, 1e-4, 16, 768, "style_class")
    t = cfg.train
    assert (t.iterations, t.batch_size, t.lr_decoder, t.lr_backbone) == (40_000, 8, 0.1, 0.01)
    assert (t.poly_power, t.min_lr, t.label_smoothing, t.weight_decay) == (0.9, 1e-6, 0.1, 1e-4)
    assert cfg.data.jitter == (0.8, 0.8, 0.8)
    assert tuple(cfg.eval.domains) == DEFAULT_TARGETS == ("C", "B", "M", "S", "AN", "AS", "AR", "AF")


@pytest.mark.parametrize(
    ("augment", "mix", "expected"),
    [(True, True, "famix"), (True, False, "famix"), (False, True, "mixstyle"), (False, False, "none")],
)
def test_augment_mix_toggles_give_the_ablation_rows(augment, mix, expected):
    style = StyleConfig(strategy="famix", augment=augment, mix=mix)
    assert style.effective_strategy() == expected
    assert style.needs_bank() == (expected == "famix")


def test_domains_resolve_by_name_or_column():
    assert resolve_domain("C").name == "cityscapes"
    assert resolve_domain("acdc_fog").column == "AF"
    cfg = FamixConfig.model_validate({"eval": {"domains": ["cityscapes", "AN"]}})
    assert cfg.eval.domains == ["C", "AN"]


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["model.backbone=RN18"], "command line: model.backbone: unknown backbone 'RN18' (known: RN50, RN101, famix-tiny)"),
        (["model.freez=paper"], "command line: model.freez: unknown key"),
        (["style.strategy=cutmix"], "style.strategy: unknown style strategy 'cutmix'"),
        (["mining.prompt=poem"], "mining.prompt: unknown prompt type 'poem'"),
        (["eval.domains=[C,X]"], "eval.domains: unknown domain 'X'"),
        (["eval.domains=[]"], "eval.domains:"),
        (["train.iterations=0"], "train.iterations:"),
        (["model.output_stride=4"], "model.output_stride:"),
        # caught here, not as a numpy / torchvision / BatchNorm traceback in a stage
        (["data.synthetic={seed: -5}"], "data.synthetic.seed: expected a seed from 0 to 4294967295, got -5"),
        (["mining.seed=4294967296"], "mining.seed: expected a seed from 0 to 4294967295, got 4294967296"),
        (["data.jitter=[0.5,-1,0]"], "data.jitter: expected three factors >= 0"),
        (["train.batch_size=1"], "train.batch_size: expected >= 2 (the decoder's BatchNorm layers"),
        (["train.device=tpu"], "train.device: unknown device 'tpu' (expected auto, cpu, cuda or cuda:N)"),
        (["train.device=cuda:x"], "train.device: unknown device 'cuda:x'"),
        (["model.pretrained="], "model.pretrained: empty: expected none, famix-synth, openai or a path"),
        (["data.root="], "command line: data.root: expected a path, got an empty string"),  # it read the current folder
        (["data.roots.C= "], "command line: data.roots: C: expected a path, got an empty string"),
        # passed the plan, then failed every stage (an int64 overflow, a NaN loss), each retried
        (["eval.scales=[.nan]"], "command line: eval.scales.0: Input should be a finite number (got nan)"),
        (["train.lr_decoder=.inf"], "command line: train.lr_decoder: Input should be a finite number (got inf)"),
        (["style.alpha=-.inf"], "command line: style.alpha: Input should be a finite number (got -inf)"),
        (["train.iterations=true"], "command line: train.iterations: expected a number, got true (true/false, yes/no and on/off"
         " are YAML booleans)"),  # it was read as 1
        (["eval.scales=[1, no]"], "command line: eval.scales: expected a number, got [1, false]"),
        (["data.jitter=[1, 2]"], "command line: data.jitter: 2 values; expected 3"),  # was "data.jitter.2: Field required"
        (["train.val_crop=[512]"], "command line: train.val_crop: 1 value; expected 2"),
        (["style.grid=1000", "data.crop_size=128"], "command line: style.grid=1000: more patches a side than the layer-1"
         " features of data.crop_size=128 have (32, a quarter of the crop); expected at most 32"),
        (["style.grid=60", "mining.crop_size=224"], "style.grid=60: more patches a side than the layer-1 features of"
         " mining.crop_size=224 have (56, a quarter of the crop)"),
        # a slip of case or spelling: only the known values were listed
        (["model.backbone=rn50"], "model.backbone: unknown backbone 'rn50' (known: RN50, RN101, famix-tiny) (did you mean RN50?)"),
        (["style.strategy=MixStyle"], "style.strategy: unknown style strategy 'MixStyle' (known: none, famix, mixstyle, noise)"
         " (did you mean mixstyle?)"),
        (["mining.prompt=styleclass"], "(did you mean style_class?)"),
        (["data.roots.CS=/data/cs"], "acdc_fog; or a dataset folder of several: acdc) (did you mean C?)"),
        (["eval.domains=[Cityscapes]"], "eval.domains: unknown domain 'Cityscapes' (known: S, C,"),
        (["eval.domains=[Cityscapes]"], "acdc_fog) (did you mean cityscapes?)"),
        (["model.freeze=Paper"], "(did you mean paper?)"),
        # passed the plan, then every training failed at its first loss (IndexError: Target 10 is out of bounds)
        (["model.num_classes=3"], "command line: model.num_classes: 3, but every domain's labels are mapped to the 19"
         " Cityscapes train ids; expected 19"),
    ],
)
def test_bad_values_name_the_field(tmp_path, overrides, needle):
    path = tmp_path / "config.yaml"
    path.write_text("model:\n  backbone: famix-tiny\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, overrides)
    msg = str(err.value)
    assert needle in msg.replace(str(tmp_path) + "/", "")
    assert "\n" not in msg


def test_the_grid_check_counts_the_layer1_features_the_stem_gives(tmp_path):
    """A 15-pixel crop gives 4 layer-1 features a side (stride-2 convolution, then a 2x2 pool), not
    15 // 4 = 3: a grid of 4 was refused although it fits; 5 does not."""
    from famix_core.config import layer1_side
    from famix_core.models.segmenter import build_segmenter

    backbone = build_segmenter(ModelConfig(backbone="famix-tiny", pretrained="none")).eval().backbone
    for crop in (12, 13, 14, 15, 16, 19):
        x = torch.zeros(1, 3, crop, crop)
        with torch.no_grad():
            for name in ("conv1", "bn1", "act1", "conv2", "bn2", "act2", "conv3", "bn3", "act3", "avgpool", "layer1"):
                x = getattr(backbone, name)(x)
        assert x.shape[-1] == layer1_side(crop), crop
    path = tmp_path / "config.yaml"
    path.write_text("model:\n  backbone: famix-tiny\n")
    assert load_config(path, ["style.grid=4", "data.crop_size=15", "mining.crop_size=15"]).style.grid == 4
    with pytest.raises(ConfigError, match=r"data.crop_size=15 have \(4, a quarter of the crop\); expected at most 4"):
        load_config(path, ["style.grid=5", "data.crop_size=15", "mining.crop_size=64"])


def test_data_paths_expand_the_home_folder(monkeypatch):
    """`data.root=~/datasets` is not a shell word: the shell leaves its ~, which read as a folder named ~."""
    monkeypatch.setenv("HOME", "/home/r")
    cfg = load_config(None, ["data.root=~/datasets", "data.roots.C=~/cs", "data.split_file=~/stems.txt"])
    assert (cfg.data.root, cfg.data.roots, cfg.data.split_file) == ("/home/r/datasets", {"cityscapes": "/home/r/cs"}, "/home/r/stems.txt")
    assert load_config(None, ["data.split_file=~/stems.txt", "data.split_file="]).data.split_file is None  # empty: no list


def test_a_bad_file_is_named_even_with_overrides_and_a_bad_override_is_the_command_lines(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("train:\n  iterations: 0\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, ["train.lr_decoder=0.1"])
    assert str(err.value) == f"{path}: train.iterations: Input should be greater than or equal to 1 (got 0)"
    with pytest.raises(ConfigError) as err:  # the override mends the file: nothing to report
        load_config(path, ["train.iterations=-2"])
    assert str(err.value).startswith(f"{path}: train.iterations:")
    assert load_config(path, ["train.iterations=3"]).train.iterations == 3
    path.write_text("train:\n  iterations: 5\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, ["train.iterations=-2"])
    assert str(err.value) == "command line: train.iterations: Input should be greater than or equal to 1 (got -2)"


def test_yaml_syntax_error_has_line_and_column(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  backbone: [RN50\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: invalid YAML \(line \d+, column \d+\)"):
        load_config(path)


def test_python_object_tags_are_refused(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("model: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="evil.yaml: invalid YAML"):
        load_config(path)


def test_flat_params_round_trip_scalars():
    flat = FamixConfig().flat()
    assert flat["train.lr_decoder"] == 0.1
    assert flat["model.backbone"] == "RN50"
    assert flat["eval.domains"] == '["C", "B", "M", "S", "AN", "AS", "AR", "AF"]'


def test_a_sweep_file_given_as_a_config_is_named_so(tmp_path):
    """`famix evaluate --config sweeps/ablation.yaml` said `name: unknown key (+8 more)`."""
    from pathlib import Path

    sweep = Path(__file__).resolve().parents[1] / "sweeps" / "ablation.yaml"
    with pytest.raises(ConfigError) as err:
        load_config(sweep)
    assert str(err.value).startswith(f"{sweep}: a sweep file (it has name and grid") and "not a config" in str(err.value)
    assert f"famix sweep run {sweep}" in str(err.value)


def test_a_config_from_a_pipe_is_read():
    """`famix train --config <(…)`: process substitution gives a pipe, not a regular file."""
    import os

    r, w = os.pipe()
    os.write(w, b"train: {iterations: 2}\n")
    os.close(w)
    try:
        assert load_config(f"/dev/fd/{r}").train.iterations == 2
    finally:
        os.close(r)
