"""Multi-resolution isosurface extraction (MISE, Occupancy Networks paper, section 3.3).

The occupancy function is evaluated on a lattice over the padded cube, coarse to fine. Level
0 evaluates every point of the (r0 + 1)^3 lattice. Each further level doubles the resolution
and evaluates only the points of the cells ("parents") that the surface may cross: a parent
is subdivided when the evaluated points it touches (its corners, and any finer points on its
faces that a subdivided neighbour added) lie on both sides of the threshold. Subdividing
adds points on shared faces, which may in turn activate a neighbour, so the refinement
follows the surface (a thin rod attached to a body is traced cell by cell) until nothing
changes. Points never evaluated are filled by trilinear interpolation from the coarser level;
they lie in cells the surface does not cross, so their sign is right.

With a ``margin`` (logits), points whose sign is already certain are not evaluated either:
a new point whose trilinear value from the coarser level lies more than ``margin`` from the
threshold keeps that value (a cell whose corners are all confidently on one side needs no
refined points). Level 0 is then itself built coarse to fine, from a lattice of half the
resolution, so only its points near the surface are evaluated. Such points count as known
for the subdivision test, not as evaluated.

Everything is whole-array numpy: no Python loop over cells or points.
"""

from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import numpy as np

PADDING = 0.1
BOX_SIZE = 1.0 + PADDING  # the padded cube [-0.55, 0.55]^3


@dataclass
class MiseLevel:
    """The state of MISE after one level.

    values: (R + 1, R + 1, R + 1) float32 logits on the level's lattice, filled everywhere.
    evaluated: same shape, bool, True where the network was actually queried.
    """

    level: int
    resolution: int
    values: np.ndarray
    evaluated: np.ndarray
    evaluations: int  # network evaluations so far, all levels together
    skipped: int = 0  # points whose sign was certain and took their coarse value, so far


def lattice_to_unit(indices, resolution, dtype=np.float32):
    """Lattice coordinates (M, 3) of a resolution-R lattice (integer indices, or marching
    cubes' fractional vertices) -> unit-cube coordinates (M, 3) of ``dtype``.

    Index i maps to -0.55 + 1.1 * i / R; MISE and marching cubes share this mapping.
    """
    return (indices.astype(dtype) * dtype(BOX_SIZE / resolution) - dtype(BOX_SIZE / 2))


def dense_lattice(resolution):
    """All points of the (R + 1)^3 lattice as indices (M, 3) int64, x slowest."""
    axis = np.arange(resolution + 1)
    return np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)


def upsample(values):
    """Trilinear upsampling of a (n, n, n) lattice to (2n - 1)^3: the fill for new points."""
    n = values.shape[0]
    fine = np.empty((2 * n - 1,) * 3, dtype=values.dtype)
    fine[::2, ::2, ::2] = values
    fine[1::2, ::2, ::2] = 0.5 * (fine[:-1:2, ::2, ::2] + fine[2::2, ::2, ::2])
    fine[:, 1::2, ::2] = 0.5 * (fine[:, :-1:2, ::2] + fine[:, 2::2, ::2])
    fine[:, :, 1::2] = 0.5 * (fine[:, :, :-1:2] + fine[:, :, 2::2])
    return fine


def _cover(cells, axis):
    """Along one axis, OR of the 2n + 1 lattice points covered by n cells (a cell covers
    points 2i, 2i + 1, 2i + 2)."""
    n = cells.shape[axis]
    shape = list(cells.shape)
    shape[axis] = 2 * n + 1
    out = np.zeros(shape, dtype=bool)
    for offset in range(3):
        index = [slice(None)] * 3
        index[axis] = slice(offset, offset + 2 * n, 2)
        out[tuple(index)] |= cells
    return out


def _gather(points, axis, width):
    """Along one axis, OR over each cell's points: cell i of ``width`` lattice steps per cell
    takes points [width * i, width * i + width] (width 2: parents on a fine lattice; width 1:
    cells on their own lattice)."""
    n = (points.shape[axis] - 1) // width
    out = np.zeros(points.shape[:axis] + (n,) + points.shape[axis + 1:], dtype=bool)
    for offset in range(width + 1):
        index = [slice(None)] * 3
        index[axis] = slice(offset, offset + width * n, width)
        out |= points[tuple(index)]
    return out


def cell_points_mask(cells):
    """Fine-lattice points inside the closed cubes of the given parent cells.

    cells: (R, R, R) bool on the coarse cells. Returns (2R + 1)^3 bool: parent cell (i, j, k)
    covers fine points [2i, 2i + 2] x [2j, 2j + 2] x [2k, 2k + 2]. Separable: one axis at a time.
    """
    return _cover(_cover(_cover(cells, 0), 1), 2)


def _any_per_cell(points, width):
    return _gather(_gather(_gather(points, 0, width), 1, width), 2, width)


def straddling_parents(values, evaluated, threshold):
    """Parent cells whose evaluated fine points lie on both sides of the threshold.

    values, evaluated: (2R + 1)^3 fine lattice. Returns (R, R, R) bool.
    """
    inside = evaluated & (values >= threshold)
    outside = evaluated & (values < threshold)
    return _any_per_cell(inside, 2) & _any_per_cell(outside, 2)


