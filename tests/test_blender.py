"""The Blender extension in real Blender (the ``bpy`` module) against a real backend.

The zip is built with scripts/build_extension.py and installed the way Blender installs
extensions (``bpy.ops.extensions.package_install_files``) into a temporary user folder.
``bpy`` imports once per process and reads BLENDER_USER_RESOURCES when it is imported, so
the Blender side runs in one worker subprocess (this file run with ``--worker``): each test
sends it a scenario name and gets back the scenario's result or its traceback. The
add-on launches the backend itself with ONET_BACKEND_PYTHON (default: this interpreter).

Runs on any bpy from 4.2 on (Python 3.11 or 3.13): the test process imports only the
standard library and pytest; torch is used in a subprocess of the backend's interpreter.
``bash scripts/test_blender.sh VERSION`` runs this file on a given bpy release.
"""

import json
import os
import queue
import re
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import zipfile
from importlib.util import find_spec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

def backend_python():
    """ONET_BACKEND_PYTHON, else this interpreter if it has torch, else the main .venv's."""
    if os.environ.get("ONET_BACKEND_PYTHON"):
        return os.environ["ONET_BACKEND_PYTHON"]
    venv = os.path.join(ROOT, ".venv", "bin", "python")
    if find_spec("torch") is None and os.path.exists(venv):
        return venv
    return sys.executable


BACKEND_PYTHON = backend_python()


def bundled_default(kind):
    """The bundled model whose card claims ``kind`` (read from the cards: this process
    imports no backend code)."""
    folder = os.path.join(ROOT, "backend", "weights")
    for name in sorted(os.listdir(folder)):
        if name.endswith(".json"):
            with open(os.path.join(folder, name)) as handle:
                card = json.load(handle)
            if kind in card.get("default_for", []):
                return card["name"]
    raise AssertionError(f"no bundled card is the default for {kind}")
MARK = "@@ONET-RESULT@@ "
ADDON = "bl_ext.user_default.blender_onet"

if __name__ != "__main__":
    import pytest

    pytestmark = pytest.mark.skipif(find_spec("bpy") is None,
                                    reason="bpy (Blender as a Python module) is not installed")


# ==============================================================================================
# pytest side: build, models, worker process
# ==============================================================================================
MAKE_MODELS = r"""
import importlib.util, sys
from pathlib import Path
root, out = sys.argv[1], Path(sys.argv[2])
sys.path.insert(0, root)
spec = importlib.util.spec_from_file_location("onet_test_server", f"{root}/tests/test_server.py")
helpers = importlib.util.module_from_spec(spec)
spec.loader.exec_module(helpers)
from backend.io.checkpoints import save_model
from backend.models import PAPER_CONFIGS, build_model
import torch
torch.manual_seed(0)  # the same models every run (build_model's init is random)
small = dict(PAPER_CONFIGS["pointcloud"])
small["encoder"] = {"name": "resnet_pointnet", "c_dim": 16, "hidden_dim": 32}
small["decoder"] = {"name": "cbatchnorm", "c_dim": 16, "z_dim": 0, "hidden_size": 32,
                    "legacy": False}
save_model(out / "tiny_pointcloud.safetensors", helpers.perturbed(build_model(small), 1),
           {"threshold": 0.2, "input_kind": "pointcloud"})
save_model(out / "paper_pointcloud.safetensors",
           helpers.perturbed(build_model(PAPER_CONFIGS["pointcloud"]), 2),
           {"threshold": 0.2, "input_kind": "pointcloud"})
"""


class Worker:
    """The Blender subprocess; ``run(name)`` executes ``scenario_<name>`` there."""

    def __init__(self, zip_path, model_dir, user_dir, backend_python=BACKEND_PYTHON):
        """backend_python: ONET_BACKEND_PYTHON for the add-on; None leaves it unset, so the
        add-on falls back to Blender's own Python (the bundled engine)."""
        env = dict(os.environ, BLENDER_USER_RESOURCES=user_dir, PYTHONUNBUFFERED="1")
        env.pop("ONET_BACKEND_PYTHON", None)
        if backend_python is not None:
            env["ONET_BACKEND_PYTHON"] = backend_python
        self.log = []
        self.full_log = []  # everything Blender printed, for the final traceback check
        self.lines = queue.Queue()
        self.process = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--worker", zip_path, model_dir],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env=env, cwd=ROOT)
        threading.Thread(target=self._read, daemon=True).start()
        self.started = self._result("startup", 120)

    def _read(self):
        for line in self.process.stdout:
            self.full_log.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def _result(self, name, timeout):
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"scenario {name} timed out after {timeout} s; Blender"
                                     " output:\n" + "".join(self.log[-40:])) from None
            if line is None:
                raise AssertionError(f"the Blender worker died during {name}; output:\n"
                                     + "".join(self.log[-60:]))
            if line.startswith(MARK):
                result = json.loads(line[len(MARK):])
                if not result["ok"]:
                    raise AssertionError(f"scenario {name} failed in Blender:\n"
                                         f"{result['error']}\nBlender output:\n"
                                         + "".join(self.log[-30:]))
                return result["data"]
            self.log.append(line)

    def run(self, name, timeout=180, **kwargs):
        self.log.clear()
        self.process.stdin.write(json.dumps({"scenario": name, "args": kwargs}) + "\n")
        self.process.stdin.flush()
        return self._result(name, timeout)

    def close(self):
        if self.process.poll() is None:
            try:
                self.process.stdin.write(json.dumps({"scenario": "quit"}) + "\n")
                self.process.stdin.flush()
                self.process.wait(30)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()


if __name__ != "__main__":
    @pytest.fixture(scope="session")
    def extension_zip(tmp_path_factory):
        out = tmp_path_factory.mktemp("dist")
        result = subprocess.run([sys.executable, os.path.join(ROOT, "scripts",
                                                              "build_extension.py"),
                                 "--output-dir", str(out)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout.strip().splitlines()[-1]

    @pytest.fixture(scope="session")
    def model_dir(tmp_path_factory):
        """A tiny random point-cloud ONet (fast) and a paper-size one (slow to cancel)."""
        folder = tmp_path_factory.mktemp("models")
        result = subprocess.run([BACKEND_PYTHON, "-c", MAKE_MODELS, ROOT, str(folder)],
                                capture_output=True, text=True, cwd=ROOT)
        assert result.returncode == 0, result.stderr[-3000:]
        return str(folder)

    @pytest.fixture(scope="session")
    def blender(extension_zip, model_dir, tmp_path_factory):
        worker = Worker(extension_zip, model_dir, str(tmp_path_factory.mktemp("blender-user")))
        yield worker
        worker.close()

    @pytest.fixture(scope="session")
    def bundled_blender(extension_zip, model_dir, tmp_path_factory):
        """A Blender whose add-on has no backend Python configured: only the installed zip."""
        worker = Worker(extension_zip, model_dir, str(tmp_path_factory.mktemp("bundled-user")),
                        backend_python=None)
        yield worker
        worker.close()


# ==============================================================================================
# Tests (pytest side): each runs one scenario in Blender
# ==============================================================================================
def test_zip_layout_and_manifest(extension_zip):
    with zipfile.ZipFile(extension_zip) as archive:
        names = archive.namelist()
        manifest = archive.read("blender_manifest.toml").decode()
        licence = archive.read("LICENSE").decode()
    assert 'license = ["SPDX:GPL-3.0-or-later"]' in manifest
    with open(os.path.join(ROOT, "LICENSE")) as handle:
        assert licence == handle.read()  # the licence text ships in the zip, verbatim
    assert licence.lstrip().startswith("GNU GENERAL PUBLIC LICENSE") and "Version 3" in licence
    assert "__init__.py" in names and "jobs.py" in names  # add-on files at the zip root
    for required in ("backend/__init__.py", "backend/service/client.py",
                     "backend/service/protocol.py", "backend/service/server.py",
                     "backend/engine/pipeline.py", "backend/requirements.txt",
                     "backend/samples/boxes_rods_scan.ply"):
        assert required in names
    assert any(name.startswith("backend/weights/") for name in names)
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]
    assert not [name for name in names if "bench" in name]  # developer tools stay out
    assert 'id = "blender_onet"' in manifest and 'blender_version_min = "4.2.0"' in manifest
    assert "network =" in manifest and "files =" in manifest
    with zipfile.ZipFile(extension_zip) as archive:
        pins = archive.read("backend/requirements.txt").decode()
    assert "torch==" in pins and "numpy==" in pins and "bpy" not in pins


def test_addon_source_rules():
    """Relative imports only, no sys.path edits, no torch, writable files in the user dir."""
    folder = os.path.join(ROOT, "blender_onet")
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".py"):
            continue
        with open(os.path.join(folder, name)) as handle:
            text = handle.read()
        assert "sys.path" not in text, name
        assert not re.search(r"^\s*(import|from) torch", text, re.M), name
        assert not re.search(r"^\s*(import|from) backend", text, re.M), name
        assert "blender_onet" not in text.replace("ONET", ""), name  # no absolute self-import
        # The bundled backend is imported in one module, and only its torch-free parts.
        bundled = re.findall(r"^\s*from \.backend(\S*) import (.+)$", text, re.M)
        assert name == "bundled.py" or not bundled, name
        if name == "bundled.py":
            assert {module for module, _ in bundled} == {".io.inputs", ".service"}, bundled
            assert all(names.split(" as ")[0].strip() in ("KIND_NAMES", "client", "protocol")
                       for _, names in bundled), bundled


def load_numeric():
    """The add-on's numpy-only module, without Blender (its package imports bpy)."""
    from importlib.util import module_from_spec, spec_from_file_location

    spec = spec_from_file_location("onet_numeric", os.path.join(ROOT, "blender_onet",
                                                                "numeric.py"))
    module = module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_voxelize_fills_a_closed_shell_and_keeps_the_frame():
    import numpy as np

    numeric = load_numeric()
    # A closed octahedron (8 triangles) around (1, 2, 3), radius 0.8 along each axis.
    centre = np.array([1.0, 2.0, 3.0])
    vertices = centre + 0.8 * np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0],
                                        [0, 0, 1], [0, 0, -1]], float)
    faces = np.array([[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4],
                      [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]])
    occupancy, translate, edge = numeric.voxelize(vertices, faces, 32)
    assert np.allclose(translate, centre - 0.8) and np.isclose(edge, 1.6)
    index = np.indices((32, 32, 32)).reshape(3, -1).T
    centres = translate + (index + 0.5) / 32 * edge
    inside = np.abs(centres - centre).sum(1) <= 0.8 - 1.6 / 32  # well inside the octahedron
    outside = np.abs(centres - centre).sum(1) >= 0.8 + 1.6 / 32 * 1.8
    assert occupancy.reshape(-1)[inside].all() and not occupancy.reshape(-1)[outside].any()
    assert not numeric.looks_like_voxels(vertices, faces)


