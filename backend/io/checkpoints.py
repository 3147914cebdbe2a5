"""Model files: our safetensors + JSON card format, and the official im2mesh ``.pt`` files.

Our format is ``X.safetensors`` (the state_dict; no pickle, no code on load) with ``X.json``
next to it, the card: ``config`` (the model config, see ``backend.models``), ``threshold``
(occupancy probability, default 0.2), ``provenance``, ``metrics`` and free-form others.
Official checkpoints are ``torch.save`` dicts whose ``'model'`` entry is the state_dict; they
are read with ``weights_only=True`` and their architecture is recognised from tensor names
and shapes (``infer_config``).
"""

import hashlib
import json
import os
import re
import warnings
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import UnknownCheckpointError, UserError
from ..models import PAPER_CONFIGS, build_model

from .cards import DEFAULT_THRESHOLD

# im2mesh stores `loss_val_best` as a numpy.float64; numpy 1.x pickles it with these globals
# (numpy 2 names the first one numpy._core.multiarray.scalar). Nothing else is allowed.
_NUMPY_SCALAR_GLOBALS = [
    np.core.multiarray.scalar,
    (np.core.multiarray.scalar, "numpy._core.multiarray.scalar"),
    np.dtype,
    np.dtypes.Float64DType,
]


def save_model(path, model, card):
    """Write ``path`` (``.safetensors``) and its card ``path.with_suffix('.json')``.

    The card's ``config`` is always the model's own; ``threshold`` defaults to 0.2.
    Returns the card as written.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise UserError(f"model files must end in .safetensors, got {path.name}")
    tensors = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"format": "pt"})
    card = {**card, "config": model.config}
    card.setdefault("threshold", DEFAULT_THRESHOLD)
    path.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    return card


def load_model(path, device="cpu"):
    """Load our ``.safetensors`` (+ card) or an official ``.pt`` -> (model in eval mode, card)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        if path.suffix == ".safetensors":
            model, card = _load_safetensors(path)
        else:
            model, card = _load_official(path)
    except UserError as error:
        if path.name in str(error):
            raise
        raise type(error)(f"{path}: {error}") from None
    # Damaged files make torch.load, safetensors, the architecture inference and the model
    # constructors fail in many ways (IndexError, struct.error, AssertionError, ...): all
    # mean "not a usable checkpoint". MemoryError included (a size field gone wrong).
    except Exception as error:
        raise UserError(f"{path}: cannot be loaded as a model: the file is damaged or not a "
                        f"checkpoint ({type(error).__name__}: "
                        f"{' '.join(str(error).split())[:160]})") from None
    return model.to(device).eval(), card


def convert_checkpoint(in_pt, out_safetensors):
    """Convert an official ``.pt`` checkpoint to our format; returns the card written."""
    model, card = load_model(in_pt)
    return save_model(out_safetensors, model, card)


def infer_config(state_dict):
    """Recognise the architecture of a state_dict from tensor names and shapes -> config.

    Raises ``UnknownCheckpointError`` (saying what was found and what was expected) unless
    the config's model has exactly these tensor names and shapes. ConvONet checkpoints
    (``decoder.fc_c.0``) get the official feature sampling; see ``_infer_convonet`` for what
    their weights do not tell.
    """
    shapes = {key: tuple(value.shape) for key, value in state_dict.items()}
    if "decoder.fc_p.weight" not in shapes:
        raise _unknown(shapes, "no 'decoder.fc_p.weight' tensor")
    if "decoder.fc_c.0.weight" in shapes:
        config = _infer_convonet(shapes)
    else:
        decoder = _infer_decoder(shapes)
        input_kind, encoder = _infer_encoder(shapes)
        config = {
            "arch": "onet", "input_kind": input_kind, "z_dim": decoder["z_dim"],
            "encoder": encoder, "decoder": decoder, "encoder_latent": _infer_latent(shapes),
        }
    try:
        model = build_model(config)
    except UserError as error:
        raise _unknown(shapes, f"inconsistent sizes ({error})") from None
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if expected != shapes:
        raise _unknown(shapes, _difference(expected, shapes))
    return model.config


def _infer_decoder(shapes):
    fc_p = _shape(shapes, "decoder.fc_p.weight")
    if len(fc_p) not in (2, 3):
        raise _unknown(shapes, f"'decoder.fc_p.weight' of shape {list(fc_p)} is no Linear/Conv1d")
    hidden, _, *kernel = fc_p
    z_dim = shapes.get("decoder.fc_z.weight", (0, 0))[1]
    if not kernel:  # Linear fc_p: the plain decoder of the unconditional model.
        c_dim = shapes.get("decoder.fc_c.weight", (0, 0))[1]
        return {"name": "simple", "c_dim": c_dim, "z_dim": z_dim, "hidden_size": hidden}
    legacy = "decoder.bn.fc_gamma.weight" in shapes
    gamma = _shape(shapes, f"decoder.bn.{'fc' if legacy else 'conv'}_gamma.weight")
    return {"name": "cbatchnorm", "c_dim": gamma[1], "z_dim": z_dim, "hidden_size": hidden,
            "legacy": legacy}


