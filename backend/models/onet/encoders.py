"""Input encoders of the Occupancy Network: point cloud, voxel grid and image -> code c.

Module names and shapes follow im2mesh (``encoder/pointnet.py``, ``encoder/voxels.py``,
``encoder/conv.py``) so official checkpoints load with strict=True. Each class names the
input it takes in ``input_kind``.
"""

import torch
from torch import nn
from torch.nn import functional as F

from ..layers import ResnetBlockFC


def _max_over_points(x, keepdim=False):
    """Max over the point axis of ``(B, T, C)`` features."""
    return x.max(dim=1, keepdim=keepdim).values


class ResnetPointnet(nn.Module):
    """PointNet with residual blocks: points ``(B, T, 3) float32`` -> c ``(B, c_dim)``.

    After each of the first four blocks the per-point features are concatenated with their
    max over the points, so every point sees a global summary.
    """

    input_kind = "pointcloud"

    def __init__(self, c_dim=512, hidden_dim=512):
        super().__init__()
        self.fc_pos = nn.Linear(3, 2 * hidden_dim)
        self.block_0 = ResnetBlockFC(2 * hidden_dim, hidden_dim)
        self.block_1 = ResnetBlockFC(2 * hidden_dim, hidden_dim)
        self.block_2 = ResnetBlockFC(2 * hidden_dim, hidden_dim)
        self.block_3 = ResnetBlockFC(2 * hidden_dim, hidden_dim)
        self.block_4 = ResnetBlockFC(2 * hidden_dim, hidden_dim)
        self.fc_c = nn.Linear(hidden_dim, c_dim)

    def forward(self, p):
        net = self.fc_pos(p)
        for block in (self.block_0, self.block_1, self.block_2, self.block_3):
            net = block(net)
            pooled = _max_over_points(net, keepdim=True).expand_as(net)
            net = torch.cat([net, pooled], dim=2)
        net = _max_over_points(self.block_4(net))
        return self.fc_c(F.relu(net))


class VoxelEncoder(nn.Module):
    """3D CNN: occupancy grid ``(B, 32, 32, 32) float32`` indexed [x, y, z] -> ``(B, c_dim)``.

    ``width`` is the first layer's channel count (the paper's 32), doubled at every stride.
    """

    input_kind = "voxels"

    def __init__(self, c_dim=256, width=32):
        super().__init__()
        self.conv_in = nn.Conv3d(1, width, 3, padding=1)
        self.conv_0 = nn.Conv3d(width, 2 * width, 3, padding=1, stride=2)
        self.conv_1 = nn.Conv3d(2 * width, 4 * width, 3, padding=1, stride=2)
        self.conv_2 = nn.Conv3d(4 * width, 8 * width, 3, padding=1, stride=2)
        self.conv_3 = nn.Conv3d(8 * width, 16 * width, 3, padding=1, stride=2)
        self.fc = nn.Linear(16 * width * 2 * 2 * 2, c_dim)

    def forward(self, x):
        net = self.conv_in(x.unsqueeze(1))
        for conv in (self.conv_0, self.conv_1, self.conv_2, self.conv_3):
            net = conv(F.relu(net))
        return self.fc(F.relu(net.flatten(1)))


class BasicBlock(nn.Module):
    """ResNet basic block with torchvision's module names (conv1, bn1, conv2, bn2, downsample)."""

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class ResNet18Features(nn.Module):
    """torchvision's resnet18 trunk with its fc removed: images ``(B, 3, H, W)`` ->
    ``(B, 8 * width)`` (512 at torchvision's width 64).

    Written out because torchvision is not part of our dependencies; the names match
    ``torchvision.models.resnet18`` so the official ``encoder.features.*`` tensors load as is.
    """

    def __init__(self, width=64):
        super().__init__()
        w = width  # torchvision's 64; narrower trunks keep small CPU models small
        self.conv1 = nn.Conv2d(3, w, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = nn.Sequential(BasicBlock(w, w), BasicBlock(w, w))
        self.layer2 = nn.Sequential(BasicBlock(w, 2 * w, 2), BasicBlock(2 * w, 2 * w))
        self.layer3 = nn.Sequential(BasicBlock(2 * w, 4 * w, 2), BasicBlock(4 * w, 4 * w))
        self.layer4 = nn.Sequential(BasicBlock(4 * w, 8 * w, 2), BasicBlock(8 * w, 8 * w))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        # torchvision's initialisation, which matters when training without ImageNet weights.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.avgpool(x).flatten(1)


class Resnet18(nn.Module):
    """Image encoder: RGB ``(B, 3, H, W) float32`` in [0, 1] -> c ``(B, c_dim)``.

    The ImageNet mean/std normalisation happens here (as in im2mesh), so callers pass plain
    [0, 1] colours. The paper uses 224 x 224 crops.
    """

    input_kind = "image"

    def __init__(self, c_dim=256, width=64):
        super().__init__()
        self.features = ResNet18Features(width)
        self.fc = nn.Linear(8 * width, c_dim)
        # Non-persistent: constants, not weights, so the state_dict keys match the official ones.
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)

    def forward(self, x):
        return self.fc(self.features((x - self.mean) / self.std))