def test_images_masks_and_bad_points():
    import numpy as np

    numeric = load_numeric()
    pixels = np.zeros((2, 3, 4), np.float32)  # Blender order: bottom row first
    pixels[0, :, 0] = 1.0
    pixels[..., 3] = 0.5
    rgba = numeric.pixels_to_rgba8(pixels.ravel(), 3, 2, 4)
    assert rgba.shape == (2, 3, 4) and rgba.dtype == np.uint8
    assert (rgba[1, :, 0] == 255).all() and (rgba[0, :, 0] == 0).all()  # now top to bottom
    assert (rgba[..., 3] == 128).all()
    mask = numeric.mask_from_rgba(np.full((4, 4, 4), 255, np.uint8), (8, 2))
    assert mask.shape == (8, 2) and (mask == 255).all()
    cloud = np.random.default_rng(0).random((10, 3))
    cloud[4, 1] = np.inf
    with pytest.raises(numeric.InputError, match="1 of 10 points with NaN or infinite"):
        numeric.finite_points(cloud, "The mesh 'X'")
    with pytest.raises(numeric.InputError, match="coincide"):
        numeric.finite_points(np.ones((5, 3)), "The mesh 'X'")


def test_installs_and_registers(blender):
    info = blender.started
    assert info["module"] == ADDON and info["enabled"]
    assert info["timer_registered"] and info["has_pump"]
    assert not info["torch_imported"]  # the add-on never imports torch into Blender
    assert info["user_dir"].startswith(info["user_resources"])
    labels = info["operators"]
    for op in ("reconstruct", "cancel", "backend_start", "backend_stop",
               "interpolate_set_a", "interpolate_set_b", "interpolate_apply"):
        assert labels[op]["label"] and len(labels[op]["description"]) > 20, op


def test_reconstruct_mesh_vertices_streams_in_the_source_frame(blender):
    data = blender.run("mesh_vertices")
    assert data["levels_seen"] == [0, 1, 2], data  # every MISE level was applied
    assert data["same_datablock"] and data["closed"] and data["smooth"]
    assert data["name"] == "Src ONet"
    assert data["bbox_error"] < 0.02, data
    assert data["matrix_error"] < 1e-6
    assert data["props"]["onet_model"] == "analytic:box"
    assert data["props"]["onet_resolution0"] == 32 and data["props"]["onet_status"] == "done"
    assert data["description"] == "Mesh: 8 vertices → 8 points"
    assert "tiny_pointcloud" in data["models_for_points"]
    assert "analytic:box" not in data["models_without_test_shapes"]
    assert data["objects_after"] == sorted(data["objects_before"] + ["Src ONet"])
    assert data["after_undo"] == data["objects_before"]
    assert data["after_redo"] == data["objects_after"]
    assert data["surface_description"] == "Mesh: 12 faces → 5,000 points sampled on the faces"
    assert data["surface_closed"]
    assert data["rotations"] == [2, True]


def test_bundled_engine_in_blenders_own_python(request):
    """Nothing configured, no PyTorch in Blender's Python: the add-on launches the backend
    with Blender's own interpreter, which picks the bundled engine, and the chair scan comes
    back as a closed mesh."""
    if find_spec("torch") is not None:
        pytest.skip("this Blender's Python has PyTorch, so the add-on runs the torch engine;"
                    " the bpy 5.1+ venvs (bash scripts/test_blender.sh 5.2.3) have none")
    bundled_blender = request.getfixturevalue("bundled_blender")
    data = bundled_blender.run("bundled_engine", timeout=300)
    assert data["python"] == data["executable"] and "bundled engine" in data["source"]
    assert not data["blender_has_torch"] and data["engine"] == "bundled", data
    assert data["status"].startswith("Running locally: bundled engine on cpu"), data
    assert data["levels_seen"][-1] == 2 and data["closed"] and data["faces"] > 10_000, data
    assert data["onet_status"] == "done"
    assert data["image_file_closed"] and data["image_file_status"] == "done", data


def test_tiled_scene_with_the_bundled_convonet(blender):
    data = blender.run("tiled_scene")
    assert data["closed"] and data["tiles_seen"] == data["tiles"] > 1, data
    assert data["extent_error"] < 0.1 and data["matrix_error"] < 1e-6, data
    assert data["props"]["onet_tile_size"] == 1.0 and data["props"]["onet_status"] == "done"
    assert not data["props"]["onet_fill_cavities"]


def test_reconstruct_voxel_object(blender):
    data = blender.run("voxel_object")
    assert data["voxelised_exactly"], data
    assert data["description"].startswith("Voxel mesh"), data
    assert "tiny_pointcloud" not in data["models"]
    assert data["closed"] and data["bbox_error"] < 0.02 and data["matrix_error"] < 1e-6, data
    assert data["updates"] == 3


def test_reconstruct_image_empty_and_image_sources(blender):
    data = blender.run("image_inputs")
    assert data["empty"]["closed"] and data["empty"]["center_error"] < 0.02, data
    assert abs(data["empty"]["radius"] / data["empty"]["expected_radius"] - 1) < 0.05, data
    assert data["file"]["closed"] and data["file"]["center_error"] < 0.02, data
    assert data["datablock_with_mask"]["closed"], data


def test_preview_crop_shows_the_object_centred_as_in_training(blender):
    data = blender.run("crop_preview")
    assert data["not_image_problem"], data  # greyed out without an image input
    assert data["size"] == [224, 224, 3], data
    # The small disc in a corner of the 64 x 64 image fills OBJECT_FILL (0.54) of the view,
    # centred (to half an input pixel: 4 of the view's, the crop being 28 pixels wide); its
    # red survives, the transparent rest is white.
    assert abs(data["centre"][0] - 112) <= 5 and abs(data["centre"][1] - 112) <= 5, data
    assert abs(data["side"] / 224 - 0.54) < 0.04, data
    assert data["object_colour"][0] > 190 and data["background"] == [255, 255, 255], data
    assert "alpha" in data["text"], data
    assert data["objects_after"] == data["objects_before"], data
    assert data["source_unchanged"], data


def test_point_cloud_and_volume_objects(blender):
    data = blender.run("pointcloud_and_volume")
    if data["pointcloud"] is not None:  # bpy 5.0+ can make point cloud objects from Python
        assert data["pointcloud"]["bbox_error"] < 0.02, data
    if data["volume"].get("message"):  # Blender without Python access to volume voxels
        assert "volume" in data["volume"]["message"].lower()
    else:
        assert data["volume"]["closed"] and data["volume"]["bbox_error"] < 0.03, data


def test_cancel_mid_job_and_opening_a_file(blender):
    data = blender.run("cancel")
    assert data["updates_before_cancel"] >= 1
    assert data["objects_after_cancel"] == data["objects_before"]
    assert data["server_status"] == "cancelled"
    assert data["partial_kept"] == "Slow2 ONet (partial)"
    # The object, the job and the panel say the same thing (one transition sets all three).
    assert data["partial_status"] == data["partial_job_status"] == "cancelled", data
    assert data["partial_panel_result"] == data["partial_job_message"] != "", data
    assert data["load_pre_cancelled"] and data["after_load_server_status"] == "cancelled"
    assert data["load_pre_job"] == ["cancelled", "Cancelled: another file was opened."]
    assert data["next_job_ok"]


def test_every_job_state_change_goes_through_transition(blender):
    data = blender.run("transitions")
    # "queued" only if the server still counted another job when it accepted this one.
    assert data["done_states"] in (["starting", "running", "done"],
                                   ["starting", "queued", "running", "done"]), data
    assert data["done_object_status"] == "done"
    assert data["done_panel_result"] == data["done_job_message"], data
    assert data["done_job_message"].startswith("Box ONet: ") and data["done_panel_error"] == ""
    assert data["status_read_only"]
    assert data["failed_states"] == ["starting", "failed"], data
    assert data["failed_panel_error"] == data["failed_job_message"], data
    assert "no_such_model" in data["failed_job_message"], data
    assert data["unrecorded"] == [], data  # every job's status is the last one recorded


def test_job_status_is_set_in_one_place():
    """Only jobs.transition changes a job's status (``_status``; ``status`` is read-only) and
    only jobs._show_status writes a job's ``onet_status``; the copy that Apply Blend makes
    is a new object, marked done by operators.apply_interpolation, and
    jobs.mark_interrupted marks results no live job owns."""
    import ast

    folder = os.path.join(ROOT, "blender_onet")
    writers = {"_status": set(), "status": set(), "onet_status": set()}
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".py"):
            continue
        with open(os.path.join(folder, name)) as handle:
            tree = ast.parse(handle.read())
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef):
                continue
            for node in ast.walk(function):
                targets = node.targets if isinstance(node, ast.Assign) else []
                for target in targets:
                    for part in ast.walk(target):
                        if isinstance(part, ast.Attribute) and part.attr in writers:
                            writers[part.attr].add(f"{name}:{function.name}")
                        if (isinstance(part, ast.Subscript)
                                and isinstance(part.slice, ast.Constant)
                                and part.slice.value == "onet_status"):
                            writers["onet_status"].add(f"{name}:{function.name}")
    assert writers["_status"] == {"jobs.py:__init__", "jobs.py:transition"}, writers
    assert writers["status"] == set(), writers
    assert writers["onet_status"] == {"jobs.py:_show_status", "jobs.py:mark_interrupted",
                                      "operators.py:apply_interpolation"}, writers


def test_backend_killed_mid_job(blender):
    data = blender.run("backend_killed")
    assert data["updates_before_kill"] >= 1
    assert "killed" in data["error"] and "Traceback" not in data["error"], data
    assert data["objects_after"] == data["objects_before"]
    assert data["restarted_and_reconstructed"]


def test_bad_inputs_give_messages_not_tracebacks(blender):
    data = blender.run("bad_inputs")
    for case, message in data.items():
        if isinstance(message, str):
            assert message and "Traceback" not in message, case
    assert "Select an object" in data["empty_selection"]
    assert "has no vertices" in data["no_vertices"]
    assert "NaN" in data["nan"] and not data["nan_left_scene"]
    assert "camera" in data["camera"] and "cannot be reconstructed" in data["camera"]
    assert "empty without an image" in data["plain_empty"]
    assert "No reconstruction is running" in data["cancel_idle"]
    assert "Set shapes A and B" in data["apply_without_shapes"]
    assert "Online access is disabled" in data["install_offline"]
    assert "does not exist" in data["check_missing_python"]
    assert data["install_failure"].startswith("error: cannot run /nonexistent/python")
    assert "$ /nonexistent/python -m venv" in data["install_failure"]
    assert "/nonexistent/python does not exist" in data["bad_interpreter"]
    assert not data["bad_interpreter_left_scene"]
    assert "PyTorch" in data["check_python"]
    assert "voxelised" in data["voxel_plain_box"]


