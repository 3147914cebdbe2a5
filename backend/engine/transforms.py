"""Coordinate frames: user/world coordinates <-> the ONet unit cube [-0.5, 0.5]^3
(docs/design.md, "Coordinates").

Both input kinds reduce to the same affine map ``world = center + unit * scale``:
point clouds get (center, scale) from ``normalize_points``, voxel grids from
``voxel_world_transform``; ``denormalize`` applies it to mesh vertices.
"""

from __future__ import annotations

import itertools

import numpy as np

from ..errors import UserError
from ..io.inputs import VOXELISATIONS

# Voxel models were trained on 32^3 grids; one that reads any grid at its own size takes
# grids up to NATIVE_GRID_MAX per edge as they are (a 128^3 grid's features: 280 MB a copy).
TRAINED_GRID = 32
NATIVE_GRID_MAX = 128


def normalize_points(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Centre ``points`` (N, 3) on their bounding-box centre and divide by the longest edge.

    Returns ``(unit_points (N, 3) float32 in [-0.5, 0.5]^3, center (3,) float64, scale float)``
    with ``points = center + unit_points * scale`` (scale in the caller's units). Raises
    ``UserError`` when all points coincide, since such a cloud has no size to normalise.
    """
    points = np.asarray(points, dtype=np.float64)
    lo, hi = points.min(axis=0), points.max(axis=0)
    center = (lo + hi) / 2
    scale = float((hi - lo).max())
    if not scale > 0:
        raise UserError("all points coincide (the bounding box has zero size); "
                        "give a cloud that spans some volume")
    unit = (points - center) / scale
    return unit.astype(np.float32), center, scale


def denormalize(vertices: np.ndarray, center: np.ndarray, scale: float) -> np.ndarray:
    """Map unit-cube ``vertices`` (V, 3) back to world coordinates: ``center + vertices * scale``.

    Exact inverse of ``normalize_points`` (and of the voxel frame of
    ``voxel_world_transform``). Returns ``(V, 3) float64`` so large world offsets keep
    their precision; cast to float32 where a consumer needs it.
    """
    vertices = np.asarray(vertices, dtype=np.float64)
    return np.asarray(center, dtype=np.float64) + vertices * float(scale)


def voxel_world_transform(translate: np.ndarray, scale: float) -> tuple[np.ndarray, float]:
    """(center (3,) float64, scale float) for ``denormalize`` of a voxel grid's unit-cube output.

    A grid with ``translate`` (3,) and edge length ``scale`` covers
    [translate, translate + scale]^3; unit-cube coordinate u in [-0.5, 0.5] maps to
    ``translate + (u + 0.5) * scale``, i.e. ``center = translate + scale / 2``.
    """
    scale = float(scale)
    return np.asarray(translate, dtype=np.float64).reshape(3) + scale / 2, scale


def voxel_channels(occupancy: np.ndarray, voxelisation: str) -> np.ndarray:
    """The input of a voxel encoder that reads the grid's rule (``voxelisation_input``):
    ``(2, n, n, n) float32``, channel 0 the occupancy (n, n, n) and channel 1 the index of
    ``voxelisation`` in ``VOXELISATIONS`` in every voxel."""
    rule = np.full(occupancy.shape, VOXELISATIONS.index(voxelisation), np.float32)
    return np.stack([occupancy.astype(np.float32), rule])


def reads_native_grid(model) -> bool:
    """Whether a voxel model reads grids of any size at their own resolution
    (``convonet.layout.reads_native_grid`` of its config; False for other models)."""
    from ..models.convonet.layout import reads_native_grid as config_reads_native_grid

    return config_reads_native_grid(getattr(model, "config", None) or {})


def grid_size(n: int, native: bool) -> int:
    """The edge at which a voxel model reads an n^3 grid: the trained ``TRAINED_GRID``, or
    for a model that reads grids at their own size (``native``) n itself up to
    ``NATIVE_GRID_MAX``."""
    return min(n, NATIVE_GRID_MAX) if native else TRAINED_GRID


def resample_voxels(occupancy: np.ndarray, n: int = 32) -> np.ndarray:
    """Resample an occupancy grid (m, m, m) to ``(n, n, n) bool`` covering the same cube.

    Nearest neighbour by voxel centre: target voxel j (centre at (j + 0.5) / n of the edge)
    takes the source voxel containing that centre. Downsampling can drop parts thinner
    than one target voxel.
    """
    occupancy = np.asarray(occupancy, dtype=bool)
    centres = (np.arange(n) + 0.5) / n
    index = [np.minimum((centres * m).astype(np.int64), m - 1) for m in occupancy.shape]
    return occupancy[np.ix_(*index)]


def subset(count: int, limit: int, rng: np.random.Generator) -> np.ndarray:
    """Indices (limit,) int64, in increasing order, of ``limit`` of ``count`` items drawn
    without replacement (the order of the input is kept)."""
    return np.sort(rng.choice(count, limit, replace=False))


def resample_sparse(unit, sparse, rng):
    """Unit-cube points (N, 3) drawn with replacement to ``sparse["resample_to"]`` points,
    each copy jittered by ``sparse["jitter"]`` (std): how sparse scans were fed in training.
    Returns (resample_to, 3) float32."""
    unit = unit[rng.integers(len(unit), size=sparse["resample_to"])]
    return (unit + sparse["jitter"] * rng.standard_normal(unit.shape)).astype(np.float32)


def _bilinear_weights(source: int, target: int) -> np.ndarray:
    """Pillow's BILINEAR resampling along one axis as a (target, source) float64 matrix:
    a triangle filter widened by the scale when shrinking (antialiasing), each row
    normalised to sum 1."""
    scale = source / target
    support = max(scale, 1.0)
    centers = (np.arange(target) + 0.5) * scale
    lo = np.maximum(np.floor(centers - support + 0.5), 0).astype(int)
    hi = np.minimum(np.floor(centers + support + 0.5), source).astype(int)
    j = np.arange(source)
    weights = np.clip(1.0 - np.abs((j[None] - centers[:, None] + 0.5) / support), 0, None)
    weights[(j[None] < lo[:, None]) | (j[None] >= hi[:, None])] = 0.0
    return weights / weights.sum(axis=1, keepdims=True)


def resize_image(rgb: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (size, size, 3) uint8, resampled as Pillow's
    ``Image.resize((size, size), Image.BILINEAR)`` does: horizontal pass, then vertical,
    each rounded to 8 bits (within one level of Pillow's fixed-point arithmetic)."""
    h, w = rgb.shape[:2]
    # tensordot (BLAS) rather than einsum: 20x faster, and this runs for every training view.
    rows = np.tensordot(rgb.astype(np.float64), _bilinear_weights(w, size), axes=([1], [1]))
    rows = np.clip(np.round(rows), 0, 255)  # (h, c, size)
    out = np.tensordot(_bilinear_weights(h, size), rows, axes=([1], [0]))  # (size, c, size)
    out = np.clip(np.round(out), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(out.transpose(0, 2, 1))


def uniform_rotation(rng: np.random.Generator) -> np.ndarray:
    """A rotation (3, 3) float64 uniform on SO(3): the matrix of a unit quaternion drawn
    uniformly on the 3-sphere (four normal draws of ``rng``, normalised)."""
    w, x, y, z = (quaternion := rng.standard_normal(4)) / np.linalg.norm(quaternion)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


ROTATIONS_SEED = 7  # fixed: every request averages over the same copies
GRID_ROTATIONS = 24  # the cube's rotations, the turns of a voxel grid that need no resampling


def cube_rotations() -> np.ndarray:
    """(24, 3, 3) float32: the rotations that map the cube [-0.5, 0.5]^3 onto itself (the
    signed permutation matrices of determinant 1), the identity first, the others in an
    order shuffled by a fixed seed so that the first few differ in every axis."""
    turns = [np.diag(signs)[list(order)] for order in itertools.permutations(range(3))
             for signs in itertools.product((1, -1), repeat=3)]
    turns = [turn for turn in turns if np.linalg.det(turn) > 0]
    rest = np.random.default_rng(ROTATIONS_SEED).permutation(np.arange(1, len(turns)))
    return np.stack([turns[0]] + [turns[i] for i in rest]).astype(np.float32)


def input_rotations(count: int, grid: bool = False) -> np.ndarray:
    """(count, 3, 3) float32: the frames of the rotated copies an input is encoded in
    (``Settings.rotations``), the identity first. Point clouds: then count - 1 rotations
    uniform on SO(3) drawn from a fixed seed; voxel grids (``grid``): the first of
    ``cube_rotations``, which turn a grid exactly (at most ``GRID_ROTATIONS``)."""
    if grid:
        if count > GRID_ROTATIONS:  # requests are refused before this (ReconstructRequest)
            raise ValueError(f"a voxel grid has {GRID_ROTATIONS} rotations, not {count}")
        return cube_rotations()[:count]
    rng = np.random.default_rng(ROTATIONS_SEED)
    return np.stack([np.eye(3)] + [uniform_rotation(rng) for _ in range(count - 1)]
                    ).astype(np.float32)


def turn_grid(grid: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """The grid (..., n, n, n), indexed [x, y, z] over the cube [-0.5, 0.5]^3, of the solid
    turned by the cube rotation (3, 3) (``cube_rotations``): the voxel at centred index c
    takes the value at R^T c, so a point x of the old grid lies at R x in the new one,
    like the points x R^T of a turned cloud. Exact: axes permuted and flipped."""
    lead = grid.ndim - 3
    source = np.abs(rotation).argmax(axis=1)  # new axis r reads old axis source[r]
    turned = np.transpose(grid, tuple(range(lead)) + tuple(lead + int(a) for a in source))
    flips = tuple(lead + r for r in range(3) if rotation[r, source[r]] < 0)
    return np.ascontiguousarray(np.flip(turned, flips) if flips else turned)
