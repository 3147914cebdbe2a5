"""The one reconstruct flow: a ``ReconstructRequest`` in, a stream of frames out.

``reconstruct`` serves the CLI, the server's worker and ``training.evaluate`` alike, for
whole, tiled, conditioned, sampled (drawn from a generative model's prior) and blended
(interpolated) sources: it prepares the input for the
model (``prepare``: the one place that knows how each input kind reaches the model's unit
cube and how meshes go back, docs/design.md "Coordinates"), encodes it once and yields

- ``TileProgress`` after each tile of a tiled request,
- ``MeshFrame`` per MISE level (tiled: one), vertices in the input's coordinates,
- ``Finished`` last: the summary that the CLI prints and the server sends as "final".
"""

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator, List, Optional, Union

import numpy as np

from . import transforms
from ..errors import UserError
from ..io.inputs import VOXELISATIONS
from .generation import FitProgress, Generator, MeshFrame
from .image_view import model_view
from .request import Blend, EncodedShape, ReconstructRequest, Sample, check_kind
from .tiling import TileProgress, reconstruct_tiled

logger = logging.getLogger(__name__)


# Input points a cloud keeps beyond the encoder's subsample, for the fit, the floater test
# and a blend's floaters (1.2 MB; the server caches ``ServiceLimits.max_latents``
# encodings): larger clouds keep a random subset of this size.
SUPPORT_POINTS = 100_000


@dataclass
class Prepared:
    """A model's input batch of one (numpy; each engine converts it) and where its unit cube
    sits in the input's coordinates: ``world = center + unit * scale`` (center (3,)
    float64, scale in the input's units)."""

    inputs: Optional[np.ndarray]
    center: np.ndarray
    scale: float
    notes: List[str] = field(default_factory=list)
    occupancies: Optional[np.ndarray] = None  # (1, N) float32 0/1 labels of the points
    # (N, 3) float32 unit-cube input points, unjittered: the whole cloud (at most
    # SUPPORT_POINTS), not only the encoder's subsample, for the fit and the floater test
    points: Optional[np.ndarray] = None

    def to_world(self, vertices):
        """Unit-cube vertices (V, 3) -> the input's coordinates, (V, 3) float32."""
        return transforms.denormalize(vertices, self.center, self.scale).astype(np.float32)


def prepare(inp, model, card, seed=0, occupancies=None) -> Prepared:
    """Turn a PointCloudInput / VoxelInput / ImageInput into the model's input array.

    occupancies: (N,) bool labels of a cloud's points (generative models), kept in step
    with the points through any subsampling (``Prepared.occupancies``).
    """
    check_kind(inp.kind, model)
    if inp.kind == "pointcloud":
        return prepare_points(inp.points, card, seed, occupancies)
    if inp.kind == "voxels":
        return prepare_voxels(inp.occupancy, inp.translate, inp.scale, inp.voxelisation,
                              reads_voxelisation(model), transforms.reads_native_grid(model))
    return prepare_image(inp.rgba)


def prepare_points(points, card, seed=0, occupancies=None):
    """Normalise (N, 3) points into the unit cube; subsample to the card's input size (the
    one subsampling of an input cloud, drawn from ``seed``).

    A model trained on sparse scans resampled with fresh noise (card ``sparse_inputs``:
    ``{"resample_to": n, "jitter": std in unit-cube units}``) gets a sparser cloud the same
    way: drawn with replacement to n points, each copy jittered.
    """
    notes = []
    rng = np.random.default_rng(seed)
    limit = card.get("input_points")
    cloud = points
    if limit and len(points) > limit:
        keep = transforms.subset(len(points), limit, rng)
        notes.append(f"subsampled {len(points)} points to the model's {limit}")
        points = points[keep]
        occupancies = None if occupancies is None else occupancies[keep]
    unit, center, scale = transforms.normalize_points(points)
    if len(cloud) > len(points):  # the fit and the floater test take every point the
        # encoder could not (README, "Dense clouds"), at most SUPPORT_POINTS of them
        if len(cloud) > SUPPORT_POINTS:
            cloud = cloud[transforms.subset(len(cloud), SUPPORT_POINTS,
                                            np.random.default_rng([seed, 1]))]
        support = ((np.asarray(cloud, np.float64) - center) / scale).astype(np.float32)
    else:
        support = unit
    sparse = card.get("sparse_inputs")
    if sparse and len(unit) < sparse["resample_to"]:
        notes.append(f"resampled {len(unit)} points to {sparse['resample_to']} with jitter "
                     f"{sparse['jitter']}, as the model was trained on sparse scans")
        if occupancies is not None:
            raise UserError(f"a cloud of {len(unit)} points with occupancies cannot be "
                            f"resampled to this model's {sparse['resample_to']}; send more")
        resampled = transforms.resample_sparse(unit, sparse, rng)
    else:
        resampled = unit
    labels = None if occupancies is None else np.asarray(occupancies, np.float32)[None]
    return Prepared(np.ascontiguousarray(resampled, np.float32)[None], center, scale, notes,
                    labels, support)


