"""Convolutional Occupancy Network (Peng et al., ECCV 2020): local features, small decoder.

Attribute names (``encoder``, ``decoder``) are the state_dict prefixes of the official
checkpoints. Build instances with ``backend.models.build_model(config)``.
"""

import torch

from ..layers import LocalNetwork


class ConvolutionalOccupancyNetwork(LocalNetwork):
    """An encoder from the input to feature volumes and a ``LocalDecoder``.

    Offers ``OccupancyNetwork``'s interface; the code c is a dict of feature volumes
    ``{"xz" | "xy" | "yz": (B, c_dim, R, R), "grid": (B, c_dim, R, R, R)}`` and there is no
    latent code (``z_dim`` 0). ``input_kind`` is "pointcloud" or "voxels"; ``config`` the
    plain-dict config the model was built from.
    """

    def __init__(self, decoder, encoder, input_kind, config):
        super().__init__(decoder, encoder, config)
        self.input_kind = input_kind

    def shape_decoder(self, c, z=None, dtype=torch.float32):
        """Fast per-shape decoder for one shape's volumes c (batch 1).

        Returns ``f(points (N, 3)) -> logits (N,) float32`` equal to ``decode``, with its
        matmuls in ``dtype``; differentiable with respect to points that require grad.
        """
        return self.decoder.shape_decoder(c, dtype)
