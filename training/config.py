"""Training configs: YAML files merged over the defaults and checked against ``SCHEMA``.

A config has four sections; every key but ``model`` has a default (see ``SCHEMA``)::

    model:       {paper: pointcloud | voxels | image | unconditional}, or a backend model
                 config dict as ``backend.models.build_model`` takes (arch, encoder, ...)
    data:        path, input (pointcloud | voxels | image | none; null: the model's),
                 input_points, input_noise, points, near_share, categories,
                 exclude_categories, val_points, augment (training-sample augmentations of
                 point-cloud runs, all off by default: rotation (none | up | any),
                 anisotropic_scale, points_range, noise_range ([min, max] pairs), sparse_fill
                 (resample | none),
                 partial_views ([min, max] viewpoints), partial_probability; see
                 ``training.data.augment``), voxelisations (voxel runs: the grids a sample
                 draws from, touching and/or centres), image_backgrounds (image runs: the
                 share of training views laid on a random plain background)
    training:    batch_size (shapes per iteration over all processes), lr, lr_milestones
                 (iterations where the lr is multiplied by lr_factor), max_iterations,
                 validate_every, checkpoint_every, log_every, seed, num_workers,
                 precision (fp32 | bf16), device (auto | cpu | cuda)
    generative:  kl_weight (the VAE's KL term; models without a latent code ignore it)

An unknown key or a value of the wrong type raises ``UserError`` naming the file, the key
path and the expected type. Numbers like ``1e-4`` read as floats (YAML 1.1 would read text).
"""

import copy
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from backend.errors import UserError
from backend.models import PAPER_CONFIGS, build_model

INPUT_KINDS = ("pointcloud", "voxels", "image", "none")


@dataclass(frozen=True)
class Option:
    """One config key: its type (float also takes ints), default, allowed values, bounds."""

    type: type
    default: object
    choices: tuple = ()
    nullable: bool = False
    minimum: float = None
    maximum: float = None
    items: type = None  # element type of a list
    pair: bool = False  # a list [min, max] of two items, min <= max (bounds apply to each)
    schema: dict = None  # a nested section: {key: Option}, merged over its defaults


# data.augment: applied to point-cloud training samples only (training.data.augment).
AUGMENT_SCHEMA = {
    "rotation": Option(str, "none", choices=("none", "up", "any")),  # up: about the y axis
    "anisotropic_scale": Option(list, None, nullable=True, items=float, pair=True,
                                minimum=1e-3),  # per-axis factors, log-uniform
    "points_range": Option(list, None, nullable=True, items=int, pair=True,
                           minimum=1),  # input points, log-uniform
    # How a sparse sample reaches input_points: resample (repeat points, as inference does
    # with the card's sparse_inputs) or none (distinct points only; collate trims each batch
    # to its first sample's count, for models that see neighbourhoods, where copies lie).
    "sparse_fill": Option(str, "resample", choices=("resample", "none")),
    "noise_range": Option(list, None, nullable=True, items=float, pair=True,
                          minimum=0),  # Gaussian noise std, uniform (replaces input_noise)
    "partial_views": Option(list, None, nullable=True, items=int, pair=True,
                            minimum=1),  # viewpoints of a partial scan
    "partial_probability": Option(float, 1.0, minimum=0, maximum=1),  # share made partial
}


