"""The decoder of Convolutional Occupancy Networks: query points + feature volumes -> logits.

Names follow the official ``LocalDecoder`` (``simple_local``) so its checkpoints load with
strict=True. ``LocalShapeDecoder`` is its per-shape inference hot path.
"""

import torch
from torch import nn
from torch.nn import functional as F

from ..onet.decoders import default_chunk_size
from ..layers import ResnetBlockFC
from .features import FEATURE_TYPES, normalize, sample
from .layout import N_BLOCKS

# The base field's initial gain: a blurred occupancy one voxel inside the surface (about
# 0.85) starts at logit 3.5.
BASE_SCALE = 10.0


def point_features(p, c, padding, mode, align):
    """Features of the volumes c ``{type: (B, C, R, ...)}`` at points ``(B, T, 3)``, summed
    over the volumes -> ``(B, T, C)``."""
    return sum(sample(c[kind], normalize(p, kind, padding), mode, align)
               for kind in FEATURE_TYPES if kind in c)


def cube_wall(p, scale, resolution):
    """Logits ``(...)`` of points ``(..., 3)`` that fall through 0 on the faces of the grid's
    cube [-0.5, 0.5]^3: ``scale`` per voxel of a ``resolution``^3 grid inside, below it
    outside."""
    return scale * resolution * (0.5 - p.abs().amax(-1))


def with_base(logits, base, p, scale, resolution):
    """The network's correction ``logits`` plus the base field ``base`` (both ``(...)``) at
    points ``p`` ``(..., 3)``, capped by ``cube_wall`` (see ``LocalDecoder``)."""
    return torch.minimum(logits + scale * (base - 0.5), cube_wall(p, scale, resolution))


class LocalDecoder(nn.Module):
    """forward(p ``(B, T, 3)``, c ``{type: volume}``) -> logits ``(B, T)``.

    With f the features sampled at p (``sample_mode`` "bilinear" — trilinear on a grid — or
    "nearest"; ``padding`` and ``sample_align`` as in ``local_features``)::

        net = fc_p(p);  for each block i: net = blocks[i](net + fc_c[i](f))
        logits = fc_out(relu(net))

    ``positions`` false drops ``fc_p`` (net starts at 0): the logits depend on the features
    alone, so a pattern means the same surface anywhere in the cube. ``base_field`` (model
    level): the volume's last channel b (``LocalVoxelEncoder``) is not a feature but a field
    the network corrects: ``logits += base_scale * (b - 0.5)``, so an untrained model already
    meshes the blurred grid and training learns what the blur gets wrong; and the logits are
    capped by ``cube_wall``: the voxels cover [-0.5, 0.5]^3, so nothing lies beyond it (the
    features, clamped at the border, cannot say so: a shape touching the outer voxels grew a
    blob out to the padded cube).
    """

    def __init__(self, c_dim=32, hidden_size=32, sample_mode="bilinear", padding=0.1,
                 sample_align="consistent", positions=True, base_field=False):
        super().__init__()
        self.fc_c = nn.ModuleList(nn.Linear(c_dim, hidden_size) for _ in range(N_BLOCKS))
        self.fc_p = nn.Linear(3, hidden_size) if positions else None
        self.blocks = nn.ModuleList(ResnetBlockFC(hidden_size) for _ in range(N_BLOCKS))
        self.fc_out = nn.Linear(hidden_size, 1)
        self.base_scale = nn.Parameter(torch.tensor(BASE_SCALE)) if base_field else None
        self.sampling = (padding, sample_mode, sample_align)

    def forward(self, p, c):
        f = point_features(p, c, *self.sampling)
        if self.base_scale is not None:
            f, base = f[..., :-1], f[..., -1]
        net = self.fc_c[0](f) if self.fc_p is None else self.fc_p(p) + self.fc_c[0](f)
        for i, block in enumerate(self.blocks):
            net = block(net if i == 0 else net + self.fc_c[i](f))
        logits = self.fc_out(F.relu(net)).squeeze(-1)
        if self.base_scale is not None:
            logits = with_base(logits, base, p, self.base_scale, c["grid"].size(-1))
        return logits


    @torch.no_grad()
    def shape_decoder(self, c, dtype=torch.float32):
        """The per-shape decoder of one shape's volumes c (batch 1), eval semantics."""
        if any(volume.size(0) != 1 for volume in c.values()):
            raise ValueError("shape_decoder takes one shape: c has volumes of shapes "
                             f"{[tuple(v.shape) for v in c.values()]}")
        return LocalShapeDecoder(self, c, dtype, default_chunk_size(self.fc_out.weight.device))


