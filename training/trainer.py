"""The ONet training step and validation (im2mesh ``onet/training.py`` semantics).

Loss (paper): binary cross-entropy on the query points' occupancy logits, summed over a
shape's points and averaged over the batch; the generative model adds
KL(q(z | p, occ) || N(0, I)) times ``kl_weight`` and decodes a z drawn with the
reparameterisation trick. Validation: IoU of the occupancies predicted at a shape's uniform
points (threshold 0.2, eval mode) against the labels, averaged over shapes.
"""

import math

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel

from backend.io.cards import DEFAULT_THRESHOLD as THRESHOLD



class OccupancyLoss(nn.Module):
    """The model and its loss in one ``forward``, the unit DistributedDataParallel wraps.

    forward(points ``(B, T, 3)``, occ ``(B, T)`` 0/1, inputs (the encoder's batch, or
    ``(B, 0)`` without one), noise ``(B, z_dim)`` standard normal) -> (bce ``(B,)`` summed
    over each shape's points, kl ``(B,)`` summed over z; zeros without a latent code).
    """

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, points, occ, inputs, noise):
        c = self.model.encode_inputs(inputs)
        mean, logstd = (t.float() for t in self.model.infer_z(points, occ, c))
        z = mean + torch.exp(logstd) * noise  # reparameterisation: gradients reach q
        # KL of N(mean, std^2) from N(0, 1), in closed form.
        kl = (0.5 * (mean ** 2 + torch.exp(2 * logstd) - 1) - logstd).sum(dim=-1)
        logits = self.model.decode(points, z, c)
        bce = F.binary_cross_entropy_with_logits(logits.float(), occ, reduction="none")
        return bce.sum(dim=-1), kl


def batch_inputs(model, batch, device):
    """The encoder input of a collated batch on ``device``; ``(B, 0)`` for unconditional models."""
    if model.input_kind is None:
        return torch.empty(len(batch["shape"]), 0, device=device)
    return batch["inputs"].to(device, non_blocking=True)


def iou(occ, pred):
    """Per-shape IoU of two ``(B, T)`` bool tensors -> ``(B,) float64``; 1 where both are empty."""
    union = (occ | pred).sum(dim=-1).double()
    inter = (occ & pred).sum(dim=-1).double()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def derived_seed(*keys):
    """A 32-bit seed from integer keys (e.g. seed, iteration, rank), well mixed."""
    return int(np.random.SeedSequence(keys).generate_state(1)[0])


class Trainer:
    """Runs training steps and validations of ``model`` with ``optimizer`` on ``device``.

    precision "bf16" autocasts the forward pass (CPU or CUDA); the loss stays float32.
    With ``distributed`` the step runs through DistributedDataParallel (gradients averaged
    over processes) and validation sums its counts over processes. The VAE noise of
    iteration i is drawn from a generator seeded by (seed, i, rank), so a resumed run
    draws the same noise as an uninterrupted one.
    """

    def __init__(self, model, optimizer, device, precision="fp32", kl_weight=1.0, seed=0,
                 rank=0, distributed=False):
        self.model = model
        self.optimizer = optimizer
        self.device = torch.device(device)
        self.dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        self.kl_weight = kl_weight
        self.seed = seed
        self.rank = rank
        self.distributed = distributed
        loss = OccupancyLoss(model)
        if distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            loss = DistributedDataParallel(loss, device_ids=ids)
        self.loss = loss
        self.noise = torch.Generator(device=self.device)

    def _autocast(self):
        return torch.autocast(self.device.type, self.dtype,
                              enabled=self.dtype != torch.float32)

    def train_step(self, batch, iteration):
        """One optimiser step on a collated batch -> {'loss', 'kl'} (batch means, floats)."""
        self.model.train()
        points = batch["points"].to(self.device, non_blocking=True)
        occ = batch["points.occ"].to(self.device, non_blocking=True)
        inputs = batch_inputs(self.model, batch, self.device)
        self.noise.manual_seed(derived_seed(self.seed, iteration, self.rank))
        noise = torch.randn(points.size(0), self.model.z_dim, generator=self.noise,
                            device=self.device)
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            bce, kl = self.loss(points, occ, inputs, noise)
        loss = (bce + self.kl_weight * kl).mean()
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.item(), "kl": kl.mean().item()}

    @torch.no_grad()
    def validate(self, loader):
        """Mean IoU over the shapes of ``loader`` (over all processes' shapes when
        distributed). Conditional models decode their input's code; the generative model
        decodes the mean of q(z | p, occ) of each shape's training-style points."""
        model = self.model
        model.eval()
        threshold = math.log(THRESHOLD / (1 - THRESHOLD))
        totals = torch.zeros(2, dtype=torch.float64, device=self.device)  # IoU sum, shapes
        for batch in loader:
            points = batch["points_iou"].to(self.device)
            occ = batch["points_iou.occ"].to(self.device) >= 0.5
            c = model.encode_inputs(batch_inputs(model, batch, self.device))
            if model.encoder_latent is not None:
                z, _ = model.infer_z(batch["points"].to(self.device),
                                     batch["points.occ"].to(self.device), c)
            else:
                z = model.prior_z(points.size(0))
            pred = model.decode(points, z, c) > threshold
            totals += torch.stack([iou(occ, pred).sum(), totals.new_tensor(len(pred))])
        if self.distributed:
            dist.all_reduce(totals)
        model.train()
        return (totals[0] / totals[1]).item()
