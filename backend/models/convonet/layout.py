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