def test_undo_mid_job_never_lets_a_job_write_another_object(blender):
    data = blender.run("undo_mid_job", timeout=240)
    # One Ctrl-Z after the job finished goes back to its first level: marked interrupted.
    assert data["undone_to_first_level"] and data["after_undo_status"] == "interrupted", data
    assert data["after_undo_running_jobs"] == 0
    # Ctrl-Z mid-job brings back an older result under the job's object name: the job stops
    # and the restored object keeps its own faces.
    assert data["restored_name"] == data["job_object_name"], data
    assert data["restored_faces_after"] == data["restored_faces_before"] > 0, data
    assert data["restored_status"] == "done" and not data["restored_has_job_uid"], data
    assert data["job_status"] == "cancelled" and "undone" in data["job_message"], data


def test_rename_delete_and_save_mid_job(blender):
    data = blender.run("rename_delete_save_mid_job", timeout=240)
    # Renamed mid-job: the job keeps streaming into the renamed object, to the end.
    assert data["renamed"]["status"] == "done" and data["renamed"]["level"] == 2, data
    assert data["renamed"]["levels_after_rename"] >= 1, data
    assert data["renamed"]["objects"] == ["Renamed", "Src"], data
    # Deleted mid-job: the job stops and its mesh goes too (no orphan).
    assert data["deleted"]["job_status"] == "cancelled", data
    assert data["deleted"]["orphan_meshes"] == [] and data["deleted"]["objects"] == ["Gone"]
    # Saved mid-job and opened again: the partial result says it was interrupted, and the
    # panel no longer shows the previous file's message.
    assert data["saved"]["status_in_file"] == "interrupted", data
    assert data["saved"]["panel_after_load"] == ["", ""], data


def test_sparse_and_degenerate_inputs_warn_with_what_to_do(blender):
    data = blender.run("input_warnings", timeout=240)
    assert "only one point" in data["one_vertex"]["problem"], data
    assert "only one point" in data["one_vertex"]["poll"]
    assert "NaN" in data["nan"]["problem"] and "NaN" in " ".join(data["nan"]["labels"])
    assert "NaN" in data["nan"]["poll"]
    eight = data["eight_vertices"]
    assert eight["text"] == "Mesh: 8 vertices → 8 points" and eight["problem"] is None
    assert eight["warning"].startswith("Only 8 points: too few"), data
    assert "Surface Points" in eight["warning"]
    assert any(label.startswith("Only 8 points") for label in eight["labels"]), eight
    # The default cube (8 vertices, 6 faces) under Auto: points sampled on its faces.
    assert data["cube"]["text"] == "Mesh: 6 faces → 10,000 points sampled on the faces", data
    assert data["cube"]["warning"] is None
    assert "1e+30" in data["far"]["warning"] and data["far"]["problem"] is None, data
    assert data["modifier_count"] == "Mesh: 16 vertices (with modifiers) → 16 points", data
    edit = data["edit_mode"]  # vertices added in Edit Mode count before leaving it
    assert edit["text"] == f"Mesh: {edit['bmesh_vertices']:,} vertices → " \
        f"{edit['bmesh_vertices']:,} points" and edit["bmesh_vertices"] > 8, data
    # Backend notes reach the panel; the result is the selected, active object.
    assert "Backend: subsampled 4000 points to the model's 3000" in data["notes_panel"], data
    assert data["result_active"] and data["result_selected"] and not data["source_selected"]
    # A mesh over MAIN_THREAD_FACES is sampled on the job's thread, not in execute().
    assert data["large"]["deferred"] and data["large"]["closed"], data


def test_backend_install_connection_and_stop_problems(blender):
    data = blender.run("backend_problems", timeout=120)
    # A half-made venv is never picked: Blender's own Python (the bundled engine) runs,
    # and the source says the environment is incomplete.
    assert data["half_made"][0] not in ("", data["venv_python"]), data
    assert "incomplete" in data["half_made"][1], data
    assert data["complete"] == [data["venv_python"], "the installed backend environment"]
    assert data["http_404"].startswith("The "), data
    assert "HTTP 404 (Not Found) with no message" in data["http_404"], data
    assert "(http)" not in data["http_404"]
    assert "Online access is disabled" in data["offline_remote_poll"], data
    assert data["offline_loopback_problem"] is None
    assert "Online access is disabled" in data["offline_ensure"], data
    # Stopping a hung (SIGSTOPped) backend returns at once; it is killed in the background.
    assert data["hung_alive_after_stop"] and data["hung_state"] == "stopped", data
    assert data["hung_exit"] == -9, data


def test_the_timer_callback_applies_redraws_and_pushes_undo(blender):
    data = blender.run("timer_path", timeout=180)
    assert data["intervals"]["busy"] == data["busy_interval"], data
    assert data["intervals"]["idle"] == data["idle_interval"], data
    assert data["redraws"] >= data["levels"] >= 2, data
    assert data["closed"] and data["status"] == "done"
    assert data["after_undo"] == data["objects_before"], data  # the undo step the timer pushed
    assert data["stale_marked"] == "interrupted", data  # a result with no job, at redraw


def test_remote_backend_with_token(blender):
    data = blender.run("remote")
    assert data["closed"] and data["status"].startswith("Connected to 127.0.0.1:")
    assert "refused the token" in data["wrong_token"], data
    assert "Set the backend URL" in data["no_url"]
    # The point limit is the server's (--max-points 1000), read from /v1/health.
    assert data["max_points"] == 1000, data
    assert data["small_cloud"] == "Mesh: 900 vertices → 900 points", data
    assert "1,200 points, more than the backend accepts (1,000" in data["large_cloud"], data
    assert data["large_cloud"] in data["large_cloud_poll"], data


def test_latent_interpolation_ends_match_the_reconstructions(blender):
    data = blender.run("interpolation", timeout=240)
    ends = {key: data[key] for key in data if key[:3] in ("t0_", "t1_")}  # pytest cuts `data`
    for end in ("t0", "t1"):
        assert data[end + "_faces_equal"] and data[end + "_vertex_error"] < 1e-4, repr(ends)
    assert data["coalesced_jobs"] <= 4, data  # 9 slider moves, only the newest ones ran
    assert abs(data["shown_after_drag"] - 0.9) < 1e-6 and not data["shown_is_preview"]
    assert data["applied"].startswith("A to B ONet t=0.90") and data["applied_closed"]


def test_new_shape_samples_the_prior_and_blends_two_samples(blender):
    data = blender.run("sample", timeout=300)
    assert data["name"] == "Sample 3 ONet" and data["closed"] and data["levels"] == 2, data
    assert data["props"]["onet_seed"] == 3 and data["props"]["onet_status"] == "done", data
    assert data["props"]["onet_model"] == bundled_default("sample"), data
    assert data["same_seed_same_vertices"] and not data["other_seed_same_vertices"], data
    assert data["matrix_error"] < 1e-6, data  # at the 3D cursor, y-up turned to z-up
    assert data["t0_vertex_error"] < 1e-4 and data["t1_vertex_error"] < 1e-4, data
    assert data["shown"] == [1.0, False], data
    assert "onet.sample" in data["panel"]["operators"] and "seed" in data["panel"]["props"]
    assert len(data["label"]) > 20 and data["objects_after_cancel"] == data["objects_before"]


def test_panels_draw_what_the_issue_asks_for(blender):
    data = blender.run("ui_draw")
    idle, running = data["idle"], data["running"]
    assert "Mesh: 8 vertices → 8 points" in idle["labels"]
    # Clouds are sent whole (the backend subsamples them itself): no 100,000 cap.
    assert data["large_cloud"] == "Mesh: 150,000 vertices → 150,000 points", data
    assert data["max_points"] == 10_000_000  # the backend's default, from its /v1/health
    assert "onet.reconstruct" in idle["operators"] and "onet.backend_start" in idle["operators"]
    assert {"model", "preset", "source", "mesh_mode"} <= set(idle["props"])
    assert any("MISE 32 → 128" in label for label in idle["labels"])  # Advanced fold open
    # Threshold 0 is the model's own, as the backend lists it (no copy of 0.2 in the add-on).
    assert any(label.startswith("0: the model's own threshold, ") for label in idle["labels"])
    assert "fill_cavities" in idle["props"] and "tile_size" in idle["props"]
    assert {"fit_steps", "rotations"} <= set(idle["props"])  # Advanced > Fit to Points, Rotations
    # Smoothing -1 is the card's (sent as null), a number is sent as it is.
    assert {"smooth_steps", "drop_floaters"} <= set(idle["props"])
    assert any(label.startswith("-1: the model's own smoothing, ") for label in idle["labels"])
    assert any(label.startswith("0: the model's own rotations, ") for label in idle["labels"])
    assert [(o["smooth_steps"], o["drop_floaters"]) for o in data["outputs"]] == [
        (None, True), (2, False)]
    assert any(label.startswith("Running locally: torch engine on cpu") for label in idle["labels"])
    assert "onet.cancel" in running["operators"]
    assert any(p.startswith(("Level ", "Waiting", "Sending", "Starting"))
               for p in running["progress"]), running
    assert "python_path" in data["prefs"]["props"] and "onet.check_python" in \
        data["prefs"]["operators"] and "onet.install_backend" in data["prefs"]["operators"]
    assert data["prefs_remote"]["props"][:3] == ["backend_mode", "url", "token"]


def test_presets_and_disable_stops_the_backend(blender):
    data = blender.run("presets_and_disable")
    assert data["presets"] == [["HIGH", 32, 3], ["PREVIEW", 16, 1], ["CUSTOM", 20, 1]]
    assert data["backend_stopped"] and not data["timer_registered"]
    assert not data["torch_imported"]  # nor did any scenario's use of it


def test_no_tracebacks_in_blender_output(blender):
    """Nothing raised unnoticed: no traceback from Blender, the add-on, timers or threads."""
    text = "".join(line for line in blender.full_log if not line.startswith(MARK))
    assert "Traceback" not in text and "Exception in thread" not in text, text[-3000:]


