"""Convolutional Occupancy Networks in numpy: the bundled ConvONets without PyTorch.

The same computation as ``backend.models.convonet`` (names, coordinates and sampling in its
``features`` module) for plane models ("xz", "xy", "yz" with a 2D U-Net) and for voxel
models on one grid without a U-Net, one voxel per cell at the grid's own size
(``layout.reads_native_grid``); grid models with a 3D U-Net run on the torch engine. The code
c is ``{kind: (C, R, R) | (C, R, R, R) float32}`` (a grid indexed [z, y, x], as in torch).
"""

import logging

import numpy as np

from ...errors import UserError
from ..convonet.layout import BLUR_TAPS, EPS, N_BLOCKS, PLANE_AXES, reads_native_grid
from .base import NumpyModel, Weights
from .ops import (bilinear_corners, conv, conv_transpose2d_2x2, linear, max_pool2d_2x2, relu,
                  resnet_block_fc, scatter_max, scatter_mean, trilinear_corners)

logger = logging.getLogger(__name__)

CHUNK = 8192  # decoder rows per step: the working set stays in the CPU cache


def normalize(p, kind, padding):
    """``features.normalize``: points (T, 3) float32 -> u (T, 2) in [0, 1) for a plane,
    (T, 3) for the grid."""
    eps = np.float32(EPS["grid" if kind == "grid" else "plane"])
    u = p if kind == "grid" else p[:, PLANE_AXES[kind]]
    u = u / np.float32(1 + padding + eps) + np.float32(0.5)
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
        self.grid = encoder["plane_type"] == ["grid"]
        if not (reads_native_grid(config) or ("grid" not in encoder["plane_type"]
                                       and encoder.get("unet") is not None)):
            raise UserError("the bundled engine runs plane ConvONets with a U-Net and voxel "
                            "ConvONets on one unpadded grid without one; this model has "
                            f"{encoder['plane_type']} (unet {encoder.get('unet')}, unet3d "
                            f"{encoder.get('unet3d')}, padding {config['padding']}): use the "
                            "torch engine (--engine torch)")
        if config["decoder"]["sample_mode"] != "bilinear":
            raise UserError("the bundled engine samples ConvONet planes bilinearly; this model "
                            f"asks for {config['decoder']['sample_mode']!r}: use --engine torch")
        self.kinds = list(encoder["plane_type"])
        self.resolution = encoder["grid_resolution" if self.grid else "plane_resolution"]
        self.depth = None if self.grid else encoder["unet"]["depth"]
        self.rule = bool(encoder.get("voxelisation_input"))
        self.base_field = bool(config.get("base_field"))
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

    def encode_grid(self, inputs):
        """``LocalVoxelEncoder`` with one voxel per cell: (1, n, n, n) or with the rule
        (1, 2, n, n, n), any n -> {"grid": (C (+1 base), n, n, n) indexed [z, y, x]}."""
        w = self.weights
        x = np.asarray(inputs[0], np.float32)
        occupancy, rule = (x[0], x[1, 0, 0, 0]) if self.rule else (x, None)
        if occupancy.ndim != 3 or len(set(occupancy.shape)) != 1:
            raise UserError(f"this model takes an n^3 voxel grid, got {occupancy.shape}")
        kernel = w["encoder.conv_in.weight"]
        features = conv(occupancy[None], kernel, w["encoder.conv_in.bias"],
                        padding=kernel.shape[-1] // 2)
        if rule is not None:
            features += (w["encoder.fc_rule.weight"][:, 0] * rule)[:, None, None, None]
        features = relu(features)
        if self.base_field:
            base = conv(occupancy[None], blur_kernel(), padding=1)
            features = np.concatenate([features, base])
        return {"grid": np.ascontiguousarray(features.transpose(0, 3, 2, 1))}

    def encode_inputs(self, inputs):
        w, r = self.weights, self.resolution
        if self.grid:
            return self.encode_grid(inputs)
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
                       for kind, volume in c.items()}  # (R^2 or R^3, C) rows per cell
        # A grid holds one voxel per cell at the input's own size (reads_native_grid).
        self.resolution = c["grid"].shape[-1] if model.grid else model.resolution
        self.hidden = w["decoder.fc_out.weight"].shape[1]
        biases = np.stack([w[f"decoder.fc_c.{i}.bias"] for i in range(N_BLOCKS)])
        positions = "decoder.fc_p.weight" in w
        if positions:
            biases[0] += w["decoder.fc_p.bias"]
        biases[1:] += np.stack([w[f"decoder.blocks.{i}.fc_1.bias"] for i in range(N_BLOCKS - 1)])
        self.w_c_t = np.ascontiguousarray(
            np.concatenate([w[f"decoder.fc_c.{i}.weight"] for i in range(N_BLOCKS)]).T)
        self.b_cols = biases.reshape(-1)
        self.w_p_t = np.ascontiguousarray(w["decoder.fc_p.weight"].T) if positions else None
        self.base_scale = np.float32(w["decoder.base_scale"]) if model.base_field else None
        self.blocks = [(np.ascontiguousarray(w[f"decoder.blocks.{i}.fc_0.weight"].T),
                        w[f"decoder.blocks.{i}.fc_0.bias"],
                        np.ascontiguousarray(w[f"decoder.blocks.{i}.fc_1.weight"].T))
                       for i in range(N_BLOCKS)]
        self.shift = w[f"decoder.blocks.{N_BLOCKS - 1}.fc_1.bias"]
        self.w_out = w["decoder.fc_out.weight"][0]
        self.b_out = w["decoder.fc_out.bias"][0]

    def features(self, p):
        """Plane (or grid) features summed at points (n, 3) -> (n, C) float32."""
        model = self.model
        f = None
        corners = trilinear_corners if model.grid else bilinear_corners
        for kind, table in self.tables.items():
            index, weights = corners(normalize(p, kind, model.padding), self.resolution,
                                     model.align_corners)
            for k in range(len(index)):
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
            f = self.features(p)
            if self.base_scale is not None:
                f, base = f[:, :-1], f[:, -1]
            cols = f @ self.w_c_t
            cols += self.b_cols
            if self.w_p_t is None:
                x = cols[:, :h].copy()
            else:
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
            if self.base_scale is not None:  # convonet.decoder: base field, cube_wall
                out = logits[start:start + len(p)]
                out += self.base_scale * (base - np.float32(0.5))
                wall = self.base_scale * np.float32(self.resolution) * (
                    np.float32(0.5) - np.abs(p).max(axis=1))
                np.minimum(out, wall, out=out)
        return logits


def blur_kernel():
    """``convonet.encoders.blur_kernel``: ``(1, 1, 3, 3, 3) float32``."""
    taps = np.array(BLUR_TAPS, np.float32)
    return (taps[:, None, None] * taps[None, :, None] * taps[None, None, :])[None, None]