SCHEMA = {
    "data": {
        "path": Option(str, None, nullable=True),  # required; --data overrides it
        "input": Option(str, None, choices=INPUT_KINDS, nullable=True),
        "input_points": Option(int, 300, minimum=1),  # encoder input points (point clouds)
        "input_noise": Option(float, 0.005, minimum=0),  # their noise, unit-cube units
        "points": Option(int, 2048, minimum=1),  # query points per shape and iteration
        "near_share": Option(float, 0.5, minimum=0, maximum=1),
        "categories": Option(list, None, nullable=True, items=str),  # null: all
        "exclude_categories": Option(list, [], items=str),
        "val_points": Option(int, None, nullable=True, minimum=1),  # IoU points; null: all
        "augment": Option(dict, None, schema=AUGMENT_SCHEMA),  # null: all off
        # voxel runs: the grids each sample draws from (training.data.procedural.VOXEL_FILES)
        "voxelisations": Option(list, ["touching"], items=str),
        # image runs: the share of training views put on a random plain background
        "image_backgrounds": Option(float, 0.0, minimum=0, maximum=1),
    },
    "training": {
        "batch_size": Option(int, 64, minimum=1),
        "lr": Option(float, 1e-4, minimum=0),
        "lr_milestones": Option(list, [], items=int),  # step decay; [] keeps lr constant
        "lr_factor": Option(float, 0.1, minimum=0),
        "max_iterations": Option(int, 300_000, minimum=1),
        "validate_every": Option(int, 2000, minimum=1),
        "checkpoint_every": Option(int, 1000, minimum=1),
        "log_every": Option(int, 10, minimum=1),
        "seed": Option(int, 0, minimum=0),
        "num_workers": Option(int, 2, minimum=0),
        "precision": Option(str, "fp32", choices=("fp32", "bf16")),
        "device": Option(str, "auto", choices=("auto", "cpu", "cuda")),
    },
    "generative": {
        "kl_weight": Option(float, 1.0, minimum=0),
    },
}


def learning_rate(training, iteration):
    """The lr of step ``iteration`` (0-based) for a config's ``training`` section: ``lr``
    times ``lr_factor`` for each of ``lr_milestones`` at or below ``iteration``."""
    passed = sum(1 for milestone in training["lr_milestones"] if milestone <= iteration)
    return training["lr"] * training["lr_factor"] ** passed


