"""Reference client of the backend service (stdlib + numpy; the Blender extension uses it).

    from .client import Client, launch
    server = launch()                                   # or Client(url, token) for a remote
    for header, arrays in server.client.reconstruct(points=cloud):
        if header["type"] == "mesh": ...                # arrays["vertices"], arrays["faces"]
    server.stop()

Streaming calls yield the ``mesh`` and ``final`` frames (``accepted`` goes to a callback,
``progress`` heartbeats are skipped); an ``error`` frame raises ServerError, a ``cancelled``
frame raises JobCancelled. The job id is in every header.

A server that cannot be reached or is lost mid-answer (refused, reset, closed early, a
stream cut inside a frame, no byte within ``timeout``) raises ``ServerLost``, a
``ServerError`` with status 0 and code ``"disconnected"``, from every call alike
(docs/protocol.md, "Client errors").
"""

import base64
import contextlib
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import urllib.parse

import numpy as np

from . import protocol


class ServerError(Exception):
    """An error answer of the server: HTTP status (0 mid-stream), code and message."""

    def __init__(self, status, code, message):
        super().__init__(f"{message} ({code})")
        self.status, self.code, self.message = status, code, message


class ServerLost(ServerError):
    """The server could not be reached or went away mid-answer: connection refused or reset,
    closed before the answer or the stream's ``end`` frame, a frame cut short, or silent for
    the client's ``timeout`` (a live server sends a ``progress`` frame every 5 s)."""

    def __init__(self, message):
        super().__init__(0, "disconnected", message)


# What a lost connection raises under http.client and the frame reader.
_LOST = (OSError, http.client.HTTPException, protocol.ProtocolError)


@contextlib.contextmanager
def _lost_as(what):
    """Turn the many ways a lost server shows up into one ``ServerLost``."""
    try:
        yield
    except ServerError:
        raise
    except socket.timeout:
        raise ServerLost(f"{what}: no answer from the server in time") from None
    except _LOST as exc:
        raise ServerLost(f"{what}: the connection to the server was lost "
                         f"({type(exc).__name__}: {exc})") from None


class JobCancelled(Exception):
    """The job was cancelled (by DELETE /v1/jobs/{id} or by the server shutting down)."""


