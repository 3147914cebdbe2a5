"""Wire format of the backend service, protocol 1 (docs/protocol.md). Stdlib + numpy only.

A frame is a JSON header followed by raw little-endian buffers::

    u32 little-endian: header length H | H bytes: UTF-8 JSON object | buffer bytes ...

The header lists its buffers in order, ``"buffers": [{"name", "dtype", "shape"}]``; their
bytes follow the header back to back, each exactly ``prod(shape) * itemsize`` long. Requests
to POST endpoints are one frame; streamed responses are a sequence of frames ending with one
whose ``type`` is ``"end"``. Nothing is pickled: numpy inside Blender 4.2-5.0 (1.26) cannot
read numpy 2 pickles, and a pickle is code.

This module is shared by the server, the reference client and the Blender extension.
"""

import json
import struct

import numpy as np

PROTOCOL = 1
CONTENT_TYPE = "application/x-onet-frames"
DTYPES = {"float32": "<f4", "int32": "<i4", "uint8": "|u1", "bool": "|b1"}
MAX_HEADER_BYTES = 1 << 20
MAX_DIMS = 32  # numpy allows 64; no buffer of the protocol has more than 4
MAX_DIM_SIZE = 1 << 40  # per axis; a frame's bytes are bounded by the body limit anyway


class ProtocolError(ValueError):
    """A frame that does not follow the format (truncated, bad header, bad buffer table)."""


def encode_frame(header, arrays=None):
    """One frame as bytes. header: JSON-able dict; arrays: {name: ndarray} in order."""
    arrays = arrays or {}
    table, payload = [], []
    for name, array in arrays.items():
        array = np.asarray(array)
        dtype = array.dtype.name
        if dtype not in DTYPES:
            raise ValueError(f"buffer {name!r}: dtype {dtype} cannot be sent")
        table.append({"name": name, "dtype": dtype, "shape": list(array.shape)})
        payload.append(np.ascontiguousarray(array, dtype=DTYPES[dtype]).tobytes())
    text = json.dumps({**header, "buffers": table}, separators=(",", ":")).encode()
    return b"".join([struct.pack("<I", len(text)), text, *payload])


def _buffer_sizes(header):
    table = header.get("buffers", [])
    if not isinstance(table, list):
        raise ProtocolError("'buffers' must be a list")
    sizes, names = [], set()
    for entry in table:
        try:
            name, dtype, shape = entry["name"], entry["dtype"], entry["shape"]
        except (TypeError, KeyError):
            raise ProtocolError("each buffer needs 'name', 'dtype' and 'shape'") from None
        if not isinstance(name, str) or not 0 < len(name) <= 64:
            raise ProtocolError(f"buffer name must be a string of 1 to 64 characters, got "
                                f"{str(name)[:40]!r}")
        if name in names:
            raise ProtocolError(f"buffer {name!r} is listed twice")
        names.add(name)
        if not isinstance(dtype, str) or dtype not in DTYPES:
            raise ProtocolError(f"buffer {name!r}: unsupported dtype {str(dtype)[:40]!r};"
                                f" use one of {', '.join(DTYPES)}")
        if not (isinstance(shape, list) and len(shape) <= MAX_DIMS
                and all(type(n) is int and 0 <= n <= MAX_DIM_SIZE for n in shape)):
            raise ProtocolError(f"buffer {name!r}: shape must be a list of at most {MAX_DIMS}"
                                f" sizes in [0, 2^40]")
        count = 1
        for n in shape:
            count *= n
        sizes.append((name, DTYPES[dtype], tuple(shape), count * np.dtype(DTYPES[dtype]).itemsize))
    return sizes


def _parse_header(raw):
    try:
        header = json.loads(bytes(raw).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"frame header is not JSON: {str(exc)[:120]}") from None
    except RecursionError:
        raise ProtocolError("frame header is nested too deeply") from None
    if not isinstance(header, dict):
        raise ProtocolError("frame header must be a JSON object")
    return header


def _arrays(sizes, read):
    arrays = {}
    for name, dtype, shape, nbytes in sizes:
        data = read(nbytes)
        arrays[name] = np.frombuffer(data, dtype=dtype).reshape(shape)
    return arrays


def decode_frame(data):
    """Parse one complete frame from bytes -> (header, {name: ndarray}).

    Raises ProtocolError when the bytes are not exactly one well-formed frame.
    """
    view = memoryview(data)
    if len(view) < 4:
        raise ProtocolError("truncated frame: no header length")
    (length,) = struct.unpack_from("<I", view)
    if length > MAX_HEADER_BYTES or 4 + length > len(view):
        raise ProtocolError("truncated frame: header incomplete")
    header = _parse_header(bytes(view[4:4 + length]))
    sizes = _buffer_sizes(header)
    needed = 4 + length + sum(size[3] for size in sizes)
    if needed != len(view):
        raise ProtocolError(f"frame body is {len(view)} bytes but its header describes"
                            f" {needed} (truncated or trailing data)")
    offset = [4 + length]

    def take(nbytes):
        chunk = view[offset[0]:offset[0] + nbytes]
        offset[0] += nbytes
        return chunk

    return header, _arrays(sizes, take)


def read_frame(stream):
    """Read one frame from a binary file-like stream -> (header, arrays), or None at EOF.

    Raises ProtocolError if the stream ends inside a frame.
    """
    def read_exact(nbytes):
        chunks, remaining = [], nbytes
        while remaining:
            chunk = stream.read(remaining)
            if not chunk:
                raise ProtocolError(f"stream ended inside a frame ({nbytes - remaining} of"
                                    f" {nbytes} bytes)")
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)

    first = stream.read(4)
    if not first:
        return None
    if len(first) < 4:
        first += read_exact(4 - len(first))
    (length,) = struct.unpack("<I", first)
    if length > MAX_HEADER_BYTES:
        raise ProtocolError(f"frame header of {length} bytes is too large")
    header = _parse_header(read_exact(length))
    return header, _arrays(_buffer_sizes(header), read_exact)
