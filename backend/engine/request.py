"""What one reconstruction asks for, under one set of names and one table of limits.

A ``ReconstructRequest`` names a source (an input, a ``Sample`` drawn from a generative
model's prior, or a ``Blend`` of two encoded shapes), a model, the MISE and output settings
(``generation.Settings``), optional tiling options, the decoder precision and a seed. Each
option has one name from Blender's property through the wire (docs/protocol.md) to the CLI
flag (``--resolution0``, ``--upsampling-steps``, ``--threshold``, ``--precision``,
``--normals``, ``--simplify``, ``--refine-steps``, ``--fit-steps``, ``--fill-cavities``,
``--tile-size``, ``--tile-overlap``, ``--tile-points``; a sample's ``--seed``; see
docs/design.md, "One request").

``ReconstructRequest.validate`` checks everything against ``Limits`` before any work starts;
the CLI and the server call it with the same table (the server may lower its entries).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from typing import Optional, Union

import numpy as np

from ..errors import LimitError, UserError
from ..io.binvox import MAX_VOXEL_DIM
from ..io.inputs import KIND_NAMES, MAX_IMAGE_PIXELS, MAX_POINTS, Input
from . import transforms
from .transforms import GRID_ROTATIONS

logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
MAX_SEED = 2**31 - 1  # a sample's seed: Blender's IntProperty is a signed 32-bit int

# MISE's default margin in logits (Settings.certainty_margin). 4 kept the paper-size ONet's
# lattice (IoU 1.0000 fp32) but not the bundled ConvONet's on the chair scan (IoU 0.936: thin
# legs); 8 keeps both (0.9998) and the point-latent model's (1.0000). README, "Benchmarks".
CERTAINTY_MARGIN = 8.0
# MISE's first lattice when a request leaves resolution0 unset ("auto",
# Settings.start_resolution), and the most auto gives a finer voxel grid read at its own size:
# a 64^3 grid then meshes at 256, four lattice cells a voxel as a 32^3 grid at 128, which
# raised the real meshes' F-score by 0.001 over 128 (README, "Finer grids at their own
# size").
DEFAULT_RESOLUTION0 = 32
MAX_AUTO_RESOLUTION0 = 64



@dataclass
class Settings:
    """What to generate. Resolutions follow the paper: finest R = resolution0 * 2^steps.

    Field names are the option names of the wire's ``mise`` and ``output`` objects and of
    the CLI flags (backend/engine/request.py).
    """

    resolution0: Optional[int] = None  # None: "auto" (start_resolution)
    upsampling_steps: int = 2
    threshold: Optional[float] = None  # probability; None means the model card's
    batch_points: int = 16384  # decoder batch: bounds memory (16k x 256 floats = 16 MB)
    precision: str = "auto"  # auto | fp32 | bf16 | fp16
    normals: bool = False
    simplify: Optional[int] = None  # decimate the final mesh to about this many faces
    refine_steps: int = 0
    fit_steps: int = 0  # optimise the shape code to the input points first (engine/fit.py)
    # Point clouds and voxel grids: the field is the mean over the input and rotations - 1
    # rotated copies of it (transforms.input_rotations), for models trained on rotated
    # shapes; 1: off; None: the model card's ``rotations`` (chosen on validation shapes),
    # else 1 (``Generator.rotations``).
    rotations: Optional[int] = None
    fill_cavities: bool = True  # final mesh: enclosed voids made solid (meshing.fill_enclosed)
    # Final mesh: Taubin (lambda, mu) pairs (meshing.taubin); None: the model card's
    # ``smooth_steps`` (chosen on validation shapes), else 0.
    smooth_steps: Optional[int] = None
    drop_floaters: bool = True  # point clouds: shells far from every input point are dropped
    mesh_every_level: bool = True  # False: coarse frames carry statistics but no mesh
    # Logits: MISE does not evaluate a point whose filled value is further than this from the
    # threshold (mise.mise's margin; None: the paper's MISE). Not a request option.
    certainty_margin: Optional[float] = CERTAINTY_MARGIN

    def start_resolution(self, grid: Optional[int] = None, max_resolution: int = 512) -> int:
        """MISE's first lattice: ``resolution0``, or when it is None ("auto")
        ``DEFAULT_RESOLUTION0``, or for a voxel grid read at its own size ``grid``^3 that size
        within [DEFAULT_RESOLUTION0, MAX_AUTO_RESOLUTION0] and, after upsampling_steps (of
        validated settings), within ``max_resolution``."""
        if self.resolution0 is not None:
            return self.resolution0
        if grid is None:
            return DEFAULT_RESOLUTION0
        fits = max_resolution >> self.upsampling_steps
        return max(DEFAULT_RESOLUTION0, min(grid, MAX_AUTO_RESOLUTION0, fits))

    def validate(self, max_resolution: int = 512):
        """Raise UserError naming the option for settings that cannot work, LimitError when
        the finest lattice is over ``max_resolution`` (the request's ``Limits``). Ranges
        (docs/protocol.md, "Ranges"): resolution0 None (auto) or in [2, max_resolution],
        upsampling_steps >= 0 with resolution0 * 2^steps <= max_resolution, threshold in
        (0, 1), simplify in [4, 2^31 - 1], refine_steps >= 0 (and <= Limits.max_refine_steps),
        fit_steps >= 0 (and <= Limits.max_fit_steps), rotations None or >= 1 (and <=
        Limits.max_rotations), smooth_steps None or >= 0 (and <= Limits.max_smooth_steps)."""
        if self.resolution0 is not None and not is_int(self.resolution0):
            raise UserError(f"resolution0 must be a whole number, or null for auto (got "
                            f"{self.resolution0!r})")
        for name in ("upsampling_steps", "refine_steps", "fit_steps"):
            if not is_int(getattr(self, name)):
                raise UserError(f"{name} must be a whole number (got {getattr(self, name)!r})")
        resolution0 = self.start_resolution()
        if self.rotations is not None and not is_int(self.rotations):
            raise UserError(f"rotations must be a whole number, or null for the model's own "
                            f"(got {short(self.rotations)})")
        if self.smooth_steps is not None and not (is_int(self.smooth_steps)
                                                  and self.smooth_steps >= 0):
            raise UserError(f"smooth_steps must be a whole number >= 0, or null for the "
                            f"model's own (got {short(self.smooth_steps)})")
        if resolution0 < 2:
            raise UserError(f"resolution0 must be at least 2 (got {resolution0})")
        if self.upsampling_steps < 0:
            raise UserError(f"upsampling_steps must be >= 0 (got {self.upsampling_steps})")
        if resolution0 > max_resolution:
            raise LimitError(f"resolution0 {short(resolution0)} is above the limit of "
                             f"{max_resolution} (the finest MISE lattice)")
        # Compared without computing 2^steps: a step count of 10^9 is a 10^9-bit number.
        if self.upsampling_steps > max(max_resolution, 1).bit_length() or \
                resolution0 << self.upsampling_steps > max_resolution:
            raise LimitError(f"finest resolution resolution0 x 2^upsampling_steps = "
                             f"{resolution0} x 2^{short(self.upsampling_steps)} is above "
                             f"the limit of {max_resolution}; lower resolution0 or "
                             "upsampling_steps")
        if self.threshold is not None and not (is_number(self.threshold)
                                               and 0.0 < self.threshold < 1.0):
            raise UserError(f"threshold is a probability in (0, 1) (got {self.threshold!r})")
        if self.precision not in PRECISIONS:
            raise UserError(f"precision must be auto, fp32, bf16 or fp16 (got {self.precision})")
        if self.simplify is not None and is_int(self.simplify) and self.simplify < 4:
            raise UserError("simplify needs a target of at least 4 faces")
        if self.simplify is not None and not (is_int(self.simplify)
                                              and 4 <= self.simplify <= MAX_FACES):
            raise UserError(f"simplify is a face count in [4, {MAX_FACES:,}] (got "
                            f"{short(self.simplify)})")
        if self.refine_steps < 0:
            raise UserError("refine_steps must be >= 0")
        if self.fit_steps < 0:
            raise UserError("fit_steps must be >= 0")
        if self.rotations is not None and self.rotations < 1:
            raise UserError(f"rotations must be at least 1 (1: the input as it is; got "
                            f"{short(self.rotations)})")


MAX_FACES = 2**31 - 1  # int32 face indices


def is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def short(value) -> str:
    """A number for a message: huge ones abbreviated (10^400 has 401 digits)."""
    if is_int(value) and abs(value) >= 10**15:
        return f"~10^{len(str(abs(value))) - 1}" if abs(value) < 10**4000 else "a huge number"
    return f"{value:g}" if isinstance(value, float) else str(value)


def as_float(value, name) -> float:
    """``value`` as a finite float, or UserError naming the option."""
    try:
        number = float(value) if is_number(value) else math.nan
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise UserError(f"{name} must be a finite number (got {short(value)})")
    return number


@dataclass(frozen=True)
class Limits:
    """What one request may ask for: the same table for the CLI and the server.

    Every entry is a server option (``--max-points`` ...); the defaults are what the CLI
    enforces. Memory at the limits: 10M points are 120 MB; a 513^3 lattice of logits 540 MB.
    """

    max_points: int = MAX_POINTS  # input points (tiled or not)
    max_voxel_dim: int = MAX_VOXEL_DIM  # edge of a voxel grid
    max_image_pixels: int = MAX_IMAGE_PIXELS
    max_resolution: int = 512  # finest MISE lattice, resolution0 * 2^upsampling_steps
    max_refine_steps: int = 1000  # gradient refinement steps of the final mesh
    max_tiles: int = 4096  # tiles of a tiled reconstruction
    max_fit_steps: int = 500  # steps fitting the shape code to the input points
    max_smooth_steps: int = 100  # Taubin pairs of the final mesh (each one pass over it)
    max_rotations: int = 16  # rotated copies of an input (each one encoding and decoding)

    def check_settings(self, settings: Settings) -> None:
        """UserError naming the option when MISE or output settings are out of range."""
        settings.validate(self.max_resolution)
        if settings.refine_steps > self.max_refine_steps:
            raise LimitError(f"refine_steps {short(settings.refine_steps)} is over the limit "
                             f"of {self.max_refine_steps} (max_refine_steps)")
        if settings.fit_steps > self.max_fit_steps:
            raise LimitError(f"fit_steps {short(settings.fit_steps)} is over the limit of "
                             f"{self.max_fit_steps} (max_fit_steps)")
        if (settings.rotations or 1) > self.max_rotations:
            raise LimitError(f"rotations {short(settings.rotations)} is over the limit of "
                             f"{self.max_rotations} (max_rotations)")
        if (settings.smooth_steps or 0) > self.max_smooth_steps:
            raise LimitError(f"smooth_steps {short(settings.smooth_steps)} is over the limit "
                             f"of {self.max_smooth_steps} (max_smooth_steps)")


LIMITS = Limits()


@dataclass(frozen=True)
class TilingOptions:
    """A large cloud reconstructed tile by tile (``tiling``): ``tile_size`` is the edge, in
    the input's units, that the model sees as its unit cube; ``tile_overlap`` the share of a
    crop on each side that is context only, in [0, 0.45]; ``tile_points`` the most input
    points per crop (None: the model's input size)."""

    tile_size: float
    tile_overlap: float = 0.2
    tile_points: Optional[int] = None


@dataclass
class EncodedShape:
    """A shape's code and where its unit cube sits in its input's coordinates:
    ``world = center + unit * scale`` (center (3,) float64); ``support``: the input points
    (N, 3) float32 in the unit cube (None for samples, voxels and images), which keep a
    blend's mesh to the shells a reconstruction of its input keeps (``drop_floaters``)."""

    model: str
    code: object  # generation.ShapeCode
    center: np.ndarray
    scale: float
    support: Optional[np.ndarray] = None


@dataclass
class Sample:
    """A shape drawn from a generative model's prior: z ~ N(0, I) from ``seed`` (a whole
    number in [0, MAX_SEED]; the same seed gives the same z on every device). It sits in
    the unit cube (center 0, scale 1)."""

    seed: int
    kind = "sample"  # what picks the default model (a card's ``default_for``)


@dataclass
class Blend:
    """The shape at ``t`` in [0, 1] between two encoded shapes of one model (either may be a
    ``Sample``'s code): conditional codes c are lerped, a latent z is slerped
    (``generation.slerp``)."""

    a: EncodedShape
    b: EncodedShape
    t: float


@dataclass
class ReconstructRequest:
    """One reconstruction: ``source`` is an input (``backend.io.inputs``), a ``Sample`` or a
    ``Blend``; ``model`` a model name (None: the default for the input's kind, or for
    sampling); ``occupancies`` (N,) bool labels of a point cloud's points, for a generative
    model's posterior."""

    source: Union[Input, Sample, Blend]
    model: Optional[str] = None
    settings: Settings = field(default_factory=Settings)
    tiling: Optional[TilingOptions] = None
    seed: int = 0
    occupancies: Optional[np.ndarray] = None

    @property
    def kind(self) -> Optional[str]:
        """The input's kind, "sample" for a sample, or None for a blend."""
        return getattr(self.source, "kind", None)

    @property
    def input_points(self) -> Optional[int]:
        """A point cloud's point count (which picks among size-bounded defaults), else None."""
        points = getattr(self.source, "points", None) if self.kind == "pointcloud" else None
        return None if points is None else len(points)

    def validate(self, model, limits: Limits = LIMITS) -> None:
        """UserError naming the option for anything that cannot work with ``model`` (the
        loaded module) or is over ``limits``: checked once, before any work starts. Settles
        an unset ``resolution0`` ("auto", ``Settings.start_resolution``) for this input and
        model: a voxel grid the model reads at its own size starts MISE at that size."""
        limits.check_settings(self.settings)
        if self.settings.resolution0 is None:
            native = self.kind == "voxels" and transforms.reads_native_grid(model)
            grid = len(self.source.occupancy) if native else None
            self.settings = replace(self.settings, resolution0=self.settings.start_resolution(
                grid, limits.max_resolution))
        if isinstance(self.source, Blend):
            if not (is_number(self.source.t) and 0 <= self.source.t <= 1):
                raise UserError(f"t must be in [0, 1] (got {self.source.t})")
        elif isinstance(self.source, Sample):
            seed = self.source.seed
            if not (is_int(seed) and 0 <= seed <= MAX_SEED):
                raise UserError(f"seed must be a whole number in [0, {MAX_SEED:,}] (got "
                                f"{short(seed) if is_number(seed) else repr(seed)})")
            check_generative(model)
        else:
            check_kind(self.kind, model)
        if self.occupancies is not None:
            points = getattr(self.source, "points", None)
            if points is None or self.occupancies.shape != (len(points),):
                raise UserError("occupancies must be (N,) labels of the N input points")
        if self.tiling is not None:
            self._check_tiling(model, limits)
        if self.settings.fit_steps:
            self._check_untiled_input("fit_steps", "fits the surface to input points", 0,
                                      ("pointcloud",))
        if (self.settings.rotations or 1) > 1:  # a card's own applies where it can
            self._check_untiled_input("rotations", "encodes rotated copies of the input", 1,
                                      ("pointcloud", "voxels"))
            if self.kind == "voxels" and self.settings.rotations > GRID_ROTATIONS:
                raise UserError(f"a voxel grid has {GRID_ROTATIONS} exact rotations; ask for"
                                f" at most that many (got rotations {self.settings.rotations})")

    def _check_untiled_input(self, option: str, what_it_does: str, off: int,
                             kinds: tuple) -> None:
        """UserError when an option that works on some input ``kinds`` only (fit_steps,
        rotations) is asked for with another input, a blend, or tiling."""
        if self.kind not in kinds:
            what = "a blend of two shapes" if self.kind is None else KIND_NAMES[self.kind]
            raise UserError(f"{option} {what_it_does}, and this input is {what}; leave "
                            f"{option} at {off} or send "
                            + " or ".join(KIND_NAMES[kind] for kind in kinds))
        if self.tiling is not None:
            raise UserError(f"{option} is not available with tiling; leave one of them out")

    def _check_tiling(self, model, limits: Limits) -> None:
        tiling, settings = self.tiling, self.settings
        tile_size = as_float(tiling.tile_size, "tile_size")
        if tile_size <= 0:
            raise UserError(f"tile_size must be a finite number > 0 (got {short(tile_size)})")
        overlap = as_float(tiling.tile_overlap, "tile_overlap")
        if not 0 <= overlap <= 0.45:
            raise UserError(f"tile_overlap is a share of the crop in [0, 0.45] (got "
                            f"{overlap:g})")
        if tiling.tile_points is not None and not (
                is_int(tiling.tile_points) and 1 <= tiling.tile_points <= limits.max_points):
            raise UserError(f"tile_points must be a whole number in [1, {limits.max_points:,}]"
                            f" (max_points) (got {short(tiling.tile_points)})")
        if self.kind != "pointcloud":
            raise UserError("tiling works on point clouds only; leave the tile size out for "
                            "this input")
        if settings.normals or settings.refine_steps:
            raise UserError("normals and refine_steps are not available with tiling; leave "
                            "them out")
        if not getattr(model, "local_features", False):
            raise UserError("tiling needs a model with local features (a ConvONet); this "
                            "model encodes the whole input into one vector. Choose a ConvONet"
                            " model or reconstruct without tiles")
        points = self.source.points
        edge = tile_size * (1 - 2 * overlap)
        extent = (points.max(axis=0) - points.min(axis=0)).astype(np.float64) + 0.1 * tile_size
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            per_axis = np.maximum(1.0, np.ceil(extent / edge))  # float: never a huge int
        tiles = float(np.prod(per_axis))
        if not math.isfinite(tiles) or tiles > limits.max_tiles:
            count = f"{int(tiles):,}" if tiles < 1e12 else "more than 10^12"
            raise LimitError(f"tile_size {tile_size:g} cuts this cloud into {count} tiles, "
                             f"over the limit of {limits.max_tiles:,} (max_tiles); use a "
                             "larger tile size (about one object's size)")


def check_generative(model) -> None:
    """UserError unless ``model`` can draw shapes from a prior: an unconditional model with a
    latent code (z_dim > 0; the ONet VAE)."""
    conditioned = getattr(model, "input_kind", None)
    if conditioned is not None:
        raise UserError(f"this model reconstructs from {KIND_NAMES[conditioned]} and has no "
                        "prior over shapes to sample from; choose a generative (VAE) model "
                        "such as the bundled default for sampling (leave the model out)")
    if not getattr(model, "z_dim", 0):
        raise UserError("this model has no latent code (z_dim 0), so there is no prior to "
                        "sample from; choose a generative (VAE) model such as the bundled "
                        "default for sampling (leave the model out)")


def check_kind(kind: Optional[str], model) -> None:
    """UserError when ``model`` is conditioned on another kind of input than ``kind``."""
    wanted = getattr(model, "input_kind", None)
    if wanted is not None and kind is not None and wanted != kind:
        raise UserError(f"this model reconstructs from {KIND_NAMES[wanted]}, but the input is"
                        f" {KIND_NAMES[kind]}; choose a {wanted} model")
