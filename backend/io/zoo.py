"""Model names -> models: bundled weights, analytic test shapes, files on disk.

A name is resolved in this order: ``analytic:<shape>``; a path to our ``.safetensors`` or an
official ``.pt``; the stem of a card in the bundled folder (``backend/weights``) or in extra
folders given by the user (``--models DIR`` of the server).
"""

import json
from pathlib import Path

from ..errors import UserError
from .inputs import KIND_NAMES

# The surface's occupancy probability when a card names none (the papers' test threshold).
DEFAULT_THRESHOLD = 0.2

BUNDLED_DIR = Path(__file__).resolve().parents[1] / "weights"
ANALYTIC_PREFIX = "analytic:"


def read_card(path):
    """The JSON card next to a safetensors file, as a dict (``threshold`` always set)."""
    try:
        card = json.loads(Path(path).with_suffix(".json").read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read model card {Path(path).with_suffix('.json')}: {exc}")
    card.setdefault("threshold", DEFAULT_THRESHOLD)
    return card


def catalogue(extra_dirs=()):
    """All named models: {name: card} with 'path' added; analytic shapes included."""
    from ..models.analytic import SHAPES, analytic_card

    models = {f"{ANALYTIC_PREFIX}{shape}": analytic_card(shape) for shape in SHAPES}
    for folder in (BUNDLED_DIR, *map(Path, extra_dirs)):
        for weights in sorted(Path(folder).glob("*.safetensors")):
            card = read_card(weights)
            card["path"] = str(weights)
            card.setdefault("name", weights.stem)
            models[weights.stem] = card
    return models


def default_model_name(kind, extra_dirs=()):
    """The model a card marks as the default for this input kind; a card in ``extra_dirs``
    (the user's model folders) wins over the bundled one."""
    defaults = [name for name, card in catalogue(extra_dirs).items()
                if kind in card.get("default_for", ())]
    if not defaults:
        raise UserError(f"no bundled model for {KIND_NAMES.get(kind, kind)} yet; pass --model"
                        " with a checkpoint (.safetensors or official .pt) or analytic:sphere")
    return defaults[-1]


def load(name_or_path, device="cpu", extra_dirs=()):
    """Load a model by name or path. Returns (model in eval mode, card dict)."""
    from ..models.analytic import SHAPES, AnalyticModel, analytic_card

    name = str(name_or_path)
    if name.startswith(ANALYTIC_PREFIX):
        shape = name[len(ANALYTIC_PREFIX):]
        if shape not in SHAPES:
            raise UserError(f"unknown analytic shape {shape!r}; choose one of:"
                            f" {', '.join(sorted(SHAPES))}")
        return AnalyticModel(shape).eval(), analytic_card(shape)
    from . import checkpoints

    path = Path(name).expanduser()
    if path.suffix in (".safetensors", ".pt", ".pth", ".ckpt") or path.exists():
        if not path.is_file():
            raise UserError(f"model file not found: {path}")
        return checkpoints.load_model(path, device)
    known = catalogue(extra_dirs)
    if name in known:
        return checkpoints.load_model(known[name]["path"], device)
    raise UserError(f"unknown model {name!r}; available: {', '.join(sorted(known))}"
                    " (or give a path to a .safetensors or official .pt file)")
