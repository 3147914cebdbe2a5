"""A training run's files: the last and best models and the resumable training state.

``model_last.safetensors`` / ``model_best.safetensors`` (each with its JSON card, see
``backend.io.checkpoints``) hold the weights; ``training_state.pt`` holds what else ``--resume``
needs: the optimizer state, the iteration, the best validation IoU and the wall time so far.
It is a ``torch.save`` of plain dicts, numbers and tensors, so it loads with
``weights_only=True``. All randomness of a run derives from (seed, iteration), which the
state and the config hold, so no generator state needs saving. Files are written under a
temporary name and renamed, so an interrupted save leaves the previous files whole.
"""

import os
from pathlib import Path

import torch

from backend.io.checkpoints import load_model, save_model
from backend.errors import UserError

MODEL_LAST = "model_last.safetensors"
MODEL_BEST = "model_best.safetensors"
STATE = "training_state.pt"
STATE_FORMAT = 1


def save_model_file(path, model, card):
    """``save_model`` to ``path`` (+ card) through temporary files; returns the card."""
    path = Path(path)
    temporary = path.with_name(path.stem + ".tmp.safetensors")
    card = save_model(temporary, model, card)
    os.replace(temporary, path)
    os.replace(temporary.with_suffix(".json"), path.with_suffix(".json"))
    return card


def save_state(run_dir, optimizer, iteration, best_iou, best_iteration, wall_seconds):
    """Write ``training_state.pt``; ``best_iou`` is None before the first validation."""
    state = {
        "format": STATE_FORMAT,
        "iteration": iteration,
        "best_iou": best_iou,
        "best_iteration": best_iteration,
        "wall_seconds": wall_seconds,
        "optimizer": optimizer.state_dict(),
    }
    path = Path(run_dir) / STATE
    temporary = path.with_name(path.name + ".tmp")
    torch.save(state, temporary)
    os.replace(temporary, path)


def load_run(run_dir, model_config):
    """The last model (train mode, CPU), its card and the training state of the run in
    ``run_dir``: ``(model, card, state)``.

    UserError when the run is missing, its model differs from ``model_config``, or the
    model and state files are from different iterations.
    """
    run_dir = Path(run_dir)
    state_path, model_path = run_dir / STATE, run_dir / MODEL_LAST
    if not state_path.is_file() or not model_path.is_file():
        raise UserError(f"{run_dir} holds no run to resume ({STATE} and {MODEL_LAST} "
                        f"are written at each checkpoint); drop --resume to start one")
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many types for damaged files
        raise UserError(f"{state_path}: cannot be read ({type(exc).__name__}); "
                        f"the run cannot be resumed") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise UserError(f"{state_path}: not a training state of this version")
    model, card = load_model(model_path)
    if model.config != model_config:
        raise UserError(f"the model of the config differs from the one in {model_path}; "
                        f"resume with the run's own config ({run_dir / 'config.yaml'})")
    if card.get("provenance", {}).get("iterations") != state["iteration"]:
        raise UserError(f"{model_path.name} and {STATE} in {run_dir} are from different "
                        f"iterations (a save was interrupted); the run cannot be resumed")
    return model.train(), card, state
