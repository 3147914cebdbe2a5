"""Fit to the scan: test-time refinement of a learned shape code to its own input points.

A learned prior gets topology, closure and the unseen sides right but, on shapes unlike its
training data, its surface drifts from the points it was given. ``fit`` optimises the
shape's own parameters (ONet: the code c and latent z; ConvONet: the feature planes or
grid; point latents: the per-point features; the decoder's weights stay fixed) for a
bounded number of Adam steps, with a self-supervised loss made of the input alone (after
SA-ConvONet, Tang et al. 2021, with the prior's normals instead of sign-agnostic training)::

    surface   mean_i (f(x_i) - logit(threshold))^2            the surface passes through x_i
    sides     BCE(f(x_i + d n_i), 0) + BCE(f(x_i - d n_i), 1)  outward is outside, inward inside
    prior     BCE(f(q_j), sigmoid(f0(q_j)))                     q_j: points far from the input

f is the field's logit, f0 the prior's (the unfitted code), n_i the prior's outward normal
at x_i (minus the normalised gradient of f0), d = ``SIDE_OFFSET`` and q_j uniform points
of the padded cube at least ``PRIOR_CLEARANCE`` from every input point, so regions no
point constrains (a scan's unseen side) stay as the prior made them. All in float32 with
autograd enabled locally (generation runs without); memory is bounded by ``BATCH`` points
of each term per step. A fit whose loss does not fall, or turns NaN, gives back the
unfitted code with a note.
"""

import logging
import math
import time
from dataclasses import dataclass, replace
from typing import Callable, Iterator, List, Optional

import numpy as np
import torch
from torch.nn import functional as F

from ..errors import Cancelled
from .generation import FitProgress, ShapeCode, logit
from .mise import PADDING

logger = logging.getLogger(__name__)

SIDE_OFFSET = 0.01  # d: displacement along the prior's normal, unit-cube units
PRIOR_CLEARANCE = 0.04  # prior points lie at least this far from every input point
PRIOR_POINTS = 8192  # uniform candidates drawn for the prior term (fewer survive)
BATCH = 2048  # at most this many input points (and prior points) per step
LEARNING_RATE = 0.01  # Adam, on the code's own scale (see _learning_rates); a card's
# ``fit_learning_rate`` overrides it (dense clouds pin the surface with more points and want
# smaller steps: README, "Fit to the scan")
COARSEN = 4  # feature planes and grids are fitted through offsets at 1/COARSEN resolution
WEIGHTS = {"surface": 1.0, "sides": 1.0, "prior": 1.0}


@dataclass
class FitResult:
    """The fitted code (or the unfitted one when the fit did not help), the loss before and
    after on the whole input, the steps taken, seconds and notes for the summary."""

    code: ShapeCode
    initial_loss: float
    final_loss: float
    steps: int
    seconds: float
    notes: List[str]
    applied: bool

    def summary(self) -> dict:
        """The summary's ``fit`` entry (JSON-ready)."""
        return {"steps": self.steps, "initial_loss": round(self.initial_loss, 6),
                "final_loss": round(self.final_loss, 6) if math.isfinite(self.final_loss)
                else None, "seconds": round(self.seconds, 4), "applied": self.applied}


