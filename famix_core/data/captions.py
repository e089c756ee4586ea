"""A synthetic image-text corpus: the benchmark's street scenes in many appearance styles, with captions.

Scenes come from the same generator as the benchmark (:func:`famix_core.data.synth.scene.make_scene`)
but from scene ids at or above :attr:`CorpusConfig.first_scene_id` (one million), which the
benchmark never uses (its ids run from 0 to ``train_images + val_images``); :func:`check_disjoint`
says so for a benchmark config. Each scene is rendered in ``styles_per_scene`` appearances drawn
from a large style space (:func:`draw_style`): random palettes, textures, saturation, colour
casts, brightness, contrast, blur, vignettes, grain, the four weather/light effects, sepia,
grey, posterized and hue-rotated looks. The space covers the eight target domains' looks
without singling them out: every image draws its own parameters.

Captions are made from what the renderer knows: the classes present (by area) and words for
the style. A style is either *named* (one or two entries of :data:`NAMED_STYLES`, e.g. "at
night", "sepia", "watercolor", each a set of parameter overrides on top of the random draw) or a
*nonsense name* ("vorbelk style") bound to a random parameter set of its own, fixed per corpus
seed, like the random-character prompts of style mining. With ``paper_styles`` > 0, a share of
the images is styled by one of the paper's 20 mining style names ("Ethereal Mist style", the
random-style prompts of :mod:`famix_core.prompts`), each bound to the named looks its words mean
(:data:`PAPER_STYLE_LOOKS`), as a CLIP trained on the web knows what those words look like.

Everything is deterministic in ``CorpusConfig.seed``. No torch here (numpy + PIL).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFilter
from pydantic import BaseModel, ConfigDict, Field, field_validator

from famix_core.classes import CLASS_NAMES, IGNORE_INDEX
from famix_core.config import Seed, no_boolean_for_a_number
from famix_core.data.synth.appearance import DomainStyle, render_style
from famix_core.data.synth.scene import make_scene
from famix_core.errors import DataError

__all__ = [
    "CorpusConfig",
    "NAMED_STYLES",
    "PAPER_STYLE_LOOKS",
    "StyleDraw",
    "Corpus",
    "draw_style",
    "draw_named",
    "nonsense_names",
    "bind_nonsense",
    "render_corpus_image",
    "build_corpus",
    "check_disjoint",
    "classes_by_area",
    "scene_caption",
    "patch_caption",
    "CORPUS_FILE",
    "check_corpus_dir",
    "write_corpus",
]

CORPUS_FILE = "corpus.json"
"""The corpus's config, written last: a folder holding it holds a corpus that a new one may replace."""


