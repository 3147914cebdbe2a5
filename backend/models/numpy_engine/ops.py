"""The layers of the bundled models as numpy functions, float32, one shape at a time.

Conventions follow PyTorch's, so the safetensors weights are used as stored: a linear layer's
weight is (out, in); convolutions are channel-first, ``(C, H, W)`` or ``(C, D, H, W)`` with
weights (out, in, k, ...); no batch axis. Each function equals its ``torch.nn.functional``
namesake up to float32 rounding (tests/test_numpy_engine.py checks them against torch).
"""

import logging

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

logger = logging.getLogger(__name__)


def linear(x, weight, bias=None):
    """x (..., in) @ weight (out, in).T + bias (out,) -> (..., out)."""
    out = x @ weight.T
    if bias is not None:
        out += bias
    return out


def relu(x):
    """max(x, 0), a new array."""
    return np.maximum(x, 0)


def resnet_block_fc(x, weights, prefix):
    """``layers.ResnetBlockFC``: x + fc_1(relu(fc_0(relu(x)))), shortcut when present."""
    w = weights
    dx = linear(relu(linear(relu(x), w[prefix + "fc_0.weight"], w[prefix + "fc_0.bias"])),
                w[prefix + "fc_1.weight"], w[prefix + "fc_1.bias"])
    shortcut = w.get(prefix + "shortcut.weight")
    return (x if shortcut is None else linear(x, shortcut)) + dx


def conv(x, weight, bias=None, stride=1, padding=0):
    """N-d convolution (N = weight.ndim - 2, 2 or 3) by im2col and one matmul: x (C, *S),
    weight (O, C, *k) -> (O, *S') with S' = (S + 2 padding - k) // stride + 1."""
    dims = weight.ndim - 2
    kernel = weight.shape[2:]
    if padding:
        x = np.pad(x, ((0, 0),) + ((padding, padding),) * dims)
    windows = sliding_window_view(x, kernel, axis=tuple(range(1, dims + 1)))
    windows = windows[(slice(None),) + (slice(None, None, stride),) * dims]
    spatial = windows.shape[1:1 + dims]
    # (C, *S', *k) -> (*S', C, *k): rows are output positions, columns (channel, offsets).
    order = tuple(range(1, dims + 1)) + (0,) + tuple(range(dims + 1, 2 * dims + 1))
    cols = windows.transpose(order).reshape(int(np.prod(spatial)), -1)
    out = cols @ weight.reshape(len(weight), -1).T
    if bias is not None:
        out += bias
    return np.ascontiguousarray(out.T).reshape((len(weight),) + spatial)


def conv_transpose2d_2x2(x, weight, bias):
    """Transposed convolution with kernel 2, stride 2: x (C, H, W), weight (C, O, 2, 2) ->
    (O, 2H, 2W); each input pixel writes one 2x2 block."""
    c, h, w = x.shape
    out = np.tensordot(weight, x, axes=([0], [0]))  # (O, 2, 2, H, W)
    out = out.transpose(0, 3, 1, 4, 2).reshape(weight.shape[1], 2 * h, 2 * w)
    return out + bias[:, None, None]


def max_pool2d_2x2(x):
    """2x2 max pooling, stride 2: (C, H, W) -> (C, H // 2, W // 2)."""
    c, h, w = x.shape
    return x[:, :h // 2 * 2, :w // 2 * 2].reshape(c, h // 2, 2, w // 2, 2).max(axis=(2, 4))


def max_pool2d_3x3_s2(x):
    """torchvision's stem pooling: 3x3, stride 2, padding 1 (padded with -inf)."""
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    return sliding_window_view(padded, (3, 3), axis=(1, 2))[:, ::2, ::2].max(axis=(3, 4))


def batch_norm(x, weights, prefix, eps=1e-5):
    """Eval-mode batch norm over channel-first x (C, ...) with running statistics."""
    w = weights
    scale = w[prefix + "weight"] / np.sqrt(w[prefix + "running_var"] + eps)
    shift = w[prefix + "bias"] - scale * w[prefix + "running_mean"]
    expand = (slice(None),) + (None,) * (x.ndim - 1)
    return x * scale[expand] + shift[expand]


def scatter_max(values, index, cells):
    """Maximum of values (T, C) per cell of index (T,) -> (cells, C), empty cells -inf."""
    out = np.full((cells, values.shape[1]), -np.inf, values.dtype)
    np.maximum.at(out, index, values)
    return out


def scatter_mean(values, index, cells):
    """Mean of values (T, C) per cell of index (T,) -> (cells, C), empty cells 0."""
    out = np.zeros((cells, values.shape[1]), np.float64)
    np.add.at(out, index, values)
    count = np.bincount(index, minlength=cells)
    out /= np.maximum(count, 1)[:, None]
    return out.astype(values.dtype)


def _cells(u, resolution, align_corners):
    """``grid_sample``'s pixel coordinates of u (T, D) in [0, 1] with border padding ->
    (low cell (T, D) int64, high cell (T, D) int64, fraction (T, D) float32)."""
    if align_corners:
        pixel = u * np.float32(resolution - 1)
    else:
        pixel = u * np.float32(resolution) - np.float32(0.5)
    pixel = np.clip(pixel, 0, resolution - 1)
    low = np.floor(pixel)
    frac = (pixel - low).astype(np.float32)
    low = low.astype(np.int64)
    return low, np.minimum(low + 1, resolution - 1), frac


def bilinear_corners(u, resolution, align_corners):
    """``grid_sample``'s bilinear taps on a square (R, R) plane with border padding.

    u (T, 2) float32 in [0, 1], u[:, 0] along the plane's last (W) axis -> (index (4, T)
    int64 into the flattened plane, weights (4, T) float32)."""
    low, high, frac = _cells(u, resolution, align_corners)
    x0, y0, x1, y1 = low[:, 0], low[:, 1], high[:, 0], high[:, 1]
    fx, fy = frac[:, 0], frac[:, 1]
    index = np.stack([y0 * resolution + x0, y0 * resolution + x1,
                      y1 * resolution + x0, y1 * resolution + x1])
    weights = np.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy])
    return index, weights


def trilinear_corners(u, resolution, align_corners):
    """``grid_sample``'s trilinear taps on a cubic (R, R, R) grid with border padding.

    u (T, 3) float32 in [0, 1], u[:, 0] along the grid's last (W) axis -> (index (8, T)
    int64 into the flattened grid (u[:, 0] fastest), weights (8, T) float32)."""
    low, high, frac = _cells(u, resolution, align_corners)
    index, weights = [], []
    for corner in range(8):
        bits = [(corner >> axis) & 1 for axis in range(3)]
        i = [np.where(bit, high[:, axis], low[:, axis]) for axis, bit in enumerate(bits)]
        index.append(i[0] + resolution * (i[1] + resolution * i[2]))
        weights.append(np.prod([frac[:, axis] if bit else 1 - frac[:, axis]
                                for axis, bit in enumerate(bits)], axis=0))
    return np.stack(index), np.stack(weights).astype(np.float32)