# ==============================================================================================
# Worker side: runs inside Blender (only when this file is executed with --worker)
# ==============================================================================================
def worker_main(zip_path, model_dir):
    global bpy, np, addon, MODEL_DIR
    import bpy
    import numpy as np

    import addon_utils  # Blender's module: importable once bpy is

    MODEL_DIR = model_dir

    def reply(ok, data=None, error=None):
        sys.stdout.write(MARK + json.dumps({"ok": ok, "data": data, "error": error}) + "\n")
        sys.stdout.flush()

    try:
        bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default",
                                                 enable_on_install=True)
        import importlib

        addon = importlib.import_module(ADDON)
        prefs = bpy.context.preferences.addons[ADDON].preferences
        prefs.model_dir = model_dir
        operators = {}
        for cls in addon.operators.CLASSES:
            operators[cls.bl_idname.split(".", 1)[1]] = {"label": cls.bl_label,
                                                         "description": cls.bl_description}
        reply(True, {"module": addon.__name__, "enabled": ADDON in
                     bpy.context.preferences.addons, "has_pump": callable(addon.pump),
                     "timer_registered": bpy.app.timers.is_registered(addon.timer_step),
                     "user_dir": bpy.utils.extension_path_user(ADDON, create=True),
                     "user_resources": os.environ["BLENDER_USER_RESOURCES"],
                     "operators": operators, "torch_imported": "torch" in sys.modules})
    except Exception:
        reply(False, error=traceback.format_exc())
        return
    for line in sys.stdin:
        request = json.loads(line)
        if request["scenario"] == "quit":
            break
        try:
            reply(True, globals()["scenario_" + request["scenario"]](**request["args"]))
        except Exception:
            reply(False, error=traceback.format_exc())
    try:
        addon_utils.disable(ADDON)
    except Exception:
        pass


# -- helpers (worker) ----------------------------------------------------------------------------
BOX_HALF = (0.301, 0.203, 0.127)  # analytic:box half sizes in the unit cube
SPHERE_RADIUS = 0.35


def fresh_scene():
    """An empty scene (add-ons stay enabled); forget the previous scenario's state."""
    bpy.ops.wm.read_homefile(use_empty=True)
    settings = bpy.context.scene.onet
    settings.show_test_shapes = True
    return settings


def make_object(name, vertices, faces=(), location=(0, 0, 0), rotation=(0, 0, 0),
                scale=(1, 1, 1)):
    mesh = bpy.data.meshes.new(name)
    vertices = np.asarray(vertices, np.float32).reshape(-1, 3)
    faces = np.asarray(faces, np.int32).reshape(-1, 3)
    if len(faces):
        addon.result_mesh.write_mesh(mesh, vertices, faces)
    else:
        mesh.vertices.add(len(vertices))
        mesh.vertices.foreach_set("co", vertices.ravel())
        mesh.update()
    ob = bpy.data.objects.new(name, mesh)
    ob.location, ob.rotation_euler, ob.scale = location, rotation, scale
    bpy.context.scene.collection.objects.link(ob)
    activate(ob)
    return ob


def activate(ob):
    for other in bpy.context.view_layer.objects:
        other.select_set(False)
    if ob is not None:
        ob.select_set(True)
    bpy.context.view_layer.objects.active = ob
    bpy.context.view_layer.update()


def pump_until_idle(timeout=120.0, on_step=None):
    deadline = time.monotonic() + timeout
    while addon.pump():
        if on_step is not None:
            on_step()
        if time.monotonic() > deadline:
            raise AssertionError("the job did not finish in time")
        time.sleep(0.01)
    if on_step is not None:
        on_step()


def wait_for_backend():
    deadline = time.monotonic() + 120
    while addon.connection.BACKEND.state == "starting" or not addon.connection.BACKEND.models:
        addon.pump()
        if addon.connection.BACKEND.state == "error" or time.monotonic() > deadline:
            raise AssertionError(addon.connection.BACKEND.message)
        time.sleep(0.05)


def reconstruct(source, model, preset="STANDARD", settings=None):
    """Run onet.reconstruct on ``source`` to the end; (result object, updates seen)."""
    settings = settings or bpy.context.scene.onet
    settings.model_name, settings.preset = model, preset
    activate(source)
    levels = []
    before = set(bpy.data.objects.keys())
    bpy.ops.onet.reconstruct()

    def step():
        for job in addon.jobs.running():
            ob = bpy.data.objects.get(job.result_name or "")
            if ob is not None and (not levels or levels[-1][1] != job.updates):
                levels.append((int(ob["onet_level"]), job.updates, ob.data.as_pointer()))

    pump_until_idle(on_step=step)
    created = sorted(set(bpy.data.objects.keys()) - before)
    assert len(created) == 1, (created, addon.status.panel.last_error)
    return bpy.data.objects[created[0]], levels


def mesh_arrays(ob):
    mesh = ob.data
    vertices = np.empty(len(mesh.vertices) * 3, np.float32)
    mesh.vertices.foreach_get("co", vertices)
    mesh.calc_loop_triangles()
    faces = np.empty(len(mesh.loop_triangles) * 3, np.int32)
    mesh.loop_triangles.foreach_get("vertices", faces)
    return vertices.reshape(-1, 3).astype(np.float64), faces.reshape(-1, 3)


def world_vertices(ob):
    vertices, _ = mesh_arrays(ob)
    matrix = np.array(ob.matrix_world, np.float64)
    return vertices @ matrix[:3, :3].T + matrix[:3, 3]


def is_closed(ob):
    """Every edge is used by exactly two faces."""
    mesh = ob.data
    edges = np.empty(len(mesh.loops), np.int32)
    mesh.loops.foreach_get("edge_index", edges)
    counts = np.bincount(edges, minlength=len(mesh.edges))
    return bool(len(mesh.polygons) > 0 and (counts == 2).all())


def is_smooth(ob):
    smooth = np.empty(len(ob.data.polygons), bool)
    ob.data.polygons.foreach_get("use_smooth", smooth)
    return bool(smooth.all())


def bbox_error(ob, points, half):
    """Largest distance between the result's local box and the box the analytic shape has
    in the frame of ``points`` (centre of their box, scaled by its longest edge), / edge."""
    vertices, _ = mesh_arrays(ob)
    lo, hi = points.min(0), points.max(0)
    centre, edge = (lo + hi) / 2, (hi - lo).max()
    want_lo, want_hi = centre - edge * np.asarray(half), centre + edge * np.asarray(half)
    got_lo, got_hi = vertices.min(0), vertices.max(0)
    return float(max(np.abs(got_lo - want_lo).max(), np.abs(got_hi - want_hi).max()) / edge)


def matrix_error(a, b):
    return float(np.abs(np.array(a.matrix_world) - np.array(b.matrix_world)).max())


def poll_message(call):
    """The message an operator call fails with (poll message or error report)."""
    try:
        call()
    except RuntimeError as exc:
        return str(exc)
    return ""


def box_vertices(size):
    corners = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], float)
    return corners * np.asarray(size) / 2


def sphere_points(n, radius, seed, squash=(1, 1, 1)):
    d = np.random.default_rng(seed).normal(size=(n, 3))
    return radius * d / np.linalg.norm(d, axis=1, keepdims=True) * np.asarray(squash)


# -- scenarios (worker) --------------------------------------------------------------------------
def scenario_mesh_vertices():
    settings = fresh_scene()
    addon.connection.BACKEND.start_async(addon.prefs.settings_snapshot())
    wait_for_backend()
    vertices = box_vertices((2.0, 1.2, 0.6)) + (0.3, -0.2, 0.1)
    source = make_object("Src", vertices, location=(3, -2, 1), rotation=(0.3, 0.5, 1.1),
                         scale=(1.5, 0.8, 1.2))
    description = addon.scene_input.describe(bpy.context, settings).text
    settings.show_test_shapes = False
    without = [item[0] for item in addon.props.model_items(settings, bpy.context)]
    settings.show_test_shapes = True
    models = [item[0] for item in addon.props.model_items(settings, bpy.context)]
    before = sorted(bpy.data.objects.keys())
    bpy.ops.ed.undo_push(message="before")
    result, levels = reconstruct(source, "analytic:box")
    out = {"levels_seen": [level for level, _, _ in levels],
            "same_datablock": len({pointer for _, _, pointer in levels}) == 1,
            "closed": is_closed(result), "smooth": is_smooth(result), "name": result.name,
            "bbox_error": bbox_error(result, vertices, BOX_HALF),
            "matrix_error": matrix_error(result, source),
            "props": {key: result[key] for key in result.keys() if key.startswith("onet_")},
            "description": description, "models_for_points": models,
            "models_without_test_shapes": without, "objects_before": before,
            "objects_after": sorted(bpy.data.objects.keys())}
    bpy.ops.ed.undo()  # the finished result is one undo step
    out["after_undo"] = sorted(bpy.data.objects.keys())
    bpy.ops.ed.redo()
    out["after_redo"] = sorted(bpy.data.objects.keys())
    settings = bpy.context.scene.onet  # undo replaced every datablock: fetch again
    # Points sampled on the faces of a mesh.
    settings.mesh_mode, settings.surface_points = "SURFACE", 5000
    box_faces = [(0, 1, 3), (0, 3, 2), (4, 6, 7), (4, 7, 5), (0, 4, 5), (0, 5, 1),
                 (2, 3, 7), (2, 7, 6), (0, 2, 6), (0, 6, 4), (1, 5, 7), (1, 7, 3)]
    solid = make_object("Solid", box_vertices((1, 2, 3)), box_faces)
    out["surface_description"] = addon.scene_input.describe(bpy.context, settings).text
    result, _ = reconstruct(solid, "analytic:box", "PREVIEW")
    out["surface_closed"] = is_closed(result)
    # Advanced > Rotations reaches the backend, and the result says it was used.
    settings.rotations = 2
    result, _ = reconstruct(solid, "analytic:sphere", "PREVIEW")
    out["rotations"] = [result.get("onet_rotations"), is_closed(result)]
    settings.mesh_mode, settings.rotations = "AUTO", 0
    return out


def voxel_art(cells, size):
    """Mesh of the exposed faces of unit cubes at ``cells`` (N, 3) int: two triangles each."""
    occupied = set(map(tuple, cells))
    quads = {(0, -1): [(0, 0, 0), (0, 0, 1), (0, 1, 1), (0, 1, 0)],
             (0, 1): [(1, 0, 0), (1, 1, 0), (1, 1, 1), (1, 0, 1)],
             (1, -1): [(0, 0, 0), (1, 0, 0), (1, 0, 1), (0, 0, 1)],
             (1, 1): [(0, 1, 0), (0, 1, 1), (1, 1, 1), (1, 1, 0)],
             (2, -1): [(0, 0, 0), (0, 1, 0), (1, 1, 0), (1, 0, 0)],
             (2, 1): [(0, 0, 1), (1, 0, 1), (1, 1, 1), (0, 1, 1)]}
    vertices, faces = [], []
    for cell in occupied:
        for (axis, sign), corners in quads.items():
            neighbour = list(cell)
            neighbour[axis] += sign
            if tuple(neighbour) in occupied:
                continue
            base = len(vertices)
            vertices += [tuple((np.asarray(cell) + corner) * size) for corner in corners]
            faces += [(base, base + 1, base + 2), (base, base + 2, base + 3)]
    return np.asarray(vertices, np.float64), np.asarray(faces, np.int32)


