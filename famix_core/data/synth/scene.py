"""Scene geometry: a pinhole camera over a flat street, drawn into label, instance and depth maps."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw

from famix_core.classes import IGNORE_INDEX

__all__ = ["Scene", "make_scene"]

# train ids, named for readability
ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN, VEG, TERRAIN, SKY = range(11)
PERSON, RIDER, CAR, TRUCK, BUS, TRAIN, MOTO, BIKE = range(11, 19)
VOID = IGNORE_INDEX

_CAM_HEIGHT = 1.5  # metres
_FAR = 1e4  # depth of the sky (metres)


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
