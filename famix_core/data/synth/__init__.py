"""The built-in synthetic benchmark: procedural street scenes in nine domain styles (numpy + PIL, no torch).

One job per module: :mod:`~famix_core.data.synth.scene` (geometry),
:mod:`~famix_core.data.synth.appearance` (domain styles, rendering),
:mod:`~famix_core.data.synth.labels` (each dataset's label encoding),
:mod:`~famix_core.data.synth.benchmark` (the folder tree, written atomically; ``ensure_synthetic``),
:mod:`~famix_core.data.synth.preview` (contact sheet).

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
