"""The backend service against a real server subprocess on 127.0.0.1."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch
import trimesh

from backend.engine.request import LIMITS
from backend.io import zoo
from backend.service import protocol
from backend.io.checkpoints import save_model
from backend.service.client import Client, JobCancelled, ServerError, launch
from backend.models import PAPER_CONFIGS, build_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def perturbed(model, seed):
    """Random non-trivial weights (the default init zeroes the code's influence).

    Weights are scaled by fan-in and the code's pull on the batch norms is kept small, so
    the field is a smooth function of the point, much the same for every input; the output
    layer is then rescaled so logits over the cube spread around the 0.2 threshold.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                continue
            fan_in = tensor[0].numel() if tensor.ndim > 1 else 10
            tensor.add_(torch.randn(tensor.shape, generator=generator) / fan_in ** 0.5)
            if name.endswith("running_var"):
                tensor.abs_().add_(0.5)
            if name.endswith(("gamma.weight", "beta.weight")):
                tensor.mul_(0.01)
        model.eval()
        grid = torch.rand(1, 4000, 3, generator=generator) * 1.1 - 0.55
        cloud = torch.from_numpy(sphere_cloud(3000, 0, 0.5, seed))[None]
        logits = model.decode(grid, model.prior_z(1), model.encode_inputs(cloud))
        gain = 4.0 / logits.std()
        model.decoder.fc_out.weight.mul_(gain)
        model.decoder.fc_out.bias.sub_(logits.median()).mul_(gain).add_(np.log(0.2 / 0.8))
    return model


def sphere_cloud(n, center, radius, seed):
    d = np.random.default_rng(seed).normal(size=(n, 3))
    return (center + radius * d / np.linalg.norm(d, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A small random point-cloud ONet and a paper-size one (slow enough to cancel)."""
    folder = tmp_path_factory.mktemp("models")
    small = dict(PAPER_CONFIGS["pointcloud"])
    small["encoder"] = {"name": "resnet_pointnet", "c_dim": 16, "hidden_dim": 32}
    small["decoder"] = {"name": "cbatchnorm", "c_dim": 16, "z_dim": 0, "hidden_size": 32,
                        "legacy": False}
    model = perturbed(build_model(small), 1)
    save_model(folder / "tiny_pointcloud.safetensors", model, {"threshold": 0.2,
                                                                "input_kind": "pointcloud"})
    vae = perturbed(build_model(PAPER_CONFIGS["unconditional"]), 3)
    save_model(folder / "tiny_vae.safetensors", vae, {"threshold": 0.2})
    paper = perturbed(build_model(PAPER_CONFIGS["pointcloud"]), 2)
    save_model(folder / "paper_pointcloud.safetensors", paper, {"threshold": 0.2})
    return folder


@pytest.fixture(scope="module")
def server(model_dir):
    local = launch(cwd=ROOT, extra_args=["--models", str(model_dir), "--max-queue", "3",
                                         "--max-body-bytes", "4000000"])
    yield local
    local.stop()


def final_mesh(frames):
    meshes = [(h, a) for h, a in frames if h["type"] == "mesh"]
    return meshes, meshes[-1][1]


def test_handshake_and_health(server):
    handshake = server.handshake
    assert handshake["protocol"] == 1 and handshake["port"] > 0 and len(handshake["token"]) > 20
    health = server.client.health()
    assert health["status"] == "ok" and health["device"] == "cpu" and health["queue"] == 0
    names = {m["name"]: m for m in server.client.models()}
    assert names["tiny_pointcloud"]["input_kind"] == "pointcloud"
    assert "analytic:sphere" in names


def test_streamed_mesh_equals_the_cli_output(server, model_dir, tmp_path, run_cli):
    cloud = sphere_cloud(3000, (1.0, 2.0, 3.0), 0.8, 1)
    frames = list(server.client.reconstruct(points=cloud, model="tiny_pointcloud"))
    meshes, final = final_mesh(frames)
    assert [h["level"] for h, _ in meshes] == [0, 1, 2] and meshes[-1][0]["final"]
    assert frames[-1][0]["type"] == "final" and frames[-1][0]["faces"] == len(final["faces"])
    np.save(tmp_path / "cloud.npy", cloud)
    result = run_cli("reconstruct", tmp_path / "cloud.npy", "-o", tmp_path / "cli.ply",
                     "--model", model_dir / "tiny_pointcloud.safetensors")
    assert result.returncode == 0, result.stderr
    cli = trimesh.load(tmp_path / "cli.ply", process=False)
    assert len(final["faces"]) > 100
    np.testing.assert_array_equal(final["faces"], cli.faces)
    np.testing.assert_allclose(final["vertices"], cli.vertices, atol=1e-6)


def test_default_model_follows_the_clouds_size(server):
    """No model named: a sparse cloud goes to the size-bounded default, a dense one to the
    unbounded default, as the CLI picks them (zoo.default_model_name)."""
    mise = {"resolution0": 16, "upsampling_steps": 0}
    for count in (300, 3000):
        accepted = []
        frames = list(server.client.reconstruct(points=sphere_cloud(count, (0, 0, 0), 0.4, 2),
                                                mise=mise, on_accepted=accepted.append))
        assert frames[-1][0]["type"] == "final"
        assert accepted[0]["model"] == zoo.default_model_name("pointcloud", points=count)
    assert zoo.default_model_name("pointcloud", points=300) != \
        zoo.default_model_name("pointcloud", points=3000)


def test_tiled_stream_equals_the_cli_output(server, tmp_path, run_cli):
    """A scene wider than one model cube, tile by tile with the bundled ConvONet: a "tile"
    frame per tile, then the very mesh the CLI writes."""
    cloud = np.concatenate([sphere_cloud(4000, (0.0, 0.0, 0.0), 0.4, 4),
                            sphere_cloud(4000, (1.5, 0.0, 0.0), 0.4, 5)])
    mise = {"resolution0": 16, "upsampling_steps": 1}
    frames = list(server.client.reconstruct(points=cloud, model="pointcloud_convonet_3plane",
                                            mise=mise, tiling={"tile_size": 1.0}))
    progress = [h for h, _ in frames if h["type"] == "tile"]
    meshes, final = final_mesh(frames)
    summary = frames[-1][0]
    assert summary["tiles"] == [4, 2, 2] and [h["tile"] for h in progress] == list(range(1, 17))
    assert len(meshes) == 1 and meshes[0][0]["final"] and summary["faces"] == len(final["faces"])
    np.save(tmp_path / "scene.npy", cloud)
    result = run_cli("reconstruct", tmp_path / "scene.npy", "-o", tmp_path / "cli.ply",
                     "--model", "pointcloud_convonet_3plane", "--resolution0", "16",
                     "--upsampling-steps", "1", "--tile-size", "1")
    assert result.returncode == 0, result.stderr
    cli = trimesh.load(tmp_path / "cli.ply", process=False)
    assert len(final["faces"]) > 100 and cli.is_watertight
    np.testing.assert_array_equal(final["faces"], cli.faces)
    np.testing.assert_allclose(final["vertices"], cli.vertices, atol=1e-6)


@pytest.mark.parametrize("output, message", [
    ({"fill_cavities": "yes"}, "bad value for output.fill_cavities"),
    ({"simplify": 2}, "simplify needs a target of at least 4 faces"),
    ({"simplify": 2.5}, "bad value for output.simplify"),
    ({"smooth": True}, "unknown output option"),
    ({"smooth_steps": -1}, "smooth_steps must be a whole number >= 0"),
    ({"smooth_steps": 1.5}, "bad value for output.smooth_steps"),
    ({"drop_floaters": 1}, "bad value for output.drop_floaters"),
])
def test_bad_output_options(server, output, message):
    with pytest.raises(ServerError) as error:
        list(server.client.reconstruct(points=sphere_cloud(500, (0, 0, 0), 1.0, 6),
                                       model="tiny_pointcloud", output=output))
    assert error.value.status == 400 and message in str(error.value)


def test_smoothing_is_the_cards_unless_asked_and_capped(server, model_dir, run_cli, tmp_path):
    """``output.smooth_steps`` null means the card's (the tiny model's: 0), a number is
    used as given and reported, over ``max_smooth_steps`` is a 413; the CLI agrees."""
    cloud = sphere_cloud(500, (0, 0, 0), 1.0, 6)
    mise = {"resolution0": 16, "upsampling_steps": 1}
    summaries = []
    for output in ({}, {"smooth_steps": 3, "drop_floaters": False}):
        frames = list(server.client.reconstruct(points=cloud, model="tiny_pointcloud",
                                                mise=mise, output=output))
        assert frames[-1][0]["type"] == "final"
        summaries.append(frames[-1][0])
    assert [s["smooth_steps"] for s in summaries] == [0, 3]
    with pytest.raises(ServerError) as error:
        list(server.client.reconstruct(points=cloud, model="tiny_pointcloud",
                                       output={"smooth_steps": LIMITS.max_smooth_steps + 1}))
    assert error.value.status == 413 and "max_smooth_steps" in error.value.message
    np.save(tmp_path / "ball.npy", cloud)
    base = ["reconstruct", tmp_path / "ball.npy", "-o", tmp_path / "ball.ply", "--model",
            model_dir / "tiny_pointcloud.safetensors", "--resolution0", "16", "--upsampling-steps", "1", "--json"]
    result = run_cli(*base, "--smooth-steps", "2", "--no-drop-floaters")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["smooth_steps"] == 2
    result = run_cli(*base, "--smooth-steps", str(LIMITS.max_smooth_steps + 1))
    assert result.returncode == 2 and "max_smooth_steps" in result.stderr


@pytest.mark.parametrize("tiling, message", [
    ({"tile_size": 1.0}, "local features"),
    ({"tile_overlap": 0.2}, "tile_size is required"),
    ({"tile_size": -1}, "tile_size must be a finite number > 0"),
    ({"tile_size": "big"}, "bad value for tiling.tile_size"),
    ({"overlap": 0.2}, "unknown tiling option"),
    ({"tile_size": 1.0, "stride": 2}, "unknown tiling option"),
])
def test_bad_tiling_requests(server, tiling, message):
    model = "tiny_pointcloud" if message == "local features" else "pointcloud_convonet_3plane"
    with pytest.raises(ServerError) as error:
        list(server.client.reconstruct(points=sphere_cloud(500, (0, 0, 0), 1.0, 6),
                                       model=model, tiling=tiling))
    assert error.value.status == 400 and message in str(error.value)


def test_interpolation_ends_reproduce_both_inputs(server):
    client = server.client
    a = sphere_cloud(2000, (0.0, 0.0, 0.0), 1.0, 2)
    b = sphere_cloud(2000, (5.0, 0.0, 0.0), 2.0, 3) * np.array([1, 0.3, 1], np.float32)
    mise = {"resolution0": 16, "upsampling_steps": 1}
    latents = [client.encode(points=p, model="tiny_pointcloud") for p in (a, b)]
    assert client.encode(points=a, model="tiny_pointcloud") == latents[0]  # cached
    for t, cloud in [(0.0, a), (1.0, b)]:
        _, direct = final_mesh(client.reconstruct(points=cloud, model="tiny_pointcloud",
                                                  mise=mise))
        _, morphed = final_mesh(client.interpolate(*latents, t, mise=mise))
        np.testing.assert_array_equal(morphed["faces"], direct["faces"])
        np.testing.assert_allclose(morphed["vertices"], direct["vertices"], atol=1e-5)
    _, middle = final_mesh(client.interpolate(*latents, 0.5, preview=True))
    assert len(middle["faces"]) > 0
    with pytest.raises(ServerError) as error:
        list(client.interpolate("nope", latents[1], 0.5))
    assert error.value.status == 404


def test_generative_latent_from_points_with_occupancies(server):
    client = server.client
    mise = {"resolution0": 16, "upsampling_steps": 1}
    rng = np.random.default_rng(9)
    points = rng.uniform(-1, 1, (2000, 3)).astype(np.float32)
    labels = {"ball": np.linalg.norm(points, axis=1) < 0.7,
              "slab": np.abs(points[:, 1]) < 0.2}
    meshes = {}
    for name, occupancies in labels.items():
        _, meshes[name] = final_mesh(client.reconstruct(
            points=points, occupancies=occupancies, model="tiny_vae", mise=mise))
    _, prior = final_mesh(client.reconstruct(points=points, model="tiny_vae", mise=mise))
    assert not np.array_equal(meshes["ball"]["vertices"], prior["vertices"])
    latents = [client.encode(points=points, occupancies=labels[name], model="tiny_vae")
               for name in ("ball", "slab")]
    for t, name in [(0.0, "ball"), (1.0, "slab")]:
        _, morphed = final_mesh(client.interpolate(*latents, t, mise=mise))
        np.testing.assert_allclose(morphed["vertices"], meshes[name]["vertices"], atol=1e-5)
    with pytest.raises(ServerError) as error:
        client.encode(points=points, occupancies=labels["ball"][:10], model="tiny_vae")
    assert error.value.status == 400


def test_cancel_mid_job_then_next_job_succeeds(server):
    client = server.client
    accepted = []
    stream = client.reconstruct(points=sphere_cloud(3000, 0, 1, 4), model="paper_pointcloud",
                                mise={"resolution0": 32, "upsampling_steps": 3},
                                on_accepted=accepted.append)
    with pytest.raises(JobCancelled):
        for header, _ in stream:
            if header["level"] == 0:
                client.cancel(header["job"])
    assert client.job(accepted[0]["job"])["status"] == "cancelled"
    assert client.health()["status"] == "ok"
    frames = list(client.reconstruct(points=sphere_cloud(500, 0, 1, 5), model="analytic:box"))
    assert frames[-1][0]["type"] == "final"


def test_client_disconnect_cancels_the_job(server):
    token = server.handshake["token"]
    body = Client.input_frame(points=sphere_cloud(3000, 0, 1, 6), model="paper_pointcloud",
                              mise={"resolution0": 32, "upsampling_steps": 3})
    sock = socket.create_connection(("127.0.0.1", server.handshake["port"]), timeout=30)
    sock.sendall(f"POST /v1/reconstruct HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}"
                 f"\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    stream = sock.makefile("rb")
    while stream.readline() not in (b"\r\n", b""):  # skip the response head
        pass
    job = protocol.read_frame(stream)[0]["job"]
    stream.close()
    sock.close()
    for _ in range(200):
        status = server.client.job(job)["status"]
        if status not in ("queued", "running"):
            break
        time.sleep(0.1)
    assert status == "cancelled"
    assert server.client.health()["queue"] == 0


def test_token_is_required(server):
    port = server.handshake["port"]
    for token in ("", "wrong-token"):
        with pytest.raises(ServerError) as error:
            Client(f"http://127.0.0.1:{port}", token).health()
        assert error.value.status == 401 and error.value.code == "unauthorized"


def post_raw(server, path, body, headers=None, content_length=None):
    """Send raw bytes (possibly a lie about their length); returns (status, JSON body)."""
    sock = socket.create_connection(("127.0.0.1", server.handshake["port"]), timeout=30)
    length = len(body) if content_length is None else content_length
    head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer"
            f" {server.handshake['token']}\r\nContent-Length: {length}\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items()) + "\r\n")
    sock.sendall(head.encode() + body)
    sock.shutdown(socket.SHUT_WR)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    sock.close()
    status = int(data.split(b" ", 2)[1])
    return status, json.loads(data.split(b"\r\n\r\n", 1)[1])


def frame(**arrays):
    return protocol.encode_frame({"model": "analytic:sphere"}, arrays)


BAD_REQUESTS = {
    "nan points": (frame(points=np.array([[0, 0, 0], [np.nan, 1, 1], [1, 2, 3]], np.float32)),
                   400, "NaN"),
    "empty points": (frame(points=np.zeros((0, 3), np.float32)), 400, "point"),
    "float64 points": (protocol.encode_frame({}, {"points": np.zeros((5, 3), np.float32)})
                       .replace(b'"float32"', b'"float64"'), 400, "float64"),
    "wrong shape": (frame(points=np.zeros((5, 2), np.float32)), 400, "3"),
    "two inputs": (frame(points=np.zeros((5, 3), np.float32), voxels=np.ones((4, 4, 4), bool)),
                   400, "exactly one"),
    "voxels not 3-D": (frame(voxels=np.ones((4, 4), bool)), 400, "voxel"),
    "non-image bytes": (frame(image_file=np.frombuffer(b"not an image" * 20, np.uint8)), 400,
                        "not a readable PNG"),
    "not a frame": (b"\x05\x00\x00\x00hello", 400, "malformed"),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_inputs_get_clear_errors(server, case):
    body, status, words = BAD_REQUESTS[case]
    code, answer = post_raw(server, "/v1/reconstruct", body)
    assert code == status, answer
    assert words.lower() in answer["message"].lower() and answer["error"]


def test_truncated_and_oversized_bodies(server):
    body = frame(points=sphere_cloud(100, 0, 1, 0))
    code, answer = post_raw(server, "/v1/reconstruct", body[:-50], content_length=len(body))
    assert code == 400 and "truncated" in answer["message"]
    code, answer = post_raw(server, "/v1/reconstruct", b"", content_length=50_000_000)
    assert code == 413 and answer["error"] == "too_large"
    code, answer = post_raw(server, "/v1/reconstruct",
                            protocol.encode_frame({"mise": {"resolution0": 64,
                                                            "upsampling_steps": 4}},
                                                  {"points": sphere_cloud(10, 0, 1, 0)}))
    assert code == 413 and "resolution" in answer["message"]


def test_unknown_model_and_job(server):
    with pytest.raises(ServerError) as error:
        list(server.client.reconstruct(points=sphere_cloud(10, 0, 1, 0), model="no-such-model"))
    assert error.value.status == 404 and error.value.code == "unknown_model"
    with pytest.raises(ServerError) as error:
        server.client.cancel("0123456789ab")
    assert error.value.status == 404 and error.value.code == "unknown_job"
    with pytest.raises(ServerError) as error:
        server.client.get_json("/v1/nothing")
    assert error.value.status == 404


def test_clouds_over_the_point_limit_get_413_naming_it(model_dir):
    local = launch(cwd=ROOT, extra_args=["--models", str(model_dir), "--max-points", "1000"])
    try:
        assert local.client.health()["limits"]["max_points"] == 1000
        with pytest.raises(ServerError) as error:
            list(local.client.reconstruct(points=sphere_cloud(5000, 0, 1, 0),
                                          model="analytic:sphere"))
        assert error.value.status == 413 and "above the limit of 1000" in str(error.value)
    finally:
        local.stop()


def test_eight_concurrent_clients_get_results_or_429(server):
    cloud = sphere_cloud(500, 0, 1, 7)
    _, reference = final_mesh(server.client.reconstruct(points=cloud, model="analytic:sphere"))
    outcomes = []

    def one():
        try:
            _, mesh = final_mesh(server.client.reconstruct(points=cloud, model="analytic:sphere"))
            same = np.array_equal(mesh["faces"], reference["faces"])
            outcomes.append("ok" if same else "wrong mesh")
        except ServerError as exc:
            outcomes.append(exc.status)

    threads = [threading.Thread(target=one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(outcomes) == 8 and set(outcomes) <= {"ok", 429}, outcomes
    assert "ok" in outcomes
    assert server.client.health()["queue"] == 0


def test_server_exits_when_its_parent_dies(tmp_path):
    parent_code = (
        "import subprocess, sys, os, time\n"
        "child = subprocess.Popen([sys.executable, '-m', 'backend', 'serve', '--port', '0',"
        " '--parent-pid', str(os.getpid())], stdout=subprocess.PIPE, text=True)\n"
        "print(child.pid, child.stdout.readline(), flush=True)\n"
        "time.sleep(600)\n")
    parent = subprocess.Popen([sys.executable, "-c", parent_code], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    child_pid = int(parent.stdout.readline().split()[0])
    parent.kill()
    parent.wait()
    for _ in range(100):
        try:
            os.kill(child_pid, 0)
        except ProcessLookupError:
            break
        # A zombie is gone too: it has no parent to reap it until init does.
        try:
            with open(f"/proc/{child_pid}/stat") as stat:
                if stat.read().split()[2] == "Z":
                    break
        except FileNotFoundError:
            break
        time.sleep(0.1)
    else:
        os.kill(child_pid, signal.SIGKILL)
        pytest.fail("the server outlived its parent by 10 s")


def test_sigterm_stops_cleanly_and_non_loopback_needs_a_token():
    local = launch(cwd=ROOT)
    local.process.send_signal(signal.SIGTERM)
    assert local.process.wait(20) == 0
    result = subprocess.run([sys.executable, "-m", "backend", "serve", "--host", "0.0.0.0",
                             "--port", "0"], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2 and "without --token" in result.stderr
