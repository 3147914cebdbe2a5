"""Fuzz and soak the backend service: ``python -m benchmarks.soak [--seconds T] [--clients N]``.

Starts real server processes on 127.0.0.1 (analytic models, MISE 16 -> 32) and prints:

- fuzz: distinct malformed-request kinds tried (JSON fields, HTTP framing, frame headers,
  buffers, images, checkpoint files in the server's model folder), server crashes, 5xx
  answers (or ``internal`` error frames), anything else unexpected;
- memory: the server's resident set before the fuzz, after it and after the soak;
- soak: N concurrent clients for T seconds, every mesh compared with a single-client
  reference (wrong results, 429s, lost connections);
- burst: many requests at once on a short queue, answered 200 or 429 only (resets counted);
- SIGTERM during each stage of a job (queued, MISE, refinement, tiles, between frames):
  exit status 0 and the documented ``cancelled`` frame every time.

Issue #13. Traffic goes to 127.0.0.1 only; every phase is bounded in count and time.
"""

import argparse
import io
import json
import math
import os
import shutil
import signal
import socket
import struct
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from backend.service import protocol
from backend.service.client import JobCancelled, ServerError, ServerLost, launch

ROOT = Path(__file__).resolve().parents[1]
MISE = {"resolution0": 16, "upsampling_steps": 1}
BASE = {"model": "analytic:sphere", "mise": MISE}


def sphere(n=400, seed=0, radius=0.4, center=0.0):
    d = np.random.default_rng(seed).normal(size=(n, 3))
    return (center + radius * d / np.linalg.norm(d, axis=1, keepdims=True)).astype(np.float32)


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


# -- the malformed kinds --------------------------------------------------------------------
BAD_VALUES = {"null": None, "neg": -1, "zero": 0, "huge int": 10**400, "1e308": 1e308,
              "string": "x", "list": [], "object": {}, "true": True, "nan": math.nan,
              "inf": math.inf, "-inf": -math.inf, "half": 0.5, "2^63": 2**63}
FIELDS = ["model", "precision", "mise", "mise.resolution0", "mise.upsampling_steps",
          "mise.threshold", "output", "output.normals", "output.simplify",
          "output.refine_steps", "output.fill_cavities", "output.unknown", "tiling",
          "tiling.tile_size", "tiling.tile_overlap", "tiling.tile_points"]


def with_field(path, value):
    header = json.loads(json.dumps(BASE))
    if path.startswith("tiling."):
        header["model"] = "pointcloud_convonet_3plane"
        header["tiling"] = {"tile_size": 1.0}
    *parents, leaf = path.split(".")
    node = header
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
    return header


def raw_frame(header_bytes, payload=b""):
    return struct.pack("<I", len(header_bytes)) + header_bytes + payload


def table_frame(buffers, payload=b"", **header):
    return raw_frame(json.dumps({**BASE, **header, "buffers": buffers}).encode(), payload)


def png_bytes(width=8, height=8):
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 10, 10)).save(out, "PNG")
    return out.getvalue()


