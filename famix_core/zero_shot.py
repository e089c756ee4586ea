"""Zero-shot checks of a CLIP pretrained on the caption corpus, on held-out rendered images.

* **Style**: held-out scenes (ids the corpus never used) rendered once per named style of
  :data:`famix_core.data.captions.NAMED_STYLES` (alone, on a random base draw); the image is
  classified among the prompts ``"a <style word> photo of a street."``; top-1 accuracy vs
  chance ``1 / number of styles``.
* **Class retrieval**: held-out images in random corpus styles, split into a 3x3 grid of
  patches (like style mining's), each zoomed to the CLIP input and labelled with its dominant
  class; for each class prompt ``"a photo of a <class>."`` the patches are ranked by cosine
  similarity and the precision of the top R (R = the class's patch count, "R-precision") is
  compared with the class's share of patches (what a random ranking gets).
"""

from __future__ import annotations

import numpy as np
import torch

from famix_core.classes import CLASS_NAMES
from famix_core.data.captions import (
    NAMED_STYLES,
    CorpusConfig,
    classes_by_area,
    draw_named,
    draw_style,
    render_corpus_image,
    bind_nonsense,
)
from famix_core.data.synth.scene import make_scene

__all__ = ["zero_shot", "HELD_OUT_OFFSET"]

HELD_OUT_OFFSET = 5_000_000
"""Held-out scene ids start this far above the corpus's first id (a corpus is far smaller)."""


@torch.no_grad()
def _encode(model, backbone: str, images: np.ndarray, boxes: np.ndarray, texts: list[str]):
    from famix_core.models.clip import get_tokenizer
    from famix_core.pretrain import crop_resize

    size = model.visual.image_size
    size = int(size if isinstance(size, int) else size[0])
    x = crop_resize(torch.from_numpy(images), torch.from_numpy(boxes.astype(np.float32)), size)
    img = torch.nn.functional.normalize(model.encode_image(x), dim=-1)  # (N, D)
    txt = torch.nn.functional.normalize(model.encode_text(get_tokenizer(backbone)(texts)), dim=-1)  # (T, D)
    return img, txt


def style_accuracy(model, backbone: str, cfg: CorpusConfig, scenes: int = 10) -> dict[str, float]:
    """Top-1 accuracy of the style prompts on held-out images, and chance."""
    keys = list(NAMED_STYLES)
    first = cfg.first_scene_id + HELD_OUT_OFFSET
    images, truth = [], []
    for k in range(first, first + scenes):
        scene = make_scene(cfg.scene_seed, k, cfg.height, cfg.width)
        for j, key in enumerate(keys):
            rng = np.random.default_rng([cfg.seed, k, j, 0x2E40])
            images.append(render_corpus_image(scene, draw_named(rng, [key]), cfg.scene_seed, rng))
            truth.append(j)
    h, w = cfg.height, cfg.width
    side = min(h, w)
    box = np.array([(w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2])
    prompts = [f"a {NAMED_STYLES[key].words[0]} photo of a street." for key in keys]
    img, txt = _encode(model, backbone, np.stack(images), np.tile(box, (len(images), 1)), prompts)
    pred = (img @ txt.T).argmax(dim=1).numpy()
    acc = float((pred == np.asarray(truth)).mean())
    return {"style_top1": round(acc, 4), "style_chance": round(1 / len(keys), 4), "style_images": len(images)}


def class_retrieval(model, backbone: str, cfg: CorpusConfig, scenes: int = 24, grid: int = 3) -> dict[str, float]:
    """Mean R-precision of class-name prompts over held-out patches, and the mean chance."""
    first = cfg.first_scene_id + HELD_OUT_OFFSET + 1000
    bound = bind_nonsense(cfg)
    h, w = cfg.height, cfg.width
    side = min(h, w)
    images, boxes, cls = [], [], []
    for k in range(first, first + scenes):
        scene = make_scene(cfg.scene_seed, k, h, w)
        rng = np.random.default_rng([cfg.seed, k, 0x2E41])
        image = render_corpus_image(scene, draw_style(rng, cfg, bound), cfg.scene_seed, rng)
        x_off = int(rng.integers(0, w - side + 1))
        edges = np.linspace(0, side, grid + 1).round().astype(int)
        for gy in range(grid):
            for gx in range(grid):
                y0, y1, x0, x1 = edges[gy], edges[gy + 1], x_off + edges[gx], x_off + edges[gx + 1]
                top = classes_by_area(scene.labels[y0:y1, x0:x1], min_fraction=0.0, top=1)
                if top:
                    images.append(image)
                    boxes.append((x0, y0, x1, y1))
                    cls.append(top[0])
    present = sorted(set(cls))
    prompts = [f"a photo of a {CLASS_NAMES[c]}." for c in present]
    img, txt = _encode(model, backbone, np.stack(images), np.asarray(boxes), prompts)
    sim = (img @ txt.T).numpy()  # (N patches, C present)
    truth = np.asarray(cls)
    precision, chance = [], []
    for j, c in enumerate(present):
        r = int((truth == c).sum())
        if r < 2:
            continue
        top = np.argsort(-sim[:, j], kind="stable")[:r]
        precision.append(float((truth[top] == c).mean()))
        chance.append(r / len(truth))
    top1 = float((np.asarray(present)[sim.argmax(1)] == truth).mean())
    majority = float(np.bincount(truth).max() / len(truth))
    return {
        "class_r_precision": round(float(np.mean(precision)), 4),
        "class_chance": round(float(np.mean(chance)), 4),
        "class_top1": round(top1, 4),
        "class_majority": round(majority, 4),
        "class_patches": len(truth),
        "classes": len(precision),
    }


def zero_shot(model, backbone: str, cfg: CorpusConfig) -> dict[str, float]:
    """Both checks (``model`` in eval mode; a few seconds on CPU)."""
    model.eval()
    return style_accuracy(model, backbone, cfg) | class_retrieval(model, backbone, cfg)
