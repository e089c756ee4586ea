"""The built-in synthetic benchmark: procedural street scenes in nine domain styles (numpy + PIL, no torch).

A scene (one id, one seed) is geometry only: a label map of the 19 train ids
drawn with a pinhole camera over a flat street (sky above the horizon, road and
sidewalks converging to a vanishing point, facades of buildings, walls, fences
and trees along the street, poles carrying signs, traffic lights and lamps,
vehicles, persons and riders), plus an instance map and a depth map. A domain
style then renders appearance from those maps: its own class colours, textures
(noise, window grids, tiles, bricks, stripes), colour cast and, for the ACDC
domains, night / snow / rain / fog effects. The scene of an id is the same in
every domain; only appearance differs.

The tree is written in the real datasets' folder layouts and label encodings
(:data:`famix_core.data.layouts.LAYOUTS`): a GTA5-like source, SYNTHIA (16-bit
RGB labels; source train split and target S val split), Cityscapes (small train
split + val), BDD100K, Mapillary and the four ACDC conditions (val).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from famix_core.classes import IGNORE_INDEX, PALETTE
from famix_core.data.io import write_png16
from famix_core.data.layouts import LAYOUTS
from famix_core.data.mappings import MAPPINGS, VISTAS_V12_CLASSES
from famix_core.domains import DOMAINS
from famix_core.errors import DataError
from famix_core.io import commit_dir, make_temp_dir

if TYPE_CHECKING:
    from famix_core.config import DataConfig, SynthConfig

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "Scene",
    "DomainStyle",
    "STYLES",
    "make_scene",
    "render",
    "render_style",
    "scene_ids",
    "encode_label",
    "ensure_synthetic",
    "generate",
    "contact_sheet",
]

FORMAT_VERSION = 2
"""Bump when the generator's output changes: existing trees are then regenerated."""

MANIFEST_NAME = "famix_synthetic.json"

# train ids, named for readability
ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN, VEG, TERRAIN, SKY = range(11)
PERSON, RIDER, CAR, TRUCK, BUS, TRAIN, MOTO, BIKE = range(11, 19)
VOID = IGNORE_INDEX

_CAM_HEIGHT = 1.5  # metres
_FAR = 1e4  # depth of the sky (metres)


# ----------------------------------------------------------------------------- scenes


@dataclass
class Scene:
    """Geometry of one synthetic street scene.

    Attributes:
        labels: (H, W) uint8 train ids (255 = void objects).
        instances: (H, W) uint8 object index (0 = stuff).
        depth: (H, W) float32 distance along the optical axis in metres (sky: 1e4).
        markings: (H, W) bool lane markings painted on the road (still ``road``).
        horizon: horizon row (float).
        vanish_x: vanishing point column (float).
        focal: focal length in pixels.
        lights: light sources (x, y, radius px, kind) for night rendering.
    """

    labels: np.ndarray
    instances: np.ndarray
    depth: np.ndarray
    markings: np.ndarray
    horizon: float
    vanish_x: float
    focal: float
    lights: list[tuple[float, float, float, str]] = field(default_factory=list)


class _Canvas:
    """Draws each shape into the label, instance and depth layers at once (painter's order)."""

    def __init__(self, h: int, w: int) -> None:
        self.h, self.w = h, w
        self.label = Image.new("L", (w, h), SKY)
        self.inst = Image.new("L", (w, h), 0)
        self.depth = Image.new("F", (w, h), _FAR)
        self._draw = [ImageDraw.Draw(self.label), ImageDraw.Draw(self.inst), ImageDraw.Draw(self.depth)]
        self.n_inst = 0

    def new_instance(self) -> int:
        self.n_inst = self.n_inst % 254 + 1
        return self.n_inst

    def polygon(self, pts, cls: int, z: float, inst: int = 0) -> None:
        pts = [(float(x), float(y)) for x, y in pts]
        for d, v in zip(self._draw, (int(cls), int(inst), float(z))):
            d.polygon(pts, fill=v)

    def rect(self, x0, y0, x1, y1, cls: int, z: float, inst: int = 0) -> None:
        x0, x1 = sorted((x0, x1))
        y0, y1 = sorted((y0, y1))
        self.polygon([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], cls, z, inst)

    def ellipse(self, cx, cy, rx, ry, cls: int, z: float, inst: int = 0, width: int = 0) -> None:
        box = [cx - rx, cy - ry, cx + max(rx, 0.5), cy + max(ry, 0.5)]
        for d, v in zip(self._draw, (int(cls), int(inst), float(z))):
            if width:
                d.ellipse(box, outline=v, width=width)
            else:
                d.ellipse(box, fill=v)

    def line(self, pts, cls: int, z: float, width: int, inst: int = 0) -> None:
        for d, v in zip(self._draw, (int(cls), int(inst), float(z))):
            d.line([(float(x), float(y)) for x, y in pts], fill=v, width=max(1, int(round(width))))