def read_sample_points(name):
    """Vertices (N, 3) of a binary little-endian PLY sample shipped in the installed zip."""
    path = os.path.join(os.path.dirname(addon.__file__), "backend", "samples", name)
    with open(path, "rb") as handle:
        data = handle.read()
    header, body = data.split(b"end_header\n", 1)
    assert b"binary_little_endian" in header and header.count(b"property") == 3
    count = int(header.split(b"element vertex ")[1].split()[0])
    return np.frombuffer(body, "<f4", count * 3).reshape(count, 3)


def scenario_bundled_engine():
    fresh_scene()
    snapshot = addon.prefs.settings_snapshot()
    addon.connection.BACKEND.start_async(snapshot)
    wait_for_backend()
    source = make_object("Chair", read_sample_points("chair_scan.ply"))
    result, levels = reconstruct(source, "pointcloud_convonet_3plane")
    # An image file: without Pillow in Blender's Python, Blender decodes it for the backend.
    image = disc_image("Disc")
    path = os.path.join(tempfile.mkdtemp(), "disc.png")
    image.filepath_raw, image.file_format = path, "PNG"
    image.save()
    settings = bpy.context.scene.onet
    settings.source, settings.image_path = "FILE", path
    activate(None)
    from_file, _ = reconstruct(None, "image_onet_small", "PREVIEW")
    return {"python": snapshot.python, "source": snapshot.python_source,
            "image_file_closed": is_closed(from_file),
            "image_file_status": from_file["onet_status"],
            "executable": sys.executable,
            "blender_has_torch": addon.interpreters.blender_python_has_torch(),
            "engine": addon.connection.BACKEND.health.get("engine"),
            "status": addon.connection.BACKEND.status_text(),
            "levels_seen": [level for level, _, _ in levels], "closed": is_closed(result),
            "faces": len(result.data.polygons), "onet_status": result["onet_status"]}


def scenario_tiled_scene():
    """Two balls 1.5 apart, read as points and reconstructed in tiles of 1.0 by the bundled
    point-cloud ConvONet: one closed mesh spanning both, in the source's frame (with the
    raw surface asked for: voids not filled)."""
    settings = fresh_scene()
    points = np.concatenate([sphere_points(3000, 0.4, 7), sphere_points(3000, 0.4, 8)
                             + (1.5, 0, 0)])
    source = make_object("Scene", points, location=(1, 2, 3), rotation=(0.2, 0.1, 0.3))
    settings.tile_size = 1.0
    settings.fill_cavities = False
    tiles = []

    def watch():
        for job in addon.jobs.running():
            if job.tiles:
                tiles.append((job.tile, job.tiles))

    settings.model_name, settings.preset = "pointcloud_convonet_3plane", "PREVIEW"
    activate(source)
    before = set(bpy.data.objects.keys())
    bpy.ops.onet.reconstruct()
    pump_until_idle(on_step=watch)
    created = sorted(set(bpy.data.objects.keys()) - before)
    assert len(created) == 1, (created, addon.status.panel.last_error)
    result = bpy.data.objects[created[0]]
    vertices, _ = mesh_arrays(result)
    want = np.array([2.3, 0.8, 0.8])  # x from -0.4 to 1.9
    extent_error = float(np.abs(np.ptp(vertices, axis=0) - want).max())
    return {"closed": is_closed(result), "extent_error": extent_error,
            "matrix_error": matrix_error(result, source),
            "tiles": tiles[-1][1] if tiles else 0, "tiles_seen": max(t for t, _ in tiles)
            if tiles else 0, "props": {k: result[k] for k in ("onet_tile_size", "onet_status",
                                                              "onet_fill_cavities")}}


def scenario_voxel_object():
    settings = fresh_scene()
    grid = np.zeros((32, 14, 10), bool)  # voxel art in cells of 0.1: a 3-D cross
    grid[:, 3:11, 2:8] = True  # spans x (32 cells: the longest edge)
    grid[10:20, :, 2:8] = True  # spans y
    grid[12:18, 4:10, :] = True  # spans z
    grid[14:16, 6:8, 4:6] = False  # a cavity, enclosed: voxelised, it is inside the solid
    cells = np.argwhere(grid)
    vertices, faces = voxel_art(cells, 0.1)
    occupancy, translate, edge = addon.numeric.voxelize(vertices, faces)
    filled = grid.copy()
    filled[14:16, 6:8, 4:6] = True
    want = np.zeros((32, 32, 32), bool)
    offset = (32 - np.asarray(grid.shape)) // 2  # the cube is centred on the bounding box
    want[offset[0]:offset[0] + 32, offset[1]:offset[1] + 14, offset[2]:offset[2] + 10] = filled
    shift_ok = np.allclose(translate + edge / 2, (vertices.min(0) + vertices.max(0)) / 2)
    source = make_object("Voxels", vertices, faces, location=(-1, 2, 0.5),
                         rotation=(0.2, -0.4, 0.7), scale=(0.9, 1.3, 1.1))
    description = addon.scene_input.describe(bpy.context, settings).text
    models = [item[0] for item in addon.props.model_items(settings, bpy.context)]
    result, levels = reconstruct(source, "analytic:box")
    return {"voxelised_exactly": bool(np.array_equal(occupancy, want) and shift_ok),
            "description": description, "models": models, "closed": is_closed(result),
            "bbox_error": bbox_error(result, vertices, BOX_HALF),
            "matrix_error": matrix_error(result, source), "updates": len(levels)}


def disc_image(name, size=64):
    image = bpy.data.images.new(name, size, size, alpha=True)
    y, x = np.mgrid[0:size, 0:size]
    inside = ((x - size / 2) ** 2 + (y - size / 2) ** 2) < (size * 0.35) ** 2
    pixels = np.zeros((size, size, 4), np.float32)
    pixels[..., 0] = 0.8
    pixels[..., 3] = inside
    image.pixels.foreach_set(pixels.ravel())
    return image


def scenario_image_inputs():
    from mathutils import Vector

    settings = fresh_scene()
    image = disc_image("Disc")
    empty = bpy.data.objects.new("Ref", None)
    empty.empty_display_type = "IMAGE"
    empty.data = image
    empty.empty_display_size = 2.0
    empty.location, empty.rotation_euler, empty.scale = (1, 2, 3), (0.4, 0.1, -0.6), (1.5,) * 3
    bpy.context.scene.collection.objects.link(empty)
    result, _ = reconstruct(empty, "analytic:sphere", "PREVIEW")
    world = world_vertices(result)
    centre = (world.min(0) + world.max(0)) / 2
    expected = np.array(empty.matrix_world @ Vector((0, 0, 0.6 * empty.empty_display_size)))
    out = {"empty": {
        "closed": is_closed(result), "center_error": float(np.abs(centre - expected).max()),
        "radius": float((world.max(0) - world.min(0)).max() / 2),
        "expected_radius": SPHERE_RADIUS * 2.0 * 1.5}}
    # An image file (PNG bytes go to the backend as they are), placed at the 3D cursor.
    path = os.path.join(tempfile.mkdtemp(), "disc.png")
    image.filepath_raw, image.file_format = path, "PNG"
    image.save()
    bpy.context.scene.cursor.location = (-2, 1, 0.5)
    settings.source, settings.image_path = "FILE", path
    activate(None)
    result, _ = reconstruct(None, "analytic:sphere", "PREVIEW")
    world = world_vertices(result)
    out["file"] = {"closed": is_closed(result), "center_error": float(np.abs(
        (world.min(0) + world.max(0)) / 2 - np.array([-2, 1, 0.5])).max())}
    # An image datablock with a separate mask image.
    settings.source, settings.image, settings.mask_image = "IMAGE", image, disc_image("Mask", 32)
    result, _ = reconstruct(None, "analytic:sphere", "PREVIEW")
    out["datablock_with_mask"] = {"closed": is_closed(result)}
    return out


def scenario_crop_preview():
    settings = fresh_scene()
    source = make_object("Cloud", sphere_points(200, 1.0, 3))
    activate(source)
    out = {"not_image_problem": poll_message(bpy.ops.onet.preview_crop)}
    size = 64
    image = bpy.data.images.new("Corner", size, size, alpha=True)
    y, x = np.mgrid[0:size, 0:size]
    inside = ((x - 0.25 * size) ** 2 + (y - 0.7 * size) ** 2) < (0.12 * size) ** 2
    pixels = np.zeros((size, size, 4), np.float32)
    pixels[..., 0] = 0.9
    pixels[..., 3] = inside
    image.pixels.foreach_set(pixels.ravel())
    before = np.array(image.pixels[:])
    settings.source, settings.image = "IMAGE", image
    objects_before = sorted(bpy.data.objects.keys())
    bpy.ops.onet.preview_crop()
    addon.crop_preview.CROP_PREVIEW.wait()
    pump_until_idle()
    rgb = addon.crop_preview.model_view_pixels()
    red = (rgb[..., 0] > 128) & (rgb[..., 1] < 128)
    rows, cols = np.flatnonzero(red.any(1)), np.flatnonzero(red.any(0))
    out.update({
        "size": list(rgb.shape), "text": addon.crop_preview.CROP_PREVIEW.text,
        "error": addon.crop_preview.CROP_PREVIEW.error,
        "centre": [float((rows[0] + rows[-1] + 1) / 2), float((cols[0] + cols[-1] + 1) / 2)],
        "side": float(max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1)),
        "object_colour": [int(v) for v in rgb[red].mean(0)],
        "background": [int(v) for v in rgb[0, 0]],
        "objects_before": objects_before, "objects_after": sorted(bpy.data.objects.keys()),
        "source_unchanged": bool(np.array_equal(np.array(image.pixels[:]), before))})
    return out


def scenario_pointcloud_and_volume():
    fresh_scene()
    out = {"pointcloud": None, "volume": {}}
    points = sphere_points(500, 1.0, 7, (1.0, 0.6, 0.4))
    source = make_object("Cloud", points, location=(0, 1, 2))
    try:
        bpy.ops.object.convert(target="POINTCLOUD")
        converted = bpy.context.active_object.type == "POINTCLOUD"
    except (TypeError, RuntimeError):
        converted = False
    if converted:
        source = bpy.context.active_object
        result, _ = reconstruct(source, "analytic:box", "PREVIEW")
        out["pointcloud"] = {"bbox_error": bbox_error(result, points, BOX_HALF)}
    # A Volume object from an OpenVDB level-set sphere (Blender 5.0+ exposes openvdb).
    expose = getattr(bpy.utils, "expose_bundled_modules", None)
    volume = bpy.data.volumes.new("Vol")
    ob = bpy.data.objects.new("Vol", volume)
    ob.location = (2, 0, 0)
    bpy.context.scene.collection.objects.link(ob)
    if expose is None:
        activate(ob)
        out["volume"]["message"] = poll_message(bpy.ops.onet.reconstruct)
        return out
    expose()
    import openvdb

    path = os.path.join(tempfile.mkdtemp(), "sphere.vdb")
    grid = openvdb.createLevelSetSphere(radius=0.8, center=(0.1, 0.2, 0.3), voxelSize=0.05)
    grid.name = "density"
    openvdb.write(path, grids=[grid])
    volume.filepath = path
    result, _ = reconstruct(ob, "analytic:sphere", "STANDARD")
    vertices, _ = mesh_arrays(result)
    want_centre, want_radius = np.array([0.1, 0.2, 0.3]), SPHERE_RADIUS * (2 * 0.8 + 0.05)
    error = max(np.abs((vertices.min(0) + vertices.max(0)) / 2 - want_centre).max(),
                abs((vertices.max(0) - vertices.min(0)).max() / 2 - want_radius)) / 1.6
    out["volume"] = {"closed": is_closed(result), "bbox_error": float(error)}
    return out


