"""Model registry: configs (plain dicts, stored in checkpoint cards) -> modules.

A config names its architecture in "arch" and its parts by registry name, e.g.::

    {"arch": "onet", "input_kind": "pointcloud", "z_dim": 0,
     "encoder": {"name": "resnet_pointnet", "c_dim": 512, "hidden_dim": 512},
     "decoder": {"name": "cbatchnorm", "c_dim": 512, "z_dim": 0, "hidden_size": 256,
                 "legacy": False},
     "encoder_latent": None}

or, for a Convolutional Occupancy Network (local features; ``convonet``)::

    {"arch": "convonet", "input_kind": "pointcloud",
     "encoder": {"name": "pointnet_local_pool", "c_dim": 32, "hidden_dim": 32,
                 "plane_type": ["xz", "xy", "yz"], "plane_resolution": 64,
                 "unet": {"depth": 4, "start_filts": 32}},
     "decoder": {"name": "simple_local", "c_dim": 32, "hidden_size": 32},
     "padding": 0.1, "sample_align": "consistent"}

or, for a point-latent network (a feature per input point, after POCO; ``poco``)::

    {"arch": "poco", "input_kind": "pointcloud",
     "encoder": {"name": "point_unet", "c_dim": 32, "widths": [32, 64, 96], "k": 16},
     "decoder": {"name": "attention", "c_dim": 32, "hidden_size": 32, "k": 16, "heads": 4,
                 "n_blocks": 3}}

A part's keys are its class's constructor arguments; missing ones take the class defaults,
and ``model.config`` holds the completed config. Unknown names or keys raise ``UserError``.
ConvONet's ``padding``, ``sample_align`` (see ``local_features``) and ``base_field`` (see
``LocalDecoder``) are model-level: the parts that need them get them from there.
"""

import inspect

from ..errors import UserError
from .onet.decoders import Decoder, DecoderCBatchNorm
from .onet.encoders import Resnet18, ResnetPointnet, VoxelEncoder
from .convonet.model import ConvolutionalOccupancyNetwork
from .onet.latent import LatentEncoder
from .convonet.decoder import LocalDecoder
from .convonet.encoders import LocalPoolPointnet, LocalVoxelEncoder
from .convonet.features import ALIGNMENTS, SAMPLE_MODES
from .onet.model import OccupancyNetwork
from .poco.decoder import AttentionDecoder
from .poco.encoder import PointUNetEncoder
from .poco.model import PointLatentNetwork
from .convonet.unet import UNet, UNet3D

ENCODERS = {"resnet_pointnet": ResnetPointnet, "voxel_simple": VoxelEncoder, "resnet18": Resnet18}
DECODERS = {"cbatchnorm": DecoderCBatchNorm, "simple": Decoder}
LATENT_ENCODERS = {"simple": LatentEncoder}
LOCAL_ENCODERS = {"pointnet_local_pool": LocalPoolPointnet, "voxel_simple_local": LocalVoxelEncoder}
LOCAL_DECODERS = {"simple_local": LocalDecoder}
POINT_ENCODERS = {"point_unet": PointUNetEncoder}
POINT_DECODERS = {"attention": AttentionDecoder}
INPUT_KINDS = ("pointcloud", "voxels", "image")


def _cbn_decoder(c_dim, legacy=False):
    return {"name": "cbatchnorm", "c_dim": c_dim, "z_dim": 0, "hidden_size": 256, "legacy": legacy}


def _onet(input_kind, encoder, decoder, z_dim=0, encoder_latent=None):
    return {"arch": "onet", "input_kind": input_kind, "z_dim": z_dim, "encoder": encoder,
            "decoder": decoder, "encoder_latent": encoder_latent}