class CorpusConfig(BaseModel):
    """Size and seed of the caption corpus (scene ids never overlap the benchmark's)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    _no_boolean_for_a_number = field_validator("*", mode="before")(no_boolean_for_a_number)

    seed: Seed = Field(0, description="style, caption and nonsense-name randomness")
    scene_seed: Seed = Field(0, description="seed of the scene generator (the benchmark's default is 0)")
    first_scene_id: int = Field(1_000_000, ge=1_000_000, description="first scene id; the benchmark uses 0.. its size")
    scenes: int = Field(1200, ge=1, description="distinct scene geometries")
    styles_per_scene: int = Field(4, ge=1, description="appearances rendered per scene")
    height: int = Field(64, ge=32)
    width: int = Field(128, ge=32)
    nonsense_styles: int = Field(32, ge=0, description="nonsense style names, each bound to random style parameters")
    nonsense_fraction: float = Field(0.3, ge=0.0, le=1.0, description="share of images styled by a nonsense name")
    paper_styles: float = Field(
        0.0, ge=0.0, le=1.0, description="share of images styled by one of the paper's 20 mining style names (PAPER_STYLE_LOOKS)"
    )

    def scene_ids(self) -> range:
        return range(self.first_scene_id, self.first_scene_id + self.scenes)


@dataclass(frozen=True)
class _Named:
    """A style with words: caption phrases (the first is canonical) and parameter overrides."""

    words: tuple[str, ...]
    style: dict[str, Any] = field(default_factory=dict)  # DomainStyle field overrides
    post: dict[str, Any] = field(default_factory=dict)  # post-processing (see _post)
    group: str = ""  # at most one style per group in an image (one effect, one colour cast, ...)


NAMED_STYLES: dict[str, _Named] = {
    "night": _Named(("at night", "night-time", "nocturnal"), {"effect": "night"}, group="effect"),
    "fog": _Named(("in thick fog", "foggy", "misty"), {"effect": "fog"}, group="effect"),
    "snow": _Named(("snowy", "in the snow", "wintry"), {"effect": "snow"}, group="effect"),
    "rain": _Named(("rainy", "in the rain", "wet"), {"effect": "rain"}, group="effect"),
    "sepia": _Named(("sepia", "sepia toned"), post={"sepia": 1.0}, group="colour"),
    "gray": _Named(("black and white", "monochrome", "grayscale"), {"saturation": 0.0}, group="colour"),
    "neon": _Named(("neon", "neon lit"), {"saturation": 2.2, "brightness": 0.75, "contrast": 1.4}, {"hue": 0.5}, "colour"),
    "watercolor": _Named(("watercolor", "painted"), {"texture": 0.15, "contrast": 0.8}, {"posterize": 6, "soften": 1.2}, "render"),
    "cartoon": _Named(("cartoon", "comic"), {"texture": 0.0, "saturation": 1.5}, {"posterize": 4}, "render"),
    "pastel": _Named(("pastel", "soft pastel"), {"saturation": 0.5, "brightness": 1.25, "contrast": 0.6}, group="tone"),
    "contrast": _Named(("high contrast", "contrasty"), {"contrast": 1.8}, group="tone"),
    "faded": _Named(("faded", "washed out"), {"contrast": 0.45}, group="tone"),
    "dark": _Named(("dark", "dim", "underexposed"), {"brightness": 0.45}, group="light"),
    "bright": _Named(("overexposed", "bright"), {"brightness": 1.6}, group="light"),
    "blurry": _Named(("blurry", "out of focus"), {"blur": 1.6}, group="sharp"),
    "grainy": _Named(("grainy", "noisy"), post={"grain": 0.12}, group="sharp"),
    "blue": _Named(("blue tinted", "bluish", "cold"), {"gain": (0.7, 0.85, 1.35)}, group="cast"),
    "red": _Named(("red tinted", "reddish"), {"gain": (1.4, 0.8, 0.75)}, group="cast"),
    "green": _Named(("green tinted", "greenish"), {"gain": (0.8, 1.3, 0.8)}, group="cast"),
    "golden": _Named(("golden", "warm", "sunset"), {"gain": (1.3, 1.05, 0.6)}, group="cast"),
    "vivid": _Named(("vivid", "saturated", "colorful"), {"saturation": 2.0}, group="sat"),
    "vignette": _Named(("vignetted", "dark corners"), {"vignette": 0.9}, group="frame"),
}
"""Named styles: key -> words and parameter overrides. The zero-shot check uses each first word."""

PAPER_STYLE_LOOKS: dict[str, tuple[str, ...]] = {
    "Ethereal Mist": ("fog", "pastel", "blurry"),
    "Cyberpunk Cityscape": ("night", "neon", "contrast"),
    "Rustic Charm": ("golden", "faded", "grainy"),
    "Galactic Fantasy": ("night", "blue", "vivid"),
    "Pastel Dreams": ("pastel", "blurry", "bright"),
    "Dystopian Noir": ("gray", "dark", "contrast", "vignette"),
    "Whimsical Wonderland": ("cartoon", "vivid", "bright"),
    "Urban Grit": ("grainy", "faded", "dark"),
    "Enchanted Forest": ("green", "dark", "vignette"),
    "Retro Futurism": ("neon", "cartoon", "golden"),
    "Monochrome Elegance": ("gray", "contrast"),
    "Vibrant Graffiti": ("cartoon", "vivid", "red", "contrast"),
    "Haunting Shadows": ("dark", "blue", "vignette"),
    "Steampunk Adventures": ("sepia", "grainy", "vignette"),
    "Watercolor Serenity": ("watercolor", "pastel"),
    "Industrial Chic": ("faded", "blue", "grainy"),
    "Cosmic Voyage": ("night", "neon", "vignette"),
    "Pop Art Popularity": ("cartoon", "vivid", "red"),
    "Abstract Symphony": ("watercolor", "vivid", "contrast"),
    "Magical Realism": ("golden", "pastel", "blurry"),
}
"""The paper's 20 mining style names (``famix_core.prompts.STYLE_NAMES``, same order) -> the named
looks (keys of :data:`NAMED_STYLES`, one per group) their words mean; captioned ``"<name> style"``."""

_SYLLABLES = ("ba", "ko", "ri", "zu", "vel", "mor", "tan", "qui", "sha", "dro", "pel", "nix", "gar", "lo", "fey", "wum")


@dataclass(frozen=True)
class StyleDraw:
    """One image's appearance: renderer parameters, post-processing and the words that describe it.

    Attributes:
        style: the renderer's parameters.
        post: post-processing (``sepia``, ``hue``, ``posterize``, ``soften``, ``grain``).
        words: caption phrases, one per named style or one nonsense name (``"vorbelk style"``).
        named: keys of :data:`NAMED_STYLES` used (empty for a nonsense name).
    """

    style: DomainStyle
    post: dict[str, Any]
    words: tuple[str, ...]
    named: tuple[str, ...]


def nonsense_names(n: int, seed: int) -> list[str]:
    """``n`` distinct made-up style names (two or three syllables), fixed by ``seed``."""
    rng = np.random.default_rng([seed, 0x5E11])
    out: list[str] = []
    while len(out) < n:
        name = "".join(rng.choice(_SYLLABLES, size=int(rng.integers(2, 4))))
        if name not in out:
            out.append(name)
    return out


def _base(rng: np.random.Generator) -> tuple[dict[str, Any], dict[str, Any]]:
    """A random draw of every renderer parameter (no words describe these)."""
    style = dict(
        palette_jitter=float(rng.uniform(0.04, 0.22)),
        saturation=float(rng.uniform(0.65, 1.35)),
        gain=tuple(float(g) for g in 1.0 + rng.normal(0, 0.06, 3)),
        brightness=float(rng.uniform(0.8, 1.2)),
        contrast=float(rng.uniform(0.8, 1.2)),
        texture=float(rng.uniform(0.3, 1.4)),
        window=(int(rng.integers(4, 10)), int(rng.integers(4, 10))),
        exposure=float(rng.uniform(0.0, 0.15)),
        blur=float(rng.choice([0.0, rng.uniform(0.0, 0.7)])),
        vignette=float(rng.uniform(0.0, 0.3)),
        effect=None,
        palette_seed=int(rng.integers(1000, 10**6)),  # the benchmark's domains use seeds 1-6
    )
    return style, {}


def _pick_named(rng: np.random.Generator, k: int) -> list[str]:
    """``k`` named styles from distinct groups."""
    keys = list(NAMED_STYLES)
    order = rng.permutation(len(keys))
    out: list[str] = []
    for i in order:
        if NAMED_STYLES[keys[i]].group not in {NAMED_STYLES[o].group for o in out}:
            out.append(keys[i])
        if len(out) == k:
            break
    return out


def _apply(style: dict[str, Any], post: dict[str, Any], names: list[str]) -> None:
    for name in names:
        style.update(NAMED_STYLES[name].style)
        post.update(NAMED_STYLES[name].post)


def draw_named(rng: np.random.Generator, names: list[str]) -> StyleDraw:
    """A random base draw with the given named styles applied, described by their first words."""
    style, post = _base(rng)
    _apply(style, post, names)
    return StyleDraw(DomainStyle(**style), post, tuple(NAMED_STYLES[n].words[0] for n in names), tuple(names))


def draw_style(rng: np.random.Generator, cfg: CorpusConfig, bound: list[tuple[dict, dict]] | None = None) -> StyleDraw:
    """Draw one image's style: a paper style name, a nonsense name (its bound parameters) or one or two named styles.

    Args:
        rng: the image's style randomness.
        cfg: corpus settings (nonsense share).
        bound: the nonsense names' bound (style, post) parameters, from :func:`bind_nonsense`.
    """
    if cfg.paper_styles > 0 and rng.random() < cfg.paper_styles:  # no draw at 0: older corpora stay
        name = list(PAPER_STYLE_LOOKS)[int(rng.integers(len(PAPER_STYLE_LOOKS)))]
        return replace(draw_named(rng, list(PAPER_STYLE_LOOKS[name])), words=(f"{name} style",))
    if bound and rng.random() < cfg.nonsense_fraction:
        i = int(rng.integers(len(bound)))
        names = nonsense_names(cfg.nonsense_styles, cfg.seed)
        style, post = dict(bound[i][0]), dict(bound[i][1])
        style["palette_seed"] = int(style["palette_seed"])
        return StyleDraw(DomainStyle(**style), post, (f"{names[i]} style",), ())
    style, post = _base(rng)
    named = _pick_named(rng, 1 if rng.random() < 0.6 else 2)
    _apply(style, post, named)
    words = tuple(NAMED_STYLES[n].words[int(rng.integers(len(NAMED_STYLES[n].words)))] for n in named)
    return StyleDraw(DomainStyle(**style), post, words, tuple(named))


def bind_nonsense(cfg: CorpusConfig) -> list[tuple[dict, dict]]:
    """Each nonsense name's parameters: a random draw plus one to three random named overrides."""
    rng = np.random.default_rng([cfg.seed, 0xB1D])
    out = []
    for _ in range(cfg.nonsense_styles):
        style, post = _base(rng)
        _apply(style, post, _pick_named(rng, int(rng.integers(1, 4))))
        out.append((style, post))
    return out