def start_slow_job(name="Slow"):
    """A paper-size random ONet at 32 -> 256: many seconds, so it can be stopped midway."""
    settings = bpy.context.scene.onet
    settings.model_name, settings.preset = "paper_pointcloud", "HIGH"
    source = make_object(name, sphere_points(3000, 1.0, 3))
    bpy.ops.onet.reconstruct()
    job = addon.jobs.running()[0]
    deadline = time.monotonic() + 120
    while job.updates < 1:
        addon.pump()
        assert not job.finished, job.message
        assert time.monotonic() < deadline, "no first level in time"
        time.sleep(0.01)
    return source, job


def server_status(job, want="cancelled", timeout=20):
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        status = addon.connection.BACKEND.client.job(job.server_job)["status"]
        if status == want:
            break
        time.sleep(0.1)
    return status


def scenario_cancel():
    fresh_scene()
    prefs = bpy.context.preferences.addons[ADDON].preferences
    source, job = start_slow_job()
    before = sorted(set(bpy.data.objects.keys()) - {job.result_name})
    updates = job.updates
    bpy.ops.onet.cancel()
    for _ in range(20):  # late frames must not bring anything back
        addon.pump()
        time.sleep(0.02)
    after = sorted(bpy.data.objects.keys())
    status = server_status(job)
    # With "keep partial results" the last level stays, clearly named.
    prefs.keep_partial = True
    _, job2 = start_slow_job("Slow2")
    bpy.ops.onet.cancel()
    partial_ob = bpy.data.objects.get("Slow2 ONet (partial)")
    partial = partial_ob.name if partial_ob is not None else None
    agree = {"partial_status": partial_ob.get("onet_status") if partial_ob else None,
             "partial_job_status": job2.status.value, "partial_job_message": job2.message,
             "partial_panel_result": addon.status.panel.last_result}
    prefs.keep_partial = False
    server_status(job2)
    # Opening another file cancels the running job (load_pre).
    _, job3 = start_slow_job("Other")
    bpy.ops.wm.read_homefile(use_empty=True)
    load_cancelled = job3.finished and not addon.jobs.running()
    load_job = [job3.status.value, job3.message]
    after_load = server_status(job3)
    settings = fresh_scene()
    box = make_object("Box", box_vertices((1, 2, 3)))
    result, _ = reconstruct(box, "analytic:box", "PREVIEW", settings)
    return {"updates_before_cancel": updates, "objects_before": before,
            "objects_after_cancel": after, "server_status": status,
            "partial_kept": partial, **agree, "load_pre_job": load_job,
            "load_pre_cancelled": bool(load_cancelled), "after_load_server_status": after_load,
            "next_job_ok": is_closed(result)}


def scenario_transitions():
    """Record every jobs.transition call of a finished and a failed reconstruction."""
    settings = fresh_scene()
    calls = []
    original = addon.jobs.transition

    def recording(job, status, message="", touch_scene=True):
        calls.append((job, status.value))
        return original(job, status, message, touch_scene)

    addon.jobs.transition = recording
    try:
        box = make_object("Box", box_vertices((1, 2, 3)))
        result, _ = reconstruct(box, "analytic:box", "PREVIEW", settings)
        done = calls[0][0]
        out = {"done_states": [state for job, state in calls if job is done],
               "done_object_status": result["onet_status"], "done_job_message": done.message,
               "done_panel_result": addon.status.panel.last_result,
               "done_panel_error": addon.status.panel.last_error}
        try:
            done.status = addon.jobs.JobStatus.RUNNING
            out["status_read_only"] = False
        except AttributeError:
            out["status_read_only"] = done.status is addon.jobs.JobStatus.DONE
        settings.model_name = "no_such_model"
        activate(make_object("Other", box_vertices((1, 1, 1))))
        bpy.ops.onet.reconstruct()
        failed = addon.jobs.running()[0]
        pump_until_idle(timeout=60)
        out.update({"failed_states": [state for job, state in calls if job is failed],
                    "failed_job_message": failed.message,
                    "failed_panel_error": addon.status.panel.last_error})
        last = {}
        for job, state in calls:
            last[job] = state
        out["unrecorded"] = [[job.status.value, state] for job, state in last.items()
                             if job.status.value != state]
    finally:
        addon.jobs.transition = original
    return out


def scenario_backend_killed():
    import signal

    fresh_scene()
    source, job = start_slow_job()
    before = sorted(set(bpy.data.objects.keys()) - {job.result_name})
    updates = job.updates
    os.kill(addon.connection.BACKEND.server.process.pid, signal.SIGKILL)
    pump_until_idle(timeout=60)
    error = addon.status.panel.last_error
    after = sorted(bpy.data.objects.keys())
    settings = bpy.context.scene.onet
    box = make_object("Box", box_vertices((1, 2, 3)))
    result, _ = reconstruct(box, "analytic:box", "PREVIEW", settings)
    return {"updates_before_kill": updates, "error": error, "objects_before": before,
            "objects_after": after, "restarted_and_reconstructed": is_closed(result)}


def scenario_bad_inputs():
    settings = fresh_scene()
    out = {}
    activate(None)
    out["empty_selection"] = poll_message(bpy.ops.onet.reconstruct)
    make_object("Nothing", np.zeros((0, 3)))
    out["no_vertices"] = poll_message(bpy.ops.onet.reconstruct)
    vertices = box_vertices((1, 1, 1))
    vertices[3] = np.nan
    make_object("Broken", vertices)
    out["nan"] = poll_message(bpy.ops.onet.reconstruct)
    out["nan_left_scene"] = "Broken ONet" in bpy.data.objects
    camera = bpy.data.objects.new("Cam", bpy.data.cameras.new("Cam"))
    bpy.context.scene.collection.objects.link(camera)
    activate(camera)
    out["camera"] = poll_message(bpy.ops.onet.reconstruct)
    empty = bpy.data.objects.new("Plain", None)
    bpy.context.scene.collection.objects.link(empty)
    activate(empty)
    out["plain_empty"] = poll_message(bpy.ops.onet.reconstruct)
    out["cancel_idle"] = poll_message(bpy.ops.onet.cancel)
    addon.interpolation.INTERPOLATION.reset()
    out["apply_without_shapes"] = poll_message(bpy.ops.onet.interpolate_apply)
    bpy.context.preferences.system.use_online_access = False
    out["install_offline"] = poll_message(bpy.ops.onet.install_backend)
    bpy.context.preferences.system.use_online_access = True
    task = addon.operators.install_backend_async(bpy.context, base_python="/nonexistent/python")
    deadline = time.monotonic() + 30
    while task.state == "running" and time.monotonic() < deadline:
        addon.pump()
        time.sleep(0.05)
    with open(task.log_path) as log:
        out["install_failure"] = f"{task.state}: {task.message} | log: {log.read()[:200]}"
    bpy.context.preferences.system.use_online_access = False
    out["check_missing_python"] = addon.interpreters.check_python("/nonexistent/python")[1]
    prefs = bpy.context.preferences.addons[ADDON].preferences
    prefs.python_path = "/nonexistent/python"
    make_object("Fine", box_vertices((1, 1, 1)))
    settings.model_name = "analytic:box"
    bpy.ops.onet.reconstruct()
    pump_until_idle(timeout=60)
    out["bad_interpreter"] = addon.status.panel.last_error
    prefs.python_path = ""
    out["bad_interpreter_left_scene"] = "Fine ONet" in bpy.data.objects
    ok, text = addon.interpreters.check_python(BACKEND_PYTHON)
    out["check_python"] = text if ok else f"failed: {text}"
    settings.mesh_mode = "VOXELS"
    box_faces = [(0, 1, 3), (0, 3, 2), (4, 6, 7), (4, 7, 5), (0, 4, 5), (0, 5, 1),
                 (2, 3, 7), (2, 7, 6), (0, 2, 6), (0, 6, 4), (1, 5, 7), (1, 7, 3)]
    make_object("PlainBox", box_vertices((1, 1, 1)), box_faces)
    out["voxel_plain_box"] = poll_message(bpy.ops.onet.reconstruct)
    settings.mesh_mode = "AUTO"
    return out


def start_job(name, model="tiny_pointcloud", preset="STANDARD", source=None):
    """A streaming reconstruction of a new cloud object ``name`` (or of ``source``);
    returns (source, job) once the first level is in the scene."""
    settings = bpy.context.scene.onet
    settings.model_name, settings.preset = model, preset
    if source is None:
        source = make_object(name, sphere_points(3000, 1.0, 3))
    activate(source)
    bpy.ops.onet.reconstruct()
    job = addon.jobs.running()[0]
    deadline = time.monotonic() + 120
    while job.updates < 1:
        addon.pump()
        assert not job.finished, job.message
        assert time.monotonic() < deadline, "no first level in time"
        time.sleep(0.01)
    return source, job


def scenario_undo_mid_job():
    fresh_scene()
    out = {}
    bpy.ops.ed.undo_push(message="empty")
    _, job = start_job("Src")
    bpy.ops.ed.undo_push(message="mid-job")  # e.g. the artist moved something
    pump_until_idle()
    assert job.status.value == "done", job.message
    bpy.ops.ed.undo()  # back to the step pushed mid-job: the result at its first level
    ob = bpy.data.objects.get("Src ONet")
    out["undone_to_first_level"] = ob is not None and ob["onet_level"] == 0
    out["after_undo_status"] = ob.get("onet_status") if ob is not None else None
    out["after_undo_running_jobs"] = len(addon.jobs.running())
    # An older result, deleted; a new job makes an object of the same name; Ctrl-Z.
    settings = fresh_scene()
    old_source = make_object("Old", sphere_points(500, 1.0, 4))
    old, _ = reconstruct(old_source, "analytic:box", "PREVIEW", settings)
    old_name = old.name
    bpy.ops.ed.undo_push(message="old result")
    addon.result_mesh.remove_object(old_name)
    bpy.ops.ed.undo_push(message="delete old result")
    _, job = start_job("", "paper_pointcloud", "HIGH", source=bpy.data.objects["Old"])
    out["job_object_name"] = job.result_name
    bpy.ops.ed.undo()
    restored = bpy.data.objects.get(old_name)
    if restored is None:  # this Blender went back to the delete: undo once more
        bpy.ops.ed.undo()
        restored = bpy.data.objects[old_name]
    out["restored_name"] = restored.name
    out["restored_faces_before"] = len(restored.data.polygons)
    pump_until_idle(timeout=120)
    restored = bpy.data.objects[old_name]
    out["restored_faces_after"] = len(restored.data.polygons)
    out["restored_status"] = restored.get("onet_status")
    out["restored_has_job_uid"] = restored.get("onet_job") == job.uid
    out["job_status"], out["job_message"] = job.status.value, job.message
    return out


