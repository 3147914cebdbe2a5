"""The two engines that run a model: PyTorch (``torch``) and numpy alone (``bundled``).

The reconstruct flow (``generation.Generator``, ``pipeline``, ``tiling``) is one path for
both: it hands numpy inputs to a runtime, which encodes them, builds the per-shape decoder
(points (N, 3) float32 -> logits (N,) float32, both numpy at the runtime's boundary) and
computes normals and refinement. ``TorchRuntime`` runs ``torch.nn.Module`` models on CPU or
CUDA in any precision, with autograd for normals and refinement; ``NumpyRuntime`` runs the
bundled models of ``backend.models.numpy_engine`` in float32 on the CPU, in any Python with
numpy (Blender's own), with finite-difference normals and no refinement.

``resolve_engine`` turns the ``engine`` option (CLI ``--engine``, server ``--engine``)
into one of the two: ``auto`` takes PyTorch when it can be imported, else the bundled one.
"""

from __future__ import annotations

import importlib.util
import logging
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np

from ..errors import Cancelled, UserError

logger = logging.getLogger(__name__)

ENGINES = ("auto", "torch", "bundled")
NORMAL_STEP = 1e-4  # finite-difference step of the bundled engine's normals, unit-cube units


def add_engine_options(parser) -> None:
    """``--engine`` and ``--device`` on an argparse parser: the CLI's and the server's (one
    name each)."""
    parser.add_argument("--engine", default="auto", choices=ENGINES,
                        help="torch: PyTorch (GPU, official .pt checkpoints); bundled: numpy "
                             "alone (the bundled models on the CPU, no PyTorch needed); auto "
                             "(default): torch when it can be imported, else bundled")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))


def torch_importable() -> bool:
    """Whether ``import torch`` can work here (found on the path; nothing is imported)."""
    return importlib.util.find_spec("torch") is not None


def resolve_engine(engine: str = "auto", device: str = "auto") -> str:
    """'torch' or 'bundled' for the ``engine`` option; UserError naming the fix when the
    choice cannot run (PyTorch missing, CUDA asked of the bundled engine)."""
    if engine not in ENGINES:
        raise UserError(f"engine must be one of {', '.join(ENGINES)} (got {engine!r})")
    if engine == "auto":
        engine = "torch" if torch_importable() or device == "cuda" else "bundled"
    if engine == "torch" and not torch_importable():
        raise UserError("--engine torch needs PyTorch, which this Python cannot import; "
                        "install it (or the add-on's backend environment) or use "
                        "--engine bundled")
    if engine == "bundled" and device == "cuda":
        raise UserError("the bundled engine runs on the CPU only; use --engine torch for "
                        "--device cuda")
    return engine


@dataclass(frozen=True)
class CpuDevice:
    """The bundled engine's device, shaped like the ``torch.device("cpu")`` callers print."""

    type: str = "cpu"

    def __str__(self) -> str:
        return self.type


def resolve_device(device: str = "auto", engine: str = "torch"):
    """The device of an engine: a ``torch.device`` ('auto' picks CUDA when present; CUDA
    without one is a UserError), or ``CpuDevice`` for the bundled engine."""
    if device not in ("auto", "cpu", "cuda"):
        raise UserError(f"device must be auto, cpu or cuda (got {device!r})")
    if engine == "bundled":
        if device == "cuda":
            raise UserError("the bundled engine runs on the CPU only; use --engine torch "
                            "for --device cuda")
        return CpuDevice()
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but PyTorch sees no CUDA GPU"
                        f" (torch {torch.__version__}); use --device cpu or install a CUDA build")
    return torch.device(device)