class Client:
    """Talks to one server. Thread-safe: every call opens its own connection."""

    def __init__(self, url="http://127.0.0.1:8765", token="", timeout=60.0):
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "") or not parsed.hostname:
            raise ValueError(f"backend URL must look like http://HOST:PORT, got {url!r}")
        self.host, self.port = parsed.hostname, parsed.port or 8765
        self.token, self.timeout = token, timeout

    def _connection(self):
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def _headers(self, content_type=None):
        headers = {"Authorization": f"Bearer {self.token}"}
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    def request(self, method, path, body=None, content_type=None):
        """Send a request; returns the open HTTPResponse (raises ServerError on >= 400,
        ServerLost when the server cannot be reached or goes away)."""
        connection = self._connection()
        with _lost_as(f"{method} {path}"):
            try:
                connection.request(method, path, body=body,
                                   headers=self._headers(content_type))
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server answered early (e.g. 413, 429) and closed: read it
            response = connection.getresponse()
            raw = response.read() if response.status >= 400 else None
        if response.status >= 400:
            connection.close()
            try:
                error = json.loads(raw)
                raise ServerError(response.status, error["error"], error["message"])
            except (ValueError, KeyError, TypeError):
                raise ServerError(response.status, "http", raw.decode(errors="replace")[:200])
        return response

    def get_json(self, path):
        with self.request("GET", path) as response, _lost_as(f"GET {path}"):
            return json.loads(response.read())

    def health(self):
        return self.get_json("/v1/health")

    def models(self):
        return self.get_json("/v1/models")["models"]

    def job(self, job_id):
        """Status of a job: queued | running | done | cancelled | error."""
        return self.get_json(f"/v1/jobs/{job_id}")

    def cancel(self, job_id):
        """Ask the server to stop a job at its next decoder batch; returns its status."""
        with self.request("DELETE", f"/v1/jobs/{job_id}") as response, \
                _lost_as("DELETE job"):
            return json.loads(response.read())

    @staticmethod
    def input_frame(points=None, voxels=None, voxel_frame=None, image=None, image_file=None,
                    mask=None, occupancies=None, **header):
        """Request body: header options + exactly one input buffer (see docs/protocol.md)."""
        if image_file is not None:
            image_file = np.frombuffer(bytes(image_file), np.uint8)
        arrays = {name: value for name, value in [
            ("points", points), ("voxels", voxels), ("image", image), ("mask", mask),
            ("image_file", image_file), ("occupancies", occupancies)] if value is not None}
        if voxel_frame is not None:
            header["voxel_frame"] = voxel_frame
        return protocol.encode_frame({k: v for k, v in header.items() if v is not None}, arrays)

    def stream(self, path, body, content_type=protocol.CONTENT_TYPE, on_accepted=None):
        """POST and yield (header, arrays) frames until the final one; see module docstring."""
        response = self.request("POST", path, body, content_type)
        with response:
            while True:
                with _lost_as(f"POST {path}"):
                    frame = protocol.read_frame(response)
                if frame is None:
                    raise ServerLost(f"POST {path}: the server closed the stream before its "
                                     "end frame")
                header, arrays = frame
                kind = header.get("type")
                if kind == "accepted":
                    if on_accepted:
                        on_accepted(header)
                    continue
                if kind == "progress":
                    continue
                if kind == "error":
                    raise ServerError(0, header.get("error"), header.get("message"))
                if kind == "cancelled":
                    raise JobCancelled(header.get("job"))
                if kind == "end":
                    return
                yield header, arrays

    def reconstruct(self, model=None, mise=None, output=None, on_accepted=None, **inputs):
        """Stream a reconstruction: inputs are points= | voxels= (+ voxel_frame=, voxelisation=) | image=
        (+ mask=) | image_file=, and tiling={tile_size, tile_overlap, tile_points} for large point
        clouds; mise: {resolution0, upsampling_steps, threshold}; output: {normals, simplify,
        refine_steps, fill_cavities, smooth_steps, drop_floaters} (docs/protocol.md)."""
        body = self.input_frame(model=model, mise=mise, output=output, **inputs)
        return self.stream("/v1/reconstruct", body, on_accepted=on_accepted)

    def sample(self, seed, model=None, mise=None, output=None, on_accepted=None):
        """Stream the shape drawn from a generative model's prior by ``seed`` (model None:
        the server's default for sampling); frames as for ``reconstruct``."""
        body = self.input_frame(model=model, mise=mise, output=output, sample={"seed": seed})
        return self.stream("/v1/reconstruct", body, on_accepted=on_accepted)

    def encode(self, model=None, **inputs):
        """Latent id of an input, or of a sample with ``sample={"seed": S}`` (the server
        caches it by content)."""
        body = self.input_frame(model=model, **inputs)
        with self.request("POST", "/v1/encode", body, protocol.CONTENT_TYPE) as response, \
                _lost_as("POST /v1/encode"):
            return json.loads(response.read())["latent"]

    def image_view(self, **inputs):
        """What the image model sees of an image input (image= (+ mask=) | image_file=):
        {"rgb": (H, W, 3) uint8, "box": [top, left, side] (the crop in the input's
        pixels), "mask_source": alpha | estimated | none, "notes"}."""
        body = self.input_frame(**inputs)
        with self.request("POST", "/v1/image_view", body, protocol.CONTENT_TYPE) as response, \
                _lost_as("POST /v1/image_view"):
            answer = json.loads(response.read())
        answer["rgb"] = np.frombuffer(base64.b64decode(answer["rgb"]), np.uint8).reshape(
            answer.pop("height"), answer.pop("width"), 3)
        return answer

    def interpolate(self, a, b, t, preview=False, mise=None, output=None, on_accepted=None):
        """Stream the mesh of the code (1 - t) * a + t * b (latent ids from ``encode``)."""
        body = json.dumps({"a": a, "b": b, "t": t, "preview": preview, "mise": mise,
                           "output": output}).encode()
        return self.stream("/v1/interpolate", body, "application/json", on_accepted)


class LocalServer:
    """A backend child process started by ``launch``; ``client`` talks to it."""

    def __init__(self, process, handshake):
        self.process, self.handshake = process, handshake
        self.client = Client(f"http://127.0.0.1:{handshake['port']}", handshake["token"])

    def stop(self, timeout=10.0):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def launch(python=sys.executable, cwd=None, extra_args=(), env=None, timeout=120.0):
    """Start ``python -m backend serve --port 0`` as a child that dies with this process.

    cwd: the folder that contains the ``backend`` package. Returns a LocalServer once the
    handshake line arrived; raises RuntimeError with the child's stderr when it fails.
    """
    command = [python, "-m", "backend", "serve", "--port", "0", "--parent-pid",
               str(os.getpid()), *extra_args]
    process = subprocess.Popen(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = [None]
    reader = threading.Thread(target=lambda: line.__setitem__(0, process.stdout.readline()),
                              daemon=True)
    reader.start()
    reader.join(timeout)
    if not line[0]:
        process.kill()
        stderr = process.stderr.read().strip().splitlines()
        raise RuntimeError("the backend did not start: "
                           + (stderr[-1] if stderr else f"no handshake within {timeout:.0f} s"))
    threading.Thread(target=process.stderr.read, daemon=True).start()  # never block on a full pipe
    return LocalServer(process, json.loads(line[0]))
