"""Building blocks of the Occupancy Network (im2mesh ``layers.py`` semantics and names).

Conventions: point features in the decoder travel as ``(B, C, T)`` (Conv1d layout, kernel 1,
as in the official code, so checkpoints load unchanged); codes ``c`` are ``(B, c_dim)``.
"""

import torch
from torch import nn
from torch.nn import functional as F


class ResnetBlockFC(nn.Module):
    """Fully connected residual block: ``x_s + fc_1(relu(fc_0(relu(x))))``.

    Works on ``(..., size_in) float32`` and returns ``(..., size_out)``. The shortcut is a
    bias-free Linear only when the sizes differ. ``fc_1`` starts at zero so every block starts
    as the identity.
    """

    def __init__(self, size_in, size_out=None, size_h=None):
        super().__init__()
        size_out = size_in if size_out is None else size_out
        size_h = min(size_in, size_out) if size_h is None else size_h
        self.fc_0 = nn.Linear(size_in, size_h)
        self.fc_1 = nn.Linear(size_h, size_out)
        self.shortcut = None if size_in == size_out else nn.Linear(size_in, size_out, bias=False)
        nn.init.zeros_(self.fc_1.weight)

    def forward(self, x):
        dx = self.fc_1(F.relu(self.fc_0(F.relu(x))))
        x_s = x if self.shortcut is None else self.shortcut(x)
        return x_s + dx


class _ConditionalBatchNorm(nn.Module):
    """Batch norm without its own affine, followed by a per-shape affine predicted from c.

    Subclasses create the gamma/beta layers (before ``bn``, so state_dict order matches the
    official files) and implement ``affine(c)``: c ``(B, c_dim)`` -> per-shape gamma and beta,
    each ``(B, f_dim)``.
    """

    def forward(self, x, c):
        """Normalise x ``(B, f_dim, T)`` and apply the affine predicted from c ``(B, c_dim)``."""
        gamma, beta = self.affine(c)
        return gamma.unsqueeze(2) * self.bn(x) + beta.unsqueeze(2)

    def folded(self, c):
        """Eval-mode layer as one affine map: ``(scale, shift)``, each ``(B, f_dim)``.

        ``forward(x, c) == scale[..., None] * x + shift[..., None]`` when the running
        statistics are used (eval mode), because then batch norm is itself affine.
        """
        gamma, beta = self.affine(c)
        scale = gamma * torch.rsqrt(self.bn.running_var + self.bn.eps)
        return scale, beta - scale * self.bn.running_mean


class CBatchNorm1d(_ConditionalBatchNorm):
    """Conditional batch norm with kernel-1 Conv1d gamma/beta layers (current im2mesh)."""

    def __init__(self, c_dim, f_dim):
        super().__init__()
        self.conv_gamma = nn.Conv1d(c_dim, f_dim, 1)
        self.conv_beta = nn.Conv1d(c_dim, f_dim, 1)
        self.bn = nn.BatchNorm1d(f_dim, affine=False)
        # Start as plain batch norm: gamma = 1, beta = 0 for every c.
        nn.init.zeros_(self.conv_gamma.weight)
        nn.init.zeros_(self.conv_beta.weight)
        nn.init.ones_(self.conv_gamma.bias)
        nn.init.zeros_(self.conv_beta.bias)

    def affine(self, c):
        # A kernel-1 conv on a length-1 sequence is a linear layer on c.
        gamma = F.linear(c, self.conv_gamma.weight.squeeze(2), self.conv_gamma.bias)
        beta = F.linear(c, self.conv_beta.weight.squeeze(2), self.conv_beta.bias)
        return gamma, beta


class CBatchNorm1dLegacy(_ConditionalBatchNorm):
    """Conditional batch norm with Linear gamma/beta layers (the paper-era image checkpoint)."""

    def __init__(self, c_dim, f_dim):
        super().__init__()
        self.fc_gamma = nn.Linear(c_dim, f_dim)
        self.fc_beta = nn.Linear(c_dim, f_dim)
        self.bn = nn.BatchNorm1d(f_dim, affine=False)
        nn.init.zeros_(self.fc_gamma.weight)
        nn.init.zeros_(self.fc_beta.weight)
        nn.init.ones_(self.fc_gamma.bias)
        nn.init.zeros_(self.fc_beta.bias)

    def affine(self, c):
        return self.fc_gamma(c), self.fc_beta(c)


class CResnetBlockConv1d(nn.Module):
    """Residual block with conditional batch norm on ``(B, C, T)`` features.

    ``x_s + fc_1(relu(bn_1(fc_0(relu(bn_0(x, c))), c)))``; ``fc_*`` are kernel-1 Conv1d,
    the shortcut a bias-free kernel-1 Conv1d only when the sizes differ.
    """

    def __init__(self, c_dim, size_in, size_h=None, size_out=None, legacy=False):
        super().__init__()
        size_h = size_in if size_h is None else size_h
        size_out = size_in if size_out is None else size_out
        norm = CBatchNorm1dLegacy if legacy else CBatchNorm1d
        self.bn_0 = norm(c_dim, size_in)
        self.bn_1 = norm(c_dim, size_h)
        self.fc_0 = nn.Conv1d(size_in, size_h, 1)
        self.fc_1 = nn.Conv1d(size_h, size_out, 1)
        self.shortcut = None if size_in == size_out else nn.Conv1d(size_in, size_out, 1, bias=False)
        nn.init.zeros_(self.fc_1.weight)

    def forward(self, x, c):
        net = self.fc_0(F.relu(self.bn_0(x, c)))
        dx = self.fc_1(F.relu(self.bn_1(net, c)))
        x_s = x if self.shortcut is None else self.shortcut(x)
        return x_s + dx


class LocalNetwork(nn.Module):
    """What the local-feature networks (ConvONet, point latents) share: an ``encoder`` from
    the input to a code c, a ``decoder`` of (points, c), and no latent code (``z_dim`` 0),
    behind ``OccupancyNetwork``'s interface. Subclasses add ``shape_decoder``."""

    z_dim = 0
    local_features = True  # a query depends on the input near it alone: crops can be tiled
    encoder_latent = None  # no latent encoder, for code that asks (the trainer)

    def __init__(self, decoder, encoder, config):
        super().__init__()
        self.decoder = decoder
        self.encoder = encoder
        self.config = config

    def _empty(self, batch):
        return torch.empty(batch, 0, device=next(self.decoder.parameters()).device)

    def encode_inputs(self, inputs):
        """The input batch -> the code c."""
        return self.encoder(inputs)

    def infer_z(self, p, occ, c):
        """No latent code: empty (mean, logstd), each ``(B, 0)``."""
        return self._empty(p.size(0)), self._empty(p.size(0))

    def prior_z(self, batch):
        """No latent code: ``(batch, 0)``."""
        return self._empty(batch)

    def decode(self, p, z, c):
        """Logits ``(B, T)`` for points ``(B, T, 3)`` and code c (z is empty)."""
        return self.decoder(p, c)
