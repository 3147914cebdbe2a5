"""Input in the user's coordinates -> model input in the unit cube -> meshes back in them.

This is the one place that knows how each input kind is prepared for a model and how the
generated mesh is mapped back (DESIGN.md §3); the CLI and the server both call it.
"""

from dataclasses import dataclass, field, replace
from typing import Iterator, List

import numpy as np
import torch

from . import transforms
from ..errors import UserError
from .generation import Generator, MeshFrame

IMAGE_SIZE = 224  # the ONet image encoder's input size
KIND_NAMES = {"pointcloud": "a point cloud", "voxels": "a voxel grid", "image": "an image"}


@dataclass
class Prepared:
    """A model's input batch of one and where its unit cube sits in the input's coordinates:
    ``world = center + unit * scale`` (center (3,) float64, scale in the input's units)."""

    tensor: torch.Tensor
    center: np.ndarray
    scale: float
    notes: List[str] = field(default_factory=list)

    def to_world(self, vertices):
        """Unit-cube vertices (V, 3) -> the input's coordinates, (V, 3) float32."""
        return transforms.denormalize(vertices, self.center, self.scale).astype(np.float32)


def check_kind(inp, model):
    """UserError when the model is conditioned on another kind of input."""
    wanted = getattr(model, "input_kind", None)
    if wanted is not None and wanted != inp.kind:
        raise UserError(f"this model reconstructs from {KIND_NAMES[wanted]}, but the input is"
                        f" {KIND_NAMES[inp.kind]}; choose a {wanted} model")


def prepare(inp, model, card, seed=0) -> Prepared:
    """Turn a PointCloudInput / VoxelInput / ImageInput into the model's input tensor."""
    check_kind(inp, model)
    if inp.kind == "pointcloud":
        return prepare_points(inp.points, card, seed)
    if inp.kind == "voxels":
        return prepare_voxels(inp.occupancy, inp.translate, inp.scale)
    return prepare_image(inp.rgba)


def prepare_points(points, card, seed=0):
    """Normalise (N, 3) points into the unit cube; subsample to the card's input size.

    A model trained on sparse scans resampled with fresh noise (card ``sparse_inputs``:
    ``{"resample_to": n, "jitter": std in unit-cube units}``) gets a sparser cloud the same
    way: drawn with replacement to n points, each copy jittered.
    """
    notes = []
    rng = np.random.default_rng(seed)
    limit = card.get("input_points")
    if limit and len(points) > limit:
        keep = rng.choice(len(points), limit, replace=False)
        notes.append(f"subsampled {len(points)} points to the model's {limit}")
        points = points[np.sort(keep)]
    unit, center, scale = transforms.normalize_points(points)
    sparse = card.get("sparse_inputs")
    if sparse and len(unit) < sparse["resample_to"]:
        notes.append(f"resampled {len(unit)} points to {sparse['resample_to']} with jitter "
                     f"{sparse['jitter']}, as the model was trained on sparse scans")
        unit = resample_sparse(unit, sparse, rng)
    return Prepared(torch.from_numpy(unit)[None], center, scale, notes)


def resample_sparse(unit, sparse, rng):
    """Unit-cube points (N, 3) drawn with replacement to ``sparse["resample_to"]`` points,
    each copy jittered by ``sparse["jitter"]`` (std): how sparse scans were fed in training.
    Returns (resample_to, 3) float32."""
    unit = unit[rng.integers(len(unit), size=sparse["resample_to"])]
    return (unit + sparse["jitter"] * rng.standard_normal(unit.shape)).astype(np.float32)


def prepare_voxels(occupancy, translate, scale):
    """(n, n, n) bool grid -> (1, 32, 32, 32) float tensor; meshes go back to the grid's frame."""
    notes = []
    if occupancy.shape[0] != 32:
        notes.append(f"resampled the {occupancy.shape[0]}^3 grid to 32^3")
        occupancy = transforms.resample_voxels(occupancy, 32)
    center, size = transforms.voxel_world_transform(translate, scale)
    return Prepared(torch.from_numpy(occupancy.astype(np.float32))[None], center, size, notes)


def prepare_image(rgba):
    """(H, W, 4) uint8 -> (1, 3, 224, 224) float in [0, 1], composited over white.

    Images carry no coordinates: the mesh stays in the unit cube.
    """
    from PIL import Image

    rgb = rgba[..., :3].astype(np.float32) / 255.0
    alpha = rgba[..., 3:].astype(np.float32) / 255.0
    composite = (rgb * alpha + (1.0 - alpha)) * 255.0
    image = Image.fromarray(composite.round().astype(np.uint8))
    image = image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
    array = np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255.0
    return Prepared(torch.from_numpy(np.ascontiguousarray(array))[None], np.zeros(3), 1.0)


def to_world(frame: MeshFrame, prepared: Prepared) -> MeshFrame:
    """The frame with vertices in the input's coordinates (normals survive: scale is uniform)."""
    return replace(frame, vertices=prepared.to_world(frame.vertices))


def world_frames(generator: Generator, prepared: Prepared, should_stop=None,
                 started=None) -> Iterator[MeshFrame]:
    """Encode the prepared input once; yield its meshes level by level in its coordinates."""
    code = generator.encode(prepared.tensor)
    for frame in generator.frames(code, should_stop, started):
        yield to_world(frame, prepared)