def scenario_rename_delete_save_mid_job():
    fresh_scene()
    out = {}
    _, job = start_job("Src")
    ob = bpy.data.objects[job.result_name]
    ob.name = "Renamed"
    updates = job.updates
    pump_until_idle()
    renamed = bpy.data.objects.get("Renamed")
    out["renamed"] = {"status": renamed.get("onet_status") if renamed else job.message,
                      "level": renamed.get("onet_level") if renamed else None,
                      "levels_after_rename": job.updates - updates,
                      "objects": sorted(bpy.data.objects.keys())}
    fresh_scene()
    _, job = start_job("Gone")
    mesh_name = bpy.data.objects[job.result_name].data.name
    bpy.data.objects.remove(bpy.data.objects[job.result_name])  # the artist deletes it
    pump_until_idle()
    out["deleted"] = {"job_status": job.status.value,
                      "orphan_meshes": [m.name for m in bpy.data.meshes
                                        if m.users == 0 and m.name == mesh_name],
                      "objects": sorted(bpy.data.objects.keys())}
    fresh_scene()
    _, job = start_job("Saved", model="paper_pointcloud", preset="HIGH")
    path = os.path.join(tempfile.mkdtemp(), "mid-job.blend")
    bpy.ops.wm.save_as_mainfile(filepath=path, copy=True)
    name = job.result_name
    bpy.ops.onet.cancel()
    addon.status.panel.show_error("An error of the previous file")
    bpy.ops.wm.open_mainfile(filepath=path)
    ob = bpy.data.objects.get(name)
    out["saved"] = {"status_in_file": ob.get("onet_status") if ob is not None else None,
                    "panel_after_load": [addon.status.panel.last_error,
                                         addon.status.panel.last_result]}
    return out


def scenario_input_warnings():
    settings = fresh_scene()
    out = {}

    def check(name, vertices, faces=()):
        make_object(name, vertices, faces)
        description = addon.scene_input.describe(bpy.context, settings)
        labels = draw(addon.ui.ONET_PT_reconstruct)["labels"]
        return {"problem": description.problem, "warning": description.warning,
                "text": description.text, "labels": labels,
                "poll": poll_message(bpy.ops.onet.reconstruct) if description.problem else ""}

    out["one_vertex"] = check("One", [(1, 2, 3)])
    nan = box_vertices((1, 1, 1))
    nan[2] = np.nan
    out["nan"] = check("Nan", nan)
    out["eight_vertices"] = check("Eight", box_vertices((1, 1, 1)))
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4),
             (1, 5, 7, 3)]
    mesh = bpy.data.meshes.new("Cube")
    mesh.from_pydata(box_vertices((2, 2, 2)).tolist(), [], quads)
    cube = bpy.data.objects.new("Cube", mesh)
    bpy.context.scene.collection.objects.link(cube)
    activate(cube)
    description = addon.scene_input.describe(bpy.context, settings)
    out["cube"] = {"text": description.text, "warning": description.warning}
    far = np.concatenate([sphere_points(500, 1.0, 5), [(1e30, 0, 0)]])
    out["far"] = check("Far", far)
    array = make_object("Arrayed", box_vertices((1, 1, 1)))
    array.modifiers.new("Array", "ARRAY")
    bpy.context.view_layer.update()
    out["modifier_count"] = addon.scene_input.describe(bpy.context, settings).text
    import bmesh

    edited = make_object("Edited", box_vertices((1, 1, 1)), [(0, 1, 3), (0, 3, 2)])
    bpy.ops.object.mode_set(mode="EDIT")
    editing = bmesh.from_edit_mesh(edited.data)
    bmesh.ops.subdivide_edges(editing, edges=editing.edges[:], cuts=3)
    bmesh.update_edit_mesh(edited.data)
    settings.mesh_mode = "VERTICES"
    out["edit_mode"] = {"text": addon.scene_input.describe(bpy.context, settings).text,
                        "bmesh_vertices": len(editing.verts)}
    bpy.ops.object.mode_set(mode="OBJECT")
    settings.mesh_mode = "AUTO"
    source = make_object("Dense", sphere_points(4000, 1.0, 6))
    result, _ = reconstruct(source, "pointcloud_onet_small", "PREVIEW", settings)
    out["notes_panel"] = addon.status.panel.last_result
    out["result_active"] = bpy.context.view_layer.objects.active == result
    out["result_selected"] = result.select_get()
    out["source_selected"] = source.select_get()
    # A large mesh (over MAIN_THREAD_FACES faces) as surface points.
    bpy.ops.mesh.primitive_grid_add(x_subdivisions=470, y_subdivisions=470, size=2)
    grid = bpy.context.active_object
    settings.mesh_mode, settings.surface_points = "SURFACE", 3000
    data = addon.scene_input.read(bpy.context, settings)
    deferred = data.prepare is not None and not data.arrays
    result, _ = reconstruct(grid, "analytic:box", "PREVIEW", settings)
    out["large"] = {"deferred": deferred, "closed": is_closed(result),
                    "faces": len(grid.data.polygons)}
    settings.mesh_mode = "AUTO"
    return out


def scenario_backend_problems():
    import http.server
    import shutil
    import signal

    fresh_scene()
    out = {}
    folder = addon.prefs.user_dir()
    venv_python = addon.interpreters.venv_python(folder)
    saved = os.environ.pop(addon.interpreters.ENV_PYTHON)
    has_torch = addon.interpreters._blender_has_torch
    addon.interpreters._blender_has_torch = False  # as in a Blender without PyTorch
    try:
        os.makedirs(os.path.dirname(venv_python), exist_ok=True)
        os.symlink(sys.executable, venv_python)  # a venv whose install stopped half-way
        out["half_made"] = list(addon.interpreters.resolve_python("", folder))
        make_object("Fine", sphere_points(500, 1.0, 2))
        open(os.path.join(folder, addon.interpreters.VENV_NAME,
                          addon.interpreters.COMPLETE_STAMP), "w").close()
        out["complete"] = list(addon.interpreters.resolve_python("", folder))
        out["venv_python"] = venv_python
    finally:
        os.environ[addon.interpreters.ENV_PYTHON] = saved
        addon.interpreters._blender_has_torch = has_torch
        shutil.rmtree(os.path.join(folder, addon.interpreters.VENV_NAME))

    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    prefs = bpy.context.preferences.addons[ADDON].preferences
    settings = bpy.context.scene.onet
    settings.model_name = "analytic:box"
    try:
        prefs.backend_mode, prefs.url = "REMOTE", f"http://127.0.0.1:{server.server_port}"
        bpy.ops.onet.reconstruct()
        pump_until_idle(timeout=60)
        out["http_404"] = addon.status.panel.last_error
        bpy.context.preferences.system.use_online_access = False
        prefs.url = "http://192.0.2.1:8765"  # TEST-NET: not this machine
        out["offline_remote_poll"] = poll_message(bpy.ops.onet.reconstruct)
        out["offline_loopback_problem"] = addon.connection.remote_problem(
            f"http://localhost:{server.server_port}", False)
        try:
            addon.connection.BACKEND.ensure(addon.prefs.settings_snapshot())
            out["offline_ensure"] = "connected"
        except RuntimeError as exc:
            out["offline_ensure"] = str(exc)
    finally:
        bpy.context.preferences.system.use_online_access = True
        prefs.backend_mode, prefs.url = "LOCAL", "http://127.0.0.1:8765"
        server.shutdown()
    # A hung backend (SIGSTOP: it cannot act on SIGTERM) is stopped without waiting.
    backend = addon.connection.BACKEND
    backend.start_async(addon.prefs.settings_snapshot())
    wait_for_backend()
    process = backend.server.process
    os.kill(process.pid, signal.SIGSTOP)
    backend.stop()
    out["hung_alive_after_stop"] = process.poll() is None
    out["hung_state"] = backend.state
    try:
        out["hung_exit"] = process.wait(timeout=addon.connection.STOP_GRACE_S + 10)
    except subprocess.TimeoutExpired:
        out["hung_exit"] = None
        process.kill()
    return out


def scenario_timer_path():
    """The GUI path: the timer's function drives a job (module mode never fires timers)."""
    settings = fresh_scene()
    source = make_object("Timed", sphere_points(3000, 1.0, 3))
    settings.model_name, settings.preset = "tiny_pointcloud", "STANDARD"
    before = sorted(bpy.data.objects.keys())
    bpy.ops.ed.undo_push(message="before")
    redraws = []
    original = addon.session.redraw

    def recording():
        redraws.append(time.monotonic())
        return original()

    addon.session.redraw = recording
    intervals = {}
    try:
        bpy.ops.onet.reconstruct()
        job = addon.jobs.running()[0]
        deadline = time.monotonic() + 120
        while True:
            interval = addon.timer_step()
            if job.finished and interval == addon.IDLE_INTERVAL:
                intervals["idle"] = interval
                break
            intervals["busy"] = interval
            assert time.monotonic() < deadline, "the timer did not finish the job"
            time.sleep(0.01)
    finally:
        addon.session.redraw = original
    result = bpy.data.objects[job.result_name]
    out = {"intervals": intervals, "busy_interval": addon.BUSY_INTERVAL,
           "idle_interval": addon.IDLE_INTERVAL, "redraws": len(redraws),
           "levels": job.updates, "closed": is_closed(result),
           "status": result.get("onet_status")}
    bpy.ops.ed.undo()
    out["after_undo"] = sorted(bpy.data.objects.keys())
    stale = make_object("Stale", sphere_points(10, 1.0, 1))
    stale["onet_status"], stale["onet_job"] = "running", "a job of another session"
    addon.session._checked_at[0] = 0.0  # as if the check interval had passed
    addon.timer_step()
    out["stale_marked"] = bpy.data.objects["Stale"].get("onet_status")
    out["objects_before"] = before
    return out


