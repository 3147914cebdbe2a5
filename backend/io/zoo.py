"""Model names -> models: bundled weights, analytic test shapes, files on disk.

A name is resolved (``resolve``) in this order: ``analytic:<shape>``; the stem of a card in
the bundled folder (``backend/weights``) or in extra folders given by the user (``--models
DIR`` of the server); a path to our ``.safetensors`` or an official ``.pt``. Paths are
accepted anywhere from the CLI (``allow_paths``); the server accepts a path only when the
file lies inside one of its model folders, and answers every other path exactly as an
unknown name, so no file outside them can be read or even probed.
"""

import logging
from pathlib import Path

from ..engine.runtime import torch_importable
from ..errors import UserError
from .cards import read_card
from .inputs import KIND_NAMES

logger = logging.getLogger(__name__)

BUNDLED_DIR = Path(__file__).resolve().parents[1] / "weights"
ANALYTIC_PREFIX = "analytic:"


def catalogue(extra_dirs=()):
    """All named models: {name: card} with 'path' added; analytic shapes included where
    PyTorch is (they are torch modules)."""
    models = {}
    if torch_importable():
        from ..models.analytic import SHAPES, analytic_card

        models = {f"{ANALYTIC_PREFIX}{shape}": analytic_card(shape) for shape in SHAPES}
    for folder in (BUNDLED_DIR, *map(Path, extra_dirs)):
        for weights in sorted(Path(folder).glob("*.safetensors")):
            try:
                card = read_card(weights)
                if not isinstance(card, dict):
                    raise UserError(f"model card {weights.with_suffix('.json')} is not a JSON "
                                    "object")
            except UserError as exc:  # one broken card must not hide every other model
                logger.warning("skipping %s: %s", weights, exc)
                continue
            card["path"] = str(weights)
            card.setdefault("name", weights.stem)
            models[weights.stem] = card
    return models


def default_model_name(kind, extra_dirs=(), points=None):
    """The model a card marks as the default for this input kind; cards in ``extra_dirs``
    (the user's model folders) that claim it win over the bundled ones.

    A card may also bound its claim by input size: ``default_max_points`` N makes it the
    default only for point clouds of at most N points (``points``, the input's count before
    any subsampling); the tightest such bound wins, and a card without one is the default
    for every other input (and when the count is not known).
    """
    defaults = {name: card for name, card in catalogue(extra_dirs).items()
                if isinstance(card.get("default_for"), list) and kind in card["default_for"]}
    if not defaults:
        raise UserError(f"no bundled model for {KIND_NAMES.get(kind, kind)} yet; pass --model"
                        " with a checkpoint (.safetensors or official .pt) or analytic:sphere")
    users = {name: card for name, card in defaults.items()
             if Path(card["path"]).parent != BUNDLED_DIR}
    defaults = users or defaults  # the user's defaults replace the bundled ones wholesale
    bounds = {name: card.get("default_max_points") for name, card in defaults.items()}
    if points is not None:
        fitting = [name for name, bound in bounds.items()
                   if bound is not None and points <= bound]
        if fitting:
            return min(reversed(fitting), key=lambda name: bounds[name])  # ties: the last
    unbounded = [name for name, bound in bounds.items() if bound is None]
    return (unbounded or list(defaults))[-1]


MODEL_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt")


def resolve(name_or_path, extra_dirs=(), allow_paths=True):
    """(key, display name) of a model: key is ``analytic:<shape>`` or the resolved absolute
    path of its file, the same for every spelling of one file (the server's cache key).

    allow_paths: any file path is accepted (the CLI); otherwise only files inside the
    bundled folder and ``extra_dirs``. UserError for anything else, with one message for
    missing and existing files alike."""
    name = str(name_or_path)
    if name.startswith(ANALYTIC_PREFIX):
        if not torch_importable():
            raise UserError(f"{name} is a PyTorch test shape, and PyTorch is not installed "
                            "here; use a bundled model")
        from ..models.analytic import SHAPES

        shape = name[len(ANALYTIC_PREFIX):]
        if shape not in SHAPES:
            raise UserError(f"unknown analytic shape {shape!r}; choose one of:"
                            f" {', '.join(sorted(SHAPES))}")
        return name, name
    known = catalogue(extra_dirs)
    if name in known:
        return str(Path(known[name]["path"]).resolve()), name
    unknown = UserError(f"unknown model {name!r}; available: {', '.join(sorted(known))}"
                        + (" (or give a path to a .safetensors or official .pt file)"
                           if allow_paths else
                           " (a path must name a file in the server's --models folders)"))
    if "\0" in name or not name.strip():
        raise unknown
    try:
        path = Path(name).expanduser().resolve()
    except (OSError, RuntimeError, ValueError):
        raise unknown from None
    if not allow_paths:
        folders = [Path(folder).resolve() for folder in (BUNDLED_DIR, *extra_dirs)]
        if not (path.suffix in MODEL_SUFFIXES and any(path.is_relative_to(folder)
                                                      for folder in folders)):
            raise unknown
    by_path = {str(Path(card["path"]).resolve()): model for model, card in known.items()
               if "path" in card}
    if path.suffix in MODEL_SUFFIXES or path.exists() or not allow_paths:
        if not path.is_file():
            if not allow_paths:
                raise unknown
            raise UserError(f"model file not found: {name}" if not path.exists() else
                            f"model {name} is not a file; give a .safetensors or .pt file")
        return str(path), by_path.get(str(path), name)
    raise unknown


def load(name_or_path, device="cpu", extra_dirs=(), allow_paths=True, engine="torch"):
    """Load a model by name or path (``resolve``). Returns (model in eval mode, card)."""
    key, _ = resolve(name_or_path, extra_dirs, allow_paths)
    return load_resolved(key, device, engine)


def load_resolved(key, device="cpu", engine="torch"):
    """Load a model by the key ``resolve`` returned: (model in eval mode, card), a PyTorch
    module for ``engine`` "torch", a ``models.numpy_engine`` model for "bundled"."""
    if engine == "bundled":
        if key.startswith(ANALYTIC_PREFIX):
            raise UserError(f"{key} is a PyTorch test shape: use --engine torch")
        from ..models import numpy_engine

        return numpy_engine.load_model(Path(key))
    from ..models.analytic import AnalyticModel, analytic_card

    if key.startswith(ANALYTIC_PREFIX):
        shape = key[len(ANALYTIC_PREFIX):]
        return AnalyticModel(shape).eval(), analytic_card(shape)
    from . import checkpoints

    return checkpoints.load_model(Path(key), device)
