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
import torch

from . import meshing
from ..errors import UserError
from ..io.cards import DEFAULT_THRESHOLD
from .mise import mise
from .request import Settings


PAD_POINTS = 1024  # decoder chunks are padded to a multiple of this many points


from ..errors import Cancelled  # noqa: E402,F401  (generation.Cancelled, as before)


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


def _float(c):
    """A code c in float32: a tensor or a code with a ``float()`` method, or each volume of
    a ConvONet dict."""
    return {key: value.float() for key, value in c.items()} if isinstance(c, dict) else c.float()


@dataclass
class ShapeCode:
    """A shape's conditioning: encoder output c (1, c_dim), ``{type: volume}`` for ConvONet
    models or a ``PointFeatures`` for point-latent ones, and latent z (1, z_dim)."""

    c: object
    z: torch.Tensor
    encode_seconds: float = 0.0

    def lerp(self, other, t):
        """Linear interpolation between two codes, t in [0, 1]. A code that is neither a
        tensor nor a dict of them interpolates itself (``c.lerp``), or refuses with a
        UserError."""
        if isinstance(self.c, dict):
            c = {key: torch.lerp(value, other.c[key], t) for key, value in self.c.items()}
        else:
            c = self.c.lerp(other.c, t)
        return ShapeCode(c, torch.lerp(self.z, other.z, t))


def resolve_device(device="auto"):
    """'auto' picks CUDA when present; asking for CUDA without one is a UserError."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but PyTorch sees no CUDA GPU"
                        f" (torch {torch.__version__}); use --device cpu or install a CUDA build")
    if device not in ("cpu", "cuda"):
        raise UserError(f"device must be auto, cpu or cuda (got {device!r})")
    return torch.device(device)


def cpu_has_bf16():
    """Whether this CPU has native bf16 matrix instructions (AVX512-BF16 or AMX)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_dtype(precision, device):
    """Decoder matmul dtype. 'auto': bf16 where the hardware runs it natively, else fp32."""
    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_bf16() else torch.float32


def logit(probability):
    return math.log(probability) - math.log1p(-probability)


class Generator:
    """Runs a model's encoder once per input and its decoder over MISE's queries."""

    def __init__(self, model, card, device="cpu", settings=None):
        self.settings = settings or Settings()
        self.settings.validate()
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        threshold = self.settings.threshold
        if threshold is None:
            threshold = card.get("threshold", DEFAULT_THRESHOLD)
        self.threshold = float(threshold)
        self.dtype = resolve_dtype(self.settings.precision, self.device)

    @torch.no_grad()  # not inference_mode: refinement later differentiates through the code
    def encode(self, inputs, occupancies=None):
        """inputs: the model's input batch of one, (1, ...) tensor. Returns a ShapeCode.

        The encoder runs in the decoder's precision (autocast), the code is kept in fp32.
        For a generative model, z is the prior's mean, or with ``occupancies`` (1, N) of the
        input points (1, N, 3) the mean of the posterior q(z | points, occupancies).
        """
        started = time.perf_counter()
        inputs = inputs.to(self.device)
        with torch.autocast(self.device.type, self.dtype, enabled=self.dtype != torch.float32):
            c = _float(self.model.encode_inputs(inputs))
        z = self.model.prior_z(1).to(self.device)
        if occupancies is not None and getattr(self.model, "z_dim", 0):
            z, _ = self.model.infer_z(inputs, occupancies.to(self.device).float(), c)
        return ShapeCode(c, z.float(), time.perf_counter() - started)

    def decoder(self, code, dtype=None):
        """Per-shape decoder: (N, 3) float32 tensor -> logits (N,) float32."""
        return self.model.shape_decoder(code.c, code.z, dtype=dtype or self.dtype)

    def evaluator(self, decoder, timer, should_stop=None):
        """Batched numpy wrapper: points (M, 3) float32 -> logits (M,) float32.

        One call moves its points to the device once and its logits back once (on a GPU, one
        host round trip per MISE pass, not per batch); the batches run on the device.
        """
        batch = self.settings.batch_points

        def evaluate(points):
            start = time.perf_counter()
            with torch.inference_mode():
                queries = torch.from_numpy(points).to(self.device)
                logits = torch.empty(len(points), dtype=torch.float32, device=self.device)
                for i in range(0, len(points), batch):
                    if should_stop is not None and should_stop():
                        raise Cancelled()
                    chunk = queries[i:i + batch]
                    size = len(chunk)
                    # Chunks padded to a multiple of PAD_POINTS: a few shapes only, so the math
                    # library's per-shape kernels and the allocator's blocks are reused
                    # instead of piling up over thousands of calls (tiling: 5 MB per tile).
                    padded = min(batch, -(-size // PAD_POINTS) * PAD_POINTS)
                    if padded > size:
                        chunk = torch.cat([chunk, chunk[-1:].expand(padded - size, 3)])
                    logits[i:i + size] = decoder(chunk)[:size]
                out = logits.cpu().numpy()
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
               started=None) -> Iterator[MeshFrame]:
        """Yield the mesh after every MISE level; the last frame is post-processed and final.

        should_stop: polled at every decoder batch; when it returns True, Cancelled is raised.
        started: perf_counter() time that ``seconds`` counts from (default: now).
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
        for state in mise(evaluate, s.resolution0, s.upsampling_steps, threshold,
                          s.certainty_margin):
            final = state.level == s.upsampling_steps
            values = state.values
            if final and s.fill_cavities:
                values = meshing.fill_enclosed(values, threshold)
            vertices, faces = (meshing.marching_cubes(values, threshold)
                               if final or s.mesh_every_level else empty)
            normals = None
            if final:
                vertices, faces, normals = self.postprocess(code, vertices, faces,
                                                            should_stop)
            yield MeshFrame(state.level, levels, state.resolution, vertices, faces, normals,
                            state.evaluations, time.perf_counter() - started, timer[0], final)

    def postprocess(self, code, vertices, faces, should_stop=None):
        """Refine, simplify and compute normals as the settings ask (fp32, with gradients);
        should_stop is polled at every refinement step and normals batch."""
        s = self.settings
        if len(faces) == 0:
            return vertices, faces, None
        if s.refine_steps or s.normals:
            exact = self.decoder(code, torch.float32)
        if s.refine_steps:
            vertices = meshing.refine(exact, vertices, faces, self.threshold, s.refine_steps,
                                      self.device, should_stop=should_stop)
        if s.simplify:
            vertices, faces = meshing.simplify(vertices, faces, s.simplify)
        normals = (meshing.gradient_normals(exact, vertices, self.device,
                                            should_stop=should_stop) if s.normals else None)
        return vertices, faces, normals