def _convonet(input_kind, plane_type):
    """A released ShapeNet ConvONet (its configs/{pointcloud,voxel}/shapenet_*.yaml)."""
    grid = plane_type == ["grid"]
    encoder = ({"name": "pointnet_local_pool", "c_dim": 32, "hidden_dim": 32}
               if input_kind == "pointcloud" else
               {"name": "voxel_simple_local", "c_dim": 32, "kernel_size": 3,
                "voxelisation_input": False})
    encoder.update(plane_type=plane_type, plane_resolution=64, grid_resolution=32,
                   unet=None if grid else {"depth": 4, "start_filts": 32},
                   unet3d={"num_levels": 3, "f_maps": 32, "num_groups": 8} if grid else None)
    decoder = {"name": "simple_local", "c_dim": 32, "hidden_size": 32, "sample_mode": "bilinear",
               "positions": True}
    # The released weights need the official sampling; fresh configs default to "consistent".
    return {"arch": "convonet", "input_kind": input_kind, "encoder": encoder,
            "decoder": decoder, "padding": 0.1, "sample_align": "official", "base_field": False}


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
    # ConvONet's (Peng et al. 2020) released ShapeNet models.
    "convonet_3plane": _convonet("pointcloud", ["xz", "xy", "yz"]),
    "convonet_grid32": _convonet("pointcloud", ["grid"]),
    "convonet_voxels_grid32": _convonet("voxels", ["grid"]),
}


def _type_name(default):
    return "a dict or null" if default is None else "list" if isinstance(default, tuple) \
        else type(default).__name__


def _fits(value, default):
    """Whether a config value has the type of the constructor default it replaces: tuple
    defaults take (JSON) lists, None defaults a sub-config dict or None. Otherwise the types
    must be equal: bool is an int subclass, so True is no width and 3 no flag."""
    if default is None:
        return value is None or isinstance(value, dict)
    if isinstance(default, tuple):
        return isinstance(value, list)
    return type(value) is type(default)


def _complete(cls, kwargs, where, owner="", skip=()):
    """Check ``kwargs`` against ``cls``'s constructor (without the parameters in ``skip``)
    -> every argument, defaults filled in (tuples as lists, as JSON gives them back)."""
    params = {key: p for key, p in inspect.signature(cls).parameters.items() if key not in skip}
    for key, value in kwargs.items():
        if key not in params:
            raise UserError(f"model config: unknown key '{where}.{key}'{owner} "
                            f"(allowed: {', '.join(params)})")
        if not _fits(value, params[key].default):
            raise UserError(f"model config: '{where}.{key}' must be "
                            f"{_type_name(params[key].default)}, got {value!r}")
    defaults = {key: list(p.default) if isinstance(p.default, tuple) else p.default
                for key, p in params.items()}
    return {**defaults, **kwargs}


def _build_part(registry, cfg, where, **shared):
    """Instantiate one part from ``{"name": ..., **kwargs}``; returns (module, completed cfg).

    ``shared`` are model-level settings (ConvONet's padding, sample_align), passed to the
    parts whose constructor takes them and not part of the part's own config.
    """
    if not isinstance(cfg, dict) or "name" not in cfg:
        raise UserError(f"model config: '{where}' must be a dict with a 'name' "
                        f"(one of: {', '.join(registry)})")
    name = cfg["name"]
    if name not in registry:
        raise UserError(f"model config: unknown {where} '{name}' (known: {', '.join(registry)})")
    cls = registry[name]
    shared = {key: value for key, value in shared.items()
              if key in inspect.signature(cls).parameters}
    kwargs = {key: value for key, value in cfg.items() if key != "name"}
    full = {"name": name, **_complete(cls, kwargs, where, f" for {where} '{name}'", shared)}
    return cls(**kwargs, **shared), full


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


def _with_unets(encoder):
    """The encoder config with its U-Net sub-configs checked and completed."""
    if not isinstance(encoder, dict):
        return encoder  # _build_part says what is wrong
    nets = {key: _complete(cls, encoder[key], f"encoder.{key}", skip=("channels",))
            for key, cls in (("unet", UNet), ("unet3d", UNet3D))
            if isinstance(encoder.get(key), dict)}
    return {**encoder, **nets}


