"""Mesh generation: encode once, run MISE with a batched decoder, mesh every level.

``Generator.frames`` yields one ``MeshFrame`` per MISE level (coarse to fine); the last one
is post-processed (enclosed voids filled, refinement, simplification, normals) and marked
final. Vertices are in the network's unit cube; ``backend.engine.pipeline`` maps them back to the
input's coordinates.
"""

import math
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import numpy as np

from . import meshing
from ..errors import Cancelled, UserError
from ..io.cards import DEFAULT_THRESHOLD
from .mise import mise
from .request import LIMITS, Settings
from .runtime import lerp, runtime_for
from .transforms import GRID_ROTATIONS, input_rotations, turn_grid

PAD_POINTS = 1024  # decoder chunks are padded to a multiple of this many points


@dataclass
class MeshFrame:
    """The mesh after one MISE level. vertices (V, 3) float32, faces (F, 3) int32."""

    level: int
    levels: int  # total number of levels, upsampling_steps + 1
    resolution: int
    vertices: np.ndarray
    faces: np.ndarray
    normals: Optional[np.ndarray]
    evaluations: int  # network evaluations so far
    seconds: float  # since frames() started, including encoding done before it
    network_seconds: float  # of which in the network forward (encoder and decoder)
    final: bool


@dataclass
class FitProgress:
    """After fitting step ``step`` of ``steps`` (1-based, ``engine/fit.py``): its loss,
    seconds since the fit began. Here, not in fit.py, so the flow's frames import without
    PyTorch."""

    step: int
    steps: int
    loss: float
    seconds: float


@dataclass
class ShapeCode:
    """A shape's conditioning, in the engine's arrays (torch tensors or numpy arrays):
    encoder output c (1, c_dim), ``{type: volume}`` for ConvONet models or a
    ``PointFeatures`` for point-latent ones, and latent z (1, z_dim)."""

    c: object
    z: object
    encode_seconds: float = 0.0
    # ``Settings.rotations``: (rotation (3, 3) float32, ShapeCode) of each further copy of
    # the input, encoded rotated by it (points x -> x R^T, grids turned alike); the field
    # is the mean over all.
    rotated: tuple = ()

    def blend(self, other, t):
        """The code at t in [0, 1] between two codes: c linearly (``runtime.lerp``: an
        array, each volume of a dict, or a code that interpolates itself with ``c.lerp`` or
        refuses with a UserError), z spherically (``slerp``: the Gaussian prior's samples
        lie near a shell, and lerp midpoints fall inside it). Exact at both ends. Codes with
        rotated copies blend copy by copy (the same count gives the same rotations)."""
        if len(self.rotated) != len(other.rotated):
            raise UserError(f"the two shapes were encoded with different rotations "
                            f"({len(self.rotated) + 1} and {len(other.rotated) + 1}); encode "
                            "both with the same")
        rotated = tuple((rotation, mine.blend(theirs, t)) for (rotation, mine), (_, theirs)
                        in zip(self.rotated, other.rotated))
        return ShapeCode(lerp(self.c, other.c, t), slerp(self.z, other.z, t), rotated=rotated)


SLERP_MIN_ANGLE = 1e-6  # radians: ends closer than this (or opposite) are lerped


def slerp(a, b, t):
    """Spherical linear interpolation of latent codes a, b ``(1, z_dim)`` (numpy arrays or
    torch tensors) at t in [0, 1] (Shoemake 1985; White 2016 for generative models)::

        slerp(a, b, t) = sin((1 - t) w) / sin w * a + sin(t w) / sin w * b,  cos w = a.b / |a||b|

    Two draws of N(0, I) in d dimensions have norms near sqrt(d) and are nearly orthogonal:
    their lerp midpoint has norm about sqrt(d / 2), a region the prior almost never draws
    (``python -m benchmarks slerp``); slerp keeps the norm. Computed in float64, returned
    as a's kind, dtype and device; t = 0 and t = 1 give a and b exactly. A zero end (the
    prior's mean, z_dim 0) or ends within ``SLERP_MIN_ANGLE`` of the same or opposite
    direction are lerped.
    """
    x, y = _float64(a), _float64(b)
    norms = np.linalg.norm(x) * np.linalg.norm(y)
    if norms == 0:
        return lerp(a, b, t)
    omega = math.acos(float(np.clip(x.dot(y) / norms, -1.0, 1.0)))
    if omega < SLERP_MIN_ANGLE or math.pi - omega < SLERP_MIN_ANGLE:
        return lerp(a, b, t)
    mixed = (math.sin((1 - t) * omega) * x + math.sin(t * omega) * y) / math.sin(omega)
    if isinstance(a, np.ndarray):
        return mixed.reshape(a.shape).astype(a.dtype)
    return a.new_tensor(mixed).reshape(a.shape)


