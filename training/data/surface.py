"""Surfaces of SDFs: narrow-band lattices, marching cubes, projection onto the zero level,
area-weighted sampling and a connectivity count.

All coordinates are in the SDF's units; ``origin`` (3,) and ``size`` place a lattice of
``(R + 1)^3`` points with index (i, j, k) at ``origin + size * (i, j, k) / R``.
"""

from __future__ import annotations

import itertools

import numpy as np

from .sdf import SDF

# Stand-in magnitude of lattice points that are never evaluated (far from the surface).
FAR = np.float32(1e3)

# Step of the tetrahedral finite differences (shape units); float32 SDFs are accurate to
# about 1e-7 here, so the gradient error is about 1e-7 / 5e-4 = 2e-4 relative.
GRADIENT_STEP = 5e-4
_TETRAHEDRON = np.array([[1, -1, -1], [-1, -1, 1], [-1, 1, -1], [1, 1, 1]], dtype=np.float32)


def near_cells(values: np.ndarray, cell: float) -> np.ndarray:
    """Cells ``(R, R, R) bool`` of a lattice of SDF values that may hold surface.

    A cell (edge ``cell``) passes when its nearest corner is within half a cell diagonal of
    the zero level. Every cell with surface within ``cell / 2`` of it passes, since such a
    surface point is at most half a diagonal from some corner and ``|sdf|`` is a lower bound
    of the distance; so cells that fail hold no surface.
    """
    a = np.abs(values)
    r = a.shape[0] - 1
    nearest = a[:-1, :-1, :-1]
    for i, j, k in itertools.product((0, 1), repeat=3):
        nearest = np.minimum(nearest, a[i:i + r, j:j + r, k:k + r])
    return nearest <= np.sqrt(3) / 2 * cell * 1.0001 + 1e-6


def lattice_values(sdf: SDF, resolution: int, origin, size: float,
                   coarse: int = 16) -> np.ndarray:
    """SDF values on the ``(R + 1)^3`` lattice, evaluated only in a narrow band.

    Starting from a dense ``coarse`` lattice, the ``near_cells`` are split level by level, so
    every edge of the final lattice that crosses the surface has both ends evaluated exactly
    (a surface point within half a final cell of a point lies within half a cell of every
    coarser cell holding that point). Points never evaluated keep the sign of their
    surface-free parent cell with magnitude ``FAR``. ``resolution`` must be
    ``coarse * 2^k``; ``origin`` (3,) is the corner of index (0, 0, 0).

    Returns ``(R + 1, R + 1, R + 1) float32``. Only 3-30% of it is evaluated, more for
    large surfaces and loose bounds.
    """
    origin = np.broadcast_to(np.asarray(origin, dtype=np.float32), (3,))[:, None]
    n = coarse
    index = np.stack(np.meshgrid(*[np.arange(n + 1)] * 3, indexing="ij")).reshape(3, -1)
    values = sdf.field(origin + index.astype(np.float32) * np.float32(size / n))
    values = values.reshape((n + 1,) * 3)
    while n < resolution:
        active = near_cells(values, size / n)
        n *= 2
        parent = np.arange(n + 1) // 2
        finer = np.where(values > 0, FAR, -FAR)[np.ix_(parent, parent, parent)]
        finer[::2, ::2, ::2] = values
        needed = np.zeros((n + 1,) * 3, dtype=bool)
        for i, j, k in itertools.product((0, 1, 2), repeat=3):
            needed[i:i + n:2, j:j + n:2, k:k + n:2] |= active
        needed[::2, ::2, ::2] = False
        index = np.nonzero(needed)
        finer[index] = sdf.field(origin + np.stack(index).astype(np.float32)
                                 * np.float32(size / n))
        values = finer
    return values


def outer_bounds(values: np.ndarray, origin, size: float) -> tuple[np.ndarray, np.ndarray]:
    """A box ``(lo (3,), hi (3,))`` guaranteed to contain the zero level of a lattice of SDF
    values: the bounds of its ``near_cells`` (larger by a few cells, more where the SDF is
    a loose bound)."""
    r = values.shape[0] - 1
    cells = np.nonzero(near_cells(values, size / r))
    if len(cells[0]) == 0:
        raise ValueError("the lattice holds no surface")
    lo = np.array([c.min() for c in cells])
    hi = np.array([c.max() + 1 for c in cells])
    if lo.min() == 0 or hi.max() == r:
        raise ValueError("the surface reaches the border of the lattice")
    origin = np.asarray(origin, dtype=np.float64)
    return origin + lo * size / r, origin + hi * size / r


def marching_cubes(values: np.ndarray, origin, size: float) -> tuple[np.ndarray, np.ndarray]:
    """Closed triangle mesh of the zero level of a lattice of SDF values (negative inside).

    Returns vertices ``(V, 3) float32`` in SDF units and faces ``(F, 3) int32``,
    counter-clockwise seen from outside. A shape cut by the lattice border is closed there.
    """
    import mcubes

    resolution = values.shape[0] - 1
    # mcubes takes inside as > level; the outside border closes every surface.
    padded = np.pad(-values, 1, mode="constant", constant_values=-FAR)
    vertices, faces = mcubes.marching_cubes(padded, 0.0)
    vertices = np.asarray(origin) + (vertices - 1) * (size / resolution)
    return vertices.astype(np.float32), faces.astype(np.int32)