def _post(img: np.ndarray, post: dict[str, Any], rng: np.random.Generator) -> np.ndarray:
    """Post-processing of a rendered (H, W, 3) uint8 image: sepia, hue rotation, posterize, soften, grain."""
    x = img.astype(np.float32) / 255.0
    if post.get("sepia"):
        m = np.array([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]], np.float32)
        x = (1 - post["sepia"]) * x + post["sepia"] * np.clip(x @ m.T, 0, 1)
    if post.get("hue"):
        x = np.roll(x, 1, axis=2) * 0.7 + x[..., ::-1] * 0.3  # channel rotation: unnatural hues
    if post.get("posterize"):
        n = float(post["posterize"])
        x = np.round(x * (n - 1)) / (n - 1)
    out = Image.fromarray((np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8))
    if post.get("soften"):
        out = out.filter(ImageFilter.GaussianBlur(post["soften"]))
    x = np.asarray(out).astype(np.float32) / 255.0
    if post.get("grain"):
        x = x + post["grain"] * rng.standard_normal(x.shape).astype(np.float32)
    return (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)


def render_corpus_image(scene, draw: StyleDraw, scene_seed: int, rng: np.random.Generator) -> np.ndarray:
    """Render a scene in a drawn style, post-processing included: (H, W, 3) uint8."""
    return _post(render_style(scene, draw.style, scene_seed, rng), draw.post, rng)


