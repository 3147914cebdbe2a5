"""Decoder: a query's k nearest input points, their features and offsets -> attention -> logit.

As in POCO (Boulch & Marlet, CVPR 2022): no absolute coordinates, only the offsets from the
neighbours to the query in units of the cloud's sampling scale, so a query's logit depends
on the input near it alone. ``AttentionShapeDecoder`` is the per-shape inference path.
"""

import torch
from scipy.spatial import cKDTree
from torch import nn
from torch.nn import functional as F

from ...errors import UserError
from ..layers import ResnetBlockFC
from ..onet.decoders import default_chunk_size
from .neighbours import LEAF_SIZE, gather, knn, tree_query


class AttentionDecoder(nn.Module):
    """forward(p (B, T, 3) float32, c ``PointFeatures``) -> logits (B, T).

    With f_j the features of query i's k nearest input points x_j and o_ij = (p_i - x_j) / s,
    one linear layer per edge gives values and attention scores::

        v_ij, a_ij = W_c f_j + b_c + W_o o_ij          (hidden_size values, a score per head)
        g_i = concat_h sum_j softmax_j(a_ij^h) relu(v_ij^h)          (head h: its channels)
        logit_i = fc_out(relu(blocks(g_i)))

    The layer is linear in o_ij, so it runs as P_j + Q_i with P_j = W_c f_j + b_c -
    W_o x_j / s per input point and Q_i = W_o p_i / s per query: an edge costs a gather, an
    add, relu and softmax, no matmul (a per-edge hidden layer made the decoder 5x slower
    than ConvONet's on a CPU). Both terms are up to 1 / s larger than their sum, so the edge
    part runs in float32 outside autocast; the per-query blocks run in the autocast dtype.
    """

    def __init__(self, c_dim=32, hidden_size=32, k=16, heads=4, n_blocks=3):
        super().__init__()
        if hidden_size % heads or k < 1:
            raise UserError(f"model config: decoder hidden_size {hidden_size} must be a "
                            f"multiple of heads {heads}, and k >= 1 (got {k})")
        self.k, self.heads, self.hidden = k, heads, hidden_size
        self.fc_c = nn.Linear(c_dim, hidden_size + heads)
        self.fc_offset = nn.Linear(3, hidden_size + heads, bias=False)
        self.blocks = nn.ModuleList(ResnetBlockFC(hidden_size) for _ in range(n_blocks))
        self.fc_out = nn.Linear(hidden_size, 1)

    def forward(self, p, c):
        p = p.float()
        index = knn(p, c.points, self.k)
        return self.logits(p, index, self.point_terms(c), c.scale)

    def point_terms(self, c):
        """P (B, N, hidden + heads) float32 of a code c: each input point's part of the edge
        layer."""
        with torch.autocast(c.points.device.type, enabled=False):
            own = F.linear(c.points.float(), self.fc_offset.weight) / c.scale[:, None, None]
            return self.fc_c(c.features.float()) - own

    def logits(self, p, index, terms, scale):
        """Logits (B, T) float32 from queries p (B, T, 3), their neighbours ``index``
        (B, T, k), the ``point_terms`` (B, N, hidden + heads) and the scale (B,)."""
        *lead, k = index.shape
        with torch.autocast(p.device.type, enabled=False):
            query = F.linear(p, self.fc_offset.weight) / scale[:, None, None]
            edges = (gather(terms, index) + query[:, :, None]).view(-1, k, terms.size(-1))
            values = edges[..., :self.hidden].relu()  # (B * T, k, hidden)
            # Softmax over the last, contiguous axis (over a middle one it is 10x slower).
            weights = torch.softmax(edges[..., self.hidden:].transpose(1, 2).contiguous(),
                                    dim=-1)  # (B * T, heads, k)
            # Every head's weights against every channel in one batched matmul, then each
            # head's own channel group: (B * T, heads, heads, hidden / heads) -> diagonal.
            mixed = torch.bmm(weights, values)  # (B * T, heads, hidden)
            g = mixed.view(-1, self.heads, self.heads, self.hidden // self.heads).diagonal(
                dim1=1, dim2=2).transpose(1, 2).reshape(*lead, self.hidden)
        for block in self.blocks:
            g = block(g)
        # The output layer in float32 even under autocast: bf16 logits take few distinct
        # values, lattice values land exactly on the threshold and marching cubes puts
        # several vertices on one lattice point (degenerate, non-manifold after welding).
        with torch.autocast(p.device.type, enabled=False):
            return F.linear(F.relu(g).float(), self.fc_out.weight.float(),
                            self.fc_out.bias.float()).squeeze(-1)

    @torch.no_grad()
    def shape_decoder(self, c, dtype=torch.float32):
        """The per-shape decoder of one shape's code c (batch 1)."""
        if c.points.size(0) != 1:
            raise ValueError(f"shape_decoder takes one shape: c has points of shape "
                             f"{tuple(c.points.shape)}")
        return AttentionShapeDecoder(self, c, dtype, default_chunk_size(c.points.device))


class AttentionShapeDecoder:
    """One shape's decoder: ``f(points (M, 3)) -> logits (M,) float32``, equal to
    ``AttentionDecoder.forward`` up to the order of equidistant neighbours.

    The input points' terms of the first layer are computed once, here; on CPU the
    neighbour search is a k-d tree built once. The per-query blocks run under autocast to
    ``dtype`` (the edge part and the output layer in float32). Without autograd,
    points go through in chunks of ``chunk_size`` rows; points that require grad go through
    in one differentiable piece. The decoder's weights are used as they are at
    call time (they are not copied).
    """

    def __init__(self, decoder, c, dtype, chunk_size):
        self.decoder, self.dtype, self.chunk_size = decoder, dtype, chunk_size
        self.points = c.points.detach().float()
        self.scale = c.scale.detach().float()
        self.terms = decoder.point_terms(c.float())
        self.k = min(decoder.k, self.points.size(1))
        self.tree = (cKDTree(self.points[0].cpu().numpy(), leafsize=LEAF_SIZE)
                     if self.points.is_cpu else None)

    def __call__(self, points):
        if points.dim() != 2 or points.size(1) != 3:
            raise ValueError(f"points must be (N, 3), got {tuple(points.shape)}")
        points = points.float()
        # One neighbour search for all points: each k-d tree call starts its worker threads.
        index = self._neighbours(points)
        if torch.is_grad_enabled() and points.requires_grad:
            return self._logits(points, index)
        logits = torch.empty(len(points), dtype=torch.float32, device=points.device)
        with torch.no_grad():
            for start in range(0, len(points), self.chunk_size):
                stop = start + self.chunk_size
                logits[start:stop] = self._logits(points[start:stop], index[:, start:stop])
        return logits

    def _neighbours(self, p):
        """Indices (1, n, k) long of the k nearest input points of p (n, 3) float32."""
        if self.tree is not None:
            return tree_query(self.tree, p, self.k)[None]
        return knn(p[None], self.points, self.k)

    def _logits(self, p, index):
        """Points (n, 3) float32 and their neighbours (1, n, k) -> logits (n,) float32."""
        with torch.autocast(p.device.type, self.dtype, enabled=self.dtype != torch.float32):
            logits = self.decoder.logits(p[None], index, self.terms, self.scale)
        return logits[0]
