"""The global Occupancy Networks in numpy: ResNet-PointNet, voxel CNN and ResNet-18 encoders,
the conditional-batch-norm and plain decoders folded per shape, the VAE's latent encoder.

The same computation as ``backend.models.onet`` in eval mode (batch norm on its running
statistics); codes c (1, c_dim) and z (1, z_dim) float32.
"""

import logging

import numpy as np

from ...errors import UserError
from .base import NumpyModel, Weights
from .ops import (batch_norm, conv, linear, max_pool2d_3x3_s2, relu, resnet_block_fc)

logger = logging.getLogger(__name__)

CHUNK = 4096  # decoder rows per step (hidden 128-256: a few hundred KB per buffer)
BN_EPS = 1e-5
IMAGE_MEAN = np.array([0.485, 0.456, 0.406], np.float32)  # ImageNet, as in im2mesh
IMAGE_STD = np.array([0.229, 0.224, 0.225], np.float32)
DECODER_BLOCKS = 5


def resnet_pointnet(p, w):
    """``ResnetPointnet``: points (T, 3) -> c (c_dim,)."""
    net = linear(p, w["encoder.fc_pos.weight"], w["encoder.fc_pos.bias"])
    for i in range(4):
        net = resnet_block_fc(net, w, f"encoder.block_{i}.")
        net = np.concatenate([net, np.broadcast_to(net.max(0), net.shape)], axis=1)
    net = resnet_block_fc(net, w, "encoder.block_4.").max(0)
    return linear(relu(net), w["encoder.fc_c.weight"], w["encoder.fc_c.bias"])


def voxel_cnn(x, w):
    """``VoxelEncoder``: occupancy (32, 32, 32) -> c (c_dim,)."""
    net = conv(x[None], w["encoder.conv_in.weight"], w["encoder.conv_in.bias"], padding=1)
    for i in range(4):
        net = conv(relu(net), w[f"encoder.conv_{i}.weight"], w[f"encoder.conv_{i}.bias"],
                   stride=2, padding=1)
    return linear(relu(net.reshape(-1)), w["encoder.fc.weight"], w["encoder.fc.bias"])


def basic_block(x, w, prefix, stride):
    """torchvision's ResNet basic block (conv-bn-relu, conv-bn, shortcut, relu)."""
    out = relu(batch_norm(conv(x, w[prefix + "conv1.weight"], stride=stride, padding=1),
                          w, prefix + "bn1."))
    out = batch_norm(conv(out, w[prefix + "conv2.weight"], padding=1), w, prefix + "bn2.")
    if prefix + "downsample.0.weight" in w:
        x = batch_norm(conv(x, w[prefix + "downsample.0.weight"], stride=stride), w,
                       prefix + "downsample.1.")
    return relu(out + x)


def resnet18(image, w):
    """``Resnet18``: RGB (3, H, W) in [0, 1] -> c (c_dim,)."""
    f = "encoder.features."
    x = (image - IMAGE_MEAN[:, None, None]) / IMAGE_STD[:, None, None]
    x = relu(batch_norm(conv(x, w[f + "conv1.weight"], stride=2, padding=3), w, f + "bn1."))
    x = max_pool2d_3x3_s2(x)
    for layer in range(1, 5):
        for block in range(2):
            stride = 2 if layer > 1 and block == 0 else 1
            x = basic_block(x, w, f"{f}layer{layer}.{block}.", stride)
    return linear(x.mean(axis=(1, 2)), w["encoder.fc.weight"], w["encoder.fc.bias"])


ENCODERS = {"resnet_pointnet": resnet_pointnet, "voxel_simple": voxel_cnn, "resnet18": resnet18}


