"""Point-latent occupancy network: a feature per input point, a decoder over each query's
nearest input points (after POCO, Boulch & Marlet, CVPR 2022; the backbone is a small
edge-convolution point U-Net instead of POCO's FKAConv). Build instances with
``backend.models.build_model(config)``.
"""

import torch

from ..layers import LocalNetwork


class PointLatentNetwork(LocalNetwork):
    """A ``PointUNetEncoder`` and an ``AttentionDecoder``.

    Offers ``OccupancyNetwork``'s interface; the code c is a ``PointFeatures`` (the input
    points, a feature per point, the sampling scale) and there is no latent code
    (``z_dim`` 0). ``config`` is the plain-dict config the model was built from.
    """

    input_kind = "pointcloud"

    def shape_decoder(self, c, z=None, dtype=torch.float32):
        """Fast per-shape decoder for one shape's code c (batch 1).

        Returns ``f(points (M, 3)) -> logits (M,) float32`` equal to ``decode`` up to the
        order of equidistant neighbours, its layers in ``dtype``; differentiable with
        respect to points that require grad.
        """
        return self.decoder.shape_decoder(c, dtype)