class _Code:
    """A ShapeCode's optimisable parameters and the code rebuilt from them.

    Each part of the code (a feature volume, the global code, the per-point features, z)
    gets an additive offset, zero at first. A feature plane (1, C, R, R) or grid
    (1, C, R, R, R) gets its offset at R / ``COARSEN`` per axis, upsampled (bi/trilinear)
    to R: a point pulls on the texels of a whole neighbourhood, so the fitted surface stays
    smooth instead of following each noisy point texel by texel.
    """

    def __init__(self, code: ShapeCode):
        self.code = code
        c = code.c
        if isinstance(c, dict):
            self.keys = list(c)
            self.base = [c[key] for key in self.keys]
        elif isinstance(c, torch.Tensor):
            self.keys, self.base = None, [c]
        else:  # point latents: a PointFeatures, its features are the shape's parameters
            self.keys, self.base = None, [c.features]
        if code.z.numel():
            self.base.append(code.z)
        self.base = [t.detach().float() for t in self.base]
        self.leaves = [torch.zeros(_coarse_shape(t), device=t.device, requires_grad=True)
                       for t in self.base]

    def parts(self) -> List[torch.Tensor]:
        """The code's tensors: base + the (upsampled) offsets."""
        out = []
        for base, leaf in zip(self.base, self.leaves):
            if leaf.shape != base.shape:
                mode = "bilinear" if base.dim() == 4 else "trilinear"
                leaf = F.interpolate(leaf, size=base.shape[2:], mode=mode, align_corners=True)
            out.append(base + leaf)
        return out

    def build(self) -> ShapeCode:
        """The code with the current offsets applied."""
        parts = self.parts()
        z = parts[-1] if self.code.z.numel() else self.code.z
        c = self.code.c
        if isinstance(c, dict):
            c = dict(zip(self.keys, parts))
        elif isinstance(c, torch.Tensor):
            c = parts[0]
        else:
            c = replace(c, features=parts[0])
        return ShapeCode(c, z, self.code.encode_seconds)


