"""Convolutional Occupancy Network (Peng et al., ECCV 2020): local features, small decoder.

Attribute names (``encoder``, ``decoder``) are the state_dict prefixes of the official
checkpoints. Build instances with ``backend.models.build_model(config)``.
"""

import torch
from torch import nn


class ConvolutionalOccupancyNetwork(nn.Module):
    """An encoder from the input to feature volumes and a ``LocalDecoder``.

    Offers ``OccupancyNetwork``'s interface; the code c is a dict of feature volumes
    ``{"xz" | "xy" | "yz": (B, c_dim, R, R), "grid": (B, c_dim, R, R, R)}`` and there is no
    latent code (``z_dim`` 0). ``input_kind`` is "pointcloud" or "voxels"; ``config`` the
    plain-dict config the model was built from.
    """

    z_dim = 0
    local_features = True  # each query depends on the input near it: crops can be tiled
    encoder_latent = None  # no latent encoder, for code that asks (the trainer)

    def __init__(self, decoder, encoder, input_kind, config):
        super().__init__()
        self.decoder = decoder
        self.encoder = encoder
        self.input_kind = input_kind
        self.config = config

    def _empty(self, batch):
        return torch.empty(batch, 0, device=self.decoder.fc_p.weight.device)

    def encode_inputs(self, inputs):
        """Points ``(B, N, 3)`` or voxels ``(B, 32, 32, 32)`` -> c ``{type: volume}``."""
        return self.encoder(inputs)

    def infer_z(self, p, occ, c):
        """No latent code: empty (mean, logstd), each ``(B, 0)``."""
        return self._empty(p.size(0)), self._empty(p.size(0))

    def prior_z(self, batch):
        """No latent code: ``(batch, 0)``."""
        return self._empty(batch)

    def decode(self, p, z, c):
        """Logits ``(B, T)`` for points ``(B, T, 3)`` and volumes c (z is empty)."""
        return self.decoder(p, c)

    def shape_decoder(self, c, z=None, dtype=torch.float32):
        """Fast per-shape decoder for one shape's volumes c (batch 1).

        Returns ``f(points (N, 3)) -> logits (N,) float32`` equal to ``decode``, with its
        matmuls in ``dtype``; differentiable with respect to points that require grad.
        """
        return self.decoder.shape_decoder(c, dtype)