@dataclass
class _Camera:
    """Pinhole camera over a flat ground: world (X lateral, height, z depth) -> pixels."""

    horizon: float
    vanish_x: float
    focal: float

    def x(self, lateral: float, z: float) -> float:
        return self.vanish_x + self.focal * lateral / z

    def y(self, height: float, z: float) -> float:
        return self.horizon + self.focal * (_CAM_HEIGHT - height) / z

    def ppm(self, z: float) -> float:
        """Pixels per metre at depth z."""
        return self.focal / z


def _ground_band(cv: _Canvas, cam: _Camera, x_left: float, x_right: float, cls: int, z_near: float) -> None:
    """A strip of ground between two lateral offsets, from z_near to the horizon."""
    z_far = 400.0
    pts = [
        (cam.x(x_left, z_far), cam.y(0, z_far)),
        (cam.x(x_right, z_far), cam.y(0, z_far)),
        (cam.x(x_right, z_near), cam.y(0, z_near)),
        (cam.x(x_left, z_near), cam.y(0, z_near)),
    ]
    cv.polygon(pts, cls, 0.0)


def _facade(cv, cam, lateral, z0, z1, height, cls, inst=0, base=0.0) -> None:
    """A vertical wall parallel to the street at a lateral offset, between depths z0 < z1."""
    pts = [
        (cam.x(lateral, z0), cam.y(height, z0)),
        (cam.x(lateral, z1), cam.y(height, z1)),
        (cam.x(lateral, z1), cam.y(base, z1)),
        (cam.x(lateral, z0), cam.y(base, z0)),
    ]
    cv.polygon(pts, cls, 0.5 * (z0 + z1), inst)


def _box(cv, cam, lateral, z, width, height, cls, inst, base=0.0) -> tuple[float, float, float, float]:
    """A camera-facing box (object seen from behind / front); returns its pixel extent (x0, y0, x1, y1)."""
    x0, x1 = cam.x(lateral - width / 2, z), cam.x(lateral + width / 2, z)
    y0, y1 = cam.y(base + height, z), cam.y(base, z)
    cv.rect(x0, y0, x1, y1, cls, z, inst)
    return x0, y0, x1, y1


def _draw_side(cv, cam, rng, side: float, curb: float, walk: float, z_min: float) -> None:
    """Facades, walls, fences and trees along one side of the street (side = -1 left, +1 right)."""
    setback = rng.uniform(0.0, 3.0)
    front = side * (curb + walk + setback)
    segments = []
    z = z_min
    while z < 220:
        length = rng.uniform(6, 28)
        segments.append((z, z + length))
        z += length + (rng.uniform(0, 6) if rng.random() < 0.3 else 0.0)
    for z0, z1 in reversed(segments):  # far first
        kind = rng.choice(["building", "building", "building", "trees", "wall", "fence", "open"])
        if kind == "building":
            _facade(cv, cam, front, z0, z1, rng.uniform(6, 26), BUILDING, cv.new_instance())
        elif kind == "wall":
            _facade(cv, cam, front + side * 2.0, z0, z1, rng.uniform(8, 20), BUILDING, cv.new_instance())
            _facade(cv, cam, front, z0, z1, rng.uniform(1.2, 2.8), WALL, cv.new_instance())
        elif kind == "fence":
            _facade(cv, cam, front + side * 3.0, z0, z1, rng.uniform(6, 18), BUILDING, cv.new_instance())
            _facade(cv, cam, front, z0, z1, rng.uniform(1.0, 2.0), FENCE, cv.new_instance())
        if kind in ("trees", "fence", "open"):
            for zt in np.arange(z1, z0, -rng.uniform(4, 9)):
                lat = front - side * rng.uniform(0.0, 1.0)
                ppm = cam.ppm(zt)
                xc = cam.x(lat, zt)
                crown_h = rng.uniform(3, 6)
                trunk_top = cam.y(rng.uniform(1.5, 3.0), zt)
                cv.rect(xc - 0.15 * ppm, trunk_top, xc + 0.15 * ppm, cam.y(0, zt), VEG, zt)
                cy = cam.y(rng.uniform(2.5, 4.5) + crown_h / 2, zt)
                cv.ellipse(xc, cy, crown_h * 0.5 * ppm * rng.uniform(0.8, 1.3), crown_h * 0.5 * ppm, VEG, zt)
            if kind == "open" and rng.random() < 0.5:
                _facade(cv, cam, front + side * 12.0, z0, z1, rng.uniform(1.0, 2.5), VEG, 0)  # hedge far back