def _float64(array) -> np.ndarray:
    """A code as a flat float64 numpy vector (from a numpy array or a torch tensor)."""
    if not isinstance(array, np.ndarray):
        array = array.detach().double().cpu().numpy()
    return np.asarray(array, np.float64).reshape(-1)


def logit(probability):
    return math.log(probability) - math.log1p(-probability)


class Generator:
    """Runs a model's encoder once per input and its decoder over MISE's queries."""

    def __init__(self, model, card, device="cpu", settings=None):
        """model: a torch module or a bundled-engine model (``runtime.runtime_for``
        picks the engine); device: where a torch model runs (the bundled engine: CPU)."""
        self.settings = settings or Settings()
        self.settings.validate()
        self.runtime = runtime_for(model, device, self.settings.precision)
        self.runtime.check(self.settings)
        self.device = self.runtime.device
        self.model = self.runtime.prepare_model(model)
        self.reads_grid = getattr(model, "input_kind", None) == "voxels"
        # A voxel model's field steps by tens of logits within a voxel (its grid is binary):
        # interpolated from a coarser lattice, a part one or two voxels thin looks certainly
        # outside and would be skipped (a knot's touching grid lost half its tube), while
        # its decoder is cheap enough to evaluate every point MISE asks for.
        self.certainty_margin = None if self.reads_grid else self.settings.certainty_margin
        threshold = self.settings.threshold
        if threshold is None:
            threshold = card.get("threshold", DEFAULT_THRESHOLD)
        self.threshold = float(threshold)
        smooth = self.settings.smooth_steps
        self.smooth_steps = int(card.get("smooth_steps", 0) if smooth is None else smooth)
        rotations = self.settings.rotations
        self.rotations = int(card.get("rotations", 1) if rotations is None else rotations)
        most = GRID_ROTATIONS if self.reads_grid else LIMITS.max_rotations
        if rotations is None and not 1 <= self.rotations <= most:  # requests are checked
            raise UserError(f"the model card's rotations must lie in [1, {most}] (got "
                            f"{self.rotations}); fix the card or send rotations")

    @property
    def precision_name(self) -> str:
        """The decoder's arithmetic: float32, bfloat16, float16."""
        return self.runtime.precision_name

    def encode(self, inputs, occupancies=None):
        """inputs: the model's input batch of one, (1, ...) numpy array (None for the
        unconditional model). Returns a ShapeCode.

        For a generative model, z is the prior's mean, or with ``occupancies`` (1, N) of the
        input points (1, N, 3) the mean of the posterior q(z | points, occupancies).
        """
        started = time.perf_counter()
        c, z = self.runtime.encode(self.model, inputs, occupancies)
        rotated = tuple(
            (rotation, ShapeCode(*self.runtime.encode(
                self.model, self._turn(inputs, rotation), occupancies)))
            for rotation in input_rotations(self.rotations, self.reads_grid)[1:])
        return ShapeCode(c, z, time.perf_counter() - started, rotated)

    def _turn(self, inputs, rotation):
        """The input batch of one turned by ``rotation`` (3, 3): points (1, N, 3) as x R^T,
        a voxel grid (1, [C,] n, n, n) by ``transforms.turn_grid``."""
        if self.reads_grid:
            return turn_grid(inputs, rotation)
        return np.ascontiguousarray(inputs @ rotation.T)

    def sample(self, seed):
        """A ShapeCode drawn from a generative model's prior: z ~ N(0, I) ``(1, z_dim)``
        from ``seed`` by numpy's generator (the same z on every engine and device), c the
        model's empty code ``(1, 0)``."""
        c, mean = self.runtime.encode(self.model, None)
        z = np.random.default_rng(int(seed)).standard_normal(mean.shape).astype(np.float32)
        return ShapeCode(c, z if isinstance(mean, np.ndarray) else mean.new_tensor(z))

    def decoder(self, code, exact=False):
        """Per-shape decoder in the engine's arrays: (N, 3) float32 -> logits (N,); in fp32
        when ``exact`` (normals, refinement). A code with rotated copies decodes to the mean
        of their logits, each copy queried in its own frame."""
        own = self.runtime.decoder(self.model, code.c, code.z, exact)
        if not code.rotated:
            return own
        copies = [(rotation.T, self.runtime.decoder(self.model, copy.c, copy.z, exact))
                  for rotation, copy in code.rotated]

        def mean(points):
            total = own(points)
            for turn, decoder in copies:
                total = total + decoder(points @ (turn if isinstance(points, np.ndarray)
                                                  else points.new_tensor(turn)))
            return total / (len(copies) + 1)

        return mean

    def evaluator(self, decoder, timer, should_stop=None):
        """Batched numpy wrapper: points (M, 3) float32 -> logits (M,) float32."""
        batch = self.settings.batch_points

        def evaluate(points):
            out = np.empty(len(points), dtype=np.float32)
            start = time.perf_counter()
            with self.runtime.inference():
                for i in range(0, len(points), batch):
                    if should_stop is not None and should_stop():
                        raise Cancelled()
                    chunk = points[i:i + batch]
                    size = len(chunk)
                    # Chunks padded to a multiple of PAD_POINTS: a few shapes only, so the math
                    # library's per-shape kernels and the allocator's blocks are reused
                    # instead of piling up over thousands of calls (tiling: 5 MB per tile).
                    padded = min(batch, -(-size // PAD_POINTS) * PAD_POINTS)
                    if padded > size:
                        chunk = np.concatenate([chunk, np.repeat(chunk[-1:], padded - size, 0)])
                    out[i:i + size] = self.runtime.run(decoder, chunk)[:size]
            timer[0] += time.perf_counter() - start
            if not np.isfinite(out).all():
                raise UserError(f"the model returned NaN or Inf at {(~np.isfinite(out)).sum():,}"
                                f" of {len(out):,} points; the checkpoint is broken or does"
                                " not fit this input")
            return out

        return evaluate

    def logits(self, code, points):
        """Logits (M,) float32 at unit-cube points (M, 3) in the settings' precision (fp32
        for parity checks against other implementations)."""
        timer = [0.0]
        return self.evaluator(self.decoder(code), timer)(
            np.ascontiguousarray(points, dtype=np.float32))

    def frames(self, code, should_stop: Optional[Callable[[], bool]] = None,
               started=None, support=None) -> Iterator[MeshFrame]:
        """Yield the mesh after every MISE level; the last frame is post-processed and final.

        should_stop: polled at every decoder batch; when it returns True, Cancelled is raised.
        started: perf_counter() time that ``seconds`` counts from (default: now).
        support: the input points (N, 3) float32 in the unit cube; with ``drop_floaters``
        every level's mesh loses the shells far from all of them (``meshing.drop_floaters``).
        """
        s = self.settings
        started = time.perf_counter() if started is None else started
        folding = time.perf_counter()
        decoder = self.decoder(code)  # per-shape network work: folds the CBN affines
        timer = [code.encode_seconds + time.perf_counter() - folding]
        evaluate = self.evaluator(decoder, timer, should_stop)
        threshold = logit(self.threshold)
        levels = s.upsampling_steps + 1
        empty = np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32)
        for state in mise(evaluate, s.start_resolution(), s.upsampling_steps, threshold,
                          self.certainty_margin):
            final = state.level == s.upsampling_steps
            values = state.values
            if final and s.fill_cavities:
                values = meshing.fill_enclosed(values, threshold)
            vertices, faces = (meshing.marching_cubes(values, threshold)
                               if final or s.mesh_every_level else empty)
            if s.drop_floaters and support is not None:
                vertices, faces = meshing.drop_floaters(vertices, faces, support)
            normals = None
            if final:
                vertices, faces, normals = self.postprocess(code, vertices, faces,
                                                            should_stop)
            yield MeshFrame(state.level, levels, state.resolution, vertices, faces, normals,
                            state.evaluations, time.perf_counter() - started, timer[0], final)

    def postprocess(self, code, vertices, faces, should_stop=None):
        """Smooth, refine, simplify and compute normals as the settings ask (refinement and
        normals in fp32, with gradients); should_stop is polled at every refinement step and
        normals batch."""
        s = self.settings
        if len(faces) == 0:
            return vertices, faces, None
        if self.smooth_steps:
            vertices = meshing.taubin(vertices, faces, self.smooth_steps)
        if s.refine_steps or s.normals:
            exact = self.decoder(code, exact=True)
        if s.refine_steps:
            vertices = self.runtime.refine(exact, vertices, faces, self.threshold,
                                           s.refine_steps, should_stop=should_stop)
        if s.simplify:
            vertices, faces = meshing.simplify(vertices, faces, s.simplify)
        normals = (self.runtime.normals(exact, vertices, should_stop=should_stop)
                   if s.normals else None)
        return vertices, faces, normals