@dataclass
class Corpus:
    """The rendered corpus.

    Attributes:
        images: (N, H, W, 3) uint8.
        labels: (N, H, W) uint8 train ids (255 = void).
        words: per image, its style phrases.
        named: per image, its named-style keys (empty for a nonsense name).
        scene_ids: (N,) scene id of each image.
    """

    images: np.ndarray
    labels: np.ndarray
    words: list[tuple[str, ...]]
    named: list[tuple[str, ...]]
    scene_ids: np.ndarray


def build_corpus(cfg: CorpusConfig) -> Corpus:
    """Render every (scene, style) of the corpus; deterministic in ``cfg``."""
    bound = bind_nonsense(cfg)
    n = cfg.scenes * cfg.styles_per_scene
    images = np.zeros((n, cfg.height, cfg.width, 3), np.uint8)
    labels = np.zeros((n, cfg.height, cfg.width), np.uint8)
    words: list[tuple[str, ...]] = []
    named: list[tuple[str, ...]] = []
    ids = np.zeros(n, np.int64)
    i = 0
    for k in cfg.scene_ids():
        scene = make_scene(cfg.scene_seed, k, cfg.height, cfg.width)
        for j in range(cfg.styles_per_scene):
            rng = np.random.default_rng([cfg.seed, k, j, 0xCA9])
            draw = draw_style(rng, cfg, bound)
            images[i] = render_corpus_image(scene, draw, cfg.scene_seed, rng)
            labels[i] = scene.labels
            words.append(draw.words)
            named.append(draw.named)
            ids[i] = k
            i += 1
    return Corpus(images, labels, words, named, ids)


def check_disjoint(cfg: CorpusConfig, synth: Any) -> None:
    """Raise ValueError when the corpus's scene ids overlap a benchmark's (a :class:`SynthConfig`)."""
    bench_end = synth.train_images + synth.val_images
    if cfg.scene_seed == synth.seed and cfg.first_scene_id < bench_end:
        raise ValueError(f"corpus scene ids start at {cfg.first_scene_id}, inside the benchmark's 0..{bench_end - 1}")


def classes_by_area(labels: np.ndarray, min_fraction: float = 0.03, top: int = 4) -> list[int]:
    """Train ids present in a label crop, largest first (void ignored; at least ``min_fraction`` of it)."""
    counts = np.bincount(labels.reshape(-1), minlength=256)[: len(CLASS_NAMES)]
    total = max(1, int(labels.size - (labels == IGNORE_INDEX).sum()))
    order = np.argsort(-counts, kind="stable")
    return [int(c) for c in order[:top] if counts[c] >= min_fraction * total and counts[c] > 0]