def _draw_pole(cv, cam, rng, lateral, z, lights, side) -> None:
    ppm = cam.ppm(z)
    height = rng.uniform(3.5, 8.0)
    x = cam.x(lateral, z)
    width = max(1.0, 0.15 * ppm)
    cv.rect(x - width / 2, cam.y(height, z), x + width / 2, cam.y(0, z), POLE, z)
    kind = rng.choice(["sign", "sign", "light", "lamp"])
    inst = cv.new_instance()
    if kind == "sign":
        h = rng.uniform(2.0, min(3.2, height))
        s = rng.uniform(0.5, 0.9)
        shape = rng.integers(3)
        cx, cy = x, cam.y(h, z)
        r = s * ppm / 2
        if shape == 0:
            cv.ellipse(cx, cy, r, r, SIGN, z - 0.05, inst)
        elif shape == 1:
            cv.rect(cx - r, cy - r, cx + r, cy + r, SIGN, z - 0.05, inst)
        else:
            cv.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], SIGN, z - 0.05, inst)
    elif kind == "light":
        arm = -side * rng.uniform(0.0, 3.0)
        top = cam.y(height, z)
        cv.line([(x, top), (cam.x(lateral + arm, z), top)], POLE, z, max(1.0, 0.12 * ppm))
        bx = cam.x(lateral + arm, z)
        bw, bh = 0.35 * ppm, 1.0 * ppm
        cv.rect(bx - bw / 2, top, bx + bw / 2, top + bh, LIGHT, z - 0.05, inst)
        lamp = rng.integers(3)
        lights.append((bx, top + bh * (0.2 + 0.3 * lamp), max(1.0, 0.3 * ppm), ("red", "amber", "green")[lamp]))
    else:  # street lamp: part of the pole class, a light source at night
        arm = -side * rng.uniform(0.8, 2.0)
        top = cam.y(height, z)
        ax = cam.x(lateral + arm, z)
        cv.line([(x, top), (ax, top)], POLE, z, max(1.0, 0.12 * ppm))
        cv.rect(ax - 0.25 * ppm, top, ax + 0.25 * ppm, top + 0.2 * ppm, POLE, z)
        lights.append((ax, top + 0.2 * ppm, max(2.0, 1.2 * ppm), "lamp"))


