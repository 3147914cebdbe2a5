"""Point-cloud encoder: a small point U-Net of edge convolutions -> a feature per input point.

Only relative coordinates enter the network, divided by the cloud's sampling scale, so its
features do not change when the cloud is moved or uniformly scaled: orientation robustness
is left to rotation augmentation in training.
"""

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ...errors import UserError
from .neighbours import gather, knn

INTERPOLATION_NEIGHBOURS = 3  # coarse points a fine point's upsampled feature blends


@dataclass
class PointFeatures:
    """A shape's code: its input points (B, N, 3) float32 (unit cube), a feature per point
    (B, N, c_dim) and the sampling scale (B,) float32 (unit-cube units) that divides every
    offset the decoder sees."""

    points: torch.Tensor
    features: torch.Tensor
    scale: torch.Tensor

    def float(self):
        """The code with its features in float32 (``Generator`` keeps codes in float32)."""
        return PointFeatures(self.points.float(), self.features.float(), self.scale.float())

    def lerp(self, other, t):
        """Refused: the per-point features of two clouds do not correspond point by point."""
        raise UserError("this model's code is a feature per input point, and the points of "
                        "two clouds do not correspond, so codes cannot be interpolated; use "
                        "an Occupancy Network or ConvONet model for interpolation")


def sampling_scale(points, index):
    """Mean distance (B,) float32 from each point of ``points`` (B, N, 3) to the last of its
    neighbours ``index`` (B, N, k), nearest first with the point itself first, at least
    1e-4: the cloud's sampling scale."""
    far = gather(points, index[:, :, -1:])[:, :, 0]
    return (far - points).norm(dim=-1).mean(-1).clamp(min=1e-4)


class EdgeConv(nn.Module):
    """Edge convolution from source points to target points over given neighbours.

    forward(source (B, N, C_in) or None, target (B, M, C_in) or None, offsets (B, M, k, 3)
    (neighbour minus target, in units of the level's scale), index (B, M, k) into source)
    -> (B, M, C_out)::

        e_ij = relu(W_s f_j + W_t f_i + W_o o_ij + b)
        out_i = shortcut(f_i) + max_j (W_e e_ij + b_e)

    With ``in_dim`` 0 (the first layer) only the offsets enter and there is no shortcut.
    """

    def __init__(self, in_dim, out_dim, hidden_dim):
        super().__init__()
        self.in_dim = in_dim
        self.fc_offset = nn.Linear(3, hidden_dim)
        if in_dim:
            self.fc_source = nn.Linear(in_dim, hidden_dim, bias=False)
            self.fc_target = nn.Linear(in_dim, hidden_dim, bias=False)
        self.fc_edge = nn.Linear(hidden_dim, out_dim)
        self.shortcut = (nn.Linear(in_dim, out_dim, bias=False)
                         if in_dim and in_dim != out_dim else None)

    def forward(self, source, target, offsets, index):
        e = self.fc_offset(offsets)
        if self.in_dim:
            e = e + gather(self.fc_source(source), index) + self.fc_target(target)[:, :, None]
        out = self.fc_edge(F.relu(e)).max(dim=2).values  # backward: a scatter, not amax's ties
        if not self.in_dim:
            return out
        return out + (target if self.shortcut is None else self.shortcut(target))


class PointUNetEncoder(nn.Module):
    """forward(points (B, N, 3) float32) -> ``PointFeatures`` with c_dim features per point.

    Level l holds N / 4^l points (every fourth point of level l - 1: training clouds come
    in random order, and a scan's order still spreads every fourth point over it; farthest
    point sampling cost 0.1 s per shape on a CPU core, 40% of the encoder) and scale
    s * 2^l, with s the ``sampling_scale`` of the input over ``k`` neighbours. Each level
    pools the finer one into its points (an edge convolution over their k nearest finer
    points) and runs one edge convolution over its own k-neighbourhoods; on the way back
    each level adds a linear map of the coarser level's features, interpolated from its
    three nearest coarser points by inverse distance. ``widths`` gives the channels per
    level (its length the number of levels).
    """

    input_kind = "pointcloud"

    def __init__(self, c_dim=32, widths=(32, 64, 96), k=16):
        super().__init__()
        if not widths or min(widths) < 1 or k < 2:
            raise UserError(f"model config: encoder widths must be a non-empty list of "
                            f"positive ints and k >= 2 (got {list(widths)}, {k})")
        self.k = k
        self.levels = len(widths)
        self.first = EdgeConv(0, widths[0], widths[0])
        self.pool = nn.ModuleList(EdgeConv(widths[i - 1], widths[i], widths[i])
                                  for i in range(1, self.levels))
        self.convs = nn.ModuleList(EdgeConv(w, w, w) for w in widths)
        self.up = nn.ModuleList(nn.Linear(widths[i + 1], widths[i])
                                for i in range(self.levels - 1))
        self.fc_c = nn.Linear(widths[0], c_dim)

    def forward(self, points):
        points = points.float()
        index = knn(points, points, self.k)
        scale = sampling_scale(points, index)
        unit = scale[:, None, None, None]

        def offsets(source, target, index, level):
            return (gather(source, index) - target[:, :, None]) / (unit * 2 ** level)

        xyz = [points]
        for _ in range(1, self.levels):
            xyz.append(xyz[-1][:, ::4])
        local = offsets(points, points, index, 0)
        f = self.first(None, None, local, index)
        f = self.convs[0](f, f, local, index)
        skips = [f]
        for level in range(1, self.levels):
            fine, coarse = xyz[level - 1], xyz[level]
            index = knn(coarse, fine, self.k)
            f = self.pool[level - 1](f, f[:, ::4], offsets(fine, coarse, index, level), index)
            index = knn(coarse, coarse, self.k)
            f = self.convs[level](f, f, offsets(coarse, coarse, index, level), index)
            skips.append(f)
        for level in range(self.levels - 2, -1, -1):
            fine, coarse = xyz[level], xyz[level + 1]
            index = knn(fine, coarse, INTERPOLATION_NEIGHBOURS)
            distance = offsets(coarse, fine, index, level + 1).norm(dim=-1)
            weights = 1.0 / (distance + 1e-3)
            weights = weights / weights.sum(-1, keepdim=True)
            blended = (gather(F.relu(f), index) * weights[..., None].to(f.dtype)).sum(2)
            f = skips[level] + self.up[level](blended)
        return PointFeatures(points, self.fc_c(F.relu(f)), scale)