_SCENE_TEMPLATES = (
    "a photo of a street with {classes}, {style}.",
    "a {style} photo of {classes}.",
    "{style} street scene with {classes}.",
    "{classes}, {style}.",
)
_PATCH_TEMPLATES = ("a photo of a {style} {cls}.", "a {cls}, {style}.", "{style} {cls}.", "a {cls} in {style} look.")


def _join(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def scene_caption(words: tuple[str, ...], classes: list[int], rng: np.random.Generator) -> str:
    """Caption of a scene crop: the classes present and the style words (a template drawn by ``rng``)."""
    names = [CLASS_NAMES[c] for c in classes] or ["nothing"]
    t = _SCENE_TEMPLATES[int(rng.integers(len(_SCENE_TEMPLATES)))]
    return t.format(classes=_join(names), style=" ".join(words))


def patch_caption(words: tuple[str, ...], cls: int, rng: np.random.Generator) -> str:
    """Caption of a patch (a zoomed crop): its dominant class and the style words."""
    t = _PATCH_TEMPLATES[int(rng.integers(len(_PATCH_TEMPLATES)))]
    return t.format(cls=CLASS_NAMES[cls], style=" ".join(words))


def check_corpus_dir(out: str | Path, option: str | None = None) -> None:
    """Refuse a folder that holds anything but a previous corpus, before any work (as ``data synth`` does).

    Args:
        out: the corpus folder (it need not exist).
        option: the command-line option that named it, for the message.

    Raises:
        DataError: ``out`` is a file, or a folder of files without :data:`CORPUS_FILE`.
    """
    from famix_core.io import refuse_other_files

    out = Path(out)
    where = f"command line: {option}" if option else ""
    if out.exists() and out.resolve() == Path.cwd().resolve():  # replaced whole: the folder a process is in cannot be
        raise DataError(f"{where + ': ' if where else ''}{out} is the current folder, which the corpus would replace whole; name a folder in it")
    refuse_other_files(out, CORPUS_FILE, "the caption corpus needs a new or empty folder, or one of a previous corpus", where)


def write_corpus(corpus: Corpus, cfg: CorpusConfig, out: str | Path, option: str | None = None) -> Path:
    """Write the corpus as PNG images + labels and ``captions.jsonl`` (one whole-image caption each).

    Written into a temporary sibling folder, then renamed into place (:func:`famix_core.io.building_dir`):
    a failed or interrupted write leaves the folder as it was, and a previous corpus there is
    replaced whole, never mixed with this one.

    Args:
        corpus: the rendered corpus (:func:`build_corpus`).
        cfg: its config, written to :data:`CORPUS_FILE`.
        out: a new or empty folder, or one of a previous corpus (:func:`check_corpus_dir`).
        option: the command-line option that named ``out``, for the message.

    Returns:
        the folder.

    Raises:
        DataError: ``out`` holds other files.
    """
    from famix_core.io import CommitFailed, atomic_write_json, atomic_write_text, building_dir

    out = Path(out)
    check_corpus_dir(out, option)
    try:
        with building_dir(out) as tmp:  # an empty folder or a previous corpus is replaced whole
            (tmp / "images").mkdir()
            (tmp / "labels").mkdir()
            lines = []
            for i in range(len(corpus.images)):
                name = f"{int(corpus.scene_ids[i])}_{i % cfg.styles_per_scene}"
                Image.fromarray(corpus.images[i]).save(tmp / "images" / f"{name}.png", compress_level=1)
                Image.fromarray(corpus.labels[i], mode="L").save(tmp / "labels" / f"{name}.png", compress_level=1)
                rng = np.random.default_rng([cfg.seed, i, 0x7E47])
                caption = scene_caption(corpus.words[i], classes_by_area(corpus.labels[i]), rng)
                lines.append(json.dumps({"image": f"images/{name}.png", "caption": caption, "style": list(corpus.words[i])}))
            atomic_write_text(tmp / "captions.jsonl", "\n".join(lines) + "\n")
            atomic_write_json(tmp / CORPUS_FILE, cfg.model_dump(mode="json"))
    except CommitFailed as e:
        raise DataError(f"{out}: could not move the written corpus into place ({e.strerror})") from None
    return out