def straddling_cells(values, evaluated, threshold):
    """Cells of a lattice whose evaluated corners lie on both sides of the threshold.

    values, evaluated: (R + 1)^3. Returns (R, R, R) bool.
    """
    inside = evaluated & (values >= threshold)
    outside = evaluated & (values < threshold)
    return _any_per_cell(inside, 1) & _any_per_cell(outside, 1)


# Level 0 is built from lattices down to this resolution (each half the next) when a margin
# is given: one halving only, since a coarser lattice's cells are wide enough that a thin
# part (a rod of a quarter cell) can sit between corners that all look confidently outside.
MIN_PRE_RESOLUTION = 16


def uncertain(values, threshold, margin):
    """Where a (trilinearly filled) logit is within ``margin`` of the threshold: bool array."""
    return np.abs(values - threshold) <= margin


def level_zero(evaluate, resolution, threshold, margin):
    """Level 0's lattice: (values (R + 1)^3, evaluated, evaluations, skipped).

    Without a margin every point is evaluated. With one, the half-resolution lattice is
    built first (recursively, down to MIN_PRE_RESOLUTION) and only the new points whose
    filled value is uncertain are evaluated; the others keep their trilinear value.
    """
    if margin is None or resolution % 2 or resolution // 2 < MIN_PRE_RESOLUTION:
        points = dense_lattice(resolution)
        values = np.asarray(evaluate(lattice_to_unit(points, resolution)), dtype=np.float32)
        values = values.reshape((resolution + 1,) * 3)
        return values, np.ones(values.shape, dtype=bool), values.size, 0
    coarse, coarse_evaluated, evaluations, skipped = level_zero(
        evaluate, resolution // 2, threshold, margin)
    values = upsample(coarse)
    evaluated = np.zeros(values.shape, dtype=bool)
    evaluated[::2, ::2, ::2] = coarse_evaluated
    new = np.ones(values.shape, dtype=bool)
    new[::2, ::2, ::2] = False
    todo = new & uncertain(values, threshold, margin)
    points = np.argwhere(todo)
    if len(points):
        values[tuple(points.T)] = evaluate(lattice_to_unit(points, resolution))
    evaluated |= todo
    return values, evaluated, evaluations + len(points), skipped + int(new.sum()) - len(points)


def mise(evaluate: Callable[[np.ndarray], np.ndarray], resolution0=32, upsampling_steps=2,
         threshold=0.0, margin: Optional[float] = None) -> Iterator[MiseLevel]:
    """Run MISE, yielding the state after every level (level 0 first).

    evaluate: maps unit-cube points (M, 3) float32 to logits (M,) float32. It may raise to
    stop early (cancellation); MISE keeps no state outside this generator.
    threshold: the iso level in logits.
    margin: logits; a new point whose filled value is further than this from the threshold
    is not evaluated (None: every point MISE visits is evaluated, the paper's algorithm).
    """
    if resolution0 < 1 or upsampling_steps < 0:
        raise ValueError("resolution0 must be >= 1 and upsampling_steps >= 0")
    if margin is not None and not margin >= 0:
        raise ValueError(f"margin must be None or >= 0 logits (got {margin})")
    resolution = resolution0
    values, evaluated, evaluations, skipped = level_zero(evaluate, resolution, threshold,
                                                         margin)
    known = np.ones(values.shape, dtype=bool)  # evaluated, or certain
    yield MiseLevel(0, resolution, values, evaluated, evaluations, skipped)

    for level in range(1, upsampling_steps + 1):
        parents = straddling_cells(values, known, threshold)
        resolution *= 2
        values = upsample(values)
        fine = np.zeros(values.shape, dtype=bool)
        fine[::2, ::2, ::2] = evaluated
        evaluated = fine
        fine = np.zeros(values.shape, dtype=bool)
        fine[::2, ::2, ::2] = known
        known = fine
        # Subdivide the parents, then the neighbours their new points activate, until none.
        # After the first pass only a small region changes, so work on its bounding box.
        new, corner = parents, np.zeros(3, dtype=int)
        while True:
            block = tuple(slice(2 * c, 2 * c + 2 * n + 1) for c, n in zip(corner, new.shape))
            todo = cell_points_mask(new) & ~known[block]
            points = np.argwhere(todo) + 2 * corner
            if not len(points):
                break
            if margin is not None:
                sure = ~uncertain(values[tuple(points.T)], threshold, margin)
                known[tuple(points[sure].T)] = True
                skipped += int(sure.sum())
                changed, points = points, points[~sure]
            else:
                changed = points
            if len(points):
                index = tuple(points.T)
                values[index] = evaluate(lattice_to_unit(points, resolution))
                evaluated[index] = True
                known[index] = True
                evaluations += len(points)
            # Only parents touching a new point can have changed: those around the points.
            corner = np.maximum((changed.min(axis=0) - 2) // 2, 0)
            end = np.minimum(changed.max(axis=0) // 2 + 1, resolution // 2)
            cells = tuple(slice(c, e) for c, e in zip(corner, end))
            block = tuple(slice(2 * c, 2 * e + 1) for c, e in zip(corner, end))
            new = straddling_parents(values[block], known[block], threshold) & ~parents[cells]
            if not new.any():
                break
            parents[cells] |= new
        yield MiseLevel(level, resolution, values, evaluated, evaluations, skipped)
