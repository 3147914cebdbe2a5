"""Shape datasets in the official Occupancy Networks layout (im2mesh ``data/core.py``).

``DIR/metadata.yaml`` (optional: category folder -> {id, name}), ``DIR/<category>/{train,val,
test}.lst`` (shape ids, one per line) and ``DIR/<category>/<shape>/`` holding the files the
fields read; ``training/data/procedural.py`` describes every file. A sample is a dict of
numpy arrays (one entry per field, see ``fields``) plus ``category``, ``shape`` and
``index``; ``collate`` stacks samples into a batch of tensors.
"""

from pathlib import Path

import numpy as np
import torch

from backend.errors import UserError
from backend.engine.transforms import normalize_points

from .augment import augment_sample

SPLITS = ("train", "val", "test")


def _hint(root):
    return (f"is {root} a dataset made by `python -m training.data procedural` "
            f"(or the official ONet preprocessing)?")


def dataset_categories(root, split="train"):
    """Category folder -> display name of dataset ``root``: the entries of ``metadata.yaml``
    when there is one (its ``name``, first of a comma-separated list), else every subfolder
    holding a ``<split>.lst`` (named after itself)."""
    import yaml

    root = Path(root)
    metadata = root / "metadata.yaml"
    if metadata.is_file():
        try:
            entries = yaml.safe_load(metadata.read_text())
        except yaml.YAMLError as exc:
            raise UserError(f"{metadata}: not valid YAML ({exc}); fix or delete it") from None
        if not isinstance(entries, dict):
            raise UserError(f"{metadata}: expected a mapping of category folder -> "
                            f"{{id, name}}; fix or delete it")
        return {str(key): str((value or {}).get("name", key)).split(",")[0]
                if isinstance(value, dict) else str(key) for key, value in entries.items()}
    return {path.name: path.name for path in sorted(root.iterdir())
            if (path / f"{split}.lst").is_file()}


def select_categories(root, include=None, exclude=()):
    """The categories of ``root`` in ``include`` (None: all) minus ``exclude``; UserError
    for names the dataset does not have."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"dataset folder {root} not found; give the folder written by "
                        f"`python -m training.data procedural --out DIR` (config data.path "
                        f"or --data)")
    available = dataset_categories(root)
    if not available:
        raise UserError(f"{root} holds no category folders with a train.lst: {_hint(root)}")
    unknown = [name for name in [*(include or ()), *exclude] if name not in available]
    if unknown:
        raise UserError(f"{root} has no category {', '.join(map(repr, unknown))} "
                        f"(it has: {', '.join(available)})")
    chosen = [name for name in (include or available) if name not in exclude]
    if not chosen:
        raise UserError(f"no categories left of {root} after excluding {', '.join(exclude)}")
    return chosen


class ShapeDataset:
    """The shapes of one split of dataset ``root``, loaded through ``fields``.

    fields: ``{name: field}`` (see ``fields``); categories: folder names (None: all);
    exclude: folder names to leave out. Sample ``index`` of epoch ``e`` draws its random
    choices from ``numpy.random.default_rng([seed, e, index])``, so it does not depend on
    the worker that loads it: ``dataset[e, index]``, or ``dataset[index]`` for the epoch
    of the last ``set_epoch`` (0 at first). augment:
    options of ``training.data.augment.augment_sample`` (``augment_options``; None: off),
    applied to each sample before ``normalize_inputs``.
    """

    def __init__(self, root, split, fields, categories=None, exclude=(), seed=0,
                 normalize_inputs=False, augment=None):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.root = Path(root)
        self.split = split
        self.fields = fields
        self.categories = select_categories(self.root, categories, exclude)
        self.seed = seed
        self.normalize_inputs = normalize_inputs
        self.augment = augment
        self.epoch = 0
        self.shapes = []  # (category, shape id)
        for category in self.categories:
            listing = self.root / category / f"{split}.lst"
            if not listing.is_file():
                raise UserError(f"{listing} not found: {_hint(self.root)}")
            ids = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
            self.shapes += [(category, shape) for shape in ids]
        if not self.shapes:
            raise UserError(f"the {split} split of {self.root} is empty (categories: "
                            f"{', '.join(self.categories)}); generate more shapes per class")
        self._check_complete()

    def _check_complete(self):
        """UserError naming the first missing file, before any training starts."""
        missing = [self.root / category / shape / name for category, shape in self.shapes
                   for field in self.fields.values() for name in field.required
                   if not (self.root / category / shape / name).exists()]
        if missing:
            raise UserError(f"{missing[0]} not found ({len(missing)} files missing in the "
                            f"{self.split} split; this training reads "
                            f"{', '.join(sorted({m.name for m in missing}))}): "
                            f"{_hint(self.root)}")

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return len(self.shapes)

    def __getitem__(self, key):
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        category, shape = self.shapes[index]
        folder = self.root / category / shape
        rng = np.random.default_rng([self.seed, epoch, index])
        sample = {"category": category, "shape": shape, "index": index}
        for name, field in self.fields.items():
            value = field.load(folder, rng)
            if isinstance(value, dict):
                sample.update({name if key is None else f"{name}.{key}": array
                               for key, array in value.items()})
            else:
                sample[name] = value
        if self.augment is not None:
            augment_sample(sample, rng, self.augment)
        if self.normalize_inputs:
            normalize_to_inputs(sample)
        return sample

    def split_sizes(self):
        """Shapes per split of the selected categories: {split: count}, 0 where the
        list file is missing."""
        sizes = {}
        for split in SPLITS:
            listings = [self.root / category / f"{split}.lst" for category in self.categories]
            sizes[split] = sum(len([line for line in path.read_text().splitlines()
                                    if line.strip()])
                               for path in listings if path.is_file())
        return sizes


def normalize_to_inputs(sample):
    """Move a point-cloud sample into its input cloud's own unit cube, in place.

    At inference the backend centres a cloud on its bounding box and divides by the longest
    edge (backend.engine.transforms.normalize_points); training does the same to the noisy input
    and moves the query points with it, so the network sees clouds framed as users' are.
    """
    unit, center, scale = normalize_points(sample["inputs"])
    sample["inputs"] = unit
    for key in ("points", "points_iou"):
        if key in sample:
            sample[key] = ((sample[key] - center) / scale).astype(np.float32)


def collate(samples):
    """Stack samples into a batch: arrays become tensors with a leading batch axis, other
    values (ids, indices) lists.

    Samples with ``inputs.count`` (``sparse_fill: none``) carry distinct input points in
    random order: every sample's inputs are cut to the first sample's count (and to the
    shortest cloud), so a batch holds one density and no repeated points. The cut clouds keep
    the whole cloud's framing, which models that see only offsets between points (poco)
    cannot tell.
    """
    if "inputs.count" in samples[0]:
        keep = min([samples[0]["inputs.count"], *(len(s["inputs"]) for s in samples)])
        samples = [{key: value[:keep] if key in ("inputs", "inputs.normals") else value
                    for key, value in sample.items() if key != "inputs.count"}
                   for sample in samples]
    batch = {}
    for key in samples[0]:
        values = [sample[key] for sample in samples]
        is_array = isinstance(values[0], np.ndarray)
        batch[key] = torch.from_numpy(np.stack(values)) if is_array else values
    return batch