def _draw_vehicle(cv, cam, rng, cls, lateral, z, lights) -> None:
    inst = cv.new_instance()
    ppm = cam.ppm(z)
    if cls == CAR:
        w, h = rng.uniform(1.6, 1.9), rng.uniform(1.3, 1.6)
        x0, y0, x1, y1 = _box(cv, cam, lateral, z, w, h * 0.55, CAR, inst, base=0.25)
        cab = w * rng.uniform(0.6, 0.8)
        xc = cam.x(lateral, z)
        cv.polygon(
            [(xc - cab / 2 * ppm, cam.y(h, z)), (xc + cab / 2 * ppm, cam.y(h, z)), (x1, y0), (x0, y0)], CAR, z, inst
        )
    elif cls == TRUCK:
        w, h = rng.uniform(2.3, 2.6), rng.uniform(2.8, 3.8)
        x0, y0, x1, y1 = _box(cv, cam, lateral, z, w, h, TRUCK, inst, base=0.4)
    elif cls == BUS:
        w, h = 2.55, rng.uniform(3.0, 3.4)
        x0, y0, x1, y1 = _box(cv, cam, lateral, z, w, h, BUS, inst, base=0.3)
    else:
        raise ValueError(cls)
    # wheels (same class), then lights for night scenes
    wheel = 0.35 * ppm
    for xw in (x0 + 0.15 * (x1 - x0), x1 - 0.15 * (x1 - x0)):
        cv.rect(xw - wheel / 2, y1 - 0.1 * ppm, xw + wheel / 2, cam.y(0, z), cls, z, inst)
    ly = y1 - 0.25 * (y1 - y0)
    for xl in (x0 + 0.1 * (x1 - x0), x1 - 0.1 * (x1 - x0)):
        lights.append((xl, ly, max(1.0, 0.25 * ppm), "tail"))


def _draw_person(cv, cam, rng, lateral, z) -> None:
    inst = cv.new_instance()
    ppm = cam.ppm(z)
    h = rng.uniform(1.55, 1.9)
    x = cam.x(lateral, z)
    head = 0.12 * ppm
    cv.ellipse(x, cam.y(h - 0.12, z), head, head * 1.2, PERSON, z, inst)
    cv.rect(x - 0.22 * ppm, cam.y(h - 0.25, z), x + 0.22 * ppm, cam.y(0.85, z), PERSON, z, inst)
    stride = rng.uniform(0.0, 0.25) * ppm
    for dx in (-0.1, 0.1):
        lx = x + dx * ppm
        cv.line([(lx, cam.y(0.85, z)), (lx + np.sign(dx) * stride, cam.y(0, z))], PERSON, z, 0.14 * ppm, inst)


def _draw_rider(cv, cam, rng, lateral, z, lights) -> None:
    """A rider on a bicycle or motorcycle, seen from the side."""
    ppm = cam.ppm(z)
    moto = rng.random() < 0.4
    cls = MOTO if moto else BIKE
    vinst, rinst = cv.new_instance(), cv.new_instance()
    x = cam.x(lateral, z)
    d = (1.4 if moto else 1.1) * ppm / 2
    r = (0.32 if moto else 0.34) * ppm
    wy = cam.y(0, z) - r
    ring = max(1, int(round(0.06 * ppm)))
    for wx in (x - d, x + d):
        if moto:
            cv.ellipse(wx, wy, r, r, cls, z, vinst)
        else:
            cv.ellipse(wx, wy, r, r, cls, z, vinst, width=ring)
    frame_y = wy - 0.45 * ppm
    if moto:
        cv.polygon([(x - d, wy), (x - d * 0.6, frame_y), (x + d * 0.7, frame_y), (x + d, wy)], cls, z, vinst)
    else:
        cv.line([(x - d, wy), (x, frame_y), (x + d, wy), (x - d, wy)], cls, z, 0.06 * ppm, vinst)
        cv.line([(x + d * 0.8, wy), (x + d * 0.7, frame_y - 0.2 * ppm)], cls, z, 0.06 * ppm, vinst)
    # rider: legs, torso, head
    seat_y = frame_y - 0.05 * ppm
    cv.line([(x - 0.1 * ppm, seat_y), (x + 0.05 * ppm, wy)], RIDER, z - 0.01, 0.14 * ppm, rinst)
    cv.polygon(
        [(x - 0.25 * ppm, seat_y), (x + 0.05 * ppm, seat_y), (x + 0.3 * ppm, seat_y - 0.6 * ppm), (x, seat_y - 0.65 * ppm)],
        RIDER, z - 0.01, rinst,
    )  # fmt: skip
    cv.ellipse(x + 0.2 * ppm, seat_y - 0.8 * ppm, 0.12 * ppm, 0.14 * ppm, RIDER, z - 0.01, rinst)
    if moto:
        lights.append((x + d, frame_y, max(1.0, 0.3 * ppm), "head"))


def _near(rng: np.random.Generator, z0: float, z1: float) -> float:
    """A depth drawn log-uniformly in [z0, z1): as many objects near as far, so near ones show."""
    return float(np.exp(rng.uniform(np.log(z0), np.log(max(z1, z0 * 1.01)))))


