"""Point clouds of any size and extent: tiled reconstruction (ConvONet's sliding window).

A scene is covered by a grid of cubic tiles. Each tile is reconstructed from the points of
its *crop*: the tile grown on every side by ``overlap`` of the crop's edge, which the model
sees as its unit cube. The margin gives queries near a tile's faces the input on both sides,
so neighbouring tiles nearly agree there. Every tile runs MISE over its own block of one
global lattice; neighbours share their face planes, where the first tile's values are used
by both, and each tile is meshed by marching cubes with the sides facing neighbours left
open. Both neighbours then compute identical vertices on their shared plane, which are
welded: the mesh is closed wherever tiles meet by construction, with no seam to stitch.

Only models with local features (``model.local_features``, the ConvONet family) can be
tiled: a global ONet squeezes each crop into one vector and its tiles would not agree.

Memory is bounded per tile (at most ``max_points`` input points, one crop's feature planes,
one tile's MISE lattice) plus the face planes of one slab of tiles and the growing mesh; the
whole scene's lattice is never held (``TileGrid.lattice_bytes`` says what it would take).
"""

import math
import time
from dataclasses import dataclass
from typing import Callable, Generator, Optional

import numpy as np

from . import meshing
from .generation import Cancelled, logit
from .mise import BOX_SIZE, mise
from .transforms import resample_sparse, subset

CROP_HALF = 0.5  # input points within the model's unit cube, as in training
MARGIN = 0.05  # of the crop edge, around the cloud's bounding box: surfaces close inside
WELD_DIGITS = 6  # shared-plane vertices closer than 1e-6 cells are one (rounding differs)
DEFAULT_TILE_POINTS = 3000  # per crop, for cards that do not name an input size
EMPTY_BELOW = 10.0  # logits below the threshold given to tiles whose crop holds no points


@dataclass
class TileGrid:
    """Where the tiles and the global lattice lie, in the input's coordinates.

    Lattice point (i, j, k) sits at ``origin + (i, j, k) * spacing``; tile t (3 ints) covers
    lattice points ``t * cells ... (t + 1) * cells`` on each axis.
    """

    origin: np.ndarray  # (3,) float64
    tile: float  # edge of a tile (input units)
    crop: float  # edge of the model's unit cube around a tile (input units)
    counts: tuple  # tiles per axis
    cells: int  # lattice cells along a tile's edge

    @property
    def spacing(self) -> float:
        return self.tile / self.cells

    @property
    def shape(self) -> tuple:
        return tuple(n * self.cells + 1 for n in self.counts)

    @property
    def lattice_bytes(self) -> int:
        return 4 * math.prod(self.shape)

    def center(self, index) -> np.ndarray:
        """Centre (3,) float64 of tile ``index`` (3 ints)."""
        return self.origin + (np.asarray(index) + 0.5) * self.tile

    def indices(self):
        """Every tile's index, x slowest."""
        return list(np.ndindex(*self.counts))


def plan_tiles(points: np.ndarray, crop_size: float, overlap: float, cells: int) -> TileGrid:
    """Tiles over the bounding box of ``points`` (N, 3), grown by ``MARGIN * crop_size``.

    crop_size: the input-space edge that the model sees as its unit cube (about one object's
    size, as in training). overlap: the share of the crop on each side that is context only,
    in [0, 0.45]; a tile's edge is ``crop_size * (1 - 2 * overlap)``. cells: lattice cells
    along a tile's edge (MISE's finest resolution).
    """
    tile = crop_size * (1 - 2 * overlap)
    low, high = points.min(axis=0), points.max(axis=0)
    extent = high - low + 2 * MARGIN * crop_size
    counts = tuple(max(1, math.ceil(e / tile - 1e-9)) for e in extent)
    origin = (low + high) / 2 - np.asarray(counts) * tile / 2
    return TileGrid(origin.astype(np.float64), float(tile), float(crop_size), counts, cells)


