"""Occupancy decoders: query points ``(B, T, 3)`` plus codes z and c -> logits ``(B, T)``.

``DecoderCBatchNorm`` is the conditional ONet decoder, ``Decoder`` the plain one of the
unconditional (VAE) ONet; names follow im2mesh ``onet/models/decoder.py``. Both can also be
folded for one shape into a ``ShapeDecoder`` (see ``shape_decoder``): the inference hot path.
"""

import torch
from torch import nn
from torch.nn import functional as F

from ..layers import CBatchNorm1d, CBatchNorm1dLegacy, CResnetBlockConv1d, ResnetBlockFC


class ShapeDecoder:
    """One shape's decoder reduced to plain tensors: ``f(points (N, 3)) -> logits (N,) float32``.

    Both decoders become the same computation once c and z are fixed and batch norm uses its
    running statistics::

        x = points @ w_p.T                                  # residual stream, minus constants
        for each block:  h = relu(scale0 * x + shift0)      # (conditional) batch norm + relu
                         t = relu(h @ w0.T + b0)            # fc_0 with bn_1 folded in
                         x += t @ w1.T                      # fc_1, bias moved into the shifts
        logits = relu(scale * x + shift) @ w_out.T + b_out

    Every per-shape constant is computed once, in float32, then cast to ``dtype`` (matmuls
    run in that dtype, e.g. bfloat16 on CPUs with AVX512-bf16). Without autograd, points go
    through in chunks of ``chunk_size`` rows that reuse three buffers, which keeps the working
    set in cache and allocates nothing per layer. Points that require grad (normals,
    refinement) take a plain differentiable path instead, double backward included.
    """

    def __init__(self, w_p, blocks, scale, shift, w_out, b_out, dtype, chunk_size):
        self.dtype = dtype
        self.chunk_size = chunk_size

        def const(t, to=dtype):  # a detached snapshot: later weight updates do not leak in
            return t.detach().to(to, copy=True)

        self.w_p_t = const(w_p.t())
        self.blocks = [(const(s0), const(t0), const(w0.t()), const(b0), const(w1.t()))
                       for s0, t0, w0, b0, w1 in blocks]
        self.scale, self.shift = const(scale), const(shift)
        # The output layer stays float32: bf16 logits would be rounded to steps of ~0.008,
        # which marching cubes would turn into a staircase.
        self.w_out, self.b_out = const(w_out[0], torch.float32), const(b_out, torch.float32)

    def __call__(self, points):
        if points.dim() != 2 or points.size(1) != 3:
            raise ValueError(f"points must be (N, 3), got {tuple(points.shape)}")
        if torch.is_grad_enabled() and points.requires_grad:
            return self._differentiable(points.to(self.dtype))
        with torch.no_grad():
            return self._chunked(points.to(self.dtype))

    def _chunked(self, points):
        n_total, hidden = points.size(0), self.w_p_t.size(1)
        logits = torch.empty(n_total, dtype=torch.float32, device=points.device)
        rows = min(self.chunk_size, n_total)
        x_buf, h_buf, t_buf = (points.new_empty(rows, hidden) for _ in range(3))
        for start in range(0, n_total, self.chunk_size):
            p = points[start:start + self.chunk_size]
            x, h, t = x_buf[: len(p)], h_buf[: len(p)], t_buf[: len(p)]
            torch.mm(p, self.w_p_t, out=x)
            for scale0, shift0, w0_t, b0, w1_t in self.blocks:
                torch.addcmul(shift0, x, scale0, out=h).relu_()
                torch.addmm(b0, h, w0_t, out=t).relu_()
                x.addmm_(t, w1_t)
            torch.addcmul(self.shift, x, self.scale, out=h).relu_()
            logits[start:start + len(p)] = torch.mv(h.float(), self.w_out) + self.b_out
        return logits

    def _differentiable(self, points):
        x = points @ self.w_p_t
        for scale0, shift0, w0_t, b0, w1_t in self.blocks:
            h = torch.addcmul(shift0, x, scale0).relu()
            x = torch.addmm(x, torch.addmm(b0, h, w0_t).relu(), w1_t)
        h = torch.addcmul(self.shift, x, self.scale).relu()
        return torch.mv(h.float(), self.w_out) + self.b_out


def default_chunk_size(device):
    # Small chunks stay in the CPU cache; a GPU wants large launches instead.
    return 4096 if device.type == "cpu" else 65536


def _check_one_shape(c, z):
    if c.size(0) != 1 or z.size(0) != 1:
        raise ValueError(f"shape_decoder takes one shape: c {tuple(c.shape)}, z {tuple(z.shape)}")