def bomb_png():
    """A PNG header claiming 100000 x 100000 pixels (IHDR patched, CRC recomputed)."""
    import zlib

    data = bytearray(png_bytes())
    data[16:24] = struct.pack(">II", 100000, 100000)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def frame_kinds():
    """{kind: body bytes} for POST /v1/reconstruct (frames)."""
    f = protocol.encode_frame
    cube = np.zeros((8, 8, 8), bool)
    cube[2:6, 2:6, 2:6] = True
    kinds = {}
    for path in FIELDS:
        for label, value in BAD_VALUES.items():
            try:
                kinds[f"json {path} = {label}"] = f(with_field(path, value),
                                                    {"points": sphere(200)})
            except ValueError:  # json.dumps cannot write it
                pass
    for label, value in (("null", None), ("list", [1, 2]), ("string", "x"),
                         ("translate null", {"translate": None}),
                         ("translate 2", {"translate": [0, 0]}),
                         ("translate nan", {"translate": [0, math.nan, 0]}),
                         ("translate strings", {"translate": ["a", "b", "c"]}),
                         ("translate object", {"translate": {"a": 1}}),
                         ("scale 0", {"scale": 0}), ("scale -1", {"scale": -1}),
                         ("scale inf", {"scale": math.inf}), ("scale list", {"scale": [1]}),
                         ("scale huge", {"scale": 10**400})):
        kinds[f"json voxel_frame {label}"] = f({**BASE, "voxel_frame": value}, {"voxels": cube})
    frames = {
        "frame empty": b"", "frame 3 bytes": b"\x01\x00\x00",
        "frame header length huge": struct.pack("<I", 2**31) + b"{}",
        "frame header length past end": struct.pack("<I", 100) + b"{}",
        "frame header zero": struct.pack("<I", 0),
        "frame header not json": raw_frame(b"hello"),
        "frame header array": raw_frame(b"[1, 2]"),
        "frame header utf-16": raw_frame('{"a": 1}'.encode("utf-16")),
        "frame header latin-1": raw_frame(b'{"model": "\xe9"}'),
        "frame header nested lists": raw_frame(b"[" * 100000 + b"]" * 100000),
        "frame header nested objects": raw_frame(b'{"a":' * 50000 + b"1" + b"}" * 50000),
        "frame header NaN literal": raw_frame(b'{"mise": {"threshold": NaN}, "buffers": []}'),
        "frame buffers dict": raw_frame(b'{"buffers": {"a": 1}}'),
        "frame buffers string": raw_frame(b'{"buffers": "points"}'),
        "frame buffer entry number": table_frame([3]),
        "frame buffer no name": table_frame([{"dtype": "uint8", "shape": [1]}], b"\0"),
        "frame buffer no dtype": table_frame([{"name": "points", "shape": [1]}], b"\0"),
        "frame buffer no shape": table_frame([{"name": "points", "dtype": "uint8"}], b"\0"),
        "frame buffer name list": table_frame([{"name": [1], "dtype": "uint8", "shape": [1]}],
                                              b"\0"),
        "frame buffer name empty": table_frame([{"name": "", "dtype": "uint8", "shape": [1]}],
                                               b"\0"),
        "frame buffer name 10k": table_frame([{"name": "p" * 10000, "dtype": "uint8",
                                               "shape": [1]}], b"\0"),
        "frame buffer dtype float64": table_frame([{"name": "points", "dtype": "float64",
                                                    "shape": [1, 3]}], b"\0" * 24),
        "frame buffer dtype object": table_frame([{"name": "points", "dtype": "object",
                                                   "shape": [1]}], b"\0" * 8),
        "frame buffer dtype number": table_frame([{"name": "points", "dtype": 3,
                                                   "shape": [1]}], b"\0"),
        "frame buffer dtype list": table_frame([{"name": "points", "dtype": ["uint8"],
                                                 "shape": [1]}], b"\0"),
        "frame shape negative": table_frame([{"name": "points", "dtype": "uint8",
                                              "shape": [-1]}]),
        "frame shape float": table_frame([{"name": "points", "dtype": "uint8",
                                           "shape": [1.5]}], b"\0"),
        "frame shape bool": table_frame([{"name": "points", "dtype": "uint8",
                                          "shape": [True]}], b"\0"),
        "frame shape 2^70 x 0": table_frame([{"name": "points", "dtype": "float32",
                                              "shape": [2**70, 0]}]),
        "frame shape 2^33 x 3": table_frame([{"name": "points", "dtype": "float32",
                                              "shape": [2**33, 3]}]),
        "frame shape 100 dims": table_frame([{"name": "points", "dtype": "uint8",
                                              "shape": [1] * 100}], b"\0"),
        "frame shape string": table_frame([{"name": "points", "dtype": "uint8",
                                            "shape": "3"}], b"\0"),
        "frame duplicate names": table_frame([{"name": "points", "dtype": "uint8",
                                               "shape": [1]}] * 2, b"\0\0"),
        "frame trailing bytes": f(BASE, {"points": sphere(10)}) + b"\0",
        "frame truncated buffer": f(BASE, {"points": sphere(10)})[:-1],
    }
    kinds.update(frames)
    buffers = {
        "points int32": np.zeros((10, 3), np.int32), "points uint8": np.zeros((10, 3), np.uint8),
        "points bool": np.zeros((10, 3), bool), "points (N, 2)": np.zeros((10, 2), np.float32),
        "points (N, 3, 1)": np.zeros((10, 3, 1), np.float32),
        "points (0, 3)": np.zeros((0, 3), np.float32), "points (1, 3)": np.zeros((1, 3),
                                                                                  np.float32),
        "points (3,)": np.zeros(3, np.float32),
        "points nan": np.full((10, 3), np.nan, np.float32),
        "points inf": np.full((10, 3), np.inf, np.float32),
        "points all equal": np.ones((10, 3), np.float32),
        "voxels (8, 8, 4)": np.zeros((8, 8, 4), bool), "voxels (0, 0, 0)": np.zeros((0, 0, 0),
                                                                                    bool),
        "voxels 2-D": np.zeros((8, 8), bool), "voxels empty": np.zeros((8, 8, 8), bool),
        "voxels full": np.ones((8, 8, 8), bool), "voxels float32": cube.astype(np.float32),
        "voxels uint8 value 2": cube.astype(np.uint8) * 2,
        "voxels 300^3": np.zeros((300, 300, 300), bool),
        "image float32": np.zeros((8, 8, 3), np.float32), "image (H, W)": np.zeros((8, 8),
                                                                                   np.uint8),
        "image (H, W, 2)": np.zeros((8, 8, 2), np.uint8),
        "image (0, 0, 3)": np.zeros((0, 0, 3), np.uint8),
        "image (0, 7, 4)": np.zeros((0, 7, 4), np.uint8),
        "image_file garbage": np.frombuffer(b"not an image at all", np.uint8),
        "image_file empty": np.zeros(0, np.uint8),
        "image_file truncated png": np.frombuffer(png_bytes()[:40], np.uint8),
        "image_file bomb png": np.frombuffer(bomb_png(), np.uint8),
        "image_file 2-D": np.zeros((4, 4), np.uint8),
    }
    for label, array in buffers.items():
        name = label.split()[0]
        kinds[f"buffer {label}"] = f(BASE, {name: array})
    image = np.zeros((8, 8, 3), np.uint8)
    kinds.update({
        "buffer two inputs": f(BASE, {"points": sphere(10), "voxels": cube}),
        "buffer no input": f(BASE, {}),
        "buffer only a mask": f(BASE, {"mask": np.zeros((8, 8), np.uint8)}),
        "buffer mask wrong shape": f(BASE, {"image": image, "mask": np.zeros((7, 8), np.uint8)}),
        "buffer mask float": f(BASE, {"image": image, "mask": np.zeros((8, 8), np.float32)}),
        "buffer occupancies float": f(BASE, {"points": sphere(10),
                                             "occupancies": np.zeros(10, np.float32)}),
        "buffer occupancies short": f(BASE, {"points": sphere(10),
                                             "occupancies": np.zeros(9, np.uint8)}),
        "buffer occupancies 2": f(BASE, {"points": sphere(10),
                                         "occupancies": np.full(10, 2, np.uint8)}),
        "buffer occupancies with voxels": f(BASE, {"voxels": cube,
                                                   "occupancies": np.zeros(10, bool)}),
    })
    return kinds


