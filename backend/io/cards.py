"""Model cards: the JSON file next to each model's weights (config, threshold, provenance)."""

import json
from pathlib import Path

from ..errors import UserError

# The surface's occupancy probability when a card names none (the papers' test threshold).
DEFAULT_THRESHOLD = 0.2


def read_card(path) -> dict:
    """The JSON card next to a safetensors file, as a dict (``threshold`` always set)."""
    card_path = Path(path).with_suffix(".json")
    try:
        card = json.loads(card_path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read model card {card_path}: {exc}")
    if not isinstance(card, dict):
        raise UserError(f"model card {card_path} is not a JSON object")
    card.setdefault("threshold", DEFAULT_THRESHOLD)
    return card
