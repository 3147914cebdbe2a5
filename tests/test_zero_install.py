"""Zero install: the backend in a Python that has numpy and nothing else (as Blender's own
Python) reconstructs every input kind with the bundled engine, within IoU 0.995 of the
torch engine.

The child runs ``python -S`` (no site-packages) with only numpy on its path, so ``import
torch`` (and SciPy, PyMCubes, trimesh, Pillow, safetensors) really fails there; the server
is launched and driven exactly as the add-on does (``service.client.launch``). It runs with
this interpreter and, where scripts/test_blender.sh made them, with the bpy 5.1+ venvs'
Python 3.13 and numpy 2.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from backend.engine import pipeline
from backend.engine.inside import contains
from backend.engine.request import ReconstructRequest, Settings
from backend.io import zoo
from backend.io.inputs import ImageInput, VoxelInput, read_input
from backend.service.client import launch

ROOT = Path(__file__).resolve().parents[1]
CHAIR = ROOT / "backend/samples/chair_scan.ply"
MISSING = ("torch", "scipy", "mcubes", "trimesh", "PIL", "safetensors")


def interpreters():
    """This Python (3.11, numpy 1.26 as Blender 4.2-5.0) and those of the bpy 5.1+ venvs
    that scripts/test_blender.sh made (3.13, numpy 2 as Blender 5.1+)."""
    found = [sys.executable]
    found += sorted(str(p) for p in ROOT.glob(".venv-bpy-5.[1-9]*/bin/python"))
    return found


@pytest.fixture(scope="module", params=interpreters())
def numpy_only(request, tmp_path_factory):
    """(python wrapper, env) of an interpreter that sees the stdlib, numpy and the repo."""
    base = request.param
    numpy_dir = subprocess.run([base, "-c", "import numpy, os; print(os.path.dirname("
                                "numpy.__file__))"], capture_output=True, text=True,
                               check=True).stdout.strip()
    folder = tmp_path_factory.mktemp("numpy_only")
    site = folder / "site"
    site.mkdir()
    (site / "numpy").symlink_to(numpy_dir)
    python = folder / "python"
    python.write_text(f'#!/bin/sh\nexec "{base}" -S "$@"\n')
    python.chmod(0o755)
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    env["PYTHONPATH"] = str(site)
    return str(python), env


@pytest.fixture(scope="module")
def server(numpy_only):
    python, env = numpy_only
    local = launch(python, cwd=ROOT, env=env)
    yield local
    local.stop()


def test_the_child_has_numpy_and_nothing_else(numpy_only):
    python, env = numpy_only
    probe = ("import importlib.util, numpy; print(numpy.__version__); "
             f"print([m for m in {MISSING!r} if importlib.util.find_spec(m)])")
    result = subprocess.run([python, "-c", probe], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1] == "[]"
    torch = subprocess.run([python, "-c", "import torch"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=60)
    assert torch.returncode != 0 and "No module named 'torch'" in torch.stderr


def test_health_reports_the_bundled_engine(server):
    assert server.handshake["engine"] == "bundled"
    health = server.client.health()
    assert health["engine"] == "bundled" and health["device"] == "cpu"


def torch_mesh(source, mise, precision="auto"):
    """The final mesh of the torch engine for the same request (auto: bf16 on CPUs that
    have it, as users get)."""
    request = ReconstructRequest(source, None, Settings(mise["resolution0"],
                                                        mise["upsampling_steps"],
                                                        precision=precision))
    model, card = zoo.load(zoo.default_model_name(request.kind))
    request.validate(model)
    *_, finished = pipeline.reconstruct(request, model, card)
    return finished.frame.vertices, finished.frame.faces


def iou(a, b, samples=100_000):
    """Volumetric IoU of two closed meshes on uniform points in their joint bounding box."""
    corners = np.concatenate([a[0], b[0]])
    lo, hi = corners.min(0), corners.max(0)
    points = np.random.default_rng(0).uniform(lo, hi, (samples, 3))
    inside_a, inside_b = (contains(v, f, points, closed=True) for v, f in (a, b))
    return (inside_a & inside_b).sum() / (inside_a | inside_b).sum()


def bundled_mesh(server, mise, **inputs):
    frames = list(server.client.reconstruct(mise=mise, **inputs))
    header, arrays = [f for f in frames if f[0]["type"] == "mesh"][-1]
    final = frames[-1][0]
    assert final["type"] == "final" and final["engine"] == "bundled"
    assert final["precision"] == "float32"
    return arrays["vertices"], arrays["faces"]


def test_chair_scan_with_the_bundled_default(server):
    mise = {"resolution0": 32, "upsampling_steps": 2}
    cloud = read_input(CHAIR)
    mesh = bundled_mesh(server, mise, points=cloud.points.astype(np.float32))
    assert len(mesh[1]) > 10_000
    assert iou(mesh, torch_mesh(cloud, mise)) > 0.995


def test_voxels_with_the_bundled_default(server):
    grid = (np.mgrid[:32, :32, :32] - 15.5) / 32
    occupancy = (np.abs(grid).max(0) < 0.3) & (np.linalg.norm(grid[:2], axis=0) > 0.12)
    mise = {"resolution0": 16, "upsampling_steps": 2}
    frame = {"translate": [0.0, 0.0, 0.0], "scale": 1.0}
    mesh = bundled_mesh(server, mise, voxels=occupancy, voxel_frame=frame)
    source = VoxelInput(occupancy, np.zeros(3), 1.0)
    assert len(mesh[1]) > 1000
    assert iou(mesh, torch_mesh(source, mise)) > 0.995


def test_image_with_the_bundled_default(server):
    yx = np.mgrid[:128, :128] - 63.5
    rgba = np.full((128, 128, 4), 255, np.uint8)
    rgba[np.hypot(*yx) < 40, :3] = (180, 60, 40)
    mise = {"resolution0": 16, "upsampling_steps": 2}
    mesh = bundled_mesh(server, mise, image=rgba)
    assert len(mesh[1]) > 1000
    # Against fp32: the ResNet under the torch engine's bf16 autocast moves the code itself
    # (IoU about 0.98 to its own fp32 mesh), which is no property of the bundled engine.
    assert iou(mesh, torch_mesh(ImageInput(rgba), mise, "fp32")) > 0.995


def test_cli_reconstructs_the_chair_file_to_a_ply(numpy_only, tmp_path):
    """``python -m backend reconstruct chair.ply -o out.ply`` without PyTorch or trimesh."""
    import trimesh

    python, env = numpy_only
    result = subprocess.run([python, "-m", "backend", "reconstruct", str(CHAIR), "-o",
                             str(tmp_path / "chair.ply"), "--resolution0", "16", "--json"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["engine"] == "bundled" and summary["model"] == "pointcloud_poco"
    mesh = trimesh.load(tmp_path / "chair.ply", process=False)
    assert len(mesh.faces) == summary["faces"] > 5000 and mesh.is_watertight
