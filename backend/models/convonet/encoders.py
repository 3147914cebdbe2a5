"""Encoders of Convolutional Occupancy Networks: input -> local feature volumes.

Both return ``{feature type: volume}``: planes ``(B, c_dim, R, R)`` for "xz", "xy", "yz",
a grid ``(B, c_dim, R, R, R)`` for "grid" (layout and coordinates: ``local_features``).
Names follow the official release (``pointnet_local_pool``, ``voxel_simple_local``) so its
checkpoints load with strict=True. ``plane_type`` lists the feature types; ``unet`` and
``unet3d`` are the keyword arguments of the planes' ``UNet`` and the grid's ``UNet3D`` (without
``channels``), None for none; ``padding`` is the margin of the cube the volumes span.
"""

import math

import torch
from torch import nn
from torch.nn import functional as F

from ...errors import UserError
from ..layers import ResnetBlockFC
from .features import FEATURE_TYPES, cell_index, normalize, pool_cells, scatter_mean
from .layout import BLUR_TAPS
from .unet import UNet, UNet3D


class _LocalEncoder(nn.Module):
    """What both encoders share: per-point features -> mean per cell -> U-Net per volume.

    Subclasses create their own layers, then call ``_add_volumes`` (so the U-Nets come last
    in the state_dict, as in the official files).
    """

    def _add_volumes(self, c_dim, plane_type, plane_resolution, grid_resolution, unet, unet3d,
                     padding):
        kinds = _check_types(plane_type, unet, unet3d)
        self.padding = padding
        self.unet = None if unet is None else UNet(c_dim, **unet)
        self.unet3d = None if unet3d is None else UNet3D(c_dim, **unet3d)
        self.shapes = {}  # feature type -> volume shape without (B, C), in summation order
        for kind in kinds:
            resolution = grid_resolution if kind == "grid" else plane_resolution
            net = self.unet3d if kind == "grid" else self.unet
            multiple = 1 if net is None else net.size_multiple
            if resolution < 1 or resolution % multiple:
                raise UserError(f"model config: the {kind} resolution {resolution} must be a "
                                f"positive multiple of {multiple} for its U-Net")
            self.shapes[kind] = (resolution,) * (3 if kind == "grid" else 2)

    def cells(self, p):
        """Points ``(B, T, 3)`` -> {feature type: flat cell index ``(B, T)``}."""
        return {kind: cell_index(normalize(p, kind, self.padding), shape[0])
                for kind, shape in self.shapes.items()}

    def volumes(self, cells, features):
        """Point features ``(B, T, C)`` in ``cells`` -> {feature type: volume}."""
        out = {}
        for kind, index in cells.items():
            shape = self.shapes[kind]
            volume = scatter_mean(features, index, math.prod(shape)).unflatten(2, shape)
            net = self.unet3d if kind == "grid" else self.unet
            out[kind] = volume if net is None else net(volume)
        return out


def _check_types(plane_type, unet, unet3d):
    """The feature types in summation order; UserError for unknown, repeated or missing ones,
    or a U-Net without volumes to run on."""
    if (not plane_type or len(set(plane_type)) != len(plane_type)
            or not set(plane_type) <= set(FEATURE_TYPES)):
        raise UserError(f"model config: plane_type must list distinct feature types of "
                        f"{', '.join(FEATURE_TYPES)}, got {plane_type!r}")
    if unet is not None and plane_type == ["grid"]:
        raise UserError("model config: 'unet' is for planes; a grid takes 'unet3d'")
    if unet3d is not None and "grid" not in plane_type:
        raise UserError("model config: 'unet3d' is for a grid; planes take 'unet'")
    return [kind for kind in FEATURE_TYPES if kind in plane_type]


class LocalPoolPointnet(_LocalEncoder):
    """PointNet with local pooling: points ``(B, T, 3)`` -> feature volumes.

    ``fc_pos`` then five residual blocks; before each of the last four, every point's features
    are concatenated with their maximum over the points sharing its cell, summed over the
    feature types. ``fc_c`` (no activation before it, as in the official code) gives the
    ``c_dim`` features that are averaged into the volumes.
    """

    input_kind = "pointcloud"

    def __init__(self, c_dim=32, hidden_dim=32, plane_type=("xz", "xy", "yz"),
                 plane_resolution=64, grid_resolution=32, unet=None, unet3d=None, padding=0.1):
        super().__init__()
        self.fc_pos = nn.Linear(3, 2 * hidden_dim)
        self.blocks = nn.ModuleList(ResnetBlockFC(2 * hidden_dim, hidden_dim) for _ in range(5))
        self.fc_c = nn.Linear(hidden_dim, c_dim)
        self._add_volumes(c_dim, list(plane_type), plane_resolution, grid_resolution, unet,
                          unet3d, padding)

    def forward(self, p):
        cells = self.cells(p)
        net = self.blocks[0](self.fc_pos(p))
        for block in self.blocks[1:]:
            pooled = sum(pool_cells(net, index, math.prod(self.shapes[kind]))
                         for kind, index in cells.items())
            net = block(torch.cat([net, pooled], dim=2))
        return self.volumes(cells, self.fc_c(net))


