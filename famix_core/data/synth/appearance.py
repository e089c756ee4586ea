"""Appearance: each domain's :class:`DomainStyle` and the rendering of a scene in it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from famix_core.data.synth.scene import (
    BIKE, BUILDING, BUS, CAR, FENCE, MOTO, PERSON, RIDER, ROAD, SIDEWALK, SIGN, SKY, TERRAIN, TRUCK, VEG, VOID, WALL,
    Scene,
)  # fmt: skip

__all__ = ["DomainStyle", "STYLES", "render", "render_style"]


# a plausible base colour per train id (RGB in [0, 1]); index 19 = void objects
_BASE_COLORS = np.array(
    [
        (0.33, 0.32, 0.34), (0.62, 0.58, 0.56), (0.55, 0.47, 0.42), (0.68, 0.64, 0.56), (0.50, 0.44, 0.36),
        (0.42, 0.42, 0.44), (0.12, 0.12, 0.10), (0.85, 0.75, 0.15), (0.22, 0.42, 0.14), (0.52, 0.56, 0.30),
        (0.55, 0.70, 0.90), (0.45, 0.30, 0.30), (0.55, 0.25, 0.25), (0.25, 0.30, 0.55), (0.60, 0.55, 0.45),
        (0.85, 0.70, 0.20), (0.55, 0.58, 0.62), (0.20, 0.20, 0.22), (0.35, 0.25, 0.20), (0.50, 0.45, 0.40),
    ],
    dtype=np.float32,
)  # fmt: skip
# how strongly an object's instance colour departs from its class colour
_INSTANCE_TINT = np.zeros(20, np.float32)
_INSTANCE_TINT[[BUILDING, SIGN, PERSON, RIDER, CAR, TRUCK, BUS, MOTO, BIKE, WALL, FENCE]] = (
    0.3, 0.4, 0.6, 0.6, 0.7, 0.5, 0.5, 0.4, 0.5, 0.2, 0.2,
)  # fmt: skip
# per-class texture: fine-noise amplitude, blotch amplitude
_FINE = np.array([0.06, 0.05, 0.05, 0.05, 0.06, 0.03, 0.02, 0.02, 0.18, 0.12, 0.01, 0.08, 0.08, 0.03, 0.04, 0.03,
                  0.04, 0.04, 0.05, 0.05], np.float32)  # fmt: skip
_BLOTCH = np.array([0.08, 0.06, 0.10, 0.08, 0.05, 0.03, 0.02, 0.02, 0.35, 0.20, 0.10, 0.05, 0.05, 0.03, 0.05, 0.04,
                    0.05, 0.03, 0.03, 0.05], np.float32)  # fmt: skip


@dataclass(frozen=True)
class DomainStyle:
    """Appearance of one domain.

    Attributes:
        palette_jitter: std of the per-class colour offsets of this domain (its own palette).
        saturation: saturation factor (1 = unchanged).
        gain: RGB colour cast.
        brightness: global brightness factor.
        contrast: contrast around mid-grey.
        texture: scale of every texture amplitude.
        window: building window grid period in pixels (x, y).
        exposure: per-image random exposure/cast std (varied capture devices).
        blur: Gaussian blur radius in pixels.
        vignette: darkening of the corners.
        effect: weather/light effect (``night``, ``snow``, ``rain``, ``fog``) or None.
        palette_seed: seed of the palette (same seed, same class colours).
    """

    palette_jitter: float = 0.08
    saturation: float = 1.0
    gain: tuple[float, float, float] = (1.0, 1.0, 1.0)
    brightness: float = 1.0
    contrast: float = 1.0
    texture: float = 1.0
    window: tuple[int, int] = (6, 7)
    exposure: float = 0.0
    blur: float = 0.0
    vignette: float = 0.0
    effect: str | None = None
    palette_seed: int = 0


# ACDC: a Cityscapes-like capture (its own palette) under four conditions
_ACDC = dict(palette_jitter=0.1, saturation=0.8, gain=(0.95, 1.0, 0.98), brightness=0.9, contrast=0.95,
             texture=0.8, window=(7, 8), exposure=0.05, blur=0.5, vignette=0.2, palette_seed=6)  # fmt: skip

STYLES: Mapping[str, DomainStyle] = {
    # game engine: saturated, contrasty, strong textures, warm
    "gta5": DomainStyle(palette_jitter=0.06, saturation=1.35, gain=(1.06, 1.0, 0.9), brightness=1.05, contrast=1.2,
                        texture=1.3, window=(5, 6), exposure=0.05, palette_seed=1),
    # flat-shaded renderer: pastel palette, bright, little texture
    "synthia": DomainStyle(palette_jitter=0.2, saturation=1.1, gain=(1.0, 1.02, 1.08), brightness=1.15,
                           contrast=0.85, texture=0.35, window=(4, 5), exposure=0.05, palette_seed=2),
    # automotive camera: muted, slightly green, soft
    "cityscapes": DomainStyle(palette_jitter=0.1, saturation=0.7, gain=(0.95, 1.0, 0.96), brightness=0.85,
                              contrast=0.9, texture=0.8, window=(7, 8), exposure=0.05, blur=0.6, vignette=0.15,
                              palette_seed=3),
    # dash cams: bluish, darker, strong vignette, varied exposure
    "bdd100k": DomainStyle(palette_jitter=0.12, saturation=0.9, gain=(0.88, 0.95, 1.12), brightness=0.8,
                           contrast=1.05, window=(6, 6), exposure=0.2, blur=0.4, vignette=0.35, palette_seed=4),
    # crowd-sourced devices: widely varying exposure and colour cast per image
    "mapillary": DomainStyle(palette_jitter=0.15, brightness=0.95, window=(8, 9), exposure=0.3, blur=0.3,
                             vignette=0.1, palette_seed=5),
    "acdc_night": DomainStyle(**_ACDC, effect="night"),
    "acdc_snow": DomainStyle(**_ACDC, effect="snow"),
    "acdc_rain": DomainStyle(**_ACDC, effect="rain"),
    "acdc_fog": DomainStyle(**_ACDC, effect="fog"),
}  # fmt: skip
"""domain name -> its style; holds exactly the names of :data:`famix_core.domains.DOMAINS`."""


def _lowfreq(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """Smooth noise (H, W) float32 with unit-ish amplitude: bilinear upsampling of a coarse grid."""
    coarse = rng.standard_normal((h // cell + 2, w // cell + 2)).astype(np.float32)
    return np.asarray(Image.fromarray(coarse, mode="F").resize((w, h), Image.BILINEAR))


def _glow(h: int, w: int, lights, colors: Mapping[str, tuple[float, float, float]], gain: float) -> np.ndarray:
    """Additive light (H, W, 3) of Gaussian glows around light sources."""
    out = np.zeros((h, w, 3), np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r_max = 0.05 * h  # near lamps would otherwise light the whole frame
    for x, y, r, kind in lights:
        r = min(r, r_max)
        if not (-2 * r <= x < w + 2 * r and -2 * r <= y < h + 2 * r):
            continue
        g = np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2.0 * (1.5 * r) ** 2))
        out += gain * g[..., None] * np.asarray(colors[kind], np.float32)
    return out


_LIGHT_COLORS = {
    "lamp": (1.0, 0.85, 0.55), "tail": (0.9, 0.1, 0.05), "head": (1.0, 1.0, 0.9),
    "red": (1.0, 0.1, 0.05), "amber": (1.0, 0.6, 0.0), "green": (0.1, 1.0, 0.4),
}  # fmt: skip


def _apply_effect(effect: str, img: np.ndarray, scene: Scene, rng: np.random.Generator, windows: np.ndarray) -> np.ndarray:
    h, w = scene.labels.shape
    lab = scene.labels
    if effect == "night":
        img = img * np.array([0.16, 0.18, 0.26], np.float32)
        img[lab == SKY] = np.array([0.02, 0.03, 0.07], np.float32) + 0.01 * rng.standard_normal((1, 3))
        lit = windows & (_lowfreq(rng, h, w, 3) > 0.4)  # some windows lit, in patches
        img[lit] = np.array([0.9, 0.75, 0.4], np.float32) * rng.uniform(0.5, 1.0)
        img = img + _glow(h, w, scene.lights, _LIGHT_COLORS, 0.9)
        img = img + 0.02 * rng.standard_normal(img.shape).astype(np.float32)
    elif effect == "snow":
        flat = np.isin(lab, [ROAD, SIDEWALK, TERRAIN, VEG, WALL, FENCE])
        img = np.where(flat[..., None], 0.45 * img + 0.55 * 0.92, img)
        img = 0.55 * img + 0.45 * 0.8  # low contrast, bright overcast
        img[lab == SKY] = 0.85 + 0.03 * rng.standard_normal(3)
        flakes = rng.random((h, w)) < 0.02
        flakes |= np.roll(flakes, 1, axis=1) & (rng.random((h, w)) < 0.5)
        img[flakes] = 0.97
    elif effect == "rain":
        gray = img.mean(axis=2, keepdims=True)
        img = 0.65 * (0.6 * img + 0.4 * gray)  # wet darkening, washed colours
        road = lab == ROAD
        img[road] += 0.12 * np.clip(_lowfreq(rng, h, w, 6)[road], 0, None)[:, None]  # puddle sheen
        img[lab == SKY] = 0.55 + 0.03 * rng.standard_normal(3)
        streaks = Image.new("L", (w, h), 0)
        d = ImageDraw.Draw(streaks)
        slant = rng.uniform(-0.3, 0.3)
        for _ in range(int(h * w / 180)):
            x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
            length = rng.uniform(0.05, 0.12) * h
            d.line([(x0, y0), (x0 + slant * length, y0 + length)], fill=int(rng.uniform(80, 200)), width=1)
        s = np.asarray(streaks, np.float32)[..., None] / 255.0
        img = img * (1 - 0.45 * s) + 0.8 * 0.45 * s
    elif effect == "fog":
        visibility = rng.uniform(25, 60)
        t = np.exp(-scene.depth / visibility)[..., None]
        fog = np.array([0.74, 0.76, 0.78], np.float32)
        img = img * t + fog * (1 - t)
    else:
        raise ValueError(f"unknown effect {effect!r} (known: night, snow, rain, fog)")
    return img


def render(scene: Scene, domain: str, seed: int, scene_id: int) -> np.ndarray:
    """Render a scene in a domain's style.

    Args:
        scene: geometry from :func:`make_scene`.
        domain: domain name (key of :data:`STYLES`).
        seed: benchmark seed.
        scene_id: scene index (appearance randomness is per (seed, scene, domain)).

    Returns:
        (H, W, 3) uint8 RGB image.
    """
    if domain not in STYLES:
        raise KeyError(f"unknown domain style {domain!r} (known: {', '.join(STYLES)})")
    style = STYLES[domain]
    dom_idx = list(STYLES).index(domain)
    rng = np.random.default_rng([seed, scene_id, 0xA99, dom_idx])
    return render_style(scene, style, seed, rng)


def render_style(scene: Scene, style: DomainStyle, seed: int, rng: np.random.Generator) -> np.ndarray:
    """Render a scene in any :class:`DomainStyle` (the domains' styles and the caption corpus's).

    Args:
        scene: geometry from :func:`make_scene`.
        style: the appearance.
        seed: seed of the palettes (with ``style.palette_seed``).
        rng: the image's own appearance randomness (noise, exposure, weather).

    Returns:
        (H, W, 3) uint8 RGB image.
    """
    prng = np.random.default_rng([seed, style.palette_seed, 0xC0102])
    h, w = scene.labels.shape
    lab = np.where(scene.labels == VOID, 19, scene.labels).astype(np.intp)  # (H, W) index into 20 colours

    palette = np.clip(_BASE_COLORS + prng.normal(0, style.palette_jitter, _BASE_COLORS.shape), 0.03, 0.97)
    inst_colors = rng.uniform(0.05, 0.95, (256, 3)).astype(np.float32)
    tint = _INSTANCE_TINT[lab][..., None] * (scene.instances > 0)[..., None]
    img = palette[lab] * (1 - tint) + inst_colors[scene.instances] * tint  # (H, W, 3)

    yy, xx = np.mgrid[0:h, 0:w]
    # textures: fine grain, blotches, class patterns
    tex = style.texture
    fine = rng.standard_normal((h, w)).astype(np.float32)
    blotch = _lowfreq(rng, h, w, 4)
    shade = 1 + tex * (_FINE[lab] * fine + _BLOTCH[lab] * blotch)
    img = img * shade[..., None]
    wx, wy = style.window
    off = scene.instances.astype(np.intp) * 3  # window grids shift per building
    windows = (lab == BUILDING) & (((xx + off) % wx) < wx * 0.55) & (((yy + off) % wy) < wy * 0.5)
    img[windows] = img[windows] * 0.45 + np.array([0.1, 0.14, 0.2], np.float32) * 0.55
    bricks = (lab == WALL) & (yy % 4 == 0)
    img[bricks] *= 1 - 0.25 * tex
    slats = (lab == FENCE) & (xx % 3 == 0)
    img[slats] *= 1 - 0.4 * tex
    z = scene.depth
    lateral = (xx + 0.5 - scene.vanish_x) * z / scene.focal
    tiles = (lab == SIDEWALK) & (((lateral % 1.0) < 0.08) | ((z % 1.0) < 0.08))
    img[tiles] *= 1 - 0.2 * tex
    sky = lab == SKY
    grad = np.clip((yy - 0) / max(scene.horizon, 1.0), 0, 1.0)[..., None]  # lighter towards the horizon
    img = np.where(sky[..., None], img * (0.8 + 0.35 * grad) + 0.08 * tex * np.clip(blotch, 0, None)[..., None], img)
    img[scene.markings] = np.array([0.9, 0.9, 0.85], np.float32) * (1 - 0.1 * tex * fine[scene.markings, None])
    # objects of one image share a random exposure offset
    things = lab >= PERSON
    img[things] *= 0.85 + 0.15 * rng.random()

    # domain colour: saturation, cast, brightness, contrast, per-image exposure
    gray = img.mean(axis=2, keepdims=True)
    img = gray + style.saturation * (img - gray)
    cast = np.asarray(style.gain, np.float32) * (1 + style.exposure * rng.normal(0, 1, 3).astype(np.float32) * 0.5)
    img = img * cast * style.brightness * (1 + style.exposure * rng.normal(0, 0.5))
    img = 0.5 + style.contrast * (img - 0.5)
    if style.effect:
        img = _apply_effect(style.effect, img, scene, rng, windows)
    if style.vignette:
        r2 = ((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2
        img = img * (1 - style.vignette * 0.5 * r2)[..., None]
    out = Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8))
    if style.blur:
        out = out.filter(ImageFilter.GaussianBlur(style.blur))
    return np.asarray(out)