class OccupancyNetwork(NumpyModel):
    """A global ONet: ``encode_inputs`` (1, ...) -> c (1, c_dim); ``shape_decoder(c, z)``."""

    def __init__(self, weights: Weights, config: dict):
        super().__init__(weights, config)
        self.input_kind = config["input_kind"]
        self.z_dim = config["z_dim"]
        self.decoder = config["decoder"]
        self.encoder = config["encoder"]
        self.latent = config.get("encoder_latent")
        if self.encoder is not None and self.encoder["name"] not in ENCODERS:
            raise UserError(f"the bundled engine has no encoder {self.encoder['name']!r}: "
                            "use --engine torch")

    def encode_inputs(self, inputs):
        if self.encoder is None:
            return np.zeros((1, 0), np.float32)
        c = ENCODERS[self.encoder["name"]](np.asarray(inputs[0], np.float32), self.weights)
        return c[None].astype(np.float32)

    def infer_z(self, p, occupancies, c):
        """``LatentEncoder``: q(z | points (1, T, 3), occupancies (1, T), c) -> (mean, logstd)
        (1, z_dim); empty without a latent encoder."""
        if self.latent is None:
            return super().infer_z(p, occupancies, c)
        w, leaky = self.weights, self.latent["leaky"]
        act = (lambda x: np.where(x > 0, x, np.float32(0.2) * x)) if leaky else relu

        def pool(x):
            return x.mean(0) if leaky else x.max(0)

        p, occ = np.asarray(p[0], np.float32), np.asarray(occupancies[0], np.float32)
        e = "encoder_latent."
        net = linear(occ[:, None], w[e + "fc_0.weight"], w[e + "fc_0.bias"]) + \
            linear(p, w[e + "fc_pos.weight"], w[e + "fc_pos.bias"])
        if self.latent["c_dim"]:
            net = net + linear(c[0], w[e + "fc_c.weight"], w[e + "fc_c.bias"])
        net = linear(act(net), w[e + "fc_1.weight"], w[e + "fc_1.bias"])
        net = np.concatenate([net, np.broadcast_to(pool(net), net.shape)], axis=1)
        net = linear(act(net), w[e + "fc_2.weight"], w[e + "fc_2.bias"])
        net = np.concatenate([net, np.broadcast_to(pool(net), net.shape)], axis=1)
        net = pool(linear(act(net), w[e + "fc_3.weight"], w[e + "fc_3.bias"]))
        return (linear(net, w[e + "fc_mean.weight"], w[e + "fc_mean.bias"])[None],
                linear(net, w[e + "fc_logstd.weight"], w[e + "fc_logstd.bias"])[None])

    def _affine(self, c, prefix):
        """A conditional batch norm at ``prefix`` folded for code c (c_dim,): (scale, shift)."""
        w = self.weights
        kind = "fc" if self.decoder.get("legacy") else "conv"
        gamma = linear(c, w[f"{prefix}{kind}_gamma.weight"].reshape(-1, len(c)),
                       w[f"{prefix}{kind}_gamma.bias"])
        beta = linear(c, w[f"{prefix}{kind}_beta.weight"].reshape(-1, len(c)),
                      w[f"{prefix}{kind}_beta.bias"])
        scale = gamma / np.sqrt(w[prefix + "bn.running_var"] + BN_EPS)
        return scale, beta - scale * w[prefix + "bn.running_mean"]

    def shape_decoder(self, c, z):
        """The decoder folded for one shape, as ``onet.decoders.*.shape_decoder``."""
        w = self.weights
        c, z = np.asarray(c, np.float32)[0], np.asarray(z, np.float32)[0]
        d = "decoder."
        w_p = w[d + "fc_p.weight"].reshape(len(w[d + "fc_p.bias"]), 3)
        offset = w[d + "fc_p.bias"].copy()
        if self.z_dim:
            offset += linear(z, w[d + "fc_z.weight"], w[d + "fc_z.bias"])
        blocks = []
        if self.decoder["name"] == "cbatchnorm":
            for i in range(DECODER_BLOCKS):
                b = f"{d}block{i}."
                scale0, shift0 = self._affine(c, b + "bn_0.")
                scale1, shift1 = self._affine(c, b + "bn_1.")
                w0 = scale1[:, None] * w[b + "fc_0.weight"].reshape(len(scale1), -1)
                b0 = scale1 * w[b + "fc_0.bias"] + shift1
                blocks.append((scale0, shift0 + scale0 * offset, w0, b0,
                               w[b + "fc_1.weight"].reshape(len(offset), -1)))
                offset = offset + w[b + "fc_1.bias"]
            scale, shift = self._affine(c, d + "bn.")
            shift = shift + scale * offset
        else:  # the plain decoder of the unconditional model: scales 1
            if self.decoder["c_dim"]:
                offset += linear(c, w[d + "fc_c.weight"], w[d + "fc_c.bias"])
            ones = np.ones_like(offset)
            for i in range(DECODER_BLOCKS):
                b = f"{d}block{i}."
                blocks.append((ones, offset, w[b + "fc_0.weight"], w[b + "fc_0.bias"],
                               w[b + "fc_1.weight"]))
                offset = offset + w[b + "fc_1.bias"]
            scale, shift = ones, offset
        return ShapeDecoder(w_p, blocks, scale, shift, w[d + "fc_out.weight"].reshape(-1),
                            float(w[d + "fc_out.bias"][0]))


class ShapeDecoder:
    """``onet.decoders.ShapeDecoder`` in numpy: points (N, 3) -> logits (N,) float32."""

    def __init__(self, w_p, blocks, scale, shift, w_out, b_out):
        def f32(a):
            return np.ascontiguousarray(a, np.float32)

        self.w_p_t = f32(w_p.T)
        self.blocks = [(f32(s0), f32(t0), f32(w0.T), f32(b0), f32(w1.T))
                       for s0, t0, w0, b0, w1 in blocks]
        self.scale, self.shift = f32(scale), f32(shift)
        self.w_out, self.b_out = f32(w_out), np.float32(b_out)

    def __call__(self, points):
        points = np.ascontiguousarray(points, np.float32)
        logits = np.empty(len(points), np.float32)
        for start in range(0, len(points), CHUNK):
            p = points[start:start + CHUNK]
            x = p @ self.w_p_t
            for scale0, shift0, w0_t, b0, w1_t in self.blocks:
                h = x * scale0
                h += shift0
                np.maximum(h, 0, out=h)
                t = h @ w0_t
                t += b0
                np.maximum(t, 0, out=t)
                x += t @ w1_t
            x *= self.scale
            x += self.shift
            np.maximum(x, 0, out=x)
            logits[start:start + len(p)] = x @ self.w_out + self.b_out
        return logits
