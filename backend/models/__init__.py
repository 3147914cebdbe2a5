"""Model registry: configs (plain dicts, stored in checkpoint cards) -> modules.

A config names its architecture in "arch" and its parts by registry name, e.g.::

    {"arch": "onet", "input_kind": "pointcloud", "z_dim": 0,
     "encoder": {"name": "resnet_pointnet", "c_dim": 512, "hidden_dim": 512},
     "decoder": {"name": "cbatchnorm", "c_dim": 512, "z_dim": 0, "hidden_size": 256,
                 "legacy": False},
     "encoder_latent": None}

A part's keys are its class's constructor arguments; missing ones take the class defaults,
and ``model.config`` holds the completed config. Unknown names or keys raise ``UserError``.
"""

import inspect

from ..errors import UserError
from .decoders import Decoder, DecoderCBatchNorm
from .encoders import Resnet18, ResnetPointnet, VoxelEncoder
from .latent import LatentEncoder
from .onet import OccupancyNetwork

ENCODERS = {"resnet_pointnet": ResnetPointnet, "voxel_simple": VoxelEncoder, "resnet18": Resnet18}
DECODERS = {"cbatchnorm": DecoderCBatchNorm, "simple": Decoder}
LATENT_ENCODERS = {"simple": LatentEncoder}
INPUT_KINDS = ("pointcloud", "voxels", "image")


def _cbn_decoder(c_dim, legacy=False):
    return {"name": "cbatchnorm", "c_dim": c_dim, "z_dim": 0, "hidden_size": 256, "legacy": legacy}


def _onet(input_kind, encoder, decoder, z_dim=0, encoder_latent=None):
    return {"arch": "onet", "input_kind": input_kind, "z_dim": z_dim, "encoder": encoder,
            "decoder": decoder, "encoder_latent": encoder_latent}


# The configurations of the paper's released models (im2mesh configs/*/onet*.yaml).
PAPER_CONFIGS = {
    "pointcloud": _onet("pointcloud", {"name": "resnet_pointnet", "c_dim": 512, "hidden_dim": 512},
                        _cbn_decoder(512)),
    "voxels": _onet("voxels", {"name": "voxel_simple", "c_dim": 256, "width": 32},
                    _cbn_decoder(256)),
    "image": _onet("image", {"name": "resnet18", "c_dim": 256, "width": 64}, _cbn_decoder(256)),
    "image_legacy": _onet("image", {"name": "resnet18", "c_dim": 256, "width": 64},
                          _cbn_decoder(256, legacy=True)),
    "unconditional": _onet(
        None, None, {"name": "simple", "c_dim": 0, "z_dim": 128, "hidden_size": 128}, z_dim=128,
        encoder_latent={"name": "simple", "z_dim": 128, "c_dim": 0, "hidden_size": 128,
                        "leaky": True},
    ),
}


def _build_part(registry, cfg, where):
    """Instantiate one part from ``{"name": ..., **kwargs}``; returns (module, completed cfg)."""
    if not isinstance(cfg, dict) or "name" not in cfg:
        raise UserError(f"model config: '{where}' must be a dict with a 'name' "
                        f"(one of: {', '.join(registry)})")
    name = cfg["name"]
    if name not in registry:
        raise UserError(f"model config: unknown {where} '{name}' (known: {', '.join(registry)})")
    params = inspect.signature(registry[name]).parameters
    kwargs = {key: value for key, value in cfg.items() if key != "name"}
    for key, value in kwargs.items():
        if key not in params:
            raise UserError(f"model config: unknown key '{where}.{key}' for {where} '{name}' "
                            f"(allowed: {', '.join(params)})")
        default = params[key].default
        # bool is an int subclass: compare exact types so True is no width and 3 no flag.
        if type(value) is not type(default):
            raise UserError(f"model config: '{where}.{key}' must be {type(default).__name__}, "
                            f"got {value!r}")
    full = {"name": name, **{key: p.default for key, p in params.items()}, **kwargs}
    return registry[name](**kwargs), full


def _build_onet(config):
    allowed = ("arch", "input_kind", "z_dim", "encoder", "decoder", "encoder_latent")
    for key in config:
        if key not in allowed:
            raise UserError(f"model config: unknown key '{key}' (allowed: {', '.join(allowed)})")
    input_kind, z_dim = config.get("input_kind"), config.get("z_dim", 0)
    if input_kind is not None and input_kind not in INPUT_KINDS:
        raise UserError(f"model config: unknown input_kind {input_kind!r} "
                        f"(one of: {', '.join(INPUT_KINDS)}, or null for unconditional)")
    decoder, decoder_cfg = _build_part(DECODERS, config.get("decoder"), "decoder")
    encoder = encoder_cfg = None
    if config.get("encoder") is not None:
        encoder, encoder_cfg = _build_part(ENCODERS, config["encoder"], "encoder")
    if (encoder is None) != (input_kind is None) or (
            encoder is not None and encoder.input_kind != input_kind):
        raise UserError(f"model config: input_kind {input_kind!r} does not fit encoder "
                        f"{encoder_cfg and encoder_cfg['name']!r}")
    c_dim = encoder_cfg["c_dim"] if encoder_cfg else 0
    if decoder_cfg["c_dim"] != c_dim or decoder_cfg["z_dim"] != z_dim:
        raise UserError(f"model config: decoder c_dim/z_dim {decoder_cfg['c_dim']}/"
                        f"{decoder_cfg['z_dim']} must equal the encoder's c_dim {c_dim} and "
                        f"z_dim {z_dim}")
    latent = latent_cfg = None
    if config.get("encoder_latent") is not None:
        latent, latent_cfg = _build_part(LATENT_ENCODERS, config["encoder_latent"],
                                         "encoder_latent")
        if latent_cfg["z_dim"] != z_dim or latent_cfg["c_dim"] != c_dim:
            raise UserError(f"model config: encoder_latent z_dim/c_dim must be {z_dim}/{c_dim}")
    full = {"arch": "onet", "input_kind": input_kind, "z_dim": z_dim, "encoder": encoder_cfg,
            "decoder": decoder_cfg, "encoder_latent": latent_cfg}
    return OccupancyNetwork(decoder, encoder, latent, z_dim, input_kind, full)


# Architecture name -> builder(config) -> nn.Module with a ``config`` attribute.
ARCHITECTURES = {"onet": _build_onet}


def build_model(config):
    """Build a freshly initialised model (train mode) from a config dict; see module docs."""
    if not isinstance(config, dict):
        raise UserError(f"model config must be a dict, got {type(config).__name__}")
    arch = config.get("arch")
    if arch not in ARCHITECTURES:
        raise UserError(f"model config: unknown arch {arch!r} (known: {', '.join(ARCHITECTURES)})")
    return ARCHITECTURES[arch](config)
