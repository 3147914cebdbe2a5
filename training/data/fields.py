"""Fields: how one kind of data is read from a shape folder (im2mesh ``data/fields.py``).

Each field names the files it needs in every shape folder (``required``, checked once when
a dataset is opened) and loads them with ``load(folder, rng)`` into float32 numpy arrays:
either one array or a dict whose ``None`` entry is the main array (the dataset flattens
``{None: x, 'occ': y}`` of field ``points`` to keys ``points`` and ``points.occ``).
``rng`` is the sample's ``numpy.random.Generator``; see ``transforms``.
"""

from pathlib import Path

import numpy as np

from backend.io.binvox import read_binvox
from backend.errors import UserError
from backend.engine.pipeline import prepare_image
from backend.engine.transforms import resample_voxels, voxel_channels

from .augment import augment_options
from .looks import composite, random_background
from .procedural import VOXEL_FILES
from .transforms import Compose, PointcloudNoise, SubsamplePointcloud, SubsamplePoints

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
VOXEL_RESOLUTION = 32  # the voxel encoder's input grid


def load_npz(path, keys):
    """The arrays ``keys`` of an ``.npz`` file (no pickles); UserError naming the file."""
    try:
        with np.load(path, allow_pickle=False) as arrays:
            missing = [key for key in keys if key not in arrays.files]
            if missing:
                raise UserError(f"{path}: has no array {', '.join(missing)} (it has "
                                f"{', '.join(arrays.files)}); regenerate it")
            return {key: arrays[key] for key in keys}
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: not a readable .npz file ({exc}); regenerate it") from None


def unpack_occupancies(occupancies, n):
    """Occupancies of ``n`` points -> ``(n,) float32`` 0/1; accepts ``np.packbits`` output
    (the official files) or one value per point."""
    if occupancies.dtype == np.uint8 and occupancies.size == (n + 7) // 8:
        occupancies = np.unpackbits(occupancies)[:n]
    return occupancies.reshape(n).astype(np.float32)


class PointsField:
    """Labelled query points: ``{None: (N, 3) float32, 'occ': (N,) float32}`` from a points
    file (``points`` and packed ``occupancies``), then ``transform``."""

    def __init__(self, file_name="points.npz", transform=None):
        self.file_name = file_name
        self.transform = transform
        self.required = (file_name,)

    def load(self, folder, rng):
        path = Path(folder) / self.file_name
        arrays = load_npz(path, ("points", "occupancies"))
        points = arrays["points"].astype(np.float32)
        try:
            occ = unpack_occupancies(arrays["occupancies"], len(points))
        except ValueError:
            raise UserError(f"{path}: 'occupancies' do not match the {len(points)} points "
                            "(expected np.packbits of one bool per point)") from None
        data = {None: points, "occ": occ}
        return data if self.transform is None else self.transform(data, rng)


class MixedPointsField:
    """``count`` training query points, drawn with replacement: ``round(near_share * count)``
    from the near-surface file where the shape has one, the rest from the uniform file.

    Official ShapeNet folders have no near-surface file: their shapes get uniform points
    only, as in the paper.
    """

    def __init__(self, count, near_share=0.5, uniform_file="points.npz",
                 near_file="points_near.npz"):
        self.count = count
        self.near_share = near_share
        self.uniform = PointsField(uniform_file)
        self.near = PointsField(near_file)
        self.required = self.uniform.required

    def load(self, folder, rng):
        folder = Path(folder)
        near = 0
        if self.near_share > 0 and (folder / self.near.file_name).is_file():
            near = round(self.count * self.near_share)
        parts = [SubsamplePoints(self.count - near)(self.uniform.load(folder, rng), rng)]
        if near:
            parts.append(SubsamplePoints(near)(self.near.load(folder, rng), rng))
        return {None: np.concatenate([part[None] for part in parts]),
                "occ": np.concatenate([part["occ"] for part in parts])}


class PointCloudField:
    """Surface points: ``{None: (N, 3) float32, 'normals': (N, 3) float32}``, then
    ``transform`` (subsampling and noise for the encoder input)."""

    def __init__(self, file_name="pointcloud.npz", transform=None):
        self.file_name = file_name
        self.transform = transform
        self.required = (file_name,)

    def load(self, folder, rng):
        arrays = load_npz(Path(folder) / self.file_name, ("points", "normals"))
        data = {None: arrays["points"].astype(np.float32),
                "normals": arrays["normals"].astype(np.float32)}
        return data if self.transform is None else self.transform(data, rng)


