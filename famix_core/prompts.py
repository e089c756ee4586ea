"""Prompts for style mining and their CLIP text targets.

A prompt type (``famix_core.config.PROMPT_TYPES``) turns a patch's dominant class
into a text prompt (METHOD.md "Style mining"): the class name, random characters,
a random style of the paper's 20, or a combination. Patches dominated by the
ignore label always get ``"photo"``. Random choices come from a
``random.Random`` instance the caller seeds, never the global RNG.

A text target is CLIP's text embedding of the prompt expanded with the 80
ImageNet templates: the raw (unnormalized) template embeddings are averaged,
then the mean is L2-normalized, as the official ``patch_PIN.py`` does
(``encode_text(tokens).mean(0)`` then ``/ norm``). CLIP's zero-shot classifier
normalizes each template first; FAMix does not.
"""

from __future__ import annotations

import random
import string
from typing import Callable, Sequence

import torch
from torch import nn

from famix_core.classes import CLASS_NAMES, IGNORE_INDEX
from famix_core.errors import FamixError

__all__ = [
    "STYLE_NAMES",
    "IGNORE_PROMPT",
    "N_CHARS",
    "PROMPT_REGISTRY",
    "build_prompt",
    "imagenet_templates",
    "TextTargets",
]

STYLE_NAMES: tuple[str, ...] = (
    "Ethereal Mist",
    "Cyberpunk Cityscape",
    "Rustic Charm",
    "Galactic Fantasy",
    "Pastel Dreams",
    "Dystopian Noir",
    "Whimsical Wonderland",
    "Urban Grit",
    "Enchanted Forest",
    "Retro Futurism",
    "Monochrome Elegance",
    "Vibrant Graffiti",
    "Haunting Shadows",
    "Steampunk Adventures",
    "Watercolor Serenity",
    "Industrial Chic",
    "Cosmic Voyage",
    "Pop Art Popularity",
    "Abstract Symphony",
    "Magical Realism",
)
"""The paper's 20 random styles (each used as ``"<style> style"``)."""

IGNORE_PROMPT = "photo"
"""Prompt of patches dominated by the ignore label, whatever the prompt type."""

N_CHARS = 9
"""Length of the random lowercase string of the ``chars`` prompt types."""


def _chars(rng: random.Random) -> str:
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(N_CHARS))


def _prompt_class(name: str, rng: random.Random) -> str:
    return name


def _prompt_chars(name: str, rng: random.Random) -> str:
    return f"{_chars(rng)} style"


def _prompt_style(name: str, rng: random.Random) -> str:
    return f"{rng.choice(STYLE_NAMES)} style"


def _prompt_chars_class(name: str, rng: random.Random) -> str:
    return f"{_chars(rng)} style {name}"


def _prompt_style_class(name: str, rng: random.Random) -> str:
    return f"{rng.choice(STYLE_NAMES)} style {name}"


PROMPT_REGISTRY: dict[str, Callable[[str, random.Random], str]] = {
    "class": _prompt_class,
    "chars": _prompt_chars,
    "style": _prompt_style,
    "chars_class": _prompt_chars_class,
    "style_class": _prompt_style_class,
}
"""Prompt type -> ``(class name, rng) -> prompt``; holds exactly ``famix_core.config.PROMPT_TYPES``."""


def build_prompt(
    prompt_type: str,
    class_id: int,
    rng: random.Random,
    class_names: Sequence[str] = CLASS_NAMES,
    ignore_index: int = IGNORE_INDEX,
) -> str:
    """The mining prompt of one patch.

    Args:
        prompt_type: a name of :data:`PROMPT_REGISTRY`.
        class_id: the patch's dominant class (train id) or ``ignore_index``.
        rng: the caller's seeded ``random.Random`` (consumed only by random types).
        class_names: names of the train ids.
        ignore_index: the ignore label (its patches get ``"photo"``).

    Returns:
        The prompt, e.g. ``"Galactic Fantasy style road"``.

    Raises:
        FamixError: unknown prompt type (listing the known ones) or class id.
    """
    try:
        make = PROMPT_REGISTRY[prompt_type]
    except KeyError:
        raise FamixError(
            f"mining.prompt: unknown prompt type {prompt_type!r} (known: {', '.join(PROMPT_REGISTRY)})"
        ) from None
    if class_id == ignore_index:
        return IGNORE_PROMPT
    if not 0 <= class_id < len(class_names):
        raise FamixError(f"class id {class_id} has no name (known ids: 0..{len(class_names) - 1}, {ignore_index})")
    return make(class_names[class_id], rng)


def imagenet_templates() -> tuple[Callable[[str], str], ...]:
    """CLIP's 80 ImageNet prompt templates (``lambda c: f"a photo of a {c}."`` ...), from open_clip."""
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    return tuple(OPENAI_IMAGENET_TEMPLATES)


class TextTargets:
    """Template-averaged (raw embeddings), then L2-normalized CLIP text embeddings, cached per distinct prompt.

    Args:
        model: an open_clip CLIP model (``encode_text``), frozen.
        tokenizer: ``list[str] -> LongTensor (N, context_length)``.
        device: where tokens and embeddings live.
        templates: prompt templates (default: the 80 ImageNet ones).
        chunk: sequences encoded per ``encode_text`` call.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Callable[[list[str]], torch.Tensor],
        device: torch.device | str,
        templates: Sequence[Callable[[str], str]] | None = None,
        chunk: int = 1024,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.templates = tuple(templates) if templates is not None else imagenet_templates()
        self.chunk = chunk
        self._cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def _encode_new(self, prompts: list[str]) -> None:
        """Encode every prompt × template at once (in chunks) and cache the per-prompt means."""
        t = len(self.templates)
        texts = [tmpl(p) for p in prompts for tmpl in self.templates]  # prompt-major: (P*T,)
        tokens = self.tokenizer(texts).to(self.device)  # (P*T, L)
        embs = []
        for start in range(0, tokens.shape[0], self.chunk):
            embs.append(self.model.encode_text(tokens[start : start + self.chunk]).float())  # (n, D), raw
        emb = torch.cat(embs).reshape(len(prompts), t, -1).mean(dim=1)  # (P, T, D) -> (P, D): mean of raw embeddings
        emb = emb / emb.norm(dim=-1, keepdim=True)  # then normalize (official patch_PIN.py order)
        for p, e in zip(prompts, emb):
            self._cache[p] = e

    def __call__(self, prompts: Sequence[str]) -> torch.Tensor:
        """Text targets of the given prompts.

        Args:
            prompts: N prompts (repeats are encoded once).

        Returns:
            (N, D) float32, unit-norm rows, on ``device``.
        """
        new = list(dict.fromkeys(p for p in prompts if p not in self._cache))
        if new:
            self._encode_new(new)
        return torch.stack([self._cache[p] for p in prompts])

    def __len__(self) -> int:
        return len(self._cache)
