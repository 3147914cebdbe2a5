"""Marching cubes in numpy alone, the triangles PyMCubes gives (its table: ``mc_table``).

The bundled engine meshes with this where PyMCubes has no wheel (Python 3.13, Blender
5.1+); ``meshing`` uses it whenever PyMCubes cannot be imported. Vertices are where the
lattice's edges cross the level (linear interpolation, one vertex per crossed edge, shared
by the faces around it), in lattice index units; tests/test_marching.py checks the meshes
against PyMCubes'.
"""

import logging

import numpy as np

logger = logging.getLogger(__name__)

# A cube's corners as (di, dj, dk) offsets, bit i of a case; its edges as corner pairs.
CORNERS = ((0, 0, 0), (1, 0, 0), (1, 1, 0), (0, 1, 0),
           (0, 0, 1), (1, 0, 1), (1, 1, 1), (0, 1, 1))
EDGES = ((0, 1), (1, 2), (3, 2), (0, 3), (4, 5), (5, 6), (7, 6), (4, 7),
         (0, 4), (1, 5), (2, 6), (3, 7))


def _tables():
    """(counts (256,) triangles per case, edges (256, 5, 3) int64 edge ids, origin (12, 3)
    offset of each edge's first corner, axis (12,) the axis it runs along)."""
    from .mc_table import TRIANGLES

    counts = np.array([len(t) for t in TRIANGLES], np.int64)
    edges = np.zeros((256, max(counts), 3), np.int64)
    for case, tris in enumerate(TRIANGLES):
        if tris:
            edges[case, :len(tris)] = tris
    origin = np.array([CORNERS[a] for a, _ in EDGES], np.int64)
    axis = np.array([np.flatnonzero(np.subtract(CORNERS[b], CORNERS[a]))[0]
                     for a, b in EDGES], np.int64)
    return counts, edges, origin, axis


def marching_cubes(values: np.ndarray, level: float):
    """Mesh of ``values == level`` on an (X, Y, Z) lattice, inside where values > level
    (as PyMCubes): vertices (V, 3) float64 in index units, faces (F, 3) int64. The surface
    is open where it meets the lattice's border (pad with outside values to close it)."""
    values = np.asarray(values, np.float64)
    shape = np.array(values.shape)
    if values.ndim != 3 or (shape < 2).any():
        return np.zeros((0, 3)), np.zeros((0, 3), np.int64)
    counts, edges, origin, axis = _tables()
    inside = values > level
    cells = tuple(shape - 1)
    case = np.zeros(cells, np.int64)
    for bit, (di, dj, dk) in enumerate(CORNERS):
        case |= inside[di:di + cells[0], dj:dj + cells[1], dk:dk + cells[2]].astype(
            np.int64) << bit
    case = case.ravel()
    active = np.flatnonzero(counts[case])
    if not len(active):
        return np.zeros((0, 3)), np.zeros((0, 3), np.int64)
    per_cell = counts[case[active]]
    cell = np.repeat(active, per_cell)
    first = np.repeat(np.cumsum(per_cell) - per_cell, per_cell)
    local = edges[case[cell], np.arange(len(cell)) - first]  # (F, 3) edge ids 0..11
    corner = np.stack(np.unravel_index(cell, cells), axis=1)  # (F, 3) cell's low corner
    start = corner[:, None, :] + origin[local]  # (F, 3, 3) first lattice point of each edge
    key = (np.ravel_multi_index(tuple(start.reshape(-1, 3).T), values.shape) * 3
           + axis[local].ravel())
    unique, faces = np.unique(key, return_inverse=True)
    point = np.stack(np.unravel_index(unique // 3, values.shape), axis=1)
    along = unique % 3
    step = np.eye(3, dtype=np.int64)[along]
    v0 = values[tuple(point.T)]
    v1 = values[tuple((point + step).T)]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(v1 != v0, (level - v0) / (v1 - v0), 0.5)
    vertices = point + t[:, None] * step
    return vertices, faces.reshape(-1, 3)
