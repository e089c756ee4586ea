"""Patch-wise feature styles, one job per module.

* :mod:`famix_core.styles.ops`: patch statistics, dominant class, Beta sampling, the style op
  (normalize, mix, re-style);
* :mod:`famix_core.styles.bank`: the mined :class:`~famix_core.styles.bank.StyleBank` and its files;
* :mod:`famix_core.styles.strategies`: the training-time augmenter modules and their registry;
* :mod:`famix_core.styles.diagnostics`: what a mined bank's prompt words do and where its styles
  lie relative to the source and the targets (``scripts/diagnose_styles.py`` prints them).

Styles act on layer-1 features ``f`` (B, C, H, W) split into a ``g x g`` grid of
patches (METHOD.md "Where styles act"). Everything here is vectorized over
samples and patches (reshape + reduction, one gather, one fused affine) and runs
on whatever device its inputs live on; nothing is copied to the host per step.

Patch geometry: row ``i`` of an ``H``-row map belongs to patch row
``floor(i * g / H)`` (same for columns). When ``H`` and ``W`` are divisible by
``g`` (the paper: 192 / 3, 768 / 3) every patch has ``H/g x W/g`` pixels and the
ops use a plain reshape ``(B, C, g, ph, g, pw)``; otherwise patches differ by at
most one row/column and the ops use segment sums over a per-pixel patch index.
``H`` and ``W`` must be at least ``g`` (no empty patch).

Statistics (official ``utils/stats.py::calc_mean_std``): per-channel mean and
``sigma = sqrt(unbiased var + eps)`` of every patch.

Gradient: the gradient flows through the patch statistics ``mu`` and ``sigma``
(the normalization and the Mix terms), not only through ``f``; it matters only
when layers before the op train (Freeze ✗). The official ``network/utils.py``
builds the same graph (nothing detached), but it only ever runs with the stem and
layer 1 frozen: with them training, its in-place write of the normalized patches
fails at ``backward()``. So for Freeze ✗ with a style op the choice is not in the
official code (docs/method.md, Fidelity item 5); the original MixStyle detaches.

Cost: when ``f`` needs no gradient (the frozen stem and layer 1 of the paper's
Freeze policy) the style op allocates one full-size tensor (``f - mu``, then
scaled, shifted and rectified in place); when it does, the op runs out of place
(autograd keeps what the backward needs). Statistics are reductions.

Randomness: every draw (bank entry, Beta mixing weight, permutation, noise) is
taken through ``torch.rand``/``torch.randn``/``torch.randperm`` with an optional
``torch.Generator`` living on the data's device. The Beta(alpha, alpha) sampler is
written with those primitives (Marsaglia-Tsang Gamma with a fixed number of
vectorized proposals, see :func:`sample_beta`), so results are reproducible given
a seeded generator, or given ``torch.manual_seed`` when ``generator`` is ``None``.
"""
