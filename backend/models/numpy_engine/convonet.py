"""Convolutional Occupancy Networks in numpy: the bundled ConvONets without PyTorch.

The same computation as ``backend.models.convonet`` (names, coordinates and sampling in its
``features`` module) for plane models ("xz", "xy", "yz" with a 2D U-Net); grid models (3D
U-Net) run on the torch engine. The code c is ``{kind: (C, R, R) float32}``.
"""

import logging

import numpy as np

from ...errors import UserError
from ..convonet.layout import EPS, N_BLOCKS, PLANE_AXES
from .base import NumpyModel, Weights
from .ops import (bilinear_corners, conv, conv_transpose2d_2x2, linear, max_pool2d_2x2, relu,
                  resnet_block_fc, scatter_max, scatter_mean)

logger = logging.getLogger(__name__)

CHUNK = 8192  # decoder rows per step: the working set stays in the CPU cache


def normalize(p, kind, padding):
    """``features.normalize`` for a plane: points (T, 3) float32 -> u (T, 2) in [0, 1)."""
    eps = np.float32(EPS["plane"])
    u = p[:, PLANE_AXES[kind]] / np.float32(1 + padding + EPS["plane"]) + np.float32(0.5)
    return np.maximum(np.where(u >= 1, 1 - eps, u), 0).astype(np.float32)


def cell_index(u, resolution):
    """``features.cell_index`` for a plane: u (T, 2) -> flat cell index (T,) int64."""
    i = np.minimum((u * np.float32(resolution)).astype(np.int64), resolution - 1)
    return i[:, 0] + resolution * i[:, 1]


def unet(x, w, prefix, depth):
    """``convonet.unet.UNet``: (C, R, R) -> (C, R, R)."""
    skips = []
    for i in range(depth):
        down = f"{prefix}down_convs.{i}."
        x = relu(conv(x, w[down + "conv1.weight"], w[down + "conv1.bias"], padding=1))
        x = relu(conv(x, w[down + "conv2.weight"], w[down + "conv2.bias"], padding=1))
        skips.append(x)
        if i < depth - 1:
            x = max_pool2d_2x2(x)
    for i, skip in enumerate(reversed(skips[:-1])):
        up = f"{prefix}up_convs.{i}."
        x = conv_transpose2d_2x2(x, w[up + "upconv.weight"], w[up + "upconv.bias"])
        x = np.concatenate([x, skip])
        x = relu(conv(x, w[up + "conv1.weight"], w[up + "conv1.bias"], padding=1))
        x = relu(conv(x, w[up + "conv2.weight"], w[up + "conv2.bias"], padding=1))
    return conv(x, w[prefix + "conv_final.weight"], w[prefix + "conv_final.bias"])


class ConvONet(NumpyModel):
    """A plane ConvONet: ``encode_inputs`` (1, T, 3) points or (1, n, n, n) voxels ->
    {kind: (C, R, R)}; ``shape_decoder`` -> f(points (N, 3)) -> logits (N,)."""

    local_features = True

    def __init__(self, weights: Weights, config: dict):
        super().__init__(weights, config)
        encoder = config["encoder"]
        if "grid" in encoder["plane_type"] or encoder.get("unet") is None:
            raise UserError("the bundled engine runs plane ConvONets with a U-Net; this "
                            f"model has {encoder['plane_type']} (unet {encoder.get('unet')}): "
                            "use the torch engine (--engine torch)")
        if config["decoder"]["sample_mode"] != "bilinear":
            raise UserError("the bundled engine samples ConvONet planes bilinearly; this model "
                            f"asks for {config['decoder']['sample_mode']!r}: use --engine torch")
        self.kinds = list(encoder["plane_type"])
        self.resolution = encoder["plane_resolution"]
        self.depth = encoder["unet"]["depth"]
        self.padding = config["padding"]
        self.align_corners = config["sample_align"] == "official"
        self.input_kind = config["input_kind"]

    def cells(self, p):
        return {kind: cell_index(normalize(p, kind, self.padding), self.resolution)
                for kind in self.kinds}

    def volumes(self, cells, features):
        """Point features (T, C) in ``cells`` -> {kind: U-Net(mean per cell) (C, R, R)}."""
        r = self.resolution
        return {kind: unet(scatter_mean(features, index, r * r).T.reshape(-1, r, r),
                           self.weights, "encoder.unet.", self.depth)
                for kind, index in cells.items()}

    def encode_inputs(self, inputs):
        w, r = self.weights, self.resolution
        if self.input_kind == "voxels":
            grid = np.asarray(inputs[0], np.float32)
            features = relu(conv(grid[None], w["encoder.conv_in.weight"],
                                 w["encoder.conv_in.bias"], padding=1))
            n = grid.shape[0]
            axis = (np.linspace(-0.5, 0.5, n, dtype=np.float32) if self.align_corners else
                    ((np.arange(n, dtype=np.float32) + 0.5) / n - 0.5).astype(np.float32))
            p = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
            return self.volumes(self.cells(p), features.reshape(len(features), -1).T)
        p = np.asarray(inputs[0], np.float32)
        cells = self.cells(p)
        net = resnet_block_fc(linear(p, w["encoder.fc_pos.weight"], w["encoder.fc_pos.bias"]),
                              w, "encoder.blocks.0.")
        for i in range(1, N_BLOCKS):
            pooled = sum(scatter_max(net, index, r * r)[index] for index in cells.values())
            net = resnet_block_fc(np.concatenate([net, pooled], axis=1), w,
                                  f"encoder.blocks.{i}.")
        return self.volumes(cells, linear(net, w["encoder.fc_c.weight"], w["encoder.fc_c.bias"]))

    def shape_decoder(self, c, z=None):
        return LocalShapeDecoder(self, c)


