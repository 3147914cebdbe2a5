"""Main-thread time of the Blender add-on on a large mesh (what would freeze the GUI).

    .venv/bin/python -m benchmarks.blender_main_thread [--vertices 5000000]

Builds the extension zip, installs it into a temporary Blender user folder (bpy module) and
times, on a grid mesh of about ``--vertices`` vertices: the panel's input check
(``scene_input.describe``: first call, a call after a rename, a call with nothing changed),
``scene_input.read`` (the main-thread part of Reconstruct's execute) for every Mesh As
mode, the part that runs on the job's thread (``SceneInput.wire_arrays``), and writing a
185k-face level into a result mesh (``result_mesh.write_mesh``). No backend is started.
Prints one line per step, in milliseconds.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ADDON = "bl_ext.user_default.blender_onet"
CHILD = "ONET_BENCH_BLENDER_CHILD"  # set in the subprocess that imports bpy


def timed(label, call):
    start = time.perf_counter()
    value = call()
    print(f"{label:<58} {1000 * (time.perf_counter() - start):9.1f} ms", flush=True)
    return value


def run(vertices):
    import importlib

    import bpy
    import numpy as np

    out = tempfile.mkdtemp(prefix="onet-bench-")
    build = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "build_extension.py"),
                            "--output-dir", out, "--quiet"], capture_output=True, text=True)
    if build.returncode != 0:
        sys.exit(build.stderr)
    zip_path = os.path.join(out, "blender_onet-0.1.0.zip")
    bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default",
                                             enable_on_install=True)
    addon = importlib.import_module(ADDON)
    bpy.ops.wm.read_homefile(use_empty=True)
    side = int(round(vertices ** 0.5))
    bpy.ops.mesh.primitive_grid_add(x_subdivisions=side - 1, y_subdivisions=side - 1, size=2)
    ob = bpy.context.active_object
    print(f"grid: {len(ob.data.vertices):,} vertices, {len(ob.data.polygons):,} faces")
    settings = bpy.context.scene.onet
    scene_input = addon.scene_input
    timed("describe (the panel's first draw)",
          lambda: scene_input.describe(bpy.context, settings))
    timed("describe again (nothing changed)",
          lambda: scene_input.describe(bpy.context, settings))
    ob.name = "Renamed"
    timed("describe after a rename", lambda: scene_input.describe(bpy.context, settings))
    for mode in ("VERTICES", "SURFACE", "VOXELS"):
        settings.mesh_mode = mode
        data = timed(f"read, {mode.lower()} (main thread, in execute)",
                     lambda: scene_input.read(bpy.context, settings))
        timed(f"  wire_arrays, {mode.lower()} (on the job's thread)", data.wire_arrays)
    rng = np.random.default_rng(0)
    bpy.ops.mesh.primitive_uv_sphere_add(segments=400, ring_count=233)
    sphere = bpy.context.active_object.data
    positions = addon.scene_input.mesh_positions(sphere)
    triangles = addon.scene_input.mesh_triangles(sphere)
    positions = positions + rng.normal(0, 1e-4, positions.shape).astype(np.float32)
    mesh = bpy.data.meshes.new("level")
    for attempt in range(2):
        timed(f"write_mesh, {len(triangles):,} triangles (try {attempt + 1})",
              lambda: addon.result_mesh.write_mesh(mesh, positions, triangles))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vertices", type=int, default=5_000_000)
    args = parser.parse_args(argv)
    if os.environ.get(CHILD) != "1":  # bpy reads BLENDER_USER_RESOURCES when imported
        env = dict(os.environ, BLENDER_USER_RESOURCES=tempfile.mkdtemp(prefix="onet-user-"),
                   **{CHILD: "1"})
        command = [sys.executable, "-m", "benchmarks.blender_main_thread",
                   "--vertices", str(args.vertices)]
        sys.exit(subprocess.run(command, env=env, cwd=ROOT).returncode)
    run(args.vertices)


if __name__ == "__main__":
    main()