class DecoderCBatchNorm(nn.Module):
    """Conditional-batch-norm decoder: 5 residual blocks of width ``hidden_size``.

    forward(p ``(B, T, 3)``, z ``(B, z_dim)``, c ``(B, c_dim)``) -> logits ``(B, T)``.
    ``legacy`` selects the paper-era Linear gamma/beta layers (``fc_gamma``/``fc_beta``).
    """

    def __init__(self, c_dim=256, z_dim=0, hidden_size=256, legacy=False):
        super().__init__()
        self.z_dim = z_dim
        if z_dim != 0:
            self.fc_z = nn.Linear(z_dim, hidden_size)
        self.fc_p = nn.Conv1d(3, hidden_size, 1)
        self.block0 = CResnetBlockConv1d(c_dim, hidden_size, legacy=legacy)
        self.block1 = CResnetBlockConv1d(c_dim, hidden_size, legacy=legacy)
        self.block2 = CResnetBlockConv1d(c_dim, hidden_size, legacy=legacy)
        self.block3 = CResnetBlockConv1d(c_dim, hidden_size, legacy=legacy)
        self.block4 = CResnetBlockConv1d(c_dim, hidden_size, legacy=legacy)
        self.bn = (CBatchNorm1dLegacy if legacy else CBatchNorm1d)(c_dim, hidden_size)
        self.fc_out = nn.Conv1d(hidden_size, 1, 1)

    def _blocks(self):
        return (self.block0, self.block1, self.block2, self.block3, self.block4)

    def forward(self, p, z, c):
        net = self.fc_p(p.transpose(1, 2))
        if self.z_dim != 0:
            net = net + self.fc_z(z).unsqueeze(2)
        for block in self._blocks():
            net = block(net, c)
        return self.fc_out(F.relu(self.bn(net, c))).squeeze(1)

    @torch.no_grad()
    def shape_decoder(self, c, z, dtype=torch.float32):
        """Fold this decoder for one shape (c ``(1, c_dim)``, z ``(1, z_dim)``), eval semantics.

        Each CBN becomes ``scale * x + shift`` (gamma, beta and the running statistics
        combined); bn_1's affine goes into fc_0 (``relu(a * (W x + b) + s) =
        relu((a W) x + (a b + s))``). The additive constants of the residual stream (fc_p's
        bias, fc_z(z), every fc_1 bias) are carried in ``offset`` and added to the next
        shift instead, so a residual update is one in-place matmul-accumulate.
        """
        _check_one_shape(c, z)
        offset = self.fc_p.bias + (self.fc_z(z)[0] if self.z_dim != 0 else 0)
        blocks = []
        for block in self._blocks():
            scale0, shift0 = (v[0] for v in block.bn_0.folded(c))
            scale1, shift1 = (v[0] for v in block.bn_1.folded(c))
            w0 = scale1[:, None] * block.fc_0.weight.squeeze(2)
            b0 = scale1 * block.fc_0.bias + shift1
            blocks.append((scale0, shift0 + scale0 * offset, w0, b0, block.fc_1.weight.squeeze(2)))
            offset = offset + block.fc_1.bias
        scale, shift = (v[0] for v in self.bn.folded(c))
        return ShapeDecoder(
            self.fc_p.weight.squeeze(2), blocks, scale, shift + scale * offset,
            self.fc_out.weight.squeeze(2), self.fc_out.bias, dtype,
            default_chunk_size(c.device),
        )


class Decoder(nn.Module):
    """Plain decoder of the unconditional/VAE ONet: codes are added to the point features.

    forward(p ``(B, T, 3)``, z ``(B, z_dim)``, c ``(B, c_dim)``) -> logits ``(B, T)``;
    ``fc_z``/``fc_c`` exist only for non-zero ``z_dim``/``c_dim``.
    """

    def __init__(self, c_dim=0, z_dim=128, hidden_size=128):
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.fc_p = nn.Linear(3, hidden_size)
        if z_dim != 0:
            self.fc_z = nn.Linear(z_dim, hidden_size)
        if c_dim != 0:
            self.fc_c = nn.Linear(c_dim, hidden_size)
        self.block0 = ResnetBlockFC(hidden_size)
        self.block1 = ResnetBlockFC(hidden_size)
        self.block2 = ResnetBlockFC(hidden_size)
        self.block3 = ResnetBlockFC(hidden_size)
        self.block4 = ResnetBlockFC(hidden_size)
        self.fc_out = nn.Linear(hidden_size, 1)

    def _blocks(self):
        return (self.block0, self.block1, self.block2, self.block3, self.block4)

    def forward(self, p, z, c):
        net = self.fc_p(p)
        if self.z_dim != 0:
            net = net + self.fc_z(z).unsqueeze(1)
        if self.c_dim != 0:
            net = net + self.fc_c(c).unsqueeze(1)
        for block in self._blocks():
            net = block(net)
        return self.fc_out(F.relu(net)).squeeze(-1)

    @torch.no_grad()
    def shape_decoder(self, c, z, dtype=torch.float32):
        """Fold this decoder for one shape (c ``(1, c_dim)``, z ``(1, z_dim)``).

        fc_z(z) + fc_c(c) is computed once; like ``DecoderCBatchNorm.shape_decoder`` the
        stream's constants move into the pre-activation shifts (scales are 1).
        """
        _check_one_shape(c, z)
        offset = self.fc_p.bias
        if self.z_dim != 0:
            offset = offset + self.fc_z(z)[0]
        if self.c_dim != 0:
            offset = offset + self.fc_c(c)[0]
        ones = torch.ones_like(offset)
        blocks = []
        for block in self._blocks():
            blocks.append((ones, offset, block.fc_0.weight, block.fc_0.bias, block.fc_1.weight))
            offset = offset + block.fc_1.bias
        return ShapeDecoder(
            self.fc_p.weight, blocks, ones, offset, self.fc_out.weight, self.fc_out.bias,
            dtype, default_chunk_size(c.device),
        )