class LocalShapeDecoder:
    """``convonet.decoder.LocalShapeDecoder`` in numpy: the five fc_c layers as one matmul,
    the residual stream's biases folded into its columns; points (N, 3) -> logits (N,)."""

    def __init__(self, model: ConvONet, c: dict):
        w = model.weights
        self.model = model
        self.tables = {kind: np.ascontiguousarray(volume.reshape(len(volume), -1).T,
                                                  np.float32)
                       for kind, volume in c.items()}  # (R * R, C) rows per cell
        self.hidden = len(w["decoder.fc_p.bias"])
        biases = np.stack([w[f"decoder.fc_c.{i}.bias"] for i in range(N_BLOCKS)])
        biases[0] += w["decoder.fc_p.bias"]
        biases[1:] += np.stack([w[f"decoder.blocks.{i}.fc_1.bias"] for i in range(N_BLOCKS - 1)])
        self.w_c_t = np.ascontiguousarray(
            np.concatenate([w[f"decoder.fc_c.{i}.weight"] for i in range(N_BLOCKS)]).T)
        self.b_cols = biases.reshape(-1)
        self.w_p_t = np.ascontiguousarray(w["decoder.fc_p.weight"].T)
        self.blocks = [(np.ascontiguousarray(w[f"decoder.blocks.{i}.fc_0.weight"].T),
                        w[f"decoder.blocks.{i}.fc_0.bias"],
                        np.ascontiguousarray(w[f"decoder.blocks.{i}.fc_1.weight"].T))
                       for i in range(N_BLOCKS)]
        self.shift = w[f"decoder.blocks.{N_BLOCKS - 1}.fc_1.bias"]
        self.w_out = w["decoder.fc_out.weight"][0]
        self.b_out = w["decoder.fc_out.bias"][0]

    def features(self, p):
        """Plane features summed at points (n, 3) -> (n, C) float32."""
        model = self.model
        f = None
        for kind, table in self.tables.items():
            index, weights = bilinear_corners(normalize(p, kind, model.padding),
                                              model.resolution, model.align_corners)
            for k in range(4):
                tap = table[index[k]]
                tap *= weights[k][:, None]
                if f is None:
                    f = tap
                else:
                    f += tap
        return f

    def __call__(self, points):
        points = np.ascontiguousarray(points, np.float32)
        logits = np.empty(len(points), np.float32)
        h = self.hidden
        for start in range(0, len(points), CHUNK):
            p = points[start:start + CHUNK]
            cols = self.features(p) @ self.w_c_t
            cols += self.b_cols
            x = p @ self.w_p_t
            x += cols[:, :h]
            for i, (w0_t, b0, w1_t) in enumerate(self.blocks):
                t = np.maximum(x, 0) @ w0_t
                t += b0
                np.maximum(t, 0, out=t)
                x += t @ w1_t
                if i + 1 < len(self.blocks):
                    x += cols[:, (i + 1) * h:(i + 2) * h]
            x += self.shift
            np.maximum(x, 0, out=x)
            logits[start:start + len(p)] = x @ self.w_out + self.b_out
        return logits
