"""The U-Nets that Convolutional Occupancy Networks run over their feature planes and grids.

Module names follow the official ConvONet release (``src/encoder/unet.py``, after
jaxony/unet-pytorch, and ``src/encoder/unet3d.py``, after wolny/pytorch-3dunet) so its
checkpoints load with strict=True. Both map features ``(B, C, R, ...)`` to the same shape.
"""

from collections import OrderedDict

import torch
from torch import nn
from torch.nn import functional as F


class DownConv(nn.Module):
    """Two 3x3 convolutions with ReLU, then an optional 2x2 max pool.

    forward(x ``(B, C_in, H, W)``) -> (pooled ``(B, C_out, H/2, W/2)``, or unpooled without
    pooling; the unpooled ``(B, C_out, H, W)``, which the skip connection takes).
    """

    def __init__(self, in_channels, out_channels, pooling):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.pooling = pooling

    def forward(self, x):
        x = F.relu(self.conv2(F.relu(self.conv1(x))))
        return (F.max_pool2d(x, 2) if self.pooling else x), x


class UpConv(nn.Module):
    """2x2 transposed convolution (halves the channels), concatenation with the skip features
    (upsampled first), two 3x3 convolutions with ReLU.

    forward(skip ``(B, C_out, 2H, 2W)``, x ``(B, C_in, H, W)``) -> ``(B, C_out, 2H, 2W)``.
    """

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.upconv = nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2)
        self.conv1 = nn.Conv2d(2 * out_channels, out_channels, 3, padding=1)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)

    def forward(self, skip, x):
        x = torch.cat([self.upconv(x), skip], dim=1)
        return F.relu(self.conv2(F.relu(self.conv1(x))))


class UNet(nn.Module):
    """2D U-Net: ``(B, channels, R, R) -> (B, channels, R, R)``; R divisible by 2^(depth-1).

    ``depth`` levels with ``start_filts * 2^i`` channels (i < depth), max pooling between them,
    transposed-convolution upsampling with concatenated skips, a final 1x1 convolution.
    """

    def __init__(self, channels, depth=4, start_filts=32):
        super().__init__()
        widths = [start_filts * 2 ** i for i in range(depth)]
        self.size_multiple = 2 ** (depth - 1)  # of the input's sides: each pooling halves them
        self.down_convs = nn.ModuleList(
            DownConv(channels if i == 0 else widths[i - 1], widths[i], pooling=i < depth - 1)
            for i in range(depth))
        self.up_convs = nn.ModuleList(UpConv(widths[i], widths[i - 1])
                                      for i in reversed(range(1, depth)))
        self.conv_final = nn.Conv2d(widths[0], channels, 1)
        # The official initialisation (transposed convolutions keep PyTorch's default).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_normal_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        skips = []
        for down in self.down_convs:
            x, before_pool = down(x)
            skips.append(before_pool)
        for up, skip in zip(self.up_convs, reversed(skips[:-1])):
            x = up(skip, x)
        return self.conv_final(x)


def _single_conv(in_channels, out_channels, num_groups):
    """GroupNorm -> 3x3x3 convolution (no bias) -> ReLU, pytorch-3dunet's order 'gcr'.

    Fewer channels than groups falls back to one group, as pytorch-3dunet does.
    """
    groups = 1 if in_channels < num_groups else num_groups
    return nn.Sequential(OrderedDict([
        ("groupnorm", nn.GroupNorm(groups, in_channels)),
        ("conv", nn.Conv3d(in_channels, out_channels, 3, padding=1, bias=False)),
        ("ReLU", nn.ReLU(inplace=True)),
    ]))


def _double_conv(in_channels, mid_channels, out_channels, num_groups):
    return nn.Sequential(OrderedDict([
        ("SingleConv1", _single_conv(in_channels, mid_channels, num_groups)),
        ("SingleConv2", _single_conv(mid_channels, out_channels, num_groups)),
    ]))


class Level3D(nn.Module):
    """One level of the 3D U-Net: ``basic_module`` is two 'gcr' convolutions.

    On the way down (``skip_channels`` 0) the input is max-pooled first unless ``pool`` is
    False; on the way up it is upsampled (nearest) to the skip features' size and
    concatenated after them, which is why the decoders' first group norms see
    ``skip + in`` channels (192 and 96 in the official grid models).
    """

    def __init__(self, in_channels, out_channels, num_groups, pool=True, skip_channels=0):
        super().__init__()
        self.pool = pool and not skip_channels
        if skip_channels:  # up: the first convolution already reduces the channels
            mid = out_channels
        else:  # down: pytorch-3dunet widens in the second convolution, not below the input
            mid = max(out_channels // 2, in_channels)
        self.basic_module = _double_conv(skip_channels + in_channels, mid, out_channels,
                                         num_groups)

    def forward(self, x, skip=None):
        if skip is not None:
            x = torch.cat([skip, F.interpolate(x, size=skip.shape[2:], mode="nearest")], dim=1)
        elif self.pool:
            x = F.max_pool3d(x, 2)
        return self.basic_module(x)


class UNet3D(nn.Module):
    """3D U-Net: ``(B, channels, R, R, R) -> (B, channels, R, R, R)``; R divisible by
    2^(num_levels-1).

    ``num_levels`` levels of ``f_maps * 2^i`` channels with group norm (``num_groups``),
    nearest-neighbour upsampling with concatenated skips, a final 1x1x1 convolution.
    """

    def __init__(self, channels, num_levels=3, f_maps=32, num_groups=8):
        super().__init__()
        widths = [f_maps * 2 ** i for i in range(num_levels)]
        self.size_multiple = 2 ** (num_levels - 1)  # of the input's sides
        self.encoders = nn.ModuleList(
            Level3D(channels if i == 0 else widths[i - 1], widths[i], num_groups, pool=i > 0)
            for i in range(num_levels))
        self.decoders = nn.ModuleList(
            Level3D(widths[i], widths[i - 1], num_groups, skip_channels=widths[i - 1])
            for i in reversed(range(1, num_levels)))
        self.final_conv = nn.Conv3d(widths[0], channels, 1)

    def forward(self, x):
        skips = []
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
        for decoder, skip in zip(self.decoders, reversed(skips[:-1])):
            x = decoder(x, skip)
        return self.final_conv(x)