def make_scene(seed: int, scene_id: int, height: int, width: int) -> Scene:
    """Generate the geometry of one scene (identical for every domain).

    Args:
        seed: benchmark seed.
        scene_id: scene index (train and val use disjoint ids).
        height: image height in pixels.
        width: image width in pixels.

    Returns:
        a :class:`Scene` of (height, width) maps.
    """
    rng = np.random.default_rng([seed, scene_id, 0x5CE7E])
    h, w = height, width
    cam = _Camera(horizon=h * rng.uniform(0.36, 0.5), vanish_x=w * rng.uniform(0.35, 0.65), focal=w * rng.uniform(0.45, 0.6))
    cv = _Canvas(h, w)
    lights: list[tuple[float, float, float, str]] = []
    z_min = cam.focal * _CAM_HEIGHT / (h - cam.horizon) * 0.9  # depth of the bottom image row

    # ground: terrain everywhere, then sidewalks and road
    cv.rect(0, cam.horizon, w, h, TERRAIN, 0.0)
    half_l, half_r = rng.uniform(3.5, 7.5), rng.uniform(3.5, 7.5)
    walk_l, walk_r = rng.uniform(1.5, 4.0), rng.uniform(1.5, 4.0)
    _ground_band(cv, cam, -half_l - walk_l, -half_l, SIDEWALK, z_min)
    _ground_band(cv, cam, half_r, half_r + walk_r, SIDEWALK, z_min)
    _ground_band(cv, cam, -half_l, half_r, ROAD, z_min)

    # far skyline across the end of the street
    zf = 300.0
    x = -120.0
    while x < 120.0:
        seg = rng.uniform(8, 30)
        cls = BUILDING if rng.random() < 0.7 else VEG
        cv.rect(cam.x(x, zf), cam.y(rng.uniform(8, 40), zf), cam.x(x + seg, zf), cam.y(0, zf) + 1, cls, zf)
        x += seg

    _draw_side(cv, cam, rng, -1.0, half_l, walk_l, z_min)
    _draw_side(cv, cam, rng, 1.0, half_r, walk_r, z_min)

    # a train on a track behind one sidewalk (rare)
    if rng.random() < 0.15:
        side = rng.choice([-1.0, 1.0])
        lat = side * ((half_l + walk_l) if side < 0 else (half_r + walk_r)) + side * 1.5
        z0 = rng.uniform(8, 25)
        _facade(cv, cam, lat, z0, z0 + rng.uniform(40, 90), 3.9, TRAIN, cv.new_instance(), base=0.5)

    # objects, far first
    objects: list[tuple[float, Callable[[], None]]] = []
    for side, curb, walk in ((-1.0, half_l, walk_l), (1.0, half_r, walk_r)):
        for _ in range(rng.integers(1, 5)):
            z = _near(rng, max(z_min, 4.0), 60)
            lat = side * (curb + 0.4)
            objects.append((z, lambda lat=lat, z=z, side=side: _draw_pole(cv, cam, rng, lat, z, lights, side)))
        for _ in range(rng.integers(0, 7)):
            z = _near(rng, max(z_min, 3.0), 50)
            lat = side * (curb + rng.uniform(0.3, walk - 0.3))
            objects.append((z, lambda lat=lat, z=z: _draw_person(cv, cam, rng, lat, z)))
        if rng.random() < 0.4:  # a void object (bin, bench): ignored in every encoding
            z = rng.uniform(max(z_min, 4.0), 40)
            lat = side * (curb + rng.uniform(0.5, walk))
            objects.append((z, lambda lat=lat, z=z: _box(cv, cam, lat, z, 0.7, 1.0, VOID, cv.new_instance())))
        for _ in range(rng.integers(0, 4)):  # parked cars along the curb
            z = _near(rng, max(z_min, 5.0), 90)
            lat = side * (curb - 1.1)
            objects.append((z, lambda lat=lat, z=z: _draw_vehicle(cv, cam, rng, CAR, lat, z, lights)))
    for _ in range(rng.integers(1, 7)):  # traffic
        z = _near(rng, max(z_min, 6.0), 120)
        lat = rng.uniform(-half_l + 1.3, half_r - 1.3)
        cls = rng.choice([CAR, CAR, CAR, CAR, TRUCK, BUS])
        objects.append((z, lambda lat=lat, z=z, cls=cls: _draw_vehicle(cv, cam, rng, cls, lat, z, lights)))
    for _ in range(rng.integers(0, 3)):
        z = _near(rng, max(z_min, 5.0), 40)
        side = rng.choice([-1.0, 1.0])
        lat = side * ((half_l if side < 0 else half_r) - 1.0)
        objects.append((z, lambda lat=lat, z=z: _draw_rider(cv, cam, rng, lat, z, lights)))
    for _, draw in sorted(objects, key=lambda o: -o[0]):
        draw()

    labels = np.asarray(cv.label).copy()
    depth = np.asarray(cv.depth).copy()
    rows = np.arange(h, dtype=np.float32)[:, None] + 0.5
    ground_z = np.where(rows > cam.horizon, cam.focal * _CAM_HEIGHT / np.maximum(rows - cam.horizon, 1e-3), _FAR)
    depth = np.where(depth <= 0.0, np.broadcast_to(ground_z, depth.shape), depth).astype(np.float32)

    # lane markings: dashed lines in world coordinates on road pixels
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    z = cam.focal * _CAM_HEIGHT / np.maximum(yy - cam.horizon, 1e-3)
    lateral = (xx - cam.vanish_x) * z / cam.focal  # (H, W) metres
    lanes = [0.0] + ([-half_l / 2] if half_l > 5.5 else []) + ([half_r / 2] if half_r > 5.5 else [])
    near_lane = np.min(np.abs(lateral[None] - np.asarray(lanes, np.float32)[:, None, None]), axis=0)
    dash = (z % 9.0) < 4.5
    markings = (labels == ROAD) & (near_lane < 0.12) & dash & (yy > cam.horizon + 1)
    return Scene(
        labels=labels,
        instances=np.asarray(cv.inst).copy(),
        depth=depth,
        markings=markings,
        horizon=cam.horizon,
        vanish_x=cam.vanish_x,
        focal=cam.focal,
        lights=lights,
    )


