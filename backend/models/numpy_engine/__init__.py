"""The bundled engine: the bundled models in numpy alone, run by Blender's own Python.

``load_model(path)`` reads our ``.safetensors`` + card with the numpy ``safetensors`` reader
and builds the numpy twin of the card's architecture (``ARCHITECTURES``). Each model offers
what ``engine.generation.Generator`` needs: ``encode_inputs(inputs (1, ...)) -> c``,
``shape_decoder(c, z) -> f(points (N, 3) float32) -> logits (N,) float32``, ``prior_z``,
``infer_z``, ``z_dim``, ``input_kind``, ``local_features``, ``config``. Official ``.pt``
checkpoints and grid ConvONets with a 3D U-Net stay on the torch engine.
"""

import logging
from pathlib import Path

from ...errors import UserError
from ...io.cards import read_card
from .base import NumpyModel, Weights
from .convonet import ConvONet
from .onet import OccupancyNetwork
from .poco import PointLatentNetwork
from .safetensors import read_safetensors

logger = logging.getLogger(__name__)

ARCHITECTURES = {"onet": OccupancyNetwork, "convonet": ConvONet, "poco": PointLatentNetwork}

__all__ = ["ARCHITECTURES", "NumpyModel", "load_model"]


def load_model(path) -> tuple:
    """(numpy model, card) of our ``.safetensors`` file with its JSON card next to it."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise UserError(f"the bundled engine reads .safetensors models with their card; "
                        f"{path.name} needs the torch engine (--engine torch)")
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    card = read_card(path)
    config = card.get("config")
    if not isinstance(config, dict) or config.get("arch") not in ARCHITECTURES:
        raise UserError(f"model card {path.with_suffix('.json')}: config arch "
                        f"{None if not isinstance(config, dict) else config.get('arch')!r} "
                        f"is none the bundled engine runs ({', '.join(ARCHITECTURES)})")
    weights = Weights(read_safetensors(path), str(path))
    try:
        model = ARCHITECTURES[config["arch"]](weights, config)
    except (KeyError, TypeError) as error:
        raise UserError(f"model card {path.with_suffix('.json')}: its config is incomplete "
                        f"for the bundled engine ({type(error).__name__}: {error})") from None
    return model, card
