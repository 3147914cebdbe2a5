"""Geometry of the local feature volumes of Convolutional Occupancy Networks.

A model keeps its features on axis-aligned planes ``"xz"``, ``"xy"``, ``"yz"`` (``(B, C, R,
R)``) and/or a ``"grid"`` (``(B, C, R, R, R)``) spanning the padded cube ``[-(1 + padding)/2,
(1 + padding)/2]^3``. Encoders bin points into cells and average their features per cell;
decoders sample the volumes back at query points.

Conventions (those of the official release, which its checkpoints depend on):

* ``normalize``: a plane takes the point's coordinates ``p[..., PLANE_AXES[plane]]``, the grid
  all three; they are mapped to ``u = p / (1 + padding + eps) + 0.5`` in [0, 1), with
  ``eps`` 1e-5 for planes and 1e-3 for the grid; points outside are clamped into the border
  cells (``u >= 1`` becomes ``1 - eps``, ``u < 0`` becomes 0).
* ``cell_index``: cell ``floor(u * R)`` per axis, flattened as ``i0 + R * (i1 + R * i2)``, so
  the unflattened volume's LAST axis follows ``u[..., 0]``: a plane ``(B, C, R, R)`` is
  indexed ``[v, u]`` (e.g. ``"xz"``: ``[z, x]``), the grid ``(B, C, R, R, R)`` ``[z, y, x]``.
* ``sample``: ``grid_sample`` at ``2u - 1`` whose last coordinate axis is likewise the
  tensor's last (W) axis, so binning and sampling agree on the axes. They disagree on
  the cell centres with ``align="official"`` (``align_corners=True``: the centre of cell k
  holds at ``u = k / (R - 1)``, not at ``(k + 0.5) / R``, up to half a cell off); the
  official checkpoints were trained that way. ``align="consistent"`` samples with
  ``align_corners=False``, where cell k's value sits exactly at its centre.
"""

import torch
from torch.nn import functional as F

from .layout import ALIGNMENTS, EPS, FEATURE_TYPES, PLANE_AXES, SAMPLE_MODES  # noqa: F401


def normalize(p, kind, padding):
    """Points ``(B, T, 3)`` -> coordinates in [0, 1) of one feature type: ``(B, T, 2)`` for a
    plane, ``(B, T, 3)`` for ``"grid"``. Differentiable inside the cube (zero gradient where
    clamped)."""
    if kind == "grid":
        u, eps = p, EPS["grid"]
    else:
        u, eps = p[..., PLANE_AXES[kind]], EPS["plane"]
    u = u / (1 + padding + eps) + 0.5
    return torch.where(u >= 1, 1 - eps, u).clamp(min=0)


def cell_index(u, resolution):
    """Coordinates ``(B, T, 2 | 3)`` in [0, 1) -> flat cell index ``(B, T)`` int64 into a
    ``resolution^2`` plane or ``resolution^3`` grid (see the module notes for the layout)."""
    # The clamp only matters for resolutions that are no power of two, where u * R can round
    # up to R in float32.
    i = (u * resolution).long().clamp_(max=resolution - 1)
    if u.size(-1) == 2:
        return i[..., 0] + resolution * i[..., 1]
    return i[..., 0] + resolution * (i[..., 1] + resolution * i[..., 2])


def _scatter(values, index, cells, reduce):
    """Reduce point features ``(B, T, C)`` per cell -> ``(B, cells, C)``, empty cells 0;
    also returns the expanded index ``(B, T, C)``."""
    expanded = index[:, :, None].expand_as(values)
    empty = values.new_zeros(values.size(0), cells, values.size(2))
    return empty.scatter_reduce(1, expanded, values, reduce, include_self=False), expanded


def scatter_mean(values, index, cells):
    """Mean of the point features ``(B, T, C)`` in each cell of ``index`` ``(B, T)`` ->
    ``(B, C, cells)``, zero in cells without points."""
    return _scatter(values, index, cells, "mean")[0].transpose(1, 2)


def pool_cells(values, index, cells):
    """Local max pooling: each point's features ``(B, T, C)`` replaced by the maximum over
    the points in its cell -> ``(B, T, C)``."""
    pooled, expanded = _scatter(values, index, cells, "amax")
    return pooled.gather(1, expanded)


def sample(features, u, mode="bilinear", align="consistent"):
    """Features ``(B, C, R, R)`` or ``(B, C, R, R, R)`` at normalised coordinates ``u``
    ``(B, T, 2 | 3)`` -> ``(B, T, C)``; bilinear on planes, trilinear on grids (or nearest)."""
    grid = (2.0 * u - 1.0).to(features.dtype)
    grid = grid[:, :, None] if u.size(-1) == 2 else grid[:, :, None, None]
    out = F.grid_sample(features, grid, mode=mode, padding_mode="border",
                        align_corners=align == "official")
    return out.flatten(2).transpose(1, 2)