# ----------------------------------------------------------------------------- appearance

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


# ----------------------------------------------------------------------------- encodings and the tree

_VISTAS_NAMES = (
    "construction--flat--road", "construction--flat--sidewalk", "construction--structure--building",
    "construction--barrier--wall", "construction--barrier--fence", "object--support--pole", "object--traffic-light",
    "object--traffic-sign--front", "nature--vegetation", "nature--terrain", "nature--sky", "human--person",
    "human--rider--bicyclist", "object--vehicle--car", "object--vehicle--truck", "object--vehicle--bus",
    "object--vehicle--on-rails", "object--vehicle--motorcycle", "object--vehicle--bicycle",
)  # fmt: skip


def _encoder(mapping: str) -> np.ndarray:
    """(256,) train id (255 = void) -> raw value of a mapping."""
    enc = np.zeros(256, np.int64)
    if mapping == "vistas_v12":
        table = {t: VISTAS_V12_CLASSES.index(n) for t, n in enumerate(_VISTAS_NAMES)}
        void = VISTAS_V12_CLASSES.index("object--trash-can")
    else:
        table = MAPPINGS[mapping].encode_table()
        void = {"cityscapes_ids": 4, "train_ids": IGNORE_INDEX, "synthia": 0}[mapping]  # static / ignore / void
    enc[:] = void
    for tid, raw in table.items():
        enc[tid] = raw
    return enc


def encode_label(scene: Scene, domain: str) -> np.ndarray:
    """The raw label array a domain's dataset stores for a scene.

    Args:
        scene: the scene.
        domain: domain name.

    Returns:
        (H, W) uint8 raw ids, or (H, W, 3) uint16 for SYNTHIA (class id, instance id, 0).
    """
    lay = LAYOUTS[domain]
    raw = _encoder(lay.mapping)[scene.labels]
    if lay.mapping == "vistas_v12":
        raw[scene.markings] = VISTAS_V12_CLASSES.index("marking--general")  # Vistas labels lane markings
    if lay.label_first_channel:
        out = np.zeros((*raw.shape, 3), np.uint16)
        out[..., 0] = raw
        out[..., 1] = scene.instances
        return out
    return raw.astype(np.uint8)


