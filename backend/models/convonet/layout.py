"""The ConvONet constants that both engines share (plain Python: no PyTorch needed).

Their meaning is documented in ``features`` (coordinates, cells, sampling).
"""

PLANE_AXES = {"xz": [0, 2], "xy": [0, 1], "yz": [1, 2]}
# Every feature type, in the order their contributions are summed.
FEATURE_TYPES = ("xz", "xy", "yz", "grid")
ALIGNMENTS = ("official", "consistent")
SAMPLE_MODES = ("bilinear", "nearest")
EPS = {"plane": 10e-6, "grid": 10e-4}  # the official margins, as written there
N_BLOCKS = 5  # residual blocks of the decoder
BLUR_TAPS = (0.25, 0.5, 0.25)  # the voxel base field's blur on every axis (encoders.blur_kernel)


def reads_native_grid(config: dict) -> bool:
    """Whether a ConvONet config (the model section: ``input_kind``, ``encoder``,
    ``padding``, ``sample_align``) reads voxel grids of any size at their own resolution: a
    voxel model whose only volume is a grid without a U-Net over the unpadded cube at the
    voxels' true centres holds one voxel per cell for any n (``LocalVoxelEncoder
    .one_voxel_per_cell``), so an n^3 grid needs no resampling to the trained 32^3."""
    encoder = config.get("encoder") or {}
    return (config.get("input_kind") == "voxels" and list(encoder.get("plane_type") or [])
            == ["grid"] and encoder.get("unet3d") is None and config.get("padding") == 0
            and config.get("sample_align") == "consistent")