def reads_voxelisation(model) -> bool:
    """Whether a voxel model's encoder takes the grid's rule (``voxelisation_input``)."""
    encoder = (getattr(model, "config", None) or {}).get("encoder") or {}
    return bool(encoder.get("voxelisation_input"))


def prepare_voxels(occupancy, translate, scale, voxelisation=VOXELISATIONS[0],
                   reads_rule=False, native=False):
    """(n, n, n) bool grid -> (1, m, m, m) float32, or with ``reads_rule`` (the model
    takes the grid's ``voxelisation``) ``(1, 2, m, m, m)`` (``transforms.voxel_channels``);
    meshes go back to the grid's frame. m is 32, or with ``native`` (the model reads any
    grid at its own size) n itself up to 128 (``transforms.grid_size``): resampling a finer
    grid to 32^3 loses its detail and shifts its surface by a quarter of a voxel.

    A model without the rule was trained on grids of every voxel the surface touches: it
    takes a centres grid too, with a note that its surface comes out small.
    """
    notes = []
    n = occupancy.shape[0]
    size = transforms.grid_size(n, native)
    if n != size:
        notes.append(f"resampled the {n}^3 grid to {size}^3")
        occupancy = transforms.resample_voxels(occupancy, size)
    if reads_rule:
        inputs = transforms.voxel_channels(occupancy, voxelisation)
    else:
        inputs = occupancy.astype(np.float32)
        if voxelisation != VOXELISATIONS[0]:
            notes.append(f"this model was trained on {VOXELISATIONS[0]} grids (every voxel the "
                         f"surface passes through); a {voxelisation} grid comes out about half "
                         "a voxel small: pick a model that reads the voxelisation")
    center, size = transforms.voxel_world_transform(translate, scale)
    return Prepared(inputs[None], center, size, notes)


def prepare_image(rgba):
    """(H, W, 4) uint8 -> (1, 3, 224, 224) float32 in [0, 1]: the object cut out by its
    alpha (or a foreground estimate), centred and scaled as in training renders, on white
    (``image_view.model_view``).

    Images carry no coordinates: the mesh stays in the unit cube.
    """
    view = model_view(rgba)
    array = view.rgb.astype(np.float32).transpose(2, 0, 1) / 255.0
    return Prepared(np.ascontiguousarray(array)[None], np.zeros(3), 1.0, view.notes)


def to_world(frame: MeshFrame, prepared: Prepared) -> MeshFrame:
    """The frame with vertices in the input's coordinates (normals survive: scale is uniform)."""
    return replace(frame, vertices=prepared.to_world(frame.vertices))


@dataclass
class Finished:
    """The end of a reconstruction: the final mesh's frame and the summary fields shared by
    the CLI's ``--json`` and the server's "final" frame (JSON-ready)."""

    frame: MeshFrame
    summary: dict


Frame = Union[TileProgress, FitProgress, MeshFrame, Finished]


def encode(request: ReconstructRequest, name: str, model, card,
           device="cpu") -> tuple[EncodedShape, list[str]]:
    """A request's shape code and unit-cube placement, for caching and blending (an input's
    encoding or a sample's draw), and the notes on how the input was prepared."""
    generator = Generator(model, card, device, request.settings)
    code, prepared = source_code(request, generator, model, card)
    return (EncodedShape(name, code, prepared.center, prepared.scale, prepared.points),
            prepared.notes)


def source_code(request: ReconstructRequest, generator: Generator, model,
                card) -> tuple[object, Prepared]:
    """The ShapeCode of a request's (untiled) source and where its unit cube sits: an input
    encoded once, a sample drawn from the prior (in the unit cube) or a blend of two codes."""
    if isinstance(request.source, Blend):
        return _blend(request.source)
    if isinstance(request.source, Sample):
        return generator.sample(request.source.seed), Prepared(None, np.zeros(3), 1.0)
    prepared = prepare(request.source, model, card, request.seed, request.occupancies)
    return generator.encode(prepared.inputs, prepared.occupancies), prepared