def _palette_image(raw: np.ndarray, mapping: str) -> Image.Image:
    """A palette PNG of ids whose colours follow the class palette (like GTA5 / Vistas label files)."""
    im = Image.frombytes("P", raw.shape[::-1], np.ascontiguousarray(raw, np.uint8).tobytes())
    colors = np.zeros((256, 3), np.uint8)
    enc = _encoder(mapping)
    for tid, rgb in enumerate(PALETTE):
        colors[enc[tid]] = rgb
    im.putpalette(colors.reshape(-1).tolist())
    return im


def scene_ids(cfg: "SynthConfig") -> dict[str, range]:
    """Scene ids per split: train ``0..train_images-1``, val the next ``val_images``."""
    return {"train": range(cfg.train_images), "val": range(cfg.train_images, cfg.train_images + cfg.val_images)}


def _key(domain: str, split: str, k: int) -> str:
    """Pairing key (relative path without suffix) of scene k in a domain, shaped like the real file names."""
    if domain == "gta5":
        return f"{k + 1:05d}"
    if domain == "synthia":
        return f"{k:07d}"
    if domain == "cityscapes":
        city = "aachen" if split == "train" else "frankfurt"
        return f"{city}/{city}_{k:06d}_000019"
    if domain == "bdd100k":
        return f"{0x7D2F0000 + k:08x}-synth"
    if domain == "mapillary":
        return f"synth{k:08d}x{k * 7919 % 10007:05d}"
    seq = {"night": "GOPR0351", "snow": "GOPR0122", "rain": "GOPR0400", "fog": "GOPR0475"}[DOMAINS[domain].condition]
    return f"{seq}/{seq}_frame_{k:06d}"


