"""Read and write the binvox voxel format (https://www.patrickmin.com/binvox/binvox.html).

A file is an ASCII header (``#binvox 1``, ``dim d d d``, ``translate tx ty tz``,
``scale s``, ``data``) followed by run-length-encoded bytes: (value, count) pairs with
count 1..255. The voxels are stored in x-z-y order (y runs fastest, then z, then x); the
arrays here are indexed [x, y, z], like the official ONet ``binvox_rw.read_as_3d_array``.
World frame: voxel i's centre lies at ``translate + (i + 0.5) / dim * scale``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from ..errors import UserError

# 512^3 booleans are 128 MiB; larger grids are refused before any voxel data is decoded.
MAX_VOXEL_DIM = 512

_MAX_HEADER_LINES = 8
_MAX_HEADER_LINE_BYTES = 256


def read_binvox(
    path: str | os.PathLike, *, max_dim: int = MAX_VOXEL_DIM
) -> tuple[np.ndarray, np.ndarray, float]:
    """Read a binvox file.

    Returns ``(occupancy, translate, scale)``: occupancy ``(n, n, n) bool`` indexed
    [x, y, z], translate ``(3,) float64`` and scale (edge length of the whole grid, in the
    file's world units). Raises ``UserError`` naming the file for a bad header, truncated
    or excess data, non-cubic or oversized dimensions, or a file that cannot be opened.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            n, translate, scale = _read_header(f, path, max_dim)
            raw = np.frombuffer(f.read(), dtype=np.uint8)
    except OSError as exc:
        raise UserError(f"{path}: cannot be read ({exc.strerror}); "
                        "check the path and its permissions") from exc

    if raw.size % 2:
        raise UserError(f"{path}: binvox data is truncated (odd number of run-length bytes); "
                        "re-export the file")
    values, counts = raw[0::2], raw[1::2]
    # Check the decoded size before expanding, so a corrupt count cannot allocate a huge array.
    total = int(counts.sum(dtype=np.int64))
    if total != n**3:
        problem = "truncated" if total < n**3 else "longer than its header says"
        raise UserError(f"{path}: binvox data is {problem} ({total} voxels for dim {n}, "
                        f"expected {n**3}); re-export the file")
    flat = np.repeat(values.astype(bool), counts)
    # Stored order is [x, z, y] with y fastest; swap the last two axes to get [x, y, z].
    occupancy = np.ascontiguousarray(flat.reshape(n, n, n).transpose(0, 2, 1))
    return occupancy, translate, scale


def write_binvox(path: str | os.PathLike, occupancy: np.ndarray, translate, scale: float) -> None:
    """Write ``occupancy`` (``(n, n, n)`` bool-like, indexed [x, y, z]) as a binvox file.

    ``translate`` (3,) and ``scale`` place the grid in world units as in ``read_binvox``;
    they are written with full float precision, so a read returns them unchanged.
    """
    occupancy = np.asarray(occupancy, dtype=bool)
    if occupancy.ndim != 3 or len(set(occupancy.shape)) != 1:
        raise ValueError(f"occupancy must be a cubic (n, n, n) grid, got shape {occupancy.shape}")
    translate = [float(t) for t in np.asarray(translate, dtype=np.float64).reshape(3)]
    n = occupancy.shape[0]
    header = (
        "#binvox 1\n"
        f"dim {n} {n} {n}\n"
        f"translate {' '.join(repr(t) for t in translate)}\n"
        f"scale {float(scale)!r}\n"
        "data\n"
    )
    flat = occupancy.transpose(0, 2, 1).ravel()  # [x, y, z] -> stored [x, z, y] order
    with open(path, "wb") as f:
        f.write(header.encode("ascii"))
        f.write(_run_length_encode(flat).tobytes())


def _read_header(f, path: Path, max_dim: int) -> tuple[int, np.ndarray, float]:
    """Parse the header up to and including the ``data`` line; return (n, translate, scale)."""
    if not f.readline(_MAX_HEADER_LINE_BYTES).startswith(b"#binvox"):
        raise UserError(f"{path}: not a binvox file (it must start with '#binvox'); "
                        "give a .binvox voxel file")
    fields: dict[str, list[str]] = {}
    for _ in range(_MAX_HEADER_LINES):
        words = f.readline(_MAX_HEADER_LINE_BYTES).decode("ascii", errors="replace").split()
        if not words:
            raise UserError(f"{path}: binvox header ends before its 'data' line; "
                            "re-export the file")
        if words[0] == "data":
            break
        if words[0] not in ("dim", "translate", "scale"):
            raise UserError(f"{path}: unexpected binvox header line '{' '.join(words)[:40]}'; "
                            "re-export the file")
        fields[words[0]] = words[1:]
    else:
        raise UserError(f"{path}: binvox header has no 'data' line; re-export the file")

    try:
        dims = [int(d) for d in fields["dim"]]
        # Translate and scale are optional in the format; their defaults place the grid at [0, 1]^3.
        translate = np.array(
            [float(t) for t in fields.get("translate", ["0", "0", "0"])], dtype=np.float64
        )
        scale = float(fields.get("scale", ["1"])[0])
    except (KeyError, ValueError, IndexError) as exc:
        raise UserError(f"{path}: binvox header has a missing or malformed dim/translate/scale "
                        "line; re-export the file") from exc
    if len(dims) != 3 or translate.shape != (3,):
        raise UserError(f"{path}: binvox header needs 3 dims and 3 translate values; "
                        "re-export the file")
    if len(set(dims)) != 1 or dims[0] < 1:
        raise UserError(f"{path}: voxel grid is {'x'.join(map(str, dims))}; "
                        "only cubic grids (n x n x n) are supported")
    if dims[0] > max_dim:
        raise UserError(f"{path}: voxel grid {dims[0]}^3 exceeds the limit of {max_dim}^3; "
                        "downsample it")
    if not (np.isfinite(translate).all() and math.isfinite(scale) and scale > 0):
        raise UserError(f"{path}: binvox translate/scale must be finite with scale > 0; "
                        "re-export the file")
    return dims[0], translate, scale


def _run_length_encode(flat: np.ndarray) -> np.ndarray:
    """Encode a 1-D bool array as interleaved (value, count) uint8 pairs, counts <= 255."""
    starts = np.concatenate([[0], np.flatnonzero(flat[1:] != flat[:-1]) + 1])
    lengths = np.diff(np.append(starts, flat.size))
    # Split runs longer than 255 into chunks of 255 plus a remainder.
    chunks = (lengths + 254) // 255
    values = np.repeat(flat[starts], chunks)
    counts = np.full(values.size, 255, dtype=np.int64)
    counts[np.cumsum(chunks) - 1] = lengths - 255 * (chunks - 1)
    pairs = np.empty((values.size, 2), dtype=np.uint8)
    pairs[:, 0] = values
    pairs[:, 1] = counts
    return pairs.ravel()
