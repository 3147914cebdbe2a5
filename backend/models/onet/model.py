"""The Occupancy Network: an optional input encoder, an optional latent encoder, a decoder.

Attribute names (``encoder``, ``encoder_latent``, ``decoder``) are the state_dict prefixes of
the official checkpoints. Build instances with ``backend.models.build_model(config)``.
"""

import torch
from torch import nn


class OccupancyNetwork(nn.Module):
    """Occupancy Network (Mescheder et al. 2019), im2mesh ``onet/models`` semantics.

    ``input_kind`` is "pointcloud", "voxels", "image" (what ``encoder`` takes) or None for the
    unconditional model; ``z_dim`` is the latent size (0 without a latent code); ``config``
    is the plain-dict config the model was built from. Call ``eval()`` before inference:
    train-mode batch norm makes results depend on which points are queried together.
    """

    def __init__(self, decoder, encoder=None, encoder_latent=None, z_dim=0, input_kind=None,
                 config=None):
        super().__init__()
        self.decoder = decoder
        self.encoder = encoder
        self.encoder_latent = encoder_latent
        self.z_dim = z_dim
        self.input_kind = input_kind
        self.config = config

    def _empty(self, batch):
        return torch.empty(batch, 0, device=self.decoder.fc_p.weight.device)

    def encode_inputs(self, inputs):
        """Input -> c ``(B, c_dim) float32``.

        inputs: points ``(B, N, 3)``, voxels ``(B, 32, 32, 32)`` or images ``(B, 3, H, W)`` in
        [0, 1]. Without an encoder the result is empty, ``(B, 0)``; the unconditional model
        may be given ``None`` (one shape).
        """
        if self.encoder is None:
            return self._empty(1 if inputs is None else inputs.size(0))
        return self.encoder(inputs)

    def infer_z(self, p, occ, c):
        """Posterior q(z | p, occ, c): (mean, logstd), each ``(B, z_dim)``, from points
        ``(B, T, 3)`` with occupancies ``(B, T)``; empty ``(B, 0)`` without a latent encoder."""
        if self.encoder_latent is None:
            return self._empty(p.size(0)), self._empty(p.size(0))
        return self.encoder_latent(p, occ, c)

    def prior_z(self, batch):
        """Mean of the prior N(0, I): zeros ``(batch, z_dim)``."""
        return torch.zeros(batch, self.z_dim, device=self.decoder.fc_p.weight.device)

    def decode(self, p, z, c):
        """Logits ``(B, T)`` for points ``(B, T, 3)``, z ``(B, z_dim)`` and c ``(B, c_dim)``."""
        return self.decoder(p, z, c)

    def shape_decoder(self, c, z, dtype=torch.float32):
        """Fast per-shape decoder for one shape: c ``(1, c_dim)``, z ``(1, z_dim)``.

        Returns ``f(points (N, 3)) -> logits (N,) float32`` equal to ``decode`` in eval mode
        (it always uses batch norm's running statistics), with its matmuls in ``dtype``.
        Build it once per shape; it is the inference hot path. Differentiable with respect to
        points that require grad (the weights are constants).
        """
        return self.decoder.shape_decoder(c, z, dtype)