@dataclass
class TiledResult:
    """The scene's mesh in the input's coordinates and what making it took."""

    vertices: np.ndarray  # (V, 3) float32
    faces: np.ndarray  # (F, 3) int32
    grid: TileGrid
    tiles_run: int  # tiles whose crop held points (the others are empty space)
    most_tile_points: int  # the largest number of points one crop was encoded from
    evaluations: int
    seconds: float


def crop_points(points: np.ndarray, grid: TileGrid, index, max_points: int,
                rng: np.random.Generator) -> np.ndarray:
    """The points of tile ``index``'s crop in the model's unit cube, (M, 3) float32, at most
    ``max_points`` of them (a random subset when there are more)."""
    unit = (points - grid.center(index)) / grid.crop
    unit = unit[np.all(np.abs(unit) <= CROP_HALF, axis=1)]
    if len(unit) > max_points:
        unit = unit[subset(len(unit), max_points, rng)]
    return unit.astype(np.float32)


@dataclass
class TileProgress:
    """``done`` of ``total`` tiles are reconstructed."""

    done: int
    total: int


def reconstruct_tiled(generator, card: dict, points: np.ndarray, crop_size: float,
                      overlap: float = 0.2, max_points: Optional[int] = None, seed: int = 0,
                      should_stop: Optional[Callable[[], bool]] = None
                      ) -> Generator[TileProgress, None, TiledResult]:
    """Mesh of a point cloud (N, 3) in its own coordinates, tile by tile (module docstring):
    yields a ``TileProgress`` after every tile and returns the ``TiledResult``
    (``result = yield from reconstruct_tiled(...)``). The caller has validated the options
    (``request.ReconstructRequest.validate``: a local-feature point-cloud model, bounded
    tile count).

    generator: a ``Generator`` of a local-feature point-cloud model; its settings give each
    tile's MISE resolutions, the threshold and the final simplification. card: the model's;
    its ``input_points`` is the default ``max_points`` per crop, and with ``sparse_inputs``
    sparser crops are resampled as in training (``transforms.resample_sparse``).
    should_stop is polled at every tile and decoder batch (raises ``Cancelled``).
    """
    max_points = max_points or card.get("input_points") or DEFAULT_TILE_POINTS
    sparse_inputs = card.get("sparse_inputs")
    started = time.perf_counter()
    settings = generator.settings
    grid = plan_tiles(points, crop_size, overlap,
                      settings.start_resolution() * 2 ** settings.upsampling_steps)
    threshold = logit(generator.threshold)
    # MISE's lattice spans the padded cube [-0.55, 0.55]^3; a tile spans tile / crop of the
    # model's unit cube, so MISE coordinates scale by this factor into the model's.
    to_model = np.float32(grid.tile / (BOX_SIZE * grid.crop))
    rng = np.random.default_rng(seed)
    faces_of_done, pieces = {}, []
    tiles, tiles_run, most_points, evaluations, timer = grid.indices(), 0, 0, 0, [0.0]
    for done, index in enumerate(tiles, 1):
        if should_stop is not None and should_stop():  # empty tiles run no decoder batch
            raise Cancelled()
        unit = crop_points(points, grid, index, max_points, rng)
        if len(unit) and sparse_inputs and len(unit) < sparse_inputs["resample_to"]:
            unit = resample_sparse(unit, sparse_inputs, rng)
        if len(unit):
            code = generator.encode(unit[None])
            evaluate = generator.evaluator(generator.decoder(code), timer, should_stop)
            for state in mise(lambda q: evaluate(q * to_model), settings.start_resolution(),
                              settings.upsampling_steps, threshold,
                              settings.certainty_margin):
                pass
            block = state.values
            tiles_run, most_points = tiles_run + 1, max(most_points, len(unit))
            evaluations += state.evaluations
        else:
            block = np.full((grid.cells + 1,) * 3, threshold - EMPTY_BELOW, np.float32)
        share_faces(block, index, grid.counts, faces_of_done)
        closed = [(t == 0, t == n - 1) for t, n in zip(index, grid.counts)]
        vertices, faces = meshing.block_marching_cubes(block, threshold, closed)
        pieces.append((vertices + np.asarray(index) * grid.cells, faces))
        yield TileProgress(done, len(tiles))
    if should_stop is not None and should_stop():
        raise Cancelled()
    vertices, faces = join_pieces(pieces, grid)
    vertices = (grid.origin + vertices * grid.spacing).astype(np.float32)
    if settings.fill_cavities:  # no whole lattice here: drop the voids' shells and contents
        vertices, faces = meshing.drop_void_shells(vertices, faces)
    if settings.simplify and len(faces):
        vertices, faces = meshing.simplify(vertices, faces, settings.simplify)
    return TiledResult(vertices, faces, grid, tiles_run, most_points, evaluations,
                       time.perf_counter() - started)


