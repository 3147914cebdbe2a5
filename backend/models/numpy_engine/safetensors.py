"""A reader of safetensors files in numpy alone (the bundled engine ships no safetensors).

The format: an 8-byte little-endian header length n, n bytes of JSON ``{name: {"dtype",
"shape", "data_offsets": [begin, end]}, "__metadata__": {...}}``, then the raw little-endian
buffers, offsets counted from the end of the header.
"""

import json
import logging
import struct
from pathlib import Path

import numpy as np

from ...errors import UserError

logger = logging.getLogger(__name__)

DTYPES = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "I64": "<i8", "I32": "<i4", "I16": "<i2",
          "I8": "i1", "U8": "u1", "BOOL": "?"}
MAX_HEADER = 100 * 2**20  # the reference implementation's limit


def read_safetensors(path) -> dict:
    """{name: ndarray} of a safetensors file; arrays are writable copies in the file's
    dtype (bfloat16 tensors become float32). UserError for anything malformed."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise UserError(f"{path} is not readable: {error.strerror or error}") from None
    if len(data) < 8:
        raise UserError(f"{path} is not a safetensors file: {len(data)} bytes")
    (size,) = struct.unpack("<Q", data[:8])
    if size > min(MAX_HEADER, len(data) - 8):
        raise UserError(f"{path} is not a safetensors file: header length {size} does not fit "
                        f"the file's {len(data)} bytes")
    try:
        header = json.loads(data[8:8 + size])
    except ValueError as error:
        raise UserError(f"{path} is not a safetensors file: its header is no JSON ({error})") \
            from None
    body = memoryview(data)[8 + size:]
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise UserError(f"{path}: tensor {name!r} has a malformed header entry") from None
        count = int(np.prod(shape, dtype=np.int64))
        if dtype == "BF16":
            raw = np.frombuffer(body[begin:end], "<u2")
            array = (raw.astype(np.uint32) << 16).view(np.float32)
        elif dtype in DTYPES:
            array = np.frombuffer(body[begin:end], DTYPES[dtype])
        else:
            raise UserError(f"{path}: tensor {name!r} has dtype {dtype}, which the bundled "
                            f"engine does not read")
        if not 0 <= begin <= end <= len(body) or array.size != count:
            raise UserError(f"{path}: tensor {name!r} of shape {shape} does not fit its "
                            f"offsets [{begin}, {end}]")
        tensors[name] = array.reshape(shape).astype(array.dtype.newbyteorder("="), copy=True)
    return tensors
