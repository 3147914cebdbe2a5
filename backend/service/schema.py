"""Request schema: a decoded frame (JSON header + named arrays) -> ``ReconstructRequest``.

This module checks the wire's types and names only (docs/protocol.md); ranges and limits
are checked by ``ReconstructRequest.validate``, the same check the CLI runs. Field names
are the request's own (backend/engine/request.py).
"""

import hashlib
import json
import logging
from dataclasses import fields
from http import HTTPStatus
from typing import Optional

import numpy as np

from ..engine.request import PRECISIONS, ReconstructRequest, Sample, Settings, TilingOptions
from ..errors import LimitError, UserError
from ..io import inputs

logger = logging.getLogger(__name__)

PREVIEW_MISE = {"resolution0": 16, "upsampling_steps": 1}
MISE_FIELDS = ("resolution0", "upsampling_steps", "threshold")
OUTPUT_FIELDS = ("normals", "simplify", "refine_steps", "fill_cavities", "smooth_steps",
                 "drop_floaters")
INPUT_BUFFERS = ("points", "voxels", "image", "image_file")


class ApiError(Exception):
    """An error answered as JSON ``{"error": code, "message": ...}`` with an HTTP status."""

    def __init__(self, status, code, message):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def bad_request(message):
    return ApiError(HTTPStatus.BAD_REQUEST, "bad_request", message)


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def settings_from(header: dict, preview: bool = False) -> Settings:
    """Settings from the ``mise``, ``precision``, ``fit_steps``, ``rotations`` and ``output``
    fields (defaults: auto, the paper's 32 -> 128 or a finer voxel grid's own size ->
    4 times it; ``preview``: a quick 16 -> 32)."""
    values = {**(PREVIEW_MISE if preview else {})}
    for group, names in (("mise", MISE_FIELDS), ("output", OUTPUT_FIELDS)):
        given = header.get(group) or {}
        if not isinstance(given, dict):
            raise bad_request(f"'{group}' must be an object")
        for key, value in given.items():
            if key not in names:
                raise bad_request(f"unknown {group} option {key!r}; known: {', '.join(names)}")
            valid = {"resolution0": value is None or is_int(value),
                     "threshold": value is None or is_number(value),
                     "simplify": value is None or is_int(value),
                     "normals": isinstance(value, bool),
                     "smooth_steps": value is None or is_int(value),
                     "fill_cavities": isinstance(value, bool),
                     "drop_floaters": isinstance(value, bool)}.get(key, is_int(value))
            if not valid:
                raise bad_request(f"bad value for {group}.{key}: {value!r}")
            values[key] = value
    precision = header.get("precision", "auto")
    if precision not in PRECISIONS:
        raise bad_request(f"'precision' must be one of {', '.join(PRECISIONS)}")
    fit_steps = header.get("fit_steps", Settings.fit_steps)
    if not is_int(fit_steps):
        raise bad_request(f"'fit_steps' must be a whole number (got {fit_steps!r})")
    rotations = header.get("rotations", Settings.rotations)
    if not (rotations is None or is_int(rotations)):
        raise bad_request(f"'rotations' must be a whole number, or null for the model's own "
                          f"(got {rotations!r})")
    return Settings(**values, precision=precision, fit_steps=fit_steps, rotations=rotations)


def tiling_from(header: dict) -> Optional[TilingOptions]:
    """Tiling options from the ``tiling`` field, or None."""
    given = header.get("tiling")
    if given is None:
        return None
    if not isinstance(given, dict):
        raise bad_request("'tiling' must be an object or null")
    names = [f.name for f in fields(TilingOptions)]
    for key, value in given.items():
        if key not in names:
            raise bad_request(f"unknown tiling option {key!r}; known: {', '.join(names)}")
        valid = is_int(value) or value is None if key == "tile_points" else is_number(value)
        if not valid:
            raise bad_request(f"bad value for tiling.{key}: {value!r}")
    if "tile_size" not in given:
        raise bad_request("tiling.tile_size is required: the edge, in the input's units, "
                          "that the model sees as its unit cube")
    return TilingOptions(**given)