def scenario_remote():
    """A backend started by someone else (python -m backend serve --token T), by URL."""
    settings = fresh_scene()
    prefs = bpy.context.preferences.addons[ADDON].preferences
    server = subprocess.Popen([BACKEND_PYTHON, "-m", "backend", "serve", "--port", "0",
                               "--token", "s3cret-token", "--max-points", "1000"], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
    try:
        port = json.loads(server.stdout.readline())["port"]
        prefs.backend_mode, prefs.url, prefs.token = "REMOTE", f"http://127.0.0.1:{port}", "nope"
        source = make_object("Remote", box_vertices((1, 2, 3)))
        settings.model_name = "analytic:box"
        bpy.ops.onet.reconstruct()
        pump_until_idle(timeout=60)
        out = {"wrong_token": addon.status.panel.last_error}
        prefs.token = "s3cret-token"
        result, _ = reconstruct(source, "analytic:box", "PREVIEW")
        out["closed"] = is_closed(result)
        out["status"] = addon.connection.BACKEND.status_text()
        out["max_points"] = addon.connection.BACKEND.limit("max_points")
        make_object("Small", sphere_points(900, 1.0, 4))
        out["small_cloud"] = addon.scene_input.describe(bpy.context, settings).text
        make_object("Large", sphere_points(1200, 1.0, 5))
        out["large_cloud"] = addon.scene_input.describe(bpy.context, settings).problem
        out["large_cloud_poll"] = poll_message(bpy.ops.onet.reconstruct)
        activate(source)
        prefs.url = ""
        out["no_url"] = poll_message(bpy.ops.onet.reconstruct)
    finally:
        prefs.backend_mode, prefs.url, prefs.token = "LOCAL", "http://127.0.0.1:8765", ""
        addon.connection.BACKEND.stop()
        server.terminate()
        server.wait(10)
    return out


def scenario_interpolation():
    settings = fresh_scene()
    settings.model_name, settings.preset = "tiny_pointcloud", "PREVIEW"
    a = make_object("A", sphere_points(2000, 1.0, 2), location=(0, 0, 0))
    b = make_object("B", sphere_points(2000, 2.0, 3, (1, 0.3, 1)), location=(5, 1, 0),
                    rotation=(0.3, 0.2, 0.9), scale=(1.2, 1.2, 1.2))
    result_a, _ = reconstruct(a, "tiny_pointcloud", "PREVIEW")
    result_b, _ = reconstruct(b, "tiny_pointcloud", "PREVIEW")
    activate(a)
    bpy.ops.onet.interpolate_set_a()
    activate(b)
    bpy.ops.onet.interpolate_set_b()
    interpolation = addon.interpolation.INTERPOLATION
    out = {}
    for t, reference in ((0.0, result_a), (1.0, result_b)):
        settings.interp_t = t
        pump_until_idle()
        preview = interpolation.preview_object()
        assert interpolation.shown == (t, False), (interpolation.shown, addon.status.panel.last_error)
        got, want = world_vertices(preview), world_vertices(reference)
        faces_got, faces_want = mesh_arrays(preview)[1], mesh_arrays(reference)[1]
        key = f"t{int(t)}"
        out[key + "_faces_equal"] = bool(np.array_equal(faces_got, faces_want))
        out[key + "_vertex_error"] = (float(np.abs(got - want).max()) if got.shape == want.shape
                                      else 1e9)
        out[key + "_counts"] = [len(got), len(want), len(faces_got), len(faces_want)]
    started = interpolation.jobs_started
    for step in range(1, 10):  # a drag: nine moves while the first request is in flight
        settings.interp_t = step / 10
        addon.pump()
    pump_until_idle()
    out["coalesced_jobs"] = interpolation.jobs_started - started - 1  # minus the refinement
    out["shown_after_drag"], out["shown_is_preview"] = interpolation.shown
    bpy.ops.onet.interpolate_apply()
    applied = [name for name in bpy.data.objects.keys() if name.startswith("A to B")]
    out["applied"] = applied[0] if applied else ""
    out["applied_closed"] = bool(applied) and is_closed(bpy.data.objects[applied[0]])
    return out


def scenario_sample():
    """New Shape twice with seed 3 and once with 4 (the bundled VAE, the backend's default
    for sampling); the two samples as shapes A and B of the latent slider; a cancel."""
    from mathutils import Matrix

    settings = fresh_scene()
    settings.preset = "PREVIEW"
    bpy.context.scene.cursor.location = (1, 2, 3)
    made = {}
    for key, seed in (("first", 3), ("again", 3), ("other", 4)):
        settings.seed = seed
        before = set(bpy.data.objects.keys())
        bpy.ops.onet.sample()
        job = addon.jobs.running()[0]
        pump_until_idle()
        created = sorted(set(bpy.data.objects.keys()) - before)
        assert len(created) == 1, (created, addon.status.panel.last_error)
        made[key] = (bpy.data.objects[created[0]], job.updates)
    first, levels = made["first"]
    want = Matrix.Translation((1, 2, 3)) @ Matrix.Rotation(np.pi / 2, 4, "X")
    out = {"name": first.name, "closed": is_closed(first), "levels": levels,
           "props": {key: first[key] for key in first.keys() if key.startswith("onet_")},
           "same_seed_same_vertices": bool(np.array_equal(mesh_arrays(first)[0],
                                                          mesh_arrays(made["again"][0])[0])),
           "other_seed_same_vertices": bool(
               mesh_arrays(first)[0].shape == mesh_arrays(made["other"][0])[0].shape and
               np.array_equal(mesh_arrays(first)[0], mesh_arrays(made["other"][0])[0])),
           "matrix_error": float(np.abs(np.array(first.matrix_world) - np.array(want)).max()),
           "label": addon.operators.ONET_OT_sample.bl_description}
    other = made["other"][0]
    other.location.x += 2  # the blend follows the objects, as for reconstructions
    interpolation = addon.interpolation.INTERPOLATION
    interpolation.reset()
    activate(first)
    bpy.ops.onet.interpolate_set_a()
    activate(other)
    bpy.ops.onet.interpolate_set_b()
    for t, reference in ((0.0, first), (1.0, other)):
        settings.interp_t = t
        pump_until_idle()
        got, want_vertices = world_vertices(interpolation.preview_object()), world_vertices(
            reference)
        out[f"t{int(t)}_vertex_error"] = (float(np.abs(got - want_vertices).max())
                                          if got.shape == want_vertices.shape else 1e9)
    out["shown"] = list(interpolation.shown)
    out["panel"] = draw(addon.ui.ONET_PT_interpolate)
    clear = sorted(bpy.data.objects.keys())
    bpy.ops.onet.interpolate_clear()
    out["objects_before"] = sorted(bpy.data.objects.keys())
    settings.preset = "HIGH"
    bpy.ops.onet.sample()
    for _ in range(3):
        addon.pump()
    bpy.ops.onet.cancel()
    for _ in range(20):
        addon.pump()
        time.sleep(0.02)
    out["objects_after_cancel"] = sorted(bpy.data.objects.keys())
    assert clear != out["objects_before"]  # the preview object was there and is gone
    return out


class StubLayout:
    """Stands in for UILayout when drawing panels without a window: records what is shown."""

    def __init__(self, record=None):
        self.__dict__["record"] = record if record is not None else {
            "labels": [], "operators": [], "props": [], "progress": []}

    def __setattr__(self, name, value):
        pass  # enabled, use_property_split, operator properties...

    def __getattr__(self, name):
        record = self.__dict__["record"]

        def call(*args, **kwargs):
            if name == "label":
                record["labels"].append(kwargs.get("text", ""))
            elif name == "operator":
                record["operators"].append(args[0])
            elif name == "prop":
                record["props"].append(args[1])
            elif name == "progress":
                record["progress"].append(kwargs.get("text", ""))
            return StubLayout(record)

        return call


def draw(panel_class, owner=None):
    """Run a Panel's or AddonPreferences' draw() against a StubLayout."""
    layout = StubLayout()

    class Host:
        def __getattr__(self, name):
            return getattr(owner, name)

    host = Host()
    host.layout = layout
    panel_class.draw(host, bpy.context)
    return layout.record


def scenario_ui_draw():
    settings = fresh_scene()
    settings.show_advanced = True
    if not addon.connection.BACKEND.is_running():
        bpy.ops.onet.backend_start()
        wait_for_backend()
    make_object("Big", sphere_points(150_000, 1.0, 6))
    large_cloud = addon.scene_input.describe(bpy.context, settings).text
    max_points = addon.connection.BACKEND.limit("max_points")
    make_object("Src", box_vertices((1, 2, 3)))
    idle = {}
    for panel in addon.ui.CLASSES:
        for key, values in draw(panel).items():
            idle.setdefault(key, []).extend(values)
    settings.model_name, settings.preset = "paper_pointcloud", "HIGH"
    make_object("Slow", sphere_points(3000, 1.0, 3))
    bpy.ops.onet.reconstruct()
    for _ in range(3):
        addon.pump()
    running = draw(addon.ui.ONET_PT_reconstruct)
    bpy.ops.onet.cancel()
    prefs = bpy.context.preferences.addons[ADDON].preferences
    local = draw(addon.prefs.ONET_AP_preferences, prefs)
    prefs.backend_mode = "REMOTE"
    remote = draw(addon.prefs.ONET_AP_preferences, prefs)
    prefs.backend_mode = "LOCAL"
    outputs = [addon.props.output_of(settings)]
    settings.smooth_steps, settings.drop_floaters = 2, False
    outputs.append(addon.props.output_of(settings))
    return {"idle": idle, "running": running, "prefs": local, "prefs_remote": remote,
            "large_cloud": large_cloud, "max_points": max_points, "outputs": outputs}


def scenario_presets_and_disable():
    import addon_utils

    settings = fresh_scene()
    presets = []
    settings.preset = "HIGH"
    presets.append([settings.preset, settings.resolution0, settings.upsampling_steps])
    settings.resolution0, settings.upsampling_steps = 16, 1
    presets.append([settings.preset, settings.resolution0, settings.upsampling_steps])
    settings.resolution0 = 20
    presets.append([settings.preset, settings.resolution0, settings.upsampling_steps])
    if not addon.connection.BACKEND.is_running():
        bpy.ops.onet.backend_start()
        wait_for_backend()
    process = addon.connection.BACKEND.server.process
    timer = addon.timer_step
    addon_utils.disable(ADDON, default_set=True)
    try:
        process.wait(timeout=15)
        stopped = True
    except subprocess.TimeoutExpired:
        stopped = False
    return {"presets": presets, "backend_stopped": stopped,
            "timer_registered": bpy.app.timers.is_registered(timer),
            "torch_imported": "torch" in sys.modules}


if __name__ == "__main__" and len(sys.argv) >= 4 and sys.argv[1] == "--worker":
    worker_main(sys.argv[2], sys.argv[3])