class VoxelsField:
    """Occupancy grid ``(32, 32, 32) float32`` indexed [x, y, z] from the binvox file of a
    voxelisation (``procedural.VOXEL_FILES``; other resolutions are resampled to 32^3);
    with several ``voxelisations`` each sample draws one from its generator. ``channels``:
    the encoder reads the grid's rule too, and gets ``voxel_channels`` ``(2, 32, 32, 32)``."""

    def __init__(self, voxelisations=("touching",), channels=False):
        self.voxelisations = tuple(voxelisations)
        self.channels = channels
        self.required = tuple(VOXEL_FILES[rule] for rule in self.voxelisations)

    def load(self, folder, rng):
        rule = self.voxelisations[rng.integers(len(self.voxelisations))] \
            if len(self.voxelisations) > 1 else self.voxelisations[0]
        occupancy, _, _ = read_binvox(Path(folder) / VOXEL_FILES[rule])
        if occupancy.shape[0] != VOXEL_RESOLUTION:
            occupancy = resample_voxels(occupancy, VOXEL_RESOLUTION)
        if self.channels:
            return voxel_channels(occupancy, rule)
        return occupancy.astype(np.float32)


class ImagesField:
    """One view ``(3, 224, 224) float32`` in [0, 1] from a folder of renderings.

    Training (``random_view``) picks a random view, evaluation the first one (by file
    name), as im2mesh does. The view goes through the backend's own preparation of a
    user's image (``backend.engine.image_view``: cut out, centred, on white, resized), so
    training and inference see the same pixels. ``backgrounds``: the share of RGBA views
    first laid opaque over a random plain background (``looks.random_background``), so the
    model learns from the foreground estimate a photo gets. Official folders hold
    ``000.jpg``..., ours ``000.png``... (RGBA).
    """

    def __init__(self, folder_name="img_choy2016", random_view=True, backgrounds=0.0):
        self.folder_name = folder_name
        self.random_view = random_view
        self.backgrounds = backgrounds
        self.required = (folder_name,)

    def load(self, folder, rng):
        from PIL import Image, UnidentifiedImageError

        views = sorted(path for path in (Path(folder) / self.folder_name).iterdir()
                       if path.suffix.lower() in IMAGE_EXTENSIONS)
        if not views:
            raise UserError(f"{Path(folder) / self.folder_name}: holds no .png or .jpg views")
        path = views[rng.integers(len(views)) if self.random_view else 0]
        try:
            with Image.open(path) as image:
                rgba = np.asarray(image.convert("RGBA"))
        except (UnidentifiedImageError, OSError) as exc:
            raise UserError(f"{path}: not a readable image ({exc}); regenerate it") from None
        if self.backgrounds and rng.random() < self.backgrounds and (rgba[..., 3] < 255).any():
            rgba = composite(rgba, random_background(*rgba.shape[:2], rng))
        return prepare_image(rgba).inputs[0]


# Input kind (config ``data.input``) -> field of the encoder's input, from the data section,
# whether it is for training (random views) or evaluation (the first view), and whether the
# encoder reads a voxel grid's rule.
INPUT_FIELDS = {
    "pointcloud": lambda data, training, rule: PointCloudField(transform=Compose([
        SubsamplePointcloud(data["input_points"]), PointcloudNoise(data["input_noise"])])),
    "voxels": lambda data, training, rule: VoxelsField(data["voxelisations"], channels=rule),
    "image": lambda data, training, rule: ImagesField(
        random_view=training, backgrounds=data["image_backgrounds"] if training else 0.0),
    "none": lambda data, training, rule: None,
}


def run_fields(data, training, latent=False, voxelisation_input=False):
    """The fields of a run, from the config's ``data`` section (see ``training.config``).

    Training: ``points`` (``data.points`` mixed query points) and ``inputs``. Evaluation:
    ``points_iou`` (the uniform points; all, or ``data.val_points`` drawn ones), ``inputs``,
    and for a generative model (``latent``) ``points`` too, to infer its q(z | p, occ).
    ``voxelisation_input``: the model's voxel encoder reads the grid's rule (its config's
    ``encoder.voxelisation_input``).
    With ``data.augment`` on, the training point-cloud field loads the whole cloud and
    ``training.data.augment.augment_sample`` makes the input (see ``ShapeDataset``).
    """
    fields = {}
    if training or latent:
        fields["points"] = MixedPointsField(data["points"], data["near_share"])
    if not training:
        subsample = data["val_points"] and SubsamplePoints(data["val_points"])
        fields["points_iou"] = PointsField("points.npz", subsample or None)
    if training and augment_options(data) is not None:
        # data.augment on: the whole cloud; augment_sample subsamples and adds the noise.
        inputs = PointCloudField()
    else:
        inputs = INPUT_FIELDS[data["input"]](data, training, voxelisation_input)
    if inputs is not None:
        fields["inputs"] = inputs
    return fields