def cpu_has_bf16() -> bool:
    """Whether this CPU has native bf16 matrix instructions (AVX512-BF16 or AMX)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def model_engine(model) -> str:
    """The engine a loaded model runs on: 'bundled' for numpy models, else 'torch'."""
    return getattr(model, "engine", "torch")


def runtime_for(model, device, precision: str):
    """The runtime of a loaded model (``model_engine``) on ``device``."""
    if model_engine(model) == "bundled":
        return NumpyRuntime(precision)
    return TorchRuntime(device, precision)


def lerp(a, b, t: float):
    """(1 - t) a + t b of two codes: arrays, tensors, dicts of them or objects with
    ``lerp`` (a point-latent code refuses there). Exact at both ends: arrays are lerped
    from the nearer end, as ``torch.lerp`` does (a + (b - a) is not b in floating point)."""
    if isinstance(a, dict):
        return {key: lerp(value, b[key], t) for key, value in a.items()}
    if getattr(a, "shape", None) is not None and tuple(a.shape) != tuple(b.shape):
        raise UserError(f"the two shapes' codes differ in size ({tuple(a.shape)} and "
                        f"{tuple(b.shape)}): voxel grids read at their own size blend only "
                        "with grids of the same size; resample one of them")
    if isinstance(a, np.ndarray):
        a, b = a.astype(np.float32), b.astype(np.float32)
        if t < 0.5:
            return a + (b - a) * np.float32(t)
        return b - (b - a) * np.float32(1 - t)
    return a.lerp(b, t)


class TorchRuntime:
    """PyTorch models: inputs become tensors on ``device``; the decoder's matmuls run in the
    precision's dtype (``auto``: bf16 where the hardware runs it natively, else fp32)."""

    name = "torch"

    def __init__(self, device, precision: str):
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.dtype = self._dtype(precision)

    def _dtype(self, precision):
        torch = self.torch
        if precision in ("fp32", "bf16", "fp16"):
            return {"fp32": torch.float32, "bf16": torch.bfloat16,
                    "fp16": torch.float16}[precision]
        if self.device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_has_bf16() else torch.float32

    @property
    def precision_name(self) -> str:
        """The decoder's arithmetic as the CLI names it: float32, bfloat16, float16."""
        return str(self.dtype).replace("torch.", "")

    def check(self, settings):
        """Every setting runs on this engine."""

    def prepare_model(self, model):
        return model.to(self.device).eval()

    def encode(self, model, inputs, occupancies=None):
        """(c, z) of one input batch (1, ...) numpy (or None): the encoder under autocast
        to the decoder's dtype, the code in float32; z the prior's mean or, with
        occupancies (1, N) of the points, the posterior's mean."""
        torch = self.torch
        with torch.no_grad():  # not inference_mode: refinement differentiates through c
            tensor = None if inputs is None else torch.as_tensor(inputs).to(self.device)
            with torch.autocast(self.device.type, self.dtype,
                                enabled=self.dtype != torch.float32):
                c = model.encode_inputs(tensor)
            c = ({key: value.float() for key, value in c.items()} if isinstance(c, dict)
                 else c.float())
            z = model.prior_z(1).to(self.device)
            if occupancies is not None and getattr(model, "z_dim", 0):
                z, _ = model.infer_z(tensor, torch.as_tensor(occupancies).to(self.device)
                                     .float(), c)
        return c, z.float()

    def decoder(self, model, c, z, exact=False):
        """The per-shape decoder (torch in, torch out); fp32 when ``exact``."""
        return model.shape_decoder(c, z, dtype=self.torch.float32 if exact else self.dtype)

    def inference(self):
        return self.torch.inference_mode()

    def run(self, decoder, points: np.ndarray) -> np.ndarray:
        """Logits (M,) float32 of the decoder at points (M, 3) float32."""
        return decoder(self.torch.from_numpy(points).to(self.device)).float().cpu().numpy()

    def normals(self, decoder, vertices, should_stop=None):
        from . import meshing

        return meshing.gradient_normals(decoder, vertices, self.device,
                                        should_stop=should_stop)

    def refine(self, decoder, vertices, faces, threshold, steps, should_stop=None):
        from . import meshing

        return meshing.refine(decoder, vertices, faces, threshold, steps, self.device,
                              should_stop=should_stop)


class NumpyRuntime:
    """The bundled models (``backend.models.numpy_engine``): float32 on the CPU, numpy's
    BLAS threads; normals by central differences, no refinement (it needs autograd)."""

    name = "bundled"
    device = CpuDevice()
    precision_name = "float32"

    def __init__(self, precision: str):
        if precision not in ("auto", "fp32"):
            raise UserError(f"the bundled engine computes in fp32 (precision {precision!r} "
                            "needs the torch engine: --engine torch)")

    def check(self, settings):
        """Refuse, before any work, what this engine cannot do: refinement and fitting."""
        if settings.refine_steps:
            self.refine(None, None, None, None, settings.refine_steps)
        if settings.fit_steps:
            raise UserError("fit_steps needs the torch engine's gradients: use --engine torch "
                            "(or the add-on's backend environment), or set fit_steps to 0")

    def prepare_model(self, model):
        return model

    def encode(self, model, inputs, occupancies=None):
        c = model.encode_inputs(inputs)
        z = model.prior_z(1)
        if occupancies is not None and model.z_dim:
            z, _ = model.infer_z(inputs, np.asarray(occupancies, np.float32), c)
        return c, np.asarray(z, np.float32)

    def decoder(self, model, c, z, exact=False):
        return model.shape_decoder(c, z)

    def inference(self):
        return nullcontext()

    def run(self, decoder, points: np.ndarray) -> np.ndarray:
        return decoder(points)

    def normals(self, decoder, vertices, should_stop=None, batch_points=65536):
        """Outward unit normals (V, 3) float32: minus the normalised central-difference
        gradient of the logits (step ``NORMAL_STEP``), batch by batch."""
        normals = np.empty((len(vertices), 3), np.float32)
        steps = np.eye(3, dtype=np.float32) * np.float32(NORMAL_STEP)
        for start in range(0, len(vertices), batch_points):
            if should_stop is not None and should_stop():
                raise Cancelled()
            v = np.asarray(vertices[start:start + batch_points], np.float32)
            probes = np.concatenate([v[None] + steps[:, None], v[None] - steps[:, None]])
            logits = decoder(probes.reshape(-1, 3)).reshape(2, 3, len(v))
            grad = (logits[0] - logits[1]).T
            normals[start:start + len(v)] = -grad / (np.linalg.norm(grad, axis=1,
                                                                    keepdims=True) + 1e-10)
        return normals

    def refine(self, decoder, vertices, faces, threshold, steps, should_stop=None):
        raise UserError("refine_steps needs the torch engine's gradients: use --engine torch "
                        "(or the add-on's backend environment), or set refine_steps to 0")