def _plan(cfg: "SynthConfig") -> dict[str, dict[str, range]]:
    """domain -> split -> scene ids written."""
    ids = scene_ids(cfg)
    n_city = max(1, cfg.train_images // 4)
    plan: dict[str, dict[str, range]] = {}
    for name in DOMAINS:
        if name in ("gta5", "synthia"):
            plan[name] = {"train": ids["train"], "val": ids["val"]}
        elif name == "cityscapes":
            plan[name] = {"train": range(n_city), "val": ids["val"]}
        else:
            plan[name] = {"val": ids["val"]}
    return plan


def _write_pair(root: Path, domain: str, split: str, k: int, scene: Scene, seed: int) -> None:
    lay = LAYOUTS[domain]
    img_rel, lbl_rel = lay.relative_paths(_key(domain, split, k), split, DOMAINS[domain].condition)
    img_path, lbl_path = root / _folder(domain) / img_rel, root / _folder(domain) / lbl_rel
    img_path.parent.mkdir(parents=True, exist_ok=True)
    lbl_path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(render(scene, domain, seed, k))
    if img_path.suffix == ".jpg":
        image.save(img_path, quality=92)
    else:
        image.save(img_path, compress_level=1)
    raw = encode_label(scene, domain)
    if raw.ndim == 3:
        write_png16(lbl_path, raw)
    elif domain in ("gta5", "mapillary"):
        _palette_image(raw, lay.mapping).save(lbl_path, compress_level=1)
    else:
        Image.fromarray(raw, mode="L").save(lbl_path, compress_level=1)


def _folder(domain: str) -> str:
    """Folder of a domain under the benchmark root (``acdc`` for the four conditions)."""
    return DOMAINS[domain].folder


def _write_tree(root: Path, cfg: "SynthConfig") -> dict[str, dict[str, int]]:
    plan = _plan(cfg)
    all_ids = sorted({k for splits in plan.values() for r in splits.values() for k in r})
    counts: dict[str, dict[str, int]] = {d: {s: len(r) for s, r in splits.items()} for d, splits in plan.items()}
    for k in all_ids:
        scene = make_scene(cfg.seed, k, cfg.height, cfg.width)
        for domain, splits in plan.items():
            for split, ids in splits.items():
                if k in ids:
                    _write_pair(root, domain, split, k, scene, cfg.seed)
    for domain in ("gta5", "synthia"):  # one folder for all splits: lists like the official ones select the files
        lay = LAYOUTS[domain]
        for split, list_name in lay.split_lists.items():
            names = (_key(domain, split, k) + lay.image_suffix for k in plan[domain][split])
            (root / _folder(domain) / list_name).write_text("".join(n + "\n" for n in names))
    return counts


def _manifest(cfg: "SynthConfig") -> dict:
    return {"format_version": FORMAT_VERSION, "synthetic": cfg.model_dump(mode="json")}


def _matches(root: Path, cfg: "SynthConfig") -> bool:
    try:
        data = json.loads((root / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return False
    want = _manifest(cfg)
    return all(data.get(k) == v for k, v in want.items())


def generate(root: str | Path, cfg: "SynthConfig") -> Path:
    """Generate the benchmark at ``root`` unless a tree with the same settings is already there.

    Written into a temporary sibling folder, then renamed into place: a killed run leaves no half tree,
    and when two processes race the loser keeps the winner's tree. A tree made with other settings
    (manifest mismatch) is replaced; a non-empty folder without a manifest is refused.

    Args:
        root: benchmark root (``data.root``): it receives one folder per dataset.
        cfg: sizes and seed.

    Returns:
        the root path.

    Raises:
        DataError: root holds other files (not a synthetic benchmark).
    """
    root = Path(root)
    if _matches(root, cfg):
        return root
    if root.exists() and not (root / MANIFEST_NAME).is_file() and (not root.is_dir() or any(root.iterdir())):
        raise DataError(
            f"data.root: {root} holds files but no {MANIFEST_NAME}: the synthetic benchmark needs a new or empty"
            f" folder (or unset data.synthetic to use real datasets there)"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(root.parent, f".{root.name}.tmp-")
    try:
        t0 = time.perf_counter()
        counts = _write_tree(tmp, cfg)
        manifest = _manifest(cfg) | {"domains": counts, "seconds": round(time.perf_counter() - t0, 2)}
        (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:  # a benchmark another process finished meanwhile is kept; an empty folder or a stale benchmark is replaced
        commit_dir(tmp, root, lambda r: _matches(r, cfg))
    except OSError:
        raise DataError(f"data.root: could not move the generated benchmark into {root}") from None
    return root


def ensure_synthetic(data_cfg: "DataConfig") -> Path:
    """Generate the synthetic benchmark under ``data_cfg.root`` when ``data.synthetic`` is set and it is missing/stale.

    Args:
        data_cfg: data config; nothing is generated when ``data_cfg.synthetic`` is None.

    Returns:
        the data root.
    """
    root = Path(data_cfg.root)
    if data_cfg.synthetic is None:
        return root
    return generate(root, data_cfg.synthetic)


def _colorize(train_ids: np.ndarray) -> np.ndarray:
    lut = np.zeros((256, 3), np.uint8)
    lut[: len(PALETTE)] = np.asarray(PALETTE, np.uint8)
    return lut[train_ids]


def contact_sheet(cfg: "SynthConfig", n_scenes: int = 2) -> Image.Image:
    """One row per domain: (image, colourized labels) of the first val scenes, rendered in that domain.

    Args:
        cfg: benchmark settings.
        n_scenes: scenes per row.

    Returns:
        an RGB PIL image.
    """
    ids = list(scene_ids(cfg)["val"])[:n_scenes]
    scenes = [make_scene(cfg.seed, k, cfg.height, cfg.width) for k in ids]
    h, w = cfg.height, cfg.width
    pad, label_w = 4, 110
    rows = list(DOMAINS)
    sheet = Image.new("RGB", (label_w + len(ids) * 2 * (w + pad), len(rows) * (h + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for r, domain in enumerate(rows):
        y = pad + r * (h + pad)
        col = DOMAINS[domain].column
        draw.text((4, y + h // 2 - 6), f"{domain}" + (f" ({col})" if col else " (source)"), fill=(0, 0, 0))
        for j, (k, scene) in enumerate(zip(ids, scenes)):
            x = label_w + j * 2 * (w + pad)
            sheet.paste(Image.fromarray(render(scene, domain, cfg.seed, k)), (x, y))
            sheet.paste(Image.fromarray(_colorize(scene.labels)), (x + w + pad, y))
    return sheet