class LocalVoxelEncoder(_LocalEncoder):
    """Voxel grid ``(B, n, n, n)`` indexed [x, y, z] -> feature volumes.

    ``conv_in`` (``kernel_size``^3, 3 in the official models; ReLU) gives each voxel ``c_dim``
    features, which are averaged into the volumes at the voxel's position:
    ``linspace(-0.5, 0.5, n)`` per axis with ``sample_align="official"`` (as the official code
    places them, the outer voxels' centres on the cube's faces), the true centres
    ``(i + 0.5) / n - 0.5`` with "consistent".

    ``voxelisation_input``: the input is ``(B, 2, n, n, n)``, channel 0 the occupancy and
    channel 1 the grid's voxelisation (``voxel_channels``: the index of its rule in
    ``VOXELISATIONS`` in every voxel), which adds a learned offset per rule to every voxel's
    features: a grid alone cannot say whether the surface runs through its outer voxels
    ("touching") or between their centres and the empty ones ("centres").
    ``base_field`` (model level, see ``LocalDecoder``): the volume gets one more channel
    after the ``c_dim`` features, the occupancy blurred by [1, 2, 1] / 4 on every axis
    (``blur_kernel``), a smooth field whose 0.5 level is close to the grid's smoothed
    marching-cubes surface (wider blurs shrink it: on three unseen families' centres grids,
    two passes scored F-score@1% 0.964, four 0.856, one 0.971).
    """

    input_kind = "voxels"

    def __init__(self, c_dim=32, plane_type=("grid",), plane_resolution=64, grid_resolution=32,
                 unet=None, unet3d=None, padding=0.1, sample_align="consistent", kernel_size=3,
                 voxelisation_input=False, base_field=False):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise UserError(f"model config: kernel_size must be odd and positive, got "
                            f"{kernel_size}")
        # One input channel makes a wide kernel cheap: 7^3 sees 3 voxels on every side.
        self.conv_in = nn.Conv3d(1, c_dim, kernel_size, padding=kernel_size // 2)
        # A constant input channel would make the border voxels differ (zero padding): the
        # rule enters as a per-feature offset instead.
        self.fc_rule = nn.Linear(1, c_dim, bias=False) if voxelisation_input else None
        self.base_field = base_field
        if base_field:
            if list(plane_type) != ["grid"] or unet3d is not None:
                raise UserError("model config: base_field needs a single grid without a U-Net "
                                f"(plane_type ['grid'], unet3d null), got {list(plane_type)}")
            self.register_buffer("blur", blur_kernel(), persistent=False)
        self.sample_align = sample_align
        self._add_volumes(c_dim, list(plane_type), plane_resolution, grid_resolution, unet,
                          unet3d, padding)

    def split_input(self, x):
        """The input batch -> (occupancy ``(B, n, n, n)``, rule index ``(B,)`` or None)."""
        if self.fc_rule is None:
            if x.dim() != 4:
                raise ValueError(f"voxels must be (B, n, n, n), got {tuple(x.shape)}")
            return x, None
        if x.dim() != 5 or x.size(1) != 2:
            raise ValueError("this encoder takes (B, 2, n, n, n): occupancy and voxelisation "
                             f"(voxel_channels), got {tuple(x.shape)}")
        return x[:, 0], x[:, 1, 0, 0, 0]

    def voxel_centres(self, n, device):
        """Positions of an n^3 grid's voxels ``(n^3, 3)``, [x, y, z] with z fastest."""
        if self.sample_align == "official":
            axis = torch.linspace(-0.5, 0.5, n, device=device)
        else:
            axis = (torch.arange(n, device=device) + 0.5) / n - 0.5
        return torch.cartesian_prod(axis, axis, axis)

    def forward(self, x):
        occupancy, rule = self.split_input(x)
        conv = self.conv_in(occupancy.unsqueeze(1))  # (B, C, n, n, n) indexed [x, y, z]
        if rule is not None:
            conv = conv + self.fc_rule(rule[:, None].to(conv.dtype))[:, :, None, None, None]
        conv = F.relu(conv)
        if self.base_field:
            base = F.conv3d(occupancy.unsqueeze(1).to(conv.dtype), self.blur.to(conv.dtype),
                            padding=1)
            conv = torch.cat([conv, base], dim=1)
        n = occupancy.size(1)
        if self.one_voxel_per_cell(n):
            # Each grid cell holds exactly one voxel centre: the mean is the voxel itself,
            # so skip the scatter (2 s of a 5 s training step on a CPU). The grid's layout
            # (x fastest, see ``features``) is the voxels' [z, y, x].
            volume = conv.permute(0, 1, 4, 3, 2)
            return {"grid": volume if self.unet3d is None else self.unet3d(volume)}
        features = conv.flatten(2).transpose(1, 2)
        p = self.voxel_centres(n, x.device).expand(x.size(0), -1, -1)
        return self.volumes(self.cells(p), features)

    def one_voxel_per_cell(self, n: int) -> bool:
        """True when the only volume is a grid over the unpadded cube with the voxels' true
        centres, of n^3 cells or without a U-Net (the grid then takes the input's size n,
        ``layout.reads_native_grid``): cell i holds voxel i and nothing else."""
        return (list(self.shapes) == ["grid"] and self.padding == 0
                and self.sample_align == "consistent"
                and (self.shapes["grid"][0] == n or self.unet3d is None))


def blur_kernel():
    """``(1, 1, 3, 3, 3)`` float32: the separable [1, 2, 1] / 4 filter on every axis."""
    taps = torch.tensor(BLUR_TAPS)
    return (taps[:, None, None] * taps[None, :, None] * taps[None, None, :])[None, None]