def tiled_result(steps: Generator[TileProgress, None, TiledResult]) -> TiledResult:
    """Run a ``reconstruct_tiled`` generator to its end, for callers that need no progress."""
    while True:
        try:
            next(steps)
        except StopIteration as end:
            return end.value


def share_faces(block: np.ndarray, index, counts, faces_of_done: dict) -> None:
    """Make neighbouring tiles agree on the lattice planes they share.

    Tiles run x slowest, so a tile's lower neighbours are done: its lower face planes are
    replaced by theirs (popped from ``faces_of_done``), and its upper face planes are kept
    there for the neighbours still to come. The first tile to compute a plane point wins,
    also on lines and corners shared by several tiles (every neighbour received it from
    the same first tile). At most one slab of tiles' face planes is kept at a time.
    """
    def plane(axis, position):
        return tuple(position if a == axis else slice(None) for a in range(3))

    for axis in range(3):
        if index[axis] > 0:
            below = tuple(t - (a == axis) for a, t in enumerate(index))
            block[plane(axis, 0)] = faces_of_done.pop((below, axis))
    # Only now, with all lower faces in place, do the upper faces hold their final values
    # (an upper face's edge lines lie in lower faces).
    for axis in range(3):
        if index[axis] < counts[axis] - 1:
            faces_of_done[(tuple(index), axis)] = block[plane(axis, -1)].copy()


def join_pieces(pieces, grid: TileGrid) -> tuple[np.ndarray, np.ndarray]:
    """One mesh from the tiles' pieces (vertices (V, 3) float64 in global lattice units):
    vertices on a plane between tiles are computed from the same values by both tiles, equal
    up to rounding (marching cubes may walk the edge from either end), so those equal to
    ``WELD_DIGITS`` decimals of a cell are welded. Returns vertices (V, 3) float64, faces
    (F, 3) int32."""
    offsets = np.cumsum([0] + [len(v) for v, _ in pieces])
    vertices = np.concatenate([v for v, _ in pieces]) if pieces else np.zeros((0, 3))
    faces = np.concatenate([f + o for (_, f), o in zip(pieces, offsets)]).astype(np.int64)
    if not len(faces):
        return np.zeros((0, 3)), np.zeros((0, 3), np.int32)
    inner_planes = np.zeros(len(vertices), bool)
    for axis, count in enumerate(grid.counts):
        x = vertices[:, axis]
        inner_planes |= (np.mod(x, grid.cells) == 0) & (x > 0) & (x < count * grid.cells)
    shared = np.flatnonzero(inner_planes)
    _, first, inverse = np.unique(vertices[shared].round(WELD_DIGITS), axis=0,
                                  return_index=True, return_inverse=True)
    remap = np.arange(len(vertices))
    remap[shared] = shared[first][inverse.ravel()]
    faces = remap[faces]
    used, faces = np.unique(faces, return_inverse=True)
    return vertices[used], faces.reshape(-1, 3).astype(np.int32)