def http_kinds(port, token):
    """{kind: raw request bytes}: framing and authentication."""
    def head(method="POST", path="/v1/reconstruct", auth=f"Bearer {token}", extra=""):
        return (f"{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n"
                f"{extra}").encode("utf-8")

    body = protocol.encode_frame(BASE, {"points": sphere(10)})
    kinds = {}
    for label, value in (("superscript", "\u00b2"), ("arabic digits", "\u0661\u0662"),
                         ("negative", "-1"), ("exponent", "1e3"), ("hex", "0x10"),
                         ("huge", "9" * 30), ("empty", ""), ("two", "5, 5")):
        kinds[f"http content-length {label}"] = head(extra=f"Content-Length: {value}\r\n\r\n")
    kinds.update({
        "http no content-length": head(extra="\r\n"),
        "http chunked": head(extra="Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        "http no token": head(auth="", extra=f"Content-Length: {len(body)}\r\n\r\n") + body,
        "http wrong token": head(auth="Bearer nope", extra=f"Content-Length: {len(body)}\r\n\r\n")
        + body,
        "http token non-ascii": head(auth="Bearer \u00e9", extra="\r\n"),
        "http unknown path": head(path="/v1/nothing", extra=f"Content-Length: {len(body)}"
                                  "\r\n\r\n") + body,
        "http GET reconstruct": head("GET", extra="\r\n"),
        "http bad method": head("BREW", extra="\r\n"),
        "http garbage request line": b"\x00\x01\x02\r\n\r\n",
        "http request line 100k": b"GET /" + b"a" * 100000 + b" HTTP/1.1\r\n\r\n",
        "http header 100k": head(extra="X-Big: " + "a" * 100000 + "\r\n\r\n"),
        "http 200 headers": head(extra="".join(f"X-{i}: 1\r\n" for i in range(200)) + "\r\n"),
        "http body over the limit": head(extra="Content-Length: 999999999999\r\n\r\n"),
        "http truncated body": head(extra=f"Content-Length: {len(body)}\r\n\r\n") + body[:-7],
        "http job id odd": head("GET", "/v1/jobs/%00..%2f", extra="\r\n"),
        "http DELETE unknown job": head("DELETE", "/v1/jobs/" + "f" * 500, extra="\r\n"),
    })
    for label, raw_body in (("array", b"[]"), ("null", b"null"), ("broken", b"{"),
                            ("a list", b'{"a": [], "b": "x", "t": 0.5}'),
                            ("t nan", b'{"a": "x", "b": "y", "t": NaN}'),
                            ("t string", b'{"a": "x", "b": "y", "t": "half"}'),
                            ("nested", b"[" * 100000), ("latin-1", b'{"a": "\xe9"}')):
        kinds[f"interpolate {label}"] = head(path="/v1/interpolate", extra=(
            f"Content-Type: application/json\r\nContent-Length: {len(raw_body)}\r\n\r\n"
        )) + raw_body
    return kinds


def checkpoint_kinds(folder):
    """Write damaged model files into ``folder`` (a --models folder): {kind: model name}."""
    import torch

    from backend.io.checkpoints import save_model
    from backend.models import PAPER_CONFIGS, build_model

    config = dict(PAPER_CONFIGS["pointcloud"])
    config["encoder"] = {"name": "resnet_pointnet", "c_dim": 8, "hidden_dim": 16}
    config["decoder"] = {"name": "cbatchnorm", "c_dim": 8, "z_dim": 0, "hidden_size": 16,
                         "legacy": False}
    model = build_model(config)
    save_model(folder / "good.safetensors", model, {"threshold": 0.2,
                                                    "input_kind": "pointcloud"})
    torch.save({"model": model.state_dict()}, folder / "good.pt")
    good_st = (folder / "good.safetensors").read_bytes()
    good_pt = (folder / "good.pt").read_bytes()
    card = (folder / "good.json").read_text()
    kinds = {}

    def safetensors(name, data, card_text=card):
        (folder / f"{name}.safetensors").write_bytes(data)
        (folder / f"{name}.json").write_text(card_text)
        kinds[f"checkpoint safetensors {name}"] = name

    def official(name, data):
        (folder / f"{name}.pt").write_bytes(data)
        kinds[f"checkpoint pt {name}"] = str(folder / f"{name}.pt")

    safetensors("st_half", good_st[:len(good_st) // 2])
    safetensors("st_header_garbage", b"\xff" * 8 + good_st[8:])
    safetensors("st_empty", b"")
    safetensors("st_card_config_string", good_st, json.dumps({"config": "x"}))
    safetensors("st_card_arch_unknown", good_st, json.dumps({"config": {"arch": "nope"}}))
    safetensors("st_card_other_sizes", good_st, card.replace('"hidden_size": 16',
                                                             '"hidden_size": 32'))
    safetensors("st_card_list", good_st, "[]")
    rng = np.random.default_rng(0)
    official("pt_truncated_zip", good_pt[:len(good_pt) // 3])
    official("pt_empty", b"")
    official("pt_text", b"hello world")
    official("pt_zip_head_only", good_pt[:30])
    for i in range(6):
        damaged = bytearray(good_pt)
        for at in rng.integers(0, len(damaged), 8):
            damaged[at] = int(rng.integers(0, 256))
        official(f"pt_flipped_{i}", bytes(damaged))
    for i, cut in enumerate((0.1, 0.5, 0.9)):
        official(f"pt_cut_{i}", good_pt[:int(len(good_pt) * cut)])

    class Hostile:
        def __reduce__(self):
            return (os.system, ("echo soak-pwned",))

    buffer = io.BytesIO()
    torch.save({"model": {"decoder.fc_p.weight": torch.zeros(2, 3)}, "x": Hostile()}, buffer)
    official("pt_pickle_with_code", buffer.getvalue())
    state = dict(model.state_dict())
    state["decoder.fc_p.weight"] = torch.zeros(7, 2, 1)
    buffer = io.BytesIO()
    torch.save({"model": state}, buffer)
    official("pt_wrong_shapes", buffer.getvalue())
    buffer = io.BytesIO()
    torch.save({"model": [1, 2, 3]}, buffer)
    official("pt_not_a_state_dict", buffer.getvalue())
    kinds["checkpoint path outside the folders"] = "/etc/passwd"
    kinds["checkpoint path traversal"] = str(folder / ".." / ".." / "etc" / "passwd.pt")
    return kinds


# -- talking to the server -------------------------------------------------------------------
def post_raw(port, data, timeout=30):
    """Send raw bytes; (status or None, error code or None, saw_reset)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            try:
                sock.sendall(data)
            except (BrokenPipeError, ConnectionResetError):
                pass
            chunks = []
            while True:
                chunk = sock.recv(1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
    except ConnectionResetError:
        return None, None, True
    except socket.timeout:
        return None, "timeout", False
    answer = b"".join(chunks)
    if not answer:
        return None, None, False
    if not answer.startswith(b"HTTP/"):  # an HTTP/0.9 request gets a bare body back
        return 400 if b"bad_request" in answer else None, "no status line", False
    try:
        status = int(answer.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return None, "garbled", False
    return status, frames_error(answer), False


def frames_error(answer):
    """The error code in an answer: a JSON error body, or an error frame of a stream."""
    head, _, body = answer.partition(b"\r\n\r\n")
    if b"application/x-onet-frames" in head:
        stream = io.BytesIO(body)
        codes = []
        while True:
            try:
                frame = protocol.read_frame(stream)
            except protocol.ProtocolError:
                return "truncated stream"
            if frame is None:
                break
            header = frame[0]
            if header.get("type") == "error":
                codes.append(header.get("error"))
            if header.get("type") == "end":
                return codes[0] if codes else None
        return "stream without end"
    try:
        return json.loads(body).get("error")
    except (ValueError, AttributeError):
        return None


def request_bytes(token, body, path="/v1/reconstruct", content_type=protocol.CONTENT_TYPE):
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n").encode() + body


class Fuzz:
    def __init__(self, extra_args):
        self.extra_args = extra_args
        self.crashes = 0
        self.start()

    def start(self):
        self.server = launch(cwd=str(ROOT), extra_args=self.extra_args)
        self.port, self.token = self.server.handshake["port"], self.server.handshake["token"]

    def alive(self):
        if self.server.process.poll() is not None:
            self.crashes += 1
            self.start()
            return False
        return True


def run_fuzz(fuzz, models):
    kinds = {name: request_bytes(fuzz.token, body) for name, body in frame_kinds().items()}
    kinds.update(http_kinds(fuzz.port, fuzz.token))
    for kind, model in checkpoint_kinds(models).items():
        body = protocol.encode_frame({"model": model, "mise": MISE}, {"points": sphere(200)})
        kinds[kind] = request_bytes(fuzz.token, body)
    outcomes = {"2xx": 0, "4xx": 0, "5xx": 0, "internal frames": 0, "resets": 0,
                "closed without answer": 0, "other": 0}
    bad = []
    for kind, data in kinds.items():
        status, code, reset = post_raw(fuzz.port, data)
        if reset:
            outcomes["resets"] += 1
            bad.append((kind, "reset"))
        elif status is None:
            outcomes["closed without answer"] += 1
            if code:
                bad.append((kind, code))
        elif status >= 500:
            outcomes["5xx"] += 1
            bad.append((kind, status, code))
        elif code == "internal" or code in ("truncated stream", "stream without end"):
            outcomes["internal frames"] += 1
            bad.append((kind, status, code))
        elif 200 <= status < 300:
            outcomes["2xx"] += 1
        elif 400 <= status < 500:
            outcomes["4xx"] += 1
        else:
            outcomes["other"] += 1
            bad.append((kind, status, code))
        if not fuzz.alive():
            bad.append((kind, "crash"))
    families = {}
    for kind in kinds:
        families[kind.split()[0]] = families.get(kind.split()[0], 0) + 1
    return len(kinds), families, outcomes, bad


# -- soak: N clients, results against a reference ------------------------------------------
def soak(server, seconds, clients):
    client = server.client
    cube = np.zeros((12, 12, 12), bool)
    cube[3:9, 3:9, 3:9] = True
    inputs = [dict(points=sphere(500, seed=s, center=s * 0.3)) for s in range(3)]
    inputs.append(dict(voxels=cube, voxel_frame={"translate": [1, 2, 3], "scale": 2.0}))
    inputs.append(dict(image=np.full((16, 16, 3), 128, np.uint8)))
    reference = [final(client.reconstruct(model="analytic:sphere", mise=MISE, **inp))
                 for inp in inputs]
    counts = {"results": 0, "wrong": 0, "429": 0, "lost": 0, "other errors": 0}
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def one(index):
        rng = np.random.default_rng(index)
        while time.monotonic() < stop:
            k = int(rng.integers(len(inputs)))
            try:
                mesh = final(client.reconstruct(model="analytic:sphere", mise=MISE, **inputs[k]))
                same = (np.array_equal(mesh["faces"], reference[k]["faces"])
                        and np.allclose(mesh["vertices"], reference[k]["vertices"], atol=1e-6))
                key = "results" if same else "wrong"
            except ServerLost:
                key = "lost"
            except ServerError as exc:
                key = "429" if exc.status == 429 else "other errors"
                time.sleep(0.05)
            with lock:
                counts[key] += 1

    threads = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 120)
    return counts


def final(frames):
    meshes = [arrays for header, arrays in frames if header["type"] == "mesh"]
    return meshes[-1]


def burst(server, count):
    outcomes = {}
    lock = threading.Lock()
    gate = threading.Barrier(count)

    def one():
        gate.wait()
        try:
            final(server.client.reconstruct(points=sphere(300), model="analytic:sphere",
                                            mise=MISE))
            key = "200"
        except ServerLost as exc:
            key = "reset" if "Reset" in str(exc) or "reset" in str(exc) else "lost"
        except ServerError as exc:
            key = str(exc.status)
        with lock:
            outcomes[key] = outcomes.get(key, 0) + 1

    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return outcomes


# -- SIGTERM during each stage ----------------------------------------------------------------
STAGES = {
    # stage: (request options, wait for this frame type (None: accepted), delay after it)
    "accepted": (dict(mise={"resolution0": 64, "upsampling_steps": 2}), None, 0.0),
    "mise level": (dict(mise={"resolution0": 64, "upsampling_steps": 3}), "mesh", 0.0),
    "refinement": (dict(mise=MISE, output={"refine_steps": 1000}), None, 0.6),
    "normals": (dict(mise={"resolution0": 128, "upsampling_steps": 2},
                     output={"normals": True}), "mesh", 0.0),
    "tiles": (dict(model="pointcloud_convonet_3plane", mise=MISE,
                   tiling={"tile_size": 0.3}), "tile", 0.0),
    "queued": (dict(mise=MISE, output={"refine_steps": 1000}), "queued", 0.3),
}


def sigterm_once(stage):
    options, wait_for, delay = STAGES[stage]
    options = {"model": "analytic:sphere", **options}
    local = launch(cwd=str(ROOT))
    seen, reached = [], threading.Event()
    points = (np.concatenate([sphere(3000, 1, 0.4, 0.0), sphere(3000, 2, 0.4, 1.5)])
              if "tiling" in options else sphere(2000))

    def run(index):
        def accepted(header):
            if wait_for is None or (wait_for == "queued" and index == 1):
                reached.set()
        try:
            for header, _ in local.client.reconstruct(points=points, on_accepted=accepted,
                                                      **options):
                if header["type"] == wait_for:
                    reached.set()
            seen.append("finished")
        except JobCancelled:
            seen.append("cancelled")
        except ServerError as exc:
            seen.append(exc.code)

    jobs = 2 if stage == "queued" else 1
    threads = []
    for index in range(jobs):
        threads.append(threading.Thread(target=run, args=(index,)))
        threads[-1].start()
        time.sleep(0.2)
    try:
        if not reached.wait(60):
            return None, seen
        time.sleep(delay)
        started = time.monotonic()
        local.process.send_signal(signal.SIGTERM)
        code = local.process.wait(60)
        for thread in threads:
            thread.join(30)
        return code, seen, time.monotonic() - started
    finally:
        local.stop()


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0, help="soak duration")
    parser.add_argument("--clients", type=int, default=4, help="concurrent soak clients")
    parser.add_argument("--burst", type=int, default=40, help="requests at once on a queue of 2")
    parser.add_argument("--sigterm-runs", type=int, default=2, help="runs per stage")
    args = parser.parse_args(argv)

    started = time.monotonic()
    models = Path(tempfile.mkdtemp(prefix="onet-soak-models-"))
    try:
        print("fuzz ...", flush=True)
        fuzz = Fuzz(["--models", str(models), "--max-body-bytes", str(64 << 20),
                     "--header-timeout", "3", "--request-timeout", "3"])
        warm = fuzz.server.client
        final(warm.reconstruct(points=sphere(300), model="analytic:sphere", mise=MISE))
        rss_before = rss_mb(fuzz.server.process.pid)
        tried, families, outcomes, bad = run_fuzz(fuzz, models)
        rss_fuzz = rss_mb(fuzz.server.process.pid)
        print(f"fuzz: {time.monotonic() - started:.0f} s")
        print(f"fuzz: {tried} distinct malformed-request kinds "
              f"({', '.join(f'{k} {v}' for k, v in sorted(families.items()))})")
        print(f"fuzz: crashes {fuzz.crashes}, 5xx {outcomes['5xx']}, internal error frames "
              f"{outcomes['internal frames']}, resets {outcomes['resets']}; answers: "
              f"4xx {outcomes['4xx']}, 2xx {outcomes['2xx']} (valid after all), closed "
              f"without an answer {outcomes['closed without answer']} (cut off by a timeout)")
        for item in bad[:20]:
            print("  unexpected:", item)

        print(f"soak: {args.clients} clients for {args.seconds:.0f} s ...", flush=True)
        counts = soak(fuzz.server, args.seconds, args.clients)
        rss_after = rss_mb(fuzz.server.process.pid)
        alive = fuzz.alive()
        print(f"soak: {counts['results']} results equal to the single-client reference, "
              f"{counts['wrong']} wrong, {counts['429']} answered 429, {counts['lost']} lost, "
              f"{counts['other errors']} other errors; server alive: {alive}")
        print(f"memory (server RSS): {rss_before:.0f} MB before the fuzz, {rss_fuzz:.0f} MB "
              f"after it, {rss_after:.0f} MB after the soak")
        fuzz.server.stop()

        print(f"{time.monotonic() - started:.0f} s so far")
        print(f"burst: {args.burst} requests at once, --max-queue 2 ...", flush=True)
        server = launch(cwd=str(ROOT), extra_args=["--max-queue", "2"])
        try:
            outcomes = burst(server, args.burst)
        finally:
            server.stop()
        print("burst: " + ", ".join(f"{k}: {v}" for k, v in sorted(outcomes.items())))

        print(f"sigterm: {args.sigterm_runs} runs per stage ...", flush=True)
        for stage in STAGES:
            results = [sigterm_once(stage) for _ in range(args.sigterm_runs)]
            clean = sum(1 for r in results if r[0] == 0 and r[1]
                        and set(r[1]) <= {"cancelled"})
            slowest = max((r[2] for r in results if len(r) > 2), default=float("nan"))
            detail = "; ".join(f"exit {r[0]}, {r[1]}" for r in results)
            print(f"sigterm during {stage}: {clean}/{len(results)} clean (exit 0, "
                  f"'cancelled' frame), slowest exit {slowest:.1f} s  [{detail}]")
    finally:
        shutil.rmtree(models, ignore_errors=True)
    print(f"total {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