def _infer_encoder(shapes):
    """(input_kind, encoder config) or (None, None) without ``encoder.*`` tensors."""
    if "encoder.fc_pos.weight" in shapes:
        hidden_dim = _shape(shapes, "encoder.fc_pos.weight")[0] // 2
        c_dim = _shape(shapes, "encoder.fc_c.weight")[0]
        return "pointcloud", {"name": "resnet_pointnet", "c_dim": c_dim, "hidden_dim": hidden_dim}
    if "encoder.conv_in.weight" in shapes:
        return "voxels", {"name": "voxel_simple", "c_dim": _shape(shapes, "encoder.fc.weight")[0],
                          "width": _shape(shapes, "encoder.conv_in.weight")[0]}
    if "encoder.features.conv1.weight" in shapes:
        return "image", {"name": "resnet18", "c_dim": _shape(shapes, "encoder.fc.weight")[0],
                         "width": _shape(shapes, "encoder.features.conv1.weight")[0]}
    if any(key.startswith("encoder.") for key in shapes):
        raise _unknown(shapes, "encoder tensors of no known encoder (ResNet-PointNet "
                               "'encoder.fc_pos', voxel CNN 'encoder.conv_in', ResNet-18 "
                               "'encoder.features')")
    return None, None


def _infer_latent(shapes):
    if "encoder_latent.fc_pos.weight" not in shapes:
        return None
    # Activation and pooling (``leaky``) leave no trace in the weights: assume the paper's.
    return {
        "name": "simple",
        "z_dim": _shape(shapes, "encoder_latent.fc_mean.weight")[0],
        "c_dim": shapes.get("encoder_latent.fc_c.weight", (0, 0))[1],
        "hidden_size": _shape(shapes, "encoder_latent.fc_pos.weight")[0],
        "leaky": PAPER_CONFIGS["unconditional"]["encoder_latent"]["leaky"],
    }


