"""The one request: the CLI and the server read inputs, check limits and reconstruct alike."""

import os

import numpy as np
import pytest
import trimesh
from PIL import Image

from backend.engine import pipeline
from backend.engine.generation import Generator
from backend.engine.request import LIMITS, ReconstructRequest, Settings, TilingOptions
from backend.errors import LimitError, UserError
from backend.io import zoo
from backend.io.inputs import PointCloudInput, read_input
from backend.service.client import ServerError, launch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOW_MISE = ["--resolution0", "16", "--upsampling-steps", "1"]


@pytest.fixture(scope="module")
def server():
    local = launch(cwd=ROOT)
    yield local
    local.stop()


def rotated_photo(path):
    """A 160 x 96 JPEG of a red box on white whose EXIF says "rotate 90° clockwise"
    (orientation 6), as phones write them. Returns the upright (96 x 160) pixels."""
    pixels = np.full((96, 160, 3), 255, np.uint8)
    pixels[20:80, 30:90] = (200, 40, 30)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels).save(path, quality=95, exif=exif)
    return np.rot90(pixels, -1)


def test_exif_rotated_photo_gives_one_mesh_through_cli_and_server(tmp_path, run_cli, server):
    photo = tmp_path / "phone.jpg"
    upright = rotated_photo(photo)
    assert read_input(photo).rgba.shape[:2] == upright.shape[:2]  # EXIF applied on read
    result = run_cli("reconstruct", photo, "-o", tmp_path / "cli.ply", *LOW_MISE)
    assert result.returncode == 0, result.stderr
    cli = trimesh.load(tmp_path / "cli.ply", process=False)
    frames = list(server.client.reconstruct(image_file=photo.read_bytes(),
                                            mise={"resolution0": 16, "upsampling_steps": 1}))
    _, arrays = [frame for frame in frames if frame[0]["type"] == "mesh"][-1]
    assert len(cli.faces) > 100
    np.testing.assert_array_equal(arrays["faces"], cli.faces)
    np.testing.assert_allclose(arrays["vertices"], cli.vertices, atol=1e-6)
    # Without the rotation the model sees another picture: the mesh would differ.
    Image.fromarray(np.asarray(Image.open(photo))).save(tmp_path / "unrotated.png")
    assert run_cli("reconstruct", tmp_path / "unrotated.png", "-o", tmp_path / "flat.ply",
                   *LOW_MISE).returncode == 0
    flat = trimesh.load(tmp_path / "flat.ply", process=False)
    assert len(flat.vertices) != len(cli.vertices) or not np.allclose(flat.vertices,
                                                                      cli.vertices)


# Over-limit requests, as CLI flags and as the same request on the wire.
OVER_LIMITS = {
    "finest resolution": (["--resolution0", "64", "--upsampling-steps", "4"],
                          {"mise": {"resolution0": 64, "upsampling_steps": 4}},
                          "above the limit of 512"),
    "refinement steps": (["--refine-steps", "5000"], {"output": {"refine_steps": 5000}},
                         "over the limit of 1000"),
    "tile count": (["--tile-size", "1e-5"], {"tiling": {"tile_size": 1e-5}},
                   "over the limit of 4,096"),
}


@pytest.mark.parametrize("case", OVER_LIMITS)
def test_one_limit_table_for_cli_and_server(case, tmp_path, run_cli, server):
    flags, header, message = OVER_LIMITS[case]
    cloud = np.random.default_rng(0).normal(size=(500, 3)).astype(np.float32)
    np.save(tmp_path / "cloud.npy", cloud)
    result = run_cli("reconstruct", tmp_path / "cloud.npy", "-o", tmp_path / "out.ply", *flags)
    assert result.returncode == 2 and message in result.stderr
    with pytest.raises(ServerError) as error:
        list(server.client.reconstruct(points=cloud, **header))
    assert error.value.status == 413 and message in str(error.value)
    assert server.client.health()["limits"]["max_resolution"] == LIMITS.max_resolution


def test_validation_names_the_option_before_any_work():
    model, _ = zoo.load("pointcloud_convonet_3plane", "cpu")
    cloud = PointCloudInput(np.random.default_rng(1).normal(size=(100, 3)).astype(np.float32))
    for request, error, message in [
            (ReconstructRequest(cloud, settings=Settings(resolution0=1)), UserError,
             "resolution0 must be at least 2"),
            (ReconstructRequest(cloud, settings=Settings(simplify=2)), UserError, "simplify"),
            (ReconstructRequest(cloud, tiling=TilingOptions(float("nan"))), UserError,
             "tile_size must be a finite number"),
            (ReconstructRequest(cloud, tiling=TilingOptions(1e-6)), LimitError, "tiles")]:
        with pytest.raises(error, match=message):
            request.validate(model)


def test_occupancy_gives_fp32_logits_by_default(tmp_path, run_cli):
    sample = os.path.join(ROOT, "backend", "samples", "chair_scan.ply")
    queries = np.random.default_rng(2).uniform(-0.5, 0.5, (5000, 3)).astype(np.float32)
    np.save(tmp_path / "q.npy", queries)
    result = run_cli("occupancy", sample, "--points", tmp_path / "q.npy", "-o",
                     tmp_path / "logits.npy")
    assert result.returncode == 0, result.stderr
    model, card = zoo.load(zoo.default_model_name("pointcloud"), "cpu")
    generator = Generator(model, card, "cpu", Settings(precision="fp32"))
    prepared = pipeline.prepare(read_input(sample), model, card)
    reference = generator.logits(generator.encode(prepared.inputs), queries)
    np.testing.assert_allclose(np.load(tmp_path / "logits.npy"), reference, atol=1e-4)