class LocalShapeDecoder:
    """One shape's decoder: ``f(points (N, 3)) -> logits (N,) float32``, equal to
    ``LocalDecoder.forward``.

    The five fc_c layers read the same features, so they run as one matmul; the residual
    stream's biases are folded into its columns (fc_p's into block 0's, block i's fc_1 bias
    into block i + 1's, the last block's into the output shift)::

        cols = f @ W_c.T + b_cols                        # (N, 5 * hidden), every fc_c at once
        x = p @ W_p.T + cols[0]                          # cols[0] without positions
        for block i:  x += relu(relu(x) @ W_0.T + b_0) @ W_1.T + cols[i + 1] (none after the last)
        logits = relu(x + shift) @ w_out + b_out   (+ base_scale * (b - 0.5), capped by
                                                    cube_wall, with base_field)

    Features are sampled in float32, the matmuls run in ``dtype``, the output layer in float32
    (as in ``decoders.ShapeDecoder``). Without autograd, points go through in chunks of
    ``chunk_size`` rows; points that require grad go through in one differentiable piece
    (double backward included). The weights and volumes are constants.
    """

    def __init__(self, decoder, c, dtype, chunk_size):
        self.dtype, self.chunk_size, self.sampling = dtype, chunk_size, decoder.sampling

        def const(t, to=dtype):  # a detached snapshot: later weight updates do not leak in
            return t.detach().to(to, copy=True)

        self.volumes = {kind: const(volume, torch.float32) for kind, volume in c.items()}
        self.hidden = decoder.fc_out.in_features
        biases = torch.stack([fc.bias for fc in decoder.fc_c])  # (5, hidden)
        if decoder.fc_p is not None:
            biases[0] += decoder.fc_p.bias
        biases[1:] += torch.stack([block.fc_1.bias for block in decoder.blocks[:-1]])
        self.w_c_t = const(torch.cat([fc.weight for fc in decoder.fc_c]).t())
        self.b_cols = const(biases.flatten())
        self.w_p_t = None if decoder.fc_p is None else const(decoder.fc_p.weight.t())
        self.base_scale = (None if decoder.base_scale is None
                           else float(decoder.base_scale.detach()))
        self.blocks = [(const(b.fc_0.weight.t()), const(b.fc_0.bias), const(b.fc_1.weight.t()))
                       for b in decoder.blocks]
        self.shift = const(decoder.blocks[-1].fc_1.bias)
        self.w_out = const(decoder.fc_out.weight[0], torch.float32)
        self.b_out = const(decoder.fc_out.bias, torch.float32)

    def __call__(self, points):
        if points.dim() != 2 or points.size(1) != 3:
            raise ValueError(f"points must be (N, 3), got {tuple(points.shape)}")
        points = points.float()
        if torch.is_grad_enabled() and points.requires_grad:
            return self._logits(points)
        logits = torch.empty(len(points), dtype=torch.float32, device=points.device)
        with torch.no_grad():
            for start in range(0, len(points), self.chunk_size):
                logits[start:start + self.chunk_size] = self._logits(
                    points[start:start + self.chunk_size])
        return logits

    def _logits(self, p):
        """Points ``(n, 3)`` float32 -> logits ``(n,)`` float32."""
        f = point_features(p[None], self.volumes, *self.sampling)[0]
        if self.base_scale is not None:
            f, base = f[:, :-1], f[:, -1]
        cols = torch.addmm(self.b_cols, f.to(self.dtype), self.w_c_t).split(self.hidden, dim=1)
        x = cols[0] if self.w_p_t is None else torch.addmm(cols[0], p.to(self.dtype),
                                                            self.w_p_t)
        for i, (w0_t, b0, w1_t) in enumerate(self.blocks):
            t = torch.addmm(b0, x.relu(), w0_t).relu()
            x = torch.addmm(x if i + 1 == len(self.blocks) else x + cols[i + 1], t, w1_t)
        h = (x + self.shift).relu()
        logits = torch.mv(h.float(), self.w_out) + self.b_out
        if self.base_scale is not None:
            logits = with_base(logits, base, p, self.base_scale, self.volumes["grid"].size(-1))
        return logits
