"""What every bundled-engine model shares: its weights and config, no latent code."""

import logging

import numpy as np

from ...errors import UserError

logger = logging.getLogger(__name__)


class Weights(dict):
    """{state-dict name: float32 array}; a missing name is a UserError naming the file."""

    def __init__(self, tensors: dict, source: str):
        super().__init__({key: np.asarray(value, np.float32) for key, value in tensors.items()})
        self.source = source

    def __missing__(self, key):
        raise UserError(f"{self.source} has no tensor {key!r}, which its card's config needs: "
                        "the weights and the card do not belong together")


class NumpyModel:
    """A model of the bundled engine. Subclasses implement ``encode_inputs(inputs (1, ...))
    -> code c`` and ``shape_decoder(c, z) -> f(points (N, 3) float32) -> logits (N,)``;
    codes are numpy arrays or dicts of them. ``z_dim`` 0: no latent code."""

    engine = "bundled"
    z_dim = 0
    local_features = False
    input_kind = None

    def __init__(self, weights: Weights, config: dict):
        self.weights = weights
        self.config = config

    def prior_z(self, batch: int) -> np.ndarray:
        """The prior's mean: zeros (batch, z_dim)."""
        return np.zeros((batch, self.z_dim), np.float32)

    def infer_z(self, p, occupancies, c):
        """No latent encoder: empty (mean, logstd), each (1, 0)."""
        return self.prior_z(1), self.prior_z(1)