def _build_convonet(config):
    allowed = ("arch", "input_kind", "encoder", "decoder", "padding", "sample_align",
               "base_field")
    for key in config:
        if key not in allowed:
            raise UserError(f"model config: unknown key '{key}' (allowed: {', '.join(allowed)})")
    padding, align = config.get("padding", 0.1), config.get("sample_align", "consistent")
    base_field = config.get("base_field", False)
    if type(base_field) is not bool:
        raise UserError(f"model config: base_field must be true or false, got {base_field!r}")
    if type(padding) is not float or padding < 0:
        raise UserError(f"model config: padding must be a float >= 0, got {padding!r}")
    if align not in ALIGNMENTS:
        raise UserError(f"model config: sample_align must be one of {', '.join(ALIGNMENTS)}, "
                        f"got {align!r}")
    encoder = config.get("encoder")
    if base_field and not (isinstance(encoder, dict)
                           and encoder.get("name") == "voxel_simple_local"):
        raise UserError("model config: base_field is for the voxel_simple_local encoder")
    shared = {"padding": padding, "sample_align": align, "base_field": base_field}
    encoder, encoder_cfg = _build_part(LOCAL_ENCODERS, _with_unets(config.get("encoder")),
                                       "encoder", **shared)
    input_kind = config.get("input_kind", encoder.input_kind)
    if input_kind != encoder.input_kind:
        raise UserError(f"model config: input_kind {input_kind!r} does not fit encoder "
                        f"{encoder_cfg['name']!r} ({encoder.input_kind})")
    decoder, decoder_cfg = _build_part(LOCAL_DECODERS, config.get("decoder"), "decoder", **shared)
    if decoder_cfg["c_dim"] != encoder_cfg["c_dim"]:
        raise UserError(f"model config: decoder c_dim {decoder_cfg['c_dim']} must equal the "
                        f"encoder's c_dim {encoder_cfg['c_dim']}")
    if decoder_cfg["sample_mode"] not in SAMPLE_MODES:
        raise UserError(f"model config: decoder.sample_mode must be one of "
                        f"{', '.join(SAMPLE_MODES)}, got {decoder_cfg['sample_mode']!r}")
    full = {"arch": "convonet", "input_kind": input_kind, "encoder": encoder_cfg,
            "decoder": decoder_cfg, **shared}
    return ConvolutionalOccupancyNetwork(decoder, encoder, input_kind, full)


def _build_poco(config):
    allowed = ("arch", "input_kind", "encoder", "decoder")
    for key in config:
        if key not in allowed:
            raise UserError(f"model config: unknown key '{key}' (allowed: {', '.join(allowed)})")
    if config.get("input_kind", "pointcloud") != "pointcloud":
        raise UserError(f"model config: arch 'poco' takes point clouds, not "
                        f"{config['input_kind']!r}")
    encoder, encoder_cfg = _build_part(POINT_ENCODERS, config.get("encoder"), "encoder")
    decoder, decoder_cfg = _build_part(POINT_DECODERS, config.get("decoder"), "decoder")
    if decoder_cfg["c_dim"] != encoder_cfg["c_dim"]:
        raise UserError(f"model config: decoder c_dim {decoder_cfg['c_dim']} must equal the "
                        f"encoder's c_dim {encoder_cfg['c_dim']}")
    full = {"arch": "poco", "input_kind": "pointcloud", "encoder": encoder_cfg,
            "decoder": decoder_cfg}
    return PointLatentNetwork(decoder, encoder, full)


# Architecture name -> builder(config) -> nn.Module with a ``config`` attribute.
ARCHITECTURES = {"onet": _build_onet, "convonet": _build_convonet, "poco": _build_poco}


def build_model(config):
    """Build a freshly initialised model (train mode) from a config dict; see module docs."""
    if not isinstance(config, dict):
        raise UserError(f"model config must be a dict, got {type(config).__name__}")
    arch = config.get("arch")
    if arch not in ARCHITECTURES:
        raise UserError(f"model config: unknown arch {arch!r} (known: {', '.join(ARCHITECTURES)})")
    return ARCHITECTURES[arch](config)
