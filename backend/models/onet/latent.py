"""Latent encoder of the generative ONet: q(z | points, occupancies, c) as a diagonal Gaussian.

im2mesh ``onet/models/encoder_latent.py`` semantics and names. ``leaky`` switches, as there,
both the activation (leaky ReLU, slope 0.2) and the pooling over points (mean instead of max).
"""

import torch
from torch import nn
from torch.nn import functional as F


class LatentEncoder(nn.Module):
    """Points ``(B, T, 3)``, occupancies ``(B, T)`` and c ``(B, c_dim)`` -> (mean, logstd).

    Both outputs are ``(B, z_dim) float32``; ``fc_c`` exists only for non-zero ``c_dim``.
    After fc_1 and fc_2 each point's features are concatenated with their pool over points.
    """

    def __init__(self, z_dim=128, c_dim=0, hidden_size=128, leaky=False):
        super().__init__()
        self.c_dim = c_dim
        self.leaky = leaky
        self.fc_pos = nn.Linear(3, hidden_size)
        if c_dim != 0:
            self.fc_c = nn.Linear(c_dim, hidden_size)
        self.fc_0 = nn.Linear(1, hidden_size)
        self.fc_1 = nn.Linear(hidden_size, hidden_size)
        self.fc_2 = nn.Linear(2 * hidden_size, hidden_size)
        self.fc_3 = nn.Linear(2 * hidden_size, hidden_size)
        self.fc_mean = nn.Linear(hidden_size, z_dim)
        self.fc_logstd = nn.Linear(hidden_size, z_dim)

    def _act(self, x):
        return F.leaky_relu(x, 0.2) if self.leaky else F.relu(x)

    def _pool(self, x, keepdim=False):
        """Pool ``(B, T, C)`` over the points."""
        if self.leaky:
            return x.mean(dim=1, keepdim=keepdim)
        return x.max(dim=1, keepdim=keepdim).values

    def forward(self, p, occ, c):
        net = self.fc_0(occ.unsqueeze(-1)) + self.fc_pos(p)
        if self.c_dim != 0:
            net = net + self.fc_c(c).unsqueeze(1)
        net = self.fc_1(self._act(net))
        net = torch.cat([net, self._pool(net, keepdim=True).expand_as(net)], dim=2)
        net = self.fc_2(self._act(net))
        net = torch.cat([net, self._pool(net, keepdim=True).expand_as(net)], dim=2)
        net = self._pool(self.fc_3(self._act(net)))
        return self.fc_mean(net), self.fc_logstd(net)