def _coarse_shape(tensor: torch.Tensor) -> tuple:
    """The offset's shape of a code tensor: spatial axes of a plane (1, C, R, R) or grid
    (1, C, R, R, R) divided by ``COARSEN`` (at least 2), other tensors as they are."""
    if tensor.dim() not in (4, 5):
        return tuple(tensor.shape)
    return (*tensor.shape[:2], *(max(2, size // COARSEN) for size in tensor.shape[2:]))


class _Field:
    """Logits (M,) float32 of a code at fixed query points (M, 3), differentiable in the
    code. Point-latent decoders get their queries' neighbours once, not at every step."""

    def __init__(self, model, code: ShapeCode, queries: torch.Tensor):
        self.model, self.queries = model, queries
        self.index = None
        decoder = getattr(model, "decoder", None)
        if hasattr(decoder, "point_terms"):
            from ..models.poco.neighbours import knn

            with torch.no_grad():
                self.index = knn(queries[None], code.c.points.float(),
                                 min(decoder.k, code.c.points.size(1)))

    def __call__(self, code: ShapeCode, rows: torch.Tensor) -> torch.Tensor:
        """Logits at ``queries[rows]`` (rows: (m,) long) -> (m,) float32."""
        p = self.queries[rows]
        with torch.autocast(p.device.type, enabled=False):
            if self.index is None:
                return self.model.decode(p[None], code.z, code.c)[0].float()
            decoder, c = self.model.decoder, code.c
            return decoder.logits(p[None], self.index[:, rows], decoder.point_terms(c),
                                  c.scale.float())[0]


def outward_normals(model, code: ShapeCode, points: torch.Tensor,
                    batch: int = BATCH) -> torch.Tensor:
    """Unit outward normals (N, 3) of the code's field at points (N, 3): minus its
    normalised gradient (occupancy logits grow inwards), in batches of ``batch``."""
    normals = []
    with torch.inference_mode(False), torch.enable_grad(), \
            torch.autocast(points.device.type, enabled=False):
        for start in range(0, len(points), batch):
            p = points[start:start + batch].detach().clone().requires_grad_(True)
            logits = model.decode(p[None], code.z, code.c)[0]
            grad, = torch.autograd.grad(logits.sum(), p)
            normals.append(-F.normalize(grad, dim=1, eps=1e-12))
    return torch.cat(normals)


def prior_points(points: np.ndarray, rng: np.random.Generator,
                 count: int = PRIOR_POINTS) -> np.ndarray:
    """Uniform points (M, 3) float32 of the padded cube at least ``PRIOR_CLEARANCE`` from
    every input point (N, 3): where the input says nothing, M <= count."""
    from scipy.spatial import cKDTree

    half = 0.5 + PADDING / 2
    candidates = rng.uniform(-half, half, (count, 3)).astype(np.float32)
    distance, _ = cKDTree(points).query(candidates, k=1)
    return candidates[distance >= PRIOR_CLEARANCE]


def _learning_rates(leaves, rate: float) -> List[float]:
    """Per leaf: ``rate`` times the leaf's RMS value, so a step moves every kind of code
    (planes, a global vector, per-point features) by a like share of its size."""
    rates = []
    for leaf in leaves:
        rms = float(leaf.detach().pow(2).mean().sqrt()) if leaf.numel() else 0.0
        rates.append(rate * (rms if rms > 1e-6 else 1.0))
    return rates


def fit(model, code: ShapeCode, points, threshold: float, steps: int, device="cpu",
        seed: int = 0, should_stop: Optional[Callable[[], bool]] = None,
        learning_rate: Optional[float] = None) -> Iterator[FitProgress]:
    """Optimise ``code`` for ``steps`` Adam steps so its surface passes through ``points``
    (N, 3) float32 numpy, unit cube; ``threshold`` is the surface's occupancy probability,
    ``learning_rate`` the step's share of the code's size (None: ``LEARNING_RATE``). A code
    with rotated copies (``ShapeCode.rotated``) has each copy fitted on its own to the
    points in its frame, one after the other (``steps`` each).

    Yields a ``FitProgress`` per step (numbered over all copies) and returns (``yield
    from``) a ``FitResult``. should_stop is polled before every step (raises
    ``Cancelled``). Deterministic for a fixed seed on one device.
    """
    started = time.perf_counter()
    copies = [(None, replace(code, rotated=()))] + list(code.rotated)
    results = []
    for index, (rotation, copy) in enumerate(copies):
        frame = points if rotation is None else np.asarray(points, np.float32) @ rotation.T
        progress = _fit_one(model, copy, frame, threshold, steps, device, seed, should_stop,
                            learning_rate)
        while True:
            try:
                step = next(progress)
            except StopIteration as done:
                results.append(done.value)
                break
            yield replace(step, step=index * steps + step.step, steps=len(copies) * steps,
                          seconds=time.perf_counter() - started)
    if len(results) == 1:
        return results[0]
    first = results[0]
    rotated = tuple((rotation, result.code) for (rotation, _), result
                    in zip(copies[1:], results[1:]))
    return FitResult(replace(first.code, rotated=rotated),
                     float(np.mean([r.initial_loss for r in results])),
                     float(np.mean([r.final_loss for r in results])),
                     sum(r.steps for r in results), time.perf_counter() - started,
                     list(dict.fromkeys(note for r in results for note in r.notes)),
                     any(r.applied for r in results))


def _fit_one(model, code: ShapeCode, points, threshold: float, steps: int, device,
             seed: int, should_stop, learning_rate) -> Iterator[FitProgress]:
    """``fit`` of one code (no rotated copies)."""
    started = time.perf_counter()
    device = torch.device(device)
    points = np.ascontiguousarray(points, dtype=np.float32)
    rng = np.random.default_rng([seed, 16])
    prior = prior_points(points, rng)
    target = logit(threshold)
    x = torch.from_numpy(points).to(device)
    normals = outward_normals(model, code, x)
    n, m = len(x), len(prior)
    queries = torch.cat([x, x + SIDE_OFFSET * normals, x - SIDE_OFFSET * normals,
                         torch.from_numpy(prior).to(device)])
    field = _Field(model, code, queries)
    params = _Code(code)
    with torch.no_grad():
        prior_target = torch.sigmoid(field(code, torch.arange(3 * n, 3 * n + m,
                                                              device=device)))

    def terms(current: ShapeCode, surface_rows: torch.Tensor, prior_rows: torch.Tensor):
        """The loss terms (sums, not means) at input points ``surface_rows`` (k,) and prior
        points ``prior_rows`` (j,), indices into the input and the prior pool."""
        k = len(surface_rows)
        rows = torch.cat([surface_rows, surface_rows + n, surface_rows + 2 * n,
                          prior_rows + 3 * n])
        on, outside, inside, far = field(current, rows).split([k, k, k, len(prior_rows)])
        bce = F.binary_cross_entropy_with_logits
        wanted = prior_target[prior_rows]
        return {"surface": (on - target).pow(2).sum(),
                "sides": 0.5 * (bce(outside, torch.zeros_like(outside), reduction="sum")
                                + bce(inside, torch.ones_like(inside), reduction="sum")),
                # BCE minus its minimum (the target's entropy): 0 for the unfitted code
                "prior": (bce(far, wanted, reduction="sum")
                          - bce(wanted.logit(1e-6), wanted, reduction="sum"))}

    def loss_of(current: ShapeCode, surface_rows, prior_rows) -> torch.Tensor:
        """The weighted loss: each term's mean over its points."""
        sums = terms(current, surface_rows, prior_rows)
        counts = {"surface": len(surface_rows), "sides": len(surface_rows),
                  "prior": len(prior_rows)}
        return sum(WEIGHTS[name] * sums[name] / max(counts[name], 1) for name in sums)

    def whole_loss(current: ShapeCode) -> float:
        """The loss over every input and prior point, in batches of ``BATCH`` (no
        gradient)."""
        sums = dict.fromkeys(WEIGHTS, 0.0)
        with torch.no_grad():
            for start in range(0, max(n, m), BATCH):
                a = torch.arange(min(start, n), min(start + BATCH, n), device=device)
                b = torch.arange(min(start, m), min(start + BATCH, m), device=device)
                for name, value in terms(current, a, b).items():
                    sums[name] += float(value)
        counts = {"surface": n, "sides": n, "prior": m}
        return sum(WEIGHTS[name] * sums[name] / max(counts[name], 1) for name in sums)

    generator = torch.Generator().manual_seed(int(seed))
    initial = whole_loss(code)
    rates = _learning_rates(params.base,
                            LEARNING_RATE if learning_rate is None else learning_rate)
    optimiser = torch.optim.Adam([{"params": [leaf], "lr": rate} for leaf, rate in
                                  zip(params.leaves, rates)])
    run = 0  # steps taken: fewer than asked when the loss turned NaN or infinite
    with torch.inference_mode(False), torch.enable_grad():
        for step in range(1, steps + 1):
            if should_stop is not None and should_stop():
                raise Cancelled()
            surface_rows = _rows(n, generator, device)
            prior_rows = _rows(m, generator, device)
            loss = loss_of(params.build(), surface_rows, prior_rows)
            if not torch.isfinite(loss):
                break
            grads = torch.autograd.grad(loss, params.leaves)
            for leaf, grad in zip(params.leaves, grads):
                leaf.grad = grad
            optimiser.step()
            run = step
            yield FitProgress(step, steps, float(loss.detach()), time.perf_counter() - started)
    with torch.no_grad():
        fitted = params.build()
    final = whole_loss(fitted) if steps else initial
    notes = []
    applied = math.isfinite(final) and final < initial
    if not applied and steps:
        reason = "diverged (NaN)" if not math.isfinite(final) else (
            f"did not lower the loss ({initial:.4g} -> {final:.4g})")
        notes.append(f"the fit to the points {reason}; the mesh is the unfitted one")
        logger.info("fit rejected: %s", reason)
    return FitResult(fitted if applied else code, initial, final, run,
                     time.perf_counter() - started, notes, applied)


def _rows(count: int, generator: torch.Generator, device) -> torch.Tensor:
    """All of ``count`` indices when they fit in a batch, else ``BATCH`` drawn at random."""
    if count <= BATCH:
        return torch.arange(count, device=device)
    return torch.randperm(count, generator=generator)[:BATCH].to(device)
