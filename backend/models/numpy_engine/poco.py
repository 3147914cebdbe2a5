"""The point-latent network (``backend.models.poco``, after POCO) in numpy: an edge-conv
point U-Net gives every input point a feature; the decoder attends over each query's k
nearest input points. Neighbours by exact brute force in blocks (no k-d tree: SciPy is not
in Blender); only the neighbour sets matter, every use of them is order-free."""

import logging
from dataclasses import dataclass

import numpy as np

from ...errors import UserError
from .base import NumpyModel
from .ops import linear, relu, resnet_block_fc

logger = logging.getLogger(__name__)

INTERPOLATION_NEIGHBOURS = 3  # as poco.encoder: coarse points a fine point's feature blends
QUERY_BLOCK = 2048  # queries per brute-force distance block: (2048, N) float64
CHUNK = 8192  # decoder rows per step


def knn(query, points, k):
    """Indices (M, k') int64 of each query's k' = min(k, N) nearest points, nearest first.
    query (M, 3), points (N, 3) float32; distances in float64."""
    k = min(k, len(points))
    p = points.astype(np.float64)
    norms = (p * p).sum(1)
    out = np.empty((len(query), k), np.int64)
    for start in range(0, len(query), QUERY_BLOCK):
        q = query[start:start + QUERY_BLOCK].astype(np.float64)
        d = norms[None] - 2.0 * (q @ p.T) + (q * q).sum(1)[:, None]
        index = (np.argpartition(d, k - 1, axis=1)[:, :k] if k < len(points)
                 else np.broadcast_to(np.arange(k), d.shape))
        order = np.argsort(np.take_along_axis(d, index, 1), axis=1, kind="stable")
        out[start:start + len(q)] = np.take_along_axis(index, order, 1)
    return out


@dataclass
class PointCode:
    """A shape's code: input points (N, 3), a feature per point (N, c_dim) and the sampling
    scale (unit-cube units), as ``poco.encoder.PointFeatures`` without the batch."""

    points: np.ndarray
    features: np.ndarray
    scale: float

    def lerp(self, other, t):
        raise UserError("this model's code is a feature per input point, and the points of "
                        "two clouds do not correspond, so codes cannot be interpolated; use "
                        "an Occupancy Network or ConvONet model for interpolation")


def edge_conv(w, prefix, source, target, offsets, index):
    """``poco.encoder.EdgeConv``: (source (N, C) | None, target (M, C) | None, offsets
    (M, k, 3), index (M, k)) -> (M, C_out)."""
    e = linear(offsets, w[prefix + "fc_offset.weight"], w[prefix + "fc_offset.bias"])
    if source is not None:
        e += linear(source, w[prefix + "fc_source.weight"])[index]
        e += linear(target, w[prefix + "fc_target.weight"])[:, None]
    out = linear(relu(e), w[prefix + "fc_edge.weight"], w[prefix + "fc_edge.bias"]).max(1)
    if source is None:
        return out
    shortcut = prefix + "shortcut.weight"
    return out + (linear(target, w[shortcut]) if shortcut in w else target)


class PointLatentNetwork(NumpyModel):
    """``encode_inputs`` (1, N, 3) points -> ``PointCode``; ``shape_decoder`` -> logits."""

    local_features = True
    input_kind = "pointcloud"

    def __init__(self, weights, config):
        super().__init__(weights, config)
        self.k = config["encoder"]["k"]
        self.levels = len(config["encoder"]["widths"])
        decoder = config["decoder"]
        self.decoder_k, self.heads = decoder["k"], decoder["heads"]
        self.hidden, self.n_blocks = decoder["hidden_size"], decoder["n_blocks"]

    def encode_inputs(self, inputs):
        w, e = self.weights, "encoder."
        points = np.asarray(inputs[0], np.float32)
        index = knn(points, points, self.k)
        scale = max(float(np.linalg.norm(points[index[:, -1]] - points, axis=1).mean()), 1e-4)

        def offsets(source, target, index, level):
            return ((source[index] - target[:, None]) / np.float32(scale * 2 ** level)).astype(
                np.float32)

        xyz = [points]
        for _ in range(1, self.levels):
            xyz.append(xyz[-1][::4])
        local = offsets(points, points, index, 0)
        f = edge_conv(w, e + "first.", None, None, local, index)
        f = edge_conv(w, e + "convs.0.", f, f, local, index)
        skips = [f]
        for level in range(1, self.levels):
            fine, coarse = xyz[level - 1], xyz[level]
            index = knn(coarse, fine, self.k)
            f = edge_conv(w, f"{e}pool.{level - 1}.", f, f[::4],
                          offsets(fine, coarse, index, level), index)
            index = knn(coarse, coarse, self.k)
            f = edge_conv(w, f"{e}convs.{level}.", f, f, offsets(coarse, coarse, index, level),
                          index)
            skips.append(f)
        for level in range(self.levels - 2, -1, -1):
            fine, coarse = xyz[level], xyz[level + 1]
            index = knn(fine, coarse, INTERPOLATION_NEIGHBOURS)
            distance = np.linalg.norm(offsets(coarse, fine, index, level + 1), axis=-1)
            weights = 1.0 / (distance + np.float32(1e-3))
            weights /= weights.sum(-1, keepdims=True)
            blended = (relu(f)[index] * weights[..., None]).sum(1)
            f = skips[level] + linear(blended, w[f"{e}up.{level}.weight"],
                                      w[f"{e}up.{level}.bias"])
        features = linear(relu(f), w[e + "fc_c.weight"], w[e + "fc_c.bias"])
        return PointCode(points, features.astype(np.float32), scale)

    def shape_decoder(self, c, z=None):
        return AttentionShapeDecoder(self, c)


class AttentionShapeDecoder:
    """``poco.decoder.AttentionShapeDecoder`` in numpy: points (M, 3) -> logits (M,)."""

    def __init__(self, model: PointLatentNetwork, code: PointCode):
        w, d = model.weights, "decoder."
        self.model, self.code = model, code
        self.w_offset = w[d + "fc_offset.weight"]
        scale = np.float32(code.scale)
        self.terms = (linear(code.features, w[d + "fc_c.weight"], w[d + "fc_c.bias"])
                      - linear(code.points, self.w_offset) / scale).astype(np.float32)
        self.scale = scale
        self.k = min(model.decoder_k, len(code.points))

    def __call__(self, points):
        points = np.ascontiguousarray(points, np.float32)
        model, w = self.model, self.model.weights
        h, heads = model.hidden, model.heads
        logits = np.empty(len(points), np.float32)
        for start in range(0, len(points), CHUNK):
            p = points[start:start + CHUNK]
            index = knn(p, self.code.points, self.k)
            edges = self.terms[index] + (linear(p, self.w_offset) / self.scale)[:, None]
            values = relu(edges[..., :h]).reshape(len(p), self.k, heads, h // heads)
            scores = edges[..., h:]
            scores = np.exp(scores - scores.max(1, keepdims=True))
            scores /= scores.sum(1, keepdims=True)
            g = np.einsum("nkh,nkhc->nhc", scores, values).reshape(len(p), h)
            for i in range(model.n_blocks):
                g = resnet_block_fc(g, w, f"decoder.blocks.{i}.")
            logits[start:start + len(p)] = linear(relu(g), w["decoder.fc_out.weight"],
                                                  w["decoder.fc_out.bias"])[:, 0]
        return logits