class _Loader(yaml.SafeLoader):
    """Safe YAML loader that also reads ``1e-4`` (no dot) as a float, as YAML 1.2 does."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def load_config(path, data_path=None):
    """Read config file ``path`` -> the complete, checked config dict.

    ``data_path`` (the command line's ``--data``) replaces ``data.path``. ``model`` comes
    back as the completed backend model config (``paper: NAME`` expanded).
    """
    path = Path(path)
    try:
        raw = yaml.load(path.read_text(), Loader=_Loader)
    except OSError as exc:
        raise UserError(f"config {path}: cannot be read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise UserError(f"config {path}: not valid YAML ({exc})") from None
    config = check_config(raw or {}, str(path))
    if data_path is not None:
        config["data"]["path"] = str(data_path)
    return config


def check_config(raw, source="config"):
    """Merge ``raw`` (a dict as read from YAML) over the defaults and check it; ``source``
    names the file in errors."""
    if not isinstance(raw, dict):
        raise UserError(f"{source}: expected a mapping with sections model, "
                        f"{', '.join(SCHEMA)}; got {type(raw).__name__}")
    unknown = [key for key in raw if key != "model" and key not in SCHEMA]
    if unknown:
        raise UserError(f"{source}: unknown key '{unknown[0]}' (allowed: model, "
                        f"{', '.join(SCHEMA)})")
    if "model" not in raw:
        raise UserError(f"{source}: missing the 'model' section ({{paper: pointcloud}}, say)")
    config = {"model": _model(raw["model"], source)}
    for section, options in SCHEMA.items():
        given = raw.get(section) or {}
        if not isinstance(given, dict):
            raise UserError(f"{source}: '{section}' must be a mapping of keys to values, "
                            f"got {given!r}")
        config[section] = _section(given, options, section, source)
    _check_input(config, source)
    return config


def _section(given, options, path, source):
    """Mapping ``given`` (keys checked) merged over the defaults of ``options``."""
    for key in given:
        if key not in options:
            raise UserError(f"{source}: unknown key '{path}.{key}' (allowed in "
                            f"{path}: {', '.join(options)})")
    return {key: _value(given[key], option, f"{path}.{key}", source)
            if key in given else _default(option) for key, option in options.items()}


def _default(option):
    if option.schema is not None:
        return {key: _default(sub) for key, sub in option.schema.items()}
    return copy.deepcopy(option.default)


def _model(value, source):
    """The backend model config of the ``model`` section, built once to check it."""
    if not isinstance(value, dict):
        raise UserError(f"{source}: 'model' must be a mapping: {{paper: NAME}} or a backend "
                        f"model config (arch, input_kind, encoder, decoder, ...)")
    if "paper" in value:
        name = value["paper"]
        if len(value) != 1 or name not in PAPER_CONFIGS:
            raise UserError(f"{source}: 'model.paper' must be alone and one of "
                            f"{', '.join(PAPER_CONFIGS)}, got {value!r}")
        value = PAPER_CONFIGS[name]
    try:
        return build_model(copy.deepcopy(value)).config
    except UserError as exc:
        raise UserError(f"{source}: {exc}") from None


def _value(value, option, key_path, source):
    """``value`` checked against ``option``; UserError naming the key path otherwise."""
    if option.schema is not None:
        if value is None:
            return _default(option)
        if not isinstance(value, dict):
            raise UserError(f"{source}: '{key_path}' must be a mapping of keys to values "
                            f"({', '.join(option.schema)}), got {value!r}")
        return _section(value, option.schema, key_path, source)
    if value is None and option.nullable:
        return None
    expected = option.type.__name__ + (" or null" if option.nullable else "")
    if option.items is not None:
        expected = f"a list of {option.items.__name__}" + (" or null" if option.nullable else "")
    # bool is an int subclass: compare exact types so `true` is not taken for a number.
    fits = type(value) is option.type or (option.type is float and type(value) is int)
    if option.pair:
        expected = f"a list [min, max] of two {option.items.__name__}" + (
            " or null" if option.nullable else "")
    if fits and option.items is not None:
        fits = all(type(item) is option.items
                   or (option.items is float and type(item) is int) for item in value)
    if fits and option.pair:
        fits = len(value) == 2
    if not fits:
        raise UserError(f"{source}: '{key_path}' must be {expected}, got {value!r} "
                        f"({type(value).__name__})")
    if option.pair:
        if value[0] > value[1]:
            raise UserError(f"{source}: '{key_path}' must be [min, max] with min <= max, "
                            f"got {value!r}")
        for item in value:
            _bounds(item, option, key_path, source)
        return [float(item) for item in value] if option.items is float else list(value)
    if option.choices and value not in option.choices:
        raise UserError(f"{source}: '{key_path}' must be one of {', '.join(option.choices)}, "
                        f"got {value!r}")
    _bounds(value, option, key_path, source)
    return float(value) if option.type is float else value


def _bounds(value, option, key_path, source):
    if option.minimum is not None and value < option.minimum:
        raise UserError(f"{source}: '{key_path}' must be >= {option.minimum}, got {value!r}")
    if option.maximum is not None and value > option.maximum:
        raise UserError(f"{source}: '{key_path}' must be <= {option.maximum}, got {value!r}")


def _check_input(config, source):
    """Fill ``data.input`` from the model, or refuse one the model cannot take."""
    model_input = config["model"]["input_kind"] or "none"
    given = config["data"]["input"]
    if given is not None and given != model_input:
        raise UserError(f"{source}: 'data.input' is {given} but the model takes "
                        f"{model_input}; drop data.input or change the model")
    config["data"]["input"] = model_input
    from training.data.procedural import VOXEL_FILES

    rules = config["data"]["voxelisations"]
    unknown = [rule for rule in rules if rule not in VOXEL_FILES]
    if unknown or not rules or len(set(rules)) != len(rules):
        raise UserError(f"{source}: 'data.voxelisations' lists distinct grids of "
                        f"{', '.join(VOXEL_FILES)}, got {rules!r}")