def reconstruct(request: ReconstructRequest, model, card, device="cpu",
                should_stop: Optional[Callable[[], bool]] = None) -> Iterator[Frame]:
    """Run one validated request (``request.validate(model)``) with a loaded model and its
    card; should_stop is polled at every fitting step and decoder batch (raises
    ``generation.Cancelled``). With ``fit_steps``, the code is first fitted to the input
    points (``fit.fit``: a FitProgress per step)."""
    started = time.perf_counter()
    if request.tiling is not None:  # tiles are encoded as they are (a card's rotations too)
        generator = Generator(model, card, device, replace(request.settings, rotations=1))
        yield from _tiled(request, generator, card, started, should_stop)
        return
    generator = Generator(model, card, device, request.settings)
    code, prepared = source_code(request, generator, model, card)
    fitted = None
    if request.settings.fit_steps:
        from .fit import fit  # PyTorch's autograd: the torch engine only (runtime.check)

        fitted = yield from fit(generator.model, code, prepared.points, generator.threshold,
                                request.settings.fit_steps, generator.device, request.seed,
                                should_stop, card.get("fit_learning_rate"))
        code = fitted.code
        prepared.notes.extend(fitted.notes)
    for frame in generator.frames(code, should_stop, started, prepared.points):
        frame = to_world(frame, prepared)
        yield frame
    lattice = (frame.resolution + 1) ** 3
    sampled = {"seed": request.source.seed} if isinstance(request.source, Sample) else {}
    yield Finished(frame, {
        "vertices": len(frame.vertices), "faces": len(frame.faces),
        "evaluations": frame.evaluations, "resolution": frame.resolution,
        "lattice": f"{frame.resolution + 1}^3",
        "dense_fraction": round(frame.evaluations / lattice, 4),
        "threshold": generator.threshold, "smooth_steps": generator.smooth_steps,
        "precision": generator.precision_name, "engine": generator.runtime.name,
        "seconds": round(time.perf_counter() - started, 4), "notes": prepared.notes,
        **sampled, **({"fit": fitted.summary()} if fitted else {}),
        **({"rotations": generator.rotations} if generator.rotations > 1 else {})})


def _blend(blend: Blend):
    """The code at ``blend.t`` (``ShapeCode.blend``: c lerped, z slerped) and its placement:
    the unit cube moves linearly with t too, and the floaters are judged by the input
    points of the ends that take part (t = 0: A's, t = 1: B's, between: both), so both ends
    are exact."""
    a, b, t = blend.a, blend.b, float(blend.t)
    ends = [shape.support for shape, weight in ((a, 1 - t), (b, t))
            if weight > 0 and shape.support is not None]
    place = Prepared(None, (1 - t) * a.center + t * b.center, (1 - t) * a.scale + t * b.scale,
                     points=np.concatenate(ends) if ends else None)
    return a.code.blend(b.code, t), place


def _tiled(request, generator, card, started, should_stop) -> Iterator[Frame]:
    """Tile by tile (``tiling``): a TileProgress per tile, then the scene as one frame."""
    options = request.tiling
    result = yield from reconstruct_tiled(generator, card, request.source.points,
                                          options.tile_size, options.tile_overlap,
                                          options.tile_points, request.seed, should_stop)
    seconds = time.perf_counter() - started
    grid = result.grid
    frame = MeshFrame(0, 1, grid.cells, result.vertices, result.faces, None,
                      result.evaluations, seconds, seconds, True)
    yield frame
    yield Finished(frame, {
        "vertices": len(frame.vertices), "faces": len(frame.faces),
        "evaluations": result.evaluations, "resolution": grid.cells,
        "lattice": "x".join(map(str, grid.shape)),
        "dense_fraction": round(result.evaluations / int(np.prod(grid.shape)), 4),
        "threshold": generator.threshold, "precision": generator.precision_name,
        "engine": generator.runtime.name,
        "seconds": round(seconds, 4), "notes": [],
        "tiles": list(grid.counts), "tiles_run": result.tiles_run,
        "most_tile_points": result.most_tile_points,
        "lattice_mb": round(grid.lattice_bytes / 2**20, 1)})