def _infer_convonet(shapes):
    """Config of an official ConvONet state_dict (``LocalDecoder`` + local encoder).

    The weights do not say which planes a plane model uses (1-plane "xz" and 3-plane
    checkpoints have the same tensors): 3 planes are assumed, so a converted 1-plane
    checkpoint needs ``encoder.plane_type`` set to ``["xz"]`` in its card. Nor do they give
    the resolution: every released config pairs a U-Net of depth d (planes) or d levels
    (grid) with resolution 2^(d + 2) (64 or 128 planes, 32 or 64 grids), used here.
    """
    c_dim = _shape(shapes, "decoder.fc_c.0.weight")[1]
    encoder = {"c_dim": c_dim, "plane_type": []}
    depth = _count(shapes, "encoder.unet.down_convs")
    if depth:
        start_filts = _shape(shapes, "encoder.unet.down_convs.0.conv1.weight")[0]
        encoder["plane_type"] += ["xz", "xy", "yz"]
        encoder.update(plane_resolution=2 ** (depth + 2),
                       unet={"depth": depth, "start_filts": start_filts})
    levels = _count(shapes, "encoder.unet3d.encoders")
    if levels:
        f_maps = _shape(shapes, "encoder.unet3d.encoders.0.basic_module.SingleConv2.conv.weight")
        encoder["plane_type"] += ["grid"]
        # Group norm's group count leaves no trace in the weights: the released models' 8.
        encoder.update(grid_resolution=2 ** (levels + 2),
                       unet3d={"num_levels": levels, "f_maps": f_maps[0], "num_groups": 8})
    if not encoder["plane_type"]:
        raise _unknown(shapes, "ConvONet tensors without 'encoder.unet' or 'encoder.unet3d', "
                               "so the feature planes or grid cannot be told")
    if "encoder.fc_pos.weight" in shapes:
        input_kind = "pointcloud"
        encoder.update(name="pointnet_local_pool",
                       hidden_dim=_shape(shapes, "encoder.fc_pos.weight")[0] // 2)
    elif "encoder.conv_in.weight" in shapes:
        input_kind = "voxels"
        encoder.update(name="voxel_simple_local",
                       kernel_size=_shape(shapes, "encoder.conv_in.weight")[-1])
    else:
        raise _unknown(shapes, "ConvONet encoder tensors of no known encoder (local-pool "
                               "PointNet 'encoder.fc_pos', voxel CNN 'encoder.conv_in')")
    decoder = {"name": "simple_local", "c_dim": c_dim,
               "hidden_size": _shape(shapes, "decoder.fc_p.weight")[0]}
    return {"arch": "convonet", "input_kind": input_kind, "encoder": encoder,
            "decoder": decoder, "padding": 0.1, "sample_align": "official"}


def _count(shapes, prefix):
    """How many numbered modules ``prefix.<i>.*`` the state_dict holds."""
    pattern = re.compile(re.escape(prefix) + r"\.(\d+)\.")
    return len({match.group(1) for key in shapes if (match := pattern.match(key))})


def _shape(shapes, key):
    if key not in shapes:
        raise _unknown(shapes, f"missing '{key}'")
    return shapes[key]


def _difference(expected, found):
    """One-line summary of how two {name: shape} dicts differ."""
    missing = sorted(expected.keys() - found.keys())
    unexpected = sorted(found.keys() - expected.keys())
    resized = sorted(k for k in expected.keys() & found.keys() if expected[k] != found[k])
    parts = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", resized)):
        if keys:
            more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
            parts.append(f"{label}: {', '.join(keys[:3])}{more}")
    return "; ".join(parts)


def _unknown(shapes, detail):
    groups = sorted({".".join(key.split(".")[:2]) for key in shapes})
    shown = ", ".join(groups[:8]) + (f" (+{len(groups) - 8} more)" if len(groups) > 8 else "")
    return UnknownCheckpointError(
        f"unrecognised checkpoint: {detail}. Found {len(shapes)} tensors in groups: "
        f"{shown or 'none'}. Expected an Occupancy Network state_dict (decoder.*, plus "
        f"encoder.* for point cloud / voxel / image input, encoder_latent.* for the generative "
        f"model) or a Convolutional Occupancy Network one (decoder.fc_c.0, encoder.unet or "
        f"encoder.unet3d) as saved by the official code or by this tool"
    )


def _load_safetensors(path):
    card_path = path.with_suffix(".json")
    if not card_path.is_file():
        raise UserError(f"{path.name} has no model card {card_path.name} next to it "
                        f"(the card holds the architecture config); copy it along with the weights")
    try:
        card = json.loads(card_path.read_text())
    except (ValueError, OSError) as error:
        raise UserError(f"model card {card_path} is not readable JSON: {error}") from None
    if not isinstance(card, dict) or "config" not in card:
        raise UserError(f"model card {card_path} has no 'config' entry")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise UserError(f"{path} is not a readable safetensors file: {error}") from None
    try:
        model = build_model(card["config"])
    except UserError as error:
        raise UserError(f"model card {card_path}: its config does not build a model "
                        f"({error})") from None
    except Exception as error:
        raise UserError(f"model card {card_path}: its config does not build a model "
                        f"({type(error).__name__}: {error})") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError:
        expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        found = {k: tuple(v.shape) for k, v in state.items()}
        raise UserError(f"{path.name} does not match the config in {card_path.name} "
                        f"({_difference(expected, found)})") from None
    card.setdefault("threshold", DEFAULT_THRESHOLD)
    return model, card


def _load_official(path):
    try:
        with torch.serialization.safe_globals(_NUMPY_SCALAR_GLOBALS), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Detected pickle protocol 4": refused below
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises many types on damaged files
        raise UserError(f"{path} is not a PyTorch checkpoint that loads safely (weights only): "
                        f"{_load_error_reason(error, path)}") from None
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise UserError(f"{path} is not a model checkpoint: expected a dict whose 'model' entry "
                        f"is a state_dict of tensors")
    try:
        config = infer_config(state)
    except UnknownCheckpointError as error:
        raise UnknownCheckpointError(f"{path.name}: {error}") from None
    model = build_model(config)
    model.load_state_dict(state, strict=True)
    card = {
        "config": model.config,
        "threshold": DEFAULT_THRESHOLD,
        "provenance": {
            "source": "official im2mesh checkpoint (torch.save dict)",
            "file": path.name,
            "sha256": file_sha256(path),
            **{key: int(checkpoint[key]) for key in ("it", "epoch_it") if key in checkpoint},
        },
        # im2mesh's `loss_val_best` is the best validation model-selection metric (IoU for ONet).
        "metrics": ({"loss_val_best": float(checkpoint["loss_val_best"])}
                    if "loss_val_best" in checkpoint else {}),
    }
    return model, card


def _load_error_reason(error, path=None):
    """One line on why torch.load refused a file (its own errors span several paragraphs)."""
    text = str(error)
    with open(path, "rb") if path else open(os.devnull, "rb") as f:
        start = f.read(4)
    is_pickle = start[:1] == b"\x80" or start[:2] == b"PK"  # a pickle, or torch's zip of one
    refused = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) (\S+)", text)
    if refused:
        return (f"it holds a Python object ({refused.group(1)}) that is not unpickled, for "
                f"safety; only tensors and plain values are read")
    if "Weights only load failed" in text and is_pickle:
        operand = re.search(r"Unsupported operand \d+|Unsupported class \S+", text)
        detail = f" ({operand.group(0)})" if operand else ""
        return (f"it holds pickle instructions or objects beyond tensors and plain values"
                f"{detail}, which are refused for safety; only tensors and plain values are "
                f"read")
    return (f"not a torch.save file, or a damaged one ({type(error).__name__}: "
            f"{' '.join(text.split())[:120]})")


def file_sha256(path):
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