def input_from(header: dict, arrays: dict, limits) -> inputs.Input:
    """The one input buffer of a request, checked as the CLI checks files."""
    kinds = [name for name in INPUT_BUFFERS if name in arrays]
    if len(kinds) != 1:
        raise bad_request("send exactly one input buffer: 'points' (N, 3) float32,"
                          " 'voxels' (n, n, n) bool/uint8, 'image' (H, W, 3|4) uint8 or"
                          f" 'image_file' (encoded PNG/JPEG bytes); got {kinds or 'none'}")
    name = kinds[0]
    array = arrays[name]
    if name == "points":
        if array.dtype != np.float32:
            raise bad_request(f"'points' must be float32, got {array.dtype}")
        return inputs.PointCloudInput(inputs.validate_points(array, "request points",
                                                             max_points=limits.max_points))
    if name == "voxels":
        grid = array.astype(bool) if array.dtype == np.uint8 else array
        occupancy = inputs.validate_voxels(grid, "request voxels",
                                           max_dim=limits.max_voxel_dim)
        frame = header.get("voxel_frame") or {}
        if not isinstance(frame, dict):
            raise bad_request("'voxel_frame' must be an object {translate, scale}")
        translate, scale = inputs.validate_voxel_frame(
            frame.get("translate", inputs.UNIT_CUBE_TRANSLATE),
            frame.get("scale", inputs.UNIT_CUBE_SCALE), "request voxel_frame")
        voxelisation = inputs.check_voxelisation(
            header.get("voxelisation", inputs.VOXELISATIONS[0]), "request voxelisation")
        return inputs.VoxelInput(occupancy, translate, scale, voxelisation)
    if name == "image_file":
        import io

        rgba = inputs.decode_image(io.BytesIO(array.tobytes()), "request image_file",
                                   limits.max_image_pixels)
        array, name = rgba, "image"
    return inputs.ImageInput(inputs.image_array(array, f"request {name}",
                                                limits.max_image_pixels, arrays.get("mask")))


def occupancies_from(arrays: dict) -> Optional[np.ndarray]:
    """(N,) bool labels of the input points, for a generative model's q(z | points,
    occupancies); None when the request has none."""
    labels = arrays.get("occupancies")
    if labels is None:
        return None
    if labels.dtype not in (np.bool_, np.uint8) or labels.max(initial=0) > 1:
        raise bad_request("'occupancies' must be bool or uint8 0/1")
    return labels.astype(bool)


def sample_from(header: dict, arrays: dict) -> Sample:
    """The ``sample`` field, ``{"seed": S}``: a shape drawn from a generative model's prior
    (no input buffers)."""
    given = header["sample"]
    if not isinstance(given, dict) or set(given) != {"seed"}:
        raise bad_request("'sample' must be an object {\"seed\": whole number}")
    if not is_int(given["seed"]):
        raise bad_request(f"bad value for sample.seed: {given['seed']!r}")
    if arrays:
        raise bad_request(f"a sample takes no input buffers (got {', '.join(sorted(arrays))});"
                          " send either 'sample' or one input buffer")
    if header.get("tiling") is not None:
        raise bad_request("tiling works on point clouds only; leave it out for a sample")
    return Sample(given["seed"])


def request_from(header: dict, arrays: dict, limits) -> ReconstructRequest:
    """The ``ReconstructRequest`` of a /v1/reconstruct or /v1/encode frame, whose source is
    its input buffer or its ``sample`` (not yet validated against its model: that needs the
    model, ``ReconstructRequest.validate``)."""
    model = header.get("model")
    if model is not None and not isinstance(model, str):
        raise bad_request("'model' must be a model name (string) or null")
    if header.get("sample") is not None:
        return ReconstructRequest(sample_from(header, arrays), model, settings_from(header))
    try:
        return ReconstructRequest(input_from(header, arrays, limits), model,
                                  settings_from(header), tiling_from(header),
                                  occupancies=occupancies_from(arrays))
    except ApiError:
        raise
    except UserError as exc:
        raise user_error(exc) from None


def user_error(exc: UserError) -> ApiError:
    """The answer to a UserError: 413 for a limit, else 400."""
    if isinstance(exc, LimitError):
        return ApiError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "too_large", str(exc))
    return bad_request(str(exc))


def content_hash(header: dict, arrays: dict) -> str:
    """Stable key of model + input (or sample) + frame: equal inputs share one cached
    latent."""
    digest = hashlib.sha256(json.dumps([header.get("model"), header.get("sample")]).encode())
    for name in sorted(arrays):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(arrays[name]).tobytes())
    digest.update(json.dumps([header.get("voxel_frame"), header.get("voxelisation")],
                             sort_keys=True).encode())
    return digest.hexdigest()[:24]