def snap_to_surface(sdf: SDF, vertices: np.ndarray, origin, cell: float,
                    iterations: int = 10) -> np.ndarray:
    """Marching-cubes ``vertices (V, 3)`` moved to the SDF's zero crossing on their own
    lattice edge (``cell`` long, lattice corner at ``origin``), by bisection and a final
    secant step: on the surface to about ``cell / 2^iterations``, and still on their edges,
    so no triangle folds over (Newton steps can fold them at creases).
    Returns ``(V, 3) float32``.
    """
    index = (vertices.astype(np.float64) - np.asarray(origin, dtype=np.float64)) / cell
    rows = np.arange(len(index))
    axis = np.argmax(np.abs(index - np.round(index)), axis=1)  # the edge's direction
    start = np.round(index)
    start[rows, axis] = np.floor(index[rows, axis])
    a = np.asarray(origin) + start * cell
    b = a.copy()
    b[rows, axis] += cell
    fa, fb = sdf(a), sdf(b)
    on_edge = (fa < 0) != (fb < 0)  # else the vertex sits on a lattice point: keep it
    for _ in range(iterations):
        mid = (a + b) / 2
        fm = sdf(mid)
        left = (fm < 0) == (fa < 0)  # the crossing is in [mid, b]
        a[left], fa[left] = mid[left], fm[left]
        b[~left], fb[~left] = mid[~left], fm[~left]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.clip(fa / (fa - fb), 0, 1)[:, None]
    snapped = np.where(on_edge[:, None], a + t * (b - a), vertices)
    return snapped.astype(np.float32)


def value_and_gradient(sdf: SDF, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """SDF value ``(N,)`` and gradient ``(N, 3)`` at ``points (N, 3)``, all float32.

    Tetrahedral finite differences: four evaluations per point, error O(h^2) in both.
    """
    n = len(points)
    offsets = _TETRAHEDRON * np.float32(GRADIENT_STEP)
    q = (points[None, :, :] + offsets[:, None, :]).reshape(-1, 3)
    k = sdf(q).reshape(4, n)
    value = k.mean(axis=0)
    gradient = np.einsum("kn,kj->nj", k, _TETRAHEDRON) / np.float32(4 * GRADIENT_STEP)
    return value, gradient


def project(sdf: SDF, points: np.ndarray, steps: int = 2,
            max_step: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """Move ``points (N, 3)`` near the surface onto the zero level with Newton steps
    ``p -= f g / |g|^2``, each at most ``max_step`` long (the finite-difference gradient
    nearly vanishes on some creases, which would otherwise throw a point far away).

    Returns the projected points ``(N, 3) float32`` and unit outward normals ``(N, 3)``
    (the normalised gradient at the last step, a distance ``|f|`` from the returned point).
    """
    points = np.asarray(points, dtype=np.float32)
    for _ in range(steps):
        value, gradient = value_and_gradient(sdf, points)
        norm2 = np.maximum((gradient * gradient).sum(axis=1), 1e-12)
        length = np.abs(value) / np.sqrt(norm2)
        shrink = np.minimum(1, max_step / np.maximum(length, 1e-12))
        points = points - (shrink * value / norm2)[:, None] * gradient
    normals = gradient / np.sqrt(norm2)[:, None]
    return points, normals.astype(np.float32)


def sample_surface(vertices: np.ndarray, faces: np.ndarray, count: int,
                   rng: np.random.Generator) -> np.ndarray:
    """``count`` points ``(count, 3) float32`` uniformly distributed on the mesh by area."""
    corners = vertices[faces].astype(np.float64)  # (F, 3, 3)
    area = np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0],
                                   corners[:, 2] - corners[:, 0]), axis=1)
    face = rng.choice(len(faces), size=count, p=area / area.sum())
    u, v = rng.random((2, count))
    flip = u + v > 1  # fold the unit square onto the triangle
    u[flip], v[flip] = 1 - u[flip], 1 - v[flip]
    c = corners[face]
    points = c[:, 0] + u[:, None] * (c[:, 1] - c[:, 0]) + v[:, None] * (c[:, 2] - c[:, 0])
    return points.astype(np.float32)


def component_count(faces: np.ndarray, vertex_count: int) -> int:
    """Number of connected pieces of a mesh (vertices linked by edges; unused ones ignored)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]]])
    graph = coo_matrix((np.ones(len(edges), dtype=np.int8), (edges[:, 0], edges[:, 1])),
                       shape=(vertex_count, vertex_count))
    _, labels = connected_components(graph, directed=False)
    return len(np.unique(labels[np.unique(faces)]))
