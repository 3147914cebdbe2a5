"""Point-latent occupancy network: a feature per input point, a decoder over each query's
nearest input points (after POCO, Boulch & Marlet, CVPR 2022; the backbone is a small
edge-convolution point U-Net instead of POCO's FKAConv). Build instances with
``backend.models.build_model(config)``.
"""

import torch
from torch import nn


class PointLatentNetwork(nn.Module):
    """A ``PointUNetEncoder`` and an ``AttentionDecoder``.

    Offers ``OccupancyNetwork``'s interface; the code c is a ``PointFeatures`` (the input
    points, a feature per point, the sampling scale) and there is no latent code
    (``z_dim`` 0). ``config`` is the plain-dict config the model was built from.
    """

    z_dim = 0
    input_kind = "pointcloud"
    local_features = True  # a query depends on the input near it alone: crops can be tiled
    encoder_latent = None  # no latent encoder, for code that asks (the trainer)

    def __init__(self, decoder, encoder, config):
        super().__init__()
        self.decoder = decoder
        self.encoder = encoder
        self.config = config

    def _empty(self, batch):
        return torch.empty(batch, 0, device=self.decoder.fc_out.weight.device)

    def encode_inputs(self, inputs):
        """Points (B, N, 3) float32 in the unit cube -> c ``PointFeatures``."""
        return self.encoder(inputs)

    def infer_z(self, p, occ, c):
        """No latent code: empty (mean, logstd), each (B, 0)."""
        return self._empty(p.size(0)), self._empty(p.size(0))

    def prior_z(self, batch):
        """No latent code: (batch, 0)."""
        return self._empty(batch)

    def decode(self, p, z, c):
        """Logits (B, T) for points (B, T, 3) and code c (z is empty)."""
        return self.decoder(p, c)

    def shape_decoder(self, c, z=None, dtype=torch.float32):
        """Fast per-shape decoder for one shape's code c (batch 1).

        Returns ``f(points (M, 3)) -> logits (M,) float32`` equal to ``decode`` up to the
        order of equidistant neighbours, its layers in ``dtype``; differentiable with
        respect to points that require grad.
        """
        return self.decoder.shape_decoder(c, dtype)
