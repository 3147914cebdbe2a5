"""Closed-form occupancy functions that stand in for a trained network.

They let MISE, meshing, the CLI and the server be tested without weights: the surface is
known exactly, so a mesh can be checked against it. Logits are ``-sharpness * sdf``, so the
surface sits at logit 0 (probability 0.5, the threshold on their cards) and the logits have
the magnitudes of a trained ONet's.
"""

import torch

SHARPNESS = 50.0


def sphere_sdf(p, radius=0.35):
    """Signed distance to a sphere at the origin. p: (N, 3) tensor, unit-cube coordinates."""
    return p.norm(dim=-1) - radius


def box_sdf(p, center, half_size):
    """Signed distance to an axis-aligned box. p: (N, 3); center, half_size: (3,) sequences."""
    q = (p - p.new_tensor(center)).abs() - p.new_tensor(half_size)
    outside = q.clamp(min=0).norm(dim=-1)
    inside = q.max(dim=-1).values.clamp(max=0)
    return outside + inside


def capsule_sdf(p, a, b, radius):
    """Signed distance to a rod (capsule) from a to b with the given radius."""
    a, b = p.new_tensor(a), p.new_tensor(b)
    ab = b - a
    t = ((p - a) @ ab / ab.dot(ab)).clamp(0, 1)
    return (p - (a + t[:, None] * ab)).norm(dim=-1) - radius


# boxes_rods is laid out below, then centred and scaled so its bounding box has longest
# edge 1 like a normalised input: a scan of it comes back at its own size.
BOXES_RODS_CENTER = (-0.002, 0.1135, 0.013)
BOXES_RODS_SCALE = 1.0 / 0.738


def boxes_rods_sdf(p):
    """Two boxes joined by thin rods, plus a thin rod sticking out: a test of thin parts.

    The rods (radius 0.027) are thinner than a 32^3 cell (0.034) and much thinner than a
    16^3 cell, yet attached to the boxes, so MISE must follow them from the body.
    """
    k = BOXES_RODS_SCALE
    return k * _boxes_rods_layout(p / k + p.new_tensor(BOXES_RODS_CENTER))


def _boxes_rods_layout(p):
    d = torch.minimum(box_sdf(p, (-0.22, -0.05, 0.013), (0.151, 0.203, 0.187)),
                      box_sdf(p, (0.27, 0.07, -0.021), (0.097, 0.121, 0.143)))
    for a, b in [((-0.08, 0.0, 0.0), (0.2, 0.0, 0.0)),
                 ((-0.08, 0.12, 0.09), (0.2, 0.12, 0.09)),
                 ((0.27, 0.18, -0.021), (0.27, 0.46, -0.021))]:
        d = torch.minimum(d, capsule_sdf(p, a, b, 0.02))
    return d


SHAPES = {
    "sphere": sphere_sdf,
    "box": lambda p: box_sdf(p, (0.0, 0.0, 0.0), (0.301, 0.203, 0.127)),
    "boxes_rods": boxes_rods_sdf,
}


class AnalyticModel(torch.nn.Module):
    """Occupancy logits of a named closed-form shape; ignores the input.

    Exposes the same inference interface as ``OccupancyNetwork`` (``encode_inputs``,
    ``prior_z``, ``shape_decoder``), so everything downstream treats it like a network.
    """

    input_kind = None  # accepts any input and ignores it

    def __init__(self, shape="sphere"):
        super().__init__()
        if shape not in SHAPES:
            raise KeyError(shape)
        self.shape = shape
        self.config = {"arch": "analytic", "shape": shape}

    def encode_inputs(self, inputs):
        """No encoder: returns an empty code (B, 0)."""
        batch = inputs.shape[0] if isinstance(inputs, torch.Tensor) else 1
        return torch.zeros(batch, 0)

    def prior_z(self, batch):
        return torch.zeros(batch, 0)

    def decode(self, p, z=None, c=None):
        """Logits (B, T) at points p (B, T, 3), unit-cube coordinates."""
        flat = p.reshape(-1, 3).float()
        return (-SHARPNESS * SHAPES[self.shape](flat)).reshape(p.shape[:-1])

    def shape_decoder(self, c=None, z=None, dtype=torch.float32):
        """Callable mapping points (N, 3) to logits (N,) float32."""
        fn = SHAPES[self.shape]
        return lambda points: -SHARPNESS * fn(points.float())


def analytic_card(shape):
    """The card an analytic model is described by (threshold 0.5: the surface is at sdf 0)."""
    return {"name": f"analytic:{shape}", "config": {"arch": "analytic", "shape": shape},
            "threshold": 0.5, "input_kind": None,
            "provenance": "closed-form test shape, no training"}

